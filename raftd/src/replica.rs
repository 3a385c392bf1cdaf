//! One member of the cluster as a state machine: the consensus core, the write-ahead log, the
//! key-value store with its client sessions, and the glue between them, driven through narrow
//! interfaces and doing no network IO and reading no clock of its own.
//!
//! The host (the daemon's mio loop in [`crate::server`], or the deterministic simulator in
//! `tests/`) feeds it inputs — peer frames, client frames, lost peer connections — and calls
//! [`Replica::turn`] once per loop iteration: due ticks, expired reads, a finished snapshot,
//! then every `Ready` of the core (send what may leave now — a leader's appends leave before
//! its own fsync — write the hard state and entries to the WAL with one sync for the whole
//! batch, send what waited for the sync, apply committed entries, answer clients, advance).
//! Everything it sends and the time it reads go through [`Env`]; the disk goes through the
//! WAL's [`wal::Backend`], which the simulator replaces with a fault-injecting file system
//! that loses unsynced writes on a power cut.

use crate::backup_source::Backups;
use crate::consistency::{self, Change, Checkpoints};
use crate::kv::{HashKeys, Kv, SESSIONS_MAX_DEFAULT};
use crate::log_memory::LogMemory;
use crate::metrics::{Counters, Figures, RequestKind};
use crate::protocol::{
    CheckpointHash, CheckpointReport, Command, CommandRef, FaultSpec, MemberOp, Op, Outcome,
    Request, Response, Write as KvWrite, WriteRef, FRAME_CHECKPOINT, FRAME_RAFT, FRAME_REQUEST,
    FRAME_RESPONSE,
};
use crate::server::{ServerConfig, TICK_MS};
use raft::driver::{Driver, Host, Persisted, Write};
use raft::{
    codec, Body, Config, EntriesWanted, Entry, EntryKind, LogIndex, MemberChange, Message, NodeId,
    ProposeError, RawNode, ReadState, Restore, SharedBytes, Snapshot, SnapshotMeta, StepError,
};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::mpsc::{Receiver, Sender};
use std::time::Duration;
use wal::{Wal, WalOptions};

/// What a replica needs from its host: a clock, a way to send frames, and the fault layer.
///
/// Sending never fails from the replica's point of view: a frame to a peer may be lost
/// (Raft tolerates it, and the host counts drops), and a client that went away is no error
/// of the replica's.
pub trait Env {
    /// The host's handle of a client connection.
    type Client: Copy + std::fmt::Debug;
    /// Time since an arbitrary fixed origin; never goes backwards.
    fn now(&self) -> Duration;
    /// Queues a frame for peer `to`, whose body `encode` appends to the buffer it is handed
    /// (the transport's outbox, where the host can: the body is then not copied there from
    /// another buffer).
    fn send_peer(&mut self, to: u64, kind: u8, encode: impl FnOnce(&mut Vec<u8>));
    /// Queues a frame for a client connection.
    fn send_client(&mut self, client: Self::Client, kind: u8, body: &[u8]);
    /// Starts writing what was queued (the replica calls it before a disk write, so frames
    /// overlap the sync).
    fn flush(&mut self);
    /// Switches the host's fault layer (`raftctl fault`).
    fn set_faults(&mut self, spec: &FaultSpec);
    /// The host's view of its links for `status`: `{"peers": {"<id>": {...}}, "faults": {...}}`.
    fn link_status(&self) -> serde_json::Value;
    /// Where the members of the configuration listen (added or moved; a peer no longer in
    /// the list keeps its links, as a removed node must still learn of its removal), and
    /// whether to accept a node of this cluster not yet among them (a joining node).
    fn set_peers(&mut self, peers: &[(u64, SocketAddr)], accept_unknown_nodes: bool);
    /// Whether a client may run admin operations ([`Op::is_admin`]); with TLS client
    /// certificates, only those listed with `--admin-cn` may. Hosts without such rights
    /// (the simulator) allow everything.
    fn client_is_admin(&self, _client: Self::Client) -> bool {
        true
    }
    /// A function another thread may call to wake the host when background work is done.
    /// `None`: the host runs no threads, and slow work (writing a snapshot file) is done
    /// inline, which keeps a simulated run deterministic.
    fn waker(&self) -> Option<Box<dyn Fn() + Send>>;
    /// Waits for the disk on `wait` (the second half of `Wal::persist_start`) in the
    /// background, and wakes the loop when it is over; its outcome comes back from
    /// `sync_done`. One at a time. `Err(wait)`: the host cannot; the loop waits itself.
    fn sync_later(&mut self, wait: wal::SyncWait) -> Result<(), wal::SyncWait> {
        Err(wait)
    }
    /// The outcome of the wait `sync_later` started and how long it took, once it is over
    /// (`block`: waits until it is; `None` then only if the wait was lost).
    fn sync_done(&mut self, _block: bool) -> Option<(std::io::Result<()>, Duration)> {
        None
    }
}

/// A membership change waiting for the configuration it leads to to commit.
struct PendingChange<C> {
    client: C,
    request_id: u64,
    /// Where its (first) configuration entry is.
    index: LogIndex,
    /// The term it was proposed in: a new term means the leadership was lost.
    term: raft::Term,
    what: String,
}

/// A learner may be promoted only when its log is at most this many entries behind the
/// leader's: otherwise the new voter would slow every commit until it caught up.
const PROMOTE_LAG_MAX: u64 = 1000;

/// A client write waiting for its entry to apply.
struct PendingWrite<C> {
    client: C,
    request_id: u64,
    term: raft::Term,
    /// What the client asked for, and when (for the metrics).
    kind: RequestKind,
    arrived: Duration,
}

/// What the snapshot writer sends back: the durable file (not yet part of the log) and its
/// data's size in bytes.
type SnapshotWritten = Result<(wal::WrittenSnapshot, usize), wal::WalError>;

/// How far `Glue::write` got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wrote {
    /// Durable.
    Done,
    /// Written; the sync thread is waiting for the disk (`Replica::finish_sync`).
    Later,
    /// The disk is full; retry.
    NoSpace,
}

/// At start, the log after the snapshot is read back from the WAL this many entries at a
/// time (the committed entries the in-memory log will not keep are applied and dropped
/// after each read: see `replay_wal`)...
const RECOVERY_READ_ENTRIES: u64 = 4096;
/// ...or fewer, this many bytes of their data (so 4096 entries of 64 KiB are not 256 MiB).
const RECOVERY_READ_BYTES: u64 = 8 << 20;

/// How often pending reads are checked for expiry (see `Replica::expire_reads`).
const READ_SWEEP: Duration = Duration::from_millis(100);

/// How often a Ready stalled on a full disk is retried.
const DISK_FULL_RETRY: Duration = Duration::from_millis(500);

/// The scrubber reads a step this often (its rate's worth for the time between steps), so a
/// step at 4 MiB/s is 400 KiB: a millisecond or so of the loop's time.
const SCRUB_STEP: Duration = Duration::from_millis(100);

/// The scrubber reads this much less while the node writes faster than it reads (see
/// `Replica::scrub`).
const SCRUB_YIELD: u64 = 4;

/// Threads hashing the store at checkpoints at once, at most. Each holds a view of the store
/// (old records stay alive while it runs); a checkpoint applied while this many run is not
/// hashed (it answers "missing"), which only a flood of checkpoints makes happen.
const HASHES_RUNNING_MAX: usize = 2;

/// A client read waiting for confirmation or for the state machine to catch up.
struct PendingRead<C> {
    client: C,
    request_id: u64,
    key: Vec<u8>,
    /// When the read was asked for (ReadIndex rounds that never answer are expired).
    asked: Duration,
}

/// How the replica asked to be stopped (`raftctl kill`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopRequest {
    /// Flush what is queued and exit.
    Graceful,
    /// Stop at once, like kill -9.
    Crash,
}

/// The answer to `raftctl fault` and `raftctl kill --crash` on a node started without
/// `--enable-fault-injection`: breaking a node on purpose is a test tool, not something any
/// client that reaches the port may do.
pub const FAULT_INJECTION_OFF: &str =
    "fault injection is off; start raftd with --enable-fault-injection";

/// One member: the core, the driver of its Readies, and everything else (see the module docs).
pub struct Replica<E: Env> {
    raw: RawNode,
    driver: Driver,
    g: Glue<E>,
}

/// Everything of a member but the core: what the driver hands each Ready's parts to.
struct Glue<E: Env> {
    config: ServerConfig,
    env: E,
    wal: Wal,
    kv: Kv,
    /// The keys the store hashes with, kept for a store restored from a leader's snapshot.
    hash_keys: HashKeys,
    applied: LogIndex,
    /// The applied entries the core's in-memory log holds, by count and bytes (`trim_log`).
    log_memory: LogMemory,
    /// Writes by log index.
    pending_writes: BTreeMap<LogIndex, PendingWrite<E::Client>>,
    /// Reads by ReadIndex context (ordered, so expiry answers in the same order every run).
    pending_reads: BTreeMap<u64, PendingRead<E::Client>>,
    /// Confirmed reads waiting for `applied` to reach their index.
    reads_waiting: Vec<(LogIndex, PendingRead<E::Client>)>,
    next_read_context: u64,
    next_tick: Duration,
    /// When pending reads are next checked for expiry.
    next_read_sweep: Duration,
    wal_bytes_at_snapshot: u64,
    /// Bytes of the latest snapshot's data, and of log records appended since it: the
    /// snapshot ratio's two terms (`ServerConfig::snapshot_ratio`).
    snapshot_bytes: u64,
    log_bytes_since_snapshot: u64,
    started: Duration,
    /// Set by a stop request.
    stop: Option<StopRequest>,
    /// A Ready's write is waiting for disk space; it is retried from `retry_at`.
    stalled: bool,
    retry_at: Duration,
    /// No automatic snapshot before this (set after one failed for lack of space).
    snapshot_not_before: Duration,
    /// When the scrubber reads its next step.
    next_scrub: Duration,
    /// Bytes of log records appended since the scrubber's last step: while the node writes
    /// faster than the scrubber reads, it waits (see `Replica::scrub`).
    appended_since_scrub: u64,
    /// The scrubber found damage that a snapshot mends: take one even if nothing new was
    /// applied (it then rewrites the damaged snapshot file).
    mend: bool,
    /// The last damage the scrubber found, for `status`.
    last_damage: Option<String>,
    /// The thread the scrubber reads on, with a host that runs threads (started at the
    /// first step).
    scrubber: Option<ScrubThread>,
    /// A snapshot file being read back on a thread for a follower that needs it.
    snapshot_read: Option<Receiver<Result<Snapshot, wal::WalError>>>,
    /// The index of the configuration last handed to the host (`sync_members`).
    members_synced: Option<LogIndex>,
    /// The membership change this leader is carrying out.
    pending_change: Option<PendingChange<E::Client>>,
    /// Reused for encoding outgoing messages.
    encode_buffer: Vec<u8>,
    /// A snapshot file being written (by the writer thread, or already written inline).
    snapshot_job: Option<std::sync::mpsc::Receiver<SnapshotWritten>>,
    /// Operators waiting for `snapshot_job` to be installed (`raftctl snapshot ID`).
    snapshot_waiters: Vec<(E::Client, u64, RequestKind)>,
    /// Hashes of the store at checkpoints, this node's and its peers', and the alarm.
    checkpoints: Checkpoints,
    /// Where the hashing threads send (checkpoint index, hash)...
    hashes_sender: Sender<(u64, u64)>,
    /// ...and where the loop receives them.
    hashes_done: Receiver<(u64, u64)>,
    /// Hashing threads under way.
    hashes_running: usize,
    /// When the leader next proposes a checkpoint (its periodic consistency check).
    next_consistency_check: Duration,
    /// Backups of the store being served to `raftctl snapshot save`.
    backups: Backups,
    /// What the loop counts for the metrics (see [`crate::metrics`]).
    metrics: Counters,
    /// Test only (the `test-faults` feature, the `raftd-faulty` binary): the next put
    /// applied gets a changed value.
    #[cfg(feature = "test-faults")]
    corrupt_one_put: bool,
}

fn addr_of(config: &ServerConfig, id: u64) -> Option<SocketAddr> {
    config.peers.iter().find(|p| p.0 == id).map(|p| p.1)
}

impl<E: Env> Replica<E> {
    /// Opens the WAL in `wal_dir` (through `wal_options.backend`), recovers the store from
    /// the snapshot and the committed entries, and builds the core seeded with `seed`. The
    /// store hashes with `hash_keys` ([`HashKeys::random`] for the daemon; the simulator
    /// derives them from its seed). Errors are one clear line.
    pub fn open(
        config: ServerConfig,
        wal_dir: &Path,
        wal_options: WalOptions,
        seed: u64,
        hash_keys: HashKeys,
        env: E,
    ) -> Result<Replica<E>, String> {
        let (mut wal, recovered) = Wal::open(wal_dir, wal_options).map_err(|e| e.to_string())?;
        if let Some(torn) = &recovered.torn_tail {
            log::warn!("WAL: {torn}");
        }
        if let Some(repaired) = &recovered.repaired {
            log::error!(
                "node {}: DAMAGED WAL: {repaired}; this node may have lost entries it acknowledged, so it grants no votes and does not campaign until the leader has brought its log up to date (raftctl status shows \"repairing\")",
                config.id
            );
        } else if recovered.repairing {
            log::error!(
                "node {}: still REPAIRING a damaged WAL (found at an earlier start): granting no votes until the leader has brought the log up to date",
                config.id
            );
        }
        // The store is rebuilt from the snapshot's bytes, which are then dropped: the core
        // asks for them again only when a follower needs them.
        let snapshot = recovered.snapshot.unwrap_or_default();
        let snapshot_bytes = snapshot.data.len() as u64;
        let mut kv = if snapshot.is_empty() {
            Kv::new(SESSIONS_MAX_DEFAULT, hash_keys)
        } else {
            Kv::restore(&snapshot.data, SESSIONS_MAX_DEFAULT, hash_keys)
                .map_err(|e| format!("snapshot in {} does not load: {e}", wal_dir.display()))?
        };
        // The configuration where the core's log will start: the snapshot's, then each
        // configuration entry applied from the WAL below. None: no snapshot and no change
        // yet, so `--peers` is still the cluster's first configuration.
        let configuration = (!snapshot.is_empty()).then(|| snapshot.configuration.clone());
        let snapshot = snapshot.meta;
        let mut replay = Replay {
            kv: &mut kv,
            node: config.id,
            wal_dir,
            marker: snapshot,
            configuration,
        };
        let commit = recovered.hard_state.commit;
        let entries = replay_wal(&mut wal, &config, commit, recovered.last_index, &mut replay)?;
        let (marker, configuration) = (replay.marker, replay.configuration);
        let applied = marker.index;
        log::info!(
            "node {}: recovered term {} vote {} commit {}, snapshot at {}, log {}..={}, \
             applied through {} from the WAL",
            config.id,
            recovered.hard_state.term,
            recovered.hard_state.vote,
            recovered.hard_state.commit,
            snapshot.index,
            recovered.first_index,
            recovered.last_index,
            applied
        );
        // A joining node is no voter of its first configuration: it never campaigns and
        // learns the cluster's configuration from the leader.
        let voters: Vec<NodeId> = match config.join {
            true => Vec::new(),
            false => config.peers.iter().map(|p| NodeId(p.0)).collect(),
        };
        let mut rc = Config::new(NodeId(config.id), voters.clone());
        rc.heartbeat_interval_ticks = (config.heartbeat_ms / TICK_MS).max(1);
        rc.election_timeout_ticks =
            (config.election_ms / TICK_MS).max(rc.heartbeat_interval_ticks + 1);
        rc.seed = seed;
        let raw = RawNode::new(
            rc,
            Restore {
                hard_state: recovered.hard_state,
                snapshot,
                // Entries applied from the WAL above stay there: the core asks for them
                // back if a follower needs them.
                log_start: (marker != snapshot).then_some(marker),
                entries,
                repairing: recovered.repairing,
                configuration,
            },
        )?;
        let wal_bytes = wal.disk_bytes();
        let now = env.now();
        let (hashes_sender, hashes_done) = std::sync::mpsc::channel();
        let g = Glue {
            wal,
            env,
            kv,
            hash_keys,
            applied,
            log_memory: LogMemory::new(config.log_memory_entries, config.log_memory_bytes),
            pending_writes: BTreeMap::new(),
            pending_reads: BTreeMap::new(),
            reads_waiting: Vec::new(),
            next_read_context: 1,
            next_tick: now + Duration::from_millis(TICK_MS),
            next_read_sweep: now + READ_SWEEP,
            wal_bytes_at_snapshot: wal_bytes,
            snapshot_bytes,
            // What the log since the snapshot holds is not counted at a restart; the WAL's
            // files bound it from above (so the next snapshot may come early, never late).
            log_bytes_since_snapshot: wal_bytes.saturating_sub(snapshot_bytes),
            started: now,
            stop: None,
            stalled: false,
            retry_at: now,
            snapshot_not_before: now,
            next_scrub: now,
            appended_since_scrub: 0,
            mend: false,
            last_damage: None,
            scrubber: None,
            encode_buffer: Vec::with_capacity(64 << 10),
            snapshot_job: None,
            snapshot_waiters: Vec::new(),
            checkpoints: Checkpoints::new(config.id, config.peers.iter().map(|p| p.0).collect()),
            members_synced: None,
            pending_change: None,
            snapshot_read: None,
            hashes_sender,
            hashes_done,
            hashes_running: 0,
            backups: Backups::default(),
            metrics: Counters::new(recovered.hard_state.commit.0, applied.0),
            next_consistency_check: now.saturating_add(consistency_period(&config)),
            #[cfg(feature = "test-faults")]
            corrupt_one_put: false,
            config,
        };
        let mut replica = Replica {
            raw,
            driver: Driver::new(),
            g,
        };
        replica.sync_members();
        Ok(replica)
    }

    /// Where node `id` listens: the configuration's address, else `--peers`'.
    fn address_of(&self, id: u64) -> Option<SocketAddr> {
        let conf = self.raw.configuration();
        conf.addresses
            .get(&NodeId(id))
            .and_then(|a| a.parse().ok())
            .or_else(|| addr_of(&self.g.config, id))
    }

    /// After the configuration in use changed (appended, restored or cut back): tells the
    /// host where the members listen, the consistency check whom to expect, and a joining
    /// node whether it is a member yet.
    fn sync_members(&mut self) {
        let index = self.raw.configuration_index();
        if self.g.members_synced == Some(index) {
            return;
        }
        self.g.members_synced = Some(index);
        let conf = self.raw.configuration().clone();
        let me = NodeId(self.g.config.id);
        let peers: Vec<(u64, SocketAddr)> = conf
            .members()
            .into_iter()
            .filter(|&id| id != me)
            .filter_map(|id| self.address_of(id.0).map(|a| (id.0, a)))
            .collect();
        let accept_unknown = self.g.config.join && !conf.is_member(me);
        self.g.env.set_peers(&peers, accept_unknown);
        self.g
            .checkpoints
            .set_members(conf.members().into_iter().map(|id| id.0).collect());
        log::info!(
            "node {}: configuration at index {index}: {conf}",
            self.g.config.id
        );
    }

    /// A membership change asked of this node (see [`Op::ChangeMembers`]).
    fn change_members(
        &mut self,
        client: E::Client,
        request_id: u64,
        change: MemberOp,
        id: u64,
        address: String,
    ) {
        if !self.raw.is_leader() {
            let outcome = self.not_leader();
            return self
                .g
                .reply(client, request_id, RequestKind::ChangeMembers, outcome);
        }
        if self.g.pending_change.is_some() {
            let outcome = refused("another membership change is in progress; wait for it".into());
            return self
                .g
                .reply(client, request_id, RequestKind::ChangeMembers, outcome);
        }
        let target = NodeId(id);
        let mut addresses: BTreeMap<NodeId, String> = BTreeMap::new();
        // Every member's address goes into the configuration, so a node that joins learns
        // where all the others are (the first configuration came from `--peers`).
        for member in self.raw.configuration().members() {
            if let Some(a) = self.address_of(member.0) {
                addresses.insert(member, a.to_string());
            }
        }
        let change = match change {
            MemberOp::AddLearner => {
                match address.parse::<SocketAddr>() {
                    Ok(a) if !a.ip().is_unspecified() && a.port() != 0 => {
                        addresses.insert(target, a.to_string());
                    }
                    _ => {
                        let outcome = refused(format!(
                            "'{address}' is not an address other nodes can dial (IP:PORT)"
                        ));
                        return self.g.reply(
                            client,
                            request_id,
                            RequestKind::ChangeMembers,
                            outcome,
                        );
                    }
                }
                MemberChange::AddLearner(target)
            }
            MemberOp::Promote => {
                let status = self.raw.status();
                let behind = status
                    .progress
                    .iter()
                    .find(|p| p.0 == target)
                    .map(|p| status.last_index.0.saturating_sub(p.1 .0));
                if let Some(behind) = behind.filter(|&b| b > PROMOTE_LAG_MAX) {
                    let outcome = refused(format!(
                        "learner {id} is {behind} entries behind the leader's log; promote it once it has caught up (raftctl member list shows its match index)"
                    ));
                    return self
                        .g
                        .reply(client, request_id, RequestKind::ChangeMembers, outcome);
                }
                MemberChange::Promote(target)
            }
            MemberOp::Remove => MemberChange::Remove(target),
        };
        match self
            .raw
            .propose_conf_change_addressed(&[change], &addresses)
        {
            Ok(index) => {
                log::info!(
                    "node {}: membership change proposed at index {index}: {change}",
                    self.g.config.id
                );
                self.g.pending_change = Some(PendingChange {
                    client,
                    request_id,
                    index,
                    term: self.raw.term(),
                    what: change.to_string(),
                });
            }
            Err(ProposeError::NotLeader { .. }) => {
                let outcome = self.not_leader();
                self.g
                    .reply(client, request_id, RequestKind::ChangeMembers, outcome);
            }
            Err(e @ ProposeError::ConfChangeNotReady) => {
                // The error says to retry already.
                let outcome = refused(e.to_string());
                self.g
                    .reply(client, request_id, RequestKind::ChangeMembers, outcome);
            }
            Err(e) => self.g.reply(
                client,
                request_id,
                RequestKind::ChangeMembers,
                refused(e.to_string()),
            ),
        }
    }

    /// Answers the membership change in progress once the configuration it leads to is
    /// committed here (the leader leaves a joint configuration by itself), or once this node
    /// lost the leadership it was proposed under (then the outcome is unknown).
    fn finish_change(&mut self) {
        let Some(p) = &self.g.pending_change else {
            return;
        };
        let conf_index = self.raw.configuration_index();
        let conf = self.raw.configuration();
        if self.raw.commit_index() >= p.index.max(conf_index) && !conf.is_joint() {
            let detail = format!("{} committed: {conf}", p.what);
            let p = self.g.pending_change.take().expect("checked");
            self.g.reply(
                p.client,
                p.request_id,
                RequestKind::ChangeMembers,
                done(detail),
            );
        } else if !self.raw.is_leader() || self.raw.term() != p.term {
            let p = self.g.pending_change.take().expect("checked");
            let outcome = unavailable(format!(
                "leadership changed before {} was committed; it may or may not take effect (see raftctl member list)",
                p.what
            ));
            self.g
                .reply(p.client, p.request_id, RequestKind::ChangeMembers, outcome);
        }
    }

    /// The host's side of this replica.
    pub fn env(&self) -> &E {
        &self.g.env
    }

    /// The host's side of this replica, mutable.
    pub fn env_mut(&mut self) -> &mut E {
        &mut self.g.env
    }

    /// The consensus core (for status and the simulator's checkers).
    pub fn raw(&self) -> &RawNode {
        &self.raw
    }

    /// The key-value store.
    pub fn kv(&self) -> &Kv {
        &self.g.kv
    }

    /// A clean stop: makes what the WAL holds in memory but has not synced (a commit index
    /// written without a sync, which nothing waits for) durable, so the next start finds
    /// no torn tail. Failure is only logged: everything acknowledged is already durable.
    pub fn close(&mut self) {
        // A persist's wait under way ends first (the sync thread is waiting for the disk).
        if self.g.wal.is_persisting() {
            let result = match self.g.env.sync_done(true) {
                Some((result, _)) => result,
                None => Err(std::io::Error::other("the WAL sync thread is gone")),
            };
            if let Err(e) = self.g.wal.persist_finish(result) {
                log::warn!("node {}: last WAL sync at stop: {e}", self.g.config.id);
                return;
            }
        }
        if let Err(e) = self.g.wal.persist() {
            log::warn!("node {}: last WAL sync at stop: {e}", self.g.config.id);
        }
    }

    /// The write-ahead log (for the simulator's checks of the scrubber).
    pub fn wal(&self) -> &wal::Wal {
        &self.g.wal
    }

    /// The index of the last entry applied to the store.
    pub fn applied(&self) -> LogIndex {
        self.g.applied
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &ServerConfig {
        &self.g.config
    }

    /// Set once a client asked the node to stop.
    pub fn stop_requested(&self) -> Option<StopRequest> {
        self.g.stop
    }

    /// When the next tick is due: the host's poll timeout ends there.
    pub fn next_deadline(&self) -> Duration {
        self.g.next_tick
    }

    /// One iteration of the loop after the inputs: due ticks, expired reads, a finished
    /// snapshot, then every Ready. An error is fatal (the WAL failed): stop the node.
    pub fn turn(&mut self) -> Result<(), String> {
        let now = self.g.env.now();
        while self.g.next_tick <= now {
            self.raw.tick();
            self.g.next_tick += Duration::from_millis(TICK_MS);
        }
        if self.g.next_read_sweep <= now {
            self.g.expire_reads(now);
            self.g.next_read_sweep = now + READ_SWEEP;
        }
        self.g.finish_checkpoint_hashes();
        self.g.backups.expire(now);
        self.periodic_checkpoint(now);
        self.finish_sync()?;
        // The WAL is only read while a persist's wait is under way: installing a snapshot
        // and scrubbing wait for a turn without one.
        if !self.g.wal.is_persisting() {
            self.finish_snapshot()?;
            self.scrub(now);
        }
        self.finish_snapshot_read();
        let result = self.drain_ready();
        self.g.metrics.leader_seen(self.raw.leader().0);
        result
    }

    /// Finishes the persist whose wait the sync thread finished, if it has: the WAL marks
    /// it durable, and the driver goes on with what waited for it (the messages, the
    /// entries to apply) and the Readies since.
    fn finish_sync(&mut self) -> Result<(), String> {
        if !self.g.wal.is_persisting() {
            return Ok(());
        }
        let Some((result, took)) = self.g.env.sync_done(false) else {
            return Ok(());
        };
        self.g.wal.persist_finish(result).map_err(fatal)?;
        self.g.metrics.wal_synced(took);
        self.driver.write_done(&mut self.raw, &mut self.g)
    }

    /// Hands the core a snapshot that a thread finished reading back for a follower.
    fn finish_snapshot_read(&mut self) {
        use std::sync::mpsc::TryRecvError;
        let Some(read) = &self.g.snapshot_read else {
            return;
        };
        match read.try_recv() {
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Disconnected) => {
                log::error!("node {}: the snapshot reader thread died", self.g.config.id);
                self.g.snapshot_read = None;
            }
            Ok(result) => {
                self.g.snapshot_read = None;
                match result {
                    Ok(snapshot) => self.raw.provide_snapshot(snapshot),
                    Err(e) => log::error!(
                        "node {}: cannot read the snapshot back for a follower: {e}",
                        self.g.config.id
                    ),
                }
            }
        }
    }

    /// One scrubber step when due: reads `scrub_bytes_per_sec` worth of the WAL's files
    /// for the time since the last step and checks their CRCs. Damage found is recorded
    /// by the WAL (the repair marker) and mended by a snapshot: every entry the damaged
    /// file holds is also in memory or in the store, so a snapshot past it lets the
    /// damaged segment be deleted, or rewrites the damaged snapshot file. A segment
    /// holding entries not yet applied stays until a later pass finds it again.
    ///
    /// The scrubber yields to writing: when the log grew by more than a step would read
    /// since the last step, the step reads a quarter of that. What a node writing that fast
    /// holds on disk is young (segments are compacted and the snapshot file rewritten within
    /// seconds or minutes), while the reads compete with the writes clients wait for: at 256
    /// clients the scrubber at 4 MiB/s cost about 1 µs per write of the three nodes' CPU (a
    /// tenth), and its reads count against a throttled virtual disk's budget. Every file is
    /// still read, a pass only takes longer; an idle or lightly loaded node scrubs at the
    /// full rate.
    fn scrub(&mut self, now: Duration) {
        // A step read on the scrubber's thread comes back here (a turn without a persist
        // in flight, which `scrub_end` needs).
        if let Some(thread) = &mut self.g.scrubber {
            if thread.out {
                let Ok(job) = thread.done.try_recv() else {
                    return;
                };
                thread.out = false;
                let outcome = self.g.wal.scrub_end(job);
                self.scrubbed(outcome);
            }
        }
        let rate = self.g.config.scrub_bytes_per_sec;
        if rate == 0 || now < self.g.next_scrub {
            return;
        }
        self.g.next_scrub = now + SCRUB_STEP;
        let mut budget = (rate.saturating_mul(SCRUB_STEP.as_millis() as u64) / 1000).max(4096);
        if std::mem::take(&mut self.g.appended_since_scrub) > budget {
            budget = (budget / SCRUB_YIELD).max(4096);
            self.g.metrics.scrub_yielded();
        }
        if self.g.scrubber.is_none() {
            if let Some(wake) = self.g.env.waker() {
                self.g.scrubber = ScrubThread::start(wake, self.g.config.id);
            }
        }
        match &mut self.g.scrubber {
            // The reads happen on the thread: one behind a busy disk (a snapshot being
            // written, the other nodes' syncs on a shared disk) took up to 170 ms, and the
            // loop waited for all of them.
            Some(thread) => match self.g.wal.scrub_begin(budget as usize) {
                wal::ScrubBegin::Job(job) => match thread.jobs.send(job) {
                    Ok(()) => thread.out = true,
                    Err(std::sync::mpsc::SendError(job)) => {
                        // The thread is gone: the step is read here, and so are the next.
                        self.g.scrubber = None;
                        let mut job = job;
                        job.run();
                        let outcome = self.g.wal.scrub_end(job);
                        self.scrubbed(outcome);
                    }
                },
                wal::ScrubBegin::PassFinished | wal::ScrubBegin::Busy => {}
            },
            None => {
                let outcome = self.g.wal.scrub(budget as usize);
                self.scrubbed(outcome);
            }
        }
    }

    /// Reports what a scrubber step found.
    fn scrubbed(&mut self, outcome: Result<wal::ScrubStep, wal::WalError>) {
        let id = self.g.config.id;
        match outcome {
            Ok(step) => {
                if let Some(damage) = step.damage {
                    let text = format!(
                        "{} at offset {}: {}",
                        damage.file.display(),
                        damage.offset,
                        damage.what
                    );
                    log::error!(
                        "node {id}: DAMAGED WAL found by the scrubber: {text}; taking a snapshot to replace what is damaged (its entries are all in memory or in the store)"
                    );
                    self.g.last_damage = Some(text);
                    self.g.mend = true;
                }
            }
            Err(e) => log::error!("node {id}: the scrubber found damage but: {e}"),
        }
    }

    /// Proposes a checkpoint (the leader's periodic check does; so does the simulator):
    /// every node will hash its store right after applying it. Returns its index.
    pub fn propose_checkpoint(&mut self) -> Result<LogIndex, ProposeError> {
        let command = Command {
            client_id: 0,
            seq: 0,
            write: KvWrite::Checkpoint,
        };
        self.raw.propose(command.encode())
    }

    /// This node's hash of its store at the checkpoint at `index` (0: its latest), and the
    /// index it answers for.
    pub fn checkpoint(&self, index: u64) -> (u64, CheckpointHash) {
        self.g.checkpoints.answer(index, self.g.applied.0)
    }

    /// Every node's hash this node knows at the checkpoint at `index` (its own, and those
    /// its peers reported), by node id.
    pub fn checkpoint_hashes(&self, index: u64) -> Option<&BTreeMap<u64, u64>> {
        self.g.checkpoints.hashes(index)
    }

    /// The consistency alarm: a divergence this node found (see [`crate::consistency`]).
    pub fn alarm(&self) -> Option<&str> {
        self.g.checkpoints.alarm().map(|a| a.text.as_str())
    }

    /// The figures for a metrics scrape, but the host's (its links and connections, which
    /// the host fills in).
    pub fn figures(&self) -> Figures {
        let wal = &self.g.wal;
        Figures {
            id: self.g.config.id,
            leader: self.raw.leader().0,
            term: self.raw.term().0,
            commit: self.raw.commit_index().0,
            applied: self.g.applied.0,
            proposals_pending: self.g.pending_writes.len() as u64,
            repairing: self.raw.status().repairing,
            alarm: self.alarm().map(str::to_string),
            wal_bytes: wal.disk_bytes(),
            wal_segments: wal.segment_count() as u64,
            wal_segments_unfilled: wal.segments_unfilled(),
            wal_segments_reused: wal.segments_reused(),
            snapshot_index: wal.snapshot_meta().index.0,
            scrub: wal.scrub_totals(),
            clients: 0,
            connections_rejected: 0,
            client_frames_dropped: 0,
            peers: Vec::new(),
            counters: self.g.metrics.clone(),
        }
    }

    /// Test only: the next put this node applies gets a changed value, so that its store
    /// diverges from the others' while every CRC still passes.
    #[cfg(feature = "test-faults")]
    pub fn corrupt_one_put(&mut self) {
        self.g.corrupt_one_put = true;
    }

    /// The leader's periodic consistency check: a checkpoint every
    /// `consistency_check_secs` (a node that becomes leader waits a whole period first).
    fn periodic_checkpoint(&mut self, now: Duration) {
        if self.g.config.consistency_check_secs == 0 {
            return;
        }
        if !self.raw.is_leader() {
            self.g.next_consistency_check = now.saturating_add(consistency_period(&self.g.config));
            return;
        }
        if now < self.g.next_consistency_check {
            return;
        }
        self.g.next_consistency_check = now.saturating_add(consistency_period(&self.g.config));
        match self.propose_checkpoint() {
            Ok(index) => log::debug!(
                "node {}: consistency check: checkpoint proposed at index {index}",
                self.g.config.id
            ),
            // Back-pressure or a lost leadership: the next period tries again.
            Err(e) => log::warn!(
                "node {}: consistency check: cannot propose a checkpoint: {e}",
                self.g.config.id
            ),
        }
    }

    /// A frame from peer `from`. The entries a message carries keep slices of `body`.
    pub fn on_peer_frame(&mut self, from: u64, kind: u8, body: SharedBytes) {
        if kind == FRAME_CHECKPOINT {
            match CheckpointReport::decode(&body) {
                Ok(r) => {
                    let change = self.g.checkpoints.peer(from, r.index, r.hash);
                    self.g.log_consistency(change);
                }
                Err(e) => log::warn!(
                    "node {}: undecodable checkpoint report from peer {from}: {e}",
                    self.g.config.id
                ),
            }
            return;
        }
        if kind != FRAME_RAFT {
            log::warn!(
                "node {}: unknown frame kind {kind} from peer {from}",
                self.g.config.id
            );
            return;
        }
        match codec::decode_shared(&body) {
            Ok(m) if m.from == NodeId(from) => self.step(m),
            Ok(m) => log::warn!(
                "node {}: peer {from} sent a message claiming to be from {}; dropped",
                self.g.config.id,
                m.from
            ),
            Err(e) => log::warn!(
                "node {}: undecodable message from peer {from}: {e}",
                self.g.config.id
            ),
        }
    }

    /// A frame from a client connection. An error is fatal (an operator's snapshot found
    /// the WAL failed). A write's entry keeps a slice of `body`.
    pub fn on_client_frame(
        &mut self,
        client: E::Client,
        kind: u8,
        body: SharedBytes,
    ) -> Result<(), String> {
        if kind != FRAME_REQUEST {
            self.g.reply(
                client,
                0,
                RequestKind::Invalid,
                refused(format!("unknown frame kind {kind}")),
            );
            return Ok(());
        }
        // A write goes to the log as the request carries it: checked, not decoded into
        // owned parts and encoded again (the path every write of a busy leader takes).
        if let Some(Ok((id, command, bytes))) = Request::split_write(&body) {
            let kind = RequestKind::of_write(command.write);
            let bytes = body.slice_ref(bytes);
            self.propose(client, id, kind, bytes);
            return Ok(());
        }
        match Request::decode(&body) {
            Ok(req) => self.handle_request(client, req),
            Err(e) => {
                self.g.reply(
                    client,
                    0,
                    RequestKind::Invalid,
                    refused(format!("bad request: {e}")),
                );
                Ok(())
            }
        }
    }

    /// The connection to peer `id` was lost: the core stops pipelining to it.
    pub fn on_peer_down(&mut self, id: u64) {
        log::info!("node {}: lost connection to peer {id}", self.g.config.id);
        self.raw.report_unreachable(NodeId(id));
    }

    fn step(&mut self, m: Message) {
        if let Body::HeartbeatResponse { read_seq } = m.body {
            let now = self.g.env.now();
            self.g.metrics.heartbeat_answered(m.from.0, read_seq, now);
        }
        let was_leader = self.raw.is_leader();
        if let Err(e) = self.raw.step(m) {
            match e {
                StepError::UnknownPeer(_) | StepError::WrongRecipient(_) => {
                    log::warn!("node {}: {e}", self.g.config.id)
                }
                _ => {}
            }
        }
        if was_leader && !self.raw.is_leader() {
            log::warn!(
                "node {}: lost leadership at term {}",
                self.g.config.id,
                self.raw.term()
            );
        }
    }

    fn handle_request(&mut self, client: E::Client, req: Request) -> Result<(), String> {
        let id = req.request_id;
        let kind = RequestKind::of(&req.op);
        if req.op.is_admin() && !self.g.env.client_is_admin(client) {
            log::warn!(
                "node {}: refused an admin operation from a client without admin rights: {kind:?}",
                self.g.config.id
            );
            let reason = "refused: an admin operation, and this client's certificate is not listed as admin (raftd --admin-cn); nothing was done";
            self.g.reply(client, id, kind, refused(reason.into()));
            return Ok(());
        }
        match req.op {
            Op::Write(command) => self.propose(client, id, kind, command.encode().into()),
            Op::Get { key } => {
                let context = self.g.next_read_context;
                self.g.next_read_context += 1;
                match self.raw.read_index(context) {
                    Ok(()) => {
                        self.g.pending_reads.insert(
                            context,
                            PendingRead {
                                client,
                                request_id: id,
                                key,
                                asked: self.g.env.now(),
                            },
                        );
                    }
                    Err(e) => {
                        self.g
                            .reply(client, id, kind, unavailable(format!("cannot read: {e}")))
                    }
                }
            }
            Op::Status => {
                let status = self.status_json();
                self.g.reply(client, id, kind, Outcome::Status(status));
            }
            Op::Snapshot => self.request_snapshot(client, id, kind)?,
            Op::TransferLeader { target } => {
                let outcome = match self.raw.transfer_leader(NodeId(target)) {
                    Ok(()) => done(format!("transferring leadership to node {target}")),
                    Err(StepError::NotLeader) => self.not_leader(),
                    Err(e) => refused(e.to_string()),
                };
                self.g.reply(client, id, kind, outcome);
            }
            Op::Fault(_) | Op::Shutdown { crash: true } if !self.g.config.fault_injection => {
                let what = match kind {
                    RequestKind::Fault => "fault",
                    _ => "kill --crash",
                };
                log::warn!(
                    "node {}: refused a {what} request: {FAULT_INJECTION_OFF}",
                    self.g.config.id
                );
                self.g
                    .reply(client, id, kind, refused(FAULT_INJECTION_OFF.into()));
            }
            Op::Fault(spec) => {
                let detail = describe_faults(&spec);
                self.g.env.set_faults(&spec);
                log::warn!("node {}: fault layer set: {detail}", self.g.config.id);
                self.g.reply(client, id, kind, done(detail));
            }
            Op::Shutdown { crash } => {
                self.g.reply(
                    client,
                    id,
                    kind,
                    done(format!("node {} stopping", self.g.config.id)),
                );
                self.g.env.flush();
                self.g.stop = Some(if crash {
                    StopRequest::Crash
                } else {
                    StopRequest::Graceful
                });
            }
            Op::ChangeMembers {
                change,
                id: node,
                address,
            } => self.change_members(client, id, change, node, address),
            Op::Checkpoint { index } => {
                let applied = self.g.applied.0;
                let (index, hash) = self.g.checkpoints.answer(index, applied);
                let outcome = Outcome::Checkpoint {
                    index,
                    applied,
                    hash,
                };
                self.g.reply(client, id, kind, outcome);
            }
            Op::Backup { backup_id, offset } => {
                let outcome = self.backup(backup_id, offset);
                self.g.reply(client, id, kind, outcome);
            }
        }
        Ok(())
    }

    /// A backup's next chunk, or (id 0) a new backup of the store at the applied index, on
    /// the leader only, so that it holds every committed write acknowledged so far.
    fn backup(&mut self, backup_id: u64, offset: u64) -> Outcome {
        let now = self.g.env.now();
        if backup_id != 0 {
            return self.g.backups.chunk(backup_id, offset, now);
        }
        if !self.raw.is_leader() {
            return self.not_leader();
        }
        let index = self.g.applied;
        let Some(term) = self.raw.term_at(index) else {
            return unavailable(format!(
                "the term of applied index {index} is unknown; retry"
            ));
        };
        let view = self.g.kv.snapshot_view();
        let threads = self.g.env.waker().is_some();
        self.g.backups.start(view, index.0, term.0, threads, now)
    }

    /// Proposes a client's write, `command` being its encoding as the log holds it.
    fn propose(
        &mut self,
        client: E::Client,
        request_id: u64,
        kind: RequestKind,
        command: SharedBytes,
    ) {
        match self.raw.propose(command) {
            Ok(index) => {
                let term = self.raw.term();
                self.g.pending_writes.insert(
                    index,
                    PendingWrite {
                        client,
                        request_id,
                        term,
                        kind,
                        arrived: self.g.env.now(),
                    },
                );
            }
            Err(ProposeError::NotLeader { .. }) => {
                let outcome = self.not_leader();
                self.g.reply(client, request_id, kind, outcome);
            }
            Err(e) => {
                self.g.metrics.proposal_failed();
                self.g
                    .reply(client, request_id, kind, unavailable(e.to_string()));
            }
        }
    }

    fn not_leader(&self) -> Outcome {
        let leader = self.raw.leader().0;
        let address = self
            .address_of(leader)
            .map(|a| a.to_string())
            .unwrap_or_default();
        Outcome::NotLeader { leader, address }
    }

    fn maybe_snapshot(&mut self) -> Result<(), String> {
        let since = self
            .g
            .applied
            .0
            .saturating_sub(self.g.wal.snapshot_meta().index.0);
        let wal_growth = self
            .g
            .wal
            .disk_bytes()
            .saturating_sub(self.g.wal_bytes_at_snapshot);
        let ratio = self.g.config.snapshot_ratio;
        let due = (since >= self.g.config.snapshot_entries
            || (since > 0 && wal_growth >= self.g.config.snapshot_wal_bytes))
            && self.g.log_bytes_since_snapshot >= ratio.saturating_mul(self.g.snapshot_bytes);
        if (due || self.g.mend)
            && self.g.snapshot_job.is_none()
            && self.g.env.now() >= self.g.snapshot_not_before
        {
            let mend = std::mem::take(&mut self.g.mend);
            self.g.start_snapshot(&self.raw, mend)?;
        }
        Ok(())
    }

    /// Drops applied entries beyond the newest `log_memory_entries`, or beyond
    /// `log_memory_bytes` of their data, from memory, in steps (see [`LogMemory`]; the core
    /// frees them a slice per Ready). They stay in the WAL until the next snapshot; a
    /// follower that needs them gets them read back from it (`fetch_entries`).
    fn trim_log(&mut self) {
        let start = self.raw.snapshot_meta().index;
        if let Some(index) = self.g.log_memory.trim_point(start, self.g.applied) {
            self.raw.trim(index);
            self.g.log_memory.dropped_through(index);
        }
    }

    /// Installs a snapshot whose file the writer thread finished, if it has.
    fn finish_snapshot(&mut self) -> Result<(), String> {
        use std::sync::mpsc::TryRecvError;
        let Some(job) = &self.g.snapshot_job else {
            return Ok(());
        };
        let (written, bytes) = match job.try_recv() {
            Err(TryRecvError::Empty) => return Ok(()),
            Err(TryRecvError::Disconnected) => {
                return Err("the snapshot writer thread died".into());
            }
            Ok(Err(wal::WalError::NoSpace { .. })) => {
                self.g.snapshot_postponed();
                return Ok(());
            }
            Ok(Err(e)) => return Err(fatal(e)),
            Ok(Ok(done)) => done,
        };
        self.g.snapshot_job = None;
        let meta = written.meta();
        let (index, term) = (meta.index, meta.term);
        // Installing appends a marker record, which may need a new segment: a full disk
        // here is no failure either (found by the whole-server simulator, which stopped a
        // node for it). The file stays behind without its marker; recovery ignores such a
        // file and the next installed snapshot deletes it.
        match self.g.wal.install_snapshot_file(written) {
            Ok(true) => {}
            // A newer snapshot (from the leader) got there first.
            Ok(false) => {
                let newer = self.g.wal.snapshot_meta().index;
                self.g.answer_snapshot_waiters(done(format!(
                    "a newer snapshot (at index {newer}) was installed meanwhile"
                )));
                return Ok(());
            }
            Err(wal::WalError::NoSpace { .. }) => {
                self.g.snapshot_postponed();
                return Ok(());
            }
            Err(e) => return Err(fatal(e)),
        }
        self.raw.snapshot_stored(meta);
        self.g.snapshot_taken(bytes);
        self.g.metrics.snapshot_saved(self.g.env.now(), bytes);
        log::info!(
            "node {}: snapshot taken at index {index} term {term} ({bytes} bytes, {} keys now); WAL now {} bytes",
            self.g.config.id,
            self.g.kv.len(),
            self.g.wal.disk_bytes()
        );
        self.g
            .answer_snapshot_waiters(done(format!("snapshot taken at index {index} term {term}")));
        Ok(())
    }

    /// An operator's snapshot request: snapshots the store at the applied index on the
    /// writer thread, as the schedule does (encoding a large store took the loop 26 s at
    /// 10 million keys), and answers when the snapshot is installed (`finish_snapshot`).
    /// One already being written answers this request too.
    fn request_snapshot(
        &mut self,
        client: E::Client,
        request_id: u64,
        kind: RequestKind,
    ) -> Result<(), String> {
        if self.g.snapshot_job.is_none() {
            self.g.start_snapshot(&self.raw, false)?;
        }
        if self.g.snapshot_job.is_none() {
            let detail = format!(
                "nothing new to snapshot (snapshot at {}, applied {})",
                self.g.wal.snapshot_meta().index,
                self.g.applied
            );
            self.g.reply(client, request_id, kind, done(detail));
        } else {
            self.g.snapshot_waiters.push((client, request_id, kind));
        }
        Ok(())
    }

    fn status_json(&self) -> String {
        let s = self.raw.status();
        let links = self.g.env.link_status();
        let conf = self.raw.configuration();
        let member_role = |id: NodeId| match (conf.is_voter(id), conf.is_learner(id)) {
            (true, _) => "voter",
            (false, true) => "learner",
            _ => "none",
        };
        let peers: Vec<serde_json::Value> = conf
            .members()
            .into_iter()
            .map(|id| id.0)
            .filter(|&id| id != self.g.config.id)
            .map(|id| {
                let addr = self
                    .address_of(id)
                    .map(|a| a.to_string())
                    .unwrap_or_default();
                let (m, n, inflight) = s
                    .progress
                    .iter()
                    .find(|p| p.0 .0 == id)
                    .map(|p| (p.1 .0, p.2 .0, p.3))
                    .unwrap_or((0, 0, 0));
                let mut peer = serde_json::json!({
                    "id": id,
                    "address": addr,
                    "member_role": member_role(NodeId(id)),
                    "match": m,
                    "next": n,
                    "inflight": inflight,
                });
                if let (Some(link), Some(peer)) = (
                    links["peers"][id.to_string()].as_object(),
                    peer.as_object_mut(),
                ) {
                    peer.extend(link.clone());
                }
                peer
            })
            .collect();
        serde_json::json!({
            "id": s.id.0,
            "address": self.address_of(s.id.0).map(|a| a.to_string()),
            "cluster": self.g.config.cluster_id,
            "role": s.role.to_string(),
            "member_role": member_role(s.id),
            "configuration": {
                "index": self.raw.configuration_index().0,
                "voters": conf.voters.iter().map(|id| id.0).collect::<Vec<_>>(),
                "outgoing": conf.outgoing.iter().map(|id| id.0).collect::<Vec<_>>(),
                "learners": conf.learners.iter().map(|id| id.0).collect::<Vec<_>>(),
            },
            "term": s.term.0,
            "vote": s.vote.0,
            "leader": s.leader.0,
            "commit": s.commit.0,
            "applied": self.g.applied.0,
            "first_index": s.first_index.0,
            "memory_first_index": s.memory_first_index.0,
            "memory_applied_bytes": self.g.log_memory.held_bytes(),
            "repairing": s.repairing,
            "last_index": s.last_index.0,
            "snapshot_index": self.g.wal.snapshot_meta().index.0,
            "wal_bytes": self.g.wal.disk_bytes(),
            "wal_segments": self.g.wal.segment_count(),
            "wal_segments_unfilled": self.g.wal.segments_unfilled(),
            "wal_segments_reused": self.g.wal.segments_reused(),
            "wal_write": self.g.config.wal_write.name(),
            "scrub": {
                "bytes_per_sec": self.g.config.scrub_bytes_per_sec,
                "passes": self.g.wal.scrub_totals().passes,
                "bytes": self.g.wal.scrub_totals().bytes,
                "damage_found": self.g.wal.scrub_totals().damage_found,
                "damaged_files": self.g.wal.damaged_files().iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                "last_damage": self.g.last_damage,
            },
            "keys": self.g.kv.len(),
            "sessions": self.g.kv.session_count(),
            "alarm": self.g.checkpoints.alarm().map(|a| a.text.clone()),
            "checkpoint": self.g.checkpoints.latest().map(|(index, hashes)| {
                let hashes: serde_json::Map<String, serde_json::Value> = hashes
                    .iter()
                    .map(|(node, &h)| (node.to_string(), consistency::hex(h).into()))
                    .collect();
                serde_json::json!({"index": index, "hashes": hashes})
            }),
            "uptime_ms": (self.g.env.now() - self.g.started).as_millis() as u64,
            "faults": links["faults"],
            "peers": peers,
        })
        .to_string()
    }

    /// Handles every Ready the core has through the driver (see `raft::driver` for the
    /// order). A Ready whose disk write failed for lack of space stays in the driver and is
    /// retried; meanwhile the node sends nothing and acknowledges nothing, which Raft treats
    /// like a slow node.
    fn drain_ready(&mut self) -> Result<(), String> {
        self.driver.run(&mut self.raw, &mut self.g)?;
        self.sync_members();
        self.finish_change();
        if !self.driver.is_waiting() {
            self.maybe_snapshot()?;
            self.trim_log();
        }
        self.g.env.flush();
        Ok(())
    }
}

impl<E: Env> Host for Glue<E> {
    type Error = String;

    fn send(&mut self, m: Message) {
        self.send_message(&m);
    }

    /// Writes what the Ready asks to the WAL, with one sync. A full disk stalls the write:
    /// what was written stays written, the rest is retried every `DISK_FULL_RETRY`. Any
    /// other WAL failure is fatal.
    fn persist(&mut self, w: &mut Write) -> Result<Persisted, String> {
        let now = self.env.now();
        if self.stalled && now < self.retry_at {
            return Ok(Persisted::Stalled);
        }
        // The leader's appends and the answers leave now, overlapping the disk write.
        self.env.flush();
        let wrote = self.write(w)?;
        if wrote == Wrote::Later {
            return Ok(Persisted::Later);
        }
        if wrote == Wrote::NoSpace {
            if !self.stalled {
                log::error!(
                    "node {}: disk full: acknowledging nothing until space is freed (retrying every {:?})",
                    self.config.id,
                    DISK_FULL_RETRY
                );
            }
            self.stalled = true;
            self.retry_at = now + DISK_FULL_RETRY;
            return Ok(Persisted::Stalled);
        }
        if self.stalled {
            log::warn!(
                "node {}: disk space is back; persisting and acknowledging again",
                self.config.id
            );
            self.stalled = false;
        }
        Ok(Persisted::Done)
    }

    fn apply(
        &mut self,
        _raw: &mut RawNode,
        entries: Vec<Entry>,
        reads: Vec<ReadState>,
        dropped_reads: Vec<u64>,
    ) {
        if entries.len() >= WARM_MIN_ENTRIES {
            let writes: Vec<(u64, &[u8])> = entries.iter().filter_map(written_key).collect();
            self.kv.warm(&writes);
        }
        for entry in entries {
            self.apply_entry(entry);
        }
        for rs in reads {
            self.read_confirmed(rs);
        }
        for context in dropped_reads {
            if let Some(r) = self.pending_reads.remove(&context) {
                let outcome =
                    unavailable("leadership changed before the read was confirmed".into());
                self.reply(r.client, r.request_id, RequestKind::Get, outcome);
            }
        }
        self.serve_waiting_reads();
    }

    /// Reads the latest snapshot back from its file for a follower that fell behind it. The
    /// bytes live only while that follower is being sent them. With a host that runs
    /// threads the file (up to gigabytes) is read on one, so the loop keeps serving, and
    /// handed to the core when it is done (`finish_snapshot_read`); the simulator reads it
    /// here. A failed read is logged, not fatal: the core asks again at the lagging
    /// follower's next heartbeat answer.
    fn snapshot_for_follower(&mut self, _raw: &RawNode, meta: SnapshotMeta) -> Option<Snapshot> {
        let stored = self.wal.snapshot_meta();
        let reader = match self.wal.snapshot_reader() {
            Some(reader) if stored.index >= meta.index => reader,
            _ => {
                log::error!(
                    "node {}: a follower needs snapshot {}/{}, but the WAL holds {}",
                    self.config.id,
                    meta.term,
                    meta.index,
                    stored.index
                );
                return None;
            }
        };
        let Some(wake) = self.env.waker() else {
            return match reader.read() {
                Ok(snapshot) => Some(snapshot),
                Err(e) => {
                    log::error!(
                        "node {}: cannot read snapshot {}/{} back for a follower: {e}",
                        self.config.id,
                        meta.term,
                        meta.index
                    );
                    None
                }
            };
        };
        if self.snapshot_read.is_some() {
            return None; // Being read already; the core gets it when it is done.
        }
        let (done, result) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("snapshot-reader".into())
            .spawn(move || {
                let _ = done.send(reader.read());
                wake();
            });
        match spawned {
            Ok(_) => self.snapshot_read = Some(result),
            Err(e) => log::error!(
                "node {}: cannot start the snapshot reader thread: {e}",
                self.config.id
            ),
        }
        None
    }

    /// Reads entries older than the in-memory log back from the WAL for a follower. A
    /// failed read is logged, not fatal (the core asks again). A damaged entry is never
    /// sent: the node takes a snapshot of its store (whole in memory) past it, which the
    /// follower is then sent instead, and which lets the damaged segment be deleted.
    fn fetch_entries(&mut self, raw: &RawNode, wanted: EntriesWanted) -> Option<Vec<Entry>> {
        match self.wal.entries(wanted.lo, wanted.hi, wanted.bytes_max) {
            Ok(entries) if !entries.is_empty() => Some(entries),
            Ok(_) => None,
            Err(e @ wal::WalError::Corrupt { .. }) => {
                log::error!(
                    "node {}: DAMAGED WAL: {e}; follower {} is sent a snapshot instead, taken now",
                    self.config.id,
                    wanted.to
                );
                if self.snapshot_job.is_none() {
                    if let Err(e) = self.start_snapshot(raw, false) {
                        log::error!("node {}: {e}", self.config.id);
                    }
                }
                None
            }
            Err(e) => {
                log::error!(
                    "node {}: cannot read entries {}..{} back for follower {}: {e}",
                    self.config.id,
                    wanted.lo,
                    wanted.hi,
                    wanted.to
                );
                None
            }
        }
    }
}

impl<E: Env> Glue<E> {
    /// Writes what the Ready asks to the WAL, with one sync. Returns false when the disk is
    /// full (see `persist`).
    fn write(&mut self, w: &mut Write) -> Result<Wrote, String> {
        let batch = w.entries.len();
        if let Some(snapshot) = w.snapshot.take() {
            match self.wal.save_snapshot(&snapshot) {
                Ok(()) => self.install_snapshot(snapshot)?,
                Err(wal::WalError::NoSpace { .. }) => {
                    w.snapshot = Some(snapshot);
                    return Ok(Wrote::NoSpace);
                }
                Err(e) => return Err(fatal(e)),
            }
        }
        // Entries before the hard state: the WAL refuses to overwrite entries at or below
        // the commit index it was last told, and this Ready's commit may cover entries that
        // replace a conflicting tail in the same batch. One sync covers both.
        if !w.entries.is_empty() {
            match self.wal.append(&w.entries) {
                Ok(()) => {
                    let bytes = w
                        .entries
                        .iter()
                        .map(|e| wal::format::entry_record_bytes(e) as u64)
                        .sum::<u64>();
                    self.log_bytes_since_snapshot += bytes;
                    self.appended_since_scrub += bytes;
                    w.entries.clear();
                }
                Err(wal::WalError::NoSpace { .. }) => return Ok(Wrote::NoSpace),
                Err(e) => return Err(fatal(e)),
            }
        }
        if let Some(hs) = w.hard_state {
            match self.wal.set_hard_state(hs) {
                Ok(()) => w.hard_state = None,
                Err(wal::WalError::NoSpace { .. }) => return Ok(Wrote::NoSpace),
                Err(e) => return Err(fatal(e)),
            }
        }
        // A batch of `sync_later_min_entries` or more waits for the disk in the background
        // where the host can (a thread; the simulator: a later event) while the loop goes
        // on, unless the repair's end must follow the sync here.
        if w.sync && !w.repair_finished && batch >= self.config.sync_later_min_entries {
            match self.wal.persist_start() {
                Ok(Some(wait)) => {
                    w.sync = false;
                    if let Err(wait) = self.env.sync_later(wait) {
                        let started = self.env.now();
                        let result = wait.wait();
                        self.wal.persist_finish(result).map_err(fatal)?;
                        self.metrics
                            .wal_synced(self.env.now().saturating_sub(started));
                        return Ok(Wrote::Done);
                    }
                    return Ok(Wrote::Later);
                }
                Ok(None) => w.sync = false, // Done whole (a directory or vote copy to sync).
                Err(wal::WalError::NoSpace { .. }) => return Ok(Wrote::NoSpace),
                Err(e) => return Err(fatal(e)),
            }
        }
        if w.sync {
            let started = self.env.now();
            match self.wal.persist() {
                Ok(()) => self
                    .metrics
                    .wal_synced(self.env.now().saturating_sub(started)),
                Err(wal::WalError::NoSpace { .. }) => return Ok(Wrote::NoSpace),
                Err(e) => return Err(fatal(e)),
            }
        }
        if w.repair_finished {
            self.wal.finish_repair().map_err(fatal)?;
            w.repair_finished = false;
            log::warn!(
                "node {}: repair finished: the damaged log is whole again; an ordinary voter again",
                self.config.id
            );
        }
        Ok(Wrote::Done)
    }

    fn reply(&mut self, client: E::Client, request_id: u64, kind: RequestKind, outcome: Outcome) {
        self.metrics.answered(kind, &outcome);
        // The buffer messages are encoded in serves replies too (no allocation per reply).
        let mut body = std::mem::take(&mut self.encode_buffer);
        body.clear();
        Response {
            request_id,
            outcome,
        }
        .encode_into(&mut body);
        // A client that went away is no error of ours.
        self.env.send_client(client, FRAME_RESPONSE, &body);
        self.encode_buffer = body;
    }

    /// Answers a client's write: counted, with the time since it arrived, and as failed
    /// unless it was applied.
    fn answer_write(&mut self, w: PendingWrite<E::Client>, outcome: Outcome) {
        if !matches!(
            outcome,
            Outcome::Written { .. } | Outcome::CasMismatch { .. }
        ) {
            self.metrics.proposal_failed();
        }
        self.metrics
            .proposal_done(self.env.now().saturating_sub(w.arrived));
        self.reply(w.client, w.request_id, w.kind, outcome);
    }

    fn send_message(&mut self, m: &Message) {
        if let Body::Heartbeat { read_seq, .. } = m.body {
            self.metrics
                .heartbeat_sent(m.to.0, read_seq, self.env.now());
        }
        // Encoded straight into the outbox. Losing a message is within Raft's model; the
        // transport counts drops.
        self.env
            .send_peer(m.to.0, FRAME_RAFT, |out| codec::encode(m, out));
    }

    /// Loads a snapshot from the leader (already saved in the WAL) into the store.
    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), String> {
        self.kv = Kv::restore(&snapshot.data, SESSIONS_MAX_DEFAULT, self.hash_keys)
            .map_err(|e| format!("snapshot from the leader does not load: {e}"))?;
        self.applied = snapshot.meta.index;
        // The core's log starts after the snapshot now: nothing applied is held.
        self.log_memory.dropped_through(snapshot.meta.index);
        self.snapshot_taken(snapshot.data.len());
        log::info!(
            "node {}: installed snapshot at index {} term {} ({} keys)",
            self.config.id,
            snapshot.meta.index,
            snapshot.meta.term,
            self.kv.len()
        );
        // Writes waiting on entries the snapshot covers: their outcome is in the sessions;
        // tell the clients to retry, which returns it.
        let covered: Vec<LogIndex> = self
            .pending_writes
            .range(..=snapshot.meta.index)
            .map(|(i, _)| *i)
            .collect();
        for index in covered {
            let w = self.pending_writes.remove(&index).expect("listed");
            self.answer_write(w, unavailable("superseded by a snapshot; retry".into()));
        }
        Ok(())
    }

    fn apply_entry(&mut self, entry: Entry) {
        self.applied = entry.index;
        let held = self.log_memory.held_bytes_of(&entry.data);
        self.log_memory.applied(entry.index, held);
        let pending = self.pending_writes.remove(&entry.index);
        if entry.kind != EntryKind::Normal {
            if let Some(w) = pending {
                self.answer_write(w, unavailable("leader changed; retry".into()));
            }
            return;
        }
        #[cfg(feature = "test-faults")]
        let entry = self.corrupt_if_asked(entry);
        let (outcome, checkpoint) = apply_to_store(&mut self.kv, self.config.id, &entry);
        if checkpoint {
            self.start_checkpoint_hash(entry.index.0);
        }
        if let Some(w) = pending {
            if w.term == entry.term {
                self.answer_write(w, outcome);
            } else {
                self.answer_write(
                    w,
                    unavailable("leader changed before the write committed; retry".into()),
                );
            }
        }
    }

    /// Hashes the store as it is right after the checkpoint at `index`: takes its view
    /// (the records are shared, not copied) and hashes it on a thread, or inline on a host
    /// without threads (the simulator).
    fn start_checkpoint_hash(&mut self, index: u64) {
        let view = self.kv.snapshot_view();
        self.checkpoints.hashing(index);
        let Some(wake) = self.env.waker() else {
            self.checkpoint_hashed(index, view.hash());
            return;
        };
        if self.hashes_running >= HASHES_RUNNING_MAX {
            log::warn!(
                "node {}: checkpoint at index {index} not hashed: {HASHES_RUNNING_MAX} hashes under way already",
                self.config.id
            );
            self.checkpoints.skipped(index);
            return;
        }
        let done = self.hashes_sender.clone();
        let spawned = std::thread::Builder::new()
            .name("checkpoint-hash".into())
            .spawn(move || {
                let _ = done.send((index, view.hash()));
                wake();
            });
        match spawned {
            Ok(_) => self.hashes_running += 1,
            Err(e) => {
                log::warn!(
                    "node {}: checkpoint at index {index} not hashed: cannot start a thread: {e}",
                    self.config.id
                );
                self.checkpoints.skipped(index);
            }
        }
    }

    /// Takes the hashes the hashing threads finished.
    fn finish_checkpoint_hashes(&mut self) {
        while let Ok((index, hash)) = self.hashes_done.try_recv() {
            self.hashes_running -= 1;
            self.checkpoint_hashed(index, hash);
        }
    }

    /// Records this node's hash at a checkpoint and sends it to every peer.
    fn checkpoint_hashed(&mut self, index: u64, hash: u64) {
        log::info!(
            "node {}: checkpoint at index {index}: store hash {}",
            self.config.id,
            consistency::hex(hash)
        );
        let change = self.checkpoints.own(index, hash);
        self.log_consistency(change);
        let body = CheckpointReport { index, hash }.encode();
        for &peer in self.checkpoints.members() {
            if peer != self.config.id {
                self.env
                    .send_peer(peer, FRAME_CHECKPOINT, |out| out.extend_from_slice(&body));
            }
        }
    }

    /// Logs what a hash changed of the consistency alarm: loudly when it is raised.
    fn log_consistency(&self, change: Change) {
        match change {
            Change::None => {}
            Change::Raised(alarm) => log::error!(
                "node {}: CONSISTENCY ALARM: {}: the stores of the cluster's nodes differ at the same log index; see the README, \"Consistency check\"",
                self.config.id,
                alarm.text
            ),
            Change::Cleared { was, index } => log::warn!(
                "node {}: consistency alarm cleared: every node has the same hash at index {index} (the alarm was: {})",
                self.config.id,
                was.text
            ),
        }
    }

    /// Test only: applies the next put with a changed value (see `corrupt_one_put`).
    #[cfg(feature = "test-faults")]
    fn corrupt_if_asked(&mut self, mut entry: Entry) -> Entry {
        if !self.corrupt_one_put || entry.kind != EntryKind::Normal {
            return entry;
        }
        let Ok(mut command) = Command::decode(&entry.data) else {
            return entry;
        };
        if let KvWrite::Put { key, value } = &mut command.write {
            log::error!(
                "node {}: TEST FAULT: applying the put of key {:?} at index {} with a changed value",
                self.config.id,
                String::from_utf8_lossy(key),
                entry.index
            );
            value.extend_from_slice(b"-corrupted");
            entry.data = command.encode().into();
            self.corrupt_one_put = false;
        }
        entry
    }

    /// Answers reads whose ReadIndex round has not come back within an election timeout:
    /// the request or its answer was lost on the way to or from the leader (the core does
    /// not resend them), or leadership is changing. The client retries; without this the
    /// read would wait, and take memory, forever.
    fn expire_reads(&mut self, now: Duration) {
        let limit = Duration::from_millis(self.config.election_ms);
        // Contexts grow with the time a read was asked, so the expired reads come first.
        while let Some(entry) = self.pending_reads.first_entry() {
            if now.saturating_sub(entry.get().asked) < limit {
                break;
            }
            let r = entry.remove();
            let outcome =
                unavailable("the read was not confirmed by the leader in time; retry".into());
            self.reply(r.client, r.request_id, RequestKind::Get, outcome);
        }
    }

    fn read_confirmed(&mut self, rs: ReadState) {
        if let Some(r) = self.pending_reads.remove(&rs.context) {
            self.reads_waiting.push((rs.index, r));
        }
    }

    fn serve_waiting_reads(&mut self) {
        if self.reads_waiting.is_empty() {
            return;
        }
        let applied = self.applied;
        let waiting = std::mem::take(&mut self.reads_waiting);
        for (index, r) in waiting {
            if index <= applied {
                let value = self.kv.get(&r.key).map(<[u8]>::to_vec);
                self.reply(
                    r.client,
                    r.request_id,
                    RequestKind::Get,
                    Outcome::Value(value),
                );
            } else {
                self.reads_waiting.push((index, r));
            }
        }
    }

    /// Takes a view of the store at the applied index and hands the rest (the slow part:
    /// sorting, encoding, writing, syncing) to a thread, so the loop keeps serving; the
    /// thread wakes the loop when the file is durable, and `finish_snapshot` installs it.
    /// With `again`, also when nothing was applied since the last snapshot (which it then
    /// writes again, as the scrubber's mend of a damaged snapshot file needs).
    fn start_snapshot(&mut self, raw: &RawNode, again: bool) -> Result<(), String> {
        let Some((meta, configuration)) = self.snapshot_point(raw, again)? else {
            return Ok(());
        };
        // Only the view is taken here (shared records); sorting, encoding and writing
        // happen on the thread.
        let view = self.kv.snapshot_view();
        self.metrics.snapshot_started(self.env.now());
        let writer = self.wal.snapshot_writer();
        let (done, result) = std::sync::mpsc::channel();
        let write = move || {
            // Encoded as the file is written: no second copy of the store in memory.
            let bytes = view.encoded_len();
            let written = writer
                .write_streamed(meta, &configuration, bytes, |out| view.encode_to(out))
                .map(|w| (w, bytes as usize));
            let _ = done.send(written);
        };
        match self.env.waker() {
            Some(wake) => {
                std::thread::Builder::new()
                    .name("snapshot-writer".into())
                    .spawn(move || {
                        write();
                        wake();
                    })
                    .map_err(|e| format!("cannot start the snapshot writer thread: {e}"))?;
            }
            // A host without threads (the simulator): written now, installed next turn.
            None => write(),
        }
        self.snapshot_job = Some(result);
        Ok(())
    }

    /// Answers the operators waiting for the snapshot being written.
    fn answer_snapshot_waiters(&mut self, outcome: Outcome) {
        for (client, request_id, kind) in std::mem::take(&mut self.snapshot_waiters) {
            self.reply(client, request_id, kind, outcome.clone());
        }
    }

    /// A snapshot of `bytes` is in the WAL now: the snapshot schedule counts from here.
    fn snapshot_taken(&mut self, bytes: usize) {
        self.wal_bytes_at_snapshot = self.wal.disk_bytes();
        self.snapshot_bytes = bytes as u64;
        self.log_bytes_since_snapshot = 0;
    }

    /// A snapshot found the disk full: try again in a while rather than on every write.
    fn snapshot_postponed(&mut self) {
        self.snapshot_job = None;
        self.metrics.snapshot_abandoned();
        self.answer_snapshot_waiters(unavailable(
            "no disk space for a snapshot; free some and retry".into(),
        ));
        log::warn!(
            "node {}: no disk space for a snapshot; will retry",
            self.config.id
        );
        self.snapshot_not_before = self.env.now() + Duration::from_secs(5);
    }

    /// Where a snapshot taken now would end (the applied index, when it is past the latest
    /// snapshot; with `again`, also the latest snapshot's own index), with the configuration
    /// in effect there, which the snapshot carries.
    fn snapshot_point(
        &self,
        raw: &RawNode,
        again: bool,
    ) -> Result<Option<(SnapshotMeta, raft::Configuration)>, String> {
        let index = self.applied;
        let stored = self.wal.snapshot_meta();
        let meta = if again && index == stored.index && index > LogIndex(0) {
            stored
        } else if index <= stored.index {
            return Ok(None);
        } else {
            let term = raw
                .term_at(index)
                .ok_or_else(|| format!("applied index {index} is not in the log"))?;
            SnapshotMeta { index, term }
        };
        let configuration = raw
            .configuration_at(index)
            .ok_or_else(|| format!("applied index {index} is before the log"))?;
        Ok(Some((meta, configuration)))
    }
}

/// One line for the operator saying what a fault request switched on.
pub fn describe_faults(spec: &FaultSpec) -> String {
    if *spec == FaultSpec::default() {
        return "faults cleared".into();
    }
    let mut parts = Vec::new();
    if spec.drop_percent > 0.0 {
        parts.push(format!("drop {}%", spec.drop_percent));
    }
    if let Some((lo, hi)) = spec.delay_ms {
        parts.push(format!("delay {lo}..{hi} ms"));
    }
    if !spec.partition.is_empty() {
        parts.push(format!("partitioned from {:?}", spec.partition));
    }
    parts.join(", ")
}

fn fatal(e: wal::WalError) -> String {
    format!("write-ahead log failed, stopping so nothing unsafe is acknowledged: {e}")
}

fn done(detail: String) -> Outcome {
    Outcome::Done { detail }
}

/// Recovery's state while it applies entries read back from the WAL (see [`replay_wal`]).
struct Replay<'a> {
    kv: &'a mut Kv,
    node: u64,
    wal_dir: &'a Path,
    /// The last entry applied: the snapshot's, until an entry is.
    marker: SnapshotMeta,
    /// The configuration in effect at `marker`. None: no snapshot and no change yet, so
    /// `--peers` is still the cluster's first configuration.
    configuration: Option<raft::Configuration>,
}

impl Replay<'_> {
    /// Applies the committed entry after `marker` to the store. A checkpoint applied here,
    /// before the restart's loop, is not hashed: the node answers "missing" for it.
    fn apply(&mut self, entry: &Entry) -> Result<(), String> {
        apply_to_store(self.kv, self.node, entry);
        if entry.kind == EntryKind::Config {
            let conf = raft::Configuration::decode(&entry.data).map_err(|e| {
                format!(
                    "configuration entry {} in {} does not decode: {e}",
                    entry.index,
                    self.wal_dir.display()
                )
            })?;
            self.configuration = Some(conf);
        }
        self.marker = SnapshotMeta {
            index: entry.index,
            term: entry.term,
        };
        Ok(())
    }
}

/// Reads the log after `replay.marker` back from the WAL, through `last`, a chunk at a time,
/// and returns the entries the core's in-memory log starts with. Committed entries (through
/// `commit`) that the in-memory log would not keep — older than the newest
/// `log_memory_entries`, or beyond `log_memory_bytes` of data counted back from the newest
/// committed one — are applied straight from the WAL and not handed to the core, so a
/// restart holds no more of the log in memory than a running node does (before: every
/// entry since the snapshot at once, 124 MB resident after 184,000 entries).
fn replay_wal(
    wal: &mut Wal,
    config: &ServerConfig,
    commit: LogIndex,
    last: LogIndex,
    replay: &mut Replay,
) -> Result<Vec<Entry>, String> {
    let wal_dir = replay.wal_dir;
    let read_error = |e: wal::WalError| format!("cannot read {}: {e}", wal_dir.display());
    let commit = commit.min(last);
    let apply_through = LogIndex(commit.0.saturating_sub(config.log_memory_entries));
    let mut held: VecDeque<Entry> = VecDeque::new();
    // Data bytes of the committed entries in `held`.
    let mut held_bytes = 0u64;
    let mut next = replay.marker.index.next();
    while next <= last {
        let hi = LogIndex((next.0 + RECOVERY_READ_ENTRIES).min(last.0 + 1));
        let chunk = wal
            .entries(next, hi, RECOVERY_READ_BYTES)
            .map_err(read_error)?;
        next = chunk
            .last()
            .expect("the WAL reads at least one entry of a range")
            .index
            .next();
        for entry in chunk {
            if entry.index <= commit {
                held_bytes += entry.payload_bytes();
            }
            held.push_back(entry);
        }
        while let Some(front) = held.front() {
            let committed = front.index <= commit;
            if front.index > apply_through && !(committed && held_bytes > config.log_memory_bytes) {
                break;
            }
            let entry = held.pop_front().expect("a front entry");
            held_bytes -= entry.payload_bytes();
            replay.apply(&entry)?;
        }
        wal.release_read_pages();
    }
    Ok(held.into())
}

/// The scrubber's thread: it reads the steps the loop hands it ([`wal::ScrubJob::run`]),
/// hands them back and wakes the loop. It ends when the loop drops this.
struct ScrubThread {
    jobs: Sender<Box<wal::ScrubJob>>,
    done: Receiver<Box<wal::ScrubJob>>,
    /// A step is on the thread.
    out: bool,
}

impl ScrubThread {
    fn start(wake: Box<dyn Fn() + Send>, node: u64) -> Option<ScrubThread> {
        let (jobs, todo) = std::sync::mpsc::channel::<Box<wal::ScrubJob>>();
        let (finished, done) = std::sync::mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("scrubber".into())
            .spawn(move || {
                for mut job in todo {
                    job.run();
                    if finished.send(job).is_err() {
                        break;
                    }
                    wake();
                }
            });
        match spawned {
            Ok(_) => Some(ScrubThread {
                jobs,
                done,
                out: false,
            }),
            Err(e) => {
                log::error!(
                    "node {node}: cannot start the scrubber thread ({e}); it reads on the loop"
                );
                None
            }
        }
    }
}

/// Batches of at least this many entries have their keys' records brought into the cache
/// first ([`Kv::warm`]): for fewer the overlap gains little against decoding them twice.
const WARM_MIN_ENTRIES: usize = 4;

/// The client and the key an entry's command writes, if it is a write of a key.
fn written_key(entry: &Entry) -> Option<(u64, &[u8])> {
    if entry.kind != EntryKind::Normal {
        return None;
    }
    let command = CommandRef::decode(&entry.data).ok()?;
    match command.write {
        WriteRef::Put { key, .. } | WriteRef::Delete { key } | WriteRef::Cas { key, .. } => {
            Some((command.client_id, key))
        }
        WriteRef::Checkpoint => None,
    }
}

/// Applies a committed normal entry's command to the store; true with it when the command
/// was a checkpoint.
fn apply_to_store(kv: &mut Kv, node: u64, entry: &Entry) -> (Outcome, bool) {
    if entry.kind != EntryKind::Normal {
        let outcome = Outcome::Written {
            index: entry.index.0,
            term: entry.term.0,
        };
        return (outcome, false);
    }
    match CommandRef::decode(&entry.data) {
        Ok(command) => {
            let outcome = kv.apply(entry.index.0, entry.term.0, command);
            (outcome, command.write == WriteRef::Checkpoint)
        }
        Err(e) => {
            // Every replica sees the same bytes and skips them the same way.
            log::error!(
                "node {node}: entry {} does not decode ({e}); skipped",
                entry.index
            );
            (refused(format!("undecodable command: {e}")), false)
        }
    }
}

/// The leader's period between checkpoints (`--consistency-check-secs`).
fn consistency_period(config: &ServerConfig) -> Duration {
    Duration::from_secs(config.consistency_check_secs)
}

fn refused(reason: String) -> Outcome {
    Outcome::Refused { reason }
}

fn unavailable(reason: String) -> Outcome {
    Outcome::Unavailable { reason }
}
