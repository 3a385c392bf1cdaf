//! The node's figures for Prometheus: what the event loop counts, the snapshot of them it
//! publishes when asked, and their encoding in the text exposition format.
//!
//! Counting costs the loop next to nothing: the [`Counters`] are plain integers owned by the
//! replica, bumped where things happen (a reply sent, a WAL sync done, a snapshot written),
//! and most figures (term, commit index, transport totals, the scrubber's) are not counted
//! at all but read from where they already live when a scrape asks for them. A scrape
//! reaches the loop only as one flag the loop checks once per turn (see
//! [`crate::metrics_http`]); the loop then copies the figures into a [`Figures`] and hands
//! it over, and everything slow (formatting, HTTP) happens on the listener's thread.
//!
//! Names follow Prometheus' conventions (a `raftd_` prefix, base units of seconds and
//! bytes, `_total` for counters) and take etcd's names where the meaning is the same
//! (`raftd_server_has_leader` for `etcd_server_has_leader`, ...), so dashboards and alerts
//! written for etcd carry over with the prefix changed. The encoding is `prometheus-client`'s
//! (OpenMetrics text, which Prometheus reads).

use crate::protocol::{CommandRef, Op, Outcome, WriteRef};
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use std::fmt::Error as FmtError;
use std::time::Duration;

/// How far the applied index may trail the commit index on a healthy node, in entries:
/// etcd's bound for the same check (`maxGapBetweenApplyAndCommitIndex`).
pub const HEALTH_APPLY_LAG_MAX: u64 = 5000;

/// A heartbeat unanswered this long is taken as lost: the next one is timed instead.
const PROBE_LOST_AFTER: Duration = Duration::from_secs(5);

/// Upper bounds of disk-latency histograms (WAL sync, proposal, snapshot save), in seconds:
/// 1 ms doubling to 8.192 s, etcd's buckets for `etcd_disk_wal_fsync_duration_seconds`.
const DISK_BUCKETS: [f64; 14] = [
    0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.024, 2.048, 4.096,
    8.192,
];

/// Upper bounds of the peer round-trip histogram, in seconds: 0.1 ms doubling to 0.8192 s,
/// etcd's buckets for `etcd_network_peer_round_trip_time_seconds`.
const ROUND_TRIP_BUCKETS: [f64; 14] = [
    0.0001, 0.0002, 0.0004, 0.0008, 0.0016, 0.0032, 0.0064, 0.0128, 0.0256, 0.0512, 0.1024, 0.2048,
    0.4096, 0.8192,
];

/// Buckets per histogram: the bounds above and +Inf.
const BUCKETS: usize = DISK_BUCKETS.len() + 1;
const _: () = assert!(ROUND_TRIP_BUCKETS.len() == DISK_BUCKETS.len());

/// A histogram the loop fills with plain integer adds: fixed bounds, a count per bucket
/// (not cumulative), the sum and the count.
#[derive(Clone, Debug)]
pub struct Histogram {
    bounds: &'static [f64; BUCKETS - 1],
    counts: [u64; BUCKETS],
    sum_seconds: f64,
    count: u64,
}

impl Histogram {
    fn new(bounds: &'static [f64; BUCKETS - 1]) -> Histogram {
        Histogram {
            bounds,
            counts: [0; BUCKETS],
            sum_seconds: 0.0,
            count: 0,
        }
    }

    /// Records one duration.
    pub fn observe(&mut self, d: Duration) {
        let seconds = d.as_secs_f64();
        let bucket = self
            .bounds
            .iter()
            .position(|&b| seconds <= b)
            .unwrap_or(BUCKETS - 1);
        self.counts[bucket] += 1;
        self.sum_seconds += seconds;
        self.count += 1;
    }

    /// Durations recorded.
    pub fn count(&self) -> u64 {
        self.count
    }

    fn encode(&self, encoder: &mut MetricEncoder) -> Result<(), FmtError> {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain([f64::MAX]) // +Inf for the encoder
            .zip(self.counts)
            .collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum_seconds, self.count, &buckets, None)
    }
}

/// What a client asked for, as the `kind` label of `raftd_server_client_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// A put.
    Put,
    /// A delete.
    Delete,
    /// A compare-and-swap.
    Cas,
    /// A checkpoint written through the log.
    Checkpoint,
    /// A linearizable read.
    Get,
    /// `raftctl status`.
    Status,
    /// `raftctl snapshot ID`.
    Snapshot,
    /// `raftctl transfer-leader`.
    TransferLeader,
    /// `raftctl fault`.
    Fault,
    /// `raftctl kill`.
    Shutdown,
    /// `raftctl check consistency`: a checkpoint's hash.
    CheckpointHash,
    /// `raftctl snapshot save`: a backup's chunk.
    Backup,
    /// `raftctl member add|promote|remove`.
    ChangeMembers,
    /// A frame or request that did not decode.
    Invalid,
}

impl RequestKind {
    /// Every kind, in label order.
    const ALL: [RequestKind; 14] = [
        RequestKind::Put,
        RequestKind::Delete,
        RequestKind::Cas,
        RequestKind::Checkpoint,
        RequestKind::Get,
        RequestKind::Status,
        RequestKind::Snapshot,
        RequestKind::TransferLeader,
        RequestKind::Fault,
        RequestKind::Shutdown,
        RequestKind::CheckpointHash,
        RequestKind::Backup,
        RequestKind::ChangeMembers,
        RequestKind::Invalid,
    ];

    /// The kind of a write.
    pub fn of_write(write: WriteRef<'_>) -> RequestKind {
        match write {
            WriteRef::Put { .. } => RequestKind::Put,
            WriteRef::Delete { .. } => RequestKind::Delete,
            WriteRef::Cas { .. } => RequestKind::Cas,
            WriteRef::Checkpoint => RequestKind::Checkpoint,
        }
    }

    /// The kind of a request.
    pub fn of(op: &Op) -> RequestKind {
        match op {
            Op::Write(command) => RequestKind::of_write(CommandRef::from(command).write),
            Op::Get { .. } => RequestKind::Get,
            Op::Status => RequestKind::Status,
            Op::Snapshot => RequestKind::Snapshot,
            Op::TransferLeader { .. } => RequestKind::TransferLeader,
            Op::Fault(_) => RequestKind::Fault,
            Op::Shutdown { .. } => RequestKind::Shutdown,
            Op::Checkpoint { .. } => RequestKind::CheckpointHash,
            Op::Backup { .. } => RequestKind::Backup,
            Op::ChangeMembers { .. } => RequestKind::ChangeMembers,
        }
    }

    fn label(self) -> &'static str {
        match self {
            RequestKind::Put => "put",
            RequestKind::Delete => "delete",
            RequestKind::Cas => "cas",
            RequestKind::Checkpoint => "checkpoint",
            RequestKind::Get => "get",
            RequestKind::Status => "status",
            RequestKind::Snapshot => "snapshot",
            RequestKind::TransferLeader => "transfer_leader",
            RequestKind::Fault => "fault",
            RequestKind::Shutdown => "shutdown",
            RequestKind::CheckpointHash => "checkpoint_hash",
            RequestKind::Backup => "backup",
            RequestKind::ChangeMembers => "change_members",
            RequestKind::Invalid => "invalid",
        }
    }
}

/// The `outcome` labels, in the order of `outcome_index`.
const OUTCOMES: [&str; 10] = [
    "written",
    "cas_mismatch",
    "value",
    "done",
    "status",
    "not_leader",
    "unavailable",
    "refused",
    "checkpoint",
    "backup",
];

fn outcome_index(outcome: &Outcome) -> usize {
    match outcome {
        Outcome::Written { .. } => 0,
        Outcome::CasMismatch { .. } => 1,
        Outcome::Value(_) => 2,
        Outcome::Done { .. } => 3,
        Outcome::Status(_) => 4,
        Outcome::NotLeader { .. } => 5,
        Outcome::Unavailable { .. } => 6,
        Outcome::Refused { .. } => 7,
        Outcome::Checkpoint { .. } => 8,
        Outcome::Backup(_) => 9,
    }
}

/// The leader's round-trip timing of one peer: the heartbeat being timed (its read round
/// and when it left) and the histogram.
#[derive(Clone, Debug)]
struct PeerRoundTrip {
    peer: u64,
    probe: Option<(u64, Duration)>,
    round_trip: Histogram,
}

/// What the event loop counts itself (everything else is read when a scrape asks). Plain
/// integers: only the loop's thread touches them.
#[derive(Clone, Debug)]
pub struct Counters {
    /// The leader last seen (0: none yet).
    last_leader: u64,
    /// Changes to a known leader other than the last one seen.
    leader_changes: u64,
    /// The commit and applied indexes when the process started, so that the committed and
    /// applied totals count this process's work, as counters should.
    commit_at_start: u64,
    applied_at_start: u64,
    /// Proposals that did not commit: refused by the core (back-pressure, a transfer under
    /// way), or lost to a change of leader or a snapshot.
    proposals_failed: u64,
    /// From a client's write reaching the leader to its answer.
    proposal_duration: Histogram,
    /// One WAL sync (pwrite + fdatasync or msync of the batch, and what it needs).
    fsync_duration: Histogram,
    /// Writing a snapshot of the store: from its start to its file being durable.
    snapshot_save_duration: Histogram,
    snapshot_save_bytes: u64,
    scrub_steps_yielded: u64,
    /// When the snapshot being written started.
    snapshot_started: Option<Duration>,
    /// Answers sent to clients, by [`RequestKind`] and outcome.
    requests: [[u64; OUTCOMES.len()]; RequestKind::ALL.len()],
    round_trips: Vec<PeerRoundTrip>,
}

impl Counters {
    /// Counters starting now, at these commit and applied indexes.
    pub fn new(commit: u64, applied: u64) -> Counters {
        Counters {
            last_leader: 0,
            leader_changes: 0,
            commit_at_start: commit,
            applied_at_start: applied,
            proposals_failed: 0,
            proposal_duration: Histogram::new(&DISK_BUCKETS),
            fsync_duration: Histogram::new(&DISK_BUCKETS),
            snapshot_save_duration: Histogram::new(&DISK_BUCKETS),
            snapshot_save_bytes: 0,
            scrub_steps_yielded: 0,
            snapshot_started: None,
            requests: [[0; OUTCOMES.len()]; RequestKind::ALL.len()],
            round_trips: Vec::new(),
        }
    }

    /// Once per loop turn: the leader the node knows now.
    pub fn leader_seen(&mut self, leader: u64) {
        if leader != 0 && leader != self.last_leader {
            // The first leader seen after a start counts too, as etcd counts it.
            self.leader_changes += 1;
            self.last_leader = leader;
        }
    }

    /// Leader changes seen so far.
    pub fn leader_changes(&self) -> u64 {
        self.leader_changes
    }

    /// An answer sent to a client.
    pub fn answered(&mut self, kind: RequestKind, outcome: &Outcome) {
        self.requests[kind as usize][outcome_index(outcome)] += 1;
    }

    /// A proposal that will not commit.
    pub fn proposal_failed(&mut self) {
        self.proposals_failed += 1;
    }

    /// A client's write answered `waited` after it arrived.
    pub fn proposal_done(&mut self, waited: Duration) {
        self.proposal_duration.observe(waited);
    }

    /// A WAL sync that took `took`.
    pub fn wal_synced(&mut self, took: Duration) {
        self.fsync_duration.observe(took);
    }

    /// A snapshot's writing started at `now`.
    pub fn snapshot_started(&mut self, now: Duration) {
        self.snapshot_started = Some(now);
    }

    /// The snapshot started last is durable at `now`, `bytes` long.
    pub fn snapshot_saved(&mut self, now: Duration, bytes: usize) {
        if let Some(started) = self.snapshot_started.take() {
            self.snapshot_save_duration
                .observe(now.saturating_sub(started));
            self.snapshot_save_bytes += bytes as u64;
        }
    }

    /// A scrubber step read less: the node wrote faster than the scrubber reads.
    pub fn scrub_yielded(&mut self) {
        self.scrub_steps_yielded += 1;
    }

    /// A snapshot's writing was given up (no space).
    pub fn snapshot_abandoned(&mut self) {
        self.snapshot_started = None;
    }

    /// On a leader, a heartbeat of read round `read_seq` left for `peer` at `now`: it is
    /// timed unless another one is (and was not lost).
    pub fn heartbeat_sent(&mut self, peer: u64, read_seq: u64, now: Duration) {
        let rt = self.round_trip(peer);
        match rt.probe {
            Some((_, sent)) if now.saturating_sub(sent) < PROBE_LOST_AFTER => {}
            _ => rt.probe = Some((read_seq, now)),
        }
    }

    /// The answer of `peer` to the heartbeat of round `read_seq` arrived at `now`.
    pub fn heartbeat_answered(&mut self, peer: u64, read_seq: u64, now: Duration) {
        let rt = self.round_trip(peer);
        if let Some((seq, sent)) = rt.probe {
            if seq == read_seq {
                rt.round_trip.observe(now.saturating_sub(sent));
                rt.probe = None;
            }
        }
    }

    fn round_trip(&mut self, peer: u64) -> &mut PeerRoundTrip {
        let i = match self.round_trips.iter().position(|r| r.peer == peer) {
            Some(i) => i,
            None => {
                self.round_trips.push(PeerRoundTrip {
                    peer,
                    probe: None,
                    round_trip: Histogram::new(&ROUND_TRIP_BUCKETS),
                });
                self.round_trips.len() - 1
            }
        };
        &mut self.round_trips[i]
    }
}

/// One peer link's totals, from the transport.
#[derive(Clone, Debug, Default)]
pub struct PeerFigures {
    /// The peer's id.
    pub id: u64,
    /// Whether this node's connection to it is up.
    pub connected: bool,
    /// Bytes and frames queued for it.
    pub sent_bytes: u64,
    /// Frames queued for it.
    pub sent_frames: u64,
    /// Bytes received from it.
    pub received_bytes: u64,
    /// Frames received from it.
    pub received_frames: u64,
    /// Frames for it dropped: outbox full, not connected, by the fault layer.
    pub dropped_frames: [u64; 3],
    /// Reconnections after the first connection.
    pub reconnects: u64,
}

/// The `reason` labels of dropped frames, in `PeerFigures::dropped_frames` order.
const DROP_REASONS: [&str; 3] = ["outbox_full", "not_connected", "fault_layer"];

/// Everything a scrape shows, copied out of the loop in one go.
#[derive(Clone, Debug)]
pub struct Figures {
    /// This node's id.
    pub id: u64,
    /// The leader it knows (0: none).
    pub leader: u64,
    /// Its current term.
    pub term: u64,
    /// Commit index.
    pub commit: u64,
    /// Applied index.
    pub applied: u64,
    /// Writes proposed and waiting for their entry to apply.
    pub proposals_pending: u64,
    /// Repairing a damaged WAL (votes in no election until done).
    pub repairing: bool,
    /// The consistency alarm, if raised.
    pub alarm: Option<String>,
    /// The WAL's bytes on disk and segments.
    pub wal_bytes: u64,
    /// WAL segment files.
    pub wal_segments: u64,
    /// WAL segments a rollover created without zero-fill since the process started.
    pub wal_segments_unfilled: u64,
    /// WAL segments made from a segment compaction freed since the process started.
    pub wal_segments_reused: u64,
    /// Where the latest snapshot ends.
    pub snapshot_index: u64,
    /// The scrubber's totals.
    pub scrub: wal::ScrubTotals,
    /// Client connections open.
    pub clients: u64,
    /// Connections closed for bad input (bad frames, failed handshakes, timeouts).
    pub connections_rejected: u64,
    /// Frames to clients dropped because a client's outbox was full.
    pub client_frames_dropped: u64,
    /// Each peer link.
    pub peers: Vec<PeerFigures>,
    /// What the loop counted.
    pub counters: Counters,
}

impl Figures {
    /// Whether a load balancer should send this node traffic, and if not why: it knows a
    /// leader, has applied within [`HEALTH_APPLY_LAG_MAX`] of its commit index, and no
    /// consistency alarm is raised (etcd's `/health` answers false on an alarm too).
    pub fn health(&self) -> Result<(), String> {
        if self.leader == 0 {
            return Err(format!("node {} knows no leader", self.id));
        }
        let lag = self.commit.saturating_sub(self.applied);
        if lag > HEALTH_APPLY_LAG_MAX {
            return Err(format!(
                "applied index {} is {lag} entries behind commit index {} (at most {HEALTH_APPLY_LAG_MAX})",
                self.applied, self.commit
            ));
        }
        if let Some(alarm) = &self.alarm {
            return Err(format!("consistency alarm: {alarm}"));
        }
        Ok(())
    }
}

/// The process' own figures, read from `/proc/self` when a scrape asks.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessFigures {
    /// Resident set size.
    pub resident_bytes: u64,
    /// Virtual memory size.
    pub virtual_bytes: u64,
}

impl ProcessFigures {
    /// Reads `/proc/self/statm` (sizes in pages); zeros where it cannot be read.
    pub fn read() -> ProcessFigures {
        let page = 4096; // Linux on every architecture raftd runs on; statm counts pages.
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let mut fields = statm
            .split_whitespace()
            .map(|f| f.parse::<u64>().unwrap_or(0));
        let virtual_pages = fields.next().unwrap_or(0);
        let resident_pages = fields.next().unwrap_or(0);
        ProcessFigures {
            resident_bytes: resident_pages * page,
            virtual_bytes: virtual_pages * page,
        }
    }
}

/// Writes a family's descriptor, then lets `each` encode its samples.
fn family(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    each: impl FnOnce(&mut MetricEncoder) -> Result<(), FmtError>,
) -> Result<(), FmtError> {
    let mut encoder = out.encode_descriptor(name, help, None, kind)?;
    each(&mut encoder)
}

fn gauge(out: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), FmtError> {
    family(out, name, help, MetricType::Gauge, |e| e.encode_gauge(&v))
}

/// A counter; `name` without `_total`, which the encoder adds.
fn counter(out: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> Result<(), FmtError> {
    family(out, name, help, MetricType::Counter, |e| {
        e.encode_counter::<NoLabelSet, _, u64>(&v, None)
    })
}

fn histogram(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &Histogram,
) -> Result<(), FmtError> {
    family(out, name, help, MetricType::Histogram, |e| h.encode(e))
}

/// One sample of a labelled counter.
fn labelled_counter(
    e: &mut MetricEncoder,
    labels: &impl EncodeLabelSet,
    n: u64,
) -> Result<(), FmtError> {
    e.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&n, None)
}

/// A counter with one sample per peer: `value` of each, labelled `peer`.
fn peer_counter(
    out: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    peers: &[PeerFigures],
    value: impl Fn(&PeerFigures) -> u64,
) -> Result<(), FmtError> {
    family(out, name, help, MetricType::Counter, |e| {
        for p in peers {
            let labels = [("peer", p.id.to_string())];
            labelled_counter(e, &labels, value(p))?;
        }
        Ok(())
    })
}

/// The metrics in the text exposition format (OpenMetrics, ending with `# EOF`).
pub fn encode(figures: &Figures, process: ProcessFigures) -> String {
    #[derive(Debug)]
    struct Collect(Figures, ProcessFigures);
    impl prometheus_client::collector::Collector for Collect {
        fn encode(&self, mut out: DescriptorEncoder) -> Result<(), FmtError> {
            encode_server(&mut out, &self.0)?;
            encode_disk(&mut out, &self.0)?;
            encode_network(&mut out, &self.0)?;
            encode_process(&mut out, self.1)
        }
    }
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Collect(figures.clone(), process)));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .expect("formatting into a String does not fail");
    text
}

fn encode_server(out: &mut DescriptorEncoder, f: &Figures) -> Result<(), FmtError> {
    let c = &f.counters;
    gauge(out, "raftd_server_id", "This node's id.", f.id)?;
    gauge(
        out,
        "raftd_server_has_leader",
        "1 when the node knows a leader, else 0.",
        u64::from(f.leader != 0),
    )?;
    gauge(
        out,
        "raftd_server_is_leader",
        "1 when the node is the leader, else 0.",
        u64::from(f.leader == f.id),
    )?;
    gauge(
        out,
        "raftd_server_leader_id",
        "The leader the node knows (0: none).",
        f.leader,
    )?;
    counter(
        out,
        "raftd_server_leader_changes_seen",
        "Changes to a new leader this process has seen (its first leader included).",
        c.leader_changes,
    )?;
    gauge(out, "raftd_server_term", "The node's current term.", f.term)?;
    gauge(
        out,
        "raftd_server_commit_index",
        "The node's commit index.",
        f.commit,
    )?;
    gauge(
        out,
        "raftd_server_applied_index",
        "The node's applied index.",
        f.applied,
    )?;
    counter(
        out,
        "raftd_server_proposals_committed",
        "Entries this process has seen committed (commit index now minus at start).",
        f.commit.saturating_sub(c.commit_at_start),
    )?;
    counter(
        out,
        "raftd_server_proposals_applied",
        "Entries this process has applied (applied index now minus at start).",
        f.applied.saturating_sub(c.applied_at_start),
    )?;
    counter(
        out,
        "raftd_server_proposals_failed",
        "Client writes that did not commit: refused by the leader (back-pressure, a transfer) or lost to a change of leader.",
        c.proposals_failed,
    )?;
    gauge(
        out,
        "raftd_server_proposals_pending",
        "Client writes proposed on this node and waiting for their entry to apply.",
        f.proposals_pending,
    )?;
    histogram(
        out,
        "raftd_server_proposal_duration_seconds",
        "From a client's write reaching the leader to its answer (committed and applied, or failed).",
        &c.proposal_duration,
    )?;
    gauge(
        out,
        "raftd_server_repairing",
        "1 while the node repairs a damaged WAL from the leader (it votes in no election), else 0.",
        u64::from(f.repairing),
    )?;
    gauge(
        out,
        "raftd_server_consistency_alarm",
        "1 while the consistency check finds the nodes' stores differ, else 0.",
        u64::from(f.alarm.is_some()),
    )?;
    family(
        out,
        "raftd_server_client_requests",
        "Client requests answered, by kind and outcome.",
        MetricType::Counter,
        |e| {
            for kind in RequestKind::ALL {
                for (o, outcome) in OUTCOMES.iter().enumerate() {
                    let n = c.requests[kind as usize][o];
                    if n == 0 {
                        continue;
                    }
                    let labels = [("kind", kind.label()), ("outcome", outcome)];
                    labelled_counter(e, &labels, n)?;
                }
            }
            Ok(())
        },
    )?;
    gauge(
        out,
        "raftd_server_client_connections",
        "Client connections open.",
        f.clients,
    )
}

fn encode_disk(out: &mut DescriptorEncoder, f: &Figures) -> Result<(), FmtError> {
    let c = &f.counters;
    histogram(
        out,
        "raftd_disk_wal_fsync_duration_seconds",
        "One WAL sync: the batch of a Ready made durable (pwrite + fdatasync, or msync with --wal-write mmap; and fsync of the directory when files changed).",
        &c.fsync_duration,
    )?;
    gauge(
        out,
        "raftd_disk_wal_size_bytes",
        "The WAL's segment files' bytes on disk.",
        f.wal_bytes,
    )?;
    gauge(
        out,
        "raftd_disk_wal_segments",
        "The WAL's segment files.",
        f.wal_segments,
    )?;
    counter(
        out,
        "raftd_disk_wal_segments_unfilled",
        "WAL segments a rollover created without zero-fill (preallocated only; its persists convert extents) because the next segment's paced zero-fill had not finished: appends outran it.",
        f.wal_segments_unfilled,
    )?;
    counter(
        out,
        "raftd_disk_wal_segments_reused",
        "WAL segments made from a segment a snapshot freed (renamed, zero-filled over its cached pages) instead of created: no new blocks and no new page-cache pages.",
        f.wal_segments_reused,
    )?;
    histogram(
        out,
        "raftd_snapshot_save_duration_seconds",
        "Writing a snapshot of the store: from its start until its file is durable.",
        &c.snapshot_save_duration,
    )?;
    counter(
        out,
        "raftd_snapshot_save_bytes",
        "Bytes of snapshots of the store written.",
        c.snapshot_save_bytes,
    )?;
    gauge(
        out,
        "raftd_snapshot_index",
        "Where the latest snapshot ends in the log.",
        f.snapshot_index,
    )?;
    counter(
        out,
        "raftd_disk_scrub_passes",
        "The scrubber's passes over every WAL file finished.",
        f.scrub.passes,
    )?;
    counter(
        out,
        "raftd_disk_scrub_read_bytes",
        "Bytes the scrubber has read and checked.",
        f.scrub.bytes,
    )?;
    counter(
        out,
        "raftd_disk_scrub_damage_found",
        "Damaged files the scrubber found (each once per pass).",
        f.scrub.damage_found,
    )?;
    counter(
        out,
        "raftd_disk_scrub_steps_yielded",
        "Scrubber steps that read a quarter of their share because the node wrote faster than the scrubber reads.",
        c.scrub_steps_yielded,
    )
}

fn encode_network(out: &mut DescriptorEncoder, f: &Figures) -> Result<(), FmtError> {
    let peers = &f.peers;
    family(
        out,
        "raftd_network_peer_connected",
        "1 while this node's connection to the peer is up, else 0.",
        MetricType::Gauge,
        |e| {
            for p in peers {
                let labels = [("peer", p.id.to_string())];
                e.encode_family(&labels)?
                    .encode_gauge(&u64::from(p.connected))?;
            }
            Ok(())
        },
    )?;
    peer_counter(
        out,
        "raftd_network_peer_sent_bytes",
        "Bytes queued for the peer.",
        peers,
        |p| p.sent_bytes,
    )?;
    peer_counter(
        out,
        "raftd_network_peer_sent_frames",
        "Frames queued for the peer.",
        peers,
        |p| p.sent_frames,
    )?;
    peer_counter(
        out,
        "raftd_network_peer_received_bytes",
        "Bytes received from the peer.",
        peers,
        |p| p.received_bytes,
    )?;
    peer_counter(
        out,
        "raftd_network_peer_received_frames",
        "Frames received from the peer.",
        peers,
        |p| p.received_frames,
    )?;
    peer_counter(
        out,
        "raftd_network_peer_reconnects",
        "Connections to the peer made again after the first.",
        peers,
        |p| p.reconnects,
    )?;
    family(
        out,
        "raftd_network_peer_dropped_frames",
        "Frames for the peer dropped, by reason (Raft tolerates loss; the message is sent again).",
        MetricType::Counter,
        |e| {
            for p in peers {
                for (reason, n) in DROP_REASONS.iter().zip(p.dropped_frames) {
                    let labels = [("peer", p.id.to_string()), ("reason", reason.to_string())];
                    labelled_counter(e, &labels, n)?;
                }
            }
            Ok(())
        },
    )?;
    family(
        out,
        "raftd_network_peer_round_trip_time_seconds",
        "On the leader: from a heartbeat leaving for the peer to its answer arriving.",
        MetricType::Histogram,
        |e| {
            for rt in &f.counters.round_trips {
                let labels = [("peer", rt.peer.to_string())];
                rt.round_trip.encode(&mut e.encode_family(&labels)?)?;
            }
            Ok(())
        },
    )?;
    counter(
        out,
        "raftd_network_connections_rejected",
        "Connections closed for bad input: bad frames, failed handshakes, timeouts.",
        f.connections_rejected,
    )?;
    counter(
        out,
        "raftd_network_client_dropped_frames",
        "Frames to clients dropped because a client's outbox was full.",
        f.client_frames_dropped,
    )
}

fn encode_process(out: &mut DescriptorEncoder, p: ProcessFigures) -> Result<(), FmtError> {
    // The standard names every Prometheus client library uses for its process.
    gauge(
        out,
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        p.resident_bytes,
    )?;
    gauge(
        out,
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        p.virtual_bytes,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A histogram's buckets hold what was observed, by bound, with +Inf for the rest.
    #[test]
    fn histogram_buckets_by_bound() {
        let mut h = Histogram::new(&DISK_BUCKETS);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(100));
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts[2], 1);
        assert_eq!(h.counts[BUCKETS - 1], 1);
        assert_eq!(h.count(), 3);
    }

    /// Only a change to a known, different leader counts.
    #[test]
    fn leader_changes_count_new_leaders_only() {
        let mut c = Counters::new(0, 0);
        for leader in [0, 1, 1, 0, 1, 2, 0, 0, 3] {
            c.leader_seen(leader);
        }
        assert_eq!(c.leader_changes(), 3);
    }

    /// A heartbeat is timed from its departure to the answer of the same round.
    #[test]
    fn round_trip_matches_the_round() {
        let mut c = Counters::new(0, 0);
        let ms = Duration::from_millis;
        c.heartbeat_sent(2, 7, ms(10));
        c.heartbeat_sent(2, 8, ms(11)); // not timed: round 7 is
        c.heartbeat_answered(2, 8, ms(12));
        c.heartbeat_answered(2, 7, ms(13));
        assert_eq!(c.round_trips[0].round_trip.count(), 1);
        assert!((c.round_trips[0].round_trip.sum_seconds - 0.003).abs() < 1e-9);
    }
}
