//! raftd's command line as a new user meets it: its help and its exit codes.

use std::process::{Command, Output};

fn raftd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raftd"))
        .args(args)
        .output()
        .expect("raftd runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// Proves --help and -h describe the daemon in its own words (not the crate's description,
// which also speaks of the client library) and exit 0.
#[test]
fn help_describes_the_daemon() {
    for flag in ["--help", "-h"] {
        let out = raftd(&[flag]);
        let help = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "raftd {flag}");
        assert!(
            help.starts_with("raftd: one member of a Raft-replicated key-value store"),
            "raftd {flag}:\n{help}"
        );
        assert!(!help.contains("client library"), "raftd {flag}:\n{help}");
    }
    let long = text(&raftd(&["--help"]).stdout);
    assert!(long.contains("same --peers list everywhere"), "{long}");
    assert!(long.contains("Exit codes: 0 stopped cleanly"), "{long}");
}

// Proves usage errors exit 1 like every other configuration error (the README's contract),
// not clap's 2, with clap's message unchanged; --version exits 0.
#[test]
fn usage_errors_exit_1() {
    let out = raftd(&["--bogus"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: unexpected argument '--bogus' found"),
        "{stderr}"
    );
    let out = raftd(&[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("required arguments were not provided"),
        "{stderr}"
    );
    let out = raftd(&[
        "--id",
        "x",
        "--peers",
        "1=127.0.0.1:1",
        "--data-dir",
        "/nonexistent",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let out = raftd(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("raftd "));
}
