//! The replicated state machine: a key-value store with client sessions (thesis ch. 6).
//!
//! Every replica applies the same commands in the same order and must reach the same state,
//! so everything here is deterministic: sessions are evicted by log index, never by clock.
//! A session remembers the outcome of the client's latest write; a retry of that write (same
//! client id and sequence number) gets the remembered outcome instead of being applied
//! again, which makes writes exactly-once across client retries and leader changes.

use crate::protocol::{Command, Outcome, Write};
use std::collections::{BTreeMap, HashMap};

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

/// The key-value store and its session table.
#[derive(Debug, PartialEq, Eq)]
pub struct Kv {
    data: BTreeMap<Vec<u8>, Vec<u8>>,
    sessions: HashMap<u64, Session>,
    /// (last_index, client_id) for every session: the eviction order.
    by_index: BTreeMap<(u64, u64), ()>,
    sessions_max: usize,
    /// Bytes of keys and values held.
    data_bytes: u64,
}

impl Kv {
    /// An empty store keeping at most `sessions_max` sessions.
    pub fn new(sessions_max: usize) -> Kv {
        Kv {
            data: BTreeMap::new(),
            sessions: HashMap::new(),
            by_index: BTreeMap::new(),
            sessions_max: sessions_max.max(1),
            data_bytes: 0,
        }
    }

    /// Reads a key.
    pub fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.data.get(key)
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when there are no keys.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of client sessions held.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Applies the command at log position (`index`, `term`) and returns its outcome. A
    /// retry of the session's latest write returns the first outcome unchanged.
    pub fn apply(&mut self, index: u64, term: u64, command: &Command) -> Outcome {
        if let Some(s) = self.sessions.get(&command.client_id) {
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
        let outcome = self.execute(index, term, &command.write);
        self.remember(command.client_id, command.seq, index, outcome.clone());
        outcome
    }

    fn execute(&mut self, index: u64, term: u64, write: &Write) -> Outcome {
        match write {
            Write::Put { key, value } => {
                self.insert(key.clone(), value.clone());
                Outcome::Written { index, term }
            }
            Write::Delete { key } => {
                if let Some(old) = self.data.remove(key) {
                    self.data_bytes -= (key.len() + old.len()) as u64;
                }
                Outcome::Written { index, term }
            }
            Write::Cas { key, expected, new } => {
                let current = self.data.get(key);
                if current == expected.as_ref() {
                    self.insert(key.clone(), new.clone());
                    Outcome::Written { index, term }
                } else {
                    Outcome::CasMismatch {
                        current: current.cloned(),
                        index,
                    }
                }
            }
        }
    }

    fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        // Overwrite in place when the key exists: no new key allocation, no tree insert.
        if let Some(slot) = self.data.get_mut(&key) {
            self.data_bytes = self.data_bytes - slot.len() as u64 + value.len() as u64;
            *slot = value;
            return;
        }
        self.data_bytes += (key.len() + value.len()) as u64;
        self.data.insert(key, value);
    }

    fn remember(&mut self, client_id: u64, seq: u64, index: u64, outcome: Outcome) {
        if let Some(old) = self.sessions.get(&client_id) {
            self.by_index.remove(&(old.last_index, client_id));
        }
        self.sessions.insert(
            client_id,
            Session {
                seq,
                outcome,
                last_index: index,
            },
        );
        self.by_index.insert((index, client_id), ());
        while self.sessions.len() > self.sessions_max {
            let (&(_, evicted), _) = self.by_index.iter().next().expect("non-empty");
            self.by_index
                .remove(&(self.sessions[&evicted].last_index, evicted));
            self.sessions.remove(&evicted);
        }
    }

    /// Serializes the whole state (the snapshot's bytes). Deterministic: keys in order,
    /// sessions by eviction order.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data_bytes as usize + 64);
        out.extend_from_slice(b"RKV1");
        out.extend_from_slice(&(self.data.len() as u64).to_le_bytes());
        for (k, v) in &self.data {
            put_bytes(&mut out, k);
            put_bytes(&mut out, v);
        }
        out.extend_from_slice(&(self.sessions.len() as u64).to_le_bytes());
        for &(_, client_id) in self.by_index.keys() {
            let s = &self.sessions[&client_id];
            out.extend_from_slice(&client_id.to_le_bytes());
            out.extend_from_slice(&s.seq.to_le_bytes());
            out.extend_from_slice(&s.last_index.to_le_bytes());
            put_bytes(
                &mut out,
                &crate::protocol::Response {
                    request_id: 0,
                    outcome: s.outcome.clone(),
                }
                .encode(),
            );
        }
        out
    }

    /// Rebuilds the state from [`Kv::snapshot`] bytes.
    pub fn restore(bytes: &[u8], sessions_max: usize) -> Result<Kv, String> {
        let mut kv = Kv::new(sessions_max);
        let mut r = Reader { b: bytes, at: 0 };
        if r.take(4)? != b"RKV1" {
            return Err("not a key-value snapshot (bad magic)".into());
        }
        let n = r.u64()?;
        for _ in 0..n {
            let k = r.bytes()?.to_vec();
            let v = r.bytes()?.to_vec();
            kv.insert(k, v);
        }
        let n = r.u64()?;
        for _ in 0..n {
            let client_id = r.u64()?;
            let seq = r.u64()?;
            let last_index = r.u64()?;
            let response = crate::protocol::Response::decode(r.bytes()?)
                .map_err(|e| format!("session outcome: {e}"))?;
            kv.remember(client_id, seq, last_index, response.outcome);
        }
        if r.at != bytes.len() {
            return Err("trailing bytes after the snapshot".into());
        }
        Ok(kv)
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.b.len() - self.at < n {
            return Err(format!("snapshot truncated at byte {}", self.at));
        }
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| "length overflow".to_string())?;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let mut kv = Kv::new(10);
        let first = kv.apply(1, 1, &put(7, 1, "k", "a"));
        kv.apply(2, 1, &put(8, 1, "k", "b"));
        let retry = kv.apply(3, 1, &put(7, 1, "k", "a"));
        assert_eq!(first, retry);
        assert_eq!(kv.get(b"k"), Some(&b"b".to_vec()));
        assert!(matches!(
            kv.apply(4, 1, &put(7, 0, "k", "z")),
            Outcome::Refused { .. }
        ));
    }

    /// Compare-and-swap writes only on a match and reports the current value otherwise.
    #[test]
    fn cas_matches_or_reports() {
        let mut kv = Kv::new(10);
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
        assert_eq!(kv.get(b"k"), Some(&b"c".to_vec()));
    }

    /// Sessions are bounded and evicted oldest-first by log index, identically everywhere;
    /// a snapshot round trip restores the same state.
    #[test]
    fn sessions_bounded_and_snapshot_round_trips() {
        let mut kv = Kv::new(3);
        for c in 0..10u64 {
            kv.apply(c + 1, 1, &put(c, 1, &format!("k{c}"), "v"));
        }
        assert_eq!(kv.session_count(), 3);
        let restored = Kv::restore(&kv.snapshot(), 3).unwrap();
        assert_eq!(restored, kv);
        assert!(Kv::restore(&kv.snapshot()[..20], 3).is_err());
    }
}
