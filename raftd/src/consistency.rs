//! The cross-node consistency check, as etcd's corruption check does it: every node hashes
//! its store at the same log indices and the hashes are compared.
//!
//! The indices are checkpoints: a `Checkpoint` command in the log (`client/FORMAT.md`)
//! changes nothing, and every node that applies it hashes its store right after it
//! ([`crate::kv::SnapshotView::hash`]), so equal logs give equal hashes at every checkpoint
//! and a node whose store went wrong — a bug, memory or a disk that passed its CRCs — gives
//! another. Each node sends its hash to every peer; [`Checkpoints`] holds a node's own and
//! its peers' hashes for the newest [`CHECKPOINTS_KEPT`] checkpoints, answers "what was your
//! hash at checkpoint N", and raises an alarm when the hashes of one checkpoint differ,
//! naming the nodes outside the majority. A later checkpoint on which every node reports
//! the same hash clears it.
//!
//! Pure bookkeeping: no IO, no clock. The replica takes the store's view, hashes it off its
//! loop, sends the reports, and logs what [`Checkpoints`] decides.

use crate::protocol::CheckpointHash;
use std::collections::BTreeMap;

/// How many checkpoints a node keeps hashes of (its own and its peers').
pub const CHECKPOINTS_KEPT: usize = 16;

/// XXH64 of `bytes` with `seed`: the 64-bit xxHash, as its specification and reference
/// library define it (the test checks values taken from that library). A stable, specified
/// hash, so that nodes of different builds compare equal stores as equal.
pub fn xxh64(bytes: &[u8], seed: u64) -> u64 {
    const P1: u64 = 0x9E37_79B1_85EB_CA87;
    const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
    const P3: u64 = 0x1656_67B1_9E37_79F9;
    const P4: u64 = 0x85EB_CA77_C2B2_AE63;
    const P5: u64 = 0x27D4_EB2F_1656_67C5;
    let lane = |b: &[u8]| u64::from_le_bytes(b.try_into().expect("8 bytes"));
    let round = |acc: u64, lane: u64| {
        acc.wrapping_add(lane.wrapping_mul(P2))
            .rotate_left(31)
            .wrapping_mul(P1)
    };
    let merge = |h: u64, v: u64| (h ^ round(0, v)).wrapping_mul(P1).wrapping_add(P4);
    let mut rest = bytes;
    let mut h = if bytes.len() >= 32 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        while rest.len() >= 32 {
            for (i, acc) in v.iter_mut().enumerate() {
                *acc = round(*acc, lane(&rest[i * 8..i * 8 + 8]));
            }
            rest = &rest[32..];
        }
        let h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        v.iter().fold(h, |h, &acc| merge(h, acc))
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(bytes.len() as u64);
    while rest.len() >= 8 {
        h ^= round(0, lane(&rest[..8]));
        h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        let word = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes"));
        h ^= u64::from(word).wrapping_mul(P1);
        h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
        rest = &rest[4..];
    }
    for &b in rest {
        h ^= u64::from(b).wrapping_mul(P5);
        h = h.rotate_left(11).wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

/// A hash as the status, the alarm and `raftctl` print it: 16 hex digits.
pub fn hex(hash: u64) -> String {
    format!("{hash:016x}")
}

/// What a set of nodes' hashes at one checkpoint says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The hash a majority of the cluster holds, if one does.
    pub majority: Option<u64>,
    /// Nodes whose hash differs from the majority's; with no majority and differing hashes,
    /// every node that reported (nobody can tell which are right).
    pub diverging: Vec<u64>,
}

impl Verdict {
    /// True when at least two hashes differ.
    pub fn diverged(&self) -> bool {
        !self.diverging.is_empty()
    }
}

/// Judges the hashes by node of one checkpoint in a cluster of `members` nodes: the hash held
/// by more than half of the members is the majority's, and every node with another one
/// diverges. Used by the nodes and by `raftctl check consistency` alike.
pub fn judge(members: usize, hashes: &BTreeMap<u64, u64>) -> Verdict {
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for &hash in hashes.values() {
        *counts.entry(hash).or_default() += 1;
    }
    let majority = counts
        .iter()
        .find(|&(_, &count)| count > members / 2)
        .map(|(&hash, _)| hash);
    let diverging = match majority {
        _ if counts.len() < 2 => Vec::new(),
        Some(m) => hashes
            .iter()
            .filter(|&(_, &h)| h != m)
            .map(|(&node, _)| node)
            .collect(),
        None => hashes.keys().copied().collect(),
    };
    Verdict {
        majority,
        diverging,
    }
}

/// The alarm's text for a divergence at `index`, e.g. "divergence: node 3 hash
/// 00000000000000aa at index 57 (nodes 1, 2 have 00000000000000bb)".
pub fn describe_divergence(index: u64, hashes: &BTreeMap<u64, u64>, verdict: &Verdict) -> String {
    let list = |nodes: &[u64]| {
        nodes
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let each = |nodes: &[u64]| {
        nodes
            .iter()
            .map(|n| format!("node {n} hash {}", hex(hashes[n])))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match verdict.majority {
        Some(m) => {
            let agreeing: Vec<u64> = hashes
                .iter()
                .filter(|&(_, &h)| h == m)
                .map(|(&n, _)| n)
                .collect();
            format!(
                "divergence: {} at index {index} (node{} {} {} {})",
                each(&verdict.diverging),
                if agreeing.len() == 1 { "" } else { "s" },
                list(&agreeing),
                if agreeing.len() == 1 { "has" } else { "have" },
                hex(m)
            )
        }
        None => format!(
            "divergence at index {index}, no majority: {}",
            each(&verdict.diverging)
        ),
    }
}

/// A divergence found at a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Alarm {
    /// The newest checkpoint found diverging with these nodes.
    pub index: u64,
    /// One line for the operator (the status's `alarm`).
    pub text: String,
    /// The nodes named (see [`Verdict::diverging`]).
    pub diverging: Vec<u64>,
}

/// What a node knows of one checkpoint.
#[derive(Clone, Debug, Default)]
struct Checkpoint {
    /// Hashes by node, this node's included once it has one.
    hashes: BTreeMap<u64, u64>,
    /// This node is hashing its store at this checkpoint.
    hashing: bool,
}

/// What changed when a hash arrived, for the replica to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Nothing to say.
    None,
    /// A divergence was found, or other nodes diverge than before (more hashes arrived,
    /// or another checkpoint). The same nodes diverging at a later checkpoint update the
    /// alarm without a change to report.
    Raised(Alarm),
    /// Every node reported the same hash at a checkpoint after the alarm's: cleared.
    Cleared {
        /// The alarm that was cleared.
        was: Alarm,
        /// The checkpoint every node agreed on.
        index: u64,
    },
}

/// One node's checkpoints: its own hashes and its peers', and the alarm (see the module
/// docs).
#[derive(Debug)]
pub struct Checkpoints {
    node: u64,
    members: Vec<u64>,
    /// The newest [`CHECKPOINTS_KEPT`] checkpoints by index.
    by_index: BTreeMap<u64, Checkpoint>,
    alarm: Option<Alarm>,
}

impl Checkpoints {
    /// The table of node `node` in a cluster of `members` (ids, `node` among them).
    pub fn new(node: u64, members: Vec<u64>) -> Checkpoints {
        assert!(members.contains(&node), "node {node} is not a member");
        Checkpoints {
            node,
            members,
            by_index: BTreeMap::new(),
            alarm: None,
        }
    }

    /// The cluster's members changed: later checkpoints are judged among these (this node
    /// stays among them, even when it is no voter, since it hashes its own store).
    pub fn set_members(&mut self, mut members: Vec<u64>) {
        if !members.contains(&self.node) {
            members.push(self.node);
        }
        self.members = members;
    }

    /// The members whose hashes are expected.
    pub fn members(&self) -> &[u64] {
        &self.members
    }

    /// The current alarm.
    pub fn alarm(&self) -> Option<&Alarm> {
        self.alarm.as_ref()
    }

    /// The entry for `index`, made if it is among the newest [`CHECKPOINTS_KEPT`]; `None`
    /// for an index older than all those kept when the table is full.
    fn entry(&mut self, index: u64) -> Option<&mut Checkpoint> {
        if !self.by_index.contains_key(&index) {
            if self.by_index.len() >= CHECKPOINTS_KEPT {
                let (&oldest, _) = self.by_index.first_key_value().expect("full");
                if index < oldest {
                    return None;
                }
                self.by_index.remove(&oldest);
            }
            self.by_index.insert(index, Checkpoint::default());
        }
        self.by_index.get_mut(&index)
    }

    /// This node applied the checkpoint at `index` and is hashing its store.
    pub fn hashing(&mut self, index: u64) {
        if let Some(c) = self.entry(index) {
            c.hashing = true;
        }
    }

    /// This node gave up hashing at `index` (too many hashes under way).
    pub fn skipped(&mut self, index: u64) {
        if let Some(c) = self.by_index.get_mut(&index) {
            c.hashing = false;
        }
    }

    /// This node's hash at `index`.
    pub fn own(&mut self, index: u64, hash: u64) -> Change {
        let node = self.node;
        self.record(node, index, hash)
    }

    /// Peer `from`'s report of its hash at `index`. Reports from non-members and from this
    /// node's own id are ignored.
    pub fn peer(&mut self, from: u64, index: u64, hash: u64) -> Change {
        if from == self.node || !self.members.contains(&from) {
            return Change::None;
        }
        self.record(from, index, hash)
    }

    fn record(&mut self, node: u64, index: u64, hash: u64) -> Change {
        let own = node == self.node;
        let Some(c) = self.entry(index) else {
            return Change::None;
        };
        c.hashes.insert(node, hash);
        if own {
            c.hashing = false;
        }
        let hashes = c.hashes.clone();
        self.judge(index, &hashes)
    }

    fn judge(&mut self, index: u64, hashes: &BTreeMap<u64, u64>) -> Change {
        let verdict = judge(self.members.len(), hashes);
        if verdict.diverged() {
            let text = describe_divergence(index, hashes, &verdict);
            if let Some(alarm) = &mut self.alarm {
                if alarm.diverging == verdict.diverging {
                    if index >= alarm.index {
                        alarm.index = index;
                        alarm.text = text;
                    }
                    return Change::None;
                }
            }
            let alarm = Alarm {
                index,
                text,
                diverging: verdict.diverging,
            };
            self.alarm = Some(alarm.clone());
            return Change::Raised(alarm);
        }
        let everyone = hashes.len() == self.members.len();
        match self.alarm.take() {
            Some(was) if everyone && was.index < index => Change::Cleared { was, index },
            kept => {
                self.alarm = kept;
                Change::None
            }
        }
    }

    /// This node's answer to "what was your hash at checkpoint `index`" (0: the latest it
    /// has), having applied through `applied`: the index it answers for and the hash.
    pub fn answer(&self, index: u64, applied: u64) -> (u64, CheckpointHash) {
        if index == 0 {
            let latest = self.by_index.iter().rev().find_map(|(&i, c)| {
                c.hashes
                    .get(&self.node)
                    .map(|&h| (i, CheckpointHash::Known(h)))
            });
            return latest.unwrap_or((0, CheckpointHash::Missing));
        }
        let state = match self.by_index.get(&index) {
            Some(c) if c.hashes.contains_key(&self.node) => {
                CheckpointHash::Known(c.hashes[&self.node])
            }
            Some(c) if c.hashing => CheckpointHash::Pending,
            _ if index > applied => CheckpointHash::Pending,
            _ => CheckpointHash::Missing,
        };
        (index, state)
    }

    /// Every node's hash this node knows at the checkpoint at `index`, by node id.
    pub fn hashes(&self, index: u64) -> Option<&BTreeMap<u64, u64>> {
        self.by_index.get(&index).map(|c| &c.hashes)
    }

    /// The newest checkpoint this node has hashed: its index, and every node's hash known
    /// for it (for the status).
    pub fn latest(&self) -> Option<(u64, &BTreeMap<u64, u64>)> {
        self.by_index
            .iter()
            .rev()
            .find(|(_, c)| c.hashes.contains_key(&self.node))
            .map(|(&i, c)| (i, &c.hashes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XXH64 gives the reference library's values (libxxhash 0.8.1, `XXH64(bytes, len,
    /// seed)`) for every path through it: empty, under 4, under 8, exactly one 32-byte
    /// stripe, stripes with a tail of 8-, 4- and 1-byte steps, and a seed.
    #[test]
    fn xxh64_matches_the_reference() {
        let hundred: Vec<u8> = (0..100).collect();
        let cases: [(&[u8], u64, u64); 7] = [
            (b"", 0, 0xef46db3751d8e999),
            (b"a", 0, 0xd24ec4f1a98c6e5b),
            (b"abc", 0, 0x44bc2cf5ad770999),
            (b"0123456789abcdef0123456789abcdef", 0, 0x642a94958e71e6c5),
            (&hundred, 0, 0x6ac1e58032166597),
            (&hundred, 0x9e3779b97f4a7c15, 0x3b97d91eba03e785),
            (b"raftd", 1, 0x64d662d0bb1b4e61),
        ];
        for (bytes, seed, want) in cases {
            assert_eq!(
                xxh64(bytes, seed),
                want,
                "{} bytes, seed {seed:x}",
                bytes.len()
            );
        }
    }

    fn hashes(pairs: &[(u64, u64)]) -> BTreeMap<u64, u64> {
        pairs.iter().copied().collect()
    }

    /// The majority is a majority of the cluster, not of those who answered: one node
    /// against two of three is named; one against one (the third silent) names both; equal
    /// hashes name nobody.
    #[test]
    fn judge_names_the_nodes_outside_the_majority() {
        let v = judge(3, &hashes(&[(1, 7), (2, 7), (3, 9)]));
        assert_eq!((v.majority, v.diverging.clone()), (Some(7), vec![3]));
        assert_eq!(
            describe_divergence(57, &hashes(&[(1, 7), (2, 7), (3, 9)]), &v),
            "divergence: node 3 hash 0000000000000009 at index 57 (nodes 1, 2 have 0000000000000007)"
        );
        let v = judge(3, &hashes(&[(1, 7), (3, 9)]));
        assert_eq!((v.majority, v.diverging.clone()), (None, vec![1, 3]));
        assert!(describe_divergence(5, &hashes(&[(1, 7), (3, 9)]), &v).contains("no majority"));
        let v = judge(3, &hashes(&[(1, 7), (2, 7)]));
        assert!(!v.diverged());
        assert_eq!(v.majority, Some(7));
        let v = judge(5, &hashes(&[(1, 7), (2, 7), (3, 7), (4, 8), (5, 9)]));
        assert_eq!(v.diverging, vec![4, 5]);
    }

    /// A node's table: its own hash answers queries (pending before it is applied or while
    /// it is hashed, missing when skipped); a peer's differing report raises the alarm at
    /// once, naming that peer as soon as a majority agrees; a later checkpoint on which every
    /// node agrees clears it; only the newest checkpoints are kept.
    #[test]
    fn checkpoints_answer_alarm_and_clear() {
        let mut t = Checkpoints::new(1, vec![1, 2, 3]);
        assert_eq!(t.answer(0, 5), (0, CheckpointHash::Missing));
        assert_eq!(t.answer(10, 5), (10, CheckpointHash::Pending));
        t.hashing(10);
        assert_eq!(t.answer(10, 10), (10, CheckpointHash::Pending));
        assert_eq!(t.peer(3, 10, 99), Change::None);
        // One against one: certainly a divergence, but nobody can tell whose yet.
        match t.own(10, 42) {
            Change::Raised(a) => assert!(a.text.contains("no majority"), "{a:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.answer(10, 11), (10, CheckpointHash::Known(42)));
        assert_eq!(t.answer(0, 11), (10, CheckpointHash::Known(42)));
        assert_eq!(t.answer(9, 11), (9, CheckpointHash::Missing));
        match t.peer(2, 10, 42) {
            Change::Raised(a) => assert!(a.text.starts_with("divergence: node 3 hash"), "{a:?}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(t.peer(2, 10, 42), Change::None, "raised once");
        // The same node diverging at the next checkpoint: the alarm follows, quietly.
        t.own(15, 1);
        t.peer(2, 15, 1);
        assert_eq!(t.peer(3, 15, 2), Change::None);
        assert_eq!(t.alarm().map(|a| a.index), Some(15));
        // A checkpoint on which only two agree does not clear it; all three do.
        assert_eq!(t.own(20, 5), Change::None);
        assert_eq!(t.peer(2, 20, 5), Change::None);
        assert!(t.alarm().is_some());
        assert!(matches!(
            t.peer(3, 20, 5),
            Change::Cleared { index: 20, .. }
        ));
        assert!(t.alarm().is_none());
        // Reports from strangers or claiming to be this node are ignored.
        assert_eq!(t.peer(7, 20, 1), Change::None);
        assert_eq!(t.peer(1, 20, 1), Change::None);
        for i in 0..CHECKPOINTS_KEPT as u64 {
            t.own(100 + i, i);
        }
        assert_eq!(t.answer(20, 200), (20, CheckpointHash::Missing));
        assert_eq!(
            t.peer(2, 30, 1),
            Change::None,
            "older than all kept: dropped"
        );
        assert_eq!(t.latest().map(|(i, _)| i), Some(115));
    }
}
