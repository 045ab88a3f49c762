//! Where things live in a data directory, and the guards that make a directory
//! safe to use: the `meta` file and the lock.
//!
//! ```text
//! DATA_DIR/meta                          format version, partition count, node id
//! DATA_DIR/lock                          flock'd by the tabosd that uses the directory
//! DATA_DIR/p<partition>/log-<first lsn>.log   command-log segments (20-digit LSN)
//! DATA_DIR/p<partition>/snap-<lsn>.snap       snapshots (state after record <lsn>)
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// Version of the on-disk format written in `meta`.
pub const FORMAT_VERSION: u32 = 1;

/// The directory of global partition `partition`.
pub fn partition_dir(data_dir: &Path, partition: u32) -> PathBuf {
    data_dir.join(format!("p{partition}"))
}

/// The segment whose first record has `first_lsn`.
pub fn segment_path(dir: &Path, first_lsn: u64) -> PathBuf {
    dir.join(format!("log-{first_lsn:020}.log"))
}

/// The snapshot of the state after record `lsn`.
pub fn snapshot_path(dir: &Path, lsn: u64) -> PathBuf {
    dir.join(format!("snap-{lsn:020}.snap"))
}

fn parse_numbered(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Files of a partition directory, by kind, each sorted by LSN.
#[derive(Debug, Default)]
pub struct Listing {
    /// `(first lsn, path)` of each log segment.
    pub segments: Vec<(u64, PathBuf)>,
    /// `(lsn, path)` of each snapshot.
    pub snapshots: Vec<(u64, PathBuf)>,
    /// Unfinished snapshot files (`*.tmp`) left by a crash.
    pub temporaries: Vec<PathBuf>,
}

/// List a partition directory (empty if it does not exist).
pub fn list(dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(listing),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let path = entry.path();
        if let Some(lsn) = parse_numbered(name, "log-", ".log") {
            listing.segments.push((lsn, path));
        } else if let Some(lsn) = parse_numbered(name, "snap-", ".snap") {
            listing.snapshots.push((lsn, path));
        } else if name.ends_with(".tmp") {
            listing.temporaries.push(path);
        }
    }
    listing.segments.sort();
    listing.snapshots.sort();
    Ok(listing)
}

/// What a data directory belongs to; must match the starting node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Meta {
    pub partition_count: u32,
    pub node_id: u32,
}

impl Meta {
    fn encode(&self) -> String {
        format!(
            "tabos-data-format {FORMAT_VERSION}\npartition_count {}\nnode_id {}\n",
            self.partition_count, self.node_id
        )
    }

    fn decode(text: &str) -> Result<(u32, Meta), String> {
        let mut version = None;
        let (mut count, mut node) = (None, None);
        for line in text.lines() {
            let (key, value) = line.split_once(' ').ok_or(format!("bad line {line:?}"))?;
            let value: u32 = value
                .trim()
                .parse()
                .map_err(|_| format!("bad line {line:?}"))?;
            match key {
                "tabos-data-format" => version = Some(value),
                "partition_count" => count = Some(value),
                "node_id" => node = Some(value),
                _ => return Err(format!("unknown key {key:?}")),
            }
        }
        match (version, count, node) {
            (Some(v), Some(partition_count), Some(node_id)) => Ok((
                v,
                Meta {
                    partition_count,
                    node_id,
                },
            )),
            _ => Err("missing keys".into()),
        }
    }

    /// Read `DATA_DIR/meta`; `Ok(None)` when the directory has none yet.
    pub fn read(data_dir: &Path) -> Result<Option<Meta>, String> {
        let path = data_dir.join("meta");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("read {}: {e}", path.display())),
        };
        let (version, meta) =
            Meta::decode(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if version != FORMAT_VERSION {
            return Err(format!(
                "{}: data format version {version}, this tabosd reads version {FORMAT_VERSION}",
                path.display()
            ));
        }
        Ok(Some(meta))
    }

    /// Write `meta` into a new data directory, or check that the existing one matches.
    pub fn check_or_create(&self, data_dir: &Path) -> Result<(), String> {
        match Meta::read(data_dir)? {
            Some(found) if found == *self => Ok(()),
            Some(found) => Err(format!(
                "data dir {} belongs to a node with {} partitions and node id {}, but this tabosd has {} partitions and node id {}; use that configuration or another --data-dir",
                data_dir.display(),
                found.partition_count,
                found.node_id,
                self.partition_count,
                self.node_id
            )),
            None => {
                let path = data_dir.join("meta");
                let tmp = data_dir.join("meta.tmp");
                let write = || -> io::Result<()> {
                    let mut f = File::create(&tmp)?;
                    f.write_all(self.encode().as_bytes())?;
                    f.sync_all()?;
                    std::fs::rename(&tmp, &path)?;
                    crate::disk::sync_dir(data_dir)
                };
                write().map_err(|e| format!("write {}: {e}", path.display()))
            }
        }
    }
}

/// An exclusive lock on a data directory, held while the value lives.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

/// Create `data_dir` if needed and lock it; a second tabosd on it is refused.
pub fn lock(data_dir: &Path) -> Result<DirLock, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("create data dir {}: {e}", data_dir.display()))?;
    let path = data_dir.join("lock");
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("open {}: {e}", path.display()))?;
    // SAFETY: flock on an fd we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        return Err(format!(
            "data dir {} is in use by another tabosd (pid {}); stop it or use another --data-dir",
            data_dir.display(),
            holder.trim()
        ));
    }
    let _ = file.set_len(0);
    let _ = writeln!(file, "{}", std::process::id());
    Ok(DirLock { _file: file })
}
