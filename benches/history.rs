//! The history store over a synthetic week: the store's size at steady
//! state and the latency of `/api/v1/graph?window=7d` (the query behind
//! it, `History::snapshot`).
//!
//! The week is written the way the collector writes it: one hand-over per
//! minute through the writer's merge-and-commit path, with retention and
//! compaction run every simulated hour, so the file ends in the state a
//! week of uptime leaves (minutes for the last 25 h, 10-minute buckets to
//! 3 days, hours beyond). `HISTORY_BENCH_EDGES` (default `25,600`) picks
//! the graph sizes: 25 edges is about the demo's scale (19 edges), 600
//! edges a 200-service system; `HISTORY_BENCH_REQUESTS` (default 60) is
//! each edge's requests per minute (the demo's edges average about 800).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracemap::validate::section;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use tracemap::graph::aggregate::MinuteBatch;
use tracemap::graph::edge::{ConnectionType, EdgeKey, EdgeStats, NodeStats};
use tracemap::graph::{Graph, GraphConfig, TimeWindow, unix_minute};
use tracemap::store::db::Db;
use tracemap::store::writer::WriterState;
use tracemap::store::{History, StorageConfig, Store, StoreMetrics};

/// Requests per edge per minute, unless `HISTORY_BENCH_REQUESTS` says.
fn requests() -> u64 {
    std::env::var("HISTORY_BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}
/// Distinct minute shapes, reused round-robin so generation stays fast.
const POOL: usize = 64;

fn xorshift(seed: &mut u64) -> f64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed >> 11) as f64 / (1u64 << 53) as f64
}

/// Log-normal latencies around 20 ms, in nanoseconds.
fn latency(seed: &mut u64) -> f64 {
    let (u1, u2) = (xorshift(seed).max(1e-12), xorshift(seed));
    let normal = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (20e6f64.ln() + 0.8 * normal).exp()
}

fn pools() -> (Vec<EdgeStats>, Vec<NodeStats>) {
    let mut seed = 0x2545_F491_4F6C_DD1D;
    let mut edges = Vec::new();
    let mut nodes = Vec::new();
    let requests = requests();
    for i in 0..POOL {
        let mut stats = EdgeStats {
            requests,
            failed: (i % 4) as u64,
            ..EdgeStats::default()
        };
        let mut node = NodeStats {
            requests,
            errors: (i % 3) as u64,
            ..NodeStats::default()
        };
        for _ in 0..requests {
            let server = latency(&mut seed);
            stats.server.insert(server);
            stats.client.insert(server + 300_000.0);
            node.latency.insert(server);
        }
        // Sealed, as the shards hand minutes over.
        stats.client.seal();
        stats.server.seal();
        node.latency.seal();
        edges.push(stats);
        nodes.push(node);
    }
    (edges, nodes)
}

/// Edges of a system with `count` edges, three calls per service.
fn topology(count: usize) -> (Vec<EdgeKey>, Vec<Arc<str>>) {
    let services = count.div_ceil(3).max(4);
    let names: Vec<Arc<str>> = (0..services)
        .map(|i| format!("service-{i:03}").into())
        .collect();
    let edges = (0..count)
        .map(|e| {
            let client = e / 3;
            let server = (client + 1 + e % 3) % services;
            EdgeKey {
                client: names[client].clone(),
                server: names[server].clone(),
                connection_type: ConnectionType::Direct,
                client_dimensions: Box::default(),
                server_dimensions: Box::default(),
            }
        })
        .collect();
    (edges, names)
}

fn at(minute: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(minute as u64 * 60)
}

/// Writes a week ending now into `dir`; returns the store's size in bytes.
fn fill_week(dir: &std::path::Path, count: usize) -> u64 {
    let config = StorageConfig {
        data_dir: dir.to_owned(),
        ..StorageConfig::default()
    };
    let mut db = Db::open(&config.db_path()).expect("open");
    let epoch = db.begin_run(SystemTime::now()).expect("run");
    let metrics = StoreMetrics::default();
    let mut writer = WriterState::new(
        db,
        epoch,
        1,
        Duration::from_secs(3600),
        config.clone(),
        metrics.clone(),
    );
    let (edge_pool, node_pool) = pools();
    let (edges, names) = topology(count);
    let now = unix_minute(SystemTime::now());
    let start = now - 7 * 1440;
    let began = Instant::now();
    for hour in 0..7 * 24 {
        for offset in 0..60 {
            let minute = start + hour * 60 + offset;
            let pick = |i: usize| (i * 31 + minute as usize) % POOL;
            writer.apply(MinuteBatch {
                shard: 0,
                sealed_through: minute,
                as_of: None,
                edges: edges
                    .iter()
                    .enumerate()
                    .map(|(i, key)| (minute, key.clone(), edge_pool[pick(i)].clone()))
                    .collect(),
                nodes: names
                    .iter()
                    .enumerate()
                    .map(|(i, name)| (minute, name.clone(), node_pool[pick(i)].clone()))
                    .collect(),
            });
        }
        writer.commit();
        while writer.maintain(at(start + (hour + 1) * 60)) {}
    }
    drop(writer);
    let size = [config.db_path(), dir.join("history.db-wal")]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let rows: i64 = rusqlite::Connection::open(config.db_path())
        .and_then(|c| {
            c.query_row(
                "SELECT (SELECT count(*) FROM edges) + (SELECT count(*) FROM nodes)",
                [],
                |r| r.get(0),
            )
        })
        .expect("count rows");
    eprintln!(
        "history bench: {count} edges, {} services, {} requests per edge-minute: a week written in {:.1?}; \
         store {:.1} MiB, {rows} rows, {} minutes written",
        names.len(),
        requests(),
        began.elapsed(),
        size as f64 / (1 << 20) as f64,
        metrics.minutes_written.get(),
    );
    size
}

fn graph_7d(c: &mut Criterion) {
    // `cargo test --all-targets` runs this once without `--bench`: a small
    // graph then checks that the bench works without costing a minute.
    let measuring = std::env::args().any(|arg| arg == "--bench");
    let default = if measuring { "25,600" } else { "1" };
    let sizes = std::env::var("HISTORY_BENCH_EDGES").unwrap_or_else(|_| default.into());
    let mut group = c.benchmark_group("history_graph_7d");
    group.sample_size(10);
    for count in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        let dir = tempfile::tempdir().expect("temp dir");
        fill_week(dir.path(), count);
        let config = StorageConfig {
            data_dir: dir.path().to_owned(),
            ..StorageConfig::default()
        };
        let config =
            section(|problems| config.validate("storage", Duration::from_secs(3600), problems))
                .expect("valid storage settings");
        let store = Store::open(
            &config,
            1,
            Duration::from_secs(3600),
            StoreMetrics::default(),
        )
        .expect("open store");
        let history = History::new(Graph::new(valid_graph(), 1), Some(store.clone()));
        let window = |now: SystemTime| TimeWindow {
            start: now - Duration::from_secs(7 * 86_400),
            end: now,
        };
        let now = SystemTime::now();
        let topology = history.snapshot(window(now), now).expect("query");
        assert_eq!(topology.edges().count(), count);
        group.bench_with_input(BenchmarkId::from_parameter(count), &count, |b, _| {
            b.iter(|| {
                let now = SystemTime::now();
                let topology = history.snapshot(window(now), now).expect("query");
                serde_json::to_vec(&tracemap::web::document::GraphDocument::from(&topology))
            })
        });
        store.close(std::time::Instant::now() + Duration::from_secs(10));
    }
    group.finish();
}

criterion_group!(benches, graph_7d);
criterion_main!(benches);

fn valid_graph() -> tracemap::validate::Valid<GraphConfig> {
    section(|problems| GraphConfig::default().validate("graph", problems)).expect("valid defaults")
}
