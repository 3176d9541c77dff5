//! Window queries across memory and the store: the graph of any window up
//! to `storage.retention`, and per-edge or per-node time series.
//!
//! Memory holds this run's minutes of the last `graph.retention`; the
//! store holds every run's minutes, this run's a moment later. A window is
//! answered from memory for the minutes memory still holds, plus the store's
//! rows of those minutes written by other runs (before a restart), plus all
//! of the store's rows of older minutes. No minute is counted twice.

use std::time::{Duration, SystemTime};

use super::{Store, StoreError};
use crate::graph::aggregate::{Accumulator, Selection, Totals};
use crate::graph::edge::{EdgeKey, EdgeStats, Minute, NodeStats};
use crate::graph::sketch::Sketch;
use crate::graph::topology::Topology;
use crate::graph::{Graph, TimeWindow};

/// How far back queries reach, and the setting that decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    /// The length.
    pub duration: Duration,
    /// The config key, for error messages.
    pub key: &'static str,
}

/// The live graph plus, when kept, its stored history.
#[derive(Debug, Clone)]
pub struct History {
    graph: Graph,
    store: Option<Store>,
}

impl History {
    /// Queries over `graph`'s memory and, if given, `store`.
    pub fn new(graph: Graph, store: Option<Store>) -> Self {
        Self { graph, store }
    }

    /// The live graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The store, when history is kept.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// How far back windows reach.
    pub fn reach(&self) -> Reach {
        let memory = self.graph.config().retention;
        match &self.store {
            Some(store) if store.config().retention > memory => Reach {
                duration: store.config().retention,
                key: "storage.retention",
            },
            _ => Reach {
                duration: memory,
                key: "graph.retention",
            },
        }
    }

    /// First minute memory is sure to hold at `now`.
    fn memory_from(&self, now: SystemTime) -> Minute {
        let retention = self.graph.config().retention.as_secs().div_ceil(60) as i64;
        crate::graph::unix_minute(now) - retention + 1
    }

    /// Feeds `acc` every selected bucket overlapping `first..=last`, each
    /// minute once; the span the buckets really cover comes back.
    /// Whole hours may come from the store's hourly rollups when
    /// `hourly_ok`.
    fn accumulate(
        &self,
        (first, last): (Minute, Minute),
        now: SystemTime,
        hourly_ok: bool,
        selection: &Selection<'_>,
        acc: &mut dyn Accumulator,
    ) -> Result<super::Coverage, StoreError> {
        let memory_from = self.memory_from(now);
        if last >= memory_from {
            self.graph
                .accumulate(first.max(memory_from), last, selection, acc);
        }
        match &self.store {
            // Within memory's reach the store only adds earlier runs' rows.
            Some(store) if first < memory_from || first <= store.foreign_until() => {
                let request = super::ReadRequest {
                    first,
                    last,
                    memory_from,
                    now: crate::graph::unix_minute(now),
                    prefer_rollups: hourly_ok,
                };
                store.read(&request, selection, acc)
            }
            _ => Ok(super::Coverage::default()),
        }
    }

    /// The graph over `window` at time `now`. When compacted buckets cover
    /// the window's ends, the answer's window widens to them, so rates stay
    /// true. Blocks on the store.
    pub fn snapshot(&self, window: TimeWindow, now: SystemTime) -> Result<Topology, StoreError> {
        let mut totals = Totals::default();
        let coverage =
            self.accumulate(window.minutes(), now, true, &Selection::All, &mut totals)?;
        Ok(totals.into_topology(widen(window, coverage)))
    }

    /// Requests, errors and p99 per step over `window`: steps of at least a
    /// minute, aligned to the step, at most about [`MAX_POINTS`] of them and
    /// never finer than the stored buckets. Blocks on the store.
    pub fn series(
        &self,
        selection: &Selection<'_>,
        window: TimeWindow,
        now: SystemTime,
    ) -> Result<Series, StoreError> {
        let (first, last) = window.minutes();
        let finest = self.finest_bucket(first, now);
        let step = step_minutes(last - first + 1, finest);
        let origin = first.div_euclid(step) * step;
        let count = ((last - origin) / step + 1) as usize;
        let mut steps = Steps {
            origin,
            step,
            served: vec![StepTotals::default(); count],
            called: vec![StepTotals::default(); count],
            node_seen: false,
        };
        self.accumulate((first, last), now, step % 60 == 0, selection, &mut steps)?;
        // A node that sent spans shows what it served; one that did not,
        // what its callers saw (as the graph does).
        let points = match (selection, steps.node_seen) {
            (Selection::Node(_), true) => steps.served,
            _ => steps.called,
        };
        let points = points
            .into_iter()
            .enumerate()
            .map(|(i, totals)| SeriesPoint {
                t: SystemTime::UNIX_EPOCH
                    + Duration::from_secs(((origin + i as i64 * step) * 60) as u64),
                requests: totals.requests,
                errors: totals.errors,
                p99_ms: totals.latency.quantile(0.99) / 1e6,
            })
            .collect();
        Ok(Series {
            step_seconds: (step * 60) as u64,
            points,
        })
    }

    /// Widest bucket the store may hold for minutes from `first` on.
    fn finest_bucket(&self, first: Minute, now: SystemTime) -> i64 {
        let Some(store) = &self.store else {
            return 1;
        };
        let age = crate::graph::unix_minute(now) - first;
        store
            .config()
            .compaction
            .iter()
            .filter(|tier| age > tier.after_minutes())
            .map(|tier| tier.width())
            .max()
            .unwrap_or(1)
    }
}

/// Points a series aims to stay under.
pub const MAX_POINTS: i64 = 300;

/// Step lengths in minutes; each divides a day, and each at least as long
/// as a compaction bucket is a multiple of it.
const STEPS: [i64; 12] = [1, 2, 5, 10, 20, 30, 60, 120, 180, 360, 720, 1440];

fn step_minutes(minutes: i64, finest: i64) -> i64 {
    let wanted = (minutes + MAX_POINTS - 1) / MAX_POINTS;
    STEPS
        .into_iter()
        .find(|s| *s >= wanted && *s >= finest && s % finest == 0)
        .unwrap_or(1440)
}

fn widen(window: TimeWindow, coverage: super::Coverage) -> TimeWindow {
    let Some((start, end)) = coverage.coarse else {
        return window;
    };
    let at = |minute: Minute| SystemTime::UNIX_EPOCH + Duration::from_secs((minute * 60) as u64);
    TimeWindow {
        start: window.start.min(at(start)),
        end: window.end.max(at(end)),
    }
}

/// A time series for the page: `{"step_seconds", "points": [...]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Length of each step.
    pub step_seconds: u64,
    /// One point per step, oldest first; empty steps are zeros.
    pub points: Vec<SeriesPoint>,
}

/// One step of a series.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SeriesPoint {
    /// Start of the step.
    pub t: SystemTime,
    /// Requests (edges) or served spans (nodes).
    pub requests: u64,
    /// Of those, failed.
    pub errors: u64,
    /// p99 latency, ms: server side for edges, served spans for nodes.
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Default)]
struct StepTotals {
    requests: u64,
    errors: u64,
    latency: Sketch,
}

struct Steps {
    origin: Minute,
    step: i64,
    /// Node buckets: spans served.
    served: Vec<StepTotals>,
    /// Edge buckets: calls made (to the node, or on the edge).
    called: Vec<StepTotals>,
    node_seen: bool,
}

impl Steps {
    /// The step of `minute`; buckets are never wider than a step and align
    /// to it.
    fn index(&self, minute: Minute) -> Option<usize> {
        usize::try_from((minute - self.origin).div_euclid(self.step))
            .ok()
            .filter(|i| *i < self.called.len())
    }
}

impl Accumulator for Steps {
    fn edge(&mut self, minute: Minute, _width: i64, _key: &EdgeKey, stats: &EdgeStats) {
        if let Some(i) = self.index(minute) {
            let point = &mut self.called[i];
            point.requests += stats.requests;
            point.errors += stats.failed;
            point.latency.merge(&stats.server);
        }
    }

    fn node(
        &mut self,
        minute: Minute,
        _width: i64,
        _service: &std::sync::Arc<str>,
        stats: &NodeStats,
    ) {
        self.node_seen = true;
        if let Some(i) = self.index(minute) {
            let point = &mut self.served[i];
            point.requests += stats.requests;
            point.errors += stats.errors;
            point.latency.merge(&stats.latency);
        }
    }
}
