//! Reading a stopped node's WAL directory without changing it: [`verify_dir`] (what
//! `raftctl wal verify` runs) and [`dump_dir`] (`raftctl wal dump`).
//!
//! Nothing here writes: no lock file is created, a torn tail is reported instead of
//! truncated, `.tmp` files are left where they are, and segments are mapped read-only. When
//! the directory has a lock file, a shared flock on it makes a running node's directory
//! refuse with [`WalError::Locked`], and keeps a node from starting on it meanwhile.
//!
//! The checks are recovery's own, so the verdict is the one `Wal::open` would reach: the
//! segments go through `recovery::analyze` and `recovery::classify` (record and batch CRCs,
//! headers, padding, zero tails, gaps, term regressions, and the decision between a torn
//! tail and damage), and the snapshot files through the scrubber's `SnapshotScan` (header,
//! length, CRC). The scrubber's segment scan is not used for segments: it checks a segment
//! being written only up to its synced end, which only the running WAL knows, and cannot
//! tell a torn tail from damage.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use raft::{HardState, LogIndex, SnapshotMeta, Term};

use crate::backend::{read_at, read_at_into, SegmentMap, StdBackend};
use crate::error::WalError;
use crate::format::{self, get_u64, Record, RecordProblem, SEGMENT_HEADER_BYTES};
use crate::recovery::{self, Segment, Verdict};
use crate::scrub::{Damage, Scanned, SnapshotScan, WINDOW_BYTES};
use crate::vote::{self, REPAIR_FILE};
use crate::wal::{
    check_log_start, io_error, parse_snapshot_name, segment_ids, segment_name, snapshot_name,
    LOCK_FILE,
};

/// A segment file of the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentFile {
    /// Its path.
    pub path: PathBuf,
    /// The first index its header names (0 when the header is damaged).
    pub first_index: LogIndex,
    /// Its size (segments are preallocated: most of it may be zeros).
    pub bytes: u64,
}

/// A snapshot file of the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// Its path.
    pub path: PathBuf,
    /// Index and term from its header (`None` when the header is unreadable).
    pub meta: Option<SnapshotMeta>,
    /// Its size.
    pub bytes: u64,
    /// What is wrong with it, if anything.
    pub damage: Option<Damage>,
}

/// What [`verify_dir`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// The segments, oldest first.
    pub segments: Vec<SegmentFile>,
    /// The snapshot files, newest first.
    pub snapshots: Vec<SnapshotFile>,
    /// The hard state recovery would use (the log's, merged with its copy outside it).
    pub hard_state: HardState,
    /// The newest valid snapshot (index 0 when none).
    pub snapshot: SnapshotMeta,
    /// The log recovery would keep: `first_index..=last_index` (empty when first > last).
    pub first_index: LogIndex,
    /// See `first_index`.
    pub last_index: LogIndex,
    /// A torn tail (an interrupted last write: not damage), which recovery would truncate.
    pub torn_tail: Option<String>,
    /// The node was repairing a damaged log when it stopped (the `REPAIRING` file).
    pub repairing: bool,
    /// The first damage: recovery would refuse the directory, or a repairing node would cut
    /// its log there.
    pub damage: Option<Damage>,
    /// Where the records recovery keeps end, when that is before the end of the written
    /// records (a torn tail or damage): a segment and the offset of the batch cut there.
    pub log_end: Option<(PathBuf, u64)>,
}

/// A segment mapped read-only, or a copy of one cut at a torn tail (zeros after the cut).
enum ReadOnly {
    Mapped(Option<memmap2::Mmap>),
    Cut(Vec<u8>),
}

impl SegmentMap for ReadOnly {
    fn bytes(&self) -> &[u8] {
        match self {
            ReadOnly::Mapped(map) => map.as_deref().unwrap_or(&[]),
            ReadOnly::Cut(bytes) => bytes,
        }
    }

    fn file_bytes(&self) -> usize {
        self.bytes().len()
    }

    fn write_at(&mut self, _offset: usize, _len: usize) -> &mut [u8] {
        unreachable!("recovery's analysis only reads a segment")
    }

    fn read_at(&self, offset: usize) -> &[u8] {
        &self.bytes()[offset..]
    }

    fn sync(&mut self, _offset: usize, _len: usize) -> io::Result<()> {
        unreachable!("recovery's analysis never syncs")
    }
}

/// Checks every segment and snapshot file of the WAL directory `dir` as recovery would,
/// without changing anything. `Err` only when the directory cannot be read (missing, not a
/// directory, a node running on it, an IO error); damage is in the report.
pub fn verify_dir(dir: impl AsRef<Path>) -> Result<VerifyReport, WalError> {
    let dir = dir.as_ref();
    let _lock = lock_shared(dir)?;
    verify_locked(dir).map(|(report, _)| report)
}

/// Calls `visit` with every record (but commit records) recovery would keep, in log order,
/// with its file and offset; then returns what [`verify_dir`] would. Read-only, like it.
pub fn dump_dir(
    dir: impl AsRef<Path>,
    visit: &mut dyn FnMut(&Path, u64, &Record<'_>),
) -> Result<VerifyReport, WalError> {
    let dir = dir.as_ref();
    let _lock = lock_shared(dir)?;
    let (report, segments) = verify_locked(dir)?;
    for segment in &segments {
        let end = match &report.log_end {
            Some((path, offset)) if *path == segment.path => *offset as usize,
            _ => usize::MAX,
        };
        let bytes = segment.map.bytes();
        let mut at = SEGMENT_HEADER_BYTES;
        while at < end {
            match format::read_record(bytes, at) {
                Ok((record, total)) => {
                    if !matches!(record, Record::Commit { .. }) {
                        visit(&segment.path, at as u64, &record);
                    }
                    at += total;
                }
                Err(RecordProblem::End | RecordProblem::Bad(_)) => break,
            }
        }
        if end != usize::MAX {
            break;
        }
    }
    Ok(report)
}

/// Takes a shared flock on the lock file, when there is one (none is created).
fn lock_shared(dir: &Path) -> Result<Option<File>, WalError> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => {
            return Err(WalError::NotADirectory {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(WalError::DirMissing {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(io_error(dir, "stat directory", e)),
    }
    let path = dir.join(LOCK_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(&path, "open", e)),
    };
    match crate::sys::lock_shared(&file) {
        Ok(()) => Ok(Some(file)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Err(WalError::Locked {
            dir: dir.to_path_buf(),
            holder_pid: std::fs::read_to_string(&path)
                .ok()
                .and_then(|pid| pid.trim().parse().ok()),
        }),
        Err(e) => Err(io_error(&path, "lock", e)),
    }
}

fn verify_locked(dir: &Path) -> Result<(VerifyReport, Vec<Segment>), WalError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, "list directory", e))? {
        let entry = entry.map_err(|e| io_error(dir, "list directory", e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    let (mut segments, missing) = map_segments(dir, &names)?;
    let snapshots = scan_snapshots(dir, &names)?;
    let mut report = VerifyReport {
        segments: segments
            .iter()
            .map(|s| SegmentFile {
                path: s.path.clone(),
                first_index: s.first_index,
                bytes: s.map.file_bytes() as u64,
            })
            .collect(),
        snapshot: SnapshotMeta::default(),
        hard_state: HardState::default(),
        first_index: LogIndex(1),
        last_index: LogIndex(0),
        torn_tail: None,
        repairing: names.iter().any(|n| n == REPAIR_FILE),
        damage: missing,
        log_end: None,
        snapshots,
    };
    if report.damage.is_none() {
        replay(dir, &mut segments, &mut report);
    }
    if report.damage.is_none() {
        report.damage = report.snapshots.iter().find_map(|s| s.damage.clone());
    }
    Ok((report, segments))
}

/// Maps the segments read-only, oldest first; a missing one in the sequence is damage.
fn map_segments(dir: &Path, names: &[String]) -> Result<(Vec<Segment>, Option<Damage>), WalError> {
    let ids = match segment_ids(dir, names) {
        Ok(ids) => ids,
        Err(WalError::Corrupt { file, offset, what }) => {
            return Ok((Vec::new(), Some(Damage { file, offset, what })))
        }
        Err(e) => return Err(e),
    };
    let mut segments = Vec::with_capacity(ids.len());
    for id in ids {
        let path = dir.join(segment_name(id));
        let file = File::open(&path).map_err(|e| io_error(&path, "open segment", e))?;
        let len = file
            .metadata()
            .map_err(|e| io_error(&path, "stat segment", e))?
            .len();
        let len = usize::try_from(len).map_err(|_| {
            io_error(
                &path,
                "map segment",
                io::Error::other("file too large to map"),
            )
        })?;
        let map = match len {
            0 => None,
            _ => Some(
                crate::sys::map_read_only(&file, len)
                    .map_err(|e| io_error(&path, "map segment", e))?,
            ),
        };
        segments.push(Segment::new(id, path, Box::new(ReadOnly::Mapped(map))));
    }
    Ok((segments, None))
}

/// Replays the segments as recovery does, cutting (in memory) at a torn tail, and fills in
/// the log, the hard state and the first damage.
fn replay(dir: &Path, segments: &mut Vec<Segment>, report: &mut VerifyReport) {
    let replayed = loop {
        let problem = match recovery::analyze(segments) {
            Ok(replayed) => break replayed,
            Err(problem) => problem,
        };
        let path = segments[problem.segment].path.clone();
        report.log_end = Some((path.clone(), problem.cut_at as u64));
        match recovery::classify(segments, &problem) {
            Verdict::TornTail => {
                report.torn_tail = Some(format!(
                    "torn tail in {} at offset {} ({}); a node would truncate it at {}",
                    path.display(),
                    problem.offset,
                    problem.what,
                    problem.cut_at
                ));
                segments.truncate(problem.segment + 1);
                if problem.cut_at == 0 {
                    segments.pop();
                } else {
                    let mut bytes = segments[problem.segment].map.bytes().to_vec();
                    bytes[problem.cut_at..].fill(0);
                    segments[problem.segment].map = Box::new(ReadOnly::Cut(bytes));
                }
            }
            Verdict::Corrupt(what) => {
                report.damage = Some(Damage {
                    file: path,
                    offset: problem.offset as u64,
                    what,
                });
                return;
            }
        }
    };
    let (vote_copy, _) = vote::read_newest(&StdBackend::default(), dir);
    report.hard_state = vote::merge(replayed.hard_state, vote_copy);
    let mut log = replayed.log;
    let newest = report
        .snapshots
        .iter()
        .filter(|s| s.damage.is_none())
        .find_map(|s| s.meta);
    if let Some(meta) = newest.filter(|meta| meta.index >= log.snapshot.index) {
        log.compact(meta);
    } else if log.snapshot.index > LogIndex(0) {
        // The file the log depends on: its own damage says most.
        let file = dir.join(snapshot_name(&log.snapshot));
        let damaged = report.snapshots.iter().find(|s| s.path == file);
        report.damage = Some(damaged.and_then(|s| s.damage.clone()).unwrap_or(Damage {
            file,
            offset: 0,
            what: format!(
                "a snapshot marker records a snapshot through index {} but its file is missing",
                log.snapshot.index
            ),
        }));
        return;
    }
    if let Err(WalError::Corrupt { file, offset, what }) = check_log_start(dir, segments, &log) {
        report.damage = Some(Damage { file, offset, what });
        return;
    }
    report.snapshot = log.snapshot;
    report.first_index = LogIndex(log.start);
    report.last_index = log.last_index();
}

/// Checks every snapshot file (newest first) with the scrubber's scan.
fn scan_snapshots(dir: &Path, names: &[String]) -> Result<Vec<SnapshotFile>, WalError> {
    let mut found: Vec<(u64, &String)> = names
        .iter()
        .filter_map(|name| parse_snapshot_name(name).map(|index| (index, name)))
        .collect();
    found.sort_unstable_by(|a, b| b.cmp(a));
    let mut snapshots = Vec::with_capacity(found.len());
    for (_, name) in found {
        let path = dir.join(name);
        let file = File::open(&path).map_err(|e| io_error(&path, "open snapshot", e))?;
        let bytes = file
            .metadata()
            .map_err(|e| io_error(&path, "stat snapshot", e))?
            .len();
        let mut read =
            |offset: u64, len: usize, into: &mut Vec<u8>| read_at_into(&file, offset, len, into);
        let mut buffer = Vec::new();
        let mut scan = SnapshotScan::new(name.clone());
        let damage = loop {
            match scan.step(bytes, &mut read, &mut buffer, WINDOW_BYTES * 16) {
                Scanned::More(_) => continue,
                Scanned::Done(_) => break None,
                Scanned::Bad(offset, what) => {
                    break Some(Damage {
                        file: path.clone(),
                        offset: offset as u64,
                        what,
                    })
                }
            }
        };
        let meta = read_at(&file, 0, format::SNAPSHOT_HEADER_BYTES)
            .ok()
            .filter(|h| h.len() == format::SNAPSHOT_HEADER_BYTES)
            .map(|h| SnapshotMeta {
                index: LogIndex(get_u64(&h, format::SNAPSHOT_INDEX_OFFSET)),
                term: Term(get_u64(&h, format::SNAPSHOT_TERM_OFFSET)),
            });
        snapshots.push(SnapshotFile {
            path,
            meta,
            bytes,
            damage,
        });
    }
    Ok(snapshots)
}
