//! The argument codec shared by clients and procedures: little-endian integers and
//! `u32`-length-prefixed byte strings, back to back, with no padding or tags.
//!
//! [`ArgReader`] decodes untrusted bytes: every malformed input gives
//! `Err(Status::BadArgs)`, never a panic, and nothing is allocated.

use tabos_transport::Status;

/// Decodes arguments from a borrowed byte slice, front to back.
#[derive(Clone, Debug)]
pub struct ArgReader<'a> {
    rest: &'a [u8],
}

impl<'a> ArgReader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        ArgReader { rest: bytes }
    }

    pub fn u8(&mut self) -> Result<u8, Status> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u32(&mut self) -> Result<u32, Status> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u64(&mut self) -> Result<u64, Status> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, Status> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A `u32` length, then that many bytes, borrowed from the input.
    pub fn bytes(&mut self) -> Result<&'a [u8], Status> {
        let len = usize::try_from(self.u32()?).map_err(|_| Status::BadArgs)?;
        self.take(len)
    }

    /// Like [`bytes`](Self::bytes), and the bytes must be UTF-8.
    pub fn str(&mut self) -> Result<&'a str, Status> {
        std::str::from_utf8(self.bytes()?).map_err(|_| Status::BadArgs)
    }

    /// All remaining bytes; the reader is empty afterwards. Never fails.
    pub fn rest(&mut self) -> Result<&'a [u8], Status> {
        Ok(std::mem::take(&mut self.rest))
    }

    /// `Err(Status::BadArgs)` if any bytes remain: call after the last argument.
    pub fn finish(self) -> Result<(), Status> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Status::BadArgs)
        }
    }

    /// Bytes not yet decoded.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], Status> {
        if len > self.rest.len() {
            return Err(Status::BadArgs);
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Status> {
        let head = self.take(N)?;
        Ok(head.try_into().expect("take returned N bytes"))
    }
}

pub fn put_u8(out: &mut Vec<u8>, value: u8) {
    out.push(value);
}

pub fn put_u32(out: &mut Vec<u8>, value: u32) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_u64(out: &mut Vec<u8>, value: u64) {
    out.extend_from_slice(&value.to_le_bytes());
}

pub fn put_i64(out: &mut Vec<u8>, value: i64) {
    out.extend_from_slice(&value.to_le_bytes());
}

/// A `u32` length, then the bytes. Panics if `bytes` is 4 GiB or longer.
pub fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = u32::try_from(bytes.len()).expect("argument longer than u32::MAX bytes");
    put_u32(out, len);
    out.extend_from_slice(bytes);
}

/// A `u32` length, then the UTF-8 bytes.
pub fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn every_type_round_trips() {
        let mut out = Vec::new();
        put_u8(&mut out, 0xab);
        put_u32(&mut out, 0xdead_beef);
        put_u64(&mut out, u64::MAX - 1);
        put_i64(&mut out, -42);
        put_bytes(&mut out, b"\x00\xff");
        put_str(&mut out, "h\u{e9}llo");
        put_bytes(&mut out, b"");
        out.extend_from_slice(b"tail");

        let mut r = ArgReader::new(&out);
        assert_eq!(r.u8(), Ok(0xab));
        assert_eq!(r.u32(), Ok(0xdead_beef));
        assert_eq!(r.u64(), Ok(u64::MAX - 1));
        assert_eq!(r.i64(), Ok(-42));
        assert_eq!(r.bytes(), Ok(&b"\x00\xff"[..]));
        assert_eq!(r.str(), Ok("h\u{e9}llo"));
        assert_eq!(r.bytes(), Ok(&b""[..]));
        assert_eq!(r.remaining(), 4);
        assert_eq!(r.clone().finish(), Err(Status::BadArgs));
        assert_eq!(r.rest(), Ok(&b"tail"[..]));
        assert_eq!(r.rest(), Ok(&b""[..]));
        assert_eq!(r.finish(), Ok(()));
    }

    #[test]
    fn layout_is_little_endian_without_padding() {
        let mut out = Vec::new();
        put_u8(&mut out, 1);
        put_u32(&mut out, 0x0403_0201);
        put_str(&mut out, "ab");
        assert_eq!(out, [1, 1, 2, 3, 4, 2, 0, 0, 0, b'a', b'b']);
    }

    #[test]
    fn short_input_is_bad_args() {
        assert_eq!(ArgReader::new(&[]).u8(), Err(Status::BadArgs));
        assert_eq!(ArgReader::new(&[1, 2, 3]).u32(), Err(Status::BadArgs));
        assert_eq!(ArgReader::new(&[0; 7]).u64(), Err(Status::BadArgs));
        assert_eq!(ArgReader::new(&[0; 7]).i64(), Err(Status::BadArgs));
        assert_eq!(ArgReader::new(&[3, 0, 0]).bytes(), Err(Status::BadArgs));
    }

    #[test]
    fn length_prefix_beyond_the_input_is_bad_args() {
        let mut out = Vec::new();
        put_u32(&mut out, u32::MAX);
        out.extend_from_slice(b"abc");
        let mut r = ArgReader::new(&out);
        assert_eq!(r.bytes(), Err(Status::BadArgs));
        assert_eq!(ArgReader::new(&out).str(), Err(Status::BadArgs));
    }

    #[test]
    fn invalid_utf8_is_bad_args() {
        let mut out = Vec::new();
        put_bytes(&mut out, &[0xff, 0xfe]);
        assert_eq!(ArgReader::new(&out).str(), Err(Status::BadArgs));
        assert_eq!(ArgReader::new(&out).bytes(), Ok(&[0xff, 0xfe][..]));
    }

    /// Random garbage never panics, and every prefix of a valid encoding fails cleanly.
    #[test]
    fn random_input_never_panics() {
        let mut rng = StdRng::seed_from_u64(7);
        for _ in 0..2000 {
            let len = rng.gen_range(0..24);
            let input: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let mut r = ArgReader::new(&input);
            for _ in 0..6 {
                let _ = match rng.gen_range(0..6) {
                    0 => r.u8().map(drop),
                    1 => r.u32().map(drop),
                    2 => r.u64().map(drop),
                    3 => r.i64().map(drop),
                    4 => r.bytes().map(drop),
                    _ => r.str().map(drop),
                };
            }
        }
        let mut out = Vec::new();
        put_u64(&mut out, 1);
        put_str(&mut out, "name");
        for cut in 0..out.len() {
            let mut r = ArgReader::new(&out[..cut]);
            let decoded = r.u64().and_then(|_| r.str());
            assert_eq!(decoded, Err(Status::BadArgs), "prefix of {cut} bytes");
        }
    }
}
