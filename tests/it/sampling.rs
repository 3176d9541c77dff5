//! Tail sampling for X-Ray, through the real binary with X-Ray on moto:
//!
//! - real OpenTelemetry Python SDK traffic with errors, slow calls and
//!   healthy calls: every error and slow trace reaches X-Ray whole, every
//!   edge gets its floor, the healthy rest is dropped, and the graph still
//!   counts 100 % of the calls;
//! - agent → two gateways keep the same traces as one standalone collector
//!   for the same traffic (the probabilistic part is decided by trace id);
//! - a rules file with a bad field fails `check-config` with its name.

use crate::support as common;

use std::collections::{BTreeSet, HashSet};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::moto::{FAKE_AWS_ENV, Moto, client_config, moto_server_path};
use common::xray::{span_ids_in_moto, wait_metrics_for};
use common::{Collector, otel_python, post_spans, series_value, test_file};
use serde_json::Value;
use tracemap::otlp::kit::{self, SpanBuilder};

/// Traces decided, whatever the decision and policy.
fn decided(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("tracemap_sampling_traces_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn traces_series(decision: &str, policy: &str) -> String {
    format!("tracemap_sampling_traces_total{{decision=\"{decision}\",policy=\"{policy}\"}}")
}

/// A rules file whose default keeps `rate` of the traces no policy keeps.
fn rules_file(dir: &std::path::Path, rate: f64) -> String {
    let path = dir.join("rules.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"version": 2, "rules": [], "default": {{"fixed_target": 0, "rate": {rate}}}}}"#
        ),
    )
    .unwrap();
    path.display().to_string()
}

fn xray_yaml(endpoint: &str, sampling: &str) -> String {
    format!(
        "graph:\n  pairing_ttl: 1s\nexporters:\n  xray:\n    enabled: true\n    region: us-east-1\n    \
         endpoint: {endpoint}\n    flush_interval: 100ms\n    sampling:\n      enabled: true\n      \
         decision_wait: 2s\n{sampling}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_and_slow_traces_reach_xray_whole_every_edge_gets_its_floor_the_graph_sees_all() {
    let Some(python) = otel_python() else { return };
    let Some(moto_path) = moto_server_path("the sampling test") else {
        return;
    };
    let moto = Moto::start(&moto_path);
    let dir = tempfile::tempdir().unwrap();
    let sampling = format!(
        "      per_edge_min: 1\n      max_traces_per_second: 0\n      slow_p99: false\n      \
         slow_thresholds: {{inventory: 500ms}}\n      rules_file: {}\n",
        rules_file(dir.path(), 0.0)
    );
    let collector = Collector::start_command_env(
        &["run"],
        &xray_yaml(&moto.endpoint, &sampling),
        FAKE_AWS_ENV,
    );

    let output = Command::new(&python)
        .arg(test_file("python/sampling_app.py"))
        .args(["--endpoint", &collector.grpc_url(), "--iterations", "40"])
        .current_dir(test_file("python"))
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "sampling_app.py failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let sent: Value = serde_json::from_slice(&output.stdout).expect("json from sampling_app.py");
    let traces = sent["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 40);

    let text = wait_metrics_for(
        &collector,
        "40 traces decided",
        Duration::from_secs(30),
        |t| decided(t) >= 40.0,
    )
    .await;
    assert_eq!(decided(&text), 40.0, "{text}");
    assert_eq!(series_value(&text, "tracemap_sampling_traces_held"), 0.0);
    let kept_spans = series_value(&text, "tracemap_sampling_spans_total{decision=\"kept\"}");
    // Sent once X-Ray answered.
    let sent_series = "tracemap_exporter_sent_total{exporter=\"xray\"}";
    wait_metrics_for(
        &collector,
        "kept spans sent",
        Duration::from_secs(20),
        |t| series_value(t, sent_series) >= kept_spans,
    )
    .await;

    let client = aws_sdk_xray::Client::new(&client_config(&moto.endpoint));
    let ids: Vec<String> = traces
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_owned())
        .collect();
    let in_xray = span_ids_in_moto(&client, &ids).await;
    let mut healthy_kept = 0;
    let mut recommendations_kept = false;
    for (i, trace) in traces.iter().enumerate() {
        let spans: HashSet<String> = trace["span_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect();
        let present = spans.intersection(&in_xray).count();
        match trace["kind"].as_str().unwrap() {
            "healthy" => {
                assert!(
                    present == 0 || present == spans.len(),
                    "trace {i}: part of a trace"
                );
                if present > 0 {
                    healthy_kept += 1;
                    recommendations_kept |= i % 10 == 1;
                }
            }
            kind => assert_eq!(
                present,
                spans.len(),
                "{kind} trace {i} is not whole in X-Ray"
            ),
        }
    }
    assert!(
        recommendations_kept,
        "frontend -> recommendations (healthy traces only) has no kept trace: no floor"
    );
    // The floor keeps one trace per edge and minute: one or two minutes.
    assert!(
        (1..=2).contains(&healthy_kept),
        "{healthy_kept} healthy traces kept"
    );
    assert_eq!(series_value(&text, &traces_series("kept", "error")), 4.0);
    assert_eq!(series_value(&text, &traces_series("kept", "slow")), 4.0);
    assert_eq!(
        series_value(&text, &traces_series("kept", "floor")),
        f64::from(healthy_kept)
    );
    assert_eq!(
        series_value(&text, &traces_series("dropped", "rule")),
        f64::from(32 - healthy_kept)
    );

    // The graph counts every call, not the kept share.
    let graph: Value = reqwest::get(collector.api_url("/api/v1/graph?window=1h"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let edge = |source: &str, target: &str| {
        graph["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"] == source && e["target"] == target)
            .map(|e| {
                (
                    e["requests"].as_u64().unwrap(),
                    e["errors"].as_u64().unwrap(),
                )
            })
            .unwrap_or_else(|| panic!("no edge {source} -> {target}: {graph:#}"))
    };
    assert_eq!(edge("user", "frontend"), (40, 0));
    assert_eq!(edge("frontend", "checkout"), (40, 4));
    assert_eq!(edge("checkout", "orders"), (40, 0));
    assert_eq!(edge("frontend", "inventory"), (40, 0));
    assert_eq!(edge("frontend", "recommendations"), (4, 0));
}

/// 120 traces timed now, web → api, a fifth failing; trace ids carry the
/// current epoch second (valid X-Ray ids).
fn traffic() -> (Vec<kit::Span>, Vec<kit::Span>, Vec<String>) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let start = now.as_nanos() as u64 - 50_000_000;
    let (mut web, mut api, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    for n in 1..=120u64 {
        let trace = (u128::from(now.as_secs() as u32) << 96) | u128::from(n) << 8 | 0x5a;
        let trace_bytes = trace.to_be_bytes();
        let id = |k: u64| (n << 8 | k).to_be_bytes();
        web.push(
            SpanBuilder::new(&trace_bytes, &id(1))
                .name("GET /")
                .kind(2)
                .times(start, start + 30_000_000)
                .build(),
        );
        web.push(
            SpanBuilder::new(&trace_bytes, &id(2))
                .parent(&id(1))
                .name("GET /api")
                .kind(3)
                .times(start + 1_000_000, start + 20_000_000)
                .attributes(vec![kit::string("server.address", "api")])
                .build(),
        );
        api.push(
            SpanBuilder::new(&trace_bytes, &id(3))
                .parent(&id(2))
                .name("GET /api")
                .kind(2)
                .times(start + 2_000_000, start + 19_000_000)
                .error_if(n % 5 == 0, "boom")
                .build(),
        );
        ids.push(format!("{trace:032x}"));
    }
    (web, api, ids)
}

async fn kept_traces(moto: &Moto, ids: &[String]) -> BTreeSet<String> {
    let client = aws_sdk_xray::Client::new(&client_config(&moto.endpoint));
    let mut kept = BTreeSet::new();
    for id in ids {
        if !span_ids_in_moto(&client, std::slice::from_ref(id))
            .await
            .is_empty()
        {
            kept.insert(id.clone());
        }
    }
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_behind_an_agent_keep_the_same_traces_as_a_standalone_collector() {
    let Some(moto_path) = moto_server_path("the sampling scale-out test") else {
        return;
    };
    let (moto_standalone, moto_gateways) = (Moto::start(&moto_path), Moto::start(&moto_path));
    let dir = tempfile::tempdir().unwrap();
    let sampling = format!(
        "      per_edge_min: 0\n      max_traces_per_second: 0\n      slow_p99: false\n      \
         rules_file: {}\n",
        rules_file(dir.path(), 0.3)
    );
    let standalone = Collector::start_command_env(
        &["run"],
        &xray_yaml(&moto_standalone.endpoint, &sampling),
        FAKE_AWS_ENV,
    );
    let gateway_yaml = format!(
        "mode: gateway\n{}",
        xray_yaml(&moto_gateways.endpoint, &sampling)
    );
    let gateways: Vec<Collector> = (0..2)
        .map(|_| Collector::start_command_env(&["run"], &gateway_yaml, FAKE_AWS_ENV))
        .collect();
    let agent = Collector::start_with_config(&format!(
        "mode: agent\nexporters:\n  forward:\n    endpoints: [\"{}\", \"{}\"]\n    flush_interval: 50ms\n",
        gateways[0].grpc, gateways[1].grpc
    ));

    let (web, api, ids) = traffic();
    for collector in [&standalone, &agent] {
        post_spans(collector, "web", web.clone()).await;
        post_spans(collector, "api", api.clone()).await;
    }
    let text = wait_metrics_for(
        &standalone,
        "120 traces decided",
        Duration::from_secs(30),
        |t| decided(t) >= 120.0,
    )
    .await;
    let standalone_kept = series_value(&text, &traces_series("kept", "error"))
        + series_value(&text, &traces_series("kept", "rule"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (gateway_kept, busy) = loop {
        let (mut total, mut kept, mut busy) = (0.0, 0.0, 0);
        for gateway in &gateways {
            let text = gateway.metrics_text().await;
            total += decided(&text);
            busy += usize::from(decided(&text) > 0.0);
            kept += series_value(&text, &traces_series("kept", "error"))
                + series_value(&text, &traces_series("kept", "rule"));
        }
        if total >= 120.0 {
            break (kept, busy);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "gateways decided {total} of 120"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(busy, 2, "traces were not spread over both gateways");
    assert_eq!(gateway_kept, standalone_kept);
    // 24 errors plus about 30 % of the other 96.
    assert!(
        (24.0 + 10.0..=24.0 + 50.0).contains(&standalone_kept),
        "{standalone_kept} kept"
    );
    let sent = "tracemap_exporter_sent_total{exporter=\"xray\"}";
    let spans_kept = standalone_kept * 3.0;
    wait_metrics_for(
        &standalone,
        "kept spans sent",
        Duration::from_secs(20),
        |t| series_value(t, sent) >= spans_kept,
    )
    .await;
    let mut gateway_sent = 0.0;
    for _ in 0..100 {
        gateway_sent = 0.0;
        for gateway in &gateways {
            gateway_sent += gateway.metric(sent).await;
        }
        if gateway_sent >= spans_kept {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(gateway_sent, spans_kept);
    let alone = kept_traces(&moto_standalone, &ids).await;
    let behind_agent = kept_traces(&moto_gateways, &ids).await;
    assert_eq!(alone.len() as f64, standalone_kept);
    assert_eq!(alone, behind_agent, "the same traces kept");
}

#[test]
fn check_config_names_the_bad_field_of_a_rules_file() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.json");
    std::fs::write(
        &rules,
        r#"{"SamplingRuleRecords": [{"SamplingRule": {"RuleName": "checkout", "Priority": 1,
            "FixedRate": 0.1, "ReservoirSize": 1, "HTTPMethods": "GET"}}]}"#,
    )
    .unwrap();
    let config = dir.path().join("tracemap.yaml");
    std::fs::write(
        &config,
        format!(
            "exporters:\n  xray:\n    sampling:\n      enabled: true\n      rules_file: {}\n",
            rules.display()
        ),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tracemap"))
        .arg("check-config")
        .arg(&config)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains("exporters.xray.sampling.rules_file"),
        "{stderr}"
    );
    assert!(stderr.contains("rules.json"), "{stderr}");
    assert!(stderr.contains("HTTPMethods"), "{stderr}");
}

/// Kept traces, whatever the policy.
fn kept(text: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("tracemap_sampling_traces_total{decision=\"kept\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_holds_within_ten_percent_over_a_minute() {
    let Some(moto_path) = moto_server_path("the sampling budget test") else {
        return;
    };
    let moto = Moto::start(&moto_path);
    // The defaults but the budget: errors, slow edges and the floor are
    // kept (about 30 % of loadgen's ~340 traces a second), the probability
    // fills the rest up to 200 traces a second.
    let collector = Collector::start_command_env(
        &["run"],
        &xray_yaml(&moto.endpoint, "      max_traces_per_second: 200\n"),
        FAKE_AWS_ENV,
    );
    let endpoint = collector.grpc_url();
    let load = common::spawn_loadgen(&[
        "--endpoint",
        &endpoint,
        "--rate",
        "3000",
        "--batch-size",
        "100",
        "--concurrency",
        "2",
        "--duration",
        "80s",
    ]);
    // A minute once the rates have settled.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let first = collector.metrics_text().await;
    tokio::time::sleep(Duration::from_secs(60)).await;
    let last = collector.metrics_text().await;
    let output =
        tokio::task::spawn_blocking(move || common::wait_loadgen(load, Duration::from_secs(60)))
            .await
            .unwrap();
    assert!(output.status.success(), "loadgen failed");
    let per_second = (kept(&last) - kept(&first)) / 60.0;
    let all = (decided(&last) - decided(&first)) / 60.0;
    let must = ["error", "slow", "floor"]
        .iter()
        .map(|p| {
            series_value(&last, &traces_series("kept", p))
                - series_value(&first, &traces_series("kept", p))
        })
        .sum::<f64>()
        / 60.0;
    let what = format!("{per_second} kept a second, {all} decided, {must} by error, slow or floor");
    assert!(all > 260.0, "the budget was not binding: {what}");
    assert!(must < 180.0, "must-keeps leave the budget no room: {what}");
    assert!((180.0..=220.0).contains(&per_second), "budget 200: {what}");
    eprintln!("budget 200: {what}");
}
