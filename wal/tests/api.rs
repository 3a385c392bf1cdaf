//! The write and read paths on the real file system: round trips across segment rollovers,
//! overwrites of a conflicting suffix, bounded reads, and large batches.

mod common;

use common::*;
use raft::{HardState, LogIndex, NodeId, Term};
use wal::{Wal, WalOptions};

fn real_options(segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        ..WalOptions::default()
    }
}

// Proves a random workload against the naive model on the real backend (std::fs, fallocate,
// mmap; msync or pwrite + fdatasync): after every batch the WAL matches the model, and after
// reopening too, each round opening what the other write mode wrote.
#[test]
fn random_workload_round_trips_on_disk() {
    let temp = tempfile::tempdir().unwrap();
    let mut rand = xorshift(3);
    let mut model = Model::default();
    for round in 0..4 {
        let write = [wal::WriteMode::Pwrite, wal::WriteMode::Mmap][round % 2];
        let options = WalOptions {
            backend: std::sync::Arc::new(wal::StdBackend::new(write)),
            ..real_options(8192)
        };
        let (mut wal, recovered) = Wal::open(temp.path(), options).unwrap();
        assert_eq!(recovered.torn_tail, None);
        model.check(&wal, &format!("reopen {round} ({write:?})"));
        for step in 0..100 {
            let (entries, hard_state) = random_batch(&model, &mut rand, 500);
            if let Some(state) = hard_state {
                wal.set_hard_state(state).unwrap();
                model.hard_state = state;
            }
            wal.append(&entries).unwrap();
            model.append(&entries);
            wal.persist().unwrap();
            if step % 25 == 0 {
                model.check(&wal, &format!("round {round} ({write:?}) step {step}"));
            }
        }
    }
}

// Proves an overwrite that reaches back into an earlier segment and a rollover in the middle
// of a batch both survive reopen.
#[test]
fn overwrite_across_segments() {
    let temp = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(temp.path(), real_options(4096)).unwrap();
    let mut model = Model::default();
    for chunk in (1..=30).collect::<Vec<u64>>().chunks(3) {
        let first: Vec<_> = chunk.iter().map(|&i| entry(i, 1, 300)).collect();
        wal.append(&first).unwrap();
        model.append(&first);
        wal.persist().unwrap();
    }
    assert!(wal.segment_count() > 2);
    let state = HardState {
        term: Term(2),
        vote: NodeId(3),
        commit: LogIndex(5),
    };
    wal.set_hard_state(state).unwrap();
    model.hard_state = state;
    let second: Vec<_> = (6..=20).map(|i| entry(i, 2, 250)).collect();
    wal.append(&second).unwrap();
    model.append(&second);
    model.check(&wal, "before persist");
    wal.persist().unwrap();
    drop(wal);
    let (wal, _) = Wal::open(temp.path(), real_options(4096)).unwrap();
    model.check(&wal, "after reopen");
}

// Proves `entries` honours max_bytes (but returns at least one entry) and range errors.
#[test]
fn bounded_reads() {
    let temp = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(temp.path(), real_options(1 << 20)).unwrap();
    let entries: Vec<_> = (1..=10).map(|i| entry(i, 1, 100)).collect();
    wal.append(&entries).unwrap();
    assert_eq!(
        wal.entries(LogIndex(1), LogIndex(11), 250).unwrap().len(),
        2
    );
    assert_eq!(wal.entries(LogIndex(1), LogIndex(11), 10).unwrap().len(), 1);
    assert_eq!(wal.entries(LogIndex(3), LogIndex(3), 10).unwrap().len(), 0);
    assert!(matches!(
        wal.entries(LogIndex(5), LogIndex(12), 10),
        Err(wal::WalError::Unavailable { .. })
    ));
    assert_eq!(wal.term(LogIndex(10)), Some(Term(1)));
    assert_eq!(wal.term(LogIndex(11)), None);
    assert_eq!(wal.term(LogIndex(0)), Some(Term(0)));
}

// Proves a batch larger than a segment gets a segment of its own size and reopens.
#[test]
fn batch_larger_than_a_segment() {
    let temp = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(temp.path(), real_options(4096)).unwrap();
    let entries: Vec<_> = (1..=50).map(|i| entry(i, 1, 1000)).collect();
    wal.append(&entries).unwrap();
    wal.persist().unwrap();
    drop(wal);
    let (wal, _) = Wal::open(temp.path(), real_options(4096)).unwrap();
    assert_eq!(all_entries(&wal), entries);
}

// Proves a batch that outgrows its segment twice before it is persisted (appended in three
// parts, each rollover moving the whole open batch on) survives a reopen in both write modes:
// the middle segment, created and left within the one batch, must reach the file whole (its
// header too), or the next open finds a segment without a header before a valid one.
#[test]
fn a_batch_that_rolls_over_twice_before_its_persist_reopens() {
    for write in [wal::WriteMode::Pwrite, wal::WriteMode::Mmap] {
        let temp = tempfile::tempdir().unwrap();
        let options = || WalOptions {
            backend: std::sync::Arc::new(wal::StdBackend::new(write)),
            helper_threads: false,
            ..real_options(4096)
        };
        let (mut wal, _) = Wal::open(temp.path(), options()).unwrap();
        let entries: Vec<_> = (1..=9).map(|i| entry(i, 1, 900)).collect();
        for part in entries.chunks(3) {
            wal.append(part).unwrap();
        }
        assert_eq!(wal.segment_count(), 3, "{write:?}");
        assert_eq!(all_entries(&wal), entries, "{write:?}: before the persist");
        wal.persist().unwrap();
        drop(wal);
        let (wal, recovered) = Wal::open(temp.path(), options()).unwrap();
        assert_eq!(recovered.torn_tail, None, "{write:?}");
        assert_eq!(all_entries(&wal), entries, "{write:?}: after reopening");
    }
}

// Proves a zero-length or short newest segment (its creation or preallocation never became
// durable) is treated as a torn tail on the real file system, not as an error.
#[test]
fn empty_newest_segment_file_is_a_torn_tail() {
    let temp = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(temp.path(), real_options(4096)).unwrap();
    let entries: Vec<_> = (1..=3).map(|i| entry(i, 1, 10)).collect();
    wal.append(&entries).unwrap();
    wal.persist().unwrap();
    drop(wal);
    for len in [0u64, 17] {
        let path = temp.path().join("0000000000000002.wal");
        let file = std::fs::File::create(&path).unwrap();
        file.set_len(len).unwrap();
        drop(file);
        let (wal, recovered) = Wal::open(temp.path(), real_options(4096)).unwrap();
        assert!(recovered.torn_tail.is_some(), "len {len}");
        assert_eq!(all_entries(&wal), entries);
        assert!(!path.exists());
    }
}

// Proves the WAL can move to another thread (the daemon may run storage on its own thread).
#[test]
fn wal_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Wal>();
}

// Proves the split snapshot path: a snapshot file written on another thread while appends
// go on, then installed, compacts the log and survives a reopen; a file overtaken by a newer
// snapshot is refused (false) and removed, leaving the newer one in place.
#[test]
fn snapshot_written_on_another_thread_then_installed() {
    let temp = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(temp.path(), real_options(8192)).unwrap();
    let entries: Vec<_> = (1..=200).map(|i| entry(i, 1, 40)).collect();
    wal.append(&entries).unwrap();
    wal.persist().unwrap();
    let snapshot = |index: u64| raft::Snapshot {
        configuration: raft::Configuration::default(),
        meta: raft::SnapshotMeta {
            index: LogIndex(index),
            term: Term(1),
        },
        data: vec![index as u8; 1000],
    };
    let writer = wal.snapshot_writer();
    let background = std::thread::spawn(move || writer.write(&snapshot(100)).unwrap());
    let more: Vec<_> = (201..=250).map(|i| entry(i, 1, 40)).collect();
    wal.append(&more).unwrap();
    wal.persist().unwrap();
    let written = background.join().unwrap();
    assert!(wal.install_snapshot_file(written).unwrap());
    assert_eq!(wal.first_index(), LogIndex(101));
    // An older file written late is refused and removed; the newer snapshot stays.
    let stale = wal.snapshot_writer().write(&snapshot(50)).unwrap();
    assert!(!wal.install_snapshot_file(stale).unwrap());
    drop(wal);
    let (wal, recovered) = Wal::open(temp.path(), real_options(8192)).unwrap();
    assert_eq!(recovered.snapshot.unwrap(), snapshot(100));
    assert_eq!(wal.last_index(), LogIndex(250));
    let names: Vec<String> = std::fs::read_dir(temp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("snap-"))
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

// Proves the next segment is prepared on a helper thread on the real file system: while the
// WAL is open a zero-filled spare file exists, rollovers take it under the next segment's
// name, closing the WAL removes it, and a spare left by a crash is removed at open.
#[test]
fn next_segment_is_prepared_ahead_and_cleaned_up() {
    let temp = tempfile::tempdir().unwrap();
    let spare = temp.path().join("next-segment.tmp");
    let segments = |dir: &std::path::Path| {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "wal")
            })
            .count()
    };
    let mut index = 1;
    {
        let (mut wal, _) = Wal::open(temp.path(), real_options(64 * 1024)).unwrap();
        while segments(temp.path()) < 4 {
            let batch: Vec<_> = (index..index + 10).map(|i| entry(i, 1, 200)).collect();
            wal.append(&batch).unwrap();
            wal.persist().unwrap();
            index += 10;
        }
        assert!(wal.disk_bytes() >= 5 * 64 * 1024, "{}", wal.disk_bytes());
        // The helper may still be writing the spare; wait for its file to reach full size.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::metadata(&spare).map_or(0, |m| m.len()) < 64 * 1024 {
            assert!(
                std::time::Instant::now() < deadline,
                "no spare segment appeared"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    assert!(!spare.exists(), "closing the WAL must remove the spare");
    std::fs::write(&spare, b"left by a crash").unwrap();
    let (wal, _) = Wal::open(temp.path(), real_options(64 * 1024)).unwrap();
    assert_eq!(wal.last_index(), LogIndex(index - 1));
    let entries = wal.entries(LogIndex(1), LogIndex(index), u64::MAX).unwrap();
    assert_eq!(
        entries,
        (1..index).map(|i| entry(i, 1, 200)).collect::<Vec<_>>()
    );
    drop(wal);
    assert!(!spare.exists());
}

// Proves compaction with helper threads deletes the compacted segments and the old snapshot
// off the caller's thread, all of them by the time the WAL is closed, and that a snapshot
// file written for a newer index but not installed yet survives a compaction meanwhile.
#[test]
fn compacted_files_are_deleted_by_the_helper_and_newer_snapshots_kept() {
    let temp = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(temp.path(), real_options(16 * 1024)).unwrap();
    let snapshot = |index: u64| raft::Snapshot {
        configuration: raft::Configuration::default(),
        meta: raft::SnapshotMeta {
            index: LogIndex(index),
            term: Term(1),
        },
        data: vec![index as u8; 500],
    };
    for first in (1..=600).step_by(20) {
        let entries: Vec<_> = (first..first + 20).map(|i| entry(i, 1, 100)).collect();
        wal.append(&entries).unwrap();
        wal.persist().unwrap();
    }
    assert!(wal.segment_count() >= 4, "{}", wal.segment_count());
    wal.save_snapshot(&snapshot(300)).unwrap();
    // Written, not installed yet (as the daemon's snapshot thread leaves it).
    let newer = wal.snapshot_writer().write(&snapshot(500)).unwrap();
    // A compaction in between, through a snapshot from elsewhere at 400.
    wal.save_snapshot(&snapshot(400)).unwrap();
    assert!(wal.install_snapshot_file(newer).unwrap());
    let last_segments = wal.segment_count();
    drop(wal);
    let mut names: Vec<String> = std::fs::read_dir(temp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    let snapshots: Vec<_> = names.iter().filter(|n| n.starts_with("snap-")).collect();
    assert_eq!(snapshots.len(), 1, "{names:?}");
    assert!(
        snapshots[0].starts_with("snap-00000000000001f4"),
        "{names:?}"
    );
    let segments = names.iter().filter(|n| n.ends_with(".wal")).count();
    assert_eq!(segments, last_segments, "{names:?}");
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    let (wal, recovered) = Wal::open(temp.path(), real_options(16 * 1024)).unwrap();
    assert_eq!(recovered.snapshot.unwrap(), snapshot(500));
    assert_eq!(wal.first_index(), LogIndex(501));
    assert_eq!(wal.last_index(), LogIndex(600));
}

// Proves a snapshot of several megabytes (written in paced chunks) round trips on disk.
#[test]
fn large_snapshot_round_trips_on_disk() {
    let temp = tempfile::tempdir().unwrap();
    let (mut wal, _) = Wal::open(temp.path(), real_options(64 * 1024)).unwrap();
    wal.append(&[entry(1, 1, 10), entry(2, 1, 10)]).unwrap();
    wal.persist().unwrap();
    let data: Vec<u8> = (0..3_500_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let snapshot = raft::Snapshot {
        configuration: raft::Configuration::default(),
        meta: raft::SnapshotMeta {
            index: LogIndex(2),
            term: Term(1),
        },
        data,
    };
    wal.save_snapshot(&snapshot).unwrap();
    drop(wal);
    let (_, recovered) = Wal::open(temp.path(), real_options(64 * 1024)).unwrap();
    assert_eq!(recovered.snapshot.unwrap(), snapshot);
}

// Proves every persist on the real backend reaches the disk with a segment sync: only a
// power cut shows a skipped msync (the page cache keeps the data through kill -9), so the
// syncs are counted instead. Each persist of new records must make at least one; a persist
// with nothing new makes none.
#[test]
fn every_persist_syncs_the_segment_on_the_real_backend() {
    for write in [wal::WriteMode::Pwrite, wal::WriteMode::Mmap] {
        every_persist_syncs_the_segment_with(write);
    }
}

fn every_persist_syncs_the_segment_with(write: wal::WriteMode) {
    let temp = tempfile::tempdir().unwrap();
    let options = WalOptions {
        backend: std::sync::Arc::new(wal::StdBackend::new(write)),
        ..real_options(1 << 20)
    };
    let (mut wal, _) = Wal::open(temp.path(), options).unwrap();
    let before = wal::StdBackend::segment_syncs_on_this_thread();
    for i in 1..=20u64 {
        let entry = raft::Entry {
            term: Term(1),
            index: LogIndex(i),
            kind: raft::EntryKind::Normal,
            data: vec![i as u8; 100].into(),
        };
        wal.append(&[entry]).unwrap();
        wal.persist().unwrap();
        let syncs = wal::StdBackend::segment_syncs_on_this_thread() - before;
        assert!(syncs >= i, "after {i} persists only {syncs} segment syncs");
    }
    let settled = wal::StdBackend::segment_syncs_on_this_thread();
    wal.persist().unwrap();
    assert_eq!(wal::StdBackend::segment_syncs_on_this_thread(), settled);
    wal.set_hard_state(HardState {
        term: Term(2),
        vote: NodeId(1),
        commit: LogIndex(20),
    })
    .unwrap();
    wal.persist().unwrap();
    assert!(wal::StdBackend::segment_syncs_on_this_thread() > settled);
}

// Proves a read checks the entry again (bits can rot on a running node's disk): a byte of
// an entry changed in the file after it was written and synced makes `entries` fail with
// `Corrupt` naming the segment, instead of handing out the damaged entry. The change to the
// file stands for rot that reached the page cache, which both write modes read through their
// map (a `pwrite`-mode WAL never writes its map, so it holds no copy of its own).
#[test]
fn a_read_back_entry_that_rotted_on_disk_is_refused() {
    for write in [wal::WriteMode::Pwrite, wal::WriteMode::Mmap] {
        a_read_back_entry_that_rotted_is_refused_with(write);
    }
}

fn a_read_back_entry_that_rotted_is_refused_with(write: wal::WriteMode) {
    use std::os::unix::fs::FileExt;
    let temp = tempfile::tempdir().unwrap();
    let options = WalOptions {
        backend: std::sync::Arc::new(wal::StdBackend::new(write)),
        ..real_options(1 << 20)
    };
    let (mut wal, _) = Wal::open(temp.path(), options).unwrap();
    let entries: Vec<_> = (1..=5u64)
        .map(|i| raft::Entry {
            term: Term(1),
            index: LogIndex(i),
            kind: raft::EntryKind::Normal,
            data: format!("the value of entry {i}").into_bytes().into(),
        })
        .collect();
    wal.append(&entries).unwrap();
    wal.persist().unwrap();
    assert_eq!(
        wal.entries(LogIndex(1), LogIndex(6), u64::MAX).unwrap(),
        entries
    );
    let segment = std::fs::read_dir(temp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wal"))
        .unwrap();
    let bytes = std::fs::read(&segment).unwrap();
    let at = bytes
        .windows(b"entry 3".len())
        .position(|w| w == b"entry 3")
        .unwrap();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.write_all_at(&[bytes[at] ^ 0x01], at as u64).unwrap();
    match wal.entries(LogIndex(1), LogIndex(6), u64::MAX) {
        Err(wal::WalError::Corrupt { file, .. }) => assert_eq!(file, segment),
        other => panic!("{write:?}: a rotted entry was read back: {other:?}"),
    }
    assert!(wal.entries(LogIndex(1), LogIndex(3), u64::MAX).is_ok());
}

// Proves a snapshot file written as its data is produced (`write_streamed`, in pieces of
// every size, across the real backend's 1 MiB chunks and direct IO's 4 KiB blocks) holds
// exactly the bytes of the same snapshot written whole, and reopens as that snapshot.
#[test]
fn streamed_snapshot_files_match_whole_ones() {
    let temp = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(temp.path(), real_options(1 << 20)).unwrap();
    let writer = wal.snapshot_writer();
    let configuration = raft::Configuration::new([NodeId(1), NodeId(2), NodeId(3)]);
    let mut rand = xorshift(9);
    let chunk = 1usize << 20;
    for (round, len) in [
        0,
        1,
        4095,
        4096,
        chunk - 70,
        chunk,
        chunk + 1,
        2 * chunk + 12345,
    ]
    .into_iter()
    .enumerate()
    {
        let data: Vec<u8> = (0..len).map(|_| rand() as u8).collect();
        let meta = raft::SnapshotMeta {
            index: LogIndex(round as u64 + 1),
            term: Term(2),
        };
        let mut pieces = xorshift(round as u64 + 1);
        let written = writer
            .write_streamed(meta, &configuration, len as u64, |out| {
                let mut rest = &data[..];
                while !rest.is_empty() {
                    let n = (pieces() as usize % 200_000).min(rest.len());
                    out(&rest[..n])?;
                    rest = &rest[n..];
                }
                Ok(())
            })
            .unwrap();
        let path = temp.path().join(format!(
            "snap-{:016x}-{:016x}.snap",
            meta.index.0, meta.term.0
        ));
        let file = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let whole = wal::format::encode_snapshot(&meta, &configuration, &data);
        assert!(
            file == whole,
            "{len} bytes of data: the streamed file differs"
        );
        let decoded = wal::format::decode_snapshot(&file).unwrap();
        assert_eq!(decoded.data, data);
        assert_eq!(written.meta(), meta);
    }
}

// Proves data that does not come to the length announced for it is refused, and leaves no
// file behind (neither the snapshot nor its temporary file).
#[test]
fn streamed_snapshot_of_the_wrong_length_leaves_no_file() {
    let temp = tempfile::tempdir().unwrap();
    let (wal, _) = Wal::open(temp.path(), real_options(1 << 20)).unwrap();
    let meta = raft::SnapshotMeta {
        index: LogIndex(5),
        term: Term(1),
    };
    let configuration = raft::Configuration::default();
    for (said, handed) in [(10u64, 9usize), (10, 11), (3 << 20, 3 << 20 | 1)] {
        let data = vec![7u8; handed];
        let error = wal
            .snapshot_writer()
            .write_streamed(meta, &configuration, said, |out| out(&data))
            .unwrap_err();
        assert!(error.to_string().contains("not the"), "{error}");
        let left: Vec<_> = std::fs::read_dir(temp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("snap-"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}
