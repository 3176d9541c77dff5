//! Scale-out on loopback: 2 agents, 3 gateways and 1 standalone collector
//! as real processes. The real OpenTelemetry Python SDK sends every call's
//! CLIENT half through agent 1 and its SERVER half through agent 2, and
//! the same spans whole to the standalone. The gateways' graphs must add
//! up to the standalone's exactly, edge by edge — also across a gateway
//! that is stopped, missed while traffic continues, and restarted on its
//! port.
//!
//! A stopped gateway's in-memory graph goes with it, so each phase of
//! traffic uses its own service names (`p1-…`, `p2-…`) and is compared on
//! its own: phase 1 before the stop, phase 2 while the gateway is down
//! (its traces fail over to their next gateway), phase 3 after it is back
//! (its traces return to it).

use crate::support as common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Collector, otel_python, series_value, test_file};
use serde_json::Value;

const ITERATIONS: u64 = 40;
/// Spans per iteration in tests/python/scale_out.py.
const SPANS_PER_ITERATION: u64 = 9;
const GRAPH: &str = "graph:\n  pairing_ttl: 1s\n";

/// (source, target, connection_type) → (requests, errors).
type Edges = BTreeMap<(String, String, String), (u64, u64)>;

async fn graph(collector: &Collector) -> Value {
    reqwest::get(collector.api_url("/api/v1/graph?window=1h"))
        .await
        .expect("graph api")
        .json()
        .await
        .expect("graph json")
}

/// The edges of one phase (a service of that phase at either end).
async fn phase_edges(collectors: &[&Collector], phase: u32) -> Edges {
    let prefix = format!("p{phase}-");
    let mut sum = Edges::new();
    for collector in collectors {
        let graph = graph(collector).await;
        for edge in graph["edges"].as_array().expect("edges") {
            let text = |key: &str| edge[key].as_str().unwrap_or_default().to_owned();
            let (source, target) = (text("source"), text("target"));
            if !source.starts_with(&prefix) && !target.starts_with(&prefix) {
                continue;
            }
            let counts = sum
                .entry((source, target, text("connection_type")))
                .or_default();
            counts.0 += edge["requests"].as_u64().expect("requests");
            counts.1 += edge["errors"].as_u64().expect("errors");
        }
    }
    sum
}

/// The edges the script's phase draws, counted by hand.
fn expected_edges(phase: u32) -> Edges {
    let p = |name: &str| format!("p{phase}-{name}");
    let errors = |every: u64| (0..ITERATIONS).filter(|i| i % every == 0).count() as u64;
    Edges::from([
        (
            ("user".into(), p("frontend"), "virtual_node".into()),
            (ITERATIONS, 0),
        ),
        (
            (p("frontend"), p("checkout"), String::new()),
            (ITERATIONS, errors(4)),
        ),
        (
            (p("checkout"), p("payment"), String::new()),
            (ITERATIONS, errors(5)),
        ),
        (
            (p("checkout"), p("orders"), "database".into()),
            (ITERATIONS, 0),
        ),
        (
            (p("checkout"), p("email"), "messaging_system".into()),
            (ITERATIONS, 0),
        ),
    ])
}

fn send_phase(python: &Path, agents: &[Collector; 2], standalone: &Collector, phase: u32) {
    let output = Command::new(python)
        .arg(test_file("python/scale_out.py"))
        .args(["--client-endpoint", &agents[0].grpc_url()])
        .args(["--server-endpoint", &agents[1].grpc_url()])
        .args(["--standalone", &standalone.grpc_url()])
        .args(["--phase", &phase.to_string()])
        .args(["--iterations", &ITERATIONS.to_string()])
        .current_dir(test_file("python"))
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "scale_out.py phase {phase} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

const ACCEPTED: &str = "tracemap_receiver_accepted_spans_total{protocol=\"grpc\"}";
const ACCEPTED_HTTP: &str = "tracemap_receiver_accepted_spans_total{protocol=\"http\"}";
const SENT: &str = "tracemap_exporter_sent_total{exporter=\"forward\"}";
const REROUTED: &str = "tracemap_exporter_rerouted_total{exporter=\"forward\"}";

fn gateway_up_series(gateway: &Collector) -> String {
    format!(
        "tracemap_exporter_gateway_up{{exporter=\"forward\",gateway=\"{}\"}}",
        gateway.grpc
    )
}

/// Waits until the agents forwarded everything they accepted (a gateway
/// acknowledges spans once they are in its queues) and every collector
/// processed its queues and paired or expired every half, twice in a row;
/// at most 30 s.
async fn settle(agents: &[Collector; 2], gateways: &[&Collector], standalone: &Collector) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut calm = 0;
    while calm < 2 {
        let mut done = true;
        for agent in agents {
            let text = agent.metrics_text().await;
            let accepted = series_value(&text, ACCEPTED) + series_value(&text, ACCEPTED_HTTP);
            done &= accepted == series_value(&text, SENT);
        }
        for collector in gateways.iter().copied().chain([standalone]) {
            let text = collector.metrics_text().await;
            done &= series_value(&text, "tracemap_graph_pending_halves") == 0.0
                && series_value(&text, "tracemap_pipeline_queued_spans") == 0.0;
        }
        calm = if done { calm + 1 } else { 0 };
        assert!(Instant::now() < deadline, "collectors never settled");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn assert_no_drops(text: &str, agent: usize) {
    for reason in ["retries_exhausted", "rejected", "too_large", "shutdown"] {
        let series =
            format!("tracemap_exporter_dropped_total{{exporter=\"forward\",reason=\"{reason}\"}}");
        assert!(
            text.contains(&series),
            "agent {agent}: {series} is not exported"
        );
        assert_eq!(series_value(text, &series), 0.0, "agent {agent}: {series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_add_up_to_the_standalone_graph_through_a_gateway_restart() {
    let Some(python) = otel_python() else { return };
    let gateway_yaml = format!("mode: gateway\n{GRAPH}");
    let mut gateways: Vec<Collector> = (0..3)
        .map(|_| Collector::start_with_config(&gateway_yaml))
        .collect();
    let standalone = Collector::start_with_config(GRAPH);
    let endpoints: Vec<String> = gateways.iter().map(|g| format!("\"{}\"", g.grpc)).collect();
    // Short backoffs and a retry budget well past the outage below. In
    // memory: this checks that queued traces fail over, and records on
    // disk wait for their own gateway instead (tests/it/forward_durability.rs).
    let agent_yaml = format!(
        "mode: agent\nexporters:\n  forward:\n    endpoints: [{}]\n    flush_interval: 50ms\n    \
         initial_backoff: 50ms\n    max_backoff: 500ms\n    max_retries: 40\n    connect_timeout: 500ms\n    \
         durability: memory\n",
        endpoints.join(", ")
    );
    let agents = [
        Collector::start_with_config(&agent_yaml),
        Collector::start_with_config(&agent_yaml),
    ];

    // Phase 1: all gateways up.
    send_phase(&python, &agents, &standalone, 1);
    let all: Vec<&Collector> = gateways.iter().collect();
    settle(&agents, &all, &standalone).await;
    let expected = expected_edges(1);
    assert_eq!(phase_edges(&[&standalone], 1).await, expected, "standalone");
    assert_eq!(
        phase_edges(&all, 1).await,
        expected,
        "sum over gateways, phase 1"
    );
    let mut busy = 0;
    for gateway in &gateways {
        busy += usize::from(!phase_edges(&[gateway], 1).await.is_empty());
    }
    assert!(
        busy >= 2,
        "traces were not spread: {busy} gateway(s) had edges"
    );
    let mut accepted = 0.0;
    for agent in &agents {
        accepted += agent.metric(ACCEPTED).await;
    }
    assert_eq!(accepted, (ITERATIONS * SPANS_PER_ITERATION) as f64);

    // Phase 2: one gateway stopped; agents fail its traces over.
    let stopped = gateways.remove(0);
    let port = stopped.grpc;
    stopped.sigterm();
    let mut stopped = stopped;
    assert!(stopped.wait_exit(Duration::from_secs(20)).success());
    drop(stopped);
    send_phase(&python, &agents, &standalone, 2);
    let survivors: Vec<&Collector> = gateways.iter().collect();
    settle(&agents, &survivors, &standalone).await;
    assert_eq!(
        phase_edges(&survivors, 2).await,
        expected_edges(2),
        "sum over the surviving gateways, phase 2"
    );
    let mut rerouted = 0.0;
    for agent in &agents {
        rerouted += agent.metric(REROUTED).await;
    }
    assert!(rerouted > 0.0, "no span failed over");

    // Phase 3: the gateway is back on its port; once both agents see it
    // up, its traces return to it.
    let restarted = Collector::start_listening(&["run"], &gateway_yaml, port);
    let deadline = Instant::now() + Duration::from_secs(30);
    for agent in &agents {
        while agent.metric(&gateway_up_series(&restarted)).await != 1.0 {
            assert!(
                Instant::now() < deadline,
                "agents never saw the gateway back"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    send_phase(&python, &agents, &standalone, 3);
    gateways.push(restarted);
    let all: Vec<&Collector> = gateways.iter().collect();
    settle(&agents, &all, &standalone).await;
    assert_eq!(phase_edges(&all, 3).await, expected_edges(3), "phase 3");
    assert_eq!(phase_edges(&[&standalone], 3).await, expected_edges(3));
    assert!(
        !phase_edges(&[gateways.last().unwrap()], 3).await.is_empty(),
        "the restarted gateway got none of its traces back"
    );
    // Phase 2 stays exact on the survivors, and the standalone agrees.
    assert_eq!(phase_edges(&all, 2).await, expected_edges(2));
    assert_eq!(phase_edges(&[&standalone], 2).await, expected_edges(2));

    let mut accepted = 0.0;
    for (i, agent) in agents.iter().enumerate() {
        let text = agent.metrics_text().await;
        assert_no_drops(&text, i + 1);
        assert_eq!(series_value(&text, SENT), series_value(&text, ACCEPTED));
        accepted += series_value(&text, ACCEPTED);
    }
    assert_eq!(accepted, (3 * ITERATIONS * SPANS_PER_ITERATION) as f64);
}

/// One call as OTLP/JSON: `client` calls `server`, ids from `n`.
fn json_call(n: u32, client: &str, server: &str) -> Value {
    let trace = format!("{:032x}", 0xfeed_0000 + n);
    let resource = |service: &str| {
        serde_json::json!({"attributes": [
        {"key": "service.name", "value": {"stringValue": service}}]})
    };
    let span = |id: u32, parent: Option<u32>, kind: &str| {
        let mut span = serde_json::json!({
            "traceId": trace, "spanId": format!("{id:016x}"), "name": "GET /",
            "kind": kind, "startTimeUnixNano": "1700000000000000000",
            "endTimeUnixNano": "1700000000100000000",
            "attributes": [{"key": "http.route", "value": {"stringValue": "/"}},
                           {"key": "retries", "value": {"intValue": "0"}}]});
        if let Some(parent) = parent {
            span["parentSpanId"] = format!("{parent:016x}").into();
        }
        span
    };
    serde_json::json!({"resourceSpans": [
        {"resource": resource(client), "scopeSpans": [{"spans": [span(2 * n + 1, None, "SPAN_KIND_CLIENT")]}]},
        {"resource": resource(server), "scopeSpans": [{"spans": [span(2 * n + 2, Some(2 * n + 1), "SPAN_KIND_SERVER")]}]},
    ]})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_forwards_json_and_keeps_a_local_graph_only_when_asked() {
    let gateway = Collector::start_with_config(&format!("mode: gateway\n{GRAPH}"));
    let agent_yaml = |local: bool| {
        format!(
            "mode: agent\n{GRAPH}exporters:\n  forward:\n    endpoints: [\"{}\"]\n    \
             flush_interval: 20ms\n    keep_local_graph: {local}\n",
            gateway.grpc
        )
    };
    let plain = Collector::start_with_config(&agent_yaml(false));
    let local = Collector::start_with_config(&agent_yaml(true));
    let http = reqwest::Client::new();
    for (n, agent) in [(1, &plain), (2, &local)] {
        let response = http
            .post(agent.http_url("/v1/traces"))
            .json(&json_call(n, &format!("p{n}-web"), &format!("p{n}-api")))
            .send()
            .await
            .expect("post");
        assert_eq!(response.status(), 200);
    }
    let agents = [plain, local];
    settle(&agents, &[&gateway], &gateway).await;
    let [plain, local] = &agents;
    let call = |n: u32| {
        Edges::from([(
            (format!("p{n}-web"), format!("p{n}-api"), String::new()),
            (1, 0),
        )])
    };
    // The gateway draws both calls; only the agent asked to keeps its own.
    assert_eq!(phase_edges(&[&gateway], 1).await, call(1));
    assert_eq!(phase_edges(&[&gateway], 2).await, call(2));
    assert_eq!(phase_edges(&[local], 2).await, call(2));
    assert!(phase_edges(&[plain], 1).await.is_empty());
    assert_eq!(
        plain
            .metric("tracemap_pipeline_processed_spans_total")
            .await,
        0.0
    );
}
