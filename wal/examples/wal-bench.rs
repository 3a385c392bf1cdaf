//! The WAL benchmark: group-commit latency and throughput next to raw write + fdatasync on the
//! same disk, recovery scan speed, and disk use under compaction.
//!
//! ```text
//! cargo run --release -p wal --example wal-bench -- --dir /tmp/wal-bench [--recovery-mib 1024]
//!     [--compaction-appends 1000000] [--seconds 3] [--only commit|recovery|compaction]
//!     [--entry-bytes 128] [--batches 1,16,256]
//! ```
//!
//! Large entries (`--only commit --entry-bytes 65536 --batches 16 --seconds 30`) make the
//! commit phase disk-bound: appends then outrun the paced zero-fill of the next segment, and
//! the WAL columns show how many rollovers created their segment unfilled.
//!
//! The directory is created if needed and emptied between phases; do not point it at data.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use raft::{Entry, EntryKind, LogIndex, Snapshot, SnapshotMeta, Term};
use wal::{Wal, WalOptions};

/// Data bytes per entry (`--entry-bytes`), in every phase.
static ENTRY_DATA_BYTES: AtomicUsize = AtomicUsize::new(128);

fn entry_data_bytes() -> usize {
    ENTRY_DATA_BYTES.load(Ordering::Relaxed)
}

struct Args {
    dir: PathBuf,
    recovery_mib: u64,
    compaction_appends: u64,
    seconds: f64,
    only: Option<String>,
    /// Entries per batch in the commit phase, one row each.
    batches: Vec<u64>,
}

fn parse_args() -> Args {
    let mut args = Args {
        dir: PathBuf::from("/tmp/wal-bench"),
        recovery_mib: 1024,
        compaction_appends: 1_000_000,
        seconds: 3.0,
        only: None,
        batches: vec![1, 16, 256],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--dir" => args.dir = PathBuf::from(value),
            "--recovery-mib" => args.recovery_mib = value.parse().expect("--recovery-mib N"),
            "--compaction-appends" => {
                args.compaction_appends = value.parse().expect("--compaction-appends N")
            }
            "--seconds" => args.seconds = value.parse().expect("--seconds S"),
            "--only" => args.only = Some(value),
            "--entry-bytes" => {
                ENTRY_DATA_BYTES.store(value.parse().expect("--entry-bytes N"), Ordering::Relaxed)
            }
            "--batches" => {
                args.batches = value
                    .split(',')
                    .map(|n| n.parse().expect("--batches N,N,..."))
                    .collect()
            }
            other => panic!("unknown flag {other}"),
        }
    }
    args
}

fn fresh_dir(path: &Path) {
    let _ = fs::remove_dir_all(path);
    fs::create_dir_all(path).expect("create the benchmark directory");
}

fn entries(first: u64, count: u64) -> Vec<Entry> {
    (first..first + count)
        .map(|i| Entry {
            index: LogIndex(i),
            term: Term(1),
            kind: EntryKind::Normal,
            data: vec![(i % 251) as u8; entry_data_bytes()].into(),
        })
        .collect()
}

/// Latencies of the measured operations.
struct Samples(Vec<Duration>);

impl Samples {
    fn percentile(&mut self, p: f64) -> Duration {
        self.0.sort_unstable();
        let rank = ((self.0.len() as f64 - 1.0) * p).round() as usize;
        self.0[rank]
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// WAL bytes per batch: the entry records plus the commit record.
fn wal_batch_bytes(batch: u64) -> usize {
    let entry = wal::format::entry_record_bytes(&entries(1, 1)[0]);
    let batch_bytes = entry * batch as usize;
    batch_bytes + wal::format::commit_record_bytes(0, batch_bytes)
}

const RAW_FILE_BYTES: u64 = 16 << 20;
const ROUNDS: u32 = 6;

/// A preallocated file for the raw baseline: zero-filled and fsynced, or fallocated the way
/// WAL segments are (unwritten extents).
fn raw_file(dir: &Path, name: &str, zero_filled: bool) -> File {
    let path = dir.join(name);
    let _ = fs::remove_file(&path);
    if !zero_filled {
        use wal::Backend;
        drop(
            wal::StdBackend::default()
                .create_segment(&path, RAW_FILE_BYTES, wal::Pace::Unfilled)
                .unwrap(),
        );
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .unwrap();
    if zero_filled {
        let zeros = vec![0u8; 1 << 20];
        for i in 0..RAW_FILE_BYTES >> 20 {
            file.write_all_at(&zeros, i << 20).unwrap();
        }
    }
    file.sync_all().unwrap();
    File::open(dir).unwrap().sync_all().unwrap();
    file
}

/// pwrite + fdatasync of `bytes` at consecutive offsets (wrapping around) for `seconds`.
fn raw_round(
    file: &File,
    offset: &mut u64,
    bytes: usize,
    seconds: f64,
    samples: &mut Vec<Duration>,
) {
    let data = vec![0x5au8; bytes];
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        if *offset + bytes as u64 > RAW_FILE_BYTES {
            *offset = 0;
        }
        let t = Instant::now();
        file.write_all_at(&data, *offset).unwrap();
        file.sync_data().unwrap();
        samples.push(t.elapsed());
        *offset += bytes as u64;
    }
}

/// Appends batches and persists each, for `seconds`, timing append + persist of each batch.
fn wal_round(wal: &mut Wal, next: &mut u64, batch: u64, seconds: f64, samples: &mut Vec<Duration>) {
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < seconds {
        let batch_entries = entries(*next, batch);
        let t = Instant::now();
        wal.append(&batch_entries).unwrap();
        wal.persist().unwrap();
        samples.push(t.elapsed());
        *next += batch;
    }
}

fn mean(samples: &Samples) -> Duration {
    samples.0.iter().sum::<Duration>() / samples.0.len().max(1) as u32
}

fn bench_group_commit(args: &Args) {
    println!(
        "== group commit: {}-byte entries, persist() after each batch ==",
        entry_data_bytes()
    );
    println!(
        "{:>5} {:>6} | {:>11} {:>8} {:>8} | {:>11} {:>8} {:>8} | {:>11} {:>8} {:>8} | {:>8} {:>8}",
        "batch",
        "bytes",
        "pwrite e/s",
        "p50 us",
        "p99 us",
        "mmap e/s",
        "p50 us",
        "p99 us",
        "raw e/s",
        "p50 us",
        "p99 us",
        "fa p50",
        "fa p99",
    );
    let dir = args.dir.join("commit");
    let round_seconds = args.seconds / f64::from(ROUNDS);
    for &batch in &args.batches {
        fresh_dir(&dir);
        let open = |name: &str, write: wal::WriteMode| {
            let wal_dir = dir.join(name);
            fs::create_dir(&wal_dir).unwrap();
            let options = WalOptions {
                backend: std::sync::Arc::new(wal::StdBackend::new(write)),
                ..WalOptions::default()
            };
            Wal::open(&wal_dir, options).unwrap().0
        };
        let mut by_pwrite = open("wal-pwrite", wal::WriteMode::Pwrite);
        let mut by_mmap = open("wal-mmap", wal::WriteMode::Mmap);
        let bytes = wal_batch_bytes(batch);
        let zero_filled = raw_file(&dir, "raw-zero-filled", true);
        let fallocated = raw_file(&dir, "raw-fallocated", false);
        let mut samples: [Vec<Duration>; 4] = Default::default();
        let (mut next_pwrite, mut next_mmap) = (1, 1);
        let (mut raw_offset, mut fa_offset) = (0, 0);
        // Short interleaved rounds, so disk noise (other tenants, writeback) hits all four.
        for _ in 0..ROUNDS {
            let [pwrite, mmap, raw, fa] = &mut samples;
            wal_round(
                &mut by_pwrite,
                &mut next_pwrite,
                batch,
                round_seconds,
                pwrite,
            );
            wal_round(&mut by_mmap, &mut next_mmap, batch, round_seconds, mmap);
            raw_round(&zero_filled, &mut raw_offset, bytes, round_seconds, raw);
            raw_round(&fallocated, &mut fa_offset, bytes, round_seconds / 2.0, fa);
        }
        let unfilled = [by_pwrite.segments_unfilled(), by_mmap.segments_unfilled()];
        let [pwrite, mmap, raw, mut fa] = samples.map(Samples);
        let columns = |mut s: Samples| {
            let rate = batch as f64 / mean(&s).as_secs_f64();
            (rate, micros(s.percentile(0.5)), micros(s.percentile(0.99)))
        };
        let (p, m, r) = (columns(pwrite), columns(mmap), columns(raw));
        println!(
            "{:>5} {:>6} | {:>11.0} {:>8.1} {:>8.1} | {:>11.0} {:>8.1} {:>8.1} | {:>11.0} {:>8.1} {:>8.1} | {:>8.1} {:>8.1}",
            batch, bytes, p.0, p.1, p.2, m.0, m.1, m.2, r.0, r.1, r.2,
            micros(fa.percentile(0.5)),
            micros(fa.percentile(0.99)),
        );
        if unfilled != [0, 0] {
            println!(
                "      rollovers that created their segment unfilled: pwrite {}, mmap {}",
                unfilled[0], unfilled[1]
            );
        }
    }
    fs::remove_dir_all(&dir).unwrap();
    println!("pwrite / mmap = the WAL's append + persist with each write mode (--wal-write), one WAL each;");
    println!("raw = pwrite + fdatasync of the same bytes per batch at consecutive offsets of a zero-filled,");
    println!("fsynced 16 MiB file; fa = the same into a fallocated file (unwritten extents);");
    println!("e/s = entries per second = batch / mean latency; {ROUNDS} interleaved rounds.");
}

fn bench_recovery(args: &Args) {
    let dir = args.dir.join("recovery");
    fresh_dir(&dir);
    let target = args.recovery_mib << 20;
    let batch = 4096u64;
    let (mut wal, _) = Wal::open(&dir, WalOptions::default()).unwrap();
    let mut next = 1;
    let start = Instant::now();
    while (next - 1) * (wal::format::entry_record_bytes(&entries(1, 1)[0]) as u64) < target {
        wal.append(&entries(next, batch)).unwrap();
        wal.persist().unwrap();
        next += batch;
    }
    let write_time = start.elapsed();
    let disk = wal.disk_bytes();
    drop(wal);
    let mib = disk as f64 / f64::from(1 << 20);
    println!("== recovery ==");
    let log_bytes = (next - 1) * wal::format::entry_record_bytes(&entries(1, 1)[0]) as u64;
    println!(
        "wrote {} entries ({:.0} MiB of records, {mib:.0} MiB of preallocated segments) in {:.1}s",
        next - 1,
        log_bytes as f64 / f64::from(1 << 20),
        write_time.as_secs_f64()
    );
    for cold in [true, false] {
        if cold {
            drop_page_cache(&dir);
        }
        let start = Instant::now();
        let (wal, recovered) = Wal::open(&dir, WalOptions::default()).unwrap();
        let open_time = start.elapsed();
        assert_eq!(recovered.last_index, LogIndex(next - 1));
        println!(
            "open ({}): {} segments in {:.2}s = {:.0} MB/s of records ({:.0} MB/s of segment files)",
            if cold { "page cache dropped for the segments" } else { "page cache warm" },
            wal.segment_count(),
            open_time.as_secs_f64(),
            log_bytes as f64 / 1e6 / open_time.as_secs_f64(),
            disk as f64 / 1e6 / open_time.as_secs_f64()
        );
    }
    fs::remove_dir_all(&dir).unwrap();
}

/// Asks the kernel to drop the cached pages of the files in `dir` (GNU dd's documented
/// `iflag=nocache count=0` idiom), so the next open reads from the disk.
fn drop_page_cache(dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let status = std::process::Command::new("dd")
            .arg(format!("if={}", path.display()))
            .args(["iflag=nocache", "count=0", "status=none"])
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            println!(
                "(could not drop the page cache for {}; the cold figure is warm)",
                path.display()
            );
        }
    }
}

fn bench_compaction(args: &Args) {
    let dir = args.dir.join("compaction");
    fresh_dir(&dir);
    let (mut wal, _) = Wal::open(&dir, WalOptions::default()).unwrap();
    let (batch, every) = (100u64, 10_000u64);
    let mut next = 1;
    let mut max_files = 0;
    let start = Instant::now();
    while next <= args.compaction_appends {
        wal.append(&entries(next, batch)).unwrap();
        wal.persist().unwrap();
        next += batch;
        if (next - 1) % every == 0 {
            let meta = SnapshotMeta {
                index: LogIndex(next - 1),
                term: Term(1),
            };
            wal.save_snapshot(&Snapshot {
                configuration: raft::Configuration::default(),
                meta,
                data: vec![7; 4096],
            })
            .unwrap();
            max_files = max_files.max(fs::read_dir(&dir).unwrap().count());
        }
    }
    let files: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    println!("== compaction ==");
    println!(
        "{} appends (batches of {batch}, snapshot every {every}) in {:.1}s: at most {max_files} files in the dir (incl. LOCK); at the end {:?}, {:.1} MiB",
        next - 1,
        start.elapsed().as_secs_f64(),
        files,
        wal.disk_bytes() as f64 / (1 << 20) as f64
    );
    drop(wal);
    fs::remove_dir_all(&dir).unwrap();
}

fn main() {
    let args = parse_args();
    fs::create_dir_all(&args.dir).expect("create the benchmark directory");
    let run = |phase: &str| args.only.as_deref().is_none_or(|only| only == phase);
    if run("commit") {
        bench_group_commit(&args);
    }
    if run("recovery") {
        bench_recovery(&args);
    }
    if run("compaction") {
        bench_compaction(&args);
    }
}
