//! The membership nemesis (`Nemesis::Membership`): add, promote and remove members among a
//! pool of ids while the other nemeses crash, pause and cut nodes, as an operator would with
//! `raftctl member` (one change at a time, asked of the leader). A node's data is wiped only
//! when the leader of the highest term, with its configuration committed and not joint,
//! says the node is no member: wiping a voter's disk would lose votes and entries, a fault
//! Raft does not tolerate and no test of raftd should inject.

use super::{Configuration, Faulter};
use raftd::client::ClientError;
use raftd::protocol::{MemberOp, Op, Outcome};
use rand::Rng;
use std::fmt;
use std::time::{Duration, Instant};

/// Voters the nemesis always leaves.
const MIN_VOTERS: usize = 3;

/// How long a change may take to commit before its outcome is unknown.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(5);

/// One change the nemesis asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Change {
    Add(u64),
    Promote(u64),
    Remove(u64),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Add(id) => write!(f, "add learner {id}"),
            Change::Promote(id) => write!(f, "promote {id}"),
            Change::Remove(id) => write!(f, "remove {id}"),
        }
    }
}

/// What the nemesis may do, weighted by repetition in `Faulter::membership`.
#[derive(Clone, Copy)]
enum Kind {
    Add,
    Promote,
    RemoveVoter,
    RemoveLearner,
}

impl Faulter {
    /// The leader of the highest term any member reports, and its configuration, when that
    /// configuration is settled: committed, not joint, and no live node holds a newer one.
    /// Otherwise why not.
    pub(super) fn settled_leader(&mut self) -> Result<(u64, Configuration), String> {
        let statuses: Vec<(u64, serde_json::Value)> = self
            .live()
            .into_iter()
            .filter_map(|id| self.cluster.status(id).map(|s| (id, s)))
            .collect();
        let term = |s: &serde_json::Value| s["term"].as_u64().unwrap_or(0);
        let (leader, status) = statuses
            .iter()
            .filter(|(_, s)| s["role"] == "leader")
            .max_by_key(|(_, s)| term(s))
            .ok_or("no leader")?;
        let conf = Configuration::of(status).ok_or("no configuration in the leader's status")?;
        if let Some((id, s)) = statuses
            .iter()
            .find(|(id, s)| conf.has(*id) && term(s) > term(status))
        {
            return Err(format!(
                "member {id} is at term {}, past leader {leader}'s {}",
                term(s),
                term(status)
            ));
        }
        if !conf.outgoing.is_empty() {
            return Err("a joint configuration is in force".into());
        }
        let commit = status["commit"].as_u64().unwrap_or(0);
        if commit < conf.index {
            return Err(format!(
                "the configuration at index {} is not committed (commit {commit})",
                conf.index
            ));
        }
        if let Some((id, newer)) = statuses
            .iter()
            .filter_map(|(id, s)| Configuration::of(s).map(|c| (id, c)))
            .find(|(_, c)| c.index > conf.index && !c.same_members(&conf))
        {
            return Err(format!(
                "node {id} holds a newer configuration (index {} > {})",
                newer.index, conf.index
            ));
        }
        self.conf = conf.clone();
        Ok((*leader, conf))
    }

    /// One membership change: adds an outsider as a learner, promotes a learner, or
    /// removes a voter (the leader now and then; never below three voters) or a learner.
    pub(super) fn membership(&mut self) -> String {
        let (leader, conf) = match self.settled_leader() {
            Ok(found) => found,
            Err(why) => {
                self.changes.skipped += 1;
                return format!("membership skipped ({why})");
            }
        };
        let outsiders: Vec<u64> = self
            .cluster
            .ids()
            .into_iter()
            .filter(|&id| !conf.has(id))
            .collect();
        let voters: Vec<u64> = conf.voters.iter().copied().collect();
        let learners: Vec<u64> = conf.learners.iter().copied().collect();
        let mut kinds = Vec::new();
        if !outsiders.is_empty() {
            kinds.extend([Kind::Add; 3]);
        }
        if !learners.is_empty() {
            kinds.extend([Kind::Promote, Kind::Promote, Kind::Promote]);
            kinds.push(Kind::RemoveLearner);
        }
        if voters.len() > MIN_VOTERS {
            kinds.extend([Kind::RemoveVoter; 3]);
        }
        if kinds.is_empty() {
            self.changes.skipped += 1;
            return "membership skipped (nothing to change)".into();
        }
        let kind = kinds[self.rng.gen_range(0..kinds.len())];
        let rng = &mut self.rng;
        let mut pick = |ids: &[u64]| ids[rng.gen_range(0..ids.len())];
        let change = match kind {
            Kind::Add => Change::Add(pick(&outsiders)),
            Kind::Promote => Change::Promote(pick(&learners)),
            Kind::RemoveLearner => Change::Remove(pick(&learners)),
            Kind::RemoveVoter => match pick(&[0, 1, 2]) {
                0 => Change::Remove(leader),
                _ => Change::Remove(pick(&voters)),
            },
        };
        let what = self.change(leader, change);
        self.refresh_configuration();
        what
    }

    /// Asks `leader` for `change` and counts the outcome. A node to add is stopped and
    /// wiped first and started with `--join` before or after the request (both happen to
    /// operators); a removed node is stopped and wiped at once half the time, and otherwise
    /// left running, unaware, until its id joins again or the run ends.
    fn change(&mut self, leader: u64, change: Change) -> String {
        let (op, id, address) = match change {
            Change::Add(id) => (MemberOp::AddLearner, id, self.cluster.addr(id).to_string()),
            Change::Promote(id) => (MemberOp::Promote, id, String::new()),
            Change::Remove(id) => (MemberOp::Remove, id, String::new()),
        };
        let mut notes = Vec::new();
        let start_after = matches!(change, Change::Add(_)) && self.rng.gen_bool(0.5);
        if let Change::Add(id) = change {
            if let Some(note) = self.retire(id) {
                notes.push(note);
            }
            if !start_after {
                self.cluster.spawn(id);
            }
        }
        let mut client = self.cluster.client_over(&[leader], CHANGE_TIMEOUT);
        let started = Instant::now();
        let answer = client.call_node(
            self.cluster.addr(leader),
            Op::ChangeMembers {
                change: op,
                id,
                address,
            },
        );
        let took = started.elapsed();
        if start_after {
            self.cluster.spawn(id);
            notes.push(format!("node {id} started after the request"));
        }
        let (verdict, detail) = match answer {
            Ok(Outcome::Done { detail }) => {
                self.changes.done += 1;
                match change {
                    Change::Add(_) => self.changes.added += 1,
                    Change::Promote(_) => self.changes.promoted += 1,
                    Change::Remove(_) => self.changes.removed += 1,
                }
                ("done", detail)
            }
            Ok(Outcome::Refused { reason }) => {
                self.changes.refused += 1;
                ("refused", reason)
            }
            Ok(Outcome::NotLeader { leader, .. }) => {
                self.changes.refused += 1;
                (
                    "refused",
                    format!("not the leader any more (leader {leader})"),
                )
            }
            Ok(Outcome::Unavailable { reason }) => {
                self.changes.unknown += 1;
                ("unknown", reason)
            }
            Ok(other) => {
                self.changes.unknown += 1;
                ("unknown", format!("unexpected answer {other:?}"))
            }
            Err(ClientError::Unknown(e)) => {
                self.changes.unknown += 1;
                ("unknown", e)
            }
            Err(ClientError::Definite(e) | ClientError::Unreachable(e)) => {
                self.changes.refused += 1;
                ("not sent", e)
            }
        };
        if let (Change::Remove(id), "done") = (change, verdict) {
            match self.rng.gen_bool(0.5) {
                true => notes.extend(self.retire(id)),
                false => notes.push(format!("node {id} left running")),
            }
        }
        let notes = match notes.is_empty() {
            true => String::new(),
            false => format!("; {}", notes.join("; ")),
        };
        format!(
            "membership: {change} via leader {leader}: {verdict} in {:.2} s ({detail}){notes}",
            took.as_secs_f64()
        )
    }

    /// Stops node `id` for good (kill -9, not restarted by healing) and wipes its data so
    /// it may join again with `--join`. Says so when there was something to stop or wipe.
    pub(super) fn retire(&mut self, id: u64) -> Option<String> {
        let was_running = self.cluster.pid(id).is_some();
        // SIGKILL ends a stopped process too.
        self.paused.remove(&id);
        self.stopped.remove(&id);
        self.cluster.kill9(id);
        let had_data = std::fs::read_dir(self.cluster.data_dir(id))
            .is_ok_and(|mut entries| entries.next().is_some());
        self.cluster.reset_as_joiner(id);
        if self.rotted_vote_copy.as_ref().is_some_and(|r| r.0 == id) {
            self.rotted_vote_copy = None;
        }
        if self.rotted_live.as_ref().is_some_and(|r| r.0 == id) {
            self.rotted_live = None;
        }
        if !was_running && !had_data {
            return None;
        }
        self.changes.wiped += 1;
        Some(format!("node {id} stopped and wiped"))
    }

    /// After healing: waits (bounded) for a settled configuration, stops and wipes every
    /// running node that is no member, and returns the members (voters and learners).
    pub(super) fn settle_membership(&mut self, log: &mut dyn FnMut(&str)) -> Vec<u64> {
        let deadline = Instant::now() + Duration::from_secs(60);
        let conf = loop {
            match self.settled_leader() {
                Ok((_, conf)) => break conf,
                Err(why) => assert!(
                    Instant::now() < deadline,
                    "the membership did not settle within 60 s of healing: {why}"
                ),
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        for id in self.running() {
            if !conf.has(id) {
                if let Some(note) = self.retire(id) {
                    log(&format!("not a member at the end: {note}"));
                }
            }
        }
        log(&format!(
            "members at the end: voters {:?}, learners {:?}",
            conf.voters, conf.learners
        ));
        conf.members().into_iter().collect()
    }
}
