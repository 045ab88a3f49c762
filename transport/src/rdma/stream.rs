//! A byte stream over an [`RdmaConnection`]: how tabosd's RDMA driver
//! ([`super::driver`]) and a client's RDMA link carry the network handshake and frames.
//!
//! 1. The client connects over TCP. The server accepts and at once writes its
//!    [`QpEndpoint`](super::QpEndpoint); the client answers with its own
//!    ([`RdmaConnection::connect_over`]).
//! 2. The server moves its queue pair to RTR and RTS and writes one [`READY_BYTE`]; the
//!    client ([`dial`]) waits for that byte before its first SEND, so no message reaches
//!    a queue pair that cannot take it yet.
//! 3. From then on the TCP connection carries nothing: it only tells each side that the
//!    other is gone (end of stream). Everything else, the network handshake of
//!    [`crate::net`] included, is a byte stream cut into RDMA messages of at most
//!    [`RdmaConnection::max_message_bytes`] ([`send_stream`]); the receiver appends each
//!    message to its stream ([`RdmaConnection::recv_bytes`]). Frames are
//!    self-delimiting, so where the stream is cut does not matter, and the reader of the
//!    stream validates it exactly as it validates a TCP stream.

use super::{QpState, RdmaConfig, RdmaConnection, RdmaError};
use crate::wire::HEADER_SIZE;
use std::io::{self, Read, Write};

/// The byte the accepting side writes on TCP once its queue pair can receive.
pub const READY_BYTE: u8 = 0xA5;

/// Bytes of one stream message (and of each slot) on stream connections: 64 KiB.
pub const STREAM_MESSAGE_BYTES: usize = 64 << 10;

/// Receive (and send) slots of a stream connection: 1 MiB in flight each way, and
/// 2 MiB of registered (locked) memory per connection on each side.
pub const STREAM_SLOT_COUNT: u32 = 16;

/// The connection shape tabosd and clients use for byte streams: slots of
/// [`STREAM_MESSAGE_BYTES`], [`STREAM_SLOT_COUNT`] of each kind, device from the
/// defaults (apply [`RdmaConfig::with_env`] to pick another).
pub fn stream_config() -> RdmaConfig {
    let config = RdmaConfig {
        max_payload_bytes: (STREAM_MESSAGE_BYTES - HEADER_SIZE) as u32,
        recv_slot_count: STREAM_SLOT_COUNT,
        send_slot_count: STREAM_SLOT_COUNT,
        ..RdmaConfig::default()
    };
    assert_eq!(
        crate::wire::frame_size(config.max_payload_bytes as usize),
        STREAM_MESSAGE_BYTES
    );
    config
}

/// Whatever takes whole messages of bounded size: an [`RdmaConnection`], or a model of
/// one in tests.
pub trait MessageSink {
    /// Largest message [`MessageSink::try_send`] takes.
    fn max_message_bytes(&self) -> usize;
    /// Send one message of 1..=max bytes; `Ok(false)` when there is no room now
    /// (nothing sent).
    fn try_send(&mut self, message: &[u8]) -> Result<bool, RdmaError>;
}

impl MessageSink for RdmaConnection {
    fn max_message_bytes(&self) -> usize {
        RdmaConnection::max_message_bytes(self)
    }

    fn try_send(&mut self, message: &[u8]) -> Result<bool, RdmaError> {
        self.send_bytes(message)
    }
}

/// Send the front of `out` as messages of at most the sink's maximum, in order, until
/// `out` is empty or the sink has no room. Sent bytes leave `out`; the rest stays for
/// the next call. Returns how many messages went out. An `Err` means the connection
/// broke (what was sent before it is gone from `out`).
pub fn send_stream<S: MessageSink + ?Sized>(
    sink: &mut S,
    out: &mut Vec<u8>,
) -> Result<usize, RdmaError> {
    let max = sink.max_message_bytes();
    assert!(max > 0, "send_stream on a sink that takes nothing");
    let before = out.len();
    let mut sent = 0;
    let mut messages = 0;
    let result = loop {
        if sent == out.len() {
            break Ok(());
        }
        let end = (sent + max).min(out.len());
        match sink.try_send(&out[sent..end]) {
            Ok(true) => {
                sent = end;
                messages += 1;
            }
            Ok(false) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    out.drain(..sent);
    assert_eq!(out.len() + sent, before);
    assert!(messages <= sent.div_ceil(max));
    result.map(|()| messages)
}

/// The connecting side's set-up over `stream` (a TCP connection, with a read timeout
/// set by the caller): create a connection on the device of `config`, exchange
/// endpoints, and wait for the peer's [`READY_BYTE`]. The connection is then in RTS and
/// carries a byte stream; `stream` stays open as the liveness channel.
pub fn dial<S: Read + Write>(
    stream: &mut S,
    config: &RdmaConfig,
) -> Result<RdmaConnection, RdmaError> {
    let mut conn = RdmaConnection::create(config)?;
    conn.connect_over(stream)?;
    let mut ready = [0u8; 1];
    stream.read_exact(&mut ready).map_err(RdmaError::Exchange)?;
    if ready[0] != READY_BYTE {
        return Err(RdmaError::Exchange(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "the peer answered {:#04x} instead of confirming its queue pair",
                ready[0]
            ),
        )));
    }
    assert_eq!(conn.state(), QpState::Rts);
    assert!(conn.max_message_bytes() > HEADER_SIZE);
    Ok(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Takes at most `room` messages of up to `max` bytes.
    struct Model {
        max: usize,
        room: usize,
        got: Vec<Vec<u8>>,
    }

    impl MessageSink for Model {
        fn max_message_bytes(&self) -> usize {
            self.max
        }

        fn try_send(&mut self, message: &[u8]) -> Result<bool, RdmaError> {
            assert!(!message.is_empty() && message.len() <= self.max);
            if self.room == 0 {
                return Ok(false);
            }
            self.room -= 1;
            self.got.push(message.to_vec());
            Ok(true)
        }
    }

    #[test]
    fn a_full_sink_keeps_the_rest() {
        let mut sink = Model {
            max: 4,
            room: 2,
            got: Vec::new(),
        };
        let mut out = b"abcdefghij".to_vec();
        assert_eq!(send_stream(&mut sink, &mut out).unwrap(), 2);
        assert_eq!(out, b"ij");
        assert_eq!(sink.got, vec![b"abcd".to_vec(), b"efgh".to_vec()]);
        sink.room = 5;
        assert_eq!(send_stream(&mut sink, &mut out).unwrap(), 1);
        assert!(out.is_empty());
        assert_eq!(send_stream(&mut sink, &mut out).unwrap(), 0);
    }

    #[test]
    fn stream_slots_are_64_kib() {
        let config = stream_config();
        let layout = super::super::SlotLayout::new(
            config.max_payload_bytes,
            config.recv_slot_count,
            config.send_slot_count,
        )
        .unwrap();
        assert_eq!(layout.slot_bytes, STREAM_MESSAGE_BYTES);
    }
}
