//! X-Ray translation per span: span → segment document JSON, escaped for
//! the request body as the exporter writes it (`translate_escaped_into`, into
//! a reused buffer). Each span stands alone here: embedding subsegments in
//! their parent's document only leaves three fields out of each.
//!
//! 512 spans decoded by the OTLP receiver (attributes left in wire form, as
//! in the pipeline) from one EKS service: HTTP SERVER spans (segments,
//! resource metadata included), HTTP CLIENT calls and database CLIENT calls
//! in equal parts, and one span in 16 a failing HTTP SERVER span with a
//! Java exception event. Each kind is also measured alone.
//!
//! `xray_writer` times the segment writer against serde_json on the same
//! 512 documents (read back into `serde_json::Value`s), plain and escaped
//! for the request body, to show whether the hand-written writer still
//! pays for itself.
//! Run: `cargo bench --bench xray`.

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use criterion::measurement::Measurement;
use criterion::{BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main};
use prost::Message;
use tracemap::exporter::xray::segment::{
    TranslateConfig, translate, translate_escaped_into, write_for_bench,
};
use tracemap::model::Span;
use tracemap::otlp::kit::{self, RequestBuilder, SpanBuilder};
use tracemap::receiver::decode::proto as otlp_proto;

// As in the binary: the allocator is part of the per-span cost.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SPANS: u64 = 512;
const NOW_SECS: u64 = 1_800_000_000;

const STACK: &str = "java.lang.IllegalStateException: inventory unavailable\n\
\tat com.shop.checkout.Inventory.reserve(Inventory.java:88)\n\
\tat com.shop.checkout.OrderService.place(OrderService.java:142)\n\
\tat com.shop.checkout.OrderController.create(OrderController.java:57)\n\
\tat io.netty.channel.AbstractChannelHandlerContext.invokeChannelRead(AbstractChannelHandlerContext.java:444)\n\
\tat io.netty.channel.nio.NioEventLoop.run(NioEventLoop.java:569)\n\
\tat java.base/java.lang.Thread.run(Thread.java:1583)\n\
Caused by: java.net.SocketTimeoutException: Read timed out\n\
\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:278)\n\
\tat com.shop.checkout.Inventory.reserve(Inventory.java:81)\n\
\t... 4 more\n";

/// A deterministic id source, so runs compare.
fn mix(n: u64) -> u64 {
    let mut x = n.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31) | 1
}

fn span(n: u64) -> kit::Span {
    let order = 10_000 + n;
    let (kind, name, mut attributes) = match kind_of(n) {
        0 | 3 => (
            2,
            "POST /api/orders".to_owned(),
            vec![
                kit::string("http.request.method", "POST"),
                kit::string("url.scheme", "http"),
                kit::string("url.path", "/api/orders"),
                kit::string("http.route", "/api/orders"),
                kit::int(
                    "http.response.status_code",
                    if kind_of(n) == 3 { 500 } else { 201 },
                ),
                kit::string("server.address", "checkout.shop.svc.cluster.local"),
                kit::int("server.port", 8080),
                kit::string("client.address", "10.0.3.17"),
                kit::string("network.peer.address", "10.0.3.17"),
                kit::string("user_agent.original", "okhttp/4.12.0"),
                kit::string("network.protocol.version", "1.1"),
            ],
        ),
        1 => (
            3,
            "GET".to_owned(),
            vec![
                kit::string("http.request.method", "GET"),
                kit::string(
                    "url.full",
                    &format!("http://inventory.shop.svc:8080/api/items/{order}"),
                ),
                kit::int("http.response.status_code", 200),
                kit::string("server.address", "inventory.shop.svc"),
                kit::int("server.port", 8080),
                kit::string("peer.service", "inventory"),
                kit::string("network.protocol.version", "1.1"),
            ],
        ),
        _ => (
            3,
            "SELECT orders".to_owned(),
            vec![
                kit::string("db.system", "postgresql"),
                kit::string("db.namespace", "orders"),
                kit::string("db.operation.name", "SELECT"),
                kit::string(
                    "db.query.text",
                    "SELECT id, total, status FROM orders WHERE id = $1",
                ),
                kit::string("db.user", "checkout"),
                kit::string("server.address", "pg.shop.svc"),
                kit::int("server.port", 5432),
            ],
        ),
    };
    if n.is_multiple_of(8) {
        attributes.push(kit::string("enduser.id", "u-1234"));
    }
    let failing = kind_of(n) == 3;
    let trace = n / 4;
    let mut trace_id = [0u8; 16];
    // Epoch-prefixed, as X-Ray SDKs and their id generators make them.
    trace_id[..4].copy_from_slice(&(NOW_SECS as u32 - 60).to_be_bytes());
    trace_id[4..12].copy_from_slice(&mix(trace).to_be_bytes());
    trace_id[12..].copy_from_slice(&(mix(trace + SPANS) as u32).to_be_bytes());
    let start = NOW_SECS * 1_000_000_000 - 30_000_000_000 + n * 1_000_000;
    let mut span = SpanBuilder::new(&trace_id, &mix(n + 2 * SPANS).to_be_bytes())
        .parent(&mix(n + 3 * SPANS).to_be_bytes())
        .flags(0x101)
        .name(&name)
        .kind(kind)
        .times(start, start + 2_500_000 + n * 1_000)
        .attributes(attributes);
    if failing {
        span = span.event(
            "exception",
            start + 2_000_000,
            vec![
                kit::string("exception.type", "java.lang.IllegalStateException"),
                kit::string("exception.message", "inventory unavailable"),
                kit::string("exception.stacktrace", STACK),
            ],
        );
    }
    span.status(if failing { 2 } else { 0 }, "").build()
}

fn spans() -> Vec<Span> {
    let resource = kit::resource(vec![
        kit::string("service.name", "checkout"),
        kit::string("service.version", "1.42.0"),
        kit::string("service.namespace", "shop"),
        kit::string("telemetry.sdk.language", "java"),
        kit::string("telemetry.sdk.name", "opentelemetry"),
        kit::string("telemetry.sdk.version", "1.44.1"),
        kit::string("cloud.provider", "aws"),
        kit::string("cloud.platform", "aws_eks"),
        kit::string("cloud.region", "eu-west-1"),
        kit::string("k8s.cluster.name", "prod"),
        kit::string("k8s.namespace.name", "shop"),
        kit::string("k8s.pod.name", "checkout-7d9c6b5f4-x2x9q"),
        kit::string("container.id", "3f2b1c0d9e8a"),
        kit::string("host.id", "i-0123456789abcdef0"),
    ]);
    let scope = kit::scope("io.opentelemetry.netty-4.1", "2.10.0");
    let request = RequestBuilder::new()
        .resource_spans(Some(resource), Some(scope), (0..SPANS).map(span).collect())
        .build();
    let decoded = otlp_proto::decode(Bytes::from(request.encode_to_vec())).expect("valid request");
    assert_eq!(decoded.spans.len() as u64, SPANS);
    decoded.spans
}

fn translate_all<M: Measurement>(
    group: &mut BenchmarkGroup<'_, M>,
    name: &str,
    spans: &[&Span],
    config: &TranslateConfig,
) {
    let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
    group.throughput(Throughput::Elements(spans.len() as u64));
    let mut out = Vec::new();
    group.bench_function(name, |b| {
        b.iter(|| {
            for span in spans {
                out.clear();
                black_box(translate_escaped_into(black_box(span), config, now, &mut out).ok());
                black_box(&out);
            }
        })
    });
}

fn bench(c: &mut Criterion) {
    let spans = spans();
    let all: Vec<&Span> = spans.iter().collect();
    let by_kind: Vec<Vec<&Span>> = (0..KINDS.len())
        .map(|kind| {
            (0..SPANS)
                .filter(|&n| kind_of(n) == kind)
                .map(|n| &spans[n as usize])
                .collect()
        })
        .collect();
    let config = TranslateConfig::default();
    let now = UNIX_EPOCH + Duration::from_secs(NOW_SECS);
    for (label, spans) in KINDS.iter().zip(&by_kind) {
        let bytes: usize = spans
            .iter()
            .map(|span| translate(span, &config, now).expect("translated").len())
            .sum();
        eprintln!("{label}: {} bytes a document", bytes / spans.len());
    }
    let index_all = TranslateConfig {
        index_all_attributes: true,
        ..TranslateConfig::default()
    };

    let mut group = c.benchmark_group("xray");
    translate_all(&mut group, "translate", &all, &config);
    translate_all(&mut group, "translate_index_all", &all, &index_all);
    for (label, spans) in KINDS.iter().zip(&by_kind) {
        translate_all(&mut group, label, spans, &config);
    }
    group.finish();

    let documents: Vec<serde_json::Value> = all
        .iter()
        .map(|span| {
            let json = translate(span, &config, now).expect("translated");
            serde_json::from_str(&json).expect("valid JSON")
        })
        .collect();
    compare_writers(c, &documents);
}

/// The same documents through the segment writer and through serde_json;
/// serde_json's escaped form is the plain document written again as a
/// JSON string, as it would be without the writer's escaped output.
fn compare_writers(c: &mut Criterion, documents: &[serde_json::Value]) {
    let mut group = c.benchmark_group("xray_writer");
    group.throughput(Throughput::Elements(documents.len() as u64));
    let (mut out, mut plain) = (Vec::new(), Vec::new());
    for escaped in [false, true] {
        let form = if escaped { "escaped" } else { "plain" };
        group.bench_function(format!("handwritten_{form}"), |b| {
            b.iter(|| {
                for document in documents {
                    out.clear();
                    black_box(write_for_bench(black_box(document), escaped, &mut out));
                    black_box(&out);
                }
            })
        });
        group.bench_function(format!("serde_json_{form}"), |b| {
            b.iter(|| {
                for document in documents {
                    out.clear();
                    if escaped {
                        plain.clear();
                        serde_json::to_writer(&mut plain, black_box(document)).expect("written");
                        let text = std::str::from_utf8(&plain).expect("UTF-8");
                        serde_json::to_writer(&mut out, text).expect("written");
                    } else {
                        serde_json::to_writer(&mut out, black_box(document)).expect("written");
                    }
                    black_box(&out);
                }
            })
        });
    }
    group.finish();
}

/// The kind of span `n`: one in 16 fails with an exception, the others
/// cycle through an HTTP SERVER span, an HTTP CLIENT and a database CLIENT
/// call.
fn kind_of(n: u64) -> usize {
    if n % 16 == 15 {
        3
    } else {
        (n % 16 % 3) as usize
    }
}

/// The span kinds of the mix, as `kind_of` numbers them.
const KINDS: [&str; 4] = [
    "http_server",
    "http_client",
    "db_client",
    "http_server_exception",
];

criterion_group!(benches, bench);
criterion_main!(benches);
