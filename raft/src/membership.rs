//! Cluster membership: who votes, who only learns, and the joint configuration that carries
//! a cluster from one set of voters to another (paper §6, thesis §4.3).
//!
//! A [`Configuration`] names the voters, the outgoing voters while a change is under way,
//! and the learners. A change is a log entry ([`crate::EntryKind::Config`]) holding the whole
//! configuration that follows it, so a node's configuration is read off its log: the latest
//! such entry, committed or not, or the one its snapshot carries, or the first configuration
//! of a brand-new cluster ([`crate::Config::voters`]).
//!
//! A change of the voters goes through the joint configuration C_old,new: while it is in
//! effect, an election and a commitment need a majority of the new voters *and* a majority
//! of the outgoing ones, so no moment exists where the two sets could decide apart. Once the
//! joint entry commits, the leader appends C_new by itself. Learners receive the log and
//! snapshots and count for nothing: not for elections, not for commitment, not for
//! check-quorum or ReadIndex. A node is always added as a learner first and promoted later,
//! so it never counts for a quorum before it holds the log.

use crate::codec::{Reader, Truncated, Writer};
use crate::types::{LogIndex, NodeId};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

/// The version byte that starts every encoded configuration. 2: members' addresses follow
/// the three sets (version 1, still read, had none).
pub const CONFIGURATION_VERSION: u8 = 2;

/// Longest address accepted for a member, in bytes.
pub const ADDRESS_BYTES_MAX: usize = 255;

/// At most this many members in one configuration: bounds what a decoder accepts.
pub const MEMBERS_MAX: usize = 1024;

/// Voter sets up to this size have their quorum value sorted on the stack.
const QUORUM_ON_STACK: usize = 16;

/// A cluster configuration.
///
/// Invariants (checked by [`Configuration::validate`]): ids are non-zero; a learner is not
/// an incoming voter; `outgoing` is empty unless the configuration is joint. A learner may
/// be an outgoing voter (a voter being demoted keeps its vote in the old half).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Configuration {
    /// The voters (the incoming ones, in a joint configuration).
    pub voters: BTreeSet<NodeId>,
    /// The outgoing voters while the configuration is joint; empty otherwise.
    pub outgoing: BTreeSet<NodeId>,
    /// Members that receive the log but never vote.
    pub learners: BTreeSet<NodeId>,
    /// Where members listen, as the hosts gave it (`host:port`; the core never reads it):
    /// part of the configuration so that every node, a new one too, learns from its log
    /// or snapshot where to reach the others. Empty in a cluster's first configuration,
    /// which the hosts' own flags give.
    pub addresses: BTreeMap<NodeId, String>,
}

/// One change of membership, as an operator asks for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemberChange {
    /// Add a node as a learner.
    AddLearner(NodeId),
    /// Make a learner a voter.
    Promote(NodeId),
    /// Remove a voter or a learner.
    Remove(NodeId),
}

impl fmt::Display for MemberChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MemberChange::AddLearner(id) => write!(f, "add learner {id}"),
            MemberChange::Promote(id) => write!(f, "promote {id}"),
            MemberChange::Remove(id) => write!(f, "remove {id}"),
        }
    }
}

/// Why a configuration change is not possible from the current configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfChangeError {
    /// The change names no member change at all.
    Empty,
    /// Id 0 is nobody.
    NoneId,
    /// The node is already a member.
    AlreadyMember(NodeId),
    /// The node is not a member.
    NotMember(NodeId),
    /// Only a learner can be promoted.
    NotLearner(NodeId),
    /// One change names the node twice.
    Duplicate(NodeId),
    /// The change would leave no voter.
    NoVoters,
    /// The configuration would pass [`MEMBERS_MAX`] members.
    TooManyMembers,
    /// An address is empty or longer than [`ADDRESS_BYTES_MAX`].
    BadAddress,
}

impl fmt::Display for ConfChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfChangeError::Empty => write!(f, "the change is empty"),
            ConfChangeError::NoneId => write!(f, "node id 0 is not a valid member"),
            ConfChangeError::AlreadyMember(id) => write!(f, "node {id} is already a member"),
            ConfChangeError::NotMember(id) => write!(f, "node {id} is not a member"),
            ConfChangeError::NotLearner(id) => {
                write!(f, "node {id} is not a learner (add it as a learner first)")
            }
            ConfChangeError::Duplicate(id) => write!(f, "node {id} is named twice"),
            ConfChangeError::NoVoters => write!(f, "the change would leave no voter"),
            ConfChangeError::TooManyMembers => {
                write!(f, "more than {MEMBERS_MAX} members")
            }
            ConfChangeError::BadAddress => {
                write!(
                    f,
                    "an address is empty or longer than {ADDRESS_BYTES_MAX} bytes"
                )
            }
        }
    }
}

impl std::error::Error for ConfChangeError {}

/// The outcome of counting votes (or acknowledgements) against a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VoteResult {
    /// A majority of every voter set granted.
    Won,
    /// Some voter set can no longer reach a majority.
    Lost,
    /// Neither yet.
    Pending,
}

impl Configuration {
    /// A simple (not joint) configuration of `voters`, without learners.
    pub fn new(voters: impl IntoIterator<Item = NodeId>) -> Configuration {
        Configuration {
            voters: voters.into_iter().collect(),
            ..Configuration::default()
        }
    }

    /// True while the configuration is C_old,new.
    pub fn is_joint(&self) -> bool {
        !self.outgoing.is_empty()
    }

    /// True when `id` votes, in either half.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.contains(&id) || self.outgoing.contains(&id)
    }

    /// True when `id` is a learner and no voter in either half.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.contains(&id) && !self.is_voter(id)
    }

    /// True when `id` is a voter or a learner.
    pub fn is_member(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.learners.contains(&id)
    }

    /// Every member's id: voters, outgoing voters and learners (an id in two of the sets
    /// comes twice), without building a set.
    pub fn member_ids(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters
            .iter()
            .chain(&self.outgoing)
            .chain(&self.learners)
            .copied()
    }

    /// Every member (voters of both halves and learners), in id order.
    pub fn members(&self) -> BTreeSet<NodeId> {
        let mut all = self.voters.clone();
        all.extend(&self.outgoing);
        all.extend(&self.learners);
        all
    }

    /// The voter sets a decision needs a majority of: one, or two while joint.
    pub(crate) fn voter_sets(&self) -> impl Iterator<Item = &BTreeSet<NodeId>> {
        std::iter::once(&self.voters).chain(self.is_joint().then_some(&self.outgoing))
    }

    /// The largest value that a majority of every voter set has reached, given each
    /// voter's value (the commit rule: a value is each voter's match index; for ReadIndex,
    /// the round it acknowledged). `None` when there is no voter at all.
    pub(crate) fn quorum_value<T: Ord + Copy>(&self, value: impl Fn(NodeId) -> T) -> Option<T> {
        let mut result: Option<T> = None;
        for set in self.voter_sets() {
            if set.is_empty() {
                return None;
            }
            // The value a majority has reached: the (n/2)-th largest. Sorted on the stack
            // for the usual handful of voters (the leader asks after every
            // acknowledgement), in a vector beyond that.
            let mut stack = [None; QUORUM_ON_STACK];
            let mut heap = Vec::new();
            let values: &mut [Option<T>] = if set.len() <= QUORUM_ON_STACK {
                &mut stack[..set.len()]
            } else {
                heap.resize(set.len(), None);
                &mut heap
            };
            for (slot, &id) in values.iter_mut().zip(set) {
                *slot = Some(value(id));
            }
            values.sort_unstable_by(|a, b| b.cmp(a));
            let majority = values[set.len() / 2].expect("every voter's value is set");
            result = Some(result.map_or(majority, |r| r.min(majority)));
        }
        result
    }

    /// Counts a vote: `granted(id)` is `Some(true)` for a grant, `Some(false)` for a
    /// refusal and `None` while the voter has not answered. Won needs a majority of every
    /// voter set; lost, when some set can no longer reach one.
    pub(crate) fn vote_result(&self, granted: impl Fn(NodeId) -> Option<bool>) -> VoteResult {
        let mut result = VoteResult::Won;
        for set in self.voter_sets() {
            let yes = set.iter().filter(|&&id| granted(id) == Some(true)).count();
            let no = set.iter().filter(|&&id| granted(id) == Some(false)).count();
            let majority = set.len() / 2 + 1;
            if set.is_empty() || no > set.len() - majority {
                return VoteResult::Lost;
            }
            if yes < majority {
                result = VoteResult::Pending;
            }
        }
        result
    }

    /// The configuration that `changes` lead to from this one (which must not be joint).
    /// When the voters change it is the joint configuration C_old,new; when only learners
    /// change it is the new configuration itself, since no quorum changes.
    pub fn apply(&self, changes: &[MemberChange]) -> Result<Configuration, ConfChangeError> {
        assert!(
            !self.is_joint(),
            "a change starts from a simple configuration"
        );
        if changes.is_empty() {
            return Err(ConfChangeError::Empty);
        }
        let mut next = self.clone();
        let mut named = BTreeSet::new();
        for change in changes {
            let id = match *change {
                MemberChange::AddLearner(id)
                | MemberChange::Promote(id)
                | MemberChange::Remove(id) => id,
            };
            if id.is_none() {
                return Err(ConfChangeError::NoneId);
            }
            if !named.insert(id) {
                return Err(ConfChangeError::Duplicate(id));
            }
            match *change {
                MemberChange::AddLearner(id) if self.is_member(id) => {
                    return Err(ConfChangeError::AlreadyMember(id))
                }
                MemberChange::AddLearner(id) => {
                    next.learners.insert(id);
                }
                MemberChange::Promote(id) if !self.is_learner(id) => {
                    return Err(ConfChangeError::NotLearner(id))
                }
                MemberChange::Promote(id) => {
                    next.learners.remove(&id);
                    next.voters.insert(id);
                }
                MemberChange::Remove(id) if !self.is_member(id) => {
                    return Err(ConfChangeError::NotMember(id))
                }
                MemberChange::Remove(id) => {
                    next.learners.remove(&id);
                    next.voters.remove(&id);
                }
            }
        }
        if next.voters.is_empty() {
            return Err(ConfChangeError::NoVoters);
        }
        if next.members().len() > MEMBERS_MAX {
            return Err(ConfChangeError::TooManyMembers);
        }
        if next.voters != self.voters {
            next.outgoing = self.voters.clone();
        }
        next.forget_addresses_of_non_members();
        Ok(next)
    }

    /// C_new: the joint configuration with the outgoing voters dropped.
    pub fn leave_joint(&self) -> Configuration {
        let mut next = Configuration {
            voters: self.voters.clone(),
            outgoing: BTreeSet::new(),
            learners: self.learners.clone(),
            addresses: self.addresses.clone(),
        };
        next.forget_addresses_of_non_members();
        next
    }

    /// Drops the addresses of nodes that are no longer members.
    pub fn forget_addresses_of_non_members(&mut self) {
        let members = self.members();
        self.addresses.retain(|id, _| members.contains(id));
    }

    /// Checks the invariants written on the type.
    pub fn validate(&self) -> Result<(), String> {
        if self.members().contains(&NodeId::NONE) {
            return Err("node id 0 in a configuration".into());
        }
        if let Some(id) = self.voters.intersection(&self.learners).next() {
            return Err(format!("node {id} is both a voter and a learner"));
        }
        if self.is_joint() && self.voters.is_empty() {
            return Err("a joint configuration without incoming voters".into());
        }
        if self.members().len() > MEMBERS_MAX {
            return Err(format!("more than {MEMBERS_MAX} members"));
        }
        if let Some(id) = self.addresses.keys().find(|id| !self.is_member(**id)) {
            return Err(format!("an address for node {id}, which is no member"));
        }
        if self
            .addresses
            .values()
            .any(|a| a.is_empty() || a.len() > ADDRESS_BYTES_MAX)
        {
            return Err(format!(
                "an address empty or longer than {ADDRESS_BYTES_MAX} bytes"
            ));
        }
        Ok(())
    }

    /// Appends the encoding (`raft/FORMAT.md`, "Configuration"): a version byte, then the
    /// voters, the outgoing voters and the learners, each a u32 count and that many u64
    /// ids in ascending order; then a u32 count of addresses, each a u64 id (ascending) and
    /// a u32 length and that many bytes of UTF-8.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.u8(CONFIGURATION_VERSION);
        for set in [&self.voters, &self.outgoing, &self.learners] {
            w.u32(set.len() as u32);
            for id in set {
                w.u64(id.0);
            }
        }
        w.u32(self.addresses.len() as u32);
        for (id, address) in &self.addresses {
            w.u64(id.0);
            w.u32(address.len() as u32);
            w.bytes(address.as_bytes());
        }
    }

    /// The encoding as a fresh vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode(&mut out);
        out
    }

    /// Decodes a configuration that occupies all of `bytes`, refusing an unknown version,
    /// ids out of order or repeated, a learner that is an incoming voter, and trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<Configuration, String> {
        let mut r = Reader::new(bytes);
        let truncated = |t: Truncated| format!("configuration truncated at {}", t.field);
        let version = r.u8("version").map_err(truncated)?;
        if version != 1 && version != CONFIGURATION_VERSION {
            return Err(format!("unknown configuration version {version}"));
        }
        let mut sets: [BTreeSet<NodeId>; 3] = Default::default();
        for set in &mut sets {
            let count = r.u32("count").map_err(truncated)? as usize;
            if count > MEMBERS_MAX || count > r.remaining() / 8 {
                return Err(format!("configuration claims {count} members"));
            }
            let mut last = 0u64;
            for _ in 0..count {
                let id = r.u64("id").map_err(truncated)?;
                if id <= last {
                    return Err("configuration ids not ascending and non-zero".into());
                }
                last = id;
                set.insert(NodeId(id));
            }
        }
        let mut addresses = BTreeMap::new();
        if version >= 2 {
            let count = r.u32("address count").map_err(truncated)? as usize;
            if count > MEMBERS_MAX || count > r.remaining() / 12 {
                return Err(format!("configuration claims {count} addresses"));
            }
            let mut last = 0u64;
            for _ in 0..count {
                let id = r.u64("address id").map_err(truncated)?;
                if id <= last {
                    return Err("configuration address ids not ascending and non-zero".into());
                }
                last = id;
                let len = r.u32("address length").map_err(truncated)? as usize;
                if len > ADDRESS_BYTES_MAX {
                    return Err(format!("a {len}-byte address"));
                }
                let bytes = r.bytes(len, "address").map_err(truncated)?;
                let address = std::str::from_utf8(bytes)
                    .map_err(|_| format!("node {id}'s address is not UTF-8"))?;
                addresses.insert(NodeId(id), address.to_string());
            }
        }
        if r.remaining() != 0 {
            return Err(format!(
                "{} bytes after the end of a configuration",
                r.remaining()
            ));
        }
        let [voters, outgoing, learners] = sets;
        let conf = Configuration {
            voters,
            outgoing,
            learners,
            addresses,
        };
        conf.validate()?;
        Ok(conf)
    }
}

impl fmt::Display for Configuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ids = |set: &BTreeSet<NodeId>| {
            set.iter()
                .map(|id| id.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(f, "voters=[{}]", ids(&self.voters))?;
        if self.is_joint() {
            write!(f, " outgoing=[{}]", ids(&self.outgoing))?;
        }
        if !self.learners.is_empty() {
            write!(f, " learners=[{}]", ids(&self.learners))?;
        }
        Ok(())
    }
}

/// The configurations of one node's log: the one in effect where the log starts, then one
/// per configuration entry after it. The node uses the last; truncating a conflicting tail
/// falls back to the one before; a snapshot's carries the history forward.
///
/// Invariant: never empty; indices strictly ascending; the first is at or below the log's
/// start (the snapshot's index).
#[derive(Clone, Debug)]
pub(crate) struct ConfHistory {
    entries: Vec<(LogIndex, Configuration)>,
}

impl ConfHistory {
    /// A history holding `base`, in effect from `index` on.
    pub fn new(index: LogIndex, base: Configuration) -> ConfHistory {
        ConfHistory {
            entries: vec![(index, base)],
        }
    }

    /// The configuration the node uses: the latest.
    pub fn current(&self) -> &Configuration {
        &self.entries.last().expect("never empty").1
    }

    /// The configuration before the one in use, while the history holds it.
    pub fn previous(&self) -> Option<&Configuration> {
        let n = self.entries.len();
        (n >= 2).then(|| &self.entries[n - 2].1)
    }

    /// Where the configuration in use comes from (its entry's index, or the log's start).
    pub fn current_index(&self) -> LogIndex {
        self.entries.last().expect("never empty").0
    }

    /// The configuration in effect at `index`, or `None` below the history's start.
    pub fn at(&self, index: LogIndex) -> Option<&Configuration> {
        self.entries
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map(|(_, c)| c)
    }

    /// A configuration entry appended at `index`.
    pub fn push(&mut self, index: LogIndex, conf: Configuration) {
        assert!(
            index > self.current_index(),
            "configuration at {index} appended before the one at {}",
            self.current_index()
        );
        self.entries.push((index, conf));
    }

    /// The log lost its entries from `index` on: so do the configurations.
    pub fn truncate_from(&mut self, index: LogIndex) {
        while self.entries.len() > 1 && self.entries.last().expect("never empty").0 >= index {
            self.entries.pop();
        }
        assert!(
            self.entries[0].0 < index,
            "truncated the configuration the log starts with"
        );
    }

    /// The log now starts after `index`: forget configurations superseded by then.
    pub fn compact(&mut self, index: LogIndex) {
        let keep_from = self
            .entries
            .iter()
            .rposition(|(i, _)| *i <= index)
            .expect("compacted below the history's start");
        self.entries.drain(..keep_from);
    }

    /// A snapshot through `index` carrying `conf`: it is the configuration at `index`; the
    /// entries after it (a log kept past the snapshot) stay.
    pub fn install(&mut self, index: LogIndex, conf: Configuration) {
        self.entries.retain(|(i, _)| *i > index);
        self.entries.insert(0, (index, conf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[u64]) -> BTreeSet<NodeId> {
        v.iter().map(|&i| NodeId(i)).collect()
    }

    // Proves the quorum rule of a joint configuration is the minimum of a majority of each
    // half, checked against a naive oracle over every subset of up to five voters a side.
    #[test]
    fn quorum_value_is_a_majority_of_each_half() {
        let conf = Configuration {
            voters: ids(&[1, 2, 3]),
            outgoing: ids(&[3, 4, 5, 6]),
            learners: ids(&[7]),
            ..Configuration::default()
        };
        for mask in 0u32..(1 << 7) {
            let has = |id: NodeId| mask & (1 << (id.0 - 1)) != 0;
            let got = conf.quorum_value(|id| u64::from(has(id)));
            let majority =
                |set: &BTreeSet<NodeId>| set.iter().filter(|&&id| has(id)).count() > set.len() / 2;
            let oracle = majority(&conf.voters) && majority(&conf.outgoing);
            assert_eq!(got, Some(u64::from(oracle)), "mask {mask:b}");
            let vote = conf.vote_result(|id| Some(has(id)));
            assert_eq!(vote == VoteResult::Won, oracle, "mask {mask:b}");
        }
    }

    // Proves the changes make the expected configurations: learners without a joint step,
    // a voter change through the joint one, and the refusals.
    #[test]
    fn apply_makes_joint_only_when_voters_change() {
        let base = Configuration::new(ids(&[1, 2, 3]));
        let learner = base.apply(&[MemberChange::AddLearner(NodeId(4))]).unwrap();
        assert!(!learner.is_joint() && learner.is_learner(NodeId(4)));
        let joint = learner.apply(&[MemberChange::Promote(NodeId(4))]).unwrap();
        assert_eq!(joint.voters, ids(&[1, 2, 3, 4]));
        assert_eq!(joint.outgoing, ids(&[1, 2, 3]));
        assert_eq!(joint.leave_joint().voters, ids(&[1, 2, 3, 4]));
        assert!(!joint.leave_joint().is_joint());
        let errors = [
            (vec![], ConfChangeError::Empty),
            (
                vec![MemberChange::AddLearner(NodeId(1))],
                ConfChangeError::AlreadyMember(NodeId(1)),
            ),
            (
                vec![MemberChange::Promote(NodeId(2))],
                ConfChangeError::NotLearner(NodeId(2)),
            ),
            (
                vec![MemberChange::Remove(NodeId(9))],
                ConfChangeError::NotMember(NodeId(9)),
            ),
            (
                vec![
                    MemberChange::Remove(NodeId(1)),
                    MemberChange::Remove(NodeId(1)),
                ],
                ConfChangeError::Duplicate(NodeId(1)),
            ),
        ];
        for (changes, error) in errors {
            assert_eq!(base.apply(&changes), Err(error));
        }
        let single = Configuration::new(ids(&[1]));
        assert_eq!(
            single.apply(&[MemberChange::Remove(NodeId(1))]),
            Err(ConfChangeError::NoVoters)
        );
    }

    // Proves the encoding round-trips, matches its golden bytes and refuses what it must.
    #[test]
    fn encoding_round_trips_and_refuses_bad_bytes() {
        let mut conf = Configuration {
            voters: ids(&[1, 2]),
            outgoing: ids(&[1]),
            learners: ids(&[3]),
            ..Configuration::default()
        };
        // Version 1 (no addresses) is still read.
        let mut golden = vec![1u8];
        golden.extend_from_slice(&2u32.to_le_bytes());
        golden.extend_from_slice(&1u64.to_le_bytes());
        golden.extend_from_slice(&2u64.to_le_bytes());
        golden.extend_from_slice(&1u32.to_le_bytes());
        golden.extend_from_slice(&1u64.to_le_bytes());
        golden.extend_from_slice(&1u32.to_le_bytes());
        golden.extend_from_slice(&3u64.to_le_bytes());
        assert_eq!(Configuration::decode(&golden), Ok(conf.clone()));
        // Version 2 adds the addresses.
        conf.addresses.insert(NodeId(3), "h3:7003".into());
        golden[0] = 2;
        golden.extend_from_slice(&1u32.to_le_bytes());
        golden.extend_from_slice(&3u64.to_le_bytes());
        golden.extend_from_slice(&7u32.to_le_bytes());
        golden.extend_from_slice(b"h3:7003");
        let bytes = conf.to_bytes();
        assert_eq!(bytes, golden);
        assert_eq!(Configuration::decode(&bytes), Ok(conf));
        for len in 0..bytes.len() {
            assert!(
                Configuration::decode(&bytes[..len]).is_err(),
                "prefix {len}"
            );
        }
        let mut bad_version = bytes.clone();
        bad_version[0] = 3;
        assert!(Configuration::decode(&bad_version).is_err());
        let both = Configuration {
            voters: ids(&[1]),
            outgoing: ids(&[]),
            learners: ids(&[1]),
            ..Configuration::default()
        };
        assert!(Configuration::decode(&both.to_bytes()).is_err());
        let mut stranger = Configuration::new([NodeId(1)]);
        stranger.addresses.insert(NodeId(9), "h9:1".into());
        assert!(Configuration::decode(&stranger.to_bytes()).is_err());
        assert!(Configuration::decode(&both.to_bytes()).is_err());
        let mut trailing = bytes;
        trailing.push(0);
        assert!(Configuration::decode(&trailing).is_err());
    }

    // Proves the history falls back on truncation and keeps the configuration at the log's
    // start through compaction and snapshots.
    #[test]
    fn history_follows_the_log() {
        let c = |v: &[u64]| Configuration::new(ids(v));
        let mut h = ConfHistory::new(LogIndex(0), c(&[1]));
        h.push(LogIndex(5), c(&[1, 2]));
        h.push(LogIndex(9), c(&[1, 2, 3]));
        assert_eq!(h.at(LogIndex(7)), Some(&c(&[1, 2])));
        h.truncate_from(LogIndex(9));
        assert_eq!(h.current(), &c(&[1, 2]));
        h.compact(LogIndex(6));
        assert_eq!(h.at(LogIndex(6)), Some(&c(&[1, 2])));
        assert_eq!(h.at(LogIndex(4)), None);
        h.push(LogIndex(12), c(&[2]));
        h.install(LogIndex(10), c(&[1, 2, 3]));
        assert_eq!(h.at(LogIndex(10)), Some(&c(&[1, 2, 3])));
        assert_eq!(h.current(), &c(&[2]));
    }
}
