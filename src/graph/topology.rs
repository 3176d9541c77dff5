//! The graph of one window as a petgraph `StableDiGraph`, and its renderings:
//! the JSON API shape, DOT, Mermaid and Jaeger dependencies.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::{EdgeRef as _, IntoEdgeReferences};
use serde::Serialize;
use serde_json::json;

use super::edge::{ConnectionType, EdgeKey, EdgeStats, NodeStats};
use super::sketch::Sketch;
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

    /// The `/api/v1/graph` document.
    pub fn to_json(&self) -> serde_json::Value {
        let seconds = self.window.seconds();
        let nodes: Vec<_> = self
            .nodes()
            .map(|node| {
                json!({
                    "id": &*node.id,
                    "kind": node.kind.as_str(),
                    "requests": node.stats.requests,
                    "errors": node.stats.errors,
                    "error_rate": ratio(node.stats.errors, node.stats.requests),
                    "latency_ms": latency_json(&node.stats.latency, false),
                })
            })
            .collect();
        let edges: Vec<_> = self
            .edges()
            .map(|(source, target, edge)| {
                let stats = &edge.stats;
                json!({
                    "source": &*source.id,
                    "target": &*target.id,
                    "connection_type": edge.connection_type.as_str(),
                    "requests": stats.requests,
                    "errors": stats.failed,
                    "error_rate": ratio(stats.failed, stats.requests),
                    "rate_per_s": round3(stats.requests as f64 / seconds),
                    "client_latency_ms": latency_json(&stats.client, true),
                    "server_latency_ms": latency_json(&stats.server, true),
                })
            })
            .collect();
        json!({
            "window": {
                "start": humantime::format_rfc3339_seconds(self.window.start).to_string(),
                "end": humantime::format_rfc3339_seconds(self.window.end).to_string(),
            },
            "nodes": nodes,
            "edges": edges,
        })
    }

    /// Graphviz DOT: shapes by node kind, edges labelled with rate, errors and p99.
    pub fn to_dot(&self) -> String {
        let mut out = String::from(
            "digraph tracemap {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", style=\"rounded,filled\", fillcolor=\"#f5f7fa\"];\n",
        );
        for node in self.nodes() {
            let shape = match node.kind {
                NodeKind::Service => "box",
                NodeKind::Database => "cylinder",
                NodeKind::Messaging => "cds",
                NodeKind::Virtual => "component",
                NodeKind::User => "ellipse",
            };
            let _ = writeln!(
                out,
                "  \"{}\" [shape={shape}, tooltip=\"{}\"];",
                dot_escape(&node.id),
                node.kind.as_str()
            );
        }
        for (source, target, edge) in self.edges() {
            let color = if ratio(edge.stats.failed, edge.stats.requests) >= 0.05 {
                "#d62728"
            } else {
                "#555555"
            };
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{}\", color=\"{color}\"];",
                dot_escape(&source.id),
                dot_escape(&target.id),
                dot_escape(&self.edge_label(edge, "\n")),
            );
        }
        out.push_str("}\n");
        out
    }

    /// Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        let mut ids = HashMap::new();
        for (i, node) in self.nodes().enumerate() {
            let id = format!("n{i}");
            let name = mermaid_escape(&node.id);
            let shape = match node.kind {
                NodeKind::Service => format!("[\"{name}\"]"),
                NodeKind::Database => format!("[(\"{name}\")]"),
                NodeKind::Messaging => format!(">\"{name}\"]"),
                NodeKind::Virtual => format!("{{{{\"{name}\"}}}}"),
                NodeKind::User => format!("((\"{name}\"))"),
            };
            let _ = writeln!(out, "  {id}{shape}");
            ids.insert(node.id.clone(), id);
        }
        for (source, target, edge) in self.edges() {
            let _ = writeln!(
                out,
                "  {} -->|\"{}\"| {}",
                ids[&source.id],
                mermaid_escape(&self.edge_label(edge, ", ")),
                ids[&target.id]
            );
        }
        out
    }

    /// Jaeger's `/api/dependencies` entries: calls per (parent, child).
    pub fn dependencies(&self) -> Vec<serde_json::Value> {
        let mut calls: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for (source, target, edge) in self.edges() {
            *calls.entry((&source.id, &target.id)).or_default() += edge.stats.requests;
        }
        calls
            .into_iter()
            .map(|((parent, child), count)| {
                json!({"parent": parent, "child": child, "callCount": count})
            })
            .collect()
    }

    fn edge_label(&self, edge: &EdgeView, separator: &str) -> String {
        let stats = &edge.stats;
        format!(
            "{:.2} req/s{separator}{:.1}% err{separator}p99 {}",
            stats.requests as f64 / self.window.seconds(),
            100.0 * ratio(stats.failed, stats.requests),
            format_ms(stats.server.quantile(0.99) / 1e6),
        )
    }
}

fn ratio(part: u64, whole: u64) -> f64 {
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

fn latency_json(sketch: &Sketch, with_max: bool) -> serde_json::Value {
    let ms = |nanos: f64| round3(nanos / 1e6);
    let mut value = json!({
        "p50": ms(sketch.quantile(0.5)),
        "p90": ms(sketch.quantile(0.9)),
        "p99": ms(sketch.quantile(0.99)),
        "avg": ms(sketch.mean()),
    });
    if with_max {
        value["max"] = json!(ms(sketch.max()));
    }
    value
}

fn format_ms(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2}s", ms / 1000.0)
    } else {
        format!("{ms:.1}ms")
    }
}

fn dot_escape(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn mermaid_escape(text: &str) -> String {
    text.replace('"', "#quot;")
}

#[cfg(test)]
mod tests {
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

    fn sample() -> Topology {
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

    #[test]
    fn json_has_the_contract_shape() {
        let doc = sample().to_json();
        assert_eq!(doc["window"]["start"], "2027-01-15T08:00:00Z");
        assert_eq!(doc["window"]["end"], "2027-01-15T08:01:40Z");
        let db = doc["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["target"] == "db\"main")
            .unwrap();
        assert_eq!(db["source"], "web");
        assert_eq!(db["connection_type"], "database");
        assert_eq!(db["requests"], 20);
        assert_eq!(db["errors"], 2);
        assert_eq!(db["error_rate"], 0.1);
        assert_eq!(db["rate_per_s"], 0.2);
        let p50 = db["client_latency_ms"]["p50"].as_f64().unwrap();
        assert!((p50 - 2.0).abs() <= 0.02, "{p50}");
        assert_eq!(db["client_latency_ms"]["max"], 2.0);
        let node = doc["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["id"] == "db\"main")
            .unwrap();
        assert_eq!(
            node["requests"], 20,
            "a database shows what its callers saw"
        );
        assert_eq!(node["errors"], 2);
    }

    #[test]
    fn dot_and_mermaid_escape_and_mark_errors() {
        let topology = sample();
        let dot = topology.to_dot();
        assert!(dot.starts_with("digraph tracemap {"));
        assert!(dot.contains("\"db\\\"main\" [shape=cylinder"), "{dot}");
        assert!(dot.contains("\"web\" -> \"api.example\" [label=\"0.01 req/s\\n100.0% err\\np99 150.0ms\", color=\"#d62728\"]"), "{dot}");
        let mermaid = topology.to_mermaid();
        assert!(mermaid.starts_with("flowchart LR\n"));
        assert!(mermaid.contains("n2[(\"db#quot;main\")]"), "{mermaid}");
        assert!(mermaid.contains("n4((\"user\"))"), "{mermaid}");
        assert!(
            mermaid.contains("n4 -->|\"0.10 req/s, 0.0% err, p99 2.0ms\"| n5"),
            "{mermaid}"
        );
    }

    #[test]
    fn dependencies_in_jaeger_shape() {
        let deps = sample().dependencies();
        assert_eq!(deps.len(), 5);
        assert_eq!(
            deps[0],
            json!({"parent": "user", "child": "web", "callCount": 10})
        );
    }
}
