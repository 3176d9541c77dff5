//! tracemap: a distributed-tracing and service-map collector.
//!
//! # Architecture
//!
//! Spans flow one way, and each stage has one module:
//!
//! ```text
//!  OTel SDKs ──OTLP/gRPC──┐
//!            ──OTLP/HTTP──┴─► receiver ─► pipeline (bounded, sharded by trace id) ─► consumers
//!                             (decode to                                             (service graph,
//!                              lean spans)                                            span metrics, exporters)
//! ```
//!
//! - [`receiver`] parses OTLP protobuf and JSON into the lean [`model::Span`],
//!   rejecting invalid ids through OTLP `partial_success`.
//! - [`pipeline`] routes spans by a hash of their trace id to per-shard
//!   workers through bounded queues; when full, receivers refuse with
//!   UNAVAILABLE / 503 so clients retry.
//! - [`graph`] pairs halves into edges and keeps per-minute statistics in
//!   memory for `graph.retention`; [`store`] persists those minutes in an
//!   embedded SQLite file (written off the pipeline by one thread), and
//!   [`store::History`] answers windows across memory and the store.
//! - [`exporter`] turns spans and the graph into outside formats: Prometheus
//!   series, and X-Ray segment documents sent through a bounded queue with
//!   batching and retries ([`exporter::xray`]), and each minute of the graph
//!   as CloudWatch metrics, EMF log events or PutMetricData
//!   ([`exporter::cloudwatch`]); in agent mode (`mode: agent`)
//!   [`exporter::forward`] sends every span to a gateway chosen by a
//!   rendezvous hash of its trace id, so both halves of every call meet in
//!   one gateway's graph.
//! - [`web`] serves the graph, series and diff APIs, `/healthz`, `/readyz`,
//!   Prometheus `/metrics`, and the web map at `/` ([`web::ui`]: a page
//!   compiled into the binary from `web/`, drawn with vendored Cytoscape.js).
//! - [`app`] wires the stages and owns the staged, deadline-bound shutdown.
//! - [`config`] is the YAML file, `TRACEMAP_*` overrides and validation.
//! - [`map`] is `tracemap map`, the terminal client of the graph API.
//! - [`loadgen`] is `tracemap loadgen`, benchmark OTLP/gRPC load from pre-encoded traces.
//! - [`demo`] is `tracemap demo`: ten simulated services, instrumented with the
//!   OpenTelemetry SDK, send traces to the collector so a map appears in seconds.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod config;
pub mod demo;
pub mod exporter;
pub mod graph;
pub mod loadgen;
pub mod map;
pub mod model;
/// The OTLP protobuf wire format: field numbers, zero-copy reader, writer.
pub mod otlp;
pub mod pipeline;
pub mod receiver;
pub mod shutdown;
pub mod spanmetrics;
pub mod store;
pub mod telemetry;
pub mod web;
