//! Real `raftd` processes on 127.0.0.1 for process-level tests: start, kill -9, stop,
//! restart, ask for status. Each cluster lives in its own temporary directory and on ports
//! the OS handed out, so tests can run in parallel; dropping the cluster kills its nodes.

use crate::certs::{CertFiles, TestCa};
use raftd::client::{Client, ClientConfig};
use raftd::protocol::{Op, Outcome};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use transport::tls::ClientTls;

/// How to start the nodes.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// Election timeout (ms).
    pub election_ms: u64,
    /// Heartbeat interval (ms).
    pub heartbeat_ms: u64,
    /// Snapshot every this many entries.
    pub snapshot_entries: u64,
    /// `--snapshot-ratio` (raftd's default, 4, unless a test wants snapshots exactly every
    /// `snapshot_entries` and sets 0).
    pub snapshot_ratio: u64,
    /// Applied entries each node keeps in memory.
    pub log_memory_entries: u64,
    /// And MiB of their data at most (`--log-memory-mib`).
    pub log_memory_mib: u64,
    /// Cluster name.
    pub cluster_id: String,
    /// `RUST_LOG` for the nodes.
    pub log: String,
    /// WAL segment size (MiB).
    pub wal_segment_mib: u64,
    /// The leader's periodic consistency check, in seconds (0: off).
    pub consistency_check_secs: u64,
    /// The scrubber's rate in KiB/s (0: off).
    pub scrub_kib_per_sec: u64,
    /// Serve `/metrics` and `/health` (`--metrics-listen`) on a port of each node's own;
    /// see [`ProcessCluster::metrics_addr`].
    pub metrics: bool,
    /// Start the nodes with `--enable-fault-injection`, for tests that use the fault layer
    /// or `kill --crash`; off like in production otherwise.
    pub fault_injection: bool,
    /// Run every connection in TLS: a throw-away CA, a certificate per node naming its IP
    /// address, and (with `tls_client_certs`) client certificates made mandatory, the
    /// tests' clients presenting one named `admin`, listed with `--admin-cn`. The default
    /// is on when the environment sets `RAFTD_TEST_TLS=1`, so any process test can be run
    /// with TLS.
    pub tls: bool,
    /// With `tls`: `--tls-client-ca` (the same CA) and `--admin-cn admin`.
    pub tls_client_certs: bool,
}

impl Default for ClusterOptions {
    fn default() -> ClusterOptions {
        ClusterOptions {
            election_ms: 1000,
            heartbeat_ms: 100,
            snapshot_entries: 10_000,
            snapshot_ratio: 4,
            log_memory_entries: 25_000,
            log_memory_mib: 64,
            cluster_id: "raftd".into(),
            log: "info".into(),
            wal_segment_mib: 64,
            consistency_check_secs: 300,
            scrub_kib_per_sec: 4096,
            metrics: false,
            fault_injection: false,
            tls: tls_from_env(),
            tls_client_certs: tls_from_env(),
        }
    }
}

/// Whether `RAFTD_TEST_TLS=1` asks for process clusters in TLS.
pub fn tls_from_env() -> bool {
    std::env::var("RAFTD_TEST_TLS").is_ok_and(|v| v == "1")
}

/// The `raftd` binary next to the test executable (`target/<profile>/raftd`), built on
/// demand when missing; `RAFTD_BIN` overrides.
pub fn raftd_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("RAFTD_BIN") {
        return PathBuf::from(p);
    }
    workspace_binary("raftd")
}

/// The binary `name` of the workspace package of the same name, next to the test executable
/// (`target/<profile>/NAME`). Built (or found up to date) with cargo once per test process:
/// `cargo test` builds only the binaries of the packages whose integration tests it runs,
/// so a binary left by an earlier build could be stale.
pub fn workspace_binary(name: &str) -> PathBuf {
    workspace_binary_with(name, name, &[])
}

/// The binary `bin` of workspace package `package`, built with `features` (once per test
/// process, like [`workspace_binary`]): for a test-only binary such as `raftd-faulty`.
pub fn workspace_binary_with(package: &str, bin: &str, features: &[&str]) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let exe = std::env::current_exe().expect("test executable path");
    // A binary lives in target/<profile>/, a test in target/<profile>/deps/.
    let dir = exe.parent().expect("executable directory");
    let profile_dir = if dir.ends_with("deps") {
        dir.parent().expect("target directory").to_path_buf()
    } else {
        dir.to_path_buf()
    };
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if !built.iter().any(|b| b == bin) {
        let release = profile_dir.file_name().is_some_and(|n| n == "release");
        let mut cmd = Command::new(env!("CARGO"));
        cmd.args(["build", "-q", "-p", package, "--bin", bin]);
        if !features.is_empty() {
            cmd.args(["--features", &features.join(",")]);
        }
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("run cargo build");
        assert!(
            status.success(),
            "cargo build -p {package} --bin {bin} failed"
        );
        built.push(bin.to_string());
    }
    profile_dir.join(bin)
}

/// Runs `raftd ARGS` expecting it to refuse its configuration: asserts exit code 1 and a
/// message on stderr, and returns that message.
pub fn raftd_fails(args: &[&str]) -> String {
    let out = Command::new(raftd_binary()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "raftd {args:?}: {err}");
    assert!(!err.trim().is_empty(), "raftd {args:?} failed silently");
    err
}

/// Runs `raftctl FIRST... ARGS...`: its exit code, and its stdout followed by its stderr.
pub fn run_raftctl(first: &[&str], args: &[&str]) -> (i32, String) {
    command_output(
        Command::new(workspace_binary("raftctl"))
            .args(first)
            .args(args),
    )
}

/// Runs `command`: its exit code (-1 when killed by a signal), and its stdout followed by
/// its stderr.
pub fn command_output(command: &mut Command) -> (i32, String) {
    let out = command.output().expect("run a command");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// `GET path` over HTTP/1.1 from `addr`: the status code and the body; `None` when the
/// connection fails or the answer is no HTTP.
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

/// Loopback addresses with free ports.
pub fn free_addresses(n: usize) -> Vec<SocketAddr> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound"))
        .collect()
}

/// A cluster of raftd processes.
pub struct ProcessCluster {
    dir: PathBuf,
    binary: PathBuf,
    options: ClusterOptions,
    /// (id, address) of every node.
    pub peers: Vec<(u64, SocketAddr)>,
    children: Vec<Option<Child>>,
    netns: Option<NetNs>,
    /// Nodes added with [`ProcessCluster::add_joiner`]: started with `--join`, not `--peers`.
    joiners: Vec<u64>,
    /// The nodes of the first configuration (the `--peers` list).
    founders: usize,
    /// Each node's `--metrics-listen` address, with `ClusterOptions::metrics`.
    metrics: Vec<SocketAddr>,
    /// The cluster's CA and the tests' client certificate, with `ClusterOptions::tls`.
    tls: Option<(TestCa, CertFiles)>,
    /// Node certificates used instead of the ones the CA makes (see
    /// [`ProcessCluster::use_node_cert`]).
    node_certs: Vec<(u64, CertFiles)>,
}

/// Runs `cmd args…`; true on success. Output is discarded.
fn sh(cmd: &str, args: &[&str]) -> bool {
    Command::new(cmd)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Each node in its own network namespace, joined by a bridge in the host namespace, with
/// nftables tables per namespace for what the kernel's TCP sees (this kernel has no netem;
/// drop rules stand in for it): `raftd` for partitions, `raftd_loss` for random loss, kept
/// apart so that a partition and loss can be in force at once and each heals alone.
struct NetNs {
    tag: String,
    subnet: u8,
    /// The namespaces built: ids 1..=nodes.
    nodes: usize,
}

/// The nftables table of random-loss rules in each namespace.
const LOSS_TABLE: &str = "raftd_loss";

/// Random loss on the namespace links, as nftables `numgen random mod 100 < N drop` rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loss {
    /// What node `from` sends to node `to` (one way).
    Link {
        /// The sender.
        from: u64,
        /// The receiver.
        to: u64,
    },
    /// Everything node `id` sends out of its namespace (peers and clients alike).
    Outgoing(u64),
    /// Everything node `id` receives from outside its namespace.
    Incoming(u64),
}

impl NetNs {
    fn ns(&self, id: u64) -> String {
        format!("rd{}n{id}", self.tag)
    }
    fn bridge(&self) -> String {
        format!("rd{}b", self.tag)
    }
    fn veth(&self, id: u64) -> String {
        format!("rd{}v{id}", self.tag)
    }
    fn ip(&self, id: u64) -> String {
        format!("10.213.{}.{id}", self.subnet)
    }

    /// Runs `ip netns exec NS args…` in node `id`'s namespace.
    fn exec(&self, id: u64, args: &[&str]) -> bool {
        let ns = self.ns(id);
        let mut v = vec!["netns", "exec", ns.as_str()];
        v.extend_from_slice(args);
        sh("ip", &v)
    }

    /// Builds the namespaces, veths, bridge and nft tables; `None` when any step fails
    /// (not root, no `ip` or `nft`), after undoing what was built.
    fn create(nodes: usize) -> Option<NetNs> {
        if !sh("nft", &["--version"]) {
            return None;
        }
        let r: u32 = rand::random();
        let mut net = NetNs {
            tag: format!("{:04x}", r & 0xffff),
            subnet: (r >> 16) as u8 % 250 + 1,
            nodes: 0,
        };
        let br = net.bridge();
        let host_ip = format!("10.213.{}.254/24", net.subnet);
        let mut ok = sh("ip", &["link", "add", &br, "type", "bridge"])
            && sh("ip", &["addr", "add", &host_ip, "dev", &br])
            && sh("ip", &["link", "set", &br, "up"]);
        for id in 1..=nodes as u64 {
            ok = ok && net.add_node(id);
        }
        if ok {
            Some(net)
        } else {
            net.destroy();
            None
        }
    }

    /// Builds node `id`'s namespace (the next one), its veth on the bridge and its nft tables.
    fn add_node(&mut self, id: u64) -> bool {
        assert_eq!(
            id,
            self.nodes as u64 + 1,
            "namespaces are built in id order"
        );
        // Counted first, so that `destroy` also removes a half-built one.
        self.nodes += 1;
        let ns = self.ns(id);
        let veth = self.veth(id);
        let addr = format!("{}/24", self.ip(id));
        sh("ip", &["netns", "add", &ns])
            && sh(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
                ],
            )
            && sh(
                "ip",
                &["link", "set", &veth, "master", &self.bridge(), "up"],
            )
            && self.exec(id, &["ip", "addr", "add", &addr, "dev", "eth0"])
            && self.exec(id, &["ip", "link", "set", "eth0", "up"])
            && self.exec(id, &["ip", "link", "set", "lo", "up"])
            && ["raftd", LOSS_TABLE].iter().all(|table| {
                self.exec(id, &["nft", "add", "table", "inet", table])
                    && ["input", "output"].iter().all(|hook| {
                        let spec = format!("{{ type filter hook {hook} priority 0; }}");
                        self.exec(id, &["nft", "add", "chain", "inet", table, hook, &spec])
                    })
            })
    }

    /// Drops everything between node `id` and the nodes in `cut`, both directions.
    fn cut(&self, id: u64, cut: &[u64]) -> bool {
        let mut ok = self.exec(id, &["nft", "flush", "table", "inet", "raftd"]);
        for &other in cut {
            let ip = self.ip(other);
            ok &= self.exec(
                id,
                &[
                    "nft", "add", "rule", "inet", "raftd", "input", "ip", "saddr", &ip, "drop",
                ],
            );
            ok &= self.exec(
                id,
                &[
                    "nft", "add", "rule", "inet", "raftd", "output", "ip", "daddr", &ip, "drop",
                ],
            );
        }
        ok
    }

    /// Adds one random-loss rule: `percent` % of the packets it matches are dropped.
    fn lose(&self, loss: Loss, percent: u8) -> bool {
        let (id, chain, match_) = match loss {
            Loss::Link { from, to } => (from, "output", ["ip daddr".to_string(), self.ip(to)]),
            Loss::Outgoing(id) => (id, "output", ["oifname".into(), "eth0".into()]),
            Loss::Incoming(id) => (id, "input", ["iifname".into(), "eth0".into()]),
        };
        let rule = format!(
            "{} {} numgen random mod 100 < {percent} drop",
            match_[0], match_[1]
        );
        self.exec(
            id,
            &["nft", "add", "rule", "inet", LOSS_TABLE, chain, &rule],
        )
    }

    /// Removes every random-loss rule.
    fn heal_loss(&self) -> bool {
        (1..=self.nodes as u64).fold(true, |ok, id| {
            ok & self.exec(id, &["nft", "flush", "table", "inet", LOSS_TABLE])
        })
    }

    /// A token-bucket limit of `kbit` kbit/s on what node `id` sends (`egress`: on its
    /// eth0) or receives (on the bridge's end of its veth).
    fn limit(&self, id: u64, egress: bool, kbit: u32) -> bool {
        let rate = format!("{kbit}kbit");
        // A burst of about 50 ms at the rate, but at least a few full frames.
        let burst = format!("{}kbit", (kbit / 20).max(64));
        let tbf = [
            "tc", "qdisc", "replace", "dev", "", "root", "tbf", "rate", &rate, "burst", &burst,
            "latency", "500ms",
        ];
        if egress {
            let mut args = tbf;
            args[4] = "eth0";
            self.exec(id, &args)
        } else {
            let veth = self.veth(id);
            let mut args = tbf;
            args[4] = &veth;
            sh(args[0], &args[1..])
        }
    }

    /// Removes every bandwidth limit (a link without one is fine).
    fn heal_limits(&self) {
        for id in 1..=self.nodes as u64 {
            self.exec(id, &["tc", "qdisc", "del", "dev", "eth0", "root"]);
            sh("tc", &["qdisc", "del", "dev", &self.veth(id), "root"]);
        }
    }

    fn destroy(&self) {
        for id in 1..=self.nodes as u64 {
            sh("ip", &["netns", "del", &self.ns(id)]);
        }
        sh("ip", &["link", "del", &self.bridge()]);
    }
}

impl ProcessCluster {
    /// Starts `n` nodes (ids 1..=n).
    pub fn start(n: usize, options: ClusterOptions) -> ProcessCluster {
        let mut c = ProcessCluster::prepare(n, options);
        for id in c.ids() {
            c.spawn(id);
        }
        c
    }

    /// Sets up `n` nodes' addresses and directory without starting any (so a test can
    /// prepare a data directory first); start them with [`ProcessCluster::spawn`].
    pub fn prepare(n: usize, options: ClusterOptions) -> ProcessCluster {
        let dir = std::env::temp_dir().join(format!(
            "raftd-test-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("create test dir");
        // One call for every port, so that no two are the same.
        let mut addresses = free_addresses(if options.metrics { 2 * n } else { n });
        let metrics = addresses.split_off(n);
        let peers: Vec<(u64, SocketAddr)> = addresses
            .into_iter()
            .enumerate()
            .map(|(i, a)| (i as u64 + 1, a))
            .collect();
        let mut c = ProcessCluster {
            dir,
            binary: raftd_binary(),
            options,
            peers,
            children: (0..n).map(|_| None).collect(),
            netns: None,
            joiners: Vec::new(),
            founders: n,
            metrics,
            tls: None,
            node_certs: Vec::new(),
        };
        if c.options.tls {
            let ca = TestCa::new(&c.dir.join("tls"), "cluster");
            let admin = ca.client("admin");
            c.tls = Some((ca, admin));
        }
        c
    }

    /// Like [`ProcessCluster::prepare`], but each node runs in its own network namespace on
    /// a bridge, so [`ProcessCluster::net_partition`] can cut links in the kernel. `None`
    /// when that is not possible here (needs root, `ip` and `nft`).
    pub fn prepare_netns(n: usize, options: ClusterOptions) -> Option<ProcessCluster> {
        let net = NetNs::create(n)?;
        let mut c = ProcessCluster::prepare(n, options);
        c.peers = (1..=n as u64)
            .map(|id| (id, format!("{}:7001", net.ip(id)).parse().expect("address")))
            .collect();
        if !c.metrics.is_empty() {
            c.metrics = c
                .peers
                .iter()
                .map(|(_, a)| SocketAddr::new(a.ip(), 9101))
                .collect();
        }
        c.netns = Some(net);
        Some(c)
    }

    /// Starts `n` nodes (ids 1..=n), each in its own network namespace (see
    /// [`ProcessCluster::prepare_netns`]); fails, saying why, when that is not possible here.
    pub fn start_netns(n: usize, options: ClusterOptions) -> ProcessCluster {
        let mut c = ProcessCluster::prepare_netns(n, options)
            .expect("cannot create network namespaces: this test needs root, ip and nft");
        for id in c.ids() {
            c.spawn(id);
        }
        c
    }

    /// True when the nodes run in network namespaces.
    pub fn in_netns(&self) -> bool {
        self.netns.is_some()
    }

    /// Kernel-level partition (nftables drop rules): every node can reach only the nodes
    /// that share a group with it. An empty list heals. False when not in namespaces.
    pub fn net_partition(&self, groups: &[Vec<u64>]) -> bool {
        let Some(net) = &self.netns else {
            return false;
        };
        let mut ok = true;
        for id in self.ids() {
            let cut: Vec<u64> = if groups.is_empty() {
                Vec::new()
            } else {
                self.ids()
                    .into_iter()
                    .filter(|&o| {
                        o != id && !groups.iter().any(|g| g.contains(&id) && g.contains(&o))
                    })
                    .collect()
            };
            ok &= net.cut(id, &cut);
        }
        ok
    }

    /// The cluster's directory (data dirs and logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<u64> {
        self.peers.iter().map(|p| p.0).collect()
    }

    /// A node's address.
    pub fn addr(&self, id: u64) -> SocketAddr {
        self.peers[id as usize - 1].1
    }

    /// A node's `--metrics-listen` address (the cluster was started with
    /// `ClusterOptions::metrics`).
    pub fn metrics_addr(&self, id: u64) -> SocketAddr {
        assert!(
            !self.metrics.is_empty(),
            "the cluster was started without ClusterOptions::metrics"
        );
        self.metrics[id as usize - 1]
    }

    /// A node's log file.
    pub fn log_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node{id}.log"))
    }

    /// A node's data directory.
    pub fn data_dir(&self, id: u64) -> PathBuf {
        self.dir.join(format!("node{id}"))
    }

    /// A new node id with a fresh address and an empty data directory, which
    /// [`ProcessCluster::spawn`] starts with `--join --listen ADDRESS`. In namespaces, the
    /// node gets a namespace and an address of its own, like the others.
    pub fn add_joiner(&mut self) -> u64 {
        let id = self.peers.len() as u64 + 1;
        let addr = match &mut self.netns {
            Some(net) => {
                assert!(
                    net.add_node(id),
                    "cannot build a network namespace for node {id}"
                );
                format!("{}:7001", net.ip(id)).parse().expect("address")
            }
            None => free_addresses(1)[0],
        };
        self.peers.push((id, addr));
        self.children.push(None);
        self.joiners.push(id);
        id
    }

    /// Makes stopped node `id` a fresh joiner: its data directory is emptied (the
    /// directory itself stays, it may be a mount point) and [`ProcessCluster::spawn`] starts
    /// it with `--join` from now on, never with `--peers` (an empty disk started with
    /// `--peers` would found a second cluster).
    pub fn reset_as_joiner(&mut self, id: u64) {
        assert!(
            !self.is_running(id),
            "node {id} is running; stop it before wiping its data"
        );
        let dir = self.data_dir(id);
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let removed = match entry.file_type() {
                Ok(t) if t.is_dir() => std::fs::remove_dir_all(&path),
                _ => std::fs::remove_file(&path),
            };
            removed.unwrap_or_else(|e| panic!("cannot wipe {}: {e}", path.display()));
        }
        if !self.joiners.contains(&id) {
            self.joiners.push(id);
        }
    }

    /// Kernel-level random loss (nftables `numgen random` drop rules), added to what is in
    /// force. False when not in namespaces or nft refused.
    pub fn net_lose(&self, loss: Loss, percent: u8) -> bool {
        self.netns
            .as_ref()
            .is_some_and(|net| net.lose(loss, percent))
    }

    /// A bandwidth limit (tc tbf) on what node `id` sends (`egress`) or receives. False
    /// when not in namespaces or tc refused.
    pub fn net_limit(&self, id: u64, egress: bool, kbit: u32) -> bool {
        self.netns
            .as_ref()
            .is_some_and(|net| net.limit(id, egress, kbit))
    }

    /// Removes every kernel-level loss rule and bandwidth limit (partitions stay; see
    /// [`ProcessCluster::net_partition`]). True when there is nothing left in force.
    pub fn net_heal_degradation(&self) -> bool {
        let Some(net) = &self.netns else {
            return true;
        };
        net.heal_limits();
        net.heal_loss()
    }

    /// The `--peers` value: the first configuration's nodes.
    pub fn peers_arg(&self) -> String {
        self.peers[..self.founders]
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or restarts) node `id` with its data directory as it is.
    pub fn spawn(&mut self, id: u64) {
        let binary = self.binary.clone();
        self.spawn_binary(id, &binary);
    }

    /// Starts (or restarts) node `id` from another binary taking raftd's flags (a
    /// test-only build such as `raftd-faulty`).
    pub fn spawn_binary(&mut self, id: u64, binary: &Path) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("open node log");
        let mut command = match &self.netns {
            // `ip netns exec` execs the binary: the child's pid is raftd's.
            Some(net) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &net.ns(id)]).arg(binary);
                c
            }
            None => Command::new(binary),
        };
        match self.joiners.contains(&id) {
            true => command.args(["--join", "--listen", &self.addr(id).to_string()]),
            false => command.args(["--peers", &self.peers_arg()]),
        };
        command.args(self.tls_args(id));
        let child = command
            .args(["--id", &id.to_string()])
            .arg("--data-dir")
            .arg(self.data_dir(id))
            .args(["--cluster-id", &self.options.cluster_id])
            .args(["--election-ms", &self.options.election_ms.to_string()])
            .args(["--heartbeat-ms", &self.options.heartbeat_ms.to_string()])
            .args([
                "--snapshot-entries",
                &self.options.snapshot_entries.to_string(),
            ])
            .args(["--snapshot-ratio", &self.options.snapshot_ratio.to_string()])
            .args([
                "--log-memory-entries",
                &self.options.log_memory_entries.to_string(),
            ])
            .args(["--log-memory-mib", &self.options.log_memory_mib.to_string()])
            .args([
                "--wal-segment-mib",
                &self.options.wal_segment_mib.to_string(),
            ])
            .args([
                "--consistency-check-secs",
                &self.options.consistency_check_secs.to_string(),
            ])
            .args([
                "--scrub-kib-per-sec",
                &self.options.scrub_kib_per_sec.to_string(),
            ])
            .args(
                self.options
                    .fault_injection
                    .then_some("--enable-fault-injection"),
            )
            .args(
                self.metrics
                    .get(id as usize - 1)
                    .map(|a| ["--metrics-listen".to_string(), a.to_string()])
                    .iter()
                    .flatten(),
            )
            .env("RUST_LOG", &self.options.log)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start raftd");
        self.children[id as usize - 1] = Some(child);
    }

    /// Node `id`'s TLS flags (its certificate made on first use, naming its IP address):
    /// none without `ClusterOptions::tls`.
    pub fn tls_args(&self, id: u64) -> Vec<String> {
        let Some((ca, _)) = &self.tls else {
            return Vec::new();
        };
        let node = match self.node_certs.iter().find(|(n, _)| *n == id) {
            Some((_, files)) => files.clone(),
            None => ca.node(id, &self.addr(id).ip().to_string()),
        };
        let mut args = vec![
            "--tls-cert".to_string(),
            node.cert.display().to_string(),
            "--tls-key".to_string(),
            node.key.display().to_string(),
            "--tls-ca".to_string(),
            ca.ca.display().to_string(),
        ];
        if self.options.tls_client_certs {
            args.extend(["--tls-client-ca".to_string(), ca.ca.display().to_string()]);
            args.extend(["--admin-cn".to_string(), "admin".to_string()]);
        }
        args
    }

    /// Starts node `id` (from now on) with this certificate and key instead of its own.
    pub fn use_node_cert(&mut self, id: u64, files: CertFiles) {
        self.node_certs.retain(|(n, _)| *n != id);
        self.node_certs.push((id, files));
    }

    /// The cluster's CA, with `ClusterOptions::tls` (tests make more certificates with it).
    pub fn ca(&self) -> Option<&TestCa> {
        self.tls.as_ref().map(|(ca, _)| ca)
    }

    /// What the tests' clients use: trust the CA, present the `admin` certificate where
    /// client certificates are required. `None` without TLS.
    pub fn client_tls(&self) -> Option<ClientTls> {
        let (ca, admin) = self.tls.as_ref()?;
        let cert_key = self
            .options
            .tls_client_certs
            .then_some((admin.cert.as_path(), admin.key.as_path()));
        Some(ClientTls::load(&ca.ca, cert_key).expect("load the test client's TLS files"))
    }

    /// raftctl's TLS flags for this cluster (empty without TLS).
    pub fn raftctl_tls_args(&self) -> Vec<String> {
        let Some((ca, admin)) = &self.tls else {
            return Vec::new();
        };
        let mut args = vec!["--tls-ca".to_string(), ca.ca.display().to_string()];
        if self.options.tls_client_certs {
            args.extend(["--tls-cert".to_string(), admin.cert.display().to_string()]);
            args.extend(["--tls-key".to_string(), admin.key.display().to_string()]);
        }
        args
    }

    /// Node `id`'s process id, when it is running.
    pub fn pid(&self, id: u64) -> Option<u32> {
        self.children[id as usize - 1].as_ref().map(Child::id)
    }

    /// True when node `id`'s process is running.
    pub fn is_running(&mut self, id: u64) -> bool {
        match &mut self.children[id as usize - 1] {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `within` for node `id`'s process to exit by itself and returns how it
    /// ended; `None` if it is still running then (or was not started).
    pub fn wait_exit(&mut self, id: u64, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        let child = self.children[id as usize - 1].as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.children[id as usize - 1] = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// kill -9 of node `id`.
    pub fn kill9(&mut self, id: u64) {
        if let Some(mut c) = self.children[id as usize - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM to node `id`; waits for it to exit and returns its exit code.
    pub fn terminate(&mut self, id: u64) -> Option<i32> {
        let mut c = self.children[id as usize - 1].take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A client over every node.
    pub fn client(&self, timeout: Duration) -> Client {
        self.client_over(&self.ids(), timeout)
    }

    /// A client over some nodes.
    pub fn client_over(&self, ids: &[u64], timeout: Duration) -> Client {
        Client::new(ClientConfig {
            nodes: ids.iter().map(|&id| self.addr(id)).collect(),
            cluster_id: self.options.cluster_id.clone(),
            token: None,
            timeout,
            tls: self.client_tls(),
        })
    }

    /// Node `id`'s status document, if it answers.
    pub fn status(&self, id: u64) -> Option<serde_json::Value> {
        let mut c = self.client_over(&[id], Duration::from_millis(500));
        match c.call_node(self.addr(id), Op::Status) {
            Ok(Outcome::Status(s)) => serde_json::from_str(&s).ok(),
            _ => None,
        }
    }

    /// Waits for a node among `among` to report itself leader.
    pub fn wait_leader(&self, among: &[u64], within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            for &id in among {
                if let Some(s) = self.status(id) {
                    if s["role"] == "leader" {
                        return Some(id);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Waits until node `id` has applied at least `index`.
    pub fn wait_applied(&self, id: u64, index: u64, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self
                .status(id)
                .is_some_and(|s| s["applied"].as_u64().unwrap_or(0) >= index)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Fails, with the tail of node `id`'s log, unless its log holds `text`.
    pub fn assert_logged(&self, id: u64, text: &str) {
        let log = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        assert!(
            log.contains(text),
            "node {id} never logged {text:?}; its log ends:\n{}",
            self.log_tail(id)
        );
    }

    /// Runs `raftctl --cluster <every node> --cluster-id <the cluster's> --timeout 10s ARGS`:
    /// its exit code, and its stdout followed by its stderr.
    pub fn raftctl(&self, args: &[&str]) -> (i32, String) {
        let cluster: Vec<String> = self
            .ids()
            .iter()
            .map(|&id| self.addr(id).to_string())
            .collect();
        let mut first: Vec<String> = [
            "--cluster",
            &cluster.join(","),
            "--cluster-id",
            &self.options.cluster_id,
            "--timeout",
            "10s",
        ]
        .map(String::from)
        .to_vec();
        first.extend(self.raftctl_tls_args());
        let first: Vec<&str> = first.iter().map(String::as_str).collect();
        run_raftctl(&first, args)
    }

    /// The tail of a node's log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        let text = std::fs::read_to_string(self.log_path(id)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for ProcessCluster {
    fn drop(&mut self) {
        for c in self.children.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(net) = &self.netns {
            net.destroy();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            eprintln!("cluster data and logs kept in {}", self.dir.display());
        }
    }
}
