//! The wire format: frames and the handshake (see `FORMAT.md` beside `Cargo.toml`).
//!
//! Everything here is pure: encoders append to a `Vec<u8>`, decoders look at a byte slice and
//! never allocate. The event loop and the blocking client both use these functions, so the
//! format has one implementation.

use byteorder::{ByteOrder, LittleEndian};
use std::fmt;
use std::ops::Range;
use subtle::ConstantTimeEq;

// Frame header, mirrored from FORMAT.md as chained offsets.
const LEN_OFFSET: usize = 0;
const CRC_OFFSET: usize = LEN_OFFSET + 4;
const KIND_OFFSET: usize = CRC_OFFSET + 4;
/// Bytes in a frame header: `len: u32 | crc32: u32 | kind: u8`.
pub const HEADER_BYTES: usize = KIND_OFFSET + 1;
const _: () = assert!(HEADER_BYTES == 9);

/// The largest body length the format itself can express. Configured limits must not exceed it.
pub const FRAME_BYTES_LIMIT: usize = u32::MAX as usize;

/// Total bytes on the wire for a frame whose body has `body_len` bytes.
pub fn frame_bytes(body_len: usize) -> usize {
    HEADER_BYTES + body_len
}

/// The CRC-32 (IEEE) of a frame: it covers the length field, the kind and the body, so a
/// corrupted length is caught even when it happens to point at plausible bytes.
fn frame_crc(len_field: &[u8], kind: u8, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len_field);
    hasher.update(&[kind]);
    hasher.update(body);
    hasher.finalize()
}

/// Appends one frame to `out`.
///
/// # Panics
/// If `body` is longer than [`FRAME_BYTES_LIMIT`]; callers check their configured
/// `frame_bytes_max` (which is at most that) before encoding.
pub fn encode_frame(out: &mut Vec<u8>, kind: u8, body: &[u8]) {
    out.reserve(HEADER_BYTES + body.len());
    let start = begin_frame(out);
    out.extend_from_slice(body);
    finish_frame(out, start, kind);
}

/// Starts a frame at the end of `out` (room for its header); returns where it starts. The
/// body is then appended to `out` in place, and [`finish_frame`] closes the frame: a body
/// encoded straight into an outbox is never copied there from another buffer.
pub fn begin_frame(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER_BYTES]);
    start
}

/// Closes the frame begun at `start` (by [`begin_frame`]), whose body is everything after
/// its header: writes the header's length, CRC and `kind`.
///
/// # Panics
/// If the body is longer than [`FRAME_BYTES_LIMIT`] (as [`encode_frame`]).
pub fn finish_frame(out: &mut [u8], start: usize, kind: u8) {
    let (header, body) = out[start..].split_at_mut(HEADER_BYTES);
    assert!(
        body.len() <= FRAME_BYTES_LIMIT,
        "frame body of {} bytes",
        body.len()
    );
    LittleEndian::write_u32(&mut header[LEN_OFFSET..CRC_OFFSET], body.len() as u32);
    let crc = frame_crc(&header[LEN_OFFSET..CRC_OFFSET], kind, body);
    LittleEndian::write_u32(&mut header[CRC_OFFSET..KIND_OFFSET], crc);
    header[KIND_OFFSET] = kind;
}

/// What [`decode`] found at the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// The buffer holds only part of a frame. `needed` is how many bytes the buffer must hold
    /// for the next step: the header size while the header is incomplete, then the whole
    /// frame's size once the header has been validated (so a reader may size its buffer to it).
    NeedMore {
        /// Bytes the buffer must hold, counted from its start.
        needed: usize,
    },
    /// A complete, checksummed frame.
    Frame {
        /// The frame's kind byte, opaque to the transport.
        kind: u8,
        /// Where the body lies in the buffer that was decoded.
        body: Range<usize>,
        /// Bytes this frame occupies from the buffer's start (header and body).
        consumed: usize,
    },
    /// The bytes are not a valid frame; the connection must be closed.
    Error(DecodeError),
}

/// Why bytes are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The length field exceeds the receiver's limit (checked before any body byte is read).
    TooLarge {
        /// The body length announced by the header.
        len: u64,
        /// The receiver's `frame_bytes_max`.
        max: usize,
    },
    /// The checksum does not match the frame's bytes.
    BadCrc {
        /// The checksum carried in the header.
        stored: u32,
        /// The checksum computed over the received bytes.
        computed: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::TooLarge { len, max } => {
                write!(f, "frame body of {len} bytes exceeds the limit of {max}")
            }
            DecodeError::BadCrc { stored, computed } => {
                write!(
                    f,
                    "frame checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes the frame at the start of `buf`, accepting bodies of at most `frame_bytes_max` bytes.
///
/// Pure and allocation-free. The length is checked against `frame_bytes_max` as soon as its four
/// bytes are present, so a reader that sizes its buffer by `NeedMore::needed` never grows it
/// past `HEADER_BYTES + frame_bytes_max`.
pub fn decode(buf: &[u8], frame_bytes_max: usize) -> Decoded {
    if buf.len() < CRC_OFFSET {
        return Decoded::NeedMore {
            needed: HEADER_BYTES,
        };
    }
    let len = LittleEndian::read_u32(&buf[LEN_OFFSET..CRC_OFFSET]) as usize;
    if len > frame_bytes_max {
        return Decoded::Error(DecodeError::TooLarge {
            len: len as u64,
            max: frame_bytes_max,
        });
    }
    let total = HEADER_BYTES + len;
    if buf.len() < total {
        let needed = if buf.len() < HEADER_BYTES {
            HEADER_BYTES
        } else {
            total
        };
        return Decoded::NeedMore { needed };
    }
    let stored = LittleEndian::read_u32(&buf[CRC_OFFSET..KIND_OFFSET]);
    let kind = buf[KIND_OFFSET];
    let body = HEADER_BYTES..total;
    let computed = frame_crc(&buf[LEN_OFFSET..CRC_OFFSET], kind, &buf[body.clone()]);
    if stored != computed {
        return Decoded::Error(DecodeError::BadCrc { stored, computed });
    }
    Decoded::Frame {
        kind,
        body,
        consumed: total,
    }
}

/// [`decode`] for a reader that keeps received bytes in one buffer and consumes them from
/// `*start`: decodes the frame at `buf[*start..]`, and on a frame moves `*start` past it and
/// gives the body's range in `buf` itself (`NeedMore` counts from `*start`, as [`decode`]).
pub fn take_frame(buf: &[u8], start: &mut usize, frame_bytes_max: usize) -> Decoded {
    match decode(&buf[*start..], frame_bytes_max) {
        Decoded::Frame {
            kind,
            body,
            consumed,
        } => {
            let body = *start + body.start..*start + body.end;
            *start += consumed;
            Decoded::Frame {
                kind,
                body,
                consumed,
            }
        }
        other => other,
    }
}

// ---------------------------------------------------------------------------------------------
// Handshake.

/// The protocol version carried in every handshake. Bump it on any incompatible change.
/// 2: Raft messages carry configurations (membership changes; raft/FORMAT.md).
pub const PROTOCOL_VERSION: u16 = 3;
/// First four bytes of every handshake body: `b"RFTD"`.
pub const HANDSHAKE_MAGIC: [u8; 4] = *b"RFTD";
/// Kind byte of the hello frame (first frame from the side that dialed).
pub const KIND_HELLO: u8 = 0x48; // 'H'
/// Kind byte of the welcome frame (first frame from the side that accepted).
pub const KIND_WELCOME: u8 = 0x57; // 'W'

// Hello body offsets. The magic and version come first and never move, so any version can read
// the other side's version and refuse it cleanly.
const HELLO_MAGIC: usize = 0;
const HELLO_VERSION: usize = HELLO_MAGIC + 4;
const HELLO_ROLE: usize = HELLO_VERSION + 2;
const HELLO_CLUSTER_LEN: usize = HELLO_ROLE + 1;
const HELLO_NODE_ID: usize = HELLO_CLUSTER_LEN + 1;
const HELLO_TOKEN_LEN: usize = HELLO_NODE_ID + 8;
const HELLO_FIXED_BYTES: usize = HELLO_TOKEN_LEN + 1;
const _: () = assert!(HELLO_FIXED_BYTES == 17);

/// Longest cluster id, in bytes (its length travels in one byte).
pub const CLUSTER_ID_BYTES_MAX: usize = 255;
/// Longest shared token, in bytes (its length travels in one byte).
pub const TOKEN_BYTES_MAX: usize = 255;
/// Largest hello body. Until the handshake completes a connection's frames are limited to this,
/// so an unauthenticated peer cannot make the receiver buffer `frame_bytes_max` bytes.
pub const HELLO_BYTES_MAX: usize =
    HELLO_FIXED_BYTES + CLUSTER_ID_BYTES_MAX + TOKEN_BYTES_MAX + 1 + ADDRESS_BYTES_MAX;
/// The longest address a hello carries.
pub const ADDRESS_BYTES_MAX: usize = 255;

// Welcome body offsets.
const WELCOME_MAGIC: usize = 0;
const WELCOME_VERSION: usize = WELCOME_MAGIC + 4;
const WELCOME_STATUS: usize = WELCOME_VERSION + 2;
const WELCOME_RESERVED: usize = WELCOME_STATUS + 1;
const WELCOME_NODE_ID: usize = WELCOME_RESERVED + 1;
/// Bytes in a welcome body.
pub const WELCOME_BYTES: usize = WELCOME_NODE_ID + 8;
const _: () = assert!(WELCOME_BYTES == 16 && WELCOME_BYTES <= HELLO_BYTES_MAX);

/// Who opened a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A cluster node, with its id.
    Node(u64),
    /// A client (a tool or an application); clients have no id of their own.
    Client,
}

const ROLE_NODE: u8 = 1;
const ROLE_CLIENT: u8 = 2;

/// The first frame sent by the side that dialed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The dialer's protocol version.
    pub version: u16,
    /// Node or client.
    pub role: Role,
    /// The cluster the dialer believes it belongs to.
    pub cluster_id: Vec<u8>,
    /// The shared token presented (empty when none is configured).
    pub token: Vec<u8>,
    /// Where a node dialing listens (`host:port`, empty for a client or when not known): a
    /// node that joins a cluster learns from it where to answer the leader.
    pub address: Vec<u8>,
}

/// Why a handshake body could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeError {
    /// The body does not start with [`HANDSHAKE_MAGIC`]: the other side is not speaking this
    /// protocol at all.
    BadMagic,
    /// The body is shorter or longer than its fields say.
    BadLength,
    /// The role byte is not one this version knows.
    BadRole(u8),
    /// The status byte of a welcome is not one this version knows.
    BadStatus(u8),
    /// The frame's kind is not the handshake kind expected at this point.
    UnexpectedKind(u8),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::BadMagic => write!(f, "not a raftd handshake (bad magic)"),
            HandshakeError::BadLength => write!(f, "handshake body has a bad length"),
            HandshakeError::BadRole(r) => write!(f, "handshake has unknown role {r}"),
            HandshakeError::BadStatus(s) => write!(f, "welcome has unknown status {s}"),
            HandshakeError::UnexpectedKind(k) => {
                write!(f, "expected a handshake frame, got kind {k:#04x}")
            }
        }
    }
}

impl std::error::Error for HandshakeError {}

impl Hello {
    /// Appends this hello as a complete frame to `out`.
    ///
    /// # Panics
    /// If the cluster id or token exceed their limits (configuration is validated first).
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        assert!(
            self.cluster_id.len() <= CLUSTER_ID_BYTES_MAX,
            "cluster id too long"
        );
        assert!(self.token.len() <= TOKEN_BYTES_MAX, "token too long");
        let mut body = vec![0u8; HELLO_FIXED_BYTES];
        body[HELLO_MAGIC..HELLO_VERSION].copy_from_slice(&HANDSHAKE_MAGIC);
        LittleEndian::write_u16(&mut body[HELLO_VERSION..HELLO_ROLE], self.version);
        let (role, node_id) = match self.role {
            Role::Node(id) => (ROLE_NODE, id),
            Role::Client => (ROLE_CLIENT, 0),
        };
        body[HELLO_ROLE] = role;
        body[HELLO_CLUSTER_LEN] = self.cluster_id.len() as u8;
        LittleEndian::write_u64(&mut body[HELLO_NODE_ID..HELLO_TOKEN_LEN], node_id);
        body[HELLO_TOKEN_LEN] = self.token.len() as u8;
        assert!(self.address.len() <= ADDRESS_BYTES_MAX, "address too long");
        body.extend_from_slice(&self.cluster_id);
        body.extend_from_slice(&self.token);
        body.push(self.address.len() as u8);
        body.extend_from_slice(&self.address);
        encode_frame(out, KIND_HELLO, &body);
    }

    /// Reads a hello from a frame's kind and body.
    ///
    /// A body whose version differs from [`PROTOCOL_VERSION`] is still returned when its
    /// magic is right, with only `version` meaningful beyond what was readable; the caller
    /// compares versions first.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Hello, HandshakeError> {
        if kind != KIND_HELLO {
            return Err(HandshakeError::UnexpectedKind(kind));
        }
        if body.len() < HELLO_ROLE {
            return Err(HandshakeError::BadLength);
        }
        if body[HELLO_MAGIC..HELLO_VERSION] != HANDSHAKE_MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        let version = LittleEndian::read_u16(&body[HELLO_VERSION..HELLO_ROLE]);
        if version != PROTOCOL_VERSION {
            return Ok(Hello {
                version,
                role: Role::Client,
                cluster_id: Vec::new(),
                token: Vec::new(),
                address: Vec::new(),
            });
        }
        if body.len() < HELLO_FIXED_BYTES {
            return Err(HandshakeError::BadLength);
        }
        let cluster_len = body[HELLO_CLUSTER_LEN] as usize;
        let token_len = body[HELLO_TOKEN_LEN] as usize;
        let address_at = HELLO_FIXED_BYTES + cluster_len + token_len;
        let Some(&address_len) = body.get(address_at) else {
            return Err(HandshakeError::BadLength);
        };
        if body.len() != address_at + 1 + address_len as usize {
            return Err(HandshakeError::BadLength);
        }
        let node_id = LittleEndian::read_u64(&body[HELLO_NODE_ID..HELLO_TOKEN_LEN]);
        let role = match body[HELLO_ROLE] {
            ROLE_NODE => Role::Node(node_id),
            ROLE_CLIENT => Role::Client,
            other => return Err(HandshakeError::BadRole(other)),
        };
        let cluster_end = HELLO_FIXED_BYTES + cluster_len;
        Ok(Hello {
            version,
            role,
            cluster_id: body[HELLO_FIXED_BYTES..cluster_end].to_vec(),
            token: body[cluster_end..address_at].to_vec(),
            address: body[address_at + 1..].to_vec(),
        })
    }
}

/// The acceptor's verdict on a hello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The connection is open for frames.
    Accepted,
    /// The protocol versions differ.
    BadVersion,
    /// The cluster ids differ.
    WrongCluster,
    /// The shared token is missing or wrong.
    BadToken,
    /// The dialer claims a node id that is not a configured peer (or is the acceptor's own).
    UnknownNode,
    /// With TLS: the dialer's certificate does not fit the role its hello claims (a node's
    /// certificate that does not name that node's configured host, a missing or foreign
    /// client certificate where client certificates are required).
    Certificate,
}

impl Status {
    fn to_byte(self) -> u8 {
        match self {
            Status::Accepted => 0,
            Status::BadVersion => 1,
            Status::WrongCluster => 2,
            Status::BadToken => 3,
            Status::UnknownNode => 4,
            Status::Certificate => 5,
        }
    }

    fn from_byte(byte: u8) -> Result<Status, HandshakeError> {
        Ok(match byte {
            0 => Status::Accepted,
            1 => Status::BadVersion,
            2 => Status::WrongCluster,
            3 => Status::BadToken,
            4 => Status::UnknownNode,
            5 => Status::Certificate,
            other => return Err(HandshakeError::BadStatus(other)),
        })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Accepted => "accepted",
            Status::BadVersion => "protocol version mismatch",
            Status::WrongCluster => "cluster id mismatch",
            Status::BadToken => "shared token mismatch",
            Status::UnknownNode => "node id is not a configured peer",
            Status::Certificate => "TLS certificate refused for this role",
        })
    }
}

/// The first frame sent by the side that accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Welcome {
    /// The acceptor's protocol version.
    pub version: u16,
    /// The verdict; anything but `Accepted` is followed by the acceptor closing the connection.
    pub status: Status,
    /// The acceptor's node id.
    pub node_id: u64,
}

impl Welcome {
    /// Appends this welcome as a complete frame to `out`.
    pub fn encode_frame(&self, out: &mut Vec<u8>) {
        let mut body = [0u8; WELCOME_BYTES];
        body[WELCOME_MAGIC..WELCOME_VERSION].copy_from_slice(&HANDSHAKE_MAGIC);
        LittleEndian::write_u16(&mut body[WELCOME_VERSION..WELCOME_STATUS], self.version);
        body[WELCOME_STATUS] = self.status.to_byte();
        LittleEndian::write_u64(&mut body[WELCOME_NODE_ID..WELCOME_BYTES], self.node_id);
        encode_frame(out, KIND_WELCOME, &body);
    }

    /// Reads a welcome from a frame's kind and body.
    pub fn decode(kind: u8, body: &[u8]) -> Result<Welcome, HandshakeError> {
        if kind != KIND_WELCOME {
            return Err(HandshakeError::UnexpectedKind(kind));
        }
        if body.len() != WELCOME_BYTES {
            return Err(HandshakeError::BadLength);
        }
        if body[WELCOME_MAGIC..WELCOME_VERSION] != HANDSHAKE_MAGIC {
            return Err(HandshakeError::BadMagic);
        }
        Ok(Welcome {
            version: LittleEndian::read_u16(&body[WELCOME_VERSION..WELCOME_STATUS]),
            status: Status::from_byte(body[WELCOME_STATUS])?,
            node_id: LittleEndian::read_u64(&body[WELCOME_NODE_ID..WELCOME_BYTES]),
        })
    }
}

/// The dialing side of the handshake, its one implementation: the transport's outbound peer
/// connections, the blocking client ([`crate::client::Connection`]) and non-blocking clients
/// (such as `raftd-client`'s) all open their connections with it.
///
/// [`Dialer::new`] checks the settings; [`Dialer::encode_hello`] appends the hello, the
/// first frame to send; the first frame that comes back, decoded with a body limit of
/// [`HELLO_BYTES_MAX`], goes to [`Dialer::welcome`], which says whether the connection is
/// open. A node also checks that the welcome's `node_id` is the peer it meant to dial.
///
/// ```
/// use transport::codec::{decode, Decoded, Dialer, Role, Status, Welcome, HELLO_BYTES_MAX};
///
/// let dialer = Dialer::new(Role::Client, b"prod", b"").unwrap();
/// let mut to_send = Vec::new();
/// dialer.encode_hello(&mut to_send);
/// // ... send it, then read bytes until the first frame is complete:
/// let mut received = Vec::new();
/// Welcome { version: 1, status: Status::Accepted, node_id: 3 }.encode_frame(&mut received);
/// let Decoded::Frame { kind, body, .. } = decode(&received, HELLO_BYTES_MAX) else { panic!() };
/// assert_eq!(dialer.welcome(kind, &received[body]).unwrap().node_id, 3);
/// ```
#[derive(Debug, Clone)]
pub struct Dialer {
    hello: Hello,
}

/// Why a dialed connection did not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialError {
    /// The cluster id or the token is longer than a hello carries; nothing was sent.
    TooLarge {
        /// "cluster id" or "token".
        what: &'static str,
        /// The longest the hello carries.
        max: usize,
    },
    /// The answer is not a well-formed welcome.
    Handshake(HandshakeError),
    /// The acceptor refused the connection: the welcome says why, and its version.
    Refused(Welcome),
}

impl fmt::Display for DialError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DialError::TooLarge { what, max } => write!(f, "{what} is longer than {max} bytes"),
            DialError::Handshake(error) => write!(f, "{error}"),
            DialError::Refused(welcome) => write!(f, "refused: {}", welcome.status),
        }
    }
}

impl std::error::Error for DialError {}

impl Dialer {
    /// The dialer for `role`, presenting `cluster_id` and `token` (empty: none configured).
    pub fn new(role: Role, cluster_id: &[u8], token: &[u8]) -> Result<Dialer, DialError> {
        if cluster_id.len() > CLUSTER_ID_BYTES_MAX {
            return Err(DialError::TooLarge {
                what: "cluster id",
                max: CLUSTER_ID_BYTES_MAX,
            });
        }
        if token.len() > TOKEN_BYTES_MAX {
            return Err(DialError::TooLarge {
                what: "token",
                max: TOKEN_BYTES_MAX,
            });
        }
        Ok(Dialer {
            hello: Hello {
                version: PROTOCOL_VERSION,
                role,
                cluster_id: cluster_id.to_vec(),
                token: token.to_vec(),
                address: Vec::new(),
            },
        })
    }

    /// This dialer also says where its node listens (a node's dialer; see [`Hello::address`]).
    /// An address longer than [`ADDRESS_BYTES_MAX`] is left out.
    pub fn with_address(mut self, address: &str) -> Dialer {
        if address.len() <= ADDRESS_BYTES_MAX {
            self.hello.address = address.as_bytes().to_vec();
        }
        self
    }

    /// Appends the hello, as a complete frame, to `out`.
    pub fn encode_hello(&self, out: &mut Vec<u8>) {
        self.hello.encode_frame(out);
    }

    /// Judges the first frame the acceptor sent: its welcome if it accepted the connection.
    pub fn welcome(&self, kind: u8, body: &[u8]) -> Result<Welcome, DialError> {
        let welcome = Welcome::decode(kind, body).map_err(DialError::Handshake)?;
        if welcome.status != Status::Accepted {
            return Err(DialError::Refused(welcome));
        }
        Ok(welcome)
    }
}

/// Compares two byte strings in time that depends only on their lengths, not their contents,
/// so a wrong token cannot be guessed byte by byte from response times. Strings of different
/// lengths are unequal (found without looking at the bytes: the length of the token is no
/// secret worth hiding, its bytes are). The comparison is `subtle`'s, written so that the
/// optimiser cannot turn it back into an early exit.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

/// Checks a hello against the acceptor's own settings and returns the verdict.
/// `is_peer` says whether a node id is a configured peer other than the acceptor itself.
pub fn judge_hello(
    hello: &Hello,
    cluster_id: &[u8],
    token: &[u8],
    is_peer: impl Fn(u64) -> bool,
) -> Status {
    if hello.version != PROTOCOL_VERSION {
        return Status::BadVersion;
    }
    if hello.cluster_id != cluster_id {
        return Status::WrongCluster;
    }
    if !constant_time_eq(&hello.token, token) {
        return Status::BadToken;
    }
    match hello.role {
        Role::Node(id) if !is_peer(id) => Status::UnknownNode,
        _ => Status::Accepted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frame_round_trip_and_layout() {
        // Proves the header layout matches FORMAT.md: little-endian length, then CRC, then kind.
        let mut out = Vec::new();
        encode_frame(&mut out, 7, b"abc");
        assert_eq!(&out[0..4], &[3, 0, 0, 0]);
        assert_eq!(out[8], 7);
        assert_eq!(&out[9..], b"abc");
        let mut crc = crc32fast::Hasher::new();
        crc.update(&[3, 0, 0, 0, 7, b'a', b'b', b'c']);
        assert_eq!(LittleEndian::read_u32(&out[4..8]), crc.finalize());
        assert_eq!(
            decode(&out, 3),
            Decoded::Frame {
                kind: 7,
                body: 9..12,
                consumed: 12
            }
        );
    }

    #[test]
    fn take_frame_walks_a_buffer() {
        // Proves take_frame reads consecutive frames from one buffer, giving body ranges in
        // that buffer and moving the start past each frame, and stops at a partial one.
        let mut buf = Vec::new();
        encode_frame(&mut buf, 1, b"ab");
        encode_frame(&mut buf, 2, b"cde");
        buf.extend_from_slice(&[9, 0]);
        let mut start = 0;
        let Decoded::Frame { kind, body, .. } = take_frame(&buf, &mut start, 16) else {
            panic!()
        };
        assert_eq!((kind, &buf[body], start), (1, &b"ab"[..], 11));
        let Decoded::Frame { kind, body, .. } = take_frame(&buf, &mut start, 16) else {
            panic!()
        };
        assert_eq!((kind, &buf[body], start), (2, &b"cde"[..], 23));
        assert_eq!(
            take_frame(&buf, &mut start, 16),
            Decoded::NeedMore {
                needed: HEADER_BYTES
            }
        );
        assert_eq!(start, 23);
    }

    #[test]
    fn length_is_checked_before_the_body_arrives() {
        // Proves an oversized length is refused from the first four bytes alone.
        let mut out = Vec::new();
        encode_frame(&mut out, 1, &[0u8; 100]);
        assert!(matches!(
            decode(&out[..4], 99),
            Decoded::Error(DecodeError::TooLarge { len: 100, max: 99 })
        ));
        assert_eq!(
            decode(&out[..3], 99),
            Decoded::NeedMore {
                needed: HEADER_BYTES
            }
        );
        assert_eq!(decode(&out[..9], 100), Decoded::NeedMore { needed: 109 });
        assert_eq!(
            decode(&out[..5], 100),
            Decoded::NeedMore {
                needed: HEADER_BYTES
            }
        );
    }

    #[test]
    fn any_flipped_bit_is_caught() {
        // Proves every single-bit corruption of a small frame is reported, never accepted.
        let mut out = Vec::new();
        encode_frame(&mut out, 9, b"hello, frame");
        for bit in 0..out.len() * 8 {
            let mut bad = out.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            match decode(&bad, 1 << 20) {
                Decoded::Frame { .. } => panic!("bit {bit} flip accepted"),
                Decoded::Error(_) | Decoded::NeedMore { .. } => {}
            }
        }
    }

    #[test]
    fn handshake_round_trip() {
        // Proves hello and welcome survive encode/decode and that the judge applies each rule.
        let hello = Hello {
            version: PROTOCOL_VERSION,
            role: Role::Node(3),
            cluster_id: b"prod".to_vec(),
            token: b"secret".to_vec(),
            address: b"10.0.0.3:7001".to_vec(),
        };
        let mut out = Vec::new();
        hello.encode_frame(&mut out);
        let Decoded::Frame { kind, body, .. } = decode(&out, HELLO_BYTES_MAX) else {
            panic!()
        };
        let back = Hello::decode(kind, &out[body]).unwrap();
        assert_eq!(back, hello);
        assert_eq!(
            judge_hello(&back, b"prod", b"secret", |id| id == 3),
            Status::Accepted
        );
        assert_eq!(
            judge_hello(&back, b"test", b"secret", |_| true),
            Status::WrongCluster
        );
        assert_eq!(
            judge_hello(&back, b"prod", b"secreT", |_| true),
            Status::BadToken
        );
        assert_eq!(judge_hello(&back, b"prod", b"", |_| true), Status::BadToken);
        assert_eq!(
            judge_hello(&back, b"prod", b"secret", |_| false),
            Status::UnknownNode
        );
        let old = Hello {
            version: 0,
            ..hello
        };
        assert_eq!(
            judge_hello(&old, b"prod", b"secret", |_| true),
            Status::BadVersion
        );

        let welcome = Welcome {
            version: PROTOCOL_VERSION,
            status: Status::BadToken,
            node_id: 9,
        };
        let mut out = Vec::new();
        welcome.encode_frame(&mut out);
        let Decoded::Frame { kind, body, .. } = decode(&out, HELLO_BYTES_MAX) else {
            panic!()
        };
        assert_eq!(Welcome::decode(kind, &out[body]).unwrap(), welcome);
    }

    #[test]
    fn dialer_sends_a_hello_and_judges_the_answer() {
        // Proves the dialing side sends the hello the acceptor expects, opens only on an
        // accepting welcome, reports a refusal with its status, a malformed answer as such,
        // and refuses settings a hello cannot carry before anything is sent.
        let dialer = Dialer::new(Role::Client, b"prod", b"secret").unwrap();
        let mut out = Vec::new();
        dialer.encode_hello(&mut out);
        let Decoded::Frame { kind, body, .. } = decode(&out, HELLO_BYTES_MAX) else {
            panic!()
        };
        let hello = Hello::decode(kind, &out[body]).unwrap();
        assert_eq!(
            hello,
            Hello {
                version: PROTOCOL_VERSION,
                role: Role::Client,
                cluster_id: b"prod".to_vec(),
                token: b"secret".to_vec(),
                address: Vec::new(),
            }
        );
        let answer = |status| {
            let mut out = Vec::new();
            Welcome {
                version: PROTOCOL_VERSION,
                status,
                node_id: 4,
            }
            .encode_frame(&mut out);
            out
        };
        let judge = |frame: &[u8]| {
            let Decoded::Frame { kind, body, .. } = decode(frame, HELLO_BYTES_MAX) else {
                panic!()
            };
            dialer.welcome(kind, &frame[body])
        };
        assert_eq!(judge(&answer(Status::Accepted)).unwrap().node_id, 4);
        assert!(matches!(
            judge(&answer(Status::BadToken)),
            Err(DialError::Refused(Welcome {
                status: Status::BadToken,
                ..
            }))
        ));
        assert_eq!(
            judge(&out),
            Err(DialError::Handshake(HandshakeError::UnexpectedKind(
                KIND_HELLO
            )))
        );
        assert!(matches!(
            Dialer::new(Role::Client, &[b'x'; 256], b""),
            Err(DialError::TooLarge {
                what: "cluster id",
                ..
            })
        ));
        assert!(matches!(
            Dialer::new(Role::Node(1), b"prod", &[0; 256]),
            Err(DialError::TooLarge { what: "token", .. })
        ));
    }

    #[test]
    fn constant_time_eq_agrees_with_eq() {
        // Proves the constant-time comparison is an ordinary equality on a few edge cases.
        for (a, b) in [
            (&b""[..], &b""[..]),
            (b"a", b""),
            (b"", b"a"),
            (b"ab", b"ab"),
            (b"ab", b"ac"),
            (b"a\0", b"a"),
            (b"a-longer-token-0001", b"a-longer-token-0001"),
            (b"a-longer-token-0001", b"a-longer-token-0002"),
            (b"b-longer-token-0001", b"a-longer-token-0001"),
        ] {
            assert_eq!(constant_time_eq(a, b), a == b, "{a:?} vs {b:?}");
        }
    }

    /// A naive oracle: walks a buffer of concatenated frames by reading fields one at a time.
    fn oracle_split(buf: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut frames = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let len = u32::from_le_bytes(buf[at..at + 4].try_into().unwrap()) as usize;
            frames.push((buf[at + 8], buf[at + 9..at + 9 + len].to_vec()));
            at += 9 + len;
        }
        frames
    }

    // The decoder fuzz: 1,000,000 cases per property (four properties), run in CI with
    // `cargo test -p transport`. Set PROPTEST_CASES to change the count.
    fn fuzz_config() -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(1_000_000);
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    proptest! {
        #![proptest_config(fuzz_config())]

        /// Proves arbitrary bytes never panic the decoder, and whatever it reports is
        /// consistent: a frame lies inside the buffer, `needed` is beyond what was given and
        /// never past the limit.
        #[test]
        fn fuzz_random_bytes(buf in proptest::collection::vec(any::<u8>(), 0..64), max in 0usize..48) {
            match decode(&buf, max) {
                Decoded::NeedMore { needed } => {
                    prop_assert!(needed > buf.len());
                    prop_assert!(needed <= HEADER_BYTES + max);
                }
                Decoded::Frame { body, consumed, .. } => {
                    prop_assert!(consumed <= buf.len() && body.end == consumed);
                    prop_assert!(body.len() <= max);
                }
                Decoded::Error(_) => {}
            }
        }

        /// Proves round trips agree with the naive oracle, at every split point of the stream.
        #[test]
        fn fuzz_round_trip(frames in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 1..6), cut in any::<prop::sample::Index>()) {
            let mut buf = Vec::new();
            for (kind, body) in &frames {
                encode_frame(&mut buf, *kind, body);
            }
            prop_assert_eq!(&oracle_split(&buf), &frames);
            let cut = cut.index(buf.len() + 1);
            let mut got = Vec::new();
            let mut at = 0;
            loop {
                match decode(&buf[at..cut], 40) {
                    Decoded::Frame { kind, body, consumed } => {
                        got.push((kind, buf[at..cut][body].to_vec()));
                        at += consumed;
                    }
                    Decoded::NeedMore { .. } => break,
                    Decoded::Error(e) => return Err(TestCaseError::fail(format!("{e}"))),
                }
            }
            prop_assert_eq!(&got[..], &frames[..got.len()]);
        }

        /// Proves a corrupted stream (one byte changed) is never silently misread as the
        /// original frames: either an error, a shorter stream, or a different frame sequence
        /// whose checksums happen to hold — and never a panic.
        #[test]
        fn fuzz_corruption(kind in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..40), at in any::<prop::sample::Index>(), xor in 1u8..=255) {
            let mut buf = Vec::new();
            encode_frame(&mut buf, kind, &body);
            let at = at.index(buf.len());
            buf[at] ^= xor;
            if let Decoded::Frame { kind: k, body: b, .. } = decode(&buf, 1 << 16) {
                prop_assert!(k != kind || buf[b] != body[..], "corruption at {} accepted", at);
            }
        }

        /// Proves hello decoding never panics on arbitrary bodies.
        #[test]
        fn fuzz_hello_decode(body in proptest::collection::vec(any::<u8>(), 0..80), magic in any::<bool>()) {
            let mut body = body;
            if magic && body.len() >= 6 {
                body[..4].copy_from_slice(&HANDSHAKE_MAGIC);
                body[4..6].copy_from_slice(&PROTOCOL_VERSION.to_le_bytes());
            }
            let _ = Hello::decode(KIND_HELLO, &body);
            let _ = Welcome::decode(KIND_WELCOME, &body);
        }
    }
}
