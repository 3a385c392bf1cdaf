//! The in-memory Raft log: entries after the latest snapshot, plus the markers that say how
//! much of it is committed, handed out for application, applied, and durable.

use crate::types::{Entry, LogIndex, SnapshotMeta, Term};
use std::collections::VecDeque;

/// The most entries `RaftLog::slice` reserves room for before it looks at their sizes.
const SLICE_RESERVE_MAX: u64 = 1024;

/// The log. Entries at or below `snapshot.index` have been compacted away.
///
/// Invariants (checked by [`RaftLog::check_invariants`]):
/// - `entries[k].index == snapshot.index + 1 + k` (contiguous, starting after the snapshot);
/// - `snapshot.index <= commit`, `applied <= applying <= commit <= last_index()`;
/// - `persisted <= last_index()` and `persisted < unstable_from <= last_index() + 1`.
#[derive(Debug)]
pub(crate) struct RaftLog {
    /// Where the latest snapshot ends; the log's entries start right after it.
    pub snapshot: SnapshotMeta,
    entries: VecDeque<Entry>,
    /// Highest index known committed. Never regresses.
    pub commit: LogIndex,
    /// Highest index the host has applied (acknowledged by `advance`).
    pub applied: LogIndex,
    /// Highest index handed to the host for application (≥ `applied`).
    pub applying: LogIndex,
    /// Highest index known durable on this node's disk.
    pub persisted: LogIndex,
    /// First index not yet handed to the host for persistence.
    pub unstable_from: LogIndex,
    /// Entries compacted away but not freed yet: `collect_garbage` frees them a slice at a
    /// time, so compacting tens of thousands of entries (one allocation each) does not stall
    /// the host for milliseconds in one go.
    garbage: VecDeque<VecDeque<Entry>>,
}

/// How many compacted entries `collect_garbage` frees per call by default.
pub(crate) const GARBAGE_PER_CALL: usize = 1024;

impl RaftLog {
    /// A log restored from a snapshot point and the durable entries after it.
    pub fn restore(snapshot: SnapshotMeta, entries: Vec<Entry>, commit: LogIndex) -> RaftLog {
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index.0,
                snapshot.index.0 + 1 + k as u64,
                "restored entries are not contiguous after the snapshot at {}",
                snapshot.index
            );
        }
        let last = LogIndex(snapshot.index.0 + entries.len() as u64);
        let commit = commit.max(snapshot.index).min(last);
        RaftLog {
            snapshot,
            entries: entries.into(),
            commit,
            applied: snapshot.index,
            applying: snapshot.index,
            persisted: last,
            unstable_from: last.next(),
            garbage: VecDeque::new(),
        }
    }

    pub fn first_index(&self) -> LogIndex {
        self.snapshot.index.next()
    }

    pub fn last_index(&self) -> LogIndex {
        LogIndex(self.snapshot.index.0 + self.entries.len() as u64)
    }

    pub fn last_term(&self) -> Term {
        self.entries.back().map_or(self.snapshot.term, |e| e.term)
    }

    /// The term of the entry at `index`, or `None` when it was compacted or does not exist.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        if index <= self.snapshot.index {
            return None;
        }
        self.entries
            .get((index.0 - self.snapshot.index.0 - 1) as usize)
    }

    /// Entries in `[lo, hi)`, at least one if any exist, stopping before `bytes_max` is passed.
    pub fn slice(&self, lo: LogIndex, hi: LogIndex, bytes_max: u64) -> Vec<Entry> {
        assert!(
            lo > self.snapshot.index,
            "slice from compacted index {lo} (snapshot at {})",
            self.snapshot.index
        );
        let hi = hi.min(self.last_index().next());
        // Sized for the range up front (bounded: `bytes_max` may stop it long before `hi`), so
        // a batch is one allocation rather than one per doubling.
        let wanted = hi.get().saturating_sub(lo.get()).min(SLICE_RESERVE_MAX);
        let mut out = Vec::with_capacity(wanted as usize);
        let mut bytes = 0u64;
        let mut index = lo;
        while index < hi {
            let e = self.entry(index).expect("index within the log");
            bytes += e.payload_bytes();
            if !out.is_empty() && bytes > bytes_max {
                break;
            }
            out.push(e.clone());
            index = index.next();
        }
        out
    }

    /// §5.4.1: is a log ending at (`last_index`, `last_term`) at least as up to date as ours?
    pub fn is_up_to_date(&self, last_index: LogIndex, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// The last index at or below `from` whose term is at most `term`, with that term (see
    /// `ConflictHint`). Stops at the snapshot, whose entries are committed and match.
    pub fn last_at_or_below(&self, from: LogIndex, term: Term) -> (LogIndex, Term) {
        let mut index = from.min(self.last_index());
        loop {
            match self.term(index) {
                Some(t) if t <= term || index <= self.snapshot.index => return (index, t),
                Some(_) => index = index.prev(),
                None => return (self.snapshot.index, self.snapshot.term),
            }
        }
    }

    /// A leader's append of a new entry.
    pub fn push(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index().next(),
            "appended out of order"
        );
        assert!(entry.term >= self.last_term(), "appended a term regression");
        self.entries.push_back(entry);
    }

    /// A follower's append after a successful consistency check at `prev`: skips entries it
    /// already holds, truncates at the first conflict, appends the rest. Returns the index of
    /// the last entry the leader sent (the follower's log matches the leader's up to it), and
    /// the first index written when the log changed (everything from it on is new).
    pub fn merge(&mut self, prev: LogIndex, entries: Vec<Entry>) -> (LogIndex, Option<LogIndex>) {
        let last_new = LogIndex(prev.0 + entries.len() as u64);
        let mut conflict = None;
        for (k, e) in entries.iter().enumerate() {
            assert_eq!(
                e.index.0,
                prev.0 + 1 + k as u64,
                "append entries not contiguous"
            );
            if e.index <= self.snapshot.index {
                continue; // Covered by our snapshot, hence committed and identical.
            }
            match self.term(e.index) {
                Some(t) if t == e.term => continue,
                Some(_) => {
                    conflict = Some(k);
                    break;
                }
                None => {
                    conflict = Some(k);
                    break;
                }
            }
        }
        let Some(k) = conflict else {
            return (last_new, None);
        };
        let from = entries[k].index;
        if from <= self.last_index() {
            self.truncate_from(from);
        }
        for e in entries.into_iter().skip(k) {
            self.push(e);
        }
        (last_new, Some(from))
    }

    /// Drops every entry at or after `index`. Committed entries are never dropped.
    fn truncate_from(&mut self, index: LogIndex) {
        assert!(
            index > self.commit,
            "truncating committed entry {index} (commit {})",
            self.commit
        );
        let keep = (index.0 - self.snapshot.index.0 - 1) as usize;
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(index);
        self.persisted = self.persisted.min(index.prev());
    }

    pub fn commit_to(&mut self, index: LogIndex) {
        assert!(index >= self.commit, "commit regressed");
        assert!(
            index <= self.last_index(),
            "commit {index} beyond last index {}",
            self.last_index()
        );
        self.commit = index;
    }

    /// Discards entries at or below `meta.index` after the service snapshotted them.
    pub fn compact(&mut self, meta: SnapshotMeta) {
        assert!(meta.index > self.snapshot.index && meta.index <= self.last_index());
        assert_eq!(self.term(meta.index), Some(meta.term));
        let drop = (meta.index.0 - self.snapshot.index.0) as usize;
        self.retire_front(drop);
        self.snapshot = meta;
    }

    /// Moves the first `count` entries out of the log into the garbage, without freeing them.
    ///
    /// The retired entries move into a deque of their own; the log's deque keeps its place and
    /// its capacity. (Splitting off the entries that stay instead copied the whole in-memory
    /// log into a new allocation at every trim: with 25,000 entries, 1.3 MB that malloc maps
    /// and unmaps each time, and a page fault per 4 KiB of it — 5-8 % of a node's CPU at
    /// 256 clients.)
    fn retire_front(&mut self, count: usize) {
        if count == 0 {
            return;
        }
        let retired: VecDeque<Entry> = self.entries.drain(..count).collect();
        self.garbage.push_back(retired);
    }

    /// Frees up to `budget` compacted entries.
    pub fn collect_garbage(&mut self, budget: usize) {
        let mut left = budget;
        while left > 0 {
            let Some(front) = self.garbage.front_mut() else {
                return;
            };
            let n = left.min(front.len());
            front.drain(..n);
            left -= n;
            if front.is_empty() {
                self.garbage.pop_front();
            }
        }
    }

    /// Compacted entries not freed yet.
    #[cfg(test)]
    pub fn garbage_len(&self) -> usize {
        self.garbage.iter().map(VecDeque::len).sum()
    }

    /// Installs a snapshot from the leader. When our log holds the snapshot's last entry the
    /// suffix after it is kept (§7: "retain log entries following it"); otherwise the whole
    /// log is replaced. Returns true when the log was discarded.
    pub fn install(&mut self, meta: SnapshotMeta) -> bool {
        assert!(
            meta.index > self.commit,
            "installing a snapshot behind commit"
        );
        let discard = self.term(meta.index) != Some(meta.term);
        if discard {
            self.entries.clear();
            self.unstable_from = meta.index.next();
            self.persisted = meta.index;
        } else {
            let drop = (meta.index.0 - self.snapshot.index.0) as usize;
            self.retire_front(drop);
            self.persisted = self.persisted.max(meta.index);
            self.unstable_from = self.unstable_from.max(meta.index.next());
        }
        self.snapshot = meta;
        self.commit = meta.index;
        discard
    }

    /// Entries not yet handed out for persistence; marks them handed out.
    pub fn take_unstable(&mut self) -> Vec<Entry> {
        let last = self.last_index();
        if self.unstable_from > last {
            return Vec::new();
        }
        let out = self.slice(self.unstable_from, last.next(), u64::MAX);
        self.unstable_from = last.next();
        out
    }

    /// The host reports entries through (`index`, `term`) durable. Ignored when the log was
    /// overwritten there since, because then the durable entry is not ours any more.
    pub fn persisted_to(&mut self, index: LogIndex, term: Term) {
        if index > self.persisted && index < self.unstable_from && self.term(index) == Some(term) {
            self.persisted = index;
        }
    }

    pub fn check_invariants(&self) {
        if let (Some(first), Some(last)) = (self.entries.front(), self.entries.back()) {
            assert_eq!(
                first.index,
                self.first_index(),
                "log does not start after snapshot"
            );
            assert_eq!(last.index, self.last_index(), "log has a gap");
        }
        assert!(self.snapshot.index <= self.commit, "snapshot beyond commit");
        assert!(self.applied <= self.applying, "applied beyond applying");
        assert!(
            self.applying <= self.commit,
            "applying {} beyond commit {}",
            self.applying,
            self.commit
        );
        assert!(
            self.commit <= self.last_index(),
            "commit {} beyond last index {}",
            self.commit,
            self.last_index()
        );
        assert!(self.persisted <= self.last_index(), "persisted beyond log");
        assert!(
            self.persisted < self.unstable_from && self.unstable_from <= self.last_index().next(),
            "persistence markers out of order"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;

    fn entries(from: u64, to: u64) -> Vec<Entry> {
        (from..=to)
            .map(|i| Entry {
                index: LogIndex(i),
                term: Term(1),
                kind: EntryKind::Normal,
                data: vec![i as u8; 16].into(),
            })
            .collect()
    }

    // Proves compaction moves entries out at once but frees them only a budget at a time,
    // and that the log reads the same throughout.
    #[test]
    fn compacted_entries_are_freed_a_slice_at_a_time() {
        let mut log = RaftLog::restore(SnapshotMeta::default(), entries(1, 5000), LogIndex(5000));
        log.applying = LogIndex(5000);
        log.applied = LogIndex(5000);
        log.compact(SnapshotMeta {
            index: LogIndex(4000),
            term: Term(1),
        });
        assert_eq!(log.first_index(), LogIndex(4001));
        assert_eq!(log.garbage_len(), 4000);
        log.check_invariants();
        for left in [3000, 2000, 1000, 0, 0] {
            log.collect_garbage(1000);
            assert_eq!(log.garbage_len(), left);
            assert_eq!(log.term(LogIndex(4001)), Some(Term(1)));
            assert_eq!(log.term(LogIndex(4000)), Some(Term(1)));
            assert_eq!(
                log.slice(LogIndex(4999), LogIndex(5001), u64::MAX),
                entries(4999, 5000)
            );
        }
        log.compact(SnapshotMeta {
            index: LogIndex(4500),
            term: Term(1),
        });
        log.compact(SnapshotMeta {
            index: LogIndex(4600),
            term: Term(1),
        });
        assert_eq!(log.garbage_len(), 600);
        log.collect_garbage(550);
        assert_eq!(log.garbage_len(), 50);
        log.collect_garbage(usize::MAX);
        assert_eq!(log.garbage_len(), 0);
        assert_eq!(log.first_index(), LogIndex(4601));
    }
}
