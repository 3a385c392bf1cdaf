//! `raftctl`: the operator's and the client's tool for a raftd cluster.
//!
//! Exit codes: 0 done; 1 usage or configuration error (nothing sent); 2 definite failure
//! (certainly not applied); 3 outcome unknown (sent, no answer in time).
//!
//! This file holds the command line and runs the one-shot commands (propose, get, kill,
//! snapshot, transfer-leader, fault) with `raftd-client`'s blocking client. The rest is in
//! modules, which import from each other and never from here: `status` (the status
//! documents and table), `check` (the consistency check), `local` (a cluster on this
//! machine), `backup` (`snapshot save/inspect/restore`), `disk` (`check disk`), `waltool`
//! (`wal verify`, `wal dump`), `bench` (the load generator, on `raftd-client`'s
//! non-blocking client), `failure` (exit codes and their messages),
//! `output` (the `out!`/`put!` macros for stdout) and `parse` (option values).
#![forbid(unsafe_code)]

// First: the macros it defines are used by the modules after it.
#[macro_use]
mod output;

mod backup;
mod bench;
mod check;
mod disk;
mod failure;
mod local;
mod member;
mod parse;
mod status;
mod waltool;

use clap::{Args as ClapArgs, Parser, Subcommand};
use failure::Failure;
use parse::{parse_duration, parse_range};
use raftd::cli::parse_command_line;
use raftd_client::blocking::{Client, ClientConfig, ClientError};
use raftd_client::protocol::{FaultSpec, Op, Outcome, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// raftctl: inspect, use and test a raftd cluster.
///
/// Exit codes: 0 done; 1 usage or configuration error (nothing sent); 2 definite failure
/// (certainly not applied); 3 outcome unknown (sent, no answer in time: read it back).
#[derive(Parser, Debug)]
#[command(name = "raftctl", version)]
struct Cli {
    /// Node addresses, HOST:PORT,... [default: the local cluster started by `raftctl local up`]
    #[arg(long, env = "RAFTCTL_CLUSTER", value_delimiter = ',', global = true)]
    cluster: Vec<String>,

    /// Cluster name the nodes were started with [default: raftd; for `snapshot restore`,
    /// the backup's].
    #[arg(long, global = true)]
    cluster_id: Option<String>,

    /// Give up after this long (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true)]
    timeout: Duration,

    /// Print machine-readable JSON.
    #[arg(long, global = true)]
    json: bool,

    /// File holding the cluster's shared secret.
    #[arg(long, global = true)]
    token_file: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Show every node: role, term, leader, indices, WAL size, peers.
    Status,
    /// Replicate a write and print the index and term it committed at.
    Propose {
        #[command(subcommand)]
        write: ProposeCmd,
    },
    /// Read a key (linearizable, through any node).
    Get {
        /// The key.
        key: String,
    },
    /// Stop a node gracefully, or abort it at once with --crash (like kill -9).
    Kill {
        /// The node's id.
        id: u64,
        /// Abort immediately instead of a clean stop (a test tool: only a node started with
        /// --enable-fault-injection accepts it; others refuse, exit 2).
        #[arg(long)]
        crash: bool,
    },
    /// `snapshot ID`: make node ID take a snapshot now. `snapshot save FILE`, `snapshot
    /// inspect FILE`, `snapshot restore FILE ...`: backups of the store.
    Snapshot(SnapshotArgs),
    /// The cluster's members: `member list`, `member add ID ADDRESS [--learner]`,
    /// `member promote ID`, `member remove ID`.
    Member {
        #[command(subcommand)]
        action: member::MemberCmd,
    },
    /// Hand leadership to a node.
    TransferLeader {
        /// The node to lead.
        id: u64,
    },
    /// Inject network faults on a node's transport (its outgoing peer traffic).
    ///
    /// A test tool: only a node started with --enable-fault-injection accepts it; others
    /// refuse (exit 2).
    Fault(FaultArgs),
    /// Check the cluster: `check consistency` compares every node's key-value store.
    Check {
        #[command(subcommand)]
        what: CheckCmd,
    },
    /// Measure throughput and latency with closed-loop clients (like etcd's benchmark).
    Bench(bench::BenchArgs),
    /// Read a stopped node's write-ahead log offline: `wal verify`, `wal dump`.
    Wal {
        #[command(subcommand)]
        action: waltool::WalCmd,
    },
    /// Run a cluster on this machine.
    Local {
        #[command(subcommand)]
        action: local::LocalCmd,
    },
}

#[derive(Subcommand, Debug)]
enum ProposeCmd {
    /// Set KEY to VALUE.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Remove KEY.
    Delete {
        /// The key.
        key: String,
    },
    /// Set KEY to NEW if it holds EXPECTED ("-" for: the key is absent).
    Cas {
        /// The key.
        key: String,
        /// The value it must hold now, or "-" for absent.
        expected: String,
        /// The value to set.
        new: String,
    },
}

#[derive(Subcommand, Debug)]
enum CheckCmd {
    /// Do all nodes hold the same key-value store? Writes a checkpoint through the log,
    /// waits (up to --timeout) until every node has hashed its store at it, compares the
    /// hashes and names any node outside the majority. Exit codes: 0 all the same;
    /// 2 a divergence; 3 could not decide (a node unreachable or without the checkpoint).
    Consistency,
    /// Is the disk under DIR fit for a WAL? Times synced writes the way the WAL makes them
    /// (fdatasync p50/p99) and its sequential write throughput; fit when p99 is under 10 ms
    /// (etcd's guidance). Exit codes: 0 fit; 2 not fit.
    Disk(disk::DiskArgs),
}

#[derive(ClapArgs, Debug)]
#[command(args_conflicts_with_subcommands = true)]
struct SnapshotArgs {
    /// The node that takes a snapshot now.
    id: Option<u64>,
    #[command(subcommand)]
    backup: Option<backup::SnapshotCmd>,
}

#[derive(ClapArgs, Debug)]
struct FaultArgs {
    /// The node whose transport gets the faults.
    id: u64,
    /// Drop this percentage of the node's outgoing peer frames.
    #[arg(long)]
    drop: Option<f64>,
    /// Delay its outgoing peer frames by MIN..MAX milliseconds.
    #[arg(long, value_parser = parse_range)]
    delay: Option<(u64, u64)>,
    /// Cut it off from these node ids (both directions), comma-separated.
    #[arg(long, value_delimiter = ',')]
    partition: Vec<u64>,
    /// Remove every fault.
    #[arg(long, conflicts_with_all = ["drop", "delay", "partition"])]
    clear: bool,
}

fn main() -> ExitCode {
    let cli = match parse_command_line::<Cli>() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let json = cli.json;
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Reported(code)) => ExitCode::from(code),
        Err(f) => {
            let (code, msg) = f.exit();
            if json {
                out!("{}", serde_json::json!({"ok": false, "error": msg}));
            } else {
                eprintln!("raftctl: {msg}");
            }
            ExitCode::from(code)
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    // Commands that talk to no cluster.
    match &cli.command {
        Command::Local { action } => return local::run(action, cli.timeout, cli.json),
        Command::Wal { action } => return waltool::run(action, cli.json),
        Command::Check {
            what: CheckCmd::Disk(args),
        } => return disk::run(args, cli.json),
        Command::Snapshot(SnapshotArgs {
            backup: Some(cmd), ..
        }) if !matches!(cmd, backup::SnapshotCmd::Save { .. }) => {
            return backup::run_offline(cmd, cli.cluster_id.as_deref(), cli.json)
        }
        _ => {}
    }
    let config = client_config(&cli)?;
    let mut client = Client::new(config.clone());
    match cli.command {
        Command::Status => status::status(&mut client, &config, cli.json),
        Command::Propose { write } => {
            let w = match write {
                ProposeCmd::Put { key, value } => Write::Put {
                    key: key.into_bytes(),
                    value: value.into_bytes(),
                },
                ProposeCmd::Delete { key } => Write::Delete {
                    key: key.into_bytes(),
                },
                ProposeCmd::Cas { key, expected, new } => Write::Cas {
                    key: key.into_bytes(),
                    expected: (expected != "-").then(|| expected.into_bytes()),
                    new: new.into_bytes(),
                },
            };
            propose(&mut client, w, cli.json)
        }
        Command::Get { key } => {
            let value = client.get(key.as_bytes())?;
            let text = value
                .as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            if cli.json {
                out!("{}", serde_json::json!({"ok": true, "value": text}));
            } else {
                match text {
                    Some(t) => out!("{t}"),
                    None => out!("(no such key)"),
                }
            }
            Ok(())
        }
        Command::Kill { id, crash } => {
            node_op(&mut client, &config, id, Op::Shutdown { crash }, cli.json)
        }
        Command::Snapshot(SnapshotArgs { id: Some(id), .. }) => {
            node_op(&mut client, &config, id, Op::Snapshot, cli.json)
        }
        Command::Snapshot(SnapshotArgs {
            backup: Some(backup::SnapshotCmd::Save { file }),
            ..
        }) => {
            let leader = find_leader(&mut client, &config)?;
            backup::save(&mut client, leader, &config.cluster_id, &file, cli.json)
        }
        Command::Snapshot(_) => Err(Failure::Usage(
            "snapshot needs a node id (take a snapshot now) or save, inspect or restore".into(),
        )),
        Command::Member { action } => member::run(&action, &mut client, &config, cli.json),
        Command::TransferLeader { id } => {
            // Asked of the leader: find it through a redirect from any node.
            let leader = find_leader(&mut client, &config)?;
            let outcome = client.call_node(leader, Op::TransferLeader { target: id })?;
            print_outcome(outcome, cli.json)
        }
        Command::Fault(f) => {
            let spec = if f.clear {
                FaultSpec::default()
            } else {
                if f.drop.is_none() && f.delay.is_none() && f.partition.is_empty() {
                    return Err(Failure::Usage(
                        "fault needs --drop, --delay, --partition or --clear".into(),
                    ));
                }
                let drop_percent = f.drop.unwrap_or(0.0);
                if !(0.0..=100.0).contains(&drop_percent) {
                    return Err(Failure::Usage("--drop must be between 0 and 100".into()));
                }
                FaultSpec {
                    drop_percent,
                    delay_ms: f.delay,
                    partition: f.partition,
                }
            };
            node_op(&mut client, &config, f.id, Op::Fault(spec), cli.json)
        }
        Command::Check {
            what: CheckCmd::Consistency,
        } => check::consistency(&mut client, &config, cli.json),
        Command::Bench(args) => {
            // Writes start at the leader; without one, they find it by redirect.
            let leader = find_leader(&mut client, &config).ok();
            bench::run(&args, config, leader, cli.json)
        }
        Command::Local { .. }
        | Command::Wal { .. }
        | Command::Check {
            what: CheckCmd::Disk(_),
        } => unreachable!("handled above"),
    }
}

fn client_config(cli: &Cli) -> Result<ClientConfig, Failure> {
    let names: Vec<String> = if cli.cluster.is_empty() {
        local::default_cluster_addresses().ok_or_else(|| {
            Failure::Usage(
                "no --cluster given (or RAFTCTL_CLUSTER), and no local cluster is running; start one with `raftctl local up`".into(),
            )
        })?
    } else {
        cli.cluster.clone()
    };
    let mut nodes = Vec::new();
    for n in &names {
        let addr = n
            .to_socket_addrs()
            .map_err(|e| Failure::Usage(format!("--cluster '{n}': {e}")))?
            .next()
            .ok_or_else(|| Failure::Usage(format!("--cluster '{n}' resolves to nothing")))?;
        nodes.push(addr);
    }
    let token = match &cli.token_file {
        None => None,
        Some(p) => Some(
            std::fs::read(p)
                .map_err(|e| Failure::Usage(format!("--token-file {}: {e}", p.display())))?
                .trim_ascii()
                .to_vec(),
        ),
    };
    Ok(ClientConfig {
        nodes,
        cluster_id: cli.cluster_id.clone().unwrap_or_else(|| "raftd".into()),
        token,
        timeout: cli.timeout,
    })
}

fn propose(client: &mut Client, w: Write, json: bool) -> Result<(), Failure> {
    match client.write(w)? {
        Outcome::Written { index, term } => {
            if json {
                out!(
                    "{}",
                    serde_json::json!({"ok": true, "index": index, "term": term})
                );
            } else {
                out!("committed at index {index}, term {term}");
            }
            Ok(())
        }
        Outcome::CasMismatch { current, index } => {
            let current = current.map(|v| String::from_utf8_lossy(&v).into_owned());
            Err(Failure::Definite(format!(
                "compare-and-swap did not match: the key holds {} (checked at index {index}); nothing was written",
                current.map_or("nothing (absent)".to_string(), |c| format!("'{c}'"))
            )))
        }
        other => Err(Failure::Definite(format!("unexpected answer: {other:?}"))),
    }
}

fn print_outcome(outcome: Outcome, json: bool) -> Result<(), Failure> {
    match outcome {
        Outcome::Done { detail } => {
            if json {
                out!("{}", serde_json::json!({"ok": true, "detail": detail}));
            } else {
                out!("{detail}");
            }
            Ok(())
        }
        Outcome::NotLeader { leader, address } => Err(Failure::Definite(format!(
            "that node is not the leader (leader: {leader} at {address}); try again"
        ))),
        Outcome::Refused { reason } | Outcome::Unavailable { reason } => {
            Err(Failure::Definite(reason))
        }
        other => Err(Failure::Definite(format!("unexpected answer: {other:?}"))),
    }
}

/// The address of node `id`, asking each address for its id.
fn address_of(client: &mut Client, config: &ClientConfig, id: u64) -> Result<SocketAddr, Failure> {
    for &addr in &config.nodes {
        if client.node_id(addr).ok() == Some(id) {
            return Ok(addr);
        }
    }
    Err(Failure::Definite(format!(
        "node {id} is not reachable at any of {} (is it running? is it in --cluster?)",
        config
            .nodes
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    )))
}

fn node_op(
    client: &mut Client,
    config: &ClientConfig,
    id: u64,
    op: Op,
    json: bool,
) -> Result<(), Failure> {
    let addr = address_of(client, config, id)?;
    let crash = matches!(op, Op::Shutdown { crash: true });
    match client.call_node(addr, op) {
        Ok(outcome) => print_outcome(outcome, json),
        // An aborted node may not get its answer out: that is the point of --crash.
        Err(ClientError::Unknown(_)) if crash => print_outcome(
            Outcome::Done {
                detail: format!("node {id} aborted"),
            },
            json,
        ),
        Err(e) => Err(e.into()),
    }
}

fn find_leader(client: &mut Client, config: &ClientConfig) -> Result<SocketAddr, Failure> {
    member::leader_status(client, config).map(|(addr, _)| addr)
}
