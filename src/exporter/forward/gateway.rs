//! One gateway: its bounded queue and the task that batches, sends,
//! retries and fails over.
//!
//! The queue is the exporters' refusing [`BoundedQueue`]: admission takes
//! permits for every span before any is queued, so the bound covers spans
//! queued *and* in flight, and permits come back only when a span is
//! delivered, dropped (counted) or moved to another gateway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::client::GatewayClient;
use super::encode::Batch;
use super::rendezvous::{self, trace_hash};
use super::retry::{Attempt, Outcome, failure};
use super::{Members, Shared, drop_reason};
use crate::exporter::backoff::Backoff;
use crate::exporter::queue::{BoundedQueue, Budget, Overflow, WarnOnce, Weighed};
use crate::model::Span;

/// How often an idle sender re-checks during shutdown whether every
/// gateway's queue is empty (spans may still be moved to it).
const CLOSING_POLL: Duration = Duration::from_millis(20);

/// A gateway's queue and state, shared by admission and its sender.
pub(super) struct Gateway {
    /// `host:port` or `ip:port`: metric label and placement identity.
    pub key: Arc<str>,
    /// [`rendezvous::gateway_seed`] of the key.
    pub seed: u64,
    /// The exporters' bounded queue, refusing: `queue_size` spans admitted
    /// (queued and in flight) at most.
    spans: BoundedQueue<Span>,
    up: AtomicBool,
    /// When the gateway left the set; its sender then moves its spans.
    retired_at: Mutex<Option<Instant>>,
    wake: Notify,
    up_gauge: Gauge,
}

impl Weighed for Span {
    fn items(&self) -> u64 {
        1
    }

    fn bytes(&self) -> usize {
        // The attributes stay in shared request buffers: the span's own share.
        std::mem::size_of::<Span>() + self.name.len()
    }
}

impl Gateway {
    pub(super) fn new(key: &str, capacity: usize, depth: Gauge, up_gauge: Gauge) -> Self {
        // Presumed up until a connection fails: a fresh gateway gets its
        // traces at once, as every other agent will also send them there.
        up_gauge.set(1);
        Self {
            key: key.into(),
            seed: rendezvous::gateway_seed(key),
            // Never drops: a refusing queue's admission is its bound.
            spans: BoundedQueue::new(
                super::EXPORTER,
                Budget::records(capacity),
                Overflow::Refuse,
                depth,
                Counter::default(),
            ),
            up: AtomicBool::new(true),
            retired_at: Mutex::new(None),
            wake: Notify::new(),
            up_gauge,
        }
    }

    /// Whether traces should be placed here.
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Takes `permits` for up to `count` spans without waiting.
    pub(super) fn try_admit(&self, count: usize) -> Option<OwnedSemaphorePermit> {
        self.spans.try_admit(count)
    }

    /// Permits for up to `count` spans, waiting for room.
    pub(super) async fn admit(&self, count: usize) -> Option<OwnedSemaphorePermit> {
        self.spans.admit(count).await
    }

    /// Queues spans admitted with `permit`.
    pub(super) fn push(&self, spans: Vec<Span>, permit: OwnedSemaphorePermit) {
        self.spans.push_admitted(spans, permit);
        self.wake.notify_one();
    }

    /// Puts spans taken for a batch back at the front (a batch split).
    fn unshift(&self, spans: Vec<Span>) {
        self.spans.unshift(spans);
    }

    /// Up to `max` spans from the front.
    fn take(&self, max: usize) -> Vec<Span> {
        self.spans.take(1, max).unwrap_or_default()
    }

    /// Gives back the room of `count` spans that left this gateway.
    fn release(&self, count: usize) {
        self.spans.release(count);
    }

    pub(super) fn retire(&self) {
        self.retired_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(Instant::now);
        self.wake.notify_one();
    }

    fn retired_at(&self) -> Option<Instant> {
        *self
            .retired_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn set_up(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            self.up_gauge.set(i64::from(up));
            if up {
                tracing::info!(gateway = %self.key, "gateway up, its traces come back to it");
            } else {
                tracing::warn!(gateway = %self.key, "gateway down, its traces fail over");
            }
        }
    }
}

/// The task that empties one gateway's queue.
pub(super) struct Sender {
    gateway: Arc<Gateway>,
    shared: Arc<Shared>,
    client: GatewayClient,
    backoff: Backoff,
    /// Consecutive failures to reach the gateway, for probe spacing.
    failures: u32,
    /// While down: when the gateway may be tried again.
    next_probe: Instant,
    /// Hot-path warnings are logged once, then only counted.
    warned_exhausted: WarnOnce,
    warned_rejected: WarnOnce,
    warned_too_large: WarnOnce,
}

impl Sender {
    pub(super) fn new(gateway: Arc<Gateway>, shared: Arc<Shared>, client: GatewayClient) -> Self {
        let config = &shared.config;
        Self {
            backoff: Backoff {
                initial: config.initial_backoff,
                max: config.max_backoff,
            },
            failures: 0,
            next_probe: Instant::now(),
            warned_exhausted: WarnOnce::default(),
            warned_rejected: WarnOnce::default(),
            warned_too_large: WarnOnce::default(),
            gateway,
            shared,
            client,
        }
    }

    pub(super) async fn run(mut self) {
        while let Some(batch) = self.next_batch().await {
            self.deliver(batch).await;
        }
        self.shared.metrics.forget_gateway(&self.gateway.key);
    }

    /// The next batch: full, due by `flush_interval`, or anything queued
    /// when the gateway is down, retired or shutting down. `None` when the
    /// sender is done: retired and idle, or shutdown complete.
    async fn next_batch(&mut self) -> Option<Vec<Span>> {
        let shared = self.shared.clone();
        let config = &shared.config;
        loop {
            let now = Instant::now();
            let closing = self.shared.closing.is_cancelled();
            let deadline = self.shared.deadline();
            if deadline.is_some_and(|d| now >= d) {
                self.abandon();
                return None;
            }
            let retired_at = self.gateway.retired_at();
            let down = !self.gateway.is_up();
            let mut wake_at = None;
            if let Some(since) = self.gateway.spans.oldest() {
                let due = since + config.flush_interval;
                let hurry = closing || retired_at.is_some() || down;
                if hurry || now >= due || self.gateway.spans.len() >= config.max_batch {
                    let batch = self.gateway.take(config.max_batch);
                    if !batch.is_empty() {
                        return Some(batch);
                    }
                    continue;
                }
                wake_at = Some(due);
            }
            let idle = self.gateway.spans.is_idle();
            if closing && self.shared.pending() == 0 {
                return None;
            }
            // A reservation made from the previous member list may still
            // commit here; such a reservation lives at most the
            // enqueue timeout, which `retire_grace` covers.
            if let Some(retired_at) = retired_at
                && idle
                && now >= retired_at + self.shared.retire_grace
            {
                return None;
            }
            if down && idle && retired_at.is_none() && !closing {
                if now >= self.next_probe {
                    self.probe().await;
                    continue;
                }
                wake_at = Some(wake_at.map_or(self.next_probe, |w| w.min(self.next_probe)));
            }
            if let Some(retired_at) = retired_at {
                let exit_at = retired_at + self.shared.retire_grace;
                wake_at = Some(wake_at.map_or(exit_at, |w| w.min(exit_at)));
            }
            if closing {
                wake_at = Some(now + CLOSING_POLL);
            }
            if let Some(deadline) = deadline {
                wake_at = Some(wake_at.map_or(deadline, |w| w.min(deadline)));
            }
            let sleep = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.gateway.wake.notified() => {}
                () = sleep => {}
                () = self.shared.closing.cancelled(), if !closing => {}
            }
        }
    }

    /// Sends `spans` until delivered, failed over, or given up (counted).
    async fn deliver(&mut self, mut spans: Vec<Span>) {
        let shared = self.shared.clone();
        let (config, metrics) = (&shared.config, &shared.metrics);
        let mut retries = 0u32;
        loop {
            let resting = !self.gateway.is_up() && Instant::now() < self.next_probe;
            if resting || self.gateway.retired_at().is_some() {
                spans = self.reroute(spans);
                if spans.is_empty() {
                    return;
                }
            }
            let Some(batch) = self.fit(std::mem::take(&mut spans)) else {
                return;
            };
            let count = batch.spans().len();
            let batch = Arc::new(batch);
            let attempt = self.client.export(batch.clone()).await;
            // tonic has dropped its reference unless a timeout cut it short.
            spans = Arc::try_unwrap(batch)
                .map_or_else(|batch| batch.spans().to_vec(), Batch::into_spans);
            let retry_info = match Outcome::of(&attempt, count) {
                Outcome::Sent { rejected } => {
                    self.reached();
                    metrics.sent.inc_by(count as u64 - rejected);
                    metrics.dropped(drop_reason::REJECTED).inc_by(rejected);
                    self.finish(count);
                    return;
                }
                Outcome::Unreachable => {
                    metrics.failed(failure::UNREACHABLE).inc();
                    self.unreachable(&attempt);
                    spans = self.reroute(spans);
                    if spans.is_empty() {
                        return;
                    }
                    None
                }
                Outcome::Retry { reason, after } => {
                    metrics.failed(reason).inc();
                    if reason != failure::TIMEOUT {
                        // It answered: reachable, only busy.
                        self.reached();
                    }
                    after
                }
                Outcome::Permanent => {
                    metrics.failed(failure::REJECTED).inc();
                    metrics.dropped(drop_reason::REJECTED).inc_by(count as u64);
                    if let Attempt::Status(status) = &attempt
                        && self.warned_rejected.first()
                    {
                        tracing::warn!(gateway = %self.gateway.key, spans = count, code = ?status.code(), message = status.message(), "gateway rejected spans; dropped (counted in tracemap_exporter_dropped_total)");
                    }
                    self.finish(count);
                    return;
                }
            };
            retries += 1;
            if retries > config.max_retries {
                metrics
                    .dropped(drop_reason::RETRIES_EXHAUSTED)
                    .inc_by(spans.len() as u64);
                if self.warned_exhausted.first() {
                    tracing::warn!(gateway = %self.gateway.key, spans = spans.len(), "retries exhausted, spans dropped (counted in tracemap_exporter_dropped_total)");
                }
                self.finish(spans.len());
                return;
            }
            let delay = self.backoff.delay(retries, retry_info);
            if !self.rest(delay).await {
                metrics
                    .dropped(drop_reason::SHUTDOWN)
                    .inc_by(spans.len() as u64);
                self.finish(spans.len());
                return;
            }
            metrics.retries.inc();
        }
    }

    /// The batch to send: `spans`, after splitting off and re-queueing
    /// halves while the request is over `max_request_bytes`; `None` when a
    /// single span is too large (dropped, counted).
    fn fit(&mut self, spans: Vec<Span>) -> Option<Batch> {
        let mut batch = Batch::new(spans);
        loop {
            let bytes = batch.request_len();
            if bytes <= self.shared.config.max_request_bytes {
                return Some(batch);
            }
            if batch.spans().len() == 1 {
                self.shared.metrics.dropped(drop_reason::TOO_LARGE).inc();
                if self.warned_too_large.first() {
                    tracing::warn!(gateway = %self.gateway.key, bytes, "span larger than exporters.forward.max_request_bytes; dropped (counted)");
                }
                self.finish(1);
                return None;
            }
            let back = batch.split_off(batch.spans().len() / 2);
            self.gateway.unshift(back);
        }
    }

    /// Moves each span to the best gateway that is up, other than this
    /// one, where there is room; returns the spans that found none.
    fn reroute(&self, spans: Vec<Span>) -> Vec<Span> {
        // Past the deadline other senders may be gone: keep the spans,
        // which are then dropped here, counted.
        if self.shared.deadline().is_some_and(|d| Instant::now() >= d) {
            return spans;
        }
        let members: Arc<Members> = self.shared.members();
        let mut parts: Vec<Vec<Span>> = vec![Vec::new(); members.gateways.len()];
        let mut left = Vec::new();
        let eligible = |i: usize| {
            let gateway = &members.gateways[i];
            gateway.is_up() && !Arc::ptr_eq(gateway, &self.gateway)
        };
        for span in spans {
            match rendezvous::best(trace_hash(&span.trace_id), &members.seeds, eligible) {
                Some(i) => parts[i].push(span),
                None => left.push(span),
            }
        }
        for (target, part) in members.gateways.iter().zip(parts) {
            if part.is_empty() {
                continue;
            }
            match target.try_admit(part.len()) {
                Some(permit) => {
                    let count = part.len();
                    target.push(part, permit);
                    self.gateway.release(count);
                    self.shared.metrics.rerouted.inc_by(count as u64);
                }
                None => left.extend(part),
            }
        }
        left
    }

    /// An empty export: is the down gateway back?
    async fn probe(&mut self) {
        let attempt = self.client.export(Arc::default()).await;
        match Outcome::of(&attempt, 0) {
            Outcome::Sent { .. } => self.reached(),
            Outcome::Unreachable => self.unreachable(&attempt),
            // It answers but is not taking spans (busy, shutting down).
            Outcome::Retry { .. } | Outcome::Permanent => {
                self.failures += 1;
                self.next_probe = Instant::now() + self.backoff.delay(self.failures, None);
            }
        }
    }

    fn reached(&mut self) {
        self.failures = 0;
        self.gateway.set_up(true);
    }

    fn unreachable(&mut self, attempt: &Attempt) {
        self.failures = self.failures.saturating_add(1);
        self.next_probe = Instant::now() + self.backoff.delay(self.failures, None);
        if self.gateway.is_up()
            && let Attempt::Status(status) = attempt
        {
            tracing::debug!(gateway = %self.gateway.key, error = %status, "export failed");
        }
        self.gateway.set_up(false);
    }

    /// Sleeps `delay`, cut short by the shutdown deadline: `false` then.
    async fn rest(&self, delay: Duration) -> bool {
        let wake = Instant::now() + delay;
        loop {
            let deadline = self.shared.deadline();
            if deadline.is_some_and(|d| wake > d) {
                tokio::time::sleep_until(deadline.expect("checked")).await;
                return false;
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake) => return true,
                // Shutdown sets a deadline: look at it again.
                () = self.shared.closing.cancelled(), if deadline.is_none() => {}
            }
        }
    }

    /// `count` spans left for good (delivered or dropped).
    fn finish(&self, count: usize) {
        self.gateway.release(count);
        self.shared.span_done(count);
    }

    /// Shutdown deadline reached: drop what is still queued, counted.
    fn abandon(&self) {
        let left = self.gateway.take(usize::MAX);
        if !left.is_empty() {
            self.shared
                .metrics
                .dropped(drop_reason::SHUTDOWN)
                .inc_by(left.len() as u64);
            tracing::warn!(gateway = %self.gateway.key, spans = left.len(), "shutdown deadline reached; queued spans dropped");
            self.finish(left.len());
        }
    }
}

/// Admits spans to several gateways at once or not at all.
pub(super) async fn admit_all(
    members: &Members,
    counts: &[usize],
) -> Option<Vec<(usize, OwnedSemaphorePermit)>> {
    let mut permits = Vec::new();
    for (index, &count) in counts.iter().enumerate() {
        if count > 0 {
            permits.push((index, members.gateways[index].admit(count).await?));
        }
    }
    Some(permits)
}
