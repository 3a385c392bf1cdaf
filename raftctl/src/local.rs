//! `raftctl local`: a cluster of raftd processes on this machine, for trying raftd out and
//! for tests. `up` starts it in the background and records it in `DIR/cluster.json`; `add`
//! grows it by one node (started with `raftd --join`, then added with `member add`);
//! `restart` starts a stopped node again; `down` stops it; `demo` walks through what a
//! newcomer should see.

use crate::failure::Failure;
use crate::status::{collect_status, render_status};
use clap::Subcommand;
use raftd_client::blocking::{Client, ClientConfig};
use raftd_client::protocol::{Op, Outcome, Write};
use raftd_client::ClientTls;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Subcommand, Debug)]
pub enum LocalCmd {
    /// Start a local cluster in the background and print its addresses.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Directory for the nodes' data and logs [default: $TMPDIR/raftd-local].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Run the cluster in TLS: makes a throw-away CA, a certificate per node and an
        /// admin client certificate in DIR/tls (client certificates are required); raftctl
        /// uses them by itself against this local cluster.
        #[arg(long)]
        tls: bool,
    },
    /// Add a node to the running local cluster: start one more raftd with the next id on a
    /// free port with `--join`, then add it as `raftctl member add ID ADDRESS` does (as a
    /// learner, caught up, then promoted to voter; only a learner with --learner).
    Add {
        /// Leave the new node a learner (promote it later with `raftctl member promote ID`).
        #[arg(long)]
        learner: bool,
        /// How long to wait for the new node to catch up before promoting it.
        #[arg(long, value_parser = crate::parse::parse_duration, default_value = "10m")]
        catch_up_timeout: Duration,
        /// The directory the cluster was started in [default: $TMPDIR/raftd-local].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Start a stopped node of the local cluster again (after `raftctl kill ID`).
    Restart {
        /// The node's id.
        id: u64,
        /// The directory the cluster was started in [default: $TMPDIR/raftd-local].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Stop the local cluster (gracefully; force after a few seconds).
    Down {
        /// The directory it was started in [default: $TMPDIR/raftd-local].
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Start 3 nodes, write, kill the leader, watch a new one take over, restart the old
    /// one, watch it catch up, stop. Leaves nothing running.
    Demo {
        /// Directory for the demo's data [default: a fresh temporary directory, removed after].
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Run the demo's cluster in TLS (as `local up --tls`).
        #[arg(long)]
        tls: bool,
    },
}

fn default_dir() -> PathBuf {
    std::env::var_os("RAFTD_LOCAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("raftd-local"))
}

/// The addresses of the local cluster, if `raftctl local up` recorded one, and its TLS
/// directory if it runs in TLS.
pub fn default_cluster() -> Option<(Vec<String>, Option<PathBuf>)> {
    let state = read_state(&default_dir()).ok()?;
    let addresses = state.nodes.iter().map(|n| n.addr.to_string()).collect();
    Some((addresses, state.tls))
}

/// The files in a local cluster's TLS directory (see [`make_certificates`]).
pub struct LocalTlsFiles {
    /// The CA every node and the admin client certificate are signed by.
    pub ca: PathBuf,
    /// The admin client certificate and its key.
    pub admin_cert: PathBuf,
    /// Its key.
    pub admin_key: PathBuf,
}

impl LocalTlsFiles {
    /// The files of the TLS directory `dir`.
    pub fn of(dir: &Path) -> LocalTlsFiles {
        LocalTlsFiles {
            ca: dir.join("ca.pem"),
            admin_cert: dir.join("admin.pem"),
            admin_key: dir.join("admin-key.pem"),
        }
    }

    /// What raftctl presents to the local cluster.
    pub fn client_tls(&self) -> Result<ClientTls, Failure> {
        ClientTls::load(&self.ca, Some((&self.admin_cert, &self.admin_key))).map_err(Failure::Usage)
    }
}

/// Makes a throw-away CA and, signed by it, one certificate per node naming its IP address
/// (`node{ID}.pem`, `node{ID}-key.pem`) and an admin client certificate (`admin.pem`,
/// common name `admin`), all in `dir`. The CA's key is not kept: nothing else can be signed.
fn make_certificates(dir: &Path, nodes: &[NodeState]) -> Result<(), Failure> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let fail = |e: rcgen::Error| Failure::Usage(format!("cannot make certificates: {e}"));
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| Failure::Usage(format!("{}: {e}", path.display())))
    };
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", dir.display())))?;
    let ca_key = KeyPair::generate().map_err(fail)?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(fail)?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "raftd local CA");
    write("ca.pem", ca.self_signed(&ca_key).map_err(fail)?.pem())?;
    let issuer = Issuer::new(ca, ca_key);
    let leaves = nodes
        .iter()
        .map(|n| (format!("node{}", n.id), vec![n.addr.ip().to_string()]))
        .chain([("admin".to_string(), Vec::new())]);
    for (name, hosts) in leaves {
        let key = KeyPair::generate().map_err(fail)?;
        let mut params = CertificateParams::new(hosts).map_err(fail)?;
        params
            .distinguished_name
            .push(DnType::CommonName, name.as_str());
        write(
            &format!("{name}.pem"),
            params.signed_by(&key, &issuer).map_err(fail)?.pem(),
        )?;
        write(&format!("{name}-key.pem"), key.serialize_pem())?;
    }
    Ok(())
}

#[derive(Clone, Debug)]
struct NodeState {
    id: u64,
    addr: SocketAddr,
    pid: u32,
    /// Started with `--join` (added by `local add`), not with `--peers`.
    join: bool,
}

struct State {
    nodes: Vec<NodeState>,
    /// The TLS directory, when the cluster runs in TLS.
    tls: Option<PathBuf>,
}

fn state_path(dir: &Path) -> PathBuf {
    dir.join("cluster.json")
}

fn read_state(dir: &Path) -> Result<State, String> {
    let path = state_path(dir);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let nodes = v["nodes"]
        .as_array()
        .ok_or_else(|| format!("{}: no nodes", path.display()))?
        .iter()
        .filter_map(|n| {
            Some(NodeState {
                id: n["id"].as_u64()?,
                addr: n["address"].as_str()?.parse().ok()?,
                pid: n["pid"].as_u64()? as u32,
                join: n["join"].as_bool().unwrap_or(false),
            })
        })
        .collect();
    let tls = v["tls"].as_str().map(PathBuf::from);
    Ok(State { nodes, tls })
}

fn write_state(dir: &Path, nodes: &[NodeState], tls: Option<&Path>) -> Result<(), String> {
    let v = serde_json::json!({
        "tls": tls.map(|t| t.display().to_string()),
        "nodes": nodes.iter().map(|n| serde_json::json!({
            "id": n.id, "address": n.addr.to_string(), "pid": n.pid, "join": n.join,
            "data_dir": dir.join(format!("node{}", n.id)).display().to_string(),
            "log": dir.join(format!("node{}.log", n.id)).display().to_string(),
        })).collect::<Vec<_>>()
    });
    let path = state_path(dir);
    std::fs::write(&path, serde_json::to_string_pretty(&v).expect("json"))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The raftd binary: `RAFTD_BIN`, or the one next to this raftctl.
fn raftd_binary() -> Result<PathBuf, Failure> {
    if let Some(p) = std::env::var_os("RAFTD_BIN") {
        return Ok(PathBuf::from(p));
    }
    let me = std::env::current_exe()
        .map_err(|e| Failure::Usage(format!("cannot find raftctl's own path: {e}")))?;
    let candidate = me.with_file_name("raftd");
    if candidate.exists() {
        return Ok(candidate);
    }
    Err(Failure::Usage(format!(
        "raftd is not next to raftctl ({}); build it (cargo build --release) or set RAFTD_BIN",
        candidate.display()
    )))
}

/// Free loopback ports, found by binding port 0.
fn free_ports(n: u64) -> Result<Vec<SocketAddr>, Failure> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::Usage(format!("cannot find a free port: {e}")))?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().expect("bound"))
        .collect())
}

fn pid_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
}

/// A local cluster handle: the processes this raftctl started.
struct Cluster {
    dir: PathBuf,
    binary: PathBuf,
    peers: String,
    nodes: Vec<NodeState>,
    children: Vec<Option<Child>>,
    /// The TLS directory, when the cluster runs in TLS.
    tls: Option<PathBuf>,
}

impl Cluster {
    fn start(dir: &Path, n: u64, tls: bool) -> Result<Cluster, Failure> {
        if n == 0 || n > 15 {
            return Err(Failure::Usage("--nodes must be between 1 and 15".into()));
        }
        if let Ok(state) = read_state(dir) {
            if state.nodes.iter().any(|n| pid_alive(n.pid)) {
                return Err(Failure::Usage(format!(
                    "a local cluster is already running in {} (stop it with `raftctl local down`)",
                    dir.display()
                )));
            }
        }
        std::fs::create_dir_all(dir)
            .map_err(|e| Failure::Usage(format!("cannot create {}: {e}", dir.display())))?;
        let binary = raftd_binary()?;
        let addrs = free_ports(n)?;
        let peers = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let mut c = Cluster {
            dir: dir.to_path_buf(),
            binary,
            peers,
            nodes: Vec::new(),
            children: Vec::new(),
            tls: tls.then(|| dir.join("tls")),
        };
        for (i, addr) in addrs.iter().enumerate() {
            c.nodes.push(NodeState {
                id: i as u64 + 1,
                addr: *addr,
                pid: 0,
                join: false,
            });
            c.children.push(None);
        }
        if let Some(tls) = &c.tls {
            make_certificates(tls, &c.nodes)?;
        }
        for id in 1..=n {
            c.spawn(id)?;
        }
        write_state(dir, &c.nodes, c.tls.as_deref()).map_err(Failure::Usage)?;
        Ok(c)
    }

    fn spawn(&mut self, id: u64) -> Result<(), Failure> {
        use std::os::unix::process::CommandExt;
        let log_path = self.dir.join(format!("node{id}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Failure::Usage(format!("{}: {e}", log_path.display())))?;
        let mut command = Command::new(&self.binary);
        if let Some(tls) = &self.tls {
            let files = LocalTlsFiles::of(tls);
            command
                .arg("--tls-cert")
                .arg(tls.join(format!("node{id}.pem")))
                .arg("--tls-key")
                .arg(tls.join(format!("node{id}-key.pem")))
                .arg("--tls-ca")
                .arg(&files.ca)
                .arg("--tls-client-ca")
                .arg(&files.ca)
                .args(["--admin-cn", "admin"]);
        }
        let i = id as usize - 1;
        command.arg("--id").arg(id.to_string());
        // A joiner never gets `--peers`: with an empty data directory that would found a
        // cluster of its own. With data, either way it takes its configuration from there.
        match self.nodes[i].join {
            true => command
                .arg("--join")
                .arg("--listen")
                .arg(self.nodes[i].addr.to_string()),
            false => command.arg("--peers").arg(&self.peers),
        };
        let child = command
            .arg("--data-dir")
            .arg(self.dir.join(format!("node{id}")))
            // A local cluster is for trying things out: `raftctl fault` and `kill --crash`
            // work on it.
            .arg("--enable-fault-injection")
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| Failure::Usage(e.to_string()))?)
            .stderr(log)
            // Its own process group: a Ctrl-C meant for raftctl does not reach the nodes.
            .process_group(0)
            .spawn()
            .map_err(|e| Failure::Usage(format!("cannot start {}: {e}", self.binary.display())))?;
        self.nodes[i].pid = child.id();
        self.children[i] = Some(child);
        Ok(())
    }

    fn addresses(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.addr).collect()
    }

    /// The cluster recorded in `dir`, to start nodes of (none is started by this).
    fn recorded(dir: &Path) -> Result<Cluster, Failure> {
        let state = read_state(dir).map_err(|e| {
            Failure::Usage(format!(
                "no local cluster recorded ({e}); start one with `raftctl local up`"
            ))
        })?;
        // `--peers` is the first configuration: the nodes `up` started.
        let peers = state
            .nodes
            .iter()
            .filter(|n| !n.join)
            .map(|n| format!("{}={}", n.id, n.addr))
            .collect::<Vec<_>>()
            .join(",");
        Ok(Cluster {
            dir: dir.to_path_buf(),
            binary: raftd_binary()?,
            peers,
            children: state.nodes.iter().map(|_| None).collect(),
            nodes: state.nodes,
            tls: state.tls,
        })
    }
}

fn client_for(addrs: Vec<SocketAddr>, timeout: Duration, tls: Option<&Path>) -> Client {
    // The files were made by this tool; a failure to read them shows in the first call.
    let tls = tls.and_then(|t| LocalTlsFiles::of(t).client_tls().ok());
    Client::new(ClientConfig {
        nodes: addrs,
        cluster_id: "raftd".into(),
        token: None,
        timeout,
        tls,
    })
}

/// Waits until some node reports itself leader; returns (id, address, term).
fn wait_for_leader(
    client: &mut Client,
    nodes: &[SocketAddr],
    within: Duration,
) -> Option<(u64, SocketAddr, u64)> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        for d in collect_status(client, nodes) {
            if d["role"] == "leader" {
                let addr = d["address"].as_str()?.parse().ok()?;
                return Some((d["id"].as_u64()?, addr, d["term"].as_u64()?));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

fn stop_nodes(nodes: &[NodeState], timeout: Duration, tls: Option<&Path>) {
    let mut client = client_for(nodes.iter().map(|n| n.addr).collect(), timeout, tls);
    for n in nodes {
        if pid_alive(n.pid) {
            let _ = client.call_node(n.addr, Op::Shutdown { crash: false });
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while nodes.iter().any(|n| pid_alive(n.pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for n in nodes.iter().filter(|n| pid_alive(n.pid)) {
        let _ = Command::new("kill")
            .arg("-KILL")
            .arg(n.pid.to_string())
            .status();
    }
}

/// Runs a `local` subcommand.
pub fn run(cmd: &LocalCmd, timeout: Duration, json: bool) -> Result<(), Failure> {
    match cmd {
        LocalCmd::Up { nodes, dir, tls } => {
            let dir = dir.clone().unwrap_or_else(default_dir);
            let cluster = Cluster::start(&dir, *nodes, *tls)?;
            let mut client = client_for(cluster.addresses(), timeout, cluster.tls.as_deref());
            let leader =
                wait_for_leader(&mut client, &cluster.addresses(), Duration::from_secs(10));
            let addrs: Vec<String> = cluster.addresses().iter().map(|a| a.to_string()).collect();
            if json {
                out!(
                    "{}",
                    serde_json::json!({"ok": true, "dir": dir.display().to_string(), "addresses": addrs, "leader": leader.map(|l| l.0), "tls": cluster.tls.as_ref().map(|t| t.display().to_string())})
                );
            } else {
                out!("started {} nodes in {}", nodes, dir.display());
                for n in &cluster.nodes {
                    out!(
                        "  node {} at {} (pid {}, log {}/node{}.log)",
                        n.id,
                        n.addr,
                        n.pid,
                        dir.display(),
                        n.id
                    );
                }
                match leader {
                    Some((id, _, term)) => out!("leader: node {id} (term {term})"),
                    None => out!("no leader yet; check the logs"),
                }
                if let Some(tls) = &cluster.tls {
                    let files = LocalTlsFiles::of(tls);
                    out!(
                        "TLS: CA {}, admin client certificate {} (raftctl uses them by itself here; elsewhere pass --tls-ca {} --tls-cert {} --tls-key {})",
                        files.ca.display(),
                        files.admin_cert.display(),
                        files.ca.display(),
                        files.admin_cert.display(),
                        files.admin_key.display()
                    );
                }
                out!("try: raftctl status   |   raftctl propose put hello world   |   raftctl local down");
                out!("(other shells: export RAFTCTL_CLUSTER={})", addrs.join(","));
            }
            Ok(())
        }
        LocalCmd::Down { dir } => {
            let dir = dir.clone().unwrap_or_else(default_dir);
            let state = read_state(&dir).map_err(|e| {
                Failure::Usage(format!("no local cluster recorded ({e}); nothing to stop"))
            })?;
            stop_nodes(&state.nodes, timeout, state.tls.as_deref());
            let _ = std::fs::remove_file(state_path(&dir));
            if json {
                out!("{}", serde_json::json!({"ok": true}));
            } else {
                out!(
                    "stopped {} nodes (data kept in {})",
                    state.nodes.len(),
                    dir.display()
                );
            }
            Ok(())
        }
        LocalCmd::Demo { dir, tls } => demo(dir.clone(), *tls, timeout),
        LocalCmd::Add {
            learner,
            catch_up_timeout,
            dir,
        } => add(
            &dir.clone().unwrap_or_else(default_dir),
            *learner,
            *catch_up_timeout,
            timeout,
            json,
        ),
        LocalCmd::Restart { id, dir } => {
            let dir = dir.clone().unwrap_or_else(default_dir);
            let mut cluster = Cluster::recorded(&dir)?;
            let Some(node) = cluster.nodes.iter().find(|n| n.id == *id) else {
                return Err(Failure::Usage(format!(
                    "the local cluster has no node {id}"
                )));
            };
            if pid_alive(node.pid) {
                return Err(Failure::Usage(format!(
                    "node {id} is running (pid {}); stop it first with `raftctl kill {id}`",
                    node.pid
                )));
            }
            cluster.spawn(*id)?;
            write_state(&dir, &cluster.nodes, cluster.tls.as_deref()).map_err(Failure::Usage)?;
            let pid = cluster.nodes[*id as usize - 1].pid;
            if json {
                out!("{}", serde_json::json!({"ok": true, "id": id, "pid": pid}));
            } else {
                out!("node {id} started again (pid {pid})");
            }
            Ok(())
        }
    }
}

/// Local clusters have at most this many nodes.
const NODES_MAX: usize = 15;

/// `local add`: starts node `max id + 1` with `--join` on a free port, records it, and adds
/// it to the configuration through the leader like `raftctl member add`.
fn add(
    dir: &Path,
    learner: bool,
    catch_up_timeout: Duration,
    timeout: Duration,
    json: bool,
) -> Result<(), Failure> {
    let mut cluster = Cluster::recorded(dir)?;
    if !cluster.nodes.iter().any(|n| pid_alive(n.pid)) {
        return Err(Failure::Usage(format!(
            "no node of the local cluster in {} is running; start it with `raftctl local up` (or `local restart ID`)",
            dir.display()
        )));
    }
    if cluster.tls.is_some() {
        // `up --tls` does not keep its throw-away CA's key, so no certificate can be made
        // for a new node.
        return Err(Failure::Usage(
            "the local cluster runs in TLS, and `local add` cannot make a certificate for a new node (the throw-away CA's key is not kept); use a plaintext local cluster, or start the node yourself with a certificate from your CA and run `raftctl member add`".into(),
        ));
    }
    if cluster.nodes.len() >= NODES_MAX {
        return Err(Failure::Usage(format!(
            "the local cluster has {NODES_MAX} nodes already"
        )));
    }
    let id = cluster.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
    let addr = free_ports(1)?[0];
    cluster.nodes.push(NodeState {
        id,
        addr,
        pid: 0,
        join: true,
    });
    cluster.children.push(None);
    cluster.spawn(id)?;
    write_state(dir, &cluster.nodes, cluster.tls.as_deref()).map_err(Failure::Usage)?;
    let pid = cluster.nodes[id as usize - 1].pid;
    if !json {
        eprintln!(
            "node {id} started at {addr} with --join (pid {pid}, log {}/node{id}.log); adding it",
            dir.display()
        );
    }
    let tls = match &cluster.tls {
        Some(files) => Some(LocalTlsFiles::of(files).client_tls()?),
        None => None,
    };
    let config = ClientConfig {
        nodes: cluster.addresses(),
        cluster_id: "raftd".into(),
        token: None,
        timeout,
        tls,
    };
    let mut client = Client::new(config.clone());
    let change = crate::member::MemberCmd::Add {
        id,
        address: addr.to_string(),
        learner,
        catch_up_timeout,
    };
    crate::member::run(&change, &mut client, &config, json).map_err(|f| {
        // The node runs and stays recorded: the operator may retry the change.
        let advice = format!(
            "node {id} runs at {addr} but may not be a member; see `raftctl member list`, retry with `raftctl member add {id} {addr}`, or stop it with `raftctl kill {id}`"
        );
        match f {
            Failure::Definite(m) => Failure::Definite(format!("{m}\n  {advice}")),
            Failure::Unreachable(m) => Failure::Unreachable(format!("{m}\n  {advice}")),
            Failure::Unknown(m) => Failure::Unknown(format!("{m}\n  {advice}")),
            Failure::Undecided(m) => Failure::Undecided(format!("{m}\n  {advice}")),
            other => other,
        }
    })
}

fn say(step: &str) {
    out!("\n== {step}");
}

fn demo(dir: Option<PathBuf>, tls: bool, timeout: Duration) -> Result<(), Failure> {
    let (dir, temporary) = match dir {
        Some(d) => (d, false),
        None => (
            std::env::temp_dir().join(format!("raftd-demo-{}", std::process::id())),
            true,
        ),
    };
    say(if tls {
        "starting 3 raftd nodes in TLS (certificates in DIR/tls)"
    } else {
        "starting 3 raftd nodes"
    });
    let mut cluster = Cluster::start(&dir, 3, tls)?;
    let result = demo_steps(&mut cluster, timeout.max(Duration::from_secs(10)));
    say("stopping the cluster");
    stop_nodes(&cluster.nodes, timeout, cluster.tls.as_deref());
    for child in cluster.children.iter_mut().flatten() {
        let _ = child.wait();
    }
    if temporary && result.is_ok() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        out!("data and logs kept in {}", dir.display());
    }
    if result.is_ok() {
        out!("\ndemo complete.");
    }
    result
}

fn demo_steps(cluster: &mut Cluster, timeout: Duration) -> Result<(), Failure> {
    let addrs = cluster.addresses();
    for n in &cluster.nodes {
        out!("  node {} at {} (pid {})", n.id, n.addr, n.pid);
    }
    let tls = cluster.tls.clone();
    let mut client = client_for(addrs.clone(), timeout, tls.as_deref());
    let started = Instant::now();
    let (leader, leader_addr, term) = wait_for_leader(&mut client, &addrs, Duration::from_secs(10))
        .ok_or_else(|| {
            Failure::Definite("no leader elected within 10 s; see the node logs".into())
        })?;
    out!(
        "  node {leader} was elected leader of term {term} after {:?}",
        started.elapsed()
    );

    say("writing 100 keys through the leader");
    for k in 0..100 {
        let outcome = client.write(Write::Put {
            key: format!("key{k}").into_bytes(),
            value: format!("value{k}").into_bytes(),
        })?;
        if k == 99 {
            if let Outcome::Written { index, term } = outcome {
                out!("  key99 committed at index {index}, term {term}");
            }
        }
    }
    put!("{}", render_status(&collect_status(&mut client, &addrs)));

    say(&format!("killing the leader, node {leader}, with SIGKILL"));
    let killed_at = Instant::now();
    let i = leader as usize - 1;
    if let Some(mut child) = cluster.children[i].take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let others: Vec<SocketAddr> = addrs
        .iter()
        .copied()
        .filter(|a| *a != leader_addr)
        .collect();
    let mut survivors = client_for(others.clone(), timeout, tls.as_deref());
    let (new_leader, _, new_term) =
        wait_for_leader(&mut survivors, &others, Duration::from_secs(10))
            .ok_or_else(|| Failure::Definite("no new leader within 10 s".into()))?;
    survivors.write(Write::Put {
        key: b"after-failover".to_vec(),
        value: b"yes".to_vec(),
    })?;
    out!(
        "  node {new_leader} took over at term {new_term}; a write succeeded {:?} after the kill",
        killed_at.elapsed()
    );
    for k in 100..150 {
        survivors.write(Write::Put {
            key: format!("key{k}").into_bytes(),
            value: format!("value{k}").into_bytes(),
        })?;
    }
    out!("  wrote 50 more keys while node {leader} was down");

    say(&format!("restarting node {leader}"));
    cluster.spawn(leader)?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let docs = collect_status(&mut client, &addrs);
        let commit_max = docs
            .iter()
            .filter_map(|d| d["commit"].as_u64())
            .max()
            .unwrap_or(0);
        let back = docs
            .iter()
            .find(|d| d["id"] == leader && d["reachable"] == true)
            .and_then(|d| d["applied"].as_u64());
        if back.is_some_and(|a| a >= commit_max && commit_max > 0) {
            out!(
                "  node {leader} caught up: applied index {} of {commit_max}",
                back.unwrap_or(0)
            );
            put!("{}", render_status(&docs));
            break;
        }
        if Instant::now() > deadline {
            return Err(Failure::Definite(format!(
                "node {leader} did not catch up within 15 s"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    say("reading back through every node (linearizable reads)");
    for &addr in &addrs {
        let mut one = client_for(vec![addr], timeout, tls.as_deref());
        let v = one.get(b"key42")?;
        let w = one.get(b"after-failover")?;
        out!(
            "  {addr}: key42 = {}, after-failover = {}",
            v.map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default(),
            w.map(|v| String::from_utf8_lossy(&v).into_owned())
                .unwrap_or_default()
        );
    }
    Ok(())
}
