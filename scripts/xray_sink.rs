//! A PutTraceSegments sink for `scripts/bench.sh`: accepts every call,
//! counts the segment documents and the spans in them (a document's
//! segment or subsegment and every subsegment embedded in it), and
//! answers with nothing unprocessed.
//!
//! ```text
//! cargo run --release --example xray_sink -- [ADDR]   # default 127.0.0.1:0
//! ```
//!
//! Prints `listening on ADDR` once bound. `GET /count` answers
//! `{"requests": N, "segments": N, "spans": N, "bytes": N, "bad_requests": N}`. Bodies
//! labelled `Content-Encoding: gzip` are inflated only when they really are
//! gzip (rotel labels plain JSON so). One thread: the sink must not take
//! the CPU it measures.

use std::io::Read as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;

#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    segments: AtomicU64,
    spans: AtomicU64,
    bytes: AtomicU64,
    bad_requests: AtomicU64,
}

#[derive(Deserialize)]
struct PutTraceSegments {
    #[serde(rename = "TraceSegmentDocuments")]
    documents: Vec<String>,
}

/// A segment or subsegment: only what it embeds is read.
#[derive(Deserialize)]
struct Part {
    #[serde(default)]
    subsegments: Vec<Part>,
}

impl Part {
    fn spans(&self) -> u64 {
        1 + self.subsegments.iter().map(Part::spans).sum::<u64>()
    }
}

async fn put(
    State(counts): State<Arc<Counts>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    counts.requests.fetch_add(1, Ordering::Relaxed);
    counts.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
    let gzip_label = headers
        .get("content-encoding")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"gzip"));
    let inflated;
    let json: &[u8] = if gzip_label && body.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        if flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .is_err()
        {
            counts.bad_requests.fetch_add(1, Ordering::Relaxed);
            return (StatusCode::BAD_REQUEST, "bad gzip").into_response();
        }
        inflated = out;
        &inflated
    } else {
        &body
    };
    match serde_json::from_slice::<PutTraceSegments>(json) {
        Ok(put) => {
            let mut spans = 0;
            for document in &put.documents {
                match serde_json::from_str::<Part>(document) {
                    Ok(part) => spans += part.spans(),
                    Err(err) => {
                        counts.bad_requests.fetch_add(1, Ordering::Relaxed);
                        return (StatusCode::BAD_REQUEST, err.to_string()).into_response();
                    }
                }
            }
            counts
                .segments
                .fetch_add(put.documents.len() as u64, Ordering::Relaxed);
            counts.spans.fetch_add(spans, Ordering::Relaxed);
            (
                [("content-type", "application/json")],
                r#"{"UnprocessedTraceSegments":[]}"#,
            )
                .into_response()
        }
        Err(err) => {
            counts.bad_requests.fetch_add(1, Ordering::Relaxed);
            (StatusCode::BAD_REQUEST, err.to_string()).into_response()
        }
    }
}

async fn count(State(counts): State<Arc<Counts>>) -> impl IntoResponse {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    axum::Json(serde_json::json!({
        "requests": get(&counts.requests),
        "segments": get(&counts.segments),
        "spans": get(&counts.spans),
        "bytes": get(&counts.bytes),
        "bad_requests": get(&counts.bad_requests),
    }))
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("listening on {}", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        let app = axum::Router::new()
            .route("/count", axum::routing::get(count))
            .fallback(axum::routing::post(put))
            .with_state(counts);
        axum::serve(listener, app).await
    })
}
