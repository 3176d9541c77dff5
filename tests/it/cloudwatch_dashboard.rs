//! `dashboards/cloudwatch/service-map.json` is a valid CloudWatch dashboard
//! body (checked against a JSON Schema written from AWS's "Dashboard Body
//! Structure and Syntax") and names only metrics, with exactly the
//! dimension sets, that the exporter emits — taken from the exporter's own
//! model, not from a second list.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use tracemap::exporter::cloudwatch::CloudWatchConfig;
use tracemap::exporter::cloudwatch::model::{BACKLOG_METRICS, DIM_EXPORTER, ModelConfig, emitted};

fn repo_file(rel: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What a dashboard names: (namespace, metric, dimension names, sorted).
type Reference = (String, String, Vec<String>);

/// Metrics named by `SEARCH('{Namespace,Dim,…} MetricName="X" …', …)` in a
/// metric-math expression.
fn search_refs(expression: &str) -> Vec<Reference> {
    let mut out = Vec::new();
    let mut rest = expression;
    while let Some(at) = rest.find("SEARCH('") {
        rest = &rest[at + "SEARCH('".len()..];
        let query = &rest[..rest.find('\'').expect("closing quote of SEARCH")];
        let schema = query
            .strip_prefix('{')
            .and_then(|q| q.split_once('}'))
            .unwrap_or_else(|| panic!("SEARCH without a {{schema}}: {query}"))
            .0;
        let mut parts = schema.split(',').map(str::trim);
        let namespace = parts.next().unwrap().to_owned();
        let mut dims: Vec<String> = parts.map(str::to_owned).collect();
        dims.sort();
        let metric = query
            .split_once("MetricName=\"")
            .and_then(|(_, m)| m.split_once('"'))
            .unwrap_or_else(|| panic!("SEARCH without MetricName=\"…\": {query}"))
            .0
            .to_owned();
        out.push((namespace, metric, dims));
    }
    out
}

/// Every metric a dashboard references, with the widget title.
fn references(dashboard: &Value) -> Vec<(String, Reference)> {
    let mut out = Vec::new();
    for widget in dashboard["widgets"].as_array().unwrap() {
        if widget["type"] != "metric" {
            continue;
        }
        let title = widget["properties"]["title"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let mut previous: Vec<Value> = Vec::new();
        for entry in widget["properties"]["metrics"].as_array().unwrap() {
            let entry = entry.as_array().unwrap();
            if let Some(expression) = entry[0]["expression"].as_str() {
                let refs = search_refs(expression);
                assert!(
                    !refs.is_empty(),
                    "{title}: expression names no metric: {expression}"
                );
                out.extend(refs.into_iter().map(|r| (title.clone(), r)));
                continue;
            }
            // [Namespace, MetricName, Dim, Value, …, {options}]; "." repeats the entry above.
            let strings: Vec<Value> = entry
                .iter()
                .enumerate()
                .filter(|(_, v)| v.is_string())
                .map(|(i, v)| {
                    if v == "." {
                        previous[i].clone()
                    } else {
                        v.clone()
                    }
                })
                .collect();
            let text: Vec<&str> = strings.iter().map(|v| v.as_str().unwrap()).collect();
            let mut dims: Vec<String> = text[2..].chunks(2).map(|c| c[0].to_owned()).collect();
            dims.sort();
            out.push((
                title.clone(),
                (text[0].to_owned(), text[1].to_owned(), dims),
            ));
            previous = strings;
        }
    }
    out
}

#[test]
fn search_parser_reads_schema_and_metric_name() {
    let refs = search_refs(
        r#"SORT(SEARCH('{TraceMap,Server,ClusterName} MetricName="Requests" ClusterName="x"', 'Sum', 60), SUM, DESC, 5) + SEARCH('{NS,A} MetricName="B"', 'p99', 60)"#,
    );
    assert_eq!(
        refs,
        [
            (
                "TraceMap".into(),
                "Requests".into(),
                vec!["ClusterName".into(), "Server".into()]
            ),
            ("NS".into(), "B".into(), vec!["A".into()]),
        ]
    );
}

#[test]
fn cloudwatch_dashboard_body_matches_the_schema() {
    let schema = repo_file("dashboards/cloudwatch/dashboard-body.schema.json");
    let dashboard = repo_file("dashboards/cloudwatch/service-map.json");
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let errors: Vec<String> = validator
        .iter_errors(&dashboard)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "service-map.json:\n{}",
        errors.join("\n")
    );
    // The schema is not vacuous: typical mistakes fail it.
    let mut broken = dashboard.clone();
    broken["widgets"][1]["properties"]["regoin"] = "us-east-1".into();
    assert!(!validator.is_valid(&broken), "unknown property accepted");
    let mut broken = dashboard.clone();
    broken["widgets"][1]["width"] = 25.into();
    assert!(!validator.is_valid(&broken), "width over 24 accepted");
    let mut broken = dashboard.clone();
    broken["widgets"][1]["properties"]["metrics"][0][0]
        .as_object_mut()
        .unwrap()
        .remove("id");
    assert!(
        !validator.is_valid(&broken),
        "expression without id accepted"
    );
    let mut broken = dashboard;
    broken["widgets"][1]["properties"]
        .as_object_mut()
        .unwrap()
        .remove("region");
    assert!(
        !validator.is_valid(&broken),
        "metric widget without region accepted"
    );
}

#[test]
fn cloudwatch_dashboard_names_only_what_the_exporter_emits() {
    let config = CloudWatchConfig::default();
    let model = ModelConfig::new(&config, vec![0.01, 0.1, 1.0]);
    let emitted: BTreeSet<(String, Vec<String>)> = emitted(&model)
        .into_iter()
        .map(|(metric, mut dims)| {
            dims.sort();
            (metric, dims)
        })
        .collect();
    let dashboard = repo_file("dashboards/cloudwatch/service-map.json");
    let refs = references(&dashboard);
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for (title, (namespace, metric, dims)) in &refs {
        if namespace != &config.namespace {
            problems.push(format!(
                "{title}: namespace {namespace}, the exporter's is {}",
                config.namespace
            ));
        }
        let key = (metric.clone(), dims.clone());
        if !emitted.contains(&key) {
            problems.push(format!("{title}: {metric} with {dims:?} is not emitted"));
        }
        used.insert(key);
    }
    assert!(
        problems.is_empty(),
        "{}\nemitted: {emitted:#?}",
        problems.join("\n")
    );
    // It shows what the issue asks for: edges by requests, error rate,
    // p99 latency, per-service RED, and the exporters' disk backlog.
    for metric in [
        "Requests",
        "ErrorRate",
        "ClientLatency",
        "ServerLatency",
        "Latency",
        "Errors",
    ] {
        assert!(
            used.iter().any(|(m, _)| m == metric),
            "{metric} not on the dashboard"
        );
    }
    assert!(
        used.iter().any(|(_, d)| d.contains(&"Service".to_owned())),
        "no per-service widget"
    );
    for metric in BACKLOG_METRICS {
        assert!(
            used.iter()
                .any(|(m, d)| m == metric && d.contains(&DIM_EXPORTER.to_owned())),
            "{metric} per exporter not on the dashboard"
        );
    }
}
