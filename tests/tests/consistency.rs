//! The cross-node consistency check on real processes. Three nodes whose leader checks
//! every second; `raftctl check consistency` finds them equal (exit 0). Then one follower
//! is stopped and restarted as `raftd-faulty` (raftd built with the test-only `test-faults`
//! feature), which applies one put with a changed value: its store differs while every CRC
//! on its disk and on the wire passes. After more writes, `raftctl check consistency` names
//! exactly that node (exit 2), the leader's periodic check raises the alarm in its status
//! and `raftctl status`, with a loud log line; and with that node stopped, the check cannot
//! decide (exit 3).

use raftd::protocol::{Outcome, Write};
use raftd_tests::cluster::{workspace_binary_with, ClusterOptions, ProcessCluster};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn put(client: &mut raftd::client::Client, i: usize) -> u64 {
    let write = Write::Put {
        key: format!("key-{i:03}").into_bytes(),
        value: format!("value-{i:03}").into_bytes(),
    };
    match client.write(write).expect("write") {
        Outcome::Written { index, .. } => index,
        other => panic!("{other:?}"),
    }
}

/// Runs raftctl against the cluster: exit code, and stdout with stderr.
fn raftctl(c: &ProcessCluster, args: &[&str]) -> (i32, String) {
    c.raftctl(args)
}

/// Waits until `f` holds of node `id`'s status document.
fn wait_status(c: &ProcessCluster, id: u64, f: impl Fn(&serde_json::Value) -> bool) -> bool {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        if c.status(id).is_some_and(|s| f(&s)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[test]
fn consistency_check_names_the_diverging_node() {
    let options = ClusterOptions {
        consistency_check_secs: 1,
        ..ClusterOptions::default()
    };
    let mut c = ProcessCluster::start(3, options);
    let leader = c
        .wait_leader(&c.ids(), T)
        .unwrap_or_else(|| panic!("no leader; node 1 log:\n{}", c.log_tail(1)));
    let mut client = c.client(T);
    for i in 0..20 {
        put(&mut client, i);
    }
    let (code, out) = raftctl(&c, &["check", "consistency"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("all 3 nodes have the same hash"), "{out}");
    let (code, out) = raftctl(&c, &["--json", "check", "consistency"]);
    assert_eq!(code, 0, "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(doc["verdict"], "agree", "{doc}");
    assert_eq!(doc["nodes"].as_array().map(Vec::len), Some(3), "{doc}");
    // The periodic check compares too: the leader hears three equal hashes, no alarm.
    let three_equal = |s: &serde_json::Value| {
        let hashes: Vec<&serde_json::Value> = s["checkpoint"]["hashes"]
            .as_object()
            .map(|h| h.values().collect())
            .unwrap_or_default();
        hashes.len() == 3 && hashes.iter().all(|h| *h == hashes[0])
    };
    assert!(
        wait_status(&c, leader, three_equal),
        "{:?}",
        c.status(leader)
    );
    assert!(c.status(leader).unwrap()["alarm"].is_null());

    let victim = c
        .ids()
        .into_iter()
        .find(|&id| id != leader)
        .expect("a follower");
    assert_eq!(c.terminate(victim), Some(0));
    let faulty = workspace_binary_with("raftd", "raftd-faulty", &["test-faults"]);
    c.spawn_binary(victim, &faulty);
    let mut last = 0;
    for i in 20..25 {
        last = put(&mut client, i);
    }
    assert!(
        c.wait_applied(victim, last, T),
        "node {victim} did not catch up\n{}",
        c.log_tail(victim)
    );
    c.assert_logged(victim, "TEST FAULT");

    let (code, out) = raftctl(&c, &["check", "consistency"]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains(&format!("divergence: node {victim} hash")),
        "the verdict does not name node {victim}:\n{out}"
    );
    let diverging: Vec<&str> = out.lines().filter(|l| l.contains("DIVERGES")).collect();
    assert_eq!(diverging.len(), 1, "{out}");
    assert!(diverging[0].starts_with(&format!("{victim} ")), "{out}");
    let (code, out) = raftctl(&c, &["--json", "check", "consistency"]);
    assert_eq!(code, 2, "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect(&out);
    assert_eq!(doc["diverging"], serde_json::json!([victim]), "{doc}");

    // The leader's own periodic check raises the alarm, visible in its status, in `raftctl
    // status`, and as a loud line in its log.
    let names_victim = |s: &serde_json::Value| {
        s["alarm"]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("divergence: node {victim} hash")))
    };
    assert!(
        wait_status(&c, leader, names_victim),
        "no alarm naming node {victim}: {:?}",
        c.status(leader)
    );
    let (code, out) = raftctl(&c, &["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("ALARM: divergence: node {victim} hash")),
        "{out}"
    );
    c.assert_logged(leader, "CONSISTENCY ALARM");

    // With the diverging node down, the other two agree, but nobody can tell for the
    // cluster: could not decide.
    c.kill9(victim);
    let (code, out) = raftctl(&c, &["check", "consistency"]);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("could not decide"), "{out}");
}
