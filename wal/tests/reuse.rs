//! Reused segments (FORMAT.md, "Reused segments"): a segment compaction freed becomes the
//! next spare instead of being deleted — renamed, the rename made durable, zero-filled — and
//! a power cut at any point of that, or after a rollover took it, loses nothing, on the
//! in-memory backend and on disk in both write modes.

mod common;

use std::sync::Arc;

use common::*;
use raft::Snapshot;
use wal::testing::MemBackend;
use wal::{Backend, Wal, WalOptions, WriteMode};

const SPARE: &str = "next-segment.tmp";
const ENTRY_BYTES: usize = 300;
const SEGMENT_BYTES: u64 = 4096;

fn threaded(backend: Arc<dyn Backend>, segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        repair: false,
        backend,
        helper_threads: true,
    }
}

/// Appends and persists batches of three entries while `more` holds.
fn fill_while(wal: &mut Wal, model: &mut Model, mut more: impl FnMut(&Wal) -> bool) {
    let mut rounds = 0;
    while more(wal) {
        rounds += 1;
        assert!(rounds < 5000, "the condition never came");
        let next = model.last_index() + 1;
        let batch: Vec<_> = (next..next + 3).map(|i| entry(i, 1, ENTRY_BYTES)).collect();
        wal.append(&batch).unwrap();
        wal.persist().unwrap();
        model.append(&batch);
        // The spare is prepared on a thread: give it a moment between batches.
        std::thread::yield_now();
    }
}

/// Snapshots at the newest entry but a few, which frees every segment but the newest ones.
fn snapshot(wal: &mut Wal, model: &mut Model) {
    let meta = model.snapshot_at(model.last_index() - 2);
    wal.save_snapshot(&Snapshot {
        configuration: raft::Configuration::default(),
        meta,
        data: format!("state at {}", meta.index).into_bytes(),
    })
    .unwrap();
}

fn check_crash(crashed: &MemBackend, model: &Model, context: &str) {
    let (wal, _) = open(crashed, SEGMENT_BYTES)
        .unwrap_or_else(|e| panic!("{context}: reopen after the crash failed: {e}"));
    model.check(&wal, context);
    assert!(
        crashed.file_names().iter().all(|p| !p.ends_with(SPARE)),
        "{context}: the spare survived an open"
    );
}

// Proves on the in-memory backend that a segment a snapshot freed is not deleted but
// zero-filled under the spare's name and then taken by a rollover (counted by the WAL), that at most one freed segment waits (the rest are deleted),
// and that a power cut after the rollover, or after close, loses nothing.
#[test]
fn a_freed_segment_becomes_the_next_segment() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) =
        Wal::open(dir(), threaded(Arc::new(backend.clone()), SEGMENT_BYTES)).unwrap();
    let mut model = Model::default();
    fill_while(&mut wal, &mut model, |wal| wal.segment_count() < 5);
    let before = segment_paths(&backend);
    snapshot(&mut wal, &mut model);
    assert!(wal.segment_count() <= 2, "{} segments", wal.segment_count());
    // Every freed segment but one is deleted (by the reaper thread: waited for); the one
    // kept waits under its own name.
    let older = |backend: &MemBackend| {
        let paths = segment_paths(backend);
        paths[..paths.len() - wal.segment_count()].to_vec()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while older(&backend).len() > 1 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let kept = older(&backend);
    assert_eq!(kept.len(), 1, "{kept:?} kept back of {before:?}");
    fill_while(&mut wal, &mut model, |wal| wal.segments_reused() == 0);
    // Zero-filled under the spare's name, and the freed file's old name is gone.
    assert_eq!(backend.refilled_segments(), vec![path_in(&dir(), SPARE)]);
    assert!(!backend.file_names().contains(&kept[0]), "{kept:?} left");
    check_crash(&backend.crash(), &model, "crash after the rollover took it");
    for seed in 0..8 {
        check_crash(
            &backend.crash_torn(seed),
            &model,
            &format!("torn crash after the rollover took it, seed {seed}"),
        );
    }
    drop(wal);
    check_crash(&backend.crash(), &model, "crash after close");
}

// Proves the order of the reuse: a power cut right after the freed file was zero-filled
// under the spare's name (before any later directory fsync) finds it under that name only —
// the rename was made durable before the zeros — which open deletes, and every entry the
// model holds; torn cuts too. Had the old segment's name come back holding zeros, open would
// refuse the directory.
#[test]
fn a_crash_right_after_a_freed_segment_was_refilled_loses_nothing() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) =
        Wal::open(dir(), threaded(Arc::new(backend.clone()), SEGMENT_BYTES)).unwrap();
    let mut model = Model::default();
    fill_while(&mut wal, &mut model, |wal| wal.segment_count() < 5);
    snapshot(&mut wal, &mut model);
    fill_while(&mut wal, &mut model, |_| {
        backend.refilled_segments().is_empty()
    });
    let crashed = backend.crash();
    check_crash(&crashed, &model, "crash right after the refill");
    for seed in 0..8 {
        check_crash(
            &backend.crash_torn(seed),
            &model,
            &format!("torn crash right after the refill, seed {seed}"),
        );
    }
    drop(wal);
    check_crash(&backend.crash(), &model, "crash after close");
    assert!(
        !backend.file_names().contains(&path_in(&dir(), SPARE)),
        "spare left at close"
    );
}

// Proves on disk, in both write modes, that the reused segment is the freed file itself
// (same inode: its blocks and cached pages reused), that it reads as zeros after the records
// written into it (no old record survives behind the tail, which open would refuse), and
// that the directory reopens in the other write mode with every entry.
#[test]
fn reused_segments_on_disk_reopen_in_both_write_modes() {
    use std::os::unix::fs::MetadataExt;
    const BYTES: u64 = 64 * 1024;
    for (write, reopen) in [
        (WriteMode::Pwrite, WriteMode::Mmap),
        (WriteMode::Mmap, WriteMode::Pwrite),
    ] {
        let temp = tempfile::tempdir().unwrap();
        let backend = Arc::new(wal::StdBackend::new(write));
        let (mut wal, _) = Wal::open(temp.path(), threaded(backend, BYTES)).unwrap();
        let mut model = Model::default();
        fill_while(&mut wal, &mut model, |wal| wal.segment_count() < 4);
        let inodes: Vec<u64> = wal_files(temp.path())
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().ino())
            .collect();
        snapshot(&mut wal, &mut model);
        fill_while(&mut wal, &mut model, |wal| wal.segments_reused() == 0);
        let newest = wal_files(temp.path()).last().unwrap().clone();
        let ino = std::fs::metadata(&newest).unwrap().ino();
        assert!(
            inodes.contains(&ino),
            "{write:?}: {newest:?} is a new file, not a freed one"
        );
        // A few records at its start, zeros after them.
        let bytes = std::fs::read(&newest).unwrap();
        assert_eq!(bytes.len() as u64, BYTES);
        assert!(
            bytes[bytes.len() / 2..].iter().all(|&b| b == 0),
            "{write:?}: old bytes behind the tail"
        );
        drop(wal);
        assert!(!temp.path().join(SPARE).exists());
        let reopened = WalOptions {
            segment_bytes: BYTES,
            backend: Arc::new(wal::StdBackend::new(reopen)),
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(temp.path(), reopened)
            .unwrap_or_else(|e| panic!("{write:?}: reopen failed: {e}"));
        model.check(&wal, &format!("{write:?}"));
    }
}
