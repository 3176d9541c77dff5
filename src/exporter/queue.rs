//! The one bounded queue between an exporter's producers and its sender.
//!
//! Bounded in records and in bytes. When a push would pass either budget
//! the policy decides: [`Overflow::DropOldest`] makes room by dropping the
//! oldest records (counted in the exporter's `queue_full` drops, warned
//! once, then only counted), [`Overflow::Refuse`] hands the records that do
//! not fit back to the caller, who refuses them upstream. Records taken by
//! the sender stay counted as in flight until settled, so shutdown can say
//! exactly what was lost.
//!
//! A refusing queue can also admit before it queues: permits for the
//! records are taken first (waiting for room, or not), so a request that
//! spans several queues is admitted to all of them or none, and the room
//! comes back only when the records leave for good ([`BoundedQueue::release`]),
//! so the bound covers queued and in-flight records alike. A request bigger
//! than the whole queue takes every permit and runs up a debt its own
//! release pays first: the bound is passed by at most one request and never
//! drifts. The disk tier of the durable-queue work goes under
//! this type: records are already what the sender will send.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// What a record weighs against a queue's budgets.
pub trait Weighed {
    /// The items it carries (spans, metric values), as metrics count them.
    fn items(&self) -> u64;
    /// Its size in memory, near enough for a byte budget.
    fn bytes(&self) -> usize;
}

/// What a full queue does with more records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    /// Drop the oldest records, counted as `queue_full`.
    DropOldest,
    /// Keep what is queued and give the new records back.
    Refuse,
}

/// A queue's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Records queued at most.
    pub records: usize,
    /// Bytes queued at most.
    pub bytes: usize,
}

impl Budget {
    /// A record budget with the default byte budget: 256 MiB, far above
    /// what the record budgets reach with real documents, so it only stops
    /// a pathological mix of huge records.
    pub const fn records(records: usize) -> Self {
        Self {
            records,
            bytes: 256 * 1024 * 1024,
        }
    }
}

/// Logs a hot-path warning the first time only; the metric counts the rest.
#[derive(Debug, Default)]
pub struct WarnOnce(AtomicBool);

impl WarnOnce {
    /// True the first time it is asked.
    pub fn first(&self) -> bool {
        !self.0.swap(true, Ordering::Relaxed)
    }
}

#[derive(Debug)]
struct State<T> {
    records: VecDeque<T>,
    items: u64,
    bytes: usize,
    /// When the oldest queued record arrived.
    since: Option<Instant>,
    /// Records admitted beyond the permits they took (oversize requests).
    debt: usize,
}

/// A bounded queue of `T`; see the module docs.
#[derive(Debug)]
pub struct BoundedQueue<T> {
    exporter: &'static str,
    budget: Budget,
    overflow: Overflow,
    state: Mutex<State<T>>,
    ready: Notify,
    /// Refuse: room for admitted records (queued and in flight).
    room: Option<Arc<Semaphore>>,
    /// [`BoundedQueue::ready`] wakes once this many records are queued.
    wake_at: usize,
    in_flight: AtomicU64,
    /// Items waiting (refuse: admitted and not yet released).
    depth: Gauge,
    /// Items dropped to make room (`reason="queue_full"`).
    dropped: Counter,
    full: WarnOnce,
}

impl<T: Weighed> BoundedQueue<T> {
    /// An empty queue reporting through `depth` and `dropped` (the
    /// exporter's `queue_depth` and `queue_full` series).
    pub fn new(
        exporter: &'static str,
        budget: Budget,
        overflow: Overflow,
        depth: Gauge,
        dropped: Counter,
    ) -> Self {
        Self {
            exporter,
            budget,
            overflow,
            state: Mutex::new(State {
                records: VecDeque::with_capacity(budget.records.min(4096)),
                items: 0,
                bytes: 0,
                since: None,
                debt: 0,
            }),
            ready: Notify::new(),
            room: (overflow == Overflow::Refuse).then(|| Arc::new(Semaphore::new(budget.records))),
            wake_at: 1,
            in_flight: AtomicU64::new(0),
            depth,
            dropped,
            full: WarnOnce::default(),
        }
    }

    /// Wakes [`BoundedQueue::ready`] only once `records` are queued (a full
    /// batch), not on every push.
    pub fn wake_at(mut self, records: usize) -> Self {
        self.wake_at = records.max(1);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // Every change leaves the state consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `records` in order, then applies the policy; `observe` sees
    /// the record count under the lock, so decisions follow it in order.
    /// Returns the records refused (`Refuse`; none for `DropOldest`).
    pub fn push_observed(
        &self,
        records: impl IntoIterator<Item = T>,
        observe: impl FnOnce(usize),
    ) -> Vec<T> {
        let mut dropped = 0u64;
        let mut refused = Vec::new();
        let len = {
            let mut state = self.lock();
            for record in records {
                let fits = state.records.len() < self.budget.records
                    && state.bytes + record.bytes() <= self.budget.bytes;
                if !fits && self.overflow == Overflow::Refuse {
                    refused.push(record);
                    continue;
                }
                state.items += record.items();
                state.bytes += record.bytes();
                state.records.push_back(record);
                while state.records.len() > self.budget.records
                    || (state.bytes > self.budget.bytes && state.records.len() > 1)
                {
                    let oldest = state.records.pop_front().expect("over budget, not empty");
                    state.items -= oldest.items();
                    state.bytes -= oldest.bytes();
                    dropped += oldest.items();
                }
            }
            if !state.records.is_empty() {
                state.since.get_or_insert_with(Instant::now);
            }
            self.depth.set(state.items as i64);
            observe(state.records.len());
            state.records.len()
        };
        if dropped > 0 {
            self.dropped.inc_by(dropped);
            if self.full.first() {
                tracing::warn!(
                    exporter = self.exporter,
                    records = self.budget.records,
                    bytes = self.budget.bytes,
                    "export queue full, dropping the oldest; counted in tracemap_exporter_dropped_total{{reason=\"queue_full\"}}"
                );
            }
        }
        if len >= self.wake_at {
            self.ready.notify_one();
        }
        refused
    }

    /// [`BoundedQueue::push_observed`] with nothing to observe.
    pub fn push(&self, records: impl IntoIterator<Item = T>) -> Vec<T> {
        self.push_observed(records, |_| {})
    }

    /// Up to `max` records from the head, if at least `min` (and one) are
    /// queued; they count as in flight until [`BoundedQueue::settle`]d.
    pub fn take_observed(
        &self,
        min: usize,
        max: usize,
        observe: impl FnOnce(usize),
    ) -> Option<Vec<T>> {
        let mut state = self.lock();
        if state.records.is_empty() || state.records.len() < min {
            return None;
        }
        let count = max.min(state.records.len());
        let batch: Vec<T> = state.records.drain(..count).collect();
        let items: u64 = batch.iter().map(Weighed::items).sum();
        state.items -= items;
        state.bytes -= batch.iter().map(Weighed::bytes).sum::<usize>();
        state.since = (!state.records.is_empty()).then(Instant::now);
        if self.room.is_none() {
            self.depth.set(state.items as i64);
        }
        // Under the lock: an item is always either queued or in flight.
        // (Refuse: release is the accounting; nothing to settle.)
        if self.room.is_none() {
            self.in_flight.fetch_add(items, Ordering::Relaxed);
        }
        observe(state.records.len());
        Some(batch)
    }

    /// [`BoundedQueue::take_observed`] with nothing to observe.
    pub fn take(&self, min: usize, max: usize) -> Option<Vec<T>> {
        self.take_observed(min, max, |_| {})
    }

    /// Refuse: permits for up to `count` records without waiting.
    pub fn try_admit(&self, count: usize) -> Option<OwnedSemaphorePermit> {
        let room = self
            .room
            .as_ref()
            .expect("admission is for refusing queues");
        room.clone()
            .try_acquire_many_owned(self.permits_for(count))
            .ok()
    }

    /// Refuse: permits for up to `count` records, waiting for room; `None`
    /// once the queue is closed.
    pub async fn admit(&self, count: usize) -> Option<OwnedSemaphorePermit> {
        let room = self
            .room
            .as_ref()
            .expect("admission is for refusing queues");
        room.clone()
            .acquire_many_owned(self.permits_for(count))
            .await
            .ok()
    }

    fn permits_for(&self, count: usize) -> u32 {
        u32::try_from(count.min(self.budget.records)).unwrap_or(u32::MAX)
    }

    /// Refuse: queues records admitted with `permit`; their room comes back
    /// through [`BoundedQueue::release`] when they leave.
    pub fn push_admitted(&self, records: Vec<T>, permit: OwnedSemaphorePermit) {
        let count = records.len();
        let held = permit.num_permits();
        permit.forget();
        {
            let mut state = self.lock();
            state.debt += count.saturating_sub(held);
            if state.records.is_empty() {
                state.since = Some(Instant::now());
            }
            for record in records {
                state.items += record.items();
                state.bytes += record.bytes();
                state.records.push_back(record);
            }
        }
        self.depth.inc_by(count as i64);
        if count > 0 {
            self.ready.notify_one();
        }
    }

    /// Puts records taken for a batch back at the head (a batch split).
    pub fn unshift(&self, records: Vec<T>) {
        let mut state = self.lock();
        for record in records.into_iter().rev() {
            state.items += record.items();
            state.bytes += record.bytes();
            state.records.push_front(record);
        }
        state.since.get_or_insert_with(Instant::now);
    }

    /// Refuse: gives back the room of `count` admitted records that left
    /// for good (delivered, dropped and counted, or moved elsewhere).
    pub fn release(&self, count: usize) {
        let returned = {
            let mut state = self.lock();
            let paid = state.debt.min(count);
            state.debt -= paid;
            count - paid
        };
        if let Some(room) = &self.room {
            room.add_permits(returned);
        }
        self.depth.dec_by(count as i64);
    }

    /// Nothing queued and (refuse) every admitted record released.
    pub fn is_idle(&self) -> bool {
        let empty = self.is_empty();
        let released = self
            .room
            .as_ref()
            .is_none_or(|room| room.available_permits() == self.budget.records);
        empty && released && self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// The head record, in flight until settled.
    pub fn pop(&self) -> Option<T> {
        self.take(1, 1).and_then(|mut batch| batch.pop())
    }

    /// Marks `items` in flight as done (sent, failed or dropped, each
    /// counted by the caller).
    pub fn settle(&self, items: u64) {
        self.in_flight.fetch_sub(items, Ordering::Relaxed);
    }

    /// Calls `observe` with the record count under the lock, for a decision
    /// that changed for another reason (an exporter's health).
    pub fn observe(&self, observe: impl FnOnce(usize)) {
        let state = self.lock();
        observe(state.records.len());
    }

    /// Records queued now.
    pub fn len(&self) -> usize {
        self.lock().records.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.lock().records.is_empty()
    }

    /// Items queued now.
    pub fn queued_items(&self) -> u64 {
        self.lock().items
    }

    /// Items queued or in flight: what a shutdown now would lose.
    pub fn pending_items(&self) -> u64 {
        let state = self.lock();
        state.items + self.in_flight.load(Ordering::Relaxed)
    }

    /// When the oldest queued record arrived (none when empty).
    pub fn oldest(&self) -> Option<Instant> {
        self.lock().since
    }

    /// Returns once at least the wake-up count of records may be waiting
    /// (a wake-up is never lost).
    pub async fn ready(&self) {
        self.ready.notified().await;
    }

    /// The `exporter` label of its series.
    pub fn exporter(&self) -> &'static str {
        self.exporter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Record {
        id: u32,
        items: u64,
        bytes: usize,
    }

    impl Weighed for Record {
        fn items(&self) -> u64 {
            self.items
        }
        fn bytes(&self) -> usize {
            self.bytes
        }
    }

    fn records(ids: std::ops::RangeInclusive<u32>, items: u64, bytes: usize) -> Vec<Record> {
        ids.map(|id| Record { id, items, bytes }).collect()
    }

    fn queue(budget: Budget, overflow: Overflow) -> BoundedQueue<Record> {
        BoundedQueue::new(
            "test",
            budget,
            overflow,
            Gauge::default(),
            Counter::default(),
        )
    }

    fn ids(batch: &[Record]) -> Vec<u32> {
        batch.iter().map(|r| r.id).collect()
    }

    #[test]
    fn drop_oldest_keeps_the_newest_within_the_record_budget() {
        let q = queue(Budget::records(4), Overflow::DropOldest);
        assert!(q.push(records(1..=3, 2, 10)).is_empty());
        assert!(q.push(records(4..=6, 2, 10)).is_empty());
        assert_eq!(q.dropped.get(), 2 * 2, "two records of two items");
        assert_eq!(q.depth.get(), 4 * 2);
        assert!(q.full.0.load(Ordering::Relaxed), "warned");
        assert_eq!(ids(&q.take(1, 10).unwrap()), [3, 4, 5, 6]);
    }

    #[test]
    fn the_byte_budget_drops_the_oldest_too_but_keeps_one_record() {
        let q = queue(
            Budget {
                records: 100,
                bytes: 25,
            },
            Overflow::DropOldest,
        );
        q.push(records(1..=3, 1, 10));
        assert_eq!(q.len(), 2, "30 bytes over a 25-byte budget");
        assert_eq!(q.dropped.get(), 1);
        q.push([Record {
            id: 9,
            items: 1,
            bytes: 100,
        }]);
        assert_eq!(
            ids(&q.take(1, 10).unwrap()),
            [9],
            "a record alone may pass the budget"
        );
    }

    #[test]
    fn refuse_hands_back_what_does_not_fit_and_drops_nothing() {
        let q = queue(Budget::records(3), Overflow::Refuse);
        let refused = q.push(records(1..=5, 1, 1));
        assert_eq!(ids(&refused), [4, 5]);
        assert_eq!(q.dropped.get(), 0);
        assert_eq!(ids(&q.take(1, 10).unwrap()), [1, 2, 3]);
    }

    #[test]
    fn taken_items_stay_pending_until_settled() {
        let q = queue(Budget::records(10), Overflow::DropOldest);
        q.push(records(1..=4, 3, 1));
        assert!(q.take(5, 10).is_none(), "fewer than the minimum");
        let batch = q.take(1, 3).unwrap();
        assert_eq!(ids(&batch), [1, 2, 3]);
        assert_eq!(q.queued_items(), 3);
        assert_eq!(q.pending_items(), 12, "in flight still pending");
        q.settle(9);
        assert_eq!(q.pending_items(), 3);
        assert!(q.oldest().is_some());
        assert_eq!(q.pop().map(|r| r.id), Some(4));
        q.settle(3);
        assert!(q.is_empty() && q.oldest().is_none() && q.pending_items() == 0);
    }

    #[test]
    fn observers_see_the_count_of_each_change_in_order() {
        let q = queue(Budget::records(10), Overflow::DropOldest);
        let mut seen = Vec::new();
        q.push_observed(records(1..=4, 1, 1), |len| seen.push(len));
        q.take_observed(1, 3, |len| seen.push(len));
        q.observe(|len| seen.push(len));
        assert_eq!(seen, [4, 1, 1]);
    }

    #[tokio::test]
    async fn admission_bounds_queued_and_in_flight_until_released() {
        let q = queue(Budget::records(4), Overflow::Refuse);
        let permit = q.try_admit(3).unwrap();
        q.push_admitted(records(1..=3, 1, 1), permit);
        assert!(q.try_admit(2).is_none(), "3 of 4 taken");
        let batch = q.take(1, 10).unwrap();
        assert!(q.try_admit(2).is_none(), "in flight still holds its room");
        assert!(!q.is_idle());
        q.unshift(batch);
        let batch = q.take(1, 2).unwrap();
        assert_eq!(ids(&batch), [1, 2], "unshifted records come first");
        q.release(2);
        assert_eq!(q.depth.get(), 1, "admitted, not released");
        assert!(q.try_admit(3).is_some(), "room came back");
    }

    #[tokio::test]
    async fn an_oversize_request_runs_up_a_debt_its_release_pays_first() {
        let q = queue(Budget::records(2), Overflow::Refuse);
        let permit = q.admit(5).await.unwrap();
        assert_eq!(permit.num_permits(), 2, "every permit, no more");
        q.push_admitted(records(1..=5, 1, 1), permit);
        let batch = q.take(1, 10).unwrap();
        q.release(3);
        assert!(q.try_admit(1).is_none(), "the debt is paid first");
        q.release(batch.len() - 3);
        assert!(q.is_idle(), "all room back, never more than the budget");
        assert!(q.try_admit(3).is_some_and(|p| p.num_permits() == 2));
    }

    #[test]
    fn warn_once_says_yes_once() {
        let warn = WarnOnce::default();
        assert!(warn.first());
        assert!(!warn.first());
    }
}
