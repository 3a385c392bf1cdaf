//! `raftctl member`: list the cluster's members and change them (add a learner, promote it,
//! remove a node). Changes are asked of the leader, found through any node's status; each
//! returns once the configuration it leads to is committed.

use crate::failure::Failure;
use clap::Subcommand;
use raftd_client::blocking::{Client, ClientConfig};
use raftd_client::protocol::{MemberOp, Op, Outcome};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A learner counts as caught up when its log is at most this many entries behind the
/// leader's (the leader refuses a promotion beyond 1,000).
const CAUGHT_UP_LAG: u64 = 100;

#[derive(Subcommand, Debug)]
pub enum MemberCmd {
    /// The members: id, address, role (voter / learner), and the leader's match index of each.
    List,
    /// Add node ID, listening at ADDRESS (IP:PORT), as a learner; without --learner, also
    /// wait until it has caught up with the leader's log, then promote it to voter.
    Add {
        /// The new node's id (unused in this cluster so far).
        id: u64,
        /// Where it listens: the address it was started with (`raftd --join --listen`).
        address: String,
        /// Only add it as a learner (it receives the log, never votes).
        #[arg(long)]
        learner: bool,
        /// How long to wait for the learner to catch up before promoting it.
        #[arg(long, value_parser = crate::parse::parse_duration, default_value = "10m")]
        catch_up_timeout: Duration,
    },
    /// Make learner ID a voter; refused while it is far behind the leader's log.
    Promote {
        /// The learner's id.
        id: u64,
    },
    /// Remove node ID, voter or learner; a leader being removed hands leadership on first.
    Remove {
        /// The node's id.
        id: u64,
    },
}

/// The leader's address and status, found through the nodes raftctl knows and the leader
/// address their status names (the leader may be a node added since).
pub fn leader_status(
    client: &mut Client,
    config: &ClientConfig,
) -> Result<(SocketAddr, serde_json::Value), Failure> {
    let status = |client: &mut Client, addr: SocketAddr| match client.call_node(addr, Op::Status) {
        Ok(Outcome::Status(s)) => serde_json::from_str::<serde_json::Value>(&s).ok(),
        _ => None,
    };
    for &addr in &config.nodes {
        let Some(s) = status(client, addr) else {
            continue;
        };
        if s["role"] == "leader" {
            return Ok((addr, s));
        }
        let leader = s["leader"].as_u64().unwrap_or(0);
        let named = s["peers"]
            .as_array()
            .and_then(|peers| peers.iter().find(|p| p["id"].as_u64() == Some(leader)))
            .and_then(|p| p["address"].as_str())
            .and_then(|a| a.parse::<SocketAddr>().ok());
        if let Some(leader_addr) = named {
            if let Some(l) = status(client, leader_addr).filter(|l| l["role"] == "leader") {
                return Ok((leader_addr, l));
            }
        }
    }
    Err(Failure::Definite(
        "no leader found; wait for an election and retry".into(),
    ))
}

/// One member as `member list` shows it.
struct Member {
    id: u64,
    address: String,
    role: String,
    match_index: u64,
}

fn members(leader: &serde_json::Value) -> Vec<Member> {
    let mut all = vec![Member {
        id: leader["id"].as_u64().unwrap_or(0),
        address: leader["address"].as_str().unwrap_or("").to_string(),
        role: leader["member_role"]
            .as_str()
            .unwrap_or("voter")
            .to_string(),
        match_index: leader["last_index"].as_u64().unwrap_or(0),
    }];
    for p in leader["peers"].as_array().into_iter().flatten() {
        all.push(Member {
            id: p["id"].as_u64().unwrap_or(0),
            address: p["address"].as_str().unwrap_or("").to_string(),
            role: p["member_role"].as_str().unwrap_or("").to_string(),
            match_index: p["match"].as_u64().unwrap_or(0),
        });
    }
    all.sort_by_key(|m| m.id);
    all
}

pub fn run(
    cmd: &MemberCmd,
    client: &mut Client,
    config: &ClientConfig,
    json: bool,
) -> Result<(), Failure> {
    match cmd {
        MemberCmd::List => list(client, config, json),
        MemberCmd::Add {
            id,
            address,
            learner,
            catch_up_timeout,
        } => {
            change(
                client,
                config,
                MemberOp::AddLearner,
                *id,
                address,
                json && *learner,
            )?;
            if *learner {
                return Ok(());
            }
            wait_caught_up(client, config, *id, *catch_up_timeout, json)?;
            change(client, config, MemberOp::Promote, *id, "", json)
        }
        MemberCmd::Promote { id } => change(client, config, MemberOp::Promote, *id, "", json),
        MemberCmd::Remove { id } => {
            let (_, leader) = leader_status(client, config)?;
            if leader["id"].as_u64() == Some(*id) {
                hand_leadership_on(client, config, *id, &leader)?;
            }
            change(client, config, MemberOp::Remove, *id, "", json)
        }
    }
}

fn list(client: &mut Client, config: &ClientConfig, json: bool) -> Result<(), Failure> {
    let (_, leader) = leader_status(client, config)?;
    let all = members(&leader);
    if json {
        let list: Vec<serde_json::Value> = all
            .iter()
            .map(|m| {
                serde_json::json!({"id": m.id, "address": m.address, "role": m.role, "match": m.match_index})
            })
            .collect();
        out!("{}", serde_json::json!({"ok": true, "members": list}));
        return Ok(());
    }
    out!("{:<4} {:<22} {:<8} MATCH", "ID", "ADDRESS", "ROLE");
    for m in &all {
        out!(
            "{:<4} {:<22} {:<8} {}",
            m.id,
            m.address,
            m.role,
            m.match_index
        );
    }
    let conf = &leader["configuration"];
    if !conf["outgoing"].as_array().is_none_or(|o| o.is_empty()) {
        out!(
            "(a change is under way: joint configuration, outgoing voters {})",
            conf["outgoing"]
        );
    }
    Ok(())
}

/// Asks the leader for one change and prints what it answered.
fn change(
    client: &mut Client,
    config: &ClientConfig,
    change: MemberOp,
    id: u64,
    address: &str,
    json: bool,
) -> Result<(), Failure> {
    let (leader, _) = leader_status(client, config)?;
    let op = Op::ChangeMembers {
        change,
        id,
        address: address.to_string(),
    };
    match client.call_node(leader, op)? {
        Outcome::NotLeader { leader, .. } => Err(Failure::Definite(format!(
            "leadership moved to node {leader} before the change was asked; nothing changed, try again"
        ))),
        // The leadership changed before the change committed: it may yet take effect.
        Outcome::Unavailable { reason } => Err(Failure::Undecided(reason)),
        other => crate::print_outcome(other, json),
    }
}

/// Waits until learner `id` is within [`CAUGHT_UP_LAG`] entries of the leader's log.
fn wait_caught_up(
    client: &mut Client,
    config: &ClientConfig,
    id: u64,
    within: Duration,
    json: bool,
) -> Result<(), Failure> {
    let deadline = Instant::now() + within;
    let mut said = Instant::now();
    loop {
        let (_, leader) = leader_status(client, config)?;
        let last = leader["last_index"].as_u64().unwrap_or(0);
        let matched = members(&leader)
            .into_iter()
            .find(|m| m.id == id)
            .map(|m| m.match_index);
        if let Some(m) = matched {
            if m + CAUGHT_UP_LAG >= last {
                return Ok(());
            }
            if !json && said.elapsed() >= Duration::from_secs(2) {
                eprintln!("learner {id}: {m} of {last} entries");
                said = Instant::now();
            }
        }
        if Instant::now() > deadline {
            return Err(Failure::Definite(format!(
                "learner {id} did not catch up within {within:?} (match {matched:?}, leader's last index {last}); it stays a learner: promote it later with `raftctl member promote {id}`"
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The leader is to be removed: hands leadership to the voter with the highest match index
/// first and waits (bounded) for it to lead.
fn hand_leadership_on(
    client: &mut Client,
    config: &ClientConfig,
    id: u64,
    leader: &serde_json::Value,
) -> Result<(), Failure> {
    let Some(target) = members(leader)
        .into_iter()
        .filter(|m| m.id != id && m.role == "voter")
        .max_by_key(|m| m.match_index)
    else {
        return Err(Failure::Definite(format!(
            "node {id} is the only voter; add another before removing it"
        )));
    };
    let (addr, _) = leader_status(client, config)?;
    match client.call_node(addr, Op::TransferLeader { target: target.id })? {
        Outcome::Done { .. } => {}
        Outcome::Refused { reason } | Outcome::Unavailable { reason } => {
            return Err(Failure::Definite(format!(
                "cannot hand leadership to node {} before removing node {id}: {reason}",
                target.id
            )))
        }
        other => return Err(Failure::Definite(format!("unexpected answer: {other:?}"))),
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok((_, s)) = leader_status(client, config) {
            if s["id"].as_u64() != Some(id) {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(Failure::Definite(format!(
        "leadership did not move off node {id} within 10 s; nothing was removed"
    )))
}
