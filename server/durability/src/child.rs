//! A snapshot encoded and written by a forked child process.
//!
//! `fork` gives the child a copy-on-write image of the whole address space in the time
//! it takes to copy the page tables (about 5 ms for 300 MB here), so the partition
//! pauses only for that, not for copying its rows (hundreds of milliseconds for a few
//! hundred MB); afterwards the kernel copies a page only when the partition writes to
//! it while the child still runs. The same trade as Redis's `BGSAVE`.
//!
//! The child is one thread (the forking one): it touches only the partition's tables,
//! which the forking partition thread owns and left between two transactions, the
//! allocator (glibc makes `malloc` safe across `fork`) and the filesystem. It never
//! prints, never returns into the parent's code (it leaves with `_exit`), closes every
//! descriptor it inherited but its report pipe (the data directory's lock, the
//! clients' sockets), dies with the partition thread (`PR_SET_PDEATHSIG`: a SIGKILLed
//! tabosd leaves no child behind to delete segments under a restarted one) and keeps
//! the signal mask of the partition thread, on which tabosd blocks the shutdown
//! signals (they go to its signalfd). It runs at nice 10 on the cores given (those of
//! the io_uring workers, off the partitions' cores). It reports through a pipe: `ok`,
//! the file's bytes and path, or `error` and why.

use crate::snapshot::write_and_prune;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Nice value of a snapshot child.
const CHILD_NICE: libc::c_int = 10;

/// A child writing one snapshot.
#[derive(Debug)]
pub struct SnapshotChild {
    pid: libc::pid_t,
    /// Read end of the report pipe (non-blocking).
    report: File,
    /// What the child said so far.
    said: Vec<u8>,
    /// The child exited and was reaped.
    reaped: bool,
}

/// Fork a child that encodes the snapshot body with `encode`, writes it with
/// [`write_and_prune`] and exits; the partition goes on at once. In the child the
/// process runs on `cpus` (empty: wherever the partition thread may run). An error
/// means no child exists: the caller writes the snapshot another way.
///
/// Call only from the thread that owns the state `encode` reads, between two
/// transactions: the child sees the memory as it is at the fork.
pub fn spawn<F: FnOnce(&mut Vec<u8>)>(
    dir: &Path,
    partition: u32,
    lsn: u64,
    cpus: &[usize],
    encode: F,
) -> io::Result<SnapshotChild> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 succeeded, so both are open descriptors that nothing else owns.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the child runs only `child_main`, which leaves with `_exit` and touches
    // nothing another thread of the parent could have left half-changed (see the
    // module comment); the parent goes on as after any fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        drop(read_end);
        child_main(
            parent,
            File::from(write_end),
            dir,
            partition,
            lsn,
            cpus,
            encode,
        );
    }
    drop(write_end);
    let report = File::from(read_end);
    set_nonblocking(&report)?;
    Ok(SnapshotChild {
        pid,
        report,
        said: Vec::new(),
        reaped: false,
    })
}

fn set_nonblocking(file: &File) -> io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on an open descriptor with flag arguments only.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The child's whole life: never returns.
fn child_main<F: FnOnce(&mut Vec<u8>)>(
    parent: libc::pid_t,
    mut report: File,
    dir: &Path,
    partition: u32,
    lsn: u64,
    cpus: &[usize],
    encode: F,
) -> ! {
    // SAFETY: prctl with integer arguments; getppid has no preconditions.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(3); // the parent died before the death signal was armed
        }
    }
    // Hold none of the parent's descriptors: not the data directory's lock (released
    // the moment tabosd dies, not when this child does), not the clients' sockets
    // (they see tabosd's death at once), not the rings. Only the report pipe stays.
    let keep = report.as_raw_fd() as libc::c_uint;
    // SAFETY: closing descriptors this process never uses again; best effort (an old
    // kernel without close_range leaves them open until the child exits).
    unsafe {
        if keep > 3 {
            libc::close_range(3, keep - 1, 0);
        }
        libc::close_range(keep + 1, libc::c_uint::MAX, 0);
    }
    if !cpus.is_empty() {
        let set = crate::disk::cpu_set(cpus);
        // SAFETY: `set` outlives the call; pid 0 is this (single-threaded) process.
        // Best effort: a child left on the partition's core is slower, not wrong.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    }
    // Yield to the threads that serve calls (a tenth of a nice-0 thread's share when
    // they compete) yet still finish on a busy machine.
    // SAFETY: setpriority with integer arguments; who 0 is this process.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, CHILD_NICE) };
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut body = Vec::new();
        encode(&mut body);
        write_and_prune(dir, partition, lsn, &body)
    }));
    let (code, text) = match outcome {
        Ok(Ok((path, bytes))) => (0, format!("ok\n{bytes}\n{}", path.display())),
        Ok(Err(e)) => (1, format!("error\n{e}")),
        Err(_) => (2, "error\nthe snapshot encoder panicked".to_string()),
    };
    let _ = report.write_all(text.as_bytes());
    // SAFETY: _exit ends this process at once, running no destructors or atexit
    // handlers that belong to the parent's state.
    unsafe { libc::_exit(code) }
}

impl SnapshotChild {
    /// The child's outcome once it exited: the snapshot's path and bytes written;
    /// `None` while it runs. Never blocks.
    pub fn poll(&mut self) -> Option<io::Result<(PathBuf, u64)>> {
        if self.reaped {
            return None;
        }
        self.read_report();
        let mut status = 0;
        // SAFETY: waitpid on our own child, with a valid status pointer.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if r == 0 {
            return None;
        }
        self.reaped = true;
        if r < 0 {
            return Some(Err(io::Error::other(format!(
                "waiting for snapshot child {}: {}",
                self.pid,
                io::Error::last_os_error()
            ))));
        }
        self.read_report(); // what it wrote just before it exited
        Some(self.outcome(status))
    }

    /// Block until the child exited and return its outcome (shutdown).
    pub fn wait(&mut self) -> io::Result<(PathBuf, u64)> {
        loop {
            if let Some(outcome) = self.poll() {
                return outcome;
            }
            if self.reaped {
                return Err(io::Error::other("snapshot child already reaped"));
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    fn read_report(&mut self) {
        let mut buf = [0u8; 512];
        loop {
            match self.report.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => self.said.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return, // WouldBlock: nothing more yet
            }
        }
    }

    fn outcome(&self, status: libc::c_int) -> io::Result<(PathBuf, u64)> {
        let said = String::from_utf8_lossy(&self.said);
        let mut lines = said.splitn(3, '\n');
        let first = lines.next().unwrap_or("");
        if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 && first == "ok" {
            let bytes = lines.next().and_then(|b| b.parse::<u64>().ok());
            let path = lines.next().map(PathBuf::from);
            if let (Some(bytes), Some(path)) = (bytes, path) {
                return Ok((path, bytes));
            }
        }
        let why = match first {
            "error" => said.split_once('\n').map_or("", |(_, why)| why).to_string(),
            _ if libc::WIFSIGNALED(status) => {
                format!("snapshot child killed by signal {}", libc::WTERMSIG(status))
            }
            _ => format!(
                "snapshot child exited with status {} saying {said:?}",
                libc::WEXITSTATUS(status)
            ),
        };
        Err(io::Error::other(why))
    }
}

impl Drop for SnapshotChild {
    fn drop(&mut self) {
        // Never leave a zombie: wait for the child (it finishes its file).
        if !self.reaped {
            let _ = self.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_writes_the_snapshot_it_encodes_from_the_state_at_the_fork() {
        let dir = tempfile::tempdir().unwrap();
        let mut state = b"state at the fork".to_vec();
        let mut child = spawn(dir.path(), 4, 99, &[], |out| out.extend_from_slice(&state)).unwrap();
        // The parent changes the very memory the child encodes from: the child's copy
        // keeps what it held at the fork (a thread sharing it could see either).
        state.clear();
        state.extend_from_slice(b"changed after the fork");
        let (path, bytes) = child.wait().unwrap();
        let snap = crate::snapshot::read(&path).unwrap();
        assert_eq!((snap.partition, snap.lsn), (4, 99));
        assert_eq!(snap.body, b"state at the fork");
        assert_eq!(bytes, std::fs::metadata(&path).unwrap().len());
        assert!(child.poll().is_none(), "reaped once");
    }

    #[test]
    fn a_failing_or_panicking_child_reports_why() {
        let missing = Path::new("/nonexistent-tabos-dir/p0");
        let mut child = spawn(missing, 0, 1, &[], |out| out.push(1)).unwrap();
        let err = child.wait().unwrap_err().to_string();
        assert!(err.contains("No such file"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let mut child = spawn(dir.path(), 0, 1, &[], |_| panic!("boom")).unwrap();
        let err = child.wait().unwrap_err().to_string();
        assert!(err.contains("panicked"), "{err}");
        assert!(
            !dir.path().join(format!("snap-{:020}.snap", 1)).exists(),
            "nothing written"
        );
    }
}
