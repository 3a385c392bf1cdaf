//! Whole servers in the deterministic simulator: N real [`Replica`]s — the daemon's own
//! glue, key-value store, client sessions and write-ahead log — on virtual time, a
//! simulated network and `wal::testing`'s in-memory file system, with simulated clients
//! that record histories for the linearizability checker.
//!
//! What a process-level test cannot do, this does: choose every interleaving from a seed,
//! replay it event for event, and cut the power. A power cut drops the replica and keeps
//! only what its WAL synced; each unsynced 512-byte sector may or may not have reached the
//! disk (a torn tail), which kill -9 never shows because the page cache survives it.
//!
//! The swarm ([`swarm`]) draws a cluster (3 or 5 nodes), the server's snapshot and memory
//! settings and a fault mix from the seed, runs clients through a fault phase (power cuts of
//! any minority at any moment, and now and then of every node at once; partitions, loss, duplication, reordering, full disks), then
//! heals everything, requires every client to finish and every node to converge, reads every
//! key, and checks: one leader per term, every history linearizable (so no acknowledged
//! write is lost and none is applied twice), equal stores on every node, and no node still
//! repairing. With bit rot on, a bit flips in what a powered-off node wrote (its WAL, its
//! snapshot file, or a copy of its term and vote), one damaged node at a time; the node cuts its log and
//! repairs itself from the cluster ([`damaged_follower`] is the directed case).

use crate::lab::Outcome;
use crate::linearizability::{self, Call, Operation, Ret};
use crate::sim::{Micros, Queued, MS, SEC};
use raftd::kv::HashKeys;
use raftd::protocol::{
    Command, FaultSpec, Op, Outcome as Reply, Request, Response, Write, FRAME_REQUEST,
};
use raftd::replica::{Env, Replica};
use raftd::server::ServerConfig;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;
use wal::testing::{Faults as DiskFaults, MemBackend};
use wal::WalOptions;

/// A frame a replica queued, waiting for the simulator to carry it.
#[derive(Debug)]
enum Out {
    Peer { to: u64, kind: u8, body: Vec<u8> },
    Client { client: usize, body: Vec<u8> },
}

/// The simulator's host for one replica: the shared virtual clock and an outbox.
pub struct SimEnv {
    clock: Rc<Cell<Micros>>,
    out: Vec<Out>,
    /// Persists' waits for the disk (`Env::sync_later`) and when each started, run in
    /// order at later events (`Event::SyncDone`); a power cut before that loses them, as a
    /// crash loses a sync thread's fdatasync under way. (The replica starts one at a time;
    /// a queue lets a replica that did not wait be caught by the checkers, not here.)
    sync_waiting: VecDeque<(wal::SyncWait, Micros)>,
    /// Set by `sync_later` until the simulator has scheduled the wait's event.
    sync_started: bool,
    /// The waits' outcomes and (simulated) durations, until the replica takes them.
    sync_results: VecDeque<(std::io::Result<()>, Duration)>,
}

impl SimEnv {
    fn new(clock: Rc<Cell<Micros>>) -> SimEnv {
        SimEnv {
            clock,
            out: Vec::new(),
            sync_waiting: VecDeque::new(),
            sync_started: false,
            sync_results: VecDeque::new(),
        }
    }

    /// Runs the oldest wait under way, if any (its event came).
    fn complete_sync(&mut self) {
        if let Some((wait, since)) = self.sync_waiting.pop_front() {
            let took = Duration::from_micros(self.clock.get() - since);
            self.sync_results.push_back((wait.wait(), took));
        }
    }
}

impl Env for SimEnv {
    type Client = usize;

    fn now(&self) -> Duration {
        Duration::from_micros(self.clock.get())
    }

    fn send_peer(&mut self, to: u64, kind: u8, encode: impl FnOnce(&mut Vec<u8>)) {
        let mut body = Vec::new();
        encode(&mut body);
        self.out.push(Out::Peer { to, kind, body });
    }

    fn send_client(&mut self, client: usize, _kind: u8, body: &[u8]) {
        self.out.push(Out::Client {
            client,
            body: body.to_vec(),
        });
    }

    fn flush(&mut self) {}

    fn set_faults(&mut self, _spec: &FaultSpec) {}

    fn set_peers(&mut self, _peers: &[(u64, SocketAddr)], _accept_unknown_nodes: bool) {}

    fn link_status(&self) -> serde_json::Value {
        serde_json::json!({ "peers": {}, "faults": {} })
    }

    fn waker(&self) -> Option<Box<dyn Fn() + Send>> {
        None
    }

    fn sync_later(&mut self, wait: wal::SyncWait) -> Result<(), wal::SyncWait> {
        self.sync_waiting.push_back((wait, self.clock.get()));
        self.sync_started = true;
        Ok(())
    }

    fn sync_done(&mut self, block: bool) -> Option<(std::io::Result<()>, Duration)> {
        if block && self.sync_results.is_empty() {
            self.complete_sync();
        }
        self.sync_results.pop_front()
    }
}

/// Settings drawn from a seed.
#[derive(Clone, Debug)]
pub struct WholeConfig {
    /// Nodes (ids 1..=n).
    pub nodes: usize,
    /// Simulated clients.
    pub clients: usize,
    /// Keys the clients work on.
    pub keys: usize,
    /// The servers' snapshot interval in entries.
    pub snapshot_entries: u64,
    /// Applied entries the servers keep in memory.
    pub log_memory_entries: u64,
    /// And bytes of their data at most (small, so that the byte bound bites too: a command
    /// here is some 30 to 50 bytes).
    pub log_memory_bytes: u64,
    /// WAL segment size (small, so rollovers and full disks bite).
    pub segment_bytes: u64,
    /// Length of the fault phase.
    pub fault_phase: Micros,
    /// Power cuts allowed (any minority at a time).
    pub power_cuts: bool,
    /// Full-disk periods allowed.
    pub disk_full: bool,
    /// Bit rot allowed: a bit flips in what a powered-off node wrote (its WAL or its copy of
    /// term and vote), one damaged node at a time.
    pub bit_rot: bool,
    /// Message loss in percent during the fault phase's lossy periods.
    pub drop_percent: u32,
    /// Messages delivered twice, in percent.
    pub duplicate_percent: u32,
    /// Extra random latency of every message.
    pub latency_max: Micros,
    /// Batches of at least this many entries wait for the disk at a later event (the
    /// daemon: on its sync thread) rather than in the turn (`usize::MAX`: never).
    pub sync_later_min_entries: usize,
    /// How long such a wait takes at most.
    pub sync_latency_max: Micros,
}

impl WholeConfig {
    /// Draws a configuration from `seed`.
    pub fn from_seed(seed: u64) -> WholeConfig {
        let mut pick = SmallRng::seed_from_u64(seed ^ 0x0b0d_1e55_0b0d_1e55);
        // Settings added later are drawn from a generator of their own, so that a seed
        // still draws the same values for the others.
        let mut pick_later = SmallRng::seed_from_u64(seed ^ 0x10c4_b17e_5000_0001);
        WholeConfig {
            nodes: [3, 3, 5][pick.gen_range(0..3)],
            clients: pick.gen_range(2..6),
            keys: pick.gen_range(1..5),
            // Snapshots often, or rarely (then lagging followers are served entries read
            // back from the WAL: the in-memory log is always short).
            snapshot_entries: [pick.gen_range(20..200), pick.gen_range(500..3000)]
                [pick.gen_range(0..2)],
            log_memory_entries: pick.gen_range(5..60),
            // About 6, 25 or 100 commands: below, about at and above the entry bound.
            log_memory_bytes: [256, 1 << 10, 4 << 10][pick_later.gen_range(0..3)],
            segment_bytes: [8 << 10, 32 << 10, 256 << 10][pick.gen_range(0..3)],
            fault_phase: pick.gen_range(5..15) * SEC,
            power_cuts: pick.gen_bool(0.8),
            disk_full: pick.gen_bool(0.4),
            bit_rot: pick.gen_bool(0.5),
            drop_percent: [0, 2, 10][pick.gen_range(0..3)],
            duplicate_percent: [0, 0, 5][pick.gen_range(0..3)],
            latency_max: [MS, 5 * MS, 30 * MS][pick.gen_range(0..3)],
            // Drawn apart, so the fields above stay what each seed drew before.
            sync_later_min_entries: [1, 4, usize::MAX][pick_later.gen_range(0..3)],
            sync_latency_max: [MS / 5, 2 * MS, 10 * MS][pick_later.gen_range(0..3)],
        }
    }
}

#[derive(Debug)]
enum Event {
    /// A node's loop iteration (ticks are due every 10 ms).
    Turn { node: usize, incarnation: u64 },
    /// A peer frame arrives.
    Peer {
        from: usize,
        to: usize,
        kind: u8,
        body: Vec<u8>,
        from_incarnation: u64,
        to_incarnation: u64,
    },
    /// A client request arrives at a node.
    Request {
        node: usize,
        incarnation: u64,
        client: usize,
        body: Vec<u8>,
    },
    /// A response arrives at a client.
    Response { client: usize, body: Vec<u8> },
    /// A client's attempt timed out, or its back-off before the next attempt is over.
    ClientTimer { client: usize, attempt: u64 },
    /// A powered-off node comes back.
    PowerOn { node: usize },
    /// A node's wait for the disk (`Env::sync_later`) is over.
    SyncDone { node: usize, incarnation: u64 },
    /// A full disk is freed.
    DiskFreed { node: usize },
}

/// What a client is doing.
#[derive(Clone, Debug)]
struct Pending {
    op: Operation,
    /// The request: a write keeps its session sequence number across attempts.
    request: Op,
    attempts: u32,
}

struct Client {
    /// The client's session id.
    id: u64,
    seq: u64,
    /// The node it believes leads.
    target: usize,
    /// Request id of the attempt in flight (0: none).
    in_flight: u64,
    /// Bumped by every attempt and back-off, so a stale timer is ignored.
    attempt: u64,
    pending: Option<Pending>,
    /// Ops still to start (`None`: unbounded, during the fault phase).
    final_reads: Vec<Vec<u8>>,
}

/// Time a client waits for an answer before trying another node.
const ATTEMPT_TIMEOUT: Micros = 800 * MS;
/// Attempts per operation before its outcome is recorded as unknown.
const ATTEMPTS_MAX: u32 = 25;
/// How long the heal phase may take before the run is declared not live.
const HEAL_LIMIT: Micros = 60 * SEC;
/// How long the scrubbers may take, after convergence, to find and mend every damage.
const SCRUB_LIMIT: Micros = 30 * SEC;

/// The simulated cluster of whole servers.
pub struct WholeSim {
    config: WholeConfig,
    rng: SmallRng,
    clock: Rc<Cell<Micros>>,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued<Event>>>,
    replicas: Vec<Option<Replica<SimEnv>>>,
    disks: Vec<MemBackend>,
    incarnations: Vec<u64>,
    /// `blocked[from][to]`: the link drops everything.
    blocked: Vec<Vec<bool>>,
    drop_percent: u32,
    /// Per node: the power fails during its next disk sync.
    cut_at_next_sync: Vec<bool>,
    /// Per node: its disk is full (segment allocation fails).
    disk_full: Vec<bool>,
    clients: Vec<Client>,
    history: Vec<Operation>,
    next_request_id: u64,
    /// One leader per term (election safety).
    leaders: BTreeMap<u64, u64>,
    /// Per index a leader committed: (entry term, that leader's term), for completeness.
    commits: BTreeMap<u64, (u64, u64)>,
    /// Terms whose leader was checked for completeness.
    completeness_checked: std::collections::BTreeSet<u64>,
    /// Per node: the commit index already recorded in `commits`.
    recorded_commit: Vec<u64>,
    /// The fault phase is over: clients stop starting new random operations.
    healing: bool,
    /// Every note, every frame delivered (its bytes) and, at the end, every disk's files.
    trace_hash: DefaultHasher,
    trace: bool,
    events: u64,
    /// Peer frames delivered.
    frames: u64,
    /// Counters for the report.
    pub power_cuts: u64,
    /// Full-disk periods started.
    pub disk_fulls: u64,
    /// Draws for bit rot on running nodes, apart from `rng` so that a run without any
    /// draws the same faults as before the scrubber was simulated.
    rot_rng: SmallRng,
    /// Per node: a bit that rotted while it ran, until its file is gone or replaced or that
    /// byte changed.
    rotted: Vec<Option<Rot>>,
    /// Bits rotted on running nodes.
    pub live_rots: u64,
}

/// A bit that rotted on a running node.
#[derive(Clone, Debug)]
struct Rot {
    path: PathBuf,
    /// The file under `path` then (`MemBackend::file_id`).
    file_id: u64,
    /// The rotted byte's offset and its value after the flip.
    byte: usize,
    value: u8,
}

fn addr(id: u64) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7000 + id as u16))
}

fn wal_dir(node: usize) -> PathBuf {
    PathBuf::from(format!("/sim/n{}/wal", node + 1))
}

impl WholeSim {
    /// Builds the cluster, every node up with an empty disk.
    pub fn new(config: WholeConfig, seed: u64) -> WholeSim {
        let n = config.nodes;
        let mut sim = WholeSim {
            rng: SmallRng::seed_from_u64(seed),
            clock: Rc::new(Cell::new(0)),
            seq: 0,
            queue: BinaryHeap::new(),
            replicas: (0..n).map(|_| None).collect(),
            disks: (0..n).map(|i| MemBackend::with_dir(&wal_dir(i))).collect(),
            incarnations: vec![0; n],
            blocked: vec![vec![false; n]; n],
            drop_percent: 0,
            cut_at_next_sync: vec![false; n],
            disk_full: vec![false; n],
            clients: Vec::new(),
            history: Vec::new(),
            next_request_id: 1,
            leaders: BTreeMap::new(),
            commits: BTreeMap::new(),
            completeness_checked: std::collections::BTreeSet::new(),
            recorded_commit: vec![0; n],
            healing: false,
            trace_hash: DefaultHasher::new(),
            trace: std::env::var_os("SIM_TRACE").is_some(),
            events: 0,
            frames: 0,
            power_cuts: 0,
            disk_fulls: 0,
            rot_rng: SmallRng::seed_from_u64(seed ^ 0x5c2b_b1e5),
            rotted: vec![None; n],
            live_rots: 0,
            config,
        };
        for i in 0..n {
            sim.power_on(i);
        }
        for c in 0..sim.config.clients {
            let target = sim.rng.gen_range(0..n);
            sim.clients.push(Client {
                id: 0xc000 + c as u64,
                seq: 0,
                target,
                in_flight: 0,
                attempt: 0,
                pending: None,
                final_reads: Vec::new(),
            });
            let start = sim.rng.gen_range(0..50 * MS);
            sim.schedule(
                start,
                Event::ClientTimer {
                    client: c,
                    attempt: 0,
                },
            );
        }
        sim
    }

    fn now(&self) -> Micros {
        self.clock.get()
    }

    fn schedule(&mut self, delay: Micros, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at: self.now() + delay,
            seq: self.seq,
            event,
        }));
    }

    fn note(&mut self, what: std::fmt::Arguments<'_>) {
        let line = what.to_string();
        line.hash(&mut self.trace_hash);
        if self.trace {
            println!("{:>10} {line}", self.now());
        }
    }

    fn server_config(&self, node: usize) -> ServerConfig {
        let id = node as u64 + 1;
        ServerConfig {
            id,
            peers: (1..=self.config.nodes as u64)
                .map(|i| (i, addr(i)))
                .collect(),
            peer_hosts: Vec::new(),
            tls: None,
            listen: addr(id),
            data_dir: PathBuf::from(format!("/sim/n{id}")),
            cluster_id: "sim".into(),
            token: None,
            heartbeat_ms: 50,
            election_ms: 500,
            snapshot_entries: self.config.snapshot_entries,
            log_memory_entries: self.config.log_memory_entries,
            log_memory_bytes: self.config.log_memory_bytes,
            snapshot_wal_bytes: u64::MAX,
            // Snapshots as often as `snapshot_entries` says: the simulator wants many.
            snapshot_ratio: 0,
            sync_later_min_entries: self.config.sync_later_min_entries,
            wal_segment_bytes: self.config.segment_bytes,
            // Not used: the simulator's disk is `wal::testing`'s, not the real backend.
            wal_write: wal::WriteMode::default(),
            // Often, so that checkpoints are compared through the faults too.
            consistency_check_secs: 1,
            // A pass over a simulated disk every second or so.
            scrub_bytes_per_sec: 256 << 10,
            join: false,
            // The simulator breaks its nodes itself (power cuts, disks, the network); no
            // client of it asks a node to.
            fault_injection: false,
        }
    }

    /// Starts node `i` from what its disk holds.
    fn power_on(&mut self, i: usize) {
        assert!(self.replicas[i].is_none(), "node {} is already up", i + 1);
        self.incarnations[i] += 1;
        let incarnation = self.incarnations[i];
        let options = WalOptions {
            segment_bytes: self.config.segment_bytes,
            repair: true,
            backend: Arc::new(self.disks[i].clone()),
            helper_threads: false,
        };
        let env = SimEnv::new(self.clock.clone());
        let seed = self.rng.gen();
        // The store's hash keys come from the seed too: they decide the order its keys
        // are snapshotted in, so a snapshot's bytes (the daemon draws them at random).
        let keys = HashKeys::from_seed(seed);
        let config = self.server_config(i);
        let replica = match Replica::open(config, &wal_dir(i), options, seed, keys, env) {
            Ok(replica) => replica,
            // Like a unit with Restart=on-failure: a node that cannot start on a full disk
            // is started again a while later (what it did durably before failing, such as
            // marking itself repairing, must hold up).
            Err(e) if self.disk_full[i] => {
                self.note(format_args!("node {} does not start: {e}", i + 1));
                self.schedule(500 * MS, Event::PowerOn { node: i });
                return;
            }
            Err(e) => panic!("node {} does not start after a power cut: {e}", i + 1),
        };
        self.replicas[i] = Some(replica);
        self.note(format_args!("power on {} incarnation {incarnation}", i + 1));
        let phase = self.rng.gen_range(0..10 * MS);
        self.schedule(
            phase,
            Event::Turn {
                node: i,
                incarnation,
            },
        );
    }

    /// Cuts node `i`'s power: memory is gone, and of what its WAL wrote since the last
    /// sync each sector independently reached the disk or not.
    fn power_cut(&mut self, i: usize) {
        if self.replicas[i].take().is_none() {
            return;
        }
        self.incarnations[i] += 1;
        self.cut_at_next_sync[i] = false;
        let seed = self.rng.gen();
        self.disks[i] = self.disks[i].crash_torn(seed);
        self.power_cuts += 1;
        self.note(format_args!("power cut {}", i + 1));
    }

    /// Flips one bit in what node `i` (powered off) wrote to its newest WAL segment, in
    /// the last `fraction` of the written bytes: bit rot in committed data, which recovery
    /// cannot take for a torn write. False if the node wrote nothing.
    fn rot(&mut self, i: usize, fraction: f64) -> bool {
        assert!(
            self.replicas[i].is_none(),
            "rot a disk only while its node is off"
        );
        let disk = &self.disks[i];
        let Some(segment) = disk
            .file_names()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .max()
        else {
            return false;
        };
        let bytes = disk.contents(&segment).expect("listed");
        let Some(end) = bytes.iter().rposition(|&b| b != 0) else {
            return false;
        };
        // Not the last 128 bytes: a flip inside the final commit record reads as a torn
        // write (the WAL's one documented limit), not as damage.
        let end = end.saturating_sub(128);
        let from = 64.max(end - (end as f64 * fraction) as usize);
        if from >= end {
            return false;
        }
        let byte = self.rng.gen_range(from..end);
        let bit = byte * 8 + self.rng.gen_range(0..8);
        disk.flip_bit(&segment, bit);
        self.note(format_args!("bit rot on node {} at bit {bit}", i + 1));
        true
    }

    /// Now and then, when no other node is repairing, lets a bit rot on powered-off node
    /// `i`: in its newest segment (often), its newest snapshot file, or one copy of its
    /// term and vote.
    fn maybe_rot(&mut self, i: usize) {
        if !self.config.bit_rot || self.healing || !self.rng.gen_bool(0.3) {
            return;
        }
        if (0..self.config.nodes).any(|j| j != i && self.damaged(j)) {
            return;
        }
        let roll = self.rng.gen_range(0..100);
        if roll < 70 {
            self.rot(i, 1.0);
            return;
        }
        let snapshot = self.disks[i]
            .file_names()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "snap"))
            .max();
        let path = match snapshot {
            Some(snapshot) if roll < 85 => snapshot,
            _ => wal_dir(i).join(["vote-a", "vote-b"][self.rng.gen_range(0..2)]),
        };
        let name = path.display().to_string();
        if let Some(bytes) = self.disks[i].contents(&path) {
            let bit = self.rng.gen_range(0..bytes.len() * 8);
            self.disks[i].flip_bit(&path, bit);
            self.note(format_args!("bit rot on node {} in {name}", i + 1));
        }
    }

    /// Whether node `j`'s disk may hold damage: it is repairing or mending (its marker is on
    /// its disk until that is over, powered on or not), or a bit rotted while it ran that
    /// nothing has replaced yet. The fault model: one damaged node at a time.
    fn damaged(&self, j: usize) -> bool {
        let marked = self.disks[j]
            .contents(&wal_dir(j).join(wal::REPAIR_FILE))
            .is_some();
        marked || self.rot_unhealed(j)
    }

    /// Whether the bit that rotted on node `j` while it ran is still there: the same file
    /// (not one that replaced it, as the same snapshot written again to mend it does) holds
    /// the rotted value. The value alone is no proof: a snapshot written again may hold its
    /// keys in another order, and one key or value may differ from another in that one bit
    /// ("k1" and "k3", or the digits 3 and 7 in two values; seed 2776 failed on such a
    /// mended file).
    fn rot_unhealed(&self, j: usize) -> bool {
        self.rotted[j].as_ref().is_some_and(|rot| {
            let disk = &self.disks[j];
            disk.file_id(&rot.path) == Some(rot.file_id)
                && disk
                    .contents(&rot.path)
                    .is_some_and(|bytes| bytes.get(rot.byte) == Some(&rot.value))
        })
    }

    /// Now and then, when no node's disk is damaged, lets a bit rot on running node `i`: in
    /// a sealed WAL segment or its snapshot file, which its scrubber must find and mend
    /// while it runs (the page it maps keeps the good bytes, as a cached page would).
    fn maybe_rot_running(&mut self) {
        let n = self.config.nodes;
        if !self.config.bit_rot || self.healing || !self.rot_rng.gen_bool(0.1) {
            return;
        }
        if (0..n).any(|j| self.damaged(j)) {
            return;
        }
        let i = self.rot_rng.gen_range(0..n);
        if self.replicas[i].is_none() {
            return;
        }
        let mut files: Vec<PathBuf> = self.disks[i]
            .file_names()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "wal"))
            .collect();
        files.sort();
        files.pop(); // The segment being written.
                     // The snapshot file in use (not one written and not yet installed).
        let snapshot = self.replicas[i]
            .as_ref()
            .map(|r| r.wal().snapshot_meta())
            .filter(|meta| meta.index.0 > 0);
        if let Some(meta) = snapshot {
            files.push(wal_dir(i).join(format!(
                "snap-{:016x}-{:016x}.snap",
                meta.index.0, meta.term.0
            )));
        }
        if files.is_empty() {
            return;
        }
        let path = files[self.rot_rng.gen_range(0..files.len())].clone();
        let Some(bytes) = self.disks[i].contents(&path) else {
            return;
        };
        let bit = self.rot_rng.gen_range(0..bytes.len() * 8);
        self.disks[i].flip_bit(&path, bit);
        self.rotted[i] = Some(Rot {
            file_id: self.disks[i].file_id(&path).expect("read above"),
            path: path.clone(),
            byte: bit / 8,
            value: bytes[bit / 8] ^ (1 << (bit % 8)),
        });
        self.live_rots += 1;
        self.note(format_args!(
            "bit rot on running node {} in {} at bit {bit}",
            i + 1,
            path.display()
        ));
    }

    /// Folds every disk's files, names and bytes, into the trace hash: two runs of one seed
    /// must end with the same bytes on every disk, not only take the same steps. The lock
    /// file is left out: it holds the pid of the process that runs the simulator
    /// (`Backend::lock`'s contract), the one thing on a simulated disk that is not the run's.
    fn hash_disks(&mut self) {
        for disk in &self.disks {
            for path in disk.file_names() {
                if path.file_name() == Some(std::ffi::OsStr::new(wal::LOCK_FILE)) {
                    continue;
                }
                path.hash(&mut self.trace_hash);
                disk.contents(&path).hash(&mut self.trace_hash);
            }
        }
    }

    fn up(&self) -> usize {
        self.replicas.iter().filter(|r| r.is_some()).count()
    }

    /// Carries what node `i` queued and checks election safety.
    fn after_input(&mut self, i: usize) {
        let Some(replica) = self.replicas[i].as_mut() else {
            return;
        };
        let out = std::mem::take(&mut replica.env_mut().out);
        let sync_started = std::mem::take(&mut replica.env_mut().sync_started);
        if let Some(alarm) = replica.alarm() {
            panic!("consistency: node {} raised an alarm: {alarm}", i + 1);
        }
        self.check_core(i);
        if sync_started {
            let delay = self.rng.gen_range(MS / 20..=self.config.sync_latency_max);
            let incarnation = self.incarnations[i];
            self.schedule(
                delay,
                Event::SyncDone {
                    node: i,
                    incarnation,
                },
            );
        }
        for o in out {
            match o {
                Out::Peer { to, kind, body } => self.send_peer(i, to as usize - 1, kind, body),
                Out::Client { client, body } => {
                    let delay = self.rng.gen_range(0..=self.config.latency_max);
                    self.schedule(delay, Event::Response { client, body });
                }
            }
        }
    }

    /// The core's safety properties, checked after every input of node `i`: one leader per
    /// term (election safety); a new leader holds every entry committed in an earlier term
    /// that its memory still holds (leader completeness, the newest 256); where node `i`'s
    /// newest entries share index and term with another live node's, the entries are equal
    /// (log matching, the newest 8).
    fn check_core(&mut self, i: usize) {
        let raw = self.replicas[i].as_ref().expect("checked live").raw();
        let (term, id, commit) = (raw.term().0, raw.id().0, raw.commit_index().0);
        if raw.is_leader() {
            let mut k = self.recorded_commit[i].max(raw.snapshot_meta().index.0);
            while k < commit {
                k += 1;
                let entry_term = raw
                    .term_at(raft::LogIndex(k))
                    .expect("committed, in memory");
                self.commits.entry(k).or_insert((entry_term.0, term));
            }
            let first = *self.leaders.entry(term).or_insert(id);
            assert_eq!(first, id, "election safety: term {term} has two leaders");
            if !self.completeness_checked.contains(&term) {
                let floor = raw.snapshot_meta().index.0;
                for (&index, &(entry_term, commit_term)) in
                    self.commits.range(floor + 1..).rev().take(256)
                {
                    if commit_term < term {
                        assert_eq!(
                            raw.term_at(raft::LogIndex(index)).map(|t| t.0),
                            Some(entry_term),
                            "leader completeness: leader {id} of term {term} lacks entry {index} (term {entry_term}) committed in term {commit_term}"
                        );
                    }
                }
                self.completeness_checked.insert(term);
            }
        }
        self.recorded_commit[i] = self.recorded_commit[i].max(commit);
        let last = raw.last_index().0;
        for (j, other) in self.replicas.iter().enumerate() {
            let Some(other) = other.as_ref().filter(|_| j != i) else {
                continue;
            };
            let other = other.raw();
            let lo = raw
                .snapshot_meta()
                .index
                .0
                .max(other.snapshot_meta().index.0)
                + 1;
            let hi = last.min(other.last_index().0);
            let mut matched = false;
            for index in (lo.max(hi.saturating_sub(8))..=hi).rev() {
                let (a, b) = (
                    raw.entry(raft::LogIndex(index)),
                    other.entry(raft::LogIndex(index)),
                );
                let (Some(a), Some(b)) = (a, b) else { continue };
                matched |= a.term == b.term;
                assert!(
                    !matched || a == b,
                    "log matching: nodes {} and {} differ at index {index} below a common entry",
                    i + 1,
                    j + 1
                );
            }
        }
    }

    fn send_peer(&mut self, from: usize, to: usize, kind: u8, body: Vec<u8>) {
        if self.blocked[from][to] {
            return;
        }
        if self.drop_percent > 0 && self.rng.gen_range(0..100) < self.drop_percent {
            return;
        }
        let copies = if self.config.duplicate_percent > 0
            && self.rng.gen_range(0..100) < self.config.duplicate_percent
        {
            2
        } else {
            1
        };
        for _ in 0..copies {
            let delay = self.rng.gen_range(0..=self.config.latency_max);
            let event = Event::Peer {
                from,
                to,
                kind,
                body: body.clone(),
                from_incarnation: self.incarnations[from],
                to_incarnation: self.incarnations[to],
            };
            self.schedule(delay, event);
        }
    }

    /// Processes events until `until`.
    fn run_until(&mut self, until: Micros) {
        while let Some(Reverse(q)) = self.queue.peek() {
            if q.at > until {
                break;
            }
            let Reverse(q) = self.queue.pop().expect("peeked");
            self.clock.set(q.at);
            self.events += 1;
            self.handle(q.event);
        }
        self.clock.set(until);
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Turn { node, incarnation } => {
                if self.incarnations[node] != incarnation {
                    return;
                }
                self.turn(node);
                self.schedule(10 * MS, Event::Turn { node, incarnation });
            }
            Event::Peer {
                from,
                to,
                kind,
                body,
                from_incarnation,
                to_incarnation,
            } => {
                // A frame from a node that lost power since, or to one that did, is lost
                // with the connection.
                if self.incarnations[from] != from_incarnation
                    || self.incarnations[to] != to_incarnation
                    || self.blocked[from][to]
                {
                    return;
                }
                self.frames += 1;
                body.hash(&mut self.trace_hash);
                (self.now(), from, to).hash(&mut self.trace_hash);
                if let Some(r) = self.replicas[to].as_mut() {
                    r.on_peer_frame(from as u64 + 1, kind, body.into());
                    self.turn(to);
                }
            }
            Event::Request {
                node,
                incarnation,
                client,
                body,
            } => {
                if self.incarnations[node] != incarnation {
                    return; // The connection died with the node.
                }
                if let Some(r) = self.replicas[node].as_mut() {
                    if let Err(e) = r.on_client_frame(client, FRAME_REQUEST, body.into()) {
                        self.failed(node, e);
                        return;
                    }
                    self.turn(node);
                }
            }
            Event::Response { client, body } => {
                (self.now(), client, &body).hash(&mut self.trace_hash);
                self.client_response(client, &body)
            }
            Event::ClientTimer { client, attempt } => {
                if self.clients[client].attempt == attempt {
                    self.client_timer(client);
                }
            }
            Event::SyncDone { node, incarnation } => {
                if self.incarnations[node] != incarnation {
                    return; // Lost with the node's power.
                }
                if let Some(r) = self.replicas[node].as_mut() {
                    r.env_mut().complete_sync();
                    self.turn(node);
                }
            }
            Event::PowerOn { node } => {
                if self.replicas[node].is_none() {
                    self.maybe_rot(node);
                    self.power_on(node);
                }
            }
            Event::DiskFreed { node } => {
                self.disk_full[node] = false;
                self.disks[node].set_faults(DiskFaults {
                    fail_sync: self.cut_at_next_sync[node],
                    ..DiskFaults::default()
                });
                self.note(format_args!("disk freed {}", node + 1));
            }
        }
    }

    fn turn(&mut self, i: usize) {
        let Some(r) = self.replicas[i].as_mut() else {
            return;
        };
        if let Err(e) = r.turn() {
            self.failed(i, e);
            return;
        }
        // No false alarms: the scrubber finds damage only on a disk where a bit rotted.
        let found = r.wal().scrub_totals().damage_found;
        assert!(
            found == 0 || self.rotted[i].is_some(),
            "scrubber: node {} found damage where no bit rotted: {:?}",
            i + 1,
            r.wal().damaged_files()
        );
        self.after_input(i);
    }

    /// A replica stopped on an error. When its disk was set to lose power during a sync,
    /// that sync is the moment of the cut: the batch being written is partly on disk at
    /// most (a torn tail), and the node restarts from what survived. Any other error is a
    /// failure of the run.
    fn failed(&mut self, i: usize, error: String) {
        if !self.cut_at_next_sync[i] {
            panic!("node {} failed: {error}", i + 1);
        }
        self.cut_at_next_sync[i] = false;
        self.disks[i].set_faults(DiskFaults::default());
        self.note(format_args!("power cut {} during a disk sync", i + 1));
        self.power_cut(i);
        let off = self.rng.gen_range(0..2 * SEC);
        self.schedule(off, Event::PowerOn { node: i });
    }

    // ----- clients -----

    fn client_timer(&mut self, c: usize) {
        if self.clients[c].pending.is_none() {
            self.start_op(c);
        } else {
            // The attempt timed out (or a back-off ended); a timed-out one may still be
            // applied, which the session makes harmless: try another node.
            if self.clients[c].in_flight != 0 {
                let n = self.config.nodes;
                self.clients[c].target = self.rng.gen_range(0..n);
            }
            self.attempt(c);
        }
    }

    /// Starts the client's next operation, if it has one.
    fn start_op(&mut self, c: usize) {
        let keys = self.config.keys;
        let now_ns = self.now() * 1000;
        let client_id = self.clients[c].id;
        let (key, call, request) = if self.healing {
            let Some(key) = self.clients[c].final_reads.pop() else {
                return;
            };
            (key.clone(), Call::Get, Op::Get { key })
        } else {
            let key = format!("k{}", self.rng.gen_range(0..keys)).into_bytes();
            let roll = self.rng.gen_range(0..10);
            self.clients[c].seq += 1;
            let seq = self.clients[c].seq;
            let value = format!("c{c}s{seq}").into_bytes();
            match roll {
                0..=3 => (key.clone(), Call::Get, Op::Get { key }),
                4..=7 => {
                    let write = Write::Put {
                        key: key.clone(),
                        value: value.clone(),
                    };
                    let command = Command {
                        client_id,
                        seq,
                        write,
                    };
                    (key, Call::Put(value), Op::Write(command))
                }
                _ => {
                    // Expect the value this client last saw anywhere, or absent.
                    let expected = self.last_value(&key);
                    let write = Write::Cas {
                        key: key.clone(),
                        expected: expected.clone(),
                        new: value.clone(),
                    };
                    let command = Command {
                        client_id,
                        seq,
                        write,
                    };
                    let call = Call::Cas {
                        expected,
                        new: value,
                    };
                    (key, call, Op::Write(command))
                }
            }
        };
        self.clients[c].pending = Some(Pending {
            op: Operation {
                client: c as u64,
                key,
                call,
                invoke_ns: now_ns,
                complete_ns: None,
                ret: Ret::Unknown,
            },
            request,
            attempts: 0,
        });
        self.attempt(c);
    }

    /// The value of the newest completed put or get of `key` in the history.
    fn last_value(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.history
            .iter()
            .rev()
            .filter(|o| o.key == key)
            .find_map(|o| match (&o.call, &o.ret) {
                (_, Ret::Value(v)) => Some(v.clone()),
                (Call::Put(v), Ret::Ok) => Some(Some(v.clone())),
                _ => None,
            })
            .flatten()
    }

    /// Sends the pending operation to the client's target, or gives up on it.
    fn attempt(&mut self, c: usize) {
        let p = self.clients[c].pending.as_mut().expect("pending");
        p.attempts += 1;
        if p.attempts > ATTEMPTS_MAX && !self.healing {
            let p = self.clients[c].pending.take().expect("pending");
            self.finish(c, p, Ret::Unknown);
            return;
        }
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let body = Request {
            request_id,
            op: p.request.clone(),
        }
        .encode();
        let client = &mut self.clients[c];
        client.in_flight = request_id;
        client.attempt += 1;
        let (node, attempt) = (client.target, client.attempt);
        let delay = self.rng.gen_range(0..=self.config.latency_max);
        let incarnation = self.incarnations[node];
        self.schedule(
            delay,
            Event::Request {
                node,
                incarnation,
                client: c,
                body,
            },
        );
        self.schedule(ATTEMPT_TIMEOUT, Event::ClientTimer { client: c, attempt });
    }

    fn client_response(&mut self, c: usize, body: &[u8]) {
        let response = Response::decode(body).expect("a replica's response decodes");
        if response.request_id != self.clients[c].in_flight || response.request_id == 0 {
            return; // An answer to an attempt given up on.
        }
        self.clients[c].in_flight = 0;
        let Some(p) = self.clients[c].pending.take() else {
            return;
        };
        let is_write = matches!(p.request, Op::Write(_));
        let ret = match response.outcome {
            Reply::Written { .. } => Ret::Ok,
            Reply::CasMismatch { .. } => Ret::CasMismatch,
            Reply::Value(v) if !is_write => Ret::Value(v),
            Reply::NotLeader { leader, .. } => {
                let n = self.config.nodes;
                self.clients[c].target = if leader == 0 {
                    self.rng.gen_range(0..n)
                } else {
                    leader as usize - 1
                };
                return self.back_off(c, p);
            }
            Reply::Unavailable { .. } => return self.back_off(c, p),
            other => panic!("client {c}: unexpected answer {other:?} to {:?}", p.request),
        };
        self.finish(c, p, ret);
    }

    /// Retries after a short pause (same session sequence number for a write).
    fn back_off(&mut self, c: usize, p: Pending) {
        self.clients[c].pending = Some(p);
        self.clients[c].attempt += 1;
        let attempt = self.clients[c].attempt;
        let pause = self.rng.gen_range(5 * MS..50 * MS);
        self.schedule(pause, Event::ClientTimer { client: c, attempt });
    }

    fn finish(&mut self, c: usize, p: Pending, ret: Ret) {
        let mut op = p.op;
        // A write given up on may still be applied by any attempt: its outcome is unknown.
        if ret != Ret::Unknown {
            op.complete_ns = Some(self.now() * 1000);
        }
        op.ret = ret;
        let reads = matches!(op.call, Call::Get);
        if !(reads && op.ret == Ret::Unknown) {
            self.history.push(op);
        }
        self.clients[c].attempt += 1;
        let attempt = self.clients[c].attempt;
        let think = if self.healing {
            0
        } else {
            self.rng.gen_range(0..30 * MS)
        };
        self.schedule(think, Event::ClientTimer { client: c, attempt });
    }

    // ----- faults -----

    fn random_fault(&mut self) {
        let n = self.config.nodes;
        let minority = (n - 1) / 2;
        match self.rng.gen_range(0..100) {
            0..=19 if self.config.power_cuts => {
                let i = self.rng.gen_range(0..n);
                if self.replicas[i].is_some() && n - self.up() < minority {
                    self.power_cut(i);
                    let off = self.rng.gen_range(0..3 * SEC);
                    self.schedule(off, Event::PowerOn { node: i });
                }
            }
            20..=24 if self.config.power_cuts => {
                // Every node at once, as when the building's power fails: only what each
                // WAL synced survives anywhere.
                for i in 0..n {
                    self.power_cut(i);
                    let off = self.rng.gen_range(0..SEC);
                    self.schedule(off, Event::PowerOn { node: i });
                }
            }
            95..=99 if self.config.power_cuts => {
                // The power fails while the node's next batch is being written.
                let i = self.rng.gen_range(0..n);
                if self.replicas[i].is_some() && n - self.up() < minority {
                    self.cut_at_next_sync[i] = true;
                    self.disks[i].set_faults(DiskFaults {
                        fail_sync: true,
                        ..DiskFaults::default()
                    });
                }
            }
            25..=44 => {
                // Cut a random set of nodes off from the rest.
                let cut: Vec<bool> = (0..n).map(|_| self.rng.gen_bool(0.3)).collect();
                for a in 0..n {
                    for b in 0..n {
                        self.blocked[a][b] = cut[a] != cut[b];
                    }
                }
                self.note(format_args!("partition {cut:?}"));
            }
            45..=54 => {
                // One direction of one link.
                let (a, b) = (self.rng.gen_range(0..n), self.rng.gen_range(0..n));
                self.blocked[a][b] = true;
                self.note(format_args!("block {} -> {}", a + 1, b + 1));
            }
            55..=74 => {
                self.blocked = vec![vec![false; n]; n];
                self.note(format_args!("heal network"));
            }
            75..=84 => {
                self.drop_percent = if self.drop_percent == 0 {
                    self.config.drop_percent
                } else {
                    0
                };
                let p = self.drop_percent;
                self.note(format_args!("loss {p}%"));
            }
            85..=94 if self.config.disk_full => {
                let i = self.rng.gen_range(0..n);
                self.disks[i].set_faults(DiskFaults {
                    no_space: true,
                    fail_sync: self.cut_at_next_sync[i],
                    ..DiskFaults::default()
                });
                self.disk_full[i] = true;
                self.disk_fulls += 1;
                self.note(format_args!("disk full {}", i + 1));
                let period = self.rng.gen_range(SEC..4 * SEC);
                self.schedule(period, Event::DiskFreed { node: i });
            }
            _ => {}
        }
    }

    /// Heals everything and brings every node up.
    fn heal(&mut self) {
        let n = self.config.nodes;
        self.blocked = vec![vec![false; n]; n];
        self.drop_percent = 0;
        for i in 0..n {
            self.cut_at_next_sync[i] = false;
            self.disk_full[i] = false;
            self.disks[i].set_faults(DiskFaults::default());
            if self.replicas[i].is_none() {
                self.power_on(i);
            }
        }
        self.healing = true;
        self.note(format_args!("heal all"));
    }

    /// One line per node for a failure message.
    fn describe_nodes(&self) -> String {
        let mut out = String::new();
        for (i, r) in self.replicas.iter().enumerate() {
            match r {
                None => out.push_str(&format!("[{} down] ", i + 1)),
                Some(r) => {
                    let s = r.raw().status();
                    out.push_str(&format!(
                        "[{} {} term {} leader {} commit {} applied {} last {} stored {} repairing {}] ",
                        i + 1,
                        s.role,
                        s.term,
                        s.leader,
                        s.commit,
                        r.applied(),
                        s.last_index,
                        s.snapshot_index,
                        s.repairing
                    ));
                }
            }
        }
        out
    }

    fn clients_done(&self) -> bool {
        self.clients
            .iter()
            .all(|c| c.pending.is_none() && c.final_reads.is_empty())
    }

    /// Every node applied the same index and holds the same store.
    fn converged(&self) -> bool {
        let live: Vec<&Replica<SimEnv>> = self.replicas.iter().flatten().collect();
        let first = live[0];
        live.iter().all(|r| {
            r.applied() == first.applied()
                && r.raw().commit_index() == r.raw().last_index()
                && r.kv() == first.kv()
        })
    }
}

/// Runs one whole-server swarm scenario and checks it; panics on any violation.
pub fn swarm(seed: u64) -> Outcome {
    let config = WholeConfig::from_seed(seed);
    run(config, seed)
}

/// Runs one whole-server scenario with the given settings.
pub fn run(config: WholeConfig, seed: u64) -> Outcome {
    let fault_phase = config.fault_phase;
    let mut sim = WholeSim::new(config, seed);
    // Fault phase.
    while sim.now() < fault_phase {
        let step = sim.rng.gen_range(50..500) * MS;
        let until = sim.now() + step;
        sim.run_until(until);
        sim.random_fault();
        sim.maybe_rot_running();
    }
    finish(sim, seed)
}

/// The scenario of a damaged disk, with the seed choosing the moments and the
/// damaged bit: three nodes A (the leader), B and C; C is cut off while clients write, so
/// what is acknowledged is on A and B only. All three lose power; a bit rots in B's WAL
/// among those writes. A stays off; B and C come back. B cut its log and is repairing, so
/// it must neither vote nor campaign: B and C stay without a leader (checked all along)
/// rather than elect one that lacks acknowledged writes. Then A comes back, and the usual
/// checks run: every acknowledged write reads back (linearizability), every node converges,
/// and B is an ordinary voter again.
pub fn damaged_follower(seed: u64) -> Outcome {
    let mut config = WholeConfig::from_seed(seed);
    config.nodes = 3;
    config.snapshot_entries = 100_000;
    config.segment_bytes = 256 << 10;
    let mut sim = WholeSim::new(config, seed);
    sim.run_until(2 * SEC);
    let a = (0..3)
        .find(|&i| {
            sim.replicas[i]
                .as_ref()
                .is_some_and(|r| r.raw().is_leader())
        })
        .expect("a leader within 2 s");
    let (b, c) = ((a + 1) % 3, (a + 2) % 3);
    for x in 0..3 {
        sim.blocked[x][c] = x != c;
        sim.blocked[c][x] = x != c;
    }
    let until = sim.now() + sim.rng.gen_range(2..5) * SEC;
    sim.run_until(until);
    for i in 0..3 {
        sim.power_cut(i);
    }
    assert!(sim.rot(b, 0.5), "nothing written on node {}", b + 1);
    sim.blocked = vec![vec![false; 3]; 3];
    sim.power_on(b);
    sim.power_on(c);
    assert!(
        sim.replicas[b]
            .as_ref()
            .is_some_and(|r| r.raw().status().repairing),
        "node {} did not notice its damaged WAL",
        b + 1
    );
    let until = sim.now() + 5 * SEC;
    while sim.now() < until {
        let next = sim.now() + 10 * MS;
        sim.run_until(next);
        let leaders: Vec<usize> = (0..3)
            .filter(|&i| {
                sim.replicas[i]
                    .as_ref()
                    .is_some_and(|r| r.raw().is_leader())
            })
            .collect();
        assert!(
            leaders.is_empty(),
            "node {} leads with node {} damaged and node {} down: acknowledged writes may be gone",
            leaders[0] + 1,
            b + 1,
            a + 1
        );
    }
    sim.power_on(a);
    finish(sim, seed)
}

/// The consistency check after convergence: the leader proposes a checkpoint; every node
/// must hash its store at it and hear every other node's hash, all equal, each the hash of
/// the node's store as it is (nothing was written since). No alarm was raised all along
/// (`after_input` fails the run at the first).
fn check_final_checkpoint(sim: &mut WholeSim) {
    // A node that installs a snapshot covering the checkpoint entry skips hashing it (it
    // never applies that entry); the check then takes another checkpoint, a few times.
    for _ in 0..3 {
        if let Some(index) = final_checkpoint(sim) {
            check_checkpoint_hashes(sim, index);
            return;
        }
    }
    panic!(
        "three final checkpoints were each skipped by a snapshot; nodes: {}",
        sim.describe_nodes()
    );
}

/// Takes a checkpoint and waits until every node heard every hash of it: its index, or
/// `None` when a node skipped it because a snapshot covered it.
fn final_checkpoint(sim: &mut WholeSim) -> Option<u64> {
    let n = sim.config.nodes;
    let deadline = sim.now() + 10 * SEC;
    let index = loop {
        let leader = sim
            .replicas
            .iter_mut()
            .flatten()
            .find(|r| r.raw().is_leader());
        if let Some(Ok(index)) = leader.map(|r| r.propose_checkpoint()) {
            break index.0;
        }
        assert!(
            sim.now() < deadline,
            "no leader took the final checkpoint; nodes: {}",
            sim.describe_nodes()
        );
        let until = sim.now() + 10 * MS;
        sim.run_until(until);
    };
    let heard_all = |sim: &WholeSim| {
        sim.replicas
            .iter()
            .flatten()
            .all(|r| r.checkpoint_hashes(index).is_some_and(|h| h.len() == n))
    };
    while !heard_all(sim) {
        let skipped = sim.replicas.iter().flatten().any(|r| {
            r.raw().stored_snapshot().index.0 >= index
                && r.applied().0 >= index
                && r.checkpoint_hashes(index)
                    .is_none_or(|h| !h.contains_key(&r.raw().id().0))
        });
        if skipped && sim.now() + 5 * SEC >= deadline {
            return None;
        }
        assert!(
            sim.now() < deadline,
            "checkpoint {index}: not every node heard every hash within 10 s: {:?}; nodes: {}",
            sim.replicas
                .iter()
                .flatten()
                .map(|r| r.checkpoint_hashes(index))
                .collect::<Vec<_>>(),
            sim.describe_nodes()
        );
        let until = sim.now() + 10 * MS;
        sim.run_until(until);
    }
    Some(index)
}

/// Every node holds every node's hash of checkpoint `index`, all equal, each its store's.
fn check_checkpoint_hashes(sim: &WholeSim, index: u64) {
    for (i, r) in sim.replicas.iter().enumerate() {
        let r = r.as_ref().expect("up");
        let hashes = r.checkpoint_hashes(index).expect("heard all");
        let own = hashes[&(i as u64 + 1)];
        assert!(
            hashes.values().all(|&h| h == own),
            "checkpoint {index}: node {} holds differing hashes {hashes:?}",
            i + 1
        );
        assert_eq!(
            r.kv().hash(),
            own,
            "checkpoint {index}: node {}'s hash is not its store's",
            i + 1
        );
    }
}

/// Heals everything, requires every client to finish and every node to converge, reads
/// every key, and checks the histories.
/// The scrubbers get time for two more passes each; then no damage may be left on any
/// disk: no file a scrubber found damaged, no repair marker, no rotted bit still in place,
/// and every node's files, opened as after a clean shutdown, recover without finding
/// corruption.
fn check_scrubbed(sim: &mut WholeSim) {
    let n = sim.config.nodes;
    let passes = |sim: &WholeSim, i: usize| {
        let r = sim.replicas[i].as_ref().expect("every node is up");
        r.wal().scrub_totals().passes
    };
    let start: Vec<u64> = (0..n).map(|i| passes(sim, i)).collect();
    let deadline = sim.now() + SCRUB_LIMIT;
    while (0..n).any(|i| passes(sim, i) < start[i] + 2 || sim.damaged(i)) {
        let waiting: Vec<String> = (0..n)
            .map(|i| {
                let r = sim.replicas[i].as_ref().expect("up");
                format!(
                    "node {}: {} passes, damaged {:?}, rot unhealed {}",
                    i + 1,
                    passes(sim, i) - start[i],
                    r.wal().damaged_files(),
                    sim.rot_unhealed(i)
                )
            })
            .collect();
        assert!(
            sim.now() < deadline,
            "scrubber: damage left {} s after the cluster converged: {}",
            SCRUB_LIMIT / SEC,
            waiting.join("; ")
        );
        let until = sim.now() + 100 * MS;
        sim.run_until(until);
    }
    for i in 0..n {
        let options = WalOptions {
            segment_bytes: sim.config.segment_bytes,
            repair: false,
            backend: Arc::new(sim.disks[i].clean_copy()),
            helper_threads: false,
        };
        match wal::Wal::open(wal_dir(i), options) {
            // A torn tail is no damage: bytes written since the last sync.
            Ok((_, recovered)) => assert!(
                !recovered.repairing,
                "node {}: its files hold a repair marker",
                i + 1
            ),
            Err(e) => panic!("node {}: damage left on its disk: {e}", i + 1),
        }
    }
}

fn finish(mut sim: WholeSim, seed: u64) -> Outcome {
    // Heal: every operation must finish, then every client reads every key.
    sim.heal();
    let deadline = sim.now() + HEAL_LIMIT;
    let keys: Vec<Vec<u8>> = (0..sim.config.keys)
        .map(|k| format!("k{k}").into_bytes())
        .collect();
    for c in &mut sim.clients {
        c.final_reads = keys.clone();
    }
    // Clients idle at heal time start their final reads.
    for c in 0..sim.clients.len() {
        if sim.clients[c].pending.is_none() {
            sim.clients[c].attempt += 1;
            let attempt = sim.clients[c].attempt;
            sim.schedule(0, Event::ClientTimer { client: c, attempt });
        }
    }
    while !(sim.clients_done() && sim.converged()) {
        assert!(
            sim.now() < deadline,
            "liveness: {} s after healing, clients done {} converged {}; nodes: {}",
            HEAL_LIMIT / SEC,
            sim.clients_done(),
            sim.converged(),
            sim.describe_nodes()
        );
        let until = sim.now() + 100 * MS;
        sim.run_until(until);
    }
    match linearizability::check(&sim.history) {
        linearizability::Outcome::Linearizable => {}
        linearizability::Outcome::Violation(v) => {
            let dir = std::env::temp_dir().join(format!("whole-{seed}"));
            let report = linearizability::write_report(&dir, &sim.history, &v)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            panic!(
                "linearizability: key {:?} is not linearizable: {} (report {report})",
                String::from_utf8_lossy(&v.key),
                v.explanation
            );
        }
        linearizability::Outcome::GaveUp(g) => panic!(
            "linearizability: the checker gave up on key {:?} ({} operations): not a pass",
            String::from_utf8_lossy(&g.key),
            g.operations
        ),
    }
    for (i, r) in sim.replicas.iter().enumerate() {
        let r = r.as_ref().expect("every node is up after healing");
        assert!(
            !r.raw().status().repairing,
            "node {} is still repairing after the cluster converged",
            i + 1
        );
    }
    check_final_checkpoint(&mut sim);
    check_scrubbed(&mut sim);
    sim.hash_disks();
    let committed = sim
        .replicas
        .iter()
        .flatten()
        .map(|r| r.raw().commit_index().0)
        .max()
        .unwrap_or(0);
    Outcome {
        trace_hash: sim.trace_hash.finish(),
        virtual_time: sim.now(),
        events: sim.events,
        rpcs: sim.frames,
        reads: sim
            .history
            .iter()
            .filter(|o| matches!(o.ret, Ret::Value(_)))
            .count() as u64,
        committed,
    }
}
