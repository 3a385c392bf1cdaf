//! systemd readiness on a real process: the test binds its own notify socket, as systemd
//! does for a `Type=notify` unit, and starts a one-node raftd with `NOTIFY_SOCKET` and
//! `WATCHDOG_USEC` (200 ms) set. It must hear `READY=1` with a status, only once the node's
//! port accepts connections (recovery done, listener bound); a `STATUS=` naming the node as
//! leader with its term once it is elected; `WATCHDOG=1` about every 100 ms; and
//! `STOPPING=1` after SIGTERM, with exit code 0. A node without `NOTIFY_SOCKET` runs as
//! before (every other process test).

use raftd_tests::cluster::{free_addresses, raftd_binary};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The next datagram, or `None` after `within`.
fn next(socket: &UnixDatagram, within: Duration) -> Option<String> {
    socket.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn ready_status_watchdog_and_stopping_reach_the_notify_socket() {
    let dir = std::env::temp_dir().join(format!("raftd-notify-test-{}", rand::random::<u32>()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket_path = dir.join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let addr = free_addresses(1)[0];
    let mut child = Command::new(raftd_binary())
        .args(["--id", "1", "--peers", &format!("1={addr}")])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--election-ms", "300", "--heartbeat-ms", "50"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let ready = next(&socket, Duration::from_secs(10)).expect("READY=1 within 10 s");
    assert!(ready.contains("READY=1\n"), "{ready:?}");
    assert!(ready.contains("STATUS=node 1: "), "{ready:?}");
    assert!(
        std::net::TcpStream::connect(addr).is_ok(),
        "READY=1 came before the node accepted connections"
    );

    let started = Instant::now();
    let mut leader_status = None;
    let mut watchdogs = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let Some(message) = next(&socket, Duration::from_secs(1)) else {
            break;
        };
        if message.contains("WATCHDOG=1") {
            watchdogs += 1;
        }
        if let Some(status) = message.lines().find_map(|l| l.strip_prefix("STATUS=")) {
            if status.contains("leader in term") {
                leader_status = Some(status.to_string());
            }
        }
    }
    let leader_status = leader_status.expect("a STATUS= naming the node leader");
    assert!(
        leader_status.starts_with("node 1: leader in term "),
        "{leader_status}"
    );
    // 200 ms watchdog: a ping every 100 ms, so about 20 in 2 s; a loop that pings at most
    // every tick would send far more, one that does not ping, none.
    assert!(
        (10..=30).contains(&watchdogs),
        "{watchdogs} watchdog pings in 2 s"
    );

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut stopping = false;
    while let Some(message) = next(&socket, Duration::from_secs(5)) {
        if message.contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping, "no STOPPING=1 after SIGTERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
    let _ = std::fs::remove_dir_all(&dir);
}
