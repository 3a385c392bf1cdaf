//! `raftctl status`: every node's status document, as a table a person reads or as JSON.

use crate::failure::Failure;
use raftd_client::blocking::{Client, ClientConfig};
use raftd_client::protocol::{Op, Outcome};
use std::net::SocketAddr;

/// One status document per node; unreachable nodes are listed as such.
pub fn collect_status(client: &mut Client, nodes: &[SocketAddr]) -> Vec<serde_json::Value> {
    nodes
        .iter()
        .map(|&addr| match client.call_node(addr, Op::Status) {
            Ok(Outcome::Status(s)) => {
                let mut v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
                v["reachable"] = true.into();
                v["address"] = addr.to_string().into();
                v
            }
            Ok(other) => serde_json::json!({"address": addr.to_string(), "reachable": false, "error": format!("{other:?}")}),
            Err(e) => serde_json::json!({"address": addr.to_string(), "reachable": false, "error": e.to_string()}),
        })
        .collect()
}

/// Prints every node's status; fails when no node is reachable.
pub fn status(client: &mut Client, config: &ClientConfig, json: bool) -> Result<(), Failure> {
    let docs = collect_status(client, &config.nodes);
    let none_reachable = docs.iter().all(|d| d["reachable"] == false);
    if json && none_reachable {
        // --json prints one document: here the failure's, naming each node's error as the
        // table would.
        let errors: Vec<String> = docs
            .iter()
            .map(|d| {
                format!(
                    "{}: {}",
                    d["address"].as_str().unwrap_or("?"),
                    d["error"].as_str().unwrap_or("")
                )
            })
            .collect();
        return Err(Failure::Definite(format!(
            "no node is reachable ({})",
            errors.join("; ")
        )));
    }
    if json {
        out!("{}", serde_json::Value::Array(docs));
    } else {
        put!("{}", render_status(&docs));
    }
    if none_reachable {
        return Err(Failure::Definite("no node is reachable".into()));
    }
    Ok(())
}

fn mib(bytes: &serde_json::Value) -> String {
    format!(
        "{:.1}M",
        bytes.as_u64().unwrap_or(0) as f64 / (1 << 20) as f64
    )
}

/// The status table a person reads.
pub fn render_status(docs: &[serde_json::Value]) -> String {
    let mut out = format!(
        "{:<3} {:<21} {:<4} {:<13} {:>5} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
        "ID", "ADDRESS", "UP", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAST", "SNAP", "WAL"
    );
    for d in docs {
        if d["reachable"] != true {
            out.push_str(&format!(
                "{:<3} {:<21} {:<4} {}\n",
                "-",
                d["address"].as_str().unwrap_or("?"),
                "no",
                d["error"].as_str().unwrap_or("")
            ));
            continue;
        }
        // serde_json values ignore width flags: make them strings first.
        let n = |k: &str| d[k].to_string();
        out.push_str(&format!(
            "{:<3} {:<21} {:<4} {:<13} {:>5} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}\n",
            n("id"),
            d["address"].as_str().unwrap_or("?"),
            "yes",
            d["role"].as_str().unwrap_or("?"),
            n("term"),
            n("leader"),
            n("commit"),
            n("applied"),
            n("last_index"),
            n("snapshot_index"),
            mib(&d["wal_bytes"])
        ));
        let leader = d["role"] == "leader";
        let peers: Vec<String> = d["peers"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .map(|p| {
                        let conn = if p["connected"] == true { "up" } else { "down" };
                        if leader {
                            format!("{} match={} next={} {conn}", p["id"], p["match"], p["next"])
                        } else {
                            format!("{} {conn}", p["id"])
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!("    peers: {}\n", peers.join(", ")));
        let conf = &d["configuration"];
        let ids = |v: &serde_json::Value| {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .map(|id| id.to_string())
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        };
        if conf.is_object() {
            let mut line = format!(
                "    member: {}; configuration (index {}): voters [{}]",
                d["member_role"].as_str().unwrap_or("?"),
                conf["index"],
                ids(&conf["voters"])
            );
            if !ids(&conf["outgoing"]).is_empty() {
                line.push_str(&format!(
                    ", joint with outgoing [{}]",
                    ids(&conf["outgoing"])
                ));
            }
            if !ids(&conf["learners"]).is_empty() {
                line.push_str(&format!(", learners [{}]", ids(&conf["learners"])));
            }
            out.push_str(&line);
            out.push('\n');
        }
        if let Some(alarm) = d["alarm"].as_str() {
            out.push_str(&format!(
                "    ALARM: {alarm} (see `raftctl check consistency`)\n"
            ));
        }
        if d["repairing"] == true {
            out.push_str(
                "    REPAIRING: its WAL was damaged and cut; it votes in no election until the leader has restored its log\n",
            );
        }
    }
    out
}
