//! `verify_dir` and `dump_dir` on real directories: they reach recovery's verdict (clean, torn
//! tail, damage naming file and offset, a damaged snapshot file) without changing a byte or a
//! file name in the directory, and refuse a directory a WAL holds open.

use std::collections::BTreeMap;
use std::path::Path;

use raft::{Entry, EntryKind, HardState, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};
use wal::format::Record;
use wal::{dump_dir, verify_dir, Wal, WalError, WalOptions};

// Written through a shared map (`mmap` mode), so that a batch appended and never persisted
// still reaches the file, as it can in either mode when the process dies in the middle of
// copying it: what `a_torn_tail_is_reported_and_not_truncated` needs to see.
fn options() -> WalOptions {
    WalOptions {
        segment_bytes: 8192,
        helper_threads: false,
        backend: std::sync::Arc::new(wal::StdBackend::new(wal::WriteMode::Mmap)),
        ..WalOptions::default()
    }
}

fn entry(index: u64) -> Entry {
    Entry {
        term: Term(2),
        index: LogIndex(index),
        kind: EntryKind::Normal,
        data: vec![index as u8; 300].into(),
    }
}

/// Entries 1..=40 in term 2 over several segments, a snapshot at 20; returns the open WAL.
fn build(dir: &Path) -> Wal {
    let (mut wal, _) = Wal::open(dir, options()).unwrap();
    wal.set_hard_state(HardState {
        term: Term(2),
        vote: NodeId(1),
        commit: LogIndex(0),
    })
    .unwrap();
    for i in 1..=40 {
        wal.append(&[entry(i)]).unwrap();
        wal.persist().unwrap();
        if i == 20 {
            let meta = SnapshotMeta {
                index: LogIndex(20),
                term: Term(2),
            };
            let data = vec![7; 900];
            let configuration = raft::Configuration::default();
            wal.save_snapshot(&Snapshot {
                meta,
                configuration,
                data,
            })
            .unwrap();
        }
    }
    wal
}

/// Every file's name and bytes.
fn contents(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect()
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    paths.sort();
    paths
}

fn flip(path: &Path, offset: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset as usize] ^= 0x10;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_clean_directory_verifies_and_dumps_every_entry_without_a_change() {
    let dir = tempfile::tempdir().unwrap();
    drop(build(dir.path()));
    let before = contents(dir.path());
    let report = verify_dir(dir.path()).unwrap();
    assert_eq!(report.damage, None);
    assert_eq!(report.torn_tail, None);
    assert_eq!(report.snapshot.index, LogIndex(20));
    assert_eq!(report.first_index, LogIndex(21));
    assert_eq!(report.last_index, LogIndex(40));
    assert_eq!(report.hard_state.term, Term(2));
    let mut indices = Vec::new();
    let dumped = dump_dir(dir.path(), &mut |_, _, record| {
        if let Record::Entry { index, data, .. } = record {
            assert_eq!(data.len(), 300);
            indices.push(index.get());
        }
    })
    .unwrap();
    assert_eq!(dumped, report);
    // Segments wholly at or below the snapshot were compacted away; the rest is all there.
    assert_eq!(indices.last(), Some(&40));
    assert!(indices.windows(2).all(|w| w[1] == w[0] + 1), "{indices:?}");
    assert!(indices[0] <= 21);
    assert_eq!(
        contents(dir.path()),
        before,
        "verify or dump changed the directory"
    );
}

#[test]
fn a_torn_tail_is_reported_and_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let mut wal = build(dir.path());
    // Appended into the map but never persisted: no commit record closes it.
    wal.append(&[entry(41)]).unwrap();
    drop(wal);
    let before = contents(dir.path());
    let report = verify_dir(dir.path()).unwrap();
    assert_eq!(report.damage, None);
    assert!(report.torn_tail.is_some());
    assert_eq!(report.last_index, LogIndex(40));
    let mut last = 0;
    dump_dir(dir.path(), &mut |_, _, record| {
        if let Record::Entry { index, .. } = record {
            last = index.get();
        }
    })
    .unwrap();
    assert_eq!(last, 40, "dump shows what recovery keeps");
    assert_eq!(contents(dir.path()), before);
}

#[test]
fn a_flipped_bit_in_a_sealed_segment_is_damage_at_its_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    drop(build(dir.path()));
    let first = segments(dir.path())[0].clone();
    let at = 1000;
    flip(&first, at);
    let before = contents(dir.path());
    let report = verify_dir(dir.path()).unwrap();
    let damage = report.damage.expect("damage found");
    assert_eq!(damage.file, first);
    // The record holding the flipped byte (records here are under 400 bytes).
    assert!(
        damage.offset <= at && at - damage.offset < 400,
        "{damage:?}"
    );
    assert_eq!(contents(dir.path()), before);
}

#[test]
fn a_damaged_snapshot_file_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    drop(build(dir.path()));
    let snap = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "snap"))
        .unwrap();
    flip(&snap, 100);
    let damage = verify_dir(dir.path())
        .unwrap()
        .damage
        .expect("damage found");
    assert_eq!(damage.file, snap);
    assert!(damage.what.contains("CRC"), "{}", damage.what);
}

#[test]
fn a_directory_in_use_or_missing_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let wal = build(dir.path());
    assert!(matches!(
        verify_dir(dir.path()),
        Err(WalError::Locked { holder_pid: Some(pid), .. }) if pid == std::process::id()
    ));
    drop(wal);
    assert!(verify_dir(dir.path()).is_ok());
    assert!(matches!(
        verify_dir(dir.path().join("nope")),
        Err(WalError::DirMissing { .. })
    ));
}
