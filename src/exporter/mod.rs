//! Exporters of traces and derived metrics.

pub mod prometheus;
