//! The lab tester's 28 scenarios (parts A–D), our own named scenarios (membership changes
//! among them), the swarm and the membership churn swarm, each as a separately named test.
//! Each runs `SIM_SEEDS` seeds (default 25; the swarms more) starting at `SIM_SEED`
//! (default 1) on the deterministic simulator; a failure names the seed and the command
//! that replays it. Sweeps of thousands of seeds: `cargo run --release -p
//! raftd-tests --bin sim -- sweep all --seeds 1000`.

use raftd_tests::runner::{run_one, test_scenario, test_scenario_seeds};

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
    a1_initial_election => "A1",
    a2_re_election => "A2",
    a3_many_elections => "A3",
    b1_basic_agree => "B1",
    b2_rpc_bytes => "B2",
    b3_follower_failure => "B3",
    b4_leader_failure => "B4",
    b5_fail_agree => "B5",
    b6_fail_no_agree => "B6",
    b7_concurrent_starts => "B7",
    b8_rejoin => "B8",
    b9_backup => "B9",
    b10_count => "B10",
    c1_persist1 => "C1",
    c2_persist2 => "C2",
    c3_persist3 => "C3",
    c4_figure8 => "C4",
    c5_unreliable_agree => "C5",
    c6_figure8_unreliable => "C6",
    c7_reliable_churn => "C7",
    c8_unreliable_churn => "C8",
    d1_snapshot_basic => "D1",
    d2_snapshot_install => "D2",
    d3_snapshot_install_unreliable => "D3",
    d4_snapshot_install_crash => "D4",
    d5_snapshot_install_uncrash => "D5",
    d6_snapshot_all_crash => "D6",
    d7_snapshot_init => "D7",
    stable_leader_keeps_its_term => "stable",
    prevote_rejoining_node_does_not_disrupt_leader => "prevote",
    stale_candidates_do_not_starve_the_winner => "stale",
    voter_restarted_after_voting_does_not_vote_again => "revote",
    prevote_refused_while_followers_hear_the_leader => "lease",
    higher_term_in_an_answer_deposes_the_leader => "rejoin",
    reads_across_a_leader_change_are_linearizable => "reads",
    a_learner_is_added_never_counts_and_is_promoted => "learner-promote",
    a_follower_is_removed => "remove-follower",
    the_leader_is_removed_and_steps_down => "remove-leader",
    a_crashed_node_is_replaced_by_a_new_id => "replace-node",
    three_grow_to_five_and_shrink_to_three_under_faults => "grow-shrink",
    the_leader_crashes_at_each_step_of_a_change => "leader-crash-change",
    changes_while_a_snapshot_is_installed => "change-snapshot",
    concurrent_change_requests_go_one_at_a_time => "concurrent-change",
}

/// The swarm runs more seeds than the scripted scenarios: it is where the random fault
/// mixes live. `SIM_SWARM_SEEDS` (default 1000).
#[test]
fn swarm_random_faults_then_liveness() {
    test_scenario_seeds("swarm", "SIM_SWARM_SEEDS", 1000);
}

/// Membership churn mixed with the swarm's faults. `SIM_CHURN_SEEDS` (default 200).
#[test]
fn membership_churn_with_random_faults_then_liveness() {
    test_scenario_seeds("churn", "SIM_CHURN_SEEDS", 200);
}

/// Determinism: two runs of one seed produce the same trace hash, for a scripted scenario
/// with crashes, an unreliable one with reordering, a membership change with a crash, and
/// both swarms; different seeds differ.
#[test]
fn same_seed_same_trace() {
    for name in ["C4", "C6", "D5", "swarm", "leader-crash-change", "churn"] {
        let a = run_one(name, 42).expect("run passes");
        let b = run_one(name, 42).expect("run passes");
        assert_eq!(
            a.trace_hash, b.trace_hash,
            "{name}: same seed, different trace"
        );
        assert_eq!(
            a.events, b.events,
            "{name}: same seed, different event count"
        );
        let c = run_one(name, 43).expect("run passes");
        assert_ne!(
            a.trace_hash, c.trace_hash,
            "{name}: different seeds, same trace"
        );
    }
}
