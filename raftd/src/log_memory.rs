//! How much of the applied log a node keeps in memory for followers that fall behind: the
//! newest `--log-memory-entries` applied entries, and of those no more than
//! `--log-memory-mib` of entry data, whichever bound bites first. Older entries stay in the
//! WAL until the next snapshot, and a leader reads them back from it for a follower that
//! needs them (`Host::fetch_entries`). A bound in entries alone let 25,000 entries of
//! 64 KiB hold 1.6 GB.
//!
//! [`LogMemory`] is bookkeeping only: the replica tells it each entry it applies and where
//! the core's in-memory log starts, and asks it where to trim; the trim itself is the
//! core's (`RawNode::trim`).

use raft::{LogIndex, SharedBytes};
use std::collections::VecDeque;

/// How many entries past its bound the in-memory log may grow before it is trimmed:
/// trimming in steps keeps the work per trim small and rare.
const TRIM_STEP_ENTRIES: u64 = 1024;

/// And by bytes: the log may hold an eighth more than its bound before it is trimmed.
const TRIM_STEP_BYTES_DIVISOR: u64 = 8;

/// The data bytes of the applied entries the core's in-memory log holds, and the bounds
/// they are trimmed to.
#[derive(Debug)]
pub struct LogMemory {
    entries_max: u64,
    bytes_max: u64,
    /// Data bytes of every entry applied since the node started: a running total.
    applied_bytes: u64,
    /// Each applied entry the in-memory log may still hold, oldest first: its index and
    /// `applied_bytes` before it was applied. The indices are consecutive (checked as they
    /// are pushed), and the byte totals never decrease.
    marks: VecDeque<(LogIndex, u64)>,
    /// The data of the entry [`LogMemory::held_bytes_of`] counted last, for its buffer.
    last_counted: Option<SharedBytes>,
}

impl LogMemory {
    /// Bookkeeping for a log that keeps at most `entries_max` applied entries and
    /// `bytes_max` bytes of their data in memory.
    pub fn new(entries_max: u64, bytes_max: u64) -> LogMemory {
        LogMemory {
            entries_max,
            bytes_max,
            applied_bytes: 0,
            marks: VecDeque::new(),
            last_counted: None,
        }
    }

    /// What keeping `data` (an applied entry's) in memory costs, to pass to
    /// [`LogMemory::applied`]: an entry's bytes may be a range of a larger buffer that it
    /// keeps allocated (the frames of one read: a client's requests, a leader's appends),
    /// so the first entry of a buffer counts the whole buffer and the ones after it that
    /// share it their own bytes. Counting ranges alone would let one small write per read
    /// among large reads keep a whole read buffer each, far past `--log-memory-mib`.
    pub fn held_bytes_of(&mut self, data: &SharedBytes) -> u64 {
        if self
            .last_counted
            .as_ref()
            .is_some_and(|last| last.same_buffer(data))
        {
            data.len() as u64
        } else {
            self.last_counted = Some(data.clone());
            data.buffer_len() as u64
        }
    }

    /// Entry `index`, with `bytes` of data, was applied: the one after the entry applied
    /// last, unless the log was dropped through that one ([`LogMemory::dropped_through`]).
    /// On the hot path: one push, no allocation once the deque has grown.
    pub fn applied(&mut self, index: LogIndex, bytes: u64) {
        if let Some(&(last, _)) = self.marks.back() {
            assert_eq!(
                index,
                last.next(),
                "entry {index} applied after entry {last}"
            );
        }
        self.marks.push_back((index, self.applied_bytes));
        self.applied_bytes += bytes;
    }

    /// The in-memory log no longer holds the entries through `index` (trimmed, compacted
    /// by a snapshot, or replaced by the leader's snapshot).
    pub fn dropped_through(&mut self, index: LogIndex) {
        while self.marks.front().is_some_and(|m| m.0 <= index) {
            self.marks.pop_front();
        }
    }

    /// The data bytes of the applied entries the in-memory log holds.
    pub fn held_bytes(&self) -> u64 {
        self.marks
            .front()
            .map_or(0, |&(_, before)| self.applied_bytes - before)
    }

    /// Where to trim the in-memory log, which holds the entries after `start` and has had
    /// them applied through `applied`: the larger of the index that leaves `entries_max`
    /// applied entries and the one that leaves at most `bytes_max` of their data; `None`
    /// while neither bound is passed by its step. Never past `applied` (the core refuses to
    /// trim what it has not handed out to apply) and never at or before `start`.
    pub fn trim_point(&mut self, start: LogIndex, applied: LogIndex) -> Option<LogIndex> {
        self.dropped_through(start);
        // A small in-memory log (tests) is trimmed in steps as small as itself.
        let step = TRIM_STEP_ENTRIES.min(self.entries_max.max(1));
        let entries_over = applied.0
            >= start
                .0
                .saturating_add(self.entries_max)
                .saturating_add(step);
        let held = self.held_bytes();
        let bytes_step = self.bytes_max / TRIM_STEP_BYTES_DIVISOR;
        let bytes_over = held > self.bytes_max.saturating_add(bytes_step);
        if !entries_over && !bytes_over {
            return None;
        }
        let by_entries = applied
            .0
            .checked_sub(self.entries_max)
            .filter(|&index| index > start.0)
            .map(LogIndex);
        let by_bytes = (held > self.bytes_max).then(|| {
            // `keep`: the first mark from which on at most `bytes_max` are held. It is not the
            // front (held > bytes_max), so there is a mark before it to trim through; when
            // even the newest entry alone holds more, `keep` is past the end and that mark is
            // the newest.
            let keep = self
                .marks
                .partition_point(|&(_, before)| self.applied_bytes - before > self.bytes_max);
            self.marks[keep - 1].0
        });
        by_entries.max(by_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log with entries 1..=sizes.len() applied, of these data sizes, none trimmed.
    fn applied(entries_max: u64, bytes_max: u64, sizes: &[u64]) -> LogMemory {
        let mut m = LogMemory::new(entries_max, bytes_max);
        for (i, &bytes) in sizes.iter().enumerate() {
            m.applied(LogIndex(i as u64 + 1), bytes);
        }
        m
    }

    /// Proves an entry that is a small range of a large buffer counts the buffer it keeps
    /// allocated, and the entries after it that share the buffer count only their bytes.
    #[test]
    fn an_entry_counts_the_buffer_it_keeps() {
        let mut m = LogMemory::new(100, 1000);
        let read = SharedBytes::from(vec![7u8; 4096]);
        let lone = read.slice_ref(&read[..10]);
        assert_eq!(m.held_bytes_of(&lone), 4096);
        let next = read.slice_ref(&read[10..30]);
        assert_eq!(m.held_bytes_of(&next), 20);
        let own = SharedBytes::from(vec![1u8; 50]);
        assert_eq!(m.held_bytes_of(&own), 50);
        // A buffer counted before another one is counted whole again: an overcount, never
        // an undercount.
        assert_eq!(m.held_bytes_of(&read.slice_ref(&read[30..40])), 4096);
    }

    /// Proves the byte bound: with few entries but many bytes, the log is trimmed to at
    /// most `bytes_max` of data once it holds more than an eighth over, keeping as much as
    /// fits; the entry bound alone would keep everything.
    #[test]
    fn trims_by_bytes_when_the_entries_are_large() {
        let mut m = applied(25_000, 400, &[100; 16]);
        assert_eq!(m.held_bytes(), 1600);
        // Through 12: entries 13..=16 hold 400 bytes.
        assert_eq!(m.trim_point(LogIndex(0), LogIndex(16)), Some(LogIndex(12)));
        m.dropped_through(LogIndex(12));
        assert_eq!(m.held_bytes(), 400);
        // Within the step (450) no trim; past it, back to 400.
        m.applied(LogIndex(17), 50);
        assert_eq!(m.trim_point(LogIndex(12), LogIndex(17)), None);
        m.applied(LogIndex(18), 1);
        // 451 held: through 13, 351 are left (through 12 would leave all 451).
        assert_eq!(m.trim_point(LogIndex(12), LogIndex(18)), Some(LogIndex(13)));
    }

    /// Proves the entry bound still holds alone (small entries): trimmed in steps, to the
    /// newest `entries_max`.
    #[test]
    fn trims_by_entries_when_the_entries_are_small() {
        let mut m = applied(10, 1 << 20, &[1; 40]);
        // Step min(1024, 10) = 10: trimmed once 20 past the start are applied.
        assert_eq!(m.trim_point(LogIndex(0), LogIndex(19)), None);
        assert_eq!(m.trim_point(LogIndex(0), LogIndex(20)), Some(LogIndex(10)));
        assert_eq!(m.trim_point(LogIndex(0), LogIndex(40)), Some(LogIndex(30)));
    }

    /// Whichever bound bites first wins: the trim point is the larger of the two.
    #[test]
    fn the_bound_that_bites_first_wins() {
        // 30 entries of 10 bytes, at most 20 entries or 100 bytes: bytes bite (keep 10).
        let mut m = applied(20, 100, &[10; 30]);
        assert_eq!(m.trim_point(LogIndex(0), LogIndex(30)), Some(LogIndex(20)));
        // At most 5 entries or 100 bytes: entries bite (keep 5).
        let mut m = applied(5, 100, &[10; 30]);
        assert_eq!(m.trim_point(LogIndex(0), LogIndex(30)), Some(LogIndex(25)));
    }

    /// An entry larger than the bound alone is trimmed too (through the newest applied),
    /// and unapplied entries are never counted or trimmed: the point is at most `applied`.
    #[test]
    fn never_trims_past_what_was_applied() {
        let mut m = applied(100, 10, &[1, 1, 1000]);
        assert_eq!(m.trim_point(LogIndex(0), LogIndex(3)), Some(LogIndex(3)));
        m.dropped_through(LogIndex(3));
        assert_eq!(m.held_bytes(), 0);
        assert_eq!(m.trim_point(LogIndex(3), LogIndex(3)), None);
    }

    /// A log whose start moved without a trim (a snapshot compacted it, or the leader's
    /// replaced it) forgets what it no longer holds; entries applied after a snapshot
    /// installed start a new run of marks.
    #[test]
    fn a_snapshot_drops_the_marks_it_covers() {
        let mut m = applied(100, 1000, &[300; 5]);
        assert_eq!(m.trim_point(LogIndex(3), LogIndex(5)), None);
        assert_eq!(m.held_bytes(), 600);
        m.dropped_through(LogIndex(50));
        assert_eq!(m.held_bytes(), 0);
        m.applied(LogIndex(51), 2000);
        assert_eq!(m.held_bytes(), 2000);
        assert_eq!(m.trim_point(LogIndex(50), LogIndex(51)), Some(LogIndex(51)));
    }

    /// Against a naive oracle, over many logs of varied entry sizes: after each trim the
    /// log holds at most `bytes_max` of applied data when it held more than that, as much
    /// as fits (one entry more would pass the bound), and never fewer entries than the
    /// entry bound alone would keep when that bound did not bite.
    #[test]
    fn trim_point_matches_a_naive_oracle() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..500 {
            let entries_max = 1 + next() % 40;
            let bytes_max = 1 + next() % 2000;
            let mut m = LogMemory::new(entries_max, bytes_max);
            let mut sizes = vec![0u64]; // sizes[i]: entry i's; index 0 is no entry.
            let mut start = 0u64;
            for index in 1..300u64 {
                let bytes = [0, 1, 10, 100, 1000][(next() % 5) as usize];
                sizes.push(bytes);
                m.applied(LogIndex(index), bytes);
                let held =
                    |from: u64| -> u64 { sizes[(from + 1) as usize..=index as usize].iter().sum() };
                let before = held(start);
                let Some(point) = m.trim_point(LogIndex(start), LogIndex(index)) else {
                    assert!(index < start + entries_max + entries_max.min(1024));
                    assert!(before <= bytes_max + bytes_max / 8);
                    continue;
                };
                let point = point.0;
                assert!(
                    point > start && point <= index,
                    "{start} < {point} <= {index}"
                );
                let after = held(point);
                let by_entries = index.saturating_sub(entries_max);
                assert!(
                    point >= by_entries,
                    "{point} keeps more than {entries_max} entries"
                );
                if before > bytes_max {
                    assert!(after <= bytes_max, "{after} held after the trim");
                }
                if point > by_entries {
                    // Trimmed for bytes: one entry fewer trimmed would be over the bound.
                    assert!(after + sizes[point as usize] > bytes_max);
                }
                m.dropped_through(LogIndex(point));
                assert_eq!(m.held_bytes(), after);
                start = point;
            }
        }
    }
}
