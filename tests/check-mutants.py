#!/usr/bin/env python3
"""Proves the simulator's checkers are real: applies each deliberate bug to the core
(raft/src), rebuilds the simulator, sweeps the scenarios that must catch it, prints one
row per (bug, scenario) with the pass/fail counts and the first failure, and restores the
source however it ends. Exits 1 if a scenario listed for a bug does not catch it.

  (a) committing a previous-term entry by counting replicas
  (b) granting a vote without the log up-to-date check
  (c) replying to a vote or append before persisting
  (d) not resetting the election timer on a valid AppendEntries
  (e) a restarted node forgetting its vote (RawNode::new drops the restored vote)
  (f) the vote never reaching the disk (left out of the hard state)
  (g) installing a snapshot whose last entry conflicts with the log, keeping the suffix
  (h) a leader answering ReadIndex without a quorum round
  (i) pre-vote granted although a leader was heard within the election timeout
  (j) a leader staying leader when an answer carries a higher term

Usage: python3 tests/check-mutants.py [NAME...]   (from anywhere; a few minutes per bug)
  CARGO_TARGET_DIR   where cargo builds (default: target/ in the workspace)
  MUTANT_SEEDS       seeds per sweep (default 1000)
"""
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.environ.get('CARGO_TARGET_DIR') or os.path.join(ROOT, 'target')
SEEDS = os.environ.get('MUTANT_SEEDS', '1000')
NODE = 'raft/src/node.rs'
LOG = 'raft/src/log.rs'

# name: (file, old string, new string, scenarios that must catch it)
mutants = {
 'a_commit_previous_term_by_counting': (NODE,
   "if candidate <= self.log.commit || self.log.term(candidate) != Some(self.term) {",
   "if candidate <= self.log.commit {",
   ['C6']),  # the swarm never caught it: 0 of 10,000 seeds before this change, 0 of 1,000 after
 'b_vote_without_up_to_date_check': (NODE,
   "let granted = can_vote && self.log.is_up_to_date(last_index, last_term);",
   "let granted = can_vote; let _ = (last_index, last_term);",
   ['swarm']),
 'c_reply_before_persisting': (NODE,
   "        if now {\n            self.messages.push(m);",
   "        if now || true {\n            self.messages.push(m);",
   ['C4', 'C7', 'swarm']),
 'd_no_timer_reset_on_append': (NODE,
   "                    self.become_follower(self.term, m.from);\n                }\n                self.election_elapsed = 0;",
   "                    self.become_follower(self.term, m.from);\n                }",
   ['stable', 'prevote']),
 'e_vote_forgotten_on_restart': (NODE,
   "            vote: hs.vote,",
   "            vote: NodeId::NONE,",
   ['revote', 'swarm']),
 'f_vote_not_persisted': (NODE,
   "            term: self.term,\n            vote: self.vote,\n            commit: self.log.commit,",
   "            term: self.term,\n            vote: NodeId::NONE,\n            commit: self.log.commit,",
   ['revote', 'swarm']),
 'g_snapshot_keeps_conflicting_suffix': (LOG,
   "let discard = self.term(meta.index) != Some(meta.term);",
   "let discard = self.term(meta.index).is_none();",
   ['swarm']),
 'h_read_index_without_quorum_round': (NODE,
   "        if single {\n            self.answer_read(context, from, commit);",
   "        if single || true {\n            self.answer_read(context, from, commit);",
   ['reads', 'swarm']),
 'i_prevote_ignores_leader_lease': (NODE,
   "Body::PreVote { .. } => return !self.in_lease(),",
   "Body::PreVote { .. } => return true,",
   ['lease']),
 'j_leader_ignores_higher_term_answer': (NODE,
   "                _ => self.become_follower(m.term, NodeId::NONE),\n            }\n            return true;",
   "                _ if self.is_leader() && m.body.is_response() => return false,\n"
   "                _ => self.become_follower(m.term, NodeId::NONE),\n            }\n            return true;",
   ['rejoin', 'swarm']),
}


def sweep(scenario):
    """(passed, failed, first failure line) of a sweep of `scenario`."""
    out = subprocess.run([os.path.join(TARGET, 'release', 'sim'), 'sweep', scenario, '--seeds', SEEDS],
                         cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    passed, failed = out[1].split()[1:3]
    first = out[2].strip() if len(out) > 2 and out[2].startswith('  ') else ''
    return int(passed), int(failed), first


def main():
    selected = sys.argv[1:] or list(mutants)
    unknown = [n for n in selected if n not in mutants]
    if unknown:
        sys.exit(f'no mutation named {", ".join(unknown)}; known: {", ".join(mutants)}')
    originals = {}
    missed = []
    print(f'{"mutation":<38} {"scenario":<8} {"passed":>6} {"failed":>6}  verdict     first failure')
    try:
        for name in selected:
            path, old, new, scenarios = mutants[name]
            full = os.path.join(ROOT, path)
            original = originals.setdefault(full, open(full).read())
            assert original.count(old) == 1, f'{name}: the old string must occur once in {path}'
            open(full, 'w').write(original.replace(old, new))
            subprocess.run(['cargo', 'build', '--release', '-q', '-p', 'raftd-tests', '--bin', 'sim'],
                           cwd=ROOT, check=True)
            for scenario in scenarios:
                passed, failed, first = sweep(scenario)
                verdict = 'caught' if failed > 0 else 'NOT CAUGHT'
                if failed == 0:
                    missed.append((name, scenario))
                print(f'{name:<38} {scenario:<8} {passed:>6} {failed:>6}  {verdict:<10}  {first[:160]}',
                      flush=True)
            open(full, 'w').write(original)
    finally:
        for full, original in originals.items():
            open(full, 'w').write(original)
    if missed:
        print('not caught: ' + ', '.join(f'{n} by {s}' for n, s in missed))
        sys.exit(1)


if __name__ == '__main__':
    main()
