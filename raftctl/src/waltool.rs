//! `raftctl wal verify DIR` and `raftctl wal dump DIR`: a stopped node's write-ahead log read
//! offline, without changing it (`wal::verify_dir`, `wal::dump_dir`: recovery's own checks over
//! read-only maps). Exit codes: 0 intact (a torn tail is no damage: a node truncates it), 2
//! damage, 1 a directory that cannot be read or is in use by a running node.

use crate::failure::Failure;
use clap::{Args, Subcommand};
use raft::EntryKind;
use raftd_client::protocol::{Command, Write};
use std::path::{Path, PathBuf};
use wal::format::Record;
use wal::{VerifyReport, WalError};

/// `raftctl wal ...`.
#[derive(Subcommand, Debug)]
pub enum WalCmd {
    /// Check every CRC of a stopped node's WAL as recovery would, and report the first damage
    /// with its file and offset. Read-only. Exit codes: 0 intact; 2 damaged; 1 unreadable or
    /// in use.
    Verify {
        /// The node's data directory (or its `wal` directory).
        dir: PathBuf,
    },
    /// Print the records a stopped node's WAL holds (index, term, kind, size, and the key of
    /// key-value commands), then verify it as `wal verify` does. Read-only.
    Dump(DumpArgs),
}

/// `raftctl wal dump`'s arguments.
#[derive(Args, Debug)]
pub struct DumpArgs {
    /// The node's data directory (or its `wal` directory).
    dir: PathBuf,
    /// Only entries from this index on (other records are then left out).
    #[arg(long)]
    from: Option<u64>,
    /// Only entries up to this index (other records are then left out).
    #[arg(long)]
    to: Option<u64>,
}

/// Runs a `wal` subcommand.
pub fn run(cmd: &WalCmd, json: bool) -> Result<(), Failure> {
    match cmd {
        WalCmd::Verify { dir } => {
            let dir = wal_dir(dir);
            let report = wal::verify_dir(&dir).map_err(refused)?;
            print_verdict(&dir, &report, json)
        }
        WalCmd::Dump(args) => dump(args, json),
    }
}

/// A node's data directory holds its WAL in `wal/`; a WAL directory is taken as it is.
fn wal_dir(dir: &Path) -> PathBuf {
    let inner = dir.join("wal");
    if inner.is_dir() {
        inner
    } else {
        dir.to_path_buf()
    }
}

fn refused(e: WalError) -> Failure {
    match e {
        WalError::Locked { .. } => Failure::Usage(format!(
            "{e}: a node is running on it; stop it first (these tools read a stopped node's WAL)"
        )),
        e => Failure::Usage(e.to_string()),
    }
}

fn dump(args: &DumpArgs, json: bool) -> Result<(), Failure> {
    let dir = wal_dir(&args.dir);
    let ranged = args.from.is_some() || args.to.is_some();
    let from = args.from.unwrap_or(0);
    let to = args.to.unwrap_or(u64::MAX);
    if from > to {
        return Err(Failure::Usage(format!("--from {from} is after --to {to}")));
    }
    if !json {
        out!(
            "{:<22} {:>9} {:>9} {:>6}  {:<10} {:>8}  KEY / DETAIL",
            "FILE",
            "OFFSET",
            "INDEX",
            "TERM",
            "KIND",
            "BYTES"
        );
    }
    let mut visit = |file: &Path, offset: u64, record: &Record<'_>| {
        let row = describe(record);
        let in_range = row.index.map_or(!ranged, |i| (from..=to).contains(&i));
        if !in_range {
            return;
        }
        let file = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        if json {
            out!(
                "{}",
                serde_json::json!({"file": file, "offset": offset, "index": row.index,
                    "term": row.term, "kind": row.kind, "bytes": row.bytes, "key": row.key,
                    "detail": row.detail})
            );
        } else {
            let dash = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
            out!(
                "{file:<22} {offset:>9} {:>9} {:>6}  {:<10} {:>8}  {}",
                dash(row.index),
                dash(row.term),
                row.kind,
                dash(row.bytes),
                row.key.as_deref().unwrap_or(&row.detail)
            );
        }
    };
    let report = wal::dump_dir(&dir, &mut visit).map_err(refused)?;
    print_verdict(&dir, &report, json)
}

/// One record as dump prints it.
struct Row {
    index: Option<u64>,
    term: Option<u64>,
    kind: &'static str,
    bytes: Option<u64>,
    key: Option<String>,
    detail: String,
}

fn describe(record: &Record<'_>) -> Row {
    let mut row = Row {
        index: None,
        term: None,
        kind: "",
        bytes: None,
        key: None,
        detail: String::new(),
    };
    match record {
        Record::Entry {
            index,
            term,
            kind,
            data,
        } => {
            row.index = Some(index.get());
            row.term = Some(term.get());
            row.bytes = Some(data.len() as u64);
            (row.kind, row.key) = match kind {
                EntryKind::Noop => ("noop", None),
                EntryKind::Normal => command_kind(data),
                EntryKind::Config => {
                    row.detail = match raft::Configuration::decode(data) {
                        Ok(conf) => conf.to_string(),
                        Err(e) => format!("undecodable configuration: {e}"),
                    };
                    ("config", None)
                }
            };
        }
        Record::HardState(hs) => {
            row.kind = "hardstate";
            row.detail = format!(
                "term={} vote={} commit={}",
                hs.term.get(),
                hs.vote.0,
                hs.commit.get()
            );
        }
        Record::SnapshotMarker(meta) => {
            row.kind = "snapshot";
            row.detail = format!(
                "snapshot through index {} term {}",
                meta.index.get(),
                meta.term.get()
            );
        }
        Record::TruncateSuffix { from } => {
            row.kind = "truncate";
            row.detail = format!("entries from {} on discarded", from.get());
        }
        Record::Commit { .. } => row.kind = "commit",
    }
    row
}

/// The kind of a key-value command and its key (escaped where not printable ASCII).
fn command_kind(data: &[u8]) -> (&'static str, Option<String>) {
    let key = |k: &[u8]| Some(k.escape_ascii().to_string());
    match Command::decode(data) {
        Ok(c) => match c.write {
            Write::Put { key: k, .. } => ("put", key(&k)),
            Write::Delete { key: k } => ("delete", key(&k)),
            Write::Cas { key: k, .. } => ("cas", key(&k)),
            Write::Checkpoint => ("checkpoint", None),
        },
        Err(_) => ("undecoded", None),
    }
}

/// Prints what verify found; exit code 2 when damaged.
fn print_verdict(dir: &Path, report: &VerifyReport, json: bool) -> Result<(), Failure> {
    if json {
        let damage = report
            .damage
            .as_ref()
            .map(|d| serde_json::json!({"file": d.file, "offset": d.offset, "what": d.what}));
        out!(
            "{}",
            serde_json::json!({
                "ok": report.damage.is_none(),
                "dir": dir,
                "segments": report.segments.len(),
                "snapshot_files": report.snapshots.len(),
                "snapshot_index": report.snapshot.index.get(),
                "snapshot_term": report.snapshot.term.get(),
                "first_index": report.first_index.get(),
                "last_index": report.last_index.get(),
                "term": report.hard_state.term.get(),
                "vote": report.hard_state.vote.0,
                "commit": report.hard_state.commit.get(),
                "torn_tail": report.torn_tail,
                "repairing": report.repairing,
                "damage": damage,
            })
        );
    } else {
        print_summary(dir, report);
    }
    match report.damage {
        None => Ok(()),
        Some(_) => Err(Failure::Reported(2)),
    }
}

fn print_summary(dir: &Path, report: &VerifyReport) {
    out!(
        "{}: {} segment(s), {} snapshot file(s)",
        dir.display(),
        report.segments.len(),
        report.snapshots.len()
    );
    for s in &report.snapshots {
        let meta = s.meta.map_or("unreadable header".into(), |m| {
            format!("index {} term {}", m.index.get(), m.term.get())
        });
        let verdict = if s.damage.is_some() { "DAMAGED" } else { "ok" };
        out!(
            "  {} ({meta}, {} bytes): {verdict}",
            s.path.display(),
            s.bytes
        );
    }
    if report.repairing {
        out!("  REPAIRING: the node was repairing a damaged log when it stopped");
    }
    if let Some(torn) = &report.torn_tail {
        out!("  {torn} (an interrupted last write, not damage)");
    }
    match &report.damage {
        None => out!(
            "intact: snapshot at {} (term {}), log {}..={}, term {} vote {} commit {}",
            report.snapshot.index.get(),
            report.snapshot.term.get(),
            report.first_index.get(),
            report.last_index.get(),
            report.hard_state.term.get(),
            report.hard_state.vote.0,
            report.hard_state.commit.get()
        ),
        Some(d) => out!(
            "DAMAGED: {} at offset {}: {}",
            d.file.display(),
            d.offset,
            d.what
        ),
    }
}
