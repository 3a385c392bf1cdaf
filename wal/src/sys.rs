//! The only module with `unsafe` code: mapping segment files, and the libc calls the standard
//! library does not offer (fallocate, flock, posix_fadvise, sync_file_range, mallopt). Every block says why it is sound.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use memmap2::{MmapMut, MmapOptions};

/// Maps all `len` bytes of `file` read-write and shared.
///
/// The mapping stays valid while the returned value lives, even if `file` is closed.
pub(crate) fn map(file: &File, len: usize) -> io::Result<MmapMut> {
    // SAFETY: memmap2 requires that no one else truncates or modifies the file while it is
    // mapped, or reads through the map may see changing bytes or fault (SIGBUS) past the end.
    // The WAL directory is held under an exclusive flock by this process (see `lock`), the WAL
    // only maps segment files it created or recovered in that directory, it never changes a
    // mapped file's length (segments are preallocated with fallocate before mapping, so writes
    // through the map never need new blocks and cannot hit ENOSPC as a SIGBUS), and it drops the
    // map before deleting the file. Another process writing the files despite the lock is outside
    // the contract (documented in the crate docs).
    unsafe { MmapOptions::new().len(len).map_mut(file) }
}

/// Maps all `len` bytes of `file` read-only and shared: the WAL's segments in `pwrite` mode
/// (see `backend::WriteMode::Pwrite`), which the process changes only with `pwrite` (reads
/// through the map see those writes: it maps the page cache), and a stopped node's WAL read
/// by `inspect`, which must not change a byte of it.
///
/// The mapping stays valid while the returned value lives, even if `file` is closed.
pub(crate) fn map_read_only(file: &File, len: usize) -> io::Result<memmap2::Mmap> {
    // SAFETY: as for `map`: no other process writes or truncates the file while it is mapped.
    // A running WAL holds the directory's exclusive lock; `inspect` holds a shared flock on
    // the lock file, which a running WAL holds exclusively before it maps or changes anything
    // there. The one writer of a mapped file is the WAL's own `pwrite` of a segment
    // (`backend::StdSegment`, `pwrite` mode), which never changes its length and runs while
    // the segment is borrowed exclusively (`&mut self`), so no slice of the map is alive
    // when the bytes under it change. Another process writing the files despite the lock is
    // outside the contract (documented in the crate docs).
    unsafe { MmapOptions::new().len(len).map(file) }
}

/// Takes a shared, non-blocking flock on `file`: `ErrorKind::WouldBlock` while a WAL holds
/// its exclusive lock (see `lock`), and a WAL cannot take that lock while this one is held.
pub(crate) fn lock_shared(file: &File) -> io::Result<()> {
    // SAFETY: flock only reads its integer arguments; the fd is open because `file` is borrowed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Turns direct IO off for `file` (its later writes go through the page cache).
pub(crate) fn clear_direct(file: &File) -> io::Result<()> {
    // SAFETY: fcntl with F_GETFL/F_SETFL only reads and sets the open file's status flags;
    // the fd is open because `file` is borrowed.
    let flags = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_DIRECT) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Drops the clean cached pages of `file` in `[offset, offset + len)`, so the next faults there
/// allocate fresh single-page folios (see `StdSegment::start_appending`).
pub(crate) fn drop_cached(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let offset =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: posix_fadvise only reads its integer arguments; the fd is open because `file` is
    // borrowed. POSIX_FADV_DONTNEED never discards dirty data, only clean cached pages.
    match unsafe { libc::posix_fadvise(file.as_raw_fd(), offset, len, libc::POSIX_FADV_DONTNEED) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Drops this process's mapping of the pages in `[offset, offset + len)` of a shared file map;
/// they stay in the page cache and on disk, and a later access faults them back in. Only
/// called for ranges already made durable, so the pages are clean. Keeps the resident size
/// of a long-running node from growing with every segment it writes.
pub(crate) fn release(map: &MmapMut, offset: usize, len: usize) -> io::Result<()> {
    // SAFETY: MADV_DONTNEED discards no data here: the map is shared (`map`), so the pages
    // belong to the file, whose contents in this range were msynced before the call, and any
    // later read through the map re-reads them from the page cache or the disk.
    unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) }
}

/// Like `release`, for a read-only map (`map_read_only`): pages that were read through it.
pub(crate) fn release_read_only(map: &memmap2::Mmap, offset: usize, len: usize) -> io::Result<()> {
    // SAFETY: the map is shared and was never written, so its pages are the file's pages in
    // the page cache: dropping the mapping discards nothing, and a later read faults the same
    // bytes back in from the page cache or the disk.
    unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len) }
}

/// Reserves `len` bytes of disk for `file` (which must be empty), so the blocks exist before
/// anything is written through a map. Returns the OS error (ENOSPC when the disk is full).
pub(crate) fn preallocate(file: &File, len: u64) -> io::Result<()> {
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: fallocate only reads its integer arguments; the fd is open for the duration of the
    // call because `file` is borrowed.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) };
    if rc == 0 {
        return Ok(());
    }
    let error = io::Error::last_os_error();
    if error.raw_os_error() != Some(libc::EOPNOTSUPP) {
        return Err(error);
    }
    // A file system without fallocate: posix_fallocate writes zeros itself, which still
    // allocates every block up front.
    // SAFETY: as above; posix_fallocate returns the error number instead of setting errno.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        errno => Err(io::Error::from_raw_os_error(errno)),
    }
}

/// Takes an exclusive, non-blocking flock on `file`. `ErrorKind::WouldBlock` means another open
/// file description (another process, or another `Wal` in this one) holds it. The lock is
/// released when the file is closed.
pub(crate) fn lock(file: &File) -> io::Result<()> {
    // SAFETY: flock only reads its integer arguments; the fd is open because `file` is borrowed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Asks the kernel to start writing `[offset, offset + len)` of `file` to disk (no waiting),
/// and when `wait_for` is given, waits until writeback of that earlier range has finished.
/// A hint for pacing a large write: durability still comes from a later fsync, which also
/// reports any write error, so the result may be ignored.
pub(crate) fn write_behind(
    file: &File,
    offset: u64,
    len: u64,
    wait_for: Option<(u64, u64)>,
) -> io::Result<()> {
    let range = |offset: u64, len: u64| -> io::Result<(libc::off64_t, libc::off64_t)> {
        let convert = |v: u64| {
            libc::off64_t::try_from(v).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
        };
        Ok((convert(offset)?, convert(len)?))
    };
    let (start, count) = range(offset, len)?;
    // SAFETY: sync_file_range only reads its integer arguments; the fd is open because `file`
    // is borrowed. SYNC_FILE_RANGE_WRITE starts writeback of dirty pages in the range and
    // changes no data.
    if unsafe { libc::sync_file_range(file.as_raw_fd(), start, count, libc::SYNC_FILE_RANGE_WRITE) }
        != 0
    {
        return Err(io::Error::last_os_error());
    }
    if let Some((offset, len)) = wait_for {
        let (start, count) = range(offset, len)?;
        // SAFETY: as above; the flags wait for writeback already under way in the range and
        // start it for pages still dirty, then wait again. No data changes.
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        if unsafe { libc::sync_file_range(file.as_raw_fd(), start, count, flags) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Fixes glibc malloc's mmap threshold at `bytes` (see [`crate::fix_malloc_mmap_threshold`]).
/// False when the C library refused.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn set_mmap_threshold(bytes: i32) -> bool {
    // SAFETY: mallopt only reads its two integer arguments and changes malloc's tunables
    // under malloc's own lock; it touches no memory of ours.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub(crate) fn set_mmap_threshold(_bytes: i32) -> bool {
    true
}
