//! `raftctl wal verify`, `raftctl wal dump` and `raftctl check disk` on real data.
//!
//! A node of a 3-node cluster is stopped after 300 writes: verify finds its WAL intact
//! (exit 0) and changes no byte or file name of it; dump prints the entries asked for with
//! their keys; a running node's directory is refused (exit 1), as are a missing directory
//! and a backwards range; a flipped bit in a written record is reported as damage naming the
//! segment file and an offset at or before the bit (exit 2), by dump too. `check disk`
//! prints the fdatasync percentiles and a verdict with exit 0 or 2, leaves nothing behind,
//! and refuses a missing directory or too few syncs (exit 1).

use raftd::protocol::Write;
use raftd_tests::cluster::{run_raftctl, ClusterOptions, ProcessCluster};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// Every file's name and bytes.
fn contents(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect()
}

#[test]
fn verify_and_dump_read_a_stopped_node_and_find_a_flipped_bit() {
    let mut c = ProcessCluster::start(
        3,
        ClusterOptions {
            // No scrubbing, no snapshot: the log stays in the first segment.
            scrub_kib_per_sec: 0,
            ..ClusterOptions::default()
        },
    );
    c.wait_leader(&c.ids(), T).expect("a leader");
    let mut client = c.client(T);
    for i in 0..300 {
        let write = Write::Put {
            key: format!("key-{i:03}").into_bytes(),
            value: vec![b'v'; 64],
        };
        client.write(write).expect("write");
    }
    let running = c.data_dir(1);
    let (code, out) = run_raftctl(&[], &["wal", "verify", running.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("stop it first"), "{out}");

    let stopped = 2;
    assert_eq!(c.terminate(stopped), Some(0));
    let dir = c.data_dir(stopped);
    let d = dir.to_str().unwrap();
    let wal_dir = dir.join("wal");
    let before = contents(&wal_dir);
    let (code, out) = run_raftctl(&[], &["wal", "verify", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("intact: snapshot at 0"), "{out}");
    let (code, out) = run_raftctl(&["--json"], &["wal", "verify", d]);
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert!(report["last_index"].as_u64().unwrap() >= 300, "{report}");
    assert_eq!(report["damage"], serde_json::Value::Null);

    let (code, out) = run_raftctl(&[], &["wal", "dump", d, "--from", "10", "--to", "12"]);
    assert_eq!(code, 0, "{out}");
    let rows: Vec<&str> = out.lines().filter(|l| l.contains(".wal")).collect();
    assert_eq!(rows.len(), 3, "{out}");
    for row in &rows {
        assert!(row.contains(" put ") && row.contains("key-"), "{row}");
    }
    let (code, out) = run_raftctl(&["--json"], &["wal", "dump", d]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.lines().any(|l| l.contains("\"kind\":\"hardstate\"")),
        "{out}"
    );
    assert!(
        out.lines().any(|l| l.contains("\"key\":\"key-299\"")),
        "{out}"
    );
    assert_eq!(
        contents(&wal_dir),
        before,
        "verify or dump changed the directory"
    );

    let (code, out) = run_raftctl(&[], &["wal", "dump", d, "--from", "9", "--to", "3"]);
    assert_eq!(code, 1, "{out}");
    let (code, out) = run_raftctl(&[], &["wal", "verify", "/nonexistent-raftd-dir"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not exist"), "{out}");

    // A flipped bit in the middle of the written records.
    let segment = before
        .keys()
        .find(|p| p.extension().is_some_and(|x| x == "wal"))
        .unwrap()
        .clone();
    let mut bytes = before[&segment].clone();
    let written = bytes.iter().rposition(|&b| b != 0).unwrap();
    let at = written / 2;
    bytes[at] ^= 0x04;
    std::fs::write(&segment, &bytes).unwrap();
    for command in ["verify", "dump"] {
        let (code, out) = run_raftctl(&["--json"], &["wal", command, d]);
        assert_eq!(code, 2, "{out}");
        let report: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
        let damage = &report["damage"];
        assert_eq!(damage["file"].as_str(), segment.to_str(), "{report}");
        let offset = damage["offset"].as_u64().unwrap() as usize;
        assert!(
            offset <= at && at - offset < 4096,
            "damage at {offset}, bit at {at}"
        );
    }
    let (code, out) = run_raftctl(&[], &["wal", "verify", d]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("DAMAGED: ") && out.contains(&format!("{}", segment.display())),
        "{out}"
    );
}

#[test]
fn check_disk_measures_and_judges_and_refuses_bad_input() {
    let dir = std::env::temp_dir().join(format!("raftd-disk-test-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let (code, out) = run_raftctl(&[], &["check", "disk", d, "--syncs", "200", "--mib", "8"]);
    assert!(code == 0 || code == 2, "{out}");
    assert!(
        out.contains("p50") && out.contains("p99") && out.contains("MiB/s"),
        "{out}"
    );
    assert_eq!(out.contains("NOT FIT"), code == 2, "{out}");
    let (code, out) = run_raftctl(
        &["--json"],
        &["check", "disk", d, "--syncs", "100", "--mib", "4"],
    );
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["fit"].as_bool(), Some(code == 0), "{out}");
    assert!(report["fdatasync_p99_ms"].as_f64().unwrap() > 0.0, "{out}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "check disk left a file"
    );
    let (code, out) = run_raftctl(&[], &["check", "disk", "/nonexistent-raftd-dir"]);
    assert_eq!(code, 1, "{out}");
    let (code, out) = run_raftctl(&[], &["check", "disk", d, "--syncs", "5"]);
    assert_eq!(code, 1, "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}
