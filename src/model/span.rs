//! The lean span: only what the graph, span metrics and exporters read.

use std::sync::Arc;

use bytes::Bytes;
pub use bytestring::ByteString;

use super::{Attributes, SpanId, TraceId};

/// OTLP span kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum SpanKind {
    /// Kind not set by the producer.
    #[default]
    Unspecified,
    /// In-process work.
    Internal,
    /// Serves a synchronous request.
    Server,
    /// Makes a synchronous request.
    Client,
    /// Sends a message.
    Producer,
    /// Receives a message.
    Consumer,
}

impl SpanKind {
    /// Maps the OTLP enum number; unknown values become `Unspecified`.
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => Self::Internal,
            2 => Self::Server,
            3 => Self::Client,
            4 => Self::Producer,
            5 => Self::Consumer,
            _ => Self::Unspecified,
        }
    }

    /// Maps the OTLP JSON enum name (`SPAN_KIND_SERVER`).
    pub fn from_otlp_name(name: &str) -> Option<Self> {
        Some(match name {
            "SPAN_KIND_UNSPECIFIED" => Self::Unspecified,
            "SPAN_KIND_INTERNAL" => Self::Internal,
            "SPAN_KIND_SERVER" => Self::Server,
            "SPAN_KIND_CLIENT" => Self::Client,
            "SPAN_KIND_PRODUCER" => Self::Producer,
            "SPAN_KIND_CONSUMER" => Self::Consumer,
            _ => return None,
        })
    }

    /// The OTel name, as Prometheus labels and X-Ray metadata spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "SPAN_KIND_UNSPECIFIED",
            Self::Internal => "SPAN_KIND_INTERNAL",
            Self::Server => "SPAN_KIND_SERVER",
            Self::Client => "SPAN_KIND_CLIENT",
            Self::Producer => "SPAN_KIND_PRODUCER",
            Self::Consumer => "SPAN_KIND_CONSUMER",
        }
    }
}

/// OTLP status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StatusCode {
    /// Status not set.
    #[default]
    Unset,
    /// Explicitly successful.
    Ok,
    /// Failed.
    Error,
}

impl StatusCode {
    /// Maps the OTLP enum number; unknown values become `Unset`.
    pub fn from_otlp(value: i32) -> Self {
        match value {
            1 => Self::Ok,
            2 => Self::Error,
            _ => Self::Unset,
        }
    }

    /// Maps the OTLP JSON enum name (`STATUS_CODE_ERROR`).
    pub fn from_otlp_name(name: &str) -> Option<Self> {
        Some(match name {
            "STATUS_CODE_UNSET" => Self::Unset,
            "STATUS_CODE_OK" => Self::Ok,
            "STATUS_CODE_ERROR" => Self::Error,
            _ => return None,
        })
    }

    /// The OTel name, as Prometheus labels spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unset => "STATUS_CODE_UNSET",
            Self::Ok => "STATUS_CODE_OK",
            Self::Error => "STATUS_CODE_ERROR",
        }
    }
}

/// The service name OpenTelemetry SDKs use when `service.name` is missing.
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// A resource (process) shared by every span it emitted.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Resource {
    /// `service.name`, or [`UNKNOWN_SERVICE`].
    pub service_name: Arc<str>,
    /// All resource attributes, `service.name` included.
    pub attributes: Attributes,
}

impl Resource {
    /// Builds a resource, taking the service name from its attributes.
    pub fn new(attributes: Attributes) -> Self {
        let service_name = attributes
            .first_str(&["service.name"])
            .unwrap_or(UNKNOWN_SERVICE)
            .into();
        Self {
            service_name,
            attributes,
        }
    }
}

/// A timed event on a span (exceptions feed the X-Ray `cause`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Event {
    /// Event name, such as `exception`.
    pub name: String,
    /// Event time, Unix nanoseconds.
    pub time_unix_nano: u64,
    /// Event attributes, such as `exception.type`.
    pub attributes: Attributes,
}

/// One span after boundary validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// The emitting process, shared across its spans.
    pub resource: Arc<Resource>,
    /// Instrumentation scope name (library that made the span).
    pub scope_name: Arc<str>,
    /// Trace the span belongs to.
    pub trace_id: TraceId,
    /// The span's own id.
    pub span_id: SpanId,
    /// Parent span id; `None` for a root span.
    pub parent_span_id: Option<SpanId>,
    /// Operation name; shares the request buffer when decoded from
    /// protobuf, so it costs no allocation per span.
    pub name: ByteString,
    /// Span kind.
    pub kind: SpanKind,
    /// Status code.
    pub status_code: StatusCode,
    /// Status message (set with `Error`).
    pub status_message: String,
    /// Start, Unix nanoseconds.
    pub start_unix_nano: u64,
    /// End, Unix nanoseconds.
    pub end_unix_nano: u64,
    /// Span attributes.
    pub attributes: Attributes,
    /// Span events.
    pub events: Vec<Event>,
}

impl Span {
    /// Duration in nanoseconds; zero when the end precedes the start.
    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }

    /// The emitting service's name.
    pub fn service_name(&self) -> &str {
        &self.resource.service_name
    }

    /// A copy that shares no bytes with the request it was decoded from
    /// (its strings and wire attributes copied by `copy`, under `resource`),
    /// for holding spans longer than their request: a held span would
    /// otherwise keep the whole request buffer alive.
    pub fn detached(&self, resource: Arc<Resource>, copy: &mut impl FnMut(&[u8]) -> Bytes) -> Self {
        Self {
            resource,
            scope_name: self.scope_name.clone(),
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            name: ByteString::try_from(copy(self.name.as_bytes())).unwrap_or_default(),
            kind: self.kind,
            status_code: self.status_code,
            status_message: self.status_message.clone(),
            start_unix_nano: self.start_unix_nano,
            end_unix_nano: self.end_unix_nano,
            attributes: self.attributes.detached(copy),
            events: self
                .events
                .iter()
                .map(|event| Event {
                    name: event.name.clone(),
                    time_unix_nano: event.time_unix_nano,
                    attributes: event.attributes.detached(copy),
                })
                .collect(),
        }
    }

    /// About the memory a detached span holds, for memory budgets.
    pub fn held_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.name.len()
            + self.status_message.len()
            + self.attributes.heap_bytes()
            + self
                .events
                .iter()
                .map(|e| std::mem::size_of::<Event>() + e.name.len() + e.attributes.heap_bytes())
                .sum::<usize>()
    }
}

impl Resource {
    /// A copy that shares no bytes with its request (see [`Span::detached`]).
    pub fn detached(&self, copy: &mut impl FnMut(&[u8]) -> Bytes) -> Self {
        Self {
            service_name: self.service_name.clone(),
            attributes: self.attributes.detached(copy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::AttributeValue;

    #[test]
    fn resource_without_service_name_is_unknown_service() {
        assert_eq!(
            &*Resource::new(Attributes::default()).service_name,
            "unknown_service"
        );
        let named = Resource::new(Attributes::from_vec(vec![(
            "service.name".into(),
            AttributeValue::String("checkout".into()),
        )]));
        assert_eq!(&*named.service_name, "checkout");
    }

    #[test]
    fn kind_and_status_map_numbers_and_names() {
        assert_eq!(SpanKind::from_otlp(2), SpanKind::Server);
        assert_eq!(SpanKind::from_otlp(99), SpanKind::Unspecified);
        assert_eq!(
            SpanKind::from_otlp_name("SPAN_KIND_CONSUMER"),
            Some(SpanKind::Consumer)
        );
        assert_eq!(SpanKind::from_otlp_name("server"), None);
        assert_eq!(StatusCode::from_otlp(2), StatusCode::Error);
        assert_eq!(
            StatusCode::from_otlp_name("STATUS_CODE_OK"),
            Some(StatusCode::Ok)
        );
    }
}
