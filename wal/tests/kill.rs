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
/// Set: the child's next segment is never finished (`wal::testing::HoldAhead`), so every
/// rollover creates its segment unfilled.
const CHILD_HOLD_ENV: &str = "WAL_KILL_TEST_HOLD_SPARE";

fn options(write: wal::WriteMode) -> WalOptions {
    WalOptions {
        segment_bytes: 256 * 1024,
        backend: std::sync::Arc::new(wal::StdBackend::new(write)),
        ..WalOptions::default()
    }
}

fn held_options(write: wal::WriteMode) -> WalOptions {
    let real = options(write);
    WalOptions {
        backend: std::sync::Arc::new(wal::testing::HoldAhead::new(real.backend.clone())),
        ..real
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
    let options = match std::env::var_os(CHILD_HOLD_ENV) {
        Some(_) => held_options(write),
        None => options(write),
    };
    let (mut wal, _) = Wal::open(&dir, options).unwrap();
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
        if wal.segments_unfilled() > 0 {
            println!("unfilled {}", wal.segments_unfilled());
        }
    }
}

// Proves, with four kill -9 rounds against one directory, the child writing with `pwrite`
// and `mmap` in turn: after each, the WAL opens (with the other write mode), holds every
// index the child printed (persisted), and every entry is intact. With `pwrite`, bytes not
// yet copied to the file live only in the process's staging buffer and die with it, so a sync
// (whole or split) that forgot to copy them loses what it reported persisted. In the last two
// rounds the child's next segment is never finished, so its rollovers create unfilled
// segments (unwritten extents) and the kill leaves a half-prepared spare file behind.
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
        let mut child = Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "child_appends_until_killed",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, temp.path())
            .env(CHILD_WRITE_ENV, write.name());
        if round >= 2 {
            child.env(CHILD_HOLD_ENV, "1");
        }
        let mut child = child.stdout(Stdio::piped()).spawn().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let (mut persisted, mut unfilled) = (0u64, 0u64);
        let mut read = |line: String| match line.trim().strip_prefix("unfilled ") {
            Some(count) => unfilled = count.parse().unwrap(),
            None => persisted = line.trim().parse().unwrap_or(persisted),
        };
        let start = Instant::now();
        // Let it roll over a few segments, then kill it mid-flight.
        while start.elapsed() < Duration::from_millis(300) {
            match lines.next() {
                Some(Ok(line)) => read(line),
                _ => break,
            }
        }
        child.kill().unwrap();
        lines.map_while(Result::ok).for_each(&mut read);
        child.wait().unwrap();
        assert!(persisted > 0, "round {round}: the child persisted nothing");
        if round >= 2 {
            assert!(
                unfilled > 0,
                "round {round}: no rollover created an unfilled segment"
            );
        }
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
