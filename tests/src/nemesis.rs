//! Fault testing against a real cluster, in the style of Jepsen and etcd's robustness tests:
//! concurrent clients run put / get / cas on a few keys (so operations conflict) while
//! nemeses kill, restart, pause, partition and degrade nodes; every operation is recorded
//! with its invoke and complete times and its outcome, and the history is checked for
//! linearizability. Separately, every client also writes keys nobody overwrites; each one
//! acknowledged must be readable at the end (lost acknowledged writes must be 0).

mod churn;
mod degrade;

use crate::cluster::{ClusterOptions, ProcessCluster};
use crate::linearizability::{self, Call, Operation, Ret};
use raftd::client::{ClientConfig, ClientError};
use raftd::protocol::{FaultSpec, Op, Outcome, Write};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The kinds of trouble a run can inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Nemesis {
    /// kill -9 of a random node (sometimes the leader), restarted a little later.
    Kill,
    /// SIGTERM and restart.
    Restart,
    /// SIGSTOP a random node (sometimes the leader), SIGCONT later.
    Pause,
    /// Isolate the leader from everyone through the fault layer.
    IsolateLeader,
    /// Split the cluster into a majority and a minority.
    Split,
    /// A bridge: two halves that each see one middle node, which sees both.
    Bridge,
    /// Drop and delay frames on every node through the fault layer.
    Lossy,
    /// Fill a node's disk: its data directory is a tmpfs, shrunk to what it holds (root
    /// only; without root the nemesis is skipped and says so).
    DiskFull,
    /// A partition the kernel's TCP sees: nftables drop rules in each node's network
    /// namespace (root only; needs the cluster to run in namespaces).
    NetSplit,
    /// Bit rot: stop a node (SIGTERM or kill -9), flip one bit in a committed record of its
    /// newest WAL segment (now and then in a copy of its term and vote instead), start it
    /// again. The node must find the damage, cut its log, repair from the leader and vote
    /// again. One damaged node at a time, the WAL's fault model: no rot while any node is
    /// still repairing or a damaged vote copy is still unrewritten.
    BitRot,
    /// Membership churn among a pool of ids (the first configuration's and
    /// `RunConfig::spares` more, each in its own namespace): add a learner, promote one,
    /// remove a voter (the leader now and then) or a learner, asked of the leader as
    /// `raftctl member` does. A removed node is stopped (at once or later: a removed node
    /// left running must not disturb) and its data wiped before its id joins again with
    /// `raftd --join`. At least three voters stay.
    Membership,
    /// Kernel-level random loss: nftables `numgen random mod 100 < N drop` rules on one
    /// link (one way or both) or on everything a node sends (and receives) (root and
    /// namespaces).
    NetLoss,
    /// Bandwidth limits: tc `tbf` on the veths of one node or of all, what they send,
    /// receive or both (root and namespaces).
    Bandwidth,
}

impl Nemesis {
    /// Every nemesis.
    pub const ALL: [Nemesis; 13] = [
        Nemesis::Kill,
        Nemesis::Restart,
        Nemesis::Pause,
        Nemesis::IsolateLeader,
        Nemesis::Split,
        Nemesis::Bridge,
        Nemesis::Lossy,
        Nemesis::DiskFull,
        Nemesis::NetSplit,
        Nemesis::BitRot,
        Nemesis::Membership,
        Nemesis::NetLoss,
        Nemesis::Bandwidth,
    ];

    /// Parses a name as printed by `Debug`, case-insensitively.
    pub fn parse(s: &str) -> Option<Nemesis> {
        Nemesis::ALL
            .into_iter()
            .find(|n| format!("{n:?}").eq_ignore_ascii_case(s))
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// Cluster size.
    pub nodes: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Keys the register workload uses.
    pub keys: usize,
    /// How long the faulty phase lasts.
    pub duration: Duration,
    /// Seed for every random choice of the run (the cluster's own timing is not seeded).
    pub seed: u64,
    /// Nemeses to draw from (combined: each fault window applies one or two).
    pub nemeses: Vec<Nemesis>,
    /// Per-operation client timeout.
    pub op_timeout: Duration,
    /// Where to write histories of failing runs.
    pub report_dir: PathBuf,
    /// Run each node in its own network namespace (root; needed by `NetSplit`). Without
    /// them, as without tmpfs for `DiskFull`, the run goes on without those faults and says
    /// SKIPPED, except under CI (`CI` set), where it fails.
    pub netns: bool,
    /// Ids beyond the first configuration (`nodes`) that `Membership` may add, each with an
    /// address (a namespace) of its own.
    pub spares: usize,
}

/// What a run found.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Operations by outcome: ok, failed, unknown.
    pub ok: u64,
    /// Definitely not applied.
    pub failed: u64,
    /// Timed out.
    pub unknown: u64,
    /// 0 or 1 (the checker reports the first violating key).
    pub violations: u64,
    /// The checker ran out of budget.
    pub gave_up: bool,
    /// Acknowledged unique writes missing at the end.
    pub lost_writes: u64,
    /// Acknowledged unique writes checked.
    pub acknowledged_writes: u64,
    /// Terms seen go up by this much: an upper bound on elections.
    pub elections: u64,
    /// Longest time without a successful write, across all clients.
    pub longest_unavailable: Duration,
    /// When that gap began, from the start of the run (to find it among the fault windows
    /// the log prints).
    pub longest_unavailable_from: Duration,
    /// Fault windows applied.
    pub faults: Vec<String>,
    /// Where a violation's report was written.
    pub report: Option<PathBuf>,
    /// Bits flipped by `BitRot`, in segments and in vote copies.
    pub rots: u64,
    /// Of `rots`, those in a copy of the term and vote.
    pub vote_rots: u64,
    /// Of `rots`, those in a snapshot file of a stopped node.
    pub snapshot_rots: u64,
    /// Of `rots`, those on a running node (a sealed segment or its snapshot file), for its
    /// scrubber to find.
    pub live_rots: u64,
    /// "found by the scrubber" lines in the node logs.
    pub scrubber_finds: u64,
    /// `BitRot` turns skipped because a node was still damaged.
    pub rots_skipped: u64,
    /// "DAMAGED WAL" lines in the node logs: repairs that started.
    pub repairs_started: u64,
    /// Repairs that finished (the marker removed), from the node logs.
    pub repairs_finished: u64,
    /// Nodes still repairing after healing and a bounded wait (must be empty).
    pub still_repairing: Vec<u64>,
    /// A rotted node that did not start, or whose damage was not found (must be empty).
    pub rot_failures: Vec<String>,
    /// Fault windows each nemesis took part in, and of those, how many it skipped (no
    /// leader, no spare node, not possible here).
    pub windows: BTreeMap<Nemesis, (u64, u64)>,
    /// Membership changes asked by `Membership`, by outcome.
    pub changes: ChangeCounts,
    /// The voters and learners at the end.
    pub final_members: (Vec<u64>, Vec<u64>),
}

/// Membership changes by outcome.
#[derive(Clone, Copy, Debug, Default)]
pub struct ChangeCounts {
    /// Committed (the leader answered done).
    pub done: u64,
    /// Definitely not done: refused (another change pending, learner behind, ...), not
    /// the leader any more, or not sent.
    pub refused: u64,
    /// Sent, outcome unknown (leadership lost before the commit, timeout).
    pub unknown: u64,
    /// Not asked: no leader, or the configuration was not settled.
    pub skipped: u64,
    /// Of `done`, additions, promotions and removals.
    pub added: u64,
    /// See `added`.
    pub promoted: u64,
    /// See `added`.
    pub removed: u64,
    /// Removed nodes stopped and wiped.
    pub wiped: u64,
}

impl Summary {
    /// No violation, no lost write, a checker that decided, no node left repairing, and
    /// every rot found by its node.
    pub fn passed(&self) -> bool {
        self.violations == 0
            && self.lost_writes == 0
            && !self.gave_up
            && self.still_repairing.is_empty()
            && self.rot_failures.is_empty()
    }
}

/// Seconds per key generation (see `client_loop`).
const PHASE_SECONDS: u64 = 3;

fn now_ns(epoch: Instant) -> u64 {
    epoch.elapsed().as_nanos() as u64
}

struct Shared {
    epoch: Instant,
    history: Mutex<Vec<Operation>>,
    acked_unique: Mutex<Vec<String>>,
    write_successes: Mutex<Vec<u64>>,
    stop: AtomicBool,
}

fn client_loop(me: u64, config: ClientConfig, keys: usize, seed: u64, shared: Arc<Shared>) {
    let mut rng = SmallRng::seed_from_u64(seed ^ me.wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let mut client = raftd::client::Client::new(config);
    let mut counter = 0u64;
    // The last value this client saw for each key: what its cas operations expect.
    let mut last_seen: HashMap<String, Option<Vec<u8>>> = HashMap::new();
    while !shared.stop.load(Ordering::Relaxed) {
        counter += 1;
        // Keys change every phase so each key's history stays small enough for the
        // checker however long the run (linearizability is checked per key).
        let phase = shared.epoch.elapsed().as_secs() / PHASE_SECONDS;
        let key = format!("r{phase}-{}", rng.gen_range(0..keys));
        let value = format!("c{me}-{counter}");
        let roll = rng.gen_range(0..100);
        let (call, invoke) = if roll < 40 {
            (Call::Get, now_ns(shared.epoch))
        } else if roll < 75 {
            (Call::Put(value.clone().into_bytes()), now_ns(shared.epoch))
        } else {
            // Expect what this client last saw there: it matches unless someone wrote since.
            let expected = last_seen.get(&key).cloned().flatten();
            (
                Call::Cas {
                    expected,
                    new: value.clone().into_bytes(),
                },
                now_ns(shared.epoch),
            )
        };
        let ret = match &call {
            Call::Get => match client.get(key.as_bytes()) {
                Ok(v) => Ret::Value(v),
                Err(ClientError::Definite(_) | ClientError::Unreachable(_)) => Ret::Failed,
                Err(ClientError::Unknown(_)) => Ret::Unknown,
            },
            Call::Put(v) => write_ret(client.write(Write::Put {
                key: key.clone().into_bytes(),
                value: v.clone(),
            })),
            Call::Cas { expected, new } => write_ret(client.write(Write::Cas {
                key: key.clone().into_bytes(),
                expected: expected.clone(),
                new: new.clone(),
            })),
            Call::Delete => unreachable!("not generated"),
        };
        let complete = (ret != Ret::Unknown).then(|| now_ns(shared.epoch));
        match (&call, &ret) {
            (Call::Get, Ret::Value(v)) => {
                last_seen.insert(key.clone(), v.clone());
            }
            (Call::Put(v), Ret::Ok) | (Call::Cas { new: v, .. }, Ret::Ok) => {
                last_seen.insert(key.clone(), Some(v.clone()));
            }
            _ => {
                last_seen.remove(&key);
            }
        }
        if matches!(call, Call::Put(_) | Call::Cas { .. })
            && matches!(ret, Ret::Ok | Ret::CasMismatch)
        {
            shared
                .write_successes
                .lock()
                .unwrap()
                .push(complete.unwrap_or(0));
        }
        shared.history.lock().unwrap().push(Operation {
            client: me,
            key: key.into_bytes(),
            call,
            invoke_ns: invoke,
            complete_ns: complete,
            ret,
        });
        // A unique key nobody overwrites: if acknowledged, it must survive everything.
        if counter.is_multiple_of(4) {
            let unique = format!("u{me}-{counter}");
            if let Ok(Outcome::Written { .. }) = client.write(Write::Put {
                key: unique.clone().into_bytes(),
                value: b"1".to_vec(),
            }) {
                shared.acked_unique.lock().unwrap().push(unique);
            }
        }
    }
}

fn write_ret(r: Result<Outcome, ClientError>) -> Ret {
    match r {
        Ok(Outcome::Written { .. }) => Ret::Ok,
        Ok(Outcome::CasMismatch { .. }) => Ret::CasMismatch,
        Ok(_) => Ret::Unknown,
        Err(ClientError::Definite(_) | ClientError::Unreachable(_)) => Ret::Failed,
        Err(ClientError::Unknown(_)) => Ret::Unknown,
    }
}

/// The harness's handle on the cluster and the faults in force.
struct Faulter {
    cluster: ProcessCluster,
    /// Nodes whose data directory is a tmpfs (the disk-full nemesis needs it).
    tmpfs: Vec<u64>,
    /// Nodes whose tmpfs is currently full.
    full: BTreeSet<u64>,
    /// nftables rules are in force.
    net_cut: bool,
    rng: SmallRng,
    paused: BTreeSet<u64>,
    stopped: BTreeSet<u64>,
    faults_on: bool,
    /// The vote copy `BitRot` damaged last, as it left it: the damage is outstanding while
    /// the file still holds these bytes (the node rewrites it at its next term or vote).
    rotted_vote_copy: Option<(u64, PathBuf, Vec<u8>)>,
    /// The byte `BitRot` rotted last on a running node, as it left it: outstanding while
    /// the file exists and holds that value there (a snapshot deletes or rewrites it).
    rotted_live: Option<(u64, PathBuf, u64, u8)>,
    rots: u64,
    vote_rots: u64,
    snapshot_rots: u64,
    live_rots: u64,
    rots_skipped: u64,
    rot_failures: Vec<String>,
    /// Kernel-level loss rules or bandwidth limits are in force.
    degraded: bool,
    /// The newest configuration seen (see `Faulter::refresh_configuration`).
    conf: Configuration,
    changes: ChangeCounts,
}

/// A configuration as a node's status shows it. Of two configurations nodes report, the one
/// with the higher index is at least as new (a snapshot's index is at or past the entry of
/// the configuration it carries).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Configuration {
    /// Its log index.
    index: u64,
    voters: BTreeSet<u64>,
    /// The outgoing voters of a joint configuration (empty otherwise).
    outgoing: BTreeSet<u64>,
    learners: BTreeSet<u64>,
}

impl Configuration {
    fn of(status: &serde_json::Value) -> Option<Configuration> {
        let c = &status["configuration"];
        let set = |name: &str| -> Option<BTreeSet<u64>> {
            c[name].as_array()?.iter().map(|v| v.as_u64()).collect()
        };
        Some(Configuration {
            index: c["index"].as_u64()?,
            voters: set("voters")?,
            outgoing: set("outgoing")?,
            learners: set("learners")?,
        })
    }

    fn members(&self) -> BTreeSet<u64> {
        &(&self.voters | &self.outgoing) | &self.learners
    }

    /// The same voters, outgoing voters and learners (the index may differ: a node
    /// reports the index of its snapshot when the configuration came with it).
    fn same_members(&self, other: &Configuration) -> bool {
        self.voters == other.voters
            && self.outgoing == other.outgoing
            && self.learners == other.learners
    }

    fn has(&self, id: u64) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id) || self.learners.contains(&id)
    }
}

impl Faulter {
    fn leader(&self) -> Option<u64> {
        self.cluster
            .wait_leader(&self.live(), Duration::from_millis(300))
    }

    /// Nodes with a process (paused ones included): members or not.
    fn running(&self) -> Vec<u64> {
        self.cluster
            .ids()
            .into_iter()
            .filter(|&i| self.cluster.pid(i).is_some())
            .collect()
    }

    /// Running nodes that are not paused.
    fn live(&self) -> Vec<u64> {
        self.running()
            .into_iter()
            .filter(|i| !self.paused.contains(i))
            .collect()
    }

    /// Reads the newest configuration any live node uses (the highest configuration
    /// index): the voters whose majorities the crash nemeses must leave alive.
    fn refresh_configuration(&mut self) {
        let newest = self
            .live()
            .into_iter()
            .filter_map(|id| self.cluster.status(id))
            .filter_map(|s| Configuration::of(&s))
            .max_by_key(|c| c.index);
        if let Some(conf) = newest {
            self.conf = conf;
        }
    }

    /// A live node to crash, pause or restart (the leader half the time) whose loss leaves
    /// a live majority of every voter set in force (both halves of a joint configuration),
    /// or `None` when there is no such node. Non-members are fair game. A node repairing
    /// its WAL after bit rot does not vote, so it does not count towards a majority.
    fn victim(&mut self) -> Option<u64> {
        self.refresh_configuration();
        let live = self.live();
        let voting: Vec<u64> = live
            .iter()
            .copied()
            .filter(|&id| !self.wal_dir(id).join(wal::REPAIR_FILE).exists())
            .collect();
        let spare = |v: u64| {
            [&self.conf.voters, &self.conf.outgoing].iter().all(|set| {
                let left = set
                    .iter()
                    .filter(|&&i| i != v && voting.contains(&i))
                    .count();
                !set.contains(&v) || left > set.len() / 2
            })
        };
        let candidates: Vec<u64> = live.iter().copied().filter(|&v| spare(v)).collect();
        if candidates.is_empty() {
            return None;
        }
        if self.rng.gen_bool(0.5) {
            if let Some(l) = self.leader().filter(|l| candidates.contains(l)) {
                return Some(l);
            }
        }
        Some(candidates[self.rng.gen_range(0..candidates.len())])
    }

    /// The running nodes, shuffled.
    fn shuffled_running(&mut self) -> Vec<u64> {
        let mut ids = self.running();
        for k in (1..ids.len()).rev() {
            ids.swap(k, self.rng.gen_range(0..=k));
        }
        ids
    }

    fn set_fault(&mut self, id: u64, spec: FaultSpec) {
        let mut c = self.cluster.client_over(&[id], Duration::from_secs(1));
        // Lost or unanswered is part of the chaos; refused is a harness mistake.
        assert_fault_accepted(id, &c.call_node(self.cluster.addr(id), Op::Fault(spec)));
    }

    fn partition(&mut self, groups: &[Vec<u64>]) {
        // Each node is cut from every node not in a group it belongs to.
        for id in self.live() {
            let reachable: BTreeSet<u64> = groups
                .iter()
                .filter(|g| g.contains(&id))
                .flatten()
                .copied()
                .collect();
            let cut: Vec<u64> = self
                .cluster
                .ids()
                .into_iter()
                .filter(|p| !reachable.contains(p) && *p != id)
                .collect();
            self.set_fault(
                id,
                FaultSpec {
                    partition: cut,
                    ..FaultSpec::default()
                },
            );
        }
        self.faults_on = true;
    }

    fn apply(&mut self, nemesis: Nemesis) -> String {
        match nemesis {
            Nemesis::Kill => {
                let Some(v) = self.victim() else {
                    return "kill skipped (no spare node)".into();
                };
                self.cluster.kill9(v);
                self.stopped.insert(v);
                format!("kill -9 node {v}")
            }
            Nemesis::Restart => {
                let Some(v) = self.victim() else {
                    return "restart skipped (no spare node)".into();
                };
                self.cluster.terminate(v);
                self.cluster.spawn(v);
                format!("SIGTERM and restart node {v}")
            }
            Nemesis::Pause => {
                let Some(v) = self.victim() else {
                    return "pause skipped (no spare node)".into();
                };
                if let Some(pid) = self.cluster.pid(v) {
                    let _ = Command::new("kill")
                        .args(["-STOP", &pid.to_string()])
                        .status();
                    self.paused.insert(v);
                }
                format!("SIGSTOP node {v}")
            }
            Nemesis::IsolateLeader => match self.leader() {
                Some(l) => {
                    let others: Vec<u64> = self.running().into_iter().filter(|&i| i != l).collect();
                    self.partition(&[vec![l], others]);
                    format!("isolate leader {l}")
                }
                None => "isolate skipped (no leader)".into(),
            },
            Nemesis::Split => {
                let mut ids = self.shuffled_running();
                let minority = ids.split_off(ids.len() / 2 + 1);
                self.partition(&[ids.clone(), minority.clone()]);
                format!("split {ids:?} | {minority:?}")
            }
            Nemesis::Bridge => {
                let ids = self.shuffled_running();
                let n = ids.len();
                let mid = ids[n / 2];
                let left: Vec<u64> = ids[..n / 2].to_vec();
                let right: Vec<u64> = ids[n / 2 + 1..].to_vec();
                let mut a = left.clone();
                a.push(mid);
                let mut b = right.clone();
                b.push(mid);
                self.partition(&[a, b]);
                format!("bridge {left:?} - {mid} - {right:?}")
            }
            Nemesis::DiskFull => {
                if self.tmpfs.is_empty() {
                    return "disk full skipped (data directories are not on tmpfs: needs root)"
                        .into();
                }
                let running = self.running();
                let on_tmpfs: Vec<u64> = self
                    .tmpfs
                    .iter()
                    .copied()
                    .filter(|id| running.contains(id))
                    .collect();
                if on_tmpfs.is_empty() {
                    return "disk full skipped (no node running)".into();
                }
                let v = on_tmpfs[self.rng.gen_range(0..on_tmpfs.len())];
                let dir = self.cluster.data_dir(v);
                let used = dir_bytes(&dir);
                let size = format!("remount,size={}k", used / 1024 + 64);
                if mount(&["-o", &size, dir.to_str().unwrap_or_default()]) {
                    self.full.insert(v);
                    format!("disk full on node {v} ({} MiB used)", used >> 20)
                } else {
                    format!("disk full on node {v} failed (remount refused)")
                }
            }
            Nemesis::NetSplit => {
                if !self.cluster.in_netns() {
                    return "net split skipped (nodes are not in network namespaces: needs root)"
                        .into();
                }
                let mut ids = self.shuffled_running();
                let minority = ids.split_off(ids.len() / 2 + 1);
                if self.cluster.net_partition(&[ids.clone(), minority.clone()]) {
                    self.net_cut = true;
                    format!("nft split {ids:?} | {minority:?}")
                } else {
                    "net split failed (nft refused)".into()
                }
            }
            Nemesis::Lossy => {
                let drop = [5.0, 10.0, 20.0][self.rng.gen_range(0..3)];
                let max = [5, 20, 50][self.rng.gen_range(0..3)];
                for id in self.live() {
                    self.set_fault(
                        id,
                        FaultSpec {
                            drop_percent: drop,
                            delay_ms: Some((0, max)),
                            partition: Vec::new(),
                        },
                    );
                }
                self.faults_on = true;
                format!("lossy network: drop {drop}%, delay 0..{max} ms")
            }
            Nemesis::BitRot => self.bit_rot(),
            Nemesis::Membership => self.membership(),
            Nemesis::NetLoss => self.net_loss(),
            Nemesis::Bandwidth => self.bandwidth(),
        }
    }

    /// Undoes every fault: continue paused nodes, restart stopped ones, clear fault layers,
    /// give full disks room again.
    fn heal(&mut self) {
        if std::mem::take(&mut self.net_cut) {
            self.cluster.net_partition(&[]);
        }
        if std::mem::take(&mut self.degraded) {
            assert!(
                self.cluster.net_heal_degradation(),
                "cannot remove the loss rules and bandwidth limits"
            );
        }
        for id in std::mem::take(&mut self.full) {
            let dir = self.cluster.data_dir(id);
            mount(&["-o", TMPFS_SIZE_REMOUNT, dir.to_str().unwrap_or_default()]);
        }
        for id in std::mem::take(&mut self.paused) {
            if let Some(pid) = self.cluster.pid(id) {
                let _ = Command::new("kill")
                    .args(["-CONT", &pid.to_string()])
                    .status();
            }
        }
        for id in std::mem::take(&mut self.stopped) {
            self.cluster.spawn(id);
        }
        if self.faults_on {
            for id in self.running() {
                self.clear_faults(id);
            }
            self.faults_on = false;
        }
    }

    /// Clears a node's fault layer, retrying while the node is busy (just restarted,
    /// installing a snapshot): a heal that silently missed a node once left it dropping
    /// 10 % of its messages for the rest of the run.
    fn clear_faults(&mut self, id: u64) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut c = self.cluster.client_over(&[id], Duration::from_secs(2));
            let cleared = c.call_node(self.cluster.addr(id), Op::Fault(FaultSpec::default()));
            assert_fault_accepted(id, &cleared);
            if cleared.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "cannot clear node {id}'s faults: {cleared:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Stops the run if node `id` refused a fault request: it was started without
/// `--enable-fault-injection`, and a run whose faults are all refused would test nothing.
fn assert_fault_accepted<E>(id: u64, answer: &Result<Outcome, E>) {
    if let Ok(Outcome::Refused { reason }) = answer {
        panic!("node {id} refused a fault request: {reason}");
    }
}

/// Bit rot (`Nemesis::BitRot`): damage that no crash explains, one node at a time.
impl Faulter {
    fn wal_dir(&self, id: u64) -> PathBuf {
        self.cluster.data_dir(id).join("wal")
    }

    /// The damage still outstanding, if any: a node still repairing (its WAL directory
    /// holds the marker), or the vote copy rotted last still as the rot left it.
    fn outstanding_damage(&mut self) -> Option<String> {
        // A node that is no member has nobody to repair from; it is wiped before it joins.
        if let Some(id) = self
            .cluster
            .ids()
            .into_iter()
            .filter(|&id| self.conf.has(id))
            .find(|&id| self.wal_dir(id).join(wal::REPAIR_FILE).exists())
        {
            return Some(format!("node {id} is still repairing"));
        }
        if let Some((id, path, at, value)) = self.rotted_live.take() {
            let still = std::fs::read(&path).is_ok_and(|now| now.get(at as usize) == Some(&value));
            if still {
                let what = format!("node {id}'s {} is still damaged", file_name(&path));
                self.rotted_live = Some((id, path, at, value));
                return Some(what);
            }
        }
        let (id, path, rotted) = self.rotted_vote_copy.take()?;
        if std::fs::read(&path).is_ok_and(|now| now == rotted) {
            let what = format!("node {id}'s {} is still damaged", file_name(&path));
            self.rotted_vote_copy = Some((id, path, rotted));
            return Some(what);
        }
        None
    }

    /// Stops a live node (not one whose disk is full: it could not write its repair
    /// marker, and would stay down), flips one bit of its WAL, starts it again and checks
    /// that it came up and found the damage.
    fn bit_rot(&mut self) -> String {
        self.refresh_configuration();
        if let Some(damage) = self.outstanding_damage() {
            self.rots_skipped += 1;
            return format!("bit rot skipped ({damage})");
        }
        let candidates: Vec<u64> = self
            .live()
            .into_iter()
            .filter(|id| !self.full.contains(id) && self.conf.has(*id))
            .collect();
        if candidates.is_empty() {
            return "bit rot skipped (no live node with room on its disk)".into();
        }
        let leader = match self.rng.gen_bool(0.5) {
            true => self.leader().filter(|l| candidates.contains(l)),
            false => None,
        };
        let v = leader.unwrap_or_else(|| candidates[self.rng.gen_range(0..candidates.len())]);
        if self.rng.gen_ratio(1, 3) {
            return self.bit_rot_running(v);
        }
        let how = match self.rng.gen_bool(0.5) {
            true => {
                self.cluster.terminate(v);
                "SIGTERM"
            }
            false => {
                self.cluster.kill9(v);
                "kill -9"
            }
        };
        let rotted = self.rot_files(v);
        let log_from = std::fs::metadata(self.cluster.log_path(v)).map_or(0, |m| m.len());
        self.cluster.spawn(v);
        let (where_, in_segment) = match rotted {
            Ok(rot) => rot,
            Err(e) => return format!("bit rot on node {v} failed ({how}, restarted): {e}"),
        };
        self.rots += 1;
        let outcome = self.await_rotted_node(v, log_from, in_segment);
        format!("bit rot on node {v} ({how}): {where_}; {outcome}")
    }

    /// Flips one bit in running node `v`'s oldest sealed segment or its newest snapshot
    /// file, and waits (bounded) for its scrubber to report the damage in its log. The node
    /// holds every entry of the file in memory or in its store, so it mends the damage with
    /// a snapshot by itself; until then the damage is outstanding. A file a snapshot
    /// deleted or replaced before the scrubber reached it needs no finding.
    fn bit_rot_running(&mut self, v: u64) -> String {
        let dir = self.wal_dir(v);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        files.sort();
        let mut segments: Vec<PathBuf> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .cloned()
            .collect();
        segments.pop(); // The one being written.
        let snapshot = files
            .iter()
            .rfind(|p| p.extension().is_some_and(|x| x == "snap"))
            .cloned();
        let path = match (segments.first(), snapshot) {
            (Some(segment), Some(snapshot)) => match self.rng.gen_bool(0.5) {
                true => segment.clone(),
                false => snapshot,
            },
            (Some(segment), None) => segment.clone(),
            (None, Some(snapshot)) => snapshot,
            (None, None) => return format!("bit rot on running node {v} skipped (no sealed file)"),
        };
        let Ok(bytes) = std::fs::read(&path) else {
            return format!(
                "bit rot on running node {v} skipped ({} vanished)",
                file_name(&path)
            );
        };
        if bytes.is_empty() {
            return format!("bit rot on running node {v} skipped (empty file)");
        }
        let at = self.rng.gen_range(0..bytes.len());
        let bit = self.rng.gen_range(0..8u8);
        let log_from = std::fs::metadata(self.cluster.log_path(v)).map_or(0, |m| m.len());
        if let Err(e) = flip_bit(&path, at as u64, bit) {
            return format!("bit rot on running node {v} failed: {e}");
        }
        self.rots += 1;
        self.live_rots += 1;
        self.rotted_live = Some((v, path.clone(), at as u64, bytes[at] ^ (1 << bit)));
        let where_ = format!("{} byte {at} bit {bit}", file_name(&path));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let logged = std::fs::read(self.cluster.log_path(v)).unwrap_or_default();
            let since = logged.get(log_from as usize..).unwrap_or_default();
            if String::from_utf8_lossy(since).contains("found by the scrubber") {
                return format!("bit rot on running node {v}: {where_}; found by its scrubber");
            }
            let still = std::fs::read(&path)
                .is_ok_and(|now| now.get(at) == Some(&(bytes[at] ^ (1 << bit))));
            if !still {
                return format!(
                    "bit rot on running node {v}: {where_}; the file was replaced first"
                );
            }
            if !self.cluster.is_running(v) {
                return format!(
                    "bit rot on running node {v}: {where_}; the node stopped (found at its start)"
                );
            }
            if Instant::now() > deadline {
                let failure = format!(
                    "node {v}'s scrubber did not find the bit rot in {where_} within 60 s; its log:\n{}",
                    self.cluster.log_tail(v)
                );
                self.rot_failures.push(failure);
                return format!("bit rot on running node {v}: {where_}; NOT FOUND (a failure)");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Flips one bit: in a copy of the term and vote one time in eight (when the node has
    /// one), in its newest snapshot file one time in eight (when it has one), otherwise in a
    /// committed record of its newest segment that holds one. Returns where, and whether it
    /// was in a segment or snapshot file (damage the node logs as such).
    fn rot_files(&mut self, id: u64) -> Result<(String, bool), String> {
        let dir = self.wal_dir(id);
        let newest_snapshot = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "snap"))
            .max();
        if let Some(path) = newest_snapshot.filter(|_| self.rng.gen_ratio(1, 8)) {
            let len = std::fs::metadata(&path).map_or(0, |m| m.len());
            if len > 0 {
                let at = self.rng.gen_range(0..len);
                let bit = self.rng.gen_range(0..8);
                flip_bit(&path, at, bit)?;
                self.snapshot_rots += 1;
                return Ok((format!("{} byte {at} bit {bit}", file_name(&path)), true));
            }
        }
        let copies: Vec<PathBuf> = ["vote-a", "vote-b"]
            .iter()
            .map(|name| dir.join(name))
            .filter(|p| p.exists())
            .collect();
        if !copies.is_empty() && self.rng.gen_ratio(1, 8) {
            let path = copies[self.rng.gen_range(0..copies.len())].clone();
            let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            if !bytes.is_empty() {
                let at = self.rng.gen_range(0..bytes.len());
                let bit = self.rng.gen_range(0..8);
                flip_bit(&path, at as u64, bit)?;
                let mut rotted = bytes;
                rotted[at] ^= 1 << bit;
                self.rotted_vote_copy = Some((id, path.clone(), rotted));
                self.vote_rots += 1;
                return Ok((format!("{} byte {at} bit {bit}", file_name(&path)), false));
            }
        }
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .collect();
        // Fixed-width hexadecimal ids: the names sort in id order.
        segments.sort();
        for path in segments.iter().rev() {
            let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
            let Some(range) = rot_range(&bytes) else {
                continue;
            };
            let (at, bit) = pick_flip(&bytes, range.clone(), &mut self.rng);
            flip_bit(path, at as u64, bit)?;
            return Ok((
                format!(
                    "{} offset {at} bit {bit} (committed records {}..{})",
                    file_name(path),
                    range.start,
                    range.end
                ),
                true,
            ));
        }
        Err("no segment holds a committed batch to rot".into())
    }

    /// Waits (bounded) for a rotted node to serve again and checks, in what it logged since
    /// `log_from` (its log file's length before the restart), that it found the damage:
    /// "DAMAGED WAL" for a segment, a damaged "copy of term and vote" for a vote copy, both
    /// logged at open, before the node serves. The marker file cannot show it: a node that
    /// reaches a leader at once finishes its repair within milliseconds. A node that exits
    /// or serves without having found the damage fails the run.
    fn await_rotted_node(&mut self, id: u64, log_from: u64, in_segment: bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.cluster.status(id).is_none() {
            if !self.cluster.is_running(id) {
                let failure = format!(
                    "node {id} exited after bit rot; its log:\n{}",
                    self.cluster.log_tail(id)
                );
                self.rot_failures.push(failure);
                return "EXITED (a failure)".into();
            }
            if Instant::now() > deadline {
                return "restarted, not answering yet after 20 s".into();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        // A damaged snapshot file is either cut away with the log that depends on it
        // ("DAMAGED WAL") or, when the log still covers it, skipped for an older one.
        let expected: &[&str] = match in_segment {
            true => &["DAMAGED WAL", "skipping damaged snapshot"],
            false => &["copy of term and vote"],
        };
        let logged = std::fs::read(self.cluster.log_path(id)).unwrap_or_default();
        let since = String::from_utf8_lossy(logged.get(log_from as usize..).unwrap_or_default())
            .into_owned();
        if let Some(found) = expected.iter().find(|e| since.contains(*e)) {
            return format!("found ({found})");
        }
        let expected = expected.join("\" or \"");
        let failure = format!(
            "node {id} serves after bit rot without logging \"{expected}\"; its log:\n{}",
            self.cluster.log_tail(id)
        );
        self.rot_failures.push(failure);
        "DAMAGE NOT FOUND (a failure)".into()
    }
}

fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Where in a segment's bytes a flipped bit must read as damage and never as a torn write:
/// from offset 64 (past the segment header and the first record's header) to the start of
/// the last commit record. A flip inside that record cannot be told from the record being
/// torn, the WAL's one documented limit (wal/FORMAT.md, "Known limit"), and reads as an
/// unfinished last batch; records after it are such a batch (a kill -9 inside a persist).
/// The last commit record is found by walking the records: it is 20 bytes plus 4 per
/// 512-byte piece of its batch, so no fixed margin before the end of the written part
/// excludes it. `None` when the segment holds no committed record past offset 64.
pub fn rot_range(segment: &[u8]) -> Option<std::ops::Range<usize>> {
    const START: usize = 64;
    let mut pos = wal::format::SEGMENT_HEADER_BYTES;
    let mut last_commit = None;
    while let Ok((record, bytes)) = wal::format::read_record(segment, pos) {
        if matches!(record, wal::format::Record::Commit { .. }) {
            last_commit = Some(pos);
        }
        pos += bytes;
    }
    last_commit.filter(|&end| end > START).map(|end| START..end)
}

/// A byte in `range` and a bit to flip there. The flip never leaves the byte zero: a
/// 512-byte piece of the last batch that reads all zeros is taken for a sector that was
/// never written (a torn write, FORMAT.md row 2), and a byte left non-zero rules that out.
fn pick_flip(segment: &[u8], range: std::ops::Range<usize>, rng: &mut SmallRng) -> (usize, u8) {
    loop {
        let at = rng.gen_range(range.clone());
        let bit = rng.gen_range(0..8u8);
        if segment[at] ^ (1 << bit) != 0 {
            return (at, bit);
        }
    }
}

/// Flips one bit of a file in place (the node is stopped; its next start reads it).
fn flip_bit(path: &std::path::Path, at: u64, bit: u8) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let fail = |e: std::io::Error| format!("{}: {e}", path.display());
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(fail)?;
    let mut byte = [0u8];
    file.read_exact_at(&mut byte, at).map_err(fail)?;
    byte[0] ^= 1 << bit;
    file.write_all_at(&byte, at).map_err(fail)?;
    file.sync_all().map_err(fail)
}

/// Repairs started and finished, counted in the node logs: "DAMAGED WAL" is logged when
/// open cuts a damaged log, and the server's "repair finished" line after the marker is
/// removed (the core logs its own "repair finished" a moment earlier, when it has decided;
/// that one is not counted, so a node killed in between is not counted as finished).
fn count_repairs(cluster: &ProcessCluster) -> (u64, u64) {
    let (mut started, mut finished) = (0, 0);
    for id in cluster.ids() {
        let text = std::fs::read_to_string(cluster.log_path(id)).unwrap_or_default();
        for line in text.lines() {
            if line.contains("found by the scrubber") {
                continue; // Mended by a snapshot; no repair from the cluster.
            } else if line.contains("DAMAGED WAL") {
                started += 1;
            } else if line.contains("repair finished: the damaged log is whole again") {
                finished += 1;
            }
        }
    }
    (started, finished)
}

/// Waits up to `within` for every node of `ids` to stop repairing (status and marker); returns the
/// nodes still repairing then.
fn wait_repairs_over(cluster: &ProcessCluster, ids: &[u64], within: Duration) -> Vec<u64> {
    let deadline = Instant::now() + within;
    loop {
        let repairing: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|&id| {
                let marker = cluster.data_dir(id).join("wal").join(wal::REPAIR_FILE);
                marker.exists()
                    || cluster
                        .status(id)
                        .is_some_and(|s| s["repairing"].as_bool().unwrap_or(false))
            })
            .collect();
        if repairing.is_empty() || Instant::now() > deadline {
            return repairing;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// tmpfs mounts to remove when the run ends, however it ends.
struct Mounts(Vec<std::path::PathBuf>);

impl Drop for Mounts {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = Command::new("umount").arg("-l").arg(dir).status();
        }
    }
}

const TMPFS_SIZE: &str = "size=1g";
const TMPFS_SIZE_REMOUNT: &str = "remount,size=1g";

fn mount(args: &[&str]) -> bool {
    Command::new("mount")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Bytes the files under `dir` take (segments are preallocated, so length is usage).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.metadata() {
                    Ok(m) if m.is_dir() => dir_bytes(&e.path()),
                    Ok(m) => m.len(),
                    Err(_) => 0,
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Runs the workload under the nemeses for `config.duration`, heals, checks.
pub fn run(config: &RunConfig, log: &mut dyn FnMut(&str)) -> Summary {
    // Small segments so a full disk is reached quickly; data on tmpfs where root allows.
    // Fewer entries kept in memory than between snapshots, so a node that was down or cut
    // off is also caught up by snapshots taken for it (past the one on disk).
    let options = ClusterOptions {
        wal_segment_mib: 4,
        snapshot_entries: 10_000,
        log_memory_entries: 2_000,
        // Loss, delay and partitions go through the nodes' fault layer.
        fault_injection: true,
        ..ClusterOptions::default()
    };
    let mut cluster = match config.netns {
        true => match ProcessCluster::prepare_netns(config.nodes, options.clone()) {
            Some(c) => c,
            None => {
                let reason = "network namespaces unavailable (needs root, ip and nft): nodes share the host network, no kernel partitions";
                log(reason);
                wal::testing::skip(reason);
                ProcessCluster::prepare(config.nodes, options)
            }
        },
        false => ProcessCluster::prepare(config.nodes, options),
    };
    // The spare ids: nodes that join (`--join`) when `Membership` adds them.
    if config.nemeses.contains(&Nemesis::Membership) {
        for _ in 0..config.spares {
            cluster.add_joiner();
        }
    }
    // Nothing left over from an earlier run that died before healing.
    assert!(
        cluster.net_heal_degradation(),
        "cannot clear loss rules and bandwidth limits"
    );
    for nemesis in [Nemesis::NetLoss, Nemesis::Bandwidth] {
        if config.nemeses.contains(&nemesis) && !cluster.in_netns() {
            let reason = format!("{nemesis:?} nemesis unavailable: nodes are not in network namespaces (needs root, ip, nft and tc)");
            log(&reason);
            wal::testing::skip(&reason);
        }
    }
    let mut tmpfs = Vec::new();
    if config.nemeses.contains(&Nemesis::DiskFull) {
        for id in cluster.ids() {
            let dir = cluster.data_dir(id);
            let _ = std::fs::create_dir_all(&dir);
            if mount(&[
                "-t",
                "tmpfs",
                "-o",
                TMPFS_SIZE,
                "tmpfs",
                dir.to_str().unwrap_or_default(),
            ]) {
                tmpfs.push(id);
            }
        }
        if tmpfs.is_empty() {
            let reason = "disk-full nemesis unavailable: cannot mount tmpfs (needs root)";
            log(reason);
            wal::testing::skip(reason);
        }
    }
    // Dropped after the cluster (declared before it is moved into the Faulter below), so
    // the nodes are dead when their tmpfs goes, even when a check panics.
    let _mounts = Mounts(tmpfs.iter().map(|&id| cluster.data_dir(id)).collect());
    let ids: Vec<u64> = (1..=config.nodes as u64).collect();
    for &id in &ids {
        cluster.spawn(id);
    }
    cluster
        .wait_leader(&ids, Duration::from_secs(10))
        .expect("the cluster elects a leader");
    let first_term = ids
        .iter()
        .filter_map(|&i| cluster.status(i))
        .filter_map(|s| s["term"].as_u64())
        .max()
        .unwrap_or(0);
    let shared = Arc::new(Shared {
        epoch: Instant::now(),
        history: Mutex::new(Vec::new()),
        acked_unique: Mutex::new(Vec::new()),
        write_successes: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    // Every address of the pool: clients find the leader wherever membership put it.
    let client_config = ClientConfig {
        nodes: cluster.ids().iter().map(|&i| cluster.addr(i)).collect(),
        cluster_id: "raftd".into(),
        token: None,
        timeout: config.op_timeout,
        tls: cluster.client_tls(),
    };
    let workers: Vec<_> = (0..config.clients as u64)
        .map(|me| {
            let (cfg, shared, keys, seed) = (
                client_config.clone(),
                shared.clone(),
                config.keys,
                config.seed,
            );
            std::thread::spawn(move || client_loop(me, cfg, keys, seed, shared))
        })
        .collect();
    let mut f = Faulter {
        cluster,
        tmpfs,
        full: BTreeSet::new(),
        net_cut: false,
        rng: SmallRng::seed_from_u64(config.seed),
        paused: BTreeSet::new(),
        stopped: BTreeSet::new(),
        faults_on: false,
        rotted_vote_copy: None,
        rotted_live: None,
        rots: 0,
        vote_rots: 0,
        snapshot_rots: 0,
        live_rots: 0,
        rots_skipped: 0,
        rot_failures: Vec::new(),
        degraded: false,
        conf: Configuration::default(),
        changes: ChangeCounts::default(),
    };
    f.refresh_configuration();
    let mut summary = Summary::default();
    let end = Instant::now() + config.duration;
    while Instant::now() < end && !config.nemeses.is_empty() {
        std::thread::sleep(Duration::from_millis(f.rng.gen_range(1000..4000)));
        let count = if config.nemeses.len() > 1 && f.rng.gen_bool(0.3) {
            2
        } else {
            1
        };
        let mut applied = Vec::new();
        for _ in 0..count {
            let nemesis = config.nemeses[f.rng.gen_range(0..config.nemeses.len())];
            let what = f.apply(nemesis);
            let counts = summary.windows.entry(nemesis).or_default();
            counts.0 += 1;
            counts.1 += u64::from(what.contains("skipped"));
            applied.push(what);
        }
        let what = applied.join(" + ");
        log(&format!(
            "[{:>6.1}s] fault: {what}",
            shared.epoch.elapsed().as_secs_f64()
        ));
        summary.faults.push(what);
        std::thread::sleep(Duration::from_millis(f.rng.gen_range(2000..6000)));
        f.heal();
        log(&format!(
            "[{:>6.1}s] healed",
            shared.epoch.elapsed().as_secs_f64()
        ));
    }
    if config.nemeses.is_empty() {
        std::thread::sleep(config.duration);
    }
    f.heal();
    // Whatever was in force, and the membership settled: non-members stopped.
    assert!(
        f.cluster.net_heal_degradation(),
        "cannot clear loss rules and bandwidth limits"
    );
    let members = f.settle_membership(log);
    summary.changes = f.changes;
    summary.final_members = (
        f.conf.voters.iter().copied().collect(),
        f.conf.learners.iter().copied().collect(),
    );
    // Let the healed cluster serve for a moment before the clients stop.
    std::thread::sleep(Duration::from_secs(3));
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    summary.rots = f.rots;
    summary.vote_rots = f.vote_rots;
    summary.snapshot_rots = f.snapshot_rots;
    summary.live_rots = f.live_rots;
    summary.rots_skipped = f.rots_skipped;
    summary.rot_failures = std::mem::take(&mut f.rot_failures);
    for failure in &summary.rot_failures {
        log(&format!("BIT ROT FAILURE: {failure}"));
    }
    finish(
        config,
        &f.cluster,
        &members,
        &shared,
        first_term,
        &mut summary,
        log,
    );
    summary
}

/// Checks the healed cluster whose members are `ids`: convergence, repairs, the history's
/// linearizability and every acknowledged unique write.
fn finish(
    config: &RunConfig,
    cluster: &ProcessCluster,
    ids: &[u64],
    shared: &Shared,
    first_term: u64,
    summary: &mut Summary,
    log: &mut dyn FnMut(&str),
) {
    let ids = ids.to_vec();
    let leader = cluster
        .wait_leader(&ids, Duration::from_secs(20))
        .expect("a leader after healing");
    // Convergence: every node applies everything the leader has committed.
    let commit = cluster
        .status(leader)
        .and_then(|s| s["commit"].as_u64())
        .unwrap_or(0);
    for &id in &ids {
        assert!(
            cluster.wait_applied(id, commit, Duration::from_secs(60)),
            "node {id} did not converge to commit {commit}; its log:\n{}",
            cluster.log_tail(id)
        );
    }
    // A healed cluster with a leader ends every repair within a heartbeat or two; a node
    // still repairing after this wait would stay out of elections for good.
    summary.still_repairing = wait_repairs_over(cluster, &ids, Duration::from_secs(60));
    for &id in &summary.still_repairing {
        log(&format!(
            "STILL REPAIRING after healing: node {id}; its log:\n{}",
            cluster.log_tail(id)
        ));
    }
    (summary.repairs_started, summary.repairs_finished) = count_repairs(cluster);
    summary.scrubber_finds = cluster
        .ids()
        .into_iter()
        .map(|id| {
            let text = std::fs::read_to_string(cluster.log_path(id)).unwrap_or_default();
            text.matches("found by the scrubber").count() as u64
        })
        .sum();
    let mut client = cluster.client_over(&ids, Duration::from_secs(10));
    // Final reads, recorded as operations so the checker sees the end state.
    let mut history = shared.history.lock().unwrap().clone();
    let phases = shared.epoch.elapsed().as_secs() / PHASE_SECONDS + 1;
    for key in (0..phases).flat_map(|p| (0..config.keys).map(move |k| format!("r{p}-{k}"))) {
        let invoke = now_ns(shared.epoch);
        let v = client
            .get(key.as_bytes())
            .expect("final read after healing");
        history.push(Operation {
            client: u64::MAX,
            key: key.into_bytes(),
            call: Call::Get,
            invoke_ns: invoke,
            complete_ns: Some(now_ns(shared.epoch)),
            ret: Ret::Value(v),
        });
    }
    let acked = shared.acked_unique.lock().unwrap().clone();
    summary.acknowledged_writes = acked.len() as u64;
    // Read every acknowledged unique key back, spread over all nodes and many readers (a
    // long run acknowledges millions).
    let readers = 16;
    let lost: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..readers)
            .map(|r| {
                let home = [ids[r % ids.len()]];
                let mut c = cluster.client_over(&home, Duration::from_secs(10));
                let mut fallback = cluster.client_over(&ids, Duration::from_secs(10));
                let mine: Vec<&String> = acked.iter().skip(r).step_by(readers).collect();
                scope.spawn(move || {
                    let mut lost = Vec::new();
                    for key in mine {
                        let found = match c.get(key.as_bytes()) {
                            Ok(v) => v.is_some(),
                            // That node is unhappy: ask through any node instead.
                            Err(_) => fallback.get(key.as_bytes()).ok().flatten().is_some(),
                        };
                        if !found {
                            lost.push(key.clone());
                        }
                    }
                    lost
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("reader thread"))
            .collect()
    });
    for key in &lost {
        log(&format!("LOST acknowledged write {key}"));
    }
    summary.lost_writes = lost.len() as u64;
    for op in &history {
        match op.ret {
            Ret::Unknown => summary.unknown += 1,
            Ret::Failed => summary.failed += 1,
            _ => summary.ok += 1,
        }
    }
    let last_term = ids
        .iter()
        .filter_map(|&i| cluster.status(i))
        .filter_map(|s| s["term"].as_u64())
        .max()
        .unwrap_or(first_term);
    summary.elections = last_term.saturating_sub(first_term);
    let mut successes = shared.write_successes.lock().unwrap().clone();
    successes.sort_unstable();
    let (gap, from) = successes
        .windows(2)
        .map(|w| (w[1] - w[0], w[0]))
        .max()
        .unwrap_or((0, 0));
    summary.longest_unavailable = Duration::from_nanos(gap);
    summary.longest_unavailable_from = Duration::from_nanos(from);
    match linearizability::check(&history) {
        linearizability::Outcome::Linearizable => {}
        linearizability::Outcome::Violation(v) => {
            summary.violations = 1;
            let _ = std::fs::create_dir_all(&config.report_dir);
            summary.report = linearizability::write_report(&config.report_dir, &history, &v).ok();
            log(&format!(
                "VIOLATION on key {}: {}",
                String::from_utf8_lossy(&v.key),
                v.explanation
            ));
        }
        linearizability::Outcome::GaveUp(g) => {
            summary.gave_up = true;
            log(&format!(
                "checker gave up on key {} ({} operations)",
                String::from_utf8_lossy(&g.key),
                g.operations
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::{Entry, EntryKind, HardState, LogIndex, NodeId, Term};
    use wal::testing::MemBackend;
    use wal::{Wal, WalOptions};

    fn options(backend: &MemBackend) -> WalOptions {
        WalOptions {
            segment_bytes: 1 << 20,
            repair: true,
            backend: Arc::new(backend.clone()),
            helper_threads: false,
        }
    }

    /// Every flip `BitRot` picks is found as damage (the log is cut and the node repairs),
    /// never read as a torn write, and the range's end is needed: a flip inside the last
    /// commit record does read as a torn tail. The log is a few small batches and a large
    /// last one, whose commit record (4 bytes per 512-byte piece) is longer than 128 bytes,
    /// so a fixed margin before the end of the written part would not exclude it. Each
    /// sampled flip (seeded) is opened on a fresh copy of the in-memory disk.
    #[test]
    fn every_flip_bit_rot_picks_reads_as_damage() {
        let dir = PathBuf::from("/wal");
        let backend = MemBackend::with_dir(&dir);
        let (mut wal, _) = Wal::open(&dir, options(&backend)).unwrap();
        wal.set_hard_state(HardState {
            term: Term(1),
            vote: NodeId(1),
            commit: LogIndex(0),
        })
        .unwrap();
        let mut index = 0u64;
        for batch in [1, 1, 3, 1, 200] {
            let entries: Vec<Entry> = (0..batch)
                .map(|_| {
                    index += 1;
                    Entry {
                        index: LogIndex(index),
                        term: Term(1),
                        kind: EntryKind::Normal,
                        data: (0..100).map(|i| (index as u8 ^ i) | 1).collect(),
                    }
                })
                .collect();
            wal.append(&entries).unwrap();
            wal.persist().unwrap();
        }
        drop(wal);
        let mut segments: Vec<PathBuf> = backend
            .file_names()
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "wal"))
            .collect();
        segments.sort();
        let segment = segments.remove(0);
        let bytes = backend.contents(&segment).unwrap();
        let range = rot_range(&bytes).expect("committed records");
        let last_nonzero = bytes.iter().rposition(|&b| b != 0).unwrap();
        assert!(
            last_nonzero - 128 > range.end,
            "the last commit record ({}..={last_nonzero}) is longer than 128 bytes",
            range.end
        );
        let opened_after = |at: usize, bit: u8| {
            let disk = backend.crash();
            disk.flip_bit(&segment, at * 8 + bit as usize);
            Wal::open(&dir, options(&disk)).unwrap().1
        };
        let mut rng = SmallRng::seed_from_u64(1);
        for _ in 0..1000 {
            let (at, bit) = pick_flip(&bytes, range.clone(), &mut rng);
            let recovered = opened_after(at, bit);
            assert!(
                recovered.repaired.is_some() && recovered.repairing,
                "offset {at} bit {bit}: {recovered:?}"
            );
            assert_eq!(recovered.torn_tail, None, "offset {at} bit {bit}");
        }
        let in_last_commit = opened_after(range.end + 40, 0);
        assert!(in_last_commit.torn_tail.is_some() && in_last_commit.repaired.is_none());
    }
}
