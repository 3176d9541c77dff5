//! The OTLP test kit: one way to build `ExportTraceServiceRequest`s, as
//! opentelemetry-proto's prost types, for tests, benches and loadgen.
//!
//! Spans come from [`SpanBuilder`]; resources and scopes from
//! [`resource`], [`scope`] and the attribute helpers; requests from
//! [`RequestBuilder`], one `ResourceSpans` per call. Nothing is defaulted
//! that a caller did not ask for, so a request encodes exactly as the
//! struct literals it replaces did.

pub use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
pub use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
pub use opentelemetry_proto::tonic::resource::v1::Resource;
pub use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
pub use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
pub use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// An attribute holding `value`.
pub fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// A string attribute.
pub fn string(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.into()))
}

/// An integer attribute.
pub fn int(key: &str, value: i64) -> KeyValue {
    kv(key, any_value::Value::IntValue(value))
}

/// A resource with these attributes.
pub fn resource(attributes: Vec<KeyValue>) -> Resource {
    Resource {
        attributes,
        ..Default::default()
    }
}

/// An instrumentation scope with a name and a version (empty: unset).
pub fn scope(name: &str, version: &str) -> InstrumentationScope {
    InstrumentationScope {
        name: name.into(),
        version: version.into(),
        ..Default::default()
    }
}

/// Builds a request, one `ResourceSpans` at a time.
#[derive(Debug, Clone, Default)]
pub struct RequestBuilder {
    request: ExportTraceServiceRequest,
}

impl RequestBuilder {
    /// An empty request.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a `ResourceSpans` of `resource` holding one `ScopeSpans` of
    /// `scope` with `spans`.
    pub fn resource_spans(
        mut self,
        resource: Option<Resource>,
        scope: Option<InstrumentationScope>,
        spans: Vec<Span>,
    ) -> Self {
        self.request.resource_spans.push(ResourceSpans {
            resource,
            scope_spans: vec![ScopeSpans {
                scope,
                spans,
                ..Default::default()
            }],
            ..Default::default()
        });
        self
    }

    /// Adds `spans` of a service known by its `service.name` and nothing
    /// else, with no scope.
    pub fn service(self, service: &str, spans: Vec<Span>) -> Self {
        self.resource_spans(
            Some(resource(vec![string("service.name", service)])),
            None,
            spans,
        )
    }

    /// Sets the schema URL of the `ResourceSpans` added last.
    pub fn schema_url(mut self, url: &str) -> Self {
        if let Some(last) = self.request.resource_spans.last_mut() {
            last.schema_url = url.into();
        }
        self
    }

    /// The request.
    pub fn build(self) -> ExportTraceServiceRequest {
        self.request
    }
}

/// Builds a span; unset fields keep protobuf's defaults.
#[derive(Debug, Clone, Default)]
pub struct SpanBuilder {
    span: Span,
}

impl SpanBuilder {
    /// A span with these ids (any length: tests also send invalid ones).
    pub fn new(trace_id: &[u8], span_id: &[u8]) -> Self {
        Self {
            span: Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                ..Default::default()
            },
        }
    }

    /// The parent span id.
    pub fn parent(mut self, parent_span_id: &[u8]) -> Self {
        self.span.parent_span_id = parent_span_id.to_vec();
        self
    }

    /// The W3C trace flags (and the OTLP "has remote parent" bits).
    pub fn flags(mut self, flags: u32) -> Self {
        self.span.flags = flags;
        self
    }

    /// The operation name.
    pub fn name(mut self, name: &str) -> Self {
        self.span.name = name.into();
        self
    }

    /// The kind, as [`SpanKind`] or its number.
    pub fn kind(mut self, kind: impl Into<i32>) -> Self {
        self.span.kind = kind.into();
        self
    }

    /// Start and end, Unix nanoseconds.
    pub fn times(mut self, start_unix_nano: u64, end_unix_nano: u64) -> Self {
        self.span.start_time_unix_nano = start_unix_nano;
        self.span.end_time_unix_nano = end_unix_nano;
        self
    }

    /// The attributes, in order.
    pub fn attributes(mut self, attributes: Vec<KeyValue>) -> Self {
        self.span.attributes = attributes;
        self
    }

    /// A status, sent even when its code is unset.
    pub fn status(mut self, code: impl Into<i32>, message: &str) -> Self {
        self.span.status = Some(Status {
            code: code.into(),
            message: message.into(),
        });
        self
    }

    /// An ERROR status with `message` when `failed`; none otherwise.
    pub fn error_if(self, failed: bool, message: &str) -> Self {
        if failed {
            self.status(StatusCode::Error, message)
        } else {
            self
        }
    }

    /// An event.
    pub fn event(mut self, name: &str, time_unix_nano: u64, attributes: Vec<KeyValue>) -> Self {
        self.span.events.push(Event {
            name: name.into(),
            time_unix_nano,
            attributes,
            ..Default::default()
        });
        self
    }

    /// The span.
    pub fn build(self) -> Span {
        self.span
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_what_was_asked_and_nothing_else() {
        let span = SpanBuilder::new(&[1; 16], &[2; 8])
            .parent(&[3; 8])
            .name("GET /")
            .kind(SpanKind::Server)
            .times(10, 30)
            .attributes(vec![string("url.path", "/"), int("code", 500)])
            .status(StatusCode::Error, "boom")
            .event("exception", 20, vec![string("exception.type", "E")])
            .build();
        let expected = Span {
            trace_id: vec![1; 16],
            span_id: vec![2; 8],
            parent_span_id: vec![3; 8],
            name: "GET /".into(),
            kind: 2,
            start_time_unix_nano: 10,
            end_time_unix_nano: 30,
            attributes: vec![string("url.path", "/"), int("code", 500)],
            status: Some(Status {
                code: 2,
                message: "boom".into(),
            }),
            events: vec![Event {
                name: "exception".into(),
                time_unix_nano: 20,
                attributes: vec![string("exception.type", "E")],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(span, expected);
        let request = RequestBuilder::new()
            .service("checkout", vec![span])
            .resource_spans(None, Some(scope("lib", "1.0")), Vec::new())
            .build();
        let [first, second] = &request.resource_spans[..] else {
            panic!("two resource spans expected");
        };
        let attributes = &first.resource.as_ref().expect("resource").attributes;
        assert_eq!(attributes, &vec![string("service.name", "checkout")]);
        assert_eq!(first.scope_spans[0].scope, None);
        assert_eq!(second.resource, None);
        assert_eq!(second.scope_spans[0].scope, Some(scope("lib", "1.0")));
    }
}
