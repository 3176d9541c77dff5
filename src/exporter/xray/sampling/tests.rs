use std::time::{Duration, UNIX_EPOCH};

use tokio::time::Instant;

use super::metrics::{DecisionLabels, EarlyLabels, SpanLabels};
use super::policy::{Policy, below};
use super::*;
use crate::graph::{GraphConfig, unix_minute};
use crate::model::{AttributeValue, Attributes, SpanId, SpanKind, StatusCode};

fn resource(service: &str) -> Arc<Resource> {
    Arc::new(Resource::new(Attributes::from_vec(vec![(
        "service.name".into(),
        AttributeValue::String(service.into()),
    )])))
}

fn trace_id(n: u64) -> TraceId {
    TraceId::try_from(&(u128::from(n) << 64 | 0xabc).to_be_bytes()[..]).unwrap()
}

/// A span of `trace` in `service`; ids are `trace * 100 + id`.
fn span(trace: u64, id: u64, parent: Option<u64>, service: &str, kind: SpanKind) -> Span {
    let sid = |n: u64| SpanId::from_bytes((trace * 100 + n).to_be_bytes());
    Span {
        resource: resource(service),
        scope_name: "test".into(),
        trace_id: trace_id(trace),
        span_id: sid(id),
        parent_span_id: parent.map(sid),
        name: "GET /cart".into(),
        kind,
        status_code: StatusCode::Unset,
        status_message: String::new(),
        start_unix_nano: 1_700_000_000_000_000_000,
        end_unix_nano: 1_700_000_000_010_000_000,
        attributes: Attributes::default(),
        events: Vec::new(),
    }
}

/// frontend → cart: a root server span, a client span and cart's server span.
fn call(trace: u64) -> Vec<Span> {
    vec![
        span(trace, 1, None, "frontend", SpanKind::Server),
        span(trace, 2, Some(1), "frontend", SpanKind::Client),
        span(trace, 3, Some(2), "cart", SpanKind::Server),
    ]
}

/// The call failed on the caller's side.
fn failed(mut spans: Vec<Span>) -> Vec<Span> {
    spans[1].status_code = StatusCode::Error;
    spans
}

/// Keeps only what error, slow and floor keep: the rules' default keeps nothing.
fn drop_rest(dir: &tempfile::TempDir) -> SamplingConfig {
    let path = dir.path().join("rules.json");
    std::fs::write(
        &path,
        r#"{"version": 2, "rules": [], "default": {"fixed_target": 0, "rate": 0}}"#,
    )
    .unwrap();
    SamplingConfig {
        enabled: true,
        decision_wait: Duration::from_secs(2),
        per_edge_min: 0,
        max_traces_per_second: 0,
        rules_file: Some(path),
        ..SamplingConfig::default()
    }
}

fn sampler(config: &SamplingConfig, graph: Option<Graph>) -> Sampler {
    let policies = policies(config, graph, &mut Registry::default(), None).unwrap();
    Sampler::new(policies, 1)
}

fn traces(spans: &[Span]) -> Vec<u64> {
    let mut ids: Vec<u64> = spans
        .iter()
        .map(|s| u64::from_be_bytes(s.trace_id.to_bytes()[..8].try_into().unwrap()))
        .collect();
    ids.dedup();
    ids
}

fn count(sampler: &Sampler, decision: &'static str, policy: &'static str) -> u64 {
    sampler
        .policies
        .metrics
        .traces
        .get_or_create(&DecisionLabels { decision, policy })
        .get()
}

#[test]
fn a_trace_is_decided_whole_after_the_wait_since_its_last_span() {
    let dir = tempfile::tempdir().unwrap();
    let mut sampler = sampler(&drop_rest(&dir), None);
    let mut kept = Vec::new();
    let spans = failed(call(1));
    sampler.offer(&spans[..2], &mut kept);
    sampler.tick(&mut kept);
    // The failing span comes a tick later: the wait restarts.
    sampler.offer(&spans[2..], &mut kept);
    sampler.offer(&call(2), &mut kept);
    sampler.tick(&mut kept);
    assert!(kept.is_empty(), "nothing decided within decision_wait");
    assert_eq!(sampler.held_traces(), 2);
    sampler.tick(&mut kept);
    assert!(kept.is_empty(), "both got a span at tick 1");
    sampler.tick(&mut kept);
    assert_eq!(traces(&kept), [1], "the error trace, whole");
    assert_eq!(kept.len(), 3);
    assert_eq!(sampler.held_traces(), 0);
    assert_eq!(count(&sampler, "kept", "error"), 1);
    assert_eq!(count(&sampler, "dropped", "rule"), 1);
    let spans_kept = sampler
        .policies
        .metrics
        .spans
        .get_or_create(&SpanLabels { decision: "kept" })
        .get();
    assert_eq!(spans_kept, 3);
    // The held copies share nothing with the spans offered.
    assert_eq!(kept[0].name, spans[0].name);
    assert!(!Arc::ptr_eq(&kept[0].resource, &spans[0].resource));
}

#[test]
fn late_spans_follow_their_traces_decision() {
    let dir = tempfile::tempdir().unwrap();
    let mut sampler = sampler(&drop_rest(&dir), None);
    let mut kept = Vec::new();
    let error = failed(call(1));
    let healthy = call(2);
    sampler.offer(&error[..2], &mut kept);
    sampler.offer(&healthy[..2], &mut kept);
    for _ in 0..3 {
        sampler.tick(&mut kept);
    }
    assert_eq!(traces(&kept), [1]);
    kept.clear();
    sampler.offer(&[error[2].clone(), healthy[2].clone()], &mut kept);
    assert_eq!(
        kept.len(),
        1,
        "the late span of the kept trace goes at once"
    );
    assert_eq!(kept[0].span_id, error[2].span_id);
    let late = |decision| {
        sampler
            .policies
            .metrics
            .late_spans
            .get_or_create(&SpanLabels { decision })
            .get()
    };
    assert_eq!((late("kept"), late("dropped")), (1, 1));
    assert_eq!(sampler.held_traces(), 0);
}

#[test]
fn a_full_store_decides_the_least_recent_traces_early() {
    let dir = tempfile::tempdir().unwrap();
    let config = SamplingConfig {
        max_traces: 3,
        ..drop_rest(&dir)
    };
    let mut sampler = sampler(&config, None);
    let mut kept = Vec::new();
    sampler.offer(&failed(call(1)), &mut kept);
    for trace in 2..=4 {
        sampler.offer(&call(trace), &mut kept);
    }
    assert_eq!(
        traces(&kept),
        [1],
        "the oldest trace went early, kept for its error"
    );
    assert_eq!(sampler.held_traces(), 3);
    let early = sampler
        .policies
        .metrics
        .decided_early
        .get_or_create(&EarlyLabels {
            reason: "max_traces",
        })
        .get();
    assert_eq!(early, 1);
    kept.clear();
    sampler.flush(&mut kept);
    assert!(kept.is_empty());
    assert_eq!(sampler.held_traces(), 0);
    assert_eq!(count(&sampler, "dropped", "rule"), 3);
}

#[test]
fn fixed_thresholds_keep_slow_spans_of_their_service() {
    let dir = tempfile::tempdir().unwrap();
    let config = SamplingConfig {
        slow_thresholds: [("cart".to_string(), Duration::from_millis(5).into())].into(),
        ..drop_rest(&dir)
    };
    let policies = policies(&config, None, &mut Registry::default(), None).unwrap();
    let mut slow = call(1);
    assert_eq!(
        policies.decide(&slow, SystemTime::now()),
        (true, Policy::Slow)
    );
    slow[2].resource = resource("stock");
    assert_eq!(
        policies.decide(&slow, SystemTime::now()),
        (false, Policy::Rule),
        "no threshold for stock"
    );
}

#[test]
fn every_edge_gets_its_floor_each_minute() {
    let dir = tempfile::tempdir().unwrap();
    let config = SamplingConfig {
        per_edge_min: 2,
        ..drop_rest(&dir)
    };
    let policies = policies(&config, None, &mut Registry::default(), None).unwrap();
    let minute = UNIX_EPOCH + Duration::from_secs(1_700_000_040);
    let decisions: Vec<_> = (1..=3).map(|t| policies.decide(&call(t), minute)).collect();
    assert_eq!(
        decisions,
        [
            (true, Policy::Floor),
            (true, Policy::Floor),
            (false, Policy::Rule)
        ]
    );
    // A kept error counts towards the floor of the next minute's edges.
    let next = minute + Duration::from_secs(60);
    assert_eq!(
        policies.decide(&failed(call(4)), next),
        (true, Policy::Error)
    );
    assert_eq!(policies.decide(&call(5), next), (true, Policy::Floor));
    assert_eq!(policies.decide(&call(6), next), (false, Policy::Rule));
}

#[test]
fn edges_slower_than_their_p99_in_the_graph_are_kept() {
    let graph = Graph::new(GraphConfig::default().checked(), 1);
    let now = SystemTime::now();
    for trace in 1..=200 {
        graph.process_at(0, &call(trace), Instant::now(), unix_minute(now));
    }
    let dir = tempfile::tempdir().unwrap();
    let policies = policies(
        &drop_rest(&dir),
        Some(graph),
        &mut Registry::default(),
        None,
    )
    .unwrap();
    policies.refresh_baselines(now);
    assert_eq!(policies.decide(&call(300), now), (false, Policy::Rule));
    let mut slow = call(301);
    slow[1].end_unix_nano += 50_000_000;
    assert_eq!(policies.decide(&slow, now), (true, Policy::Slow));
}

#[test]
fn the_budget_holds_over_a_minute_and_probability_is_by_trace_id() {
    let config = SamplingConfig {
        enabled: true,
        per_edge_min: 0,
        max_traces_per_second: 100,
        ..SamplingConfig::default()
    };
    let policies = policies(&config, None, &mut Registry::default(), None).unwrap();
    let start = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut trace = 0;
    let (mut kept_after_warmup, mut errors_kept) = (0, 0);
    for second in 0..90 {
        let now = start + Duration::from_secs(second);
        for n in 0..1_000 {
            trace += 1;
            let mut spans = call(trace);
            if n < 20 {
                spans = failed(spans);
            }
            let (kept, policy) = policies.decide(&spans, now);
            errors_kept += u32::from(kept && policy == Policy::Error);
            if kept && second >= 30 {
                kept_after_warmup += 1;
            }
        }
    }
    let expected = 100 * 60;
    assert!(
        (expected * 9 / 10..=expected * 11 / 10).contains(&kept_after_warmup),
        "{kept_after_warmup} kept in a minute, budget {expected}"
    );
    // Errors are never sampled away.
    assert_eq!(errors_kept, 90 * 20);
    let share = (1..=100_000u64)
        .filter(|&n| below(trace_id(n), 0.1))
        .count();
    assert!((9_500..=10_500).contains(&share), "{share}");
    assert!(below(trace_id(7), 1.0) && !below(trace_id(7), 0.0));
}

#[test]
fn rules_match_the_entry_span_with_reservoir_then_fixed_rate() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("frontend-rules.json");
    std::fs::write(
        &path,
        r#"[{"RuleName": "frontend", "Priority": 1, "FixedRate": 0.0, "ReservoirSize": 2,
             "ServiceName": "front*", "HTTPMethod": "GET", "URLPath": "/cart*"},
            {"RuleName": "Default", "Priority": 10000, "FixedRate": 1.0, "ReservoirSize": 0}]"#,
    )
    .unwrap();
    let config = SamplingConfig {
        rules_file: Some(path),
        ..drop_rest(&dir)
    };
    let policies = policies(&config, None, &mut Registry::default(), None).unwrap();
    let get_cart = |trace| {
        let mut spans = call(trace);
        spans[0].attributes = Attributes::from_vec(vec![
            (
                "http.request.method".into(),
                AttributeValue::String("GET".into()),
            ),
            ("url.path".into(), AttributeValue::String("/cart/7".into())),
        ]);
        spans
    };
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let kept: Vec<bool> = (1..=4)
        .map(|t| policies.decide(&get_cart(t), now).0)
        .collect();
    assert_eq!(
        kept,
        [true, true, false, false],
        "reservoir of 2, then rate 0"
    );
    assert!(
        policies
            .decide(&get_cart(5), now + Duration::from_secs(1))
            .0,
        "a new second"
    );
    assert!(
        policies.decide(&call(6), now).0,
        "no method: the default rule keeps all"
    );
}
