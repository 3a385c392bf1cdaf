//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};
use transport::{Event, Transport, TransportConfig};

pub const CLUSTER: &str = "test-cluster";

pub fn init_logs() {
    let _ = env_logger::builder().is_test(true).try_init();
}

pub fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A config for a test node on a free port, with short backoffs so tests run quickly.
pub fn config(node_id: u64) -> TransportConfig {
    let mut config = TransportConfig::new(node_id, CLUSTER, localhost());
    config.reconnect_backoff_min = Duration::from_millis(10);
    config.reconnect_backoff_max = Duration::from_millis(200);
    config.frame_bytes_max = 1 << 20;
    config.outbox_bytes_max = 8 << 20;
    config
}

/// Two nodes, 1 and 2, each configured with the other as a peer.
pub fn pair(mut config1: TransportConfig, config2: TransportConfig) -> (Transport, Transport) {
    config1.peers.clear();
    let mut one = Transport::new(config1).unwrap();
    let mut two = Transport::new(config2).unwrap();
    two.add_peer(1, one.local_addr()).unwrap();
    one.add_peer(2, two.local_addr()).unwrap();
    (one, two)
}

/// Polls every transport in turn until `done` says so, collecting events per transport.
/// Panics after `timeout`.
pub fn pump_until(
    nodes: &mut [&mut Transport],
    events: &mut [Vec<Event>],
    timeout: Duration,
    mut done: impl FnMut(&[Vec<Event>]) -> bool,
) {
    let deadline = Instant::now() + timeout;
    while !done(events) {
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        for (node, out) in nodes.iter_mut().zip(events.iter_mut()) {
            node.poll(Some(Duration::from_millis(1)), out).unwrap();
        }
    }
}

/// Polls every transport for `duration`, collecting events.
pub fn pump_for(nodes: &mut [&mut Transport], events: &mut [Vec<Event>], duration: Duration) {
    let deadline = Instant::now() + duration;
    while Instant::now() < deadline {
        for (node, out) in nodes.iter_mut().zip(events.iter_mut()) {
            node.poll(Some(Duration::from_millis(1)), out).unwrap();
        }
    }
}

pub fn has(events: &[Event], wanted: &Event) -> bool {
    events.iter().any(|e| e == wanted)
}

/// Two connected nodes: both outbound connections are up.
pub fn connected_pair(
    config1: TransportConfig,
    config2: TransportConfig,
) -> (Transport, Transport) {
    let (mut one, mut two) = pair(config1, config2);
    let mut events = vec![Vec::new(), Vec::new()];
    pump_until(
        &mut [&mut one, &mut two],
        &mut events,
        Duration::from_secs(10),
        |e| has(&e[0], &Event::PeerUp(2)) && has(&e[1], &Event::PeerUp(1)),
    );
    (one, two)
}

/// A deterministic body for frame `seq`: its sequence number, then bytes derived from it.
/// Sizes are mostly small, with an occasional large frame.
pub fn body_for(seq: u64) -> Vec<u8> {
    let mixed = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let len = match mixed % 100 {
        0 => 60_000 + (mixed >> 40) as usize % 5_000,
        1..=9 => 1_000 + (mixed >> 40) as usize % 4_000,
        _ => 8 + (mixed >> 40) as usize % 120,
    };
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(&seq.to_le_bytes());
    let mut x = mixed | 1;
    while body.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        body.push(x as u8);
    }
    body
}
