//! A partition's durability: its command-log writer, its snapshots, and the rule that
//! decides when a reply may leave.
//!
//! Every reply depends on the last LSN assigned when it was written: a write on its
//! own record, a read or a failed call on the writes it may have observed. In `sync`
//! mode a port publishes only up to the first reply whose LSN is not yet durable
//! ([`Port::hold`](crate::port::Port::hold)); in `async` and `off` nothing waits.

use crate::config::Durability;
use std::io;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tabos_durability::child::{self, SnapshotChild};
use tabos_durability::{snapshot, FlushPolicy, LogWriter, RealDir};
use tabos_engine::Caller;
use tabos_procs::builtin::SnapshotReply;
use tabos_procs::PartitionDb;
use tabos_transport::wire::Header;

/// A snapshot being written off the partition thread, and who waits for it.
#[derive(Debug)]
struct SnapshotJob {
    reply: SnapshotReply,
    started: Instant,
    writer: SnapshotWriter,
    waiters: Vec<(u64, Header)>,
}

/// Who writes a snapshot file.
#[derive(Debug)]
enum SnapshotWriter {
    /// A forked child encodes the rows from its copy-on-write image (the usual way).
    Child(SnapshotChild),
    /// A thread writes an image the partition encoded itself (when fork failed);
    /// `None` once joined.
    Thread(Option<JoinHandle<io::Result<(PathBuf, u64)>>>),
}

impl SnapshotWriter {
    /// The outcome once the file is written (or failed); never blocks.
    fn poll(&mut self) -> Option<Result<(PathBuf, u64), String>> {
        match self {
            SnapshotWriter::Child(child) => child.poll().map(|r| r.map_err(|e| e.to_string())),
            SnapshotWriter::Thread(slot) => {
                if !slot.as_ref()?.is_finished() {
                    return None;
                }
                Some(match slot.take()?.join() {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(_) => Err("the snapshot thread panicked".to_string()),
                })
            }
        }
    }
}

/// A finished snapshot: its outcome and the admin requests to answer.
#[derive(Debug)]
pub struct SnapshotDone {
    pub result: Result<SnapshotReply, String>,
    pub waiters: Vec<(u64, Header)>,
}

/// The durability state of one partition. Owned by the partition thread.
#[derive(Debug)]
pub struct Durable {
    mode: Durability,
    writer: Option<LogWriter>,
    dir: PathBuf,
    partition: u32,
    snapshot_every_bytes: u64,
    /// `writer.flushed_bytes` when the last snapshot was taken.
    flushed_at_snapshot: u64,
    job: Option<SnapshotJob>,
    /// The failure was announced (log line, held replies answered).
    failure_announced: bool,
    /// Records appended (statistics).
    pub records: u64,
    /// Longest snapshot pause so far.
    pub snapshot_pause_max: Duration,
    /// CPUs a snapshot's writer runs on (off the partition cores; empty: anywhere the
    /// partition may run).
    helper_cpus: Vec<usize>,
}

impl Durable {
    /// Nothing is logged (`--durability off`).
    pub fn off(partition: u32) -> Durable {
        Durable {
            mode: Durability::Off,
            writer: None,
            dir: PathBuf::new(),
            partition,
            snapshot_every_bytes: 0,
            flushed_at_snapshot: 0,
            job: None,
            failure_announced: false,
            records: 0,
            snapshot_pause_max: Duration::ZERO,
            helper_cpus: Vec::new(),
        }
    }

    /// Log into partition directory `dir` with `policy` (`None`: `--durability off`,
    /// nothing logged), continuing after `last_lsn` (what recovery restored).
    pub fn open(
        dir: &Path,
        partition: u32,
        policy: Option<FlushPolicy>,
        snapshot_every_bytes: u64,
        last_lsn: u64,
        io_worker_cpus: Vec<usize>,
    ) -> io::Result<Durable> {
        let Some(policy) = policy else {
            return Ok(Durable::off(partition));
        };
        let mode = match policy {
            FlushPolicy::Sync(_) => Durability::Sync,
            FlushPolicy::Async(_) => Durability::Async,
        };
        // Test-only hook: fail every log flush after the first N (fail-stop tests).
        let disk: Box<dyn tabos_durability::LogDir> =
            match std::env::var("TABOS_FAULT_LOG_FAIL_AFTER").map(|v| v.parse::<u64>()) {
                Ok(Ok(n)) => Box::new(tabos_durability::FailAfter::new(n)),
                _ => Box::new(RealDir::with_worker_cpus(io_worker_cpus.clone())),
            };
        let writer = LogWriter::open(dir, disk, policy, last_lsn)?;
        Ok(Durable {
            mode,
            writer: Some(writer),
            dir: dir.to_path_buf(),
            partition,
            snapshot_every_bytes,
            helper_cpus: io_worker_cpus,
            ..Durable::off(partition)
        })
    }

    /// Why the partition refuses calls (fail-stop after a log write or fsync error).
    pub fn failed(&self) -> Option<&str> {
        self.writer.as_ref()?.failed().map(|f| f.0.as_str())
    }

    /// Log a committed invocation that changed the state. The caller checked
    /// [`failed`](Self::failed) before running it, and nothing fails a writer between.
    pub fn log(&mut self, proc_id: u32, caller: &Caller, args: &[u8]) {
        let Some(writer) = self.writer.as_mut() else {
            return;
        };
        let appended = writer.append(proc_id, caller.uid, caller.pid, caller.user.as_str(), args);
        assert!(
            appended.is_ok(),
            "a failed writer is checked before every invocation"
        );
        self.records += 1;
    }

    /// The LSN a reply written now depends on. After a failure replies are refusals
    /// that depend on nothing.
    pub fn reply_lsn(&self) -> u64 {
        match &self.writer {
            Some(w) if w.failed().is_none() => w.last_lsn(),
            _ => 0,
        }
    }

    /// `(last LSN assigned, last LSN on disk, when the last flush finished in ms since
    /// the Unix epoch)`, all 0 when nothing is logged: the `sys_log` table.
    pub fn log_position(&self) -> (u64, u64, u64) {
        let Some(w) = &self.writer else {
            return (0, 0, 0);
        };
        let flushed_ms = w.last_flush.map_or(0, |t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        });
        (w.last_lsn(), w.durable_lsn(), flushed_ms)
    }

    /// What the log did since start, for the shutdown line: records, flushes, bytes
    /// and the mean flush time; `None` when nothing is logged.
    pub fn summary(&self) -> Option<String> {
        let w = self.writer.as_ref()?;
        let mean_us = w.flush_time.as_secs_f64() * 1e6 / w.flush_count.max(1) as f64;
        Some(format!(
            "log: {} records in {} flushes ({:.1} records and {:.0} KiB each, {:.0} us each on average)",
            self.records,
            w.flush_count,
            self.records as f64 / w.flush_count.max(1) as f64,
            w.flushed_bytes as f64 / 1024.0 / w.flush_count.max(1) as f64,
            mean_us
        ))
    }

    /// Whether a snapshot file is being written.
    pub fn snapshot_running(&self) -> bool {
        self.job.is_some()
    }

    /// Replies depending on LSNs up to this may leave.
    pub fn released_lsn(&self) -> u64 {
        match (&self.writer, self.mode) {
            (Some(w), Durability::Sync) => w.durable_lsn(),
            _ => u64::MAX,
        }
    }

    /// Reap a finished flush and start the next; never blocks. `busy` tells whether
    /// calls are queued that the partition can run now (a `sync` flush may then wait
    /// to gather more); it is asked only when the answer matters. Returns whether
    /// anything moved.
    pub fn poll(&mut self, busy: impl FnOnce() -> bool) -> bool {
        self.writer.as_mut().is_some_and(|w| w.poll(busy))
    }

    /// Whether the loop must come back soon without being woken: a flush is in
    /// flight or records wait for one. Returns how soon.
    pub fn wants_poll_in(&self) -> Option<Duration> {
        let writer = self.writer.as_ref()?;
        if writer.failed().is_some() || !writer.busy() {
            return None;
        }
        Some(match self.mode {
            Durability::Sync => Duration::from_micros(50),
            _ => Duration::from_millis(1),
        })
    }

    /// `sync` mode with a flush in flight: replies wait for it.
    pub fn waits_on_flush(&self) -> bool {
        self.mode == Durability::Sync
            && self
                .writer
                .as_ref()
                .is_some_and(|w| w.flushing() && w.failed().is_none())
    }

    /// Block until the flush in flight may have finished, at most `timeout`.
    pub fn wait_flush(&mut self, timeout: Duration) {
        if let Some(w) = self.writer.as_mut() {
            w.wait_ready(timeout);
        }
    }

    /// Make everything logged so far durable before going on (replicated writes in
    /// `sync` mode, shutdown, snapshots). An error leaves the writer failed.
    pub fn flush_blocking(&mut self) -> Result<(), String> {
        match self.writer.as_mut() {
            Some(w) => w.flush_blocking().map_err(|f| f.0),
            None => Ok(()),
        }
    }

    /// `sync` mode: replicated writes are flushed before they are acknowledged.
    pub fn is_sync(&self) -> bool {
        self.mode == Durability::Sync
    }

    /// Whether the failure still has to be announced; true once.
    pub fn take_failure_announcement(&mut self) -> Option<String> {
        if self.failure_announced {
            return None;
        }
        let why = self.failed()?.to_string();
        self.failure_announced = true;
        Some(why)
    }

    /// Whether enough log was written since the last snapshot to take one.
    pub fn snapshot_due(&self) -> bool {
        let Some(writer) = &self.writer else {
            return false;
        };
        self.job.is_none()
            && self.snapshot_every_bytes > 0
            && writer.failed().is_none()
            && writer.flushed_bytes - self.flushed_at_snapshot >= self.snapshot_every_bytes
    }

    /// Snapshot `db` now: flush the log, start a new segment and fork a child that
    /// encodes and writes the rows from its copy-on-write image (flush and fork are the
    /// pause; if fork fails, the partition encodes the rows itself and a thread writes
    /// them). `waiter`, if given, is answered when the file is durable. With
    /// durability off, answers at once (nothing written).
    pub fn snapshot(
        &mut self,
        db: &PartitionDb,
        waiter: Option<(u64, Header)>,
    ) -> Option<SnapshotDone> {
        let off_reply = SnapshotReply {
            partition: self.partition,
            ..SnapshotReply::default()
        };
        let Some(writer) = self.writer.as_mut() else {
            return Some(SnapshotDone {
                result: Ok(off_reply),
                waiters: waiter.into_iter().collect(),
            });
        };
        if let Some(job) = &mut self.job {
            job.waiters.extend(waiter);
            return None;
        }
        let paused = Instant::now();
        if let Err(f) = writer.flush_blocking() {
            return Some(SnapshotDone {
                result: Err(f.0),
                waiters: waiter.into_iter().collect(),
            });
        }
        let lsn = writer.last_lsn();
        if let Err(f) = writer.rotate() {
            return Some(SnapshotDone {
                result: Err(f.0),
                waiters: waiter.into_iter().collect(),
            });
        }
        let (dir, partition) = (self.dir.clone(), self.partition);
        let spawned = child::spawn(&dir, partition, lsn, &self.helper_cpus, |out| {
            db.write_image(out)
        });
        let writer_job = match spawned {
            Ok(child) => SnapshotWriter::Child(child),
            Err(e) => {
                eprintln!(
                    "tabosd: p{partition}: cannot fork a snapshot writer ({e}); encoding the snapshot on the partition thread (a longer pause)"
                );
                let mut image = Vec::new();
                db.write_image(&mut image);
                let thread = std::thread::Builder::new()
                    .name(format!("snapshot-p{partition}"))
                    .spawn(move || snapshot::write_and_prune(&dir, partition, lsn, &image));
                match thread {
                    Ok(handle) => SnapshotWriter::Thread(Some(handle)),
                    Err(e) => {
                        return Some(SnapshotDone {
                            result: Err(format!("cannot start a snapshot writer: {e}")),
                            waiters: waiter.into_iter().collect(),
                        })
                    }
                }
            }
        };
        let pause = paused.elapsed();
        self.snapshot_pause_max = self.snapshot_pause_max.max(pause);
        self.flushed_at_snapshot = writer.flushed_bytes;
        self.job = Some(SnapshotJob {
            reply: SnapshotReply {
                partition,
                written: true,
                lsn,
                file_bytes: 0,
                pause_us: pause.as_micros() as u64,
                write_us: 0,
            },
            started: Instant::now(),
            writer: writer_job,
            waiters: waiter.into_iter().collect(),
        });
        None
    }

    /// The snapshot being written, once it finished.
    pub fn poll_snapshot(&mut self) -> Option<SnapshotDone> {
        let outcome = self.job.as_mut()?.writer.poll()?;
        let job = self.job.take()?;
        let write_us = job.started.elapsed().as_micros() as u64;
        let result = match outcome {
            Ok((path, bytes)) => {
                eprintln!(
                    "tabosd: p{}: snapshot at lsn {} written to {} ({bytes} bytes, pause {} us, write {write_us} us)",
                    self.partition,
                    job.reply.lsn,
                    path.display(),
                    job.reply.pause_us
                );
                Ok(SnapshotReply {
                    file_bytes: bytes,
                    write_us,
                    ..job.reply
                })
            }
            Err(e) => Err(format!("snapshot of p{} failed: {e}", self.partition)),
        };
        if let Err(e) = &result {
            eprintln!("tabosd: {e}; the log is kept, so nothing is lost");
        }
        Some(SnapshotDone {
            result,
            waiters: job.waiters,
        })
    }

    /// Wait for a snapshot being written (shutdown).
    pub fn finish_snapshot(&mut self) -> Option<SnapshotDone> {
        self.job.as_ref()?;
        loop {
            if let Some(done) = self.poll_snapshot() {
                return Some(done);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
