//! `tracemap loadgen` as a user runs it: the real binary as a subprocess
//! against the real collector, its summary checked against the collector's
//! own count of accepted spans.

use crate::support as common;

use std::time::Duration;

use common::{Collector, loadgen};

const ACCEPTED_GRPC: &str = "tracemap_receiver_accepted_spans_total{protocol=\"grpc\"}";

#[tokio::test]
async fn loadgen_summary_matches_what_the_collector_accepted() {
    let collector = Collector::start();
    let endpoint = collector.grpc_url();

    // 2500 spans of 512: four full requests and a short fifth one.
    let output = loadgen(
        &[
            "--endpoint",
            &endpoint,
            "--max-spans",
            "2500",
            "--concurrency",
            "4",
            "--duration",
            "30s",
            "--format",
            "json",
        ],
        Duration::from_secs(60),
    );
    assert!(output.status.success(), "{:?}", output.status);
    let summary: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("json summary on stdout");
    assert_eq!(summary["spans_sent"], 2500, "{summary}");
    assert_eq!(summary["requests_ok"], 5, "{summary}");
    assert_eq!(summary["requests_failed"], 0, "{summary}");
    assert_eq!(summary["errors"], serde_json::json!({}), "{summary}");
    assert!(summary["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    let bytes_per_span = summary["request_bytes"].as_f64().unwrap() / 512.0;
    assert!((300.0..=420.0).contains(&bytes_per_span), "{summary}");
    assert_eq!(collector.metric(ACCEPTED_GRPC).await, 2500.0);

    // gzip and the text summary, at a modest rate.
    let output = loadgen(
        &[
            "--endpoint",
            &endpoint,
            "--max-spans",
            "1024",
            "--batch-size",
            "256",
            "--rate",
            "10000",
            "--gzip",
        ],
        Duration::from_secs(60),
    );
    assert!(output.status.success(), "{:?}", output.status);
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("spans sent       1024\n"), "{text}");
    assert!(text.contains("errors           none\n"), "{text}");
    assert_eq!(collector.metric(ACCEPTED_GRPC).await, 3524.0);
}

#[test]
fn loadgen_fails_when_nothing_listens() {
    // A port that was free a moment ago: the connect is refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let output = loadgen(
        &["--endpoint", &endpoint, "--duration", "2s"],
        Duration::from_secs(30),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot connect to"), "{stderr}");
}
