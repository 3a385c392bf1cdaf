//! A fault-injecting, in-memory file system for tests (of this crate and of the daemon).
//!
//! Every file has a *live* image (what reads see) and a *durable* image (what survives a crash:
//! advanced only by `sync` of a segment range, `write_synced`, and for names in the directory,
//! `sync_dir`). `crash` builds the file system a reboot would see; `crash_torn` additionally keeps
//! a random subset of the unsynced 512-byte sectors, as kernel writeback may have written them.
//! Faults: a full disk on segment creation, failing msync/fsync, a read-only directory.
//! [`HoldAhead`] wraps any backend (this one or the real one) to keep the next segment's
//! preparation unfinished, as when appends outrun its paced zero-fill.
//!
//! Also [`skip`], for the part of a test this machine cannot run (no root, no `/dev/shm`).

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::backend::{Backend, Pace, SegmentMap, Staging, StreamedFile, SyncWait};
use crate::format::CHUNK_BYTES;

/// Faults to inject; all off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Creating a segment fails with ENOSPC.
    pub no_space: bool,
    /// Every segment sync and directory fsync fails with EIO.
    pub fail_sync: bool,
    /// Creating or opening files for writing fails with EROFS.
    pub read_only: bool,
}

#[derive(Debug, Default)]
struct MemFile {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Which file this is, as an inode number says: no other file of the file system had
    /// it; kept by a rename, a rewrite in place and a crash.
    id: u64,
}

type FileRef = Arc<Mutex<MemFile>>;

#[derive(Debug, Default)]
struct MemState {
    dirs: BTreeSet<PathBuf>,
    /// The directory as it is now.
    live: BTreeMap<PathBuf, FileRef>,
    /// The directory as of the last `sync_dir`.
    durable: BTreeMap<PathBuf, FileRef>,
    locks: BTreeSet<PathBuf>,
    faults: Faults,
    syncs: u64,
    /// The pace each segment was created with, in order.
    paces: Vec<(PathBuf, Pace)>,
    /// Files created so far, which is the newest file's id.
    files_created: u64,
    /// The files `refill_segment` zero-filled, in order.
    refilled: Vec<PathBuf>,
}

impl MemState {
    /// A new file (not yet in the directory) holding `image`, live and durable.
    fn new_file(&mut self, image: Vec<u8>) -> FileRef {
        self.files_created += 1;
        Arc::new(Mutex::new(MemFile {
            live: image.clone(),
            durable: image,
            id: self.files_created,
        }))
    }

    /// Adds file `id`, whose contents are durable, under a durable name.
    fn insert_durable(&mut self, path: &Path, image: Vec<u8>, id: u64) {
        let file = Arc::new(Mutex::new(MemFile {
            live: image.clone(),
            durable: image,
            id,
        }));
        self.live.insert(path.to_path_buf(), file.clone());
        self.durable.insert(path.to_path_buf(), file);
    }

    /// An empty directory tree like this one's, which goes on numbering files after it.
    fn successor(&self) -> MemState {
        MemState {
            dirs: self.dirs.clone(),
            files_created: self.files_created,
            ..MemState::default()
        }
    }
}

/// The in-memory backend. Clones share the same file system.
#[derive(Clone, Debug, Default)]
pub struct MemBackend {
    state: Arc<Mutex<MemState>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn os_error(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

impl MemBackend {
    /// An empty file system with one existing directory.
    pub fn with_dir(dir: &Path) -> MemBackend {
        let backend = MemBackend::default();
        lock(&backend.state).dirs.insert(dir.to_path_buf());
        backend
    }

    /// Sets the faults to inject from now on.
    pub fn set_faults(&self, faults: Faults) {
        lock(&self.state).faults = faults;
    }

    /// The segments created or reused so far, in order, with the pace each was asked for.
    pub fn segment_paces(&self) -> Vec<(PathBuf, Pace)> {
        lock(&self.state).paces.clone()
    }

    /// The files zero-filled for reuse so far, in order (`Backend::refill_segment`).
    pub fn refilled_segments(&self) -> Vec<PathBuf> {
        lock(&self.state).refilled.clone()
    }

    /// The number of successful segment syncs and directory fsyncs so far.
    pub fn sync_count(&self) -> u64 {
        lock(&self.state).syncs
    }

    /// The file system a crash right now would leave: durable names with durable contents.
    pub fn crash(&self) -> MemBackend {
        self.crash_with(|_, _| false)
    }

    /// Like `crash`, but each unsynced 512-byte sector independently reached the disk or not,
    /// chosen by a generator seeded with `seed` (torn writes in any sector order).
    pub fn crash_torn(&self, seed: u64) -> MemBackend {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        self.crash_with(move |_, _| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x & 1 == 1
        })
    }

    fn crash_with(&self, mut keep_sector: impl FnMut(&Path, usize) -> bool) -> MemBackend {
        let state = lock(&self.state);
        let mut next = state.successor();
        for (path, file) in &state.durable {
            let file = lock(file);
            let mut image = file.durable.clone();
            for (sector, chunk) in image.chunks_mut(CHUNK_BYTES).enumerate() {
                let lo = sector * CHUNK_BYTES;
                let live = file.live.get(lo..lo + chunk.len());
                if live.is_some_and(|live| live != chunk) && keep_sector(path, sector) {
                    chunk.copy_from_slice(live.expect("checked"));
                }
            }
            next.insert_durable(path, image, file.id);
        }
        MemBackend {
            state: Arc::new(Mutex::new(next)),
        }
    }

    /// The file system a clean shutdown right now would leave: every name in the directory
    /// and every file's live contents durable (what a second open of the directory, for a
    /// check, should see).
    pub fn clean_copy(&self) -> MemBackend {
        let state = lock(&self.state);
        let mut next = state.successor();
        for (path, file) in &state.live {
            let file = lock(file);
            next.insert_durable(path, file.live.clone(), file.id);
        }
        MemBackend {
            state: Arc::new(Mutex::new(next)),
        }
    }

    /// The names of the files in the directory now.
    pub fn file_names(&self) -> Vec<PathBuf> {
        lock(&self.state).live.keys().cloned().collect()
    }

    /// Which file is under `path` now (see `MemFile::id`): another number means another
    /// file, one that replaced it (a rename over it) or came after its removal.
    pub fn file_id(&self, path: &Path) -> Option<u64> {
        lock(&self.state).live.get(path).map(|file| lock(file).id)
    }

    /// A file's live contents.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        lock(&self.state)
            .live
            .get(path)
            .map(|file| lock(file).live.clone())
    }

    /// Flips one bit of a file, in both images (call it while no `Wal` has the file mapped).
    pub fn flip_bit(&self, path: &Path, bit: usize) {
        let state = lock(&self.state);
        let mut file = lock(state.live.get(path).expect("file exists"));
        file.live[bit / 8] ^= 1 << (bit % 8);
        file.durable[bit / 8] ^= 1 << (bit % 8);
    }

    /// Replaces a file's contents in both images (call it while no `Wal` has the file mapped).
    pub fn set_contents(&self, path: &Path, bytes: Vec<u8>) {
        let state = lock(&self.state);
        let mut file = lock(state.live.get(path).expect("file exists"));
        file.live = bytes.clone();
        file.durable = bytes;
    }

    fn check_writable(&self) -> io::Result<()> {
        if lock(&self.state).faults.read_only {
            return Err(os_error(libc::EROFS));
        }
        Ok(())
    }

    fn file(&self, path: &Path) -> io::Result<FileRef> {
        lock(&self.state)
            .live
            .get(path)
            .cloned()
            .ok_or_else(|| os_error(libc::ENOENT))
    }
}

/// A mapped segment: `bytes` is the process's view of the file, `file` the page cache
/// (live) and the disk (durable). Bytes written wait in `staging` until a sync, which checks
/// the rules of `SegmentMap` as the real backend's `pwrite` mode does; when they reach `bytes`
/// they also reach the page cache, as through a shared map (see `sync` and `drop`).
struct MemSegment {
    state: Arc<Mutex<MemState>>,
    file: FileRef,
    bytes: Vec<u8>,
    staging: Staging,
}

impl MemSegment {
    fn new(state: Arc<Mutex<MemState>>, file: FileRef, bytes: Vec<u8>) -> MemSegment {
        MemSegment {
            state,
            file,
            bytes,
            staging: Staging::default(),
        }
    }

    /// Moves the staged bytes (all inside `[offset, offset + len)`) into `bytes`.
    fn apply_staged(&mut self, offset: usize, len: usize) {
        let (from, staged) = self.staging.to_sync(offset, len);
        self.bytes[from..from + staged.len()].copy_from_slice(staged);
        self.staging.clear();
    }
}

impl SegmentMap for MemSegment {
    fn file_bytes(&self) -> usize {
        self.bytes.len()
    }

    fn bytes(&self) -> &[u8] {
        assert!(
            self.staging.is_empty(),
            "the whole mapped file was asked for while written bytes wait for a sync"
        );
        &self.bytes
    }

    fn write_at(&mut self, offset: usize, len: usize) -> &mut [u8] {
        assert!(
            offset + len <= self.bytes.len(),
            "a write past the end of the segment"
        );
        self.staging.write_at(offset, len)
    }

    fn read_at(&self, offset: usize) -> &[u8] {
        self.staging
            .read_at(offset)
            .unwrap_or(&self.bytes[offset..])
    }

    fn sync(&mut self, offset: usize, len: usize) -> io::Result<()> {
        if lock(&self.state).faults.fail_sync {
            return Err(os_error(libc::EIO));
        }
        self.apply_staged(offset, len);
        let mut state = lock(&self.state);
        state.syncs += 1;
        let mut file = lock(&self.file);
        file.live.copy_from_slice(&self.bytes);
        file.durable[offset..offset + len].copy_from_slice(&self.bytes[offset..offset + len]);
        Ok(())
    }

    /// Like `pwrite` then fdatasync: the bytes reach the page cache (live) now, the disk
    /// (durable) only when the wait runs; a power cut before loses or tears them. The wait
    /// makes durable exactly the range as it was at the split, nothing written later.
    fn sync_split(&mut self, offset: usize, len: usize) -> io::Result<Option<SyncWait>> {
        self.apply_staged(offset, len);
        lock(&self.file).live.copy_from_slice(&self.bytes);
        let range = self.bytes[offset..offset + len].to_vec();
        let (state, file) = (self.state.clone(), self.file.clone());
        Ok(Some(SyncWait::new(move || {
            let mut state = lock(&state);
            if state.faults.fail_sync {
                return Err(os_error(libc::EIO));
            }
            state.syncs += 1;
            lock(&file).durable[offset..offset + len].copy_from_slice(&range);
            Ok(())
        })))
    }

    fn seal(&mut self) {
        self.staging.free();
    }
}

impl Drop for MemSegment {
    fn drop(&mut self) {
        // Like munmap of a shared map: written pages stay in the page cache (live), not on
        // disk (durable). (A `pwrite`-mode process loses its staged bytes instead; keeping
        // them leaves a crash more torn bytes to get right.)
        self.apply_staged(0, self.bytes.len());
        lock(&self.file).live.copy_from_slice(&self.bytes);
    }
}

struct MemLock {
    state: Arc<Mutex<MemState>>,
    path: PathBuf,
}

impl Drop for MemLock {
    fn drop(&mut self) {
        lock(&self.state).locks.remove(&self.path);
    }
}

impl Backend for MemBackend {
    fn check_dir(&self, dir: &Path) -> io::Result<()> {
        if lock(&self.state).dirs.contains(dir) {
            Ok(())
        } else {
            Err(os_error(libc::ENOENT))
        }
    }

    fn lock(&self, lock_path: &Path) -> io::Result<Box<dyn Send>> {
        if lock(&self.state).locks.contains(lock_path) {
            return Err(io::Error::from(io::ErrorKind::WouldBlock));
        }
        self.write_synced(lock_path, format!("{}\n", std::process::id()).as_bytes())?;
        lock(&self.state).locks.insert(lock_path.to_path_buf());
        Ok(Box::new(MemLock {
            state: self.state.clone(),
            path: lock_path.to_path_buf(),
        }))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let state = lock(&self.state);
        let names = state.live.keys().filter(|path| path.parent() == Some(dir));
        Ok(names
            .filter_map(|path| Some(path.file_name()?.to_string_lossy().into_owned()))
            .collect())
    }

    fn create_segment(
        &self,
        path: &Path,
        bytes: u64,
        pace: Pace,
    ) -> io::Result<Box<dyn SegmentMap>> {
        self.check_writable()?;
        let mut state = lock(&self.state);
        // Filled or not, a new segment reads as zeros (unwritten extents do too), and its
        // contents are as durable either way: only the pace is worth recording.
        state.paces.push((path.to_path_buf(), pace));
        if state.faults.no_space {
            return Err(os_error(libc::ENOSPC));
        }
        if state.live.contains_key(path) {
            return Err(os_error(libc::EEXIST));
        }
        let zeros = vec![0u8; bytes as usize];
        let file = state.new_file(zeros.clone());
        state.live.insert(path.to_path_buf(), file.clone());
        Ok(Box::new(MemSegment::new(self.state.clone(), file, zeros)))
    }

    /// The zeros written and synced: durable in the file, whatever name it has.
    fn refill_segment(
        &self,
        path: &Path,
        bytes: u64,
        pace: Pace,
    ) -> io::Result<Box<dyn SegmentMap>> {
        self.check_writable()?;
        let file = self.file(path)?;
        let mut state = lock(&self.state);
        if state.faults.fail_sync {
            return Err(os_error(libc::EIO));
        }
        if lock(&file).live.len() as u64 != bytes {
            return Err(os_error(libc::EINVAL));
        }
        state.paces.push((path.to_path_buf(), pace));
        state.refilled.push(path.to_path_buf());
        let zeros = vec![0u8; bytes as usize];
        let mut image = lock(&file);
        image.live.clone_from(&zeros);
        image.durable.clone_from(&zeros);
        drop(image);
        Ok(Box::new(MemSegment::new(self.state.clone(), file, zeros)))
    }

    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentMap>> {
        let file = self.file(path)?;
        let bytes = lock(&file).live.clone();
        Ok(Box::new(MemSegment::new(self.state.clone(), file, bytes)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let file = self.file(path)?;
        let bytes = lock(&file).live.clone();
        Ok(bytes)
    }

    fn read_range(
        &self,
        path: &Path,
        offset: u64,
        len: usize,
        into: &mut Vec<u8>,
    ) -> io::Result<()> {
        let file = self.file(path)?;
        let file = lock(&file);
        let lo = (offset as usize).min(file.live.len());
        let hi = lo.saturating_add(len).min(file.live.len());
        into.clear();
        into.extend_from_slice(&file.live[lo..hi]);
        Ok(())
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.check_writable()?;
        let mut state = lock(&self.state);
        if state.faults.fail_sync {
            return Err(os_error(libc::EIO));
        }
        // Replacing a file whose name is already durable rewrites it in place: once
        // fsynced, its contents survive a crash without a directory fsync, as on a real file
        // system. A new name is durable only after `sync_dir`.
        let durable_name = state.live.get(path).filter(|live| {
            state
                .durable
                .get(path)
                .is_some_and(|durable| Arc::ptr_eq(live, durable))
        });
        if let Some(file) = durable_name {
            let mut file = lock(file);
            file.live = bytes.to_vec();
            file.durable = bytes.to_vec();
            return Ok(());
        }
        let file = state.new_file(bytes.to_vec());
        state.live.insert(path.to_path_buf(), file);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check_writable()?;
        let mut state = lock(&self.state);
        let file = state
            .live
            .remove(from)
            .ok_or_else(|| os_error(libc::ENOENT))?;
        state.live.insert(to.to_path_buf(), file);
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.check_writable()?;
        lock(&self.state)
            .live
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| os_error(libc::ENOENT))
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        let mut state = lock(&self.state);
        if state.faults.fail_sync {
            return Err(os_error(libc::EIO));
        }
        state.syncs += 1;
        state.durable = state.live.clone();
        Ok(())
    }

    fn file_bytes(&self, path: &Path) -> io::Result<u64> {
        let file = self.file(path)?;
        let bytes = lock(&file).live.len() as u64;
        Ok(bytes)
    }
}

/// A backend that keeps every segment prepared ahead (`Pace::Ahead`) unfinished until
/// [`HoldAhead::release`]: the wrapped backend creates its file, but the call returns only
/// once released, the way a paced zero-fill that appends outran is still under way. Cancelled
/// before that (the WAL closing), it drops the map, removes the file and fails with
/// `Interrupted`, as the real fill does. Everything else goes straight to the wrapped backend.
#[derive(Clone, Debug)]
pub struct HoldAhead {
    inner: Arc<dyn Backend>,
    gate: Arc<Gate>,
}

#[derive(Debug, Default)]
struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    released: bool,
    /// Preparations whose file was created (held or not).
    started: u64,
    /// Preparations that returned a segment.
    finished: u64,
}

impl HoldAhead {
    /// Wraps `inner`, holding preparations from now on.
    pub fn new(inner: Arc<dyn Backend>) -> HoldAhead {
        HoldAhead {
            inner,
            gate: Arc::default(),
        }
    }

    /// Lets every preparation held now or later finish.
    pub fn release(&self) {
        lock(&self.gate.state).released = true;
        self.gate.changed.notify_all();
    }

    /// Waits until `count` preparations have created their file.
    pub fn wait_started(&self, count: u64) {
        self.wait_until(|state| state.started >= count);
    }

    /// Waits until `count` preparations returned a segment.
    pub fn wait_finished(&self, count: u64) {
        self.wait_until(|state| state.finished >= count);
    }

    fn wait_until(&self, done: impl Fn(&GateState) -> bool) {
        let mut state = lock(&self.gate.state);
        while !done(&state) {
            state = self
                .gate
                .changed
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// A segment prepared ahead (`pace` is `Ahead`) is held until released, and removed if
    /// cancelled meanwhile; any other passes.
    fn held(
        &self,
        map: Box<dyn SegmentMap>,
        path: &Path,
        pace: &Pace,
    ) -> io::Result<Box<dyn SegmentMap>> {
        if !matches!(pace, Pace::Ahead(_)) || self.hold(pace) {
            return Ok(map);
        }
        drop(map);
        let _ = self.inner.remove(path);
        Err(io::Error::new(
            io::ErrorKind::Interrupted,
            "the segment prepared ahead is no longer wanted",
        ))
    }

    /// Holds one preparation until released or cancelled; true if released.
    fn hold(&self, pace: &Pace) -> bool {
        let mut state = lock(&self.gate.state);
        state.started += 1;
        self.gate.changed.notify_all();
        // The cancel flag has no condition variable of its own: look at it now and then.
        while !state.released && !pace.cancelled() {
            state = self
                .gate
                .changed
                .wait_timeout(state, std::time::Duration::from_millis(5))
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .0;
        }
        if state.released {
            state.finished += 1;
            self.gate.changed.notify_all();
        }
        state.released
    }
}

impl Backend for HoldAhead {
    fn check_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.check_dir(dir)
    }

    fn lock(&self, lock_path: &Path) -> io::Result<Box<dyn Send>> {
        self.inner.lock(lock_path)
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }

    fn create_segment(
        &self,
        path: &Path,
        bytes: u64,
        pace: Pace,
    ) -> io::Result<Box<dyn SegmentMap>> {
        let map = self.inner.create_segment(path, bytes, pace.clone())?;
        self.held(map, path, &pace)
    }

    fn refill_segment(
        &self,
        path: &Path,
        bytes: u64,
        pace: Pace,
    ) -> io::Result<Box<dyn SegmentMap>> {
        let map = self.inner.refill_segment(path, bytes, pace.clone())?;
        self.held(map, path, &pace)
    }

    fn open_segment(&self, path: &Path) -> io::Result<Box<dyn SegmentMap>> {
        self.inner.open_segment(path)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }

    fn read_range(
        &self,
        path: &Path,
        offset: u64,
        len: usize,
        into: &mut Vec<u8>,
    ) -> io::Result<()> {
        self.inner.read_range(path, offset, len, into)
    }

    fn write_synced(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_synced(path, bytes)
    }

    fn write_synced_parts(&self, path: &Path, head: &[u8], body: &[u8]) -> io::Result<()> {
        self.inner.write_synced_parts(path, head, body)
    }

    fn create_streamed<'a>(
        &'a self,
        path: &Path,
        paced: bool,
    ) -> io::Result<Box<dyn StreamedFile + 'a>> {
        self.inner.create_streamed(path, paced)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }

    fn remove_gradually(&self, path: &Path) -> io::Result<()> {
        self.inner.remove_gradually(path)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }

    fn file_bytes(&self, path: &Path) -> io::Result<u64> {
        self.inner.file_bytes(path)
    }
}

/// Called where a test, or a part of it, cannot run on this machine; `reason` says what is
/// missing and what goes untested. Under CI (the `CI` environment variable set) everything
/// must run, so this panics with the reason. Elsewhere it prints `SKIPPED: <reason>` where the
/// test report shows it, and the test goes on without that part (usually by returning).
pub fn skip(reason: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("CI is set, so this test must run in full, but it cannot: {reason}");
    }
    // Straight to the process's stderr: the test harness keeps what `eprintln!` prints in a
    // passing test to itself.
    use std::io::Write as _;
    let _ = writeln!(io::stderr(), "SKIPPED: {reason}");
}
