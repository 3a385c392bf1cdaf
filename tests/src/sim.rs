//! The deterministic simulator: N cores on a simulated network with labrpc's semantics, a
//! persister with the lab's crash semantics, virtual time, and one seeded PRNG for
//! everything. The same seed gives the same run, event for event.
//!
//! Model of a host: each node has a durable image (hard state, snapshot, entries) that
//! survives crashes, and an in-memory `RawNode` that does not. Readies go through the same
//! driver as the daemon's (`raft::driver`), with this simulator as the host: `messages`
//! leave at once; the durable write takes a random disk time; when it completes, persisted
//! messages leave, committed entries are applied and the node is advanced. A crash before
//! the write completes loses the write, as a power cut would.

use crate::checker::{Applier, Value};
use raft::codec;
use raft::driver::{Driver, Host, Persisted, Write};
use raft::{Body, Config, Configuration, Entry, EntryKind, HardState, LogIndex, Message, NodeId};
use raft::{MemberChange, ProposeError, RawNode, ReadState, Restore, Snapshot, SnapshotMeta, Term};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::hash::{Hash, Hasher};
use std::rc::Rc;

/// Virtual time in microseconds.
pub type Micros = u64;
/// One millisecond of virtual time.
pub const MS: Micros = 1000;
/// One second of virtual time.
pub const SEC: Micros = 1_000_000;

/// How the simulated network misbehaves. The first three fields are labrpc's modes; the
/// rest are the swarm's extra faults.
#[derive(Clone, Debug, Default)]
pub struct NetFaults {
    /// labrpc unreliable: requests wait 0–26 ms, 10 % of requests and 10 % of replies lost.
    pub unreliable: bool,
    /// labrpc long reordering: 2/3 of replies held back 200–2199 ms.
    pub long_reordering: bool,
    /// Extra loss of any message, in percent.
    pub drop_percent: u32,
    /// Messages delivered twice, in percent.
    pub duplicate_percent: u32,
    /// Extra random latency of every message, uniform in `[0, latency_max)`.
    pub latency_max: Micros,
}

/// Everything fixed for one simulated cluster.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Number of nodes (ids 1..=n).
    pub nodes: usize,
    /// The first configuration's voters are ids `1..=voters`; the other nodes start as
    /// spare ids, empty and outside the cluster until a membership change adds them.
    pub voters: usize,
    /// The sim's seed.
    pub seed: u64,
    /// Virtual time per core tick.
    pub tick: Micros,
    /// Template for each node's config (id, voters and seed are filled in).
    pub raft: Config,
    /// The lab's snapshot applier (part D) instead of the plain one.
    pub snapshot_applier: bool,
    /// The snapshot applier snapshots after index k when `(k + 1) % snapshot_every == 0`.
    pub snapshot_every: u64,
    /// A durable write takes a uniform time in `[0, disk_latency_max]`.
    pub disk_latency_max: Micros,
    /// When a granted vote reaches its candidate, the voter crashes and restarts at once
    /// this often (percent): its vote is durable by then, so it must not vote again in the
    /// same term (Figure 2: votedFor is persistent state).
    pub restart_voter_after_grant_percent: u32,
}

impl SimConfig {
    /// The lab's setting: heartbeats every 100 ms (the lab's limit is 10/s), elections after
    /// 500–1000 ms of silence, no leader no-op (the lab counts indices exactly).
    pub fn lab(nodes: usize, seed: u64) -> SimConfig {
        let mut raft = Config::new(NodeId(1), vec![NodeId(1)]);
        raft.election_timeout_ticks = 50;
        raft.heartbeat_interval_ticks = 10;
        raft.noop_on_election = false;
        raft.snapshot_chunk_bytes = 1024;
        SimConfig {
            nodes,
            voters: nodes,
            seed,
            tick: 10 * MS,
            raft,
            snapshot_applier: false,
            snapshot_every: 10,
            disk_latency_max: 2 * MS,
            restart_voter_after_grant_percent: 0,
        }
    }
}

/// A node's durable image: what a restart starts from.
#[derive(Clone, Debug, Default)]
pub struct Durable {
    /// Persisted hard state.
    pub hard_state: HardState,
    /// Persisted snapshot (empty when none).
    pub snapshot: Snapshot,
    /// Persisted entries after the snapshot.
    pub entries: Vec<Entry>,
}

impl Durable {
    /// The size of the raft state as our encoding would store it (snapshot not counted),
    /// which is what the lab's `RaftStateSize()` measures.
    pub fn raft_state_bytes(&self) -> usize {
        24 + 16
            + self
                .entries
                .iter()
                .map(|e| codec::ENTRY_HEADER_BYTES + e.data.len())
                .sum::<usize>()
    }

    /// The term of the durable entry at `index`, or `None`.
    pub fn term(&self, index: LogIndex) -> Option<Term> {
        if index == self.snapshot.meta.index {
            return Some(self.snapshot.meta.term);
        }
        let first = self.snapshot.meta.index.0 + 1;
        if index.0 < first {
            return None;
        }
        self.entries.get((index.0 - first) as usize).map(|e| e.term)
    }

    fn write(&mut self, snapshot: Option<Snapshot>, hs: Option<HardState>, entries: Vec<Entry>) {
        if let Some(s) = snapshot {
            self.install_snapshot(s);
        }
        if let Some(hs) = hs {
            self.hard_state = hs;
        }
        if let Some(first) = entries.first() {
            let base = self.snapshot.meta.index.0 + 1;
            assert!(
                first.index.0 >= base,
                "persisting an entry below the snapshot"
            );
            let keep = (first.index.0 - base) as usize;
            assert!(keep <= self.entries.len(), "persisting with a gap");
            self.entries.truncate(keep);
            self.entries.extend(entries);
        }
    }

    /// Stores a snapshot; keeps the entries after it when the log holds its last entry.
    fn install_snapshot(&mut self, s: Snapshot) {
        if s.meta.index <= self.snapshot.meta.index {
            return;
        }
        if self.term(s.meta.index) == Some(s.meta.term) {
            let drop = (s.meta.index.0 - self.snapshot.meta.index.0) as usize;
            self.entries.drain(..drop);
        } else {
            self.entries.clear();
        }
        self.snapshot = s;
    }
}

struct Node {
    raw: RawNode,
    incarnation: u64,
    /// Drives the node's Readies (the one Ready loop, shared with the daemon).
    driver: Driver,
    /// What a Ready's durable write under way will store when it completes.
    writing: Option<Write>,
}

#[derive(Debug)]
enum Event {
    Tick {
        node: usize,
        incarnation: u64,
    },
    Deliver {
        message: Message,
        from_incarnation: u64,
        to_incarnation: u64,
    },
    WriteDone {
        node: usize,
        incarnation: u64,
    },
    Task(usize),
}

/// A background activity in virtual time (a concurrent tester helper or client).
pub trait Task {
    /// Runs until the task would sleep; returns how long, or `None` when it has finished.
    fn step(&mut self, sim: &mut Sim) -> Option<Micros>;
}

/// An event in a simulator's queue, ordered by time and then by when it was scheduled (so
/// runs are deterministic). Shared with the whole-server simulator.
pub(crate) struct Queued<E> {
    pub(crate) at: Micros,
    pub(crate) seq: u64,
    pub(crate) event: E,
}

impl<E> PartialEq for Queued<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Queued<E> {}
impl<E> PartialOrd for Queued<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Queued<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Message counters with labrpc's meaning (spec §1.5).
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Every request submitted to the network.
    pub total_requests: u64,
    /// Requests dispatched to each server, reset when it restarts.
    pub dispatched: Vec<u64>,
    /// Request bytes at submission plus reply bytes at delivery.
    pub bytes: u64,
}

/// A ReadIndex read as it was asked.
#[derive(Clone, Copy, Debug)]
struct AskedRead {
    /// The node asked.
    node: usize,
    /// Everything committed anywhere when the read was asked: the read must see it.
    commit_floor: LogIndex,
}

/// What became of the ReadIndex reads the simulator asked for.
#[derive(Clone, Debug, Default)]
pub struct ReadCounts {
    /// Reads asked (`read_index` accepted them).
    pub asked: u64,
    /// Read states handed out (a duplicated message may confirm one read twice).
    pub confirmed: u64,
    /// Confirmed reads served, once their index was applied.
    pub served: u64,
    /// Reads the core gave up on (leadership lost).
    pub dropped: u64,
}

/// The simulated cluster.
pub struct Sim {
    /// The configuration it was built with.
    pub config: SimConfig,
    /// The one PRNG for everything random in the run.
    pub rng: SmallRng,
    now: Micros,
    seq: u64,
    queue: BinaryHeap<Reverse<Queued<Event>>>,
    nodes: Vec<Option<Node>>,
    incarnations: Vec<u64>,
    /// Each node's durable image; survives crashes.
    pub durable: Vec<Durable>,
    /// The lab's connect/disconnect flag per node.
    pub connected: Vec<bool>,
    /// Directed link blocks for asymmetric partitions: `blocked[from][to]`.
    pub blocked: Vec<Vec<bool>>,
    /// Network faults in force.
    pub faults: NetFaults,
    /// labrpc's counters.
    pub counters: Counters,
    /// The tester's appliers and the safety checkers.
    pub applier: Applier,
    /// Leader seen per term: at most one (election safety).
    leaders: BTreeMap<Term, NodeId>,
    /// What every leader committed, and with which configuration (see `Commits`).
    commits: Commits,
    /// The highest commit index any node has reached so far.
    commit_high: LogIndex,
    /// Per node: where its log started and ended at the last per-step log check.
    log_ends: Vec<Option<LogEnds>>,
    /// Per node: the last index its state machine applied (snapshot or entry).
    applied: Vec<LogIndex>,
    /// Every ReadIndex read asked, by context.
    reads: BTreeMap<u64, AskedRead>,
    /// Per node: confirmed reads waiting for their index to be applied.
    reads_confirmed: Vec<Vec<ReadState>>,
    /// Contexts of the reads served.
    reads_served: BTreeSet<u64>,
    /// What became of the reads.
    pub read_counts: ReadCounts,
    trace_hash: DefaultHasher,
    /// Print every event (for replays).
    pub trace: bool,
    /// Set when the test is over: background tasks stop.
    pub finished: bool,
    /// Number of events processed.
    pub events: u64,
    tasks: Vec<Option<Box<dyn Task>>>,
}

impl Sim {
    /// Builds the cluster and starts every node, all connected.
    pub fn new(config: SimConfig) -> Sim {
        let n = config.nodes;
        let mut sim = Sim {
            rng: SmallRng::seed_from_u64(config.seed),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes: (0..n).map(|_| None).collect(),
            incarnations: vec![0; n],
            durable: vec![Durable::default(); n],
            connected: vec![false; n],
            blocked: vec![vec![false; n]; n],
            faults: NetFaults::default(),
            counters: Counters {
                dispatched: vec![0; n],
                ..Counters::default()
            },
            applier: Applier::new(n, config.snapshot_applier),
            leaders: BTreeMap::new(),
            commits: Commits {
                by_index: BTreeMap::new(),
                observed: vec![LogIndex(0); n],
                entering: Vec::with_capacity(n),
            },
            commit_high: LogIndex(0),
            log_ends: vec![None; n],
            applied: vec![LogIndex(0); n],
            reads: BTreeMap::new(),
            reads_confirmed: vec![Vec::new(); n],
            reads_served: BTreeSet::new(),
            read_counts: ReadCounts::default(),
            trace_hash: DefaultHasher::new(),
            trace: std::env::var_os("SIM_TRACE").is_some(),
            finished: false,
            events: 0,
            tasks: Vec::new(),
            config,
        };
        sim.applier.snapshot_every = sim.config.snapshot_every;
        let first = Rc::new((
            LogIndex(0),
            Configuration::new((1..=sim.config.voters as u64).map(NodeId)),
        ));
        sim.commits.entering = (0..n).map(|_| first.clone()).collect();
        for i in 0..n {
            sim.start(i);
        }
        for i in 0..n {
            sim.connect(i);
        }
        sim
    }

    /// Virtual time now.
    pub fn now(&self) -> Micros {
        self.now
    }

    /// Number of nodes.
    pub fn n(&self) -> usize {
        self.config.nodes
    }

    /// A hash of everything that happened: equal for two runs of one seed.
    pub fn trace_hash(&self) -> u64 {
        self.trace_hash.clone().finish()
    }

    /// The configuration node `i` uses, when it is up.
    pub fn configuration(&self, i: usize) -> Option<&Configuration> {
        self.raw(i).map(RawNode::configuration)
    }

    /// The core of node `i`, when it is up.
    pub fn raw(&self, i: usize) -> Option<&RawNode> {
        self.nodes[i].as_ref().map(|n| &n.raw)
    }

    /// True when node `i` is up.
    pub fn alive(&self, i: usize) -> bool {
        self.nodes[i].is_some()
    }

    fn schedule(&mut self, delay: Micros, event: Event) {
        self.seq += 1;
        self.queue.push(Reverse(Queued {
            at: self.now + delay,
            seq: self.seq,
            event,
        }));
    }

    // ----- the tester's controls (spec §3) -----

    /// Crash node `i`: its memory is gone, its in-flight disk write lost; the durable image
    /// stays as it was. Messages to and from the dead incarnation are lost.
    pub fn crash(&mut self, i: usize) {
        if self.nodes[i].take().is_some() {
            // A crash is when a missing durable copy would bite: check right here that
            // everything committed survives on a majority of disks.
            self.check_committed_durable(512);
            self.incarnations[i] += 1;
            self.reads_confirmed[i].clear();
            self.note(format_args!("crash {}", i + 1));
        }
    }

    /// (Re)start node `i` from its durable image (crashing it first if it is up). It is
    /// left as connected or disconnected as it was.
    pub fn start(&mut self, i: usize) {
        self.crash(i);
        self.incarnations[i] += 1;
        let incarnation = self.incarnations[i];
        let d = self.durable[i].clone();
        let mut config = self.config.raft.clone();
        config.id = NodeId(i as u64 + 1);
        config.voters = (1..=self.config.voters as u64).map(NodeId).collect();
        config.seed = self.config.seed ^ (incarnation << 20) ^ (i as u64 + 1);
        self.applier.restart(i, &d.snapshot);
        self.applied[i] = d.snapshot.meta.index;
        self.log_ends[i] = None;

        self.counters.dispatched[i] = 0;
        let raw = RawNode::new(
            config,
            Restore {
                hard_state: d.hard_state,
                snapshot: d.snapshot.meta,
                entries: d.entries,
                log_start: None,
                repairing: false,
                configuration: (!d.snapshot.is_empty()).then(|| d.snapshot.configuration.clone()),
            },
        )
        .expect("valid config");
        self.commits.entering[i] =
            Rc::new((raw.configuration_index(), raw.configuration().clone()));
        self.nodes[i] = Some(Node {
            raw,
            incarnation,
            driver: Driver::new(),
            writing: None,
        });
        let phase = self.rng.gen_range(0..self.config.tick);
        self.schedule(
            phase,
            Event::Tick {
                node: i,
                incarnation,
            },
        );
        self.note(format_args!("start {} incarnation {incarnation}", i + 1));
    }

    /// The lab's `connect(i)`.
    pub fn connect(&mut self, i: usize) {
        self.connected[i] = true;
    }

    /// The lab's `disconnect(i)`.
    pub fn disconnect(&mut self, i: usize) {
        self.connected[i] = false;
    }

    fn link_up(&self, from: usize, to: usize) -> bool {
        self.connected[from] && self.connected[to] && !self.blocked[from][to]
    }

    /// The lab's `Start(cmd)` on node `i`: (index, term, is_leader).
    pub fn propose(&mut self, i: usize, data: Vec<u8>) -> (u64, Term, bool) {
        let Some(node) = self.nodes[i].as_mut() else {
            return (0, Term(0), false);
        };
        let term = node.raw.term();
        match node.raw.propose(data) {
            Ok(index) => {
                self.pump(i);
                (index.0, term, true)
            }
            Err(_) => (0, term, false),
        }
    }

    /// Proposes a membership change on node `i` (see [`RawNode::propose_conf_change`]).
    pub fn propose_conf_change(
        &mut self,
        i: usize,
        changes: &[MemberChange],
    ) -> Result<LogIndex, ProposeError> {
        let Some(node) = self.nodes[i].as_mut() else {
            return Err(ProposeError::NotLeader {
                leader: NodeId::NONE,
            });
        };
        let result = node.raw.propose_conf_change(changes);
        let changes: Vec<String> = changes.iter().map(ToString::to_string).collect();
        self.note(format_args!(
            "conf change on {}: {} -> {result:?}",
            i + 1,
            changes.join(", ")
        ));
        self.pump(i);
        result
    }

    /// Asks leader `i` to hand leadership to node index `target`; false if refused.
    pub fn transfer_leader(&mut self, i: usize, target: usize) -> bool {
        let Some(node) = self.nodes[i].as_mut() else {
            return false;
        };
        let ok = node.raw.transfer_leader(NodeId(target as u64 + 1)).is_ok();
        self.pump(i);
        ok
    }

    /// Asks node `i` for a linearizable read (ReadIndex, thesis §6.4) and returns its
    /// context, or `None` when the node is down or knows no leader. The read is checked when
    /// confirmed and served once its index is applied.
    pub fn read(&mut self, i: usize) -> Option<u64> {
        let live_commit = self.nodes.iter().flatten().map(|n| n.raw.commit_index());
        let commit_floor = live_commit.fold(self.commit_high, LogIndex::max);
        let context = self.reads.len() as u64 + 1;
        let node = self.nodes[i].as_mut()?;
        node.raw.read_index(context).ok()?;
        self.reads.insert(
            context,
            AskedRead {
                node: i,
                commit_floor,
            },
        );
        self.read_counts.asked += 1;
        self.note(format_args!(
            "read {context} on {} floor {commit_floor}",
            i + 1
        ));
        self.pump(i);
        Some(context)
    }

    /// True once the read with this context has been served.
    pub fn read_served(&self, context: u64) -> bool {
        self.reads_served.contains(&context)
    }

    /// The lab's `GetState()`: (term, is_leader), for a live node.
    pub fn state(&self, i: usize) -> Option<(Term, bool)> {
        self.raw(i).map(|r| (r.term(), r.is_leader()))
    }

    /// The largest raft state (snapshot excluded) over all nodes: the lab's `LogSize()`.
    pub fn log_size(&self) -> usize {
        self.durable
            .iter()
            .map(Durable::raft_state_bytes)
            .max()
            .unwrap_or(0)
    }

    // ----- running -----

    /// Starts a background task at the current time.
    pub fn spawn(&mut self, task: Box<dyn Task>) {
        self.tasks.push(Some(task));
        let id = self.tasks.len() - 1;
        self.schedule(0, Event::Task(id));
    }

    /// Runs the simulation for `duration` of virtual time.
    pub fn sleep(&mut self, duration: Micros) {
        let until = self.now + duration;
        self.run_until(until);
    }

    /// Processes every event due at or before `until`, then sets the clock to `until`.
    pub fn run_until(&mut self, until: Micros) {
        while let Some(Reverse(q)) = self.queue.peek() {
            if q.at > until {
                break;
            }
            let Reverse(q) = self.queue.pop().expect("peeked");
            self.now = q.at;
            self.events += 1;
            self.handle(q.event);
        }
        self.now = until;
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Tick { node, incarnation } => {
                if self.incarnations[node] != incarnation || self.nodes[node].is_none() {
                    return;
                }
                let n = self.nodes[node].as_mut().expect("alive");
                n.raw.tick();
                self.after_input(node);
                let tick = self.config.tick;
                self.schedule(tick, Event::Tick { node, incarnation });
            }
            Event::Deliver {
                message,
                from_incarnation,
                to_incarnation,
            } => self.deliver(message, from_incarnation, to_incarnation),
            Event::Task(id) => {
                let mut task = self.tasks[id].take().expect("task present");
                if let Some(delay) = task.step(self) {
                    self.tasks[id] = Some(task);
                    self.schedule(delay, Event::Task(id));
                }
            }
            Event::WriteDone { node, incarnation } => {
                if self.incarnations[node] != incarnation || self.nodes[node].is_none() {
                    return; // The write died with the crash.
                }
                self.write_done(node);
            }
        }
    }

    fn deliver(&mut self, message: Message, from_incarnation: u64, to_incarnation: u64) {
        let from = message.from.0 as usize - 1;
        let to = message.to.0 as usize - 1;
        // labrpc: a message to or from a dead, replaced or disconnected server is lost.
        if self.incarnations[from] != from_incarnation
            || self.incarnations[to] != to_incarnation
            || self.nodes[to].is_none()
            || !self.link_up(from, to)
        {
            return;
        }
        if message.body.is_response() {
            self.counters.bytes += codec::encoded_len(&message) as u64;
        } else {
            self.counters.dispatched[to] += 1;
        }
        self.hash_message(&message);
        if self.trace {
            println!("{:>10} deliver {message}", self.now);
        }
        let vote_granted = matches!(message.body, Body::VoteResponse { granted: true });
        let node = self.nodes[to].as_mut().expect("alive");
        node.raw
            .step(message)
            .expect("the simulator addresses messages correctly");
        self.after_input(to);
        let percent = self.config.restart_voter_after_grant_percent;
        if vote_granted && percent > 0 && self.rng.gen_range(0..100) < percent {
            self.note(format_args!(
                "restart {} after its vote reached {}",
                from + 1,
                to + 1
            ));
            self.start(from);
        }
    }

    fn after_input(&mut self, i: usize) {
        self.check_leader(i);
        self.check_log_step(i);
        self.pump(i);
    }

    /// Election safety: at most one leader per term. Also checks that a new leader holds
    /// every entry known committed (leader completeness, §5.4).
    ///
    /// Also records, for every index, the term of the leader that first committed it:
    /// completeness binds only leaders of later terms (a vote granted before the commit and
    /// delivered late can still elect a leader of an earlier term, which then lacks the
    /// entry but can never commit anything).
    fn check_leader(&mut self, i: usize) {
        let raw = &self.nodes[i].as_ref().expect("alive").raw;
        self.commit_high = self.commit_high.max(raw.commit_index());
        self.commits.record(i, &self.durable, raw);
        self.commits.input_done(i, raw);
        if !raw.is_leader() {
            return;
        }
        let id = raw.id();
        match self.leaders.get(&raw.term()) {
            Some(&other) if other != id => panic!(
                "election safety: term {} has two leaders, {other} and {id}",
                raw.term()
            ),
            Some(_) => {}
            None => {
                self.leaders.insert(raw.term(), id);
                self.check_leader_completeness(i);
            }
        }
    }

    /// Leader completeness (§5.4): a leader holds every entry committed in an earlier term
    /// (the newest 512 above its snapshot are checked).
    fn check_leader_completeness(&self, i: usize) {
        let leader = &self.nodes[i].as_ref().expect("alive").raw;
        let floor = leader.snapshot_meta().index.0;
        for (&index, commit) in self.commits.by_index.range(floor + 1..).rev().take(512) {
            let (entry_term, commit_term) = (commit.entry_term, commit.leader_term);
            if commit_term >= leader.term() {
                continue;
            }
            let term = leader.term_at(LogIndex(index));
            assert!(
                term == Some(entry_term),
                "leader completeness: leader {} at term {} lacks entry {index} (term {entry_term}) committed in term {commit_term}, has {term:?}",
                leader.id(),
                leader.term(),
            );
        }
    }

    /// Hands every Ready the node has to the simulated host, through the driver.
    fn pump(&mut self, i: usize) {
        self.with_host(i, |driver, raw, host| driver.run(raw, host));
    }

    /// A durable write under way completed: store it, then let the driver finish its Ready
    /// and go on.
    fn write_done(&mut self, i: usize) {
        let write = self.nodes[i]
            .as_mut()
            .and_then(|n| n.writing.take())
            .expect("a write was under way");
        self.store(i, write);
        self.with_host(i, |driver, raw, host| driver.write_done(raw, host));
    }

    /// Runs `f` with node `i`'s driver and core and the simulator as its host, then checks.
    fn with_host(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Driver, &mut RawNode, &mut SimHost<'_>) -> Result<(), Never>,
    ) {
        let Some(mut node) = self.nodes[i].take() else {
            return;
        };
        let incarnation = node.incarnation;
        let mut host = SimHost {
            sim: self,
            i,
            incarnation,
            writing: None,
        };
        match f(&mut node.driver, &mut node.raw, &mut host) {
            Ok(()) => {}
            Err(never) => match never {},
        }
        node.writing = host.writing.take().or(node.writing);
        self.nodes[i] = Some(node);
        self.check_leader(i);
        self.check_log_step(i);
    }

    /// Makes a write durable in node `i`'s image and restores a received snapshot into its
    /// applier.
    fn store(&mut self, i: usize, write: Write) {
        // A write that needs no sync (its hard state changed only the commit index) is not
        // made durable here: the host writes it without syncing, so a crash may lose it.
        // Storing nothing is the pessimistic case; the next synced hard state carries it.
        let hard_state = write.hard_state.filter(|_| write.sync);
        self.durable[i].write(write.snapshot.clone(), hard_state, write.entries);
        if let Some(s) = write.snapshot {
            self.applier.apply_snapshot(i, &s);
            self.applied[i] = self.applied[i].max(s.meta.index);
        }
    }

    /// Linearizable reads: a confirmed read's index covers everything committed anywhere
    /// before the read was asked (real-time order), and it was asked of this node.
    fn confirm_read(&mut self, i: usize, read: ReadState) {
        let asked = self.reads.get(&read.context).copied();
        let Some(asked) = asked.filter(|a| a.node == i) else {
            panic!(
                "read {} confirmed on node {}, which did not ask for it",
                read.context,
                i + 1
            );
        };
        assert!(
            read.index >= asked.commit_floor,
            "stale read: read {} on node {} confirmed at index {}, but {} was committed before it was asked",
            read.context,
            i + 1,
            read.index,
            asked.commit_floor
        );
        self.read_counts.confirmed += 1;
        self.reads_confirmed[i].push(read);
    }

    /// Serves the confirmed reads whose index node `i` has applied.
    fn serve_reads(&mut self, i: usize) {
        let applied = self.applied[i];
        let (served, waiting): (Vec<ReadState>, Vec<ReadState>) =
            std::mem::take(&mut self.reads_confirmed[i])
                .into_iter()
                .partition(|r| r.index <= applied);
        self.reads_confirmed[i] = waiting;
        for read in served {
            self.read_counts.served += u64::from(self.reads_served.insert(read.context));
        }
    }

    /// The service snapshots through `index`: the core compacts, the persister stores the
    /// snapshot with the trimmed state at once (the lab's `Save(state, snapshot)`).
    pub fn compact(&mut self, i: usize, index: LogIndex, data: Vec<u8>) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        compact_node(&mut self.durable[i], &mut node.raw, index, data);
    }

    /// Puts a message on the simulated network with labrpc's semantics (spec §1.3).
    fn send(&mut self, m: Message) {
        let from = m.from.0 as usize - 1;
        let to = m.to.0 as usize - 1;
        let response = m.body.is_response();
        if !response {
            self.counters.total_requests += 1;
            self.counters.bytes += codec::encoded_len(&m) as u64;
        }
        if !self.link_up(from, to) {
            return;
        }
        let f = self.faults.clone();
        let mut delay = 0;
        if f.unreliable {
            if !response {
                delay += self.rng.gen_range(0..27) * MS;
            }
            if self.rng.gen_range(0..1000) < 100 {
                return; // Request or reply lost.
            }
        }
        if response && f.long_reordering && self.rng.gen_range(0..900) < 600 {
            let spread = 1 + self.rng.gen_range(0..2000);
            delay += (200 + self.rng.gen_range(0..spread)) * MS;
        }
        if f.drop_percent > 0 && self.rng.gen_range(0..100) < f.drop_percent {
            return;
        }
        if f.latency_max > 0 {
            delay += self.rng.gen_range(0..f.latency_max);
        }
        let copies = if f.duplicate_percent > 0 && self.rng.gen_range(0..100) < f.duplicate_percent
        {
            2
        } else {
            1
        };
        for copy in 0..copies {
            let extra = if copy == 0 {
                0
            } else {
                self.rng.gen_range(0..50 * MS)
            };
            let event = Event::Deliver {
                message: m.clone(),
                from_incarnation: self.incarnations[from],
                to_incarnation: self.incarnations[to],
            };
            self.schedule(delay + extra, event);
        }
    }

    fn hash_message(&mut self, m: &Message) {
        self.now.hash(&mut self.trace_hash);
        m.from.hash(&mut self.trace_hash);
        m.to.hash(&mut self.trace_hash);
        m.term.hash(&mut self.trace_hash);
        m.body.name().hash(&mut self.trace_hash);
        if let Body::Append { entries, .. } = &m.body {
            entries.len().hash(&mut self.trace_hash);
        }
    }

    /// Records a line in the trace (and the trace hash).
    pub fn note(&mut self, what: std::fmt::Arguments<'_>) {
        let line = what.to_string();
        line.hash(&mut self.trace_hash);
        if self.trace {
            println!("{:>10} {line}", self.now);
        }
    }

    // ----- checkers run at checkpoints -----

    /// Log matching (§5.3) between every pair of live nodes: where two logs hold an entry
    /// with the same index and term, they are identical up to it. Checks the newest
    /// `window` common indices, the snapshots' last entries included (by their term).
    pub fn check_log_matching(&self, window: u64) {
        let live: Vec<&RawNode> = self.nodes.iter().flatten().map(|n| &n.raw).collect();
        for (a_pos, a) in live.iter().enumerate() {
            for b in &live[a_pos + 1..] {
                let (floor, top) = common_range(a, b);
                check_pair(a, b, floor.max(LogIndex(top.0.saturating_sub(window))), top);
            }
        }
    }

    /// The log checks after every input to node `i` that changed its log, on the regions an
    /// input changes: the newest entries (appends, truncations) and, when the snapshot moved
    /// (compaction, an installed snapshot), the snapshot boundary. Terms never decrease along
    /// the log, and against every other live node log matching holds in those regions.
    /// `LOG_STEP_WINDOW` entries each, and only when the log's ends moved, so it stays cheap.
    fn check_log_step(&mut self, i: usize) {
        let a = &self.nodes[i].as_ref().expect("alive").raw;
        let ends = LogEnds::of(a);
        let before = self.log_ends[i].replace(ends);
        if before == Some(ends) {
            return;
        }
        check_configuration_in_log(a, &self.durable[i], self.config.voters);
        let snapshot_moved = before.is_none_or(|b| b.snapshot != ends.snapshot);
        let (snapshot, last) = (a.snapshot_meta().index, a.last_index());
        let tail = snapshot.max(LogIndex(last.0.saturating_sub(LOG_STEP_WINDOW)));
        check_terms_rise(a, tail, last);
        if snapshot_moved {
            check_terms_rise(
                a,
                snapshot,
                last.min(LogIndex(snapshot.0 + LOG_STEP_WINDOW)),
            );
        }
        for (j, b) in self.nodes.iter().enumerate() {
            let Some(b) = b.as_ref().filter(|_| j != i).map(|n| &n.raw) else {
                continue;
            };
            let (floor, top) = common_range(a, b);
            check_pair(
                a,
                b,
                floor.max(LogIndex(top.0.saturating_sub(LOG_STEP_WINDOW))),
                top,
            );
            if snapshot_moved {
                check_pair(a, b, floor, top.min(LogIndex(floor.0 + LOG_STEP_WINDOW)));
            }
        }
    }

    /// Durability: every entry known committed is held, with its term, by a majority of
    /// the durable images (or covered by their snapshots). Checks the newest `window`.
    pub fn check_committed_durable(&self, window: usize) {
        for (&index, value) in self.applier.committed.iter().rev().take(window) {
            if value.term != Term(0) {
                self.check_durable(LogIndex(index), value.term);
            }
        }
        // What live nodes consider committed, applied anywhere or not yet.
        for raw in self.nodes.iter().flatten().map(|n| &n.raw) {
            let commit = raw.commit_index();
            let lo = raw
                .snapshot_meta()
                .index
                .max(LogIndex(commit.0.saturating_sub(64)));
            let mut index = commit;
            while index > lo {
                let term = raw.term_at(index).expect("committed entry in the log");
                self.check_durable(index, term);
                index = index.prev();
            }
        }
    }

    /// A committed entry stays on a majority of every voter set of the configuration it
    /// was committed with: no later change, crash or snapshot takes it off a disk that held
    /// it (entries known committed only through a snapshot have no record and are skipped).
    fn check_durable(&self, index: LogIndex, term: Term) {
        let Some(commit) = self.commits.by_index.get(&index.0) else {
            return;
        };
        if let Err(why) = held_by_quorum(&self.durable, &commit.configuration, index, term) {
            panic!("durability: committed entry {index} (term {term}): {why}");
        }
    }

    /// All checkpoint checkers.
    pub fn check_all(&self) {
        self.check_log_matching(512);
        self.check_committed_durable(512);
    }

    /// Value committed at `index` according to the appliers, with the count of servers
    /// that applied it (the lab's `nCommitted`).
    pub fn n_committed(&self, index: u64) -> (usize, Option<Rc<Value>>) {
        self.applier.n_committed(index)
    }
}

/// Entries around each changed region that the per-step log check compares.
const LOG_STEP_WINDOW: u64 = 8;

/// Where a log starts and ends: an input that leaves these alone has not changed the log
/// (a follower that replaces a suffix ends on an entry of another term).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LogEnds {
    snapshot: raft::SnapshotMeta,
    last: (LogIndex, Option<Term>),
}

impl LogEnds {
    fn of(raw: &RawNode) -> LogEnds {
        LogEnds {
            snapshot: raw.snapshot_meta(),
            last: (raw.last_index(), raw.term_at(raw.last_index())),
        }
    }
}

/// The indices both logs hold a term for: from the later snapshot's last entry to the
/// shorter log's end (empty when `floor > top`).
fn common_range(a: &RawNode, b: &RawNode) -> (LogIndex, LogIndex) {
    let floor = a.snapshot_meta().index.max(b.snapshot_meta().index);
    (floor, a.last_index().min(b.last_index()))
}

/// Log matching (§5.3) between two logs over `[lo, hi]`, indices both hold a term for
/// (an entry, or a snapshot's last entry): below the highest index where their terms
/// agree, the logs are identical.
fn check_pair(a: &RawNode, b: &RawNode, lo: LogIndex, hi: LogIndex) {
    let mut matched = false;
    let mut index = hi;
    while index >= lo {
        let (entry_a, entry_b) = (a.entry(index), b.entry(index));
        let term_a = entry_a.map_or_else(|| a.term_at(index), |e| Some(e.term));
        let term_b = entry_b.map_or_else(|| b.term_at(index), |e| Some(e.term));
        matched |= term_a.is_some() && term_a == term_b;
        let same = match (entry_a, entry_b) {
            (Some(x), Some(y)) => x == y,
            _ => term_a == term_b,
        };
        assert!(
            !matched || same,
            "log matching: nodes {} and {} differ at index {index} (terms {term_a:?} and {term_b:?}) below a common entry",
            a.id(),
            b.id()
        );
        if index.0 == 0 {
            break;
        }
        index = index.prev();
    }
}

/// Terms never decrease along a log (§5.3: a leader appends entries of its own term after
/// a prefix it shares with every earlier leader), the snapshot's last entry included.
fn check_terms_rise(a: &RawNode, lo: LogIndex, hi: LogIndex) {
    let mut index = lo;
    while index < hi {
        let (here, next) = (a.term_at(index), a.term_at(index.next()));
        assert!(
            here <= next,
            "log of node {}: term falls from {here:?} at {index} to {next:?} after it (snapshot {}/{})",
            a.id(),
            a.snapshot_meta().term,
            a.snapshot_meta().index,
        );
        index = index.next();
    }
}

/// The service's snapshot through `index` on one node: durable first, then the core (the
/// core may ask for the bytes back at once).
fn compact_node(durable: &mut Durable, raw: &mut RawNode, index: LogIndex, data: Vec<u8>) {
    // A snapshot from the leader may have overtaken the entries being applied; then the
    // core has compacted past `index` already and there is nothing to do.
    let Some(term) = raw.term_at(index) else {
        return;
    };
    if index <= raw.snapshot_meta().index {
        return;
    }
    let configuration = raw
        .configuration_at(index)
        .expect("a snapshot at or after the log's start");
    durable.install_snapshot(Snapshot {
        meta: raft::SnapshotMeta { index, term },
        configuration,
        data,
    });
    assert!(raw.compact(index), "compact refused a newer snapshot");
}

/// What the leader that first committed an index used: the entry's term, its own term, and
/// the configuration whose quorums held the entry.
struct Commit {
    entry_term: Term,
    leader_term: Term,
    configuration: Rc<Configuration>,
}

/// The commitment checker's record: for every index, what the leader that first
/// committed it used; per node, the commit index already looked at and the configuration
/// it used at the end of its previous input.
struct Commits {
    by_index: BTreeMap<u64, Commit>,
    observed: Vec<LogIndex>,
    entering: Vec<Rc<(LogIndex, Configuration)>>,
}

impl Commits {
    /// Records, for every index leader `i` newly committed, the entry's term, the leader's
    /// and the configuration it committed with (see `Sim::check_leader`), after checking
    /// that commitment respected that configuration: at the moment of commit a majority of
    /// every voter set (both halves while joint; learners never count) holds the entry on
    /// disk.
    ///
    /// The configuration a leader commits with is the latest in its log. It is the one it
    /// used at the end of its previous input, except for what the leader appends and
    /// commits within one input: only C_new, appended once the joint entry commits, after
    /// which entries past the joint one may commit with C_new alone (thesis §4.3). The
    /// joint entry itself and everything before it need the joint quorums. Called before
    /// entries are applied too, since applying may compact them away.
    fn record(&mut self, i: usize, durable: &[Durable], raw: &RawNode) {
        let commit = raw.commit_index();
        let observed = &mut self.observed[i];
        if !raw.is_leader() {
            *observed = (*observed).max(commit);
            return;
        }
        let (entering_index, entering_conf) = (self.entering[i].0, &self.entering[i].1);
        let mut k = *observed;
        while k < commit {
            k = k.next();
            let entry_term = raw.term_at(k).expect("committed entry above the snapshot");
            let mut used = entering_conf.clone();
            let mut outcome = held_by_quorum(durable, &used, k, entry_term);
            let left_in_this_input = raw.configuration_index() > entering_index
                && entering_conf.is_joint()
                && *raw.configuration() == entering_conf.leave_joint();
            if outcome.is_err() && left_in_this_input && k > entering_index {
                used = entering_conf.leave_joint();
                outcome = held_by_quorum(durable, &used, k, entry_term);
            }
            if let Err(why) = outcome {
                panic!(
                    "commitment: leader {} at term {} committed index {k} (term {entry_term}) without the quorums of its configuration {used} (from index {entering_index}): {why}",
                    raw.id(),
                    raw.term()
                );
            }
            self.by_index.entry(k.0).or_insert_with(|| Commit {
                entry_term,
                leader_term: raw.term(),
                configuration: Rc::new(used),
            });
        }
        *observed = commit;
    }

    /// Node `i`'s input is over: remember the configuration it uses for its next commits.
    fn input_done(&mut self, i: usize, raw: &RawNode) {
        let entering = &self.entering[i];
        if entering.0 != raw.configuration_index() || entering.1 != *raw.configuration() {
            self.entering[i] = Rc::new((raw.configuration_index(), raw.configuration().clone()));
        }
    }
}

/// Ok when a majority of every voter set of `conf` holds the entry at `index` with `term`
/// on disk (or covers it with a snapshot); otherwise which set falls short.
fn held_by_quorum(
    durable: &[Durable],
    conf: &Configuration,
    index: LogIndex,
    term: Term,
) -> Result<(), String> {
    let holds = |id: &&NodeId| {
        durable
            .get(id.0 as usize - 1)
            .is_some_and(|d| d.snapshot.meta.index >= index || d.term(index) == Some(term))
    };
    for set in [&conf.voters, &conf.outgoing] {
        if set.is_empty() {
            continue;
        }
        let holders: Vec<&NodeId> = set.iter().filter(holds).collect();
        if holders.len() <= set.len() / 2 {
            return Err(format!(
                "only {holders:?} of voters {set:?} hold it on disk"
            ));
        }
    }
    Ok(())
}

/// A node only ever uses a configuration that is in its own log: the latest configuration
/// entry (checked over the newest entries), or where the log starts, the configuration its
/// snapshot carries, or with neither, the cluster's first configuration.
fn check_configuration_in_log(raw: &RawNode, durable: &Durable, first_voters: usize) {
    let (index, conf) = (raw.configuration_index(), raw.configuration());
    let start = raw.snapshot_meta().index;
    let last = raw.last_index();
    let lo = index
        .max(start)
        .max(LogIndex(last.0.saturating_sub(LOG_STEP_WINDOW * 8)));
    let mut k = last;
    while k > lo {
        let kind = raw.entry(k).map(|e| e.kind);
        assert!(
            kind != Some(EntryKind::Config),
            "configuration: node {} uses {conf} from index {index}, but its log has a configuration entry at {k}",
            raw.id()
        );
        k = k.prev();
    }
    if index > start {
        let entry = raw.entry(index).expect("entry within the log");
        let logged = (entry.kind == EntryKind::Config)
            .then(|| Configuration::decode(&entry.data).ok())
            .flatten();
        assert!(
            logged.as_ref() == Some(conf),
            "configuration: node {} uses {conf} from index {index}, where its log holds {:?} {:?}",
            raw.id(),
            entry.kind,
            logged
        );
    } else if start == LogIndex(0) {
        let first = Configuration::new((1..=first_voters as u64).map(NodeId));
        assert!(
            *conf == first,
            "configuration: node {} uses {conf} with no configuration in its log or snapshot (first: {first})",
            raw.id()
        );
    } else if durable.snapshot.meta.index == start {
        assert!(
            *conf == durable.snapshot.configuration,
            "configuration: node {} uses {conf} from its snapshot at {start}, which carries {}",
            raw.id(),
            durable.snapshot.configuration
        );
    }
}

/// No error: the simulated host never fails.
enum Never {}

/// The simulator as one node's host (see `Sim::with_host`).
struct SimHost<'a> {
    sim: &'a mut Sim,
    i: usize,
    incarnation: u64,
    /// A write put under way by `persist`, handed back to the node.
    writing: Option<Write>,
}

impl Host for SimHost<'_> {
    type Error = Never;

    fn send(&mut self, message: Message) {
        self.sim.send(message);
    }

    /// A write that must be synced takes a random disk time (a crash before it completes
    /// loses it, like a power cut); anything else is stored at once.
    fn persist(&mut self, w: &mut Write) -> Result<Persisted, Never> {
        let write = std::mem::take(w);
        let latency = self.sim.config.disk_latency_max;
        if write.sync && latency > 0 {
            let delay = self.sim.rng.gen_range(0..=latency);
            self.writing = Some(write);
            self.sim.schedule(
                delay,
                Event::WriteDone {
                    node: self.i,
                    incarnation: self.incarnation,
                },
            );
            return Ok(Persisted::Later);
        }
        self.sim.store(self.i, write);
        Ok(Persisted::Done)
    }

    fn apply(
        &mut self,
        raw: &mut RawNode,
        entries: Vec<Entry>,
        reads: Vec<ReadState>,
        dropped_reads: Vec<u64>,
    ) {
        let (sim, i) = (&mut *self.sim, self.i);
        sim.commits.record(i, &sim.durable, raw);
        for entry in entries {
            let snap = sim.applier.apply(i, &entry);
            sim.applied[i] = entry.index;
            if let Some(data) = snap {
                compact_node(&mut sim.durable[i], raw, entry.index, data);
            }
        }
        for read in reads {
            sim.confirm_read(i, read);
        }
        sim.read_counts.dropped += dropped_reads.len() as u64;
        sim.serve_reads(i);
    }

    /// Read back from the persister, like a host reading its snapshot file. Applying the
    /// Ready may have taken a newer one since the node asked, which is what it needs now.
    fn snapshot_for_follower(&mut self, _raw: &RawNode, meta: SnapshotMeta) -> Option<Snapshot> {
        let snapshot = self.sim.durable[self.i].snapshot.clone();
        assert!(
            snapshot.meta.index >= meta.index,
            "node {} asked for snapshot {meta:?}, newer than the one on disk",
            self.i + 1
        );
        Some(snapshot)
    }
}
