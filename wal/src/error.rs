//! The WAL's typed error.

use std::fmt;
use std::io;
use std::path::PathBuf;

use raft::{LogIndex, Term};

/// Everything that can go wrong in the WAL. `Display` is one line naming the file, the offset
/// (where there is one) and what is wrong.
#[derive(Debug)]
pub enum WalError {
    /// The directory does not exist (the WAL never creates its directory: a missing one usually
    /// means a wrong path or an unmounted disk).
    DirMissing {
        /// The directory asked for.
        dir: PathBuf,
    },
    /// The path exists but is not a directory.
    NotADirectory {
        /// The path asked for.
        dir: PathBuf,
    },
    /// The directory cannot be written (permissions or a read-only file system).
    ReadOnly {
        /// The directory.
        dir: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// Another process holds the directory's lock.
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it into the lock file (None if unreadable).
        holder_pid: Option<u32>,
    },
    /// A new segment or snapshot file could not be allocated: the disk is full. Nothing was
    /// written or lost; the WAL stays usable.
    NoSpace {
        /// The file that could not be allocated.
        path: PathBuf,
        /// The bytes asked for.
        bytes: u64,
    },
    /// An IO operation failed. After a failed write, msync or fsync the WAL is poisoned.
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What was being done ("msync", "fsync directory", ...).
        op: &'static str,
        /// What the OS said.
        source: io::Error,
    },
    /// An earlier write, msync or fsync failed, so the WAL refuses every write (fsync is never
    /// retried: after a failure the page cache may already have dropped the data).
    Poisoned {
        /// The first failure, as displayed then.
        first: String,
    },
    /// Recovery found corruption that is not a torn tail; opening with `repair` cuts the log there.
    Corrupt {
        /// The segment or snapshot file.
        file: PathBuf,
        /// The byte offset in it.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// Appended entries do not continue the log (or each other) without a gap.
    NotContiguous {
        /// The index that would have continued the log.
        expected: LogIndex,
        /// The index given.
        found: LogIndex,
    },
    /// An appended entry's term is lower than the entry before it.
    TermRegression {
        /// The entry's index.
        index: LogIndex,
        /// Its term.
        term: Term,
        /// The term of the entry before it.
        previous: Term,
    },
    /// An append would overwrite an entry at or below the hard state's commit index: committed
    /// entries are never truncated (Raft §5.4), so the caller has a bug.
    TruncatesCommitted {
        /// The first index the append would overwrite.
        index: LogIndex,
        /// The commit index.
        commit: LogIndex,
    },
    /// A hard state with a lower term than the current one.
    HardStateRegression {
        /// The current term.
        current: Term,
        /// The term given.
        given: Term,
    },
    /// The index lies at or below the snapshot: its entry was compacted away.
    Compacted {
        /// The index asked for or written.
        index: LogIndex,
        /// The first index still in the log.
        first_index: LogIndex,
    },
    /// The index lies past the end of the log.
    Unavailable {
        /// The index asked for.
        index: LogIndex,
        /// The last index in the log.
        last_index: LogIndex,
    },
    /// An entry is larger than the WAL accepts.
    EntryTooLarge {
        /// The entry's index.
        index: LogIndex,
        /// Its data bytes.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A snapshot not newer than the current one.
    SnapshotStale {
        /// The snapshot's index.
        index: LogIndex,
        /// The current snapshot's index.
        current: LogIndex,
    },
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::DirMissing { dir } => {
                write!(f, "wal directory {} does not exist", dir.display())
            }
            WalError::NotADirectory { dir } => {
                write!(f, "wal path {} is not a directory", dir.display())
            }
            WalError::ReadOnly { dir, source } => {
                write!(
                    f,
                    "wal directory {} is not writable: {source}",
                    dir.display()
                )
            }
            WalError::Locked {
                dir,
                holder_pid: Some(pid),
            } => {
                write!(
                    f,
                    "wal directory {} is locked by process {pid}",
                    dir.display()
                )
            }
            WalError::Locked {
                dir,
                holder_pid: None,
            } => {
                write!(
                    f,
                    "wal directory {} is locked by another process (pid unknown)",
                    dir.display()
                )
            }
            WalError::NoSpace { path, bytes } => {
                write!(
                    f,
                    "no space to allocate {bytes} bytes for {}; nothing was written",
                    path.display()
                )
            }
            WalError::Io { path, op, source } => {
                write!(f, "{op} {} failed: {source}", path.display())
            }
            WalError::Poisoned { first } => {
                write!(
                    f,
                    "wal refuses writes after an earlier IO failure ({first}); restart the node"
                )
            }
            WalError::Corrupt { file, offset, what } => {
                write!(
                    f,
                    "corrupt wal: {} at offset {offset}: {what}",
                    file.display()
                )
            }
            WalError::NotContiguous { expected, found } => {
                write!(
                    f,
                    "entry index {found} does not continue the log (expected {expected})"
                )
            }
            WalError::TermRegression {
                index,
                term,
                previous,
            } => {
                write!(
                    f,
                    "entry {index} has term {term}, lower than the term {previous} before it"
                )
            }
            WalError::TruncatesCommitted { index, commit } => {
                write!(
                    f,
                    "append at {index} would overwrite committed entries (commit index {commit})"
                )
            }
            WalError::HardStateRegression { current, given } => {
                write!(
                    f,
                    "hard state term {given} is lower than the current term {current}"
                )
            }
            WalError::Compacted { index, first_index } => {
                write!(
                    f,
                    "index {index} is compacted (the log starts at {first_index})"
                )
            }
            WalError::Unavailable { index, last_index } => {
                write!(f, "index {index} is past the end of the log ({last_index})")
            }
            WalError::EntryTooLarge { index, bytes, max } => {
                write!(
                    f,
                    "entry {index} has {bytes} data bytes, more than the {max} allowed"
                )
            }
            WalError::SnapshotStale { index, current } => {
                write!(
                    f,
                    "snapshot at {index} is not newer than the current one at {current}"
                )
            }
        }
    }
}

impl std::error::Error for WalError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            WalError::ReadOnly { source, .. } | WalError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// True when the OS error means the disk is full.
pub(crate) fn is_no_space(error: &io::Error) -> bool {
    error.raw_os_error() == Some(libc::ENOSPC) || error.raw_os_error() == Some(libc::EDQUOT)
}

/// True when the OS error means the directory cannot be written.
pub(crate) fn is_read_only(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EROFS) | Some(libc::EACCES) | Some(libc::EPERM)
    )
}
