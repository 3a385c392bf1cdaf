//! Backup files (`raftctl snapshot save`, `inspect`, `restore`): the format, its checks, and
//! restoring a backup into a new node's data directory. The layout is in `FORMAT.md` ("The
//! backup file"), mirrored by the offset constants below.
//!
//! A backup is checked whole before anything is written: the header's CRC, the file's exact
//! length, the data's CRC, and the store decoding (`Kv::restore`), so a damaged or truncated
//! file is refused with nothing created. A restore writes a marker file first and removes it
//! last; a node refuses to start in a data directory holding it (an interrupted restore), and
//! a failed restore removes what it made.

use crate::kv::{HashKeys, Kv, SESSIONS_MAX_DEFAULT};
use crate::server::{identity_text, IDENTITY_FILE, RESTORE_MARKER_FILE};
use raft::{HardState, LogIndex, NodeId, Snapshot, SnapshotMeta, Term};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use wal::{Wal, WalOptions};

/// The first eight bytes of a backup file.
pub const BACKUP_MAGIC: [u8; 8] = *b"RAFTDBAK";
/// The format version this build writes and reads.
pub const BACKUP_VERSION: u32 = 1;
const MAGIC_OFFSET: usize = 0;
const VERSION_OFFSET: usize = MAGIC_OFFSET + 8;
const HEADER_CRC_OFFSET: usize = VERSION_OFFSET + 4;
const INDEX_OFFSET: usize = HEADER_CRC_OFFSET + 4;
const TERM_OFFSET: usize = INDEX_OFFSET + 8;
const KEY_COUNT_OFFSET: usize = TERM_OFFSET + 8;
const DATA_BYTES_OFFSET: usize = KEY_COUNT_OFFSET + 8;
const DATA_CRC_OFFSET: usize = DATA_BYTES_OFFSET + 8;
const CLUSTER_ID_BYTES_OFFSET: usize = DATA_CRC_OFFSET + 4;
const SAVED_UNIX_SECS_OFFSET: usize = CLUSTER_ID_BYTES_OFFSET + 4;
/// The fixed part of the header; the cluster id follows it, then the data.
pub const BACKUP_FIXED_HEADER_BYTES: usize = SAVED_UNIX_SECS_OFFSET + 8;
/// Cluster ids are at most this long (as `raftd --cluster-id` allows).
pub const CLUSTER_ID_BYTES_MAX: usize = 255;

/// What a backup file says of itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupHeader {
    /// The cluster it was saved from.
    pub cluster_id: String,
    /// The store is the state right after applying this log index...
    pub index: u64,
    /// ...whose entry has this term.
    pub term: u64,
    /// Keys in the store.
    pub key_count: u64,
    /// Bytes of the store's snapshot (`FORMAT.md`), which follow the header.
    pub data_bytes: u64,
    /// CRC-32 (IEEE) of those bytes.
    pub data_crc: u32,
    /// When it was saved (seconds since the Unix epoch).
    pub saved_unix_secs: u64,
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

impl BackupHeader {
    /// The header's bytes: the fixed part, then the cluster id.
    pub fn encode(&self) -> Vec<u8> {
        let id = self.cluster_id.as_bytes();
        assert!(id.len() <= CLUSTER_ID_BYTES_MAX, "cluster id too long");
        let mut b = vec![0u8; BACKUP_FIXED_HEADER_BYTES];
        b[MAGIC_OFFSET..VERSION_OFFSET].copy_from_slice(&BACKUP_MAGIC);
        put_u32(&mut b, VERSION_OFFSET, BACKUP_VERSION);
        put_u64(&mut b, INDEX_OFFSET, self.index);
        put_u64(&mut b, TERM_OFFSET, self.term);
        put_u64(&mut b, KEY_COUNT_OFFSET, self.key_count);
        put_u64(&mut b, DATA_BYTES_OFFSET, self.data_bytes);
        put_u32(&mut b, DATA_CRC_OFFSET, self.data_crc);
        put_u32(&mut b, CLUSTER_ID_BYTES_OFFSET, id.len() as u32);
        put_u64(&mut b, SAVED_UNIX_SECS_OFFSET, self.saved_unix_secs);
        b.extend_from_slice(id);
        let crc = crc32fast::hash(&b);
        put_u32(&mut b, HEADER_CRC_OFFSET, crc);
        b
    }

    /// Decodes the header at the start of `bytes` (at least [`BACKUP_FIXED_HEADER_BYTES`]
    /// plus the cluster id) and returns it with its length, or says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<(BackupHeader, usize), String> {
        if bytes.len() < BACKUP_FIXED_HEADER_BYTES {
            return Err(format!(
                "{} bytes: shorter than a backup header ({BACKUP_FIXED_HEADER_BYTES}); truncated, or not a backup",
                bytes.len()
            ));
        }
        if bytes[MAGIC_OFFSET..VERSION_OFFSET] != BACKUP_MAGIC {
            return Err("not a raftd backup (bad magic)".into());
        }
        let version = get_u32(bytes, VERSION_OFFSET);
        if version != BACKUP_VERSION {
            return Err(format!(
                "backup format version {version}; this build reads {BACKUP_VERSION}"
            ));
        }
        let id_bytes = get_u32(bytes, CLUSTER_ID_BYTES_OFFSET) as usize;
        let header_bytes = BACKUP_FIXED_HEADER_BYTES + id_bytes;
        if id_bytes > CLUSTER_ID_BYTES_MAX || bytes.len() < header_bytes {
            return Err("the header is damaged or truncated (cluster id length)".into());
        }
        let mut copy = bytes[..header_bytes].to_vec();
        put_u32(&mut copy, HEADER_CRC_OFFSET, 0);
        if crc32fast::hash(&copy) != get_u32(bytes, HEADER_CRC_OFFSET) {
            return Err("the header's CRC does not match: the header is damaged".into());
        }
        let cluster_id = String::from_utf8(bytes[BACKUP_FIXED_HEADER_BYTES..header_bytes].to_vec())
            .map_err(|_| "the cluster id is not UTF-8".to_string())?;
        let header = BackupHeader {
            cluster_id,
            index: get_u64(bytes, INDEX_OFFSET),
            term: get_u64(bytes, TERM_OFFSET),
            key_count: get_u64(bytes, KEY_COUNT_OFFSET),
            data_bytes: get_u64(bytes, DATA_BYTES_OFFSET),
            data_crc: get_u32(bytes, DATA_CRC_OFFSET),
            saved_unix_secs: get_u64(bytes, SAVED_UNIX_SECS_OFFSET),
        };
        Ok((header, header_bytes))
    }
}

/// The key count of a store's snapshot bytes (`FORMAT.md`), if they start like one.
pub fn key_count(data: &[u8]) -> Option<u64> {
    crate::kv::is_snapshot(data)
        .then(|| get_u64(data, 4))
        .filter(|_| data.len() >= 12)
}

/// A backup read back and checked whole.
pub struct CheckedBackup {
    /// Its header.
    pub header: BackupHeader,
    /// The store's snapshot bytes.
    pub data: Vec<u8>,
    /// The store they decode to.
    pub kv: Kv,
}

/// Reads the backup at `path` and checks it whole (header CRC, length, data CRC, the store
/// decodes and holds `key_count` keys). The error says what is wrong, for the operator.
pub fn read_backup(path: &Path) -> Result<CheckedBackup, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let (header, header_bytes) = BackupHeader::decode(&bytes)?;
    let data_bytes = (bytes.len() - header_bytes) as u64;
    if data_bytes != header.data_bytes {
        return Err(format!(
            "the file holds {data_bytes} bytes of data, its header says {}: {}",
            header.data_bytes,
            if data_bytes < header.data_bytes {
                "truncated"
            } else {
                "bytes were appended"
            }
        ));
    }
    let data = bytes[header_bytes..].to_vec();
    drop(bytes);
    if crc32fast::hash(&data) != header.data_crc {
        return Err("the data's CRC does not match: the backup is damaged".into());
    }
    let kv = Kv::restore(&data, SESSIONS_MAX_DEFAULT, HashKeys::random())
        .map_err(|e| format!("the store in the backup does not load: {e}"))?;
    if kv.len() as u64 != header.key_count {
        return Err(format!(
            "the store holds {} keys, the header says {}",
            kv.len(),
            header.key_count
        ));
    }
    Ok(CheckedBackup { header, data, kv })
}

/// Where a restore puts the node.
#[derive(Clone, Debug)]
pub struct RestoreTarget {
    /// The node's data directory: absent or empty.
    pub data_dir: PathBuf,
    /// The node's id in the new cluster.
    pub id: u64,
    /// The new cluster's id.
    pub cluster_id: String,
    /// The new cluster's voters (`--peers`): the configuration the restored snapshot
    /// carries, so the node starts in the new cluster, not the backed-up one.
    pub voters: Vec<u64>,
}

/// Builds a node's data directory from a checked backup: its WAL holds the backup as its
/// snapshot (index and term kept), the hard state commits it, and the identity file names the
/// new cluster and node. On failure (a full disk above all), what was made is removed and the
/// directory is as it was; an interrupted restore leaves the marker that `raftd` refuses.
pub fn restore(backup: CheckedBackup, target: &RestoreTarget) -> Result<(), String> {
    let dir = &target.data_dir;
    let created = prepare_dir(dir)?;
    let made = build(backup, target);
    if let Err(e) = made {
        let _ = std::fs::remove_dir_all(dir.join("wal"));
        let _ = std::fs::remove_file(dir.join(IDENTITY_FILE));
        let _ = std::fs::remove_file(dir.join(RESTORE_MARKER_FILE));
        if created {
            let _ = std::fs::remove_dir(dir);
        }
        let _ = sync_dir(dir.parent().unwrap_or(Path::new("/")));
        return Err(format!("{e}; nothing was left in {}", dir.display()));
    }
    Ok(())
}

/// Checks the data directory is absent (then creates it: true) or an empty directory.
fn prepare_dir(dir: &Path) -> Result<bool, String> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => match entries.next() {
            None => Ok(false),
            Some(_) => Err(format!(
                "data directory {} is not empty; restore only into a new, empty directory",
                dir.display()
            )),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            Ok(true)
        }
        Err(e) => Err(format!("cannot read {}: {e}", dir.display())),
    }
}

fn build(backup: CheckedBackup, target: &RestoreTarget) -> Result<(), String> {
    let dir = &target.data_dir;
    write_synced(
        &dir.join(RESTORE_MARKER_FILE),
        b"raftctl snapshot restore is building this directory; if this file is still here, the restore was interrupted: empty the directory and restore again\n",
    )?;
    sync_dir(dir)?;
    let wal_dir = dir.join("wal");
    std::fs::create_dir(&wal_dir)
        .map_err(|e| format!("cannot create {}: {e}", wal_dir.display()))?;
    let options = WalOptions {
        helper_threads: false,
        ..WalOptions::default()
    };
    let (mut wal, _) = Wal::open(&wal_dir, options).map_err(|e| e.to_string())?;
    let meta = SnapshotMeta {
        index: LogIndex(backup.header.index),
        term: Term(backup.header.term),
    };
    if meta.index > LogIndex(0) {
        let snapshot = Snapshot {
            meta,
            configuration: raft::Configuration::new(target.voters.iter().map(|&id| NodeId(id))),
            data: backup.data,
        };
        wal.save_snapshot(&snapshot).map_err(|e| e.to_string())?;
    }
    wal.set_hard_state(HardState {
        term: meta.term,
        vote: NodeId(0),
        commit: meta.index,
    })
    .map_err(|e| e.to_string())?;
    wal.persist().map_err(|e| e.to_string())?;
    drop(wal);
    write_synced(
        &dir.join(IDENTITY_FILE),
        identity_text(&target.cluster_id, target.id).as_bytes(),
    )?;
    sync_dir(dir)?;
    let marker = dir.join(RESTORE_MARKER_FILE);
    std::fs::remove_file(&marker)
        .map_err(|e| format!("cannot remove {}: {e}", marker.display()))?;
    sync_dir(dir)
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut file =
        File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Fsyncs a directory, making the names created, renamed or removed in it durable.
pub fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync directory {}: {e}", dir.display()))
}
