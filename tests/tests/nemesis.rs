//! A short nemesis run for CI: a 5-node raftd cluster under every nemesis, combined, for
//! `NEMESIS_SECONDS` (default 45); the history must be linearizable and no acknowledged
//! write may be lost. Long runs: `cargo run --release -p raftd-tests --bin nemesis -- --duration 30m`.

use raftd_tests::nemesis::{run, Nemesis, RunConfig};
use std::time::Duration;

#[test]
fn nemesis_short_run_is_linearizable_and_loses_nothing() {
    let seconds: u64 = std::env::var("NEMESIS_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(45);
    let seed: u64 = std::env::var("NEMESIS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let config = RunConfig {
        nodes: 5,
        clients: 6,
        keys: 5,
        duration: Duration::from_secs(seconds),
        seed,
        nemeses: Nemesis::ALL.to_vec(),
        op_timeout: Duration::from_secs(2),
        report_dir: std::env::temp_dir().join("raftd-nemesis"),
        netns: true,
    };
    let s = run(&config, &mut |line| eprintln!("{line}"));
    eprintln!(
        "ok {} failed {} unknown {} elections {} longest write gap {:?} acknowledged {}",
        s.ok, s.failed, s.unknown, s.elections, s.longest_unavailable, s.acknowledged_writes
    );
    assert!(!s.faults.is_empty(), "no fault was injected");
    assert!(s.ok > 100, "too few operations completed: {}", s.ok);
    assert_eq!(
        s.violations, 0,
        "linearizability violation; report: {:?}",
        s.report
    );
    assert!(!s.gave_up, "the checker gave up");
    assert_eq!(s.lost_writes, 0, "acknowledged writes lost");
}
