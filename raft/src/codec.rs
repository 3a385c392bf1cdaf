//! The binary encoding of [`Message`], as specified in `raft/FORMAT.md`.
//!
//! Pure functions over bytes, fixed-width little-endian integers only. The decoder is the
//! gateway for bytes from the network: it validates every length against the bytes actually
//! present before allocating, and never panics on any input.

use crate::message::{Body, ConflictHint, Message};
use crate::types::{Entry, EntryKind, LogIndex, NodeId, SnapshotMeta, Term};
use std::fmt;
use std::sync::Arc;

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
            DecodeError::BadBool(field) => write!(f, "field {field} is not a boolean"),
            DecodeError::TrailingBytes(n) => write!(f, "{n} bytes after the end of the message"),
        }
    }
}

impl std::error::Error for DecodeError {}

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
            Body::Snapshot { data, .. } => 32 + 4 + data.len(),
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
    out.push(kind);
    put_u64(out, message.from.0);
    put_u64(out, message.to.0);
    put_u64(out, message.term.0);
    match &message.body {
        Body::PreVote {
            last_index,
            last_term,
        } => {
            put_u64(out, last_index.0);
            put_u64(out, last_term.0);
        }
        Body::Vote {
            last_index,
            last_term,
            transfer,
        } => {
            put_u64(out, last_index.0);
            put_u64(out, last_term.0);
            out.push(u8::from(*transfer));
        }
        Body::PreVoteResponse { granted } | Body::VoteResponse { granted } => {
            out.push(u8::from(*granted))
        }
        Body::Append {
            prev_index,
            prev_term,
            commit,
            entries,
        } => {
            put_u64(out, prev_index.0);
            put_u64(out, prev_term.0);
            put_u64(out, commit.0);
            put_u32(
                out,
                u32::try_from(entries.len()).expect("entry count fits u32"),
            );
            for entry in entries {
                encode_entry(entry, out);
            }
        }
        Body::AppendResponse { reject, index } => {
            put_u64(out, index.0);
            out.push(u8::from(reject.is_some()));
            let hint = reject.unwrap_or(ConflictHint {
                term: Term(0),
                index: LogIndex(0),
            });
            put_u64(out, hint.term.0);
            put_u64(out, hint.index.0);
        }
        Body::Heartbeat { commit, read_seq } => {
            put_u64(out, commit.0);
            put_u64(out, *read_seq);
        }
        Body::HeartbeatResponse { read_seq } => put_u64(out, *read_seq),
        Body::Snapshot {
            meta,
            offset,
            total_bytes,
            data,
        } => {
            put_u64(out, meta.index.0);
            put_u64(out, meta.term.0);
            put_u64(out, *offset);
            put_u64(out, *total_bytes);
            put_u32(out, u32::try_from(data.len()).expect("chunk fits u32"));
            out.extend_from_slice(data);
        }
        Body::SnapshotResponse {
            index,
            next_offset,
            reject,
        } => {
            put_u64(out, index.0);
            put_u64(out, *next_offset);
            out.push(u8::from(*reject));
        }
        Body::ReadIndex { context } => put_u64(out, *context),
        Body::ReadIndexResponse { context, index } => {
            put_u64(out, *context);
            put_u64(out, index.0);
        }
        Body::TimeoutNow => {}
    }
}

/// Appends the encoding of one entry (also used by storage that wants the same layout).
pub fn encode_entry(entry: &Entry, out: &mut Vec<u8>) {
    put_u64(out, entry.term.0);
    put_u64(out, entry.index.0);
    out.push(entry.kind as u8);
    put_u32(
        out,
        u32::try_from(entry.data.len()).expect("entry data fits u32"),
    );
    out.extend_from_slice(&entry.data);
}

/// Decodes one message that occupies all of `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
    let mut r = Reader { bytes, at: 0 };
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
            transfer: r.bool("transfer")?,
        },
        KIND_PRE_VOTE_RESPONSE => Body::PreVoteResponse {
            granted: r.bool("granted")?,
        },
        KIND_VOTE_RESPONSE => Body::VoteResponse {
            granted: r.bool("granted")?,
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
                entries.push(decode_entry(&mut r)?);
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
            let rejected = r.bool("rejected")?;
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
            let len = r.u32("chunk_len")? as usize;
            let data = r.bytes(len, "chunk")?.to_vec();
            Body::Snapshot {
                meta,
                offset,
                total_bytes,
                data,
            }
        }
        KIND_SNAPSHOT_RESPONSE => Body::SnapshotResponse {
            index: LogIndex(r.u64("index")?),
            next_offset: r.u64("next_offset")?,
            reject: r.bool("reject")?,
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

fn decode_entry(r: &mut Reader<'_>) -> Result<Entry, DecodeError> {
    let term = Term(r.u64("entry_term")?);
    let index = LogIndex(r.u64("entry_index")?);
    let kind_byte = r.u8("entry_kind")?;
    let kind = EntryKind::from_u8(kind_byte).ok_or(DecodeError::UnknownEntryKind(kind_byte))?;
    let len = r.u32("entry_len")? as usize;
    let data = Arc::from(r.bytes(len, "entry_data")?);
    Ok(Entry {
        term,
        index,
        kind,
        data,
    })
}

fn put_u64(out: &mut Vec<u8>, v: u64) {
    out.extend_from_slice(&v.to_le_bytes());
}

fn put_u32(out: &mut Vec<u8>, v: u32) {
    out.extend_from_slice(&v.to_le_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn bytes(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated(field));
        }
        let out = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, field)?[0])
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::BadBool(field)),
        }
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        let b = self.bytes(4, field)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        let b = self.bytes(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
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
            prop::bool::ANY,
            prop::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(|(t, i, noop, data)| Entry {
                term: Term(t),
                index: LogIndex(i),
                kind: if noop {
                    EntryKind::Noop
                } else {
                    EntryKind::Normal
                },
                data: data.into(),
            })
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
                prop::collection::vec(any::<u8>(), 0..64)
            )
                .prop_map(|(i, t, o, n, data)| Body::Snapshot {
                    meta: SnapshotMeta {
                        index: LogIndex(i),
                        term: Term(t)
                    },
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
            data: data.into(),
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
                    offset: 0x20,
                    total_bytes: 0x21,
                    data: b"xyz".to_vec(),
                }),
                "090100000000000000030200000000000007060504000000001e000000000000001f00000000000000200000000000000021000000000000000300000078797a",
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

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Every message survives encode → decode unchanged, and `encoded_len` is exact.
        #[test]
        fn round_trip(from in any::<u64>(), to in any::<u64>(), term in any::<u64>(), body in arb_body()) {
            let m = Message { from: NodeId(from), to: NodeId(to), term: Term(term), body };
            let mut buf = Vec::new();
            encode(&m, &mut buf);
            prop_assert_eq!(buf.len(), encoded_len(&m));
            prop_assert_eq!(decode(&buf).unwrap(), m);
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
            }
        }
    }
}
