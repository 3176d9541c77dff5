//! The SQLite side of the history store: schema, writes, range reads,
//! retention and compaction. Synchronous; the writer thread and blocking
//! query tasks call it.
//!
//! Layout: `edges` and `nodes` hold one row per bucket (`bucket`, the first
//! unix minute, and `width` in minutes), run (`epoch`; 0 for compacted
//! rows) and series; names are interned in `names`. Latency sketches are
//! stored in [`Sketch::encode`](crate::graph::sketch::Sketch::encode)'s sparse form. Minutes not yet final (the
//! open minute, rewritten every flush) live in `open_edges`/`open_nodes`,
//! so the main tables only ever get appends and their pages stay full;
//! reads take both. `edge_hours`/`node_hours` roll every complete hour up
//! (all runs merged) once memory no longer holds it: long windows read an
//! hour's row instead of sixty minutes', and they outlive the minute rows.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rusqlite::{Connection, OptionalExtension, params};

use super::StoreError;
use crate::graph::aggregate::{Accumulator, Selection};
use crate::graph::edge::{ConnectionType, EdgeKey, EdgeStats, Minute, NodeStats};

// Bucket tables are rowid tables with a unique key, not WITHOUT ROWID:
// rows are large (the sketches), and only rowid tables fill pages when
// appended to; an index b-tree splits them half and half.

/// Layout version, kept in SQLite's `user_version`.
const SCHEMA_VERSION: i64 = 1;

/// Bytes the WAL is cut back to when it is reset: twice what SQLite's
/// automatic checkpoint (1,000 pages) lets it reach in normal running.
pub(super) const WAL_SIZE_LIMIT: u64 = 8 << 20;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    epoch INTEGER PRIMARY KEY,
    started_at INTEGER NOT NULL,
    version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS names (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS edges (
    bucket INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    client INTEGER NOT NULL,
    server INTEGER NOT NULL,
    connection_type INTEGER NOT NULL,
    width INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    client_latency BLOB NOT NULL,
    server_latency BLOB NOT NULL,
    UNIQUE (bucket, epoch, client, server, connection_type)
);
CREATE TABLE IF NOT EXISTS nodes (
    bucket INTEGER NOT NULL,
    epoch INTEGER NOT NULL,
    service INTEGER NOT NULL,
    width INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    latency BLOB NOT NULL,
    UNIQUE (bucket, epoch, service)
);
CREATE TABLE IF NOT EXISTS open_edges AS SELECT * FROM edges WHERE 0;
CREATE TABLE IF NOT EXISTS open_nodes AS SELECT * FROM nodes WHERE 0;
CREATE UNIQUE INDEX IF NOT EXISTS open_edges_key
    ON open_edges (bucket, epoch, client, server, connection_type);
CREATE UNIQUE INDEX IF NOT EXISTS open_nodes_key ON open_nodes (bucket, epoch, service);
CREATE TABLE IF NOT EXISTS edge_hours (
    bucket INTEGER NOT NULL,
    client INTEGER NOT NULL,
    server INTEGER NOT NULL,
    connection_type INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    failed INTEGER NOT NULL,
    client_latency BLOB NOT NULL,
    server_latency BLOB NOT NULL,
    UNIQUE (bucket, client, server, connection_type)
);
CREATE TABLE IF NOT EXISTS node_hours (
    bucket INTEGER NOT NULL,
    service INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    latency BLOB NOT NULL,
    UNIQUE (bucket, service)
);
";

/// Minutes in an hour: the rollups' bucket.
pub const HOUR: i64 = 60;

/// Edge tables: final rows, and rows of minutes still being written.
const EDGE_TABLES: [&str; 2] = ["edges", "open_edges"];
/// Node tables, likewise.
const NODE_TABLES: [&str; 2] = ["nodes", "open_nodes"];
/// Every table of minute and compacted buckets (not the hourly rollups).
const TABLES: [&str; 4] = ["edges", "open_edges", "nodes", "open_nodes"];

/// The span of time the rows a read used cover, when coarser than minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Coverage {
    /// Earliest start and latest end (exclusive) of compacted buckets read,
    /// as unix minutes; `None` when every row was a single minute.
    pub coarse: Option<(Minute, Minute)>,
}

impl Coverage {
    fn include(&mut self, bucket: Minute, width: i64) {
        if width <= 1 {
            return;
        }
        let (start, end) = self.coarse.get_or_insert((bucket, bucket + width));
        *start = (*start).min(bucket);
        *end = (*end).max(bucket + width);
    }
}

/// Which rows a read takes.
#[derive(Debug, Clone, Copy)]
pub struct ReadRange {
    /// First minute of the window.
    pub first: Minute,
    /// Last minute of the window.
    pub last: Minute,
    /// From this minute on, rows of `epoch` are skipped: memory has them.
    pub memory_from: Minute,
    /// The current run.
    pub epoch: i64,
    /// Take whole hours from the rollups where they exist (window totals;
    /// series finer than an hour must not).
    pub prefer_rollups: bool,
    /// Hours starting before this have no minute rows any more; the
    /// rollups answer them, whole.
    pub fine_from: Minute,
}

/// Minute ranges for the fine tables, and hour ranges for the rollups.
type Ranges = (Vec<(Minute, Minute)>, Vec<(Minute, Minute)>);

/// Which tables a query reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Minute and compacted rows, open ones included.
    Fine,
    /// Hourly rollups.
    Hours,
}

/// One range read from one source.
#[derive(Debug, Clone, Copy)]
struct Query {
    kind: Source,
    /// First minute (or hour) of the range.
    lo: Minute,
    /// Last minute (or hour) of the range.
    hi: Minute,
    max_width: i64,
    memory_from: Minute,
    epoch: i64,
}

impl Query {
    /// The statement reading `columns` for this range, and its parameters:
    /// the fine tables' rows overlapping the range (all runs before
    /// `memory_from`, other runs after), or the rollups' hours in it.
    fn sql(
        &self,
        columns: &str,
        fine: &[&str],
        hours: &str,
        filter: &[(&str, i64)],
    ) -> (String, Vec<i64>) {
        let mut args = vec![self.lo, self.hi];
        let where_filter = |first: usize| {
            filter
                .iter()
                .enumerate()
                .map(|(i, (column, _))| format!(" AND {column} = ?{}", first + i))
                .collect::<String>()
        };
        let sql = match self.kind {
            Source::Fine => {
                args.extend([self.max_width - 1, self.memory_from, self.epoch]);
                let filter = where_filter(6);
                fine.iter()
                    .map(|table| {
                        format!(
                            "SELECT {columns} FROM {table}
                             WHERE bucket >= ?1 - ?3 AND bucket <= ?2 AND bucket + width > ?1
                               AND (bucket < ?4 OR epoch != ?5){filter}"
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(" UNION ALL ")
            }
            Source::Hours => {
                // Rollups have no width column: every row is an hour.
                let columns = columns.replacen("width", &HOUR.to_string(), 1);
                let filter = where_filter(3);
                format!("SELECT {columns} FROM {hours} WHERE bucket >= ?1 AND bucket <= ?2{filter}")
            }
        };
        args.extend(filter.iter().map(|(_, value)| *value));
        (sql, args)
    }
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// Rows written.
    pub rows: u64,
    /// Hours already rolled up that got minutes now (late hand-overs):
    /// their rollups must be redone.
    pub stale_hours: Vec<Minute>,
}

/// One edge's minute as written.
pub type EdgeRow = (EdgeKey, EdgeStats);
/// One node's minute as written.
pub type NodeRow = (Arc<str>, NodeStats);

/// One connection to the history database.
pub struct Db {
    conn: Connection,
    path: PathBuf,
    /// Interned names, both ways; only committed ids.
    ids: HashMap<Arc<str>, i64>,
    names: HashMap<i64, Arc<str>>,
}

impl Db {
    /// Opens or creates the database for writing, in WAL mode, after an
    /// integrity check.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(sqlite(path, "opening"))?;
        let mut db = Self::new(conn, path);
        db.configure()?;
        db.check()?;
        db.migrate()?;
        Ok(db)
    }

    /// Opens a read-only connection (API queries).
    pub fn open_reader(path: &Path) -> Result<Self, StoreError> {
        let conn = Connection::open(path).map_err(sqlite(path, "opening"))?;
        let db = Self::new(conn, path);
        db.conn
            .execute_batch("PRAGMA busy_timeout = 5000; PRAGMA query_only = 1;")
            .map_err(sqlite(path, "configuring a reader"))?;
        Ok(db)
    }

    fn new(conn: Connection, path: &Path) -> Self {
        Self {
            conn,
            path: path.to_owned(),
            ids: HashMap::new(),
            names: HashMap::new(),
        }
    }

    fn err(&self, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError + '_ {
        sqlite(&self.path, what)
    }

    fn configure(&mut self) -> Result<(), StoreError> {
        // WAL: readers never wait for the writer; NORMAL: a commit is in the
        // WAL before it returns, so it survives a crash of the process (only
        // a power loss can take the last commits).
        let mode: String = self
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(self.err("switching to WAL mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail: format!("journal mode stays {mode}"),
            });
        }
        // A reader holding an old snapshot (a long API query) keeps the WAL
        // from being reset, so it grows; without a limit the file keeps that
        // size, and the retention budget counts it as history.
        self.conn
            .execute_batch(&format!(
                "PRAGMA synchronous = NORMAL; PRAGMA busy_timeout = 5000; \
                 PRAGMA journal_size_limit = {WAL_SIZE_LIMIT};"
            ))
            .map_err(self.err("configuring"))
    }

    fn check(&mut self) -> Result<(), StoreError> {
        let detail: String = self
            .conn
            .query_row("PRAGMA quick_check(1)", [], |row| row.get(0))
            .map_err(self.err("checking integrity"))?;
        if detail != "ok" {
            return Err(StoreError::Corrupt {
                path: self.path.clone(),
                detail,
            });
        }
        Ok(())
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let found: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |row| row.get(0))
            .map_err(self.err("reading the schema version"))?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Schema {
                path: self.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        self.conn
            .execute_batch(&format!(
                "BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
            ))
            .map_err(self.err("creating the schema"))
    }

    /// Records a new run; its number is the epoch of everything it writes.
    pub fn begin_run(&mut self, started: SystemTime) -> Result<i64, StoreError> {
        let secs = started
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        self.conn
            .execute(
                "INSERT INTO runs (started_at, version) VALUES (?1, ?2)",
                params![secs, env!("CARGO_PKG_VERSION")],
            )
            .map_err(self.err("recording the run"))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Newest bucket of any row.
    pub fn newest_bucket(&mut self) -> Result<Option<Minute>, StoreError> {
        self.conn
            .query_row(
                // The aggregate max skips empty tables' NULLs; max(a, b) would not.
                "SELECT max(newest) FROM (
                     SELECT max(bucket) AS newest FROM edges UNION ALL
                     SELECT max(bucket) FROM nodes UNION ALL
                     SELECT max(bucket) FROM open_edges UNION ALL
                     SELECT max(bucket) FROM open_nodes)",
                [],
                |row| row.get(0),
            )
            .map_err(self.err("finding the newest bucket"))
    }

    /// Widest bucket ever written, in minutes.
    fn max_width(&self) -> Result<i64, StoreError> {
        let width: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'max_width'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.err("reading the widest bucket"))?;
        Ok(width.unwrap_or(1).max(1))
    }

    /// Every hour before this minute is rolled up; `None` before the first.
    pub fn rolled_until(&self) -> Result<Option<Minute>, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'rolled_until'",
                [],
                |row| row.get(0),
            )
            .optional()
            .map_err(self.err("reading the rollup progress"))
    }

    /// Oldest bucket in the minute and compacted tables.
    pub fn oldest_fine_bucket(&self) -> Result<Option<Minute>, StoreError> {
        self.conn
            .query_row(
                "SELECT min(oldest) FROM (
                     SELECT min(bucket) AS oldest FROM edges UNION ALL
                     SELECT min(bucket) FROM nodes UNION ALL
                     SELECT min(bucket) FROM open_edges UNION ALL
                     SELECT min(bucket) FROM open_nodes)",
                [],
                |row| row.get(0),
            )
            .map_err(self.err("finding the oldest bucket"))
    }

    /// Writes (or rewrites) minutes of run `epoch`, all in one transaction.
    /// Minutes up to `final_through` are final: they go to the main tables
    /// and leave the open ones.
    pub fn write_minutes(
        &mut self,
        epoch: i64,
        minutes: &[(Minute, Vec<EdgeRow>, Vec<NodeRow>)],
        final_through: Minute,
    ) -> Result<Written, StoreError> {
        let rolled_until = self.rolled_until()?.unwrap_or(Minute::MIN);
        let path = self.path.clone();
        let fail = |what| sqlite(&path, what);
        let tx = self.conn.transaction().map_err(fail("starting a write"))?;
        let mut fresh: Vec<(Arc<str>, i64)> = Vec::new();
        let mut rows = 0u64;
        let mut blob_a = Vec::with_capacity(256);
        let mut blob_b = Vec::with_capacity(256);
        {
            let mut intern = tx
                .prepare_cached(
                    "INSERT INTO names (name) VALUES (?1)
                     ON CONFLICT (name) DO UPDATE SET name = excluded.name RETURNING id",
                )
                .map_err(fail("preparing"))?;
            let mut id_of = |name: &Arc<str>, fresh: &mut Vec<(Arc<str>, i64)>| {
                if let Some(id) = self.ids.get(name) {
                    return Ok(*id);
                }
                if let Some((_, id)) = fresh.iter().find(|(n, _)| n == name) {
                    return Ok(*id);
                }
                let id: i64 = intern.query_row([&**name], |row| row.get(0))?;
                fresh.push((name.clone(), id));
                Ok::<i64, rusqlite::Error>(id)
            };
            let edge_sql = |table: &str| {
                format!(
                    "INSERT OR REPLACE INTO {table} (bucket, epoch, client, server, connection_type,
                     width, requests, failed, client_latency, server_latency)
                     VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6, ?7, ?8, ?9)"
                )
            };
            let node_sql = |table: &str| {
                format!(
                    "INSERT OR REPLACE INTO {table} (bucket, epoch, service, width, requests, errors, latency)
                     VALUES (?1, ?2, ?3, 1, ?4, ?5, ?6)"
                )
            };
            let mut final_edge = tx
                .prepare_cached(&edge_sql("edges"))
                .map_err(fail("preparing"))?;
            let mut open_edge = tx
                .prepare_cached(&edge_sql("open_edges"))
                .map_err(fail("preparing"))?;
            let mut final_node = tx
                .prepare_cached(&node_sql("nodes"))
                .map_err(fail("preparing"))?;
            let mut open_node = tx
                .prepare_cached(&node_sql("open_nodes"))
                .map_err(fail("preparing"))?;
            let mut close = tx
                .prepare_cached("DELETE FROM open_edges WHERE bucket = ?1 AND epoch = ?2")
                .map_err(fail("preparing"))?;
            let mut close_nodes = tx
                .prepare_cached("DELETE FROM open_nodes WHERE bucket = ?1 AND epoch = ?2")
                .map_err(fail("preparing"))?;
            // Rows go in key order: appends fill pages, random inserts
            // would leave them half empty.
            let mut minutes: Vec<_> = minutes.iter().collect();
            minutes.sort_unstable_by_key(|(minute, _, _)| *minute);
            for (minute, edges, nodes) in minutes {
                let is_final = *minute <= final_through;
                let (edge, node) = if is_final {
                    close
                        .execute(params![minute, epoch])
                        .map_err(fail("closing a minute"))?;
                    close_nodes
                        .execute(params![minute, epoch])
                        .map_err(fail("closing a minute"))?;
                    (&mut final_edge, &mut final_node)
                } else {
                    (&mut open_edge, &mut open_node)
                };
                let mut keyed = Vec::with_capacity(edges.len());
                for (key, stats) in edges {
                    let client = id_of(&key.client, &mut fresh).map_err(fail("naming"))?;
                    let server = id_of(&key.server, &mut fresh).map_err(fail("naming"))?;
                    keyed.push(((client, server, key.connection_type.code()), stats));
                }
                keyed.sort_unstable_by_key(|(k, _)| *k);
                for ((client, server, kind), stats) in keyed {
                    blob_a.clear();
                    blob_b.clear();
                    stats.client.encode(&mut blob_a);
                    stats.server.encode(&mut blob_b);
                    edge.execute(params![
                        minute,
                        epoch,
                        client,
                        server,
                        kind,
                        stats.requests as i64,
                        stats.failed as i64,
                        &blob_a,
                        &blob_b
                    ])
                    .map_err(fail("writing an edge"))?;
                    rows += 1;
                }
                let mut keyed = Vec::with_capacity(nodes.len());
                for (service, stats) in nodes {
                    keyed.push((id_of(service, &mut fresh).map_err(fail("naming"))?, stats));
                }
                keyed.sort_unstable_by_key(|(id, _)| *id);
                for (id, stats) in keyed {
                    blob_a.clear();
                    stats.latency.encode(&mut blob_a);
                    node.execute(params![
                        minute,
                        epoch,
                        id,
                        stats.requests as i64,
                        stats.errors as i64,
                        &blob_a
                    ])
                    .map_err(fail("writing a node"))?;
                    rows += 1;
                }
            }
        }
        tx.commit().map_err(fail("committing"))?;
        // Only now are the new ids real.
        for (name, id) in fresh {
            self.names.insert(id, name.clone());
            self.ids.insert(name, id);
        }
        let mut stale_hours: Vec<Minute> = minutes
            .iter()
            .map(|(minute, _, _)| *minute)
            .filter(|minute| *minute < rolled_until)
            .map(|minute| minute.div_euclid(HOUR) * HOUR)
            .collect();
        stale_hours.dedup();
        Ok(Written { rows, stale_hours })
    }

    /// Loads the names this connection has not seen (names only grow).
    fn refresh_names(&mut self) -> Result<(), StoreError> {
        let known = self.names.keys().copied().max().unwrap_or(0);
        let path = self.path.clone();
        let mut statement = self
            .conn
            .prepare_cached("SELECT id, name FROM names WHERE id > ?1")
            .map_err(sqlite(&path, "reading names"))?;
        let rows = statement
            .query_map([known], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })
            .map_err(sqlite(&path, "reading names"))?;
        for row in rows {
            let (id, name) = row.map_err(sqlite(&path, "reading names"))?;
            let name: Arc<str> = name.into();
            self.ids.insert(name.clone(), id);
            self.names.insert(id, name);
        }
        Ok(())
    }

    fn id(&mut self, name: &str) -> Result<Option<i64>, StoreError> {
        if let Some(id) = self.ids.get(name) {
            return Ok(Some(*id));
        }
        let id = self
            .conn
            .query_row("SELECT id FROM names WHERE name = ?1", [name], |row| {
                row.get(0)
            })
            .optional()
            .map_err(self.err("reading names"))?;
        Ok(id)
    }

    /// Feeds `acc` the selected rows that overlap `range`.
    pub fn read(
        &mut self,
        range: &ReadRange,
        selection: &Selection<'_>,
        acc: &mut dyn Accumulator,
    ) -> Result<Coverage, StoreError> {
        // One snapshot for names and rows, so every id read is known.
        self.conn
            .execute_batch("BEGIN")
            .map_err(self.err("starting a read"))?;
        let result = self
            .refresh_names()
            .and_then(|()| self.read_snapshot(range, selection, acc));
        let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
        self.conn
            .execute_batch(end)
            .map_err(self.err("ending a read"))?;
        result
    }

    fn read_snapshot(
        &mut self,
        range: &ReadRange,
        selection: &Selection<'_>,
        acc: &mut dyn Accumulator,
    ) -> Result<Coverage, StoreError> {
        let mut coverage = Coverage::default();
        let max_width = self.max_width()?;
        let (fine, hours) = self.plan(range)?;
        // The selection, as equalities on columns.
        let mut edge_filter: Vec<(&str, i64)> = Vec::new();
        let mut node_filter: Vec<(&str, i64)> = Vec::new();
        match selection {
            Selection::All => {}
            Selection::Edge {
                client,
                server,
                connection_type,
            } => {
                let (Some(client), Some(server)) = (self.id(client)?, self.id(server)?) else {
                    return Ok(coverage);
                };
                edge_filter.extend([("client", client), ("server", server)]);
                if let Some(t) = connection_type {
                    edge_filter.push(("connection_type", i64::from(t.code())));
                }
            }
            Selection::Node(name) => {
                let Some(id) = self.id(name)? else {
                    return Ok(coverage);
                };
                edge_filter.push(("server", id));
                node_filter.push(("service", id));
            }
        }
        let want_nodes = !matches!(selection, Selection::Edge { .. });
        for source in fine
            .iter()
            .map(|r| (Source::Fine, *r))
            .chain(hours.iter().map(|r| (Source::Hours, *r)))
        {
            let (kind, (lo, hi)) = source;
            let query = Query {
                kind,
                lo,
                hi,
                max_width,
                memory_from: range.memory_from,
                epoch: range.epoch,
            };
            self.read_edges(&query, &edge_filter, acc, &mut coverage)?;
            if want_nodes {
                self.read_nodes(&query, &node_filter, acc, &mut coverage)?;
            }
        }
        Ok(coverage)
    }

    /// Splits a read into minute ranges for the fine tables and hour ranges
    /// for the rollups (inclusive, merged where adjacent); every hour is
    /// read from exactly one of them.
    fn plan(&self, range: &ReadRange) -> Result<Ranges, StoreError> {
        let rolled_until = self.rolled_until()?.unwrap_or(Minute::MIN);
        let (mut fine, mut hours): Ranges = (Vec::new(), Vec::new());
        let push =
            |ranges: &mut Vec<(Minute, Minute)>, lo: Minute, hi: Minute| match ranges.last_mut() {
                Some((_, end)) if *end + 1 == lo => *end = hi,
                _ => ranges.push((lo, hi)),
            };
        // Memory answers this run's minutes from `memory_from` on; no
        // rollup covers them yet.
        let store_end = range.last.min(range.memory_from - 1);
        let mut hour = range.first.div_euclid(HOUR) * HOUR;
        while hour <= store_end {
            let (lo, hi) = (hour.max(range.first), (hour + HOUR - 1).min(store_end));
            let whole = lo == hour && hi == hour + HOUR - 1;
            let rolled = hour + HOUR <= rolled_until;
            if rolled && ((whole && range.prefer_rollups) || hour < range.fine_from) {
                push(&mut hours, hour, hour);
            } else {
                push(&mut fine, lo, hi);
            }
            hour += HOUR;
        }
        if range.last >= range.memory_from {
            push(&mut fine, range.first.max(range.memory_from), range.last);
        }
        Ok((fine, hours))
    }

    fn read_edges(
        &mut self,
        query: &Query,
        filter: &[(&str, i64)],
        acc: &mut dyn Accumulator,
        coverage: &mut Coverage,
    ) -> Result<(), StoreError> {
        let columns = "bucket, width, client, server, connection_type, requests, failed, \
                       client_latency, server_latency";
        let (sql, args) = query.sql(columns, &EDGE_TABLES, "edge_hours", filter);
        let path = &self.path;
        let fail = |what| sqlite(path, what);
        let mut statement = self
            .conn
            .prepare_cached(&sql)
            .map_err(fail("reading edges"))?;
        let mut cursor = statement
            .query(rusqlite::params_from_iter(&args))
            .map_err(fail("reading edges"))?;
        // Decoded into one scratch value, row after row: no allocation per row.
        let mut stats = EdgeStats::default();
        while let Some(row) = cursor.next().map_err(fail("reading edges"))? {
            let get = |i| row.get::<_, i64>(i);
            let blob = |i| row.get_ref(i).and_then(|v| Ok(v.as_blob()?));
            let ints = (|| {
                Ok::<_, rusqlite::Error>([
                    get(0)?,
                    get(1)?,
                    get(2)?,
                    get(3)?,
                    get(4)?,
                    get(5)?,
                    get(6)?,
                ])
            })()
            .map_err(fail("reading edges"))?;
            let [bucket, width, client, server, kind, requests, failed] = ints;
            let damaged = |source| StoreError::Sketch {
                path: path.clone(),
                source,
            };
            stats.requests = requests as u64;
            stats.failed = failed as u64;
            stats
                .client
                .decode_into(blob(7).map_err(fail("reading edges"))?)
                .map_err(damaged)?;
            stats
                .server
                .decode_into(blob(8).map_err(fail("reading edges"))?)
                .map_err(damaged)?;
            let name = |id: i64| {
                self.names
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| StoreError::Corrupt {
                        path: path.clone(),
                        detail: format!("name {id} is missing"),
                    })
            };
            let key = EdgeKey {
                client: name(client)?,
                server: name(server)?,
                connection_type: ConnectionType::from_code(kind).ok_or_else(|| {
                    StoreError::Corrupt {
                        path: path.clone(),
                        detail: format!("unknown connection type {kind}"),
                    }
                })?,
                client_dimensions: Box::default(),
                server_dimensions: Box::default(),
            };
            coverage.include(bucket, width);
            acc.edge(bucket, width, &key, &stats);
        }
        Ok(())
    }

    fn read_nodes(
        &mut self,
        query: &Query,
        filter: &[(&str, i64)],
        acc: &mut dyn Accumulator,
        coverage: &mut Coverage,
    ) -> Result<(), StoreError> {
        let columns = "bucket, width, service, requests, errors, latency";
        let (sql, args) = query.sql(columns, &NODE_TABLES, "node_hours", filter);
        let path = &self.path;
        let fail = |what| sqlite(path, what);
        let mut statement = self
            .conn
            .prepare_cached(&sql)
            .map_err(fail("reading nodes"))?;
        let mut cursor = statement
            .query(rusqlite::params_from_iter(&args))
            .map_err(fail("reading nodes"))?;
        let mut stats = NodeStats::default();
        while let Some(row) = cursor.next().map_err(fail("reading nodes"))? {
            let get = |i| row.get::<_, i64>(i);
            let ints =
                (|| Ok::<_, rusqlite::Error>([get(0)?, get(1)?, get(2)?, get(3)?, get(4)?]))()
                    .map_err(fail("reading nodes"))?;
            let [bucket, width, service, requests, errors] = ints;
            stats.requests = requests as u64;
            stats.errors = errors as u64;
            let latency = row
                .get_ref(5)
                .and_then(|v| Ok(v.as_blob()?))
                .map_err(fail("reading nodes"))?;
            stats
                .latency
                .decode_into(latency)
                .map_err(|source| StoreError::Sketch {
                    path: path.clone(),
                    source,
                })?;
            let service = self
                .names
                .get(&service)
                .ok_or_else(|| StoreError::Corrupt {
                    path: path.clone(),
                    detail: format!("name {service} is missing"),
                })?;
            coverage.include(bucket, width);
            acc.node(bucket, width, service, &stats);
        }
        Ok(())
    }

    /// Deletes buckets that end at or before `oldest`; returns the rows deleted.
    pub fn expire(&mut self, oldest: Minute) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for table in TABLES {
            deleted += self
                .conn
                .execute(
                    &format!("DELETE FROM {table} WHERE bucket < ?1 AND bucket + width <= ?1"),
                    [oldest],
                )
                .map_err(self.err("expiring old buckets"))? as u64;
        }
        for table in ["edge_hours", "node_hours"] {
            deleted += self
                .conn
                .execute(
                    &format!("DELETE FROM {table} WHERE bucket <= ?1 - {HOUR}"),
                    [oldest],
                )
                .map_err(self.err("expiring old hours"))? as u64;
        }
        Ok(deleted)
    }

    /// Buckets of `width` minutes, starting before `cut`, that still hold
    /// finer rows: at most `limit` of them, oldest first.
    pub fn compaction_targets(
        &mut self,
        width: i64,
        cut: Minute,
        limit: usize,
    ) -> Result<Vec<Minute>, StoreError> {
        let mut targets = Vec::new();
        // Open tables too: a crashed run leaves its last minute there.
        for table in TABLES {
            let mut statement = self
                .conn
                .prepare(&format!(
                    "SELECT DISTINCT (bucket / ?1) * ?1 AS target FROM {table}
                     WHERE bucket < ?2 AND width < ?1 ORDER BY target LIMIT ?3"
                ))
                .map_err(self.err("planning compaction"))?;
            let rows = statement
                .query_map(params![width, cut, limit as i64], |row| {
                    row.get::<_, i64>(0)
                })
                .map_err(sqlite(&self.path, "planning compaction"))?;
            for row in rows {
                targets.push(row.map_err(sqlite(&self.path, "planning compaction"))?);
            }
        }
        targets.sort_unstable();
        targets.dedup();
        targets.truncate(limit);
        Ok(targets)
    }

    /// Merges every row of `target..target + width` into one row per series
    /// (epoch 0), in one transaction; returns the rows merged away.
    pub fn compact(&mut self, target: Minute, width: i64) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let fail = |what| sqlite(&path, what);
        let tx = self
            .conn
            .transaction()
            .map_err(fail("starting compaction"))?;
        let end = target + width;
        let merged = merge_fine(&tx, &path, target, end)?;
        for table in TABLES {
            tx.execute(
                &format!("DELETE FROM {table} WHERE bucket >= ?1 AND bucket < ?2"),
                [target, end],
            )
            .map_err(fail("compacting"))?;
        }
        merged.insert(
            &tx,
            &path,
            "INSERT INTO edges (bucket, epoch, client, server, connection_type, width,
             requests, failed, client_latency, server_latency)
             VALUES (?1, 0, ?2, ?3, ?4, ?9, ?5, ?6, ?7, ?8)",
            "INSERT INTO nodes (bucket, epoch, service, width, requests, errors, latency)
             VALUES (?1, 0, ?2, ?6, ?3, ?4, ?5)",
            target,
            width,
        )?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('max_width', ?1)
             ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
            [width],
        )
        .map_err(fail("compacting"))?;
        tx.commit().map_err(fail("committing compaction"))?;
        Ok(merged.rows - (merged.edges.len() + merged.nodes.len()) as u64)
    }

    /// Rolls the hour starting at `hour` up into one row per series, all
    /// runs merged, and records the progress; returns the rows written.
    pub fn roll_up(&mut self, hour: Minute) -> Result<u64, StoreError> {
        let path = self.path.clone();
        let fail = |what| sqlite(&path, what);
        let tx = self.conn.transaction().map_err(fail("starting a rollup"))?;
        let merged = merge_fine(&tx, &path, hour, hour + HOUR)?;
        merged.insert(
            &tx,
            &path,
            "INSERT OR REPLACE INTO edge_hours (bucket, client, server, connection_type,
             requests, failed, client_latency, server_latency)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            "INSERT OR REPLACE INTO node_hours (bucket, service, requests, errors, latency)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            hour,
            HOUR,
        )?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('rolled_until', ?1)
             ON CONFLICT (key) DO UPDATE SET value = max(value, excluded.value)",
            [hour + HOUR],
        )
        .map_err(fail("recording a rollup"))?;
        tx.commit().map_err(fail("committing a rollup"))?;
        Ok((merged.edges.len() + merged.nodes.len()) as u64)
    }

    /// Deletes the minute and compacted rows of hours before `cut`, which
    /// the rollups hold; returns the rows deleted.
    pub fn drop_fine_before(&mut self, cut: Minute) -> Result<u64, StoreError> {
        let mut deleted = 0;
        for table in TABLES {
            deleted += self
                .conn
                .execute(&format!("DELETE FROM {table} WHERE bucket < ?1"), [cut])
                .map_err(self.err("dropping rolled-up minutes"))? as u64;
        }
        Ok(deleted)
    }

    /// Size of the database and its WAL, bytes.
    pub fn size_bytes(&self) -> u64 {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        [self.path.as_os_str(), wal.as_os_str()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Every fine row of a span of minutes, merged per series.
struct Merged {
    /// Per (client, server, connection type); ordered, so rows go in as appends.
    edges: BTreeMap<(i64, i64, i64), EdgeStats>,
    /// Per service.
    nodes: BTreeMap<i64, NodeStats>,
    /// Rows read.
    rows: u64,
}

impl Merged {
    /// Inserts the merged rows at `bucket`. Edge statements take (bucket,
    /// client, server, type, requests, failed, client sketch, server
    /// sketch[, width]); node statements (bucket, service, requests,
    /// errors, sketch[, width]).
    fn insert(
        &self,
        tx: &rusqlite::Transaction<'_>,
        path: &Path,
        edge_sql: &str,
        node_sql: &str,
        bucket: Minute,
        width: i64,
    ) -> Result<(), StoreError> {
        let fail = |what| sqlite(path, what);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let mut edge = tx.prepare(edge_sql).map_err(fail("writing merged edges"))?;
        let with_width = edge.parameter_count() == 9;
        for ((client, server, kind), stats) in &self.edges {
            a.clear();
            b.clear();
            stats.client.encode(&mut a);
            stats.server.encode(&mut b);
            let values = params![
                bucket,
                client,
                server,
                kind,
                stats.requests as i64,
                stats.failed as i64,
                &a,
                &b,
                width
            ];
            let values = if with_width { values } else { &values[..8] };
            edge.execute(values).map_err(fail("writing merged edges"))?;
        }
        let mut node = tx.prepare(node_sql).map_err(fail("writing merged nodes"))?;
        let with_width = node.parameter_count() == 6;
        for (service, stats) in &self.nodes {
            a.clear();
            stats.latency.encode(&mut a);
            let values = params![
                bucket,
                service,
                stats.requests as i64,
                stats.errors as i64,
                &a,
                width
            ];
            let values = if with_width { values } else { &values[..5] };
            node.execute(values).map_err(fail("writing merged nodes"))?;
        }
        Ok(())
    }
}

/// Reads and merges every fine row (open ones included) of `from..to`.
fn merge_fine(
    tx: &rusqlite::Transaction<'_>,
    path: &Path,
    from: Minute,
    to: Minute,
) -> Result<Merged, StoreError> {
    let fail = |what| sqlite(path, what);
    let damaged = |source| StoreError::Sketch {
        path: path.to_owned(),
        source,
    };
    let mut merged = Merged {
        edges: BTreeMap::new(),
        nodes: BTreeMap::new(),
        rows: 0,
    };
    let mut statement = tx
        .prepare(
            "SELECT client, server, connection_type, requests, failed, client_latency, server_latency
             FROM edges WHERE bucket >= ?1 AND bucket < ?2
             UNION ALL
             SELECT client, server, connection_type, requests, failed, client_latency, server_latency
             FROM open_edges WHERE bucket >= ?1 AND bucket < ?2",
        )
        .map_err(fail("merging edges"))?;
    let mut cursor = statement.query([from, to]).map_err(fail("merging edges"))?;
    let mut stats = EdgeStats::default();
    while let Some(row) = cursor.next().map_err(fail("merging edges"))? {
        let int = |i| row.get::<_, i64>(i).map_err(fail("merging edges"));
        let blob = |i| {
            row.get_ref(i)
                .and_then(|v| Ok(v.as_blob()?))
                .map_err(fail("merging edges"))
        };
        stats.requests = int(3)? as u64;
        stats.failed = int(4)? as u64;
        stats.client.decode_into(blob(5)?).map_err(damaged)?;
        stats.server.decode_into(blob(6)?).map_err(damaged)?;
        merged
            .edges
            .entry((int(0)?, int(1)?, int(2)?))
            .or_default()
            .merge(&stats);
        merged.rows += 1;
    }
    let mut statement = tx
        .prepare(
            "SELECT service, requests, errors, latency FROM nodes WHERE bucket >= ?1 AND bucket < ?2
             UNION ALL
             SELECT service, requests, errors, latency FROM open_nodes WHERE bucket >= ?1 AND bucket < ?2",
        )
        .map_err(fail("merging nodes"))?;
    let mut cursor = statement.query([from, to]).map_err(fail("merging nodes"))?;
    let mut stats = NodeStats::default();
    while let Some(row) = cursor.next().map_err(fail("merging nodes"))? {
        let int = |i| row.get::<_, i64>(i).map_err(fail("merging nodes"));
        stats.requests = int(1)? as u64;
        stats.errors = int(2)? as u64;
        let blob = row
            .get_ref(3)
            .and_then(|v| Ok(v.as_blob()?))
            .map_err(fail("merging nodes"))?;
        stats.latency.decode_into(blob).map_err(damaged)?;
        merged.nodes.entry(int(0)?).or_default().merge(&stats);
        merged.rows += 1;
    }
    Ok(merged)
}

fn sqlite(path: &Path, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Sqlite { path, what, source }
}
