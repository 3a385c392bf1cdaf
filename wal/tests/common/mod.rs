//! Helpers shared by the WAL's integration tests: entries, an oracle model of the durable
//! state, and comparisons against it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raft::{Entry, EntryKind, HardState, LogIndex, NodeId, SnapshotMeta, Term};
use wal::testing::MemBackend;
use wal::{Wal, WalOptions};

pub fn dir() -> PathBuf {
    PathBuf::from("/wal")
}

/// An entry whose data is derived from its index, term and length (so any mix-up shows).
pub fn entry(index: u64, term: u64, data_bytes: usize) -> Entry {
    let data = (0..data_bytes)
        .map(|i| (index as usize * 31 + term as usize * 7 + i) as u8 | 1)
        .collect();
    Entry {
        index: LogIndex(index),
        term: Term(term),
        kind: EntryKind::Normal,
        data,
    }
}

pub fn options(backend: &MemBackend, segment_bytes: u64) -> WalOptions {
    WalOptions {
        segment_bytes,
        repair: false,
        backend: Arc::new(backend.clone()),
        helper_threads: false,
    }
}

pub fn open(
    backend: &MemBackend,
    segment_bytes: u64,
) -> Result<(Wal, wal::Recovered), wal::WalError> {
    Wal::open(dir(), options(backend, segment_bytes))
}

pub fn all_entries(wal: &Wal) -> Vec<Entry> {
    wal.entries(wal.first_index(), wal.last_index().next(), u64::MAX)
        .unwrap()
}

/// The naive oracle: the whole log and hard state as plain values.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Model {
    pub snapshot: SnapshotMeta,
    pub entries: Vec<Entry>,
    pub hard_state: HardState,
}

impl Model {
    pub fn last_index(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.index.get(), |e| e.index.get())
    }

    pub fn last_term(&self) -> u64 {
        self.entries
            .last()
            .map_or(self.snapshot.term.get(), |e| e.term.get())
    }

    pub fn append(&mut self, entries: &[Entry]) {
        let first = entries[0].index.get();
        self.entries.retain(|e| e.index.get() < first);
        self.entries.extend_from_slice(entries);
    }

    pub fn snapshot_at(&mut self, index: u64) -> SnapshotMeta {
        let term = self
            .entries
            .iter()
            .find(|e| e.index.get() == index)
            .expect("index in the log")
            .term;
        let meta = SnapshotMeta {
            index: LogIndex(index),
            term,
        };
        self.entries.retain(|e| e.index.get() > index);
        self.snapshot = meta;
        meta
    }

    /// Asserts that `wal` holds exactly this state.
    pub fn check(&self, wal: &Wal, context: &str) {
        assert_eq!(wal.snapshot_meta(), self.snapshot, "{context}: snapshot");
        assert_eq!(wal.hard_state(), self.hard_state, "{context}: hard state");
        assert_eq!(
            wal.last_index().get(),
            self.last_index(),
            "{context}: last index"
        );
        assert_eq!(all_entries(wal), self.entries, "{context}: entries");
    }
}

/// A batch for a random workload: maybe overwrite a suffix, then append some entries, maybe a
/// new hard state. `rand` returns uniform u64s.
pub fn random_batch(
    model: &Model,
    rand: &mut impl FnMut() -> u64,
    data_max: usize,
) -> (Vec<Entry>, Option<HardState>) {
    let last = model.last_index();
    let floor = model
        .snapshot
        .index
        .get()
        .max(model.hard_state.commit.get());
    let first = if last > floor && rand().is_multiple_of(4) {
        last - rand() % (last - floor).min(3)
    } else {
        last + 1
    };
    let mut term = model.hard_state.term.get().max(1);
    if rand().is_multiple_of(5) {
        term += 1;
    }
    let count = 1 + rand() % 6;
    let entries = (0..count)
        .map(|i| entry(first + i, term, (rand() % (data_max as u64 + 1)) as usize))
        .collect();
    let hard_state =
        (term != model.hard_state.term.get() || rand().is_multiple_of(3)).then(|| HardState {
            term: Term(term),
            vote: NodeId(1 + rand() % 3),
            commit: LogIndex(
                model
                    .hard_state
                    .commit
                    .get()
                    .max(first.saturating_sub(1))
                    .min(first - 1),
            ),
        });
    (entries, hard_state)
}

pub fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

pub fn segment_paths(backend: &MemBackend) -> Vec<PathBuf> {
    backend
        .file_names()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect()
}

pub fn snapshot_paths(backend: &MemBackend) -> Vec<PathBuf> {
    backend
        .file_names()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect()
}

pub fn path_in(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The segment files in a directory on disk, in order.
pub fn wal_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    files.sort();
    files
}
