//! The CloudWatch exporter end to end, through the real `tracemap` binary
//! and the moto AWS emulator over loopback: spans from the real
//! OpenTelemetry Python SDK, then the metrics read back with the AWS SDK
//! (GetLogEvents for EMF; GetMetricStatistics for PutMetricData) must
//! equal what `/api/v1/graph` shows for the same window.

use crate::support as common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::moto::{FAKE_AWS_ENV, Moto, client_config, moto_server_path};
use common::{Collector, otel_python, test_file};
use serde_json::Value;

const REQUESTS: usize = 40;
const CLUSTER: &str = "moto-cluster";

/// (client, server, CloudWatch ConnectionType) → the graph API's edge.
type Edges = BTreeMap<(String, String, String), Value>;

fn connection_type(api: &str) -> String {
    if api.is_empty() { "direct" } else { api }.to_owned()
}

fn minute_floor(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    UNIX_EPOCH + Duration::from_secs(secs / 60 * 60)
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Runs tracemap with `yaml`, sends the Python traffic, waits for the
/// graph to hold it, and returns the graph's edges over whole minutes
/// from start to the minute after, then stops tracemap (the last flush).
async fn run_traffic(yaml: &str, python: &std::path::Path) -> (Edges, SystemTime, SystemTime) {
    let start = minute_floor(SystemTime::now());
    let mut collector = Collector::start_command_env(&["run"], yaml, FAKE_AWS_ENV);
    let output = Command::new(python)
        .arg(test_file("python/cloudwatch_app.py"))
        .args(["--endpoint", &collector.grpc_url()])
        .args(["--requests", &REQUESTS.to_string()])
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "python app failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let end = minute_floor(SystemTime::now()) + Duration::from_secs(120);
    let url = collector.api_url(&format!(
        "/api/v1/graph?start={}&end={}",
        rfc3339(start),
        rfc3339(end)
    ));
    // Every call pairs as soon as both halves are in; wait for all four edges.
    let deadline = Instant::now() + Duration::from_secs(30);
    let edges = loop {
        let graph: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        let edges: Edges = graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                let key = (
                    e["source"].as_str().unwrap().to_owned(),
                    e["target"].as_str().unwrap().to_owned(),
                    connection_type(e["connection_type"].as_str().unwrap()),
                );
                (key, e.clone())
            })
            .collect();
        let done = edges.len() == 4
            && edges
                .values()
                .all(|e| e["requests"].as_u64() == Some(REQUESTS as u64));
        if done {
            break edges;
        }
        assert!(
            Instant::now() < deadline,
            "graph never showed 4 edges of {REQUESTS} requests: {graph:#}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    collector.sigterm();
    let status = collector.wait_exit(Duration::from_secs(30));
    assert!(status.success(), "tracemap exited with {status}");
    let logs = collector.logs();
    let flushed = logs
        .iter()
        .find(|l| l["message"] == "exporter flushed" && l["exporter"] == "cloudwatch")
        .unwrap_or_else(|| panic!("no flush report in the logs: {logs:#?}"));
    assert_eq!(flushed["failed"], 0, "{flushed}");
    assert!(flushed["sent"].as_u64().unwrap() > 0, "{flushed}");
    (edges, start, end)
}

fn expected_edges() -> Vec<(&'static str, &'static str, &'static str)> {
    vec![
        ("checkout", "orders", "database"),
        ("checkout", "payments", "direct"),
        ("frontend", "checkout", "direct"),
        ("user", "frontend", "virtual_node"),
    ]
}

fn assert_close(what: &str, actual: f64, expected: f64, relative: f64) {
    let tolerance = expected.abs() * relative + 0.0015;
    assert!(
        (actual - expected).abs() <= tolerance,
        "{what}: {actual} vs the graph's {expected}"
    );
}

#[tokio::test]
async fn emf_events_in_moto_match_the_graph() {
    let Some(python) = otel_python() else { return };
    let Some(moto_path) = moto_server_path("the CloudWatch EMF test") else {
        return;
    };
    let moto = Moto::start(&moto_path);
    let yaml = format!(
        "exporters:\n  cloudwatch:\n    enabled: true\n    mode: emf\n    region: us-east-1\n    \
         endpoint: {}\n    cluster_name: {CLUSTER}\n    log_stream: test-instance\n    \
         flush_interval: 1s\n",
        moto.endpoint
    );
    let (graph, _, _) = run_traffic(&yaml, &python).await;
    let keys: Vec<_> = graph
        .keys()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(keys, expected_edges());

    let logs = aws_sdk_cloudwatchlogs::Client::new(&client_config(&moto.endpoint));
    let group = format!("/aws/tracemap/{CLUSTER}/metrics");
    let retention = logs
        .describe_log_groups()
        .log_group_name_prefix(&group)
        .send()
        .await
        .expect("DescribeLogGroups");
    let created = &retention.log_groups()[0];
    assert_eq!(created.log_group_name(), Some(group.as_str()));
    assert_eq!(
        created.retention_in_days(),
        Some(30),
        "default retention set"
    );
    let events = logs
        .get_log_events()
        .log_group_name(&group)
        .log_stream_name("test-instance")
        .start_from_head(true)
        .send()
        .await
        .expect("GetLogEvents")
        .events()
        .to_vec();
    assert!(!events.is_empty());

    // Sum every edge event per (Client, Server, ConnectionType).
    #[derive(Default, Debug)]
    struct Seen {
        requests: f64,
        errors: f64,
        client_count: f64,
        client_sum: f64,
        client_max: f64,
        server_count: f64,
        server_sum: f64,
        server_max: f64,
    }
    let mut seen: BTreeMap<(String, String, String), Seen> = BTreeMap::new();
    let mut services = BTreeMap::new();
    let mut backlogs = Vec::new();
    for event in &events {
        let doc: Value = serde_json::from_str(event.message().unwrap()).unwrap();
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "TraceMap", "{doc}");
        assert_eq!(doc["ClusterName"], CLUSTER, "{doc}");
        assert_eq!(
            doc["_aws"]["Timestamp"].as_i64(),
            event.timestamp(),
            "event and document agree on the minute"
        );
        if doc.get("Exporter").is_some() {
            backlogs.push(doc);
            continue;
        }
        if let Some(service) = doc["Service"].as_str() {
            if doc.get("Operation").is_none() {
                *services.entry(service.to_owned()).or_insert(0.0) +=
                    doc["Requests"].as_f64().unwrap();
            }
            continue;
        }
        assert_eq!(
            directive["Dimensions"],
            serde_json::json!([
                ["Client", "Server", "ConnectionType", "ClusterName"],
                ["Server", "ClusterName"],
                ["Client", "ClusterName"]
            ]),
            "{doc}"
        );
        let key = (
            doc["Client"].as_str().unwrap().to_owned(),
            doc["Server"].as_str().unwrap().to_owned(),
            doc["ConnectionType"].as_str().unwrap().to_owned(),
        );
        let s = seen.entry(key).or_default();
        s.requests += doc["Requests"].as_f64().unwrap();
        s.errors += doc["Errors"].as_f64().unwrap();
        s.client_count += doc["ClientLatency"]["Count"].as_f64().unwrap();
        s.client_sum += doc["ClientLatency"]["Sum"].as_f64().unwrap();
        s.client_max = s
            .client_max
            .max(doc["ClientLatency"]["Max"].as_f64().unwrap());
        s.server_count += doc["ServerLatency"]["Count"].as_f64().unwrap();
        s.server_sum += doc["ServerLatency"]["Sum"].as_f64().unwrap();
        s.server_max = s
            .server_max
            .max(doc["ServerLatency"]["Max"].as_f64().unwrap());
    }
    assert_eq!(seen.len(), graph.len(), "{seen:#?}");
    for (key, edge) in &graph {
        let s = &seen[key];
        let what = format!("{key:?}");
        assert_eq!(
            s.requests,
            edge["requests"].as_f64().unwrap(),
            "{what} requests"
        );
        assert_eq!(s.errors, edge["errors"].as_f64().unwrap(), "{what} errors");
        assert_eq!(s.client_count, s.requests, "{what}");
        assert_eq!(s.server_count, s.requests, "{what}");
        // The graph rounds to µs; EMF carries exact sums and maxima.
        assert_close(
            &what,
            s.client_sum / s.client_count,
            edge["client_latency_ms"]["avg"].as_f64().unwrap(),
            0.0,
        );
        assert_close(
            &what,
            s.server_sum / s.server_count,
            edge["server_latency_ms"]["avg"].as_f64().unwrap(),
            0.0,
        );
        assert_close(
            &what,
            s.client_max,
            edge["client_latency_ms"]["max"].as_f64().unwrap(),
            0.0,
        );
        assert_close(
            &what,
            s.server_max,
            edge["server_latency_ms"]["max"].as_f64().unwrap(),
            0.0,
        );
    }
    // Some edges fail, some do not: the sums are not trivially zero.
    assert!(seen.values().any(|s| s.errors > 0.0) && seen.values().any(|s| s.errors == 0.0));
    // Per-service RED: the spans each service served.
    assert_eq!(
        services.get("checkout"),
        Some(&(REQUESTS as f64)),
        "{services:?}"
    );
    assert_eq!(
        services.get("payments"),
        Some(&(REQUESTS as f64)),
        "{services:?}"
    );
    // Storage is on, so the exporter's own requests queue on disk: its
    // backlog arrives with each flush, under [Exporter, ClusterName].
    let emf = backlogs
        .iter()
        .find(|d| d["Exporter"] == "emf")
        .unwrap_or_else(|| panic!("no backlog of the emf exporter: {backlogs:#?}"));
    let directive = &emf["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(
        directive["Dimensions"],
        serde_json::json!([["Exporter", "ClusterName"]]),
        "{emf}"
    );
    assert_eq!(
        directive["Metrics"],
        serde_json::json!([
            {"Name": "ExportQueueBytes", "Unit": "Bytes"},
            {"Name": "ExportQueueRecords", "Unit": "Count"},
            {"Name": "ExportQueueOldestAge", "Unit": "Seconds"},
        ]),
        "{emf}"
    );
    for metric in [
        "ExportQueueBytes",
        "ExportQueueRecords",
        "ExportQueueOldestAge",
    ] {
        assert!(emf[metric].as_f64().is_some_and(|v| v >= 0.0), "{emf}");
    }
}

#[tokio::test]
async fn putmetricdata_in_moto_matches_the_graph() {
    let Some(python) = otel_python() else { return };
    let Some(moto_path) = moto_server_path("the CloudWatch PutMetricData test") else {
        return;
    };
    let moto = Moto::start(&moto_path);
    // A namespace of its own: moto's reads ignore it when dimensions are given.
    let yaml = format!(
        "exporters:\n  cloudwatch:\n    enabled: true\n    mode: putmetricdata\n    region: us-east-1\n    \
         endpoint: {}\n    namespace: TraceMapPmdTest\n    cluster_name: {CLUSTER}\n    flush_interval: 1s\n",
        moto.endpoint
    );
    let (graph, start, end) = run_traffic(&yaml, &python).await;
    assert_eq!(graph.len(), 4);
    let client = aws_sdk_cloudwatch::Client::new(&client_config(&moto.endpoint));
    for ((c, s, kind), edge) in &graph {
        let dims = [
            ("Client", c.as_str()),
            ("Server", s.as_str()),
            ("ConnectionType", kind.as_str()),
            ("ClusterName", CLUSTER),
        ];
        let stats = |name: &'static str| {
            let client = client.clone();
            async move {
                let mut request = client
                    .get_metric_statistics()
                    .namespace("TraceMapPmdTest")
                    .metric_name(name)
                    .start_time(aws_sdk_cloudwatch::primitives::DateTime::from(start))
                    .end_time(aws_sdk_cloudwatch::primitives::DateTime::from(end))
                    // One bucket for the whole window.
                    .period(((end.duration_since(start).unwrap().as_secs()) / 60 * 60) as i32);
                for stat in ["Sum", "SampleCount", "Maximum", "Minimum", "Average"] {
                    request = request.statistics(aws_sdk_cloudwatch::types::Statistic::from(stat));
                }
                for (n, v) in dims {
                    request = request.dimensions(
                        aws_sdk_cloudwatch::types::Dimension::builder()
                            .name(n)
                            .value(v)
                            .build(),
                    );
                }
                let out = request.send().await.expect("GetMetricStatistics");
                let points = out.datapoints();
                assert_eq!(points.len(), 1, "{name} {dims:?}: {points:?}");
                points[0].clone()
            }
        };
        let what = format!("{dims:?}");
        let requests = stats("Requests").await;
        assert_eq!(requests.sum(), edge["requests"].as_f64(), "{what}");
        let errors = stats("Errors").await;
        assert_eq!(errors.sum(), edge["errors"].as_f64(), "{what}");
        for (metric, api) in [
            ("ClientLatency", "client_latency_ms"),
            ("ServerLatency", "server_latency_ms"),
        ] {
            let latency = stats(metric).await;
            assert_eq!(
                latency.sample_count(),
                edge["requests"].as_f64(),
                "{what} {metric}"
            );
            // Values/Counts carry exact extremes and bin values within
            // the sketch's 0.5 %: the average agrees to the graph's 1 %.
            assert_close(
                &what,
                latency.maximum().unwrap(),
                edge[api]["max"].as_f64().unwrap(),
                0.0,
            );
            assert_close(
                &what,
                latency.average().unwrap(),
                edge[api]["avg"].as_f64().unwrap(),
                0.01,
            );
            assert!(
                latency.minimum().unwrap() <= edge[api]["p50"].as_f64().unwrap(),
                "{what}"
            );
        }
    }
    // The exporter's own disk backlog arrives too, once per flushed minute.
    for metric in [
        "ExportQueueBytes",
        "ExportQueueRecords",
        "ExportQueueOldestAge",
    ] {
        let mut request = client
            .get_metric_statistics()
            .namespace("TraceMapPmdTest")
            .metric_name(metric)
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from(start))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from(end))
            .period(((end.duration_since(start).unwrap().as_secs()) / 60 * 60) as i32)
            .statistics(aws_sdk_cloudwatch::types::Statistic::SampleCount);
        for (n, v) in [("Exporter", "cloudwatch"), ("ClusterName", CLUSTER)] {
            request = request.dimensions(
                aws_sdk_cloudwatch::types::Dimension::builder()
                    .name(n)
                    .value(v)
                    .build(),
            );
        }
        let out = request.send().await.expect("GetMetricStatistics");
        let samples: f64 = out
            .datapoints()
            .iter()
            .filter_map(|p| p.sample_count())
            .sum();
        assert!(samples >= 1.0, "{metric}: {:?}", out.datapoints());
    }
}
