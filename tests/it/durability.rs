//! Durable export queues end to end: the real binary sends to moto through
//! the in-repo fault proxy, which takes the endpoint away while spans keep
//! arriving. With `durability: disk` a span answered 200 is on disk, so an
//! outage, a SIGKILL or a rollout loses none of them, and beyond the disk
//! budget exactly the oldest go, counted.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crate::support::fault_proxy::{Fault, FaultProxy};
use crate::support::moto::{FAKE_AWS_ENV, Moto, client_config, moto_server_path};
use crate::support::xray::{fresh_spans, send_http, span_ids_in_moto, wait_metrics_for};
use crate::support::{Collector, series_value};

const SENT: &str = "tracemap_exporter_sent_total{exporter=\"xray\"}";
const REPLAYED: &str = "tracemap_exporter_replayed_total{exporter=\"xray\"}";
const BUDGET_DROPS: &str =
    "tracemap_exporter_dropped_total{exporter=\"xray\",reason=\"disk_budget\"}";
const DISK_RECORDS: &str = "tracemap_exporter_queue_records{exporter=\"xray\",tier=\"disk\"}";

/// Moto behind a fault proxy, or `None` (skipped) without moto.
async fn moto_behind_proxy(what: &str) -> Option<(Moto, FaultProxy)> {
    let path = moto_server_path(what)?;
    let moto = Moto::start(&path);
    let upstream = moto
        .endpoint
        .trim_start_matches("http://")
        .parse()
        .expect("moto listens on an address");
    let proxy = FaultProxy::start(upstream).await;
    Some((moto, proxy))
}

/// X-Ray through `proxy`, on disk, retrying quickly so recovery is prompt.
fn yaml(proxy: &FaultProxy, extra: &str) -> String {
    format!(
        "exporters:\n  xray:\n    enabled: true\n    region: us-east-1\n    endpoint: http://{}\n    \
         durability: disk\n    flush_interval: 100ms\n    request_timeout: 2s\n    \
         retry_initial_backoff: 50ms\n    retry_max_backoff: 500ms\n{extra}",
        proxy.addr()
    )
}

fn trace_ids(spans: &[tracemap::otlp::kit::Span]) -> Vec<String> {
    let ids: HashSet<String> = spans.iter().map(|s| hex::encode(&s.trace_id)).collect();
    ids.into_iter().collect()
}

/// Every id of `expected` is in moto, once `sent` reached `expected.len()`.
async fn assert_all_in_moto(moto: &Moto, traces: &[String], expected: &HashSet<String>) {
    let client = aws_sdk_xray::Client::new(&client_config(&moto.endpoint));
    let found = span_ids_in_moto(&client, traces).await;
    let missing: Vec<_> = expected.difference(&found).collect();
    assert!(
        missing.is_empty(),
        "{} of {} spans missing in moto, such as {:?}",
        missing.len(),
        expected.len(),
        &missing[..missing.len().min(5)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_60s_xray_outage_at_steady_load_loses_nothing() {
    let Some((moto, proxy)) = moto_behind_proxy("the X-Ray outage test").await else {
        return;
    };
    let collector = Collector::start_command_env(&["run"], &yaml(&proxy, ""), FAKE_AWS_ENV);
    let mut all_spans = Vec::new();
    let mut expected = HashSet::new();
    // 40 spans/s for 70 s: 5 s healthy, 60 s of connection resets, 5 s back.
    let started = Instant::now();
    let mut batch = 0u64;
    while started.elapsed() < Duration::from_secs(70) && batch < 400 {
        let elapsed = started.elapsed();
        let fault = if (5..65).contains(&elapsed.as_secs()) {
            Fault::Reset
        } else {
            Fault::Pass
        };
        proxy.set(fault);
        let (spans, ids) = fresh_spans(10, 1000 + batch);
        expected.extend(ids);
        all_spans.extend(spans.clone());
        send_http(&collector, spans).await;
        batch += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    proxy.set(Fault::Pass);
    let accepted = expected.len() as f64;
    let text = wait_metrics_for(
        &collector,
        "every span sent",
        Duration::from_secs(90),
        |t| series_value(t, SENT) >= accepted,
    )
    .await;
    assert!(proxy.stats().resets > 0, "the outage happened");
    assert_eq!(series_value(&text, SENT), accepted);
    assert_eq!(series_value(&text, BUDGET_DROPS), 0.0);
    assert_all_in_moto(&moto, &trace_ids(&all_spans), &expected).await;
}

/// Spans answered 200 while X-Ray is unreachable, then the collector is
/// stopped by `stop`; a second start on the same data directory, with the
/// endpoint back, delivers every one of them, and its graph does not count
/// the replayed spans again.
async fn restart_delivers_the_backlog(what: &str, stop: impl FnOnce(&mut Collector)) {
    let Some((moto, proxy)) = moto_behind_proxy(what).await else {
        return;
    };
    proxy.set(Fault::Reset);
    let dir = tempfile::tempdir().unwrap();
    let yaml = yaml(&proxy, "");
    let mut first = Collector::start_in_env(dir.path(), &["run"], &yaml, FAKE_AWS_ENV);
    let (spans, ids) = fresh_spans(500, 77);
    for chunk in spans.chunks(50) {
        send_http(&first, chunk.to_vec()).await;
    }
    let text = first.metrics_text().await;
    assert_eq!(series_value(&text, SENT), 0.0, "the endpoint is down");
    assert!(series_value(&text, DISK_RECORDS) > 0.0, "{text}");
    stop(&mut first);

    proxy.set(Fault::Pass);
    let second = Collector::start_in_env(dir.path(), &["run"], &yaml, FAKE_AWS_ENV);
    let text = wait_metrics_for(&second, "the backlog sent", Duration::from_secs(60), |t| {
        series_value(t, SENT) >= 500.0
    })
    .await;
    assert_eq!(series_value(&text, SENT), 500.0);
    assert_eq!(series_value(&text, REPLAYED), 500.0, "{text}");
    assert_eq!(
        series_value(
            &text,
            "traces_service_graph_request_total{client=\"user\",server=\"orders\",connection_type=\"virtual_node\",failed=\"false\"}"
        ),
        0.0,
        "replays never reach the graph"
    );
    let expected: HashSet<String> = ids.into_iter().collect();
    assert_all_in_moto(&moto, &trace_ids(&spans), &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_an_outage_loses_nothing_acknowledged() {
    restart_delivers_the_backlog("the SIGKILL test", |collector| collector.kill9()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_with_the_endpoint_down_loses_nothing() {
    restart_delivers_the_backlog("the rollout test", |collector| {
        collector.sigterm();
        assert!(collector.wait_exit(Duration::from_secs(20)).success());
        let logs = collector.logs();
        let flushed = logs
            .iter()
            .find(|l| l["message"] == "exporter flushed" && l["exporter"] == "xray")
            .unwrap_or_else(|| panic!("no flush report in {logs:#?}"));
        assert_eq!(flushed["lost"].as_u64(), Some(0), "{flushed}");
        assert!(
            logs.iter().any(|l| l["message"]
                .as_str()
                .is_some_and(|m| m.contains("stay in the disk queue"))),
            "{logs:#?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_disk_budget_exactly_the_oldest_are_dropped_and_counted() {
    let Some((moto, proxy)) = moto_behind_proxy("the disk budget test").await else {
        return;
    };
    proxy.set(Fault::Reset);
    // The smallest budget (1 MiB, segments of 128 KiB); no backpressure, so
    // the budget, not the clients, bounds it.
    let yaml = yaml(
        &proxy,
        "    disk_budget: 1048576\n    backpressure: false\n",
    );
    let collector = Collector::start_command_env(&["run"], &yaml, FAKE_AWS_ENV);
    let mut sent_spans = Vec::new();
    let mut order = Vec::new();
    for batch in 0..40u64 {
        let (spans, ids) = fresh_spans(100, 2000 + batch);
        order.extend(ids);
        sent_spans.extend(spans.clone());
        send_http(&collector, spans).await;
    }
    let text = collector.metrics_text().await;
    let dropped = series_value(&text, BUDGET_DROPS);
    assert!(dropped > 0.0, "4,000 documents pass 1 MiB: {text}");
    proxy.set(Fault::Pass);
    let total = order.len() as f64;
    let text = wait_metrics_for(&collector, "the rest sent", Duration::from_secs(60), |t| {
        series_value(t, SENT) + series_value(t, BUDGET_DROPS) >= total
    })
    .await;
    assert_eq!(
        series_value(&text, SENT) + series_value(&text, BUDGET_DROPS),
        total
    );
    let client = aws_sdk_xray::Client::new(&client_config(&moto.endpoint));
    let found = span_ids_in_moto(&client, &trace_ids(&sent_spans)).await;
    // A request's spans reach the queue from both pipeline workers in
    // either order, but each request is answered (so the next one sent)
    // only once both are written: the queue's order is the requests'
    // order, and within the request at the boundary either half may go.
    let kept: Vec<usize> = order
        .chunks(100)
        .map(|request| request.iter().filter(|id| found.contains(*id)).count())
        .collect();
    let boundary = kept.iter().position(|&k| k > 0).expect("some delivered");
    assert!(kept[..boundary].iter().all(|&k| k == 0), "{kept:?}");
    assert!(
        kept[boundary + 1..].iter().all(|&k| k == 100),
        "every request after the boundary delivered whole: {kept:?}"
    );
    let lost = order.len() - kept.iter().sum::<usize>();
    assert_eq!(
        lost as f64,
        series_value(&text, BUDGET_DROPS),
        "the count is exact"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emf_requests_made_during_an_outage_arrive_after_a_rollout() {
    let Some((moto, proxy)) = moto_behind_proxy("the EMF durability test").await else {
        return;
    };
    proxy.set(Fault::Reset);
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "graph:\n  pairing_ttl: 1s\nexporters:\n  cloudwatch:\n    enabled: true\n    mode: emf\n    \
         region: us-east-1\n    endpoint: http://{}\n    cluster_name: durable\n    \
         log_stream: agent-1\n    flush_interval: 1s\n    durability: disk\n    \
         request_timeout: 2s\n    retry_initial_backoff: 50ms\n    retry_max_backoff: 500ms\n",
        proxy.addr()
    );
    let mut first = Collector::start_in_env(dir.path(), &["run"], &yaml, FAKE_AWS_ENV);
    let (spans, _) = fresh_spans(300, 91);
    for chunk in spans.chunks(100) {
        send_http(&first, chunk.to_vec()).await;
    }
    wait_metrics_for(
        &first,
        "300 spans in the graph",
        Duration::from_secs(20),
        |t| series_value(t, "tracemap_pipeline_processed_spans_total") >= 300.0,
    )
    .await;
    // The last flush at SIGTERM puts the current minute on disk; the
    // endpoint is down, so it stays there.
    first.sigterm();
    assert!(first.wait_exit(Duration::from_secs(20)).success());
    assert!(
        first.logs().iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("stay in the disk queue"))),
        "{:#?}",
        first.logs()
    );

    proxy.set(Fault::Pass);
    let second = Collector::start_in_env(dir.path(), &["run"], &yaml, FAKE_AWS_ENV);
    wait_metrics_for(
        &second,
        "the replayed EMF events sent",
        Duration::from_secs(30),
        |t| {
            series_value(t, "tracemap_exporter_replayed_total{exporter=\"emf\"}") > 0.0
                && series_value(
                    t,
                    "tracemap_exporter_queue_records{exporter=\"emf\",tier=\"disk\"}",
                ) == 0.0
                && series_value(t, "tracemap_exporter_sent_total{exporter=\"emf\"}") > 0.0
        },
    )
    .await;
    let logs = aws_sdk_cloudwatchlogs::Client::new(&client_config(&moto.endpoint));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let events = logs
            .get_log_events()
            .log_group_name("/aws/tracemap/durable/metrics")
            .log_stream_name("agent-1")
            .start_from_head(true)
            .send()
            .await
            .map(|out| out.events().to_vec())
            .unwrap_or_default();
        let requests: f64 = events
            .iter()
            .map(|e| serde_json::from_str::<serde_json::Value>(e.message().unwrap()).unwrap())
            .filter(|doc| doc["Service"] == "orders" && doc.get("Operation").is_none())
            .map(|doc| doc["Requests"].as_f64().unwrap())
            .sum();
        if requests >= 300.0 {
            assert_eq!(requests, 300.0, "each span counted once");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "moto holds {requests} of 300 requests"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A size-limited tmpfs mounted at a directory, unmounted on drop: a full
/// or read-only disk without touching the machine's own.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// Mounts one (`options` such as `size=1m` or `size=1m,ro`), or `None`
    /// with a loud skip where this user may not mount (not root).
    fn mount(at: &std::path::Path, options: &str, what: &str) -> Option<Self> {
        std::fs::create_dir_all(at).unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(at)
            .output();
        match out {
            Ok(out) if out.status.success() => Some(Self(at.to_owned())),
            other => {
                eprintln!("SKIPPED: {what}: cannot mount a tmpfs here ({other:?}); it needs root");
                None
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_sends_new_documents_to_memory_and_loses_none() {
    let Some((moto, proxy)) = moto_behind_proxy("the full disk test").await else {
        return;
    };
    proxy.set(Fault::Reset);
    let dir = tempfile::tempdir().unwrap();
    // The data directory is a 1 MiB file system; the budget says 64 MiB.
    let Some(_disk) = Tmpfs::mount(&dir.path().join("data"), "size=1m", "the full disk test")
    else {
        return;
    };
    let yaml = format!(
        "storage:\n  enabled: false\n{}",
        yaml(
            &proxy,
            "    disk_budget: 67108864\n    backpressure: false\n"
        )
    );
    let collector = Collector::start_in_env(dir.path(), &["run"], &yaml, FAKE_AWS_ENV);
    let mut all = Vec::new();
    let mut expected = HashSet::new();
    // About 370 bytes a document: 2.2 MB, twice what the disk holds.
    for batch in 0..60u64 {
        let (spans, ids) = fresh_spans(100, 3000 + batch);
        expected.extend(ids);
        all.extend(spans.clone());
        send_http(&collector, spans).await;
    }
    let text = collector.metrics_text().await;
    assert!(
        series_value(
            &text,
            "tracemap_exporter_disk_errors_total{exporter=\"xray\",reason=\"no_space\"}"
        ) > 0.0,
        "{text}"
    );
    assert!(
        collector.logs().iter().any(|l| l["message"]
            .as_str()
            .is_some_and(|m| m.contains("disk queue cannot be written"))),
        "a clear log line"
    );
    proxy.set(Fault::Pass);
    let total = expected.len() as f64;
    let text = wait_metrics_for(
        &collector,
        "every span sent",
        Duration::from_secs(60),
        |t| series_value(t, SENT) >= total,
    )
    .await;
    assert_eq!(series_value(&text, SENT), total);
    assert_all_in_moto(&moto, &trace_ids(&all), &expected).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_queue_directory_falls_back_to_memory_by_name() {
    let Some((_moto, proxy)) = moto_behind_proxy("the read-only disk test").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let queue = dir.path().join("data/queue/xray");
    let Some(_ro) = Tmpfs::mount(&queue, "size=1m,ro", "the read-only disk test") else {
        return;
    };
    let collector = Collector::start_in_env(dir.path(), &["run"], &yaml(&proxy, ""), FAKE_AWS_ENV);
    let (spans, _) = fresh_spans(50, 4000);
    send_http(&collector, spans).await;
    let text = wait_metrics_for(&collector, "50 spans sent", Duration::from_secs(20), |t| {
        series_value(t, SENT) >= 50.0
    })
    .await;
    assert_eq!(
        series_value(
            &text,
            "tracemap_exporter_disk_errors_total{exporter=\"xray\",reason=\"read_only\"}"
        ),
        1.0,
        "{text}"
    );
    let logs = collector.logs();
    let line = logs
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.contains("disk queue unusable"))
        })
        .unwrap_or_else(|| panic!("no log line in {logs:#?}"));
    assert!(
        line["error"].as_str().unwrap().contains("queue/xray"),
        "names the file: {line}"
    );
}
