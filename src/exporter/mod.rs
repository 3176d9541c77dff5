//! Exporters of traces and derived metrics.

pub mod forward;
pub mod prometheus;
