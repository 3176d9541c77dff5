//! Unit tests of the service graph; the harness is shared with the
//! exporters' tests, which read the graph.

use super::*;
use crate::model::{AttributeValue, Attributes, Resource, SpanId, TraceId};

const MINUTE: Minute = 29_000_000;

struct SpanSpec {
    service: Option<&'static str>,
    kind: SpanKind,
    trace: u8,
    id: u8,
    parent: Option<u8>,
    error: bool,
    nanos: u64,
    attrs: Vec<(&'static str, &'static str)>,
}

fn spec(service: &'static str, kind: SpanKind, trace: u8, id: u8, parent: Option<u8>) -> SpanSpec {
    SpanSpec {
        service: Some(service),
        kind,
        trace,
        id,
        parent,
        error: false,
        nanos: 1_000_000,
        attrs: vec![],
    }
}

impl SpanSpec {
    fn attr(mut self, key: &'static str, value: &'static str) -> Self {
        self.attrs.push((key, value));
        self
    }
    fn error(mut self) -> Self {
        self.error = true;
        self
    }
    fn nanos(mut self, nanos: u64) -> Self {
        self.nanos = nanos;
        self
    }
    fn build(self) -> Span {
        let resource_attrs = self
            .service
            .map(|s| vec![("service.name".to_string(), AttributeValue::String(s.into()))])
            .unwrap_or_default();
        Span {
            resource: Arc::new(Resource::new(Attributes::from_vec(resource_attrs))),
            scope_name: "".into(),
            trace_id: TraceId::try_from(&[self.trace; 16][..]).unwrap(),
            span_id: SpanId::try_from(&[self.id; 8][..]).unwrap(),
            parent_span_id: self.parent.map(|p| SpanId::try_from(&[p; 8][..]).unwrap()),
            name: "op".into(),
            kind: self.kind,
            status_code: if self.error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            },
            status_message: String::new(),
            start_unix_nano: 1_000,
            end_unix_nano: 1_000 + self.nanos,
            attributes: Attributes::from_vec(
                self.attrs
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), AttributeValue::String(v.into())))
                    .collect(),
            ),
            events: vec![],
        }
    }
}

pub(crate) struct Harness {
    pub(crate) graph: Graph,
    now: Instant,
}

impl Harness {
    fn new() -> Self {
        Self::with(GraphConfig::default())
    }
    fn with(config: GraphConfig) -> Self {
        Self {
            graph: Graph::new(config.checked(), 1),
            now: Instant::now(),
        }
    }
    fn send(&self, spans: Vec<SpanSpec>) {
        let mut shard = Graph::lock(&self.graph.shards[0]);
        for span in spans {
            shard.process(&span.build(), self.now, MINUTE);
        }
    }
    fn tick(&self, after: Duration) {
        Graph::lock(&self.graph.shards[0]).tick(self.now + after, MINUTE);
    }
    fn counters(&self) -> GraphCounters {
        self.graph.health().0
    }
    fn pending(&self) -> usize {
        self.graph.health().1
    }
    /// Edges as (client, server, type, requests, failed).
    fn edges(&self) -> Vec<(String, String, &'static str, u64, u64)> {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(MINUTE as u64 * 60);
        let window = TimeWindow {
            start,
            end: start + Duration::from_secs(60),
        };
        self.graph
            .snapshot(window)
            .edges()
            .map(|(s, t, e)| {
                (
                    s.id.to_string(),
                    t.id.to_string(),
                    e.connection_type.as_str(),
                    e.stats.requests,
                    e.stats.failed,
                )
            })
            .collect()
    }
}

fn edge(
    c: &str,
    s: &str,
    t: &'static str,
    requests: u64,
    failed: u64,
) -> (String, String, &'static str, u64, u64) {
    (c.into(), s.into(), t, requests, failed)
}

#[test]
fn client_then_server_makes_a_direct_edge() {
    let h = Harness::new();
    h.send(vec![
        spec("frontend", SpanKind::Client, 1, 10, Some(9)),
        spec("cart", SpanKind::Server, 1, 11, Some(10)),
    ]);
    assert_eq!(h.edges(), vec![edge("frontend", "cart", "", 1, 0)]);
    assert_eq!(h.counters().paired, 1);
    assert_eq!(h.pending(), 0);
}

#[test]
fn server_then_client_pairs_too_and_latencies_stay_apart() {
    let h = Harness::new();
    h.send(vec![
        spec("cart", SpanKind::Server, 1, 11, Some(10)).nanos(3_000_000),
        spec("frontend", SpanKind::Client, 1, 10, None).nanos(5_000_000),
    ]);
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(MINUTE as u64 * 60);
    let topology = h.graph.snapshot(TimeWindow {
        start,
        end: start + Duration::from_secs(60),
    });
    let (_, _, view) = topology.edges().next().unwrap();
    assert_eq!(view.stats.client.max(), 5_000_000.0);
    assert_eq!(view.stats.server.max(), 3_000_000.0);
}

#[test]
fn producer_and_consumer_make_a_messaging_edge() {
    let h = Harness::new();
    h.send(vec![
        spec("checkout", SpanKind::Producer, 1, 10, Some(9))
            .attr("messaging.destination.name", "orders"),
        spec("email", SpanKind::Consumer, 1, 11, Some(10)),
        spec("fulfillment", SpanKind::Consumer, 1, 12, Some(10)),
    ]);
    assert_eq!(
        h.edges(),
        vec![
            edge("checkout", "email", "messaging_system", 1, 0),
            edge("checkout", "fulfillment", "messaging_system", 1, 0),
        ]
    );
    h.tick(Duration::from_secs(11));
    assert_eq!(
        h.counters().expired_virtual + h.counters().expired_discarded,
        0
    );
}

#[test]
fn unconsumed_producer_expires_to_its_destination() {
    let h = Harness::new();
    h.send(vec![
        spec("checkout", SpanKind::Producer, 1, 10, None)
            .attr("messaging.system", "kafka")
            .attr("messaging.destination.name", "orders"),
    ]);
    h.tick(Duration::from_secs(11));
    assert_eq!(
        h.edges(),
        vec![edge("checkout", "orders", "messaging_system", 1, 0)]
    );
}

#[test]
fn expiry_draws_virtual_peers_and_counts_the_rest() {
    let h = Harness::with(GraphConfig {
        pairing_ttl: Duration::from_secs(5),
        ..GraphConfig::default()
    });
    h.send(vec![
        spec("shipping", SpanKind::Client, 1, 10, None)
            .attr("server.address", "api.carrier.example")
            .attr("peer.service", "carrier-api"),
        spec("shipping", SpanKind::Client, 2, 10, None).attr("net.peer.name", "legacy-host"),
        spec("foo-server", SpanKind::Client, 3, 10, None),
        spec("bar", SpanKind::Server, 4, 11, Some(99)),
    ]);
    assert_eq!(h.pending(), 4);
    h.tick(Duration::from_millis(4_999));
    assert!(h.edges().is_empty(), "nothing expires before the TTL");
    h.tick(Duration::from_secs(5));
    assert_eq!(
        h.edges(),
        vec![
            edge("shipping", "carrier-api", "virtual_node", 1, 0),
            edge("shipping", "legacy-host", "virtual_node", 1, 0),
        ]
    );
    let counters = h.counters();
    assert_eq!(
        (counters.expired_virtual, counters.expired_discarded),
        (2, 2)
    );
    assert_eq!(h.pending(), 0);
}

#[test]
fn shrinking_expires_the_oldest_halves_early_as_the_ttl_would() {
    let h = Harness::new();
    h.send(vec![
        spec("shipping", SpanKind::Client, 1, 10, None).attr("peer.service", "carrier-api"),
        spec("foo-server", SpanKind::Client, 2, 10, None),
        spec("bar", SpanKind::Server, 3, 11, Some(99)),
        spec("baz", SpanKind::Server, 4, 11, Some(98)),
    ]);
    assert_eq!(h.pending(), 4);
    let shrunk = Graph::lock(&h.graph.shards[0]).shrink(0.5, MINUTE);
    assert_eq!(shrunk, 2, "the older half of the halves");
    assert_eq!(
        h.edges(),
        vec![edge("shipping", "carrier-api", "virtual_node", 1, 0)]
    );
    let counters = h.counters();
    assert_eq!(
        (counters.expired_virtual, counters.expired_discarded),
        (1, 1)
    );
    assert_eq!(h.pending(), 2);
    // Through the watcher's trait, every shard.
    assert_eq!(Shrink::shrink(&h.graph, 1.0), 2);
    assert_eq!(h.pending(), 0);
    assert_eq!(h.counters().expired_discarded, 3);
}

#[test]
fn root_server_spans_come_from_user() {
    let h = Harness::new();
    h.send(vec![
        spec("frontend", SpanKind::Server, 1, 10, None),
        spec("frontend", SpanKind::Server, 2, 10, None).error(),
        spec("worker", SpanKind::Consumer, 3, 10, None),
    ]);
    assert_eq!(
        h.edges(),
        vec![edge("user", "frontend", "virtual_node", 2, 1)]
    );
    assert_eq!(h.counters().user, 2);
    assert_eq!(
        h.counters().expired_discarded,
        1,
        "a root consumer has nothing to draw"
    );
    assert_eq!(h.pending(), 0);
}

#[test]
fn database_edges_complete_from_the_client_alone() {
    let h = Harness::new();
    h.send(vec![
        spec("a", SpanKind::Client, 1, 1, None).attr("db.system", "postgresql"),
        spec("a", SpanKind::Client, 1, 2, None).attr("db.system.name", "mysql"),
        spec("a", SpanKind::Client, 1, 3, None)
            .attr("db.system", "postgresql")
            .attr("db.namespace", "shop"),
        spec("a", SpanKind::Client, 1, 4, None).attr("db.name", "legacy"),
        spec("a", SpanKind::Client, 1, 5, None)
            .attr("db.system", "redis")
            .attr("db.namespace", "0")
            .attr("peer.service", "sessions"),
        spec("a", SpanKind::Client, 1, 6, None)
            .attr("db.namespace", "orders")
            .error(),
    ]);
    assert_eq!(
        h.edges(),
        vec![
            edge("a", "legacy", "database", 1, 0),
            edge("a", "mysql", "database", 1, 0),
            edge("a", "orders", "database", 1, 1),
            edge("a", "postgresql", "database", 1, 0),
            edge("a", "sessions", "database", 1, 0),
            edge("a", "shop", "database", 1, 0),
        ]
    );
    assert_eq!(h.pending(), 0);
    assert_eq!(h.counters().database, 6);
}

#[test]
fn a_failure_on_either_side_fails_the_request() {
    let h = Harness::new();
    h.send(vec![
        spec("a", SpanKind::Client, 1, 10, None).error(),
        spec("b", SpanKind::Server, 1, 11, Some(10)),
        spec("a", SpanKind::Client, 2, 10, None),
        spec("b", SpanKind::Server, 2, 11, Some(10)).error(),
        spec("a", SpanKind::Client, 3, 10, None),
        spec("b", SpanKind::Server, 3, 11, Some(10)),
    ]);
    assert_eq!(h.edges(), vec![edge("a", "b", "", 3, 2)]);
}

#[test]
fn spans_without_service_name_are_unknown_service() {
    let h = Harness::new();
    let mut client = spec("x", SpanKind::Client, 1, 10, None);
    client.service = None;
    h.send(vec![client, spec("b", SpanKind::Server, 1, 11, Some(10))]);
    assert_eq!(h.edges(), vec![edge("unknown_service", "b", "", 1, 0)]);
}

#[test]
fn internal_spans_are_ignored() {
    let h = Harness::new();
    h.send(vec![
        spec("a", SpanKind::Internal, 1, 10, Some(9)).attr("db.system", "postgresql"),
        spec("a", SpanKind::Unspecified, 1, 11, None),
    ]);
    assert!(h.edges().is_empty());
    assert_eq!(h.pending(), 0);
}

#[test]
fn duplicate_span_ids_are_counted() {
    let h = Harness::new();
    h.send(vec![
        spec("a", SpanKind::Client, 1, 10, None),
        spec("a", SpanKind::Client, 1, 10, None),
        spec("b", SpanKind::Server, 1, 11, Some(10)),
    ]);
    assert_eq!(h.edges(), vec![edge("a", "b", "", 1, 0)]);
    assert_eq!(h.counters().duplicates, 1);
}

#[test]
fn full_store_and_edge_limit_are_counted() {
    let h = Harness::with(GraphConfig {
        max_pending: 2,
        max_edges: 1,
        ..GraphConfig::default()
    });
    h.send(vec![
        spec("a", SpanKind::Client, 1, 10, None),
        spec("a", SpanKind::Client, 2, 10, None),
        spec("a", SpanKind::Client, 3, 10, None),
    ]);
    assert_eq!(h.counters().dropped_store_full, 1);
    h.send(vec![
        spec("b", SpanKind::Server, 1, 11, Some(10)),
        spec("c", SpanKind::Server, 2, 11, Some(10)),
    ]);
    assert_eq!(h.edges(), vec![edge("a", "b", "", 1, 0)]);
    assert_eq!(h.counters().dropped_edge_limit, 1);
}

#[test]
fn nodes_count_only_the_spans_they_served() {
    let h = Harness::new();
    h.send(vec![
        spec("a", SpanKind::Server, 1, 1, None).error(),
        spec("a", SpanKind::Client, 1, 2, Some(1)),
        spec("b", SpanKind::Server, 1, 3, Some(2)),
        spec("b", SpanKind::Internal, 1, 4, Some(3)),
    ]);
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(MINUTE as u64 * 60);
    let topology = h.graph.snapshot(TimeWindow {
        start,
        end: start + Duration::from_secs(60),
    });
    let nodes: Vec<_> = topology
        .nodes()
        .map(|n| {
            (
                n.id.to_string(),
                n.kind.as_str(),
                n.stats.requests,
                n.stats.errors,
            )
        })
        .collect();
    assert_eq!(
        nodes,
        vec![
            ("a".to_string(), "service", 1, 1),
            ("b".to_string(), "service", 1, 0),
            ("user".to_string(), "user", 0, 0),
        ]
    );
}

#[test]
fn idle_edges_are_pruned_after_the_retention() {
    let h = Harness::new();
    h.send(vec![spec("a", SpanKind::Server, 1, 1, None)]);
    Graph::lock(&h.graph.shards[0]).tick(h.now, MINUTE + 59);
    assert_eq!(h.graph.health().2, 1);
    Graph::lock(&h.graph.shards[0]).tick(h.now, MINUTE + 60);
    assert_eq!(h.graph.health().2, 0);
    assert_eq!(h.counters().pruned_edges, 1);
}

/// Two extra dimensions and spans that differ only in them; shared with
/// the Prometheus exporter's test of the series they split.
pub(crate) fn dimensioned_harness() -> Harness {
    let h = Harness::with(GraphConfig {
        dimensions: vec!["k8s.namespace.name".into(), "deployment.environment".into()],
        ..GraphConfig::default()
    });
    h.send(vec![
        spec("a", SpanKind::Client, 1, 10, None).attr("k8s.namespace.name", "shop"),
        spec("b", SpanKind::Server, 1, 11, Some(10)).attr("k8s.namespace.name", "pay"),
        spec("a", SpanKind::Client, 2, 10, None).attr("k8s.namespace.name", "staging"),
        spec("b", SpanKind::Server, 2, 11, Some(10)).attr("k8s.namespace.name", "pay"),
        spec("a", SpanKind::Client, 3, 1, None)
            .attr("db.system", "redis")
            .attr("k8s.namespace.name", "shop"),
    ]);
    // A dimension missing on the span comes from its resource.
    let mut server = spec("b", SpanKind::Server, 4, 1, None).build();
    server.resource = Arc::new(Resource::new(Attributes::from_vec(vec![
        ("service.name".into(), AttributeValue::String("b".into())),
        (
            "deployment.environment".into(),
            AttributeValue::String("prod".into()),
        ),
    ])));
    Graph::lock(&h.graph.shards[0]).process(&server, h.now, MINUTE);
    h
}

#[test]
fn extra_dimensions_split_prometheus_series_but_not_the_graph() {
    let h = dimensioned_harness();
    assert_eq!(
        h.edges(),
        vec![
            edge("a", "b", "", 2, 0),
            edge("a", "redis", "database", 1, 0),
            edge("user", "b", "virtual_node", 1, 0),
        ],
        "the graph shows one edge per pair of nodes"
    );
    assert_eq!(
        h.graph.health().2,
        4,
        "distinct series count against max_edges"
    );
}

#[test]
fn config_validation_names_graph_keys() {
    let config = GraphConfig {
        latency_histogram_buckets: vec![1.0, 0.5],
        retention: Duration::from_secs(1),
        ..GraphConfig::default()
    };
    let mut invalid = Vec::new();
    config.validate("graph", &mut invalid);
    let keys: Vec<_> = invalid.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["graph.retention", "graph.latency_histogram_buckets"]);
}
