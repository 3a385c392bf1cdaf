//! raftd: the daemon that runs one member of a Raft-replicated key-value store, and the
//! blocking client library that talks to it.
//!
//! - [`replica`]: one member as a state machine gluing the consensus core (`raft`), the write-ahead log
//!   (`wal`) and the key-value store ([`kv`]), driven through a clock and network interface.
//! - [`server`]: the daemon's mio loop driving a replica with the real clock, network and disk.
//! - [`protocol`]: the client protocol and the command encoding (see `FORMAT.md`).
//! - [`client`]: a blocking client that follows leader redirects and retries writes
//!   exactly once (client id + sequence number).
//! - [`cli`]: the daemon's command line.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cli;
pub mod client;
pub mod kv;
pub mod protocol;
pub mod replica;
pub mod server;
