//! raftctl as a new user meets it: exit codes, help, and what it says when no node answers.
//! Nothing here needs a running cluster; "no node" is a port on 127.0.0.1 nobody listens on.

use std::process::{Command, Output};

/// Runs raftctl with `args`, away from any local cluster or RAFTCTL_CLUSTER of the caller.
fn raftctl(args: &[&str]) -> Output {
    let away = tempfile::tempdir().expect("temporary directory");
    Command::new(env!("CARGO_BIN_EXE_raftctl"))
        .args(args)
        .env_remove("RAFTCTL_CLUSTER")
        .env("RAFTD_LOCAL_DIR", away.path())
        .output()
        .expect("raftctl runs")
}

/// `--cluster` naming `n` addresses on this machine where nothing listens (bound by the OS,
/// then released).
fn closed_cluster(n: usize) -> String {
    let listeners: Vec<_> = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind"))
        .collect();
    let addresses: Vec<String> = listeners
        .iter()
        .map(|l| l.local_addr().expect("address").to_string())
        .collect();
    addresses.join(",")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// Proves usage errors exit 1 (the contract's "usage or configuration error, nothing sent"),
// not clap's 2, which the contract reserves for "certainly not applied"; clap's message is
// printed unchanged; --help and --version still exit 0.
#[test]
fn usage_errors_exit_1_and_help_exits_0() {
    let usage_errors: [&[&str]; 5] = [
        &["--bogus"],
        &[],
        &["get"],
        &["status", "--timeout", "0s"],
        &["propose", "frobnicate", "k"],
    ];
    for args in usage_errors {
        let out = raftctl(args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "raftctl {args:?}: {stderr}");
        assert!(
            !stderr.is_empty() && out.stdout.is_empty(),
            "raftctl {args:?}"
        );
    }
    let out = raftctl(&["--bogus"]);
    assert!(
        text(&out.stderr).starts_with("error: unexpected argument '--bogus' found"),
        "{}",
        text(&out.stderr)
    );
    for args in [&["--help"][..], &["-h"], &["--version"], &["get", "--help"]] {
        let out = raftctl(args);
        assert_eq!(out.status.code(), Some(0), "raftctl {args:?}");
        assert!(!out.stdout.is_empty(), "raftctl {args:?} printed nothing");
    }
    // A configuration error found after parsing exits 1 as well.
    let cluster = closed_cluster(1);
    let out = raftctl(&["fault", "1", "--cluster", &cluster]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
}

// Proves --help shows raftctl's own description and its exit codes.
#[test]
fn help_describes_raftctl_and_its_exit_codes() {
    let help = text(&raftctl(&["--help"]).stdout);
    assert!(
        help.starts_with("raftctl: inspect, use and test a raftd cluster"),
        "{help}"
    );
    assert!(help.contains("3 outcome unknown"), "{help}");
}

// Proves `status --json` with no node reachable prints exactly one JSON document (the
// failure, naming each node's error) and exits 2, as every other failure does.
#[test]
fn status_json_with_no_node_reachable_is_one_document() {
    let cluster = closed_cluster(2);
    let out = raftctl(&["status", "--json", "--cluster", &cluster, "--timeout", "1s"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}{}", text(&out.stderr));
    // from_str refuses anything after the first document.
    let doc: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{stdout}"));
    assert_eq!(doc["ok"], false, "{doc}");
    let error = doc["error"].as_str().unwrap_or_default();
    assert!(error.starts_with("no node is reachable"), "{doc}");
    for address in cluster.split(',') {
        assert!(error.contains(address), "{doc}");
    }
    // Without --json: the table, then the failure on stderr, same exit code.
    let out = raftctl(&["status", "--cluster", &cluster, "--timeout", "1s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stdout).starts_with("ID "),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stderr).contains("no node is reachable"));
}

// Proves a read or write to a cluster nobody listens for exits 2 (certainly not applied)
// with the advice to check that the cluster runs: raftctl tells this case from the client
// library's error type, not from the message's wording.
#[test]
fn unreachable_cluster_is_a_definite_failure_with_advice() {
    let cluster = closed_cluster(3);
    for command in [&["get", "k"][..], &["propose", "put", "k", "v"]] {
        let mut args = command.to_vec();
        args.extend(["--cluster", &cluster, "--timeout", "500ms"]);
        let out = raftctl(&args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "raftctl {args:?}: {stderr}");
        assert!(
            stderr.contains("cannot connect"),
            "raftctl {args:?}: {stderr}"
        );
        assert!(
            stderr.contains("nothing was applied; is the cluster running?"),
            "raftctl {args:?}: {stderr}"
        );
    }
}
