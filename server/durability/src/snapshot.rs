//! Snapshot files: a consistent image of one partition after a given LSN.
//!
//! ```text
//! magic u64 "TABOSNAP" | version u32 | partition u32 | lsn u64 | body_len u64 | body | crc32c u32
//! ```
//! The checksum covers everything before it. A snapshot is written to `*.tmp`,
//! fdatasync'd, renamed and its directory fsync'd, so a `.snap` file is whole or absent.

use crate::crc32c;
use crate::disk::sync_dir;
use crate::layout::{list, snapshot_path};
use crate::recover::Corrupt;
use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// "TABOSNAP".
pub const SNAPSHOT_MAGIC: u64 = u64::from_le_bytes(*b"TABOSNAP");
/// Version of the snapshot header.
pub const SNAPSHOT_VERSION: u32 = 1;
const HEADER_BYTES: usize = 8 + 4 + 4 + 8 + 8;

/// A snapshot read back and checked.
#[derive(Debug)]
pub struct Snapshot {
    pub partition: u32,
    /// The state includes every record up to this LSN.
    pub lsn: u64,
    /// The serialized partition state.
    pub body: Vec<u8>,
}

/// The file bytes of a snapshot.
pub fn encode(partition: u32, lsn: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len() + 4);
    out.extend_from_slice(&SNAPSHOT_MAGIC.to_le_bytes());
    out.extend_from_slice(&SNAPSHOT_VERSION.to_le_bytes());
    out.extend_from_slice(&partition.to_le_bytes());
    out.extend_from_slice(&lsn.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Write the snapshot durably (tmp file, fdatasync, rename, directory fsync), then
/// delete the segments and snapshots it makes unnecessary. Runs off the partition's
/// thread. Returns the snapshot's path and bytes written.
pub fn write_and_prune(
    dir: &Path,
    partition: u32,
    lsn: u64,
    body: &[u8],
) -> io::Result<(PathBuf, u64)> {
    let bytes = encode(partition, lsn, body);
    let path = snapshot_path(dir, lsn);
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(&bytes)?;
    file.sync_data()?;
    drop(file);
    std::fs::rename(&tmp, &path)?;
    sync_dir(dir)?;
    prune(dir, lsn)?;
    Ok((path, bytes.len() as u64))
}

/// Delete what a durable snapshot at `lsn` makes unnecessary: older snapshots and
/// every segment whose records all have LSNs `<= lsn` (its successor starts at or
/// before `lsn + 1`).
pub fn prune(dir: &Path, lsn: u64) -> io::Result<()> {
    let listing = list(dir)?;
    for (snap_lsn, path) in &listing.snapshots {
        if *snap_lsn < lsn {
            std::fs::remove_file(path)?;
        }
    }
    for pair in listing.segments.windows(2) {
        let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
        if *next_first <= lsn + 1 {
            std::fs::remove_file(path)?;
        }
    }
    Ok(())
}

/// Read and check the snapshot at `path`: any mismatch is an error naming the file
/// and the offset, never a silent skip.
pub fn read(path: &Path) -> Result<Snapshot, Corrupt> {
    let bytes =
        crate::disk::read_whole(path).map_err(|e| Corrupt::new(path, 0, format!("read: {e}")))?;
    let bad = |offset: usize, what: &str| {
        Corrupt::new(path, offset as u64, format!("corrupt snapshot: {what}"))
    };
    if bytes.len() < HEADER_BYTES + 4 {
        return Err(bad(bytes.len(), "file shorter than a snapshot header"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    if u64_at(0) != SNAPSHOT_MAGIC {
        return Err(bad(0, "bad magic"));
    }
    if u32_at(8) != SNAPSHOT_VERSION {
        return Err(bad(8, "unknown version"));
    }
    let body_len = u64_at(24);
    if body_len != (bytes.len() - HEADER_BYTES - 4) as u64 {
        return Err(bad(
            24,
            &format!(
                "body length {body_len} does not match the file size {}",
                bytes.len()
            ),
        ));
    }
    let crc_at = bytes.len() - 4;
    if crc32c::crc32c(&bytes[..crc_at]) != u32_at(crc_at) {
        return Err(bad(crc_at, "checksum mismatch"));
    }
    let (partition, lsn) = (u32_at(12), u64_at(16));
    // The body in the file's buffer (moved down by the header): no second allocation
    // of a file that may hold gigabytes.
    let mut body = bytes;
    body.truncate(crc_at);
    body.drain(..HEADER_BYTES);
    Ok(Snapshot {
        partition,
        lsn,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flip_is_caught() {
        let dir = tempfile::tempdir().unwrap();
        let (path, _) = write_and_prune(dir.path(), 3, 17, b"state bytes").unwrap();
        let snap = read(&path).unwrap();
        assert_eq!(
            (snap.partition, snap.lsn, &snap.body[..]),
            (3, 17, &b"state bytes"[..])
        );
        let good = std::fs::read(&path).unwrap();
        for byte in 0..good.len() {
            let mut b = good.clone();
            b[byte] ^= 0x10;
            std::fs::write(&path, &b).unwrap();
            assert!(read(&path).is_err(), "flip at {byte} undetected");
        }
    }
}
