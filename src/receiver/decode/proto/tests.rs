//! The hand decoder against prost: fixed cases, every truncation and byte
//! change of a request, and generated requests.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource as OtlpResource;
use opentelemetry_proto::tonic::trace::v1::{
    self as otlp, ResourceSpans, ScopeSpans, Status, span,
};
use prost::Message;

use super::*;
use crate::model::AttributeValue;
use crate::otlp::kit::{self, RequestBuilder, kv, string as string_kv};
use crate::otlp::write;
use crate::receiver::Rejections;

/// The reference: prost's decode and the conversion the hand decoder
/// replaced.
pub(crate) fn reference_decode(bytes: &[u8]) -> Result<Decoded, prost::DecodeError> {
    Ok(from_request(ExportTraceServiceRequest::decode(bytes)?))
}

/// Converts a prost-decoded request, validating ids span by span.
pub(crate) fn from_request(request: ExportTraceServiceRequest) -> Decoded {
    let mut decoded = Decoded::default();
    for resource_spans in request.resource_spans {
        let attributes = resource_spans
            .resource
            .map(|r| attributes(r.attributes))
            .unwrap_or_default();
        let resource = Arc::new(Resource::new(attributes));
        for scope_spans in resource_spans.scope_spans {
            let scope_name: Arc<str> = scope_spans.scope.map(|s| s.name).unwrap_or_default().into();
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
        name: span.name.into(),
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

fn attributes(key_values: Vec<KeyValue>) -> Attributes {
    Attributes::from_vec(
        key_values
            .into_iter()
            .map(|kv| (kv.key, reference_value(kv.value)))
            .collect(),
    )
}

fn reference_value(value: Option<AnyValue>) -> AttributeValue {
    use any_value::Value;
    match value.and_then(|v| v.value) {
        None => AttributeValue::Empty,
        Some(Value::StringValue(s)) => AttributeValue::String(s),
        Some(Value::BoolValue(b)) => AttributeValue::Bool(b),
        Some(Value::IntValue(i)) => AttributeValue::Int(i),
        Some(Value::DoubleValue(d)) => AttributeValue::Double(d),
        Some(Value::BytesValue(b)) => AttributeValue::Bytes(b),
        Some(Value::ArrayValue(a)) => AttributeValue::Array(
            a.values
                .into_iter()
                .map(|v| reference_value(Some(v)))
                .collect(),
        ),
        Some(Value::KvlistValue(kv)) => AttributeValue::Map(attributes(kv.values)),
        // Not attribute values in OTLP traces; keep the shape, drop the payload.
        Some(Value::StringValueStrindex(_)) => AttributeValue::Empty,
    }
}

pub(crate) fn request(spans: Vec<otlp::Span>) -> ExportTraceServiceRequest {
    let resource = kit::resource(vec![
        string_kv("service.name", "checkout"),
        string_kv("k8s.namespace.name", "shop"),
    ]);
    let scope = kit::scope("io.opentelemetry.http", "");
    RequestBuilder::new()
        .resource_spans(Some(resource), Some(scope), spans)
        .build()
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

fn encode(request: &ExportTraceServiceRequest) -> Bytes {
    request.encode_to_vec().into()
}

#[test]
fn every_field_survives_protobuf_decoding() {
    let bytes = encode(&request(vec![full_span()]));
    let decoded = decode(bytes.clone()).unwrap();
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
    assert_eq!(attrs.len(), 8);
    assert_eq!(attrs.get_str("http.request.method"), Some("GET"));
    assert_eq!(
        attrs.get("http.response.status_code"),
        Some(AttributeValue::Int(503))
    );
    assert_eq!(attrs.get_i64("http.response.status_code"), Some(503));
    assert_eq!(attrs.get("sampled"), Some(AttributeValue::Bool(true)));
    assert_eq!(attrs.get("ratio"), Some(AttributeValue::Double(0.5)));
    assert_eq!(attrs.get("raw"), Some(AttributeValue::Bytes(vec![1, 2])));
    assert_eq!(
        attrs.get("list"),
        Some(AttributeValue::Array(vec![AttributeValue::String(
            "a".into()
        )]))
    );
    let Some(AttributeValue::Map(inner)) = attrs.get("map") else {
        panic!("map expected");
    };
    assert_eq!(inner.get_str("inner"), Some("x"));
    assert_eq!(attrs.get("empty"), Some(AttributeValue::Empty));
    assert_eq!(attrs.get("absent"), None);
    assert_eq!(span.events.len(), 1);
    assert_eq!(span.events[0].name, "exception");
    assert_eq!(span.events[0].time_unix_nano, 2_000);
    assert_eq!(
        span.events[0].attributes.get_str("exception.type"),
        Some("IOError")
    );
    // Strings are borrowed from the request, not copied.
    let method = attrs.get_str("http.request.method").unwrap();
    assert!(bytes.as_ptr_range().contains(&method.as_ptr()));
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
    let decoded = decode(encode(&request(vec![
        good,
        short_trace,
        zero_span,
        bad_parent,
        zero_parent_is_root,
    ])))
    .unwrap();
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
    let decoded = decode(encode(&req)).unwrap();
    assert_eq!(decoded.spans[0].service_name(), "unknown_service");
}

#[test]
fn garbage_is_a_decode_error() {
    assert!(decode(Bytes::from_static(b"\x0a\xff\xff\xff\xff\x0f")).is_err());
}

fn len_field(out: &mut Vec<u8>, tag: u32, payload: &[u8]) {
    write::bytes(out, tag, payload);
}

/// A request with one span whose encoding is `span`.
fn request_with_span(span: &[u8]) -> Bytes {
    let mut scope_spans = Vec::new();
    len_field(&mut scope_spans, tag::SCOPE_SPANS_SPANS, span);
    let mut resource_spans = Vec::new();
    len_field(
        &mut resource_spans,
        tag::RESOURCE_SPANS_SCOPE_SPANS,
        &scope_spans,
    );
    let mut request = Vec::new();
    len_field(&mut request, tag::REQUEST_RESOURCE_SPANS, &resource_spans);
    request.into()
}

fn ids_only() -> Vec<u8> {
    otlp::Span {
        trace_id: vec![1; 16],
        span_id: vec![2; 8],
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn malformed_input_is_an_error() {
    let bad_name = {
        let mut span = ids_only();
        len_field(&mut span, tag::SPAN_NAME, b"\xff\xfe");
        span
    };
    let bad_key = {
        let mut kv = Vec::new();
        len_field(&mut kv, tag::KEY_VALUE_KEY, b"k\xc3");
        let mut span = ids_only();
        len_field(&mut span, tag::SPAN_ATTRIBUTES, &kv);
        span
    };
    let bad_nested_string = {
        let mut any = Vec::new();
        len_field(&mut any, tag::ANY_STRING, b"\xc0\x80");
        let mut list = Vec::new();
        len_field(&mut list, tag::LIST_VALUES, &any);
        let mut outer = Vec::new();
        len_field(&mut outer, tag::ANY_ARRAY, &list);
        let mut kv = Vec::new();
        len_field(&mut kv, tag::KEY_VALUE_VALUE, &outer);
        let mut span = ids_only();
        len_field(&mut span, tag::SPAN_ATTRIBUTES, &kv);
        span
    };
    let name_as_varint = {
        let mut span = ids_only();
        span.extend_from_slice(&[key_byte(tag::SPAN_NAME, WireType::Varint), 1]);
        span
    };
    let start_truncated = {
        let mut span = ids_only();
        span.extend_from_slice(&[key_byte(tag::SPAN_START, WireType::SixtyFourBit), 1, 2, 3]);
        span
    };
    let overlong_varint = {
        let mut span = ids_only();
        span.push(key_byte(tag::SPAN_KIND, WireType::Varint));
        span.extend_from_slice(&[0xff; 10]);
        span.push(1);
        span
    };
    let unmatched_end_group = {
        let mut span = ids_only();
        write::key(&mut span, 99, WireType::EndGroup);
        span
    };
    for (what, span) in [
        ("bad name", bad_name),
        ("bad key", bad_key),
        ("bad nested string", bad_nested_string),
        ("name as varint", name_as_varint),
        ("truncated start", start_truncated),
        ("overlong varint", overlong_varint),
        ("unmatched end group", unmatched_end_group),
    ] {
        let bytes = request_with_span(&span);
        assert!(reference_decode(&bytes).is_err(), "prost accepts {what}");
        let err = decode(bytes).err();
        assert!(err.is_some(), "{what} accepted");
    }
    let mut past_end = request_with_span(&ids_only()).to_vec();
    past_end[1] += 1;
    assert!(decode(past_end.into()).is_err());
    let err = decode(request_with_span(&{
        let mut span = ids_only();
        len_field(&mut span, tag::SPAN_NAME, b"\xff");
        span
    }))
    .unwrap_err();
    assert_eq!(err.to_string(), "Span.name is not valid utf-8");
}

#[test]
fn unknown_fields_and_groups_are_skipped() {
    let mut span = ids_only();
    // A group holding a varint, a nested group and a length-delimited field.
    write::key(&mut span, 40, WireType::StartGroup);
    write::key(&mut span, 1, WireType::Varint);
    write::varint(&mut span, 7);
    write::key(&mut span, 2, WireType::StartGroup);
    write::key(&mut span, 2, WireType::EndGroup);
    len_field(&mut span, 3, b"xyz");
    write::key(&mut span, 40, WireType::EndGroup);
    write::key(&mut span, 41, WireType::ThirtyTwoBit);
    span.extend_from_slice(&[1, 2, 3, 4]);
    write::key(&mut span, 42, WireType::SixtyFourBit);
    span.extend_from_slice(&[0; 8]);
    len_field(
        &mut span,
        tag::SPAN_ATTRIBUTES,
        &string_kv("a", "b").encode_to_vec(),
    );
    // A known field between two attributes.
    len_field(&mut span, tag::SPAN_NAME, b"between");
    len_field(
        &mut span,
        tag::SPAN_ATTRIBUTES,
        &string_kv("c", "d").encode_to_vec(),
    );
    let bytes = request_with_span(&span);
    let decoded = decode(bytes.clone()).unwrap();
    assert_eq!(decoded.spans[0].name, "between");
    let attributes = &decoded.spans[0].attributes;
    assert_eq!(attributes.len(), 2);
    assert_eq!(attributes.get_str("a"), Some("b"));
    assert_eq!(attributes.get_str("c"), Some("d"));
    assert_eq!(
        decoded.spans,
        reference_decode(&bytes).unwrap().spans,
        "prost reads the same"
    );
}

/// A span attribute whose value nests `depth` arrays.
fn nested_arrays(depth: usize) -> Bytes {
    let mut any = AnyValue {
        value: Some(any_value::Value::IntValue(1)),
    };
    for _ in 0..depth {
        any = AnyValue {
            value: Some(any_value::Value::ArrayValue(ArrayValue {
                values: vec![any],
            })),
        };
    }
    let span = otlp::Span {
        attributes: vec![KeyValue {
            key: "deep".into(),
            value: Some(any),
            ..Default::default()
        }],
        ..full_span()
    };
    encode(&request(vec![span]))
}

#[test]
fn nesting_limit_matches_prost() {
    let mut accepted = 0;
    for depth in 30..60 {
        let bytes = nested_arrays(depth);
        let prost_ok = reference_decode(&bytes).is_ok();
        let ours = decode(bytes);
        assert_eq!(ours.is_ok(), prost_ok, "depth {depth}");
        if let Err(err) = ours {
            assert!(matches!(err, OtlpProtoError::RecursionLimit), "{err}");
        } else {
            accepted += 1;
        }
    }
    assert!(
        (1..30).contains(&accepted),
        "the limit lies in the range tried"
    );
    // Far past the limit, built by hand: prost's own encoder would
    // recurse as deep.
    let mut any = AnyValue {
        value: Some(any_value::Value::IntValue(1)),
    }
    .encode_to_vec();
    for _ in 0..5_000 {
        let mut list = Vec::new();
        len_field(&mut list, tag::LIST_VALUES, &any);
        any.clear();
        len_field(&mut any, tag::ANY_ARRAY, &list);
    }
    let mut kv = Vec::new();
    len_field(&mut kv, tag::KEY_VALUE_VALUE, &any);
    let mut span = ids_only();
    len_field(&mut span, tag::SPAN_ATTRIBUTES, &kv);
    assert!(matches!(
        decode(request_with_span(&span)),
        Err(OtlpProtoError::RecursionLimit)
    ));
}

#[test]
fn duplicated_resource_and_values_merge_as_in_prost() {
    let resource_a = OtlpResource {
        attributes: vec![string_kv("service.name", "a")],
        ..Default::default()
    };
    let resource_b = OtlpResource {
        attributes: vec![string_kv("service.name", "b"), string_kv("x", "y")],
        ..Default::default()
    };
    let mut value = Vec::new();
    // int, then string: the last oneof field wins.
    len_field(
        &mut value,
        tag::KEY_VALUE_VALUE,
        &AnyValue {
            value: Some(any_value::Value::IntValue(3)),
        }
        .encode_to_vec(),
    );
    len_field(
        &mut value,
        tag::KEY_VALUE_VALUE,
        &AnyValue {
            value: Some(any_value::Value::StringValue("s".into())),
        }
        .encode_to_vec(),
    );
    len_field(&mut value, tag::KEY_VALUE_KEY, b"first");
    len_field(&mut value, tag::KEY_VALUE_KEY, b"second");
    let mut span = ids_only();
    len_field(&mut span, tag::SPAN_ATTRIBUTES, &value);
    let mut scope_spans = Vec::new();
    len_field(&mut scope_spans, tag::SCOPE_SPANS_SPANS, &span);
    let mut resource_spans = Vec::new();
    len_field(
        &mut resource_spans,
        tag::RESOURCE_SPANS_SCOPE_SPANS,
        &scope_spans,
    );
    len_field(
        &mut resource_spans,
        tag::RESOURCE_SPANS_RESOURCE,
        &resource_a.encode_to_vec(),
    );
    len_field(
        &mut resource_spans,
        tag::RESOURCE_SPANS_RESOURCE,
        &resource_b.encode_to_vec(),
    );
    let mut bytes = Vec::new();
    len_field(&mut bytes, tag::REQUEST_RESOURCE_SPANS, &resource_spans);
    let reference = reference_decode(&bytes).unwrap();
    let decoded = decode(bytes.into()).unwrap();
    assert_eq!(decoded.spans, reference.spans);
    let span = &decoded.spans[0];
    assert_eq!(span.resource.attributes.len(), 3);
    assert_eq!(span.service_name(), "a");
    assert_eq!(span.resource.attributes.get_str("x"), Some("y"));
    assert_eq!(span.attributes.get_str("second"), Some("s"));
    assert_eq!(span.attributes.get_str("first"), None);
}

/// Agrees with prost, whichever way it decides, or accepts more.
fn agrees_with_prost(bytes: &[u8]) -> std::result::Result<(), String> {
    let ours = decode(Bytes::copy_from_slice(bytes));
    let Ok(reference) = reference_decode(bytes) else {
        return Ok(());
    };
    let ours = ours.map_err(|err| format!("prost accepts, we refuse: {err}"))?;
    // Debug, not ==, so that a damaged double that became NaN compares equal.
    if format!("{:?}", ours.spans) != format!("{:?}", reference.spans)
        || ours.rejections != reference.rejections
    {
        return Err("decoded differently".into());
    }
    Ok(())
}

#[test]
fn every_truncation_and_byte_change_agrees_with_prost() {
    let mut full = request(vec![full_span(), full_span()]);
    full.resource_spans[0].scope_spans[0].spans[1].trace_id = vec![0; 16];
    let bytes = full.encode_to_vec();
    let mut accepted = 0;
    for at in 0..bytes.len() {
        let mut variants = vec![bytes[..at].to_vec()];
        for value in [0x00, 0x01, 0x7f, 0x80, 0xff, bytes[at] ^ 0x08] {
            let mut changed = bytes.clone();
            changed[at] = value;
            variants.push(changed);
        }
        for variant in variants {
            accepted += usize::from(reference_decode(&variant).is_ok());
            if let Err(why) = agrees_with_prost(&variant) {
                panic!("byte {at}: {why}");
            }
        }
    }
    // Many changes land in ids, names and values, which stay valid.
    assert!(accepted > bytes.len(), "{accepted}");
}

mod differential;
