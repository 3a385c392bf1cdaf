//! Recovery: scans the segments, replays committed batches into a `LogMap`, and classifies the
//! first problem found as a torn tail or as corruption (the decision table in the crate docs and
//! FORMAT.md). Analysis only reads; cutting is a separate step the caller takes.

use std::path::PathBuf;

use raft::{HardState, LogIndex};

use crate::backend::SegmentMap;
use crate::format::{
    self, chunks, get_u32, Record, RecordProblem, CHUNK_BYTES, SEGMENT_HEADER_BYTES,
};
use crate::log_map::{Location, LogMap};

/// A segment file and its map.
pub(crate) struct Segment {
    pub id: u64,
    pub first_index: LogIndex,
    pub path: PathBuf,
    pub map: Box<dyn SegmentMap>,
}

impl Segment {
    /// The segment `id` at `path`, mapped. The header's first index is checked during
    /// analysis; it is read here so the list is complete. A damaged header reads as index 0
    /// and is reported by analysis.
    pub fn new(id: u64, path: PathBuf, map: Box<dyn SegmentMap>) -> Segment {
        let first_index =
            format::decode_segment_header(map.bytes()).map_or(LogIndex(0), |(_, first)| first);
        Segment {
            id,
            first_index,
            path,
            map,
        }
    }
}

/// The state replayed from a log with no problem in it.
pub(crate) struct Replayed {
    pub log: LogMap,
    pub hard_state: HardState,
    /// The end of the last commit record of the newest segment: where writing resumes.
    pub write_pos: usize,
}

/// The first thing wrong in the log.
#[derive(Debug)]
pub(crate) struct Problem {
    /// Position of the segment in the list.
    pub segment: usize,
    /// Where the log would be cut: the start of the batch the problem is in.
    pub cut_at: usize,
    /// Where the problem itself is.
    pub offset: usize,
    pub what: String,
    /// A gap, a term regression or a similar replay error in committed data: never a torn tail.
    pub semantic: bool,
}

/// What a problem is, per the decision table.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Bytes after the last valid commit that no valid commit follows, shaped like an
    /// interrupted write: truncate and continue.
    TornTail,
    /// Anything else: refuse to open (or cut, with `repair`).
    Corrupt(String),
}

fn all_zero(bytes: &[u8]) -> bool {
    bytes.iter().all(|&b| b == 0)
}

/// Recovery lets the pages it has scanned leave the resident set this much at a time, so
/// opening a WAL of several 64 MiB segments does not hold them all resident at once.
pub(crate) const SCAN_RELEASE_BYTES: usize = 8 << 20;

/// Releases are cut at page boundaries (4 KiB: the smallest page size Linux uses).
pub(crate) const PAGE_BYTES: usize = 4096;

/// Releases a segment's scanned pages behind the scan position. Only a hint: a page read
/// again later faults back in from the page cache or the disk.
struct Releaser<'a> {
    map: &'a dyn SegmentMap,
    released: usize,
}

impl<'a> Releaser<'a> {
    /// A releaser for a scan of `map` that starts at `from`.
    fn after(map: &'a dyn SegmentMap, from: usize) -> Releaser<'a> {
        Releaser {
            map,
            released: from - from % PAGE_BYTES,
        }
    }

    /// Releases everything after what was already released, to the end of the map.
    fn rest(&mut self) {
        let len = self.map.file_bytes();
        if self.released < len {
            self.map.release(self.released, len - self.released);
            self.released = len;
        }
    }

    /// Releases the whole pages before `upto` once at least `SCAN_RELEASE_BYTES` are waiting.
    fn behind(&mut self, upto: usize) {
        let end = upto - upto % PAGE_BYTES;
        if end >= self.released + SCAN_RELEASE_BYTES {
            self.map.release(self.released, end - self.released);
            self.released = end;
        }
    }
}

/// `all_zero` over `bytes[from..]`, releasing behind as it goes.
fn all_zero_from(bytes: &[u8], from: usize, releaser: &mut Releaser<'_>) -> bool {
    let mut at = from;
    while at < bytes.len() {
        let end = (at + SCAN_RELEASE_BYTES).min(bytes.len());
        if !all_zero(&bytes[at..end]) {
            return false;
        }
        releaser.behind(end);
        at = end;
    }
    true
}

/// Replays every segment in order. Returns the replayed state, or the first problem.
pub(crate) fn analyze(segments: &[Segment]) -> Result<Replayed, Problem> {
    let start = segments
        .first()
        .map_or(1, |segment| segment.first_index.get().max(1));
    let mut replay = Replay {
        log: LogMap::new(start),
        hard_state: HardState::default(),
    };
    let mut write_pos = SEGMENT_HEADER_BYTES;
    for (position, segment) in segments.iter().enumerate() {
        let problem = |cut_at: usize, offset: usize, what: String, semantic: bool| Problem {
            segment: position,
            cut_at,
            offset,
            what,
            semantic,
        };
        let bytes = segment.map.bytes();
        let (id, first_index) =
            format::decode_segment_header(bytes).map_err(|what| problem(0, 0, what, false))?;
        if id != segment.id || first_index != segment.first_index {
            let what =
                format!("header names segment {id} first index {first_index}, file name disagrees");
            return Err(problem(0, 0, what, false));
        }
        if position > 0 && first_index.get() != replay.log.next() {
            let what = format!(
                "segment starts at index {first_index} but the previous one ends at {}",
                replay.log.last_index()
            );
            return Err(problem(0, 0, what, true));
        }
        let mut releaser = Releaser::after(&*segment.map, 0);
        let replayed = replay.segment(segment.id, bytes, &mut releaser);
        releaser.rest();
        write_pos = replayed
            .map_err(|(cut_at, offset, what, semantic)| problem(cut_at, offset, what, semantic))?;
    }
    Ok(Replayed {
        log: replay.log,
        hard_state: replay.hard_state,
        write_pos,
    })
}

struct Replay {
    log: LogMap,
    hard_state: HardState,
}

type SegmentProblem = (usize, usize, String, bool);

impl Replay {
    /// Replays the committed batches of one segment; returns the end of the last one.
    fn segment(
        &mut self,
        segment_id: u64,
        bytes: &[u8],
        releaser: &mut Releaser<'_>,
    ) -> Result<usize, SegmentProblem> {
        let mut pending: Vec<(usize, Record<'_>)> = Vec::new();
        let mut at = SEGMENT_HEADER_BYTES;
        let mut batch_start = at;
        let stop = loop {
            let (record, total) = match format::read_record(bytes, at) {
                Err(RecordProblem::End) => break None,
                Err(RecordProblem::Bad(what)) => break Some((at, what)),
                Ok(read) => read,
            };
            if let Record::Commit {
                batch_bytes,
                batch_crc,
                ..
            } = record
            {
                if batch_bytes != (at - batch_start) as u64
                    || crc32fast::hash(&bytes[batch_start..at]) != batch_crc
                {
                    let what = format!(
                        "commit record's CRC does not match the batch at {batch_start}..{at}"
                    );
                    break Some((at, what));
                }
                for (offset, record) in pending.drain(..) {
                    self.apply(segment_id, offset, record)
                        .map_err(|what| (batch_start, offset, what, true))?;
                }
                batch_start = at + total;
                releaser.behind(batch_start);
            } else {
                pending.push((at, record));
            }
            at += total;
        };
        if all_zero_from(bytes, batch_start, releaser) {
            return Ok(batch_start);
        }
        let (offset, what) = stop.unwrap_or((
            batch_start,
            "records after the last commit record".to_string(),
        ));
        Err((batch_start, offset, what, false))
    }

    fn apply(&mut self, segment_id: u64, offset: usize, record: Record<'_>) -> Result<(), String> {
        match record {
            Record::Entry { index, term, .. } => {
                self.log.push(
                    index.get(),
                    Location {
                        term,
                        segment_id,
                        offset,
                    },
                )?;
            }
            Record::HardState(state) => {
                if state.term < self.hard_state.term {
                    return Err(format!(
                        "hard state term {} regresses from {}",
                        state.term, self.hard_state.term
                    ));
                }
                self.hard_state = state;
            }
            Record::SnapshotMarker(meta) => self.log.compact(meta),
            Record::TruncateSuffix { from } => {
                if from.get() == 0 || from.get() > self.log.next() {
                    return Err(format!(
                        "truncation from {from} is past the end of the log ({})",
                        self.log.last_index()
                    ));
                }
                self.log.truncate_from(from.get());
            }
            Record::Commit { .. } => {
                unreachable!("commit records end batches and are not replayed")
            }
        }
        Ok(())
    }
}

/// Decides whether `problem` is a torn tail or corruption.
pub(crate) fn classify(segments: &[Segment], problem: &Problem) -> Verdict {
    if problem.semantic {
        return Verdict::Corrupt(problem.what.clone());
    }
    let later = std::iter::once((problem.segment, problem.cut_at + format::RECORD_ALIGN_BYTES))
        .chain(
            (problem.segment + 1..segments.len()).map(|position| (position, SEGMENT_HEADER_BYTES)),
        );
    for (position, from) in later {
        if let Some(at) = find_valid_batch(&*segments[position].map, from) {
            return Verdict::Corrupt(format!(
                "{}; a valid batch committed at {}:{at} follows, so this is not a torn tail",
                problem.what,
                segments[position].path.display()
            ));
        }
    }
    if problem.cut_at == 0 {
        // A segment whose header never became durable, with nothing committed in it or after it.
        return Verdict::TornTail;
    }
    classify_tail(&*segments[problem.segment].map, problem.cut_at)
}

/// A record-valid commit record at `at` whose batch would start at or after `min_start`.
fn commit_at(bytes: &[u8], at: usize, min_start: usize) -> Option<(usize, u32, &[u8])> {
    // Cheap filters first: this runs at every 8-byte offset of a damaged region.
    if bytes.get(at + format::RECORD_KIND_OFFSET) != Some(&format::kind::COMMIT) {
        return None;
    }
    match format::read_record(bytes, at) {
        Ok((
            Record::Commit {
                batch_bytes,
                batch_crc,
                chunk_crcs,
            },
            _,
        )) => {
            let batch_start = at.checked_sub(usize::try_from(batch_bytes).ok()?)?;
            (batch_start >= min_start).then_some((batch_start, batch_crc, chunk_crcs))
        }
        _ => None,
    }
}

/// The offset of the first commit record at or after `from` whose batch CRC matches.
fn find_valid_batch(map: &dyn SegmentMap, from: usize) -> Option<usize> {
    let bytes = map.bytes();
    let from = format::align_up(from);
    let mut releaser = Releaser::after(map, from);
    let found = (from..bytes.len())
        .step_by(format::RECORD_ALIGN_BYTES)
        .find(|&at| {
            releaser.behind(at);
            commit_at(bytes, at, SEGMENT_HEADER_BYTES).is_some_and(|(batch_start, batch_crc, _)| {
                crc32fast::hash(&bytes[batch_start..at]) == batch_crc
            })
        });
    releaser.rest();
    found
}

/// Classifies the bytes after the last valid commit of the last segment with data: torn if no
/// intact commit record closes them, or if every chunk that differs from what the commit record
/// recorded is still all zeros (a sector that was never written).
fn classify_tail(map: &dyn SegmentMap, batch_start: usize) -> Verdict {
    let bytes = map.bytes();
    let mut releaser = Releaser::after(map, batch_start);
    let marker = (batch_start..bytes.len())
        .step_by(format::RECORD_ALIGN_BYTES)
        .find_map(|at| {
            releaser.behind(at);
            commit_at(bytes, at, batch_start)
                .filter(|found| found.0 == batch_start)
                .map(|found| (at, found))
        });
    releaser.rest();
    let Some((at, (_, _, chunk_crcs))) = marker else {
        return Verdict::TornTail;
    };
    let marker_chunk = at / CHUNK_BYTES;
    for (i, (lo, hi)) in chunks(batch_start, at).enumerate() {
        if 4 * i + 4 > chunk_crcs.len() {
            return Verdict::Corrupt(format!("commit record at {at} lists too few chunk CRCs"));
        }
        if crc32fast::hash(&bytes[lo..hi]) == get_u32(chunk_crcs, 4 * i) {
            continue;
        }
        // The sector holding the commit record's start was written (the record is intact), so
        // a difference there cannot be an unwritten sector.
        if lo / CHUNK_BYTES == marker_chunk || !all_zero(&bytes[lo..hi]) {
            return Verdict::Corrupt(format!(
                "bytes {lo}..{hi} differ from what the commit record at {at} recorded and are not an unwritten sector"
            ));
        }
    }
    if chunks(batch_start, at).count() * 4 != chunk_crcs.len() {
        return Verdict::Corrupt(format!(
            "commit record at {at} lists the wrong number of chunk CRCs"
        ));
    }
    let end = at + format::read_record(bytes, at).map_or(0, |(_, total)| total);
    if !all_zero(&bytes[end..]) {
        return Verdict::Corrupt(format!("data after the uncommitted batch closed at {at}"));
    }
    Verdict::TornTail
}
