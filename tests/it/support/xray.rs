//! X-Ray test helpers shared by the exporter and durability tests: spans
//! with known ids, sending them, waiting on metrics, reading segments back.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::Collector;

/// The X-Ray form of a W3C trace id.
pub fn xray_trace_id(hex: &str) -> String {
    format!("1-{}-{}", &hex[..8], &hex[8..])
}

/// A segment or subsegment as read back from X-Ray.
pub struct Part {
    pub json: Value,
    /// The id of the segment or subsegment it is embedded in, if it is.
    pub within: Option<String>,
}

/// Adds `doc` and the subsegments embedded in it, keyed by id.
pub fn parts(doc: Value, within: Option<String>, out: &mut HashMap<String, Part>) {
    let id = doc["id"].as_str().unwrap().to_owned();
    for sub in doc["subsegments"].as_array().into_iter().flatten() {
        parts(sub.clone(), Some(id.clone()), out);
    }
    out.insert(id, Part { json: doc, within });
}

/// `count` spans timed now, in traces of 5, with epoch-prefixed trace ids
/// (valid under every trace id policy); returns them with their hex ids.
pub fn fresh_spans(count: usize, seed: u64) -> (Vec<tracemap::otlp::kit::Span>, Vec<String>) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let start = now.as_nanos() as u64 - 5_000_000;
    let mut spans = Vec::new();
    let mut ids = Vec::new();
    for i in 0..count {
        let trace = (u128::from(now.as_secs() as u32) << 96)
            | (u128::from(seed) << 32)
            | (i / 5 + 1) as u128;
        let id = (seed << 32) | (i as u64 + 1);
        let mut span = super::span(trace, id, 2);
        span.start_time_unix_nano = start;
        span.end_time_unix_nano = start + 2_000_000;
        spans.push(span);
        ids.push(format!("{id:016x}"));
    }
    (spans, ids)
}

pub async fn send_http(collector: &Collector, spans: Vec<tracemap::otlp::kit::Span>) {
    super::post_spans(collector, "orders", spans).await;
}

/// Polls `/metrics` until `done` holds, at most 20 s.
pub async fn wait_metrics(
    collector: &Collector,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    wait_metrics_for(collector, what, Duration::from_secs(20), done).await
}

/// Polls `/metrics` until `done` holds, at most `timeout`.
pub async fn wait_metrics_for(
    collector: &Collector,
    what: &str,
    timeout: Duration,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = collector.metrics_text().await;
        if done(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The span ids in moto for `trace_ids` (hex W3C form), embedded
/// subsegments included; BatchGetTraces takes five ids a call.
pub async fn span_ids_in_moto(
    client: &aws_sdk_xray::Client,
    trace_ids: &[String],
) -> HashSet<String> {
    let mut found = HashSet::new();
    for chunk in trace_ids.chunks(5) {
        let out = client
            .batch_get_traces()
            .set_trace_ids(Some(chunk.iter().map(|t| xray_trace_id(t)).collect()))
            .send()
            .await
            .expect("BatchGetTraces");
        let mut docs = HashMap::new();
        for segment in out.traces().iter().flat_map(|t| t.segments()) {
            let doc: Value = serde_json::from_str(segment.document().unwrap()).unwrap();
            parts(doc, None, &mut docs);
        }
        found.extend(docs.into_keys());
    }
    found
}
