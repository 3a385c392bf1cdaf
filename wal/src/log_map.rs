//! The in-memory map from log index to (term, segment, offset): all the WAL keeps in memory
//! about entries. Recovery replays records into it; the write path updates it.

use std::collections::VecDeque;

use raft::{LogIndex, SnapshotMeta, Term};

/// Where an entry's record lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Location {
    pub term: Term,
    pub segment_id: u64,
    pub offset: usize,
}

/// Entries `start .. start + locations.len()` and the snapshot before them.
///
/// Invariant outside recovery: `start == snapshot.index + 1`, and terms never decrease along
/// `locations`.
#[derive(Debug)]
pub(crate) struct LogMap {
    pub snapshot: SnapshotMeta,
    /// The index of `locations[0]`, or the next index to come when empty.
    pub start: u64,
    pub locations: VecDeque<Location>,
}

impl LogMap {
    pub fn new(start: u64) -> LogMap {
        LogMap {
            snapshot: SnapshotMeta::default(),
            start,
            locations: VecDeque::new(),
        }
    }

    /// The index the next entry must have.
    pub fn next(&self) -> u64 {
        self.start + self.locations.len() as u64
    }

    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.next() - 1)
    }

    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.location(index).map(|location| location.term)
    }

    pub fn location(&self, index: LogIndex) -> Option<&Location> {
        let offset = index.get().checked_sub(self.start)?;
        self.locations.get(usize::try_from(offset).ok()?)
    }

    /// Discards entries at and after `from`. Below `start` everything goes and the log restarts
    /// at `from` (during recovery the entries before the first segment are unknown).
    pub fn truncate_from(&mut self, from: u64) {
        if from <= self.start {
            self.locations.clear();
            self.start = from;
        } else if from < self.next() {
            self.locations.truncate((from - self.start) as usize);
        }
    }

    /// Appends the entry `index`, which must be the next one, with a term no lower than the last.
    pub fn push(&mut self, index: u64, location: Location) -> Result<(), String> {
        if index != self.next() {
            return Err(format!(
                "entry {index} does not follow {} (a gap in the log)",
                self.next() - 1
            ));
        }
        if let Some(last) = self.locations.back() {
            if location.term < last.term {
                return Err(format!(
                    "entry {index} has term {}, lower than the term {} of the entry before it",
                    location.term, last.term
                ));
            }
        }
        self.locations.push_back(location);
        Ok(())
    }

    /// Applies a durable snapshot through `meta` (Raft §7): entries up to it go; if the log does
    /// not hold the snapshot's last entry with the same term, the whole log goes.
    pub fn compact(&mut self, meta: SnapshotMeta) {
        if meta.index.get() < self.start {
            // Entries before `start` are unknown during recovery; nothing to drop.
        } else if self.term(meta.index) == Some(meta.term) {
            let drop = (meta.index.get() + 1 - self.start).min(self.locations.len() as u64);
            self.locations.drain(..drop as usize);
            self.start = meta.index.get() + 1;
        } else {
            self.locations.clear();
            self.start = meta.index.get() + 1;
        }
        if meta.index > self.snapshot.index {
            self.snapshot = meta;
        }
    }
}
