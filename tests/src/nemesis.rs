//! Fault testing against a real cluster, in the style of Jepsen and etcd's robustness tests:
//! concurrent clients run put / get / cas on a few keys (so operations conflict) while
//! nemeses kill, restart, pause, partition and degrade nodes; every operation is recorded
//! with its invoke and complete times and its outcome, and the history is checked for
//! linearizability. Separately, every client also writes keys nobody overwrites; each one
//! acknowledged must be readable at the end (lost acknowledged writes must be 0).

use crate::cluster::{ClusterOptions, ProcessCluster};
use crate::linearizability::{self, Call, Operation, Ret};
use raftd::client::{ClientConfig, ClientError};
use raftd::protocol::{FaultSpec, Op, Outcome, Write};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, HashMap};
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
}

impl Nemesis {
    /// Every nemesis.
    pub const ALL: [Nemesis; 9] = [
        Nemesis::Kill,
        Nemesis::Restart,
        Nemesis::Pause,
        Nemesis::IsolateLeader,
        Nemesis::Split,
        Nemesis::Bridge,
        Nemesis::Lossy,
        Nemesis::DiskFull,
        Nemesis::NetSplit,
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
    /// Fault windows applied.
    pub faults: Vec<String>,
    /// Where a violation's report was written.
    pub report: Option<PathBuf>,
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
}

impl Faulter {
    fn leader(&self) -> Option<u64> {
        self.cluster
            .wait_leader(&self.live(), Duration::from_millis(300))
    }

    fn live(&self) -> Vec<u64> {
        self.cluster
            .ids()
            .into_iter()
            .filter(|i| !self.paused.contains(i) && !self.stopped.contains(i))
            .collect()
    }

    fn victim(&mut self) -> u64 {
        let live = self.live();
        if self.rng.gen_bool(0.5) {
            if let Some(l) = self.leader() {
                return l;
            }
        }
        live[self.rng.gen_range(0..live.len())]
    }

    fn set_fault(&mut self, id: u64, spec: FaultSpec) {
        let mut c = self.cluster.client_over(&[id], Duration::from_secs(1));
        let _ = c.call_node(self.cluster.addr(id), Op::Fault(spec));
    }

    fn partition(&mut self, groups: &[Vec<u64>]) {
        // Each node is cut from every node not in a group it belongs to.
        for id in self.cluster.ids() {
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
        let n = self.cluster.ids().len();
        match nemesis {
            Nemesis::Kill => {
                if self.live().len() <= n / 2 + 1 {
                    return "kill skipped (no spare node)".into();
                }
                let v = self.victim();
                self.cluster.kill9(v);
                self.stopped.insert(v);
                format!("kill -9 node {v}")
            }
            Nemesis::Restart => {
                if self.live().len() <= n / 2 + 1 {
                    return "restart skipped (no spare node)".into();
                }
                let v = self.victim();
                self.cluster.terminate(v);
                self.cluster.spawn(v);
                format!("SIGTERM and restart node {v}")
            }
            Nemesis::Pause => {
                if self.live().len() <= n / 2 + 1 {
                    return "pause skipped (no spare node)".into();
                }
                let v = self.victim();
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
                    let others: Vec<u64> =
                        self.cluster.ids().into_iter().filter(|&i| i != l).collect();
                    self.partition(&[vec![l], others]);
                    format!("isolate leader {l}")
                }
                None => "isolate skipped (no leader)".into(),
            },
            Nemesis::Split => {
                let mut ids = self.cluster.ids();
                for k in (1..ids.len()).rev() {
                    ids.swap(k, self.rng.gen_range(0..=k));
                }
                let minority = ids.split_off(n / 2 + 1);
                self.partition(&[ids.clone(), minority.clone()]);
                format!("split {ids:?} | {minority:?}")
            }
            Nemesis::Bridge => {
                let mut ids = self.cluster.ids();
                for k in (1..ids.len()).rev() {
                    ids.swap(k, self.rng.gen_range(0..=k));
                }
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
                let v = self.tmpfs[self.rng.gen_range(0..self.tmpfs.len())];
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
                let mut ids = self.cluster.ids();
                for k in (1..ids.len()).rev() {
                    ids.swap(k, self.rng.gen_range(0..=k));
                }
                let minority = ids.split_off(n / 2 + 1);
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
                for id in self.cluster.ids() {
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
        }
    }

    /// Undoes every fault: continue paused nodes, restart stopped ones, clear fault layers,
    /// give full disks room again.
    fn heal(&mut self) {
        if std::mem::take(&mut self.net_cut) {
            self.cluster.net_partition(&[]);
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
            for id in self.cluster.ids() {
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
    for id in cluster.ids() {
        cluster.spawn(id);
    }
    let ids = cluster.ids();
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
    let client_config = ClientConfig {
        nodes: ids.iter().map(|&i| cluster.addr(i)).collect(),
        cluster_id: "raftd".into(),
        token: None,
        timeout: config.op_timeout,
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
    };
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
            applied.push(f.apply(nemesis));
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
    // Let the healed cluster serve for a moment before the clients stop.
    std::thread::sleep(Duration::from_secs(3));
    shared.stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    finish(config, &f.cluster, &shared, first_term, &mut summary, log);
    summary
}

fn finish(
    config: &RunConfig,
    cluster: &ProcessCluster,
    shared: &Shared,
    first_term: u64,
    summary: &mut Summary,
    log: &mut dyn FnMut(&str),
) {
    let ids = cluster.ids();
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
            cluster.wait_applied(id, commit, Duration::from_secs(30)),
            "node {id} did not converge to commit {commit}; its log:\n{}",
            cluster.log_tail(id)
        );
    }
    let mut client = cluster.client(Duration::from_secs(10));
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
                let ids = cluster.ids();
                let home = [ids[r % ids.len()]];
                let mut c = cluster.client_over(&home, Duration::from_secs(10));
                let mut fallback = cluster.client(Duration::from_secs(10));
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
    let gap = successes.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    summary.longest_unavailable = Duration::from_nanos(gap);
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
