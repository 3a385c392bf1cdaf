//! `raftctl check consistency`: do all nodes hold the same key-value store?
//!
//! It writes a checkpoint through the log (every node hashes its store right after applying
//! it, so all hashes are of the same log index), asks every node for its hash at that index
//! until each has one or the timeout passes, and judges them as the nodes' own periodic
//! check does (`raftd::consistency::judge`): the hash a majority of the cluster holds is
//! right, every other node diverges. Exit codes: 0 every node has the same hash; 2 a
//! divergence; 3 could not decide (a node unreachable, or without the checkpoint in time).

use crate::failure::Failure;
use raftd::consistency::{describe_divergence, hex, judge, Verdict};
use raftd_client::blocking::{Client, ClientConfig};
use raftd_client::protocol::{CheckpointHash, Op, Outcome, Write};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often nodes without the checkpoint's hash yet are asked again.
const POLL: Duration = Duration::from_millis(50);

/// What one node said.
enum State {
    Hash(u64),
    /// Not applied yet, or still hashing, when the time was up.
    Pending {
        applied: u64,
    },
    /// No record of the checkpoint (a snapshot skipped it, or a restart).
    Missing {
        applied: u64,
    },
    Unreachable(String),
}

struct Node {
    address: SocketAddr,
    id: Option<u64>,
    state: State,
}

/// Runs the check and prints one line per node and a verdict.
pub fn consistency(client: &mut Client, config: &ClientConfig, json: bool) -> Result<(), Failure> {
    let index = match client.write(Write::Checkpoint) {
        Ok(Outcome::Written { index, .. }) => index,
        Ok(other) => {
            return Err(Failure::Undecided(format!(
                "could not take a checkpoint: unexpected answer {other:?}"
            )))
        }
        Err(e) => {
            return Err(Failure::Undecided(format!(
                "could not take a checkpoint: {e}"
            )))
        }
    };
    let nodes = collect(client, config, index);
    let hashes: BTreeMap<u64, u64> = nodes
        .iter()
        .filter_map(|n| match (n.id, &n.state) {
            (Some(id), State::Hash(h)) => Some((id, *h)),
            _ => None,
        })
        .collect();
    let verdict = judge(config.nodes.len(), &hashes);
    let (code, summary) = if verdict.diverged() {
        (2, describe_divergence(index, &hashes, &verdict))
    } else if hashes.len() == nodes.len() {
        (
            0,
            format!(
                "all {} nodes have the same hash at index {index}",
                nodes.len()
            ),
        )
    } else {
        (
            3,
            format!(
                "could not decide: {} of {} nodes gave their hash at index {index}, all equal; the others are listed above",
                hashes.len(),
                nodes.len()
            ),
        )
    };
    if json {
        out!("{}", report_json(index, code, &summary, &nodes, &verdict));
    } else {
        put!("{}", report_text(index, &nodes, &verdict));
        out!("{summary}");
    }
    match code {
        0 => Ok(()),
        code => Err(Failure::Reported(code)),
    }
}

/// Asks every node for its hash at `index` until each has answered for good or the timeout
/// passes.
fn collect(client: &mut Client, config: &ClientConfig, index: u64) -> Vec<Node> {
    let deadline = Instant::now() + config.timeout;
    let mut nodes: Vec<Node> = config
        .nodes
        .iter()
        .map(|&address| match client.node_id(address) {
            Ok(id) => Node {
                address,
                id: Some(id),
                state: State::Pending { applied: 0 },
            },
            Err(e) => Node {
                address,
                id: None,
                state: State::Unreachable(e.to_string()),
            },
        })
        .collect();
    loop {
        for node in &mut nodes {
            if let State::Pending { .. } = node.state {
                node.state = ask(client, node.address, index);
            }
        }
        let pending = nodes
            .iter()
            .any(|n| matches!(n.state, State::Pending { .. }));
        if !pending || Instant::now() >= deadline {
            return nodes;
        }
        std::thread::sleep(POLL);
    }
}

fn ask(client: &mut Client, address: SocketAddr, index: u64) -> State {
    match client.call_node(address, Op::Checkpoint { index }) {
        Ok(Outcome::Checkpoint { hash, applied, .. }) => match hash {
            CheckpointHash::Known(h) => State::Hash(h),
            CheckpointHash::Pending => State::Pending { applied },
            CheckpointHash::Missing => State::Missing { applied },
        },
        Ok(other) => State::Unreachable(format!("unexpected answer {other:?}")),
        Err(e) => State::Unreachable(e.to_string()),
    }
}

/// One node's verdict: a word, and a detail for nodes without a hash.
fn judged(node: &Node, index: u64, verdict: &Verdict) -> (&'static str, String) {
    match &node.state {
        State::Hash(_) if node.id.is_some_and(|id| verdict.diverging.contains(&id)) => {
            ("diverges", String::new())
        }
        State::Hash(_) => ("agrees", String::new()),
        State::Pending { applied } => (
            "pending",
            format!("had not applied and hashed index {index} in time (applied {applied})"),
        ),
        State::Missing { applied } => (
            "missing",
            format!("has no record of checkpoint {index} (applied {applied}): it installed a snapshot past it or restarted; run the check again"),
        ),
        State::Unreachable(e) => ("unreachable", e.clone()),
    }
}

fn report_text(index: u64, nodes: &[Node], verdict: &Verdict) -> String {
    let mut out = format!("checkpoint at index {index}\n");
    out.push_str(&format!(
        "{:<3} {:<21} {:<16}  {}\n",
        "ID", "ADDRESS", "HASH", "VERDICT"
    ));
    for node in nodes {
        let id = node.id.map_or("-".to_string(), |id| id.to_string());
        let hash = match node.state {
            State::Hash(h) => hex(h),
            _ => "-".to_string(),
        };
        let (word, detail) = judged(node, index, verdict);
        let word = if word == "diverges" {
            "DIVERGES".to_string()
        } else if detail.is_empty() {
            word.to_string()
        } else {
            format!("{word}: {detail}")
        };
        out.push_str(&format!(
            "{id:<3} {:<21} {hash:<16}  {word}\n",
            node.address.to_string()
        ));
    }
    out
}

fn report_json(
    index: u64,
    code: u8,
    summary: &str,
    nodes: &[Node],
    verdict: &Verdict,
) -> serde_json::Value {
    let nodes: Vec<serde_json::Value> = nodes
        .iter()
        .map(|node| {
            let (word, detail) = judged(node, index, verdict);
            let hash = match node.state {
                State::Hash(h) => Some(hex(h)),
                _ => None,
            };
            serde_json::json!({
                "id": node.id,
                "address": node.address.to_string(),
                "hash": hash,
                "verdict": word,
                "detail": (!detail.is_empty()).then_some(detail),
            })
        })
        .collect();
    let overall = match code {
        0 => "agree",
        2 => "divergence",
        _ => "undecided",
    };
    serde_json::json!({
        "ok": code == 0,
        "index": index,
        "verdict": overall,
        "summary": summary,
        "majority": verdict.majority.map(hex),
        "diverging": verdict.diverging,
        "nodes": nodes,
    })
}
