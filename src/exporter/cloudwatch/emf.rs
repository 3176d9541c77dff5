//! Embedded Metric Format: metric groups → log events → PutLogEvents
//! batches, within every documented limit. Pure: no I/O.
//!
//! Limits (CloudWatch EMF specification and PutLogEvents): at most 100
//! metrics per directive, 30 dimensions per dimension set, 100 entries in
//! a values array; an event at most 1 MB; a batch at most 10 000 events
//! and 1 048 576 bytes counting 26 bytes per event, in chronological
//! order. Whatever exceeds a limit is split across more events or
//! batches, never refused.

use serde_json::{Map, Value, json};

use super::model::{Distribution, Metric, MetricGroup, MetricValue};

/// The documented limits; tests shrink the byte limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmfLimits {
    /// Metrics in one directive.
    pub max_metrics: usize,
    /// Dimensions in one dimension set.
    pub max_dimensions: usize,
    /// Entries of a values array.
    pub max_values: usize,
    /// Bytes of one event's message.
    pub max_event_bytes: usize,
    /// Bytes of one PutLogEvents batch, counting `EVENT_OVERHEAD` per event.
    pub max_batch_bytes: usize,
    /// Events in one PutLogEvents batch.
    pub max_batch_events: usize,
}

/// PutLogEvents counts this many bytes per event on top of its message.
pub const EVENT_OVERHEAD: usize = 26;

impl Default for EmfLimits {
    fn default() -> Self {
        Self {
            max_metrics: 100,
            max_dimensions: 30,
            max_values: 100,
            max_event_bytes: 1_048_576 - EVENT_OVERHEAD,
            max_batch_bytes: 1_048_576,
            max_batch_events: 10_000,
        }
    }
}

/// One log event.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogEvent {
    /// Milliseconds since the epoch.
    pub timestamp_ms: i64,
    /// The EMF JSON document.
    pub message: String,
}

/// What encoding produced, and what it could not place.
#[derive(Debug, Default, PartialEq)]
pub struct Encoded {
    /// Events, in chronological order.
    pub events: Vec<LogEvent>,
    /// Dimensions left out of sets longer than the limit (config forbids them).
    pub dimensions_truncated: u64,
    /// Metric parts that alone exceed the event size (a dimension value
    /// that big); counted, not sent.
    pub oversize_dropped: u64,
}

/// One metric's share of an event: a scalar, or a slice of a distribution.
#[derive(Debug, Clone)]
struct Part<'a> {
    metric: &'a Metric,
    value: PartValue,
}

#[derive(Debug, Clone)]
enum PartValue {
    Scalar(f64),
    Distribution(Distribution),
}

/// Encodes `groups` into events: one event per group unless a limit
/// splits it.
pub fn encode(namespace: &str, groups: &[MetricGroup], limits: &EmfLimits) -> Encoded {
    let mut out = Encoded::default();
    for group in groups {
        // Config validation keeps sets within the limit; this guard keeps a
        // bad set from failing the whole batch, and counts what it cut.
        out.dimensions_truncated += group
            .dimension_sets
            .iter()
            .map(|set| set.len().saturating_sub(limits.max_dimensions) as u64)
            .sum::<u64>();
        // Values arrays beyond the limit continue in later events ("rounds"):
        // round k carries every metric's k-th slice.
        let mut rounds: Vec<Vec<Part<'_>>> = Vec::new();
        for metric in &group.metrics {
            match &metric.value {
                MetricValue::Scalar(v) => {
                    if !v.is_finite() {
                        continue;
                    }
                    if rounds.is_empty() {
                        rounds.push(Vec::new());
                    }
                    rounds[0].push(Part {
                        metric,
                        value: PartValue::Scalar(*v),
                    });
                }
                MetricValue::Distribution(d) => {
                    for (k, part) in slices(d, limits.max_values).into_iter().enumerate() {
                        if rounds.len() <= k {
                            rounds.push(Vec::new());
                        }
                        rounds[k].push(Part {
                            metric,
                            value: PartValue::Distribution(part),
                        });
                    }
                }
            }
        }
        for round in rounds {
            for chunk in round.chunks(limits.max_metrics.max(1)) {
                emit(namespace, group, chunk, limits, &mut out);
            }
        }
    }
    // Stable: events of one minute keep their order.
    out.events.sort_by_key(|e| e.timestamp_ms);
    out
}

/// A distribution in slices of at most `max` values (one slice if empty).
fn slices(d: &Distribution, max: usize) -> Vec<Distribution> {
    let finite = d.values.iter().chain(&d.counts).all(|v| v.is_finite())
        && [d.min, d.max, d.sum, d.count].iter().all(|v| v.is_finite());
    if !finite {
        return Vec::new();
    }
    if d.values.len() <= max {
        return vec![d.clone()];
    }
    (0..d.values.len())
        .step_by(max.max(1))
        .map(|start| d.part(start..(start + max).min(d.values.len())))
        .collect()
}

/// Writes one event for `parts`, halving it while it is over the size limit.
fn emit(
    namespace: &str,
    group: &MetricGroup,
    parts: &[Part<'_>],
    limits: &EmfLimits,
    out: &mut Encoded,
) {
    let message = document(namespace, group, parts, limits);
    if message.len() <= limits.max_event_bytes {
        out.events.push(LogEvent {
            timestamp_ms: group.timestamp_ms,
            message,
        });
        return;
    }
    if parts.len() > 1 {
        let (a, b) = parts.split_at(parts.len() / 2);
        emit(namespace, group, a, limits, out);
        emit(namespace, group, b, limits, out);
        return;
    }
    if let PartValue::Distribution(d) = &parts[0].value
        && d.values.len() > 1
    {
        let half = d.values.len() / 2;
        for range in [0..half, half..d.values.len()] {
            let part = Part {
                metric: parts[0].metric,
                value: PartValue::Distribution(d.part(range)),
            };
            emit(namespace, group, &[part], limits, out);
        }
        return;
    }
    out.oversize_dropped += 1;
}

fn number(v: f64) -> Value {
    // Whole numbers print without ".0", as CloudWatch's own examples do.
    if v.fract() == 0.0 && v.abs() < 9.0e15 {
        json!(v as i64)
    } else {
        json!(v)
    }
}

fn document(
    namespace: &str,
    group: &MetricGroup,
    parts: &[Part<'_>],
    limits: &EmfLimits,
) -> String {
    let sets: Vec<Value> = group
        .dimension_sets
        .iter()
        .map(|set| json!(set.iter().take(limits.max_dimensions).collect::<Vec<_>>()))
        .collect();
    let metrics: Vec<Value> = parts
        .iter()
        .map(|p| json!({"Name": p.metric.name, "Unit": p.metric.unit.as_str()}))
        .collect();
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": group.timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": sets,
                "Metrics": metrics,
            }],
        }),
    );
    for (name, value) in &group.dimensions {
        root.insert(name.clone(), json!(value));
    }
    for part in parts {
        let value = match &part.value {
            PartValue::Scalar(v) => number(*v),
            PartValue::Distribution(d) => json!({
                "Values": d.values.iter().map(|v| number(*v)).collect::<Vec<_>>(),
                "Counts": d.counts.iter().map(|v| number(*v)).collect::<Vec<_>>(),
                "Max": number(d.max),
                "Min": number(d.min),
                "Count": number(d.count),
                "Sum": number(d.sum),
            }),
        };
        root.insert(part.metric.name.clone(), value);
    }
    Value::Object(root).to_string()
}

/// Events in PutLogEvents batches: chronological, at most
/// `max_batch_events` each and `max_batch_bytes` counting the per-event
/// overhead, and within 24 hours of the batch's first event.
pub fn batches(events: Vec<LogEvent>, limits: &EmfLimits) -> Vec<Vec<LogEvent>> {
    const DAY_MS: i64 = 24 * 3600 * 1000;
    let mut out: Vec<Vec<LogEvent>> = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = event.message.len() + EVENT_OVERHEAD;
        let fits = out.last().is_some_and(|batch| {
            batch.len() < limits.max_batch_events
                && bytes + size <= limits.max_batch_bytes
                && event.timestamp_ms - batch[0].timestamp_ms < DAY_MS
        });
        if !fits {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        out.last_mut().expect("pushed above").push(event);
    }
    out
}
