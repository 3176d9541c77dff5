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

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tokio::time::Instant;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt;

use tracemap::otlp::kit::{self, RequestBuilder, Resource, Span, SpanBuilder, SpanKind};
use tracemap::otlp::read::{RECURSION_LIMIT, ReadError, Reader};
use tracemap::otlp::tag::{self, WireType};
use tracemap::receiver::otlp_grpc::EXPORT_PATH;

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
/// Token-bucket depth, as time at the configured rate.
const BURST: Duration = Duration::from_millis(100);
/// Largest pool, in spans, so a mistyped flag cannot exhaust memory.
const MAX_POOL_SPANS: usize = 4_000_000;
/// Probability that a call (both of its spans) or a root span fails.
const ERROR_PROBABILITY: f64 = 0.02;
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

/// The server's `RetryInfo` delay, else exponential backoff; never above `MAX_BACKOFF`.
fn retry_delay(status: &tonic::Status, attempt: u32) -> Duration {
    status
        .get_details_retry_info()
        .and_then(|info| info.retry_delay)
        .unwrap_or_else(|| INITIAL_BACKOFF.saturating_mul(1 << attempt.min(16)))
        .min(MAX_BACKOFF)
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

/// The SplitMix64 finalizer: a bijection on u64 that scatters bits.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// SplitMix64: fast and reproducible; the generator needs no more.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    /// Uniform in `0..n`, for `n > 0`.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn chance(&mut self, p: f64) -> bool {
        ((self.next_u64() >> 11) as f64) < p * (1u64 << 53) as f64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// What the pool holds.
struct PoolSpec {
    /// Full-size requests.
    requests: usize,
    batch_size: usize,
    /// A shorter last request for `--max-spans`: its request number and spans.
    tail: Option<(u64, usize)>,
    services: usize,
    seed: u64,
}

/// One pre-encoded request.
struct Entry {
    bytes: Bytes,
    spans: u32,
    /// Where each span's trace id starts in `bytes`, in order.
    trace_id_offsets: Arc<[u32]>,
}

/// The pre-encoded requests a run recycles.
struct Pool {
    entries: Vec<Entry>,
    /// The last, shorter request of a `--max-spans` run, and its number.
    tail: Option<(u64, Entry)>,
}

impl Pool {
    fn generate(spec: &PoolSpec) -> Result<Self, FramingError> {
        let app = App::new(spec.services);
        let mut traces = TraceSource {
            rng: Rng(spec.seed),
            low_seed: mix64(spec.seed ^ 0x5EED),
            next_trace: 0,
            // A minute back, so no trace of the pool starts in the future.
            base_nanos: time_seed().saturating_sub(60_000_000_000),
        };
        let encode = |traces: &mut TraceSource, spans: usize| {
            let request = traces.request(&app, spans);
            let bytes = request.encode_to_vec();
            let trace_id_offsets = trace_id_offsets(&bytes)?;
            Ok::<_, FramingError>(Entry {
                bytes: bytes.into(),
                spans: spans as u32,
                trace_id_offsets: trace_id_offsets.into(),
            })
        };
        let mut entries = Vec::with_capacity(spec.requests);
        for _ in 0..spec.requests {
            entries.push(encode(&mut traces, spec.batch_size)?);
        }
        let tail = match spec.tail {
            Some((seq, spans)) => Some((seq, encode(&mut traces, spans)?)),
            None => None,
        };
        Ok(Self { entries, tail })
    }

    /// The entry for request `seq` and its round's trace-id mask.
    fn entry(&self, seq: u64) -> (&Entry, u64) {
        if let Some((tail_seq, tail)) = &self.tail
            && (seq == *tail_seq || self.entries.is_empty())
        {
            return (tail, 0);
        }
        let len = self.entries.len() as u64;
        (&self.entries[(seq % len) as usize], round_mask(seq / len))
    }

    fn bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.bytes.len() as u64).sum()
    }

    fn bytes_per_span(&self) -> f64 {
        let spans: u64 = self.entries.iter().map(|e| u64::from(e.spans)).sum();
        self.bytes() as f64 / spans.max(1) as f64
    }
}

/// The generator's own encoding is not what the offset walk expects (a bug).
#[derive(Debug, thiserror::Error)]
enum FramingError {
    #[error("bad framing: {0}")]
    Wire(#[from] ReadError),
    #[error("{0}")]
    Shape(&'static str),
}

/// Offsets of the high eight bytes of every span's trace id in an encoded
/// `ExportTraceServiceRequest`, found by walking the protobuf framing:
/// request.resource_spans → scope_spans → spans → trace_id.
fn trace_id_offsets(buf: &[u8]) -> Result<Vec<u32>, FramingError> {
    let mut offsets = Vec::new();
    for resource_spans in fields(Reader::new(buf), tag::REQUEST_RESOURCE_SPANS)? {
        for scope_spans in fields(resource_spans, tag::RESOURCE_SPANS_SCOPE_SPANS)? {
            for span in fields(scope_spans, tag::SCOPE_SPANS_SPANS)? {
                for trace_id in fields(span, tag::SPAN_TRACE_ID)? {
                    if trace_id.rest().len() != 16 {
                        return Err(FramingError::Shape("trace id is not 16 bytes"));
                    }
                    let offset = u32::try_from(trace_id.pos())
                        .map_err(|_| FramingError::Shape("request over 4 GiB"))?;
                    offsets.push(offset);
                }
            }
        }
    }
    Ok(offsets)
}

/// The length-delimited fields numbered `wanted` in `message`, as readers
/// whose offsets are those of the whole request.
fn fields(mut message: Reader<'_>, wanted: u32) -> Result<Vec<Reader<'_>>, ReadError> {
    let mut found = Vec::new();
    while let Some((_, field, wire_type)) = message.next_key()? {
        if field == wanted && wire_type == WireType::LengthDelimited {
            found.push(message.nested("loadgen field", wire_type)?);
        } else {
            message.skip(field, wire_type, RECURSION_LIMIT)?;
        }
    }
    Ok(found)
}

/// A database a service owns.
struct Database {
    system: &'static str,
    namespace: String,
    address: String,
    port: i64,
}

/// A service of the generated application.
struct Service {
    name: String,
    address: String,
    resource: Resource,
    database: Option<Database>,
}

/// The generated application: service 0 is the entry point and service `i`
/// calls only services after it, so the map is a DAG like real shops.
struct App {
    services: Vec<Service>,
}

const SERVICE_NAMES: &[&str] = &[
    "frontend",
    "checkout",
    "cart",
    "catalog",
    "payment",
    "shipping",
    "inventory",
    "orders",
    "users",
    "recommendation",
    "pricing",
    "notification",
];

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15",
];

impl App {
    fn new(count: usize) -> Self {
        let services = (0..count)
            .map(|i| {
                let name = SERVICE_NAMES
                    .get(i)
                    .map_or_else(|| format!("service-{i}"), |n| (*n).to_owned());
                let address = format!("{name}.shop.svc.cluster.local");
                // The entry point has no database; others alternate
                // postgresql, redis and none.
                let database = match i % 3 {
                    _ if i == 0 => None,
                    1 => Some(Database {
                        system: "postgresql",
                        namespace: format!("{name}_db"),
                        address: format!("{name}-db.shop.svc.cluster.local"),
                        port: 5432,
                    }),
                    2 => Some(Database {
                        system: "redis",
                        namespace: "0".into(),
                        address: format!("{name}-cache.shop.svc.cluster.local"),
                        port: 6379,
                    }),
                    _ => None,
                };
                let resource = kit::resource(vec![
                    kit::string("service.name", &name),
                    kit::string("service.namespace", "shop"),
                    kit::string("service.version", "1.8.2"),
                    kit::string("telemetry.sdk.language", "rust"),
                ]);
                Service {
                    name,
                    address,
                    resource,
                    database,
                }
            })
            .collect();
        Self { services }
    }
}

/// A span and the index of the service that emitted it.
struct Emitted {
    service: usize,
    span: Span,
}

/// Produces traces with ids unique across the pool.
struct TraceSource {
    rng: Rng,
    /// Scrambles the low half of trace ids, so runs with different seeds differ.
    low_seed: u64,
    next_trace: u64,
    base_nanos: u64,
}

impl TraceSource {
    /// A request of exactly `spans` spans: whole traces, the last one cut
    /// short. Spans are made parent-first, so a cut never keeps a SERVER
    /// span without its CLIENT parent.
    fn request(&mut self, app: &App, spans: usize) -> ExportTraceServiceRequest {
        let mut emitted = Vec::with_capacity(spans + 32);
        // Every trace has at least one span, so this runs at most `spans` times.
        while emitted.len() < spans {
            self.trace(app, &mut emitted);
        }
        emitted.truncate(spans);
        let mut by_service: Vec<Vec<Span>> = (0..app.services.len()).map(|_| Vec::new()).collect();
        for e in emitted {
            by_service[e.service].push(e.span);
        }
        let scope = kit::scope("tracemap-loadgen", env!("CARGO_PKG_VERSION"));
        let mut request = RequestBuilder::new();
        for (i, spans) in by_service.into_iter().enumerate() {
            if !spans.is_empty() {
                let resource = Some(app.services[i].resource.clone());
                request = request.resource_spans(resource, Some(scope.clone()), spans);
            }
        }
        request.build()
    }

    fn trace(&mut self, app: &App, out: &mut Vec<Emitted>) {
        // High half random, low half a scrambled counter: unique in the pool,
        // and the high half is what each round's mask changes.
        let low = mix64(self.low_seed.wrapping_add(self.next_trace));
        self.next_trace += 1;
        let mut trace_id = [0; 16];
        trace_id[..8].copy_from_slice(&self.rng.next_u64().to_be_bytes());
        trace_id[8..].copy_from_slice(&low.to_be_bytes());
        let start = self.base_nanos + self.next_trace * 10_000;
        let duration = 5_000_000 + self.rng.below(120_000_000);
        let error = self.rng.chance(ERROR_PROBABILITY);
        let user_agent = *self.rng.pick(USER_AGENTS);
        let mut builder = TraceBuilder {
            rng: &mut self.rng,
            app,
            trace_id,
            out,
        };
        builder.server(0, None, (start, start + duration), error, user_agent, 0);
    }
}

/// Builds one trace's spans, parent first.
struct TraceBuilder<'a> {
    rng: &'a mut Rng,
    app: &'a App,
    trace_id: [u8; 16],
    out: &'a mut Vec<Emitted>,
}

const ROUTES: &[(&str, &str)] = &[
    ("GET", "/api/{service}/{id}"),
    ("GET", "/api/{service}"),
    ("POST", "/api/{service}"),
    ("PUT", "/api/{service}/{id}"),
];

impl TraceBuilder<'_> {
    fn span_id(&mut self) -> [u8; 8] {
        (self.rng.next_u64() | 1).to_be_bytes()
    }

    /// A SERVER span in `service` and, below it, its outgoing calls.
    fn server(
        &mut self,
        service: usize,
        parent: Option<[u8; 8]>,
        (start, end): (u64, u64),
        error: bool,
        user_agent: &str,
        depth: u32,
    ) {
        let app = self.app;
        let svc = &app.services[service];
        let (method, route_template) = *self.rng.pick(ROUTES);
        let route = route_template.replace("{service}", &svc.name);
        let id = 1000 + self.rng.below(90_000);
        let path = route.replace("{id}", &id.to_string());
        let status_code = if error {
            500
        } else if method == "POST" {
            201
        } else {
            200
        };
        let span_id = self.span_id();
        self.out.push(Emitted {
            service,
            span: SpanBuilder::new(&self.trace_id, &span_id)
                .parent(parent.as_ref().map_or(&[][..], |p| &p[..]))
                .name(&format!("{method} {route}"))
                .kind(SpanKind::Server)
                .times(start, end)
                .attributes(vec![
                    kit::string("http.request.method", method),
                    kit::string("url.path", &path),
                    kit::string("url.scheme", "http"),
                    kit::string("http.route", &route),
                    kit::int("http.response.status_code", status_code),
                    kit::string("server.address", &svc.address),
                    kit::int("server.port", 8080),
                    kit::string("user_agent.original", user_agent),
                ])
                .error_if(error, "internal server error")
                .build(),
        });
        let downstream = app.services.len() - service - 1;
        if depth >= MAX_CALL_DEPTH || downstream == 0 {
            self.database(service, span_id, (start, end));
            return;
        }
        // The entry point always calls on; deeper services call 0–2 others.
        let calls = if service == 0 {
            1 + self.rng.below(2)
        } else {
            self.rng.below(3)
        };
        let slot = (end - start) / (calls + 2);
        for call in 0..calls {
            let callee = service + 1 + self.rng.below(downstream as u64) as usize;
            let call_start = start + slot * (call + 1);
            let call_error = self.rng.chance(ERROR_PROBABILITY);
            self.client(
                service,
                callee,
                span_id,
                (call_start, call_start + slot),
                call_error,
                depth,
            );
        }
        self.database(service, span_id, (start, end));
    }

    /// A CLIENT span in `caller` and the SERVER span it causes in `callee`.
    fn client(
        &mut self,
        caller: usize,
        callee: usize,
        parent: [u8; 8],
        (start, end): (u64, u64),
        error: bool,
        depth: u32,
    ) {
        let app = self.app;
        let target = &app.services[callee];
        let method = if self.rng.chance(0.8) { "GET" } else { "POST" };
        let id = 1000 + self.rng.below(90_000);
        let url = format!("http://{}:8080/api/{}/{id}", target.address, target.name);
        let span_id = self.span_id();
        self.out.push(Emitted {
            service: caller,
            span: SpanBuilder::new(&self.trace_id, &span_id)
                .parent(&parent)
                .name(method)
                .kind(SpanKind::Client)
                .times(start, end)
                .attributes(vec![
                    kit::string("http.request.method", method),
                    kit::string("url.full", &url),
                    kit::string("server.address", &target.address),
                    kit::int("server.port", 8080),
                    kit::int("http.response.status_code", if error { 503 } else { 200 }),
                    kit::string("peer.service", &target.name),
                    kit::string("network.protocol.version", "1.1"),
                ])
                .error_if(error, "upstream failed")
                .build(),
        });
        // The network takes a little off each side of the server's time.
        let lag = ((end - start) / 20).min(500_000);
        let ua = "okhttp/4.12.0";
        self.server(
            callee,
            Some(span_id),
            (start + lag, end - lag),
            error,
            ua,
            depth + 1,
        );
    }

    /// Sometimes, a query from `service` to its database.
    fn database(&mut self, service: usize, parent: [u8; 8], (start, end): (u64, u64)) {
        let app = self.app;
        let Some(db) = &app.services[service].database else {
            return;
        };
        if !self.rng.chance(0.6) {
            return;
        }
        let error = self.rng.chance(ERROR_PROBABILITY);
        let table = &app.services[service].name;
        // Redis has no tables, and its db.namespace is a bare index ("0")
        // that would give every cache the same node: peer.service names it.
        let (operation, query, name, target) = match db.system {
            "redis" => (
                "GET",
                format!("GET {table}:session"),
                "GET".to_owned(),
                kit::string("peer.service", &format!("{table}-cache")),
            ),
            _ => (
                "SELECT",
                format!("SELECT id, status, total FROM {table} WHERE id = $1"),
                format!("SELECT {table}"),
                kit::string("db.collection.name", table),
            ),
        };
        let db_start = start + (end - start) / 10;
        let db_end = db_start + (end - start) / 10;
        let span_id = self.span_id();
        self.out.push(Emitted {
            service,
            span: SpanBuilder::new(&self.trace_id, &span_id)
                .parent(&parent)
                .name(&name)
                .kind(SpanKind::Client)
                .times(db_start, db_end)
                .attributes(vec![
                    kit::string("db.system", db.system),
                    kit::string("db.namespace", &db.namespace),
                    kit::string("db.operation.name", operation),
                    kit::string("db.query.text", &query),
                    target,
                    kit::string("server.address", &db.address),
                    kit::int("server.port", db.port),
                ])
                .error_if(error, "query failed")
                .build(),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use super::*;

    fn spec(requests: usize, batch_size: usize, tail: Option<(u64, usize)>) -> PoolSpec {
        PoolSpec {
            requests,
            batch_size,
            tail,
            services: 8,
            seed: 42,
        }
    }

    fn decode(entry: &Entry, mask: u64) -> ExportTraceServiceRequest {
        let mut buf = Vec::new();
        write_masked(&entry.bytes, &entry.trace_id_offsets, mask, &mut buf);
        ExportTraceServiceRequest::decode(buf.as_slice()).unwrap()
    }

    /// `(service, span)` for every span of a request.
    fn spans_of(request: &ExportTraceServiceRequest) -> Vec<(String, &Span)> {
        let mut out = Vec::new();
        for rs in &request.resource_spans {
            let attrs = &rs.resource.as_ref().unwrap().attributes;
            let service = attrs
                .iter()
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|v| match v {
                    kit::any_value::Value::StringValue(s) => s.clone(),
                    other => panic!("service.name is {other:?}"),
                })
                .unwrap();
            for ss in &rs.scope_spans {
                out.extend(ss.spans.iter().map(|s| (service.clone(), s)));
            }
        }
        out
    }

    /// `(trace id, span id)` to `(service, span)`.
    type SpanIndex<'a> = HashMap<(&'a [u8], &'a [u8]), (&'a str, &'a Span)>;

    fn has_attr(span: &Span, key: &str) -> bool {
        span.attributes.iter().any(|kv| kv.key == key)
    }

    #[test]
    fn server_spans_are_children_of_client_spans_in_another_service() {
        let pool = Pool::generate(&spec(8, 512, None)).unwrap();
        let (mut paired, mut roots, mut db, mut clients) = (0, 0, 0, 0);
        for entry in &pool.entries {
            let request = decode(entry, 0);
            let spans = spans_of(&request);
            assert_eq!(spans.len(), 512);
            let by_id: SpanIndex = spans
                .iter()
                .map(|(svc, s)| {
                    (
                        (s.trace_id.as_slice(), s.span_id.as_slice()),
                        (svc.as_str(), *s),
                    )
                })
                .collect();
            assert_eq!(by_id.len(), 512, "span ids are unique within a trace");
            for (service, span) in &spans {
                assert_eq!(span.trace_id.len(), 16);
                assert!((6..=8).contains(&span.attributes.len()), "{span:?}");
                if span.kind == 3 {
                    clients += 1;
                    db += usize::from(has_attr(span, "db.system"));
                    // Every database is named apart: a table's schema or a cache's peer.
                    assert!(
                        !has_attr(span, "db.system")
                            || has_attr(span, "peer.service")
                            || has_attr(span, "db.collection.name"),
                        "{span:?}"
                    );
                }
                if span.kind != 2 {
                    continue;
                }
                if span.parent_span_id.is_empty() {
                    roots += 1;
                    continue;
                }
                let (parent_service, parent) =
                    by_id[&(span.trace_id.as_slice(), span.parent_span_id.as_slice())];
                assert_eq!(parent.kind, 3, "a SERVER span's parent is a CLIENT span");
                assert_ne!(parent_service, service, "the call crosses services");
                assert!(!has_attr(parent, "db.system"));
                assert!(parent.start_time_unix_nano <= span.start_time_unix_nano);
                assert!(parent.end_time_unix_nano >= span.end_time_unix_nano);
                paired += 1;
            }
        }
        assert!(roots > 0 && paired > roots, "roots {roots}, pairs {paired}");
        assert!(db > 0 && db < clients, "db {db} of {clients} client spans");
    }

    #[test]
    fn spans_are_about_350_bytes_and_about_two_percent_fail() {
        let pool = Pool::generate(&spec(16, 512, None)).unwrap();
        let per_span = pool.bytes_per_span();
        assert!(
            (320.0..=390.0).contains(&per_span),
            "{per_span} bytes a span"
        );
        let (mut errors, mut total) = (0, 0);
        for entry in &pool.entries {
            for (_, span) in spans_of(&decode(entry, 0)) {
                total += 1;
                errors += usize::from(span.status.as_ref().is_some_and(|s| s.code == 2));
            }
        }
        let share = errors as f64 / total as f64;
        assert!((0.01..=0.04).contains(&share), "error share {share}");
    }

    #[test]
    fn trace_ids_differ_across_requests_and_rounds_and_stay_whole_per_trace() {
        let pool = Pool::generate(&spec(4, 256, None)).unwrap();
        let mut seen = HashSet::new();
        for round in 0..3 {
            let mut round_ids = HashSet::new();
            for entry in &pool.entries {
                assert_eq!(entry.trace_id_offsets.len(), entry.spans as usize);
                let masked = decode(entry, round_mask(round));
                let plain = decode(entry, 0);
                for ((_, a), (_, b)) in spans_of(&masked).iter().zip(spans_of(&plain)) {
                    // The same trace maps to the same new id; only the high half moves.
                    assert_eq!(a.trace_id[8..], b.trace_id[8..]);
                    assert_eq!(a.span_id, b.span_id);
                    assert_eq!(a.attributes, b.attributes);
                    round_ids.insert(a.trace_id.clone());
                }
            }
            for id in &round_ids {
                assert!(
                    seen.insert(id.clone()),
                    "trace id repeated in round {round}"
                );
            }
        }
        assert!(seen.len() > 3 * 4 * 20);
    }

    #[test]
    fn max_spans_gets_a_short_last_request() {
        // 2324 spans of 512: requests 0–3 are full, request 4 has 276,
        // whether the pool holds all four full ones or recycles two.
        for distinct in [4, 2] {
            let pool = Pool::generate(&spec(distinct, 512, Some((4, 276)))).unwrap();
            let counts: Vec<u32> = (0..5).map(|seq| pool.entry(seq).0.spans).collect();
            assert_eq!(counts, [512, 512, 512, 512, 276]);
            assert_eq!(spans_of(&decode(pool.entry(4).0, 0)).len(), 276);
        }
        // Fewer spans than one batch: only the tail.
        let pool = Pool::generate(&spec(0, 512, Some((0, 100)))).unwrap();
        assert_eq!(pool.entry(0).0.spans, 100);
    }

    #[test]
    fn token_bucket_paces_to_the_rate() {
        let start = Instant::now();
        let mut schedule = Schedule::new(1000, 100, start);
        // 100 spans at 1000/s: 0.1 s apart once the 100 ms burst is spent.
        let times: Vec<Duration> = (0..5)
            .map(|_| schedule.next(start, |_| 100).unwrap().1 - start)
            .collect();
        assert_eq!(times[0], Duration::ZERO);
        assert_eq!(
            times[1],
            Duration::ZERO,
            "the burst allows a second request"
        );
        assert_eq!(times[2], Duration::from_millis(100));
        assert_eq!(times[4], Duration::from_millis(300));
        let mut unpaced = Schedule::new(0, 2, start);
        assert!(unpaced.next(start, |_| 1).is_some());
        assert!(unpaced.next(start, |_| 1).is_some());
        assert!(
            unpaced.next(start, |_| 1).is_none(),
            "bounded by max requests"
        );
    }

    #[test]
    fn histogram_quantiles_are_within_two_percent() {
        let mut histogram = LatencyHistogram::default();
        for micros in 1..=10_000u64 {
            histogram.record(Duration::from_micros(micros));
        }
        let p50 = histogram.quantile(0.5).as_micros() as f64;
        let p99 = histogram.quantile(0.99).as_micros() as f64;
        assert!((p50 / 5000.0 - 1.0).abs() < 0.02, "p50 {p50}");
        assert!((p99 / 9900.0 - 1.0).abs() < 0.02, "p99 {p99}");
        for micros in [0, 1, 63, 64, 65, 1000, 123_456, 1 << 39] {
            let upper = LatencyHistogram::upper(LatencyHistogram::index(micros));
            assert!(upper >= micros && upper as f64 <= micros as f64 * 1.02 + 1.0);
        }
    }

    #[test]
    fn retry_delay_follows_retry_info_and_is_capped() {
        let status = tonic::Status::with_error_details(
            tonic::Code::Unavailable,
            "full",
            tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_millis(250))),
        );
        assert_eq!(retry_delay(&status, 0), Duration::from_millis(250));
        let plain = tonic::Status::unavailable("down");
        assert_eq!(retry_delay(&plain, 0), INITIAL_BACKOFF);
        assert_eq!(retry_delay(&plain, 2), INITIAL_BACKOFF * 4);
        assert_eq!(retry_delay(&plain, 10), MAX_BACKOFF);
    }

    #[test]
    fn bad_flags_are_refused() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: LoadgenArgs,
        }
        let parse = |extra: &[&str]| {
            let mut argv = vec!["loadgen", "--endpoint", "http://127.0.0.1:1"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).unwrap().args
        };
        let args = parse(&[]);
        assert_eq!((args.batch_size, args.concurrency, args.rate), (512, 16, 0));
        assert_eq!(args.duration, Duration::from_secs(30));
        assert!(args.validate().is_ok());
        assert_eq!(parse(&["--max-spans", "1025"]).max_requests(), 3);
        for bad in [
            &["--batch-size", "0"][..],
            &["--services", "1"],
            &["--max-spans", "0"],
        ] {
            let err = parse(bad).validate().unwrap_err().to_string();
            assert!(err.starts_with("invalid --"), "{err}");
        }
        assert!(matches!(
            endpoint("https://example.invalid:4317"),
            Err(LoadgenError::InvalidArg { .. })
        ));
        assert_eq!(
            endpoint("127.0.0.1:4317").unwrap().uri().port_u16(),
            Some(4317)
        );
    }
}
