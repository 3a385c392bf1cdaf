//! Measures what a consistency checkpoint costs at a given store size: the view taken on
//! the event loop (its stall), the hash computed off it, and, for comparison, encoding a
//! snapshot of the same store; then what a write costs the store: a put of a random key
//! over an existing value of the same length, from 256 clients, as `raftctl bench` writes;
//! one by one, then in batches of 128 warmed first (`Kv::warm`), as a replica applies.
//!
//!     cargo run --release -p raftd --example kv-hash-bench -- [KEYS] [SESSIONS]
//!
//! Defaults: 100,000 keys (16-byte keys, 128-byte values, as `raftctl bench` writes) and
//! 1,000 client sessions.

use raftd::kv::{HashKeys, Kv};
use raftd::protocol::{Command, Write};
use std::time::{Duration, Instant};

/// Puts of 128-byte values to random keys out of `keys`, from 256 clients, at log index
/// `index` onwards.
struct Puts {
    state: u64,
    index: u64,
    keys: u64,
}

impl Puts {
    /// The next put (its index is `self.index` afterwards), of `value_byte`s.
    fn next(&mut self, value_byte: u8) -> Command {
        // xorshift: a random key per write, the same on every run.
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        self.index += 1;
        Command {
            client_id: self.state % 256 + 1,
            seq: self.index,
            write: Write::Put {
                key: format!("key-{:012}", self.state % self.keys).into_bytes(),
                value: vec![value_byte; 128],
            },
        }
    }
}

/// The fastest of `runs` runs of `f` (the machine is shared; the minimum is the cost).
fn fastest<T>(runs: usize, mut f: impl FnMut() -> T) -> Duration {
    (0..runs)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(f());
            start.elapsed()
        })
        .min()
        .expect("at least one run")
}

fn main() {
    let mut args = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>().expect("a number"));
    let keys = args.next().unwrap_or(100_000);
    let sessions = args.next().unwrap_or(1_000).max(1);
    let mut kv = Kv::new(sessions as usize, HashKeys::random());
    for i in 0..keys.max(sessions) {
        let command = Command {
            client_id: i % sessions + 1,
            seq: i + 1,
            write: Write::Put {
                key: format!("key-{:012}", i % keys.max(1)).into_bytes(),
                value: vec![b'v'; 128],
            },
        };
        kv.apply(i + 1, 1, &command);
    }
    let writes = 1_000_000u64;
    let mut puts = Puts {
        state: 0x9e37_79b9_7f4a_7c15,
        index: keys.max(sessions),
        keys: keys.max(1),
    };
    let put = fastest(3, || {
        for _ in 0..writes {
            let command = puts.next(b'w');
            kv.apply(puts.index, 1, &command);
        }
    });
    println!(
        "put over an existing key: {:.0} ns per write (commands built in the loop, included)",
        put.as_secs_f64() * 1e9 / writes as f64
    );
    // As the replica applies: a batch of writes made ready first (their commands built,
    // what they touch warmed: `Kv::warm`), then applied one after another. Only the warm
    // and the applies are timed.
    const BATCH: usize = 128;
    let mut fastest_batched = Duration::MAX;
    for _run in 0..3 {
        let mut batched = Duration::ZERO;
        for _ in 0..writes / BATCH as u64 {
            let commands: Vec<Command> = (0..BATCH).map(|_| puts.next(b'x')).collect();
            let touched: Vec<(u64, &[u8])> = commands
                .iter()
                .map(|c| match &c.write {
                    Write::Put { key, .. } => (c.client_id, key.as_slice()),
                    _ => unreachable!("only puts here"),
                })
                .collect();
            let start = Instant::now();
            kv.warm(&touched);
            let first = puts.index - BATCH as u64 + 1;
            for (i, command) in commands.iter().enumerate() {
                kv.apply(first + i as u64, 1, command);
            }
            batched += start.elapsed();
        }
        fastest_batched = fastest_batched.min(batched);
    }
    println!(
        "put in batches of {BATCH}, warmed first: {:.0} ns per write (warm and apply only)",
        fastest_batched.as_secs_f64() * 1e9 / (writes / BATCH as u64 * BATCH as u64) as f64
    );
    let view = fastest(20, || kv.snapshot_view());
    let hash = fastest(10, || kv.snapshot_view().hash());
    let snapshot = fastest(5, || kv.snapshot_view().encode());
    println!(
        "{} keys, {} sessions: view (on the loop) {:.2} ms; hash (off the loop) {:.2} ms; snapshot encode {:.2} ms",
        kv.len(),
        kv.session_count(),
        view.as_secs_f64() * 1e3,
        hash.saturating_sub(view).as_secs_f64() * 1e3,
        snapshot.saturating_sub(view).as_secs_f64() * 1e3
    );
}
