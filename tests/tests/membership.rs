//! Membership changes on real processes, as an operator runs them (README, "Replacing a
//! host"): a client writes all the time; a host is killed for good; a fresh node on a new
//! address joins (`raftd --join`), is added (`raftctl member add`) and the dead one removed
//! (`raftctl member remove`). Then the cluster grows from three voters to five and shrinks
//! back to three, the leader among those removed. No acknowledged write may be lost, and
//! writes may not stop for more than a few election timeouts. Each runs twice: on
//! 127.0.0.1, and with every node in its own network namespace with its own address, as on
//! separate hosts (root, `ip` and `nft`: ignored unless asked for with `--ignored`, and
//! then a machine without them fails it; CI runs as root and runs them).

use raftd::protocol::{Outcome, Write};
use raftd_tests::cluster::{
    command_output, raftd_binary, workspace_binary, ClusterOptions, ProcessCluster,
};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(10);

/// The longest writes may stop: a few election timeouts (the tests' clusters use 1 s).
const GAP_MAX: Duration = Duration::from_secs(5);

/// A client writing unique keys as fast as it is answered, through `nodes`.
struct Writer {
    stop: Arc<AtomicBool>,
    acknowledged: Arc<Mutex<Vec<u64>>>,
    longest_gap: Arc<Mutex<Duration>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn start(c: &ProcessCluster, nodes: &[u64]) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acknowledged = Arc::new(Mutex::new(Vec::new()));
        let longest_gap = Arc::new(Mutex::new(Duration::ZERO));
        let mut client = c.client_over(nodes, T);
        let (s, a, g) = (stop.clone(), acknowledged.clone(), longest_gap.clone());
        let thread = std::thread::spawn(move || {
            let mut last_ok = Instant::now();
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                let put = Write::Put {
                    key: format!("m-{i:06}").into_bytes(),
                    value: i.to_string().into_bytes(),
                };
                if let Ok(Outcome::Written { .. }) = client.write(put) {
                    a.lock().unwrap().push(i);
                    let gap = last_ok.elapsed();
                    let mut longest = g.lock().unwrap();
                    *longest = (*longest).max(gap);
                    last_ok = Instant::now();
                }
                i += 1;
            }
        });
        Writer {
            stop,
            acknowledged,
            longest_gap,
            thread: Some(thread),
        }
    }

    /// Stops the writer; returns the acknowledged keys and the longest time between two
    /// acknowledged writes.
    fn finish(mut self) -> (Vec<u64>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap();
        let acknowledged = self.acknowledged.lock().unwrap().clone();
        let gap = *self.longest_gap.lock().unwrap();
        (acknowledged, gap)
    }

    fn count(&self) -> usize {
        self.acknowledged.lock().unwrap().len()
    }
}

fn raftctl_ok(c: &ProcessCluster, args: &[&str]) -> String {
    let (code, out) = c.raftctl(args);
    assert_eq!(code, 0, "raftctl {args:?}: {out}");
    out
}

/// The members `raftctl member list --json` shows: (id, role).
fn members(c: &ProcessCluster) -> Vec<(u64, String)> {
    let out = raftctl_ok(c, &["--json", "member", "list"]);
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect(&out);
    v["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap(),
                m["role"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every acknowledged key reads back through `via`, with its value.
fn check_all_read_back(c: &ProcessCluster, via: &[u64], acknowledged: &[u64]) {
    let mut client = c.client_over(via, T);
    for &i in acknowledged {
        let got = client.get(format!("m-{i:06}").as_bytes()).unwrap();
        assert_eq!(
            got.as_deref(),
            Some(i.to_string().as_bytes()),
            "acknowledged write m-{i:06} lost"
        );
    }
}

/// Waits until the writer has had `n` more writes acknowledged.
fn wait_writes(w: &Writer, n: usize) {
    let target = w.count() + n;
    let deadline = Instant::now() + 3 * T;
    while w.count() < target {
        assert!(Instant::now() < deadline, "writes stopped");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Node `id`'s status, asked again while it does not answer in time (a loaded machine), for
/// up to `T`.
fn status_of(c: &ProcessCluster, id: u64) -> serde_json::Value {
    let deadline = Instant::now() + T;
    loop {
        if let Some(s) = c.status(id) {
            return s;
        }
        assert!(Instant::now() < deadline, "node {id} gives no status");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn voters(ids: &[u64]) -> Vec<(u64, String)> {
    ids.iter().map(|&id| (id, "voter".to_string())).collect()
}

#[test]
fn replacing_a_host_loses_no_acknowledged_write() {
    replace_a_host(ProcessCluster::start(3, ClusterOptions::default()));
}

#[test]
#[ignore = "needs root, ip and nft (network namespaces); run with --ignored"]
fn replacing_a_host_in_namespaces_loses_no_acknowledged_write() {
    replace_a_host(ProcessCluster::start_netns(3, ClusterOptions::default()));
}

/// Host 3 dies for good; node 4, a new host on a new address, joins and is added; 3 is
/// removed. Every acknowledged write survives, node 4 holds them all, and writes stop for
/// at most a few election timeouts.
fn replace_a_host(mut c: ProcessCluster) {
    c.wait_leader(&c.ids(), T)
        .unwrap_or_else(|| panic!("no leader; node 1 log:\n{}", c.log_tail(1)));
    let writer = Writer::start(&c, &[1, 2, 3]);
    wait_writes(&writer, 200);
    // Host 3 dies for good.
    c.kill9(3);
    wait_writes(&writer, 200);
    // A fresh node on a new address joins, is added (caught up, promoted), 3 removed.
    let new = c.add_joiner();
    c.spawn(new);
    let address = c.addr(new).to_string();
    assert!(
        (1..=3).all(|id| c.addr(id) != c.addr(new)),
        "node {new} has an address of its own"
    );
    let out = raftctl_ok(&c, &["member", "add", &new.to_string(), &address]);
    assert!(out.contains(&format!("promote {new} committed")), "{out}");
    raftctl_ok(&c, &["member", "remove", "3"]);
    wait_writes(&writer, 200);
    let (acknowledged, gap) = writer.finish();
    assert_eq!(members(&c), voters(&[1, 2, new]));
    check_all_read_back(&c, &[1, 2, new], &acknowledged);
    // The new node holds everything too.
    let leader = c.wait_leader(&[1, 2, new], T).expect("a leader");
    let commit = status_of(&c, leader)["commit"].as_u64().unwrap();
    assert!(c.wait_applied(new, commit, T), "{}", c.log_tail(new));
    assert!(
        gap < GAP_MAX,
        "writes stopped for {gap:?} ({} acknowledged)",
        acknowledged.len()
    );
    eprintln!(
        "replace (namespaces: {}): {} writes acknowledged, longest gap {gap:?}",
        c.in_netns(),
        acknowledged.len()
    );
}

#[test]
fn growing_to_five_and_shrinking_to_three_under_load() {
    grow_and_shrink(ProcessCluster::start(3, ClusterOptions::default()));
}

#[test]
#[ignore = "needs root, ip and nft (network namespaces); run with --ignored"]
fn growing_to_five_and_shrinking_to_three_in_namespaces_under_load() {
    grow_and_shrink(ProcessCluster::start_netns(3, ClusterOptions::default()));
}

/// Nodes 4 and 5 join and are added one after the other; then the first leader and one
/// other founder are removed. No acknowledged write is lost, writes never stop for long,
/// and the removed nodes (still running) do not disturb the three left.
fn grow_and_shrink(mut c: ProcessCluster) {
    let first = c
        .wait_leader(&c.ids(), T)
        .unwrap_or_else(|| panic!("no leader; node 1 log:\n{}", c.log_tail(1)));
    let writer = Writer::start(&c, &[1, 2, 3]);
    wait_writes(&writer, 100);
    let (four, five) = (c.add_joiner(), c.add_joiner());
    for id in [four, five] {
        c.spawn(id);
        let address = c.addr(id).to_string();
        raftctl_ok(&c, &["member", "add", &id.to_string(), &address]);
        wait_writes(&writer, 100);
    }
    assert_eq!(members(&c), voters(&[1, 2, 3, four, five]));
    // Shrink: remove the first leader and one other of the founders.
    let other = [1, 2, 3].into_iter().find(|&i| i != first).unwrap();
    raftctl_ok(&c, &["member", "remove", &first.to_string()]);
    wait_writes(&writer, 100);
    raftctl_ok(&c, &["member", "remove", &other.to_string()]);
    wait_writes(&writer, 100);
    let (acknowledged, gap) = writer.finish();
    let mut left: Vec<u64> = [1, 2, 3, four, five]
        .into_iter()
        .filter(|&i| i != first && i != other)
        .collect();
    left.sort();
    assert_eq!(members(&c), voters(&left));
    check_all_read_back(&c, &left, &acknowledged);
    assert!(gap < GAP_MAX, "writes stopped for {gap:?}");
    // A removed node does not disturb the cluster: the term stays put for a while.
    let leader = c.wait_leader(&left, T).expect("a leader");
    let term = status_of(&c, leader)["term"].as_u64().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let later = status_of(&c, leader);
    assert_eq!(later["term"].as_u64().unwrap(), term, "{later}");
    eprintln!(
        "grow/shrink (namespaces: {}): {} writes acknowledged, longest gap {gap:?}",
        c.in_netns(),
        acknowledged.len()
    );
}

#[test]
fn bad_membership_requests_are_refused_with_clear_errors() {
    let mut c = ProcessCluster::start(3, ClusterOptions::default());
    c.wait_leader(&c.ids(), T).expect("a leader");
    for (args, want) in [
        (vec!["member", "promote", "9"], "not a learner"),
        (vec!["member", "remove", "9"], "not a member"),
        (
            vec!["member", "add", "2", "127.0.0.1:1"],
            "already a member",
        ),
        (vec!["member", "add", "7", "0.0.0.0:7"], "not an address"),
        (vec!["member", "add", "7", "nonsense"], "not an address"),
    ] {
        let (code, out) = c.raftctl(&args);
        assert_eq!(code, 2, "{args:?}: {out}");
        assert!(out.contains(want), "{args:?}: {out}");
    }
    // --join and --peers exclude each other; --join needs --listen.
    let joiner = c.add_joiner();
    let dir = c.data_dir(joiner);
    let raftd = raftd_binary();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&raftd)
            .args(args)
            .arg("--data-dir")
            .arg(&dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--id", "4", "--join"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--listen"), "{err}");
    let (code, err) = run(&["--id", "4", "--join", "--peers", "4=127.0.0.1:1"]);
    assert_eq!(code, Some(1), "{err}");
}

/// `raftctl local add` grows the local cluster by one node: a `--join` node on the next id
/// and a free port, added and promoted (or only added with `--learner`); it is recorded, so
/// `local restart` starts it again with `--join` and `local down` stops it. Without a
/// recorded cluster it fails with exit 1 and says what to do.
#[test]
fn local_add_grows_the_local_cluster() {
    let dir = std::env::temp_dir().join(format!("raftd-local-add-{}", std::process::id()));
    let raftctl = |args: &[&str]| {
        command_output(
            std::process::Command::new(workspace_binary("raftctl"))
                .args(args)
                .env("RAFTD_BIN", raftd_binary())
                .env("RAFTD_LOCAL_DIR", &dir)
                .env_remove("RAFTCTL_CLUSTER"),
        )
    };
    let ok = |args: &[&str]| {
        let (code, out) = raftctl(args);
        assert_eq!(code, 0, "raftctl {args:?}: {out}");
        out
    };
    let (code, out) = raftctl(&["local", "add"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("raftctl local up"), "{out}");
    ok(&["local", "up", "--nodes", "3"]);
    let result = std::panic::catch_unwind(|| {
        ok(&["propose", "put", "before", "1"]);
        let out = ok(&["local", "add"]);
        assert!(out.contains("promote 4 committed"), "{out}");
        let out = ok(&["local", "add", "--learner"]);
        assert!(out.contains("add learner 5 committed"), "{out}");
        let list: serde_json::Value =
            serde_json::from_str(ok(&["--json", "member", "list"]).trim()).unwrap();
        let roles: Vec<(u64, String)> = list["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["id"].as_u64().unwrap(),
                    m["role"].as_str().unwrap().into(),
                )
            })
            .collect();
        let want: Vec<(u64, String)> = [(1, "voter"), (2, "voter"), (3, "voter")]
            .into_iter()
            .chain([(4, "voter"), (5, "learner")])
            .map(|(id, role)| (id, role.to_string()))
            .collect();
        assert_eq!(roles, want, "{list}");
        let state: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("cluster.json")).unwrap())
                .unwrap();
        let node4 = &state["nodes"][3];
        assert_eq!(node4["join"], true, "{state}");
        let addr4 = node4["address"].as_str().unwrap().to_string();
        // Node 4 stopped and started again (with --join), then read from alone.
        ok(&["kill", "4"]);
        // `kill` returns once the node has the request; it exits a moment later.
        let deadline = Instant::now() + T;
        loop {
            let (code, out) = raftctl(&["local", "restart", "4"]);
            if code == 0 {
                break;
            }
            assert!(
                out.contains("is running") && Instant::now() < deadline,
                "{out}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        ok(&["propose", "put", "after", "2"]);
        let deadline = Instant::now() + T;
        loop {
            let (code, out) = raftctl(&["--cluster", &addr4, "get", "after"]);
            if code == 0 && out.contains('2') {
                break;
            }
            assert!(Instant::now() < deadline, "node 4 never served: {out}");
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = ok(&["local", "down"]);
        assert!(out.contains("stopped 5 nodes"), "{out}");
    });
    if let Err(panic) = result {
        raftctl(&["local", "down"]);
        eprintln!("local cluster data and logs kept in {}", dir.display());
        std::panic::resume_unwind(panic);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
