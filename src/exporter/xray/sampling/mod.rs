//! Tail sampling for X-Ray: each worker holds its shard's traces (the
//! pipeline routes a trace to one worker, and gateways route it to one
//! gateway) until `decision_wait` after their last span, then keeps or
//! drops each whole trace; only kept ones are translated. The graph and
//! every metric are computed before, from every span.
//!
//! Held spans are copied out of their request buffers into small shared
//! chunks, so a held span keeps kilobytes alive, not its whole request;
//! the bounds (`max_traces`, `max_bytes`, split between workers) count
//! those copies. When full, the least recently updated traces are decided
//! at once. Decided trace ids are remembered (`max_decided`), so late spans
//! follow their trace's decision.

pub mod config;
mod metrics;
mod policy;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::BytesMut;
use hashbrown::HashMap;
use prometheus_client::registry::Registry;

pub use config::SamplingConfig;
pub(crate) use metrics::SamplingMetrics;
pub(crate) use policy::{BASELINE_REFRESH, Policies};

use crate::exporter::xray::copy_to_chunk;
use crate::exporter::xray::rules::RuleSet;
use crate::exporter::{ExporterMetrics, SamplingTotals};
use crate::graph::Graph;
use crate::model::{Resource, Span, TraceId};
use crate::pipeline::TICK_INTERVAL;

/// Why traces were decided before their wait was over.
mod early {
    pub(super) const MAX_TRACES: &str = "max_traces";
    pub(super) const MAX_BYTES: &str = "max_bytes";
    pub(super) const SHUTDOWN: &str = "shutdown";
}

/// Builds the shared policies: the rules file must have passed `check`.
pub(crate) fn policies(
    config: &SamplingConfig,
    graph: Option<Graph>,
    registry: &mut Registry,
    exporters: Option<&ExporterMetrics>,
) -> Result<Arc<Policies>, crate::exporter::xray::rules::RulesError> {
    let rules: Option<RuleSet> = config.rules()?;
    let metrics = SamplingMetrics::register(registry);
    if let Some(exporters) = exporters {
        exporters.report_sampling(SamplingTotals {
            kept: metrics.kept.clone(),
            budget_per_second: config.max_traces_per_second,
        });
    }
    Ok(Arc::new(Policies::new(
        config.clone(),
        rules,
        graph,
        metrics,
    )))
}

struct Held {
    spans: Vec<Span>,
    bytes: usize,
    /// The tick of its last span: its entry in `order` with this tick is
    /// the live one.
    last_tick: u64,
}

/// One worker's held traces and remembered decisions.
pub(crate) struct Sampler {
    policies: Arc<Policies>,
    held: HashMap<TraceId, Held>,
    /// (tick of a span's arrival, trace), oldest first; entries whose tick
    /// is not the trace's `last_tick` are stale and skipped.
    order: VecDeque<(u64, TraceId)>,
    decided: Decided,
    tick: u64,
    wait_ticks: u64,
    max_traces: usize,
    max_bytes: usize,
    bytes: usize,
    chunk: BytesMut,
    /// The detached copy of each resource met in the current batch.
    resources: Vec<(usize, Arc<Resource>)>,
}

impl Sampler {
    /// A worker's sampler; the bounds are split evenly over `workers`.
    pub(crate) fn new(policies: Arc<Policies>, workers: usize) -> Self {
        let config = policies.config();
        let workers = workers.max(1);
        let wait_ticks = config
            .decision_wait
            .as_nanos()
            .div_ceil(TICK_INTERVAL.as_nanos())
            .max(1) as u64;
        Self {
            max_traces: (config.max_traces / workers).max(1),
            max_bytes: (config.max_bytes / workers).max(64 * 1024),
            decided: Decided::new((config.max_decided / workers).max(1)),
            policies,
            held: HashMap::new(),
            order: VecDeque::new(),
            tick: 0,
            wait_ticks,
            bytes: 0,
            chunk: BytesMut::new(),
            resources: Vec::new(),
        }
    }

    /// Holds `spans`, or passes those of kept traces to `kept` at once
    /// (late spans of a kept trace); decides early when over a bound.
    pub(crate) fn offer(&mut self, spans: &[Span], kept: &mut Vec<Span>) {
        let policies = self.policies.clone();
        let metrics = &policies.metrics;
        let (mut traces_added, bytes_before) = (0i64, self.bytes);
        for span in spans {
            if let Some(keep) = self.decided.get(&span.trace_id) {
                metrics.late(keep);
                if keep {
                    kept.push(span.clone());
                }
                continue;
            }
            let resource = self.detached_resource(&span.resource);
            let chunk = &mut self.chunk;
            let copy = &mut |bytes: &[u8]| copy_to_chunk(chunk, bytes);
            let span = span.detached(resource, copy);
            let bytes = span.held_bytes();
            self.bytes += bytes;
            let tick = self.tick;
            let held = self.held.entry(span.trace_id).or_insert_with(|| {
                traces_added += 1;
                Held {
                    spans: Vec::new(),
                    bytes: 0,
                    last_tick: u64::MAX,
                }
            });
            if held.last_tick != tick {
                held.last_tick = tick;
                self.order.push_back((tick, span.trace_id));
            }
            held.bytes += bytes;
            held.spans.push(span);
        }
        self.resources.clear();
        metrics.traces_held.inc_by(traces_added);
        metrics
            .bytes_held
            .inc_by(self.bytes as i64 - bytes_before as i64);
        while self.held.len() > self.max_traces {
            self.decide_oldest(early::MAX_TRACES, kept);
        }
        while self.bytes > self.max_bytes && !self.held.is_empty() {
            self.decide_oldest(early::MAX_BYTES, kept);
        }
    }

    /// About once a second: decides the traces whose wait is over.
    pub(crate) fn tick(&mut self, kept: &mut Vec<Span>) {
        self.tick += 1;
        let now = SystemTime::now();
        while let Some(&(tick, trace_id)) = self.order.front() {
            // Ticks are a second apart: one more than the wait, so no
            // trace is decided before `decision_wait` has passed.
            if tick + self.wait_ticks >= self.tick {
                break;
            }
            self.order.pop_front();
            if self
                .held
                .get(&trace_id)
                .is_some_and(|h| h.last_tick == tick)
            {
                self.decide(trace_id, now, kept);
            }
        }
    }

    /// At shutdown: decides everything held.
    pub(crate) fn flush(&mut self, kept: &mut Vec<Span>) {
        let now = SystemTime::now();
        while let Some((_, trace_id)) = self.order.pop_front() {
            if self.held.contains_key(&trace_id) {
                self.policies
                    .metrics
                    .decided_early
                    .get_or_create(&metrics::EarlyLabels {
                        reason: early::SHUTDOWN,
                    })
                    .inc();
                self.decide(trace_id, now, kept);
            }
        }
    }

    fn decide_oldest(&mut self, reason: &'static str, kept: &mut Vec<Span>) {
        let now = SystemTime::now();
        while let Some((tick, trace_id)) = self.order.pop_front() {
            if self
                .held
                .get(&trace_id)
                .is_some_and(|h| h.last_tick == tick)
            {
                self.policies
                    .metrics
                    .decided_early
                    .get_or_create(&metrics::EarlyLabels { reason })
                    .inc();
                self.decide(trace_id, now, kept);
                return;
            }
        }
    }

    fn decide(&mut self, trace_id: TraceId, now: SystemTime, kept: &mut Vec<Span>) {
        let Some(held) = self.held.remove(&trace_id) else {
            return;
        };
        self.bytes -= held.bytes;
        let metrics = &self.policies.metrics;
        metrics.traces_held.dec();
        metrics.bytes_held.dec_by(held.bytes as i64);
        let (keep, policy) = self.policies.decide(&held.spans, now);
        metrics.decided(keep, policy.as_label(), held.spans.len() as u64);
        self.decided.insert(trace_id, keep);
        if keep {
            kept.extend(held.spans);
        }
    }

    fn detached_resource(&mut self, resource: &Arc<Resource>) -> Arc<Resource> {
        // The address identifies the resource while the batch holds it.
        let key = Arc::as_ptr(resource) as usize;
        if let Some((_, copy)) = self.resources.iter().find(|(k, _)| *k == key) {
            return copy.clone();
        }
        let chunk = &mut self.chunk;
        let copy = Arc::new(resource.detached(&mut |bytes| copy_to_chunk(chunk, bytes)));
        self.resources.push((key, copy.clone()));
        copy
    }

    /// Traces held now.
    #[cfg(test)]
    fn held_traces(&self) -> usize {
        self.held.len()
    }
}

/// Decisions remembered, oldest forgotten first.
struct Decided {
    kept: HashMap<TraceId, bool>,
    order: VecDeque<TraceId>,
    capacity: usize,
}

impl Decided {
    fn new(capacity: usize) -> Self {
        Self {
            kept: HashMap::new(),
            order: VecDeque::new(),
            capacity,
        }
    }

    fn get(&self, trace_id: &TraceId) -> Option<bool> {
        self.kept.get(trace_id).copied()
    }

    fn insert(&mut self, trace_id: TraceId, kept: bool) {
        if self.kept.insert(trace_id, kept).is_none() {
            self.order.push_back(trace_id);
        }
        while self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.kept.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests;
