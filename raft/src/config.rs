//! Configuration of one Raft node.

use crate::types::NodeId;

/// How a node behaves. Times are in ticks: the host decides how long a tick is (the daemon
/// uses wall-clock milliseconds, the simulator virtual time).
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: NodeId,
    /// The first configuration of a brand-new cluster: its voters. A node uses it only
    /// until its log or a snapshot says otherwise (see [`crate::Restore::configuration`]).
    /// A node joining an existing cluster passes none, or any list without itself: a node
    /// that is no voter never campaigns, and waits for the leader to reach it.
    pub voters: Vec<NodeId>,
    /// A follower that hears nothing from a leader for a random time in
    /// `[election_timeout_ticks, 2 × election_timeout_ticks)` starts an election.
    pub election_timeout_ticks: u64,
    /// A leader sends heartbeats this often. Must be well below the election timeout.
    pub heartbeat_interval_ticks: u64,
    /// Ask for pre-votes before raising the term (thesis §9.6).
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout steps down, and
    /// followers ignore vote requests while they hear from a leader (thesis §6.2, §9.6).
    pub check_quorum: bool,
    /// A new leader appends an empty entry so that it can commit earlier terms' entries and
    /// serve ReadIndex (§5.4.2, thesis §6.4). The lab tester counts indices exactly and
    /// expects no such entry, so its scenarios switch this off.
    pub noop_on_election: bool,
    /// At most this many appends in flight to one follower.
    pub inflight_messages_max: usize,
    /// At most this many payload bytes in flight to one follower.
    pub inflight_bytes_max: u64,
    /// At most this many payload bytes in one append (at least one entry is always sent).
    pub append_bytes_max: u64,
    /// A leader refuses proposals while its uncommitted entries keep more bytes allocated
    /// than this. An entry that is a range of a larger buffer (a client's write within the
    /// read its frame came in) counts that buffer, once for all its ranges in a row.
    pub uncommitted_bytes_max: u64,
    /// At most this many committed-entry bytes handed out in one `Ready`.
    pub apply_bytes_max: u64,
    /// Snapshots are sent in chunks of this size.
    pub snapshot_chunk_bytes: u64,
    /// A follower refuses snapshots larger than this (it buffers one in memory).
    pub snapshot_bytes_max: u64,
    /// Seed of the PRNG that randomizes election timeouts; the only randomness in the core.
    pub seed: u64,
}

impl Config {
    /// Defaults suited to a daemon ticking every millisecond: heartbeats every 100 ms,
    /// elections after 1–2 s of silence.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Config {
        Config {
            id,
            voters,
            election_timeout_ticks: 1000,
            heartbeat_interval_ticks: 100,
            pre_vote: true,
            check_quorum: true,
            noop_on_election: true,
            inflight_messages_max: 256,
            inflight_bytes_max: 8 << 20,
            append_bytes_max: 1 << 20,
            uncommitted_bytes_max: 64 << 20,
            apply_bytes_max: 16 << 20,
            snapshot_chunk_bytes: 256 << 10,
            snapshot_bytes_max: 4 << 30,
            seed: id.0,
        }
    }

    /// Checks the values make sense together; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.id.is_none() {
            return Err("node id must be non-zero".into());
        }
        let mut sorted = self.voters.clone();
        sorted.sort();
        sorted.dedup();
        if sorted.len() != self.voters.len() || sorted.contains(&NodeId::NONE) {
            return Err("voter ids must be distinct and non-zero".into());
        }
        if self.heartbeat_interval_ticks == 0 {
            return Err("heartbeat interval must be at least one tick".into());
        }
        if self.election_timeout_ticks <= self.heartbeat_interval_ticks {
            return Err("election timeout must be longer than the heartbeat interval".into());
        }
        if self.inflight_messages_max == 0 || self.inflight_bytes_max == 0 {
            return Err("the in-flight window must allow at least one message".into());
        }
        if self.snapshot_chunk_bytes == 0 || self.append_bytes_max == 0 {
            return Err("chunk and append sizes must be positive".into());
        }
        Ok(())
    }
}
