//! Delivery: batches from the shared queue to PutTraceSegments, with
//! bounded concurrency and retries.
//!
//! The SDK's own retries are off, so every re-send is ours and counted
//! (`tracemap_exporter_retries_total`): a throttle, a 5xx, a timeout or a
//! connection failure re-sends the whole batch, and documents X-Ray
//! returns in `UnprocessedTraceSegments` are re-sent alone, after an
//! exponential back-off with jitter, at most `max_retries` times. Delivery
//! is at least once: a call that times out after X-Ray stored it is sent again.

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_xray::error::{DisplayErrorContext, SdkError};
use aws_sdk_xray::operation::put_trace_segments::PutTraceSegmentsError;
use bytes::Bytes;
use tokio::task::{JoinError, JoinSet};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::{Batch, Document, EXPORTER, SegmentQueue, XrayConfig, XrayError, span_count};
use crate::exporter::aws::{RetryPolicy, WarnLimiter};
use crate::exporter::reason;
use crate::model::SpanId;

/// A document X-Ray did not store, as `UnprocessedTraceSegments` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unprocessed {
    /// The segment id.
    pub id: String,
    /// X-Ray's error code, if given.
    pub error_code: Option<String>,
    /// X-Ray's message, if given.
    pub message: Option<String>,
}

/// One PutTraceSegments call; the SDK in production, fakes in unit tests.
pub trait PutSegments: Send + Sync + 'static {
    /// Sends `documents` (at most 50) in one call; returns what X-Ray left
    /// unprocessed, or why the whole call failed.
    fn put(
        &self,
        documents: &[Document],
    ) -> impl Future<Output = Result<Vec<Unprocessed>, XrayError>> + Send;
}

/// PutTraceSegments through `aws-sdk-xray`.
#[derive(Debug, Clone)]
pub struct SdkClient {
    client: aws_sdk_xray::Client,
    region: String,
}

impl SdkClient {
    /// Builds the client from the default credential and region chains,
    /// overridden by `region`, `endpoint` and `role_arn` when set.
    pub async fn connect(config: &XrayConfig) -> Result<Self, XrayError> {
        let loaded = config
            .aws_target()
            .load()
            .await
            .ok_or(XrayError::NoRegion)?;
        let mut builder = aws_sdk_xray::config::Builder::from(&loaded.shared);
        if let Some(role) = loaded.role {
            builder = builder.credentials_provider(role);
        }
        Ok(Self {
            client: aws_sdk_xray::Client::from_conf(builder.build()),
            region: loaded.region,
        })
    }

    /// The region calls go to.
    pub fn region(&self) -> &str {
        &self.region
    }
}

impl PutSegments for SdkClient {
    async fn put(&self, documents: &[Document]) -> Result<Vec<Unprocessed>, XrayError> {
        // The SDK's JSON writer escapes documents byte by byte; here the
        // body joins documents translation already wrote escaped, and is
        // swapped in before signing, so the signature covers it (tests/xray.rs
        // checks). Endpoint, credentials, signing, transport and errors stay
        // the SDK's.
        let body = request_body(documents);
        let length = body.len().to_string();
        let output = self
            .client
            .put_trace_segments()
            .set_trace_segment_documents(Some(Vec::new()))
            .customize()
            .mutate_request(move |request| {
                request
                    .headers_mut()
                    .insert("content-length", length.clone());
                *request.body_mut() = body.clone().into();
            })
            .send()
            .await
            .map_err(classify)?;
        Ok(output
            .unprocessed_trace_segments()
            .iter()
            .map(|u| Unprocessed {
                id: u.id().unwrap_or_default().to_owned(),
                error_code: u.error_code().map(str::to_owned),
                message: u.message().map(str::to_owned),
            })
            .collect())
    }
}

/// `{"TraceSegmentDocuments":["…","…"]}`: each document as a JSON string.
fn request_body(documents: &[Document]) -> Bytes {
    const HEAD: &[u8] = b"{\"TraceSegmentDocuments\":[";
    let size: usize = documents.iter().map(|d| d.escaped.len() + 3).sum();
    let mut body = Vec::with_capacity(HEAD.len() + size + 2);
    body.extend_from_slice(HEAD);
    for (i, document) in documents.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'"');
        body.extend_from_slice(&document.escaped);
        body.push(b'"');
    }
    body.extend_from_slice(b"]}");
    Bytes::from(body)
}

/// Whether a failed call may succeed if repeated: throttling (429 or
/// `ThrottledException`), server errors, timeouts and connection failures.
fn classify(err: SdkError<PutTraceSegmentsError>) -> XrayError {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let retryable_status = status.is_some_and(|s| s == 429 || s >= 500);
    let retryable = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) => true,
        SdkError::ServiceError(service) => {
            service.err().is_throttled_exception() || retryable_status
        }
        SdkError::ResponseError(_) => retryable_status,
        _ => false,
    };
    XrayError::Put {
        retryable,
        status,
        message: DisplayErrorContext(&err).to_string(),
    }
}

/// The sender task: takes batches off the queue and runs the calls.
pub(crate) struct Sender<C> {
    client: Arc<C>,
    queue: Arc<SegmentQueue>,
    batch_size: usize,
    flush_interval: Duration,
    max_concurrency: usize,
    retry: RetryPolicy,
    warn: Arc<WarnLimiter>,
}

impl<C: PutSegments> Sender<C> {
    pub(crate) fn new(config: &XrayConfig, client: C, queue: Arc<SegmentQueue>) -> Self {
        Self {
            client: Arc::new(client),
            queue,
            batch_size: config.batch_size,
            flush_interval: config.flush_interval,
            max_concurrency: config.max_concurrency,
            retry: config.retry_policy(),
            warn: Arc::new(WarnLimiter::new(Duration::from_secs(30))),
        }
    }

    /// Sends full batches as they fill and everything queued every
    /// `flush_interval`; after `stop`, sends everything queued and waits for
    /// the calls in flight. Calls live in a `JoinSet`, so aborting this task
    /// aborts them too.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut calls = JoinSet::new();
        let mut ticker = tokio::time::interval(self.flush_interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        ticker.tick().await; // the first tick is immediate
        loop {
            let flush_all = tokio::select! {
                biased;
                () = stop.cancelled() => break,
                Some(joined) = calls.join_next(), if !calls.is_empty() => {
                    report_panic(joined);
                    continue;
                }
                () = self.queue.full_batch() => false,
                _ = ticker.tick() => true,
            };
            self.dispatch(&mut calls, flush_all, &stop).await;
        }
        // A disk backlog behind a failing endpoint stays for the next start;
        // memory (or a healthy endpoint) is sent now.
        if !self.queue.is_durable() || self.queue.is_healthy() {
            self.dispatch(&mut calls, true, &stop).await;
        }
        while let Some(joined) = calls.join_next().await {
            report_panic(joined);
        }
    }

    /// Starts calls for full batches, or for everything queued when
    /// `flush_all`, waiting for a free slot when `max_concurrency` are in
    /// flight (meanwhile the queue fills: receivers are held back, or the
    /// oldest documents dropped).
    async fn dispatch(&self, calls: &mut JoinSet<()>, flush_all: bool, stop: &CancellationToken) {
        let min = if flush_all { 1 } else { self.batch_size };
        loop {
            while calls.len() >= self.max_concurrency {
                if let Some(joined) = calls.join_next().await {
                    report_panic(joined);
                }
            }
            if stop.is_cancelled() && self.queue.is_durable() && !self.queue.is_healthy() {
                // The disk backlog waits for the next start.
                return;
            }
            let Some(batch) = self.queue.take(min, self.batch_size) else {
                return;
            };
            calls.spawn(send_batch(
                self.client.clone(),
                batch,
                self.retry,
                self.queue.clone(),
                self.warn.clone(),
                stop.clone(),
            ));
        }
    }
}

fn report_panic(joined: Result<(), JoinError>) {
    if let Err(err) = joined
        && err.is_panic()
    {
        tracing::error!(exporter = EXPORTER, error = %err, "x-ray call panicked");
    }
}

/// One batch until every document is sent or given up: unprocessed
/// documents and retryable failures are re-sent after a back-off. A batch
/// from the disk queue is never given up on a retryable failure: it waits
/// out the outage (on disk, not in memory, while it lasts), and a shutdown
/// meanwhile leaves it there for the next start.
async fn send_batch<C: PutSegments>(
    client: Arc<C>,
    mut batch: Batch,
    retry: RetryPolicy,
    queue: Arc<SegmentQueue>,
    warn: Arc<WarnLimiter>,
    stop: CancellationToken,
) {
    let counters = queue.counters().clone();
    let durable = batch.ticket.is_some();
    let mut pending = std::mem::take(&mut batch.docs);
    let mut retries = 0u32;
    loop {
        let why = match client.put(&pending).await {
            Ok(unprocessed) => {
                let before = span_count(&pending);
                if unprocessed.is_empty() {
                    pending.clear();
                } else {
                    let ids: Vec<SpanId> = unprocessed
                        .iter()
                        .filter_map(|u| SpanId::from_hex(&u.id).ok())
                        .collect();
                    pending.retain(|d| ids.contains(&d.id));
                }
                let accepted = before - span_count(&pending);
                counters.sent.inc_by(accepted);
                queue.settle(accepted, &batch);
                queue.set_healthy(true);
                if pending.is_empty() {
                    queue.finish(batch);
                    return;
                }
                let first = &unprocessed[0];
                format!(
                    "{} segments unprocessed, first {}: {} {}",
                    pending.len(),
                    first.id,
                    first.error_code.as_deref().unwrap_or("-"),
                    first.message.as_deref().unwrap_or("")
                )
            }
            Err(err) if err.is_retryable() => {
                queue.set_healthy(false);
                err.to_string()
            }
            Err(err) => {
                queue.set_healthy(false);
                give_up(
                    &pending,
                    &batch,
                    &queue,
                    &warn,
                    &err.to_string(),
                    reason::REJECTED,
                );
                queue.finish(batch);
                return;
            }
        };
        if durable && stop.is_cancelled() {
            // Safe on disk: sent again after the restart.
            return;
        }
        if retries >= retry.max_retries && !durable {
            give_up(
                &pending,
                &batch,
                &queue,
                &warn,
                &why,
                reason::RETRIES_EXHAUSTED,
            );
            return;
        }
        retries += 1;
        tracing::debug!(exporter = EXPORTER, retry = retries, reason = %why, "x-ray retry");
        counters.retries.inc_by(span_count(&pending));
        tokio::time::sleep(retry.backoff.delay(retries, None)).await;
        if queue.is_abandoned(&batch) {
            queue.drop_abandoned(span_count(&pending), batch);
            return;
        }
    }
}

fn give_up(
    pending: &[Document],
    batch: &Batch,
    queue: &SegmentQueue,
    warn: &WarnLimiter,
    why: &str,
    label: &'static str,
) {
    let counters = queue.counters();
    let spans = span_count(pending);
    match label {
        reason::REJECTED => counters.failed_rejected.inc_by(spans),
        _ => counters.failed_retries_exhausted.inc_by(spans),
    };
    queue.settle(spans, batch);
    if warn.allow() {
        tracing::warn!(
            exporter = EXPORTER,
            segments = pending.len(),
            spans,
            error = why,
            "x-ray segments failed ({label}); counted in tracemap_exporter_failed_total, further failures within 30s only counted"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use prometheus_client::registry::Registry;
    use tokio::time::Instant;

    use super::*;
    use crate::exporter::xray::XrayExporter;
    use crate::exporter::{ExporterCounters, ExporterMetrics};

    use crate::exporter::xray::tests::doc;

    fn id_of(doc: &Document) -> u64 {
        u64::from_be_bytes(doc.id.to_bytes())
    }

    /// What a fake call answers, in order; after the script, success.
    #[derive(Debug, Clone)]
    enum Answer {
        Ok,
        /// Leaves these ids unprocessed.
        Unprocessed(Vec<u64>),
        Throttled,
        Invalid,
    }

    #[derive(Default)]
    struct Fake {
        script: Mutex<Vec<Answer>>,
        /// Every call: (time since start, ids sent).
        calls: Mutex<Vec<(Duration, Vec<u64>)>>,
        accepted: Mutex<Vec<u64>>,
        started: Mutex<Option<Instant>>,
    }

    impl Fake {
        fn new(script: Vec<Answer>) -> Arc<Self> {
            Arc::new(Self {
                script: Mutex::new(script),
                started: Mutex::new(Some(Instant::now())),
                ..Self::default()
            })
        }
    }

    impl PutSegments for Arc<Fake> {
        async fn put(&self, documents: &[Document]) -> Result<Vec<Unprocessed>, XrayError> {
            let ids: Vec<u64> = documents.iter().map(id_of).collect();
            let at = self.started.lock().unwrap().unwrap().elapsed();
            self.calls.lock().unwrap().push((at, ids.clone()));
            let answer = {
                let mut script = self.script.lock().unwrap();
                if script.is_empty() {
                    Answer::Ok
                } else {
                    script.remove(0)
                }
            };
            let error = |retryable, status| XrayError::Put {
                retryable,
                status: Some(status),
                message: "fake".into(),
            };
            match answer {
                Answer::Ok => {
                    self.accepted.lock().unwrap().extend(&ids);
                    Ok(vec![])
                }
                Answer::Unprocessed(left) => {
                    let accepted = ids.iter().filter(|id| !left.contains(id));
                    self.accepted.lock().unwrap().extend(accepted);
                    Ok(left
                        .iter()
                        .map(|id| Unprocessed {
                            id: format!("{id:016x}"),
                            error_code: Some("ThrottledException".into()),
                            message: None,
                        })
                        .collect())
                }
                Answer::Throttled => Err(error(true, 429)),
                Answer::Invalid => Err(error(false, 400)),
            }
        }
    }

    fn config() -> XrayConfig {
        XrayConfig {
            enabled: true,
            batch_size: 10,
            flush_interval: Duration::from_secs(1),
            max_concurrency: 2,
            ..XrayConfig::default()
        }
    }

    fn start(config: &XrayConfig, fake: &Arc<Fake>) -> (XrayExporter, ExporterCounters) {
        let metrics = ExporterMetrics::register(&mut Registry::default());
        let exporter = XrayExporter::with_client(config, fake.clone(), &metrics, None);
        (exporter, metrics.exporter(EXPORTER))
    }

    fn push(exporter: &XrayExporter, ids: impl IntoIterator<Item = u64>) {
        exporter.queue.push(&mut ids.into_iter().map(doc).collect());
    }

    /// Lets the sender and its calls run at the current (paused) instant.
    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn full_batches_go_at_once_partial_ones_on_the_interval() {
        let fake = Fake::new(vec![]);
        let (exporter, _) = start(&config(), &fake);
        settle().await;
        push(&exporter, 1..=25);
        settle().await;
        {
            let calls = fake.calls.lock().unwrap();
            let sizes: Vec<usize> = calls.iter().map(|(_, ids)| ids.len()).collect();
            assert_eq!(sizes, [10, 10], "two full batches at once, 5 left waiting");
            assert!(calls.iter().all(|(at, _)| *at == Duration::ZERO));
        }
        tokio::time::advance(Duration::from_millis(999)).await;
        settle().await;
        assert_eq!(fake.calls.lock().unwrap().len(), 2);
        tokio::time::advance(Duration::from_millis(1)).await;
        settle().await;
        {
            let calls = fake.calls.lock().unwrap();
            assert_eq!(calls.len(), 3);
            assert_eq!(calls[2], (Duration::from_secs(1), (21..=25).collect()));
        }
        let report = exporter
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!(report.sent, 25);
        assert_eq!(report.lost_at_shutdown, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_flushes_partial_batches() {
        let fake = Fake::new(vec![]);
        let (exporter, _) = start(&config(), &fake);
        push(&exporter, 1..=3);
        let report = exporter
            .shutdown(Instant::now() + Duration::from_secs(5))
            .await;
        assert_eq!(report.sent, 3);
        assert_eq!(*fake.accepted.lock().unwrap(), [1, 2, 3]);
    }

    #[tokio::test(start_paused = true)]
    async fn throttles_and_unprocessed_are_retried_with_backoff() {
        let fake = Fake::new(vec![
            Answer::Throttled,
            Answer::Throttled,
            Answer::Unprocessed(vec![3, 7]),
        ]);
        let config = config();
        let (exporter, counters) = start(&config, &fake);
        push(&exporter, 1..=10);
        let report = exporter
            .shutdown(Instant::now() + Duration::from_secs(30))
            .await;
        let mut accepted = fake.accepted.lock().unwrap().clone();
        accepted.sort_unstable();
        assert_eq!(accepted, (1..=10).collect::<Vec<_>>(), "each exactly once");
        assert_eq!(report.sent, 10);
        assert_eq!(report.failed, 0);
        let calls = fake.calls.lock().unwrap();
        assert_eq!(calls.len(), 4);
        assert_eq!(calls[3].1, [3, 7], "only the unprocessed are re-sent");
        // Back-off k waits between half and all of 100ms · 2^(k-1).
        for (k, pair) in calls.windows(2).enumerate() {
            let waited = pair[1].0 - pair[0].0;
            let ceiling = config.retry_initial_backoff * (1 << k);
            assert!(
                waited >= ceiling / 2 && waited <= ceiling,
                "retry {}: waited {waited:?}",
                k + 1
            );
        }
        // Two whole batches of 10, then the 2 unprocessed.
        assert_eq!(counters.retries.get(), 22);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_and_invalid_requests_fail_at_once() {
        let config = XrayConfig {
            max_retries: 2,
            ..config()
        };
        let fake = Fake::new(vec![Answer::Throttled; 3]);
        let (exporter, _) = start(&config, &fake);
        push(&exporter, 1..=4);
        let report = exporter
            .shutdown(Instant::now() + Duration::from_secs(30))
            .await;
        assert_eq!(fake.calls.lock().unwrap().len(), 3, "one try, two retries");
        assert_eq!((report.sent, report.failed), (0, 4));

        let fake = Fake::new(vec![Answer::Invalid]);
        let (exporter, _) = start(&config, &fake);
        push(&exporter, 1..=4);
        let report = exporter
            .shutdown(Instant::now() + Duration::from_secs(30))
            .await;
        assert_eq!(fake.calls.lock().unwrap().len(), 1, "no retry of a 400");
        assert_eq!((report.sent, report.failed), (0, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_cuts_retries_and_counts_the_loss() {
        let config = XrayConfig {
            max_concurrency: 1,
            max_retries: 100,
            ..config()
        };
        let fake = Fake::new(vec![Answer::Throttled; 1000]);
        let (exporter, _) = start(&config, &fake);
        push(&exporter, 1..=25);
        let report = exporter
            .shutdown(Instant::now() + Duration::from_secs(3))
            .await;
        assert_eq!(report.sent, 0);
        assert_eq!(report.failed, 0);
        assert_eq!(report.lost_at_shutdown, 25, "in flight and queued");
    }

    #[test]
    fn request_body_carries_each_document_verbatim() {
        let plain = [
            r#"{"name":"a \"q\" \\ é\n","id":"0101010101010101"}"#.to_owned(),
            format!("{{\"id\":\"{:016x}\"}}", 2),
        ];
        // Escaped as translate_escaped writes them: serde_json's string body.
        let documents: Vec<Document> = plain
            .iter()
            .zip(1u64..)
            .map(|(json, id)| {
                let quoted = serde_json::to_string(json).unwrap();
                Document {
                    id: SpanId::from_bytes(id.to_be_bytes()),
                    spans: 1,
                    escaped: Bytes::copy_from_slice(&quoted.as_bytes()[1..quoted.len() - 1]),
                }
            })
            .collect();
        assert_eq!(documents[1].escaped, doc(2).escaped);
        let body: serde_json::Value = serde_json::from_slice(&request_body(&documents)).unwrap();
        let sent: Vec<&str> = body["TraceSegmentDocuments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_str().unwrap())
            .collect();
        assert_eq!(sent, plain);
        assert_eq!(body.as_object().unwrap().len(), 1);
    }
}
