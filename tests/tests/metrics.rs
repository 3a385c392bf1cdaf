//! `--metrics-listen` on real processes: `/metrics` scraped from running nodes and parsed
//! with a Prometheus text parser (`prometheus-parse`), `/health` on healthy and cut-off
//! nodes, and the listener's bad inputs (a wrong flag, a port in use, unknown paths,
//! garbage and clients that send nothing).

use prometheus_parse::{Sample, Scrape, Value};
use raftd::protocol::{Outcome, Write};
use raftd_tests::cluster::{
    free_addresses, http_get, raftd_binary, ClusterOptions, ProcessCluster,
};
use std::io::{Read, Write as IoWrite};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HTTP_TIMEOUT: Duration = Duration::from_secs(5);

fn options() -> ClusterOptions {
    ClusterOptions {
        election_ms: 500,
        heartbeat_ms: 50,
        metrics: true,
        ..ClusterOptions::default()
    }
}

/// A parsed scrape of node `id`.
fn scrape(c: &ProcessCluster, id: u64) -> Scrape {
    let (status, body) = http_get(c.metrics_addr(id), "/metrics", HTTP_TIMEOUT)
        .unwrap_or_else(|| panic!("no answer from node {id}'s /metrics"));
    assert_eq!(status, 200, "node {id}'s /metrics: {body}");
    assert!(body.ends_with("# EOF\n"), "not ended by # EOF: {body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("a valid exposition")
}

/// The samples named `name` whose labels include `labels`.
fn samples<'a>(
    s: &'a Scrape,
    name: &'a str,
    labels: &'a [(&str, &str)],
) -> impl Iterator<Item = &'a Sample> {
    s.samples.iter().filter(move |x| {
        x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v))
    })
}

/// The value of the one sample `name` with `labels` (a counter's or gauge's; the parser
/// reads OpenMetrics' `_total` counters as untyped).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples(s, name, labels).collect();
    assert_eq!(found.len(), 1, "samples of {name} {labels:?}: {found:?}");
    match &found[0].value {
        Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
        other => panic!("{name} is not a number: {other:?}"),
    }
}

/// The `+Inf` bucket (the count) of histogram `name` with `labels`.
fn histogram_count(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<&Sample> = samples(s, name, labels).collect();
    assert_eq!(found.len(), 1, "histograms {name} {labels:?}: {found:?}");
    let Value::Histogram(buckets) = &found[0].value else {
        panic!("{name} is no histogram: {:?}", found[0].value);
    };
    let last = buckets.last().expect("buckets");
    assert!(last.less_than.is_infinite(), "last bucket {last:?}");
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "buckets not cumulative: {buckets:?}"
    );
    last.count
}

fn put(c: &ProcessCluster, key: &str) {
    let mut client = c.client(Duration::from_secs(10));
    let outcome = client
        .write(Write::Put {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
        })
        .expect("put");
    assert!(matches!(outcome, Outcome::Written { .. }), "{outcome:?}");
}

/// Waits until `check` holds, up to `within`.
fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < within {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

/// Proves that the figures move as the cluster works: leader gauges agree with status;
/// 50 writes raise every node's committed total and commit index by at least 50, the
/// leader's answered puts, proposal and fsync histograms, its peers' byte counters and its
/// round-trip histograms; and a kill -9 of the leader raises leader_changes_seen_total on
/// the survivors.
#[test]
fn scraped_figures_follow_writes_and_a_leader_change() {
    let mut c = ProcessCluster::start(3, options());
    let leader = c
        .wait_leader(&c.ids(), Duration::from_secs(10))
        .expect("a leader");
    // Every node must know the leader before the "before" figures are taken.
    assert!(eventually(Duration::from_secs(5), || {
        c.ids()
            .iter()
            .all(|&id| value(&scrape(&c, id), "raftd_server_has_leader", &[]) == 1.0)
    }));
    let before: Vec<Scrape> = c.ids().iter().map(|&id| scrape(&c, id)).collect();
    for (i, s) in before.iter().enumerate() {
        let id = i as u64 + 1;
        let is_leader = value(s, "raftd_server_is_leader", &[]);
        assert_eq!(is_leader, f64::from(u8::from(id == leader)), "node {id}");
        assert_eq!(value(s, "raftd_server_leader_id", &[]), leader as f64);
        assert!(value(s, "raftd_server_term", &[]) >= 1.0);
        assert!(value(s, "process_resident_memory_bytes", &[]) > 1e6);
        assert!(s.docs.contains_key("raftd_disk_wal_fsync_duration_seconds"));
        // A fresh node's first segment is zero-filled at open, and nothing rolled over yet.
        assert_eq!(
            value(s, "raftd_disk_wal_segments_unfilled_total", &[]),
            0.0,
            "node {id}"
        );
    }

    for i in 0..50 {
        put(&c, &format!("metrics/{i}"));
    }
    let leader_now = scrape(&c, leader);
    let commit = value(&leader_now, "raftd_server_commit_index", &[]) as u64;
    for id in c.ids() {
        assert!(
            c.wait_applied(id, commit, Duration::from_secs(10)),
            "node {id}"
        );
    }
    for (i, old) in before.iter().enumerate() {
        let id = i as u64 + 1;
        let new = scrape(&c, id);
        for name in [
            "raftd_server_proposals_committed_total",
            "raftd_server_commit_index",
            "raftd_server_applied_index",
        ] {
            let (a, b) = (value(old, name, &[]), value(&new, name, &[]));
            assert!(b >= a + 50.0, "node {id}: {name} went from {a} to {b}");
        }
        let fsyncs = histogram_count(&new, "raftd_disk_wal_fsync_duration_seconds", &[]);
        assert!(fsyncs >= 1.0, "node {id}: {fsyncs} WAL syncs");
    }
    let s = scrape(&c, leader);
    let puts = value(
        &s,
        "raftd_server_client_requests_total",
        &[("kind", "put"), ("outcome", "written")],
    );
    assert!(puts >= 50.0, "{puts} puts answered");
    let proposals = histogram_count(&s, "raftd_server_proposal_duration_seconds", &[]);
    assert!(proposals >= 50.0, "{proposals} proposals timed");
    assert_eq!(value(&s, "raftd_server_proposals_pending", &[]), 0.0);
    for peer in c.ids().into_iter().filter(|&p| p != leader) {
        let p = peer.to_string();
        let labels = [("peer", p.as_str())];
        assert_eq!(value(&s, "raftd_network_peer_connected", &labels), 1.0);
        for name in [
            "raftd_network_peer_sent_bytes_total",
            "raftd_network_peer_sent_frames_total",
            "raftd_network_peer_received_bytes_total",
        ] {
            assert!(value(&s, name, &labels) > 0.0, "{name} of peer {peer}");
        }
        let rtts = histogram_count(&s, "raftd_network_peer_round_trip_time_seconds", &labels);
        assert!(rtts >= 1.0, "peer {peer}: {rtts} round trips timed");
    }

    // A new leader after kill -9: the survivors see a change.
    let survivors: Vec<u64> = c.ids().into_iter().filter(|&id| id != leader).collect();
    let changes_before: Vec<f64> = survivors
        .iter()
        .map(|&id| {
            value(
                &scrape(&c, id),
                "raftd_server_leader_changes_seen_total",
                &[],
            )
        })
        .collect();
    c.kill9(leader);
    let new_leader = c
        .wait_leader(&survivors, Duration::from_secs(10))
        .expect("a new leader");
    assert_ne!(new_leader, leader);
    for (&id, &was) in survivors.iter().zip(&changes_before) {
        assert!(
            eventually(Duration::from_secs(5), || {
                value(
                    &scrape(&c, id),
                    "raftd_server_leader_changes_seen_total",
                    &[],
                ) > was
            }),
            "node {id}: leader_changes_seen_total stayed at {was}"
        );
    }
}

/// Proves `/health`: 200 `{"health":true}` on every node of a healthy cluster; 503 with a
/// reason on a node the fault layer cuts off from the others (it loses its leader), while
/// the others stay 200; 200 again once the cut is healed.
#[test]
fn health_is_200_when_healthy_and_503_when_cut_off() {
    let options = ClusterOptions {
        fault_injection: true,
        ..options()
    };
    let c = ProcessCluster::start(3, options);
    c.wait_leader(&c.ids(), Duration::from_secs(10))
        .expect("a leader");
    let health = |id: u64| http_get(c.metrics_addr(id), "/health", HTTP_TIMEOUT).expect("answer");
    for id in c.ids() {
        assert!(
            eventually(Duration::from_secs(5), || health(id)
                == (200, "{\"health\":true}\n".into())),
            "node {id}: {:?}",
            health(id)
        );
    }
    let cut = 3;
    let (code, out) = c.raftctl(&["fault", "3", "--partition", "1,2"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        eventually(Duration::from_secs(10), || health(cut).0 == 503),
        "node {cut} stayed healthy: {:?}",
        health(cut)
    );
    let (_, body) = health(cut);
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["health"], false, "{body}");
    assert!(
        json["reason"]
            .as_str()
            .is_some_and(|r| r.contains("no leader")),
        "{body}"
    );
    // The others stay or (when the cut node led) soon become healthy: they elect a leader.
    for id in [1, 2] {
        assert!(
            eventually(Duration::from_secs(10), || health(id).0 == 200),
            "node {id}: {:?}",
            health(id)
        );
    }
    let (code, out) = c.raftctl(&["fault", "3", "--clear"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        eventually(Duration::from_secs(10), || health(cut).0 == 200),
        "node {cut} did not recover: {:?}",
        health(cut)
    );
}

/// Runs raftd for one node with `extra` flags; its exit code and stderr, or `None` if it
/// still runs after 5 s (then it is killed).
fn run_raftd(extra: &[&str]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("raftd-metrics-test-{}", rand::random::<u32>()));
    let addr = free_addresses(1)[0];
    let mut child = Command::new(raftd_binary())
        .args(["--id", "1", "--peers", &format!("1={addr}")])
        .arg("--data-dir")
        .arg(&dir)
        .args(extra)
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start raftd");
    let start = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if start.elapsed() > Duration::from_secs(5) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("piped")
        .read_to_string(&mut stderr)
        .expect("stderr");
    let _ = std::fs::remove_dir_all(&dir);
    (code, stderr)
}

/// Proves the flag's bad values: a value that is no address, and an address already in
/// use, each exit 1 with one line naming the flag.
#[test]
fn a_wrong_metrics_listen_exits_1_with_one_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken = taken.local_addr().expect("addr").to_string();
    for value in ["not-an-address", "127.0.0.1:99999", taken.as_str()] {
        let (code, stderr) = run_raftd(&["--metrics-listen", value]);
        assert_eq!(code, Some(1), "--metrics-listen {value}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "--metrics-listen {value}: {stderr}"
        );
        assert!(stderr.contains("--metrics-listen"), "{stderr}");
    }
}

/// Sends raw bytes to the listener and returns the status code it answers, if any.
fn raw_status(addr: SocketAddr, request: &[u8]) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT).ok()?;
    s.set_read_timeout(Some(HTTP_TIMEOUT)).ok()?;
    s.write_all(request).ok()?;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.split(' ').nth(1)?.parse().ok()
}

/// Proves the listener's bounds: an unknown path is 404, another method 405, garbage and
/// an endless header 400; twenty clients that connect and send nothing neither slow the
/// node's writes (100 writes take under 5 s while they hang on) nor keep `/metrics` away
/// for longer than the request timeout.
#[test]
fn bad_and_slow_http_clients_cannot_stall_the_node() {
    let c = ProcessCluster::start(1, options());
    c.wait_leader(&[1], Duration::from_secs(10))
        .expect("a leader");
    let addr = c.metrics_addr(1);
    assert_eq!(
        http_get(addr, "/nope", HTTP_TIMEOUT).map(|a| a.0),
        Some(404)
    );
    assert_eq!(
        raw_status(addr, b"POST /metrics HTTP/1.1\r\n\r\n"),
        Some(405)
    );
    assert_eq!(
        raw_status(
            addr,
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n"
        ),
        Some(400)
    );
    // Exactly the most a request may be, without its end: refused once it is all read.
    let endless = vec![b'a'; raftd::metrics_http::REQUEST_BYTES_MAX];
    assert_eq!(raw_status(addr, &endless), Some(400));

    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let start = Instant::now();
    for i in 0..100 {
        put(&c, &format!("slow/{i}"));
    }
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "100 writes took {took:?} beside idle HTTP clients"
    );
    assert!(
        eventually(Duration::from_secs(5), || {
            http_get(addr, "/metrics", HTTP_TIMEOUT).is_some_and(|a| a.0 == 200)
        }),
        "/metrics did not come back after the idle clients timed out"
    );
    drop(idle);
    let s = scrape(&c, 1);
    assert!(value(&s, "raftd_server_proposals_committed_total", &[]) >= 100.0);
}
