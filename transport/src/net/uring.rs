//! The io_uring stream server: multishot accept, multishot receive into a ring of
//! provided buffers, and sends, all through one ring. Under load the completion queue
//! is polled; when idle the thread sleeps in `io_uring_enter` until a completion (a
//! packet, or a write to the wake eventfd) arrives.

use super::server::{conn_slot, ConnId, Io, StreamHandler};
use crate::doorbell::EventFd;
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

/// Settings of the driver.
#[derive(Clone, Copy, Debug)]
pub struct UringOptions {
    /// Submission queue entries.
    pub sq_entries: u32,
    /// Provided receive buffers (a power of two, at most 32768).
    pub recv_buffers: u16,
    /// Bytes of each receive buffer.
    pub recv_buffer_bytes: u32,
    /// How long to poll an idle ring before sleeping.
    pub spin: Duration,
    /// Largest unsent backlog per connection.
    pub out_bytes_max: usize,
}

impl Default for UringOptions {
    fn default() -> Self {
        UringOptions {
            sq_entries: 1024,
            recv_buffers: 512,
            recv_buffer_bytes: 64 * 1024,
            spin: Duration::from_micros(100),
            out_bytes_max: 64 << 20,
        }
    }
}

const KIND_ACCEPT: u64 = 1;
const KIND_RECV: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_WAKE: u64 = 4;
const KIND_STOP: u64 = 5;
const KIND_TIMER: u64 = 6;
const BUFFER_GROUP: u16 = 7;

fn user_data(kind: u64, conn: ConnId) -> u64 {
    debug_assert!(conn < (1 << 56));
    (kind << 56) | conn
}

fn split_user_data(data: u64) -> (u64, ConnId) {
    (data >> 56, data & ((1 << 56) - 1))
}

/// Check that io_uring and provided-buffer rings work here (a sysctl or a seccomp
/// filter may forbid them).
pub fn probe() -> io::Result<()> {
    let ring = IoUring::new(8)?;
    let mut bufs = BufRing::new(8, 4096);
    bufs.register(&ring)?;
    ring.submitter().unregister_buf_ring(BUFFER_GROUP)?;
    Ok(())
}

/// A ring of provided receive buffers shared with the kernel.
struct BufRing {
    entries_ptr: *mut u8,
    entries_layout: std::alloc::Layout,
    bufs: Vec<u8>,
    count: u16,
    buf_bytes: u32,
    tail: u16,
}

/// One `struct io_uring_buf`: the kernel's view of a provided buffer.
#[repr(C)]
struct RawBuf {
    addr: u64,
    len: u32,
    bid: u16,
    resv: u16,
}
const _: () = assert!(std::mem::size_of::<RawBuf>() == 16);

impl BufRing {
    fn new(count: u16, buf_bytes: u32) -> BufRing {
        assert!(
            count.is_power_of_two() && count <= 32768,
            "buffer count must be a power of two"
        );
        let layout =
            std::alloc::Layout::from_size_align(16 * count as usize, 4096).expect("layout");
        // SAFETY: non-zero size.
        let entries_ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!entries_ptr.is_null(), "out of memory");
        let mut ring = BufRing {
            entries_ptr,
            entries_layout: layout,
            bufs: vec![0u8; count as usize * buf_bytes as usize],
            count,
            buf_bytes,
            tail: 0,
        };
        for bid in 0..count {
            ring.write_entry(bid);
        }
        ring.publish_tail();
        ring
    }

    /// Offer buffer `bid` to the kernel at the current tail (not yet published).
    fn write_entry(&mut self, bid: u16) {
        assert!(bid < self.count);
        let index = (self.tail & (self.count - 1)) as usize;
        let addr = self.bufs.as_ptr() as u64 + u64::from(bid) * u64::from(self.buf_bytes);
        // SAFETY: `index < count`, so the entry lies inside the allocation; we write
        // the addr/len/bid fields only (not `resv`, which in entry 0 is the kernel-read
        // tail). The kernel reads entries only up to the published tail.
        unsafe {
            let entry = self.entries_ptr.add(index * 16).cast::<RawBuf>();
            std::ptr::addr_of_mut!((*entry).addr).write(addr);
            std::ptr::addr_of_mut!((*entry).len).write(self.buf_bytes);
            std::ptr::addr_of_mut!((*entry).bid).write(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish_tail(&self) {
        // SAFETY: the tail is the u16 at byte 14 of entry 0 (io_uring_buf_ring's
        // layout), inside the allocation and 2-byte aligned; the kernel reads it.
        let tail = unsafe { AtomicU16::from_ptr(self.entries_ptr.add(14).cast()) };
        tail.store(self.tail, Ordering::Release);
    }

    /// Give buffer `bid` back to the kernel.
    fn recycle(&mut self, bid: u16) {
        self.write_entry(bid);
        self.publish_tail();
    }

    fn data(&self, bid: u16, len: usize) -> &[u8] {
        let start = bid as usize * self.buf_bytes as usize;
        &self.bufs[start..start + len.min(self.buf_bytes as usize)]
    }

    fn register(&mut self, ring: &IoUring) -> io::Result<()> {
        // SAFETY: the entries stay allocated (and the buffers they point to) until
        // `self` drops, which the driver arranges to happen after the ring is gone.
        unsafe {
            ring.submitter().register_buf_ring_with_flags(
                self.entries_ptr as u64,
                self.count,
                BUFFER_GROUP,
                0,
            )
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.entries_ptr, self.entries_layout) }
    }
}

/// Per-connection state the kernel may be using.
#[derive(Default)]
struct InFlight {
    recv: bool,
    send: bool,
    /// Bytes being sent (owned here until the send completes).
    sending: Vec<u8>,
    sent: usize,
}

struct Driver<'a, H: StreamHandler> {
    // Field order matters for drop: the ring (and its kernel state) goes first.
    ring: IoUring,
    bufs: BufRing,
    io: Io,
    inflight: Vec<InFlight>,
    handler: &'a mut H,
    listener: &'a TcpListener,
    wake: &'a EventFd,
    stop: &'a EventFd,
    wake_buf: Box<u64>,
    stop_buf: Box<u64>,
    stopping: bool,
    accept_armed: bool,
    timer: Box<types::Timespec>,
    timer_armed: bool,
}

/// Serve `listener` with `handler` until `stop` is written.
pub fn run<H: StreamHandler>(
    listener: &TcpListener,
    wake: &EventFd,
    stop: &EventFd,
    handler: &mut H,
    options: UringOptions,
) -> io::Result<()> {
    let ring = IoUring::builder()
        .setup_single_issuer()
        .build(options.sq_entries)?;
    let mut bufs = BufRing::new(options.recv_buffers, options.recv_buffer_bytes);
    bufs.register(&ring)?;
    let mut driver = Driver {
        ring,
        bufs,
        io: Io::new(options.out_bytes_max),
        inflight: Vec::new(),
        handler,
        listener,
        wake,
        stop,
        wake_buf: Box::new(0),
        stop_buf: Box::new(0),
        stopping: false,
        accept_armed: false,
        timer: Box::new(types::Timespec::new()),
        timer_armed: false,
    };
    driver.arm_accept()?;
    driver.arm_read(KIND_WAKE)?;
    driver.arm_read(KIND_STOP)?;
    driver.serve(options.spin)
}

impl<H: StreamHandler> Driver<'_, H> {
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        loop {
            // SAFETY: every entry we build points at memory that outlives its
            // operation: the listener, eventfd buffers (boxed in the driver), the
            // provided buffers (kernel-selected), and `InFlight::sending`, which is not
            // touched until its send completes.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return Ok(());
            }
            self.ring.submit()?;
        }
    }

    fn arm_accept(&mut self) -> io::Result<()> {
        let entry = opcode::AcceptMulti::new(types::Fd(self.listener.as_raw_fd()))
            .build()
            .user_data(user_data(KIND_ACCEPT, 0));
        self.accept_armed = true;
        self.push(entry)
    }

    fn arm_read(&mut self, kind: u64) -> io::Result<()> {
        let (fd, buf) = match kind {
            KIND_WAKE => (
                self.wake.as_fd().as_raw_fd(),
                &mut *self.wake_buf as *mut u64,
            ),
            _ => (
                self.stop.as_fd().as_raw_fd(),
                &mut *self.stop_buf as *mut u64,
            ),
        };
        let entry = opcode::Read::new(types::Fd(fd), buf.cast(), 8)
            .build()
            .user_data(user_data(kind, 0));
        self.push(entry)
    }

    /// A timeout completion after `limit`, so a sleep ends in time (one at a time).
    fn arm_timer(&mut self, limit: Duration) -> io::Result<()> {
        if self.timer_armed {
            return Ok(());
        }
        *self.timer = types::Timespec::new()
            .sec(limit.as_secs())
            .nsec(limit.subsec_nanos());
        let entry = opcode::Timeout::new(&*self.timer as *const types::Timespec)
            .build()
            .user_data(user_data(KIND_TIMER, 0));
        self.timer_armed = true;
        self.push(entry)
    }

    fn arm_recv(&mut self, conn: ConnId) -> io::Result<()> {
        let Some(c) = self.io.get(conn) else {
            return Ok(());
        };
        let fd = c.stream.as_raw_fd();
        self.inflight[conn_slot(conn) as usize].recv = true;
        let entry = opcode::RecvMulti::new(types::Fd(fd), BUFFER_GROUP)
            .build()
            .user_data(user_data(KIND_RECV, conn));
        self.push(entry)
    }

    fn start_send(&mut self, conn: ConnId) -> io::Result<()> {
        let slot = conn_slot(conn) as usize;
        let Some(c) = self.io.get_mut(conn) else {
            return Ok(());
        };
        let state = &mut self.inflight[slot];
        if state.send {
            return Ok(());
        }
        if state.sent >= state.sending.len() {
            state.sending.clear();
            state.sent = 0;
            std::mem::swap(&mut state.sending, &mut c.out);
        }
        if state.sending.is_empty() {
            return Ok(());
        }
        let fd = c.stream.as_raw_fd();
        let rest = &state.sending[state.sent..];
        let entry = opcode::Send::new(
            types::Fd(fd),
            rest.as_ptr(),
            rest.len().min(u32::MAX as usize) as u32,
        )
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(user_data(KIND_SEND, conn));
        state.send = true;
        self.push(entry)
    }

    fn serve(&mut self, spin: Duration) -> io::Result<()> {
        let mut idle_since: Option<Instant> = None;
        loop {
            self.ring.submit()?;
            let mut work = self.reap()?;
            work += self.handler.tick(&mut self.io);
            let pending: Vec<ConnId> = self.io.pending_sends().collect();
            for conn in pending {
                self.start_send(conn)?;
            }
            self.finish_closed();
            if self.stopping {
                return self.drain();
            }
            if work > 0 {
                idle_since = None;
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= spin {
                if self.handler.before_sleep() {
                    if let Some(limit) = self.handler.sleep_limit() {
                        self.arm_timer(limit)?;
                    }
                    self.ring.submit_and_wait(1)?;
                }
                self.handler.after_wake();
                idle_since = None;
            } else {
                // The network thread is not pinned: let a partition or client that
                // shares this core run while we poll.
                std::thread::yield_now();
            }
        }
    }

    /// Handle every completion. Returns how many there were.
    fn reap(&mut self) -> io::Result<usize> {
        let mut done = 0;
        loop {
            let Some(cqe) = self.ring.completion().next() else {
                break;
            };
            done += 1;
            let (kind, conn) = split_user_data(cqe.user_data());
            let (res, flags) = (cqe.result(), cqe.flags());
            match kind {
                KIND_ACCEPT => self.on_accept(res, flags)?,
                KIND_RECV => self.on_recv(conn, res, flags)?,
                KIND_SEND => self.on_send(conn, res)?,
                KIND_WAKE => self.arm_read(KIND_WAKE)?,
                KIND_STOP => self.stopping = true,
                KIND_TIMER => self.timer_armed = false,
                _ => unreachable!("user data we never set"),
            }
        }
        Ok(done)
    }

    fn on_accept(&mut self, res: i32, flags: u32) -> io::Result<()> {
        if !cqueue::more(flags) {
            self.accept_armed = false;
        }
        if res >= 0 {
            // SAFETY: a non-negative accept result is a new socket fd we now own.
            let stream = unsafe { TcpStream::from_raw_fd(res) };
            let _ = stream.set_nodelay(true);
            let peer = stream.peer_addr();
            let conn = self.io.insert(stream);
            let slot = conn_slot(conn) as usize;
            if self.inflight.len() <= slot {
                self.inflight.resize_with(slot + 1, InFlight::default);
            }
            self.inflight[slot] = InFlight::default();
            match peer {
                Ok(peer) => {
                    self.handler.on_open(conn, peer, &mut self.io);
                    self.arm_recv(conn)?;
                }
                Err(_) => self.io.close(conn),
            }
        } else {
            eprintln!(
                "tabosd: accept failed: {}",
                io::Error::from_raw_os_error(-res)
            );
        }
        if !self.accept_armed && !self.stopping {
            self.arm_accept()?;
        }
        Ok(())
    }

    fn on_recv(&mut self, conn: ConnId, res: i32, flags: u32) -> io::Result<()> {
        let more = cqueue::more(flags);
        let slot = conn_slot(conn) as usize;
        if !more {
            self.inflight[slot].recv = false;
        }
        if res > 0 {
            let bid =
                cqueue::buffer_select(flags).expect("multishot receive completions carry a buffer");
            if self.io.is_open(conn) {
                let data = self.bufs.data(bid, res as usize);
                self.handler.on_data(conn, data, &mut self.io);
            }
            self.bufs.recycle(bid);
            if !more && self.io.is_open(conn) {
                self.arm_recv(conn)?;
            }
        } else if res == -libc::ENOBUFS {
            if !more && self.io.is_open(conn) {
                self.arm_recv(conn)?; // buffers come back as soon as data is handled
            }
        } else {
            // 0: the peer closed; negative: an error. Either way the connection ends.
            self.io.close(conn);
            if let Some(c) = self.io.get_mut(conn) {
                c.out.clear();
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
        }
        Ok(())
    }

    fn on_send(&mut self, conn: ConnId, res: i32) -> io::Result<()> {
        let state = &mut self.inflight[conn_slot(conn) as usize];
        state.send = false;
        if res < 0 {
            state.sending.clear();
            state.sent = 0;
            self.io.close(conn);
            if let Some(c) = self.io.get_mut(conn) {
                c.out.clear();
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
            return Ok(());
        }
        state.sent += res as usize;
        self.start_send(conn)
    }

    /// Remove connections that are closing and have nothing in flight.
    fn finish_closed(&mut self) {
        for slot in 0..self.io.slots.len() {
            let Some(c) = &self.io.slots[slot] else {
                continue;
            };
            let conn = super::server::conn_id(slot as u32, c.generation);
            let state = &self.inflight[slot];
            if !c.closing || state.send || state.sent < state.sending.len() {
                continue;
            }
            if !c.out.is_empty() {
                continue;
            }
            if state.recv {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
                continue; // the receive ends with 0 and comes back here
            }
            self.io.remove(conn);
            self.inflight[slot] = InFlight::default();
            self.handler.on_close(conn);
        }
    }

    /// On stop: shut every connection and wait (bounded) for the kernel to let go of
    /// their buffers.
    fn drain(&mut self) -> io::Result<()> {
        for c in self.io.slots.iter_mut().flatten() {
            c.closing = true;
            c.out.clear();
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.io.open_count() > 0 && Instant::now() < deadline {
            self.ring.submit_and_wait(0)?;
            self.reap()?;
            self.finish_closed();
            std::thread::yield_now();
        }
        Ok(())
    }
}
