//! The history store: per-minute edge and node aggregates (counts, errors
//! and the latency sketches) kept on disk, so windows reach back days and
//! survive restarts.
//!
//! Why SQLite (through `rusqlite`, compiled into the binary) rather than a
//! pure-Rust key-value store such as redb: the history is one file that
//! anyone can open with the `sqlite3` shell to inspect or repair; WAL mode
//! lets API queries read while the writer appends, without either waiting;
//! every minute is a committed transaction, so a `kill -9` loses at most
//! the open minute's last `flush_interval`; and range scans, grouping and
//! deletes for retention and compaction are plain SQL instead of hand-built
//! indexes. The cost is a C library in the build, which `bundled` keeps
//! self-contained.
//!
//! Data flow: each pipeline shard hands its closed minutes (and, every
//! `flush_interval`, the open one) to a bounded queue without waiting
//! ([`Graph::attach`]); one dedicated writer thread ([`writer`]) merges
//! the shards' parts and commits them. Each process run writes under its
//! own epoch, so a minute's rows from an earlier run never collide with
//! this run's, and queries ([`history`]) add memory (this run's minutes)
//! to the store's rows of other runs and of minutes memory no longer holds:
//! nothing is counted twice at the boundary.
//!
//! Failures never stop the collector: a store that cannot be opened (a
//! corrupt file, a newer schema) leaves the collector in memory-only mode
//! with `tracemap_store_degraded` at 1; a failing write is counted, retried
//! and shows in the same gauge; live data stays in memory throughout.

pub mod db;
pub mod history;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::graph::Graph;
use crate::graph::aggregate::{Accumulator, MinuteBatch, MinuteSink, Selection, SinkRefusal};
use crate::graph::edge::Minute;
use crate::validate::{Invalid, Valid};

pub use self::db::Coverage;
pub use self::history::{History, Reach, Series, SeriesPoint};

/// File name of the history database inside `storage.data_dir`.
pub const DB_FILE: &str = "history.db";

/// Durable local state: the data directory and the history store in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory for durable state; created at start, must be writable.
    pub data_dir: PathBuf,
    /// Keep the graph's history in `data_dir/history.db`; when false, only
    /// the last `graph.retention` is kept, in memory.
    pub enabled: bool,
    /// How long history is kept; older buckets are deleted.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// How often the minute still in progress is written, which bounds
    /// what a crash loses; closed minutes are written as they close.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Hand-overs waiting for the writer at most; when full, shards keep
    /// their minutes and offer them again a second later.
    pub queue_capacity: usize,
    /// Older minutes are merged into coarser buckets, tier by tier.
    pub compaction: Vec<CompactionTier>,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./tracemap-data"),
            enabled: true,
            retention: Duration::from_secs(7 * 86_400),
            flush_interval: Duration::from_secs(10),
            queue_capacity: 64,
            compaction: vec![
                CompactionTier {
                    after: Duration::from_secs(25 * 3600),
                    bucket: Duration::from_secs(600),
                },
                CompactionTier {
                    after: Duration::from_secs(72 * 3600),
                    bucket: Duration::from_secs(3600),
                },
            ],
        }
    }
}

/// Buckets older than `after` are merged into buckets of `bucket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompactionTier {
    /// Age from which this tier applies.
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// Length of its buckets: whole minutes dividing a day.
    #[serde(with = "humantime_serde")]
    pub bucket: Duration,
}

impl CompactionTier {
    /// Bucket length in minutes.
    pub fn width(&self) -> i64 {
        (self.bucket.as_secs() / 60) as i64
    }

    /// Age in whole minutes.
    pub fn after_minutes(&self) -> i64 {
        self.after.as_secs().div_ceil(60) as i64
    }
}

impl StorageConfig {
    /// The section checked as `Config::validate` checks it; panics naming
    /// the problems (tests).
    #[cfg(test)]
    pub(crate) fn checked(self, memory: Duration) -> Valid<Self> {
        crate::validate::section(|problems| self.validate("storage", memory, problems))
            .unwrap_or_else(|problems| panic!("invalid StorageConfig: {problems:?}"))
    }

    /// Checks the storage keys; `memory` is `graph.retention`, which the
    /// first compaction tier must exceed (memory answers those minutes).
    ///
    /// Returns the section as `start` takes it when no rule is broken.
    pub fn validate(
        &self,
        prefix: &str,
        memory: Duration,
        invalid: &mut Vec<Invalid>,
    ) -> Option<Valid<Self>> {
        Valid::check(self, invalid, |this, invalid| {
            this.check(prefix, memory, invalid)
        })
    }

    fn check(&self, prefix: &str, memory: Duration, invalid: &mut Vec<Invalid>) {
        let mut bad = |key: &str, reason: String| {
            invalid.push(Invalid {
                key: format!("{prefix}.{key}"),
                reason,
            })
        };
        if self.data_dir.as_os_str().is_empty() {
            bad("data_dir", "must not be empty".into());
        }
        if self.retention < Duration::from_secs(3600) {
            bad("retention", "must be at least 1h".into());
        }
        // Closed minutes are written as they close; a longer interval
        // would let a crash lose more than the minute in progress.
        if self.flush_interval < Duration::from_secs(1)
            || self.flush_interval > Duration::from_secs(60)
        {
            bad("flush_interval", "must be from 1s to 1m".into());
        }
        if self.queue_capacity == 0 {
            bad("queue_capacity", "must be at least 1".into());
        }
        let mut previous: Option<&CompactionTier> = None;
        for (i, tier) in self.compaction.iter().enumerate() {
            let secs = tier.bucket.as_secs();
            if tier.bucket.subsec_nanos() != 0 || secs % 60 != 0 || secs < 120 || 3600 % secs != 0 {
                bad(
                    &format!("compaction[{i}].bucket"),
                    "must be whole minutes from 2m to 1h dividing an hour (such as 10m or 1h)"
                        .into(),
                );
            }
            match previous {
                None if tier.after < memory + Duration::from_secs(120) => bad(
                    &format!("compaction[{i}].after"),
                    format!(
                        "must exceed graph.retention ({}) by at least 2m",
                        humantime::format_duration(memory)
                    ),
                ),
                Some(prev) if tier.after <= prev.after => bad(
                    &format!("compaction[{i}].after"),
                    "must be later than the tier before".into(),
                ),
                Some(prev)
                    if secs <= prev.bucket.as_secs() || secs % prev.bucket.as_secs() != 0 =>
                {
                    bad(
                        &format!("compaction[{i}].bucket"),
                        "must be a larger multiple of the tier before's".into(),
                    )
                }
                _ => {}
            }
            previous = Some(tier);
        }
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join(DB_FILE)
    }

    /// Hours starting before this minute (at `now`) have no minute or
    /// compacted rows left: a 1h tier hands them to the hourly rollups.
    pub fn fine_from(&self, now: Minute) -> Minute {
        self.compaction
            .iter()
            .find(|tier| tier.width() == db::HOUR)
            .map_or(Minute::MIN, |tier| {
                (now - tier.after_minutes()).div_euclid(db::HOUR) * db::HOUR
            })
    }
}

/// Why the history store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused: an unreadable or corrupt file, a full disk, …
    #[error("history database {path}: {what}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// What was being done.
        what: &'static str,
        /// SQLite's error.
        #[source]
        source: rusqlite::Error,
    },
    /// The integrity check found damage.
    #[error(
        "history database {path} is damaged ({detail}); move it away or delete it to start a new history"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// SQLite's first complaint.
        detail: String,
    },
    /// Written by a newer tracemap.
    #[error(
        "history database {path} has schema version {found}; this tracemap reads up to {supported}"
    )]
    Schema {
        /// The database file.
        path: PathBuf,
        /// Version in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A stored sketch does not decode.
    #[error("history database {path}: a stored latency sketch is damaged")]
    Sketch {
        /// The database file.
        path: PathBuf,
        /// The decoder's complaint.
        #[source]
        source: crate::graph::sketch::SketchDecodeError,
    },
}

/// Self-metrics of the store (`tracemap_store_*`).
#[derive(Debug, Clone, Default)]
pub struct StoreMetrics {
    /// 1 when history is not being kept (store unusable or writes failing).
    pub degraded: Gauge,
    /// Minutes whose final state was committed.
    pub minutes_written: Counter,
    /// Minute writes that failed (retried while memory still holds them).
    pub minutes_failed: Counter,
    /// Shard-minutes that never reached the store.
    pub minutes_dropped: Counter,
    /// Hand-overs refused because the queue was full (offered again later).
    pub deferred: Counter,
    /// Rows committed, rewrites of the open minute included.
    pub rows_written: Counter,
    /// Rows merged away by compaction (or dropped once rolled up).
    pub rows_compacted: Counter,
    /// Hourly rollup rows written.
    pub rows_rolled_up: Counter,
    /// Rows deleted by retention.
    pub rows_expired: Counter,
    /// Database plus WAL file size.
    pub size_bytes: Gauge,
    /// Unix time (seconds) before which everything every shard recorded
    /// is committed: what a `kill -9` now would keep.
    pub committed_through: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl StoreMetrics {
    /// Registers every family in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        let store = registry.sub_registry_with_prefix("tracemap_store");
        store.register(
            "degraded",
            "1 when the graph's history is not being stored (memory only)",
            metrics.degraded.clone(),
        );
        store.register(
            "minutes_written",
            "Minutes whose final aggregates were committed",
            metrics.minutes_written.clone(),
        );
        store.register(
            "minutes_failed",
            "Minute writes that failed and were retried or given up",
            metrics.minutes_failed.clone(),
        );
        store.register(
            "minutes_dropped",
            "Shard-minutes that left memory before reaching the store",
            metrics.minutes_dropped.clone(),
        );
        store.register(
            "deferred_handovers",
            "Hand-overs refused by a full queue and offered again",
            metrics.deferred.clone(),
        );
        store.register(
            "rows_written",
            "Rows committed, rewrites of the open minute included",
            metrics.rows_written.clone(),
        );
        store.register(
            "rows_compacted",
            "Rows merged into coarser buckets",
            metrics.rows_compacted.clone(),
        );
        store.register(
            "rows_rolled_up",
            "Hourly rollup rows written",
            metrics.rows_rolled_up.clone(),
        );
        store.register(
            "rows_expired",
            "Rows deleted after storage.retention",
            metrics.rows_expired.clone(),
        );
        store.register(
            "size_bytes",
            "Size of the history database and its WAL",
            metrics.size_bytes.clone(),
        );
        store.register(
            "committed_through_seconds",
            "Unix time before which every recorded span's aggregates are committed (survive a crash)",
            metrics.committed_through.clone(),
        );
        metrics
    }
}

/// An error and its causes, as one line for a log field.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// What the writer thread receives.
pub(crate) enum Message {
    Batch(MinuteBatch),
    /// Commit everything queued before this, then answer.
    Sync(std::sync::mpsc::Sender<()>),
    Stop,
}

/// An open history store: the writer's queue and a pool of read connections.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    config: StorageConfig,
    path: PathBuf,
    epoch: i64,
    /// Newest bucket written by earlier runs: later windows need only memory.
    foreign_until: Minute,
    readers: Mutex<Vec<db::Db>>,
    metrics: StoreMetrics,
    tx: SyncSender<Message>,
    writer: Mutex<Option<writer::WriterHandle>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .field("epoch", &self.inner.epoch)
            .finish()
    }
}

impl Store {
    /// Opens (or creates) the database, checks it, starts a run and the
    /// writer thread. `shards` is the number of pipeline shards that hand
    /// minutes over; `memory` is `graph.retention`.
    pub fn open(
        config: &Valid<StorageConfig>,
        shards: usize,
        memory: Duration,
        metrics: StoreMetrics,
    ) -> Result<Self, StoreError> {
        let path = config.db_path();
        let mut db = db::Db::open(&path)?;
        let epoch = db.begin_run(SystemTime::now())?;
        let foreign_until = db.newest_bucket()?.unwrap_or(Minute::MIN);
        let (tx, rx) = std::sync::mpsc::sync_channel(config.queue_capacity);
        let writer = writer::spawn(
            writer::WriterState::new(
                db,
                epoch,
                shards,
                memory,
                config.get().clone(),
                metrics.clone(),
            ),
            rx,
        );
        metrics.degraded.set(0);
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.get().clone(),
                path,
                epoch,
                foreign_until,
                readers: Mutex::new(Vec::new()),
                metrics,
                tx,
                writer: Mutex::new(Some(writer)),
            }),
        })
    }

    /// The shards' side of the queue.
    pub fn sink(&self) -> Arc<dyn MinuteSink> {
        Arc::new(StoreSink {
            tx: self.inner.tx.clone(),
            metrics: self.inner.metrics.clone(),
            flush_interval: self.inner.config.flush_interval,
        })
    }

    /// This run's epoch: its rows are the ones memory already answers.
    pub fn epoch(&self) -> i64 {
        self.inner.epoch
    }

    /// The configuration in force.
    pub fn config(&self) -> &StorageConfig {
        &self.inner.config
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Self-metrics.
    pub fn metrics(&self) -> &StoreMetrics {
        &self.inner.metrics
    }

    /// Newest bucket an earlier run wrote, `Minute::MIN` when none.
    pub fn foreign_until(&self) -> Minute {
        self.inner.foreign_until
    }

    /// Feeds `acc` the selected rows overlapping the request's minutes,
    /// except this run's rows from `memory_from` on (memory holds those).
    /// Blocks.
    pub fn read(
        &self,
        request: &ReadRequest,
        selection: &Selection<'_>,
        acc: &mut dyn Accumulator,
    ) -> Result<Coverage, StoreError> {
        let pooled = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        let mut db = match pooled {
            Some(db) => db,
            None => db::Db::open_reader(&self.inner.path)?,
        };
        let range = db::ReadRange {
            first: request.first,
            last: request.last,
            memory_from: request.memory_from,
            epoch: self.inner.epoch,
            prefer_rollups: request.prefer_rollups,
            fine_from: self.inner.config.fine_from(request.now),
        };
        let result = db.read(&range, selection, acc);
        // A connection that failed may be broken: open a fresh one next time.
        if result.is_ok() {
            let mut readers = self.inner.readers.lock().unwrap_or_else(|p| p.into_inner());
            if readers.len() < MAX_IDLE_READERS {
                readers.push(db);
            }
        }
        result
    }

    /// Waits until everything queued so far is committed (or failed). Blocks.
    pub fn sync(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.inner.tx.send(Message::Sync(tx)).is_ok() {
            let _ = rx.recv();
        }
    }

    /// Stops taking batches, commits what is queued and joins the writer,
    /// waiting at most until `deadline`. Blocks; call after the final
    /// [`Graph::flush_to_sink`].
    pub fn close(&self, deadline: std::time::Instant) {
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(handle) = handle else {
            return;
        };
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // The queue may be full: wait for room, but not past the deadline.
        let stop = std::time::Instant::now();
        let mut message = Message::Stop;
        loop {
            match self.inner.tx.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if stop.elapsed() < left => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => {
                    tracing::warn!("history store writer did not take the stop request in time");
                    return;
                }
            }
        }
        handle.join(deadline);
    }
}

/// What a query wants from the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    /// First minute of the window.
    pub first: Minute,
    /// Last minute of the window.
    pub last: Minute,
    /// From this minute on memory holds this run's minutes.
    pub memory_from: Minute,
    /// The current minute.
    pub now: Minute,
    /// Whole hours may come from the hourly rollups (false for series
    /// finer than an hour).
    pub prefer_rollups: bool,
}

/// Read connections kept open between queries.
const MAX_IDLE_READERS: usize = 4;

struct StoreSink {
    tx: SyncSender<Message>,
    metrics: StoreMetrics,
    flush_interval: Duration,
}

impl MinuteSink for StoreSink {
    fn offer(&self, batch: MinuteBatch, wait: bool) -> Result<(), SinkRefusal> {
        if wait {
            return self
                .tx
                .send(Message::Batch(batch))
                .map_err(|_| SinkRefusal::Closed);
        }
        match self.tx.try_send(Message::Batch(batch)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.metrics.deferred.inc();
                Err(SinkRefusal::Full)
            }
            Err(TrySendError::Disconnected(_)) => Err(SinkRefusal::Closed),
        }
    }

    fn lost(&self, minutes: u64) {
        self.metrics.minutes_dropped.inc_by(minutes);
    }

    fn flush_interval(&self) -> Duration {
        self.flush_interval
    }
}

/// The writer's side of the queue.
pub(crate) type Inbox = Receiver<Message>;

#[cfg(test)]
pub(crate) mod tests;
