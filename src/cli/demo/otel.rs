//! The simulated services' OpenTelemetry SDK side: one tracer provider per
//! service, exporting OTLP/gRPC as a user's service would, and the emission
//! of a planned trace as spans, with W3C trace context carried between
//! services in headers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue, trace::Status};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
};

use super::DemoError;
use super::workload::{Op, Service};

/// How often each service's batch processor exports: short, so the map
/// fills within seconds.
const EXPORT_INTERVAL: Duration = Duration::from_millis(500);
/// Spans a service may buffer before its SDK drops them; room for several
/// intervals at the demo's rates.
const MAX_QUEUE: usize = 16_384;
/// Per export request, as the OTLP exporter's own timeout.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);
/// The instrumentation scope of the simulated services.
const SCOPE: &str = "tracemap-demo";

/// What the simulated services did, shared with the progress line.
#[derive(Debug, Default)]
pub struct Stats {
    /// User requests simulated.
    pub traces: AtomicU64,
    /// Spans ended, so handed to the SDK.
    pub spans: AtomicU64,
    /// Spans the collector acknowledged.
    pub exported: AtomicU64,
    /// Spans whose export failed after the exporter's retries.
    pub failed: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// User requests simulated.
    pub traces: u64,
    /// Spans ended.
    pub spans: u64,
    /// Spans the collector acknowledged.
    pub exported: u64,
    /// Spans whose export failed.
    pub failed: u64,
}

impl Stats {
    /// Reads every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            traces: self.traces.load(Ordering::Relaxed),
            spans: self.spans.load(Ordering::Relaxed),
            exported: self.exported.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

/// The OTLP exporter, counting what the collector acknowledged.
#[derive(Debug)]
struct CountingExporter<E> {
    inner: E,
    stats: Arc<Stats>,
}

impl<E: SpanExporter> SpanExporter for CountingExporter<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let count = batch.len() as u64;
        let result = self.inner.export(batch).await;
        let counter = match result {
            Ok(()) => &self.stats.exported,
            Err(_) => &self.stats.failed,
        };
        counter.fetch_add(count, Ordering::Relaxed);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The simulated services: a tracer provider and tracer each.
pub struct Fleet {
    services: Vec<(Service, SdkTracerProvider, SdkTracer)>,
    propagator: TraceContextPropagator,
}

impl Fleet {
    /// Providers exporting OTLP/gRPC to `endpoint`, such as
    /// `http://127.0.0.1:4317`. Must run inside the Tokio runtime: the
    /// tonic channel spawns its connection task there.
    pub fn otlp(endpoint: &str, stats: &Arc<Stats>) -> Result<Self, DemoError> {
        let mut providers = Vec::with_capacity(Service::ALL.len());
        for service in Service::ALL {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|source| DemoError::Exporter {
                    service: service.name(),
                    source,
                })?;
            let exporter = CountingExporter {
                inner: exporter,
                stats: stats.clone(),
            };
            let batching = BatchConfigBuilder::default()
                .with_scheduled_delay(EXPORT_INTERVAL)
                .with_max_queue_size(MAX_QUEUE)
                .build();
            let processor = BatchSpanProcessor::builder(exporter)
                .with_batch_config(batching)
                .build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(processor)
                .with_resource(resource(service))
                .build();
            providers.push((service, provider));
        }
        Ok(Self::from_providers(providers))
    }

    /// A fleet over given providers, one per service.
    pub fn from_providers(providers: Vec<(Service, SdkTracerProvider)>) -> Self {
        let services = providers
            .into_iter()
            .map(|(service, provider)| {
                let tracer = provider.tracer(SCOPE);
                (service, provider, tracer)
            })
            .collect();
        Self {
            services,
            propagator: TraceContextPropagator::new(),
        }
    }

    /// Emits the planned trace `root`, its start placed at `start`; returns
    /// the spans ended.
    pub fn emit(&self, root: &Op, start: SystemTime) -> u64 {
        self.emit_op(root, &Context::new(), start)
    }

    fn emit_op(&self, op: &Op, parent: &Context, trace_start: SystemTime) -> u64 {
        let Some(tracer) = self.tracer(op.service) else {
            return 0;
        };
        let span = tracer
            .span_builder(op.name.clone())
            .with_kind(op.kind.clone())
            .with_start_time(trace_start + op.start)
            .with_attributes(op.attributes.iter().cloned())
            .start_with_context(tracer, parent);
        let cx = parent.with_span(span);
        let mut spans = 1;
        for child in &op.children {
            spans += if child.service == op.service {
                self.emit_op(child, &cx, trace_start)
            } else {
                // Another process: the context crosses only as headers
                // (`traceparent`), as over HTTP, gRPC metadata or Kafka.
                let mut headers = HashMap::new();
                self.propagator.inject_context(&cx, &mut headers);
                let remote = self
                    .propagator
                    .extract_with_context(&Context::new(), &headers);
                self.emit_op(child, &remote, trace_start)
            };
        }
        let span = cx.span();
        let end = trace_start + op.end;
        if let Some(failure) = &op.failure {
            if let Some(exception) = failure.exception {
                span.add_event_with_timestamp(
                    "exception",
                    end,
                    vec![
                        KeyValue::new("exception.type", exception),
                        KeyValue::new("exception.message", failure.message.clone()),
                    ],
                );
            }
            span.set_status(Status::error(failure.message.clone()));
        }
        span.end_with_timestamp(end);
        spans
    }

    fn tracer(&self, service: Service) -> Option<&SdkTracer> {
        self.services
            .iter()
            .find(|(s, _, _)| *s == service)
            .map(|(_, _, tracer)| tracer)
    }

    /// Flushes and stops every provider, sharing `timeout`; returns the
    /// services that could not flush. Blocks: call from a blocking thread.
    pub fn shutdown(self, timeout: Duration) -> Vec<(Service, OTelSdkError)> {
        let deadline = Instant::now() + timeout;
        let mut failures = Vec::new();
        for (service, provider, _) in self.services {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Err(err) = provider.shutdown_with_timeout(left) {
                failures.push((service, err));
            }
        }
        failures
    }
}

fn resource(service: Service) -> Resource {
    Resource::builder()
        .with_service_name(service.name())
        .with_attributes([
            KeyValue::new("service.namespace", "shop"),
            KeyValue::new("service.version", "1.4.2"),
            KeyValue::new("deployment.environment.name", "demo"),
        ])
        .build()
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use opentelemetry::trace::{SpanId, SpanKind, Status};
    use opentelemetry_sdk::trace::SimpleSpanProcessor;

    use super::*;
    use crate::cli::demo::workload::Planner;

    /// Exported spans, each with the service that sent it.
    type Captured = Arc<Mutex<Vec<(String, SpanData)>>>;

    /// Keeps exported spans with the service that sent them.
    #[derive(Debug, Clone, Default)]
    struct Capture {
        spans: Captured,
        service: String,
    }

    impl SpanExporter for Capture {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            let mut spans = self.spans.lock().unwrap();
            spans.extend(batch.into_iter().map(|s| (self.service.clone(), s)));
            Ok(())
        }
    }

    fn capturing_fleet() -> (Fleet, Captured) {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let providers = Service::ALL
            .iter()
            .map(|&service| {
                let exporter = Capture {
                    spans: spans.clone(),
                    service: service.name().into(),
                };
                let provider = SdkTracerProvider::builder()
                    .with_span_processor(SimpleSpanProcessor::new(exporter))
                    .with_resource(resource(service))
                    .build();
                (service, provider)
            })
            .collect();
        (Fleet::from_providers(providers), spans)
    }

    #[test]
    fn services_link_through_propagated_context() {
        let (fleet, captured) = capturing_fleet();
        let mut planner = Planner::new(11);
        let start = SystemTime::now() - Duration::from_secs(5);
        let mut emitted = 0;
        for _ in 0..300 {
            emitted += fleet.emit(&planner.trace(), start);
        }
        let spans = captured.lock().unwrap();
        assert_eq!(spans.len() as u64, emitted);
        let by_id: HashMap<SpanId, &(String, SpanData)> = spans
            .iter()
            .map(|entry| (entry.1.span_context.span_id(), entry))
            .collect();

        let mut remote_pairs = 0;
        for (service, span) in spans.iter() {
            if span.parent_span_id == SpanId::INVALID {
                assert_eq!(service, "frontend", "only the frontend starts traces");
                assert_eq!(span.span_kind, SpanKind::Server);
                continue;
            }
            let (parent_service, parent) = by_id[&span.parent_span_id];
            assert_eq!(parent.span_context.trace_id(), span.span_context.trace_id());
            assert!(span.start_time >= parent.start_time);
            match span.span_kind {
                SpanKind::Server => {
                    assert_eq!(parent.span_kind, SpanKind::Client);
                    assert_ne!(parent_service, service);
                    assert!(span.parent_span_is_remote);
                    remote_pairs += 1;
                }
                SpanKind::Consumer => {
                    assert_eq!(parent.span_kind, SpanKind::Producer);
                    assert!(span.parent_span_is_remote);
                    remote_pairs += 1;
                }
                _ => assert_eq!(parent_service, service),
            }
        }
        assert!(remote_pairs > 300, "{remote_pairs} cross-service calls");
    }

    #[test]
    fn failures_carry_status_and_exception_event() {
        let (fleet, captured) = capturing_fleet();
        let mut planner = Planner::new(3);
        let start = SystemTime::now() - Duration::from_secs(5);
        for _ in 0..2000 {
            fleet.emit(&planner.trace(), start);
        }
        let spans = captured.lock().unwrap();
        let errors: Vec<_> = spans
            .iter()
            .filter(|(_, s)| matches!(s.status, Status::Error { .. }))
            .collect();
        assert!(!errors.is_empty());
        assert!(errors.iter().any(|(_, s)| {
            s.events
                .iter()
                .any(|e| e.name == "exception" && e.timestamp == s.end_time)
        }));
        assert!(
            errors.len() * 10 < spans.len(),
            "{} errors of {} spans",
            errors.len(),
            spans.len()
        );
    }
}
