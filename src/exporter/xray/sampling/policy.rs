//! What decides a held trace: errors, slow edges, the per-edge floor,
//! sampling rules, then the budget. State shared by every worker (edge
//! baselines, floor counts, the budget) lives here, behind short locks
//! taken once per trace.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use hashbrown::HashMap;

use super::config::SamplingConfig;
use super::metrics::SamplingMetrics;
use crate::exporter::xray::rules::{Request, RuleSet};
use crate::exporter::xray::segment;
use crate::graph::aggregate::{Selection, Totals};
use crate::graph::{Graph, USER_NODE, unix_minute};
use crate::model::{Span, SpanKind, StatusCode, TraceId, mix64};

/// Why a trace was kept or dropped: the `policy` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// A span failed (status ERROR, HTTP 5xx or 429).
    Error,
    /// An edge was slower than its p99, or a span than its service's threshold.
    Slow,
    /// An edge had fewer than `per_edge_min` kept traces this minute.
    Floor,
    /// A sampling rule's reservoir or fixed rate.
    Rule,
    /// The budget's probability, by trace id.
    Probability,
    /// Over `max_traces_per_second`.
    Budget,
}

impl Policy {
    pub(crate) fn as_label(self) -> &'static str {
        match self {
            Self::Error => "error",
            Self::Slow => "slow",
            Self::Floor => "floor",
            Self::Rule => "rule",
            Self::Probability => "probability",
            Self::Budget => "budget",
        }
    }
}

/// An edge's p99 needs this many requests in the window to count.
const MIN_BASELINE_REQUESTS: u64 = 50;
/// How often the baselines are read from the graph.
pub(crate) const BASELINE_REFRESH: Duration = Duration::from_secs(10);
/// Edges the floor counts at most per minute (the graph's default `max_edges`).
const MAX_FLOOR_EDGES: usize = 10_000;

/// The shared half of sampling.
pub(crate) struct Policies {
    config: SamplingConfig,
    rules: Option<RuleSet>,
    /// Per rule: the unix second and the traces its reservoir took in it.
    reservoirs: Vec<Mutex<(u64, u32)>>,
    graph: Option<Graph>,
    /// Edge (hashed names) → p99 nanoseconds.
    baselines: RwLock<HashMap<u64, u64>>,
    hasher: hashbrown::DefaultHashBuilder,
    floor: Mutex<Floor>,
    budget: Mutex<BudgetState>,
    /// The budget's probability as `f64` bits.
    probability: AtomicU64,
    pub(crate) metrics: SamplingMetrics,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies").finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Floor {
    minute: i64,
    kept: HashMap<u64, u32>,
}

/// Traces kept this second, and the rates the probability is set from.
#[derive(Default)]
struct BudgetState {
    second: u64,
    kept: u64,
    /// Kept by error, slow, floor and rule this second.
    must: u64,
    /// Left to the probability this second.
    candidates: u64,
    must_rate: f64,
    candidate_rate: f64,
}

/// An edge of one trace and the latency its caller saw.
#[derive(Debug, Clone, Copy)]
struct TraceEdge {
    key: u64,
    nanos: u64,
}

impl Policies {
    pub(crate) fn new(
        config: SamplingConfig,
        rules: Option<RuleSet>,
        graph: Option<Graph>,
        metrics: SamplingMetrics,
    ) -> Self {
        metrics.budget.set(i64::from(config.max_traces_per_second));
        metrics.probability.set(1.0);
        let reservoirs = rules.as_ref().map_or(0, |r| r.rules().len());
        Self {
            config,
            rules,
            reservoirs: (0..reservoirs).map(|_| Mutex::new((0, 0))).collect(),
            graph,
            baselines: RwLock::default(),
            hasher: hashbrown::DefaultHashBuilder::default(),
            floor: Mutex::default(),
            budget: Mutex::default(),
            probability: AtomicU64::new(1.0f64.to_bits()),
            metrics,
        }
    }

    pub(crate) fn config(&self) -> &SamplingConfig {
        &self.config
    }

    /// Reads every edge's p99 over `baseline_window` from the graph.
    pub(crate) fn refresh_baselines(&self, now: SystemTime) {
        let Some(graph) = self.graph.as_ref().filter(|_| self.config.slow_p99) else {
            return;
        };
        let last = unix_minute(now);
        let first = last - (self.config.baseline_window.as_secs() / 60).max(1) as i64 + 1;
        let mut totals = Totals::default();
        graph.accumulate(first, last, &Selection::All, &mut totals);
        let baselines: HashMap<u64, u64> = totals
            .edges
            .iter()
            .filter(|(_, stats)| stats.client.count() >= MIN_BASELINE_REQUESTS)
            .map(|(key, stats)| {
                (
                    self.edge_key(&key.client, &key.server),
                    stats.client.quantile(0.99) as u64,
                )
            })
            .collect();
        *self
            .baselines
            .write()
            .unwrap_or_else(PoisonError::into_inner) = baselines;
    }

    fn edge_key(&self, client: &str, server: &str) -> u64 {
        self.hasher.hash_one((client, server))
    }

    /// Decides one whole (as far as it arrived) trace.
    pub(crate) fn decide(&self, trace: &[Span], now: SystemTime) -> (bool, Policy) {
        let Some(first) = trace.first() else {
            return (false, Policy::Probability);
        };
        let mut edges = Vec::new();
        let summary = self.summarise(trace, &mut edges);
        let policy = if summary.failed {
            Some(Policy::Error)
        } else if summary.slow || self.slower_than_baseline(&edges) {
            Some(Policy::Slow)
        } else if self.below_floor(&edges, now) {
            Some(Policy::Floor)
        } else {
            None
        };
        let second = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let decision = match policy {
            Some(policy) => Some((true, policy)),
            None => self.by_rule(trace, summary.entry, first.trace_id, second),
        };
        let mut budget = self.budget.lock().unwrap_or_else(PoisonError::into_inner);
        self.roll(&mut budget, second);
        let (kept, policy) = match decision {
            Some((kept, policy)) => {
                if kept {
                    budget.must += 1;
                }
                (kept, policy)
            }
            None => {
                budget.candidates += 1;
                let limit = u64::from(self.config.max_traces_per_second);
                if below(first.trace_id, self.probability()) {
                    if limit == 0 || budget.kept < limit {
                        (true, Policy::Probability)
                    } else {
                        (false, Policy::Budget)
                    }
                } else {
                    (false, Policy::Probability)
                }
            }
        };
        if kept {
            budget.kept += 1;
        }
        drop(budget);
        if kept {
            self.count_floor(&edges, now);
        }
        (kept, policy)
    }

    fn probability(&self) -> f64 {
        f64::from_bits(self.probability.load(Ordering::Relaxed))
    }

    /// At a new second, the last one's counts move the rates (a moving
    /// average over about five seconds) and the probability is set so that
    /// must-keeps plus the probability's share fill the budget.
    fn roll(&self, budget: &mut BudgetState, second: u64) {
        if second <= budget.second {
            return;
        }
        let limit = f64::from(self.config.max_traces_per_second);
        if budget.second != 0 && limit > 0.0 {
            let seconds = (second - budget.second).min(10) as f64;
            const WEIGHT: f64 = 0.2;
            budget.must_rate += WEIGHT * (budget.must as f64 / seconds - budget.must_rate);
            budget.candidate_rate +=
                WEIGHT * (budget.candidates as f64 / seconds - budget.candidate_rate);
            let p = if budget.candidate_rate <= f64::EPSILON {
                1.0
            } else {
                ((limit - budget.must_rate) / budget.candidate_rate).clamp(0.0, 1.0)
            };
            self.probability.store(p.to_bits(), Ordering::Relaxed);
            self.metrics.probability.set(p);
        }
        budget.second = second;
        budget.kept = 0;
        budget.must = 0;
        budget.candidates = 0;
    }

    fn summarise(&self, trace: &[Span], edges: &mut Vec<TraceEdge>) -> Summary {
        let mut summary = Summary::default();
        let mut answered = vec![false; trace.len()];
        let by_id: HashMap<_, usize> = if trace.len() > 8 {
            trace
                .iter()
                .enumerate()
                .map(|(i, s)| (s.span_id, i))
                .collect()
        } else {
            HashMap::new()
        };
        let index_of = |id| {
            if by_id.is_empty() {
                trace.iter().position(|s| s.span_id == id)
            } else {
                by_id.get(&id).copied()
            }
        };
        for (i, span) in trace.iter().enumerate() {
            summary.failed |= is_failure(span);
            if let Some(threshold) = self.config.slow_thresholds.get(span.service_name()) {
                summary.slow |= span.duration_nanos() > threshold.as_nanos() as u64;
            }
            let parent = span.parent_span_id.and_then(index_of);
            if summary.entry.is_none() && parent.is_none() {
                summary.entry = Some(i);
            }
            if !matches!(span.kind, SpanKind::Server | SpanKind::Consumer) {
                continue;
            }
            match parent.map(|p| (p, &trace[p])) {
                Some((p, caller))
                    if matches!(caller.kind, SpanKind::Client | SpanKind::Producer) =>
                {
                    answered[p] = true;
                    edges.push(TraceEdge {
                        key: self.edge_key(caller.service_name(), span.service_name()),
                        nanos: caller.duration_nanos(),
                    });
                }
                None if span.parent_span_id.is_none() => edges.push(TraceEdge {
                    key: self.edge_key(USER_NODE, span.service_name()),
                    nanos: span.duration_nanos(),
                }),
                _ => {}
            }
        }
        for (span, _) in trace.iter().zip(&answered).filter(|(_, a)| !**a) {
            if !matches!(span.kind, SpanKind::Client | SpanKind::Producer) {
                continue;
            }
            if let Some(callee) = self.graph.as_ref().and_then(|g| g.callee_of(span)) {
                edges.push(TraceEdge {
                    key: self.edge_key(span.service_name(), callee),
                    nanos: span.duration_nanos(),
                });
            }
        }
        summary
    }

    fn slower_than_baseline(&self, edges: &[TraceEdge]) -> bool {
        if !self.config.slow_p99 || edges.is_empty() {
            return false;
        }
        let baselines = self
            .baselines
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        edges
            .iter()
            .any(|e| baselines.get(&e.key).is_some_and(|&p99| e.nanos > p99))
    }

    fn below_floor(&self, edges: &[TraceEdge], now: SystemTime) -> bool {
        if self.config.per_edge_min == 0 || edges.is_empty() {
            return false;
        }
        let mut floor = self.floor.lock().unwrap_or_else(PoisonError::into_inner);
        roll_floor(&mut floor, now);
        edges.iter().any(|e| match floor.kept.get(&e.key) {
            Some(&kept) => kept < self.config.per_edge_min,
            None => floor.kept.len() < MAX_FLOOR_EDGES,
        })
    }

    fn count_floor(&self, edges: &[TraceEdge], now: SystemTime) {
        if self.config.per_edge_min == 0 || edges.is_empty() {
            return;
        }
        let mut floor = self.floor.lock().unwrap_or_else(PoisonError::into_inner);
        roll_floor(&mut floor, now);
        for edge in edges {
            if let Some(kept) = floor.kept.get_mut(&edge.key) {
                *kept = kept.saturating_add(1);
            } else if floor.kept.len() < MAX_FLOOR_EDGES {
                floor.kept.insert(edge.key, 1);
            }
        }
    }

    /// The first matching rule's reservoir, then its fixed rate by trace
    /// id; `None` when no rule matches (or there are none).
    fn by_rule(
        &self,
        trace: &[Span],
        entry: Option<usize>,
        trace_id: TraceId,
        second: u64,
    ) -> Option<(bool, Policy)> {
        let rules = self.rules.as_ref()?;
        let span = &trace[entry.unwrap_or(0)];
        let attrs = &span.attributes;
        let target = attrs.first_str(&["url.path", "http.target"]);
        let request = Request {
            service_name: span.service_name(),
            service_type: segment::origin(&span.resource.attributes),
            host: attrs.first_str(&["server.address", "http.host", "net.host.name"]),
            http_method: attrs.first_str(&["http.request.method", "http.method"]),
            url_path: target.map(|t| t.split('?').next().unwrap_or(t)),
            resource_arn: span.resource.attributes.first_str(&["cloud.resource_id"]),
        };
        let index = rules.find(&request, |key| attrs.get_str(key))?;
        let rule = &rules.rules()[index];
        let mut reservoir = self.reservoirs[index]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if reservoir.0 != second {
            *reservoir = (second, 0);
        }
        if reservoir.1 < rule.reservoir_size {
            reservoir.1 += 1;
            return Some((true, Policy::Rule));
        }
        Some((below(trace_id, rule.fixed_rate), Policy::Rule))
    }
}

#[derive(Debug, Default)]
struct Summary {
    failed: bool,
    slow: bool,
    /// The span without a parent in the trace: what rules match.
    entry: Option<usize>,
}

fn roll_floor(floor: &mut Floor, now: SystemTime) {
    let minute = unix_minute(now);
    if floor.minute != minute {
        floor.minute = minute;
        floor.kept.clear();
    }
}

/// A failed call: status ERROR, or an HTTP 5xx or 429 on either side.
fn is_failure(span: &Span) -> bool {
    span.status_code == StatusCode::Error
        || span
            .attributes
            .get_i64("http.response.status_code")
            .or_else(|| span.attributes.get_i64("http.status_code"))
            .is_some_and(|s| s >= 500 || s == 429)
}

/// Whether the trace id falls in the first `share` of the id space: the
/// same answer on every instance, so gateways agree without talking.
pub(crate) fn below(trace_id: TraceId, share: f64) -> bool {
    if share >= 1.0 {
        return true;
    }
    // Salted, so the choice is independent of the shard (same hash family).
    let hash = mix64(trace_id.shard_hash() ^ 0x5341_4d50_4c45_5f31);
    share > 0.0 && ((hash >> 11) as f64) < share * (1u64 << 53) as f64
}
