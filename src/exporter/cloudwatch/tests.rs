//! Golden and limit tests of the metric model and both encoders, the
//! producer's minute bookkeeping, and delivery against a fake sink.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use super::emf::{EVENT_OVERHEAD, EmfLimits};
use super::model::*;
use super::pmd::PmdLimits;
use super::*;
use crate::graph::edge::{ConnectionType, EdgeKey, EdgeStats, NodeStats};
use crate::graph::topology::Topology;

const T0: i64 = 1_800_000_000_000; // a minute start, in ms

fn sketch_ms(values_ms: &[f64]) -> crate::graph::sketch::Sketch {
    let mut sketch = crate::graph::sketch::Sketch::default();
    for v in values_ms {
        sketch.insert(v * 1e6);
    }
    sketch
}

fn edge(
    client: &str,
    server: &str,
    kind: ConnectionType,
    requests: u64,
    failed: u64,
) -> (EdgeKey, EdgeStats) {
    let key = EdgeKey {
        client: client.into(),
        server: server.into(),
        connection_type: kind,
        client_dimensions: Box::default(),
        server_dimensions: Box::default(),
    };
    let client_ms: Vec<f64> = (0..requests)
        .map(|i| 10.0 + (i % 3) as f64 * 10.0)
        .collect();
    let server_ms: Vec<f64> = client_ms.iter().map(|v| v - 2.0).collect();
    (
        key,
        EdgeStats {
            requests,
            failed,
            client: sketch_ms(&client_ms),
            server: sketch_ms(&server_ms),
        },
    )
}

fn topology(edges: Vec<(EdgeKey, EdgeStats)>, services: &[(&str, u64, u64)]) -> Topology {
    let window = TimeWindow {
        start: SystemTime::UNIX_EPOCH + Duration::from_millis(T0 as u64),
        end: SystemTime::UNIX_EPOCH + Duration::from_millis(T0 as u64 + 60_000),
    };
    let nodes = services
        .iter()
        .map(|(name, requests, errors)| {
            let ms: Vec<f64> = (0..*requests).map(|i| 5.0 + i as f64).collect();
            (
                std::sync::Arc::<str>::from(*name),
                NodeStats {
                    requests: *requests,
                    errors: *errors,
                    latency: sketch_ms(&ms),
                },
            )
        })
        .collect();
    Topology::build(window, edges.into_iter().collect::<HashMap<_, _>>(), nodes)
}

fn model(cluster: bool) -> ModelConfig {
    let config = CloudWatchConfig {
        cluster_name: if cluster {
            "prod-eu".into()
        } else {
            String::new()
        },
        ..CloudWatchConfig::default()
    };
    ModelConfig {
        static_dimensions: config.static_dimensions(),
        rollups: config.rollups.clone(),
        service_metrics: true,
        operation_metrics: true,
        max_dimension_sets: 1000,
        latency_bounds: vec![0.01, 0.1, 1.0],
    }
}

fn small_graph() -> Topology {
    topology(
        vec![
            edge("frontend", "checkout", ConnectionType::Direct, 3, 1),
            edge("checkout", "orders", ConnectionType::Database, 1, 0),
        ],
        &[("checkout", 3, 1), ("frontend", 0, 0)],
    )
}

fn golden(name: &str, actual: &Value) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cloudwatch")
        .join(name);
    if std::env::var_os("TRACEMAP_BLESS").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(actual).unwrap() + "\n").unwrap();
    }
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap();
    assert!(
        same(actual, &expected),
        "{name} differs; actual:\n{}",
        serde_json::to_string_pretty(actual).unwrap()
    );
}

/// Equal JSON, numbers within a relative 1e-12 (the last printed digit of
/// a float sum is not worth a golden-file update).
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn golden_comparison_is_strict_but_for_float_noise() {
    assert!(same(
        &json!({"a": [105.0]}),
        &json!({"a": [105.00000000000001]})
    ));
    assert!(!same(&json!({"a": [105.0]}), &json!({"a": [105.1]})));
    assert!(!same(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    assert!(!same(&json!(["x"]), &json!(["y"])));
}

fn parsed(events: &[emf::LogEvent]) -> Vec<Value> {
    events
        .iter()
        .map(|e| serde_json::from_str(&e.message).unwrap())
        .collect()
}

fn one_op() -> OperationDeltas {
    let mut latency = crate::graph::edge::Histogram::new(&[0.01, 0.1, 1.0]);
    for s in [0.005, 0.05, 0.05] {
        latency.observe(&[0.01, 0.1, 1.0], s);
    }
    OperationDeltas::from([(
        ("checkout".into(), "POST /checkout".into()),
        OperationStats {
            requests: 3,
            errors: 1,
            latency,
        },
    )])
}

#[test]
fn emf_documents_match_the_golden_file() {
    let built = model(true).build(&small_graph(), &one_op(), T0);
    assert_eq!(built.folded, 0);
    let encoded = emf::encode("TraceMap", &built.groups, &EmfLimits::default());
    assert_eq!(encoded.events.len(), 4, "2 edges, 1 service, 1 operation");
    assert!(encoded.events.iter().all(|e| e.timestamp_ms == T0));
    golden("emf-small-graph.json", &json!(parsed(&encoded.events)));
}

#[test]
fn putmetricdata_inputs_match_the_golden_file() {
    let built = model(true).build(&small_graph(), &one_op(), T0);
    let encoded = pmd::encode("TraceMap", &built.groups, &PmdLimits::default());
    assert_eq!(encoded.inputs.len(), 1);
    // Edges: 5 metrics × 3 sets; service and operation: 4 metrics × 1 set.
    assert_eq!(encoded.inputs[0].data.len(), 2 * 15 + 4 + 4);
    golden("pmd-small-graph.json", &encoded.inputs[0].to_json());
}

/// Every metric name of an event with its value, from the event's own directive.
fn event_metrics(event: &Value) -> Vec<(String, Value)> {
    let directive = &event["_aws"]["CloudWatchMetrics"][0];
    directive["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let name = m["Name"].as_str().unwrap().to_owned();
            let value = event[&name].clone();
            assert!(!value.is_null(), "{name} has no value in {event}");
            (name, value)
        })
        .collect()
}

fn scalar_group(metrics: usize, dimensions: usize) -> MetricGroup {
    let dims: Vec<(String, String)> = (0..dimensions)
        .map(|i| (format!("D{i:02}"), format!("v{i}")))
        .collect();
    MetricGroup {
        timestamp_ms: T0,
        dimension_sets: vec![dims.iter().map(|(k, _)| k.clone()).collect()],
        dimensions: dims,
        metrics: (0..metrics)
            .map(|i| Metric {
                name: format!("M{i:03}"),
                unit: Unit::Count,
                value: MetricValue::Scalar(i as f64),
            })
            .collect(),
    }
}

fn distribution_group(values: usize) -> MetricGroup {
    let values_ms: Vec<f64> = (1..=values).map(|i| i as f64).collect();
    MetricGroup {
        timestamp_ms: T0,
        dimensions: vec![("Service".into(), "a".into())],
        dimension_sets: vec![vec!["Service".into()]],
        metrics: vec![Metric {
            name: "Latency".into(),
            unit: Unit::Milliseconds,
            value: MetricValue::Distribution(Distribution {
                counts: vec![2.0; values],
                min: 1.0,
                max: values as f64,
                // Exact sum differs a little from the values' (as a sketch's does).
                sum: values_ms.iter().sum::<f64>() * 2.0 + 0.5,
                count: 2.0 * values as f64,
                values: values_ms,
            }),
        }],
    }
}

#[test]
fn emf_101_metrics_split_into_two_directives() {
    let encoded = emf::encode("TraceMap", &[scalar_group(101, 3)], &EmfLimits::default());
    let events = parsed(&encoded.events);
    assert_eq!(events.len(), 2);
    let first = event_metrics(&events[0]);
    let second = event_metrics(&events[1]);
    assert_eq!(first.len(), 100);
    assert_eq!(second, [("M100".to_owned(), json!(100))]);
    for event in &events {
        assert_eq!(event["D00"], "v0", "dimensions repeat in every event");
    }
}

#[test]
fn pmd_1001_data_split_into_two_calls() {
    let encoded = pmd::encode("TraceMap", &[scalar_group(101, 3)], &PmdLimits::default());
    assert_eq!(encoded.inputs.len(), 1, "101 data fit one call");
    let encoded = pmd::encode("TraceMap", &[scalar_group(1001, 3)], &PmdLimits::default());
    let sizes: Vec<usize> = encoded.inputs.iter().map(|i| i.data.len()).collect();
    assert_eq!(sizes, [1000, 1]);
    assert_eq!(encoded.inputs[1].data[0].name, "M1000");
}

#[test]
fn thirty_one_dimensions_are_cut_to_thirty_and_counted() {
    let encoded = emf::encode("TraceMap", &[scalar_group(2, 31)], &EmfLimits::default());
    let events = parsed(&encoded.events);
    assert_eq!(events.len(), 1);
    let set = &events[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"][0];
    assert_eq!(set.as_array().unwrap().len(), 30);
    assert_eq!(encoded.dimensions_truncated, 1);

    let encoded = pmd::encode("TraceMap", &[scalar_group(2, 31)], &PmdLimits::default());
    assert!(
        encoded.inputs[0]
            .data
            .iter()
            .all(|d| d.dimensions.len() == 30)
    );
    assert_eq!(encoded.dimensions_truncated, 1);
    // And the configuration never asks for it (config.rs tests the refusal).
}

#[test]
fn emf_101_values_continue_in_a_second_event_and_add_up() {
    let group = distribution_group(101);
    let encoded = emf::encode(
        "TraceMap",
        std::slice::from_ref(&group),
        &EmfLimits::default(),
    );
    let events = parsed(&encoded.events);
    assert_eq!(events.len(), 2);
    let parts: Vec<&Value> = events.iter().map(|e| &e["Latency"]).collect();
    assert_eq!(parts[0]["Values"].as_array().unwrap().len(), 100);
    assert_eq!(parts[1]["Values"], json!([101]));
    assert_eq!(parts[1]["Counts"], json!([2]));
    let MetricValue::Distribution(d) = &group.metrics[0].value else {
        unreachable!()
    };
    let count: f64 = parts.iter().map(|p| p["Count"].as_f64().unwrap()).sum();
    let sum: f64 = parts.iter().map(|p| p["Sum"].as_f64().unwrap()).sum();
    assert_eq!(count, d.count);
    assert!((sum - d.sum).abs() < 1e-9, "{sum} vs {}", d.sum);
    assert_eq!(parts[0]["Min"], json!(1));
    assert_eq!(parts[1]["Max"], json!(101));
}

#[test]
fn pmd_151_values_split_and_101_do_not() {
    let encoded = pmd::encode(
        "TraceMap",
        &[distribution_group(101)],
        &PmdLimits::default(),
    );
    assert_eq!(encoded.inputs[0].data.len(), 1);
    let encoded = pmd::encode(
        "TraceMap",
        &[distribution_group(151)],
        &PmdLimits::default(),
    );
    let data = &encoded.inputs[0].data;
    assert_eq!(data.len(), 2);
    assert_eq!((data[0].values.len(), data[1].values.len()), (150, 1));
    assert_eq!(data[1].values, [151.0]);
    assert!(
        data.iter()
            .all(|d| d.value.is_none() && d.counts.len() == d.values.len())
    );
}

#[test]
fn oversize_events_are_halved_until_they_fit() {
    let limits = EmfLimits {
        max_event_bytes: 1500,
        ..EmfLimits::default()
    };
    let mut group = scalar_group(40, 3);
    group
        .metrics
        .push(distribution_group(120).metrics.remove(0));
    let encoded = emf::encode("TraceMap", &[group], &limits);
    assert!(encoded.events.len() > 2, "{}", encoded.events.len());
    assert!(encoded.events.iter().all(|e| e.message.len() <= 1500));
    let events = parsed(&encoded.events);
    let mut names: Vec<String> = Vec::new();
    let mut latency_values = 0;
    let mut latency_count = 0.0;
    for event in &events {
        for (name, value) in event_metrics(event) {
            if name == "Latency" {
                latency_values += value["Values"].as_array().unwrap().len();
                latency_count += value["Count"].as_f64().unwrap();
            } else {
                names.push(name);
            }
        }
    }
    names.sort();
    assert_eq!(
        names,
        (0..40).map(|i| format!("M{i:03}")).collect::<Vec<_>>()
    );
    assert_eq!((latency_values, latency_count), (120, 240.0));
    assert_eq!(encoded.oversize_dropped, 0);

    // A dimension value larger than an event cannot be split: counted.
    let mut huge = scalar_group(1, 1);
    huge.dimensions[0].1 = "x".repeat(2000);
    let encoded = emf::encode("TraceMap", &[huge], &limits);
    assert!(encoded.events.is_empty());
    assert_eq!(encoded.oversize_dropped, 1);
}

#[test]
fn batches_respect_count_bytes_and_order() {
    let event = |ts: i64, len: usize| emf::LogEvent {
        timestamp_ms: ts,
        message: "x".repeat(len),
    };
    let limits = EmfLimits::default();
    let events: Vec<_> = (0..10_001).map(|i| event(T0 + i, 10)).collect();
    let batches = emf::batches(events, &limits);
    assert_eq!(
        batches.iter().map(Vec::len).collect::<Vec<_>>(),
        [10_000, 1]
    );
    // Three events of 400 KB: 2 fit 1 MB with their overhead, the third does not.
    let events: Vec<_> = (0..3).map(|i| event(T0 + i, 400_000)).collect();
    let batches = emf::batches(events, &limits);
    assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), [2, 1]);
    for batch in &batches {
        let bytes: usize = batch.iter().map(|e| e.message.len() + EVENT_OVERHEAD).sum();
        assert!(bytes <= limits.max_batch_bytes);
    }
    // More than a day apart: separate batches.
    let batches = emf::batches(vec![event(T0, 1), event(T0 + 86_400_000, 1)], &limits);
    assert_eq!(batches.len(), 2);
    // encode() sorts: minutes out of order come back chronological.
    let mut late = scalar_group(1, 1);
    late.timestamp_ms = T0 + 60_000;
    let encoded = emf::encode("TraceMap", &[late, scalar_group(1, 1)], &limits);
    assert_eq!(encoded.events[0].timestamp_ms, T0);
}

#[test]
fn pmd_calls_stay_under_the_byte_limit() {
    let limits = PmdLimits {
        max_request_bytes: 20_000,
        ..PmdLimits::default()
    };
    let encoded = pmd::encode("TraceMap", &[scalar_group(300, 5)], &limits);
    assert!(encoded.inputs.len() > 1);
    assert_eq!(
        encoded.inputs.iter().map(|i| i.data.len()).sum::<usize>(),
        300
    );
    for input in &encoded.inputs {
        // The estimate is an upper bound of the query body actually sent.
        let body: usize = input
            .data
            .iter()
            .enumerate()
            .map(|(n, d)| {
                let p = format!("MetricData.member.{}.", n + 1);
                let mut s = format!("{p}MetricName={}&{p}Unit=Count&{p}StorageResolution=60&{p}Timestamp=2027-01-15T08%3A00%3A00Z&{p}Value={}&", d.name, d.value.unwrap());
                for (i, (k, v)) in d.dimensions.iter().enumerate() {
                    s += &format!("{p}Dimensions.member.{}.Name={k}&{p}Dimensions.member.{}.Value={v}&", i + 1, i + 1);
                }
                s.len()
            })
            .sum();
        assert!(body <= 20_000, "{body}");
    }
}

#[test]
fn non_finite_values_are_never_sent() {
    let mut group = scalar_group(3, 1);
    group.metrics[0].value = MetricValue::Scalar(f64::NAN);
    group.metrics[1].value = MetricValue::Scalar(f64::INFINITY);
    let encoded = pmd::encode(
        "TraceMap",
        std::slice::from_ref(&group),
        &PmdLimits::default(),
    );
    assert_eq!(encoded.non_finite, 2);
    assert_eq!(encoded.inputs[0].data.len(), 1);
    let events = parsed(&emf::encode("TraceMap", &[group], &EmfLimits::default()).events);
    assert_eq!(event_metrics(&events[0]).len(), 1);
    // Tiny magnitudes CloudWatch refuses become 0.
    let mut group = scalar_group(1, 1);
    group.metrics[0].value = MetricValue::Scalar(1e-200);
    let encoded = pmd::encode("TraceMap", &[group], &PmdLimits::default());
    assert_eq!(encoded.inputs[0].data[0].value, Some(0.0));
}

#[test]
fn cardinality_bound_folds_the_quietest_into_other() {
    let topology = topology(
        vec![
            edge("a", "b", ConnectionType::Direct, 10, 1),
            edge("a", "c", ConnectionType::Direct, 5, 0),
            edge("b", "d", ConnectionType::Direct, 2, 1),
            edge("c", "d", ConnectionType::Direct, 1, 1),
        ],
        &[],
    );
    let config = ModelConfig {
        max_dimension_sets: 2,
        service_metrics: false,
        operation_metrics: false,
        ..model(false)
    };
    let built = config.build(&topology, &OperationDeltas::new(), T0);
    assert_eq!(built.folded, 2);
    let by_server: Vec<(String, f64, f64)> = built
        .groups
        .iter()
        .map(|g| {
            let scalar = |i: usize| match g.metrics[i].value {
                MetricValue::Scalar(v) => v,
                _ => unreachable!(),
            };
            (g.dimensions[1].1.clone(), scalar(0), scalar(1))
        })
        .collect();
    assert_eq!(
        by_server,
        [
            ("b".into(), 10.0, 1.0),
            ("c".into(), 5.0, 0.0),
            (OTHER.into(), 3.0, 2.0),
        ]
    );
    let other = &built.groups[2];
    assert_eq!(other.dimensions[0], ("Client".into(), OTHER.into()));
    let MetricValue::Distribution(latency) = &other.metrics[3].value else {
        unreachable!()
    };
    assert_eq!(latency.count, 3.0, "latency of folded edges merged");
}

#[test]
fn operation_tracker_turns_totals_into_deltas() {
    use crate::model::{Attributes, Resource, Span, SpanId, SpanKind, StatusCode, TraceId};
    let span = |name: &str, kind, status, ms: u64| Span {
        resource: std::sync::Arc::new(Resource {
            service_name: "svc".into(),
            attributes: Attributes::default(),
        }),
        scope_name: "".into(),
        trace_id: TraceId::try_from(&[1; 16][..]).unwrap(),
        span_id: SpanId::try_from(&[1; 8][..]).unwrap(),
        parent_span_id: None,
        name: name.into(),
        kind,
        status_code: status,
        status_message: String::new(),
        start_unix_nano: 0,
        end_unix_nano: ms * 1_000_000,
        attributes: Attributes::default(),
        events: vec![],
    };
    let bounds = [0.01, 0.1, 1.0];
    let mut metrics = crate::graph::spanmetrics::SpanMetrics::new(&Default::default(), &bounds);
    let mut tracker = OperationTracker::default();
    metrics.record(&span("GET /a", SpanKind::Server, StatusCode::Unset, 5), 1);
    metrics.record(&span("GET /a", SpanKind::Server, StatusCode::Error, 50), 1);
    metrics.record(&span("call", SpanKind::Client, StatusCode::Unset, 5), 1);
    let snapshot = |m: &crate::graph::spanmetrics::SpanMetrics| {
        let mut s = crate::graph::spanmetrics::SpanMetricsSnapshot::default();
        m.merge_into(&mut s);
        s
    };
    let first = tracker.delta(&snapshot(&metrics));
    assert_eq!(first.len(), 1, "CLIENT spans are not served requests");
    let stats = &first[&("svc".into(), "GET /a".into())];
    assert_eq!((stats.requests, stats.errors), (2, 1));
    assert_eq!(stats.latency.counts, [1, 1, 0, 0]);
    metrics.record(&span("GET /a", SpanKind::Server, StatusCode::Unset, 500), 2);
    let second = tracker.delta(&snapshot(&metrics));
    let stats = &second[&("svc".into(), "GET /a".into())];
    assert_eq!((stats.requests, stats.errors), (1, 0));
    assert_eq!(stats.latency.counts, [0, 0, 1, 0]);
    assert!((stats.latency.sum - 0.5).abs() < 1e-9);
    assert!(tracker.delta(&snapshot(&metrics)).is_empty(), "nothing new");
}

#[test]
fn each_minute_is_exported_once_after_it_is_over() {
    use crate::model::{
        AttributeValue, Attributes, Resource, Span, SpanId, SpanKind, StatusCode, TraceId,
    };
    use crate::pipeline::SpanConsumer;
    let graph = Graph::new(crate::graph::GraphConfig::default().checked(), 1);
    let span = |service: &str, kind, id: u8, parent: Option<u8>| Span {
        resource: std::sync::Arc::new(Resource::new(Attributes::from_vec(vec![(
            "service.name".into(),
            AttributeValue::String(service.into()),
        )]))),
        scope_name: "".into(),
        trace_id: TraceId::try_from(&[7; 16][..]).unwrap(),
        span_id: SpanId::try_from(&[id; 8][..]).unwrap(),
        parent_span_id: parent.map(|p| SpanId::try_from(&[p; 8][..]).unwrap()),
        name: "op".into(),
        kind,
        status_code: StatusCode::Unset,
        status_message: String::new(),
        start_unix_nano: 0,
        end_unix_nano: 3_000_000,
        attributes: Attributes::default(),
        events: vec![],
    };
    let now = SystemTime::now();
    let mut producer = Producer::new(&CloudWatchConfig::default(), graph.clone(), now);
    graph.consumer(0).consume(&[
        span("web", SpanKind::Client, 1, None),
        span("api", SpanKind::Server, 2, Some(1)),
    ]);
    let (payloads, stats) = producer.flush(SystemTime::now(), false);
    assert!(
        payloads.is_empty() && stats.minutes == 0,
        "the minute is not over"
    );
    let later = now + Duration::from_secs(62) + MINUTE_GRACE;
    let (payloads, stats) = producer.flush(later, false);
    assert!(stats.minutes >= 1, "{stats:?}");
    let Payload::Events(events) = &payloads[0] else {
        panic!("emf mode")
    };
    let docs = parsed(events);
    let edge = docs
        .iter()
        .find(|d| d["Client"] == "web")
        .expect("the edge");
    assert_eq!(
        (edge["Server"].clone(), edge["Requests"].clone()),
        (json!("api"), json!(1))
    );
    assert_eq!(edge["ConnectionType"], DIRECT);
    assert_eq!(edge["ClientLatency"]["Sum"], json!(3));
    let (again, _) = producer.flush(later, false);
    assert!(again.is_empty(), "exported once");
    // Shutdown: the current minute goes too, even when partial.
    let (last, stats) = producer.flush(later, true);
    assert_eq!(stats.minutes, 1);
    assert!(last.is_empty(), "nothing happened in it");
}

/// Exporter series where only `emf` has a disk queue, holding 3 records.
fn backlog_metrics() -> std::sync::Arc<ExporterMetrics> {
    let metrics = std::sync::Arc::new(ExporterMetrics::default());
    let _memory_only = metrics.exporter("xray");
    let disk = metrics.exporter("emf").disk();
    disk.bytes.set(4096);
    disk.records.set(3);
    disk.oldest_age.set(12.5);
    metrics
}

#[test]
fn backlogs_name_only_exporters_with_a_disk_queue() {
    let metrics = backlog_metrics();
    let backlogs = metrics.backlogs();
    assert_eq!(
        backlogs,
        [crate::exporter::Backlog {
            exporter: "emf",
            bytes: 4096,
            records: 3,
            oldest_age_seconds: 12.5,
        }]
    );
    let xray = crate::exporter::TierLabels {
        exporter: "xray",
        tier: "disk",
    };
    assert!(
        metrics.queue_bytes.get(&xray).is_none() && metrics.queue_records.get(&xray).is_none(),
        "reading creates no series"
    );
}

#[test]
fn backlog_group_in_emf_and_putmetricdata() {
    let groups = model(true).backlog(&backlog_metrics().backlogs(), T0);
    assert_eq!(groups.len(), 1);
    let emf = emf::encode("TraceMap", &groups, &EmfLimits::default());
    let docs = parsed(&emf.events);
    assert_eq!(docs.len(), 1);
    let doc = &docs[0];
    assert_eq!(doc["_aws"]["Timestamp"], json!(T0));
    let directive = &doc["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(
        directive["Dimensions"],
        json!([["Exporter", "ClusterName"]])
    );
    assert_eq!(
        directive["Metrics"],
        json!([
            {"Name": "ExportQueueBytes", "Unit": "Bytes"},
            {"Name": "ExportQueueRecords", "Unit": "Count"},
            {"Name": "ExportQueueOldestAge", "Unit": "Seconds"},
        ])
    );
    assert_eq!(
        (&doc["Exporter"], &doc["ClusterName"]),
        (&json!("emf"), &json!("prod-eu"))
    );
    assert_eq!(
        (
            &doc["ExportQueueBytes"],
            &doc["ExportQueueRecords"],
            &doc["ExportQueueOldestAge"]
        ),
        (&json!(4096), &json!(3), &json!(12.5))
    );

    let pmd = pmd::encode("TraceMap", &groups, &PmdLimits::default());
    assert_eq!(pmd.inputs.len(), 1);
    let data: Vec<Value> = pmd.inputs[0].data.iter().map(pmd::Datum::to_json).collect();
    let dims = json!([
        {"Name": "Exporter", "Value": "emf"},
        {"Name": "ClusterName", "Value": "prod-eu"},
    ]);
    let expected = [
        ("ExportQueueBytes", "Bytes", 4096.0),
        ("ExportQueueRecords", "Count", 3.0),
        ("ExportQueueOldestAge", "Seconds", 12.5),
    ];
    assert_eq!(data.len(), expected.len());
    for (datum, (name, unit, value)) in data.iter().zip(expected) {
        assert_eq!(datum["MetricName"], name);
        assert_eq!(datum["Unit"], unit);
        assert_eq!(datum["Value"], json!(value));
        assert_eq!(datum["Dimensions"], dims);
        assert_eq!(datum["Timestamp"], json!(T0));
    }
    // The names CloudWatch's SDK knows.
    for unit in [Unit::Bytes, Unit::Seconds] {
        let known = aws_sdk_cloudwatch::types::StandardUnit::values();
        assert!(known.contains(&unit.as_str()), "{unit:?}");
    }
}

#[test]
fn backlog_rides_on_the_newest_minute_of_each_flush() {
    let graph = Graph::new(crate::graph::GraphConfig::default().checked(), 1);
    let now = SystemTime::now();
    let mut producer =
        Producer::new(&CloudWatchConfig::default(), graph, now).with_backlog(backlog_metrics());
    let (payloads, stats) = producer.flush(now, false);
    assert!(
        payloads.is_empty() && stats.minutes == 0,
        "no minute is over"
    );
    let later = now + Duration::from_secs(182) + MINUTE_GRACE;
    let (payloads, stats) = producer.flush(later, false);
    assert!(stats.minutes >= 3, "{stats:?}");
    let Payload::Events(events) = &payloads[0] else {
        panic!("emf mode")
    };
    let docs = parsed(events);
    let newest = (crate::graph::unix_minute(later - MINUTE_GRACE) - 1) * 60_000;
    let backlog: Vec<&Value> = docs.iter().filter(|d| d["Exporter"] == "emf").collect();
    assert_eq!(
        backlog.len(),
        1,
        "once per flush, not per minute: {docs:#?}"
    );
    assert_eq!(backlog[0]["_aws"]["Timestamp"], json!(newest));
    assert_eq!(backlog[0]["ExportQueueRecords"], json!(3));
    let (again, _) = producer.flush(later, false);
    assert!(again.is_empty(), "no new minute, no backlog");
}

#[test]
fn kept_traces_and_the_budget_ride_on_each_flush_as_deltas() {
    let graph = Graph::new(crate::graph::GraphConfig::default().checked(), 1);
    let metrics = backlog_metrics();
    let kept = prometheus_client::metrics::counter::Counter::<u64>::default();
    metrics.report_sampling(crate::exporter::SamplingTotals {
        kept: kept.clone(),
        budget_per_second: 10,
    });
    let now = SystemTime::now();
    let mut producer =
        Producer::new(&CloudWatchConfig::default(), graph, now).with_backlog(metrics);
    let sampling = |payloads: &[Payload]| -> Vec<Value> {
        let Payload::Events(events) = &payloads[0] else {
            panic!("emf mode")
        };
        parsed(events)
            .into_iter()
            .filter(|d| d["Exporter"] == "xray")
            .collect()
    };
    kept.inc_by(7);
    let first = now + Duration::from_secs(60) + MINUTE_GRACE;
    let (payloads, stats) = producer.flush(first, false);
    let docs = sampling(&payloads);
    assert_eq!(docs.len(), 1, "{docs:#?}");
    assert_eq!(docs[0]["KeptTraces"], json!(7));
    assert_eq!(docs[0]["TraceBudget"], json!(600 * stats.minutes));
    kept.inc_by(3);
    let (payloads, _) = producer.flush(first + Duration::from_secs(60), false);
    let docs = sampling(&payloads);
    assert_eq!(
        (&docs[0]["KeptTraces"], &docs[0]["TraceBudget"]),
        (&json!(3), &json!(600))
    );
}

/// A sink that answers from a script, then succeeds.
#[derive(Default)]
struct FakeSink {
    script: Mutex<Vec<Result<u64, bool>>>,
    sent: Mutex<Vec<usize>>,
}

impl client::Sink for std::sync::Arc<FakeSink> {
    async fn send(&self, payload: &Payload) -> Result<u64, CloudWatchError> {
        let next = {
            let mut script = self.script.lock().unwrap();
            if script.is_empty() {
                Ok(0)
            } else {
                script.remove(0)
            }
        };
        match next {
            Ok(rejected) => {
                self.sent.lock().unwrap().push(payload.items());
                Ok(rejected)
            }
            Err(retryable) => Err(CloudWatchError::Call {
                operation: "PutLogEvents",
                retryable,
                status: Some(if retryable { 503 } else { 400 }),
                code: None,
                message: "fake".into(),
            }),
        }
    }
}

fn events(n: usize) -> Payload {
    Payload::Events(
        (0..n)
            .map(|i| emf::LogEvent {
                timestamp_ms: T0 + i as i64,
                message: "{}".into(),
            })
            .collect(),
    )
}

#[tokio::test(start_paused = true)]
async fn delivery_retries_gives_up_and_counts() {
    let metrics = ExporterMetrics::register(&mut Registry::default());
    let config = CloudWatchConfig {
        max_retries: 2,
        ..CloudWatchConfig::default()
    };
    let sink = std::sync::Arc::new(FakeSink::default());
    *sink.script.lock().unwrap() = vec![
        Err(true),
        Err(true),
        Ok(0),
        Err(false),
        Err(true),
        Err(true),
        Err(true),
        Ok(1),
    ];
    let graph = Graph::new(crate::graph::GraphConfig::default().checked(), 1);
    let exporter = CloudWatchExporter::with_sink(
        &config,
        sink.clone(),
        graph,
        &metrics,
        CloudWatchMetrics::default(),
        None,
    );
    // Retried twice then sent; refused at once; retries exhausted; 1 of 4 rejected.
    exporter
        .queue
        .push(vec![events(3), events(2), events(5), events(4)]);
    let report = exporter
        .shutdown(Instant::now() + Duration::from_secs(60))
        .await;
    assert_eq!(*sink.sent.lock().unwrap(), [3, 4]);
    let counters = metrics.exporter("emf");
    assert_eq!(report.sent, 3 + 3);
    assert_eq!(counters.failed_rejected.get(), 2 + 1);
    assert_eq!(counters.failed_retries_exhausted.get(), 5);
    assert_eq!(counters.retries.get(), 3 * 2 + 5 * 2);
    assert_eq!(report.lost_at_shutdown, 0);
}

#[test]
fn full_queue_drops_the_oldest_requests_and_counts_their_items() {
    let metrics = ExporterMetrics::register(&mut Registry::default());
    let queue = request_queue(2, metrics.exporter("cloudwatch"), "cloudwatch", None);
    queue.push(vec![events(1), events(2), events(3)]);
    assert_eq!(queue.counters().queue_full.get(), 1);
    assert_eq!(queue.counters().queue_depth.get(), 5);
    assert_eq!(queue.pop().map(|(p, _)| p.items()), Some(2));
    assert_eq!(queue.pending_items(), 3 + 2, "queued and in flight");
}

#[test]
fn requests_on_disk_come_back_equal_after_a_restart_until_finished() {
    let dir = tempfile::tempdir().unwrap();
    let disk = || {
        let settings = crate::exporter::disk::DiskQueueConfig {
            fsync_interval: Duration::ZERO,
            ..Default::default()
        }
        .settings(dir.path(), "emf", MAX_REQUEST_AGE);
        let metrics = ExporterMetrics::register(&mut Registry::default());
        request_queue(2, metrics.exporter("emf"), "emf", Some(settings))
    };
    let metric = Payload::Metrics(pmd::PutMetricDataInput {
        namespace: "TraceMap".into(),
        data: vec![pmd::Datum {
            name: "Latency".into(),
            dimensions: vec![("Server".into(), "orders".into())],
            timestamp_ms: 1_700_000_000_000,
            unit: model::Unit::Milliseconds,
            value: None,
            values: vec![1.5, 20.0],
            counts: vec![3.0, 1.0],
        }],
    });
    {
        let queue = disk();
        assert!(queue.is_durable());
        // Three requests, more than the memory queue's two: none dropped.
        queue.push(vec![events(2), metric.clone(), events(1)]);
        assert_eq!(queue.counters().queue_full.get(), 0);
        let (first, ticket) = queue.pop().unwrap();
        assert_eq!(first, events(2));
        queue.finish(2, ticket);
        // The second is taken, then the process dies before it is sent.
        let _ = queue.pop().unwrap();
    }
    let queue = disk();
    let (again, ticket) = queue.pop().unwrap();
    assert_eq!(again, metric, "a request survives byte for byte");
    queue.finish(1, ticket);
    let (last, ticket) = queue.pop().unwrap();
    assert_eq!(last, events(1));
    queue.finish(1, ticket);
    assert!(queue.pop().is_none());
    assert!(queue.is_empty());
}

/// Events and bytes per flush for a 50-edge graph, in both modes (the
/// figures quoted in the README). Run with `--nocapture` to see them.
#[test]
fn fifty_edge_graph_figures() {
    // 50 edges among 26 services; 200 requests a minute each, latencies
    // spread over 1 ms to 2 s so every sketch holds many distinct bins.
    let mut edges = Vec::new();
    for i in 0..50u64 {
        let (mut key, mut stats) = edge(
            &format!("svc-{:02}", i % 25),
            &format!("svc-{:02}", (i * 7 + 3) % 26),
            ConnectionType::Direct,
            0,
            0,
        );
        key.client = format!("service-{i:02}-client").into();
        let values: Vec<f64> = (0..200)
            .map(|r| 1.0 + ((r * 37 + i * 11) % 400) as f64 * 5.0)
            .collect();
        stats.requests = 200;
        stats.failed = i % 5;
        stats.client = sketch_ms(&values);
        stats.server = sketch_ms(&values.iter().map(|v| v * 0.9).collect::<Vec<_>>());
        edges.push((key, stats));
    }
    let services: Vec<(String, u64, u64)> =
        (0..26).map(|i| (format!("svc-{i:02}"), 400, 2)).collect();
    let services_ref: Vec<(&str, u64, u64)> = services
        .iter()
        .map(|(s, a, b)| (s.as_str(), *a, *b))
        .collect();
    let topology = topology(edges, &services_ref);
    let built = model(true).build(&topology, &OperationDeltas::new(), T0);
    assert_eq!(built.groups.len(), 50 + 26);
    for mode in [CloudWatchMode::Emf, CloudWatchMode::PutMetricData] {
        let encoder = Encoder::new(&CloudWatchConfig {
            mode,
            ..CloudWatchConfig::default()
        });
        let (payloads, left_out) = encoder.encode(&built.groups);
        assert_eq!(left_out, 0);
        let items: usize = payloads.iter().map(Payload::items).sum();
        let bytes: usize = payloads.iter().map(Payload::bytes).sum();
        let max_values = built
            .groups
            .iter()
            .flat_map(|g| &g.metrics)
            .filter_map(|m| match &m.value {
                MetricValue::Distribution(d) => Some(d.values.len()),
                _ => None,
            })
            .max()
            .unwrap();
        println!(
            "50-edge flush, {:?}: {} requests, {} {}, {} bytes (largest distribution: {} values)",
            mode,
            payloads.len(),
            items,
            if mode == CloudWatchMode::Emf {
                "log events"
            } else {
                "metric data"
            },
            bytes,
            max_values,
        );
        match mode {
            CloudWatchMode::Emf => assert!(items >= 76 && payloads.len() == 1),
            CloudWatchMode::PutMetricData => assert!(items >= 50 * 15 + 26 * 4),
        }
    }
}
