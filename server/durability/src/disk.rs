//! The file under the log writer, behind a small trait so tests can put a
//! fault-injecting disk ([`crate::fault::FaultyDisk`]) in its place.
//!
//! A [`LogFile`] has at most one flush in flight: a write of a batch at an offset
//! followed by `fdatasync`. On Linux the real file ([`UringFile`]) submits both to its
//! own io_uring (records written with direct I/O, fdatasync linked after) and the
//! partition polls the completion without blocking, or blocks on it when it has
//! nothing else to do ([`LogFile::wait_ready`]).
//!
//! A real segment is kept [`ZERO_AHEAD_BYTES`] of zeros ahead of its last record,
//! written in the background before the records reach them. Flushes then overwrite
//! blocks inside the file, and their `fdatasync` has no file size to journal
//! (measured here: 2-4x the `sync` throughput of appending). Recovery reads a zero
//! remainder as the clean end of a segment.

use io_uring::{opcode, squeue, types, IoUring};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Zeros kept written ahead of a segment's last record.
pub const ZERO_AHEAD_BYTES: usize = 4 << 20;

/// A finished flush: the buffer comes back for reuse, with the outcome.
pub type Flushed = (Vec<u8>, io::Result<()>);

/// One log segment being appended to.
pub trait LogFile: Send {
    /// Start writing `bytes` at `offset`, then make them durable (fdatasync). Only one
    /// flush may be in flight (asserted by callers).
    fn start(&mut self, offset: u64, bytes: Vec<u8>);
    /// The flush in flight if it has finished; never blocks.
    fn poll(&mut self) -> Option<Flushed>;
    /// Block until the flush in flight finishes; `None` if none is.
    fn wait(&mut self) -> Option<Flushed>;
    /// Block until the flush in flight may have finished, at most `timeout`, without
    /// reaping it (a following `poll` does). Files that complete at once return now.
    fn wait_ready(&mut self, _timeout: std::time::Duration) {}
}

/// Where segments are created.
pub trait LogDir: Send {
    /// Create (truncating) the segment at `path` and make its directory entry durable.
    fn create(&mut self, path: &Path) -> io::Result<Box<dyn LogFile>>;
}

/// The real directory: segments are files, flushed through io_uring when the kernel
/// allows it and with `pwrite` + `fdatasync` otherwise.
#[derive(Debug, Default)]
pub struct RealDir {
    /// Set after io_uring failed once, so the fallback is announced once.
    no_uring: bool,
    /// CPUs the kernel's io_uring workers (which perform the write and the
    /// `fdatasync`) may run on; `None`: wherever the kernel puts them.
    worker_cpus: Option<Vec<usize>>,
}

impl RealDir {
    pub fn new() -> RealDir {
        RealDir::default()
    }

    /// Run the io_uring workers of this directory's segments on `cpus` only.
    ///
    /// A worker inherits the CPU mask of the thread that submits, so the flushes of a
    /// partition pinned to one core would otherwise queue on that core behind the
    /// partition's own (spinning) thread: on two vCPUs that made each group commit
    /// wait for a scheduler time slice (milliseconds) instead of the disk (~0.2 ms).
    pub fn with_worker_cpus(cpus: Vec<usize>) -> RealDir {
        RealDir {
            no_uring: false,
            worker_cpus: (!cpus.is_empty()).then_some(cpus),
        }
    }
}

/// Read a whole log segment or snapshot. Segments are written past the page cache,
/// so recovery reads them from the disk: ask the kernel to read the file ahead in
/// full and sequentially first (log replay of 250 000 1 KiB rows: 4.2 -> 2.7-3.5 s
/// per GiB, `tabos-bench durability`).
pub fn read_whole(path: &Path) -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    // SAFETY: plain advice on an open descriptor; failure only loses the hint.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED);
    }
    let mut bytes = Vec::with_capacity(len as usize);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The CPU set holding `cpus` (those beyond `CPU_SETSIZE` are left out).
pub(crate) fn cpu_set(cpus: &[usize]) -> libc::cpu_set_t {
    // SAFETY: a zeroed cpu_set_t is an empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
        // SAFETY: `set` is a valid cpu_set_t and `cpu` is in range.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    set
}

/// `fsync` a directory so entries created or renamed in it survive a power loss.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl LogDir for RealDir {
    fn create(&mut self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .read(true)
            .open(path)?;
        file.sync_all()?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        if !self.no_uring {
            match UringFile::new(file.try_clone()?, path, self.worker_cpus.as_deref()) {
                Ok(f) => return Ok(Box::new(f)),
                Err(e) => {
                    eprintln!(
                        "tabosd: io_uring unavailable for the command log ({e}); using pwrite and fdatasync"
                    );
                    self.no_uring = true;
                }
            }
        }
        Ok(Box::new(SyncFile {
            file,
            done: None,
            zeroed_to: 0,
        }))
    }
}

/// A segment flushed with blocking `pwrite` + `fdatasync` (the fallback).
#[derive(Debug)]
pub struct SyncFile {
    file: File,
    done: Option<Flushed>,
    /// The file holds zeros (or records) up to here.
    zeroed_to: u64,
}

impl LogFile for SyncFile {
    fn start(&mut self, offset: u64, bytes: Vec<u8>) {
        assert!(self.done.is_none(), "one flush in flight at a time");
        let end = offset + bytes.len() as u64;
        let mut result = self.file.write_all_at(&bytes, offset);
        if result.is_ok() && end > self.zeroed_to {
            result = self.file.write_all_at(&vec![0u8; ZERO_AHEAD_BYTES], end);
        }
        result = result.and_then(|()| self.file.sync_data());
        if result.is_ok() {
            self.zeroed_to = self.zeroed_to.max(end + ZERO_AHEAD_BYTES as u64);
        }
        self.done = Some((bytes, result));
    }

    fn poll(&mut self) -> Option<Flushed> {
        self.done.take()
    }

    fn wait(&mut self) -> Option<Flushed> {
        self.done.take()
    }
}

const TAG_WRITE: u64 = 1;
const TAG_SYNC: u64 = 2;
const TAG_ZEROS: u64 = 3;
/// The zeros written ahead in the background, and their sync.
const TAG_AHEAD_ZEROS: u64 = 4;
const TAG_AHEAD_SYNC: u64 = 5;

/// Offsets, lengths and buffer addresses of direct I/O are multiples of this.
pub const DIRECT_BLOCK: usize = 4096;

/// A zeroed heap buffer aligned for direct I/O whose contents survive growing.
struct AlignedBuf {
    ptr: std::ptr::NonNull<u8>,
    cap: usize,
}

// SAFETY: the buffer is plain memory owned by one AlignedBuf, never shared.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    fn layout(cap: usize) -> std::alloc::Layout {
        std::alloc::Layout::from_size_align(cap, DIRECT_BLOCK).expect("a valid layout")
    }

    fn new(cap: usize) -> AlignedBuf {
        let cap = cap.max(DIRECT_BLOCK).next_multiple_of(DIRECT_BLOCK);
        // SAFETY: the layout has a non-zero size.
        let raw = unsafe { std::alloc::alloc_zeroed(Self::layout(cap)) };
        let ptr = std::ptr::NonNull::new(raw)
            .unwrap_or_else(|| std::alloc::handle_alloc_error(Self::layout(cap)));
        AlignedBuf { ptr, cap }
    }

    /// Room for at least `need` bytes, keeping the first `keep`.
    fn reserve(&mut self, need: usize, keep: usize) {
        if need <= self.cap {
            return;
        }
        let mut bigger = AlignedBuf::new(need.max(2 * self.cap));
        bigger.bytes_mut()[..keep].copy_from_slice(&self.bytes()[..keep]);
        *self = bigger;
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` owns `cap` initialized (zeroed at first) bytes.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.cap) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and `&mut self` makes the access unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.cap) }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.cap)) }
    }
}

/// Open `path` for direct I/O, if its filesystem takes [`DIRECT_BLOCK`]-aligned
/// direct writes (probed with one block of zeros at offset 0 of the new, empty file).
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()?;
    let probe = AlignedBuf::new(DIRECT_BLOCK);
    file.write_all_at(&probe.bytes()[..DIRECT_BLOCK], 0).ok()?;
    Some(file)
}

/// A segment flushed through its own io_uring.
///
/// Records go to the disk with direct I/O when the filesystem allows it: the batch is
/// copied into an aligned buffer behind the partial block the previous flush ended
/// in (rewritten with the same bytes, so a torn write of it cannot damage records
/// that were durable), padded with zeros to a whole block, written from the
/// partition thread without the page cache (the write itself needs no worker
/// thread, and no CPU copies it into page-cache pages), then made durable by a
/// linked `fdatasync`. Where direct I/O is refused, the same blocks are written
/// through the page cache with `RWF_DSYNC`.
///
/// Records always overwrite blocks inside the file, so their sync has no file size
/// to journal: a stretch of zeros is written (and synced) ahead of them, in the
/// background while flushes go on, once less than half of it is left. A flush that
/// would pass the zeros waits for the stretch in flight (`IOSQE_IO_DRAIN`) or, when
/// none is, writes its own first (linked before its records).
pub struct UringFile {
    /// Buffered: the zeros ahead, `fdatasync`, and the records when `direct` is None.
    file: File,
    direct: Option<File>,
    path: PathBuf,
    ring: IoUring,
    inflight: Option<Vec<u8>>,
    /// Entries of the flush in flight not yet completed.
    outstanding: u32,
    error: Option<io::Error>,
    /// Source of zero writes (aligned, for direct I/O too); never written to.
    zeros: AlignedBuf,
    /// The file holds synced zeros (or records) up to here.
    zeroed_to: u64,
    /// Zeros the flush in flight writes before its records (linked), up to here, and
    /// how many bytes of them.
    zeroing_to: u64,
    zeroing_len: u64,
    /// Zeros written ahead in the background: `(up to, entries not yet completed,
    /// bytes written)`.
    ahead: Option<(u64, u32, u64)>,
    /// A failed background zero write: fails the next flush.
    ahead_error: Option<io::Error>,
    /// The blocks of the flush in flight (or of the last one): its first block starts
    /// with the partial block the flush before ended in.
    stage: AlignedBuf,
    /// Bytes of records in `stage` (the rest up to the block boundary are zeros).
    staged: usize,
    /// File offset of `stage`'s first byte.
    stage_at: u64,
    /// Bytes the write in flight must report.
    write_len: usize,
    /// CPUs for the io_uring workers of the thread that flushes, applied at its first
    /// flush (workers belong to the submitting thread, which may not be the creator).
    worker_cpus: Option<Vec<usize>>,
}

impl std::fmt::Debug for UringFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringFile")
            .field("path", &self.path)
            .field("direct", &self.direct.is_some())
            .field("outstanding", &self.outstanding)
            .finish()
    }
}

impl UringFile {
    fn new(file: File, path: &Path, worker_cpus: Option<&[usize]>) -> io::Result<UringFile> {
        // Completions of direct writes run as task work on the partition thread: let
        // it run them when it polls (the kernel raises a flag) rather than be
        // interrupted for them.
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .build(8)
            .or_else(|_| IoUring::new(8))?;
        let direct = open_direct(path);
        Ok(UringFile {
            file,
            direct,
            path: path.to_path_buf(),
            ring,
            inflight: None,
            outstanding: 0,
            error: None,
            zeros: AlignedBuf::new(ZERO_AHEAD_BYTES),
            zeroed_to: 0,
            zeroing_to: 0,
            zeroing_len: 0,
            ahead: None,
            ahead_error: None,
            stage: AlignedBuf::new(64 << 10),
            staged: 0,
            stage_at: 0,
            write_len: 0,
            worker_cpus: worker_cpus.map(<[usize]>::to_vec),
        })
    }

    /// Keep this thread's io_uring workers on `worker_cpus` (off the partition cores).
    fn place_workers(&mut self) {
        let Some(cpus) = self.worker_cpus.take() else {
            return;
        };
        let set = cpu_set(&cpus);
        // Best effort: workers that may run anywhere are still correct.
        if let Err(e) = self.ring.submitter().register_iowq_aff(&set) {
            eprintln!("tabosd: could not keep the log's io_uring workers on cpus {cpus:?}: {e}");
        }
    }

    /// Put the partial block the last flush ended in, then `bytes`, into `stage`,
    /// which starts at the block that holds `offset`. Returns the bytes to write.
    fn stage(&mut self, offset: u64, bytes: &[u8]) -> usize {
        let block = DIRECT_BLOCK as u64;
        let at = offset - offset % block;
        let head = (offset - at) as usize;
        if head > 0 {
            // The previous flush ended at `offset`, inside the block at `at`: move
            // that block's records to the front.
            assert_eq!(
                self.stage_at + self.staged as u64,
                offset,
                "flushes follow each other without a gap"
            );
            let from = (at - self.stage_at) as usize;
            self.stage.bytes_mut().copy_within(from..from + head, 0);
        }
        let staged = head + bytes.len();
        let len = staged.next_multiple_of(DIRECT_BLOCK);
        self.stage.reserve(len, head);
        let buf = self.stage.bytes_mut();
        buf[head..staged].copy_from_slice(bytes);
        buf[staged..len].fill(0);
        self.stage_at = at;
        self.staged = staged;
        len
    }

    fn reap(&mut self) -> usize {
        let mut reaped = 0;
        for cqe in self.ring.completion() {
            reaped += 1;
            let result = cqe.result();
            let tag = cqe.user_data();
            if matches!(tag, TAG_AHEAD_ZEROS | TAG_AHEAD_SYNC) {
                let (to, left, len) = self.ahead.as_mut().expect("zeros ahead in flight");
                *left -= 1;
                let failed = if result < 0 {
                    Some(io::Error::from_raw_os_error(-result))
                } else if tag == TAG_AHEAD_ZEROS && result as u64 != *len {
                    Some(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write of zeros ({result} of {len} bytes)"),
                    ))
                } else {
                    None
                };
                if let Some(e) = failed {
                    self.ahead_error.get_or_insert(e);
                }
                if *left == 0 {
                    let to = *to;
                    self.ahead = None;
                    if self.ahead_error.is_none() {
                        self.zeroed_to = self.zeroed_to.max(to);
                    }
                }
                continue;
            }
            assert!(self.outstanding > 0, "completion without a submission");
            self.outstanding -= 1;
            let failed = match tag {
                TAG_WRITE if result >= 0 && result as usize != self.write_len => {
                    Some(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write ({result} of {} bytes)", self.write_len),
                    ))
                }
                TAG_ZEROS if result >= 0 && (result as u64) != self.zeroing_len => {
                    Some(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write of zeros ({result} bytes)"),
                    ))
                }
                TAG_WRITE | TAG_SYNC | TAG_ZEROS if result < 0 => {
                    Some(io::Error::from_raw_os_error(-result))
                }
                _ => None,
            };
            if let Some(e) = failed {
                self.error.get_or_insert(e);
            }
        }
        reaped
    }

    /// A write of zeros `[from, to)`: direct when records are, else through the page
    /// cache (an extending direct write runs on an io_uring worker).
    fn zero_write(&mut self, from: u64, to: u64, tag: u64) -> squeue::Entry {
        let len = (to - from) as usize;
        if self.zeros.cap < len {
            self.zeros = AlignedBuf::new(len);
        }
        let fd = self.direct.as_ref().unwrap_or(&self.file).as_raw_fd();
        opcode::Write::new(types::Fd(fd), self.zeros.bytes().as_ptr(), len as u32)
            .offset(from)
            .build()
            .flags(squeue::Flags::IO_LINK | squeue::Flags::ASYNC)
            .user_data(tag)
    }

    fn finish(&mut self) -> Option<Flushed> {
        if self.outstanding > 0 {
            return None;
        }
        let bytes = self.inflight.take()?;
        let result = match self.error.take().or_else(|| self.ahead_error.take()) {
            Some(e) => Err(io::Error::new(
                e.kind(),
                format!("{}: {e}", self.path.display()),
            )),
            None => {
                self.zeroed_to = self.zeroed_to.max(self.zeroing_to);
                Ok(())
            }
        };
        Some((bytes, result))
    }
}

impl LogFile for UringFile {
    fn start(&mut self, offset: u64, bytes: Vec<u8>) {
        assert!(self.inflight.is_none(), "one flush in flight at a time");
        self.place_workers();
        let len = self.stage(offset, &bytes);
        assert!(len <= u32::MAX as usize, "batch too large");
        self.write_len = len;
        let end = self.stage_at + len as u64;
        let mut entries = Vec::with_capacity(6);
        let ahead_to = self.ahead.map_or(self.zeroed_to, |a| a.0);
        // Past the zeros in flight: write more first, linked before the records.
        let extend = end > ahead_to;
        if extend {
            self.zeroing_to = end + ZERO_AHEAD_BYTES as u64;
            self.zeroing_len = self.zeroing_to - ahead_to;
            entries.push(self.zero_write(ahead_to, self.zeroing_to, TAG_ZEROS));
            entries.push(
                opcode::Fsync::new(types::Fd(self.file.as_raw_fd()))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .flags(squeue::Flags::IO_LINK)
                    .user_data(TAG_SYNC),
            );
        } else {
            self.zeroing_to = self.zeroed_to;
        }
        let stage = self.stage.bytes().as_ptr();
        match &self.direct {
            Some(direct) => {
                // Issued from this thread without blocking; the sync goes to a worker.
                entries.push(
                    opcode::Write::new(types::Fd(direct.as_raw_fd()), stage, len as u32)
                        .offset(self.stage_at)
                        .build()
                        .flags(squeue::Flags::IO_LINK)
                        .user_data(TAG_WRITE),
                );
                entries.push(
                    opcode::Fsync::new(types::Fd(self.file.as_raw_fd()))
                        .flags(types::FsyncFlags::DATASYNC)
                        .build()
                        .user_data(TAG_SYNC),
                );
            }
            None => entries.push(
                // A buffered write blocks: straight to the io_uring worker.
                opcode::Write::new(types::Fd(self.file.as_raw_fd()), stage, len as u32)
                    .offset(self.stage_at)
                    .rw_flags(libc::RWF_DSYNC)
                    .build()
                    .flags(squeue::Flags::ASYNC)
                    .user_data(TAG_WRITE),
            ),
        }
        if end > self.zeroed_to && self.ahead.is_some() {
            // The records (or the zeros linked before them) land in or after zeros
            // still in flight: start once those are synced.
            entries[0] = entries[0].clone().flags(squeue::Flags::IO_DRAIN);
        }
        let data_entries = entries.len() as u32;
        if self.ahead.is_none() && !extend && self.zeroed_to - end < ZERO_AHEAD_BYTES as u64 / 2 {
            // Less than half the zeros left: write the next stretch in the background.
            let (from, to) = (self.zeroed_to, self.zeroed_to + ZERO_AHEAD_BYTES as u64);
            entries.push(self.zero_write(from, to, TAG_AHEAD_ZEROS));
            entries.push(
                opcode::Fsync::new(types::Fd(self.file.as_raw_fd()))
                    .flags(types::FsyncFlags::DATASYNC)
                    .build()
                    .user_data(TAG_AHEAD_SYNC),
            );
            self.ahead = Some((to, 2, to - from));
        }
        self.error = None;
        // SAFETY: the buffers (`stage`, `zeros`) stay alive and unchanged until every
        // entry completed: no new flush starts before, the zeros are never written,
        // and Drop waits.
        let pushed = unsafe { self.ring.submission().push_multiple(&entries).is_ok() };
        assert!(
            pushed,
            "the ring has room for one flush and the zeros ahead"
        );
        self.inflight = Some(bytes);
        self.outstanding = data_entries;
        if let Err(e) = self.ring.submit() {
            self.outstanding = 0;
            self.ahead = None;
            self.error = Some(e);
        }
    }

    fn poll(&mut self) -> Option<Flushed> {
        self.inflight.as_ref()?;
        if self.reap() == 0 && self.outstanding > 0 && self.ring.submission().taskrun() {
            // Completions wait as task work for this thread: enter the kernel to run it.
            if let Err(e) = self.ring.submit() {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.error.get_or_insert(e);
                }
            }
            self.reap();
        }
        self.finish()
    }

    fn wait_ready(&mut self, timeout: std::time::Duration) {
        if self.inflight.is_none() || self.outstanding == 0 {
            return;
        }
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        // A timeout or a signal ends the wait early; failures show in the completions.
        let _ = self
            .ring
            .submitter()
            .submit_with_args(self.outstanding as usize, &args);
    }

    fn wait(&mut self) -> Option<Flushed> {
        self.inflight.as_ref()?;
        while self.outstanding > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                if e.kind() != io::ErrorKind::Interrupted {
                    self.error.get_or_insert(e);
                    break;
                }
            }
            self.reap();
        }
        self.finish()
    }
}

impl Drop for UringFile {
    fn drop(&mut self) {
        // The kernel may still write from the buffers: wait for it before freeing.
        let _ = self.wait();
        while self.ahead.is_some() && self.outstanding == 0 {
            if self.ring.submit_and_wait(1).is_err() {
                break;
            }
            self.reap();
        }
        if self.outstanding > 0 || self.ahead.is_some() {
            // The ring could not be waited on: leak the buffers rather than free memory
            // the kernel may still read.
            std::mem::forget(self.inflight.take());
            std::mem::forget(std::mem::replace(&mut self.stage, AlignedBuf::new(0)));
            std::mem::forget(std::mem::replace(&mut self.zeros, AlignedBuf::new(0)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Flush batches of random sizes (some larger than the zeros ahead) one after the
    /// other; the file must hold exactly their bytes, then zeros.
    fn flushes_land_in_order(direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log-1.log");
        let mut disk = RealDir::new();
        let mut file = disk.create(&path).unwrap();
        if !direct {
            // The buffered path, as on filesystems that refuse direct I/O.
            let f = File::options().write(true).read(true).open(&path).unwrap();
            let mut uring = UringFile::new(f, &path, None).unwrap();
            uring.direct = None;
            file = Box::new(uring);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut expected = Vec::new();
        for i in 0..60u32 {
            let len = match i % 20 {
                7 => ZERO_AHEAD_BYTES + 12_345,
                13 => 0,
                _ => rng.gen_range(1..20_000),
            };
            let bytes: Vec<u8> = (0..len).map(|_| rng.gen_range(1..=255)).collect();
            file.start(expected.len() as u64, bytes.clone());
            let (back, result) = loop {
                if let Some(done) = file.poll() {
                    break done;
                }
            };
            result.unwrap();
            assert_eq!(back, bytes, "the batch comes back");
            expected.extend_from_slice(&bytes);
        }
        drop(file);
        let on_disk = std::fs::read(&path).unwrap();
        assert!(on_disk.len() >= expected.len().next_multiple_of(DIRECT_BLOCK));
        assert!(
            on_disk[..expected.len()] == expected[..],
            "records in order"
        );
        assert!(
            on_disk[expected.len()..].iter().all(|&b| b == 0),
            "then zeros"
        );
    }

    #[test]
    fn direct_flushes_land_in_order() {
        flushes_land_in_order(true);
    }

    #[test]
    fn buffered_flushes_land_in_order() {
        flushes_land_in_order(false);
    }
}
