//! Snapshots and compaction: round trips, crashes at every step of `save_snapshot`, bounded
//! disk use, and a log discarded by a snapshot it does not match.

mod common;

use common::*;
use raft::{LogIndex, Snapshot, SnapshotMeta, Term};
use wal::testing::MemBackend;
use wal::Wal;

fn fill(wal: &mut Wal, model: &mut Model, count: u64, data_bytes: usize) {
    for _ in 0..count.div_ceil(4) {
        let first = model.last_index() + 1;
        let entries: Vec<_> = (first..first + 4)
            .map(|i| entry(i, 1, data_bytes))
            .collect();
        wal.append(&entries).unwrap();
        model.append(&entries);
        wal.persist().unwrap();
    }
}

// Proves a snapshot round-trips through reopen (data, meta), the log after it is intact,
// entries at or below it are compacted (typed error), and older segments and snapshot files
// are deleted.
#[test]
fn snapshot_and_compaction_round_trip() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, 4096).unwrap();
    let mut model = Model::default();
    fill(&mut wal, &mut model, 40, 200);
    assert!(segment_paths(&backend).len() > 2);
    let meta = model.snapshot_at(30);
    wal.save_snapshot(&Snapshot {
        configuration: raft::Configuration::default(),
        meta,
        data: b"state at 30".to_vec(),
    })
    .unwrap();
    model.check(&wal, "after snapshot");
    assert!(matches!(
        wal.entries(LogIndex(30), LogIndex(31), 1),
        Err(wal::WalError::Compacted { .. })
    ));
    assert_eq!(wal.term(LogIndex(30)), Some(Term(1)));
    assert_eq!(wal.term(LogIndex(29)), None);
    assert_eq!(snapshot_paths(&backend).len(), 1);
    let segments_after = segment_paths(&backend).len();
    assert!(segments_after <= 2, "{segments_after} segments left");
    let meta2 = model.snapshot_at(35);
    wal.save_snapshot(&Snapshot {
        configuration: raft::Configuration::default(),
        meta: meta2,
        data: b"state at 35".to_vec(),
    })
    .unwrap();
    assert_eq!(snapshot_paths(&backend).len(), 1);
    drop(wal);
    let (wal, recovered) = open(&backend.crash(), 4096).unwrap();
    model.check(&wal, "after reopen");
    let snapshot = recovered.snapshot.expect("snapshot recovered");
    assert_eq!(
        (snapshot.meta, snapshot.data.as_slice()),
        (meta2, &b"state at 35"[..])
    );
    assert_eq!(wal.snapshot().unwrap().unwrap().data, b"state at 35");
}

// Proves a crash at each point of save_snapshot recovers a consistent state: before the
// rename (the old snapshot and full log), after the rename but before the marker, and after
// the marker but before segments are deleted (the new snapshot; the next open deletes them).
#[test]
fn crash_between_snapshot_and_compaction() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, 4096).unwrap();
    let mut model = Model::default();
    fill(&mut wal, &mut model, 40, 200);
    let before = model.clone();
    let meta = model.snapshot_at(30);
    let bytes = wal::format::encode_snapshot(&meta, &raft::Configuration::default(), b"s30");
    let name = format!("snap-{:016x}-{:016x}.snap", 30, 1);
    drop(wal);
    use wal::Backend;

    // 1. Temp file written, not renamed: ignored and removed.
    let crashed = backend.crash();
    crashed
        .write_synced(&dir().join(format!("{name}.tmp")), &bytes)
        .unwrap();
    crashed.sync_dir(&dir()).unwrap();
    let (wal, recovered) = open(&crashed, 4096).unwrap();
    before.check(&wal, "temp only");
    assert!(recovered.snapshot.is_none());
    drop(wal);
    assert!(crashed
        .file_names()
        .iter()
        .all(|p| !p.to_string_lossy().ends_with(".tmp")));

    // 2. Renamed and durable, no marker, segments not deleted: the snapshot wins, and the
    //    segments it covers are deleted at open.
    let crashed = backend.crash();
    crashed.write_synced(&dir().join(&name), &bytes).unwrap();
    crashed.sync_dir(&dir()).unwrap();
    let segments_before = segment_paths(&crashed).len();
    let (wal, recovered) = open(&crashed, 4096).unwrap();
    model.check(&wal, "renamed, no marker");
    assert_eq!(recovered.snapshot.unwrap().meta, meta);
    assert!(segment_paths(&crashed).len() < segments_before);
    drop(wal);
    let (wal, _) = open(&crashed.crash(), 4096).unwrap();
    model.check(&wal, "renamed, no marker, reopened");
    drop(wal);

    // 3. The real sequence with a crash after save_snapshot but where old segment deletions
    //    were not made durable: reopen gives the same state.
    let (mut wal, _) = open(&backend, 4096).unwrap();
    wal.save_snapshot(&Snapshot {
        configuration: raft::Configuration::default(),
        meta,
        data: b"s30".to_vec(),
    })
    .unwrap();
    drop(wal);
    let (wal, _) = open(&backend.crash(), 4096).unwrap();
    model.check(&wal, "full save_snapshot");
}

// Proves a snapshot whose last entry the log does not hold (or holds with another term)
// discards the whole log (Raft §7), also after reopen.
#[test]
fn mismatching_snapshot_discards_the_log() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, 4096).unwrap();
    let mut model = Model::default();
    fill(&mut wal, &mut model, 10, 20);
    let meta = SnapshotMeta {
        index: LogIndex(50),
        term: Term(4),
    };
    wal.save_snapshot(&Snapshot {
        configuration: raft::Configuration::default(),
        meta,
        data: vec![1],
    })
    .unwrap();
    assert_eq!(
        (wal.first_index(), wal.last_index()),
        (LogIndex(51), LogIndex(50))
    );
    wal.append(&[entry(51, 4, 8)]).unwrap();
    wal.persist().unwrap();
    drop(wal);
    let (wal, _) = open(&backend.crash(), 4096).unwrap();
    assert_eq!(
        (wal.first_index(), wal.last_index()),
        (LogIndex(51), LogIndex(51))
    );
    assert_eq!(all_entries(&wal), vec![entry(51, 4, 8)]);
}

// Proves a log replaced by a mismatching snapshot stays replaced after reopen when the entry
// at the snapshot's index was in a segment the snapshot compacted away and the stale entry
// after it began the segment that remains: recovery cannot compare that entry's term, so the
// WAL says it with a truncation record (the whole-server simulator found a deposed leader
// whose log then failed to open: the stale entry and its successor's at the same index).
#[test]
fn a_log_replaced_by_a_snapshot_stays_replaced_across_a_compacted_segment() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, 4096).unwrap();
    // Entries of term 2, one at a time, until one begins a new segment.
    let mut index = 0;
    loop {
        index += 1;
        let segments = wal.segment_count();
        wal.append(&[entry(index, 2, 200)]).unwrap();
        wal.persist().unwrap();
        if wal.segment_count() > segments {
            break;
        }
    }
    let first_of_segment = index;
    // Another leader's snapshot through the entry before it, of a later term.
    let meta = SnapshotMeta {
        index: LogIndex(first_of_segment - 1),
        term: Term(3),
    };
    wal.save_snapshot(&Snapshot {
        configuration: raft::Configuration::default(),
        meta,
        data: vec![7],
    })
    .unwrap();
    assert_eq!(wal.last_index(), meta.index, "the stale entry is gone");
    wal.append(&[entry(first_of_segment, 3, 100)]).unwrap();
    wal.persist().unwrap();
    drop(wal);
    let (wal, _) = open(&backend.crash(), 4096).unwrap();
    assert_eq!(wal.snapshot_meta(), meta);
    assert_eq!(all_entries(&wal), vec![entry(first_of_segment, 3, 100)]);
}

// Proves a damaged newest snapshot file is skipped for the older valid one while the log still
// covers the gap, and refused (naming what is missing) once the log was compacted past it.
#[test]
fn damaged_snapshot_file() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, 4096).unwrap();
    let mut model = Model::default();
    fill(&mut wal, &mut model, 40, 200);
    let meta = model.snapshot_at(30);
    wal.save_snapshot(&Snapshot {
        configuration: raft::Configuration::default(),
        meta,
        data: vec![9; 64],
    })
    .unwrap();
    drop(wal);
    let crashed = backend.crash();
    let path = snapshot_paths(&crashed)[0].clone();
    crashed.flip_bit(&path, 8 * 60);
    match open(&crashed, 4096) {
        Err(e @ wal::WalError::Corrupt { .. }) => assert!(e.to_string().contains("missing"), "{e}"),
        other => panic!("expected corruption, got {:?}", other.map(|(_, r)| r)),
    }
}

// Proves disk use stays bounded: many appends with a snapshot every `every` entries leave at
// most a few segments and one snapshot file (the benchmark runs 1,000,000 appends).
#[test]
fn disk_use_stays_bounded() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, 64 * 1024).unwrap();
    let (total, every, batch) = (50_000u64, 1_000u64, 50u64);
    let mut index = 1;
    let mut max_segments = 0;
    while index <= total {
        let entries: Vec<_> = (index..index + batch).map(|i| entry(i, 1, 128)).collect();
        wal.append(&entries).unwrap();
        wal.persist().unwrap();
        index += batch;
        if (index - 1) % every == 0 {
            let meta = SnapshotMeta {
                index: LogIndex(index - 1),
                term: Term(1),
            };
            wal.save_snapshot(&Snapshot {
                configuration: raft::Configuration::default(),
                meta,
                data: vec![0; 256],
            })
            .unwrap();
            max_segments = max_segments.max(segment_paths(&backend).len());
        }
    }
    // 1,000 entries of ~160 bytes are ~2.5 segments of 64 KiB.
    assert!(max_segments <= 5, "{max_segments} segments");
    assert_eq!(snapshot_paths(&backend).len(), 1);
    assert!(
        wal.disk_bytes() <= 6 * 64 * 1024,
        "{} bytes",
        wal.disk_bytes()
    );
}

// Proves decision-table row 7: a damaged newest snapshot file whose marker never became
// durable is skipped with a warning; the older snapshot and the log are used.
#[test]
fn damaged_newest_snapshot_falls_back_to_the_older_one() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, 4096).unwrap();
    let mut model = Model::default();
    fill(&mut wal, &mut model, 40, 200);
    let meta = model.snapshot_at(20);
    wal.save_snapshot(&Snapshot {
        configuration: raft::Configuration::default(),
        meta,
        data: vec![2; 32],
    })
    .unwrap();
    drop(wal);
    // A newer snapshot file that was renamed into place but is damaged (and has no marker).
    use wal::Backend;
    let crashed = backend.crash();
    let newer = SnapshotMeta {
        index: LogIndex(30),
        term: Term(1),
    };
    let mut bytes = wal::format::encode_snapshot(&newer, &raft::Configuration::default(), &[3; 32]);
    bytes[50] ^= 4;
    crashed
        .write_synced(
            &dir().join(format!("snap-{:016x}-{:016x}.snap", 30, 1)),
            &bytes,
        )
        .unwrap();
    crashed.sync_dir(&dir()).unwrap();
    let (wal, recovered) = open(&crashed, 4096).unwrap();
    assert_eq!(recovered.snapshot.unwrap().meta, meta);
    model.check(&wal, "fell back to the older snapshot");
}
