//! A blocking client for a raftd cluster (what `raftctl` and the tests use).
//!
//! Writes go to the leader: the client follows `NotLeader` redirects by itself and retries
//! through elections until its deadline. Every write carries this client's id and a fresh
//! sequence number, and every retry of it reuses them, so a write is applied at most once
//! however often it is resent. The error says whether the outcome is known:
//! [`ClientError::Definite`] means certainly not applied, [`ClientError::Unreachable`] the
//! same for the reason that no node could be connected to (is the cluster running?), and
//! [`ClientError::Unknown`] means it was sent and may or may not have been applied.

use crate::protocol::{Command, Op, Outcome, Request, Response, Write, FRAME_REQUEST};
pub use crate::ClientConfig;
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use transport::client::Connection;

/// How an operation failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// Certainly not applied (refused, or never sent to a node that was reachable).
    Definite(String),
    /// Certainly not applied: no node could be connected to, so nothing was sent.
    Unreachable(String),
    /// Sent, but no answer in time: it may or may not have been applied.
    Unknown(String),
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Definite(s) | ClientError::Unreachable(s) | ClientError::Unknown(s) => {
                f.write_str(s)
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// How one request to one node failed.
#[derive(Debug)]
enum AttemptError {
    /// No connection could be made: nothing was sent.
    NotConnected(String),
    /// Connected, but the request did not leave: nothing was sent.
    NotSent(String),
    /// Sent, but no usable answer came back: it may have been applied.
    Lost(String),
}

impl AttemptError {
    fn detail(&self) -> &str {
        match self {
            AttemptError::NotConnected(s) | AttemptError::NotSent(s) | AttemptError::Lost(s) => s,
        }
    }
}

impl From<AttemptError> for ClientError {
    fn from(e: AttemptError) -> ClientError {
        match e {
            AttemptError::NotConnected(s) => ClientError::Unreachable(s),
            AttemptError::NotSent(s) => ClientError::Definite(s),
            AttemptError::Lost(s) => ClientError::Unknown(s),
        }
    }
}

/// A connected client with its own session.
pub struct Client {
    config: ClientConfig,
    connections: HashMap<SocketAddr, Connection>,
    /// The address to try first (the last known leader).
    preferred: Option<SocketAddr>,
    next_node: usize,
    client_id: u64,
    seq: u64,
    next_request_id: u64,
}

impl Client {
    /// A client with a random session id. Nothing is connected until the first request.
    pub fn new(config: ClientConfig) -> Client {
        Client::with_session(config, rand::random::<u64>() | 1)
    }

    /// A client with a given session id (for tests of exactly-once retries).
    pub fn with_session(config: ClientConfig, client_id: u64) -> Client {
        Client {
            config,
            connections: HashMap::new(),
            preferred: None,
            next_node: 0,
            client_id,
            seq: 0,
            next_request_id: 1,
        }
    }

    /// This client's session id.
    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// Replicates a write; returns `Written` or `CasMismatch` (the latter as an error of
    /// kind `Definite` is left to the caller: it is an answer, not a failure).
    pub fn write(&mut self, write: Write) -> Result<Outcome, ClientError> {
        self.seq += 1;
        self.write_with_seq(write, self.seq)
    }

    /// Replicates a write with an explicit sequence number (a retry of an earlier one).
    pub fn write_with_seq(&mut self, write: Write, seq: u64) -> Result<Outcome, ClientError> {
        let op = Op::Write(Command {
            client_id: self.client_id,
            seq,
            write,
        });
        self.call_cluster(op, true)
    }

    /// A linearizable read of `key` (through any node).
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        match self.call_cluster(Op::Get { key: key.to_vec() }, false)? {
            Outcome::Value(v) => Ok(v),
            other => Err(ClientError::Definite(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Sends `op` to the node at `addr` only (status, snapshot, fault, shutdown,
    /// transfer-leader). Returns its answer.
    pub fn call_node(&mut self, addr: SocketAddr, op: Op) -> Result<Outcome, ClientError> {
        let deadline = Instant::now() + self.config.timeout;
        Ok(self.call_once(addr, &op, deadline)?)
    }

    /// The node id the handshake reported for `addr`, connecting if needed.
    pub fn node_id(&mut self, addr: SocketAddr) -> Result<u64, ClientError> {
        let deadline = Instant::now() + self.config.timeout;
        self.connect(addr, deadline)
            .map(|c| c.node_id())
            .map_err(|e| e.into())
    }

    fn pick(&mut self) -> SocketAddr {
        if let Some(a) = self.preferred {
            return a;
        }
        let a = self.config.nodes[self.next_node % self.config.nodes.len()];
        self.next_node += 1;
        a
    }

    /// Sends to the cluster until a definite answer or the deadline, following redirects.
    fn call_cluster(&mut self, op: Op, is_write: bool) -> Result<Outcome, ClientError> {
        if self.config.nodes.is_empty() {
            return Err(ClientError::Definite("no node addresses given".into()));
        }
        let deadline = Instant::now() + self.config.timeout;
        let mut sent_somewhere = false;
        let mut connected_somewhere = false;
        let mut last_error = String::from("no node answered");
        // A TLS failure says what to fix; a later attempt cut short by the deadline must not
        // hide it.
        let mut tls_error = None;
        let mut pause = Duration::from_millis(10);
        // One node may be stalled (a full disk, a pause): give each attempt a slice of the
        // deadline and then try elsewhere. Resending a write is safe: same session, same
        // sequence number.
        let slice =
            (self.config.timeout / 5).clamp(Duration::from_millis(500), Duration::from_secs(2));
        while Instant::now() < deadline {
            let addr = self.pick();
            let attempt_deadline = deadline.min(Instant::now() + slice);
            match self.call_once(addr, &op, attempt_deadline) {
                Ok(Outcome::NotLeader { leader, address }) => {
                    last_error = if leader == 0 {
                        "no leader elected yet".to_string()
                    } else {
                        format!("redirected to node {leader} at {address}")
                    };
                    self.preferred = address.parse().ok();
                    if self.preferred.is_none() {
                        std::thread::sleep(pause);
                        pause = (pause * 2).min(Duration::from_millis(200));
                    }
                }
                Ok(Outcome::Unavailable { reason }) => {
                    if is_write {
                        sent_somewhere = true;
                    }
                    last_error = reason;
                    self.preferred = None;
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(200));
                }
                Ok(Outcome::Refused { reason }) => return Err(ClientError::Definite(reason)),
                Ok(outcome) => {
                    self.preferred = Some(addr);
                    return Ok(outcome);
                }
                Err(e) => {
                    sent_somewhere |= matches!(e, AttemptError::Lost(_)) && is_write;
                    connected_somewhere |= !matches!(e, AttemptError::NotConnected(_));
                    last_error = format!("{addr}: {}", e.detail());
                    if e.detail().contains("TLS: ") && tls_error.is_none() {
                        tls_error = Some(last_error.clone());
                    }
                    self.preferred = None;
                }
            }
        }
        let what = if is_write { "write" } else { "read" };
        let timeout = self.config.timeout;
        let last_error = tls_error.unwrap_or(last_error);
        Err(if sent_somewhere {
            ClientError::Unknown(format!(
                "{what} sent but not confirmed within {timeout:?}: {last_error}"
            ))
        } else if connected_somewhere {
            ClientError::Definite(format!("{what} not done within {timeout:?}: {last_error}"))
        } else {
            ClientError::Unreachable(format!(
                "{what} not done within {timeout:?}: no node could be connected to: {last_error}"
            ))
        })
    }

    fn connect(
        &mut self,
        addr: SocketAddr,
        deadline: Instant,
    ) -> Result<&mut Connection, AttemptError> {
        if !self.connections.contains_key(&addr) {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            let c = Connection::connect_tls(
                addr,
                &self.config.cluster_id,
                self.config.token.as_deref(),
                self.config.tls.as_ref(),
                left.min(Duration::from_secs(2)),
            )
            .map_err(|e| AttemptError::NotConnected(format!("cannot connect: {e}")))?;
            self.connections.insert(addr, c);
        }
        Ok(self.connections.get_mut(&addr).expect("inserted"))
    }

    /// One request to one node. On error, says whether the request was sent.
    fn call_once(
        &mut self,
        addr: SocketAddr,
        op: &Op,
        deadline: Instant,
    ) -> Result<Outcome, AttemptError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let body = Request::encode_parts(request_id, op);
        let conn = self.connect(addr, deadline)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = conn.send(FRAME_REQUEST, &body, left.max(Duration::from_millis(1))) {
            self.connections.remove(&addr);
            return Err(AttemptError::NotSent(format!("send failed: {e}")));
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.connections.remove(&addr);
                return Err(AttemptError::Lost("no answer in time".into()));
            }
            let conn = self.connections.get_mut(&addr).expect("connected");
            match conn.recv(left) {
                Ok((_, body)) => match Response::decode(&body) {
                    Ok(r) if r.request_id == request_id => return Ok(r.outcome),
                    Ok(_) => continue, // An answer to an earlier, abandoned request.
                    Err(e) => {
                        self.connections.remove(&addr);
                        return Err(AttemptError::Lost(format!("bad response: {e}")));
                    }
                },
                Err(e) => {
                    self.connections.remove(&addr);
                    return Err(AttemptError::Lost(format!("{e}")));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address on this machine where nothing listens (bound by the OS, then released).
    fn closed_address() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("address")
    }

    // Proves that every kind of call to a cluster nobody listens for fails as Unreachable
    // (certainly not applied, nothing connected), which raftctl turns into its "is the
    // cluster running?" advice without looking at the message.
    #[test]
    fn no_node_listening_is_unreachable() {
        let addr = closed_address();
        let mut client = Client::new(ClientConfig {
            nodes: vec![addr],
            cluster_id: "raftd".into(),
            token: None,
            timeout: Duration::from_millis(300),
            tls: None,
        });
        let put = Write::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        };
        let results = [
            client.write(put).map(|_| ()),
            client.get(b"k").map(|_| ()),
            client.call_node(addr, Op::Status).map(|_| ()),
            client.node_id(addr).map(|_| ()),
        ];
        for result in results {
            assert!(
                matches!(&result, Err(ClientError::Unreachable(m)) if m.contains("cannot connect")),
                "{result:?}"
            );
        }
    }
}
