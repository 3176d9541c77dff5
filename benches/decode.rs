//! OTLP trace decoding, per span: the hand-written protobuf decoder against
//! prost plus the conversion it replaced, and against OTLP/JSON.
//!
//! The request holds 512 realistic spans (~350 bytes each): SERVER and
//! CLIENT spans with HTTP attributes, a quarter of them database calls.
//! Run: `cargo bench --bench decode`.

use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use serde_json::{Value, json};
use tracemap::model::{
    AttributeValue, Attributes, Event, Resource, Span, SpanId, SpanKind, StatusCode, TraceId,
};
use tracemap::otlp::kit::{
    self, AnyValue, ExportTraceServiceRequest, KeyValue, RequestBuilder, SpanBuilder, any_value,
};
use tracemap::receiver::decode::{json as otlp_json, proto as otlp_proto};
use tracemap::receiver::{Decoded, InvalidId};

const SPANS: u64 = 512;

const ROUTES: [&str; 4] = [
    "GET /api/orders/{id}",
    "POST /api/orders",
    "GET /api/catalog/items",
    "PUT /api/cart/{id}",
];

/// A deterministic id source, so runs compare.
fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31) | 1
}

fn span(n: u64) -> kit::Span {
    let trace = n / 4;
    let route = ROUTES[(trace % 4) as usize];
    let (method, path) = route.split_once(' ').unwrap_or(("GET", route));
    let path = path.replace("{id}", &(10_000 + trace).to_string());
    let server = n.is_multiple_of(2);
    let database = n % 4 == 3;
    let status = if trace.is_multiple_of(40) { 503 } else { 200 };
    let mut attributes = if database {
        vec![
            kit::string("db.system", "postgresql"),
            kit::string("db.namespace", "orders"),
            kit::string("db.operation.name", "SELECT"),
            kit::string(
                "db.query.text",
                "SELECT id, total FROM orders WHERE id = $1",
            ),
            kit::string("server.address", "pg.shop.svc"),
            kit::int("server.port", 5432),
        ]
    } else {
        vec![
            kit::string("http.request.method", method),
            kit::string("url.path", &path),
            kit::string(
                "http.route",
                route.split_once(' ').map_or(route, |(_, r)| r),
            ),
            kit::int("http.response.status_code", status),
            kit::string("server.address", "orders.shop.svc.cluster.local"),
            kit::int("server.port", 8080),
            kit::string("network.protocol.version", "1.1"),
        ]
    };
    if !server && !database {
        attributes.push(kit::string("peer.service", "orders"));
    }
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&mix(trace).to_be_bytes());
    trace_id[8..].copy_from_slice(&mix(trace + SPANS).to_be_bytes());
    let start = 1_800_000_000_000_000_000 + n * 1_000_000;
    let parent = if n.is_multiple_of(4) {
        Vec::new()
    } else {
        mix(n - 1 + 2 * SPANS).to_be_bytes().to_vec()
    };
    SpanBuilder::new(&trace_id, &mix(n + 2 * SPANS).to_be_bytes())
        .parent(&parent)
        .flags(0x101)
        .name(if database { "SELECT orders" } else { route })
        .kind(if server { 2 } else { 3 })
        .times(start, start + 2_500_000 + n * 1_000)
        .attributes(attributes)
        .status(if status >= 500 { 2 } else { 0 }, "")
        .build()
}

fn request() -> ExportTraceServiceRequest {
    let resource = kit::resource(vec![
        kit::string("service.name", "checkout"),
        kit::string("service.version", "1.42.0"),
        kit::string("telemetry.sdk.language", "java"),
        kit::string("telemetry.sdk.name", "opentelemetry"),
        kit::string("k8s.namespace.name", "shop"),
        kit::string("k8s.pod.name", "checkout-7d9c6b5f4-x2x9q"),
    ]);
    let scope = kit::scope("io.opentelemetry.netty-4.1", "2.10.0");
    RequestBuilder::new()
        .resource_spans(Some(resource), Some(scope), (0..SPANS).map(span).collect())
        .schema_url("https://opentelemetry.io/schemas/1.26.0")
        .build()
}

/// What the receiver did before the hand decoder: prost, then a move into
/// the lean model.
fn prost_then_convert(bytes: &[u8]) -> Decoded {
    let request = ExportTraceServiceRequest::decode(bytes).expect("valid request");
    let mut decoded = Decoded::default();
    for resource_spans in request.resource_spans {
        let attributes = resource_spans
            .resource
            .map(|r| owned(r.attributes))
            .unwrap_or_default();
        let resource = Arc::new(Resource::new(attributes));
        for scope_spans in resource_spans.scope_spans {
            let scope_name: Arc<str> = scope_spans.scope.map(|s| s.name).unwrap_or_default().into();
            decoded.spans.reserve(scope_spans.spans.len());
            for span in scope_spans.spans {
                let ids = (
                    TraceId::try_from(&span.trace_id[..]),
                    SpanId::try_from(&span.span_id[..]),
                );
                let (Ok(trace_id), Ok(span_id)) = ids else {
                    decoded.rejections.add(
                        InvalidId::Trace,
                        tracemap::model::IdError::AllZero,
                        &span.name,
                    );
                    continue;
                };
                let status = span.status.unwrap_or_default();
                decoded.spans.push(Span {
                    resource: resource.clone(),
                    scope_name: scope_name.clone(),
                    trace_id,
                    span_id,
                    parent_span_id: SpanId::try_from(&span.parent_span_id[..]).ok(),
                    name: span.name.into(),
                    kind: SpanKind::from_otlp(span.kind),
                    status_code: StatusCode::from_otlp(status.code),
                    status_message: status.message,
                    start_unix_nano: span.start_time_unix_nano,
                    end_unix_nano: span.end_time_unix_nano,
                    attributes: owned(span.attributes),
                    events: span
                        .events
                        .into_iter()
                        .map(|event| Event {
                            name: event.name,
                            time_unix_nano: event.time_unix_nano,
                            attributes: owned(event.attributes),
                        })
                        .collect(),
                });
            }
        }
    }
    decoded
}

fn owned(key_values: Vec<KeyValue>) -> Attributes {
    Attributes::from_vec(
        key_values
            .into_iter()
            .map(|kv| (kv.key, owned_value(kv.value)))
            .collect(),
    )
}

fn owned_value(value: Option<AnyValue>) -> AttributeValue {
    use any_value::Value as V;
    match value.and_then(|v| v.value) {
        Some(V::StringValue(s)) => AttributeValue::String(s),
        Some(V::BoolValue(b)) => AttributeValue::Bool(b),
        Some(V::IntValue(i)) => AttributeValue::Int(i),
        Some(V::DoubleValue(d)) => AttributeValue::Double(d),
        Some(V::BytesValue(b)) => AttributeValue::Bytes(b),
        Some(V::ArrayValue(a)) => {
            AttributeValue::Array(a.values.into_iter().map(|v| owned_value(Some(v))).collect())
        }
        Some(V::KvlistValue(kv)) => AttributeValue::Map(owned(kv.values)),
        Some(V::StringValueStrindex(_)) | None => AttributeValue::Empty,
    }
}

/// The same request in OTLP/JSON, as SDKs send it.
fn to_json(request: &ExportTraceServiceRequest) -> Vec<u8> {
    fn attrs(key_values: &[KeyValue]) -> Value {
        key_values
            .iter()
            .map(|kv| {
                let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                    Some(any_value::Value::StringValue(s)) => json!({"stringValue": s}),
                    Some(any_value::Value::IntValue(i)) => json!({"intValue": i.to_string()}),
                    _ => json!({}),
                };
                json!({"key": kv.key, "value": value})
            })
            .collect()
    }
    let resource_spans: Vec<Value> = request
        .resource_spans
        .iter()
        .map(|rs| {
            let scope_spans: Vec<Value> = rs
                .scope_spans
                .iter()
                .map(|ss| {
                    let spans: Vec<Value> = ss
                        .spans
                        .iter()
                        .map(|s| {
                            let status = s.status.clone().unwrap_or_default();
                            json!({
                                "traceId": hex::encode(&s.trace_id),
                                "spanId": hex::encode(&s.span_id),
                                "parentSpanId": hex::encode(&s.parent_span_id),
                                "flags": s.flags,
                                "name": s.name,
                                "kind": s.kind,
                                "startTimeUnixNano": s.start_time_unix_nano.to_string(),
                                "endTimeUnixNano": s.end_time_unix_nano.to_string(),
                                "attributes": attrs(&s.attributes),
                                "status": {"code": status.code},
                            })
                        })
                        .collect();
                    let scope = ss.scope.clone().unwrap_or_default();
                    json!({"scope": {"name": scope.name, "version": scope.version}, "spans": spans})
                })
                .collect();
            let resource = rs.resource.clone().unwrap_or_default();
            json!({
                "resource": {"attributes": attrs(&resource.attributes)},
                "scopeSpans": scope_spans,
                "schemaUrl": rs.schema_url,
            })
        })
        .collect();
    serde_json::to_vec(&json!({ "resourceSpans": resource_spans })).expect("json encodes")
}

fn decode(c: &mut Criterion) {
    let request = request();
    let protobuf: Bytes = request.encode_to_vec().into();
    let json = to_json(&request);
    eprintln!(
        "request: {SPANS} spans, protobuf {} bytes ({} bytes/span), json {} bytes",
        protobuf.len(),
        protobuf.len() as u64 / SPANS,
        json.len()
    );
    // All three read the same spans.
    let reference = prost_then_convert(&protobuf);
    let hand = otlp_proto::decode(protobuf.clone()).expect("valid request");
    let from_json = otlp_json::decode(&json).expect("valid json");
    assert_eq!(hand.spans, reference.spans);
    assert_eq!(from_json.spans, reference.spans);
    assert_eq!(hand.spans.len() as u64, SPANS);

    let mut group = c.benchmark_group("decode_512_spans");
    group.throughput(Throughput::Elements(SPANS));
    group.bench_function("prost_and_convert", |b| {
        b.iter(|| prost_then_convert(black_box(&protobuf)))
    });
    group.bench_function("hand", |b| {
        b.iter(|| otlp_proto::decode(black_box(protobuf.clone())).expect("valid request"))
    });
    group.bench_function("json", |b| {
        b.iter(|| otlp_json::decode(black_box(&json)).expect("valid json"))
    });
    group.finish();

    // What the service graph then asks of every span, from wire bytes and
    // from owned attributes.
    let mut group = c.benchmark_group("lookups_512_spans");
    group.throughput(Throughput::Elements(SPANS));
    group.bench_function("encoded", |b| b.iter(|| lookups(black_box(&hand.spans))));
    group.bench_function("owned", |b| b.iter(|| lookups(black_box(&reference.spans))));
    group.finish();
}

fn lookups(spans: &[Span]) -> usize {
    let mut found = 0;
    for span in spans {
        found += usize::from(span.service_name().len() > 1);
        let attributes = &span.attributes;
        found += usize::from(
            attributes
                .first_str(&["db.system.name", "db.system", "db.namespace"])
                .is_some(),
        );
        found += usize::from(
            attributes
                .first_str(&["peer.service", "server.address", "net.peer.name"])
                .is_some(),
        );
        found += usize::from(attributes.get_i64("http.response.status_code").is_some());
    }
    found
}

criterion_group!(benches, decode);
criterion_main!(benches);
