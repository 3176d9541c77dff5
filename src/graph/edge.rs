//! Edge and node statistics: per-minute buckets for window queries, plus
//! cumulative Prometheus counters and histograms.

use std::collections::VecDeque;
use std::sync::Arc;

use super::sketch::Sketch;

/// How two nodes are connected, as the `connection_type` label spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConnectionType {
    /// A synchronous call between two instrumented services.
    Direct,
    /// A CLIENT span to a database.
    Database,
    /// A PRODUCER → CONSUMER hop through a broker.
    Messaging,
    /// One side is not instrumented (a peer or the `user`).
    Virtual,
}

impl ConnectionType {
    /// The label value: `""`, `database`, `messaging_system`, `virtual_node`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Direct => "",
            Self::Database => "database",
            Self::Messaging => "messaging_system",
            Self::Virtual => "virtual_node",
        }
    }

    /// Every type, in code order.
    pub const ALL: [ConnectionType; 4] =
        [Self::Direct, Self::Database, Self::Messaging, Self::Virtual];

    /// A stable small number, as the history store keeps it.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The type of [`ConnectionType::code`].
    pub fn from_code(code: i64) -> Option<Self> {
        Self::ALL.into_iter().find(|t| i64::from(t.code()) == code)
    }

    /// The type a query names: its label value, or `direct` for `""`.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "direct" => Some(Self::Direct),
            name => Self::ALL.into_iter().find(|t| t.as_str() == name),
        }
    }
}

/// Identity of an edge.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EdgeKey {
    /// Calling side.
    pub client: Arc<str>,
    /// Called side.
    pub server: Arc<str>,
    /// Kind of connection.
    pub connection_type: ConnectionType,
    /// Client-side values of `graph.dimensions`.
    pub client_dimensions: super::store::Dimensions,
    /// Server-side values of `graph.dimensions`.
    pub server_dimensions: super::store::Dimensions,
}

impl EdgeKey {
    /// The key without extra dimensions, as the graph views show edges.
    pub fn without_dimensions(&self) -> Self {
        Self {
            client: self.client.clone(),
            server: self.server.clone(),
            connection_type: self.connection_type,
            client_dimensions: Box::default(),
            server_dimensions: Box::default(),
        }
    }
}

/// One completed request on an edge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    /// Either side had status ERROR.
    pub failed: bool,
    /// Duration seen by the client, nanoseconds.
    pub client_nanos: u64,
    /// Duration seen by the server, nanoseconds.
    pub server_nanos: u64,
}

/// An edge's numbers over some span of time; buckets merge into it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeStats {
    /// Requests.
    pub requests: u64,
    /// Requests where either side failed.
    pub failed: u64,
    /// Client-side latency, nanoseconds.
    pub client: Sketch,
    /// Server-side latency, nanoseconds.
    pub server: Sketch,
}

impl EdgeStats {
    fn record(&mut self, obs: &Observation) {
        self.requests += 1;
        self.failed += u64::from(obs.failed);
        self.client.insert(obs.client_nanos as f64);
        self.server.insert(obs.server_nanos as f64);
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &EdgeStats) {
        self.requests += other.requests;
        self.failed += other.failed;
        self.client.merge(&other.client);
        self.server.merge(&other.server);
    }
}

/// A node's served spans over some span of time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeStats {
    /// SERVER and CONSUMER spans.
    pub requests: u64,
    /// Of those, with status ERROR.
    pub errors: u64,
    /// Their durations, nanoseconds.
    pub latency: Sketch,
}

impl NodeStats {
    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &NodeStats) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
    }
}

/// Unix minute: seconds since the epoch divided by 60.
pub type Minute = i64;

/// A per-minute bucket; sealed when its minute is over.
pub trait Bucket: Default {
    /// Compacts storage that only a bucket still being written needs.
    fn seal(&mut self) {}
}

impl Bucket for u64 {}

impl Bucket for EdgeStats {
    fn seal(&mut self) {
        self.client.seal();
        self.server.seal();
    }
}

impl Bucket for NodeStats {
    fn seal(&mut self) {
        self.latency.seal();
    }
}

/// Per-minute buckets, newest at the back, at most `retention` minutes old.
#[derive(Debug, Clone, Default)]
pub struct MinuteSeries<T> {
    buckets: VecDeque<(Minute, T)>,
}

impl<T: Bucket> MinuteSeries<T> {
    /// The bucket of `minute`, created if needed; old buckets beyond
    /// `retention` minutes are dropped.
    pub fn bucket(&mut self, minute: Minute, retention: i64) -> &mut T {
        while self
            .buckets
            .front()
            .is_some_and(|(m, _)| *m <= minute - retention)
        {
            self.buckets.pop_front();
        }
        // Clocks can step back; a late minute lands in the newest bucket.
        if self.buckets.back().is_none_or(|(m, _)| *m < minute) {
            if let Some((_, last)) = self.buckets.back_mut() {
                last.seal();
            }
            self.buckets.push_back((minute, T::default()));
        }
        &mut self.buckets.back_mut().expect("just ensured").1
    }

    /// Buckets whose minute lies in `first..=last`.
    pub fn range(&self, first: Minute, last: Minute) -> impl Iterator<Item = &T> {
        self.buckets
            .iter()
            .filter(move |(m, _)| (first..=last).contains(m))
            .map(|(_, t)| t)
    }

    /// Buckets whose minute lies in `first..=last`, with their minute.
    pub fn minutes(&self, first: Minute, last: Minute) -> impl Iterator<Item = (Minute, &T)> {
        self.buckets
            .iter()
            .filter(move |(m, _)| (first..=last).contains(m))
            .map(|(m, t)| (*m, t))
    }

    /// Seals the buckets of `first..=last`: their minutes are over.
    pub fn seal_range(&mut self, first: Minute, last: Minute) {
        for (_, bucket) in self
            .buckets
            .iter_mut()
            .filter(|(m, _)| (first..=last).contains(m))
        {
            bucket.seal();
        }
    }

    /// Newest minute with data.
    pub fn last_minute(&self) -> Option<Minute> {
        self.buckets.back().map(|(m, _)| *m)
    }

    /// Drops buckets older than `retention` minutes before `now`; true when none remain.
    pub fn prune(&mut self, now: Minute, retention: i64) -> bool {
        while self
            .buckets
            .front()
            .is_some_and(|(m, _)| *m <= now - retention)
        {
            self.buckets.pop_front();
        }
        self.buckets.is_empty()
    }
}

/// A fixed-bucket histogram for Prometheus (seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Count per bucket: one per bound, then +Inf.
    pub counts: Vec<u64>,
    /// Sum of observed values, seconds.
    pub sum: f64,
}

impl Histogram {
    /// Empty histogram for `bounds` (upper bounds, ascending, seconds).
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
        }
    }

    /// Records `seconds`.
    pub fn observe(&mut self, bounds: &[f64], seconds: f64) {
        let index = bounds.partition_point(|&b| b < seconds);
        self.counts[index] += 1;
        self.sum += seconds;
    }

    /// Adds `other` (same bounds) into `self`.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.sum += other.sum;
    }

    /// Total observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// Cumulative Prometheus state of one edge, split by the `failed` label.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeTotals {
    /// Requests, indexed by failed (0 = false, 1 = true).
    pub requests: [u64; 2],
    /// Client-side latency histograms, indexed by failed.
    pub client: [Histogram; 2],
    /// Server-side latency histograms, indexed by failed.
    pub server: [Histogram; 2],
}

impl EdgeTotals {
    fn new(bounds: &[f64]) -> Self {
        let empty = Histogram::new(bounds);
        Self {
            requests: [0; 2],
            client: [empty.clone(), empty.clone()],
            server: [empty.clone(), empty],
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &EdgeTotals) {
        for i in 0..2 {
            self.requests[i] += other.requests[i];
            self.client[i].merge(&other.client[i]);
            self.server[i].merge(&other.server[i]);
        }
    }
}

/// Everything kept about one edge in one shard.
#[derive(Debug, Clone)]
pub struct EdgeSeries {
    /// Per-minute stats, for windowed queries.
    pub minutes: MinuteSeries<EdgeStats>,
    /// Since start, for Prometheus.
    pub totals: EdgeTotals,
}

impl EdgeSeries {
    /// An empty series with histograms over `bounds`.
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            minutes: MinuteSeries::default(),
            totals: EdgeTotals::new(bounds),
        }
    }

    /// Records one request in `minute`.
    pub fn record(&mut self, obs: &Observation, minute: Minute, retention: i64, bounds: &[f64]) {
        self.minutes.bucket(minute, retention).record(obs);
        let failed = usize::from(obs.failed);
        self.totals.requests[failed] += 1;
        self.totals.client[failed].observe(bounds, obs.client_nanos as f64 / 1e9);
        self.totals.server[failed].observe(bounds, obs.server_nanos as f64 / 1e9);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minute_series_keeps_retention_and_answers_ranges() {
        let mut series = MinuteSeries::<u64>::default();
        for minute in 100..110 {
            *series.bucket(minute, 5) += 1;
        }
        *series.bucket(109, 5) += 1;
        assert_eq!(
            series.range(0, 1000).count(),
            5,
            "only the last 5 minutes remain"
        );
        assert_eq!(series.range(108, 109).sum::<u64>(), 3);
        // A clock step back lands in the newest bucket.
        *series.bucket(107, 5) += 10;
        assert_eq!(series.range(109, 109).sum::<u64>(), 12);
        assert!(!series.prune(110, 5));
        assert!(series.prune(200, 5));
    }

    #[test]
    fn histogram_buckets_are_upper_inclusive() {
        let bounds = [0.1, 1.0];
        let mut h = Histogram::new(&bounds);
        for v in [0.05, 0.1, 0.5, 1.0, 3.0] {
            h.observe(&bounds, v);
        }
        assert_eq!(h.counts, vec![2, 2, 1]);
        assert_eq!(h.count(), 5);
    }

    #[test]
    fn edge_series_splits_totals_by_failed() {
        let bounds = [0.001, 1.0];
        let mut series = EdgeSeries::new(&bounds);
        let ok = Observation {
            failed: false,
            client_nanos: 2_000_000,
            server_nanos: 1_000_000,
        };
        let bad = Observation { failed: true, ..ok };
        series.record(&ok, 10, 60, &bounds);
        series.record(&ok, 10, 60, &bounds);
        series.record(&bad, 11, 60, &bounds);
        assert_eq!(series.totals.requests, [2, 1]);
        assert_eq!(series.totals.client[0].counts, vec![0, 2, 0]);
        assert_eq!(series.totals.server[0].counts, vec![2, 0, 0]);
        let mut stats = EdgeStats::default();
        for bucket in series.minutes.range(10, 11) {
            stats.merge(bucket);
        }
        assert_eq!((stats.requests, stats.failed), (3, 1));
        assert_eq!(stats.client.count(), 3);
    }
}
