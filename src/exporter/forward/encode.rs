//! Lean spans → an OTLP `ExportTraceServiceRequest`, written by hand.
//!
//! Why not opentelemetry-proto's prost types: attributes decoded from
//! protobuf are still the receiver's wire bytes, and building prost
//! `KeyValue`s would decode every key and value into fresh strings only to
//! encode them again — the cost the receiver's own decoder exists to avoid.
//! Written by hand, each attribute's `KeyValue` bytes are copied verbatim
//! under the right field number, so forwarding a span costs a few memcpys.
//! Owned attributes (from OTLP/JSON) are encoded from their values.
//!
//! Spans are grouped back under their resource (by identity: spans of one
//! request share it) and scope name. The lean span keeps what the service
//! graph and the exporters read — ids, parent, name, kind, times, status,
//! attributes, events, resource attributes, scope name — so that is what a
//! gateway receives; trace state, flags, links, dropped counts, scope
//! version and schema URLs are not kept by the receiver and not forwarded.
//!
//! Output is deterministic and in canonical protobuf form (fields in
//! number order, defaults omitted as prost omits them), so prost and the
//! receiver's decoder read it back to the same spans (tested below).

use std::collections::HashMap;

use bytes::BufMut;

use crate::model::{AttributeValue, Attributes, Event, Resource, Span, SpanKind, StatusCode};
use crate::otlp::tag::{self, WireType};
use crate::otlp::write::{
    self, field_len, fixed64_len, key, key_len, key_size, string_len, varint, varint_field_len,
    varint_len,
};

/// Where a request is written: tonic's send buffer, or a `Vec` in tests.
pub trait Out: BufMut {
    /// Makes room for `additional` more bytes at once.
    fn reserve_room(&mut self, additional: usize);
}

impl Out for Vec<u8> {
    fn reserve_room(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

impl Out for tonic::codec::EncodeBuf<'_> {
    fn reserve_room(&mut self, additional: usize) {
        self.reserve(additional);
    }
}

/// Spans with their encoded lengths, measured once: the sender checks the
/// request size with them before it sends, the codec writes with them.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    spans: Vec<Span>,
    lens: Vec<usize>,
}

impl Batch {
    /// Measures `spans`.
    pub fn new(spans: Vec<Span>) -> Self {
        let lens = spans.iter().map(span_len).collect();
        Self { spans, lens }
    }

    /// The spans.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// Gives the spans back.
    pub fn into_spans(self) -> Vec<Span> {
        self.spans
    }

    /// Bytes [`Batch::encode`] writes.
    pub fn request_len(&self) -> usize {
        Plan::new(&self.spans, &self.lens).total
    }

    /// Splits off the spans from `at` on.
    pub fn split_off(&mut self, at: usize) -> Vec<Span> {
        self.lens.truncate(at);
        self.spans.split_off(at)
    }

    /// Appends the request to `out`.
    pub fn encode(&self, out: &mut impl Out) {
        write_request(&Plan::new(&self.spans, &self.lens), &self.spans, out);
    }
}

/// Bytes [`encode_request`] writes for `spans`.
pub fn request_len(spans: &[Span]) -> usize {
    let lens: Vec<usize> = spans.iter().map(span_len).collect();
    Plan::new(spans, &lens).total
}

/// Appends `spans` to `out` as one `ExportTraceServiceRequest`.
pub fn encode_request(spans: &[Span], out: &mut impl Out) {
    let lens: Vec<usize> = spans.iter().map(span_len).collect();
    write_request(&Plan::new(spans, &lens), spans, out);
}

fn write_request(plan: &Plan<'_>, spans: &[Span], out: &mut impl Out) {
    out.reserve_room(plan.total);
    for (resource, sized) in plan.resources.iter().zip(&plan.sized) {
        key_len(out, tag::REQUEST_RESOURCE_SPANS, sized.len);
        key_len(out, tag::RESOURCE_SPANS_RESOURCE, sized.resource_len);
        write_attributes(out, &resource.resource.attributes, tag::RESOURCE_ATTRIBUTES);
        for (scope, &scope_len) in resource.scopes.iter().zip(&sized.scope_lens) {
            key_len(out, tag::RESOURCE_SPANS_SCOPE_SPANS, scope_len);
            key_len(out, tag::SCOPE_SPANS_SCOPE, scope_message_len(scope.name));
            write::string(out, tag::SCOPE_NAME, scope.name);
            for &i in &scope.spans {
                key_len(out, tag::SCOPE_SPANS_SPANS, plan.span_lens[i]);
                write_span(out, &spans[i]);
            }
        }
    }
}

/// Every message's length, innermost first: protobuf writes a message's
/// length before the message.
struct Plan<'a> {
    resources: Vec<ResourceGroup<'a>>,
    span_lens: &'a [usize],
    sized: Vec<SizedResource>,
    total: usize,
}

struct SizedResource {
    len: usize,
    resource_len: usize,
    scope_lens: Vec<usize>,
}

impl<'a> Plan<'a> {
    /// `span_lens[i]` is [`span_len`] of `spans[i]`.
    fn new(spans: &'a [Span], span_lens: &'a [usize]) -> Self {
        debug_assert_eq!(spans.len(), span_lens.len());
        let resources = group(spans);
        let mut total = 0;
        let mut sized = Vec::with_capacity(resources.len());
        for resource in &resources {
            let scope_lens: Vec<usize> = resource
                .scopes
                .iter()
                .map(|scope| {
                    let name = scope_message_len(scope.name);
                    field_len(tag::SCOPE_SPANS_SCOPE, name)
                        + scope
                            .spans
                            .iter()
                            .map(|&i| field_len(tag::SCOPE_SPANS_SPANS, span_lens[i]))
                            .sum::<usize>()
                })
                .collect();
            let resource_len =
                attributes_len(&resource.resource.attributes, tag::RESOURCE_ATTRIBUTES);
            let len = field_len(tag::RESOURCE_SPANS_RESOURCE, resource_len)
                + scope_lens
                    .iter()
                    .map(|&l| field_len(tag::RESOURCE_SPANS_SCOPE_SPANS, l))
                    .sum::<usize>();
            total += field_len(tag::REQUEST_RESOURCE_SPANS, len);
            sized.push(SizedResource {
                len,
                resource_len,
                scope_lens,
            });
        }
        Self {
            resources,
            span_lens,
            sized,
            total,
        }
    }
}

struct ResourceGroup<'a> {
    resource: &'a Resource,
    scopes: Vec<ScopeGroup<'a>>,
}

struct ScopeGroup<'a> {
    name: &'a str,
    spans: Vec<usize>,
}

/// Spans by resource (identity of the shared `Arc`), then by scope name,
/// in order of first appearance.
fn group(spans: &[Span]) -> Vec<ResourceGroup<'_>> {
    let mut groups: Vec<ResourceGroup<'_>> = Vec::new();
    let mut by_resource: HashMap<*const Resource, usize> = HashMap::new();
    // Neighbours mostly share a resource: skip the map for them.
    let mut last: Option<(*const Resource, usize)> = None;
    for (i, span) in spans.iter().enumerate() {
        let resource = std::sync::Arc::as_ptr(&span.resource);
        let index = match last {
            Some((previous, index)) if previous == resource => index,
            _ => *by_resource.entry(resource).or_insert_with(|| {
                groups.push(ResourceGroup {
                    resource: &span.resource,
                    scopes: Vec::new(),
                });
                groups.len() - 1
            }),
        };
        last = Some((resource, index));
        let scopes = &mut groups[index].scopes;
        match scopes.iter_mut().find(|s| s.name == &*span.scope_name) {
            Some(scope) => scope.spans.push(i),
            None => scopes.push(ScopeGroup {
                name: &span.scope_name,
                spans: vec![i],
            }),
        }
    }
    groups
}

fn scope_message_len(name: &str) -> usize {
    string_len(tag::SCOPE_NAME, name)
}

fn span_len(span: &Span) -> usize {
    let mut len = field_len(tag::SPAN_TRACE_ID, 16) + field_len(tag::SPAN_SPAN_ID, 8);
    if span.parent_span_id.is_some() {
        len += field_len(tag::SPAN_PARENT_SPAN_ID, 8);
    }
    len += string_len(tag::SPAN_NAME, &span.name);
    len += varint_field_len(tag::SPAN_KIND, kind_number(span.kind));
    len += fixed64_len(tag::SPAN_START, span.start_unix_nano)
        + fixed64_len(tag::SPAN_END, span.end_unix_nano);
    len += attributes_len(&span.attributes, tag::SPAN_ATTRIBUTES);
    for event in &span.events {
        len += field_len(tag::SPAN_EVENTS, event_len(event));
    }
    let status = status_len(span.status_code, &span.status_message);
    if status > 0 {
        len += field_len(tag::SPAN_STATUS, status);
    }
    len
}

fn write_span(out: &mut impl BufMut, span: &Span) {
    write::bytes(out, tag::SPAN_TRACE_ID, &span.trace_id.to_bytes());
    write::bytes(out, tag::SPAN_SPAN_ID, &span.span_id.to_bytes());
    if let Some(parent) = span.parent_span_id {
        write::bytes(out, tag::SPAN_PARENT_SPAN_ID, &parent.to_bytes());
    }
    write::string(out, tag::SPAN_NAME, &span.name);
    write::varint_field(out, tag::SPAN_KIND, kind_number(span.kind));
    write::fixed64(out, tag::SPAN_START, span.start_unix_nano);
    write::fixed64(out, tag::SPAN_END, span.end_unix_nano);
    write_attributes(out, &span.attributes, tag::SPAN_ATTRIBUTES);
    for event in &span.events {
        key_len(out, tag::SPAN_EVENTS, event_len(event));
        write::fixed64(out, tag::EVENT_TIME, event.time_unix_nano);
        write::string(out, tag::EVENT_NAME, &event.name);
        write_attributes(out, &event.attributes, tag::EVENT_ATTRIBUTES);
    }
    let status = status_len(span.status_code, &span.status_message);
    if status > 0 {
        key_len(out, tag::SPAN_STATUS, status);
        write::string(out, tag::STATUS_MESSAGE, &span.status_message);
        write::varint_field(out, tag::STATUS_CODE, status_number(span.status_code));
    }
}

fn event_len(event: &Event) -> usize {
    fixed64_len(tag::EVENT_TIME, event.time_unix_nano)
        + string_len(tag::EVENT_NAME, &event.name)
        + attributes_len(&event.attributes, tag::EVENT_ATTRIBUTES)
}

fn status_len(code: StatusCode, message: &str) -> usize {
    string_len(tag::STATUS_MESSAGE, message)
        + varint_field_len(tag::STATUS_CODE, status_number(code))
}

fn kind_number(kind: SpanKind) -> u64 {
    match kind {
        SpanKind::Unspecified => 0,
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

fn status_number(code: StatusCode) -> u64 {
    match code {
        StatusCode::Unset => 0,
        StatusCode::Ok => 1,
        StatusCode::Error => 2,
    }
}

/// Bytes of `attributes` as repeated `KeyValue`s under `field`.
fn attributes_len(attributes: &Attributes, field: u32) -> usize {
    if let Some(entries) = attributes.wire_entries() {
        return entries.map(|kv| field_len(field, kv.len())).sum();
    }
    attributes
        .owned_pairs()
        .unwrap_or_default()
        .iter()
        .map(|(key, value)| field_len(field, key_value_len(key, value)))
        .sum()
}

fn write_attributes(out: &mut impl BufMut, attributes: &Attributes, field: u32) {
    if let Some(entries) = attributes.wire_entries() {
        // The fast path: the receiver validated these bytes; copy them.
        for kv in entries {
            key_len(out, field, kv.len());
            out.put_slice(kv);
        }
        return;
    }
    for (key, value) in attributes.owned_pairs().unwrap_or_default() {
        key_len(out, field, key_value_len(key, value));
        write_key_value(out, key, value);
    }
}

fn key_value_len(key: &str, value: &AttributeValue) -> usize {
    // The value is always written, even empty, as prost writes `Some`.
    string_len(tag::KEY_VALUE_KEY, key) + field_len(tag::KEY_VALUE_VALUE, any_len(value))
}

fn write_key_value(out: &mut impl BufMut, key: &str, value: &AttributeValue) {
    write::string(out, tag::KEY_VALUE_KEY, key);
    key_len(out, tag::KEY_VALUE_VALUE, any_len(value));
    write_any(out, value);
}

/// Bytes of an `AnyValue` message. The `oneof` field is written even when
/// it holds a default (`false`, `0`, `""`), as protobuf requires.
fn any_len(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::String(s) => field_len(tag::ANY_STRING, s.len()),
        AttributeValue::Bool(b) => key_size(tag::ANY_BOOL) + varint_len(u64::from(*b)),
        AttributeValue::Int(i) => key_size(tag::ANY_INT) + varint_len(*i as u64),
        AttributeValue::Double(_) => key_size(tag::ANY_DOUBLE) + 8,
        AttributeValue::Bytes(b) => field_len(tag::ANY_BYTES, b.len()),
        AttributeValue::Array(items) => field_len(tag::ANY_ARRAY, array_len(items)),
        AttributeValue::Map(map) => {
            field_len(tag::ANY_KVLIST, attributes_len(map, tag::LIST_VALUES))
        }
        AttributeValue::Empty => 0,
    }
}

fn array_len(items: &[AttributeValue]) -> usize {
    items
        .iter()
        .map(|item| field_len(tag::LIST_VALUES, any_len(item)))
        .sum()
}

fn write_any(out: &mut impl BufMut, value: &AttributeValue) {
    match value {
        AttributeValue::String(s) => write::bytes(out, tag::ANY_STRING, s.as_bytes()),
        AttributeValue::Bool(b) => {
            key(out, tag::ANY_BOOL, WireType::Varint);
            varint(out, u64::from(*b));
        }
        AttributeValue::Int(i) => {
            key(out, tag::ANY_INT, WireType::Varint);
            varint(out, *i as u64);
        }
        AttributeValue::Double(d) => {
            key(out, tag::ANY_DOUBLE, WireType::SixtyFourBit);
            out.put_slice(&d.to_bits().to_le_bytes());
        }
        AttributeValue::Bytes(b) => write::bytes(out, tag::ANY_BYTES, b),
        AttributeValue::Array(items) => {
            key_len(out, tag::ANY_ARRAY, array_len(items));
            for item in items {
                key_len(out, tag::LIST_VALUES, any_len(item));
                write_any(out, item);
            }
        }
        AttributeValue::Map(map) => {
            key_len(out, tag::ANY_KVLIST, attributes_len(map, tag::LIST_VALUES));
            write_attributes(out, map, tag::LIST_VALUES);
        }
        AttributeValue::Empty => {}
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource as ProtoResource;
    use opentelemetry_proto::tonic::trace::v1::{
        ResourceSpans, ScopeSpans, Span as ProtoSpan, Status, span,
    };
    use prost::Message as _;

    use super::*;
    use crate::model::{SpanId, TraceId};
    use crate::receiver::decode::proto as otlp_proto;

    fn text(s: &str) -> AnyValue {
        AnyValue {
            value: Some(any_value::Value::StringValue(s.into())),
        }
    }

    fn kv(key: &str, value: AnyValue) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(value),
            ..Default::default()
        }
    }

    /// Every value type, nested lists and maps, and defaults that a
    /// careless encoder would drop (`false`, `0`, `""`, an empty value).
    fn rich_attributes() -> Vec<KeyValue> {
        vec![
            kv("http.request.method", text("POST")),
            kv(
                "http.response.status_code",
                AnyValue {
                    value: Some(any_value::Value::IntValue(-503)),
                },
            ),
            kv(
                "ok",
                AnyValue {
                    value: Some(any_value::Value::BoolValue(false)),
                },
            ),
            kv(
                "zero",
                AnyValue {
                    value: Some(any_value::Value::IntValue(0)),
                },
            ),
            kv(
                "ratio",
                AnyValue {
                    value: Some(any_value::Value::DoubleValue(0.25)),
                },
            ),
            kv("blank", text("")),
            kv(
                "raw",
                AnyValue {
                    value: Some(any_value::Value::BytesValue(vec![0, 1, 255])),
                },
            ),
            kv("nothing", AnyValue { value: None }),
            kv("ünïcode.kéy", text("välue ✓")),
            kv("long", text(&"x".repeat(300))),
            kv(
                "list",
                AnyValue {
                    value: Some(any_value::Value::ArrayValue(ArrayValue {
                        values: vec![
                            text("a"),
                            AnyValue {
                                value: Some(any_value::Value::IntValue(2)),
                            },
                            AnyValue::default(),
                        ],
                    })),
                },
            ),
            kv(
                "map",
                AnyValue {
                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                        values: vec![
                            kv("inner", text("v")),
                            kv(
                                "deeper",
                                AnyValue {
                                    value: Some(any_value::Value::KvlistValue(KeyValueList {
                                        values: vec![kv("k", text("x"))],
                                    })),
                                },
                            ),
                        ],
                    })),
                },
            ),
        ]
    }

    fn proto_span(trace: u8, id: u8, parent: Option<u8>, kind: i32) -> ProtoSpan {
        ProtoSpan {
            trace_id: vec![trace; 16],
            span_id: vec![id; 8],
            parent_span_id: parent.map(|p| vec![p; 8]).unwrap_or_default(),
            name: format!("op {id}"),
            kind,
            start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(id),
            end_time_unix_nano: 1_700_000_000_002_000_000 + u64::from(id),
            attributes: rich_attributes(),
            events: vec![span::Event {
                time_unix_nano: 1_700_000_000_001_000_000,
                name: "exception".into(),
                attributes: vec![
                    kv("exception.type", text("IOError")),
                    kv("exception.message", text("boom")),
                ],
                ..Default::default()
            }],
            status: Some(Status {
                message: if id.is_multiple_of(2) {
                    "card declined".into()
                } else {
                    String::new()
                },
                code: i32::from(id % 3),
            }),
            ..Default::default()
        }
    }

    fn resource_spans(service: &str, scopes: Vec<(&str, Vec<ProtoSpan>)>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(ProtoResource {
                attributes: vec![
                    kv("service.name", text(service)),
                    kv("k8s.pod.name", text("pod-1")),
                    kv(
                        "host.cpus",
                        AnyValue {
                            value: Some(any_value::Value::IntValue(8)),
                        },
                    ),
                ],
                ..Default::default()
            }),
            scope_spans: scopes
                .into_iter()
                .map(|(scope, spans)| ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: scope.into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    /// What the encoder must produce for the lean view of a request:
    /// canonical form, empty statuses absent.
    fn request() -> ExportTraceServiceRequest {
        let mut quiet = proto_span(9, 9, None, 0);
        quiet.status = None;
        quiet.events.clear();
        quiet.attributes.clear();
        quiet.name.clear();
        ExportTraceServiceRequest {
            resource_spans: vec![
                resource_spans(
                    "frontend",
                    vec![
                        (
                            "io.opentelemetry.http",
                            vec![proto_span(1, 1, None, 2), proto_span(1, 2, Some(1), 3)],
                        ),
                        ("", vec![proto_span(2, 3, Some(7), 1)]),
                    ],
                ),
                resource_spans(
                    "checkout",
                    vec![("db", vec![proto_span(1, 4, Some(2), 2), quiet])],
                ),
            ],
        }
    }

    fn decode_len(spans: &[Span]) -> usize {
        let mut out = Vec::new();
        encode_request(spans, &mut out);
        out.len()
    }

    fn decode(bytes: Vec<u8>) -> Vec<Span> {
        let decoded = otlp_proto::decode(bytes.into()).expect("decodes");
        assert_eq!(decoded.rejections.total(), 0);
        decoded.spans
    }

    #[test]
    fn round_trip_keeps_every_field_of_wire_decoded_spans() {
        let spans = decode(request().encode_to_vec());
        assert_eq!(spans.len(), 5);
        let mut out = Vec::new();
        encode_request(&spans, &mut out);
        assert_eq!(decode(out.clone()), spans);
        // Canonical: prost reads what prost would have written.
        let mut expected = request();
        for resource in &mut expected.resource_spans {
            for scope in &mut resource.scope_spans {
                for span in &mut scope.spans {
                    if span
                        .status
                        .as_ref()
                        .is_some_and(|s| s.code == 0 && s.message.is_empty())
                    {
                        span.status = None;
                    }
                }
            }
        }
        assert_eq!(
            ExportTraceServiceRequest::decode(&out[..]).unwrap(),
            expected
        );
        assert_eq!(
            out,
            expected.encode_to_vec(),
            "byte for byte what prost writes"
        );
    }

    #[test]
    fn round_trip_of_owned_attributes() {
        use AttributeValue as V;
        let attributes = Attributes::from_vec(vec![
            ("s".into(), V::String("v".into())),
            ("b".into(), V::Bool(false)),
            ("i".into(), V::Int(-1)),
            ("d".into(), V::Double(f64::MAX)),
            ("raw".into(), V::Bytes(vec![])),
            ("empty".into(), V::Empty),
            (
                "list".into(),
                V::Array(vec![V::Int(1), V::Array(vec![]), V::Empty]),
            ),
            (
                "map".into(),
                V::Map(Attributes::from_vec(vec![(
                    "k".into(),
                    V::String(String::new()),
                )])),
            ),
        ]);
        let resource = Arc::new(Resource::new(Attributes::from_vec(vec![(
            "service.name".into(),
            V::String("json-service".into()),
        )])));
        let spans: Vec<Span> = (1..=3u8)
            .map(|i| Span {
                resource: resource.clone(),
                scope_name: "scope".into(),
                trace_id: TraceId::from_bytes([i; 16]),
                span_id: SpanId::from_bytes([i; 8]),
                parent_span_id: (i > 1).then(|| SpanId::from_bytes([i - 1; 8])),
                name: format!("span {i}").into(),
                kind: SpanKind::Consumer,
                status_code: StatusCode::Error,
                status_message: "failed".into(),
                start_unix_nano: 10,
                end_unix_nano: 20,
                attributes: attributes.clone(),
                events: vec![Event {
                    name: "e".into(),
                    time_unix_nano: 0,
                    attributes: attributes.clone(),
                }],
            })
            .collect();
        let mut out = Vec::new();
        encode_request(&spans, &mut out);
        let back = decode(out.clone());
        assert_eq!(back, spans);
        let request = ExportTraceServiceRequest::decode(&out[..]).unwrap();
        assert_eq!(request.resource_spans.len(), 1, "one shared resource");
        assert_eq!(request.resource_spans[0].scope_spans[0].spans.len(), 3);
    }

    #[test]
    fn a_batch_measures_once_and_encodes_alike_after_a_split() {
        let spans = decode(request().encode_to_vec());
        let mut batch = Batch::new(spans.clone());
        let mut whole = Vec::new();
        batch.encode(&mut whole);
        assert_eq!(batch.request_len(), whole.len());
        assert_eq!(decode(whole), spans);
        let back = batch.split_off(2);
        assert_eq!(back, spans[2..]);
        let mut front = Vec::new();
        batch.encode(&mut front);
        assert_eq!(batch.request_len(), front.len());
        assert_eq!(decode(front), spans[..2]);
        assert_eq!(batch.into_spans(), spans[..2]);
    }

    #[test]
    fn spans_regroup_by_resource_and_scope() {
        let spans = decode(request().encode_to_vec());
        // Interleave the two resources: still two groups, order kept.
        let shuffled = vec![
            spans[4].clone(),
            spans[0].clone(),
            spans[3].clone(),
            spans[2].clone(),
        ];
        let mut out = Vec::new();
        encode_request(&shuffled, &mut out);
        let request = ExportTraceServiceRequest::decode(&out[..]).unwrap();
        let shape: Vec<(String, Vec<(String, usize)>)> = request
            .resource_spans
            .iter()
            .map(|r| {
                let AnyValue {
                    value: Some(any_value::Value::StringValue(service)),
                } = r.resource.as_ref().unwrap().attributes[0]
                    .value
                    .clone()
                    .unwrap()
                else {
                    panic!("service name");
                };
                let scopes = r
                    .scope_spans
                    .iter()
                    .map(|s| {
                        (
                            s.scope.as_ref().map(|s| s.name.clone()).unwrap_or_default(),
                            s.spans.len(),
                        )
                    })
                    .collect();
                (service, scopes)
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("checkout".to_owned(), vec![("db".to_owned(), 2)]),
                (
                    "frontend".to_owned(),
                    vec![("io.opentelemetry.http".to_owned(), 1), (String::new(), 1)]
                ),
            ]
        );
        // Read back in group order.
        let grouped = vec![
            spans[4].clone(),
            spans[3].clone(),
            spans[0].clone(),
            spans[2].clone(),
        ];
        assert_eq!(decode(out.clone()), grouped);
        out.clear();
        encode_request(&[], &mut out);
        assert!(out.is_empty());
        assert_eq!(request_len(&shuffled), decode_len(&shuffled));
    }
}
