//! The raftd consensus core: a pure, deterministic Raft state machine.
//!
//! [`RawNode`] implements Raft as the paper's Figure 2 and §5–§7 describe it, with the
//! thesis's pre-vote and check-quorum (§9.6, §6.2), ReadIndex reads (§6.4), leadership
//! transfer (§3.10) and chunked InstallSnapshot. It does no IO, reads no clock, starts no
//! thread and uses no randomness but a PRNG seeded from its [`Config`]: the same inputs give
//! the same outputs, which is what lets the simulator in `tests/` replay any run from a seed.
//!
//! A host drives it with five inputs — [`RawNode::tick`], [`RawNode::step`],
//! [`RawNode::propose`], [`RawNode::read_index`], [`RawNode::compact`] (and
//! [`RawNode::transfer_leader`], [`RawNode::propose_conf_change`]) — and collects its
//! output as a [`Ready`]: what to persist,
//! what to send before and after persisting, what to apply. The ordering contract is
//! written on [`Ready`]; in short: send `messages`, persist, send `persisted_messages`,
//! apply, then [`RawNode::advance`].
//!
//! Snapshots belong to the host. `compact` tells the node where the host's latest durable
//! snapshot ends; the node keeps none of its bytes, and when a follower needs it the
//! `Ready` asks for it ([`Ready::snapshot_request`]) and the host reads it back and hands
//! it over ([`RawNode::provide_snapshot`]). A snapshot is as big as the state machine, so
//! a copy held for a follower that rarely needs one would double a node's memory.
//!
//! Membership changes ([`membership`]: thesis §4) are log entries holding the whole next
//! [`Configuration`]: voters, learners, and while a change of voters is under way the joint
//! configuration C_old,new, whose decisions need a majority of both halves. A node uses the
//! latest configuration in its log; the host stores the configuration in effect at a
//! snapshot's index with the snapshot ([`Snapshot::configuration`], named by
//! [`RawNode::configuration_at`]) and passes it back at restart
//! ([`Restore::configuration`]); [`Config::voters`] is only the first configuration of a
//! brand-new cluster.
//!
//! Messages travel as bytes laid out in `FORMAT.md` beside `Cargo.toml`; [`codec`] encodes
//! and decodes them, so the simulator counts bytes exactly as the network would. Its byte
//! [`codec::Reader`] and [`codec::Writer`] are the ones every raftd format is written with
//! (the client protocol and the key-value snapshot too): pure, never past the end of the
//! bytes. They live here because the crates with those formats already depend on the core.
//!
//! ```
//! use raft::{Config, NodeId, RawNode, Restore};
//!
//! // A one-node cluster elects itself and commits a proposal.
//! let mut config = Config::new(NodeId(1), vec![NodeId(1)]);
//! config.election_timeout_ticks = 10;
//! config.heartbeat_interval_ticks = 2;
//! let mut node = RawNode::new(config, Restore::default()).unwrap();
//! let mut applied = Vec::new();
//! let mut proposed = false;
//! for _ in 0..100 {
//!     node.tick();
//!     if node.is_leader() && !proposed {
//!         node.propose(b"x=1".to_vec()).unwrap();
//!         proposed = true;
//!     }
//!     while node.has_ready() {
//!         let mut ready = node.ready();
//!         let now = ready.take_messages(); // would go to the transport
//!         // ... persist ready.hard_state() and ready.entries() durably here ...
//!         let after = ready.take_persisted_messages(); // only after the sync
//!         assert!(now.is_empty() && after.is_empty()); // nobody to talk to
//!         for entry in ready.take_committed_entries() {
//!             applied.push(entry); // apply to the state machine
//!         }
//!         node.advance(ready);
//!     }
//! }
//! assert!(applied.iter().any(|e| &*e.data == b"x=1"));
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod codec;
mod config;
pub mod driver;
mod log;
pub mod membership;
pub mod message;
mod node;
mod progress;
mod shared_bytes;
pub mod types;

pub use config::Config;
pub use membership::{ConfChangeError, Configuration, MemberChange};
pub use message::{Body, ConflictHint, Message};
pub use node::{EntriesWanted, ProposeError, RawNode, Ready, Restore, RoleKind, Status, StepError};
pub use shared_bytes::SharedBytes;
pub use types::*;
