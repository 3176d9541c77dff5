//! `tracemap loadgen`: benchmark load for any OTLP/gRPC endpoint.
//!
//! Before the clock starts, the generator encodes a pool of distinct
//! `ExportTraceServiceRequest`s holding realistic traces: a root SERVER
//! span, CLIENT spans whose span id is the parent of a SERVER span in
//! another service (so a service-graph collector pairs them), database
//! CLIENT spans, ~2% ERROR status, 6–8 attributes and ~350 encoded bytes a
//! span. While running, it only copies those bytes onto the wire: the pool
//! is recycled round after round, and each round XORs a round-specific mask
//! into the high half of every trace id at offsets recorded when the pool
//! was built, so trace ids never repeat across requests or rounds and
//! nothing is re-encoded.
//!
//! Requests go over one HTTP/2 connection through tonic, `--concurrency`
//! in flight, paced by a token bucket when `--rate` is set. UNAVAILABLE is
//! retried after the server's `RetryInfo` delay (or a short exponential
//! backoff); every other error is counted by gRPC code.

use std::collections::BTreeMap;
use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod pool;

use pool::{Pool, PoolSpec};

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::time::Instant;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

use tracemap::exporter::backoff::Backoff;
use tracemap::model::mix64;
use tracemap::otlp::kit::{self, RequestBuilder, Resource, Span, SpanBuilder, SpanKind};
use tracemap::otlp::read::{RECURSION_LIMIT, ReadError, Reader};
use tracemap::otlp::tag::{self, WireType};
use tracemap::receiver::otlp_grpc::EXPORT_PATH;

use crate::cli::draw::Rng;

/// Longest a single export may take before it counts as DEADLINE_EXCEEDED.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the first connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts after the first for a request refused with UNAVAILABLE.
const MAX_RETRIES: u32 = 5;
/// Backoff before the first retry when the server sends no `RetryInfo`.
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Ceiling on any backoff, including one a server asks for.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Retries of UNAVAILABLE, with the exporters' back-off.
const BACKOFF: Backoff = Backoff {
    initial: INITIAL_BACKOFF,
    max: MAX_BACKOFF,
};
/// Token-bucket depth, as time at the configured rate.
const BURST: Duration = Duration::from_millis(100);
/// Largest pool, in spans, so a mistyped flag cannot exhaust memory.
const MAX_POOL_SPANS: usize = 4_000_000;
/// Deepest call chain below the root service.
const MAX_CALL_DEPTH: u32 = 3;

/// Output format of the final summary.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SummaryFormat {
    /// Aligned `name value` lines.
    #[default]
    Text,
    /// One JSON object.
    Json,
}

/// Flags of `tracemap loadgen`.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadgenArgs {
    /// OTLP/gRPC endpoint, such as http://127.0.0.1:4317.
    #[arg(long, value_name = "URL")]
    pub endpoint: String,
    /// Spans per second across all requests; 0 sends as fast as possible.
    #[arg(long, value_name = "SPANS_PER_S", default_value_t = 0)]
    pub rate: u64,
    /// Spans per request.
    #[arg(long, value_name = "N", default_value_t = 512)]
    pub batch_size: usize,
    /// Requests in flight.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub concurrency: usize,
    /// How long to send, such as `30s` or `2m`.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop after this many spans (the last request is shortened to fit).
    #[arg(long, value_name = "N")]
    pub max_spans: Option<u64>,
    /// Services in the generated application (at least 2).
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub services: usize,
    /// Distinct pre-encoded requests; the pool is recycled with fresh trace ids.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub pool: usize,
    /// Compress requests with gzip (costs the generator CPU for every request).
    #[arg(long)]
    pub gzip: bool,
    /// Probability that a call (both of its spans), a database call or a
    /// root span fails.
    #[arg(long, value_name = "P", default_value_t = 0.02)]
    pub error_rate: f64,
    /// Seed of the generated traces; the default differs on every run.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Format of the final summary, printed to stdout.
    #[arg(long, value_enum, default_value_t = SummaryFormat::Text)]
    pub format: SummaryFormat,
}

/// Errors that stop a load run before or while it sends.
#[derive(Debug, thiserror::Error)]
pub enum LoadgenError {
    /// A flag is out of range.
    #[error("invalid --{flag}: {reason}")]
    InvalidArg {
        /// The flag, without dashes.
        flag: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The endpoint is not a usable URL.
    #[error("invalid endpoint {endpoint:?}")]
    Endpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why tonic refused it.
        #[source]
        source: tonic::transport::Error,
    },
    /// The first connection failed.
    #[error("cannot connect to {endpoint}")]
    Connect {
        /// The endpoint as given.
        endpoint: String,
        /// The transport failure.
        #[source]
        source: tonic::transport::Error,
    },
    /// The pool could not be built (a bug in the generator).
    #[error("building the request pool failed: {0}")]
    Pool(String),
    /// A sender task panicked.
    #[error("a sender task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

impl LoadgenArgs {
    fn validate(&self) -> Result<(), LoadgenError> {
        let invalid = |flag, reason: &str| {
            Err(LoadgenError::InvalidArg {
                flag,
                reason: reason.to_owned(),
            })
        };
        if !(1..=100_000).contains(&self.batch_size) {
            return invalid("batch-size", "must be between 1 and 100000");
        }
        if !(1..=4096).contains(&self.concurrency) {
            return invalid("concurrency", "must be between 1 and 4096");
        }
        if self.duration.is_zero() || self.duration > Duration::from_secs(7 * 24 * 3600) {
            return invalid("duration", "must be more than 0 and at most 7 days");
        }
        if self.max_spans == Some(0) {
            return invalid("max-spans", "must be at least 1");
        }
        if !(0.0..=1.0).contains(&self.error_rate) {
            return invalid("error-rate", "must be between 0 and 1");
        }
        if !(2..=1000).contains(&self.services) {
            return invalid("services", "must be between 2 and 1000");
        }
        if self.pool == 0 || self.pool.saturating_mul(self.batch_size) > MAX_POOL_SPANS {
            return invalid(
                "pool",
                &format!("must be at least 1, with pool × batch-size at most {MAX_POOL_SPANS}"),
            );
        }
        Ok(())
    }

    /// Requests the run may send: bounded by `--max-spans` when given.
    fn max_requests(&self) -> u64 {
        self.max_spans
            .map_or(u64::MAX, |spans| spans.div_ceil(self.batch_size as u64))
    }
}

/// What a load run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The endpoint the load went to.
    pub endpoint: String,
    /// Spans the endpoint accepted: spans of OK responses less partial-success rejections.
    pub spans_sent: u64,
    /// Spans the endpoint rejected through OTLP partial success.
    pub spans_rejected: u64,
    /// Requests answered OK.
    pub requests_ok: u64,
    /// Requests given up on: a non-retryable error, retries spent, or the run ended first.
    pub requests_failed: u64,
    /// From the first request to the last answer.
    pub duration: Duration,
    /// `spans_sent` per second of `duration`.
    pub spans_per_sec: f64,
    /// Median latency of OK requests (within 2%).
    pub latency_p50: Duration,
    /// 99th-percentile latency of OK requests (within 2%).
    pub latency_p99: Duration,
    /// Failed attempts by gRPC code name, retried ones included.
    pub errors: BTreeMap<&'static str, u64>,
    /// Average encoded request size in bytes, before compression.
    pub request_bytes: u64,
}

impl Summary {
    /// The summary as text or JSON, ending in a newline.
    pub fn render(&self, format: SummaryFormat) -> String {
        match format {
            SummaryFormat::Text => self.to_string(),
            SummaryFormat::Json => {
                let value = serde_json::json!({
                    "endpoint": self.endpoint,
                    "spans_sent": self.spans_sent,
                    "spans_rejected": self.spans_rejected,
                    "requests_ok": self.requests_ok,
                    "requests_failed": self.requests_failed,
                    "duration_s": self.duration.as_secs_f64(),
                    "spans_per_sec": self.spans_per_sec,
                    "latency_ms": {
                        "p50": self.latency_p50.as_secs_f64() * 1e3,
                        "p99": self.latency_p99.as_secs_f64() * 1e3,
                    },
                    "errors": self.errors,
                    "request_bytes": self.request_bytes,
                });
                format!("{value}\n")
            }
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        writeln!(f, "endpoint         {}", self.endpoint)?;
        writeln!(f, "spans sent       {}", self.spans_sent)?;
        writeln!(f, "spans rejected   {}", self.spans_rejected)?;
        writeln!(f, "requests ok      {}", self.requests_ok)?;
        writeln!(f, "requests failed  {}", self.requests_failed)?;
        writeln!(f, "request bytes    {}", self.request_bytes)?;
        writeln!(f, "duration         {:.2} s", self.duration.as_secs_f64())?;
        writeln!(f, "spans/s          {:.0}", self.spans_per_sec)?;
        writeln!(f, "latency p50      {:.2} ms", ms(self.latency_p50))?;
        writeln!(f, "latency p99      {:.2} ms", ms(self.latency_p99))?;
        let mut errors = String::new();
        for (code, count) in &self.errors {
            let _ = write!(errors, " {code}={count}");
        }
        writeln!(
            f,
            "errors          {}",
            if errors.is_empty() { " none" } else { &errors }
        )
    }
}

/// Runs the load described by `args`, printing progress to stderr once a
/// second, and returns what happened.
pub async fn run(args: LoadgenArgs) -> Result<Summary, LoadgenError> {
    args.validate()?;
    let endpoint_text = args.endpoint.clone();
    let endpoint = endpoint(&args.endpoint)?;
    // Connect first: a wrong endpoint fails before the pool is built.
    let channel = endpoint
        .connect()
        .await
        .map_err(|source| LoadgenError::Connect {
            endpoint: endpoint_text.clone(),
            source,
        })?;
    let mut grpc = tonic::client::Grpc::new(channel);
    if args.gzip {
        grpc = grpc.send_compressed(CompressionEncoding::Gzip);
    }

    let max_requests = args.max_requests();
    let batch = args.batch_size as u64;
    let full_requests = args.max_spans.map_or(u64::MAX, |spans| spans / batch);
    let spec = PoolSpec {
        requests: args
            .pool
            .min(usize::try_from(full_requests).unwrap_or(usize::MAX)),
        batch_size: args.batch_size,
        tail: args
            .max_spans
            .filter(|spans| spans % batch != 0)
            .map(|spans| (spans / batch, (spans % batch) as usize)),
        services: args.services,
        seed: args.seed.unwrap_or_else(time_seed),
        error_probability: args.error_rate,
    };
    let built = std::time::Instant::now();
    let pool = tokio::task::spawn_blocking(move || Pool::generate(&spec))
        .await?
        .map_err(|err| LoadgenError::Pool(err.to_string()))?;
    eprintln!(
        "loadgen: pre-encoded {} requests of {} spans ({:.1} MiB, {:.0} bytes a span) in {:.2} s",
        pool.entries.len(),
        args.batch_size,
        pool.bytes() as f64 / (1024.0 * 1024.0),
        pool.bytes_per_span(),
        built.elapsed().as_secs_f64(),
    );

    let start = Instant::now();
    let deadline = start + args.duration;
    let shared = Arc::new(Shared {
        pool,
        deadline,
        schedule: Mutex::new(Schedule::new(args.rate, max_requests, start)),
        stats: Stats::default(),
    });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        workers.spawn(worker(shared.clone(), grpc.clone()));
    }

    // Workers stop taking requests at the deadline and each attempt is
    // bounded by REQUEST_TIMEOUT, so this bound is a backstop only.
    let hard_stop = deadline + REQUEST_TIMEOUT + Duration::from_secs(2);
    let mut ticker =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_spans = 0;
    loop {
        tokio::select! {
            joined = workers.join_next() => match joined {
                Some(result) => result?,
                None => break,
            },
            _ = ticker.tick() => {
                let spans = shared.stats.spans_ok.load(Ordering::Relaxed);
                eprintln!(
                    "loadgen: {:>4.0} s  sent {spans} spans  {} spans/s  errors {}",
                    start.elapsed().as_secs_f64(),
                    spans - last_spans,
                    shared.stats.error_attempts.load(Ordering::Relaxed),
                );
                last_spans = spans;
            }
            _ = tokio::time::sleep_until(hard_stop) => {
                eprintln!("loadgen: requests still running past the deadline; abandoning them");
                workers.abort_all();
                break;
            }
        }
    }
    let duration = start.elapsed();
    Ok(shared.stats.summary(endpoint_text, duration, &shared.pool))
}

fn endpoint(text: &str) -> Result<Endpoint, LoadgenError> {
    let url = if text.contains("://") {
        text.to_owned()
    } else {
        format!("http://{text}")
    };
    let endpoint = Endpoint::from_shared(url).map_err(|source| LoadgenError::Endpoint {
        endpoint: text.to_owned(),
        source,
    })?;
    if endpoint.uri().scheme_str() != Some("http") {
        return Err(LoadgenError::InvalidArg {
            flag: "endpoint",
            reason: "only plaintext http:// endpoints are supported".into(),
        });
    }
    Ok(endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true))
}

fn time_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// State every sender shares.
struct Shared {
    pool: Pool,
    deadline: Instant,
    schedule: Mutex<Schedule>,
    stats: Stats,
}

/// Counters and the latency histogram, updated by every sender.
#[derive(Default)]
struct Stats {
    spans_ok: AtomicU64,
    spans_rejected: AtomicU64,
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
    error_attempts: AtomicU64,
    errors: Mutex<BTreeMap<&'static str, u64>>,
    latency: Mutex<LatencyHistogram>,
}

impl Stats {
    fn error(&self, code: tonic::Code) {
        self.error_attempts.fetch_add(1, Ordering::Relaxed);
        *self
            .errors
            .lock()
            .expect("errors lock")
            .entry(code_name(code))
            .or_default() += 1;
    }

    fn summary(&self, endpoint: String, duration: Duration, pool: &Pool) -> Summary {
        let spans_sent = self.spans_ok.load(Ordering::Relaxed);
        let latency = self.latency.lock().expect("latency lock");
        Summary {
            endpoint,
            spans_sent,
            spans_rejected: self.spans_rejected.load(Ordering::Relaxed),
            requests_ok: self.requests_ok.load(Ordering::Relaxed),
            requests_failed: self.requests_failed.load(Ordering::Relaxed),
            duration,
            spans_per_sec: spans_sent as f64 / duration.as_secs_f64().max(1e-9),
            latency_p50: latency.quantile(0.50),
            latency_p99: latency.quantile(0.99),
            errors: self.errors.lock().expect("errors lock").clone(),
            request_bytes: pool.bytes() / pool.entries.len().max(1) as u64,
        }
    }
}

/// Hands out request numbers and, with a rate, their send times.
///
/// The rate is a token bucket in its GCRA form: `tat` is when the bucket
/// would next be empty; a request of `n` spans may go at `tat - BURST`
/// and pushes `tat` on by `n / rate`.
struct Schedule {
    next_seq: u64,
    max_requests: u64,
    rate: u64,
    tat: Instant,
}

impl Schedule {
    fn new(rate: u64, max_requests: u64, start: Instant) -> Self {
        Self {
            next_seq: 0,
            max_requests,
            rate,
            tat: start,
        }
    }

    /// The next request number and when to send it; `None` once the run's
    /// requests are all handed out. `spans` gives a request's span count.
    fn next(&mut self, now: Instant, spans: impl Fn(u64) -> u32) -> Option<(u64, Instant)> {
        if self.next_seq >= self.max_requests {
            return None;
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.rate == 0 {
            return Some((seq, now));
        }
        let tolerance = BURST.min(self.tat.saturating_duration_since(now));
        let send_at = (self.tat - tolerance).max(now);
        let cost = Duration::from_secs_f64(f64::from(spans(seq)) / self.rate as f64);
        self.tat = self.tat.max(now) + cost;
        Some((seq, send_at))
    }
}

async fn worker(shared: Arc<Shared>, mut grpc: tonic::client::Grpc<Channel>) {
    // Bounded by the schedule's request count and by the deadline.
    loop {
        let now = Instant::now();
        if now >= shared.deadline {
            return;
        }
        let next = shared
            .schedule
            .lock()
            .expect("schedule lock")
            .next(now, |seq| shared.pool.entry(seq).0.spans);
        let Some((seq, send_at)) = next else {
            return;
        };
        if send_at >= shared.deadline {
            return;
        }
        tokio::time::sleep_until(send_at).await;
        send(&shared, &mut grpc, seq).await;
    }
}

/// Sends request `seq`, retrying UNAVAILABLE, and records the outcome.
async fn send(shared: &Shared, grpc: &mut tonic::client::Grpc<Channel>, seq: u64) {
    let stats = &shared.stats;
    let (entry, mask) = shared.pool.entry(seq);
    let path = http::uri::PathAndQuery::from_static(EXPORT_PATH);
    for attempt in 0..=MAX_RETRIES {
        let outgoing = Outgoing {
            bytes: entry.bytes.clone(),
            trace_id_offsets: entry.trace_id_offsets.clone(),
            mask,
        };
        let began = Instant::now();
        let call = async {
            grpc.ready().await.map_err(|err| {
                tonic::Status::unavailable(format!("connection not ready: {err}"))
            })?;
            grpc.unary(tonic::Request::new(outgoing), path.clone(), ExportCodec)
                .await
        };
        let status = match tokio::time::timeout(REQUEST_TIMEOUT, call).await {
            Ok(Ok(response)) => {
                stats
                    .latency
                    .lock()
                    .expect("latency lock")
                    .record(began.elapsed());
                let rejected = response.into_inner().partial_success.map_or(0, |p| {
                    p.rejected_spans.clamp(0, i64::from(entry.spans)) as u64
                });
                stats
                    .spans_ok
                    .fetch_add(u64::from(entry.spans) - rejected, Ordering::Relaxed);
                stats.spans_rejected.fetch_add(rejected, Ordering::Relaxed);
                stats.requests_ok.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Ok(Err(status)) => status,
            Err(_elapsed) => {
                tonic::Status::deadline_exceeded("no answer within the request timeout")
            }
        };
        stats.error(status.code());
        if status.code() != tonic::Code::Unavailable || attempt == MAX_RETRIES {
            break;
        }
        let delay = retry_delay(&status, attempt);
        if Instant::now() + delay >= shared.deadline {
            break;
        }
        tokio::time::sleep(delay).await;
    }
    stats.requests_failed.fetch_add(1, Ordering::Relaxed);
}

/// The server's `RetryInfo` delay, else the collector's own back-off after
/// failed attempt `attempt` (0 for the first); never above `MAX_BACKOFF`.
fn retry_delay(status: &tonic::Status, attempt: u32) -> Duration {
    let retry_info = status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay);
    BACKOFF.delay(attempt + 1, retry_info)
}

fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Request latencies in microseconds, in log-linear buckets: 64 per power
/// of two, so a quantile is within 1/64 of the true value.
struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

const SUB_BITS: u32 = 6;
const SUB_BUCKETS: u64 = 1 << SUB_BITS;
/// Latencies are capped at 2^40 µs (about 12 days).
const MAX_EXPONENT: u32 = 40;

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: vec![0; ((MAX_EXPONENT - SUB_BITS + 2) as u64 * SUB_BUCKETS) as usize],
            total: 0,
        }
    }
}

impl LatencyHistogram {
    fn index(micros: u64) -> usize {
        let micros = micros.min((1 << MAX_EXPONENT) - 1);
        if micros < SUB_BUCKETS {
            return micros as usize;
        }
        let exponent = 63 - micros.leading_zeros();
        let shift = exponent - SUB_BITS;
        let sub = (micros >> shift) - SUB_BUCKETS;
        ((u64::from(shift) + 1) * SUB_BUCKETS + sub) as usize
    }

    /// Upper bound of bucket `index`, in microseconds.
    fn upper(index: usize) -> u64 {
        let index = index as u64;
        if index < SUB_BUCKETS {
            return index;
        }
        let shift = index / SUB_BUCKETS - 1;
        let sub = index % SUB_BUCKETS;
        ((SUB_BUCKETS + sub + 1) << shift) - 1
    }

    fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.counts[Self::index(micros)] += 1;
        self.total += 1;
    }

    fn quantile(&self, q: f64) -> Duration {
        if self.total == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Duration::from_micros(Self::upper(index));
            }
        }
        Duration::from_micros(Self::upper(self.counts.len() - 1))
    }
}

/// One pre-encoded request as it goes out: the pool bytes and this
/// round's trace-id mask.
struct Outgoing {
    bytes: Bytes,
    trace_id_offsets: Arc<[u32]>,
    mask: u64,
}

/// Writes pre-encoded requests and decodes export responses.
struct ExportCodec;

impl Codec for ExportCodec {
    type Encode = Outgoing;
    type Decode = ExportTraceServiceResponse;
    type Encoder = ExportCodec;
    type Decoder = ExportCodec;

    fn encoder(&mut self) -> ExportCodec {
        ExportCodec
    }

    fn decoder(&mut self) -> ExportCodec {
        ExportCodec
    }
}

impl Encoder for ExportCodec {
    type Item = Outgoing;
    type Error = tonic::Status;

    fn encode(&mut self, item: Outgoing, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.reserve(item.bytes.len());
        write_masked(&item.bytes, &item.trace_id_offsets, item.mask, dst);
        Ok(())
    }
}

impl Decoder for ExportCodec {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;

    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|err| tonic::Status::internal(format!("invalid export response: {err}")))
    }
}

/// Copies `bytes` to `dst`, XORing `mask` into the eight bytes at each
/// offset (the high half of a trace id): one pass, no re-encoding.
fn write_masked(bytes: &[u8], offsets: &[u32], mask: u64, dst: &mut impl BufMut) {
    if mask == 0 {
        dst.put_slice(bytes);
        return;
    }
    let mask = mask.to_be_bytes();
    let mut pos = 0;
    for &offset in offsets {
        let offset = offset as usize;
        dst.put_slice(&bytes[pos..offset]);
        let mut high = [0; 8];
        for (out, (byte, m)) in high
            .iter_mut()
            .zip(bytes[offset..offset + 8].iter().zip(mask))
        {
            *out = byte ^ m;
        }
        dst.put_slice(&high);
        pos = offset + 8;
    }
    dst.put_slice(&bytes[pos..]);
}

/// Mask for round `round` of the pool: 0 for the first, then distinct and
/// non-zero, since `mix64` is a bijection with `mix64(0) == 0`.
fn round_mask(round: u64) -> u64 {
    mix64(round)
}

#[cfg(test)]
mod tests;
