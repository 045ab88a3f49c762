//! The command-log writer of one partition: assigns LSNs, gathers records into a batch,
//! and flushes batches with group commit.
//!
//! In `sync` mode a batch is flushed as soon as no flush is in flight, so a batch holds
//! every record that arrived during the previous flush (group commit, pipelined: the
//! partition keeps executing while a flush is in flight). While the partition has
//! calls queued that it can run (its caller says so to [`LogWriter::poll`]), the batch
//! keeps gathering for up to [`GroupCommit::max_delay`] or
//! [`GroupCommit::max_bytes`]: each flush costs the partition's core a fixed amount
//! (the I/O submission, the device's doorbell, the completion interrupt), and under
//! load the calls wait in the queue anyway, so larger batches buy throughput without
//! lengthening the wait (PostgreSQL's `commit_delay` and MySQL's
//! `binlog_group_commit_sync_delay` trade the same way). An idle partition flushes at
//! once. In `async` mode a batch is flushed once it is `flush_every` old. After a
//! failed flush the writer is failed for good (fail-stop): it accepts no more records
//! and says why.

use crate::disk::{LogDir, LogFile};
use crate::layout::segment_path;
use crate::record::{self, Record};
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// When a batch is flushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushPolicy {
    /// As soon as the previous flush finished, or later while calls queue (replies
    /// wait for it).
    Sync(GroupCommit),
    /// At least this often (replies do not wait).
    Async(Duration),
}

impl FlushPolicy {
    /// `sync` that flushes as soon as the previous flush finished, whatever queues.
    pub const SYNC_EAGER: FlushPolicy = FlushPolicy::Sync(GroupCommit {
        max_delay: Duration::ZERO,
        max_bytes: 0,
    });
}

/// How long a `sync` batch may keep gathering records while the partition has calls
/// queued (a busy partition). An idle partition flushes as soon as no flush is in
/// flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommit {
    /// Longest the first record of a batch waits for its flush to start.
    pub max_delay: Duration,
    /// A batch of this many bytes is flushed at once.
    pub max_bytes: usize,
}

impl GroupCommit {
    /// Largest batch a busy partition gathers by default.
    pub const MAX_BYTES: usize = 1 << 20;
}

/// Why a writer refuses records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failed(pub String);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Largest batch buffer kept for reuse.
const SPARE_BYTES_MAX: usize = 16 << 20;

/// A flush in flight.
#[derive(Debug)]
struct Inflight {
    last_lsn: u64,
    len: u64,
    started: Instant,
}

/// The writer of one partition's log segments.
pub struct LogWriter {
    dir: PathBuf,
    disk: Box<dyn LogDir>,
    policy: FlushPolicy,
    file: Box<dyn LogFile>,
    segment: PathBuf,
    /// Where the next flush writes in the current segment.
    file_offset: u64,
    /// Records not yet handed to the disk.
    batch: Vec<u8>,
    /// Since when the batch holds records (async policy).
    batch_since: Option<Instant>,
    inflight: Option<Inflight>,
    spare: Vec<u8>,
    /// LSN of the last record appended (0: none yet).
    last_lsn: u64,
    /// Every record up to this LSN is on disk.
    durable_lsn: u64,
    failed: Option<Failed>,
    /// Flushes finished and bytes made durable (statistics).
    pub flush_count: u64,
    pub flushed_bytes: u64,
    /// When the last flush finished (the `sys_log` table).
    pub last_flush: Option<std::time::SystemTime>,
    /// Time flushes were in flight, all together (statistics).
    pub flush_time: std::time::Duration,
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("segment", &self.segment)
            .field("last_lsn", &self.last_lsn)
            .field("durable_lsn", &self.durable_lsn)
            .field("failed", &self.failed)
            .finish()
    }
}

impl LogWriter {
    /// A writer whose next record gets LSN `durable_lsn + 1`, in a new segment of
    /// partition directory `dir` named after that LSN.
    pub fn open(
        dir: &Path,
        mut disk: Box<dyn LogDir>,
        policy: FlushPolicy,
        durable_lsn: u64,
    ) -> io::Result<LogWriter> {
        let segment = segment_path(dir, durable_lsn + 1);
        let file = disk.create(&segment)?;
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            disk,
            policy,
            file,
            segment,
            file_offset: 0,
            batch: Vec::new(),
            batch_since: None,
            inflight: None,
            spare: Vec::new(),
            last_lsn: durable_lsn,
            durable_lsn,
            failed: None,
            flush_count: 0,
            flushed_bytes: 0,
            last_flush: None,
            flush_time: std::time::Duration::ZERO,
        })
    }

    /// LSN of the last record appended.
    pub fn last_lsn(&self) -> u64 {
        self.last_lsn
    }

    /// Every record up to this LSN is durable.
    pub fn durable_lsn(&self) -> u64 {
        self.durable_lsn
    }

    /// Why the writer refuses records, once a flush failed.
    pub fn failed(&self) -> Option<&Failed> {
        self.failed.as_ref()
    }

    /// Whether a flush is in flight.
    pub fn flushing(&self) -> bool {
        self.inflight.is_some()
    }

    /// Block until the flush in flight may have finished, at most `timeout` (the next
    /// [`poll`](Self::poll) reaps it).
    pub fn wait_ready(&mut self, timeout: Duration) {
        if self.inflight.is_some() {
            self.file.wait_ready(timeout);
        }
    }

    /// Whether a flush is in flight or records wait for one.
    pub fn busy(&self) -> bool {
        self.inflight.is_some() || !self.batch.is_empty()
    }

    /// The segment being written.
    pub fn segment(&self) -> &Path {
        &self.segment
    }

    /// Append an invocation and return its LSN. Refused once the writer failed.
    pub fn append(
        &mut self,
        proc_id: u32,
        uid: u32,
        pid: u32,
        user: &str,
        args: &[u8],
    ) -> Result<u64, Failed> {
        if let Some(f) = &self.failed {
            return Err(f.clone());
        }
        let lsn = self.last_lsn + 1;
        record::encode(
            &Record {
                lsn,
                proc_id,
                uid,
                pid,
                user,
                args,
            },
            &mut self.batch,
        );
        self.batch_since.get_or_insert_with(Instant::now);
        self.last_lsn = lsn;
        assert!(self.durable_lsn < self.last_lsn);
        Ok(lsn)
    }

    /// Reap a finished flush and start the next one when the policy says so; never
    /// blocks. `busy` tells whether the caller has calls queued that it can run now (in
    /// `sync` mode the batch may then keep gathering, see [`GroupCommit`]); it is asked
    /// only when the answer decides, i.e. a flush could start, the batch is below its
    /// byte limit and younger than the group delay. Returns whether anything changed
    /// (the durable LSN moved or a flush began).
    pub fn poll(&mut self, busy: impl FnOnce() -> bool) -> bool {
        let mut progressed = false;
        if self.inflight.is_some() {
            match self.file.poll() {
                Some(done) => {
                    self.complete(done);
                    progressed = true;
                }
                None => return false,
            }
        }
        if self.batch.is_empty() || self.failed.is_some() {
            return progressed;
        }
        let due = match self.policy {
            FlushPolicy::Sync(group) => {
                self.batch.len() >= group.max_bytes
                    || self
                        .batch_since
                        .is_some_and(|t| t.elapsed() >= group.max_delay)
                    || !busy()
            }
            FlushPolicy::Async(every) => self.batch_since.is_some_and(|t| t.elapsed() >= every),
        };
        if due && self.start_flush() {
            progressed = true;
        }
        progressed
    }

    /// Flush everything appended so far and wait until it is durable (or failed).
    pub fn flush_blocking(&mut self) -> Result<(), Failed> {
        loop {
            if let Some(done) = self.file.wait() {
                self.complete(done);
            }
            if let Some(f) = &self.failed {
                return Err(f.clone());
            }
            if !self.start_flush() {
                break;
            }
        }
        assert!(self.inflight.is_none());
        assert_eq!(self.durable_lsn, self.last_lsn, "everything flushed");
        Ok(())
    }

    /// Start a new segment for the records after `last_lsn` (call after
    /// [`flush_blocking`](Self::flush_blocking), e.g. when a snapshot at `last_lsn` is
    /// taken, so older segments can be deleted once the snapshot is durable).
    pub fn rotate(&mut self) -> Result<(), Failed> {
        assert!(!self.busy(), "rotate after flushing");
        if let Some(f) = &self.failed {
            return Err(f.clone());
        }
        if self.file_offset == 0 {
            return Ok(()); // the current segment is empty and already starts here
        }
        let segment = segment_path(&self.dir, self.last_lsn + 1);
        match self.disk.create(&segment) {
            Ok(file) => {
                self.file = file;
                self.segment = segment;
                self.file_offset = 0;
                Ok(())
            }
            Err(e) => Err(self.fail(format!("create {}: {e}", segment.display()))),
        }
    }

    fn fail(&mut self, why: String) -> Failed {
        let f = Failed(why);
        self.failed.get_or_insert(f.clone());
        f
    }

    fn start_flush(&mut self) -> bool {
        if self.inflight.is_some() || self.batch.is_empty() || self.failed.is_some() {
            return false;
        }
        let mut bytes = std::mem::take(&mut self.spare);
        std::mem::swap(&mut bytes, &mut self.batch);
        let len = bytes.len() as u64;
        self.inflight = Some(Inflight {
            last_lsn: self.last_lsn,
            len,
            started: Instant::now(),
        });
        self.batch_since = None;
        self.file.start(self.file_offset, bytes);
        true
    }

    fn complete(&mut self, (mut bytes, result): (Vec<u8>, io::Result<()>)) {
        let inflight = self.inflight.take().expect("a flush was in flight");
        match result {
            Ok(()) => {
                assert!(
                    inflight.last_lsn > self.durable_lsn,
                    "durable LSN only rises"
                );
                self.durable_lsn = inflight.last_lsn;
                self.last_flush = Some(std::time::SystemTime::now());
                self.flush_time += inflight.started.elapsed();
                self.file_offset += inflight.len;
                self.flush_count += 1;
                self.flushed_bytes += inflight.len;
            }
            Err(e) => {
                self.fail(format!(
                    "log write or fdatasync of {} failed: {e}",
                    self.segment.display()
                ));
            }
        }
        if bytes.capacity() <= SPARE_BYTES_MAX {
            bytes.clear();
            self.spare = bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::FaultyDisk;

    fn writer(policy: FlushPolicy) -> (tempfile::TempDir, LogWriter) {
        let dir = tempfile::tempdir().unwrap();
        let w = LogWriter::open(dir.path(), Box::new(FaultyDisk::new()), policy, 0).unwrap();
        (dir, w)
    }

    fn group(max_delay: Duration, max_bytes: usize) -> FlushPolicy {
        FlushPolicy::Sync(GroupCommit {
            max_delay,
            max_bytes,
        })
    }

    #[test]
    fn an_idle_partition_flushes_at_once_whatever_the_group_delay() {
        let (_dir, mut w) = writer(group(Duration::from_secs(3600), usize::MAX));
        w.append(1, 0, 0, "root", b"a").unwrap();
        assert!(w.poll(|| false), "the flush starts");
        assert!(w.flushing());
        assert!(w.poll(|| false), "and is reaped");
        assert_eq!(w.durable_lsn(), 1);
    }

    #[test]
    fn a_busy_partition_gathers_until_the_batch_is_large_enough() {
        let (_dir, mut w) = writer(group(Duration::from_secs(3600), 200));
        let mut appended = 0;
        while w.batch.len() < 200 {
            w.append(1, 0, 0, "root", b"0123456789").unwrap();
            appended += 1;
            if w.batch.len() < 200 {
                assert!(!w.poll(|| true), "no flush while busy and small");
                assert!(!w.flushing());
                assert_eq!(w.durable_lsn(), 0);
            }
        }
        assert!(appended > 1);
        assert!(w.poll(|| true), "a full batch flushes although busy");
        assert!(w.poll(|| true));
        assert_eq!(w.durable_lsn(), appended);
    }

    #[test]
    fn a_busy_partition_flushes_once_the_first_record_waited_long_enough() {
        let delay = Duration::from_millis(2);
        let (_dir, mut w) = writer(group(delay, usize::MAX));
        w.append(1, 0, 0, "root", b"a").unwrap();
        let appended = Instant::now();
        let mut polls = 0u64;
        while !w.flushing() {
            w.poll(|| true);
            polls += 1;
        }
        assert!(
            appended.elapsed() >= delay,
            "flushed after {:?}, before the delay",
            appended.elapsed()
        );
        assert!(polls > 1);
        w.poll(|| true);
        assert_eq!(w.durable_lsn(), 1);
    }

    /// A `busy` that must not be asked.
    fn not_asked() -> bool {
        panic!("busy was asked although it decides nothing")
    }

    #[test]
    fn eager_sync_flushes_even_when_busy() {
        let (_dir, mut w) = writer(FlushPolicy::SYNC_EAGER);
        w.append(1, 0, 0, "root", b"a").unwrap();
        assert!(w.poll(not_asked), "no group delay: flushed without asking");
        assert!(w.flushing());
    }

    #[test]
    fn busy_is_asked_only_when_a_flush_could_wait() {
        let (_dir, mut w) = writer(group(Duration::from_secs(3600), usize::MAX));
        assert!(!w.poll(not_asked), "no records");
        w.append(1, 0, 0, "root", b"a").unwrap();
        let mut asked = false;
        assert!(w.poll(|| {
            asked = true;
            false
        }));
        assert!(asked, "a waiting batch asks");
        w.append(1, 0, 0, "root", b"b").unwrap();
        assert!(w.flushing());
        // The first flush completes on this poll; the second waits for `busy`.
        assert!(w.poll(|| true), "reaped");
        assert!(!w.flushing(), "busy: the second batch gathers");
        let (_dir, mut w) = writer(FlushPolicy::Async(Duration::from_secs(3600)));
        w.append(1, 0, 0, "root", b"a").unwrap();
        assert!(!w.poll(not_asked), "async never asks");
    }
}
