//! The real OpenTelemetry Python SDK sends to tracemap over gRPC and
//! HTTP/protobuf; `/metrics` counts exactly what it sent.

use crate::support as common;

use std::process::Command;

use common::{Collector, otel_python, test_file};

fn send_with_python(python: &std::path::Path, protocol: &str, endpoint: &str, traces: u32) {
    let output = Command::new(python)
        .arg(test_file("python/send_spans.py"))
        .args(["--protocol", protocol, "--endpoint", endpoint])
        .args(["--traces", &traces.to_string(), "--children", "2"])
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "python sender failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn python_sdk_over_grpc_and_http_is_counted_exactly() {
    let Some(python) = otel_python() else { return };
    let collector = Collector::start();
    send_with_python(&python, "grpc", &collector.grpc_url(), 40);
    send_with_python(&python, "http", &collector.http_url(""), 25);

    let text = collector.metrics_text().await;
    let accepted = |protocol: &str| {
        common::series_value(
            &text,
            &format!("tracemap_receiver_accepted_spans_total{{protocol=\"{protocol}\"}}"),
        )
    };
    assert_eq!(accepted("grpc"), 40.0 * 3.0);
    assert_eq!(accepted("http"), 25.0 * 3.0);
    assert_eq!(
        common::series_value(
            &text,
            "tracemap_receiver_rejected_spans_total{protocol=\"grpc\",reason=\"invalid_trace_id\"}"
        ),
        0.0
    );
}
