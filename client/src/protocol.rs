//! The client protocol and the command encoding, as specified in `client/FORMAT.md`.
//!
//! Clients speak to any node over the transport's client role: a [`Request`] frame out, a
//! [`Response`] frame back, matched by `request_id`. Writes carry a client id and sequence
//! number, which the replicated state machine uses to apply a retried write exactly once.
//! Decoders are pure, bound every allocation by the bytes present, and never panic.

use raft::codec::{Reader, Truncated, Writer};
use std::fmt;

/// Transport frame kind of a Raft message between nodes.
pub const FRAME_RAFT: u8 = 1;
/// Transport frame kind of a node's hash of its store at a checkpoint, sent to its peers
/// ([`CheckpointReport`]).
pub const FRAME_CHECKPOINT: u8 = 2;
/// Transport frame kind of a client request.
pub const FRAME_REQUEST: u8 = 10;
/// Transport frame kind of a response to a client.
pub const FRAME_RESPONSE: u8 = 11;

/// Keys and values are at most this long.
pub const KEY_BYTES_MAX: usize = 64 << 10;
/// Values are at most this long.
pub const VALUE_BYTES_MAX: usize = 1 << 20;
/// A backup chunk ([`Outcome::Backup`]) carries at most this many bytes, so a backup of any
/// size travels in frames well under the transport's client frame limit.
pub const BACKUP_CHUNK_BYTES_MAX: usize = 1 << 20;

/// A write to the key-value store, as replicated in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Set `key` to `new` if its value is `expected` (`None`: the key is absent).
    Cas {
        /// The key.
        key: Vec<u8>,
        /// The value the key must hold now.
        expected: Option<Vec<u8>>,
        /// The value to set.
        new: Vec<u8>,
    },
    /// Changes nothing, not even the client's session: every node, applying it, records
    /// the hash of its store at exactly this log index, so that nodes can compare their
    /// stores at the same point (see `raftctl check consistency`).
    Checkpoint,
}

/// A command in the log: a write tagged with its client session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command {
    /// The client's session id (random, chosen by the client).
    pub client_id: u64,
    /// The client's sequence number for this write; retries reuse it.
    pub seq: u64,
    /// What to do.
    pub write: Write,
}

/// A [`Write`] that borrows its keys and values from the bytes it was decoded from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteRef<'a> {
    /// Set `key` to `value`.
    Put {
        /// The key.
        key: &'a [u8],
        /// The value.
        value: &'a [u8],
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: &'a [u8],
    },
    /// Set `key` to `new` if its value is `expected`.
    Cas {
        /// The key.
        key: &'a [u8],
        /// The value the key must hold now (`None`: the key is absent).
        expected: Option<&'a [u8]>,
        /// The value to set.
        new: &'a [u8],
    },
    /// See [`Write::Checkpoint`].
    Checkpoint,
}

/// A [`Command`] that borrows from the bytes it was decoded from: what a node applies from
/// its log without copying keys and values twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandRef<'a> {
    /// The client's session id.
    pub client_id: u64,
    /// The client's sequence number for this write.
    pub seq: u64,
    /// What to do.
    pub write: WriteRef<'a>,
}

impl<'a> From<&'a Command> for CommandRef<'a> {
    fn from(c: &'a Command) -> CommandRef<'a> {
        let write = match &c.write {
            Write::Put { key, value } => WriteRef::Put { key, value },
            Write::Delete { key } => WriteRef::Delete { key },
            Write::Cas { key, expected, new } => WriteRef::Cas {
                key,
                expected: expected.as_deref(),
                new,
            },
            Write::Checkpoint => WriteRef::Checkpoint,
        };
        CommandRef {
            client_id: c.client_id,
            seq: c.seq,
            write,
        }
    }
}

impl CommandRef<'_> {
    /// An owned copy.
    pub fn to_command(&self) -> Command {
        let write = match self.write {
            WriteRef::Put { key, value } => Write::Put {
                key: key.to_vec(),
                value: value.to_vec(),
            },
            WriteRef::Delete { key } => Write::Delete { key: key.to_vec() },
            WriteRef::Cas { key, expected, new } => Write::Cas {
                key: key.to_vec(),
                expected: expected.map(<[u8]>::to_vec),
                new: new.to_vec(),
            },
            WriteRef::Checkpoint => Write::Checkpoint,
        };
        Command {
            client_id: self.client_id,
            seq: self.seq,
            write,
        }
    }
}

/// Transport faults to switch on a node at run time (`raftctl fault`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FaultSpec {
    /// Percent of outgoing peer frames dropped.
    pub drop_percent: f64,
    /// Delay range for peer frames, in milliseconds.
    pub delay_ms: Option<(u64, u64)>,
    /// Peers cut off in both directions.
    pub partition: Vec<u64>,
}

/// What a client asks.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// A replicated write.
    Write(Command),
    /// A linearizable read (ReadIndex).
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// The node's status as JSON.
    Status,
    /// Take a snapshot now.
    Snapshot,
    /// Hand leadership to this node (asked of the leader).
    TransferLeader {
        /// The target node.
        target: u64,
    },
    /// Set (or with the default value, clear) the transport's fault layer.
    Fault(FaultSpec),
    /// Stop the node: gracefully, or at once like kill -9.
    Shutdown {
        /// Abort without flushing anything.
        crash: bool,
    },
    /// The hash of the node's store at a checkpoint ([`Write::Checkpoint`]).
    Checkpoint {
        /// The checkpoint's log index; 0 asks for the node's latest.
        index: u64,
    },
    /// A membership change, asked of the leader; answered once the configuration it leads to
    /// is committed (after the joint configuration, for a change of voters).
    ChangeMembers {
        /// What to do.
        change: MemberOp,
        /// The node.
        id: u64,
        /// Where it listens (`host:port`), for [`MemberOp::AddLearner`]; empty otherwise.
        address: String,
    },
    /// A backup of the store: `backup_id` 0 asks the leader to start one (a snapshot of its
    /// store at its applied index, prepared off its event loop); then the chunk at `offset`
    /// of backup `backup_id`, asked of the same node (see `client/FORMAT.md`).
    Backup {
        /// The backup, or 0 to start one.
        backup_id: u64,
        /// The first byte wanted.
        offset: u64,
    },
}

impl Op {
    /// Whether this is an admin operation: one that stops, reshapes or exports the cluster
    /// (a graceful or crash stop, a snapshot, a backup of the whole store, a leadership
    /// transfer, a membership change, fault injection). Reads, writes, status and
    /// checkpoint hashes need only client rights.
    pub fn is_admin(&self) -> bool {
        match self {
            Op::Snapshot
            | Op::TransferLeader { .. }
            | Op::Fault(_)
            | Op::Shutdown { .. }
            | Op::ChangeMembers { .. }
            | Op::Backup { .. } => true,
            Op::Write(_) | Op::Get { .. } | Op::Status | Op::Checkpoint { .. } => false,
        }
    }
}

/// The membership changes [`Op::ChangeMembers`] asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberOp {
    /// Add a node as a learner (it receives the log, never votes).
    AddLearner = 1,
    /// Make a learner a voter; refused while it is far behind the leader's log.
    Promote = 2,
    /// Remove a voter or a learner.
    Remove = 3,
}

impl MemberOp {
    fn from_u8(value: u8) -> Option<MemberOp> {
        match value {
            1 => Some(MemberOp::AddLearner),
            2 => Some(MemberOp::Promote),
            3 => Some(MemberOp::Remove),
            _ => None,
        }
    }
}

/// One answer to [`Op::Backup`]: where the backup stands and, once it is ready, a chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupChunk {
    /// The backup's id, for the next requests.
    pub backup_id: u64,
    /// The snapshot's bytes are ready; until then `total_bytes`, `crc` and `data` are 0 and
    /// empty, and the client asks again.
    pub ready: bool,
    /// The store is the state right after applying this log index...
    pub index: u64,
    /// ...whose entry has this term.
    pub term: u64,
    /// The size of the snapshot's bytes (`raftd/FORMAT.md`).
    pub total_bytes: u64,
    /// CRC-32 (IEEE) of all of them.
    pub crc: u32,
    /// Where `data` starts.
    pub offset: u64,
    /// At most [`BACKUP_CHUNK_BYTES_MAX`] bytes from `offset` (fewer only at the end).
    pub data: Vec<u8>,
}

/// What a node knows of its hash at a checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointHash {
    /// The hash of its store right after applying the checkpoint.
    Known(u64),
    /// Not known yet: the node has not applied that index yet, or is still hashing.
    Pending,
    /// The node has no record of a checkpoint at that index: it is no checkpoint, the node
    /// skipped it (it installed a snapshot past it, or applied it before its last restart),
    /// or it is older than the checkpoints the node keeps.
    Missing,
}

/// A node's hash of its store at a checkpoint, sent to every peer (frame kind
/// [`FRAME_CHECKPOINT`]) so that each node can compare the cluster's hashes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointReport {
    /// The checkpoint's log index.
    pub index: u64,
    /// The sender's hash of its store at that index.
    pub hash: u64,
}

/// A request frame's body.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// Echoed in the response.
    pub request_id: u64,
    /// The operation.
    pub op: Op,
}

/// A response frame's body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The request it answers.
    pub request_id: u64,
    /// The outcome.
    pub outcome: Outcome,
}

/// The outcome of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A write committed and applied at `index` in `term`.
    Written {
        /// Log index.
        index: u64,
        /// Term.
        term: u64,
    },
    /// A compare-and-swap whose expected value did not match; nothing was written.
    CasMismatch {
        /// The key's value when the command was applied.
        current: Option<Vec<u8>>,
        /// Where the command was applied.
        index: u64,
    },
    /// The value read (`None`: no such key).
    Value(Option<Vec<u8>>),
    /// Done (snapshot, transfer, fault, shutdown); `detail` says what happened.
    Done {
        /// A human-readable detail.
        detail: String,
    },
    /// The status document, JSON.
    Status(String),
    /// This node is not the leader; ask `leader` at `address` (0 and "" when unknown).
    NotLeader {
        /// The leader's id.
        leader: u64,
        /// The leader's client address.
        address: String,
    },
    /// Definitely not done; retrying may succeed (no leader, back-pressure, lost leadership
    /// before a read was confirmed, a write superseded by a new leader).
    Unavailable {
        /// Why.
        reason: String,
    },
    /// Refused for good (bad request).
    Refused {
        /// Why.
        reason: String,
    },
    /// The answer to [`Op::Checkpoint`].
    Checkpoint {
        /// The checkpoint's log index (for a request of the latest: the latest, 0 when the
        /// node has none).
        index: u64,
        /// The node's applied index when it answered.
        applied: u64,
        /// The hash, or why there is none.
        hash: CheckpointHash,
    },
    /// The answer to [`Op::Backup`].
    Backup(BackupChunk),
}

/// Why bytes did not decode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(pub String);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DecodeError {}

impl From<Truncated> for DecodeError {
    fn from(truncated: Truncated) -> DecodeError {
        DecodeError(format!("truncated at {}", truncated.field))
    }
}

// ----- encoding -----

const OP_WRITE: u8 = 1;
const OP_GET: u8 = 2;
const OP_STATUS: u8 = 3;
const OP_SNAPSHOT: u8 = 4;
const OP_TRANSFER: u8 = 5;
const OP_FAULT: u8 = 6;
const OP_SHUTDOWN: u8 = 7;
const OP_CHECKPOINT: u8 = 8;
const OP_BACKUP: u8 = 9;
const OP_CHANGE_MEMBERS: u8 = 10;

const WRITE_PUT: u8 = 1;
const WRITE_DELETE: u8 = 2;
const WRITE_CAS: u8 = 3;
const WRITE_CHECKPOINT: u8 = 4;

const OUT_WRITTEN: u8 = 0;
const OUT_CAS_MISMATCH: u8 = 1;
const OUT_VALUE: u8 = 2;
const OUT_DONE: u8 = 3;
const OUT_STATUS: u8 = 4;
const OUT_NOT_LEADER: u8 = 5;
const OUT_UNAVAILABLE: u8 = 6;
const OUT_REFUSED: u8 = 7;
const OUT_CHECKPOINT: u8 = 8;
const OUT_BACKUP: u8 = 9;

const HASH_KNOWN: u8 = 0;
const HASH_PENDING: u8 = 1;
const HASH_MISSING: u8 = 2;

/// Writes `b` as `opt`: a tag, 0 for none, 1 followed by `bytes` (a `u32` length first).
fn put_opt(w: &mut Writer<'_>, b: &Option<Vec<u8>>) {
    match b {
        None => w.u8(0),
        Some(b) => {
            w.u8(1);
            w.u32_prefixed(b);
        }
    }
}

/// Reads `bytes` of at most `max` bytes, borrowed.
fn get_slice<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
    max: usize,
) -> Result<&'a [u8], DecodeError> {
    let len = r.u32(what)? as usize;
    if len > max {
        return Err(DecodeError(format!("{what} of {len} bytes exceeds {max}")));
    }
    Ok(r.bytes(len, what)?)
}

/// Reads `bytes` of at most `max` bytes.
fn get_bytes(r: &mut Reader<'_>, what: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
    get_slice(r, what, max).map(<[u8]>::to_vec)
}

/// Reads `bytes` holding UTF-8 text.
fn get_string(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(get_bytes(r, what, 16 << 20)?)
        .map_err(|_| DecodeError(format!("{what} is not UTF-8")))
}

/// Reads `opt` holding at most `max` bytes, borrowed.
fn get_opt_slice<'a>(
    r: &mut Reader<'a>,
    what: &'static str,
    max: usize,
) -> Result<Option<&'a [u8]>, DecodeError> {
    match r.u8(what)? {
        0 => Ok(None),
        1 => Ok(Some(get_slice(r, what, max)?)),
        t => Err(DecodeError(format!("bad option tag {t} at {what}"))),
    }
}

/// Reads `opt` holding at most `max` bytes.
fn get_opt(
    r: &mut Reader<'_>,
    what: &'static str,
    max: usize,
) -> Result<Option<Vec<u8>>, DecodeError> {
    Ok(get_opt_slice(r, what, max)?.map(<[u8]>::to_vec))
}

/// Fails unless every byte was read.
fn finish(r: &Reader<'_>) -> Result<(), DecodeError> {
    match r.remaining() {
        0 => Ok(()),
        n => Err(DecodeError(format!("{n} bytes after the end"))),
    }
}

fn put_command(w: &mut Writer<'_>, c: &Command) {
    w.u64(c.client_id);
    w.u64(c.seq);
    match &c.write {
        Write::Put { key, value } => {
            w.u8(WRITE_PUT);
            w.u32_prefixed(key);
            w.u32_prefixed(value);
        }
        Write::Delete { key } => {
            w.u8(WRITE_DELETE);
            w.u32_prefixed(key);
        }
        Write::Cas { key, expected, new } => {
            w.u8(WRITE_CAS);
            w.u32_prefixed(key);
            put_opt(w, expected);
            w.u32_prefixed(new);
        }
        Write::Checkpoint => w.u8(WRITE_CHECKPOINT),
    }
}

fn get_command<'a>(r: &mut Reader<'a>) -> Result<CommandRef<'a>, DecodeError> {
    let client_id = r.u64("client_id")?;
    let seq = r.u64("seq")?;
    let write = match r.u8("write kind")? {
        WRITE_PUT => WriteRef::Put {
            key: get_slice(r, "key", KEY_BYTES_MAX)?,
            value: get_slice(r, "value", VALUE_BYTES_MAX)?,
        },
        WRITE_DELETE => WriteRef::Delete {
            key: get_slice(r, "key", KEY_BYTES_MAX)?,
        },
        WRITE_CAS => WriteRef::Cas {
            key: get_slice(r, "key", KEY_BYTES_MAX)?,
            expected: get_opt_slice(r, "expected", VALUE_BYTES_MAX)?,
            new: get_slice(r, "new", VALUE_BYTES_MAX)?,
        },
        WRITE_CHECKPOINT => WriteRef::Checkpoint,
        k => return Err(DecodeError(format!("unknown write kind {k}"))),
    };
    Ok(CommandRef {
        client_id,
        seq,
        write,
    })
}

impl Command {
    /// The bytes stored in a log entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        put_command(&mut w, self);
        out
    }

    /// Decodes a log entry's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Command, DecodeError> {
        CommandRef::decode(bytes).map(|c| c.to_command())
    }
}

impl<'a> CommandRef<'a> {
    /// Decodes a log entry's bytes, borrowing keys and values from them.
    pub fn decode(bytes: &'a [u8]) -> Result<CommandRef<'a>, DecodeError> {
        let mut r = Reader::new(bytes);
        let c = get_command(&mut r)?;
        finish(&r)?;
        Ok(c)
    }
}

impl Request {
    /// When `body` is a write request: its request id, its command and the command's bytes,
    /// which are
    /// exactly what the log stores (checked to decode as [`Request::decode`] would), so a
    /// node can propose them without decoding and encoding the command again. `None` for
    /// any other request.
    #[allow(clippy::type_complexity)]
    pub fn split_write(body: &[u8]) -> Option<Result<(u64, CommandRef<'_>, &[u8]), DecodeError>> {
        let mut r = Reader::new(body);
        let request_id = r.u64("request_id").ok()?;
        if r.u8("op").ok()? != OP_WRITE {
            return None;
        }
        let bytes = &body[body.len() - r.remaining()..];
        Some(CommandRef::decode(bytes).map(|command| (request_id, command, bytes)))
    }

    /// The frame body.
    pub fn encode(&self) -> Vec<u8> {
        Request::encode_parts(self.request_id, &self.op)
    }

    /// The frame body of a request made of these parts, for a client that keeps `op` to
    /// send it again.
    pub fn encode_parts(request_id: u64, op: &Op) -> Vec<u8> {
        let mut out = Vec::new();
        let mut w = Writer::new(&mut out);
        w.u64(request_id);
        match op {
            Op::Write(c) => {
                w.u8(OP_WRITE);
                put_command(&mut w, c);
            }
            Op::Get { key } => {
                w.u8(OP_GET);
                w.u32_prefixed(key);
            }
            Op::Status => w.u8(OP_STATUS),
            Op::Snapshot => w.u8(OP_SNAPSHOT),
            Op::TransferLeader { target } => {
                w.u8(OP_TRANSFER);
                w.u64(*target);
            }
            Op::Fault(f) => {
                w.u8(OP_FAULT);
                w.u64(f.drop_percent.to_bits());
                match f.delay_ms {
                    None => w.u8(0),
                    Some((lo, hi)) => {
                        w.u8(1);
                        w.u64(lo);
                        w.u64(hi);
                    }
                }
                w.u64(f.partition.len() as u64);
                for p in &f.partition {
                    w.u64(*p);
                }
            }
            Op::Shutdown { crash } => {
                w.u8(OP_SHUTDOWN);
                w.u8(u8::from(*crash));
            }
            Op::Checkpoint { index } => {
                w.u8(OP_CHECKPOINT);
                w.u64(*index);
            }
            Op::Backup { backup_id, offset } => {
                w.u8(OP_BACKUP);
                w.u64(*backup_id);
                w.u64(*offset);
            }
            Op::ChangeMembers {
                change,
                id,
                address,
            } => {
                w.u8(OP_CHANGE_MEMBERS);
                w.u8(*change as u8);
                w.u64(*id);
                w.u32_prefixed(address.as_bytes());
            }
        }
        out
    }

    /// Decodes a frame body.
    pub fn decode(bytes: &[u8]) -> Result<Request, DecodeError> {
        let mut r = Reader::new(bytes);
        let request_id = r.u64("request_id")?;
        let op = match r.u8("op")? {
            OP_WRITE => Op::Write(get_command(&mut r)?.to_command()),
            OP_GET => Op::Get {
                key: get_bytes(&mut r, "key", KEY_BYTES_MAX)?,
            },
            OP_STATUS => Op::Status,
            OP_SNAPSHOT => Op::Snapshot,
            OP_TRANSFER => Op::TransferLeader {
                target: r.u64("target")?,
            },
            OP_FAULT => {
                let drop_percent = f64::from_bits(r.u64("drop")?);
                if !(0.0..=100.0).contains(&drop_percent) {
                    return Err(DecodeError(format!("drop {drop_percent} not in 0..=100")));
                }
                let delay_ms = match r.u8("delay tag")? {
                    0 => None,
                    1 => Some((r.u64("delay min")?, r.u64("delay max")?)),
                    t => return Err(DecodeError(format!("bad delay tag {t}"))),
                };
                let n = r.u64("partition count")?;
                if n > 4096 {
                    return Err(DecodeError(format!("partition of {n} nodes")));
                }
                let mut partition = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    partition.push(r.u64("partition id")?);
                }
                Op::Fault(FaultSpec {
                    drop_percent,
                    delay_ms,
                    partition,
                })
            }
            OP_SHUTDOWN => Op::Shutdown {
                crash: r.u8("crash")? != 0,
            },
            OP_CHECKPOINT => Op::Checkpoint {
                index: r.u64("index")?,
            },
            OP_BACKUP => Op::Backup {
                backup_id: r.u64("backup_id")?,
                offset: r.u64("offset")?,
            },
            OP_CHANGE_MEMBERS => {
                let change = r.u8("change")?;
                let change = MemberOp::from_u8(change)
                    .ok_or_else(|| DecodeError(format!("unknown membership change {change}")))?;
                let id = r.u64("id")?;
                let address = String::from_utf8(r.u32_prefixed("address")?.to_vec())
                    .map_err(|_| DecodeError("the address is not UTF-8".into()))?;
                Op::ChangeMembers {
                    change,
                    id,
                    address,
                }
            }
            k => return Err(DecodeError(format!("unknown op {k}"))),
        };
        finish(&r)?;
        Ok(Request { request_id, op })
    }
}

impl Response {
    /// The frame body.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }

    /// Appends the frame body to `out` (a node reuses one buffer for every reply).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut w = Writer::new(out);
        w.u64(self.request_id);
        match &self.outcome {
            Outcome::Written { index, term } => {
                w.u8(OUT_WRITTEN);
                w.u64(*index);
                w.u64(*term);
            }
            Outcome::CasMismatch { current, index } => {
                w.u8(OUT_CAS_MISMATCH);
                put_opt(&mut w, current);
                w.u64(*index);
            }
            Outcome::Value(v) => {
                w.u8(OUT_VALUE);
                put_opt(&mut w, v);
            }
            Outcome::Done { detail } => {
                w.u8(OUT_DONE);
                w.u32_prefixed(detail.as_bytes());
            }
            Outcome::Status(json) => {
                w.u8(OUT_STATUS);
                w.u32_prefixed(json.as_bytes());
            }
            Outcome::NotLeader { leader, address } => {
                w.u8(OUT_NOT_LEADER);
                w.u64(*leader);
                w.u32_prefixed(address.as_bytes());
            }
            Outcome::Unavailable { reason } => {
                w.u8(OUT_UNAVAILABLE);
                w.u32_prefixed(reason.as_bytes());
            }
            Outcome::Refused { reason } => {
                w.u8(OUT_REFUSED);
                w.u32_prefixed(reason.as_bytes());
            }
            Outcome::Checkpoint {
                index,
                applied,
                hash,
            } => {
                w.u8(OUT_CHECKPOINT);
                w.u64(*index);
                w.u64(*applied);
                let (state, value) = match hash {
                    CheckpointHash::Known(h) => (HASH_KNOWN, *h),
                    CheckpointHash::Pending => (HASH_PENDING, 0),
                    CheckpointHash::Missing => (HASH_MISSING, 0),
                };
                w.u8(state);
                w.u64(value);
            }
            Outcome::Backup(chunk) => {
                w.u8(OUT_BACKUP);
                w.u64(chunk.backup_id);
                w.u8(u8::from(chunk.ready));
                w.u64(chunk.index);
                w.u64(chunk.term);
                w.u64(chunk.total_bytes);
                w.u32(chunk.crc);
                w.u64(chunk.offset);
                w.u32_prefixed(&chunk.data);
            }
        }
    }

    /// Decodes a frame body.
    pub fn decode(bytes: &[u8]) -> Result<Response, DecodeError> {
        let mut r = Reader::new(bytes);
        let request_id = r.u64("request_id")?;
        let outcome = match r.u8("outcome")? {
            OUT_WRITTEN => Outcome::Written {
                index: r.u64("index")?,
                term: r.u64("term")?,
            },
            OUT_CAS_MISMATCH => Outcome::CasMismatch {
                current: get_opt(&mut r, "current", VALUE_BYTES_MAX)?,
                index: r.u64("index")?,
            },
            OUT_VALUE => Outcome::Value(get_opt(&mut r, "value", VALUE_BYTES_MAX)?),
            OUT_DONE => Outcome::Done {
                detail: get_string(&mut r, "detail")?,
            },
            OUT_STATUS => Outcome::Status(get_string(&mut r, "status")?),
            OUT_NOT_LEADER => Outcome::NotLeader {
                leader: r.u64("leader")?,
                address: get_string(&mut r, "address")?,
            },
            OUT_UNAVAILABLE => Outcome::Unavailable {
                reason: get_string(&mut r, "reason")?,
            },
            OUT_REFUSED => Outcome::Refused {
                reason: get_string(&mut r, "reason")?,
            },
            OUT_CHECKPOINT => {
                let index = r.u64("index")?;
                let applied = r.u64("applied")?;
                let state = r.u8("hash state")?;
                let value = r.u64("hash")?;
                let hash = match state {
                    HASH_KNOWN => CheckpointHash::Known(value),
                    HASH_PENDING => CheckpointHash::Pending,
                    HASH_MISSING => CheckpointHash::Missing,
                    s => return Err(DecodeError(format!("unknown hash state {s}"))),
                };
                Outcome::Checkpoint {
                    index,
                    applied,
                    hash,
                }
            }
            OUT_BACKUP => Outcome::Backup(BackupChunk {
                backup_id: r.u64("backup_id")?,
                ready: r.u8("ready")? != 0,
                index: r.u64("index")?,
                term: r.u64("term")?,
                total_bytes: r.u64("total_bytes")?,
                crc: r.u32("crc")?,
                offset: r.u64("offset")?,
                data: get_bytes(&mut r, "data", BACKUP_CHUNK_BYTES_MAX)?,
            }),
            k => return Err(DecodeError(format!("unknown outcome {k}"))),
        };
        finish(&r)?;
        Ok(Response {
            request_id,
            outcome,
        })
    }
}

impl CheckpointReport {
    /// The frame body: `index u64 | hash u64`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        let mut w = Writer::new(&mut out);
        w.u64(self.index);
        w.u64(self.hash);
        out
    }

    /// Decodes a frame body.
    pub fn decode(bytes: &[u8]) -> Result<CheckpointReport, DecodeError> {
        let mut r = Reader::new(bytes);
        let report = CheckpointReport {
            index: r.u64("index")?,
            hash: r.u64("hash")?,
        };
        finish(&r)?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..16)
    }

    fn arb_command() -> impl Strategy<Value = Command> {
        let write = prop_oneof![
            (arb_bytes(), arb_bytes()).prop_map(|(key, value)| Write::Put { key, value }),
            arb_bytes().prop_map(|key| Write::Delete { key }),
            (arb_bytes(), prop::option::of(arb_bytes()), arb_bytes())
                .prop_map(|(key, expected, new)| Write::Cas { key, expected, new }),
            Just(Write::Checkpoint),
        ];
        (any::<u64>(), any::<u64>(), write).prop_map(|(client_id, seq, write)| Command {
            client_id,
            seq,
            write,
        })
    }

    proptest! {
        /// Commands and requests survive encode → decode; any byte string decodes to a
        /// value or an error, never a panic.
        #[test]
        fn round_trips_and_garbage(c in arb_command(), id in any::<u64>(), junk in prop::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(Command::decode(&c.encode()).unwrap(), c.clone());
            let r = Request { request_id: id, op: Op::Write(c) };
            prop_assert_eq!(Request::decode(&r.encode()).unwrap(), r);
            let _ = Request::decode(&junk);
            let _ = Response::decode(&junk);
            let _ = Command::decode(&junk);
            let _ = CheckpointReport::decode(&junk);
        }
    }

    /// Checks that each message encodes to its golden bytes (in hex) and decodes back.
    fn check_golden<T: PartialEq + fmt::Debug>(
        messages: impl ExactSizeIterator<Item = T>,
        golden: &[&str],
        encode: impl Fn(&T) -> Vec<u8>,
        decode: impl Fn(&[u8]) -> Result<T, DecodeError>,
    ) {
        assert_eq!(messages.len(), golden.len());
        for (message, want) in messages.zip(golden) {
            let bytes = encode(&message);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(&hex, want, "{message:?}");
            assert_eq!(decode(&bytes).unwrap(), message);
        }
    }

    /// The bytes of a request of every op (every write kind, both shapes of a cas and a
    /// fault), a response of every outcome (every state of a checkpoint's hash) and a
    /// checkpoint report, as FORMAT.md lays them out: proves the encoding does not change by
    /// a single byte, and that these bytes decode back. The bytes of the older kinds are the
    /// ones from before checkpoints existed, unchanged.
    #[test]
    fn golden_bytes() {
        let write = |write| {
            Op::Write(Command {
                client_id: 0x0102,
                seq: 0x0304,
                write,
            })
        };
        let ops = [
            write(Write::Put {
                key: b"k".to_vec(),
                value: b"vv".to_vec(),
            }),
            write(Write::Delete { key: b"d".to_vec() }),
            write(Write::Cas {
                key: b"c".to_vec(),
                expected: None,
                new: b"n".to_vec(),
            }),
            write(Write::Cas {
                key: b"c".to_vec(),
                expected: Some(b"e".to_vec()),
                new: Vec::new(),
            }),
            Op::Get { key: b"g".to_vec() },
            Op::Status,
            Op::Snapshot,
            Op::TransferLeader { target: 3 },
            Op::Fault(FaultSpec {
                drop_percent: 12.5,
                delay_ms: Some((1, 5)),
                partition: vec![2, 3],
            }),
            Op::Fault(FaultSpec::default()),
            Op::Shutdown { crash: true },
            write(Write::Checkpoint),
            Op::Checkpoint { index: 0x39 },
            Op::Backup {
                backup_id: 7,
                offset: 0x100,
            },
        ];
        let requests = [
            "000a000000000000010201000000000000040300000000000001010000006b020000007676",
            "010a0000000000000102010000000000000403000000000000020100000064",
            "020a000000000000010201000000000000040300000000000003010000006300010000006e",
            "030a000000000000010201000000000000040300000000000003010000006301010000006500000000",
            "040a000000000000020100000067",
            "050a00000000000003",
            "060a00000000000004",
            "070a000000000000050300000000000000",
            "080a0000000000000600000000000029400101000000000000000500000000000000020000000000000002000000000000000300000000000000",
            "090a000000000000060000000000000000000000000000000000",
            "0a0a0000000000000701",
            "0b0a000000000000010201000000000000040300000000000004",
            "0c0a000000000000083900000000000000",
            "0d0a0000000000000907000000000000000001000000000000",
        ];
        let ops = ops.into_iter().enumerate().map(|(i, op)| Request {
            request_id: 0x0a00 + i as u64,
            op,
        });
        check_golden(ops, &requests, Request::encode, Request::decode);
        let outcomes = [
            Outcome::Written { index: 3, term: 2 },
            Outcome::CasMismatch {
                current: Some(b"v".to_vec()),
                index: 9,
            },
            Outcome::CasMismatch {
                current: None,
                index: 9,
            },
            Outcome::Value(None),
            Outcome::Value(Some(b"x".to_vec())),
            Outcome::Done {
                detail: "ok".into(),
            },
            Outcome::Status("{}".into()),
            Outcome::NotLeader {
                leader: 2,
                address: "h:1".into(),
            },
            Outcome::Unavailable { reason: "u".into() },
            Outcome::Refused { reason: "r".into() },
            Outcome::Checkpoint {
                index: 0x39,
                applied: 0x3a,
                hash: CheckpointHash::Known(0x0123_4567_89ab_cdef),
            },
            Outcome::Checkpoint {
                index: 0x39,
                applied: 0x38,
                hash: CheckpointHash::Pending,
            },
            Outcome::Checkpoint {
                index: 0,
                applied: 0x3a,
                hash: CheckpointHash::Missing,
            },
            Outcome::Backup(BackupChunk {
                backup_id: 7,
                ready: true,
                index: 0x39,
                term: 2,
                total_bytes: 3,
                crc: 0x0102_0304,
                offset: 0,
                data: b"abc".to_vec(),
            }),
        ];
        let responses = [
            "000b0000000000000003000000000000000200000000000000",
            "010b000000000000010101000000760900000000000000",
            "020b00000000000001000900000000000000",
            "030b0000000000000200",
            "040b00000000000002010100000078",
            "050b00000000000003020000006f6b",
            "060b00000000000004020000007b7d",
            "070b00000000000005020000000000000003000000683a31",
            "080b000000000000060100000075",
            "090b000000000000070100000072",
            "0a0b0000000000000839000000000000003a0000000000000000efcdab8967452301",
            "0b0b0000000000000839000000000000003800000000000000010000000000000000",
            "0c0b0000000000000800000000000000003a00000000000000020000000000000000",
            "0d0b0000000000000907000000000000000139000000000000000200000000000000030000000000000004030201000000000000000003000000616263",
        ];
        let outcomes = outcomes
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| Response {
                request_id: 0x0b00 + i as u64,
                outcome,
            });
        check_golden(outcomes, &responses, Response::encode, Response::decode);
        let report = CheckpointReport {
            index: 0x39,
            hash: 0x0123_4567_89ab_cdef,
        };
        check_golden(
            [report].into_iter(),
            &["3900000000000000efcdab8967452301"],
            CheckpointReport::encode,
            CheckpointReport::decode,
        );
    }

    #[test]
    fn responses_round_trip() {
        let outcomes = vec![
            Outcome::Written { index: 3, term: 2 },
            Outcome::CasMismatch {
                current: Some(b"v".to_vec()),
                index: 9,
            },
            Outcome::Value(None),
            Outcome::Value(Some(b"x".to_vec())),
            Outcome::Done {
                detail: "ok".into(),
            },
            Outcome::Status("{}".into()),
            Outcome::NotLeader {
                leader: 2,
                address: "127.0.0.1:7002".into(),
            },
            Outcome::Unavailable {
                reason: "no leader".into(),
            },
            Outcome::Refused {
                reason: "bad".into(),
            },
        ];
        for outcome in outcomes {
            let r = Response {
                request_id: 5,
                outcome,
            };
            assert_eq!(Response::decode(&r.encode()).unwrap(), r);
        }
        let f = Request {
            request_id: 1,
            op: Op::Fault(FaultSpec {
                drop_percent: 12.5,
                delay_ms: Some((1, 5)),
                partition: vec![2, 3],
            }),
        };
        assert_eq!(Request::decode(&f.encode()).unwrap(), f);
    }
}
