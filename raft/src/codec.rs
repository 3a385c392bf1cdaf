//! The binary encoding of [`Message`], as specified in `raft/FORMAT.md`, and the byte
//! [`Reader`] and [`Writer`] every format of raftd is written with.
//!
//! Pure functions over bytes, fixed-width little-endian integers only. The decoder is the
//! gateway for bytes from the network: it validates every length against the bytes actually
//! present before allocating, and never panics on any input.
//!
//! [`Reader`] and [`Writer`] live here because the core is the crate the others build on:
//! the client protocol and the key-value store's snapshots are written with them too, so
//! every format shares one cursor that cannot read past the end of its bytes.

use crate::membership::Configuration;
use crate::message::{Body, ConflictHint, Message};
use crate::shared_bytes::SharedBytes;
use crate::types::{Entry, EntryKind, LogIndex, NodeId, SnapshotMeta, Term};
use std::fmt;

/// Bytes before the body: kind u8, from u64, to u64, term u64.
pub const HEADER_BYTES: usize = 1 + 8 + 8 + 8;
/// Bytes of an entry before its data: term u64, index u64, kind u8, data length u32.
pub const ENTRY_HEADER_BYTES: usize = 8 + 8 + 1 + 4;

const KIND_PRE_VOTE: u8 = 1;
const KIND_PRE_VOTE_RESPONSE: u8 = 2;
const KIND_VOTE: u8 = 3;
const KIND_VOTE_RESPONSE: u8 = 4;
const KIND_APPEND: u8 = 5;
const KIND_APPEND_RESPONSE: u8 = 6;
const KIND_HEARTBEAT: u8 = 7;
const KIND_HEARTBEAT_RESPONSE: u8 = 8;
const KIND_SNAPSHOT: u8 = 9;
const KIND_SNAPSHOT_RESPONSE: u8 = 10;
const KIND_READ_INDEX: u8 = 11;
const KIND_READ_INDEX_RESPONSE: u8 = 12;
const KIND_TIMEOUT_NOW: u8 = 13;

/// Why bytes did not decode into a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// The bytes end before the field named here.
    Truncated(&'static str),
    /// The kind byte names no message.
    UnknownKind(u8),
    /// An entry's kind byte names no entry kind.
    UnknownEntryKind(u8),
    /// A configuration (in a configuration entry or a snapshot) does not decode.
    BadConfiguration(String),
    /// A boolean byte is neither 0 nor 1.
    BadBool(&'static str),
    /// Bytes are left over after the message.
    TrailingBytes(usize),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated(field) => write!(f, "message truncated at field {field}"),
            DecodeError::UnknownKind(kind) => write!(f, "unknown message kind {kind}"),
            DecodeError::UnknownEntryKind(kind) => write!(f, "unknown entry kind {kind}"),
            DecodeError::BadConfiguration(why) => write!(f, "bad configuration: {why}"),
            DecodeError::BadBool(field) => write!(f, "field {field} is not a boolean"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes after the end of the message"),
        }
    }
}

impl std::error::Error for DecodeError {}

impl From<Truncated> for DecodeError {
    fn from(truncated: Truncated) -> DecodeError {
        DecodeError::Truncated(truncated.field)
    }
}

/// The exact encoded size of `message`, without encoding it.
pub fn encoded_len(message: &Message) -> usize {
    HEADER_BYTES
        + match &message.body {
            Body::PreVote { .. } => 16,
            Body::Vote { .. } => 17,
            Body::PreVoteResponse { .. } | Body::VoteResponse { .. } => 1,
            Body::Append { entries, .. } => {
                24 + 4
                    + entries
                        .iter()
                        .map(|e| ENTRY_HEADER_BYTES + e.data.len())
                        .sum::<usize>()
            }
            Body::AppendResponse { .. } => 8 + 1 + 8 + 8,
            Body::Heartbeat { .. } => 16,
            Body::HeartbeatResponse { .. } => 8,
            Body::Snapshot {
                data,
                configuration,
                ..
            } => 32 + 4 + configuration_len(configuration) + 4 + data.len(),
            Body::SnapshotResponse { .. } => 17,
            Body::ReadIndex { .. } => 8,
            Body::ReadIndexResponse { .. } => 16,
            Body::TimeoutNow => 0,
        }
}

/// Appends the encoding of `message` to `out`.
pub fn encode(message: &Message, out: &mut Vec<u8>) {
    out.reserve(encoded_len(message));
    let kind = match &message.body {
        Body::PreVote { .. } => KIND_PRE_VOTE,
        Body::PreVoteResponse { .. } => KIND_PRE_VOTE_RESPONSE,
        Body::Vote { .. } => KIND_VOTE,
        Body::VoteResponse { .. } => KIND_VOTE_RESPONSE,
        Body::Append { .. } => KIND_APPEND,
        Body::AppendResponse { .. } => KIND_APPEND_RESPONSE,
        Body::Heartbeat { .. } => KIND_HEARTBEAT,
        Body::HeartbeatResponse { .. } => KIND_HEARTBEAT_RESPONSE,
        Body::Snapshot { .. } => KIND_SNAPSHOT,
        Body::SnapshotResponse { .. } => KIND_SNAPSHOT_RESPONSE,
        Body::ReadIndex { .. } => KIND_READ_INDEX,
        Body::ReadIndexResponse { .. } => KIND_READ_INDEX_RESPONSE,
        Body::TimeoutNow => KIND_TIMEOUT_NOW,
    };
    let mut w = Writer::new(out);
    w.u8(kind);
    w.u64(message.from.0);
    w.u64(message.to.0);
    w.u64(message.term.0);
    match &message.body {
        Body::PreVote {
            last_index,
            last_term,
        } => {
            w.u64(last_index.0);
            w.u64(last_term.0);
        }
        Body::Vote {
            last_index,
            last_term,
            transfer,
        } => {
            w.u64(last_index.0);
            w.u64(last_term.0);
            w.u8(u8::from(*transfer));
        }
        Body::PreVoteResponse { granted } | Body::VoteResponse { granted } => {
            w.u8(u8::from(*granted))
        }
        Body::Append {
            prev_index,
            prev_term,
            commit,
            entries,
        } => {
            w.u64(prev_index.0);
            w.u64(prev_term.0);
            w.u64(commit.0);
            w.u32(u32::try_from(entries.len()).expect("entry count fits u32"));
            for entry in entries {
                put_entry(&mut w, entry);
            }
        }
        Body::AppendResponse { reject, index } => {
            w.u64(index.0);
            w.u8(u8::from(reject.is_some()));
            let hint = reject.unwrap_or(ConflictHint {
                term: Term(0),
                index: LogIndex(0),
            });
            w.u64(hint.term.0);
            w.u64(hint.index.0);
        }
        Body::Heartbeat { commit, read_seq } => {
            w.u64(commit.0);
            w.u64(*read_seq);
        }
        Body::HeartbeatResponse { read_seq } => w.u64(*read_seq),
        Body::Snapshot {
            meta,
            configuration,
            offset,
            total_bytes,
            data,
        } => {
            w.u64(meta.index.0);
            w.u64(meta.term.0);
            w.u64(*offset);
            w.u64(*total_bytes);
            w.u32_prefixed(&configuration.to_bytes());
            w.u32_prefixed(data);
        }
        Body::SnapshotResponse {
            index,
            next_offset,
            reject,
        } => {
            w.u64(index.0);
            w.u64(*next_offset);
            w.u8(u8::from(*reject));
        }
        Body::ReadIndex { context } => w.u64(*context),
        Body::ReadIndexResponse { context, index } => {
            w.u64(*context);
            w.u64(index.0);
        }
        Body::TimeoutNow => {}
    }
}

/// Appends the encoding of one entry (also used by storage that wants the same layout).
pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    put_entry(&mut Writer::new(out), entry);
}

fn put_entry(w: &mut Writer<'_>, entry: &Entry) {
    w.u64(entry.term.0);
    w.u64(entry.index.0);
    w.u8(entry.kind as u8);
    w.u32_prefixed(&entry.data);
}

/// Decodes one message that occupies all of `bytes`.
///
/// Each entry's bytes are copied out of `bytes`; [`decode_shared`] slices them instead.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    decode_from(bytes, None)
}

/// [`decode`] of a message held in a [`SharedBytes`]: each entry's bytes are a slice of `frame`
/// (no allocation and no copy per entry), which stays allocated while any of them is held.
pub fn decode_shared(frame: &SharedBytes) -> Result<Message, DecodeError> {
    decode_from(frame, Some(frame))
}

/// `owner`, when given, holds exactly `bytes`: entries are sliced from it.
fn decode_from(bytes: &[u8], owner: Option<&SharedBytes>) -> Result<Message, DecodeError> {
    let mut r = Reader::new(bytes);
    let kind = r.u8("kind")?;
    let from = NodeId(r.u64("from")?);
    let to = NodeId(r.u64("to")?);
    let term = Term(r.u64("term")?);
    let body = match kind {
        KIND_PRE_VOTE => Body::PreVote {
            last_index: LogIndex(r.u64("last_index")?),
            last_term: Term(r.u64("last_term")?),
        },
        KIND_VOTE => Body::Vote {
            last_index: LogIndex(r.u64("last_index")?),
            last_term: Term(r.u64("last_term")?),
            transfer: bool(&mut r, "transfer")?,
        },
        KIND_PRE_VOTE_RESPONSE => Body::PreVoteResponse {
            granted: bool(&mut r, "granted")?,
        },
        KIND_VOTE_RESPONSE => Body::VoteResponse {
            granted: bool(&mut r, "granted")?,
        },
        KIND_APPEND => {
            let prev_index = LogIndex(r.u64("prev_index")?);
            let prev_term = Term(r.u64("prev_term")?);
            let commit = LogIndex(r.u64("commit")?);
            let count = r.u32("entry_count")? as usize;
            // Bound the allocation by what the bytes can hold, not by what the sender claims.
            if count > r.remaining() / ENTRY_HEADER_BYTES {
                return Err(DecodeError::Truncated("entries"));
            }
            let mut entries = Vec::with_capacity(count);
            for _ in 0..count {
                entries.push(decode_entry(&mut r, owner)?);
            }
            Body::Append {
                prev_index,
                prev_term,
                commit,
                entries,
            }
        }
        KIND_APPEND_RESPONSE => {
            let index = LogIndex(r.u64("index")?);
            let rejected = bool(&mut r, "rejected")?;
            let hint = ConflictHint {
                term: Term(r.u64("hint_term")?),
                index: LogIndex(r.u64("hint_index")?),
            };
            Body::AppendResponse {
                reject: rejected.then_some(hint),
                index,
            }
        }
        KIND_HEARTBEAT => Body::Heartbeat {
            commit: LogIndex(r.u64("commit")?),
            read_seq: r.u64("read_seq")?,
        },
        KIND_HEARTBEAT_RESPONSE => Body::HeartbeatResponse {
            read_seq: r.u64("read_seq")?,
        },
        KIND_SNAPSHOT => {
            let meta = SnapshotMeta {
                index: LogIndex(r.u64("snapshot_index")?),
                term: Term(r.u64("snapshot_term")?),
            };
            let offset = r.u64("offset")?;
            let total_bytes = r.u64("total_bytes")?;
            let configuration = Configuration::decode(r.u32_prefixed("configuration")?)
                .map_err(DecodeError::BadConfiguration)?;
            let data = r.u32_prefixed("chunk")?.to_vec();
            Body::Snapshot {
                meta,
                configuration,
                offset,
                total_bytes,
                data,
            }
        }
        KIND_SNAPSHOT_RESPONSE => Body::SnapshotResponse {
            index: LogIndex(r.u64("index")?),
            next_offset: r.u64("next_offset")?,
            reject: bool(&mut r, "reject")?,
        },
        KIND_READ_INDEX => Body::ReadIndex {
            context: r.u64("context")?,
        },
        KIND_READ_INDEX_RESPONSE => Body::ReadIndexResponse {
            context: r.u64("context")?,
            index: LogIndex(r.u64("index")?),
        },
        KIND_TIMEOUT_NOW => Body::TimeoutNow,
        other => return Err(DecodeError::UnknownKind(other)),
    };
    if r.remaining() != 0 {
        return Err(DecodeError::TrailingBytes(r.remaining()));
    }
    Ok(Message {
        from,
        to,
        term,
        body,
    })
}

fn decode_entry(r: &mut Reader<'_>, owner: Option<&SharedBytes>) -> Result<Entry, DecodeError> {
    let term = Term(r.u64("entry_term")?);
    let index = LogIndex(r.u64("entry_index")?);
    let kind_byte = r.u8("entry_kind")?;
    let kind = EntryKind::from_u8(kind_byte).ok_or(DecodeError::UnknownEntryKind(kind_byte))?;
    let data = r.u32_prefixed("entry_data")?;
    let data = match owner {
        Some(frame) => frame.slice_ref(data),
        None => SharedBytes::copy_from_slice(data),
    };
    if kind == EntryKind::Config {
        Configuration::decode(&data).map_err(DecodeError::BadConfiguration)?;
    }
    Ok(Entry {
        term,
        index,
        kind,
        data,
    })
}

/// The encoded size of a configuration: version, three counts, eight bytes per id, then a
/// count and per address an id, a length and the bytes.
fn configuration_len(configuration: &Configuration) -> usize {
    1 + 3 * 4
        + 8 * (configuration.voters.len()
            + configuration.outgoing.len()
            + configuration.learners.len())
        + 4
        + configuration
            .addresses
            .values()
            .map(|a| 12 + a.len())
            .sum::<usize>()
}

/// Reads a boolean byte: 0 or 1, anything else is an error.
fn bool(r: &mut Reader<'_>, field: &'static str) -> Result<bool, DecodeError> {
    match r.u8(field)? {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(DecodeError::BadBool(field)),
    }
}

// ---------------------------------------------------------------------------------------------
// The byte reader and writer of every format.

/// The bytes ended before a field: what [`Reader`] reports. Each format turns it into its
/// own error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Truncated {
    /// The field that did not fit.
    pub field: &'static str,
    /// Where the field starts, in bytes from the start of the input.
    pub offset: usize,
}

impl fmt::Display for Truncated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "truncated at {} (byte {})", self.field, self.offset)
    }
}

impl std::error::Error for Truncated {}

/// A cursor over little-endian, fixed-width fields that never reads past the end of its
/// bytes: a read that does not fit fails with [`Truncated`], naming the field and where it
/// starts. It never panics and never allocates; a length read from the input only ever
/// selects bytes that are present, so a caller that copies what it returns allocates no
/// more than the input holds, whatever a length field claims.
///
/// ```
/// use raft::codec::{Reader, Writer};
///
/// let mut bytes = Vec::new();
/// let mut w = Writer::new(&mut bytes);
/// w.u8(7);
/// w.u64(1 << 40);
/// w.u32_prefixed(b"key");
/// let mut r = Reader::new(&bytes);
/// assert_eq!(r.u8("kind"), Ok(7));
/// assert_eq!(r.u64("index"), Ok(1 << 40));
/// assert_eq!(r.u32_prefixed("key"), Ok(&b"key"[..]));
/// assert_eq!(r.remaining(), 0);
/// assert_eq!(r.u8("more").unwrap_err().offset, bytes.len());
/// ```
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    /// Where the next field starts; at most `bytes.len()`.
    offset: usize,
}

impl<'a> Reader<'a> {
    /// A cursor at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, offset: 0 }
    }

    /// Bytes read so far: where the next field starts.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Bytes left after the cursor.
    #[inline]
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.offset
    }

    /// The next `len` bytes.
    #[inline]
    pub fn bytes(&mut self, len: usize, field: &'static str) -> Result<&'a [u8], Truncated> {
        if self.remaining() < len {
            return Err(Truncated {
                field,
                offset: self.offset,
            });
        }
        let out = &self.bytes[self.offset..self.offset + len];
        self.offset += len;
        Ok(out)
    }

    #[inline]
    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], Truncated> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N, field)?);
        Ok(out)
    }

    /// One byte.
    #[inline]
    pub fn u8(&mut self, field: &'static str) -> Result<u8, Truncated> {
        Ok(self.bytes(1, field)?[0])
    }

    /// A little-endian `u32`.
    #[inline]
    pub fn u32(&mut self, field: &'static str) -> Result<u32, Truncated> {
        self.array(field).map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    #[inline]
    pub fn u64(&mut self, field: &'static str) -> Result<u64, Truncated> {
        self.array(field).map(u64::from_le_bytes)
    }

    /// A `u32` length, then that many bytes (what [`Writer::u32_prefixed`] writes).
    #[inline]
    pub fn u32_prefixed(&mut self, field: &'static str) -> Result<&'a [u8], Truncated> {
        let len = self.u32(field)?;
        self.bytes(len as usize, field)
    }

    /// A `u64` length, then that many bytes (what [`Writer::u64_prefixed`] writes).
    #[inline]
    pub fn u64_prefixed(&mut self, field: &'static str) -> Result<&'a [u8], Truncated> {
        let len = self.u64(field)?;
        // A length past what `usize` holds is past the bytes present too.
        self.bytes(usize::try_from(len).unwrap_or(usize::MAX), field)
    }
}

/// Appends little-endian, fixed-width fields to a buffer: the encoding side of [`Reader`].
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Writer<'a> {
        Writer { out }
    }

    /// One byte.
    #[inline]
    pub fn u8(&mut self, value: u8) {
        self.out.push(value);
    }

    /// A little-endian `u32`.
    #[inline]
    pub fn u32(&mut self, value: u32) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// A little-endian `u64`.
    #[inline]
    pub fn u64(&mut self, value: u64) {
        self.out.extend_from_slice(&value.to_le_bytes());
    }

    /// Bytes as they are, with no length.
    #[inline]
    pub fn bytes(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    /// The length of `bytes` as a `u32`, then the bytes.
    ///
    /// # Panics
    /// If `bytes` is 4 GiB or longer: formats bound their fields far below that, and
    /// encoders check those bounds before they write.
    #[inline]
    pub fn u32_prefixed(&mut self, bytes: &[u8]) {
        self.u32(u32::try_from(bytes.len()).expect("a length-prefixed field fits u32"));
        self.bytes(bytes);
    }

    /// The length of `bytes` as a `u64`, then the bytes.
    #[inline]
    pub fn u64_prefixed(&mut self, bytes: &[u8]) {
        self.u64(bytes.len() as u64);
        self.bytes(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_entry() -> impl Strategy<Value = Entry> {
        (
            any::<u64>(),
            any::<u64>(),
            0u8..3,
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(t, i, kind, data)| match kind {
                0 => Entry {
                    term: Term(t),
                    index: LogIndex(i),
                    kind: EntryKind::Normal,
                    data: data.into(),
                },
                1 => Entry {
                    term: Term(t),
                    index: LogIndex(i),
                    kind: EntryKind::Noop,
                    data: data.into(),
                },
                _ => Entry {
                    term: Term(t),
                    index: LogIndex(i),
                    kind: EntryKind::Config,
                    data: arb_configuration(&data).to_bytes().into(),
                },
            })
    }

    /// A valid configuration made from arbitrary bytes (ids from the bytes' values).
    fn arb_configuration(bytes: &[u8]) -> Configuration {
        let mut c = Configuration::default();
        for (k, b) in bytes.iter().enumerate() {
            let id = NodeId(u64::from(*b) + 1);
            match k % 3 {
                0 => {
                    c.learners.remove(&id);
                    c.voters.insert(id);
                }
                1 if !c.voters.is_empty() => {
                    c.outgoing.insert(id);
                }
                _ if !c.voters.contains(&id) => {
                    c.learners.insert(id);
                }
                _ => {}
            }
        }
        // Every other member gets an address, of a length drawn from the bytes too.
        for (k, id) in c
            .members()
            .into_iter()
            .enumerate()
            .filter(|(k, _)| k % 2 == 0)
        {
            let len = 1 + bytes.get(k).map_or(0, |b| usize::from(*b) % 20);
            c.addresses.insert(id, "h".repeat(len));
        }
        c
    }

    fn arb_body() -> impl Strategy<Value = Body> {
        let u = any::<u64>;
        prop_oneof![
            (u(), u()).prop_map(|(a, b)| Body::PreVote {
                last_index: LogIndex(a),
                last_term: Term(b)
            }),
            (u(), u(), prop::bool::ANY).prop_map(|(a, b, t)| Body::Vote {
                last_index: LogIndex(a),
                last_term: Term(b),
                transfer: t
            }),
            prop::bool::ANY.prop_map(|g| Body::PreVoteResponse { granted: g }),
            prop::bool::ANY.prop_map(|g| Body::VoteResponse { granted: g }),
            (u(), u(), u(), prop::collection::vec(arb_entry(), 0..5)).prop_map(
                |(a, b, c, entries)| Body::Append {
                    prev_index: LogIndex(a),
                    prev_term: Term(b),
                    commit: LogIndex(c),
                    entries
                }
            ),
            (u(), prop::option::of((u(), u()))).prop_map(|(i, h)| Body::AppendResponse {
                index: LogIndex(i),
                reject: h.map(|(t, x)| ConflictHint {
                    term: Term(t),
                    index: LogIndex(x)
                })
            }),
            (u(), u()).prop_map(|(c, s)| Body::Heartbeat {
                commit: LogIndex(c),
                read_seq: s
            }),
            u().prop_map(|s| Body::HeartbeatResponse { read_seq: s }),
            (
                u(),
                u(),
                u(),
                u(),
                prop::collection::vec(any::<u8>(), 0..64),
                prop::collection::vec(any::<u8>(), 0..16)
            )
                .prop_map(|(i, t, o, n, data, conf)| Body::Snapshot {
                    meta: SnapshotMeta {
                        index: LogIndex(i),
                        term: Term(t)
                    },
                    configuration: arb_configuration(&conf),
                    offset: o,
                    total_bytes: n,
                    data
                }),
            (u(), u(), prop::bool::ANY).prop_map(|(i, o, r)| Body::SnapshotResponse {
                index: LogIndex(i),
                next_offset: o,
                reject: r
            }),
            u().prop_map(|c| Body::ReadIndex { context: c }),
            (u(), u()).prop_map(|(c, i)| Body::ReadIndexResponse {
                context: c,
                index: LogIndex(i)
            }),
            Just(Body::TimeoutNow),
        ]
    }

    /// The sizes FORMAT.md quotes.
    #[test]
    fn sizes_match_format_md() {
        let m = |body| Message {
            from: NodeId(1),
            to: NodeId(2),
            term: Term(3),
            body,
        };
        let heartbeat = m(Body::Heartbeat {
            commit: LogIndex(1),
            read_seq: 2,
        });
        let vote = m(Body::Vote {
            last_index: LogIndex(1),
            last_term: Term(1),
            transfer: false,
        });
        let append = m(Body::Append {
            prev_index: LogIndex(1),
            prev_term: Term(1),
            commit: LogIndex(1),
            entries: vec![Entry {
                term: Term(3),
                index: LogIndex(2),
                kind: EntryKind::Normal,
                data: vec![0; 8].into(),
            }],
        });
        for (msg, size) in [(heartbeat, 41), (vote, 42), (append, 82)] {
            let mut buf = Vec::new();
            encode(&msg, &mut buf);
            assert_eq!(buf.len(), size, "{msg}");
        }
    }

    /// The bytes of one message of every kind (and both shapes of an append response), as
    /// FORMAT.md lays them out: proves the encoding does not change by a single byte, and
    /// that these bytes decode back to the same messages.
    #[test]
    fn golden_bytes() {
        let m = |body| Message {
            from: NodeId(1),
            to: NodeId(0x0203),
            term: Term(0x0405_0607),
            body,
        };
        let entry = |kind, data: &[u8]| Entry {
            term: Term(7),
            index: LogIndex(0x0809),
            kind,
            data: SharedBytes::copy_from_slice(data),
        };
        let cases = [
            (
                m(Body::PreVote {
                    last_index: LogIndex(0x10),
                    last_term: Term(0x11),
                }),
                "0101000000000000000302000000000000070605040000000010000000000000001100000000000000",
            ),
            (
                m(Body::PreVoteResponse { granted: true }),
                "0201000000000000000302000000000000070605040000000001",
            ),
            (
                m(Body::Vote {
                    last_index: LogIndex(0x12),
                    last_term: Term(0x13),
                    transfer: true,
                }),
                "030100000000000000030200000000000007060504000000001200000000000000130000000000000001",
            ),
            (
                m(Body::VoteResponse { granted: false }),
                "0401000000000000000302000000000000070605040000000000",
            ),
            (
                m(Body::Append {
                    prev_index: LogIndex(0x14),
                    prev_term: Term(0x15),
                    commit: LogIndex(0x16),
                    entries: vec![entry(EntryKind::Normal, b"ab"), entry(EntryKind::Noop, b"")],
                }),
                "05010000000000000003020000000000000706050400000000140000000000000015000000000000001600000000000000020000000700000000000000090800000000000001020000006162070000000000000009080000000000000200000000",
            ),
            (
                m(Body::Append {
                    prev_index: LogIndex(0x14),
                    prev_term: Term(0x15),
                    commit: LogIndex(0x16),
                    entries: vec![entry(
                        EntryKind::Config,
                        &Configuration::new([NodeId(2)]).to_bytes(),
                    )],
                }),
                concat!(
                    "05010000000000000003020000000000000706050400000000140000000000000015000000000000001600000000000000",
                    "01000000070000000000000009080000000000000319000000",
                    "02010000000200000000000000000000000000000000000000"
                ),
            ),
            (
                m(Body::AppendResponse {
                    reject: None,
                    index: LogIndex(0x17),
                }),
                "0601000000000000000302000000000000070605040000000017000000000000000000000000000000000000000000000000",
            ),
            (
                m(Body::AppendResponse {
                    reject: Some(ConflictHint {
                        term: Term(0x18),
                        index: LogIndex(0x19),
                    }),
                    index: LogIndex(0x1a),
                }),
                "060100000000000000030200000000000007060504000000001a000000000000000118000000000000001900000000000000",
            ),
            (
                m(Body::Heartbeat {
                    commit: LogIndex(0x1b),
                    read_seq: 0x1c,
                }),
                "070100000000000000030200000000000007060504000000001b000000000000001c00000000000000",
            ),
            (
                m(Body::HeartbeatResponse { read_seq: 0x1d }),
                "080100000000000000030200000000000007060504000000001d00000000000000",
            ),
            (
                m(Body::Snapshot {
                    meta: SnapshotMeta {
                        index: LogIndex(0x1e),
                        term: Term(0x1f),
                    },
                    configuration: Configuration::new([NodeId(1)]),
                    offset: 0x20,
                    total_bytes: 0x21,
                    data: b"xyz".to_vec(),
                }),
                concat!(
                    "090100000000000000030200000000000007060504000000001e000000000000001f00000000000000",
                    "20000000000000002100000000000000",
                    "1900000002010000000100000000000000000000000000000000000000",
                    "0300000078797a"
                ),
            ),
            (
                m(Body::SnapshotResponse {
                    index: LogIndex(0x22),
                    next_offset: 0x23,
                    reject: true,
                }),
                "0a0100000000000000030200000000000007060504000000002200000000000000230000000000000001",
            ),
            (
                m(Body::ReadIndex { context: 0x24 }),
                "0b0100000000000000030200000000000007060504000000002400000000000000",
            ),
            (
                m(Body::ReadIndexResponse {
                    context: 0x25,
                    index: LogIndex(0x26),
                }),
                "0c01000000000000000302000000000000070605040000000025000000000000002600000000000000",
            ),
            (
                m(Body::TimeoutNow),
                "0d010000000000000003020000000000000706050400000000",
            ),
        ];
        for (message, hex) in cases {
            let mut buf = Vec::new();
            encode(&message, &mut buf);
            let got: String = buf.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(got, hex, "{message}");
            assert_eq!(decode(&buf).unwrap(), message);
        }
    }

    /// One field of a made-up format, for the reader and writer's own test.
    #[derive(Clone, Debug, PartialEq)]
    enum Field {
        U8(u8),
        U32(u32),
        U64(u64),
        U32Prefixed(Vec<u8>),
        U64Prefixed(Vec<u8>),
    }

    fn arb_field() -> impl Strategy<Value = Field> {
        let bytes = || prop::collection::vec(any::<u8>(), 0..16);
        prop_oneof![
            any::<u8>().prop_map(Field::U8),
            any::<u32>().prop_map(Field::U32),
            any::<u64>().prop_map(Field::U64),
            bytes().prop_map(Field::U32Prefixed),
            bytes().prop_map(Field::U64Prefixed),
        ]
    }

    fn read_field(r: &mut Reader<'_>, like: &Field) -> Result<Field, Truncated> {
        Ok(match like {
            Field::U8(_) => Field::U8(r.u8("u8")?),
            Field::U32(_) => Field::U32(r.u32("u32")?),
            Field::U64(_) => Field::U64(r.u64("u64")?),
            Field::U32Prefixed(_) => Field::U32Prefixed(r.u32_prefixed("u32 bytes")?.to_vec()),
            Field::U64Prefixed(_) => Field::U64Prefixed(r.u64_prefixed("u64 bytes")?.to_vec()),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The reader reads back what the writer wrote, against a naive oracle of the
        /// layout (little-endian integers, lengths before bytes); on every strict prefix it
        /// reports truncation at an offset inside the prefix instead of misreading; on
        /// arbitrary bytes it never panics.
        #[test]
        fn reader_and_writer_agree(fields in prop::collection::vec(arb_field(), 0..8), junk in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut buf = Vec::new();
            let mut w = Writer::new(&mut buf);
            let mut oracle = Vec::new();
            for field in &fields {
                match field {
                    Field::U8(v) => { w.u8(*v); oracle.push(*v) }
                    Field::U32(v) => { w.u32(*v); oracle.extend(v.to_le_bytes()) }
                    Field::U64(v) => { w.u64(*v); oracle.extend(v.to_le_bytes()) }
                    Field::U32Prefixed(b) => {
                        w.u32_prefixed(b);
                        oracle.extend((b.len() as u32).to_le_bytes());
                        oracle.extend(b);
                    }
                    Field::U64Prefixed(b) => {
                        w.u64_prefixed(b);
                        oracle.extend((b.len() as u64).to_le_bytes());
                        oracle.extend(b);
                    }
                }
            }
            prop_assert_eq!(&buf, &oracle);
            let mut r = Reader::new(&buf);
            for field in &fields {
                prop_assert_eq!(&read_field(&mut r, field).unwrap(), field);
            }
            prop_assert_eq!(r.remaining(), 0);
            for cut in 0..buf.len() {
                let mut r = Reader::new(&buf[..cut]);
                let error = fields.iter().find_map(|f| read_field(&mut r, f).err());
                prop_assert!(error.is_some_and(|e| e.offset <= cut), "cut {}", cut);
            }
            let mut r = Reader::new(&junk);
            for field in fields.iter().cycle().take(16) {
                let _ = read_field(&mut r, field);
            }
        }

        /// Every message survives encode → decode unchanged, and `encoded_len` is exact.
        #[test]
        fn round_trip(from in any::<u64>(), to in any::<u64>(), term in any::<u64>(), body in arb_body()) {
            let m = Message { from: NodeId(from), to: NodeId(to), term: Term(term), body };
            let mut buf = Vec::new();
            encode(&m, &mut buf);
            prop_assert_eq!(buf.len(), encoded_len(&m));
            prop_assert_eq!(decode(&buf).unwrap(), m.clone());
            // Shared: the same message, each entry's bytes a slice of the frame itself.
            let frame = SharedBytes::from(buf);
            let shared = decode_shared(&frame).unwrap();
            if let Body::Append { entries, .. } = &shared.body {
                let range = frame.as_ptr_range();
                for e in entries.iter().filter(|e| !e.data.is_empty()) {
                    prop_assert!(range.contains(&e.data.as_ptr()), "entry {} was copied", e.index);
                }
            }
            prop_assert_eq!(shared, m);
        }

        /// Arbitrary bytes never panic the decoder, and every strict prefix of a valid
        /// encoding is refused rather than misread.
        #[test]
        fn garbage_and_prefixes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..256), body in arb_body()) {
            let _ = decode(&bytes);
            let m = Message { from: NodeId(1), to: NodeId(2), term: Term(3), body };
            let mut buf = Vec::new();
            encode(&m, &mut buf);
            for cut in 0..buf.len() {
                prop_assert!(decode(&buf[..cut]).is_err());
                prop_assert!(decode_shared(&SharedBytes::copy_from_slice(&buf[..cut])).is_err());
            }
        }
    }
}
