//! The API's JSON documents as types: `/api/v1/graph`, `/api/v1/diff`,
//! `/api/v1/series` and Jaeger's `/api/dependencies`. The server builds them
//! from the graph and `tracemap map` reads them back, so both sides share
//! one definition of each shape (DESIGN's contract).
//!
//! Open vocabularies (node kinds, connection types, verdicts) are strings,
//! and readers ignore unknown fields, so an older `tracemap map` still reads
//! a newer server's documents.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::graph::TimeWindow;
use crate::graph::diff::{EdgeDiff, Side};
use crate::graph::sketch::Sketch;
use crate::graph::topology::Topology;
use crate::store::Series;

/// `GET /api/v1/graph`: the service graph over one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphDocument {
    /// The time range the graph covers.
    pub window: Window,
    /// Services, databases, queues and virtual peers, in name order.
    #[serde(default)]
    pub nodes: Vec<Node>,
    /// Client → server edges.
    #[serde(default)]
    pub edges: Vec<Edge>,
}

/// A time range, RFC 3339 UTC to the second.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    /// Inclusive start.
    pub start: String,
    /// Exclusive end.
    pub end: String,
}

/// One node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Service (or peer) name.
    pub id: String,
    /// `service`, `database`, `messaging`, `virtual` or `user`.
    #[serde(default)]
    pub kind: String,
    /// Spans the node served (SERVER and CONSUMER).
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// Latency of the served spans.
    pub latency_ms: Latency,
}

/// One client → server edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Edge {
    /// Client service.
    pub source: String,
    /// Server service.
    pub target: String,
    /// Empty, `database`, `messaging_system` or `virtual_node`.
    #[serde(default)]
    pub connection_type: String,
    /// Requests in the window.
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// Requests per second over the window.
    pub rate_per_s: f64,
    /// Latency seen by the client.
    pub client_latency_ms: Latency,
    /// Latency seen by the server.
    pub server_latency_ms: Latency,
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Mean.
    pub avg: f64,
    /// Maximum; edges only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// `GET /api/v1/diff`: every edge of two windows and what changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffDocument {
    /// The current window.
    pub window: Window,
    /// The baseline window.
    pub baseline: Window,
    /// Every edge of either window, in name order.
    #[serde(default)]
    pub edges: Vec<DiffEdge>,
}

/// One edge of a diff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffEdge {
    /// Client service.
    pub source: String,
    /// Server service.
    pub target: String,
    /// Empty, `database`, `messaging_system` or `virtual_node`.
    #[serde(default)]
    pub connection_type: String,
    /// `new`, `vanished`, `regressed`, `improved` or `unchanged`.
    pub change: String,
    /// What moved: `error_rate`, `p99`.
    #[serde(default)]
    pub reasons: Vec<String>,
    /// Numbers now; `null` when vanished.
    pub current: Option<DiffSide>,
    /// Numbers in the baseline; `null` when new.
    pub baseline: Option<DiffSide>,
}

/// An edge's numbers in one window of a diff.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DiffSide {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// Server-side p99, ms.
    pub p99_ms: f64,
}

/// `GET /api/v1/series`: one edge or node over time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesDocument {
    /// Length of each step.
    pub step_seconds: u64,
    /// One point per step, oldest first; empty steps are zeros.
    pub points: Vec<SeriesPoint>,
}

/// One step of a series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// Start of the step, RFC 3339.
    pub t: String,
    /// Requests (edges) or served spans (nodes).
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
    /// p99 latency, ms.
    pub p99_ms: f64,
}

/// Jaeger's `GET /api/dependencies` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependencies {
    /// Calls per (parent, child), in name order.
    pub data: Vec<Dependency>,
}

/// Calls from one service to another, summed over connection types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dependency {
    /// Caller.
    pub parent: String,
    /// Callee.
    pub child: String,
    /// Requests in the window.
    #[serde(rename = "callCount")]
    pub call_count: u64,
}

/// `errors / whole`, rounded to six places; zero for no requests.
pub fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        round6(part as f64 / whole as f64)
    }
}

fn round3(value: f64) -> f64 {
    (value * 1e3).round() / 1e3
}

fn round6(value: f64) -> f64 {
    (value * 1e6).round() / 1e6
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

impl From<TimeWindow> for Window {
    fn from(window: TimeWindow) -> Self {
        Self {
            start: rfc3339(window.start),
            end: rfc3339(window.end),
        }
    }
}

impl Latency {
    fn of(sketch: &Sketch, with_max: bool) -> Self {
        let ms = |nanos: f64| round3(nanos / 1e6);
        Self {
            p50: ms(sketch.quantile(0.5)),
            p90: ms(sketch.quantile(0.9)),
            p99: ms(sketch.quantile(0.99)),
            avg: ms(sketch.mean()),
            max: with_max.then(|| ms(sketch.max())),
        }
    }
}

impl From<&Topology> for GraphDocument {
    fn from(topology: &Topology) -> Self {
        let seconds = topology.window.seconds();
        let nodes = topology
            .nodes()
            .map(|node| Node {
                id: node.id.to_string(),
                kind: node.kind.as_str().to_owned(),
                requests: node.stats.requests,
                errors: node.stats.errors,
                error_rate: ratio(node.stats.errors, node.stats.requests),
                latency_ms: Latency::of(&node.stats.latency, false),
            })
            .collect();
        let edges = topology
            .edges()
            .map(|(source, target, edge)| {
                let stats = &edge.stats;
                Edge {
                    source: source.id.to_string(),
                    target: target.id.to_string(),
                    connection_type: edge.connection_type.as_str().to_owned(),
                    requests: stats.requests,
                    errors: stats.failed,
                    error_rate: ratio(stats.failed, stats.requests),
                    rate_per_s: round3(stats.requests as f64 / seconds),
                    client_latency_ms: Latency::of(&stats.client, true),
                    server_latency_ms: Latency::of(&stats.server, true),
                }
            })
            .collect();
        Self {
            window: topology.window.into(),
            nodes,
            edges,
        }
    }
}

impl From<&Topology> for Dependencies {
    fn from(topology: &Topology) -> Self {
        let mut calls: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (source, target, edge) in topology.edges() {
            *calls.entry((&source.id, &target.id)).or_default() += edge.stats.requests;
        }
        let data = calls
            .into_iter()
            .map(|((parent, child), call_count)| Dependency {
                parent: parent.to_owned(),
                child: child.to_owned(),
                call_count,
            })
            .collect();
        Self { data }
    }
}

impl From<Side> for DiffSide {
    fn from(side: Side) -> Self {
        Self {
            requests: side.requests,
            errors: side.errors,
            error_rate: side.error_rate,
            p99_ms: side.p99_ms,
        }
    }
}

impl DiffDocument {
    /// The diff of `current` against `baseline`, as [`crate::graph::diff::diff`] classified it.
    pub fn new(current: TimeWindow, baseline: TimeWindow, edges: &[EdgeDiff]) -> Self {
        let edges = edges
            .iter()
            .map(|edge| DiffEdge {
                source: edge.source.clone(),
                target: edge.target.clone(),
                connection_type: edge.connection_type.to_owned(),
                change: edge.change.as_str().to_owned(),
                reasons: edge.reasons.iter().map(|r| (*r).to_owned()).collect(),
                current: edge.current.map(Into::into),
                baseline: edge.baseline.map(Into::into),
            })
            .collect();
        Self {
            window: current.into(),
            baseline: baseline.into(),
            edges,
        }
    }
}

impl From<&Series> for SeriesDocument {
    fn from(series: &Series) -> Self {
        Self {
            step_seconds: series.step_seconds,
            points: series
                .points
                .iter()
                .map(|p| SeriesPoint {
                    t: rfc3339(p.t),
                    requests: p.requests,
                    errors: p.errors,
                    p99_ms: round3(p.p99_ms),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
