//! `raftctl bench`: a closed-loop load generator for a raftd cluster.
//!
//! The workload mirrors the etcd load generator it is compared with: N logical clients, each
//! sending its next request only after the answer to the previous one; a random key out of
//! `--keys` named `bench/%08d`; values of `--value-bytes`; a warm-up that is not measured, then
//! `--duration` measured; latency taken at the client from the first send of an operation to
//! its successful answer (redirects and retries included).
//!
//! Clients are spread over C connection slots and each slot is one thread turning one
//! non-blocking client (`raftd_client::nonblocking`), whose operations are the slot's
//! clients' operations. It keeps at most one connection per node: reads go to the slot's home
//! node (homes are spread over all nodes), writes go to the leader. Requests on one connection
//! are matched to clients by `request_id`, so a connection carries all its clients'
//! outstanding requests at once, and the requests made ready by one batch of answers leave in
//! one write. In write mode the home connection is never opened, so a slot is exactly one
//! connection, to the leader; in mixed mode a slot whose home is a follower holds two.
//!
//! `--mode prefill` writes every key once, `bench/00000000` up to `--keys`, and stops (the
//! etcd load generator's `-mode prefill`): a read or mixed run measured after it finds a value
//! behind every key, and it is the quickest way to fill a store to a given number of keys.
//!
//! Besides the measured figures, a run prints `ops_incl_warmup`: the successful operations of
//! the whole run, warm-up included, which is what the nodes' CPU time over the run is divided
//! by (as the etcd side does).
//!
//! Writes carry a per-client session id and sequence number; the non-blocking client re-sends
//! a write that must be (redirected, timed out, its connection lost) with its sequence number,
//! so the cluster applies it once. A `NotLeader` answer moves the slot's writes to the named
//! leader; with no leader known, writes probe the nodes in turn with a short back-off. The
//! slot counts failures by kind; they never end the run.

use crate::failure::Failure;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use raftd_client::nonblocking::{self, Event, Retry};
use raftd_client::protocol::{Command, Op, Outcome, Write};
use raftd_client::ClientConfig;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::{self, IsTerminal};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this many logical clients (a slot's clients are its non-blocking client's
/// operation tags).
const CLIENTS_MAX: usize = 1 << 20;
const _: () = assert!(CLIENTS_MAX <= nonblocking::OPS_MAX);

/// What the benchmark sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// Put only (through the leader).
    Write,
    /// Linearizable gets only (spread over all nodes).
    Read,
    /// Gets and puts, `--read-percent` of them gets.
    Mixed,
    /// Put every key once (0 up to `--keys`), then stop; no warm-up, `--duration` ignored.
    Prefill,
}

/// A prefill stops here at the latest, whatever is left.
const PREFILL_TIME_MAX: Duration = Duration::from_secs(3600);

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
    #[arg(long, default_value = "2s", value_parser = crate::parse::parse_duration)]
    warmup: Duration,
    /// Measure for this long.
    #[arg(long, default_value = "15s", value_parser = crate::parse::parse_duration)]
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
    /// Successful operations so far, warm-up included (the progress display, and the count
    /// the nodes' CPU time is divided by).
    completed: AtomicU64,
    /// In a prefill, the next key number to write.
    prefill_next: AtomicU64,
    /// Slots still running (the progress display stops when none is).
    slots_running: AtomicU64,
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
    if args.value_bytes > raftd_client::protocol::VALUE_BYTES_MAX {
        return Err(Failure::Usage(format!(
            "--value-bytes must be at most {}",
            raftd_client::protocol::VALUE_BYTES_MAX
        )));
    }
    let started = Instant::now();
    // A prefill measures every write from the start and ends when the keys are written.
    let (warmup, window) = match args.mode {
        Mode::Prefill => (Duration::ZERO, PREFILL_TIME_MAX),
        _ => (args.warmup, args.duration),
    };
    let shared = Arc::new(Shared {
        started,
        measure_from: started + warmup,
        end: started + warmup + window,
        completed: AtomicU64::new(0),
        prefill_next: AtomicU64::new(0),
        slots_running: AtomicU64::new(connections as u64),
        errors: AtomicU64::new(0),
        last_write_ns: AtomicU64::new(warmup.as_nanos() as u64),
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
        )?;
        let t = std::thread::Builder::new()
            .name(format!("bench-{slot}"))
            .spawn(move || {
                let shared = s.shared.clone();
                let result = s.run();
                shared.slots_running.fetch_sub(1, Ordering::AcqRel);
                result
            })
            .map_err(|e| Failure::Definite(format!("cannot start a thread: {e}")))?;
        threads.push(t);
    }
    show_progress(&shared, (args.mode == Mode::Prefill).then_some(args.keys));
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
    let finished = Instant::now();
    // Writes that stopped for good before the end leave a gap up to the end.
    if args.mode == Mode::Write || args.mode == Mode::Mixed {
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
        measured: match args.mode {
            Mode::Prefill => finished.saturating_duration_since(started),
            _ => args.duration,
        },
        ops_incl_warmup: shared.completed.load(Ordering::Acquire),
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

/// A progress bar on a terminal, else a line per second, on stderr; returns at the end (of a
/// prefill of `prefill_keys`: when every slot has stopped).
fn show_progress(shared: &Shared, prefill_keys: Option<u64>) {
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
        let (phase, fraction, progress) = match prefill_keys {
            Some(keys) => (
                "prefill",
                done as f64 / keys as f64,
                format!("{done}/{keys} keys"),
            ),
            None => (
                if now < shared.measure_from {
                    "warm-up"
                } else {
                    "measure"
                },
                elapsed.as_secs_f64() / total.as_secs_f64(),
                format!("{:.0}/{:.0}s", elapsed.as_secs_f64(), total.as_secs_f64()),
            ),
        };
        let errors = shared.errors.load(Ordering::Relaxed);
        if tty {
            let width = 30;
            let filled = ((fraction * width as f64) as usize).min(width);
            eprint!(
                "\r{phase} [{}{}] {progress} {rate:>9.0} ops/s errors={errors}   ",
                "#".repeat(filled),
                ".".repeat(width - filled),
            );
        } else {
            eprintln!("bench: {phase} {progress} {rate:.0} ops/s errors={errors}");
        }
        // The slots stop by themselves within one timeout after the end (a prefill's when
        // the keys are written).
        if now >= shared.end || shared.slots_running.load(Ordering::Acquire) == 0 {
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
    /// The measured window: `--duration`, or how long a prefill took.
    measured: Duration,
    /// Successful operations over the whole run, warm-up included.
    ops_incl_warmup: u64,
    write_gap_max_ns: u64,
    write_gap_end_ns: u64,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl Report<'_> {
    fn ops_per_s(&self) -> f64 {
        self.histogram.len() as f64 / self.measured.as_secs_f64().max(1e-9)
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        ms(self.histogram.value_at_quantile(q))
    }

    fn mode(&self) -> &'static str {
        match self.args.mode {
            Mode::Write => "write",
            Mode::Read => "read",
            Mode::Mixed => "mixed",
            Mode::Prefill => "prefill",
        }
    }

    /// One line, in the etcd load generator's layout so the two compare field by field.
    fn line(&self) -> String {
        let h = &self.histogram;
        format!(
            "raftd-{} [rust] clients={} conns={} mode={} value={}B dur={:?}: ops={} ops/s={:.0} p50={:.2}ms p90={:.2}ms p99={:.2}ms p99.9={:.2}ms max={:.2}ms errors={} (timeouts={} unavailable={} connection={} refused={}) redirects={}{} ops_incl_warmup={}",
            self.nodes,
            self.args.clients,
            self.connections,
            self.mode(),
            self.args.value_bytes,
            self.measured,
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
            self.ops_incl_warmup,
        )
    }

    /// The longest pause between successful writes (none in read mode).
    fn gap_text(&self) -> String {
        if self.args.mode == Mode::Read || self.args.mode == Mode::Prefill {
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
            "duration_s": self.measured.as_secs_f64(),
            "ops": h.len(),
            "ops_incl_warmup": self.ops_incl_warmup,
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
    /// Whether the operation under way is a write.
    is_write: bool,
    /// When the operation under way was first sent (`None`: no operation under way).
    op_started: Option<Instant>,
}

/// One connection slot: its clients, and the non-blocking client that carries their
/// operations over at most one connection per node.
struct Slot {
    index: usize,
    mode: Mode,
    keys: u64,
    read_percent: u8,
    value: Vec<u8>,
    timeout: Duration,
    client: nonblocking::Client,
    clients: Vec<BenchClient>,
    /// Clients to start an operation for now.
    ready: Vec<usize>,
    /// A prefill found no key left to write: the slot ends once nothing is in flight.
    exhausted: bool,
    rng: SmallRng,
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
    ) -> Result<Slot, Failure> {
        // Reads go to the slot's home node; homes are spread over all nodes.
        let mut client =
            nonblocking::Client::new(config, client_numbers.len(), index).map_err(|e| {
                match e.kind() {
                    io::ErrorKind::InvalidInput => Failure::Usage(e.to_string()),
                    _ => Failure::Definite(format!("cannot start the benchmark: {e}")),
                }
            })?;
        if let Some(leader) = leader {
            client.set_leader(leader);
        }
        let clients: Vec<BenchClient> = client_numbers
            .iter()
            .map(|&n| BenchClient {
                client_id: session_base | n,
                seq: 0,
                is_write: false,
                op_started: None,
            })
            .collect();
        Ok(Slot {
            index,
            mode: args.mode,
            keys: args.keys,
            read_percent: args.read_percent,
            value,
            timeout: config.timeout,
            client,
            ready: (0..clients.len()).collect(),
            exhausted: false,
            clients,
            rng: SmallRng::seed_from_u64(index as u64),
            shared,
            histogram: new_histogram(),
            errors: ErrorCounts::default(),
            redirects: 0,
            completed_unreported: 0,
        })
    }

    fn run(mut self) -> SlotResult {
        let mut events = Vec::new();
        let give_up = self.shared.end + self.timeout;
        loop {
            let now = Instant::now();
            let idle = self.client.in_flight() == 0;
            if now >= give_up || (idle && (now >= self.shared.end || self.exhausted)) {
                break;
            }
            self.start_ready(now);
            self.publish();
            let wait = self.poll_wait(now);
            if let Err(e) = self.client.poll(Some(wait), &mut events) {
                panic!("bench slot {}: poll failed: {e}", self.index);
            }
            let now = Instant::now();
            for event in events.drain(..) {
                self.on_event(event, now);
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

    /// Until the end of the run (the client shortens it to its own timers).
    fn poll_wait(&self, now: Instant) -> Duration {
        self.shared
            .end
            .max(now)
            .saturating_duration_since(now)
            .max(Duration::from_micros(100))
    }

    /// Starts the next operation of every ready client.
    fn start_ready(&mut self, now: Instant) {
        let ready = std::mem::take(&mut self.ready);
        for &c in &ready {
            self.start_operation(c, now, now);
        }
        self.ready = ready;
        self.ready.clear();
    }

    /// Hands the client's next operation to the non-blocking client, to leave at `at` (now,
    /// or after a pause), which re-sends it (a write with the same sequence number) until the
    /// end of the run. After the end, nothing more starts.
    fn start_operation(&mut self, c: usize, at: Instant, now: Instant) {
        if at >= self.shared.end {
            self.clients[c].op_started = None;
            return;
        }
        let number = match self.mode {
            Mode::Prefill => self.shared.prefill_next.fetch_add(1, Ordering::Relaxed),
            _ => self.rng.gen_range(0..self.keys),
        };
        if number >= self.keys {
            self.exhausted = true;
            self.clients[c].op_started = None;
            return;
        }
        let key = bench_key(number);
        let is_write = match self.mode {
            Mode::Write | Mode::Prefill => true,
            Mode::Read => false,
            Mode::Mixed => self.rng.gen_range(0..100u8) >= self.read_percent,
        };
        let client = &mut self.clients[c];
        client.is_write = is_write;
        client.op_started = Some(at);
        let op = if is_write {
            client.seq += 1;
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
        if at > now {
            self.client.submit_at(c, op, at, self.shared.end);
        } else {
            self.client.submit(c, op, self.shared.end);
        }
    }

    /// Counts what the client reports: a success is measured and the client moves on; a
    /// failed attempt is counted (the client sends it again); a refusal is counted and the
    /// client starts a new operation after a pause, so a refusing cluster is not flooded.
    fn on_event(&mut self, event: Event, now: Instant) {
        match event {
            Event::Answered {
                tag,
                outcome: Outcome::Written { .. } | Outcome::Value(_),
            } => self.succeeded(tag, now),
            Event::Answered { tag, .. } => {
                self.errors.refused += 1;
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                self.start_operation(tag, now + nonblocking::RETRY_PAUSE, now);
            }
            Event::Retrying { reason, .. } => self.retried(reason),
            Event::GaveUp { tag } => self.clients[tag].op_started = None,
            Event::ConnectFailed { node, error } => log_once(&format!("bench: {node}: {error}")),
        }
    }

    fn retried(&mut self, reason: Retry) {
        let count = match reason {
            // A redirect is the cluster's answer, not a failure.
            Retry::Redirected => {
                self.redirects += 1;
                return;
            }
            Retry::TimedOut => &mut self.errors.timeouts,
            Retry::Unavailable => &mut self.errors.unavailable,
            Retry::Connection => &mut self.errors.connection,
        };
        *count += 1;
        self.shared.errors.fetch_add(1, Ordering::Relaxed);
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

/// The key of number `number`: `bench/` and the number in at least eight digits, as the
/// etcd load generator names its keys (`format!("bench/{number:08}")` without the
/// formatting machinery, which was a twentieth of the load generator's CPU).
fn bench_key(number: u64) -> Vec<u8> {
    const PREFIX: &[u8] = b"bench/";
    let mut digits = [b'0'; 20];
    let mut first = digits.len();
    let mut rest = number;
    loop {
        first -= 1;
        digits[first] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let digits = &digits[first.min(digits.len() - 8)..];
    let mut key = Vec::with_capacity(PREFIX.len() + digits.len());
    key.extend_from_slice(PREFIX);
    key.extend_from_slice(digits);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_named_like_the_etcd_load_generator_names_them() {
        let numbers = [
            0,
            7,
            42,
            99_999,
            12_345_678,
            99_999_999,
            100_000_000,
            u64::MAX,
        ];
        for number in numbers {
            assert_eq!(bench_key(number), format!("bench/{number:08}").into_bytes());
        }
    }

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
            prefill_next: AtomicU64::new(0),
            slots_running: AtomicU64::new(1),
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
