//! The collector's clients, built into the `tracemap` binary but never
//! imported by the collector library: they speak to it over its public
//! protocols (OTLP, the graph API) as any other client would.

pub mod demo;
pub mod draw;
pub mod loadgen;
pub mod map;
