#!/usr/bin/env python3
"""Proves the simulator's checkers are real: applies each deliberate bug (to the core, the
daemon's replica, the store or the WAL), rebuilds the simulator, sweeps the scenarios that must catch it, prints one
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
 Whole servers (tests/src/whole.rs: real replicas, clients, power cuts, bit rot):
  (k) a client answered before its entry is durable on a majority (at proposal)
  (l) a session table that is not part of the snapshot (not restored from it)
  (m) the WAL's persist not syncing its segment (only a power cut shows it)
  (n) a follower answering a read without a completed ReadIndex round
  (o) entries read back from storage for a follower sent with the wrong previous term
  (p) a repairing node (its damaged log was cut) that votes and campaigns
  (q) the real file backend skipping its msync (a test of the real backend counts syncs;
      only a power cut shows a skipped msync, so the count is what a test can see)
  (r) the copy of term and vote outside the segments never written
  (s) a repair that ends on a commit index clamped to the cut log (a stale heartbeat)
  (t) an entry read back for a follower without checking its CRC again
  (u) a scrubber that finds damage and says nothing (nothing marked, nothing mended)
  (v) damage the scrubber found that no snapshot mends (the damaged file stays in the log)
 Membership changes:
  (w) a leader that proposes a change before committing an entry of its term
  (x) a joint entry committed by a majority of the new configuration alone
  (y) a learner counted for commitment
 The WAL's write modes:
  (z) a `pwrite`-mode sync that makes the file durable without copying the batch into it
      (the staged bytes are dropped; kill -9 shows it)
 Snapshots:
  (aa) the snapshot ratio ignored (a growing store snapshotted every --snapshot-entries)
  (ab) a snapshot holding a key twice restored anyway (the later value wins, silently)
 Waiting for the disk off the loop:
  (ac) a batch handed to the sync thread taken for durable at the next turn, whether the
       wait is over or not (answers and votes leave before the disk has the batch)
  (ad) a split sync that never copies the batch into the file (`pwrite` mode; kill -9)
 The in-memory log's byte bound (--log-memory-mib):
  (ae) a running node that trims its in-memory log by entries only (the byte bound ignored)
  (af) a restart that hands the core every entry the entry bound allows, bytes ignored
 The WAL's staging buffer (`pwrite` mode):
  (ag) a read of bytes written and not yet in the file taken from the map (zeros there)
       instead of the staging buffer: entries not yet persisted, a batch a rollover moves,
       the bytes a commit record's CRCs cover
  (ah) a rollover that syncs the old segment from the open batch on, leaving out what came
       before it unsynced (the header of a segment created within the same batch)
 The transport's reads:
  (ak) a read that stops at the first short read although the remote side hung up: frames
       and the end of the stream come in one readiness event, and the end is never read
       (the connection leaks)
 Snapshots written as they are encoded:
  (al) a streamed snapshot file whose CRC leaves out the data handed to it (the file is
       refused when read back)
  (am) streamed data of another length than announced written anyway (the header's data
       length disagrees with the file)
 Reused segments:
  (an) a freed segment zero-filled before its rename to the spare's name is durable (a power
       cut brings the old segment's name back, holding zeros)
  (ao) a freed segment reused without its zero-fill (its old records stay behind the tail)
  (ar) a segment the scrubber found damaged kept for reuse instead of deleted
 Frames encoded straight into the outbox:
  (ap) a frame refused for a full outbox left half-written in it (no header, the peer reads
       garbage)
  (aq) a frame over the limit left in the outbox although refused
 Sessions in an eviction queue:
  (as) a stale entry of the eviction order (its session wrote again since) taken for the
       oldest session: a session still in use is evicted
 The scrubber's reads on a thread:
  (at) a step that read while a compaction removed its file kept: the missing or zeroed file
       is reported as damage and marked for repair
  (au) compactions not counted as file changes (the same, by the other half of the check)
 Entries kept as ranges of their receive buffer:
  (aw) the in-memory log's byte bound counting an entry's own bytes only, not the buffer it
       keeps allocated (one small write per read would hold a whole read buffer each)
 The leader's budget of uncommitted bytes, with entries as ranges of a read:
  (ax) the budget counting an entry's own bytes only, not the read buffer it keeps allocated
  (ay) a commit that takes nothing off the budget (the leader refuses every write after it)
 A snapshot that replaces the log:
  (av) no truncate-suffix record with its marker: after the segment holding the snapshot's
       index is compacted away, recovery keeps the stale entries after it

Usage: python3 tests/check-mutants.py [NAME...]   (from anywhere; a few minutes per bug)
       python3 tests/check-mutants.py --check     (only that every mutation still applies)
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
REPLICA = 'raftd/src/replica.rs'
KV = 'raftd/src/kv.rs'
LOG_MEMORY = 'raftd/src/log_memory.rs'
WAL = 'wal/src/wal.rs'
BACKEND = 'wal/src/backend.rs'
TRANSPORT = 'transport/src/event_loop.rs'

# name: (file, old string, new string, scenarios that must catch it)
mutants = {
 'a_commit_previous_term_by_counting': (NODE,
   "if candidate <= self.log.commit || self.log.term(candidate) != Some(self.term) {",
   "if candidate <= self.log.commit {",
   ['C6']),  # the swarm never caught it: 0 of 10,000 seeds before this change, 0 of 1,000 after
 'b_vote_without_up_to_date_check': (NODE,
   "can_vote && !self.repairing && self.log.is_up_to_date(last_index, last_term);",
   "can_vote && !self.repairing; let _ = (last_index, last_term);",
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
 'k_client_answered_before_commit': (REPLICA,
   "            Ok(index) => {\n                let term = self.raw.term();\n",
   "            Ok(index) => {\n                let term = self.raw.term();\n"
   "                self.g.reply(client, request_id, kind, Outcome::Written { index: index.0, term: term.0 });\n",
   ['whole']),
 'l_sessions_not_in_snapshot': (KV,
   "            kv.remember(client_id, seq, last_index, response.outcome);",
   "            let _ = (client_id, seq, last_index, response);",
   ['whole']),
 'm_persist_does_not_sync': (WAL,
   "        if let Err(source) = segment.map.sync(from, to - from) {",
   "        if let Err(source) = segment.map.sync(from, 0) {",
   ['whole']),
 'n_follower_read_without_read_index': (REPLICA,
   "            Op::Get { key } => {",
   "            Op::Get { key } if !self.raw.is_leader() => {\n"
   "                let value = self.g.kv.get(&key).map(<[u8]>::to_vec);\n"
   "                self.g.reply(client, id, kind, Outcome::Value(value));\n"
   "            }\n"
   "            Op::Get { key } => {",
   ['whole']),
 'o_fetched_entries_wrong_prev_term': (NODE,
   "        let prev_term = if prev_index == stored.index {",
   "        let prev_term = if prev_index == stored.index || prev_index.0 % 2 == 0 {",
   ['whole']),
 'p_repairing_node_votes': (NODE,
   "            repairing: restore.repairing,",
   "            repairing: false,",
   ['whole-damage']),
 'q_real_backend_skips_msync': (BACKEND,
   "            Mapping::Shared(map) => map.flush_range(offset, len)?,",
   "            Mapping::Shared(_) => return Ok(()),",
   ['test:wal:api:every_persist_syncs_the_segment_on_the_real_backend']),
 'r_vote_copy_not_written': (WAL,
   "        if !self.vote_copy.behind(&self.hard_state) {",
   "        if true {",
   ['test:wal:damage:a_cut_keeps_the_newest_vote_and_marks_the_node_repairing']),
 's_repair_ends_on_clamped_commit': (NODE,
   "            || self.log.commit < self.leader_commit_sent\n",
   "",
   ['test:raft:paper:a_repairing_node_ends_its_repair_only_with_what_it_acknowledged']),
 't_read_back_unchecked': (WAL,
   "            let entry = match format::read_record(record, 0) {",
   "            let entry = match Ok::<_, format::RecordProblem>((format::Record::Entry { index: LogIndex(index), term: Term(0), kind: raft::EntryKind::Normal, data: &[] }, 0)) {",
   ['test:wal:api:a_read_back_entry_that_rotted_on_disk_is_refused']),
 'u_scrubber_silent': (WAL,
   "                step.damage = Some(damage.clone());\n                self.scrub_totals.damage_found += 1;\n                self.damage_found(damage)?;\n",
   "                let _ = damage;\n",
   ['whole', 'test:wal:scrub:a_flip_in_a_sealed_segment_is_found_and_mended_by_a_snapshot']),
 'v_damage_not_mended': (REPLICA,
   "                    self.g.mend = true;",
   "                    self.g.mend = false;",
   ['whole', 'test:raftd-tests:damage:the_scrubber_finds_and_mends_bit_rot_on_a_running_node']),
 'w_change_before_own_term_commit': (NODE,
   "        if self.log.term(self.log.commit) != Some(self.term) {\n            return Err(ProposeError::ConfChangeNotReady);",
   "        if false {\n            return Err(ProposeError::ConfChangeNotReady);",
   # With joint consensus for every voter change and one change at a time, the rule is a
   # second line of defence: the simulator's scenarios cannot tell, the paper test can.
   ['test:raft:paper:a_change_waits_for_an_entry_of_the_leaders_term']),
 'x_joint_committed_by_new_half_alone': (NODE,
   "        let Some(candidate) = self\n            .confs\n            .current()\n            .quorum_value(",
   "        let Some(candidate) = self\n            .confs\n            .current()\n            .leave_joint()\n            .quorum_value(",
   ['grow-shrink', 'churn', 'test:raft:paper:a_joint_configuration_needs_a_majority_of_both_halves']),
 'y_learner_counted_for_commitment': (NODE,
   "        let Some(candidate) = self\n            .confs\n            .current()\n            .quorum_value(",
   "        let mut counted = self.confs.current().clone();\n"
   "        counted.voters.extend(counted.learners.clone());\n"
   "        let Some(candidate) = counted\n            .quorum_value(",
   ['learner-promote', 'churn', 'test:raft:paper:learners_never_count_for_commitment_or_elections']),
 'z_pwrite_not_copied': (BACKEND,
   "                self.write_staged(offset, len)?;\n                self.file.sync_data()?;",
   "                if let Mapping::ReadOnly { staging, .. } = &mut self.map {\n                    staging.clear();\n                }\n                self.file.sync_data()?;",
   ['test:wal:kill:sigkill_keeps_everything_persisted']),
 'aa_snapshot_ratio_ignored': (REPLICA,
   "            && self.g.log_bytes_since_snapshot >= ratio.saturating_mul(self.g.snapshot_bytes);",
   "            && (ratio == ratio);",
   ['test:raftd-tests:cluster:snapshot_ratio_spaces_out_snapshots_of_a_growing_store']),
 'ab_snapshot_key_twice': (KV,
   "            if !kv.data.insert_new(record) {",
   "            if !kv.data.insert_new(record) && ordered {",
   ['test:raftd:lib:restore_refuses_keys_out_of_order_or_twice']),
 'ac_sync_later_durable_at_once': (REPLICA,
   "        let Some((result, took)) = self.g.env.sync_done(false) else {\n            return Ok(());\n        };",
   "        let (result, took) = self.g.env.sync_done(false).unwrap_or((Ok(()), Duration::ZERO));",
   ['whole']),
 'ad_split_sync_not_copied': (BACKEND,
   "        self.write_staged(offset, len)?;\n        let file = Arc::clone(&self.file);",
   "        if let Mapping::ReadOnly { staging, .. } = &mut self.map {\n            staging.clear();\n        }\n        let file = Arc::clone(&self.file);",
   ['test:wal:kill:sigkill_keeps_everything_persisted']),
 'ae_log_trimmed_by_entries_only': (LOG_MEMORY,
   "        let by_bytes = (held > self.bytes_max).then(|| {",
   "        let by_bytes = (held > u64::MAX).then(|| {",
   ['test:raftd:lib:trims_by_bytes_when_the_entries_are_large',
    'test:raftd-tests:cluster:the_in_memory_log_is_bounded_in_bytes']),
 'aw_held_bytes_count_ranges_only': (LOG_MEMORY,
   "            data.buffer_len() as u64\n",
   "            data.len() as u64\n",
   ['test:raftd:lib:an_entry_counts_the_buffer_it_keeps']),
 'ax_uncommitted_budget_counts_ranges_only': (NODE,
   "        _ => data.buffer_len() as u64,\n",
   "        _ => data.len() as u64,\n",
   ['test:raft:paper:uncommitted_bytes_count_the_buffers_entries_keep']),
 'ay_commit_frees_no_uncommitted_bytes': (NODE,
   "            self.uncommitted_bytes -= bytes;\n",
   "            self.uncommitted_bytes -= bytes.min(0);\n",
   ['test:raft:paper:uncommitted_bytes_count_the_buffers_entries_keep']),
 'af_restart_ignores_log_bytes': (REPLICA,
   "!(committed && held_bytes > config.log_memory_bytes)",
   "!(committed && held_bytes > u64::MAX)",
   ['test:raftd-tests:cluster:the_in_memory_log_is_bounded_in_bytes']),
 'ag_read_misses_staged_bytes': (BACKEND,
   "            Mapping::ReadOnly { map, staging } => staging.read_at(offset).unwrap_or(&map[offset..]),",
   "            Mapping::ReadOnly { map, staging } => { let _ = staging; &map[offset..] }",
   ['test:wal:api:overwrite_across_segments']),
 'ah_rollover_sync_leaves_the_header_out': (WAL,
   "            let from = self.synced_end;",
   "            let from = self.batch_start;",
   ['test:wal:recovery:a_power_cut_after_a_batch_that_rolled_over_twice_loses_nothing',
    'test:wal:api:a_batch_that_rolls_over_twice_before_its_persist_reopens']),
 'ak_short_read_misses_the_hang_up': (TRANSPORT,
   "            let drained_if_short = conn.tls.is_none() && !closed;",
   "            let drained_if_short = conn.tls.is_none();",
   ['test:transport:loopback:client_that_sends_and_hangs_up_at_once_is_reported_closed']),
 'al_streamed_snapshot_crc_skips_data': (WAL,
   "                crc.update(piece);\n",
   "",
   ['test:wal:api:streamed_snapshot_files_match_whole_ones']),
 'am_streamed_snapshot_length_unchecked': (WAL,
   "            if handed != data_bytes {",
   "            if handed != data_bytes && false {",
   ['test:wal:api:streamed_snapshot_of_the_wrong_length_leaves_no_file']),
 'an_reuse_zero_fills_before_the_rename_is_durable': (WAL,
   "    let reused = backend\n        .sync_dir(dir)\n        .and_then(|()| backend.refill_segment(spare, bytes as u64, pace));",
   "    let _ = dir;\n    let reused = backend.refill_segment(spare, bytes as u64, pace);",
   ['test:wal:lib:a_reused_segment_never_keeps_its_old_name_with_new_contents']),
 'ap_refused_encoded_frame_left_in_the_outbox': (TRANSPORT,
   "        if conn.outbox_pending() > self.config.outbox_bytes_max {\n            conn.outbox.truncate(start);",
   "        if conn.outbox_pending() > self.config.outbox_bytes_max {\n            let _ = start;",
   ['test:transport:loopback:exchange_a_million_mixed_frames_in_order']),
 'aq_too_large_encoded_frame_left_in_the_outbox': (TRANSPORT,
   "        if len > max {\n            conn.outbox.truncate(start);",
   "        if len > max {\n            let _ = start;",
   ['test:transport:loopback:an_encoded_frame_over_the_limit_is_refused_and_leaves_nothing']),
 'as_stale_eviction_entry_taken_as_live': (KV,
   "            if Self::is_live(sessions, entry) {",
   "            if sessions.contains_key(&entry.1) {",
   ['test:raftd:lib:sessions_evict_like_a_model']),
 'at_scrub_step_across_compaction_kept': (WAL,
   "        if files_changed != self.files_changed {",
   "        if files_changed != self.files_changed && false {",
   ['test:wal:scrub:a_step_that_read_across_a_compaction_is_dropped']),
 'au_compaction_not_counted_as_a_file_change': (WAL,
   "        self.files_changed += 1;\n",
   "",
   ['test:wal:scrub:a_step_that_read_across_a_compaction_is_dropped']),
 'ar_damaged_segment_kept_for_reuse': (WAL,
   "                && segment.map.file_bytes() == self.segment_bytes\n                && !self.damaged.contains(&segment.path);",
   "                && segment.map.file_bytes() == self.segment_bytes;",
   ['test:raftd-tests:damage:the_scrubber_finds_and_mends_bit_rot_on_a_running_node']),
 'av_replacing_snapshot_without_truncation_record': (WAL,
   "            self.log.last_index() > meta.index && self.log.term(meta.index) != Some(meta.term);",
   "            self.log.last_index() > meta.index && self.log.term(meta.index) != Some(meta.term) && false;",
   ['test:wal:snapshot:a_log_replaced_by_a_snapshot_stays_replaced_across_a_compacted_segment']),
 'ao_reuse_without_zero_fill': (BACKEND,
   "        zero_fill_buffered(&file, bytes, &pace, self.write)?;\n        file.sync_data()?;",
   "        let _ = &pace;\n        file.sync_data()?;",
   ['test:wal:reuse:reused_segments_on_disk_reopen_in_both_write_modes']),
}


def sweep(scenario):
    """(passed, failed, first failure line) of a sweep of `scenario`, or of one test
    (`test:PACKAGE:TEST_FILE:NAME`, TEST_FILE `lib` for unit tests; run once: 1 failed when it fails)."""
    if scenario.startswith('test:'):
        _, package, test_file, name = scenario.split(':')
        which = ['--lib'] if test_file == 'lib' else ['--test', test_file]
        run = subprocess.run(['cargo', 'test', '-q', '-p', package, *which, name],
                             cwd=ROOT, capture_output=True, text=True)
        panicked = [l for l in run.stdout.splitlines() + run.stderr.splitlines() if 'panicked' in l]
        return (0, 1, (panicked or ['test failed'])[0]) if run.returncode else (1, 0, '')
    out = subprocess.run([os.path.join(TARGET, 'release', 'sim'), 'sweep', scenario, '--seeds', SEEDS],
                         cwd=ROOT, capture_output=True, text=True).stdout.splitlines()
    passed, failed = out[1].split()[1:3]
    first = out[2].strip() if len(out) > 2 and out[2].startswith('  ') else ''
    return int(passed), int(failed), first


def check_patterns():
    """Exits 1 if a mutation's old string no longer occurs exactly once in its file (the
    source moved on and the mutation would not apply): run by CI, in a second."""
    stale = []
    for name, (path, old, _new, _scenarios) in mutants.items():
        count = open(os.path.join(ROOT, path)).read().count(old)
        if count != 1:
            stale.append(f'{name}: its old string occurs {count} times in {path}')
    if stale:
        sys.exit('stale mutations; update tests/check-mutants.py:\n  ' + '\n  '.join(stale))
    print(f'all {len(mutants)} mutations apply')


def main():
    if sys.argv[1:] == ['--check']:
        return check_patterns()
    selected = sys.argv[1:] or list(mutants)
    unknown = [n for n in selected if n not in mutants]
    if unknown:
        sys.exit(f'no mutation named {", ".join(unknown)}; known: {", ".join(mutants)}')
    originals = {}
    missed = []
    print(f'{"mutation":<38} {"scenario":<12} {"passed":>6} {"failed":>6}  verdict     first failure')
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
                print(f'{name:<38} {scenario[:12]:<12} {passed:>6} {failed:>6}  {verdict:<10}  {first[:160]}',
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
