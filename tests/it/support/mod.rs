//! Shared test support: the real `tracemap` binary on ephemeral ports,
//! metric scraping, and OTLP request builders.

pub mod fault_proxy;
pub mod moto;
pub mod xray;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use tracemap::otlp::kit::{self, ExportTraceServiceRequest, RequestBuilder, Span, SpanBuilder};

/// A running `tracemap` process; killed on drop.
pub struct Collector {
    child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub api: SocketAddr,
    logs: Arc<Mutex<Vec<serde_json::Value>>>,
    _data_dir: Option<tempfile::TempDir>,
}

impl Collector {
    /// Starts with defaults, every listener on 127.0.0.1 port 0.
    pub fn start() -> Self {
        Self::start_with_config("")
    }

    /// Starts with `yaml` as the config file; listeners still on port 0.
    pub fn start_with_config(yaml: &str) -> Self {
        Self::start_command(&["run"], yaml)
    }

    /// Starts `tracemap <command>`, such as `&["demo", "--duration", "5s"]`,
    /// with `yaml` as the config file and every listener on 127.0.0.1 port 0.
    pub fn start_command(command: &[&str], yaml: &str) -> Self {
        Self::start_command_env(command, yaml, &[])
    }

    /// As [`Collector::start_command`], with extra environment variables.
    pub fn start_command_env(command: &[&str], yaml: &str, env: &[(&str, &str)]) -> Self {
        Self::start_full(command, yaml, env, "127.0.0.1:0".parse().unwrap())
    }

    /// Like [`Collector::start_command`], with OTLP/gRPC on `grpc`: a
    /// collector restarted where its clients expect it.
    pub fn start_listening(command: &[&str], yaml: &str, grpc: SocketAddr) -> Self {
        Self::start_full(command, yaml, &[], grpc)
    }

    fn start_full(command: &[&str], yaml: &str, env: &[(&str, &str)], grpc: SocketAddr) -> Self {
        let data_dir = tempfile::tempdir().expect("temp dir");
        let mut collector = Self::spawn(data_dir.path(), command, yaml, env, grpc);
        collector._data_dir = Some(data_dir);
        collector
    }

    /// Starts `tracemap <command>` with its config file and its data
    /// directory (`data/`) under `dir`, which outlives the process, so a
    /// second start finds what the first wrote.
    pub fn start_in(dir: &std::path::Path, command: &[&str], yaml: &str) -> Self {
        Self::start_in_env(dir, command, yaml, &[])
    }

    /// As [`Collector::start_in`], with extra environment variables.
    pub fn start_in_env(
        dir: &std::path::Path,
        command: &[&str],
        yaml: &str,
        env: &[(&str, &str)],
    ) -> Self {
        Self::spawn(dir, command, yaml, env, "127.0.0.1:0".parse().unwrap())
    }

    fn spawn(
        dir: &std::path::Path,
        command: &[&str],
        yaml: &str,
        env: &[(&str, &str)],
        grpc: SocketAddr,
    ) -> Self {
        let config_path = dir.join("tracemap.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_tracemap"))
            .args(command)
            .arg("--config")
            .arg(&config_path)
            .args(["--grpc-listen", &grpc.to_string()])
            .args(["--http-listen", "127.0.0.1:0"])
            .args(["--api-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--log-format", "json"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn tracemap");
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let log_sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                    eprintln!("tracemap (non-json): {line}");
                    continue;
                };
                if value["message"] == "listening" {
                    let component = value["component"].as_str().unwrap_or("").to_owned();
                    let addr: SocketAddr = value["addr"].as_str().unwrap().parse().unwrap();
                    let _ = addr_tx.send((component, addr));
                }
                log_sink.lock().unwrap().push(value);
            }
        });
        let mut grpc = None;
        let mut http = None;
        let mut api = None;
        let deadline = Instant::now() + Duration::from_secs(20);
        while grpc.is_none() || http.is_none() || api.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let (component, addr) = addr_rx
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("tracemap did not start: {:?}", child.try_wait()));
            match component.as_str() {
                "otlp_grpc" => grpc = Some(addr),
                "otlp_http" => http = Some(addr),
                "api" => api = Some(addr),
                other => panic!("unexpected component {other}"),
            }
        }
        Self {
            child,
            grpc: grpc.unwrap(),
            http: http.unwrap(),
            api: api.unwrap(),
            logs,
            _data_dir: None,
        }
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// The process id, to read `/proc/<pid>/status`.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(self.api_url("/metrics"))
            .await
            .expect("scrape /metrics")
            .text()
            .await
            .unwrap()
    }

    /// Value of one series, such as `tracemap_receiver_accepted_spans_total{protocol="http"}`;
    /// 0 when the series does not exist yet.
    pub async fn metric(&self, series: &str) -> f64 {
        series_value(&self.metrics_text().await, series)
    }

    /// Sends SIGKILL, as a crash or an OOM kill would, and reaps the process.
    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Sends SIGINT, as Ctrl-C does.
    pub fn sigint(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "tracemap did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Structured log lines so far.
    pub fn logs(&self) -> Vec<serde_json::Value> {
        self.logs.lock().unwrap().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `tracemap loadgen` with `args`, its summary piped to stdout.
pub fn spawn_loadgen(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_tracemap"))
        .arg("loadgen")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tracemap loadgen")
}

/// Waits for a loadgen from [`spawn_loadgen`]; kills it if it outlives `timeout`.
pub fn wait_loadgen(mut child: Child, timeout: Duration) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    while child.try_wait().expect("try_wait").is_none() {
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("tracemap loadgen ran longer than {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("loadgen output");
    eprintln!(
        "loadgen stderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Runs `tracemap loadgen` with `args`; kills it if it outlives `timeout`.
pub fn loadgen(args: &[&str], timeout: Duration) -> std::process::Output {
    wait_loadgen(spawn_loadgen(args), timeout)
}

/// A `/proc/<pid>/status` field in kB, such as `VmRSS` or `VmHWM` (peak).
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim_start_matches(':')
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Posts `spans` of `service` to the collector's OTLP/HTTP receiver as
/// protobuf and checks the 200.
pub async fn post_spans(collector: &Collector, service: &str, spans: Vec<Span>) {
    use prost::Message;
    let response = reqwest::Client::new()
        .post(collector.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(request(service, spans).encode_to_vec())
        .send()
        .await
        .expect("post spans");
    assert_eq!(response.status(), 200);
}

/// Value of `series` in Prometheus text, 0 when absent.
pub fn series_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let rest = line.strip_prefix(series)?;
            rest.strip_prefix(' ')?.trim().parse().ok()
        })
        .unwrap_or(0.0)
}

/// A valid span of trace `trace`, with a few realistic attributes.
pub fn span(trace: u128, id: u64, kind: i32) -> Span {
    SpanBuilder::new(&trace.to_be_bytes(), &id.to_be_bytes())
        .name("GET /api/orders")
        .kind(kind)
        .times(1_700_000_000_000_000_000, 1_700_000_000_002_000_000)
        .attributes(vec![
            kit::string("http.request.method", "GET"),
            kit::string("url.path", "/api/orders"),
            kit::string("server.address", "orders.shop.svc.cluster.local"),
        ])
        .build()
}

/// A request holding `spans` from one service.
pub fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    RequestBuilder::new().service(service, spans).build()
}

/// `count` valid spans spread over `count / 4` traces.
pub fn spans(count: usize, seed: u128) -> Vec<Span> {
    (0..count)
        .map(|i| span(seed * 1_000_000 + (i / 4) as u128 + 1, i as u64 + 1, 2))
        .collect()
}

/// Python interpreter with the OpenTelemetry SDK installed, from
/// `TRACEMAP_TEST_PYTHON` (scripts/test.sh sets it). Without it, tests that
/// need it skip loudly, except under CI where a skip is a failure.
pub fn otel_python() -> Option<PathBuf> {
    match std::env::var_os("TRACEMAP_TEST_PYTHON") {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os("CI").is_some() => {
            panic!("TRACEMAP_TEST_PYTHON is not set under CI; run scripts/test.sh")
        }
        None => {
            eprintln!(
                "SKIPPED: TRACEMAP_TEST_PYTHON is not set, so the real OpenTelemetry Python SDK \
                 test did not run; scripts/test.sh installs it"
            );
            None
        }
    }
}

/// Path of a file under `tests/`.
pub fn test_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(rel)
}
