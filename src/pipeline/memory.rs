//! The memory limit, `pipeline.memory_limit`: a watcher thread samples the
//! process's resident memory every [`SAMPLE_INTERVAL`] and, as it nears the
//! limit, first shrinks what can be given up (the pairing stores' oldest
//! halves, through [`Shrink`]), then closes an [`AdmissionGate`] so that
//! receivers refuse with UNAVAILABLE / 503 and retry info
//! ([`Refusal::MemoryLimit`], counted as `reason="memory_limit"`). It opens
//! the gate again by itself once memory is back down.
//!
//! Unset, the limit is 80 % of the cgroup's (v2 `memory.max`, v1
//! `memory.limit_in_bytes`), so a container is refused spans before the
//! kernel kills it; with neither, there is no limit and the watcher only
//! reports `tracemap_memory_rss_bytes`.
//!
//! Levels, as parts of the limit:
//! - from [`SHRINK_AT`] the pairing stores give up their oldest quarter,
//!   once a second at most;
//! - from [`REFUSE_AT`] receivers refuse while memory grows or spans are
//!   queued, early enough that what arrives within one sampling period
//!   stays under the limit; at the limit itself they always refuse;
//! - they take spans again below [`REOPEN_BELOW`], or below [`STEADY_BELOW`]
//!   once memory holds still with nothing queued. The allocator keeps freed
//!   pages for reuse, so after a burst resident memory can stay high with
//!   nothing left to drain: waiting for it to fall would refuse spans for
//!   nothing, while new requests reuse those pages. A refusal costs no
//!   memory: receivers ask before reading the body
//!   ([`crate::receiver::SpanSink::refuses_now`]).
//!
//! What the gate cannot stop is what is already being read when it closes:
//! at most the clients' concurrent requests, each within
//! `max_recv_msg_bytes`. The headroom above [`REFUSE_AT`] is for that.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::mpsc::{RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{AdmissionGate, PipelineHandle};
use crate::receiver::Refusal;

/// How often resident memory is sampled: a sample costs about 20 µs, and
/// at 100 ms a burst of requests read between two samples overshot the
/// refusing level by more than the headroom above it.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(20);
/// Share of the cgroup's limit taken as the limit when none is configured:
/// the rest is for what the kernel charges the cgroup besides the
/// process's resident memory (page cache, kernel buffers).
pub const CGROUP_SHARE_PERCENT: u64 = 80;
/// Memory, in percent of the limit, from which the pairing stores shrink.
pub const SHRINK_AT: u64 = 80;
/// Memory, in percent of the limit, at which receivers start refusing: the
/// rest is headroom for what arrives within one sampling period and for
/// requests already read when the gate closes.
pub const REFUSE_AT: u64 = 90;
/// Memory, in percent of the limit, below which receivers take spans again.
pub const REOPEN_BELOW: u64 = 85;
/// Memory, in percent of the limit, below which receivers take spans again
/// once memory has held still, with nothing queued, for [`STEADY_FOR`].
pub const STEADY_BELOW: u64 = 95;
/// How long memory must hold still, with nothing queued, to count as
/// steady: longer than requests being read take to fault their pages in.
pub const STEADY_FOR: Duration = Duration::from_millis(500);
/// Share of each pairing store's halves given up per shrink, oldest first.
pub const SHRINK_FRACTION: f64 = 0.25;
/// Least time between two shrinks: each gives up a quarter of the halves.
pub const SHRINK_EVERY: Duration = Duration::from_secs(1);
/// Back-off suggested to refused clients.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Smallest `pipeline.memory_limit` accepted: the collector idles at about
/// 20 MiB (release build), so less could never take a span.
pub const MIN_LIMIT: ByteSize = ByteSize(16 * 1024 * 1024);

/// cgroup v1 writes "no limit" as the largest page-aligned counter value;
/// anything this large is no limit.
const CGROUP_V1_UNLIMITED: u64 = 1 << 62;
/// Deepest cgroup path walked for ancestors' limits.
const MAX_CGROUP_DEPTH: usize = 64;
const PROC_CGROUP: &str = "/proc/self/cgroup";
const CGROUP_ROOT: &str = "/sys/fs/cgroup";
const PROC_STATUS: &str = "/proc/self/status";

/// A size in bytes, written in the config file as a number of bytes or as a
/// number with a unit: `512MiB`, `1.5GiB`, `400M`, Kubernetes' `512Mi`.
/// Binary units (`Ki`, `KiB`, `Mi`, …) are powers of 1024, decimal ones
/// (`k`, `KB`, `M`, …) powers of 1000; case does not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// `n` MiB.
    pub const fn mib(n: u64) -> Self {
        Self(n * 1024 * 1024)
    }

    /// The size in bytes.
    pub const fn bytes(self) -> u64 {
        self.0
    }
}

/// Why a size did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {text:?}: expected bytes or a number with a unit such as 512MiB, 1.5GiB")]
pub struct ByteSizeError {
    text: String,
}

impl FromStr for ByteSize {
    type Err = ByteSizeError;

    fn from_str(text: &str) -> Result<Self, ByteSizeError> {
        let invalid = || ByteSizeError {
            text: text.to_owned(),
        };
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" => 1000,
            "ki" | "kib" => 1 << 10,
            "m" | "mb" => 1000 * 1000,
            "mi" | "mib" => 1 << 20,
            "g" | "gb" => 1000 * 1000 * 1000,
            "gi" | "gib" => 1 << 30,
            "t" | "tb" => 1000 * 1000 * 1000 * 1000,
            "ti" | "tib" => 1 << 40,
            _ => return Err(invalid()),
        };
        if number.is_empty() {
            return Err(invalid());
        }
        // Whole numbers exactly; fractions (`1.5GiB`) to the nearest byte.
        if let Ok(whole) = number.parse::<u64>() {
            return whole.checked_mul(scale).map(Self).ok_or_else(invalid);
        }
        let value: f64 = number.parse().map_err(|_| invalid())?;
        let bytes = (value * scale as f64).round();
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(invalid());
        }
        Ok(Self(bytes as u64))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the size: `512MiB`, `1536KiB`, `1000B`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, scale) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if self.0 >= scale && self.0.is_multiple_of(scale) {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}B", self.0)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: bytes, or a number with a unit such as 512MiB")
            }

            fn visit_u64<E: serde::de::Error>(self, bytes: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(bytes))
            }

            fn visit_i64<E: serde::de::Error>(self, bytes: i64) -> Result<ByteSize, E> {
                u64::try_from(bytes)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a size cannot be negative"))
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<ByteSize, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

/// Where the limit in force came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LimitSource {
    /// `pipeline.memory_limit`.
    Config,
    /// [`CGROUP_SHARE_PERCENT`] of the cgroup limit read from `file`.
    Cgroup {
        /// The `memory.max` or `memory.limit_in_bytes` file with the lowest limit.
        file: PathBuf,
        /// The limit it holds.
        cgroup_bytes: u64,
    },
    /// Neither is set: no limit.
    Unlimited,
}

/// The limit the watcher keeps the process under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryLimit {
    /// Bytes of resident memory; `None`: no limit.
    pub bytes: Option<u64>,
    /// Where it came from.
    pub source: LimitSource,
}

impl MemoryLimit {
    /// The configured limit, else [`CGROUP_SHARE_PERCENT`] of this
    /// process's cgroup limit, else none.
    pub fn resolve(configured: Option<ByteSize>) -> Self {
        Self::resolve_with(configured, &|path| std::fs::read_to_string(path).ok())
    }

    /// As [`MemoryLimit::resolve`], reading files through `read`.
    fn resolve_with(configured: Option<ByteSize>, read: &dyn Fn(&Path) -> Option<String>) -> Self {
        if let Some(size) = configured {
            return Self {
                bytes: Some(size.bytes()),
                source: LimitSource::Config,
            };
        }
        match cgroup_limit(read) {
            Some((file, cgroup_bytes)) => Self {
                bytes: Some(cgroup_bytes / 100 * CGROUP_SHARE_PERCENT),
                source: LimitSource::Cgroup { file, cgroup_bytes },
            },
            None => Self {
                bytes: None,
                source: LimitSource::Unlimited,
            },
        }
    }

    /// Logs the limit in force and where it came from; once, at startup.
    pub fn log(&self) {
        match (&self.bytes, &self.source) {
            (Some(bytes), LimitSource::Config) => tracing::info!(
                limit_bytes = bytes,
                limit = %ByteSize(*bytes),
                source = "pipeline.memory_limit",
                "memory limit"
            ),
            (Some(bytes), LimitSource::Cgroup { file, cgroup_bytes }) => tracing::info!(
                limit_bytes = bytes,
                limit = %ByteSize(*bytes),
                source = "cgroup",
                cgroup_file = %file.display(),
                cgroup_bytes,
                "memory limit: {CGROUP_SHARE_PERCENT} % of the cgroup's"
            ),
            _ => tracing::info!(
                source = "none",
                "no memory limit: pipeline.memory_limit is unset and no cgroup limit was found"
            ),
        }
    }
}

/// The memory controller's cgroup path in `/proc/self/cgroup`: the v2
/// line (`0::/path`) and the v1 line naming the `memory` controller
/// (`4:memory:/path`), when present.
fn cgroup_paths(proc_cgroup: &str) -> (Option<&str>, Option<&str>) {
    let (mut v2, mut v1) = (None, None);
    for line in proc_cgroup.lines() {
        let mut fields = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else if controllers.split(',').any(|c| c == "memory") {
            v1 = Some(path);
        }
    }
    (v2, v1)
}

/// A limit file's value: `None` for `max` (v2's "no limit"), v1's huge
/// "no limit" value, or anything that is not a number.
fn parse_limit(text: &str) -> Option<u64> {
    let value: u64 = text.trim().parse().ok()?;
    (value > 0 && value < CGROUP_V1_UNLIMITED).then_some(value)
}

/// `dir/path` and each of its ancestors up to `dir` itself, deepest first:
/// a parent's limit (a Kubernetes pod's) binds the process too, and when
/// the cgroup namespace hides the path, the mount's root is its own cgroup.
fn cgroup_dirs(dir: &Path, path: &str) -> Vec<PathBuf> {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != "." && *part != "..")
        .take(MAX_CGROUP_DEPTH)
        .collect();
    (0..=parts.len())
        .rev()
        .map(|depth| {
            parts[..depth]
                .iter()
                .fold(dir.to_path_buf(), |d, p| d.join(p))
        })
        .collect()
}

/// The lowest limit over this process's cgroup and its ancestors, and the
/// file that holds it: cgroup v2 first, then v1.
fn cgroup_limit(read: &dyn Fn(&Path) -> Option<String>) -> Option<(PathBuf, u64)> {
    let proc_cgroup = read(Path::new(PROC_CGROUP))?;
    let (v2, v1) = cgroup_paths(&proc_cgroup);
    let root = Path::new(CGROUP_ROOT);
    let candidates = [
        v2.map(|path| (cgroup_dirs(root, path), "memory.max")),
        v1.map(|path| {
            (
                cgroup_dirs(&root.join("memory"), path),
                "memory.limit_in_bytes",
            )
        }),
    ];
    candidates.into_iter().flatten().find_map(|(dirs, name)| {
        dirs.into_iter()
            .map(|dir| dir.join(name))
            .filter_map(|file| Some((read(&file).as_deref().and_then(parse_limit)?, file)))
            .min()
            .map(|(bytes, file)| (file, bytes))
    })
}

/// `VmRSS` of a `/proc/<pid>/status` text, in bytes. `/proc/self/status`
/// gives it in kB, so no page size is needed (that would take `libc`'s
/// `sysconf`, an unsafe call, or a crate for one number).
pub fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line["VmRSS:".len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// This process's resident memory, in bytes; `None` off Linux.
pub fn process_rss() -> Option<u64> {
    parse_vm_rss(&std::fs::read_to_string(PROC_STATUS).ok()?)
}

/// State that can be given up, or rebuilt, when memory runs short: the
/// graph's pairing stores. Called from the watcher thread.
pub trait Shrink: Send + Sync + 'static {
    /// Gives up about `fraction` of what is held, oldest first, and
    /// returns the memory it held to the allocator; returns how many
    /// items went.
    fn shrink(&self, fraction: f64) -> u64;
}

/// The levels of one limit, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels {
    /// From here, shrink.
    pub shrink: u64,
    /// From here, refuse while memory grows or spans are queued.
    pub refuse: u64,
    /// Below this, take spans again.
    pub reopen: u64,
    /// Below this, take spans again once memory is steady and nothing is queued.
    pub steady: u64,
    /// The limit itself: always refuse from here.
    pub limit: u64,
}

impl Levels {
    /// The levels of `limit` bytes.
    pub fn of(limit: u64) -> Self {
        let part = |percent: u64| (u128::from(limit) * u128::from(percent) / 100) as u64;
        Self {
            shrink: part(SHRINK_AT),
            refuse: part(REFUSE_AT),
            reopen: part(REOPEN_BELOW),
            steady: part(STEADY_BELOW),
            limit,
        }
    }
}

/// What one sample calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Receivers refuse (the gate is closed).
    pub refuse: bool,
    /// The pairing stores should shrink.
    pub shrink: bool,
}

/// The gate's state between samples; the rules are in the module docs.
#[derive(Debug, Clone, Copy)]
pub struct Hysteresis {
    levels: Levels,
    /// Samples memory must hold still, with nothing queued, to count as steady.
    steady_samples: u32,
    refusing: bool,
    last: Option<u64>,
    /// Samples in a row without growth or queued spans.
    quiet: u32,
}

impl Hysteresis {
    /// Open, for `levels`; steady after `steady_samples` quiet samples.
    pub fn new(levels: Levels, steady_samples: u32) -> Self {
        Self {
            levels,
            steady_samples,
            refusing: false,
            last: None,
            quiet: 0,
        }
    }

    /// Takes one sample: `rss` bytes resident, `drained` when no span waits
    /// in the pipeline's queues.
    pub fn observe(&mut self, rss: u64, drained: bool) -> Decision {
        let levels = self.levels;
        let growing = self.last.is_some_and(|last| rss > last);
        self.last = Some(rss);
        let busy = growing || !drained;
        self.quiet = if busy {
            0
        } else {
            self.quiet.saturating_add(1)
        };
        // Memory that holds still with nothing queued is the allocator's
        // reserve of freed pages, which new requests reuse: not load.
        let steady = self.quiet >= self.steady_samples;
        self.refusing = if rss >= levels.limit {
            true
        } else if self.refusing {
            !(rss < levels.reopen || (steady && rss < levels.steady))
        } else {
            rss >= levels.refuse && busy
        };
        Decision {
            refuse: self.refusing,
            shrink: rss >= levels.shrink,
        }
    }
}

/// The watcher's self-metrics.
#[derive(Debug, Default, Clone)]
struct MemoryMetrics {
    limit: Gauge,
    rss: Gauge,
    refusing: Gauge,
    evicted: Counter,
}

impl MemoryMetrics {
    fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "tracemap_memory_limit_bytes",
            "Resident memory the collector keeps under (pipeline.memory_limit or 80 % of the cgroup's); 0 when none",
            metrics.limit.clone(),
        );
        registry.register(
            "tracemap_memory_rss_bytes",
            format!(
                "Resident memory of the process, sampled every {} ms",
                SAMPLE_INTERVAL.as_millis()
            ),
            metrics.rss.clone(),
        );
        registry.register(
            "tracemap_memory_refusing",
            "1 while receivers refuse spans because memory is near the limit",
            metrics.refusing.clone(),
        );
        registry.register(
            "tracemap_memory_evicted_halves",
            "Pairing-store halves expired early because memory neared the limit (also in tracemap_graph_expired_halves)",
            metrics.evicted.clone(),
        );
        metrics
    }
}

/// Where the watcher reads resident memory; replaced in tests.
type Sampler = Box<dyn FnMut() -> Option<u64> + Send>;
/// Whether the pipeline's queues are empty.
type Drained = Box<dyn Fn() -> bool + Send>;

/// The running watcher thread; [`MemoryWatcher::stop`] ends it.
pub struct MemoryWatcher {
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

impl MemoryWatcher {
    /// Samples this process's memory every [`SAMPLE_INTERVAL`] and keeps it
    /// under `limit`: shrinking `shrinkers`, and refusing through the gate
    /// it adds to `pipeline`; add it before other gates, so that a memory
    /// refusal never waits on one of them first. Without a limit it only
    /// reports resident memory.
    pub fn start(
        limit: &MemoryLimit,
        pipeline: &mut super::Pipeline,
        shrinkers: Vec<Arc<dyn Shrink>>,
        registry: &mut Registry,
    ) -> Self {
        let gate = Arc::new(memory_gate());
        pipeline.add_gate(gate.clone());
        let handle = pipeline.handle();
        let drained: Drained = Box::new(move || queued_spans(&handle) == 0);
        Self::start_with(
            limit.bytes,
            SAMPLE_INTERVAL,
            Box::new(process_rss),
            drained,
            gate,
            shrinkers,
            MemoryMetrics::register(registry),
        )
    }

    fn start_with(
        limit: Option<u64>,
        interval: Duration,
        sample: Sampler,
        drained: Drained,
        gate: Arc<AdmissionGate>,
        shrinkers: Vec<Arc<dyn Shrink>>,
        metrics: MemoryMetrics,
    ) -> Self {
        metrics.limit.set(limit.map_or(0, |l| l as i64));
        let (stop, stopped) = std::sync::mpsc::channel();
        let mut watch = Watch {
            hysteresis: limit.map(|limit| {
                let samples = STEADY_FOR.as_millis() / interval.as_millis().max(1);
                Hysteresis::new(Levels::of(limit), samples.max(1) as u32)
            }),
            limit,
            sample,
            drained,
            gate,
            shrinkers,
            metrics,
            last_shrink: None,
            closings: 0,
        };
        let thread = std::thread::Builder::new()
            .name("tracemap-memory".into())
            .spawn(move || {
                // A thread, not a task: it samples on time even when every
                // runtime worker is busy decoding, which is when it matters.
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    if !watch.step() {
                        break;
                    }
                }
            })
            .expect("spawning the memory watcher");
        Self { stop, thread }
    }

    /// Stops the thread and waits for it (a sample at most).
    pub fn stop(self) {
        drop(self.stop);
        if self.thread.join().is_err() {
            tracing::error!("memory watcher panicked");
        }
    }
}

/// The gate the watcher closes: refusing at once, since waiting would only
/// hold the request's memory longer.
fn memory_gate() -> AdmissionGate {
    AdmissionGate::new(
        Refusal::MemoryLimit {
            retry_after: RETRY_AFTER,
        },
        false,
    )
}

fn queued_spans(handle: &PipelineHandle) -> i64 {
    handle.metrics.queued_spans.get()
}

struct Watch {
    limit: Option<u64>,
    hysteresis: Option<Hysteresis>,
    sample: Sampler,
    drained: Drained,
    gate: Arc<AdmissionGate>,
    shrinkers: Vec<Arc<dyn Shrink>>,
    metrics: MemoryMetrics,
    last_shrink: Option<Instant>,
    closings: u64,
}

impl Watch {
    /// One sample; false when there is nothing more to watch.
    fn step(&mut self) -> bool {
        let Some(rss) = (self.sample)() else {
            if self.limit.is_some() {
                tracing::error!(
                    "cannot read resident memory from {PROC_STATUS}: the memory limit is not enforced"
                );
            }
            self.gate.open();
            return false;
        };
        self.metrics.rss.set(rss as i64);
        let Some(hysteresis) = &mut self.hysteresis else {
            return true;
        };
        let decision = hysteresis.observe(rss, (self.drained)());
        if decision.shrink
            && self
                .last_shrink
                .is_none_or(|last| last.elapsed() >= SHRINK_EVERY)
        {
            self.last_shrink = Some(Instant::now());
            let evicted: u64 = self
                .shrinkers
                .iter()
                .map(|s| s.shrink(SHRINK_FRACTION))
                .sum();
            self.metrics.evicted.inc_by(evicted);
            tracing::debug!(rss, evicted, "memory near the limit: pairing stores shrunk");
        }
        match (decision.refuse, self.gate.is_closed()) {
            (true, false) => {
                self.gate.close();
                self.metrics.refusing.set(1);
                self.closings += 1;
                let limit = self.limit.unwrap_or_default();
                // Warned once; later closings are in tracemap_memory_refusing.
                if self.closings == 1 {
                    tracing::warn!(
                        rss,
                        limit,
                        "memory near the memory limit: refusing spans until it is back under"
                    );
                } else {
                    tracing::debug!(rss, limit, "memory near the limit: refusing spans");
                }
            }
            (false, true) => {
                self.gate.open();
                self.metrics.refusing.set(0);
                if self.closings == 1 {
                    tracing::info!(rss, "memory back under the limit: taking spans again");
                } else {
                    tracing::debug!(rss, "memory back under the limit: taking spans again");
                }
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU64;

    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn sizes_parse_with_units_and_print_in_the_largest_whole_one() {
        for (text, bytes) in [
            ("1048576", MIB),
            ("512MiB", 512 * MIB),
            ("512Mi", 512 * MIB),
            ("512 mib", 512 * MIB),
            ("1.5GiB", 1536 * MIB),
            ("400M", 400_000_000),
            ("2kB", 2000),
            ("64KiB", 64 * 1024),
            ("1Ti", 1 << 40),
            (" 7b ", 7),
        ] {
            assert_eq!(text.parse::<ByteSize>(), Ok(ByteSize(bytes)), "{text}");
        }
        for text in [
            "",
            "MiB",
            "12 parsecs",
            "-1",
            "1.2.3GiB",
            "99999999999999999999",
        ] {
            assert!(text.parse::<ByteSize>().is_err(), "{text:?} parsed");
        }
        assert_eq!(ByteSize::mib(512).to_string(), "512MiB");
        assert_eq!(ByteSize(1536 * 1024).to_string(), "1536KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
    }

    #[test]
    fn sizes_deserialize_from_numbers_and_strings() {
        let size: ByteSize = serde_yaml_ng::from_str("268435456").unwrap();
        assert_eq!(size, ByteSize::mib(256));
        let size: ByteSize = serde_yaml_ng::from_str("256MiB").unwrap();
        assert_eq!(size, ByteSize::mib(256));
        let err = serde_yaml_ng::from_str::<ByteSize>("lots").unwrap_err();
        assert!(err.to_string().contains("invalid size \"lots\""), "{err}");
        assert!(serde_yaml_ng::from_str::<ByteSize>("-5").is_err());
        assert_eq!(serde_yaml_ng::to_string(&ByteSize(5)).unwrap(), "5\n");
    }

    #[test]
    fn proc_cgroup_names_the_v2_and_the_v1_memory_paths() {
        let v2 = "0::/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope\n";
        assert_eq!(
            cgroup_paths(v2),
            (
                Some("/kubepods.slice/kubepods-pod1.slice/cri-containerd-abc.scope"),
                None
            )
        );
        let v1 = "12:pids:/docker/abc\n\
                  4:cpu,cpuacct:/docker/abc\n\
                  3:memory:/docker/abc\n\
                  1:name=systemd:/docker/abc\n";
        assert_eq!(cgroup_paths(v1), (None, Some("/docker/abc")));
        // Hybrid: v1 controllers plus the unified hierarchy.
        let hybrid = "5:memory:/user.slice\n0::/user.slice/session-1.scope\n";
        assert_eq!(
            cgroup_paths(hybrid),
            (Some("/user.slice/session-1.scope"), Some("/user.slice"))
        );
        assert_eq!(cgroup_paths(""), (None, None));
        assert_eq!(cgroup_paths("garbage\n"), (None, None));
    }

    #[test]
    fn limit_files_read_max_and_v1_unlimited_as_none() {
        assert_eq!(parse_limit("536870912\n"), Some(512 * MIB));
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712\n"), None);
        assert_eq!(parse_limit("0\n"), None);
        assert_eq!(parse_limit(""), None);
    }

    fn files(entries: &[(&str, &str)]) -> impl Fn(&Path) -> Option<String> {
        let map: HashMap<PathBuf, String> = entries
            .iter()
            .map(|(path, text)| (PathBuf::from(path), (*text).to_owned()))
            .collect();
        move |path| map.get(path).cloned()
    }

    #[test]
    fn the_limit_is_the_configured_one_else_80_percent_of_the_lowest_cgroup_limit() {
        let pod = files(&[
            ("/proc/self/cgroup", "0::/kubepods/pod1/ctr\n"),
            ("/sys/fs/cgroup/kubepods/pod1/ctr/memory.max", "max\n"),
            ("/sys/fs/cgroup/kubepods/pod1/memory.max", "536870912\n"),
            ("/sys/fs/cgroup/kubepods/memory.max", "8589934592\n"),
        ]);
        let limit = MemoryLimit::resolve_with(None, &pod);
        assert_eq!(limit.bytes, Some(512 * MIB / 100 * 80));
        assert_eq!(
            limit.source,
            LimitSource::Cgroup {
                file: "/sys/fs/cgroup/kubepods/pod1/memory.max".into(),
                cgroup_bytes: 512 * MIB
            }
        );
        let configured = MemoryLimit::resolve_with(Some(ByteSize::mib(100)), &pod);
        assert_eq!(configured.bytes, Some(100 * MIB));
        assert_eq!(configured.source, LimitSource::Config);

        // A cgroup namespace: the path reads "/", the mount is the container's cgroup.
        let namespaced = files(&[
            ("/proc/self/cgroup", "0::/\n"),
            ("/sys/fs/cgroup/memory.max", "268435456\n"),
        ]);
        assert_eq!(
            MemoryLimit::resolve_with(None, &namespaced).bytes,
            Some(256 * MIB / 100 * 80)
        );
        // The path is the host's but only the container's cgroup is mounted.
        let hidden = files(&[
            ("/proc/self/cgroup", "0::/docker/abc\n"),
            ("/sys/fs/cgroup/memory.max", "268435456\n"),
        ]);
        assert_eq!(
            MemoryLimit::resolve_with(None, &hidden).bytes,
            Some(256 * MIB / 100 * 80)
        );

        let v1 = files(&[
            ("/proc/self/cgroup", "3:memory:/docker/abc\n"),
            (
                "/sys/fs/cgroup/memory/docker/abc/memory.limit_in_bytes",
                "1073741824\n",
            ),
            (
                "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                "9223372036854771712\n",
            ),
        ]);
        assert_eq!(
            MemoryLimit::resolve_with(None, &v1).bytes,
            Some(1024 * MIB / 100 * 80)
        );

        let unlimited = files(&[
            ("/proc/self/cgroup", "0::/user.slice/session-1.scope\n"),
            (
                "/sys/fs/cgroup/user.slice/session-1.scope/memory.max",
                "max\n",
            ),
            ("/sys/fs/cgroup/user.slice/memory.max", "max\n"),
        ]);
        let none = MemoryLimit::resolve_with(None, &unlimited);
        assert_eq!((none.bytes, none.source), (None, LimitSource::Unlimited));
        let no_proc = MemoryLimit::resolve_with(None, &files(&[]));
        assert_eq!(no_proc.bytes, None);
    }

    #[test]
    fn vm_rss_is_read_in_bytes() {
        let status =
            "Name:\ttracemap\nVmPeak:\t  123456 kB\nVmRSS:\t   33128 kB\nRssAnon:\t 20000 kB\n";
        assert_eq!(parse_vm_rss(status), Some(33128 * 1024));
        assert_eq!(parse_vm_rss("Name:\tkthreadd\n"), None);
        assert!(
            process_rss().is_some_and(|rss| rss > MIB),
            "this test runs on Linux"
        );
    }

    #[test]
    fn levels_are_parts_of_the_limit() {
        let levels = Levels::of(100 * MIB);
        assert_eq!(levels.shrink, 80 * MIB);
        assert_eq!(levels.refuse, 90 * MIB);
        assert_eq!(levels.reopen, 85 * MIB);
        assert_eq!(levels.steady, 95 * MIB);
        assert_eq!(levels.limit, 100 * MIB);
        let huge = Levels::of(u64::MAX);
        assert!(huge.shrink < huge.reopen && huge.reopen < huge.refuse);
        assert!(huge.refuse < huge.steady && huge.steady < huge.limit);
    }

    /// Feeds `(MiB, drained)` samples of a 100 MiB limit: (refuse, shrink) after each.
    fn run(h: &mut Hysteresis, samples: &[(u64, bool)]) -> Vec<(bool, bool)> {
        samples
            .iter()
            .map(|&(mib, drained)| {
                let d = h.observe(mib * MIB, drained);
                (d.refuse, d.shrink)
            })
            .collect()
    }

    #[test]
    fn growing_memory_shrinks_first_then_refuses_at_90_percent_until_85() {
        let mut h = Hysteresis::new(Levels::of(100 * MIB), 2);
        let queued = false; // not drained
        assert_eq!(
            run(
                &mut h,
                &[
                    (50, queued),
                    (81, queued),
                    (89, queued),
                    (90, queued),
                    (93, queued),
                    (92, queued),
                    (86, queued),
                    (84, queued),
                    (89, queued),
                    (70, queued),
                ]
            ),
            [
                (false, false),
                (false, true), // shrinks first
                (false, true),
                (true, true), // refuses at 90 %
                (true, true),
                (true, true), // hysteresis
                (true, true),
                (false, true), // below 85 %: open
                (false, true), // stays open under 90 %
                (false, false),
            ]
        );
    }

    #[test]
    fn memory_that_holds_still_with_nothing_queued_is_no_reason_to_refuse() {
        // Steady after 2 quiet samples.
        let mut h = Hysteresis::new(Levels::of(100 * MIB), 2);
        let refusals: Vec<bool> = run(
            &mut h,
            &[
                (80, true),
                (93, true),  // grew into the band: refuse
                (93, false), // spans still queued
                (93, true),  // quiet once
                (93, true),  // quiet twice: steady, the allocator's reserve
                (93, true),  // stays open while nothing grows
                (94, true),  // grows again: refuse
                (92, true),
                (92, true), // steady under 95 %
                (96, true),
                (96, true),
                (96, true),  // steady but above 95 %: stays shut
                (101, true), // at the limit: always shut
                (97, true),
                (94, true), // steady under 95 % again
            ],
        )
        .into_iter()
        .map(|(refuse, _)| refuse)
        .collect();
        assert_eq!(
            refusals,
            [
                false, true, true, true, false, false, true, true, false, true, true, true, true,
                true, false
            ]
        );
        // Over the limit even with nothing going on, it refuses.
        let mut fresh = Hysteresis::new(Levels::of(100 * MIB), 2);
        assert!(fresh.observe(100 * MIB, true).refuse);
        let mut fresh = Hysteresis::new(Levels::of(100 * MIB), 2);
        assert!(
            !fresh.observe(92 * MIB, true).refuse,
            "a first sample is no growth"
        );
    }

    #[derive(Default)]
    struct CountingShrink(Mutex<Vec<f64>>);

    impl Shrink for CountingShrink {
        fn shrink(&self, fraction: f64) -> u64 {
            self.0.lock().unwrap().push(fraction);
            10
        }
    }

    /// Waits until `done`, at most 5 s.
    fn eventually(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_watcher_shrinks_then_refuses_then_recovers_by_itself() {
        let rss = Arc::new(AtomicU64::new(10 * MIB));
        let sampled = rss.clone();
        let gate = Arc::new(memory_gate());
        let shrink = Arc::new(CountingShrink::default());
        let metrics = MemoryMetrics::default();
        let watcher = MemoryWatcher::start_with(
            Some(100 * MIB),
            Duration::from_millis(1),
            Box::new(move || Some(sampled.load(std::sync::atomic::Ordering::Relaxed))),
            Box::new(|| false),
            gate.clone(),
            vec![shrink.clone() as Arc<dyn Shrink>],
            metrics.clone(),
        );
        let set = |mib: u64| rss.store(mib * MIB, std::sync::atomic::Ordering::Relaxed);
        eventually("the rss gauge", || metrics.rss.get() == (10 * MIB) as i64);
        assert_eq!(metrics.limit.get(), (100 * MIB) as i64);
        assert!(!gate.is_closed());
        set(88);
        eventually("a shrink", || metrics.evicted.get() == 10);
        assert!(!gate.is_closed(), "shrinks before refusing");
        assert_eq!(*shrink.0.lock().unwrap(), vec![SHRINK_FRACTION]);
        set(97);
        eventually("the gate to close", || gate.is_closed());
        assert_eq!(metrics.refusing.get(), 1);
        // One shrink a second at most, however many samples.
        assert_eq!(shrink.0.lock().unwrap().len(), 1);
        set(50);
        eventually("the gate to open", || !gate.is_closed());
        assert_eq!(metrics.refusing.get(), 0);
        watcher.stop();
    }

    #[test]
    fn without_a_limit_the_watcher_only_reports() {
        let gate = Arc::new(memory_gate());
        let metrics = MemoryMetrics::default();
        let watcher = MemoryWatcher::start_with(
            None,
            Duration::from_millis(1),
            Box::new(|| Some(u64::MAX / 2)),
            Box::new(|| false),
            gate.clone(),
            Vec::new(),
            metrics.clone(),
        );
        eventually("the rss gauge", || metrics.rss.get() != 0);
        assert!(!gate.is_closed());
        assert_eq!(metrics.limit.get(), 0);
        watcher.stop();
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_memory_gate_refuses_at_once_and_is_counted_apart() {
        use crate::pipeline::tests::span;
        use crate::pipeline::{Pipeline, PipelineConfig};

        let config = PipelineConfig {
            workers: 1,
            ..PipelineConfig::default()
        };
        let mut pipeline = Pipeline::start(
            &config.checked(),
            &|_| Vec::<Box<dyn crate::pipeline::SpanConsumer>>::new(),
            &mut Registry::default(),
        );
        // Added first, as the app does: a memory refusal waits on no other gate.
        let gate = Arc::new(memory_gate());
        pipeline.add_gate(gate.clone());
        let slow = Arc::new(AdmissionGate::default());
        pipeline.add_gate(slow.clone());
        let handle = pipeline.handle();
        gate.close();
        slow.close();
        let start = tokio::time::Instant::now();
        let refusal = handle.submit(vec![span(1, 1)]).await.unwrap_err();
        assert_eq!(
            refusal,
            Refusal::MemoryLimit {
                retry_after: RETRY_AFTER
            }
        );
        assert_eq!(refusal.reason(), "memory_limit");
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "no wait at the memory gate"
        );
        gate.open();
        slow.open();
        handle.submit(vec![span(2, 1)]).await.unwrap();
    }
}
