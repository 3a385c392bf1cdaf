//! The scrubber (`Wal::scrub`): a clean log scrubs clean pass after pass; a bit flipped
//! anywhere in what the log holds on disk — a sealed segment's records or zero tail, the
//! synced part of the segment being written, the snapshot file — is found within one pass,
//! recorded durably in the repair marker, and gone (marker removed) once a snapshot covers or
//! replaces the damaged file.

mod common;

use std::path::PathBuf;

use common::*;
use raft::{HardState, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};
use wal::testing::MemBackend;
use wal::{Wal, REPAIR_FILE};

const SEGMENT_BYTES: u64 = 8192;

/// A WAL of several 8 KiB segments holding entries 1..=`count` in term 1, the last batch
/// synced, and a snapshot at `snapshot_at` (if not 0).
fn build(backend: &MemBackend, count: u64, snapshot_at: u64) -> Wal {
    let (mut wal, _) = open(backend, SEGMENT_BYTES).unwrap();
    wal.set_hard_state(HardState {
        term: Term(1),
        vote: NodeId(1),
        commit: LogIndex(0),
    })
    .unwrap();
    for i in 1..=count {
        wal.append(&[entry(i, 1, 300)]).unwrap();
        if i % 3 == 0 || i == count {
            wal.persist().unwrap();
        }
        if i == snapshot_at {
            wal.save_snapshot(&snapshot(i)).unwrap();
        }
    }
    wal
}

fn snapshot(index: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index: LogIndex(index),
            term: Term(1),
        },
        configuration: raft::Configuration::new([NodeId(1)]),
        data: vec![index as u8; 700],
    }
}

/// Scrubs until a pass ends or damage is found, in steps of `budget` bytes.
fn scrub_pass(wal: &mut Wal, budget: usize) -> Option<wal::Damage> {
    for _ in 0..10_000 {
        let step = wal.scrub(budget).unwrap();
        assert!(
            step.bytes as usize <= budget + 2 * SEGMENT_BYTES as usize,
            "a step read {} bytes on a budget of {budget}",
            step.bytes
        );
        if step.damage.is_some() {
            return step.damage;
        }
        if step.pass_finished {
            return None;
        }
    }
    panic!("no pass ended");
}

fn marker(backend: &MemBackend) -> bool {
    backend.contents(&dir().join(REPAIR_FILE)).is_some()
}

/// The sealed segments (all but the newest), oldest first.
fn sealed(backend: &MemBackend) -> Vec<PathBuf> {
    let mut paths = segment_paths(backend);
    paths.sort();
    paths.pop();
    paths
}

// Proves a clean log scrubs clean, pass after pass, reading every byte of every sealed
// segment and of the snapshot file in each pass, with steps bounded by their budget.
#[test]
fn a_clean_log_scrubs_clean() {
    let backend = MemBackend::with_dir(&dir());
    let mut wal = build(&backend, 60, 20);
    let sealed_bytes: u64 = sealed(&backend)
        .iter()
        .map(|p| backend.contents(p).unwrap().len() as u64)
        .sum();
    let snapshot_bytes = backend
        .contents(&snapshot_paths(&backend)[0])
        .unwrap()
        .len() as u64;
    assert!(
        sealed(&backend).len() >= 2,
        "the test needs sealed segments"
    );
    for budget in [100, 4096, 1 << 20] {
        let before = wal.scrub_totals();
        assert_eq!(scrub_pass(&mut wal, budget), None);
        let after = wal.scrub_totals();
        assert_eq!(after.passes, before.passes + 1);
        assert!(after.bytes - before.bytes >= sealed_bytes + snapshot_bytes);
    }
    assert_eq!(wal.scrub_totals().damage_found, 0);
    assert!(!marker(&backend));
}

// Proves a flip anywhere in a sealed segment (header, records, commit records, zero tail) is
// found in one pass and named, the marker is written durably at once, and a snapshot past the
// segment deletes it and removes the marker; the log then reopens whole without repair.
#[test]
fn a_flip_in_a_sealed_segment_is_found_and_mended_by_a_snapshot() {
    let mut rand = xorshift(7);
    for round in 0..24 {
        let backend = MemBackend::with_dir(&dir());
        let mut wal = build(&backend, 60, 0);
        let target = sealed(&backend)[round % 2].clone();
        let len = backend.contents(&target).unwrap().len();
        // Every fourth round in the zero tail; the others anywhere.
        let bit = if round % 4 == 3 {
            let bytes = backend.contents(&target).unwrap();
            let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
            end * 8 + (rand() as usize % ((len - end) * 8))
        } else {
            rand() as usize % (len * 8)
        };
        backend.flip_bit(&target, bit);
        let damage = scrub_pass(&mut wal, 4096).expect("damage found in one pass");
        assert_eq!(damage.file, target, "round {round}: bit {bit}");
        assert!(marker(&backend.crash()), "the marker is durable at once");
        assert_eq!(wal.damaged_files(), vec![target.clone()]);
        // A snapshot at the last index covers every sealed segment.
        wal.save_snapshot(&snapshot(60)).unwrap();
        assert!(wal.damaged_files().is_empty());
        assert!(!marker(&backend), "round {round}: marker left behind");
        assert!(!backend.file_names().contains(&target));
        assert_eq!(scrub_pass(&mut wal, 4096), None);
        drop(wal);
        let (_, recovered) = open(&backend.crash(), SEGMENT_BYTES).unwrap();
        assert!(!recovered.repairing);
    }
}

// Proves damage in the synced part of the segment being written is found, the segment is
// sealed so that a snapshot can cover it, and the snapshot mends it.
#[test]
fn a_flip_in_the_segment_being_written_seals_it() {
    let mut rand = xorshift(5);
    for round in 0..24 {
        let backend = MemBackend::with_dir(&dir());
        let mut wal = build(&backend, 60, 0);
        let mut segments = segment_paths(&backend);
        segments.sort();
        let active = segments.pop().unwrap();
        let bytes = backend.contents(&active).unwrap();
        let end = bytes.iter().rposition(|&b| b != 0).unwrap() + 1;
        let bit = rand() as usize % (end * 8);
        backend.flip_bit(&active, bit);
        let count = wal.segment_count();
        let damage = scrub_pass(&mut wal, 4096).expect("found");
        assert_eq!(damage.file, active, "round {round}: bit {bit}");
        assert_eq!(
            wal.segment_count(),
            count + 1,
            "sealed: a new segment was started"
        );
        wal.append(&[entry(61, 1, 300)]).unwrap();
        wal.persist().unwrap();
        wal.save_snapshot(&snapshot(61)).unwrap();
        assert!(wal.damaged_files().is_empty() && !marker(&backend));
    }
}

// Proves a flip anywhere in the snapshot file is found, and writing the same snapshot again
// (the store still holds that state) replaces the file and removes the marker. The file under
// the name is then another one (`MemBackend::file_id`, which a crash keeps): how the
// whole-server simulator tells a mended file from the rotted one.
#[test]
fn a_flip_in_the_snapshot_file_is_mended_by_writing_it_again() {
    let mut rand = xorshift(11);
    for _ in 0..12 {
        let backend = MemBackend::with_dir(&dir());
        let mut wal = build(&backend, 30, 30);
        let path = snapshot_paths(&backend)[0].clone();
        let rotted = backend.file_id(&path).expect("a snapshot file");
        let len = backend.contents(&path).unwrap().len();
        backend.flip_bit(&path, rand() as usize % (len * 8));
        assert_eq!(backend.crash().file_id(&path), Some(rotted));
        let damage = scrub_pass(&mut wal, 512).expect("found");
        assert_eq!(damage.file, path);
        assert!(marker(&backend));
        let written = wal.snapshot_writer().write(&snapshot(30)).unwrap();
        assert!(wal.install_snapshot_file(written).unwrap());
        assert!(wal.damaged_files().is_empty() && !marker(&backend));
        let mended = backend.file_id(&path).expect("written again");
        assert_ne!(mended, rotted);
        assert_eq!(backend.crash().file_id(&path), Some(mended));
        assert_eq!(wal.snapshot().unwrap().unwrap(), snapshot(30));
        assert_eq!(scrub_pass(&mut wal, 512), None);
    }
}

// Proves the marker written for damage outlives a restart before the mend (the node then
// starts repairing, the safe side), and that a repairing node's marker stays while damage
// the scrubber found is still in the log, even after its repair finished.
#[test]
fn the_marker_covers_both_repair_and_found_damage() {
    let backend = MemBackend::with_dir(&dir());
    let mut wal = build(&backend, 60, 0);
    let target = sealed(&backend)[0].clone();
    backend.flip_bit(&target, 8 * 200);
    assert!(scrub_pass(&mut wal, 4096).is_some());
    drop(wal);
    let crashed = backend.crash();
    let mut options = options(&crashed, SEGMENT_BYTES);
    options.repair = true;
    let (mut wal, recovered) = Wal::open(dir(), options).unwrap();
    assert!(recovered.repairing);
    // The cut removed the damage; finishing the repair removes the marker.
    wal.finish_repair().unwrap();
    assert!(!marker(&crashed));
    // Damage found while repairing keeps the marker through finish_repair.
    let backend = MemBackend::with_dir(&dir());
    let mut wal = build(&backend, 60, 0);
    let target = sealed(&backend)[1].clone();
    backend.flip_bit(&target, 8 * 300);
    assert!(scrub_pass(&mut wal, 4096).is_some());
    wal.finish_repair().unwrap();
    assert!(
        marker(&backend),
        "found damage still in the log keeps the marker"
    );
}

/// Takes the next scrubber step out of the WAL (see `Wal::scrub_begin`).
fn begin(wal: &mut Wal, budget: usize) -> Box<wal::ScrubJob> {
    match wal.scrub_begin(budget) {
        wal::ScrubBegin::Job(job) => job,
        other => panic!("no step to take out: {other:?}"),
    }
}

// Proves a step taken out of the WAL, read while the WAL goes on writing (more entries, a
// rollover, a persist), still finds a flip in the sealed segment it reads, and that only one
// step is out at a time.
#[test]
fn a_step_read_while_the_wal_writes_finds_damage() {
    let backend = MemBackend::with_dir(&dir());
    let mut wal = build(&backend, 60, 0);
    let target = sealed(&backend)[0].clone();
    backend.flip_bit(&target, 8 * 300);
    let mut job = begin(&mut wal, 1 << 20);
    assert!(matches!(wal.scrub_begin(1 << 20), wal::ScrubBegin::Busy));
    for i in 61..=90 {
        wal.append(&[entry(i, 1, 300)]).unwrap();
        wal.persist().unwrap();
    }
    job.run();
    let step = wal.scrub_end(job).unwrap();
    let damage = step.damage.expect("the flip is found");
    assert_eq!(damage.file, target);
    assert_eq!(wal.damaged_files(), vec![target]);
    assert!(marker(&backend));
}

// Proves a step that read while files were removed (a snapshot compacted the segment it was
// reading, which then reads as missing or as zeros) reports nothing and marks nothing, and
// that the scrubber goes on from where it stood: the next pass is clean and complete.
#[test]
fn a_step_that_read_across_a_compaction_is_dropped() {
    let backend = MemBackend::with_dir(&dir());
    let mut wal = build(&backend, 60, 0);
    let target = sealed(&backend)[0].clone();
    let mut job = begin(&mut wal, 1 << 20);
    wal.save_snapshot(&snapshot(60)).unwrap();
    assert!(
        !backend.file_names().contains(&target),
        "the snapshot deleted the segment being read"
    );
    job.run();
    let step = wal.scrub_end(job).unwrap();
    assert_eq!(
        step,
        wal::ScrubStep::default(),
        "a dropped step reports nothing"
    );
    assert!(wal.damaged_files().is_empty());
    assert!(!marker(&backend));
    assert_eq!(wal.scrub_totals().damage_found, 0);
    let passes = wal.scrub_totals().passes;
    assert_eq!(scrub_pass(&mut wal, 4096), None);
    assert_eq!(wal.scrub_totals().passes, passes + 1);
}
