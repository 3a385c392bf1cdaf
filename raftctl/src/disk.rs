//! `raftctl check disk DIR`: is this disk fast enough to hold a WAL? Measures what the WAL
//! waits for, the way it does it (through `wal::StdBackend` with raftd's default write mode:
//! a preallocated, zero-filled, memory-mapped file; each write copied in with pwrite and made
//! durable with fdatasync before the next), and judges it by etcd's guidance: the 99th percentile of
//! fdatasync under 10 ms. Exit codes: 0 fit; 2 not fit (or no room to measure); 1 bad usage.

use crate::failure::Failure;
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use wal::{Backend, Pace, SegmentMap, StdBackend};

/// etcd's guidance for its WAL disk: p99 fdatasync under this.
const SYNC_P99_FIT: Duration = Duration::from_millis(10);
/// Bytes per synced write in the latency test: the size etcd's documented fio check uses
/// (2300 bytes), rounded up to the WAL's 8-byte record alignment.
const SYNC_WRITE_BYTES: usize = 2304;
/// Bytes per synced write in the throughput test: a large group commit.
const THROUGHPUT_WRITE_BYTES: usize = 1 << 20;
/// The latency test stops after this long even if not all its writes are done.
const SYNC_TEST_MAX: Duration = Duration::from_secs(30);

/// `raftctl check disk`'s arguments.
#[derive(Args, Debug)]
pub struct DiskArgs {
    /// The directory to test (where the node's data directory would be).
    dir: PathBuf,
    /// Synced writes to time for the latency percentiles.
    #[arg(long, default_value_t = 1000)]
    syncs: usize,
    /// MiB to write for the throughput figure.
    #[arg(long, default_value_t = 64)]
    mib: u64,
}

/// What was measured.
struct Measured {
    samples: usize,
    p50: Duration,
    p99: Duration,
    max: Duration,
    throughput_mib_per_sec: f64,
}

/// Runs the check and prints the verdict.
pub fn run(args: &DiskArgs, json: bool) -> Result<(), Failure> {
    if !args.dir.is_dir() {
        return Err(Failure::Usage(format!(
            "{} is not a directory",
            args.dir.display()
        )));
    }
    if args.syncs < 100 || args.mib == 0 {
        return Err(Failure::Usage(
            "--syncs must be at least 100 (for a p99) and --mib at least 1".into(),
        ));
    }
    let path = args
        .dir
        .join(format!("raftctl-check-disk-{}.tmp", std::process::id()));
    let measured = measure(&path, args);
    let _ = std::fs::remove_file(&path);
    let m = measured?;
    let fit = m.p99 < SYNC_P99_FIT;
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    if json {
        out!(
            "{}",
            serde_json::json!({"ok": fit, "dir": args.dir, "syncs": m.samples,
                "sync_bytes": SYNC_WRITE_BYTES, "fdatasync_p50_ms": ms(m.p50),
                "fdatasync_p99_ms": ms(m.p99), "fdatasync_max_ms": ms(m.max),
                "write_mib_per_sec": m.throughput_mib_per_sec, "fit": fit})
        );
    } else {
        out!(
            "fdatasync latency ({} synced writes of {SYNC_WRITE_BYTES} bytes): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            m.samples,
            ms(m.p50),
            ms(m.p99),
            ms(m.max)
        );
        out!(
            "sequential write throughput (1 MiB writes, each synced): {:.1} MiB/s",
            m.throughput_mib_per_sec
        );
        if fit {
            out!(
                "FIT: p99 fdatasync {:.2} ms is under 10 ms (etcd's guidance for a WAL disk)",
                ms(m.p99)
            );
        } else {
            out!(
                "NOT FIT: p99 fdatasync {:.2} ms is over 10 ms (etcd's guidance for a WAL disk); expect slow writes and leader elections under load",
                ms(m.p99)
            );
        }
    }
    if fit {
        Ok(())
    } else {
        Err(Failure::Reported(2))
    }
}

fn measure(path: &Path, args: &DiskArgs) -> Result<Measured, Failure> {
    let sync_bytes = (args.syncs * SYNC_WRITE_BYTES) as u64;
    let (mut latencies, _) = timed_syncs(path, sync_bytes, SYNC_WRITE_BYTES, SYNC_TEST_MAX)?;
    let _ = std::fs::remove_file(path);
    let bytes = args.mib << 20;
    // Timed from the first write: creating (and zero-filling) the file is the WAL's work
    // ahead of need, not part of a write.
    let (_, elapsed) = timed_syncs(path, bytes, THROUGHPUT_WRITE_BYTES, Duration::MAX)?;
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    Ok(Measured {
        samples: latencies.len(),
        p50: at(0.50),
        p99: at(0.99),
        max: at(1.0),
        throughput_mib_per_sec: bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64(),
    })
}

/// Creates a segment of `bytes` the way the WAL does, fills it with writes of `write_bytes`
/// each made durable before the next, and returns how long each sync took and how long the
/// writes took in all (stopping after `limit`).
fn timed_syncs(
    path: &Path,
    bytes: u64,
    write_bytes: usize,
    limit: Duration,
) -> Result<(Vec<Duration>, Duration), Failure> {
    let mut map: Box<dyn SegmentMap> = StdBackend::default()
        .create_segment(path, bytes, Pace::Now)
        .map_err(|e| {
            Failure::Definite(format!(
                "cannot create a {bytes}-byte test file {}: {e}{}",
                path.display(),
                if e.raw_os_error() == Some(28) {
                    " (the disk is full: not fit to hold a WAL)"
                } else {
                    ""
                }
            ))
        })?;
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut at = 0;
    let mut fill = 1u8;
    while at + write_bytes <= bytes as usize && started.elapsed() < limit {
        map.write_at(at, write_bytes).fill(fill);
        fill = fill.wrapping_add(1);
        let t = Instant::now();
        map.sync(at, write_bytes)
            .map_err(|e| Failure::Definite(format!("sync of {} failed: {e}", path.display())))?;
        latencies.push(t.elapsed());
        at += write_bytes;
    }
    Ok((latencies, started.elapsed()))
}
