//! One gateway: its bounded queue and the task that batches, sends,
//! retries and fails over.
//!
//! The queue is the exporters' refusing [`BoundedQueue`]: admission takes
//! permits for every span before any is queued, so the bound covers spans
//! queued *and* in flight, and permits come back only when a span is
//! delivered, dropped (counted) or moved to another gateway.
//!
//! With `durability: disk` a committed request is written to the gateway's
//! disk queue instead ([`super::durable`]); its permits come back at once,
//! as the spans are no longer in memory. The memory queue then holds only
//! what the disk could not take (a write failure) and spans moved here from
//! a down gateway's memory queue.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::client::GatewayClient;
use super::durable::{self, GatewayDisk, Request};
use super::encode::Batch;
use super::rendezvous::{self, trace_hash};
use super::retry::{Attempt, Outcome, failure};
use super::{Members, Shared, drop_reason};
use crate::exporter::backoff::Backoff;
use crate::exporter::disk::Ticket;
use crate::exporter::queue::{BoundedQueue, Budget, Overflow, WarnOnce, Weighed};
use crate::model::Span;

/// How often an idle sender re-checks during shutdown whether every
/// gateway's queue is empty (spans may still be moved to it).
const CLOSING_POLL: Duration = Duration::from_millis(20);
/// How often admission looks again at a disk queue near its budget.
const DISK_FULL_POLL: Duration = Duration::from_millis(50);

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
    /// `durability: disk`: the gateway's requests, written before commit
    /// returns; `None` in memory mode or when the queue cannot be opened.
    disk: Option<Arc<GatewayDisk>>,
    /// Spans of disk records taken by the sender and not yet acknowledged.
    disk_taken: AtomicU64,
}

/// What a sender sends next.
pub(super) enum Work {
    /// Spans from the memory queue.
    Spans(Vec<Span>),
    /// Records from the disk queue, acknowledged once delivered.
    Disk(Vec<Request>, Ticket),
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
    pub(super) fn new(
        key: &str,
        capacity: usize,
        depth: Gauge,
        up_gauge: Gauge,
        disk: Option<Arc<GatewayDisk>>,
    ) -> Self {
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
            disk,
            disk_taken: AtomicU64::new(0),
        }
    }

    /// Spans written to disk and not yet acknowledged: what the next start
    /// sends if this run stops now.
    pub(super) fn disk_unacknowledged_spans(&self) -> u64 {
        self.disk.as_ref().map_or(0, |disk| {
            disk.queue.waiting_items() + self.disk_taken.load(Ordering::Relaxed)
        })
    }

    /// Whether the disk queue is nearly at its budget: admission waits
    /// (nine tenths, so the oldest are dropped only when clients do not
    /// back off).
    pub(super) fn disk_nearly_full(&self) -> bool {
        self.disk.as_ref().is_some_and(|disk| {
            let queue = &disk.queue;
            queue.bytes() >= queue.budget() / 10 * 9
        })
    }

    /// Queues committed spans: written to the disk queue (the permit then
    /// comes back, the spans are no longer in memory), or kept in memory
    /// with the permit when there is no disk or the write failed.
    pub(super) fn commit(&self, shared: &Shared, spans: Vec<Span>, permit: OwnedSemaphorePermit) {
        if self.write(shared, &spans).is_ok() {
            drop(permit);
            return;
        }
        shared.pending.fetch_add(spans.len(), Ordering::AcqRel);
        self.push(spans, permit);
    }

    /// Queues spans placed here again from disk records: to disk, else to
    /// memory if there is room; `Err` when neither took them.
    pub(super) fn queue_again(&self, shared: &Shared, spans: Vec<Span>) -> Result<(), ()> {
        if self.write(shared, &spans).is_ok() {
            return Ok(());
        }
        let permit = self.try_admit(spans.len()).ok_or(())?;
        shared.pending.fetch_add(spans.len(), Ordering::AcqRel);
        self.push(spans, permit);
        Ok(())
    }

    /// Writes `spans` to the disk queue as requests; `Err` without one or
    /// when the write failed (counted, logged once).
    fn write(&self, shared: &Shared, spans: &[Span]) -> Result<(), ()> {
        let (Some(disk), Some(disks)) = (&self.disk, &shared.disks) else {
            return Err(());
        };
        let config = &shared.config;
        let (requests, too_large) =
            durable::encode_requests(spans, config.max_batch, config.max_request_bytes);
        if let Err((_, err)) = disk.queue.push(requests) {
            disks.write_failed(&self.key, &err);
            return Err(());
        }
        if too_large > 0 {
            shared
                .metrics
                .dropped(drop_reason::TOO_LARGE)
                .inc_by(too_large);
        }
        disks.publish();
        self.wake.notify_one();
        Ok(())
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
    /// When disk records were last taken: a partial batch waits
    /// `flush_interval` after it.
    last_disk_take: Instant,
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
            last_disk_take: Instant::now(),
            gateway,
            shared,
            client,
        }
    }

    pub(super) async fn run(mut self) {
        while let Some(work) = self.next_batch().await {
            match work {
                Work::Spans(batch) => self.deliver(batch).await,
                Work::Disk(records, ticket) => self.deliver_disk(records, ticket).await,
            }
        }
        self.shared.metrics.forget_gateway(&self.gateway.key);
        if let Some(disk) = &self.gateway.disk {
            disk.queue.sync();
        }
    }

    /// Disk records to send now, if any are due: a full batch's worth, or
    /// `flush_interval` after the last take, or at once when hurrying.
    fn take_disk(
        &mut self,
        now: Instant,
        hurry: bool,
        wake_at: &mut Option<Instant>,
    ) -> Option<Work> {
        let disk = self.gateway.disk.as_ref()?;
        let queue = &disk.queue;
        let records = queue.waiting_records();
        if records == 0 {
            return None;
        }
        let config = &self.shared.config;
        let items = queue.waiting_items();
        let due = self.last_disk_take + config.flush_interval;
        if !hurry && now < due && items < config.max_batch as u64 {
            *wake_at = Some(wake_at.map_or(due, |w| w.min(due)));
            return None;
        }
        // About a batch of spans: records hold up to `max_batch` each.
        let per_record = items.div_ceil(records).max(1);
        let take = (config.max_batch as u64)
            .div_ceil(per_record)
            .clamp(1, 4096) as usize;
        let (batch, ticket) = queue.take(1, take)?;
        let spans = batch.iter().map(|r| u64::from(r.spans)).sum();
        self.gateway.disk_taken.fetch_add(spans, Ordering::Relaxed);
        self.last_disk_take = now;
        if let Some(disks) = &self.shared.disks {
            disks.publish();
        }
        Some(Work::Disk(batch, ticket))
    }

    /// Whether records wait on disk.
    fn disk_waiting(&self) -> bool {
        self.gateway
            .disk
            .as_ref()
            .is_some_and(|disk| disk.queue.waiting_records() > 0)
    }

    /// The next batch: full, due by `flush_interval`, or anything queued
    /// when the gateway is down, retired or shutting down. `None` when the
    /// sender is done: retired and idle, or shutdown complete.
    async fn next_batch(&mut self) -> Option<Work> {
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
                        return Some(Work::Spans(batch));
                    }
                    continue;
                }
                wake_at = Some(due);
            }
            // Disk records: a shutdown sends them while the gateway is up
            // and leaves them for the next start when it is down.
            let hurry = closing || retired_at.is_some() || down;
            if !(closing && down)
                && let Some(work) = self.take_disk(now, hurry, &mut wake_at)
            {
                return Some(work);
            }
            let idle = self.gateway.spans.is_idle() && !self.disk_waiting();
            if closing && self.shared.pending() == 0 && (down || !self.disk_waiting()) {
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
                    self.rejected(&attempt, count);
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

    /// Sends disk records, joined into requests within `max_batch` and
    /// `max_request_bytes`, until the gateway took or refused each for good
    /// (then they are acknowledged): retryable failures and an unreachable
    /// gateway are retried without limit, as the records wait on disk, not
    /// in memory. Returns without acknowledging (they are sent again after
    /// the next start) at the shutdown deadline, or at shutdown while the
    /// gateway is down. Records of a gateway that left the set are placed
    /// again over the others; records whose segment the disk budget dropped
    /// meanwhile are counted as dropped there.
    async fn deliver_disk(&mut self, records: Vec<Request>, ticket: Ticket) {
        let shared = self.shared.clone();
        let (config, metrics) = (&shared.config, &shared.metrics);
        let disk = self
            .gateway
            .disk
            .clone()
            .expect("disk work comes from a disk");
        let taken: u64 = records.iter().map(|r| u64::from(r.spans)).sum();
        let requests = durable::group(records, config.max_batch, config.max_request_bytes);
        let mut left = requests.as_slice();
        let mut retries = 0u32;
        while let Some(request) = left.first() {
            if self.gateway.retired_at().is_some() {
                if durable::place_again(&shared, left, Some(&self.gateway)) {
                    break;
                }
                // Nowhere to go yet: wait, as for a retry.
                if !self.rest(config.max_backoff).await {
                    return;
                }
                continue;
            }
            if disk.queue.is_abandoned(&ticket) {
                let spans = left.iter().map(|r| u64::from(r.spans)).sum();
                disk.queue.count_abandoned(spans);
                break;
            }
            let count = request.spans as usize;
            let attempt = self.client.export_encoded(request.body.clone()).await;
            let wait = match Outcome::of(&attempt, count) {
                Outcome::Sent { rejected } => {
                    self.reached();
                    metrics.sent.inc_by(count as u64 - rejected);
                    metrics.dropped(drop_reason::REJECTED).inc_by(rejected);
                    left = &left[1..];
                    retries = 0;
                    continue;
                }
                Outcome::Permanent => {
                    self.rejected(&attempt, count);
                    left = &left[1..];
                    continue;
                }
                Outcome::Unreachable => {
                    metrics.failed(failure::UNREACHABLE).inc();
                    self.unreachable(&attempt);
                    self.next_probe.saturating_duration_since(Instant::now())
                }
                Outcome::Retry { reason, after } => {
                    metrics.failed(reason).inc();
                    if reason != failure::TIMEOUT {
                        self.reached();
                    }
                    retries = retries.saturating_add(1);
                    self.backoff.delay(retries, after)
                }
            };
            if self.shared.closing.is_cancelled() && !self.gateway.is_up() {
                // Left on disk for the next start; not lost.
                return;
            }
            if !self.rest(wait).await {
                return;
            }
            metrics.retries.inc();
        }
        disk.queue.ack(ticket);
        self.gateway.disk_taken.fetch_sub(taken, Ordering::Relaxed);
        if let Some(disks) = &shared.disks {
            disks.publish();
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
    /// Counts spans the gateway refused for good, warning the first time.
    fn rejected(&self, attempt: &Attempt, count: usize) {
        let metrics = &self.shared.metrics;
        metrics.failed(failure::REJECTED).inc();
        metrics.dropped(drop_reason::REJECTED).inc_by(count as u64);
        if let Attempt::Status(status) = attempt
            && self.warned_rejected.first()
        {
            tracing::warn!(gateway = %self.gateway.key, spans = count, code = ?status.code(), message = status.message(), "gateway rejected spans; dropped (counted in tracemap_exporter_dropped_total)");
        }
    }

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
            let gateway = &members.gateways[index];
            // The caller's deadline bounds this wait.
            while gateway.disk_nearly_full() {
                tokio::time::sleep(DISK_FULL_POLL).await;
            }
            permits.push((index, gateway.admit(count).await?));
        }
    }
    Some(permits)
}
