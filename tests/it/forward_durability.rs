//! Agent → gateway with `durability: disk`, end to end: the real binary as
//! agent and as gateway, the in-repo fault proxy between them taking the
//! gateway away while spans keep arriving. A span the agent answered 200
//! is in its disk queue, so an outage or a SIGKILL of the agent loses
//! none of them: every one reaches the gateway once the path is back.

use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::xray::{fresh_spans, send_http, wait_metrics_for};
use crate::support::{Collector, series_value};

const AGENT_ACCEPTED: &str = "tracemap_receiver_accepted_spans_total{protocol=\"http\"}";
const GATEWAY_ACCEPTED: &str = "tracemap_receiver_accepted_spans_total{protocol=\"grpc\"}";
const SENT: &str = "tracemap_exporter_sent_total{exporter=\"forward\"}";
const REPLAYED: &str = "tracemap_exporter_replayed_total{exporter=\"forward\"}";
const DISK_RECORDS: &str = "tracemap_exporter_queue_records{exporter=\"forward\",tier=\"disk\"}";
const DROP_REASONS: [&str; 5] = [
    "retries_exhausted",
    "rejected",
    "too_large",
    "shutdown",
    "disk_budget",
];

/// A gateway, and the fault proxy agents reach it through.
async fn gateway_behind_proxy() -> (Collector, FaultProxy) {
    let gateway = Collector::start_with_config("mode: gateway\n");
    let proxy = FaultProxy::start(gateway.grpc).await;
    (gateway, proxy)
}

/// An agent forwarding through `proxy`, on disk, with short back-offs so
/// recovery is prompt.
fn agent_yaml(proxy: &FaultProxy) -> String {
    format!(
        "mode: agent\nexporters:\n  forward:\n    endpoints: [\"{}\"]\n    durability: disk\n    \
         flush_interval: 50ms\n    initial_backoff: 50ms\n    max_backoff: 500ms\n    \
         timeout: 2s\n    connect_timeout: 500ms\n",
        proxy.addr()
    )
}

fn assert_no_drops(text: &str) {
    for reason in DROP_REASONS {
        let series =
            format!("tracemap_exporter_dropped_total{{exporter=\"forward\",reason=\"{reason}\"}}");
        assert_eq!(series_value(text, &series), 0.0, "{series}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60s_gateway_outage_at_steady_load_loses_nothing() {
    let (gateway, proxy) = gateway_behind_proxy().await;
    let agent = Collector::start_with_config(&agent_yaml(&proxy));
    // 40 spans/s for 70 s: 5 s healthy, 60 s of connection resets, 5 s back.
    let started = Instant::now();
    let mut sent = 0usize;
    let mut batch = 0u64;
    while started.elapsed() < Duration::from_secs(70) && batch < 400 {
        let fault = if (5..65).contains(&started.elapsed().as_secs()) {
            Fault::Reset
        } else {
            Fault::Pass
        };
        proxy.set(fault);
        let (spans, _) = fresh_spans(10, 5000 + batch);
        sent += spans.len();
        send_http(&agent, spans).await;
        batch += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    proxy.set(Fault::Pass);
    let total = sent as f64;
    let text = wait_metrics_for(&agent, "every span sent", Duration::from_secs(60), |t| {
        series_value(t, SENT) >= total && series_value(t, DISK_RECORDS) == 0.0
    })
    .await;
    assert!(proxy.stats().resets > 0, "the outage happened");
    assert_eq!(series_value(&text, AGENT_ACCEPTED), total);
    assert_eq!(series_value(&text, SENT), total);
    assert_no_drops(&text);
    let arrived = wait_metrics_for(
        &gateway,
        "every span at the gateway",
        Duration::from_secs(10),
        |t| series_value(t, GATEWAY_ACCEPTED) >= total,
    )
    .await;
    eprintln!(
        "forward outage: {sent} spans accepted by the agent, {} at the gateway, in {:?}",
        series_value(&arrived, GATEWAY_ACCEPTED),
        started.elapsed()
    );
    assert_eq!(series_value(&arrived, GATEWAY_ACCEPTED), total, "0 lost");
}

/// Spans the agent answered 200 while the gateway was unreachable, then
/// the agent is stopped by `stop`; a second start on the same data
/// directory, with the path back, delivers every one of them, replayed.
async fn restart_delivers_the_backlog(what: &str, stop: impl FnOnce(&mut Collector)) {
    let (gateway, proxy) = gateway_behind_proxy().await;
    proxy.set(Fault::Reset);
    let dir = tempfile::tempdir().unwrap();
    let yaml = agent_yaml(&proxy);
    let mut first = Collector::start_in_env(dir.path(), &["run"], &yaml, &[]);
    let (spans, _) = fresh_spans(500, 88);
    for chunk in spans.chunks(50) {
        send_http(&first, chunk.to_vec()).await;
    }
    let text = first.metrics_text().await;
    assert_eq!(series_value(&text, AGENT_ACCEPTED), 500.0);
    assert_eq!(series_value(&text, SENT), 0.0, "the gateway is unreachable");
    assert!(series_value(&text, DISK_RECORDS) > 0.0, "{text}");
    stop(&mut first);

    proxy.set(Fault::Pass);
    let started = Instant::now();
    let second = Collector::start_in_env(dir.path(), &["run"], &yaml, &[]);
    let text = wait_metrics_for(&second, "the backlog sent", Duration::from_secs(60), |t| {
        series_value(t, SENT) >= 500.0 && series_value(t, DISK_RECORDS) == 0.0
    })
    .await;
    assert_eq!(series_value(&text, SENT), 500.0);
    assert_eq!(series_value(&text, REPLAYED), 500.0, "{text}");
    assert_no_drops(&text);
    let arrived = wait_metrics_for(
        &gateway,
        "the backlog at the gateway",
        Duration::from_secs(10),
        |t| series_value(t, GATEWAY_ACCEPTED) >= 500.0,
    )
    .await;
    eprintln!(
        "forward {what}: 500 acknowledged, {} replayed, {} at the gateway {:?} after the restart",
        series_value(&text, REPLAYED),
        series_value(&arrived, GATEWAY_ACCEPTED),
        started.elapsed()
    );
    assert_eq!(series_value(&arrived, GATEWAY_ACCEPTED), 500.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_agent_during_an_outage_loses_nothing_acknowledged() {
    restart_delivers_the_backlog("sigkill", Collector::kill9).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_rollout_with_the_gateway_down_loses_nothing() {
    restart_delivers_the_backlog("rollout", |agent| {
        agent.sigterm();
        let began = Instant::now();
        assert!(agent.wait_exit(Duration::from_secs(20)).success());
        let logs = agent.logs();
        let kept = logs
            .iter()
            .find(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("stay in the disk queues"))
            })
            .unwrap_or_else(|| panic!("no report of the kept spans in {logs:#?}"));
        assert_eq!(kept["spans"].as_u64(), Some(500), "{kept}");
        assert!(
            !logs.iter().any(|l| l["message"]
                .as_str()
                .is_some_and(|m| m.contains("dropped at shutdown"))),
            "{logs:#?}"
        );
        eprintln!(
            "forward rollout: the agent stopped in {:?}",
            began.elapsed()
        );
    })
    .await;
}
