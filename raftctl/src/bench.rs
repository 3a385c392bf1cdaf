//! `raftctl bench`: a closed-loop load generator for a raftd cluster.
//!
//! The workload mirrors the etcd load generator it is compared with: N logical clients, each
//! sending its next request only after the answer to the previous one; a random key out of
//! `--keys` named `bench/%08d`; values of `--value-bytes`; a warm-up that is not measured, then
//! `--duration` measured; latency taken at the client from the first send of an operation to
//! its successful answer (redirects and retries included).
//!
//! Clients are spread over C connection slots and each slot is one thread running a small
//! mio loop. A slot keeps at most one socket per node: reads go to the slot's home node (homes
//! are spread over all nodes), writes go to the leader. Requests on one socket are matched to
//! clients by `request_id`, so a socket carries all its clients' outstanding requests at once,
//! and the requests made ready by one batch of answers leave in one write. In write mode the
//! home socket is never opened, so a slot is exactly one connection, to the leader; in mixed
//! mode a slot whose home is a follower holds two.
//!
//! Writes carry a per-client session id and sequence number; a write that must be re-sent
//! (redirected, timed out, its connection lost) keeps its sequence number, so the cluster
//! applies it once. A `NotLeader` answer moves the slot's writes to the named leader; with no
//! leader known, writes probe the nodes in turn with a short back-off. Failures are counted by
//! kind and never end the run.

use crate::Failure;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use raftd::client::ClientConfig;
use raftd::protocol::{Command, Op, Outcome, Request, Response, Write, FRAME_REQUEST};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::{self, IsTerminal, Read, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use transport::codec::{self, Decoded, Dialer, Role, HELLO_BYTES_MAX};

/// Answers larger than this end the connection (values are at most 1 MiB).
const RESPONSE_BYTES_MAX: usize = 2 << 20;
/// Bits of a request id that name the client within its slot; the rest count attempts.
const CLIENT_INDEX_BITS: u32 = 24;
const CLIENT_INDEX_MASK: u64 = (1 << CLIENT_INDEX_BITS) - 1;
/// At most this many logical clients (each slot must fit its clients in the index bits).
const CLIENTS_MAX: usize = 1 << 20;
const _: () = assert!(CLIENTS_MAX as u64 <= CLIENT_INDEX_MASK + 1);
/// Back-off before re-sending after an error, and while no leader is known.
const RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How often a slot looks for requests that have waited longer than the timeout.
const TIMEOUT_SCAN_EVERY: Duration = Duration::from_millis(100);

/// What the benchmark sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Put only (through the leader).
    Write,
    /// Linearizable gets only (spread over all nodes).
    Read,
    /// Gets and puts, `--read-percent` of them gets.
    Mixed,
}

/// `raftctl bench` options; the cluster, the per-request timeout and `--json` are global.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Logical closed-loop clients.
    #[arg(long, default_value_t = 1)]
    clients: usize,
    /// Connections the clients share [default: min(clients, 16)].
    #[arg(long)]
    connections: Option<usize>,
    /// Number of distinct keys (named bench/00000000 ...).
    #[arg(long, default_value_t = 100_000)]
    keys: u64,
    /// Bytes in each value written.
    #[arg(long, default_value_t = 128)]
    value_bytes: usize,
    /// Run this long before measuring (e.g. 2s, 500ms).
    #[arg(long, default_value = "2s", value_parser = crate::parse_duration)]
    warmup: Duration,
    /// Measure for this long.
    #[arg(long, default_value = "15s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Writes, reads, or both.
    #[arg(long, value_enum, default_value_t = Mode::Write)]
    mode: Mode,
    /// In mixed mode, the share of reads in percent.
    #[arg(long, default_value_t = 50)]
    read_percent: u8,
}

/// Counters shared by the slots and the progress display.
struct Shared {
    started: Instant,
    measure_from: Instant,
    end: Instant,
    /// Successful operations so far, warm-up included (for the progress display).
    completed: AtomicU64,
    errors: AtomicU64,
    /// Nanoseconds after `started` of the latest successful write answered.
    last_write_ns: AtomicU64,
    /// The longest gap between successful writes inside the measured window, and where it ended.
    write_gap_max_ns: AtomicU64,
    write_gap_end_ns: AtomicU64,
}

impl Shared {
    fn since_start_ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.started).as_nanos() as u64
    }

    /// Notes a successful write answered at `at`, keeping the longest gap between two.
    fn write_succeeded(&self, at: Instant) {
        if at < self.measure_from {
            return;
        }
        let now = self.since_start_ns(at);
        let previous = self.last_write_ns.fetch_max(now, Ordering::AcqRel);
        if now > previous {
            self.note_gap(now - previous, now);
        }
    }

    fn note_gap(&self, gap: u64, ended_at: u64) {
        if self.write_gap_max_ns.fetch_max(gap, Ordering::AcqRel) < gap {
            self.write_gap_end_ns.store(ended_at, Ordering::Release);
        }
    }
}

/// Failed attempts by kind. A failed attempt is re-sent (writes with the same sequence number).
#[derive(Default, Debug, Clone, Copy)]
struct ErrorCounts {
    timeouts: u64,
    unavailable: u64,
    connection: u64,
    refused: u64,
}

impl ErrorCounts {
    fn total(&self) -> u64 {
        self.timeouts + self.unavailable + self.connection + self.refused
    }

    fn add(&mut self, o: &ErrorCounts) {
        self.timeouts += o.timeouts;
        self.unavailable += o.unavailable;
        self.connection += o.connection;
        self.refused += o.refused;
    }
}

/// What one slot measured.
struct SlotResult {
    histogram: Histogram<u64>,
    errors: ErrorCounts,
    redirects: u64,
}

fn new_histogram() -> Histogram<u64> {
    // Microseconds, 1 µs to one hour, three significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// Runs the benchmark and prints its result line (or JSON object).
pub fn run(
    args: &BenchArgs,
    config: ClientConfig,
    leader: Option<SocketAddr>,
    json: bool,
) -> Result<(), Failure> {
    if args.clients == 0 || args.clients > CLIENTS_MAX {
        return Err(Failure::Usage(format!(
            "--clients must be between 1 and {CLIENTS_MAX}"
        )));
    }
    let connections = args.connections.unwrap_or(args.clients.min(16));
    if connections == 0 || connections > args.clients {
        return Err(Failure::Usage(
            "--connections must be between 1 and --clients".into(),
        ));
    }
    if args.keys == 0 || args.read_percent > 100 {
        return Err(Failure::Usage(
            "--keys must be positive and --read-percent at most 100".into(),
        ));
    }
    if args.value_bytes > raftd::protocol::VALUE_BYTES_MAX {
        return Err(Failure::Usage(format!(
            "--value-bytes must be at most {}",
            raftd::protocol::VALUE_BYTES_MAX
        )));
    }
    let started = Instant::now();
    let shared = Arc::new(Shared {
        started,
        measure_from: started + args.warmup,
        end: started + args.warmup + args.duration,
        completed: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        last_write_ns: AtomicU64::new(args.warmup.as_nanos() as u64),
        write_gap_max_ns: AtomicU64::new(0),
        write_gap_end_ns: AtomicU64::new(0),
    });
    // One value for every write, like the etcd load generator: letters, so it prints.
    let value: Vec<u8> = (0..args.value_bytes)
        .map(|i| b'a' + (i * 7 % 26) as u8)
        .collect();
    let session_base = rand::random::<u64>() & !(CLIENTS_MAX as u64 - 1);
    let mut threads = Vec::new();
    for slot in 0..connections {
        let clients: Vec<u64> = (slot..args.clients)
            .step_by(connections)
            .map(|c| c as u64)
            .collect();
        let s = Slot::new(
            slot,
            args,
            &config,
            leader,
            value.clone(),
            clients,
            session_base,
            shared.clone(),
        );
        let t = std::thread::Builder::new()
            .name(format!("bench-{slot}"))
            .spawn(move || s.run())
            .map_err(|e| Failure::Definite(format!("cannot start a thread: {e}")))?;
        threads.push(t);
    }
    show_progress(&shared);
    let mut histogram = new_histogram();
    let mut errors = ErrorCounts::default();
    let mut redirects = 0;
    for t in threads {
        let r = t
            .join()
            .map_err(|_| Failure::Definite("a benchmark thread panicked".into()))?;
        histogram
            .add(&r.histogram)
            .expect("histograms share their bounds");
        errors.add(&r.errors);
        redirects += r.redirects;
    }
    // Writes that stopped for good before the end leave a gap up to the end.
    if args.mode != Mode::Read {
        let end_ns = shared.since_start_ns(shared.end);
        let last = shared.last_write_ns.load(Ordering::Acquire);
        if end_ns > last {
            shared.note_gap(end_ns - last, end_ns);
        }
    }
    let report = Report {
        args,
        connections,
        nodes: config.nodes.len(),
        histogram,
        errors,
        redirects,
        write_gap_max_ns: shared.write_gap_max_ns.load(Ordering::Acquire),
        write_gap_end_ns: shared.write_gap_end_ns.load(Ordering::Acquire),
    };
    if json {
        out!("{}", report.json());
    } else {
        out!("{}", report.line());
    }
    if report.histogram.is_empty() {
        return Err(Failure::Definite(
            "no operation succeeded in the measured window".into(),
        ));
    }
    Ok(())
}

/// A progress bar on a terminal, else a line per second, on stderr; returns at the end.
fn show_progress(shared: &Shared) {
    let tty = io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    let total = shared.end - shared.started;
    let mut last = (Instant::now(), 0u64);
    loop {
        std::thread::sleep(every);
        let now = Instant::now();
        let done = shared.completed.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / (now - last.0).as_secs_f64();
        last = (now, done);
        let elapsed = now.saturating_duration_since(shared.started).min(total);
        let phase = if now < shared.measure_from {
            "warm-up"
        } else {
            "measure"
        };
        let errors = shared.errors.load(Ordering::Relaxed);
        if tty {
            let width = 30;
            let filled = (elapsed.as_secs_f64() / total.as_secs_f64() * width as f64) as usize;
            eprint!(
                "\r{phase} [{}{}] {:5.1}/{:.1}s {:>9.0} ops/s errors={errors}   ",
                "#".repeat(filled),
                ".".repeat(width - filled),
                elapsed.as_secs_f64(),
                total.as_secs_f64(),
                rate
            );
        } else {
            eprintln!(
                "bench: {phase} {:.0}/{:.0}s {:.0} ops/s errors={errors}",
                elapsed.as_secs_f64(),
                total.as_secs_f64(),
                rate
            );
        }
        // The slots stop by themselves within one timeout after the end.
        if now >= shared.end {
            break;
        }
    }
    if tty {
        eprintln!();
    }
}

/// The figures of a run.
struct Report<'a> {
    args: &'a BenchArgs,
    connections: usize,
    nodes: usize,
    histogram: Histogram<u64>,
    errors: ErrorCounts,
    redirects: u64,
    write_gap_max_ns: u64,
    write_gap_end_ns: u64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Report<'_> {
    fn ops_per_s(&self) -> f64 {
        self.histogram.len() as f64 / self.args.duration.as_secs_f64()
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        ms(self.histogram.value_at_quantile(q))
    }

    fn mode(&self) -> &'static str {
        match self.args.mode {
            Mode::Write => "write",
            Mode::Read => "read",
            Mode::Mixed => "mixed",
        }
    }

    /// One line, in the etcd load generator's layout so the two compare field by field.
    fn line(&self) -> String {
        let h = &self.histogram;
        format!(
            "raftd-{} [rust] clients={} conns={} mode={} value={}B dur={:?}: ops={} ops/s={:.0} p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms errors={} (timeouts={} unavailable={} connection={} refused={}) redirects={}{}",
            self.nodes,
            self.args.clients,
            self.connections,
            self.mode(),
            self.args.value_bytes,
            self.args.duration,
            h.len(),
            self.ops_per_s(),
            self.quantile_ms(0.5),
            self.quantile_ms(0.9),
            self.quantile_ms(0.99),
            self.quantile_ms(0.999),
            ms(h.max()),
            self.errors.total(),
            self.errors.timeouts,
            self.errors.unavailable,
            self.errors.connection,
            self.errors.refused,
            self.redirects,
            self.gap_text(),
        )
    }

    /// The longest pause between successful writes (none in read mode).
    fn gap_text(&self) -> String {
        if self.args.mode == Mode::Read {
            return String::new();
        }
        format!(
            " write_gap_max={:.1}ms at={:.1}s",
            self.write_gap_max_ns as f64 / 1e6,
            self.write_gap_end_ns as f64 / 1e9
        )
    }

    fn json(&self) -> serde_json::Value {
        let h = &self.histogram;
        serde_json::json!({
            "ok": true,
            "nodes": self.nodes,
            "mode": self.mode(),
            "clients": self.args.clients,
            "connections": self.connections,
            "keys": self.args.keys,
            "value_bytes": self.args.value_bytes,
            "warmup_s": self.args.warmup.as_secs_f64(),
            "duration_s": self.args.duration.as_secs_f64(),
            "ops": h.len(),
            "ops_per_s": self.ops_per_s(),
            "p50_ms": self.quantile_ms(0.5),
            "p90_ms": self.quantile_ms(0.9),
            "p99_ms": self.quantile_ms(0.99),
            "p999_ms": self.quantile_ms(0.999),
            "max_ms": ms(h.max()),
            "errors": self.errors.total(),
            "errors_by_kind": {
                "timeouts": self.errors.timeouts,
                "unavailable": self.errors.unavailable,
                "connection": self.errors.connection,
                "refused": self.errors.refused,
            },
            "redirects": self.redirects,
            "write_gap_max_ms": self.write_gap_max_ns as f64 / 1e6,
            "write_gap_end_s": self.write_gap_end_ns as f64 / 1e9,
        })
    }
}

/// One logical client's state.
struct BenchClient {
    client_id: u64,
    seq: u64,
    /// The operation under way: key number and whether it is a write.
    key: u64,
    is_write: bool,
    /// When the operation under way was first sent (`None`: no operation under way).
    op_started: Option<Instant>,
    /// The request on the wire (0: none) and when and where it was sent.
    request_id: u64,
    sent_at: Instant,
    on_node: usize,
}

/// A connection to one node: a nonblocking socket with its buffers.
struct Socket {
    stream: MioStream,
    /// Received bytes not yet decoded live in `inbox[inbox_start..]`.
    inbox: Vec<u8>,
    inbox_start: usize,
    /// Bytes to send live in `outbox[outbox_start..]`.
    outbox: Vec<u8>,
    outbox_start: usize,
    writable_interest: bool,
}

/// Connects and completes the client handshake with blocking IO, then hands the socket over
/// to mio.
fn connect(
    addr: SocketAddr,
    config: &ClientConfig,
    timeout: Duration,
) -> Result<MioStream, String> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let dialer = Dialer::new(
        Role::Client,
        config.cluster_id.as_bytes(),
        config.token.as_deref().unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    let mut frame = Vec::new();
    dialer.encode_hello(&mut frame);
    stream.write_all(&frame).map_err(|e| e.to_string())?;
    let mut inbox = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        match codec::decode(&inbox, HELLO_BYTES_MAX) {
            Decoded::Frame { kind, body, .. } => {
                dialer
                    .welcome(kind, &inbox[body])
                    .map_err(|e| format!("handshake: {e}"))?;
                break;
            }
            Decoded::Error(e) => return Err(format!("bad handshake: {e}")),
            Decoded::NeedMore { .. } => {}
        }
        let n = stream.read(&mut chunk).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("closed during the handshake".into());
        }
        inbox.extend_from_slice(&chunk[..n]);
    }
    stream.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok(MioStream::from_std(stream))
}

/// One connection slot: its clients, its sockets (one per node at most) and its loop.
struct Slot {
    index: usize,
    mode: Mode,
    keys: u64,
    read_percent: u8,
    value: Vec<u8>,
    config: ClientConfig,
    nodes: Vec<SocketAddr>,
    sockets: Vec<Option<Socket>>,
    /// Where reads go; where writes go, if a leader is known; the next node to probe.
    home: usize,
    leader: Option<usize>,
    probe: usize,
    clients: Vec<BenchClient>,
    /// Clients to send for now, and clients to send for at a later time.
    ready: Vec<usize>,
    later: Vec<(Instant, usize)>,
    in_flight: usize,
    next_attempt: u64,
    rng: SmallRng,
    poll: Poll,
    shared: Arc<Shared>,
    histogram: Histogram<u64>,
    errors: ErrorCounts,
    redirects: u64,
    completed_unreported: u64,
}

impl Slot {
    #[allow(clippy::too_many_arguments)]
    fn new(
        index: usize,
        args: &BenchArgs,
        config: &ClientConfig,
        leader: Option<SocketAddr>,
        value: Vec<u8>,
        client_numbers: Vec<u64>,
        session_base: u64,
        shared: Arc<Shared>,
    ) -> Slot {
        let nodes = config.nodes.clone();
        let now = Instant::now();
        let clients: Vec<BenchClient> = client_numbers
            .iter()
            .map(|&n| BenchClient {
                client_id: session_base | n,
                seq: 0,
                key: 0,
                is_write: false,
                op_started: None,
                request_id: 0,
                sent_at: now,
                on_node: 0,
            })
            .collect();
        Slot {
            index,
            mode: args.mode,
            keys: args.keys,
            read_percent: args.read_percent,
            value,
            config: config.clone(),
            home: index % nodes.len(),
            leader: leader.and_then(|l| nodes.iter().position(|&a| a == l)),
            probe: index % nodes.len(),
            sockets: nodes.iter().map(|_| None).collect(),
            nodes,
            ready: (0..clients.len()).collect(),
            clients,
            later: Vec::new(),
            in_flight: 0,
            next_attempt: 1,
            rng: SmallRng::seed_from_u64(index as u64),
            poll: Poll::new().expect("cannot create a poll instance"),
            shared,
            histogram: new_histogram(),
            errors: ErrorCounts::default(),
            redirects: 0,
            completed_unreported: 0,
        }
    }

    fn run(mut self) -> SlotResult {
        let mut events = Events::with_capacity(64);
        let mut next_scan = Instant::now() + TIMEOUT_SCAN_EVERY;
        let give_up = self.shared.end + self.config.timeout;
        loop {
            let now = Instant::now();
            if now >= give_up || (now >= self.shared.end && self.in_flight == 0) {
                break;
            }
            self.wake_due(now);
            self.send_ready(now);
            self.flush_all();
            self.publish();
            let wait = self.poll_wait(now, next_scan);
            if let Err(e) = self.poll.poll(&mut events, Some(wait)) {
                if e.kind() != io::ErrorKind::Interrupted {
                    panic!("bench slot {}: poll failed: {e}", self.index);
                }
            }
            for event in events.iter() {
                let node = event.token().0;
                if event.is_readable() || event.is_read_closed() || event.is_error() {
                    self.receive(node);
                }
                if event.is_writable() {
                    self.flush(node);
                }
            }
            let now = Instant::now();
            if now >= next_scan {
                self.expire(now);
                next_scan = now + TIMEOUT_SCAN_EVERY;
            }
        }
        self.publish();
        SlotResult {
            histogram: self.histogram,
            errors: self.errors,
            redirects: self.redirects,
        }
    }

    /// Hands counts to the progress display, once per loop turn rather than per answer.
    fn publish(&mut self) {
        if self.completed_unreported > 0 {
            self.shared
                .completed
                .fetch_add(self.completed_unreported, Ordering::Relaxed);
            self.completed_unreported = 0;
        }
    }

    fn poll_wait(&self, now: Instant, next_scan: Instant) -> Duration {
        let mut until = next_scan.min(self.shared.end.max(now));
        for &(at, _) in &self.later {
            until = until.min(at);
        }
        until
            .saturating_duration_since(now)
            .max(Duration::from_micros(100))
    }

    fn wake_due(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.later.len() {
            if self.later[i].0 <= now {
                let (_, c) = self.later.swap_remove(i);
                self.ready.push(c);
            } else {
                i += 1;
            }
        }
    }

    /// Sends the next request of every ready client: a new operation, or a re-send of the one
    /// under way. After the end, nothing more is sent.
    fn send_ready(&mut self, now: Instant) {
        let ready = std::mem::take(&mut self.ready);
        for &c in &ready {
            if now >= self.shared.end {
                self.clients[c].op_started = None;
                continue;
            }
            if self.clients[c].op_started.is_none() {
                self.start_operation(c, now);
            }
            self.send(c, now);
        }
        self.ready = ready;
        self.ready.clear();
    }

    fn start_operation(&mut self, c: usize, now: Instant) {
        let key = self.rng.gen_range(0..self.keys);
        let is_write = match self.mode {
            Mode::Write => true,
            Mode::Read => false,
            Mode::Mixed => self.rng.gen_range(0..100u8) >= self.read_percent,
        };
        let client = &mut self.clients[c];
        client.key = key;
        client.is_write = is_write;
        if is_write {
            client.seq += 1;
        }
        client.op_started = Some(now);
    }

    /// The node a client's request goes to.
    fn route(&mut self, is_write: bool) -> usize {
        if !is_write {
            return self.home;
        }
        match self.leader {
            Some(l) => l,
            None => {
                self.probe = (self.probe + 1) % self.nodes.len();
                self.probe
            }
        }
    }

    fn send(&mut self, c: usize, now: Instant) {
        let is_write = self.clients[c].is_write;
        let node = self.route(is_write);
        if let Err(e) = self.ensure_socket(node) {
            log_once(&format!("bench: {}: {e}", self.nodes[node]));
            self.errors.connection += 1;
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            self.forget_node(node);
            self.later.push((now + RETRY_PAUSE, c));
            return;
        }
        let request_id = (self.next_attempt << CLIENT_INDEX_BITS) | c as u64;
        self.next_attempt += 1;
        let client = &mut self.clients[c];
        let key = format!("bench/{:08}", client.key).into_bytes();
        let op = if is_write {
            Op::Write(Command {
                client_id: client.client_id,
                seq: client.seq,
                write: Write::Put {
                    key,
                    value: self.value.clone(),
                },
            })
        } else {
            Op::Get { key }
        };
        client.request_id = request_id;
        client.sent_at = now;
        client.on_node = node;
        self.in_flight += 1;
        let body = Request { request_id, op }.encode();
        let socket = self.sockets[node].as_mut().expect("ensured");
        codec::encode_frame(&mut socket.outbox, FRAME_REQUEST, &body);
    }

    /// After a node failed: writes find the leader again; reads move to the next node.
    fn forget_node(&mut self, node: usize) {
        if self.leader == Some(node) {
            self.leader = None;
        }
        if self.home == node {
            self.home = (node + 1) % self.nodes.len();
        }
    }

    fn ensure_socket(&mut self, node: usize) -> Result<(), String> {
        if self.sockets[node].is_some() {
            return Ok(());
        }
        let limit = self.config.timeout.min(Duration::from_secs(1));
        let mut stream = connect(self.nodes[node], &self.config, limit)?;
        self.poll
            .registry()
            .register(&mut stream, Token(node), Interest::READABLE)
            .map_err(|e| e.to_string())?;
        self.sockets[node] = Some(Socket {
            stream,
            inbox: Vec::with_capacity(64 << 10),
            inbox_start: 0,
            outbox: Vec::with_capacity(64 << 10),
            outbox_start: 0,
            writable_interest: false,
        });
        Ok(())
    }

    fn flush_all(&mut self) {
        for node in 0..self.sockets.len() {
            if self.sockets[node]
                .as_ref()
                .is_some_and(|s| s.outbox_start < s.outbox.len())
            {
                self.flush(node);
            }
        }
    }

    /// Writes what the socket takes; asks for writability only while bytes are left.
    fn flush(&mut self, node: usize) {
        let Some(s) = self.sockets[node].as_mut() else {
            return;
        };
        let mut failed = false;
        while s.outbox_start < s.outbox.len() {
            match s.stream.write(&s.outbox[s.outbox_start..]) {
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
        if failed {
            self.drop_socket(node);
            return;
        }
        if s.outbox_start == s.outbox.len() {
            s.outbox.clear();
            s.outbox_start = 0;
        }
        let want = s.outbox_start < s.outbox.len();
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
                self.drop_socket(node);
                return;
            }
            s.writable_interest = want;
        }
    }

    /// Reads what arrived and handles every complete answer.
    fn receive(&mut self, node: usize) {
        let Some(s) = self.sockets[node].as_mut() else {
            return;
        };
        let mut closed = false;
        loop {
            if s.inbox_start > 0 && s.inbox_start * 2 >= s.inbox.len() {
                s.inbox.drain(..s.inbox_start);
                s.inbox_start = 0;
            }
            let filled = s.inbox.len();
            s.inbox.resize(filled + (64 << 10), 0);
            let result = s.stream.read(&mut s.inbox[filled..]);
            s.inbox.truncate(filled + *result.as_ref().unwrap_or(&0));
            match result {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        let now = Instant::now();
        loop {
            let s = self.sockets[node].as_mut().expect("present");
            let response = match codec::decode(&s.inbox[s.inbox_start..], RESPONSE_BYTES_MAX) {
                Decoded::NeedMore { .. } => break,
                Decoded::Error(_) => {
                    closed = true;
                    break;
                }
                Decoded::Frame { body, consumed, .. } => {
                    let start = s.inbox_start;
                    let r = Response::decode(&s.inbox[start + body.start..start + body.end]);
                    s.inbox_start += consumed;
                    r
                }
            };
            match response {
                Ok(r) => self.answer(node, r, now),
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            self.drop_socket(node);
        }
    }

    /// Closes a socket; every request on it failed and is re-sent after a pause.
    fn drop_socket(&mut self, node: usize) {
        if let Some(mut s) = self.sockets[node].take() {
            let _ = self.poll.registry().deregister(&mut s.stream);
        }
        self.forget_node(node);
        let retry_at = Instant::now() + RETRY_PAUSE;
        for c in 0..self.clients.len() {
            let client = &mut self.clients[c];
            if client.request_id != 0 && client.on_node == node {
                client.request_id = 0;
                self.in_flight -= 1;
                self.errors.connection += 1;
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                self.later.push((retry_at, c));
            }
        }
    }

    /// Handles one answer: a success is measured and the client moves on; anything else is
    /// counted and the same operation is sent again.
    fn answer(&mut self, node: usize, response: Response, now: Instant) {
        let c = (response.request_id & CLIENT_INDEX_MASK) as usize;
        match self.clients.get(c) {
            Some(client)
                if client.request_id == response.request_id && response.request_id != 0 => {}
            _ => return, // An answer to an attempt already given up on.
        }
        self.in_flight -= 1;
        self.clients[c].request_id = 0;
        match response.outcome {
            Outcome::Written { .. } | Outcome::Value(_) => self.succeeded(c, now),
            Outcome::NotLeader { address, .. } => {
                self.redirects += 1;
                let target = address
                    .parse::<SocketAddr>()
                    .ok()
                    .map(|a| self.node_index(a));
                self.leader = target;
                if target.is_some() && target != Some(node) {
                    self.ready.push(c);
                } else {
                    self.later.push((now + RETRY_PAUSE, c));
                }
            }
            Outcome::Unavailable { .. } => {
                self.errors.unavailable += 1;
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                self.later.push((now + RETRY_PAUSE, c));
            }
            _ => {
                // Refused or an answer that fits no request: count it and move on, so a
                // refusal cannot spin; the pause keeps a refusing cluster from being flooded.
                self.errors.refused += 1;
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                self.clients[c].op_started = None;
                self.later.push((now + RETRY_PAUSE, c));
            }
        }
    }

    fn succeeded(&mut self, c: usize, now: Instant) {
        let client = &mut self.clients[c];
        let started = client.op_started.take().expect("an operation under way");
        if started >= self.shared.measure_from && started < self.shared.end {
            let micros = now.duration_since(started).as_micros() as u64;
            self.histogram.saturating_record(micros.max(1));
        }
        if client.is_write {
            self.shared.write_succeeded(now);
        }
        self.completed_unreported += 1;
        self.ready.push(c);
    }

    /// The index of a node address, adding it if a redirect names one not given.
    fn node_index(&mut self, addr: SocketAddr) -> usize {
        if let Some(i) = self.nodes.iter().position(|&a| a == addr) {
            return i;
        }
        self.nodes.push(addr);
        self.sockets.push(None);
        self.nodes.len() - 1
    }

    /// Requests unanswered for longer than the timeout count as failed and are re-sent.
    fn expire(&mut self, now: Instant) {
        let timeout = self.config.timeout;
        for c in 0..self.clients.len() {
            let client = &mut self.clients[c];
            if client.request_id != 0 && now.duration_since(client.sent_at) >= timeout {
                client.request_id = 0;
                self.in_flight -= 1;
                self.errors.timeouts += 1;
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                self.ready.push(c);
            }
        }
    }
}

/// Prints a connection failure once per distinct message, so a dead node does not flood.
fn log_once(message: &str) {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if seen
        .get_or_insert_with(HashSet::new)
        .insert(message.to_string())
    {
        eprintln!("{message}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gap tracker keeps the longest pause between successful writes inside the measured
    /// window, whatever order the answers are noted in, and ignores the warm-up.
    #[test]
    fn longest_write_gap() {
        let started = Instant::now();
        let at = |ms: u64| started + Duration::from_millis(ms);
        let shared = Shared {
            started,
            measure_from: at(100),
            end: at(10_000),
            completed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_write_ns: AtomicU64::new(100_000_000),
            write_gap_max_ns: AtomicU64::new(0),
            write_gap_end_ns: AtomicU64::new(0),
        };
        for ms in [50, 150, 200, 900, 850, 1000] {
            shared.write_succeeded(at(ms));
        }
        assert_eq!(shared.write_gap_max_ns.load(Ordering::Acquire), 700_000_000);
        assert_eq!(shared.write_gap_end_ns.load(Ordering::Acquire), 900_000_000);
    }
}
