//! The replicated state machine: a key-value store with client sessions (thesis ch. 6).
//!
//! Every replica applies the same commands in the same order and must reach the same state,
//! so everything here is deterministic: sessions are evicted by log index, never by clock.
//! A session remembers the outcome of the client's latest write; a retry of that write (same
//! client id and sequence number) gets the remembered outcome instead of being applied
//! again, which makes writes exactly-once across client retries and leader changes.

use crate::consistency::xxh64;
use crate::protocol::{CommandRef, Outcome, Response, WriteRef};
use hashbrown::{hash_table, HashTable};
use raft::codec::{Reader, Truncated, Writer};
use siphasher::sip::SipHasher13;
use std::collections::{hash_map, HashMap, VecDeque};
use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

/// The keys of the store's hash function, chosen by whoever creates the store: random for
/// the daemon ([`HashKeys::random`]), so that no client can pick keys that collide and
/// pile up in one shard or one bucket; derived from the run's seed in the deterministic
/// simulator ([`HashKeys::from_seed`]), where the order the keys are stored in decides the
/// bytes of every snapshot (format version 2 writes them in that order), and so where a
/// simulated bit rot lands in one and what a run does next: the same seed must replay the
/// same run.
///
/// The function is SipHash-1-3, the one std's `RandomState` uses, from the `siphasher`
/// crate: `RandomState` draws its keys itself and takes none. Each use in a store gets keys
/// of its own, the creator's first key plus a number (the keys' tables use the creator's
/// keys, the session table its first key plus one), as std gives each `RandomState::new()`
/// of a thread the previous first key plus one.
#[derive(Clone, Copy)]
pub struct HashKeys {
    k0: u64,
    k1: u64,
}

impl HashKeys {
    /// Keys from the operating system's random source: the daemon's.
    pub fn random() -> HashKeys {
        use rand::RngCore;
        let mut os = rand::rngs::OsRng;
        HashKeys {
            k0: os.next_u64(),
            k1: os.next_u64(),
        }
    }

    /// Keys derived from `seed` (SplitMix64): for the simulator and tests, never for a
    /// daemon that serves clients (the keys are no secret).
    pub fn from_seed(seed: u64) -> HashKeys {
        HashKeys {
            k0: splitmix64(seed),
            k1: splitmix64(seed ^ 0x6b65_7973_6b65_7973),
        }
    }

    /// The keys of the store's `n`th use of them.
    fn nth(self, n: u64) -> HashKeys {
        HashKeys {
            k0: self.k0.wrapping_add(n),
            k1: self.k1,
        }
    }
}

/// No keys in debug output: they are what keeps a client from choosing colliding keys.
impl fmt::Debug for HashKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HashKeys(..)")
    }
}

impl BuildHasher for HashKeys {
    type Hasher = SipHasher13;

    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

/// SplitMix64's output function (Steele, Lea and Flood, 2014): spreads a seed over 64 bits.
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// How many client sessions are kept by default. The oldest (by last write's log index) is
/// evicted first; a client evicted and then retrying an old write is told so.
pub const SESSIONS_MAX_DEFAULT: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Session {
    seq: u64,
    outcome: Outcome,
    /// Log index of the session's last write; the eviction order.
    last_index: u64,
}

/// How many tables the keys are spread over (see [`Store`]). The first write to a shard a
/// view still holds copies it on the event loop, a reference count touched per key, a cache
/// miss each: with 256 shards a store of 10 M keys copied 39,000 keys per shard, and a
/// batch of a hundred writes right after a snapshot began copied a hundred shards (the
/// 10 M-key fill of `tests/bench/scale.sh` had a 1.46 s gap between writes, longer than an
/// election timeout); with 4,096, 2,400 keys each, its longest gap was 150-220 ms. The
/// price is a larger array of shards to find a key's table in (160 KB instead of 10 KB).
const SHARDS: usize = 4096;

/// One shard's keys: a hash table of records, searched by key.
type Table = HashTable<Record>;

/// The keys, spread by hash over [`SHARDS`] tables. A snapshot view shares the [`SHARDS`]
/// tables behind reference counts instead of taking one reference per key (the event loop
/// stalled 10-28 ms taking a view of 100,000 keys); a write to a shard a view still holds
/// copies that shard first (a reference per key it holds), which spreads the copying over the
/// writes that follow instead of stalling on it at once.
///
/// A key is hashed once per lookup: bits 44-55 of its hash pick the shard, and the whole
/// hash places it in that shard's table (which uses the low bits for the bucket and the top
/// seven as its tag, neither overlapping the shard's bits).
#[derive(Clone)]
struct Store {
    shards: Vec<Shard>,
    /// Hashes keys, with keys of its own so that clients cannot pick keys that collide.
    hasher: HashKeys,
    len: usize,
}

impl Store {
    /// An empty store hashing with `keys`.
    fn new(keys: HashKeys) -> Store {
        Store {
            shards: (0..SHARDS).map(|_| Shard::Own(Table::new())).collect(),
            hasher: keys,
            len: 0,
        }
    }

    /// The key's shard and hash.
    fn locate(&self, key: &[u8]) -> (usize, u64) {
        let hash = self.hasher.hash_one(key);
        ((hash >> 44) as usize % SHARDS, hash)
    }

    fn get(&self, key: &[u8]) -> Option<&Record> {
        let (shard, hash) = self.locate(key);
        self.shards[shard].table().find(hash, |r| r.key() == key)
    }

    /// The key's slot in its shard's table (a shard a view shares is copied first), with the
    /// key count, which a filled vacant slot must raise.
    fn slot(&mut self, key: &[u8]) -> (hash_table::Entry<'_, Record>, &mut usize) {
        let (shard, hash) = self.locate(key);
        let Store {
            shards,
            hasher,
            len,
        } = self;
        let slot =
            shards[shard]
                .table_mut()
                .entry(hash, |r| r.key() == key, |r| hasher.hash_one(r.key()));
        (slot, len)
    }

    /// Sets `key` to `value`, returning the data bytes of the value it replaces. A record no
    /// view shares, whose value keeps its length, is overwritten in place: no allocation
    /// and no free per write (the common case of a store whose values are rewritten).
    fn put(&mut self, key: &[u8], value: &[u8]) -> Option<u64> {
        match self.slot(key) {
            (hash_table::Entry::Occupied(mut slot), _) => {
                let record = slot.get_mut();
                let old = record.data_bytes();
                if !record.overwrite_value(value) {
                    *record = Record::new(key, value);
                }
                Some(old)
            }
            (hash_table::Entry::Vacant(slot), len) => {
                slot.insert(Record::new(key, value));
                *len += 1;
                None
            }
        }
    }

    /// Inserts `record` unless its key is present; false (and nothing changed) if it is.
    fn insert_new(&mut self, record: Record) -> bool {
        match self.slot(record.key()) {
            (hash_table::Entry::Occupied(_), _) => false,
            (hash_table::Entry::Vacant(slot), len) => {
                slot.insert(record);
                *len += 1;
                true
            }
        }
    }

    fn take(&mut self, key: &[u8]) -> Option<Record> {
        let (shard, hash) = self.locate(key);
        // Only a shard that holds the key is written (and maybe copied).
        self.shards[shard].table().find(hash, |r| r.key() == key)?;
        let taken = self.shards[shard]
            .table_mut()
            .find_entry(hash, |r| r.key() == key)
            .ok()
            .map(|slot| slot.remove().0);
        self.len -= usize::from(taken.is_some());
        taken
    }

    fn iter(&self) -> impl Iterator<Item = &Record> {
        self.shards.iter().flat_map(|shard| shard.table().iter())
    }

    /// Every shard, shared with a view (see [`Shard`]).
    fn share(&mut self) -> Vec<Arc<Table>> {
        self.shards.iter_mut().map(Shard::share).collect()
    }
}

/// One shard of the [`Store`]: owned while no snapshot view holds it, so a write changes it
/// in place (a shared table behind `Arc::make_mut` cost an atomic compare-and-swap per write
/// on a count line that 100,000 keys' worth of misses kept evicting: 3-4 % of a node's CPU
/// at 256 clients); shared once a view took it, and copied by the first write after, if
/// the view still holds it then.
#[derive(Clone)]
enum Shard {
    Own(Table),
    Shared(Arc<Table>),
}

impl Shard {
    fn table(&self) -> &Table {
        match self {
            Shard::Own(table) => table,
            Shard::Shared(table) => table,
        }
    }

    fn table_mut(&mut self) -> &mut Table {
        if let Shard::Shared(_) = self {
            let Shard::Shared(shared) = std::mem::replace(self, Shard::Own(Table::new())) else {
                unreachable!("matched above")
            };
            *self = Shard::Own(Arc::unwrap_or_clone(shared));
        }
        match self {
            Shard::Own(table) => table,
            Shard::Shared(_) => unreachable!("owned above"),
        }
    }

    fn share(&mut self) -> Arc<Table> {
        if let Shard::Own(table) = self {
            *self = Shard::Shared(Arc::new(std::mem::take(table)));
        }
        match self {
            Shard::Shared(shared) => shared.clone(),
            Shard::Own(_) => unreachable!("shared above"),
        }
    }
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Bytes of the key length at the start of a [`Record`].
const RECORD_KEY_LEN_BYTES: usize = 4;

/// One key and its value in a single shared allocation: `key length (u32 LE) | key | value`.
/// The store's tables find it by its key alone. A key-value pair as two `Vec`s costs two
/// allocations and a 48-byte slot; this is one allocation and a 16-byte slot, about 70 bytes
/// less per key at 128-byte values (the store dominates a node's memory). The allocation is
/// shared, so a snapshot takes the records by reference count and serializes them on
/// another thread while the store moves on; a write changes a record in place only while
/// nothing else holds it (`Record::overwrite_value`), and replaces it otherwise.
#[derive(Clone)]
struct Record(Arc<[u8]>);

impl Record {
    fn new(key: &[u8], value: &[u8]) -> Record {
        let key_len = u32::try_from(key.len()).expect("keys are bounded far below 4 GiB");
        let len = RECORD_KEY_LEN_BYTES + key.len() + value.len();
        // One allocation, filled in place (a `Vec` turned into an `Arc` is allocated and
        // copied twice: a fifth of a follower's allocations).
        let mut bytes: Arc<[u8]> = std::iter::repeat_n(0, len).collect();
        let buf = Arc::get_mut(&mut bytes).expect("a new allocation has one owner");
        let (head, rest) = buf.split_at_mut(RECORD_KEY_LEN_BYTES);
        let (key_part, value_part) = rest.split_at_mut(key.len());
        head.copy_from_slice(&key_len.to_le_bytes());
        key_part.copy_from_slice(key);
        value_part.copy_from_slice(value);
        Record(bytes)
    }

    fn key_end(&self) -> usize {
        let len: [u8; RECORD_KEY_LEN_BYTES] = self.0[..RECORD_KEY_LEN_BYTES]
            .try_into()
            .expect("a record starts with its key length");
        RECORD_KEY_LEN_BYTES + u32::from_le_bytes(len) as usize
    }

    fn key(&self) -> &[u8] {
        &self.0[RECORD_KEY_LEN_BYTES..self.key_end()]
    }

    fn value(&self) -> &[u8] {
        &self.0[self.key_end()..]
    }

    /// Replaces the value in place when no one else holds the record (no snapshot view)
    /// and the new value has the old one's length; false, changing nothing, otherwise.
    fn overwrite_value(&mut self, value: &[u8]) -> bool {
        let key_end = self.key_end();
        match Arc::get_mut(&mut self.0) {
            Some(bytes) if bytes.len() == key_end + value.len() => {
                bytes[key_end..].copy_from_slice(value);
                true
            }
            _ => false,
        }
    }

    /// Bytes of key and value, as `Kv::data_bytes` counts them.
    fn data_bytes(&self) -> u64 {
        (self.0.len() - RECORD_KEY_LEN_BYTES) as u64
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}={:?}", self.key(), self.value())
    }
}

/// The key-value store and its session table.
#[derive(Debug)]
pub struct Kv {
    /// Every key with its value. Unordered: a hash lookup is a fraction of a B-tree's key
    /// comparisons (a fifth of a node's CPU at 100,000 keys went to B-tree inserts); the
    /// snapshot sorts.
    data: Store,
    /// By client id, which a client chooses: hashed with the store's keys too.
    sessions: HashMap<u64, Session, HashKeys>,
    /// The eviction order.
    order: EvictionOrder,
    sessions_max: usize,
    /// Bytes of keys and values held.
    data_bytes: u64,
}

/// Equal stores hold the same keys with the same values and the same sessions.
impl PartialEq for Kv {
    fn eq(&self, other: &Kv) -> bool {
        self.data.len == other.data.len
            && self
                .data
                .iter()
                .all(|r| other.data.get(r.key()).is_some_and(|o| o.0 == r.0))
            && self.sessions == other.sessions
            && self
                .order
                .live(&self.sessions)
                .eq(other.order.live(&other.sessions))
            && self.sessions_max == other.sessions_max
            && self.data_bytes == other.data_bytes
    }
}

impl Eq for Kv {}

impl Kv {
    /// An empty store keeping at most `sessions_max` sessions, hashing with `keys`.
    pub fn new(sessions_max: usize, keys: HashKeys) -> Kv {
        Kv {
            data: Store::new(keys),
            sessions: HashMap::with_hasher(keys.nth(1)),
            order: EvictionOrder::default(),
            sessions_max: sessions_max.max(1),
            data_bytes: 0,
        }
    }

    /// Reads a key.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.data.get(key).map(Record::value)
    }

    /// Brings what a batch of writes will touch into the cache before it is applied, so that
    /// the misses overlap: a write's lookup is three dependent cache misses at 100,000 keys
    /// (the table's control bytes, its slot, the record), a fifth of a follower's CPU, and
    /// one lookup after another waits for each in turn. Here each step is a tight loop over
    /// the batch whose loads do not depend on one another: every key's probe, which takes a
    /// slot's address without reading it (the first slot whose hash tag matches: a wrong one
    /// costs a useless load, nothing more), then every slot, then every record's lines, and
    /// every writer's session. `writes` holds (client id, key) pairs. Only reads; what the
    /// store holds does not change.
    pub fn warm(&self, writes: &[(u64, &[u8])]) {
        const CACHE_LINE_BYTES: usize = 64;
        const WARM_LINES_MAX: usize = 8;
        const STEP: usize = 32;
        for step in writes.chunks(STEP) {
            let mut found: [Option<&Record>; STEP] = [None; STEP];
            for (at, (_, key)) in found.iter_mut().zip(step) {
                let (shard, hash) = self.data.locate(key);
                *at = self.data.shards[shard].table().find(hash, |_| true);
            }
            let mut lengths = 0usize;
            for record in found.iter().flatten() {
                lengths = lengths.wrapping_add(record.0.len());
            }
            // Every cache line an overwrite in place reads or writes: the counts in front of
            // the bytes (`Arc::get_mut` reads them) and each line of a small record; a large
            // record's first and last bytes only (the copy streams the rest).
            let mut bytes = 0u8;
            for record in found.iter().flatten() {
                let all = &record.0;
                let stride = if all.len() <= WARM_LINES_MAX * CACHE_LINE_BYTES {
                    CACHE_LINE_BYTES
                } else {
                    all.len()
                };
                bytes ^= std::sync::Arc::strong_count(all) as u8 ^ all[all.len() - 1];
                for at in (0..all.len()).step_by(stride) {
                    bytes ^= all[at];
                }
            }
            let mut seqs = 0u64;
            for (client_id, _) in step {
                seqs ^= self.sessions.get(client_id).map_or(0, |s| s.seq);
            }
            std::hint::black_box((lengths, bytes, seqs));
        }
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.data.len == 0
    }

    /// Number of client sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Applies the command at log position (`index`, `term`) and returns its outcome. A
    /// retry of the session's latest write returns the first outcome unchanged.
    pub fn apply<'a>(
        &mut self,
        index: u64,
        term: u64,
        command: impl Into<CommandRef<'a>>,
    ) -> Outcome {
        let command = command.into();
        // A checkpoint changes nothing, not even a session (client/FORMAT.md).
        if command.write == WriteRef::Checkpoint {
            return Outcome::Written { index, term };
        }
        // One lookup of the session, held while the write is executed (the store and the
        // session table are separate fields): checked, then updated in place.
        let slot = self.sessions.entry(command.client_id);
        if let hash_map::Entry::Occupied(s) = &slot {
            let s = s.get();
            if command.seq == s.seq {
                return s.outcome.clone();
            }
            if command.seq < s.seq {
                return Outcome::Refused {
                    reason: format!(
                        "stale request: client {:x} already wrote sequence {} (this is {})",
                        command.client_id, s.seq, command.seq
                    ),
                };
            }
        }
        let outcome = execute(
            &mut self.data,
            &mut self.data_bytes,
            index,
            term,
            command.write,
        );
        let session = Session {
            seq: command.seq,
            outcome: outcome.clone(),
            last_index: index,
        };
        remember_in(&mut self.order, slot, session);
        self.evict_sessions();
        outcome
    }

    /// Records `client_id`'s latest write (a session restored from a snapshot).
    fn remember(&mut self, client_id: u64, seq: u64, index: u64, outcome: Outcome) {
        let session = Session {
            seq,
            outcome,
            last_index: index,
        };
        remember_in(&mut self.order, self.sessions.entry(client_id), session);
        self.evict_sessions();
    }

    /// Evicts the oldest sessions (by last write's index) while there are too many, and
    /// drops the eviction order's stale entries once they outnumber the live ones.
    fn evict_sessions(&mut self) {
        while self.sessions.len() > self.sessions_max {
            let evicted = self
                .order
                .pop_oldest(&self.sessions)
                .expect("every session has an entry in the eviction order");
            self.sessions.remove(&evicted);
        }
        self.order.compact(&self.sessions);
    }

    /// Serializes the whole state (the snapshot's bytes): keys in the store's own order
    /// (which differs from node to node: it follows the hash keys), sessions by eviction
    /// order.
    pub fn snapshot(&self) -> Vec<u8> {
        encode_state(|| self.data.iter(), self.data.len, &self.encoded_sessions())
    }

    /// The store's hash now (see [`SnapshotView::hash`]).
    pub fn hash(&self) -> u64 {
        hash_state(self.data.iter(), &self.encoded_sessions())
    }

    /// The state as of now, cheap to take (the shards are shared, not copied) and encoded
    /// later, on any thread, by [`SnapshotView::encode`]; the store can change meanwhile.
    pub fn snapshot_view(&mut self) -> SnapshotView {
        SnapshotView {
            sessions: self.encoded_sessions(),
            shards: self.data.share(),
        }
    }

    /// The session section of the snapshot (`FORMAT.md`).
    fn encoded_sessions(&self) -> Vec<u8> {
        let mut sessions = Vec::new();
        let mut w = Writer::new(&mut sessions);
        w.u64(self.sessions.len() as u64);
        // In eviction order, found by walking the table in memory order, copying, and
        // sorting: a lookup per session in eviction order missed the cache on each (the
        // view of 100,000 sessions took 26 ms of the loop).
        let mut ordered: Vec<(u64, u64, u64, Outcome)> = self
            .sessions
            .iter()
            .map(|(&client_id, s)| (s.last_index, client_id, s.seq, s.outcome.clone()))
            .collect();
        ordered.sort_unstable_by_key(|&(last_index, client_id, _, _)| (last_index, client_id));
        for (last_index, client_id, seq, outcome) in ordered {
            w.u64(client_id);
            w.u64(seq);
            w.u64(last_index);
            let outcome = Response {
                request_id: 0,
                outcome,
            };
            w.u64_prefixed(&outcome.encode());
        }
        sessions
    }

    /// Rebuilds the state from [`Kv::snapshot`] bytes, hashing with `keys`.
    pub fn restore(bytes: &[u8], sessions_max: usize, keys: HashKeys) -> Result<Kv, String> {
        let mut kv = Kv::new(sessions_max, keys);
        // Every read below fails the same way: the offset says where the bytes ran out.
        let truncated = |t: Truncated| format!("snapshot truncated at byte {}", t.offset);
        let mut r = Reader::new(bytes);
        let ordered = match r.bytes(4, "magic").map_err(truncated)? {
            SNAPSHOT_MAGIC => false,
            SNAPSHOT_MAGIC_V1 => true,
            _ => return Err("not a key-value snapshot (bad magic)".into()),
        };
        let n = r.u64("key count").map_err(truncated)?;
        // No key may come twice: checked, so a damaged or foreign snapshot cannot hide a
        // duplicate key (version 1 also promised increasing order, checked as well).
        let mut last: Option<Record> = None;
        for _ in 0..n {
            let key = r.u64_prefixed("key").map_err(truncated)?;
            let record = Record::new(key, r.u64_prefixed("value").map_err(truncated)?);
            if ordered {
                if last.as_ref().is_some_and(|last| last.key() >= record.key()) {
                    return Err(format!("snapshot keys out of order at byte {}", r.offset()));
                }
                last = Some(record.clone());
            }
            kv.data_bytes += record.data_bytes();
            if !kv.data.insert_new(record) {
                return Err(format!(
                    "snapshot holds a key twice (at byte {})",
                    r.offset()
                ));
            }
        }
        let n = r.u64("session count").map_err(truncated)?;
        for _ in 0..n {
            let client_id = r.u64("client id").map_err(truncated)?;
            let seq = r.u64("seq").map_err(truncated)?;
            let last_index = r.u64("last index").map_err(truncated)?;
            let outcome = r.u64_prefixed("outcome").map_err(truncated)?;
            let response =
                Response::decode(outcome).map_err(|e| format!("session outcome: {e}"))?;
            kv.remember(client_id, seq, last_index, response.outcome);
        }
        if r.remaining() != 0 {
            return Err("trailing bytes after the snapshot".into());
        }
        Ok(kv)
    }
}

/// Executes a write on the store (`data_bytes` counts its keys' and values' bytes).
fn execute(
    data: &mut Store,
    data_bytes: &mut u64,
    index: u64,
    term: u64,
    write: WriteRef<'_>,
) -> Outcome {
    match write {
        WriteRef::Put { key, value } => {
            put(data, data_bytes, key, value);
            Outcome::Written { index, term }
        }
        WriteRef::Delete { key } => {
            if let Some(old) = data.take(key) {
                *data_bytes -= old.data_bytes();
            }
            Outcome::Written { index, term }
        }
        WriteRef::Cas { key, expected, new } => {
            let current = data.get(key).map(Record::value);
            if current == expected {
                put(data, data_bytes, key, new);
                Outcome::Written { index, term }
            } else {
                Outcome::CasMismatch {
                    current: current.map(<[u8]>::to_vec),
                    index,
                }
            }
        }
        WriteRef::Checkpoint => Outcome::Written { index, term },
    }
}

fn put(data: &mut Store, data_bytes: &mut u64, key: &[u8], value: &[u8]) {
    *data_bytes += (key.len() + value.len()) as u64;
    if let Some(old) = data.put(key, value) {
        *data_bytes -= old;
    }
}

/// Puts `session` in its slot of the session table and moves it to the newest end of the
/// eviction order.
fn remember_in(
    order: &mut EvictionOrder,
    slot: hash_map::Entry<'_, u64, Session>,
    session: Session,
) {
    let client_id = *slot.key();
    let index = session.last_index;
    match slot {
        hash_map::Entry::Occupied(mut s) => *s.get_mut() = session,
        hash_map::Entry::Vacant(s) => {
            s.insert(session);
        }
    }
    order.push(index, client_id);
}

/// The sessions in eviction order: `(last_index, client_id)`, ascending, oldest first. A
/// session that writes again gets a new entry at the back (writes are applied in index
/// order, so the back is where it belongs); its older entry stays behind, stale (the entry's
/// index is no longer the session's), and is skipped when it reaches the front or dropped
/// when stale entries outnumber live ones. This replaced a B-tree with a removal and an
/// insertion per write.
#[derive(Debug, Default)]
struct EvictionOrder {
    entries: VecDeque<(u64, u64)>,
}

impl EvictionOrder {
    /// Stale entries allowed beyond the live ones before a compaction (a session table of
    /// a few sessions would otherwise compact at every write).
    const SLACK: usize = 64;

    /// Adds `(index, client_id)` in order. An index below the newest entry's (a snapshot
    /// holding its sessions out of order) is placed where it sorts; an entry already there
    /// is not added twice.
    fn push(&mut self, index: u64, client_id: u64) {
        let entry = (index, client_id);
        let at = match self.entries.back() {
            Some(&last) if last < entry => self.entries.len(),
            None => 0,
            Some(_) => match self.entries.binary_search(&entry) {
                Ok(_) => return,
                Err(at) => at,
            },
        };
        self.entries.insert(at, entry);
    }

    /// Whether `(index, client_id)` is still the session's latest write.
    fn is_live(sessions: &HashMap<u64, Session, HashKeys>, (index, client_id): (u64, u64)) -> bool {
        sessions
            .get(&client_id)
            .is_some_and(|s| s.last_index == index)
    }

    /// Removes and returns the oldest live session's client id (stale entries before it go
    /// too).
    fn pop_oldest(&mut self, sessions: &HashMap<u64, Session, HashKeys>) -> Option<u64> {
        while let Some(entry) = self.entries.pop_front() {
            if Self::is_live(sessions, entry) {
                return Some(entry.1);
            }
        }
        None
    }

    /// Drops the stale entries once there are more of them than live ones (and the slack):
    /// a lookup per entry, about one and a third per write over time.
    fn compact(&mut self, sessions: &HashMap<u64, Session, HashKeys>) {
        if self.entries.len() > 4 * sessions.len() + Self::SLACK {
            self.entries.retain(|&e| Self::is_live(sessions, e));
        }
    }

    /// The live entries, oldest first.
    fn live<'a>(
        &'a self,
        sessions: &'a HashMap<u64, Session, HashKeys>,
    ) -> impl Iterator<Item = (u64, u64)> + 'a {
        self.entries
            .iter()
            .copied()
            .filter(|&e| Self::is_live(sessions, e))
    }
}

/// The store's state at one moment, to be encoded as snapshot bytes (see
/// [`Kv::snapshot_view`]).
pub struct SnapshotView {
    shards: Vec<Arc<Table>>,
    /// The session table, already encoded (it is small).
    sessions: Vec<u8>,
}

impl SnapshotView {
    /// The snapshot's bytes: the keys in the order the shards hold them, then the sessions.
    /// Copying happens here, off the thread that applies writes. No sorting: it cost a
    /// third of a snapshot's CPU (100,000 keys compared through pointers, a cache miss
    /// each), and restoring needs no order; the store's hash needs none either.
    pub fn encode(self) -> Vec<u8> {
        encode_state(|| self.records(), self.count(), &self.sessions)
    }

    /// The length of [`SnapshotView::encode`]'s bytes (a pass over the records: off the loop).
    pub fn encoded_len(&self) -> u64 {
        encoded_len(self.records(), &self.sessions) as u64
    }

    /// [`SnapshotView::encode`]'s bytes, handed to `out` in pieces of about
    /// `ENCODE_PIECE_BYTES` instead of gathered: a snapshot file is then written as it is
    /// encoded, and the node never holds a second copy of its store in memory (the encoded
    /// bytes were 438 MiB at 10 M keys, every page of them faulted in fresh).
    pub fn encode_to(
        &self,
        out: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> std::io::Result<()> {
        encode_state_to(self.records(), self.count(), &self.sessions, out)
    }

    /// Every record the view holds, in the shards' order.
    fn records(&self) -> impl Iterator<Item = &Record> {
        self.shards.iter().flat_map(|s| s.iter())
    }

    /// How many records the view holds.
    fn count(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// The store's hash, as `raftd/FORMAT.md` defines it ("The store's hash"): the sum of
    /// every record's XXH64, which needs no sorting (the shards differ in order from node to
    /// node), hashed with the key count and the snapshot's session bytes. It covers what
    /// `Kv`'s equality compares, but for the session limit, which is a constant of the
    /// build. A changed key, value or session changes one term of the sum or the session
    /// bytes, so the hash, but for a chance of about 2^-64; not against an adversary (XXH64
    /// is no cryptographic hash), which the check does not claim.
    pub fn hash(&self) -> u64 {
        hash_state(self.records(), &self.sessions)
    }
}

/// What [`SnapshotView::encode_to`] hands over at a time.
const ENCODE_PIECE_BYTES: usize = 64 << 10;

/// The length of the snapshot's bytes of `records` and the encoded `sessions`: a magic, a
/// count, each record's key and value with a length before each, the sessions.
fn encoded_len<'a>(records: impl Iterator<Item = &'a Record>, sessions: &[u8]) -> usize {
    let data_bytes: usize = records.map(|r| 16 + r.data_bytes() as usize).sum();
    SNAPSHOT_MAGIC.len() + 8 + data_bytes + sessions.len()
}

/// The snapshot's bytes of the `count` `records` and the encoded `sessions`.
/// `records` gives them, twice: to size the buffer, then to encode.
fn encode_state<'a, I: Iterator<Item = &'a Record>>(
    records: impl Fn() -> I,
    count: usize,
    sessions: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(records(), sessions));
    encode_state_to(records(), count, sessions, &mut |piece| {
        out.extend_from_slice(piece);
        Ok(())
    })
    .expect("gathering in memory does not fail");
    out
}

/// The snapshot's bytes of the `count` `records` and the encoded `sessions`, handed to `out`
/// in pieces of about `ENCODE_PIECE_BYTES`.
fn encode_state_to<'a>(
    records: impl Iterator<Item = &'a Record>,
    count: usize,
    sessions: &[u8],
    out: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut piece = Vec::with_capacity(ENCODE_PIECE_BYTES);
    let mut w = Writer::new(&mut piece);
    w.bytes(SNAPSHOT_MAGIC);
    w.u64(count as u64);
    for record in records {
        let mut w = Writer::new(&mut piece);
        w.u64_prefixed(record.key());
        w.u64_prefixed(record.value());
        if piece.len() >= ENCODE_PIECE_BYTES {
            out(&piece)?;
            piece.clear();
        }
    }
    piece.extend_from_slice(sessions);
    out(&piece)
}

/// The store's hash of `records` and the encoded `sessions` (see [`SnapshotView::hash`]).
fn hash_state<'a>(records: impl Iterator<Item = &'a Record>, sessions: &[u8]) -> u64 {
    let mut count = 0u64;
    let mut sum = 0u64;
    for record in records {
        sum = sum.wrapping_add(xxh64(&record.0, 0));
        count += 1;
    }
    let mut bytes = Vec::with_capacity(20 + sessions.len());
    bytes.extend_from_slice(STORE_HASH_MAGIC);
    bytes.extend_from_slice(&count.to_le_bytes());
    bytes.extend_from_slice(&sum.to_le_bytes());
    bytes.extend_from_slice(sessions);
    xxh64(&bytes, 0)
}

/// The first bytes of a snapshot as this build writes it (`FORMAT.md`, version 2: keys in
/// any order).
const SNAPSHOT_MAGIC: &[u8] = b"RKV2";
/// Version 1 (keys in increasing order), still read.
const SNAPSHOT_MAGIC_V1: &[u8] = b"RKV1";

/// Whether `data` starts like a store's snapshot (`FORMAT.md`, any version).
pub fn is_snapshot(data: &[u8]) -> bool {
    data.get(..4)
        .is_some_and(|magic| magic == SNAPSHOT_MAGIC || magic == SNAPSHOT_MAGIC_V1)
}

/// The first bytes of what [`SnapshotView::hash`] hashes last.
const STORE_HASH_MAGIC: &[u8; 4] = b"RKVH";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Command, Write};
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn put(client_id: u64, seq: u64, k: &str, v: &str) -> Command {
        Command {
            client_id,
            seq,
            write: Write::Put {
                key: k.into(),
                value: v.into(),
            },
        }
    }

    /// A retried write (same client and sequence) is applied once and answered with the
    /// first outcome, even after other writes changed the key.
    #[test]
    fn retried_write_applies_once() {
        let mut kv = Kv::new(10, HashKeys::from_seed(1));
        let first = kv.apply(1, 1, &put(7, 1, "k", "a"));
        kv.apply(2, 1, &put(8, 1, "k", "b"));
        let retry = kv.apply(3, 1, &put(7, 1, "k", "a"));
        assert_eq!(first, retry);
        assert_eq!(kv.get(b"k"), Some(&b"b"[..]));
        assert!(matches!(
            kv.apply(4, 1, &put(7, 0, "k", "z")),
            Outcome::Refused { .. }
        ));
    }

    /// Compare-and-swap writes only on a match and reports the current value otherwise.
    #[test]
    fn cas_matches_or_reports() {
        let mut kv = Kv::new(10, HashKeys::from_seed(1));
        let cas = |seq, expected: Option<&str>, new: &str| Command {
            client_id: 1,
            seq,
            write: Write::Cas {
                key: b"k".to_vec(),
                expected: expected.map(|e| e.as_bytes().to_vec()),
                new: new.into(),
            },
        };
        assert!(matches!(
            kv.apply(1, 1, &cas(1, None, "a")),
            Outcome::Written { .. }
        ));
        assert_eq!(
            kv.apply(2, 1, &cas(2, None, "b")),
            Outcome::CasMismatch {
                current: Some(b"a".to_vec()),
                index: 2
            }
        );
        assert!(matches!(
            kv.apply(3, 1, &cas(3, Some("a"), "c")),
            Outcome::Written { .. }
        ));
        assert_eq!(kv.get(b"k"), Some(&b"c"[..]));
    }

    /// Sessions are bounded and evicted oldest-first by log index, identically everywhere;
    /// a snapshot round trip restores the same state.
    #[test]
    fn sessions_bounded_and_snapshot_round_trips() {
        let mut kv = Kv::new(3, HashKeys::from_seed(1));
        for c in 0..10u64 {
            kv.apply(c + 1, 1, &put(c, 1, &format!("k{c}"), "v"));
        }
        assert_eq!(kv.session_count(), 3);
        let restored = Kv::restore(&kv.snapshot(), 3, HashKeys::from_seed(2)).unwrap();
        assert_eq!(restored, kv);
        assert!(Kv::restore(&kv.snapshot()[..20], 3, HashKeys::from_seed(2)).is_err());
    }

    /// An entry older than the newest (a snapshot whose sessions came out of order) goes
    /// where it sorts, and an entry already held is not added again.
    #[test]
    fn eviction_order_sorts_what_comes_out_of_order() {
        let mut order = EvictionOrder::default();
        for (index, client) in [(5, 1), (9, 2), (7, 3), (7, 3), (1, 4), (9, 2), (9, 1)] {
            order.push(index, client);
        }
        let entries: Vec<_> = order.entries.iter().copied().collect();
        assert_eq!(entries, [(1, 4), (5, 1), (7, 3), (9, 1), (9, 2)]);
    }

    proptest! {
        /// Sessions against a model (each client's last index; the smallest evicted while
        /// there are too many): after every write the same sessions are held in the same
        /// order, and a snapshot taken anywhere restores into a store that goes on evicting
        /// the same sessions. Enough writes to compact the
        /// eviction order's stale entries several times.
        #[test]
        fn sessions_evict_like_a_model(
            max in 1usize..6,
            clients in prop::collection::vec(0u64..8, 1..400),
            restore_at in 0usize..400,
        ) {
            let mut kv = Kv::new(max, HashKeys::from_seed(3));
            let mut model: BTreeMap<u64, u64> = BTreeMap::new(); // client -> last index
            for (i, &c) in clients.iter().enumerate() {
                if i == restore_at {
                    kv = Kv::restore(&kv.snapshot(), max, HashKeys::from_seed(4)).unwrap();
                }
                let index = i as u64 + 1;
                prop_assert_eq!(
                    kv.apply(index, 1, &put(c, index, "k", "v")),
                    Outcome::Written { index, term: 1 }
                );
                model.insert(c, index);
                while model.len() > max {
                    let (&oldest, _) = model.iter().min_by_key(|&(_, &i)| i).unwrap();
                    model.remove(&oldest);
                }
                let mut held: Vec<u64> = kv.sessions.keys().copied().collect();
                held.sort_unstable();
                prop_assert_eq!(held, model.keys().copied().collect::<Vec<_>>());
                let order: Vec<(u64, u64)> = kv.order.live(&kv.sessions).collect();
                let mut want: Vec<(u64, u64)> = model.iter().map(|(&c, &i)| (i, c)).collect();
                want.sort_unstable();
                prop_assert_eq!(order, want);
                prop_assert!(kv.order.entries.len() <= 4 * max + EvictionOrder::SLACK + 1);
            }
        }
    }

    /// A view's bytes handed over in pieces are its encoded bytes, as long as it said, for an
    /// empty store and for one of many pieces.
    #[test]
    fn a_view_streams_the_bytes_it_encodes() {
        for keys in [0u64, 3, 5_000] {
            let mut kv = Kv::new(100, HashKeys::from_seed(4));
            for c in 0..keys {
                let value = "v".repeat((c % 50) as usize);
                kv.apply(c + 1, 1, &put(c % 150, c + 1, &format!("key{c}"), &value));
            }
            let view = kv.snapshot_view();
            let mut streamed = Vec::new();
            let mut pieces = 0;
            view.encode_to(&mut |piece| {
                streamed.extend_from_slice(piece);
                pieces += 1;
                Ok(())
            })
            .unwrap();
            assert_eq!(view.encoded_len(), streamed.len() as u64, "{keys} keys");
            assert!(streamed == kv.snapshot_view().encode(), "{keys} keys");
            assert!(keys < 5_000 || pieces > 1, "{pieces} pieces");
            let restored = Kv::restore(&streamed, 100, HashKeys::from_seed(5)).unwrap();
            assert_eq!(restored, kv);
        }
    }

    /// A view taken before more writes encodes the state as it was when taken, byte for
    /// byte, however the store changed meanwhile (the records are shared, not copied).
    #[test]
    fn snapshot_view_is_the_state_when_taken() {
        let mut kv = Kv::new(10, HashKeys::from_seed(1));
        for c in 0..50u64 {
            kv.apply(
                c + 1,
                1,
                &put(c % 7, c + 1, &format!("k{}", c % 13), &format!("v{c}")),
            );
        }
        let before = kv.snapshot();
        let view = kv.snapshot_view();
        // Values of another length, and of the same length (3 bytes, as "v37".."v49"): the
        // store changes a record in place only when nothing else holds it.
        for c in 50..90u64 {
            let value = if c % 2 == 0 { "changed" } else { "zzz" };
            kv.apply(c + 1, 1, &put(c % 7, c + 1, &format!("k{}", c % 17), value));
        }
        kv.apply(
            91,
            1,
            &Command {
                client_id: 3,
                seq: 999,
                write: Write::Delete {
                    key: b"k1".to_vec(),
                },
            },
        );
        let encoded = std::thread::spawn(move || view.encode()).join().unwrap();
        assert_eq!(encoded, before);
        assert_ne!(kv.snapshot(), before);
        assert_eq!(
            Kv::restore(&kv.snapshot(), 10, HashKeys::from_seed(2)).unwrap(),
            kv
        );
        // With the view gone, the same-length writes change the records in place.
        for c in 0..13u64 {
            kv.apply(100 + c, 1, &put(1, 100 + c, &format!("k{c}"), "yyy"));
            assert_eq!(kv.get(format!("k{c}").as_bytes()), Some(&b"yyy"[..]));
        }
        assert_eq!(
            Kv::restore(&kv.snapshot(), 10, HashKeys::from_seed(2)).unwrap(),
            kv
        );
    }

    /// The bytes of a small snapshot (two keys, two sessions, one of them remembering a
    /// cas): proves the snapshot format does not change by a single byte (the two keys may
    /// come in either order, as each store's shards hold them), that these bytes restore
    /// the same store, and that a version 1 snapshot (keys sorted) still does. Its hash is
    /// golden too: nodes of different builds must hash equal stores equal
    /// (raftd/FORMAT.md).
    #[test]
    fn golden_snapshot_bytes() {
        let mut kv = Kv::new(10, HashKeys::from_seed(1));
        kv.apply(1, 1, &put(7, 1, "b", "2"));
        kv.apply(2, 1, &put(8, 1, "a", "1"));
        let cas = Command {
            client_id: 7,
            seq: 2,
            write: Write::Cas {
                key: b"a".to_vec(),
                expected: None,
                new: b"x".to_vec(),
            },
        };
        kv.apply(3, 2, &cas);
        let count = "0200000000000000";
        let a = "010000000000000061010000000000000031";
        let b = "010000000000000062010000000000000032";
        let sessions = "020000000000000008000000000000000100000000000000020000000000000019000000000000000000000000000000000200000000000000010000000000000007000000000000000200000000000000030000000000000017000000000000000000000000000000010101000000310300000000000000";
        let hex: String = kv.snapshot().iter().map(|b| format!("{b:02x}")).collect();
        let either = [
            format!("524b5632{count}{a}{b}{sessions}"),
            format!("524b5632{count}{b}{a}{sessions}"),
        ];
        assert!(either.contains(&hex), "{hex}");
        assert_eq!(
            Kv::restore(&kv.snapshot(), 10, HashKeys::from_seed(2)).unwrap(),
            kv
        );
        let v1 = format!("524b5631{count}{a}{b}{sessions}");
        let v1: Vec<u8> = (0..v1.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&v1[i..i + 2], 16).unwrap())
            .collect();
        assert_eq!(Kv::restore(&v1, 10, HashKeys::from_seed(2)).unwrap(), kv);
        // Also computed from these bytes by the reference xxHash library (libxxhash).
        assert_eq!(kv.hash(), 0x7c6b_0312_7708_6609);
    }

    /// A store hashing with the keys of `seed`, of `n` keys written by `clients` sessions,
    /// in the order `order` gives.
    fn store(seed: u64, n: u64, clients: u64, order: impl Iterator<Item = u64>) -> Kv {
        let mut kv = Kv::new(100, HashKeys::from_seed(seed));
        for (index, i) in order.enumerate() {
            let index = index as u64 + 1;
            let command = put(i % clients + 1, index, &format!("k{i}"), &format!("v{i}"));
            kv.apply(index, 1, &command);
        }
        assert_eq!(kv.len() as u64, n);
        kv
    }

    /// The keys of a store in its own order.
    fn order(kv: &Kv) -> Vec<Vec<u8>> {
        kv.data.iter().map(|r| r.key().to_vec()).collect()
    }

    /// Equal stores hash equal, whatever order their keys were written in and however
    /// each store spreads them over its shards (stores with other hash keys route and
    /// iterate in other orders), and a snapshot round trip keeps the hash; one changed
    /// value, one changed key, one more or one fewer key, or one changed session (its
    /// sequence number or remembered outcome alone) changes it.
    #[test]
    fn store_hash_is_equal_for_equal_stores_and_changes_with_any_one_change() {
        let n = 500;
        // The same puts by the same sessions at the same indices, in two stores with
        // other hash keys, so in two orders.
        let a = store(1, n, 7, 0..n);
        let b = store(2, n, 7, 0..n);
        assert_ne!(
            order(&a),
            order(&b),
            "two stores iterating in different orders"
        );
        assert_eq!(a, b);
        let hash = a.hash();
        assert_eq!(b.hash(), hash);
        assert_eq!(
            Kv::restore(&a.snapshot(), 100, HashKeys::from_seed(2))
                .unwrap()
                .hash(),
            hash
        );
        // Keys written in another order: the data is equal, the sessions remember other
        // writes, so only a store with the same data and the same sessions compares.
        let other_order = store(1, n, 7, (0..n).rev());
        assert_ne!(other_order.hash(), hash, "other sessions");
        type Change = (&'static str, fn(&mut Kv));
        let changes: [Change; 6] = [
            ("value", |kv| {
                super::put(&mut kv.data, &mut kv.data_bytes, b"k3", b"v4")
            }),
            ("key", |kv| {
                let v = kv.data.take(b"k3").unwrap();
                super::put(&mut kv.data, &mut kv.data_bytes, b"k3x", v.value());
            }),
            ("extra key", |kv| {
                super::put(&mut kv.data, &mut kv.data_bytes, b"new", b"")
            }),
            ("missing key", |kv| {
                kv.data.take(b"k3").unwrap();
            }),
            ("session seq", |kv| {
                kv.sessions.get_mut(&1).unwrap().seq += 1
            }),
            ("session outcome", |kv| {
                kv.sessions.get_mut(&2).unwrap().outcome = Outcome::Written { index: 1, term: 2 }
            }),
        ];
        for (what, change) in changes {
            let mut c = store(1, n, 7, 0..n);
            change(&mut c);
            assert_ne!(c.hash(), hash, "a changed {what} left the hash unchanged");
        }
    }

    /// The order of the keys, and so a snapshot's bytes, follows from the hash keys and the
    /// writes alone: two stores with the same hash keys and the same writes write the same
    /// bytes (the simulator replays a seed by this; `RandomState` gave every store other
    /// keys); a store with other hash keys, equal to them, writes its keys in another order.
    #[test]
    fn same_hash_keys_same_snapshot_bytes() {
        let a = store(3, 300, 5, 0..300);
        let b = store(3, 300, 5, 0..300);
        assert_eq!(a.snapshot(), b.snapshot());
        let other = Kv::restore(&a.snapshot(), 100, HashKeys::from_seed(4)).unwrap();
        assert_eq!(other, a);
        assert_ne!(other.snapshot(), a.snapshot());
    }

    /// A checkpoint changes nothing, with a session or without: not the data, not the
    /// sessions, so not the hash; and it is answered as written where it was applied.
    #[test]
    fn checkpoint_changes_nothing() {
        let mut kv = store(1, 20, 3, 0..20);
        let (hash, sessions) = (kv.hash(), kv.session_count());
        for client_id in [0, 1, 99] {
            let checkpoint = Command {
                client_id,
                seq: 1000,
                write: Write::Checkpoint,
            };
            assert_eq!(
                kv.apply(21, 2, &checkpoint),
                Outcome::Written { index: 21, term: 2 }
            );
        }
        assert_eq!((kv.hash(), kv.session_count()), (hash, sessions));
    }

    /// A version 1 snapshot whose keys are not strictly increasing, and a snapshot of
    /// either version holding a key twice, are refused, not loaded.
    #[test]
    fn restore_refuses_keys_out_of_order_or_twice() {
        let snapshot = |magic: &[u8], keys: [&[u8]; 2]| {
            let mut bytes = magic.to_vec();
            bytes.extend_from_slice(&2u64.to_le_bytes());
            let mut w = Writer::new(&mut bytes);
            for key in keys {
                w.u64_prefixed(key);
                w.u64_prefixed(b"v");
            }
            bytes.extend_from_slice(&0u64.to_le_bytes());
            Kv::restore(&bytes, 3, HashKeys::from_seed(2))
        };
        let error = snapshot(SNAPSHOT_MAGIC_V1, [b"b", b"a"]).unwrap_err();
        assert!(error.contains("out of order"), "{error}");
        assert!(snapshot(SNAPSHOT_MAGIC, [b"b", b"a"]).is_ok());
        for magic in [SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_V1] {
            let error = snapshot(magic, [b"a", b"a"]).unwrap_err();
            assert!(
                error.contains("twice") || error.contains("out of order"),
                "{error}"
            );
        }
        let error = snapshot(SNAPSHOT_MAGIC, [b"a", b"a"]).unwrap_err();
        assert!(error.contains("a key twice"), "{error}");
        assert!(snapshot(b"RKV9", [b"a", b"b"])
            .unwrap_err()
            .contains("bad magic"));
    }

    fn write() -> impl Strategy<Value = Write> {
        let key = || prop::collection::vec(0u8..4, 0..3);
        let value = || prop::collection::vec(any::<u8>(), 0..40);
        prop_oneof![
            (key(), value()).prop_map(|(key, value)| Write::Put { key, value }),
            key().prop_map(|key| Write::Delete { key }),
            (key(), prop::option::of(value()), value())
                .prop_map(|(key, expected, new)| Write::Cas { key, expected, new }),
            Just(Write::Checkpoint),
        ]
    }

    proptest! {
        /// The store (one allocation per key, searched by key) against a naive oracle, a
        /// map of key vectors to value vectors: same answers, same contents, same byte
        /// count, and a snapshot round trip gives the same store with the same hash.
        #[test]
        fn store_matches_a_naive_map(writes in prop::collection::vec(write(), 0..60)) {
            let mut kv = Kv::new(10, HashKeys::from_seed(1));
            let mut oracle: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
            for (seq, w) in writes.into_iter().enumerate() {
                let index = seq as u64 + 1;
                let want = match &w {
                    Write::Put { key, value } => {
                        oracle.insert(key.clone(), value.clone());
                        Outcome::Written { index, term: 1 }
                    }
                    Write::Delete { key } => {
                        oracle.remove(key);
                        Outcome::Written { index, term: 1 }
                    }
                    Write::Cas { key, expected, new } => {
                        if oracle.get(key) == expected.as_ref() {
                            oracle.insert(key.clone(), new.clone());
                            Outcome::Written { index, term: 1 }
                        } else {
                            Outcome::CasMismatch { current: oracle.get(key).cloned(), index }
                        }
                    }
                    Write::Checkpoint => Outcome::Written { index, term: 1 },
                };
                let command = Command { client_id: 1, seq: index, write: w };
                prop_assert_eq!(kv.apply(index, 1, &command), want);
            }
            prop_assert_eq!(kv.len(), oracle.len());
            for (key, value) in &oracle {
                prop_assert_eq!(kv.get(key), Some(value.as_slice()));
            }
            let bytes: usize = oracle.iter().map(|(k, v)| k.len() + v.len()).sum();
            prop_assert_eq!(kv.data_bytes, bytes as u64);
            let restored = Kv::restore(&kv.snapshot(), 10, HashKeys::from_seed(2)).unwrap();
            prop_assert_eq!(restored.hash(), kv.hash());
            prop_assert_eq!(restored, kv);
        }
    }
}
