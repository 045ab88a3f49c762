//! Recovery of one partition: the newest snapshot, then the log records after it.
//!
//! A torn tail (a partial or checksum-failing record after which no valid record exists
//! anywhere later, in this segment or a later one) is what a crash leaves: it is cut
//! off (or only reported, when verifying). Anything else that does not check out, a
//! bad record followed by a valid one, a snapshot failing its checksum, a gap in the
//! LSNs, is corruption: recovery stops with an error naming the file and the offset.

use crate::layout::{list, Listing};
use crate::record::{decode_at, Record, RECORD_MAGIC};
use crate::snapshot::{self, Snapshot};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Corruption (or an unreadable file), with where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corrupt {
    pub path: PathBuf,
    pub offset: u64,
    pub what: String,
}

impl Corrupt {
    pub fn new(path: &Path, offset: u64, what: impl Into<String>) -> Corrupt {
        Corrupt {
            path: path.to_path_buf(),
            offset,
            what: what.into(),
        }
    }
}

impl std::fmt::Display for Corrupt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at offset {}: {}",
            self.path.display(),
            self.offset,
            self.what
        )
    }
}

/// A torn tail found (and cut, unless verifying).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    pub offset: u64,
    /// Bytes after `offset` that were (or would be) cut.
    pub bytes: u64,
}

/// What recovering one partition did.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// LSN of the snapshot loaded (0: none).
    pub snapshot_lsn: u64,
    /// Records applied after the snapshot.
    pub replayed: u64,
    /// Bytes of log read.
    pub log_bytes: u64,
    /// Last LSN in the recovered state.
    pub last_lsn: u64,
    pub torn: Option<TornTail>,
    /// Time spent, snapshot load and replay together.
    pub elapsed: Duration,
}

/// Whether recovery may change files (cut a torn tail, delete `*.tmp`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Repair,
    VerifyOnly,
}

/// Whether any valid record starts in `bytes` at or after `from`.
fn valid_record_after(bytes: &[u8], from: usize) -> bool {
    let magic = RECORD_MAGIC.to_le_bytes();
    (from..bytes.len().saturating_sub(3))
        .filter(|&at| bytes[at..at + 4] == magic)
        .any(|at| decode_at(bytes, at).is_ok())
}

/// Recover the partition in `dir`: `load` gets the newest snapshot (if any), then
/// `apply` gets every record after it in LSN order. An error returned by either stops
/// recovery and is reported at the record's file and offset.
pub fn recover(
    dir: &Path,
    mode: Mode,
    mut load: impl FnMut(&Snapshot) -> Result<(), String>,
    mut apply: impl FnMut(&Record<'_>) -> Result<(), String>,
) -> Result<Report, Corrupt> {
    let started = Instant::now();
    let listing: Listing = list(dir).map_err(|e| Corrupt::new(dir, 0, format!("list: {e}")))?;
    if mode == Mode::Repair {
        for tmp in &listing.temporaries {
            std::fs::remove_file(tmp)
                .map_err(|e| Corrupt::new(tmp, 0, format!("remove unfinished snapshot: {e}")))?;
        }
    }
    let mut report = Report::default();
    if let Some((name_lsn, path)) = listing.snapshots.last() {
        let snap = snapshot::read(path)?;
        if snap.lsn != *name_lsn {
            return Err(Corrupt::new(
                path,
                16,
                format!("snapshot holds lsn {} but is named {name_lsn}", snap.lsn),
            ));
        }
        load(&snap).map_err(|e| Corrupt::new(path, 0, format!("cannot load snapshot: {e}")))?;
        report.snapshot_lsn = snap.lsn;
    }
    let mut last_lsn = report.snapshot_lsn;
    // Read every segment first: deciding whether a bad record is a torn tail needs to
    // know whether any valid record follows it, in later segments too.
    let mut files = Vec::with_capacity(listing.segments.len());
    for (first, path) in &listing.segments {
        let bytes = crate::disk::read_whole(path)
            .map_err(|e| Corrupt::new(path, 0, format!("read: {e}")))?;
        files.push((*first, path.clone(), bytes));
    }
    let mut prev_lsn: Option<u64> = None;
    for index in 0..files.len() {
        let (first, path, bytes) = &files[index];
        report.log_bytes += bytes.len() as u64;
        let mut offset = 0usize;
        while offset < bytes.len() {
            let (record, next) = match decode_at(bytes, offset) {
                Ok(ok) => ok,
                Err(_) if bytes[offset..].iter().all(|&b| b == 0) => {
                    break; // the zeros a segment keeps ahead of its records: clean end
                }
                Err(why) => {
                    let later = valid_record_after(bytes, offset + 1)
                        || files[index + 1..]
                            .iter()
                            .any(|(_, _, b)| valid_record_after(b, 0));
                    if later {
                        return Err(Corrupt::new(
                            path,
                            offset as u64,
                            format!("corrupt log: {why}, followed by valid records"),
                        ));
                    }
                    let torn = TornTail {
                        path: path.clone(),
                        offset: offset as u64,
                        bytes: (bytes.len() - offset) as u64,
                    };
                    if mode == Mode::Repair {
                        cut(path, offset as u64)?;
                    }
                    report.torn = Some(torn);
                    break;
                }
            };
            let expected = match prev_lsn {
                Some(prev) => prev + 1,
                None => *first,
            };
            if offset == 0 && record.lsn != *first {
                return Err(Corrupt::new(
                    path,
                    0,
                    format!(
                        "segment named for lsn {first} starts with lsn {}",
                        record.lsn
                    ),
                ));
            }
            if record.lsn != expected {
                return Err(Corrupt::new(
                    path,
                    offset as u64,
                    format!(
                        "lsn {} where {expected} was expected (gap in the log)",
                        record.lsn
                    ),
                ));
            }
            prev_lsn = Some(record.lsn);
            if record.lsn > last_lsn {
                if record.lsn != last_lsn + 1 {
                    return Err(Corrupt::new(path, offset as u64, format!(
                        "log resumes at lsn {} but the state ends at lsn {last_lsn} (gap between snapshot and log)",
                        record.lsn
                    )));
                }
                apply(&record).map_err(|e| {
                    Corrupt::new(
                        path,
                        offset as u64,
                        format!("replay of lsn {} diverged: {e}", record.lsn),
                    )
                })?;
                last_lsn = record.lsn;
                report.replayed += 1;
            }
            offset = next;
        }
        if let Some(prev) = prev_lsn {
            if let Some((next_first, next_path, _)) = files.get(index + 1) {
                if *next_first != prev + 1 && report.torn.is_none() {
                    return Err(Corrupt::new(next_path, 0, format!("segment starts at lsn {next_first} but the previous one ended at lsn {prev} (gap in the log)")));
                }
            }
        }
    }
    report.last_lsn = last_lsn;
    report.elapsed = started.elapsed();
    Ok(report)
}

fn cut(path: &Path, offset: u64) -> Result<(), Corrupt> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| Corrupt::new(path, offset, format!("open to cut torn tail: {e}")))?;
    file.set_len(offset)
        .and_then(|()| file.sync_all())
        .map_err(|e| Corrupt::new(path, offset, format!("cut torn tail: {e}")))
}

/// Check a whole data directory offline without changing it: every partition's
/// snapshot and log. Returns one line per partition, or the first corruption.
pub fn verify_data_dir(data_dir: &Path) -> Result<Vec<String>, Corrupt> {
    let meta = crate::layout::Meta::read(data_dir).map_err(|e| Corrupt::new(data_dir, 0, e))?;
    let mut lines = Vec::new();
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir(data_dir)
        .map_err(|e| Corrupt::new(data_dir, 0, format!("read dir: {e}")))?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let p: u32 = name.strip_prefix('p')?.parse().ok()?;
            Some((p, e.path()))
        })
        .collect();
    dirs.sort();
    let Some(meta) = meta else {
        return Err(Corrupt::new(
            data_dir,
            0,
            "no meta file: not a tabos data directory",
        ));
    };
    lines.push(format!(
        "meta: {} partitions, node {}",
        meta.partition_count, meta.node_id
    ));
    for (p, dir) in dirs {
        let report = recover(&dir, Mode::VerifyOnly, |_| Ok(()), |_| Ok(()))?;
        let mut line = format!(
            "p{p}: ok: snapshot at lsn {}, {} log records after it ({} log bytes), last lsn {}",
            report.snapshot_lsn, report.replayed, report.log_bytes, report.last_lsn
        );
        if let Some(t) = report.torn {
            line += &format!(
                "; torn tail at {} offset {} ({} bytes) would be cut at start",
                t.path.display(),
                t.offset,
                t.bytes
            );
        }
        lines.push(line);
    }
    Ok(lines)
}
