//! OTLP protobuf → lean spans.
//!
//! Decoding uses the `opentelemetry-proto` message types and then moves
//! (never copies) strings into the lean model.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1 as otlp;
use prost::Message;

use super::{Decoded, InvalidId, Rejections};
use crate::model::{
    AttributeValue, Attributes, Event, Resource, Span, SpanId, SpanKind, StatusCode, TraceId,
};

/// Decodes a serialized `ExportTraceServiceRequest`.
pub fn decode(bytes: impl bytes::Buf) -> Result<Decoded, prost::DecodeError> {
    Ok(from_request(ExportTraceServiceRequest::decode(bytes)?))
}

/// Converts a decoded request, validating ids span by span.
pub fn from_request(request: ExportTraceServiceRequest) -> Decoded {
    let mut decoded = Decoded::default();
    for resource_spans in request.resource_spans {
        let attributes = resource_spans
            .resource
            .map(|r| attributes(r.attributes))
            .unwrap_or_default();
        let resource = Arc::new(Resource::new(attributes));
        for scope_spans in resource_spans.scope_spans {
            let scope_name: Arc<str> = scope_spans.scope.map(|s| s.name).unwrap_or_default().into();
            decoded.spans.reserve(scope_spans.spans.len());
            for span in scope_spans.spans {
                if let Some(span) =
                    convert_span(span, &resource, &scope_name, &mut decoded.rejections)
                {
                    decoded.spans.push(span);
                }
            }
        }
    }
    decoded
}

fn convert_span(
    span: otlp::Span,
    resource: &Arc<Resource>,
    scope_name: &Arc<str>,
    rejections: &mut Rejections,
) -> Option<Span> {
    let ids = validate_ids(&span.trace_id, &span.span_id, &span.parent_span_id);
    let (trace_id, span_id, parent_span_id) = match ids {
        Ok(ids) => ids,
        Err((which, error)) => {
            rejections.add(which, error, &span.name);
            return None;
        }
    };
    let status = span.status.unwrap_or_default();
    Some(Span {
        resource: resource.clone(),
        scope_name: scope_name.clone(),
        trace_id,
        span_id,
        parent_span_id,
        name: span.name,
        kind: SpanKind::from_otlp(span.kind),
        status_code: StatusCode::from_otlp(status.code),
        status_message: status.message,
        start_unix_nano: span.start_time_unix_nano,
        end_unix_nano: span.end_time_unix_nano,
        attributes: attributes(span.attributes),
        events: span
            .events
            .into_iter()
            .map(|event| Event {
                name: event.name,
                time_unix_nano: event.time_unix_nano,
                attributes: attributes(event.attributes),
            })
            .collect(),
    })
}

/// The id triple of a valid span.
pub(crate) type SpanIds = (TraceId, SpanId, Option<SpanId>);

/// Validates raw ids. An empty or all-zero parent means "root", as SDKs
/// differ in how they encode a missing parent.
pub(crate) fn validate_ids(
    trace_id: &[u8],
    span_id: &[u8],
    parent_span_id: &[u8],
) -> Result<SpanIds, (InvalidId, crate::model::IdError)> {
    let trace_id = TraceId::try_from(trace_id).map_err(|e| (InvalidId::Trace, e))?;
    let span_id = SpanId::try_from(span_id).map_err(|e| (InvalidId::Span, e))?;
    let parent = if parent_span_id.is_empty() || parent_span_id.iter().all(|&b| b == 0) {
        if !parent_span_id.is_empty() && parent_span_id.len() != SpanId::LEN {
            return Err((
                InvalidId::Parent,
                crate::model::IdError::WrongLength {
                    expected: SpanId::LEN,
                    actual: parent_span_id.len(),
                },
            ));
        }
        None
    } else {
        Some(SpanId::try_from(parent_span_id).map_err(|e| (InvalidId::Parent, e))?)
    };
    Ok((trace_id, span_id, parent))
}

fn attributes(key_values: Vec<KeyValue>) -> Attributes {
    Attributes(
        key_values
            .into_iter()
            .map(|kv| (kv.key, any_value(kv.value)))
            .collect(),
    )
}

fn any_value(value: Option<AnyValue>) -> AttributeValue {
    use any_value::Value;
    match value.and_then(|v| v.value) {
        None => AttributeValue::Empty,
        Some(Value::StringValue(s)) => AttributeValue::String(s),
        Some(Value::BoolValue(b)) => AttributeValue::Bool(b),
        Some(Value::IntValue(i)) => AttributeValue::Int(i),
        Some(Value::DoubleValue(d)) => AttributeValue::Double(d),
        Some(Value::BytesValue(b)) => AttributeValue::Bytes(b),
        Some(Value::ArrayValue(a)) => {
            AttributeValue::Array(a.values.into_iter().map(|v| any_value(Some(v))).collect())
        }
        Some(Value::KvlistValue(kv)) => AttributeValue::Map(attributes(kv.values)),
        // Not attribute values in OTLP traces; keep the shape, drop the payload.
        Some(Value::StringValueStrindex(_)) => AttributeValue::Empty,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope, KeyValueList};
    use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Status, span};

    use super::*;

    pub(crate) fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    pub(crate) fn string_kv(key: &str, value: &str) -> KeyValue {
        kv(key, any_value::Value::StringValue(value.into()))
    }

    pub(crate) fn request(spans: Vec<otlp::Span>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(OtlpResource {
                    attributes: vec![
                        string_kv("service.name", "checkout"),
                        string_kv("k8s.namespace.name", "shop"),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "io.opentelemetry.http".into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    pub(crate) fn full_span() -> otlp::Span {
        otlp::Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0x01; 8],
            parent_span_id: vec![0x02; 8],
            name: "GET /cart".into(),
            kind: 3,
            start_time_unix_nano: 1_000,
            end_time_unix_nano: 4_500,
            attributes: vec![
                string_kv("http.request.method", "GET"),
                kv("http.response.status_code", any_value::Value::IntValue(503)),
                kv("sampled", any_value::Value::BoolValue(true)),
                kv("ratio", any_value::Value::DoubleValue(0.5)),
                kv("raw", any_value::Value::BytesValue(vec![1, 2])),
                kv(
                    "list",
                    any_value::Value::ArrayValue(ArrayValue {
                        values: vec![AnyValue {
                            value: Some(any_value::Value::StringValue("a".into())),
                        }],
                    }),
                ),
                kv(
                    "map",
                    any_value::Value::KvlistValue(KeyValueList {
                        values: vec![string_kv("inner", "x")],
                    }),
                ),
                KeyValue {
                    key: "empty".into(),
                    ..Default::default()
                },
            ],
            events: vec![span::Event {
                time_unix_nano: 2_000,
                name: "exception".into(),
                attributes: vec![string_kv("exception.type", "IOError")],
                dropped_attributes_count: 0,
            }],
            status: Some(Status {
                message: "upstream down".into(),
                code: 2,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn every_field_survives_protobuf_decoding() {
        let bytes = request(vec![full_span()]).encode_to_vec();
        let decoded = decode(&bytes[..]).unwrap();
        assert_eq!(decoded.rejections.total(), 0);
        let [span] = &decoded.spans[..] else {
            panic!("one span expected");
        };
        assert_eq!(span.trace_id.to_string(), "ab".repeat(16));
        assert_eq!(span.span_id.to_string(), "01".repeat(8));
        assert_eq!(span.parent_span_id.unwrap().to_string(), "02".repeat(8));
        assert_eq!(span.name, "GET /cart");
        assert_eq!(span.kind, SpanKind::Client);
        assert_eq!(span.status_code, StatusCode::Error);
        assert_eq!(span.status_message, "upstream down");
        assert_eq!((span.start_unix_nano, span.end_unix_nano), (1_000, 4_500));
        assert_eq!(span.duration_nanos(), 3_500);
        assert_eq!(span.service_name(), "checkout");
        assert_eq!(
            span.resource.attributes.get_str("k8s.namespace.name"),
            Some("shop")
        );
        assert_eq!(&*span.scope_name, "io.opentelemetry.http");
        let attrs = &span.attributes;
        assert_eq!(attrs.get_str("http.request.method"), Some("GET"));
        assert_eq!(
            attrs.get("http.response.status_code"),
            Some(&AttributeValue::Int(503))
        );
        assert_eq!(attrs.get("sampled"), Some(&AttributeValue::Bool(true)));
        assert_eq!(attrs.get("ratio"), Some(&AttributeValue::Double(0.5)));
        assert_eq!(attrs.get("raw"), Some(&AttributeValue::Bytes(vec![1, 2])));
        assert_eq!(
            attrs.get("list"),
            Some(&AttributeValue::Array(vec![AttributeValue::String(
                "a".into()
            )]))
        );
        let Some(AttributeValue::Map(inner)) = attrs.get("map") else {
            panic!("map expected");
        };
        assert_eq!(inner.get_str("inner"), Some("x"));
        assert_eq!(attrs.get("empty"), Some(&AttributeValue::Empty));
        assert_eq!(span.events.len(), 1);
        assert_eq!(span.events[0].name, "exception");
        assert_eq!(span.events[0].time_unix_nano, 2_000);
        assert_eq!(
            span.events[0].attributes.get_str("exception.type"),
            Some("IOError")
        );
    }

    #[test]
    fn invalid_ids_are_rejected_span_by_span() {
        let good = full_span();
        let short_trace = otlp::Span {
            trace_id: vec![1; 8],
            ..full_span()
        };
        let zero_span = otlp::Span {
            span_id: vec![0; 8],
            ..full_span()
        };
        let bad_parent = otlp::Span {
            parent_span_id: vec![1; 3],
            ..full_span()
        };
        let zero_parent_is_root = otlp::Span {
            parent_span_id: vec![0; 8],
            ..full_span()
        };
        let decoded = from_request(request(vec![
            good,
            short_trace,
            zero_span,
            bad_parent,
            zero_parent_is_root,
        ]));
        assert_eq!(decoded.spans.len(), 2);
        assert_eq!(decoded.spans[1].parent_span_id, None);
        assert_eq!(decoded.rejections.total(), 3);
        assert!(
            decoded
                .rejections
                .message()
                .contains("invalid trace_id: expected 16 bytes, got 8"),
            "{}",
            decoded.rejections.message()
        );
    }

    #[test]
    fn missing_resource_gives_unknown_service() {
        let mut req = request(vec![full_span()]);
        req.resource_spans[0].resource = None;
        let decoded = from_request(req);
        assert_eq!(decoded.spans[0].service_name(), "unknown_service");
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(decode(&b"\x0a\xff\xff\xff\xff\x0f"[..]).is_err());
    }
}
