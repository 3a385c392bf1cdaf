//! Loopback throughput of the transport between two processes, next to raw TCP measured in the
//! same run.
//!
//! `cargo run --release -p transport --example transport-bench [-- --small N --large N --raw-mib N]`
//!
//! The parent process receives; for each measurement it spawns itself as the sending peer.
//! Raw TCP is a plain blocking copy loop (1 MiB writes and reads). Frame rates count from the
//! first frame received to the last, in the receiving process; MB/s counts wire bytes (headers
//! included) in units of 10^6 bytes.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use transport::{Event, SendError, Transport, TransportConfig};

const CLUSTER: &str = "bench";
const COPY_CHUNK_BYTES: usize = 1 << 20;
const SEND_WINDOW_BYTES: usize = 1 << 20;

fn main() {
    let _ = env_logger::try_init();
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("raw-sender") => raw_sender(args[2].parse().unwrap(), args[3].parse().unwrap()),
        Some("frame-sender") => frame_sender(
            args[2].parse().unwrap(),
            args[3].parse().unwrap(),
            args[4].parse().unwrap(),
        ),
        _ => parent(&args[1..]),
    }
}

fn option(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

fn spawn_self(args: &[String]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(args)
        .spawn()
        .expect("spawn the sending peer")
}

fn parent(args: &[String]) {
    let small_count = option(args, "--small", 5_000_000);
    let large_count = option(args, "--large", 100_000);
    let raw_mib = option(args, "--raw-mib", 4096);

    let raw_mb_s = raw_receive(raw_mib << 20);
    println!(
        "raw TCP, blocking copy loop ({} KiB writes): {raw_mb_s:.0} MB/s",
        COPY_CHUNK_BYTES / 1024
    );
    for (size, count) in [(64usize, small_count), (64 * 1024, large_count)] {
        let (frames_s, mb_s) = frames_receive(size, count);
        println!(
            "transport, {count} frames of {size} B: {frames_s:.0} frames/s, {mb_s:.0} MB/s ({:.0}% of raw TCP)",
            100.0 * mb_s / raw_mb_s
        );
    }
}

fn raw_receive(total_bytes: u64) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut child = spawn_self(&[
        "raw-sender".into(),
        addr.to_string(),
        total_bytes.to_string(),
    ]);
    let (mut stream, _) = listener.accept().unwrap();
    let mut buf = vec![0u8; COPY_CHUNK_BYTES];
    let mut received = 0u64;
    let mut start = None;
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        start.get_or_insert_with(Instant::now);
        received += n as u64;
    }
    let elapsed = start.unwrap().elapsed();
    assert_eq!(received, total_bytes);
    child.wait().unwrap();
    received as f64 / elapsed.as_secs_f64() / 1e6
}

fn raw_sender(addr: SocketAddr, total_bytes: u64) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let buf = vec![0x5Au8; COPY_CHUNK_BYTES];
    let mut sent = 0u64;
    while sent < total_bytes {
        let n = (total_bytes - sent).min(buf.len() as u64) as usize;
        stream.write_all(&buf[..n]).unwrap();
        sent += n as u64;
    }
}

fn frames_receive(size: usize, count: u64) -> (f64, f64) {
    let mut config = TransportConfig::new(1, CLUSTER, "127.0.0.1:0".parse().unwrap());
    // Node 1 only receives here; it must know node 2 to accept it, and its own dials to this
    // unused address fail quietly.
    config.peers = vec![(2, "127.0.0.1:1".parse().unwrap())];
    let mut node = Transport::new(config).unwrap();
    let mut child = spawn_self(&[
        "frame-sender".into(),
        node.local_addr().to_string(),
        size.to_string(),
        count.to_string(),
    ]);
    let mut events = Vec::new();
    let mut received = 0u64;
    let mut start = None;
    while received < count {
        node.poll(Some(Duration::from_secs(10)), &mut events)
            .unwrap();
        for event in events.drain(..) {
            if let Event::PeerFrame { body, .. } = event {
                assert_eq!(body.len(), size);
                start.get_or_insert_with(Instant::now);
                received += 1;
            }
        }
    }
    let elapsed = start.unwrap().elapsed().as_secs_f64();
    child.wait().unwrap();
    let frames_s = (count - 1) as f64 / elapsed;
    (
        frames_s,
        frames_s * transport::codec::frame_bytes(size) as f64 / 1e6,
    )
}

fn frame_sender(addr: SocketAddr, size: usize, count: u64) {
    let mut config = TransportConfig::new(2, CLUSTER, "127.0.0.1:0".parse().unwrap());
    config.peers = vec![(1, addr)];
    let mut node = Transport::new(config).unwrap();
    let mut events = Vec::new();
    while !node.is_connected(1) {
        node.poll(Some(Duration::from_millis(100)), &mut events)
            .unwrap();
    }
    let body = vec![0xA5u8; size];
    let mut sent = 0;
    while sent < count {
        // Queue up to a window of unsent bytes (as Raft's in-flight limit would), then let
        // the poll write the batch; a window that fits in cache beats filling the whole outbox.
        while sent < count && node.pending_bytes() < SEND_WINDOW_BYTES {
            match node.send_peer(1, 1, &body) {
                Ok(()) => sent += 1,
                Err(SendError::OutboxFull) => break,
                Err(error) => panic!("send failed: {error}"),
            }
        }
        node.poll(Some(Duration::from_millis(10)), &mut events)
            .unwrap();
    }
    while node.pending_bytes() > 0 {
        node.poll(Some(Duration::from_millis(10)), &mut events)
            .unwrap();
    }
}
