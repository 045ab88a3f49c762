//! Baselines: raw loopback TCP, the paper's bare-bones transport (figures 6-8), in two
//! flavours measured side by side:
//! - `tcp-blocking`: blocking sockets; a waiting end sleeps in recv(2) until the
//!   kernel wakes it;
//! - `tcp-busypoll`: non-blocking sockets; a waiting end spins on recv(2), giving the
//!   core away (sched_yield) every 64 empty tries so threads sharing a core still
//!   take turns, as tabos's partitions and clients spin before they sleep.
//!
//! An [`EchoServer`] is one thread pinned to a core that accepts one connection on
//! 127.0.0.1 and writes back every byte it reads until EOF: a stream echo that does not
//! care how the client frames its messages (messages that arrive together go back in
//! one write, as a tabos receiver takes a batch). Both ends set TCP_NODELAY. The
//! client side is a [`Conn`] on the calling thread: ping-pong writes a message and
//! reads its echo; ping20-pong20 writes 20 messages (20 send(2) calls) and then reads
//! the 20 echoes; multicast writes one message to each of N servers, then reads the N
//! echoes. [`invoke`] times 8-byte round trips for the `invoke` workload.

use crate::measure::{self, Latencies};
use crate::report::{self, params, Record};
use crate::Error;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// System name of the blocking-socket baseline.
pub const SYSTEM_BLOCKING: &str = "tcp-blocking";
/// System name of the busy-polling baseline.
pub const SYSTEM_BUSYPOLL: &str = "tcp-busypoll";
/// Bytes per message each way of the `invoke` round trip.
pub const INVOKE_MESSAGE_BYTES: usize = 8;
/// Round trips before timing starts (`invoke`).
const WARMUP_ROUND_TRIPS: u64 = 2_000;
/// How long either end waits for the other before giving up.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes an echo server reads (and writes back) at a time.
const ECHO_BUFFER_BYTES: usize = 64 * 1024;
/// Most bytes a client writes before it reads echoes back (ping20-pong20 with large
/// messages): what loopback's socket buffers hold in both directions, so that neither
/// end blocks writing while the other is blocked writing too. 20 messages of 8 KiB
/// (160 KiB) fit, so the paper's sizes are sent whole before any echo is read.
pub const IN_FLIGHT_BYTES_MAX: usize = 192 * 1024;

/// How a waiting end waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Blocking sockets: sleep in recv(2).
    Blocking,
    /// Non-blocking sockets: spin on recv(2), yielding every 64 empty tries.
    BusyPoll,
}

impl Mode {
    /// Both, in report order.
    pub const ALL: [Mode; 2] = [Mode::Blocking, Mode::BusyPoll];

    /// The system name in records.
    pub fn system(self) -> &'static str {
        match self {
            Mode::Blocking => SYSTEM_BLOCKING,
            Mode::BusyPoll => SYSTEM_BUSYPOLL,
        }
    }

    /// How a waiting end waits, for records.
    pub fn waiting(self) -> &'static str {
        match self {
            Mode::Blocking => "blocking recv(2)",
            Mode::BusyPoll => "non-blocking recv(2) spinning (sched_yield every 64 tries)",
        }
    }
}

/// Spin once while waiting for the socket: a pause, every 64th time a sched_yield and
/// a look at the clock. Fails once `started` is [`IO_TIMEOUT`] ago.
fn spin(turns: &mut u32, started: Instant) -> std::io::Result<()> {
    *turns = turns.wrapping_add(1);
    if !turns.is_multiple_of(64) {
        std::hint::spin_loop();
        return Ok(());
    }
    std::thread::yield_now();
    if started.elapsed() > IO_TIMEOUT {
        return Err(std::io::Error::new(
            ErrorKind::TimedOut,
            "the peer sent nothing for 10 s",
        ));
    }
    Ok(())
}

/// One end of a connection, blocking or busy-polling as its mode says.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    mode: Mode,
}

impl Conn {
    fn new(stream: TcpStream, mode: Mode) -> std::io::Result<Conn> {
        stream.set_nodelay(true)?;
        match mode {
            Mode::Blocking => {
                stream.set_nonblocking(false)?;
                stream.set_read_timeout(Some(IO_TIMEOUT))?;
                stream.set_write_timeout(Some(IO_TIMEOUT))?;
            }
            Mode::BusyPoll => stream.set_nonblocking(true)?,
        }
        Ok(Conn { stream, mode })
    }

    /// Connect to the echo server at `addr`.
    pub fn connect(addr: SocketAddr, mode: Mode) -> Result<Conn, Error> {
        TcpStream::connect_timeout(&addr, IO_TIMEOUT)
            .and_then(|s| Conn::new(s, mode))
            .map_err(|e| Error::io(format!("connecting to the TCP echo server {addr}"), e))
    }

    /// What a would-block means: with blocking sockets, that the timeout passed.
    fn would_block(&self, turns: &mut u32, started: Instant) -> std::io::Result<()> {
        match self.mode {
            Mode::BusyPoll => spin(turns, started),
            Mode::Blocking => Err(std::io::Error::new(
                ErrorKind::TimedOut,
                "the peer did nothing for 10 s",
            )),
        }
    }

    /// Read what has arrived into `buf`, waiting (blocking: sleeping; busy-poll:
    /// spinning) until something has. `Ok(0)` at EOF.
    fn recv_some(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        assert!(!buf.is_empty(), "a read needs room");
        let started = Instant::now();
        let mut turns = 0u32;
        loop {
            match self.stream.read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.would_block(&mut turns, started)?
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Read exactly `buf.len()` bytes.
    pub fn recv_exact(&mut self, buf: &mut [u8]) -> std::io::Result<()> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.recv_some(&mut buf[filled..])? {
                0 => {
                    return Err(std::io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "the peer closed the connection",
                    ))
                }
                n => filled += n,
            }
        }
        Ok(())
    }

    /// Write all of `data` (one send(2) when the socket buffer has room).
    pub fn send(&mut self, data: &[u8]) -> std::io::Result<()> {
        let started = Instant::now();
        let mut turns = 0u32;
        let mut sent = 0;
        while sent < data.len() {
            match self.stream.write(&data[sent..]) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        ErrorKind::WriteZero,
                        "the peer stopped reading",
                    ))
                }
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    self.would_block(&mut turns, started)?
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Send `sent` and read its echo into `back` (as long as `sent`).
    pub fn round_trip(&mut self, sent: &[u8], back: &mut [u8]) -> std::io::Result<()> {
        assert_eq!(sent.len(), back.len(), "an echo is as long as the message");
        self.send(sent)?;
        self.recv_exact(back)?;
        check_echo(sent, back)
    }

    /// Send every message of `sent` (one send each), then read their echoes into
    /// `back` (as long as all of them together) and check them. Writes at most
    /// [`IN_FLIGHT_BYTES_MAX`] ahead of the echoes read.
    pub fn batch_round_trip(&mut self, sent: &[Vec<u8>], back: &mut [u8]) -> std::io::Result<()> {
        let total: usize = sent.iter().map(Vec::len).sum();
        assert_eq!(total, back.len(), "the echoes are as long as the messages");
        let (mut written, mut read) = (0, 0);
        for m in sent {
            while written + m.len() - read > IN_FLIGHT_BYTES_MAX && read < written {
                let n = self.recv_some(&mut back[read..written])?;
                if n == 0 {
                    return Err(std::io::Error::new(
                        ErrorKind::UnexpectedEof,
                        "the peer closed the connection",
                    ));
                }
                read += n;
            }
            self.send(m)?;
            written += m.len();
        }
        self.recv_exact(&mut back[read..])?;
        let mut at = 0;
        for m in sent {
            check_echo(m, &back[at..at + m.len()])?;
            at += m.len();
        }
        Ok(())
    }
}

/// Send `sent` on every connection, then read each echo into `back` and check it.
/// (Reading the echoes in order costs nothing over reading them as they come: every
/// message is on its way before the first read.)
pub fn multicast_round(conns: &mut [Conn], sent: &[u8], back: &mut [u8]) -> std::io::Result<()> {
    assert!(!conns.is_empty(), "a multicast needs a receiver");
    for conn in conns.iter_mut() {
        conn.send(sent)?;
    }
    for conn in conns.iter_mut() {
        conn.recv_exact(back)?;
        check_echo(sent, back)?;
    }
    Ok(())
}

fn check_echo(sent: &[u8], back: &[u8]) -> std::io::Result<()> {
    if sent != back {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "echo differs from the message",
        ));
    }
    Ok(())
}

/// A stream echo server: one thread, one connection.
#[derive(Debug)]
pub struct EchoServer {
    addr: SocketAddr,
    mode: Mode,
    thread: JoinHandle<std::io::Result<u64>>,
}

impl EchoServer {
    /// Listen on 127.0.0.1 and start the echo thread pinned to `core`.
    pub fn start(mode: Mode, core: usize) -> Result<EchoServer, Error> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .map_err(|e| Error::io("binding a TCP echo server on 127.0.0.1", e))?;
        let addr = listener
            .local_addr()
            .map_err(|e| Error::io("reading the TCP echo server's address", e))?;
        let thread = std::thread::Builder::new()
            .name("tcp-echo".into())
            .spawn(move || {
                measure::pin_current(core);
                serve(listener, mode)
            })
            .map_err(|e| Error::io("starting a TCP echo thread", e))?;
        Ok(EchoServer { addr, mode, thread })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connect to it, waiting as its mode says.
    pub fn connect(&self) -> Result<Conn, Error> {
        Conn::connect(self.addr, self.mode)
    }

    /// Wait for the thread (after the connection was closed: it ends at EOF, or after
    /// [`IO_TIMEOUT`] without a client) and fail if it did.
    pub fn finish(self) -> Result<(), Error> {
        let served = self.thread.join().expect("TCP echo threads do not panic");
        served
            .map(drop)
            .map_err(|e| Error::io(format!("TCP echo server ({})", self.addr), e))
    }
}

/// Accept one connection (with a deadline, so a client that never comes cannot hang
/// the run) and echo until EOF. Returns the bytes echoed.
fn serve(listener: TcpListener, mode: Mode) -> std::io::Result<u64> {
    listener.set_nonblocking(true)?;
    let started = Instant::now();
    let stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock && started.elapsed() < IO_TIMEOUT => {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(e),
        }
    };
    let mut conn = Conn::new(stream, mode)?;
    let mut buf = vec![0u8; ECHO_BUFFER_BYTES];
    let mut echoed = 0u64;
    loop {
        match conn.recv_some(&mut buf) {
            Ok(0) => return Ok(echoed),
            Ok(n) => {
                conn.send(&buf[..n])?;
                echoed += n as u64;
            }
            // A client that closes with echoes unread may reset the connection.
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return Ok(echoed),
            Err(e) => return Err(e),
        }
    }
}

/// `count` round trips of an 8-byte message; each timed into `lat` if given.
fn round_trips(
    conn: &mut Conn,
    count: u64,
    mut lat: Option<&mut Latencies>,
) -> std::io::Result<()> {
    let mut out = [0u8; INVOKE_MESSAGE_BYTES];
    let mut back = [0u8; INVOKE_MESSAGE_BYTES];
    for i in 0..count {
        out.copy_from_slice(&i.to_le_bytes());
        let start = Instant::now();
        conn.round_trip(&out, &mut back)?;
        if let Some(lat) = lat.as_deref_mut() {
            lat.record(start.elapsed());
        }
    }
    Ok(())
}

/// The `invoke` baseline: `count` 8-byte echo round trips from the calling thread to
/// an echo server pinned to `server_core`, each timed.
pub fn invoke(
    workload: &str,
    mode: Mode,
    count: u64,
    server_core: usize,
    timer_ns: u64,
) -> Result<Record, Error> {
    assert!(count > 0, "at least one round trip");
    eprintln!(
        "[{workload}] loopback TCP echo ({}), {INVOKE_MESSAGE_BYTES} B: {count} round trips",
        mode.waiting()
    );
    let server = EchoServer::start(mode, server_core)?;
    let addr = server.addr();
    let measured = (|| {
        let mut conn = server.connect()?;
        let io = |e| Error::io(format!("TCP echo client ({addr})"), e);
        round_trips(&mut conn, WARMUP_ROUND_TRIPS, None).map_err(io)?;
        let mut lat = Latencies::new();
        let started = Instant::now();
        round_trips(&mut conn, count, Some(&mut lat)).map_err(io)?;
        Ok::<_, Error>((lat, started.elapsed()))
        // The connection closes here: the server sees EOF and returns.
    })();
    let served = server.finish();
    let (lat, elapsed) = measured?;
    served?;
    let record = Record::from_latencies(
        workload,
        mode.system(),
        params([
            ("message_bytes", INVOKE_MESSAGE_BYTES.into()),
            ("round_trips", count.into()),
            ("waiting", mode.waiting().into()),
            ("timing", "per-call".into()),
            ("timer_overhead_ns", timer_ns.into()),
        ]),
        &lat,
        Some(count as f64 / elapsed.as_secs_f64()),
    );
    report::progress(&record);
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_modes_echo_every_shape_of_round() {
        for mode in Mode::ALL {
            let server = EchoServer::start(mode, 0).unwrap();
            let mut conn = server.connect().unwrap();
            let mut back = [0u8; 8];
            conn.round_trip(b"12345678", &mut back).unwrap();
            // 20 messages of 64 KiB: more than the in-flight cap, so reads interleave.
            let sent: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 64 * 1024]).collect();
            let mut back = vec![0u8; 20 * 64 * 1024];
            conn.batch_round_trip(&sent, &mut back).unwrap();
            drop(conn);
            server.finish().unwrap();
        }
    }

    #[test]
    fn multicast_reads_every_echo() {
        let servers: Vec<EchoServer> = (0..3)
            .map(|_| EchoServer::start(Mode::BusyPoll, 0).unwrap())
            .collect();
        let mut conns: Vec<Conn> = servers.iter().map(|s| s.connect().unwrap()).collect();
        let mut back = [0u8; 64];
        multicast_round(&mut conns, &[7u8; 64], &mut back).unwrap();
        drop(conns);
        for s in servers {
            s.finish().unwrap();
        }
    }
}
