//! End to end: a multi-service scenario instrumented with the real
//! OpenTelemetry Python SDK (fixed timestamps), checked through every view
//! of the graph: JSON, Jaeger dependencies, Prometheus, DOT and Mermaid.

use crate::support as common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Collector, otel_python, test_file};
use serde_json::Value;

const ITERATIONS: u64 = 20;

async fn get_json(collector: &Collector, path: &str) -> Value {
    reqwest::get(collector.api_url(path))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn get_text(collector: &Collector, path: &str) -> String {
    reqwest::get(collector.api_url(path))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

fn find(items: &Value, pred: impl Fn(&Value) -> bool) -> &Value {
    items
        .as_array()
        .unwrap()
        .iter()
        .find(|v| pred(v))
        .expect("item present")
}

fn assert_close(actual: &Value, expected_ms: f64) {
    let actual = actual.as_f64().unwrap();
    assert!(
        (actual - expected_ms).abs() <= expected_ms * 0.01,
        "{actual} not within 1% of {expected_ms}"
    );
}

#[tokio::test]
async fn python_scenario_through_every_view() {
    let Some(python) = otel_python() else { return };
    let collector = Collector::start_with_config("graph:\n  pairing_ttl: 500ms\n");
    let output = Command::new(&python)
        .arg(test_file("python/scenario.py"))
        .args([
            "--endpoint",
            &collector.grpc_url(),
            "--iterations",
            &ITERATIONS.to_string(),
        ])
        .current_dir(test_file("python"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scenario failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );

    // The unanswered rates.example calls become edges once their halves expire.
    let deadline = Instant::now() + Duration::from_secs(15);
    let graph = loop {
        let graph = get_json(&collector, "/api/v1/graph?window=5m").await;
        let settled = collector.metric("tracemap_graph_pending_halves").await == 0.0;
        if settled && graph["edges"].as_array().unwrap().len() == 5 {
            break graph;
        }
        assert!(Instant::now() < deadline, "graph never settled: {graph}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let edges: Vec<_> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap(),
                e["target"].as_str().unwrap(),
                e["connection_type"].as_str().unwrap(),
                e["requests"].as_u64().unwrap(),
                e["errors"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        edges,
        vec![
            ("checkout", "email", "messaging_system", ITERATIONS, 0),
            ("checkout", "orders", "database", ITERATIONS, 0),
            ("frontend", "checkout", "", ITERATIONS, 4),
            ("frontend", "rates.example", "virtual_node", ITERATIONS, 0),
            ("user", "frontend", "virtual_node", ITERATIONS, 0),
        ]
    );
    let call = find(&graph["edges"], |e| e["target"] == "checkout");
    assert_eq!(call["error_rate"], 0.2);
    assert_eq!(call["rate_per_s"], 0.067, "20 requests over 5 minutes");
    // Client durations are 10..29 ms, server 5..24 ms (nearest-rank quantiles).
    assert_close(&call["client_latency_ms"]["p50"], 19.0);
    assert_close(&call["client_latency_ms"]["p90"], 27.0);
    assert_close(&call["client_latency_ms"]["p99"], 28.0);
    assert_close(&call["client_latency_ms"]["avg"], 19.5);
    assert_close(&call["client_latency_ms"]["max"], 29.0);
    assert_close(&call["server_latency_ms"]["p50"], 14.0);
    assert_close(&call["server_latency_ms"]["p99"], 23.0);
    let db = find(&graph["edges"], |e| e["target"] == "orders");
    assert_close(&db["client_latency_ms"]["p99"], 3.0);

    let nodes: Vec<_> = graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["id"].as_str().unwrap(),
                n["kind"].as_str().unwrap(),
                n["requests"].as_u64().unwrap(),
                n["errors"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("checkout", "service", ITERATIONS, 4),
            ("email", "service", ITERATIONS, 0),
            ("frontend", "service", ITERATIONS, 0),
            ("orders", "database", ITERATIONS, 0),
            ("rates.example", "virtual", ITERATIONS, 0),
            ("user", "user", 0, 0),
        ]
    );
    let frontend = find(&graph["nodes"], |n| n["id"] == "frontend");
    assert_close(&frontend["latency_ms"]["p50"], 100.0);

    // Jaeger's dependencies view.
    let end_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 60_000;
    let deps = get_json(
        &collector,
        &format!("/api/dependencies?endTs={end_ms}&lookback=600000"),
    )
    .await;
    assert_eq!(deps["data"].as_array().unwrap().len(), 5);
    assert_eq!(
        *find(&deps["data"], |d| d["child"] == "checkout"),
        serde_json::json!({"parent": "frontend", "child": "checkout", "callCount": ITERATIONS})
    );

    // Prometheus, with the names Grafana's service graph reads.
    let text = collector.metrics_text().await;
    let series = |name: &str| common::series_value(&text, name);
    let edge_labels = "client=\"frontend\",server=\"checkout\",connection_type=\"\"";
    assert_eq!(
        series(&format!(
            "traces_service_graph_request_total{{{edge_labels},failed=\"false\"}}"
        )),
        16.0
    );
    assert_eq!(
        series(&format!(
            "traces_service_graph_request_total{{{edge_labels},failed=\"true\"}}"
        )),
        4.0
    );
    assert_eq!(
        series(&format!(
            "traces_service_graph_request_failed_total{{{edge_labels}}}"
        )),
        4.0
    );
    assert_eq!(
        series(&format!(
            "traces_service_graph_request_client_seconds_count{{{edge_labels},failed=\"false\"}}"
        )),
        16.0
    );
    assert_eq!(
        series(&format!(
            "traces_service_graph_request_server_seconds_bucket{{le=\"0.01\",{edge_labels},failed=\"true\"}}"
        )),
        2.0,
        "failed calls take 5, 10, 15 and 20 ms on the server"
    );
    assert_eq!(
        series(
            "traces_service_graph_request_total{client=\"checkout\",server=\"orders\",connection_type=\"database\",failed=\"false\"}"
        ),
        20.0
    );
    assert_eq!(
        series(
            "traces_spanmetrics_calls_total{service=\"checkout\",span_name=\"POST /checkout\",span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_ERROR\"}"
        ),
        4.0
    );
    assert_eq!(
        series(
            "traces_spanmetrics_latency_count{service=\"frontend\",span_name=\"GET /checkout\",span_kind=\"SPAN_KIND_SERVER\",status_code=\"STATUS_CODE_UNSET\"}"
        ),
        20.0
    );
    assert_eq!(
        series("tracemap_graph_completed_requests_total{source=\"paired\"}"),
        40.0
    );

    // DOT and Mermaid.
    let dot = get_text(&collector, "/api/v1/graph.dot?window=5m").await;
    assert!(dot.contains("\"orders\" [shape=cylinder"), "{dot}");
    assert!(
        dot.contains("\"frontend\" -> \"checkout\" [label=\""),
        "{dot}"
    );
    assert!(dot.contains("20.0% err"), "{dot}");
    let mermaid = get_text(&collector, "/api/v1/graph.mermaid?window=5m").await;
    assert!(mermaid.starts_with("flowchart LR"), "{mermaid}");
    assert!(mermaid.contains("[(\"orders\")]"), "{mermaid}");
    assert_eq!(mermaid.matches("-->").count(), 5, "{mermaid}");

    // Bad parameters get 400 with a message.
    let resp = reqwest::get(collector.api_url("/api/v1/graph?window=forever"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .starts_with("invalid window"),
        "{body}"
    );
}
