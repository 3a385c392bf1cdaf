//! `raftd`: one member of a raftd cluster. See `raftd --help`.
#![forbid(unsafe_code)]

use raftd::cli::{parse_command_line, Args, EXIT_USAGE};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn main() -> ExitCode {
    // Snapshot-sized buffers must go back to the system when freed (see the function).
    if !wal::fix_malloc_mmap_threshold() {
        eprintln!("raftd: warning: could not set malloc's mmap threshold; memory use may grow");
    }
    let args = match parse_command_line::<Args>() {
        Ok(a) => a,
        Err(code) => return code,
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format_timestamp_millis()
        .init();
    let config = match args.into_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("raftd: {e}");
            return ExitCode::from(EXIT_USAGE);
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
