//! How a raftctl command fails: the exit code and the message it ends with.
//!
//! Exit codes: 0 done; 1 usage or configuration error (nothing sent); 2 definite failure
//! (certainly not applied); 3 outcome unknown (sent, no answer in time).

use raftd::cli::EXIT_USAGE;
use raftd_client::blocking::ClientError;

/// What a command ends with: an exit code and what to print.
pub enum Failure {
    /// Bad usage or configuration; nothing was sent.
    Usage(String),
    /// Certainly not applied.
    Definite(String),
    /// Certainly not applied: no node could be connected to.
    Unreachable(String),
    /// Sent; outcome unknown.
    Unknown(String),
    /// A check could not decide (exit 3).
    Undecided(String),
    /// The command printed its own verdict already; exit with this code and print nothing
    /// more.
    Reported(u8),
}

impl Failure {
    /// The exit code and the message, with advice where the failure calls for it.
    pub fn exit(self) -> (u8, String) {
        match self {
            Failure::Usage(m) => (EXIT_USAGE, m),
            Failure::Unreachable(m) => (
                2,
                format!("{m}\n  nothing was applied; is the cluster running? try `raftctl status` (or `raftctl local up`)"),
            ),
            Failure::Definite(m) => (2, m),
            Failure::Unknown(m) => (
                3,
                format!("{m}\n  the outcome is unknown: it may still be applied; read the key back (`raftctl get`) to find out"),
            ),
            Failure::Undecided(m) => (3, m),
            Failure::Reported(code) => (code, String::new()),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        match e {
            ClientError::Definite(s) => Failure::Definite(s),
            ClientError::Unreachable(s) => Failure::Unreachable(s),
            ClientError::Unknown(s) => Failure::Unknown(s),
        }
    }
}
