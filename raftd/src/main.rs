//! `raftd`: one member of a raftd cluster. See `raftd --help`.
// One exception, `set_malloc_policy`: the C library offers no safe way to tune malloc.
#![deny(unsafe_code)]

use clap::Parser;
use raftd::cli::Args;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Blocks of this size and more are mapped on their own and unmapped when freed.
const MMAP_THRESHOLD_BYTES: i32 = 1 << 20;

/// Fixes glibc malloc's mmap threshold. Left dynamic, glibc raises it to the size of the
/// biggest mapped block freed so far (up to 32 MiB) and its heap trim threshold to twice
/// that. The first snapshot's serialization (15 MiB at 100,000 keys of 128 bytes) then
/// makes every later one come from the heap, or from the snapshot writer thread's arena,
/// and stay there after it is freed: about 40 MiB of a node's 85 MiB resident after a
/// benchmark. With a fixed threshold, snapshot-sized buffers go back to the system when
/// freed and the heap's free top is trimmed past glibc's default 128 KiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_malloc_policy() {
    // SAFETY: mallopt only reads its two integer arguments and changes malloc's tunables
    // under malloc's own lock; it touches no memory of ours. Called before any thread starts.
    let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) } == 1;
    if !ok {
        eprintln!("raftd: warning: could not set malloc's mmap threshold; memory use may grow");
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_malloc_policy() {}

fn main() -> ExitCode {
    set_malloc_policy();
    let args = Args::parse();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftd: {e}");
            return ExitCode::from(1);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("raftd: cannot install the handler for signal {signal}: {e}");
            return ExitCode::from(1);
        }
    }
    let mut server = match raftd::server::Server::open(config, stop) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("raftd: {e}");
            return ExitCode::from(1);
        }
    };
    match server.run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("{e}");
            eprintln!("raftd: {e}");
            ExitCode::from(1)
        }
    }
}
