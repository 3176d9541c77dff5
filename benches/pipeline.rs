//! Hot path per span: decode an OTLP request, pair client and server
//! halves, record edge, node and span-metrics statistics.
//!
//! The request is 512 realistic spans (~350 bytes each): 128 traces of a
//! root SERVER span, a CLIENT call, the callee's SERVER span and a database
//! CLIENT span. Run: `cargo bench --bench pipeline`.

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use tracemap::graph::{Graph, GraphConfig};
use tracemap::otlp::kit::{self, RequestBuilder, SpanBuilder};
use tracemap::pipeline::SpanConsumer;
use tracemap::receiver::decode::proto as otlp_proto;
use tracemap::validate::section;

const TRACES: u64 = 128;

fn span(
    trace: u64,
    id: u64,
    parent: u64,
    kind: i32,
    name: &str,
    attributes: Vec<kit::KeyValue>,
) -> kit::Span {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&0x5b8e_fff7_9803_8103u64.to_be_bytes());
    trace_id[8..].copy_from_slice(&trace.to_be_bytes());
    let parent = if parent == 0 {
        vec![]
    } else {
        (trace << 8 | parent).to_be_bytes().to_vec()
    };
    let start = 1_800_000_000_000_000_000 + trace * 1_000_000;
    SpanBuilder::new(&trace_id, &(trace << 8 | id).to_be_bytes())
        .parent(&parent)
        .name(name)
        .kind(kind)
        .times(start, start + 2_500_000 + id * 10_000)
        .attributes(attributes)
        .status(if trace.is_multiple_of(50) { 2 } else { 0 }, "")
        .build()
}

fn resource(service: &str) -> Option<kit::Resource> {
    Some(kit::resource(vec![
        kit::string("service.name", service),
        kit::string("k8s.namespace.name", "shop"),
        kit::string("k8s.pod.name", &format!("{service}-7d9c6b5f4-x2x9q")),
    ]))
}

fn request() -> Bytes {
    let mut frontend = Vec::new();
    let mut orders = Vec::new();
    for t in 1..=TRACES {
        let http = |method: &str, route: &str, status: i64| {
            vec![
                kit::string("http.request.method", method),
                kit::string("url.path", route),
                kit::string("http.route", route),
                kit::int("http.response.status_code", status),
                kit::string("server.address", "orders.shop.svc.cluster.local"),
                kit::int("server.port", 8080),
                kit::string("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
            ]
        };
        frontend.push(span(
            t,
            1,
            0,
            2,
            "GET /checkout",
            http("GET", "/checkout", 200),
        ));
        let mut call = http("POST", "/api/orders", 201);
        call.push(kit::string("peer.service", "orders"));
        frontend.push(span(t, 2, 1, 3, "POST /api/orders", call));
        orders.push(span(
            t,
            3,
            2,
            2,
            "POST /api/orders",
            http("POST", "/api/orders", 201),
        ));
        orders.push(span(
            t,
            4,
            3,
            3,
            "INSERT orders",
            vec![
                kit::string("db.system", "postgresql"),
                kit::string("db.namespace", "orders"),
                kit::string("db.operation.name", "INSERT"),
                kit::string(
                    "db.query.text",
                    "INSERT INTO orders (id, total) VALUES ($1, $2)",
                ),
                kit::string("server.address", "pg.shop.svc"),
            ],
        ));
    }
    RequestBuilder::new()
        .resource_spans(resource("frontend"), None, frontend)
        .resource_spans(resource("orders"), None, orders)
        .build()
        .encode_to_vec()
        .into()
}

fn decode_pair_record(c: &mut Criterion) {
    let bytes = request();
    let spans = (TRACES * 4) as usize;
    eprintln!(
        "request: {} spans, {} bytes ({} bytes/span)",
        spans,
        bytes.len(),
        bytes.len() / spans
    );
    let graph = Graph::new(
        section(|problems| GraphConfig::default().validate("graph", problems))
            .expect("valid defaults"),
        1,
    );
    let mut consumer = graph.consumer(0);
    let mut group = c.benchmark_group("hot_path");
    group.throughput(Throughput::Elements(spans as u64));
    group.bench_function("decode", |b| {
        b.iter(|| otlp_proto::decode(bytes.clone()).expect("valid request"))
    });
    group.bench_function("decode_pair_record", |b| {
        b.iter(|| {
            let decoded = otlp_proto::decode(bytes.clone()).expect("valid request");
            consumer.consume(&decoded.spans);
        })
    });
    let decoded = otlp_proto::decode(bytes.clone()).expect("valid request");
    group.bench_function("pair_record", |b| {
        b.iter(|| consumer.consume(&decoded.spans))
    });
    group.finish();
}

criterion_group!(benches, decode_pair_record);
criterion_main!(benches);
