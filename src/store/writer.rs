//! The writer thread: takes the shards' minute hand-overs off the bounded
//! queue, merges the shards' parts of each minute, commits, and now and
//! then applies retention and compaction. It is the only writer of the
//! database, so the pipeline workers never wait on the disk.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant, SystemTime};

use super::db::{Db, EdgeRow, HOUR, NodeRow};
use super::{Inbox, Message, StorageConfig, StoreMetrics};
use crate::graph::aggregate::MinuteBatch;
use crate::graph::edge::{EdgeKey, EdgeStats, Minute, NodeStats};
use crate::graph::unix_minute;

/// How long the writer sleeps when there is nothing to write.
const IDLE: Duration = Duration::from_secs(1);
/// How often retention and compaction run when there is no backlog.
const MAINTENANCE_EVERY: Duration = Duration::from_secs(60);
/// Rollups and compactions per maintenance pass, so batches never wait
/// long behind them.
const MAINTENANCE_STEP: usize = 16;
/// Minutes past memory's reach before an hour is rolled up: every shard
/// has handed its minutes over by then.
const ROLLUP_MARGIN: i64 = 2;

/// One shard's part of one minute.
#[derive(Debug, Default)]
struct Part {
    edges: Vec<(EdgeKey, EdgeStats)>,
    nodes: Vec<(Arc<str>, NodeStats)>,
}

#[derive(Debug, Default)]
struct PendingMinute {
    /// Latest part from each shard; a later hand-over replaces it.
    parts: Vec<Option<Part>>,
    /// Changed since last committed.
    dirty: bool,
}

/// Everything the writer thread owns; driven by the thread, or step by step
/// in tests.
pub struct WriterState {
    db: Db,
    epoch: i64,
    shards: usize,
    memory_minutes: i64,
    config: StorageConfig,
    metrics: StoreMetrics,
    minutes: BTreeMap<Minute, PendingMinute>,
    /// Per shard: every minute up to this one is final.
    sealed: Vec<Minute>,
    /// Per shard: what it had recorded before this instant is applied;
    /// it is committed once no minute is dirty.
    as_of: Vec<Option<Instant>>,
    /// Minutes up to this one were forgotten; late parts of them are dropped,
    /// since writing them alone would replace the other shards' parts.
    forgotten_through: Minute,
    failing: bool,
    next_maintenance: Instant,
}

impl WriterState {
    /// State for run `epoch` fed by `shards` shards; `memory` is
    /// `graph.retention`, how long a failed minute may be retried.
    pub fn new(
        db: Db,
        epoch: i64,
        shards: usize,
        memory: Duration,
        config: StorageConfig,
        metrics: StoreMetrics,
    ) -> Self {
        Self {
            db,
            epoch,
            shards: shards.max(1),
            memory_minutes: memory.as_secs().div_ceil(60) as i64,
            config,
            metrics,
            minutes: BTreeMap::new(),
            sealed: vec![Minute::MIN; shards.max(1)],
            as_of: vec![None; shards.max(1)],
            forgotten_through: Minute::MIN,
            failing: false,
            next_maintenance: Instant::now(),
        }
    }

    /// Takes one shard's hand-over.
    pub fn apply(&mut self, batch: MinuteBatch) {
        let shard = batch.shard.min(self.shards - 1);
        self.sealed[shard] = self.sealed[shard].max(batch.sealed_through);
        if batch.as_of.is_some() {
            self.as_of[shard] = batch.as_of;
        }
        let mut parts: BTreeMap<Minute, Part> = BTreeMap::new();
        for (minute, key, stats) in batch.edges {
            parts.entry(minute).or_default().edges.push((key, stats));
        }
        for (minute, service, stats) in batch.nodes {
            parts
                .entry(minute)
                .or_default()
                .nodes
                .push((service, stats));
        }
        for (minute, part) in parts {
            if minute <= self.forgotten_through {
                self.metrics.minutes_dropped.inc();
                continue;
            }
            let pending = self.minutes.entry(minute).or_default();
            if pending.parts.is_empty() {
                pending.parts.resize_with(self.shards, || None);
            }
            pending.parts[shard] = Some(part);
            pending.dirty = true;
        }
    }

    /// Commits every changed minute in one transaction, then forgets the
    /// minutes every shard has sealed. A minute that cannot be written is
    /// retried as long as the shards' memory still holds it.
    pub fn commit(&mut self) {
        let dirty: Vec<Minute> = self
            .minutes
            .iter()
            .filter(|(_, p)| p.dirty)
            .map(|(m, _)| *m)
            .collect();
        if !dirty.is_empty() {
            let merged: Vec<(Minute, Vec<EdgeRow>, Vec<NodeRow>)> = dirty
                .iter()
                .map(|minute| {
                    let (edges, nodes) = merge(&self.minutes[minute]);
                    (*minute, edges, nodes)
                })
                .collect();
            let sealed = self.sealed.iter().copied().min().unwrap_or(Minute::MIN);
            match self.db.write_minutes(self.epoch, &merged, sealed) {
                Ok(written) => {
                    self.metrics.rows_written.inc_by(written.rows);
                    for hour in written.stale_hours {
                        match self.db.roll_up(hour) {
                            Ok(rows) => {
                                self.metrics.rows_rolled_up.inc_by(rows);
                            }
                            Err(err) => tracing::warn!(error = %err, "history rollup failed"),
                        }
                    }
                    for minute in &dirty {
                        if let Some(pending) = self.minutes.get_mut(minute) {
                            pending.dirty = false;
                        }
                    }
                    if self.failing {
                        self.failing = false;
                        self.metrics.degraded.set(0);
                        tracing::info!(path = %self.config.db_path().display(), "history store writes work again");
                    }
                }
                Err(err) => {
                    self.metrics.minutes_failed.inc_by(dirty.len() as u64);
                    self.metrics.degraded.set(1);
                    if !self.failing {
                        self.failing = true;
                        tracing::warn!(
                            error = %err,
                            "history store write failed; retrying while memory holds the minutes"
                        );
                    }
                }
            }
        }
        if self.minutes.values().all(|p| !p.dirty) {
            self.publish_committed_through();
        }
        let sealed = self.sealed.iter().copied().min().unwrap_or(Minute::MIN);
        // The newest sealed minute stands for "now": memory holds the
        // minutes after it less the retention.
        let newest = self.sealed.iter().copied().max().unwrap_or(Minute::MIN);
        let give_up = newest.saturating_sub(self.memory_minutes);
        while let Some(entry) = self.minutes.first_entry() {
            let minute = *entry.key();
            let done = minute <= sealed && !entry.get().dirty;
            if done {
                self.metrics.minutes_written.inc();
            } else if minute < give_up {
                // Memory no longer holds it either; it is lost to history.
                self.metrics.minutes_dropped.inc();
            } else {
                break;
            }
            self.forgotten_through = minute;
            entry.remove();
        }
    }

    /// Sets `committed_through` to the oldest of the shards' `as_of`, as
    /// wall-clock time: every shard's data before it is in the database.
    fn publish_committed_through(&self) {
        // `None` sorts first: a shard yet to report holds the point back.
        let Some(Some(oldest)) = self.as_of.iter().min().copied() else {
            return;
        };
        let age = Instant::now().saturating_duration_since(oldest);
        let at = SystemTime::now()
            .checked_sub(age)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |d| d.as_secs_f64());
        self.metrics.committed_through.set(at);
    }

    /// Deletes what is past retention, rolls up the hours memory no longer
    /// holds, and compacts a step of old buckets; true when there is more
    /// to do.
    pub fn maintain(&mut self, now: SystemTime) -> bool {
        let minute = unix_minute(now);
        let retention = self.config.retention.as_secs().div_ceil(60) as i64;
        match self.db.expire(minute - retention) {
            Ok(rows) => {
                self.metrics.rows_expired.inc_by(rows);
            }
            Err(err) => tracing::warn!(error = %err, "history retention failed"),
        }
        let mut budget = MAINTENANCE_STEP;
        let rolled_until = match self.roll_up(minute, &mut budget) {
            Ok(rolled_until) => rolled_until,
            Err(err) => {
                tracing::warn!(error = %err, "history rollup failed");
                return false;
            }
        };
        let mut more = budget == 0;
        for tier in self.config.compaction.clone() {
            let width = tier.width();
            let cut = (minute - tier.after_minutes()).div_euclid(width) * width;
            if width == HOUR {
                // The hourly rollups hold these hours: drop the minutes.
                match self.db.drop_fine_before(cut.min(rolled_until)) {
                    Ok(rows) => {
                        self.metrics.rows_compacted.inc_by(rows);
                    }
                    Err(err) => tracing::warn!(error = %err, "history compaction failed"),
                }
                continue;
            }
            let targets = match self.db.compaction_targets(width, cut, budget + 1) {
                Ok(targets) => targets,
                Err(err) => {
                    tracing::warn!(error = %err, "history compaction failed");
                    return false;
                }
            };
            more |= targets.len() > budget;
            for target in targets.into_iter().take(budget) {
                match self.db.compact(target, width) {
                    Ok(rows) => {
                        self.metrics.rows_compacted.inc_by(rows);
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "history compaction failed");
                        return false;
                    }
                }
                budget -= 1;
            }
            if budget == 0 {
                more = true;
                break;
            }
        }
        self.metrics.size_bytes.set(self.db.size_bytes() as i64);
        more
    }

    /// Rolls up, oldest first and within `budget`, every hour that ended
    /// before memory's reach (so no minute of it can still change); returns
    /// the minute before which all hours are rolled up.
    fn roll_up(&mut self, minute: Minute, budget: &mut usize) -> Result<Minute, super::StoreError> {
        let ready = (minute - self.memory_minutes - ROLLUP_MARGIN).div_euclid(HOUR) * HOUR;
        let oldest = self
            .db
            .oldest_fine_bucket()?
            .map(|m| m.div_euclid(HOUR) * HOUR);
        let mut next = match (self.db.rolled_until()?, oldest) {
            // Skip hours with no rows left (retention, or a long stop).
            (Some(rolled), Some(oldest)) => rolled.max(oldest),
            (Some(rolled), None) => rolled.max(ready),
            (None, Some(oldest)) => oldest,
            (None, None) => ready,
        };
        while next + HOUR <= ready && *budget > 0 {
            let rows = self.db.roll_up(next)?;
            self.metrics.rows_rolled_up.inc_by(rows);
            next += HOUR;
            *budget -= 1;
        }
        Ok(next)
    }

    /// The loop of the writer thread, until [`Message::Stop`] or the queue closes.
    fn run(mut self, inbox: Inbox) {
        let mut stopping = false;
        let mut waiting = Vec::new();
        while !stopping {
            match inbox.recv_timeout(IDLE) {
                Ok(Message::Batch(batch)) => self.apply(batch),
                Ok(Message::Sync(reply)) => waiting.push(reply),
                Ok(Message::Stop) | Err(RecvTimeoutError::Disconnected) => stopping = true,
                Err(RecvTimeoutError::Timeout) => {}
            }
            // Take everything queued, so one transaction covers it.
            while !stopping {
                match inbox.try_recv() {
                    Ok(Message::Batch(batch)) => self.apply(batch),
                    Ok(Message::Sync(reply)) => waiting.push(reply),
                    Ok(Message::Stop) => stopping = true,
                    Err(_) => break,
                }
            }
            self.commit();
            for reply in waiting.drain(..) {
                let _ = reply.send(());
            }
            if !stopping && Instant::now() >= self.next_maintenance {
                let more = self.maintain(SystemTime::now());
                self.next_maintenance =
                    Instant::now() + if more { IDLE } else { MAINTENANCE_EVERY };
            }
        }
        let left = self.minutes.values().filter(|p| p.dirty).count();
        if left > 0 {
            tracing::warn!(
                minutes = left,
                "history store stopped with unwritten minutes"
            );
        }
    }
}

/// Sums the shards' parts of one minute.
fn merge(pending: &PendingMinute) -> (Vec<EdgeRow>, Vec<NodeRow>) {
    let mut edges: std::collections::HashMap<&EdgeKey, EdgeStats> = Default::default();
    let mut nodes: std::collections::HashMap<&Arc<str>, NodeStats> = Default::default();
    for part in pending.parts.iter().flatten() {
        for (key, stats) in &part.edges {
            edges.entry(key).or_default().merge(stats);
        }
        for (service, stats) in &part.nodes {
            nodes.entry(service).or_default().merge(stats);
        }
    }
    (
        edges.into_iter().map(|(k, s)| (k.clone(), s)).collect(),
        nodes.into_iter().map(|(n, s)| (n.clone(), s)).collect(),
    )
}

/// The running writer thread.
pub struct WriterHandle {
    thread: std::thread::JoinHandle<()>,
    done: std::sync::mpsc::Receiver<()>,
}

impl WriterHandle {
    /// Waits for the thread to finish, at most until `deadline`.
    pub fn join(self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        match self.done.recv_timeout(left) {
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                if self.thread.join().is_err() {
                    tracing::error!("history store writer panicked");
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                tracing::warn!("history store writer did not finish before the deadline");
            }
        }
    }
}

/// Starts the writer thread.
pub(crate) fn spawn(state: WriterState, inbox: Inbox) -> WriterHandle {
    let (done_tx, done) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("tracemap-store".into())
        .spawn(move || {
            state.run(inbox);
            let _ = done_tx.send(());
        })
        .expect("spawning the history store writer");
    WriterHandle { thread, done }
}
