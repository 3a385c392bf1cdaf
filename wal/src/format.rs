//! The on-disk format, as specified in `FORMAT.md`: constants with chained offsets, and pure
//! encode/decode functions over byte slices. Nothing here does IO.

use raft::{Configuration, Entry, EntryKind, HardState, LogIndex, NodeId, SnapshotMeta, Term};

/// The first eight bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RAFTDWAL";
/// The first eight bytes of every snapshot file.
pub const SNAPSHOT_MAGIC: [u8; 8] = *b"RAFTSNAP";
/// The format version written into segment and snapshot headers.
pub const FORMAT_VERSION: u32 = 1;
/// Version of the snapshot file layout. 2: the configuration in effect at the snapshot's
/// index is stored between the header and the data (version 1 had no configuration).
pub const SNAPSHOT_VERSION: u32 = 2;

// Segment header: magic | version u32 | crc32 u32 | segment id u64 | first index u64.
pub(crate) const SEGMENT_MAGIC_OFFSET: usize = 0;
pub(crate) const SEGMENT_VERSION_OFFSET: usize = SEGMENT_MAGIC_OFFSET + 8;
pub(crate) const SEGMENT_CRC_OFFSET: usize = SEGMENT_VERSION_OFFSET + 4;
pub(crate) const SEGMENT_ID_OFFSET: usize = SEGMENT_CRC_OFFSET + 4;
pub(crate) const SEGMENT_FIRST_INDEX_OFFSET: usize = SEGMENT_ID_OFFSET + 8;
/// Bytes of the segment header; the first record starts here.
pub const SEGMENT_HEADER_BYTES: usize = SEGMENT_FIRST_INDEX_OFFSET + 8;

// Record header: payload length u32 | crc32 u32 | kind u8 | reserved [u8; 3] (zero).
pub(crate) const RECORD_LEN_OFFSET: usize = 0;
pub(crate) const RECORD_CRC_OFFSET: usize = RECORD_LEN_OFFSET + 4;
pub(crate) const RECORD_KIND_OFFSET: usize = RECORD_CRC_OFFSET + 4;
pub(crate) const RECORD_RESERVED_OFFSET: usize = RECORD_KIND_OFFSET + 1;
/// Bytes of a record header; the payload follows.
pub const RECORD_HEADER_BYTES: usize = RECORD_RESERVED_OFFSET + 3;
/// Every record starts and ends on this alignment (zero padding after the payload).
pub const RECORD_ALIGN_BYTES: usize = 8;

// Entry payload: index u64 | term u64 | entry kind u8 | reserved [u8; 7] | data.
pub(crate) const ENTRY_INDEX_OFFSET: usize = 0;
pub(crate) const ENTRY_TERM_OFFSET: usize = ENTRY_INDEX_OFFSET + 8;
pub(crate) const ENTRY_KIND_OFFSET: usize = ENTRY_TERM_OFFSET + 8;
pub(crate) const ENTRY_RESERVED_OFFSET: usize = ENTRY_KIND_OFFSET + 1;
pub(crate) const ENTRY_DATA_OFFSET: usize = ENTRY_RESERVED_OFFSET + 7;

// Hard state payload: term u64 | vote u64 | commit u64.
pub(crate) const HARD_STATE_TERM_OFFSET: usize = 0;
pub(crate) const HARD_STATE_VOTE_OFFSET: usize = HARD_STATE_TERM_OFFSET + 8;
pub(crate) const HARD_STATE_COMMIT_OFFSET: usize = HARD_STATE_VOTE_OFFSET + 8;
pub(crate) const HARD_STATE_BYTES: usize = HARD_STATE_COMMIT_OFFSET + 8;

// Snapshot marker payload: index u64 | term u64.
pub(crate) const MARKER_INDEX_OFFSET: usize = 0;
pub(crate) const MARKER_TERM_OFFSET: usize = MARKER_INDEX_OFFSET + 8;
pub(crate) const MARKER_BYTES: usize = MARKER_TERM_OFFSET + 8;

// Truncate-suffix payload: from index u64 (entries at and after it are discarded).
pub(crate) const TRUNCATE_FROM_OFFSET: usize = 0;
pub(crate) const TRUNCATE_BYTES: usize = TRUNCATE_FROM_OFFSET + 8;

// Commit payload: batch bytes u64 | batch crc32 u32 | chunk count u32 | chunk crc32 u32 * count.
pub(crate) const COMMIT_BATCH_BYTES_OFFSET: usize = 0;
pub(crate) const COMMIT_BATCH_CRC_OFFSET: usize = COMMIT_BATCH_BYTES_OFFSET + 8;
pub(crate) const COMMIT_CHUNK_COUNT_OFFSET: usize = COMMIT_BATCH_CRC_OFFSET + 4;
pub(crate) const COMMIT_CHUNK_CRCS_OFFSET: usize = COMMIT_CHUNK_COUNT_OFFSET + 4;
/// A commit marker carries one CRC per piece of the batch that falls in one aligned chunk of
/// this many bytes of the file (a disk sector), so recovery can tell a torn write (whole chunks
/// still zero) from a flipped bit.
pub const CHUNK_BYTES: usize = 512;

// Snapshot file: magic | version u32 | crc32 u32 | index u64 | term u64 |
// configuration bytes u64 | data bytes u64 | configuration | data.
pub(crate) const SNAPSHOT_MAGIC_OFFSET: usize = 0;
pub(crate) const SNAPSHOT_VERSION_OFFSET: usize = SNAPSHOT_MAGIC_OFFSET + 8;
pub(crate) const SNAPSHOT_CRC_OFFSET: usize = SNAPSHOT_VERSION_OFFSET + 4;
pub(crate) const SNAPSHOT_INDEX_OFFSET: usize = SNAPSHOT_CRC_OFFSET + 4;
pub(crate) const SNAPSHOT_TERM_OFFSET: usize = SNAPSHOT_INDEX_OFFSET + 8;
pub(crate) const SNAPSHOT_CONFIGURATION_BYTES_OFFSET: usize = SNAPSHOT_TERM_OFFSET + 8;
pub(crate) const SNAPSHOT_DATA_BYTES_OFFSET: usize = SNAPSHOT_CONFIGURATION_BYTES_OFFSET + 8;
/// Bytes of the snapshot file header; the configuration, then the service's data follow.
pub const SNAPSHOT_HEADER_BYTES: usize = SNAPSHOT_DATA_BYTES_OFFSET + 8;

/// The largest entry data accepted (the record length field is a u32, and a bound keeps a
/// corrupt length from asking for an absurd allocation).
pub const ENTRY_DATA_BYTES_MAX: usize = 64 << 20;

const _: () = assert!(SEGMENT_HEADER_BYTES & (RECORD_ALIGN_BYTES - 1) == 0);
const _: () = assert!(SNAPSHOT_HEADER_BYTES & (RECORD_ALIGN_BYTES - 1) == 0);
const _: () = assert!(ENTRY_DATA_OFFSET & (RECORD_ALIGN_BYTES - 1) == 0);
const _: () = assert!(CHUNK_BYTES & (RECORD_ALIGN_BYTES - 1) == 0);
const _: () = assert!(ENTRY_DATA_BYTES_MAX + ENTRY_DATA_OFFSET < u32::MAX as usize);

/// Record kinds (the `kind` byte of the record header).
pub mod kind {
    /// One log entry.
    pub const ENTRY: u8 = 1;
    /// The hard state (term, vote, commit).
    pub const HARD_STATE: u8 = 2;
    /// A durable snapshot covers the log through an index.
    pub const SNAPSHOT_MARKER: u8 = 3;
    /// Entries at and after an index are discarded.
    pub const TRUNCATE_SUFFIX: u8 = 4;
    /// Closes a batch; carries the CRC of every byte of the batch.
    pub const COMMIT: u8 = 5;
}

/// One decoded record. Entry data borrows from the segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record<'a> {
    /// A log entry.
    Entry {
        /// Its index.
        index: LogIndex,
        /// Its term.
        term: Term,
        /// Normal or no-op.
        kind: EntryKind,
        /// The command bytes.
        data: &'a [u8],
    },
    /// The hard state.
    HardState(HardState),
    /// A snapshot through `index` is durable.
    SnapshotMarker(SnapshotMeta),
    /// Entries at and after `from` are discarded.
    TruncateSuffix {
        /// The first discarded index.
        from: LogIndex,
    },
    /// The end of a batch.
    Commit {
        /// Bytes of the batch before this record.
        batch_bytes: u64,
        /// CRC over those bytes.
        batch_crc: u32,
        /// One little-endian u32 CRC per chunk of the batch.
        chunk_crcs: &'a [u8],
    },
}

/// Why bytes at an offset are not a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RecordProblem {
    /// The header is all zeros: the end of the written part of a segment.
    End,
    /// Something is wrong; the text says what.
    Bad(String),
}

pub(crate) fn get_u32(bytes: &[u8], offset: usize) -> u32 {
    let mut raw = [0u8; 4];
    raw.copy_from_slice(&bytes[offset..offset + 4]);
    u32::from_le_bytes(raw)
}

pub(crate) fn get_u64(bytes: &[u8], offset: usize) -> u64 {
    let mut raw = [0u8; 8];
    raw.copy_from_slice(&bytes[offset..offset + 8]);
    u64::from_le_bytes(raw)
}

fn put_u32(bytes: &mut [u8], offset: usize, value: u32) {
    bytes[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_u64(bytes: &mut [u8], offset: usize, value: u64) {
    bytes[offset..offset + 8].copy_from_slice(&value.to_le_bytes());
}

/// Rounds up to the record alignment.
pub const fn align_up(bytes: usize) -> usize {
    (bytes + RECORD_ALIGN_BYTES - 1) & !(RECORD_ALIGN_BYTES - 1)
}

/// Total bytes (header, payload, padding) of a record with `payload_bytes` of payload.
pub const fn record_bytes(payload_bytes: usize) -> usize {
    align_up(RECORD_HEADER_BYTES + payload_bytes)
}

/// Bytes of the record that stores `entry`.
pub fn entry_record_bytes(entry: &Entry) -> usize {
    record_bytes(ENTRY_DATA_OFFSET + entry.data.len())
}

/// Bytes of a hard-state record.
pub const HARD_STATE_RECORD_BYTES: usize = record_bytes(HARD_STATE_BYTES);
/// Bytes of a snapshot-marker record.
pub const MARKER_RECORD_BYTES: usize = record_bytes(MARKER_BYTES);
/// Bytes of a truncate-suffix record.
pub const TRUNCATE_RECORD_BYTES: usize = record_bytes(TRUNCATE_BYTES);

/// The pieces `[lo, hi)` of the file range `[start, end)` cut at every multiple of CHUNK_BYTES.
pub fn chunks(start: usize, end: usize) -> impl Iterator<Item = (usize, usize)> {
    let mut lo = start;
    std::iter::from_fn(move || {
        if lo >= end {
            return None;
        }
        let hi = ((lo / CHUNK_BYTES + 1) * CHUNK_BYTES).min(end);
        let piece = (lo, hi);
        lo = hi;
        Some(piece)
    })
}

/// Bytes of the commit record closing a batch that occupies `[start, end)` of the file.
pub fn commit_record_bytes(start: usize, end: usize) -> usize {
    record_bytes(COMMIT_CHUNK_CRCS_OFFSET + 4 * chunks(start, end).count())
}

/// An upper bound of `commit_record_bytes(start, start + batch_bytes)` for any start.
pub fn commit_record_bytes_max(batch_bytes: usize) -> usize {
    record_bytes(COMMIT_CHUNK_CRCS_OFFSET + 4 * (batch_bytes / CHUNK_BYTES + 2))
}

fn header_crc(bytes: &[u8], crc_offset: usize, end: usize) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&bytes[..crc_offset]);
    hasher.update(&bytes[crc_offset + 4..end]);
    hasher.finalize()
}

/// Writes a segment header into the first SEGMENT_HEADER_BYTES of `dst`.
pub fn encode_segment_header(dst: &mut [u8], segment_id: u64, first_index: LogIndex) {
    dst[SEGMENT_MAGIC_OFFSET..SEGMENT_MAGIC_OFFSET + 8].copy_from_slice(&SEGMENT_MAGIC);
    put_u32(dst, SEGMENT_VERSION_OFFSET, FORMAT_VERSION);
    put_u64(dst, SEGMENT_ID_OFFSET, segment_id);
    put_u64(dst, SEGMENT_FIRST_INDEX_OFFSET, first_index.get());
    let crc = header_crc(dst, SEGMENT_CRC_OFFSET, SEGMENT_HEADER_BYTES);
    put_u32(dst, SEGMENT_CRC_OFFSET, crc);
}

/// Reads a segment header: `(segment id, first index)`, or what is wrong with it.
pub fn decode_segment_header(bytes: &[u8]) -> Result<(u64, LogIndex), String> {
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(format!(
            "file is {} bytes, shorter than a segment header",
            bytes.len()
        ));
    }
    if bytes[..SEGMENT_HEADER_BYTES].iter().all(|&b| b == 0) {
        return Err("segment header is all zeros".to_string());
    }
    if bytes[SEGMENT_MAGIC_OFFSET..SEGMENT_MAGIC_OFFSET + 8] != SEGMENT_MAGIC {
        return Err("bad segment magic".to_string());
    }
    let crc = header_crc(bytes, SEGMENT_CRC_OFFSET, SEGMENT_HEADER_BYTES);
    if crc != get_u32(bytes, SEGMENT_CRC_OFFSET) {
        return Err("segment header CRC mismatch".to_string());
    }
    let version = get_u32(bytes, SEGMENT_VERSION_OFFSET);
    if version != FORMAT_VERSION {
        return Err(format!("unsupported segment format version {version}"));
    }
    Ok((
        get_u64(bytes, SEGMENT_ID_OFFSET),
        LogIndex(get_u64(bytes, SEGMENT_FIRST_INDEX_OFFSET)),
    ))
}

/// Writes a record with payload `head ++ data` at the start of `dst` (header, payload, zero
/// padding) and returns its total bytes. `dst` must hold `record_bytes(head.len() + data.len())`.
pub fn put_record(dst: &mut [u8], kind: u8, head: &[u8], data: &[u8]) -> usize {
    let payload_bytes = head.len() + data.len();
    let total = record_bytes(payload_bytes);
    let len = u32::try_from(payload_bytes).expect("record payload fits in u32");
    put_u32(dst, RECORD_LEN_OFFSET, len);
    dst[RECORD_KIND_OFFSET] = kind;
    dst[RECORD_RESERVED_OFFSET..RECORD_HEADER_BYTES].fill(0);
    let head_at = RECORD_HEADER_BYTES;
    let data_at = head_at + head.len();
    dst[head_at..data_at].copy_from_slice(head);
    dst[data_at..data_at + data.len()].copy_from_slice(data);
    dst[data_at + data.len()..total].fill(0);
    let crc = record_crc(
        &dst[..RECORD_HEADER_BYTES],
        &dst[head_at..data_at + data.len()],
    );
    put_u32(dst, RECORD_CRC_OFFSET, crc);
    total
}

fn record_crc(header: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[RECORD_LEN_OFFSET..RECORD_CRC_OFFSET]);
    hasher.update(&header[RECORD_KIND_OFFSET..RECORD_HEADER_BYTES]);
    hasher.update(payload);
    hasher.finalize()
}

/// The fixed part of an entry payload.
pub fn entry_head(entry: &Entry) -> [u8; ENTRY_DATA_OFFSET] {
    let mut head = [0u8; ENTRY_DATA_OFFSET];
    put_u64(&mut head, ENTRY_INDEX_OFFSET, entry.index.get());
    put_u64(&mut head, ENTRY_TERM_OFFSET, entry.term.get());
    head[ENTRY_KIND_OFFSET] = entry.kind as u8;
    head
}

/// A hard-state payload.
pub fn hard_state_payload(state: &HardState) -> [u8; HARD_STATE_BYTES] {
    let mut payload = [0u8; HARD_STATE_BYTES];
    put_u64(&mut payload, HARD_STATE_TERM_OFFSET, state.term.get());
    put_u64(&mut payload, HARD_STATE_VOTE_OFFSET, state.vote.get());
    put_u64(&mut payload, HARD_STATE_COMMIT_OFFSET, state.commit.get());
    payload
}

/// A snapshot-marker payload.
pub fn marker_payload(meta: &SnapshotMeta) -> [u8; MARKER_BYTES] {
    let mut payload = [0u8; MARKER_BYTES];
    put_u64(&mut payload, MARKER_INDEX_OFFSET, meta.index.get());
    put_u64(&mut payload, MARKER_TERM_OFFSET, meta.term.get());
    payload
}

/// A truncate-suffix payload.
pub fn truncate_payload(from: LogIndex) -> [u8; TRUNCATE_BYTES] {
    let mut payload = [0u8; TRUNCATE_BYTES];
    put_u64(&mut payload, TRUNCATE_FROM_OFFSET, from.get());
    payload
}

/// Writes the commit record for the batch `segment[batch_start..at]` at `at` and returns its
/// bytes. The segment must have room for `commit_record_bytes(batch_start, at)` at `at`.
pub fn put_commit(segment: &mut [u8], batch_start: usize, at: usize) -> usize {
    let payload = commit_payload(&segment[batch_start..at], batch_start);
    put_record(&mut segment[at..], kind::COMMIT, &payload, &[])
}

/// The payload of the commit record closing `batch`, the bytes at file offset `batch_start`
/// (the offset decides where the batch is cut into sector pieces).
pub fn commit_payload(batch: &[u8], batch_start: usize) -> Vec<u8> {
    let at = batch_start + batch.len();
    let chunk_count = chunks(batch_start, at).count();
    let mut payload = vec![0u8; COMMIT_CHUNK_CRCS_OFFSET + 4 * chunk_count];
    put_u64(&mut payload, COMMIT_BATCH_BYTES_OFFSET, batch.len() as u64);
    put_u32(
        &mut payload,
        COMMIT_BATCH_CRC_OFFSET,
        crc32fast::hash(batch),
    );
    put_u32(&mut payload, COMMIT_CHUNK_COUNT_OFFSET, chunk_count as u32);
    for (i, (lo, hi)) in chunks(batch_start, at).enumerate() {
        let crc = crc32fast::hash(&batch[lo - batch_start..hi - batch_start]);
        put_u32(&mut payload, COMMIT_CHUNK_CRCS_OFFSET + 4 * i, crc);
    }
    payload
}

/// Reads the record at `pos` of `bytes`: the record and its total bytes, or why it is not one.
/// Checks bounds, CRC, reserved bytes, the kind and the payload's shape; never panics.
pub fn read_record(bytes: &[u8], pos: usize) -> Result<(Record<'_>, usize), RecordProblem> {
    let bad = |what: String| Err(RecordProblem::Bad(what));
    if pos + RECORD_HEADER_BYTES > bytes.len() {
        if bytes[pos.min(bytes.len())..].iter().all(|&b| b == 0) {
            return Err(RecordProblem::End);
        }
        return bad("record header runs past the end of the file".to_string());
    }
    let header = &bytes[pos..pos + RECORD_HEADER_BYTES];
    if header.iter().all(|&b| b == 0) {
        return Err(RecordProblem::End);
    }
    let len = get_u32(header, RECORD_LEN_OFFSET) as usize;
    let total = record_bytes(len);
    if len == 0 || total > bytes.len() - pos {
        return bad(format!("record length {len} does not fit in the file"));
    }
    let payload = &bytes[pos + RECORD_HEADER_BYTES..pos + RECORD_HEADER_BYTES + len];
    if record_crc(header, payload) != get_u32(header, RECORD_CRC_OFFSET) {
        return bad(format!("record CRC mismatch (length {len})"));
    }
    if header[RECORD_RESERVED_OFFSET..].iter().any(|&b| b != 0) {
        return bad("record reserved bytes are not zero".to_string());
    }
    // Padding is covered by no CRC of its own (the batch CRC covers it, except after a commit
    // record), so it must be zero.
    if bytes[pos + RECORD_HEADER_BYTES + len..pos + total]
        .iter()
        .any(|&b| b != 0)
    {
        return bad("record padding is not zero".to_string());
    }
    let record = decode_payload(header[RECORD_KIND_OFFSET], payload).map_err(RecordProblem::Bad)?;
    Ok((record, total))
}

fn decode_payload(kind_byte: u8, payload: &[u8]) -> Result<Record<'_>, String> {
    let want = |bytes: usize| {
        if payload.len() == bytes {
            Ok(())
        } else {
            Err(format!(
                "record kind {kind_byte} has a {}-byte payload, expected {bytes}",
                payload.len()
            ))
        }
    };
    match kind_byte {
        kind::ENTRY => {
            if payload.len() < ENTRY_DATA_OFFSET {
                return Err(format!(
                    "entry payload of {} bytes is too short",
                    payload.len()
                ));
            }
            let kind = EntryKind::from_u8(payload[ENTRY_KIND_OFFSET])
                .ok_or_else(|| format!("unknown entry kind {}", payload[ENTRY_KIND_OFFSET]))?;
            Ok(Record::Entry {
                index: LogIndex(get_u64(payload, ENTRY_INDEX_OFFSET)),
                term: Term(get_u64(payload, ENTRY_TERM_OFFSET)),
                kind,
                data: &payload[ENTRY_DATA_OFFSET..],
            })
        }
        kind::HARD_STATE => {
            want(HARD_STATE_BYTES)?;
            Ok(Record::HardState(HardState {
                term: Term(get_u64(payload, HARD_STATE_TERM_OFFSET)),
                vote: NodeId(get_u64(payload, HARD_STATE_VOTE_OFFSET)),
                commit: LogIndex(get_u64(payload, HARD_STATE_COMMIT_OFFSET)),
            }))
        }
        kind::SNAPSHOT_MARKER => {
            want(MARKER_BYTES)?;
            Ok(Record::SnapshotMarker(SnapshotMeta {
                index: LogIndex(get_u64(payload, MARKER_INDEX_OFFSET)),
                term: Term(get_u64(payload, MARKER_TERM_OFFSET)),
            }))
        }
        kind::TRUNCATE_SUFFIX => {
            want(TRUNCATE_BYTES)?;
            Ok(Record::TruncateSuffix {
                from: LogIndex(get_u64(payload, TRUNCATE_FROM_OFFSET)),
            })
        }
        kind::COMMIT => {
            if payload.len() < COMMIT_CHUNK_CRCS_OFFSET {
                return Err(format!(
                    "commit payload of {} bytes is too short",
                    payload.len()
                ));
            }
            let count = get_u32(payload, COMMIT_CHUNK_COUNT_OFFSET) as usize;
            want(COMMIT_CHUNK_CRCS_OFFSET + 4 * count)?;
            Ok(Record::Commit {
                batch_bytes: get_u64(payload, COMMIT_BATCH_BYTES_OFFSET),
                batch_crc: get_u32(payload, COMMIT_BATCH_CRC_OFFSET),
                chunk_crcs: &payload[COMMIT_CHUNK_CRCS_OFFSET..],
            })
        }
        other => Err(format!("unknown record kind {other}")),
    }
}

/// Reads the entry record at `pos` without checking its CRC (the segment was verified when it
/// was opened or written by this process).
pub fn read_entry_unchecked(bytes: &[u8], pos: usize) -> Entry {
    let len = get_u32(bytes, pos + RECORD_LEN_OFFSET) as usize;
    let payload = &bytes[pos + RECORD_HEADER_BYTES..pos + RECORD_HEADER_BYTES + len];
    Entry {
        index: LogIndex(get_u64(payload, ENTRY_INDEX_OFFSET)),
        term: Term(get_u64(payload, ENTRY_TERM_OFFSET)),
        kind: EntryKind::from_u8(payload[ENTRY_KIND_OFFSET])
            .expect("entry kind checked on write or open"),
        data: raft::SharedBytes::copy_from_slice(&payload[ENTRY_DATA_OFFSET..]),
    }
}

/// Encodes a snapshot file.
pub fn encode_snapshot(meta: &SnapshotMeta, configuration: &Configuration, data: &[u8]) -> Vec<u8> {
    let mut bytes = snapshot_header(meta, configuration, data);
    bytes.extend_from_slice(data);
    bytes
}

/// The start of a snapshot file holding `data`: the header and the configuration (the file
/// is these bytes, then `data`).
pub fn snapshot_header(meta: &SnapshotMeta, configuration: &Configuration, data: &[u8]) -> Vec<u8> {
    let mut header = snapshot_header_unsealed(meta, configuration, data.len() as u64);
    let mut crc = snapshot_crc_of_header(&header);
    crc.update(data);
    seal_snapshot_header(&mut header, crc);
    header
}

/// The start of a snapshot file whose data will be `data_bytes` long, with its CRC field
/// still zero: [`seal_snapshot_header`] fills it in once the data was hashed (after
/// [`snapshot_crc_of_header`]), for a file written as its data is produced.
pub fn snapshot_header_unsealed(
    meta: &SnapshotMeta,
    configuration: &Configuration,
    data_bytes: u64,
) -> Vec<u8> {
    let mut header = vec![0u8; SNAPSHOT_HEADER_BYTES];
    configuration.encode(&mut header);
    let configuration_bytes = header.len() - SNAPSHOT_HEADER_BYTES;
    header[SNAPSHOT_MAGIC_OFFSET..SNAPSHOT_MAGIC_OFFSET + 8].copy_from_slice(&SNAPSHOT_MAGIC);
    put_u32(&mut header, SNAPSHOT_VERSION_OFFSET, SNAPSHOT_VERSION);
    put_u64(&mut header, SNAPSHOT_INDEX_OFFSET, meta.index.get());
    put_u64(&mut header, SNAPSHOT_TERM_OFFSET, meta.term.get());
    put_u64(
        &mut header,
        SNAPSHOT_CONFIGURATION_BYTES_OFFSET,
        configuration_bytes as u64,
    );
    put_u64(&mut header, SNAPSHOT_DATA_BYTES_OFFSET, data_bytes);
    header
}

/// The file's CRC so far: every byte of `header` but its CRC field. The data is hashed on.
pub fn snapshot_crc_of_header(header: &[u8]) -> crc32fast::Hasher {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..SNAPSHOT_CRC_OFFSET]);
    hasher.update(&header[SNAPSHOT_CRC_OFFSET + 4..]);
    hasher
}

/// Writes the CRC of the header and all the data into the header.
pub fn seal_snapshot_header(header: &mut [u8], crc: crc32fast::Hasher) {
    put_u32(header, SNAPSHOT_CRC_OFFSET, crc.finalize());
}

/// Decodes a snapshot file, or says what is wrong with it.
pub fn decode_snapshot(bytes: &[u8]) -> Result<raft::Snapshot, String> {
    let (meta, configuration, data_offset) = check_snapshot(bytes)?;
    Ok(raft::Snapshot {
        meta,
        configuration,
        data: bytes[data_offset..].to_vec(),
    })
}

/// [`decode_snapshot`] of a file's bytes read into `bytes`, whose buffer becomes the
/// snapshot's data (no second copy of a snapshot that can be tens of megabytes).
pub fn decode_snapshot_owned(mut bytes: Vec<u8>) -> Result<raft::Snapshot, String> {
    let (meta, configuration, data_offset) = check_snapshot(&bytes)?;
    bytes.drain(..data_offset);
    Ok(raft::Snapshot {
        meta,
        configuration,
        data: bytes,
    })
}

/// Checks a snapshot file's header, configuration and CRC; returns where the snapshot
/// ends, its configuration and where its data starts.
fn check_snapshot(bytes: &[u8]) -> Result<(SnapshotMeta, Configuration, usize), String> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err(format!(
            "file is {} bytes, shorter than a snapshot header",
            bytes.len()
        ));
    }
    if bytes[SNAPSHOT_MAGIC_OFFSET..SNAPSHOT_MAGIC_OFFSET + 8] != SNAPSHOT_MAGIC {
        return Err("bad snapshot magic".to_string());
    }
    let version = get_u32(bytes, SNAPSHOT_VERSION_OFFSET);
    if version != SNAPSHOT_VERSION {
        return Err(format!("unsupported snapshot format version {version}"));
    }
    let configuration_bytes = get_u64(bytes, SNAPSHOT_CONFIGURATION_BYTES_OFFSET);
    let data_bytes = get_u64(bytes, SNAPSHOT_DATA_BYTES_OFFSET);
    let held = (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64;
    if configuration_bytes.checked_add(data_bytes) != Some(held) {
        return Err(format!(
            "snapshot says {configuration_bytes} configuration and {data_bytes} data bytes, file holds {held}"
        ));
    }
    if header_crc(bytes, SNAPSHOT_CRC_OFFSET, bytes.len()) != get_u32(bytes, SNAPSHOT_CRC_OFFSET) {
        return Err("snapshot CRC mismatch".to_string());
    }
    let data_offset = SNAPSHOT_HEADER_BYTES + configuration_bytes as usize;
    let configuration = Configuration::decode(&bytes[SNAPSHOT_HEADER_BYTES..data_offset])
        .map_err(|why| format!("snapshot configuration: {why}"))?;
    let meta = SnapshotMeta {
        index: LogIndex(get_u64(bytes, SNAPSHOT_INDEX_OFFSET)),
        term: Term(get_u64(bytes, SNAPSHOT_TERM_OFFSET)),
    };
    Ok((meta, configuration, data_offset))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Proves that any entry encodes to a record that decodes to the same entry (codec
        // round trip against the obvious oracle: the input), with the size `entry_record_bytes`
        // predicts.
        #[test]
        fn entry_round_trip(index in 1u64.., term in 0u64.., noop in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let entry = Entry { index: LogIndex(index), term: Term(term), kind: if noop { EntryKind::Noop } else { EntryKind::Normal }, data: data.into() };
            let mut buf = vec![0u8; entry_record_bytes(&entry) + 16];
            let written = put_record(&mut buf, kind::ENTRY, &entry_head(&entry), &entry.data);
            prop_assert_eq!(written, entry_record_bytes(&entry));
            let (record, total) = read_record(&buf, 0).unwrap();
            prop_assert_eq!(total, written);
            prop_assert_eq!(record, Record::Entry { index: entry.index, term: entry.term, kind: entry.kind, data: &entry.data });
            prop_assert_eq!(read_entry_unchecked(&buf, 0), entry);
        }
    }

    // Proves the commit record's size prediction holds for every batch start within a chunk.
    #[test]
    fn commit_size_bound_holds() {
        for start in (0..2 * CHUNK_BYTES).step_by(8) {
            for len in (0..3000).step_by(8) {
                assert!(commit_record_bytes(start, start + len) <= commit_record_bytes_max(len));
            }
        }
    }

    // Proves snapshot files round-trip and that a flipped bit anywhere is caught.
    #[test]
    fn snapshot_file_round_trip_and_flips() {
        let meta = SnapshotMeta {
            index: LogIndex(7),
            term: Term(3),
        };
        let configuration = Configuration::new([NodeId(1), NodeId(2)]);
        let bytes = encode_snapshot(&meta, &configuration, b"state");
        let snapshot = decode_snapshot(&bytes).unwrap();
        assert_eq!(
            (
                snapshot.meta,
                &snapshot.configuration,
                snapshot.data.as_slice()
            ),
            (meta, &configuration, &b"state"[..])
        );
        // The layout of FORMAT.md, byte for byte (the CRC aside).
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(&hex[..16], "52414654534e4150"); // "RAFTSNAP"
        assert_eq!(
            &hex[16..24],
            "02000000",
            "version 2 carries a configuration"
        );
        assert_eq!(
            &hex[32..],
            concat!(
                "0700000000000000",                                           // index
                "0300000000000000",                                           // term
                "2100000000000000",                                           // configuration bytes
                "0500000000000000",                                           // data bytes
                "0202000000010000000000000002000000000000000000000000000000", // voters 1, 2
                "00000000",                                                   // no addresses
                "7374617465"                                                  // "state"
            )
        );
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(
                decode_snapshot(&flipped).is_err(),
                "flip of bit {bit} accepted"
            );
        }
    }
}
