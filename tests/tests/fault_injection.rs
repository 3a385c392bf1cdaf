//! Fault injection is a test tool: a node started without `--enable-fault-injection` refuses
//! `raftctl fault` and `raftctl kill --crash` (raftctl exits 2 with the node's reason, and
//! nothing changes), and one started with it carries both out. Real `raftd` processes on
//! 127.0.0.1, driven through the real `raftctl`.

use raftd::protocol::{Outcome, Write};
use raftd::replica::FAULT_INJECTION_OFF;
use raftd_tests::cluster::{raftd_binary, ClusterOptions, ProcessCluster};
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

fn one_node(fault_injection: bool) -> ProcessCluster {
    let options = ClusterOptions {
        fault_injection,
        election_ms: 300,
        heartbeat_ms: 50,
        ..ClusterOptions::default()
    };
    let c = ProcessCluster::start(1, options);
    c.wait_leader(&[1], T)
        .unwrap_or_else(|| panic!("no leader; node 1 log:\n{}", c.log_tail(1)));
    c
}

fn drop_percent(c: &ProcessCluster) -> f64 {
    let status = c.status(1).expect("node 1 answers status");
    status["faults"]["drop_percent"]
        .as_f64()
        .unwrap_or_else(|| panic!("no faults.drop_percent in {status}"))
}

fn write(c: &ProcessCluster, key: &str) -> Outcome {
    c.client(T)
        .write(Write::Put {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
        })
        .expect("a write")
}

/// Proves that without the flag both test tools are refused with the clear reason and exit
/// code 2 (in text and in JSON), that the node logs each refusal, that the fault layer stays
/// off, and that the node neither aborted nor stopped serving writes.
#[test]
fn fault_and_crash_are_refused_without_the_flag() {
    let mut c = one_node(false);
    let (code, out) = c.raftctl(&["fault", "1", "--drop", "100"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(FAULT_INJECTION_OFF), "{out}");
    assert_eq!(drop_percent(&c), 0.0);

    let (code, out) = c.raftctl(&["--json", "fault", "1", "--partition", "2"]);
    assert_eq!(code, 2, "{out}");
    let answer: serde_json::Value = serde_json::from_str(out.lines().next().unwrap_or(""))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {out}"));
    assert_eq!(answer["ok"], false, "{out}");
    assert_eq!(answer["error"], FAULT_INJECTION_OFF, "{out}");

    let (code, out) = c.raftctl(&["kill", "1", "--crash"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(FAULT_INJECTION_OFF), "{out}");
    assert!(
        c.wait_exit(1, Duration::from_millis(500)).is_none(),
        "the node exited although the crash was refused; its log:\n{}",
        c.log_tail(1)
    );
    assert!(matches!(write(&c, "after"), Outcome::Written { .. }));
    c.assert_logged(1, "refused a fault request");
    c.assert_logged(1, "refused a kill --crash request");

    // A graceful stop is no fault injection: it still works (exit 0).
    let (code, out) = c.raftctl(&["kill", "1"]);
    assert_eq!(code, 0, "{out}");
    let status = c.wait_exit(1, T).expect("node 1 stops");
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// Proves that with `--enable-fault-injection` the fault layer is set and cleared through
/// `raftctl fault` (seen in `status`), and `raftctl kill --crash` aborts the process
/// (SIGABRT, no clean exit); and that `raftd --help` documents the flag.
#[test]
fn fault_and_crash_work_with_the_flag() {
    let mut c = one_node(true);
    let (code, out) = c.raftctl(&["fault", "1", "--drop", "50"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(drop_percent(&c), 50.0);
    let (code, out) = c.raftctl(&["fault", "1", "--clear"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(drop_percent(&c), 0.0);

    let (code, out) = c.raftctl(&["kill", "1", "--crash"]);
    assert_eq!(code, 0, "{out}");
    let status = c
        .wait_exit(1, T)
        .unwrap_or_else(|| panic!("node 1 still runs; its log:\n{}", c.log_tail(1)));
    // SIGABRT is 6 on Linux: `std::process::abort`, not a clean exit.
    assert_eq!(status.signal(), Some(6), "{status:?}");
    c.assert_logged(1, "crash requested, aborting now");

    let help = Command::new(raftd_binary())
        .arg("--help")
        .output()
        .expect("raftd --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--enable-fault-injection"), "{help}");
}
