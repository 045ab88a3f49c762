//! The RDMA stream server: the [`StreamHandler`] contract of [`crate::net::uring`] and
//! [`crate::net::poll`], with the bytes carried by RDMA SEND/RECV instead of TCP.
//!
//! A connection starts over TCP (accepted without blocking), which carries the
//! endpoint exchange and the [`READY_BYTE`] of [`super::stream`] and then nothing: from
//! then on it only says when the peer is gone (end of stream, an error, or bytes the
//! peer had no business sending all close the connection). The handler sees a
//! connection only once its queue pair is ready: `on_open`, then every received RDMA
//! message as one `on_data`, and what it queues in [`Io`] goes out as messages of at
//! most the slot size ([`send_stream`]).
//!
//! One loop, in order: look at the fds (listener, wake, stop, TCP liveness, set-ups in
//! progress), receive from every queue pair, `tick`, send, and remove closed
//! connections. While there is work the completion queues are polled and the fds are
//! looked at without waiting once per [`RdmaDriverOptions::fd_check_interval`]; after
//! [`RdmaDriverOptions::spin`] without work every completion queue is armed and the
//! thread sleeps in `poll(2)` on the completion channels, the TCP connections, the
//! listener and the two eventfds.
//!
//! Received bytes are never interpreted here: each message is bounded by its slot, and
//! the handler validates the stream (handshake, frames) as it does for TCP.

use super::qp::ENDPOINT_SIZE;
use super::stream::{send_stream, stream_config, READY_BYTE};
use super::{QpEndpoint, RdmaConfig, RdmaConnection, RdmaError};
use crate::doorbell::{poll_fds, pollfd_in, EventFd};
use crate::net::server::{conn_id, conn_slot, ConnId, Io, StreamHandler};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};

/// Settings of the driver.
#[derive(Clone, Debug)]
pub struct RdmaDriverOptions {
    /// Device and slot shape of every connection (default: [`stream_config`]).
    pub rdma: RdmaConfig,
    /// How long to poll without work before sleeping. Default 100 µs.
    pub spin: Duration,
    /// Largest unsent backlog per connection; a peer that does not read past it is
    /// dropped. Default 64 MiB.
    pub out_bytes_max: usize,
    /// Most connections, set-ups included; later ones are refused. Each holds
    /// `(recv + send slots) × slot size` of registered (locked) memory, 2 MiB by
    /// default. Default 1024.
    pub connections_max: usize,
    /// How long a peer may take to send its endpoint. Default 5 s.
    pub setup_timeout: Duration,
    /// How long a closing connection (or the driver, when stopping) waits for its
    /// queued and in-flight sends. Default 1 s.
    pub close_linger: Duration,
    /// While busy, how often the fds are looked at (accepts, wake, stop, liveness).
    /// Default 100 µs.
    pub fd_check_interval: Duration,
}

impl Default for RdmaDriverOptions {
    fn default() -> Self {
        RdmaDriverOptions {
            rdma: stream_config(),
            spin: Duration::from_micros(100),
            out_bytes_max: 64 << 20,
            connections_max: 1024,
            setup_timeout: Duration::from_secs(5),
            close_linger: Duration::from_secs(1),
            fd_check_interval: Duration::from_micros(100),
        }
    }
}

/// A TCP connection whose peer has not sent its endpoint yet.
struct Pending {
    stream: TcpStream,
    peer: SocketAddr,
    rdma: RdmaConnection,
    endpoint: [u8; ENDPOINT_SIZE],
    filled: usize,
    since: Instant,
}

/// The RDMA side of an open connection, in the slot of its [`ConnId`].
struct Live {
    rdma: RdmaConnection,
    /// The queue pair failed or the peer is gone: nothing more will complete.
    broken: bool,
    /// When the connection was first seen closing.
    closing_since: Option<Instant>,
}

/// What a look at the fds found.
enum Looked {
    Stop,
    Work(usize),
}

/// What an fd in a poll set belongs to.
#[derive(Clone, Copy)]
enum FdOf {
    Setup,
    Liveness(ConnId),
    Completions,
}

/// Fds before the per-connection ones: listener, wake, stop.
const FIXED_FDS: usize = 3;

struct Driver<'a, H: StreamHandler> {
    // Field order matters for drop: queue pairs before the TCP connections they follow.
    live: Vec<Option<Live>>,
    pending: Vec<Pending>,
    io: Io,
    handler: &'a mut H,
    listener: &'a TcpListener,
    wake: &'a EventFd,
    stop: &'a EventFd,
    options: RdmaDriverOptions,
    /// One received message.
    message: Vec<u8>,
}

/// Serve `listener` with `handler` over RDMA until `stop` is written. A host without
/// an RDMA device fails every connection at set-up (logged); callers check
/// [`super::require_device`] first.
pub fn run<H: StreamHandler>(
    listener: &TcpListener,
    wake: &EventFd,
    stop: &EventFd,
    handler: &mut H,
    options: RdmaDriverOptions,
) -> io::Result<()> {
    assert!(
        options.connections_max > 0,
        "connections_max must be positive"
    );
    listener.set_nonblocking(true)?;
    let mut driver = Driver {
        live: Vec::new(),
        pending: Vec::new(),
        io: Io::new(options.out_bytes_max),
        handler,
        listener,
        wake,
        stop,
        message: Vec::with_capacity(options.rdma.max_payload_bytes as usize + 64),
        options,
    };
    driver.serve()
}

impl<H: StreamHandler> Driver<'_, H> {
    fn serve(&mut self) -> io::Result<()> {
        let mut idle_since: Option<Instant> = None;
        let mut last_look: Option<Instant> = None;
        loop {
            let mut work = 0;
            if last_look.is_none_or(|at| at.elapsed() >= self.options.fd_check_interval) {
                last_look = Some(Instant::now());
                match self.look(0, false)? {
                    Looked::Stop => return self.finish(),
                    Looked::Work(n) => work += n,
                }
            }
            work += self.receive();
            work += self.handler.tick(&mut self.io);
            work += self.send();
            self.reap();
            if work > 0 {
                idle_since = None;
                continue;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() < self.options.spin {
                std::hint::spin_loop();
                continue;
            }
            if self.arm_all() {
                idle_since = None;
                continue;
            }
            let timeout_ms = if self.handler.before_sleep() {
                self.sleep_timeout_ms()
            } else {
                0
            };
            let looked = self.look(timeout_ms, true)?;
            last_look = Some(Instant::now());
            self.handler.after_wake();
            idle_since = None;
            if let Looked::Stop = looked {
                return self.finish();
            }
        }
    }

    /// Poll the fds (`timeout_ms` as for poll(2)); with `sleeping`, the completion
    /// channels too. Handles what is ready except the completions themselves.
    fn look(&mut self, timeout_ms: i32, sleeping: bool) -> io::Result<Looked> {
        let mut fds = vec![
            pollfd_in(self.listener.as_raw_fd()),
            pollfd_in(self.wake.as_fd().as_raw_fd()),
            pollfd_in(self.stop.as_fd().as_raw_fd()),
        ];
        let mut owners = Vec::new();
        for p in &self.pending {
            fds.push(pollfd_in(p.stream.as_raw_fd()));
            owners.push(FdOf::Setup);
        }
        for (slot, c) in self.io.slots.iter().enumerate() {
            // A closing connection's liveness no longer matters (and after our own
            // shutdown its fd stays readable); it waits only for its sends.
            let Some(c) = c else { continue };
            if c.closing {
                continue;
            }
            let mut pfd = pollfd_in(c.stream.as_raw_fd());
            pfd.events |= libc::POLLRDHUP;
            fds.push(pfd);
            owners.push(FdOf::Liveness(conn_id(slot as u32, c.generation)));
        }
        if sleeping {
            for live in self.live.iter().flatten().filter(|l| !l.broken) {
                fds.push(pollfd_in(live.rdma.completion_fd().as_raw_fd()));
                owners.push(FdOf::Completions);
            }
        }
        assert_eq!(fds.len(), FIXED_FDS + owners.len());
        poll_fds(&mut fds, timeout_ms)?;
        if fds[2].revents != 0 {
            return Ok(Looked::Stop);
        }
        let mut work = 0;
        if fds[1].revents != 0 {
            self.wake.drain();
            work += 1;
        }
        let mut setup_ready = false;
        for (pfd, owner) in fds[FIXED_FDS..].iter().zip(&owners) {
            if pfd.revents == 0 {
                continue;
            }
            work += 1;
            match *owner {
                FdOf::Setup => setup_ready = true,
                FdOf::Liveness(conn) => self.check_liveness(conn),
                // Taken at the next poll of the queue; the event is drained when the
                // queue is armed again.
                FdOf::Completions => {}
            }
        }
        if setup_ready || !self.pending.is_empty() {
            work += self.advance_setups();
        }
        if fds[0].revents != 0 {
            work += self.accept_all();
        }
        Ok(Looked::Work(work))
    }

    /// Accept every waiting TCP connection and start its set-up.
    fn accept_all(&mut self) -> usize {
        let mut accepted = 0;
        loop {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    accepted += 1;
                    self.admit(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    eprintln!("tabosd: accept failed: {e}");
                    break;
                }
            }
        }
        accepted
    }

    /// Create the queue pair of a new connection and send our endpoint; the peer's
    /// arrives later ([`Driver::advance_setups`]). Failures drop the TCP connection,
    /// which the peer sees as the end of the stream.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        if self.pending.len() + self.io.open_count() >= self.options.connections_max {
            eprintln!(
                "tabosd: refusing an RDMA connection from {peer}: {} connections open (the most)",
                self.options.connections_max
            );
            return;
        }
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let rdma = match RdmaConnection::create(&self.options.rdma) {
            Ok(rdma) => rdma,
            Err(e) => {
                eprintln!("tabosd: cannot set up RDMA for a connection from {peer}: {e}");
                return;
            }
        };
        // 48 bytes into the empty send buffer of a fresh socket: all or nothing.
        match (&stream).write(&rdma.local_endpoint().encode()) {
            Ok(ENDPOINT_SIZE) => {}
            Ok(_) | Err(_) => return,
        }
        self.pending.push(Pending {
            stream,
            peer,
            rdma,
            endpoint: [0; ENDPOINT_SIZE],
            filled: 0,
            since: Instant::now(),
        });
        assert!(self.pending.len() + self.io.open_count() <= self.options.connections_max);
    }

    /// Read what peers sent of their endpoints; connect those complete, drop those
    /// that failed or took too long. Returns how many changed state.
    fn advance_setups(&mut self) -> usize {
        let mut changed = 0;
        let mut i = 0;
        while i < self.pending.len() {
            let p = &mut self.pending[i];
            let outcome = match read_endpoint(p) {
                Ok(None) if p.since.elapsed() > self.options.setup_timeout => Err(format!(
                    "no endpoint within {:?}",
                    self.options.setup_timeout
                )),
                other => other,
            };
            match outcome {
                Ok(None) => i += 1,
                Ok(Some(remote)) => {
                    changed += 1;
                    let p = self.pending.swap_remove(i);
                    self.open(p, &remote);
                }
                Err(why) => {
                    changed += 1;
                    let p = self.pending.swap_remove(i);
                    if !why.is_empty() {
                        eprintln!("tabosd: RDMA set-up with {} failed: {why}", p.peer);
                    }
                }
            }
        }
        changed
    }

    /// Connect the queue pair toward `remote`, confirm over TCP, and hand the
    /// connection to the handler.
    fn open(&mut self, mut p: Pending, remote: &QpEndpoint) {
        if let Err(e) = p.rdma.connect(remote) {
            eprintln!("tabosd: RDMA set-up with {} failed: {e}", p.peer);
            return;
        }
        match (&p.stream).write(&[READY_BYTE]) {
            Ok(1) => {}
            Ok(_) | Err(_) => return,
        }
        let conn = self.io.insert(p.stream);
        let slot = conn_slot(conn) as usize;
        if self.live.len() <= slot {
            self.live.resize_with(slot + 1, || None);
        }
        assert!(
            self.live[slot].is_none(),
            "a free slot still has a queue pair"
        );
        self.live[slot] = Some(Live {
            rdma: p.rdma,
            broken: false,
            closing_since: None,
        });
        self.handler.on_open(conn, p.peer, &mut self.io);
    }

    /// The TCP connection of `conn` is readable: the end of the stream or an error
    /// means the peer is gone; bytes mean it breaks the protocol. Either way the
    /// connection closes. After our own close (shutdown) reads end too; then queued
    /// sends still get their linger.
    fn check_liveness(&mut self, conn: ConnId) {
        let Some(c) = self.io.get_mut(conn) else {
            return;
        };
        let mut scratch = [0u8; 64];
        let gone = loop {
            match c.stream.read(&mut scratch) {
                Ok(_) => break true,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break true,
            }
        };
        if !gone {
            return;
        }
        let ours = c.closing;
        c.closing = true;
        if !ours {
            c.out.clear();
            if let Some(live) = self.live[conn_slot(conn) as usize].as_mut() {
                live.broken = true;
            }
        }
    }

    /// Take what every queue pair received and hand each message to the handler
    /// (at most a slot count of messages per connection, so no peer starves others).
    /// Connections that are closing are drained too, so their sends complete; what
    /// they receive is dropped.
    fn receive(&mut self) -> usize {
        let mut work = 0;
        let per_conn_max = self.options.rdma.recv_slot_count as usize;
        for slot in 0..self.live.len() {
            let Some(live) = self.live[slot].as_mut() else {
                continue;
            };
            if live.broken {
                continue;
            }
            let c = self.io.slots[slot]
                .as_ref()
                .expect("a queue pair without its connection");
            let conn = conn_id(slot as u32, c.generation);
            for _ in 0..per_conn_max {
                match live.rdma.recv_bytes(&mut self.message) {
                    Ok(false) => break,
                    Ok(true) => {
                        work += 1;
                        if !self.message.is_empty() && self.io.is_open(conn) {
                            self.handler.on_data(conn, &self.message, &mut self.io);
                        }
                    }
                    Err(e) => {
                        broke(&mut self.io, live, conn, &e);
                        break;
                    }
                }
            }
        }
        work
    }

    /// Send what the handler queued, as far as send slots allow. Returns messages sent.
    fn send(&mut self) -> usize {
        let mut work = 0;
        for slot in 0..self.io.slots.len() {
            let Some(c) = self.io.slots[slot].as_mut() else {
                continue;
            };
            if c.out.is_empty() {
                continue;
            }
            let conn = conn_id(slot as u32, c.generation);
            let live = self.live[slot]
                .as_mut()
                .expect("a connection without its queue pair");
            if live.broken {
                c.out.clear();
                continue;
            }
            match send_stream(&mut live.rdma, &mut c.out) {
                Ok(messages) => work += messages,
                Err(e) => broke(&mut self.io, live, conn, &e),
            }
        }
        work
    }

    /// Remove connections that are closing and have sent everything (or broke, or
    /// used up their linger), and tell the handler.
    fn reap(&mut self) {
        for slot in 0..self.io.slots.len() {
            let Some(c) = self.io.slots[slot].as_ref() else {
                continue;
            };
            if !c.closing {
                continue;
            }
            let conn = conn_id(slot as u32, c.generation);
            let live = self.live[slot]
                .as_mut()
                .expect("a connection without its queue pair");
            let since = *live.closing_since.get_or_insert_with(Instant::now);
            let flushed =
                c.out.is_empty() && (live.broken || live.rdma.send_in_flight_count() == 0);
            if !flushed && since.elapsed() < self.options.close_linger {
                continue;
            }
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            self.live[slot] = None;
            self.io.remove(conn).expect("the connection was open");
            self.handler.on_close(conn);
        }
    }

    /// Arm every completion queue before sleeping. `true` when completions were
    /// already waiting (or a queue pair failed): do not sleep.
    fn arm_all(&mut self) -> bool {
        let mut waiting = false;
        for slot in 0..self.live.len() {
            let Some(live) = self.live[slot].as_mut() else {
                continue;
            };
            if live.broken {
                continue;
            }
            match live.rdma.arm() {
                Ok(false) => {}
                Ok(true) => waiting = true,
                Err(e) => {
                    let c = self.io.slots[slot]
                        .as_ref()
                        .expect("a queue pair without its connection");
                    let conn = conn_id(slot as u32, c.generation);
                    broke(&mut self.io, live, conn, &e);
                    waiting = true;
                }
            }
        }
        waiting
    }

    /// How long to sleep: the handler's limit, the next set-up timeout, and a short
    /// nap while a closing connection lingers. `-1`: until an fd wakes us.
    fn sleep_timeout_ms(&self) -> i32 {
        let mut limit = self.handler.sleep_limit();
        let mut cap = |d: Duration| limit = Some(limit.map_or(d, |l| l.min(d)));
        if let Some(oldest) = self.pending.iter().map(|p| p.since).min() {
            cap((oldest + self.options.setup_timeout).saturating_duration_since(Instant::now()));
        }
        if self.io.slots.iter().flatten().any(|c| c.closing) {
            cap(Duration::from_millis(10));
        }
        limit.map_or(-1, |d| d.as_millis().clamp(1, i32::MAX as u128) as i32)
    }

    /// On stop: send the replies the handler has, wait (bounded) for the sends to
    /// complete, then close every connection.
    fn finish(&mut self) -> io::Result<()> {
        self.handler.tick(&mut self.io);
        let deadline = Instant::now() + self.options.close_linger;
        loop {
            self.send();
            let mut busy = self.io.slots.iter().flatten().any(|c| !c.out.is_empty());
            for (slot, live) in self.live.iter_mut().enumerate() {
                let Some(live) = live.as_mut().filter(|l| !l.broken) else {
                    continue;
                };
                if live.rdma.poll_completions().is_err() {
                    live.broken = true;
                    if let Some(c) = self.io.slots[slot].as_mut() {
                        c.out.clear();
                    }
                    continue;
                }
                busy |= live.rdma.send_in_flight_count() > 0;
            }
            if !busy || Instant::now() >= deadline {
                break;
            }
            std::thread::yield_now();
        }
        for slot in 0..self.io.slots.len() {
            let Some(c) = self.io.slots[slot].as_ref() else {
                continue;
            };
            let conn = conn_id(slot as u32, c.generation);
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            self.live[slot] = None;
            self.io.remove(conn);
            self.handler.on_close(conn);
        }
        assert_eq!(self.io.open_count(), 0);
        Ok(())
    }
}

/// The queue pair of `conn` failed: close it without waiting for anything.
fn broke(io: &mut Io, live: &mut Live, conn: ConnId, e: &RdmaError) {
    if !live.broken {
        eprintln!("tabosd: RDMA connection {conn:#x} broke: {e}");
    }
    live.broken = true;
    if let Some(c) = io.get_mut(conn) {
        c.closing = true;
        c.out.clear();
    }
}

/// Read the rest of a peer's endpoint without blocking. `Ok(None)`: not all there yet;
/// `Err("")`: the peer left quietly; `Err(why)`: it failed or sent garbage.
fn read_endpoint(p: &mut Pending) -> Result<Option<QpEndpoint>, String> {
    while p.filled < ENDPOINT_SIZE {
        match p.stream.read(&mut p.endpoint[p.filled..]) {
            Ok(0) => return Err(String::new()),
            Ok(n) => p.filled += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    assert_eq!(p.filled, ENDPOINT_SIZE);
    QpEndpoint::decode(&p.endpoint)
        .map(Some)
        .map_err(|e| format!("bad endpoint: {e}"))
}
