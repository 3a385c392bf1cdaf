//! The swarm: a randomized scenario in the style of FoundationDB and TigerBeetle simulation
//! testing. A seed picks the cluster size (3, 5 or 7), the core's options and the fault mix;
//! a fault phase then throws symmetric and asymmetric partitions, loss, duplication,
//! reordering, latency, crashes and restarts, leadership transfers and snapshots at a
//! stream of proposals, while a client asks random nodes for ReadIndex reads and some seeds
//! restart voters right after their votes land, with the checkers watching every step
//! (every confirmed read is checked against what was committed when it was asked). A
//! liveness phase follows:
//! heal a random majority — it must elect a leader and commit within a bounded virtual time
//! — then heal everything and require every node to converge.

use crate::lab::{Outcome, Tester};
use crate::sim::{Micros, NetFaults, Sim, SimConfig, Task, MS, SEC};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// Runs one swarm scenario.
pub fn swarm(seed: u64) -> Outcome {
    // The configuration is drawn from the seed; the simulator's own PRNG (same seed) then
    // drives everything else.
    let mut pick = SmallRng::seed_from_u64(seed ^ 0x5eed_5eed_5eed_5eed);
    let n = [3, 5, 7][pick.gen_range(0..3)];
    let mut config = SimConfig::lab(n, seed);
    pick_options(&mut pick, &mut config);
    let fault_phase: Micros = pick.gen_range(5..20) * SEC;
    config.restart_voter_after_grant_percent = [0, 0, 20, 100][pick.gen_range(0..4)];
    let mut t = Tester::with_config(config, false);
    let mut next_cmd = 1u64;
    t.sim.spawn(Box::new(Reader));
    fault_loop(&mut t, fault_phase, |t, roll| {
        match roll {
            // Proposals on whichever nodes take them: most of the traffic.
            0..=649 => {
                let burst = 1 + t.rand(8);
                for _ in 0..burst {
                    // Mostly to a node that claims leadership, sometimes to anyone.
                    let leader = (0..n).find(|&i| t.sim.state(i).is_some_and(|(_, l)| l));
                    let i = match leader {
                        Some(l) if t.rand(5) > 0 => l,
                        _ => t.rand(n as u64) as usize,
                    };
                    t.sim.propose(i, crate::lab::cmd(next_cmd));
                    next_cmd += 1;
                }
            }
            _ => fault(t, roll),
        }
    });
    t.sim.check_all();

    // Liveness: a random majority, healed, must elect a leader and commit in bounded time.
    t.sim.faults = NetFaults::default();
    heal_links(&mut t);
    let majority = n / 2 + 1;
    let mut order: Vec<usize> = (0..n).collect();
    for k in (1..n).rev() {
        let j = t.rand(k as u64 + 1) as usize;
        order.swap(k, j);
    }
    for (pos, &i) in order.iter().enumerate() {
        if pos < majority {
            if !t.sim.alive(i) {
                t.sim.start(i);
            }
            t.connect(i);
        } else {
            t.disconnect(i);
        }
    }
    t.one(next_cmd, majority, true);
    next_cmd += 1;
    // Then everyone.
    for i in 0..n {
        if !t.sim.alive(i) {
            t.sim.start(i);
        }
        t.connect(i);
    }
    t.one(next_cmd, n, true);
    // Reads are live too, once the leader has committed an entry of its own term (thesis
    // §6.4): its no-op, or, in seeds without one, this write.
    t.one(next_cmd + 1, n, true);
    t.reads_are_served(0..n);
    t.end()
}

/// The swarm's loop for `duration` of virtual time: a random pause of 1–200 ms, the
/// checkpoint checkers once a second, then `act` with a roll in `0..1000`.
pub(crate) fn fault_loop(t: &mut Tester, duration: Micros, mut act: impl FnMut(&mut Tester, u64)) {
    let end = t.sim.now() + duration;
    let mut next_check = t.sim.now() + SEC;
    while t.sim.now() < end {
        let step = t.rand(200) + 1;
        t.sleep(step * MS);
        if t.sim.now() >= next_check {
            t.sim.check_all();
            next_check += SEC;
        }
        let roll = t.rand(1000);
        act(t, roll);
    }
}

/// One of the swarm's faults, by `roll` in `650..1000`: a symmetric partition, a one-way
/// link cut, healing, a crash, a restart, network faults, a leadership transfer, or a
/// node disconnected for up to three seconds. Shared with the membership swarm.
pub(crate) fn fault(t: &mut Tester, roll: u64) {
    let n = t.n();
    match roll {
        650..=689 => symmetric_partition(t),
        690..=719 => {
            let (a, b) = (t.rand(n as u64) as usize, t.rand(n as u64) as usize);
            if a != b {
                t.sim.blocked[a][b] = true;
                t.sim.note(format_args!("block {} -> {}", a + 1, b + 1));
            }
        }
        720..=769 => heal_links(t),
        770..=804 => {
            let i = t.rand(n as u64) as usize;
            t.sim.crash(i);
        }
        805..=869 => {
            let dead: Vec<usize> = (0..n).filter(|&i| !t.sim.alive(i)).collect();
            if !dead.is_empty() {
                let i = dead[t.rand(dead.len() as u64) as usize];
                t.sim.start(i);
            }
        }
        870..=929 => random_faults(t),
        930..=959 => {
            let leader = (0..n).find(|&i| t.sim.state(i).is_some_and(|(_, l)| l));
            if let Some(l) = leader {
                let target = t.rand(n as u64) as usize;
                if target != l {
                    t.sim.transfer_leader(l, target);
                }
            }
        }
        _ => {
            let i = t.rand(n as u64) as usize;
            t.disconnect(i);
            let back = t.rand(3 * SEC);
            t.sleep(back);
            t.connect(i);
        }
    }
}

/// Draws the core's options and the host's (snapshots, disk latency) from `pick`: pre-vote,
/// check-quorum and the leader's no-op mostly on, small windows and chunks. Shared with the
/// membership swarm.
pub(crate) fn pick_options(pick: &mut SmallRng, config: &mut SimConfig) {
    config.raft.pre_vote = pick.gen_bool(0.75);
    config.raft.check_quorum = pick.gen_bool(0.75);
    config.raft.noop_on_election = pick.gen_bool(0.75);
    config.raft.inflight_messages_max = pick.gen_range(1..16);
    config.raft.inflight_bytes_max = pick.gen_range(16..1024);
    config.raft.append_bytes_max = pick.gen_range(8..256);
    config.raft.snapshot_chunk_bytes = pick.gen_range(16..512);
    config.snapshot_applier = pick.gen_bool(0.5);
    config.snapshot_every = pick.gen_range(3..40);
    config.disk_latency_max = pick.gen_range(0..10) * MS;
}

/// A client asking for linearizable reads until the test ends: half of them of a node that
/// claims to lead (a deposed one too), the rest of any node (followers forward them).
pub(crate) struct Reader;

impl Task for Reader {
    fn step(&mut self, sim: &mut Sim) -> Option<Micros> {
        if sim.finished {
            return None;
        }
        let n = sim.n();
        let leaders: Vec<usize> = (0..n)
            .filter(|&i| sim.state(i).is_some_and(|(_, leads)| leads))
            .collect();
        let i = if !leaders.is_empty() && sim.rng.gen_bool(0.5) {
            leaders[sim.rng.gen_range(0..leaders.len())]
        } else {
            sim.rng.gen_range(0..n)
        };
        sim.read(i);
        Some(sim.rng.gen_range(10..200) * MS)
    }
}

pub(crate) fn symmetric_partition(t: &mut Tester) {
    let n = t.n();
    let side: Vec<bool> = (0..n).map(|_| t.rand(2) == 0).collect();
    for a in 0..n {
        for b in 0..n {
            t.sim.blocked[a][b] = side[a] != side[b];
        }
    }
    t.sim.note(format_args!("partition {side:?}"));
}

pub(crate) fn heal_links(t: &mut Tester) {
    t.sim.note(format_args!("heal links"));
    for row in t.sim.blocked.iter_mut() {
        row.iter_mut().for_each(|x| *x = false);
    }
    for i in 0..t.n() {
        t.connect(i);
    }
}

pub(crate) fn random_faults(t: &mut Tester) {
    let f = NetFaults {
        unreliable: t.rand(4) == 0,
        long_reordering: t.rand(6) == 0,
        drop_percent: [0, 0, 5, 20, 40][t.rand(5) as usize],
        duplicate_percent: [0, 0, 5, 20][t.rand(4) as usize],
        latency_max: [0, 0, 5 * MS, 30 * MS, 100 * MS][t.rand(5) as usize],
    };
    t.sim.note(format_args!("faults {f:?}"));
    t.sim.faults = f;
}
