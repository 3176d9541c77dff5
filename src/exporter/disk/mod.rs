//! The disk tier of the export queues: what an exporter will send, kept in
//! a segmented append-only log under `storage.data_dir`, so an outage, a
//! rollout or a SIGKILL loses nothing that was written.
//!
//! Records go in with one `write` per push (the page cache survives the
//! process), are read back in order by the sender and reclaimed once
//! acknowledged; a background task `fsync`s every `fsync_interval` (group
//! commit) so a power loss takes at most that much. The read positions
//! live in a small `position` file: after a restart everything not yet
//! acknowledged is sent again (at least once), and what had already been
//! handed to the sender is counted as possible duplicates. Beyond the byte
//! budget the oldest segment goes, its unsent items counted exactly.
//!
//! Why a log and not SQLite: see the README ("Durable queues"); the
//! measurement is `cargo bench --bench disk_queue`.

mod config;
pub mod log;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, File, OpenOptions};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

pub use config::{DiskQueueConfig, Durability};
use log::{HeaderError, LogError, Pos, PositionFile, Positions, Read1, SegmentReader};

use super::ReasonLabels;
use super::queue::Weighed;

/// Records just written are also kept in memory, up to this many bytes (or
/// an eighth of the budget), so a sender that keeps up never reads them
/// back from disk (the reads, checksums and copies of a second pass).
const CACHE_BYTES: usize = 8 * 1024 * 1024;

/// Drop reasons of the disk tier, as `reason` label values.
pub mod reason {
    /// The byte budget was full; the oldest segment made room.
    pub const DISK_BUDGET: &str = "disk_budget";
    /// Older than the destination accepts, found on replay.
    pub const EXPIRED: &str = "expired";
    /// A record whose checksum did not match (one per record).
    pub const CORRUPT: &str = "corrupt";
}

/// A record the disk tier can hold: it writes itself as the payload and is
/// rebuilt from it.
pub trait Durable: Weighed + Sized + Send + 'static {
    /// Appends the payload.
    fn encode(&self, out: &mut Vec<u8>);
    /// Rebuilds a record of `items` items; `None` if the payload is not one.
    fn decode(items: u32, payload: Bytes) -> Option<Self>;
}

/// Where and how much.
#[derive(Debug, Clone)]
pub struct DiskSettings {
    /// The queue's own directory.
    pub dir: PathBuf,
    /// Bytes on disk at most.
    pub budget: u64,
    /// 0: `fsync` before every push returns.
    pub fsync_interval: Duration,
    /// Records older than this are dropped when read (`expired`).
    pub max_age: Duration,
}

impl DiskSettings {
    /// Segments are an eighth of the budget (64 KiB to 64 MiB), so dropping
    /// the oldest gives back at most an eighth. (8 MiB segments, deleted
    /// sooner, measured no cheaper in `scripts/bench.sh`.)
    fn segment_bytes(&self) -> u64 {
        (self.budget / 8).clamp(64 * 1024, 64 * 1024 * 1024)
    }
}

/// The disk tier's series, one exporter's handles.
#[derive(Debug, Clone, Default)]
pub struct DiskCounters {
    /// Bytes of segment files.
    pub bytes: Gauge,
    /// Records written and not yet taken.
    pub records: Gauge,
    /// Items re-read after a restart.
    pub replayed: Counter,
    /// Of those, items that had been handed to the sender before the restart.
    pub duplicates: Counter,
    /// Seconds since the oldest waiting record was written.
    pub oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Items dropped: budget, expired, corrupt.
    pub dropped_budget: Counter,
    /// Items too old for the destination.
    pub dropped_expired: Counter,
    /// Records with a bad checksum.
    pub dropped_corrupt: Counter,
    /// Bytes appended.
    pub written: Counter,
    /// Storage errors by reason (the queue then holds new records in memory).
    pub(crate) errors: Family<ReasonLabels, Counter>,
    /// The `exporter` label.
    pub exporter: &'static str,
}

impl DiskCounters {
    /// Counts one storage error.
    pub fn error(&self, reason: &'static str) {
        self.errors
            .get_or_create(&ReasonLabels {
                exporter: self.exporter,
                reason,
            })
            .inc();
    }
}

/// Identifies a batch taken for sending, to acknowledge it.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a batch must be acknowledged or it is sent again after a restart"]
pub struct Ticket(u64);

#[derive(Debug)]
struct Segment {
    id: u64,
    /// Bytes of whole records (the write position, for the last one).
    end: u64,
    records: u64,
    items: u64,
    /// Records and items the reader has moved past (taken or dropped).
    read_records: u64,
    read_items: u64,
}

impl Segment {
    /// A new segment: its header only.
    fn empty(id: u64) -> Self {
        Self {
            id,
            end: log::HEADER,
            records: 0,
            items: 0,
            read_records: 0,
            read_items: 0,
        }
    }
}

#[derive(Debug)]
struct Flight {
    start: Pos,
    items: u64,
    acked: bool,
    /// Its segment went over budget while it was in flight.
    abandoned: bool,
}

/// A record just written, kept so a sender that keeps up never reads the
/// disk back: its bytes and checksum are known good.
#[derive(Debug)]
struct Cached<T> {
    start: Pos,
    end: Pos,
    created_ms: u64,
    items: u32,
    record: T,
}

#[derive(Debug)]
struct Inner<T> {
    /// The newest records, also on disk, at most [`CACHE_BYTES`].
    cache: VecDeque<Cached<T>>,
    cache_bytes: usize,
    segments: VecDeque<Segment>,
    writer: File,
    reader: Option<(u64, SegmentReader)>,
    read: Pos,
    frontier: Pos,
    flights: BTreeMap<u64, Flight>,
    next_ticket: u64,
    positions: PositionFile,
    /// The write position at open: records before it are replays.
    replay_end: Pos,
    /// What had been taken before the restart: replays before it may be
    /// duplicates.
    replay_taken: Pos,
    bytes: u64,
    waiting_records: u64,
    waiting_items: u64,
    /// Written since the last `fsync`.
    dirty: bool,
    /// Full segments written since the last `fsync`, by id.
    unsynced: Vec<(u64, File)>,
    buf: Vec<u8>,
}

impl<T> Inner<T> {
    fn write_pos(&self) -> Pos {
        let last = self.segments.back().expect("the active segment");
        Pos {
            segment: last.id,
            offset: last.end,
        }
    }
}

/// A durable queue of `T`; see the module docs.
#[derive(Debug)]
pub struct DiskQueue<T> {
    exporter: &'static str,
    settings: DiskSettings,
    inner: Mutex<Inner<T>>,
    ready: Notify,
    wake_at: usize,
    counters: DiskCounters,
    _records: PhantomData<fn(T) -> T>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl<T: Durable> DiskQueue<T> {
    /// Opens the queue in `settings.dir` (created if missing), checking
    /// every record there, and starts its `fsync` task. Fails, naming the
    /// file, when the directory cannot be written or holds a newer format.
    pub fn open(
        exporter: &'static str,
        settings: DiskSettings,
        wake_at: usize,
        counters: DiskCounters,
    ) -> Result<Arc<Self>, LogError> {
        let dir = settings.dir.clone();
        fs::create_dir_all(&dir).map_err(LogError::io(&dir))?;
        let (positions, stored) = PositionFile::open(&dir)?;
        let ids = log::list_segments(&dir)?;
        let first = ids.first().copied().unwrap_or(1);
        let stored = stored.filter(|p| p.frontier <= p.taken);
        let frontier = stored.map_or(Pos::start_of(first), |p| p.frontier);
        let mut segments = VecDeque::new();
        let mut corrupt = 0u64;
        for (i, &id) in ids.iter().enumerate() {
            let path = log::segment_path(&dir, id);
            if id < frontier.segment {
                fs::remove_file(&path).map_err(LogError::io(&path))?;
                continue;
            }
            let scan = match log::scan(&dir, id, unread_from(frontier, id)) {
                Ok(scan) => scan,
                Err(HeaderError::Log(err)) => return Err(err),
                Err(HeaderError::Damaged(path)) => {
                    let aside = path.with_extension("damaged");
                    tracing::error!(exporter, file = %path.display(), moved_to = %aside.display(),
                        "export queue segment has no valid header; set aside, its records are lost");
                    fs::rename(&path, &aside).map_err(LogError::io(&path))?;
                    corrupt += 1;
                    continue;
                }
            };
            if scan.corrupt > 0 {
                // Counted as the reader skips them.
                tracing::error!(exporter, file = %path.display(), records = scan.corrupt,
                    "export queue segment holds corrupt records; they are skipped, the rest is replayed");
            }
            let last = i + 1 == ids.len();
            if scan.torn_bytes > 0 {
                if scan.lost {
                    corrupt += 1;
                    tracing::error!(exporter, file = %path.display(), bytes = scan.torn_bytes,
                        "export queue segment is unreadable after a corrupt record length; the rest of it is lost");
                } else if last {
                    tracing::warn!(exporter, file = %path.display(), bytes = scan.torn_bytes,
                        "export queue: the last record was cut short (crash during a write); truncated");
                } else {
                    tracing::error!(exporter, file = %path.display(), bytes = scan.torn_bytes,
                        "export queue segment ends in a torn record; skipped");
                }
                OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .and_then(|f| f.set_len(scan.end))
                    .map_err(LogError::io(&path))?;
            }
            segments.push_back(Segment {
                id,
                end: scan.end,
                records: scan.records + scan.consumed_records,
                items: scan.items + scan.consumed_items,
                read_records: scan.consumed_records,
                read_items: scan.consumed_items,
            });
        }
        let writer = match segments.back() {
            Some(last) if last.end < settings.segment_bytes() => {
                let path = log::segment_path(&dir, last.id);
                OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .map_err(LogError::io(&path))?
            }
            other => {
                let id = other.map_or(first.max(frontier.segment), |s| s.id + 1);
                let file = log::create_segment(&dir, id)?;
                segments.push_back(Segment::empty(id));
                file
            }
        };
        let first_kept = segments.front().map_or(first, |s| s.id);
        let read = frontier.max(Pos::start_of(first_kept));
        let waiting_records = segments.iter().map(|s| s.records - s.read_records).sum();
        let waiting_items = segments.iter().map(|s| s.items - s.read_items).sum();
        let bytes = segments.iter().map(|s| s.end).sum();
        let mut inner = Inner {
            cache: VecDeque::new(),
            cache_bytes: 0,
            segments,
            writer,
            reader: None,
            read,
            frontier: read,
            flights: BTreeMap::new(),
            next_ticket: 0,
            positions,
            replay_end: Pos::default(),
            replay_taken: stored.map_or(Pos::default(), |p| p.taken),
            bytes,
            waiting_records,
            waiting_items,
            dirty: false,
            unsynced: Vec::new(),
            buf: Vec::new(),
        };
        inner.replay_end = inner.write_pos();
        if waiting_items > 0 {
            tracing::info!(exporter, dir = %dir.display(), records = waiting_records, items = waiting_items,
                "export queue: replaying what was not acknowledged before the restart");
        }
        counters.dropped_corrupt.inc_by(corrupt);
        counters.bytes.set(bytes as i64);
        counters.records.set(waiting_records as i64);
        let queue = Arc::new(Self {
            exporter,
            settings,
            inner: Mutex::new(inner),
            ready: Notify::new(),
            wake_at: wake_at.max(1),
            counters,
            _records: PhantomData,
        });
        if !queue.settings.fsync_interval.is_zero() {
            tokio::spawn(sync_every(
                Arc::downgrade(&queue),
                queue.settings.fsync_interval,
            ));
        }
        Ok(queue)
    }

    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        // Every change leaves the state consistent even if a holder panicked.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `records` in order with one write; returns them back if the
    /// write failed (the caller keeps them in memory), after counting and
    /// logging the error.
    pub fn push(&self, records: Vec<T>) -> Result<(), (Vec<T>, LogError)> {
        if records.is_empty() {
            return Ok(());
        }
        let created = now_ms();
        let mut inner = self.lock();
        let mut buf = std::mem::take(&mut inner.buf);
        buf.clear();
        let mut items = 0u64;
        let mut lengths = Vec::with_capacity(records.len());
        for record in &records {
            let count = u32::try_from(record.items()).unwrap_or(u32::MAX);
            items += u64::from(count);
            lengths.push(log::encode_record_with(&mut buf, created, count, |out| {
                record.encode(out)
            }));
        }
        let start = inner.write_pos();
        let written = self.write(&mut inner, &buf);
        inner.buf = buf;
        if let Err(err) = written {
            drop(inner);
            self.counters.error(err.reason());
            return Err((records, err));
        }
        let len = inner.buf.len() as u64;
        self.counters.written.inc_by(len);
        let segment = inner.segments.back_mut().expect("the active segment");
        segment.end += len;
        segment.records += records.len() as u64;
        segment.items += items;
        let full = segment.end >= self.settings.segment_bytes();
        inner.bytes += len;
        inner.waiting_records += records.len() as u64;
        self.cache(&mut inner, start, created, records, &lengths);
        inner.waiting_items += items;
        inner.dirty = true;
        if full && let Err(err) = self.rotate(&mut inner) {
            self.counters.error(err.reason());
            tracing::error!(exporter = self.exporter, error = %err, "export queue cannot start a new segment; the current one grows");
        }
        self.enforce_budget(&mut inner);
        self.publish(&inner);
        let waiting = inner.waiting_records;
        drop(inner);
        if waiting >= self.wake_at as u64 {
            self.ready.notify_one();
        }
        Ok(())
    }

    /// Keeps what was just written for the sender, dropping the oldest
    /// cached records (still on disk) beyond [`CACHE_BYTES`].
    fn cache(
        &self,
        inner: &mut Inner<T>,
        start: Pos,
        created_ms: u64,
        records: Vec<T>,
        lengths: &[u64],
    ) {
        let mut at = start;
        for (record, &length) in records.into_iter().zip(lengths) {
            let end = Pos {
                segment: at.segment,
                offset: at.offset + length,
            };
            inner.cache_bytes += record.bytes();
            let items = u32::try_from(record.items()).unwrap_or(u32::MAX);
            inner.cache.push_back(Cached {
                start: at,
                end,
                created_ms,
                items,
                record,
            });
            at = end;
        }
        while inner.cache_bytes > CACHE_BYTES.min(self.settings.budget as usize / 8) {
            let Some(oldest) = inner.cache.pop_front() else {
                break;
            };
            inner.cache_bytes -= oldest.record.bytes();
        }
    }

    fn write(&self, inner: &mut Inner<T>, buf: &[u8]) -> Result<(), LogError> {
        use std::io::Write;
        let segment = inner.segments.back().expect("the active segment");
        let (id, end) = (segment.id, segment.end);
        let path = log::segment_path(&self.settings.dir, id);
        let result = inner.writer.write_all(buf).and_then(|()| {
            if self.settings.fsync_interval.is_zero() {
                inner.writer.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(source) = result {
            // A partial write is cut off, so the file ends at a whole record.
            let _ = inner.writer.set_len(end);
            return Err(LogError::Io { path, source });
        }
        Ok(())
    }

    fn rotate(&self, inner: &mut Inner<T>) -> Result<(), LogError> {
        let id = inner.write_pos().segment + 1;
        let file = log::create_segment(&self.settings.dir, id)?;
        let full = std::mem::replace(&mut inner.writer, file);
        if !self.settings.fsync_interval.is_zero() {
            // Synced with the next group commit, unless acknowledged first.
            inner.unsynced.push((id - 1, full));
        }
        inner.bytes += log::HEADER;
        inner.segments.push_back(Segment::empty(id));
        Ok(())
    }

    /// Drops the oldest segments while over budget, counting exactly the
    /// items in them not yet read (those in flight settle as they end).
    fn enforce_budget(&self, inner: &mut Inner<T>) {
        let mut dropped = 0u64;
        while inner.bytes > self.settings.budget && inner.segments.len() > 1 {
            let oldest = inner.segments.pop_front().expect("more than one");
            dropped += oldest.items - oldest.read_items;
            inner.waiting_records -= oldest.records - oldest.read_records;
            inner.waiting_items -= oldest.items - oldest.read_items;
            inner.bytes -= oldest.end;
            for flight in inner.flights.values_mut() {
                flight.abandoned |= flight.start.segment <= oldest.id;
            }
            let next = Pos::start_of(inner.segments.front().expect("one left").id);
            if inner.read < next {
                inner.read = next;
                inner.reader = None;
            }
            self.remove_segment(oldest.id);
        }
        if dropped > 0 {
            self.counters.dropped_budget.inc_by(dropped);
            self.advance(inner);
        }
    }

    fn remove_segment(&self, id: u64) {
        let path = log::segment_path(&self.settings.dir, id);
        if let Err(err) = fs::remove_file(&path) {
            tracing::warn!(exporter = self.exporter, file = %path.display(), error = %err, "export queue cannot remove a finished segment");
        }
    }

    /// Up to `max` records from the head, if at least `min` (and one) are
    /// waiting; they stay on disk until [`DiskQueue::ack`].
    pub fn take(&self, min: usize, max: usize) -> Option<(Vec<T>, Ticket)> {
        let mut inner = self.lock();
        if inner.waiting_records == 0 || inner.waiting_records < min as u64 {
            return None;
        }
        let start = inner.read;
        let oldest_ms = now_ms().saturating_sub(self.settings.max_age.as_millis() as u64);
        let mut batch = Vec::new();
        while batch.len() < max {
            if let Some((created_ms, items, record)) = self.next_cached(&mut inner) {
                if created_ms < oldest_ms {
                    self.counters.dropped_expired.inc_by(u64::from(items));
                } else {
                    batch.push(record);
                }
                continue;
            }
            let Some(read) = self.next_record(&mut inner) else {
                break;
            };
            let (at, record) = read;
            let items = u64::from(record.items);
            if at < inner.replay_end {
                self.counters.replayed.inc_by(items);
                if at < inner.replay_taken {
                    self.counters.duplicates.inc_by(items);
                }
            }
            if record.created_ms < oldest_ms {
                self.counters.dropped_expired.inc_by(items);
                continue;
            }
            match T::decode(record.items, record.payload) {
                Some(record) => batch.push(record),
                None => {
                    self.counters.dropped_corrupt.inc();
                }
            }
        }
        let ticket = inner.next_ticket;
        inner.next_ticket += 1;
        inner.flights.insert(
            ticket,
            Flight {
                start,
                items: batch.iter().map(Weighed::items).sum(),
                acked: false,
                abandoned: false,
            },
        );
        let positions = Positions {
            frontier: inner.frontier,
            taken: inner.read,
        };
        if let Err(err) = inner.positions.store(positions) {
            self.counters.error(err.reason());
        }
        self.publish(&inner);
        Some((batch, Ticket(ticket)))
    }

    /// The record at the read position if it is cached, moving past it.
    fn next_cached(&self, inner: &mut Inner<T>) -> Option<(u64, u32, T)> {
        self.skip_finished_segments(inner);
        while let Some(front) = inner.cache.front() {
            if front.start >= inner.read {
                break;
            }
            // Read from disk already, or its segment dropped.
            let stale = inner.cache.pop_front().expect("front");
            inner.cache_bytes -= stale.record.bytes();
        }
        if inner.cache.front()?.start != inner.read {
            return None;
        }
        let cached = inner.cache.pop_front().expect("front");
        inner.cache_bytes -= cached.record.bytes();
        let index = inner
            .segments
            .iter()
            .position(|s| s.id == cached.start.segment)?;
        let segment = &mut inner.segments[index];
        segment.read_records += 1;
        segment.read_items += u64::from(cached.items);
        inner.waiting_records -= 1;
        inner.waiting_items -= u64::from(cached.items);
        inner.read = cached.end;
        inner.reader = None;
        Some((cached.created_ms, cached.items, cached.record))
    }

    /// Moves the read position from the end of a finished segment to the
    /// start of the next.
    fn skip_finished_segments(&self, inner: &mut Inner<T>) {
        while let Some(index) = inner
            .segments
            .iter()
            .position(|s| s.id == inner.read.segment)
        {
            if index + 1 == inner.segments.len() || inner.read.offset < inner.segments[index].end {
                return;
            }
            inner.read = Pos::start_of(inner.segments[index + 1].id);
        }
    }

    /// The next readable record and where it starts, moving the read
    /// position (and the segments' read counts) past it; corrupt records
    /// are counted and skipped.
    fn next_record(&self, inner: &mut Inner<T>) -> Option<(Pos, log::Record)> {
        loop {
            let index = inner
                .segments
                .iter()
                .position(|s| s.id >= inner.read.segment)?;
            let (id, end) = (inner.segments[index].id, inner.segments[index].end);
            if inner.read.segment != id {
                inner.read = Pos::start_of(id);
                inner.reader = None;
            }
            if inner.read.offset >= end {
                if index + 1 == inner.segments.len() {
                    return None;
                }
                inner.read = Pos::start_of(inner.segments[index + 1].id);
                inner.reader = None;
                continue;
            }
            if inner.reader.as_ref().is_none_or(|(r, _)| *r != id) {
                match SegmentReader::open(&self.settings.dir, id, inner.read.offset) {
                    Ok(reader) => inner.reader = Some((id, reader)),
                    Err(err) => {
                        self.lose_rest_of_segment(inner, index, &format!("{err:?}"));
                        continue;
                    }
                }
            }
            let at = inner.read;
            let (_, reader) = inner.reader.as_mut().expect("opened above");
            match reader.next(end) {
                Some(Read1::Record(record, next)) => {
                    inner.read.offset = next;
                    let segment = &mut inner.segments[index];
                    segment.read_records += 1;
                    segment.read_items += u64::from(record.items);
                    inner.waiting_records -= 1;
                    inner.waiting_items -= u64::from(record.items);
                    return Some((at, record));
                }
                Some(Read1::Corrupt(next)) => {
                    // Scanned good at open: the file changed under us.
                    inner.read.offset = next;
                    self.counters.dropped_corrupt.inc();
                    tracing::error!(exporter = self.exporter, file = %log::segment_path(&self.settings.dir, id).display(),
                        offset = at.offset, "export queue record failed its checksum; skipped");
                }
                Some(Read1::Lost | Read1::Torn) | None => {
                    self.lose_rest_of_segment(inner, index, "unreadable record");
                }
            }
        }
    }

    fn lose_rest_of_segment(&self, inner: &mut Inner<T>, index: usize, why: &str) {
        let segment = &mut inner.segments[index];
        let records = segment.records - segment.read_records;
        let items = segment.items - segment.read_items;
        segment.read_records = segment.records;
        segment.read_items = segment.items;
        let (id, end) = (segment.id, segment.end);
        inner.waiting_records -= records;
        inner.waiting_items -= items;
        inner.read = Pos {
            segment: id,
            offset: end,
        };
        inner.reader = None;
        self.counters.dropped_corrupt.inc_by(records);
        tracing::error!(exporter = self.exporter, file = %log::segment_path(&self.settings.dir, id).display(),
            records, reason = why, "export queue segment unreadable from here; its remaining records are lost");
    }

    /// Whether the batch of `ticket` came from a segment the budget has
    /// since dropped: its sender stops retrying and counts what is left of
    /// it as dropped (`disk_budget`), so exactly the oldest are lost.
    pub fn is_abandoned(&self, ticket: &Ticket) -> bool {
        self.lock()
            .flights
            .get(&ticket.0)
            .is_some_and(|f| f.abandoned)
    }

    /// Counts `items` of an abandoned batch as dropped (`disk_budget`).
    pub fn count_abandoned(&self, items: u64) {
        self.counters.dropped_budget.inc_by(items);
    }

    /// The batch of `ticket` is done (delivered, or failed for good and
    /// counted): its records are reclaimed once every earlier batch is too.
    pub fn ack(&self, ticket: Ticket) {
        let mut inner = self.lock();
        if let Some(flight) = inner.flights.get_mut(&ticket.0) {
            flight.acked = true;
        }
        self.advance(&mut inner);
    }

    /// Moves the frontier past acknowledged batches, stores it and removes
    /// segments wholly before it.
    fn advance(&self, inner: &mut Inner<T>) {
        while let Some(entry) = inner.flights.first_entry() {
            if !entry.get().acked {
                break;
            }
            entry.remove();
        }
        let frontier = inner
            .flights
            .values()
            .next()
            .map_or(inner.read, |f| f.start);
        if frontier == inner.frontier {
            return;
        }
        inner.frontier = frontier;
        let positions = Positions {
            frontier,
            taken: inner.read,
        };
        if let Err(err) = inner.positions.store(positions) {
            self.counters.error(err.reason());
        }
        while inner.segments.len() > 1 && inner.segments[0].id < frontier.segment {
            let done = inner.segments.pop_front().expect("more than one");
            inner.bytes -= done.end;
            self.remove_segment(done.id);
        }
        self.publish(inner);
    }

    fn publish(&self, inner: &Inner<T>) {
        self.counters.bytes.set(inner.bytes as i64);
        self.counters.records.set(inner.waiting_records as i64);
    }

    /// Items written and not yet taken.
    pub fn waiting_items(&self) -> u64 {
        self.lock().waiting_items
    }

    /// Items not acknowledged: waiting, or taken and not yet acknowledged;
    /// what the next start sends (again).
    pub fn unacknowledged_items(&self) -> u64 {
        let inner = self.lock();
        let in_flight: u64 = inner
            .flights
            .values()
            .filter(|f| !f.acked)
            .map(|f| f.items)
            .sum();
        inner.waiting_items + in_flight
    }

    /// Records written and not yet taken.
    pub fn waiting_records(&self) -> u64 {
        self.lock().waiting_records
    }

    /// Bytes of segment files now, against [`DiskQueue::budget`].
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// The byte budget.
    pub fn budget(&self) -> u64 {
        self.settings.budget
    }

    /// Returns once a full batch may be waiting (a wake-up is never lost).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// `fsync`s what was written since the last one (also on shutdown).
    /// Only what is not yet acknowledged needs it: segments already
    /// reclaimed are skipped, and nothing is synced when everything written
    /// was acknowledged (a power loss would lose nothing).
    pub fn sync(&self) {
        let files = {
            let mut inner = self.lock();
            if !inner.dirty {
                return;
            }
            inner.dirty = false;
            let frontier = inner.frontier;
            let full = std::mem::take(&mut inner.unsynced);
            if frontier >= inner.write_pos() {
                return;
            }
            let mut files: Vec<std::io::Result<File>> = full
                .into_iter()
                .filter(|(id, _)| *id >= frontier.segment)
                .map(|(_, file)| Ok(file))
                .collect();
            files.push(inner.writer.try_clone());
            files.push(inner.positions.handle());
            files
        };
        for file in files {
            if let Err(err) = file.and_then(|f| f.sync_data()) {
                self.counters.error("fsync");
                tracing::warn!(exporter = self.exporter, dir = %self.settings.dir.display(), error = %err, "export queue fsync failed");
            }
        }
    }

    /// Sets the oldest-record age gauge from the record at the read position.
    fn observe_age(&self) {
        let mut inner = self.lock();
        let age = if inner.waiting_records == 0 {
            0.0
        } else {
            self.peek_created(&mut inner)
                .map_or(0.0, |ms| now_ms().saturating_sub(ms) as f64 / 1000.0)
        };
        self.counters.oldest_age.set(age);
    }

    fn peek_created(&self, inner: &mut Inner<T>) -> Option<u64> {
        let read = inner.read;
        let segment = inner.segments.iter().find(|s| s.id >= read.segment)?;
        let at = if segment.id == read.segment {
            read.offset
        } else {
            log::HEADER
        };
        let mut header = [0u8; 16];
        let file = File::open(log::segment_path(&self.settings.dir, segment.id)).ok()?;
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut header, at).ok()?;
        Some(u64::from_le_bytes(header[8..16].try_into().ok()?))
    }

    /// The directory this queue lives in.
    pub fn dir(&self) -> &Path {
        &self.settings.dir
    }
}

/// Where scanning a segment starts counting unread records.
fn unread_from(frontier: Pos, id: u64) -> u64 {
    if frontier.segment == id {
        frontier.offset
    } else {
        log::HEADER
    }
}

async fn sync_every<T: Durable>(queue: Weak<DiskQueue<T>>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval.min(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut since_sync = Duration::ZERO;
    loop {
        ticker.tick().await;
        let Some(queue) = queue.upgrade() else { return };
        since_sync += ticker.period();
        if since_sync >= interval {
            since_sync = Duration::ZERO;
            let syncing = queue.clone();
            let _ = tokio::task::spawn_blocking(move || syncing.sync()).await;
        }
        queue.observe_age();
    }
}
