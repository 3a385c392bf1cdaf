//! raftd-client: how a client talks to a raftd cluster.
//!
//! - [`protocol`]: the client protocol and the command encoding, byte for byte as
//!   `FORMAT.md` beside `Cargo.toml` specifies them. Pure encoders and decoders; the
//!   decoders never panic and bound every allocation by the bytes present. The daemon
//!   decodes with the same code (it re-exports this module as `raftd::protocol`).
//! - [`blocking`]: a blocking client, one operation at a time, that follows leader
//!   redirects and retries writes exactly once (client id + sequence number); `raftctl` and
//!   the tests use it (re-exported as `raftd::client`).
//! - [`nonblocking`]: a client with many operations in flight over one connection per node,
//!   on a mio loop its caller turns; it follows redirects and re-sends failed attempts the
//!   same way. `raftctl bench` is built on it.
//!
//! Both clients speak the transport's frames and open each connection with the transport's
//! client handshake (`transport::codec::Dialer`); neither holds a copy of either.
//!
//! # Contract
//!
//! A write carries the client's session id and a sequence number; every retry of it
//! reuses both, so the cluster applies it at most once however often it is sent. An
//! error says whether the outcome is known: certainly not applied, or sent and unknown.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod blocking;
pub mod nonblocking;
pub mod protocol;

/// What a client trusts and presents with TLS ([`ClientConfig::tls`]).
pub use transport::tls::ClientTls;

use std::net::SocketAddr;
use std::time::Duration;

/// Where and how to reach the cluster.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Client addresses of the nodes (any subset works; the leader is found by redirect).
    pub nodes: Vec<SocketAddr>,
    /// The cluster's name.
    pub cluster_id: String,
    /// The shared secret, if the cluster requires one.
    pub token: Option<Vec<u8>>,
    /// How long to wait: for the blocking client, the deadline of one operation, retries
    /// included; for the non-blocking client, the deadline of one attempt, after which it
    /// sends the operation again (its caller sets how long to keep re-sending).
    pub timeout: Duration,
    /// TLS: the CA to trust and the client certificate to present (`None`: plaintext).
    pub tls: Option<transport::tls::ClientTls>,
}
