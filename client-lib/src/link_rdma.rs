//! The RDMA link: a client's connection to a node that serves remote calls over RDMA
//! verbs (`net = "rdma"` in its cluster file entry, or a target `rdma://HOST:PORT`).
//!
//! Set-up follows [`tabos_transport::rdma::stream`]: a TCP connection, the exchange of
//! queue-pair endpoints over it ([`dial`]), then the same network handshake as
//! [`crate::link_net`] (NetHello → NetChallenge → NetProof → Welcome) and then frames,
//! all as a byte stream cut into RDMA messages. The TCP connection stays open and
//! silent: its end tells the client the node is gone.
//!
//! The device is the first one, or the one `TABOS_RDMA_DEVICE` names
//! (`TABOS_RDMA_PORT`, `TABOS_RDMA_GID_INDEX` as for tabosd). Waiting is a short busy
//! poll of the completion queue, then `poll(2)` on its completion channel and the TCP
//! connection.

use crate::client::Completion;
use crate::error::Error;
use crate::link_net::{
    client_handshake, connect_tcp, stash_frames, HandshakeIo, HANDSHAKE_TIMEOUT,
};
use crate::link_shm::{LIVENESS_CHECK, SPIN};
use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use tabos_transport::doorbell::{poll_fds, pollfd_in};
use tabos_transport::handshake::Welcome;
use tabos_transport::net::{encode_frame, FrameReader};
use tabos_transport::rdma::stream::STREAM_SLOT_COUNT;
use tabos_transport::rdma::{dial, send_stream, stream_config, RdmaConnection, RdmaError};
use tabos_transport::wire::Header;

/// Most request bytes a client buffers before it sends them.
const OUT_BYTES_MAX: usize = 4 << 20;
/// Most bytes the node may send before its welcome is complete.
const HANDSHAKE_BYTES_MAX: usize = 4096;
/// How long to look for the node's last messages once its TCP connection has ended
/// (they land before it closes, but the completion may trail the end of stream).
const LAST_LOOK: Duration = Duration::from_millis(20);
/// One wait step while the handshake is under way.
const HANDSHAKE_STEP: Duration = Duration::from_millis(10);

/// A client's RDMA connection to a node.
#[derive(Debug)]
pub(crate) struct RdmaLink {
    conn: RdmaConnection,
    /// Silent after set-up: its end says the node is gone.
    stream: TcpStream,
    target: String,
    out: Vec<u8>,
    reader: FrameReader,
    /// One received message.
    message: Vec<u8>,
}

/// The handshake as messages of the RDMA byte stream; bytes after the welcome stay
/// in `inbox` for the frame reader.
struct RdmaHandshake<'a> {
    link: &'a mut RdmaLink,
    inbox: Vec<u8>,
    deadline: Instant,
}

impl HandshakeIo for RdmaHandshake<'_> {
    fn send_all(&mut self, bytes: &[u8]) -> Result<(), Error> {
        self.link.send_now(bytes, self.deadline)
    }

    fn recv_msg<T: bytemuck::Pod>(&mut self) -> Result<T, Error> {
        self.link.read_msg(&mut self.inbox, self.deadline)
    }
}

impl RdmaLink {
    /// Connect to `target` (HOST:PORT) over RDMA, prove `secret`, and read the welcome.
    pub(crate) fn connect(
        target: &str,
        secret: &[u8],
        act_as: Option<&str>,
    ) -> Result<(RdmaLink, Welcome), Error> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::Transport(format!("{what} {target}: {e}"))
        };
        let mut stream = connect_tcp(target, "is it running with --listen and --net rdma?")?;
        let config = stream_config()
            .with_env()
            .map_err(|e| fail("RDMA settings for", &e))?;
        let conn = dial(&mut stream, &config).map_err(|e| match e {
            // The node answered, but not with an endpoint: likely a TCP node.
            RdmaError::Exchange(_) | RdmaError::Endpoint(_) => fail(
                "RDMA set-up with tabosd at",
                &format!("{e} (does the node serve --net rdma?)"),
            ),
            e => fail("RDMA set-up with tabosd at", &e),
        })?;
        stream
            .set_nonblocking(true)
            .map_err(|e| fail("socket option on", &e))?;
        let mut link = RdmaLink {
            conn,
            stream,
            target: target.to_string(),
            out: Vec::with_capacity(64 * 1024),
            reader: FrameReader::new(0),
            message: Vec::new(),
        };
        let mut handshake = RdmaHandshake {
            link: &mut link,
            inbox: Vec::new(),
            deadline: Instant::now() + HANDSHAKE_TIMEOUT,
        };
        let welcome = client_handshake(&mut handshake, target, secret, act_as)?;
        let inbox = handshake.inbox;
        link.reader = FrameReader::new(welcome.max_payload_bytes as usize + 4096);
        link.reader.extend(&inbox);
        Ok((link, welcome))
    }

    fn broken(&self, what: &dyn std::fmt::Display) -> Error {
        Error::Transport(format!(
            "RDMA connection to tabosd at {} broke: {what}",
            self.target
        ))
    }

    /// Whether the node's TCP connection has ended. Bytes on it break the protocol.
    fn peer_gone(&mut self) -> Result<bool, Error> {
        let mut scratch = [0u8; 16];
        loop {
            match self.stream.read(&mut scratch) {
                Ok(0) => return Ok(true),
                Ok(_) => {
                    return Err(self.broken(&"the node wrote on the liveness connection"));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Ok(true),
            }
        }
    }

    /// Take one received message into `into`; `false` when none has arrived.
    fn take_message(&mut self, into: &mut Vec<u8>) -> Result<bool, Error> {
        match self.conn.recv_bytes(&mut self.message) {
            Ok(true) => {
                into.extend_from_slice(&self.message);
                Ok(true)
            }
            Ok(false) => Ok(false),
            Err(e) => Err(self.broken(&e)),
        }
    }

    /// Send `bytes` during the handshake, waiting for send slots until `deadline`.
    fn send_now(&mut self, bytes: &[u8], deadline: Instant) -> Result<(), Error> {
        let mut out = bytes.to_vec();
        while !out.is_empty() {
            let sent = send_stream(&mut self.conn, &mut out).map_err(|e| self.broken(&e))?;
            if out.is_empty() || sent > 0 {
                continue;
            }
            if Instant::now() >= deadline || self.peer_gone()? {
                return Err(self.broken(&"the handshake could not be sent"));
            }
            self.conn
                .wait(HANDSHAKE_STEP)
                .map_err(|e| self.broken(&e))?;
        }
        Ok(())
    }

    /// The next handshake message of type `T` from the stream, waiting until
    /// `deadline`. Bytes after it stay in `inbox`.
    fn read_msg<T: bytemuck::Pod>(
        &mut self,
        inbox: &mut Vec<u8>,
        deadline: Instant,
    ) -> Result<T, Error> {
        let size = std::mem::size_of::<T>();
        while inbox.len() < size {
            if self.take_message(inbox)? {
                if inbox.len() > HANDSHAKE_BYTES_MAX {
                    return Err(self.broken(&"the node sent too much during the handshake"));
                }
                continue;
            }
            if self.peer_gone()? {
                self.conn.wait(LAST_LOOK).map_err(|e| self.broken(&e))?;
                if self.take_message(inbox)? {
                    continue;
                }
                return Err(self.broken(&"the node closed the connection"));
            }
            if Instant::now() >= deadline {
                return Err(self.broken(&"the handshake timed out"));
            }
            self.conn
                .wait(HANDSHAKE_STEP)
                .map_err(|e| self.broken(&e))?;
        }
        let msg = bytemuck::pod_read_unaligned(&inbox[..size]);
        inbox.drain(..size);
        Ok(msg)
    }

    /// Queue a frame; `Ok(false)` when the send buffer is full (flush and collect first).
    pub(crate) fn try_push(&mut self, header: Header, args: &[u8]) -> Result<bool, Error> {
        if !self.out.is_empty() && self.out.len() + args.len() > OUT_BYTES_MAX {
            return Ok(false);
        }
        encode_frame(&mut self.out, &header, args);
        Ok(true)
    }

    /// Send everything queued; when every send slot is in flight, read replies into
    /// `stash` meanwhile, so a node that is itself waiting to send to us can go on.
    pub(crate) fn flush(&mut self, stash: &mut VecDeque<Completion>) -> Result<(), Error> {
        while !self.out.is_empty() {
            let sent = send_stream(&mut self.conn, &mut self.out).map_err(|e| self.broken(&e))?;
            if self.out.is_empty() || sent > 0 {
                continue;
            }
            self.collect(stash)?;
            let progressed = self
                .conn
                .wait(LIVENESS_CHECK)
                .map_err(|e| self.broken(&e))?;
            if !progressed && self.peer_gone()? {
                return Err(self.broken(&"the node closed the connection"));
            }
        }
        Ok(())
    }

    /// Take what has arrived and move every complete reply into `stash`.
    pub(crate) fn collect(&mut self, stash: &mut VecDeque<Completion>) -> Result<usize, Error> {
        // At most two slot counts of messages per call, so a chatty node cannot keep
        // this loop going for ever.
        for _ in 0..2 * STREAM_SLOT_COUNT {
            match self.conn.recv_bytes(&mut self.message) {
                Ok(true) => self.reader.extend(&self.message),
                Ok(false) => break,
                Err(e) => return Err(self.broken(&e)),
            }
        }
        let mut found = 0;
        found += stash_frames(&mut self.reader, stash).map_err(|e| self.broken(&e))?;
        Ok(found)
    }

    /// Wait until a reply has arrived (moved into `stash`): poll the completion queue a
    /// little, then arm it and sleep in poll(2) on its channel and the TCP connection.
    pub(crate) fn block_until_reply(
        &mut self,
        stash: &mut VecDeque<Completion>,
    ) -> Result<(), Error> {
        let started = Instant::now();
        while started.elapsed() < SPIN {
            if self.collect(stash)? > 0 {
                return Ok(());
            }
            std::hint::spin_loop();
        }
        loop {
            if self.conn.arm().map_err(|e| self.broken(&e))? {
                if self.collect(stash)? > 0 {
                    return Ok(());
                }
                continue;
            }
            let mut liveness = pollfd_in(self.stream.as_raw_fd());
            liveness.events |= libc::POLLRDHUP;
            let mut fds = [pollfd_in(self.conn.completion_fd().as_raw_fd()), liveness];
            poll_fds(&mut fds, LIVENESS_CHECK.as_millis() as i32).map_err(|e| self.broken(&e))?;
            if self.collect(stash)? > 0 {
                return Ok(());
            }
            if fds[1].revents != 0 && self.peer_gone()? {
                self.conn.wait(LAST_LOOK).map_err(|e| self.broken(&e))?;
                if self.collect(stash)? > 0 {
                    return Ok(());
                }
                return Err(self.broken(&"the node closed the connection"));
            }
        }
    }
}
