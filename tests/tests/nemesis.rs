//! A short nemesis run for CI: a 5-node raftd cluster under every nemesis (bit rot,
//! membership churn among 7 ids, kernel loss and bandwidth limits included), combined, for
//! `NEMESIS_SECONDS` (default 45); the history must be
//! linearizable, no acknowledged write may be lost, every rotted node must find its damage
//! and no node may still be repairing after healing. Long runs: `cargo run --release -p raftd-tests --bin nemesis -- --duration 30m`.

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
        spares: 2,
    };
    let s = run(&config, &mut |line| eprintln!("{line}"));
    eprintln!(
        "ok {} failed {} unknown {} elections {} longest write gap {:?} acknowledged {} rots {} repairs {}/{}",
        s.ok,
        s.failed,
        s.unknown,
        s.elections,
        s.longest_unavailable,
        s.acknowledged_writes,
        s.rots,
        s.repairs_started,
        s.repairs_finished
    );
    assert!(!s.faults.is_empty(), "no fault was injected");
    eprintln!("membership changes: {:?}", s.changes);
    assert!(s.ok > 100, "too few operations completed: {}", s.ok);
    assert_eq!(
        s.violations, 0,
        "linearizability violation; report: {:?}",
        s.report
    );
    assert!(!s.gave_up, "the checker gave up");
    assert_eq!(s.lost_writes, 0, "acknowledged writes lost");
    assert!(s.rot_failures.is_empty(), "bit rot: {:?}", s.rot_failures);
    assert!(
        s.still_repairing.is_empty(),
        "nodes still repairing after healing: {:?}",
        s.still_repairing
    );
}

/// The nemesis binary refuses bad flags with exit 2 and one line naming the flag, before
/// it builds anything.
#[test]
fn nemesis_binary_refuses_bad_flags() {
    let nemesis = raftd_tests::cluster::workspace_binary_with("raftd-tests", "nemesis", &[]);
    for (args, want) in [
        (
            vec!["--nodes", "five"],
            "--nodes 'five' is not a whole number",
        ),
        (vec!["--nodes", "2"], "3 to 9 nodes"),
        (vec!["--nodes", "9", "--spares", "4"], "at most 12 ids"),
        (
            vec!["--duration", "soon"],
            "--duration 'soon' is not a duration",
        ),
        (vec!["--nemeses", "kill,flood"], "unknown nemesis 'flood'"),
        (vec!["--seed"], "--seed needs a value"),
        (vec!["--frobnicate"], "unknown argument '--frobnicate'"),
    ] {
        let out = std::process::Command::new(&nemesis)
            .args(&args)
            .output()
            .expect("run nemesis");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    }
}
