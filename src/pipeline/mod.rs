//! Bounded queues from receivers to per-shard consumer workers.
//!
//! Spans are routed by a hash of their trace id, so every span of a trace
//! reaches the same worker: per-shard state (the service graph's pairing
//! store) then needs no lock shared between shards. Each worker has its own
//! bounded queue; a receiver waits at most `enqueue_timeout` for room and
//! otherwise refuses the request, which OTLP clients retry. A consumer
//! whose own queue runs behind (an exporter) closes an [`AdmissionGate`],
//! and receivers then wait and refuse in the same way; so does the
//! [`memory`] watcher as the process nears `memory_limit`.

pub mod memory;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::model::Span;
use crate::receiver::{Refusal, SpanSink, Submission};
use crate::validate::{Invalid, Valid};

/// Queues and workers between receivers and consumers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineConfig {
    /// Consumer workers (shards); 0 means one per available CPU.
    pub workers: usize,
    /// Batches each worker's queue holds; a batch is one request's share for that worker.
    pub queue_capacity: usize,
    /// How long a receiver waits for queue room before refusing with UNAVAILABLE / 503.
    #[serde(with = "humantime_serde")]
    pub enqueue_timeout: Duration,
    /// Resident memory to stay under, refusing spans near it (bytes, or
    /// `512MiB`); unset: 80 % of the cgroup's limit if any, else none.
    pub memory_limit: Option<memory::ByteSize>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        Self {
            workers: 0,
            queue_capacity: 256,
            enqueue_timeout: Duration::from_millis(100),
            memory_limit: None,
        }
    }
}

impl PipelineConfig {
    /// Worker count after resolving 0 to the CPU count.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        }
    }

    /// The section checked as `Config::validate` checks it; panics naming
    /// the problems (tests).
    #[cfg(test)]
    pub(crate) fn checked(self) -> Valid<Self> {
        crate::validate::section(|problems| self.validate("pipeline", problems))
            .unwrap_or_else(|problems| panic!("invalid PipelineConfig: {problems:?}"))
    }

    /// Checks every rule; the section as `start` takes it when none is broken.
    pub fn validate(&self, prefix: &str, invalid: &mut Vec<Invalid>) -> Option<Valid<Self>> {
        Valid::check(self, invalid, |this, invalid| this.check(prefix, invalid))
    }

    fn check(&self, prefix: &str, invalid: &mut Vec<Invalid>) {
        if self.workers > 1024 {
            invalid.push(Invalid {
                key: format!("{prefix}.workers"),
                reason: "must be at most 1024 (0 means one per CPU)".into(),
            });
        }
        if self.queue_capacity == 0 {
            invalid.push(Invalid {
                key: format!("{prefix}.queue_capacity"),
                reason: "must be at least 1".into(),
            });
        }
        if self
            .memory_limit
            .is_some_and(|limit| limit < memory::MIN_LIMIT)
        {
            invalid.push(Invalid {
                key: format!("{prefix}.memory_limit"),
                reason: format!("must be at least {}", memory::MIN_LIMIT),
            });
        }
    }
}

/// Work done on each shard's spans; one instance per worker, never shared.
pub trait SpanConsumer: Send + 'static {
    /// Handles a batch of spans that all hash to this worker's shard.
    fn consume(&mut self, spans: &[Span]);

    /// Called about once a second, with or without traffic, for time-driven
    /// work such as expiring unpaired spans.
    fn tick(&mut self) {}

    /// Called once after the queue is drained at shutdown.
    fn flush(&mut self) {}
}

/// How often workers call [`SpanConsumer::tick`].
pub const TICK_INTERVAL: Duration = Duration::from_secs(1);

/// Builds the consumers for the worker of a given shard index.
pub type ConsumerFactory = dyn Fn(usize) -> Vec<Box<dyn SpanConsumer>> + Send + Sync;

/// Why the pipeline did not drain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// Workers did not finish draining before the deadline.
    #[error("pipeline did not drain before the deadline; {queued_spans} spans left in queues")]
    DrainTimeout {
        /// Spans still queued when time ran out.
        queued_spans: i64,
    },
}

/// Closed by a consumer whose own queue runs behind, so that receivers
/// refuse new spans (clients retry later) instead of that queue dropping
/// them, or by the [`memory`] watcher near the memory limit; open otherwise.
#[derive(Debug)]
pub struct AdmissionGate {
    closed: AtomicBool,
    opened: Notify,
    /// What receivers answer while it stays closed.
    refusal: Refusal,
    /// Whether receivers wait up to `enqueue_timeout` for it to open.
    waits: bool,
}

impl Default for AdmissionGate {
    /// Receivers wait for it, then refuse as for full queues.
    fn default() -> Self {
        Self::new(
            Refusal::Full {
                retry_after: RETRY_AFTER,
            },
            true,
        )
    }
}

impl AdmissionGate {
    /// A gate that answers `refusal` while closed, after waiting for it to
    /// open when `waits`.
    pub fn new(refusal: Refusal, waits: bool) -> Self {
        Self {
            closed: AtomicBool::new(false),
            opened: Notify::new(),
            refusal,
            waits,
        }
    }

    /// Receivers wait, then refuse, while closed.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
    }

    /// Lets spans in again and wakes receivers waiting for it.
    pub fn open(&self) {
        if self.closed.swap(false, Ordering::Relaxed) {
            self.opened.notify_waiters();
        }
    }

    /// Whether receivers are held back now.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    /// True once open, false if still closed at `deadline`.
    async fn wait_open(&self, deadline: Instant) -> bool {
        if !self.waits {
            return !self.is_closed();
        }
        loop {
            let opened = self.opened.notified();
            tokio::pin!(opened);
            // Registered before the check, so an `open` in between wakes it.
            opened.as_mut().enable();
            if !self.is_closed() {
                return true;
            }
            if tokio::time::timeout_at(deadline, opened).await.is_err() {
                return !self.is_closed();
            }
        }
    }
}

/// Back-off suggested to clients when queues are full.
const RETRY_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
struct PipelineMetrics {
    queue_depth: Gauge,
    queued_spans: Gauge,
    processed_spans: Counter,
}

impl PipelineMetrics {
    fn register(registry: &mut Registry, capacity: i64) -> Arc<Self> {
        let metrics = Arc::new(Self::default());
        let queue_capacity = Gauge::<i64, AtomicI64>::default();
        queue_capacity.set(capacity);
        registry.register(
            "tracemap_pipeline_queue_capacity",
            "Batches all worker queues can hold together",
            queue_capacity,
        );
        registry.register(
            "tracemap_pipeline_queue_depth",
            "Batches waiting in worker queues",
            metrics.queue_depth.clone(),
        );
        registry.register(
            "tracemap_pipeline_queued_spans",
            "Spans waiting in worker queues",
            metrics.queued_spans.clone(),
        );
        registry.register(
            "tracemap_pipeline_processed_spans",
            "Spans handed to consumers by the workers",
            metrics.processed_spans.clone(),
        );
        metrics
    }
}

/// The future [`ForwardTarget::reserve`] returns; boxed once per request.
pub type Reserving<'a> =
    Pin<Box<dyn Future<Output = Result<Box<dyn ForwardReservation>, Refusal>> + Send + 'a>>;

/// A destination every span goes to besides the local workers (the forward
/// exporter in agent mode). Room is reserved before anything is sent, so a
/// refused request leaves no partial trace behind.
pub trait ForwardTarget: Send + Sync + 'static {
    /// Waits until `deadline` for room for every span of `spans`.
    fn reserve<'a>(&'a self, spans: &'a [Span], deadline: Instant) -> Reserving<'a>;
}

/// Room taken by [`ForwardTarget::reserve`]; dropping it gives the room back.
pub trait ForwardReservation: Send {
    /// Queues `spans`, the same spans the room was reserved for.
    fn commit(self: Box<Self>, spans: Vec<Span>);
}

/// One request's spans for one worker; with `consumed`, the worker says
/// when its consumers are done with them (`durability: disk`: written to
/// the exporters' disk queues).
struct Part {
    spans: Vec<Span>,
    consumed: Option<oneshot::Sender<()>>,
}

/// The sending side, cloned into every receiver.
#[derive(Clone)]
pub struct PipelineHandle {
    /// Local workers; none in agent mode without a local graph.
    shards: Arc<[mpsc::Sender<Part>]>,
    /// Answer a request only once every worker has consumed its spans.
    acknowledge_consumed: bool,
    gates: Arc<[Arc<AdmissionGate>]>,
    /// Agent mode: the gateways every span also goes to.
    forward: Option<Arc<dyn ForwardTarget>>,
    enqueue_timeout: Duration,
    metrics: Arc<PipelineMetrics>,
}

type Permits<'a> = Vec<(mpsc::Permit<'a, Part>, Vec<Span>)>;

impl PipelineHandle {
    /// Queues `spans`, all or nothing: either every span is queued or none is.
    ///
    /// Room is reserved on every target shard (and, in agent mode, on every
    /// target gateway) before anything is sent, so a refused request leaves
    /// no partial trace behind and can be retried whole.
    pub async fn submit(&self, spans: Vec<Span>) -> Result<(), Refusal> {
        if spans.is_empty() {
            return Ok(());
        }
        let deadline = Instant::now() + self.enqueue_timeout;
        for gate in self.gates.iter() {
            if !gate.wait_open(deadline).await {
                return Err(gate.refusal.clone());
            }
        }
        let Some(forward) = &self.forward else {
            let permits = self.reserve_local(spans, deadline).await?;
            return self.send_local(permits).await;
        };
        let reservation = forward.reserve(&spans, deadline).await?;
        let mut consumed = Ok(());
        if !self.shards.is_empty() {
            // Spans share their buffers: a copy is a few reference counts.
            let permits = self.reserve_local(spans.clone(), deadline).await?;
            consumed = self.send_local(permits).await;
        }
        reservation.commit(spans);
        consumed
    }

    async fn reserve_local(
        &self,
        spans: Vec<Span>,
        deadline: Instant,
    ) -> Result<Permits<'_>, Refusal> {
        let parts = self.partition(spans);
        let mut permits = Vec::with_capacity(parts.len());
        for (shard, part) in parts.into_iter().enumerate() {
            if part.is_empty() {
                continue;
            }
            let permit = match tokio::time::timeout_at(deadline, self.shards[shard].reserve()).await
            {
                Ok(Ok(permit)) => permit,
                Ok(Err(_closed)) => return Err(Refusal::Closed),
                Err(_elapsed) => {
                    return Err(Refusal::Full {
                        retry_after: RETRY_AFTER,
                    });
                }
            };
            permits.push((permit, part));
        }
        Ok(permits)
    }

    /// Sends the parts; with `acknowledge_consumed`, waits until every
    /// worker has run its consumers on them.
    async fn send_local(&self, permits: Permits<'_>) -> Result<(), Refusal> {
        let mut waiting = Vec::new();
        for (permit, spans) in permits {
            self.metrics.queue_depth.inc();
            self.metrics.queued_spans.inc_by(spans.len() as i64);
            let consumed = self.acknowledge_consumed.then(|| {
                let (done, wait) = oneshot::channel();
                waiting.push(wait);
                done
            });
            permit.send(Part { spans, consumed });
        }
        for wait in waiting {
            // A worker gone before consuming (a panic): the client retries.
            wait.await.map_err(|_| Refusal::Closed)?;
        }
        Ok(())
    }

    fn partition(&self, spans: Vec<Span>) -> Vec<Vec<Span>> {
        let shard_count = self.shards.len();
        if shard_count == 1 {
            return vec![spans];
        }
        // Sized exactly first: growing a part moves every span already in it.
        let shard_of: Vec<usize> = spans
            .iter()
            .map(|span| (span.trace_id.shard_hash() % shard_count as u64) as usize)
            .collect();
        let mut sizes = vec![0; shard_count];
        for &shard in &shard_of {
            sizes[shard] += 1;
        }
        let mut parts: Vec<Vec<Span>> = sizes.into_iter().map(Vec::with_capacity).collect();
        for (span, shard) in spans.into_iter().zip(shard_of) {
            parts[shard].push(span);
        }
        parts
    }

    /// Number of shards (workers).
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }
}

impl SpanSink for PipelineHandle {
    fn submit(&self, spans: Vec<Span>) -> Submission<'_> {
        Box::pin(PipelineHandle::submit(self, spans))
    }

    fn refuses_now(&self) -> Option<Refusal> {
        // A closed gate that receivers do not wait for refuses every request.
        let gate = self.gates.iter().find(|g| !g.waits && g.is_closed())?;
        Some(gate.refusal.clone())
    }
}

/// What the workers did over their lifetime, reported at shutdown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainReport {
    /// Spans handed to consumers.
    pub processed_spans: u64,
}

/// Running workers plus the handle receivers use to feed them.
pub struct Pipeline {
    handle: PipelineHandle,
    workers: Vec<JoinHandle<()>>,
    stop: CancellationToken,
    processed: Arc<AtomicU64>,
}

impl Pipeline {
    /// Spawns one worker per shard on the current Tokio runtime.
    pub fn start(
        config: &Valid<PipelineConfig>,
        consumers: &dyn Fn(usize) -> Vec<Box<dyn SpanConsumer>>,
        registry: &mut Registry,
    ) -> Self {
        Self::start_with(config, Some(consumers), None, registry)
    }

    /// Agent mode: every span goes to `forward`, and to local workers
    /// running `consumers` only when given.
    pub fn start_forwarding(
        config: &Valid<PipelineConfig>,
        consumers: Option<&dyn Fn(usize) -> Vec<Box<dyn SpanConsumer>>>,
        forward: Arc<dyn ForwardTarget>,
        registry: &mut Registry,
    ) -> Self {
        Self::start_with(config, consumers, Some(forward), registry)
    }

    fn start_with(
        config: &PipelineConfig,
        consumers: Option<&dyn Fn(usize) -> Vec<Box<dyn SpanConsumer>>>,
        forward: Option<Arc<dyn ForwardTarget>>,
        registry: &mut Registry,
    ) -> Self {
        let worker_count = match consumers {
            Some(_) => config.worker_count(),
            None => 0,
        };
        let metrics =
            PipelineMetrics::register(registry, (worker_count * config.queue_capacity) as i64);
        let stop = CancellationToken::new();
        let processed = Arc::new(AtomicU64::new(0));
        let mut senders = Vec::with_capacity(worker_count);
        let mut workers = Vec::with_capacity(worker_count);
        for shard in 0..worker_count {
            let (tx, rx) = mpsc::channel(config.queue_capacity);
            senders.push(tx);
            let worker = Worker {
                rx,
                consumers: consumers.map_or_else(Vec::new, |make| make(shard)),
                metrics: metrics.clone(),
                processed: processed.clone(),
            };
            workers.push(tokio::spawn(worker.run(stop.clone())));
        }
        Self {
            handle: PipelineHandle {
                shards: senders.into(),
                acknowledge_consumed: false,
                gates: Arc::new([]),
                forward,
                enqueue_timeout: config.enqueue_timeout,
                metrics,
            },
            workers,
            stop,
            processed,
        }
    }

    /// Makes receivers wait for `gate`, then refuse while it stays closed;
    /// handles taken before this call do not see it.
    pub fn add_gate(&mut self, gate: Arc<AdmissionGate>) {
        let mut gates = self.handle.gates.to_vec();
        gates.push(gate);
        self.handle.gates = gates.into();
    }

    /// Answers requests only once their spans are consumed (written to the
    /// exporters' disk queues); handles taken before this call do not.
    pub fn acknowledge_consumed(&mut self) {
        self.handle.acknowledge_consumed = true;
    }

    /// A handle for receivers.
    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// Closes the queues to new spans, lets workers finish what is queued
    /// and flush their consumers, all before `deadline`.
    pub async fn drain(self, deadline: Instant) -> Result<DrainReport, PipelineError> {
        self.stop.cancel();
        let all = futures_join_all(self.workers);
        match tokio::time::timeout_at(deadline, all).await {
            Ok(()) => Ok(DrainReport {
                processed_spans: self.processed.load(Ordering::Relaxed),
            }),
            Err(_) => Err(PipelineError::DrainTimeout {
                queued_spans: self.handle.metrics.queued_spans.get(),
            }),
        }
    }
}

async fn futures_join_all(workers: Vec<JoinHandle<()>>) {
    for worker in workers {
        if let Err(err) = worker.await {
            tracing::error!(error = %err, "pipeline worker panicked");
        }
    }
}

struct Worker {
    rx: mpsc::Receiver<Part>,
    consumers: Vec<Box<dyn SpanConsumer>>,
    metrics: Arc<PipelineMetrics>,
    processed: Arc<AtomicU64>,
}

impl Worker {
    async fn run(mut self, stop: CancellationToken) {
        let mut closing = false;
        let mut ticker = tokio::time::interval(TICK_INTERVAL);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                batch = self.rx.recv() => match batch {
                    Some(part) => {
                        self.process(&part.spans);
                        if let Some(consumed) = part.consumed {
                            let _ = consumed.send(());
                        }
                    }
                    // Closed and empty: every reserved permit has been sent too.
                    None => break,
                },
                _ = ticker.tick() => {
                    for consumer in &mut self.consumers {
                        consumer.tick();
                    }
                }
                () = stop.cancelled(), if !closing => {
                    closing = true;
                    self.rx.close();
                }
            }
        }
        for consumer in &mut self.consumers {
            consumer.flush();
        }
    }

    fn process(&mut self, spans: &[Span]) {
        self.metrics.queue_depth.dec();
        self.metrics.queued_spans.dec_by(spans.len() as i64);
        for consumer in &mut self.consumers {
            consumer.consume(spans);
        }
        self.metrics.processed_spans.inc_by(spans.len() as u64);
        self.processed
            .fetch_add(spans.len() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::model::{Resource, SpanId, SpanKind, StatusCode, TraceId};

    pub(crate) fn span(trace: u128, id: u64) -> Span {
        Span {
            resource: Arc::new(Resource::default()),
            scope_name: "".into(),
            trace_id: TraceId::try_from(&trace.to_be_bytes()[..]).unwrap(),
            span_id: SpanId::try_from(&id.to_be_bytes()[..]).unwrap(),
            parent_span_id: None,
            name: "op".into(),
            kind: SpanKind::Server,
            status_code: StatusCode::Unset,
            status_message: String::new(),
            start_unix_nano: 1,
            end_unix_nano: 2,
            attributes: Default::default(),
            events: vec![],
        }
    }

    type Seen = Arc<Mutex<Vec<(usize, TraceId)>>>;

    struct Recorder {
        shard: usize,
        seen: Seen,
        flushed: Arc<AtomicU64>,
    }

    impl SpanConsumer for Recorder {
        fn consume(&mut self, spans: &[Span]) {
            let mut seen = self.seen.lock().unwrap();
            seen.extend(spans.iter().map(|s| (self.shard, s.trace_id)));
        }
        fn flush(&mut self) {
            self.flushed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn recorder_factory(seen: Seen, flushed: Arc<AtomicU64>) -> Box<ConsumerFactory> {
        Box::new(move |shard| {
            vec![Box::new(Recorder {
                shard,
                seen: seen.clone(),
                flushed: flushed.clone(),
            }) as Box<dyn SpanConsumer>]
        })
    }

    #[tokio::test]
    async fn spans_of_one_trace_reach_one_worker_and_drain_flushes() {
        let seen = Seen::default();
        let flushed = Arc::new(AtomicU64::new(0));
        let config = PipelineConfig {
            workers: 4,
            ..PipelineConfig::default()
        };
        let pipeline = Pipeline::start(
            &config.clone().checked(),
            &recorder_factory(seen.clone(), flushed.clone()),
            &mut Registry::default(),
        );
        let handle = pipeline.handle();
        for round in 0..10u64 {
            let spans = (1..=50u128).map(|t| span(t, round + 1)).collect();
            handle.submit(spans).await.unwrap();
        }
        let report = pipeline
            .drain(Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(report.processed_spans, 500);
        assert_eq!(flushed.load(Ordering::Relaxed), 4);
        let seen = seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 500);
        for trace in 1..=50u128 {
            let id = TraceId::try_from(&trace.to_be_bytes()[..]).unwrap();
            let shards: std::collections::BTreeSet<_> = seen
                .iter()
                .filter(|(_, t)| *t == id)
                .map(|(s, _)| *s)
                .collect();
            assert_eq!(shards.len(), 1, "trace {trace} split across {shards:?}");
        }
        assert!(matches!(
            handle.submit(vec![span(1, 1)]).await,
            Err(Refusal::Closed)
        ));
    }

    struct Blocker(Arc<tokio::sync::Semaphore>);

    impl SpanConsumer for Blocker {
        fn consume(&mut self, _spans: &[Span]) {
            // Holds the worker until the test adds a permit.
            while self.0.try_acquire().is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn closed_gate_refuses_after_timeout_and_opening_it_admits() {
        let seen = Seen::default();
        let config = PipelineConfig {
            workers: 1,
            enqueue_timeout: Duration::from_millis(100),
            ..PipelineConfig::default()
        };
        let mut pipeline = Pipeline::start(
            &config.clone().checked(),
            &recorder_factory(seen.clone(), Arc::default()),
            &mut Registry::default(),
        );
        let gate = Arc::new(AdmissionGate::default());
        pipeline.add_gate(gate.clone());
        let handle = pipeline.handle();
        gate.close();
        let start = Instant::now();
        assert_eq!(
            handle.submit(vec![span(1, 1)]).await,
            Err(Refusal::Full {
                retry_after: RETRY_AFTER
            })
        );
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(100),
            "waited, then refused"
        );
        // Opened while a receiver waits: it gets in.
        let opener = {
            let gate = gate.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(30)).await;
                gate.open();
            })
        };
        handle.submit(vec![span(2, 1)]).await.unwrap();
        opener.await.unwrap();
        let report = pipeline
            .drain(Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(report.processed_spans, 1);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_queue_refuses_after_timeout_and_recovers() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let config = PipelineConfig {
            workers: 1,
            queue_capacity: 1,
            enqueue_timeout: Duration::from_millis(20),
            ..PipelineConfig::default()
        };
        let gate_for_factory = gate.clone();
        let factory: Box<ConsumerFactory> = Box::new(move |_| {
            vec![Box::new(Blocker(gate_for_factory.clone())) as Box<dyn SpanConsumer>]
        });
        let mut registry = Registry::default();
        let pipeline = Pipeline::start(&config.clone().checked(), &factory, &mut registry);
        let handle = pipeline.handle();
        // First batch is taken by the (blocked) worker, second fills the queue.
        handle.submit(vec![span(1, 1)]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        handle.submit(vec![span(2, 1)]).await.unwrap();
        assert_eq!(
            handle.submit(vec![span(3, 1)]).await,
            Err(Refusal::Full {
                retry_after: RETRY_AFTER
            })
        );
        gate.add_permits(2);
        handle.submit(vec![span(4, 1)]).await.unwrap();
        gate.add_permits(1);
        let report = pipeline
            .drain(Instant::now() + Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(report.processed_spans, 3);
    }
}
