//! RED metrics per service, span name, span kind and status code, with a
//! bound on the number of series.
//!
//! Series beyond the bound fold into one series per service whose span
//! name is [`OVERFLOW_SPAN_NAME`], and the folded spans are counted, so the
//! totals stay right while cardinality stays bounded.

use std::sync::Arc;

use hashbrown::{Equivalent, HashMap};
use serde::{Deserialize, Serialize};

use crate::graph::edge::{Histogram, Minute};
use crate::model::{Span, SpanKind, StatusCode};
use crate::validate::Invalid;

/// Span name of the series that absorbs overflow.
pub const OVERFLOW_SPAN_NAME: &str = "__overflow__";

/// Span-metrics settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpanMetricsConfig {
    /// Distinct (service, span name, kind, status) series at most, per pipeline shard.
    pub max_series: usize,
}

impl Default for SpanMetricsConfig {
    fn default() -> Self {
        Self { max_series: 5_000 }
    }
}

impl SpanMetricsConfig {
    /// Appends every broken rule under `prefix`; part of the graph's checks.
    pub(crate) fn check(&self, prefix: &str, invalid: &mut Vec<Invalid>) {
        if self.max_series == 0 {
            invalid.push(Invalid {
                key: format!("{prefix}.max_series"),
                reason: "must be at least 1".into(),
            });
        }
    }
}

/// Identity of one span-metrics series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// `service` label.
    pub service: Arc<str>,
    /// `span_name` label.
    pub span_name: Box<str>,
    /// `span_kind` label.
    pub kind: SpanKindLabel,
    /// `status_code` label.
    pub status: StatusLabel,
}

/// Span kind as an orderable label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpanKindLabel(pub u8);
/// Status code as an orderable label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusLabel(pub u8);

impl SpanKindLabel {
    fn of(kind: SpanKind) -> Self {
        Self(kind as u8)
    }

    /// The OTel name, such as `SPAN_KIND_SERVER`.
    pub fn as_str(self) -> &'static str {
        const KINDS: [SpanKind; 6] = [
            SpanKind::Unspecified,
            SpanKind::Internal,
            SpanKind::Server,
            SpanKind::Client,
            SpanKind::Producer,
            SpanKind::Consumer,
        ];
        KINDS[usize::from(self.0)].as_str()
    }
}

impl StatusLabel {
    fn of(status: StatusCode) -> Self {
        Self(status as u8)
    }

    /// The OTel name, such as `STATUS_CODE_ERROR`.
    pub fn as_str(self) -> &'static str {
        [StatusCode::Unset, StatusCode::Ok, StatusCode::Error][usize::from(self.0)].as_str()
    }
}

#[derive(Hash)]
struct SeriesRef<'a> {
    service: &'a str,
    span_name: &'a str,
    kind: SpanKindLabel,
    status: StatusLabel,
}

impl Equivalent<SeriesKey> for SeriesRef<'_> {
    fn equivalent(&self, key: &SeriesKey) -> bool {
        self.kind == key.kind
            && self.status == key.status
            && self.span_name == &*key.span_name
            && self.service == &*key.service
    }
}

/// Calls and latency of one series since it appeared.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesStats {
    /// Spans.
    pub calls: u64,
    /// Durations, seconds.
    pub latency: Histogram,
    last_minute: Minute,
}

/// Span metrics of one shard.
#[derive(Debug)]
pub struct SpanMetrics {
    series: HashMap<SeriesKey, SeriesStats>,
    bounds: Arc<[f64]>,
    max_series: usize,
    overflow_spans: u64,
}

/// Span metrics merged over shards.
#[derive(Debug, Default)]
pub struct SpanMetricsSnapshot {
    /// Every series, sorted.
    pub series: std::collections::BTreeMap<SeriesKey, SeriesStats>,
    /// Spans folded into overflow series.
    pub overflow_spans: u64,
}

impl SpanMetrics {
    /// Empty metrics with histograms over `bounds` (seconds).
    pub fn new(config: &SpanMetricsConfig, bounds: &[f64]) -> Self {
        Self {
            series: HashMap::new(),
            bounds: bounds.into(),
            max_series: config.max_series,
            overflow_spans: 0,
        }
    }

    /// Counts one span seen in `minute`.
    pub fn record(&mut self, span: &Span, minute: Minute) {
        let lookup = SeriesRef {
            service: &span.resource.service_name,
            span_name: &span.name,
            kind: SpanKindLabel::of(span.kind),
            status: StatusLabel::of(span.status_code),
        };
        let seconds = span.duration_nanos() as f64 / 1e9;
        if let Some(stats) = self.series.get_mut(&lookup) {
            stats.calls += 1;
            stats.latency.observe(&self.bounds, seconds);
            stats.last_minute = minute;
            return;
        }
        let span_name: Box<str> = if self.series.len() >= self.max_series {
            self.overflow_spans += 1;
            OVERFLOW_SPAN_NAME.into()
        } else {
            (*span.name).into()
        };
        let key = SeriesKey {
            service: span.resource.service_name.clone(),
            span_name,
            kind: lookup.kind,
            status: lookup.status,
        };
        let bounds = &self.bounds;
        let stats = self.series.entry(key).or_insert_with(|| SeriesStats {
            calls: 0,
            latency: Histogram::new(bounds),
            last_minute: minute,
        });
        stats.calls += 1;
        stats.latency.observe(bounds, seconds);
        stats.last_minute = minute;
    }

    /// Drops series idle for longer than `retention` minutes.
    pub fn prune(&mut self, now: Minute, retention: i64) {
        self.series
            .retain(|_, stats| stats.last_minute > now - retention);
    }

    /// Adds this shard's series into `snapshot`.
    pub fn merge_into(&self, snapshot: &mut SpanMetricsSnapshot) {
        snapshot.overflow_spans += self.overflow_spans;
        for (key, stats) in &self.series {
            match snapshot.series.get_mut(key) {
                Some(total) => {
                    total.calls += stats.calls;
                    total.latency.merge(&stats.latency);
                }
                None => {
                    snapshot.series.insert(key.clone(), stats.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Attributes, Resource, SpanId, TraceId};

    fn span(service: &str, name: &str, kind: SpanKind, status: StatusCode, nanos: u64) -> Span {
        Span {
            resource: Arc::new(Resource {
                service_name: service.into(),
                attributes: Attributes::default(),
            }),
            scope_name: "".into(),
            trace_id: TraceId::try_from(&[1; 16][..]).unwrap(),
            span_id: SpanId::try_from(&[1; 8][..]).unwrap(),
            parent_span_id: None,
            name: name.into(),
            kind,
            status_code: status,
            status_message: String::new(),
            start_unix_nano: 0,
            end_unix_nano: nanos,
            attributes: Attributes::default(),
            events: vec![],
        }
    }

    #[test]
    fn counts_per_series_and_folds_overflow() {
        let mut metrics = SpanMetrics::new(&SpanMetricsConfig { max_series: 2 }, &[0.01, 0.1]);
        metrics.record(
            &span("a", "GET /", SpanKind::Server, StatusCode::Unset, 5_000_000),
            7,
        );
        metrics.record(
            &span(
                "a",
                "GET /",
                SpanKind::Server,
                StatusCode::Unset,
                50_000_000,
            ),
            7,
        );
        metrics.record(
            &span("a", "GET /", SpanKind::Server, StatusCode::Error, 1),
            7,
        );
        metrics.record(
            &span("a", "POST /", SpanKind::Server, StatusCode::Unset, 1),
            7,
        );
        metrics.record(&span("b", "x", SpanKind::Client, StatusCode::Unset, 1), 7);
        let mut snapshot = SpanMetricsSnapshot::default();
        metrics.merge_into(&mut snapshot);
        assert_eq!(snapshot.overflow_spans, 2);
        let calls: Vec<_> = snapshot
            .series
            .iter()
            .map(|(k, v)| {
                (
                    &*k.service,
                    &*k.span_name,
                    k.kind.as_str(),
                    k.status.as_str(),
                    v.calls,
                )
            })
            .collect();
        assert_eq!(
            calls,
            vec![
                ("a", "GET /", "SPAN_KIND_SERVER", "STATUS_CODE_UNSET", 2),
                ("a", "GET /", "SPAN_KIND_SERVER", "STATUS_CODE_ERROR", 1),
                (
                    "a",
                    OVERFLOW_SPAN_NAME,
                    "SPAN_KIND_SERVER",
                    "STATUS_CODE_UNSET",
                    1
                ),
                (
                    "b",
                    OVERFLOW_SPAN_NAME,
                    "SPAN_KIND_CLIENT",
                    "STATUS_CODE_UNSET",
                    1
                ),
            ]
        );
        let first = snapshot.series.values().next().unwrap();
        assert_eq!(first.latency.counts, vec![1, 1, 0]);
    }
}
