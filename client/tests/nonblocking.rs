//! The non-blocking client against fake nodes: transports on loopback whose answers each test
//! scripts, pumped on the test's thread between the client's polls.

use raftd_client::nonblocking::{Client, Event, Retry};
use raftd_client::protocol::{
    Command, Op, Outcome, Request, Response, Write, FRAME_REQUEST, FRAME_RESPONSE,
};
use raftd_client::ClientConfig;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use transport::{Transport, TransportConfig};

const CLUSTER: &str = "test";

/// What a fake node answers a request (`None`: nothing).
type Script = Box<dyn FnMut(&Request) -> Option<Outcome>>;

/// A node that answers each request with what its script says (`None`: no answer), and
/// keeps every request it received.
struct FakeNode {
    transport: Transport,
    script: Script,
    received: Vec<Request>,
}

impl FakeNode {
    fn new(id: u64, script: impl FnMut(&Request) -> Option<Outcome> + 'static) -> FakeNode {
        let config = TransportConfig::new(id, CLUSTER, "127.0.0.1:0".parse().unwrap());
        FakeNode {
            transport: Transport::new(config).unwrap(),
            script: Box::new(script),
            received: Vec::new(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.transport.local_addr()
    }

    fn pump(&mut self) {
        let mut events = Vec::new();
        self.transport
            .poll(Some(Duration::ZERO), &mut events)
            .unwrap();
        for event in events {
            let transport::Event::ClientFrame { client, kind, body } = event else {
                continue;
            };
            assert_eq!(kind, FRAME_REQUEST);
            let request = Request::decode(&body).unwrap();
            if let Some(outcome) = (self.script)(&request) {
                let response = Response {
                    request_id: request.request_id,
                    outcome,
                };
                let _ = self
                    .transport
                    .send_client(client, FRAME_RESPONSE, &response.encode());
            }
            self.received.push(request);
        }
    }
}

fn config(nodes: Vec<SocketAddr>, timeout: Duration) -> ClientConfig {
    ClientConfig {
        nodes,
        cluster_id: CLUSTER.into(),
        token: None,
        timeout,
        tls: None,
    }
}

fn put(seq: u64) -> Op {
    Op::Write(Command {
        client_id: 5,
        seq,
        write: Write::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        },
    })
}

/// Polls the client, and pumps the other side after each poll, until no operation is
/// pending; returns the events.
fn run(client: &mut Client, mut pump: impl FnMut()) -> Vec<Event> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut events = Vec::new();
    while client.pending() > 0 {
        assert!(Instant::now() < deadline, "still pending: {events:?}");
        client
            .poll(Some(Duration::from_millis(1)), &mut events)
            .unwrap();
        pump();
    }
    events
}

// Proves that a write sent to a follower follows its redirect to the leader it names and is
// answered there, sent unchanged (same client id and sequence number), while a read is
// answered by the client's home node.
#[test]
fn writes_follow_redirects_and_reads_stay_home() {
    let mut leader = FakeNode::new(2, |_| Some(Outcome::Written { index: 7, term: 1 }));
    let leader_addr = leader.addr().to_string();
    let mut follower = FakeNode::new(1, move |request| {
        Some(match request.op {
            Op::Write(_) => Outcome::NotLeader {
                leader: 2,
                address: leader_addr.clone(),
            },
            _ => Outcome::Value(Some(b"a".to_vec())),
        })
    });
    let mut client =
        Client::new(&config(vec![follower.addr()], Duration::from_secs(1)), 2, 0).unwrap();
    let until = Instant::now() + Duration::from_secs(5);
    client.submit(0, put(1), until);
    client.submit(1, Op::Get { key: b"k".to_vec() }, until);
    let events = run(&mut client, || {
        follower.pump();
        leader.pump();
    });
    assert!(events.contains(&Event::Retrying {
        tag: 0,
        reason: Retry::Redirected
    }));
    assert!(events.contains(&Event::Answered {
        tag: 0,
        outcome: Outcome::Written { index: 7, term: 1 }
    }));
    assert!(events.contains(&Event::Answered {
        tag: 1,
        outcome: Outcome::Value(Some(b"a".to_vec()))
    }));
    assert_eq!(leader.received.len(), 1);
    assert_eq!(leader.received[0].op, put(1));
    assert_eq!(client.in_flight(), 0);
}

// Proves that an attempt left unanswered past the timeout is sent again, unchanged, and
// that the answer to the retry ends the operation; an `Unavailable` answer is retried too.
#[test]
fn unanswered_and_unavailable_attempts_are_sent_again() {
    let mut attempts = 0;
    let mut node = FakeNode::new(1, move |_| {
        attempts += 1;
        match attempts {
            1 => None,
            2 => Some(Outcome::Unavailable {
                reason: "no leader".into(),
            }),
            _ => Some(Outcome::Written { index: 3, term: 2 }),
        }
    });
    let mut client =
        Client::new(&config(vec![node.addr()], Duration::from_millis(150)), 1, 0).unwrap();
    client.submit(0, put(9), Instant::now() + Duration::from_secs(5));
    let events = run(&mut client, || node.pump());
    let reasons: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Retrying { .. }))
        .collect();
    assert_eq!(
        reasons,
        [
            &Event::Retrying {
                tag: 0,
                reason: Retry::TimedOut
            },
            &Event::Retrying {
                tag: 0,
                reason: Retry::Unavailable
            }
        ]
    );
    assert_eq!(
        events.last().map(|e| matches!(e, Event::Answered { .. })),
        Some(true)
    );
    assert_eq!(node.received.len(), 3);
    assert!(node.received.iter().all(|r| r.op == put(9)));
}

// Proves that a node nobody listens on, or one that refuses the handshake, is reported
// (once per failed connection) and the operation retried until its time to re-send is over,
// then given up.
#[test]
fn failed_connections_are_retried_then_given_up() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut other_cluster = Transport::new(TransportConfig::new(
        1,
        "another",
        "127.0.0.1:0".parse().unwrap(),
    ))
    .unwrap();
    let refused_by = other_cluster.local_addr();
    for (addr, why) in [(closed, "refused"), (refused_by, "cluster id mismatch")] {
        let mut client =
            Client::new(&config(vec![addr], Duration::from_millis(500)), 1, 0).unwrap();
        client.submit(0, put(1), Instant::now() + Duration::from_millis(300));
        let mut refusals = Vec::new();
        let events = run(&mut client, || {
            other_cluster
                .poll(Some(Duration::ZERO), &mut refusals)
                .unwrap();
        });
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::ConnectFailed { node, error } if *node == addr && error.contains(why))),
            "{events:?}"
        );
        assert!(events.contains(&Event::Retrying {
            tag: 0,
            reason: Retry::Connection
        }));
        assert_eq!(events.last(), Some(&Event::GaveUp { tag: 0 }));
    }
}

// Proves that an operation submitted for a later time does not leave before it, and is
// answered once it has.
#[test]
fn an_operation_submitted_for_later_waits_for_its_time() {
    let received_at = std::rc::Rc::new(std::cell::Cell::new(None));
    let seen = received_at.clone();
    let mut node = FakeNode::new(1, move |_| {
        seen.set(Some(Instant::now()));
        Some(Outcome::Written { index: 1, term: 1 })
    });
    let mut client = Client::new(&config(vec![node.addr()], Duration::from_secs(1)), 1, 0).unwrap();
    let at = Instant::now() + Duration::from_millis(200);
    client.submit_at(0, put(1), at, at + Duration::from_secs(5));
    let events = run(&mut client, || node.pump());
    assert_eq!(
        events,
        [Event::Answered {
            tag: 0,
            outcome: Outcome::Written { index: 1, term: 1 }
        }]
    );
    assert!(received_at.get().is_some_and(|t| t >= at));
}

// Proves that answers of every size arrive whole, on one connection, when many come at once:
// small ones sharing a read, long ones (up to the largest value) spanning many reads and
// growing the receive buffer, which is given back and grown again between them.
#[test]
fn answers_of_every_size_arrive_whole() {
    const OPS: usize = 48;
    let value_of = |key: &[u8]| -> Vec<u8> {
        let n: usize = std::str::from_utf8(key).unwrap().parse().unwrap();
        let len = match n % 4 {
            0 => n,
            1 => 70_000 + n * 13,
            2 => raftd_client::protocol::VALUE_BYTES_MAX - n,
            _ => 16_000 + n,
        };
        (0..len).map(|i| (i * 31 + n) as u8).collect()
    };
    let mut node = FakeNode::new(1, move |request| match &request.op {
        Op::Get { key } => Some(Outcome::Value(Some(value_of(key)))),
        _ => None,
    });
    let mut client =
        Client::new(&config(vec![node.addr()], Duration::from_secs(5)), OPS, 0).unwrap();
    let until = Instant::now() + Duration::from_secs(10);
    for round in 0..2 {
        for tag in 0..OPS {
            let key = (round * OPS + tag).to_string().into_bytes();
            client.submit(tag, Op::Get { key }, until);
        }
        let events = run(&mut client, || node.pump());
        let mut answered = 0;
        for event in events {
            let Event::Answered { tag, outcome } = event else {
                panic!("one connection, every answer on it: {event:?}");
            };
            let key = (round * OPS + tag).to_string().into_bytes();
            assert_eq!(outcome, Outcome::Value(Some(value_of(&key))), "tag {tag}");
            answered += 1;
        }
        assert_eq!(answered, OPS);
    }
}
