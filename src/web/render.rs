//! The graph as text: Graphviz DOT and Mermaid, and the one millisecond
//! format every text view (these, `tracemap map`) uses.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::document::ratio;
use super::health::Health;
use crate::graph::topology::{EdgeView, NodeKind, Topology};

/// Graphviz DOT: shapes by node kind, edges labelled with rate, errors and p99.
pub fn dot(topology: &Topology) -> String {
    let mut out = String::from(
        "digraph tracemap {\n  rankdir=LR;\n  node [fontname=\"Helvetica\", style=\"rounded,filled\", fillcolor=\"#f5f7fa\"];\n",
    );
    for node in topology.nodes() {
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
    for (source, target, edge) in topology.edges() {
        let error_rate = ratio(edge.stats.failed, edge.stats.requests);
        let color = if Health::of(error_rate, 0.0) == Health::Critical {
            "#d62728"
        } else {
            "#555555"
        };
        let _ = writeln!(
            out,
            "  \"{}\" -> \"{}\" [label=\"{}\", color=\"{color}\"];",
            dot_escape(&source.id),
            dot_escape(&target.id),
            dot_escape(&edge_label(topology, edge, "\n")),
        );
    }
    out.push_str("}\n");
    out
}

/// Mermaid flowchart.
pub fn mermaid(topology: &Topology) -> String {
    let mut out = String::from("flowchart LR\n");
    let mut ids = HashMap::new();
    for (i, node) in topology.nodes().enumerate() {
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
    for (source, target, edge) in topology.edges() {
        let _ = writeln!(
            out,
            "  {} -->|\"{}\"| {}",
            ids[&source.id],
            mermaid_escape(&edge_label(topology, edge, ", ")),
            ids[&target.id]
        );
    }
    out
}

fn edge_label(topology: &Topology, edge: &EdgeView, separator: &str) -> String {
    let stats = &edge.stats;
    format!(
        "{:.2} req/s{separator}{:.1}% err{separator}p99 {}",
        stats.requests as f64 / topology.window.seconds(),
        100.0 * ratio(stats.failed, stats.requests),
        format_ms(stats.server.quantile(0.99) / 1e6),
    )
}

/// Milliseconds in a unit that keeps three significant digits or so:
/// `0.42ms`, `3.2ms`, `125ms`, `1.20s`, `12.5s`, `130s`.
pub fn format_ms(ms: f64) -> String {
    if ms <= 0.0 {
        "0ms".to_owned()
    } else if ms < 0.995 {
        format!("{ms:.2}ms")
    } else if ms < 9.95 {
        format!("{ms:.1}ms")
    } else if ms < 999.5 {
        format!("{ms:.0}ms")
    } else {
        let s = ms / 1000.0;
        if s < 9.995 {
            format!("{s:.2}s")
        } else if s < 99.95 {
            format!("{s:.1}s")
        } else {
            format!("{s:.0}s")
        }
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
    use super::*;
    use crate::graph::topology::tests::sample;

    #[test]
    fn dot_and_mermaid_escape_and_mark_errors() {
        let topology = sample();
        let text = dot(&topology);
        assert!(text.starts_with("digraph tracemap {"));
        assert!(text.contains("\"db\\\"main\" [shape=cylinder"), "{text}");
        assert!(text.contains("\"web\" -> \"api.example\" [label=\"0.01 req/s\\n100.0% err\\np99 150ms\", color=\"#d62728\"]"), "{text}");
        let text = mermaid(&topology);
        assert!(text.starts_with("flowchart LR\n"));
        assert!(text.contains("n2[(\"db#quot;main\")]"), "{text}");
        assert!(text.contains("n4((\"user\"))"), "{text}");
        assert!(
            text.contains("n4 -->|\"0.10 req/s, 0.0% err, p99 2.0ms\"| n5"),
            "{text}"
        );
    }

    #[test]
    fn milliseconds_keep_about_three_digits() {
        let millis = [
            (0.0, "0ms"),
            (0.42, "0.42ms"),
            (3.24, "3.2ms"),
            (9.96, "10ms"),
            (125.4, "125ms"),
            (999.6, "1.00s"),
            (1204.0, "1.20s"),
            (12_500.0, "12.5s"),
            (130_000.0, "130s"),
        ];
        for (value, text) in millis {
            assert_eq!(format_ms(value), text, "{value}");
        }
    }
}
