//! Membership-change scenarios on the deterministic simulator (issue 15, the core's part):
//! a learner added and promoted, a follower removed, the leader removed, a crashed node
//! replaced by a new id with an empty disk, growing 3 → 5 and shrinking 5 → 3 on an
//! unreliable network with crashes, the leader crashing at each step of a change, a change
//! while a snapshot is being installed, concurrent change requests, and membership churn as
//! a swarm fault. The simulator's checkers watch every step: one leader per term, committed
//! entries surviving every change, a node using only a configuration in its own log, and
//! commitment by the quorums of the configuration in effect.
//!
//! The simulator's nodes beyond `SimConfig::voters` are spare ids: running, empty, outside
//! the cluster until a change adds them (an operator's fresh host).

use crate::lab::{cmd, Outcome, Scenario, Tester};
use crate::sim::{Micros, NetFaults, Sim, SimConfig, Task, MS, SEC};
use crate::swarm::{fault, fault_loop, heal_links, pick_options, Reader};
use raft::{Configuration, LogIndex, MemberChange, NodeId, ProposeError, RoleKind};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

/// The membership scenarios: (name, description, function).
pub const SCENARIOS: &[Scenario] = &[
    (
        "learner-promote",
        "add a learner, check it never counts, promote it",
        learner_promote,
    ),
    ("remove-follower", "remove a follower", remove_follower),
    ("remove-leader", "remove the leader", remove_leader),
    (
        "replace-node",
        "replace a crashed node by a new id with an empty disk",
        replace_node,
    ),
    (
        "grow-shrink",
        "grow 3 to 5 and shrink 5 to 3, unreliable network with crashes",
        grow_shrink,
    ),
    (
        "leader-crash-change",
        "the leader crashes at a step of a change",
        leader_crash_change,
    ),
    (
        "change-snapshot",
        "changes while a snapshot is being installed",
        change_snapshot,
    ),
    (
        "concurrent-change",
        "concurrent change requests: one at a time",
        concurrent_change,
    ),
    ("churn", "membership churn as a swarm fault", churn),
];

fn id(i: usize) -> NodeId {
    NodeId(i as u64 + 1)
}

fn ids(nodes: &[usize]) -> BTreeSet<NodeId> {
    nodes.iter().map(|&i| id(i)).collect()
}

/// A simple configuration of voters and learners (node indices).
fn conf(voters: &[usize], learners: &[usize]) -> Configuration {
    Configuration {
        voters: ids(voters),
        outgoing: BTreeSet::new(),
        learners: ids(learners),
        ..Configuration::default()
    }
}

/// The live node that leads in the highest term, if any.
fn leader(sim: &Sim) -> Option<usize> {
    (0..sim.n())
        .filter(|&i| sim.state(i).is_some_and(|(_, leads)| leads))
        .max_by_key(|&i| sim.state(i).map(|(term, _)| term))
}

/// The leader's configuration when it is committed and simple (no change under way).
fn settled(sim: &Sim) -> Option<(usize, Configuration)> {
    let l = leader(sim)?;
    let raw = sim.raw(l)?;
    let settled =
        raw.configuration_index() <= raw.commit_index() && !raw.configuration().is_joint();
    settled.then(|| (l, raw.configuration().clone()))
}

/// An operator's loop: proposes `changes` at whichever node leads until a leader uses
/// `target`, committed. "Not now" answers (no leader, nothing of its term committed yet,
/// another change under way, a transfer) are retried; a leader without a committed entry of
/// its term is given a command to commit. Panics after `limit` of virtual time.
fn reconfigure(t: &mut Tester, changes: &[MemberChange], target: &Configuration, limit: Micros) {
    let deadline = t.sim.now() + limit;
    let mut filler = 1_000_000u64;
    while t.sim.now() < deadline {
        if let Some((l, current)) = settled(&t.sim) {
            if current == *target {
                return;
            }
            match t.sim.propose_conf_change(l, changes) {
                Ok(_) | Err(ProposeError::ConfChangePending) => {}
                Err(ProposeError::ConfChangeNotReady) => {
                    t.sim.propose(l, cmd(filler));
                    filler += 1;
                }
                Err(ProposeError::InvalidConfChange(why)) => {
                    panic!("change {changes:?} refused from {current}: {why} (target {target})")
                }
                Err(_) => {}
            }
        }
        t.sleep(20 * MS);
    }
    panic!(
        "no leader reached configuration {target} within {} s (leader {:?}: {:?})",
        limit / SEC,
        leader(&t.sim).map(|l| l + 1),
        leader(&t.sim).and_then(|l| t.sim.configuration(l).cloned())
    );
}

/// Waits until every live node in `nodes` uses `target` (they all received its entry).
fn converge(t: &mut Tester, nodes: &[usize], target: &Configuration) {
    for _ in 0..500 {
        if nodes
            .iter()
            .all(|&i| !t.sim.alive(i) || t.sim.configuration(i) == Some(target))
        {
            return;
        }
        t.sleep(20 * MS);
    }
    let got: Vec<String> = nodes
        .iter()
        .map(|&i| {
            format!(
                "{}: {:?}",
                i + 1,
                t.sim.configuration(i).map(|c| c.to_string())
            )
        })
        .collect();
    panic!("nodes did not converge on {target}: {}", got.join("; "));
}

/// Asserts node `i` is not leading and does not campaign for `duration`.
fn stays_follower(t: &mut Tester, i: usize, duration: Micros) {
    let end = t.sim.now() + duration;
    while t.sim.now() < end {
        if let Some(raw) = t.sim.raw(i) {
            assert!(
                raw.role() == RoleKind::Follower,
                "node {} is {} although it is no voter ({})",
                i + 1,
                raw.role(),
                raw.configuration()
            );
        }
        t.sleep(10 * MS);
    }
}

fn membership_config(nodes: usize, voters: usize, seed: u64) -> SimConfig {
    let mut config = SimConfig::lab(nodes, seed);
    config.voters = voters;
    // The daemon's default: a new leader commits an entry of its term at once, which a
    // change waits for.
    config.raft.noop_on_election = true;
    config
}

const CHANGE_LIMIT: Micros = 30 * SEC;

/// Voters {1,2,3} with entry 1, which the spare nodes did not receive, then every spare
/// node (4, and 5 when `nodes` is 5) added as a learner, holding entry 2.
fn with_learners(nodes: usize, seed: u64) -> Tester {
    let mut t = Tester::with_config(membership_config(nodes, 3, seed), false);
    t.one(1, 3, true);
    assert_eq!(t.n_committed(1).0, 3, "the spare nodes received entries");
    let spares: Vec<usize> = (3..nodes).collect();
    let add: Vec<MemberChange> = spares
        .iter()
        .map(|&i| MemberChange::AddLearner(id(i)))
        .collect();
    reconfigure(&mut t, &add, &conf(&[0, 1, 2], &spares), CHANGE_LIMIT);
    t.one(2, nodes, true);
    t
}

/// Adds nodes 4 and 5 as learners to {1,2,3}: they receive every entry, their answers do
/// not make a quorum (with two voters cut off, the leader and both learners, three of five
/// members, commit nothing), then node 4 promoted counts: with one original voter down,
/// commits need it.
pub fn learner_promote(seed: u64) -> Outcome {
    let mut t = with_learners(5, seed);
    stays_follower(&mut t, 3, SEC);
    stays_follower(&mut t, 4, SEC);
    // A learner's acknowledgement is no vote: the leader and the learners alone commit
    // nothing.
    let l = leader(&t.sim).expect("a leader");
    let others: Vec<usize> = (0..3).filter(|&i| i != l).collect();
    for &i in &others {
        t.disconnect(i);
    }
    let (index, _, ok) = t.sim.propose(l, cmd(3));
    assert!(ok, "the leader took the proposal");
    t.sleep(2 * SEC);
    assert_eq!(
        t.n_committed(index).0,
        0,
        "index {index} committed with one voter of three and two learners"
    );
    for &i in &others {
        t.connect(i);
    }
    t.one(4, 5, true);
    reconfigure(
        &mut t,
        &[MemberChange::Promote(id(3))],
        &conf(&[0, 1, 2, 3], &[4]),
        CHANGE_LIMIT,
    );
    // Four voters: three make a quorum, so with an original voter down node 4 must count.
    let l = leader(&t.sim).expect("a leader");
    let down = (0..3).find(|&i| i != l).expect("a follower");
    t.crash(down);
    t.one(5, 3, true);
    t.sim.start(down);
    t.one(6, 5, true);
    converge(&mut t, &[0, 1, 2, 3, 4], &conf(&[0, 1, 2, 3], &[4]));
    t.end()
}

/// Removes a follower of five: the four left commit (three of four), the removed node gets
/// nothing after its removal and never leads.
pub fn remove_follower(seed: u64) -> Outcome {
    let mut t = Tester::with_config(membership_config(5, 5, seed), false);
    t.one(1, 5, true);
    let l = t.check_one_leader();
    let removed = (l + 1 + t.rand(4) as usize) % 5;
    let rest: Vec<usize> = (0..5).filter(|&i| i != removed).collect();
    reconfigure(
        &mut t,
        &[MemberChange::Remove(id(removed))],
        &conf(&rest, &[]),
        CHANGE_LIMIT,
    );
    let index = t.one(2, 4, true);
    let l = leader(&t.sim).expect("a leader");
    let down = *rest.iter().find(|&&i| i != l).expect("a follower");
    t.crash(down);
    let later = t.one(3, 3, true);
    assert!(later > index);
    t.sleep(SEC);
    assert_eq!(
        t.n_committed(later).0,
        3,
        "the removed node {} applied an entry after its removal",
        removed + 1
    );
    t.sim.start(down);
    t.one(4, 4, true);
    assert!(leader(&t.sim) != Some(removed), "the removed node leads");
    t.end()
}

/// Removes the leader itself: it keeps leading through the change (it manages the cluster
/// until C_new commits, §6), then steps down and never campaigns again; the others elect a
/// leader and go on.
pub fn remove_leader(seed: u64) -> Outcome {
    let mut t = Tester::with_config(membership_config(5, 5, seed), false);
    t.one(1, 5, true);
    let l = t.check_one_leader();
    let rest: Vec<usize> = (0..5).filter(|&i| i != l).collect();
    reconfigure(
        &mut t,
        &[MemberChange::Remove(id(l))],
        &conf(&rest, &[]),
        CHANGE_LIMIT,
    );
    t.one(2, 4, true);
    let new = t.check_one_leader();
    assert!(new != l, "the removed leader leads again");
    stays_follower(&mut t, l, 3 * SEC);
    t.one(3, 4, true);
    t.end()
}

/// Replaces a crashed node for good: remove it, add a new id with an empty disk as a
/// learner, promote it; with an old voter down, commits then need the new node.
pub fn replace_node(seed: u64) -> Outcome {
    let mut t = Tester::with_config(membership_config(4, 3, seed), false);
    t.one(1, 3, true);
    let dead = t.rand(3) as usize;
    t.crash(dead);
    let alive: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    t.one(2, 2, true);
    reconfigure(
        &mut t,
        &[MemberChange::Remove(id(dead))],
        &conf(&alive, &[]),
        CHANGE_LIMIT,
    );
    reconfigure(
        &mut t,
        &[MemberChange::AddLearner(id(3))],
        &conf(&alive, &[3]),
        CHANGE_LIMIT,
    );
    t.one(3, 3, true);
    let mut voters = alive.clone();
    voters.push(3);
    reconfigure(
        &mut t,
        &[MemberChange::Promote(id(3))],
        &conf(&voters, &[]),
        CHANGE_LIMIT,
    );
    let l = leader(&t.sim).expect("a leader");
    let down = *alive.iter().find(|&&i| i != l).unwrap_or(&alive[0]);
    t.crash(down);
    t.one(4, 2, true);
    t.sim.start(down);
    t.one(5, 3, true);
    converge(&mut t, &voters, &conf(&voters, &[]));
    t.end()
}

/// Crashes one random node at a time and restarts it a little later, until the test ends
/// or `stop` is set.
struct Crasher {
    down: Option<usize>,
    stop: Rc<RefCell<bool>>,
}

impl Task for Crasher {
    fn step(&mut self, sim: &mut Sim) -> Option<Micros> {
        if let Some(i) = self.down.take() {
            sim.start(i);
            sim.connect(i);
        }
        if sim.finished || *self.stop.borrow() {
            return None;
        }
        let i = sim.rng.gen_range(0..sim.n());
        sim.crash(i);
        self.down = Some(i);
        Some(sim.rng.gen_range(300..1500) * MS)
    }
}

/// Grows {1,2,3} to five voters and shrinks to {3,4,5}, on labrpc's unreliable network with
/// a node crashing and restarting at a time.
pub fn grow_shrink(seed: u64) -> Outcome {
    let mut t = Tester::with_config(membership_config(5, 3, seed), true);
    t.one(1, 3, true);
    let stop = Rc::new(RefCell::new(false));
    t.sim.spawn(Box::new(Crasher {
        down: None,
        stop: stop.clone(),
    }));
    let limit = 60 * SEC;
    reconfigure(
        &mut t,
        &[
            MemberChange::AddLearner(id(3)),
            MemberChange::AddLearner(id(4)),
        ],
        &conf(&[0, 1, 2], &[3, 4]),
        limit,
    );
    t.one(2, 2, true);
    reconfigure(
        &mut t,
        &[MemberChange::Promote(id(3)), MemberChange::Promote(id(4))],
        &conf(&[0, 1, 2, 3, 4], &[]),
        limit,
    );
    t.one(3, 3, true);
    reconfigure(
        &mut t,
        &[MemberChange::Remove(id(0)), MemberChange::Remove(id(1))],
        &conf(&[2, 3, 4], &[]),
        limit,
    );
    *stop.borrow_mut() = true;
    t.sleep(2 * SEC);
    t.set_unreliable(false);
    for i in 0..5 {
        if !t.sim.alive(i) {
            t.sim.start(i);
        }
        t.connect(i);
    }
    t.one(4, 3, true);
    converge(&mut t, &[2, 3, 4], &conf(&[2, 3, 4], &[]));
    end_without_time_limit(t)
}

/// Like `Tester::end`, without the lab's 120-second limit (scenarios on a lossy network
/// with crashes may take longer; their own steps are bounded).
fn end_without_time_limit(mut t: Tester) -> Outcome {
    t.sim.check_all();
    t.sim.finished = true;
    Outcome {
        trace_hash: t.sim.trace_hash(),
        virtual_time: t.sim.now(),
        events: t.sim.events,
        rpcs: t.sim.counters.total_requests,
        committed: t.sim.applier.max_index,
        reads: t.sim.read_counts.served,
    }
}

/// The leader crashes at one step of a change (the seed picks which, and the change: a
/// promotion, a follower's removal or its own): as soon as the joint entry is appended;
/// once a follower holds it but before it commits; once it commits (C_new appended);
/// once a follower holds C_new but before it commits. The cluster must finish the change,
/// or lose it whole and accept it again, never mixing the two.
pub fn leader_crash_change(seed: u64) -> Outcome {
    let mut t = with_learners(4, seed);
    let l = t.check_one_leader();
    let step = t.rand(4);
    let follower = (0..3).find(|&i| i != l).expect("a follower");
    let (change, target) = match t.rand(3) {
        0 => (MemberChange::Promote(id(3)), conf(&[0, 1, 2, 3], &[])),
        1 => {
            let voters: Vec<usize> = (0..3).filter(|&i| i != follower).collect();
            (MemberChange::Remove(id(follower)), conf(&voters, &[3]))
        }
        _ => {
            let voters: Vec<usize> = (0..3).filter(|&i| i != l).collect();
            (MemberChange::Remove(id(l)), conf(&voters, &[3]))
        }
    };
    t.sim
        .note(format_args!("crash the leader at step {step} of {change}"));
    let joint = match t.sim.propose_conf_change(l, &[change]) {
        Ok(index) => index,
        Err(e) => panic!("leader {} refused {change}: {e}", l + 1),
    };
    let holds = |sim: &Sim, index: LogIndex| {
        (0..sim.n()).any(|i| i != l && sim.raw(i).is_some_and(|r| r.last_index() >= index))
    };
    for _ in 0..2000 {
        let Some(raw) = t.sim.raw(l) else { break };
        let leave = joint.next();
        let reached = match step {
            0 => true,
            1 => holds(&t.sim, joint) || raw.commit_index() >= joint,
            2 => raw.commit_index() >= joint,
            _ => holds(&t.sim, leave) || raw.commit_index() >= leave,
        };
        if reached {
            break;
        }
        t.sleep(MS);
    }
    t.crash(l);
    let back = 500 + t.rand(2500);
    t.sleep(back * MS);
    if matches!(change, MemberChange::Remove(r) if r == id(l)) {
        // The removed leader stays down while the others finish (or redo) its removal.
        reconfigure(&mut t, &[change], &target, CHANGE_LIMIT);
        t.sim.start(l);
    } else {
        t.sim.start(l);
        reconfigure(&mut t, &[change], &target, CHANGE_LIMIT);
    }
    let members: Vec<usize> = target.members().iter().map(|n| n.0 as usize - 1).collect();
    t.one(3, members.len(), true);
    converge(&mut t, &members, &target);
    t.end()
}

/// Node 4 joins a cluster whose log was compacted (it needs a snapshot, sent in many small
/// chunks), is promoted while the snapshot is on its way, restarts from the snapshot it
/// installed (whose configuration must be right), and a voter is removed meanwhile.
pub fn change_snapshot(seed: u64) -> Outcome {
    let mut config = membership_config(4, 3, seed);
    config.snapshot_applier = true;
    config.snapshot_every = 5;
    config.raft.snapshot_chunk_bytes = 16;
    config.disk_latency_max = 3 * MS;
    let mut t = Tester::with_config(config, false);
    for k in 0..20 {
        t.one(k + 1, 3, true);
    }
    reconfigure(
        &mut t,
        &[MemberChange::AddLearner(id(3))],
        &conf(&[0, 1, 2], &[3]),
        CHANGE_LIMIT,
    );
    // At once, while node 4 receives the snapshot: promote it.
    reconfigure(
        &mut t,
        &[MemberChange::Promote(id(3))],
        &conf(&[0, 1, 2, 3], &[]),
        CHANGE_LIMIT,
    );
    let pause = t.rand(300);
    t.sleep(pause * MS);
    t.sim.start(3);
    t.connect(3);
    for k in 20..40 {
        t.one(k + 1, 3, true);
    }
    let l = leader(&t.sim).expect("a leader");
    let removed = (0..3).find(|&i| i != l).expect("a follower");
    let voters: Vec<usize> = (0..4).filter(|&i| i != removed).collect();
    reconfigure(
        &mut t,
        &[MemberChange::Remove(id(removed))],
        &conf(&voters, &[]),
        CHANGE_LIMIT,
    );
    for k in 40..50 {
        t.one(k + 1, 3, true);
    }
    // Every configuration entry is compacted away by now: a restart takes it from the
    // snapshot.
    t.sim.start(3);
    t.connect(3);
    t.one(51, 3, true);
    converge(&mut t, &voters, &conf(&voters, &[]));
    t.end()
}

/// Drives the cluster toward one goal (a node a voter, or a node gone) from a task, with
/// the same "not now" retries as `reconfigure`, alongside other such tasks.
struct ChangeClient {
    node: usize,
    remove: bool,
    done: Rc<RefCell<usize>>,
    pending_seen: Rc<RefCell<u64>>,
}

impl Task for ChangeClient {
    fn step(&mut self, sim: &mut Sim) -> Option<Micros> {
        if sim.finished {
            return None;
        }
        let delay = sim.rng.gen_range(5..60) * MS;
        let Some((l, current)) = settled(sim).or_else(|| {
            let l = leader(sim)?;
            Some((l, sim.configuration(l)?.clone()))
        }) else {
            return Some(delay);
        };
        let who = id(self.node);
        let change = if self.remove {
            current.is_member(who).then_some(MemberChange::Remove(who))
        } else if current.is_learner(who) {
            Some(MemberChange::Promote(who))
        } else if !current.is_member(who) {
            Some(MemberChange::AddLearner(who))
        } else {
            None
        };
        let Some(change) = change else {
            if settled(sim).is_some() {
                *self.done.borrow_mut() += 1;
                return None;
            }
            return Some(delay);
        };
        match sim.propose_conf_change(l, &[change]) {
            Err(ProposeError::ConfChangePending) => *self.pending_seen.borrow_mut() += 1,
            Err(ProposeError::InvalidConfChange(why)) if !current.is_joint() => {
                panic!("{change} refused from {current}: {why}")
            }
            _ => {}
        }
        Some(delay)
    }
}

/// Two changes at once: the second is refused with `ConfChangePending`, not queued. Then
/// three clients race (make 4 a voter, make 5 a voter, remove 1), each retrying; they end
/// in one configuration with all three done.
pub fn concurrent_change(seed: u64) -> Outcome {
    let mut t = Tester::with_config(membership_config(5, 3, seed), false);
    t.one(1, 3, true);
    let l = t.check_one_leader();
    let first = t
        .sim
        .propose_conf_change(l, &[MemberChange::AddLearner(id(3))]);
    let second = t
        .sim
        .propose_conf_change(l, &[MemberChange::AddLearner(id(4))]);
    assert!(first.is_ok(), "first change refused: {first:?}");
    assert_eq!(second, Err(ProposeError::ConfChangePending));
    let follower = (0..3).find(|&i| i != l).expect("a follower");
    assert!(matches!(
        t.sim
            .propose_conf_change(follower, &[MemberChange::AddLearner(id(4))]),
        Err(ProposeError::NotLeader { .. })
    ));
    let done = Rc::new(RefCell::new(0));
    let pending_seen = Rc::new(RefCell::new(0));
    for (node, remove) in [(3, false), (4, false), (0, true)] {
        t.sim.spawn(Box::new(ChangeClient {
            node,
            remove,
            done: done.clone(),
            pending_seen: pending_seen.clone(),
        }));
    }
    let deadline = t.sim.now() + 60 * SEC;
    while *done.borrow() < 3 && t.sim.now() < deadline {
        t.sleep(100 * MS);
    }
    assert_eq!(*done.borrow(), 3, "the racing changes did not all finish");
    let target = conf(&[1, 2, 3, 4], &[]);
    reconfigure(&mut t, &[], &target, CHANGE_LIMIT);
    t.one(2, 4, true);
    converge(&mut t, &[1, 2, 3, 4], &target);
    end_without_time_limit(t)
}

/// The membership swarm: the swarm's faults (partitions, loss, duplication, latency,
/// crashes, transfers) and its ReadIndex client, mixed with random changes among a pool of
/// 5–7 ids of which 1, 3 or 5 are the first voters (add a learner, promote one, remove a
/// member, the leader included), then a liveness phase: healed, the cluster must settle on
/// one configuration, commit and serve reads on every voter.
pub fn churn(seed: u64) -> Outcome {
    let mut pick = SmallRng::seed_from_u64(seed ^ 0xc4a2_c4a2_c4a2_c4a2);
    let n = pick.gen_range(5..=7);
    let mut config = membership_config(n, [1, 3, 3, 5][pick.gen_range(0..4)], seed);
    pick_options(&mut pick, &mut config);
    // Without either, a removed node that does not know it can depose leaders forever
    // (§6's third problem): a liveness matter the daemon never configures.
    config.raft.check_quorum |= !config.raft.pre_vote;
    let fault_phase: Micros = pick.gen_range(5..20) * SEC;
    let mut t = Tester::with_config(config, false);
    let mut next_cmd = 1u64;
    // ReadIndex reads of random nodes throughout, each checked against what was committed
    // when it was asked: reads stay linearizable across changes.
    t.sim.spawn(Box::new(Reader));
    fault_loop(&mut t, fault_phase, |t, roll| match roll {
        0..=499 => {
            for _ in 0..1 + t.rand(6) {
                let i = match leader(&t.sim) {
                    Some(l) if t.rand(5) > 0 => l,
                    _ => t.rand(n as u64) as usize,
                };
                t.sim.propose(i, cmd(next_cmd));
                next_cmd += 1;
            }
        }
        500..=649 => random_change(t),
        _ => fault(t, roll),
    });
    t.sim.check_all();
    // Liveness: everything healed, the cluster settles, commits and serves reads.
    t.sim.faults = NetFaults::default();
    heal_links(&mut t);
    for i in 0..n {
        if !t.sim.alive(i) {
            t.sim.start(i);
        }
    }
    let mut settled_conf = None;
    for _ in 0..1500 {
        if let Some((_, c)) = settled(&t.sim) {
            settled_conf = Some(c);
            break;
        }
        if let Some(l) = leader(&t.sim) {
            // A leader without an entry of its term (no no-op) settles once one commits.
            t.sim.propose(l, cmd(next_cmd));
            next_cmd += 1;
        }
        t.sleep(20 * MS);
    }
    let target = settled_conf.expect("the healed cluster settles on a configuration");
    let members: Vec<usize> = target.members().iter().map(|m| m.0 as usize - 1).collect();
    t.one(next_cmd, members.len(), true);
    converge(&mut t, &members, &target);
    t.one(next_cmd + 1, members.len(), true);
    t.reads_are_served(members.into_iter().filter(|&i| target.is_voter(id(i))));
    end_without_time_limit(t)
}

/// One random membership change at the leader, among the pool of ids; refusals (another
/// change under way, an invalid pick) are part of the churn.
fn random_change(t: &mut Tester) {
    let Some(l) = leader(&t.sim) else { return };
    let Some(current) = t.sim.configuration(l).cloned() else {
        return;
    };
    let n = t.n();
    let who = id(t.rand(n as u64) as usize);
    let change = if !current.is_member(who) {
        MemberChange::AddLearner(who)
    } else if current.is_learner(who) && t.rand(3) > 0 {
        MemberChange::Promote(who)
    } else if current.voters.len() > 1 || !current.voters.contains(&who) {
        MemberChange::Remove(who)
    } else {
        return;
    };
    let _ = t.sim.propose_conf_change(l, &[change]);
}
