//! File access behind a small trait, so tests can inject torn writes, lost unsynced writes, bit
//! flips and failing syscalls (see `testing::MemBackend`). `StdBackend` is the real one.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use memmap2::{Mmap, MmapMut};

use crate::sys;

/// A segment file mapped into memory, and the bytes written into it. Writes go to
/// `write_at`; `sync` (or `sync_split`) hands them to the file and makes them durable. Where
/// written bytes wait until then is the map's business (`WriteMode`): a shared map holds them
/// in the file's own pages, a `pwrite`-mode segment in a staging buffer of ordinary memory.
///
/// Two rules hold for every map (the real backend's `pwrite` mode and the test backend check
/// them): the bytes written since the last sync form one range, each write at or inside its
/// end; and the next sync's range covers all of them.
pub trait SegmentMap: Send {
    /// The file's size.
    fn file_bytes(&self) -> usize;
    /// The whole file as mapped, for scanning it. Only while nothing written is waiting for a
    /// sync (a `pwrite`-mode map does not hold such bytes; it panics): read those with
    /// `read_at`.
    fn bytes(&self) -> &[u8];
    /// `len` bytes at `offset` to write into (the caller fills them all), within the file.
    /// Nothing written here is in the file before a sync covers it, but `read_at` sees it at
    /// once.
    fn write_at(&mut self, offset: usize, len: usize) -> &mut [u8];
    /// The bytes from `offset` on as written, synced or not, at least up to the end of
    /// whatever was written at `offset` (a record read here is whole). The slice may end
    /// before the file does.
    fn read_at(&self, offset: usize) -> &[u8];
    /// Makes `[offset, offset + len)` durable (msync with MS_SYNC, or `pwrite` and
    /// fdatasync) and returns only then.
    fn sync(&mut self, offset: usize, len: usize) -> io::Result<()>;
    /// Starts making `[offset, offset + len)` durable with the wait for the disk split off:
    /// does here what must happen in order with later writes (`pwrite` mode: copies the
    /// staged bytes into the file) and returns the wait, which may run on another thread.
    /// `None`: this map cannot split its sync; call `sync`.
    fn sync_split(&mut self, _offset: usize, _len: usize) -> io::Result<Option<SyncWait>> {
        Ok(None)
    }
    /// A hint that the file is done being scanned and will now be appended to at `offset`.
    /// Failure is harmless (only speed is at stake), so there is no result.
    fn start_appending(&mut self, _offset: usize) {}
    /// A hint that the process may stop keeping the mapped pages of `[offset, offset + len)`
    /// resident (they were read, or written and made durable). Failure is harmless.
    fn release(&self, _offset: usize, _len: usize) {}
    /// A hint that `[offset, offset + len)` was written, is durable and will not be written
    /// again. A map written in place may let those pages go (`release`); a `pwrite`-mode
    /// map wrote none of its pages and ignores it.
    fn release_written(&self, _offset: usize, _len: usize) {}
    /// A hint that nothing will be written to the file again (a rollover moved on): what
    /// writing needed may go.
    fn seal(&mut self) {}
}

/// The staging buffer a sync keeps allocated for the next batch: a buffer that stays
/// allocated stays in the cache and is never faulted in again. Larger than a few follower
/// appends (1 MiB each by default), so the batches of a loaded node keep theirs; above it (a
/// batch of large entries) the buffer is freed. Only the segment being written holds one: a
/// sealed segment frees its own.
const STAGING_KEPT_BYTES_MAX: usize = 4 << 20;

/// Bytes written into a segment and not yet handed to its file, in ordinary memory: the range
/// `[from, from + bytes.len())` of the file. It checks the two rules of `SegmentMap` for the
/// maps that use it (the real backend's `pwrite` mode, the test backend): a write lands at or
/// inside the range's end, and a sync covers the whole range.
#[derive(Debug, Default)]
pub(crate) struct Staging {
    from: usize,
    bytes: Vec<u8>,
}

impl Staging {
    /// `len` bytes at file offset `offset` to write into.
    pub(crate) fn write_at(&mut self, offset: usize, len: usize) -> &mut [u8] {
        if self.bytes.is_empty() {
            self.from = offset;
        }
        let end = self.from + self.bytes.len();
        assert!(
            self.from <= offset && offset <= end,
            "a write at offset {offset} is not within or at the end of the bytes written since the last sync ({}..{end})",
            self.from
        );
        let upto = offset + len - self.from;
        if upto > self.bytes.len() {
            self.bytes.resize(upto, 0);
        }
        &mut self.bytes[offset - self.from..upto]
    }

    /// The staged bytes from `offset` on, when `offset` is inside the staged range.
    pub(crate) fn read_at(&self, offset: usize) -> Option<&[u8]> {
        let at = offset.checked_sub(self.from)?;
        self.bytes.get(at..).filter(|rest| !rest.is_empty())
    }

    /// Whether nothing is staged.
    pub(crate) fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// What a sync of `[offset, offset + len)` hands to the file: the staged bytes and their
    /// file offset. A staged byte outside that range would never reach the file: a
    /// programmer error, so it panics.
    pub(crate) fn to_sync(&self, offset: usize, len: usize) -> (usize, &[u8]) {
        let end = self.from + self.bytes.len();
        assert!(
            self.bytes.is_empty() || (offset <= self.from && end <= offset + len),
            "a sync of {offset}..{} leaves bytes written at {}..{end} out of the file",
            offset + len,
            self.from
        );
        (self.from, &self.bytes)
    }

    /// The staged bytes, with any padding (they start at the offset `to_sync` gave).
    pub(crate) fn staged(&self) -> &[u8] {
        &self.bytes
    }

    /// Appends `n` zero bytes behind the staged ones (the file holds zeros there), to be
    /// written with them.
    pub(crate) fn pad_with_zeros(&mut self, n: usize) {
        self.bytes.resize(self.bytes.len() + n, 0);
    }

    /// Forgets the staged bytes (they are in the file now), keeping the buffer for the next
    /// batch unless it grew large.
    pub(crate) fn clear(&mut self) {
        self.bytes.clear();
        if self.bytes.capacity() > STAGING_KEPT_BYTES_MAX {
            self.bytes = Vec::new();
        }
    }

    /// Frees the buffer (nothing will be written again).
    pub(crate) fn free(&mut self) {
        assert!(
            self.bytes.is_empty(),
            "a segment sealed with bytes written since its last sync"
        );
        self.bytes = Vec::new();
    }
}

/// The file operations the WAL needs. Paths are always inside the WAL directory.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Ok if `dir` is an existing directory; `NotFound` if missing; `NotADirectory` otherwise.
    fn check_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes the directory's exclusive lock and writes this process's pid into `lock_path`.
    /// `WouldBlock` when someone else holds it. The lock lasts as long as the returned value.
    fn lock(&self, lock_path: &Path) -> io::Result<Box<dyn Send>>;
    /// The names of the files in `dir`.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new file of exactly `bytes` zero bytes with every block allocated and, unless
    /// `pace` is `Unfilled`, written (see `StdBackend`), and maps it. On failure (ENOSPC above
    /// all, or `Interrupted` for a cancelled `Pace::Ahead`) no file is left behind. A filled
    /// one takes a while: the WAL creates the next segment on a helper thread, with
    /// `Pace::Ahead`.
    fn create_segment(
        &self,
        path: &Path,
        bytes: u64,
        pace: Pace,
    ) -> io::Result<Box<dyn SegmentMap>>;
    /// Overwrites the existing file `path`, exactly `bytes` long, with zeros at `pace`, syncs
    /// it and maps it: what `create_segment(path, bytes, pace)` would leave, in a file whose
    /// blocks (and cached pages) exist already. The WAL reuses a segment it no longer needs
    /// this way, once the file is under a name no open keeps (FORMAT.md, "Reused segments").
    /// On failure the file is left as it is, for the caller to remove.
    fn refill_segment(
        &self,
        path: &Path,
        bytes: u64,
        pace: Pace,
    ) -> io::Result<Box<dyn SegmentMap>>;
    /// Maps an existing file.
    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentMap>>;
    /// Reads a whole file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// Reads up to `len` bytes of a file from `offset` (fewer at its end) into `into`
    /// (replacing what it held), from the disk rather than from cached pages where the
    /// system allows: the scrubber's read, into a buffer it keeps.
    fn read_range(
        &self,
        path: &Path,
        offset: u64,
        len: usize,
        into: &mut Vec<u8>,
    ) -> io::Result<()>;
    /// Creates or replaces `path` with `bytes` and fsyncs it.
    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Like `write_synced` with the file's bytes given in two parts (a header and a body),
    /// so a caller need not copy a large body behind its header.
    fn write_synced_parts(&self, path: &Path, head: &[u8], body: &[u8]) -> io::Result<()> {
        let mut bytes = Vec::with_capacity(head.len() + body.len());
        bytes.extend_from_slice(head);
        bytes.extend_from_slice(body);
        self.write_synced(path, &bytes)
    }
    /// Creates or replaces `path`, to be written front to back in pieces and made durable by
    /// the [`StreamedFile`]'s `finish`: a large file (a snapshot) written without all of it in
    /// memory at once. By default the pieces are gathered in memory and written with
    /// `write_synced` at the end. `paced`: written on a helper thread while the node serves,
    /// so it may pause to leave the disk to the WAL's persists.
    fn create_streamed<'a>(
        &'a self,
        path: &Path,
        paced: bool,
    ) -> io::Result<Box<dyn StreamedFile + 'a>> {
        let _ = paced;
        Ok(Box::new(Gathered {
            backend: self,
            path: path.to_path_buf(),
            bytes: Vec::new(),
        }))
    }
    /// Renames a file (not durable before `sync_dir`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Deletes a file (not durable before `sync_dir`).
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Deletes a large file without stalling other writes to the disk (see
    /// `StdBackend`'s). The file's contents are garbage as soon as this starts.
    fn remove_gradually(&self, path: &Path) -> io::Result<()> {
        self.remove(path)
    }
    /// Fsyncs the directory, making creates, renames and deletes in it durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// The size of a file in bytes.
    fn file_bytes(&self, path: &Path) -> io::Result<u64>;
}

/// A file being written front to back (see [`Backend::create_streamed`]). Dropped without
/// `finish`, it is left incomplete: the caller removes it.
pub trait StreamedFile {
    /// Appends `bytes`.
    fn append(&mut self, bytes: &[u8]) -> io::Result<()>;
    /// Puts `head` over the file's first `head.len()` bytes (appended before, as
    /// placeholders: a header that sums up what follows it), then fsyncs the file.
    fn finish(self: Box<Self>, head: &[u8]) -> io::Result<()>;
}

/// The default [`StreamedFile`]: every piece in memory, written whole by `finish`.
struct Gathered<'a, B: ?Sized> {
    backend: &'a B,
    path: PathBuf,
    bytes: Vec<u8>,
}

impl<B: Backend + ?Sized> StreamedFile for Gathered<'_, B> {
    fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.bytes.extend_from_slice(bytes);
        Ok(())
    }

    fn finish(mut self: Box<Self>, head: &[u8]) -> io::Result<()> {
        put_head(&mut self.bytes, head);
        self.backend.write_synced(&self.path, &self.bytes)
    }
}

/// Copies `head` over the start of `bytes`, which must hold at least as many.
fn put_head(bytes: &mut [u8], head: &[u8]) {
    assert!(
        head.len() <= bytes.len(),
        "a streamed file's head ({} bytes) is longer than what was appended ({} bytes)",
        head.len(),
        bytes.len()
    );
    bytes[..head.len()].copy_from_slice(head);
}

/// How urgently a segment is needed, which decides whether it is zero-filled and how fast.
#[derive(Clone, Debug)]
pub enum Pace {
    /// Someone is waiting for a zero-filled segment: filled at full speed. Opening an empty
    /// WAL (its first segment takes the small batches a fresh node starts with, which are what
    /// the fill is for, and it is a one-time cost) and `raftctl check disk` (which times a
    /// filled file).
    Now,
    /// Prepared ahead of need on a helper thread: paced, so it does not crowd the disk. Once
    /// the flag is set (the WAL is closing) the fill stops and the creation fails with
    /// `Interrupted`, leaving no file.
    Ahead(Arc<AtomicBool>),
    /// Someone is waiting and the fill would be their wait: a rollover that found the segment
    /// prepared ahead unfinished (appends outran its paced fill, as 64 KiB values do: a 64 MiB
    /// segment then lasts about a second), or had no helper thread to prepare one. Only
    /// preallocated: its extents stay unwritten (they read as zeros) and its persists convert
    /// them, an extra metadata write per persist that the large batches of a disk-bound
    /// workload hardly notice.
    Unfilled,
}

impl Pace {
    /// Prepared ahead of need, not cancelled.
    pub fn ahead() -> Pace {
        Pace::Ahead(Arc::new(AtomicBool::new(false)))
    }

    /// Whether zero-fill may pause between chunks.
    fn paced(&self) -> bool {
        matches!(self, Pace::Ahead(_))
    }

    /// Whether the segment prepared ahead is no longer wanted.
    pub fn cancelled(&self) -> bool {
        matches!(self, Pace::Ahead(cancel) if cancel.load(Ordering::Acquire))
    }

    /// Tells the preparation of a segment ahead to stop and leave no file.
    pub fn cancel(&self) {
        if let Pace::Ahead(cancel) = self {
            cancel.store(true, Ordering::Release);
        }
    }
}

/// The real backend: std::fs, fallocate, flock and memmap2.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdBackend {
    /// How appends reach a segment file.
    pub write: WriteMode,
}

/// How the real backend writes appends into a segment. Both keep every segment mapped, and
/// reads (recovery, entries for followers, restarts) go through the map, except those of bytes
/// written and not yet synced in `pwrite` mode; they differ only in how written bytes reach the
/// file and the disk. Recovery and every guarantee are the same for both: a range is durable
/// exactly when `SegmentMap::sync` for it returned.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteMode {
    /// Written through a shared map and made durable with msync (MS_SYNC).
    Mmap,
    /// Written into a staging buffer in ordinary memory, then copied to the file with
    /// `pwrite` and made durable with `fdatasync`; the segment is mapped read-only and only
    /// read (LMDB's model). No write faults a mapped page in, so there is no copy-on-write
    /// or write-protect fault per page and no other CPU's TLB has to be flushed.
    #[default]
    Pwrite,
}

impl WriteMode {
    /// The name used on command lines and in status: "mmap" or "pwrite".
    pub fn name(self) -> &'static str {
        match self {
            WriteMode::Mmap => "mmap",
            WriteMode::Pwrite => "pwrite",
        }
    }
}

impl std::str::FromStr for WriteMode {
    type Err = String;
    fn from_str(text: &str) -> Result<WriteMode, String> {
        match text {
            "mmap" => Ok(WriteMode::Mmap),
            "pwrite" => Ok(WriteMode::Pwrite),
            other => Err(format!(
                "unknown WAL write mode {other:?}: expected \"pwrite\" or \"mmap\""
            )),
        }
    }
}

impl StdBackend {
    /// The real backend writing appends the way `write` says.
    pub fn new(write: WriteMode) -> StdBackend {
        StdBackend { write }
    }
}

thread_local! {
    /// Successful segment syncs (msync) made by this thread: what a test of the real
    /// backend counts to see that every persist reaches the disk (no other test can see a
    /// skipped msync, since only power loss shows it).
    static SEGMENT_SYNCS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

impl StdBackend {
    /// The number of successful segment syncs this thread made through any `StdBackend`.
    pub fn segment_syncs_on_this_thread() -> u64 {
        SEGMENT_SYNCS.with(std::cell::Cell::get)
    }
}

/// The second half of a sync split by [`SegmentMap::sync_split`]: waits until what was
/// written is durable (the real backend: fdatasync of the segment's file, shared with the map).
pub struct SyncWait(Box<dyn FnOnce() -> io::Result<()> + Send>);

impl SyncWait {
    /// A wait that runs `wait`.
    pub fn new(wait: impl FnOnce() -> io::Result<()> + Send + 'static) -> SyncWait {
        SyncWait(Box::new(wait))
    }

    /// Waits for the disk.
    pub fn wait(self) -> io::Result<()> {
        (self.0)()
    }
}

impl fmt::Debug for SyncWait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SyncWait")
    }
}

struct StdSegment {
    // The map must not outlive the file's blocks; the file stays open while the map lives.
    map: Mapping,
    /// Shared with a split sync's wait (`sync_split`), which needs no handle of its own.
    file: Arc<File>,
    /// `pwrite` mode: the file holds zeros from here to its end and nothing was written
    /// there yet (a created segment: 0; an existing one: its length, unknown bytes). A write
    /// whose last page ends in this range is padded with those zeros to the page's end, so
    /// the page cache never has to read a partly written page from the disk first.
    zeros_from: usize,
}

/// A segment's map, by write mode.
enum Mapping {
    /// `mmap`: shared, written in place, made durable with msync.
    Shared(MmapMut),
    /// `pwrite`: read-only and shared, so reads see the page cache, which each sync's `pwrite`
    /// fills; the bytes written since the last sync wait in `staging`.
    ReadOnly { map: Mmap, staging: Staging },
}

impl Mapping {
    fn advise(&self, advice: memmap2::Advice) -> io::Result<()> {
        match self {
            Mapping::Shared(map) => map.advise(advice),
            Mapping::ReadOnly { map, .. } => map.advise(advice),
        }
    }
}

impl StdSegment {
    /// `pwrite` mode: copies the staged bytes (all inside `[offset, offset + len)`) into the
    /// file. They leave the buffer only once the file has them, so reads never miss them.
    fn write_staged(&mut self, offset: usize, len: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if let Mapping::ReadOnly { map, staging } = &mut self.map {
            let (from, staged) = staging.to_sync(offset, len);
            let end = from + staged.len();
            // A segment's zeros are written with direct IO, which leaves no page cached: a
            // write that ended inside a page would make the kernel read the rest of the page
            // from the disk, on the event loop, once for every page of the log.
            let padded = end
                .next_multiple_of(crate::recovery::PAGE_BYTES)
                .min(map.len());
            if end >= self.zeros_from && padded > end {
                staging.pad_with_zeros(padded - end);
            }
            let staged = staging.staged();
            self.file.write_all_at(staged, from as u64)?;
            self.zeros_from = self.zeros_from.max(from + staged.len());
            staging.clear();
        }
        Ok(())
    }
}

impl SegmentMap for StdSegment {
    fn file_bytes(&self) -> usize {
        match &self.map {
            Mapping::Shared(map) => map.len(),
            Mapping::ReadOnly { map, .. } => map.len(),
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.map {
            Mapping::Shared(map) => map,
            Mapping::ReadOnly { map, staging } => {
                assert!(
                    staging.is_empty(),
                    "the whole mapped file was asked for while written bytes wait for a sync"
                );
                map
            }
        }
    }

    fn write_at(&mut self, offset: usize, len: usize) -> &mut [u8] {
        let file_bytes = self.file_bytes();
        assert!(
            offset + len <= file_bytes,
            "a write at {offset}..{} past the end of a {file_bytes}-byte segment",
            offset + len
        );
        match &mut self.map {
            Mapping::Shared(map) => &mut map[offset..offset + len],
            Mapping::ReadOnly { staging, .. } => staging.write_at(offset, len),
        }
    }

    fn read_at(&self, offset: usize) -> &[u8] {
        match &self.map {
            Mapping::Shared(map) => &map[offset..],
            // The staged range starts where a sync ended, so a record before it lies wholly
            // in the file and one inside it wholly in the buffer.
            Mapping::ReadOnly { map, staging } => staging.read_at(offset).unwrap_or(&map[offset..]),
        }
    }

    fn sync(&mut self, offset: usize, len: usize) -> io::Result<()> {
        match &self.map {
            Mapping::Shared(map) => map.flush_range(offset, len)?,
            Mapping::ReadOnly { .. } => {
                self.write_staged(offset, len)?;
                self.file.sync_data()?;
            }
        }
        SEGMENT_SYNCS.with(|n| n.set(n.get() + 1));
        Ok(())
    }

    fn sync_split(&mut self, offset: usize, len: usize) -> io::Result<Option<SyncWait>> {
        if let Mapping::Shared(_) = self.map {
            return Ok(None);
        }
        self.write_staged(offset, len)?;
        let file = Arc::clone(&self.file);
        // Counted as a segment sync on the thread that waits.
        Ok(Some(SyncWait::new(move || {
            file.sync_data()?;
            SEGMENT_SYNCS.with(|n| n.set(n.get() + 1));
            Ok(())
        })))
    }

    fn release(&self, offset: usize, len: usize) {
        let _ = match &self.map {
            Mapping::Shared(map) => sys::release(map, offset, len),
            Mapping::ReadOnly { map, .. } => sys::release_read_only(map, offset, len),
        };
    }

    fn release_written(&self, offset: usize, len: usize) {
        if let Mapping::Shared(map) = &self.map {
            let _ = sys::release(map, offset, len);
        }
    }

    fn seal(&mut self) {
        if let Mapping::ReadOnly { staging, .. } = &mut self.map {
            staging.free();
        }
    }

    fn start_appending(&mut self, offset: usize) {
        // Recovery scanned this file with readahead, which caches it in large folios; dirtying
        // one byte of a large folio makes every sync write the whole folio back (through the
        // map or by `pwrite`). Drop the clean cache after the write position and stop
        // readahead, so appends use one-page folios.
        let from = offset.next_multiple_of(4096);
        let file_bytes = self.file_bytes();
        let _ = self.map.advise(memmap2::Advice::Random);
        let _ = sys::drop_cached(
            &self.file,
            from as u64,
            file_bytes.saturating_sub(from) as u64,
        );
    }
}

/// `remove_gradually` frees this much of a file at a time.
const REMOVE_CHUNK_BYTES: u64 = 1 << 20;

/// Zeroing syncs this much at a time, so the disk queue never holds a whole segment's worth
/// of zeros ahead of a concurrent persist.
const ZERO_FILL_CHUNK_BYTES: usize = 256 << 10;

/// Writes zeros over a new (fallocated, not yet mapped) segment file and syncs them. Stops
/// with `Interrupted` when a `Pace::Ahead` is cancelled.
///
/// fallocate leaves "unwritten" extents: the first msync over each range then converts them,
/// which on ext4 is a second, synchronous metadata write inside every persist. Measured on this
/// machine's ext4 with 42 KiB batches: msync p50 about 290 us into a fallocated segment, about
/// 175 us into a zero-filled one. The cost moves to segment creation, which the WAL does on a
/// helper thread ahead of need. The price is that every segment is written twice; on a disk
/// with a byte budget (this machine's virtual disk throttles after sustained writing) that is
/// not free, and when appends outrun the paced fill, a rollover does not wait for it but
/// creates its segment `Pace::Unfilled` (see `Wal`'s rollover).
///
/// `pwrite` mode writes the zeros with direct IO (`zero_fill_direct`) where the file system
/// allows it; `mmap` mode, and `pwrite` mode where direct IO is refused, through the page
/// cache (`zero_fill_buffered`).
fn zero_fill(path: &Path, file: &File, len: u64, pace: Pace, write: WriteMode) -> io::Result<()> {
    let direct = write == WriteMode::Pwrite
        && len.is_multiple_of(DIRECT_ALIGN as u64)
        && zero_fill_direct(path, len, &pace)?;
    if !direct {
        zero_fill_buffered(file, len, &pace, write)?;
    }
    file.sync_data()
}

/// Zeros through a second handle of the file opened for direct IO, in chunks of
/// `ZERO_FILL_CHUNK_BYTES` from one zeroed buffer: a system call per chunk and no page
/// cache, where the buffered fill costs a call, a page allocation and a writeback per page
/// (with 256 clients the buffered fill was about a tenth of the three nodes' CPU). A
/// `pwrite`-mode segment needs no cached pages: its writes cover whole pages
/// (`StdSegment::write_staged`). Returns false, having written nothing, where the file
/// system refuses direct IO. Not durable before the caller's fdatasync.
fn zero_fill_direct(path: &Path, len: u64, pace: &Pace) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let Some(file) = open_direct(OpenOptions::new().write(true), path)? else {
        return Ok(false);
    };
    // An anonymous map is page-aligned (as direct IO needs) and reads as zeros.
    let zeros = MmapMut::map_anon(ZERO_FILL_CHUNK_BYTES)?;
    let mut at = 0u64;
    while at < len {
        check_wanted(pace)?;
        let chunk = (ZERO_FILL_CHUNK_BYTES as u64).min(len - at);
        let started = std::time::Instant::now();
        // A direct write returns once the disk has the chunk: the pacing below measures it.
        match file.write_all_at(&zeros[..chunk as usize], at) {
            Err(e) if at == 0 && refuses_direct(&e) => return Ok(false),
            written => written?,
        }
        at += chunk;
        pause_after_chunk(pace, started, at < len);
    }
    Ok(true)
}

/// The fill through the page cache, before the file is mapped; the pages stay cached for the
/// first writes. In `mmap` mode one 4 KiB `pwrite` per page: a larger write would let the
/// page cache use large folios, and an msync writes a dirty folio back whole; page-sized
/// writes keep single-page folios, so a persist later writes back only the pages a batch
/// touched (wal-bench persist latency is the same as after zeroing through the map). Zeroing
/// through the map instead cost a page fault per page and, at every sync of the mapped pages,
/// a TLB shootdown across the process's CPUs: with 256 clients it was 8-9 % of the machine's
/// CPU, against 3-5 % this way. In `pwrite` mode, whose writes cover whole pages
/// (`StdSegment::write_staged`), one `pwrite` per chunk.
fn zero_fill_buffered(file: &File, len: u64, pace: &Pace, write: WriteMode) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let zeros = vec![
        0u8;
        match write {
            WriteMode::Mmap => 4096,
            WriteMode::Pwrite => ZERO_FILL_CHUNK_BYTES,
        }
    ];
    let mut at = 0u64;
    while at < len {
        check_wanted(pace)?;
        let chunk = (ZERO_FILL_CHUNK_BYTES as u64).min(len - at);
        let started = std::time::Instant::now();
        let mut piece = at;
        while piece < at + chunk {
            let n = (zeros.len() as u64).min(at + chunk - piece) as usize;
            file.write_all_at(&zeros[..n], piece)?;
            piece += n as u64;
        }
        // Written back and waited for chunk by chunk, so the disk queue never holds more than
        // one chunk of zeros ahead of a concurrent persist.
        sys::write_behind(file, at, chunk, Some((at, chunk)))?;
        at += chunk;
        pause_after_chunk(pace, started, at < len);
    }
    Ok(())
}

/// `Interrupted` once a segment prepared ahead is no longer wanted.
fn check_wanted(pace: &Pace) -> io::Result<()> {
    if pace.cancelled() {
        return Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "the segment prepared ahead is no longer wanted",
        ));
    }
    Ok(())
}

/// Ahead of need, the fill is paced at a third of the disk's pace in small chunks: the zeros
/// are background work, and whatever of them is queued is what a concurrent persist waits
/// behind (256-client p99 16.7-17.0 ms unpaced, 14.4 ms paced at half in 1 MiB chunks,
/// 13.4-13.8 ms with no zero-fill at all; with 1 MiB chunks three nodes' persists still
/// stalled together for 30-90 ms about a second after each rollover).
fn pause_after_chunk(pace: &Pace, chunk_started: std::time::Instant, more: bool) {
    if pace.paced() && more {
        leave_the_disk(chunk_started);
    }
}

/// Paced writing's pause after a chunk begun at `chunk_started`: twice as long as the chunk
/// took, so the writer takes at most a third of the disk's time and the WAL's persists the
/// rest.
fn leave_the_disk(chunk_started: std::time::Instant) {
    std::thread::sleep(chunk_started.elapsed() * 2);
}

/// How a new map will be used: scanned from the start (recovery), or appended to.
#[derive(Clone, Copy)]
enum Access {
    Scan,
    Append,
}

/// Whether an error is the file system refusing direct IO (tmpfs before Linux 6.6, some
/// network file systems).
fn refuses_direct(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::EINVAL)
}

/// Opens `path` with `options` and direct IO; `None` where the file system refuses it.
fn open_direct(options: &mut OpenOptions, path: &Path) -> io::Result<Option<File>> {
    use std::os::unix::fs::OpenOptionsExt;
    match options.custom_flags(libc::O_DIRECT).open(path) {
        Ok(file) => Ok(Some(file)),
        Err(e) if refuses_direct(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The block size direct IO is aligned to (file offsets, lengths and memory): the largest
/// logical block size in common use, so it satisfies 512-byte devices too.
const DIRECT_ALIGN: usize = 4096;

/// How much a direct write hands the disk at once. Writes are synchronous and one at a
/// time, so a concurrent persist waits behind at most one of them.
const DIRECT_CHUNK_BYTES: usize = 1 << 20;

/// The real backend's [`StreamedFile`], and its way of writing any whole file
/// (`write_synced`): the bytes go to the file a chunk of `DIRECT_CHUNK_BYTES` at a time, with
/// direct IO where the file system allows it — through the page cache, a snapshot file is
/// megabytes of writeback that every concurrent WAL persist's flush has to wait behind
/// (measured here: buffered 64 MiB + fdatasync 43-385 MB/s, direct 1.1 GB/s) — else through
/// the page cache with each chunk's writeback started at once and at most two chunks in
/// flight. The file never sits in memory whole; the first chunk stays in memory until
/// `finish` puts the head over it.
struct ChunkedFile {
    out: ChunkOut,
    /// The chunk being filled; it starts at file offset `at`.
    chunk: MmapMut,
    filled: usize,
    at: u64,
    /// The file's first chunk, kept back for the head once the file grew past it.
    first: Option<MmapMut>,
    /// A file written on a helper thread while the node serves (a snapshot): after each
    /// chunk it pauses twice as long as the chunk took to write, as a segment's zero-fill
    /// ahead of need does, so that it takes at most a third of the disk's time. Written at
    /// full speed, the three nodes' snapshot files (17 MB each at 100,000 keys) queued
    /// ahead of every WAL persist's flush: with 256 clients the longest gap between two
    /// acknowledged writes was 40-120 ms with snapshots and 10-11 ms without them.
    paced: bool,
}

/// Where a [`ChunkedFile`]'s chunks go.
struct ChunkOut {
    file: File,
    direct: bool,
}

impl ChunkOut {
    /// Writes `bytes` (a chunk, or the last part of one) at `offset`. Direct IO writes whole
    /// blocks: the caller pads the last chunk with zeros and cuts the file back.
    fn write(&mut self, bytes: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if self.direct {
            match self.file.write_all_at(bytes, offset) {
                Err(e) if refuses_direct(&e) => {
                    // Refused after all (some file systems accept the flag at open only):
                    // through the page cache from here on.
                    sys::clear_direct(&self.file)?;
                    self.direct = false;
                }
                written => return written,
            }
        }
        self.file.write_all_at(bytes, offset)?;
        // Only pacing: the fsync in `finish` makes the file durable and reports errors.
        let previous = offset
            .checked_sub(bytes.len() as u64)
            .map(|start| (start, bytes.len() as u64));
        let _ = sys::write_behind(&self.file, offset, bytes.len() as u64, previous);
        Ok(())
    }
}

impl ChunkedFile {
    fn create(path: &Path) -> io::Result<ChunkedFile> {
        let mut options = OpenOptions::new();
        options.write(true).create(true).truncate(true);
        let (file, direct) = match open_direct(&mut options.clone(), path)? {
            Some(file) => (file, true),
            None => (options.open(path)?, false),
        };
        Ok(ChunkedFile {
            out: ChunkOut { file, direct },
            // An anonymous map is page-aligned, as direct IO requires of the memory it
            // writes from.
            chunk: MmapMut::map_anon(DIRECT_CHUNK_BYTES)?,
            filled: 0,
            at: 0,
            first: None,
            paced: false,
        })
    }
}

impl StreamedFile for ChunkedFile {
    fn append(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let take = bytes.len().min(DIRECT_CHUNK_BYTES - self.filled);
            self.chunk[self.filled..self.filled + take].copy_from_slice(&bytes[..take]);
            self.filled += take;
            bytes = &bytes[take..];
            if self.filled == DIRECT_CHUNK_BYTES {
                if self.at == 0 {
                    let next = MmapMut::map_anon(DIRECT_CHUNK_BYTES)?;
                    self.first = Some(std::mem::replace(&mut self.chunk, next));
                } else {
                    let started = std::time::Instant::now();
                    self.out.write(&self.chunk, self.at)?;
                    if self.paced {
                        leave_the_disk(started);
                    }
                }
                self.at += DIRECT_CHUNK_BYTES as u64;
                self.filled = 0;
            }
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, head: &[u8]) -> io::Result<()> {
        let total = self.at + self.filled as u64;
        // Direct IO writes whole blocks: the last one is padded with zeros, cut off below.
        let padded = if self.out.direct {
            let padded = self.filled.div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
            self.chunk[self.filled..padded].fill(0);
            padded
        } else {
            self.filled
        };
        match self.first.take() {
            None => {
                put_head(&mut self.chunk[..self.filled], head);
                self.out.write(&self.chunk[..padded], 0)?;
            }
            Some(mut first) => {
                if padded > 0 {
                    self.out.write(&self.chunk[..padded], self.at)?;
                }
                put_head(&mut first, head);
                self.out.write(&first, 0)?;
            }
        }
        if self.out.file.metadata()?.len() != total {
            self.out.file.set_len(total)?;
        }
        self.out.file.sync_all()
    }
}

/// Up to `len` bytes of `file` from `offset` (fewer at its end).
pub(crate) fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    read_at_into(file, offset, len, &mut bytes)?;
    Ok(bytes)
}

/// Up to `len` bytes of `file` from `offset` (fewer at its end), into `into`.
pub(crate) fn read_at_into(
    file: &File,
    offset: u64,
    len: usize,
    into: &mut Vec<u8>,
) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    into.clear();
    into.resize(len, 0);
    let mut filled = 0;
    while filled < len {
        match file.read_at(&mut into[filled..], offset + filled as u64) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    into.truncate(filled);
    Ok(())
}

thread_local! {
    /// The aligned buffer `read_direct` reads into, kept for the next read.
    static DIRECT_READ: std::cell::RefCell<Option<MmapMut>> = const { std::cell::RefCell::new(None) };
}

/// Up to `len` bytes of the file at `path` from `offset`, into `into`, read with direct IO:
/// from the disk whatever the page cache holds (pages this process maps included, which
/// `fadvise` cannot drop), adding nothing to it, through a buffer kept from read to read.
/// The read covers whole blocks around the range. Returns false, having read nothing, where
/// the file system refuses direct IO.
fn read_direct(path: &Path, offset: u64, len: usize, into: &mut Vec<u8>) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let Some(file) = open_direct(OpenOptions::new().read(true), path)? else {
        return Ok(false);
    };
    let align = DIRECT_ALIGN as u64;
    let start = offset - offset % align;
    let skip = (offset - start) as usize;
    let want = (skip + len).div_ceil(DIRECT_ALIGN) * DIRECT_ALIGN;
    DIRECT_READ.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|buffer| buffer.len() < want) {
            // An anonymous map is page-aligned, as direct IO requires of the memory it
            // reads into.
            *cell = Some(MmapMut::map_anon(want.next_multiple_of(64 << 10))?);
        }
        let buffer = cell.as_mut().expect("just made");
        let mut filled = 0;
        while filled < want {
            match file.read_at(&mut buffer[filled..want], start + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if filled == 0 && refuses_direct(&e) => return Ok(false),
                Err(e) => return Err(e),
            }
            if filled % DIRECT_ALIGN != 0 {
                break; // The end of the file.
            }
        }
        into.clear();
        if filled > skip {
            into.extend_from_slice(&buffer[skip..filled.min(skip + len)]);
        }
        Ok(true)
    })
}

fn map_file(file: File, access: Access, write: WriteMode) -> io::Result<Box<dyn SegmentMap>> {
    let len = usize::try_from(file.metadata()?.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large to map"))?;
    // Readahead makes recovery's sequential scan fast; for appending it is harmful: a write
    // fault would read ahead into large folios, and every msync would write whole folios back
    // (measured on ext4: a 41 KiB batch took 1.4-2x longer to persist).
    let advice = match access {
        Access::Scan => memmap2::Advice::Sequential,
        Access::Append => memmap2::Advice::Random,
    };
    let map = match write {
        WriteMode::Mmap => Mapping::Shared(sys::map(&file, len)?),
        WriteMode::Pwrite => Mapping::ReadOnly {
            map: sys::map_read_only(&file, len)?,
            staging: Staging::default(),
        },
    };
    map.advise(advice)?;
    if let Access::Scan = access {
        // Start reading the whole file now, so the disk works while the scan checks CRCs.
        let _ = map.advise(memmap2::Advice::WillNeed);
    }
    Ok(Box::new(StdSegment {
        map,
        file: Arc::new(file),
        zeros_from: match access {
            Access::Scan => len,
            Access::Append => 0,
        },
    }))
}

impl Backend for StdBackend {
    fn check_dir(&self, dir: &Path) -> io::Result<()> {
        if fs::metadata(dir)?.is_dir() {
            Ok(())
        } else {
            Err(io::Error::from_raw_os_error(libc::ENOTDIR))
        }
    }

    fn lock(&self, lock_path: &Path) -> io::Result<Box<dyn Send>> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(lock_path)?;
        sys::lock(&file)?;
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Box::new(file))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(dir)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        Ok(names)
    }

    fn create_segment(
        &self,
        path: &Path,
        bytes: u64,
        pace: Pace,
    ) -> io::Result<Box<dyn SegmentMap>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        // An unfilled file needs no sync here: the size and the allocation are metadata its
        // data's retrieval needs, so the first persist's fdatasync (or msync) carries them,
        // before the directory fsync that makes the name durable.
        let created = sys::preallocate(&file, bytes)
            .and_then(|()| file.set_len(bytes))
            .and_then(|()| match pace {
                Pace::Unfilled => Ok(()),
                pace => zero_fill(path, &file, bytes, pace, self.write),
            })
            .and_then(|()| map_file(file, Access::Append, self.write));
        if created.is_err() {
            let _ = fs::remove_file(path);
        }
        created
    }

    /// The zeros go through the page cache, over the pages the file's records left cached:
    /// direct IO would drop those pages, and the records written next would need new ones.
    fn refill_segment(
        &self,
        path: &Path,
        bytes: u64,
        pace: Pace,
    ) -> io::Result<Box<dyn SegmentMap>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        if len != bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{len} bytes, not the segment size {bytes}"),
            ));
        }
        zero_fill_buffered(&file, bytes, &pace, self.write)?;
        file.sync_data()?;
        map_file(file, Access::Append, self.write)
    }

    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentMap>> {
        map_file(
            OpenOptions::new().read(true).write(true).open(path)?,
            Access::Scan,
            self.write,
        )
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        fs::read(path)
    }

    fn read_range(
        &self,
        path: &Path,
        offset: u64,
        len: usize,
        into: &mut Vec<u8>,
    ) -> io::Result<()> {
        // Direct IO: no page faults, no page cache filled and dropped again, no copy through
        // it (the scrubber's reads were about 4 % of the three nodes' CPU at 256 clients).
        if read_direct(path, offset, len, into)? {
            return Ok(());
        }
        let file = File::open(path)?;
        // Clean cached pages are dropped first, so the read comes from the disk, where bit
        // rot is. Pages this process still maps stay cached; failure only costs that.
        let _ = sys::drop_cached(&file, offset, len as u64);
        read_at_into(&file, offset, len, into)
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.write_synced_parts(path, &[], bytes)
    }

    fn write_synced_parts(&self, path: &Path, head: &[u8], bytes: &[u8]) -> io::Result<()> {
        let mut file = ChunkedFile::create(path)?;
        file.append(head)?;
        file.append(bytes)?;
        Box::new(file).finish(&[])
    }

    fn create_streamed<'a>(
        &'a self,
        path: &Path,
        paced: bool,
    ) -> io::Result<Box<dyn StreamedFile + 'a>> {
        let mut file = ChunkedFile::create(path)?;
        file.paced = paced;
        Ok(Box::new(file))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }

    /// Cuts the file down a chunk at a time, pausing as long as each cut took, then unlinks
    /// it. Freeing blocks is not free here: with online discard, unlinking a 64 MiB segment
    /// in one go held a concurrent persist for 18-20 ms; cut in 1 MiB steps, at most 3.3 ms.
    fn remove_gradually(&self, path: &Path) -> io::Result<()> {
        let file = OpenOptions::new().write(true).open(path)?;
        let mut len = file.metadata()?.len();
        while len > 0 {
            let started = std::time::Instant::now();
            len = len.saturating_sub(REMOVE_CHUNK_BYTES);
            file.set_len(len)?;
            std::thread::sleep(started.elapsed());
        }
        drop(file);
        fs::remove_file(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn file_bytes(&self, path: &Path) -> io::Result<u64> {
        Ok(fs::metadata(path)?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes that differ at every offset, so a misplaced chunk would show.
    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    fn round_trip(dir: &Path) {
        let backend = StdBackend::default();
        // Sizes around the alignment and the chunk size, with a head that shifts the body
        // off every boundary.
        for (head_len, body_len) in [
            (0, 0),
            (7, 0),
            (0, DIRECT_ALIGN),
            (13, DIRECT_ALIGN - 13),
            (13, DIRECT_CHUNK_BYTES),
            (40, 3 * DIRECT_CHUNK_BYTES + 123),
        ] {
            let path = dir.join(format!("file-{head_len}-{body_len}"));
            let (head, body) = (pattern(head_len, 1), pattern(body_len, 2));
            backend.write_synced_parts(&path, &head, &body).unwrap();
            let read = fs::read(&path).unwrap();
            assert_eq!(read.len(), head_len + body_len, "{}", path.display());
            assert!(read[..head_len] == head[..] && read[head_len..] == body[..]);
            // Writing again over a longer file leaves exactly the new bytes.
            backend.write_synced_parts(&path, &[], &head).unwrap();
            assert_eq!(fs::read(&path).unwrap(), head);
        }
    }

    /// The scrubber's read returns exactly the file's bytes in the range asked for (fewer at
    /// the end of the file, none past it), at offsets and lengths off every block boundary,
    /// into a buffer reused from read to read (with direct IO where the file system allows,
    /// as here, and through the page cache otherwise).
    #[test]
    fn range_reads_return_exactly_the_bytes_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let len = 3 * DIRECT_ALIGN + 123;
        let bytes = pattern(len, 5);
        fs::write(&path, &bytes).unwrap();
        let backend = StdBackend::default();
        let mut into = vec![9u8; 10];
        for (offset, want) in [
            (0, 0),
            (0, 1),
            (0, len),
            (1, DIRECT_ALIGN),
            (DIRECT_ALIGN - 1, 2),
            (DIRECT_ALIGN, DIRECT_ALIGN),
            (5000, 10_000),
            (len - 1, 7),
            (len, 5),
            (len + 4096, 5),
        ] {
            backend
                .read_range(&path, offset as u64, want, &mut into)
                .unwrap();
            let lo = offset.min(len);
            let hi = (offset + want).min(len);
            assert!(into == bytes[lo..hi], "{want} bytes at {offset}");
            let file = File::open(&path).unwrap();
            read_at_into(&file, offset as u64, want, &mut into).unwrap();
            assert!(into == bytes[lo..hi], "buffered: {want} bytes at {offset}");
        }
    }

    /// A streamed file holds exactly what was appended, with the head put over its start, in
    /// pieces of every size across blocks and chunks, with direct IO and through the page
    /// cache (as where direct IO is refused).
    #[test]
    fn streamed_files_hold_exactly_their_bytes_in_both_ways() {
        let dir = tempfile::tempdir().unwrap();
        for direct in [true, false] {
            for (head_len, len) in [
                (0, 0),
                (5, 5),
                (40, DIRECT_ALIGN + 1),
                (40, DIRECT_CHUNK_BYTES),
                (40, DIRECT_CHUNK_BYTES + 1),
                (300, 3 * DIRECT_CHUNK_BYTES + 4321),
            ] {
                let path = dir.path().join(format!("streamed-{direct}-{len}"));
                let bytes = pattern(len, 3);
                let head = pattern(head_len, 4);
                let mut file = ChunkedFile::create(&path).unwrap();
                if !direct {
                    sys::clear_direct(&file.out.file).unwrap();
                    file.out.direct = false;
                }
                let mut file: Box<dyn StreamedFile> = Box::new(file);
                let mut at = 0;
                let mut step = 1;
                while at < len {
                    let n = step.min(len - at);
                    file.append(&bytes[at..at + n]).unwrap();
                    at += n;
                    step = step * 7 % 700_001 + 1;
                }
                file.finish(&head).unwrap();
                let mut expected = bytes.clone();
                expected[..head_len].copy_from_slice(&head);
                let read = fs::read(&path).unwrap();
                assert_eq!(read.len(), len, "{}", path.display());
                assert!(read == expected, "{}: bytes differ", path.display());
            }
        }
    }

    #[test]
    fn files_written_with_direct_io_hold_exactly_their_bytes() {
        round_trip(tempfile::tempdir().unwrap().path());
    }

    #[test]
    fn files_are_written_where_direct_io_is_refused() {
        // tmpfs refused O_DIRECT before Linux 6.6; either way the bytes must be right.
        let shm = Path::new("/dev/shm");
        if !shm.is_dir() {
            crate::testing::skip(
                "no /dev/shm here: writes to a tmpfs, which may refuse O_DIRECT, are untested",
            );
            return;
        }
        round_trip(tempfile::tempdir_in(shm).unwrap().path());
    }

    #[test]
    fn new_segments_are_all_zeros_and_fully_allocated() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        // Not a multiple of the zeroing chunk or the page, paced and unpaced.
        for (name, bytes, pace, write) in [
            (
                "a",
                3 * ZERO_FILL_CHUNK_BYTES as u64 + 4096 + 100,
                Pace::ahead(),
                WriteMode::Pwrite,
            ),
            (
                "b",
                ZERO_FILL_CHUNK_BYTES as u64 / 2,
                Pace::Now,
                WriteMode::Mmap,
            ),
            // Unfilled: unwritten extents read as zeros, and writes through a shared map
            // or by `pwrite` land in them like anywhere else.
            (
                "c",
                2 * ZERO_FILL_CHUNK_BYTES as u64 + 100,
                Pace::Unfilled,
                WriteMode::Mmap,
            ),
            (
                "d",
                ZERO_FILL_CHUNK_BYTES as u64,
                Pace::Unfilled,
                WriteMode::Pwrite,
            ),
        ] {
            let path = dir.path().join(name);
            let backend = StdBackend::new(write);
            let mut segment = backend.create_segment(&path, bytes, pace).unwrap();
            assert_eq!(segment.bytes().len() as u64, bytes);
            assert!(segment.bytes().iter().all(|&b| b == 0));
            let metadata = fs::metadata(&path).unwrap();
            assert_eq!(metadata.len(), bytes);
            assert!(metadata.blocks() * 512 >= bytes, "every block allocated");
            // Writable, and the write reaches the file once synced.
            segment.write_at(100, 1)[0] = 7;
            segment.sync(0, 4096).unwrap();
            assert_eq!(fs::read(&path).unwrap()[100], 7);
            // Released pages read back what the file holds.
            segment.release(0, 4096);
            assert_eq!(segment.bytes()[100], 7);
            // What is written but not synced reads back at once, but reaches the file only
            // with a shared map; once synced, the map shows it in both modes.
            segment.write_at(5000, 1)[0] = 9;
            assert_eq!(segment.read_at(5000)[0], 9);
            let in_file = fs::read(&path).unwrap()[5000];
            assert_eq!(in_file, if write == WriteMode::Mmap { 9 } else { 0 });
            segment.sync(4096, 4096).unwrap();
            assert_eq!((segment.bytes()[5000], segment.read_at(5000)[0]), (9, 9));
        }
        // An existing file is never overwritten.
        assert!(StdBackend::default()
            .create_segment(&dir.path().join("a"), 4096, Pace::Now)
            .is_err());
    }

    // Proves a segment prepared ahead whose preparation was cancelled (the WAL closing)
    // fails with `Interrupted` and leaves no file behind.
    #[test]
    fn a_cancelled_segment_prepared_ahead_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("next");
        let pace = Pace::ahead();
        pace.cancel();
        let error = StdBackend::default()
            .create_segment(&path, 4 * ZERO_FILL_CHUNK_BYTES as u64, pace)
            .err()
            .expect("a cancelled preparation fails");
        assert_eq!(error.kind(), io::ErrorKind::Interrupted);
        assert!(!path.exists());
    }

    // Proves the staging buffer's reads and its two rules: bytes written since the last sync
    // read back from where they were written, a write may land inside or at the end of them
    // (never before them or after a gap), and a sync must cover them all.
    #[test]
    fn staged_bytes_read_back_and_keep_the_rules() {
        let mut staging = Staging::default();
        staging.write_at(64, 8).fill(1);
        staging.write_at(72, 8).fill(2);
        staging.write_at(68, 2).fill(3);
        assert_eq!(
            staging.read_at(64).unwrap(),
            [1, 1, 1, 1, 3, 3, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2]
        );
        assert_eq!(staging.read_at(72).unwrap(), [2; 8]);
        assert_eq!((staging.read_at(63), staging.read_at(80)), (None, None));
        let (from, staged) = staging.to_sync(0, 80);
        assert_eq!((from, staged.len()), (64, 16));
        let rule = |f: fn(&mut Staging)| {
            let mut staging = Staging::default();
            staging.write_at(64, 16);
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut staging))).is_err()
        };
        assert!(
            rule(|s| s.write_at(88, 8).fill(0)),
            "a gap after the staged bytes"
        );
        assert!(rule(|s| s.write_at(56, 8).fill(0)), "a write before them");
        assert!(
            rule(|s| _ = s.to_sync(64, 8)),
            "a sync that leaves some out"
        );
        assert!(rule(|s| s.free()), "sealed with bytes not synced");
        assert!(!rule(|s| _ = s.to_sync(0, 4096)));
        staging.clear();
        assert!(staging.is_empty() && staging.read_at(64).is_none());
        // After a sync the next write starts a new range anywhere.
        staging.write_at(4096, 8).fill(5);
        assert_eq!(staging.read_at(4096).unwrap(), [5; 8]);
    }
}
