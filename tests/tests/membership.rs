//! The membership-change scenarios of the core simulator (`raftd_tests::membership`), each
//! as a separately named test running `SIM_SEEDS` seeds (default 25) from `SIM_SEED`
//! (default 1); the churn swarm runs `SIM_CHURN_SEEDS` (default 200). A failure names the
//! seed and the command that replays it. Sweeps: `cargo run --release -p raftd-tests --bin
//! sim -- sweep churn --seeds 10000`.

use raftd_tests::runner::{run_one, test_scenario};

macro_rules! scenarios {
    ($($test:ident => $name:literal,)*) => {
        $(
            #[test]
            fn $test() {
                test_scenario($name);
            }
        )*
    };
}

scenarios! {
    a_learner_is_added_never_counts_and_is_promoted => "learner-promote",
    a_follower_is_removed => "remove-follower",
    the_leader_is_removed_and_steps_down => "remove-leader",
    a_crashed_node_is_replaced_by_a_new_id => "replace-node",
    three_grow_to_five_and_shrink_to_three_under_faults => "grow-shrink",
    the_leader_crashes_at_each_step_of_a_change => "leader-crash-change",
    changes_while_a_snapshot_is_installed => "change-snapshot",
    concurrent_change_requests_go_one_at_a_time => "concurrent-change",
}

/// Membership churn mixed with the swarm's faults: `SIM_CHURN_SEEDS` seeds (default 200).
#[test]
fn membership_churn_with_random_faults_then_liveness() {
    let seeds: u64 = std::env::var("SIM_CHURN_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let mut failures = Vec::new();
    for seed in 1..=seeds {
        if let Err(e) = run_one("churn", seed) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Determinism holds for the membership scenarios too: one seed, one trace.
#[test]
fn same_seed_same_trace_with_membership_changes() {
    for name in ["leader-crash-change", "churn"] {
        let a = run_one(name, 7).expect("run passes");
        let b = run_one(name, 7).expect("run passes");
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "{name}: same seed, different trace"
        );
        assert_eq!(
            a.events, b.events,
            "{name}: same seed, different event count"
        );
    }
}
