//! Messages between Raft nodes (paper Figure 2, plus the thesis's pre-vote, ReadIndex and
//! TimeoutNow), each with a one-line `Display` used by logs, tools and golden traces.

use crate::membership::Configuration;
use crate::types::{Entry, LogIndex, NodeId, SnapshotMeta, Term};
use std::fmt;

/// One message from one node to another. `term` is the sender's current term, except for
/// pre-votes, which carry the term the sender would campaign in (thesis §9.6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Receiver.
    pub to: NodeId,
    /// See the type's docs.
    pub term: Term,
    /// What the message says.
    pub body: Body,
}

/// Why an append was refused, so the leader can skip back many entries per round trip
/// instead of one (the "fast backtracking" of §5.3's closing paragraphs).
///
/// The follower names the last entry it holds, at or below the refused `prev_index`, whose
/// term is at most the leader's `prev_term`: no entry after it can match the leader's log,
/// since the leader's terms up to `prev_index` are all at most `prev_term`. The leader then
/// does the same search in its own log with the follower's term, and probes there. Each
/// round trip skips whole terms on both sides (the search etcd-raft uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConflictHint {
    /// The term of the follower's entry at `index`.
    pub term: Term,
    /// The last index at or below the refused `prev_index` whose term is at most the
    /// leader's `prev_term`.
    pub index: LogIndex,
}

/// The message kinds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// "Would you vote for me in `term`?" — asked without raising anyone's term (thesis §9.6).
    PreVote {
        /// Index of the candidate's last entry.
        last_index: LogIndex,
        /// Term of the candidate's last entry.
        last_term: Term,
    },
    /// The answer to a pre-vote.
    PreVoteResponse {
        /// True when the pre-vote is granted.
        granted: bool,
    },
    /// RequestVote (Figure 2).
    Vote {
        /// Index of the candidate's last entry.
        last_index: LogIndex,
        /// Term of the candidate's last entry.
        last_term: Term,
        /// Set when the election follows a leadership transfer; it lets the vote through the
        /// leader lease that check-quorum otherwise enforces (thesis §3.10).
        transfer: bool,
    },
    /// The answer to RequestVote.
    VoteResponse {
        /// True when the vote is granted.
        granted: bool,
    },
    /// AppendEntries carrying entries (Figure 2).
    Append {
        /// Index of the entry just before `entries`.
        prev_index: LogIndex,
        /// Term of the entry at `prev_index`.
        prev_term: Term,
        /// The leader's commit index.
        commit: LogIndex,
        /// Entries to store, starting at `prev_index + 1`.
        entries: Vec<Entry>,
    },
    /// The answer to an append.
    AppendResponse {
        /// `Some(hint)` when the append was refused.
        reject: Option<ConflictHint>,
        /// On success, the index up to which the follower's log now matches the leader's;
        /// on refusal, the `prev_index` that was refused.
        index: LogIndex,
    },
    /// An empty AppendEntries that keeps followers from starting elections and, through
    /// `read_seq`, confirms leadership for ReadIndex.
    Heartbeat {
        /// min(leader commit, follower's match index): never beyond what the follower holds.
        commit: LogIndex,
        /// The leader's ReadIndex round this heartbeat belongs to.
        read_seq: u64,
    },
    /// The answer to a heartbeat.
    HeartbeatResponse {
        /// Echoes the heartbeat's round.
        read_seq: u64,
    },
    /// One chunk of InstallSnapshot (Figure 13), sent in order.
    Snapshot {
        /// Where the snapshot ends in the log.
        meta: SnapshotMeta,
        /// The configuration in effect at `meta.index`, which the follower takes on with the
        /// snapshot (sent with every chunk: it is small, and chunks stay self-contained).
        configuration: Configuration,
        /// Byte offset of `data` in the snapshot.
        offset: u64,
        /// Total size of the snapshot in bytes.
        total_bytes: u64,
        /// This chunk's bytes.
        data: Vec<u8>,
    },
    /// The answer to a snapshot chunk.
    SnapshotResponse {
        /// The snapshot the answer is about.
        index: LogIndex,
        /// The offset the follower expects next (`total_bytes` once the snapshot is complete).
        next_offset: u64,
        /// True when the follower has refused the snapshot (it is stale for it).
        reject: bool,
    },
    /// A follower forwards a linearizable read to the leader.
    ReadIndex {
        /// The follower's id for the read.
        context: u64,
    },
    /// The leader's answer to a forwarded read; `index` 0 means it could not serve it.
    ReadIndexResponse {
        /// Echoes the follower's id for the read.
        context: u64,
        /// The commit index the read must wait for.
        index: LogIndex,
    },
    /// "Start an election now" (leadership transfer, thesis §3.10).
    TimeoutNow,
}

impl Body {
    /// True for the kinds that answer a request. The simulator gives answers labrpc's reply
    /// semantics (reply drop, long reordering).
    pub fn is_response(&self) -> bool {
        matches!(
            self,
            Body::PreVoteResponse { .. }
                | Body::VoteResponse { .. }
                | Body::AppendResponse { .. }
                | Body::HeartbeatResponse { .. }
                | Body::SnapshotResponse { .. }
                | Body::ReadIndexResponse { .. }
        )
    }

    /// A short name for the kind.
    pub fn name(&self) -> &'static str {
        match self {
            Body::PreVote { .. } => "PreVote",
            Body::PreVoteResponse { .. } => "PreVoteResponse",
            Body::Vote { .. } => "Vote",
            Body::VoteResponse { .. } => "VoteResponse",
            Body::Append { .. } => "Append",
            Body::AppendResponse { .. } => "AppendResponse",
            Body::Heartbeat { .. } => "Heartbeat",
            Body::HeartbeatResponse { .. } => "HeartbeatResponse",
            Body::Snapshot { .. } => "Snapshot",
            Body::SnapshotResponse { .. } => "SnapshotResponse",
            Body::ReadIndex { .. } => "ReadIndex",
            Body::ReadIndexResponse { .. } => "ReadIndexResponse",
            Body::TimeoutNow => "TimeoutNow",
        }
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}->{} {} term={}",
            self.from,
            self.to,
            self.body.name(),
            self.term
        )?;
        match &self.body {
            Body::PreVote {
                last_index,
                last_term,
            } => write!(f, " last={last_term}/{last_index}"),
            Body::Vote {
                last_index,
                last_term,
                transfer,
            } => write!(f, " last={last_term}/{last_index} transfer={transfer}"),
            Body::PreVoteResponse { granted } | Body::VoteResponse { granted } => {
                write!(f, " granted={granted}")
            }
            Body::Append {
                prev_index,
                prev_term,
                commit,
                entries,
            } => write!(
                f,
                " prev={prev_term}/{prev_index} commit={commit} entries={}",
                entries.len()
            ),
            Body::AppendResponse {
                reject: None,
                index,
            } => write!(f, " ok index={index}"),
            Body::AppendResponse {
                reject: Some(hint),
                index,
            } => write!(f, " reject index={index} hint={}/{}", hint.term, hint.index),
            Body::Heartbeat { commit, read_seq } => {
                write!(f, " commit={commit} read_seq={read_seq}")
            }
            Body::HeartbeatResponse { read_seq } => write!(f, " read_seq={read_seq}"),
            Body::Snapshot {
                meta,
                configuration,
                offset,
                total_bytes,
                data,
            } => write!(
                f,
                " snap={}/{} bytes={offset}+{}/{total_bytes} conf=[{configuration}]",
                meta.term,
                meta.index,
                data.len()
            ),
            Body::SnapshotResponse {
                index,
                next_offset,
                reject,
            } => write!(f, " snap={index} next_offset={next_offset} reject={reject}"),
            Body::ReadIndex { context } => write!(f, " ctx={context}"),
            Body::ReadIndexResponse { context, index } => write!(f, " ctx={context} index={index}"),
            Body::TimeoutNow => Ok(()),
        }
    }
}
