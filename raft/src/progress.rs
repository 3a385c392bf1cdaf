//! What a leader knows about each follower's log: match and next index, replication state and
//! the bounded in-flight window (thesis §10.2: pipelining with flow control).

use crate::types::{LogIndex, Snapshot};
use std::collections::VecDeque;
use std::sync::Arc;

/// How the leader is replicating to one follower.
#[derive(Clone, Debug)]
pub(crate) enum ProgressState {
    /// Not sure where the follower's log matches: one append at a time, then wait.
    Probe,
    /// The follower's log matches at `match_index`: stream appends within the window.
    Replicate,
    /// The follower needs entries we compacted: send the snapshot in chunks.
    Snapshot {
        /// The snapshot being sent (kept even if a newer one is taken meanwhile).
        snapshot: Arc<Snapshot>,
        /// Bytes the follower has acknowledged.
        acked_offset: u64,
    },
}

/// The window of appends sent but not yet acknowledged, bounded in messages and bytes.
#[derive(Debug)]
pub(crate) struct Inflights {
    /// (last index of the append, payload bytes), oldest first.
    window: VecDeque<(LogIndex, u64)>,
    bytes: u64,
    messages_max: usize,
    bytes_max: u64,
}

impl Inflights {
    pub fn new(messages_max: usize, bytes_max: u64) -> Inflights {
        Inflights {
            window: VecDeque::with_capacity(messages_max),
            bytes: 0,
            messages_max,
            bytes_max,
        }
    }

    pub fn full(&self) -> bool {
        self.window.len() >= self.messages_max || self.bytes >= self.bytes_max
    }

    pub fn add(&mut self, last: LogIndex, bytes: u64) {
        debug_assert!(self.window.back().is_none_or(|&(i, _)| i < last));
        self.window.push_back((last, bytes));
        self.bytes += bytes;
    }

    /// Forgets every append whose last index is at or below `index`.
    pub fn free_to(&mut self, index: LogIndex) {
        while let Some(&(i, b)) = self.window.front() {
            if i > index {
                break;
            }
            self.window.pop_front();
            self.bytes -= b;
        }
    }

    /// Frees one slot so a stalled window (all answers lost) can move again.
    pub fn free_first(&mut self) {
        if let Some((_, b)) = self.window.pop_front() {
            self.bytes -= b;
        }
    }

    pub fn clear(&mut self) {
        self.window.clear();
        self.bytes = 0;
    }

    pub fn len(&self) -> usize {
        self.window.len()
    }
}

/// The leader's view of one follower.
///
/// Invariant: `match_index < next_index`.
#[derive(Debug)]
pub(crate) struct Progress {
    pub match_index: LogIndex,
    pub next_index: LogIndex,
    pub state: ProgressState,
    /// In `Probe` (and `Snapshot`): a message is out and we wait for its answer or the next
    /// heartbeat answer before sending another.
    pub paused: bool,
    pub inflights: Inflights,
    /// Heard from since the last check-quorum round.
    pub recent_active: bool,
    /// The highest ReadIndex round this follower has acknowledged.
    pub read_ack: u64,
    /// In `Snapshot`: heartbeat answers since the last chunk went out unanswered.
    pub snapshot_waits: u32,
}

impl Progress {
    pub fn new(next_index: LogIndex, messages_max: usize, bytes_max: u64) -> Progress {
        Progress {
            match_index: LogIndex(0),
            next_index,
            state: ProgressState::Probe,
            paused: false,
            inflights: Inflights::new(messages_max, bytes_max),
            recent_active: false,
            read_ack: 0,
            snapshot_waits: 0,
        }
    }

    /// True when no append may be sent now.
    pub fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.paused,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    pub fn become_probe(&mut self) {
        // After a snapshot, resume right after it; otherwise right after the known match.
        let next = match &self.state {
            ProgressState::Snapshot { snapshot, .. } => {
                snapshot.meta.index.max(self.match_index).next()
            }
            _ => self.match_index.next(),
        };
        self.state = ProgressState::Probe;
        self.next_index = next;
        self.paused = false;
        self.inflights.clear();
    }

    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index.next();
        self.paused = false;
        self.inflights.clear();
    }

    pub fn become_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        self.state = ProgressState::Snapshot {
            snapshot,
            acked_offset: 0,
        };
        self.paused = false;
        self.inflights.clear();
    }

    /// A successful append answer: the follower matches through `index`. Returns true when
    /// that moved the match index.
    pub fn update(&mut self, index: LogIndex) -> bool {
        let moved = index > self.match_index;
        if moved {
            self.match_index = index;
            self.paused = false;
        }
        self.next_index = self.next_index.max(index.next());
        moved
    }

    /// A refused append at `rejected`: move `next_index` back to `hint_next` (computed by the
    /// leader from the follower's conflict hint). Returns false for a stale refusal.
    pub fn decrease_to(&mut self, rejected: LogIndex, hint_next: LogIndex) -> bool {
        if rejected <= self.match_index {
            if hint_next <= self.match_index
                && !matches!(self.state, ProgressState::Snapshot { .. })
            {
                // The follower's log ends or differs before entries it acknowledged: a
                // damaged disk made it cut its log (it repairs itself, voting in no
                // election meanwhile), or this is an old answer that overtook newer ones.
                // Either way probing again from the hint is safe: the commit index never
                // goes back, and the next accepted append restores the match. Otherwise the
                // leader would wait forever for a match that is gone.
                self.match_index = LogIndex(0);
                self.become_probe();
                self.next_index = hint_next.clamp(LogIndex(1), rejected);
                return true;
            }
            return false; // Stale: we already know it matches there.
        }
        match self.state {
            ProgressState::Replicate => {
                self.become_probe();
                self.next_index = hint_next.clamp(self.match_index.next(), rejected);
                true
            }
            ProgressState::Probe => {
                if rejected != self.next_index.prev() {
                    return false; // Stale: it answers an older probe.
                }
                self.next_index = hint_next.clamp(self.match_index.next(), rejected);
                self.paused = false;
                true
            }
            ProgressState::Snapshot { .. } => false,
        }
    }
}
