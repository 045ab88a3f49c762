//! Typed client API of the fs service: a POSIX-style view of the filesystem
//! procedures (`tabos_procs::fs`).
//!
//! ```no_run
//! let mut client = tabos_client::Client::connect("/tmp/tabos.sock")?;
//! let mut fs = client.fs();
//! fs.create("/alice/notes", false)?;
//! fs.write_at("/alice/notes", 0, b"hello")?;
//! assert_eq!(fs.read_at("/alice/notes", 0, 5)?, b"hello");
//! # Ok::<(), tabos_client::Error>(())
//! ```
//!
//! [`Fs`] routes each path to its user's home partition (looked up once with
//! `user_get` and cached), resolves relative paths against the caller's current
//! directory (cached too; [`Fs::set_current_dir`] updates it), splits large reads and
//! writes into calls of at most [`CHUNK_BYTES`], and moves the blocks of parallel
//! files with one pipelined call per partition (more when a partition's share exceeds
//! a payload), then waits for them all.
//!
//! A call that needs several transactions (a large write, a parallel file's blocks,
//! batched calls spanning partitions) is not atomic: if it fails part-way, the part
//! already done stays. Names are UTF-8.

use std::collections::HashMap;

use crate::{Client, Error};
use tabos_procs::fs::ids;
use tabos_procs::fs::wire::{
    args, decode_pread, BlockReply, BlocksReply, ReadReply, Removed, WriteReply, BATCH_MAX,
    LIST_MAX,
};
pub use tabos_procs::fs::wire::{DirEntry, DuReply, Listing, ParallelInfo, Stat, UserInfo};
pub use tabos_procs::fs::{EntryKind, FsPath, DIR_MODE, FILE_MODE};
use tabos_transport::Status;

/// Largest slice of file data moved by one localized `read` or `write` call.
pub const CHUNK_BYTES: usize = 512 * 1024;
/// A write up to this size is sent with its first call, before the file's kind is
/// known; a parallel file ignores it there, so larger writes ask for the kind first.
const INLINE_WRITE_BYTES: usize = 64 * 1024;
/// Room for a call's header fields besides the data and the path.
const FRAME_SLACK_BYTES: usize = 1024;
/// Bytes of framing per block in a `pread`/`pwrite` call.
const BLOCK_FRAME_BYTES: usize = 16;

/// Part of one parallel block: `(block_no, offset within the block, bytes)`.
type BlockPiece<'a> = (u64, u32, &'a [u8]);
/// One block write of `write_block_each`: `(path, block_no, bytes)`.
type BlockWrite<'a> = (FsPath, u64, &'a [u8]);

/// An opened file: its resolved path and what it was when opened. Opening is a
/// check, not a state on the server (open and close are no-ops in tabos).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenFile {
    pub path: FsPath,
    pub stat: Stat,
}

fn status(e: Status) -> Error {
    Error::Status(e)
}

impl Client {
    /// The filesystem API over this connection.
    pub fn fs(&mut self) -> Fs<'_> {
        Fs::new(self)
    }
}

/// The filesystem, as seen through one [`Client`]. Cheap to create; it caches home
/// partitions and the caller's current directory for its lifetime. Its calls must not
/// be mixed with the client's own pipelined calls still in flight (asserted).
#[derive(Debug)]
pub struct Fs<'c> {
    client: &'c mut Client,
    homes: HashMap<String, u32>,
    cwd: Option<FsPath>,
    block_bytes_local: Option<usize>,
}

impl<'c> Fs<'c> {
    pub fn new(client: &'c mut Client) -> Fs<'c> {
        Fs {
            client,
            homes: HashMap::new(),
            cwd: None,
            block_bytes_local: None,
        }
    }

    /// Add user `name` with home directory `/<name>` (root only).
    pub fn useradd(&mut self, name: &str) -> Result<(), Error> {
        self.client
            .call(ids::USERADD, 0, &args::user(name))
            .map(drop)
    }

    /// The user's home partition and current directory (`""`: the caller).
    pub fn user(&mut self, name: &str) -> Result<UserInfo, Error> {
        let reply = self.client.call(ids::USER_GET, 0, &args::user(name))?;
        UserInfo::decode(&reply).map_err(status)
    }

    /// The caller's current directory; `/` for a caller without a user row.
    pub fn current_dir(&mut self) -> Result<FsPath, Error> {
        if let Some(cwd) = &self.cwd {
            return Ok(cwd.clone());
        }
        let cwd = match self.user("") {
            Ok(me) => FsPath::parse(&me.current_path).map_err(status)?,
            Err(Error::Status(Status::NotFound)) => FsPath::root(),
            Err(e) => return Err(e),
        };
        self.cwd = Some(cwd.clone());
        Ok(cwd)
    }

    /// `path` as an absolute, normalised path (relative to the current directory).
    pub fn resolve(&mut self, path: &str) -> Result<FsPath, Error> {
        if path.starts_with('/') {
            return FsPath::parse(path).map_err(status);
        }
        let cwd = self.current_dir()?;
        FsPath::resolve(&cwd, path).map_err(status)
    }

    /// The partition holding `path` (any partition for `/`).
    fn home(&mut self, path: &FsPath) -> Result<u32, Error> {
        let Some(user) = path.user() else {
            return Ok(0);
        };
        if let Some(p) = self.homes.get(user) {
            return Ok(*p);
        }
        let info = self.user(user)?;
        if info.home_partition >= self.client.partition_count() {
            return Err(Error::Status(Status::BadPartition));
        }
        self.homes.insert(user.to_string(), info.home_partition);
        Ok(info.home_partition)
    }

    /// Resolve `path` and call `proc_id` with `make(resolved)` on its home partition.
    fn call_home(
        &mut self,
        proc_id: u32,
        path: &str,
        make: impl FnOnce(&str) -> Vec<u8>,
    ) -> Result<Vec<u8>, Error> {
        let path = self.resolve(path)?;
        let home = self.home(&path)?;
        self.client.call(proc_id, home, &make(path.as_str()))
    }

    /// Make the current directory `path` (an existing directory), for this caller on
    /// every partition.
    pub fn set_current_dir(&mut self, path: &str) -> Result<(), Error> {
        let path = self.resolve(path)?;
        if self.metadata(path.as_str())?.kind != EntryKind::Dir {
            return Err(Error::Status(Status::NotADirectory));
        }
        self.client.call(
            ids::SET_CURRENT_DIR,
            0,
            &args::set_current_dir("", path.as_str()),
        )?;
        self.cwd = Some(path);
        Ok(())
    }

    /// A new empty directory, mode 0o755.
    pub fn mkdir(&mut self, path: &str) -> Result<(), Error> {
        self.mkdir_with_mode(path, DIR_MODE)
    }

    pub fn mkdir_with_mode(&mut self, path: &str, mode: u32) -> Result<(), Error> {
        self.call_home(ids::MKDIR, path, |p| args::mkdir(p, mode))
            .map(drop)
    }

    /// A new empty file, mode 0o644: localized (blocks on the owner's home partition)
    /// or parallel (blocks spread over every partition).
    pub fn create(&mut self, path: &str, parallel: bool) -> Result<OpenFile, Error> {
        self.create_with_mode(path, parallel, FILE_MODE)
    }

    pub fn create_with_mode(
        &mut self,
        path: &str,
        parallel: bool,
        mode: u32,
    ) -> Result<OpenFile, Error> {
        self.call_home(ids::CREATE, path, |p| args::create(p, parallel, mode))?;
        self.open(path)
    }

    /// Check that `path` is a file and return its handle.
    pub fn open(&mut self, path: &str) -> Result<OpenFile, Error> {
        let resolved = self.resolve(path)?;
        let stat = self.metadata(resolved.as_str())?;
        if stat.kind == EntryKind::Dir {
            return Err(Error::Status(Status::IsADirectory));
        }
        Ok(OpenFile {
            path: resolved,
            stat,
        })
    }

    pub fn metadata(&mut self, path: &str) -> Result<Stat, Error> {
        let reply = self.call_home(ids::STAT, path, args::path)?;
        let mut r = tabos_engine::ArgReader::new(&reply);
        let stat = Stat::decode(&mut r).map_err(status)?;
        r.finish().map_err(status)?;
        Ok(stat)
    }

    /// Remove a file or an empty directory (and a parallel file's blocks everywhere).
    pub fn unlink(&mut self, path: &str) -> Result<(), Error> {
        let reply = self.call_home(ids::DELETE, path, args::path)?;
        let removed = Removed::decode(&reply).map_err(status)?;
        if removed.kind == EntryKind::ParallelFile {
            let blocks = removed
                .size_bytes
                .div_ceil(u64::from(removed.block_bytes.max(1)));
            let a = args::pdelete_blocks(removed.file_id, blocks);
            let calls =
                (0..self.client.partition_count()).map(|p| (ids::PDELETE_BLOCKS, p, a.clone()));
            for result in self.fan_out(calls)? {
                result?;
            }
        }
        Ok(())
    }

    /// Every entry of a directory, by name (as many `list` calls as it takes).
    pub fn read_dir(&mut self, path: &str) -> Result<Vec<DirEntry>, Error> {
        let mut out: Vec<DirEntry> = Vec::new();
        loop {
            let after = out.last().map_or(String::new(), |e| e.name.clone());
            let page = self.read_dir_page(path, &after, LIST_MAX)?;
            out.extend(page.entries);
            if !page.more {
                return Ok(out);
            }
        }
    }

    /// Up to `limit` entries whose names sort after `after` (`""`: from the first).
    pub fn read_dir_page(&mut self, path: &str, after: &str, limit: u32) -> Result<Listing, Error> {
        let reply = self.call_home(ids::LIST, path, |p| args::list(p, after, limit))?;
        Listing::decode(&reply).map_err(status)
    }

    /// Move `from` to `to` within one user's tree (`CrossNamespace` otherwise).
    pub fn rename(&mut self, from: &str, to: &str) -> Result<(), Error> {
        let to = self.resolve(to)?;
        self.call_home(ids::RENAME, from, |f| args::rename(f, to.as_str()))
            .map(drop)
    }

    /// Total size and count of the files under `path` of at least `min_size_bytes`
    /// (for `/`: summed over every partition).
    pub fn du(&mut self, path: &str, min_size_bytes: u64) -> Result<DuReply, Error> {
        let path = self.resolve(path)?;
        let a = args::du(path.as_str(), min_size_bytes);
        let partitions: Vec<u32> = if path.is_root() {
            (0..self.client.partition_count()).collect()
        } else {
            vec![self.home(&path)?]
        };
        let mut total = DuReply::default();
        for reply in self.fan_out(partitions.into_iter().map(|p| (ids::DU, p, a.clone())))? {
            let du = DuReply::decode(&reply?).map_err(status)?;
            total.total_bytes += du.total_bytes;
            total.file_count += du.file_count;
        }
        Ok(total)
    }

    /// Up to `len` bytes from `offset`; fewer at the end of the file.
    pub fn read_at(&mut self, path: &str, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
        let path = self.resolve(path)?;
        let home = self.home(&path)?;
        let mut out = Vec::new();
        loop {
            let want = (len - out.len()).min(self.chunk_bytes(&path)) as u32;
            let at = offset + out.len() as u64;
            let reply = self
                .client
                .call(ids::READ, home, &args::read(path.as_str(), at, want))?;
            match ReadReply::decode(&reply).map_err(status)? {
                ReadReply::Local { size_bytes, data } => {
                    out.extend_from_slice(&data);
                    let at_end = offset + out.len() as u64 >= size_bytes;
                    if at_end || out.len() >= len || data.is_empty() {
                        return Ok(out);
                    }
                }
                ReadReply::Parallel(info) => {
                    let end = info.size_bytes.min(offset.saturating_add(len as u64));
                    return self.pread(&info, offset, end.saturating_sub(offset));
                }
            }
        }
    }

    /// The whole file.
    pub fn read_to_end(&mut self, path: &str) -> Result<Vec<u8>, Error> {
        self.read_at(path, 0, usize::MAX)
    }

    /// Write `data` at `offset`, extending the file as needed (a gap reads as zeros).
    /// Writing nothing changes nothing.
    pub fn write_at(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<(), Error> {
        let path = self.resolve(path)?;
        let home = self.home(&path)?;
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(Error::Status(Status::FileTooLarge))?;
        let p = path.as_str();
        if data.is_empty() {
            return Ok(());
        }
        let first = if data.len() <= INLINE_WRITE_BYTES {
            args::write(p, offset, end, data)
        } else {
            args::write(p, 0, 0, &[]) // checks permission and tells the kind
        };
        let reply = self.client.call(ids::WRITE, home, &first)?;
        match WriteReply::decode(&reply).map_err(status)? {
            WriteReply::Local { .. } if data.len() <= INLINE_WRITE_BYTES => Ok(()),
            WriteReply::Local { .. } => {
                let chunk = self.chunk_bytes(&path);
                for (i, part) in data.chunks(chunk).enumerate() {
                    let at = offset + (i * chunk) as u64;
                    let a = args::write(p, at, at + part.len() as u64, part);
                    self.client.call(ids::WRITE, home, &a)?;
                }
                Ok(())
            }
            WriteReply::Parallel(info) => {
                let info = if info.size_bytes >= end {
                    info
                } else {
                    let reply = self
                        .client
                        .call(ids::WRITE, home, &args::write(p, 0, end, &[]))?;
                    match WriteReply::decode(&reply).map_err(status)? {
                        WriteReply::Parallel(info) => info,
                        WriteReply::Local { .. } => return Err(Error::Status(Status::NotFound)),
                    }
                };
                self.pwrite(&info, &[(offset, data)])
            }
        }
    }

    /// Figure 10a: blocks `block_nos` of one file in one call (one per payload), each
    /// cut at the end of the file (empty past it).
    pub fn read_blocks(&mut self, path: &str, block_nos: &[u64]) -> Result<Vec<Vec<u8>>, Error> {
        let path = self.resolve(path)?;
        let home = self.home(&path)?;
        let per_call = self.blocks_per_call()?;
        let mut out = Vec::with_capacity(block_nos.len());
        for batch in block_nos.chunks(per_call) {
            let reply = self.client.call(
                ids::READ_BLOCKS,
                home,
                &args::read_blocks(path.as_str(), batch),
            )?;
            match BlocksReply::decode(&reply).map_err(status)? {
                BlocksReply::Local { blocks, .. } if blocks.len() == batch.len() => {
                    out.extend(blocks)
                }
                BlocksReply::Local { .. } => return Err(Error::Status(Status::BadArgs)),
                BlocksReply::Parallel(info) => {
                    let wanted: Vec<(&ParallelInfo, u64)> =
                        block_nos.iter().map(|b| (&info, *b)).collect();
                    return self.pread_blocks(&wanted);
                }
            }
        }
        Ok(out)
    }

    /// Figure 10a: write each `(block_no, data)` (at most one block) at the start of
    /// its block, in one call (one per payload).
    pub fn write_blocks(&mut self, path: &str, blocks: &[(u64, &[u8])]) -> Result<(), Error> {
        let path = self.resolve(path)?;
        let home = self.home(&path)?;
        let budget = self.payload_budget(path.as_str());
        for batch in split_by_bytes(blocks, budget, |(_, d)| d.len() + 12) {
            let reply = self.client.call(
                ids::WRITE_BLOCKS,
                home,
                &args::write_blocks(path.as_str(), batch),
            )?;
            if let WriteReply::Parallel(info) = WriteReply::decode(&reply).map_err(status)? {
                let bb = u64::from(info.block_bytes);
                let writes: Vec<(u64, &[u8])> = batch.iter().map(|(b, d)| (b * bb, *d)).collect();
                self.pwrite(&info, &writes)?;
            }
        }
        Ok(())
    }

    /// Figure 10b: one block of each file, one call per home partition, in parallel.
    pub fn read_block_each(&mut self, blocks: &[(&str, u64)]) -> Result<Vec<Vec<u8>>, Error> {
        let mut groups: HashMap<u32, Vec<(usize, FsPath, u64)>> = HashMap::new();
        for (i, (path, b)) in blocks.iter().enumerate() {
            let path = self.resolve(path)?;
            groups
                .entry(self.home(&path)?)
                .or_default()
                .push((i, path, *b));
        }
        let per_call = self.blocks_per_call()?;
        let mut calls = Vec::new();
        let mut index = Vec::new();
        for (p, group) in groups {
            for batch in group.chunks(per_call) {
                let entries: Vec<(&str, u64)> = batch
                    .iter()
                    .map(|(_, path, b)| (path.as_str(), *b))
                    .collect();
                calls.push((ids::READ_BLOCK_EACH, p, args::read_block_each(&entries)));
                index.push(batch.iter().map(|(i, _, b)| (*i, *b)).collect::<Vec<_>>());
            }
        }
        let mut out = vec![Vec::new(); blocks.len()];
        let mut parallel: Vec<(usize, ParallelInfo, u64)> = Vec::new();
        for (reply, entries) in self.fan_out(calls)?.into_iter().zip(index) {
            let replies = BlockReply::decode_list(&reply?).map_err(status)?;
            if replies.len() != entries.len() {
                return Err(Error::Status(Status::BadArgs));
            }
            for (reply, (i, b)) in replies.into_iter().zip(entries) {
                match reply {
                    BlockReply::Local(data) => out[i] = data,
                    BlockReply::Parallel(info) => parallel.push((i, info, b)),
                }
            }
        }
        let wanted: Vec<(&ParallelInfo, u64)> =
            parallel.iter().map(|(_, info, b)| (info, *b)).collect();
        for ((i, _, _), data) in parallel.iter().zip(self.pread_blocks(&wanted)?) {
            out[*i] = data;
        }
        Ok(out)
    }

    /// Figure 10b: write one block in each file; one call per home partition (each a
    /// transaction), in parallel.
    pub fn write_block_each(&mut self, blocks: &[(&str, u64, &[u8])]) -> Result<(), Error> {
        let mut groups: HashMap<u32, Vec<BlockWrite<'_>>> = HashMap::new();
        for (path, b, data) in blocks {
            let path = self.resolve(path)?;
            groups
                .entry(self.home(&path)?)
                .or_default()
                .push((path, *b, data));
        }
        let mut calls = Vec::new();
        let mut index = Vec::new();
        let budget = self.payload_budget("");
        for (p, group) in &groups {
            for batch in split_by_bytes(group, budget, |(path, _, d)| {
                path.as_str().len() + d.len() + 16
            }) {
                let entries: Vec<(&str, u64, &[u8])> = batch
                    .iter()
                    .map(|(path, b, d)| (path.as_str(), *b, *d))
                    .collect();
                calls.push((ids::WRITE_BLOCK_EACH, *p, args::write_block_each(&entries)));
                index.push(batch);
            }
        }
        let mut parallel: Vec<(ParallelInfo, u64, &[u8])> = Vec::new();
        for (reply, batch) in self.fan_out(calls)?.into_iter().zip(index) {
            let replies = WriteReply::decode_list(&reply?).map_err(status)?;
            for (reply, (_, b, data)) in replies.into_iter().zip(batch) {
                if let WriteReply::Parallel(info) = reply {
                    parallel.push((info, *b, data));
                }
            }
        }
        for (info, b, data) in parallel {
            self.pwrite(&info, &[(b * u64::from(info.block_bytes), data)])?;
        }
        Ok(())
    }

    /// Submit every `(proc_id, partition, args)` at once, then wait for them all;
    /// their results in order. Only a transport failure is an `Err` of the whole.
    fn fan_out(
        &mut self,
        calls: impl IntoIterator<Item = (u32, u32, Vec<u8>)>,
    ) -> Result<Vec<Result<Vec<u8>, Error>>, Error> {
        assert_eq!(
            self.client.in_flight(),
            0,
            "fs calls need a client with nothing in flight"
        );
        let mut ids_ = Vec::new();
        for (proc_id, partition, a) in calls {
            ids_.push(self.client.submit(proc_id, partition, &a)?);
        }
        self.client.flush();
        let mut done = Vec::new();
        while done.len() < ids_.len() {
            let missing = ids_.len() - done.len();
            self.client.wait(&mut done, missing)?;
        }
        let mut by_id: HashMap<u64, Result<Vec<u8>, Error>> = done
            .into_iter()
            .map(|c| (c.request_id, c.into_result()))
            .collect();
        let out: Vec<_> = ids_
            .iter()
            .map(|id| by_id.remove(id).expect("every call completes"))
            .collect();
        assert_eq!(self.client.in_flight(), 0);
        Ok(out)
    }

    /// Read bytes `[offset, offset + len)` of a parallel file (within its size).
    fn pread(&mut self, info: &ParallelInfo, offset: u64, len: u64) -> Result<Vec<u8>, Error> {
        let len = usize::try_from(len).map_err(|_| Error::Status(Status::PayloadTooLarge))?;
        let mut out = vec![0u8; len];
        if len == 0 {
            return Ok(out);
        }
        let bb = u64::from(info.block_bytes.max(1));
        let (first, last) = (offset / bb, (offset + len as u64 - 1) / bb);
        let wanted: Vec<(&ParallelInfo, u64)> = (first..=last).map(|b| (info, b)).collect();
        for ((_, b), data) in wanted.iter().zip(self.pread_blocks(&wanted)?) {
            // `data` is block `b` cut at the end of the file; copy its overlap.
            let start = b * bb;
            let from = offset.max(start);
            let to = (offset + len as u64).min(start + data.len() as u64);
            if from < to {
                out[(from - offset) as usize..(to - offset) as usize]
                    .copy_from_slice(&data[(from - start) as usize..(to - start) as usize]);
            }
        }
        Ok(out)
    }

    /// Blocks of parallel files, each cut at the end of its file (holes are zeros):
    /// one `pread_blocks` call per partition and file (more past a payload), all in
    /// flight together.
    fn pread_blocks(&mut self, wanted: &[(&ParallelInfo, u64)]) -> Result<Vec<Vec<u8>>, Error> {
        let n = u64::from(self.client.partition_count());
        let mut groups: HashMap<(u64, u32), Vec<u64>> = HashMap::new();
        let mut max_block = 1usize;
        for (info, b) in wanted {
            groups
                .entry((info.file_id, (b % n) as u32))
                .or_default()
                .push(*b);
            max_block = max_block.max(info.block_bytes as usize);
        }
        let per_call = ((self
            .client
            .max_payload_bytes()
            .saturating_sub(FRAME_SLACK_BYTES))
            / (max_block + BLOCK_FRAME_BYTES))
            .clamp(1, BATCH_MAX);
        let mut calls = Vec::new();
        for ((file_id, p), mut blocks) in groups {
            blocks.sort_unstable();
            blocks.dedup();
            for batch in blocks.chunks(per_call) {
                calls.push((
                    ids::PREAD_BLOCKS,
                    p,
                    args::pread_blocks(file_id, batch),
                    file_id,
                ));
            }
        }
        let file_ids: Vec<u64> = calls.iter().map(|c| c.3).collect();
        let results = self.fan_out(calls.into_iter().map(|(id, p, a, _)| (id, p, a)))?;
        let mut found: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
        for (result, file_id) in results.into_iter().zip(file_ids) {
            for (b, data) in decode_pread(&result?).map_err(status)? {
                found.insert((file_id, b), data);
            }
        }
        Ok(wanted
            .iter()
            .map(|(info, b)| {
                let bb = u64::from(info.block_bytes);
                let len = info.size_bytes.saturating_sub(b.saturating_mul(bb)).min(bb) as usize;
                let mut block = found.get(&(info.file_id, *b)).cloned().unwrap_or_default();
                block.resize(len, 0);
                block
            })
            .collect())
    }

    /// Write each `(offset, data)` into a parallel file whose size already covers
    /// them: split into blocks, one `pwrite_blocks` call per partition (more past a
    /// payload), all in flight together.
    fn pwrite(&mut self, info: &ParallelInfo, writes: &[(u64, &[u8])]) -> Result<(), Error> {
        let n = u64::from(self.client.partition_count());
        let bb = u64::from(info.block_bytes.max(1));
        let mut by_partition: HashMap<u32, Vec<BlockPiece<'_>>> = HashMap::new();
        for (offset, data) in writes {
            let (mut pos, mut rest) = (*offset, *data);
            while !rest.is_empty() {
                let (b, within) = (pos / bb, pos % bb);
                let (piece, tail) = rest.split_at(((bb - within) as usize).min(rest.len()));
                by_partition
                    .entry((b % n) as u32)
                    .or_default()
                    .push((b, within as u32, piece));
                pos += piece.len() as u64;
                rest = tail;
            }
        }
        let budget = self.payload_budget(&info.owner);
        let mut calls = Vec::new();
        for (p, blocks) in &by_partition {
            for batch in split_by_bytes(blocks, budget, |(_, _, d)| d.len() + BLOCK_FRAME_BYTES) {
                calls.push((
                    ids::PWRITE_BLOCKS,
                    *p,
                    args::pwrite_blocks(info.file_id, &info.owner, info.mode, batch),
                ));
            }
        }
        for result in self.fan_out(calls)? {
            result?;
        }
        Ok(())
    }

    /// Bytes of one localized read or write call for `path`.
    fn chunk_bytes(&self, path: &FsPath) -> usize {
        CHUNK_BYTES.min(self.payload_budget(path.as_str())).max(1)
    }

    /// Bytes of data a call may carry beside `name` and its header fields.
    fn payload_budget(&self, name: &str) -> usize {
        self.client
            .max_payload_bytes()
            .saturating_sub(FRAME_SLACK_BYTES + name.len())
            .max(1)
    }

    /// Localized blocks per batched read call, so that the reply fits a payload.
    fn blocks_per_call(&mut self) -> Result<usize, Error> {
        let block_bytes = match self.block_bytes_local {
            Some(b) => b,
            None => {
                let b = (self.metadata("/")?.block_bytes as usize).max(1);
                self.block_bytes_local = Some(b);
                b
            }
        };
        let per_call = self.payload_budget("") / (block_bytes + BLOCK_FRAME_BYTES);
        Ok(per_call.clamp(1, BATCH_MAX))
    }
}

/// Split `items` into runs of at most [`BATCH_MAX`] items whose `size`s sum to at most
/// `budget` (an item alone may exceed it: the server then answers `PayloadTooLarge`).
fn split_by_bytes<T>(items: &[T], budget: usize, size: impl Fn(&T) -> usize) -> Vec<&[T]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, item) in items.iter().enumerate() {
        let s = size(item);
        if i > start && (bytes + s > budget || i - start >= BATCH_MAX) {
            out.push(&items[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += s;
    }
    if start < items.len() {
        out.push(&items[start..]);
    }
    assert_eq!(out.iter().map(|b| b.len()).sum::<usize>(), items.len());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_by_bytes_respects_the_budget_and_keeps_every_item() {
        let items: Vec<usize> = vec![3, 3, 3, 10, 1, 1];
        let runs = split_by_bytes(&items, 6, |x| *x);
        assert_eq!(runs, vec![&[3, 3][..], &[3][..], &[10][..], &[1, 1][..]]);
        assert!(split_by_bytes(&[] as &[usize], 6, |x| *x).is_empty());
        let many = vec![0usize; BATCH_MAX + 1];
        assert_eq!(split_by_bytes(&many, 1, |x| *x).len(), 2);
    }
}
