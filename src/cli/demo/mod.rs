//! `tracemap demo`: ten simulated shop services, each instrumented with the
//! OpenTelemetry Rust SDK, send traces over OTLP/gRPC to the collector this
//! process runs, so a new user sees a service map within seconds.
//!
//! [`run`] is the workload only: the command line starts the collector the
//! same way `tracemap run` does, runs this beside it, and shuts both down.

mod otel;
mod workload;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use otel::{Fleet, Stats, StatsSnapshot};
use tracemap::app::BoundAddrs;
use tracemap::config::{LogFormat, ValidConfig};
use workload::{Planner, Service};

/// How often the generator wakes to start the traces that are due.
const TICK: Duration = Duration::from_millis(100);
/// How often the progress line is refreshed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Budget for one graph API request of the progress line.
const GRAPH_TIMEOUT: Duration = Duration::from_millis(800);
/// Budget for the simulated services to flush their last spans; within the
/// collector's own shutdown budget, which starts after.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of the synthetic workload.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Stop after this long; `None` runs until the stop token is cancelled.
    pub duration: Option<Duration>,
    /// User requests (traces) started per second.
    pub traces_per_second: f64,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            duration: None,
            traces_per_second: 30.0,
        }
    }
}

/// Why the demo workload could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The simulated services export OTLP/gRPC, which is switched off.
    #[error("the demo sends otlp/grpc, but receivers.otlp.grpc is disabled in the config")]
    GrpcDisabled,
    /// A service's OTLP exporter could not be built.
    #[error("cannot build the otlp exporter of the {service} service")]
    Exporter {
        /// The simulated service.
        service: &'static str,
        /// The exporter's error.
        #[source]
        source: opentelemetry_otlp::ExporterBuildError,
    },
}

/// What the workload did, once its services flushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DemoReport {
    /// User requests simulated.
    pub traces: u64,
    /// Spans the simulated services ended.
    pub spans: u64,
    /// Spans the collector acknowledged.
    pub exported: u64,
    /// Spans whose export failed after retries.
    pub failed: u64,
}

/// Runs the workload against a started collector at `addrs` until
/// `options.duration` passes or `stop` is cancelled, then flushes every
/// simulated service. Call before the collector's shutdown, so that the
/// last spans are still received.
pub async fn run(
    config: &ValidConfig,
    addrs: BoundAddrs,
    options: &DemoOptions,
    stop: CancellationToken,
) -> Result<DemoReport, DemoError> {
    let grpc = connectable(addrs.grpc.ok_or(DemoError::GrpcDisabled)?);
    let api = connectable(addrs.api);
    println!(
        "{}",
        banner(grpc, addrs.http.map(connectable), api, options)
    );

    let stats = Arc::new(Stats::default());
    let fleet = Fleet::otlp(&format!("http://{grpc}"), &stats)?;
    let done = stop.child_token();
    let until = options.duration.map(|d| Instant::now() + d);
    let style = ProgressStyle::for_output(config.log.format);
    tokio::join!(
        generate(&fleet, &stats, options.traces_per_second, until, &done),
        progress(&stats, api, style, &done),
    );

    // Blocking: each provider waits for its export thread's last request.
    let flushed = tokio::task::spawn_blocking(move || fleet.shutdown(FLUSH_TIMEOUT)).await;
    match flushed {
        Ok(failures) => {
            for (service, err) in failures {
                tracing::warn!(service = service.name(), error = %err, "demo service did not flush");
            }
        }
        Err(err) => tracing::error!(error = %err, "demo flush task failed"),
    }
    let last = stats.snapshot();
    style.finish(last);
    Ok(DemoReport {
        traces: last.traces,
        spans: last.spans,
        exported: last.exported,
        failed: last.failed,
    })
}

/// Starts the traces that are due every tick, at a steady rate, until
/// `until` or `done`; then cancels `done` so the progress line stops too.
async fn generate(
    fleet: &Fleet,
    stats: &Stats,
    traces_per_second: f64,
    until: Option<Instant>,
    done: &CancellationToken,
) {
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut planner = Planner::new(seed);
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let expiry = async {
        match until {
            Some(at) => tokio::time::sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(expiry);
    let started = Instant::now();
    // After a stall, catch up by at most one second of traffic.
    let max_per_tick = traces_per_second.ceil().max(1.0) as u64;
    let mut due_so_far = 0u64;
    loop {
        tokio::select! {
            () = done.cancelled() => break,
            () = &mut expiry => break,
            _ = ticker.tick() => {}
        }
        let due = (started.elapsed().as_secs_f64() * traces_per_second) as u64;
        for _ in 0..due.saturating_sub(due_so_far).min(max_per_tick) {
            let trace = planner.trace();
            // Requests are reported once finished, so the whole trace lies
            // in the past, ending now.
            let start = SystemTime::now() - trace.extent();
            let spans = fleet.emit(&trace, start);
            stats.traces.fetch_add(1, Ordering::Relaxed);
            stats.spans.fetch_add(spans, Ordering::Relaxed);
        }
        due_so_far = due;
    }
    done.cancel();
}

/// Where the progress line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProgressStyle {
    /// One line rewritten in place, on a terminal.
    Live,
    /// A line per update, when stderr is a file or pipe.
    Lines,
    /// A structured log event, so JSON logs stay parseable.
    Log,
}

impl ProgressStyle {
    fn for_output(format: LogFormat) -> Self {
        match format {
            LogFormat::Json => Self::Log,
            LogFormat::Text if std::io::IsTerminal::is_terminal(&std::io::stderr()) => Self::Live,
            LogFormat::Text => Self::Lines,
        }
    }

    fn show(self, stats: StatsSnapshot, edges: Option<usize>) {
        match self {
            // Carriage return and erase-line: redraw without scrolling.
            Self::Live => eprint!("\r\x1b[2K{}", progress_line(stats, edges)),
            Self::Lines => eprintln!("{}", progress_line(stats, edges)),
            Self::Log => tracing::info!(
                traces = stats.traces,
                spans = stats.spans,
                exported = stats.exported,
                failed = stats.failed,
                edges,
                "demo progress"
            ),
        }
    }

    fn finish(self, stats: StatsSnapshot) {
        let lost = stats.spans.saturating_sub(stats.exported);
        match self {
            Self::Live | Self::Lines => {
                if self == Self::Live {
                    eprintln!();
                }
                eprintln!(
                    "demo stopped: {} traces, {} spans sent, {} acknowledged by the collector, {} not delivered",
                    stats.traces, stats.spans, stats.exported, lost
                );
            }
            Self::Log => tracing::info!(
                traces = stats.traces,
                spans = stats.spans,
                exported = stats.exported,
                failed = stats.failed,
                lost,
                "demo stopped"
            ),
        }
    }
}

/// Refreshes the progress line every second until `done`.
async fn progress(stats: &Stats, api: SocketAddr, style: ProgressStyle, done: &CancellationToken) {
    let client = reqwest::Client::builder()
        .timeout(GRAPH_TIMEOUT)
        .build()
        .ok();
    let url = format!("http://{api}/api/v1/graph?window=5m");
    let mut ticker = tokio::time::interval_at(Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = done.cancelled() => break,
            _ = ticker.tick() => {}
        }
        let edges = match &client {
            Some(client) => tokio::select! {
                () = done.cancelled() => break,
                edges = edge_count(client, &url) => edges,
            },
            None => None,
        };
        style.show(stats.snapshot(), edges);
    }
}

/// Edges in the graph API's answer; `None` until that API answers with JSON.
async fn edge_count(client: &reqwest::Client, url: &str) -> Option<usize> {
    let response = client.get(url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body: serde_json::Value = response.json().await.ok()?;
    edges_in(&body)
}

fn edges_in(graph: &serde_json::Value) -> Option<usize> {
    graph.get("edges")?.as_array().map(Vec::len)
}

fn progress_line(stats: StatsSnapshot, edges: Option<usize>) -> String {
    let mut line = format!(
        "demo: {} traces, {} spans sent, {} acknowledged",
        stats.traces, stats.spans, stats.exported
    );
    if stats.failed > 0 {
        line.push_str(&format!(", {} failed", stats.failed));
    }
    if let Some(edges) = edges {
        line.push_str(&format!(", {edges} edges in the map"));
    }
    line
}

/// Where to look, printed once at start.
fn banner(
    grpc: SocketAddr,
    http: Option<SocketAddr>,
    api: SocketAddr,
    options: &DemoOptions,
) -> String {
    let stops = match options.duration {
        Some(d) => format!("for {}", humantime::format_duration(d)),
        None => "until Ctrl-C".to_owned(),
    };
    let names: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
    let mut text = format!(
        "tracemap demo: {} simulated services ({}) send ~{} traces/s {stops}\n",
        names.len(),
        names.join(", "),
        options.traces_per_second,
    );
    text.push_str(&format!("  web map     http://{api}/\n"));
    text.push_str(&format!("  OTLP/gRPC   http://{grpc}\n"));
    if let Some(http) = http {
        text.push_str(&format!("  OTLP/HTTP   http://{http}/v1/traces\n"));
    }
    text.push_str(&format!(
        "  graph       http://{api}/api/v1/graph?window=5m\n"
    ));
    text.push_str(&format!("  metrics     http://{api}/metrics\n"));
    text.push_str(&format!("  terminal    tracemap map --url http://{api}"));
    text
}

/// An address a local client can dial: a wildcard bind becomes loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_dialled_on_loopback() {
        let any: SocketAddr = "0.0.0.0:4317".parse().unwrap();
        assert_eq!(connectable(any), "127.0.0.1:4317".parse().unwrap());
        let any6: SocketAddr = "[::]:4318".parse().unwrap();
        assert_eq!(connectable(any6), "[::1]:4318".parse().unwrap());
        let given: SocketAddr = "10.1.2.3:8080".parse().unwrap();
        assert_eq!(connectable(given), given);
    }

    #[test]
    fn edges_are_counted_only_from_a_graph_answer() {
        let graph = serde_json::json!({"nodes": [], "edges": [{"source": "a"}, {"source": "b"}]});
        assert_eq!(edges_in(&graph), Some(2));
        assert_eq!(edges_in(&serde_json::json!({"error": "not found"})), None);
        assert_eq!(edges_in(&serde_json::json!([])), None);
    }

    #[test]
    fn progress_line_shows_edges_when_known() {
        let stats = StatsSnapshot {
            traces: 10,
            spans: 120,
            exported: 100,
            failed: 0,
        };
        assert_eq!(
            progress_line(stats, None),
            "demo: 10 traces, 120 spans sent, 100 acknowledged"
        );
        assert!(progress_line(stats, Some(7)).ends_with(", 7 edges in the map"));
    }

    #[test]
    fn banner_names_every_place_to_look() {
        let api: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let text = banner(
            "127.0.0.1:4317".parse().unwrap(),
            Some("127.0.0.1:4318".parse().unwrap()),
            api,
            &DemoOptions::default(),
        );
        assert!(
            text.contains("  web map     http://127.0.0.1:8080/\n"),
            "the page's address missing from\n{text}"
        );
        for needle in [
            "http://127.0.0.1:4317",
            "http://127.0.0.1:4318/v1/traces",
            "http://127.0.0.1:8080/api/v1/graph?window=5m",
            "http://127.0.0.1:8080/metrics",
            "tracemap map --url http://127.0.0.1:8080",
            "until Ctrl-C",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
    }
}
