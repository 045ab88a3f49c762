//! The network link: frames over one TCP connection to a node, after this client
//! proved the cluster's shared secret.
//!
//! Client-side I/O is plain non-blocking `send`/`recv` with a short busy poll before
//! `poll(2)`: one connection per client thread has nothing to batch across, so
//! io_uring buys a client nothing over a syscall per flush and per read (the server,
//! which multiplexes every connection, is where io_uring pays). `tabos-bench invoke
//! --net tcp` measures the round trip this gives.

use crate::client::Completion;
use crate::error::Error;
use crate::link_shm::{spin_or_yield, LIVENESS_CHECK, SPIN};
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::{AsFd, AsRawFd};
use std::time::{Duration, Instant};
use tabos_transport::doorbell::{poll_fds, pollfd_in};
use tabos_transport::handshake::{Welcome, HANDSHAKE_MAGIC};
use tabos_transport::net::{
    encode_frame, prove, FrameReader, NetChallenge, NetHello, NET_MAGIC, ROLE_CLIENT,
};
use tabos_transport::wire::{Header, PROTOCOL_VERSION};

/// Move every complete frame buffered in `reader` into `stash` as a completion.
pub(crate) fn stash_frames(
    reader: &mut FrameReader,
    stash: &mut VecDeque<Completion>,
) -> Result<usize, tabos_transport::net::FrameError> {
    let mut found = 0;
    while let Some((h, payload)) = reader.next_frame()? {
        stash.push_back(Completion {
            request_id: h.request_id,
            partition: h.partition,
            status_code: h.status,
            reply: payload.to_vec(),
        });
        found += 1;
    }
    Ok(found)
}

/// Most requests a network client keeps in flight before it waits for replies.
pub(crate) const NET_WINDOW: usize = 4096;
/// Most request bytes a network client buffers before it sends them.
const OUT_BYTES_MAX: usize = 4 << 20;

/// A client's TCP connection to a node.
#[derive(Debug)]
pub(crate) struct NetLink {
    stream: TcpStream,
    target: String,
    out: Vec<u8>,
    reader: FrameReader,
}

/// How a link moves the handshake's fixed-size messages (TCP directly, RDMA as
/// messages of its byte stream); [`client_handshake`] is the same over both.
pub(crate) trait HandshakeIo {
    /// Send all of `bytes`.
    fn send_all(&mut self, bytes: &[u8]) -> Result<(), Error>;
    /// Receive exactly one message of type `T`.
    fn recv_msg<T: bytemuck::Pod>(&mut self) -> Result<T, Error>;
}

/// The client's side of the network handshake: NetHello, NetChallenge, NetProof
/// (HMAC of the node's nonce with `secret`), Welcome. Errors name `target` and say
/// what to check.
pub(crate) fn client_handshake(
    io: &mut impl HandshakeIo,
    target: &str,
    secret: &[u8],
    act_as: Option<&str>,
) -> Result<Welcome, Error> {
    let fail =
        |what: &str, e: &dyn std::fmt::Display| Error::Transport(format!("{what} {target}: {e}"));
    let refused = |code: u32, hint: &str| {
        Error::Transport(format!(
            "tabosd at {target} refused the connection: {}{hint}",
            Error::from_code(code)
        ))
    };
    let hello = NetHello::new(ROLE_CLIENT, act_as);
    io.send_all(bytemuck::bytes_of(&hello))?;
    let challenge: NetChallenge = io.recv_msg()?;
    if challenge.magic != NET_MAGIC {
        return Err(fail("handshake with", &"not a tabos node (bad magic)"));
    }
    if challenge.status != 0 {
        return Err(refused(challenge.status, ""));
    }
    let proof = prove(secret, &challenge.nonce, &hello);
    io.send_all(bytemuck::bytes_of(&proof))?;
    let welcome: Welcome = io.recv_msg().map_err(|e| {
        Error::Transport(format!(
            "{e} (a node closes the connection on a wrong secret)"
        ))
    })?;
    if welcome.magic != HANDSHAKE_MAGIC || welcome.version != PROTOCOL_VERSION {
        return Err(fail(
            "handshake with",
            &"server speaks another protocol version",
        ));
    }
    if welcome.status != 0 {
        return Err(refused(welcome.status, " (check --secret-file)"));
    }
    Ok(welcome)
}

/// A TCP connection to `target` (HOST:PORT) with Nagle off and the handshake's
/// timeouts set; `hint` ends the error when nothing answers.
pub(crate) fn connect_tcp(target: &str, hint: &str) -> Result<TcpStream, Error> {
    let fail =
        |what: &str, e: &dyn std::fmt::Display| Error::Transport(format!("{what} {target}: {e}"));
    let addrs: Vec<_> = target
        .to_socket_addrs()
        .map_err(|e| fail("cannot resolve", &e))?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(stream) => {
                stream
                    .set_nodelay(true)
                    .and_then(|()| stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT)))
                    .and_then(|()| stream.set_write_timeout(Some(HANDSHAKE_TIMEOUT)))
                    .map_err(|e| fail("socket option on", &e))?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    let e = last.map_or("no address".to_string(), |e| e.to_string());
    Err(Error::Transport(format!(
        "cannot connect to tabosd at {target}: {e} ({hint})"
    )))
}

/// How long connecting and the handshake may take.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The handshake over a blocking TCP stream; I/O errors name `target`.
struct TcpHandshake<'a> {
    stream: &'a mut TcpStream,
    target: &'a str,
}

impl HandshakeIo for TcpHandshake<'_> {
    fn send_all(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.stream
            .write_all(bytes)
            .map_err(|e| Error::Transport(format!("handshake with {}: {e}", self.target)))
    }

    fn recv_msg<T: bytemuck::Pod>(&mut self) -> Result<T, Error> {
        let mut raw = vec![0u8; std::mem::size_of::<T>()];
        self.stream
            .read_exact(&mut raw)
            .map_err(|e| Error::Transport(format!("handshake with {}: {e}", self.target)))?;
        Ok(bytemuck::pod_read_unaligned(&raw))
    }
}

impl NetLink {
    /// Connect to `target` (HOST:PORT), prove `secret`, and read the welcome.
    pub(crate) fn connect(
        target: &str,
        secret: &[u8],
        act_as: Option<&str>,
    ) -> Result<(NetLink, Welcome), Error> {
        let mut stream = connect_tcp(target, "is it running with --listen?")?;
        let welcome = client_handshake(
            &mut TcpHandshake {
                stream: &mut stream,
                target,
            },
            target,
            secret,
            act_as,
        )?;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::Transport(format!("{what} {target}: {e}"))
        };
        stream
            .set_read_timeout(None)
            .and_then(|()| stream.set_write_timeout(None))
            .map_err(|e| fail("socket option on", &e))?;
        stream
            .set_nonblocking(true)
            .map_err(|e| fail("socket option on", &e))?;
        let reader = FrameReader::new(welcome.max_payload_bytes as usize + 4096);
        Ok((
            NetLink {
                stream,
                target: target.to_string(),
                out: Vec::with_capacity(64 * 1024),
                reader,
            },
            welcome,
        ))
    }

    fn broken(&self, what: &dyn std::fmt::Display) -> Error {
        Error::Transport(format!(
            "connection to tabosd at {} broke: {what}",
            self.target
        ))
    }

    /// Queue a frame; `Ok(false)` when the send buffer is full (flush and collect first).
    pub(crate) fn try_push(&mut self, header: Header, args: &[u8]) -> Result<bool, Error> {
        if !self.out.is_empty() && self.out.len() + args.len() > OUT_BYTES_MAX {
            return Ok(false);
        }
        encode_frame(&mut self.out, &header, args);
        Ok(true)
    }

    /// Send everything queued; reads replies meanwhile into `stash`, so a server that
    /// is itself blocked on sending to us can go on.
    pub(crate) fn flush(&mut self, stash: &mut VecDeque<Completion>) -> Result<(), Error> {
        let mut sent = 0;
        while sent < self.out.len() {
            match self.stream.write(&self.out[sent..]) {
                Ok(0) => return Err(self.broken(&"the node closed the connection")),
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.collect(stash)?;
                    let mut fds = [pollfd_in(self.stream.as_raw_fd())];
                    fds[0].events |= libc::POLLOUT;
                    poll_fds(&mut fds, LIVENESS_CHECK.as_millis() as i32)
                        .map_err(|e| self.broken(&e))?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.broken(&e)),
            }
        }
        self.out.clear();
        Ok(())
    }

    /// Read what has arrived and move every complete reply into `stash`.
    pub(crate) fn collect(&mut self, stash: &mut VecDeque<Completion>) -> Result<usize, Error> {
        let mut found = 0;
        loop {
            let spare = self.reader.spare(64 * 1024);
            match self.stream.read(spare) {
                Ok(0) => {
                    self.reader.commit(0);
                    return Err(self.broken(&"the node closed the connection"));
                }
                Ok(n) => self.reader.commit(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.reader.commit(0);
                    break;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.reader.commit(0),
                Err(e) => {
                    self.reader.commit(0);
                    return Err(self.broken(&e));
                }
            }
        }
        found += stash_frames(&mut self.reader, stash).map_err(|e| self.broken(&e))?;
        Ok(found)
    }

    /// Wait until a reply has arrived (moved into `stash`): spin on non-blocking reads a
    /// little, then sleep in poll(2).
    pub(crate) fn block_until_reply(
        &mut self,
        stash: &mut VecDeque<Completion>,
    ) -> Result<(), Error> {
        let started = Instant::now();
        let mut turns = 0u32;
        while started.elapsed() < SPIN {
            if self.collect(stash)? > 0 {
                return Ok(());
            }
            turns += 1;
            spin_or_yield(turns);
        }
        loop {
            let mut fds = [pollfd_in(self.stream.as_fd().as_raw_fd())];
            poll_fds(&mut fds, LIVENESS_CHECK.as_millis() as i32).map_err(|e| self.broken(&e))?;
            if self.collect(stash)? > 0 {
                return Ok(());
            }
        }
    }
}
