//! The graph of one window as a petgraph `StableDiGraph`; the API documents
//! and text renderings of it are built in `web`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef as _, IntoEdgeReferences};
use serde::Serialize;

use super::edge::{ConnectionType, EdgeKey, EdgeStats, NodeStats};
use super::{TimeWindow, USER_NODE};

/// What a node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    /// An instrumented service (it emitted spans).
    Service,
    /// A database, named from the client's db attributes.
    Database,
    /// A broker destination no consumer was seen for.
    Messaging,
    /// An uninstrumented peer.
    Virtual,
    /// The callers of root SERVER spans.
    User,
}

impl NodeKind {
    /// The API's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Service => "service",
            Self::Database => "database",
            Self::Messaging => "messaging",
            Self::Virtual => "virtual",
            Self::User => "user",
        }
    }
}

/// A node and its numbers.
#[derive(Debug, Clone)]
pub struct NodeView {
    /// Service or peer name.
    pub id: Arc<str>,
    /// What it is.
    pub kind: NodeKind,
    /// Served requests (incoming edges for non-services).
    pub stats: NodeStats,
}

/// An edge and its numbers.
#[derive(Debug, Clone)]
pub struct EdgeView {
    /// Connection type.
    pub connection_type: ConnectionType,
    /// Requests, failures, client and server latency.
    pub stats: EdgeStats,
}

/// The service graph over one window.
#[derive(Debug, Clone)]
pub struct Topology {
    /// The window the numbers cover.
    pub window: TimeWindow,
    /// Nodes and edges, in name order.
    pub graph: StableDiGraph<NodeView, EdgeView>,
}

impl Topology {
    /// Builds the graph from merged edge and node statistics.
    pub fn build(
        window: TimeWindow,
        edges: HashMap<EdgeKey, EdgeStats>,
        nodes: HashMap<Arc<str>, NodeStats>,
    ) -> Self {
        // Sorted, so every rendering is deterministic.
        let edges: BTreeMap<EdgeKey, EdgeStats> = edges.into_iter().collect();
        let mut kinds: BTreeMap<Arc<str>, NodeKind> = nodes
            .keys()
            .map(|id| (id.clone(), NodeKind::Service))
            .collect();
        for key in edges.keys() {
            if !kinds.contains_key(&key.client) {
                let kind = if &*key.client == USER_NODE {
                    NodeKind::User
                } else {
                    NodeKind::Virtual
                };
                kinds.insert(key.client.clone(), kind);
            }
            kinds
                .entry(key.server.clone())
                .or_insert(match key.connection_type {
                    ConnectionType::Database => NodeKind::Database,
                    ConnectionType::Messaging => NodeKind::Messaging,
                    ConnectionType::Direct | ConnectionType::Virtual => NodeKind::Virtual,
                });
        }
        let mut graph = StableDiGraph::with_capacity(kinds.len(), edges.len());
        let mut index: HashMap<Arc<str>, NodeIndex> = HashMap::with_capacity(kinds.len());
        let mut nodes = nodes;
        for (id, kind) in kinds {
            let stats = nodes.remove(&id).unwrap_or_default();
            let node = graph.add_node(NodeView {
                id: id.clone(),
                kind,
                stats,
            });
            index.insert(id, node);
        }
        for (key, stats) in edges {
            let (source, target) = (index[&key.client], index[&key.server]);
            // Nodes that serve no spans themselves show what their callers saw.
            let target_view = &mut graph[target];
            if target_view.kind != NodeKind::Service {
                target_view.stats.requests += stats.requests;
                target_view.stats.errors += stats.failed;
                target_view.stats.latency.merge(&stats.server);
            }
            graph.add_edge(
                source,
                target,
                EdgeView {
                    connection_type: key.connection_type,
                    stats,
                },
            );
        }
        Self { window, graph }
    }

    /// Edges as (source, target, view), in name order.
    pub fn edges(&self) -> impl Iterator<Item = (&NodeView, &NodeView, &EdgeView)> {
        self.graph
            .edge_references()
            .map(|e| (&self.graph[e.source()], &self.graph[e.target()], e.weight()))
    }

    /// Nodes in name order.
    pub fn nodes(&self) -> impl Iterator<Item = &NodeView> {
        self.graph.node_weights()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn stats(requests: u64, failed: u64, nanos: f64) -> EdgeStats {
        let mut stats = EdgeStats {
            requests,
            failed,
            ..Default::default()
        };
        for _ in 0..requests {
            stats.client.insert(nanos);
            stats.server.insert(nanos / 2.0);
        }
        stats
    }

    fn key(client: &str, server: &str, connection_type: ConnectionType) -> EdgeKey {
        EdgeKey {
            client: client.into(),
            server: server.into(),
            connection_type,
            client_dimensions: Box::default(),
            server_dimensions: Box::default(),
        }
    }

    /// Five edges of every connection type around `web`; shared with the
    /// API document and rendering tests.
    pub(crate) fn sample() -> Topology {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let window = TimeWindow {
            start,
            end: start + Duration::from_secs(100),
        };
        let edges = HashMap::from([
            (
                key("user", "web", ConnectionType::Virtual),
                stats(10, 0, 4e6),
            ),
            (
                key("web", "db\"main", ConnectionType::Database),
                stats(20, 2, 2e6),
            ),
            (
                key("web", "orders", ConnectionType::Messaging),
                stats(5, 0, 1e6),
            ),
            (
                key("web", "api.example", ConnectionType::Virtual),
                stats(1, 1, 3e8),
            ),
            (
                key("web", "cart", ConnectionType::Direct),
                stats(30, 0, 8e6),
            ),
        ]);
        let mut web = NodeStats {
            requests: 10,
            ..NodeStats::default()
        };
        web.latency.insert(4e6);
        let nodes = HashMap::from([
            (Arc::from("web"), web),
            (Arc::from("cart"), NodeStats::default()),
        ]);
        Topology::build(window, edges, nodes)
    }

    #[test]
    fn node_kinds_follow_connection_types() {
        let topology = sample();
        let kinds: Vec<_> = topology
            .nodes()
            .map(|n| (&*n.id, n.kind.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("api.example", "virtual"),
                ("cart", "service"),
                ("db\"main", "database"),
                ("orders", "messaging"),
                ("user", "user"),
                ("web", "service"),
            ]
        );
    }
}
