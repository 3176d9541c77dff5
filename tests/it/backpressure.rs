//! A full pipeline refuses with UNAVAILABLE / 503 + Retry-After, counts the
//! refusal, and recovers once the queue drains.
//!
//! The app runs in-process with its real receivers on loopback and real
//! gRPC/HTTP clients; only the consumer is a test one, a gate that holds
//! the single worker so the queue fills deterministically (a racing load
//! test cannot promise that the one-slot queue is ever full).

use crate::support as common;

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use common::{request, spans};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tracemap::app::App;
use tracemap::config::Config;
use tracemap::model::Span;
use tracemap::pipeline::{ConsumerFactory, SpanConsumer};

#[derive(Default)]
struct Gate {
    open: Mutex<bool>,
    changed: Condvar,
}

impl Gate {
    fn open(&self) {
        *self.open.lock().unwrap() = true;
        self.changed.notify_all();
    }
}

struct GatedConsumer(Arc<Gate>);

impl SpanConsumer for GatedConsumer {
    fn consume(&mut self, _spans: &[Span]) {
        let mut open = self.0.open.lock().unwrap();
        while !*open {
            open = self.0.changed.wait(open).unwrap();
        }
    }
}

async fn metric(api: &str, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{api}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    common::series_value(&text, series)
}

async fn wait_for_depth(api: &str, depth: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(api, "tracemap_pipeline_queue_depth").await != depth {
        assert!(
            Instant::now() < deadline,
            "queue depth never reached {depth}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_queue_refuses_counts_and_recovers() {
    let data_dir = tempfile::tempdir().unwrap();
    let mut config = Config::from_yaml(
        "pipeline: {workers: 1, queue_capacity: 1, enqueue_timeout: 50ms}\n\
         receivers: {otlp: {grpc: {listen: '127.0.0.1:0'}, http: {listen: '127.0.0.1:0'}}}\n\
         api: {listen: '127.0.0.1:0'}\n",
    )
    .unwrap();
    config.storage.data_dir = data_dir.path().to_owned();
    let config = config.validate().unwrap();
    let gate = Arc::new(Gate::default());
    let factory_gate = gate.clone();
    let factory: Box<ConsumerFactory> = Box::new(move |_shard| {
        vec![Box::new(GatedConsumer(factory_gate.clone())) as Box<dyn SpanConsumer>]
    });
    let app = App::start(&config, &factory).await.unwrap();
    let api = app.addrs.api.to_string();
    let http_url = format!("http://{}/v1/traces", app.addrs.http.unwrap());
    let http = reqwest::Client::new();
    let post = |batch: Vec<tracemap::otlp::kit::Span>| {
        http.post(&http_url)
            .header("content-type", "application/x-protobuf")
            .body(request("gated", batch).encode_to_vec())
            .send()
    };

    // The worker takes the first batch and blocks on the gate; the second fills the queue.
    assert_eq!(post(spans(10, 1)).await.unwrap().status(), 200);
    wait_for_depth(&api, 0.0).await;
    assert_eq!(post(spans(20, 2)).await.unwrap().status(), 200);
    wait_for_depth(&api, 1.0).await;

    // Full: HTTP gets 503 with Retry-After, gRPC gets UNAVAILABLE with RetryInfo.
    let resp = post(spans(30, 3)).await.unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert!(resp.text().await.unwrap().contains("queue is full"));
    let mut grpc = TraceServiceClient::connect(format!("http://{}", app.addrs.grpc.unwrap()))
        .await
        .unwrap();
    let status = grpc
        .export(request("gated", spans(40, 4)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable);
    let details = tonic_types::StatusExt::get_error_details(&status);
    assert_eq!(
        details.retry_info().and_then(|r| r.retry_delay),
        Some(Duration::from_secs(1))
    );
    let refused = |protocol: &str| {
        format!(
            "tracemap_receiver_refused_spans_total{{protocol=\"{protocol}\",reason=\"queue_full\"}}"
        )
    };
    assert_eq!(metric(&api, &refused("http")).await, 30.0);
    assert_eq!(metric(&api, &refused("grpc")).await, 40.0);
    assert_eq!(metric(&api, "tracemap_pipeline_queued_spans").await, 20.0);

    // Recovery once the consumer catches up.
    gate.open();
    wait_for_depth(&api, 0.0).await;
    assert_eq!(post(spans(5, 5)).await.unwrap().status(), 200);
    grpc.export(request("gated", spans(6, 6))).await.unwrap();

    let report = app
        .shutdown(tokio::time::Instant::now() + Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(report.processed_spans, 10 + 20 + 5 + 6);
}
