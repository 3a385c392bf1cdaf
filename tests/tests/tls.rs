//! Process-level tests of TLS: real `raftd` binaries with `--tls-*`, certificates made with
//! rcgen for each case (tests/src/certs.rs). Every bad input is refused with a clear log line
//! and a closed connection while the node keeps serving; admin operations need an admin
//! certificate; SIGHUP reloads the certificates.

use raftd::protocol::{Outcome, Write};
use raftd_tests::certs::{CertFiles, TestCa};
use raftd_tests::cluster::{
    free_addresses, raftd_fails, run_raftctl, ClusterOptions, ProcessCluster,
};
use rand::{Rng, SeedableRng};
use std::io::{Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};
use transport::tls::rustls::StreamOwned;
use transport::tls::{common_name, ClientTls};

const T: Duration = Duration::from_secs(10);

fn put(k: &str, v: &str) -> Write {
    Write::Put {
        key: k.as_bytes().to_vec(),
        value: v.as_bytes().to_vec(),
    }
}

/// A cluster of `n` nodes in TLS (client certificates required when `client_certs`), with a
/// leader elected.
fn tls_cluster(n: usize, client_certs: bool) -> ProcessCluster {
    let options = ClusterOptions {
        tls: true,
        tls_client_certs: client_certs,
        // The admin tests check that a non-admin's fault request is refused for its rights,
        // and that an admin's goes through.
        fault_injection: true,
        ..ClusterOptions::default()
    };
    let c = ProcessCluster::start(n, options);
    let leader = c.wait_leader(&c.ids(), T);
    assert!(leader.is_some(), "no leader in TLS: {}", c.log_tail(1));
    c
}

/// The cluster still answers a write and a read through its own (admin) client.
fn assert_serving(c: &ProcessCluster, key: &str) {
    let mut client = c.client(T);
    let out = client
        .write(put(key, "yes"))
        .expect("write after bad input");
    assert!(matches!(out, Outcome::Written { .. }), "{out:?}");
    assert_eq!(client.get(key.as_bytes()).unwrap(), Some(b"yes".to_vec()));
}

/// Waits until node `id`'s log holds `text` (logs are written as things happen).
fn wait_logged(c: &ProcessCluster, id: u64, text: &str) {
    let deadline = Instant::now() + T;
    while Instant::now() < deadline {
        let log = std::fs::read_to_string(c.log_path(id)).unwrap_or_default();
        if log.contains(text) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("node {id} never logged {text:?}:\n{}", c.log_tail(id));
}

/// raftctl against `c` with the cluster's CA and the given client certificate (none: no
/// client certificate).
fn raftctl_as(
    c: &ProcessCluster,
    ca: &std::path::Path,
    cert: Option<&CertFiles>,
    args: &[&str],
) -> (i32, String) {
    let cluster: Vec<String> = c.ids().iter().map(|&id| c.addr(id).to_string()).collect();
    let mut first = vec![
        "--cluster".to_string(),
        cluster.join(","),
        "--timeout".to_string(),
        "3s".to_string(),
        "--tls-ca".to_string(),
        ca.display().to_string(),
    ];
    if let Some(cert) = cert {
        first.extend(["--tls-cert".to_string(), cert.cert.display().to_string()]);
        first.extend(["--tls-key".to_string(), cert.key.display().to_string()]);
    }
    let first: Vec<&str> = first.iter().map(String::as_str).collect();
    run_raftctl(&first, args)
}

/// Proves the TLS cluster replicates, and that with `--tls-client-ca` a client whose
/// certificate is not listed with `--admin-cn` may read and write but every admin
/// operation is refused (exit 2, "nothing was done"), while the admin certificate may run
/// them.
#[test]
fn admin_operations_need_an_admin_certificate() {
    let c = tls_cluster(3, true);
    let ca = c.ca().expect("TLS cluster");
    let reader = ca.client("reader");
    let ca_file = ca.ca.clone();
    let (code, out) = raftctl_as(&c, &ca_file, Some(&reader), &["propose", "put", "k", "v"]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = raftctl_as(&c, &ca_file, Some(&reader), &["get", "k"]);
    assert_eq!((code, out.trim()), (0, "v"));
    let backup = c.dir().join("backup.snap");
    let backup = backup.to_str().unwrap();
    let admin_ops: [&[&str]; 8] = [
        &["kill", "1"],
        &["kill", "1", "--crash"],
        &["snapshot", "1"],
        &["snapshot", "save", backup],
        &["transfer-leader", "2"],
        &["member", "remove", "3"],
        &["member", "add", "4", "127.0.0.1:1"],
        &["fault", "1", "--drop", "50"],
    ];
    for op in admin_ops {
        let (code, out) = raftctl_as(&c, &ca_file, Some(&reader), op);
        assert_eq!(code, 2, "{op:?} by a non-admin: {out}");
        assert!(out.contains("not listed as admin"), "{op:?}: {out}");
    }
    c.assert_logged(1, "refused an admin operation");
    // Nothing happened: every node still runs, and the admin certificate may do it all.
    let (code, out) = c.raftctl(&["snapshot", "1"]);
    assert_eq!(code, 0, "admin snapshot: {out}");
    let (code, out) = c.raftctl(&["fault", "1", "--clear"]);
    assert_eq!(code, 0, "admin fault: {out}");
    // Without a client certificate, nothing at all.
    let (code, out) = raftctl_as(&c, &ca_file, None, &["get", "k"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("requires a client certificate"), "{out}");
    assert_serving(&c, "after");
}

/// Proves bad TLS flags and files stop raftd at start with exit code 1 and one line naming
/// the flag (and file): missing companions, client options without TLS, unreadable files,
/// files that hold no PEM, and a key that does not belong to the certificate.
#[test]
fn bad_tls_flags_and_files_exit_with_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("raftd-tls-flags-{}", std::process::id()));
    let ca = TestCa::new(&dir, "flags");
    let node = ca.node(1, "127.0.0.1");
    let other = ca.node(2, "127.0.0.1");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").unwrap();
    let a = free_addresses(1);
    let peers = format!("1={}", a[0]);
    let data = dir.join("data");
    let base = [
        "--id",
        "1",
        "--peers",
        &peers,
        "--data-dir",
        data.to_str().unwrap(),
    ];
    let p = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let (cert, key, ca_file) = (p(&node.cert), p(&node.key), p(&ca.ca));
    let (garbage, other_key) = (p(&garbage), p(&other.key));
    let files = |cert: &str, key: &str, ca: &str| {
        vec![
            "--tls-cert".to_string(),
            cert.to_string(),
            "--tls-key".to_string(),
            key.to_string(),
            "--tls-ca".to_string(),
            ca.to_string(),
        ]
    };
    let args = |list: &[&str]| list.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let good = files(&cert, &key, &ca_file);
    // (the flags after the node's own, what the one line must name)
    let cases: Vec<(Vec<String>, Vec<&str>)> = vec![
        (args(&["--tls-cert", &cert]), vec!["--tls-key", "--tls-ca"]),
        (args(&["--tls-client-ca", &ca_file]), vec!["--tls-cert"]),
        (
            [&good[..], &args(&["--admin-cn", "x"])].concat(),
            vec!["--tls-client-ca"],
        ),
        (
            files("/nonexistent.pem", &key, &ca_file),
            vec!["--tls-cert /nonexistent.pem"],
        ),
        (
            files(&garbage, &key, &ca_file),
            vec!["--tls-cert", "no certificate"],
        ),
        (
            files(&cert, &garbage, &ca_file),
            vec!["--tls-key", "private key"],
        ),
        (files(&cert, &key, &garbage), vec!["--tls-ca"]),
        (
            files(&cert, &other_key, &ca_file),
            vec!["--tls-cert", "--tls-key"],
        ),
        (
            [&good[..], &args(&["--tls-client-ca", &garbage])].concat(),
            vec!["--tls-client-ca"],
        ),
    ];
    for (extra, named) in cases {
        let all: Vec<&str> = base
            .iter()
            .copied()
            .chain(extra.iter().map(String::as_str))
            .collect();
        let err = raftd_fails(&all);
        for name in named {
            assert!(err.contains(name), "raftd {extra:?}: {err}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Proves a plaintext client on a TLS port is refused with a clear line on both sides
/// (raftctl: the node speaks TLS; the node: the other side does not speak TLS), and the node
/// keeps serving.
#[test]
fn plaintext_client_on_a_tls_port_is_refused_clearly() {
    let c = tls_cluster(1, false);
    let cluster = c.addr(1).to_string();
    let (code, out) = run_raftctl(&["--cluster", &cluster, "--timeout", "2s"], &["get", "k"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("the node speaks TLS"), "{out}");
    wait_logged(&c, 1, "does not speak TLS");
    assert_serving(&c, "plaintext-client");
}

/// Proves a TLS client on a plaintext port is refused with a clear line on both sides, and
/// the node keeps serving.
#[test]
fn tls_client_on_a_plaintext_port_is_refused_clearly() {
    let c = ProcessCluster::start(
        1,
        ClusterOptions {
            tls: false,
            tls_client_certs: false,
            ..ClusterOptions::default()
        },
    );
    assert!(c.wait_leader(&[1], T).is_some());
    let ca = TestCa::new(&c.dir().join("tls"), "stray");
    let cluster = c.addr(1).to_string();
    let ca_file = ca.ca.display().to_string();
    let (code, out) = run_raftctl(
        &[
            "--cluster",
            &cluster,
            "--timeout",
            "2s",
            "--tls-ca",
            &ca_file,
        ],
        &["get", "k"],
    );
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("does not speak TLS"), "{out}");
    wait_logged(
        &c,
        1,
        "looks like a TLS handshake, but this node runs without TLS",
    );
    assert_serving(&c, "tls-client");
}

/// Proves certificates from another CA are refused both ways: a client certificate signed by
/// a foreign CA (the node logs why and closes), and a node whose certificate a client cannot
/// verify (raftctl says the certificate is not signed by the CA it trusts).
#[test]
fn certificate_from_another_ca_is_refused() {
    let c = tls_cluster(1, true);
    let foreign = TestCa::new(&c.dir().join("foreign"), "foreign");
    let intruder = foreign.client("admin");
    let ca_file = c.ca().unwrap().ca.clone();
    let (code, out) = raftctl_as(&c, &ca_file, Some(&intruder), &["get", "k"]);
    assert_ne!(code, 0, "{out}");
    wait_logged(&c, 1, "UnknownIssuer");
    let (code, out) = raftctl_as(&c, &foreign.ca, None, &["get", "k"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("not signed by the CA trusted here"), "{out}");
    assert_serving(&c, "foreign-ca");
}

/// Proves an expired client certificate (signed by the right CA) is refused with a log line
/// saying it expired, and that the node keeps serving.
#[test]
fn expired_certificate_is_refused() {
    let c = tls_cluster(1, true);
    let ca = c.ca().unwrap();
    let expired = ca.issue("expired", "admin", &[], true);
    let (code, out) = raftctl_as(&c, &ca.ca, Some(&expired), &["get", "k"]);
    assert_ne!(code, 0, "{out}");
    assert!(out.to_lowercase().contains("expired"), "{out}");
    wait_logged(&c, 1, "certificate expired");
    assert_serving(&c, "expired");
}

/// Loopback addresses with free ports, node `i` on 127.0.0.(i+1): distinct hosts on one
/// machine, so node certificates name different hosts.
fn distinct_loopback_addresses(n: u64) -> Vec<(u64, SocketAddr)> {
    (1..=n)
        .map(|id| {
            let listener = TcpListener::bind(format!("127.0.0.{id}:0")).expect("bind loopback");
            (id, listener.local_addr().unwrap())
        })
        .collect()
}

/// Proves a node certificate cannot pose as another node: node 3 started with node 2's
/// (valid, same CA) certificate is refused by the others as a dialer (its hello says node 3,
/// its certificate names node 2's host) and as an acceptor (the dialers verify the host),
/// each with a log line, while nodes 1 and 2 keep a working cluster.
#[test]
fn node_certificate_used_for_another_node_id_is_refused() {
    let options = ClusterOptions {
        tls: true,
        tls_client_certs: false,
        ..ClusterOptions::default()
    };
    let mut c = ProcessCluster::prepare(3, options);
    c.peers = distinct_loopback_addresses(3);
    let stolen = c.ca().unwrap().node(2, &c.addr(2).ip().to_string());
    c.use_node_cert(3, stolen);
    for id in c.ids() {
        c.spawn(id);
    }
    assert!(c.wait_leader(&[1, 2], T).is_some(), "{}", c.log_tail(1));
    wait_logged(&c, 1, "certificate does not name 127.0.0.3");
    wait_logged(
        &c,
        1,
        "the certificate does not name the host that was dialed",
    );
    let (code, out) = c.raftctl(&["propose", "put", "k", "v"]);
    assert_eq!(code, 0, "{out}");
    let status = c.status(1).expect("node 1 answers");
    let peers = status["peers"].as_array().expect("peers");
    let three = peers.iter().find(|p| p["id"] == 3).expect("peer 3");
    assert_eq!(three["connected"], false, "{status}");
}

/// Proves a TLS handshake that never finishes (a client that sends its ClientHello, reads
/// the node's answer and then goes silent) is closed by the node within its handshake
/// timeout (5 s), with a log line, and that the node serves others meanwhile.
#[test]
fn handshake_that_never_finishes_is_closed_in_bounded_time() {
    let c = tls_cluster(1, false);
    let addr = c.addr(1);
    let tls = ClientTls::load(&c.ca().unwrap().ca, None).unwrap();
    let mut hello = Vec::new();
    tls.connection(addr).unwrap().write_tls(&mut hello).unwrap();
    let mut slow = TcpStream::connect(addr).unwrap();
    slow.write_all(&hello).unwrap();
    let started = Instant::now();
    assert_serving(&c, "during-slow-handshake");
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut buf = [0u8; 4096];
    // The node's first flight arrives; then nothing until it gives up and closes.
    while let Ok(n @ 1..) = slow.read(&mut buf) {
        assert!(n > 0);
    }
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(9),
        "closed only after {waited:?}"
    );
    assert!(
        waited >= Duration::from_secs(4),
        "closed early, after {waited:?}"
    );
    wait_logged(&c, 1, "handshake not completed within 5s");
}

/// A TLS connection to `addr` with the handshake done, trusting `ca` and presenting `cert`.
fn tls_connect(
    addr: SocketAddr,
    ca: &std::path::Path,
    cert: Option<&CertFiles>,
) -> StreamOwned<transport::tls::rustls::ClientConnection, TcpStream> {
    let tls = ClientTls::load(ca, cert.map(|c| (c.cert.as_path(), c.key.as_path()))).unwrap();
    let socket = TcpStream::connect(addr).unwrap();
    socket.set_read_timeout(Some(T)).unwrap();
    let mut stream = StreamOwned::new(tls.connection(addr).unwrap(), socket);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .expect("TLS handshake");
    }
    stream
}

/// Proves garbage inside a completed TLS session (bytes that are no frame) closes the
/// connection with a log line, and the node keeps serving.
#[test]
fn garbage_after_the_handshake_closes_the_connection() {
    let c = tls_cluster(1, false);
    let mut stream = tls_connect(c.addr(1), &c.ca().unwrap().ca, None);
    stream.write_all(&[0xde; 4096]).unwrap();
    stream.flush().unwrap();
    let mut buf = [0u8; 64];
    let read = stream.read(&mut buf);
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "the node kept the connection: {read:?}"
    );
    wait_logged(&c, 1, "bad frame");
    assert_serving(&c, "garbage");
}

/// Proves random bytes fed to the TLS-wrapped accept path do not crash or stall a node:
/// many connections, each sending random bytes (some starting like a TLS record, some after
/// a completed handshake), then a write and a read still succeed. The seed is printed; set
/// `TLS_FUZZ_SEED` to replay one.
#[test]
fn random_bytes_on_the_tls_port_do_not_harm_the_node() {
    let c = tls_cluster(1, false);
    let seed: u64 = std::env::var("TLS_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (replay: TLS_FUZZ_SEED={seed} cargo test -p raftd-tests --test tls random_bytes)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let addr = c.addr(1);
    let ca = c.ca().unwrap().ca.clone();
    for round in 0..200 {
        let mut bytes = vec![0u8; rng.gen_range(1..4096)];
        rng.fill(&mut bytes[..]);
        let header: Vec<u8> = match round % 4 {
            // A record header of a plausible type and version, then noise.
            0 => vec![0x16, 0x03, rng.gen_range(0..4), rng.gen(), rng.gen()],
            1 => vec![rng.gen_range(20..25), 0x03, 0x03],
            _ => Vec::new(),
        };
        bytes.splice(0..0, header);
        if round % 10 == 9 {
            let mut stream = tls_connect(addr, &ca, None);
            let _ = stream.write_all(&bytes);
            let _ = stream.flush();
        } else if let Ok(mut socket) = TcpStream::connect(addr) {
            let _ = socket.write_all(&bytes);
        }
    }
    assert_serving(&c, "fuzzed");
    let log = std::fs::read_to_string(c.log_path(1)).unwrap();
    assert!(!log.contains("panicked"), "{}", c.log_tail(1));
}

/// The common name of the certificate the node at `addr` presents to a new connection.
fn presented_name(addr: SocketAddr, ca: &std::path::Path) -> String {
    let stream = tls_connect(addr, ca, None);
    let chain = stream
        .conn
        .peer_certificates()
        .expect("a server certificate");
    common_name(&chain[0]).expect("a common name")
}

/// Proves SIGHUP reloads the certificate and key: connections made after it get the new
/// certificate; a reload with a bad file is logged and keeps the certificate in use.
#[test]
fn sighup_reloads_certificates() {
    let c = tls_cluster(1, false);
    let ca = c.ca().unwrap();
    let addr = c.addr(1);
    assert_eq!(presented_name(addr, &ca.ca), "node1");
    let hup = |c: &ProcessCluster| {
        let pid = c.pid(1).expect("running").to_string();
        assert!(std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success());
    };
    // The node's files, replaced in place by a renewed certificate with another name.
    let files = ca.node(1, &addr.ip().to_string());
    let renewed = ca.issue("renewed", "node1-renewed", &[&addr.ip().to_string()], false);
    std::fs::copy(&renewed.cert, &files.cert).unwrap();
    std::fs::copy(&renewed.key, &files.key).unwrap();
    hup(&c);
    wait_logged(&c, 1, "TLS certificates and keys reloaded");
    assert_eq!(presented_name(addr, &ca.ca), "node1-renewed");
    // A broken file: logged, and the renewed certificate stays in use.
    std::fs::write(&files.cert, "broken\n").unwrap();
    hup(&c);
    wait_logged(&c, 1, "TLS reload failed, keeping the certificates in use");
    assert_eq!(presented_name(addr, &ca.ca), "node1-renewed");
    assert_serving(&c, "after-reload");
}

/// Proves a representative part of the cluster suite holds with TLS on every connection
/// (mutual TLS between nodes, client certificates required): writes, kill -9 of the leader
/// with failover and catch-up, a snapshot taken and sent to a lagging follower, and faults
/// injected through the TLS transport.
#[test]
fn tls_cluster_survives_kill9_snapshots_and_faults() {
    let options = ClusterOptions {
        tls: true,
        tls_client_certs: true,
        snapshot_entries: 200,
        fault_injection: true,
        ..ClusterOptions::default()
    };
    let mut c = ProcessCluster::start(3, options);
    let first = c.wait_leader(&c.ids(), T).expect("leader");
    let mut client = c.client(T);
    for i in 0..100 {
        client.write(put(&format!("a{i}"), "1")).unwrap();
    }
    c.kill9(first);
    let others: Vec<u64> = c.ids().into_iter().filter(|&id| id != first).collect();
    let second = c
        .wait_leader(&others, T)
        .expect("a new leader after kill -9");
    let mut survivors = c.client_over(&others, T);
    // Enough writes that the survivors snapshot past what the killed node holds.
    for i in 0..500 {
        survivors.write(put(&format!("b{i}"), "2")).unwrap();
    }
    let (code, out) = c.raftctl(&["fault", &second.to_string(), "--drop", "20"]);
    assert_eq!(code, 0, "{out}");
    for i in 0..50 {
        survivors.write(put(&format!("c{i}"), "3")).unwrap();
    }
    let (code, out) = c.raftctl(&["fault", &second.to_string(), "--clear"]);
    assert_eq!(code, 0, "{out}");
    c.spawn(first);
    let commit = survivors
        .write(put("last", "4"))
        .map(|o| match o {
            Outcome::Written { index, .. } => index,
            other => panic!("{other:?}"),
        })
        .unwrap();
    assert!(
        c.wait_applied(first, commit, Duration::from_secs(30)),
        "{}",
        c.log_tail(first)
    );
    c.assert_logged(first, "snapshot");
    let mut back = c.client_over(&[first], T);
    assert_eq!(back.get(b"b499").unwrap(), Some(b"2".to_vec()));
    assert_eq!(back.get(b"last").unwrap(), Some(b"4".to_vec()));
}

/// Proves `raftctl bench`, on the non-blocking client, runs in TLS with a client
/// certificate: many operations over several TLS connections, all answered, no errors.
#[test]
fn bench_runs_in_tls() {
    let c = tls_cluster(3, true);
    let (code, out) = c.raftctl(&[
        "bench",
        "--clients",
        "32",
        "--connections",
        "4",
        "--warmup",
        "500ms",
        "--duration",
        "2s",
        "--mode",
        "mixed",
    ]);
    assert_eq!(code, 0, "{out}");
    let ops: u64 = out
        .split(" ops=")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no ops= in {out}"));
    assert!(ops > 100, "{out}");
    assert!(out.contains(" errors=0 "), "{out}");
}
