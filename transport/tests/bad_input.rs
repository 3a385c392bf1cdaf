//! Bad input never crashes the transport, never makes it buffer more than its limits, and
//! only ever closes the offending connection: each case below is followed by a check that a
//! well-behaved client connected all along still gets answers.

mod common;

use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use transport::client::{self, Connection};
use transport::codec::{self, Hello, Role, Status, Welcome};
use transport::{Event, Stats, Transport, TransportConfig};

const TOKEN: &[u8] = b"let-me-in";

/// A node polled on its own thread that echoes client frames and publishes its counters.
struct Server {
    addr: SocketAddr,
    stats: Arc<Mutex<Stats>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(config: TransportConfig) -> Server {
        let mut node = Transport::new(config).unwrap();
        let addr = node.local_addr();
        let stats = Arc::new(Mutex::new(node.stats()));
        let stop = Arc::new(AtomicBool::new(false));
        let (stats2, stop2) = (stats.clone(), stop.clone());
        let thread = thread::spawn(move || {
            let mut events = Vec::new();
            while !stop2.load(Ordering::Relaxed) {
                node.poll(Some(Duration::from_millis(5)), &mut events)
                    .unwrap();
                for event in events.drain(..) {
                    if let Event::ClientFrame { client, kind, body } = event {
                        let _ = node.send_client(client, kind, &body);
                    }
                }
                *stats2.lock().unwrap() = node.stats();
            }
        });
        Server {
            addr,
            stats,
            stop,
            thread: Some(thread),
        }
    }

    fn rejected(&self) -> u64 {
        self.stats.lock().unwrap().connections_rejected
    }

    /// Waits until `connections_rejected` reaches `count`.
    fn wait_rejected(&self, count: u64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.rejected() < count {
            assert!(
                Instant::now() < deadline,
                "rejections stuck at {}",
                self.rejected()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn server_config() -> TransportConfig {
    let mut config = config(1);
    config.token = Some(TOKEN.to_vec());
    config.frame_bytes_max = 64 * 1024;
    config.outbox_bytes_max = 1 << 20;
    config.handshake_timeout = Duration::from_millis(300);
    config
}

fn good_client(addr: SocketAddr) -> Connection {
    Connection::connect(addr, CLUSTER, Some(TOKEN), Duration::from_secs(5)).unwrap()
}

#[track_caller]
fn assert_echo(connection: &mut Connection, body: &[u8]) {
    connection.send(5, body, Duration::from_secs(5)).unwrap();
    assert_eq!(
        connection.recv(Duration::from_secs(5)).unwrap(),
        (5, body.to_vec())
    );
}

/// Reads (and discards) until the server closes the stream; panics if it stays open.
#[track_caller]
fn assert_closed_within(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let deadline = Instant::now() + within;
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "connection still open after {within:?}");
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buf) {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return received,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("connection still open after {within:?}")
            }
            Err(e) => panic!("read failed: {e}"),
        }
    }
}

/// A raw socket that has completed the client handshake.
fn raw_client(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut hello = Vec::new();
    Hello {
        version: codec::PROTOCOL_VERSION,
        role: Role::Client,
        cluster_id: CLUSTER.into(),
        token: TOKEN.to_vec(),
        address: Vec::new(),
    }
    .encode_frame(&mut hello);
    stream.write_all(&hello).unwrap();
    let mut welcome = vec![0u8; codec::frame_bytes(codec::WELCOME_BYTES)];
    stream.read_exact(&mut welcome).unwrap();
    let codec::Decoded::Frame { kind, body, .. } = codec::decode(&welcome, 64) else {
        panic!("bad welcome")
    };
    assert_eq!(
        Welcome::decode(kind, &welcome[body]).unwrap().status,
        Status::Accepted
    );
    stream
}

/// Proves random bytes, sent before or after the handshake, close only that connection:
/// 20 seeded streams of 1 to 4,000 random bytes each (seed printed on failure).
#[test]
fn random_bytes_close_the_connection() {
    init_logs();
    let server = Server::start(server_config());
    let mut good = good_client(server.addr);
    let seed = 0x7261_6674;
    let mut rng = SmallRng::seed_from_u64(seed);
    for round in 0..20u64 {
        let mut stream = if round % 2 == 0 {
            TcpStream::connect(server.addr).unwrap()
        } else {
            raw_client(server.addr)
        };
        let len = rng.gen_range(1..4_000);
        let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        // The server may close mid-write; what matters is that it closes.
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        assert_closed_within(&mut stream, Duration::from_secs(5));
        assert_echo(
            &mut good,
            format!("after random round {round} (seed {seed:#x})").as_bytes(),
        );
    }
    assert!(server.rejected() >= 20);
}

/// Proves a length over the limit is refused from the header alone, both before the
/// handshake (limit: a hello's size) and after it (limit: `frame_bytes_max`), without waiting
/// for the body it announces.
#[test]
fn oversized_length_is_refused_from_the_header() {
    init_logs();
    let server = Server::start(server_config());
    let mut good = good_client(server.addr);
    let before = server.rejected();
    for handshaken in [false, true] {
        let mut stream = if handshaken {
            raw_client(server.addr)
        } else {
            TcpStream::connect(server.addr).unwrap()
        };
        let len: u32 = if handshaken { 64 * 1024 + 1 } else { u32::MAX };
        stream.write_all(&len.to_le_bytes()).unwrap();
        assert_closed_within(&mut stream, Duration::from_secs(2));
        assert_echo(&mut good, b"still here");
    }
    server.wait_rejected(before + 2);
}

/// Proves a frame with a bad CRC closes the connection.
#[test]
fn bad_crc_closes_the_connection() {
    init_logs();
    let server = Server::start(server_config());
    let mut good = good_client(server.addr);
    let mut stream = raw_client(server.addr);
    let mut frame = Vec::new();
    codec::encode_frame(&mut frame, 5, b"checksummed");
    frame[12] ^= 0x01;
    stream.write_all(&frame).unwrap();
    assert_closed_within(&mut stream, Duration::from_secs(2));
    server.wait_rejected(1);
    assert_echo(&mut good, b"still here");
}

/// Proves a frame cut short by the sender closing is reported (as a truncated frame) and
/// not delivered.
#[test]
fn truncated_frame_is_not_delivered() {
    init_logs();
    let server = Server::start(server_config());
    let mut good = good_client(server.addr);
    let mut stream = raw_client(server.addr);
    let mut frame = Vec::new();
    codec::encode_frame(&mut frame, 5, &[7u8; 1000]);
    stream.write_all(&frame[..500]).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let echoed = assert_closed_within(&mut stream, Duration::from_secs(2));
    assert!(echoed.is_empty(), "a truncated frame was echoed");
    server.wait_rejected(1);
    assert_echo(&mut good, b"still here");
}

/// Proves a slow-loris client (a valid hello, one byte every 100 ms) is cut off by the
/// handshake timeout (300 ms here; configurable, 5 s by default) while others are served.
#[test]
fn slow_loris_is_cut_off_by_the_handshake_timeout() {
    init_logs();
    let server = Server::start(server_config());
    let mut good = good_client(server.addr);
    let mut hello = Vec::new();
    Hello {
        version: codec::PROTOCOL_VERSION,
        role: Role::Client,
        cluster_id: CLUSTER.into(),
        token: TOKEN.to_vec(),
        address: Vec::new(),
    }
    .encode_frame(&mut hello);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    let start = Instant::now();
    for byte in &hello {
        if stream.write_all(&[*byte]).is_err() {
            break;
        }
        assert_echo(&mut good, b"served meanwhile");
        thread::sleep(Duration::from_millis(100));
        if start.elapsed() > Duration::from_secs(3) {
            panic!("slow client not cut off");
        }
    }
    assert_closed_within(&mut stream, Duration::from_secs(2));
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    server.wait_rejected(1);
}

/// Proves a wrong token, a wrong cluster id and a wrong protocol version are each refused with
/// the matching status, and that the refused client sees which.
#[test]
fn wrong_token_cluster_or_version_is_refused() {
    init_logs();
    let server = Server::start(server_config());
    let mut good = good_client(server.addr);
    let timeout = Duration::from_secs(5);
    let refused = |result: Result<Connection, client::Error>| match result {
        Err(client::Error::Refused(status)) => status,
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert_eq!(
        refused(Connection::connect(
            server.addr,
            CLUSTER,
            Some(b"guess"),
            timeout
        )),
        Status::BadToken
    );
    assert_eq!(
        refused(Connection::connect(server.addr, CLUSTER, None, timeout)),
        Status::BadToken
    );
    assert_eq!(
        refused(Connection::connect(
            server.addr,
            "other",
            Some(TOKEN),
            timeout
        )),
        Status::WrongCluster
    );

    let mut stream = TcpStream::connect(server.addr).unwrap();
    let mut hello = Vec::new();
    Hello {
        version: 99,
        role: Role::Client,
        cluster_id: CLUSTER.into(),
        token: TOKEN.to_vec(),
        address: Vec::new(),
    }
    .encode_frame(&mut hello);
    stream.write_all(&hello).unwrap();
    let answer = assert_closed_within(&mut stream, Duration::from_secs(2));
    let codec::Decoded::Frame { kind, body, .. } = codec::decode(&answer, 64) else {
        panic!("no welcome")
    };
    assert_eq!(
        Welcome::decode(kind, &answer[body]).unwrap().status,
        Status::BadVersion
    );

    server.wait_rejected(4);
    assert_echo(&mut good, b"still here");
}

/// Proves a node from another cluster (and one with a wrong token) is refused, logs it, and
/// backs off to `reconnect_backoff_max` instead of redialing in a tight loop: with a 1 s
/// maximum backoff (jittered to 0.5–1 s) it is refused at most 3 times in 1.5 s, where a tight
/// loop would be refused hundreds of times.
#[test]
fn foreign_node_is_refused_and_backs_off() {
    init_logs();
    let mut config1 = server_config();
    config1.peers = vec![(2, "127.0.0.1:9".parse().unwrap())];
    let server = Server::start(config1);
    let mut good = good_client(server.addr);
    for (cluster, token) in [("other-cluster", TOKEN), (CLUSTER, &b"wrong"[..])] {
        let mut config2 = config(2);
        config2.cluster_id = cluster.into();
        config2.token = Some(token.to_vec());
        config2.reconnect_backoff_max = Duration::from_secs(1);
        config2.peers = vec![(1, server.addr)];
        let mut foreign = Transport::new(config2).unwrap();
        let mut events = vec![Vec::new()];
        pump_for(
            &mut [&mut foreign],
            &mut events,
            Duration::from_millis(1500),
        );
        let refusals = foreign.stats().peers[0].refusals;
        assert!((1..=3).contains(&refusals), "{refusals} refusals in 1.5 s");
        assert!(events[0].is_empty(), "unexpected events {:?}", events[0]);
        assert_echo(&mut good, b"still here");
    }
    assert!(server.rejected() >= 2);
}

/// Proves the frames that arrive in one read are delivered in order with their bodies ranges
/// of one shared buffer, and that a bad frame behind them closes the connection only after
/// they are delivered, as if they had been taken one by one.
#[test]
fn frames_of_one_read_share_a_buffer_and_precede_a_bad_one() {
    init_logs();
    let mut node = Transport::new(server_config()).unwrap();
    let addr = node.local_addr();
    let client = thread::spawn(move || {
        let mut stream = raw_client(addr);
        let mut frames = Vec::new();
        for body in [&b"first"[..], b"second", b""] {
            codec::encode_frame(&mut frames, 5, body);
        }
        let bad_at = frames.len();
        codec::encode_frame(&mut frames, 5, b"checksummed");
        frames[bad_at + 12] ^= 0x01;
        stream.write_all(&frames).unwrap();
        assert_closed_within(&mut stream, Duration::from_secs(5));
    });
    let mut events = Vec::new();
    let mut bodies = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while node.stats().connections_rejected == 0 {
        assert!(Instant::now() < deadline, "the bad frame was not refused");
        node.poll(Some(Duration::from_millis(10)), &mut events)
            .unwrap();
        for event in events.drain(..) {
            if let Event::ClientFrame { kind: 5, body, .. } = event {
                bodies.push(body);
            }
        }
    }
    client.join().unwrap();
    let texts: Vec<&[u8]> = bodies.iter().map(|b| &**b).collect();
    assert_eq!(texts, [&b"first"[..], b"second", b""]);
    let buffers: Vec<Arc<[u8]>> = bodies.into_iter().map(|b| b.into_parts().0).collect();
    assert!(
        Arc::ptr_eq(&buffers[0], &buffers[1]) && Arc::ptr_eq(&buffers[1], &buffers[2]),
        "each frame of the read was copied on its own"
    );
}
