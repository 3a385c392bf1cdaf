//! The raftd consensus core (work in progress: types first).
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod types;
pub use types::*;
