//! The fallback stream server: non-blocking sockets and `poll(2)`, for hosts where
//! io_uring is disabled (the `kernel.io_uring_disabled` sysctl, a seccomp filter).
//! Same [`StreamHandler`] contract as [`super::uring`].

use super::server::{conn_id, ConnId, Io, StreamHandler};
use crate::doorbell::{poll_fds, pollfd_in, EventFd};
use std::io::{self, Read, Write};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

/// Serve `listener` with `handler` until `stop` is written.
pub fn run<H: StreamHandler>(
    listener: &TcpListener,
    wake: &EventFd,
    stop: &EventFd,
    handler: &mut H,
    spin: Duration,
    out_bytes_max: usize,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut io = Io::new(out_bytes_max);
    let mut scratch = vec![0u8; 64 * 1024];
    let mut idle_since: Option<Instant> = None;
    loop {
        let mut fds = vec![
            pollfd_in(listener.as_raw_fd()),
            pollfd_in(wake.as_fd().as_raw_fd()),
            pollfd_in(stop.as_fd().as_raw_fd()),
        ];
        let mut conns: Vec<ConnId> = Vec::new();
        for (slot, c) in io.slots.iter().enumerate() {
            let Some(c) = c else { continue };
            let mut pfd = pollfd_in(c.stream.as_raw_fd());
            if !c.out.is_empty() {
                pfd.events |= libc::POLLOUT;
            }
            fds.push(pfd);
            conns.push(conn_id(slot as u32, c.generation));
        }
        let busy = idle_since.is_none_or(|since| since.elapsed() < spin);
        let timeout = if busy {
            0
        } else if handler.before_sleep() {
            handler
                .sleep_limit()
                .map_or(-1, |d| d.as_millis().clamp(1, i32::MAX as u128) as i32)
        } else {
            0
        };
        poll_fds(&mut fds, timeout)?;
        if !busy {
            handler.after_wake();
        }
        let mut work = 0;
        if fds[2].revents != 0 {
            return Ok(());
        }
        if fds[1].revents != 0 {
            wake.drain();
            work += 1;
        }
        for (i, conn) in conns.iter().enumerate() {
            let revents = fds[3 + i].revents;
            if revents == 0 {
                continue;
            }
            work += 1;
            if revents & (libc::POLLIN | libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0 {
                read_ready(&mut io, *conn, &mut scratch, handler);
            }
        }
        if fds[0].revents != 0 {
            work += 1;
            loop {
                match listener.accept() {
                    Ok((stream, peer)) => {
                        let _ = stream.set_nodelay(true);
                        if stream.set_nonblocking(true).is_err() {
                            continue;
                        }
                        let conn = io.insert(stream);
                        handler.on_open(conn, peer, &mut io);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => {
                        eprintln!("tabosd: accept failed: {e}");
                        break;
                    }
                }
            }
        }
        work += handler.tick(&mut io);
        write_and_reap(&mut io, handler);
        if work > 0 {
            idle_since = None;
        } else if idle_since.is_none() {
            idle_since = Some(Instant::now());
        } else {
            std::thread::yield_now(); // as in the io_uring driver: share the core
        }
    }
}

fn read_ready<H: StreamHandler>(io: &mut Io, conn: ConnId, scratch: &mut [u8], handler: &mut H) {
    loop {
        let Some(c) = io.get_mut(conn) else { return };
        match c.stream.read(scratch) {
            Ok(0) => break,
            Ok(n) => {
                if io.is_open(conn) {
                    handler.on_data(conn, &scratch[..n], io);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    // End of stream or error: the connection is over.
    if let Some(c) = io.get_mut(conn) {
        c.closing = true;
        c.out.clear();
    }
}

fn write_and_reap<H: StreamHandler>(io: &mut Io, handler: &mut H) {
    let mut finished = Vec::new();
    for slot in 0..io.slots.len() {
        let Some(c) = io.slots[slot].as_mut() else {
            continue;
        };
        while !c.out.is_empty() {
            match c.stream.write(&c.out) {
                Ok(0) => {
                    c.out.clear();
                    c.closing = true;
                }
                Ok(n) => {
                    c.out.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    c.out.clear();
                    c.closing = true;
                }
            }
        }
        if c.closing && c.out.is_empty() {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            finished.push(conn_id(slot as u32, c.generation));
        }
    }
    for conn in finished {
        io.remove(conn);
        handler.on_close(conn);
    }
}
