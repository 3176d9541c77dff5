//! Export of traces to AWS X-Ray.
//!
//! ```text
//!  pipeline workers (one XrayConsumer each)        sender task (client.rs)
//!  spans ─► nest + segment ─► Document ─► SegmentQueue ─► batches of ≤ 50 ─► PutTraceSegments
//!          (on the worker thread)   (one, bounded,   (size or interval,   (bounded concurrency,
//!                                    drops oldest)    shutdown flush)      retries with back-off)
//! ```
//!
//! A document is a segment, or a subsegment whose parent is not in the
//! same batch, with the subsegments below it embedded (`nest.rs`).
//! Counters count spans; the queue's bound counts documents.
//!
//! Translation runs on the worker that already holds the span, so the
//! request buffer its attributes borrow is read in place; only the owned
//! JSON document crosses to the sender. While calls succeed but the queue
//! is half full, its [`AdmissionGate`] makes receivers refuse new spans
//! (backpressure) rather than the queue dropping them.
//!
//! With `durability: disk` the queue is a [`DiskQueue`]: documents are
//! written before the worker returns (so before the client is answered),
//! batches are retried until X-Ray takes them, and a restart sends what
//! was not acknowledged. The gate then closes only when the disk budget is
//! nearly used up.

pub mod client;
pub mod config;
mod nest;
pub mod rules;
pub mod sampling;
pub mod segment;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::XrayConfig;
use segment::TranslateConfig;

use crate::exporter::disk::{DiskQueue, DiskSettings, Durable, Ticket};
use crate::exporter::queue::{BoundedQueue, Budget, Overflow, WarnOnce, Weighed};
use crate::exporter::{ExportReport, ExporterCounters, ExporterMetrics, join_by, reason};
use crate::model::{Span, SpanId};
use crate::pipeline::{AdmissionGate, SpanConsumer};
use crate::validate::Valid;

/// The `exporter` label value of this exporter's series.
pub const EXPORTER: &str = "xray";

/// Why the X-Ray exporter could not start or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum XrayError {
    /// Neither the config nor the SDK's default chain names a region.
    #[error("no aws region for the x-ray exporter: set exporters.xray.region or AWS_REGION")]
    NoRegion,
    /// `sampling.rules_file` cannot be read or used.
    #[error("exporters.xray.sampling.rules_file: {0}")]
    Rules(#[from] rules::RulesError),
    /// A PutTraceSegments call failed as a whole.
    #[error("PutTraceSegments failed{}: {message}", status.map(|s| format!(" with http {s}")).unwrap_or_default())]
    Put {
        /// Whether sending the same documents again may succeed
        /// (throttling, server errors, timeouts, connection failures).
        retryable: bool,
        /// HTTP status, when a response arrived.
        status: Option<u16>,
        /// The SDK's description, with its causes.
        message: String,
    },
}

impl XrayError {
    /// Whether sending the same documents again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Put {
                retryable: true,
                ..
            }
        )
    }
}

/// One translated span with the subsegments embedded in it, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The segment id (the outermost span's id), to match
    /// `UnprocessedTraceSegments`.
    pub id: SpanId,
    /// Spans in the document: the outermost and its embedded subsegments.
    pub spans: u32,
    /// The segment document escaped as the contents of a JSON string
    /// ([`segment::translate_escaped`]): the request body is these, quoted
    /// and joined.
    pub escaped: Bytes,
}

impl Weighed for Document {
    fn items(&self) -> u64 {
        u64::from(self.spans)
    }

    fn bytes(&self) -> usize {
        self.escaped.len() + std::mem::size_of::<Self>()
    }
}

/// The one queue between all workers and the sender: the exporters'
/// [`BoundedQueue`] in memory (drops oldest), or the [`DiskQueue`] with
/// that memory queue as its fallback when the disk fails; plus the
/// admission gate it regulates.
#[derive(Debug)]
pub(crate) struct SegmentQueue {
    docs: BoundedQueue<Document>,
    disk: Option<Arc<DiskQueue<Document>>>,
    /// The disk failed: new documents wait in memory (warned once).
    disk_failed: WarnOnce,
    counters: ExporterCounters,
    capacity: usize,
    /// Closed above half full while calls succeed (`backpressure`); with a
    /// disk queue, only when its budget is nearly used up.
    gate: Option<Arc<AdmissionGate>>,
    /// Whether the last call succeeded; after a failure the queue sheds
    /// instead of holding receivers back.
    healthy: AtomicBool,
}

/// Documents taken for one call, and the disk batch they came from.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) docs: Vec<Document>,
    /// Acknowledged once the batch is done; none for memory batches.
    pub(crate) ticket: Option<Ticket>,
}

impl SegmentQueue {
    pub(crate) fn new(
        capacity: usize,
        batch_size: usize,
        gate: Option<Arc<AdmissionGate>>,
        counters: ExporterCounters,
    ) -> Self {
        let budget = Budget::records(capacity);
        Self {
            docs: BoundedQueue::new(
                EXPORTER,
                budget,
                Overflow::DropOldest,
                counters.queue_depth.clone(),
                counters.queue_full.clone(),
            )
            .wake_at(batch_size),
            disk: None,
            disk_failed: WarnOnce::default(),
            counters,
            capacity,
            gate,
            healthy: AtomicBool::new(true),
        }
    }

    /// Keeps documents in `disk` first.
    pub(crate) fn with_disk(mut self, disk: Arc<DiskQueue<Document>>) -> Self {
        self.disk = Some(disk);
        self
    }

    /// Appends `docs` (emptying it): to the disk queue, written before this
    /// returns; else (or when the disk fails) to memory, dropping the
    /// oldest queued documents when there is no room.
    pub(crate) fn push(&self, docs: &mut Vec<Document>) {
        if docs.is_empty() {
            return;
        }
        if let Some(disk) = &self.disk {
            match disk.push(std::mem::take(docs)) {
                Ok(()) => {
                    self.regulate_disk(disk);
                    return;
                }
                Err((back, err)) => {
                    if self.disk_failed.first() {
                        tracing::error!(exporter = EXPORTER, error = %err,
                            "x-ray disk queue cannot be written; documents wait in memory until it can (tracemap_exporter_disk_errors_total)");
                    }
                    *docs = back;
                }
            }
        }
        self.docs
            .push_observed(docs.drain(..), |len| self.regulate(len));
    }

    /// Up to `max` documents from the head, if at least `min` (and one) are
    /// queued: the disk's first (they are older), then memory's.
    pub(crate) fn take(&self, min: usize, max: usize) -> Option<Batch> {
        if let Some(disk) = &self.disk
            && let Some((docs, ticket)) = disk.take(min, max)
        {
            self.regulate_disk(disk);
            return Some(Batch {
                docs,
                ticket: Some(ticket),
            });
        }
        let docs = self
            .docs
            .take_observed(min, max, |len| self.regulate(len))?;
        Some(Batch { docs, ticket: None })
    }

    /// Closes the gate at half full while calls succeed, opens it at three
    /// eighths (receivers waiting `enqueue_timeout` mostly get in) or after
    /// a failure. Called under the queue lock, so decisions follow the depth
    /// in order.
    fn regulate(&self, len: usize) {
        let Some(gate) = &self.gate else { return };
        if !self.healthy.load(Ordering::Relaxed) || len <= self.capacity * 3 / 8 {
            gate.open();
        } else if len >= self.capacity / 2 {
            gate.close();
        }
    }

    /// On disk the backlog may grow while X-Ray is down; receivers are held
    /// back only when nine tenths of the budget are used (open again below
    /// eight tenths), beyond it the oldest are dropped and counted.
    fn regulate_disk(&self, disk: &DiskQueue<Document>) {
        let Some(gate) = &self.gate else { return };
        let (bytes, budget) = (disk.bytes(), disk.budget());
        if bytes >= budget / 10 * 9 {
            gate.close();
        } else if bytes < budget / 10 * 8 {
            gate.open();
        }
    }

    /// Records whether the last call succeeded; a failure releases receivers.
    pub(crate) fn set_healthy(&self, healthy: bool) {
        if self.healthy.swap(healthy, Ordering::Relaxed) != healthy && self.disk.is_none() {
            self.docs.observe(|len| self.regulate(len));
        }
    }

    /// Whether the last call succeeded.
    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Spans queued or in flight in memory: what a shutdown now would
    /// lose (the disk queue keeps its own for the next start).
    fn pending_spans(&self) -> u64 {
        self.docs.pending_items()
    }

    /// Marks `spans` of a batch in flight as settled (sent, failed).
    pub(crate) fn settle(&self, spans: u64, batch: &Batch) {
        if batch.ticket.is_none() {
            self.docs.settle(spans);
        }
    }

    /// The batch is done: its disk records are reclaimed.
    pub(crate) fn finish(&self, batch: Batch) {
        if let (Some(disk), Some(ticket)) = (&self.disk, batch.ticket) {
            disk.ack(ticket);
        }
    }

    /// Whether `batch` came from disk records the budget has dropped
    /// since it was taken (its sender then stops retrying it).
    pub(crate) fn is_abandoned(&self, batch: &Batch) -> bool {
        match (&self.disk, &batch.ticket) {
            (Some(disk), Some(ticket)) => disk.is_abandoned(ticket),
            _ => false,
        }
    }

    /// Counts the `spans` left of an abandoned batch as dropped and ends it.
    pub(crate) fn drop_abandoned(&self, spans: u64, batch: Batch) {
        if let Some(disk) = &self.disk {
            disk.count_abandoned(spans);
        }
        self.finish(batch);
    }

    /// Whether batches come from disk: they are retried until delivered.
    pub(crate) fn is_durable(&self) -> bool {
        self.disk.is_some()
    }

    pub(crate) fn counters(&self) -> &ExporterCounters {
        &self.counters
    }

    /// Returns once a full batch may be waiting (a wake-up is never lost).
    pub(crate) async fn full_batch(&self) {
        match &self.disk {
            Some(disk) => tokio::select! {
                () = disk.ready() => {}
                () = self.docs.ready() => {}
            },
            None => self.docs.ready().await,
        }
    }

    /// Flushes the disk queue to stable storage, at shutdown.
    fn sync(&self) -> u64 {
        self.disk.as_ref().map_or(0, |disk| {
            disk.sync();
            disk.unacknowledged_items()
        })
    }
}

impl Durable for Document {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_bytes());
        out.extend_from_slice(&self.escaped);
    }

    fn decode(items: u32, mut payload: Bytes) -> Option<Self> {
        if payload.len() < 8 {
            return None;
        }
        let id = payload.split_to(8);
        Some(Self {
            id: SpanId::from_bytes(id[..].try_into().ok()?),
            spans: items,
            escaped: payload,
        })
    }
}

/// X-Ray takes trace ids of the last 30 days; a day of margin for clocks.
pub const MAX_DOCUMENT_AGE: Duration = Duration::from_secs(29 * 24 * 3600);

/// The spans in `docs`.
pub(crate) fn span_count<'a>(docs: impl IntoIterator<Item = &'a Document>) -> u64 {
    docs.into_iter().map(|d| u64::from(d.spans)).sum()
}

/// Translates one shard's spans and queues the documents; one per worker.
pub struct XrayConsumer {
    queue: Arc<SegmentQueue>,
    translate: Arc<TranslateConfig>,
    nesting: nest::Nesting,
    /// Reused between batches, so queueing allocates nothing per call.
    pending: Vec<Document>,
    /// Each document is written here, then copied into `chunk`: the
    /// writer (and its trimming, which rewrites) works on a `Vec`.
    scratch: Vec<u8>,
    /// Documents are slices of shared chunks: one allocation per
    /// [`CHUNK_BYTES`], not one per document freed on another thread, which
    /// kept the allocator handing pages back to the kernel and faulting
    /// them in again.
    chunk: BytesMut,
    /// Holds traces until they are decided; `None` sends every span.
    sampler: Option<sampling::Sampler>,
    /// Spans of kept traces, reused between calls.
    kept: Vec<Span>,
}

/// Room for about a hundred documents.
const CHUNK_BYTES: usize = 64 * 1024;

impl SpanConsumer for XrayConsumer {
    fn consume(&mut self, spans: &[Span]) {
        match &mut self.sampler {
            None => self.translate(spans),
            Some(sampler) => {
                sampler.offer(spans, &mut self.kept);
                self.translate_kept();
            }
        }
    }

    fn tick(&mut self) {
        if let Some(sampler) = &mut self.sampler {
            sampler.tick(&mut self.kept);
            self.translate_kept();
        }
    }

    fn flush(&mut self) {
        if let Some(sampler) = &mut self.sampler {
            sampler.flush(&mut self.kept);
            self.translate_kept();
        }
    }
}

impl XrayConsumer {
    fn translate_kept(&mut self) {
        if self.kept.is_empty() {
            return;
        }
        let kept = std::mem::take(&mut self.kept);
        self.translate(&kept);
        self.kept = kept;
        self.kept.clear();
    }

    /// Translates `spans` and queues the documents.
    fn translate(&mut self, spans: &[Span]) {
        let (chunk, pending, counters) =
            (&mut self.chunk, &mut self.pending, self.queue.counters());
        self.nesting.write(
            spans,
            &self.translate,
            SystemTime::now(),
            &mut self.scratch,
            |written| match written {
                nest::Written::Document { id, spans, escaped } => pending.push(Document {
                    id,
                    spans,
                    escaped: copy_to_chunk(chunk, escaped),
                }),
                nest::Written::Dropped(why) => counters.dropped(why.as_label(), 1),
            },
        );
        self.queue.push(&mut self.pending);
    }
}

/// Copies `document` into the shared chunk: one allocation per
/// [`CHUNK_BYTES`] of copies, not one per document.
pub(crate) fn copy_to_chunk(chunk: &mut BytesMut, document: &[u8]) -> Bytes {
    if chunk.capacity() < document.len() {
        *chunk = BytesMut::with_capacity(CHUNK_BYTES.max(document.len()));
    }
    chunk.extend_from_slice(document);
    chunk.split().freeze()
}

/// A running X-Ray exporter: the shared queue and its sender task.
pub struct XrayExporter {
    queue: Arc<SegmentQueue>,
    gate: Arc<AdmissionGate>,
    translate: Arc<TranslateConfig>,
    stop: CancellationToken,
    sender: JoinHandle<()>,
    /// With sampling: the shared policies and the workers they serve.
    sampling: Option<(Arc<sampling::Policies>, usize)>,
}

impl XrayExporter {
    /// Resolves region and credentials through the AWS SDK's default chain
    /// (and `role_arn`), then starts the sender task.
    /// With `disk`, documents queue in a [`DiskQueue`] there (falling back
    /// to memory, logged, if it cannot be opened).
    pub async fn start(
        config: &Valid<XrayConfig>,
        metrics: &Arc<ExporterMetrics>,
        disk: Option<DiskSettings>,
    ) -> Result<Self, XrayError> {
        let client = client::SdkClient::connect(config).await?;
        tracing::info!(
            exporter = EXPORTER,
            region = client.region(),
            endpoint = config.endpoint,
            "x-ray exporter started"
        );
        Ok(Self::with_client(config, client, metrics, disk))
    }

    /// Starts the sender with any PutTraceSegments implementation.
    pub(crate) fn with_client<C: client::PutSegments>(
        config: &XrayConfig,
        client: C,
        metrics: &Arc<ExporterMetrics>,
        disk: Option<DiskSettings>,
    ) -> Self {
        let counters = metrics.exporter(EXPORTER);
        let gate = Arc::new(AdmissionGate::default());
        let mut queue = SegmentQueue::new(
            config.max_queue,
            config.batch_size,
            config.backpressure.then(|| gate.clone()),
            counters.clone(),
        );
        if let Some(settings) = disk {
            let dir = settings.dir.clone();
            match DiskQueue::open(EXPORTER, settings, config.batch_size, counters.disk()) {
                Ok(disk) => queue = queue.with_disk(disk),
                Err(err) => {
                    counters.disk().error(err.reason());
                    tracing::error!(exporter = EXPORTER, dir = %dir.display(), error = %err,
                        "x-ray disk queue unusable; queueing in memory (durability: memory)");
                }
            }
        }
        let queue = Arc::new(queue);
        let stop = CancellationToken::new();
        let sender = client::Sender::new(config, client, queue.clone());
        let sender = tokio::spawn(sender.run(stop.clone()));
        Self {
            queue,
            gate,
            translate: Arc::new(config.translate.clone()),
            stop,
            sender,
            sampling: None,
        }
    }

    /// Samples traces before translation, for `workers` pipeline workers;
    /// the edge baselines are read from `policies`' graph every
    /// [`sampling::BASELINE_REFRESH`].
    pub(crate) fn with_sampling(
        mut self,
        policies: Arc<sampling::Policies>,
        workers: usize,
    ) -> Self {
        let (refresh, stop) = (policies.clone(), self.stop.clone());
        tokio::spawn(async move {
            let mut every = tokio::time::interval(sampling::BASELINE_REFRESH);
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = every.tick() => refresh.refresh_baselines(SystemTime::now()),
                }
            }
        });
        tracing::info!(
            exporter = EXPORTER,
            decision_wait = ?policies.config().decision_wait,
            max_traces_per_second = policies.config().max_traces_per_second,
            "x-ray tail sampling on"
        );
        self.sampling = Some((policies, workers));
        self
    }

    /// Whether documents queue on disk (requests are then answered once
    /// their documents are written).
    pub fn is_durable(&self) -> bool {
        self.queue.is_durable()
    }

    /// The gate receivers wait on while the queue runs behind
    /// (`backpressure`); never closed when that is off.
    pub fn admission_gate(&self) -> Arc<AdmissionGate> {
        self.gate.clone()
    }

    /// A consumer for one pipeline worker; all of them share the queue.
    pub fn consumer(&self) -> XrayConsumer {
        XrayConsumer {
            queue: self.queue.clone(),
            translate: self.translate.clone(),
            nesting: nest::Nesting::default(),
            pending: Vec::new(),
            scratch: Vec::new(),
            chunk: BytesMut::new(),
            sampler: self
                .sampling
                .as_ref()
                .map(|(policies, workers)| sampling::Sampler::new(policies.clone(), *workers)),
            kept: Vec::new(),
        }
    }

    /// Sends everything queued (partial batches too), waits for in-flight
    /// calls and their retries, all before `deadline`; what is left then is
    /// counted as dropped (`reason="shutdown"`) and reported.
    pub async fn shutdown(self, deadline: Instant) -> ExportReport {
        self.stop.cancel();
        // Aborting the sender aborts its calls (they live in its JoinSet).
        join_by(deadline, self.sender).await;
        let kept = self.queue.sync();
        if kept > 0 {
            tracing::info!(
                exporter = EXPORTER,
                spans = kept,
                "x-ray: unsent spans stay in the disk queue for the next start"
            );
        }
        let lost = self.queue.pending_spans();
        let counters = self.queue.counters();
        if lost > 0 {
            counters.dropped(reason::SHUTDOWN, lost);
        }
        ExportReport {
            sent: counters.sent.get(),
            failed: counters.failed_total(),
            lost_at_shutdown: lost,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    /// `{"id":"<id>"}`, escaped as translation writes documents.
    pub(crate) fn doc(id: u64) -> Document {
        Document {
            id: SpanId::from_bytes(id.to_be_bytes()),
            spans: 1,
            escaped: format!("{{\\\"id\\\":\\\"{id:016x}\\\"}}").into(),
        }
    }

    fn ids(docs: &[Document]) -> Vec<u64> {
        docs.iter()
            .map(|d| u64::from_be_bytes(d.id.to_bytes()))
            .collect()
    }

    fn queue(capacity: usize, batch_size: usize) -> SegmentQueue {
        let metrics = ExporterMetrics::register(&mut Registry::default());
        SegmentQueue::new(capacity, batch_size, None, metrics.exporter(EXPORTER))
    }

    #[test]
    fn full_queue_drops_oldest_and_counts() {
        let queue = queue(5, 2);
        queue.push(&mut (1..=4).map(doc).collect());
        queue.push(&mut (5..=7).map(doc).collect());
        assert_eq!(queue.counters().queue_full.get(), 2);
        assert_eq!(queue.counters().queue_depth.get(), 5);
        // A push larger than the whole queue keeps only its newest documents.
        queue.push(&mut (8..=14).map(doc).collect());
        assert_eq!(queue.counters().queue_full.get(), 2 + 7);
        let batch = queue.take(1, 50).unwrap();
        assert_eq!(ids(&batch.docs), [10, 11, 12, 13, 14]);
        assert_eq!(queue.counters().queue_depth.get(), 0);
        assert_eq!(queue.pending_spans(), 5, "in flight");
    }

    #[test]
    fn gate_closes_at_half_full_while_healthy_and_opens_at_three_eighths() {
        let metrics = ExporterMetrics::register(&mut Registry::default());
        let gate = Arc::new(AdmissionGate::default());
        let queue = SegmentQueue::new(16, 2, Some(gate.clone()), metrics.exporter(EXPORTER));
        queue.push(&mut (1..=7).map(doc).collect());
        assert!(!gate.is_closed());
        queue.push(&mut (8..=8).map(doc).collect());
        assert!(gate.is_closed(), "8 of 16");
        queue.take(1, 1).unwrap();
        assert!(gate.is_closed(), "7 of 16: hysteresis");
        queue.take(1, 1).unwrap();
        assert!(!gate.is_closed(), "6 of 16");
        queue.push(&mut (9..=10).map(doc).collect());
        assert!(gate.is_closed());
        // A failing X-Ray must not hold receivers (and the graph) back.
        queue.set_healthy(false);
        assert!(!gate.is_closed());
        queue.push(&mut (11..=20).map(doc).collect());
        assert!(!gate.is_closed(), "sheds instead");
        assert_eq!(queue.counters().queue_full.get(), 2);
        queue.set_healthy(true);
        assert!(gate.is_closed());
    }

    #[test]
    fn take_respects_min_and_max() {
        let queue = queue(100, 3);
        queue.push(&mut (1..=2).map(doc).collect());
        assert!(queue.take(3, 3).is_none());
        queue.push(&mut (3..=7).map(doc).collect());
        assert_eq!(ids(&queue.take(3, 3).unwrap().docs), [1, 2, 3]);
        assert_eq!(ids(&queue.take(3, 3).unwrap().docs), [4, 5, 6]);
        assert!(queue.take(3, 3).is_none());
        assert_eq!(ids(&queue.take(1, 3).unwrap().docs), [7]);
        assert!(queue.take(1, 3).is_none());
    }
}
