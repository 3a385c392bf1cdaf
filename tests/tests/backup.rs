//! Backups on real processes (`raftctl snapshot save / inspect / restore`).
//!
//! The main test saves a backup while four clients write as fast as they can, restores it
//! into a fresh 3-node cluster and reads every key back: each equals the value of the
//! source's last write to it at or before the backup's index (every write's index is known
//! from its answer), and keys first written after that index are absent. The others feed the
//! commands bad inputs: a truncated or damaged file (inspect says DAMAGED, exit 2; restore
//! refuses with exit 1 and creates nothing), a data directory that is not empty, an id not in
//! --peers, a cluster that is down (save exits 2 and leaves no file), and a data directory an
//! interrupted restore left (raftd refuses to start); `raftctl snapshot ID` still works.

use raftd::protocol::{Outcome, Write};
use raftd_tests::cluster::{raftd_binary, run_raftctl, ClusterOptions, ProcessCluster};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// Keys each writer cycles through, so keys are overwritten many times.
const KEYS_PER_WRITER: u64 = 200;

/// (key, value, index) of every acknowledged write of one client, until `stop`.
fn writer(
    c: &ProcessCluster,
    n: u64,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<(String, String, u64)>> {
    let mut client = c.client(T);
    std::thread::spawn(move || {
        let mut done = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let key = format!("w{n}-{:03}", i % KEYS_PER_WRITER);
            let value = format!("v{i}");
            let write = Write::Put {
                key: key.clone().into_bytes(),
                value: value.clone().into_bytes(),
            };
            match client.write(write) {
                Ok(Outcome::Written { index, .. }) => done.push((key, value, index)),
                other => panic!("write {key} failed in a healthy cluster: {other:?}"),
            }
            i += 1;
        }
        done
    })
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.lines().next().unwrap_or(""))
        .unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn a_backup_saved_under_writes_restores_into_a_new_cluster_holding_the_store_at_its_index() {
    let options = ClusterOptions {
        // Automatic snapshots happen while the backup is taken.
        snapshot_entries: 2000,
        ..ClusterOptions::default()
    };
    let source = ProcessCluster::start(3, options.clone());
    source.wait_leader(&source.ids(), T).expect("a leader");
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4).map(|n| writer(&source, n, stop.clone())).collect();
    std::thread::sleep(Duration::from_millis(1500));
    // Outside the source's directory, which goes when the source cluster is dropped.
    let backups = tempfile_dir();
    let file = backups.join("backup.bak");
    let file_arg = file.to_str().unwrap();
    let (code, out) = source.raftctl(&["--json", "snapshot", "save", file_arg]);
    assert_eq!(code, 0, "{out}");
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let writes: Vec<_> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let saved = json(&out);
    let index = saved["index"].as_u64().unwrap();
    let after = writes.iter().filter(|w| w.2 > index).count();
    assert!(
        after > 0,
        "no write came after the backup: it was not taken under writes"
    );

    // The store at `index`: each key's last write at or before it.
    let mut expected: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut keys = std::collections::BTreeSet::new();
    for (key, value, at) in &writes {
        keys.insert(key.clone());
        if *at <= index && expected.get(key).is_none_or(|(i, _)| i < at) {
            expected.insert(key.clone(), (*at, value.clone()));
        }
    }
    assert_eq!(saved["keys"].as_u64(), Some(expected.len() as u64), "{out}");
    let (code, out) = run_raftctl(&["--json"], &["snapshot", "inspect", file_arg]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(json(&out)["index"].as_u64(), Some(index));
    drop(source);

    let restored_options = ClusterOptions {
        cluster_id: "restored".into(),
        ..options
    };
    let mut restored = ProcessCluster::prepare(3, restored_options);
    for id in restored.ids() {
        let dir = restored.data_dir(id);
        let (code, out) = run_raftctl(
            &[],
            &[
                "snapshot",
                "restore",
                file_arg,
                "--data-dir",
                dir.to_str().unwrap(),
                "--id",
                &id.to_string(),
                "--peers",
                &restored.peers_arg(),
                "--cluster-id",
                "restored",
            ],
        );
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("start it with: raftd --id"), "{out}");
    }
    for id in restored.ids() {
        restored.spawn(id);
    }
    restored
        .wait_leader(&restored.ids(), T)
        .expect("the restored cluster elects a leader");
    let mut client = restored.client(T);
    for key in &keys {
        let got = client.get(key.as_bytes()).expect("read");
        let want = expected.get(key).map(|(_, v)| v.as_bytes().to_vec());
        assert_eq!(
            got, want,
            "key {key} differs from the source at index {index}"
        );
    }
    // It is a working cluster, not a read-only copy.
    let write = Write::Put {
        key: b"after-restore".to_vec(),
        value: b"yes".to_vec(),
    };
    match client.write(write).expect("write") {
        Outcome::Written { index: at, .. } => assert!(at > index),
        other => panic!("{other:?}"),
    }
    let _ = std::fs::remove_dir_all(&backups);
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x01;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn damaged_truncated_or_misdirected_backups_are_refused_and_nothing_is_left_half_made() {
    let c = ProcessCluster::start(3, ClusterOptions::default());
    c.wait_leader(&c.ids(), T).expect("a leader");
    let mut client = c.client(T);
    for i in 0..50 {
        let write = Write::Put {
            key: format!("k{i}").into_bytes(),
            value: vec![b'x'; 100],
        };
        client.write(write).expect("write");
    }
    // `snapshot ID` still takes a snapshot on one node.
    let (code, out) = c.raftctl(&["snapshot", "2"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("snapshot taken at index"), "{out}");
    let (code, out) = c.raftctl(&["snapshot"]);
    assert_eq!(code, 1, "{out}");

    let good = c.dir().join("good.bak");
    let (code, out) = c.raftctl(&["snapshot", "save", good.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("keys     50"), "{out}");
    let len = std::fs::metadata(&good).unwrap().len() as usize;

    let truncated = c.dir().join("truncated.bak");
    let bytes = std::fs::read(&good).unwrap();
    std::fs::write(&truncated, &bytes[..len - 100]).unwrap();
    let damaged = c.dir().join("damaged.bak");
    std::fs::write(&damaged, &bytes).unwrap();
    flip_byte(&damaged, len - 300);
    let bad_header = c.dir().join("bad-header.bak");
    std::fs::write(&bad_header, &bytes).unwrap();
    flip_byte(&bad_header, 20);
    for (file, why) in [
        (&truncated, "truncated"),
        (&damaged, "CRC"),
        (&bad_header, "header"),
    ] {
        let f = file.to_str().unwrap();
        let (code, out) = run_raftctl(&[], &["snapshot", "inspect", f]);
        assert_eq!(code, 2, "{out}");
        assert!(out.contains("DAMAGED") && out.contains(why), "{out}");
        let dir = c.dir().join("restore-damaged");
        let (code, out) = run_raftctl(
            &[],
            &[
                "snapshot",
                "restore",
                f,
                "--data-dir",
                dir.to_str().unwrap(),
                "--id",
                "1",
                "--peers",
                "1=127.0.0.1:1",
            ],
        );
        assert_eq!(code, 1, "{out}");
        assert!(
            out.contains("not a usable backup") && out.contains(why),
            "{out}"
        );
        assert!(!dir.exists(), "a refused restore created {}", dir.display());
    }
    let (code, out) = run_raftctl(&[], &["snapshot", "inspect", "/nonexistent.bak"]);
    assert_eq!(code, 1, "{out}");

    // A data directory that is not empty, an id not in --peers, no --peers.
    let full = c.dir().join("full");
    std::fs::create_dir_all(&full).unwrap();
    std::fs::write(full.join("something"), b"x").unwrap();
    let g = good.to_str().unwrap();
    let restore = |dir: &Path, id: &str, peers: &[&str]| {
        let mut args = vec![
            "snapshot",
            "restore",
            g,
            "--data-dir",
            dir.to_str().unwrap(),
            "--id",
            id,
        ];
        args.extend_from_slice(peers);
        run_raftctl(&[], &args)
    };
    let (code, out) = restore(&full, "1", &["--peers", "1=127.0.0.1:1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not empty"), "{out}");
    assert_eq!(std::fs::read_dir(&full).unwrap().count(), 1);
    let fresh = c.dir().join("fresh");
    let (code, out) = restore(&fresh, "4", &["--peers", "1=127.0.0.1:1"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not in --peers"), "{out}");
    let (code, out) = restore(&fresh, "1", &[]);
    assert_eq!(code, 1, "{out}");
    assert!(!fresh.exists());

    // An interrupted restore (its marker still there): raftd refuses the directory.
    let (code, out) = restore(&fresh, "1", &["--peers", "1=127.0.0.1:1"]);
    assert_eq!(code, 0, "{out}");
    std::fs::write(fresh.join("RESTORING"), b"").unwrap();
    let out = std::process::Command::new(raftd_binary())
        .args([
            "--id",
            "1",
            "--peers",
            "1=127.0.0.1:0",
            "--data-dir",
            fresh.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("interrupted restore"), "{text}");

    // The cluster down: save fails definitely and leaves no file, not even a temporary one.
    let c_addrs: Vec<String> = c.ids().iter().map(|&id| c.addr(id).to_string()).collect();
    drop(c);
    let dir = tempfile_dir();
    let target = dir.join("down.bak");
    let (code, out) = run_raftctl(
        &["--cluster", &c_addrs.join(","), "--timeout", "1s"],
        &["snapshot", "save", target.to_str().unwrap()],
    );
    assert_eq!(code, 2, "{out}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "save left a file"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("raftd-backup-test-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
