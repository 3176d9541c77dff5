//! tracemap: a distributed-tracing and service-map collector.
//!
//! # Architecture
//!
//! Spans flow one way, and each stage has one module. A module imports only
//! from its own layer or an earlier one, in this order (checked by
//! `scripts/check-layers.py`):
//!
//! ```text
//!  leaf types ─► receiver ─► pipeline ─► graph ─► exporter ─► store ─► web ─► config ─► app
//!  (validate, model)  (decode to   (bounded, sharded  (pairing, edges,  (X-Ray, CloudWatch,
//!                      lean spans)  by trace id)       span metrics)     Prometheus, forward)
//! ```
//!
//! - [`validate`] is the config-problem type every component reports with,
//!   and [`validate::Valid`], the checked section a component starts from.
//! - [`model`] holds the proto-free types: ids, the lean [`model::Span`], attributes.
//! - [`receiver`] parses OTLP protobuf and JSON into lean spans, rejecting
//!   invalid ids through OTLP `partial_success`, and hands them to a
//!   [`receiver::SpanSink`].
//! - [`pipeline`] is that sink: it routes spans by a hash of their trace id
//!   to per-shard workers through bounded queues; when full, receivers
//!   refuse with UNAVAILABLE / 503 so clients retry; so they do near
//!   [`pipeline::memory`]'s memory limit. It owns the traits its consumers
//!   implement ([`pipeline::SpanConsumer`], [`pipeline::ForwardTarget`]).
//! - [`graph`] pairs halves into edges and keeps per-minute statistics and
//!   span metrics in memory for `graph.retention`.
//! - [`exporter`] turns spans and the graph into outside formats: Prometheus
//!   series, X-Ray segment documents ([`exporter::xray`]), CloudWatch EMF log
//!   events or PutMetricData ([`exporter::cloudwatch`]), and in agent mode
//!   OTLP to a gateway chosen by a rendezvous hash of the trace id
//!   ([`exporter::forward`]), so both halves of every call meet in one
//!   gateway's graph.
//! - [`store`] persists closed minutes in an embedded SQLite file (written
//!   off the pipeline by one thread), and [`store::History`] answers windows
//!   across memory and the store.
//! - [`web`] serves the graph, series and diff APIs as typed documents
//!   ([`web::document`]), `/healthz`, `/readyz`, Prometheus `/metrics`, and
//!   the web map at `/` ([`web::ui`]: a page compiled into the binary from
//!   `web/`, drawn with vendored Cytoscape.js).
//! - [`config`] is the YAML file, `TRACEMAP_*` overrides and validation into
//!   [`config::ValidConfig`]; [`telemetry`] sets up logging.
//! - [`app`] builds every component from a valid config and owns the staged,
//!   deadline-bound shutdown.
//!
//! The command-line clients (`tracemap demo`, `loadgen`, `map`) live in the
//! binary's `src/cli/`, never in this library.

pub mod app;
pub mod config;
pub mod exporter;
pub mod graph;
pub mod model;
pub mod otlp;
pub mod pipeline;
pub mod receiver;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod validate;
pub mod web;
