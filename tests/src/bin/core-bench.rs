//! Throughput of the consensus core alone: a 3-node cluster in memory, no IO, no encoding,
//! messages handed from node to node directly. Proposes 64-byte commands in batches and
//! prints committed (and applied on every node) entries per second for several batch sizes.
//!
//! `cargo run --release -p raftd-tests --bin core-bench [-- --entries N]`

use raft::{Config, Message, NodeId, RawNode, Restore};
use std::collections::VecDeque;
use std::time::Instant;

struct Cluster {
    nodes: Vec<RawNode>,
    queue: VecDeque<Message>,
    applied: Vec<u64>,
}

impl Cluster {
    fn new() -> Cluster {
        let voters: Vec<NodeId> = (1..=3).map(NodeId).collect();
        let nodes = (1..=3)
            .map(|id| {
                let mut c = Config::new(NodeId(id), voters.clone());
                c.election_timeout_ticks = 10;
                c.heartbeat_interval_ticks = 2;
                c.inflight_messages_max = 64;
                c.uncommitted_bytes_max = 256 << 20;
                RawNode::new(c, Restore::default()).expect("valid config")
            })
            .collect();
        Cluster {
            nodes,
            queue: VecDeque::new(),
            applied: vec![0; 3],
        }
    }

    fn pump(&mut self) {
        loop {
            for i in 0..3 {
                while self.nodes[i].has_ready() {
                    let mut rd = self.nodes[i].ready();
                    self.queue.extend(rd.take_messages());
                    // "Persisting" is free here: there is no disk.
                    self.queue.extend(rd.take_persisted_messages());
                    self.applied[i] += rd.take_committed_entries().len() as u64;
                    self.nodes[i].advance(rd);
                }
            }
            if self.queue.is_empty() {
                return;
            }
            while let Some(m) = self.queue.pop_front() {
                let to = m.to.0 as usize - 1;
                self.nodes[to].step(m).expect("well-addressed");
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let entries: u64 = args
        .iter()
        .position(|a| a == "--entries")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    println!("3-node in-memory cluster, 64-byte commands, {entries} entries per run");
    println!("{:>6} {:>14} {:>12}", "batch", "entries/s", "ns/entry");
    for batch in [1u64, 16, 256, 4096] {
        let mut c = Cluster::new();
        while !c.nodes.iter().any(RawNode::is_leader) {
            for n in c.nodes.iter_mut() {
                n.tick();
            }
            c.pump();
        }
        let leader = c.nodes.iter().position(RawNode::is_leader).expect("leader");
        c.pump();
        let base: Vec<u64> = c.applied.clone();
        let command = vec![7u8; 64];
        let started = Instant::now();
        let mut proposed = 0;
        while proposed < entries {
            for _ in 0..batch.min(entries - proposed) {
                c.nodes[leader]
                    .propose(command.clone())
                    .expect("leader accepts");
                proposed += 1;
            }
            c.pump();
        }
        // Followers learn the last commit index from the next heartbeat.
        for _ in 0..2 {
            c.nodes[leader].tick();
            c.pump();
        }
        let secs = started.elapsed().as_secs_f64();
        for (i, (now, before)) in c.applied.iter().zip(&base).enumerate() {
            assert!(
                now - before >= entries,
                "node {} applied {} of {entries}",
                i + 1,
                now - before
            );
        }
        println!(
            "{:>6} {:>14.0} {:>12.0}",
            batch,
            entries as f64 / secs,
            secs * 1e9 / entries as f64
        );
    }
}
