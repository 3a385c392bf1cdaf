//! Paper tests: one test per claim of the Raft paper (and the thesis extensions we build),
//! named as the claim, on a tiny in-memory cluster with instant, reliable delivery unless a
//! test cuts links itself. Each test's first comment says what it proves and how.

use raft::driver::{Driver, Host, Persisted, Write};
use raft::{
    Body, ConfChangeError, Config, Configuration, Entry, EntryKind, HardState, LogIndex,
    MemberChange, Message, NodeId, ProposeError, RawNode, Restore, RoleKind, Snapshot, StepError,
    Term,
};
use std::collections::{BTreeSet, VecDeque};

/// A cluster of cores wired back to back. `persist` mirrors what each host would store.
struct Cluster {
    nodes: Vec<RawNode>,
    durable: Vec<Durable>,
    applied: Vec<Vec<Entry>>,
    in_flight: VecDeque<Message>,
    /// Links cut in both directions.
    cut: BTreeSet<(u64, u64)>,
    /// Every message that went out, for tests that inspect traffic.
    sent: Vec<Message>,
    /// Confirmed reads per node.
    reads: Vec<Vec<raft::ReadState>>,
    /// Snapshots the nodes asked their host for, per node.
    snapshot_requests: Vec<u64>,
    /// Reads of stored entries the nodes asked their host for, per node.
    fetches: Vec<u64>,
    /// The first configuration's voters are ids `1..=voters`; the rest are spare ids.
    voters: u64,
}

/// What a node's host keeps on disk: what a restart starts from, and where a snapshot the
/// leader asks for is read back from.
#[derive(Clone, Default)]
struct Durable {
    hard_state: HardState,
    snapshot: Snapshot,
    entries: Vec<Entry>,
}

impl Durable {
    fn restore(&self) -> Restore {
        Restore {
            hard_state: self.hard_state,
            snapshot: self.snapshot.meta,
            entries: self.entries.clone(),
            log_start: None,
            repairing: false,
            configuration: (!self.snapshot.is_empty()).then(|| self.snapshot.configuration.clone()),
        }
    }
}

fn config(id: u64, n: u64) -> Config {
    let mut c = Config::new(NodeId(id), (1..=n).map(NodeId).collect());
    c.election_timeout_ticks = 10;
    c.heartbeat_interval_ticks = 2;
    c.snapshot_chunk_bytes = 7;
    c
}

/// A node's host in these tests: an instant disk, an applied list and the shared network.
struct PaperHost<'a> {
    durable: &'a mut Durable,
    applied: &'a mut Vec<Entry>,
    reads: &'a mut Vec<raft::ReadState>,
    out: &'a mut VecDeque<Message>,
    snapshot_requests: &'a mut u64,
    fetches: &'a mut u64,
}

impl Host for PaperHost<'_> {
    type Error = std::convert::Infallible;

    fn send(&mut self, message: Message) {
        self.out.push_back(message);
    }

    fn persist(&mut self, w: &mut Write) -> Result<Persisted, Self::Error> {
        let d = &mut *self.durable;
        if let Some(s) = w.snapshot.take() {
            d.entries.retain(|e| e.index > s.meta.index);
            self.applied.clear();
            d.snapshot = s;
        }
        if let Some(hs) = w.hard_state {
            d.hard_state = hs;
        }
        for e in w.entries.drain(..) {
            d.entries.retain(|x| x.index < e.index);
            d.entries.push(e);
        }
        Ok(Persisted::Done)
    }

    fn apply(
        &mut self,
        _raw: &mut RawNode,
        entries: Vec<Entry>,
        reads: Vec<raft::ReadState>,
        _dropped_reads: Vec<u64>,
    ) {
        self.applied.extend(entries);
        self.reads.extend(reads);
    }

    fn snapshot_for_follower(
        &mut self,
        _raw: &RawNode,
        meta: raft::SnapshotMeta,
    ) -> Option<Snapshot> {
        *self.snapshot_requests += 1;
        // A host whose stored snapshot is older than the request takes a new one; the
        // tests that trim the log do that themselves.
        let snapshot = self.durable.snapshot.clone();
        (snapshot.meta.index >= meta.index).then_some(snapshot)
    }

    fn fetch_entries(&mut self, _raw: &RawNode, wanted: raft::EntriesWanted) -> Option<Vec<Entry>> {
        *self.fetches += 1;
        let entries: Vec<Entry> = self
            .durable
            .entries
            .iter()
            .filter(|e| e.index >= wanted.lo && e.index < wanted.hi)
            .cloned()
            .collect();
        (!entries.is_empty()).then_some(entries)
    }
}

impl Cluster {
    fn new(n: u64) -> Cluster {
        Cluster::with(n, |_| {})
    }

    fn with(n: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        Cluster::with_voters(n, n, tweak)
    }

    /// `n` nodes of which ids `1..=voters` are the first configuration's voters.
    fn with_voters(n: u64, voters: u64, tweak: impl Fn(&mut Config)) -> Cluster {
        let nodes = (1..=n)
            .map(|id| {
                let mut c = config(id, voters);
                tweak(&mut c);
                RawNode::new(c, Restore::default()).unwrap()
            })
            .collect();
        Cluster {
            nodes,
            durable: (0..n).map(|_| Durable::default()).collect(),
            applied: vec![Vec::new(); n as usize],
            in_flight: VecDeque::new(),
            cut: BTreeSet::new(),
            sent: Vec::new(),
            reads: vec![Vec::new(); n as usize],
            snapshot_requests: vec![0; n as usize],
            fetches: vec![0; n as usize],
            voters,
        }
    }

    fn node(&mut self, id: u64) -> &mut RawNode {
        &mut self.nodes[id as usize - 1]
    }

    fn isolate(&mut self, id: u64) {
        for other in 1..=self.nodes.len() as u64 {
            if other != id {
                self.cut.insert((id, other));
                self.cut.insert((other, id));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn heal_pair(&mut self, a: u64, b: u64) {
        self.cut.remove(&(a, b));
        self.cut.remove(&(b, a));
    }

    /// Handles every node's Ready like a host with an instant disk (through the one Ready
    /// loop, `raft::driver`), then delivers messages until the network is quiet.
    fn settle(&mut self) {
        while self.step_once() {}
    }

    /// Handles every node's Ready, then delivers one message; false when none was left.
    fn step_once(&mut self) -> bool {
        for i in 0..self.nodes.len() {
            let mut host = PaperHost {
                durable: &mut self.durable[i],
                applied: &mut self.applied[i],
                reads: &mut self.reads[i],
                out: &mut self.in_flight,
                snapshot_requests: &mut self.snapshot_requests[i],
                fetches: &mut self.fetches[i],
            };
            match Driver::new().run(&mut self.nodes[i], &mut host) {
                Ok(()) => {}
                Err(never) => match never {},
            }
        }
        let Some(m) = self.in_flight.pop_front() else {
            return false;
        };
        self.sent.push(m.clone());
        if !self.cut.contains(&(m.from.0, m.to.0)) {
            let to = m.to.0 as usize - 1;
            self.nodes[to].step(m).unwrap();
        }
        true
    }

    fn tick_all(&mut self, ticks: u64) {
        for _ in 0..ticks {
            for n in self.nodes.iter_mut() {
                n.tick();
            }
            self.settle();
        }
    }

    /// Ticks until some node leads; returns its id.
    fn elect(&mut self) -> u64 {
        for _ in 0..200 {
            self.tick_all(1);
            if let Some(n) = self.nodes.iter().find(|n| n.is_leader()) {
                return n.id().0;
            }
        }
        panic!("no leader elected");
    }

    /// Makes `id` campaign at once (as a leadership transfer would) until it leads.
    fn campaign(&mut self, id: u64) {
        let other = if id == 1 { 2 } else { 1 };
        for _ in 0..20 {
            if self.node(id).is_leader() {
                return;
            }
            let term = self.node(id).term();
            let nudge = Message {
                from: NodeId(other),
                to: NodeId(id),
                term,
                body: Body::TimeoutNow,
            };
            self.node(id).step(nudge).unwrap();
            self.settle();
        }
        panic!("node {id} did not become leader");
    }

    fn commands(&self, id: u64) -> Vec<Vec<u8>> {
        self.applied[id as usize - 1]
            .iter()
            .filter(|e| e.kind == EntryKind::Normal)
            .map(|e| e.data.to_vec())
            .collect()
    }

    /// The service on `id` snapshots through `index`: the host stores the snapshot, then
    /// tells the core.
    /// Proposes `n` small commands at `leader`, delivers everything, and returns the
    /// leader's commit index.
    fn commit_some(&mut self, leader: u64, n: u8) -> LogIndex {
        for k in 0..n {
            self.node(leader).propose(vec![k; 5]).unwrap();
        }
        self.settle();
        self.node(leader).commit_index()
    }

    /// Hands `snapshot` to `leader` as its host would, delivers everything, and says
    /// whether any snapshot chunk was sent meanwhile.
    fn provide_sends_snapshot(&mut self, leader: u64, snapshot: Snapshot) -> bool {
        let sent_before = self.sent.len();
        self.node(leader).provide_snapshot(snapshot);
        self.settle();
        self.sent[sent_before..]
            .iter()
            .any(|m| matches!(m.body, Body::Snapshot { .. }))
    }

    fn compact(&mut self, id: u64, index: LogIndex, data: Vec<u8>) -> bool {
        let i = id as usize - 1;
        let Some(term) = self.nodes[i].term_at(index) else {
            return false;
        };
        let d = &mut self.durable[i];
        d.entries.retain(|e| e.index > index);
        d.snapshot = Snapshot {
            meta: raft::SnapshotMeta { index, term },
            configuration: self.nodes[i].configuration_at(index).unwrap(),
            data,
        };
        self.nodes[i].compact(index)
    }

    fn restart(&mut self, id: u64, tweak: impl Fn(&mut Config)) {
        let i = id as usize - 1;
        let mut c = config(id, self.voters);
        tweak(&mut c);
        self.nodes[i] = RawNode::new(c, self.durable[i].restore()).unwrap();
        self.applied[i].clear();
    }
}

/// §5.2 Election safety: a cluster elects exactly one leader, and every node agrees on its
/// term. Shown by electing on a 5-node cluster and inspecting every node.
#[test]
fn election_safety_one_leader_per_term() {
    let mut c = Cluster::new(5);
    let leader = c.elect();
    c.tick_all(5);
    let leaders: Vec<u64> = c
        .nodes
        .iter()
        .filter(|n| n.is_leader())
        .map(|n| n.id().0)
        .collect();
    assert_eq!(leaders, vec![leader]);
    let term = c.node(leader).term();
    assert!(c
        .nodes
        .iter()
        .all(|n| n.term() == term && n.leader() == NodeId(leader)));
}

/// §5.2: election timeouts are randomized in [e, 2e): a lone follower campaigns after at
/// least e and fewer than 2e ticks of silence.
#[test]
fn election_timeout_is_randomized_within_e_to_2e() {
    for seed in 0..50 {
        let mut cfg = config(1, 3);
        cfg.seed = seed;
        let mut n = RawNode::new(cfg, Restore::default()).unwrap();
        let mut ticks = 0;
        while n.role() == RoleKind::Follower {
            n.tick();
            ticks += 1;
        }
        assert!((10..20).contains(&ticks), "campaigned after {ticks} ticks");
    }
}

/// §5.1: a leader that sees a higher term steps down. The old leader is isolated while the
/// rest elect a new one; on healing, the old leader becomes a follower of the new term.
#[test]
fn higher_term_makes_leader_step_down() {
    let mut c = Cluster::new(3);
    let old = c.elect();
    c.isolate(old);
    let others: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    c.campaign(others[0]);
    let new_term = c.node(others[0]).term();
    c.heal();
    c.tick_all(5);
    assert!(!c.node(old).is_leader());
    assert_eq!(c.node(old).term(), new_term);
}

/// §5.1: a message from an older term is rejected: an append from a deposed leader does
/// not change the follower's log.
#[test]
fn stale_term_append_is_rejected() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let follower = if leader == 1 { 2 } else { 1 };
    let term = c.node(follower).term();
    let last = c.node(follower).last_index();
    let stale = Message {
        from: NodeId(leader),
        to: NodeId(follower),
        term: Term(term.0 - 1),
        body: Body::Append {
            prev_index: last,
            prev_term: term,
            commit: LogIndex(0),
            entries: vec![Entry {
                term: Term(term.0 - 1),
                index: last.next(),
                kind: EntryKind::Normal,
                data: b"stale"[..].into(),
            }],
        },
    };
    c.node(follower).step(stale).unwrap();
    assert_eq!(c.node(follower).last_index(), last);
}

/// §5.4.1: a vote is refused to a candidate whose log is less up to date. A node that
/// missed entries cannot become leader while the up-to-date nodes can answer.
#[test]
fn vote_refused_to_candidate_with_older_log() {
    let mut c = Cluster::with(3, |cfg| cfg.pre_vote = false);
    let leader = c.elect();
    let lagging = (1..=3).find(|&i| i != leader).unwrap();
    c.isolate(lagging);
    c.node(leader).propose(b"a".to_vec()).unwrap();
    c.settle();
    c.heal();
    // Force the lagging node to campaign right away, with check-quorum's lease out of play.
    let term = c.node(leader).term();
    c.node(lagging)
        .step(Message {
            from: NodeId(leader),
            to: NodeId(lagging),
            term,
            body: Body::TimeoutNow,
        })
        .unwrap();
    c.settle();
    assert!(
        !c.node(lagging).is_leader(),
        "a node with an older log won an election"
    );
}

/// §5.2 / Figure 2: at most one vote per term, and it is durable before it is announced:
/// the vote answer leaves only after the hard state recording it is persisted.
#[test]
fn vote_is_persisted_before_it_is_sent() {
    let mut n = RawNode::new(config(2, 3), Restore::default()).unwrap();
    n.step(vote_request(1, 2, Term(5))).unwrap();
    let mut rd = n.ready();
    assert_eq!(
        rd.hard_state(),
        Some(HardState {
            term: Term(5),
            vote: NodeId(1),
            commit: LogIndex(0)
        })
    );
    assert!(
        rd.take_messages().is_empty(),
        "vote answer sent before persisting"
    );
    let after = rd.take_persisted_messages();
    assert!(matches!(
        after[0].body,
        Body::VoteResponse { granted: true }
    ));
    n.advance(rd);
    // A second candidate in the same term is refused.
    assert_eq!(
        vote_answer(&mut n, vote_request(3, 2, Term(5))),
        Some(false)
    );
}

/// Figure 2: votedFor is persistent state, so a vote outlives the process that cast it.
/// Node 2 votes for node 1 in term 5 and is restarted from the hard state it persisted;
/// node 3 then asks for its vote in term 5 and is refused, while node 1, whose answer may
/// have been lost with the crash, is granted the same vote again.
#[test]
fn node_that_voted_in_a_term_refuses_another_candidate_of_that_term_after_restart() {
    let mut n = RawNode::new(config(2, 3), Restore::default()).unwrap();
    n.step(vote_request(1, 2, Term(5))).unwrap();
    let mut rd = n.ready();
    let hard_state = rd.hard_state().expect("a vote changes the hard state");
    assert!(matches!(
        rd.take_persisted_messages()[0].body,
        Body::VoteResponse { granted: true }
    ));
    n.advance(rd);
    let restore = Restore {
        hard_state,
        ..Restore::default()
    };
    let mut n = RawNode::new(config(2, 3), restore).unwrap();
    assert_eq!(
        vote_answer(&mut n, vote_request(3, 2, Term(5))),
        Some(false),
        "voted twice in term 5 after a restart"
    );
    assert_eq!(vote_answer(&mut n, vote_request(1, 2, Term(5))), Some(true));
    assert_eq!((n.term(), n.status().vote), (Term(5), NodeId(1)));
}

/// A vote request of a candidate with an empty log.
fn vote_request(from: u64, to: u64, term: Term) -> Message {
    Message {
        from: NodeId(from),
        to: NodeId(to),
        term,
        body: Body::Vote {
            last_index: LogIndex(0),
            last_term: Term(0),
            transfer: false,
        },
    }
}

/// Steps `request` into `n` and returns whether the vote it answers (after persisting)
/// grants it, `None` when it does not answer.
fn vote_answer(n: &mut RawNode, request: Message) -> Option<bool> {
    n.step(request).unwrap();
    let mut rd = n.ready();
    let answer = rd
        .take_persisted_messages()
        .into_iter()
        .find_map(|m| match m.body {
            Body::VoteResponse { granted } => Some(granted),
            _ => None,
        });
    n.advance(rd);
    answer
}

/// Figure 2 lists commitIndex as volatile state: a Ready whose hard state changed only the
/// commit index needs no sync, while new entries and a new term or vote do.
#[test]
fn commit_only_hard_state_needs_no_sync() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.node(leader).propose(b"x".to_vec()).unwrap();
    let mut rd = c.node(leader).ready();
    assert!(rd.must_sync(), "new entries must be synced");
    let entries = rd.take_entries();
    assert!(
        rd.must_sync(),
        "the answer must not change when the entries are taken out"
    );
    let appends = rd.take_messages();
    assert_eq!(entries.len(), 1);
    c.node(leader).advance(rd);
    let mut answers = Vec::new();
    for m in appends
        .into_iter()
        .filter(|m| matches!(m.body, Body::Append { .. }))
    {
        let to = m.to.0;
        c.node(to).step(m).unwrap();
        let mut rd = c.node(to).ready();
        assert!(rd.must_sync(), "a follower's new entries must be synced");
        answers.extend(rd.take_persisted_messages());
        c.node(to).advance(rd);
    }
    for m in answers {
        c.node(leader).step(m).unwrap();
    }
    let rd = c.node(leader).ready();
    let hs = rd.hard_state().expect("the commit index moved");
    assert_eq!(hs.commit, c.node(leader).status().commit);
    assert!(rd.entries().is_empty());
    assert!(!rd.must_sync(), "only the commit index changed: {rd}");
    c.node(leader).advance(rd);
    let mut n = RawNode::new(config(2, 3), Restore::default()).unwrap();
    n.step(Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body: Body::Vote {
            last_index: LogIndex(0),
            last_term: Term(0),
            transfer: false,
        },
    })
    .unwrap();
    assert!(n.ready().must_sync(), "a vote must be synced");
}

/// §5.3 / thesis §10.2.1: a leader's appends may leave before its own disk write, but a
/// follower's acknowledgement waits for the write.
#[test]
fn leader_sends_before_persisting_followers_answer_after() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.node(leader).propose(b"x".to_vec()).unwrap();
    let mut rd = c.node(leader).ready();
    assert!(!rd.entries().is_empty());
    let now = rd.take_messages();
    assert!(now.iter().any(|m| matches!(m.body, Body::Append { .. })));
    let follower = now[0].to;
    c.node(leader).advance(rd);
    c.node(follower.0).step(now[0].clone()).unwrap();
    let mut rd = c.node(follower.0).ready();
    assert!(rd.take_messages().is_empty());
    let after = rd.take_persisted_messages();
    assert!(matches!(
        after[0].body,
        Body::AppendResponse { reject: None, .. }
    ));
    c.node(follower.0).advance(rd);
}

/// §5.3 Log matching: after replication every node holds the same entries, and a follower
/// with a conflicting suffix has it truncated and replaced by the leader's.
#[test]
fn log_matching_conflicting_suffix_replaced() {
    let mut c = Cluster::new(3);
    let old = c.elect();
    c.isolate(old);
    // Uncommittable entries on the isolated leader.
    for k in 0..3 {
        c.node(old).propose(vec![b'o', k]).unwrap();
    }
    c.settle();
    let others: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    c.campaign(others[0]);
    for k in 0..5 {
        c.node(others[0]).propose(vec![b'n', k]).unwrap();
    }
    c.settle();
    c.heal();
    c.tick_all(10);
    let last = c.node(others[0]).last_index();
    for id in 1..=3 {
        assert_eq!(c.node(id).last_index(), last, "node {id} did not converge");
        for i in 1..=last.0 {
            let a = c.node(id).entry(LogIndex(i)).cloned();
            let b = c.node(others[0]).entry(LogIndex(i)).cloned();
            assert_eq!(a, b, "node {id} differs at {i}");
        }
        assert!(
            !c.commands(id).iter().any(|d| d[0] == b'o'),
            "an uncommitted entry was applied"
        );
    }
}

/// §5.4.2 / Figure 8: a leader does not commit an entry of an earlier term by counting
/// replicas; it commits it only together with an entry of its own term. Built step by
/// step: an entry of term t1 exists only on node A; B leads term t2 without touching it;
/// A then leads term t3 and replicates it to C, a majority, yet may not commit it.
#[test]
fn previous_term_entries_not_committed_by_counting() {
    let mut c = Cluster::with(3, |cfg| cfg.noop_on_election = false);
    let a = c.elect();
    let (b, third) = match a {
        1 => (2, 3),
        2 => (1, 3),
        _ => (1, 2),
    };
    c.isolate(a);
    let old_index = c.node(a).propose(b"old".to_vec()).unwrap();
    c.settle();
    c.campaign(b);
    assert!(
        c.node(b).last_index() < old_index,
        "B must not hold the old entry"
    );
    // A learns term t2 but keeps its longer log; then A leads t3 without B.
    c.heal();
    c.tick_all(3);
    assert!(!c.node(a).is_leader() && c.node(a).term() == c.node(b).term());
    c.isolate(b);
    c.campaign(a);
    assert!(c.node(a).term() > c.node(b).term());
    c.tick_all(2);
    assert_eq!(
        c.node(third).entry(old_index).map(|e| e.data.to_vec()),
        Some(b"old".to_vec()),
        "the old entry reached a majority"
    );
    assert!(
        c.node(a).commit_index() < old_index,
        "an earlier-term entry was committed by counting replicas"
    );
    c.node(a).propose(b"new".to_vec()).unwrap();
    c.tick_all(2);
    assert!(c.node(a).commit_index() > old_index);
    assert!(c.commands(third).contains(&b"old".to_vec()));
}

/// Thesis §9.6: with pre-vote, a partitioned follower does not raise its term, so on
/// rejoining it does not depose the leader.
#[test]
fn prevote_partitioned_node_keeps_its_term() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let term = c.node(leader).term();
    let f = (1..=3).find(|&i| i != leader).unwrap();
    c.isolate(f);
    c.tick_all(100);
    assert_eq!(c.node(f).term(), term, "isolated node raised its term");
    c.heal();
    c.tick_all(20);
    assert!(c.node(leader).is_leader());
    assert_eq!(c.node(leader).term(), term);
}

/// Thesis §6.2: with check-quorum, a leader that cannot reach a majority steps down
/// within an election timeout or two.
#[test]
fn check_quorum_isolated_leader_steps_down() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.isolate(leader);
    c.tick_all(25);
    assert!(!c.node(leader).is_leader());
}

/// Thesis §6.4 ReadIndex: a read is confirmed, at the commit index, only after a quorum
/// answered a heartbeat sent after the read arrived; an isolated leader confirms none.
#[test]
fn read_index_needs_a_quorum() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.tick_all(2);
    let commit = c.node(leader).commit_index();
    c.node(leader).read_index(7).unwrap();
    assert!(
        c.reads[leader as usize - 1].is_empty(),
        "confirmed without a round trip"
    );
    c.settle();
    assert_eq!(
        c.reads[leader as usize - 1],
        vec![raft::ReadState {
            context: 7,
            index: commit
        }]
    );
    c.isolate(leader);
    c.node(leader).read_index(8).unwrap();
    c.tick_all(5);
    assert!(
        c.reads[leader as usize - 1].iter().all(|r| r.context != 8),
        "an isolated leader confirmed a read"
    );
}

/// Thesis §3.10 leadership transfer: the target becomes leader after catching up.
#[test]
fn leadership_transfer_moves_the_leader() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    c.node(leader).propose(b"x".to_vec()).unwrap();
    c.settle();
    let target = (1..=3).find(|&i| i != leader).unwrap();
    c.node(leader).transfer_leader(NodeId(target)).unwrap();
    c.settle();
    assert!(c.node(target).is_leader());
    assert_eq!(
        c.node(leader).propose(b"y".to_vec()),
        Err(ProposeError::NotLeader {
            leader: NodeId(target)
        })
    );
}

/// §7: a follower that missed entries the leader compacted receives the snapshot in
/// chunks and catches up; the leader keeps serving meanwhile.
#[test]
fn install_snapshot_catches_up_a_lagging_follower() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let lagging = (1..=3).find(|&i| i != leader).unwrap();
    c.isolate(lagging);
    for k in 0..20u8 {
        c.node(leader).propose(vec![k; 5]).unwrap();
    }
    c.settle();
    let applied = c.node(leader).commit_index();
    let data = vec![42u8; 50]; // Several 7-byte chunks.
    assert!(c.compact(leader, applied, data.clone()));
    c.heal();
    c.tick_all(20);
    let snap = c.durable[lagging as usize - 1].snapshot.clone();
    assert_eq!(
        snap,
        Snapshot {
            meta: c.node(leader).snapshot_meta(),
            configuration: c.node(leader).configuration().clone(),
            data
        }
    );
    let chunks = c
        .sent
        .iter()
        .filter(|m| matches!(m.body, Body::Snapshot { .. }) && m.to == NodeId(lagging))
        .count();
    assert!(chunks >= 8, "snapshot sent in {chunks} chunks");
    // Heartbeats must not start extra chunk chains (they multiplied and livelocked a leader).
    assert!(chunks <= 10, "snapshot chunks resent: {chunks} sent for 8");
    c.node(leader).propose(b"after".to_vec()).unwrap();
    c.tick_all(4);
    assert_eq!(
        c.node(lagging).commit_index(),
        c.node(leader).commit_index()
    );
}

/// §7 with the snapshot's bytes kept by the host alone: the leader asks its host for them
/// once when followers fall behind its log, sends the same bytes to each, and drops a
/// snapshot handed to it that is no longer the latest instead of sending it.
#[test]
fn leader_asks_its_host_for_the_snapshot_once_and_shares_it() {
    let mut c = Cluster::new(5);
    let leader = c.elect();
    let lagging: Vec<u64> = (1..=5).filter(|&i| i != leader).take(2).collect();
    for &id in &lagging {
        c.isolate(id);
    }
    let first = c.commit_some(leader, 10);
    assert!(c.compact(leader, first, vec![1u8; 20]));
    let old = c.durable[leader as usize - 1].snapshot.clone();
    let second = c.commit_some(leader, 10);
    assert!(c.compact(leader, second, vec![2u8; 20]));
    assert_eq!(
        c.snapshot_requests[leader as usize - 1],
        0,
        "asked with no one behind"
    );
    assert!(
        !c.provide_sends_snapshot(leader, old),
        "an outdated snapshot was sent"
    );
    c.heal();
    c.tick_all(20);
    assert_eq!(c.snapshot_requests[leader as usize - 1], 1);
    for &id in &lagging {
        let snap = &c.durable[id as usize - 1].snapshot;
        assert_eq!(snap.meta.index, second);
        assert_eq!(snap.data, vec![2u8; 20]);
        assert_eq!(c.node(id).commit_index(), c.node(leader).commit_index());
    }
}

/// A leader that keeps fewer entries in memory than on disk (`trim`) serves a follower from
/// storage: behind the stored snapshot, the follower gets that snapshot (read back by the
/// host, not a new one taken for it) and then the entries between it and the in-memory log,
/// fetched from storage (`EntriesWanted` / `entries_fetched`); it ends with the same log.
#[test]
fn a_follower_behind_the_trimmed_log_gets_the_stored_snapshot_then_stored_entries() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let lagging = (1..=3).find(|&i| i != leader).unwrap();
    c.isolate(lagging);
    let stored = c.commit_some(leader, 10);
    assert!(c.compact(leader, stored, vec![1u8; 20]));
    let trimmed = c.commit_some(leader, 10);
    // Memory only: the stored snapshot stays at `stored`, the entries stay on disk.
    assert!(c.node(leader).trim(trimmed));
    assert_eq!(c.node(leader).snapshot_meta().index, trimmed);
    assert_eq!(c.node(leader).stored_snapshot().index, stored);
    c.heal();
    c.tick_all(20);
    let l = leader as usize - 1;
    assert!(c.snapshot_requests[l] >= 1, "never asked for the snapshot");
    assert!(c.fetches[l] >= 1, "never asked for the stored entries");
    let f = lagging as usize - 1;
    assert_eq!(c.durable[f].snapshot.meta.index, stored);
    assert_eq!(c.durable[f].snapshot.data, vec![1u8; 20]);
    assert_eq!(
        c.node(lagging).commit_index(),
        c.node(leader).commit_index()
    );
    let tail = |d: &Durable| {
        d.entries
            .iter()
            .filter(|e| e.index > stored)
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(tail(&c.durable[f]), tail(&c.durable[l]));
}

/// A follower behind the trimmed in-memory log but past the stored snapshot needs no
/// snapshot at all: the entries come from storage.
#[test]
fn a_follower_behind_the_trimmed_log_only_gets_entries_from_storage() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let lagging = (1..=3).find(|&i| i != leader).unwrap();
    let common = c.commit_some(leader, 3);
    c.isolate(lagging);
    let trimmed = c.commit_some(leader, 20);
    assert!(c.node(leader).trim(trimmed));
    c.heal();
    c.tick_all(20);
    let l = leader as usize - 1;
    assert_eq!(c.snapshot_requests[l], 0, "asked for a snapshot");
    assert!(c.fetches[l] >= 1, "never asked for the stored entries");
    assert!(c.node(lagging).commit_index() > common);
    assert_eq!(
        c.node(lagging).commit_index(),
        c.node(leader).commit_index()
    );
    assert_eq!(
        c.durable[lagging as usize - 1].entries,
        c.durable[l].entries
    );
}

/// Figure 2 persistence: a node restarted from its durable state keeps its term, vote and
/// log, and a cluster restarted entirely keeps every committed entry.
#[test]
fn restart_keeps_term_vote_and_committed_entries() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    for k in 0..5u8 {
        c.node(leader).propose(vec![k]).unwrap();
    }
    c.tick_all(4);
    let commit = c.node(leader).commit_index();
    let term = c.node(leader).term();
    for id in 1..=3 {
        let vote = c.node(id).status().vote;
        assert!(!vote.is_none(), "node {id} did not vote in term {term}");
        c.restart(id, |_| {});
        assert_eq!(c.node(id).term(), term);
        assert_eq!(c.node(id).status().vote, vote, "node {id} forgot its vote");
    }
    let leader = c.elect();
    c.node(leader).propose(b"more".to_vec()).unwrap();
    c.tick_all(4);
    for id in 1..=3 {
        let cmds = c.commands(id);
        for k in 0..5u8 {
            assert!(
                cmds.contains(&vec![k]),
                "node {id} lost committed entry {k}"
            );
        }
        assert!(c.node(id).commit_index() > commit);
    }
}

/// Flow control: the in-flight window bounds appends per follower in messages; a
/// follower that does not answer receives at most `inflight_messages_max` appends.
#[test]
fn inflight_window_bounds_unacknowledged_appends() {
    let mut c = Cluster::with(3, |cfg| {
        cfg.inflight_messages_max = 4;
        cfg.append_bytes_max = 1;
    });
    let leader = c.elect();
    c.node(leader).propose(b"p".to_vec()).unwrap();
    c.settle();
    let f = (1..=3).find(|&i| i != leader).unwrap();
    // Answers from f are lost from now on.
    c.cut.insert((f, leader));
    c.sent.clear();
    for k in 0..50u8 {
        c.node(leader).propose(vec![k]).unwrap();
    }
    c.settle();
    let appends = c
        .sent
        .iter()
        .filter(|m| {
            m.to == NodeId(f)
                && matches!(&m.body, Body::Append { entries, .. } if !entries.is_empty())
        })
        .count();
    assert_eq!(appends, 4, "window of 4 not honoured");
}

/// Back-pressure: a leader refuses proposals beyond its uncommitted-bytes budget.
#[test]
fn uncommitted_bytes_are_bounded() {
    let mut c = Cluster::with(3, |cfg| cfg.uncommitted_bytes_max = 100);
    let leader = c.elect();
    for id in 1..=3 {
        if id != leader {
            c.isolate(id);
        }
    }
    let mut refused = false;
    for _ in 0..20 {
        if c.node(leader).propose(vec![0; 10]) == Err(ProposeError::Backpressure) {
            refused = true;
            break;
        }
    }
    assert!(refused, "no back-pressure after 200 uncommitted bytes");
}

/// The uncommitted budget counts what entries keep allocated: a proposal that is a small
/// range of a large buffer (a client's write within one read of its connection) counts the
/// whole buffer, once for the ranges of it proposed in a row, and a commit frees exactly what
/// its entries counted.
#[test]
fn uncommitted_bytes_count_the_buffers_entries_keep() {
    use raft::SharedBytes;
    let mut c = Cluster::with(3, |cfg| cfg.uncommitted_bytes_max = 1_000);
    let leader = c.elect();
    c.settle();
    for id in 1..=3 {
        if id != leader {
            c.isolate(id);
        }
    }
    // Five 10-byte ranges of one 600-byte buffer: 600 + 4 * 10 bytes counted.
    let read = SharedBytes::from(vec![7u8; 600]);
    for i in 0..5 {
        let range = read.slice_ref(&read[i * 10..i * 10 + 10]);
        assert_eq!(
            c.node(leader).propose(range).map(|_| ()),
            Ok(()),
            "range {i} of one buffer"
        );
    }
    // A range of another 600-byte buffer would make 1,240: refused, though its own 10
    // bytes fit many times over.
    let other = SharedBytes::from(vec![8u8; 600]);
    assert_eq!(
        c.node(leader).propose(other.slice_ref(&other[..10])),
        Err(ProposeError::Backpressure),
        "a range pinning a second 600-byte buffer was counted as its 10 bytes"
    );
    // Once committed, the budget is whole again.
    c.heal();
    c.settle();
    assert_eq!(
        c.node(leader)
            .propose(other.slice_ref(&other[..10]))
            .map(|_| ()),
        Ok(())
    );
    let another = SharedBytes::from(vec![9u8; 600]);
    assert_eq!(
        c.node(leader).propose(another.slice_ref(&another[..10])),
        Err(ProposeError::Backpressure),
        "the committed entries' bytes were not the ones freed"
    );
}

/// Every message kind prints on one line in the documented shape.
#[test]
fn messages_display_on_one_line() {
    let m = Message {
        from: NodeId(1),
        to: NodeId(2),
        term: Term(3),
        body: Body::Append {
            prev_index: LogIndex(17),
            prev_term: Term(2),
            commit: LogIndex(16),
            entries: vec![],
        },
    };
    assert_eq!(
        m.to_string(),
        "1->2 Append term=3 prev=2/17 commit=16 entries=0"
    );
}

/// A follower told that its leader's process is gone campaigns within a quarter of the
/// election timeout instead of a full one, and the survivors elect a leader quickly; a
/// false alarm about a live leader does not unseat it.
#[test]
fn unreachable_leader_triggers_a_quick_election() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let term = c.node(leader).term();
    // False alarm: one follower loses its connection, the leader is fine.
    let f = (1..=3).find(|&i| i != leader).unwrap();
    c.node(f).report_unreachable(NodeId(leader));
    c.tick_all(10);
    assert!(c.node(leader).is_leader());
    assert_eq!(c.node(leader).term(), term);
    // Real crash: both followers learn it; a new leader within a few ticks (timeout is 10).
    c.isolate(leader);
    for id in (1..=3).filter(|&i| i != leader) {
        c.node(id).report_unreachable(NodeId(leader));
    }
    let mut ticks = 0;
    while !(1..=3).any(|i| i != leader && c.nodes[i as usize - 1].is_leader()) {
        for id in (1..=3).filter(|&i| i != leader) {
            c.node(id).tick();
        }
        c.settle();
        ticks += 1;
        assert!(ticks < 10, "no quick election");
    }
}

/// A node that cut its damaged log (restarted repairing, with fewer entries than it once
/// acknowledged) stays out of elections until it holds again everything the leader had
/// committed: the leader's heartbeat names a commit index from the node's old, stale match,
/// and clamping it to the cut log must not end the repair. It ends once appends have brought
/// the log up to what the leader sent.
#[test]
fn a_repairing_node_ends_its_repair_only_with_what_it_acknowledged() {
    let mut c = Cluster::new(3);
    let leader = c.elect();
    let committed = c.commit_some(leader, 10);
    let damaged = (1..=3).find(|&i| i != leader).unwrap();
    let i = damaged as usize - 1;
    // The cut: the last five entries are gone from its disk; its term and vote are kept.
    c.durable[i]
        .entries
        .retain(|e| e.index.0 + 5 <= committed.0);
    let mut restore = c.durable[i].restore();
    restore.repairing = true;
    c.nodes[i] = RawNode::new(config(damaged, 3), restore).unwrap();
    c.applied[i].clear();
    assert!(c.node(damaged).status().repairing);
    // One heartbeat round: the leader still believes the old match.
    c.node(leader).tick();
    c.node(leader).tick();
    assert!(c.node(damaged).last_index() < committed);
    // Message by message: whenever the node is not repairing, its log holds what it
    // acknowledged.
    for _ in 0..2000 {
        if !c.step_once() {
            c.tick_all(1);
        }
        let n = c.node(damaged);
        if !n.status().repairing {
            assert!(
                n.last_index() >= committed,
                "the repair ended with the log at {} of {committed} committed",
                n.last_index()
            );
        }
    }
    assert!(
        !c.node(damaged).status().repairing,
        "the repair never ended"
    );
    assert!(c.node(damaged).last_index() >= committed);
}

// ----- membership changes (paper §6, thesis §4) -----

fn ids(v: &[u64]) -> BTreeSet<NodeId> {
    v.iter().map(|&i| NodeId(i)).collect()
}

fn simple(voters: &[u64], learners: &[u64]) -> Configuration {
    Configuration {
        voters: ids(voters),
        outgoing: BTreeSet::new(),
        learners: ids(learners),
        ..Configuration::default()
    }
}

impl Cluster {
    /// Proposes `changes` at `leader` and delivers everything.
    fn change(&mut self, leader: u64, changes: &[MemberChange]) -> LogIndex {
        let index = self.node(leader).propose_conf_change(changes).unwrap();
        self.settle();
        index
    }

    /// Voters {1,2,3} led by 1, spare nodes up to `n`, each added as a learner.
    fn with_learners(n: u64) -> Cluster {
        let mut c = Cluster::with_voters(n, 3, |_| {});
        c.campaign(1);
        let learners: Vec<MemberChange> = (4..=n)
            .map(|id| MemberChange::AddLearner(NodeId(id)))
            .collect();
        c.change(1, &learners);
        c.commit_some(1, 2);
        c
    }
}

/// §6 and the single-server change bug of 2015: a leader proposes a change only after an
/// entry of its own term has committed (before, it may not know of a change an earlier
/// leader committed). Shown on a cluster without the leader's no-op: refused, then
/// accepted once a command of the leader's term commits.
#[test]
fn a_change_waits_for_an_entry_of_the_leaders_term() {
    let mut c = Cluster::with_voters(4, 3, |c| c.noop_on_election = false);
    c.campaign(1);
    let add = [MemberChange::AddLearner(NodeId(4))];
    assert_eq!(
        c.node(1).propose_conf_change(&add),
        Err(ProposeError::ConfChangeNotReady)
    );
    c.commit_some(1, 1);
    assert!(c.node(1).propose_conf_change(&add).is_ok());
}

/// One change at a time: while a change's entry is uncommitted, and while the cluster is
/// in the joint configuration, a second request gets `ConfChangePending` (not a queue);
/// once the change is complete the next is accepted. A follower answers `NotLeader`.
#[test]
fn one_change_at_a_time() {
    let mut c = Cluster::with_learners(5);
    c.node(1)
        .propose_conf_change(&[MemberChange::Promote(NodeId(4))])
        .unwrap();
    assert_eq!(
        c.node(1)
            .propose_conf_change(&[MemberChange::Promote(NodeId(5))]),
        Err(ProposeError::ConfChangePending)
    );
    // The joint entry commits and C_new is appended: until C_new commits, still one
    // change under way.
    loop {
        let n = c.node(1);
        if !n.configuration().is_joint() && n.configuration_index() > n.commit_index() {
            break;
        }
        assert!(c.step_once(), "C_new was never appended");
    }
    assert_eq!(
        c.node(1)
            .propose_conf_change(&[MemberChange::Promote(NodeId(5))]),
        Err(ProposeError::ConfChangePending)
    );
    c.settle();
    assert_eq!(c.node(1).configuration(), &simple(&[1, 2, 3, 4], &[5]));
    assert!(matches!(
        c.node(2)
            .propose_conf_change(&[MemberChange::Promote(NodeId(5))]),
        Err(ProposeError::NotLeader { leader: NodeId(1) })
    ));
    c.change(1, &[MemberChange::Promote(NodeId(5))]);
    assert_eq!(c.node(1).configuration(), &simple(&[1, 2, 3, 4, 5], &[]));
}

/// A node is added as a learner: promoting a node that is not one, removing a
/// non-member, adding a member again or leaving no voter are refused with the reason.
#[test]
fn a_new_node_starts_as_a_learner() {
    let mut c = Cluster::with_voters(4, 3, |_| {});
    c.campaign(1);
    let refused = |c: &mut Cluster, change| c.node(1).propose_conf_change(&[change]);
    assert_eq!(
        refused(&mut c, MemberChange::Promote(NodeId(4))),
        Err(ProposeError::InvalidConfChange(
            ConfChangeError::NotLearner(NodeId(4))
        ))
    );
    assert_eq!(
        refused(&mut c, MemberChange::Remove(NodeId(9))),
        Err(ProposeError::InvalidConfChange(ConfChangeError::NotMember(
            NodeId(9)
        )))
    );
    assert_eq!(
        refused(&mut c, MemberChange::AddLearner(NodeId(2))),
        Err(ProposeError::InvalidConfChange(
            ConfChangeError::AlreadyMember(NodeId(2))
        ))
    );
    c.change(1, &[MemberChange::AddLearner(NodeId(4))]);
    assert_eq!(c.node(4).configuration(), &simple(&[1, 2, 3], &[4]));
    assert_eq!(c.node(4).commit_index(), c.node(1).commit_index());
}

/// §6: while C_old,new is in effect a decision needs a majority of both halves. The leader
/// and the two promoted nodes are a majority of the new voters {1..5} but not of the old
/// {1,2,3}: the joint entry does not commit until an old voter answers.
#[test]
fn a_joint_configuration_needs_a_majority_of_both_halves() {
    let mut c = Cluster::with_learners(5);
    c.isolate(2);
    c.cut.extend([(3, 1), (1, 3), (3, 2), (2, 3)]);
    for k in [4, 5] {
        c.cut.remove(&(2, k));
        c.cut.remove(&(k, 2));
    }
    let joint = c.change(
        1,
        &[
            MemberChange::Promote(NodeId(4)),
            MemberChange::Promote(NodeId(5)),
        ],
    );
    assert!(c.node(1).configuration().is_joint());
    assert!(c.node(4).last_index() >= joint && c.node(5).last_index() >= joint);
    assert!(
        c.node(1).commit_index() < joint,
        "joint entry committed by the new voters alone"
    );
    c.tick_all(3);
    assert!(
        c.node(1).commit_index() < joint,
        "joint entry committed by the new voters alone"
    );
    c.cut.remove(&(1, 3));
    c.cut.remove(&(3, 1));
    c.tick_all(3);
    assert!(
        c.node(1).commit_index() > joint,
        "the leader did not leave the joint configuration"
    );
    assert_eq!(c.node(1).configuration(), &simple(&[1, 2, 3, 4, 5], &[]));
}

/// Learners receive entries but never count for commitment and never campaign: with both
/// other voters cut off, the leader and two learners that hold the entry (three of five
/// members) commit nothing, and a learner, hearing from no leader, stays a follower at the
/// same term.
#[test]
fn learners_never_count_for_commitment_or_elections() {
    let mut c = Cluster::with_learners(5);
    c.isolate(2);
    c.isolate(3);
    c.heal_pair(1, 4);
    c.heal_pair(1, 5);
    let before = c.node(1).commit_index();
    c.node(1).propose(b"x".to_vec()).unwrap();
    c.settle();
    assert_eq!(c.node(4).last_index(), c.node(1).last_index());
    assert_eq!(c.node(5).last_index(), c.node(1).last_index());
    assert_eq!(c.node(1).commit_index(), before, "a learner's copy counted");
    c.isolate(4);
    let term = c.node(4).term();
    c.tick_all(100);
    assert_eq!(c.node(4).role(), RoleKind::Follower);
    assert_eq!(c.node(4).term(), term, "the learner campaigned");
    assert!(
        !c.sent
            .iter()
            .any(|m| m.from == NodeId(4)
                && matches!(m.body, Body::PreVote { .. } | Body::Vote { .. }))
    );
}

/// §6: a leader that is not in C_new manages the cluster until C_new commits, then steps
/// down (and hands leadership to an up-to-date voter); it never campaigns again.
#[test]
fn a_leader_not_in_the_new_configuration_steps_down_after_committing_it() {
    let mut c = Cluster::with_voters(3, 3, |_| {});
    c.campaign(1);
    c.commit_some(1, 2);
    let index = c
        .node(1)
        .propose_conf_change(&[MemberChange::Remove(NodeId(1))])
        .unwrap();
    c.settle();
    assert!(!c.node(1).is_leader());
    assert!(
        c.node(1).commit_index() > index,
        "stepped down before C_new committed"
    );
    assert_eq!(c.node(1).configuration(), &simple(&[2, 3], &[]));
    let leader = c.elect();
    assert!(leader == 2 || leader == 3);
    c.tick_all(50);
    assert!(!c.node(1).is_leader() && c.node(1).role() == RoleKind::Follower);
    c.node(leader).propose(b"after".to_vec()).unwrap();
    c.tick_all(3);
    let other = 5 - leader;
    assert_eq!(c.node(other).commit_index(), c.node(leader).commit_index());
}

/// A removed node learns of its removal: it receives the entry that removes it (the
/// leader replicates to the old members until C_new commits) and, through the heartbeats
/// it still gets for an election timeout, that the entry committed. Knowing, it never
/// campaigns again. Until it knows, it still may (thesis §4.2.2): see
/// `a_removed_node_still_campaigns_until_it_knows_its_removal_committed`.
#[test]
fn a_removed_node_that_learns_of_its_removal_stops_campaigning() {
    let mut c = Cluster::with_voters(3, 3, |_| {});
    c.campaign(1);
    let index = c.change(1, &[MemberChange::Remove(NodeId(3))]);
    c.tick_all(3);
    assert_eq!(c.node(3).configuration(), &simple(&[1, 2], &[]));
    assert!(
        c.node(3).commit_index() > index,
        "node 3 did not learn C_new committed"
    );
    let term = c.node(3).term();
    let sent = c.sent.len();
    c.isolate(1);
    c.tick_all(100);
    assert_eq!(c.node(3).term(), term);
    assert!(
        !c.sent[sent..]
            .iter()
            .any(|m| m.from == NodeId(3)
                && matches!(m.body, Body::PreVote { .. } | Body::Vote { .. }))
    );
}

/// §6's third problem: a removed node that never learned of its removal times out and
/// campaigns; pre-vote and check-quorum keep it from raising anyone's term or deposing the
/// leader (the others hear from their leader and ignore it).
#[test]
fn pre_vote_and_check_quorum_keep_an_unaware_removed_node_from_disrupting() {
    let mut c = Cluster::with_voters(3, 3, |_| {});
    c.campaign(1);
    c.commit_some(1, 1);
    c.isolate(3);
    c.change(1, &[MemberChange::Remove(NodeId(3))]);
    assert!(
        c.node(3).configuration().is_voter(NodeId(3)),
        "node 3 learned of its removal"
    );
    let term = c.node(1).term();
    c.tick_all(30);
    c.heal();
    c.tick_all(100);
    assert!(c.node(1).is_leader(), "the removed node deposed the leader");
    assert_eq!(c.node(1).term(), term);
    assert_eq!(c.node(2).term(), term);
}

/// ReadIndex across a change: in the joint configuration a read is confirmed only by a
/// majority of both halves (here the new half answers and the old does not: no read);
/// once an old voter answers it is served.
#[test]
fn read_index_stays_correct_across_a_change() {
    let mut c = Cluster::with_learners(5);
    c.isolate(2);
    c.isolate(3);
    for k in [4, 5] {
        c.heal_pair(1, k);
    }
    c.node(1)
        .propose_conf_change(&[
            MemberChange::Promote(NodeId(4)),
            MemberChange::Promote(NodeId(5)),
        ])
        .unwrap();
    c.settle();
    c.node(1).read_index(7).unwrap();
    c.tick_all(4);
    assert!(
        c.reads[0].is_empty(),
        "read confirmed without the old voters"
    );
    c.heal_pair(1, 2);
    c.tick_all(4);
    assert!(c.reads[0].iter().any(|r| r.context == 7));
    assert_eq!(c.node(1).configuration(), &simple(&[1, 2, 3, 4, 5], &[]));
    c.node(1).read_index(8).unwrap();
    c.tick_all(4);
    assert!(
        c.reads[0].iter().any(|r| r.context == 8),
        "a read in C_new with a majority of five"
    );
}

/// A leadership transfer to a learner (or a non-member) is refused: it cannot win.
#[test]
fn leadership_transfer_to_a_learner_is_refused() {
    let mut c = Cluster::with_learners(4);
    assert_eq!(
        c.node(1).transfer_leader(NodeId(4)),
        Err(StepError::BadTransferTarget(NodeId(4)))
    );
    assert_eq!(
        c.node(1).transfer_leader(NodeId(9)),
        Err(StepError::BadTransferTarget(NodeId(9)))
    );
    assert!(c.node(1).transfer_leader(NodeId(2)).is_ok());
}

/// The configuration is the latest in the log, committed or not: a node that appended a
/// change falls back to the configuration before it when a new leader truncates the entry.
#[test]
fn a_truncated_change_falls_back_to_the_previous_configuration() {
    let mut c = Cluster::with_voters(4, 3, |_| {});
    c.campaign(1);
    c.commit_some(1, 1);
    c.isolate(1);
    c.node(1)
        .propose_conf_change(&[MemberChange::AddLearner(NodeId(4))])
        .unwrap();
    c.settle();
    assert_eq!(c.node(1).configuration(), &simple(&[1, 2, 3], &[4]));
    c.heal();
    c.isolate(1);
    c.campaign(2);
    c.commit_some(2, 1);
    c.heal();
    c.tick_all(5);
    assert!(!c.node(1).is_leader());
    assert_eq!(c.node(1).configuration(), &simple(&[1, 2, 3], &[]));
    assert_eq!(c.node(1).last_index(), c.node(2).last_index());
}

/// The configuration is part of every snapshot and restored at restart: from a configuration
/// entry in the log, and once compaction took that entry, from the snapshot; a node that
/// joins behind a compacted log learns it from the snapshot it is sent.
#[test]
fn the_configuration_survives_restart_and_travels_in_snapshots() {
    let mut c = Cluster::with_learners(5);
    c.change(1, &[MemberChange::Promote(NodeId(4))]);
    let target = simple(&[1, 2, 3, 4], &[5]);
    c.restart(2, |_| {});
    assert_eq!(c.node(2).configuration(), &target, "restored from the log");
    c.tick_all(3);
    let applied = c.node(1).commit_index();
    for id in 1..=3 {
        assert!(c.compact(id, applied, vec![id as u8]));
    }
    c.restart(2, |_| {});
    assert_eq!(
        c.node(2).configuration(),
        &target,
        "restored from the snapshot"
    );
    // Node 5 lost its disk: it starts empty (a spare's first configuration) and learns the
    // configuration from the leader's snapshot.
    c.durable[4] = Durable::default();
    c.restart(5, |_| {});
    assert_eq!(c.node(5).configuration(), &simple(&[1, 2, 3], &[]));
    c.tick_all(20);
    assert_eq!(c.durable[4].snapshot.configuration, target);
    assert_eq!(c.node(5).configuration(), &target);
}

/// Thesis §4.2.2: a node that its latest configuration removes is still needed until
/// that configuration commits. Leader 1 of {1,2} removes itself; the joint entry commits,
/// C_new = {2} is appended but does not reach node 2, and node 1 restarts. Node 2 (in the
/// joint configuration) needs node 1's vote, which node 1 refuses (its log is ahead); so
/// node 1, though not in its latest configuration, campaigns, wins with node 2's vote,
/// commits C_new and steps down, and node 2 leads.
#[test]
fn a_removed_node_still_campaigns_until_it_knows_its_removal_committed() {
    let mut c = Cluster::with_voters(2, 2, |_| {});
    c.campaign(1);
    c.commit_some(1, 1);
    c.node(1)
        .propose_conf_change(&[MemberChange::Remove(NodeId(1))])
        .unwrap();
    loop {
        let n = c.node(1);
        if !n.configuration().is_joint() && n.configuration_index() > n.commit_index() {
            break;
        }
        assert!(c.step_once(), "C_new was never appended");
    }
    let leave = c.node(1).configuration_index();
    c.isolate(1);
    c.settle();
    c.restart(1, |_| {});
    c.heal();
    assert!(c.node(2).configuration().is_joint());
    assert_eq!(c.node(1).configuration(), &simple(&[2], &[]));
    for _ in 0..300 {
        c.tick_all(1);
        if c.node(2).is_leader() {
            break;
        }
    }
    assert!(
        c.node(2).is_leader(),
        "the cluster is stuck in the joint configuration"
    );
    assert!(c.node(2).commit_index() >= leave);
    assert_eq!(c.node(2).configuration(), &simple(&[2], &[]));
    c.tick_all(30);
    assert!(!c.node(1).is_leader());
}

/// A learner a joint configuration needs: voter 1 promotes learner 2 (C_old,new =
/// {1,2}/{1}), but the joint entry does not reach node 2 and node 1, hearing from no
/// majority of {1,2}, steps down. Node 2, still a learner in its own log, never campaigns;
/// once it has heard from no leader for an election timeout it stops honouring the old
/// leader's lease and grants node 1's pre-vote and vote, and the change completes.
#[test]
fn a_learner_that_hears_no_leader_answers_the_campaign_that_needs_it() {
    let mut c = Cluster::with_voters(2, 1, |_| {});
    c.elect();
    c.change(1, &[MemberChange::AddLearner(NodeId(2))]);
    c.tick_all(3);
    c.isolate(1);
    c.node(1)
        .propose_conf_change(&[MemberChange::Promote(NodeId(2))])
        .unwrap();
    c.tick_all(30);
    assert!(!c.node(1).is_leader(), "no check-quorum step-down");
    assert!(c.node(1).configuration().is_joint());
    assert!(c.node(2).configuration().is_learner(NodeId(2)));
    assert_eq!(
        c.node(2).leader(),
        NodeId::NONE,
        "the learner still honours the silent leader's lease"
    );
    c.heal();
    for _ in 0..300 {
        c.tick_all(1);
        if c.node(1).is_leader() && !c.node(1).configuration().is_joint() {
            break;
        }
    }
    assert!(
        c.node(1).is_leader(),
        "node 2 never answered node 1's campaign"
    );
    c.tick_all(5);
    assert_eq!(c.node(2).configuration(), &simple(&[1, 2], &[]));
}

/// Figure 2: RequestVote's answer carries the voter's term, so a candidate behind it
/// learns the term even when refused. Shown by a node at term 7 answering a stale vote
/// request of term 3 with a refusal at term 7, which makes the candidate a follower of
/// term 7. (Found by the membership churn swarm: with configurations that differ, the
/// nodes raising the term need not ask the one node whose log can win, and without the
/// answer it campaigned at stale terms forever.)
#[test]
fn a_stale_vote_request_is_answered_with_the_newer_term() {
    let mut c = Cluster::with(3, |c| c.pre_vote = false);
    let mut up = vote_request(3, 2, Term(7));
    up.body = Body::Vote {
        last_index: LogIndex(9),
        last_term: Term(7),
        transfer: false,
    };
    assert_eq!(vote_answer(c.node(2), up), Some(true));
    for _ in 0..40 {
        c.node(1).tick();
        if c.node(1).role() == RoleKind::Candidate {
            break;
        }
    }
    assert_eq!(c.node(1).role(), RoleKind::Candidate);
    let stale = c.node(1).term();
    assert!(stale < Term(7));
    assert_eq!(
        vote_answer(c.node(2), vote_request(1, 2, stale)),
        Some(false)
    );
    c.cut.extend([(1, 3), (3, 1)]);
    c.settle();
    assert_eq!(
        c.node(1).term(),
        Term(7),
        "the candidate did not learn the newer term"
    );
    assert_eq!(c.node(1).role(), RoleKind::Follower);
}
