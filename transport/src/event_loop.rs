//! The event loop: one mio `Poll`, a listener, a waker, and connections in a slab.

use crate::body::Body;
use crate::codec::{
    begin_frame, decode, encode_frame, finish_frame, frame_bytes, judge_hello, take_frame, Decoded,
    DialError, Dialer, Hello, Role, Status, Welcome, FRAME_BYTES_LIMIT, HEADER_BYTES,
    HELLO_BYTES_MAX, PROTOCOL_VERSION,
};
use crate::fault::{Faults, Verdict};
use crate::slab::Slab;
use crate::tls::{ClientRights, NodeTls, Session};
use log::{debug, error, info, warn};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Connection `i` in the slab is registered as `Token(i + FIRST_CONNECTION)`.
const FIRST_CONNECTION: usize = 2;

/// Readiness events handled per `Poll::poll` call (a fixed capacity, per STYLE.md).
const EVENTS_CAPACITY: usize = 1024;
/// Smallest and largest size a connection's read buffer is grown to for ordinary reads; a
/// single larger frame grows it to exactly that frame's size (bounded by `frame_bytes_max`).
const READ_BUFFER_BYTES_MIN: usize = 4 * 1024;
const READ_BUFFER_BYTES_MAX: usize = 256 * 1024;
/// Bytes read from one connection per turn before moving on; the rest is read next turn, so a
/// flooding sender cannot starve the others or grow the event list without bound.
const READ_BUDGET_BYTES: usize = 4 * 1024 * 1024;
const _: () = assert!(READ_BUFFER_BYTES_MIN <= READ_BUFFER_BYTES_MAX);
const _: () = assert!(HELLO_BYTES_MAX + crate::codec::HEADER_BYTES <= READ_BUFFER_BYTES_MIN);

/// Settings for a [`Transport`]. Build one with [`TransportConfig::new`] and adjust fields.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This node's id.
    pub node_id: u64,
    /// The cluster's name; connections from another cluster are refused. At most 255 bytes.
    pub cluster_id: String,
    /// Where to accept connections from peers and clients (port 0 picks a free port; read it
    /// back with [`Transport::local_addr`]).
    pub listen: SocketAddr,
    /// The other nodes. An entry with this node's own id is ignored, so the daemon can pass the
    /// whole cluster.
    pub peers: Vec<(u64, SocketAddr)>,
    /// A shared secret every connection must present. At most 255 bytes.
    pub token: Option<Vec<u8>>,
    /// Largest frame body accepted or sent, in bytes.
    pub frame_bytes_max: usize,
    /// Largest number of unsent bytes queued per connection; frames beyond it are dropped.
    pub outbox_bytes_max: usize,
    /// Time allowed from accepting (or dialing) a connection to completing its handshake.
    pub handshake_timeout: Duration,
    /// First delay before redialing a peer; it doubles on each failure.
    pub reconnect_backoff_min: Duration,
    /// Longest delay before redialing a peer; also used after the peer refused us.
    pub reconnect_backoff_max: Duration,
    /// Seed of the random numbers used for backoff jitter and the fault layer.
    pub seed: u64,
    /// Where this node says it listens in the hellos it sends (`host:port`, as the
    /// cluster's configuration gives it). Empty: not said.
    pub advertise: String,
    /// Accept a node of this cluster that is not a peer yet, and make it one at the address
    /// its hello gives: for a node joining a cluster, which knows no other node yet.
    pub accept_unknown_nodes: bool,
    /// TLS on every connection, accepted and dialed (`None`: plaintext). See [`crate::tls`].
    pub tls: Option<Arc<NodeTls>>,
    /// Host names the configuration gives peers, where it gives names rather than IP
    /// addresses: with TLS, a peer's certificate must name its host (this name, else the
    /// IP address it is dialed at).
    pub peer_hosts: Vec<(u64, String)>,
}

impl TransportConfig {
    /// A configuration with no peers, no token and default limits: 16 MiB frames, 64 MiB
    /// outboxes, a 5 s handshake timeout and reconnect backoff from 50 ms to 2 s.
    pub fn new(node_id: u64, cluster_id: impl Into<String>, listen: SocketAddr) -> Self {
        TransportConfig {
            node_id,
            cluster_id: cluster_id.into(),
            listen,
            peers: Vec::new(),
            token: None,
            frame_bytes_max: 16 << 20,
            outbox_bytes_max: 64 << 20,
            handshake_timeout: Duration::from_secs(5),
            reconnect_backoff_min: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(2),
            seed: node_id ^ 0x5EED_u64.rotate_left(32),
            advertise: String::new(),
            accept_unknown_nodes: false,
            tls: None,
            peer_hosts: Vec::new(),
        }
    }

    /// Checks the settings, and returns the dialing side of this node's handshake (which
    /// checks the cluster id and the token: a hello carries at most 255 bytes of each).
    fn validate(&self) -> io::Result<Dialer> {
        let invalid = |message: String| Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        let dialer = match Dialer::new(
            Role::Node(self.node_id),
            self.cluster_id.as_bytes(),
            self.token.as_deref().unwrap_or_default(),
        ) {
            Ok(dialer) => dialer.with_address(&self.advertise),
            Err(error) => return invalid(error.to_string()),
        };
        if self.frame_bytes_max > FRAME_BYTES_LIMIT {
            return invalid(format!("frame_bytes_max exceeds {FRAME_BYTES_LIMIT}"));
        }
        if self.outbox_bytes_max < frame_bytes(self.frame_bytes_max) {
            return invalid("outbox_bytes_max must hold at least one largest frame".to_string());
        }
        if self.reconnect_backoff_min.is_zero()
            || self.reconnect_backoff_min > self.reconnect_backoff_max
        {
            return invalid("reconnect backoff must satisfy 0 < min <= max".to_string());
        }
        let mut ids: Vec<u64> = self.peers.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        if let Some(pair) = ids.windows(2).find(|pair| pair[0] == pair[1]) {
            return invalid(format!("peer {} is listed twice", pair[0]));
        }
        Ok(dialer)
    }
}

/// Identifies one client connection for as long as it is open; never reused for a later one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId(u64);

impl ClientId {
    fn new(index: usize, generation: u64) -> Self {
        ClientId((generation << 32) | index as u64)
    }

    fn index(self) -> usize {
        (self.0 & 0xFFFF_FFFF) as usize
    }

    fn generation(self) -> u64 {
        self.0 >> 32
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client#{}.{}", self.index(), self.generation())
    }
}

/// What [`Transport::poll`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A frame from a peer node.
    PeerFrame {
        /// The sending node.
        from: u64,
        /// The frame's kind byte.
        kind: u8,
        /// The frame's body, which a receiver can keep parts of without copying (the entries
        /// of an append stay slices of it).
        body: Body,
    },
    /// A frame from a client connection.
    ClientFrame {
        /// The connection it came on; answer with [`Transport::send_client`].
        client: ClientId,
        /// The frame's kind byte.
        kind: u8,
        /// The frame's body, which a receiver can keep parts of without copying (the entries
        /// of an append stay slices of it).
        body: Body,
    },
    /// A client connection closed; its id is no longer valid.
    ClientClosed(ClientId),
    /// The outbound connection to a peer completed its handshake: sends to it are carried.
    PeerUp(u64),
    /// The outbound connection to a peer broke: sends to it fail until the next `PeerUp`.
    PeerDown(u64),
    /// Another thread called `wake()` on the [`Transport::waker`].
    Woken,
}

/// Why a frame was not queued. Frames dropped by the fault layer are not errors: to the caller
/// they look sent, as on a lossy network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The node id is not a configured peer.
    UnknownPeer(u64),
    /// The client connection has closed.
    UnknownClient(ClientId),
    /// The peer's outbound connection is not established.
    NotConnected(u64),
    /// The connection's outbox would exceed `outbox_bytes_max`; the frame was dropped.
    OutboxFull,
    /// The body is longer than `frame_bytes_max`.
    TooLarge {
        /// The body's length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendError::UnknownPeer(id) => write!(f, "node {id} is not a configured peer"),
            SendError::UnknownClient(id) => write!(f, "{id} is closed"),
            SendError::NotConnected(id) => write!(f, "peer {id} is not connected"),
            SendError::OutboxFull => write!(f, "outbox full, frame dropped"),
            SendError::TooLarge { len, max } => {
                write!(f, "frame body of {len} bytes exceeds {max}")
            }
        }
    }
}

impl std::error::Error for SendError {}

/// Counters for one peer, for `raftctl status`. Frame and byte counts include headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerStats {
    /// The peer's node id.
    pub id: u64,
    /// The address this node dials.
    pub addr: SocketAddr,
    /// Whether the outbound connection is established.
    pub connected: bool,
    /// Inbound connections from this peer currently open (normally 0 or 1).
    pub inbound_connections: u32,
    /// Frames queued for sending.
    pub frames_out: u64,
    /// Bytes queued for sending.
    pub bytes_out: u64,
    /// Frames received and delivered.
    pub frames_in: u64,
    /// Bytes received and delivered.
    pub bytes_in: u64,
    /// Frames dropped because the outbox (or the fault layer's delay queue) was full.
    pub dropped_outbox_full: u64,
    /// Frames dropped because the peer was not connected.
    pub dropped_not_connected: u64,
    /// Frames dropped by the fault layer (loss or partition, either direction).
    pub dropped_by_faults: u64,
    /// Outbound connections established after the first.
    pub reconnects: u64,
    /// Handshakes this peer refused.
    pub refusals: u64,
}

/// A snapshot of the transport's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// One entry per configured peer, in configuration order.
    pub peers: Vec<PeerStats>,
    /// Client connections currently open (handshake completed).
    pub clients: usize,
    /// Frames to clients dropped because a client's outbox was full.
    pub client_frames_dropped: u64,
    /// Connections closed for bad input: bad frames, failed handshakes, timeouts.
    pub connections_rejected: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Outbound, TCP connect in progress.
    Connecting { peer: usize },
    /// Outbound, hello sent, waiting for the welcome.
    AwaitWelcome { peer: usize },
    /// Outbound, established: this node sends its frames for `peer` here.
    ToPeer { peer: usize },
    /// Inbound, waiting for the hello.
    AwaitHello,
    /// Inbound from a peer: frames from `peer` arrive here.
    FromPeer { peer: usize },
    /// Inbound from a client.
    Client,
}

impl State {
    fn in_handshake(self) -> bool {
        matches!(
            self,
            State::Connecting { .. } | State::AwaitWelcome { .. } | State::AwaitHello
        )
    }
}

struct Connection {
    stream: TcpStream,
    /// TLS over `stream`, when the transport runs with TLS; plaintext goes straight to it.
    tls: Option<Box<Session>>,
    /// What a client connection may do (judged at its hello).
    rights: ClientRights,
    remote: SocketAddr,
    state: State,
    /// Received bytes live in `inbox[inbox_start..inbox_end]`; `inbox.len()` is its capacity.
    inbox: Vec<u8>,
    inbox_start: usize,
    inbox_end: usize,
    /// Bytes to send live in `outbox[outbox_start..]`.
    outbox: Vec<u8>,
    outbox_start: usize,
    /// Whether the registration currently includes `WRITABLE`.
    writable_interest: bool,
    /// Whether the connection is on the transport's list of outboxes to flush.
    flush_queued: bool,
}

impl Connection {
    fn new(stream: TcpStream, tls: Option<Session>, remote: SocketAddr, state: State) -> Self {
        Connection {
            stream,
            tls: tls.map(Box::new),
            rights: ClientRights::Admin,
            remote,
            state,
            inbox: Vec::new(),
            inbox_start: 0,
            inbox_end: 0,
            outbox: Vec::new(),
            outbox_start: 0,
            writable_interest: false,
            flush_queued: false,
        }
    }

    fn outbox_pending(&self) -> usize {
        self.outbox.len() - self.outbox_start
    }

    /// Reads received bytes (plaintext from inside TLS, with TLS) into the inbox's spare
    /// room, after `inbox_end` (which the caller advances).
    fn read_into_inbox(&mut self) -> io::Result<usize> {
        let buf = &mut self.inbox[self.inbox_end..];
        match &mut self.tls {
            None => self.stream.read(buf),
            Some(tls) => tls.read(&mut self.stream, buf),
        }
    }

    /// Writes bytes to send (into TLS, with TLS).
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match &mut self.tls {
            None => self.stream.write(bytes),
            Some(tls) => tls.write(&mut self.stream, bytes),
        }
    }

    /// Whether TLS holds bytes the socket has not taken yet.
    fn write_from_outbox(&mut self) -> io::Result<usize> {
        let bytes = &self.outbox[self.outbox_start..];
        match &mut self.tls {
            None => self.stream.write(bytes),
            Some(tls) => tls.write(&mut self.stream, bytes),
        }
    }

    fn tls_wants_write(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.wants_write())
    }

    /// Makes room for at least `needed` buffered bytes and some spare space to read into.
    fn prepare_inbox(&mut self, needed: usize) {
        if self.inbox_start == self.inbox_end {
            self.inbox_start = 0;
            self.inbox_end = 0;
            if self.inbox.len() > READ_BUFFER_BYTES_MAX {
                // A large frame has been consumed; give its memory back.
                self.inbox = vec![0; READ_BUFFER_BYTES_MAX];
            }
        }
        let buffered = self.inbox_end - self.inbox_start;
        let wanted = needed.max(buffered + READ_BUFFER_BYTES_MIN);
        if self.inbox.len() - self.inbox_start < wanted {
            self.inbox.copy_within(self.inbox_start..self.inbox_end, 0);
            self.inbox_start = 0;
            self.inbox_end = buffered;
        }
        if self.inbox.len() < wanted {
            let grown = (self.inbox.len() * 2).clamp(READ_BUFFER_BYTES_MIN, READ_BUFFER_BYTES_MAX);
            self.inbox.resize(grown.max(wanted), 0);
        }
    }
}

struct Peer {
    id: u64,
    addr: SocketAddr,
    /// The host its certificate must name (with TLS): a configured name, else `addr`'s IP.
    host: String,
    /// The slab index of the outbound connection, whatever its state.
    outbound: Option<usize>,
    up: bool,
    backoff: Duration,
    next_dial: Option<Instant>,
    /// Bytes held by the fault layer's delay queue for this peer (bounded by the outbox limit).
    delayed_bytes: usize,
    ever_up: bool,
    stats: PeerStats,
}

impl Peer {
    fn new(id: u64, addr: SocketAddr, backoff: Duration, now: Instant) -> Self {
        Peer {
            id,
            addr,
            host: addr.ip().to_string(),
            outbound: None,
            up: false,
            backoff,
            next_dial: Some(now),
            delayed_bytes: 0,
            ever_up: false,
            stats: PeerStats {
                id,
                addr,
                connected: false,
                inbound_connections: 0,
                frames_out: 0,
                bytes_out: 0,
                frames_in: 0,
                bytes_in: 0,
                dropped_outbox_full: 0,
                dropped_not_connected: 0,
                dropped_by_faults: 0,
                reconnects: 0,
                refusals: 0,
            },
        }
    }
}

/// A frame held back by the fault layer until `due`.
struct Delayed {
    due: Instant,
    seq: u64,
    peer: usize,
    frame: Vec<u8>,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    /// Reversed, so the `BinaryHeap` (a max-heap) yields the earliest due frame first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.due, other.seq).cmp(&(self.due, self.seq))
    }
}

/// The transport: frames between this node, its peers and clients over one mio event loop.
/// See the crate docs for the contract.
pub struct Transport {
    config: TransportConfig,
    /// Opens this node's outbound connections: the hello it sends, the welcome it expects.
    dialer: Dialer,
    poll: Poll,
    events: Events,
    listener: TcpListener,
    local_addr: SocketAddr,
    waker: Arc<Waker>,
    connections: Slab<Connection>,
    peers: Vec<Peer>,
    /// Connections whose outbox gained bytes since the last flush.
    flush_list: Vec<usize>,
    /// Connections that still had bytes to read when their read budget ran out.
    /// Each with whether its socket reported the remote side closed (see `on_readable`).
    read_again: Vec<(usize, u64, bool)>,
    /// The frames [`Transport::deliver_frames`] takes from one inbox (kept to spare an allocation).
    frames_scratch: Vec<(u8, Range<usize>)>,
    /// Handshake deadlines in the order they were set; all share one timeout, so the queue is
    /// sorted by deadline.
    handshake_deadlines: VecDeque<(Instant, usize, u64)>,
    delayed: BinaryHeap<Delayed>,
    delayed_seq: u64,
    faults: Faults,
    rng: SmallRng,
    /// Readiness copied out of `events`, so handlers may borrow `self` mutably: token,
    /// readable, writable, and whether the remote side closed or the socket failed.
    ready: Vec<(Token, bool, bool, bool)>,
    /// Events found outside `poll` (by `flush`), reported by the next `poll`.
    pending_events: Vec<Event>,
    clients: usize,
    client_frames_dropped: u64,
    connections_rejected: u64,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("node_id", &self.config.node_id)
            .field("local_addr", &self.local_addr)
            .field("connections", &self.connections.len())
            .finish_non_exhaustive()
    }
}

fn would_block(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::WouldBlock
}

fn interrupted(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::Interrupted
}

fn token_of(index: usize) -> Token {
    Token(index + FIRST_CONNECTION)
}

impl Transport {
    /// Binds the listener and prepares to dial every peer on the first [`poll`](Self::poll).
    pub fn new(config: TransportConfig) -> io::Result<Transport> {
        let dialer = config.validate()?;
        let poll = Poll::new()?;
        let mut listener = TcpListener::bind(config.listen)?;
        let local_addr = listener.local_addr()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let now = Instant::now();
        let peers = config
            .peers
            .iter()
            .filter(|(id, _)| *id != config.node_id)
            .map(|&(id, addr)| {
                let mut peer = Peer::new(id, addr, config.reconnect_backoff_min, now);
                if let Some((_, host)) = config.peer_hosts.iter().find(|(p, _)| *p == id) {
                    peer.host = host.clone();
                }
                peer
            })
            .collect();
        info!(
            "node {} listening on {local_addr} (cluster {:?}, {})",
            config.node_id,
            config.cluster_id,
            if config.tls.is_some() {
                "TLS"
            } else {
                "plaintext"
            }
        );
        let rng = SmallRng::seed_from_u64(config.seed);
        Ok(Transport {
            config,
            dialer,
            poll,
            events: Events::with_capacity(EVENTS_CAPACITY),
            listener,
            local_addr,
            waker,
            connections: Slab::new(),
            peers,
            flush_list: Vec::new(),
            read_again: Vec::new(),
            frames_scratch: Vec::new(),
            handshake_deadlines: VecDeque::new(),
            delayed: BinaryHeap::new(),
            delayed_seq: 0,
            faults: Faults::default(),
            rng,
            ready: Vec::with_capacity(EVENTS_CAPACITY),
            pending_events: Vec::new(),
            clients: 0,
            client_frames_dropped: 0,
            connections_rejected: 0,
        })
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// This node's id.
    pub fn node_id(&self) -> u64 {
        self.config.node_id
    }

    /// A handle other threads use to interrupt [`poll`](Self::poll); each `wake()` makes the
    /// loop report [`Event::Woken`].
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Replaces the TLS settings (certificates and keys reloaded): connections made from now
    /// on use the new ones, open connections keep theirs. A transport started in plaintext
    /// stays plaintext (and one started with TLS keeps TLS).
    pub fn set_tls(&mut self, tls: Arc<NodeTls>) -> io::Result<()> {
        if self.config.tls.is_none() {
            let message = "this transport runs in plaintext; TLS cannot be switched on by a reload";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        info!(
            "node {}: TLS certificates and keys reloaded",
            self.config.node_id
        );
        self.config.tls = Some(tls);
        Ok(())
    }

    /// Whether a client connection may run admin operations: always without client
    /// certificates; with them, when its certificate's name is listed as admin (see
    /// [`crate::tls::NodeTls`]). False for a closed connection.
    pub fn client_is_admin(&self, client: ClientId) -> bool {
        let index = client.index();
        (self.connections.generation(index) == Some(client.generation()))
            .then(|| self.connections.get(index))
            .flatten()
            .is_some_and(|c| c.state == State::Client && c.rights == ClientRights::Admin)
    }

    /// Replaces the fault layer's settings; takes effect for the next frame.
    pub fn set_faults(&mut self, faults: Faults) {
        info!("node {} faults set to {faults:?}", self.config.node_id);
        self.faults = faults;
    }

    /// The fault layer's current settings.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        Stats {
            peers: self.peers.iter().map(|p| p.stats.clone()).collect(),
            clients: self.clients,
            client_frames_dropped: self.client_frames_dropped,
            connections_rejected: self.connections_rejected,
        }
    }

    /// Bytes queued but not yet written, over all connections and the fault layer's delay
    /// queue. A caller shutting down cleanly polls until this is zero.
    pub fn pending_bytes(&self) -> usize {
        let delayed: usize = self.peers.iter().map(|p| p.delayed_bytes).sum();
        let outboxes: usize = (0..self.connections.slots_len())
            .filter_map(|index| self.connections.get(index))
            .map(Connection::outbox_pending)
            .sum();
        delayed + outboxes
    }

    /// Whether the outbound connection to `peer` is established.
    pub fn is_connected(&self, peer: u64) -> bool {
        self.peers.iter().any(|p| p.id == peer && p.up)
    }

    /// Adds a peer after construction (it is dialed on the next poll). Tests use it to wire
    /// up endpoints that bound port 0; a daemon passes its peers in the configuration.
    pub fn add_peer(&mut self, id: u64, addr: SocketAddr) -> io::Result<()> {
        if id == self.config.node_id || self.peer_index(id).is_some() {
            let message = format!("node {id} is this node or already a peer");
            return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
        }
        self.config.peers.push((id, addr));
        let peer = Peer::new(id, addr, self.config.reconnect_backoff_min, Instant::now());
        self.peers.push(peer);
        Ok(())
    }

    /// Adds peer `id` at `addr`, or moves it there (its connection is redialed) if it is
    /// already a peer at another address. Its own id is ignored.
    pub fn set_peer(&mut self, id: u64, addr: SocketAddr) {
        if id == self.config.node_id {
            return;
        }
        match self.peer_index(id) {
            None => {
                info!("node {}: peer {id} is at {addr}", self.config.node_id);
                let _ = self.add_peer(id, addr);
            }
            Some(index) if self.peers[index].addr != addr => {
                info!(
                    "node {}: peer {id} moved from {} to {addr}",
                    self.config.node_id, self.peers[index].addr
                );
                self.peers[index].addr = addr;
                self.peers[index].host = addr.ip().to_string();
                if let Some(p) = self.config.peers.iter_mut().find(|p| p.0 == id) {
                    p.1 = addr;
                }
                if let Some(conn) = self.peers[index].outbound {
                    let mut out = std::mem::take(&mut self.pending_events);
                    self.close(conn, "the peer moved to another address", &mut out);
                    self.pending_events = out;
                }
            }
            Some(_) => {}
        }
    }

    /// Whether to accept nodes that are not peers yet (see
    /// [`TransportConfig::accept_unknown_nodes`]).
    pub fn set_accept_unknown_nodes(&mut self, accept: bool) {
        self.config.accept_unknown_nodes = accept;
    }

    /// Where an unknown node that dialed can be dialed back, if this node accepts unknown
    /// nodes (see [`TransportConfig::accept_unknown_nodes`]) and the hello gives an address.
    fn learnable_peer(&self, id: u64, address: &[u8]) -> Option<SocketAddr> {
        if !self.config.accept_unknown_nodes || self.peer_index(id).is_some() {
            return None;
        }
        let parsed = std::str::from_utf8(address)
            .ok()
            .and_then(|a| a.parse::<SocketAddr>().ok());
        if parsed.is_none() {
            warn!(
                "node {}: node {id} dialed without an address this node can dial back",
                self.config.node_id
            );
        }
        parsed
    }

    fn peer_index(&self, id: u64) -> Option<usize> {
        self.peers.iter().position(|p| p.id == id)
    }

    /// Queues a frame for `to`. It is written on a later [`poll`](Self::poll) (or
    /// [`flush`](Self::flush)), together with every other frame queued for it meanwhile.
    pub fn send_peer(&mut self, to: u64, kind: u8, body: &[u8]) -> Result<(), SendError> {
        let peer_index = self.peer_index(to).ok_or(SendError::UnknownPeer(to))?;
        let max = self.config.frame_bytes_max;
        if body.len() > max {
            return Err(SendError::TooLarge {
                len: body.len(),
                max,
            });
        }
        let peer = &mut self.peers[peer_index];
        let Some(index) = peer.outbound.filter(|_| peer.up) else {
            peer.stats.dropped_not_connected += 1;
            return Err(SendError::NotConnected(to));
        };
        if !self.faults.is_none() {
            match self.faults.outbound(to, &mut self.rng) {
                Verdict::Send => {}
                Verdict::Drop => {
                    peer.stats.dropped_by_faults += 1;
                    return Ok(());
                }
                Verdict::Delay(delay) => return self.delay_frame(peer_index, kind, body, delay),
            }
        }
        let conn = self
            .connections
            .get_mut(index)
            .expect("an up peer has a live connection");
        let bytes = frame_bytes(body.len());
        if conn.outbox_pending() + bytes > self.config.outbox_bytes_max {
            peer.stats.dropped_outbox_full += 1;
            return Err(SendError::OutboxFull);
        }
        encode_frame(&mut conn.outbox, kind, body);
        peer.stats.frames_out += 1;
        peer.stats.bytes_out += bytes as u64;
        if !conn.flush_queued {
            conn.flush_queued = true;
            self.flush_list.push(index);
        }
        Ok(())
    }

    /// Like [`Transport::send_peer`], for a body that `encode` appends to the buffer it is
    /// handed: the peer connection's outbox itself, so the body is written once instead of
    /// encoded into a buffer and copied into the outbox (a leader's appends carry every entry
    /// to each follower). Refused, with nothing queued, where `send_peer` would refuse it.
    /// With faults injected, the body is encoded aside and goes through `send_peer`.
    pub fn send_peer_encoded(
        &mut self,
        to: u64,
        kind: u8,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> Result<(), SendError> {
        if !self.faults.is_none() {
            let mut body = Vec::new();
            encode(&mut body);
            return self.send_peer(to, kind, &body);
        }
        let peer_index = self.peer_index(to).ok_or(SendError::UnknownPeer(to))?;
        let peer = &mut self.peers[peer_index];
        let Some(index) = peer.outbound.filter(|_| peer.up) else {
            peer.stats.dropped_not_connected += 1;
            return Err(SendError::NotConnected(to));
        };
        let conn = self
            .connections
            .get_mut(index)
            .expect("an up peer has a live connection");
        let start = begin_frame(&mut conn.outbox);
        encode(&mut conn.outbox);
        let len = conn.outbox.len() - start - HEADER_BYTES;
        let max = self.config.frame_bytes_max;
        if len > max {
            conn.outbox.truncate(start);
            return Err(SendError::TooLarge { len, max });
        }
        if conn.outbox_pending() > self.config.outbox_bytes_max {
            conn.outbox.truncate(start);
            peer.stats.dropped_outbox_full += 1;
            return Err(SendError::OutboxFull);
        }
        finish_frame(&mut conn.outbox, start, kind);
        peer.stats.frames_out += 1;
        peer.stats.bytes_out += frame_bytes(len) as u64;
        if !conn.flush_queued {
            conn.flush_queued = true;
            self.flush_list.push(index);
        }
        Ok(())
    }

    fn delay_frame(
        &mut self,
        peer_index: usize,
        kind: u8,
        body: &[u8],
        delay: Duration,
    ) -> Result<(), SendError> {
        let peer = &mut self.peers[peer_index];
        let bytes = frame_bytes(body.len());
        if peer.delayed_bytes + bytes > self.config.outbox_bytes_max {
            peer.stats.dropped_outbox_full += 1;
            return Err(SendError::OutboxFull);
        }
        peer.delayed_bytes += bytes;
        let mut frame = Vec::with_capacity(bytes);
        encode_frame(&mut frame, kind, body);
        self.delayed_seq += 1;
        self.delayed.push(Delayed {
            due: Instant::now() + delay,
            seq: self.delayed_seq,
            peer: peer_index,
            frame,
        });
        Ok(())
    }

    /// Queues a frame for a client connection.
    pub fn send_client(
        &mut self,
        client: ClientId,
        kind: u8,
        body: &[u8],
    ) -> Result<(), SendError> {
        let max = self.config.frame_bytes_max;
        if body.len() > max {
            return Err(SendError::TooLarge {
                len: body.len(),
                max,
            });
        }
        let index = client.index();
        let conn = match self
            .connections
            .get_mut_generation(index, client.generation())
        {
            Some(conn) if conn.state == State::Client => conn,
            _ => return Err(SendError::UnknownClient(client)),
        };
        if conn.outbox_pending() + frame_bytes(body.len()) > self.config.outbox_bytes_max {
            self.client_frames_dropped += 1;
            return Err(SendError::OutboxFull);
        }
        encode_frame(&mut conn.outbox, kind, body);
        if !conn.flush_queued {
            conn.flush_queued = true;
            self.flush_list.push(index);
        }
        Ok(())
    }

    /// Closes a client connection (for example one that broke the application's protocol).
    /// No [`Event::ClientClosed`] is reported for it.
    pub fn close_client(&mut self, client: ClientId) {
        let index = client.index();
        if self
            .connections
            .get_mut_generation(index, client.generation())
            .is_some_and(|c| c.state == State::Client)
        {
            let mut discard = Vec::new();
            self.close(index, "closed by this node", &mut discard);
        }
    }

    /// Writes queued frames now instead of at the next [`poll`](Self::poll).
    pub fn flush(&mut self) {
        let mut out = Vec::new();
        self.flush_all(&mut out);
        // Connections that broke while flushing report their closure on the next poll.
        self.pending_events.extend(out);
    }
}

/// A random duration in `[d/2, d]`, so nodes that lost each other at the same moment do not
/// redial in lockstep.
fn jitter(rng: &mut SmallRng, d: Duration) -> Duration {
    let nanos = d.as_nanos().min(u64::MAX as u128) as u64;
    Duration::from_nanos(nanos / 2 + rng.gen_range(0..=nanos / 2))
}

/// Whether the bytes a plaintext connection received start like a TLS handshake record
/// (content type 22, version 3.x): a TLS client dialed a node that runs without TLS.
fn looks_like_tls(conn: &Connection) -> bool {
    let received = &conn.inbox[conn.inbox_start..conn.inbox_end];
    conn.state == State::AwaitHello
        && received.len() >= 2
        && received[0] == 0x16
        && received[1] == 3
}

/// The log line of a connection that failed TLS (what rustls said, explained).
fn tls_failure(state: State, error: &io::Error) -> String {
    if state.in_handshake() {
        format!("{error} (before the handshake completed)")
    } else {
        error.to_string()
    }
}

/// Until the handshake completes, frames are limited to the size of a hello.
fn frame_limit(state: State, frame_bytes_max: usize) -> usize {
    if state.in_handshake() {
        HELLO_BYTES_MAX
    } else {
        frame_bytes_max
    }
}

/// Bytes of outbox capacity kept after the outbox drains; a burst beyond it is given back.
const OUTBOX_KEEP_BYTES: usize = 4 << 20;

impl Transport {
    /// Runs the loop until something happened or `timeout` passed (`None`: no limit), appending
    /// what happened to `out`.
    ///
    /// Queued frames are written first, so frames sent between two polls leave in one write per
    /// connection. The call returns after the first turn that handled any readiness or produced
    /// an event, so it may return early with `out` unchanged; callers recompute their timeout
    /// (the time to their next tick) and call again.
    pub fn poll(&mut self, timeout: Option<Duration>, out: &mut Vec<Event>) -> io::Result<()> {
        let deadline = timeout.map(|t| Instant::now() + t);
        out.append(&mut self.pending_events);
        loop {
            self.run_timers(Instant::now(), out);
            self.flush_all(out);
            let now = Instant::now();
            let mut wait = deadline.map(|d| d.saturating_duration_since(now));
            if let Some(next) = self.next_timer() {
                let until = next.saturating_duration_since(now);
                wait = Some(wait.map_or(until, |w| w.min(until)));
            }
            if !out.is_empty() || !self.read_again.is_empty() {
                wait = Some(Duration::ZERO);
            }
            if let Err(error) = self.poll.poll(&mut self.events, wait) {
                if interrupted(&error) {
                    continue;
                }
                return Err(error);
            }
            let mut ready = std::mem::take(&mut self.ready);
            ready.clear();
            for event in self.events.iter() {
                // Closed and error flags are hints (mio's portability notes); a read or write
                // then finds out what actually happened.
                let hint = event.is_error() || event.is_read_closed() || event.is_write_closed();
                ready.push((
                    event.token(),
                    event.is_readable() || hint,
                    event.is_writable() || hint,
                    event.is_error() || event.is_read_closed(),
                ));
            }
            let handled = !ready.is_empty();
            for &(token, readable, writable, closed) in &ready {
                match token {
                    LISTENER => self.accept_all(),
                    WAKER => out.push(Event::Woken),
                    Token(t) => self.on_connection_ready(
                        t - FIRST_CONNECTION,
                        (readable, writable, closed),
                        out,
                    ),
                }
            }
            self.ready = ready;
            self.read_pending(out);
            self.run_timers(Instant::now(), out);
            self.flush_all(out);
            let expired = deadline.is_some_and(|d| Instant::now() >= d);
            if handled || !out.is_empty() || expired {
                return Ok(());
            }
        }
    }

    fn next_timer(&self) -> Option<Instant> {
        let handshake = self.handshake_deadlines.front().map(|&(at, _, _)| at);
        let dial = self
            .peers
            .iter()
            .filter(|p| p.outbound.is_none())
            .filter_map(|p| p.next_dial)
            .min();
        let delayed = self.delayed.peek().map(|d| d.due);
        [handshake, dial, delayed].into_iter().flatten().min()
    }

    fn run_timers(&mut self, now: Instant, out: &mut Vec<Event>) {
        while let Some(&(at, index, generation)) = self.handshake_deadlines.front() {
            if at > now {
                break;
            }
            self.handshake_deadlines.pop_front();
            let state = self
                .connections
                .get_mut_generation(index, generation)
                .map(|c| c.state);
            match state {
                Some(State::AwaitHello) => {
                    let reason = format!(
                        "handshake not completed within {:?}",
                        self.config.handshake_timeout
                    );
                    self.reject(index, &reason, out);
                }
                Some(State::Connecting { .. } | State::AwaitWelcome { .. }) => {
                    self.close(index, "handshake timed out", out);
                }
                _ => {}
            }
        }
        for peer_index in 0..self.peers.len() {
            let peer = &self.peers[peer_index];
            if peer.outbound.is_none() && peer.next_dial.is_some_and(|at| at <= now) {
                self.dial(peer_index, now);
            }
        }
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            let delayed = self.delayed.pop().expect("peeked");
            self.peers[delayed.peer].delayed_bytes -= delayed.frame.len();
            self.enqueue_encoded(delayed.peer, &delayed.frame);
        }
    }

    /// Queues an already encoded frame released by the fault layer's delay queue.
    fn enqueue_encoded(&mut self, peer_index: usize, frame: &[u8]) {
        let peer = &mut self.peers[peer_index];
        let Some(index) = peer.outbound.filter(|_| peer.up) else {
            peer.stats.dropped_not_connected += 1;
            return;
        };
        let conn = self
            .connections
            .get_mut(index)
            .expect("an up peer has a live connection");
        if conn.outbox_pending() + frame.len() > self.config.outbox_bytes_max {
            peer.stats.dropped_outbox_full += 1;
            return;
        }
        conn.outbox.extend_from_slice(frame);
        peer.stats.frames_out += 1;
        peer.stats.bytes_out += frame.len() as u64;
        if !conn.flush_queued {
            conn.flush_queued = true;
            self.flush_list.push(index);
        }
    }

    fn schedule_redial(&mut self, peer_index: usize, now: Instant) {
        let peer = &mut self.peers[peer_index];
        let delay = jitter(&mut self.rng, peer.backoff);
        peer.next_dial = Some(now + delay);
        peer.backoff = (peer.backoff * 2).min(self.config.reconnect_backoff_max);
        debug!(
            "node {}: next dial to peer {} in {delay:?}",
            self.config.node_id, peer.id
        );
    }

    fn dial(&mut self, peer_index: usize, now: Instant) {
        let addr = self.peers[peer_index].addr;
        self.peers[peer_index].next_dial = None;
        let stream = match TcpStream::connect(addr) {
            Ok(stream) => stream,
            Err(error) => {
                debug!(
                    "node {}: dial to {addr} failed: {error}",
                    self.config.node_id
                );
                self.schedule_redial(peer_index, now);
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let tls = match self
            .config
            .tls
            .as_ref()
            .map(|t| t.dial(&self.peers[peer_index].host))
        {
            None => None,
            Some(Ok(session)) => Some(session),
            Some(Err(error)) => {
                error!(
                    "node {}: cannot dial peer {} with TLS: {error}",
                    self.config.node_id, self.peers[peer_index].id
                );
                self.schedule_redial(peer_index, now);
                return;
            }
        };
        let state = State::Connecting { peer: peer_index };
        let connection = Connection::new(stream, tls, addr, state);
        let (index, generation) = self.connections.insert(connection);
        let conn = self.connections.get_mut(index).expect("just inserted");
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(error) =
            self.poll
                .registry()
                .register(&mut conn.stream, token_of(index), interest)
        {
            warn!(
                "node {}: cannot register a connection to {addr}: {error}",
                self.config.node_id
            );
            self.connections.remove(index);
            self.schedule_redial(peer_index, now);
            return;
        }
        conn.writable_interest = true;
        self.peers[peer_index].outbound = Some(index);
        self.handshake_deadlines.push_back((
            now + self.config.handshake_timeout,
            index,
            generation,
        ));
    }

    fn accept_all(&mut self) {
        loop {
            let (stream, remote) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(error) if would_block(&error) => return,
                Err(error) if interrupted(&error) => continue,
                Err(error) => {
                    error!("node {}: accept failed: {error}", self.config.node_id);
                    return;
                }
            };
            let _ = stream.set_nodelay(true);
            let tls = match self.config.tls.as_ref().map(|t| t.accept()) {
                None => None,
                Some(Ok(session)) => Some(session),
                Some(Err(error)) => {
                    error!(
                        "node {}: cannot start TLS with {remote}: {error}",
                        self.config.node_id
                    );
                    continue;
                }
            };
            let connection = Connection::new(stream, tls, remote, State::AwaitHello);
            let (index, generation) = self.connections.insert(connection);
            let conn = self.connections.get_mut(index).expect("just inserted");
            if let Err(error) =
                self.poll
                    .registry()
                    .register(&mut conn.stream, token_of(index), Interest::READABLE)
            {
                warn!(
                    "node {}: cannot register a connection from {remote}: {error}",
                    self.config.node_id
                );
                self.connections.remove(index);
                continue;
            }
            let deadline = Instant::now() + self.config.handshake_timeout;
            self.handshake_deadlines
                .push_back((deadline, index, generation));
            debug!(
                "node {}: accepted a connection from {remote}",
                self.config.node_id
            );
        }
    }

    /// `readiness`: readable, writable, and whether the remote side closed or the socket
    /// failed.
    fn on_connection_ready(
        &mut self,
        index: usize,
        (readable, writable, closed): (bool, bool, bool),
        out: &mut Vec<Event>,
    ) {
        // An unknown token is a spurious event for a connection already closed this turn.
        let Some(conn) = self.connections.get_mut(index) else {
            return;
        };
        if let State::Connecting { peer } = conn.state {
            self.on_connect_ready(index, peer, out);
            return;
        }
        if readable {
            self.on_readable(index, closed, out);
        }
        if writable {
            self.flush_connection(index, out);
        }
    }

    /// Completes a non-blocking connect, following mio's `TcpStream::connect` recipe.
    fn on_connect_ready(&mut self, index: usize, peer: usize, out: &mut Vec<Event>) {
        let conn = self.connections.get_mut(index).expect("caller checked");
        match conn.stream.take_error() {
            Ok(None) => {}
            Ok(Some(error)) | Err(error) => {
                self.close(index, &format!("connect failed: {error}"), out);
                return;
            }
        }
        match conn.stream.peer_addr() {
            Ok(_) => {}
            // Not connected yet: a spurious wakeup; wait for the next writable event.
            Err(error) if error.kind() == io::ErrorKind::NotConnected => return,
            Err(error) => {
                self.close(index, &format!("connect failed: {error}"), out);
                return;
            }
        }
        conn.state = State::AwaitWelcome { peer };
        self.dialer.encode_hello(&mut conn.outbox);
        self.flush_connection(index, out);
    }

    fn read_pending(&mut self, out: &mut Vec<Event>) {
        let list = std::mem::take(&mut self.read_again);
        for (index, generation, closed) in list {
            if self.connections.generation(index) == Some(generation) {
                self.on_readable(index, closed, out);
            }
        }
    }

    /// Reads until `WouldBlock` or the read budget runs out, decoding frames as they complete;
    /// a plain socket stops at a short read unless `closed` (the remote side closed, or the
    /// socket failed: then it reads on to find the end).
    fn on_readable(&mut self, index: usize, closed: bool, out: &mut Vec<Event>) {
        let mut budget = READ_BUDGET_BYTES;
        loop {
            let Some(conn) = self.connections.get_mut(index) else {
                return;
            };
            let limit = frame_limit(conn.state, self.config.frame_bytes_max);
            let needed = match decode(&conn.inbox[conn.inbox_start..conn.inbox_end], limit) {
                Decoded::NeedMore { needed } => {
                    needed - (conn.inbox_end - conn.inbox_start).min(needed)
                }
                _ => 0,
            };
            conn.prepare_inbox(needed + (conn.inbox_end - conn.inbox_start));
            let room = conn.inbox.len() - conn.inbox_end;
            // A plain socket that filled less than the room it was offered has been drained:
            // the next byte to arrive raises a new readiness event (epoll(7) on edge-triggered
            // stream sockets), so reading on only to be told "would block" is a system call
            // wasted per wake-up, half of a busy leader's reads. TLS may hold decrypted bytes
            // back, so a TLS connection reads until it would block; so does a socket whose
            // remote side closed, whose end (a read of 0) raises no further event.
            let drained_if_short = conn.tls.is_none() && !closed;
            match conn.read_into_inbox() {
                Ok(0) => {
                    if conn.inbox_start == conn.inbox_end {
                        self.close(index, "closed by the remote side", out);
                    } else {
                        self.reject(
                            index,
                            "closed by the remote side in the middle of a frame (truncated frame)",
                            out,
                        );
                    }
                    return;
                }
                Ok(n) => {
                    conn.inbox_end += n;
                    if !self.process_inbox(index, out) {
                        return;
                    }
                    if drained_if_short && n < room {
                        return;
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        let generation = self.connections.generation(index).expect("still open");
                        self.read_again.push((index, generation, closed));
                        return;
                    }
                }
                Err(error) if would_block(&error) => {
                    if conn.tls.is_some() {
                        // Reading may have made TLS records to send (handshake answers), and
                        // a completed handshake releases the frames queued behind it.
                        self.flush_connection(index, out);
                    }
                    return;
                }
                Err(error) if interrupted(&error) => continue,
                Err(error) if error.kind() == io::ErrorKind::InvalidData => {
                    let reason = tls_failure(conn.state, &error);
                    self.reject(index, &reason, out);
                    return;
                }
                Err(error) => {
                    self.close(index, &format!("read failed: {error}"), out);
                    return;
                }
            }
        }
    }

    /// Decodes and dispatches every complete frame buffered on a connection. Returns false if
    /// the connection was closed.
    fn process_inbox(&mut self, index: usize, out: &mut Vec<Event>) -> bool {
        let Some(generation) = self.connections.generation(index) else {
            return false;
        };
        loop {
            let Some(conn) = self.connections.get_mut(index) else {
                return false;
            };
            let limit = frame_limit(conn.state, self.config.frame_bytes_max);
            let received = &conn.inbox[..conn.inbox_end];
            let (kind, body) = match take_frame(received, &mut conn.inbox_start, limit) {
                Decoded::NeedMore { .. } => return true,
                Decoded::Error(error) => {
                    let reason = if conn.tls.is_none() && looks_like_tls(conn) {
                        "bad frame: this looks like a TLS handshake, but this node runs without TLS \
                         (start it with --tls-cert, --tls-key and --tls-ca, or dial it without TLS)"
                            .to_string()
                    } else {
                        format!("bad frame: {error}")
                    };
                    self.reject(index, &reason, out);
                    return false;
                }
                Decoded::Frame { kind, body, .. } => (kind, body),
            };
            if let State::FromPeer { .. } | State::Client = conn.state {
                if !self.deliver_frames(index, generation, (kind, body), out) {
                    return false;
                }
                continue;
            }
            let body = &conn.inbox[body];
            match conn.state {
                State::FromPeer { .. } | State::Client => unreachable!("delivered above"),
                State::AwaitHello => {
                    let hello = Hello::decode(kind, body);
                    if !self.on_hello(index, hello, out) {
                        return false;
                    }
                }
                State::AwaitWelcome { peer } => {
                    let welcome = self.dialer.welcome(kind, body);
                    if !self.on_welcome(index, peer, welcome, out) {
                        return false;
                    }
                }
                State::ToPeer { peer } => {
                    let reason = format!(
                        "peer {} sent a frame on this node's outbound connection",
                        self.peers[peer].id
                    );
                    self.reject(index, &reason, out);
                    return false;
                }
                State::Connecting { .. } => unreachable!("no reads before the connect completes"),
            }
        }
    }
}

impl Transport {
    /// Delivers the data frame `first` (just taken from connection `index`'s inbox) and every
    /// complete frame buffered behind it, their bodies ranges of one allocation: a busy
    /// connection's frames arrive many to a read, and the receiver keeps parts of them (a
    /// write's command, an append's entries) until they are applied, so one allocation per
    /// read spares an allocation and a free per frame. A bad frame among them closes the
    /// connection after those before it are delivered, as if taken one by one. Returns false
    /// if the connection was closed.
    fn deliver_frames(
        &mut self,
        index: usize,
        generation: u64,
        first: (u8, Range<usize>),
        out: &mut Vec<Event>,
    ) -> bool {
        let conn = self.connections.get_mut(index).expect("open");
        let limit = frame_limit(conn.state, self.config.frame_bytes_max);
        let mut frames = std::mem::take(&mut self.frames_scratch);
        frames.push(first);
        let bad = loop {
            let received = &conn.inbox[..conn.inbox_end];
            match take_frame(received, &mut conn.inbox_start, limit) {
                Decoded::Frame { kind, body, .. } => frames.push((kind, body)),
                Decoded::NeedMore { .. } => break None,
                Decoded::Error(error) => break Some(error),
            }
        };
        let span = frames[0].1.start..frames[frames.len() - 1].1.end;
        let buf: Arc<[u8]> = Arc::from(&conn.inbox[span.clone()]);
        let state = conn.state;
        for (kind, body) in frames.drain(..) {
            let body = Body::new(
                Arc::clone(&buf),
                body.start - span.start..body.end - span.start,
            );
            match state {
                State::FromPeer { peer } => {
                    let peer = &mut self.peers[peer];
                    if self.faults.drops_inbound(peer.id) {
                        peer.stats.dropped_by_faults += 1;
                        continue;
                    }
                    peer.stats.frames_in += 1;
                    peer.stats.bytes_in += frame_bytes(body.len()) as u64;
                    out.push(Event::PeerFrame {
                        from: peer.id,
                        kind,
                        body,
                    });
                }
                _ => out.push(Event::ClientFrame {
                    client: ClientId::new(index, generation),
                    kind,
                    body,
                }),
            }
        }
        self.frames_scratch = frames;
        match bad {
            None => true,
            Some(error) => {
                self.reject(index, &format!("bad frame: {error}"), out);
                false
            }
        }
    }
}

impl Transport {
    /// Judges a hello and answers it with a welcome. Returns false if the connection was closed.
    fn on_hello(
        &mut self,
        index: usize,
        hello: Result<Hello, crate::codec::HandshakeError>,
        out: &mut Vec<Event>,
    ) -> bool {
        let me = self.config.node_id;
        let remote = self.connections.get(index).expect("open").remote;
        let hello = match hello {
            Ok(hello) => hello,
            Err(error) => {
                self.reject(index, &format!("bad handshake: {error}"), out);
                return false;
            }
        };
        // A joining node meets nodes it does not know: it takes them as peers at the address
        // their hello gives, once the hello passes every other check.
        let learnable = match hello.role {
            Role::Node(id) => self.learnable_peer(id, &hello.address),
            Role::Client => None,
        };
        let token = self.config.token.as_deref().unwrap_or_default();
        let peers = &self.peers;
        let mut status = judge_hello(&hello, self.config.cluster_id.as_bytes(), token, |id| {
            id != me && (peers.iter().any(|p| p.id == id) || learnable.is_some())
        });
        let mut rights = ClientRights::Admin;
        if status == Status::Accepted {
            match self.judge_certificate(index, hello.role, learnable) {
                Ok(judged) => rights = judged,
                Err(reason) => {
                    warn!(
                        "node {me}: refused connection from {remote} ({:?}): TLS: {reason}",
                        hello.role
                    );
                    status = Status::Certificate;
                }
            }
        }
        if let (Status::Accepted, Role::Node(id), Some(addr)) = (status, hello.role, learnable) {
            self.set_peer(id, addr);
        }
        let peer_index = match hello.role {
            Role::Node(id) => self.peer_index(id),
            Role::Client => None,
        };
        let conn = self.connections.get_mut(index).expect("open");
        conn.rights = rights;
        Welcome {
            version: PROTOCOL_VERSION,
            status,
            node_id: me,
        }
        .encode_frame(&mut conn.outbox);
        if status != Status::Accepted {
            // The refusal is a few bytes on a fresh socket, so one write attempt suffices; the
            // connection closes whether or not it got through.
            let pending = conn.outbox[conn.outbox_start..].to_vec();
            let _ = conn.write(&pending);
            warn!(
                "node {me}: refused connection from {remote} ({:?}, version {}, cluster {:?}): {status} \
                 (this node: version {PROTOCOL_VERSION}, cluster {:?})",
                hello.role,
                hello.version,
                String::from_utf8_lossy(&hello.cluster_id),
                self.config.cluster_id,
            );
            self.connections_rejected += 1;
            self.close(index, "handshake refused", out);
            return false;
        }
        match hello.role {
            Role::Node(id) => {
                let peer = peer_index.expect("judged to be a peer");
                conn.state = State::FromPeer { peer };
                self.peers[peer].stats.inbound_connections += 1;
                info!("node {me}: accepted connection from peer {id} at {remote}");
            }
            Role::Client => {
                conn.state = State::Client;
                self.clients += 1;
                debug!(
                    "node {me}: accepted client {} at {remote}",
                    ClientId::new(index, self.connections.generation(index).expect("open"))
                );
            }
        }
        self.flush_connection(index, out);
        self.connections.get(index).is_some()
    }

    /// With TLS, checks the certificate a connection presented against the role its hello
    /// claims (see [`NodeTls::check_node`] and [`NodeTls::check_client`]): a node's must name
    /// the host the configuration gives its id (for a joining node, the address its hello
    /// carries). Without TLS, every client has every right.
    fn judge_certificate(
        &self,
        index: usize,
        role: Role,
        learnable: Option<SocketAddr>,
    ) -> Result<ClientRights, String> {
        let (Some(tls), Some(session)) = (
            self.config.tls.as_ref(),
            self.connections.get(index).and_then(|c| c.tls.as_deref()),
        ) else {
            return Ok(ClientRights::Admin);
        };
        match role {
            Role::Node(id) => {
                let host = match (learnable, self.peer_index(id)) {
                    (Some(addr), _) => addr.ip().to_string(),
                    (None, Some(peer)) => self.peers[peer].host.clone(),
                    (None, None) => return Err(format!("node {id} is no peer")),
                };
                tls.check_node(session, &host)
                    .map(|()| ClientRights::Admin)
                    .map_err(|e| format!("node {id}: {e}"))
            }
            Role::Client => tls.check_client(session),
        }
    }

    /// Handles the welcome answering this node's hello. Returns false if the connection closed.
    fn on_welcome(
        &mut self,
        index: usize,
        peer_index: usize,
        welcome: Result<Welcome, DialError>,
        out: &mut Vec<Event>,
    ) -> bool {
        let me = self.config.node_id;
        let peer = &mut self.peers[peer_index];
        let refusal = match welcome {
            Err(DialError::Refused(w)) => Some(format!(
                "refused by the remote side: {} (this node: version {PROTOCOL_VERSION}, cluster {:?}; remote version {})",
                w.status, self.config.cluster_id, w.version
            )),
            Err(error) => Some(format!("bad handshake answer: {error}")),
            Ok(w) if w.node_id != peer.id => {
                Some(format!("the node at {} is node {}, not node {}", peer.addr, w.node_id, peer.id))
            }
            Ok(_) => None,
        };
        if let Some(reason) = refusal {
            // Being refused is a configuration problem, not a transient one: wait the longest
            // backoff before asking again.
            error!(
                "node {me}: connection to peer {} at {}: {reason}",
                peer.id, peer.addr
            );
            peer.stats.refusals += 1;
            peer.backoff = self.config.reconnect_backoff_max;
            self.close(index, &reason, out);
            return false;
        }
        let conn = self.connections.get_mut(index).expect("open");
        conn.state = State::ToPeer { peer: peer_index };
        if peer.ever_up {
            peer.stats.reconnects += 1;
        }
        peer.ever_up = true;
        peer.up = true;
        peer.stats.connected = true;
        peer.backoff = self.config.reconnect_backoff_min;
        info!("node {me}: connected to peer {} at {}", peer.id, peer.addr);
        out.push(Event::PeerUp(peer.id));
        true
    }

    /// Closes a connection for bad input, counting and logging it.
    fn reject(&mut self, index: usize, reason: &str, out: &mut Vec<Event>) {
        if let Some(conn) = self.connections.get(index) {
            warn!(
                "node {}: closing connection with {}: {reason}",
                self.config.node_id, conn.remote
            );
            self.connections_rejected += 1;
        }
        self.close(index, reason, out);
    }

    /// Removes a connection and updates whatever depended on it.
    fn close(&mut self, index: usize, reason: &str, out: &mut Vec<Event>) {
        let me = self.config.node_id;
        let generation = self.connections.generation(index);
        let Some(mut conn) = self.connections.remove(index) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut conn.stream);
        if let Some(tls) = &mut conn.tls {
            tls.close(&mut conn.stream);
        }
        match conn.state {
            State::Connecting { peer } | State::AwaitWelcome { peer } | State::ToPeer { peer } => {
                let p = &mut self.peers[peer];
                p.outbound = None;
                if p.up {
                    p.up = false;
                    p.stats.connected = false;
                    info!("node {me}: lost peer {} at {}: {reason}", p.id, p.addr);
                    out.push(Event::PeerDown(p.id));
                } else {
                    debug!(
                        "node {me}: connection to peer {} at {} failed: {reason}",
                        p.id, p.addr
                    );
                }
                self.schedule_redial(peer, Instant::now());
            }
            State::FromPeer { peer } => {
                let p = &mut self.peers[peer];
                p.stats.inbound_connections -= 1;
                info!(
                    "node {me}: inbound connection from peer {} closed: {reason}",
                    p.id
                );
            }
            State::Client => {
                self.clients -= 1;
                let client = ClientId::new(index, generation.expect("was open"));
                debug!("node {me}: {client} at {} closed: {reason}", conn.remote);
                out.push(Event::ClientClosed(client));
            }
            State::AwaitHello => debug!(
                "node {me}: connection from {} closed: {reason}",
                conn.remote
            ),
        }
    }

    fn flush_all(&mut self, out: &mut Vec<Event>) {
        let mut list = std::mem::take(&mut self.flush_list);
        for &index in &list {
            if let Some(conn) = self.connections.get_mut(index) {
                conn.flush_queued = false;
                self.flush_connection(index, out);
            }
        }
        list.clear();
        if self.flush_list.is_empty() {
            self.flush_list = list;
        }
    }

    /// Writes as much of the outbox as the socket takes (normally in one `write`), then asks for
    /// writable events only if bytes remain.
    fn flush_connection(&mut self, index: usize, out: &mut Vec<Event>) {
        let Some(conn) = self.connections.get_mut(index) else {
            return;
        };
        if matches!(conn.state, State::Connecting { .. }) {
            return;
        }
        while conn.outbox_start < conn.outbox.len() {
            match conn.write_from_outbox() {
                Ok(0) => {
                    self.close(index, "write accepted no bytes", out);
                    return;
                }
                Ok(n) => conn.outbox_start += n,
                Err(error) if would_block(&error) => break,
                Err(error) if interrupted(&error) => continue,
                Err(error) => {
                    self.close(index, &format!("write failed: {error}"), out);
                    return;
                }
            }
        }
        if let Some(tls) = &mut conn.tls {
            match tls.push(&mut conn.stream) {
                Ok(()) => {}
                Err(error) if would_block(&error) => {}
                Err(error) => {
                    self.close(index, &format!("write failed: {error}"), out);
                    return;
                }
            }
        }
        if conn.outbox_start == conn.outbox.len() {
            conn.outbox.clear();
            conn.outbox_start = 0;
            if conn.outbox.capacity() > OUTBOX_KEEP_BYTES {
                conn.outbox.shrink_to(OUTBOX_KEEP_BYTES);
            }
        } else if conn.outbox_start >= conn.outbox.len() / 2 {
            // Compacting only once half is sent keeps the copying amortised O(1) per byte.
            conn.outbox.drain(..conn.outbox_start);
            conn.outbox_start = 0;
        }
        let want_writable = conn.outbox_pending() > 0 || conn.tls_wants_write();
        if want_writable != conn.writable_interest {
            let interest = if want_writable {
                Interest::READABLE | Interest::WRITABLE
            } else {
                Interest::READABLE
            };
            if let Err(error) =
                self.poll
                    .registry()
                    .reregister(&mut conn.stream, token_of(index), interest)
            {
                self.close(index, &format!("cannot change interest: {error}"), out);
                return;
            }
            conn.writable_interest = want_writable;
        }
    }
}
