//! The simulator's command line.
//!
//! ```text
//! sim list                                  every scenario
//! sim run NAME --seed S [--trace]           one run; --trace prints every event
//! sim sweep [NAME|all] --seeds N [--first S] [--jobs J]
//!                                           N seeds per scenario: pass/fail counts, runs/s
//! ```

use raftd_tests::runner;
use std::process::ExitCode;
use std::time::Instant;

fn usage() -> ExitCode {
    eprintln!(
        "usage: sim list | sim run NAME --seed S [--trace] | sim sweep [NAME|all] --seeds N [--first S] [--jobs J]"
    );
    ExitCode::from(1)
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("list") => {
            for name in runner::names() {
                println!("{name}");
            }
            ExitCode::SUCCESS
        }
        Some("run") => {
            let Some(name) = args.get(1) else {
                return usage();
            };
            let Some(seed) = flag(&args, "--seed").and_then(|s| s.parse().ok()) else {
                return usage();
            };
            if args.iter().any(|a| a == "--trace") {
                std::env::set_var("SIM_TRACE", "1");
            }
            let started = Instant::now();
            match runner::run_one(name, seed) {
                Ok(o) => {
                    println!(
                        "{name} seed {seed}: ok — {:.1} s virtual, {} events, {} RPCs, {} committed, {} reads, trace {:016x}, {:.2} s wall",
                        o.virtual_time as f64 / 1e6,
                        o.events,
                        o.rpcs,
                        o.committed,
                        o.reads,
                        o.trace_hash,
                        started.elapsed().as_secs_f64()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
        Some("sweep") => sweep(&args[1..]),
        _ => usage(),
    }
}

fn sweep(args: &[String]) -> ExitCode {
    let which = args
        .first()
        .filter(|a| !a.starts_with("--"))
        .cloned()
        .unwrap_or_else(|| "all".into());
    let seeds: u64 = flag(args, "--seeds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let first: u64 = flag(args, "--first")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let jobs: u64 = flag(args, "--jobs")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
    let names: Vec<&str> = if which == "all" {
        runner::names()
    } else {
        match runner::find(&which) {
            Some((n, _)) => vec![n],
            None => return usage(),
        }
    };
    // Failures are collected with their replay lines; the default panic output would only
    // interleave noise from the worker threads.
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let mut total_failed = 0;
    let mut total_runs = 0;
    println!(
        "{:<8} {:>7} {:>7} {:>9} {:>10}",
        "scenario", "passed", "failed", "runs/s", "virtual/s"
    );
    for name in names {
        let t0 = Instant::now();
        // Split the seeds over `jobs` threads; each thread runs its own range.
        let per = seeds.div_ceil(jobs);
        let handles: Vec<_> = (0..jobs)
            .map(|j| {
                let lo = first + j * per;
                let hi = (lo + per).min(first + seeds);
                let name = name.to_string();
                std::thread::spawn(move || runner::sweep(&name, lo, hi.saturating_sub(lo)))
            })
            .collect();
        let mut passed = 0;
        let mut failures = Vec::new();
        let mut virtual_seconds = 0.0;
        for h in handles {
            let r = h.join().expect("sweep thread");
            passed += r.passed;
            failures.extend(r.failures);
            virtual_seconds += r.virtual_seconds;
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{:<8} {:>7} {:>7} {:>9.1} {:>10.0}",
            name,
            passed,
            failures.len(),
            seeds as f64 / secs,
            virtual_seconds / secs
        );
        for f in failures.iter().take(5) {
            println!("  {f}");
        }
        total_failed += failures.len();
        total_runs += seeds;
    }
    println!(
        "total: {total_runs} runs, {total_failed} failed, {:.1} s, {:.1} runs/s",
        started.elapsed().as_secs_f64(),
        total_runs as f64 / started.elapsed().as_secs_f64()
    );
    if total_failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
