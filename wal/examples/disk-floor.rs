//! What the disk allows a replicated write before any network hop or code runs.
//!
//! A cluster on one machine acknowledges a write once a majority of its nodes has it on
//! disk: each node appends one small record to its own file and makes it durable with
//! `fdatasync`, all at about the same moment, on the same device. The disk's share of a
//! 1-client write is therefore not one `fdatasync` but the time until the majority-th of
//! N concurrent ones returns. This probe measures both on the file system it is given:
//!
//! - `single`: one writer, `pwrite` of `--record` bytes then `fdatasync`, back to back;
//! - `together`: `--members` writers (threads, one file each) released together each round,
//!   the same write; per round the k-th completion counted from the first writer's start.
//!   Rank `members / 2 + 1` is the floor of a replicated write's disk part.
//!
//! It also counts syncs over 5 ms (on a virtual disk they tend to hit every writer at once,
//! which is what a p99 sees). Prints one line of `key=value` pairs, times in microseconds.
//!
//! ```text
//! cargo run --release -p wal --example disk-floor -- [--dir /tmp] [--members 3]
//!     [--rounds 400] [--record 288]
//! ```
//!
//! Its files live in a fresh directory under `--dir` and are removed at the end.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

/// Bytes per probe file, zero-filled and synced first: written extents, as the WAL's
/// segments are (a sync into unwritten extents costs more).
const FILE_BYTES: u64 = 16 << 20;
/// Each write starts a new page, as consecutive small batches mostly do.
const STRIDE: u64 = 4096;
const SLOW: Duration = Duration::from_millis(5);

struct Args {
    dir: PathBuf,
    members: usize,
    rounds: usize,
    record: usize,
}

fn usage(problem: &str) -> ! {
    eprintln!("disk-floor: {problem}");
    eprintln!(
        "usage: disk-floor [--dir DIR] [--members 1-9] [--rounds 1-100000] [--record 1-4096]"
    );
    std::process::exit(1);
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: std::env::temp_dir(),
        members: 3,
        rounds: 400,
        record: 288,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        let number = |v: String, lo: usize, hi: usize| match v.parse::<usize>() {
            Ok(n) if (lo..=hi).contains(&n) => n,
            _ => usage(&format!(
                "{flag} must be a whole number from {lo} to {hi} (got '{v}')"
            )),
        };
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value()),
            "--members" => args.members = number(value(), 1, 9),
            "--rounds" => args.rounds = number(value(), 1, 100_000),
            "--record" => args.record = number(value(), 1, STRIDE as usize),
            "-h" | "--help" => usage("probe the disk's floor for a replicated write"),
            other => usage(&format!("unknown argument '{other}'")),
        }
    }
    if !args.dir.is_dir() {
        usage(&format!("--dir {}: not a directory", args.dir.display()));
    }
    args
}

fn prepare(path: &PathBuf) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let zeros = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < FILE_BYTES {
        file.write_all_at(&zeros, offset)?;
        offset += zeros.len() as u64;
    }
    file.sync_all()?;
    Ok(file)
}

fn write_and_sync(file: &File, data: &[u8], round: usize) -> std::io::Result<()> {
    file.write_all_at(data, (round as u64 * STRIDE) % FILE_BYTES)?;
    file.sync_data()
}

fn single(file: &File, rounds: usize, record: usize) -> std::io::Result<Vec<Duration>> {
    let data = vec![b'r'; record];
    let mut took = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let start = Instant::now();
        write_and_sync(file, &data, round)?;
        took.push(start.elapsed());
    }
    took.sort();
    Ok(took)
}

/// Per rank k (0-based), the sorted times until the (k+1)-th writer was done.
fn together(files: Vec<File>, rounds: usize, record: usize) -> std::io::Result<Vec<Vec<Duration>>> {
    let n = files.len();
    let release = Arc::new(Barrier::new(n));
    let writers: Vec<_> = files
        .into_iter()
        .map(|file| {
            let release = Arc::clone(&release);
            std::thread::spawn(move || -> std::io::Result<Vec<(Instant, Instant)>> {
                let data = vec![b't'; record];
                let mut times = Vec::with_capacity(rounds);
                for round in 0..rounds {
                    release.wait();
                    let began = Instant::now();
                    write_and_sync(&file, &data, round)?;
                    times.push((began, Instant::now()));
                }
                Ok(times)
            })
        })
        .collect();
    let mut per_writer = Vec::with_capacity(n);
    for w in writers {
        per_writer.push(w.join().expect("a writer panicked")?);
    }
    let mut ranks = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        // From the first writer's start: the other threads' wake-ups count against them, as
        // a node's does when the message that starts its write arrives.
        let first = per_writer.iter().map(|t| t[round].0).min().expect("n >= 1");
        let mut done: Vec<Instant> = per_writer.iter().map(|t| t[round].1).collect();
        done.sort();
        for (rank, at) in done.into_iter().enumerate() {
            ranks[rank].push(at - first);
        }
    }
    for r in &mut ranks {
        r.sort();
    }
    Ok(ranks)
}

fn pct(sorted: &[Duration], p: usize) -> u128 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)].as_micros()
}

fn main() {
    let args = parse_args();
    let work = args.dir.join(format!("disk-floor.{}", std::process::id()));
    if let Err(e) = std::fs::create_dir(&work) {
        usage(&format!("cannot create {}: {e}", work.display()));
    }
    let result = (|| -> std::io::Result<_> {
        let mut files = Vec::new();
        for k in 0..args.members {
            files.push(prepare(&work.join(format!("w{k}")))?);
        }
        let one = single(&files[0], args.rounds, args.record)?;
        let ranks = together(files, args.rounds, args.record)?;
        Ok((one, ranks))
    })();
    let _ = std::fs::remove_dir_all(&work);
    let (one, ranks) = match result {
        Ok(r) => r,
        Err(e) => {
            eprintln!("disk-floor: {}: {e}", work.display());
            std::process::exit(1);
        }
    };
    let quorum = args.members / 2 + 1;
    let slow = one
        .iter()
        .chain(ranks.last().expect("members >= 1"))
        .filter(|d| **d > SLOW)
        .count();
    let mut line = format!(
        "disk-floor dir={} members={} rounds={} record={} single_p50_us={} single_p99_us={}",
        args.dir.display(),
        args.members,
        args.rounds,
        args.record,
        pct(&one, 50),
        pct(&one, 99)
    );
    for (rank, times) in ranks.iter().enumerate() {
        line += &format!(" together_rank{}_p50_us={}", rank + 1, pct(times, 50));
    }
    line += &format!(
        " quorum_rank={quorum} quorum_p50_us={} quorum_p99_us={} syncs_over_5ms={slow}",
        pct(&ranks[quorum - 1], 50),
        pct(&ranks[quorum - 1], 99)
    );
    println!("{line}");
}
