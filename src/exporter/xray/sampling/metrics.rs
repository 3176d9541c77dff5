//! The `tracemap_sampling_*` families.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct DecisionLabels {
    pub(crate) decision: &'static str,
    pub(crate) policy: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct SpanLabels {
    pub(crate) decision: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct EarlyLabels {
    pub(crate) reason: &'static str,
}

/// Counters and gauges shared by every worker's sampler.
#[derive(Debug, Default, Clone)]
pub(crate) struct SamplingMetrics {
    pub(crate) traces: Family<DecisionLabels, Counter>,
    pub(crate) spans: Family<SpanLabels, Counter>,
    pub(crate) late_spans: Family<SpanLabels, Counter>,
    pub(crate) decided_early: Family<EarlyLabels, Counter>,
    pub(crate) traces_held: Gauge,
    pub(crate) bytes_held: Gauge,
    pub(crate) probability: Gauge<f64, AtomicU64>,
    pub(crate) budget: Gauge,
    /// Kept traces of every policy (not a series of its own: CloudWatch
    /// reads it through [`crate::exporter::SamplingTotals`]).
    pub(crate) kept: Counter,
}

impl SamplingMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "tracemap_sampling_traces",
            "Traces decided for X-Ray, by decision (kept, dropped) and the policy that decided",
            metrics.traces.clone(),
        );
        registry.register(
            "tracemap_sampling_spans",
            "Spans of decided traces, kept for X-Ray or dropped (late spans included)",
            metrics.spans.clone(),
        );
        registry.register(
            "tracemap_sampling_late_spans",
            "Spans that arrived after their trace was decided and followed its decision",
            metrics.late_spans.clone(),
        );
        registry.register(
            "tracemap_sampling_decided_early",
            "Traces decided before decision_wait: max_traces, max_bytes or shutdown",
            metrics.decided_early.clone(),
        );
        registry.register(
            "tracemap_sampling_traces_held",
            "Traces waiting for a sampling decision",
            metrics.traces_held.clone(),
        );
        registry.register(
            "tracemap_sampling_bytes_held",
            "Bytes of spans waiting for a sampling decision",
            metrics.bytes_held.clone(),
        );
        registry.register(
            "tracemap_sampling_probability",
            "Probability a trace no other policy keeps is kept, to fill the budget",
            metrics.probability.clone(),
        );
        registry.register(
            "tracemap_sampling_budget_traces_per_second",
            "max_traces_per_second (0: no budget)",
            metrics.budget.clone(),
        );
        metrics
    }

    pub(crate) fn decided(&self, kept: bool, policy: &'static str, spans: u64) {
        let decision = if kept { "kept" } else { "dropped" };
        if kept {
            self.kept.inc();
        }
        self.traces
            .get_or_create(&DecisionLabels { decision, policy })
            .inc();
        self.spans
            .get_or_create(&SpanLabels { decision })
            .inc_by(spans);
    }

    pub(crate) fn late(&self, kept: bool) {
        let decision = if kept { "kept" } else { "dropped" };
        self.late_spans
            .get_or_create(&SpanLabels { decision })
            .inc();
        self.spans.get_or_create(&SpanLabels { decision }).inc();
    }
}
