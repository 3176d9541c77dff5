//! Export of the service graph's derived metrics to Amazon CloudWatch.
//!
//! ```text
//!  every flush_interval (producer task)                               sender task (client.rs)
//!  minutes now over ─► Graph::snapshot(minute) ─► model ─► emf | pmd ─► RequestQueue ─► PutLogEvents | PutMetricData
//!  span metrics ─► deltas since last flush ──────┘  (spawn_blocking)    (bounded,        (one at a time, in order,
//!                                                                        drops oldest)    retries with back-off)
//! ```
//!
//! A minute is exported once it is over (plus [`MINUTE_GRACE`] for spans
//! still being recorded), stamped with its start, so CloudWatch receives
//! each edge's numbers for a minute exactly once and they equal what
//! `/api/v1/graph` shows for that minute. At shutdown the current,
//! partial minute is exported too. With each flush's newest minute goes
//! the disk backlog of every exporter that has a disk queue, read from
//! the `tracemap_exporter_queue_*` series.

pub mod client;
pub mod config;
pub mod emf;
pub mod model;
pub mod pmd;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

pub use config::{CloudWatchConfig, CloudWatchMode};
use model::{ModelConfig, OperationTracker};

use crate::exporter::aws::WarnLimiter;
use bytes::Bytes;

use crate::exporter::disk::{DiskQueue, DiskSettings, Durable, Ticket};
use crate::exporter::queue::{BoundedQueue, Budget, Overflow, WarnOnce, Weighed};
use crate::exporter::{
    ExportReport, ExporterCounters, ExporterLabels, ExporterMetrics, join_by, reason,
};
use crate::graph::edge::Minute;
use crate::graph::{Graph, TimeWindow, unix_minute};
use crate::validate::Valid;

/// Time after a minute ends before it is exported, for spans a worker
/// stamped with that minute and is still recording.
pub const MINUTE_GRACE: Duration = Duration::from_secs(2);
/// Environment variable naming this instance (the pod name on Kubernetes).
pub const ENV_HOSTNAME: &str = "HOSTNAME";

/// Why the CloudWatch exporter could not start or a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CloudWatchError {
    /// Neither the config nor the SDK's default chain names a region.
    #[error(
        "no aws region for the cloudwatch exporter: set exporters.cloudwatch.region or AWS_REGION"
    )]
    NoRegion,
    /// A call failed.
    #[error("{operation} failed{}: {message}", status.map(|s| format!(" with http {s}")).unwrap_or_default())]
    Call {
        /// The API operation.
        operation: &'static str,
        /// Whether the same request may succeed later.
        retryable: bool,
        /// HTTP status, when a response arrived.
        status: Option<u16>,
        /// AWS error code, when given.
        code: Option<String>,
        /// The SDK's description, with its causes.
        message: String,
    },
}

impl CloudWatchError {
    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Call {
                retryable: true,
                ..
            }
        )
    }
}

/// One request, ready to send.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Payload {
    /// One PutLogEvents batch.
    Events(Vec<emf::LogEvent>),
    /// One PutMetricData call.
    Metrics(pmd::PutMetricDataInput),
}

impl Payload {
    /// Items counted in `tracemap_exporter_*`: log events or metric data.
    pub fn items(&self) -> usize {
        match self {
            Self::Events(events) => events.len(),
            Self::Metrics(input) => input.data.len(),
        }
    }

    /// Bytes as the limits count them: EMF messages plus 26 per event;
    /// PutMetricData's query-encoded body (an upper bound, before gzip).
    pub fn bytes(&self) -> usize {
        match self {
            Self::Events(events) => events
                .iter()
                .map(|e| e.message.len() + emf::EVENT_OVERHEAD)
                .sum(),
            Self::Metrics(input) => input.data.iter().map(pmd::Datum::query_bytes).sum(),
        }
    }
}

impl Weighed for Payload {
    fn items(&self) -> u64 {
        Payload::items(self) as u64
    }

    fn bytes(&self) -> usize {
        Payload::bytes(self)
    }
}

// A few requests a minute: serde_json's speed is no concern here.
impl Durable for Payload {
    fn encode(&self, out: &mut Vec<u8>) {
        serde_json::to_writer(out, self).expect("a payload serializes");
    }

    fn decode(_items: u32, payload: Bytes) -> Option<Self> {
        serde_json::from_slice(&payload).ok()
    }
}

/// CloudWatch Logs takes events of the last 14 days (PutMetricData data
/// points of two weeks); a day of margin for clocks.
pub const MAX_REQUEST_AGE: Duration = Duration::from_secs(13 * 24 * 3600);

/// Requests between the producer and the sender: the exporters' bounded
/// queue, `max_queue` requests, dropping the oldest; or the disk queue,
/// with that memory queue as its fallback when the disk fails.
#[derive(Debug)]
pub(crate) struct RequestQueue {
    requests: BoundedQueue<Payload>,
    disk: Option<Arc<DiskQueue<Payload>>>,
    disk_failed: WarnOnce,
    counters: ExporterCounters,
}

impl RequestQueue {
    /// The exporter's series.
    pub(crate) fn counters(&self) -> &ExporterCounters {
        &self.counters
    }

    /// The `exporter` label.
    pub(crate) fn exporter(&self) -> &'static str {
        self.requests.exporter()
    }

    /// Queues `payloads` in order: on disk, written before this returns,
    /// else (or when the disk fails) in memory.
    pub(crate) fn push(&self, payloads: Vec<Payload>) {
        let payloads = match &self.disk {
            Some(disk) => match disk.push(payloads) {
                Ok(()) => return,
                Err((back, err)) => {
                    if self.disk_failed.first() {
                        tracing::error!(exporter = self.exporter(), error = %err,
                            "cloudwatch disk queue cannot be written; requests wait in memory (tracemap_exporter_disk_errors_total)");
                    }
                    back
                }
            },
            None => payloads,
        };
        self.requests.push(payloads);
    }

    /// The oldest request (disk first), in flight until [`RequestQueue::finish`]ed.
    pub(crate) fn pop(&self) -> Option<(Payload, Option<Ticket>)> {
        if let Some(disk) = &self.disk {
            while let Some((mut batch, ticket)) = disk.take(1, 1) {
                match batch.pop() {
                    Some(payload) => return Some((payload, Some(ticket))),
                    // Too old for CloudWatch, dropped and counted.
                    None => disk.ack(ticket),
                }
            }
        }
        self.requests.pop().map(|payload| (payload, None))
    }

    /// The request is done (sent, or failed and counted).
    pub(crate) fn finish(&self, items: u64, ticket: Option<Ticket>) {
        match (&self.disk, ticket) {
            (Some(disk), Some(ticket)) => disk.ack(ticket),
            _ => self.requests.settle(items),
        }
    }

    /// Whether nothing waits, in memory or on disk.
    pub(crate) fn is_empty(&self) -> bool {
        self.requests.is_empty() && self.disk.as_ref().is_none_or(|d| d.waiting_records() == 0)
    }

    /// Returns once a request may be waiting.
    pub(crate) async fn ready(&self) {
        match &self.disk {
            Some(disk) => tokio::select! {
                () = disk.ready() => {}
                () = self.requests.ready() => {}
            },
            None => self.requests.ready().await,
        }
    }

    /// Items queued or in flight in memory (what a shutdown now loses).
    pub(crate) fn pending_items(&self) -> u64 {
        self.requests.pending_items()
    }

    /// Whether requests come from disk: retried until delivered.
    pub(crate) fn is_durable(&self) -> bool {
        self.disk.is_some()
    }

    /// Flushes the disk queue; the items it keeps for the next start.
    fn sync(&self) -> u64 {
        self.disk.as_ref().map_or(0, |disk| {
            disk.sync();
            disk.unacknowledged_items()
        })
    }
}

/// An empty request queue for `label`'s series; on disk with `disk`
/// (in memory, logged, if it cannot be opened).
pub(crate) fn request_queue(
    capacity: usize,
    counters: ExporterCounters,
    label: &'static str,
    disk: Option<DiskSettings>,
) -> RequestQueue {
    let disk = disk.and_then(|settings| {
        let dir = settings.dir.clone();
        DiskQueue::open(label, settings, 1, counters.disk())
            .inspect_err(|err| {
                counters.disk().error(err.reason());
                tracing::error!(exporter = label, dir = %dir.display(), error = %err,
                    "cloudwatch disk queue unusable; queueing in memory (durability: memory)");
            })
            .ok()
    });
    RequestQueue {
        requests: BoundedQueue::new(
            label,
            Budget::records(capacity),
            Overflow::DropOldest,
            counters.queue_depth.clone(),
            counters.queue_full.clone(),
        ),
        disk,
        disk_failed: WarnOnce::default(),
        counters,
    }
}

/// `tracemap_cloudwatch_folded_dimension_sets_total`: the cardinality bound at work.
#[derive(Debug, Clone, Default)]
pub struct CloudWatchMetrics {
    folded: Family<ExporterLabels, Counter>,
}

impl CloudWatchMetrics {
    /// Registers the family (once per registry).
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "tracemap_cloudwatch_folded_dimension_sets",
            "Dimension sets (edges, services, operations) folded into Other by max_dimension_sets",
            metrics.folded.clone(),
        );
        metrics
    }
}

/// What one flush produced.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlushStats {
    /// Minutes exported.
    pub minutes: u64,
    /// Requests queued.
    pub requests: u64,
    /// Items (log events or metric data).
    pub items: u64,
    /// Bytes, as the service's limits count them.
    pub bytes: u64,
    /// Dimension sets folded into `Other`.
    pub folded: u64,
}

/// Turns metric groups into requests for one mode.
#[derive(Debug, Clone)]
pub struct Encoder {
    mode: CloudWatchMode,
    namespace: String,
}

impl Encoder {
    /// An encoder for `config`'s mode and namespace.
    pub fn new(config: &CloudWatchConfig) -> Self {
        Self {
            mode: config.mode,
            namespace: config.namespace.clone(),
        }
    }

    /// The requests for `groups`, and what had to be left out.
    pub fn encode(&self, groups: &[model::MetricGroup]) -> (Vec<Payload>, u64) {
        match self.mode {
            CloudWatchMode::Emf => {
                let limits = emf::EmfLimits::default();
                let encoded = emf::encode(&self.namespace, groups, &limits);
                let left_out = encoded.oversize_dropped;
                let payloads = emf::batches(encoded.events, &limits)
                    .into_iter()
                    .map(Payload::Events)
                    .collect();
                (payloads, left_out)
            }
            CloudWatchMode::PutMetricData => {
                let encoded = pmd::encode(&self.namespace, groups, &pmd::PmdLimits::default());
                let payloads = encoded.inputs.into_iter().map(Payload::Metrics).collect();
                (payloads, encoded.non_finite)
            }
        }
    }
}

/// Reads the graph each flush and produces requests.
pub struct Producer {
    graph: Graph,
    model: ModelConfig,
    encoder: Encoder,
    operations: OperationTracker,
    /// Where the exporters' disk backlogs are read, if anywhere.
    backlog: Option<Arc<ExporterMetrics>>,
    /// First minute not exported yet.
    next_minute: Minute,
    /// X-Ray sampling's kept-trace total at the last flush.
    kept_before: u64,
}

impl Producer {
    /// Starts exporting from the current minute.
    pub fn new(config: &CloudWatchConfig, graph: Graph, now: SystemTime) -> Self {
        let model = ModelConfig::new(config, graph.config().latency_histogram_buckets.clone());
        Self {
            graph,
            model,
            encoder: Encoder::new(config),
            operations: OperationTracker::default(),
            backlog: None,
            next_minute: unix_minute(now),
            kept_before: 0,
        }
    }

    /// Also exports, with each flush's newest minute, the disk backlog of
    /// every exporter reporting to `metrics`.
    pub fn with_backlog(mut self, metrics: Arc<ExporterMetrics>) -> Self {
        self.backlog = Some(metrics);
        self
    }

    /// The requests for every minute over at `now` (with `include_current`,
    /// the current minute too: the last flush at shutdown).
    pub fn flush(&mut self, now: SystemTime, include_current: bool) -> (Vec<Payload>, FlushStats) {
        let last = match include_current {
            true => unix_minute(now),
            false => unix_minute(now - MINUTE_GRACE) - 1,
        };
        // Minutes the graph no longer keeps cannot be exported.
        let retention = self.graph.config().retention.as_secs().div_ceil(60) as i64;
        self.next_minute = self.next_minute.max(unix_minute(now) - retention + 1);
        let mut stats = FlushStats::default();
        if last < self.next_minute {
            return (Vec::new(), stats);
        }
        let operations = match self.model.operation_metrics {
            true => self.operations.delta(&self.graph.span_metrics()),
            false => Default::default(),
        };
        let mut groups = Vec::new();
        let first_minute = self.next_minute;
        for minute in self.next_minute..=last {
            let start = SystemTime::UNIX_EPOCH + Duration::from_secs(minute as u64 * 60);
            let window = TimeWindow {
                start,
                end: start + Duration::from_secs(60),
            };
            let topology = self.graph.snapshot(window);
            // Span-metric deltas ride on the newest minute of the flush.
            let empty = Default::default();
            let ops = if minute == last { &operations } else { &empty };
            let built = self.model.build(&topology, ops, minute * 60_000);
            stats.folded += built.folded;
            groups.extend(built.groups);
            stats.minutes += 1;
        }
        if let Some(metrics) = &self.backlog {
            groups.extend(self.model.backlog(&metrics.backlogs(), last * 60_000));
            if let Some(sampling) = metrics.sampling() {
                let kept = sampling.kept.get();
                let minutes = (last - first_minute + 1).max(1) as u64;
                let budget = u64::from(sampling.budget_per_second) * 60 * minutes;
                let delta = kept.saturating_sub(self.kept_before);
                groups.push(self.model.sampling(delta, budget, last * 60_000));
                self.kept_before = kept;
            }
        }
        self.next_minute = last + 1;
        let (payloads, _left_out) = self.encoder.encode(&groups);
        stats.requests = payloads.len() as u64;
        stats.items = payloads.iter().map(|p| p.items() as u64).sum();
        stats.bytes = payloads.iter().map(|p| p.bytes() as u64).sum();
        (payloads, stats)
    }
}

/// A running CloudWatch exporter: producer and sender tasks.
pub struct CloudWatchExporter {
    queue: Arc<RequestQueue>,
    stop_producer: CancellationToken,
    stop_sender: CancellationToken,
    producer: JoinHandle<()>,
    sender: JoinHandle<()>,
}

impl CloudWatchExporter {
    /// Connects the sink for `config.mode` through the AWS SDK's default
    /// chains, then starts the tasks.
    pub async fn start(
        config: &Valid<CloudWatchConfig>,
        graph: Graph,
        metrics: &Arc<ExporterMetrics>,
        registry: &mut Registry,
        disk: Option<DiskSettings>,
    ) -> Result<Self, CloudWatchError> {
        let own = CloudWatchMetrics::register(registry);
        match config.mode {
            CloudWatchMode::Emf => {
                let stream = match config.log_stream.is_empty() {
                    false => config.log_stream.clone(),
                    true => std::env::var(ENV_HOSTNAME)
                        .ok()
                        .filter(|h| !h.is_empty() && !h.contains([':', '*']))
                        .unwrap_or_else(|| format!("tracemap-{}", std::process::id())),
                };
                let (sink, region) = client::EmfSink::connect(config, stream.clone()).await?;
                tracing::info!(
                    exporter = "emf",
                    region,
                    endpoint = config.endpoint,
                    log_group = config.resolved_log_group(),
                    log_stream = stream,
                    "cloudwatch exporter started"
                );
                Ok(Self::with_sink(config, sink, graph, metrics, own, disk))
            }
            CloudWatchMode::PutMetricData => {
                let (sink, region) = client::PmdSink::connect(config).await?;
                tracing::info!(
                    exporter = "cloudwatch",
                    region,
                    endpoint = config.endpoint,
                    namespace = config.namespace,
                    "cloudwatch exporter started"
                );
                Ok(Self::with_sink(config, sink, graph, metrics, own, disk))
            }
        }
    }

    /// Starts the tasks with any sink.
    pub(crate) fn with_sink<S: client::Sink>(
        config: &CloudWatchConfig,
        sink: S,
        graph: Graph,
        metrics: &Arc<ExporterMetrics>,
        own: CloudWatchMetrics,
        disk: Option<DiskSettings>,
    ) -> Self {
        let label = config.mode.exporter_label();
        let counters = metrics.exporter(label);
        let folded = own
            .folded
            .get_or_create(&ExporterLabels { exporter: label })
            .clone();
        let queue = Arc::new(request_queue(config.max_queue, counters, label, disk));
        let stop_producer = CancellationToken::new();
        let stop_sender = CancellationToken::new();
        let sender = client::Sender {
            sink,
            queue: queue.clone(),
            retry: config.retry_policy(),
            warn: WarnLimiter::new(Duration::from_secs(30)),
        };
        let sender = tokio::spawn(sender.run(stop_sender.clone()));
        let producer =
            Producer::new(config, graph, SystemTime::now()).with_backlog(metrics.clone());
        let producer = tokio::spawn(produce(
            producer,
            config.flush_interval,
            queue.clone(),
            folded,
            stop_producer.clone(),
        ));
        Self {
            queue,
            stop_producer,
            stop_sender,
            producer,
            sender,
        }
    }

    /// Exports the current minute, sends everything queued, all before
    /// `deadline`; what is left then is counted as dropped
    /// (`reason="shutdown"`) and reported.
    pub async fn shutdown(self, deadline: Instant) -> ExportReport {
        self.stop_producer.cancel();
        join_by(deadline, self.producer).await;
        self.stop_sender.cancel();
        join_by(deadline, self.sender).await;
        let kept = self.queue.sync();
        if kept > 0 {
            tracing::info!(
                exporter = self.queue.exporter(),
                items = kept,
                "cloudwatch: unsent requests stay in the disk queue for the next start"
            );
        }
        let lost = self.queue.pending_items();
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

/// The producer task: a flush every `interval`, and a last one with the
/// current minute when stopped.
async fn produce(
    producer: Producer,
    interval: Duration,
    queue: Arc<RequestQueue>,
    folded: Counter,
    stop: CancellationToken,
) {
    let producer = Arc::new(Mutex::new(producer));
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker.tick().await; // the first tick is immediate
    loop {
        let last = tokio::select! {
            biased;
            () = stop.cancelled() => true,
            _ = ticker.tick() => false,
        };
        let job = producer.clone();
        // Snapshots and encoding are CPU work: off the reactor.
        let flushed = tokio::task::spawn_blocking(move || {
            job.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .flush(SystemTime::now(), last)
        })
        .await;
        match flushed {
            Ok((payloads, stats)) => {
                folded.inc_by(stats.folded);
                if stats.minutes > 0 {
                    tracing::debug!(
                        exporter = queue.exporter(),
                        minutes = stats.minutes,
                        requests = stats.requests,
                        items = stats.items,
                        bytes = stats.bytes,
                        folded = stats.folded,
                        "cloudwatch flush"
                    );
                }
                queue.push(payloads);
            }
            Err(err) => {
                tracing::error!(exporter = queue.exporter(), error = %err, "cloudwatch flush panicked")
            }
        }
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests;
