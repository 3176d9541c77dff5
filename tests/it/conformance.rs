//! OpenTelemetry's servicegraph connector fixtures
//! (`tests/fixtures/otel-servicegraph/`), replayed through the real
//! OTLP/HTTP JSON receiver. The graph must show exactly the edges the
//! fixtures' README lists for tracemap, including where tracemap
//! deliberately differs (no `unknown` virtual server).

use crate::support as common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Collector;
use serde_json::Value;

/// Short TTL so unpaired halves expire within the test.
const CONFIG: &str = "graph:\n  pairing_ttl: 300ms\n";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/otel-servicegraph")
        .join(name)
}

async fn post_json(collector: &Collector, body: &Value) {
    let resp = reqwest::Client::new()
        .post(collector.http_url("/v1/traces"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
}

type Edge = (String, String, String, u64, u64);

async fn edges(collector: &Collector) -> Vec<Edge> {
    let graph: Value = reqwest::get(collector.api_url("/api/v1/graph?window=5m"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_owned(),
                e["target"].as_str().unwrap().to_owned(),
                e["connection_type"].as_str().unwrap().to_owned(),
                e["requests"].as_u64().unwrap(),
                e["errors"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits until every accepted span was processed and every pending half
/// expired, then returns the edges.
async fn settled_edges(collector: &Collector) -> Vec<Edge> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = collector.metrics_text().await;
        let accepted = common::series_value(
            &text,
            "tracemap_receiver_accepted_spans_total{protocol=\"http\"}",
        );
        let processed = common::series_value(&text, "tracemap_pipeline_processed_spans_total");
        let pending = common::series_value(&text, "tracemap_graph_pending_halves");
        if accepted > 0.0 && processed == accepted && pending == 0.0 {
            return edges(collector).await;
        }
        assert!(Instant::now() < deadline, "halves never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn edge(c: &str, s: &str, t: &str, requests: u64, errors: u64) -> Edge {
    (c.into(), s.into(), t.into(), requests, errors)
}

async fn replay(name: &str) -> Collector {
    let yaml = std::fs::read_to_string(fixture(name)).unwrap();
    let body: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    let collector = Collector::start_with_config(CONFIG);
    post_json(&collector, &body).await;
    collector
}

#[tokio::test]
async fn db_attribute_on_the_server_side_is_a_plain_edge() {
    let collector = replay("extra-dimensions-queue-db-trace.yaml").await;
    assert_eq!(
        settled_edges(&collector).await,
        vec![edge("foo-server", "bar-requester", "", 1, 0)]
    );
}

#[tokio::test]
async fn client_server_spans_are_not_messaging() {
    let collector = replay("messaging-system-trace.yaml").await;
    assert_eq!(
        settled_edges(&collector).await,
        vec![edge("foo-server", "bar-requester", "", 1, 0)]
    );
    let text = collector.metrics_text().await;
    assert_eq!(
        common::series_value(
            &text,
            "traces_service_graph_request_total{client=\"foo-server\",server=\"bar-requester\",connection_type=\"\",failed=\"false\"}"
        ),
        1.0
    );
    assert_eq!(
        common::series_value(
            &text,
            "traces_service_graph_request_server_seconds_sum{client=\"foo-server\",server=\"bar-requester\",connection_type=\"\",failed=\"false\"}"
        ),
        0.000001
    );
}

#[tokio::test]
async fn root_server_is_from_user_and_peerless_client_is_not_drawn() {
    let collector = replay("virtual-node-label-trace.yaml").await;
    assert_eq!(
        settled_edges(&collector).await,
        vec![edge("user", "bar-requester", "virtual_node", 1, 0)]
    );
    assert_eq!(
        collector
            .metric("tracemap_graph_expired_halves_total{result=\"discarded\"}")
            .await,
        1.0,
        "foo-server's unanswered client half is counted, not drawn"
    );
}

#[tokio::test]
async fn root_server_with_peer_service_name_is_from_user() {
    let collector = replay("virtual-node-label-client-trace.yaml").await;
    assert_eq!(
        settled_edges(&collector).await,
        vec![edge("user", "bar-requester", "virtual_node", 1, 0)]
    );
}

/// The failed-label trace file is missing upstream; this builds the trace
/// its expected metrics describe: foo calls bar three times (1 s each), one
/// call fails.
#[tokio::test]
async fn failed_label_counts_split_by_failed() {
    let collector = Collector::start_with_config(CONFIG);
    let span = |service: &str, id: &str, parent: &str, kind: u8, error: bool| {
        serde_json::json!({"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"spans": [{
                "traceId": "b0000000000000000000000000000000", "spanId": id, "parentSpanId": parent,
                "name": "call", "kind": kind,
                "startTimeUnixNano": "1800000000000000000", "endTimeUnixNano": "1800000001000000000",
                "status": {"code": if error { 2 } else { 0 }}}]}]})
    };
    let body = serde_json::json!({"resourceSpans": [
        span("foo", "b000000000000001", "", 3, false), span("bar", "b000000000000011", "b000000000000001", 2, false),
        span("foo", "b000000000000002", "", 3, false), span("bar", "b000000000000012", "b000000000000002", 2, false),
        span("foo", "b000000000000003", "", 3, false), span("bar", "b000000000000013", "b000000000000003", 2, true),
    ]});
    post_json(&collector, &body).await;
    assert_eq!(
        settled_edges(&collector).await,
        vec![edge("foo", "bar", "", 3, 1)]
    );
    let text = collector.metrics_text().await;
    let series = |name: &str, failed: Option<&str>| {
        let failed = failed
            .map(|f| format!(",failed=\"{f}\""))
            .unwrap_or_default();
        common::series_value(
            &text,
            &format!("{name}{{client=\"foo\",server=\"bar\",connection_type=\"\"{failed}}}"),
        )
    };
    assert_eq!(
        series("traces_service_graph_request_total", Some("false")),
        2.0
    );
    assert_eq!(
        series("traces_service_graph_request_total", Some("true")),
        1.0
    );
    assert_eq!(
        series("traces_service_graph_request_failed_total", None),
        1.0
    );
    assert_eq!(
        series(
            "traces_service_graph_request_server_seconds_count",
            Some("false")
        ),
        2.0
    );
    assert_eq!(
        series(
            "traces_service_graph_request_server_seconds_sum",
            Some("false")
        ),
        2.0
    );
    assert_eq!(
        series(
            "traces_service_graph_request_client_seconds_sum",
            Some("true")
        ),
        1.0
    );
}
