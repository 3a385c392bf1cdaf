//! A small blocking client for tools such as `raftctl`: the same frames as the event loop,
//! and the same dialing side of the handshake ([`Dialer`]), over a plain
//! `std::net::TcpStream`, in the client role, in plaintext or inside TLS
//! ([`Connection::connect_tls`]).

use crate::codec::{
    encode_frame, take_frame, DecodeError, Decoded, DialError, Dialer, HandshakeError, Role,
    Status, HELLO_BYTES_MAX,
};
use crate::tls::ClientTls;
use rustls::{ClientConnection, StreamOwned};
use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Why a client operation failed.
#[derive(Debug)]
pub enum Error {
    /// The socket failed (including refused connections and broken pipes).
    Io(io::Error),
    /// No answer arrived in time. For `recv`, a partial frame stays buffered for the next call.
    TimedOut,
    /// The server closed the connection.
    Closed,
    /// The server refused the handshake.
    Refused(Status),
    /// The server's handshake answer was malformed.
    Handshake(HandshakeError),
    /// The server sent a malformed frame; the connection is unusable.
    Decode(DecodeError),
    /// A cluster id, token or frame body exceeded its limit; nothing was sent.
    TooLarge(&'static str),
    /// TLS failed (the handshake, a certificate, or a record); the text says why.
    Tls(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(error) => write!(f, "{error}"),
            Error::TimedOut => write!(f, "timed out"),
            Error::Closed => write!(f, "connection closed by the server"),
            Error::Refused(status) => write!(f, "connection refused by the server: {status}"),
            Error::Handshake(error) => write!(f, "bad handshake from the server: {error}"),
            Error::Decode(error) => write!(f, "bad frame from the server: {error}"),
            Error::TooLarge(what) => write!(f, "{what} is too large"),
            Error::Tls(why) => write!(f, "TLS: {why}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<DialError> for Error {
    fn from(error: DialError) -> Self {
        match error {
            DialError::TooLarge { what, .. } => Error::TooLarge(what),
            DialError::Handshake(error) => Error::Handshake(error),
            DialError::Refused(welcome) => Error::Refused(welcome.status),
        }
    }
}

impl From<io::Error> for Error {
    fn from(error: io::Error) -> Self {
        if let Some(tls) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return Error::Tls(crate::tls::explain(tls));
        }
        match error.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Error::TimedOut,
            _ => Error::Io(error),
        }
    }
}

/// A socket, or TLS over it.
#[derive(Debug)]
enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(tcp) => tcp,
            Stream::Tls(tls) => tls.get_ref(),
        }
    }

    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.read(buf),
            Stream::Tls(tls) => tls.read(buf),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(tcp) => tcp.write(bytes),
            Stream::Tls(tls) => tls.write(bytes),
        }
    }

    fn is_handshaking(&self) -> bool {
        matches!(self, Stream::Tls(tls) if tls.conn.is_handshaking())
    }

    /// Pushes what TLS still holds for the socket (nothing to do in plaintext).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(tls) => tls.flush(),
        }
    }
}

/// A blocking connection to one node, in the client role.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    /// Received bytes live in `inbox[inbox_start..]`.
    inbox: Vec<u8>,
    inbox_start: usize,
    frame_bytes_max: usize,
    node_id: u64,
}

/// Frames larger than this are refused unless [`Connection::set_frame_bytes_max`] raises it.
pub const CLIENT_FRAME_BYTES_MAX: usize = 16 << 20;

impl Connection {
    /// Connects to `addr` and completes the handshake, all within `timeout`.
    pub fn connect(
        addr: SocketAddr,
        cluster_id: &str,
        token: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Connection, Error> {
        Connection::connect_tls(addr, cluster_id, token, None, timeout)
    }

    /// [`Connection::connect`], inside TLS when `tls` is given.
    pub fn connect_tls(
        addr: SocketAddr,
        cluster_id: &str,
        token: Option<&[u8]>,
        tls: Option<&ClientTls>,
        timeout: Duration,
    ) -> Result<Connection, Error> {
        let dialer = Dialer::new(
            Role::Client,
            cluster_id.as_bytes(),
            token.unwrap_or_default(),
        )?;
        let deadline = Instant::now() + timeout;
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_nodelay(true)?;
        let stream = match tls {
            None => Stream::Plain(stream),
            Some(tls) => Stream::Tls(Box::new(StreamOwned::new(tls.connection(addr)?, stream))),
        };
        let mut connection = Connection {
            stream,
            inbox: Vec::new(),
            inbox_start: 0,
            frame_bytes_max: HELLO_BYTES_MAX,
            node_id: 0,
        };
        let mut frame = Vec::new();
        dialer.encode_hello(&mut frame);
        let sent = connection.write_all_by(&frame, deadline);
        let received = sent.and_then(|()| connection.recv_by(deadline));
        let (kind, body) = match received {
            // The node hung up in the middle of the TLS handshake, without an alert: what a
            // node without TLS does with a ClientHello.
            Err(Error::Io(e))
                if tls.is_some()
                    && connection.stream.is_handshaking()
                    && matches!(
                        e.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset
                    ) =>
            {
                return Err(Error::Tls(format!(
                    "the node closed the connection during the TLS handshake ({e}): it does not speak TLS (a plaintext node?)"
                )));
            }
            // A TLS record (an alert or a handshake) where a welcome frame belongs.
            Err(Error::Decode(_) | Error::Closed)
                if tls.is_none()
                    && connection.inbox.get(1) == Some(&3)
                    && matches!(connection.inbox.first(), Some(0x15 | 0x16)) =>
            {
                return Err(Error::Tls(
                    "the node speaks TLS and this client does not (pass --tls-ca, and --tls-cert/--tls-key where client certificates are required)".into(),
                ));
            }
            other => other?,
        };
        let welcome = dialer.welcome(kind, &body)?;
        connection.node_id = welcome.node_id;
        connection.frame_bytes_max = CLIENT_FRAME_BYTES_MAX;
        Ok(connection)
    }

    /// The id of the node this connection reached.
    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Changes the largest frame body accepted or sent (default [`CLIENT_FRAME_BYTES_MAX`]).
    pub fn set_frame_bytes_max(&mut self, frame_bytes_max: usize) {
        self.frame_bytes_max = frame_bytes_max;
    }

    /// Sends one frame, waiting at most `timeout` for the socket to take it.
    pub fn send(&mut self, kind: u8, body: &[u8], timeout: Duration) -> Result<(), Error> {
        if body.len() > self.frame_bytes_max {
            return Err(Error::TooLarge("frame body"));
        }
        let mut frame = Vec::with_capacity(crate::codec::frame_bytes(body.len()));
        encode_frame(&mut frame, kind, body);
        self.write_all_by(&frame, Instant::now() + timeout)
    }

    /// Waits at most `timeout` for the next frame and returns its kind and body.
    pub fn recv(&mut self, timeout: Duration) -> Result<(u8, Vec<u8>), Error> {
        self.recv_by(Instant::now() + timeout)
    }

    fn write_all_by(&mut self, mut bytes: &[u8], deadline: Instant) -> Result<(), Error> {
        while !bytes.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::TimedOut);
            }
            self.stream.tcp().set_write_timeout(Some(left))?;
            self.stream.tcp().set_read_timeout(Some(left))?;
            match self.stream.write(bytes) {
                Ok(0) => return Err(Error::Closed),
                Ok(n) => bytes = &bytes[n..],
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.into()),
            }
        }
        self.stream.flush()?;
        Ok(())
    }

    fn recv_by(&mut self, deadline: Instant) -> Result<(u8, Vec<u8>), Error> {
        loop {
            let needed = match take_frame(&self.inbox, &mut self.inbox_start, self.frame_bytes_max)
            {
                Decoded::Frame { kind, body, .. } => {
                    let body = self.inbox[body].to_vec();
                    if self.inbox_start == self.inbox.len() {
                        self.inbox.clear();
                        self.inbox_start = 0;
                    }
                    return Ok((kind, body));
                }
                Decoded::Error(error) => return Err(Error::Decode(error)),
                Decoded::NeedMore { needed } => needed,
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::TimedOut);
            }
            self.stream.tcp().set_read_timeout(Some(left))?;
            self.stream.tcp().set_write_timeout(Some(left))?;
            self.inbox.drain(..self.inbox_start);
            self.inbox_start = 0;
            // The buffer holds at most the current frame (bounded by the limit above) plus one
            // 64 KiB read beyond it.
            let chunk = (needed - self.inbox.len()).max(64 * 1024);
            let filled = self.inbox.len();
            self.inbox.resize(filled + chunk, 0);
            let result = self.stream.read(&mut self.inbox[filled..]);
            self.inbox.truncate(filled + *result.as_ref().unwrap_or(&0));
            match result {
                Ok(0) => return Err(Error::Closed),
                Ok(_) => {}
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(error.into()),
            }
        }
    }
}
