//! The live service graph: pairs client and server halves of calls into
//! edges, keeps per-minute edge and node statistics, and answers window
//! queries and Prometheus scrapes.
//!
//! Each pipeline shard owns one [`Shard`] (pairing store, edge and node
//! series, span metrics) behind its own mutex: the worker is its only
//! writer, and queries lock shards one at a time to merge them, so no
//! lock is shared between shards on the hot path.

pub mod aggregate;
pub mod diff;
pub mod edge;
pub mod sketch;
pub mod spanmetrics;
pub mod store;
pub mod topology;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use hashbrown::{Equivalent, HashMap};
use serde::{Deserialize, Serialize};
use smol_str::SmolStr;
use tokio::time::Instant;

use self::aggregate::{Accumulator, MinuteBatch, MinuteSink, Selection, SinkRefusal, Totals};
use self::edge::{
    ConnectionType, EdgeKey, EdgeSeries, EdgeStats, EdgeTotals, Minute, MinuteSeries, NodeStats,
    Observation,
};
use self::store::{Half, Offer, PairingStore, Side};
use self::topology::Topology;
use crate::graph::spanmetrics::{SpanMetrics, SpanMetricsConfig};
use crate::model::{KeySet, Span, SpanKind, StatusCode};
use crate::pipeline::SpanConsumer;
use crate::pipeline::memory::Shrink;
use crate::validate::{Invalid, Valid};

/// Name of the virtual client of root SERVER spans.
pub const USER_NODE: &str = "user";

/// Database attributes that make a CLIENT span a database call.
const DATABASE_ATTRIBUTES: [&str; 4] = ["db.system", "db.system.name", "db.namespace", "db.name"];
/// Attributes naming the database node, in order of preference.
const DATABASE_NAME_ATTRIBUTES: [&str; 5] = [
    "peer.service",
    "db.namespace",
    "db.name",
    "db.system.name",
    "db.system",
];
/// Attributes naming a PRODUCER's destination when no consumer shows up.
const MESSAGING_PEER_ATTRIBUTES: [&str; 3] = [
    "peer.service",
    "messaging.destination.name",
    "messaging.system",
];

/// Service-graph settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GraphConfig {
    /// How long a half waits for the other half of its call.
    #[serde(with = "humantime_serde")]
    pub pairing_ttl: Duration,
    /// Halves waiting at most, over all shards; more are dropped and counted.
    pub max_pending: usize,
    /// Distinct edges at most; new edges beyond it are dropped and counted.
    pub max_edges: usize,
    /// How far back windowed queries reach (per-minute statistics kept in
    /// memory); idle edges are pruned after it.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// Upper bounds, in seconds, of the Prometheus latency histograms.
    pub latency_histogram_buckets: Vec<f64>,
    /// CLIENT attributes naming an uninstrumented peer, in order of preference.
    pub peer_attributes: Vec<String>,
    /// Extra edge dimensions: attribute keys read from each side's span (or,
    /// failing that, its resource) and exported as `client_<key>` and
    /// `server_<key>` Prometheus labels. Each multiplies the series; edges
    /// stay bounded by `max_edges`.
    pub dimensions: Vec<String>,
    /// RED metrics per service, span name, kind and status.
    pub span_metrics: SpanMetricsConfig,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            pairing_ttl: Duration::from_secs(10),
            max_pending: 100_000,
            max_edges: 10_000,
            retention: Duration::from_secs(3600),
            latency_histogram_buckets: vec![
                0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0,
                10.0, 15.0,
            ],
            peer_attributes: [
                "peer.service",
                "server.address",
                "net.peer.name",
                "network.peer.address",
                "net.sock.peer.addr",
            ]
            .map(String::from)
            .to_vec(),
            dimensions: Vec::new(),
            span_metrics: SpanMetricsConfig::default(),
        }
    }
}

impl GraphConfig {
    /// The section checked as `Config::validate` checks it; panics naming
    /// the problems (tests).
    #[cfg(test)]
    pub(crate) fn checked(self) -> Valid<Self> {
        crate::validate::section(|problems| self.validate("graph", problems))
            .unwrap_or_else(|problems| panic!("invalid GraphConfig: {problems:?}"))
    }

    /// Checks every rule; the section as `start` takes it when none is broken.
    pub fn validate(&self, prefix: &str, invalid: &mut Vec<Invalid>) -> Option<Valid<Self>> {
        Valid::check(self, invalid, |this, invalid| this.check(prefix, invalid))
    }

    fn check(&self, prefix: &str, invalid: &mut Vec<Invalid>) {
        let mut bad = |key: &str, reason: &str| {
            invalid.push(Invalid {
                key: format!("{prefix}.{key}"),
                reason: reason.into(),
            })
        };
        if self.pairing_ttl < Duration::from_millis(100) {
            bad("pairing_ttl", "must be at least 100ms");
        }
        if self.max_pending == 0 {
            bad("max_pending", "must be at least 1");
        }
        if self.max_edges == 0 {
            bad("max_edges", "must be at least 1");
        }
        if self.peer_attributes.len() > MAX_PEER_ATTRIBUTES {
            bad("peer_attributes", "must list at most 16 keys");
        }
        if self.dimensions.len() > MAX_DIMENSIONS {
            bad("dimensions", "must list at most 8 keys");
        }
        if self.dimensions.iter().any(|d| d.trim().is_empty()) {
            bad("dimensions", "keys must not be empty");
        }
        if self.retention < Duration::from_secs(60) {
            bad("retention", "must be at least 1m");
        }
        let buckets = &self.latency_histogram_buckets;
        if buckets.is_empty()
            || buckets.iter().any(|b| !b.is_finite() || *b <= 0.0)
            || buckets.windows(2).any(|w| w[0] >= w[1])
        {
            bad(
                "latency_histogram_buckets",
                "must be positive, finite and strictly increasing",
            );
        }
        self.span_metrics
            .check(&format!("{prefix}.span_metrics"), invalid);
    }

    fn retention_minutes(&self) -> i64 {
        (self.retention.as_secs().div_ceil(60)) as i64
    }
}

/// Counters of one shard, summed over shards for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GraphCounters {
    /// Calls completed from two halves.
    pub paired: u64,
    /// Database calls completed from the client half alone.
    pub database: u64,
    /// Root SERVER spans drawn as calls from `user`.
    pub user: u64,
    /// Unpaired client halves drawn as calls to a virtual peer on expiry.
    pub expired_virtual: u64,
    /// Unpaired halves that expired without anything to draw.
    pub expired_discarded: u64,
    /// Halves dropped because the pairing store was full.
    pub dropped_store_full: u64,
    /// Calls dropped because the edge limit was reached.
    pub dropped_edge_limit: u64,
    /// Halves whose key was already waiting on the same side.
    pub duplicates: u64,
    /// Edges removed after idling past the retention.
    pub pruned_edges: u64,
}

impl GraphCounters {
    fn add(&mut self, other: &GraphCounters) {
        self.paired += other.paired;
        self.database += other.database;
        self.user += other.user;
        self.expired_virtual += other.expired_virtual;
        self.expired_discarded += other.expired_discarded;
        self.dropped_store_full += other.dropped_store_full;
        self.dropped_edge_limit += other.dropped_edge_limit;
        self.duplicates += other.duplicates;
        self.pruned_edges += other.pruned_edges;
    }
}

/// An edge key borrowed from a span, so lookups of known edges do not allocate.
/// Field order and types hash exactly as [`EdgeKey`] does.
#[derive(Hash)]
struct EdgeRef<'a> {
    client: &'a str,
    server: &'a str,
    connection_type: ConnectionType,
    client_dimensions: &'a [Option<Box<str>>],
    server_dimensions: &'a [Option<Box<str>>],
}

impl Equivalent<EdgeKey> for EdgeRef<'_> {
    fn equivalent(&self, key: &EdgeKey) -> bool {
        self.connection_type == key.connection_type
            && self.client == &*key.client
            && self.server == &*key.server
            && self.client_dimensions == &*key.client_dimensions
            && self.server_dimensions == &*key.server_dimensions
    }
}

/// Most attribute keys the graph reads from one span (fixed ones plus
/// `graph.peer_attributes`).
const MAX_LOOKUP_KEYS: usize = 32;
/// Most `graph.peer_attributes`.
const MAX_PEER_ATTRIBUTES: usize = 16;
/// Most `graph.dimensions`.
const MAX_DIMENSIONS: usize = 8;

/// Every attribute key the graph reads from a CLIENT or PRODUCER span, read
/// in one pass, and where each rule finds its keys in that list.
struct Lookup {
    keys: KeySet,
    database: Vec<usize>,
    database_name: Vec<usize>,
    messaging_peer: Vec<usize>,
    peer: Vec<usize>,
}

impl Lookup {
    fn new(config: &GraphConfig) -> Self {
        let mut keys = KeySet::new::<&str>([]).expect("an empty set");
        // At most 4 + 5 + 3 fixed keys plus MAX_PEER_ATTRIBUTES, well under
        // the set's capacity.
        let mut index_of = |key: &str| keys.insert(key).expect("lookup keys fit a KeySet");
        let database = DATABASE_ATTRIBUTES.iter().map(|k| index_of(k)).collect();
        let database_name = DATABASE_NAME_ATTRIBUTES
            .iter()
            .map(|k| index_of(k))
            .collect();
        let messaging_peer = MESSAGING_PEER_ATTRIBUTES
            .iter()
            .map(|k| index_of(k))
            .collect();
        let peer = config.peer_attributes.iter().map(|k| index_of(k)).collect();
        Self {
            keys,
            database,
            database_name,
            messaging_peer,
            peer,
        }
    }

    /// Whom a CLIENT or PRODUCER span calls, as far as its own attributes
    /// tell: a database (an edge of its own), or the peer to name should no
    /// server span answer it.
    fn callee<'a>(&self, span: &'a Span) -> Callee<'a> {
        let messaging = span.kind == SpanKind::Producer;
        let mut found = [None; MAX_LOOKUP_KEYS];
        let found = &mut found[..self.keys.len()];
        span.attributes.find_strs(&self.keys, found);
        let first = |indexes: &[usize]| {
            indexes
                .iter()
                .filter_map(|&i| found[i])
                .find(|value| !value.is_empty())
        };
        let is_database = !messaging && self.database.iter().any(|&i| found[i].is_some());
        if let Some(database) = is_database.then(|| first(&self.database_name)).flatten() {
            return Callee::Database(database);
        }
        Callee::Peer(if messaging {
            first(&self.messaging_peer)
        } else {
            first(&self.peer)
        })
    }
}

/// What [`Lookup::callee`] finds.
enum Callee<'a> {
    Database(&'a str),
    Peer(Option<&'a str>),
}

/// A shard's hand-over of minutes to the history store.
struct Handover {
    sink: Arc<dyn MinuteSink>,
    shard: usize,
    /// Minutes up to this one were handed over final.
    sealed_through: Minute,
    /// When the open minute was last handed over.
    last_flush: Instant,
    /// Spans recorded since then.
    dirty: bool,
}

/// Graph state of one pipeline shard.
pub struct Shard {
    handover: Option<Handover>,
    lookup: Lookup,
    store: PairingStore,
    edges: HashMap<EdgeKey, EdgeSeries>,
    nodes: HashMap<Arc<str>, MinuteSeries<NodeStats>>,
    spans: SpanMetrics,
    counters: GraphCounters,
    config: Arc<GraphConfig>,
}

impl Shard {
    fn new(config: Arc<GraphConfig>, shard_count: usize) -> Self {
        let max_pending = (config.max_pending / shard_count).max(1);
        Self {
            handover: None,
            lookup: Lookup::new(&config),
            store: PairingStore::new(config.pairing_ttl, max_pending),
            edges: HashMap::new(),
            nodes: HashMap::new(),
            spans: SpanMetrics::new(&config.span_metrics, &config.latency_histogram_buckets),
            counters: GraphCounters::default(),
            config,
        }
    }

    /// Processes one span at `now` (pairing clock) in `minute` (statistics clock).
    pub fn process(&mut self, span: &Span, now: Instant, minute: Minute) {
        let service = &span.resource.service_name;
        let failed = span.status_code == StatusCode::Error;
        let duration = span.duration_nanos();
        let retention = self.config.retention_minutes();
        if let Some(handover) = &mut self.handover {
            handover.dirty = true;
        }
        self.spans.record(span, minute);
        let served = matches!(span.kind, SpanKind::Server | SpanKind::Consumer);
        self.record_node(service, served, failed, duration, minute, retention);
        let dimensions = self.dimensions_of(span);
        match span.kind {
            SpanKind::Client | SpanKind::Producer => {
                let messaging = span.kind == SpanKind::Producer;
                let peer = match self.lookup.callee(span) {
                    Callee::Database(database) => {
                        self.counters.database += 1;
                        let obs = one_sided(failed, duration);
                        let edge = (service.as_ref(), database, ConnectionType::Database);
                        let unknown = self.unknown_dimensions();
                        self.record_edge(edge, &dimensions, &unknown, &obs, minute);
                        return;
                    }
                    Callee::Peer(peer) => peer,
                };
                let half = Half {
                    service: service.clone(),
                    side: Side::Client,
                    messaging,
                    failed,
                    duration_nanos: duration,
                    peer: peer.map(SmolStr::new),
                    dimensions,
                };
                self.offer(span, span.span_id, half, now, minute);
            }
            SpanKind::Server | SpanKind::Consumer => {
                let half = Half {
                    service: service.clone(),
                    side: Side::Server,
                    messaging: span.kind == SpanKind::Consumer,
                    failed,
                    duration_nanos: duration,
                    peer: None,
                    dimensions,
                };
                match span.parent_span_id {
                    Some(parent) => self.offer(span, parent, half, now, minute),
                    None if span.kind == SpanKind::Server => {
                        self.counters.user += 1;
                        let obs = one_sided(failed, duration);
                        let edge = (USER_NODE, service.as_ref(), ConnectionType::Virtual);
                        let unknown = self.unknown_dimensions();
                        self.record_edge(edge, &unknown, &half.dimensions, &obs, minute);
                    }
                    // A root CONSUMER has no producer to pair with or to name.
                    None => self.counters.expired_discarded += 1,
                }
            }
            SpanKind::Internal | SpanKind::Unspecified => {}
        }
    }

    fn offer(
        &mut self,
        span: &Span,
        call_span_id: crate::model::SpanId,
        half: Half,
        now: Instant,
        minute: Minute,
    ) {
        match self.store.offer(span.trace_id, call_span_id, half, now) {
            Offer::Paired(pair) => {
                self.counters.paired += 1;
                let messaging = pair.client.messaging || pair.server.messaging;
                let connection_type = if messaging {
                    ConnectionType::Messaging
                } else {
                    ConnectionType::Direct
                };
                let obs = Observation {
                    failed: pair.client.failed || pair.server.failed,
                    client_nanos: pair.client.duration_nanos,
                    server_nanos: pair.server.duration_nanos,
                };
                let edge = (
                    &*pair.client.service,
                    &*pair.server.service,
                    connection_type,
                );
                let (client, server) = (&pair.client.dimensions, &pair.server.dimensions);
                self.record_edge(edge, client, server, &obs, minute);
            }
            Offer::Pending => {}
            Offer::Duplicate => self.counters.duplicates += 1,
            Offer::Full => self.counters.dropped_store_full += 1,
        }
    }

    fn record_node(
        &mut self,
        service: &Arc<str>,
        served: bool,
        failed: bool,
        duration: u64,
        minute: Minute,
        retention: i64,
    ) {
        let series = match self.nodes.get_mut(&**service) {
            Some(series) => series,
            None => self.nodes.entry(service.clone()).or_default(),
        };
        let bucket = series.bucket(minute, retention);
        if served {
            bucket.requests += 1;
            bucket.errors += u64::from(failed);
            bucket.latency.insert(duration as f64);
        }
    }

    /// Values of the configured dimensions on `span`: its own attribute,
    /// else its resource's.
    fn dimensions_of(&self, span: &Span) -> store::Dimensions {
        if self.config.dimensions.is_empty() {
            return Box::default();
        }
        self.config
            .dimensions
            .iter()
            .map(|key| {
                span.attributes
                    .get_str(key)
                    .or_else(|| span.resource.attributes.get_str(key))
                    .map(Box::from)
            })
            .collect()
    }

    /// Dimensions of a side no span was seen for.
    fn unknown_dimensions(&self) -> store::Dimensions {
        if self.config.dimensions.is_empty() {
            return Box::default();
        }
        vec![None; self.config.dimensions.len()].into_boxed_slice()
    }

    fn record_edge(
        &mut self,
        (client, server, connection_type): (&str, &str, ConnectionType),
        client_dimensions: &[Option<Box<str>>],
        server_dimensions: &[Option<Box<str>>],
        obs: &Observation,
        minute: Minute,
    ) {
        let retention = self.config.retention_minutes();
        let bounds = &self.config.latency_histogram_buckets;
        let lookup = EdgeRef {
            client,
            server,
            connection_type,
            client_dimensions,
            server_dimensions,
        };
        if let Some(series) = self.edges.get_mut(&lookup) {
            series.record(obs, minute, retention, bounds);
            return;
        }
        if self.edges.len() >= self.config.max_edges {
            self.counters.dropped_edge_limit += 1;
            return;
        }
        let key = EdgeKey {
            client: client.into(),
            server: server.into(),
            connection_type,
            client_dimensions: client_dimensions.into(),
            server_dimensions: server_dimensions.into(),
        };
        self.edges
            .entry(key)
            .or_insert_with(|| EdgeSeries::new(bounds))
            .record(obs, minute, retention, bounds);
    }

    /// Expires unpaired halves, hands minutes to the history store when
    /// due, and prunes idle series.
    pub fn tick(&mut self, now: Instant, minute: Minute) {
        let mut expired = Vec::new();
        self.store.expire(now, |half| expired.push(half));
        self.settle_expired(expired, minute);
        // Before pruning, so no minute leaves memory unsent.
        self.hand_over(now, minute, false);
        let retention = self.config.retention_minutes();
        let before = self.edges.len();
        self.edges
            .retain(|_, series| !series.minutes.prune(minute, retention));
        self.counters.pruned_edges += (before - self.edges.len()) as u64;
        self.nodes
            .retain(|_, series| !series.prune(minute, retention));
        self.spans.prune(minute, retention);
    }

    /// Expires the oldest `fraction` of the pending halves now, as the TTL
    /// would later (memory is short); returns how many went.
    pub fn shrink(&mut self, fraction: f64, minute: Minute) -> usize {
        let mut expired = Vec::new();
        let count = self.store.shrink(fraction, |half| expired.push(half));
        self.settle_expired(expired, minute);
        count
    }

    /// Draws expired client halves that name a peer as calls to it, and
    /// counts the rest as discarded.
    fn settle_expired(&mut self, expired: Vec<Half>, minute: Minute) {
        if let (false, Some(handover)) = (expired.is_empty(), &mut self.handover) {
            handover.dirty = true;
        }
        for half in expired {
            match (half.side, &half.peer) {
                (Side::Client, Some(peer)) => {
                    self.counters.expired_virtual += 1;
                    let connection_type = if half.messaging {
                        ConnectionType::Messaging
                    } else {
                        ConnectionType::Virtual
                    };
                    let obs = one_sided(half.failed, half.duration_nanos);
                    let unknown = self.unknown_dimensions();
                    let edge = (&*half.service, &**peer, connection_type);
                    self.record_edge(edge, &half.dimensions, &unknown, &obs, minute);
                }
                _ => self.counters.expired_discarded += 1,
            }
        }
    }
}

impl Shard {
    /// Hands closed minutes to the sink, and the open one too when
    /// `flush_interval` has passed since it last was (or when `wait`, at
    /// shutdown). A full queue leaves everything for a later tick.
    fn hand_over(&mut self, now: Instant, minute: Minute, wait: bool) {
        let Some(mut handover) = self.handover.take() else {
            return;
        };
        // Minutes memory no longer holds cannot be handed over any more.
        let oldest = minute - self.config.retention_minutes() + 1;
        if handover.sealed_through < oldest - 1 {
            handover
                .sink
                .lost((oldest - 1 - handover.sealed_through) as u64);
            handover.sealed_through = oldest - 1;
        }
        let closing = handover.sealed_through < minute - 1;
        let flush_due =
            now.saturating_duration_since(handover.last_flush) >= handover.sink.flush_interval();
        let open = wait || (handover.dirty && flush_due);
        // A shard with nothing new still reports, so the store's durable
        // point (`tracemap_store_committed_through_seconds`) moves on.
        let heartbeat = !handover.dirty && flush_due;
        if !closing && !open && !heartbeat {
            self.handover = Some(handover);
            return;
        }
        let first = handover.sealed_through + 1;
        let last = if open { minute } else { minute - 1 };
        let mut batch = self.minutes_between(first, last, minute - 1);
        batch.shard = handover.shard;
        batch.sealed_through = minute - 1;
        batch.as_of = (open || !handover.dirty).then_some(now.into_std());
        match handover.sink.offer(batch, wait) {
            Ok(()) => {
                // A clock stepping back must not reopen sealed minutes.
                handover.sealed_through = handover.sealed_through.max(minute - 1);
                if open || heartbeat {
                    handover.last_flush = now;
                    handover.dirty = false;
                }
                self.handover = Some(handover);
            }
            Err(SinkRefusal::Full) => self.handover = Some(handover),
            Err(SinkRefusal::Closed) => {}
        }
    }

    /// This shard's buckets of `first..=last`, merged over extra
    /// dimensions; buckets up to `closed` are sealed in place.
    fn minutes_between(&mut self, first: Minute, last: Minute, closed: Minute) -> MinuteBatch {
        let mut edges: std::collections::HashMap<(Minute, EdgeKey), EdgeStats> = Default::default();
        for (key, series) in &mut self.edges {
            series.minutes.seal_range(first, closed);
            let mut plain = None;
            for (minute, stats) in series.minutes.minutes(first, last) {
                let key = plain.get_or_insert_with(|| key.without_dimensions());
                edges.entry((minute, key.clone())).or_default().merge(stats);
            }
        }
        let mut nodes = Vec::new();
        for (service, series) in &mut self.nodes {
            series.seal_range(first, closed);
            for (minute, stats) in series.minutes(first, last) {
                let mut copy = NodeStats::default();
                copy.merge(stats);
                nodes.push((minute, service.clone(), copy));
            }
        }
        MinuteBatch {
            shard: 0,
            sealed_through: closed,
            as_of: None,
            edges: edges
                .into_iter()
                .map(|((minute, key), stats)| (minute, key, stats))
                .collect(),
            nodes,
        }
    }
}

/// A call observed from one side only: that side's duration stands for both,
/// so client and server histograms keep equal counts (as Grafana expects).
fn one_sided(failed: bool, duration: u64) -> Observation {
    Observation {
        failed,
        client_nanos: duration,
        server_nanos: duration,
    }
}

/// The unix minute of a wall-clock time.
pub fn unix_minute(time: SystemTime) -> Minute {
    let secs = time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 60) as Minute
}

/// Handle to every shard, for consumers, queries and scrapes.
#[derive(Clone)]
pub struct Graph {
    shards: Arc<[Arc<Mutex<Shard>>]>,
    config: Arc<GraphConfig>,
    lookup: Arc<Lookup>,
}

impl std::fmt::Debug for Graph {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Graph")
            .field("shards", &self.shards.len())
            .finish()
    }
}

/// A time range for queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeWindow {
    /// Inclusive start.
    pub start: SystemTime,
    /// Exclusive end.
    pub end: SystemTime,
}

impl TimeWindow {
    /// The first and last unix minute the window touches.
    pub fn minutes(&self) -> (Minute, Minute) {
        let first = unix_minute(self.start);
        let last = self
            .end
            .checked_sub(Duration::from_nanos(1))
            .map_or(first, unix_minute)
            .max(first);
        (first, last)
    }

    /// The window's length in seconds (at least 1, to keep rates finite).
    pub fn seconds(&self) -> f64 {
        self.end
            .duration_since(self.start)
            .map_or(1.0, |d| d.as_secs_f64().max(1.0))
    }
}

impl Graph {
    /// Empty state for `shard_count` pipeline shards.
    pub fn new(config: Valid<GraphConfig>, shard_count: usize) -> Self {
        let config = Arc::new(config.get().clone());
        let shards = (0..shard_count.max(1))
            .map(|_| Arc::new(Mutex::new(Shard::new(config.clone(), shard_count.max(1)))))
            .collect();
        let lookup = Arc::new(Lookup::new(&config));
        Self {
            shards,
            config,
            lookup,
        }
    }

    /// Whom a CLIENT or PRODUCER span calls by its own attributes, as the
    /// graph names it: its database, else its peer; `None` when neither.
    pub fn callee_of<'a>(&self, span: &'a Span) -> Option<&'a str> {
        match self.lookup.callee(span) {
            Callee::Database(database) => Some(database),
            Callee::Peer(peer) => peer,
        }
    }

    /// The pipeline consumer of shard `index`.
    pub fn consumer(&self, index: usize) -> GraphConsumer {
        GraphConsumer {
            shard: self.shards[index % self.shards.len()].clone(),
        }
    }

    /// Configuration in force.
    pub fn config(&self) -> &GraphConfig {
        &self.config
    }

    fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
        // A panicked worker leaves consistent-enough counters; keep serving.
        shard
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The graph over `window` from memory alone, merged across shards.
    pub fn snapshot(&self, window: TimeWindow) -> Topology {
        let (first, last) = window.minutes();
        let mut totals = Totals::default();
        self.accumulate(first, last, &Selection::All, &mut totals);
        totals.into_topology(window)
    }

    /// Feeds `acc` every selected bucket of `first..=last` held in memory,
    /// edges merged over extra dimensions (the graph views show one edge
    /// per pair of nodes).
    pub fn accumulate(
        &self,
        first: Minute,
        last: Minute,
        selection: &Selection<'_>,
        acc: &mut dyn Accumulator,
    ) {
        for shard in self.shards.iter() {
            let shard = Self::lock(shard);
            for (key, series) in &shard.edges {
                if !selection.edge(key) {
                    continue;
                }
                let mut plain = None;
                for (minute, stats) in series.minutes.minutes(first, last) {
                    let key = plain.get_or_insert_with(|| key.without_dimensions());
                    acc.edge(minute, 1, key, stats);
                }
            }
            for (service, series) in &shard.nodes {
                if !selection.node(service) {
                    continue;
                }
                for (minute, stats) in series.minutes(first, last) {
                    acc.node(minute, 1, service, stats);
                }
            }
        }
    }

    /// Hands every shard's minutes to `sink` from now on; call before the
    /// pipeline starts, `minute` being the current one.
    pub fn attach(&self, sink: Arc<dyn MinuteSink>, now: Instant, minute: Minute) {
        for (index, shard) in self.shards.iter().enumerate() {
            Self::lock(shard).handover = Some(Handover {
                sink: sink.clone(),
                shard: index,
                sealed_through: minute - 1,
                last_flush: now,
                dirty: false,
            });
        }
    }

    /// Hands every shard's minutes over, the open one included, waiting
    /// for queue room: the last step before the store stops. Blocks.
    pub fn flush_to_sink(&self, now: Instant, minute: Minute) {
        for shard in self.shards.iter() {
            Self::lock(shard).hand_over(now, minute, true);
        }
    }

    /// Shards (pipeline workers) feeding this graph.
    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// Processes `spans` on shard `shard` as if at `now` in `minute`: what
    /// a pipeline worker does with the clock read, for replays and tests.
    pub fn process_at(&self, shard: usize, spans: &[Span], now: Instant, minute: Minute) {
        let mut shard = Self::lock(&self.shards[shard % self.shards.len()]);
        for span in spans {
            shard.process(span, now, minute);
        }
    }

    /// Ticks every shard as if at `now` in `minute`.
    pub fn tick_at(&self, now: Instant, minute: Minute) {
        for shard in self.shards.iter() {
            Self::lock(shard).tick(now, minute);
        }
    }

    /// Cumulative edge totals for Prometheus, merged across shards.
    pub fn edge_totals(&self) -> std::collections::BTreeMap<EdgeKey, EdgeTotals> {
        let mut totals: std::collections::BTreeMap<EdgeKey, EdgeTotals> = Default::default();
        for shard in self.shards.iter() {
            let shard = Self::lock(shard);
            for (key, series) in &shard.edges {
                match totals.get_mut(key) {
                    Some(total) => total.merge(&series.totals),
                    None => {
                        totals.insert(key.clone(), series.totals.clone());
                    }
                }
            }
        }
        totals
    }

    /// Health counters summed over shards, plus pending halves and distinct edges.
    pub fn health(&self) -> (GraphCounters, usize, usize) {
        let mut counters = GraphCounters::default();
        let mut pending = 0;
        let mut edges = std::collections::HashSet::new();
        for shard in self.shards.iter() {
            let shard = Self::lock(shard);
            counters.add(&shard.counters);
            pending += shard.store.len();
            edges.extend(shard.edges.keys().cloned());
        }
        (counters, pending, edges.len())
    }

    /// Span metrics merged across shards.
    pub fn span_metrics(&self) -> crate::graph::spanmetrics::SpanMetricsSnapshot {
        let mut snapshot = crate::graph::spanmetrics::SpanMetricsSnapshot::default();
        for shard in self.shards.iter() {
            Self::lock(shard).spans.merge_into(&mut snapshot);
        }
        snapshot
    }
}

impl Shrink for Graph {
    /// Expires the oldest `fraction` of every shard's pending halves early,
    /// counted as expired as the TTL would have; one shard locked at a time.
    fn shrink(&self, fraction: f64) -> u64 {
        let minute = unix_minute(SystemTime::now());
        self.shards
            .iter()
            .map(|shard| Self::lock(shard).shrink(fraction, minute) as u64)
            .sum()
    }
}

/// The graph's [`SpanConsumer`] for one shard.
pub struct GraphConsumer {
    shard: Arc<Mutex<Shard>>,
}

impl SpanConsumer for GraphConsumer {
    fn consume(&mut self, spans: &[Span]) {
        let now = Instant::now();
        let minute = unix_minute(SystemTime::now());
        let mut shard = Graph::lock(&self.shard);
        for span in spans {
            shard.process(span, now, minute);
        }
    }

    fn tick(&mut self) {
        Graph::lock(&self.shard).tick(Instant::now(), unix_minute(SystemTime::now()));
    }
}

#[cfg(test)]
pub(crate) mod tests;
