//! raftd's write-ahead log: the durable home of the Raft log, the hard state (term, vote,
//! commit) and snapshots.
//!
//! # Shape
//!
//! A directory holds preallocated, memory-mapped segment files (`<id:016x>.wal`), snapshot files
//! (`snap-<index:016x>-<term:016x>.snap`) and a `LOCK` file holding the owner's pid under an
//! exclusive flock. Records (entries, hard state, snapshot marker, truncate-suffix) are encoded
//! into a staging buffer and copied into the file with `pwrite`, or written through a shared
//! map ([`WriteMode`]); every batch ends with a commit record carrying a CRC over all the
//! batch's bytes (and one CRC per 512-byte sector piece, so recovery can tell a torn write from
//! a flipped bit).
//! The byte layout is in `FORMAT.md`, mirrored by the constants in [`format`](mod@format).
//!
//! # Contract
//!
//! * [`Wal::append`] and [`Wal::set_hard_state`] only write into memory. Nothing is durable
//!   until [`Wal::persist`] returns: it writes the commit record, makes the written range
//!   durable once (`pwrite` and fdatasync, or msync) and fsyncs the directory if a file was
//!   created, renamed or deleted. The caller batches a whole Raft `Ready` and persists once
//!   (group commit), and sends no message that depends on the batch before that.
//! * [`Wal::persist_start`] is the same persist with the wait for the disk split off: it
//!   writes the commit record and (`pwrite` mode) copies the batch into the file, and returns a
//!   [`SyncWait`] that another thread runs (fdatasync) while the caller goes on; the batch is
//!   durable once [`Wal::persist_finish`] took the wait's success. In between, the WAL may only
//!   be read. A persist that also syncs the directory or the copy of term and vote is done
//!   whole instead (`None`).
//! * After a failed write, msync or fsync the WAL is poisoned: every later write returns
//!   [`WalError::Poisoned`]; fsync is never retried (the kernel may have dropped the dirty pages
//!   already). The node must stop voting and accepting entries and be restarted.
//! * A full disk when a new segment or snapshot file is allocated returns
//!   [`WalError::NoSpace`] with nothing written; the WAL stays usable. Segments are never grown
//!   while mapped, so a full disk can never turn into a SIGBUS.
//! * Segments are zero-filled before use, so a persist only writes data (no extent conversion);
//!   the next one is prepared on a helper thread while the current one fills
//!   ([`WalOptions::helper_threads`]), and a rollover renames it into place. A rollover never
//!   waits for that fill: if the next segment is unfinished (appends outran its pace) it
//!   creates one preallocated only, whose persists convert extents, and takes the spare at a
//!   later rollover ([`Wal::segments_unfilled`] counts them).
//! * [`Wal::save_snapshot`] writes the snapshot atomically (temp file, fsync, rename, directory
//!   fsync), persists a snapshot-marker record, then deletes the segments lying wholly at or
//!   below the snapshot's index and every older snapshot file (on a helper thread with
//!   [`WalOptions::helper_threads`]; a snapshot file newer than the installed one is kept).
//! * Reads ([`Wal::entries`], [`Wal::term`]) go to the mapped files through an in-memory map
//!   of index → (term, segment, offset); entry data is never held in memory, except the
//!   bytes of the batch not yet written to the file in `pwrite` mode, which reads take from
//!   the staging buffer.
//! * Only one process may open a directory; a second gets [`WalError::Locked`] naming the
//!   holder's pid. [`verify_dir`] and [`dump_dir`] read a stopped node's directory without
//!   changing it (see [`inspect`]). Other processes writing the files despite the lock are
//!   outside the contract.
//!
//! # Use
//!
//! ```
//! use raft::{Entry, EntryKind, HardState, LogIndex, NodeId, Term};
//! use wal::{Wal, WalOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let (mut wal, recovered) = Wal::open(dir.path(), WalOptions::default())?;
//! assert_eq!(recovered.last_index, LogIndex(0));
//!
//! // One Raft Ready: the hard state and new entries, then one persist before any message
//! // that depends on them is sent.
//! wal.set_hard_state(HardState { term: Term(1), vote: NodeId(1), commit: LogIndex(0) })?;
//! let entry = Entry { term: Term(1), index: LogIndex(1), kind: EntryKind::Noop, data: vec![].into() };
//! wal.append(&[entry.clone()])?;
//! wal.persist()?;
//!
//! drop(wal);
//! let (wal, recovered) = Wal::open(dir.path(), WalOptions::default())?;
//! assert_eq!(recovered.hard_state.vote, NodeId(1));
//! assert_eq!(wal.entries(LogIndex(1), LogIndex(2), u64::MAX)?, vec![entry]);
//! # Ok::<(), wal::WalError>(())
//! ```
//!
//! # Recovery decision table
//!
//! `Wal::open` replays every segment in order; the first problem found is classified so:
//!
//! | # | What open finds | Verdict | Action |
//! |---|-----------------|---------|--------|
//! | 1 | Every batch ends with a valid commit record; only zeros after the last | clean | open |
//! | 2 | Bytes after the last valid commit record, no valid commit after them, and either no intact commit record closes them or every sector that differs from the CRCs in that record is still all zeros | torn tail | truncate there, re-zero, fsync, log a warning, report it in [`Recovered::torn_tail`], continue |
//! | 3 | A bad record CRC, a bad batch CRC, bad header, or non-zero bytes after a commit, followed by a valid commit anywhere later; or a sector that differs from its CRC and is not all zeros | corruption | refuse: [`WalError::Corrupt`] names file, offset and what |
//! | 4 | In committed data: a gap in indices, a term regression, a hard-state term regression, a truncation past the end, a segment not continuing the previous one, a missing segment, or a log starting after the snapshot | corruption | refuse, as row 3 |
//! | 5 | Row 3 or 4 (except a missing segment or a log starting after the snapshot) with [`WalOptions::repair`] set | repaired | cut at the start of the batch holding the first bad record, log a warning, report it in [`Recovered::repaired`] |
//! | 6 | A newest segment whose header never became durable, with no valid commit in it | torn tail | delete it, as row 2 |
//! | 7 | A damaged snapshot file | skipped | warn and use the next newest; row 4 applies if entries are then missing |
//!
//! Each row is tested: row 1 by every round trip; row 2 by
//! `recovery::every_truncation_of_the_last_batch_recovers_the_last_complete_batch`, the crash
//! workloads and `kill::sigkill_keeps_everything_persisted`; row 3 by
//! `recovery::every_bit_flip_before_the_last_commit_is_refused` and
//! `recovery::garbage_followed_by_a_valid_batch_is_refused`; row 4 by
//! `recovery::a_gap_in_committed_entries_is_refused`, `..._term_regression_...`,
//! `recovery::torn_segment_creation_and_missing_segments` and `snapshot::damaged_snapshot_file`;
//! row 5 by the repair cases in the bit-flip and gap tests; row 6 by
//! `recovery::torn_segment_creation_and_missing_segments`; row 7 by
//! `snapshot::damaged_newest_snapshot_falls_back_to_the_older_one`.
//!
//! Only one batch can be in flight when a process dies (each `persist` waits for its msync), so
//! anything after the last valid commit is at most one batch the caller was never told was
//! durable. One limit remains: a bit flip inside the final commit record itself cannot be told
//! apart from that record being torn, so it reads as row 2 and the last batch is dropped with a
//! warning.
//!
//! # Unsafe code
//!
//! `#![forbid(unsafe_code)]` cannot hold here because mapping a file is unsafe. All `unsafe`
//! is in the private `sys` module (the map, fallocate, flock, posix_fadvise), each block with a
//! `// SAFETY:` comment; every other module is checked by `#![deny(unsafe_code)]`.

#![deny(missing_docs)]
#![deny(unsafe_code)]

mod backend;
mod error;
pub mod format;
pub mod inspect;
mod log_map;
mod recovery;
mod scrub;
mod sys;
pub mod testing;
mod vote;
mod wal;

pub use crate::backend::{
    Backend, Pace, SegmentMap, StdBackend, StreamedFile, SyncWait, WriteMode,
};
pub use crate::error::WalError;
pub use crate::inspect::{dump_dir, verify_dir, VerifyReport};
pub use crate::scrub::{Damage, ScrubStep, ScrubTotals};
pub use crate::vote::REPAIR_FILE;
pub use crate::wal::{
    Recovered, ScrubBegin, ScrubJob, SnapshotReader, SnapshotWriter, Wal, WalOptions,
    WrittenSnapshot, LOCK_FILE, SEGMENT_BYTES_DEFAULT,
};

/// Blocks of this size and more are mapped on their own and unmapped when freed.
const MALLOC_MMAP_THRESHOLD_BYTES: i32 = 1 << 20;

/// Fixes glibc malloc's mmap threshold at 1 MiB, for a process that handles snapshots: call
/// it first thing in `main`. Left dynamic, glibc raises the threshold to the size of the
/// biggest mapped block freed so far (up to 32 MiB) and its heap trim threshold to twice
/// that, so after the first multi-megabyte snapshot buffer every later one comes from the
/// heap or a thread's arena and stays resident after it is freed (measured: about 40 MiB of
/// a node's 85 MiB after a benchmark). Returns false if the C library refused; elsewhere
/// than glibc it does nothing. It lives here because this crate holds the workspace's only
/// `unsafe` code.
pub fn fix_malloc_mmap_threshold() -> bool {
    sys::set_mmap_threshold(MALLOC_MMAP_THRESHOLD_BYTES)
}
