//! The metric model: what one minute of the service graph (and the span
//! metrics since the last flush) becomes in CloudWatch. Pure: no I/O.
//!
//! Per edge, `Requests`, `Errors` (Count), `ErrorRate` (Percent) and
//! `ClientLatency`/`ServerLatency` (Milliseconds, distributions) under
//! `[Client, Server, ConnectionType]` plus the configured rollups; per
//! service `[Service]` and per operation `[Service, Operation]`,
//! `Requests`, `Errors`, `ErrorRate` and `Latency`. Per exporter with a
//! disk queue `[Exporter]`, its backlog: `ExportQueueBytes` (Bytes),
//! `ExportQueueRecords` (Count) and `ExportQueueOldestAge` (Seconds); with
//! X-Ray sampling on, under `[Exporter]` = `xray`, `KeptTraces` (Count, a
//! minute) and `TraceBudget` (Count, the budget for that minute).
//! Static dimensions (`ClusterName`, `dimensions`) are appended to every set.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::exporter::Backlog;
use crate::graph::edge::{EdgeStats, Histogram, NodeStats};
use crate::graph::sketch::Sketch;
use crate::graph::spanmetrics::{SeriesKey, SpanMetricsSnapshot};
use crate::graph::topology::{NodeKind, Topology};

/// Calling service of an edge.
pub const DIM_CLIENT: &str = "Client";
/// Called service of an edge.
pub const DIM_SERVER: &str = "Server";
/// `direct`, `database`, `messaging_system` or `virtual_node`.
pub const DIM_CONNECTION_TYPE: &str = "ConnectionType";
/// A service, for its RED metrics.
pub const DIM_SERVICE: &str = "Service";
/// A span name of a service, for its RED metrics.
pub const DIM_OPERATION: &str = "Operation";
/// The cluster, from `cluster_name`.
pub const DIM_CLUSTER_NAME: &str = "ClusterName";
/// An exporter (its `exporter` label), for its disk backlog.
pub const DIM_EXPORTER: &str = "Exporter";
/// Dimension names tracemap sets itself; `dimensions` cannot use them.
pub const RESERVED_DIMENSIONS: [&str; 7] = [
    DIM_CLIENT,
    DIM_SERVER,
    DIM_CONNECTION_TYPE,
    DIM_SERVICE,
    DIM_OPERATION,
    DIM_CLUSTER_NAME,
    DIM_EXPORTER,
];

/// Requests (edge: calls; service/operation: served spans).
pub const METRIC_REQUESTS: &str = "Requests";
/// Failed requests.
pub const METRIC_ERRORS: &str = "Errors";
/// `100 · Errors / Requests`.
pub const METRIC_ERROR_RATE: &str = "ErrorRate";
/// Edge latency seen by the client.
pub const METRIC_CLIENT_LATENCY: &str = "ClientLatency";
/// Edge latency seen by the server.
pub const METRIC_SERVER_LATENCY: &str = "ServerLatency";
/// Service or operation latency.
pub const METRIC_LATENCY: &str = "Latency";

/// Bytes an exporter's disk queue holds.
pub const METRIC_EXPORT_QUEUE_BYTES: &str = "ExportQueueBytes";
/// Records waiting in an exporter's disk queue.
pub const METRIC_EXPORT_QUEUE_RECORDS: &str = "ExportQueueRecords";
/// Age of the oldest record waiting in an exporter's disk queue.
pub const METRIC_EXPORT_QUEUE_OLDEST_AGE: &str = "ExportQueueOldestAge";

/// Traces X-Ray sampling kept in a minute.
pub const METRIC_KEPT_TRACES: &str = "KeptTraces";
/// `max_traces_per_second` × 60, beside it.
pub const METRIC_TRACE_BUDGET: &str = "TraceBudget";

/// Every metric an exporter's backlog carries.
pub const BACKLOG_METRICS: [&str; 3] = [
    METRIC_EXPORT_QUEUE_BYTES,
    METRIC_EXPORT_QUEUE_RECORDS,
    METRIC_EXPORT_QUEUE_OLDEST_AGE,
];

/// Every metric an edge carries.
pub const EDGE_METRICS: [&str; 5] = [
    METRIC_REQUESTS,
    METRIC_ERRORS,
    METRIC_ERROR_RATE,
    METRIC_CLIENT_LATENCY,
    METRIC_SERVER_LATENCY,
];
/// Every metric a service or operation carries.
pub const SERVICE_METRICS: [&str; 4] = [
    METRIC_REQUESTS,
    METRIC_ERRORS,
    METRIC_ERROR_RATE,
    METRIC_LATENCY,
];

/// Dimension value of sets folded by the cardinality bound.
pub const OTHER: &str = "Other";
/// `ConnectionType` of direct calls (CloudWatch values cannot be empty).
pub const DIRECT: &str = "direct";
/// CloudWatch's longest dimension value.
const MAX_DIMENSION_VALUE: usize = 1024;

/// CloudWatch units used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Unit {
    /// A count.
    Count,
    /// A percentage, 0 to 100.
    Percent,
    /// A duration.
    Milliseconds,
    /// A size.
    Bytes,
    /// An age.
    Seconds,
}

impl Unit {
    /// CloudWatch's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Count => "Count",
            Self::Percent => "Percent",
            Self::Milliseconds => "Milliseconds",
            Self::Bytes => "Bytes",
            Self::Seconds => "Seconds",
        }
    }
}

/// Many values in one period: distinct values with their counts (ascending)
/// and exact statistics.
#[derive(Debug, Clone, PartialEq)]
pub struct Distribution {
    /// Distinct values, ascending.
    pub values: Vec<f64>,
    /// How often each value occurred.
    pub counts: Vec<f64>,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sum of all values.
    pub sum: f64,
    /// Number of values.
    pub count: f64,
}

impl Distribution {
    /// From a latency sketch in nanoseconds, as milliseconds.
    pub fn from_sketch_nanos(sketch: &Sketch) -> Self {
        let (values, counts) = sketch
            .values()
            .into_iter()
            .map(|(v, c)| (v / 1e6, c as f64))
            .unzip();
        Self {
            values,
            counts,
            min: sketch.min() / 1e6,
            max: sketch.max() / 1e6,
            sum: sketch.sum() / 1e6,
            count: sketch.count() as f64,
        }
    }

    /// From a span-metrics histogram (seconds, cumulative delta): each
    /// bucket's count at its midpoint (the +Inf bucket at the last bound),
    /// as milliseconds. Only the sum and count are exact.
    pub fn from_histogram(histogram: &Histogram, bounds: &[f64]) -> Self {
        let mut values = Vec::new();
        let mut counts = Vec::new();
        for (i, &count) in histogram.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let upper = bounds.get(i).or(bounds.last()).copied().unwrap_or(0.0);
            let lower = if i == 0 {
                0.0
            } else {
                bounds[i - 1].min(upper)
            };
            values.push((lower + upper) / 2.0 * 1e3);
            counts.push(count as f64);
        }
        Self {
            min: values.first().copied().unwrap_or(0.0),
            max: values.last().copied().unwrap_or(0.0),
            values,
            counts,
            sum: histogram.sum * 1e3,
            count: histogram.count() as f64,
        }
    }

    /// Values `range` of this distribution as one part. The parts' counts
    /// add up; each part's sum is its share of the exact sum; min and max
    /// are exact on the first and last part.
    pub fn part(&self, range: std::ops::Range<usize>) -> Self {
        let values = self.values[range.clone()].to_vec();
        let counts = self.counts[range.clone()].to_vec();
        let approx = |v: &[f64], c: &[f64]| v.iter().zip(c).map(|(v, c)| v * c).sum::<f64>();
        let total = approx(&self.values, &self.counts);
        let mine = approx(&values, &counts);
        let sum = if total > 0.0 {
            self.sum * mine / total
        } else {
            0.0
        };
        Self {
            min: if range.start == 0 {
                self.min
            } else {
                values[0]
            },
            max: if range.end == self.values.len() {
                self.max
            } else {
                *values.last().unwrap_or(&0.0)
            },
            count: counts.iter().sum(),
            values,
            counts,
            sum,
        }
    }
}

/// A metric's value.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    /// One number.
    Scalar(f64),
    /// Many values.
    Distribution(Distribution),
}

/// One metric of a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Metric name.
    pub name: String,
    /// Unit.
    pub unit: Unit,
    /// Value.
    pub value: MetricValue,
}

/// Metrics sharing dimension values and a timestamp: one EMF directive,
/// one PutMetricData datum per metric and dimension set.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricGroup {
    /// Milliseconds since the epoch: the start of the minute.
    pub timestamp_ms: i64,
    /// Every dimension and its value, in order.
    pub dimensions: Vec<(String, String)>,
    /// Dimension sets the metrics are published under, each a list of
    /// names from `dimensions`; the first is the full set.
    pub dimension_sets: Vec<Vec<String>>,
    /// The metrics.
    pub metrics: Vec<Metric>,
}

/// Model settings, taken from the exporter's config.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelConfig {
    /// Appended to every dimension set, in order.
    pub static_dimensions: Vec<(String, String)>,
    /// Edge rollups, each a subset of Client, Server, ConnectionType.
    pub rollups: Vec<Vec<String>>,
    /// Per-service RED metrics.
    pub service_metrics: bool,
    /// Per-operation RED metrics.
    pub operation_metrics: bool,
    /// Distinct dimension sets per minute before folding into `Other`.
    pub max_dimension_sets: usize,
    /// Upper bounds (seconds) of the span-metrics histograms.
    pub latency_bounds: Vec<f64>,
}

/// One operation's numbers since the previous flush.
#[derive(Debug, Clone, PartialEq)]
pub struct OperationStats {
    /// Served spans.
    pub requests: u64,
    /// Of those, with status ERROR.
    pub errors: u64,
    /// Their durations (seconds).
    pub latency: Histogram,
}

impl OperationStats {
    fn merge(&mut self, other: &OperationStats) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
    }
}

/// Span-metrics deltas per (service, operation), of served (SERVER and
/// CONSUMER) spans.
pub type OperationDeltas = BTreeMap<(Arc<str>, Box<str>), OperationStats>;

/// Remembers the cumulative span metrics already exported, to turn the
/// next snapshot into deltas. Holds one entry per span-metrics series,
/// which the graph bounds (`span_metrics.max_series` per shard).
#[derive(Debug, Default)]
pub struct OperationTracker {
    last: BTreeMap<SeriesKey, (u64, Histogram)>,
}

impl OperationTracker {
    /// What served spans added since the previous call; series that
    /// disappeared (pruned) are forgotten.
    pub fn delta(&mut self, snapshot: &SpanMetricsSnapshot) -> OperationDeltas {
        let mut out = OperationDeltas::new();
        let mut next = BTreeMap::new();
        for (key, stats) in &snapshot.series {
            let served = matches!(key.kind.as_str(), "SPAN_KIND_SERVER" | "SPAN_KIND_CONSUMER");
            if served {
                let (calls, mut latency) = match self.last.get(key) {
                    // A restart of the series (pruned, then back) shows as fewer calls.
                    Some((calls, hist)) if *calls <= stats.calls => {
                        let mut delta = stats.latency.clone();
                        for (d, p) in delta.counts.iter_mut().zip(&hist.counts) {
                            *d = d.saturating_sub(*p);
                        }
                        delta.sum = (delta.sum - hist.sum).max(0.0);
                        (stats.calls - calls, delta)
                    }
                    _ => (stats.calls, stats.latency.clone()),
                };
                if calls > 0 {
                    let errors = if key.status.as_str() == "STATUS_CODE_ERROR" {
                        calls
                    } else {
                        0
                    };
                    latency.counts.shrink_to_fit();
                    let entry = out
                        .entry((key.service.clone(), key.span_name.clone()))
                        .or_insert_with(|| OperationStats {
                            requests: 0,
                            errors: 0,
                            latency: Histogram {
                                counts: vec![0; latency.counts.len()],
                                sum: 0.0,
                            },
                        });
                    entry.merge(&OperationStats {
                        requests: calls,
                        errors,
                        latency,
                    });
                }
                next.insert(key.clone(), (stats.calls, stats.latency.clone()));
            }
        }
        self.last = next;
        out
    }
}

/// The groups of one minute, and how many dimension sets were folded.
#[derive(Debug, Default, PartialEq)]
pub struct Built {
    /// Groups, edges first.
    pub groups: Vec<MetricGroup>,
    /// Dimension sets folded into `Other` by the cardinality bound.
    pub folded: u64,
}

fn dimension_value(text: &str) -> String {
    if text.is_empty() {
        return "-".into();
    }
    if text.len() <= MAX_DIMENSION_VALUE {
        return text.into();
    }
    let mut end = MAX_DIMENSION_VALUE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].into()
}

fn ratio_percent(errors: u64, requests: u64) -> f64 {
    if requests == 0 {
        0.0
    } else {
        100.0 * errors as f64 / requests as f64
    }
}

fn scalar(name: &str, unit: Unit, value: f64) -> Metric {
    Metric {
        name: name.into(),
        unit,
        value: MetricValue::Scalar(value),
    }
}

fn distribution(name: &str, distribution: Distribution) -> Metric {
    Metric {
        name: name.into(),
        unit: Unit::Milliseconds,
        value: MetricValue::Distribution(distribution),
    }
}

/// Keeps the `cap` busiest items (by `weight`, ties by order) and folds
/// the rest into one merged item under `other`.
fn bound<K, S: Clone>(
    mut items: Vec<(K, S)>,
    cap: usize,
    weight: impl Fn(&S) -> u64,
    merge: impl Fn(&mut S, &S),
    other: K,
) -> (Vec<(K, S)>, u64) {
    if items.len() <= cap {
        return (items, 0);
    }
    // Stable: equal weights keep name order, so folding is deterministic.
    items.sort_by_key(|(_, s)| std::cmp::Reverse(weight(s)));
    let rest = items.split_off(cap);
    let folded = rest.len() as u64;
    let mut merged = rest[0].1.clone();
    for (_, stats) in &rest[1..] {
        merge(&mut merged, stats);
    }
    items.push((other, merged));
    (items, folded)
}

impl ModelConfig {
    /// The model `config` asks for, with the graph's histogram bounds.
    pub fn new(config: &super::CloudWatchConfig, latency_bounds: Vec<f64>) -> Self {
        Self {
            static_dimensions: config.static_dimensions(),
            rollups: config.rollups.clone(),
            service_metrics: config.service_metrics,
            operation_metrics: config.operation_metrics,
            max_dimension_sets: config.max_dimension_sets,
            latency_bounds,
        }
    }

    fn with_static(&self, mut dims: Vec<(String, String)>) -> Vec<(String, String)> {
        dims.extend(self.static_dimensions.iter().cloned());
        dims
    }

    fn with_static_names(&self, names: &[&str]) -> Vec<String> {
        names
            .iter()
            .map(|n| (*n).to_owned())
            .chain(self.static_dimensions.iter().map(|(k, _)| k.clone()))
            .collect()
    }

    /// The groups of one minute of the graph (`topology`) and the span
    /// metrics added since the previous flush (`operations`), at `timestamp_ms`.
    pub fn build(
        &self,
        topology: &Topology,
        operations: &OperationDeltas,
        timestamp_ms: i64,
    ) -> Built {
        let mut built = Built::default();
        let mut budget = self.max_dimension_sets;

        let edges: Vec<((String, String, String), EdgeStats)> = topology
            .edges()
            .filter(|(_, _, e)| e.stats.requests > 0)
            .map(|(source, target, edge)| {
                let kind = match edge.connection_type.as_str() {
                    "" => DIRECT,
                    other => other,
                };
                (
                    (
                        dimension_value(&source.id),
                        dimension_value(&target.id),
                        kind.to_owned(),
                    ),
                    edge.stats.clone(),
                )
            })
            .collect();
        let other = (OTHER.to_owned(), OTHER.to_owned(), OTHER.to_owned());
        let (edges, folded) = bound(
            edges,
            budget.max(1),
            |s| s.requests,
            EdgeStats::merge,
            other,
        );
        built.folded += folded;
        budget = budget.saturating_sub(edges.len());
        let mut sets = vec![self.with_static_names(&[DIM_CLIENT, DIM_SERVER, DIM_CONNECTION_TYPE])];
        for rollup in &self.rollups {
            let names: Vec<&str> = rollup.iter().map(String::as_str).collect();
            sets.push(self.with_static_names(&names));
        }
        for ((client, server, kind), stats) in edges {
            built.groups.push(MetricGroup {
                timestamp_ms,
                dimensions: self.with_static(vec![
                    (DIM_CLIENT.into(), client),
                    (DIM_SERVER.into(), server),
                    (DIM_CONNECTION_TYPE.into(), kind),
                ]),
                dimension_sets: sets.clone(),
                metrics: vec![
                    scalar(METRIC_REQUESTS, Unit::Count, stats.requests as f64),
                    scalar(METRIC_ERRORS, Unit::Count, stats.failed as f64),
                    scalar(
                        METRIC_ERROR_RATE,
                        Unit::Percent,
                        ratio_percent(stats.failed, stats.requests),
                    ),
                    distribution(
                        METRIC_CLIENT_LATENCY,
                        Distribution::from_sketch_nanos(&stats.client),
                    ),
                    distribution(
                        METRIC_SERVER_LATENCY,
                        Distribution::from_sketch_nanos(&stats.server),
                    ),
                ],
            });
        }

        if self.service_metrics {
            let services: Vec<(String, NodeStats)> = topology
                .nodes()
                .filter(|n| n.kind == NodeKind::Service && n.stats.requests > 0)
                .map(|n| (dimension_value(&n.id), n.stats.clone()))
                .collect();
            let (services, folded) = bound(
                services,
                budget.max(1),
                |s| s.requests,
                NodeStats::merge,
                OTHER.to_owned(),
            );
            built.folded += folded;
            budget = budget.saturating_sub(services.len());
            let sets = vec![self.with_static_names(&[DIM_SERVICE])];
            for (service, stats) in services {
                built.groups.push(MetricGroup {
                    timestamp_ms,
                    dimensions: self.with_static(vec![(DIM_SERVICE.into(), service)]),
                    dimension_sets: sets.clone(),
                    metrics: red(
                        stats.requests,
                        stats.errors,
                        Distribution::from_sketch_nanos(&stats.latency),
                    ),
                });
            }
        }

        if self.operation_metrics {
            let ops: Vec<((String, String), OperationStats)> = operations
                .iter()
                .map(|((service, op), stats)| {
                    (
                        (dimension_value(service), dimension_value(op)),
                        stats.clone(),
                    )
                })
                .collect();
            let (ops, folded) = bound(
                ops,
                budget.max(1),
                |s| s.requests,
                OperationStats::merge,
                (OTHER.to_owned(), OTHER.to_owned()),
            );
            built.folded += folded;
            let sets = vec![self.with_static_names(&[DIM_SERVICE, DIM_OPERATION])];
            for ((service, op), stats) in ops {
                built.groups.push(MetricGroup {
                    timestamp_ms,
                    dimensions: self.with_static(vec![
                        (DIM_SERVICE.into(), service),
                        (DIM_OPERATION.into(), op),
                    ]),
                    dimension_sets: sets.clone(),
                    metrics: red(
                        stats.requests,
                        stats.errors,
                        Distribution::from_histogram(&stats.latency, &self.latency_bounds),
                    ),
                });
            }
        }
        built
    }

    /// The backlog groups of `backlogs` (one per exporter with a disk
    /// queue), at `timestamp_ms`. At most one set per exporter, and
    /// exporters are fixed in code, so `max_dimension_sets` (a bound on
    /// what traffic names) does not apply.
    pub fn backlog(&self, backlogs: &[Backlog], timestamp_ms: i64) -> Vec<MetricGroup> {
        let sets = vec![self.with_static_names(&[DIM_EXPORTER])];
        backlogs
            .iter()
            .map(|b| MetricGroup {
                timestamp_ms,
                dimensions: self.with_static(vec![(DIM_EXPORTER.into(), b.exporter.into())]),
                dimension_sets: sets.clone(),
                metrics: vec![
                    scalar(METRIC_EXPORT_QUEUE_BYTES, Unit::Bytes, b.bytes as f64),
                    scalar(METRIC_EXPORT_QUEUE_RECORDS, Unit::Count, b.records as f64),
                    scalar(
                        METRIC_EXPORT_QUEUE_OLDEST_AGE,
                        Unit::Seconds,
                        b.oldest_age_seconds,
                    ),
                ],
            })
            .collect()
    }
}

impl ModelConfig {
    /// X-Ray sampling's minute: traces kept and (when set) the budget.
    pub fn sampling(&self, kept: u64, budget_per_minute: u64, timestamp_ms: i64) -> MetricGroup {
        let mut metrics = vec![scalar(METRIC_KEPT_TRACES, Unit::Count, kept as f64)];
        if budget_per_minute > 0 {
            metrics.push(scalar(
                METRIC_TRACE_BUDGET,
                Unit::Count,
                budget_per_minute as f64,
            ));
        }
        MetricGroup {
            timestamp_ms,
            dimensions: self.with_static(vec![(DIM_EXPORTER.into(), "xray".into())]),
            dimension_sets: vec![self.with_static_names(&[DIM_EXPORTER])],
            metrics,
        }
    }
}

fn red(requests: u64, errors: u64, latency: Distribution) -> Vec<Metric> {
    vec![
        scalar(METRIC_REQUESTS, Unit::Count, requests as f64),
        scalar(METRIC_ERRORS, Unit::Count, errors as f64),
        scalar(
            METRIC_ERROR_RATE,
            Unit::Percent,
            ratio_percent(errors, requests),
        ),
        distribution(METRIC_LATENCY, latency),
    ]
}

/// Every (metric name, dimension set) the model emits under `model`'s
/// rollups and static dimensions, found by running it on a graph with one
/// edge, one served service and one operation, and one exporter's disk
/// backlog; dashboards are checked
/// against this, so they can only name what the code emits.
pub fn emitted(model: &ModelConfig) -> std::collections::BTreeSet<(String, Vec<String>)> {
    use crate::graph::TimeWindow;
    use crate::graph::edge::{ConnectionType, EdgeKey};
    let mut sketch = Sketch::default();
    sketch.insert(1e6);
    let key = EdgeKey {
        client: "a".into(),
        server: "b".into(),
        connection_type: ConnectionType::Direct,
        client_dimensions: Box::default(),
        server_dimensions: Box::default(),
    };
    let stats = EdgeStats {
        requests: 1,
        failed: 0,
        client: sketch.clone(),
        server: sketch.clone(),
    };
    let node = NodeStats {
        requests: 1,
        errors: 0,
        latency: sketch,
    };
    let window = TimeWindow {
        start: std::time::SystemTime::UNIX_EPOCH,
        end: std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(60),
    };
    let topology = Topology::build(
        window,
        std::collections::HashMap::from([(key, stats)]),
        std::collections::HashMap::from([(Arc::<str>::from("b"), node)]),
    );
    let mut latency = Histogram::new(&model.latency_bounds);
    latency.observe(&model.latency_bounds, 0.001);
    let operations = OperationDeltas::from([(
        (Arc::<str>::from("b"), Box::<str>::from("GET /")),
        OperationStats {
            requests: 1,
            errors: 0,
            latency,
        },
    )]);
    let backlog = Backlog {
        exporter: "emf",
        bytes: 1,
        records: 1,
        oldest_age_seconds: 1.0,
    };
    let mut groups = model.build(&topology, &operations, 0).groups;
    groups.extend(model.backlog(&[backlog], 0));
    groups.push(model.sampling(1, 60, 0));
    let mut out = std::collections::BTreeSet::new();
    for group in groups {
        for set in &group.dimension_sets {
            for metric in &group.metrics {
                out.insert((metric.name.clone(), set.clone()));
            }
        }
    }
    out
}
