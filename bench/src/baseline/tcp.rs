//! Baseline: a blocking loopback TCP echo round trip.
//!
//! A server thread pinned to the server core accepts one connection on 127.0.0.1 and
//! echoes fixed-size messages; the calling thread (pinned to the client core by the
//! caller) sends one message and waits for its echo, timing each round trip. Both ends
//! set TCP_NODELAY.

use crate::measure::{self, Latencies};
use crate::report::{self, params, Record};
use crate::Error;
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// System name of this baseline in records.
pub const SYSTEM: &str = "tcp-loopback";
/// Bytes per message each way.
pub const MESSAGE_BYTES: usize = 8;
/// Round trips before timing starts.
const WARMUP_ROUND_TRIPS: u64 = 2_000;
/// How long either end waits for the other before giving up.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn serve(listener: TcpListener, server_core: usize) -> std::io::Result<()> {
    measure::pin_or_warn(server_core, "the TCP echo server");
    // Accept with a deadline, so a client that never connects cannot hang the run.
    listener.set_nonblocking(true)?;
    let started = Instant::now();
    let mut stream = loop {
        match listener.accept() {
            Ok((stream, _)) => break stream,
            Err(e) if e.kind() == ErrorKind::WouldBlock && started.elapsed() < IO_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut buf = [0u8; MESSAGE_BYTES];
    loop {
        match stream.read_exact(&mut buf) {
            Ok(()) => stream.write_all(&buf)?,
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

fn round_trips(
    stream: &mut TcpStream,
    count: u64,
    lat: Option<&mut Latencies>,
) -> std::io::Result<()> {
    let mut out = [0u8; MESSAGE_BYTES];
    let mut back = [0u8; MESSAGE_BYTES];
    let mut lat = lat;
    for i in 0..count {
        out.copy_from_slice(&i.to_le_bytes());
        let start = Instant::now();
        stream.write_all(&out)?;
        stream.read_exact(&mut back)?;
        if let Some(lat) = lat.as_deref_mut() {
            lat.record(start.elapsed());
        }
        if back != out {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                "echo differs from message",
            ));
        }
    }
    Ok(())
}

/// Measure `count` echo round trips from the calling thread to a server thread pinned
/// to `server_core`.
pub fn run(workload: &str, count: u64, server_core: usize, timer_ns: u64) -> Result<Record, Error> {
    assert!(count > 0, "at least one round trip");
    eprintln!("[{workload}] loopback TCP echo, {MESSAGE_BYTES} B: {count} round trips");
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("binding the TCP echo server on 127.0.0.1", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("reading the TCP echo server's address", e))?;
    let server = std::thread::Builder::new()
        .name("tcp-echo".into())
        .spawn(move || serve(listener, server_core))
        .map_err(|e| Error::io("starting the TCP echo thread", e))?;
    let measured = (|| {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        round_trips(&mut stream, WARMUP_ROUND_TRIPS, None)?;
        let mut lat = Latencies::new();
        let started = Instant::now();
        round_trips(&mut stream, count, Some(&mut lat))?;
        Ok::<_, std::io::Error>((lat, started.elapsed()))
        // The stream closes here: the server sees EOF and returns.
    })();
    let served = server.join().expect("the TCP echo thread does not panic");
    let (lat, elapsed) = measured.map_err(|e| Error::io(format!("TCP echo client ({addr})"), e))?;
    served.map_err(|e| Error::io(format!("TCP echo server ({addr})"), e))?;
    let record = Record::from_latencies(
        workload,
        SYSTEM,
        params([
            ("message_bytes", MESSAGE_BYTES.into()),
            ("round_trips", count.into()),
            ("timing", "per-call".into()),
            ("timer_overhead_ns", timer_ns.into()),
        ]),
        &lat,
        Some(count as f64 / elapsed.as_secs_f64()),
    );
    report::progress(&record);
    Ok(record)
}
