//! Damage that is no torn tail (FORMAT.md, "Damage"): with `repair`, the log is cut at the
//! damaged batch, the node is marked repairing durably until `finish_repair`, and the term
//! and vote survive the cut through their copy outside the segments — one test per case of
//! the hard-state rule.

mod common;

use common::*;
use raft::{HardState, LogIndex, NodeId, Term};
use wal::testing::MemBackend;
use wal::{Wal, WalOptions, REPAIR_FILE};

const SEGMENT_BYTES: u64 = 1 << 20;

fn repairing_options(backend: &MemBackend) -> WalOptions {
    let mut options = options(backend, SEGMENT_BYTES);
    options.repair = true;
    options
}

fn hs(term: u64, vote: u64, commit: u64) -> HardState {
    HardState {
        term: Term(term),
        vote: NodeId(vote),
        commit: LogIndex(commit),
    }
}

/// Writes entries 1..=10 in term 1 (voted for 1), then a vote for 3 in term 2 in a batch of
/// its own, and returns the byte offset of entry 5's record region (inside an early batch).
fn write_log(backend: &MemBackend) -> usize {
    let (mut wal, _) = open(backend, SEGMENT_BYTES).unwrap();
    wal.set_hard_state(hs(1, 1, 0)).unwrap();
    for i in 1..=10 {
        wal.append(&[entry(i, 1, 40)]).unwrap();
        wal.persist().unwrap();
    }
    wal.set_hard_state(hs(2, 3, 10)).unwrap();
    wal.persist().unwrap();
    drop(wal);
    // Entry 5's data: the 40 bytes of its payload somewhere in the segment.
    let segment = segment_paths(backend).remove(0);
    let bytes = backend.contents(&segment).unwrap();
    let needle = entry(5, 1, 40).data;
    bytes
        .windows(needle.len())
        .position(|w| w == &*needle)
        .expect("entry 5 is in the segment")
}

/// A bit flipped inside an early entry: the log is cut before it, the node is repairing
/// (and stays so across restarts until `finish_repair`), and the newest term and vote — in
/// a hard-state record the cut removed — come back from their copy, so the node cannot
/// vote a second time in term 2.
#[test]
fn a_cut_keeps_the_newest_vote_and_marks_the_node_repairing() {
    let backend = MemBackend::with_dir(&dir());
    let at = write_log(&backend);
    let segment = segment_paths(&backend).remove(0);
    backend.flip_bit(&segment, at * 8 + 3);
    // Without repair the node refuses to start.
    assert!(open(&backend, SEGMENT_BYTES).is_err());
    let (mut wal, recovered) = Wal::open(dir(), repairing_options(&backend)).unwrap();
    assert!(recovered.repaired.is_some());
    assert!(recovered.repairing);
    assert!(
        recovered.last_index < LogIndex(5),
        "{:?}",
        recovered.last_index
    );
    assert_eq!(
        (recovered.hard_state.term, recovered.hard_state.vote),
        (Term(2), NodeId(3))
    );
    assert!(backend.file_names().contains(&dir().join(REPAIR_FILE)));
    // The marker is durable: a power cut now still finds the node repairing.
    drop(wal);
    let crashed = backend.crash();
    let (mut wal2, again) = Wal::open(dir(), repairing_options(&crashed)).unwrap();
    assert!(again.repairing && again.repaired.is_none());
    assert_eq!(
        (again.hard_state.term, again.hard_state.vote),
        (Term(2), NodeId(3))
    );
    // The log is whole again (entries from a leader): repair done, durably.
    for i in again.last_index.get() + 1..=10 {
        wal2.append(&[entry(i, 1, 40)]).unwrap();
    }
    wal2.persist().unwrap();
    wal2.finish_repair().unwrap();
    assert!(!wal2.is_repairing());
    drop(wal2);
    let (_, done) = Wal::open(dir(), repairing_options(&crashed.crash())).unwrap();
    assert!(!done.repairing);
    wal = Wal::open(dir(), repairing_options(&crashed.crash()))
        .unwrap()
        .0;
    assert_eq!(wal.last_index(), LogIndex(10));
}

/// A damaged copy of term and vote is skipped: the other copy or the log's record serves.
/// Both copies damaged with the log intact: the log's record serves.
#[test]
fn a_damaged_copy_of_the_vote_is_skipped() {
    for damaged in [&["vote-a"][..], &["vote-b"], &["vote-a", "vote-b"]] {
        let backend = MemBackend::with_dir(&dir());
        write_log(&backend);
        for name in damaged {
            let path = dir().join(name);
            if backend.contents(&path).is_some() {
                backend.flip_bit(&path, 70);
            }
        }
        let (_, recovered) = open(&backend, SEGMENT_BYTES).unwrap();
        assert_eq!(recovered.hard_state, hs(2, 3, 10), "damaged {damaged:?}");
        assert!(!recovered.repairing);
    }
}

/// The copy is written only when term or vote change (not for a new commit index), and is
/// durable when `persist` returns: a power cut right after keeps it.
#[test]
fn the_copy_follows_term_and_vote_changes_only() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, SEGMENT_BYTES).unwrap();
    wal.set_hard_state(hs(1, 2, 0)).unwrap();
    wal.persist().unwrap();
    let copy = |b: &MemBackend| {
        ["vote-a", "vote-b"]
            .map(|n| b.contents(&dir().join(n)))
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
    };
    let first = copy(&backend);
    assert_eq!(first.len(), 1);
    wal.append(&[entry(1, 1, 8)]).unwrap();
    wal.set_hard_state(hs(1, 2, 1)).unwrap();
    wal.persist().unwrap();
    assert_eq!(
        copy(&backend),
        first,
        "a commit-only change rewrote the copy"
    );
    wal.set_hard_state(hs(4, 0, 1)).unwrap();
    wal.persist().unwrap();
    assert_eq!(copy(&backend).len(), 2);
    let crashed = backend.crash();
    drop(wal);
    // Durable at once: a power cut right after persist keeps term 4.
    let (_, recovered) = Wal::open(dir(), repairing_options(&crashed)).unwrap();
    assert_eq!(recovered.hard_state.term, Term(4));
}

/// After a cut, a snapshot from the leader that lies beyond the short log replaces it, and
/// entries after it follow: all of it reopens.
#[test]
fn a_snapshot_past_a_cut_log_reopens() {
    let backend = MemBackend::with_dir(&dir());
    let at = write_log(&backend);
    let segment = segment_paths(&backend).remove(0);
    backend.flip_bit(&segment, at * 8 + 3);
    let (mut wal, recovered) = Wal::open(dir(), repairing_options(&backend)).unwrap();
    assert!(recovered.repairing);
    let meta = raft::SnapshotMeta {
        index: LogIndex(121),
        term: Term(2),
    };
    wal.save_snapshot(&raft::Snapshot {
        configuration: raft::Configuration::default(),
        meta,
        data: vec![7; 100],
    })
    .unwrap();
    wal.append(&[entry(122, 2, 40), entry(123, 2, 40)]).unwrap();
    wal.set_hard_state(hs(2, 3, 123)).unwrap();
    wal.persist().unwrap();
    wal.finish_repair().unwrap();
    drop(wal);
    let (wal, recovered) = Wal::open(dir(), repairing_options(&backend.crash())).unwrap();
    assert!(recovered.repaired.is_none(), "{:?}", recovered.repaired);
    assert!(!recovered.repairing);
    assert_eq!(wal.last_index(), LogIndex(123));
}

/// A snapshot file whose marker a cut removed (the marker lay after the damage) is still
/// used, and its marker is written again at open: entries appended after it reopen without
/// a gap. (Before, the next open found "a gap in the log" and the node refused to start.)
#[test]
fn a_snapshot_whose_marker_was_cut_away_is_marked_again() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, SEGMENT_BYTES).unwrap();
    wal.set_hard_state(hs(1, 1, 0)).unwrap();
    for i in 1..=10 {
        wal.append(&[entry(i, 1, 40)]).unwrap();
        wal.persist().unwrap();
    }
    // A snapshot from the leader beyond the log replaces it.
    wal.save_snapshot(&raft::Snapshot {
        configuration: raft::Configuration::default(),
        meta: raft::SnapshotMeta {
            index: LogIndex(50),
            term: Term(1),
        },
        data: vec![5; 64],
    })
    .unwrap();
    wal.append(&[entry(51, 1, 40)]).unwrap();
    wal.persist().unwrap();
    drop(wal);
    // Rot in entry 10: the cut removes the marker and entry 51 with it.
    let segment = segment_paths(&backend).remove(0);
    let bytes = backend.contents(&segment).unwrap();
    let needle = entry(10, 1, 40).data;
    let at = bytes
        .windows(needle.len())
        .position(|w| w == &*needle)
        .unwrap();
    backend.flip_bit(&segment, at * 8);
    let (mut wal, recovered) = Wal::open(dir(), repairing_options(&backend)).unwrap();
    assert!(recovered.repairing);
    assert_eq!(wal.snapshot_meta().index, LogIndex(50));
    wal.append(&[entry(51, 2, 40), entry(52, 2, 40)]).unwrap();
    wal.persist().unwrap();
    drop(wal);
    let (wal, again) = Wal::open(dir(), repairing_options(&backend.crash())).unwrap();
    assert!(again.repaired.is_none(), "{:?}", again.repaired);
    assert_eq!(wal.last_index(), LogIndex(52));
}

/// A damaged snapshot file that the log depends on cannot be mended by a cut: with
/// `repair`, the log and its snapshots are discarded, term and vote are kept (their copy),
/// and the node is repairing with an empty log, to be sent a snapshot by the leader.
/// Without `repair` it is refused, as before.
#[test]
fn a_damaged_snapshot_file_discards_the_log_and_keeps_term_and_vote() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, SEGMENT_BYTES).unwrap();
    wal.set_hard_state(hs(3, 2, 0)).unwrap();
    for i in 1..=10 {
        wal.append(&[entry(i, 3, 40)]).unwrap();
    }
    wal.set_hard_state(hs(3, 2, 10)).unwrap();
    wal.persist().unwrap();
    wal.save_snapshot(&raft::Snapshot {
        configuration: raft::Configuration::default(),
        meta: raft::SnapshotMeta {
            index: LogIndex(10),
            term: Term(3),
        },
        data: vec![9; 300],
    })
    .unwrap();
    drop(wal);
    let snapshot = snapshot_paths(&backend).remove(0);
    backend.flip_bit(&snapshot, 8 * 200);
    assert!(open(&backend, SEGMENT_BYTES).is_err());
    let (wal, recovered) = Wal::open(dir(), repairing_options(&backend)).unwrap();
    assert!(recovered.repairing);
    assert!(recovered.repaired.is_some());
    assert!(recovered.snapshot.is_none());
    assert_eq!(recovered.last_index, LogIndex(0));
    assert_eq!(
        (recovered.hard_state.term, recovered.hard_state.vote),
        (Term(3), NodeId(2))
    );
    assert!(
        snapshot_paths(&backend).is_empty(),
        "the damaged snapshot stayed"
    );
    drop(wal);
    let (_, again) = Wal::open(dir(), repairing_options(&backend.crash())).unwrap();
    assert!(again.repairing && again.repaired.is_none());
    assert_eq!(
        (again.hard_state.term, again.hard_state.vote),
        (Term(3), NodeId(2))
    );
}
