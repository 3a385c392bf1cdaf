//! A node's side of `raftctl snapshot save`: backups of the store held in memory and served
//! a chunk at a time ([`Op::Backup`](crate::protocol::Op::Backup), `client/FORMAT.md`).
//!
//! Starting a backup takes a view of the store at the applied index (shared records, no
//! copy: `Kv::snapshot_view`) and encodes it on a thread, as the automatic snapshots do, so
//! the event loop keeps serving under full load. The client then pulls the bytes a chunk at
//! a time, so it sets the pace and no frame is larger than
//! [`BACKUP_CHUNK_BYTES_MAX`](crate::protocol::BACKUP_CHUNK_BYTES_MAX). Memory is bounded:
//! at most [`BACKUPS_HELD_MAX`] backups at once, each dropped when its last chunk is served
//! or when no one asked for it for [`BACKUP_IDLE_MAX`].

use crate::kv::SnapshotView;
use crate::protocol::{BackupChunk, Outcome, BACKUP_CHUNK_BYTES_MAX};
use std::collections::BTreeMap;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// Backups held at once, at most: each is a whole encoded copy of the store.
pub const BACKUPS_HELD_MAX: usize = 2;
/// A backup no one asked for this long is dropped (its client went away).
pub const BACKUP_IDLE_MAX: Duration = Duration::from_secs(60);

/// The encoded store and its CRC-32.
type Encoded = (Vec<u8>, u32);

enum Bytes {
    /// Being encoded on a thread.
    Preparing(Receiver<Encoded>),
    Ready(Encoded),
}

struct Held {
    index: u64,
    term: u64,
    bytes: Bytes,
    last_asked: Duration,
}

/// The backups a node holds.
#[derive(Default)]
pub struct Backups {
    held: BTreeMap<u64, Held>,
    /// Ids are never reused within a process; a restarted node refuses old ones as unknown.
    next_id: u64,
}

impl Backups {
    /// Starts a backup of `view`, the store right after applying `index` (of term `term`).
    /// With `threads` the encoding runs on a thread; without (a host that runs no threads) it
    /// is done now.
    pub fn start(
        &mut self,
        view: SnapshotView,
        index: u64,
        term: u64,
        threads: bool,
        now: Duration,
    ) -> Outcome {
        if self.held.len() >= BACKUPS_HELD_MAX {
            return Outcome::Unavailable {
                reason: format!("{BACKUPS_HELD_MAX} backups are under way already; retry later"),
            };
        }
        let encode = move || {
            let data = view.encode();
            let crc = crc32fast::hash(&data);
            (data, crc)
        };
        let bytes = if threads {
            let (done, result) = mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("backup-encoder".into())
                .spawn(move || {
                    let _ = done.send(encode());
                });
            if let Err(e) = spawned {
                return Outcome::Unavailable {
                    reason: format!("cannot start a thread for the backup: {e}"),
                };
            }
            Bytes::Preparing(result)
        } else {
            Bytes::Ready(encode())
        };
        self.next_id += 1;
        let id = self.next_id;
        let held = Held {
            index,
            term,
            bytes,
            last_asked: now,
        };
        self.held.insert(id, held);
        log::info!("backup {id} of the store at index {index} term {term} started");
        self.chunk(id, 0, now)
    }

    /// The chunk of backup `id` at `offset` (or where it stands, while it is prepared).
    pub fn chunk(&mut self, id: u64, offset: u64, now: Duration) -> Outcome {
        let Some(held) = self.held.get_mut(&id) else {
            return Outcome::Refused {
                reason: format!(
                    "no backup {id} here: it expired (idle {}s), was finished, or the node restarted; start again",
                    BACKUP_IDLE_MAX.as_secs()
                ),
            };
        };
        held.last_asked = now;
        if let Bytes::Preparing(result) = &held.bytes {
            match result.try_recv() {
                Ok(encoded) => held.bytes = Bytes::Ready(encoded),
                Err(mpsc::TryRecvError::Empty) => {
                    return Outcome::Backup(BackupChunk {
                        backup_id: id,
                        ready: false,
                        index: held.index,
                        term: held.term,
                        total_bytes: 0,
                        crc: 0,
                        offset: 0,
                        data: Vec::new(),
                    })
                }
                Err(mpsc::TryRecvError::Disconnected) => {
                    self.held.remove(&id);
                    return Outcome::Unavailable {
                        reason: "the backup's encoder thread died; start again".into(),
                    };
                }
            }
        }
        let Bytes::Ready((data, crc)) = &held.bytes else {
            unreachable!("made ready above")
        };
        let total = data.len() as u64;
        if offset > total {
            return Outcome::Refused {
                reason: format!("offset {offset} is past the backup's {total} bytes"),
            };
        }
        let start = offset as usize;
        let end = (start + BACKUP_CHUNK_BYTES_MAX).min(data.len());
        let chunk = BackupChunk {
            backup_id: id,
            ready: true,
            index: held.index,
            term: held.term,
            total_bytes: total,
            crc: *crc,
            offset,
            data: data[start..end].to_vec(),
        };
        if end == data.len() {
            // The last chunk: the client has it all (it asks again, from the start, only if
            // this answer is lost, and then gets a clear refusal).
            self.held.remove(&id);
            log::info!("backup {id} served ({total} bytes)");
        }
        Outcome::Backup(chunk)
    }

    /// Drops backups no one asked for within [`BACKUP_IDLE_MAX`].
    pub fn expire(&mut self, now: Duration) {
        self.held.retain(|id, held| {
            let keep = now.saturating_sub(held.last_asked) < BACKUP_IDLE_MAX;
            if !keep {
                log::warn!("backup {id} dropped: not asked for in {BACKUP_IDLE_MAX:?}");
            }
            keep
        });
    }
}
