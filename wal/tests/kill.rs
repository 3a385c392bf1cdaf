//! A real process killed with SIGKILL in the middle of appending: everything it reported as
//! persisted survives, and the torn batch it was writing is truncated.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use raft::LogIndex;
use wal::{Wal, WalOptions};

const CHILD_ENV: &str = "WAL_KILL_TEST_DIR";
/// The write mode the child appends with ("pwrite" or "mmap").
const CHILD_WRITE_ENV: &str = "WAL_KILL_TEST_WRITE";

fn options(write: wal::WriteMode) -> WalOptions {
    WalOptions {
        segment_bytes: 256 * 1024,
        backend: std::sync::Arc::new(wal::StdBackend::new(write)),
        ..WalOptions::default()
    }
}

// The child half: runs only when the parent sets the environment variable. Appends batches of
// varying size forever, printing each last index once it is persisted.
#[test]
fn child_appends_until_killed() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let write = std::env::var(CHILD_WRITE_ENV).unwrap().parse().unwrap();
    let (mut wal, _) = Wal::open(&dir, options(write)).unwrap();
    let mut next = wal.last_index().get() + 1;
    let mut rand = xorshift(next);
    loop {
        let count = 1 + rand() % 64;
        let entries: Vec<_> = (next..next + count)
            .map(|i| entry(i, 1, (i % 300) as usize))
            .collect();
        wal.append(&entries).unwrap();
        // Every other batch persists the way the daemon does under load: the wait for the
        // disk split off and run on another thread (`persist_start` / `persist_finish`).
        match count % 2 {
            0 => wal.persist().unwrap(),
            _ => match wal.persist_start().unwrap() {
                Some(wait) => {
                    let waited = std::thread::spawn(move || wait.wait()).join().unwrap();
                    wal.persist_finish(waited).unwrap();
                }
                None => assert!(!wal.is_persisting()),
            },
        }
        next += count;
        println!("{}", next - 1);
    }
}

// Proves, with four kill -9 rounds against one directory, the child writing with `pwrite`
// and `mmap` in turn: after each, the WAL opens (with the other write mode), holds every
// index the child printed (persisted), and every entry is intact. With `pwrite`, bytes not
// yet copied to the file live only in the process's staging buffer and die with it, so a sync
// (whole or split) that forgot to copy them loses what it reported persisted.
#[test]
fn sigkill_keeps_everything_persisted() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let temp = tempfile::tempdir().unwrap();
    for round in 0..4 {
        let (write, reopen) = if round % 2 == 0 {
            (wal::WriteMode::Pwrite, wal::WriteMode::Mmap)
        } else {
            (wal::WriteMode::Mmap, wal::WriteMode::Pwrite)
        };
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_appends_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, temp.path())
            .env(CHILD_WRITE_ENV, write.name())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut persisted = 0u64;
        let start = Instant::now();
        // Let it roll over a few segments, then kill it mid-flight.
        while start.elapsed() < Duration::from_millis(300) {
            match lines.next() {
                Some(Ok(line)) => persisted = line.trim().parse().unwrap_or(persisted),
                _ => break,
            }
        }
        child.kill().unwrap();
        for line in lines.map_while(Result::ok) {
            persisted = line.trim().parse().unwrap_or(persisted);
        }
        child.wait().unwrap();
        assert!(persisted > 0, "round {round}: the child persisted nothing");
        let (wal, _) = Wal::open(temp.path(), options(reopen)).unwrap();
        assert!(
            wal.last_index() >= LogIndex(persisted),
            "round {round}: lost persisted entries written with {write:?}"
        );
        let all = all_entries(&wal);
        for (i, e) in all.iter().enumerate() {
            assert_eq!(
                *e,
                entry(i as u64 + 1, 1, ((i as u64 + 1) % 300) as usize),
                "round {round}"
            );
        }
    }
}
