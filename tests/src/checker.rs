//! The tester's model of the service (the lab's appliers, spec §3.5) and the safety
//! checkers that watch every applied entry: state-machine safety (no two servers apply
//! different commands at one index), in-order application without gaps, and the record of
//! committed entries the durability and leader-completeness checks use.

use raft::codec::{Reader, Truncated, Writer};
use raft::{Entry, EntryKind, Snapshot, Term};
use std::collections::BTreeMap;
use std::rc::Rc;

/// A command as the tester sees it (a no-op shows as an empty command with `noop` set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Value {
    /// True for a leader's no-op entry.
    pub noop: bool,
    /// The command bytes.
    pub data: Vec<u8>,
}

/// What the tester knows was committed at an index.
#[derive(Clone, Debug)]
pub struct CommittedEntry {
    /// The entry's term (0 when it was learned from a snapshot only).
    pub term: Term,
    /// Its command.
    pub value: Rc<Value>,
}

/// The appliers of all servers plus the global record of committed entries.
pub struct Applier {
    snapshot_mode: bool,
    /// `logs[i][k]`: what server i applied at index k. Survives crashes (2024 tester).
    logs: Vec<Vec<Option<Rc<Value>>>>,
    /// Per server, the last index applied (snapshot applier's strict +1 check).
    last_applied: Vec<u64>,
    /// Highest index any server applied (the lab's `maxIndex`).
    pub max_index: u64,
    /// Every entry applied anywhere, by index, with its term.
    pub committed: BTreeMap<u64, CommittedEntry>,
    /// Snapshot every `(k + 1) % snapshot_every == 0` in snapshot mode.
    pub snapshot_every: u64,
}

impl Applier {
    /// Appliers for `n` servers; `snapshot_mode` selects the lab's snapshot applier.
    pub fn new(n: usize, snapshot_mode: bool) -> Applier {
        Applier {
            snapshot_mode,
            logs: vec![vec![None]; n],
            last_applied: vec![0; n],
            max_index: 0,
            committed: BTreeMap::new(),
            snapshot_every: 10,
        }
    }

    /// Server `i` (re)starts: like the lab's `start1`, ingest its persisted snapshot.
    pub fn restart(&mut self, i: usize, snapshot: &Snapshot) {
        self.last_applied[i] = 0;
        if !snapshot.is_empty() {
            self.ingest(i, snapshot);
        }
    }

    fn ingest(&mut self, i: usize, snapshot: &Snapshot) {
        let (index, values) = decode_snapshot(&snapshot.data)
            .unwrap_or_else(|e| panic!("server {}: snapshot does not decode: {e}", i + 1));
        assert_eq!(
            index,
            snapshot.meta.index.0,
            "server {}: snapshot index {} but it holds values through {index}",
            i + 1,
            snapshot.meta.index
        );
        self.logs[i] = values.into_iter().map(|v| v.map(Rc::new)).collect();
        self.last_applied[i] = index;
    }

    /// A snapshot delivered to server `i`'s service by its core (SnapshotValid).
    pub fn apply_snapshot(&mut self, i: usize, snapshot: &Snapshot) {
        if self.snapshot_mode {
            self.ingest(i, snapshot);
        } else {
            // The plain applier ignores snapshots; no scenario in parts A–C takes any.
            panic!("server {}: snapshot delivered to the plain applier", i + 1);
        }
    }

    /// Server `i` applies `entry`. Returns snapshot bytes when the snapshot applier wants
    /// the core compacted through this index.
    pub fn apply(&mut self, i: usize, entry: &Entry) -> Option<Vec<u8>> {
        let k = entry.index.0;
        if self.snapshot_mode && k != self.last_applied[i] + 1 {
            panic!(
                "server {} apply out of order, expected index {}, got {k}",
                i + 1,
                self.last_applied[i] + 1
            );
        }
        let value = Rc::new(Value {
            noop: entry.kind == EntryKind::Noop,
            data: entry.data.to_vec(),
        });
        for (j, log) in self.logs.iter().enumerate() {
            if let Some(Some(old)) = log.get(k as usize) {
                if **old != *value {
                    panic!(
                        "state machine safety: commit index={k} server={} {:?} != server={} {:?}",
                        i + 1,
                        value,
                        j + 1,
                        old
                    );
                }
            }
        }
        let log = &mut self.logs[i];
        let prev_ok = k == 1 || matches!(log.get(k as usize - 1), Some(Some(_)));
        if log.len() <= k as usize {
            log.resize(k as usize + 1, None);
        }
        log[k as usize] = Some(value.clone());
        self.max_index = self.max_index.max(k);
        if !prev_ok {
            panic!("server {} apply out of order {k}", i + 1);
        }
        self.last_applied[i] = k;
        match self.committed.get(&k) {
            Some(c) if c.term != entry.term && c.term != Term(0) => panic!(
                "state machine safety: index {k} committed in terms {} and {}",
                c.term, entry.term
            ),
            Some(_) => {}
            None => {
                self.committed.insert(
                    k,
                    CommittedEntry {
                        term: entry.term,
                        value,
                    },
                );
            }
        }
        if self.snapshot_mode && (k + 1).is_multiple_of(self.snapshot_every) {
            return Some(encode_snapshot(k, &self.logs[i][..=k as usize]));
        }
        None
    }

    /// The lab's `nCommitted(index)`: how many servers applied `index`, and the value.
    pub fn n_committed(&self, index: u64) -> (usize, Option<Rc<Value>>) {
        let mut count = 0;
        let mut value: Option<Rc<Value>> = None;
        for (i, log) in self.logs.iter().enumerate() {
            if let Some(Some(v)) = log.get(index as usize) {
                if let Some(prev) = &value {
                    assert!(
                        prev == v,
                        "committed values do not match: index {index}, server {}: {:?} vs {:?}",
                        i + 1,
                        v,
                        prev
                    );
                }
                count += 1;
                value = Some(v.clone());
            }
        }
        (count, value)
    }
}

/// The snapshot applier's snapshot: the index and every value through it.
pub fn encode_snapshot(index: u64, values: &[Option<Rc<Value>>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut w = Writer::new(&mut out);
    w.u64(index);
    w.u64(values.len() as u64);
    for v in values {
        match v {
            None => w.u8(0),
            Some(v) => {
                w.u8(if v.noop { 2 } else { 1 });
                w.u32_prefixed(&v.data);
            }
        }
    }
    out
}

/// Inverse of [`encode_snapshot`].
pub fn decode_snapshot(bytes: &[u8]) -> Result<(u64, Vec<Option<Value>>), String> {
    let mut r = Reader::new(bytes);
    let truncated = |t: Truncated| format!("truncated at {}", t.offset);
    let index = r.u64("index").map_err(truncated)?;
    let count = r.u64("count").map_err(truncated)?;
    let mut values = Vec::new();
    for _ in 0..count {
        match r.u8("tag").map_err(truncated)? {
            0 => values.push(None),
            tag => values.push(Some(Value {
                noop: tag == 2,
                data: r.u32_prefixed("data").map_err(truncated)?.to_vec(),
            })),
        }
    }
    Ok((index, values))
}
