//! Recovery: the decision table row by row, torn tails at every offset, every single-bit flip,
//! and lost unsynced writes after crashes (all on the in-memory fault backend).

mod common;

use common::*;
use proptest::prelude::*;
use raft::{HardState, LogIndex, NodeId, Term};
use wal::format::SEGMENT_HEADER_BYTES;
use wal::testing::{Faults, MemBackend};
use wal::{Wal, WalError};

const SEGMENT_BYTES: u64 = 16 * 1024;

/// Writes `batches` (each persisted) and returns the model and the segment image after each.
fn write_batches(
    backend: &MemBackend,
    rand: &mut impl FnMut() -> u64,
    batches: usize,
) -> (Vec<Model>, Vec<Vec<u8>>) {
    let (mut wal, _) = open(backend, SEGMENT_BYTES).unwrap();
    let mut model = Model::default();
    let mut models = vec![model.clone()];
    let mut images = vec![backend.contents(&the_segment(backend)).unwrap()];
    for _ in 0..batches {
        let (entries, hard_state) = random_batch(&model, rand, 64);
        if let Some(state) = hard_state {
            wal.set_hard_state(state).unwrap();
            model.hard_state = state;
        }
        wal.append(&entries).unwrap();
        model.append(&entries);
        wal.persist().unwrap();
        models.push(model.clone());
        images.push(backend.contents(&the_segment(backend)).unwrap());
    }
    (models, images)
}

fn the_segment(backend: &MemBackend) -> std::path::PathBuf {
    let paths = segment_paths(backend);
    assert_eq!(paths.len(), 1, "these tests keep one segment");
    paths[0].clone()
}

/// The end of the written part of a segment image (records end on 8-byte boundaries).
fn written_end(image: &[u8]) -> usize {
    image
        .iter()
        .rposition(|&b| b != 0)
        .map_or(SEGMENT_HEADER_BYTES, |i| (i + 8) & !7)
}

/// Opens a copy of `backend` whose only segment holds `image`.
fn open_image(
    backend: &MemBackend,
    image: Vec<u8>,
    repair: bool,
) -> Result<(Wal, wal::Recovered), WalError> {
    let crashed = backend.crash();
    crashed.set_contents(&the_segment(backend), image);
    // The image stands for a log as a crash left it, before the copy of term and vote that
    // follows each sync was written (that copy has its own tests, in `damage.rs`).
    for name in ["vote-a", "vote-b"] {
        let _ = wal::Backend::remove(&crashed, &dir().join(name));
    }
    let mut options = options(&crashed, SEGMENT_BYTES);
    options.repair = repair;
    Wal::open(dir(), options)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    // Proves decision-table row 2 at every torn length of the last batch: the image is the
    // final one cut after `cut` bytes (zeros after, as in a preallocated file), and recovery
    // must give exactly the state after the previous batch (with a torn-tail report), or the
    // final state when nothing was cut.
    #[test]
    fn every_truncation_of_the_last_batch_recovers_the_last_complete_batch(seed in any::<u64>(), batches in 1usize..5) {
        let backend = MemBackend::with_dir(&dir());
        let (models, images) = write_batches(&backend, &mut xorshift(seed), batches);
        let (previous_end, end) = (written_end(&images[batches - 1]), written_end(&images[batches]));
        for cut in previous_end..=end {
            let mut image = images[batches].clone();
            // Cutting only the final record's zero padding changes nothing.
            let intact = image[cut..end].iter().all(|&b| b == 0);
            image[cut..].fill(0);
            let (wal, recovered) = open_image(&backend, image, false).unwrap();
            let expected = if intact { &models[batches] } else { &models[batches - 1] };
            expected.check(&wal, &format!("seed {seed} cut {cut} of {previous_end}..{end}"));
            prop_assert_eq!(recovered.torn_tail.is_some(), !intact && cut != previous_end, "seed {} cut {}", seed, cut);
        }
    }
}

// Proves decision-table row 3: every single-bit flip in the header or in any record before
// the last commit record (including the last batch's records and padding) is refused with an
// error naming the segment, never accepted; and that `repair` then opens a prefix of the log.
#[test]
fn every_bit_flip_before_the_last_commit_is_refused() {
    let backend = MemBackend::with_dir(&dir());
    let (models, images) = write_batches(&backend, &mut xorshift(7), 3);
    let image = &images[3];
    let last_commit = last_commit_offset(image);
    for bit in 0..last_commit * 8 {
        let mut flipped = image.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        match open_image(&backend, flipped.clone(), false) {
            Err(WalError::Corrupt { file, offset, what }) => {
                assert_eq!(file, the_segment(&backend), "bit {bit}");
                assert!(
                    offset as usize <= last_commit,
                    "bit {bit}: offset {offset}: {what}"
                );
            }
            Err(other) => panic!("bit {bit}: unexpected error {other}"),
            Ok((wal, recovered)) => panic!(
                "bit {bit} (byte {}) accepted: last index {} torn {:?}",
                bit / 8,
                wal.last_index(),
                recovered.torn_tail
            ),
        }
        if bit % 61 == 0 {
            let (wal, recovered) = open_image(&backend, flipped, true).unwrap();
            assert!(
                recovered.repaired.is_some(),
                "bit {bit}: repair not reported"
            );
            assert!(
                models
                    .iter()
                    .any(|m| m.entries == all_entries(&wal) && m.hard_state == wal.hard_state()),
                "bit {bit}: repair gave a state that was never persisted"
            );
        }
    }
}

/// The offset of the last commit record in an image (found by walking the records).
fn last_commit_offset(image: &[u8]) -> usize {
    let mut at = SEGMENT_HEADER_BYTES;
    let mut last = at;
    while let Ok((record, total)) = wal::format::read_record(image, at) {
        if matches!(record, wal::format::Record::Commit { .. }) {
            last = at;
        }
        at += total;
    }
    last
}

// Proves that data after the end of the log which does not look like an interrupted write is
// refused (row 3): a valid batch after garbage, found by the forward search.
#[test]
fn garbage_followed_by_a_valid_batch_is_refused() {
    let backend = MemBackend::with_dir(&dir());
    let (_, images) = write_batches(&backend, &mut xorshift(11), 3);
    let mut image = images[3].clone();
    let first_end = written_end(&images[1]);
    // Damage the length field of the second batch's first record.
    image[first_end] ^= 0x40;
    match open_image(&backend, image, false) {
        Err(WalError::Corrupt { what, .. }) => {
            assert!(what.contains("valid batch committed"), "{what}")
        }
        other => panic!("expected corruption, got {:?}", other.map(|(_, r)| r)),
    }
}

// Proves row 4: a gap in committed entries is refused even though every CRC is valid.
#[test]
fn a_gap_in_committed_entries_is_refused() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, SEGMENT_BYTES).unwrap();
    wal.append(&[entry(1, 1, 8), entry(2, 1, 8)]).unwrap();
    wal.persist().unwrap();
    drop(wal);
    // Re-encode the second entry as index 3 with a valid CRC: only replay can see the gap.
    let path = the_segment(&backend);
    let mut image = backend.contents(&path).unwrap();
    let second = SEGMENT_HEADER_BYTES + wal::format::entry_record_bytes(&entry(1, 1, 8));
    let bad = entry(3, 1, 8);
    wal::format::put_record(
        &mut image[second..],
        wal::format::kind::ENTRY,
        &wal::format::entry_head(&bad),
        &bad.data,
    );
    let commit = second + wal::format::entry_record_bytes(&bad);
    wal::format::put_commit(&mut image, SEGMENT_HEADER_BYTES, commit);
    backend.set_contents(&path, image.clone());
    match open(&backend, SEGMENT_BYTES) {
        Err(e @ WalError::Corrupt { .. }) => assert!(e.to_string().contains("gap"), "{e}"),
        other => panic!("expected a gap error, got {:?}", other.map(|(_, r)| r)),
    }
    // Repair cuts the whole (only) batch.
    let (wal, recovered) = open_image(&backend, image, true).unwrap();
    assert!(recovered.repaired.is_some());
    assert_eq!(wal.last_index(), LogIndex(0));
}

// Proves row 4 for a term regression inside committed data.
#[test]
fn a_term_regression_in_committed_entries_is_refused() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, SEGMENT_BYTES).unwrap();
    wal.append(&[entry(1, 2, 8), entry(2, 2, 8)]).unwrap();
    wal.persist().unwrap();
    drop(wal);
    let path = the_segment(&backend);
    let mut image = backend.contents(&path).unwrap();
    let second = SEGMENT_HEADER_BYTES + wal::format::entry_record_bytes(&entry(1, 2, 8));
    let bad = entry(2, 1, 8);
    wal::format::put_record(
        &mut image[second..],
        wal::format::kind::ENTRY,
        &wal::format::entry_head(&bad),
        &bad.data,
    );
    wal::format::put_commit(
        &mut image,
        SEGMENT_HEADER_BYTES,
        second + wal::format::entry_record_bytes(&bad),
    );
    backend.set_contents(&path, image);
    match open(&backend, SEGMENT_BYTES) {
        Err(e @ WalError::Corrupt { .. }) => {
            assert!(e.to_string().contains("lower than the term"), "{e}")
        }
        other => panic!(
            "expected a term regression, got {:?}",
            other.map(|(_, r)| r)
        ),
    }
}

// Proves row 6: a new segment whose header never reached the disk is deleted as a torn tail,
// and a missing segment in the middle is refused (row 4).
#[test]
fn torn_segment_creation_and_missing_segments() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, 4096).unwrap();
    let mut index = 1;
    while wal.segment_count() < 3 {
        wal.append(&[entry(index, 1, 200)]).unwrap();
        wal.persist().unwrap();
        index += 1;
    }
    let last = wal.last_index();
    drop(wal);
    let mut paths = segment_paths(&backend);
    paths.sort();
    // A fourth segment file that is all zeros (created, header never synced).
    let torn = dir().join("0000000000000004.wal");
    let crashed = backend.crash();
    crashed.set_contents(&paths[0], crashed.contents(&paths[0]).unwrap());
    {
        use wal::Backend;
        crashed.create_segment(&torn, 4096, wal::Pace::Now).unwrap();
        crashed.sync_dir(&dir()).unwrap();
    }
    let (wal, recovered) = open(&crashed, 4096).unwrap();
    assert_eq!(wal.last_index(), last);
    assert!(recovered.torn_tail.is_some());
    assert_eq!(segment_paths(&crashed).len(), 3);
    drop(wal);
    // Deleting the middle segment is refused.
    {
        use wal::Backend;
        crashed.remove(&paths[1]).unwrap();
    }
    match open(&crashed, 4096) {
        Err(e @ WalError::Corrupt { .. }) => assert!(e.to_string().contains("missing"), "{e}"),
        other => panic!(
            "expected a missing segment error, got {:?}",
            other.map(|(_, r)| r)
        ),
    }
}

/// One step of the crash workload.
fn crash_workload(seed: u64, steps: usize, torn: bool) {
    let backend = MemBackend::with_dir(&dir());
    let mut rand = xorshift(seed);
    let (mut wal, _) = open(&backend, 4096).unwrap();
    let mut model = Model::default();
    let mut persisted = model.clone();
    let mut waiting = None;
    let replay = format!("seed {seed} (replay: crash_workload({seed}, {steps}, {torn}))");
    for step in 0..steps {
        let (entries, hard_state) = random_batch(&model, &mut rand, 300);
        if let Some(state) = hard_state {
            wal.set_hard_state(state).unwrap();
            model.hard_state = state;
        }
        wal.append(&entries).unwrap();
        model.append(&entries);
        match rand() % 10 {
            0 if model.last_index() > model.snapshot.index.get() + 2 => {
                let meta = model.snapshot_at(model.last_index() - 2);
                wal.save_snapshot(&raft::Snapshot {
                    configuration: raft::Configuration::default(),
                    meta,
                    data: vec![step as u8; 100],
                })
                .unwrap();
                persisted = model.clone();
            }
            1..=4 => {
                wal.persist().unwrap();
                persisted = model.clone();
            }
            // A persist split as the daemon does under load; at the last step, sometimes
            // the crash comes while its wait for the disk is under way.
            5 | 6 => match wal.persist_start().unwrap() {
                Some(wait) if step + 1 == steps && rand().is_multiple_of(2) => waiting = Some(wait),
                Some(wait) => {
                    wal.persist_finish(wait.wait()).unwrap();
                    persisted = model.clone();
                }
                None => persisted = model.clone(),
            },
            _ => {}
        }
    }
    // The crash: between appends and persist, inside a persist whose msync failed (so the
    // commit record may have reached the disk in some sectors), or during a split
    // persist's wait (the batch is in the page cache, maybe partly on the disk).
    let in_persist = waiting.is_some() || rand().is_multiple_of(2);
    if in_persist && waiting.is_none() {
        backend.set_faults(Faults {
            fail_sync: true,
            ..Faults::default()
        });
        let _ = wal.persist();
    }
    drop((wal, waiting));
    let crashed = if torn {
        backend.crash_torn(rand())
    } else {
        backend.crash()
    };
    let (wal, _) = open(&crashed, 4096).unwrap_or_else(|e| panic!("{replay}: reopen failed: {e}"));
    if in_persist
        && torn
        && wal.last_index().get() == model.last_index()
        && all_entries(&wal) == model.entries
    {
        model.check(&wal, &replay);
    } else {
        persisted.check(&wal, &replay);
    }
}

// Proves that lost unsynced writes recover to the last persisted state: everything persist()
// (or save_snapshot) returned for survives, nothing unpersisted appears, across rollovers,
// overwrites and snapshots with 4 KiB segments.
#[test]
fn lost_unsynced_writes_recover_the_last_persisted_state() {
    for seed in 1..40 {
        crash_workload(seed, 60, false);
    }
}

// Proves the same when unsynced sectors reach the disk in any subset (torn writes of the
// last batch, including its commit record): the result is the last persisted state, or the
// state including the in-flight batch only if all of it made it.
#[test]
fn torn_unsynced_writes_recover_a_persisted_state() {
    for seed in 1..60 {
        crash_workload(seed, 60, true);
    }
}

// Proves the hard state survives alone (no entries) and across reopen.
// Proves a power cut right after the persist of a batch that outgrew its segment twice
// (the middle segment was created and left within the batch) loses nothing: every segment
// the persisted log runs through, the middle one's header included, was synced.
#[test]
fn a_power_cut_after_a_batch_that_rolled_over_twice_loses_nothing() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, _) = open(&backend, 4096).unwrap();
    let entries: Vec<_> = (1..=9).map(|i| entry(i, 1, 900)).collect();
    for part in entries.chunks(3) {
        wal.append(part).unwrap();
    }
    assert_eq!(wal.segment_count(), 3);
    wal.persist().unwrap();
    let crashed = backend.crash();
    drop(wal);
    let (wal, recovered) = open(&crashed, 4096).unwrap();
    assert_eq!(recovered.torn_tail, None);
    assert_eq!(all_entries(&wal), entries);
}

#[test]
fn hard_state_round_trips() {
    let backend = MemBackend::with_dir(&dir());
    let (mut wal, recovered) = open(&backend, SEGMENT_BYTES).unwrap();
    assert_eq!(recovered.hard_state, HardState::default());
    let state = HardState {
        term: Term(5),
        vote: NodeId(2),
        commit: LogIndex(0),
    };
    wal.set_hard_state(state).unwrap();
    wal.persist().unwrap();
    drop(wal);
    let (_, recovered) = open(&backend.crash(), SEGMENT_BYTES).unwrap();
    assert_eq!(recovered.hard_state, state);
}
