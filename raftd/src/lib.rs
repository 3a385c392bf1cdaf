//! raftd: the daemon that runs one member of a Raft-replicated key-value store, and the
//! blocking client library that talks to it.
//!
//! - [`server`]: the event loop gluing the consensus core (`raft`), the write-ahead log
//!   (`wal`) and the transport (`transport`) to the key-value store ([`kv`]).
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
pub mod server;
