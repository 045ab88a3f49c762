//! One command-log record: a committed procedure invocation.
//!
//! ```text
//! magic u32 | body_len u32 | body | crc32c u32 (over magic, body_len and body)
//! body = lsn u64 | proc_id u32 | uid u32 | pid u32 | user_len u8 | user | args
//! ```
//! All integers little-endian. A record is valid only when its magic, length and
//! checksum all agree; the reader never trusts a length before checking it against
//! [`RECORD_BODY_BYTES_MAX`] and the bytes that exist.

use crate::crc32c;

/// First four bytes of every record ("TLOG").
pub const RECORD_MAGIC: u32 = 0x474F_4C54;
/// Bytes before the body: magic and body length.
pub const RECORD_HEADER_BYTES: usize = 8;
/// Bytes after the body: the checksum.
pub const RECORD_TRAILER_BYTES: usize = 4;
/// Fixed part of the body: lsn, proc id, uid, pid, user length.
const BODY_FIXED_BYTES: usize = 8 + 4 + 4 + 4 + 1;
/// Largest body a reader accepts (a procedure's arguments are far smaller).
pub const RECORD_BODY_BYTES_MAX: usize = 64 << 20;

/// A decoded record, borrowing its user name and arguments from the log bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// Log sequence number: dense per partition, starting at 1.
    pub lsn: u64,
    pub proc_id: u32,
    pub uid: u32,
    pub pid: u32,
    /// The caller's user name (what the procedure saw).
    pub user: &'a str,
    pub args: &'a [u8],
}

/// Why bytes at an offset are not a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadRecord {
    /// The file ends inside the record (or before its header).
    Partial,
    /// The first four bytes are not [`RECORD_MAGIC`].
    BadMagic,
    /// The body length is impossible.
    BadLength,
    /// The checksum does not match.
    BadChecksum,
    /// The checksum matches but the body is malformed (cannot be written by us).
    BadBody,
}

impl std::fmt::Display for BadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BadRecord::Partial => "partial record",
            BadRecord::BadMagic => "bad record magic",
            BadRecord::BadLength => "bad record length",
            BadRecord::BadChecksum => "checksum mismatch",
            BadRecord::BadBody => "malformed record body",
        })
    }
}

/// Bytes `record` takes in the log.
pub fn encoded_len(user: &str, args: &[u8]) -> usize {
    RECORD_HEADER_BYTES + BODY_FIXED_BYTES + user.len() + args.len() + RECORD_TRAILER_BYTES
}

/// Append `record` to `out`.
pub fn encode(record: &Record<'_>, out: &mut Vec<u8>) {
    assert!(record.lsn >= 1, "lsns start at 1");
    assert!(record.user.len() <= u8::MAX as usize, "user name too long");
    let body_len = BODY_FIXED_BYTES + record.user.len() + record.args.len();
    assert!(body_len <= RECORD_BODY_BYTES_MAX, "record body too large");
    let start = out.len();
    out.extend_from_slice(&RECORD_MAGIC.to_le_bytes());
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&record.lsn.to_le_bytes());
    out.extend_from_slice(&record.proc_id.to_le_bytes());
    out.extend_from_slice(&record.uid.to_le_bytes());
    out.extend_from_slice(&record.pid.to_le_bytes());
    out.push(record.user.len() as u8);
    out.extend_from_slice(record.user.as_bytes());
    out.extend_from_slice(record.args);
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(out.len() - start, encoded_len(record.user, record.args));
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Decode the record at `bytes[offset..]`; on success also return the offset after it.
pub fn decode_at(bytes: &[u8], offset: usize) -> Result<(Record<'_>, usize), BadRecord> {
    let rest = bytes.get(offset..).ok_or(BadRecord::Partial)?;
    if rest.len() < 4 {
        return Err(BadRecord::Partial);
    }
    if u32_at(rest, 0) != RECORD_MAGIC {
        return Err(BadRecord::BadMagic);
    }
    if rest.len() < RECORD_HEADER_BYTES {
        return Err(BadRecord::Partial);
    }
    let body_len = u32_at(rest, 4) as usize;
    if !(BODY_FIXED_BYTES..=RECORD_BODY_BYTES_MAX).contains(&body_len) {
        return Err(BadRecord::BadLength);
    }
    let total = RECORD_HEADER_BYTES + body_len + RECORD_TRAILER_BYTES;
    if rest.len() < total {
        return Err(BadRecord::Partial);
    }
    let crc_at = RECORD_HEADER_BYTES + body_len;
    if crc32c::crc32c(&rest[..crc_at]) != u32_at(rest, crc_at) {
        return Err(BadRecord::BadChecksum);
    }
    let body = &rest[RECORD_HEADER_BYTES..crc_at];
    let user_len = body[20] as usize;
    if BODY_FIXED_BYTES + user_len > body.len() {
        return Err(BadRecord::BadBody);
    }
    let user = std::str::from_utf8(&body[BODY_FIXED_BYTES..BODY_FIXED_BYTES + user_len])
        .map_err(|_| BadRecord::BadBody)?;
    let record = Record {
        lsn: u64_at(body, 0),
        proc_id: u32_at(body, 8),
        uid: u32_at(body, 12),
        pid: u32_at(body, 16),
        user,
        args: &body[BODY_FIXED_BYTES + user_len..],
    };
    if record.lsn == 0 {
        return Err(BadRecord::BadBody);
    }
    Ok((record, offset + total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(lsn: u64, args: &[u8]) -> Record<'_> {
        Record {
            lsn,
            proc_id: 7,
            uid: 1000,
            pid: 42,
            user: "alice",
            args,
        }
    }

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        encode(&sample(1, b"hello"), &mut buf);
        encode(&sample(2, b""), &mut buf);
        let (a, next) = decode_at(&buf, 0).unwrap();
        assert_eq!(a, sample(1, b"hello"));
        let (b, end) = decode_at(&buf, next).unwrap();
        assert_eq!(b, sample(2, b""));
        assert_eq!(end, buf.len());
        assert_eq!(decode_at(&buf, end), Err(BadRecord::Partial));
    }

    #[test]
    fn every_truncation_is_partial_and_every_flip_is_caught() {
        let mut buf = Vec::new();
        encode(&sample(9, b"some arguments"), &mut buf);
        for cut in 0..buf.len() {
            assert_eq!(decode_at(&buf[..cut], 0).unwrap_err(), BadRecord::Partial);
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(decode_at(&b, 0).is_err(), "flip at {byte}.{bit} undetected");
            }
        }
    }
}
