//! Golden tests of the documented shapes: the exact JSON a client reads.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::*;
use crate::graph::diff::tests::{key, stats, topology};
use crate::graph::diff::{Thresholds, diff};
use crate::graph::topology::tests::sample;
use crate::store::SeriesPoint as StoredPoint;

#[test]
fn graph_document_has_the_contract_shape() {
    let doc = serde_json::to_value(GraphDocument::from(&sample())).unwrap();
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
fn graph_document_golden_edge_and_node() {
    let doc = serde_json::to_value(GraphDocument::from(&sample())).unwrap();
    // Keys in the documented order, nodes without `max`, edges with it.
    let cart = doc["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == "cart")
        .unwrap();
    assert_eq!(
        serde_json::to_string(cart).unwrap(),
        r#"{"source":"web","target":"cart","connection_type":"","requests":30,"errors":0,"error_rate":0.0,"rate_per_s":0.3,"client_latency_ms":{"p50":8.0,"p90":8.0,"p99":8.0,"avg":8.0,"max":8.0},"server_latency_ms":{"p50":4.0,"p90":4.0,"p99":4.0,"avg":4.0,"max":4.0}}"#
    );
    let cart_node = doc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "cart")
        .unwrap();
    assert_eq!(
        serde_json::to_string(cart_node).unwrap(),
        r#"{"id":"cart","kind":"service","requests":0,"errors":0,"error_rate":0.0,"latency_ms":{"p50":0.0,"p90":0.0,"p99":0.0,"avg":0.0}}"#
    );
}

#[test]
fn documents_read_back_as_written() {
    let graph = GraphDocument::from(&sample());
    let text = serde_json::to_string(&graph).unwrap();
    assert_eq!(serde_json::from_str::<GraphDocument>(&text).unwrap(), graph);
    // Readers ignore fields a newer server adds.
    let newer =
        json!({"window": {"start": "a", "end": "b"}, "nodes": [], "edges": [], "links": {}});
    let read: GraphDocument = serde_json::from_value(newer).unwrap();
    assert!(read.nodes.is_empty() && read.edges.is_empty());
}

#[test]
fn dependencies_in_jaeger_shape() {
    let deps = serde_json::to_value(Dependencies::from(&sample())).unwrap();
    assert_eq!(deps["data"].as_array().unwrap().len(), 5);
    assert_eq!(
        deps["data"][0],
        json!({"parent": "user", "child": "web", "callCount": 10})
    );
}

#[test]
fn diff_document_has_the_documented_shape() {
    let baseline = topology(vec![(key("a", "b"), stats(100, 0, 10.0))]);
    let current = topology(vec![(key("a", "c"), stats(10, 1, 10.0))]);
    let edges = diff(&current, &baseline, &Thresholds::default());
    let doc = DiffDocument::new(current.window, baseline.window, &edges);
    let doc = serde_json::to_value(doc).unwrap();
    assert_eq!(doc["window"]["start"], "2027-01-15T08:00:00Z");
    assert_eq!(doc["baseline"]["end"], "2027-01-15T08:15:00Z");
    let first = &doc["edges"][0];
    assert_eq!(first["source"], "a");
    assert_eq!(first["target"], "b");
    assert_eq!(first["connection_type"], "");
    assert_eq!(first["change"], "vanished");
    assert_eq!(first["reasons"], json!([]));
    assert!(first["current"].is_null());
    assert_eq!(first["baseline"]["requests"], 100);
    let second = &doc["edges"][1];
    assert_eq!(second["change"], "new");
    assert_eq!(second["current"]["error_rate"], 0.1);
    assert_eq!(second["current"]["errors"], 1);
    assert!(second["current"]["p99_ms"].as_f64().unwrap() > 9.9);
}

#[test]
fn series_document_golden() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let series = Series {
        step_seconds: 60,
        points: vec![StoredPoint {
            t,
            requests: 7,
            errors: 1,
            p99_ms: 12.34567,
        }],
    };
    assert_eq!(
        serde_json::to_string(&SeriesDocument::from(&series)).unwrap(),
        r#"{"step_seconds":60,"points":[{"t":"2027-01-15T08:00:00Z","requests":7,"errors":1,"p99_ms":12.346}]}"#
    );
}
