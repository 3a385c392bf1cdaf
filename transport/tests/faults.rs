//! The fault layer honours its settings: loss rate, delay range and partitions.

mod common;

use common::*;
use std::time::{Duration, Instant};
use transport::{Direction, Event, Faults, Transport};

fn frames_from(events: &[Event], peer: u64) -> Vec<Vec<u8>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::PeerFrame { from, body, .. } if *from == peer => Some(body.to_vec()),
            _ => None,
        })
        .collect()
}

/// Proves a 30% drop rate drops 30% of 20,000 frames within ±2 points (the binomial standard
/// deviation is 0.32 points, so this is a 6-sigma bound with seed-fixed randomness), that
/// every frame not dropped arrives, and that the counters agree.
#[test]
fn drop_rate_is_honoured() {
    init_logs();
    let (mut one, mut two) = connected_pair(config(1), config(2));
    one.set_faults(Faults {
        drop_percent: 30.0,
        ..Faults::default()
    });
    let count = 20_000u32;
    for i in 0..count {
        one.send_peer(2, 1, &i.to_le_bytes()).unwrap();
    }
    let dropped = one.stats().peers[0].dropped_by_faults;
    let mut events = vec![Vec::new(), Vec::new()];
    let expected = count as usize - dropped as usize;
    pump_until(
        &mut [&mut one, &mut two],
        &mut events,
        Duration::from_secs(10),
        |e| frames_from(&e[1], 1).len() >= expected,
    );
    let delivered = frames_from(&events[1], 1);
    assert_eq!(delivered.len(), expected);
    let rate = dropped as f64 / count as f64;
    assert!((0.28..=0.32).contains(&rate), "drop rate {rate}");
    // Survivors arrive in order (no delay configured).
    let seqs: Vec<u32> = delivered
        .iter()
        .map(|b| u32::from_le_bytes(b[..4].try_into().unwrap()))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
}

/// Proves a 20–60 ms delay holds every frame at least 20 ms and 99 % of them at most 60 ms
/// plus scheduling slack (25 ms), that the delays spread over the range (some under 27 ms,
/// some over 53 ms), and that their mean is near 40 ms.
#[test]
fn delay_range_is_honoured() {
    init_logs();
    let (mut one, mut two) = connected_pair(config(1), config(2));
    one.set_faults(Faults {
        delay_ms: Some((20, 60)),
        ..Faults::default()
    });
    let start = Instant::now();
    let count = 400u64;
    let mut events = [Vec::new(), Vec::new()];
    let mut latencies = Vec::new();
    let mut sent = 0;
    while latencies.len() < count as usize {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "delayed frames not delivered"
        );
        if sent < count {
            let at = start.elapsed().as_micros() as u64;
            one.send_peer(2, 1, &at.to_le_bytes()).unwrap();
            sent += 1;
        }
        for node in [&mut one, &mut two] {
            let out = if node.node_id() == 1 {
                &mut events[0]
            } else {
                &mut events[1]
            };
            node.poll(Some(Duration::from_millis(1)), out).unwrap();
        }
        for event in events[1].drain(..) {
            if let Event::PeerFrame { body, .. } = event {
                let at = u64::from_le_bytes(body[..8].try_into().unwrap());
                latencies.push(start.elapsed().as_micros() as u64 - at);
            }
        }
    }
    let ms = |us: u64| us as f64 / 1000.0;
    latencies.sort_unstable();
    let (min, max) = (ms(latencies[0]), ms(latencies[latencies.len() - 1]));
    // The top 1 % is left out of the upper bound: one stall of this thread (the test's
    // binaries run beside each other on a shared machine; once 30 ms over the slack)
    // delays every frame waiting behind it. None may arrive early.
    let p99 = ms(latencies[latencies.len() * 99 / 100]);
    let mean = ms(latencies.iter().sum::<u64>()) / latencies.len() as f64;
    assert!(
        min >= 20.0,
        "a frame arrived {min} ms after it was sent (under 20)"
    );
    assert!(p99 <= 85.0, "latency p99 {p99} ms (range {min}..{max} ms)");
    assert!(
        min < 27.0 && max > 53.0,
        "delays do not spread over the range: {min}..{max} ms"
    );
    assert!((36.0..=46.0).contains(&mean), "mean delay {mean} ms");
}

fn deliver(one: &mut Transport, two: &mut Transport, from: u64, body: &[u8]) -> bool {
    let (sender, receiver) = if from == 1 {
        (&mut *one, &mut *two)
    } else {
        (&mut *two, &mut *one)
    };
    sender.send_peer(3 - from, 1, body).unwrap();
    let mut events = vec![Vec::new(), Vec::new()];
    pump_for(
        &mut [sender, receiver],
        &mut events,
        Duration::from_millis(100),
    );
    frames_from(&events[1], from).iter().any(|b| b == body)
}

/// Proves partitions cut exactly the configured direction and heal when cleared: `Both` cuts
/// both ways, `Inbound` only what node 1 receives, `Outbound` only what it sends.
#[test]
fn partitions_cut_the_configured_direction() {
    init_logs();
    let (mut one, mut two) = connected_pair(config(1), config(2));
    let cases = [
        (Direction::Both, false, false),
        (Direction::Inbound, true, false),
        (Direction::Outbound, false, true),
    ];
    for (direction, one_to_two, two_to_one) in cases {
        one.set_faults(Faults {
            partition: [2].into_iter().collect(),
            direction,
            ..Faults::default()
        });
        assert_eq!(
            deliver(&mut one, &mut two, 1, b"1->2"),
            one_to_two,
            "{direction:?} 1->2"
        );
        assert_eq!(
            deliver(&mut one, &mut two, 2, b"2->1"),
            two_to_one,
            "{direction:?} 2->1"
        );
        one.set_faults(Faults::default());
        assert!(deliver(&mut one, &mut two, 1, b"healed 1->2"));
        assert!(deliver(&mut one, &mut two, 2, b"healed 2->1"));
    }
    assert_eq!(one.stats().peers[0].dropped_by_faults, 4);
}
