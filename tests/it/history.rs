//! The history store against the real binary: the graph survives `kill -9`
//! and a restart on the same data directory, and a corrupt database leaves
//! the collector running in memory-only mode with the degraded metric set.

use crate::support as common;

use std::time::{Duration, Instant, SystemTime};

use common::{Collector, span};
use serde_json::Value;

const ROWS_WRITTEN: &str = "tracemap_store_rows_written_total";
const DEGRADED: &str = "tracemap_store_degraded";
const COMMITTED_THROUGH: &str = "tracemap_store_committed_through_seconds";

/// `flush_interval: 1s` so the open minute is on disk within a second or
/// two, instead of ten (the default).
const CONFIG: &str = "storage:\n  flush_interval: 1s\npipeline:\n  workers: 2\n";

/// Sends `calls` calls web → api (client and server spans in separate
/// requests, as two services would), `errors` of them failed.
async fn send_calls(collector: &Collector, seed: u128, calls: u64, errors: u64) {
    send_edge(collector, ("web", "api"), seed, calls, errors, 2).await;
}

/// Sends `calls` calls `client` → `server` taking `ms` each, the first
/// `errors` of them failed on the server side.
async fn send_edge(
    collector: &Collector,
    (client_service, server_service): (&str, &str),
    seed: u128,
    calls: u64,
    errors: u64,
    ms: u64,
) {
    let mut clients = Vec::new();
    let mut servers = Vec::new();
    for i in 0..calls {
        let trace = seed * 1_000_000 + u128::from(i) + 1;
        let mut client = span(trace, 2 * i + 1, 3);
        client.parent_span_id = 9u64.to_be_bytes().to_vec();
        let mut server = span(trace, 2 * i + 2, 2);
        server.parent_span_id = client.span_id.clone();
        for half in [&mut client, &mut server] {
            half.end_time_unix_nano = half.start_time_unix_nano + ms * 1_000_000;
        }
        if i < errors {
            server.status = Some(tracemap::otlp::kit::Status {
                code: 2,
                ..Default::default()
            });
        }
        clients.push(client);
        servers.push(server);
    }
    for (service, spans) in [(client_service, clients), (server_service, servers)] {
        common::post_spans(collector, service, spans).await;
    }
}

async fn get_json(collector: &Collector, path: &str) -> (u16, Value) {
    let response = reqwest::get(collector.api_url(path)).await.expect("api");
    let status = response.status().as_u16();
    (status, response.json().await.expect("json body"))
}

/// The web → api edge in the graph of `path`, if any.
async fn edge(collector: &Collector, path: &str) -> Option<Value> {
    let (status, graph) = get_json(collector, path).await;
    assert_eq!(status, 200, "{graph}");
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == "web" && e["target"] == "api")
        .cloned()
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

#[tokio::test]
async fn history_survives_kill_9_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let started = SystemTime::now() - Duration::from_secs(60);
    let mut first = Collector::start_in(dir.path(), &["run"], CONFIG);
    send_calls(&first, 1, 40, 4).await;
    wait_for("the edge in memory", async || {
        edge(&first, "/api/v1/graph?window=5m")
            .await
            .is_some_and(|e| e["requests"] == 40)
    })
    .await;
    // Every shard had recorded the calls by now; the store says when all
    // of that is committed (within `flush_interval` plus a commit).
    let recorded = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    wait_for("the calls committed to disk", async || {
        first.metric(COMMITTED_THROUGH).await >= recorded
    })
    .await;
    assert!(
        first.metric(ROWS_WRITTEN).await >= 3.0,
        "edge and node rows"
    );
    assert_eq!(first.metric(DEGRADED).await, 0.0);
    first.kill9();

    let second = Collector::start_in(dir.path(), &["run"], CONFIG);
    let window = format!(
        "/api/v1/graph?start={}&end={}",
        rfc3339(started),
        rfc3339(SystemTime::now() + Duration::from_secs(60))
    );
    let restored = edge(&second, &window)
        .await
        .expect("the edge from before the kill");
    assert_eq!(restored["requests"], 40, "{restored}");
    assert_eq!(restored["errors"], 4, "{restored}");
    let p99 = restored["server_latency_ms"]["p99"].as_f64().unwrap();
    assert!((p99 - 2.0).abs() <= 0.02, "2 ms spans, p99 {p99}");

    // New traffic adds to the restored history, nothing counted twice.
    send_calls(&second, 2, 10, 0).await;
    wait_for("old and new together", async || {
        edge(&second, &window)
            .await
            .is_some_and(|e| e["requests"] == 50)
    })
    .await;
    let (status, series) = get_json(
        &second,
        "/api/v1/series?client=web&server=api&connection_type=direct&window=1h",
    )
    .await;
    assert_eq!(status, 200, "{series}");
    assert_eq!(series["step_seconds"], 60);
    let total: u64 = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 50, "{series}");
}

#[tokio::test]
async fn a_corrupt_database_degrades_to_memory_only() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("data")).unwrap();
    std::fs::write(
        dir.path().join("data/history.db"),
        b"not a database at all, ".repeat(500),
    )
    .unwrap();
    let collector = Collector::start_in(dir.path(), &["run"], CONFIG);
    assert_eq!(collector.metric(DEGRADED).await, 1.0);
    let logged = collector.logs().into_iter().any(|line| {
        line["level"] == "ERROR"
            && line["message"]
                .as_str()
                .is_some_and(|m| m.contains("memory only"))
            && line["error"]
                .as_str()
                .is_some_and(|e| e.contains("history.db"))
    });
    assert!(
        logged,
        "no error line naming the file: {:?}",
        collector.logs()
    );
    // Live data is still served.
    send_calls(&collector, 3, 5, 0).await;
    wait_for("the edge in memory", async || {
        edge(&collector, "/api/v1/graph?window=5m")
            .await
            .is_some_and(|e| e["requests"] == 5)
    })
    .await;
    // Windows reach only what memory holds, and say so.
    let (status, body) = get_json(
        &collector,
        "/api/v1/graph?window=1h&end=2020-01-01T00:00:00Z",
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("graph.retention"),
        "{body}"
    );
    // The file is left as it was, for whoever inspects it.
    let bytes = std::fs::read(dir.path().join("data/history.db")).unwrap();
    assert!(bytes.starts_with(b"not a database"));
}

#[test]
fn check_config_validates_the_storage_keys() {
    let dir = tempfile::tempdir().unwrap();
    let check = |yaml: &str| {
        let file = dir.path().join("tracemap.yaml");
        std::fs::write(&file, yaml).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_tracemap"))
            .arg("check-config")
            .arg(&file)
            .output()
            .expect("run check-config");
        let text = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        (output.status.success(), text)
    };
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tracemap.example.yaml"
    ))
    .unwrap();
    let (ok, text) = check(&example);
    assert!(ok, "{text}");
    assert!(text.contains("retention: 7days"), "{text}");

    let (ok, text) = check(
        "storage:\n  retention: 10m\n  flush_interval: 5m\n  \
         compaction: [{after: 30m, bucket: 7m}]\n",
    );
    assert!(!ok, "{text}");
    for key in [
        "storage.retention",
        "storage.flush_interval",
        "storage.compaction[0].after",
        "storage.compaction[0].bucket",
    ] {
        assert!(text.contains(key), "{key} not named: {text}");
    }
    let (ok, text) = check("storage:\n  retension: 7d\n");
    assert!(!ok && text.contains("retension"), "{text}");
}

/// One direct edge's minute: `requests` calls of `ms`, `failed` failed.
fn stored_edge(
    client: &str,
    server: &str,
    requests: u64,
    failed: u64,
    ms: f64,
) -> (
    tracemap::graph::edge::EdgeKey,
    tracemap::graph::edge::EdgeStats,
) {
    use tracemap::graph::edge::{ConnectionType, EdgeKey, EdgeStats};
    let mut stats = EdgeStats {
        requests,
        failed,
        ..EdgeStats::default()
    };
    for _ in 0..requests {
        stats.client.insert(ms * 1e6);
        stats.server.insert(ms * 1e6);
    }
    stats.client.seal();
    stats.server.seal();
    let key = EdgeKey {
        client: client.into(),
        server: server.into(),
        connection_type: ConnectionType::Direct,
        client_dimensions: Box::default(),
        server_dimensions: Box::default(),
    };
    (key, stats)
}

/// Writes `minutes` ago-from-now edge rows into the data directory the way
/// an earlier run of the collector writes them (the store's own code),
/// before the real binary starts on it.
fn write_history(data_dir: &std::path::Path, rows: &[(i64, &str, &str, u64, u64, f64)]) {
    use tracemap::graph::unix_minute;
    use tracemap::store::db::Db;

    std::fs::create_dir_all(data_dir).unwrap();
    let mut db = Db::open(&data_dir.join("history.db")).unwrap();
    let epoch = db.begin_run(SystemTime::now()).unwrap();
    let now = unix_minute(SystemTime::now());
    let minutes: Vec<_> = rows
        .iter()
        .map(|(ago, client, server, requests, failed, ms)| {
            let edge = stored_edge(client, server, *requests, *failed, *ms);
            (now - ago, vec![edge], Vec::new())
        })
        .collect();
    db.write_minutes(epoch, &minutes, now).unwrap();
}

#[tokio::test]
async fn diff_api_and_map_diff_find_new_vanished_and_regressed_edges() {
    let dir = tempfile::tempdir().unwrap();
    // Yesterday, five minutes into the same 15 minutes as now.
    let yesterday = 1440 + 10;
    write_history(
        &dir.path().join("data"),
        &[
            (yesterday, "web", "api", 40, 0, 2.0),
            (yesterday, "web", "slow", 40, 0, 2.0),
            (yesterday, "web", "gone", 40, 0, 2.0),
        ],
    );
    let collector = Collector::start_in(dir.path(), &["run"], CONFIG);
    send_edge(&collector, ("web", "api"), 1, 40, 0, 2).await;
    send_edge(&collector, ("web", "slow"), 2, 40, 8, 40).await;
    send_edge(&collector, ("web", "new"), 3, 40, 0, 2).await;
    wait_for("today's edges in memory", async || {
        let (_, graph) = get_json(&collector, "/api/v1/graph?window=15m").await;
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["requests"].as_u64().unwrap())
            .sum::<u64>()
            == 120
    })
    .await;

    // The defaults: the last 15 minutes against the same 15 a day earlier.
    let (status, diff) = get_json(&collector, "/api/v1/diff").await;
    assert_eq!(status, 200, "{diff}");
    let mut changes: Vec<(String, String, String)> = diff["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["target"].as_str().unwrap().to_owned(),
                e["change"].as_str().unwrap().to_owned(),
                e["reasons"].to_string(),
            )
        })
        .collect();
    changes.sort();
    assert_eq!(
        changes,
        [
            ("api".into(), "unchanged".into(), "[]".into()),
            ("gone".into(), "vanished".into(), "[]".into()),
            ("new".into(), "new".into(), "[]".into()),
            (
                "slow".into(),
                "regressed".into(),
                r#"["error_rate","p99"]"#.into()
            ),
        ],
        "{diff}"
    );
    let slow = diff["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == "slow")
        .unwrap();
    assert_eq!(slow["baseline"]["requests"], 40, "{slow}");
    assert_eq!(slow["current"]["errors"], 8, "{slow}");
    let p99 = slow["current"]["p99_ms"].as_f64().unwrap();
    assert!((p99 - 40.0).abs() <= 0.4, "40 ms spans, p99 {p99}");

    // The same through the command line, as a table, worst first.
    let url = collector.api_url("");
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tracemap"))
            .args(["map", "--url", &url, "--window", "15m", "--diff", "1d"])
            .output()
    })
    .await
    .unwrap()
    .expect("run tracemap map --diff");
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{table}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows: Vec<&str> = table
        .lines()
        .filter(|l| l.contains("web") && l.contains('→'))
        .collect();
    assert_eq!(rows.len(), 4, "{table}");
    for (row, (marker, change, server)) in rows.iter().zip([
        ("!", "regressed", "slow"),
        ("+", "new", "new"),
        ("-", "vanished", "gone"),
        (" ", "unchanged", "api"),
    ]) {
        assert!(row.starts_with(&format!("{marker}  {change}")), "{table}");
        assert!(row.contains(&format!("→ {server}")), "{table}");
    }
}

#[tokio::test]
async fn retention_deletes_what_is_older_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let day = 1440;
    write_history(
        &dir.path().join("data"),
        &[
            (8 * day, "web", "expired", 10, 0, 2.0),
            (2 * day, "web", "kept", 10, 1, 2.0),
        ],
    );
    // Default retention (7 days); maintenance runs as the writer starts.
    let collector = Collector::start_in(dir.path(), &["run"], CONFIG);
    wait_for("retention to run", async || {
        collector.metric("tracemap_store_rows_expired_total").await >= 1.0
    })
    .await;
    let since = |ago: Duration| rfc3339(SystemTime::now() - ago);
    let window = format!(
        "/api/v1/graph?start={}&end={}",
        since(Duration::from_secs(3 * 86_400)),
        since(Duration::from_secs(86_400))
    );
    let (status, graph) = get_json(&collector, &window).await;
    assert_eq!(status, 200, "{graph}");
    let targets: Vec<_> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["target"].clone(),
                e["requests"].clone(),
                e["errors"].clone(),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [("kept".into(), 10.into(), 1.into())],
        "two days old, within retention"
    );
    // Beyond retention the API says so rather than answering empty.
    let (status, body) = get_json(
        &collector,
        &format!(
            "/api/v1/graph?window=1h&end={}",
            since(Duration::from_secs(8 * 86_400))
        ),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("storage.retention"),
        "{body}"
    );
    // And the row is gone from the file, not only from answers.
    let db = rusqlite::Connection::open(dir.path().join("data/history.db")).unwrap();
    let expired: i64 = db
        .query_row(
            "SELECT count(*) FROM names WHERE name = 'expired' AND EXISTS
             (SELECT 1 FROM edges WHERE server = names.id)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(expired, 0);
}

#[test]
fn an_unusable_data_dir_fails_startup_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be: no run, root or not, can create it.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"a file").unwrap();
    let data_dir = blocker.join("data");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_tracemap"))
        .args([
            "run",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
        ])
        .args(["--api-listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn tracemap");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("tracemap kept running with an unusable data_dir");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&data_dir.display().to_string()),
        "the error names the directory: {stderr}"
    );
}
