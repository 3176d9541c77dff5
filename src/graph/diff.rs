//! "What changed": the edges of one window compared with a baseline window,
//! as `/api/v1/diff` and `tracemap map --diff` show them. Pure: two
//! topologies in, a list of classified edges out.

use std::collections::BTreeMap;

use serde::Serialize;

use super::edge::EdgeStats;
use super::topology::Topology;

/// When a change counts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    /// Absolute change of the error rate (0.05: from 1 % to 6 %).
    pub error_rate: f64,
    /// Relative change of p99: regressed at `baseline × (1 + t)` or more,
    /// improved at `baseline / (1 + t)` or less (0.5: up by half, or down
    /// by a third).
    pub latency: f64,
    /// Requests an edge needs in both windows before its rates are judged;
    /// rarer edges are `unchanged` unless new or vanished.
    pub min_requests: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            error_rate: 0.05,
            latency: 0.5,
            min_requests: 10,
        }
    }
}

/// How an edge changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Only in the current window.
    New,
    /// Error rate or p99 got worse beyond a threshold.
    Regressed,
    /// Only in the baseline window.
    Vanished,
    /// Error rate or p99 got better beyond a threshold, none got worse.
    Improved,
    /// Neither moved beyond its threshold.
    Unchanged,
}

impl Change {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Regressed => "regressed",
            Self::Vanished => "vanished",
            Self::Improved => "improved",
            Self::Unchanged => "unchanged",
        }
    }
}

/// An edge's numbers in one window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Side {
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// `errors / requests`.
    pub error_rate: f64,
    /// Server-side p99 (the callee's own time, as the graph labels show), ms.
    pub p99_ms: f64,
}

impl Side {
    fn of(stats: &EdgeStats) -> Self {
        let error_rate = if stats.requests == 0 {
            0.0
        } else {
            stats.failed as f64 / stats.requests as f64
        };
        Self {
            requests: stats.requests,
            errors: stats.failed,
            error_rate,
            p99_ms: stats.server.quantile(0.99) / 1e6,
        }
    }

    fn rounded(self) -> Self {
        Self {
            error_rate: (self.error_rate * 1e6).round() / 1e6,
            p99_ms: (self.p99_ms * 1e3).round() / 1e3,
            ..self
        }
    }
}

/// One edge of the comparison.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EdgeDiff {
    /// Calling node.
    pub source: String,
    /// Called node.
    pub target: String,
    /// `""`, `database`, `messaging_system` or `virtual_node`.
    pub connection_type: &'static str,
    /// The verdict.
    pub change: Change,
    /// What moved: `error_rate`, `p99`; empty for new, vanished, unchanged.
    pub reasons: Vec<&'static str>,
    /// Numbers in the current window; `null` when vanished.
    pub current: Option<Side>,
    /// Numbers in the baseline window; `null` when new.
    pub baseline: Option<Side>,
}

/// Float noise must not decide a threshold exactly met.
const EPSILON: f64 = 1e-9;

/// Classifies every edge of either window, in name order.
pub fn diff(current: &Topology, baseline: &Topology, thresholds: &Thresholds) -> Vec<EdgeDiff> {
    type Key = (String, String, &'static str);
    let mut pairs: BTreeMap<Key, (Option<Side>, Option<Side>)> = BTreeMap::new();
    for (topology, is_current) in [(current, true), (baseline, false)] {
        for (source, target, edge) in topology.edges() {
            let key = (
                source.id.to_string(),
                target.id.to_string(),
                edge.connection_type.as_str(),
            );
            let slot = pairs.entry(key).or_default();
            let side = Some(Side::of(&edge.stats));
            if is_current {
                slot.0 = side;
            } else {
                slot.1 = side;
            }
        }
    }
    pairs
        .into_iter()
        .map(|((source, target, connection_type), (now, before))| {
            let (change, reasons) = classify(now.as_ref(), before.as_ref(), thresholds);
            EdgeDiff {
                source,
                target,
                connection_type,
                change,
                reasons,
                current: now.map(Side::rounded),
                baseline: before.map(Side::rounded),
            }
        })
        .collect()
}

fn classify(
    now: Option<&Side>,
    before: Option<&Side>,
    t: &Thresholds,
) -> (Change, Vec<&'static str>) {
    let (now, before) = match (now, before) {
        (Some(now), Some(before)) => (now, before),
        (Some(_), None) => return (Change::New, Vec::new()),
        (None, _) => return (Change::Vanished, Vec::new()),
    };
    if now.requests < t.min_requests || before.requests < t.min_requests {
        return (Change::Unchanged, Vec::new());
    }
    let (mut worse, mut better) = (Vec::new(), Vec::new());
    let delta = now.error_rate - before.error_rate;
    if delta >= t.error_rate - EPSILON {
        worse.push("error_rate");
    } else if delta <= -t.error_rate + EPSILON {
        better.push("error_rate");
    }
    if before.p99_ms > 0.0 {
        let ratio = now.p99_ms / before.p99_ms;
        if ratio >= 1.0 + t.latency - EPSILON {
            worse.push("p99");
        } else if ratio <= 1.0 / (1.0 + t.latency) + EPSILON {
            better.push("p99");
        }
    }
    if !worse.is_empty() {
        (Change::Regressed, worse)
    } else if !better.is_empty() {
        (Change::Improved, better)
    } else {
        (Change::Unchanged, Vec::new())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::graph::TimeWindow;
    use crate::graph::edge::{ConnectionType, EdgeKey};

    pub(crate) fn key(client: &str, server: &str) -> EdgeKey {
        EdgeKey {
            client: client.into(),
            server: server.into(),
            connection_type: ConnectionType::Direct,
            client_dimensions: Box::default(),
            server_dimensions: Box::default(),
        }
    }

    pub(crate) fn stats(requests: u64, failed: u64, millis: f64) -> EdgeStats {
        let mut stats = EdgeStats {
            requests,
            failed,
            ..EdgeStats::default()
        };
        for _ in 0..requests {
            stats.client.insert(millis * 1e6);
            stats.server.insert(millis * 1e6);
        }
        stats
    }

    pub(crate) fn topology(edges: Vec<(EdgeKey, EdgeStats)>) -> Topology {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let window = TimeWindow {
            start,
            end: start + Duration::from_secs(900),
        };
        Topology::build(window, edges.into_iter().collect(), HashMap::new())
    }

    fn verdicts(edges: &[EdgeDiff]) -> Vec<(&str, &str, Change, Vec<&'static str>)> {
        edges
            .iter()
            .map(|e| (&*e.source, &*e.target, e.change, e.reasons.clone()))
            .collect()
    }

    #[test]
    fn every_kind_of_change_is_found() {
        let baseline = topology(vec![
            (key("a", "gone"), stats(50, 0, 10.0)),
            (key("a", "errors"), stats(100, 1, 10.0)),
            (key("a", "slow"), stats(100, 0, 10.0)),
            (key("a", "both"), stats(100, 0, 10.0)),
            (key("a", "better"), stats(100, 20, 30.0)),
            (key("a", "same"), stats(100, 2, 10.0)),
            (key("a", "rare"), stats(3, 0, 10.0)),
        ]);
        let current = topology(vec![
            (key("a", "fresh"), stats(5, 0, 10.0)),
            (key("a", "errors"), stats(100, 7, 10.0)),
            (key("a", "slow"), stats(100, 0, 16.0)),
            (key("a", "both"), stats(100, 30, 40.0)),
            (key("a", "better"), stats(100, 1, 10.0)),
            (key("a", "same"), stats(200, 5, 14.0)),
            (key("a", "rare"), stats(3, 3, 90.0)),
        ]);
        let edges = diff(&current, &baseline, &Thresholds::default());
        assert_eq!(
            verdicts(&edges),
            vec![
                ("a", "better", Change::Improved, vec!["error_rate", "p99"]),
                ("a", "both", Change::Regressed, vec!["error_rate", "p99"]),
                ("a", "errors", Change::Regressed, vec!["error_rate"]),
                ("a", "fresh", Change::New, vec![]),
                ("a", "gone", Change::Vanished, vec![]),
                ("a", "rare", Change::Unchanged, vec![]),
                ("a", "same", Change::Unchanged, vec![]),
                ("a", "slow", Change::Regressed, vec!["p99"]),
            ]
        );
        let fresh = &edges[3];
        assert_eq!(fresh.baseline, None);
        let current = fresh.current.unwrap();
        assert_eq!((current.requests, current.errors), (5, 0));
        assert!((current.p99_ms - 10.0).abs() <= 0.05, "{current:?}");
        assert_eq!(edges[4].current, None);
        assert_eq!(edges[2].current.unwrap().error_rate, 0.07);
    }

    #[test]
    fn thresholds_are_inclusive_and_configurable() {
        let baseline = topology(vec![(key("a", "b"), stats(100, 0, 10.0))]);
        // Exactly 5 points more errors.
        let current = topology(vec![(key("a", "b"), stats(100, 5, 10.0))]);
        let strict = Thresholds::default();
        assert_eq!(
            diff(&current, &baseline, &strict)[0].change,
            Change::Regressed
        );
        let lenient = Thresholds {
            error_rate: 0.06,
            ..Thresholds::default()
        };
        assert_eq!(
            diff(&current, &baseline, &lenient)[0].change,
            Change::Unchanged
        );
        // p99 doubled: regressed at 0.5, not at 1.5.
        let slower = topology(vec![(key("a", "b"), stats(100, 0, 20.0))]);
        assert_eq!(
            diff(&slower, &baseline, &strict)[0].change,
            Change::Regressed
        );
        let tolerant = Thresholds {
            latency: 1.5,
            ..Thresholds::default()
        };
        assert_eq!(
            diff(&slower, &baseline, &tolerant)[0].change,
            Change::Unchanged
        );
    }
}
