//! Frames over a byte stream (TCP) and the network handshake.
//!
//! The stream carries the same frames as the rings: a [`Header`] and its payload,
//! back to back (no ring padding). The handshake proves the cluster's shared secret
//! without sending it:
//!
//! 1. client → server [`NetHello`]: protocol version, auth method, role (client or
//!    peer node), and the user to act as;
//! 2. server → client [`NetChallenge`]: a fresh random nonce (or a refusal status);
//! 3. client → server [`NetProof`]: HMAC-SHA256(secret, context ‖ nonce ‖ hello);
//! 4. server → client [`crate::handshake::Welcome`]: accepted (status 0) or refused.
//!
//! `auth_method` names the scheme, so real authentication (per-user keys, TLS
//! channel binding) fits in as another method without changing the frame format.

pub mod poll;
pub mod server;
pub mod uring;

use crate::wire::{Header, FLAGS_KNOWN, FLAG_PAD, FRAME_MAGIC, HEADER_SIZE};
use bytemuck::{Pod, Zeroable};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::{self, Read};
use std::path::Path;

/// Magic of network handshake messages.
pub const NET_MAGIC: u32 = 0x5442_4F4E; // "TBON"
/// Proof of a shared secret by HMAC-SHA256 over a server nonce.
pub const AUTH_SHARED_SECRET: u32 = 1;
/// The connecting side is a task (client).
pub const ROLE_CLIENT: u32 = 0;
/// The connecting side is another node of the cluster.
pub const ROLE_PEER: u32 = 1;
/// Shortest accepted secret.
pub const SECRET_BYTES_MIN: usize = 16;

/// Client to server, first message.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetHello {
    /// [`NET_MAGIC`].
    pub magic: u32,
    /// [`crate::wire::PROTOCOL_VERSION`].
    pub version: u32,
    /// How the client proves who it is ([`AUTH_SHARED_SECRET`]).
    pub auth_method: u32,
    /// [`ROLE_CLIENT`] or [`ROLE_PEER`].
    pub role: u32,
    /// Bytes of `act_as` in use; zero acts as user "remote".
    pub act_as_len: u32,
    /// Reserved; zero.
    pub reserved: u32,
    /// User the connection acts as, UTF-8.
    pub act_as: [u8; 32],
}
const _: () = assert!(std::mem::size_of::<NetHello>() == 56);

impl NetHello {
    /// A client hello acting as `act_as` (or as user "remote").
    pub fn new(role: u32, act_as: Option<&str>) -> NetHello {
        let mut hello = NetHello {
            magic: NET_MAGIC,
            version: crate::wire::PROTOCOL_VERSION,
            auth_method: AUTH_SHARED_SECRET,
            role,
            ..NetHello::default()
        };
        if let Some(name) = act_as {
            let n = name.len().min(hello.act_as.len());
            hello.act_as[..n].copy_from_slice(&name.as_bytes()[..n]);
            hello.act_as_len = name.len() as u32;
        }
        hello
    }

    /// The user asked for; `Err(BadArgs)` when the field is malformed.
    pub fn act_as(&self) -> Result<Option<&str>, crate::Status> {
        match self.act_as_len as usize {
            0 => Ok(None),
            n if n <= self.act_as.len() => std::str::from_utf8(&self.act_as[..n])
                .map(Some)
                .map_err(|_| crate::Status::BadArgs),
            _ => Err(crate::Status::BadArgs),
        }
    }
}

/// Server to client: the nonce to prove the secret over, or a refusal.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetChallenge {
    /// [`NET_MAGIC`].
    pub magic: u32,
    /// `0` to go on; otherwise a [`crate::Status`] code saying why not.
    pub status: u32,
    /// Fresh random bytes.
    pub nonce: [u8; 32],
}
const _: () = assert!(std::mem::size_of::<NetChallenge>() == 40);

/// Client to server: the proof.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct NetProof {
    /// [`NET_MAGIC`].
    pub magic: u32,
    /// Reserved; zero.
    pub reserved: u32,
    /// HMAC-SHA256(secret, context ‖ nonce ‖ hello).
    pub mac: [u8; 32],
}
const _: () = assert!(std::mem::size_of::<NetProof>() == 40);

fn mac_for(secret: &[u8], nonce: &[u8; 32], hello: &NetHello) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(b"tabos-net-v1");
    mac.update(nonce);
    mac.update(bytemuck::bytes_of(hello));
    mac
}

/// The proof a client sends for `nonce`.
pub fn prove(secret: &[u8], nonce: &[u8; 32], hello: &NetHello) -> NetProof {
    let tag = mac_for(secret, nonce, hello).finalize().into_bytes();
    let mut proof = NetProof {
        magic: NET_MAGIC,
        ..NetProof::default()
    };
    proof.mac.copy_from_slice(&tag);
    proof
}

/// Whether `proof` shows knowledge of `secret` (constant-time comparison).
pub fn verify(secret: &[u8], nonce: &[u8; 32], hello: &NetHello, proof: &NetProof) -> bool {
    proof.magic == NET_MAGIC
        && mac_for(secret, nonce, hello)
            .verify_slice(&proof.mac)
            .is_ok()
}

/// A fresh random nonce from the kernel.
pub fn fresh_nonce() -> io::Result<[u8; 32]> {
    let mut nonce = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut nonce)?;
    Ok(nonce)
}

/// Read a cluster secret file: its bytes, without one trailing newline; at least
/// [`SECRET_BYTES_MIN`] bytes.
pub fn read_secret_file(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = std::fs::read(path)
        .map_err(|e| format!("cannot read secret file {}: {e}", path.display()))?;
    if bytes.last() == Some(&b'\n') {
        bytes.pop();
    }
    if bytes.len() < SECRET_BYTES_MIN {
        return Err(format!(
            "secret file {} holds {} bytes; use at least {SECRET_BYTES_MIN} (e.g. `head -c 32 /dev/urandom | base64 > FILE`)",
            path.display(),
            bytes.len()
        ));
    }
    Ok(bytes)
}

/// Why a stream was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// The header does not start with [`FRAME_MAGIC`].
    BadMagic,
    /// Unknown or ring-only flags on a stream frame.
    BadFlags,
    /// The payload is longer than the node accepts.
    TooLarge {
        /// Claimed payload length.
        len: u32,
        /// Largest accepted.
        max: usize,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::BadMagic => write!(f, "frame without magic (not a tabos peer, or garbage)"),
            FrameError::BadFlags => write!(f, "frame with unknown flags"),
            FrameError::TooLarge { len, max } => {
                write!(f, "frame of {len} bytes exceeds the maximum of {max}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// Append one frame to a stream buffer.
pub fn encode_frame(out: &mut Vec<u8>, header: &Header, payload: &[u8]) {
    debug_assert_eq!(header.payload_len as usize, payload.len());
    out.extend_from_slice(bytemuck::bytes_of(header));
    out.extend_from_slice(payload);
}

/// Splits a received byte stream into validated frames.
///
/// The buffer is sized once and reused: bytes `start..end` are received and not yet
/// returned; reads go straight into the room after `end`.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    start: usize,
    end: usize,
    last_start: usize,
    max_payload: usize,
}

impl FrameReader {
    /// A reader that refuses payloads over `max_payload` bytes.
    pub fn new(max_payload: usize) -> FrameReader {
        FrameReader {
            buf: vec![0; 64 * 1024],
            start: 0,
            end: 0,
            last_start: 0,
            max_payload,
        }
    }

    /// Make room for `n` more bytes after `end`, moving unread bytes to the front
    /// first and growing only when that is not enough.
    fn ensure_room(&mut self, n: usize) {
        if self.buf.len() - self.end >= n {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            self.last_start = 0;
        }
        if self.buf.len() - self.end < n {
            let want = (self.end + n).max(2 * self.buf.len());
            self.buf.resize(want, 0);
        }
    }

    /// Append received bytes.
    pub fn extend(&mut self, bytes: &[u8]) {
        self.ensure_room(bytes.len());
        self.buf[self.end..self.end + bytes.len()].copy_from_slice(bytes);
        self.end += bytes.len();
    }

    /// Room of at least `min` bytes for a read straight into the buffer; then call
    /// [`FrameReader::commit`] with the number of bytes read.
    pub fn spare(&mut self, min: usize) -> &mut [u8] {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            self.last_start = 0;
        }
        self.ensure_room(min);
        &mut self.buf[self.end..]
    }

    /// After a read into [`FrameReader::spare`]: keep `filled` of those bytes.
    pub fn commit(&mut self, filled: usize) {
        assert!(
            self.end + filled <= self.buf.len(),
            "committed more than the spare room"
        );
        self.end += filled;
    }

    /// Bytes received and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// Put the frame last returned by [`FrameReader::next_frame`] back, to be returned
    /// again (when it could not be handed on yet).
    pub fn unread_last(&mut self) {
        self.start = self.last_start;
    }

    /// The next complete frame, if one is buffered. The header is validated before
    /// the payload is awaited, so a lying length is caught at once.
    pub fn next_frame(&mut self) -> Result<Option<(Header, &[u8])>, FrameError> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < HEADER_SIZE {
            return Ok(None);
        }
        let header: Header = bytemuck::pod_read_unaligned(&avail[..HEADER_SIZE]);
        if header.magic != FRAME_MAGIC {
            return Err(FrameError::BadMagic);
        }
        if header.flags & !FLAGS_KNOWN != 0 || header.flags & FLAG_PAD != 0 {
            return Err(FrameError::BadFlags);
        }
        let len = header.payload_len as usize;
        if len > self.max_payload {
            return Err(FrameError::TooLarge {
                len: header.payload_len,
                max: self.max_payload,
            });
        }
        if avail.len() < HEADER_SIZE + len {
            return Ok(None);
        }
        let begin = self.start + HEADER_SIZE;
        self.last_start = self.start;
        self.start = begin + len;
        Ok(Some((header, &self.buf[begin..begin + len])))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn proofs_verify_only_with_the_secret() {
        let hello = NetHello::new(ROLE_CLIENT, Some("alice"));
        let nonce = fresh_nonce().unwrap();
        let proof = prove(b"0123456789abcdef", &nonce, &hello);
        assert!(verify(b"0123456789abcdef", &nonce, &hello, &proof));
        assert!(!verify(b"0123456789abcdeX", &nonce, &hello, &proof));
        let other = NetHello::new(ROLE_CLIENT, Some("root"));
        assert!(
            !verify(b"0123456789abcdef", &nonce, &other, &proof),
            "proof binds the hello"
        );
        assert_eq!(hello.act_as(), Ok(Some("alice")));
    }

    #[test]
    fn frames_split_at_any_boundary() {
        let mut stream = Vec::new();
        for i in 0..100u64 {
            let payload = vec![i as u8; (i * 7) as usize];
            encode_frame(
                &mut stream,
                &Header::request(i, 1, 0, payload.len() as u32),
                &payload,
            );
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut reader = FrameReader::new(1 << 20);
        let mut next = 0u64;
        let mut pos = 0;
        while pos < stream.len() {
            let n = rng.gen_range(1..200).min(stream.len() - pos);
            reader.extend(&stream[pos..pos + n]);
            pos += n;
            while let Some((h, p)) = reader.next_frame().unwrap() {
                assert_eq!(h.request_id, next);
                assert_eq!(p.len(), (next * 7) as usize);
                next += 1;
            }
        }
        assert_eq!(next, 100);
        assert_eq!(reader.buffered(), 0);
    }

    #[test]
    fn garbage_and_oversized_frames_are_refused() {
        let mut reader = FrameReader::new(1024);
        reader.extend(&[0xAB; 64]);
        assert_eq!(reader.next_frame().unwrap_err(), FrameError::BadMagic);
        let mut reader = FrameReader::new(1024);
        let mut stream = Vec::new();
        encode_frame(&mut stream, &Header::request(1, 1, 0, 0), &[]);
        stream[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        reader.extend(&stream);
        assert!(matches!(
            reader.next_frame(),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn reading_into_spare_room_works() {
        let mut reader = FrameReader::new(1024);
        let mut stream = Vec::new();
        encode_frame(&mut stream, &Header::request(5, 1, 0, 3), b"abc");
        let spare = reader.spare(stream.len());
        spare[..stream.len()].copy_from_slice(&stream);
        reader.commit(stream.len());
        let (h, p) = reader.next_frame().unwrap().unwrap();
        assert_eq!((h.request_id, p), (5, &b"abc"[..]));
    }
}
