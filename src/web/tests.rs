//! Tests of the API over a real store and graph: the diff of a window in
//! memory against one a previous run wrote to disk.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::graph::edge::{ConnectionType, Minute};
use crate::graph::{Graph, unix_minute};
use crate::store::db::Db;
use crate::store::tests::{at, call, config, flat, graph_config, key};
use crate::store::{History, Store, StoreMetrics};

async fn get(router: &axum::Router, uri: &str) -> (u16, serde_json::Value) {
    use tower::ServiceExt as _;
    let request = axum::http::Request::get(uri)
        .body(axum::body::Body::empty())
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap())
}

#[tokio::test]
async fn diff_api_compares_memory_with_a_stored_day_ago() {
    let dir = tempfile::tempdir().unwrap();
    let now_minute = unix_minute(SystemTime::now());
    // Yesterday's window, in the store as an earlier run wrote it.
    let mut db = Db::open(&config(dir.path()).db_path()).unwrap();
    let epoch = db.begin_run(SystemTime::now()).unwrap();
    let yesterday = now_minute - 1440 - 10;
    let baseline = vec![
        (key("a", "gone", ConnectionType::Direct), flat(50, 0, 10.0)),
        (key("a", "errs", ConnectionType::Direct), flat(100, 0, 10.0)),
        (key("a", "slow", ConnectionType::Direct), flat(100, 0, 10.0)),
        (key("a", "same", ConnectionType::Direct), flat(100, 1, 10.0)),
    ];
    db.write_minutes(epoch, &[(yesterday, baseline, Vec::new())], Minute::MAX)
        .unwrap();
    drop(db);
    let graph = Graph::new(graph_config(60).checked(), 1);
    let store = Store::open(
        &config(dir.path()).checked(Duration::from_secs(3600)),
        1,
        Duration::from_secs(3600),
        StoreMetrics::default(),
    )
    .unwrap();
    // Today's window, in memory.
    let minute = now_minute - 10;
    let mut trace = 0;
    let mut calls = |server: &str, count: u64, errors: u64, ms: u64| {
        let mut spans = Vec::new();
        for i in 0..count {
            trace += 1;
            spans.extend(call("a", server, trace, ms * 1_000_000, i < errors));
        }
        graph.process_at(0, &spans, Instant::now(), minute);
    };
    calls("new", 20, 0, 5);
    calls("errs", 100, 10, 10);
    calls("slow", 100, 0, 30);
    calls("same", 100, 1, 11);
    let history = History::new(graph, Some(store.clone()));
    let router = super::router(
        Arc::new(prometheus_client::registry::Registry::default()),
        Arc::new(super::Readiness::default()),
        history,
    );
    let end = humantime::format_rfc3339_seconds(at(now_minute));
    let (status, doc) = get(&router, &format!("/api/v1/diff?window=15m&end={end}")).await;
    assert_eq!(status, 200, "{doc}");
    let verdicts: Vec<(String, String, Vec<String>)> = doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["target"].as_str().unwrap().to_owned(),
                e["change"].as_str().unwrap().to_owned(),
                e["reasons"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    let expect = |t: &str, c: &str, r: &[&str]| {
        (
            t.to_owned(),
            c.to_owned(),
            r.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        verdicts,
        vec![
            expect("errs", "regressed", &["error_rate"]),
            expect("gone", "vanished", &[]),
            expect("new", "new", &[]),
            expect("same", "unchanged", &[]),
            expect("slow", "regressed", &["p99"]),
        ]
    );
    assert_eq!(
        doc["baseline"]["end"],
        humantime::format_rfc3339_seconds(at(now_minute - 1440)).to_string()
    );
    assert_eq!(doc["edges"][1]["baseline"]["requests"], 50);
    assert!(doc["edges"][1]["current"].is_null());
    assert!(doc["edges"][2]["baseline"].is_null());

    // A baseline at a chosen time (a deploy) works the same way.
    let deploy = humantime::format_rfc3339_seconds(at(yesterday - 5));
    let (status, doc) = get(
        &router,
        &format!("/api/v1/diff?window=15m&end={end}&baseline_start={deploy}&latency_threshold=3"),
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["baseline"]["start"], deploy.to_string());
    let slow = doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == "slow");
    assert_eq!(
        slow.unwrap()["change"],
        "unchanged",
        "3x is within latency_threshold=3"
    );

    // The edge's series reaches into the store too.
    let (status, series) = get(
        &router,
        &format!(
            "/api/v1/series?client=a&server=gone&connection_type=direct&window=1500m&end={end}"
        ),
    )
    .await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(series["step_seconds"], 300);
    let total: u64 = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 50);

    for (uri, param) in [
        ("/api/v1/diff?baseline_offset=soon", "baseline_offset"),
        (
            "/api/v1/diff?baseline_offset=1d&baseline_start=2026-01-01T00:00:00Z",
            "baseline_start",
        ),
        ("/api/v1/diff?baseline_offset=30d", "baseline_offset"),
        ("/api/v1/diff?error_threshold=2", "error_threshold"),
        ("/api/v1/series?client=a", "server"),
        ("/api/v1/series", "node"),
        ("/api/v1/series?node=a&client=b&server=c", "node"),
        (
            "/api/v1/series?client=a&server=b&connection_type=grpc",
            "connection_type",
        ),
        ("/api/v1/series?node=a&window=5x", "window"),
        ("/api/v1/graph?end=2020-01-01T00:00:00Z", "end"),
    ] {
        let (status, doc) = get(&router, uri).await;
        assert_eq!(status, 400, "{uri}: {doc}");
        let error = doc["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("invalid {param}:")),
            "{uri}: {error}"
        );
    }
    let (_, doc) = get(&router, "/api/v1/graph?end=2020-01-01T00:00:00Z").await;
    assert!(
        doc["error"]
            .as_str()
            .unwrap()
            .contains("storage.retention = 7days"),
        "{doc}"
    );
    store.close(std::time::Instant::now() + Duration::from_secs(5));
}
