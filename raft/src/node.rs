//! [`RawNode`]: the Raft state machine of one member, and [`Ready`], what it asks its host to do.

use crate::config::Config;
use crate::log::RaftLog;
use crate::membership::{ConfChangeError, ConfHistory, Configuration, MemberChange, VoteResult};
use crate::message::{Body, ConflictHint, Message};
use crate::progress::{Progress, ProgressState};
use crate::shared_bytes::SharedBytes;
use crate::types::{
    Entry, EntryKind, HardState, LogIndex, NodeId, ReadState, Snapshot, SnapshotMeta, Term,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt;
use std::sync::Arc;

/// Heartbeat answers without a snapshot chunk's answer after which the chunk is resent.
const SNAPSHOT_CHUNK_RESEND_HEARTBEATS: u32 = 3;

/// The role a node plays, with the state only that role needs.
#[derive(Debug)]
enum Role {
    Follower {
        /// Chunks of a snapshot the leader is sending us.
        incoming: Option<IncomingSnapshot>,
    },
    PreCandidate {
        votes: Votes,
    },
    Candidate {
        votes: Votes,
    },
    Leader(Box<LeaderState>),
}

/// A public, copyable view of the role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asking for pre-votes.
    PreCandidate,
    /// Asking for votes.
    Candidate,
    /// Leads the cluster.
    Leader,
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            RoleKind::Follower => "follower",
            RoleKind::PreCandidate => "pre-candidate",
            RoleKind::Candidate => "candidate",
            RoleKind::Leader => "leader",
        };
        f.write_str(s)
    }
}

#[derive(Debug, Default)]
struct Votes {
    granted: BTreeSet<NodeId>,
    rejected: BTreeSet<NodeId>,
}

#[derive(Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    configuration: Configuration,
    total_bytes: u64,
    data: Vec<u8>,
}

#[derive(Debug)]
struct PendingRead {
    context: u64,
    index: LogIndex,
    read_seq: u64,
    /// Who asked: this node, or a follower that forwarded the read.
    from: NodeId,
}

#[derive(Debug)]
struct LeaderState {
    progress: BTreeMap<NodeId, Progress>,
    /// The latest ReadIndex round; heartbeats carry it and followers echo it.
    read_seq: u64,
    /// Reads confirmed once a quorum acknowledges their round, oldest first.
    pending_reads: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its own term.
    reads_waiting_for_commit: Vec<(u64, NodeId)>,
    /// (target, ticks since the transfer started).
    transfer: Option<(NodeId, u64)>,
    /// Bytes that the entries appended in this term and not yet committed keep allocated
    /// (each counted as [`held_bytes`] at its append): what `uncommitted_bytes_max` bounds.
    uncommitted_bytes: u64,
    /// Each such entry's index and what it added to `uncommitted_bytes`, oldest first;
    /// a commit takes off exactly what was added.
    uncommitted: VecDeque<(LogIndex, u64)>,
    /// Nodes a committed configuration removed, kept in `progress` for a while: (the
    /// index of the configuration that removed them, ticks left). They are sent entries up
    /// to that index only, and heartbeats whose commit index tells them they were removed
    /// (then they stop campaigning).
    departing: BTreeMap<NodeId, (LogIndex, u64)>,
}

impl LeaderState {
    /// Counts the entry appended at `index` as keeping `bytes` allocated until it commits.
    fn hold_uncommitted(&mut self, index: LogIndex, bytes: u64) {
        self.uncommitted_bytes += bytes;
        self.uncommitted.push_back((index, bytes));
    }

    /// Takes off what the entries through `commit` added, now that they are committed.
    fn release_uncommitted_through(&mut self, commit: LogIndex) {
        while let Some(&(index, bytes)) = self.uncommitted.front() {
            if index > commit {
                break;
            }
            self.uncommitted.pop_front();
            self.uncommitted_bytes -= bytes;
        }
    }
}

/// Why a proposal was not accepted. None of these appended anything to the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposeError {
    /// This node is not the leader; `leader` is the one it knows of (`NONE` if unknown).
    NotLeader {
        /// The known leader.
        leader: NodeId,
    },
    /// A leadership transfer is under way.
    TransferInProgress,
    /// Too many uncommitted bytes: back off and retry.
    Backpressure,
    /// A configuration change must wait until this leader has committed an entry of its
    /// own term (after a no-op or a command commits): until then it may not know of a
    /// change an earlier leader committed, and two changes could overlap (the
    /// single-server change bug of 2015).
    ConfChangeNotReady,
    /// Another configuration change is under way (its entry is not committed yet, or the
    /// cluster is still in the joint configuration): one change at a time.
    ConfChangePending,
    /// The change does not fit the current configuration.
    InvalidConfChange(ConfChangeError),
}

impl fmt::Display for ProposeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProposeError::NotLeader { leader } if leader.is_none() => {
                write!(f, "not the leader, and no leader is known")
            }
            ProposeError::NotLeader { leader } => write!(f, "not the leader; node {leader} is"),
            ProposeError::TransferInProgress => write!(f, "leadership transfer in progress"),
            ProposeError::Backpressure => write!(f, "too many uncommitted entries"),
            ProposeError::ConfChangeNotReady => write!(
                f,
                "the leader has not committed an entry of its term yet; retry the change shortly"
            ),
            ProposeError::ConfChangePending => {
                write!(f, "another configuration change is in progress")
            }
            ProposeError::InvalidConfChange(why) => {
                write!(f, "invalid configuration change: {why}")
            }
        }
    }
}

impl std::error::Error for ProposeError {}

/// Why a message, read or transfer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepError {
    /// The message is addressed to another node.
    WrongRecipient(NodeId),
    /// The sender is nobody (id 0) or this node itself.
    UnknownPeer(NodeId),
    /// No leader is known to forward a read to.
    NoLeader,
    /// The transfer target is not a voter (a learner, a non-member), or is this node.
    BadTransferTarget(NodeId),
    /// Only the leader can do this.
    NotLeader,
}

impl fmt::Display for StepError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StepError::WrongRecipient(to) => write!(f, "message addressed to node {to}"),
            StepError::UnknownPeer(from) => write!(f, "message from unknown node {from}"),
            StepError::NoLeader => write!(f, "no leader known"),
            StepError::BadTransferTarget(id) => write!(f, "cannot transfer leadership to {id}"),
            StepError::NotLeader => write!(f, "not the leader"),
        }
    }
}

impl std::error::Error for StepError {}

/// What the node asks its host to do, in this order:
///
/// 1. Send [`Ready::take_messages`] now. They depend on nothing unpersisted (a leader's
///    appends may leave before its own disk write, thesis §10.2.1).
/// 2. Persist, in one durable write: the snapshot from [`Ready::take_snapshot`] (it replaces
///    every stored entry at or below its index; if the stored log does not hold the
///    snapshot's last entry with the same term, drop the stored log entirely), then the hard
///    state and the entries (an entry whose index is already stored replaces that entry and
///    everything after it).
/// 3. Only then send [`Ready::take_persisted_messages`]: votes and append answers promise
///    that what they acknowledge is on disk.
/// 4. Restore the snapshot into the state machine, if there was one, then apply
///    [`Ready::take_committed_entries`] in order and serve [`Ready::take_read_states`] once
///    their index is applied. Committed entries are only ever handed out once they are
///    durable on this node (and committed on a majority), so when the Ready carries no
///    snapshot a host may apply them before step 2, overlapping this Ready's disk write.
/// 5. Call [`RawNode::advance`] with this `Ready`.
/// 6. If [`Ready::snapshot_request`] names a log position, hand a snapshot through at least
///    that index to [`RawNode::provide_snapshot`] (then or later): read back from stable
///    storage, or taken of the applied state when the stored one is older (the log was
///    trimmed past it). A follower fell behind the log and needs it. The node keeps no
///    snapshot bytes of its own between such requests.
///
/// 7. For each of [`Ready::take_entries_wanted`], read those entries from storage and hand
///    them to [`RawNode::entries_fetched`] (then or later).
///
/// Between `ready()` and `advance()` the node may be stepped, ticked and proposed to; it
/// will not hand out another `Ready` until this one is advanced.
#[must_use = "a Ready must be persisted, sent, applied and then passed to advance()"]
#[derive(Debug, Default)]
pub struct Ready {
    number: u64,
    hard_state: Option<HardState>,
    /// Decided when the Ready is made, so taking the entries or the snapshot out does not
    /// change the answer (see `must_sync`).
    must_sync: bool,
    snapshot: Option<Snapshot>,
    snapshot_request: Option<SnapshotMeta>,
    entries_wanted: Vec<EntriesWanted>,
    repair_finished: bool,
    entries: Vec<Entry>,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    committed_entries: Vec<Entry>,
    read_states: Vec<ReadState>,
    dropped_reads: Vec<u64>,
    /// Bookkeeping for `advance`, untouched by the `take_*` accessors.
    last_entry: Option<(LogIndex, Term)>,
    apply_to: LogIndex,
}

impl Ready {
    /// This Ready's sequence number.
    pub fn number(&self) -> u64 {
        self.number
    }
    /// The hard state to persist, when it changed.
    pub fn hard_state(&self) -> Option<HardState> {
        self.hard_state
    }
    /// A snapshot received from the leader, to persist and restore.
    pub fn take_snapshot(&mut self) -> Option<Snapshot> {
        self.snapshot.take()
    }
    /// Entries to persist.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }
    /// True when the Ready carries a snapshot from the leader.
    pub fn has_snapshot(&self) -> bool {
        self.snapshot.is_some()
    }
    /// Where the log starts, when the leader needs a snapshot for a follower that fell
    /// behind it: the host hands one through at least this index to
    /// [`RawNode::provide_snapshot`].
    pub fn snapshot_request(&self) -> Option<SnapshotMeta> {
        self.snapshot_request
    }
    /// The node's repair is over (see [`Restore::repairing`]): after this Ready's write is
    /// durable, record durably that it is an ordinary voter again.
    pub fn repair_finished(&self) -> bool {
        self.repair_finished
    }
    /// Entries older than the in-memory log that followers need: read them from storage
    /// and hand them to [`RawNode::entries_fetched`] after `advance`.
    pub fn take_entries_wanted(&mut self) -> Vec<EntriesWanted> {
        std::mem::take(&mut self.entries_wanted)
    }
    /// Moves the entries to persist out.
    pub fn take_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.entries)
    }
    /// Messages that may be sent before persisting.
    pub fn take_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.messages)
    }
    /// Messages that may be sent only after persisting.
    pub fn take_persisted_messages(&mut self) -> Vec<Message> {
        std::mem::take(&mut self.persisted_messages)
    }
    /// Committed entries to apply, in order.
    pub fn take_committed_entries(&mut self) -> Vec<Entry> {
        std::mem::take(&mut self.committed_entries)
    }
    /// Confirmed linearizable reads.
    pub fn take_read_states(&mut self) -> Vec<ReadState> {
        std::mem::take(&mut self.read_states)
    }
    /// Contexts of reads that will never be confirmed (leadership was lost): answer their
    /// callers with a retryable error.
    pub fn take_dropped_reads(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.dropped_reads)
    }
    /// True when something must be durable before the persisted messages go out: entries, a
    /// snapshot, or a new term or vote. A hard state whose only change is the commit index
    /// need not be synced: the commit index is volatile in Raft (a restarted node learns it
    /// again from the leader, and never below its snapshot), so the host may write it and
    /// let it become durable with the next sync. The answer is fixed when the Ready is made:
    /// it stays true after `take_entries` or `take_snapshot`.
    pub fn must_sync(&self) -> bool {
        self.must_sync
    }
}

impl fmt::Display for Ready {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ready#{}", self.number)?;
        if let Some(hs) = &self.hard_state {
            write!(f, " hs=[{hs}]")?;
        }
        if let Some(s) = &self.snapshot {
            write!(f, " snapshot={}/{}", s.meta.term, s.meta.index)?;
        }
        if let Some(meta) = &self.snapshot_request {
            write!(f, " snapshot_request={}/{}", meta.term, meta.index)?;
        }
        for w in &self.entries_wanted {
            write!(f, " fetch={}:{}..{}", w.to, w.lo, w.hi)?;
        }
        write!(
            f,
            " entries={} msgs={}+{} apply={} reads={}",
            self.entries.len(),
            self.messages.len(),
            self.persisted_messages.len(),
            self.committed_entries.len(),
            self.read_states.len()
        )
    }
}

/// What a host needs to restart a node from its durable state.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// The persisted hard state.
    pub hard_state: HardState,
    /// Where the latest durable snapshot ends (index 0 when there is none). The host
    /// restores its state machine from the snapshot itself; the node needs only its end.
    pub snapshot: SnapshotMeta,
    /// The entries the node keeps in memory, contiguous, starting right after `log_start`.
    pub entries: Vec<Entry>,
    /// Where `entries` start when the host keeps older committed entries in its storage
    /// only (the index and term of the last entry before them); `None`: right after the
    /// snapshot. A leader asks its host for such entries when a follower needs them
    /// ([`Ready::take_entries_wanted`]).
    pub log_start: Option<SnapshotMeta>,
    /// The host found its log damaged and cut it: the node may have acknowledged entries
    /// it no longer has, so it grants no votes or pre-votes and does not campaign until a
    /// leader has brought its log up to date (see [`Ready::repair_finished`]).
    pub repairing: bool,
    /// The configuration in effect where `entries` start (at `log_start`, or at the
    /// snapshot): the one stored with the snapshot, followed through any configuration
    /// entries the host applied from its storage below `log_start`. `None` when the node
    /// has never had one (no snapshot, no configuration entry): it uses
    /// [`Config::voters`], the first configuration of a brand-new cluster. Configuration
    /// entries among `entries` take effect on top of it.
    pub configuration: Option<Configuration>,
}

/// A leader needs entries `lo..hi` (hi exclusive) from the host's storage for follower
/// `to`: they are older than the entries it keeps in memory. The host reads them (at least
/// one, at most about `bytes_max` of data) and hands them to [`RawNode::entries_fetched`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntriesWanted {
    /// The follower.
    pub to: NodeId,
    /// First index wanted.
    pub lo: LogIndex,
    /// One past the last index wanted.
    pub hi: LogIndex,
    /// A bound on the entries' data bytes.
    pub bytes_max: u64,
}

/// A summary of the node for status displays and tests.
#[derive(Clone, Debug)]
pub struct Status {
    /// This node.
    pub id: NodeId,
    /// Its role.
    pub role: RoleKind,
    /// Its term.
    pub term: Term,
    /// Whom it voted for in that term.
    pub vote: NodeId,
    /// The leader it knows of.
    pub leader: NodeId,
    /// Commit index.
    pub commit: LogIndex,
    /// Applied index.
    pub applied: LogIndex,
    /// First index still in the log (in memory or in the host's storage).
    pub first_index: LogIndex,
    /// First index of the entries held in memory.
    pub memory_first_index: LogIndex,
    /// Last index in the log.
    pub last_index: LogIndex,
    /// Where the latest snapshot ends.
    pub snapshot_index: LogIndex,
    /// On a leader: (peer, match index, next index, appends in flight).
    pub progress: Vec<(NodeId, LogIndex, LogIndex, usize)>,
    /// Repairing a damaged log (see [`Restore::repairing`]).
    pub repairing: bool,
    /// The configuration this node uses (the latest in its log).
    pub configuration: Configuration,
    /// The index of the entry it comes from (or where the log starts).
    pub configuration_index: LogIndex,
}

/// One Raft member: a pure, deterministic state machine. See the crate docs for the loop
/// that drives it and [`Ready`] for the contract with its host.
pub struct RawNode {
    config: Config,
    term: Term,
    /// Invariant: changes only from `NONE` within a term (one vote per term).
    vote: NodeId,
    leader: NodeId,
    role: Role,
    /// The entries in memory. They may start after `stored`: the host keeps the committed
    /// entries between in its storage only (see `trim`).
    log: RaftLog,
    /// Where the host's durable snapshot ends: entries at or below it exist nowhere but in
    /// that snapshot. Invariant: `stored.index <= log.snapshot.index`.
    stored: SnapshotMeta,
    /// Followers that need entries older than the in-memory log, by the first index needed;
    /// asked of the host in the next Ready.
    entries_wanted: BTreeMap<NodeId, LogIndex>,
    /// Repairing a damaged log (see [`Restore::repairing`]): no votes, no campaigns.
    /// Invariant: a repairing node is a follower.
    repairing: bool,
    /// The repair is over and the host has not been told yet.
    repair_finished: bool,
    /// While repairing: the highest commit index the current leader has sent, as sent
    /// (before it is clamped to what this log holds). Zero until the leader says one.
    leader_commit_sent: LogIndex,
    /// A follower needs the latest snapshot's bytes, which the host has not been asked for
    /// yet. The bytes are not kept here: a snapshot is as big as the state machine, and
    /// only a follower that fell behind the log needs it, so the host reads it back from
    /// its stable storage on request (see [`Ready::snapshot_request`]). The followers being
    /// sent one share it through their progress until they have it.
    snapshot_wanted: bool,
    /// A snapshot received from the leader, not yet handed to the host.
    snapshot_to_persist: Option<Snapshot>,
    election_elapsed: u64,
    heartbeat_elapsed: u64,
    randomized_election_timeout: u64,
    rng: SmallRng,
    messages: Vec<Message>,
    persisted_messages: Vec<Message>,
    read_states: Vec<ReadState>,
    dropped_reads: Vec<u64>,
    /// The leader has new entries to replicate; flushed in `ready()` so proposals batch.
    broadcast_pending: bool,
    /// The hard state last handed to the host.
    handed_hard_state: HardState,
    ready_number: u64,
    /// A Ready is out and not yet advanced.
    ready_out: bool,
    /// For the invariant check: the commit index never goes back.
    commit_floor: LogIndex,
    /// The configurations of the log; the node uses the latest (see `ConfHistory`).
    confs: ConfHistory,
}

impl RawNode {
    /// Starts a node from its durable state (a fresh node passes `Restore::default()`).
    pub fn new(config: Config, restore: Restore) -> Result<RawNode, String> {
        config.validate()?;
        let hs = restore.hard_state;
        let log_start = restore.log_start.unwrap_or(restore.snapshot);
        if log_start.index < restore.snapshot.index {
            return Err(format!(
                "the in-memory log starts at {} before the snapshot at {}",
                log_start.index, restore.snapshot.index
            ));
        }
        let base = restore
            .configuration
            .unwrap_or_else(|| Configuration::new(config.voters.iter().copied()));
        base.validate()
            .map_err(|why| format!("restored configuration: {why}"))?;
        let mut confs = ConfHistory::new(log_start.index, base);
        for e in restore
            .entries
            .iter()
            .filter(|e| e.kind == EntryKind::Config)
        {
            let conf = Configuration::decode(&e.data)
                .map_err(|why| format!("configuration entry {}: {why}", e.index))?;
            confs.push(e.index, conf);
        }
        let log = RaftLog::restore(log_start, restore.entries, hs.commit);
        let rng = SmallRng::seed_from_u64(config.seed ^ config.id.0.rotate_left(32));
        let mut node = RawNode {
            term: hs.term,
            vote: hs.vote,
            leader: NodeId::NONE,
            role: Role::Follower { incoming: None },
            commit_floor: log.commit,
            log,
            stored: restore.snapshot,
            entries_wanted: BTreeMap::new(),
            repairing: restore.repairing,
            repair_finished: false,
            leader_commit_sent: LogIndex(0),
            snapshot_wanted: false,
            snapshot_to_persist: None,
            election_elapsed: 0,
            heartbeat_elapsed: 0,
            randomized_election_timeout: 0,
            rng,
            messages: Vec::new(),
            persisted_messages: Vec::new(),
            read_states: Vec::new(),
            dropped_reads: Vec::new(),
            broadcast_pending: false,
            handed_hard_state: hs,
            ready_number: 0,
            ready_out: false,
            confs,
            config,
        };
        node.handed_hard_state = node.hard_state();
        node.reset_election_timer();
        if node.repairing {
            log::warn!(
                "node {}: REPAIRING a damaged log: granting no votes and not campaigning until a leader has brought the log up to date",
                node.config.id
            );
        }
        node.check_invariants();
        Ok(node)
    }

    // ----- queries -----

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.config.id
    }
    /// Current term.
    pub fn term(&self) -> Term {
        self.term
    }
    /// True when this node is the leader.
    pub fn is_leader(&self) -> bool {
        matches!(self.role, Role::Leader(_))
    }
    /// The leader this node knows of.
    pub fn leader(&self) -> NodeId {
        self.leader
    }
    /// The role.
    pub fn role(&self) -> RoleKind {
        match self.role {
            Role::Follower { .. } => RoleKind::Follower,
            Role::PreCandidate { .. } => RoleKind::PreCandidate,
            Role::Candidate { .. } => RoleKind::Candidate,
            Role::Leader(_) => RoleKind::Leader,
        }
    }
    /// The hard state as it is now (possibly not yet persisted).
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.commit,
        }
    }
    /// Last index in the log.
    pub fn last_index(&self) -> LogIndex {
        self.log.last_index()
    }
    /// Commit index.
    pub fn commit_index(&self) -> LogIndex {
        self.log.commit
    }
    /// The term of the entry at `index`, when the log still holds it.
    pub fn term_at(&self, index: LogIndex) -> Option<Term> {
        self.log.term(index)
    }
    /// The entry at `index`, when the log still holds it (for checkers and status).
    pub fn entry(&self, index: LogIndex) -> Option<&Entry> {
        self.log.entry(index)
    }
    /// Where the in-memory log starts: the end of the latest snapshot, or later when the
    /// host trimmed the log ([`RawNode::trim`]).
    pub fn snapshot_meta(&self) -> SnapshotMeta {
        self.log.snapshot
    }
    /// Where the host's latest durable snapshot ends.
    pub fn stored_snapshot(&self) -> SnapshotMeta {
        self.stored
    }
    /// The configuration this node uses: the latest in its log, committed or not.
    pub fn configuration(&self) -> &Configuration {
        self.confs.current()
    }
    /// The configuration in effect at `index` (the latest at or below it), for a host
    /// taking a snapshot through `index`; `None` below the in-memory log's start.
    pub fn configuration_at(&self, index: LogIndex) -> Option<Configuration> {
        if index < self.log.snapshot.index {
            return None;
        }
        self.confs.at(index).cloned()
    }
    /// The index of the entry the configuration in use comes from (the log's start when
    /// it comes from the snapshot or the first configuration).
    pub fn configuration_index(&self) -> LogIndex {
        self.confs.current_index()
    }
    /// A summary for status output.
    pub fn status(&self) -> Status {
        let progress = match &self.role {
            Role::Leader(l) => l
                .progress
                .iter()
                .map(|(id, p)| (*id, p.match_index, p.next_index, p.inflights.len()))
                .collect(),
            _ => Vec::new(),
        };
        Status {
            id: self.config.id,
            role: self.role(),
            term: self.term,
            vote: self.vote,
            leader: self.leader,
            commit: self.log.commit,
            applied: self.log.applied,
            first_index: self.stored.index.next(),
            memory_first_index: self.log.first_index(),
            last_index: self.log.last_index(),
            snapshot_index: self.stored.index,
            progress,
            repairing: self.repairing,
            configuration: self.confs.current().clone(),
            configuration_index: self.confs.current_index(),
        }
    }

    // ----- inputs -----

    /// Advances logical time by one tick.
    pub fn tick(&mut self) {
        self.election_elapsed += 1;
        if self.is_leader() {
            self.tick_leader();
        } else if self.election_elapsed >= self.randomized_election_timeout {
            self.election_elapsed = 0;
            self.campaign(false);
        }
        self.check_invariants();
    }

    fn tick_leader(&mut self) {
        if let Role::Leader(l) = &mut self.role {
            for (_, ticks) in l.departing.values_mut() {
                *ticks = ticks.saturating_sub(1);
            }
            let gone: Vec<NodeId> = l
                .departing
                .iter()
                .filter(|(_, &(_, ticks))| ticks == 0)
                .map(|(id, _)| *id)
                .collect();
            for id in gone {
                l.departing.remove(&id);
                l.progress.remove(&id);
            }
        }
        self.heartbeat_elapsed += 1;
        if self.heartbeat_elapsed >= self.config.heartbeat_interval_ticks {
            self.heartbeat_elapsed = 0;
            self.broadcast_heartbeat();
        }
        if let Role::Leader(l) = &mut self.role {
            if let Some((target, elapsed)) = &mut l.transfer {
                *elapsed += 1;
                if *elapsed >= self.config.election_timeout_ticks {
                    log::info!(
                        "node {}: leadership transfer to {target} timed out",
                        self.config.id
                    );
                    l.transfer = None;
                }
            }
        }
        if self.election_elapsed >= self.config.election_timeout_ticks {
            self.election_elapsed = 0;
            if self.config.check_quorum && !self.quorum_recently_active() {
                log::warn!(
                    "node {}: lost contact with a quorum at term {}, stepping down",
                    self.config.id,
                    self.term
                );
                self.become_follower(self.term, NodeId::NONE);
            }
        }
    }

    /// Check-quorum: have a majority (counting us) been heard from since the last check?
    /// Resets the marks for the next round.
    fn quorum_recently_active(&mut self) -> bool {
        let me = self.config.id;
        let Role::Leader(l) = &mut self.role else {
            return false;
        };
        let active: BTreeSet<NodeId> = l
            .progress
            .iter()
            .filter(|(_, p)| p.recent_active)
            .map(|(id, _)| *id)
            .chain(std::iter::once(me))
            .collect();
        for p in l.progress.values_mut() {
            p.recent_active = false;
        }
        let result = self
            .confs
            .current()
            .vote_result(|id| active.contains(&id).then_some(true));
        result == VoteResult::Won
    }

    /// Proposes a command. On a leader it is appended and will be replicated; the returned
    /// index is where it will commit if this leader stays in charge.
    pub fn propose(&mut self, data: impl Into<SharedBytes>) -> Result<LogIndex, ProposeError> {
        let data: SharedBytes = data.into();
        let index = self.log.last_index().next();
        let term = self.term;
        let Role::Leader(l) = &mut self.role else {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        };
        if l.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        let bytes = held_bytes(&data, self.log.entry(self.log.last_index()));
        if l.uncommitted_bytes > 0
            && l.uncommitted_bytes + bytes > self.config.uncommitted_bytes_max
        {
            return Err(ProposeError::Backpressure);
        }
        l.hold_uncommitted(index, bytes);
        self.log.push(Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data,
        });
        self.after_leader_append();
        self.check_invariants();
        Ok(index)
    }

    /// Proposes a membership change (see [`crate::membership`]). Refused unless this node
    /// leads, has committed an entry of its own term, and no other change is under way;
    /// the change must fit the configuration. A change of the voters appends the joint
    /// configuration; the leader appends the final one by itself once that commits. The
    /// returned index is where the (first) configuration entry will commit.
    pub fn propose_conf_change(
        &mut self,
        changes: &[MemberChange],
    ) -> Result<LogIndex, ProposeError> {
        self.propose_conf_change_addressed(changes, &BTreeMap::new())
    }

    /// [`RawNode::propose_conf_change`], also recording where members listen: `addresses`
    /// are added to (or replace) those the configuration holds, for the nodes that are
    /// members after the change.
    pub fn propose_conf_change_addressed(
        &mut self,
        changes: &[MemberChange],
        addresses: &BTreeMap<NodeId, String>,
    ) -> Result<LogIndex, ProposeError> {
        let Role::Leader(l) = &self.role else {
            return Err(ProposeError::NotLeader {
                leader: self.leader,
            });
        };
        if l.transfer.is_some() {
            return Err(ProposeError::TransferInProgress);
        }
        if self.log.term(self.log.commit) != Some(self.term) {
            return Err(ProposeError::ConfChangeNotReady);
        }
        if self.confs.current_index() > self.log.commit || self.confs.current().is_joint() {
            return Err(ProposeError::ConfChangePending);
        }
        let mut next = self
            .confs
            .current()
            .apply(changes)
            .map_err(ProposeError::InvalidConfChange)?;
        next.addresses
            .extend(addresses.iter().map(|(id, a)| (*id, a.clone())));
        next.forget_addresses_of_non_members();
        next.validate()
            .map_err(|_| ProposeError::InvalidConfChange(crate::ConfChangeError::BadAddress))?;
        let index = self.append_configuration(next);
        self.check_invariants();
        Ok(index)
    }

    /// A leader appends a configuration entry: it takes effect at once (thesis §4.1), and
    /// the followers it adds get a progress.
    fn append_configuration(&mut self, conf: Configuration) -> LogIndex {
        let index = self.log.last_index().next();
        let data: SharedBytes = conf.to_bytes().into();
        log::info!(
            "node {}: configuration change at {index} (term {}): {} -> {conf}",
            self.config.id,
            self.term,
            self.confs.current()
        );
        if let Role::Leader(l) = &mut self.role {
            l.hold_uncommitted(
                index,
                held_bytes(&data, self.log.entry(self.log.last_index())),
            );
        }
        self.log.push(Entry {
            term: self.term,
            index,
            kind: EntryKind::Config,
            data,
        });
        self.confs.push(index, conf);
        self.sync_progress();
        self.after_leader_append();
        index
    }

    /// Gives every node the leader replicates to (see `peers`) a progress; a node no longer
    /// among them becomes departing (see `LeaderState::departing`) and a transfer to it is
    /// called off.
    fn sync_progress(&mut self) {
        let peers = self.peers();
        // From the configuration entry itself: a new member gets it in the first append.
        let next = self.log.last_index().max(LogIndex(1));
        let (messages_max, bytes_max) = (
            self.config.inflight_messages_max,
            self.config.inflight_bytes_max,
        );
        let departure = (
            self.confs.current_index(),
            self.config.election_timeout_ticks,
        );
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        for id in l.progress.keys() {
            if !peers.contains(id) {
                l.departing.entry(*id).or_insert(departure);
            }
        }
        l.departing.retain(|id, _| !peers.contains(id));
        let departing = &l.departing;
        l.progress
            .retain(|id, _| peers.contains(id) || departing.contains_key(id));
        if l.transfer
            .is_some_and(|(target, _)| !peers.contains(&target))
        {
            l.transfer = None;
        }
        for id in peers {
            l.progress.entry(id).or_insert_with(|| {
                let mut p = Progress::new(next, messages_max, bytes_max);
                p.recent_active = true;
                p
            });
        }
    }

    /// After the commit index moved on a leader: once the joint configuration is
    /// committed, append C_new (the leader leaves the joint configuration by itself); once
    /// a configuration without this node as a voter is committed, step down (§6: the
    /// leader manages the cluster until C_new commits, then steps down), handing
    /// leadership to the most up-to-date voter so the cluster need not wait for a timeout.
    fn after_commit_configuration(&mut self) {
        if !self.is_leader() || self.confs.current_index() > self.log.commit {
            return;
        }
        // Committed: the members of the configuration before it need nothing more.
        self.sync_progress();
        let conf = self.confs.current().clone();
        if conf.is_joint() {
            self.append_configuration(conf.leave_joint());
            return;
        }
        if conf.is_voter(self.config.id) {
            return;
        }
        let last = self.log.last_index();
        let successor = match &self.role {
            Role::Leader(l) => l
                .progress
                .iter()
                .find(|(id, p)| conf.voters.contains(id) && p.match_index == last)
                .map(|(id, _)| *id),
            _ => None,
        };
        log::info!(
            "node {}: not a voter in the committed configuration {conf}: stepping down",
            self.config.id
        );
        self.become_follower(self.term, NodeId::NONE);
        if let Some(id) = successor {
            self.send(id, Body::TimeoutNow);
        }
    }

    fn after_leader_append(&mut self) {
        // Nothing can commit here: no match index moved. A single-node cluster commits its
        // entry once its own disk has it (`advance`).
        self.broadcast_pending = true;
    }

    /// Asks for a linearizable read identified by `context` (thesis §6.4). The answer comes
    /// as a [`ReadState`] in a later `Ready`, or as a dropped read if leadership is lost.
    pub fn read_index(&mut self, context: u64) -> Result<(), StepError> {
        if self.is_leader() {
            self.leader_read(context, self.config.id);
        } else if self.leader.is_none() {
            return Err(StepError::NoLeader);
        } else {
            self.send(self.leader, Body::ReadIndex { context });
        }
        self.check_invariants();
        Ok(())
    }

    /// The host's durable snapshot now ends at `index` (which it has applied): the node
    /// discards the entries through it. From then on a follower that needs them receives
    /// that snapshot, asked of the host by a [`Ready`] (see [`Ready::snapshot_request`]).
    /// Returns false when the snapshot is not newer than the one the node knows of.
    pub fn compact(&mut self, index: LogIndex) -> bool {
        assert!(
            index <= self.log.applying,
            "compact({index}) beyond what was handed out to apply ({})",
            self.log.applying
        );
        if index <= self.stored.index {
            return false;
        }
        let term = if index == self.log.snapshot.index {
            self.log.snapshot.term
        } else {
            self.log.term(index).expect(
                "a snapshot at an index the host trimmed names its term: use snapshot_stored",
            )
        };
        self.snapshot_stored(SnapshotMeta { index, term });
        true
    }

    /// Like [`RawNode::compact`], for a host that trimmed the log past the snapshot's index
    /// already and so names its term too.
    pub fn snapshot_stored(&mut self, meta: SnapshotMeta) {
        assert!(
            meta.index <= self.log.applying,
            "snapshot at {} beyond what was handed out to apply ({})",
            meta.index,
            self.log.applying
        );
        if meta.index <= self.stored.index {
            return;
        }
        if meta.index > self.log.snapshot.index {
            self.log.compact(meta);
            self.confs.compact(meta.index);
        }
        self.stored = meta;
        self.check_invariants();
    }

    /// Drops the in-memory entries through `index` (which the host has applied) while the
    /// host keeps them in its storage: a leader asks for them back when a follower needs
    /// them ([`Ready::take_entries_wanted`]), so a host may keep fewer entries in memory than
    /// on disk without taking snapshots for it. Returns false when the log is already
    /// trimmed past `index`.
    pub fn trim(&mut self, index: LogIndex) -> bool {
        assert!(
            index <= self.log.applying,
            "trim({index}) beyond what was handed out to apply ({})",
            self.log.applying
        );
        if index <= self.log.snapshot.index {
            return false;
        }
        let term = self.log.term(index).expect("applied entry is in the log");
        self.log.compact(SnapshotMeta { index, term });
        self.confs.compact(index);
        self.check_invariants();
        true
    }

    /// The host's answer to an [`EntriesWanted`]: entries read from its storage, starting
    /// at the wanted `lo`. When the follower still needs them, they go out in an append
    /// (the first one only lends its term when it is the entry before the follower's next
    /// index). Entries that no longer fit what the follower needs are dropped; the node
    /// asks again at the follower's next answer.
    pub fn entries_fetched(&mut self, to: NodeId, mut entries: Vec<Entry>) {
        let stored = self.stored;
        let commit = self.log.commit;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let Some(p) = l.progress.get_mut(&to) else {
            return;
        };
        let next = p.next_index;
        let usable = !matches!(p.state, ProgressState::Snapshot { .. })
            && next > stored.index
            && entries.first().is_some_and(|e| e.index <= next);
        if !usable {
            return;
        }
        let prev_index = next.prev();
        let prev_term = if prev_index == stored.index {
            stored.term
        } else {
            match entries.iter().find(|e| e.index == prev_index) {
                Some(e) => e.term,
                None => return,
            }
        };
        entries.retain(|e| e.index >= next);
        if entries.is_empty() {
            return;
        }
        let last_sent = entries.last().expect("non-empty").index;
        if matches!(p.state, ProgressState::Replicate) {
            let bytes = entries.iter().map(Entry::payload_bytes).sum();
            p.next_index = last_sent.next();
            p.inflights.add(last_sent, bytes);
        }
        p.paused = !matches!(p.state, ProgressState::Replicate);
        self.send(
            to,
            Body::Append {
                prev_index,
                prev_term,
                commit: commit.min(last_sent),
                entries,
            },
        );
        self.check_invariants();
    }

    /// The host's answer to [`Ready::snapshot_request`]: a snapshot of committed state
    /// through at least the index the request named, read back from stable storage or taken
    /// for the occasion. The leader starts sending it to every follower that needs entries
    /// before its log and drops it once those followers have it. A snapshot that ends before
    /// the log starts (the log was compacted further meanwhile), that does not match the
    /// log, or that arrives when this node no longer leads, is dropped; the node asks again
    /// if a follower still needs one.
    pub fn provide_snapshot(&mut self, snapshot: Snapshot) {
        let marker = self.stored;
        let meta = snapshot.meta;
        let usable = if meta.index == marker.index {
            meta.term == marker.term
        } else {
            // Newer than the stored one (taken for the occasion): it must match the log
            // where the log still holds its last entry; between the stored snapshot and
            // the in-memory log every entry is committed, so any term there is the log's.
            meta.index > marker.index
                && meta.index <= self.log.commit
                && self.log.term(meta.index).is_none_or(|t| t == meta.term)
        };
        if !usable {
            log::info!(
                "node {}: dropped snapshot {}/{}: the log starts after {}/{}",
                self.config.id,
                meta.term,
                meta.index,
                marker.term,
                marker.index
            );
            self.check_invariants();
            return;
        }
        let Role::Leader(l) = &mut self.role else {
            self.check_invariants();
            return;
        };
        let snapshot = Arc::new(snapshot);
        let mut receivers = Vec::new();
        for (id, p) in &mut l.progress {
            let sending = matches!(p.state, ProgressState::Snapshot { .. });
            if p.next_index <= meta.index && !sending {
                p.become_snapshot(snapshot.clone());
                receivers.push(*id);
            }
        }
        for to in receivers {
            log::info!(
                "node {}: follower {to} needs entries through {}: sending snapshot {}/{}",
                self.config.id,
                meta.index,
                snapshot.meta.term,
                snapshot.meta.index
            );
            self.send_snapshot_chunk(to);
        }
        self.check_invariants();
    }

    /// Hands leadership to `target` (thesis §3.10): once it has our whole log it is told to
    /// start an election at once. Proposals are refused meanwhile.
    pub fn transfer_leader(&mut self, target: NodeId) -> Result<(), StepError> {
        // Only an incoming voter: a learner cannot win an election (and will not campaign),
        // and a voter on its way out would lose its vote when the change completes.
        if target == self.config.id || !self.confs.current().voters.contains(&target) {
            return Err(StepError::BadTransferTarget(target));
        }
        let last = self.log.last_index();
        let Role::Leader(l) = &mut self.role else {
            return Err(StepError::NotLeader);
        };
        l.transfer = Some((target, 0));
        let caught_up = l.progress[&target].match_index == last;
        log::info!(
            "node {}: transferring leadership to {target} at term {}",
            self.config.id,
            self.term
        );
        if caught_up {
            self.send(target, Body::TimeoutNow);
        } else {
            self.send_append(target, true);
        }
        self.check_invariants();
        Ok(())
    }

    /// The host lost its connection to `peer` in a way that says the process is gone (the
    /// connection was closed or reset, as when a process dies). When `peer` is this
    /// follower's leader, the follower stops honouring the leader's lease and campaigns
    /// after a short random delay (up to a quarter of the election timeout) instead of a
    /// full election timeout. Timers do not affect safety; pre-vote keeps a false alarm from
    /// disrupting a leader that is still alive, since followers that still hear from it
    /// refuse.
    pub fn report_unreachable(&mut self, peer: NodeId) {
        if !matches!(self.role, Role::Follower { .. }) || self.leader != peer || peer.is_none() {
            return;
        }
        log::info!(
            "node {}: lost the connection to leader {peer}; campaigning soon",
            self.config.id
        );
        self.leader = NodeId::NONE;
        self.election_elapsed = 0;
        let quarter = (self.config.election_timeout_ticks / 4).max(1);
        self.randomized_election_timeout = self.rng.gen_range(1..=quarter);
        self.check_invariants();
    }

    /// Feeds a message from another node.
    pub fn step(&mut self, m: Message) -> Result<(), StepError> {
        if m.to != self.config.id {
            return Err(StepError::WrongRecipient(m.to));
        }
        // Messages from nodes outside this node's configuration are taken: a leader may
        // know of a configuration this node has not received yet (this node's own
        // addition, say). Quorums count only the members of the configuration in use.
        if m.from.is_none() || m.from == self.config.id {
            return Err(StepError::UnknownPeer(m.from));
        }
        if self.step_term(&m) {
            self.step_role(m);
        }
        self.maybe_finish_repair();
        self.check_invariants();
        Ok(())
    }

    /// Figure 2's term rules, applied once for every message. Returns false when the
    /// message is finished with (stale, or ignored under the leader lease).
    fn step_term(&mut self, m: &Message) -> bool {
        if m.term > self.term {
            match m.body {
                Body::PreVote { .. } => return !self.in_lease(),
                Body::Vote { transfer, .. } => {
                    if self.in_lease() && !transfer {
                        return false;
                    }
                    self.become_follower(m.term, NodeId::NONE);
                }
                // A granted pre-vote carries the term we would campaign in.
                Body::PreVoteResponse { granted: true } => {}
                Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                    self.become_follower(m.term, m.from)
                }
                _ => self.become_follower(m.term, NodeId::NONE),
            }
            return true;
        }
        if m.term < self.term {
            match m.body {
                // A stale leader would otherwise never learn our term if it cannot win an
                // election (pre-vote keeps our term from reaching it): tell it.
                Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                    self.send(m.from, Body::HeartbeatResponse { read_seq: 0 })
                }
                Body::PreVote { .. } => self.send(m.from, Body::PreVoteResponse { granted: false }),
                // Figure 2: the answer carries our term, so a candidate behind it catches
                // up. Otherwise it may never: the nodes raising the term need not ask it
                // (their configuration may not hold it, or an older one), and with the
                // most up-to-date log it is the one that must win.
                Body::Vote { .. } => self.send(m.from, Body::VoteResponse { granted: false }),
                _ => {}
            }
            return false;
        }
        true
    }

    /// Thesis §9.6 / §6.2: while we hear from a leader we ignore elections elsewhere.
    fn in_lease(&self) -> bool {
        self.config.check_quorum
            && !self.leader.is_none()
            && self.election_elapsed < self.config.election_timeout_ticks
    }

    fn step_role(&mut self, m: Message) {
        match m.body {
            Body::PreVote {
                last_index,
                last_term,
            } => {
                let granted = m.term > self.term
                    && !self.repairing
                    && self.log.is_up_to_date(last_index, last_term);
                let term = if granted { m.term } else { self.term };
                self.send_with_term(m.from, term, Body::PreVoteResponse { granted });
            }
            Body::Vote {
                last_index,
                last_term,
                ..
            } => self.handle_vote(m.from, last_index, last_term),
            Body::PreVoteResponse { granted } | Body::VoteResponse { granted } => {
                self.handle_vote_response(m.from, m.term, &m.body, granted)
            }
            Body::Append { .. } | Body::Heartbeat { .. } | Body::Snapshot { .. } => {
                assert!(
                    !self.is_leader(),
                    "node {}: two leaders in term {} ({} and {})",
                    self.config.id,
                    self.term,
                    self.config.id,
                    m.from
                );
                if !matches!(self.role, Role::Follower { .. }) || self.leader != m.from {
                    self.become_follower(self.term, m.from);
                }
                self.election_elapsed = 0;
                match m.body {
                    Body::Append {
                        prev_index,
                        prev_term,
                        commit,
                        entries,
                    } => self.handle_append(m.from, prev_index, prev_term, commit, entries),
                    Body::Heartbeat { commit, read_seq } => {
                        self.handle_heartbeat(m.from, commit, read_seq)
                    }
                    Body::Snapshot {
                        meta,
                        configuration,
                        offset,
                        total_bytes,
                        data,
                    } => {
                        self.handle_snapshot(m.from, meta, configuration, offset, total_bytes, data)
                    }
                    _ => unreachable!(),
                }
            }
            Body::TimeoutNow => {
                if matches!(self.role, Role::Follower { .. }) {
                    log::info!(
                        "node {}: told by {} to start an election (leadership transfer)",
                        self.config.id,
                        m.from
                    );
                    self.campaign(true);
                }
            }
            Body::ReadIndex { context } => {
                if self.is_leader() {
                    self.leader_read(context, m.from);
                } else {
                    self.send(
                        m.from,
                        Body::ReadIndexResponse {
                            context,
                            index: LogIndex(0),
                        },
                    );
                }
            }
            Body::ReadIndexResponse { context, index } => {
                if index == LogIndex(0) {
                    self.dropped_reads.push(context);
                } else {
                    self.read_states.push(ReadState { context, index });
                }
            }
            Body::AppendResponse { .. }
            | Body::HeartbeatResponse { .. }
            | Body::SnapshotResponse { .. } => self.step_leader_response(m),
        }
    }

    fn handle_vote(&mut self, from: NodeId, last_index: LogIndex, last_term: Term) {
        let can_vote = self.vote == from || (self.vote.is_none() && self.leader.is_none());
        // A repairing node's log may lack entries it acknowledged: its vote could elect a
        // leader without them (see `Restore::repairing`).
        let granted = can_vote && !self.repairing && self.log.is_up_to_date(last_index, last_term);
        if granted {
            self.vote = from;
            self.election_elapsed = 0;
        }
        self.send(from, Body::VoteResponse { granted });
    }

    fn handle_vote_response(&mut self, from: NodeId, term: Term, body: &Body, granted: bool) {
        let me = self.config.id;
        let votes = match (&mut self.role, body) {
            // A grant carries the term we would campaign in; a refusal carries the
            // voter's own term, which is ours (a higher one made us step down already).
            (Role::PreCandidate { votes }, Body::PreVoteResponse { .. })
                if (granted && term == self.term.next_term())
                    || (!granted && term == self.term) =>
            {
                votes
            }
            (Role::Candidate { votes }, Body::VoteResponse { .. }) => votes,
            _ => return,
        };
        if granted {
            votes.granted.insert(from);
        } else {
            votes.rejected.insert(from);
        }
        let result = self.confs.current().vote_result(|id| {
            if id == me || votes.granted.contains(&id) {
                Some(true)
            } else {
                votes.rejected.contains(&id).then_some(false)
            }
        });
        let pre = matches!(self.role, Role::PreCandidate { .. });
        match result {
            VoteResult::Won if pre => self.become_candidate(false),
            VoteResult::Won => self.become_leader(),
            VoteResult::Lost => self.become_follower(self.term, NodeId::NONE),
            VoteResult::Pending => {}
        }
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        prev_index: LogIndex,
        prev_term: Term,
        commit: LogIndex,
        entries: Vec<Entry>,
    ) {
        self.leader_commit_sent = self.leader_commit_sent.max(commit);
        if let Err(why) = check_append(prev_index, prev_term, self.term, &entries) {
            log::error!(
                "node {}: dropping malformed append from {from}: {why}",
                self.config.id
            );
            return;
        }
        if prev_index < self.log.commit {
            // Everything up to our commit index matches the leader's log already; answer
            // with it so the leader moves on (possibly stale or duplicated message).
            let index = self.log.commit;
            self.send(
                from,
                Body::AppendResponse {
                    reject: None,
                    index,
                },
            );
            return;
        }
        match self.log.term(prev_index) {
            Some(t) if t == prev_term => {
                let confs: Vec<(LogIndex, Configuration)> = entries
                    .iter()
                    .filter(|e| e.kind == EntryKind::Config)
                    .map(|e| {
                        let conf = Configuration::decode(&e.data)
                            .expect("configuration checked by check_append");
                        (e.index, conf)
                    })
                    .collect();
                let (last_new, first_written) = self.log.merge(prev_index, entries);
                if let Some(first) = first_written {
                    self.follow_configurations(first, confs);
                }
                let commit = commit.min(last_new);
                if commit > self.log.commit {
                    self.log.commit_to(commit);
                }
                self.send(
                    from,
                    Body::AppendResponse {
                        reject: None,
                        index: last_new,
                    },
                );
            }
            _ => {
                let (index, term) = self.log.last_at_or_below(prev_index, prev_term);
                let hint = ConflictHint { term, index };
                self.send(
                    from,
                    Body::AppendResponse {
                        reject: Some(hint),
                        index: prev_index,
                    },
                );
            }
        }
    }

    /// The log was rewritten from `first` on: configurations of the lost entries go (the
    /// node falls back to the one before), those of the new entries take effect.
    fn follow_configurations(&mut self, first: LogIndex, confs: Vec<(LogIndex, Configuration)>) {
        let before = self.confs.current_index();
        self.confs.truncate_from(first);
        for (index, conf) in confs.into_iter().filter(|(i, _)| *i >= first) {
            self.confs.push(index, conf);
        }
        if self.confs.current_index() != before {
            log::info!(
                "node {}: uses configuration {} from index {}",
                self.config.id,
                self.confs.current(),
                self.confs.current_index()
            );
        }
    }

    fn handle_heartbeat(&mut self, from: NodeId, commit: LogIndex, read_seq: u64) {
        self.leader_commit_sent = self.leader_commit_sent.max(commit);
        if commit > self.log.last_index() {
            // The leader's match for us is past our log: a damaged disk made us cut entries
            // we had acknowledged. Refuse an append at `commit` so the leader probes again
            // (`Progress::decrease_to`) instead of waiting for new writes to find out.
            let (index, term) = self.log.last_at_or_below(commit, self.term);
            self.send(
                from,
                Body::AppendResponse {
                    reject: Some(ConflictHint { term, index }),
                    index: commit,
                },
            );
        }
        // The leader sends min(its commit, our match), so our log holds `commit` (unless a
        // damaged disk cut it: then the match is stale, and the clamp below keeps the commit
        // index within the log; see `maybe_finish_repair`).
        let commit = commit.min(self.log.last_index());
        if commit > self.log.commit {
            self.log.commit_to(commit);
        }
        self.send(from, Body::HeartbeatResponse { read_seq });
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_snapshot(
        &mut self,
        from: NodeId,
        meta: SnapshotMeta,
        configuration: Configuration,
        offset: u64,
        total_bytes: u64,
        data: Vec<u8>,
    ) {
        let stale = meta.index <= self.log.commit;
        let too_big = total_bytes > self.config.snapshot_bytes_max;
        if stale || too_big {
            if too_big {
                log::error!(
                    "node {}: refusing a {total_bytes}-byte snapshot (limit {})",
                    self.config.id,
                    self.config.snapshot_bytes_max
                );
            }
            self.send(
                from,
                Body::SnapshotResponse {
                    index: meta.index,
                    next_offset: total_bytes,
                    reject: true,
                },
            );
            return;
        }
        let Role::Follower { incoming } = &mut self.role else {
            unreachable!("became follower above");
        };
        // Chunk 0 starts a snapshot, unless it is a resend of the one being received.
        let same = incoming
            .as_ref()
            .is_some_and(|inc| inc.meta == meta && inc.total_bytes == total_bytes);
        if offset == 0 && !same {
            *incoming = Some(IncomingSnapshot {
                meta,
                configuration,
                total_bytes,
                data: Vec::new(),
            });
        }
        let next_offset = match incoming {
            Some(inc) if inc.meta == meta && inc.total_bytes == total_bytes => {
                if offset == inc.data.len() as u64 {
                    let room = (total_bytes - offset) as usize;
                    inc.data.extend_from_slice(&data[..data.len().min(room)]);
                }
                inc.data.len() as u64
            }
            _ => 0,
        };
        if next_offset == total_bytes {
            let inc = incoming.take().expect("complete snapshot");
            self.install_snapshot(Snapshot {
                meta: inc.meta,
                configuration: inc.configuration,
                data: inc.data,
            });
        }
        self.send(
            from,
            Body::SnapshotResponse {
                index: meta.index,
                next_offset,
                reject: false,
            },
        );
    }

    fn install_snapshot(&mut self, snapshot: Snapshot) {
        let meta = snapshot.meta;
        let discarded = self.log.install(meta);
        if discarded {
            self.confs = ConfHistory::new(meta.index, snapshot.configuration.clone());
        } else {
            self.confs
                .install(meta.index, snapshot.configuration.clone());
        }
        self.stored = meta;
        log::info!(
            "node {}: installed snapshot {}/{} from leader {} ({} bytes, log {})",
            self.config.id,
            meta.term,
            meta.index,
            self.leader,
            snapshot.data.len(),
            if discarded { "replaced" } else { "kept" }
        );
        self.snapshot_to_persist = Some(snapshot);
    }

    // ----- leader -----

    fn leader_read(&mut self, context: u64, from: NodeId) {
        let committed_in_term = self.log.term(self.log.commit) == Some(self.term);
        let commit = self.log.commit;
        // This node's acknowledgement alone is a quorum: it is the only voter.
        let me = self.config.id;
        let single = self.confs.current().quorum_value(|id| id == me) == Some(true);
        let Role::Leader(l) = &mut self.role else {
            unreachable!()
        };
        if !committed_in_term {
            l.reads_waiting_for_commit.push((context, from));
            return;
        }
        if single {
            self.answer_read(context, from, commit);
            return;
        }
        l.read_seq += 1;
        let read_seq = l.read_seq;
        l.pending_reads.push_back(PendingRead {
            context,
            index: commit,
            read_seq,
            from,
        });
        self.broadcast_heartbeat();
    }

    fn answer_read(&mut self, context: u64, from: NodeId, index: LogIndex) {
        if from == self.config.id {
            self.read_states.push(ReadState { context, index });
        } else {
            self.send(from, Body::ReadIndexResponse { context, index });
        }
    }

    /// Releases every pending read whose round a quorum has acknowledged.
    fn release_reads(&mut self) {
        let me = self.config.id;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        // A round is confirmed once a majority of every voter set acknowledged it (our
        // own acknowledgement counts where we vote); learners' answers count for nothing.
        let progress = &l.progress;
        let confirmed = self
            .confs
            .current()
            .quorum_value(|id| match progress.get(&id) {
                _ if id == me => u64::MAX,
                Some(p) => p.read_ack,
                None => 0,
            })
            .unwrap_or(0);
        let mut released = Vec::new();
        while l
            .pending_reads
            .front()
            .is_some_and(|r| r.read_seq <= confirmed)
        {
            released.push(l.pending_reads.pop_front().expect("front exists"));
        }
        for r in released {
            self.answer_read(r.context, r.from, r.index);
        }
    }

    fn broadcast_heartbeat(&mut self) {
        let commit = self.log.commit;
        let Role::Leader(l) = &self.role else {
            return;
        };
        let read_seq = l.read_seq;
        let beats: Vec<(NodeId, LogIndex)> = l
            .progress
            .iter()
            .map(|(id, p)| (*id, commit.min(p.match_index)))
            .collect();
        for (to, commit) in beats {
            self.send(to, Body::Heartbeat { commit, read_seq });
        }
    }

    fn step_leader_response(&mut self, m: Message) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let Some(p) = l.progress.get_mut(&m.from) else {
            return;
        };
        p.recent_active = true;
        match m.body {
            Body::AppendResponse {
                reject: None,
                index,
            } => {
                let moved = p.update(index);
                if let ProgressState::Probe = p.state {
                    if moved || index >= p.match_index {
                        p.become_replicate();
                    }
                } else {
                    p.inflights.free_to(index);
                }
                if moved {
                    self.maybe_commit();
                }
                self.send_more(m.from);
                self.maybe_finish_transfer(m.from);
            }
            Body::AppendResponse {
                reject: Some(hint),
                index,
            } => {
                let next = self.next_from_hint(index, hint);
                let Role::Leader(l) = &mut self.role else {
                    unreachable!()
                };
                let p = l.progress.get_mut(&m.from).expect("progress exists");
                if p.decrease_to(index, next) {
                    self.send_append(m.from, true);
                }
            }
            Body::HeartbeatResponse { read_seq } => {
                p.read_ack = p.read_ack.max(read_seq);
                // A snapshot chunk is answered by its own response; only when none came for
                // a few heartbeats is it taken as lost and sent again. Resending on every
                // heartbeat would start a new chunk/response chain each time, and the
                // chains multiply (and chunk 0 restarts the follower's buffer).
                let resend_chunk = match p.state {
                    ProgressState::Snapshot { .. } => {
                        p.snapshot_waits += 1;
                        p.snapshot_waits >= SNAPSHOT_CHUNK_RESEND_HEARTBEATS
                    }
                    _ => {
                        p.paused = false;
                        false
                    }
                };
                if let ProgressState::Replicate = p.state {
                    if p.inflights.full() {
                        p.inflights.free_first();
                    }
                }
                let behind = p.match_index < self.log.last_index();
                let snapshotting = matches!(p.state, ProgressState::Snapshot { .. });
                self.release_reads();
                if snapshotting {
                    if resend_chunk {
                        self.send_snapshot_chunk(m.from);
                    }
                } else if behind {
                    self.send_append(m.from, true);
                }
            }
            Body::SnapshotResponse {
                index,
                next_offset,
                reject,
            } => self.handle_snapshot_response(m.from, index, next_offset, reject),
            _ => unreachable!("not a leader response"),
        }
    }

    /// Where to probe after a refusal: right after our last entry at or below the hint's
    /// index whose term is at most the hint's term (see [`ConflictHint`]). When that entry
    /// has the hint's term exactly, the follower holds it too and the probe will match.
    fn next_from_hint(&self, rejected: LogIndex, hint: ConflictHint) -> LogIndex {
        let from = hint.index.min(rejected.prev());
        if from < self.log.snapshot.index {
            // Behind our snapshot: the probe will turn into sending it.
            return from.next();
        }
        self.log.last_at_or_below(from, hint.term).0.next()
    }

    fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        index: LogIndex,
        next_offset: u64,
        reject: bool,
    ) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let Some(p) = l.progress.get_mut(&from) else {
            return; // Not a member (any more).
        };
        let ProgressState::Snapshot {
            snapshot,
            acked_offset,
        } = &mut p.state
        else {
            return;
        };
        if snapshot.meta.index != index {
            return; // An answer about another snapshot.
        }
        let total = snapshot.data.len() as u64;
        if reject || next_offset >= total {
            // The follower holds the snapshot (or has committed past it): resume appends.
            p.match_index = p.match_index.max(index);
            p.become_probe();
            self.maybe_commit();
            self.send_append(from, true);
            return;
        }
        *acked_offset = next_offset;
        p.paused = false;
        self.send_snapshot_chunk(from);
    }

    fn maybe_finish_transfer(&mut self, from: NodeId) {
        let last = self.log.last_index();
        let Role::Leader(l) = &self.role else {
            return;
        };
        if let Some((target, _)) = l.transfer {
            if target == from && l.progress.get(&from).is_some_and(|p| p.match_index == last) {
                self.send(target, Body::TimeoutNow);
            }
        }
    }

    /// Sends what the window allows to one follower.
    fn send_more(&mut self, to: NodeId) {
        while self.send_append(to, false) {}
    }

    /// Sends one append (or snapshot chunk) to `to` if its progress allows. With
    /// `allow_empty`, an append without entries is sent as a probe. Returns true when an
    /// append with entries went out.
    fn send_append(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let commit = self.log.commit;
        let mut last = self.log.last_index();
        let first = self.log.first_index();
        let Role::Leader(l) = &mut self.role else {
            return false;
        };
        if let Some(&(removed_at, _)) = l.departing.get(&to) {
            // A removed node needs the log only up to the entry that removed it.
            last = last.min(removed_at);
        }
        // A member a moment ago: a configuration change may have removed it since.
        let Some(p) = l.progress.get_mut(&to) else {
            return false;
        };
        if p.is_paused() {
            return false;
        }
        if p.next_index < first && p.next_index > self.stored.index {
            // The entries are older than the in-memory log but still in the host's
            // storage: ask for them (with the one before, for its term) and wait; a
            // heartbeat answer retries.
            if !matches!(p.state, ProgressState::Probe) {
                p.become_probe();
            }
            p.paused = true;
            let lo = p.next_index.prev().max(self.stored.index.next());
            self.entries_wanted.insert(to, lo);
            return false;
        }
        if p.next_index < first {
            // Another follower may be receiving a snapshot that reaches past what this one
            // needs; share its bytes. Otherwise ask the host for one and wait (a heartbeat
            // answer retries).
            let marker = self.stored.index;
            let shared = l.progress.values().find_map(|q| match &q.state {
                ProgressState::Snapshot { snapshot, .. } if snapshot.meta.index >= marker => {
                    Some(snapshot.clone())
                }
                _ => None,
            });
            let p = l.progress.get_mut(&to).expect("progress exists");
            let Some(snapshot) = shared else {
                if !matches!(p.state, ProgressState::Probe) {
                    p.become_probe();
                }
                p.paused = true;
                self.snapshot_wanted = true;
                return false;
            };
            log::info!(
                "node {}: follower {to} needs entries before {first}: sending snapshot {}/{}",
                self.config.id,
                snapshot.meta.term,
                snapshot.meta.index
            );
            p.become_snapshot(snapshot);
            self.send_snapshot_chunk(to);
            return false;
        }
        let prev_index = p.next_index.prev();
        let prev_term = self.log.term(prev_index).expect("prev within the log");
        let entries = if p.next_index <= last {
            self.log
                .slice(p.next_index, last.next(), self.config.append_bytes_max)
        } else {
            Vec::new()
        };
        if entries.is_empty() && !allow_empty {
            return false;
        }
        let sent_entries = !entries.is_empty();
        match p.state {
            ProgressState::Replicate if sent_entries => {
                let last_sent = entries.last().expect("non-empty").index;
                let bytes = entries.iter().map(Entry::payload_bytes).sum();
                p.next_index = last_sent.next();
                p.inflights.add(last_sent, bytes);
            }
            ProgressState::Probe => p.paused = true,
            _ => {}
        }
        self.send(
            to,
            Body::Append {
                prev_index,
                prev_term,
                commit,
                entries,
            },
        );
        sent_entries
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) {
        let chunk_bytes = self.config.snapshot_chunk_bytes;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let Some(p) = l.progress.get_mut(&to) else {
            return;
        };
        let ProgressState::Snapshot {
            snapshot,
            acked_offset,
        } = &p.state
        else {
            return;
        };
        let total = snapshot.data.len() as u64;
        let start = (*acked_offset).min(total);
        let end = (start + chunk_bytes).min(total);
        let body = Body::Snapshot {
            meta: snapshot.meta,
            configuration: snapshot.configuration.clone(),
            offset: start,
            total_bytes: total,
            data: snapshot.data[start as usize..end as usize].to_vec(),
        };
        p.paused = true;
        p.snapshot_waits = 0;
        self.send(to, body);
    }

    /// Figure 8: commit the highest index a quorum holds, but only if it is of our term.
    fn maybe_commit(&mut self) {
        let me = self.config.id;
        let persisted = self.log.persisted;
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        // A majority of every voter set of the configuration in use (both halves while
        // joint); learners are not asked.
        let progress = &l.progress;
        let Some(candidate) = self
            .confs
            .current()
            .quorum_value(|id| match progress.get(&id) {
                _ if id == me => persisted,
                Some(p) => p.match_index,
                None => LogIndex(0),
            })
        else {
            return;
        };
        if candidate <= self.log.commit || self.log.term(candidate) != Some(self.term) {
            return;
        }
        self.log.commit_to(candidate);
        let Role::Leader(l) = &mut self.role else {
            unreachable!()
        };
        l.release_uncommitted_through(candidate);
        let waiting = std::mem::take(&mut l.reads_waiting_for_commit);
        for (context, from) in waiting {
            self.leader_read(context, from);
        }
        self.after_commit_configuration();
    }

    // ----- transitions -----

    fn campaign(&mut self, transfer: bool) {
        if self.repairing {
            // It may lack entries it acknowledged: its log must not win an election.
            return;
        }
        if !self.may_campaign() {
            // It heard from no leader for an election timeout: it knows none any more, so
            // it stops honouring a lease (§9.6) and answers the pre-votes of the voters that
            // can win. Without this a learner whose vote a joint configuration needs (it was
            // promoted, but has not received that entry) would ignore every campaign.
            self.leader = NodeId::NONE;
            return;
        }
        if self.config.pre_vote && !transfer {
            self.become_pre_candidate();
        } else {
            self.become_candidate(transfer);
        }
    }

    fn become_follower(&mut self, term: Term, leader: NodeId) {
        assert!(term >= self.term, "term regressed");
        let was_leader = self.is_leader();
        if term > self.term || self.leader != leader {
            // What another leader sent says nothing of this one's log.
            self.leader_commit_sent = LogIndex(0);
        }
        if term > self.term {
            self.term = term;
            self.vote = NodeId::NONE;
        }
        self.drop_leader_reads();
        if self.leader != leader && !leader.is_none() {
            log::info!(
                "node {}: following leader {leader} at term {term}",
                self.config.id
            );
        } else if was_leader {
            log::info!("node {}: stepped down at term {term}", self.config.id);
        }
        self.leader = leader;
        self.role = Role::Follower { incoming: None };
        self.broadcast_pending = false;
        // Figure 2: the election timer restarts on hearing from the leader or granting a
        // vote, not on merely learning a higher term. Restarting it here would let a
        // candidate that cannot win (its log is behind) keep the nodes that could win from
        // ever timing out, by raising the term over and over (without pre-vote).
        if was_leader {
            self.reset_election_timer();
        }
    }

    fn drop_leader_reads(&mut self) {
        let Role::Leader(l) = &mut self.role else {
            return;
        };
        let mut dropped: Vec<(u64, NodeId)> = l
            .pending_reads
            .drain(..)
            .map(|r| (r.context, r.from))
            .collect();
        dropped.append(&mut l.reads_waiting_for_commit);
        for (context, from) in dropped {
            if from == self.config.id {
                self.dropped_reads.push(context);
            } else {
                self.send(
                    from,
                    Body::ReadIndexResponse {
                        context,
                        index: LogIndex(0),
                    },
                );
            }
        }
    }

    fn become_pre_candidate(&mut self) {
        assert!(!self.is_leader(), "a leader does not campaign");
        log::debug!(
            "node {}: asking for pre-votes for term {}",
            self.config.id,
            self.term.next_term()
        );
        self.role = Role::PreCandidate {
            votes: Votes::default(),
        };
        self.leader = NodeId::NONE;
        self.reset_election_timer();
        if self.wins_alone() {
            self.become_candidate(false);
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        let term = self.term.next_term();
        for to in self.voter_peers() {
            self.send_with_term(
                to,
                term,
                Body::PreVote {
                    last_index,
                    last_term,
                },
            );
        }
    }

    fn become_candidate(&mut self, transfer: bool) {
        assert!(!self.is_leader(), "a leader does not campaign");
        self.term = self.term.next_term();
        self.vote = self.config.id;
        self.leader = NodeId::NONE;
        self.role = Role::Candidate {
            votes: Votes::default(),
        };
        self.reset_election_timer();
        log::info!(
            "node {}: campaigning at term {}{}",
            self.config.id,
            self.term,
            if transfer { " (transfer)" } else { "" }
        );
        if self.wins_alone() {
            self.become_leader();
            return;
        }
        let (last_index, last_term) = (self.log.last_index(), self.log.last_term());
        for to in self.voter_peers() {
            self.send(
                to,
                Body::Vote {
                    last_index,
                    last_term,
                    transfer,
                },
            );
        }
    }

    fn become_leader(&mut self) {
        assert!(
            matches!(self.role, Role::Candidate { .. }),
            "only a candidate becomes leader"
        );
        log::info!(
            "node {}: became leader at term {}",
            self.config.id,
            self.term
        );
        let next = self.log.last_index().next();
        let progress = self
            .peers()
            .into_iter()
            .map(|id| {
                let p = Progress::new(
                    next,
                    self.config.inflight_messages_max,
                    self.config.inflight_bytes_max,
                );
                (id, p)
            })
            .collect();
        self.role = Role::Leader(Box::new(LeaderState {
            progress,
            read_seq: 0,
            pending_reads: VecDeque::new(),
            reads_waiting_for_commit: Vec::new(),
            transfer: None,
            uncommitted_bytes: 0,
            uncommitted: VecDeque::new(),
            departing: BTreeMap::new(),
        }));
        self.leader = self.config.id;
        self.heartbeat_elapsed = 0;
        self.election_elapsed = 0;
        if self.config.noop_on_election {
            let index = self.log.last_index().next();
            self.log.push(Entry {
                term: self.term,
                index,
                kind: EntryKind::Noop,
                data: SharedBytes::new(),
            });
        }
        for to in self.peers() {
            self.send_append(to, true);
        }
        self.after_leader_append();
    }

    fn reset_election_timer(&mut self) {
        self.election_elapsed = 0;
        let base = self.config.election_timeout_ticks;
        self.randomized_election_timeout = self.rng.gen_range(base..2 * base);
    }

    // ----- output -----

    fn send(&mut self, to: NodeId, body: Body) {
        self.send_with_term(to, self.term, body);
    }

    /// Queues a message. A leader's replication traffic may leave before its own disk
    /// write; everything else (votes, answers) promises durable state and waits for it.
    fn send_with_term(&mut self, to: NodeId, term: Term, body: Body) {
        let now = self.is_leader()
            && matches!(
                body,
                Body::Append { .. }
                    | Body::Heartbeat { .. }
                    | Body::Snapshot { .. }
                    | Body::TimeoutNow
                    | Body::ReadIndexResponse { .. }
            );
        let m = Message {
            from: self.config.id,
            to,
            term,
            body,
        };
        if now {
            self.messages.push(m);
        } else {
            self.persisted_messages.push(m);
        }
    }

    /// True when `ready()` would have something for the host.
    pub fn has_ready(&self) -> bool {
        if self.ready_out {
            return false;
        }
        self.broadcast_pending
            || self.hard_state() != self.handed_hard_state
            || self.snapshot_to_persist.is_some()
            || self.snapshot_wanted
            || !self.entries_wanted.is_empty()
            || self.repair_finished
            || self.log.unstable_from <= self.log.last_index()
            || !self.messages.is_empty()
            || !self.persisted_messages.is_empty()
            || !self.read_states.is_empty()
            || !self.dropped_reads.is_empty()
            || self.log.applying < self.log.commit.min(self.log.persisted)
    }

    /// Collects what the host must do now. Panics if the previous `Ready` was not advanced.
    pub fn ready(&mut self) -> Ready {
        assert!(!self.ready_out, "ready() called before advance()");
        if self.broadcast_pending {
            self.broadcast_pending = false;
            for to in self.peers() {
                self.send_more(to);
            }
        }
        self.ready_number += 1;
        self.ready_out = true;
        let hs = self.hard_state();
        let hard_state = (hs != self.handed_hard_state).then_some(hs);
        let vote_changed =
            hs.term != self.handed_hard_state.term || hs.vote != self.handed_hard_state.vote;
        self.handed_hard_state = hs;
        let snapshot = self.snapshot_to_persist.take();
        // Asked only while leading: a follower's request is stale after a step-down.
        let snapshot_request =
            (std::mem::take(&mut self.snapshot_wanted) && self.is_leader()).then_some(self.stored);
        // Likewise: entries for followers are fetched only while leading.
        let wanted = std::mem::take(&mut self.entries_wanted);
        let first = self.log.first_index();
        let entries_wanted = if self.is_leader() {
            wanted
                .into_iter()
                .map(|(to, lo)| EntriesWanted {
                    to,
                    lo,
                    hi: first,
                    bytes_max: self.config.append_bytes_max,
                })
                .collect()
        } else {
            Vec::new()
        };
        if let Some(s) = &snapshot {
            self.log.applying = self.log.applying.max(s.meta.index);
        }
        let entries = self.log.take_unstable();
        let last_entry = entries.last().map(|e| (e.index, e.term));
        let apply_limit = self.log.commit.min(self.log.persisted);
        let committed_entries = if self.log.applying < apply_limit {
            self.log.slice(
                self.log.applying.next(),
                apply_limit.next(),
                self.config.apply_bytes_max,
            )
        } else {
            Vec::new()
        };
        if let Some(e) = committed_entries.last() {
            self.log.applying = e.index;
        }
        let ready = Ready {
            number: self.ready_number,
            hard_state,
            must_sync: vote_changed
                || !entries.is_empty()
                || snapshot.is_some()
                || self.repair_finished,
            snapshot,
            snapshot_request,
            entries_wanted,
            repair_finished: std::mem::take(&mut self.repair_finished),
            entries,
            messages: std::mem::take(&mut self.messages),
            persisted_messages: std::mem::take(&mut self.persisted_messages),
            committed_entries,
            read_states: std::mem::take(&mut self.read_states),
            dropped_reads: std::mem::take(&mut self.dropped_reads),
            last_entry,
            apply_to: self.log.applying,
        };
        self.check_invariants();
        ready
    }

    /// The host has done everything `ready` asked.
    pub fn advance(&mut self, ready: Ready) {
        assert!(
            self.ready_out && ready.number == self.ready_number,
            "advance() with a Ready that is not the outstanding one"
        );
        self.ready_out = false;
        if let Some((index, term)) = ready.last_entry {
            self.log.persisted_to(index, term);
        }
        self.log.applied = self.log.applied.max(ready.apply_to);
        if self.is_leader() {
            self.maybe_commit();
        }
        self.maybe_finish_repair();
        // Compacted entries are freed a slice per Ready rather than all at compaction.
        self.log.collect_garbage(crate::log::GARBAGE_PER_CALL);
        self.check_invariants();
    }

    /// Ends a repair once the log holds, durably, everything committed before the current
    /// leader's term: the commit index (learned from that leader) has reached an entry of
    /// its term, and everything through it is durable here. Every entry committed in an
    /// earlier term precedes that entry in the leader's log (Raft's leader completeness
    /// holds for leaders elected while this node abstained: its lost copies were one of a
    /// majority, and any electing majority of the other nodes meets the rest), so the log
    /// again holds whatever this node may have acknowledged and lost.
    fn maybe_finish_repair(&mut self) {
        // The commit index must have reached what the leader sent, unclamped: a leader's
        // heartbeat carries min(its commit, this node's match), and the match it knows dates
        // from before the damage, so clamped to a cut log it would name an index below
        // entries this node acknowledged (found by the whole-server simulator: the node
        // ended its repair early, won an election and lacked committed entries).
        if !self.repairing
            || self.leader.is_none()
            || self.leader_commit_sent == LogIndex(0)
            || self.log.commit < self.leader_commit_sent
            || self.log.persisted < self.log.commit
            || self.log.term(self.log.commit) != Some(self.term)
        {
            return;
        }
        self.repairing = false;
        self.repair_finished = true;
        log::warn!(
            "node {}: repair finished: the log holds everything committed through {} (term {}); voting again",
            self.config.id,
            self.log.commit,
            self.term
        );
    }

    // ----- helpers -----

    /// The nodes a leader replicates to: every other member, and until the configuration
    /// in use commits, the members of the one before too, so that a removed node receives
    /// the entry that removes it (and, knowing, stops campaigning) and a change that is
    /// lost with a crashed leader leaves no member without entries.
    fn peers(&self) -> Vec<NodeId> {
        let me = self.config.id;
        let mut members = self.confs.current().members();
        if self.confs.current_index() > self.log.commit {
            if let Some(previous) = self.confs.previous() {
                members.extend(previous.members());
            }
        }
        members.remove(&me);
        members.into_iter().collect()
    }

    /// Every other voter of either half: the nodes a candidate asks for votes.
    fn voter_peers(&self) -> Vec<NodeId> {
        let me = self.config.id;
        let conf = self.confs.current();
        conf.members()
            .into_iter()
            .filter(|&id| id != me && conf.is_voter(id))
            .collect()
    }

    /// A voter campaigns; a learner, a node not added yet, or one that knows it was removed
    /// does not (it has no vote to win with, and asking would only raise terms). A node
    /// that its latest configuration removes still campaigns until it knows that
    /// configuration committed (thesis §4.2.2): until then the others may need it, as when
    /// the leader removing it crashed after it alone took C_new — its log is then ahead of
    /// theirs, they cannot win, and it can, with a majority of C_new's voters.
    fn may_campaign(&self) -> bool {
        let me = self.config.id;
        self.confs.current().is_voter(me)
            || (self.confs.current_index() > self.log.commit
                && self.confs.previous().is_some_and(|p| p.is_voter(me)))
    }

    /// True when this node's own vote is a majority of every voter set.
    fn wins_alone(&self) -> bool {
        let me = self.config.id;
        self.confs
            .current()
            .vote_result(|id| (id == me).then_some(true))
            == VoteResult::Won
    }

    /// Asserted after every input; a failure is a bug in this crate.
    fn check_invariants(&mut self) {
        self.log.check_invariants();
        assert!(
            !self.repairing || matches!(self.role, Role::Follower { .. }),
            "a repairing node left the follower role"
        );
        assert!(
            self.stored.index <= self.log.snapshot.index,
            "the stored snapshot at {} is past the in-memory log's start {}",
            self.stored.index,
            self.log.snapshot.index
        );
        assert!(
            self.log.commit >= self.commit_floor,
            "commit index regressed from {} to {}",
            self.commit_floor,
            self.log.commit
        );
        self.commit_floor = self.log.commit;
        // No check that the vote went to a member: a candidate may come from a
        // configuration this node has not received yet.
        match &self.role {
            Role::Leader(l) => {
                assert_eq!(self.leader, self.config.id, "leader does not know itself");
                // Progress is kept for exactly the peers and the departing nodes (checked
                // both ways without building the set: this runs after every proposal).
                let me = self.config.id;
                let current = self.confs.current();
                let previous = self
                    .confs
                    .previous()
                    .filter(|_| self.confs.current_index() > self.log.commit);
                let expected = |id: NodeId| {
                    id != me
                        && (current.is_member(id)
                            || previous.is_some_and(|p| p.is_member(id))
                            || l.departing.contains_key(&id))
                };
                let wanted = current
                    .member_ids()
                    .chain(previous.into_iter().flat_map(|p| p.member_ids()))
                    .chain(l.departing.keys().copied())
                    .filter(|&id| id != me);
                assert!(
                    l.progress.keys().all(|&id| expected(id))
                        && wanted.into_iter().all(|id| l.progress.contains_key(&id)),
                    "leader's progress does not match the members of {}",
                    self.confs.current()
                );
                assert_eq!(self.vote, self.config.id, "leader did not vote for itself");
                for (id, p) in &l.progress {
                    assert!(
                        p.match_index < p.next_index,
                        "progress of {id}: match {} not below next {}",
                        p.match_index,
                        p.next_index
                    );
                    assert!(
                        p.match_index <= self.log.last_index(),
                        "progress of {id}: match beyond our log"
                    );
                }
            }
            Role::Candidate { .. } => {
                assert_eq!(
                    self.vote, self.config.id,
                    "candidate did not vote for itself"
                )
            }
            Role::PreCandidate { .. } | Role::Follower { .. } => {}
        }
    }
}

/// What an entry holding `data`, appended right after `previous`, keeps allocated: its
/// whole buffer (a client's write is a range of the read its frame came in), or only its
/// own bytes when `previous` is a range of the same buffer and was counted for it. The
/// ranges of one buffer are appended one after another, so the sum over uncommitted
/// entries is at least what they keep allocated, less at most the one buffer the first of
/// them shares with a committed entry, and at most twice it.
fn held_bytes(data: &SharedBytes, previous: Option<&Entry>) -> u64 {
    match previous {
        Some(p) if p.data.same_buffer(data) => data.len() as u64,
        _ => data.buffer_len() as u64,
    }
}

/// Validates an append from the network before it touches the log: entries must follow
/// `prev_index` contiguously with terms that never decrease and never pass the leader's.
fn check_append(
    prev_index: LogIndex,
    prev_term: Term,
    leader_term: Term,
    entries: &[Entry],
) -> Result<(), String> {
    if prev_term > leader_term {
        return Err(format!(
            "prev term {prev_term} above leader term {leader_term}"
        ));
    }
    let mut expect = (prev_index.next(), prev_term);
    for e in entries {
        if e.kind == EntryKind::Config {
            Configuration::decode(&e.data)
                .map_err(|why| format!("configuration entry {}: {why}", e.index))?;
        }
        if e.index != expect.0 || e.term < expect.1 || e.term > leader_term {
            return Err(format!(
                "entry {}/{} does not follow {}/{}",
                e.term,
                e.index,
                expect.1,
                expect.0.prev()
            ));
        }
        expect = (e.index.next(), e.term);
    }
    Ok(())
}

impl Term {
    /// The term after this one.
    pub const fn next_term(self) -> Term {
        Term(self.0 + 1)
    }
}
