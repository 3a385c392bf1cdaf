//! A non-blocking client: many operations in flight at once over one connection per node,
//! on a mio loop that the caller turns with [`Client::poll`] (what `raftctl bench` uses).
//!
//! The caller names each operation with a tag of its choice (below the `ops_max` it gave
//! [`Client::new`]), submits it, and hears back through [`Event`]s. The client sends reads
//! to its home node and writes to the leader; it follows `NotLeader` redirects, re-sends
//! after `Unavailable` answers, lost connections and attempts unanswered within the
//! configured timeout, and reports each of those as [`Event::Retrying`] so a caller can
//! count them. A write is re-sent as it was submitted, with the same client id and sequence
//! number, so the cluster applies it at most once. Any other answer ends the operation:
//! [`Event::Answered`]. An operation is not sent again after its `resend_until`:
//! [`Event::GaveUp`].
//!
//! Connections open without blocking: the TCP connect and then the transport's client
//! handshake ([`Dialer`]), within the timeout (at most a second); requests made meanwhile
//! wait in the connection's outbox and leave once the welcome has arrived. Requests on one
//! connection are matched to operations by `request_id` (the tag in the low bits, an attempt
//! counter above), so a connection carries all its operations at once and an answer to an
//! attempt already given up on is recognised and dropped.
//!
//! ```no_run
//! use raftd_client::nonblocking::{Client, Event};
//! use raftd_client::protocol::Op;
//! use raftd_client::ClientConfig;
//! use std::time::{Duration, Instant};
//!
//! let config = ClientConfig {
//!     nodes: vec!["127.0.0.1:7001".parse().unwrap()],
//!     cluster_id: "raftd".into(),
//!     token: None,
//!     timeout: Duration::from_secs(1),
//!     tls: None,
//! };
//! let mut client = Client::new(&config, 16, 0)?;
//! client.submit(0, Op::Get { key: b"k".to_vec() }, Instant::now() + Duration::from_secs(5));
//! let mut events = Vec::new();
//! while client.pending() > 0 {
//!     client.poll(Some(Duration::from_millis(100)), &mut events)?;
//!     for event in events.drain(..) {
//!         if let Event::Answered { tag, outcome } = event {
//!             println!("{tag}: {outcome:?}");
//!         }
//!     }
//! }
//! # Ok::<(), std::io::Error>(())
//! ```

use crate::protocol::{Op, Outcome, Request, Response, FRAME_REQUEST};
use crate::ClientConfig;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{self, Read, Write as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use transport::client::CLIENT_FRAME_BYTES_MAX;
use transport::codec::{self, Decoded, Dialer, Role, HELLO_BYTES_MAX};
use transport::tls::{ClientTls, Session};

/// Bits of a request id that hold the operation's tag; the bits above count attempts.
const TAG_BITS: u32 = 24;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;
/// The most operations one client can have under way (tags are below this).
pub const OPS_MAX: usize = 1 << TAG_BITS;
/// The pause before re-sending after an error, and between probes while no leader is known.
pub const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How often attempts are checked against the timeout.
const TIMEOUT_SCAN_EVERY: Duration = Duration::from_millis(100);
/// The longest a connection may take to open (connect and handshake), whatever the timeout.
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(1);
/// A socket's receive buffer: allocated (and zeroed) once at this size, doubled only for
/// what a read finds no room for; received bytes are read into its free end. Zeroing a fresh
/// chunk per read, twice per wake-up, had been an eighth of `raftctl bench`'s CPU.
const READ_CHUNK_BYTES: usize = 64 << 10;
/// A read wants at least this much room: less, and the buffered bytes move to the front (or
/// the buffer grows).
const READ_ROOM_MIN: usize = 16 << 10;

/// What happened to submitted operations, reported by [`Client::poll`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// The operation's answer: anything but a redirect or `Unavailable` (those are retried).
    /// The tag is free again.
    Answered {
        /// The operation's tag.
        tag: usize,
        /// The node's answer.
        outcome: Outcome,
    },
    /// An attempt failed and the operation will be sent again, unchanged.
    Retrying {
        /// The operation's tag.
        tag: usize,
        /// Why the attempt failed.
        reason: Retry,
    },
    /// The operation's `resend_until` passed before it could be sent (again); if an earlier
    /// attempt was sent, its outcome is unknown. The tag is free again.
    GaveUp {
        /// The operation's tag.
        tag: usize,
    },
    /// A connection to a node could not be opened (the operations waiting for it are
    /// reported as [`Retrying`](Event::Retrying) with [`Retry::Connection`]).
    ConnectFailed {
        /// The node's address.
        node: SocketAddr,
        /// What went wrong.
        error: String,
    },
}

/// Why an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The node is not the leader: the operation goes to the leader it named (or, with none
    /// named, to the next node after a pause).
    Redirected,
    /// The node answered `Unavailable` (no leader, back-pressure, a lost election).
    Unavailable,
    /// No answer within the timeout.
    TimedOut,
    /// The connection could not be opened, or broke with the attempt on it.
    Connection,
}

/// One operation under way.
#[derive(Debug)]
struct Pending {
    op: Op,
    is_write: bool,
    resend_until: Instant,
    /// The attempt on the wire (0: none), and when and where it was sent.
    request_id: u64,
    sent_at: Instant,
    on_node: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SocketState {
    /// The TCP connect is under way; the hello waits in the outbox.
    Connecting,
    /// The hello is being sent or was sent; waiting for the welcome.
    Handshaking,
    /// The welcome accepted the connection: requests flow.
    Open,
}

/// What one readiness event said of a socket.
#[derive(Clone, Copy, Debug)]
struct Readiness {
    readable: bool,
    /// The remote side closed, or the socket failed: read until it would block.
    closed: bool,
    writable: bool,
}

/// A connection to one node: a non-blocking socket with its buffers.
#[derive(Debug)]
struct Socket {
    stream: TcpStream,
    /// TLS over `stream` (with [`ClientConfig::tls`]); plaintext goes straight to it.
    tls: Option<Box<Session>>,
    state: SocketState,
    /// Until when the connection may take to open.
    open_by: Instant,
    /// Received bytes not yet decoded live in `inbox[inbox_start..inbox_end]`; the rest of
    /// `inbox` is room to read into.
    inbox: Vec<u8>,
    inbox_start: usize,
    inbox_end: usize,
    /// Bytes to send live in `outbox[outbox_start..]`; before the connection is open, only
    /// the hello (`outbox[..hello_bytes]`) may leave.
    outbox: Vec<u8>,
    outbox_start: usize,
    hello_bytes: usize,
    writable_interest: bool,
}

impl Socket {
    /// Reads received bytes (plaintext from inside TLS, with TLS).
    fn read(&mut self, buf_start: usize) -> io::Result<usize> {
        let buf = &mut self.inbox[buf_start..];
        match &mut self.tls {
            None => self.stream.read(buf),
            Some(tls) => tls.read(&mut self.stream, buf),
        }
    }

    /// Writes what may leave now (into TLS, with TLS).
    fn write(&mut self) -> io::Result<usize> {
        let bytes = &self.outbox[self.outbox_start..self.sendable_end()];
        match &mut self.tls {
            None => self.stream.write(bytes),
            Some(tls) => tls.write(&mut self.stream, bytes),
        }
    }

    /// Pushes what TLS holds for the socket; whether some is left.
    fn push_tls(&mut self) -> io::Result<bool> {
        let Some(tls) = &mut self.tls else {
            return Ok(false);
        };
        match tls.push(&mut self.stream) {
            Ok(()) => Ok(false),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Where the bytes that may be written now end.
    fn sendable_end(&self) -> usize {
        match self.state {
            SocketState::Connecting => 0,
            SocketState::Handshaking => self.hello_bytes,
            SocketState::Open => self.outbox.len(),
        }
    }
}

/// A non-blocking client of a raftd cluster; see the module docs.
pub struct Client {
    timeout: Duration,
    dialer: Dialer,
    tls: Option<ClientTls>,
    poll: Poll,
    events: Events,
    /// Readiness copied out of `events` (token, readable, writable), so handlers may borrow
    /// the client mutably; kept to reuse its memory.
    readiness: Vec<(usize, Readiness)>,
    nodes: Vec<SocketAddr>,
    /// At most one connection per node, indexed like `nodes`.
    sockets: Vec<Option<Socket>>,
    /// Where reads go; where writes go, if a leader is known; the last node probed.
    home: usize,
    leader: Option<usize>,
    probe: usize,
    /// Operations under way, indexed by tag.
    ops: Vec<Option<Pending>>,
    /// Operations under way; attempts on the wire (queued on a connection or sent).
    pending: usize,
    in_flight: usize,
    /// Operations to send now, and operations to send at a later time.
    ready: Vec<usize>,
    later: Vec<(Instant, usize)>,
    next_attempt: u64,
    next_scan: Instant,
}

impl Client {
    /// A client for `config.nodes` taking operations with tags below `ops_max`. Reads go to
    /// the node `home` (modulo the number of nodes) and writes to the leader, probing from
    /// `home` on while none is known (see [`Client::set_leader`]). Nothing is connected
    /// until the first operation needs it.
    ///
    /// # Panics
    /// If `config.nodes` is empty or `ops_max` exceeds [`OPS_MAX`].
    pub fn new(config: &ClientConfig, ops_max: usize, home: usize) -> io::Result<Client> {
        assert!(!config.nodes.is_empty(), "a client needs node addresses");
        assert!(ops_max <= OPS_MAX, "at most {OPS_MAX} operations at once");
        let dialer = Dialer::new(
            Role::Client,
            config.cluster_id.as_bytes(),
            config.token.as_deref().unwrap_or_default(),
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let home = home % config.nodes.len();
        Ok(Client {
            timeout: config.timeout,
            dialer,
            tls: config.tls.clone(),
            poll: Poll::new()?,
            events: Events::with_capacity(64),
            readiness: Vec::with_capacity(64),
            nodes: config.nodes.clone(),
            sockets: config.nodes.iter().map(|_| None).collect(),
            home,
            leader: None,
            probe: home,
            ops: (0..ops_max).map(|_| None).collect(),
            pending: 0,
            in_flight: 0,
            ready: Vec::new(),
            later: Vec::new(),
            next_attempt: 1,
            next_scan: Instant::now() + TIMEOUT_SCAN_EVERY,
        })
    }

    /// Sends writes to `leader` first (a node found to lead, e.g. from its status).
    pub fn set_leader(&mut self, leader: SocketAddr) {
        self.leader = Some(self.node_index(leader));
    }

    /// Operations submitted and not yet answered or given up.
    pub fn pending(&self) -> usize {
        self.pending
    }

    /// Attempts on the wire: queued on a connection or sent, and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Starts an operation under `tag`; it leaves on the next [`Client::poll`] and is sent
    /// again (unchanged) after failed attempts until `resend_until`.
    ///
    /// # Panics
    /// If `tag` is not below `ops_max` or names an operation still under way.
    pub fn submit(&mut self, tag: usize, op: Op, resend_until: Instant) {
        self.insert(tag, op, resend_until);
        self.ready.push(tag);
    }

    /// [`Client::submit`], but the operation leaves at `at` at the earliest (after a pause
    /// the caller wants, e.g. once the cluster refused the previous one).
    pub fn submit_at(&mut self, tag: usize, op: Op, at: Instant, resend_until: Instant) {
        self.insert(tag, op, resend_until);
        self.later.push((at, tag));
    }

    fn insert(&mut self, tag: usize, op: Op, resend_until: Instant) {
        let slot = &mut self.ops[tag];
        assert!(slot.is_none(), "operation {tag} is still under way");
        *slot = Some(Pending {
            is_write: matches!(op, Op::Write(_)),
            op,
            resend_until,
            request_id: 0,
            sent_at: Instant::now(),
            on_node: 0,
        });
        self.pending += 1;
    }

    /// Sends what is ready, waits at most `timeout` (`None`: until something happens) for
    /// the network, and appends what happened to `events`.
    pub fn poll(&mut self, timeout: Option<Duration>, events: &mut Vec<Event>) -> io::Result<()> {
        let now = Instant::now();
        self.wake_due(now);
        self.send_ready(now, events);
        self.flush_all(events);
        let wait = self.wait(now, timeout);
        if let Err(e) = self.poll.poll(&mut self.events, Some(wait)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let mut readiness = std::mem::take(&mut self.readiness);
        readiness.extend(self.events.iter().map(|e| {
            let closed = e.is_read_closed() || e.is_error();
            let readiness = Readiness {
                readable: e.is_readable() || closed,
                closed,
                writable: e.is_writable(),
            };
            (e.token().0, readiness)
        }));
        for &(node, readiness) in &readiness {
            self.on_socket_event(node, readiness, events);
        }
        readiness.clear();
        self.readiness = readiness;
        let now = Instant::now();
        if now >= self.next_scan {
            self.expire(now, events);
            self.next_scan = now + TIMEOUT_SCAN_EVERY;
        }
        Ok(())
    }

    /// How long the next poll may wait: until the caller's timeout, the next re-send or the
    /// next timeout scan, whichever comes first.
    fn wait(&self, now: Instant, timeout: Option<Duration>) -> Duration {
        if !self.ready.is_empty() {
            return Duration::ZERO;
        }
        let mut until = self.next_scan;
        for &(at, _) in &self.later {
            until = until.min(at);
        }
        let wait = until.saturating_duration_since(now);
        timeout.map_or(wait, |t| t.min(wait))
    }

    fn wake_due(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.later.len() {
            if self.later[i].0 <= now {
                let (_, tag) = self.later.swap_remove(i);
                self.ready.push(tag);
            } else {
                i += 1;
            }
        }
    }

    fn send_ready(&mut self, now: Instant, events: &mut Vec<Event>) {
        let ready = std::mem::take(&mut self.ready);
        for &tag in &ready {
            self.send(tag, now, events);
        }
        self.ready = ready;
        self.ready.clear();
    }

    /// The node an operation goes to: its home for reads, the leader (or the next node to
    /// probe) for writes.
    fn route(&mut self, is_write: bool) -> usize {
        if !is_write {
            return self.home;
        }
        match self.leader {
            Some(leader) => leader,
            None => {
                self.probe = (self.probe + 1) % self.nodes.len();
                self.probe
            }
        }
    }

    /// Sends one attempt of an operation, or gives it up when its time to re-send is over.
    fn send(&mut self, tag: usize, now: Instant, events: &mut Vec<Event>) {
        let Some(pending) = &self.ops[tag] else {
            return;
        };
        if now >= pending.resend_until {
            self.finish(tag);
            events.push(Event::GaveUp { tag });
            return;
        }
        let is_write = pending.is_write;
        let node = self.route(is_write);
        if let Err(error) = self.ensure_socket(node, now) {
            events.push(Event::ConnectFailed {
                node: self.nodes[node],
                error: error.to_string(),
            });
            self.forget_node(node);
            self.retry_later(tag, Retry::Connection, now, events);
            return;
        }
        let request_id = (self.next_attempt << TAG_BITS) | tag as u64;
        self.next_attempt += 1;
        let pending = self.ops[tag].as_mut().expect("checked above");
        pending.request_id = request_id;
        pending.sent_at = now;
        pending.on_node = node;
        self.in_flight += 1;
        let body = Request::encode_parts(request_id, &pending.op);
        let socket = self.sockets[node].as_mut().expect("ensured");
        codec::encode_frame(&mut socket.outbox, FRAME_REQUEST, &body);
    }

    /// Ends an operation: its tag is free again.
    fn finish(&mut self, tag: usize) {
        if self.ops[tag].take().is_some() {
            self.pending -= 1;
        }
    }

    fn retry_later(&mut self, tag: usize, reason: Retry, now: Instant, events: &mut Vec<Event>) {
        events.push(Event::Retrying { tag, reason });
        self.later.push((now + RETRY_PAUSE, tag));
    }

    /// After a node failed: writes look for the leader again; reads move to the next node.
    fn forget_node(&mut self, node: usize) {
        if self.leader == Some(node) {
            self.leader = None;
        }
        if self.home == node {
            self.home = (node + 1) % self.nodes.len();
        }
    }

    /// The index of a node address, adding it if a redirect names one not configured.
    fn node_index(&mut self, addr: SocketAddr) -> usize {
        if let Some(i) = self.nodes.iter().position(|&a| a == addr) {
            return i;
        }
        self.nodes.push(addr);
        self.sockets.push(None);
        self.nodes.len() - 1
    }

    /// Starts connecting to `node` unless a connection is there; the hello goes in its
    /// outbox, to leave once the TCP connect completes.
    fn ensure_socket(&mut self, node: usize, now: Instant) -> io::Result<()> {
        if self.sockets[node].is_some() {
            return Ok(());
        }
        let tls = match &self.tls {
            None => None,
            Some(tls) => Some(Box::new(tls.session(self.nodes[node])?)),
        };
        let mut stream = TcpStream::connect(self.nodes[node])?;
        stream.set_nodelay(true)?;
        self.poll.registry().register(
            &mut stream,
            Token(node),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let mut outbox = Vec::with_capacity(64 << 10);
        self.dialer.encode_hello(&mut outbox);
        self.sockets[node] = Some(Socket {
            stream,
            tls,
            state: SocketState::Connecting,
            open_by: now + self.timeout.min(CONNECT_TIMEOUT_MAX),
            inbox: Vec::new(),
            inbox_start: 0,
            inbox_end: 0,
            hello_bytes: outbox.len(),
            outbox,
            outbox_start: 0,
            writable_interest: true,
        });
        Ok(())
    }

    fn on_socket_event(&mut self, node: usize, readiness: Readiness, events: &mut Vec<Event>) {
        let Readiness {
            readable,
            closed,
            writable,
        } = readiness;
        let Some(socket) = self.sockets.get(node).and_then(Option::as_ref) else {
            return;
        };
        if socket.state == SocketState::Connecting {
            match connect_result(&socket.stream) {
                Ok(false) => return, // Spurious: not connected yet.
                Ok(true) => {
                    self.sockets[node].as_mut().expect("present").state = SocketState::Handshaking
                }
                Err(error) => return self.connect_failed(node, error.to_string(), events),
            }
        }
        if readable {
            self.receive(node, closed, events);
        }
        // With TLS, reading may have made records to send (handshake answers) or completed
        // the handshake that frames queued behind.
        let tls = self.sockets[node].as_ref().is_some_and(|s| s.tls.is_some());
        if writable || (readable && tls) {
            self.flush(node, events);
        }
    }

    fn connect_failed(&mut self, node: usize, error: String, events: &mut Vec<Event>) {
        events.push(Event::ConnectFailed {
            node: self.nodes[node],
            error,
        });
        self.drop_socket(node, events);
    }

    fn flush_all(&mut self, events: &mut Vec<Event>) {
        for node in 0..self.sockets.len() {
            if self.sockets[node]
                .as_ref()
                .is_some_and(|s| s.outbox_start < s.sendable_end())
            {
                self.flush(node, events);
            }
        }
    }

    /// Writes what may leave and the socket takes; asks for writability only while such
    /// bytes are left (and while the connect is under way).
    fn flush(&mut self, node: usize, events: &mut Vec<Event>) {
        let Some(s) = self.sockets[node].as_mut() else {
            return;
        };
        let mut failed = false;
        while s.outbox_start < s.sendable_end() {
            match s.write() {
                Ok(0) => {
                    failed = true;
                    break;
                }
                Ok(n) => s.outbox_start += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    failed = true;
                    break;
                }
            }
        }
        let tls_left = match s.push_tls() {
            Ok(left) => left,
            Err(_) => {
                failed = true;
                false
            }
        };
        if failed {
            return self.drop_socket(node, events);
        }
        if s.state == SocketState::Open && s.outbox_start == s.outbox.len() {
            s.outbox.clear();
            s.outbox_start = 0;
        }
        let want =
            s.state == SocketState::Connecting || s.outbox_start < s.sendable_end() || tls_left;
        if want != s.writable_interest {
            let interest = if want {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if self
                .poll
                .registry()
                .reregister(&mut s.stream, Token(node), interest)
                .is_err()
            {
                return self.drop_socket(node, events);
            }
            s.writable_interest = want;
        }
    }

    /// Reads what arrived and handles every complete frame: the welcome first, then answers.
    fn receive(&mut self, node: usize, read_closed: bool, events: &mut Vec<Event>) {
        let Some(s) = self.sockets[node].as_mut() else {
            return;
        };
        let mut closed = match read_available(s, read_closed) {
            Ok(closed) => closed,
            Err(error) => {
                return self.connect_failed(node, error.to_string(), events);
            }
        };
        loop {
            // Gone if flushing the requests that waited for the welcome failed.
            let Some(s) = self.sockets[node].as_mut() else {
                return;
            };
            let limit = if s.state == SocketState::Open {
                CLIENT_FRAME_BYTES_MAX
            } else {
                HELLO_BYTES_MAX
            };
            let (kind, body) =
                match codec::take_frame(&s.inbox[..s.inbox_end], &mut s.inbox_start, limit) {
                    Decoded::Frame { kind, body, .. } => (kind, body),
                    Decoded::NeedMore { .. } => break,
                    Decoded::Error(_) => {
                        closed = true;
                        break;
                    }
                };
            if s.state != SocketState::Open {
                match self.dialer.welcome(kind, &s.inbox[body]) {
                    Ok(_) => {
                        s.state = SocketState::Open;
                        self.flush(node, events);
                        continue;
                    }
                    Err(e) => return self.connect_failed(node, format!("handshake: {e}"), events),
                }
            }
            match Response::decode(&s.inbox[body]) {
                Ok(response) => self.answer(node, response, events),
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            self.drop_socket(node, events);
        }
    }

    /// Closes a connection; every attempt on it failed and is sent again after a pause.
    fn drop_socket(&mut self, node: usize, events: &mut Vec<Event>) {
        if let Some(mut s) = self.sockets[node].take() {
            let _ = self.poll.registry().deregister(&mut s.stream);
        }
        self.forget_node(node);
        let now = Instant::now();
        for tag in 0..self.ops.len() {
            let Some(pending) = self.ops[tag].as_mut() else {
                continue;
            };
            if pending.request_id != 0 && pending.on_node == node {
                pending.request_id = 0;
                self.in_flight -= 1;
                self.retry_later(tag, Retry::Connection, now, events);
            }
        }
    }

    /// Handles one answer: a redirect or `Unavailable` sends the operation again, anything
    /// else ends it. An answer to an attempt given up on is dropped.
    fn answer(&mut self, node: usize, response: Response, events: &mut Vec<Event>) {
        let tag = (response.request_id & TAG_MASK) as usize;
        match self.ops.get_mut(tag).and_then(Option::as_mut) {
            Some(p) if p.request_id == response.request_id && response.request_id != 0 => {
                p.request_id = 0;
            }
            _ => return,
        }
        self.in_flight -= 1;
        let now = Instant::now();
        match response.outcome {
            Outcome::NotLeader { address, .. } => {
                events.push(Event::Retrying {
                    tag,
                    reason: Retry::Redirected,
                });
                let target = address.parse().ok().map(|a| self.node_index(a));
                self.leader = target;
                if target.is_some() && target != Some(node) {
                    self.ready.push(tag);
                } else {
                    self.later.push((now + RETRY_PAUSE, tag));
                }
            }
            Outcome::Unavailable { .. } => self.retry_later(tag, Retry::Unavailable, now, events),
            outcome => {
                self.finish(tag);
                events.push(Event::Answered { tag, outcome });
            }
        }
    }

    /// Attempts unanswered for longer than the timeout failed: they are sent again at once.
    /// Connections still not open after their time are given up.
    fn expire(&mut self, now: Instant, events: &mut Vec<Event>) {
        for node in 0..self.sockets.len() {
            if self.sockets[node]
                .as_ref()
                .is_some_and(|s| s.state != SocketState::Open && now >= s.open_by)
            {
                self.connect_failed(node, "timed out opening the connection".into(), events);
            }
        }
        for tag in 0..self.ops.len() {
            let Some(pending) = self.ops[tag].as_mut() else {
                continue;
            };
            if pending.request_id != 0 && now.duration_since(pending.sent_at) >= self.timeout {
                pending.request_id = 0;
                self.in_flight -= 1;
                events.push(Event::Retrying {
                    tag,
                    reason: Retry::TimedOut,
                });
                self.ready.push(tag);
            }
        }
    }
}

/// Whether a connecting socket has connected (`Ok(false)`: not yet, a spurious wakeup).
fn connect_result(stream: &TcpStream) -> io::Result<bool> {
    if let Some(error) = stream.take_error()? {
        return Err(error);
    }
    match stream.peer_addr() {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads what arrived; returns whether the socket closed or failed (a TLS failure is an
/// error, which says why). A plaintext read that leaves room in the buffer has taken all
/// there was: the next byte to arrive raises a new readiness event (epoll(7) on
/// edge-triggered stream sockets), so reading on only to be told "would block" would be a
/// system call wasted per wake-up. TLS may hold decrypted bytes back, and a socket whose
/// remote side closed raises no event for its end (a read of 0): those read until the
/// socket would block.
fn read_available(s: &mut Socket, read_closed: bool) -> io::Result<bool> {
    loop {
        make_room(s);
        let room = s.inbox.len() - s.inbox_end;
        match s.read(s.inbox_end) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                s.inbox_end += n;
                if n < room && s.tls.is_none() && !read_closed {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidData => return Err(e),
            Err(_) => return Ok(true),
        }
    }
}

/// Leaves at least `READ_ROOM_MIN` bytes to read into after the buffered ones: an emptied
/// buffer starts over at its front, a nearly full one moves its bytes there, and only what
/// still does not fit (a frame longer than the buffer) doubles it. A buffer a long frame
/// grew is given back once it is empty.
fn make_room(s: &mut Socket) {
    if s.inbox_start == s.inbox_end {
        s.inbox_start = 0;
        s.inbox_end = 0;
        if s.inbox.len() > 4 * READ_CHUNK_BYTES {
            s.inbox = Vec::new();
        }
    }
    if s.inbox.len() - s.inbox_end >= READ_ROOM_MIN {
        return;
    }
    if s.inbox_start > 0 {
        s.inbox.copy_within(s.inbox_start..s.inbox_end, 0);
        s.inbox_end -= s.inbox_start;
        s.inbox_start = 0;
    }
    if s.inbox.len() - s.inbox_end < READ_ROOM_MIN {
        let grown = (s.inbox.len() * 2).max(READ_CHUNK_BYTES);
        s.inbox.resize(grown, 0);
    }
}
