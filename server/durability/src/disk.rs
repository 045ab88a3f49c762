//! The file under the log writer, behind a small trait so tests can put a
//! fault-injecting disk ([`crate::fault::FaultyDisk`]) in its place.
//!
//! A [`LogFile`] has at most one flush in flight: a write of a batch at an offset
//! followed by `fdatasync`. On Linux the real file submits both to its own io_uring
//! (write linked to fdatasync) and the partition polls the completion without blocking.
//!
//! A real segment is kept [`ZERO_AHEAD_BYTES`] of zeros ahead of its last record: a
//! flush that would pass that point also writes the next stretch of zeros. Most
//! flushes then overwrite bytes inside the file, and their `fdatasync` has no file
//! size to journal (measured here: 2-4x the `sync` throughput of appending). Recovery
//! reads a zero remainder as the clean end of a segment.

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

/// A segment flushed through its own io_uring: a write linked to an fdatasync.
pub struct UringFile {
    file: File,
    path: PathBuf,
    ring: IoUring,
    /// The buffer being written, owned here until both completions arrive.
    inflight: Option<Vec<u8>>,
    /// Completions still expected for the flush in flight.
    outstanding: u32,
    /// First failure seen for the flush in flight.
    error: Option<io::Error>,
    /// [`ZERO_AHEAD_BYTES`] of zeros, written past the records when they near the end.
    zeros: Vec<u8>,
    /// The file holds zeros (or records) up to here.
    zeroed_to: u64,
    /// `zeroed_to` once the flush in flight succeeds.
    zeroing_to: u64,
}

impl std::fmt::Debug for UringFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UringFile")
            .field("path", &self.path)
            .field("outstanding", &self.outstanding)
            .finish()
    }
}

impl UringFile {
    fn new(file: File, path: &Path, worker_cpus: Option<&[usize]>) -> io::Result<UringFile> {
        let ring = IoUring::new(4)?;
        if let Some(cpus) = worker_cpus {
            // SAFETY: cpu_set_t is plain bits; all-zero is the empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            for &cpu in cpus {
                if cpu < libc::CPU_SETSIZE as usize {
                    // SAFETY: `cpu` is below CPU_SETSIZE, inside the set.
                    unsafe { libc::CPU_SET(cpu, &mut set) };
                }
            }
            // Best effort: a kernel without IOWQ_AFF keeps the inherited mask.
            let _ = ring.submitter().register_iowq_aff(&set);
        }
        Ok(UringFile {
            file,
            path: path.to_path_buf(),
            ring,
            inflight: None,
            outstanding: 0,
            error: None,
            zeros: vec![0u8; ZERO_AHEAD_BYTES],
            zeroed_to: 0,
            zeroing_to: 0,
        })
    }

    fn reap(&mut self) {
        let expected_len = self.inflight.as_ref().map_or(0, |b| b.len());
        for cqe in self.ring.completion() {
            assert!(self.outstanding > 0, "completion without a submission");
            self.outstanding -= 1;
            let result = cqe.result();
            let failed = match cqe.user_data() {
                TAG_WRITE if result >= 0 && result as usize != expected_len => {
                    Some(io::Error::new(
                        io::ErrorKind::WriteZero,
                        format!("short write ({result} of {expected_len} bytes)"),
                    ))
                }
                TAG_ZEROS if result >= 0 && result as usize != ZERO_AHEAD_BYTES => {
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
    }

    fn finish(&mut self) -> Option<Flushed> {
        if self.outstanding > 0 {
            return None;
        }
        let bytes = self.inflight.take()?;
        let result = match self.error.take() {
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
        assert!(bytes.len() <= u32::MAX as usize, "batch too large");
        let fd = types::Fd(self.file.as_raw_fd());
        let end = offset + bytes.len() as u64;
        let extend = end > self.zeroed_to;
        // Within the zeroed region the file's size and blocks stay as they are, so one
        // write with RWF_DSYNC makes the records durable (a single request to the
        // kernel's worker, and a FUA write where the device has it); when the zeros
        // are extended the file grows, so a write, the zeros and an fdatasync follow
        // each other, linked.
        let write = opcode::Write::new(fd, bytes.as_ptr(), bytes.len() as u32)
            .offset(offset)
            .rw_flags(if extend { 0 } else { libc::RWF_DSYNC })
            .build()
            // ASYNC: straight to the kernel's worker. Tried inline first, a buffered
            // write copies the whole batch into the page cache inside the partition's
            // io_uring_enter (milliseconds for an async batch of megabytes: the
            // scheduler's p99 spikes).
            .flags(if extend {
                squeue::Flags::IO_LINK | squeue::Flags::ASYNC
            } else {
                squeue::Flags::ASYNC
            })
            .user_data(TAG_WRITE);
        let sync = opcode::Fsync::new(fd)
            .flags(types::FsyncFlags::DATASYNC)
            .build()
            .user_data(TAG_SYNC);
        let zeros = extend.then(|| {
            opcode::Write::new(fd, self.zeros.as_ptr(), ZERO_AHEAD_BYTES as u32)
                .offset(end)
                .build()
                .flags(squeue::Flags::IO_LINK | squeue::Flags::ASYNC)
                .user_data(TAG_ZEROS)
        });
        if extend {
            self.zeroing_to = end + ZERO_AHEAD_BYTES as u64;
        }
        self.error = None;
        // SAFETY: the buffer is moved into `self.inflight` below and stays there (its
        // heap allocation does not move) until every completion is reaped in `finish`;
        // `self.zeros` is never resized; the fd stays open as long as `self`, which
        // waits for the ring on drop.
        let pushed = unsafe {
            let mut sq = self.ring.submission();
            sq.push(&write).is_ok()
                && zeros
                    .as_ref()
                    .is_none_or(|z| sq.push(z).is_ok() && sq.push(&sync).is_ok())
        };
        assert!(pushed, "the ring has room for one flush");
        self.inflight = Some(bytes);
        self.outstanding = if extend { 3 } else { 1 };
        if let Err(e) = self.ring.submit() {
            // Nothing was submitted: report the error as the flush's outcome.
            self.outstanding = 0;
            self.error = Some(e);
        }
    }

    fn poll(&mut self) -> Option<Flushed> {
        self.inflight.as_ref()?;
        self.reap();
        self.finish()
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
        // The kernel may still write from the buffer: wait for it before freeing.
        let _ = self.wait();
        if self.outstanding > 0 {
            // The ring could not be waited on: leak the buffer rather than free memory
            // the kernel may still read.
            std::mem::forget(self.inflight.take());
        }
    }
}
