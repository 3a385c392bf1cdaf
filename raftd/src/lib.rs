//! raftd: the daemon that runs one member of a Raft-replicated key-value store.
//!
//! - [`replica`]: one member as a state machine gluing the consensus core (`raft`), the write-ahead log
//!   (`wal`) and the key-value store ([`kv`]), driven through a clock and network interface.
//! - [`server`]: the daemon's mio loop driving a replica with the real clock, network and disk.
//! - [`notify`]: systemd's readiness, status, watchdog and stopping notifications.
//! - [`kv`]: the replicated key-value store with its client sessions; its snapshot format is
//!   in `FORMAT.md` beside `Cargo.toml`.
//! - `log_memory` (private to the crate): which applied entries the in-memory log keeps for
//!   lagging followers, bounded in entries and in bytes (`--log-memory-entries`,
//!   `--log-memory-mib`).
//! - [`consistency`]: the cross-node consistency check's hash and bookkeeping: nodes hash
//!   their stores at the same checkpoints in the log and compare.
//! - [`backup`]: backup files (`raftctl snapshot save/inspect/restore`): the format, its
//!   checks, and restoring one into a new node's data directory.
//! - [`backup_source`]: a node's side of `raftctl snapshot save`: backups of the store
//!   served a chunk at a time.
//! - [`metrics`]: the node's figures for Prometheus: what the loop counts, the snapshot
//!   of them a scrape asks for, and their encoding.
//! - [`metrics_http`]: `--metrics-listen`: `/metrics` and `/health` on a thread of their own.
//! - [`cli`]: the daemon's command line.
//!
//! The client side lives in the `raftd-client` crate and is re-exported here, so the daemon
//! and its clients share one implementation of the protocol:
//! - [`protocol`]: the client protocol and the command encoding (`client/FORMAT.md`).
//! - [`client`]: a blocking client that follows leader redirects and retries writes
//!   exactly once (client id + sequence number).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod backup;
pub mod backup_source;
pub mod cli;
pub mod consistency;
pub mod kv;
mod log_memory;
pub mod metrics;
pub mod metrics_http;
pub mod notify;
pub mod replica;
pub mod server;

/// The client protocol and the command encoding, from the `raftd-client` crate: the daemon
/// decodes requests and log entries with the same code clients encode them with.
pub use raftd_client::protocol;

/// The blocking client, from the `raftd-client` crate.
pub use raftd_client::blocking as client;
