//! The daemon's command line, and its validation into a [`ServerConfig`]; also the
//! command-line parsing that `raftd` and `raftctl` share ([`parse_command_line`]).

use crate::server::{Server, ServerConfig, TICK_MS};
use clap::Parser;
use std::collections::BTreeSet;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use transport::tls::{NodeTls, TlsFiles};

/// Exit code of a usage or configuration error, for `raftd` and `raftctl` alike: nothing was
/// done. (clap's own is 2, which `raftctl` reserves for "certainly not applied".)
pub const EXIT_USAGE: u8 = 1;

/// Parses this process's arguments into `P`. On a usage error, and on `--help` or
/// `--version`, prints clap's text as clap wrote it and returns the code to exit with:
/// [`EXIT_USAGE`] for an error, 0 for help and version.
pub fn parse_command_line<P: Parser>() -> Result<P, ExitCode> {
    P::try_parse().map_err(|e| {
        // Help and version go to stdout, errors to stderr; a closed stream is no reason to
        // say more.
        let _ = e.print();
        if e.exit_code() == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(EXIT_USAGE)
        }
    })
}

/// raftd: one member of a Raft-replicated key-value store.
///
/// Start one raftd per host with the same --peers list everywhere. The nodes elect a leader,
/// which acknowledges a write once it is on disk (fsync) on a majority; any node serves
/// linearizable reads. Clients (raftctl) and peers share the one port. Logs go to stderr
/// (RUST_LOG=debug for more). SIGTERM or SIGINT stops the node cleanly.
///
/// Exit codes: 0 stopped cleanly; 1 usage or configuration error (one line says what to fix),
/// or a fatal error while running (disk or network, said on stderr and in the log).
#[derive(Parser, Debug)]
#[command(name = "raftd", version)]
pub struct Args {
    /// This node's id: a positive integer listed in --peers.
    #[arg(long)]
    pub id: u64,

    /// Every member as ID=HOST:PORT, comma-separated, this node included; the same list on
    /// every node. Example: 1=10.0.0.1:7001,2=10.0.0.2:7001,3=10.0.0.3:7001. Only the first
    /// configuration of a brand-new cluster: once membership changed, each node takes its
    /// configuration (members and addresses) from its data directory.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "join",
        conflicts_with = "join"
    )]
    pub peers: Vec<String>,

    /// Join an existing cluster instead of founding one (needs --listen, excludes --peers):
    /// the node starts empty, never campaigns, and waits for the leader to reach it once an
    /// operator ran `raftctl member add ID ADDRESS`; it learns the members from the log.
    #[arg(long)]
    pub join: bool,

    /// Directory for the write-ahead log, snapshots and the node's identity file. Created if
    /// missing; refused if it belongs to another cluster or node.
    #[arg(long)]
    pub data_dir: PathBuf,

    /// Address to listen on [default: this node's address from --peers]. Use 0.0.0.0:PORT to
    /// listen on every interface.
    #[arg(long)]
    pub listen: Option<String>,

    /// Cluster name. Peers and clients presenting another name are refused.
    #[arg(long, default_value = "raftd")]
    pub cluster_id: String,

    /// File holding a shared secret that peers and clients must present.
    #[arg(long)]
    pub token_file: Option<PathBuf>,

    /// Leader heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 100)]
    pub heartbeat_ms: u64,

    /// Election timeout in milliseconds (randomized between this and twice this).
    #[arg(long, default_value_t = 1000)]
    pub election_ms: u64,

    /// Snapshot the store to disk and compact the write-ahead log every this many applied
    /// entries.
    #[arg(long, default_value_t = 200_000)]
    pub snapshot_entries: u64,

    /// Keep at most this many applied entries in memory for followers that fall behind;
    /// older ones stay on disk until the next snapshot, and a follower that needs them gets
    /// them read back from the write-ahead log (or the snapshot, if they are older still).
    #[arg(long, default_value_t = 25_000)]
    pub log_memory_entries: u64,

    /// Keep at most this many MiB of applied entries' data in memory, too (counting the
    /// receive buffer an entry's bytes are kept in): whichever of this and
    /// --log-memory-entries is reached first sends older entries to the disk-only part of
    /// the log (25,000 entries of 64 KiB would be 1.6 GB).
    #[arg(long, default_value_t = 64)]
    pub log_memory_mib: u64,

    /// Also snapshot when the write-ahead log has grown by this many MiB since the last one.
    #[arg(long, default_value_t = 256)]
    pub snapshot_wal_mib: u64,

    /// Snapshot (by --snapshot-entries or --snapshot-wal-mib) only once the log written
    /// since the last snapshot is at least this many times that snapshot's size: a large
    /// store is then rewritten for at most 1 byte in this many written to the log, at the
    /// price of a longer log to replay at restart (in proportion to the store, as loading
    /// the snapshot is). 0: snapshot by entries and WAL growth alone.
    #[arg(long, default_value_t = 4)]
    pub snapshot_ratio: u64,

    /// Size of each preallocated write-ahead log segment, in MiB.
    #[arg(long, default_value_t = 64)]
    pub wal_segment_mib: u64,

    /// How appends reach the write-ahead log's memory-mapped segments: `pwrite` encodes each
    /// batch in memory, copies it into the file and makes it durable with fdatasync; `mmap`
    /// writes through a shared map and makes it durable with msync. Both read through the
    /// map and recover the same way; a data directory written one way opens the other way.
    #[arg(long, value_name = "pwrite|mmap", default_value = "pwrite")]
    pub wal_write: wal::WriteMode,

    /// While leader, check every this many seconds that every node's key-value store is
    /// the same: a checkpoint goes through the log, every node hashes its store right after
    /// applying it and sends the hash to the others; a difference raises an alarm (in the
    /// log and in `raftctl status`). 0 turns the periodic check off (`raftctl check
    /// consistency` still works).
    #[arg(long, default_value_t = 300)]
    pub consistency_check_secs: u64,

    /// Re-read the write-ahead log's segments and snapshot file in the background at this
    /// many KiB per second, checking every CRC, so that bit rot is found and mended (from
    /// memory and the store, by a snapshot) while the cluster still holds good copies.
    /// While the node writes faster than this, the scrubber reads a quarter of it (what
    /// such a node holds on disk is young, and the writes come first). 0 turns the scrubber
    /// off.
    #[arg(long, default_value_t = 4096)]
    pub scrub_kib_per_sec: u64,

    /// Accept the test tools that break a node on purpose: `raftctl fault` (drop, delay or
    /// cut its peer traffic) and `raftctl kill --crash` (abort at once, like kill -9). Off
    /// unless given: without it the node refuses both ("fault injection is off") and raftctl
    /// exits 2. For test clusters only (`raftctl local` and the test suites turn it on).
    #[arg(long)]
    pub enable_fault_injection: bool,

    /// Serve Prometheus metrics at http://HOST:PORT/metrics and a health check at /health
    /// (200 {"health":true} when the node knows a leader and has applied what it
    /// committed, within 5000 entries; 503 with the reason otherwise). Off unless given.
    /// Example: 127.0.0.1:9101, or 0.0.0.0:9101 for every interface.
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_listen: Option<String>,

    /// TLS: this node's certificate (PEM), presented to peers and clients. Needs --tls-key
    /// and --tls-ca. It must name (IP or DNS subject alternative name) the host that
    /// --peers (or the cluster's configuration) gives this node. SIGHUP reloads the files.
    #[arg(long, value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,

    /// TLS: the private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// TLS: the CA (PEM) that signs every node's certificate; peers verify each other with
    /// it in both directions (mutual TLS), and clients verify the nodes with it.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_ca: Option<PathBuf>,

    /// TLS: clients must present a certificate signed by this CA (PEM); without it, clients
    /// need only trust the nodes' CA. With it, admin operations (kill, snapshot, backup,
    /// transfer-leader, member changes, faults) need a certificate named by --admin-cn.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// A client certificate common name allowed admin operations (repeatable). Needs
    /// --tls-client-ca.
    #[arg(long, value_name = "NAME", requires = "tls_client_ca")]
    pub admin_cn: Vec<String>,

    /// Gone: a damaged write-ahead log is repaired by itself (see the README). Accepted
    /// only to say so clearly.
    #[arg(long, hide = true)]
    pub repair_wal: bool,
}

/// The host part of `HOST:PORT` when it is a name rather than an IP address (TLS checks a
/// peer's certificate against it).
pub fn host_name(host_port: &str) -> Option<String> {
    let (host, _) = host_port.trim().rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (host.parse::<std::net::IpAddr>().is_err() && !host.is_empty()).then(|| host.to_string())
}

/// Parses `ID=HOST:PORT`.
pub fn parse_peer(s: &str) -> Result<(u64, SocketAddr), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("peer '{s}' is not ID=HOST:PORT"))?;
    let id: u64 = id
        .trim()
        .parse()
        .map_err(|_| format!("peer '{s}': id '{id}' is not a positive integer"))?;
    if id == 0 {
        return Err(format!("peer '{s}': ids start at 1"));
    }
    let addr = addr
        .trim()
        .to_socket_addrs()
        .map_err(|e| format!("peer '{s}': cannot resolve '{addr}': {e}"))?
        .next()
        .ok_or_else(|| format!("peer '{s}': '{addr}' resolves to nothing"))?;
    Ok((id, addr))
}

impl Args {
    /// `--metrics-listen` as an address, if given. The error is one line.
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        let Some(text) = &self.metrics_listen else {
            return Ok(None);
        };
        let addr = text
            .to_socket_addrs()
            .map_err(|e| {
                format!("--metrics-listen '{text}': {e} (expected HOST:PORT, e.g. 127.0.0.1:9101)")
            })?
            .next()
            .ok_or_else(|| format!("--metrics-listen '{text}' resolves to nothing"))?;
        Ok(Some(addr))
    }

    /// Validates the flags together. The error is one line saying what to fix.
    pub fn into_config(self) -> Result<ServerConfig, String> {
        if self.repair_wal {
            return Err("--repair-wal is gone: a damaged write-ahead log is now cut and repaired from the cluster by itself, and the node votes in no election until then (see the README, \"A damaged disk\"); remove the flag".into());
        }
        let mut peers = Vec::new();
        let mut peer_hosts = Vec::new();
        let mut ids = BTreeSet::new();
        for p in &self.peers {
            let (id, addr) = parse_peer(p)?;
            if !ids.insert(id) {
                return Err(format!("node id {id} appears twice in --peers"));
            }
            peers.push((id, addr));
            if let Some(host) = p.split_once('=').and_then(|(_, a)| host_name(a)) {
                peer_hosts.push((id, host));
            }
        }
        if self.join {
            let listen = self.listen.as_deref().ok_or(
                "--join needs --listen HOST:PORT: the address the cluster will reach this node at",
            )?;
            let addr = listen
                .to_socket_addrs()
                .map_err(|e| format!("--listen '{listen}': {e}"))?
                .next()
                .ok_or_else(|| format!("--listen '{listen}' resolves to nothing"))?;
            if addr.ip().is_unspecified() {
                return Err(format!("--listen '{listen}' with --join must be the address the others dial (not 0.0.0.0)"));
            }
            peers.push((self.id, addr));
        }
        let own = peers
            .iter()
            .find(|p| p.0 == self.id)
            .map(|p| p.1)
            .ok_or_else(|| {
                format!(
                    "--id {} is not in --peers ({})",
                    self.id,
                    ids.iter().map(u64::to_string).collect::<Vec<_>>().join(",")
                )
            })?;
        let listen = match &self.listen {
            None => own,
            Some(l) => l
                .to_socket_addrs()
                .map_err(|e| format!("--listen '{l}': {e}"))?
                .next()
                .ok_or_else(|| format!("--listen '{l}' resolves to nothing"))?,
        };
        if self.heartbeat_ms < TICK_MS {
            return Err(format!("--heartbeat-ms must be at least {TICK_MS}"));
        }
        if self.election_ms < 2 * self.heartbeat_ms {
            return Err(format!(
                "--election-ms ({}) must be at least twice --heartbeat-ms ({})",
                self.election_ms, self.heartbeat_ms
            ));
        }
        if !(1..=4096).contains(&self.wal_segment_mib) {
            return Err("--wal-segment-mib must be between 1 and 4096".into());
        }
        if self.snapshot_entries == 0 || self.snapshot_wal_mib == 0 {
            return Err("--snapshot-entries and --snapshot-wal-mib must be positive".into());
        }
        if self.log_memory_entries == 0 {
            return Err("--log-memory-entries must be positive".into());
        }
        if self.log_memory_mib == 0 {
            return Err("--log-memory-mib must be positive".into());
        }
        if self.cluster_id.is_empty() || self.cluster_id.len() > 255 {
            return Err("--cluster-id must be 1 to 255 bytes".into());
        }
        let token = match &self.token_file {
            None => None,
            Some(path) => {
                let t = std::fs::read(path)
                    .map_err(|e| format!("--token-file {}: {e}", path.display()))?;
                let t = t.trim_ascii().to_vec();
                if t.is_empty() {
                    return Err(format!("--token-file {} is empty", path.display()));
                }
                Some(t)
            }
        };
        if self.data_dir.exists() && !self.data_dir.is_dir() {
            return Err(format!(
                "--data-dir {} exists and is not a directory",
                self.data_dir.display()
            ));
        }
        let tls = self.tls_cert.map(|cert| TlsFiles {
            cert,
            key: self
                .tls_key
                .expect("clap requires --tls-key with --tls-cert"),
            ca: self.tls_ca.expect("clap requires --tls-ca with --tls-cert"),
            client_ca: self.tls_client_ca,
            admin_names: self.admin_cn,
        });
        if let Some(files) = &tls {
            // Read and checked now, so that a bad file fails the start with one line.
            NodeTls::load(files)?;
        }
        Ok(ServerConfig {
            id: self.id,
            peers,
            peer_hosts,
            tls,
            listen,
            data_dir: self.data_dir,
            cluster_id: self.cluster_id,
            token,
            heartbeat_ms: self.heartbeat_ms,
            election_ms: self.election_ms,
            snapshot_entries: self.snapshot_entries,
            log_memory_entries: self.log_memory_entries,
            // Saturating: a bound beyond any memory is no bound, not an error.
            log_memory_bytes: self.log_memory_mib.saturating_mul(1 << 20),
            snapshot_wal_bytes: self.snapshot_wal_mib << 20,
            snapshot_ratio: self.snapshot_ratio,
            sync_later_min_entries: crate::server::SYNC_LATER_MIN_ENTRIES,
            wal_segment_bytes: self.wal_segment_mib << 20,
            wal_write: self.wal_write,
            consistency_check_secs: self.consistency_check_secs,
            scrub_bytes_per_sec: self.scrub_kib_per_sec << 10,
            join: self.join,
            fault_injection: self.enable_fault_injection,
        })
    }
}

/// The daemon's `main`: parses the command line, sets up logging and signals, opens the
/// server, lets `prepare` adjust it (the test-only `raftd-faulty` arms its fault there;
/// `raftd` changes nothing) and runs it until it stops. Returns the exit code.
pub fn daemon_main(prepare: impl FnOnce(&mut Server)) -> ExitCode {
    // Snapshot-sized buffers must go back to the system when freed (see the function).
    if !wal::fix_malloc_mmap_threshold() {
        eprintln!("raftd: warning: could not set malloc's mmap threshold; memory use may grow");
    }
    let args = match parse_command_line::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    // Bound first: a port in use fails the start before anything is opened.
    let metrics = match args
        .metrics_addr()
        .and_then(|a| a.map(crate::metrics_http::bind).transpose())
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("raftd: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftd: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("raftd: cannot install the handler for signal {signal}: {e}");
            return ExitCode::from(1);
        }
    }
    let mut server = match Server::open(config, stop) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("raftd: {e}");
            return ExitCode::from(1);
        }
    };
    // SIGHUP reloads the TLS certificates and keys (see `Server::run`).
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, server.reload_flag()) {
        eprintln!("raftd: cannot install the handler for SIGHUP: {e}");
        return ExitCode::from(1);
    }
    if let Some(listener) = metrics {
        match server.serve_metrics(listener) {
            Ok(bound) => log::info!("metrics at http://{bound}/metrics, health at /health"),
            Err(e) => {
                eprintln!("raftd: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    }
    prepare(&mut server);
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("raftd: {e}");
            ExitCode::from(1)
        }
    }
}
