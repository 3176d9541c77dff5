//! Pairing store: the halves of a call wait here until the other half of
//! the same trace arrives, or until they expire.
//!
//! A CLIENT (or PRODUCER) half is keyed by (trace id, its span id); a
//! SERVER (or CONSUMER) half by (trace id, its parent span id), so both
//! halves of one call meet on the same key whichever arrives first. The
//! store is bounded by a TTL and a maximum number of pending halves; one
//! store lives in each pipeline shard, so no lock is shared between shards.

use std::sync::Arc;
use std::time::Duration;

use hashlink::LinkedHashMap;
use hashlink::linked_hash_map::RawEntryMut;
use smol_str::SmolStr;
use tokio::time::Instant;

use crate::model::{SpanId, TraceId};

/// Which side of a call a half is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// CLIENT or PRODUCER.
    Client,
    /// SERVER or CONSUMER.
    Server,
}

/// What the graph needs to remember about one half of a call.
#[derive(Debug, Clone, PartialEq)]
pub struct Half {
    /// The emitting service.
    pub service: Arc<str>,
    /// Client or server.
    pub side: Side,
    /// PRODUCER or CONSUMER: the edge goes through a broker.
    pub messaging: bool,
    /// Status ERROR.
    pub failed: bool,
    /// Span duration, nanoseconds.
    pub duration_nanos: u64,
    /// For client halves: the peer to draw if the server never shows up
    /// (inline up to 23 bytes: most client spans name one, few are drawn).
    pub peer: Option<SmolStr>,
    /// Values of `graph.dimensions` on this side (empty when none are configured).
    pub dimensions: Dimensions,
}

/// Values of the configured extra dimensions, one per dimension, in config order.
pub type Dimensions = Box<[Option<Box<str>>]>;

/// Both halves of one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The calling half.
    pub client: Half,
    /// The called half.
    pub server: Half,
}

/// Result of offering a half to the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Offer {
    /// The other half was waiting: the call is complete.
    Paired(Pair),
    /// Stored to wait for the other half.
    Pending,
    /// A half of the same side was already waiting under this key (a
    /// duplicate span id); the newer one replaced it.
    Duplicate,
    /// The store is full; the half was dropped.
    Full,
}

struct Entry {
    half: Half,
    inserted: Instant,
    /// A PRODUCER that already met a consumer; it stays to meet the other
    /// consumers of the same message (fan-out) and expires silently.
    paired: bool,
}

type Key = (TraceId, SpanId);

/// Bounded, TTL-evicting store of unpaired halves.
pub struct PairingStore {
    pending: LinkedHashMap<Key, Entry, foldhash::fast::RandomState>,
    ttl: Duration,
    max_items: usize,
}

impl PairingStore {
    /// An empty store.
    pub fn new(ttl: Duration, max_items: usize) -> Self {
        Self {
            pending: LinkedHashMap::with_hasher(foldhash::fast::RandomState::default()),
            ttl,
            max_items,
        }
    }

    /// Offers a half waiting under `(trace_id, call_span_id)`, where
    /// `call_span_id` is the CLIENT span's id for both sides.
    pub fn offer(
        &mut self,
        trace_id: TraceId,
        call_span_id: SpanId,
        half: Half,
        now: Instant,
    ) -> Offer {
        let key = (trace_id, call_span_id);
        let full = self.pending.len() >= self.max_items;
        // One hash lookup whatever the outcome: this runs for every span.
        match self.pending.raw_entry_mut().from_key(&key) {
            RawEntryMut::Occupied(mut occupied) => {
                let waiting = occupied.get();
                if waiting.half.side == half.side {
                    occupied.to_back();
                    occupied.replace_value(Entry {
                        half,
                        inserted: now,
                        paired: false,
                    });
                    return Offer::Duplicate;
                }
                let pair = match half.side {
                    Side::Server if waiting.half.messaging => {
                        let entry = occupied.get_mut();
                        entry.paired = true;
                        Pair {
                            client: entry.half.clone(),
                            server: half,
                        }
                    }
                    Side::Server => Pair {
                        client: occupied.remove().half,
                        server: half,
                    },
                    Side::Client if half.messaging => {
                        let server = occupied.replace_value(Entry {
                            half: half.clone(),
                            inserted: now,
                            paired: true,
                        });
                        occupied.to_back();
                        Pair {
                            client: half,
                            server: server.half,
                        }
                    }
                    Side::Client => Pair {
                        client: half,
                        server: occupied.remove().half,
                    },
                };
                Offer::Paired(pair)
            }
            RawEntryMut::Vacant(_) if full => Offer::Full,
            RawEntryMut::Vacant(vacant) => {
                vacant.insert(
                    key,
                    Entry {
                        half,
                        inserted: now,
                        paired: false,
                    },
                );
                Offer::Pending
            }
        }
    }

    /// Removes every half older than the TTL at `now`, oldest first.
    pub fn expire(&mut self, now: Instant, mut on_expired: impl FnMut(Half)) {
        while let Some((_, entry)) = self.pending.front() {
            if now.duration_since(entry.inserted) < self.ttl {
                break;
            }
            let (_, entry) = self.pending.pop_front().expect("front exists");
            if !entry.paired {
                on_expired(entry.half);
            }
        }
    }

    /// Gives up the oldest `fraction` of the waiting halves as if their TTL
    /// had passed (memory is short), then hands the memory of every removed
    /// half, which the map keeps for reuse, back to the allocator. Returns
    /// how many halves went.
    pub fn shrink(&mut self, fraction: f64, mut on_expired: impl FnMut(Half)) -> usize {
        let len = self.pending.len();
        let count = ((len as f64 * fraction.clamp(0.0, 1.0)).ceil() as usize).min(len);
        for _ in 0..count {
            let (_, entry) = self.pending.pop_front().expect("counted");
            if !entry.paired {
                on_expired(entry.half);
            }
        }
        self.pending.shrink_to_fit();
        count
    }

    /// Halves waiting.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn half(service: &str, side: Side) -> Half {
        Half {
            service: service.into(),
            side,
            messaging: false,
            failed: false,
            duration_nanos: 10,
            peer: None,
            dimensions: Box::default(),
        }
    }

    fn ids(trace: u8, span: u8) -> (TraceId, SpanId) {
        (
            TraceId::try_from(&[trace; 16][..]).unwrap(),
            SpanId::try_from(&[span; 8][..]).unwrap(),
        )
    }

    #[test]
    fn halves_pair_in_either_order_and_only_within_their_trace() {
        let now = Instant::now();
        let mut store = PairingStore::new(Duration::from_secs(10), 100);
        let (t1, s1) = ids(1, 1);
        let (t2, _) = ids(2, 1);
        assert_eq!(
            store.offer(t1, s1, half("a", Side::Client), now),
            Offer::Pending
        );
        assert_eq!(
            store.offer(t2, s1, half("x", Side::Server), now),
            Offer::Pending
        );
        let Offer::Paired(pair) = store.offer(t1, s1, half("b", Side::Server), now) else {
            panic!("expected a pair");
        };
        assert_eq!((&*pair.client.service, &*pair.server.service), ("a", "b"));
        let Offer::Paired(pair) = store.offer(t2, s1, half("y", Side::Client), now) else {
            panic!("expected a pair, server first");
        };
        assert_eq!((&*pair.client.service, &*pair.server.service), ("y", "x"));
        assert!(store.is_empty());
    }

    #[test]
    fn duplicate_same_side_replaces() {
        let now = Instant::now();
        let mut store = PairingStore::new(Duration::from_secs(10), 100);
        let (t, s) = ids(1, 1);
        store.offer(t, s, half("a", Side::Client), now);
        assert_eq!(
            store.offer(t, s, half("a2", Side::Client), now),
            Offer::Duplicate
        );
        assert_eq!(store.len(), 1);
        let Offer::Paired(pair) = store.offer(t, s, half("b", Side::Server), now) else {
            panic!()
        };
        assert_eq!(&*pair.client.service, "a2");
    }

    #[test]
    fn full_store_drops() {
        let now = Instant::now();
        let mut store = PairingStore::new(Duration::from_secs(10), 2);
        assert_eq!(
            store.offer(ids(1, 1).0, ids(1, 1).1, half("a", Side::Client), now),
            Offer::Pending
        );
        assert_eq!(
            store.offer(ids(2, 1).0, ids(2, 1).1, half("a", Side::Client), now),
            Offer::Pending
        );
        assert_eq!(
            store.offer(ids(3, 1).0, ids(3, 1).1, half("a", Side::Client), now),
            Offer::Full
        );
        // Pairing with a waiting half still works when full.
        assert!(matches!(
            store.offer(ids(1, 1).0, ids(1, 1).1, half("b", Side::Server), now),
            Offer::Paired(_)
        ));
    }

    #[test]
    fn a_producer_pairs_with_every_consumer_of_its_message() {
        let now = Instant::now();
        let mut store = PairingStore::new(Duration::from_secs(10), 100);
        let (t, s) = ids(1, 1);
        let producer = Half {
            messaging: true,
            ..half("checkout", Side::Client)
        };
        let consumer = |name| Half {
            messaging: true,
            ..half(name, Side::Server)
        };
        // One consumer before the producer, one after.
        assert_eq!(store.offer(t, s, consumer("email"), now), Offer::Pending);
        let Offer::Paired(first) = store.offer(t, s, producer, now) else {
            panic!()
        };
        assert_eq!(&*first.server.service, "email");
        let Offer::Paired(second) = store.offer(t, s, consumer("fulfillment"), now) else {
            panic!("the producer waits for further consumers")
        };
        assert_eq!(&*second.client.service, "checkout");
        let mut expired = 0;
        store.expire(now + Duration::from_secs(11), |_| expired += 1);
        assert_eq!(expired, 0, "a paired producer expires silently");
        assert!(store.is_empty());
    }

    #[test]
    fn shrinking_gives_up_the_oldest_halves_first() {
        let now = Instant::now();
        let mut store = PairingStore::new(Duration::from_secs(10), 100);
        for trace in 1..=8 {
            let (t, s) = ids(trace, 1);
            store.offer(t, s, half(&format!("s{trace}"), Side::Client), now);
        }
        // Touched again: a duplicate moves to the back.
        let (t, s) = ids(1, 1);
        store.offer(t, s, half("s1", Side::Client), now);
        let mut expired = Vec::new();
        assert_eq!(store.shrink(0.25, |h| expired.push(h.service)), 2);
        assert_eq!(expired, vec![Arc::from("s2"), Arc::from("s3")]);
        assert_eq!(store.len(), 6);
        assert_eq!(store.shrink(0.1, |_| {}), 1, "at least one while any wait");
        assert_eq!(store.shrink(1.0, |_| {}), 5);
        assert!(store.is_empty());
        assert_eq!(store.shrink(0.25, |_| {}), 0);
        // Still works after giving its memory back.
        let (t, s) = ids(9, 1);
        assert_eq!(
            store.offer(t, s, half("a", Side::Client), now),
            Offer::Pending
        );
    }

    #[tokio::test(start_paused = true)]
    async fn halves_expire_after_the_ttl_oldest_first() {
        let mut store = PairingStore::new(Duration::from_secs(10), 100);
        store.offer(
            ids(1, 1).0,
            ids(1, 1).1,
            half("first", Side::Client),
            Instant::now(),
        );
        tokio::time::advance(Duration::from_secs(4)).await;
        store.offer(
            ids(2, 1).0,
            ids(2, 1).1,
            half("second", Side::Server),
            Instant::now(),
        );
        tokio::time::advance(Duration::from_millis(5_999)).await;
        let mut expired = Vec::new();
        store.expire(Instant::now(), |h| expired.push(h.service));
        assert!(expired.is_empty(), "nothing is 10 s old yet");
        tokio::time::advance(Duration::from_millis(1)).await;
        store.expire(Instant::now(), |h| expired.push(h.service));
        assert_eq!(expired, vec![Arc::from("first")]);
        tokio::time::advance(Duration::from_secs(4)).await;
        store.expire(Instant::now(), |h| expired.push(h.service));
        assert_eq!(expired.len(), 2);
        assert!(store.is_empty());
    }
}
