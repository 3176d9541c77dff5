//! The hand decoder against prost on generated requests.

use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;

use super::*;

/// A deterministic source of encoding choices.
struct Noise(u64);

impl Noise {
    fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }

    /// Sometimes a field no OTLP message defines.
    fn unknown(&mut self, out: &mut Vec<u8>) {
        if self.chance(4) {
            self.unknown_field(out, 0);
        }
    }

    fn unknown_field(&mut self, out: &mut Vec<u8>, depth: u32) {
        let tag = 50 + self.below(2000) as u32;
        match self.below(if depth < 2 { 5 } else { 4 }) {
            0 => {
                write::key(out, tag, WireType::Varint);
                let value = self.next() >> self.below(64);
                write::varint(out, value);
            }
            1 => {
                write::key(out, tag, WireType::ThirtyTwoBit);
                out.extend_from_slice(&(self.next() as u32).to_le_bytes());
            }
            2 => {
                write::key(out, tag, WireType::SixtyFourBit);
                out.extend_from_slice(&self.next().to_le_bytes());
            }
            3 => {
                let payload: Vec<u8> = (0..self.below(12)).map(|_| self.next() as u8).collect();
                len_field(out, tag, &payload);
            }
            _ => {
                write::key(out, tag, WireType::StartGroup);
                for _ in 0..self.below(3) {
                    self.unknown_field(out, depth + 1);
                }
                write::key(out, tag, WireType::EndGroup);
            }
        }
    }

    /// Concatenates fields, sometimes shuffled, with unknown fields
    /// between them. Any order is valid protobuf; the reference
    /// decodes the very same bytes.
    fn join(&mut self, mut parts: Vec<Vec<u8>>) -> Vec<u8> {
        if self.chance(2) {
            for i in (1..parts.len()).rev() {
                let j = self.below(i as u64 + 1) as usize;
                parts.swap(i, j);
            }
        }
        let mut out = Vec::new();
        for part in parts {
            self.unknown(&mut out);
            out.extend_from_slice(&part);
        }
        self.unknown(&mut out);
        out
    }
}

fn field(tag: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    len_field(&mut out, tag, payload);
    out
}

fn encode_request(request: &ExportTraceServiceRequest, noise: &mut Noise) -> Vec<u8> {
    // Resource spans keep their order: shuffling would only reorder output.
    let parts = request
        .resource_spans
        .iter()
        .map(|rs| {
            field(
                tag::REQUEST_RESOURCE_SPANS,
                &encode_resource_spans(rs, noise),
            )
        })
        .collect();
    noise.join_ordered(parts)
}

fn encode_resource_spans(rs: &ResourceSpans, noise: &mut Noise) -> Vec<u8> {
    let mut parts = Vec::new();
    if let Some(resource) = &rs.resource {
        // Sometimes in two pieces, which protobuf merges.
        let split = noise.below(resource.attributes.len() as u64 + 1) as usize;
        let pieces = if noise.chance(3) {
            vec![&resource.attributes[..split], &resource.attributes[split..]]
        } else {
            vec![&resource.attributes[..]]
        };
        for attributes in pieces {
            let mut attrs = Vec::new();
            for kv in attributes {
                attrs.push(field(tag::RESOURCE_ATTRIBUTES, &encode_kv(kv, noise)));
            }
            let dropped = OtlpResource {
                dropped_attributes_count: resource.dropped_attributes_count,
                ..Default::default()
            };
            attrs.push(dropped.encode_to_vec());
            parts.push(field(tag::RESOURCE_SPANS_RESOURCE, &noise.join(attrs)));
        }
    }
    for ss in &rs.scope_spans {
        parts.push(field(
            tag::RESOURCE_SPANS_SCOPE_SPANS,
            &encode_scope_spans(ss, noise),
        ));
    }
    parts.push(
        ResourceSpans {
            schema_url: rs.schema_url.clone(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    if noise.chance(3) && !parts.is_empty() {
        parts.rotate_left(1);
    }
    noise.join_ordered(parts)
}

fn encode_scope_spans(ss: &ScopeSpans, noise: &mut Noise) -> Vec<u8> {
    let mut parts = Vec::new();
    if let Some(scope) = &ss.scope {
        if noise.chance(4) {
            let other = InstrumentationScope {
                name: "overridden".into(),
                ..Default::default()
            };
            parts.push(field(tag::SCOPE_SPANS_SCOPE, &other.encode_to_vec()));
        }
        let mut bytes = scope.encode_to_vec();
        noise.unknown(&mut bytes);
        parts.push(field(tag::SCOPE_SPANS_SCOPE, &bytes));
    }
    for span in &ss.spans {
        parts.push(field(tag::SCOPE_SPANS_SPANS, &encode_span(span, noise)));
    }
    if noise.chance(3) && !parts.is_empty() {
        parts.rotate_left(1);
    }
    noise.join_ordered(parts)
}

fn encode_span(span: &otlp::Span, noise: &mut Noise) -> Vec<u8> {
    let only = |f: &dyn Fn(&mut otlp::Span)| {
        let mut part = otlp::Span::default();
        f(&mut part);
        part.encode_to_vec()
    };
    let mut parts = vec![
        only(&|p| p.trace_id = span.trace_id.clone()),
        only(&|p| p.span_id = span.span_id.clone()),
        only(&|p| p.trace_state = span.trace_state.clone()),
        only(&|p| p.parent_span_id = span.parent_span_id.clone()),
        only(&|p| p.flags = span.flags),
        only(&|p| p.name = span.name.clone()),
        only(&|p| p.kind = span.kind),
        only(&|p| p.start_time_unix_nano = span.start_time_unix_nano),
        only(&|p| p.end_time_unix_nano = span.end_time_unix_nano),
        only(&|p| p.dropped_attributes_count = span.dropped_attributes_count),
        only(&|p| p.links = span.links.clone()),
    ];
    if noise.chance(5) {
        parts.insert(0, only(&|p| p.name = "overridden".into()));
    }
    for kv in &span.attributes {
        parts.push(field(tag::SPAN_ATTRIBUTES, &encode_kv(kv, noise)));
    }
    for event in &span.events {
        let mut bytes = event.encode_to_vec();
        noise.unknown(&mut bytes);
        parts.push(field(tag::SPAN_EVENTS, &bytes));
    }
    if let Some(status) = &span.status {
        if noise.chance(3) {
            let code = Status {
                code: status.code,
                ..Default::default()
            };
            let message = Status {
                message: status.message.clone(),
                ..Default::default()
            };
            parts.push(field(tag::SPAN_STATUS, &code.encode_to_vec()));
            parts.push(field(tag::SPAN_STATUS, &message.encode_to_vec()));
        } else {
            parts.push(field(tag::SPAN_STATUS, &status.encode_to_vec()));
        }
    }
    noise.join(parts)
}

fn encode_kv(kv: &KeyValue, noise: &mut Noise) -> Vec<u8> {
    let mut parts = Vec::new();
    if noise.chance(6) {
        parts.push(field(tag::KEY_VALUE_KEY, b"overridden"));
    }
    parts.push(
        KeyValue {
            key: kv.key.clone(),
            ..Default::default()
        }
        .encode_to_vec(),
    );
    if let Some(value) = &kv.value {
        if noise.chance(6) {
            let earlier = AnyValue {
                value: Some(any_value::Value::IntValue(noise.next() as i64)),
            };
            parts.push(field(tag::KEY_VALUE_VALUE, &earlier.encode_to_vec()));
        }
        parts.push(field(tag::KEY_VALUE_VALUE, &encode_any(value, noise)));
    }
    // The key may come after the value: last wins for it either way.
    if noise.chance(4) {
        parts.reverse();
    }
    noise.join_ordered(parts)
}

fn encode_any(value: &AnyValue, noise: &mut Noise) -> Vec<u8> {
    use any_value::Value;
    let mut out = Vec::new();
    match &value.value {
        Some(Value::ArrayValue(array)) => {
            // Two array fields in one AnyValue concatenate.
            let split = noise.below(array.values.len() as u64 + 1) as usize;
            let halves = if noise.chance(3) {
                vec![&array.values[..split], &array.values[split..]]
            } else {
                vec![&array.values[..]]
            };
            for half in halves {
                let mut list = Vec::new();
                for item in half {
                    noise.unknown(&mut list);
                    len_field(&mut list, tag::LIST_VALUES, &encode_any(item, noise));
                }
                len_field(&mut out, tag::ANY_ARRAY, &list);
            }
        }
        Some(Value::KvlistValue(kvlist)) => {
            let split = noise.below(kvlist.values.len() as u64 + 1) as usize;
            let halves = if noise.chance(3) {
                vec![&kvlist.values[..split], &kvlist.values[split..]]
            } else {
                vec![&kvlist.values[..]]
            };
            for half in halves {
                let mut list = Vec::new();
                for kv in half {
                    noise.unknown(&mut list);
                    len_field(&mut list, tag::LIST_VALUES, &encode_kv(kv, noise));
                }
                len_field(&mut out, tag::ANY_KVLIST, &list);
            }
        }
        _ => {
            if noise.chance(6) {
                let earlier = AnyValue {
                    value: Some(Value::BoolValue(true)),
                };
                out.extend_from_slice(&earlier.encode_to_vec());
            }
            out.extend_from_slice(&value.encode_to_vec());
        }
    }
    noise.unknown(&mut out);
    out
}

impl Noise {
    /// Like `join`, keeping the order.
    fn join_ordered(&mut self, parts: Vec<Vec<u8>>) -> Vec<u8> {
        let mut out = Vec::new();
        for part in parts {
            self.unknown(&mut out);
            out.extend_from_slice(&part);
        }
        self.unknown(&mut out);
        out
    }
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![3 => "[a-z./_]{0,12}", 1 => "\\PC{0,6}"]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("service.name".to_owned()),
        Just("peer.service".to_owned()),
        Just("server.address".to_owned()),
        Just("http.response.status_code".to_owned()),
        text(),
    ]
}

fn scalar() -> impl Strategy<Value = any_value::Value> {
    use any_value::Value;
    prop_oneof![
        3 => text().prop_map(Value::StringValue),
        1 => Just(Value::StringValue(String::new())),
        1 => "-?[0-9]{1,19}".prop_map(Value::StringValue),
        1 => any::<bool>().prop_map(Value::BoolValue),
        2 => any::<i64>().prop_map(Value::IntValue),
        1 => (-1e12f64..1e12).prop_map(Value::DoubleValue),
        1 => Just(Value::DoubleValue(f64::INFINITY)),
        1 => vec(any::<u8>(), 0..6).prop_map(Value::BytesValue),
        1 => any::<i32>().prop_map(Value::StringValueStrindex),
    ]
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    use any_value::Value;
    let leaf = prop_oneof![
        1 => Just(AnyValue { value: None }),
        8 => scalar().prop_map(|v| AnyValue { value: Some(v) }),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(Value::ArrayValue(ArrayValue { values })),
            }),
            vec((key(), option::of(inner)), 0..4).prop_map(|pairs| AnyValue {
                value: Some(Value::KvlistValue(KeyValueList {
                    values: pairs
                        .into_iter()
                        .map(|(key, value)| KeyValue {
                            key,
                            value,
                            ..Default::default()
                        })
                        .collect(),
                })),
            }),
        ]
    })
}

fn key_values(max: usize) -> impl Strategy<Value = Vec<KeyValue>> {
    vec(
        (key(), option::of(any_value())).prop_map(|(key, value)| KeyValue {
            key,
            value,
            ..Default::default()
        }),
        0..max,
    )
}

fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => vec(any::<u8>(), len),
        1 => Just(vec![0; len]),
        1 => vec(any::<u8>(), 0..20),
    ]
}

fn event() -> impl Strategy<Value = span::Event> {
    (any::<u64>(), text(), key_values(3), any::<u32>()).prop_map(
        |(time_unix_nano, name, attributes, dropped_attributes_count)| span::Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count,
        },
    )
}

fn link() -> impl Strategy<Value = span::Link> {
    (id(16), id(8), text(), key_values(2), any::<u32>()).prop_map(
        |(trace_id, span_id, trace_state, attributes, flags)| span::Link {
            trace_id,
            span_id,
            trace_state,
            attributes,
            dropped_attributes_count: 1,
            flags,
        },
    )
}

fn otlp_span() -> impl Strategy<Value = otlp::Span> {
    let ids = (id(16), id(8), prop_oneof![Just(Vec::new()), id(8)]);
    let basics = (text(), -1i32..8, any::<u64>(), any::<u64>());
    let status = option::of((-1i32..4, text()));
    let extras = (text(), any::<u32>(), vec(link(), 0..2), any::<u32>());
    (
        ids,
        basics,
        key_values(8),
        vec(event(), 0..3),
        status,
        extras,
    )
        .prop_map(
            |(
                (trace_id, span_id, parent_span_id),
                (name, kind, start, end),
                attributes,
                events,
                status,
                (trace_state, flags, links, dropped),
            )| otlp::Span {
                trace_id,
                span_id,
                trace_state,
                parent_span_id,
                flags,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                dropped_attributes_count: dropped,
                events,
                dropped_events_count: dropped,
                links,
                dropped_links_count: dropped,
                status: status.map(|(code, message)| Status { message, code }),
            },
        )
}

fn otlp_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let resource = (key_values(4), any::<u32>()).prop_map(|(attributes, dropped)| OtlpResource {
        attributes,
        dropped_attributes_count: dropped,
        entity_refs: Vec::new(),
    });
    let scope = (text(), text(), key_values(2)).prop_map(|(name, version, attributes)| {
        InstrumentationScope {
            name,
            version,
            attributes,
            dropped_attributes_count: 0,
        }
    });
    let scope_spans = (option::of(scope), vec(otlp_span(), 0..4), text()).prop_map(
        |(scope, spans, schema_url)| ScopeSpans {
            scope,
            spans,
            schema_url,
        },
    );
    let resource_spans = (option::of(resource), vec(scope_spans, 0..3), text()).prop_map(
        |(resource, scope_spans, schema_url)| ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        },
    );
    vec(resource_spans, 0..3)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

/// The lookups the graph uses agree with the owned reference.
fn same_lookups(ours: &Attributes, reference: &Attributes) -> Result<(), TestCaseError> {
    prop_assert_eq!(ours.len(), reference.len());
    let mut keys: Vec<&str> = reference.iter().map(|(key, _)| key).collect();
    keys.extend(["absent", "service.name", "peer.service", "server.address"]);
    for key in &keys {
        prop_assert_eq!(ours.get(key), reference.get(key));
        prop_assert_eq!(ours.get_str(key), reference.get_str(key));
        prop_assert_eq!(ours.get_i64(key), reference.get_i64(key));
    }
    for window in keys.windows(3).chain([&keys[..]]) {
        let naive = window
            .iter()
            .filter_map(|key| reference.get_str(key))
            .find(|value| !value.is_empty());
        prop_assert_eq!(ours.first_str(window), naive);
        prop_assert_eq!(reference.first_str(window), naive);
    }
    Ok(())
}

fn same_as_prost(bytes: Vec<u8>) -> Result<(), TestCaseError> {
    let reference = reference_decode(&bytes).expect("prost decodes what it encoded");
    let decoded = decode(bytes.into()).map_err(|err| TestCaseError::fail(err.to_string()))?;
    prop_assert_eq!(&decoded.spans, &reference.spans);
    prop_assert_eq!(&decoded.rejections, &reference.rejections);
    prop_assert_eq!(decoded.rejections.message(), reference.rejections.message());
    for (ours, reference) in decoded.spans.iter().zip(&reference.spans) {
        same_lookups(&ours.attributes, &reference.attributes)?;
        same_lookups(&ours.resource.attributes, &reference.resource.attributes)?;
        for (ours, reference) in ours.events.iter().zip(&reference.events) {
            same_lookups(&ours.attributes, &reference.attributes)?;
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn decodes_like_prost(request in otlp_request(), seed in any::<u64>()) {
        same_as_prost(request.encode_to_vec())?;
        same_as_prost(encode_request(&request, &mut Noise::new(seed)))?;
    }

    #[test]
    fn damaged_requests_never_panic_and_agree_with_prost(
        request in otlp_request(),
        seed in any::<u64>(),
        edits in vec((any::<Index>(), any::<u8>(), 0u8..4), 1..3),
    ) {
        let mut bytes = encode_request(&request, &mut Noise::new(seed));
        for (at, byte, edit) in edits {
            if bytes.is_empty() {
                break;
            }
            let at = at.index(bytes.len());
            match edit {
                0 => bytes.truncate(at),
                1 => bytes[at] = byte,
                2 => bytes.insert(at, byte),
                _ => {
                    bytes.remove(at);
                }
            }
        }
        // prost is at least as strict: whatever it accepts, so do we.
        prop_assert_eq!(agrees_with_prost(&bytes), Ok(()));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..512)) {
        prop_assert_eq!(agrees_with_prost(&bytes), Ok(()));
    }
}
