//! The files of a disk queue: numbered segments of checksummed records.
//!
//! ```text
//! <dir>/<id:020>.seg   header: "TMQS" | version u32 | segment id u64      (16 bytes)
//!                      record: payload length u32 | crc32 u32 | created unix ms u64
//!                              | items u32 | payload                       (20 + length)
//! <dir>/position       frontier (segment, offset) | taken-through (segment, offset) | crc32
//! ```
//!
//! The checksum covers everything after it (created, items, payload), so a
//! torn length is caught too: the bytes it points at do not match. Numbers
//! are little-endian. Records are written with one `write` per push, so a
//! SIGKILL keeps everything written; `fsync` bounds what a power loss takes.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

/// The format version this build writes; files from a newer one are left alone.
pub const VERSION: u32 = 1;
const MAGIC: [u8; 4] = *b"TMQS";
/// Bytes of a segment's header.
pub const HEADER: u64 = 16;
/// Bytes of a record's header.
pub const RECORD_HEADER: u64 = 20;
/// No record is larger: a length above it is corruption, not data.
pub const MAX_PAYLOAD: u32 = 64 * 1024 * 1024;
const POSITION_FILE: &str = "position";

/// A place in the log: a segment and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    /// The segment's id.
    pub segment: u64,
    /// Bytes from the segment's start.
    pub offset: u64,
}

impl Pos {
    /// The first record of `segment`.
    pub fn start_of(segment: u64) -> Self {
        Self {
            segment,
            offset: HEADER,
        }
    }
}

/// Why a queue directory cannot be used; the file is always named.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file could not be created, read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// Written by a newer tracemap; never rewritten by this one.
    #[error("{path}: queue format version {found} is newer than this build's {VERSION}")]
    NewerVersion {
        /// The segment.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
}

impl LogError {
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> Self + '_ {
        move |source| Self::Io {
            path: path.to_owned(),
            source,
        }
    }

    /// The metric label of this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io { source, .. } if source.raw_os_error() == Some(28) => "no_space",
            Self::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                "permission"
            }
            Self::Io { source, .. } if source.raw_os_error() == Some(30) => "read_only",
            Self::Io { .. } => "io",
            Self::NewerVersion { .. } => "newer_version",
        }
    }
}

/// The path of segment `id` in `dir`.
pub fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:020}.seg"))
}

/// Segment ids in `dir`, oldest first.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(LogError::io(dir))? {
        let entry = entry.map_err(LogError::io(dir))?;
        let name = entry.file_name();
        let Some(id) = name
            .to_str()
            .and_then(|n| n.strip_suffix(".seg"))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        ids.push(id);
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Creates segment `id`, header written, opened for appending.
pub fn create_segment(dir: &Path, id: u64) -> Result<File, LogError> {
    let path = segment_path(dir, id);
    let mut file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(LogError::io(&path))?;
    let mut header = [0u8; HEADER as usize];
    header[..4].copy_from_slice(&MAGIC);
    header[4..8].copy_from_slice(&VERSION.to_le_bytes());
    header[8..16].copy_from_slice(&id.to_le_bytes());
    file.write_all(&header).map_err(LogError::io(&path))?;
    Ok(file)
}

/// Appends one record's bytes to `out`.
pub fn encode_record(out: &mut Vec<u8>, created_ms: u64, items: u32, payload: &[u8]) {
    encode_record_with(out, created_ms, items, |out| out.extend_from_slice(payload));
}

/// Appends one record whose payload `write` appends, in place (one copy);
/// returns the record's length with its header.
pub fn encode_record_with(
    out: &mut Vec<u8>,
    created_ms: u64,
    items: u32,
    write: impl FnOnce(&mut Vec<u8>),
) -> u64 {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&created_ms.to_le_bytes());
    out.extend_from_slice(&items.to_le_bytes());
    write(out);
    let length = out.len() - start - RECORD_HEADER as usize;
    let length = u32::try_from(length).expect("records are far below 4 GiB");
    let crc = crc32fast::hash(&out[start + 8..]);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    (out.len() - start) as u64
}

/// A record read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When it was appended (unix ms).
    pub created_ms: u64,
    /// The items it carries.
    pub items: u32,
    /// What the exporter encoded.
    pub payload: Bytes,
}

/// What the bytes at a position hold.
#[derive(Debug)]
pub enum Read1 {
    /// A record, and where the next one starts.
    Record(Record, u64),
    /// A record whose checksum does not match; its length is plausible, so
    /// reading goes on after it.
    Corrupt(u64),
    /// A record cut short by the end of the file: a write torn by a crash.
    Torn,
    /// Unreadable from here on (a length no record has).
    Lost,
}

/// Reads records of one segment in order.
#[derive(Debug)]
pub struct SegmentReader {
    file: BufReader<File>,
    /// Where the next record starts.
    pub offset: u64,
}

impl SegmentReader {
    /// Opens segment `id` at `offset`, after checking its header.
    pub fn open(dir: &Path, id: u64, offset: u64) -> Result<Self, HeaderError> {
        let path = segment_path(dir, id);
        let mut file = File::open(&path).map_err(|e| HeaderError::Log(LogError::io(&path)(e)))?;
        let mut header = [0u8; HEADER as usize];
        if file.read_exact(&mut header).is_err() || header[..4] != MAGIC {
            return Err(HeaderError::Damaged(path));
        }
        let version = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
        if version > VERSION {
            return Err(HeaderError::Log(LogError::NewerVersion {
                path,
                found: version,
            }));
        }
        if version == 0 || u64::from_le_bytes(header[8..16].try_into().expect("8 bytes")) != id {
            return Err(HeaderError::Damaged(path));
        }
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| HeaderError::Log(LogError::io(&path)(e)))?;
        Ok(Self {
            file: BufReader::with_capacity(64 * 1024, file),
            offset: offset.max(HEADER),
        })
    }

    /// The record at the current offset, if its bytes end by `end`.
    pub fn next(&mut self, end: u64) -> Option<Read1> {
        if self.offset >= end {
            return None;
        }
        let mut header = [0u8; RECORD_HEADER as usize];
        if self.file.read_exact(&mut header).is_err() {
            return Some(Read1::Torn);
        }
        let field = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4"));
        let length = field(0);
        let crc = field(4);
        let created_ms = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let items = field(16);
        let next = self.offset + RECORD_HEADER + u64::from(length);
        if length > MAX_PAYLOAD {
            return Some(Read1::Lost);
        }
        if next > end {
            return Some(Read1::Torn);
        }
        let mut payload = vec![0u8; length as usize];
        if self.file.read_exact(&mut payload).is_err() {
            return Some(Read1::Torn);
        }
        self.offset = next;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&header[8..]);
        hasher.update(&payload);
        if hasher.finalize() != crc {
            return Some(Read1::Corrupt(next));
        }
        Some(Read1::Record(
            Record {
                created_ms,
                items,
                payload: payload.into(),
            },
            next,
        ))
    }
}

/// Why a segment's header cannot be read.
#[derive(Debug)]
pub enum HeaderError {
    /// Not a segment of this format (bad magic, id or version 0): set aside.
    Damaged(PathBuf),
    /// Unreadable, or from a newer version.
    Log(LogError),
}

/// What a scan of one segment found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scan {
    /// Where the last whole record ends.
    pub end: u64,
    /// Whole records, with good checksums.
    pub records: u64,
    /// Their items.
    pub items: u64,
    /// Records with a bad checksum (counted when the reader skips them).
    pub corrupt: u64,
    /// The bytes after `end` are not a torn write but a corrupt length:
    /// whatever records they held are lost.
    pub lost: bool,
    /// Bytes after `end` that hold no whole record (a torn last write).
    pub torn_bytes: u64,
    /// Of the whole records, those starting before the split offset
    /// (already read and acknowledged).
    pub consumed_records: u64,
    /// Their items.
    pub consumed_items: u64,
}

/// Reads a whole segment, checking every record; records starting before
/// `split` count as consumed, the others as waiting.
pub fn scan(dir: &Path, id: u64, split: u64) -> Result<Scan, HeaderError> {
    let path = segment_path(dir, id);
    let size = fs::metadata(&path)
        .map_err(|e| HeaderError::Log(LogError::io(&path)(e)))?
        .len();
    let mut reader = SegmentReader::open(dir, id, HEADER)?;
    let mut scan = Scan {
        end: HEADER,
        ..Scan::default()
    };
    while let Some(read) = reader.next(size) {
        match read {
            Read1::Record(record, next) => {
                if scan.end < split {
                    scan.consumed_records += 1;
                    scan.consumed_items += u64::from(record.items);
                } else {
                    scan.records += 1;
                    scan.items += u64::from(record.items);
                }
                scan.end = next;
            }
            Read1::Corrupt(next) => {
                scan.corrupt += 1;
                scan.end = next;
            }
            Read1::Torn => break,
            Read1::Lost => {
                scan.lost = true;
                break;
            }
        }
    }
    scan.torn_bytes = size - scan.end;
    Ok(scan)
}

/// The persisted read positions: everything before `frontier` is
/// acknowledged; everything before `taken` was handed to the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Positions {
    /// All before it acknowledged.
    pub frontier: Pos,
    /// All before it taken for sending (some perhaps delivered).
    pub taken: Pos,
}

/// The `position` file, rewritten in place (one 36-byte `pwrite`).
#[derive(Debug)]
pub struct PositionFile {
    file: File,
    path: PathBuf,
}

impl PositionFile {
    /// Opens (or creates) it and reads what it holds; `None` when new or
    /// unreadable (then replay starts at the oldest segment).
    pub fn open(dir: &Path) -> Result<(Self, Option<Positions>), LogError> {
        let path = dir.join(POSITION_FILE);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(LogError::io(&path))?;
        let mut bytes = [0u8; 36];
        let stored = match file.read_exact_at(&mut bytes, 0) {
            Ok(()) => decode_positions(&bytes),
            Err(_) => None,
        };
        Ok((Self { file, path }, stored))
    }

    /// Stores `positions`.
    pub fn store(&self, positions: Positions) -> Result<(), LogError> {
        let mut bytes = [0u8; 36];
        let words = [
            positions.frontier.segment,
            positions.frontier.offset,
            positions.taken.segment,
            positions.taken.offset,
        ];
        for (i, word) in words.iter().enumerate() {
            bytes[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        let crc = crc32fast::hash(&bytes[..32]);
        bytes[32..].copy_from_slice(&crc.to_le_bytes());
        self.file
            .write_all_at(&bytes, 0)
            .map_err(LogError::io(&self.path))
    }

    /// A handle for `fsync` off the lock.
    pub fn handle(&self) -> io::Result<File> {
        self.file.try_clone()
    }
}

fn decode_positions(bytes: &[u8; 36]) -> Option<Positions> {
    let crc = u32::from_le_bytes(bytes[32..].try_into().expect("4 bytes"));
    if crc32fast::hash(&bytes[..32]) != crc {
        return None;
    }
    let word = |i: usize| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().expect("8"));
    Some(Positions {
        frontier: Pos {
            segment: word(0),
            offset: word(1),
        },
        taken: Pos {
            segment: word(2),
            offset: word(3),
        },
    })
}
