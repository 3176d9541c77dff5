use std::io::Write;

use super::*;

#[derive(Debug, Clone, PartialEq)]
struct Rec {
    id: u32,
    items: u32,
    body: Vec<u8>,
}

impl Weighed for Rec {
    fn items(&self) -> u64 {
        u64::from(self.items)
    }
    fn bytes(&self) -> usize {
        self.body.len()
    }
}

impl Durable for Rec {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.to_le_bytes());
        out.extend_from_slice(&self.body);
    }
    fn decode(items: u32, payload: Bytes) -> Option<Self> {
        let id = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?);
        Some(Self {
            id,
            items,
            body: payload[4..].to_vec(),
        })
    }
}

fn recs(ids: std::ops::Range<u32>, size: usize) -> Vec<Rec> {
    ids.map(|id| Rec {
        id,
        items: 2,
        body: vec![id as u8; size],
    })
    .collect()
}

fn settings(dir: &Path, budget: u64) -> DiskSettings {
    DiskSettings {
        dir: dir.join("q"),
        budget,
        fsync_interval: Duration::ZERO,
        max_age: Duration::from_secs(3600),
    }
}

fn open(dir: &Path, budget: u64) -> (Arc<DiskQueue<Rec>>, DiskCounters) {
    let counters = DiskCounters::default();
    let queue = DiskQueue::open("test", settings(dir, budget), 1, counters.clone()).unwrap();
    (queue, counters)
}

fn ids(batch: &[Rec]) -> Vec<u32> {
    batch.iter().map(|r| r.id).collect()
}

fn drain(queue: &DiskQueue<Rec>) -> Vec<u32> {
    let mut seen = Vec::new();
    while let Some((batch, ticket)) = queue.take(1, 7) {
        seen.extend(ids(&batch));
        queue.ack(ticket);
    }
    seen
}

const MIB: u64 = 1024 * 1024;

#[test]
fn records_come_back_in_order_and_acknowledged_segments_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, counters) = open(dir.path(), 2 * MIB);
    for chunk in 0..50 {
        queue
            .push(recs(chunk * 100..chunk * 100 + 100, 100))
            .unwrap();
    }
    assert_eq!(queue.waiting_records(), 5000);
    assert_eq!(queue.waiting_items(), 10_000);
    assert_eq!(counters.records.get(), 5000);
    let segments = log::list_segments(queue.dir()).unwrap().len();
    assert!(segments > 2, "{segments} segments of 256 KiB for ~500 KiB");
    // The oldest come back from disk, the newest from the cache of what
    // was just written (an eighth of the budget).
    assert_eq!(drain(&queue), (0..5000).collect::<Vec<_>>());
    assert_eq!(
        log::list_segments(queue.dir()).unwrap().len(),
        1,
        "only the active one is left"
    );
    assert_eq!(counters.dropped_budget.get(), 0);
    assert_eq!(counters.replayed.get(), 0);
}

#[test]
fn a_restart_replays_what_was_not_acknowledged_and_counts_possible_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (queue, _) = open(dir.path(), 2 * MIB);
        queue.push(recs(0..30, 10)).unwrap();
        let (first, ticket) = queue.take(1, 10).unwrap();
        assert_eq!(ids(&first), (0..10).collect::<Vec<_>>());
        queue.ack(ticket);
        // Taken, never acknowledged (in flight at the crash), then the
        // next batch acknowledged out of order.
        let (_second, lost) = queue.take(1, 10).unwrap();
        let (_third, done) = queue.take(1, 5).unwrap();
        queue.ack(done);
        drop(lost);
        // Dropped without a shutdown: as after a SIGKILL.
    }
    let (queue, counters) = open(dir.path(), 2 * MIB);
    assert_eq!(
        queue.waiting_records(),
        20,
        "everything from the first unacknowledged batch"
    );
    assert_eq!(drain(&queue), (10..30).collect::<Vec<_>>());
    assert_eq!(counters.replayed.get(), 20 * 2, "items");
    assert_eq!(
        counters.duplicates.get(),
        15 * 2,
        "the two batches taken before the crash"
    );
    drop(queue);
    let (queue, counters) = open(dir.path(), 2 * MIB);
    assert!(
        queue.take(1, 10).is_none(),
        "all acknowledged: nothing again"
    );
    assert_eq!(counters.replayed.get(), 0);
}

#[test]
fn over_budget_the_oldest_segments_go_and_the_count_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (queue, counters) = open(dir.path(), MIB);
    let pushed = 4000u32;
    for chunk in 0..pushed / 100 {
        queue
            .push(recs(chunk * 100..chunk * 100 + 100, 1000))
            .unwrap();
        assert!(queue.bytes() <= MIB, "{} bytes", queue.bytes());
    }
    let left = drain(&queue);
    let dropped_items = counters.dropped_budget.get();
    assert!(dropped_items > 0);
    assert_eq!(dropped_items + 2 * left.len() as u64, 2 * u64::from(pushed));
    let first = left[0];
    assert_eq!(
        left,
        (first..pushed).collect::<Vec<_>>(),
        "exactly the oldest went"
    );
}

#[test]
fn a_torn_last_record_is_cut_off_and_the_rest_replays() {
    let dir = tempfile::tempdir().unwrap();
    let path = {
        let (queue, _) = open(dir.path(), 2 * MIB);
        queue.push(recs(0..10, 50)).unwrap();
        log::segment_path(queue.dir(), log::list_segments(queue.dir()).unwrap()[0])
    };
    let whole = fs::metadata(&path).unwrap().len();
    // The first 30 bytes of a record, as a crash in the middle of a write leaves.
    let mut record = Vec::new();
    log::encode_record(&mut record, 1, 1, &[9u8; 100]);
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&record[..30]).unwrap();
    drop(file);
    let (queue, counters) = open(dir.path(), 2 * MIB);
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        whole,
        "truncated to the whole records"
    );
    queue.push(recs(10..12, 50)).unwrap();
    assert_eq!(drain(&queue), (0..12).collect::<Vec<_>>());
    assert_eq!(counters.dropped_corrupt.get(), 0);
}

#[test]
fn a_corrupt_record_is_skipped_and_counted_and_the_others_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = {
        let (queue, _) = open(dir.path(), 2 * MIB);
        queue.push(recs(0..10, 50)).unwrap();
        log::segment_path(queue.dir(), log::list_segments(queue.dir()).unwrap()[0])
    };
    let mut bytes = fs::read(&path).unwrap();
    // Inside the payload of the fourth record.
    let record = (log::RECORD_HEADER + 4 + 50) as usize;
    bytes[log::HEADER as usize + 3 * record + 30] ^= 0xff;
    fs::write(&path, bytes).unwrap();
    let (queue, counters) = open(dir.path(), 2 * MIB);
    let expected: Vec<u32> = (0..10).filter(|&id| id != 3).collect();
    assert_eq!(drain(&queue), expected);
    assert_eq!(counters.dropped_corrupt.get(), 1);
}

#[test]
fn files_from_a_newer_version_are_refused_by_name_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = {
        let (queue, _) = open(dir.path(), 2 * MIB);
        queue.push(recs(0..3, 10)).unwrap();
        log::segment_path(queue.dir(), 1)
    };
    let mut bytes = fs::read(&path).unwrap();
    bytes[4..8].copy_from_slice(&(log::VERSION + 1).to_le_bytes());
    fs::write(&path, &bytes).unwrap();
    let err = DiskQueue::<Rec>::open(
        "test",
        settings(dir.path(), 2 * MIB),
        1,
        DiskCounters::default(),
    )
    .unwrap_err();
    assert_eq!(err.reason(), "newer_version");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(fs::read(&path).unwrap(), bytes, "untouched");
}

#[test]
fn a_segment_without_a_valid_header_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (queue, _) = open(dir.path(), 2 * MIB);
        queue.push(recs(0..3, 10)).unwrap();
    }
    let q = dir.path().join("q");
    fs::write(log::segment_path(&q, 1), b"garbage").unwrap();
    let (queue, counters) = open(dir.path(), 2 * MIB);
    assert!(q.join(format!("{:020}.damaged", 1)).exists());
    assert_eq!(counters.dropped_corrupt.get(), 1);
    queue.push(recs(5..6, 10)).unwrap();
    assert_eq!(drain(&queue), [5]);
}

#[test]
fn an_unwritable_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    fs::write(&file, b"").unwrap();
    let err = DiskQueue::<Rec>::open("test", settings(&file, MIB), 1, DiskCounters::default())
        .unwrap_err();
    assert!(err.to_string().contains("not-a-dir"), "{err}");
}

#[test]
fn records_older_than_the_destination_takes_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut old = settings(dir.path(), MIB);
    old.max_age = Duration::ZERO;
    let counters = DiskCounters::default();
    let queue = DiskQueue::<Rec>::open("test", old, 1, counters.clone()).unwrap();
    queue.push(recs(0..4, 10)).unwrap();
    std::thread::sleep(Duration::from_millis(5));
    let (batch, ticket) = queue.take(1, 10).unwrap();
    assert!(batch.is_empty());
    queue.ack(ticket);
    assert_eq!(counters.dropped_expired.get(), 8, "items");
    assert_eq!(queue.waiting_records(), 0);
}

#[test]
fn positions_survive_only_with_a_good_checksum() {
    let dir = tempfile::tempdir().unwrap();
    let (file, stored) = PositionFile::open(dir.path()).unwrap();
    assert_eq!(stored, None);
    let positions = Positions {
        frontier: Pos::start_of(3),
        taken: Pos {
            segment: 4,
            offset: 99,
        },
    };
    file.store(positions).unwrap();
    assert_eq!(PositionFile::open(dir.path()).unwrap().1, Some(positions));
    let path = dir.path().join("position");
    let mut bytes = fs::read(&path).unwrap();
    bytes[3] ^= 1;
    fs::write(&path, bytes).unwrap();
    assert_eq!(PositionFile::open(dir.path()).unwrap().1, None);
}

#[tokio::test]
async fn group_commit_syncs_in_the_background() {
    let dir = tempfile::tempdir().unwrap();
    let mut every = settings(dir.path(), MIB);
    every.fsync_interval = Duration::from_millis(20);
    let queue = DiskQueue::<Rec>::open("test", every, 1, DiskCounters::default()).unwrap();
    queue.push(recs(0..3, 10)).unwrap();
    assert!(queue.lock().dirty);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while queue.lock().dirty && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!queue.lock().dirty, "synced within the interval");
}
