//! One gateway: its bounded queue and the task that batches, sends,
//! retries and fails over.
//!
//! Admission takes semaphore permits, one per span, so the queue bound
//! covers spans queued *and* in flight; permits come back only when a
//! span is delivered, dropped (counted) or moved to another gateway. A
//! request bigger than a whole queue takes every permit and runs up a
//! debt that its own release pays first, so the bound is exceeded by at
//! most one request and never drifts.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::client::GatewayClient;
use super::encode::Batch;
use super::rendezvous::{self, trace_hash};
use super::retry::{Attempt, Outcome, failure};
use super::{Members, Shared, drop_reason};
use crate::exporter::backoff::Backoff;
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
    /// Spans that may still enter (queued and in flight count against it).
    pub room: Arc<Semaphore>,
    /// `queue_size`.
    pub capacity: usize,
    up: AtomicBool,
    state: Mutex<QueueState>,
    wake: Notify,
    depth: Gauge,
    up_gauge: Gauge,
}

#[derive(Default)]
struct QueueState {
    spans: VecDeque<Span>,
    /// Spans admitted beyond the permits they took (oversize requests).
    debt: usize,
    /// When the oldest queued span arrived, for `flush_interval`.
    since: Option<Instant>,
    /// When the gateway left the set; its sender then moves its spans.
    retired_at: Option<Instant>,
}

impl Gateway {
    pub(super) fn new(key: &str, capacity: usize, depth: Gauge, up_gauge: Gauge) -> Self {
        // Presumed up until a connection fails: a fresh gateway gets its
        // traces at once, as every other agent will also send them there.
        up_gauge.set(1);
        Self {
            key: key.into(),
            seed: rendezvous::gateway_seed(key),
            room: Arc::new(Semaphore::new(capacity)),
            capacity,
            up: AtomicBool::new(true),
            state: Mutex::new(QueueState::default()),
            wake: Notify::new(),
            depth,
            up_gauge,
        }
    }

    fn state(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether traces should be placed here.
    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Takes `permits` for up to `count` spans without waiting.
    pub(super) fn try_admit(&self, count: usize) -> Option<OwnedSemaphorePermit> {
        let want = u32::try_from(count.min(self.capacity)).unwrap_or(u32::MAX);
        self.room.clone().try_acquire_many_owned(want).ok()
    }

    /// Permits for up to `count` spans, waiting for room.
    pub(super) async fn admit(&self, count: usize) -> Option<OwnedSemaphorePermit> {
        let want = u32::try_from(count.min(self.capacity)).unwrap_or(u32::MAX);
        self.room.clone().acquire_many_owned(want).await.ok()
    }

    /// Queues spans admitted with `permit`.
    pub(super) fn push(&self, spans: Vec<Span>, permit: OwnedSemaphorePermit) {
        let count = spans.len();
        let held = permit.num_permits();
        // Returned span by span as they leave, in `release`.
        permit.forget();
        {
            let mut state = self.state();
            state.debt += count.saturating_sub(held);
            if state.spans.is_empty() {
                state.since = Some(Instant::now());
            }
            state.spans.extend(spans);
        }
        self.depth.inc_by(count as i64);
        self.wake.notify_one();
    }

    /// Puts spans taken for a batch back at the front (a batch split).
    fn unshift(&self, spans: Vec<Span>) {
        let mut state = self.state();
        for span in spans.into_iter().rev() {
            state.spans.push_front(span);
        }
        state.since.get_or_insert_with(Instant::now);
    }

    /// Up to `max` spans from the front.
    fn take(&self, max: usize) -> Vec<Span> {
        let mut state = self.state();
        let count = state.spans.len().min(max);
        let batch: Vec<Span> = state.spans.drain(..count).collect();
        state.since = (!state.spans.is_empty()).then(Instant::now);
        batch
    }

    /// Gives back the room of `count` spans that left this gateway.
    fn release(&self, count: usize) {
        let returned = {
            let mut state = self.state();
            let paid = state.debt.min(count);
            state.debt -= paid;
            count - paid
        };
        self.room.add_permits(returned);
        self.depth.dec_by(count as i64);
    }

    pub(super) fn retire(&self) {
        self.state().retired_at.get_or_insert_with(Instant::now);
        self.wake.notify_one();
    }

    fn retired_at(&self) -> Option<Instant> {
        self.state().retired_at
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
    warned_exhausted: bool,
    warned_rejected: bool,
    warned_too_large: bool,
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
            warned_exhausted: false,
            warned_rejected: false,
            warned_too_large: false,
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
            {
                let state = self.gateway.state();
                if let Some(since) = state.since
                    && !state.spans.is_empty()
                {
                    let due = since + config.flush_interval;
                    let hurry = closing || retired_at.is_some() || down;
                    if hurry || now >= due || state.spans.len() >= config.max_batch {
                        drop(state);
                        return Some(self.gateway.take(config.max_batch));
                    }
                    wake_at = Some(due);
                }
            }
            let idle = self.gateway.depth.get() == 0
                && self.gateway.room.available_permits() == self.gateway.capacity;
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
                        && !std::mem::replace(&mut self.warned_rejected, true)
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
                if !std::mem::replace(&mut self.warned_exhausted, true) {
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
                if !std::mem::replace(&mut self.warned_too_large, true) {
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
