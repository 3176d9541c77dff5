//! Span receivers: OTLP over gRPC and HTTP (protobuf and JSON).
//!
//! Receivers parse wire data into the lean [`crate::model::Span`], reject
//! spans with invalid ids through OTLP `partial_success`, and hand the rest
//! to the bounded pipeline. Whole requests that cannot be parsed are
//! refused with INVALID_ARGUMENT / 400 and never reach the pipeline.

pub mod decode;
pub mod otlp_grpc;
pub mod otlp_http;
mod sink;

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

pub use otlp_grpc::{OtlpGrpcConfig, OtlpGrpcError, OtlpGrpcService};
pub use otlp_http::{OtlpHttpConfig, OtlpHttpError};
pub use sink::{Refusal, SharedSink, SpanSink, Submission};

use crate::model::{IdError, Span};

/// Transport a span arrived on, as a metric label.
pub type Protocol = &'static str;
/// OTLP/gRPC.
pub const PROTOCOL_GRPC: Protocol = "grpc";
/// OTLP/HTTP, protobuf or JSON.
pub const PROTOCOL_HTTP: Protocol = "http";

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabels {
    protocol: Protocol,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    protocol: Protocol,
    reason: &'static str,
}

/// Receiver self-metrics, shared by every receiver.
#[derive(Debug, Default)]
pub struct ReceiverMetrics {
    accepted_spans: Family<ProtocolLabels, Counter>,
    refused_spans: Family<ReasonLabels, Counter>,
    refused_requests: Family<ReasonLabels, Counter>,
    rejected_spans: Family<ReasonLabels, Counter>,
    rejected_requests: Family<ReasonLabels, Counter>,
}

impl ReceiverMetrics {
    /// Creates the families and registers them.
    pub fn register(registry: &mut Registry) -> Arc<Self> {
        let metrics = Arc::new(Self::default());
        registry.register(
            "tracemap_receiver_accepted_spans",
            "Spans queued for processing",
            metrics.accepted_spans.clone(),
        );
        registry.register(
            "tracemap_receiver_refused_spans",
            "Valid spans refused because the collector could not take them (client should retry)",
            metrics.refused_spans.clone(),
        );
        registry.register(
            "tracemap_receiver_refused_requests",
            "Requests refused before their body was read, their spans uncounted (memory limit; client should retry)",
            metrics.refused_requests.clone(),
        );
        registry.register(
            "tracemap_receiver_rejected_spans",
            "Invalid spans dropped and reported through OTLP partial_success",
            metrics.rejected_spans.clone(),
        );
        registry.register(
            "tracemap_receiver_rejected_requests",
            "Whole requests rejected as malformed, oversize or of an unsupported type",
            metrics.rejected_requests.clone(),
        );
        // Series that dashboards and alerts read exist from the start, at zero.
        for protocol in [PROTOCOL_GRPC, PROTOCOL_HTTP] {
            drop(
                metrics
                    .accepted_spans
                    .get_or_create(&ProtocolLabels { protocol }),
            );
            for reason in [
                reason::QUEUE_FULL,
                reason::MEMORY_LIMIT,
                reason::SHUTTING_DOWN,
            ] {
                drop(
                    metrics
                        .refused_spans
                        .get_or_create(&ReasonLabels { protocol, reason }),
                );
            }
            let reason = reason::MEMORY_LIMIT;
            drop(
                metrics
                    .refused_requests
                    .get_or_create(&ReasonLabels { protocol, reason }),
            );
        }
        metrics
    }

    /// Counts a request refused before its body was read.
    pub fn refuse_request(&self, protocol: Protocol, refusal: &Refusal) {
        let reason = refusal.reason();
        self.refused_requests
            .get_or_create(&ReasonLabels { protocol, reason })
            .inc();
    }

    /// Counts a request rejected before any span could be read.
    pub fn reject_request(&self, protocol: Protocol, reason: &'static str) {
        self.rejected_requests
            .get_or_create(&ReasonLabels { protocol, reason })
            .inc();
    }
}

/// Request rejection reasons, as metric labels.
pub mod reason {
    /// Not valid protobuf or JSON.
    pub const MALFORMED: &str = "malformed";
    /// Over the configured size limit.
    pub const TOO_LARGE: &str = "too_large";
    /// Content type other than protobuf or JSON.
    pub const UNSUPPORTED_MEDIA_TYPE: &str = "unsupported_media_type";
    /// Content encoding other than gzip or identity.
    pub const UNSUPPORTED_ENCODING: &str = "unsupported_encoding";
    /// Pipeline queues were full.
    pub const QUEUE_FULL: &str = "queue_full";
    /// The process was near `pipeline.memory_limit`.
    pub const MEMORY_LIMIT: &str = "memory_limit";
    /// The collector is shutting down.
    pub const SHUTTING_DOWN: &str = "shutting_down";
}

impl Refusal {
    /// The `reason` label of `tracemap_receiver_refused_spans`.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Refusal::Full { .. } => reason::QUEUE_FULL,
            Refusal::MemoryLimit { .. } => reason::MEMORY_LIMIT,
            Refusal::Closed => reason::SHUTTING_DOWN,
        }
    }
}

/// Which id of a span was invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidId {
    /// `trace_id`.
    Trace,
    /// `span_id`.
    Span,
    /// `parent_span_id`.
    Parent,
}

impl InvalidId {
    fn reason(self) -> &'static str {
        match self {
            Self::Trace => "invalid_trace_id",
            Self::Span => "invalid_span_id",
            Self::Parent => "invalid_parent_span_id",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Self::Trace => "trace_id",
            Self::Span => "span_id",
            Self::Parent => "parent_span_id",
        }
    }
}

/// Spans dropped while decoding one request, for `partial_success`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rejections {
    /// Count per invalid field: trace, span, parent.
    counts: [u64; 3],
    /// The first rejection, described for the client.
    first: Option<String>,
}

impl Rejections {
    /// Records one span rejected for an invalid id.
    pub fn add(&mut self, which: InvalidId, error: IdError, span_name: &str) {
        self.counts[which as usize] += 1;
        if self.first.is_none() {
            self.first = Some(format!(
                "span {span_name:?} has an invalid {}: {error}",
                which.field()
            ));
        }
    }

    /// Total spans rejected.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The `partial_success.error_message` text; empty when nothing was rejected.
    pub fn message(&self) -> String {
        let Some(first) = &self.first else {
            return String::new();
        };
        let mut text = format!("rejected {} spans with invalid ids", self.total());
        let _ = write!(text, "; first: {first}");
        text
    }

    fn record(&self, metrics: &ReceiverMetrics, protocol: Protocol) {
        for which in [InvalidId::Trace, InvalidId::Span, InvalidId::Parent] {
            let count = self.counts[which as usize];
            if count > 0 {
                metrics
                    .rejected_spans
                    .get_or_create(&ReasonLabels {
                        protocol,
                        reason: which.reason(),
                    })
                    .inc_by(count);
            }
        }
    }
}

/// One request's spans after boundary validation.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Valid spans.
    pub spans: Vec<Span>,
    /// Spans dropped for invalid ids.
    pub rejections: Rejections,
}

/// Outcome of handing a decoded request to the sink.
#[derive(Debug)]
pub(crate) enum Ingest {
    /// Queued; carries the partial-success details (zero when all were valid).
    Accepted {
        rejected_spans: u64,
        message: String,
    },
    /// Refused; the client should retry.
    Refused(Refusal),
}

/// Counts, queues and reports one decoded request; shared by both transports.
pub(crate) async fn ingest(
    decoded: Decoded,
    sink: &dyn SpanSink,
    metrics: &ReceiverMetrics,
    protocol: Protocol,
) -> Ingest {
    let Decoded { spans, rejections } = decoded;
    rejections.record(metrics, protocol);
    let count = spans.len() as u64;
    match sink.submit(spans).await {
        Ok(()) => {
            if count > 0 {
                metrics
                    .accepted_spans
                    .get_or_create(&ProtocolLabels { protocol })
                    .inc_by(count);
            }
            Ingest::Accepted {
                rejected_spans: rejections.total(),
                message: rejections.message(),
            }
        }
        Err(err) => {
            let reason = err.reason();
            metrics
                .refused_spans
                .get_or_create(&ReasonLabels { protocol, reason })
                .inc_by(count);
            Ingest::Refused(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejection_message_counts_and_names_the_first() {
        let mut rejections = Rejections::default();
        assert_eq!(rejections.message(), "");
        rejections.add(InvalidId::Trace, IdError::AllZero, "GET /");
        rejections.add(
            InvalidId::Parent,
            IdError::WrongLength {
                expected: 8,
                actual: 3,
            },
            "SELECT",
        );
        assert_eq!(rejections.total(), 2);
        assert_eq!(
            rejections.message(),
            "rejected 2 spans with invalid ids; first: span \"GET /\" has an invalid trace_id: all-zero id"
        );
    }
}
