#!/usr/bin/env python3
"""Proves the simulator's checkers are real: applies each deliberate bug to the core
(raft/src/node.rs), rebuilds, sweeps the scenarios that should catch it, prints the
pass/fail counts with the first failure, and restores the file however it ends.

  (a) committing a previous-term entry by counting replicas
  (b) granting a vote without the log up-to-date check
  (c) replying to a vote or append before persisting
  (d) not resetting the election timer on a valid AppendEntries

Usage: python3 tests/check-mutants.py   (from anywhere; a few minutes)
"""
import subprocess, sys, shutil
import os
ROOT=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NODE=ROOT+'/raft/src/node.rs'
mutants = {
 'a_commit_previous_term_by_counting': ("if candidate <= self.log.commit || self.log.term(candidate) != Some(self.term) {", "if candidate <= self.log.commit {", ['C6','swarm']),
 'b_vote_without_up_to_date_check': ("let granted = can_vote && self.log.is_up_to_date(last_index, last_term);", "let granted = can_vote; let _ = (last_index, last_term);", ['swarm']),
 'c_reply_before_persisting': ("        if now {\n            self.messages.push(m);", "        if now || true {\n            self.messages.push(m);", ['C4','C7','swarm']),
 'd_no_timer_reset_on_append': ("                    self.become_follower(self.term, m.from);\n                }\n                self.election_elapsed = 0;", "                    self.become_follower(self.term, m.from);\n                }", ['stable','prevote']),
}
orig=open(NODE).read()
try:
  for name,(old,new,scen) in mutants.items():
    assert old in orig, name
    open(NODE,'w').write(orig.replace(old,new))
    subprocess.run(['cargo','build','--release','-q','-p','raftd-tests'],cwd=ROOT,check=True)
    for s in scen:
      out=subprocess.run([ROOT+'/target/release/sim','sweep',s,'--seeds','1000'],cwd=ROOT,capture_output=True,text=True).stdout.splitlines()
      print(name, '|', out[1].split()[:3], '|', (out[2].strip() if len(out)>2 else ''))
finally:
  open(NODE,'w').write(orig)
