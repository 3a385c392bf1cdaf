//! The one Ready loop: takes every [`Ready`] from a [`RawNode`] and hands its parts to a
//! [`Host`] in the order the contract on [`Ready`] requires. The daemon, the simulator and
//! the paper tests all drive their nodes through it, so the ordering rules live in one place.
//!
//! For each Ready:
//! 1. the messages that may leave now go to [`Host::send`] (a leader's appends, before its
//!    own disk write: thesis §10.2.1);
//! 2. without a snapshot in the Ready, committed entries and confirmed reads go to
//!    [`Host::apply`] at once: the core hands out only entries already durable here and on a
//!    majority, so their effects need not wait for this Ready's write (with a snapshot they
//!    wait, since they follow it);
//! 3. the write goes to [`Host::persist`], which may finish it now, later (a disk with
//!    latency: the host calls [`Driver::write_done`]), or not yet (a full disk: the host
//!    calls [`Driver::run`] again to retry);
//! 4. once the write is durable: the messages that waited for it go to [`Host::send`], what
//!    is left to apply to [`Host::apply`], the node is advanced, and a snapshot a follower
//!    needs is asked of [`Host::snapshot_for_follower`], and entries older than the
//!    in-memory log that followers need of [`Host::fetch_entries`].
//!
//! The driver does no IO itself; the host does all of it.

use crate::node::{EntriesWanted, RawNode, Ready};
use crate::types::{Entry, HardState, ReadState, Snapshot, SnapshotMeta};
use crate::Message;

/// What a Ready asks to be made durable. The host takes out what it wrote, so a write that
/// is retried (after a full disk) resumes where it stopped.
#[derive(Debug, Default)]
pub struct Write {
    /// A snapshot from the leader: stored, then restored into the state machine.
    pub snapshot: Option<Snapshot>,
    /// Entries to append (replacing any conflicting suffix).
    pub entries: Vec<Entry>,
    /// The hard state, when it changed.
    pub hard_state: Option<HardState>,
    /// Whether the write must be synced before [`Driver`] goes on (see [`Ready::must_sync`]).
    pub sync: bool,
    /// After the rest is durable, record durably that the node's repair is over (see
    /// [`Ready::repair_finished`]).
    pub repair_finished: bool,
}

/// How far [`Host::persist`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Persisted {
    /// Durable now.
    Done,
    /// Under way; the host calls [`Driver::write_done`] when it is durable.
    Later,
    /// Not possible now (a full disk); the host calls [`Driver::run`] again to retry, and
    /// meanwhile nothing that depends on the write is sent or applied.
    Stalled,
}

/// A node's host: network, disk and state machine, as the driver sees them.
pub trait Host {
    /// What makes the host stop (a failed disk).
    type Error;
    /// Sends a message (losing it is within Raft's model).
    fn send(&mut self, message: Message);
    /// Makes `write` durable (see [`Persisted`]). A received snapshot is also restored into
    /// the state machine here, once stored.
    fn persist(&mut self, write: &mut Write) -> Result<Persisted, Self::Error>;
    /// Applies committed entries in order, then serves confirmed reads and answers reads
    /// that will never be confirmed (their contexts in `dropped_reads`).
    /// The node may be compacted here (`raw.compact`), for a host that snapshots as it
    /// applies.
    fn apply(
        &mut self,
        raw: &mut RawNode,
        entries: Vec<Entry>,
        reads: Vec<ReadState>,
        dropped_reads: Vec<u64>,
    );
    /// A follower needs a snapshot through at least `meta.index`: return one to send, or
    /// `None` when it is not at hand yet (the node asks again).
    fn snapshot_for_follower(&mut self, raw: &RawNode, meta: SnapshotMeta) -> Option<Snapshot>;
    /// A follower needs entries older than the in-memory log: read `wanted.lo..wanted.hi`
    /// (at least one, about `wanted.bytes_max` of data at most) from storage, or `None`
    /// when they cannot be read (the node asks again). A host that never trims its
    /// in-memory log is never asked.
    fn fetch_entries(&mut self, raw: &RawNode, wanted: EntriesWanted) -> Option<Vec<Entry>> {
        let _ = (raw, wanted);
        None
    }
}

/// A Ready whose write is not yet durable.
#[derive(Debug)]
struct Pending {
    ready: Ready,
    write: Write,
    /// The host is writing it and will call `write_done`.
    writing: bool,
}

/// Drives a node's Readies through a host (see the module docs).
#[derive(Debug, Default)]
pub struct Driver {
    pending: Option<Pending>,
}

impl Driver {
    /// A driver with no Ready in hand.
    pub fn new() -> Driver {
        Driver::default()
    }

    /// True while a Ready's write is under way or stalled.
    pub fn is_waiting(&self) -> bool {
        self.pending.is_some()
    }

    /// Handles every Ready the node has, until none is left or one's write is under way or
    /// stalled (a stalled write is retried first).
    pub fn run<H: Host>(&mut self, raw: &mut RawNode, host: &mut H) -> Result<(), H::Error> {
        if let Some(mut p) = self.pending.take() {
            if p.writing {
                self.pending = Some(p);
                return Ok(());
            }
            match host.persist(&mut p.write)? {
                Persisted::Done => finish(raw, host, p.ready),
                Persisted::Later => {
                    p.writing = true;
                    self.pending = Some(p);
                    return Ok(());
                }
                Persisted::Stalled => {
                    self.pending = Some(p);
                    return Ok(());
                }
            }
        }
        while raw.has_ready() {
            let mut ready = raw.ready();
            for m in ready.take_messages() {
                host.send(m);
            }
            if !ready.has_snapshot() {
                apply(raw, host, &mut ready);
            }
            let mut write = Write {
                snapshot: ready.take_snapshot(),
                entries: ready.take_entries(),
                hard_state: ready.hard_state(),
                sync: ready.must_sync(),
                repair_finished: ready.repair_finished(),
            };
            match host.persist(&mut write)? {
                Persisted::Done => finish(raw, host, ready),
                outcome => {
                    self.pending = Some(Pending {
                        ready,
                        write,
                        writing: outcome == Persisted::Later,
                    });
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The write [`Host::persist`] answered [`Persisted::Later`] for is durable: finishes
    /// that Ready and handles the ones after it.
    pub fn write_done<H: Host>(&mut self, raw: &mut RawNode, host: &mut H) -> Result<(), H::Error> {
        let p = self
            .pending
            .take()
            .expect("write_done without a write under way");
        assert!(p.writing, "write_done for a write that was not under way");
        finish(raw, host, p.ready);
        self.run(raw, host)
    }

    /// Forgets a Ready in hand (the host crashed and the node is gone with it).
    pub fn reset(&mut self) {
        self.pending = None;
    }
}

fn apply<H: Host>(raw: &mut RawNode, host: &mut H, ready: &mut Ready) {
    let entries = ready.take_committed_entries();
    let reads = ready.take_read_states();
    let dropped = ready.take_dropped_reads();
    if !entries.is_empty() || !reads.is_empty() || !dropped.is_empty() {
        host.apply(raw, entries, reads, dropped);
    }
}

/// After the write: send what waited for it, apply what is left, advance, and hand over the
/// snapshot a follower needs.
fn finish<H: Host>(raw: &mut RawNode, host: &mut H, mut ready: Ready) {
    for m in ready.take_persisted_messages() {
        host.send(m);
    }
    apply(raw, host, &mut ready);
    let request = ready.snapshot_request();
    let wanted = ready.take_entries_wanted();
    raw.advance(ready);
    if let Some(meta) = request {
        if let Some(snapshot) = host.snapshot_for_follower(raw, meta) {
            raw.provide_snapshot(snapshot);
        }
    }
    for w in wanted {
        if let Some(entries) = host.fetch_entries(raw, w) {
            raw.entries_fetched(w.to, entries);
        }
    }
}
