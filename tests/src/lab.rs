//! The MIT 6.824/6.5840 Raft lab tester (parts A–D, 2024), re-created on the simulator as
//! `../shared/reference/lab-tester-spec.md` describes it: the same helpers with the same
//! timing (`check_one_leader`, `one`, `wait`, `n_committed`), the same scripted sleeps and
//! random choices, and the same numeric limits. Every failure is a panic whose message says
//! what the lab would have said.

use crate::sim::{Micros, Sim, SimConfig, Task, MS, SEC};
use raft::Term;
use rand::Rng;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

/// The lab's `RaftElectionTimeout`: the tester's unit for sleeps.
pub const ELECTION_TIMEOUT: Micros = SEC;
/// The per-test limit of virtual time.
pub const TEST_LIMIT: Micros = 120 * SEC;
/// Part D's limit on persisted raft state (`MAXLOGSIZE`).
pub const MAX_LOG_SIZE: usize = 2000;

/// What a finished scenario reports.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Hash of the whole run (equal for equal seeds).
    pub trace_hash: u64,
    /// Virtual time the scenario took.
    pub virtual_time: Micros,
    /// Simulator events processed.
    pub events: u64,
    /// Requests sent (the lab's RPC count).
    pub rpcs: u64,
    /// Highest index committed.
    pub committed: u64,
    /// ReadIndex reads served.
    pub reads: u64,
}

/// The lab's `config`: a simulated cluster plus the tester's helpers.
pub struct Tester {
    /// The simulated cluster.
    pub sim: Sim,
}

/// A lab command: an integer, as the lab's tests use.
pub fn cmd(x: u64) -> Vec<u8> {
    x.to_le_bytes().to_vec()
}

fn as_int(data: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(data.try_into().ok()?))
}

impl Tester {
    /// The lab's `make_config(n, unreliable, snapshot)`.
    pub fn new(n: usize, unreliable: bool, snapshot: bool, seed: u64) -> Tester {
        let mut config = SimConfig::lab(n, seed);
        config.snapshot_applier = snapshot;
        Tester::with_config(config, unreliable)
    }

    /// Like [`Tester::new`] with a custom simulator configuration.
    pub fn with_config(config: SimConfig, unreliable: bool) -> Tester {
        let mut sim = Sim::new(config);
        sim.faults.unreliable = unreliable;
        Tester { sim }
    }

    /// A fault-free cluster of `n` with the lab's settings, the core's changed by `tweak`.
    pub fn with_raft(n: usize, seed: u64, tweak: impl FnOnce(&mut raft::Config)) -> Tester {
        let mut config = SimConfig::lab(n, seed);
        tweak(&mut config.raft);
        Tester::with_config(config, false)
    }

    /// Number of servers.
    pub fn n(&self) -> usize {
        self.sim.n()
    }

    /// Random integer in `[0, bound)` from the sim's PRNG.
    pub fn rand(&mut self, bound: u64) -> u64 {
        self.sim.rng.gen_range(0..bound)
    }

    /// A random 31-bit command value, like Go's `rand.Int()` use in the tests.
    pub fn rand_cmd(&mut self) -> u64 {
        self.sim.rng.gen_range(0..1u64 << 31)
    }

    /// Sleeps in virtual time.
    pub fn sleep(&mut self, d: Micros) {
        self.sim.sleep(d);
    }

    /// `connect(i)`.
    pub fn connect(&mut self, i: usize) {
        self.sim.connect(i % self.n());
    }

    /// `disconnect(i)`.
    pub fn disconnect(&mut self, i: usize) {
        self.sim.disconnect(i % self.n());
    }

    /// `crash1(i)`.
    pub fn crash(&mut self, i: usize) {
        self.sim.crash(i % self.n());
    }

    /// `start1(i)`: crash if up, restart from the persister; left disconnected as the lab
    /// leaves it until `connect`.
    pub fn restart(&mut self, i: usize) {
        let i = i % self.n();
        self.sim.disconnect(i);
        self.sim.start(i);
    }

    /// `setunreliable`.
    pub fn set_unreliable(&mut self, on: bool) {
        self.sim.faults.unreliable = on;
    }

    /// `Start(cmd)` on server i.
    pub fn start(&mut self, i: usize, command: u64) -> (u64, Term, bool) {
        self.sim.propose(i % self.n(), cmd(command))
    }

    /// `checkOneLeader()`.
    pub fn check_one_leader(&mut self) -> usize {
        for _ in 0..10 {
            let ms = 450 + self.rand(100);
            self.sleep(ms * MS);
            let mut leaders: BTreeMap<Term, Vec<usize>> = BTreeMap::new();
            for i in 0..self.n() {
                if !self.sim.connected[i] {
                    continue;
                }
                if let Some((term, true)) = self.sim.state(i) {
                    leaders.entry(term).or_default().push(i);
                }
            }
            for (term, ids) in &leaders {
                assert!(ids.len() <= 1, "term {term} has {} (>1) leaders", ids.len());
            }
            if let Some((_, ids)) = leaders.iter().next_back() {
                return ids[0];
            }
        }
        panic!("expected one leader, got none");
    }

    /// `checkTerms()`.
    pub fn check_terms(&self) -> Term {
        let mut term = None;
        for i in 0..self.n() {
            if !self.sim.connected[i] {
                continue;
            }
            if let Some((t, _)) = self.sim.state(i) {
                match term {
                    None => term = Some(t),
                    Some(old) => assert_eq!(old, t, "servers disagree on term"),
                }
            }
        }
        term.expect("some server is connected")
    }

    /// `checkNoLeader()`.
    pub fn check_no_leader(&self) {
        for i in 0..self.n() {
            if self.sim.connected[i] {
                if let Some((_, true)) = self.sim.state(i) {
                    panic!(
                        "expected no leader among connected servers, but {} claims to be leader",
                        i + 1
                    );
                }
            }
        }
    }

    /// `nCommitted(index)` → (count, value as an int when it is one).
    pub fn n_committed(&self, index: u64) -> (usize, Option<Vec<u8>>) {
        let (count, value) = self.sim.n_committed(index);
        (count, value.map(|v| v.data.clone()))
    }

    /// `wait(index, n, startTerm)`: the committed int, or `None` for the lab's -1.
    pub fn wait(&mut self, index: u64, n: usize, start_term: Option<Term>) -> Option<u64> {
        let mut to = 10 * MS;
        for _ in 0..30 {
            let (count, _) = self.n_committed(index);
            if count >= n {
                break;
            }
            self.sleep(to);
            if to < SEC {
                to *= 2;
            }
            if let Some(st) = start_term {
                for i in 0..self.n() {
                    if let Some((t, _)) = self.sim.state(i) {
                        if t > st {
                            return None;
                        }
                    }
                }
            }
        }
        let (count, value) = self.n_committed(index);
        assert!(
            count >= n,
            "only {count} decided for index {index}; wanted {n}"
        );
        Some(as_int(&value.expect("counted")).expect("value is an int"))
    }

    /// `one(cmd, expectedServers, retry)`: the index it committed at.
    pub fn one(&mut self, command: u64, expected: usize, retry: bool) -> u64 {
        self.one_bytes(cmd(command), expected, retry)
    }

    /// `one` of a random command, retrying: an agreement of `expected` servers.
    pub fn one_random(&mut self, expected: usize) -> u64 {
        let command = self.rand_cmd();
        self.one(command, expected, true)
    }

    /// `one` for an arbitrary command.
    pub fn one_bytes(&mut self, command: Vec<u8>, expected: usize, retry: bool) -> u64 {
        let mut task = OneTask::new(&self.sim, command, expected, retry);
        while let Some(d) = task.step(&mut self.sim) {
            self.sim.sleep(d);
        }
        task.result
            .expect("finished")
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Asks each of `nodes` for a read: every one must be served within an election
    /// timeout (ReadIndex liveness, on a connected majority without faults).
    pub fn reads_are_served(&mut self, nodes: impl Iterator<Item = usize>) {
        let asked: Vec<(usize, Option<u64>)> = nodes.map(|i| (i, self.sim.read(i))).collect();
        self.sleep(ELECTION_TIMEOUT);
        for (i, context) in asked {
            assert!(
                context.is_some_and(|c| self.sim.read_served(c)),
                "a read asked of node {} was not served within {} ms",
                i + 1,
                ELECTION_TIMEOUT / MS
            );
        }
    }

    /// Per-server dispatched request counts, summed (TestCount's `rpcCount`).
    pub fn rpc_count_sum(&self) -> u64 {
        self.sim.counters.dispatched.iter().sum()
    }

    /// `end()`/`cleanup()`: the time check, then the checkpoint checkers.
    pub fn end(mut self) -> Outcome {
        assert!(
            self.sim.now() <= TEST_LIMIT,
            "test took longer than 120 seconds ({} s of virtual time)",
            self.sim.now() / SEC
        );
        self.sim.check_all();
        self.sim.finished = true;
        Outcome {
            trace_hash: self.sim.trace_hash(),
            virtual_time: self.sim.now(),
            events: self.sim.events,
            rpcs: self.sim.counters.total_requests,
            committed: self.sim.applier.max_index,
            reads: self.sim.read_counts.served,
        }
    }
}

/// The state machine behind `one()`, so it can also run as a background task (the
/// concurrent agreements of TestUnreliableAgree).
pub struct OneTask {
    command: Vec<u8>,
    expected: usize,
    retry: bool,
    began: Micros,
    next_server: usize,
    /// (index, time of the Start that returned it).
    polling: Option<(u64, Micros)>,
    /// Ok(index) or Err(message) once finished.
    pub result: Option<Result<u64, String>>,
}

impl OneTask {
    /// A new agreement attempt starting now.
    pub fn new(sim: &Sim, command: Vec<u8>, expected: usize, retry: bool) -> OneTask {
        OneTask {
            command,
            expected,
            retry,
            began: sim.now(),
            next_server: 0,
            polling: None,
            result: None,
        }
    }

    fn finish(&mut self, r: Result<u64, String>) -> Option<Micros> {
        self.result = Some(r);
        None
    }
}

impl Task for OneTask {
    fn step(&mut self, sim: &mut Sim) -> Option<Micros> {
        loop {
            if sim.finished {
                return self.finish(Err("test finished".into()));
            }
            if sim.now() - self.began >= 10 * SEC {
                return self.finish(Err(format!(
                    "one({:?}) failed to reach agreement",
                    as_int(&self.command)
                )));
            }
            match self.polling {
                None => {
                    let n = sim.n();
                    let mut index = None;
                    for _ in 0..n {
                        self.next_server = (self.next_server + 1) % n;
                        let s = self.next_server;
                        if sim.connected[s] && sim.alive(s) {
                            let (i, _, ok) = sim.propose(s, self.command.clone());
                            if ok {
                                index = Some(i);
                                break;
                            }
                        }
                    }
                    match index {
                        Some(i) => self.polling = Some((i, sim.now())),
                        None => return Some(50 * MS),
                    }
                }
                Some((index, since)) => {
                    let (count, value) = sim.n_committed(index);
                    if count > 0
                        && count >= self.expected
                        && value.is_some_and(|v| v.data == self.command)
                    {
                        return self.finish(Ok(index));
                    }
                    if sim.now() - since >= 2 * SEC {
                        if !self.retry {
                            return self.finish(Err(format!(
                                "one({:?}) failed to reach agreement",
                                as_int(&self.command)
                            )));
                        }
                        self.polling = None;
                        continue;
                    }
                    return Some(20 * MS);
                }
            }
        }
    }
}

/// A background `one()` whose failure fails the test, like the Go goroutines' `t.Fatalf`.
/// `running` counts the unfinished ones (the Go test's WaitGroup).
struct BackgroundOne(OneTask, Rc<RefCell<usize>>);

impl Task for BackgroundOne {
    fn step(&mut self, sim: &mut Sim) -> Option<Micros> {
        let d = self.0.step(sim);
        if let Some(Err(e)) = &self.0.result {
            if !sim.finished {
                panic!("{e}");
            }
        }
        if d.is_none() {
            *self.1.borrow_mut() -= 1;
        }
        d
    }
}

// ===== Part A: leader election =====

/// A1 TestInitialElection.
pub fn a1_initial_election(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, false, seed);
    t.check_one_leader();
    t.sleep(50 * MS);
    let term1 = t.check_terms();
    assert!(
        term1 >= Term(1),
        "term is {term1}, but should be at least 1"
    );
    t.sleep(2 * ELECTION_TIMEOUT);
    let term2 = t.check_terms();
    // The lab only warns here; our scenario `stable_leader` makes it a failure.
    if term1 != term2 {
        log::warn!("term changed even though there were no failures");
    }
    t.check_one_leader();
    t.end()
}

/// A2 TestReElection.
pub fn a2_re_election(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, false, seed);
    let leader1 = t.check_one_leader();
    t.disconnect(leader1);
    t.check_one_leader();
    t.connect(leader1);
    let leader2 = t.check_one_leader();
    t.disconnect(leader2);
    t.disconnect(leader2 + 1);
    t.sleep(2 * ELECTION_TIMEOUT);
    t.check_no_leader();
    t.connect(leader2 + 1);
    t.check_one_leader();
    t.connect(leader2);
    t.check_one_leader();
    t.end()
}

/// A3 TestManyElections.
pub fn a3_many_elections(seed: u64) -> Outcome {
    let mut t = Tester::new(7, false, false, seed);
    t.check_one_leader();
    for _ in 1..10 {
        let picks: Vec<usize> = (0..3).map(|_| t.rand(7) as usize).collect();
        for &p in &picks {
            t.disconnect(p);
        }
        t.check_one_leader();
        for &p in &picks {
            t.connect(p);
        }
    }
    t.check_one_leader();
    t.end()
}

// ===== Part B: log replication =====

/// B1 TestBasicAgree.
pub fn b1_basic_agree(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, false, seed);
    for index in 1..4 {
        let (nd, _) = t.n_committed(index);
        assert_eq!(nd, 0, "some have committed before Start()");
        let xindex = t.one(index * 100, 3, false);
        assert_eq!(xindex, index, "got index {xindex} but expected {index}");
    }
    t.end()
}

/// B2 TestRPCBytes: each command crosses the network about once per follower. Our byte
/// count is our own encoding's, exactly as the network would carry it.
pub fn b2_rpc_bytes(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, false, seed);
    t.one(99, 3, false);
    let bytes0 = t.sim.counters.bytes;
    let mut sent = 0u64;
    for index in 2..12 {
        let s: Vec<u8> = (0..5000).map(|_| b'a' + t.rand(26) as u8).collect();
        let xindex = t.one_bytes(s, 3, false);
        assert_eq!(xindex, index, "got index {xindex} but expected {index}");
        sent += 5000;
    }
    let got = t.sim.counters.bytes - bytes0;
    let expected = 3 * sent;
    assert!(
        got <= expected + 50_000,
        "too many RPC bytes; got {got}, expected {expected}"
    );
    t.end()
}

/// B3 TestFollowerFailure.
pub fn b3_follower_failure(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, false, seed);
    t.one(101, 3, false);
    let leader1 = t.check_one_leader();
    t.disconnect(leader1 + 1);
    t.one(102, 2, false);
    t.sleep(ELECTION_TIMEOUT);
    t.one(103, 2, false);
    let leader2 = t.check_one_leader();
    t.disconnect(leader2 + 1);
    t.disconnect(leader2 + 2);
    let (index, _, ok) = t.start(leader2, 104);
    assert!(ok, "leader rejected Start()");
    assert_eq!(index, 4, "expected index 4, got {index}");
    t.sleep(2 * ELECTION_TIMEOUT);
    let (n, _) = t.n_committed(index);
    assert_eq!(n, 0, "{n} committed but no majority");
    t.end()
}

/// B4 TestLeaderFailure.
pub fn b4_leader_failure(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, false, seed);
    t.one(101, 3, false);
    let leader1 = t.check_one_leader();
    t.disconnect(leader1);
    t.one(102, 2, false);
    t.sleep(ELECTION_TIMEOUT);
    t.one(103, 2, false);
    let leader2 = t.check_one_leader();
    t.disconnect(leader2);
    for i in 0..3 {
        t.start(i, 104);
    }
    t.sleep(2 * ELECTION_TIMEOUT);
    let (n, _) = t.n_committed(4);
    assert_eq!(n, 0, "{n} committed but no majority");
    t.end()
}

/// B5 TestFailAgree.
pub fn b5_fail_agree(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, false, seed);
    t.one(101, 3, false);
    let leader = t.check_one_leader();
    t.disconnect(leader + 1);
    t.one(102, 2, false);
    t.one(103, 2, false);
    t.sleep(ELECTION_TIMEOUT);
    t.one(104, 2, false);
    t.one(105, 2, false);
    t.connect(leader + 1);
    t.one(106, 3, true);
    t.sleep(ELECTION_TIMEOUT);
    t.one(107, 3, true);
    t.end()
}

/// B6 TestFailNoAgree.
pub fn b6_fail_no_agree(seed: u64) -> Outcome {
    let mut t = Tester::new(5, false, false, seed);
    t.one(10, 5, false);
    let leader = t.check_one_leader();
    for k in 1..4 {
        t.disconnect(leader + k);
    }
    let (index, _, ok) = t.start(leader, 20);
    assert!(ok, "leader rejected Start()");
    assert_eq!(index, 2, "expected index 2, got {index}");
    t.sleep(2 * ELECTION_TIMEOUT);
    let (n, _) = t.n_committed(index);
    assert_eq!(n, 0, "{n} committed but no majority");
    for k in 1..4 {
        t.connect(leader + k);
    }
    let leader2 = t.check_one_leader();
    let (index2, _, ok2) = t.start(leader2, 30);
    assert!(ok2, "leader2 rejected Start()");
    assert!((2..=3).contains(&index2), "unexpected index {index2}");
    t.one(1000, 5, true);
    t.end()
}

/// B7 TestConcurrentStarts.
pub fn b7_concurrent_starts(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, false, seed);
    let mut success = false;
    'tries: for attempt in 0..5 {
        if attempt > 0 {
            t.sleep(3 * SEC);
        }
        let leader = t.check_one_leader();
        let (_, term, ok) = t.start(leader, 1);
        if !ok {
            continue;
        }
        let mut indices = Vec::new();
        for i in 0..5 {
            let (index, term1, ok) = t.start(leader, 100 + i);
            if ok && term1 == term {
                indices.push(index);
            }
        }
        for j in 0..3 {
            if let Some((t1, _)) = t.sim.state(j) {
                if t1 != term {
                    continue 'tries;
                }
            }
        }
        let mut cmds = Vec::new();
        for index in indices {
            match t.wait(index, 3, Some(term)) {
                Some(c) => cmds.push(c),
                None => continue 'tries,
            }
        }
        for i in 0..5 {
            assert!(
                cmds.contains(&(100 + i)),
                "cmd {} missing in {cmds:?}",
                100 + i
            );
        }
        success = true;
        break;
    }
    assert!(success, "term changed too often");
    t.end()
}

/// B8 TestRejoin.
pub fn b8_rejoin(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, false, seed);
    t.one(101, 3, true);
    let leader1 = t.check_one_leader();
    t.disconnect(leader1);
    t.start(leader1, 102);
    t.start(leader1, 103);
    t.start(leader1, 104);
    t.one(103, 2, true);
    let leader2 = t.check_one_leader();
    t.disconnect(leader2);
    t.connect(leader1);
    t.one(104, 2, true);
    t.connect(leader2);
    t.one(105, 3, true);
    t.end()
}

/// B9 TestBackup.
pub fn b9_backup(seed: u64) -> Outcome {
    let mut t = Tester::new(5, false, false, seed);
    let c = t.rand_cmd();
    t.one(c, 5, true);
    let leader1 = t.check_one_leader();
    for k in 2..5 {
        t.disconnect(leader1 + k);
    }
    for _ in 0..50 {
        let c = t.rand_cmd();
        t.start(leader1, c);
    }
    t.sleep(ELECTION_TIMEOUT / 2);
    t.disconnect(leader1);
    t.disconnect(leader1 + 1);
    for k in 2..5 {
        t.connect(leader1 + k);
    }
    for _ in 0..50 {
        let c = t.rand_cmd();
        t.one(c, 3, true);
    }
    let leader2 = t.check_one_leader();
    let mut other = (leader1 + 2) % 5;
    if leader2 == other {
        other = (leader2 + 1) % 5;
    }
    t.disconnect(other);
    for _ in 0..50 {
        let c = t.rand_cmd();
        t.start(leader2, c);
    }
    t.sleep(ELECTION_TIMEOUT / 2);
    for i in 0..5 {
        t.disconnect(i);
    }
    t.connect(leader1);
    t.connect(leader1 + 1);
    t.connect(other);
    for _ in 0..50 {
        let c = t.rand_cmd();
        t.one(c, 3, true);
    }
    for i in 0..5 {
        t.connect(i);
    }
    let c = t.rand_cmd();
    t.one(c, 5, true);
    t.end()
}

/// B10 TestCount: 1 ≤ election RPCs ≤ 30; ≤ 42 for 10 agreements; ≤ 60 per idle second.
pub fn b10_count(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, false, seed);
    t.check_one_leader();
    let total1 = t.rpc_count_sum();
    assert!(
        (1..=30).contains(&total1),
        "too many or few RPCs ({total1}) to elect initial leader"
    );
    let mut success = false;
    let mut total2 = 0;
    'tries: for attempt in 0..5 {
        if attempt > 0 {
            t.sleep(3 * SEC);
        }
        let leader = t.check_one_leader();
        let total1 = t.rpc_count_sum();
        let iters = 10;
        let (starti, term, ok) = t.start(leader, 1);
        if !ok {
            continue;
        }
        let mut cmds = Vec::new();
        for i in 1..iters + 2 {
            let x = t.rand_cmd();
            cmds.push(x);
            let (index1, term1, ok) = t.start(leader, x);
            if term1 != term || !ok {
                continue 'tries;
            }
            assert_eq!(starti + i, index1, "Start() failed");
        }
        for i in 1..iters + 1 {
            match t.wait(starti + i, 3, Some(term)) {
                None => continue 'tries,
                Some(c) => assert_eq!(c, cmds[i as usize - 1], "wrong value {c} committed"),
            }
        }
        for j in 0..3 {
            if let Some((t1, _)) = t.sim.state(j) {
                if t1 != term {
                    continue 'tries;
                }
            }
        }
        total2 = t.rpc_count_sum();
        let limit = (iters + 1 + 3) * 3;
        assert!(
            total2 - total1 <= limit,
            "too many RPCs ({}) for {iters} entries",
            total2 - total1
        );
        success = true;
        break;
    }
    assert!(success, "term changed too often");
    t.sleep(ELECTION_TIMEOUT);
    let total3 = t.rpc_count_sum();
    assert!(
        total3 - total2 <= 3 * 20,
        "too many RPCs ({}) for 1 second of idleness",
        total3 - total2
    );
    t.end()
}

// ===== Part C: persistence =====

/// C1 TestPersist1.
pub fn c1_persist1(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, false, seed);
    t.one(11, 3, true);
    for i in 0..3 {
        t.restart(i);
    }
    for i in 0..3 {
        t.disconnect(i);
        t.connect(i);
    }
    t.one(12, 3, true);
    let leader1 = t.check_one_leader();
    t.disconnect(leader1);
    t.restart(leader1);
    t.connect(leader1);
    t.one(13, 3, true);
    let leader2 = t.check_one_leader();
    t.disconnect(leader2);
    t.one(14, 2, true);
    t.restart(leader2);
    t.connect(leader2);
    t.wait(4, 3, None);
    let i3 = (t.check_one_leader() + 1) % 3;
    t.disconnect(i3);
    t.one(15, 2, true);
    t.restart(i3);
    t.connect(i3);
    t.one(16, 3, true);
    t.end()
}

/// C2 TestPersist2.
pub fn c2_persist2(seed: u64) -> Outcome {
    let mut t = Tester::new(5, false, false, seed);
    let mut index = 1;
    for _ in 0..5 {
        t.one(10 + index, 5, true);
        index += 1;
        let leader1 = t.check_one_leader();
        t.disconnect(leader1 + 1);
        t.disconnect(leader1 + 2);
        t.one(10 + index, 3, true);
        index += 1;
        t.disconnect(leader1);
        t.disconnect(leader1 + 3);
        t.disconnect(leader1 + 4);
        t.restart(leader1 + 1);
        t.restart(leader1 + 2);
        t.connect(leader1 + 1);
        t.connect(leader1 + 2);
        t.sleep(ELECTION_TIMEOUT);
        t.restart(leader1 + 3);
        t.connect(leader1 + 3);
        t.one(10 + index, 3, true);
        index += 1;
        t.connect(leader1 + 4);
        t.connect(leader1);
    }
    t.one(1000, 5, true);
    t.end()
}

/// C3 TestPersist3.
pub fn c3_persist3(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, false, seed);
    t.one(101, 3, true);
    let leader = t.check_one_leader();
    t.disconnect(leader + 2);
    t.one(102, 2, true);
    t.crash(leader);
    t.crash(leader + 1);
    t.connect(leader + 2);
    t.restart(leader);
    t.connect(leader);
    t.one(103, 2, true);
    t.restart(leader + 1);
    t.connect(leader + 1);
    t.one(104, 3, true);
    t.end()
}

/// C4 TestFigure8.
pub fn c4_figure8(seed: u64) -> Outcome {
    let mut t = Tester::new(5, false, false, seed);
    let c = t.rand_cmd();
    t.one(c, 1, true);
    let mut nup = 5;
    for _ in 0..1000 {
        let mut leader = None;
        for i in 0..5 {
            if t.sim.alive(i) {
                let c = t.rand_cmd();
                let (_, _, ok) = t.start(i, c);
                if ok {
                    leader = Some(i);
                }
            }
        }
        let ms = if t.rand(1000) < 100 {
            t.rand(500)
        } else {
            t.rand(13)
        };
        t.sleep(ms * MS);
        if let Some(l) = leader {
            t.crash(l);
            nup -= 1;
        }
        if nup < 3 {
            let s = t.rand(5) as usize;
            if !t.sim.alive(s) {
                t.restart(s);
                t.connect(s);
                nup += 1;
            }
        }
    }
    for i in 0..5 {
        if !t.sim.alive(i) {
            t.restart(i);
            t.connect(i);
        }
    }
    let c = t.rand_cmd();
    t.one(c, 5, true);
    t.end()
}

/// C5 TestUnreliableAgree.
pub fn c5_unreliable_agree(seed: u64) -> Outcome {
    let mut t = Tester::new(5, true, false, seed);
    let running = Rc::new(RefCell::new(0usize));
    for iters in 1..50u64 {
        for j in 0..4 {
            let task = OneTask::new(&t.sim, cmd(100 * iters + j), 1, true);
            *running.borrow_mut() += 1;
            t.sim.spawn(Box::new(BackgroundOne(task, running.clone())));
        }
        t.one(iters, 1, true);
    }
    t.set_unreliable(false);
    while *running.borrow() > 0 {
        t.sleep(10 * MS);
    }
    t.one(100, 5, true);
    t.end()
}

/// C6 TestFigure8Unreliable.
pub fn c6_figure8_unreliable(seed: u64) -> Outcome {
    let mut t = Tester::new(5, true, false, seed);
    let c = t.rand(10000);
    t.one(c, 1, true);
    let mut nup = 5;
    for iters in 0..1000 {
        if iters == 200 {
            t.sim.faults.long_reordering = true;
        }
        let mut leader = None;
        for i in 0..5 {
            let c = t.rand(10000);
            let (_, _, ok) = t.start(i, c);
            if ok && t.sim.connected[i] {
                leader = Some(i);
            }
        }
        let ms = if t.rand(1000) < 100 {
            t.rand(500)
        } else {
            t.rand(13)
        };
        t.sleep(ms * MS);
        if let Some(l) = leader {
            if t.rand(1000) < 500 {
                t.disconnect(l);
                nup -= 1;
            }
        }
        if nup < 3 {
            let s = t.rand(5) as usize;
            if !t.sim.connected[s] {
                t.connect(s);
                nup += 1;
            }
        }
    }
    for i in 0..5 {
        t.connect(i);
    }
    let c = t.rand(10000);
    t.one(c, 5, true);
    t.end()
}

/// One churn client (C7/C8): Start on every live server, then watch for the commit.
struct ChurnClient {
    me: u64,
    stop: Rc<RefCell<bool>>,
    seen: Rc<RefCell<Vec<u64>>>,
    /// (index, value, checks done so far).
    watching: Option<(u64, u64, usize)>,
}

impl Task for ChurnClient {
    fn step(&mut self, sim: &mut Sim) -> Option<Micros> {
        const GAPS: [Micros; 5] = [10 * MS, 20 * MS, 50 * MS, 100 * MS, 200 * MS];
        if let Some((index, x, checks)) = self.watching {
            let (count, value) = sim.n_committed(index);
            if count > 0 {
                let v = as_int(&value.expect("counted").data).expect("value is an int");
                if v == x {
                    self.seen.borrow_mut().push(x);
                }
                self.watching = None;
            } else if checks < GAPS.len() {
                self.watching = Some((index, x, checks + 1));
                return Some(GAPS[checks]);
            } else {
                self.watching = None;
            }
        }
        if *self.stop.borrow() {
            return None;
        }
        let x = sim.rng.gen_range(0..1u64 << 31);
        let mut accepted = None;
        for i in 0..sim.n() {
            if sim.alive(i) {
                let (index, _, ok) = sim.propose(i, cmd(x));
                if ok {
                    accepted = Some(index);
                }
            }
        }
        match accepted {
            Some(index) => {
                self.watching = Some((index, x, 0));
                Some(0)
            }
            None => Some((79 + 17 * self.me) * MS),
        }
    }
}

fn churn(seed: u64, unreliable: bool) -> Outcome {
    let mut t = Tester::new(5, unreliable, false, seed);
    let stop = Rc::new(RefCell::new(false));
    let mut lists = Vec::new();
    for me in 0..3 {
        let seen = Rc::new(RefCell::new(Vec::new()));
        lists.push(seen.clone());
        t.sim.spawn(Box::new(ChurnClient {
            me,
            stop: stop.clone(),
            seen,
            watching: None,
        }));
    }
    for _ in 0..20 {
        if t.rand(1000) < 200 {
            let i = t.rand(5) as usize;
            t.disconnect(i);
        }
        if t.rand(1000) < 500 {
            let i = t.rand(5) as usize;
            if !t.sim.alive(i) {
                t.restart(i);
            }
            t.connect(i);
        }
        if t.rand(1000) < 200 {
            let i = t.rand(5) as usize;
            if t.sim.alive(i) {
                t.crash(i);
            }
        }
        t.sleep(ELECTION_TIMEOUT * 7 / 10);
    }
    t.sleep(ELECTION_TIMEOUT);
    t.set_unreliable(false);
    for i in 0..5 {
        if !t.sim.alive(i) {
            t.restart(i);
        }
        t.connect(i);
    }
    *stop.borrow_mut() = true;
    t.sleep(ELECTION_TIMEOUT);
    let c = t.rand_cmd();
    let last = t.one(c, 5, true);
    let mut really = Vec::new();
    for index in 1..=last {
        let v = t.wait(index, 5, None).expect("no start term given");
        really.push(v);
    }
    for list in lists {
        for v in list.borrow().iter() {
            assert!(really.contains(v), "didn't find a value {v}");
        }
    }
    t.end()
}

/// C7 TestReliableChurn.
pub fn c7_reliable_churn(seed: u64) -> Outcome {
    churn(seed, false)
}

/// C8 TestUnreliableChurn.
pub fn c8_unreliable_churn(seed: u64) -> Outcome {
    churn(seed, true)
}

// ===== Part D: snapshots =====

fn snapcommon(seed: u64, disconnect: bool, reliable: bool, crash: bool) -> Outcome {
    let iters = 30;
    let mut t = Tester::new(3, !reliable, true, seed);
    let c = t.rand_cmd();
    t.one(c, 3, true);
    let mut leader1 = t.check_one_leader();
    for i in 0..iters {
        let (mut victim, mut sender) = ((leader1 + 1) % 3, leader1);
        if i % 3 == 1 {
            sender = (leader1 + 1) % 3;
            victim = leader1;
        }
        if disconnect {
            t.disconnect(victim);
            let c = t.rand_cmd();
            t.one(c, 2, true);
        }
        if crash {
            t.crash(victim);
            let c = t.rand_cmd();
            t.one(c, 2, true);
        }
        let nn = 5 + t.rand(10);
        for _ in 0..nn {
            let c = t.rand_cmd();
            t.start(sender, c);
        }
        let c = t.rand_cmd();
        if !disconnect && !crash {
            t.one(c, 3, true);
        } else {
            t.one(c, 2, true);
        }
        let size = t.sim.log_size();
        assert!(size < MAX_LOG_SIZE, "Log size too large ({size} bytes)");
        if disconnect {
            t.connect(victim);
            let c = t.rand_cmd();
            t.one(c, 3, true);
            leader1 = t.check_one_leader();
        }
        if crash {
            t.restart(victim);
            t.connect(victim);
            let c = t.rand_cmd();
            t.one(c, 3, true);
            leader1 = t.check_one_leader();
        }
    }
    t.end()
}

/// D1 TestSnapshotBasic.
pub fn d1_snapshot_basic(seed: u64) -> Outcome {
    snapcommon(seed, false, true, false)
}

/// D2 TestSnapshotInstall.
pub fn d2_snapshot_install(seed: u64) -> Outcome {
    snapcommon(seed, true, true, false)
}

/// D3 TestSnapshotInstallUnreliable.
pub fn d3_snapshot_install_unreliable(seed: u64) -> Outcome {
    snapcommon(seed, true, false, false)
}

/// D4 TestSnapshotInstallCrash.
pub fn d4_snapshot_install_crash(seed: u64) -> Outcome {
    snapcommon(seed, false, true, true)
}

/// D5 TestSnapshotInstallUnCrash.
pub fn d5_snapshot_install_uncrash(seed: u64) -> Outcome {
    snapcommon(seed, false, false, true)
}

/// D6 TestSnapshotAllCrash.
pub fn d6_snapshot_all_crash(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, true, seed);
    let c = t.rand_cmd();
    t.one(c, 3, true);
    for _ in 0..5 {
        let nn = 5 + t.rand(10);
        for _ in 0..nn {
            let c = t.rand_cmd();
            t.one(c, 3, true);
        }
        let c = t.rand_cmd();
        let index1 = t.one(c, 3, true);
        for i in 0..3 {
            t.crash(i);
        }
        for i in 0..3 {
            t.restart(i);
            t.connect(i);
        }
        let c = t.rand_cmd();
        let index2 = t.one(c, 3, true);
        assert!(index2 > index1, "index decreased from {index1} to {index2}");
    }
    t.end()
}

/// D7 TestSnapshotInit.
pub fn d7_snapshot_init(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, true, seed);
    let c = t.rand_cmd();
    t.one(c, 3, true);
    for _ in 0..11 {
        let c = t.rand_cmd();
        t.one(c, 3, true);
    }
    for _ in 0..2 {
        for i in 0..3 {
            t.crash(i);
        }
        for i in 0..3 {
            t.restart(i);
            t.connect(i);
        }
        let c = t.rand_cmd();
        t.one(c, 3, true);
    }
    t.end()
}

// ===== Scenarios of our own =====

/// No faults for 10 s: the first leader keeps its term (the lab only warns about this).
/// Fails if followers do not reset their election timer on heartbeats.
pub fn stable_leader(seed: u64) -> Outcome {
    let mut t = Tester::new(3, false, false, seed);
    t.check_one_leader();
    t.sleep(50 * MS);
    let term1 = t.check_terms();
    for _ in 0..10 {
        t.sleep(ELECTION_TIMEOUT);
        let term2 = t.check_terms();
        assert_eq!(
            term1, term2,
            "term changed even though there were no failures"
        );
    }
    t.check_one_leader();
    t.end()
}

/// Pre-vote at work: a follower partitioned for a long time rejoins, and the healthy
/// leader keeps its leadership and its term.
pub fn prevote_rejoin(seed: u64) -> Outcome {
    let mut t = Tester::new(5, false, false, seed);
    let c = t.rand_cmd();
    t.one(c, 5, true);
    let leader = t.check_one_leader();
    let term = t.check_terms();
    let victim = (leader + 1) % 5;
    t.disconnect(victim);
    // Many election timeouts pass; without pre-vote the victim's term would climb.
    t.sleep(10 * ELECTION_TIMEOUT);
    let c = t.rand_cmd();
    t.one(c, 4, true);
    t.connect(victim);
    let c = t.rand_cmd();
    t.one(c, 5, true);
    t.sleep(2 * ELECTION_TIMEOUT);
    assert_eq!(
        t.check_one_leader(),
        leader,
        "the rejoining node unseated the leader"
    );
    assert_eq!(t.check_terms(), term, "the rejoining node raised the term");
    t.end()
}

/// Without pre-vote, candidates whose logs are too old to win keep raising the term. The
/// one node that can win must still time out and win: learning a higher term must not
/// restart its election timer (Figure 2). Seven nodes; three stale ones and the single
/// up-to-date survivor form the only quorum.
pub fn stale_candidates(seed: u64) -> Outcome {
    let mut config = SimConfig::lab(7, seed);
    config.raft.pre_vote = false;
    config.raft.check_quorum = false;
    let mut t = Tester::with_config(config, false);
    let c = t.rand_cmd();
    t.one(c, 7, true);
    let leader = t.check_one_leader();
    let stale: Vec<usize> = (1..4).map(|k| (leader + k) % 7).collect();
    for &s in &stale {
        t.disconnect(s);
    }
    for _ in 0..3 {
        let c = t.rand_cmd();
        t.one(c, 4, true);
    }
    // Only `survivor` still holds the newest entries among the nodes left running.
    t.crash(leader);
    t.crash(leader + 5);
    t.crash(leader + 6);
    t.sleep(3 * ELECTION_TIMEOUT);
    for &s in &stale {
        t.connect(s);
    }
    let c = t.rand_cmd();
    t.one(c, 4, true);
    t.end()
}

/// A vote survives a restart (Figure 2: votedFor is persistent state). Two nodes that
/// cannot hear each other campaign in turn; the third decides. Right after its vote elects
/// the first, the decider restarts from its disk and stops hearing that leader, so when the
/// second asks in the same term only the durable vote stands between it and a second leader
/// of that term (the election-safety check). Several rounds, since the decider sometimes
/// times out first and simply wins.
pub fn vote_survives_restart(seed: u64) -> Outcome {
    // With pre-vote the second candidate could not reach the first one's term at all.
    let mut t = Tester::with_raft(3, seed, |raft| raft.pre_vote = false);
    for _ in 0..5 {
        let decider = t.rand(3) as usize;
        let candidates = [(decider + 1) % 3, (decider + 2) % 3];
        block_only(
            &mut t,
            &[
                (candidates[0], candidates[1]),
                (candidates[1], candidates[0]),
            ],
        );
        for i in 0..3 {
            t.sim.start(i);
        }
        let term = (0..3)
            .filter_map(|i| t.sim.state(i))
            .map(|(term, _)| term)
            .max();
        let mut restarted = false;
        let until = t.sim.now() + 2 * ELECTION_TIMEOUT;
        while t.sim.now() < until {
            t.sleep(MS);
            let elected = candidates.into_iter().find(|&c| {
                t.sim
                    .state(c)
                    .is_some_and(|(tc, leads)| leads && Some(tc) > term)
            });
            if let (Some(leader), false) = (elected, restarted) {
                restarted = true;
                t.sim.blocked[leader][decider] = true;
                t.sim.start(decider);
            }
        }
        block_only(&mut t, &[]);
        t.one_random(3);
    }
    t.end()
}

/// Pre-vote honours a live leader's lease (thesis §9.6). A follower cut off from the leader
/// alone still reaches the other followers, and its log is as long as theirs (nothing is
/// written meanwhile), so only the lease makes them refuse its pre-votes: they hear from
/// the leader. Had they granted, it would raise its term and depose the leader once the
/// link heals. The leader keeps its leadership and its term throughout.
pub fn prevote_lease(seed: u64) -> Outcome {
    let mut t = Tester::new(5, false, false, seed);
    t.one_random(5);
    let leader = t.check_one_leader();
    let term = t.check_terms();
    let victim = (leader + 1 + t.rand(4) as usize) % 5;
    block_only(&mut t, &[(leader, victim), (victim, leader)]);
    for phase in ["cut off from the leader", "back"] {
        for _ in 0..4 {
            t.sleep(ELECTION_TIMEOUT);
            assert_eq!(
                t.sim.state(leader),
                Some((term, true)),
                "with node {} {phase}, leader {} no longer leads in term {term}",
                victim + 1,
                leader + 1
            );
        }
        block_only(&mut t, &[]);
    }
    t.one_random(5);
    assert_eq!(t.check_terms(), term, "the term changed");
    t.end()
}

/// A leader steps down when an answer carries a higher term (§5.1), the only way back
/// for a node that returns with a higher term while the others hold a lease. Without
/// pre-vote, a follower cut off for a while raises its term; the others, hearing from the
/// leader, ignore its vote requests, and it refuses the leader's appends as stale. Once
/// the leader steps down on its answer, the cluster elects again and the node catches up;
/// a leader that kept going would leave it stranded, and the last agreement needs it.
pub fn higher_term_answer_deposes(seed: u64) -> Outcome {
    let mut t = Tester::with_raft(3, seed, |raft| raft.pre_vote = false);
    t.one_random(3);
    let leader = t.check_one_leader();
    let victim = (leader + 1 + t.rand(2) as usize) % 3;
    t.disconnect(victim);
    t.sleep(4 * ELECTION_TIMEOUT);
    for _ in 0..3 {
        t.one_random(2);
    }
    t.connect(victim);
    t.one_random(3);
    t.end()
}

/// ReadIndex across a leader change (thesis §6.4). A leader cut off from the rest, with
/// check-quorum off so it goes on believing it leads, is asked for reads while the
/// majority elects a new leader and commits: it must confirm none, lacking a quorum (the
/// simulator fails any read confirmed below what was committed when it was asked). Reads
/// asked of every node of the majority are confirmed and served.
pub fn reads_across_leader_change(seed: u64) -> Outcome {
    let mut t = Tester::with_raft(5, seed, |raft| raft.check_quorum = false);
    t.one_random(5);
    let old = t.check_one_leader();
    t.disconnect(old);
    assert!(t.sim.read(old).is_some(), "the leader refused a read");
    t.one_random(4);
    assert!(t.sim.read(old).is_some(), "the old leader refused a read");
    t.reads_are_served((0..5).filter(|&i| i != old));
    t.connect(old);
    t.one_random(5);
    t.end()
}

/// Clears every link block, then blocks the listed `(from, to)` links.
fn block_only(t: &mut Tester, links: &[(usize, usize)]) {
    for row in t.sim.blocked.iter_mut() {
        row.iter_mut().for_each(|x| *x = false);
    }
    for &(from, to) in links {
        t.sim.blocked[from][to] = true;
    }
    t.sim.note(format_args!("block only {links:?}"));
}

/// A scenario: name, description, function of a seed.
pub type Scenario = (&'static str, &'static str, fn(u64) -> Outcome);

/// Every lab scenario, in the lab's order, then ours.
pub const SCENARIOS: &[Scenario] = &[
    ("A1", "initial election", a1_initial_election),
    ("A2", "election after network failure", a2_re_election),
    ("A3", "multiple elections", a3_many_elections),
    ("B1", "basic agreement", b1_basic_agree),
    ("B2", "RPC byte count", b2_rpc_bytes),
    (
        "B3",
        "test progressive failure of followers",
        b3_follower_failure,
    ),
    ("B4", "test failure of leaders", b4_leader_failure),
    ("B5", "agreement after follower reconnects", b5_fail_agree),
    (
        "B6",
        "no agreement if too many followers disconnect",
        b6_fail_no_agree,
    ),
    ("B7", "concurrent Start()s", b7_concurrent_starts),
    ("B8", "rejoin of partitioned leader", b8_rejoin),
    (
        "B9",
        "leader backs up quickly over incorrect follower logs",
        b9_backup,
    ),
    ("B10", "RPC counts aren't too high", b10_count),
    ("C1", "basic persistence", c1_persist1),
    ("C2", "more persistence", c2_persist2),
    (
        "C3",
        "partitioned leader and one follower crash, leader restarts",
        c3_persist3,
    ),
    ("C4", "Figure 8", c4_figure8),
    ("C5", "unreliable agreement", c5_unreliable_agree),
    ("C6", "Figure 8 (unreliable)", c6_figure8_unreliable),
    ("C7", "churn", c7_reliable_churn),
    ("C8", "unreliable churn", c8_unreliable_churn),
    ("D1", "snapshots basic", d1_snapshot_basic),
    ("D2", "install snapshots (disconnect)", d2_snapshot_install),
    (
        "D3",
        "install snapshots (disconnect+unreliable)",
        d3_snapshot_install_unreliable,
    ),
    ("D4", "install snapshots (crash)", d4_snapshot_install_crash),
    (
        "D5",
        "install snapshots (unreliable+crash)",
        d5_snapshot_install_uncrash,
    ),
    ("D6", "crash and restart all servers", d6_snapshot_all_crash),
    (
        "D7",
        "snapshot initialization after crash",
        d7_snapshot_init,
    ),
    ("stable", "no term change without failures", stable_leader),
    (
        "prevote",
        "a rejoining node does not disrupt the leader",
        prevote_rejoin,
    ),
    (
        "stale",
        "stale candidates do not starve the one that can win",
        stale_candidates,
    ),
    (
        "revote",
        "a voter restarted after voting does not vote again in that term",
        vote_survives_restart,
    ),
    (
        "lease",
        "pre-vote refused while the followers hear from the leader",
        prevote_lease,
    ),
    (
        "rejoin",
        "a higher term in an answer deposes the leader",
        higher_term_answer_deposes,
    ),
    (
        "reads",
        "ReadIndex reads across a leader change",
        reads_across_leader_change,
    ),
];
