//! A second copy of the term and vote, outside the segments, and the marker of a node that
//! is repairing a damaged log (see "Damage" in FORMAT.md).
//!
//! Why a second copy: recovery cuts a damaged log at the batch holding the first bad
//! record, and with it every hard-state record after the cut. A node restarted with an older
//! term and vote than it had could vote a second time in a term, the classic way two
//! leaders are elected in one term. The copy lives in two small files written in turn, each
//! whole and synced before the vote it records can leave (the WAL writes it inside
//! `persist`), so a torn or damaged write of one leaves the other. Term and vote change
//! only at elections, so the extra sync is rare.

use std::path::Path;

use raft::{HardState, NodeId, Term};

use crate::backend::Backend;
use crate::format::{get_u32, get_u64};

/// The two copies' file names, written in turn (by sequence number).
pub(crate) const VOTE_FILES: [&str; 2] = ["vote-a", "vote-b"];

/// Present while the node is repairing a damaged log (see FORMAT.md).
pub const REPAIR_FILE: &str = "REPAIRING";

const MAGIC: &[u8; 4] = b"RVOT";
const VERSION: u32 = 1;
// magic | version u32 | seq u64 | term u64 | vote u64 | crc32 u32 (over the bytes before it)
const VERSION_AT: usize = 4;
const SEQ_AT: usize = VERSION_AT + 4;
const TERM_AT: usize = SEQ_AT + 8;
const VOTE_AT: usize = TERM_AT + 8;
const CRC_AT: usize = VOTE_AT + 8;
/// The size of one copy.
pub(crate) const VOTE_FILE_BYTES: usize = CRC_AT + 4;

/// One copy of the term and vote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct VoteCopy {
    /// Bumped by every write; the higher of two valid copies is the newer.
    pub seq: u64,
    pub term: Term,
    pub vote: NodeId,
}

impl VoteCopy {
    pub fn encode(&self) -> [u8; VOTE_FILE_BYTES] {
        let mut b = [0u8; VOTE_FILE_BYTES];
        b[..VERSION_AT].copy_from_slice(MAGIC);
        b[VERSION_AT..SEQ_AT].copy_from_slice(&VERSION.to_le_bytes());
        b[SEQ_AT..TERM_AT].copy_from_slice(&self.seq.to_le_bytes());
        b[TERM_AT..VOTE_AT].copy_from_slice(&self.term.get().to_le_bytes());
        b[VOTE_AT..CRC_AT].copy_from_slice(&self.vote.0.to_le_bytes());
        let crc = crc32fast::hash(&b[..CRC_AT]);
        b[CRC_AT..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// A copy from its bytes, or `None` when they are not a whole, intact copy.
    pub fn decode(b: &[u8]) -> Option<VoteCopy> {
        if b.len() != VOTE_FILE_BYTES
            || &b[..VERSION_AT] != MAGIC
            || get_u32(b, VERSION_AT) != VERSION
            || get_u32(b, CRC_AT) != crc32fast::hash(&b[..CRC_AT])
        {
            return None;
        }
        Some(VoteCopy {
            seq: get_u64(b, SEQ_AT),
            term: Term(get_u64(b, TERM_AT)),
            vote: NodeId(get_u64(b, VOTE_AT)),
        })
    }

    /// Whether the hard state `hs` records a term and vote this copy does not know.
    pub fn behind(&self, hs: &HardState) -> bool {
        (hs.term, hs.vote) != (self.term, self.vote)
    }
}

/// The newest intact copy in `dir`, with which files exist. A missing or damaged copy is
/// skipped (logged when damaged).
pub(crate) fn read_newest(backend: &dyn Backend, dir: &Path) -> (Option<VoteCopy>, [bool; 2]) {
    let mut newest: Option<VoteCopy> = None;
    let mut exists = [false; 2];
    for (k, name) in VOTE_FILES.iter().enumerate() {
        let path = dir.join(name);
        let Ok(bytes) = backend.read(&path) else {
            continue;
        };
        exists[k] = true;
        match VoteCopy::decode(&bytes) {
            Some(copy) if newest.is_none_or(|n| copy.seq > n.seq) => newest = Some(copy),
            Some(_) => {}
            None => log::warn!(
                "wal: the copy of term and vote in {} is damaged; using the other",
                path.display()
            ),
        }
    }
    (newest, exists)
}

/// Merges the copy into the hard state replayed from the log: the later term wins, and in
/// the same term a recorded vote wins over none. The log's copy may be older only when
/// recovery cut the log; the file's copy is older when the last write of it was lost.
pub(crate) fn merge(replayed: HardState, copy: Option<VoteCopy>) -> HardState {
    let Some(copy) = copy else {
        return replayed;
    };
    let mut hs = replayed;
    if copy.term > hs.term {
        hs.term = copy.term;
        hs.vote = copy.vote;
    } else if copy.term == hs.term && hs.vote.is_none() {
        hs.vote = copy.vote;
    }
    hs
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A copy round-trips; any one flipped bit or a short file makes it unreadable.
    #[test]
    fn a_copy_decodes_only_when_whole_and_intact() {
        let copy = VoteCopy {
            seq: 7,
            term: Term(9),
            vote: NodeId(2),
        };
        let bytes = copy.encode();
        assert_eq!(VoteCopy::decode(&bytes), Some(copy));
        for bit in 0..bytes.len() * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(VoteCopy::decode(&bad), None, "bit {bit}");
        }
        assert_eq!(VoteCopy::decode(&bytes[..VOTE_FILE_BYTES - 1]), None);
    }

    /// The merge keeps the later term with its vote, and a vote over none in one term.
    #[test]
    fn merge_takes_the_later_term_and_a_recorded_vote() {
        let hs = |term, vote| HardState {
            term: Term(term),
            vote: NodeId(vote),
            commit: raft::LogIndex(5),
        };
        let copy = |term, vote| {
            Some(VoteCopy {
                seq: 1,
                term: Term(term),
                vote: NodeId(vote),
            })
        };
        assert_eq!(merge(hs(3, 1), None), hs(3, 1));
        assert_eq!(merge(hs(3, 1), copy(4, 2)), hs(4, 2));
        assert_eq!(merge(hs(3, 0), copy(3, 2)), hs(3, 2));
        assert_eq!(merge(hs(3, 1), copy(3, 2)), hs(3, 1));
        assert_eq!(merge(hs(5, 0), copy(4, 2)), hs(5, 0));
    }
}
