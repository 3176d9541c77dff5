//! OTLP/HTTP against the real binary: encodings, compression, bad input.

use crate::support as common;

use std::io::Write as _;

use common::{Collector, request, spans};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;

const ACCEPTED_HTTP: &str = "tracemap_receiver_accepted_spans_total{protocol=\"http\"}";

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Hand-built OTLP JSON with `n` spans, ids in hex, enums as names and int64 as strings.
fn json_body(n: usize, trace_seed: u64) -> String {
    let spans: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"traceId":"{:032x}","spanId":"{:016x}","name":"GET /","kind":"SPAN_KIND_SERVER",
                   "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000001000000",
                   "attributes":[{{"key":"http.response.status_code","value":{{"intValue":"200"}}}}],
                   "status":{{"code":"STATUS_CODE_UNSET"}}}}"#,
                trace_seed as u128 * 1000 + i as u128 + 1,
                i + 1
            )
        })
        .collect();
    format!(
        r#"{{"resourceSpans":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"json-svc"}}}}]}},
            "scopeSpans":[{{"scope":{{"name":"manual"}},"spans":[{}]}}]}}]}}"#,
        spans.join(",")
    )
}

async fn post(
    collector: &Collector,
    content_type: &str,
    encoding: Option<&str>,
    body: Vec<u8>,
) -> reqwest::Response {
    let mut req = reqwest::Client::new()
        .post(collector.http_url("/v1/traces"))
        .header("content-type", content_type)
        .body(body);
    if let Some(encoding) = encoding {
        req = req.header("content-encoding", encoding);
    }
    req.send().await.expect("post /v1/traces")
}

#[tokio::test]
async fn json_protobuf_and_gzip_are_accepted_and_counted_exactly() {
    let collector = Collector::start();

    let resp = post(
        &collector,
        "application/json",
        None,
        json_body(7, 1).into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert_eq!(resp.text().await.unwrap(), "{}");

    let gz = gzip(json_body(5, 2).as_bytes());
    let resp = post(
        &collector,
        "application/json; charset=utf-8",
        Some("gzip"),
        gz,
    )
    .await;
    assert_eq!(resp.status(), 200);

    let proto = request("proto-svc", spans(11, 3)).encode_to_vec();
    let resp = post(&collector, "application/x-protobuf", None, proto.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/x-protobuf");
    let decoded = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(decoded.partial_success, None);

    let resp = post(
        &collector,
        "application/x-protobuf",
        Some("gzip"),
        gzip(&proto),
    )
    .await;
    assert_eq!(resp.status(), 200);

    assert_eq!(
        collector.metric(ACCEPTED_HTTP).await,
        7.0 + 5.0 + 11.0 + 11.0
    );
}

#[tokio::test]
async fn invalid_ids_are_reported_through_partial_success() {
    let collector = Collector::start();
    let mut batch = spans(4, 1);
    batch[1].trace_id = vec![0; 16];
    batch[2].span_id = vec![1, 2, 3];
    let resp = post(
        &collector,
        "application/x-protobuf",
        None,
        request("svc", batch).encode_to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let body = ExportTraceServiceResponse::decode(resp.bytes().await.unwrap()).unwrap();
    let partial = body.partial_success.expect("partial_success set");
    assert_eq!(partial.rejected_spans, 2);
    assert!(
        partial
            .error_message
            .contains("invalid trace_id: all-zero id"),
        "{}",
        partial.error_message
    );

    let json = json_body(3, 9).replacen("\"spanId\":\"0000000000000001\"", "\"spanId\":\"zz\"", 1);
    let resp = post(&collector, "application/json", None, json.into_bytes()).await;
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["partialSuccess"]["rejectedSpans"], "1");

    let text = collector.metrics_text().await;
    assert_eq!(common::series_value(&text, ACCEPTED_HTTP), 2.0 + 2.0);
    let rejected = |reason: &str| {
        common::series_value(
            &text,
            &format!(
                "tracemap_receiver_rejected_spans_total{{protocol=\"http\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert_eq!(rejected("invalid_trace_id"), 1.0);
    assert_eq!(rejected("invalid_span_id"), 2.0);
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_good_data_still_flows() {
    let collector = Collector::start_with_config(
        "receivers:\n  otlp:\n    http:\n      max_request_body_bytes: 65536\n",
    );

    // Malformed protobuf: 400 with a google.rpc.Status body.
    let resp = post(
        &collector,
        "application/x-protobuf",
        None,
        b"\x0a\xff\xff\xff\xff\x0f".to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body = resp.bytes().await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("invalid OTLP protobuf"));

    // Malformed JSON: 400 with a JSON status naming the problem.
    let resp = post(
        &collector,
        "application/json",
        None,
        b"{\"resourceSpans\": [".to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["code"], 3);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid OTLP JSON"),
        "{body}"
    );

    // Wrong content type: 415.
    let resp = post(&collector, "text/plain", None, b"hello".to_vec()).await;
    assert_eq!(resp.status(), 415);
    assert!(
        resp.text()
            .await
            .unwrap()
            .contains("unsupported content type")
    );

    // Unsupported content encoding: 415.
    let resp = post(&collector, "application/json", Some("br"), b"{}".to_vec()).await;
    assert_eq!(resp.status(), 415);

    // Oversize, plain and as a gzip bomb: 413.
    let big = request("svc", spans(2000, 5)).encode_to_vec();
    assert!(big.len() > 65536);
    let resp = post(&collector, "application/x-protobuf", None, big.clone()).await;
    assert_eq!(resp.status(), 413);
    let bomb = gzip(&vec![b' '; 10 * 1024 * 1024]);
    let resp = post(&collector, "application/json", Some("gzip"), bomb).await;
    assert_eq!(resp.status(), 413);

    // Corrupt gzip: 400.
    let resp = post(
        &collector,
        "application/json",
        Some("gzip"),
        b"not gzip".to_vec(),
    )
    .await;
    assert_eq!(resp.status(), 400);

    // Empty requests: accepted, nothing counted.
    let resp = post(&collector, "application/x-protobuf", None, Vec::new()).await;
    assert_eq!(resp.status(), 200);
    let resp = post(&collector, "application/json", None, b"{}".to_vec()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(collector.metric(ACCEPTED_HTTP).await, 0.0);

    // Wrong method on the path.
    let resp = reqwest::get(collector.http_url("/v1/traces"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);

    // Still healthy and accepting good data.
    let resp = post(
        &collector,
        "application/json",
        None,
        json_body(3, 7).into_bytes(),
    )
    .await;
    assert_eq!(resp.status(), 200);
    let text = collector.metrics_text().await;
    assert_eq!(common::series_value(&text, ACCEPTED_HTTP), 3.0);
    let rejected = |reason: &str| {
        common::series_value(
            &text,
            &format!(
                "tracemap_receiver_rejected_requests_total{{protocol=\"http\",reason=\"{reason}\"}}"
            ),
        )
    };
    assert_eq!(rejected("malformed"), 3.0);
    assert_eq!(rejected("unsupported_media_type"), 1.0);
    assert_eq!(rejected("unsupported_encoding"), 1.0);
    assert_eq!(rejected("too_large"), 2.0);
}

#[tokio::test]
async fn health_and_readiness() {
    let collector = Collector::start();
    let resp = reqwest::get(collector.api_url("/healthz")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = reqwest::get(collector.api_url("/readyz")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let resp = reqwest::get(collector.api_url("/metrics")).await.unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("# TYPE tracemap_pipeline_queue_capacity gauge"),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
}
