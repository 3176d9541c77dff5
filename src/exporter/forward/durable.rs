//! `durability: disk` for the forwarder: each gateway's export requests in
//! a [`DiskQueue`] of their own, `<data_dir>/queue/forward-<gateway>`.
//!
//! A record is one encoded `ExportTraceServiceRequest` (its items: the
//! spans in it), written when the request that brought its spans is
//! committed, before the client is answered. The sender reads records in
//! order, sends several at once as one request (protobuf concatenation of
//! requests is the request with all their `resource_spans`), and
//! acknowledges them once the gateway answered OK or refused them for good.
//!
//! Records stay with the gateway they were written for: while it is down
//! they wait on disk (bounded by `disk_budget`, oldest dropped beyond it,
//! counted) and new traces fail over as in memory. Records of a gateway
//! that is no longer in the set (it left while the agent ran, or the agent
//! restarted with other gateways) are decoded and their spans placed again
//! by trace id over the current gateways.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;

use super::encode;
use super::gateway::Gateway;
use super::rendezvous::{self, trace_hash};
use super::{EXPORTER, Shared};
use crate::exporter::disk::{DiskCounters, DiskQueue, DiskQueueConfig, DiskSettings, Durable};
use crate::exporter::queue::{WarnOnce, Weighed};
use crate::model::Span;

/// Gateways take spans of any age; a record this old is dropped when
/// read (`reason="expired"`), so a queue of a gateway that never came back
/// does not grow old forever.
pub const MAX_RECORD_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// The prefix of every forward queue's directory under `<data_dir>/queue`.
const DIR_PREFIX: &str = "forward-";

/// One encoded `ExportTraceServiceRequest`: what will be sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Spans in it.
    pub spans: u32,
    /// The request body.
    pub body: Bytes,
}

impl Weighed for Request {
    fn items(&self) -> u64 {
        u64::from(self.spans)
    }

    fn bytes(&self) -> usize {
        self.body.len() + std::mem::size_of::<Self>()
    }
}

impl Durable for Request {
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.body);
    }

    fn decode(items: u32, payload: Bytes) -> Option<Self> {
        Some(Self {
            spans: items,
            body: payload,
        })
    }
}

/// `spans` as requests of at most `max_spans` spans and `max_bytes` bytes,
/// in order; also how many spans were too large alone to fit.
pub fn encode_requests(spans: &[Span], max_spans: usize, max_bytes: usize) -> (Vec<Request>, u64) {
    let mut requests = Vec::new();
    let mut too_large = 0;
    for chunk in spans.chunks(max_spans.max(1)) {
        too_large += encode_into(chunk, max_bytes, &mut requests);
    }
    (requests, too_large)
}

fn encode_into(spans: &[Span], max_bytes: usize, out: &mut Vec<Request>) -> u64 {
    let len = encode::request_len(spans);
    if len <= max_bytes {
        let mut body = Vec::with_capacity(len);
        encode::encode_request(spans, &mut body);
        out.push(Request {
            spans: u32::try_from(spans.len()).unwrap_or(u32::MAX),
            body: body.into(),
        });
        return 0;
    }
    if spans.len() == 1 {
        return 1;
    }
    let (front, back) = spans.split_at(spans.len() / 2);
    encode_into(front, max_bytes, out) + encode_into(back, max_bytes, out)
}

/// Consecutive records joined into requests of at most `max_spans` spans
/// and `max_bytes` bytes (a record alone may be either, as written).
pub fn group(records: Vec<Request>, max_spans: usize, max_bytes: usize) -> Vec<Request> {
    let mut groups: Vec<(u32, Vec<u8>)> = Vec::new();
    for record in records {
        match groups.last_mut() {
            Some((spans, body))
                if (*spans + record.spans) as usize <= max_spans
                    && body.len() + record.body.len() <= max_bytes =>
            {
                *spans += record.spans;
                body.extend_from_slice(&record.body);
            }
            _ => groups.push((record.spans, record.body.to_vec())),
        }
    }
    groups
        .into_iter()
        .map(|(spans, body)| Request {
            spans,
            body: body.into(),
        })
        .collect()
}

/// The spans of a record; `None` if it is not a request (never, unless
/// the file changed under the checksum).
pub fn decode(record: &Request) -> Option<Vec<Span>> {
    crate::receiver::decode::proto::decode(record.body.clone())
        .ok()
        .map(|decoded| decoded.spans)
}

/// The directory name of `key`'s queue: `forward-` and the key with every
/// character other than letters, digits, `.` and `-` as `_`.
pub fn dir_name(key: &str) -> String {
    let safe: String = key
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '.' | '-' => c,
            _ => '_',
        })
        .collect();
    format!("{DIR_PREFIX}{safe}")
}

/// Where the forward queues live and the handles they report through.
pub(super) struct Disks {
    data_dir: PathBuf,
    config: DiskQueueConfig,
    /// The exporter's disk series; each queue gets its own gauges, summed
    /// into these by [`Disks::publish`].
    counters: DiskCounters,
    /// Every queue open, by gateway key: a gateway that leaves and comes
    /// back while its old sender still runs gets the same queue.
    open: Mutex<HashMap<String, Weak<GatewayDisk>>>,
    /// A queue could not be opened or written: logged once, counted always.
    warned: WarnOnce,
}

/// One gateway's queue and its own gauges.
pub(super) struct GatewayDisk {
    pub(super) queue: Arc<DiskQueue<Request>>,
    bytes: Gauge,
    records: Gauge,
}

impl Disks {
    pub(super) fn new(data_dir: PathBuf, config: DiskQueueConfig, counters: DiskCounters) -> Self {
        Self {
            data_dir,
            config,
            counters,
            open: Mutex::default(),
            warned: WarnOnce::default(),
        }
    }

    fn settings(&self, name: &str) -> DiskSettings {
        self.config.settings(&self.data_dir, name, MAX_RECORD_AGE)
    }

    fn queue_counters(&self) -> (DiskCounters, Gauge, Gauge) {
        let (bytes, records) = (Gauge::default(), Gauge::default());
        let counters = DiskCounters {
            bytes: bytes.clone(),
            records: records.clone(),
            oldest_age: Gauge::default(),
            ..self.counters.clone()
        };
        (counters, bytes, records)
    }

    /// `key`'s queue, opened (and replayed) if not open yet; `None`, logged
    /// once and counted, when it cannot be: that gateway's spans then
    /// queue in memory.
    pub(super) fn open(&self, key: &str, wake_at: usize) -> Option<Arc<GatewayDisk>> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(disk) = open.get(key).and_then(Weak::upgrade) {
            return Some(disk);
        }
        let settings = self.settings(&dir_name(key));
        let dir = settings.dir.clone();
        let (counters, bytes, records) = self.queue_counters();
        match DiskQueue::open(EXPORTER, settings, wake_at, counters) {
            Ok(queue) => {
                let disk = Arc::new(GatewayDisk {
                    queue,
                    bytes,
                    records,
                });
                open.retain(|_, disk| disk.strong_count() > 0);
                open.insert(key.to_owned(), Arc::downgrade(&disk));
                Some(disk)
            }
            Err(err) => {
                self.counters.error(err.reason());
                if self.warned.first() {
                    tracing::error!(exporter = EXPORTER, gateway = key, dir = %dir.display(), error = %err,
                        "forward disk queue unusable; this gateway's spans queue in memory (tracemap_exporter_disk_errors_total)");
                }
                None
            }
        }
    }

    /// Counts a failed write; logged once.
    pub(super) fn write_failed(&self, key: &str, err: &dyn std::fmt::Display) {
        if self.warned.first() {
            tracing::error!(exporter = EXPORTER, gateway = key, error = %err,
                "forward disk queue cannot be written; spans wait in memory until it can (tracemap_exporter_disk_errors_total)");
        }
    }

    /// Sets the exporter's disk gauges to the sum over open queues.
    pub(super) fn publish(&self) {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let (mut bytes, mut records) = (0, 0);
        for disk in open.values().filter_map(Weak::upgrade) {
            bytes += disk.bytes.get();
            records += disk.records.get();
        }
        self.counters.bytes.set(bytes);
        self.counters.records.set(records);
    }

    /// Queue directories of gateways that are not `members`: a previous
    /// run's, whose records are placed again.
    fn orphans(&self, members: &[Arc<Gateway>]) -> Vec<PathBuf> {
        let root = self.data_dir.join("queue");
        let Ok(entries) = fs::read_dir(&root) else {
            return Vec::new();
        };
        let mut orphans: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().is_dir())
            .filter_map(|entry| entry.file_name().into_string().ok())
            .filter(|name| name.starts_with(DIR_PREFIX))
            .filter(|name| !members.iter().any(|g| dir_name(&g.key) == *name))
            .map(|name| root.join(name))
            .collect();
        orphans.sort();
        orphans
    }
}

/// Places the spans of `records` again by trace id over the gateways that
/// are up (all of them when none is), except `except`, and queues them
/// there (disk, else memory). Returns `false` when some found no place
/// (no gateway, or no room): the caller keeps the records.
pub(super) fn place_again(
    shared: &Shared,
    records: &[Request],
    except: Option<&Arc<Gateway>>,
) -> bool {
    let members = shared.members();
    let eligible = |i: usize| except.is_none_or(|g| !Arc::ptr_eq(&members.gateways[i], g));
    if !(0..members.gateways.len()).any(eligible) {
        return false;
    }
    let mut parts: Vec<Vec<Span>> = vec![Vec::new(); members.gateways.len()];
    for record in records {
        let Some(spans) = decode(record) else {
            if let Some(disks) = &shared.disks {
                disks.counters.dropped_corrupt.inc();
            }
            continue;
        };
        for span in spans {
            let hash = trace_hash(&span.trace_id);
            let up = |i: usize| eligible(i) && members.gateways[i].is_up();
            let index = rendezvous::best(hash, &members.seeds, up)
                .or_else(|| rendezvous::best(hash, &members.seeds, eligible))
                .expect("an eligible gateway");
            parts[index].push(span);
        }
    }
    let mut placed = true;
    for (gateway, part) in members.gateways.iter().zip(parts) {
        if part.is_empty() {
            continue;
        }
        let count = part.len() as u64;
        match gateway.queue_again(shared, part) {
            Ok(()) => {
                shared.metrics.rerouted.inc_by(count);
            }
            Err(()) => placed = false,
        }
    }
    placed
}

/// Records of gateways no longer in the set, from a previous run: placed
/// again over the current gateways, then their directories removed. Runs
/// once, when the first gateways are known.
pub(super) fn adopt_orphans(shared: &Shared, members: &[Arc<Gateway>]) {
    let Some(disks) = &shared.disks else { return };
    for dir in disks.orphans(members) {
        adopt(shared, disks, &dir);
    }
}

fn adopt(shared: &Shared, disks: &Disks, dir: &Path) {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let (counters, _, _) = disks.queue_counters();
    let queue = match DiskQueue::<Request>::open(EXPORTER, disks.settings(&name), 1, counters) {
        Ok(queue) => queue,
        Err(err) => {
            disks.counters.error(err.reason());
            tracing::error!(exporter = EXPORTER, dir = %dir.display(), error = %err,
                "cannot read the queue of a former gateway; left as it is");
            return;
        }
    };
    let (mut spans, mut done) = (0u64, true);
    while let Some((records, ticket)) = queue.take(1, 64) {
        if !place_again(shared, &records, None) {
            done = false;
            break;
        }
        spans += records.iter().map(Weighed::items).sum::<u64>();
        queue.ack(ticket);
    }
    queue.sync();
    drop(queue);
    if done {
        if let Err(err) = fs::remove_dir_all(dir) {
            tracing::warn!(exporter = EXPORTER, dir = %dir.display(), error = %err, "cannot remove an emptied queue directory");
        }
        if spans > 0 {
            tracing::info!(exporter = EXPORTER, dir = %dir.display(), spans,
                "queue of a gateway no longer in the set: its spans are placed again over the current gateways");
        }
    } else {
        tracing::warn!(exporter = EXPORTER, dir = %dir.display(),
            "queue of a former gateway only partly placed again; the rest waits for the next start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Resource, SpanId, SpanKind, StatusCode, TraceId};

    fn span(trace: u8, id: u64) -> Span {
        Span {
            trace_id: TraceId::from_bytes([trace; 16]),
            span_id: SpanId::from_bytes(id.to_be_bytes()),
            parent_span_id: None,
            name: format!("op-{id}").into(),
            kind: SpanKind::Server,
            status_code: StatusCode::Unset,
            status_message: String::new(),
            start_unix_nano: 1_700_000_000_000_000_000,
            end_unix_nano: 1_700_000_000_001_000_000,
            attributes: Default::default(),
            events: Vec::new(),
            resource: Arc::new(Resource::default()),
            scope_name: "test".into(),
        }
    }

    fn ids(spans: &[Span]) -> Vec<u64> {
        spans
            .iter()
            .map(|s| u64::from_be_bytes(s.span_id.to_bytes()))
            .collect()
    }

    #[test]
    fn requests_hold_at_most_max_spans_and_decode_back_in_order() {
        let spans: Vec<Span> = (1..=10).map(|i| span(i as u8, i)).collect();
        let (requests, too_large) = encode_requests(&spans, 4, 1 << 20);
        assert_eq!(too_large, 0);
        let counts: Vec<u32> = requests.iter().map(|r| r.spans).collect();
        assert_eq!(counts, [4, 4, 2]);
        let back: Vec<Span> = requests.iter().flat_map(|r| decode(r).unwrap()).collect();
        assert_eq!(ids(&back), (1..=10).collect::<Vec<_>>());
        assert_eq!(back[3].name, spans[3].name);
    }

    #[test]
    fn requests_are_split_by_bytes_and_a_span_too_large_alone_is_counted() {
        let mut spans: Vec<Span> = (1..=6).map(|i| span(1, i)).collect();
        spans[2].name = "x".repeat(4096).into();
        let limit = encode::request_len(&spans[..1]) * 2 + 8;
        let (requests, too_large) = encode_requests(&spans, 100, limit);
        assert_eq!(too_large, 1);
        assert!(requests.iter().all(|r| r.body.len() <= limit));
        let back: Vec<Span> = requests.iter().flat_map(|r| decode(r).unwrap()).collect();
        assert_eq!(ids(&back), [1, 2, 4, 5, 6]);
    }

    #[test]
    fn records_join_into_one_request_within_the_limits() {
        let spans: Vec<Span> = (1..=9).map(|i| span(i as u8, i)).collect();
        let (records, _) = encode_requests(&spans, 2, 1 << 20);
        assert_eq!(records.len(), 5);
        let joined = group(records.clone(), 4, 1 << 20);
        let counts: Vec<u32> = joined.iter().map(|r| r.spans).collect();
        assert_eq!(counts, [4, 4, 1]);
        let back: Vec<Span> = joined.iter().flat_map(|r| decode(r).unwrap()).collect();
        assert_eq!(ids(&back), (1..=9).collect::<Vec<_>>());
        // A byte limit below two records keeps each alone.
        let alone = group(records.clone(), 100, records[0].body.len() + 1);
        assert_eq!(alone.len(), 5);
    }

    #[test]
    fn records_come_back_from_disk_as_written() {
        let record = Request {
            spans: 3,
            body: Bytes::from_static(b"\x0a\x00"),
        };
        let mut payload = Vec::new();
        Durable::encode(&record, &mut payload);
        assert_eq!(
            <Request as Durable>::decode(3, payload.into()),
            Some(record)
        );
    }

    #[test]
    fn directory_names_are_plain() {
        assert_eq!(dir_name("10.0.0.7:4317"), "forward-10.0.0.7_4317");
        assert_eq!(dir_name("[::1]:4317"), "forward-___1__4317");
        assert_eq!(
            dir_name("gw-0.tracemap.svc:4317"),
            "forward-gw-0.tracemap.svc_4317"
        );
    }
}
