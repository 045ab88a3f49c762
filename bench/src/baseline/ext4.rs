//! Baseline: the Linux filesystem the benchmark directory lives on (ext4 on the
//! machines we measure; the record says what it really was), driven through std:
//! `open`, `pread`/`pwrite` (`FileExt::read_exact_at`/`write_all_at`), `close`,
//! `creat`, `unlink`, and a `readdir` + `stat` walk for the size aggregate.
//!
//! Everything stays in the page cache: neither side syncs (tabos has no log yet), so
//! both are measured as memory-resident filesystems. The directory is fresh, beside
//! the driver executable under the cargo target directory by default (not /tmp, which
//! may be a tmpfs), and removed again when the [`BaselineDir`] is dropped.

use crate::Error;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// A fresh directory for the baseline's files; removed on drop.
#[derive(Debug)]
pub struct BaselineDir {
    root: PathBuf,
    fs_type: String,
}

impl BaselineDir {
    /// A fresh directory under `parent`, or beside the current executable.
    pub fn fresh(parent: Option<&Path>) -> Result<BaselineDir, Error> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let parent = match parent {
            Some(p) => p.to_path_buf(),
            None => {
                let exe = std::env::current_exe()
                    .map_err(|e| Error::io("finding the current executable", e))?;
                exe.parent().map(Path::to_path_buf).ok_or_else(|| {
                    Error::Server("the current executable has no directory".into())
                })?
            }
        };
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = parent.join(format!("tabos-bench-fs-{}-{n}", std::process::id()));
        std::fs::create_dir(&root)
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        let fs_type = fs_type_of(&root).unwrap_or_else(|| "unknown".into());
        Ok(BaselineDir { root, fs_type })
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The record's system name: `ext4`, or `linux-<type>` on another filesystem.
    pub fn system(&self) -> String {
        if self.fs_type == "ext4" {
            "ext4".into()
        } else {
            format!("linux-{}", self.fs_type)
        }
    }
}

impl Drop for BaselineDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            eprintln!("tabos-bench: cannot remove {}: {e}", self.root.display());
        }
    }
}

/// The type of the filesystem holding `path`: the longest mount point above it in
/// /proc/mounts.
fn fs_type_of(path: &Path) -> Option<String> {
    let path = path.canonicalize().ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let (_dev, point, fs_type) = (fields.next()?, fields.next()?, fields.next()?);
            let point = point.replace("\\040", " ");
            path.starts_with(&point)
                .then(|| (point.len(), fs_type.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, fs_type)| fs_type)
}

fn io(doing: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{doing} {}", path.display()), e)
}

/// Make directory `path`.
pub fn mkdir(path: &Path) -> Result<(), Error> {
    std::fs::create_dir(path).map_err(|e| io("mkdir", path, e))
}

/// Create `path` holding `data`.
pub fn write_file(path: &Path, data: &[u8]) -> Result<(), Error> {
    std::fs::write(path, data).map_err(|e| io("writing", path, e))
}

/// Open `path`, read each block of `blocks` into `buf` (one block), close.
pub fn read_blocks(path: &Path, blocks: &[u64], buf: &mut [u8]) -> Result<(), Error> {
    let file = File::open(path).map_err(|e| io("open", path, e))?;
    for b in blocks {
        file.read_exact_at(buf, b * buf.len() as u64)
            .map_err(|e| io("pread", path, e))?;
    }
    Ok(())
}

/// Open `path`, write `data` (one block) at each block of `blocks`, close.
pub fn write_blocks(path: &Path, blocks: &[u64], data: &[u8]) -> Result<(), Error> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| io("open", path, e))?;
    for b in blocks {
        file.write_all_at(data, b * data.len() as u64)
            .map_err(|e| io("pwrite", path, e))?;
    }
    Ok(())
}

/// Create an empty `path` and close it.
pub fn create(path: &Path) -> Result<(), Error> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map(drop)
        .map_err(|e| io("creat", path, e))
}

/// Remove `path`.
pub fn unlink(path: &Path) -> Result<(), Error> {
    std::fs::remove_file(path).map_err(|e| io("unlink", path, e))
}

/// Total size and number of the files under `dir` (recursively) of at least
/// `min_size_bytes`: the program a user writes without a `du` query.
pub fn du(dir: &Path, min_size_bytes: u64) -> Result<(u64, u64), Error> {
    let (mut total_bytes, mut file_count) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| io("readdir", &dir, e))? {
            let entry = entry.map_err(|e| io("readdir", &dir, e))?;
            let meta = entry.metadata().map_err(|e| io("stat", &entry.path(), e))?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && meta.len() >= min_size_bytes {
                total_bytes += meta.len();
                file_count += 1;
            }
        }
    }
    Ok((total_bytes, file_count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_round_trip_and_du_counts_large_files() {
        let dir = BaselineDir::fresh(Some(&std::env::temp_dir())).unwrap();
        let file = dir.path().join("f");
        write_file(&file, &[0u8; 8192]).unwrap();
        write_blocks(&file, &[1, 3], &[7u8; 2048]).unwrap();
        let mut buf = [0u8; 2048];
        read_blocks(&file, &[3], &mut buf).unwrap();
        assert_eq!(buf, [7u8; 2048]);
        read_blocks(&file, &[2], &mut buf).unwrap();
        assert_eq!(buf, [0u8; 2048]);
        mkdir(&dir.path().join("sub")).unwrap();
        write_file(&dir.path().join("sub/small"), b"x").unwrap();
        create(&dir.path().join("empty")).unwrap();
        assert!(
            create(&dir.path().join("empty")).is_err(),
            "create is exclusive"
        );
        assert_eq!(du(dir.path(), 0).unwrap(), (8193, 3));
        assert_eq!(du(dir.path(), 2).unwrap(), (8192, 1));
        unlink(&dir.path().join("empty")).unwrap();
        assert!(!dir.system().is_empty());
        let root = dir.path().to_path_buf();
        drop(dir);
        assert!(!root.exists(), "the directory is removed on drop");
    }
}
