//! Wake-ups after a bounded spin.
//!
//! Both sides spin while busy; a side that found nothing for a while announces that it
//! is going to sleep (a flag in shared memory), re-checks, and sleeps:
//! - a partition sleeps on its [`EventFd`]; producers that see its flag write to it;
//! - a client sleeps on a futex word in its own segment; partitions that see its flag
//!   bump the word and wake it.
//!
//! Announce-then-recheck with sequentially consistent fences on both sides means a wake
//! is never lost: either the sleeper sees the new frame, or the producer sees the flag.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// Spin iterations before a waiter goes to sleep. About 50-100 µs on current cores:
/// well above the cost of a sleep and a cross-core wake (~50 µs here).
pub const SPIN_LIMIT: u32 = 20_000;

fn timespec(timeout: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: timeout.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    }
}

/// Sleep while `*word == expected`, at most `timeout`. Works across processes (the
/// word may live in a shared mapping). Spurious returns are possible.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call; FUTEX_WAIT
    // only reads it. The timespec outlives the call. Errors (EAGAIN, EINTR, ETIMEDOUT)
    // all mean "go and look again", which every caller does.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
        );
    }
}

/// Wake every waiter on `word`.
pub fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32; FUTEX_WAKE does not access the memory.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

/// `poll(2)` over `fds`, waiting at most `timeout_ms` (-1: no limit). Returns the
/// number of ready descriptors; an interrupted wait counts as zero.
pub fn poll_fds(fds: &mut [libc::pollfd], timeout_ms: i32) -> io::Result<usize> {
    // SAFETY: `fds` is a valid, exclusively borrowed array for the duration of the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(n as usize)
}

/// Whether the peer of a connected socket has closed it (or it failed): peeks without
/// blocking, so data waiting to be read counts as open.
pub fn socket_closed(fd: std::os::fd::BorrowedFd<'_>) -> bool {
    let mut byte = 0u8;
    // SAFETY: peeks at most one byte into a valid buffer; MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n == 0 || (n < 0 && io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock)
}

/// A pollfd that waits for input (and hang-ups) on `fd`.
pub fn pollfd_in(fd: std::os::fd::RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    }
}

/// A counter-style eventfd: the doorbell of one partition.
#[derive(Debug)]
pub struct EventFd {
    fd: OwnedFd,
}

impl EventFd {
    /// A new non-blocking eventfd.
    pub fn new() -> io::Result<EventFd> {
        // SAFETY: plain syscall; a non-negative result is a fresh fd we now own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a valid descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(EventFd { fd })
    }

    /// Wrap an eventfd received from a server.
    pub fn from_owned(fd: OwnedFd) -> EventFd {
        EventFd { fd }
    }

    /// Ring the doorbell.
    pub fn notify(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our fd. A full counter (EAGAIN)
        // means a wake is already pending, which is all we want.
        unsafe {
            libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8);
        }
    }

    /// Reset the counter after a wake.
    pub fn drain(&self) {
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our fd; EAGAIN means already zero.
        unsafe {
            libc::read(self.fd.as_raw_fd(), (&mut value as *mut u64).cast(), 8);
        }
    }

    /// Block until notified or `timeout` passes (`None`: no limit), then reset.
    pub fn wait(&self, timeout: Option<Duration>) {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128).max(1) as i32);
        // SAFETY: one valid pollfd for the duration of the call.
        unsafe {
            libc::poll(&mut pfd, 1, ms);
        }
        self.drain();
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn eventfd_wakes_a_waiter() {
        let efd = Arc::new(EventFd::new().unwrap());
        let e2 = efd.clone();
        let t = std::thread::spawn(move || e2.wait(Some(Duration::from_secs(30))));
        std::thread::sleep(Duration::from_millis(20));
        efd.notify();
        t.join().unwrap();
    }

    #[test]
    fn futex_wait_returns_when_value_differs_or_woken() {
        let word = Arc::new(AtomicU32::new(5));
        futex_wait(&word, 4, None); // value differs: returns at once
        let w2 = word.clone();
        let t = std::thread::spawn(move || {
            while w2.load(Ordering::Acquire) == 5 {
                futex_wait(&w2, 5, Some(Duration::from_secs(30)));
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        word.store(6, Ordering::Release);
        futex_wake(&word);
        t.join().unwrap();
    }
}
