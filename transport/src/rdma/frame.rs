//! Frames in RDMA messages: one SEND carries one frame, a [`Header`] and exactly
//! `payload_len` bytes of payload, unpadded.
//!
//! A received message is bytes the peer chose. It is copied out of its receive slot
//! once and checked here like the ring consumer checks a frame (magic, known flags,
//! payload length within the maximum) and, since a message has a known length, that
//! the header's length matches it exactly. Pad frames exist only inside rings and are
//! refused here.

use crate::wire::{Header, FLAGS_KNOWN, FLAG_PAD, FRAME_MAGIC, HEADER_SIZE};

/// Why a received message is not a frame. The peer is broken or hostile: drop the
/// connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes than a header.
    Short {
        /// Bytes received.
        message_bytes: usize,
    },
    /// The first word is not [`FRAME_MAGIC`].
    BadMagic(u32),
    /// Flags outside [`FLAGS_KNOWN`].
    UnknownFlags(u32),
    /// A ring pad frame, which has no meaning on a message transport.
    PadFrame,
    /// `payload_len` exceeds the connection's maximum.
    TooLong {
        /// The header's `payload_len`.
        payload_len: u32,
        /// The connection's maximum payload.
        max_payload_bytes: usize,
    },
    /// `payload_len` disagrees with the bytes received.
    LengthMismatch {
        /// The header's `payload_len`.
        payload_len: u32,
        /// Bytes received, header included.
        message_bytes: usize,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Short { message_bytes } => {
                write!(
                    f,
                    "message of {message_bytes} bytes is shorter than a header"
                )
            }
            FrameError::BadMagic(magic) => write!(f, "bad frame magic {magic:#010x}"),
            FrameError::UnknownFlags(flags) => write!(f, "unknown frame flags {flags:#x}"),
            FrameError::PadFrame => write!(f, "pad frame outside a ring"),
            FrameError::TooLong {
                payload_len,
                max_payload_bytes,
            } => write!(
                f,
                "payload_len {payload_len} exceeds the maximum of {max_payload_bytes}"
            ),
            FrameError::LengthMismatch {
                payload_len,
                message_bytes,
            } => write!(
                f,
                "payload_len {payload_len} does not match a message of {message_bytes} bytes"
            ),
        }
    }
}

impl std::error::Error for FrameError {}

/// Check a received message and split it into its header and payload. `message` is a
/// private copy; nothing in it is trusted before this returns `Ok`.
pub fn decode_frame(
    message: &[u8],
    max_payload_bytes: usize,
) -> Result<(Header, &[u8]), FrameError> {
    let Some(raw) = message.first_chunk::<HEADER_SIZE>() else {
        return Err(FrameError::Short {
            message_bytes: message.len(),
        });
    };
    let header = check_header(raw, message.len(), max_payload_bytes)?;
    let payload = &message[HEADER_SIZE..];
    debug_assert_eq!(payload.len(), header.payload_len as usize);
    Ok((header, payload))
}

/// Check the header of a received message of `message_bytes` bytes (header included),
/// copied out as `raw`.
pub fn check_header(
    raw: &[u8; HEADER_SIZE],
    message_bytes: usize,
    max_payload_bytes: usize,
) -> Result<Header, FrameError> {
    if message_bytes < HEADER_SIZE {
        return Err(FrameError::Short { message_bytes });
    }
    let header: Header = bytemuck::pod_read_unaligned(raw);
    if header.magic != FRAME_MAGIC {
        return Err(FrameError::BadMagic(header.magic));
    }
    if header.flags & !FLAGS_KNOWN != 0 {
        return Err(FrameError::UnknownFlags(header.flags));
    }
    if header.flags & FLAG_PAD != 0 {
        return Err(FrameError::PadFrame);
    }
    if header.payload_len as usize > max_payload_bytes {
        return Err(FrameError::TooLong {
            payload_len: header.payload_len,
            max_payload_bytes,
        });
    }
    if HEADER_SIZE + header.payload_len as usize != message_bytes {
        return Err(FrameError::LengthMismatch {
            payload_len: header.payload_len,
            message_bytes,
        });
    }
    Ok(header)
}

/// The header to send before `payload_len` bytes of payload: `header` with its magic
/// and length filled in. Sending a pad frame or unknown flags is a programming error.
pub fn frame_header(header: &Header, payload_len: usize) -> Header {
    assert_eq!(header.flags & FLAG_PAD, 0, "pad frames are ring-only");
    assert_eq!(
        header.flags & !FLAGS_KNOWN,
        0,
        "unknown flags in a frame to send"
    );
    let payload_len = u32::try_from(payload_len).expect("payload length fits u32");
    Header {
        magic: FRAME_MAGIC,
        payload_len,
        ..*header
    }
}

/// A frame as the bytes of one message (tests and senders without registered memory).
pub fn encode_frame(header: &Header, payload: &[u8]) -> Vec<u8> {
    let header = frame_header(header, payload.len());
    let mut out = Vec::with_capacity(HEADER_SIZE + payload.len());
    out.extend_from_slice(bytemuck::bytes_of(&header));
    out.extend_from_slice(payload);
    assert_eq!(out.len(), HEADER_SIZE + payload.len());
    out
}
