//! The `Wal` itself: open and recovery, the write path (append, hard state, persist,
//! snapshots, compaction) and the reads.

use std::collections::{BTreeSet, VecDeque};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use log::{debug, info, warn};
use raft::{Configuration, Entry, HardState, LogIndex, Snapshot, SnapshotMeta, Term};

use crate::backend::{Backend, Pace, SegmentMap, StdBackend, SyncWait};
use crate::error::{is_no_space, is_read_only, WalError};
use crate::format::{self, kind, SEGMENT_HEADER_BYTES};
use crate::log_map::{Location, LogMap};
use crate::recovery::{self, Segment, Verdict};
use crate::scrub::{self, Damage, Scanned, ScrubStep, ScrubTotals, SegmentScan, SnapshotScan};
use crate::vote::{self, VoteCopy, REPAIR_FILE, VOTE_FILES};

/// The lock file's name; it holds the pid of the process that holds the lock.
pub const LOCK_FILE: &str = "LOCK";
/// Page size for releasing durable parts of the active segment from memory.
const RELEASE_PAGE_BYTES: usize = 4096;
/// Release in steps of at least this much, so the system call is rare.
const RELEASE_CHUNK_BYTES: usize = 1 << 20;

/// The default segment size: big enough that rollover is rare, small enough that compaction
/// frees space soon after a snapshot.
pub const SEGMENT_BYTES_DEFAULT: u64 = 64 << 20;
const SEGMENT_BYTES_MIN: u64 = 4096;

/// How to open a WAL.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Size of each preallocated segment file (a batch bigger than this gets a bigger segment).
    pub segment_bytes: u64,
    /// Cut the log at the first corrupt record instead of refusing to open (logged, and the
    /// cut is reported in `Recovered::repaired`). The operator's choice, never a default.
    pub repair: bool,
    /// File access; `StdBackend` unless a test injects faults.
    pub backend: Arc<dyn Backend>,
    /// Use helper threads for the slow file work: create (and zero-fill) the next segment
    /// while the current one fills, so a rollover only renames it (the spare file counts
    /// towards disk use); and delete compacted segments and old snapshot files, which on ext4
    /// with online discard takes about 25 ms for a written 64 MiB segment. Off in tests that
    /// inject faults at exact moments or count files right after a compaction; then every
    /// rollover creates its segment unfilled (`Pace::Unfilled`), as one that finds the next
    /// segment unfinished does.
    pub helper_threads: bool,
}

impl Default for WalOptions {
    fn default() -> WalOptions {
        WalOptions {
            segment_bytes: SEGMENT_BYTES_DEFAULT,
            repair: false,
            backend: Arc::new(StdBackend::default()),
            helper_threads: true,
        }
    }
}

/// What `Wal::open` found. Entries are not loaded: read them with `Wal::entries`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recovered {
    /// The last durable hard state (default if none was ever persisted).
    pub hard_state: HardState,
    /// The newest valid snapshot, if any.
    pub snapshot: Option<Snapshot>,
    /// The first index in the log (snapshot index + 1).
    pub first_index: LogIndex,
    /// The last index in the log (the snapshot index if the log is empty).
    pub last_index: LogIndex,
    /// A torn tail that was truncated (decision table row 2), described for the operator.
    pub torn_tail: Option<String>,
    /// Corruption cut away because `repair` was set (row 5), described for the operator.
    pub repaired: Option<String>,
    /// The node is repairing a damaged log: the cut happened now or at an earlier open and
    /// [`Wal::finish_repair`] was not called since (see "Damage" in FORMAT.md).
    pub repairing: bool,
}

/// Writes snapshot files for a [`Wal`], possibly on another thread: the slow part of
/// [`Wal::save_snapshot`] (encoding, writing and syncing the file, renaming it into place,
/// syncing the directory) without touching the log. [`Wal::install_snapshot_file`] then does
/// the small rest on the thread that owns the WAL. A crash between the two leaves a complete
/// snapshot file without its marker, which recovery handles (see the decision table).
#[derive(Clone)]
pub struct SnapshotWriter {
    dir: PathBuf,
    backend: Arc<dyn Backend>,
}

/// Reads a snapshot file back, checking its CRC (see [`Wal::snapshot_reader`]).
pub struct SnapshotReader {
    path: PathBuf,
    backend: Arc<dyn Backend>,
}

impl SnapshotReader {
    /// Reads and checks the whole file.
    pub fn read(&self) -> Result<Snapshot, WalError> {
        let bytes = self
            .backend
            .read(&self.path)
            .map_err(|e| io_error(&self.path, "read snapshot", e))?;
        format::decode_snapshot_owned(bytes).map_err(|what| WalError::Corrupt {
            file: self.path.clone(),
            offset: 0,
            what,
        })
    }
}

/// A snapshot file durable under its final name, not yet part of the log.
#[derive(Debug)]
pub struct WrittenSnapshot {
    meta: SnapshotMeta,
    name: String,
    bytes: u64,
}

impl WrittenSnapshot {
    /// Where the snapshot ends in the log.
    pub fn meta(&self) -> SnapshotMeta {
        self.meta
    }
}

impl SnapshotWriter {
    /// Writes `snapshot` to a temporary file, syncs it, renames it into place and syncs the
    /// directory. A full disk is `NoSpace` with nothing left behind.
    pub fn write(&self, snapshot: &Snapshot) -> Result<WrittenSnapshot, WalError> {
        let data = &snapshot.data;
        self.write_from(
            snapshot.meta,
            &snapshot.configuration,
            data.len() as u64,
            |out| out(data),
            false,
        )
    }

    /// Like [`SnapshotWriter::write`], with the snapshot's data produced while the file is
    /// written: `data` hands `data_bytes` bytes, in as many pieces as it likes, to the
    /// function it is given. The file is written a chunk at a time (the real backend), so the
    /// data never needs to be in memory whole. `data` handing over another number of bytes
    /// than it said is an error (`InvalidData`), leaving no file. Meant for a helper thread
    /// while the node serves: the real backend paces the writes, leaving two thirds of the
    /// disk's time to the WAL's persists, where [`SnapshotWriter::write`] (a snapshot a
    /// follower installs, waited for) writes at full speed.
    pub fn write_streamed(
        &self,
        meta: SnapshotMeta,
        configuration: &Configuration,
        data_bytes: u64,
        data: impl FnOnce(&mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>,
    ) -> Result<WrittenSnapshot, WalError> {
        self.write_from(meta, configuration, data_bytes, data, true)
    }

    fn write_from(
        &self,
        meta: SnapshotMeta,
        configuration: &Configuration,
        data_bytes: u64,
        data: impl FnOnce(&mut dyn FnMut(&[u8]) -> io::Result<()>) -> io::Result<()>,
        paced: bool,
    ) -> Result<WrittenSnapshot, WalError> {
        let name = snapshot_name(&meta);
        let path = self.dir.join(&name);
        let temp = self.dir.join(format!("{name}.tmp"));
        let mut header = format::snapshot_header_unsealed(&meta, configuration, data_bytes);
        let bytes = header.len() as u64 + data_bytes;
        let written = (|| {
            let mut file = self.backend.create_streamed(&temp, paced)?;
            // The header's place is held by its unsealed bytes until the data's CRC is known.
            file.append(&header)?;
            let mut crc = format::snapshot_crc_of_header(&header);
            let mut handed = 0u64;
            data(&mut |piece: &[u8]| {
                crc.update(piece);
                handed += piece.len() as u64;
                file.append(piece)
            })?;
            if handed != data_bytes {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the snapshot's data was {handed} bytes, not the {data_bytes} said"),
                ));
            }
            format::seal_snapshot_header(&mut header, crc);
            file.finish(&header)
        })();
        if let Err(source) = written {
            let _ = self.backend.remove(&temp);
            if is_no_space(&source) {
                return Err(WalError::NoSpace { path: temp, bytes });
            }
            return Err(io_error(&temp, "write snapshot", source));
        }
        self.backend
            .rename(&temp, &path)
            .map_err(|source| io_error(&path, "rename snapshot", source))?;
        self.backend
            .sync_dir(&self.dir)
            .map_err(|source| io_error(&self.dir, "fsync directory", source))?;
        Ok(WrittenSnapshot { meta, name, bytes })
    }
}

/// The file name under which the next segment is prepared; like every `.tmp` file it is removed
/// when the WAL opens.
const SPARE_NAME: &str = "next-segment.tmp";

/// What a persist under way makes durable (see `Wal::persist_start`).
#[derive(Debug)]
struct InFlight {
    end: usize,
    hard_state: HardState,
    last_index: LogIndex,
}

/// The next segment file, being created and zero-filled by a helper thread. A rollover takes
/// it only once the thread is done; until then the file is the thread's alone, so a
/// half-filled spare is never renamed into place.
struct Spare {
    path: PathBuf,
    bytes: usize,
    /// Made from a freed segment rather than created.
    reused: bool,
    /// The pace it is zero-filled at; closing the WAL cancels it.
    pace: Pace,
    thread: std::thread::JoinHandle<io::Result<Box<dyn SegmentMap>>>,
}

/// An open write-ahead log. See the crate docs for the contract.
pub struct Wal {
    dir: PathBuf,
    backend: Arc<dyn Backend>,
    segment_bytes: usize,
    _lock: Box<dyn Send>,
    /// Oldest first, consecutive ids; the last one is written to.
    segments: VecDeque<Segment>,
    log: LogMap,
    hard_state: HardState,
    /// The hard state as of the last persist: written first into each new segment.
    durable_hard_state: HardState,
    /// The last index as of the last persist: the first index of the next new segment is one more.
    durable_last_index: LogIndex,
    /// A persist whose wait for the disk runs elsewhere (`persist_start`): the write
    /// position, hard state and last index it makes durable once `persist_finish` hears
    /// that the wait succeeded.
    in_flight: Option<InFlight>,
    /// Where the batch not yet closed by a commit record starts, in the last segment.
    batch_start: usize,
    /// Where the next record goes, in the last segment.
    write_pos: usize,
    /// Bytes of the last segment before this offset are durable.
    synced_end: usize,
    /// Written pages of the last segment before this offset were released from memory (a
    /// map written in place, `mmap` mode; see `SegmentMap::release_written`).
    released_end: usize,
    /// A file was created, renamed or deleted since the last directory fsync.
    dir_dirty: bool,
    snapshot_name: Option<String>,
    /// The size of that file (asked of the file system once, not at every `disk_bytes`).
    snapshot_bytes: u64,
    /// The first write, msync or fsync failure; every later write is refused.
    failed: Option<String>,
    /// Whether to prepare segments and delete files on helper threads (`WalOptions`).
    helper_threads: bool,
    spare: Option<Spare>,
    /// A segment compaction freed, kept back from deletion to become the next spare
    /// (FORMAT.md, "Reused segments").
    reusable: Option<PathBuf>,
    /// Segments created unfilled by a rollover since open (no finished spare then).
    segments_unfilled: u64,
    /// Spares made from a freed segment and taken by a rollover since open.
    segments_reused: u64,
    /// Deletes compacted files off the caller's thread; started at the first compaction.
    reaper: Option<Reaper>,
    /// The newest copy of term and vote outside the segments (see `vote`).
    vote_copy: VoteCopy,
    /// Which of the two copy files exist.
    vote_files: [bool; 2],
    /// The node is repairing a damaged log (cut at open, or marked at an earlier open).
    repairing: bool,
    /// Files the scrubber found damaged that are still part of the log.
    damaged: BTreeSet<PathBuf>,
    /// The repair marker file exists: while `repairing` or `damaged` is not empty.
    marker_on_disk: bool,
    /// Where the scrubber stands, and what it did so far.
    scrub: scrub::Cursor,
    scrub_totals: ScrubTotals,
    /// The buffer the scrubber reads into, kept from read to read.
    scrub_buffer: Vec<u8>,
    /// A scrubber step is out ([`Wal::scrub_begin`] handed it over and
    /// [`Wal::scrub_end`] has not taken it back).
    scrub_out: bool,
    /// Counts the changes that remove or replace files (compactions, installed
    /// snapshots): a scrubber step that read while one happened read a file that may have
    /// been deleted, reused or rewritten under it, and is done again.
    files_changed: u64,
}

pub(crate) fn segment_name(id: u64) -> String {
    format!("{id:016x}.wal")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".wal")?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

pub(crate) fn snapshot_name(meta: &SnapshotMeta) -> String {
    format!(
        "snap-{:016x}-{:016x}.snap",
        meta.index.get(),
        meta.term.get()
    )
}

pub(crate) fn parse_snapshot_name(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
    u64::from_str_radix(rest.get(..16)?, 16).ok()
}

pub(crate) fn io_error(path: &Path, op: &'static str, source: io::Error) -> WalError {
    WalError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

impl Wal {
    /// Opens (or initialises, when empty) the WAL in `dir`, which must exist: takes the lock,
    /// recovers per the decision table, and returns the WAL with what it recovered.
    pub fn open(dir: impl AsRef<Path>, options: WalOptions) -> Result<(Wal, Recovered), WalError> {
        let dir = dir.as_ref();
        match Wal::open_once(dir, options.clone()) {
            // With `repair`, every damage a cut can mend was cut; what is left (a damaged
            // snapshot file its log depends on, a missing segment, a log that starts after
            // the newest valid snapshot) leaves nothing this node can vouch for: the log and
            // the snapshots go, the copy of term and vote stays, and the node repairs itself
            // from the cluster like after a cut (see FORMAT.md, "Damage").
            Err(WalError::Corrupt { file, offset, what }) if options.repair => {
                let text = format!(
                    "corruption in {} at offset {offset} ({what}) that no cut can mend; the log and its snapshots were discarded",
                    file.display()
                );
                warn!("wal: {text}");
                // Marker first, as for a cut: an open that fails after the discard (a full
                // disk) must leave a node that still knows it is repairing.
                write_repair_marker(&*options.backend, dir, &text)?;
                discard_log(&*options.backend, dir)?;
                let (wal, mut recovered) = Wal::open_once(dir, options)?;
                debug_assert!(recovered.repairing);
                recovered.repaired = Some(text);
                Ok((wal, recovered))
            }
            other => other,
        }
    }

    fn open_once(dir: &Path, options: WalOptions) -> Result<(Wal, Recovered), WalError> {
        let dir = dir.to_path_buf();
        let backend = options.backend.clone();
        let lock = lock_dir(&*backend, &dir)?;
        let names = backend
            .list(&dir)
            .map_err(|e| io_error(&dir, "list directory", e))?;
        for name in names.iter().filter(|name| name.ends_with(".tmp")) {
            // An interrupted snapshot write; the rename never happened, so nothing refers to it.
            let path = dir.join(name);
            backend
                .remove(&path)
                .map_err(|e| io_error(&path, "remove", e))?;
        }
        let mut segments = open_segments(&*backend, &dir, &names)?;
        let snapshot = newest_snapshot(&*backend, &dir, &names)?;
        let mut torn_tail = None;
        let mut repaired = None;
        let replayed = loop {
            let problem = match recovery::analyze(&segments) {
                Ok(replayed) => break replayed,
                Err(problem) => problem,
            };
            let path = segments[problem.segment].path.clone();
            let where_ = format!("{} at offset {}", path.display(), problem.offset);
            match recovery::classify(&segments, &problem) {
                Verdict::TornTail => {
                    let text = format!(
                        "torn tail in {where_} ({}); truncated at {}",
                        problem.what, problem.cut_at
                    );
                    warn!("wal: {text}");
                    torn_tail = Some(text);
                }
                Verdict::Corrupt(what) if options.repair => {
                    let text = format!(
                        "corruption in {where_} ({what}); repair cut the log at {}",
                        problem.cut_at
                    );
                    warn!("wal: {text}");
                    // The marker goes first: a crash after the cut must not leave a
                    // shortened log that looks whole (see FORMAT.md, "Damage").
                    write_repair_marker(&*backend, &dir, &text)?;
                    repaired = Some(text);
                }
                Verdict::Corrupt(what) => {
                    return Err(WalError::Corrupt {
                        file: path,
                        offset: problem.offset as u64,
                        what,
                    });
                }
            }
            cut(
                &*backend,
                &dir,
                &mut segments,
                problem.segment,
                problem.cut_at,
            )?;
        };
        let (vote_copy, vote_files) = vote::read_newest(&*backend, &dir);
        let hard_state = vote::merge(replayed.hard_state, vote_copy);
        if hard_state != replayed.hard_state {
            warn!(
                "wal: the log's newest term and vote ({}) are older than their copy outside it; using term {} vote {}",
                replayed.hard_state, hard_state.term, hard_state.vote
            );
        }
        // Marked now (a cut above) or at an earlier open.
        let repairing = repaired.is_some() || names.iter().any(|n| n == REPAIR_FILE);
        let mut log = replayed.log;
        let mut snapshot_file = None;
        // A snapshot file newer than the log's last snapshot marker: a crash came between
        // writing the file and persisting its marker, or a repair cut the marker away.
        let mut unmarked = None;
        if let Some((name, snapshot)) = &snapshot {
            if snapshot.meta.index >= log.snapshot.index {
                if snapshot.meta.index > log.snapshot.index {
                    unmarked = Some(snapshot.meta);
                }
                log.compact(snapshot.meta);
                snapshot_file = Some(name.clone());
            }
        }
        if snapshot_file.is_none() && log.snapshot.index > LogIndex(0) {
            let what = format!(
                "a snapshot marker records a snapshot through index {} but its file is missing or damaged",
                log.snapshot.index
            );
            return Err(WalError::Corrupt {
                file: dir.join(snapshot_name(&log.snapshot)),
                offset: 0,
                what,
            });
        }
        check_log_start(&dir, &segments, &log)?;
        let snapshot_bytes = snapshot_file
            .as_ref()
            .map_or(0, |name| backend.file_bytes(&dir.join(name)).unwrap_or(0));
        let mut wal = Wal {
            dir,
            backend,
            segment_bytes: usize::try_from(options.segment_bytes.max(SEGMENT_BYTES_MIN))
                .unwrap_or(usize::MAX),
            _lock: lock,
            segments: VecDeque::from(segments),
            hard_state,
            durable_hard_state: hard_state,
            durable_last_index: log.last_index(),
            in_flight: None,
            log,
            batch_start: replayed.write_pos,
            write_pos: replayed.write_pos,
            synced_end: replayed.write_pos,
            released_end: 0,
            dir_dirty: false,
            snapshot_bytes,
            snapshot_name: snapshot_file,
            failed: None,
            helper_threads: options.helper_threads,
            spare: None,
            reusable: None,
            segments_unfilled: 0,
            segments_reused: 0,
            reaper: None,
            vote_copy: vote_copy.unwrap_or_default(),
            vote_files,
            repairing,
            damaged: BTreeSet::new(),
            marker_on_disk: repairing,
            scrub: scrub::Cursor::Start,
            scrub_totals: ScrubTotals::default(),
            scrub_buffer: Vec::new(),
            scrub_out: false,
            files_changed: 0,
        };
        // Recovery read every segment through its map and released each one's pages as it
        // went (`recovery::analyze`; its last pass ran after any cut), so none stay resident.
        match wal.segments.back_mut() {
            Some(segment) => segment.map.start_appending(wal.write_pos),
            None => wal.create_first_segment()?,
        }
        if let Some(meta) = unmarked {
            // The segments must say so too: entries appended from now on follow the
            // snapshot, and a log whose entries jump past its last entry without a marker
            // reads as a gap at the next open (found by the whole-server simulator: a cut
            // removed a marker, and the node's next restart refused its log).
            wal.reserve(format::MARKER_RECORD_BYTES)?;
            wal.put_record(kind::SNAPSHOT_MARKER, &format::marker_payload(&meta), &[]);
            wal.persist()?;
        }
        wal.compact_files()?;
        wal.prepare_spare();
        let recovered = Recovered {
            hard_state: wal.hard_state,
            snapshot: snapshot
                .map(|(_, snapshot)| snapshot)
                .filter(|s| s.meta == wal.log.snapshot),
            first_index: wal.first_index(),
            last_index: wal.last_index(),
            torn_tail,
            repaired,
            repairing,
        };
        info!(
            "wal: opened {} with {} segment(s), log {}..={}, {}",
            wal.dir.display(),
            wal.segments.len(),
            recovered.first_index,
            recovered.last_index,
            recovered.hard_state
        );
        Ok((wal, recovered))
    }

    // ---- the write path ------------------------------------------------------------------

    /// Appends entries to the log, not yet durable (see `persist`). Their indices must be
    /// consecutive and the first must be at most `last_index() + 1` and above the snapshot; if
    /// it is at or below `last_index()`, the conflicting suffix is discarded first (Raft §5.3).
    /// Terms must not decrease.
    pub fn append(&mut self, entries: &[Entry]) -> Result<(), WalError> {
        self.check_not_in_flight();
        self.check_writable()?;
        let Some(first) = entries.first() else {
            return Ok(());
        };
        self.check_append(entries)?;
        let overwrite = first.index <= self.last_index();
        let mut bytes: usize = entries.iter().map(format::entry_record_bytes).sum();
        if overwrite {
            bytes += format::TRUNCATE_RECORD_BYTES;
        }
        self.reserve(bytes)?;
        if overwrite {
            self.put_truncate(first.index);
        }
        let segment_id = self.active_id();
        for entry in entries {
            let offset = self.put_record(kind::ENTRY, &format::entry_head(entry), &entry.data);
            let location = Location {
                term: entry.term,
                segment_id,
                offset,
            };
            self.log
                .push(entry.index.get(), location)
                .expect("append checked contiguity and terms");
        }
        Ok(())
    }

    fn check_append(&self, entries: &[Entry]) -> Result<(), WalError> {
        let first = &entries[0];
        if first.index <= self.log.snapshot.index {
            return Err(WalError::Compacted {
                index: first.index,
                first_index: self.first_index(),
            });
        }
        if first.index > self.last_index().next() {
            return Err(WalError::NotContiguous {
                expected: self.last_index().next(),
                found: first.index,
            });
        }
        if first.index <= self.last_index() && first.index <= self.hard_state.commit {
            let commit = self.hard_state.commit;
            return Err(WalError::TruncatesCommitted {
                index: first.index,
                commit,
            });
        }
        let mut previous = (
            first.index.prev(),
            self.log.term(first.index.prev()).unwrap_or_default(),
        );
        for entry in entries {
            if entry.index != previous.0.next() {
                return Err(WalError::NotContiguous {
                    expected: previous.0.next(),
                    found: entry.index,
                });
            }
            if entry.term < previous.1 {
                return Err(WalError::TermRegression {
                    index: entry.index,
                    term: entry.term,
                    previous: previous.1,
                });
            }
            if entry.data.len() > format::ENTRY_DATA_BYTES_MAX {
                let (bytes, max) = (entry.data.len() as u64, format::ENTRY_DATA_BYTES_MAX as u64);
                return Err(WalError::EntryTooLarge {
                    index: entry.index,
                    bytes,
                    max,
                });
            }
            previous = (entry.index, entry.term);
        }
        Ok(())
    }

    /// Records a new hard state, not yet durable (see `persist`). The term must not decrease.
    pub fn set_hard_state(&mut self, state: HardState) -> Result<(), WalError> {
        self.check_not_in_flight();
        self.check_writable()?;
        if state == self.hard_state {
            return Ok(());
        }
        if state.term < self.hard_state.term {
            return Err(WalError::HardStateRegression {
                current: self.hard_state.term,
                given: state.term,
            });
        }
        self.reserve(format::HARD_STATE_RECORD_BYTES)?;
        self.put_record(kind::HARD_STATE, &format::hard_state_payload(&state), &[]);
        self.hard_state = state;
        Ok(())
    }

    /// Like [`Wal::persist`], with the wait for the disk split off so that it can run on
    /// another thread while the caller goes on with other work (thesis §10.2.1: a server
    /// need not idle while its disk writes). Everything up to now is written (the commit
    /// record closes the batch; `pwrite` mode copies it into the file) and the returned
    /// [`SyncWait`] makes it durable; the caller hands its result to
    /// [`Wal::persist_finish`], and until then nothing written is durable, and the WAL may
    /// only be read (every write panics). Returns `None` when the persist was done whole
    /// here instead: the segment's map cannot split its sync (`mmap` mode, the simulator's
    /// disk), or the persist also has a directory or the copy of term and vote to sync,
    /// which stay in order here.
    pub fn persist_start(&mut self) -> Result<Option<SyncWait>, WalError> {
        self.check_writable()?;
        self.check_not_in_flight();
        if self.dir_dirty || self.vote_copy.behind(&self.hard_state) {
            return self.persist().map(|()| None);
        }
        if self.write_pos == self.batch_start {
            return Ok(None);
        }
        self.close_batch();
        self.batch_start = self.write_pos;
        let (from, to) = (self.synced_end, self.write_pos);
        self.in_flight = Some(InFlight {
            end: to,
            hard_state: self.hard_state,
            last_index: self.last_index(),
        });
        let segment = self.segments.back_mut().expect("there is always a segment");
        match segment.map.sync_split(from, to - from) {
            Ok(Some(wait)) => Ok(Some(wait)),
            // The batch is closed: synced whole here (and nothing else is left to do).
            Ok(None) => {
                let synced = segment.map.sync(from, to - from);
                self.persist_finish(synced).map(|()| None)
            }
            Err(source) => {
                self.in_flight = None;
                let segment = self.segments.back().expect("there is always a segment");
                let error = io_error(&segment.path, "pwrite", source);
                Err(self.poison(error))
            }
        }
    }

    /// The outcome of the [`SyncWait`] that [`Wal::persist_start`] returned: on success
    /// what it wrote is durable now; a failure poisons the WAL (the bytes may or may not
    /// be on the disk, which only a restart's recovery can tell).
    pub fn persist_finish(&mut self, waited: std::io::Result<()>) -> Result<(), WalError> {
        let done = self
            .in_flight
            .take()
            .expect("persist_finish without a persist_start under way");
        if let Err(source) = waited {
            let segment = self.segments.back().expect("there is always a segment");
            let error = io_error(&segment.path, "sync", source);
            return Err(self.poison(error));
        }
        self.synced_end = done.end;
        self.release_durable_pages();
        self.durable_hard_state = done.hard_state;
        self.durable_last_index = done.last_index;
        Ok(())
    }

    /// Whether a persist's wait is under way (between `persist_start` and
    /// `persist_finish`).
    pub fn is_persisting(&self) -> bool {
        self.in_flight.is_some()
    }

    fn check_not_in_flight(&self) {
        assert!(
            self.in_flight.is_none(),
            "the WAL was written to while a persist's wait was under way"
        );
    }

    /// Durable whole pages behind the write position need not stay resident (the pages a map
    /// written in place dirtied; a `pwrite`-mode map wrote none and ignores this).
    fn release_durable_pages(&mut self) {
        let page_end = self.synced_end / RELEASE_PAGE_BYTES * RELEASE_PAGE_BYTES;
        if page_end >= self.released_end + RELEASE_CHUNK_BYTES {
            let segment = self.segments.back_mut().expect("there is always a segment");
            segment
                .map
                .release_written(self.released_end, page_end - self.released_end);
            self.released_end = page_end;
        }
    }

    /// Makes everything appended and set since the last call durable: closes the batch with a
    /// commit record, makes the written range durable once (`pwrite` and fdatasync, or msync),
    /// and fsyncs the directory if a file was created, renamed or deleted. Returns only when
    /// all of it is on disk. Call it once per batch of work (one Raft `Ready`): that is the
    /// group commit. A failure poisons the WAL.
    pub fn persist(&mut self) -> Result<(), WalError> {
        self.check_not_in_flight();
        self.check_writable()?;
        if self.write_pos == self.batch_start && !self.dir_dirty {
            return Ok(());
        }
        if self.write_pos > self.batch_start {
            self.close_batch();
        }
        let (from, to) = (self.synced_end, self.write_pos);
        let segment = self.segments.back_mut().expect("there is always a segment");
        if let Err(source) = segment.map.sync(from, to - from) {
            let error = io_error(&segment.path, "msync", source);
            return Err(self.poison(error));
        }
        self.sync_dir_if_dirty()?;
        self.write_vote_copy()?;
        self.batch_start = self.write_pos;
        self.synced_end = self.write_pos;
        self.release_durable_pages();
        self.durable_hard_state = self.hard_state;
        self.durable_last_index = self.last_index();
        Ok(())
    }

    /// Stores a snapshot and compacts the log behind it. The snapshot file is written to a
    /// temporary name, fsynced, renamed and the directory fsynced; then a snapshot-marker
    /// record is appended and everything pending is persisted (this calls `persist`); then
    /// segments wholly at or below the snapshot's index and older snapshot files are deleted.
    /// If the log does not hold the snapshot's last entry with its term, the whole log is
    /// discarded (Raft §7, InstallSnapshot).
    pub fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), WalError> {
        self.check_not_in_flight();
        self.check_writable()?;
        let meta = snapshot.meta;
        if meta.index <= self.log.snapshot.index {
            return Err(WalError::SnapshotStale {
                index: meta.index,
                current: self.log.snapshot.index,
            });
        }
        let written = match self.snapshot_writer().write(snapshot) {
            Ok(w) => w,
            Err(e @ WalError::NoSpace { .. }) => return Err(e),
            Err(e) => return Err(self.poison(e)),
        };
        self.install_snapshot_file(written).map(|_| ())
    }

    /// A writer for snapshot files that can run on another thread (see [`SnapshotWriter`]).
    pub fn snapshot_writer(&self) -> SnapshotWriter {
        SnapshotWriter {
            dir: self.dir.clone(),
            backend: self.backend.clone(),
        }
    }

    /// Makes a snapshot file written by a [`SnapshotWriter`] part of the log: appends the
    /// snapshot marker, persists, and compacts segments and older snapshot files behind it.
    /// Returns false (and removes the file) when a newer snapshot was installed meanwhile.
    pub fn install_snapshot_file(&mut self, written: WrittenSnapshot) -> Result<bool, WalError> {
        self.check_not_in_flight();
        self.check_writable()?;
        let meta = written.meta;
        if meta == self.log.snapshot && self.snapshot_name.as_deref() == Some(written.name.as_str())
        {
            // The same snapshot written again under the same name (the rename replaced the
            // file): how a damaged snapshot file is mended.
            self.snapshot_bytes = written.bytes;
            self.damaged.remove(&self.dir.join(&written.name));
            self.compact_files()?;
            return Ok(true);
        }
        if meta.index <= self.log.snapshot.index {
            if self.snapshot_name.as_deref() != Some(written.name.as_str()) {
                let _ = self.backend.remove(&self.dir.join(&written.name));
            }
            return Ok(false);
        }
        // A snapshot whose last entry the log holds with another term (or not at all)
        // replaces the whole log (Raft §7). Said with a truncation record too, not left to
        // the marker: recovery knows the terms of the segments that remain only, and when the
        // entry at the snapshot's index was in a segment this snapshot compacts away, a
        // marker alone cannot tell it that the entries after it are stale — it kept them,
        // found the new leader's entry at the same index after them, and refused the log as
        // damaged (found by the whole-server simulator: a deposed leader that installed its
        // successor's snapshot while its own entry began a segment).
        let replaces_log =
            self.log.last_index() > meta.index && self.log.term(meta.index) != Some(meta.term);
        let mut bytes = format::MARKER_RECORD_BYTES;
        if replaces_log {
            bytes += format::TRUNCATE_RECORD_BYTES;
        }
        self.reserve(bytes)?;
        if replaces_log {
            self.put_truncate(meta.index.next());
        }
        self.put_record(kind::SNAPSHOT_MARKER, &format::marker_payload(&meta), &[]);
        self.log.compact(meta);
        self.snapshot_name = Some(written.name);
        self.snapshot_bytes = written.bytes;
        self.persist()?;
        self.compact_files()?;
        Ok(true)
    }

    // ---- reads ---------------------------------------------------------------------------

    /// Entries `lo..hi` (hi exclusive), stopping before `max_bytes` of entry data would be
    /// exceeded, but always at least one entry when `lo < hi`. Reads from the mapped segments;
    /// includes entries appended but not yet persisted (in `pwrite` mode those not yet in the
    /// file come from the segment's staging buffer: `SegmentMap::read_at`).
    pub fn entries(
        &self,
        lo: LogIndex,
        hi: LogIndex,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, WalError> {
        if lo < self.first_index() {
            return Err(WalError::Compacted {
                index: lo,
                first_index: self.first_index(),
            });
        }
        if hi > self.last_index().next() {
            return Err(WalError::Unavailable {
                index: hi.prev(),
                last_index: self.last_index(),
            });
        }
        let mut entries = Vec::new();
        let mut bytes = 0u64;
        let first_id = self.segments[0].id;
        for index in lo.get()..hi.get() {
            let location = self
                .log
                .location(LogIndex(index))
                .expect("index is within the log");
            let segment = &self.segments[(location.segment_id - first_id) as usize];
            // Checked again on every read, not only at open: bits can rot on a running
            // node's disk, and a damaged entry must never be sent or applied.
            // In `pwrite` mode an entry not yet persisted comes from the staging buffer.
            let record = segment.map.read_at(location.offset);
            let entry = match format::read_record(record, 0) {
                Ok((format::Record::Entry { .. }, _)) => format::read_entry_unchecked(record, 0),
                Ok(_) | Err(format::RecordProblem::End) => {
                    return Err(WalError::Corrupt {
                        file: segment.path.clone(),
                        offset: location.offset as u64,
                        what: format!("entry {index} is no longer where the log put it"),
                    })
                }
                Err(format::RecordProblem::Bad(what)) => {
                    return Err(WalError::Corrupt {
                        file: segment.path.clone(),
                        offset: location.offset as u64,
                        what: format!("entry {index} read back: {what}"),
                    })
                }
            };
            bytes += entry.payload_bytes();
            if bytes > max_bytes && !entries.is_empty() {
                break;
            }
            entries.push(entry);
        }
        Ok(entries)
    }

    /// Lets the durable pages that reads ([`Wal::entries`]) brought in leave the process's
    /// resident set (they stay in the page cache). For a host that has just read many
    /// entries, as a restart that applies the log does.
    pub fn release_read_pages(&mut self) {
        let last = self.segments.len().saturating_sub(1);
        for (position, segment) in self.segments.iter().enumerate() {
            let end = if position == last {
                self.synced_end - self.synced_end % recovery::PAGE_BYTES
            } else {
                segment.map.file_bytes()
            };
            segment.map.release(0, end);
        }
    }

    /// The term of the entry at `index`: also known for the snapshot's last index, and None
    /// for compacted or future indices.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }

    /// The first index in the log: one past the snapshot.
    pub fn first_index(&self) -> LogIndex {
        self.log.snapshot.index.next()
    }

    /// The last index in the log, or the snapshot's index when the log is empty.
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }

    /// The hard state as last set (durable once `persist` returned).
    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    /// Where the current snapshot ends (index 0 when there is none).
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.log.snapshot
    }

    /// Reads the current snapshot back from its file.
    pub fn snapshot(&self) -> Result<Option<Snapshot>, WalError> {
        self.snapshot_reader().map(|r| r.read()).transpose()
    }

    /// A reader of the current snapshot file that can run on another thread (reading a
    /// large snapshot takes a while); `None` when there is no snapshot. The file may be
    /// deleted meanwhile by a newer snapshot's compaction: the read then fails, harmlessly.
    pub fn snapshot_reader(&self) -> Option<SnapshotReader> {
        let name = self.snapshot_name.as_ref()?;
        Some(SnapshotReader {
            path: self.dir.join(name),
            backend: self.backend.clone(),
        })
    }

    /// Bytes the WAL's files take on disk (segments are preallocated, so this counts them whole,
    /// and the next segment once it is being prepared).
    pub fn disk_bytes(&self) -> u64 {
        let segments: u64 = self
            .segments
            .iter()
            .map(|segment| segment.map.file_bytes() as u64)
            .sum();
        let snapshot = self.snapshot_bytes;
        let spare = self.spare.as_ref().map_or(0, |spare| spare.bytes as u64);
        let reusable = self
            .reusable
            .as_ref()
            .map_or(0, |_| self.segment_bytes as u64);
        segments + snapshot + spare + reusable
    }

    /// The number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// How many segments a rollover created unfilled since open: the next segment's paced
    /// zero-fill had not finished (appends outran it), or there was no helper thread to
    /// prepare one. Each is preallocated only, and its persists convert unwritten extents.
    pub fn segments_unfilled(&self) -> u64 {
        self.segments_unfilled
    }

    /// How many segments since open were made from a segment compaction freed, instead of
    /// created (FORMAT.md, "Reused segments").
    pub fn segments_reused(&self) -> u64 {
        self.segments_reused
    }

    /// The WAL's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// True once a write, msync or fsync failed: the WAL refuses all writes from then on, and
    /// the node must stop voting and accepting entries.
    pub fn is_poisoned(&self) -> bool {
        self.failed.is_some()
    }

    // ---- helpers -------------------------------------------------------------------------

    /// Records that the entries at and after `from` are discarded, and discards them (the
    /// caller reserved `TRUNCATE_RECORD_BYTES`).
    fn put_truncate(&mut self, from: LogIndex) {
        self.put_record(kind::TRUNCATE_SUFFIX, &format::truncate_payload(from), &[]);
        self.log.truncate_from(from.get());
    }

    fn check_writable(&self) -> Result<(), WalError> {
        match &self.failed {
            Some(first) => Err(WalError::Poisoned {
                first: first.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison(&mut self, error: WalError) -> WalError {
        if self.failed.is_none() {
            warn!("wal: poisoned: {error}");
            self.failed = Some(error.to_string());
        }
        error
    }

    fn active_id(&self) -> u64 {
        self.segments.back().expect("there is always a segment").id
    }

    /// Writes one record at the write position (room was reserved) and returns its offset.
    fn put_record(&mut self, kind: u8, head: &[u8], data: &[u8]) -> usize {
        let at = self.write_pos;
        let bytes = format::record_bytes(head.len() + data.len());
        let segment = self.segments.back_mut().expect("there is always a segment");
        self.write_pos += format::put_record(segment.map.write_at(at, bytes), kind, head, data);
        at
    }

    /// Closes the open batch (not empty) with its commit record, at the write position.
    fn close_batch(&mut self) {
        let (start, at) = (self.batch_start, self.write_pos);
        let segment = self.segments.back().expect("there is always a segment");
        let payload = format::commit_payload(&segment.map.read_at(start)[..at - start], start);
        self.put_record(kind::COMMIT, &payload, &[]);
    }

    /// Writes the term and vote to the older of the two copy files when they changed, so
    /// the copy is durable before `persist` returns (see `vote`).
    fn write_vote_copy(&mut self) -> Result<(), WalError> {
        if !self.vote_copy.behind(&self.hard_state) {
            return Ok(());
        }
        let copy = VoteCopy {
            seq: self.vote_copy.seq + 1,
            term: self.hard_state.term,
            vote: self.hard_state.vote,
        };
        let k = (copy.seq % 2) as usize;
        let path = self.dir.join(VOTE_FILES[k]);
        if let Err(source) = self.backend.write_synced(&path, &copy.encode()) {
            return Err(self.poison(io_error(&path, "write term and vote", source)));
        }
        // A new file's name needs a directory fsync too; a replaced one's does not.
        if !self.vote_files[k] {
            self.vote_files[k] = true;
            self.dir_dirty = true;
            self.sync_dir_if_dirty()?;
        }
        self.vote_copy = copy;
        Ok(())
    }

    /// Whether the node is repairing a damaged log (see [`Recovered::repairing`]).
    pub fn is_repairing(&self) -> bool {
        self.repairing
    }

    /// The log again holds what the node may have acknowledged before the damage: removes
    /// the repair marker, durably (unless the scrubber found damage that is still in the log).
    pub fn finish_repair(&mut self) -> Result<(), WalError> {
        self.check_not_in_flight();
        self.check_writable()?;
        self.repairing = false;
        self.sync_marker()
    }

    /// Makes the repair marker's presence on disk match what it records: a node repairing
    /// its log, or damage the scrubber found that is still part of the log. Written and
    /// removed durably.
    fn sync_marker(&mut self) -> Result<(), WalError> {
        let wanted = self.repairing || !self.damaged.is_empty();
        if wanted == self.marker_on_disk {
            return Ok(());
        }
        let path = self.dir.join(REPAIR_FILE);
        if wanted {
            let files: Vec<String> = self
                .damaged
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            let text = format!("the scrubber found damage in {}", files.join(", "));
            write_repair_marker(&*self.backend, &self.dir, &text)?;
        } else {
            if let Err(source) = self.backend.remove(&path) {
                return Err(self.poison(io_error(&path, "remove repair marker", source)));
            }
            self.dir_dirty = true;
            self.sync_dir_if_dirty()?;
            info!(
                "wal: no damage is left in {}; repair marker removed",
                self.dir.display()
            );
        }
        self.marker_on_disk = wanted;
        Ok(())
    }

    // ---- the scrubber --------------------------------------------------------------------

    /// Reads and checks about `budget` more bytes of the WAL's files from where the last call
    /// stopped (see the `scrub` module for what is checked), going over every segment and then
    /// the snapshot file, pass after pass. Damage found is recorded durably in the repair
    /// marker until the damaged file has left the log; the caller takes a snapshot
    /// ([`Wal::save_snapshot`] or a [`SnapshotWriter`]), whose compaction deletes damaged
    /// segments it covers and whose file replaces a damaged snapshot file. A damaged segment
    /// still being written to is sealed first, so a snapshot can cover it. An error is a
    /// failure to write the marker or to seal the segment: the damage stays known and the
    /// next pass finds it again.
    pub fn scrub(&mut self, budget: usize) -> Result<ScrubStep, WalError> {
        let mut step = ScrubStep::default();
        while step.bytes < budget as u64 {
            let left = budget - step.bytes as usize;
            let mut job = match self.scrub_begin(left) {
                ScrubBegin::Job(job) => job,
                ScrubBegin::PassFinished => {
                    step.pass_finished = true;
                    break;
                }
                ScrubBegin::Busy => break,
            };
            job.run();
            let done = self.scrub_end(job)?;
            step.bytes += done.bytes;
            if done.damage.is_some() {
                step.damage = done.damage;
                break;
            }
        }
        Ok(step)
    }

    /// The next scrubber step, up to about `budget` bytes of one file, to be run anywhere
    /// ([`ScrubJob::run`] only reads) and handed back to [`Wal::scrub_end`]: how a host
    /// keeps the scrubber's reads, which may wait long behind a busy disk, off the thread
    /// that writes. One step at a time: `Busy` while one is out.
    pub fn scrub_begin(&mut self, budget: usize) -> ScrubBegin {
        if self.scrub_out {
            return ScrubBegin::Busy;
        }
        loop {
            match std::mem::take(&mut self.scrub) {
                scrub::Cursor::Start => {
                    self.scrub = scrub::Cursor::Segment(SegmentScan::new(self.segments[0].id));
                }
                scrub::Cursor::Segment(mut scan) => {
                    let first = self.segments[0].id;
                    if scan.id < first {
                        scan = SegmentScan::new(first); // Compacted away meanwhile.
                    }
                    let position = (scan.id - first) as usize;
                    let Some(segment) = self.segments.get(position) else {
                        self.scrub = self.scrub_snapshot_cursor();
                        continue;
                    };
                    let active = position == self.segments.len() - 1;
                    let target = ScrubTarget::Segment {
                        before: scan.clone(),
                        scan,
                        first_index: segment.first_index,
                        // Below the synced end, the segment being written never changes
                        // (a conflicting suffix is cut by a record after it).
                        limit: if active {
                            self.synced_end
                        } else {
                            segment.map.file_bytes()
                        },
                        sealed: !active,
                    };
                    return ScrubBegin::Job(self.scrub_job(segment.path.clone(), target, budget));
                }
                scrub::Cursor::Snapshot(scan) => {
                    if self.snapshot_name.as_deref() != Some(scan.name.as_str()) {
                        // No snapshot, or a newer one was installed meanwhile: the pass is
                        // over (the cursor is back at the start).
                        self.scrub_totals.passes += 1;
                        return ScrubBegin::PassFinished;
                    }
                    let path = self.dir.join(&scan.name);
                    let target = ScrubTarget::Snapshot {
                        before: scan.clone(),
                        scan,
                    };
                    return ScrubBegin::Job(self.scrub_job(path, target, budget));
                }
            }
        }
    }

    fn scrub_job(&mut self, path: PathBuf, target: ScrubTarget, budget: usize) -> Box<ScrubJob> {
        self.scrub_out = true;
        Box::new(ScrubJob {
            backend: self.backend.clone(),
            path,
            target,
            budget,
            buffer: std::mem::take(&mut self.scrub_buffer),
            files_changed: self.files_changed,
            scanned: None,
        })
    }

    /// Takes a step from [`Wal::scrub_begin`] back after [`ScrubJob::run`]: moves the
    /// cursor on and records damage found, durably (see [`Wal::scrub`]). A step during which
    /// files were removed or replaced (a compaction, an installed snapshot) is dropped, its
    /// cursor put back where it started: what it read may have been deleted, reused or
    /// rewritten under it, so its verdict is no evidence either way. Call it without a
    /// persist in flight (damage in the segment being written rolls over to a new one).
    pub fn scrub_end(&mut self, job: Box<ScrubJob>) -> Result<ScrubStep, WalError> {
        assert!(self.scrub_out, "scrub_end without a step out");
        self.scrub_out = false;
        let ScrubJob {
            path,
            target,
            buffer,
            files_changed,
            scanned,
            ..
        } = *job;
        self.scrub_buffer = buffer;
        let scanned = scanned.expect("a scrubber step is run before it is ended");
        let mut step = ScrubStep::default();
        if files_changed != self.files_changed {
            self.scrub = match target {
                ScrubTarget::Segment { before, .. } => scrub::Cursor::Segment(before),
                ScrubTarget::Snapshot { before, .. } => scrub::Cursor::Snapshot(before),
            };
            return Ok(step);
        }
        self.scrub = match (target, &scanned) {
            (ScrubTarget::Segment { scan, .. }, Scanned::More(_)) => scrub::Cursor::Segment(scan),
            (ScrubTarget::Segment { sealed: false, .. }, _) => self.scrub_snapshot_cursor(),
            (ScrubTarget::Segment { scan, .. }, _) => {
                scrub::Cursor::Segment(SegmentScan::new(scan.id + 1))
            }
            (ScrubTarget::Snapshot { scan, .. }, Scanned::More(_)) => scrub::Cursor::Snapshot(scan),
            // Done or damaged: the pass ends at the next step.
            (ScrubTarget::Snapshot { .. }, _) => {
                scrub::Cursor::Snapshot(SnapshotScan::new(String::new()))
            }
        };
        match scanned {
            Scanned::More(n) | Scanned::Done(n) => step.bytes = n as u64,
            Scanned::Bad(offset, what) => {
                let damage = Damage {
                    file: path,
                    offset: offset as u64,
                    what,
                };
                step.damage = Some(damage.clone());
                self.scrub_totals.damage_found += 1;
                self.damage_found(damage)?;
            }
        }
        self.scrub_totals.bytes += step.bytes;
        Ok(step)
    }

    /// What the scrubber did since the WAL was opened.
    pub fn scrub_totals(&self) -> ScrubTotals {
        self.scrub_totals
    }

    /// Files the scrubber found damaged that are still part of the log.
    pub fn damaged_files(&self) -> Vec<PathBuf> {
        self.damaged.iter().cloned().collect()
    }

    fn scrub_snapshot_cursor(&self) -> scrub::Cursor {
        match &self.snapshot_name {
            Some(name) => scrub::Cursor::Snapshot(SnapshotScan::new(name.clone())),
            // Nothing after the segments: the pass ends at the next step.
            None => scrub::Cursor::Snapshot(SnapshotScan::new(String::new())),
        }
    }

    /// Records damage durably; seals the segment being written if the damage is in it.
    fn damage_found(&mut self, damage: Damage) -> Result<(), WalError> {
        warn!(
            "wal: the scrubber found damage in {} at offset {}: {}",
            damage.file.display(),
            damage.offset,
            damage.what
        );
        let active = self.segments.back().map(|s| s.path.clone());
        self.damaged.insert(damage.file.clone());
        self.sync_marker()?;
        if active.as_ref() == Some(&damage.file) {
            self.check_writable()?;
            self.roll_over(0)?;
            self.persist()?;
        }
        Ok(())
    }

    /// Forgets damaged files that are no longer part of the log, and removes the marker when
    /// none is left.
    fn settle_damage(&mut self) -> Result<(), WalError> {
        let snapshot = self.snapshot_name.as_ref().map(|name| self.dir.join(name));
        let segments: BTreeSet<&PathBuf> = self.segments.iter().map(|s| &s.path).collect();
        self.damaged
            .retain(|path| segments.contains(path) || snapshot.as_ref() == Some(path));
        self.sync_marker()
    }

    fn sync_dir_if_dirty(&mut self) -> Result<(), WalError> {
        if !self.dir_dirty {
            return Ok(());
        }
        if let Err(source) = self.backend.sync_dir(&self.dir) {
            let error = io_error(&self.dir, "fsync directory", source);
            return Err(self.poison(error));
        }
        self.dir_dirty = false;
        Ok(())
    }

    /// Makes sure the last segment has room for `bytes` more of the current batch and its
    /// commit record, rolling over to a new segment if not.
    fn reserve(&mut self, bytes: usize) -> Result<(), WalError> {
        let batch_bytes = self.write_pos - self.batch_start + bytes;
        let needed = self.write_pos + bytes + format::commit_record_bytes_max(batch_bytes);
        if needed
            <= self
                .segments
                .back()
                .expect("there is always a segment")
                .map
                .file_bytes()
        {
            return Ok(());
        }
        self.roll_over(bytes)
    }

    /// Starts a new segment and moves the open batch into it, so that a batch never spans two
    /// segments. The new segment begins with the durable hard state, so compaction can delete
    /// older segments without losing it. Nothing changes if the segment cannot be allocated.
    fn roll_over(&mut self, bytes: usize) -> Result<(), WalError> {
        let moved = self.write_pos - self.batch_start;
        let batch_bytes = format::HARD_STATE_RECORD_BYTES + moved + bytes;
        let needed =
            SEGMENT_HEADER_BYTES + batch_bytes + format::commit_record_bytes_max(batch_bytes);
        let size = self.segment_bytes.max(needed.next_multiple_of(4096));
        let id = self.active_id() + 1;
        let first_index = self.durable_last_index.next();
        let mut segment = self.create_segment(id, first_index, size, Pace::Unfilled)?;
        let old = self.segments.back_mut().expect("there is always a segment");
        let mut at = SEGMENT_HEADER_BYTES;
        let hard_state = format::hard_state_payload(&self.durable_hard_state);
        at += format::put_record(
            segment.map.write_at(at, format::HARD_STATE_RECORD_BYTES),
            kind::HARD_STATE,
            &hard_state,
            &[],
        );
        let pending = &old.map.read_at(self.batch_start)[..moved];
        segment.map.write_at(at, moved).copy_from_slice(pending);
        // Entries of the open batch now live in the new segment.
        let (old_id, shift_from) = (old.id, self.batch_start);
        for location in self.log.locations.iter_mut().rev() {
            if location.segment_id != old_id || location.offset < shift_from {
                break;
            }
            location.segment_id = id;
            location.offset = location.offset - shift_from + at;
        }
        // The old segment must end at its last commit record: zero the moved bytes and make that
        // durable now, before anything in the new segment can be (recovery treats bytes after
        // the last commit of a non-last segment followed by a valid batch as corruption). The
        // sync starts where the durable part ends, not at the batch: a segment created by a
        // rollover within this same batch has its header there, which must reach the file too.
        if moved > 0 {
            old.map.write_at(self.batch_start, moved).fill(0);
            let from = self.synced_end;
            if let Err(source) = old.map.sync(from, self.write_pos - from) {
                let error = io_error(&old.path, "msync", source);
                return Err(self.poison(error));
            }
        }
        // Everything in the old segment is durable now: it need not stay resident, and it is
        // never written again.
        let old_len = old.map.file_bytes();
        old.map.release(0, old_len);
        old.map.seal();
        self.segments.push_back(segment);
        self.batch_start = SEGMENT_HEADER_BYTES;
        self.synced_end = 0;
        self.released_end = 0;
        self.write_pos = at + moved;
        self.prepare_spare();
        Ok(())
    }

    /// Starts creating the next segment on a helper thread, unless one is already prepared or
    /// being prepared. A failure there is not an error yet: the rollover that finds no spare
    /// creates the segment itself and reports what goes wrong then.
    fn prepare_spare(&mut self) {
        if !self.helper_threads || self.spare.is_some() {
            return;
        }
        let path = self.dir.join(SPARE_NAME);
        let (backend, bytes, target) = (self.backend.clone(), self.segment_bytes, path.clone());
        let pace = Pace::ahead();
        let thread_pace = pace.clone();
        let reused = self.reusable.take();
        let reusing = reused.is_some();
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("wal-next-segment".into())
            .spawn(move || match reused {
                Some(from) => reuse_segment(&*backend, &from, &dir, &target, bytes, thread_pace),
                None => backend.create_segment(&target, bytes as u64, thread_pace),
            });
        match spawned {
            Ok(thread) => {
                self.spare = Some(Spare {
                    path,
                    bytes,
                    reused: reusing,
                    pace,
                    thread,
                })
            }
            Err(error) => warn!("wal: no thread to prepare the next segment: {error}"),
        }
    }

    /// The prepared segment renamed to `path`, if there is one of at least `size` bytes and
    /// its helper thread is done. One still being zero-filled is not waited for (appends
    /// outran its pace, as a disk-bound workload's do): it goes on at its pace, under its
    /// own name, and a later rollover takes it.
    fn take_spare(&mut self, path: &Path, size: usize) -> Option<Box<dyn SegmentMap>> {
        let spare = self.spare.as_ref()?;
        if spare.bytes < size || !spare.thread.is_finished() {
            return None;
        }
        let spare = self.spare.take()?;
        let map = match spare.thread.join() {
            Ok(Ok(map)) => map,
            Ok(Err(error)) => {
                warn!(
                    "wal: preparing {} failed ({error}); creating the segment now",
                    spare.path.display()
                );
                return None;
            }
            Err(_) => {
                warn!("wal: the thread preparing the next segment panicked; creating it now");
                let _ = self.backend.remove(&spare.path);
                return None;
            }
        };
        match self.backend.rename(&spare.path, path) {
            Ok(()) => {
                self.segments_reused += u64::from(spare.reused);
                Some(map)
            }
            Err(error) => {
                warn!(
                    "wal: renaming {} failed ({error}); creating the segment now",
                    spare.path.display()
                );
                drop(map);
                let _ = self.backend.remove(&spare.path);
                None
            }
        }
    }

    /// Takes the spare, or creates, preallocates and maps a segment at `pace`; then writes its
    /// header (not yet durable).
    fn create_segment(
        &mut self,
        id: u64,
        first_index: LogIndex,
        size: usize,
        pace: Pace,
    ) -> Result<Segment, WalError> {
        let path = self.dir.join(segment_name(id));
        let created = match self.take_spare(&path, size) {
            Some(map) => Ok(map),
            None => {
                let unfilled = matches!(pace, Pace::Unfilled);
                let created = self.backend.create_segment(&path, size as u64, pace);
                if unfilled && created.is_ok() {
                    self.count_unfilled(id, size);
                }
                created
            }
        };
        let mut map = match created {
            Ok(map) => map,
            Err(source) if is_no_space(&source) => {
                return Err(WalError::NoSpace {
                    path,
                    bytes: size as u64,
                })
            }
            Err(source) if is_read_only(&source) => {
                return Err(WalError::ReadOnly {
                    dir: self.dir.clone(),
                    source,
                })
            }
            Err(source) => return Err(io_error(&path, "create segment", source)),
        };
        format::encode_segment_header(map.write_at(0, SEGMENT_HEADER_BYTES), id, first_index);
        self.dir_dirty = true;
        Ok(Segment {
            id,
            first_index,
            path,
            map,
        })
    }

    /// Counts a segment created unfilled and says so: at info level the 1st, 2nd, 4th, 8th
    /// ... time (a disk-bound workload rolls over about once a second), else at debug level.
    fn count_unfilled(&mut self, id: u64, size: usize) {
        self.segments_unfilled += 1;
        let count = self.segments_unfilled;
        let why = match &self.spare {
            Some(spare) if spare.bytes < size => {
                "the batch needs a larger segment than the next one"
            }
            Some(_) => "the next segment's zero-fill had not finished (appends outran its pace)",
            None if self.helper_threads => "there was no next segment prepared",
            None => "no helper thread prepares segments",
        };
        let text = format!(
            "wal: segment {} created without zero-fill ({count} since open): {why}",
            segment_name(id)
        );
        if count.is_power_of_two() {
            info!("{text}");
        } else {
            debug!("{text}");
        }
    }

    fn create_first_segment(&mut self) -> Result<(), WalError> {
        let first_index = self.first_index();
        let segment = self.create_segment(1, first_index, self.segment_bytes, Pace::Now)?;
        self.segments.push_back(segment);
        self.batch_start = SEGMENT_HEADER_BYTES;
        self.write_pos = SEGMENT_HEADER_BYTES;
        self.synced_end = 0;
        self.released_end = 0;
        // Make the header and the file durable now so an empty WAL reopens as one.
        let segment = self.segments.back_mut().expect("just pushed");
        if let Err(source) = segment.map.sync(0, SEGMENT_HEADER_BYTES) {
            let error = io_error(&segment.path, "msync", source);
            return Err(self.poison(error));
        }
        self.synced_end = SEGMENT_HEADER_BYTES;
        self.sync_dir_if_dirty()
    }

    /// Deletes segments wholly at or below the snapshot and snapshot files other than the
    /// current one, then fsyncs the directory.
    ///
    /// Snapshot files newer than the current one are kept: a `SnapshotWriter` may have just
    /// written one that is not installed yet. With helper threads the deletions happen on the
    /// reaper thread; they need not be durable (recovery compacts again at open).
    fn compact_files(&mut self) -> Result<(), WalError> {
        self.files_changed += 1;
        let snapshot_index = self.log.snapshot.index;
        let mut doomed = Vec::new();
        while self.segments.len() > 1 && self.segments[1].first_index <= snapshot_index.next() {
            let segment = self.segments.pop_front().expect("more than one segment");
            // A file the scrubber found damaged is deleted, not reused: the disk may keep
            // failing there, and the operator sees it go.
            let reusable = self.helper_threads
                && self.reusable.is_none()
                && segment.map.file_bytes() == self.segment_bytes
                && !self.damaged.contains(&segment.path);
            if reusable {
                self.reusable = Some(segment.path.clone());
            } else {
                doomed.push(segment.path.clone());
            }
            // Unmapped here, before the file is deleted or reused.
            drop(segment);
        }
        let names = match self.backend.list(&self.dir) {
            Ok(names) => names,
            Err(source) => {
                return Err(self.poison(io_error(&self.dir.clone(), "list directory", source)))
            }
        };
        for name in names {
            let Some(index) = parse_snapshot_name(&name) else {
                continue;
            };
            if index <= snapshot_index.get() && Some(&name) != self.snapshot_name.as_ref() {
                doomed.push(self.dir.join(&name));
            }
        }
        if !doomed.is_empty() {
            if self.helper_threads {
                if let Some(doomed) = self.reaper().delete(doomed) {
                    self.remove_now(doomed)?;
                }
            } else {
                self.remove_now(doomed)?;
            }
        }
        self.sync_dir_if_dirty()?;
        self.settle_damage()
    }

    fn remove_now(&mut self, paths: Vec<PathBuf>) -> Result<(), WalError> {
        for path in paths {
            if let Err(source) = self.backend.remove(&path) {
                return Err(self.poison(io_error(&path, "remove", source)));
            }
            self.dir_dirty = true;
        }
        Ok(())
    }

    fn reaper(&mut self) -> &mut Reaper {
        let (backend, dir) = (self.backend.clone(), self.dir.clone());
        self.reaper
            .get_or_insert_with(|| Reaper::start(backend, dir))
    }
}

/// Makes `from`, a segment compaction freed, the spare `spare` in `dir` (FORMAT.md, "Reused
/// segments"): renamed, the rename made durable, and only then zero-filled and synced, so no
/// file under a segment's name ever holds part old records and part zeros, and a crash from
/// the first zero on leaves a `.tmp` file, which open deletes. On failure nothing is left
/// under either name.
fn reuse_segment(
    backend: &dyn Backend,
    from: &Path,
    dir: &Path,
    spare: &Path,
    bytes: usize,
    pace: Pace,
) -> io::Result<Box<dyn SegmentMap>> {
    backend.rename(from, spare)?;
    let reused = backend
        .sync_dir(dir)
        .and_then(|()| backend.refill_segment(spare, bytes as u64, pace));
    if reused.is_err() {
        let _ = backend.remove(spare);
    }
    reused
}

/// What the reaper appends to a file's name before deleting it (a `.tmp` name: the next
/// open deletes whatever a crash left behind).
const DOOMED_SUFFIX: &str = ".deleted.tmp";

/// A helper thread that deletes files the log no longer needs, then fsyncs the directory.
/// A failure is logged, not fatal: the file is obsolete, and the next open deletes it.
struct Reaper {
    sender: Option<std::sync::mpsc::Sender<Vec<PathBuf>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reaper {
    fn start(backend: Arc<dyn Backend>, dir: PathBuf) -> Reaper {
        let (sender, receiver) = std::sync::mpsc::channel::<Vec<PathBuf>>();
        let thread = std::thread::Builder::new()
            .name("wal-reaper".into())
            .spawn(move || {
                let sync_dir = || {
                    if let Err(error) = backend.sync_dir(&dir) {
                        warn!("wal: fsync of {} failed: {error}", dir.display());
                    }
                };
                for paths in receiver {
                    // Renamed to `.tmp` names first (which the next open deletes), durably,
                    // so a file cut short below is never found under a log file's name.
                    let mut doomed = Vec::with_capacity(paths.len());
                    for path in paths {
                        let mut temp = path.clone().into_os_string();
                        temp.push(DOOMED_SUFFIX);
                        let temp = PathBuf::from(temp);
                        match backend.rename(&path, &temp) {
                            Ok(()) => doomed.push(temp),
                            Err(error) => warn!("wal: cannot delete {}: {error}", path.display()),
                        }
                    }
                    sync_dir();
                    for path in doomed {
                        if let Err(error) = backend.remove_gradually(&path) {
                            warn!("wal: cannot delete {}: {error}", path.display());
                        }
                    }
                    sync_dir();
                }
            });
        match thread {
            Ok(thread) => Reaper {
                sender: Some(sender),
                thread: Some(thread),
            },
            Err(error) => {
                warn!("wal: no thread to delete compacted files ({error}); deleting inline");
                Reaper {
                    sender: None,
                    thread: None,
                }
            }
        }
    }

    /// Hands `paths` to the thread; gives them back if there is no thread to take them.
    fn delete(&mut self, paths: Vec<PathBuf>) -> Option<Vec<PathBuf>> {
        match &self.sender {
            Some(sender) => sender.send(paths).err().map(|e| e.0),
            None => Some(paths),
        }
    }
}

impl Drop for Reaper {
    /// Lets the thread finish what it was given.
    fn drop(&mut self) {
        self.sender.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Wal {
    /// Waits for pending deletions, stops a segment being prepared and deletes it, so a
    /// closed WAL leaves no spare file and no thread working in its directory.
    fn drop(&mut self) {
        // A freed segment no spare took is deleted with the rest.
        if let Some(path) = self.reusable.take() {
            if let Some(paths) = self.reaper().delete(vec![path]) {
                for path in paths {
                    let _ = self.backend.remove(&path);
                }
            }
        }
        // Finish deleting before the lock is released (fields drop after this).
        self.reaper.take();
        if let Some(spare) = self.spare.take() {
            // A paced zero-fill could take seconds more; cancelled, its thread removes the
            // file itself (and the remove below finds nothing), or finished already.
            spare.pace.cancel();
            let _ = spare.thread.join();
            let _ = self.backend.remove(&spare.path);
        }
    }
}

fn lock_dir(backend: &dyn Backend, dir: &Path) -> Result<Box<dyn Send>, WalError> {
    match backend.check_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(WalError::DirMissing {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {
            return Err(WalError::NotADirectory {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) => return Err(io_error(dir, "stat directory", e)),
    }
    let lock_path = dir.join(LOCK_FILE);
    match backend.lock(&lock_path) {
        Ok(lock) => Ok(lock),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            let holder_pid = backend
                .read(&lock_path)
                .ok()
                .and_then(|bytes| String::from_utf8_lossy(&bytes).trim().parse().ok());
            Err(WalError::Locked {
                dir: dir.to_path_buf(),
                holder_pid,
            })
        }
        Err(source) if is_read_only(&source) => Err(WalError::ReadOnly {
            dir: dir.to_path_buf(),
            source,
        }),
        Err(source) => Err(io_error(&lock_path, "lock", source)),
    }
}

/// The ids of the segment files among `names`, in order; a gap in them is corruption (a
/// missing segment).
pub(crate) fn segment_ids(dir: &Path, names: &[String]) -> Result<Vec<u64>, WalError> {
    let mut ids: Vec<u64> = names
        .iter()
        .filter_map(|name| parse_segment_name(name))
        .collect();
    ids.sort_unstable();
    if let Some(pair) = ids.windows(2).find(|pair| pair[1] != pair[0] + 1) {
        return Err(WalError::Corrupt {
            file: dir.join(segment_name(pair[1])),
            offset: 0,
            what: format!("segment {} is missing", segment_name(pair[0] + 1)),
        });
    }
    Ok(ids)
}

fn open_segments(
    backend: &dyn Backend,
    dir: &Path,
    names: &[String],
) -> Result<Vec<Segment>, WalError> {
    let ids = segment_ids(dir, names)?;
    let mut segments = Vec::with_capacity(ids.len());
    for id in ids {
        let path = dir.join(segment_name(id));
        let map = backend
            .open_segment(&path)
            .map_err(|e| io_error(&path, "open segment", e))?;
        segments.push(Segment::new(id, path, map));
    }
    Ok(segments)
}

/// The newest snapshot file whose CRC checks, with its name. Damaged ones are skipped with a
/// warning (they are deleted once a newer snapshot is saved).
fn newest_snapshot(
    backend: &dyn Backend,
    dir: &Path,
    names: &[String],
) -> Result<Option<(String, Snapshot)>, WalError> {
    let mut candidates: Vec<(u64, &String)> = names
        .iter()
        .filter_map(|name| parse_snapshot_name(name).map(|index| (index, name)))
        .collect();
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    for (_, name) in candidates {
        let path = dir.join(name);
        let bytes = backend
            .read(&path)
            .map_err(|e| io_error(&path, "read snapshot", e))?;
        match format::decode_snapshot_owned(bytes) {
            Ok(snapshot) => return Ok(Some((name.clone(), snapshot))),
            Err(what) => warn!("wal: skipping damaged snapshot {}: {what}", path.display()),
        }
    }
    Ok(None)
}

/// The log must start right after the snapshot: otherwise entries are missing (a deleted or
/// damaged snapshot file whose segments were already compacted away).
/// Writes the repair marker, durably: a restart before the repair is done must find the node
/// repairing again.
fn write_repair_marker(backend: &dyn Backend, dir: &Path, text: &str) -> Result<(), WalError> {
    let path = dir.join(REPAIR_FILE);
    backend
        .write_synced(&path, format!("{text}\n").as_bytes())
        .and_then(|()| backend.sync_dir(dir))
        .map_err(|e| io_error(&path, "write repair marker", e))
}

/// Deletes every segment and snapshot file (the copy of term and vote and the lock stay),
/// durably.
fn discard_log(backend: &dyn Backend, dir: &Path) -> Result<(), WalError> {
    let names = backend
        .list(dir)
        .map_err(|e| io_error(dir, "list directory", e))?;
    for name in names {
        let doomed = parse_segment_name(&name).is_some()
            || name.starts_with("snap-")
            || name.ends_with(".tmp");
        if doomed {
            let path = dir.join(&name);
            backend
                .remove(&path)
                .map_err(|e| io_error(&path, "remove", e))?;
        }
    }
    backend
        .sync_dir(dir)
        .map_err(|e| io_error(dir, "fsync directory", e))
}

pub(crate) fn check_log_start(
    dir: &Path,
    segments: &[Segment],
    log: &LogMap,
) -> Result<(), WalError> {
    if log.start == log.snapshot.index.get() + 1 {
        return Ok(());
    }
    let file = segments
        .first()
        .map_or_else(|| dir.to_path_buf(), |segment| segment.path.clone());
    let what = format!(
        "the log starts at index {} but the newest valid snapshot ends at {}: entries {}..{} are missing",
        log.start,
        log.snapshot.index,
        log.snapshot.index.get() + 1,
        log.start
    );
    Err(WalError::Corrupt {
        file,
        offset: 0,
        what,
    })
}

/// Cuts the log at `offset` of segment `position`: zeroes the rest of that segment (or deletes
/// it when the cut is at its header) and deletes every later segment, all made durable.
fn cut(
    backend: &dyn Backend,
    dir: &Path,
    segments: &mut Vec<Segment>,
    position: usize,
    offset: usize,
) -> Result<(), WalError> {
    let keep = if offset == 0 { position } else { position + 1 };
    while segments.len() > keep {
        let segment = segments.pop().expect("len > keep");
        let path = segment.path.clone();
        drop(segment);
        backend
            .remove(&path)
            .map_err(|e| io_error(&path, "remove segment", e))?;
    }
    if let Some(segment) = segments.get_mut(position) {
        // Find the last non-zero byte from the end, a window at a time, letting the pages
        // searched leave the resident set (the tail of a segment is mostly zeros).
        let map = &segment.map;
        let mut end = offset;
        let mut hi = map.file_bytes();
        while hi > offset {
            let lo = hi.saturating_sub(recovery::SCAN_RELEASE_BYTES).max(offset);
            if let Some(last) = map.bytes()[lo..hi].iter().rposition(|&b| b != 0) {
                end = lo + last + 1;
                break;
            }
            map.release(lo, hi - lo);
            hi = lo;
        }
        segment.map.write_at(offset, end - offset).fill(0);
        segment
            .map
            .sync(offset, end - offset)
            .map_err(|e| io_error(&segment.path, "msync", e))?;
    }
    backend
        .sync_dir(dir)
        .map_err(|e| io_error(dir, "fsync directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::MemBackend;

    // Proves the order of a reuse (FORMAT.md, "Reused segments"): a power cut right after it
    // finds the freed file under the spare's name only, holding zeros, never under its old
    // name with its new contents (the rename was made durable before the zeros were
    // written); and a reuse that fails leaves the file under neither name.
    #[test]
    fn a_reused_segment_never_keeps_its_old_name_with_new_contents() {
        let dir = Path::new("/wal");
        let backend = MemBackend::with_dir(dir);
        let old = dir.join(segment_name(1));
        let spare = dir.join(SPARE_NAME);
        backend.write_synced(&old, &[7u8; 4096]).unwrap();
        backend.sync_dir(dir).unwrap();
        let map = reuse_segment(&backend, &old, dir, &spare, 4096, Pace::ahead()).unwrap();
        assert_eq!(map.file_bytes(), 4096);
        drop(map);
        let crashed = backend.crash();
        assert_eq!(crashed.file_names(), vec![spare.clone()]);
        assert_eq!(crashed.read(&spare).unwrap(), vec![0u8; 4096]);

        // Not the segment size: refused, and neither name is left.
        let other = dir.join(segment_name(2));
        backend.remove(&spare).unwrap();
        backend.write_synced(&other, &[7u8; 4096]).unwrap();
        assert!(reuse_segment(&backend, &other, dir, &spare, 8192, Pace::ahead()).is_err());
        assert!(
            backend.file_names().is_empty(),
            "{:?}",
            backend.file_names()
        );
    }
}

/// What [`Wal::scrub_begin`] hands out.
#[derive(Debug)]
pub enum ScrubBegin {
    /// A step to run, then to give back to [`Wal::scrub_end`].
    Job(Box<ScrubJob>),
    /// A pass over every file ended; the next step starts the next one.
    PassFinished,
    /// A step is out already.
    Busy,
}

/// One scrubber step, taken out of the WAL (see [`Wal::scrub_begin`]): it holds the file's
/// name, where the scan stands in it and the backend, nothing else of the WAL, so it can
/// read on any thread while the WAL goes on writing.
#[derive(Debug)]
pub struct ScrubJob {
    backend: Arc<dyn Backend>,
    path: PathBuf,
    target: ScrubTarget,
    budget: usize,
    buffer: Vec<u8>,
    files_changed: u64,
    scanned: Option<Scanned>,
}

#[derive(Debug)]
enum ScrubTarget {
    Segment {
        /// Where the scan stood before this step (put back if the step is dropped).
        before: SegmentScan,
        scan: SegmentScan,
        first_index: LogIndex,
        limit: usize,
        sealed: bool,
    },
    Snapshot {
        before: SnapshotScan,
        scan: SnapshotScan,
    },
}

impl ScrubJob {
    /// Reads and checks the step's bytes (blocking on the disk).
    pub fn run(&mut self) {
        let ScrubJob {
            backend,
            path,
            target,
            budget,
            buffer,
            scanned,
            ..
        } = self;
        let outcome = match target {
            ScrubTarget::Segment {
                scan,
                first_index,
                limit,
                sealed,
                ..
            } => {
                let mut read = |offset: usize, len: usize, into: &mut Vec<u8>| {
                    backend.read_range(path, offset as u64, len, into)
                };
                let mut view = scrub::SegmentView {
                    id: scan.id,
                    first_index: *first_index,
                    limit: *limit,
                    sealed: *sealed,
                    read: &mut read,
                    buffer,
                };
                scan.step(&mut view, *budget)
            }
            ScrubTarget::Snapshot { scan, .. } => match backend.file_bytes(path) {
                Ok(file_bytes) => {
                    let mut read = |offset: u64, len: usize, into: &mut Vec<u8>| {
                        backend.read_range(path, offset, len, into)
                    };
                    scan.step(file_bytes, &mut read, buffer, *budget)
                }
                Err(e) => Scanned::Bad(0, format!("cannot stat: {e}")),
            },
        };
        *scanned = Some(outcome);
    }
}
