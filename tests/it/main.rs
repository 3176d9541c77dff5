//! tracemap's integration tests, one binary: every module starts the real
//! collector (or talks to the real peers it needs: moto, the OpenTelemetry
//! SDKs, Prometheus, kubectl) over loopback. One binary links the AWS SDKs
//! once instead of once per test file.

mod support;

mod backpressure;
mod cloudwatch;
mod cloudwatch_dashboard;
mod conformance;
mod demo;
mod deploy;
mod durability;
mod faults;
mod forward_durability;
mod history;
mod loadgen;
mod memory_limit;
mod otlp_grpc;
mod otlp_http;
mod python_sdk;
mod sampling;
mod scale_out;
mod service_graph;
mod shutdown;
mod web_ui;
mod xray;
