//! A damaged disk on real processes, the scenario that once lost acknowledged writes: three
//! nodes; one is cut off while 20 writes are acknowledged, so they are on the other two
//! only; all stop; one bit flips inside one of those values in one of the two WALs; the
//! other of the two stays down. The damaged node must find the damage by itself (no flag),
//! cut its log and stay out of elections, so the two running nodes stay without a leader
//! rather than elect one that lacks the writes. Once the third node is back, every
//! acknowledged write reads back through every node, and the damaged node is an ordinary
//! voter again. Run with the damage in a follower's WAL and in the leader's.

use raftd::protocol::{FaultSpec, Op, Outcome, Write};
use raftd_tests::cluster::{ClusterOptions, ProcessCluster};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

fn value(i: usize) -> Vec<u8> {
    format!("acknowledged-value-{i:02}-{}", "x".repeat(40)).into_bytes()
}

/// Flips one bit in the middle of `needle` in the first WAL segment of `dir` holding it.
fn flip_bit_inside(dir: &std::path::Path, needle: &[u8]) {
    let mut segments: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    for path in segments {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at + needle.len() / 2] ^= 0x10;
            std::fs::write(&path, bytes).unwrap();
            return;
        }
    }
    panic!("no WAL segment in {} holds the value", dir.display());
}

/// Waits for a leader, writes `count` puts (`kv(i)` gives key and value) through the
/// cluster and waits until a follower applied them all; returns the follower and the commit
/// index.
fn write_and_wait_for_a_follower(
    c: &ProcessCluster,
    count: usize,
    kv: impl Fn(usize) -> (Vec<u8>, Vec<u8>),
) -> (u64, u64) {
    let a = c
        .wait_leader(&c.ids(), T)
        .unwrap_or_else(|| panic!("no leader; node 1 log:\n{}", c.log_tail(1)));
    let b = c.ids().into_iter().find(|&i| i != a).unwrap();
    let mut client = c.client(T);
    for i in 0..count {
        let (key, value) = kv(i);
        let outcome = client.write(Write::Put { key, value }).unwrap();
        assert!(matches!(outcome, Outcome::Written { .. }), "{outcome:?}");
    }
    let commit = c.status(a).unwrap()["commit"].as_u64().unwrap();
    assert!(c.wait_applied(b, commit, T));
    (b, commit)
}

fn damaged_node_keeps_acknowledged_writes(damage_leader: bool) {
    let options = ClusterOptions {
        fault_injection: true,
        ..ClusterOptions::default()
    };
    let mut c = ProcessCluster::start(3, options);
    let a = c
        .wait_leader(&c.ids(), T)
        .unwrap_or_else(|| panic!("no leader; node 1 log:\n{}", c.log_tail(1)));
    let others: Vec<u64> = c.ids().into_iter().filter(|&i| i != a).collect();
    let (b, cut_off) = (others[0], others[1]);
    let mut via = c.client_over(&[cut_off], T);
    let partition = FaultSpec {
        partition: vec![a, b],
        ..FaultSpec::default()
    };
    via.call_node(c.addr(cut_off), Op::Fault(partition))
        .unwrap();
    let mut client = c.client_over(&[a, b], T);
    for i in 0..20 {
        let put = Write::Put {
            key: format!("damage-{i:02}").into_bytes(),
            value: value(i),
        };
        let outcome = client.write(put).unwrap();
        assert!(matches!(outcome, Outcome::Written { .. }), "{outcome:?}");
    }
    for id in c.ids() {
        c.terminate(id);
    }
    let (damaged, down) = if damage_leader { (a, b) } else { (b, a) };
    flip_bit_inside(&c.data_dir(damaged).join("wal"), &value(7));
    c.spawn(damaged);
    c.spawn(cut_off);
    // Several election timeouts: the damaged node must neither vote nor campaign, so no
    // leader can appear without the down node, which holds the only whole copy.
    // A node starting on a busy machine may take seconds to open its WAL (it scans and
    // zero-fills 64 MiB segments): wait until the damaged one answers, then watch.
    let up = Instant::now() + 3 * T;
    while c.status(damaged).is_none() {
        assert!(
            Instant::now() < up,
            "node {damaged} does not answer\n{}",
            c.log_tail(damaged)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let until = Instant::now() + Duration::from_secs(4);
    let mut saw_repairing = false;
    while Instant::now() < until {
        for id in [damaged, cut_off] {
            if let Some(s) = c.status(id) {
                assert_ne!(
                    s["role"], "leader",
                    "node {id} leads while node {down} is down and node {damaged} is damaged: {s}\n{}",
                    c.log_tail(damaged)
                );
                saw_repairing |= id == damaged && s["repairing"] == true;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        saw_repairing,
        "node {damaged} never reported repairing\n{}",
        c.log_tail(damaged)
    );
    let log = std::fs::read_to_string(c.log_path(damaged)).unwrap();
    assert!(
        log.contains("DAMAGED WAL"),
        "no loud line\n{}",
        c.log_tail(damaged)
    );
    c.spawn(down);
    let leader = c
        .wait_leader(&c.ids(), 3 * T)
        .expect("a leader once all are up");
    let mut last = 0;
    for id in c.ids() {
        let mut read = c.client_over(&[id], T);
        for i in 0..20 {
            let key = format!("damage-{i:02}").into_bytes();
            assert_eq!(
                read.get(&key).unwrap(),
                Some(value(i)),
                "node {id} lost acknowledged write {i} (leader {leader}, damaged {damaged})"
            );
        }
        last = last.max(c.status(id).unwrap()["commit"].as_u64().unwrap());
    }
    let deadline = Instant::now() + 3 * T;
    while c.status(damaged).is_some_and(|s| s["repairing"] == true) {
        assert!(
            Instant::now() < deadline,
            "node {damaged} still repairing at commit {last}\n{}",
            c.log_tail(damaged)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let log = std::fs::read_to_string(c.log_path(damaged)).unwrap();
    assert!(log.contains("repair finished"), "{}", c.log_tail(damaged));
}

#[test]
fn a_damaged_follower_keeps_acknowledged_writes() {
    damaged_node_keeps_acknowledged_writes(false);
}

#[test]
fn a_damaged_leader_keeps_acknowledged_writes() {
    damaged_node_keeps_acknowledged_writes(true);
}

/// A damaged snapshot file, which no cut can mend: the follower discards its log and
/// snapshots, keeps its term and vote, stays out of elections, and is sent the leader's
/// snapshot; every acknowledged write then reads back through it, and its repair ends.
#[test]
fn a_damaged_snapshot_file_is_repaired_from_the_leader() {
    let options = ClusterOptions {
        snapshot_entries: 50,
        ..ClusterOptions::default()
    };
    let mut c = ProcessCluster::start(3, options);
    let (b, commit) =
        write_and_wait_for_a_follower(&c, 200, |i| (format!("snap-{i:03}").into_bytes(), value(i)));
    c.terminate(b);
    // Damage every snapshot file the follower holds, so the one its log depends on is
    // surely among them (a newer file may exist whose marker never became durable).
    let wal = c.data_dir(b).join("wal");
    let snapshots: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    assert!(!snapshots.is_empty(), "the follower took no snapshot");
    for snapshot in snapshots {
        let mut bytes = std::fs::read(&snapshot).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x04;
        std::fs::write(&snapshot, bytes).unwrap();
    }
    c.spawn(b);
    let deadline = Instant::now() + 3 * T;
    while !c.wait_applied(b, commit, Duration::from_millis(200)) {
        assert!(
            Instant::now() < deadline,
            "node {b} did not catch up\n{}",
            c.log_tail(b)
        );
    }
    let log = std::fs::read_to_string(c.log_path(b)).unwrap();
    assert!(
        log.contains("DAMAGED WAL"),
        "no loud line\n{}",
        c.log_tail(b)
    );
    let mut read = c.client_over(&[b], T);
    for i in (0..200).step_by(17) {
        let key = format!("snap-{i:03}").into_bytes();
        assert_eq!(
            read.get(&key).unwrap(),
            Some(value(i)),
            "write {i} through node {b}"
        );
    }
    let deadline = Instant::now() + 3 * T;
    while c.status(b).is_some_and(|s| s["repairing"] == true) {
        assert!(
            Instant::now() < deadline,
            "node {b} still repairing\n{}",
            c.log_tail(b)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Bit rot on a running node's disk: one bit flips in the middle of a value in its oldest
/// sealed WAL segment while it runs. Its scrubber must find the damage by itself, report it
/// in `status`, and mend it with a snapshot (the node holds every entry in memory or in its
/// store), after which the damaged segment is gone, nothing is marked damaged, and a
/// restart finds a whole log (no repair).
#[test]
fn the_scrubber_finds_and_mends_bit_rot_on_a_running_node() {
    let options = ClusterOptions {
        snapshot_entries: 1_000_000,
        wal_segment_mib: 1,
        scrub_kib_per_sec: 65_536,
        ..ClusterOptions::default()
    };
    let mut c = ProcessCluster::start(3, options);
    let big = |i: usize| format!("rot-{i:04}-{}", "v".repeat(1000)).into_bytes();
    let (b, commit) =
        write_and_wait_for_a_follower(&c, 2500, |i| (format!("rot-{i:04}").into_bytes(), big(i)));
    let wal = c.data_dir(b).join("wal");
    let mut segments: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 3, "too few segments: {segments:?}");
    let oldest = segments[0].clone();
    // One byte rewritten in place, as rot would leave it (the file stays mapped by raftd).
    {
        use std::os::unix::fs::FileExt;
        let bytes = std::fs::read(&oldest).unwrap();
        let needle = big(100);
        let at = bytes
            .windows(needle.len())
            .position(|w| w == &needle[..])
            .expect("value 100 is in the oldest segment")
            + 500;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&oldest)
            .unwrap();
        file.write_at(&[bytes[at] ^ 0x08], at as u64).unwrap();
    }
    let deadline = Instant::now() + 3 * T;
    let scrub = loop {
        let status = c.status(b).expect("node answers");
        let scrub = status["scrub"].clone();
        if scrub["damage_found"].as_u64().unwrap_or(0) >= 1
            && scrub["damaged_files"]
                .as_array()
                .is_some_and(|f| f.is_empty())
            && !oldest.exists()
        {
            break scrub;
        }
        assert!(
            Instant::now() < deadline,
            "node {b} did not find and mend the damage: {scrub}\n{}",
            c.log_tail(b)
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        scrub["last_damage"]
            .as_str()
            .is_some_and(|d| d.contains(&*oldest.file_name().unwrap().to_string_lossy())),
        "{scrub}"
    );
    let log = std::fs::read_to_string(c.log_path(b)).unwrap();
    assert!(log.contains("DAMAGED WAL found by the scrubber"), "{log}");
    assert!(!wal.join(wal::REPAIR_FILE).exists());
    c.terminate(b);
    c.spawn(b);
    assert!(
        c.wait_applied(b, commit, 3 * T),
        "node {b} did not come back\n{}",
        c.log_tail(b)
    );
    let status = c.status(b).unwrap();
    assert_eq!(status["repairing"], false, "{status}");
    let log = std::fs::read_to_string(c.log_path(b)).unwrap();
    assert!(!log.contains("corruption in"), "{log}");
}
