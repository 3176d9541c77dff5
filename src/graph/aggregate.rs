//! Per-minute aggregates as queries gather them, from memory or the history
//! store: what a query selects, how it adds minutes up, and the batches the
//! shards hand to the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::TimeWindow;
use super::edge::{ConnectionType, EdgeKey, EdgeStats, Minute, NodeStats};
use super::topology::Topology;

/// The series a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection<'a> {
    /// Every edge and node.
    All,
    /// One edge; every connection type between the two when `None`.
    Edge {
        /// Calling side.
        client: &'a str,
        /// Called side.
        server: &'a str,
        /// Kind of connection.
        connection_type: Option<ConnectionType>,
    },
    /// One node: the spans it served, and the calls made to it, which
    /// stand for it when it sends no spans itself (databases, queues,
    /// uninstrumented peers), as in the graph.
    Node(&'a str),
}

impl Selection<'_> {
    /// Whether edge `key` is selected.
    pub fn edge(&self, key: &EdgeKey) -> bool {
        match self {
            Self::All => true,
            Self::Edge {
                client,
                server,
                connection_type,
            } => {
                *client == &*key.client
                    && *server == &*key.server
                    && connection_type.is_none_or(|t| t == key.connection_type)
            }
            Self::Node(name) => *name == &*key.server,
        }
    }

    /// Whether node `service` is selected.
    pub fn node(&self, service: &str) -> bool {
        match self {
            Self::All => true,
            Self::Edge { .. } => false,
            Self::Node(name) => *name == service,
        }
    }
}

/// Receives the aggregates of a query, one bucket at a time. A bucket
/// starts at `minute` and spans `width` minutes (1 unless compacted).
pub trait Accumulator {
    /// One edge's bucket; `key` carries no extra dimensions.
    fn edge(&mut self, minute: Minute, width: i64, key: &EdgeKey, stats: &EdgeStats);
    /// One node's bucket.
    fn node(&mut self, minute: Minute, width: i64, service: &Arc<str>, stats: &NodeStats);
}

/// Everything of a window added up, for the graph views.
#[derive(Debug, Default)]
pub struct Totals {
    /// Edges with at least one request.
    pub edges: HashMap<EdgeKey, EdgeStats>,
    /// Nodes with any bucket in the window (also those serving nothing).
    pub nodes: HashMap<Arc<str>, NodeStats>,
}

impl Totals {
    /// The graph of these totals over `window`.
    pub fn into_topology(self, window: TimeWindow) -> Topology {
        Topology::build(window, self.edges, self.nodes)
    }
}

impl Accumulator for Totals {
    fn edge(&mut self, _minute: Minute, _width: i64, key: &EdgeKey, stats: &EdgeStats) {
        if stats.requests == 0 {
            return;
        }
        match self.edges.get_mut(key) {
            Some(total) => total.merge(stats),
            None => {
                let mut total = EdgeStats::default();
                total.merge(stats);
                self.edges.insert(key.clone(), total);
            }
        }
    }

    fn node(&mut self, _minute: Minute, _width: i64, service: &Arc<str>, stats: &NodeStats) {
        match self.nodes.get_mut(service) {
            Some(total) => total.merge(stats),
            None => {
                let mut total = NodeStats::default();
                total.merge(stats);
                self.nodes.insert(service.clone(), total);
            }
        }
    }
}

/// One shard's minutes for the history store: the minutes that closed
/// since the last batch, and possibly the open minute as it stands (a later
/// batch replaces it).
#[derive(Debug, Clone, Default)]
pub struct MinuteBatch {
    /// The shard that recorded them.
    pub shard: usize,
    /// Every minute up to this one is final for this shard.
    pub sealed_through: Minute,
    /// Everything the shard recorded before this instant is in this batch
    /// or an earlier one; `None` when the open minute has unsent changes.
    pub as_of: Option<std::time::Instant>,
    /// Edge buckets, merged over extra dimensions, sketches sealed.
    pub edges: Vec<(Minute, EdgeKey, EdgeStats)>,
    /// Node buckets, sketches sealed.
    pub nodes: Vec<(Minute, Arc<str>, NodeStats)>,
}

/// Why a sink did not take a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkRefusal {
    /// The queue is full; the shard offers again on a later tick.
    Full,
    /// The sink is gone; the shard stops offering.
    Closed,
}

/// Where shards hand their minutes over: the history store's queue.
pub trait MinuteSink: Send + Sync {
    /// Queues `batch`; waits for room only when `wait` (at shutdown, never
    /// on a pipeline worker).
    fn offer(&self, batch: MinuteBatch, wait: bool) -> Result<(), SinkRefusal>;
    /// Counts shard-minutes that left memory before the sink took them.
    fn lost(&self, minutes: u64);
    /// How often the open minute is handed over.
    fn flush_interval(&self) -> Duration;
}
