//! Runs the nemesis suite against a real raftd cluster and prints a summary.
//!
//! ```text
//! nemesis [--duration 60s] [--nodes 5] [--clients 8] [--keys 5] [--seed S]
//!         [--nemeses kill,restart,pause,isolateleader,split,bridge,lossy,diskfull,netsplit,bitrot,
//!                    membership,netloss,bandwidth | all | none]
//!         [--spares 2] [--no-netns]
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
        println!("nemesis [--duration 60s|30m] [--nodes 5] [--clients 8] [--keys 5] [--seed S] [--nemeses LIST|all|none] [--spares 2] [--report-dir DIR] [--no-netns]");
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
                        let names: Vec<String> = Nemesis::ALL
                            .iter()
                            .map(|n| format!("{n:?}").to_lowercase())
                            .collect();
                        eprintln!(
                            "nemesis: unknown nemesis '{name}' ({}, all, none)",
                            names.join(", ")
                        );
                        return ExitCode::from(2);
                    }
                }
            }
            v
        }
    };
    let known = [
        "--duration",
        "--nodes",
        "--clients",
        "--keys",
        "--seed",
        "--nemeses",
        "--spares",
        "--report-dir",
    ];
    let mut rest = args.iter();
    while let Some(a) = rest.next() {
        match a.as_str() {
            "--no-netns" => {}
            name if known.contains(&name) => {
                if rest.next().is_none() {
                    eprintln!("nemesis: {name} needs a value");
                    return ExitCode::from(2);
                }
            }
            other => {
                eprintln!("nemesis: unknown argument '{other}' (see --help)");
                return ExitCode::from(2);
            }
        }
    }
    let parse = |name: &str, default: u64| -> Result<u64, String> {
        match flag(&args, name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("nemesis: {name} '{v}' is not a whole number")),
        }
    };
    let duration = match flag(&args, "--duration") {
        None => Ok(Duration::from_secs(60)),
        Some(d) => seconds(&d).ok_or(format!(
            "nemesis: --duration '{d}' is not a duration (90s, 90 or 30m)"
        )),
    };
    let numbers = (|| {
        let nodes = parse("--nodes", 5)?;
        if !(3..=9).contains(&nodes) {
            return Err(format!("nemesis: --nodes {nodes}: 3 to 9 nodes"));
        }
        let spares = parse("--spares", 2)?;
        if nodes + spares > 12 {
            return Err(format!(
                "nemesis: --nodes {nodes} and --spares {spares}: at most 12 ids in all"
            ));
        }
        Ok((
            nodes,
            parse("--clients", 8)?,
            parse("--keys", 5)?.max(1),
            parse("--seed", rand::random::<u32>() as u64)?,
            spares,
            duration?,
        ))
    })();
    let (nodes, clients, keys, seed, spares, duration) = match numbers {
        Ok(n) => n,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let config = RunConfig {
        nodes: nodes as usize,
        clients: clients as usize,
        keys: keys as usize,
        duration,
        seed,
        nemeses,
        op_timeout: Duration::from_secs(2),
        netns: !args.iter().any(|a| a == "--no-netns"),
        spares: spares as usize,
        report_dir: flag(&args, "--report-dir")
            .map(Into::into)
            .unwrap_or_else(|| std::env::temp_dir().join("raftd-nemesis")),
    };
    println!(
        "nemesis: {} nodes (+{} spare ids), {} clients, {} keys, {:?}, seed {}, nemeses {:?}",
        config.nodes,
        config.spares,
        config.clients,
        config.keys,
        config.duration,
        config.seed,
        config.nemeses
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
        "longest write gap: {:.2} s (from {:.1} s into the run)",
        s.longest_unavailable.as_secs_f64(),
        s.longest_unavailable_from.as_secs_f64()
    );
    println!("fault windows:    {}", s.faults.len());
    for (nemesis, (windows, skipped)) in &s.windows {
        println!(
            "  {:<14} {windows} windows ({skipped} skipped)",
            format!("{nemesis:?}")
        );
    }
    let c = &s.changes;
    println!(
        "membership:       {} changes done ({} added, {} promoted, {} removed), {} refused, {} unknown, {} skipped; {} nodes stopped and wiped",
        c.done, c.added, c.promoted, c.removed, c.refused, c.unknown, c.skipped, c.wiped
    );
    println!(
        "members at end:   voters {:?}, learners {:?}",
        s.final_members.0, s.final_members.1
    );
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
