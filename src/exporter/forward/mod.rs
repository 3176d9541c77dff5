//! Agent mode: every received span goes over OTLP/gRPC to a gateway chosen
//! by rendezvous hashing of its trace id, so all spans of a trace meet in
//! one gateway and its service graph sees both halves of every call.
//!
//! ```text
//!  receivers ─► ForwardHandle::reserve (room on every target gateway, or refuse)
//!                 │ commit
//!                 ▼
//!   gateway queue (bounded, spans) ─► sender task: batch ─► encode ─► Export ─► gateway
//!     or, durability: disk,            │ unreachable: mark down, move spans to each
//!   gateway disk queue (requests) ─────┤   trace's next gateway in hash order
//!     written before commit returns    └ UNAVAILABLE / throttled: backoff + jitter, retry
//! ```
//!
//! - **Placement** ([`rendezvous`]): the best-scoring gateway that is up.
//!   A membership change (DNS) moves only the traces whose best gateway
//!   changed, about 1/N.
//! - **Admission refuses, never drops**: a request is queued whole on
//!   every gateway it needs, or refused with UNAVAILABLE / 503 after
//!   `pipeline.enqueue_timeout`, as every queue in tracemap is (the SDK
//!   retries; a dropped-oldest queue would lose spans silently with no one
//!   to retry them). Spans are dropped only after admission, counted by
//!   reason: retries exhausted, rejected by the gateway, too large, or
//!   still queued at the shutdown deadline.
//! - **Failover**: a gateway that cannot be reached is marked down; its
//!   queued and new traces go to their next gateway in hash order, and it
//!   is probed with an empty export on a backoff until it answers, after
//!   which its traces come back. Both agents of a call make the same
//!   choice whenever they see the same gateways up, which is what keeps a
//!   trace together; a trace in flight while a gateway goes down or comes
//!   back can be split (its two halves counted at two gateways as
//!   unpaired), and so can one that straddles a DNS change.
//! - **Retry**: answers the OTLP spec calls retryable are retried on the
//!   same gateway (moving them would split traces) with exponential
//!   backoff and jitter, or the gateway's `RetryInfo` delay, up to
//!   `max_retries`.
//! - **Shutdown**: after the receivers stop, senders flush at once and
//!   retry until a little before the deadline, then drop what is left,
//!   counted.
//! - **Durability** ([`durable`]): with `durability: disk` a committed
//!   request's spans are encoded into OTLP requests and written to the
//!   disk queue of each gateway they go to before `commit` returns, so the
//!   client is answered only once they are on disk; the memory queue then
//!   holds only what a failed write left behind. Disk records are sent in
//!   order and acknowledged once the gateway took them (or refused them for
//!   good, counted). They **wait for the gateway they were written for**:
//!   retried without limit while it is unreachable (bounded by
//!   `disk_budget`, oldest dropped beyond it, counted), never failed over,
//!   while new traces fail over as above. At shutdown they are flushed while
//!   the gateway answers and left for the next start when it does not (not
//!   counted as dropped). After a restart they go to the same gateway if
//!   it is still in the set; a gateway's records whose gateway left the set
//!   (or is not in it after a restart) are decoded and their spans placed
//!   again by trace id over the current gateways.

pub mod config;
pub mod durable;
pub mod encode;
pub mod rendezvous;
pub mod retry;

mod client;
mod gateway;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use config::ForwardConfig;

use crate::exporter::{ExporterLabels, ExporterMetrics, QueueLabels, ReasonLabels};
use crate::model::Span;
use crate::pipeline::{ForwardReservation, ForwardTarget, Reserving};
use crate::receiver::Refusal;
use crate::validate::Valid;
use client::GatewayClient;
use durable::Disks;
use gateway::{Gateway, Sender};
use rendezvous::trace_hash;

/// The `exporter` label of every series this exporter writes.
pub const EXPORTER: &str = "forward";

/// Back-off suggested to clients when a gateway queue is full.
const REFUSE_RETRY_AFTER: Duration = Duration::from_secs(1);
/// Longest wait for one DNS resolution.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How soon DNS is tried again while no gateway is known.
const RESOLVE_RETRY: Duration = Duration::from_secs(1);
/// Longest the senders get to finish before the app's deadline, so that
/// joining them fits in it.
const SHUTDOWN_MARGIN: Duration = Duration::from_millis(250);

/// Errors of the forward exporter.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A gateway this request needs had no room for the whole wait.
    #[error("gateway queue is full, retry after {retry_after:?}")]
    Full {
        /// Suggested client back-off.
        retry_after: Duration,
    },
    /// DNS has not named any gateway yet.
    #[error("no gateway known yet (exporters.forward.dns has not resolved)")]
    NoGateway,
    /// Shutting down; no more spans are taken.
    #[error("forwarding is shutting down")]
    Closed,
    /// A gateway address is not a valid URI authority.
    #[error("invalid gateway endpoint {endpoint:?}")]
    Endpoint {
        /// The address.
        endpoint: String,
        /// Why tonic refused it.
        #[source]
        source: tonic::transport::Error,
    },
}

impl From<ForwardError> for Refusal {
    fn from(err: ForwardError) -> Self {
        match err {
            ForwardError::Full { retry_after } => Refusal::Full { retry_after },
            ForwardError::Closed => Refusal::Closed,
            ForwardError::NoGateway | ForwardError::Endpoint { .. } => Refusal::Full {
                retry_after: REFUSE_RETRY_AFTER,
            },
        }
    }
}

/// Why spans were dropped after admission: the `reason` label of
/// `tracemap_exporter_dropped_total`.
pub mod drop_reason {
    /// `max_retries` retries failed.
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    /// The gateway refused them for good (non-retryable status, or
    /// `partial_success`).
    pub const REJECTED: &str = "rejected";
    /// One span alone exceeds `max_request_bytes`.
    pub const TOO_LARGE: &str = "too_large";
    /// Still queued when the shutdown deadline came.
    pub const SHUTDOWN: &str = "shutdown";
    /// Every reason, for creating the series up front.
    pub const ALL: [&str; 4] = [RETRIES_EXHAUSTED, REJECTED, TOO_LARGE, SHUTDOWN];
}

/// Why requests were refused at admission: the `reason` label of
/// `tracemap_exporter_refused_total`.
pub mod refuse_reason {
    /// A target gateway's queue stayed full for the enqueue timeout.
    pub const QUEUE_FULL: &str = "queue_full";
    /// No gateway is known (DNS not resolved yet).
    pub const NO_GATEWAY: &str = "no_gateway";
}

type GatewayLabels = QueueLabels;

const LABELS: ExporterLabels = ExporterLabels { exporter: EXPORTER };

/// Self-metrics; the label sets are bounded by the reasons above and the
/// gateway count ([`config::MAX_GATEWAYS`]). The `tracemap_exporter_*`
/// families every exporter has are shared ([`ExporterMetrics`]); the
/// gateway-specific ones are registered here.
struct ForwardMetrics {
    sent: Counter,
    retries: Counter,
    rerouted: Counter,
    resolve_failed: Counter,
    gateways: Gauge,
    failed: Family<ReasonLabels, Counter>,
    dropped: Family<ReasonLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    queue_depth: Family<GatewayLabels, Gauge>,
    gateway_up: Family<GatewayLabels, Gauge>,
}

impl ForwardMetrics {
    fn register(registry: &mut Registry, shared: &ExporterMetrics) -> Self {
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let family = Family::<ExporterLabels, Counter>::default();
            registry.register(name, help, family.clone());
            family.get_or_create(&LABELS).clone()
        };
        let rerouted = counter(
            registry,
            "tracemap_exporter_rerouted",
            "Spans moved to another gateway: failover past a down gateway, or a gateway left the set",
        );
        let resolve_failed = counter(
            registry,
            "tracemap_exporter_resolve_failed",
            "DNS resolutions of exporters.forward.dns that failed or named no address",
        );
        let gateways = Family::<ExporterLabels, Gauge>::default();
        registry.register(
            "tracemap_exporter_gateways",
            "Gateways in the current set",
            gateways.clone(),
        );
        let metrics = Self {
            sent: shared.sent.get_or_create(&LABELS).clone(),
            retries: shared.retries.get_or_create(&LABELS).clone(),
            rerouted,
            resolve_failed,
            gateways: gateways.get_or_create(&LABELS).clone(),
            failed: shared.failed.clone(),
            dropped: shared.dropped.clone(),
            refused: Family::default(),
            queue_depth: shared.queue_depth.clone(),
            gateway_up: Family::default(),
        };
        registry.register(
            "tracemap_exporter_refused",
            "Spans refused at admission, by reason; the client retries",
            metrics.refused.clone(),
        );
        registry.register(
            "tracemap_exporter_gateway_up",
            "1 while a gateway is reachable, 0 while its traces fail over",
            metrics.gateway_up.clone(),
        );
        // Dashboards and alerts read these from the start, at zero.
        for reason in retry::failure::ALL {
            drop(metrics.failed(reason));
        }
        for reason in drop_reason::ALL {
            drop(metrics.dropped(reason));
        }
        for reason in [refuse_reason::QUEUE_FULL, refuse_reason::NO_GATEWAY] {
            drop(metrics.refused(reason));
        }
        metrics
    }

    fn failed(&self, reason: &'static str) -> Counter {
        self.failed
            .get_or_create(&ReasonLabels {
                exporter: EXPORTER,
                reason,
            })
            .clone()
    }

    fn dropped(&self, reason: &'static str) -> Counter {
        self.dropped
            .get_or_create(&ReasonLabels {
                exporter: EXPORTER,
                reason,
            })
            .clone()
    }

    fn refused(&self, reason: &'static str) -> Counter {
        self.refused
            .get_or_create(&ReasonLabels {
                exporter: EXPORTER,
                reason,
            })
            .clone()
    }

    fn gateway_labels(key: &str) -> GatewayLabels {
        GatewayLabels {
            exporter: EXPORTER,
            gateway: Some(key.to_owned()),
        }
    }

    fn forget_gateway(&self, key: &str) {
        let labels = Self::gateway_labels(key);
        self.queue_depth.remove(&labels);
        self.gateway_up.remove(&labels);
    }
}

/// The gateway set at one moment; replaced whole when DNS changes it.
struct Members {
    /// Sorted by key, so every request takes gateway room in one order.
    gateways: Vec<Arc<Gateway>>,
    /// `gateways[i].seed`, contiguous for placement.
    seeds: Vec<u64>,
}

/// State shared by admission, the senders and the resolver.
struct Shared {
    config: ForwardConfig,
    /// How long a gateway that left the set keeps its sender for
    /// reservations taken just before; above the enqueue timeout.
    retire_grace: Duration,
    members: RwLock<Arc<Members>>,
    senders: Mutex<Vec<JoinHandle<()>>>,
    metrics: ForwardMetrics,
    /// Spans admitted and not yet delivered or dropped.
    pending: AtomicUsize,
    closing: CancellationToken,
    /// When senders give up; set once, at shutdown.
    deadline: OnceLock<Instant>,
    /// `durability: disk`: where the gateways' queues live.
    disks: Option<Disks>,
}

impl Shared {
    fn members(&self) -> Arc<Members> {
        self.members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    fn span_done(&self, count: usize) {
        self.pending.fetch_sub(count, Ordering::AcqRel);
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline.get().copied()
    }

    /// Makes `keys` the gateway set: keeps gateways already known, starts
    /// a sender for each new one, retires the ones that left.
    fn set_members(self: &Arc<Self>, keys: BTreeSet<String>) -> Result<(), ForwardError> {
        let current = self.members();
        let mut gateways = Vec::with_capacity(keys.len());
        let mut added = Vec::new();
        for key in &keys {
            match current.gateways.iter().find(|g| &*g.key == key) {
                Some(gateway) => gateways.push(gateway.clone()),
                None => {
                    let client = GatewayClient::new(key, &self.config)?;
                    let labels = ForwardMetrics::gateway_labels(key);
                    let disk = self
                        .disks
                        .as_ref()
                        .and_then(|disks| disks.open(key, self.config.max_batch));
                    let gateway = Arc::new(Gateway::new(
                        key,
                        self.config.queue_size,
                        self.metrics.queue_depth.get_or_create(&labels).clone(),
                        self.metrics.gateway_up.get_or_create(&labels).clone(),
                        disk,
                    ));
                    added.push((gateway.clone(), client));
                    gateways.push(gateway);
                }
            }
        }
        let removed: Vec<Arc<Gateway>> = current
            .gateways
            .iter()
            .filter(|g| !keys.contains(&*g.key))
            .cloned()
            .collect();
        if added.is_empty() && removed.is_empty() {
            return Ok(());
        }
        let seeds = gateways.iter().map(|g| g.seed).collect();
        let first = current.gateways.is_empty() && !gateways.is_empty();
        let adopting = first.then(|| gateways.clone());
        *self.members.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(Members { gateways, seeds });
        if let Some(members) = adopting {
            // Before the senders start, so the spans placed here go out in
            // their first batches.
            durable::adopt_orphans(self, &members);
        }
        self.metrics.gateways.set(keys.len() as i64);
        let mut senders = self.senders.lock().unwrap_or_else(PoisonError::into_inner);
        senders.retain(|task| !task.is_finished());
        for (gateway, client) in added {
            tracing::info!(gateway = %gateway.key, "gateway added");
            senders.push(tokio::spawn(
                Sender::new(gateway, self.clone(), client).run(),
            ));
        }
        for gateway in removed {
            tracing::info!(gateway = %gateway.key, "gateway removed, its traces move");
            gateway.retire();
        }
        Ok(())
    }
}

/// Admission side, cloned into the pipeline handle of every receiver.
#[derive(Clone)]
pub struct ForwardHandle {
    shared: Arc<Shared>,
}

impl ForwardTarget for ForwardHandle {
    fn reserve<'a>(&'a self, spans: &'a [Span], deadline: Instant) -> Reserving<'a> {
        Box::pin(async move {
            let reservation = ForwardHandle::reserve(self, spans, deadline).await?;
            Ok(Box::new(Committable {
                handle: self.clone(),
                reservation,
            }) as Box<dyn ForwardReservation>)
        })
    }
}

/// A reservation with the handle that commits it, for the pipeline.
struct Committable {
    handle: ForwardHandle,
    reservation: Reservation,
}

impl ForwardReservation for Committable {
    fn commit(self: Box<Self>, spans: Vec<Span>) {
        let Self {
            handle,
            reservation,
        } = *self;
        handle.commit(reservation, spans);
    }
}

/// Room taken on every gateway a request's spans go to; commit queues them.
pub struct Reservation {
    members: Arc<Members>,
    targets: Vec<u32>,
    counts: Vec<usize>,
    permits: Vec<(usize, OwnedSemaphorePermit)>,
}

impl ForwardHandle {
    /// Places each span and waits until `deadline` for room for all of
    /// them; dropping the reservation instead of committing gives the room
    /// back.
    pub async fn reserve(
        &self,
        spans: &[Span],
        deadline: Instant,
    ) -> Result<Reservation, ForwardError> {
        let shared = &self.shared;
        if shared.closing.is_cancelled() {
            return Err(ForwardError::Closed);
        }
        let members = shared.members();
        if members.gateways.is_empty() {
            shared
                .metrics
                .refused(refuse_reason::NO_GATEWAY)
                .inc_by(spans.len() as u64);
            return Err(ForwardError::NoGateway);
        }
        let up: Vec<bool> = members.gateways.iter().map(|g| g.is_up()).collect();
        let mut counts = vec![0; members.gateways.len()];
        let targets = spans
            .iter()
            .map(|span| {
                let index =
                    rendezvous::place(trace_hash(&span.trace_id), &members.seeds, |g| up[g])
                        .expect("members are not empty");
                counts[index] += 1;
                index as u32
            })
            .collect();
        let admitted =
            tokio::time::timeout_at(deadline, gateway::admit_all(&members, &counts)).await;
        match admitted {
            Ok(Some(permits)) => Ok(Reservation {
                members,
                targets,
                counts,
                permits,
            }),
            Ok(None) => Err(ForwardError::Closed),
            Err(_elapsed) => {
                shared
                    .metrics
                    .refused(refuse_reason::QUEUE_FULL)
                    .inc_by(spans.len() as u64);
                Err(ForwardError::Full {
                    retry_after: REFUSE_RETRY_AFTER,
                })
            }
        }
    }

    /// Queues `spans`, the same spans `reservation` was taken for: with
    /// `durability: disk`, written to each gateway's disk queue before this
    /// returns (the pipeline answers the client after it).
    pub fn commit(&self, reservation: Reservation, spans: Vec<Span>) {
        let Reservation {
            members,
            targets,
            counts,
            permits,
        } = reservation;
        debug_assert_eq!(targets.len(), spans.len());
        let shared = &self.shared;
        if let [(index, _)] = permits[..] {
            // One gateway takes the whole request: no partition.
            let (_, permit) = permits.into_iter().next().expect("one permit");
            members.gateways[index].commit(shared, spans, permit);
            return;
        }
        let mut parts: Vec<Vec<Span>> = counts.iter().map(|&n| Vec::with_capacity(n)).collect();
        for (span, target) in spans.into_iter().zip(targets) {
            parts[target as usize].push(span);
        }
        for (index, permit) in permits {
            members.gateways[index].commit(shared, std::mem::take(&mut parts[index]), permit);
        }
    }

    /// Reserves and commits in one step.
    pub async fn submit(&self, spans: Vec<Span>, deadline: Instant) -> Result<(), ForwardError> {
        if spans.is_empty() {
            return Ok(());
        }
        let reservation = self.reserve(&spans, deadline).await?;
        self.commit(reservation, spans);
        Ok(())
    }
}

/// The running exporter: owns the senders and the DNS resolver.
pub struct Forwarder {
    shared: Arc<Shared>,
    stop_resolver: CancellationToken,
    resolver: Option<JoinHandle<()>>,
}

impl Forwarder {
    /// Starts a sender per gateway, and the resolver when `dns` is set
    /// (resolving it once first). `enqueue_timeout` is the longest a
    /// request waits for room (`pipeline.enqueue_timeout`). With `data_dir`
    /// (`durability: disk`) each gateway's requests queue on disk under
    /// `<data_dir>/queue/`, and what a previous run left there is sent.
    pub async fn start(
        config: &Valid<ForwardConfig>,
        enqueue_timeout: Duration,
        registry: &mut Registry,
        exporter_metrics: &Arc<ExporterMetrics>,
        data_dir: Option<PathBuf>,
    ) -> Result<Self, ForwardError> {
        let disks = data_dir.map(|dir| {
            let counters = exporter_metrics.exporter(EXPORTER).disk();
            Disks::new(dir, config.queue.clone(), counters)
        });
        let shared = Arc::new(Shared {
            config: config.get().clone(),
            retire_grace: enqueue_timeout * 2 + Duration::from_secs(1),
            members: RwLock::new(Arc::new(Members {
                gateways: Vec::new(),
                seeds: Vec::new(),
            })),
            senders: Mutex::new(Vec::new()),
            metrics: ForwardMetrics::register(registry, exporter_metrics),
            pending: AtomicUsize::new(0),
            closing: CancellationToken::new(),
            deadline: OnceLock::new(),
            disks,
        });
        let stop_resolver = CancellationToken::new();
        let mut resolver = None;
        if config.dns.is_empty() {
            shared.set_members(config.endpoints.iter().cloned().collect())?;
        } else {
            if let Some(keys) = resolve(&config.dns, &shared.metrics).await {
                shared.set_members(keys)?;
            }
            resolver = Some(tokio::spawn(resolve_loop(
                shared.clone(),
                stop_resolver.clone(),
            )));
        }
        tracing::info!(
            gateways = shared.members().gateways.len(),
            source = if config.dns.is_empty() {
                "endpoints"
            } else {
                "dns"
            },
            "forwarding spans to gateways"
        );
        Ok(Self {
            shared,
            stop_resolver,
            resolver,
        })
    }

    /// The admission handle for receivers.
    pub fn handle(&self) -> ForwardHandle {
        ForwardHandle {
            shared: self.shared.clone(),
        }
    }

    /// Flushes every queue, retrying until shortly before `deadline`, then
    /// drops what is left (counted); returns the spans dropped so.
    pub async fn shutdown(self, deadline: Instant) -> u64 {
        let shared = &self.shared;
        let margin = SHUTDOWN_MARGIN.min(deadline.saturating_duration_since(Instant::now()) / 10);
        // The deadline first: senders read it when they see `closing`.
        let _ = shared.deadline.set(deadline - margin);
        shared.closing.cancel();
        self.stop_resolver.cancel();
        if let Some(resolver) = self.resolver {
            let _ = tokio::time::timeout_at(deadline, resolver).await;
        }
        let senders = std::mem::take(
            &mut *shared
                .senders
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for sender in senders {
            match tokio::time::timeout_at(deadline, sender).await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => tracing::error!(error = %err, "forward sender panicked"),
                Err(_) => tracing::warn!("forward sender did not stop before the deadline"),
            }
        }
        let kept: u64 = shared
            .members()
            .gateways
            .iter()
            .map(|g| g.disk_unacknowledged_spans())
            .sum();
        if kept > 0 {
            tracing::info!(
                exporter = EXPORTER,
                spans = kept,
                "forward: unsent spans stay in the disk queues for the next start"
            );
        }
        // Spans moved onto a queue whose sender had just finished.
        let stranded = shared.pending() as u64;
        if stranded > 0 {
            shared
                .metrics
                .dropped(drop_reason::SHUTDOWN)
                .inc_by(stranded);
        }
        shared.metrics.dropped(drop_reason::SHUTDOWN).get()
    }
}

/// The gateway keys `name:port` resolves to; `None` (counted) when it
/// fails or names nothing, so the current set stays.
async fn resolve(dns: &str, metrics: &ForwardMetrics) -> Option<BTreeSet<String>> {
    match tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host(dns)).await {
        Ok(Ok(addrs)) => {
            let keys: BTreeSet<String> = addrs
                .take(config::MAX_GATEWAYS)
                .map(|addr| addr.to_string())
                .collect();
            if keys.is_empty() {
                metrics.resolve_failed.inc();
                tracing::warn!(
                    dns,
                    "dns name has no addresses; keeping the current gateways"
                );
                return None;
            }
            Some(keys)
        }
        Ok(Err(err)) => {
            metrics.resolve_failed.inc();
            tracing::warn!(dns, error = %err, "cannot resolve gateways; keeping the current ones");
            None
        }
        Err(_) => {
            metrics.resolve_failed.inc();
            tracing::warn!(
                dns,
                "dns resolution timed out; keeping the current gateways"
            );
            None
        }
    }
}

async fn resolve_loop(shared: Arc<Shared>, stop: CancellationToken) {
    loop {
        let wait = if shared.members().gateways.is_empty() {
            RESOLVE_RETRY
        } else {
            shared.config.dns_refresh
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        if let Some(keys) = resolve(&shared.config.dns, &shared.metrics).await
            && let Err(err) = shared.set_members(keys)
        {
            tracing::error!(error = %err, "cannot use a resolved gateway address");
        }
    }
}
