//! raftctl's output to stdout: `out!` and `put!`, `println!` and `print!` that end the
//! process quietly when stdout's reader went away (`raftctl status | head -1`), as
//! command-line tools do, instead of panicking.

/// `println!` for raftctl's output (see the module docs).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::output::stdout_written(writeln!(std::io::stdout().lock(), $($arg)*));
    }};
}

/// `print!` with the same handling as `out!`.
macro_rules! put {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::output::stdout_written(write!(std::io::stdout().lock(), $($arg)*));
    }};
}

/// Ends the process quietly when stdout's reader went away (status 0), loudly on other
/// write errors (status 1).
pub fn stdout_written(result: std::io::Result<()>) {
    if let Err(e) = result {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("raftctl: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}
