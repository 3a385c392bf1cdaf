//! Rollovers that do not wait for the next segment's zero-fill: when the segment prepared
//! ahead is unfinished (appends outran its paced fill), a rollover creates its segment
//! unfilled (preallocated only), the spare goes on and a later rollover takes it, and every
//! persisted entry survives a reopen and a crash, on the in-memory backend and on disk in
//! both write modes.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use raft::LogIndex;
use wal::testing::{HoldAhead, MemBackend};
use wal::{Backend, Pace, Wal, WalOptions, WriteMode};

const SPARE: &str = "next-segment.tmp";
const ENTRY_BYTES: usize = 300;

fn held_options(inner: Arc<dyn Backend>, segment_bytes: u64) -> (HoldAhead, WalOptions) {
    let hold = HoldAhead::new(inner);
    let options = WalOptions {
        segment_bytes,
        repair: false,
        backend: Arc::new(hold.clone()),
        helper_threads: true,
    };
    (hold, options)
}

/// Appends and persists batches of three entries from `next` while `more` holds; returns
/// the next index.
fn fill_while(wal: &mut Wal, mut next: u64, mut more: impl FnMut(&Wal) -> bool) -> u64 {
    while more(wal) {
        let batch: Vec<_> = (next..next + 3).map(|i| entry(i, 1, ENTRY_BYTES)).collect();
        wal.append(&batch).unwrap();
        wal.persist().unwrap();
        next += 3;
    }
    next
}

fn expected(next: u64) -> Vec<raft::Entry> {
    (1..next).map(|i| entry(i, 1, ENTRY_BYTES)).collect()
}

/// Releases the held preparations if the test is still running after a minute, so a
/// rollover that waits for the spare fails the test's assertions instead of hanging it.
struct Watchdog(Arc<AtomicBool>);

impl Watchdog {
    fn start(hold: &HoldAhead) -> Watchdog {
        let done = Arc::new(AtomicBool::new(false));
        let (hold, flag) = (hold.clone(), done.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            while !flag.load(Ordering::Acquire) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            hold.release();
        });
        Watchdog(done)
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

fn pace_of(backend: &MemBackend, path: &Path) -> Option<Pace> {
    let paces = backend.segment_paces();
    paces
        .into_iter()
        .find(|(p, _)| p == path)
        .map(|(_, pace)| pace)
}

fn ahead_count(backend: &MemBackend) -> usize {
    let paces = backend.segment_paces();
    paces
        .iter()
        .filter(|(_, pace)| matches!(pace, Pace::Ahead(_)))
        .count()
}

fn check_crash(crashed: &MemBackend, next: u64, context: &str) {
    let (wal, _) = open(crashed, 4096).unwrap();
    assert_eq!(wal.last_index(), LogIndex(next - 1), "{context}");
    assert_eq!(all_entries(&wal), expected(next), "{context}");
    assert!(
        crashed.file_names().iter().all(|p| !p.ends_with(SPARE)),
        "{context}: the spare survived an open"
    );
}

// Proves on the in-memory backend, with the spare's preparation held unfinished: three
// rollovers create their segments unfilled (recorded as `Pace::Unfilled`, counted by the
// WAL) without waiting, while the one spare stays in preparation under its own name; a
// power cut then (with or without torn unsynced sectors, the spare's file left behind)
// recovers every persisted entry; once the spare is finished a later rollover takes it
// (no new segment is created for it), and a crash after that loses nothing either.
#[test]
fn a_rollover_with_an_unfinished_spare_creates_an_unfilled_segment() {
    let backend = MemBackend::with_dir(&dir());
    let (hold, options) = held_options(Arc::new(backend.clone()), 4096);
    let watchdog = Watchdog::start(&hold);
    let (mut wal, _) = Wal::open(dir(), options).unwrap();
    let next = fill_while(&mut wal, 1, |wal| wal.segment_count() < 4);
    assert_eq!(wal.segments_unfilled(), 3);
    for id in 2..=4 {
        let path = path_in(&dir(), &format!("{id:016x}.wal"));
        let pace = pace_of(&backend, &path);
        assert!(matches!(pace, Some(Pace::Unfilled)), "{id}: {pace:?}");
    }
    hold.wait_started(1);
    assert_eq!(ahead_count(&backend), 1, "{:?}", backend.segment_paces());
    assert!(backend.file_names().contains(&path_in(&dir(), SPARE)));
    // An unsynced batch in the unfilled newest segment, then a power cut.
    let tail: Vec<_> = (next..next + 3).map(|i| entry(i, 1, ENTRY_BYTES)).collect();
    wal.append(&tail).unwrap();
    check_crash(&backend.crash(), next, "crash while the spare is held");
    for seed in 0..8 {
        let context = format!("torn crash while the spare is held, seed {seed}");
        check_crash(&backend.crash_torn(seed), next, &context);
    }
    wal.persist().unwrap();
    let next = next + 3;

    hold.release();
    hold.wait_finished(1);
    let unfilled = wal.segments_unfilled();
    let segments = wal.segment_count();
    // The thread may take a moment to be done after its call returned; a rollover meanwhile
    // is unfilled again, so some are allowed.
    let newest = |wal: &Wal| path_in(&dir(), &format!("{:016x}.wal", wal.segment_count()));
    let next = fill_while(&mut wal, next, |wal| {
        pace_of(&backend, &newest(wal)).is_some() && wal.segment_count() < segments + 1000
    });
    assert!(
        pace_of(&backend, &newest(&wal)).is_none(),
        "the spare was never taken"
    );
    assert_eq!(
        wal.segments_unfilled() - unfilled,
        (wal.segment_count() - segments - 1) as u64
    );
    // And a new spare is being prepared.
    hold.wait_started(2);
    assert_eq!(ahead_count(&backend), 2, "{:?}", backend.segment_paces());
    check_crash(&backend.crash(), next, "crash after the spare was taken");
    drop(wal);
    drop(watchdog);
    check_crash(&backend.crash(), next, "crash after close");
}

// Proves that with no helper thread the first segment of an empty WAL is zero-filled at
// full speed (`Pace::Now`) and every rollover creates its segment unfilled: nothing else
// could fill one ahead, and filling it inline would make the writer wait for it.
#[test]
fn without_helper_threads_rollovers_are_unfilled() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, 4096).unwrap();
    let next = fill_while(&mut wal, 1, |wal| wal.segment_count() < 3);
    let paces = backend.segment_paces();
    assert_eq!(paces.len(), 3, "{paces:?}");
    assert!(matches!(paces[0].1, Pace::Now), "{paces:?}");
    assert!(
        paces[1..].iter().all(|(_, p)| matches!(p, Pace::Unfilled)),
        "{paces:?}"
    );
    assert_eq!(wal.segments_unfilled(), 2);
    drop(wal);
    check_crash(&backend.crash(), next, "after close");
}

// Proves on disk, in both write modes, that rollovers with the spare held create unfilled
// segments (fully allocated, reading as zeros past what was written) that take appends
// through a shared map (`mmap`) or `pwrite` alike; that the spare, released, is taken by a
// later rollover; and that the directory reopens in the other write mode with every entry.
#[test]
fn unfilled_segments_on_disk_reopen_in_both_write_modes() {
    use std::os::unix::fs::MetadataExt;
    const SEGMENT_BYTES: u64 = 64 * 1024;
    for (write, reopen) in [
        (WriteMode::Mmap, WriteMode::Pwrite),
        (WriteMode::Pwrite, WriteMode::Mmap),
    ] {
        let temp = tempfile::tempdir().unwrap();
        let (hold, options) = held_options(Arc::new(wal::StdBackend::new(write)), SEGMENT_BYTES);
        let watchdog = Watchdog::start(&hold);
        let (mut wal, _) = Wal::open(temp.path(), options).unwrap();
        let next = fill_while(&mut wal, 1, |wal| wal.segment_count() < 4);
        assert_eq!(wal.segments_unfilled(), 3, "{write:?}");
        for path in &wal_files(temp.path())[1..] {
            let metadata = std::fs::metadata(path).unwrap();
            assert_eq!(metadata.len(), SEGMENT_BYTES);
            assert!(
                metadata.blocks() * 512 >= SEGMENT_BYTES,
                "every block allocated"
            );
        }
        // The newest, unfilled segment reads as zeros after its last record.
        let newest = std::fs::read(wal_files(temp.path()).last().unwrap()).unwrap();
        let tail = newest.len() - 4096;
        assert!(newest[tail..].iter().all(|&b| b == 0), "{write:?}");

        hold.release();
        hold.wait_finished(1);
        let unfilled = wal.segments_unfilled();
        let segments = wal.segment_count();
        let next = fill_while(&mut wal, next, |wal| {
            wal.segments_unfilled() - unfilled == (wal.segment_count() - segments) as u64
                && wal.segment_count() < segments + 100
        });
        assert!(
            wal.segments_unfilled() - unfilled < (wal.segment_count() - segments) as u64,
            "{write:?}: the finished spare was never taken"
        );
        drop(wal);
        drop(watchdog);
        assert!(!temp.path().join(SPARE).exists());
        let reopened = WalOptions {
            segment_bytes: SEGMENT_BYTES,
            backend: Arc::new(wal::StdBackend::new(reopen)),
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(temp.path(), reopened).unwrap();
        assert_eq!(all_entries(&wal), expected(next), "{write:?}");
    }
}
