//! `raftd`: one member of a raftd cluster. See `raftd --help`.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    raftd::cli::daemon_main(|_| {})
}
