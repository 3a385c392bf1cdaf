//! The scrubber: re-reads the WAL's segment files and its snapshot file a window at a time and
//! checks every CRC, so bit rot is found while the cluster still holds good copies, not at the
//! next start or when a follower happens to need the damaged entry.
//!
//! The checks are those of recovery (FORMAT.md): the segment header; every record's CRC,
//! reserved bytes and padding; every batch's CRC against its commit record; and, in a sealed
//! segment, zeros after the last commit record. In the segment being written only the synced
//! bytes are read. A snapshot file is checked against its header's length and CRC.
//!
//! This module only walks files. [`Wal::scrub`](crate::Wal::scrub) paces it, reads through the
//! backend (past the page cache where the kernel allows), and acts on what it finds.

use std::io;
use std::path::PathBuf;

use crate::format::{
    self, get_u32, get_u64, RecordProblem, ENTRY_DATA_BYTES_MAX, RECORD_HEADER_BYTES,
    RECORD_LEN_OFFSET, SEGMENT_HEADER_BYTES, SNAPSHOT_CONFIGURATION_BYTES_OFFSET,
    SNAPSHOT_CRC_OFFSET, SNAPSHOT_DATA_BYTES_OFFSET, SNAPSHOT_HEADER_BYTES, SNAPSHOT_MAGIC,
    SNAPSHOT_MAGIC_OFFSET, SNAPSHOT_VERSION_OFFSET,
};

/// Bytes read per window: large enough that a step is a few reads, small enough that one read
/// never holds the event loop for long.
pub(crate) const WINDOW_BYTES: usize = 256 << 10;

/// Damage the scrubber found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Damage {
    /// The damaged file.
    pub file: PathBuf,
    /// Where in it.
    pub offset: u64,
    /// What is wrong, for the operator.
    pub what: String,
}

/// What one [`Wal::scrub`](crate::Wal::scrub) call did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubStep {
    /// Bytes read and checked.
    pub bytes: u64,
    /// A pass over every file ended in this step.
    pub pass_finished: bool,
    /// Damage found in this step (the step ends there; the next one goes on with the next
    /// file).
    pub damage: Option<Damage>,
}

/// Totals since the WAL was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubTotals {
    /// Passes over every file finished.
    pub passes: u64,
    /// Bytes read and checked.
    pub bytes: u64,
    /// Damage found (each damaged file counted once per pass).
    pub damage_found: u64,
}

/// Where the scrubber is.
#[derive(Debug, Default)]
pub(crate) enum Cursor {
    /// At the start of a pass.
    #[default]
    Start,
    /// In segment `id`.
    Segment(SegmentScan),
    /// In the snapshot file `name`.
    Snapshot(SnapshotScan),
}

/// Progress through one segment.
#[derive(Clone, Debug)]
pub(crate) struct SegmentScan {
    pub id: u64,
    /// The next byte to read; 0 before the header is checked.
    pub pos: usize,
    /// Where the open batch started.
    batch_start: usize,
    batch: crc32fast::Hasher,
    /// Past the last record: only zeros may follow (in a sealed segment).
    in_tail: bool,
}

impl SegmentScan {
    pub fn new(id: u64) -> SegmentScan {
        SegmentScan {
            id,
            pos: 0,
            batch_start: SEGMENT_HEADER_BYTES,
            batch: crc32fast::Hasher::new(),
            in_tail: false,
        }
    }
}

/// Progress through one snapshot file.
#[derive(Clone, Debug)]
pub(crate) struct SnapshotScan {
    pub name: String,
    pub pos: u64,
    crc: crc32fast::Hasher,
    expected: u32,
}

impl SnapshotScan {
    pub fn new(name: String) -> SnapshotScan {
        SnapshotScan {
            name,
            pos: 0,
            crc: crc32fast::Hasher::new(),
            expected: 0,
        }
    }
}

/// The outcome of scanning one window.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scanned {
    /// Read this many bytes; more of the file remains.
    More(usize),
    /// Read this many bytes and reached the end of what may be checked in the file.
    Done(usize),
    /// Damage at this offset.
    Bad(usize, String),
}

/// A read of up to `len` bytes from an offset (of type `O`) into the buffer given (replacing
/// what it held), fewer at the file's end.
pub(crate) type ReadInto<'a, O> = dyn FnMut(O, usize, &mut Vec<u8>) -> io::Result<()> + 'a;

/// A segment the scrubber reads.
pub(crate) struct SegmentView<'a> {
    pub id: u64,
    pub first_index: raft::LogIndex,
    /// Bytes before this offset may be checked: the file's length for a sealed segment, the
    /// synced end for the one being written.
    pub limit: usize,
    pub sealed: bool,
    /// Reads up to `len` bytes from an offset into the buffer it is given (replacing what
    /// the buffer held), fewer at the file's end.
    pub read: &'a mut ReadInto<'a, usize>,
    /// Where the reads go: one buffer for every read, kept by the caller.
    pub buffer: &'a mut Vec<u8>,
}

impl SegmentScan {
    /// Scans up to about `budget` bytes of the segment from where the scan stands.
    pub fn step(&mut self, view: &mut SegmentView<'_>, budget: usize) -> Scanned {
        if self.pos == 0 {
            if view.limit < SEGMENT_HEADER_BYTES {
                // A new segment whose header is not synced yet: nothing to check.
                return Scanned::Done(0);
            }
            let header = match (view.read)(0, SEGMENT_HEADER_BYTES, view.buffer) {
                Ok(()) => &view.buffer[..],
                Err(e) => return Scanned::Bad(0, format!("segment header unreadable: {e}")),
            };
            match format::decode_segment_header(header) {
                Ok((id, first)) if id == view.id && first == view.first_index => {}
                Ok((id, first)) => {
                    return Scanned::Bad(
                        0,
                        format!(
                            "segment header says id {id} first index {first}, expected {} {}",
                            view.id, view.first_index
                        ),
                    )
                }
                Err(what) => return Scanned::Bad(0, what),
            }
            self.pos = SEGMENT_HEADER_BYTES;
        }
        let mut read = 0;
        while read < budget {
            if self.pos >= view.limit {
                return Scanned::Done(read);
            }
            let outcome = if self.in_tail {
                self.zeros(view)
            } else {
                self.records(view)
            };
            match outcome {
                Scanned::More(n) => read += n,
                Scanned::Done(n) => return Scanned::Done(read + n),
                bad => return bad,
            }
        }
        Scanned::More(read)
    }

    /// Checks one window of the zero tail of a sealed segment.
    fn zeros(&mut self, view: &mut SegmentView<'_>) -> Scanned {
        let len = WINDOW_BYTES.min(view.limit - self.pos);
        let bytes = match (view.read)(self.pos, len, view.buffer) {
            Ok(()) => &view.buffer[..],
            Err(e) => return Scanned::Bad(self.pos, format!("unreadable: {e}")),
        };
        if let Some(at) = bytes.iter().position(|&b| b != 0) {
            return Scanned::Bad(
                self.pos + at,
                "bytes after the last commit record are not zero".into(),
            );
        }
        self.pos += len;
        Scanned::More(len)
    }

    /// Checks the whole records of one window (at least one record, however large).
    fn records(&mut self, view: &mut SegmentView<'_>) -> Scanned {
        let start = self.pos;
        let mut len = WINDOW_BYTES.min(view.limit - start);
        loop {
            let bytes = match (view.read)(start, len, view.buffer) {
                Ok(()) => &view.buffer[..],
                Err(e) => return Scanned::Bad(start, format!("unreadable: {e}")),
            };
            let at_limit = start + bytes.len() >= view.limit;
            let mut rel = 0;
            while rel < bytes.len() {
                let total = match record_extent(bytes, rel) {
                    Some(total) => total,
                    // Fewer bytes than a header before the end of the file: the end of the
                    // records if they are zeros, as recovery reads it.
                    None if at_limit && bytes[rel..].iter().all(|&b| b == 0) => 0,
                    None => break, // Its header is not all in this window.
                };
                if total == 0 {
                    // An all-zero header: the end of the records.
                    self.pos = start + rel;
                    if !view.sealed {
                        return Scanned::Done(rel);
                    }
                    if self.pos != self.batch_start {
                        return Scanned::Bad(
                            self.pos,
                            "records after the last commit record".into(),
                        );
                    }
                    self.in_tail = true;
                    return Scanned::More(rel.max(1));
                }
                if rel + total > bytes.len() {
                    break; // Not all in this window.
                }
                match format::read_record(&bytes[..rel + total], rel) {
                    Ok((
                        format::Record::Commit {
                            batch_bytes,
                            batch_crc,
                            ..
                        },
                        _,
                    )) => {
                        let batch = std::mem::replace(&mut self.batch, crc32fast::Hasher::new());
                        let at = start + rel;
                        if batch_bytes != (at - self.batch_start) as u64
                            || batch.finalize() != batch_crc
                        {
                            return Scanned::Bad(
                                at,
                                format!(
                                    "commit record's CRC does not match the batch at {}..{at}",
                                    self.batch_start
                                ),
                            );
                        }
                        self.batch_start = at + total;
                    }
                    Ok(_) => self.batch.update(&bytes[rel..rel + total]),
                    Err(RecordProblem::End) => unreachable!("a zero header is handled above"),
                    Err(RecordProblem::Bad(what)) => return Scanned::Bad(start + rel, what),
                }
                rel += total;
            }
            if rel > 0 {
                self.pos = start + rel;
                return if at_limit && self.pos >= view.limit {
                    Scanned::Done(rel)
                } else {
                    Scanned::More(rel)
                };
            }
            // Not even one whole record in the window. At the limit that is damage in a
            // segment being written too: its synced end falls where a commit record ends, so
            // no record begins before it and ends after it.
            if at_limit {
                return Scanned::Bad(start, "a record runs past the end of the file".into());
            }
            let want = record_extent(bytes, 0).unwrap_or(RECORD_HEADER_BYTES);
            len = want.max(len * 2).min(view.limit - start);
        }
    }
}

/// The total bytes of the record whose header starts at `rel`: `None` if the header is not
/// all in `bytes`, `Some(0)` for an all-zero header (the end of the records). A length no
/// record can have is returned as is; reading it then fails its checks.
fn record_extent(bytes: &[u8], rel: usize) -> Option<usize> {
    let header = bytes.get(rel..rel + RECORD_HEADER_BYTES)?;
    if header.iter().all(|&b| b == 0) {
        return Some(0);
    }
    let len = get_u32(header, RECORD_LEN_OFFSET) as usize;
    // A damaged length is capped so that it never asks for an absurd read.
    let len = len.clamp(1, ENTRY_DATA_BYTES_MAX + 64);
    Some(format::record_bytes(len))
}

impl SnapshotScan {
    /// Scans up to about `budget` bytes of the snapshot file `file_bytes` long.
    pub fn step(
        &mut self,
        file_bytes: u64,
        read: &mut ReadInto<'_, u64>,
        buffer: &mut Vec<u8>,
        budget: usize,
    ) -> Scanned {
        let mut done = 0;
        if self.pos == 0 {
            let header = match read(0, SNAPSHOT_HEADER_BYTES, buffer).map(|()| &buffer[..]) {
                Ok(h) if h.len() == SNAPSHOT_HEADER_BYTES => h,
                Ok(h) => {
                    return Scanned::Bad(
                        0,
                        format!("file is {} bytes, shorter than its header", h.len()),
                    )
                }
                Err(e) => return Scanned::Bad(0, format!("unreadable: {e}")),
            };
            if header[SNAPSHOT_MAGIC_OFFSET..SNAPSHOT_MAGIC_OFFSET + 8] != SNAPSHOT_MAGIC {
                return Scanned::Bad(0, "bad snapshot magic".into());
            }
            let version = get_u32(header, SNAPSHOT_VERSION_OFFSET);
            if version != format::SNAPSHOT_VERSION {
                return Scanned::Bad(0, format!("unsupported snapshot format version {version}"));
            }
            let configuration_bytes = get_u64(header, SNAPSHOT_CONFIGURATION_BYTES_OFFSET);
            let data_bytes = get_u64(header, SNAPSHOT_DATA_BYTES_OFFSET);
            let held = file_bytes.saturating_sub(SNAPSHOT_HEADER_BYTES as u64);
            if configuration_bytes.checked_add(data_bytes) != Some(held) {
                return Scanned::Bad(
                    0,
                    format!(
                        "snapshot says {configuration_bytes} configuration and {data_bytes} data bytes, the file is {file_bytes} bytes"
                    ),
                );
            }
            self.crc.update(&header[..SNAPSHOT_CRC_OFFSET]);
            self.crc.update(&header[SNAPSHOT_CRC_OFFSET + 4..]);
            self.expected = get_u32(header, SNAPSHOT_CRC_OFFSET);
            self.pos = SNAPSHOT_HEADER_BYTES as u64;
            done += SNAPSHOT_HEADER_BYTES;
        }
        while done < budget && self.pos < file_bytes {
            let len = (WINDOW_BYTES as u64).min(file_bytes - self.pos) as usize;
            let bytes = match read(self.pos, len, buffer).map(|()| &buffer[..]) {
                Ok(bytes) if bytes.len() == len => bytes,
                Ok(_) => {
                    return Scanned::Bad(
                        self.pos as usize,
                        "the file is shorter than it was".into(),
                    )
                }
                Err(e) => return Scanned::Bad(self.pos as usize, format!("unreadable: {e}")),
            };
            self.crc.update(bytes);
            self.pos += len as u64;
            done += len;
        }
        if self.pos < file_bytes {
            return Scanned::More(done);
        }
        let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
        if crc != self.expected {
            return Scanned::Bad(0, "snapshot CRC mismatch".into());
        }
        Scanned::Done(done)
    }
}
