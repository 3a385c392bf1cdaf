//! Two endpoints over loopback: bulk ordered delivery, reconnection, clients.

mod common;

use common::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};
use transport::client::Connection;
use transport::{Event, SendError, Transport};

/// Sends `count` frames from `node` to peer `to`, polling (which flushes) whenever the outbox is
/// full, while checking frames arriving from `to` carry `body_for(0..count)` in order. Every
/// other frame is encoded straight into the outbox (`send_peer_encoded`), so a refusal of
/// either kind that left bytes behind would show as a corrupt or misordered frame.
/// Once done, it keeps polling until its outbox is written and the other side is done too
/// (`done` counts finished sides), so no frame is left unsent when the transport is dropped.
fn send_and_check(mut node: Transport, to: u64, count: u64, done: Arc<AtomicUsize>) -> Transport {
    let mut sent = 0;
    let mut received = 0;
    let mut events = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    while sent < count || received < count {
        assert!(
            Instant::now() < deadline,
            "stalled: sent {sent}, received {received}"
        );
        while sent < count {
            let body = body_for(sent);
            let queued = if sent % 2 == 0 {
                node.send_peer(to, 7, &body)
            } else {
                node.send_peer_encoded(to, 7, |out| out.extend_from_slice(&body))
            };
            match queued {
                Ok(()) => sent += 1,
                Err(SendError::OutboxFull) => break,
                Err(error) => panic!("send {sent}: {error}"),
            }
        }
        node.poll(Some(Duration::from_millis(5)), &mut events)
            .unwrap();
        for event in events.drain(..) {
            match event {
                Event::PeerFrame { from, kind, body } => {
                    assert_eq!((from, kind), (to, 7));
                    assert_eq!(
                        body,
                        body_for(received).into(),
                        "frame {received} corrupted or out of order"
                    );
                    received += 1;
                }
                other => panic!("unexpected event {other:?}"),
            }
        }
    }
    while node.pending_bytes() > 0 {
        node.poll(Some(Duration::from_millis(5)), &mut events)
            .unwrap();
    }
    done.fetch_add(1, Ordering::SeqCst);
    while done.load(Ordering::SeqCst) < 2 {
        node.poll(Some(Duration::from_millis(5)), &mut events)
            .unwrap();
    }
    node
}

fn exchange(count: u64) {
    init_logs();
    let (one, two) = connected_pair(config(1), config(2));
    let start = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let done2 = done.clone();
    let a = thread::spawn(move || send_and_check(one, 2, count, done));
    let b = thread::spawn(move || send_and_check(two, 1, count, done2));
    let (one, two) = (a.join().unwrap(), b.join().unwrap());
    let elapsed = start.elapsed();
    for (node, peer) in [(&one, 2), (&two, 1)] {
        let stats = node.stats();
        let s = stats.peers.iter().find(|p| p.id == peer).unwrap();
        assert_eq!((s.frames_out, s.frames_in), (count, count));
        assert!(s.dropped_outbox_full > 0 || s.frames_out == count);
    }
    eprintln!("exchanged {count} frames each way in {elapsed:?}");
}

/// Proves frames of mixed sizes (8 B to 65 KB) are all delivered, in order and intact, in both
/// directions at once: each side checks every body against the deterministic `body_for(seq)`.
/// 500,000 frames each way, 1,000,000 in all (about 3 s in the test profile).
#[test]
fn exchange_a_million_mixed_frames_in_order() {
    exchange(500_000);
}

/// Proves that when a peer goes away and comes back on the same address, the other side
/// notices (PeerDown), redials by itself with backoff, and traffic flows again (PeerUp, then a
/// frame delivered) without any call from the caller.
#[test]
fn peer_restart_reconnects() {
    init_logs();
    let (mut one, two) = connected_pair(config(1), config(2));
    let addr_two = two.local_addr();
    drop(two);
    let mut events = vec![Vec::new()];
    pump_until(&mut [&mut one], &mut events, Duration::from_secs(10), |e| {
        has(&e[0], &Event::PeerDown(2))
    });
    assert_eq!(
        one.send_peer(2, 1, b"lost"),
        Err(SendError::NotConnected(2))
    );
    // Let a few redials fail against the closed port before the peer comes back.
    pump_for(&mut [&mut one], &mut events, Duration::from_millis(100));

    let mut config2 = config(2);
    config2.listen = addr_two;
    config2.peers = vec![(1, one.local_addr())];
    let mut two = Transport::new(config2).unwrap();
    let mut events = vec![Vec::new(), Vec::new()];
    pump_until(
        &mut [&mut one, &mut two],
        &mut events,
        Duration::from_secs(10),
        |e| has(&e[0], &Event::PeerUp(2)) && has(&e[1], &Event::PeerUp(1)),
    );
    one.send_peer(2, 3, b"after restart").unwrap();
    let wanted = Event::PeerFrame {
        from: 1,
        kind: 3,
        body: b"after restart".as_slice().into(),
    };
    pump_until(
        &mut [&mut one, &mut two],
        &mut events,
        Duration::from_secs(10),
        |e| has(&e[1], &wanted),
    );
    let stats = one.stats();
    assert_eq!(stats.peers[0].reconnects, 1);
    assert!(stats.peers[0].connected);
}

/// Proves the blocking client completes the handshake, and that frames go both ways between it
/// and the event loop (an echo), with `ClientClosed` reported when it hangs up.
#[test]
fn client_round_trip() {
    init_logs();
    let mut server = Transport::new(config(1)).unwrap();
    let addr = server.local_addr();
    let client = thread::spawn(move || {
        let mut connection =
            Connection::connect(addr, CLUSTER, None, Duration::from_secs(5)).unwrap();
        assert_eq!(connection.node_id(), 1);
        for i in 0..100u32 {
            let body = vec![i as u8; i as usize * 100];
            connection.send(9, &body, Duration::from_secs(5)).unwrap();
            assert_eq!(connection.recv(Duration::from_secs(5)).unwrap(), (10, body));
        }
    });
    let mut events = Vec::new();
    let mut echoed = 0;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(Instant::now() < deadline);
        server
            .poll(Some(Duration::from_millis(10)), &mut events)
            .unwrap();
        let mut closed = false;
        for event in events.drain(..) {
            match event {
                Event::ClientFrame {
                    client,
                    kind: 9,
                    body,
                } => {
                    server.send_client(client, 10, &body).unwrap();
                    echoed += 1;
                }
                Event::ClientClosed(client) => {
                    assert_eq!(
                        server.send_client(client, 1, b""),
                        Err(SendError::UnknownClient(client))
                    );
                    closed = true;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        if closed {
            break;
        }
    }
    client.join().unwrap();
    assert_eq!(echoed, 100);
    assert_eq!(server.stats().clients, 0);
}

/// Proves a client that sends frames and hangs up at once has every frame delivered and
/// its hang-up reported: the frames and the end of the stream arrive together, in one
/// readiness event, so a read that stops at the first short read (the loop's shortcut for
/// a drained socket) would never see the end and leak the connection.
#[test]
fn client_that_sends_and_hangs_up_at_once_is_reported_closed() {
    init_logs();
    let mut server = Transport::new(config(1)).unwrap();
    let addr = server.local_addr();
    let mut events = Vec::new();
    for round in 0..20u8 {
        let client = thread::spawn(move || {
            let mut connection =
                Connection::connect(addr, CLUSTER, None, Duration::from_secs(5)).unwrap();
            for i in 0..3u8 {
                connection
                    .send(9, &[round, i], Duration::from_secs(5))
                    .unwrap();
            }
        });
        let (mut frames, mut closed) = (0, false);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !closed {
            assert!(
                Instant::now() < deadline,
                "round {round}: hang-up not reported ({frames} frames)"
            );
            server
                .poll(Some(Duration::from_millis(10)), &mut events)
                .unwrap();
            for event in events.drain(..) {
                match event {
                    Event::ClientFrame { kind: 9, body, .. } => {
                        assert_eq!(*body, [round, frames]);
                        frames += 1;
                    }
                    Event::ClientClosed(_) => closed = true,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
        assert_eq!(frames, 3, "round {round}");
        client.join().unwrap();
        assert_eq!(server.stats().clients, 0);
    }
}

/// Proves another thread can interrupt a blocked poll through the waker.
#[test]
fn waker_interrupts_poll() {
    let mut node = Transport::new(config(1)).unwrap();
    let waker = node.waker();
    let start = Instant::now();
    let handle = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        waker.wake().unwrap();
    });
    let mut events = Vec::new();
    while events.is_empty() {
        node.poll(Some(Duration::from_secs(10)), &mut events)
            .unwrap();
    }
    assert_eq!(events, vec![Event::Woken]);
    assert!(start.elapsed() < Duration::from_secs(5));
    handle.join().unwrap();
}

/// Proves a body encoded straight into the outbox that exceeds the frame limit is refused
/// (`TooLarge`) with nothing queued, and that the frames around it arrive intact.
#[test]
fn an_encoded_frame_over_the_limit_is_refused_and_leaves_nothing() {
    init_logs();
    let mut config1 = config(1);
    config1.frame_bytes_max = 1024;
    let (mut one, mut two) = connected_pair(config1, config(2));
    one.send_peer_encoded(2, 3, |out| out.extend_from_slice(b"before"))
        .unwrap();
    let pending = one.pending_bytes();
    assert_eq!(
        one.send_peer_encoded(2, 3, |out| out.extend_from_slice(&[9u8; 1025])),
        Err(SendError::TooLarge {
            len: 1025,
            max: 1024
        })
    );
    assert_eq!(
        one.pending_bytes(),
        pending,
        "the refused body stayed queued"
    );
    one.send_peer_encoded(2, 3, |out| out.extend_from_slice(b"after"))
        .unwrap();
    let mut events = vec![Vec::new(), Vec::new()];
    pump_until(
        &mut [&mut one, &mut two],
        &mut events,
        Duration::from_secs(10),
        |e| {
            e[1].iter()
                .filter(|e| matches!(e, Event::PeerFrame { .. }))
                .count()
                >= 2
        },
    );
    let bodies: Vec<&[u8]> = events[1]
        .iter()
        .filter_map(|e| match e {
            Event::PeerFrame {
                from: 1,
                kind: 3,
                body,
            } => Some(&**body),
            _ => None,
        })
        .collect();
    assert_eq!(bodies, vec![&b"before"[..], &b"after"[..]]);
}
