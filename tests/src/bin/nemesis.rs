//! Runs the nemesis suite against a real raftd cluster and prints a summary.
//!
//! ```text
//! nemesis [--duration 60s] [--nodes 5] [--clients 8] [--keys 5] [--seed S]
//!         [--nemeses kill,restart,pause,isolateleader,split,bridge,lossy,diskfull,netsplit,bitrot | all | none]
//!         [--no-netns]
//!         [--report-dir DIR]
//! ```
//! Exit status 0 when there are no violations, no lost acknowledged writes, no node left
//! repairing and every bit rot was found by its node; 1 otherwise.

use raftd_tests::nemesis::{run, Nemesis, RunConfig};
use std::process::ExitCode;
use std::time::Duration;

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn seconds(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Some(m) = s.strip_suffix('m') {
        return m.parse::<u64>().ok().map(|m| Duration::from_secs(m * 60));
    }
    s.trim_end_matches('s')
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("nemesis [--duration 60s|30m] [--nodes 5] [--clients 8] [--keys 5] [--seed S] [--nemeses LIST|all|none] [--report-dir DIR] [--no-netns]");
        return ExitCode::SUCCESS;
    }
    let nemeses = match flag(&args, "--nemeses").as_deref() {
        None | Some("all") => Nemesis::ALL.to_vec(),
        Some("none") => Vec::new(),
        Some(list) => {
            let mut v = Vec::new();
            for name in list.split(',') {
                match Nemesis::parse(name) {
                    Some(n) => v.push(n),
                    None => {
                        eprintln!("nemesis: unknown nemesis '{name}' (kill, restart, pause, isolateleader, split, bridge, lossy, diskfull, netsplit, bitrot)");
                        return ExitCode::from(2);
                    }
                }
            }
            v
        }
    };
    let parse = |name: &str, default: u64| -> u64 {
        flag(&args, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let config = RunConfig {
        nodes: parse("--nodes", 5) as usize,
        clients: parse("--clients", 8) as usize,
        keys: parse("--keys", 5) as usize,
        duration: flag(&args, "--duration")
            .and_then(|d| seconds(&d))
            .unwrap_or(Duration::from_secs(60)),
        seed: parse("--seed", rand::random::<u32>() as u64),
        nemeses,
        op_timeout: Duration::from_secs(2),
        netns: !args.iter().any(|a| a == "--no-netns"),
        report_dir: flag(&args, "--report-dir")
            .map(Into::into)
            .unwrap_or_else(|| std::env::temp_dir().join("raftd-nemesis")),
    };
    println!(
        "nemesis: {} nodes, {} clients, {} keys, {:?}, seed {}, nemeses {:?}",
        config.nodes, config.clients, config.keys, config.duration, config.seed, config.nemeses
    );
    let s = run(&config, &mut |line| println!("{line}"));
    println!("--- summary");
    println!(
        "operations:       {} ok, {} failed (not applied), {} unknown (timed out)",
        s.ok, s.failed, s.unknown
    );
    println!(
        "violations:       {}{}",
        s.violations,
        if s.gave_up {
            " (checker gave up on a key!)"
        } else {
            ""
        }
    );
    println!(
        "lost writes:      {} of {} acknowledged unique writes",
        s.lost_writes, s.acknowledged_writes
    );
    println!("elections:        {} (term increase)", s.elections);
    println!(
        "longest write gap: {:.2} s",
        s.longest_unavailable.as_secs_f64()
    );
    println!("fault windows:    {}", s.faults.len());
    println!(
        "bit rots:         {} ({} in a vote copy, {} in a snapshot file, {} on a running node; {} skipped while a node was damaged)",
        s.rots, s.vote_rots, s.snapshot_rots, s.live_rots, s.rots_skipped
    );
    println!("scrubber finds:   {}", s.scrubber_finds);
    println!(
        "repairs:          {} started (DAMAGED WAL), {} finished; still repairing at the end: {:?}",
        s.repairs_started, s.repairs_finished, s.still_repairing
    );
    if !s.rot_failures.is_empty() {
        println!("rot failures:     {}", s.rot_failures.len());
    }
    if let Some(r) = &s.report {
        println!("report:           {}", r.display());
    }
    if s.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
