//! TEST ONLY. `raftd-faulty`: `raftd` with one fault armed, for the process-level test of
//! the consistency check (`tests/tests/consistency.rs`): the first put it applies after
//! starting gets a changed value, so its key-value store diverges from the other nodes'
//! while every CRC on its disk and on the wire passes, as a bug or bad memory would make it.
//!
//! Built only with the `test-faults` feature (`cargo build -p raftd --features test-faults
//! --bin raftd-faulty`), which nothing in the workspace turns on; the `raftd` binary has no
//! flag or variable that arms the fault. Never run it on a cluster whose data matters.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    raftd::cli::daemon_main(|server| {
        log::error!("raftd-faulty: TEST BINARY: the first put applied will get a changed value");
        server.corrupt_one_put();
    })
}
