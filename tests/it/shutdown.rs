//! SIGTERM during traffic: receivers stop, queues drain, exit 0, and every
//! acknowledged span was processed.

use crate::support as common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Collector, request, spans};
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_traffic_drains_and_exits_cleanly() {
    let mut collector = Collector::start();
    let acked = Arc::new(AtomicU64::new(0));
    let url = collector.http_url("/v1/traces");
    let grpc_url = collector.grpc_url();

    let mut senders = Vec::new();
    for sender in 0..4u128 {
        let acked = acked.clone();
        let url = url.clone();
        let grpc_url = grpc_url.clone();
        senders.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut grpc = opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(grpc_url).await.unwrap();
            let stop_at = Instant::now() + Duration::from_secs(10);
            for round in 0..10_000u128 {
                if Instant::now() > stop_at {
                    break;
                }
                let req = request("drain", spans(200, sender * 100_000 + round + 1));
                let ok = if sender % 2 == 0 {
                    let resp = http
                        .post(&url)
                        .header("content-type", "application/x-protobuf")
                        .body(req.encode_to_vec())
                        .send()
                        .await;
                    matches!(resp, Ok(r) if r.status() == 200)
                } else {
                    grpc.export(req).await.is_ok()
                };
                if ok {
                    acked.fetch_add(200, Ordering::SeqCst);
                } else if acked.load(Ordering::SeqCst) > 0 {
                    // The collector stopped taking traffic.
                    break;
                }
            }
        }));
    }
    // Let traffic flow, then terminate mid-stream.
    let wait_start = Instant::now();
    while acked.load(Ordering::SeqCst) < 20_000 && wait_start.elapsed() < Duration::from_secs(8) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    collector.sigterm();
    for sender in senders {
        sender.await.unwrap();
    }
    let status = collector.wait_exit(Duration::from_secs(25));
    assert!(status.success(), "exit status {status:?}");

    let acked = acked.load(Ordering::SeqCst);
    assert!(acked > 0);
    let logs = collector.logs();
    let drained = logs
        .iter()
        .find(|l| l["message"] == "pipeline drained, exiting")
        .unwrap_or_else(|| panic!("no drain log in {logs:?}"));
    assert_eq!(
        drained["processed_spans"].as_u64(),
        Some(acked),
        "every acknowledged span was processed"
    );
    assert!(
        logs.iter()
            .any(|l| l["message"] == "shutting down" && l["signal"] == "SIGTERM")
    );
}
