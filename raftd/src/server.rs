//! The daemon's event loop: one thread, one `mio` poll (inside the transport), driving one
//! [`Replica`] with the wall clock, the real network and the real file system.
//!
//! Each turn: poll the transport until the next tick is due; hand peer and client frames
//! to the replica; then let it run its turn (ticks, and every `Ready` of the core with one
//! WAL sync per batch; see [`crate::replica`]). Everything the daemon decides lives in the
//! replica, which the simulator in `tests/` drives the same way with virtual time, a
//! simulated network and a file system that loses unsynced writes on a power cut.

use crate::kv::HashKeys;
use crate::metrics::PeerFigures;
use crate::metrics_http::Exporter;
use crate::notify::Notifier;
use crate::protocol::FaultSpec;
use crate::replica::{Env, Replica, StopRequest};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use transport::tls::{NodeTls, TlsFiles};
use transport::{ClientId, Event, Faults, Transport, TransportConfig};
use wal::WalOptions;

/// Milliseconds per core tick.
pub const TICK_MS: u64 = 10;

/// `ServerConfig::sync_later_min_entries` of the daemon. With 1 client a batch is one
/// entry, and the two hand-offs (to the sync thread and back through the loop's waker) on
/// the leader and a follower added about 0.1 ms to its 0.35 ms; with 16 and 256 clients the
/// loop's work during the wait raised throughput (`tests/bench/compare.sh`, alternating).
pub const SYNC_LATER_MIN_ENTRIES: usize = 8;

/// Everything the daemon is started with (validated by the command line).
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// This node's id.
    pub id: u64,
    /// Every member's id and address, this node included.
    pub peers: Vec<(u64, SocketAddr)>,
    /// Host names `--peers` gave instead of IP addresses (TLS checks certificates by them).
    pub peer_hosts: Vec<(u64, String)>,
    /// TLS on every connection (`--tls-*`); `None`: plaintext.
    pub tls: Option<TlsFiles>,
    /// Where to listen (defaults to this node's address in `peers`).
    pub listen: SocketAddr,
    /// Data directory (the WAL lives in `wal/` under it).
    pub data_dir: PathBuf,
    /// Cluster name; peers and clients from another cluster are refused.
    pub cluster_id: String,
    /// Shared secret required of peers and clients.
    pub token: Option<Vec<u8>>,
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// Base election timeout (randomized up to twice this).
    pub election_ms: u64,
    /// Take a snapshot after this many applied entries.
    pub snapshot_entries: u64,
    /// Applied entries kept in memory for lagging followers.
    pub log_memory_entries: u64,
    /// And of those, no more than this many bytes of entry data: older applied entries
    /// leave memory once either bound is passed.
    pub log_memory_bytes: u64,
    /// Or when the WAL grows past this many bytes since the last snapshot.
    pub snapshot_wal_bytes: u64,
    /// Batches of at least this many entries wait for the disk on a thread while the loop
    /// goes on; smaller ones are synced in the loop (the hand-off to the thread and back
    /// costs a light load more latency than it saves).
    pub sync_later_min_entries: usize,
    /// Either only once the log appended since the last snapshot is at least this many
    /// times that snapshot's size (0: no such condition), so that rewriting a large store
    /// costs at most 1/ratio of the bytes written to the log.
    pub snapshot_ratio: u64,
    /// Size of each preallocated WAL segment.
    pub wal_segment_bytes: u64,
    /// How the WAL writes appends into its mapped segments (`pwrite` + fdatasync, or msync).
    pub wal_write: wal::WriteMode,
    /// The leader proposes a checkpoint (a consistency check) this often; 0: never.
    pub consistency_check_secs: u64,
    /// The scrubber re-reads the WAL's files at this many bytes per second; 0: off.
    pub scrub_bytes_per_sec: u64,
    /// Joining an existing cluster: `peers` holds only this node, which is no voter of its
    /// first configuration (it learns the real one from the leader).
    pub join: bool,
    /// Accept `raftctl fault` and `raftctl kill --crash` (`--enable-fault-injection`);
    /// refused with [`crate::replica::FAULT_INJECTION_OFF`] otherwise.
    pub fault_injection: bool,
}

/// The identity file in a data directory (see `check_identity`).
pub const IDENTITY_FILE: &str = "raftd.id";
/// Present in a data directory while `raftctl snapshot restore` builds it: a node refuses to
/// start there (the restore was interrupted).
pub const RESTORE_MARKER_FILE: &str = "RESTORING";

/// The identity file's contents for node `id` of cluster `cluster_id`.
pub fn identity_text(cluster_id: &str, id: u64) -> String {
    format!("cluster={cluster_id}\nnode={id}\n")
}

/// Checks (or creates) the identity file that ties a data directory to one cluster and one
/// node, so a directory copied from elsewhere is refused instead of silently reused. A
/// directory an interrupted restore left is refused too.
fn check_identity(dir: &Path, cluster_id: &str, id: u64) -> Result<(), String> {
    if dir.join(RESTORE_MARKER_FILE).exists() {
        return Err(format!(
            "data directory {} holds an interrupted restore ({RESTORE_MARKER_FILE}); empty it and run raftctl snapshot restore again",
            dir.display()
        ));
    }
    let path = dir.join(IDENTITY_FILE);
    let want = identity_text(cluster_id, id);
    match std::fs::read_to_string(&path) {
        Ok(have) if have == want => Ok(()),
        Ok(have) => {
            let field = |k: &str| {
                have.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .unwrap_or("?")
                    .to_string()
            };
            Err(format!(
                "data directory {} belongs to cluster '{}' node {}, not cluster '{cluster_id}' node {id}; use another --data-dir",
                dir.display(),
                field("cluster="),
                field("node=")
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, want)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(())
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// The production host: the mio transport and the wall clock.
pub struct Live {
    transport: Transport,
    epoch: Instant,
    /// The WAL sync thread, started at the first `sync_later`.
    syncer: Option<Syncer>,
}

/// The thread that waits for the disk while the loop goes on (`Wal::persist_start`): one
/// wait at a time, its outcome and duration sent back, the loop woken.
struct Syncer {
    waits: std::sync::mpsc::Sender<wal::SyncWait>,
    done: std::sync::mpsc::Receiver<(std::io::Result<()>, Duration)>,
}

impl Syncer {
    fn spawn(wake: Box<dyn Fn() + Send>) -> std::io::Result<Syncer> {
        let (waits, todo) = std::sync::mpsc::channel::<wal::SyncWait>();
        let (report, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("wal-sync".into())
            .spawn(move || {
                // Ends when the loop's sender is dropped.
                for wait in todo {
                    let started = Instant::now();
                    let result = wait.wait();
                    if report.send((result, started.elapsed())).is_err() {
                        return;
                    }
                    wake();
                }
            })?;
        Ok(Syncer { waits, done })
    }
}

impl Env for Live {
    type Client = ClientId;

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    fn send_peer(&mut self, to: u64, kind: u8, encode: impl FnOnce(&mut Vec<u8>)) {
        // Losing a message is within Raft's model; the transport counts drops.
        let _ = self.transport.send_peer_encoded(to, kind, encode);
    }

    fn send_client(&mut self, client: ClientId, kind: u8, body: &[u8]) {
        // A client that went away is no error of ours.
        let _ = self.transport.send_client(client, kind, body);
    }

    fn flush(&mut self) {
        self.transport.flush();
    }

    fn set_faults(&mut self, spec: &FaultSpec) {
        self.transport.set_faults(Faults {
            drop_percent: spec.drop_percent,
            delay_ms: spec.delay_ms,
            partition: spec.partition.iter().copied().collect(),
            direction: transport::Direction::Both,
        });
    }

    fn set_peers(&mut self, peers: &[(u64, SocketAddr)], accept_unknown_nodes: bool) {
        for &(id, addr) in peers {
            self.transport.set_peer(id, addr);
        }
        self.transport
            .set_accept_unknown_nodes(accept_unknown_nodes);
    }

    fn link_status(&self) -> serde_json::Value {
        let peers: serde_json::Map<String, serde_json::Value> = self
            .transport
            .stats()
            .peers
            .iter()
            .map(|p| {
                let link = serde_json::json!({
                    "connected": p.connected,
                    "frames_out": p.frames_out,
                    "frames_in": p.frames_in,
                    "bytes_out": p.bytes_out,
                    "bytes_in": p.bytes_in,
                    "dropped": p.dropped_outbox_full + p.dropped_not_connected + p.dropped_by_faults,
                    "reconnects": p.reconnects,
                });
                (p.id.to_string(), link)
            })
            .collect();
        let faults = self.transport.faults();
        serde_json::json!({
            "peers": peers,
            "faults": {
                "drop_percent": faults.drop_percent,
                "delay_ms": faults.delay_ms,
                "partition": faults.partition.iter().collect::<Vec<_>>(),
            },
        })
    }

    fn client_is_admin(&self, client: ClientId) -> bool {
        self.transport.client_is_admin(client)
    }

    fn waker(&self) -> Option<Box<dyn Fn() + Send>> {
        let waker = self.transport.waker();
        Some(Box::new(move || {
            let _ = waker.wake();
        }))
    }

    fn sync_later(&mut self, wait: wal::SyncWait) -> Result<(), wal::SyncWait> {
        if self.syncer.is_none() {
            match Syncer::spawn(self.waker().expect("a live host has a waker")) {
                Ok(syncer) => self.syncer = Some(syncer),
                Err(e) => {
                    log::warn!("cannot start the WAL sync thread ({e}); syncing in the loop");
                    return Err(wait);
                }
            }
        }
        let syncer = self.syncer.as_ref().expect("started above");
        syncer.waits.send(wait).map_err(|e| e.0)
    }

    fn sync_done(&mut self, block: bool) -> Option<(std::io::Result<()>, Duration)> {
        use std::sync::mpsc::TryRecvError;
        let syncer = self.syncer.as_ref()?;
        let gone = || std::io::Error::other("the WAL sync thread is gone");
        match block {
            true => Some(syncer.done.recv().unwrap_or((Err(gone()), Duration::ZERO))),
            false => match syncer.done.try_recv() {
                Ok(done) => Some(done),
                Err(TryRecvError::Empty) => None,
                Err(TryRecvError::Disconnected) => Some((Err(gone()), Duration::ZERO)),
            },
        }
    }
}

/// The running daemon.
pub struct Server {
    replica: Replica<Live>,
    stop: Arc<AtomicBool>,
    /// Set (by SIGHUP) to reload the TLS files.
    reload: Arc<AtomicBool>,
    /// `/metrics` and `/health`, with `--metrics-listen`.
    exporter: Option<Exporter>,
}

impl Server {
    /// Opens the data directory, recovers, binds the listener. Errors are one clear line.
    pub fn open(config: ServerConfig, stop: Arc<AtomicBool>) -> Result<Server, String> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create data directory {}: {e}", dir.display()))?;
        check_identity(dir, &config.cluster_id, config.id)?;
        let wal_dir = dir.join("wal");
        std::fs::create_dir_all(&wal_dir)
            .map_err(|e| format!("cannot create {}: {e}", wal_dir.display()))?;
        let options = WalOptions {
            // Damage that is no torn tail is cut away and the node repairs itself from the
            // cluster, voting in no election until then (see `raft::Restore::repairing`).
            repair: true,
            segment_bytes: config.wal_segment_bytes,
            backend: std::sync::Arc::new(wal::StdBackend::new(config.wal_write)),
            ..WalOptions::default()
        };
        let mut tc = TransportConfig::new(config.id, config.cluster_id.clone(), config.listen);
        tc.peers = config.peers.clone();
        tc.token = config.token.clone();
        if let Some(&(_, own)) = config.peers.iter().find(|p| p.0 == config.id) {
            tc.advertise = own.to_string();
        }
        tc.accept_unknown_nodes = config.join;
        tc.peer_hosts = config.peer_hosts.clone();
        if let Some(files) = &config.tls {
            tc.tls = Some(Arc::new(NodeTls::load(files)?));
        }
        let transport =
            Transport::new(tc).map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let live = Live {
            syncer: None,
            transport,
            epoch: Instant::now(),
        };
        // Random hash keys: no client can choose keys that collide in the store.
        let keys = HashKeys::random();
        let replica = Replica::open(config, &wal_dir, options, rand::random(), keys, live)?;
        Ok(Server {
            replica,
            stop,
            reload: Arc::new(AtomicBool::new(false)),
            exporter: None,
        })
    }

    /// Serves `/metrics` and `/health` on `listener` (`--metrics-listen`, bound with
    /// [`crate::metrics_http::bind`]) from a thread of their own (see
    /// [`crate::metrics_http`]). Returns the address.
    pub fn serve_metrics(&mut self, listener: std::net::TcpListener) -> Result<SocketAddr, String> {
        let waker = self.replica.env().transport.waker();
        let exporter = Exporter::start(
            listener,
            Box::new(move || {
                let _ = waker.wake();
            }),
        )?;
        let bound = exporter.local_addr();
        self.exporter = Some(exporter);
        Ok(bound)
    }

    /// Hands a waiting scrape the figures of now: the replica's and the transport's.
    fn publish_metrics(&self) {
        let Some(exporter) = self.exporter.as_ref().filter(|e| e.wanted()) else {
            return;
        };
        let mut figures = self.replica.figures();
        let stats = self.replica.env().transport.stats();
        figures.clients = stats.clients as u64;
        figures.connections_rejected = stats.connections_rejected;
        figures.client_frames_dropped = stats.client_frames_dropped;
        figures.peers = stats
            .peers
            .iter()
            .map(|p| PeerFigures {
                id: p.id,
                connected: p.connected,
                sent_bytes: p.bytes_out,
                sent_frames: p.frames_out,
                received_bytes: p.bytes_in,
                received_frames: p.frames_in,
                dropped_frames: [
                    p.dropped_outbox_full,
                    p.dropped_not_connected,
                    p.dropped_by_faults,
                ],
                reconnects: p.reconnects,
            })
            .collect();
        exporter.publish(figures);
    }

    /// The flag that makes the loop reload the TLS certificates and keys (SIGHUP sets it).
    pub fn reload_flag(&self) -> Arc<AtomicBool> {
        self.reload.clone()
    }

    /// Reads the TLS files again; connections made from now on use them. A file that does
    /// not load is logged and the settings in use are kept.
    fn reload_tls(&mut self) {
        let id = self.replica.config().id;
        let Some(files) = self.replica.config().tls.clone() else {
            log::info!("node {id}: SIGHUP: no TLS configured, nothing to reload");
            return;
        };
        match NodeTls::load(&files) {
            Ok(tls) => {
                if let Err(e) = self.replica.env_mut().transport.set_tls(Arc::new(tls)) {
                    log::error!("node {id}: TLS reload: {e}");
                }
            }
            Err(e) => {
                log::error!("node {id}: TLS reload failed, keeping the certificates in use: {e}")
            }
        }
    }

    /// Test only: the next put this node applies gets a changed value (see
    /// [`Replica::corrupt_one_put`]).
    #[cfg(feature = "test-faults")]
    pub fn corrupt_one_put(&mut self) {
        self.replica.corrupt_one_put();
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.replica.env().transport.local_addr()
    }

    /// Runs until SIGTERM/SIGINT or a shutdown request; then flushes and returns.
    pub fn run(&mut self) -> Result<(), String> {
        let config = self.replica.config();
        log::info!(
            "node {} listening on {} (cluster '{}', {} members)",
            config.id,
            self.local_addr(),
            config.cluster_id,
            config.peers.len()
        );
        // Recovery is done and the listener is bound: the node serves.
        let mut notifier = Notifier::from_env();
        notifier.ready(self.status_line());
        let mut shown = self.status_key();
        let mut events = Vec::with_capacity(1024);
        while !self.stop.load(Ordering::Relaxed) {
            if self.reload.swap(false, Ordering::Relaxed) {
                self.reload_tls();
            }
            let timeout = self
                .replica
                .next_deadline()
                .saturating_sub(self.replica.env().now());
            let live = self.replica.env_mut();
            events.clear();
            live.transport
                .poll(Some(timeout), &mut events)
                .map_err(|e| format!("poll failed: {e}"))?;
            for event in events.drain(..) {
                self.handle_event(event)?;
            }
            match self.replica.stop_requested() {
                Some(StopRequest::Crash) => {
                    log::warn!(
                        "node {}: crash requested, aborting now",
                        self.replica.config().id
                    );
                    std::process::abort();
                }
                Some(StopRequest::Graceful) => break,
                None => {}
            }
            self.replica.turn()?;
            self.publish_metrics();
            // From the loop itself, so that a wedged loop stops the pings.
            notifier.watchdog();
            let now_shown = self.status_key();
            if now_shown != shown {
                shown = now_shown;
                notifier.status(self.status_line());
            }
        }
        notifier.stopping();
        self.shutdown();
        Ok(())
    }

    /// What systemd's STATUS= shows: compared every turn, formatted only when it changes.
    fn status_key(&self) -> (raft::RoleKind, raft::Term, raft::NodeId) {
        let raw = self.replica.raw();
        (raw.role(), raw.term(), raw.leader())
    }

    /// The node's role, term and leader, for systemd's STATUS=.
    fn status_line(&self) -> String {
        let raw = self.replica.raw();
        format!(
            "node {}: {} in term {}, leader {}",
            self.replica.config().id,
            raw.role(),
            raw.term(),
            match raw.leader().0 {
                0 => "unknown".to_string(),
                id => id.to_string(),
            }
        )
    }

    fn handle_event(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::PeerFrame { from, kind, body } => {
                self.replica.on_peer_frame(from, kind, shared(body))
            }
            Event::ClientFrame { client, kind, body } => {
                self.replica.on_client_frame(client, kind, shared(body))?
            }
            Event::ClientClosed(_) | Event::Woken => {}
            Event::PeerUp(id) => {
                log::info!("node {}: connected to peer {id}", self.replica.config().id)
            }
            Event::PeerDown(id) => self.replica.on_peer_down(id),
        }
        Ok(())
    }

    fn shutdown(&mut self) {
        let id = self.replica.config().id;
        log::info!("node {id}: stopping");
        self.replica.close();
        // Everything acknowledged is already durable; let queued frames leave.
        let transport = &mut self.replica.env_mut().transport;
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut events = Vec::new();
        while transport.pending_bytes() > 0 && Instant::now() < deadline {
            events.clear();
            let _ = transport.poll(Some(Duration::from_millis(10)), &mut events);
        }
        log::info!("node {id}: stopped");
    }
}

/// A received frame's body as the core keeps entries: the same bytes, no copy.
fn shared(body: transport::Body) -> raft::SharedBytes {
    let (buf, range) = body.into_parts();
    raft::SharedBytes::from_parts(buf, range)
}
