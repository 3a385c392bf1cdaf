//! Each failure the daemon must tell apart gives its own error: a full disk, a failing msync,
//! a read-only, missing, non-directory or locked directory; IO errors are sticky.

mod common;

use common::*;
use raft::LogIndex;
use std::path::{Path, PathBuf};
use std::process::Command;
use wal::testing::{skip, Faults, MemBackend};
use wal::{Wal, WalError, WalOptions};

// Proves that ENOSPC when a new segment is needed returns NoSpace naming the file, changes
// nothing (the log, the files, durability of earlier batches) and does not poison the WAL:
// once space is back, writing continues.
#[test]
fn no_space_for_a_new_segment_is_returned_and_harmless() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, 4096).unwrap();
    let mut index = 1;
    backend.set_faults(Faults {
        no_space: true,
        ..Faults::default()
    });
    let error = loop {
        match wal.append(&[entry(index, 1, 300)]) {
            Ok(()) => index += 1,
            Err(error) => break error,
        }
    };
    assert!(matches!(error, WalError::NoSpace { .. }), "{error}");
    assert!(
        error.to_string().contains("0000000000000002.wal"),
        "{error}"
    );
    assert_eq!(wal.last_index(), LogIndex(index - 1));
    assert_eq!(segment_paths(&backend).len(), 1);
    assert!(!wal.is_poisoned());
    wal.persist().unwrap();
    backend.set_faults(Faults::default());
    wal.append(&[entry(index, 1, 300)]).unwrap();
    wal.persist().unwrap();
    drop(wal);
    let (wal, _) = open(&backend.crash(), 4096).unwrap();
    assert_eq!(wal.last_index(), LogIndex(index));
    assert_eq!(all_entries(&wal).len() as u64, index);
}

// Proves that a failing msync is returned as an msync error, poisons the WAL (every later
// write refused, persist never retried), and that nothing of the failed batch was acknowledged.
#[test]
fn failing_msync_poisons_the_wal() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, 16384).unwrap();
    wal.append(&[entry(1, 1, 10)]).unwrap();
    wal.persist().unwrap();
    wal.append(&[entry(2, 1, 10)]).unwrap();
    backend.set_faults(Faults {
        fail_sync: true,
        ..Faults::default()
    });
    let error = wal.persist().unwrap_err();
    assert!(matches!(error, WalError::Io { op: "msync", .. }), "{error}");
    assert!(wal.is_poisoned());
    backend.set_faults(Faults::default());
    let syncs = backend.sync_count();
    for result in [
        wal.persist(),
        wal.append(&[entry(3, 1, 10)]),
        wal.set_hard_state(Default::default()),
    ] {
        let error = result.unwrap_err();
        assert!(matches!(error, WalError::Poisoned { .. }), "{error}");
        assert!(error.to_string().contains("msync"), "{error}");
    }
    assert_eq!(
        backend.sync_count(),
        syncs,
        "a poisoned WAL must not sync again"
    );
    drop(wal);
    let (wal, _) = open(&backend.crash(), 16384).unwrap();
    assert_eq!(wal.last_index(), LogIndex(1));
}

// Proves a read-only directory (EROFS/EACCES on the lock file) gives ReadOnly naming the dir.
// On the real file system as well: a directory without write permission (EACCES), or where
// privileges ignore permissions (root), a read-only tmpfs mounted on it (EROFS).
#[test]
fn read_only_directory() {
    let backend = MemBackend::with_dir(&dir());
    backend.set_faults(Faults {
        read_only: true,
        ..Faults::default()
    });
    let error = open(&backend, 4096).err().expect("must fail");
    assert!(matches!(error, WalError::ReadOnly { .. }), "{error}");
    assert!(
        error.to_string().contains("/wal is not writable"),
        "{error}"
    );

    use std::os::unix::fs::PermissionsExt;
    let temp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(temp.path(), std::fs::Permissions::from_mode(0o555)).unwrap();
    let privileged = std::fs::write(temp.path().join("probe"), b"").is_ok();
    let _mount = match privileged {
        false => None,
        true => match ReadOnlyMount::new(temp.path()) {
            Some(mount) => Some(mount),
            None => {
                skip("read_only_directory: permissions do not bind here and a read-only tmpfs cannot be mounted; the real file system case is untested");
                return;
            }
        },
    };
    let error = Wal::open(temp.path(), WalOptions::default())
        .err()
        .expect("must fail");
    assert!(matches!(error, WalError::ReadOnly { .. }), "{error}");
}

/// A read-only tmpfs mounted on a directory for as long as this lives.
struct ReadOnlyMount(PathBuf);

impl ReadOnlyMount {
    fn new(dir: &Path) -> Option<ReadOnlyMount> {
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "ro,size=1m", "tmpfs"])
            .arg(dir)
            .output()
            .is_ok_and(|out| out.status.success())
            .then(|| ReadOnlyMount(dir.to_path_buf()))
    }
}

impl Drop for ReadOnlyMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

// Proves a missing directory and a path that is a file give their own errors (real fs).
#[test]
fn missing_directory_and_not_a_directory() {
    let temp = tempfile::tempdir().unwrap();
    let missing = temp.path().join("nope");
    let error = Wal::open(&missing, WalOptions::default())
        .err()
        .expect("must fail");
    assert!(matches!(error, WalError::DirMissing { .. }), "{error}");
    assert!(error.to_string().contains("does not exist"), "{error}");
    let file = temp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let error = Wal::open(&file, WalOptions::default())
        .err()
        .expect("must fail");
    assert!(matches!(error, WalError::NotADirectory { .. }), "{error}");
}

// Proves a second open of a locked directory fails with Locked naming the holder's pid, and
// that the lock goes with the first WAL (real fs, flock).
#[test]
fn locked_directory_names_the_holder() {
    let temp = tempfile::tempdir().unwrap();
    let (first, _) = Wal::open(temp.path(), WalOptions::default()).unwrap();
    let error = Wal::open(temp.path(), WalOptions::default())
        .err()
        .expect("must fail");
    match &error {
        WalError::Locked { holder_pid, .. } => assert_eq!(*holder_pid, Some(std::process::id())),
        other => panic!("expected Locked, got {other}"),
    }
    assert!(
        error
            .to_string()
            .contains(&format!("locked by process {}", std::process::id())),
        "{error}"
    );
    drop(first);
    Wal::open(temp.path(), WalOptions::default()).unwrap();
}

// Proves the append contract's typed errors: gaps, compacted indices, term regressions,
// overwriting committed entries, and hard-state term regressions; none of them poisons the WAL.
#[test]
fn append_contract_errors() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, 16384).unwrap();
    wal.append(&[entry(1, 2, 4), entry(2, 2, 4)]).unwrap();
    let error = wal.append(&[entry(4, 2, 4)]).unwrap_err();
    assert!(
        matches!(
            error,
            WalError::NotContiguous {
                expected: LogIndex(3),
                found: LogIndex(4)
            }
        ),
        "{error}"
    );
    let error = wal.append(&[entry(3, 2, 4), entry(5, 2, 4)]).unwrap_err();
    assert!(matches!(error, WalError::NotContiguous { .. }), "{error}");
    let error = wal.append(&[entry(3, 1, 4)]).unwrap_err();
    assert!(matches!(error, WalError::TermRegression { .. }), "{error}");
    wal.set_hard_state(raft::HardState {
        term: raft::Term(3),
        ..Default::default()
    })
    .unwrap();
    let error = wal
        .set_hard_state(raft::HardState {
            term: raft::Term(2),
            ..Default::default()
        })
        .unwrap_err();
    assert!(
        matches!(error, WalError::HardStateRegression { .. }),
        "{error}"
    );
    let state = raft::HardState {
        term: raft::Term(3),
        commit: LogIndex(2),
        ..Default::default()
    };
    wal.set_hard_state(state).unwrap();
    let error = wal.append(&[entry(2, 3, 4)]).unwrap_err();
    assert!(
        matches!(error, WalError::TruncatesCommitted { .. }),
        "{error}"
    );
    wal.persist().unwrap();
    let meta = raft::SnapshotMeta {
        index: LogIndex(1),
        term: raft::Term(2),
    };
    wal.save_snapshot(&raft::Snapshot {
        meta,
        configuration: raft::Configuration::default(),
        data: vec![],
    })
    .unwrap();
    let error = wal.append(&[entry(1, 2, 4)]).unwrap_err();
    assert!(matches!(error, WalError::Compacted { .. }), "{error}");
    let error = wal
        .save_snapshot(&raft::Snapshot {
            meta,
            configuration: raft::Configuration::default(),
            data: vec![],
        })
        .unwrap_err();
    assert!(matches!(error, WalError::SnapshotStale { .. }), "{error}");
    assert!(!wal.is_poisoned());
}

// Proves that a full disk met while the next segment is prepared on the helper thread is not
// an error by itself: the rollover that finds no spare tries again itself and returns NoSpace
// like any other, nothing is lost, and writing continues once space is back.
#[test]
fn no_space_while_preparing_the_next_segment_is_returned_at_rollover() {
    let (backend, options, mut wal) = open_with_helper_threads();
    // The spare is being prepared now; take it, then make the disk full for the next one.
    let mut index = fill_to_segments(&mut wal, &backend, 2);
    backend.set_faults(Faults {
        no_space: true,
        ..Faults::default()
    });
    let error = loop {
        match wal.append(&[entry(index, 1, 300)]) {
            Ok(()) => {
                wal.persist().unwrap();
                index += 1;
            }
            Err(error) => break error,
        }
    };
    // The helper may or may not have finished a spare before the disk filled up; either way
    // the first rollover without one fails, naming the segment it could not create.
    assert!(matches!(error, WalError::NoSpace { .. }), "{error}");
    let next = format!("{:016x}.wal", segment_paths(&backend).len() + 1);
    assert!(error.to_string().contains(&next), "{error}");
    assert!(!wal.is_poisoned());
    backend.set_faults(Faults::default());
    wal.append(&[entry(index, 1, 300)]).unwrap();
    wal.persist().unwrap();
    drop(wal);
    assert!(
        backend
            .file_names()
            .iter()
            .all(|p| !p.ends_with("next-segment.tmp")),
        "{:?}",
        backend.file_names()
    );
    let (wal, _) = Wal::open(dir(), options).unwrap();
    assert_eq!(wal.last_index(), LogIndex(index));
    assert_eq!(all_entries(&wal).len() as u64, index);
}

/// A WAL of 4 KiB segments in memory that prepares the next segment on a helper thread.
fn open_with_helper_threads() -> (MemBackend, WalOptions, Wal) {
    let backend = MemBackend::with_dir(&dir());
    let options = WalOptions {
        helper_threads: true,
        ..options(&backend, 4096)
    };
    let (wal, _) = Wal::open(dir(), options.clone()).unwrap();
    (backend, options, wal)
}

/// Appends and persists 300-byte entries from index 1 until the WAL has `segments` segment
/// files; returns the next index.
fn fill_to_segments(wal: &mut Wal, backend: &MemBackend, segments: usize) -> u64 {
    let mut index = 1;
    while segment_paths(backend).len() < segments {
        wal.append(&[entry(index, 1, 300)]).unwrap();
        wal.persist().unwrap();
        index += 1;
    }
    index
}
