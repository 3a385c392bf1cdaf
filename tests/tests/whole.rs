//! Whole servers in the deterministic simulator (see `raftd_tests::whole`): real replicas
//! with their stores, sessions and WALs on an in-memory disk that loses unsynced writes
//! on a power cut, driven by simulated clients whose histories must be linearizable.

use raftd_tests::runner;
use raftd_tests::whole;

/// The whole-server swarm over `SIM_SEEDS` seeds (default 25; the sweep binary runs
/// thousands: `sim sweep whole --seeds 10000`). Every seed runs power cuts, partitions,
/// loss and full disks, then heals and checks linearizability, convergence and election
/// safety; a failure prints its replay command.
#[test]
fn whole_server_swarm() {
    runner::test_scenario(runner::WHOLE);
}

/// Seeds that once found a bug, kept so the bug stays fixed. 244: a snapshot finished while
/// the disk was full and its marker needed a new segment; the node stopped as if its WAL
/// had failed. 3547: a node repairing a cut log ended its repair on a heartbeat (whose
/// commit index came from its stale match), then won an election without committed
/// entries. 2756: the final consistency checkpoint was covered by a snapshot one node
/// installed, so that node never hashed it (the check now takes another checkpoint).
#[test]
fn whole_server_regression_seeds() {
    for seed in [244, 3547, 2756] {
        if let Err(e) = runner::run_one(runner::WHOLE, seed) {
            panic!("{e}");
        }
    }
}

/// The same seed replays the same run event for event (equal trace hashes, event counts
/// and committed indices); another seed gives another run.
#[test]
fn same_seed_same_whole_server_run() {
    let a = whole::swarm(7);
    let b = whole::swarm(7);
    assert_eq!(
        (a.trace_hash, a.events, a.committed),
        (b.trace_hash, b.events, b.committed)
    );
    let c = whole::swarm(8);
    assert_ne!(a.trace_hash, c.trace_hash);
}
