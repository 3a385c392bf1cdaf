//! The vocabulary of the core: terms, log indices, node ids, entries, hard state and snapshots.
//!
//! Terms, indices and ids are newtypes so that an index can never be passed where a term is
//! expected. Log indices start at 1; index 0 with term 0 stands for the empty log.

use crate::membership::Configuration;
use crate::shared_bytes::SharedBytes;
use std::fmt;

macro_rules! newtype_u64 {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub u64);

        impl $name {
            /// The value as a plain integer (for encoding and arithmetic at the edges).
            pub const fn get(self) -> u64 {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}{}", $prefix, self.0)
            }
        }
    };
}

newtype_u64!(
    /// A Raft term (paper §5.1). Term 0 is the term before any election.
    Term,
    ""
);
newtype_u64!(
    /// A position in the replicated log. The first entry has index 1; index 0 means "none".
    LogIndex,
    ""
);
newtype_u64!(
    /// A cluster member's id. Ids are non-zero; 0 means "nobody".
    NodeId,
    ""
);

impl LogIndex {
    /// The index after this one.
    pub const fn next(self) -> LogIndex {
        LogIndex(self.0 + 1)
    }

    /// The index before this one; `LogIndex(0)` stays at 0.
    pub const fn prev(self) -> LogIndex {
        LogIndex(self.0.saturating_sub(1))
    }

    /// The number of indices in `(self, to]`, zero when `to <= self`.
    pub const fn count_to(self, to: LogIndex) -> u64 {
        to.0.saturating_sub(self.0)
    }
}

impl NodeId {
    /// "Nobody": used for "no vote" and "no known leader".
    pub const NONE: NodeId = NodeId(0);

    /// True for the "nobody" id.
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }
}

/// What an entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A command for the state machine.
    Normal = 1,
    /// The empty entry a new leader appends to commit the entries of earlier terms (§5.4.2)
    /// and to learn the commit index it needs for ReadIndex (thesis §6.4).
    Noop = 2,
    /// A membership change: the data is the whole configuration that follows it, encoded
    /// by [`crate::Configuration::encode`]. It takes effect when appended (thesis §4.1).
    Config = 3,
}

impl EntryKind {
    /// Decodes the wire value.
    pub fn from_u8(value: u8) -> Option<EntryKind> {
        match value {
            1 => Some(EntryKind::Normal),
            2 => Some(EntryKind::Noop),
            3 => Some(EntryKind::Config),
            _ => None,
        }
    }
}

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Entry {
    /// The term of the leader that created the entry.
    pub term: Term,
    /// Its position in the log.
    pub index: LogIndex,
    /// Command or no-op.
    pub kind: EntryKind,
    /// The command bytes (empty for a no-op). Shared: the log, the messages that carry an
    /// entry to each follower, the batch handed out for persisting and the one handed out
    /// for applying all hold the same bytes; entries decoded with
    /// [`codec::decode_shared`](crate::codec::decode_shared) are slices of the message they
    /// came in (one allocation per message, not one per entry).
    pub data: SharedBytes,
}

impl Entry {
    /// The bytes this entry counts for in flow control (in-flight and uncommitted budgets).
    pub fn payload_bytes(&self) -> u64 {
        self.data.len() as u64
    }
}

/// The state that must be durable before a node answers a vote or an append (Figure 2:
/// "persistent state on all servers"); the commit index rides along so a restart can apply
/// without waiting for a leader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this node has seen.
    pub term: Term,
    /// Whom it voted for in `term` (`NodeId::NONE` when nobody).
    pub vote: NodeId,
    /// The highest index it knows to be committed.
    pub commit: LogIndex,
}

impl fmt::Display for HardState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "term={} vote={} commit={}",
            self.term, self.vote, self.commit
        )
    }
}

/// Where a snapshot ends in the log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SnapshotMeta {
    /// The last index the snapshot covers.
    pub index: LogIndex,
    /// The term of the entry at `index`.
    pub term: Term,
}

/// A snapshot of the state machine through `meta.index`. The bytes are the service's own.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Snapshot {
    /// Where it ends in the log.
    pub meta: SnapshotMeta,
    /// The configuration in effect at `meta.index` (the entries that said so are gone):
    /// [`crate::RawNode::configuration_at`] names it when the host takes the snapshot.
    pub configuration: Configuration,
    /// The service's serialized state.
    pub data: Vec<u8>,
}

impl Snapshot {
    /// True for the "no snapshot yet" value.
    pub fn is_empty(&self) -> bool {
        self.meta.index == LogIndex(0)
    }
}

/// A linearizable read that the leader has confirmed: once the state machine has applied
/// `index`, the read identified by `context` may be served (thesis §6.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReadState {
    /// The caller's id for the read, as passed to `read_index`.
    pub context: u64,
    /// The commit index the read must wait for.
    pub index: LogIndex,
}
