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
//! - `path` (with `--path`): the skeleton of a replicated write, nothing else: a client
//!   thread sends the record over loopback TCP to a leader thread, which sends it to the
//!   `members - 1` follower threads, then writes and syncs its own copy; each follower
//!   writes and syncs and answers one byte; the leader answers the client once its own copy
//!   and enough followers' make a majority. Four hops and the syncs, no encoding, no state
//!   machine: what no implementation on this machine can beat. Measured again with a
//!   leader that does not sync (a majority of followers instead, so 3 members or more),
//!   the bound of taking the leader's sync off the critical path.
//!
//! It also counts syncs over 5 ms (on a virtual disk they tend to hit every writer at once,
//! which is what a p99 sees). Prints one line of `key=value` pairs, times in microseconds.
//!
//! ```text
//! cargo run --release -p wal --example disk-floor -- [--dir /tmp] [--members 3]
//!     [--rounds 400] [--record 288] [--path]
//! ```
//!
//! Its files live in a fresh directory under `--dir` and are removed at the end.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
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
    path: bool,
}

fn usage(problem: &str) -> ! {
    eprintln!("disk-floor: {problem}");
    eprintln!(
        "usage: disk-floor [--dir DIR] [--members 1-9] [--rounds 1-100000] [--record 1-4096] [--path]"
    );
    std::process::exit(1);
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: std::env::temp_dir(),
        members: 3,
        rounds: 400,
        record: 288,
        path: false,
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
            "--path" => args.path = true,
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
fn together(
    files: &[Arc<File>],
    rounds: usize,
    record: usize,
) -> std::io::Result<Vec<Vec<Duration>>> {
    let n = files.len();
    let release = Arc::new(Barrier::new(n));
    let writers: Vec<_> = files
        .iter()
        .map(|file| {
            let file = Arc::clone(file);
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

/// One replicated write's skeleton per round (see the module's `path`); the client's
/// round-trip times, sorted.
fn skeleton(
    files: &[Arc<File>],
    rounds: usize,
    record: usize,
    leader_syncs: bool,
) -> std::io::Result<Vec<Duration>> {
    let quorum = files.len() / 2 + 1;
    let needed = quorum - usize::from(leader_syncs);
    let mut follower_addrs = Vec::new();
    let mut threads = Vec::new();
    for file in &files[1..] {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        follower_addrs.push(listener.local_addr()?);
        let file = Arc::clone(file);
        threads.push(std::thread::spawn(move || -> std::io::Result<()> {
            let (mut leader, _) = listener.accept()?;
            leader.set_nodelay(true)?;
            let mut buf = vec![0u8; record];
            for round in 0..rounds {
                leader.read_exact(&mut buf)?;
                write_and_sync(&file, &buf, round)?;
                leader.write_all(&[1])?;
            }
            Ok(())
        }));
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let leader_addr = listener.local_addr()?;
    let own = Arc::clone(&files[0]);
    threads.push(std::thread::spawn(move || -> std::io::Result<()> {
        let (mut client, _) = listener.accept()?;
        client.set_nodelay(true)?;
        let mut followers = Vec::new();
        for addr in follower_addrs {
            let s = TcpStream::connect(addr)?;
            s.set_nodelay(true)?;
            followers.push(s);
        }
        let mut acked = vec![0usize; followers.len()];
        let mut buf = vec![0u8; record];
        for round in 0..rounds {
            client.read_exact(&mut buf)?;
            for f in &mut followers {
                f.write_all(&buf)?;
            }
            if leader_syncs {
                write_and_sync(&own, &buf, round)?;
            }
            while acked.iter().filter(|&&n| n > round).count() < needed {
                // Only the followers still owing this round's answer: one that answered its
                // last round may have closed already.
                let waiting: Vec<usize> = (0..followers.len())
                    .filter(|&k| acked[k] <= round)
                    .collect();
                let mut fds: Vec<libc::pollfd> = waiting
                    .iter()
                    .map(|&k| libc::pollfd {
                        fd: followers[k].as_raw_fd(),
                        events: libc::POLLIN,
                        revents: 0,
                    })
                    .collect();
                // SAFETY: fds is a valid array of pollfd for the call's duration.
                let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
                if n < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                for (&k, fd) in waiting.iter().zip(&fds) {
                    if fd.revents != 0 {
                        let mut answers = [0u8; 64];
                        match followers[k].read(&mut answers)? {
                            0 => return Err(std::io::Error::other("a follower hung up")),
                            got => acked[k] += got,
                        }
                    }
                }
            }
            client.write_all(&[1])?;
        }
        // Every answer read before the sockets close: one closed with unread bytes is reset,
        // and a follower still reading its last records would see them cut off.
        for (k, f) in followers.iter_mut().enumerate() {
            let mut answer = [0u8; 1];
            while acked[k] < rounds {
                f.read_exact(&mut answer)?;
                acked[k] += 1;
            }
        }
        Ok(())
    }));
    let mut leader = TcpStream::connect(leader_addr)?;
    leader.set_nodelay(true)?;
    let data = vec![b'p'; record];
    let mut answer = [0u8; 1];
    let mut took = Vec::with_capacity(rounds);
    let mut client = || -> std::io::Result<()> {
        for _ in 0..rounds {
            let start = Instant::now();
            leader.write_all(&data)?;
            leader.read_exact(&mut answer)?;
            took.push(start.elapsed());
        }
        Ok(())
    };
    let outcome = client();
    drop(leader);
    // A thread's error is the cause of the client's (the leader hung up): it goes first.
    for t in threads {
        t.join().expect("a skeleton thread panicked")?;
    }
    outcome?;
    took.sort();
    Ok(took)
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
        let files: Vec<Arc<File>> = files.into_iter().map(Arc::new).collect();
        let one = single(&files[0], args.rounds, args.record)?;
        let ranks = together(&files, args.rounds, args.record)?;
        // Without the leader's copy, only followers that alone make a majority can answer
        // (3 members or more); with fewer the variant would wait forever.
        let followers_suffice = args.members > args.members / 2 + 1;
        let path = match args.path {
            true => Some((
                skeleton(&files, args.rounds, args.record, true)?,
                match followers_suffice {
                    true => Some(skeleton(&files, args.rounds, args.record, false)?),
                    false => None,
                },
            )),
            false => None,
        };
        Ok((one, ranks, path))
    })();
    let _ = std::fs::remove_dir_all(&work);
    let (one, ranks, path) = match result {
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
    if let Some((synced, unsynced)) = path {
        line += &format!(
            " path_p50_us={} path_p99_us={}",
            pct(&synced, 50),
            pct(&synced, 99)
        );
        if let Some(unsynced) = unsynced {
            line += &format!(" path_leader_unsynced_p50_us={}", pct(&unsynced, 50));
        }
    }
    println!("{line}");
}
