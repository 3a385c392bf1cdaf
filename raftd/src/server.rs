//! The daemon's event loop: one thread, one `mio` poll (inside the transport), gluing the
//! core, the write-ahead log, the transport and the key-value store together.
//!
//! Each turn: poll the transport until the next tick is due; feed peer frames to the core
//! and turn client requests into proposals or ReadIndex reads; tick; then drain every
//! `Ready`: send what may leave now (a leader's appends leave before its own fsync), write
//! the hard state and entries to the WAL with one sync for the whole batch (group commit),
//! send what waited for the sync, apply committed entries, answer clients, advance.

use crate::kv::{Kv, SESSIONS_MAX_DEFAULT};
use crate::protocol::{
    Command, FaultSpec, Op, Outcome, Request, Response, FRAME_RAFT, FRAME_REQUEST, FRAME_RESPONSE,
};
use raft::{
    codec, Config, Entry, EntryKind, LogIndex, Message, NodeId, ProposeError, RawNode, ReadState,
    Ready, Restore, Snapshot, SnapshotMeta, StepError,
};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use transport::{ClientId, Event, Faults, Transport, TransportConfig};
use wal::{Wal, WalOptions};

/// Milliseconds per core tick.
pub const TICK_MS: u64 = 10;

/// Everything the daemon is started with (validated by the command line).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This node's id.
    pub id: u64,
    /// Every member's id and address, this node included.
    pub peers: Vec<(u64, SocketAddr)>,
    /// Where to listen (defaults to this node's address in `peers`).
    pub listen: SocketAddr,
    /// Data directory (the WAL lives in `wal/` under it).
    pub data_dir: PathBuf,
    /// Cluster name; peers and clients from another cluster are refused.
    pub cluster_id: String,
    /// Shared secret required of peers and clients.
    pub token: Option<Vec<u8>>,
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// Base election timeout (randomized up to twice this).
    pub election_ms: u64,
    /// Take a snapshot after this many applied entries.
    pub snapshot_entries: u64,
    /// Applied entries kept in memory for lagging followers.
    pub log_memory_entries: u64,
    /// Or when the WAL grows past this many bytes since the last snapshot.
    pub snapshot_wal_bytes: u64,
    /// Repair a corrupted WAL by truncating at the first bad record (operator's choice).
    pub repair_wal: bool,
    /// Size of each preallocated WAL segment.
    pub wal_segment_bytes: u64,
}

/// A client write waiting for its entry to apply.
struct PendingWrite {
    client: ClientId,
    request_id: u64,
    term: raft::Term,
}

/// What the snapshot writer thread sends back: the durable file (not yet part of the log)
/// and its data's size in bytes.
type SnapshotWritten = Result<(wal::WrittenSnapshot, usize), wal::WalError>;

/// How many entries past `log_memory_entries` the in-memory log may grow before it is
/// trimmed (trimming in steps keeps the work per trim small and rare).
const TRIM_STEP: u64 = 1024;

/// At start, committed entries the in-memory log will not keep are read from the WAL and
/// applied this many at a time.
const RECOVERY_APPLY_CHUNK: u64 = 4096;

/// How often pending reads are checked for expiry (see `Server::expire_reads`).
const READ_SWEEP: Duration = Duration::from_millis(100);

/// How often a Ready stalled on a full disk is retried.
const DISK_FULL_RETRY: Duration = Duration::from_millis(500);

/// A Ready taken from the core, its "send now" messages sent, its disk write pending.
struct PendingReady {
    ready: Ready,
    /// What is still to be written (taken out of `ready`).
    snapshot: Option<Snapshot>,
    entries: Vec<Entry>,
    hard_state: Option<raft::HardState>,
    retry_at: Instant,
}

/// A client read waiting for confirmation or for the state machine to catch up.
struct PendingRead {
    client: ClientId,
    request_id: u64,
    key: Vec<u8>,
    /// When the read was asked for (ReadIndex rounds that never answer are expired).
    asked: Instant,
}

/// The running daemon.
pub struct Server {
    config: ServerConfig,
    raw: RawNode,
    wal: Wal,
    transport: Transport,
    kv: Kv,
    applied: LogIndex,
    /// Writes by log index.
    pending_writes: BTreeMap<LogIndex, PendingWrite>,
    /// Reads by ReadIndex context.
    pending_reads: HashMap<u64, PendingRead>,
    /// Confirmed reads waiting for `applied` to reach their index.
    reads_waiting: Vec<(LogIndex, PendingRead)>,
    next_read_context: u64,
    next_tick: Instant,
    /// When pending reads are next checked for expiry.
    next_read_sweep: Instant,
    stop: Arc<AtomicBool>,
    wal_bytes_at_snapshot: u64,
    started: Instant,
    /// Set by a graceful shutdown request.
    stopping: bool,
    /// A Ready waiting for disk space.
    stalled: Option<PendingReady>,
    /// No automatic snapshot before this (set after one failed for lack of space).
    snapshot_not_before: Instant,
    /// Reused for encoding outgoing messages.
    encode_buffer: Vec<u8>,
    /// A snapshot file being written by the writer thread.
    snapshot_job: Option<std::sync::mpsc::Receiver<SnapshotWritten>>,
}

fn addr_of(config: &ServerConfig, id: u64) -> Option<SocketAddr> {
    config.peers.iter().find(|p| p.0 == id).map(|p| p.1)
}

/// Checks (or creates) the identity file that ties a data directory to one cluster and one
/// node, so a directory copied from elsewhere is refused instead of silently reused.
fn check_identity(dir: &Path, cluster_id: &str, id: u64) -> Result<(), String> {
    let path = dir.join("raftd.id");
    let want = format!("cluster={cluster_id}\nnode={id}\n");
    match std::fs::read_to_string(&path) {
        Ok(have) if have == want => Ok(()),
        Ok(have) => {
            let field = |k: &str| {
                have.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap_or("?")
                    .to_string()
            };
            Err(format!(
                "data directory {} belongs to cluster '{}' node {}, not cluster '{cluster_id}' node {id}; use another --data-dir",
                dir.display(),
                field("cluster="),
                field("node=")
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, want)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(())
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

impl Server {
    /// Opens the data directory, recovers, binds the listener. Errors are one clear line.
    pub fn open(config: ServerConfig, stop: Arc<AtomicBool>) -> Result<Server, String> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
        check_identity(dir, &config.cluster_id, config.id)?;
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir)
            .map_err(|e| format!("cannot create {}: {e}", wal_dir.display()))?;
        let options = WalOptions {
            repair: config.repair_wal,
            segment_bytes: config.wal_segment_bytes,
            ..WalOptions::default()
        };
        let (mut wal, recovered) = Wal::open(&wal_dir, options).map_err(|e| e.to_string())?;
        if let Some(torn) = &recovered.torn_tail {
            log::warn!("WAL: {torn}");
        }
        if let Some(repaired) = &recovered.repaired {
            log::warn!("WAL repaired: {repaired}");
        }
        // The store is rebuilt from the snapshot's bytes, which are then dropped: the core
        // asks for them again only when a follower needs them.
        let snapshot = recovered.snapshot.unwrap_or_default();
        let mut kv = if snapshot.is_empty() {
            Kv::new(SESSIONS_MAX_DEFAULT)
        } else {
            Kv::restore(&snapshot.data, SESSIONS_MAX_DEFAULT)
                .map_err(|e| format!("snapshot in {} does not load: {e}", wal_dir.display()))?
        };
        let snapshot = snapshot.meta;
        // Committed entries older than the newest `log_memory_entries` are applied straight
        // from the WAL a chunk at a time and not handed to the core, so a restart holds no
        // more of the log in memory than a running node does (before: every entry since the
        // snapshot at once, 124 MB resident after 184,000 entries).
        let read_error = |e: wal::WalError| format!("cannot read {}: {e}", wal_dir.display());
        let mut marker = snapshot;
        let apply_through = recovered
            .hard_state
            .commit
            .0
            .saturating_sub(config.log_memory_entries)
            .min(recovered.last_index.0);
        while marker.index.0 < apply_through {
            let hi = LogIndex((marker.index.0 + RECOVERY_APPLY_CHUNK).min(apply_through) + 1);
            for entry in wal
                .entries(marker.index.next(), hi, u64::MAX)
                .map_err(read_error)?
            {
                apply_to_store(&mut kv, config.id, &entry);
                marker = SnapshotMeta {
                    index: entry.index,
                    term: entry.term,
                };
            }
            wal.release_read_pages();
        }
        let entries = if marker.index < recovered.last_index {
            wal.entries(marker.index.next(), recovered.last_index.next(), u64::MAX)
                .map_err(read_error)?
        } else {
            Vec::new()
        };
        wal.release_read_pages();
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
        let voters: Vec<NodeId> = config.peers.iter().map(|p| NodeId(p.0)).collect();
        let mut rc = Config::new(NodeId(config.id), voters);
        rc.heartbeat_interval_ticks = (config.heartbeat_ms / TICK_MS).max(1);
        rc.election_timeout_ticks =
            (config.election_ms / TICK_MS).max(rc.heartbeat_interval_ticks + 1);
        rc.seed = rand::random();
        let raw = RawNode::new(
            rc,
            Restore {
                hard_state: recovered.hard_state,
                snapshot: marker,
                entries,
            },
        )?;
        let mut tc = TransportConfig::new(config.id, config.cluster_id.clone(), config.listen);
        tc.peers = config.peers.clone();
        tc.token = config.token.clone();
        let transport =
            Transport::new(tc).map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let wal_bytes = wal.disk_bytes();
        Ok(Server {
            raw,
            wal,
            transport,
            kv,
            applied,
            pending_writes: BTreeMap::new(),
            pending_reads: HashMap::new(),
            reads_waiting: Vec::new(),
            next_read_context: 1,
            next_tick: Instant::now() + Duration::from_millis(TICK_MS),
            next_read_sweep: Instant::now() + READ_SWEEP,
            stop,
            wal_bytes_at_snapshot: wal_bytes,
            started: Instant::now(),
            stopping: false,
            stalled: None,
            snapshot_not_before: Instant::now(),
            encode_buffer: Vec::with_capacity(64 << 10),
            snapshot_job: None,
            config,
        })
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    /// Runs until SIGTERM/SIGINT or a shutdown request; then flushes and returns.
    pub fn run(&mut self) -> Result<(), String> {
        log::info!(
            "node {} listening on {} (cluster '{}', {} members)",
            self.config.id,
            self.local_addr(),
            self.config.cluster_id,
            self.config.peers.len()
        );
        let mut events = Vec::with_capacity(1024);
        while !self.stop.load(Ordering::Relaxed) && !self.stopping {
            let now = Instant::now();
            let timeout = self.next_tick.saturating_duration_since(now);
            events.clear();
            self.transport
                .poll(Some(timeout), &mut events)
                .map_err(|e| format!("poll failed: {e}"))?;
            for event in events.drain(..) {
                self.handle_event(event)?;
            }
            let now = Instant::now();
            while self.next_tick <= now {
                self.raw.tick();
                self.next_tick += Duration::from_millis(TICK_MS);
            }
            if self.next_read_sweep <= now {
                self.expire_reads(now);
                self.next_read_sweep = now + READ_SWEEP;
            }
            self.finish_snapshot()?;
            self.drain_ready()?;
        }
        self.shutdown();
        Ok(())
    }

    fn shutdown(&mut self) {
        log::info!("node {}: stopping", self.config.id);
        // Everything acknowledged is already durable; let queued frames leave.
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut events = Vec::new();
        while self.transport.pending_bytes() > 0 && Instant::now() < deadline {
            events.clear();
            let _ = self
                .transport
                .poll(Some(Duration::from_millis(10)), &mut events);
        }
        log::info!("node {}: stopped", self.config.id);
    }

    fn handle_event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::PeerFrame { from, kind, body } => {
                if kind != FRAME_RAFT {
                    log::warn!(
                        "node {}: unknown frame kind {kind} from peer {from}",
                        self.config.id
                    );
                    return Ok(());
                }
                match codec::decode(&body) {
                    Ok(m) if m.from == NodeId(from) => self.step(m),
                    Ok(m) => log::warn!(
                        "node {}: peer {from} sent a message claiming to be from {}; dropped",
                        self.config.id,
                        m.from
                    ),
                    Err(e) => log::warn!(
                        "node {}: undecodable message from peer {from}: {e}",
                        self.config.id
                    ),
                }
            }
            Event::ClientFrame { client, kind, body } => {
                if kind != FRAME_REQUEST {
                    self.reply(client, 0, refused(format!("unknown frame kind {kind}")));
                    return Ok(());
                }
                match Request::decode(&body) {
                    Ok(req) => self.handle_request(client, req)?,
                    Err(e) => self.reply(client, 0, refused(format!("bad request: {e}"))),
                }
            }
            Event::ClientClosed(_) => {}
            Event::PeerUp(id) => log::info!("node {}: connected to peer {id}", self.config.id),
            Event::PeerDown(id) => {
                log::info!("node {}: lost connection to peer {id}", self.config.id);
                self.raw.report_unreachable(NodeId(id));
            }
            Event::Woken => {}
        }
        Ok(())
    }

    fn step(&mut self, m: Message) {
        let was_leader = self.raw.is_leader();
        if let Err(e) = self.raw.step(m) {
            match e {
                StepError::UnknownPeer(_) | StepError::WrongRecipient(_) => {
                    log::warn!("node {}: {e}", self.config.id)
                }
                _ => {}
            }
        }
        if was_leader && !self.raw.is_leader() {
            log::warn!(
                "node {}: lost leadership at term {}",
                self.config.id,
                self.raw.term()
            );
        }
    }

    fn reply(&mut self, client: ClientId, request_id: u64, outcome: Outcome) {
        let body = Response {
            request_id,
            outcome,
        }
        .encode();
        // A client that went away is no error of ours.
        let _ = self.transport.send_client(client, FRAME_RESPONSE, &body);
    }

    fn not_leader(&self) -> Outcome {
        let leader = self.raw.leader().0;
        let address = addr_of(&self.config, leader)
            .map(|a| a.to_string())
            .unwrap_or_default();
        Outcome::NotLeader { leader, address }
    }

    fn handle_request(&mut self, client: ClientId, req: Request) -> Result<(), String> {
        let id = req.request_id;
        match req.op {
            Op::Write(command) => self.propose(client, id, command),
            Op::Get { key } => {
                let context = self.next_read_context;
                self.next_read_context += 1;
                match self.raw.read_index(context) {
                    Ok(()) => {
                        self.pending_reads.insert(
                            context,
                            PendingRead {
                                client,
                                request_id: id,
                                key,
                                asked: Instant::now(),
                            },
                        );
                    }
                    Err(e) => self.reply(client, id, unavailable(format!("cannot read: {e}"))),
                }
            }
            Op::Status => {
                let status = self.status_json();
                self.reply(client, id, Outcome::Status(status));
            }
            Op::Snapshot => {
                let outcome = self.take_snapshot()?;
                self.reply(client, id, outcome);
            }
            Op::TransferLeader { target } => {
                let outcome = match self.raw.transfer_leader(NodeId(target)) {
                    Ok(()) => done(format!("transferring leadership to node {target}")),
                    Err(StepError::NotLeader) => self.not_leader(),
                    Err(e) => refused(e.to_string()),
                };
                self.reply(client, id, outcome);
            }
            Op::Fault(spec) => {
                let detail = describe_faults(&spec);
                self.transport.set_faults(Faults {
                    drop_percent: spec.drop_percent,
                    delay_ms: spec.delay_ms,
                    partition: spec.partition.iter().copied().collect(),
                    direction: transport::Direction::Both,
                });
                log::warn!("node {}: fault layer set: {detail}", self.config.id);
                self.reply(client, id, done(detail));
            }
            Op::Shutdown { crash } => {
                self.reply(
                    client,
                    id,
                    done(format!("node {} stopping", self.config.id)),
                );
                self.transport.flush();
                if crash {
                    log::warn!("node {}: crash requested, aborting now", self.config.id);
                    std::process::abort();
                }
                self.stopping = true;
            }
        }
        Ok(())
    }

    fn propose(&mut self, client: ClientId, request_id: u64, command: Command) {
        match self.raw.propose(command.encode()) {
            Ok(index) => {
                let term = self.raw.term();
                self.pending_writes.insert(
                    index,
                    PendingWrite {
                        client,
                        request_id,
                        term,
                    },
                );
            }
            Err(ProposeError::NotLeader { .. }) => {
                let outcome = self.not_leader();
                self.reply(client, request_id, outcome);
            }
            Err(e) => self.reply(client, request_id, unavailable(e.to_string())),
        }
    }

    /// Handles every Ready the core has (see `raft::Ready` for the contract). A Ready whose
    /// disk write failed for lack of space stays pending and is retried; meanwhile the node
    /// sends nothing and acknowledges nothing, which Raft treats like a slow node.
    fn drain_ready(&mut self) -> Result<(), String> {
        if let Some(mut p) = self.stalled.take() {
            if Instant::now() < p.retry_at {
                self.stalled = Some(p);
                return Ok(());
            }
            if !self.persist_pending(&mut p)? {
                p.retry_at = Instant::now() + DISK_FULL_RETRY;
                self.stalled = Some(p);
                return Ok(());
            }
            log::warn!(
                "node {}: disk space is back; persisting and acknowledging again",
                self.config.id
            );
            self.finish_ready(p);
        }
        while self.raw.has_ready() {
            let mut p = self.start_ready();
            if !self.persist_pending(&mut p)? {
                log::error!(
                    "node {}: disk full: acknowledging nothing until space is freed (retrying every {:?})",
                    self.config.id,
                    DISK_FULL_RETRY
                );
                p.retry_at = Instant::now() + DISK_FULL_RETRY;
                self.stalled = Some(p);
                break;
            }
            self.finish_ready(p);
            self.maybe_snapshot()?;
            self.trim_log();
        }
        self.transport.flush();
        Ok(())
    }

    /// Takes a Ready and sends what may leave before the disk write. Committed entries are
    /// applied (and their clients answered) here too, before this Ready's disk write: the
    /// core hands out only entries that are already durable here and on a majority, so
    /// their answers need not wait for the new entries' fsync. With a snapshot in the
    /// Ready they wait, since they follow it.
    fn start_ready(&mut self) -> PendingReady {
        let mut ready = self.raw.ready();
        for m in ready.take_messages() {
            self.send(&m);
        }
        if !ready.has_snapshot() {
            self.apply_ready(&mut ready);
        }
        // The leader's appends and the answers leave now, overlapping the disk write.
        self.transport.flush();
        PendingReady {
            snapshot: ready.take_snapshot(),
            entries: ready.take_entries(),
            hard_state: ready.hard_state(),
            ready,
            retry_at: Instant::now(),
        }
    }

    /// Writes what the Ready asks to the WAL, with one sync. Returns false when the disk is
    /// full: what was written stays written, the rest is retried later. Any other WAL
    /// failure is fatal.
    fn persist_pending(&mut self, p: &mut PendingReady) -> Result<bool, String> {
        if let Some(snapshot) = p.snapshot.take() {
            match self.wal.save_snapshot(&snapshot) {
                Ok(()) => self.install_snapshot(snapshot)?,
                Err(wal::WalError::NoSpace { .. }) => {
                    p.snapshot = Some(snapshot);
                    return Ok(false);
                }
                Err(e) => return Err(fatal(e)),
            }
        }
        // Entries before the hard state: the WAL refuses to overwrite entries at or below
        // the commit index it was last told, and this Ready's commit may cover entries that
        // replace a conflicting tail in the same batch. One sync covers both.
        if !p.entries.is_empty() {
            match self.wal.append(&p.entries) {
                Ok(()) => p.entries.clear(),
                Err(wal::WalError::NoSpace { .. }) => return Ok(false),
                Err(e) => return Err(fatal(e)),
            }
        }
        if let Some(hs) = p.hard_state {
            match self.wal.set_hard_state(hs) {
                Ok(()) => p.hard_state = None,
                Err(wal::WalError::NoSpace { .. }) => return Ok(false),
                Err(e) => return Err(fatal(e)),
            }
        }
        if p.ready.must_sync() {
            match self.wal.persist() {
                Ok(()) => {}
                Err(wal::WalError::NoSpace { .. }) => return Ok(false),
                Err(e) => return Err(fatal(e)),
            }
        }
        Ok(true)
    }

    /// After the disk write: send what waited for it, apply what is left, advance; then
    /// hand over the snapshot the core asked for, if it did.
    fn finish_ready(&mut self, p: PendingReady) {
        let mut rd = p.ready;
        for m in rd.take_persisted_messages() {
            self.send(&m);
        }
        self.apply_ready(&mut rd);
        let request = rd.snapshot_request();
        self.raw.advance(rd);
        if let Some(meta) = request {
            self.provide_snapshot(meta);
        }
    }

    /// Reads the latest snapshot back from its file for a follower that fell behind the
    /// log. The bytes live only while that follower is being sent them. A failed read is
    /// logged, not fatal: the node still serves the followers that need no snapshot, and
    /// the core asks again at the lagging follower's next heartbeat answer.
    fn provide_snapshot(&mut self, meta: SnapshotMeta) {
        if self.wal.snapshot_meta().index < meta.index {
            // The log in memory was trimmed past the snapshot on disk: take a new one. The
            // core asks again at the follower's next heartbeat answer and gets it then.
            if self.snapshot_job.is_none() {
                log::info!(
                    "node {}: a follower needs entries before {}, older than this node keeps in memory; taking a snapshot for it",
                    self.config.id,
                    meta.index.next()
                );
                if let Err(e) = self.start_snapshot() {
                    log::error!("node {}: {e}", self.config.id);
                }
            }
            return;
        }
        match self.wal.snapshot() {
            Ok(Some(snapshot)) => self.raw.provide_snapshot(snapshot),
            Ok(None) => log::error!(
                "node {}: a follower needs snapshot {}/{}, but the WAL holds none",
                self.config.id,
                meta.term,
                meta.index
            ),
            Err(e) => log::error!(
                "node {}: cannot read snapshot {}/{} back for a follower: {e}",
                self.config.id,
                meta.term,
                meta.index
            ),
        }
    }

    /// Applies a Ready's committed entries and serves its confirmed reads.
    fn apply_ready(&mut self, rd: &mut Ready) {
        for entry in rd.take_committed_entries() {
            self.apply(entry);
        }
        for rs in rd.take_read_states() {
            self.read_confirmed(rs);
        }
        for context in rd.take_dropped_reads() {
            if let Some(r) = self.pending_reads.remove(&context) {
                self.reply(
                    r.client,
                    r.request_id,
                    unavailable("leadership changed before the read was confirmed".into()),
                );
            }
        }
        self.serve_waiting_reads();
    }

    fn send(&mut self, m: &Message) {
        // One encoding buffer for every message: the transport copies into its outbox.
        let mut body = std::mem::take(&mut self.encode_buffer);
        body.clear();
        codec::encode(m, &mut body);
        // Losing a message is within Raft's model; the transport counts drops.
        let _ = self.transport.send_peer(m.to.0, FRAME_RAFT, &body);
        self.encode_buffer = body;
    }

    /// Loads a snapshot from the leader (already saved in the WAL) into the store.
    fn install_snapshot(&mut self, snapshot: Snapshot) -> Result<(), String> {
        self.kv = Kv::restore(&snapshot.data, SESSIONS_MAX_DEFAULT)
            .map_err(|e| format!("snapshot from the leader does not load: {e}"))?;
        self.applied = snapshot.meta.index;
        self.wal_bytes_at_snapshot = self.wal.disk_bytes();
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
            self.reply(
                w.client,
                w.request_id,
                unavailable("superseded by a snapshot; retry".into()),
            );
        }
        Ok(())
    }

    fn apply(&mut self, entry: Entry) {
        self.applied = entry.index;
        let pending = self.pending_writes.remove(&entry.index);
        if entry.kind != EntryKind::Normal {
            if let Some(w) = pending {
                self.reply(
                    w.client,
                    w.request_id,
                    unavailable("leader changed; retry".into()),
                );
            }
            return;
        }
        let outcome = apply_to_store(&mut self.kv, self.config.id, &entry);
        if let Some(w) = pending {
            if w.term == entry.term {
                self.reply(w.client, w.request_id, outcome);
            } else {
                self.reply(
                    w.client,
                    w.request_id,
                    unavailable("leader changed before the write committed; retry".into()),
                );
            }
        }
    }

    /// Answers reads whose ReadIndex round has not come back within an election timeout:
    /// the request or its answer was lost on the way to or from the leader (the core does
    /// not resend them), or leadership is changing. The client retries; without this the
    /// read would wait, and take memory, forever.
    fn expire_reads(&mut self, now: Instant) {
        let limit = Duration::from_millis(self.config.election_ms);
        let expired: Vec<PendingRead> = self
            .pending_reads
            .extract_if(|_, r| now.duration_since(r.asked) >= limit)
            .map(|(_, r)| r)
            .collect();
        for r in expired {
            self.reply(
                r.client,
                r.request_id,
                unavailable("the read was not confirmed by the leader in time; retry".into()),
            );
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
                self.reply(r.client, r.request_id, Outcome::Value(value));
            } else {
                self.reads_waiting.push((index, r));
            }
        }
    }

    fn maybe_snapshot(&mut self) -> Result<(), String> {
        let since = self
            .applied
            .0
            .saturating_sub(self.wal.snapshot_meta().index.0);
        let wal_growth = self
            .wal
            .disk_bytes()
            .saturating_sub(self.wal_bytes_at_snapshot);
        let due = since >= self.config.snapshot_entries
            || (since > 0 && wal_growth >= self.config.snapshot_wal_bytes);
        if due && self.snapshot_job.is_none() && Instant::now() >= self.snapshot_not_before {
            self.start_snapshot()?;
        }
        Ok(())
    }

    /// Drops applied entries beyond the newest `log_memory_entries` from memory, in steps
    /// of `TRIM_STEP` (the core frees them a slice per Ready). They stay in the WAL until
    /// the next snapshot; a follower that needs them gets a snapshot (`provide_snapshot`).
    fn trim_log(&mut self) {
        let start = self.raw.snapshot_meta().index.0;
        let keep = self.config.log_memory_entries;
        if self.applied.0 >= start + keep + TRIM_STEP {
            self.raw.compact(LogIndex(self.applied.0 - keep));
        }
    }

    /// Takes a view of the store at the applied index and hands the rest (the slow part:
    /// sorting, encoding, writing, syncing) to a thread, so the loop keeps serving; the
    /// thread wakes the loop when the file is durable, and `finish_snapshot` installs it.
    fn start_snapshot(&mut self) -> Result<(), String> {
        let Some(meta) = self.snapshot_point()? else {
            return Ok(());
        };
        // Only the view is taken here (shared records); sorting, encoding and writing
        // happen on the thread.
        let view = self.kv.snapshot_view();
        let writer = self.wal.snapshot_writer();
        let waker = self.transport.waker();
        let (done, result) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("snapshot-writer".into())
            .spawn(move || {
                let data = view.encode();
                let bytes = data.len();
                let written = writer.write(&Snapshot { meta, data }).map(|w| (w, bytes));
                let _ = done.send(written);
                let _ = waker.wake();
            })
            .map_err(|e| format!("cannot start the snapshot writer thread: {e}"))?;
        self.snapshot_job = Some(result);
        Ok(())
    }

    /// Installs a snapshot whose file the writer thread finished, if it has.
    fn finish_snapshot(&mut self) -> Result<(), String> {
        use std::sync::mpsc::TryRecvError;
        let Some(job) = &self.snapshot_job else {
            return Ok(());
        };
        let (written, bytes) = match job.try_recv() {
            Err(TryRecvError::Empty) => return Ok(()),
            Err(TryRecvError::Disconnected) => {
                return Err("the snapshot writer thread died".into());
            }
            Ok(Err(wal::WalError::NoSpace { .. })) => {
                self.snapshot_job = None;
                log::warn!(
                    "node {}: no disk space for a snapshot; will retry",
                    self.config.id
                );
                // Try again in a while rather than on every write.
                self.snapshot_not_before = Instant::now() + Duration::from_secs(5);
                return Ok(());
            }
            Ok(Err(e)) => return Err(fatal(e)),
            Ok(Ok(done)) => done,
        };
        self.snapshot_job = None;
        let meta = written.meta();
        if !self.wal.install_snapshot_file(written).map_err(fatal)? {
            return Ok(()); // A newer snapshot (from the leader) got there first.
        }
        self.raw.compact(meta.index);
        self.wal_bytes_at_snapshot = self.wal.disk_bytes();
        log::info!(
            "node {}: snapshot taken at index {} term {} ({bytes} bytes); WAL now {} bytes",
            self.config.id,
            meta.index,
            meta.term,
            self.wal.disk_bytes()
        );
        Ok(())
    }

    /// Where a snapshot taken now would end: the applied index, when it is past the
    /// latest snapshot.
    fn snapshot_point(&self) -> Result<Option<SnapshotMeta>, String> {
        let index = self.applied;
        if index <= self.wal.snapshot_meta().index {
            return Ok(None);
        }
        let term = self
            .raw
            .term_at(index)
            .ok_or_else(|| format!("applied index {index} is not in the log"))?;
        Ok(Some(SnapshotMeta { index, term }))
    }

    /// Snapshots the store at the applied index right now (an operator's request), persists
    /// it, compacts WAL and core. Returns the answer for the operator.
    fn take_snapshot(&mut self) -> Result<Outcome, String> {
        let Some(meta) = self.snapshot_point()? else {
            return Ok(done(format!(
                "nothing new to snapshot (snapshot at {}, applied {})",
                self.wal.snapshot_meta().index,
                self.applied
            )));
        };
        let (index, term) = (meta.index, meta.term);
        let data = self.kv.snapshot();
        let bytes = data.len();
        let snapshot = Snapshot { meta, data };
        let saved = self.wal.save_snapshot(&snapshot);
        match saved {
            Ok(()) => {}
            Err(wal::WalError::NoSpace { .. }) => {
                return Ok(unavailable(format!(
                    "no disk space for a snapshot at index {index}; free some and retry"
                )));
            }
            Err(e) => return Err(fatal(e)),
        }
        self.raw.compact(index);
        self.wal_bytes_at_snapshot = self.wal.disk_bytes();
        log::info!(
            "node {}: snapshot taken at index {index} term {term} ({bytes} bytes, {} keys); WAL now {} bytes",
            self.config.id,
            self.kv.len(),
            self.wal.disk_bytes()
        );
        Ok(done(format!("snapshot taken at index {index} term {term}")))
    }

    fn status_json(&self) -> String {
        let s = self.raw.status();
        let stats = self.transport.stats();
        let progress: HashMap<u64, (u64, u64, usize)> = s
            .progress
            .iter()
            .map(|(id, m, n, inflight)| (id.0, (m.0, n.0, *inflight)))
            .collect();
        let peers: Vec<serde_json::Value> = stats
            .peers
            .iter()
            .map(|p| {
                let (m, n, inflight) = progress.get(&p.id).copied().unwrap_or((0, 0, 0));
                serde_json::json!({
                    "id": p.id,
                    "address": p.addr.to_string(),
                    "connected": p.connected,
                    "match": m,
                    "next": n,
                    "inflight": inflight,
                    "frames_out": p.frames_out,
                    "frames_in": p.frames_in,
                    "bytes_out": p.bytes_out,
                    "bytes_in": p.bytes_in,
                    "dropped": p.dropped_outbox_full + p.dropped_not_connected + p.dropped_by_faults,
                    "reconnects": p.reconnects,
                })
            })
            .collect();
        let faults = self.transport.faults();
        serde_json::json!({
            "id": s.id.0,
            "address": addr_of(&self.config, s.id.0).map(|a| a.to_string()),
            "cluster": self.config.cluster_id,
            "role": s.role.to_string(),
            "term": s.term.0,
            "vote": s.vote.0,
            "leader": s.leader.0,
            "commit": s.commit.0,
            "applied": self.applied.0,
            "first_index": s.first_index.0,
            "last_index": s.last_index.0,
            "snapshot_index": self.wal.snapshot_meta().index.0,
            "wal_bytes": self.wal.disk_bytes(),
            "wal_segments": self.wal.segment_count(),
            "keys": self.kv.len(),
            "sessions": self.kv.session_count(),
            "uptime_ms": self.started.elapsed().as_millis() as u64,
            "faults": {
                "drop_percent": faults.drop_percent,
                "delay_ms": faults.delay_ms,
                "partition": faults.partition.iter().collect::<Vec<_>>(),
            },
            "peers": peers,
        })
        .to_string()
    }
}

fn describe_faults(spec: &FaultSpec) -> String {
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

/// Applies a committed normal entry's command to the store.
fn apply_to_store(kv: &mut Kv, node: u64, entry: &Entry) -> Outcome {
    if entry.kind != EntryKind::Normal {
        return Outcome::Written {
            index: entry.index.0,
            term: entry.term.0,
        };
    }
    match Command::decode(&entry.data) {
        Ok(command) => kv.apply(entry.index.0, entry.term.0, &command),
        Err(e) => {
            // Every replica sees the same bytes and skips them the same way.
            log::error!(
                "node {node}: entry {} does not decode ({e}); skipped",
                entry.index
            );
            refused(format!("undecodable command: {e}"))
        }
    }
}

fn refused(reason: String) -> Outcome {
    Outcome::Refused { reason }
}

fn unavailable(reason: String) -> Outcome {
    Outcome::Unavailable { reason }
}
