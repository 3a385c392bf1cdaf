//! raftd's transport: opaque frames between node ids and client connections, over TCP, on one
//! hand-written mio event loop.
//!
//! The crate knows nothing of Raft. A frame is a kind byte and a body; the transport checks its
//! length and CRC (see `FORMAT.md`) and hands it over. Every connection opens with a handshake
//! carrying the protocol version, the cluster id, the dialer's role (a node id, or client) and
//! an optional shared token; a mismatch is refused and logged on both sides, and a refused node
//! waits the longest reconnect backoff before asking again.
//!
//! # Contract
//!
//! * Frames may be **lost** (a broken connection loses its outbox; a full outbox drops the new
//!   frame and counts it; the fault layer drops on purpose), **duplicated** only if the caller
//!   resends, and **reordered across reconnects** (frames sent before and after a reconnect
//!   travel on different connections) or by the fault layer's random delays. Within one
//!   connection, frames arrive in the order they were sent, exactly once, intact.
//! * Sends never block: [`Transport::send_peer`] and [`Transport::send_client`] append to the
//!   connection's outbox; the next [`Transport::poll`] (or [`Transport::flush`]) writes each
//!   outbox in one `write` call where the socket takes it.
//! * A frame to a peer whose outbound connection is not up fails at once with
//!   [`SendError::NotConnected`]; there is no queueing across reconnects.
//!
//! # Connections
//!
//! Every node dials every peer and **sends only on its own outbound connection**; it **receives
//! only on connections it accepted**. So each pair of nodes holds two TCP connections, one per
//! direction, and no tie-break is needed when both dial at once. [`Event::PeerUp`] and
//! [`Event::PeerDown`] follow the outbound connection (whether this node can send). Clients
//! connect to any node and talk on that one connection, in both directions.
//!
//! # Event loop
//!
//! One `mio::Poll` with reserved tokens for the listener and a [`mio::Waker`]
//! ([`Transport::waker`], for a thread such as an fsync thread), connections in a slab. Reads
//! and writes drain until `WouldBlock`, retry `Interrupted` and tolerate spurious events;
//! write interest is registered only while an outbox holds bytes; the caller picks the poll
//! timeout (its next tick) and internal timers (redials, handshake deadlines, delayed frames)
//! shorten it as needed. Memory is bounded: a connection buffers at most one frame of
//! `frame_bytes_max` (a hello's size before the handshake completes), and outboxes hold at most
//! `outbox_bytes_max`.
//!
//! ```no_run
//! use std::time::Duration;
//! use transport::{Event, Transport, TransportConfig};
//!
//! let mut config = TransportConfig::new(1, "prod", "0.0.0.0:7001".parse().unwrap());
//! config.peers = vec![(2, "10.0.0.2:7001".parse().unwrap()), (3, "10.0.0.3:7001".parse().unwrap())];
//! let mut transport = Transport::new(config)?;
//! let mut events = Vec::new();
//! loop {
//!     transport.poll(Some(Duration::from_millis(100)), &mut events)?;
//!     for event in events.drain(..) {
//!         match event {
//!             Event::PeerFrame { from, kind, body } => { /* step the core */ }
//!             Event::ClientFrame { client, kind, body } => {
//!                 let _ = transport.send_client(client, kind, &body);
//!             }
//!             _ => {}
//!         }
//!     }
//!     // Frames queued here leave on the next poll, batched per connection.
//!     let _ = transport.send_peer(2, 1, b"heartbeat");
//! }
//! # Ok::<(), std::io::Error>(())
//! ```
//!
//! # Faults
//!
//! [`Transport::set_faults`] switches on loss, delay and partitions for peer traffic at run
//! time (see [`Faults`]); tests use it in place of netem.
//!
//! # Clients
//!
//! The dialing side of the handshake exists once, as [`codec::Dialer`]: this loop's outbound
//! peer connections open with it, and so do clients. [`client::Connection`] is a blocking
//! client speaking the same codec and handshake in the client role; non-blocking clients
//! (`raftd-client`) drive a [`codec::Dialer`] over their own sockets.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod body;
pub mod client;
pub mod codec;
mod event_loop;
pub mod fault;
mod slab;
pub mod tls;

pub use body::Body;
pub use event_loop::{ClientId, Event, PeerStats, SendError, Stats, Transport, TransportConfig};
pub use fault::{Direction, Faults};
