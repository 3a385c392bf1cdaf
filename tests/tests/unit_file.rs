//! The systemd unit in `deploy/` as `systemd-analyze` reads it: hardened to an exposure of
//! 2.0 or lower, with a system-call filter that still lets raftd make every call it makes,
//! and without fault injection. (That the unit really runs raftd is what
//! `deploy/check-unit.sh` proves on a systemd host; see the README.)

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

/// The system calls raftd makes: every one that three nodes made under `strace -f -c`
/// through writes, WAL segment roll-overs, snapshots and compaction, a follower caught up by
/// InstallSnapshot, a backup, a consistency check, a leader transfer, a kill -9 and restart,
/// and metrics scrapes; plus those of exits, aborts and closed connections that run did not
/// happen to reach.
const RAFTD_SYSCALLS: &[&str] = &[
    "accept4",
    "access",
    "arch_prctl",
    "bind",
    "brk",
    "clock_nanosleep",
    "clone3",
    "close",
    "connect",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "eventfd2",
    "execve",
    "fadvise64",
    "fallocate",
    "fdatasync",
    "flock",
    "fsync",
    "ftruncate",
    "futex",
    "getdents64",
    "getpeername",
    "getpid",
    "getrandom",
    "getsockname",
    "getsockopt",
    "gettid",
    "ioctl",
    "listen",
    "madvise",
    "mkdir",
    "mmap",
    "mprotect",
    "mremap",
    "msync",
    "munmap",
    "newfstatat",
    "openat",
    "poll",
    "prctl",
    "pread64",
    "prlimit64",
    "pwrite64",
    "read",
    "recvfrom",
    "rename",
    "rseq",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sched_getaffinity",
    "sendto",
    "set_robust_list",
    "set_tid_address",
    "setsockopt",
    "sigaltstack",
    "socket",
    "statx",
    "sync_file_range",
    "unlink",
    "write",
    // Not reached by that run, made by std, glibc or the kernel's paths all the same.
    "exit",
    "exit_group",
    "shutdown",
    "tgkill",
    "fcntl",
    "lseek",
    "unlinkat",
    "renameat",
    "renameat2",
    "sendmsg",
    "recvmsg",
];

fn unit_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/raftd.service")
}

/// `systemd-analyze ARGS`' standard output, or `None` (said as skipped) without the tool.
fn systemd_analyze(args: &[&str]) -> Option<String> {
    match Command::new("systemd-analyze").args(args).output() {
        Ok(out) => {
            assert!(
                out.status.success(),
                "systemd-analyze {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Some(String::from_utf8_lossy(&out.stdout).into_owned())
        }
        Err(e) => {
            wal::testing::skip(&format!(
                "no systemd-analyze ({e}): the unit's rating and filter go unchecked"
            ));
            None
        }
    }
}

/// The system calls a filter entry names: a group (`@name`, expanded, nested groups too) or
/// one call.
fn expand(entry: &str, into: &mut BTreeSet<String>) -> Option<()> {
    if !entry.starts_with('@') {
        into.insert(entry.to_string());
        return Some(());
    }
    let listing = systemd_analyze(&["syscall-filter", entry])?;
    // The group's own name heads the listing unindented; members are indented, comments
    // start with '#'.
    for line in listing.lines().filter(|l| l.starts_with(' ')) {
        let member = line.trim();
        if !member.is_empty() && !member.starts_with('#') {
            expand(member, into)?;
        }
    }
    Some(())
}

/// Proves the unit is rated 2.0 or lower by `systemd-analyze security --offline=yes` (it
/// was 9.0 UNSAFE before it was hardened), so a later edit that loosens it fails here.
#[test]
fn the_unit_is_rated_2_or_lower() {
    let path = unit_path();
    let Some(report) = systemd_analyze(&["security", "--offline=yes", path.to_str().unwrap()])
    else {
        return;
    };
    let overall = report
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for raftd.service: "))
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("no overall rating in:\n{report}"));
    let exposure: f64 = overall
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the rating '{overall}'"));
    assert!(exposure <= 2.0, "exposure {overall}:\n{report}");
}

/// Proves the unit's `SystemCallFilter=` lines (allowed groups, then `~` denied ones) leave
/// every system call raftd makes allowed: one taken away would kill it with SIGSYS.
#[test]
fn the_unit_allows_every_system_call_raftd_makes() {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    let (mut allowed, mut denied) = (BTreeSet::new(), BTreeSet::new());
    for value in unit
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SystemCallFilter="))
    {
        let (set, list) = match value.strip_prefix('~') {
            Some(list) => (&mut denied, list),
            None => (&mut allowed, value),
        };
        for entry in list.split_whitespace() {
            if expand(entry, set).is_none() {
                return;
            }
        }
    }
    assert!(!allowed.is_empty(), "the unit has no allow-list filter");
    let refused: Vec<&str> = RAFTD_SYSCALLS
        .iter()
        .copied()
        .filter(|call| !allowed.contains(*call) || denied.contains(*call))
        .collect();
    assert!(refused.is_empty(), "the unit's filter refuses {refused:?}");
}

/// Proves the production unit leaves fault injection off.
#[test]
fn the_unit_does_not_enable_fault_injection() {
    let unit = std::fs::read_to_string(unit_path()).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/raftd"), "{unit}");
    assert!(!unit.contains("--enable-fault-injection"), "{unit}");
}
