//! `raftctl snapshot save FILE`, `snapshot inspect FILE` and `snapshot restore FILE ...`:
//! backups of the store, like etcdctl's snapshot save and etcdutl's snapshot restore. The
//! file format and the restore itself are `raftd::backup`'s; this module pulls a backup from
//! the leader (`Op::Backup`, a chunk at a time) into a file, and runs the offline commands.
//!
//! Exit codes: 0 done; 1 usage, a backup that is damaged, truncated or not one, a data
//! directory that is not empty, or a restore that failed (nothing is left of it); 2 the
//! cluster could not give a backup, or `inspect` found the file damaged; 3 unknown.

use crate::failure::Failure;
use clap::{Args, Subcommand};
use raftd::backup::{self, BackupHeader, RestoreTarget};
use raftd::cli::parse_peer;
use raftd_client::blocking::Client;
use raftd_client::protocol::{BackupChunk, Op, Outcome};
use std::fs::File;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `raftctl snapshot ...` beyond `snapshot ID`.
#[derive(Subcommand, Debug)]
pub enum SnapshotCmd {
    /// Stream a consistent snapshot of the store from the leader into FILE (written to a
    /// temporary name, synced, renamed); prints its index, term, keys and bytes.
    Save {
        /// The backup file to write (replaced if it exists, only once the new one is whole).
        file: PathBuf,
    },
    /// Check a backup file whole and print what it holds. Exit codes: 0 intact; 2 damaged.
    Inspect {
        /// The backup file.
        file: PathBuf,
    },
    /// Build a new node's data directory from a backup, for a new cluster: run it on each
    /// host with that host's --id, then start raftd as usual.
    Restore(RestoreArgs),
}

/// `raftctl snapshot restore`'s arguments.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// The backup file.
    file: PathBuf,
    /// The node's data directory to create (absent, or an empty directory).
    #[arg(long)]
    data_dir: PathBuf,
    /// The node's id in the new cluster.
    #[arg(long)]
    id: u64,
    /// The new cluster's members, ID=HOST:PORT,... (as raftd's --peers).
    #[arg(long, value_delimiter = ',', required = true)]
    peers: Vec<String>,
}

/// Runs a backup command. `cluster_id` is --cluster-id when given.
pub fn run_offline(cmd: &SnapshotCmd, cluster_id: Option<&str>, json: bool) -> Result<(), Failure> {
    match cmd {
        SnapshotCmd::Inspect { file } => inspect(file, json),
        SnapshotCmd::Restore(args) => restore(args, cluster_id, json),
        SnapshotCmd::Save { .. } => unreachable!("save talks to the cluster"),
    }
}

fn inspect(file: &Path, json: bool) -> Result<(), Failure> {
    if !file.is_file() {
        return Err(Failure::Usage(format!("{}: no such file", file.display())));
    }
    match backup::read_backup(file) {
        Ok(checked) => {
            print_header(
                file,
                &checked.header,
                json,
                "intact (every checksum matches)",
            );
            Ok(())
        }
        Err(why) => {
            if json {
                out!(
                    "{}",
                    serde_json::json!({"ok": false, "file": file, "damaged": why})
                );
            } else {
                out!("{}: DAMAGED: {why}", file.display());
            }
            Err(Failure::Reported(2))
        }
    }
}

fn print_header(file: &Path, h: &BackupHeader, json: bool, verdict: &str) {
    if json {
        out!(
            "{}",
            serde_json::json!({"ok": true, "file": file, "cluster": h.cluster_id,
                "index": h.index, "term": h.term, "keys": h.key_count, "bytes": h.data_bytes,
                "crc": format!("{:08x}", h.data_crc), "saved_unix_secs": h.saved_unix_secs})
        );
    } else {
        out!("{}: {verdict}", file.display());
        out!("  cluster  {}", h.cluster_id);
        out!("  index    {} (term {})", h.index, h.term);
        out!("  keys     {}", h.key_count);
        out!("  bytes    {} (crc {:08x})", h.data_bytes, h.data_crc);
        out!("  saved    {}", utc(h.saved_unix_secs));
    }
}

/// Seconds since the Unix epoch as `YYYY-MM-DD hh:mm:ss UTC` (the proleptic Gregorian
/// calendar, by the days-to-civil algorithm of Howard Hinnant's date library).
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rest = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

fn restore(args: &RestoreArgs, cluster_id: Option<&str>, json: bool) -> Result<(), Failure> {
    let mut ids = Vec::new();
    for p in &args.peers {
        let (id, _) = parse_peer(p).map_err(|e| Failure::Usage(format!("--peers: {e}")))?;
        if ids.contains(&id) {
            return Err(Failure::Usage(format!(
                "node id {id} appears twice in --peers"
            )));
        }
        ids.push(id);
    }
    if !ids.contains(&args.id) {
        return Err(Failure::Usage(format!(
            "--id {} is not in --peers ({})",
            args.id,
            args.peers.join(",")
        )));
    }
    if !args.file.is_file() {
        return Err(Failure::Usage(format!(
            "{}: no such file",
            args.file.display()
        )));
    }
    let checked = backup::read_backup(&args.file).map_err(|why| {
        Failure::Usage(format!(
            "{} is not a usable backup: {why}; nothing was restored",
            args.file.display()
        ))
    })?;
    let header = checked.header.clone();
    let cluster_id = cluster_id.unwrap_or(&header.cluster_id).to_string();
    if cluster_id.is_empty() || cluster_id.len() > backup::CLUSTER_ID_BYTES_MAX {
        return Err(Failure::Usage("--cluster-id must be 1 to 255 bytes".into()));
    }
    let target = RestoreTarget {
        data_dir: args.data_dir.clone(),
        id: args.id,
        cluster_id: cluster_id.clone(),
        voters: ids.clone(),
    };
    backup::restore(checked, &target).map_err(Failure::Usage)?;
    if json {
        out!(
            "{}",
            serde_json::json!({"ok": true, "data_dir": args.data_dir, "id": args.id,
                "cluster": cluster_id, "index": header.index, "term": header.term,
                "keys": header.key_count})
        );
    } else {
        out!(
            "restored {} (index {} term {}, {} keys) into {} as node {} of cluster '{cluster_id}'",
            args.file.display(),
            header.index,
            header.term,
            header.key_count,
            args.data_dir.display(),
            args.id
        );
        out!(
            "start it with: raftd --id {} --peers {} --data-dir {} --cluster-id {cluster_id}",
            args.id,
            args.peers.join(","),
            args.data_dir.display()
        );
    }
    Ok(())
}

/// `raftctl snapshot save FILE`: pulls a backup from `leader` into FILE.
pub fn save(
    client: &mut Client,
    leader: SocketAddr,
    cluster_id: &str,
    file: &Path,
    json: bool,
) -> Result<(), Failure> {
    let name = file
        .file_name()
        .ok_or_else(|| Failure::Usage(format!("{}: not a file name", file.display())))?;
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let saved = pull(client, leader, cluster_id, &temp).and_then(|header| {
        std::fs::rename(&temp, file)
            .map_err(|e| Failure::Usage(format!("cannot rename to {}: {e}", file.display())))?;
        backup::sync_dir(&dir).map_err(Failure::Usage)?;
        Ok(header)
    });
    let header = match saved {
        Ok(header) => header,
        Err(e) => {
            let _ = std::fs::remove_file(&temp);
            return Err(e);
        }
    };
    print_header(
        file,
        &header,
        json,
        "saved (synced, then renamed into place)",
    );
    Ok(())
}

/// Asks `leader` for a backup and writes it into `temp`, synced; returns its header.
fn pull(
    client: &mut Client,
    leader: SocketAddr,
    cluster_id: &str,
    temp: &Path,
) -> Result<BackupHeader, Failure> {
    let mut chunk = ask(client, leader, 0, 0)?;
    let id = chunk.backup_id;
    while !chunk.ready {
        std::thread::sleep(Duration::from_millis(20));
        chunk = ask(client, leader, id, 0)?;
    }
    let header = BackupHeader {
        cluster_id: cluster_id.to_string(),
        index: chunk.index,
        term: chunk.term,
        key_count: backup::key_count(&chunk.data).ok_or_else(|| {
            Failure::Definite("the node's backup does not start like a store's snapshot".into())
        })?,
        data_bytes: chunk.total_bytes,
        data_crc: chunk.crc,
        saved_unix_secs: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    };
    let local = |e: std::io::Error| {
        Failure::Usage(format!(
            "cannot write {}: {e}; nothing was saved",
            temp.display()
        ))
    };
    let mut out = File::create(temp).map_err(local)?;
    out.write_all(&header.encode()).map_err(local)?;
    let mut crc = crc32fast::Hasher::new();
    let mut offset = 0;
    loop {
        if chunk.offset != offset || chunk.total_bytes != header.data_bytes {
            return Err(Failure::Definite(format!(
                "the node answered with bytes {}.. of {} where {offset}.. of {} were asked for",
                chunk.offset, chunk.total_bytes, header.data_bytes
            )));
        }
        crc.update(&chunk.data);
        out.write_all(&chunk.data).map_err(local)?;
        offset += chunk.data.len() as u64;
        if offset >= header.data_bytes || chunk.data.is_empty() {
            break;
        }
        chunk = ask(client, leader, id, offset)?;
    }
    if offset != header.data_bytes || crc.finalize() != header.data_crc {
        return Err(Failure::Definite(
            "the backup's bytes arrived damaged (CRC mismatch); nothing was saved; retry".into(),
        ));
    }
    out.sync_all().map_err(local)?;
    Ok(header)
}

fn ask(
    client: &mut Client,
    node: SocketAddr,
    id: u64,
    offset: u64,
) -> Result<BackupChunk, Failure> {
    let op = Op::Backup {
        backup_id: id,
        offset,
    };
    match client.call_node(node, op)? {
        Outcome::Backup(chunk) => Ok(chunk),
        Outcome::NotLeader { .. } => Err(Failure::Definite(
            "leadership moved while the backup started; retry".into(),
        )),
        Outcome::Refused { reason } | Outcome::Unavailable { reason } => {
            Err(Failure::Definite(format!("{reason}; nothing was saved")))
        }
        other => Err(Failure::Definite(format!("unexpected answer: {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    /// Known instants: the epoch, a leap day, the end of a century year that is no leap year.
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(super::utc(4_107_542_399), "2100-02-28 23:59:59 UTC");
    }
}
