//! A disk that loses power: fault injection under the log writer.
//!
//! A killed process keeps its page cache; a power loss does not. [`FaultyDisk`] keeps
//! each segment's bytes in memory in two layers: what was made durable by a finished
//! flush, and what a flush in flight has written but not yet synced. [`FaultyDisk::power_loss`]
//! writes out only the durable bytes plus a torn prefix (random length, with the last
//! bytes garbled) of the write in flight: everything not yet fsynced is gone.
//! [`FaultyDisk::fail_next_flush`] makes the next flush report an I/O error.

use crate::disk::{Flushed, LogDir, LogFile};
use rand::Rng;
use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
struct FileState {
    /// Bytes that survive a power loss.
    durable: Vec<u8>,
    /// A write started but not yet synced: (offset, bytes).
    unsynced: Option<(u64, Vec<u8>)>,
}

#[derive(Debug, Default)]
struct DiskState {
    files: BTreeMap<PathBuf, FileState>,
    fail_next: bool,
}

/// An in-memory disk shared by the writer under test and the test itself.
#[derive(Clone, Debug, Default)]
pub struct FaultyDisk {
    state: Arc<Mutex<DiskState>>,
}

impl FaultyDisk {
    pub fn new() -> FaultyDisk {
        FaultyDisk::default()
    }

    /// The next flush to finish reports an I/O error (and makes nothing durable).
    pub fn fail_next_flush(&self) {
        self.state.lock().expect("disk lock").fail_next = true;
    }

    /// Write every file as it would be found after a power loss now into its path
    /// (the paths given to [`LogDir::create`]), tearing any write in flight at a random
    /// point. Returns how many bytes of torn writes were kept.
    pub fn power_loss(&self, rng: &mut impl Rng) -> io::Result<usize> {
        let state = self.state.lock().expect("disk lock");
        let mut torn_kept = 0;
        for (path, file) in &state.files {
            let mut bytes = file.durable.clone();
            if let Some((offset, unsynced)) = &file.unsynced {
                let keep = rng.gen_range(0..=unsynced.len());
                let offset = *offset as usize;
                if keep > 0 {
                    if bytes.len() < offset + keep {
                        bytes.resize(offset + keep, 0);
                    }
                    bytes[offset..offset + keep].copy_from_slice(&unsynced[..keep]);
                    // A torn sector: the last few kept bytes may be garbage.
                    let garble = rng.gen_range(0..=keep.min(8));
                    for b in &mut bytes[offset + keep - garble..offset + keep] {
                        *b = rng.gen();
                    }
                    torn_kept += keep;
                }
            }
            std::fs::write(path, &bytes)?;
        }
        Ok(torn_kept)
    }
}

impl LogDir for FaultyDisk {
    fn create(&mut self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let mut state = self.state.lock().expect("disk lock");
        state.files.insert(path.to_path_buf(), FileState::default());
        Ok(Box::new(FaultyFile {
            disk: self.clone(),
            path: path.to_path_buf(),
            inflight: None,
        }))
    }
}

/// One segment on a [`FaultyDisk`]: a started flush completes when polled.
#[derive(Debug)]
struct FaultyFile {
    disk: FaultyDisk,
    path: PathBuf,
    inflight: Option<Vec<u8>>,
}

impl LogFile for FaultyFile {
    fn start(&mut self, offset: u64, bytes: Vec<u8>) {
        assert!(self.inflight.is_none(), "one flush in flight at a time");
        let mut state = self.disk.state.lock().expect("disk lock");
        let file = state.files.get_mut(&self.path).expect("created");
        file.unsynced = Some((offset, bytes.clone()));
        self.inflight = Some(bytes);
    }

    fn poll(&mut self) -> Option<Flushed> {
        let bytes = self.inflight.take()?;
        let mut state = self.disk.state.lock().expect("disk lock");
        let fail = std::mem::take(&mut state.fail_next);
        let file = state.files.get_mut(&self.path).expect("created");
        let (offset, unsynced) = file.unsynced.take().expect("a write in flight");
        if fail {
            return Some((bytes, Err(io::Error::other("injected fdatasync failure"))));
        }
        let end = offset as usize + unsynced.len();
        if file.durable.len() < end {
            file.durable.resize(end, 0);
        }
        file.durable[offset as usize..end].copy_from_slice(&unsynced);
        Some((bytes, Ok(())))
    }

    fn wait(&mut self) -> Option<Flushed> {
        self.poll()
    }
}

/// A real directory whose segments fail every flush after the first `flushes_ok`
/// (counted per segment file): how a process-level test makes a running tabosd meet a
/// failing disk (tabosd reads `TABOS_FAULT_LOG_FAIL_AFTER`, a test-only hook). A
/// failed flush writes nothing.
#[derive(Debug)]
pub struct FailAfter {
    inner: crate::disk::RealDir,
    flushes_ok: u64,
}

impl FailAfter {
    pub fn new(flushes_ok: u64) -> FailAfter {
        FailAfter {
            inner: crate::disk::RealDir::new(),
            flushes_ok,
        }
    }
}

impl LogDir for FailAfter {
    fn create(&mut self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        Ok(Box::new(FailingFile {
            inner: self.inner.create(path)?,
            left: self.flushes_ok,
            failed: None,
        }))
    }
}

struct FailingFile {
    inner: Box<dyn LogFile>,
    left: u64,
    failed: Option<Flushed>,
}

impl LogFile for FailingFile {
    fn start(&mut self, offset: u64, bytes: Vec<u8>) {
        if self.left == 0 {
            let e = io::Error::other("injected write failure (TABOS_FAULT_LOG_FAIL_AFTER)");
            self.failed = Some((bytes, Err(e)));
            return;
        }
        self.left -= 1;
        self.inner.start(offset, bytes);
    }

    fn poll(&mut self) -> Option<Flushed> {
        self.failed.take().or_else(|| self.inner.poll())
    }

    fn wait(&mut self) -> Option<Flushed> {
        self.failed.take().or_else(|| self.inner.wait())
    }
}
