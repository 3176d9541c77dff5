//! The disk queue's storage choice, measured: the segmented log
//! (`exporter::disk`) against SQLite (already in the binary, WAL mode,
//! `synchronous=NORMAL`, the closest to a group commit) doing the same
//! work: append a worker's batch of 64 X-Ray-sized documents (1 KiB), then
//! read them back and acknowledge them (reclaim): the steady state of a
//! healthy exporter.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use tracemap::exporter::disk::{DiskCounters, DiskQueue, DiskSettings, Durable};
use tracemap::exporter::queue::Weighed;

const BATCH: usize = 64;
const TAKE: usize = 64;
const DOC_BYTES: usize = 1024;

struct Doc(Bytes);

impl Weighed for Doc {
    fn items(&self) -> u64 {
        1
    }
    fn bytes(&self) -> usize {
        self.0.len()
    }
}

impl Durable for Doc {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0);
    }
    fn decode(_items: u32, payload: Bytes) -> Option<Self> {
        Some(Self(payload))
    }
}

fn docs() -> Vec<Doc> {
    (0..BATCH)
        .map(|i| Doc(Bytes::from(vec![b'a' + (i % 26) as u8; DOC_BYTES])))
        .collect()
}

fn log_queue(dir: &std::path::Path) -> Arc<DiskQueue<Doc>> {
    let settings = DiskSettings {
        dir: dir.join("queue"),
        budget: 1 << 30,
        fsync_interval: Duration::from_secs(1),
        max_age: Duration::from_secs(86_400),
    };
    DiskQueue::open("bench", settings, 1, DiskCounters::default()).expect("open the log")
}

fn sqlite(dir: &std::path::Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(dir.join("queue.db")).expect("open sqlite");
    db.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
         CREATE TABLE queue (seq INTEGER PRIMARY KEY, created INTEGER, items INTEGER, body BLOB);",
    )
    .expect("schema");
    db
}

fn sqlite_cycle(db: &mut rusqlite::Connection, batch: &[Doc]) -> usize {
    let tx = db.transaction().unwrap();
    {
        let mut insert = tx
            .prepare_cached("INSERT INTO queue (created, items, body) VALUES (?1, 1, ?2)")
            .unwrap();
        for doc in batch {
            insert.execute((1_700_000_000_000i64, &doc.0[..])).unwrap();
        }
    }
    tx.commit().unwrap();
    let mut select = db
        .prepare_cached("SELECT seq, body FROM queue ORDER BY seq LIMIT ?1")
        .unwrap();
    let rows: Vec<(i64, Vec<u8>)> = select
        .query_map([TAKE as i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    drop(select);
    let last = rows.last().map_or(0, |r| r.0);
    db.execute("DELETE FROM queue WHERE seq <= ?1", [last])
        .unwrap();
    rows.len()
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("disk_queue: append, take and ack 64 x 1 KiB");
    let dir = tempfile::tempdir().unwrap();
    let log = log_queue(dir.path());
    group.bench_function("segmented log", |b| {
        b.iter_batched(
            docs,
            |batch| {
                log.push(batch).map_err(|(_, e)| e).unwrap();
                let (taken, ticket) = log.take(1, TAKE).unwrap();
                log.ack(ticket);
                taken.len()
            },
            criterion::BatchSize::SmallInput,
        )
    });
    let mut db = sqlite(dir.path());
    group.bench_function("sqlite (wal, synchronous=normal)", |b| {
        b.iter_batched(
            docs,
            |batch| sqlite_cycle(&mut db, &batch),
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
