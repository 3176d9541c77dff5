//! Tests of the store with the real graph: histories built minute by minute
//! on a controlled clock, written through the real writer thread.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::db::{Db, ReadRange};
use super::*;
use crate::graph::edge::{ConnectionType, EdgeKey, EdgeStats, NodeStats};
use crate::graph::{Graph, GraphConfig, TimeWindow, unix_minute};
use crate::model::{
    AttributeValue, Attributes, Resource, Span, SpanId, SpanKind, StatusCode, TraceId,
};

/// The `/api/v1/graph` document of a snapshot: what a client would read.
fn graph_doc(topology: &crate::graph::topology::Topology) -> serde_json::Value {
    serde_json::to_value(crate::web::document::GraphDocument::from(topology)).unwrap()
}

pub(crate) fn at(minute: Minute) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(minute as u64 * 60)
}

fn span(
    service: &str,
    kind: SpanKind,
    trace: u64,
    id: u64,
    parent: Option<u64>,
    nanos: u64,
    error: bool,
) -> Span {
    let resource = Resource::new(Attributes::from_vec(vec![(
        "service.name".into(),
        AttributeValue::String(service.into()),
    )]));
    let mut trace_bytes = [0u8; 16];
    trace_bytes[8..].copy_from_slice(&trace.to_be_bytes());
    trace_bytes[0] = 1;
    let id_of = |id: u64| SpanId::try_from(&id.max(1).to_be_bytes()[..]).unwrap();
    Span {
        resource: Arc::new(resource),
        scope_name: "".into(),
        trace_id: TraceId::try_from(&trace_bytes[..]).unwrap(),
        span_id: id_of(id),
        parent_span_id: parent.map(id_of),
        name: "op".into(),
        kind,
        status_code: if error {
            StatusCode::Error
        } else {
            StatusCode::Unset
        },
        status_message: String::new(),
        start_unix_nano: 1_000,
        end_unix_nano: 1_000 + nanos,
        attributes: Attributes::default(),
        events: vec![],
    }
}

/// The spans of one call `client → server` in trace `trace`.
pub(crate) fn call(client: &str, server: &str, trace: u64, nanos: u64, error: bool) -> Vec<Span> {
    vec![
        span(
            client,
            SpanKind::Client,
            trace,
            2,
            Some(1),
            nanos + 300_000,
            false,
        ),
        span(server, SpanKind::Server, trace, 3, Some(2), nanos, error),
    ]
}

/// A deterministic workload: per minute, a few edges with varying volume,
/// errors and latency, and one edge only in some minutes.
fn minute_spans(minute: Minute, salt: u64) -> Vec<Vec<Span>> {
    let m = minute as u64;
    let mut traces = Vec::new();
    let edges: [(&str, &str, u64); 4] = [
        ("frontend", "checkout", 7),
        ("checkout", "payments", 4),
        ("frontend", "search", 9),
        ("search", "index", if m.is_multiple_of(5) { 3 } else { 0 }),
    ];
    for (e, (client, server, count)) in edges.into_iter().enumerate() {
        for i in 0..count + m % 3 * u64::from(count > 0) {
            let trace = salt * 1_000_000_000 + m * 1000 + e as u64 * 100 + i;
            let nanos = 1_000_000 * (1 + (m * 7 + i * 13 + e as u64) % 97);
            let error = (m + i + e as u64).is_multiple_of(11);
            traces.push(call(client, server, trace, nanos, error));
        }
    }
    traces
}

pub(crate) fn config(dir: &std::path::Path) -> StorageConfig {
    StorageConfig {
        data_dir: dir.to_owned(),
        ..StorageConfig::default()
    }
}

pub(crate) fn graph_config(retention_minutes: u64) -> GraphConfig {
    GraphConfig {
        retention: Duration::from_secs(retention_minutes * 60),
        ..GraphConfig::default()
    }
}

/// A graph with a store, fed on a clock the test moves, and a reference
/// graph that keeps every minute in memory.
struct Rig {
    graph: Graph,
    store: Store,
    reference: Graph,
    base: Instant,
    first: Minute,
}

impl Rig {
    fn open(dir: &std::path::Path, first: Minute, reference: Graph) -> Self {
        let graph = Graph::new(graph_config(60).checked(), 2);
        let store = Store::open(
            &config(dir).clone().checked(Duration::from_secs(3600)),
            2,
            Duration::from_secs(3600),
            StoreMetrics::default(),
        )
        .expect("open store");
        let base = Instant::now();
        graph.attach(store.sink(), base, first);
        Self {
            graph,
            store,
            reference,
            base,
            first,
        }
    }

    fn instant(&self, minute: Minute, second: u64) -> Instant {
        self.base + Duration::from_secs((minute - self.first) as u64 * 60 + second)
    }

    /// Records `minute`'s workload in both graphs, then ticks into the next
    /// minute, which hands the minute to the store.
    fn run_minute(&self, minute: Minute, salt: u64) {
        for (i, spans) in minute_spans(minute, salt).iter().enumerate() {
            self.graph
                .process_at(i % 2, spans, self.instant(minute, 5), minute);
            self.reference
                .process_at(0, spans, self.instant(minute, 5), minute);
        }
        // Mid-minute checkpoints of the open minute, then the close.
        self.graph.tick_at(self.instant(minute, 20), minute);
        self.graph.tick_at(self.instant(minute, 40), minute);
        self.graph.tick_at(self.instant(minute + 1, 0), minute + 1);
    }

    fn history(&self) -> History {
        History::new(self.graph.clone(), Some(self.store.clone()))
    }

    /// Stops the store as at shutdown; the reference lives on.
    fn close(self) -> Graph {
        self.store
            .close(std::time::Instant::now() + Duration::from_secs(10));
        self.reference
    }
}

fn window(first: Minute, last_exclusive: Minute) -> TimeWindow {
    TimeWindow {
        start: at(first),
        end: at(last_exclusive),
    }
}

#[test]
fn windows_across_memory_and_store_equal_the_in_memory_answer() {
    let dir = tempfile::tempdir().unwrap();
    let now_minute = unix_minute(SystemTime::now());
    let first = now_minute - 180;
    let rig = Rig::open(
        dir.path(),
        first,
        Graph::new(graph_config(1000).checked(), 1),
    );
    for minute in first..now_minute {
        rig.run_minute(minute, 1);
    }
    rig.store.sync();
    let now = at(now_minute) + Duration::from_secs(1);
    let history = rig.history();
    for (from, to) in [
        (first, now_minute),                // all of it: mostly the store
        (now_minute - 90, now_minute - 30), // across memory's first minute
        (now_minute - 59, now_minute - 58), // memory's oldest minute alone
        (now_minute - 61, now_minute - 59), // the store's newest minutes
        (now_minute - 10, now_minute),      // memory only
        (first - 30, first + 5),            // before the history began
    ] {
        let w = window(from, to);
        let got = graph_doc(&history.snapshot(w, now).unwrap());
        let want = graph_doc(&rig.reference.snapshot(w));
        assert_eq!(got, want, "window {from}..{to} (now {now_minute})");
        assert!(from < first || !got["edges"].as_array().unwrap().is_empty());
    }
    assert_eq!(rig.store.metrics().minutes_dropped.get(), 0);
    assert!(rig.store.metrics().minutes_written.get() >= 179);

    // A node's and an edge's series agree with the totals.
    let w = window(now_minute - 120, now_minute);
    let totals = graph_doc(&history.snapshot(w, now).unwrap());
    let series = history
        .series(
            &Selection::Edge {
                client: "frontend",
                server: "checkout",
                connection_type: Some(ConnectionType::Direct),
            },
            w,
            now,
        )
        .unwrap();
    assert_eq!(series.step_seconds, 60);
    assert_eq!(series.points.len(), 120);
    let edge = totals["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == "frontend" && e["target"] == "checkout")
        .unwrap();
    assert_eq!(
        series.points.iter().map(|p| p.requests).sum::<u64>(),
        edge["requests"].as_u64().unwrap()
    );
    assert_eq!(
        series.points.iter().map(|p| p.errors).sum::<u64>(),
        edge["errors"].as_u64().unwrap()
    );
    let node = history.series(&Selection::Node("search"), w, now).unwrap();
    let served = totals["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "search")
        .unwrap()["requests"]
        .as_u64()
        .unwrap();
    assert_eq!(node.points.iter().map(|p| p.requests).sum::<u64>(), served);
    rig.close();
}

#[test]
fn history_survives_a_restart_without_double_counting() {
    let dir = tempfile::tempdir().unwrap();
    let now_minute = unix_minute(SystemTime::now());
    let first = now_minute - 30;
    let restart = now_minute - 12;
    let rig = Rig::open(
        dir.path(),
        first,
        Graph::new(graph_config(1000).checked(), 1),
    );
    for minute in first..restart {
        rig.run_minute(minute, 1);
    }
    // Half of the restart minute, then a clean stop that writes it.
    for (i, spans) in minute_spans(restart, 2).iter().enumerate() {
        rig.graph
            .process_at(i % 2, spans, rig.instant(restart, 10), restart);
        rig.reference
            .process_at(0, spans, rig.instant(restart, 10), restart);
    }
    rig.graph.flush_to_sink(rig.instant(restart, 11), restart);
    let reference = rig.close();

    // A new run: empty memory, a new epoch, the rest of the restart minute.
    let rig = Rig::open(dir.path(), restart, reference);
    for (i, spans) in minute_spans(restart, 3).iter().enumerate() {
        rig.graph
            .process_at(i % 2, spans, rig.instant(restart, 30), restart);
        rig.reference
            .process_at(0, spans, rig.instant(restart, 30), restart);
    }
    let now = at(restart) + Duration::from_secs(45);
    let check = |rig: &Rig, now: SystemTime| {
        let history = rig.history();
        for (from, to) in [
            (first, restart + 1),
            (restart, restart + 1),
            (first, first + 3),
        ] {
            let w = window(from, to);
            assert_eq!(
                graph_doc(&history.snapshot(w, now).unwrap()),
                graph_doc(&rig.reference.snapshot(w)),
                "window {from}..{to}"
            );
        }
    };
    check(&rig, now);
    // Once this run's part of the restart minute is written too.
    rig.graph.tick_at(rig.instant(restart + 1, 0), restart + 1);
    rig.store.sync();
    check(&rig, at(restart + 1) + Duration::from_secs(1));
    check(&rig, at(restart + 70));
    rig.close();
}

fn stats(requests: u64, failed: u64, base_nanos: f64) -> EdgeStats {
    let mut stats = EdgeStats {
        requests,
        failed,
        ..EdgeStats::default()
    };
    for i in 0..requests {
        stats.client.insert(base_nanos * (1.0 + i as f64 / 10.0));
        stats.server.insert(base_nanos * (0.5 + i as f64 / 20.0));
    }
    stats
}

fn node(requests: u64, errors: u64, nanos: f64) -> NodeStats {
    let mut node = NodeStats {
        requests,
        errors,
        ..NodeStats::default()
    };
    for i in 0..requests {
        node.latency.insert(nanos + i as f64 * 1000.0);
    }
    node
}

pub(crate) fn key(client: &str, server: &str, connection_type: ConnectionType) -> EdgeKey {
    EdgeKey {
        client: client.into(),
        server: server.into(),
        connection_type,
        client_dimensions: Box::default(),
        server_dimensions: Box::default(),
    }
}

/// Everything a read returns, by bucket.
#[derive(Default)]
struct Rows {
    edges: Vec<(Minute, i64, EdgeKey, EdgeStats)>,
    nodes: Vec<(Minute, i64, Arc<str>, NodeStats)>,
}

impl crate::graph::aggregate::Accumulator for Rows {
    fn edge(&mut self, minute: Minute, width: i64, key: &EdgeKey, stats: &EdgeStats) {
        self.edges.push((minute, width, key.clone(), stats.clone()));
    }
    fn node(&mut self, minute: Minute, width: i64, service: &Arc<str>, stats: &NodeStats) {
        self.nodes
            .push((minute, width, service.clone(), stats.clone()));
    }
}

fn read_all(db: &mut Db, first: Minute, last: Minute) -> Rows {
    read_from(db, first, last, Minute::MIN)
}

/// Every row of `first..=last`, hours before `fine_from` from the rollups.
fn read_from(db: &mut Db, first: Minute, last: Minute, fine_from: Minute) -> Rows {
    let mut rows = Rows::default();
    let range = ReadRange {
        first,
        last,
        memory_from: Minute::MAX,
        epoch: 0,
        prefer_rollups: false,
        fine_from,
    };
    db.read(&range, &Selection::All, &mut rows).unwrap();
    rows
}

#[test]
fn rows_round_trip_with_their_sketch_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let mut db = Db::open(&path).unwrap();
    let epoch = db.begin_run(SystemTime::now()).unwrap();
    let mut dense = stats(500, 3, 2e6);
    dense.client.insert(0.0);
    dense.requests += 1;
    dense.server.insert(7.0);
    let edges = vec![
        (key("a", "b", ConnectionType::Direct), dense.clone()),
        (key("a", "pg", ConnectionType::Database), stats(1, 1, 9e9)),
        (key("user", "a", ConnectionType::Virtual), stats(2, 0, 1.0)),
        (
            key("a", "orders", ConnectionType::Messaging),
            stats(3, 0, 1e5),
        ),
    ];
    let nodes = vec![
        (Arc::from("a"), node(10, 2, 3e6)),
        (Arc::from("b"), NodeStats::default()),
    ];
    // First as the open minute, then again, final: it moves, not doubles.
    let written = db
        .write_minutes(epoch, &[(1000, edges.clone(), nodes.clone())], 999)
        .unwrap();
    assert_eq!(written.rows, 6);
    let mut reader = Db::open_reader(&path).unwrap();
    let open = read_all(&mut reader, 1000, 1000);
    assert_eq!((open.edges.len(), open.nodes.len()), (4, 2));
    assert_eq!(db.newest_bucket().unwrap(), Some(1000), "open rows count");
    db.write_minutes(epoch, &[(1000, edges.clone(), nodes.clone())], 1000)
        .unwrap();

    let rows = read_all(&mut reader, 1000, 1000);
    assert_eq!(rows.edges.len(), 4);
    for (key, want) in &edges {
        let (minute, width, _, got) = rows.edges.iter().find(|(_, _, k, _)| k == key).unwrap();
        assert_eq!((*minute, *width), (1000, 1));
        assert_eq!(got, want, "{key:?}");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        got.client.encode(&mut a);
        want.client.encode(&mut b);
        assert_eq!(a, b, "sketch bytes of {key:?}");
        assert_eq!(got.server.quantile(0.99), want.server.quantile(0.99));
    }
    assert_eq!(rows.nodes.len(), 2);
    let a = rows.nodes.iter().find(|n| &*n.2 == "a").unwrap();
    assert_eq!(a.3, nodes[0].1);
    assert!(read_all(&mut reader, 1001, 2000).edges.is_empty());
    assert!(read_all(&mut reader, 0, 999).edges.is_empty());

    // Rows of the current run within memory's reach are skipped.
    let mut skipped = Rows::default();
    let range = ReadRange {
        first: 900,
        last: 1100,
        memory_from: 1000,
        epoch,
        prefer_rollups: false,
        fine_from: Minute::MIN,
    };
    reader.read(&range, &Selection::All, &mut skipped).unwrap();
    assert!(skipped.edges.is_empty() && skipped.nodes.is_empty());
    let range = ReadRange {
        memory_from: 1001,
        ..range
    };
    reader.read(&range, &Selection::All, &mut skipped).unwrap();
    assert_eq!(skipped.edges.len(), 4);

    // Selections.
    let mut one = Rows::default();
    let edge = Selection::Edge {
        client: "a",
        server: "pg",
        connection_type: None,
    };
    reader
        .read(
            &ReadRange {
                memory_from: Minute::MAX,
                ..range
            },
            &edge,
            &mut one,
        )
        .unwrap();
    assert_eq!(one.edges.len(), 1);
    assert!(one.nodes.is_empty());
    let mut none = Rows::default();
    let unknown = Selection::Node("nobody");
    reader
        .read(
            &ReadRange {
                memory_from: Minute::MAX,
                ..range
            },
            &unknown,
            &mut none,
        )
        .unwrap();
    assert!(none.edges.is_empty() && none.nodes.is_empty());
}

#[test]
fn compaction_keeps_counts_and_quantiles_and_retention_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config(dir.path());
    config.retention = Duration::from_secs(4 * 86_400);
    let path = config.db_path();
    let mut db = Db::open(&path).unwrap();
    let epoch = db.begin_run(SystemTime::now()).unwrap();
    let now_minute = unix_minute(SystemTime::now());
    let start = now_minute - 5 * 1440;
    let ab = key("a", "b", ConnectionType::Direct);
    let mut minutes = Vec::new();
    let mut whole = EdgeStats::default();
    let mut exact = Vec::new();
    for minute in start..now_minute {
        if minute % 7 == 0 {
            continue;
        }
        let requests = 1 + (minute % 5) as u64;
        let mut s = EdgeStats {
            requests,
            failed: u64::from(minute % 3 == 0),
            ..EdgeStats::default()
        };
        for i in 0..requests {
            let v = 1e6 * (1.0 + ((minute as u64 * 31 + i * 17) % 400) as f64);
            s.client.insert(v);
            s.server.insert(v / 2.0);
            exact.push(v);
        }
        let n = node(requests, 0, 2e6);
        whole.merge(&s);
        minutes.push((minute, vec![(ab.clone(), s)], vec![(Arc::from("b"), n)]));
    }
    for chunk in minutes.chunks(1000) {
        db.write_minutes(epoch, chunk, Minute::MAX).unwrap();
    }
    // A run killed two days ago left its last minute open.
    let crashed = db.begin_run(SystemTime::now()).unwrap();
    let orphan = (
        now_minute - 2 * 1440 + 3,
        vec![(ab.clone(), stats(7, 7, 1e6))],
        vec![(Arc::from("b"), node(7, 0, 1e6))],
    );
    db.write_minutes(crashed, std::slice::from_ref(&orphan), Minute::MIN)
        .unwrap();
    minutes.push(orphan);
    drop(db);

    let metrics = StoreMetrics::default();
    let mut writer = writer::WriterState::new(
        Db::open(&path).unwrap(),
        epoch + 1,
        1,
        Duration::from_secs(3600),
        config.clone(),
        metrics.clone(),
    );
    while writer.maintain(SystemTime::now()) {}
    assert!(metrics.rows_compacted.get() > 0);
    assert!(metrics.rows_expired.get() > 0);

    let mut reader = Db::open_reader(&path).unwrap();
    let rows = read_from(
        &mut reader,
        start - 2000,
        now_minute,
        config.fine_from(now_minute),
    );
    let oldest_kept = now_minute - 4 * 1440;
    // Retention: nothing ends before the oldest minute kept.
    assert!(rows.edges.iter().all(|(m, w, _, _)| m + w > oldest_kept));
    // Widths follow the tiers by age (25 h → 10 m, 72 h → 1 h); buckets
    // right at a tier's edge may be either.
    for (minute, width, _, _) in &rows.edges {
        let age = now_minute - minute;
        let want = match age {
            a if a > 72 * 60 + 60 => Some(60),
            a if a > 25 * 60 + 10 && a <= 72 * 60 => Some(10),
            a if a < 25 * 60 => Some(1),
            _ => None,
        };
        if let Some(want) = want {
            assert_eq!(*width, want, "bucket {minute} aged {age} minutes");
        }
        assert_eq!(minute % width, 0, "buckets align to their width");
    }
    assert!(rows.edges.iter().any(|r| r.1 == 60) && rows.edges.iter().any(|r| r.1 == 10));
    // Counts are those of the minutes retention kept.
    let mut want = EdgeStats::default();
    let mut node_requests = 0;
    for (minute, edges, nodes) in &minutes {
        if *minute >= oldest_kept {
            want.merge(&edges[0].1);
            node_requests += nodes[0].1.requests;
        }
    }
    let mut got = EdgeStats::default();
    for (_, _, _, s) in &rows.edges {
        got.merge(s);
    }
    assert_eq!((got.requests, got.failed), (want.requests, want.failed));
    assert_eq!(
        rows.nodes.iter().map(|n| n.3.requests).sum::<u64>(),
        node_requests
    );
    // Sketch merges are exact: the compacted sketches are the minutes' merge.
    assert_eq!(got.client, want.client);
    assert_eq!(got.server, want.server);
    // And quantiles stay within the sketch's accuracy of the exact values.
    exact.sort_by(f64::total_cmp);
    for q in [0.5, 0.9, 0.99] {
        let truth = exact[(q * (exact.len() - 1) as f64) as usize];
        let estimate = whole.client.quantile(q);
        assert!(
            (estimate - truth).abs() / truth <= 0.01,
            "q{q}: {estimate} vs {truth}"
        );
    }
    // Running again finds nothing left to do.
    let compacted = metrics.rows_compacted.get();
    assert!(!writer.maintain(SystemTime::now()));
    assert_eq!(metrics.rows_compacted.get(), compacted);
}

#[test]
fn a_compacted_window_widens_to_its_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let mut db = Db::open(&path).unwrap();
    let epoch = db.begin_run(SystemTime::now()).unwrap();
    let ab = key("a", "b", ConnectionType::Direct);
    let hour = (unix_minute(SystemTime::now()) - 4 * 1440) / 60 * 60;
    let minutes: Vec<_> = (hour..hour + 60)
        .map(|m| (m, vec![(ab.clone(), stats(2, 0, 1e6))], Vec::new()))
        .collect();
    db.write_minutes(epoch, &minutes, Minute::MAX).unwrap();
    db.compact(hour, 60).unwrap();
    drop(db);
    let graph = Graph::new(graph_config(60).checked(), 1);
    let store = Store::open(
        &config(dir.path()).checked(Duration::from_secs(3600)),
        1,
        Duration::from_secs(3600),
        StoreMetrics::default(),
    )
    .unwrap();
    let history = History::new(graph, Some(store.clone()));
    // A quarter of the hour asks; the whole hour answers, its rate intact.
    let topology = history
        .snapshot(window(hour + 15, hour + 30), SystemTime::now())
        .unwrap();
    assert_eq!(topology.window, window(hour, hour + 60));
    let doc = graph_doc(&topology);
    assert_eq!(doc["edges"][0]["requests"], 120);
    assert_eq!(doc["edges"][0]["rate_per_s"], 0.033);
    store.close(std::time::Instant::now() + Duration::from_secs(5));
}

#[test]
fn writer_sums_shards_and_replaces_the_open_minute() {
    use crate::graph::aggregate::MinuteBatch;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let mut db = Db::open(&path).unwrap();
    let epoch = db.begin_run(SystemTime::now()).unwrap();
    let metrics = StoreMetrics::default();
    let now = SystemTime::now();
    let minute = unix_minute(now) - 1;
    let mut writer = writer::WriterState::new(
        db,
        epoch,
        2,
        Duration::from_secs(3600),
        config(dir.path()),
        metrics.clone(),
    );
    let ab = key("a", "b", ConnectionType::Direct);
    let batch = |shard, sealed_through, requests| MinuteBatch {
        shard,
        sealed_through,
        as_of: None,
        edges: vec![(minute, ab.clone(), stats(requests, 0, 1e6))],
        nodes: vec![],
    };
    // Shard 0 checkpoints the open minute twice, then closes it.
    writer.apply(batch(0, minute - 1, 2));
    writer.commit();
    writer.apply(batch(0, minute - 1, 5));
    writer.commit();
    writer.apply(batch(0, minute, 6));
    writer.apply(batch(1, minute, 4));
    writer.commit();
    assert_eq!(metrics.minutes_written.get(), 1, "both shards sealed it");
    let mut reader = Db::open_reader(&path).unwrap();
    let rows = read_all(&mut reader, minute, minute);
    assert_eq!(rows.edges.len(), 1);
    assert_eq!(rows.edges[0].3.requests, 10, "6 + 4, not 2 + 5 + 6 + 4");
}

#[test]
fn a_corrupt_file_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    std::fs::write(
        config.db_path(),
        b"this is not a sqlite database, just text ".repeat(200),
    )
    .unwrap();
    let err = Store::open(
        &config.clone().checked(Duration::from_secs(3600)),
        1,
        Duration::from_secs(3600),
        StoreMetrics::default(),
    )
    .unwrap_err();
    let text = error_chain(&err);
    assert!(text.contains("history.db"), "{text}");
    assert!(text.contains("not a database"), "{text}");

    // A valid database with a damaged page is caught by the check.
    let dir = tempfile::tempdir().unwrap();
    let config = super::tests::config(dir.path());
    {
        let mut db = Db::open(&config.db_path()).unwrap();
        let epoch = db.begin_run(SystemTime::now()).unwrap();
        let ab = key("a", "b", ConnectionType::Direct);
        let minutes: Vec<_> = (0..400)
            .map(|m| (m, vec![(ab.clone(), stats(20, 0, 1e6))], Vec::new()))
            .collect();
        db.write_minutes(epoch, &minutes, Minute::MAX).unwrap();
        // Closing the last connection moves the WAL into the main file.
    }
    let mut bytes = std::fs::read(config.db_path()).unwrap();
    assert!(bytes.len() > 5 * 4096);
    for b in &mut bytes[2 * 4096..4 * 4096] {
        *b = 0x5a;
    }
    std::fs::write(config.db_path(), bytes).unwrap();
    let err = Store::open(
        &config.clone().checked(Duration::from_secs(3600)),
        1,
        Duration::from_secs(3600),
        StoreMetrics::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { .. } | StoreError::Sqlite { .. }),
        "{err:?}"
    );
    assert!(error_chain(&err).contains("history.db"));
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    {
        let conn = rusqlite::Connection::open(config.db_path()).unwrap();
        conn.execute_batch("PRAGMA user_version = 99;").unwrap();
    }
    let err = Store::open(
        &config.clone().checked(Duration::from_secs(3600)),
        1,
        Duration::from_secs(3600),
        StoreMetrics::default(),
    )
    .unwrap_err();
    assert!(
        matches!(err, StoreError::Schema { found: 99, .. }),
        "{err:?}"
    );
}

#[test]
fn storage_config_is_checked() {
    let mut invalid = Vec::new();
    let mut config = StorageConfig {
        retention: Duration::from_secs(60),
        flush_interval: Duration::from_millis(10),
        queue_capacity: 0,
        ..StorageConfig::default()
    };
    config.compaction[0].after = Duration::from_secs(3600);
    config.compaction[1].bucket = Duration::from_secs(7 * 60);
    config.validate("storage", Duration::from_secs(3600), &mut invalid);
    let keys: Vec<_> = invalid.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "storage.retention",
            "storage.flush_interval",
            "storage.queue_capacity",
            "storage.compaction[0].after",
            "storage.compaction[1].bucket",
            "storage.compaction[1].bucket",
        ]
    );
    let mut invalid = Vec::new();
    StorageConfig::default().validate("storage", Duration::from_secs(3600), &mut invalid);
    assert!(invalid.is_empty(), "{invalid:?}");
}

#[test]
fn series_steps_stay_under_three_hundred_and_follow_compaction() {
    use super::history::MAX_POINTS;
    let graph = Graph::new(graph_config(60).checked(), 1);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(
        &config(dir.path()).checked(Duration::from_secs(3600)),
        1,
        Duration::from_secs(3600),
        StoreMetrics::default(),
    )
    .unwrap();
    let history = History::new(graph, Some(store.clone()));
    let now_minute = unix_minute(SystemTime::now());
    let now = at(now_minute);
    let edge = Selection::Edge {
        client: "a",
        server: "b",
        connection_type: None,
    };
    for (minutes, step) in [
        (60, 60),
        (1440, 300),
        (2 * 1440, 600),
        (7 * 1440, 3600),
        (15, 60),
    ] {
        let w = window(now_minute - minutes, now_minute);
        let series = history.series(&edge, w, now).unwrap();
        assert_eq!(series.step_seconds, step, "{minutes} minutes");
        assert!(series.points.len() as i64 <= MAX_POINTS + 1);
        assert!(series.points.iter().all(|p| p.requests == 0));
        let first = series.points[0].t;
        assert!(first <= w.start && w.start < first + Duration::from_secs(step));
    }
    let doc = history
        .series(&edge, window(now_minute - 2, now_minute), now)
        .unwrap();
    let doc = serde_json::to_value(crate::web::document::SeriesDocument::from(&doc)).unwrap();
    assert_eq!(doc["step_seconds"], 60);
    assert_eq!(doc["points"][0]["requests"], 0);
    assert_eq!(doc["points"][0]["errors"], 0);
    assert_eq!(doc["points"][0]["p99_ms"], 0.0);
    assert!(doc["points"][1]["t"].as_str().unwrap().ends_with(":00Z"));
    store.close(std::time::Instant::now() + Duration::from_secs(5));
}

/// An edge's minute with every request at `ms` milliseconds.
pub(crate) fn flat(requests: u64, failed: u64, ms: f64) -> EdgeStats {
    let mut stats = EdgeStats {
        requests,
        failed,
        ..EdgeStats::default()
    };
    for _ in 0..requests {
        stats.client.insert(ms * 1e6);
        stats.server.insert(ms * 1e6);
    }
    stats
}

#[test]
fn a_node_that_sends_no_spans_shows_what_its_callers_saw() {
    let graph = Graph::new(graph_config(60).checked(), 1);
    let minute = unix_minute(SystemTime::now()) - 2;
    let mut query = span("shop", SpanKind::Client, 1, 5, Some(4), 3_000_000, true);
    query.attributes = Attributes::from_vec(vec![(
        "db.system".into(),
        AttributeValue::String("postgresql".into()),
    )]);
    // Its caller is not instrumented: no edge leads to it.
    let served = span("shop", SpanKind::Server, 2, 6, Some(77), 9_000_000, false);
    graph.process_at(0, &[query, served], Instant::now(), minute);
    let history = History::new(graph, None);
    let w = window(minute, minute + 1);
    let now = at(minute + 2);
    let postgres = history
        .series(&Selection::Node("postgresql"), w, now)
        .unwrap();
    assert_eq!(
        (postgres.points[0].requests, postgres.points[0].errors),
        (1, 1)
    );
    let shop = history.series(&Selection::Node("shop"), w, now).unwrap();
    assert_eq!(
        (shop.points[0].requests, shop.points[0].errors),
        (1, 0),
        "a service shows the spans it served, not the calls to it"
    );
    assert!((shop.points[0].p99_ms - 9.0).abs() < 0.05);
}

#[test]
fn the_wal_is_cut_back_once_a_long_reader_leaves() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    let wal_bytes =
        || std::fs::metadata(dir.path().join(format!("{DB_FILE}-wal"))).map_or(0, |m| m.len());
    let mut db = Db::open(&path).unwrap();
    let epoch = db.begin_run(SystemTime::now()).unwrap();
    let edges: Vec<_> = (0..400)
        .map(|i| {
            let server = format!("svc{i}");
            (key("a", &server, ConnectionType::Direct), stats(40, 1, 1e6))
        })
        .collect();
    // A reader in the middle of a query: checkpoints cannot finish under
    // it, so the WAL grows past the limit.
    let reader = rusqlite::Connection::open(&path).unwrap();
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")
        .unwrap();
    let mut minute = 1000;
    while wal_bytes() < 2 * db::WAL_SIZE_LIMIT && minute < 3000 {
        db.write_minutes(epoch, &[(minute, edges.clone(), vec![])], minute)
            .unwrap();
        minute += 1;
    }
    let grown = wal_bytes();
    assert!(grown >= 2 * db::WAL_SIZE_LIMIT, "WAL reached {grown} bytes");
    reader.execute_batch("COMMIT;").unwrap();
    drop(reader);
    // The next commits checkpoint all of it and start the WAL over.
    for _ in 0..3 {
        db.write_minutes(epoch, &[(minute, edges.clone(), vec![])], minute)
            .unwrap();
        minute += 1;
    }
    let after = wal_bytes();
    assert!(
        after <= db::WAL_SIZE_LIMIT,
        "WAL still {after} bytes after growing to {grown}"
    );
}
