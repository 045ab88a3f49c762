//! File data on the home partition: `read` and `write` at an offset, and the batched
//! operations of the paper's figure 10: many blocks of one file (`read_blocks`,
//! `write_blocks`) and one block in each of many files (`read_block_each`,
//! `write_block_each`), each in one call.
//!
//! A localized file's bytes are served here. For a parallel file these procedures
//! check permission, extend the size for a write, and reply [`ParallelInfo`]: the
//! client then moves the bytes with the block partitions (see `parallel.rs`).
//!
//! Writes are sparse-friendly: the size becomes `max(size, end)`, missing blocks read
//! as zeros. A write that extends a file past `file_bytes_max` is `FileTooLarge`.

use crate::fs::access::{read_path, Entry, Want};
use crate::fs::path::FsPath;
use crate::fs::schema::{DirRow, EntryKind, FsTables, LocalBlock};
use crate::fs::wire::{put_parallel, ParallelInfo, WriteReply, BATCH_MAX, TAG_LOCAL};
use crate::schema::PartitionDb;
use tabos_engine::{put_u32, put_u64, put_u8, ArgReader, Ctx, UserName};
use tabos_transport::Status;

/// Bytes of reply framing around one block or data run (tag, lengths, sizes).
const REPLY_OVERHEAD_BYTES: usize = 64;

impl FsTables {
    /// The file at `path` (on this partition), if `caller` may `want` it.
    fn open_file(&self, caller: &UserName, path: &FsPath, want: Want) -> Result<DirRow, Status> {
        self.check_home(path)?;
        let row = self.lookup_file(path)?;
        Entry::Row(row).require(caller, want)?;
        Ok(row.clone())
    }

    fn parallel_info(&self, row: &DirRow) -> ParallelInfo {
        assert_eq!(row.content_type, EntryKind::ParallelFile);
        ParallelInfo {
            size_bytes: row.size_bytes,
            file_id: row.file_id,
            owner: row.user_name.to_string(),
            mode: row.protection_info,
            block_bytes: self.block_bytes_parallel as u32,
        }
    }

    /// Make the file `row` at least `end` bytes long; returns its new size.
    /// `FileTooLarge` past `file_bytes_max`.
    fn extend(&mut self, row: &mut DirRow, end: u64) -> Result<u64, Status> {
        if end > self.file_bytes_max {
            return Err(Status::FileTooLarge);
        }
        if end > row.size_bytes {
            row.size_bytes = end;
            self.dirs
                .update(&(row.d_name.clone(), row.content.clone()), |r| {
                    r.size_bytes = end
                })
                .expect("the file exists");
        }
        Ok(row.size_bytes)
    }

    /// Append bytes `[offset, offset + len)` of the localized file `file_id` to `out`;
    /// the range lies within the file.
    fn read_local(&self, file_id: u64, offset: u64, len: usize, out: &mut Vec<u8>) {
        let block_bytes = self.block_bytes_local as u64;
        let (mut pos, end) = (offset, offset + len as u64);
        let mut key = (file_id, 0);
        let before = out.len();
        while pos < end {
            key.1 = pos / block_bytes;
            let within = (pos % block_bytes) as usize;
            let n = (block_bytes - within as u64).min(end - pos) as usize;
            let stored: &[u8] = self.local.get(&key).map_or(&[], |b| &b.bytes);
            let have = stored.len().saturating_sub(within).min(n);
            if have > 0 {
                out.extend_from_slice(&stored[within..within + have]);
            }
            out.resize(out.len() + (n - have), 0);
            pos += n as u64;
        }
        assert_eq!(out.len() - before, len);
    }

    /// Write `data` at `offset` into the localized file `file_id` of `owner`, whose
    /// size already covers the range. `TableFull` when blocks run out.
    fn write_local(
        &mut self,
        file_id: u64,
        owner: UserName,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Status> {
        let block_bytes = self.block_bytes_local as u64;
        let mut pos = offset;
        let mut rest = data;
        let mut key = (file_id, 0);
        while !rest.is_empty() {
            key.1 = pos / block_bytes;
            let within = (pos % block_bytes) as usize;
            let n = ((block_bytes as usize) - within).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            let stored = self.local.get(&key).map(|b| b.bytes.len());
            if within == 0 && stored.is_some_and(|len| len <= n) {
                // The write covers every stored byte: replace the row, so the old one
                // moves into the undo log instead of being copied there.
                self.local.replace(LocalBlock {
                    file_id,
                    block_no: key.1,
                    f_owner: owner,
                    bytes: chunk.to_vec(),
                    p_key: self.partition,
                })?;
                pos += n as u64;
                rest = tail;
                continue;
            }
            let updated = self.local.update(&key, |block| {
                if block.bytes.len() < within + n {
                    block.bytes.resize(within + n, 0);
                }
                block.bytes[within..within + n].copy_from_slice(chunk);
            });
            if updated.is_none() {
                let mut bytes = vec![0u8; within + n];
                bytes[within..].copy_from_slice(chunk);
                self.local.insert(LocalBlock {
                    file_id,
                    block_no: key.1,
                    f_owner: owner,
                    bytes,
                    p_key: self.partition,
                })?;
            }
            pos += n as u64;
            rest = tail;
        }
        Ok(())
    }

    /// Put block `block_no` of the localized file `file_id` of `size_bytes` as `bytes`,
    /// cut at the end of the file (empty past it).
    fn put_local_block(&self, file_id: u64, size_bytes: u64, block_no: u64, out: &mut Vec<u8>) {
        let block_bytes = self.block_bytes_local as u64;
        let start = block_no.saturating_mul(block_bytes);
        let len = size_bytes.saturating_sub(start).min(block_bytes) as usize;
        put_u32(out, len as u32);
        self.read_local(file_id, start, len, out);
    }
}

/// `read(bytes path, u64 offset, u32 len)`: needs `r`. A localized file replies tag 0,
/// `u64 size` and `bytes data`: the bytes from `offset`, up to `len` and stopping at
/// the end of the file. A parallel file replies tag 1 and [`ParallelInfo`].
pub(super) fn read(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let path = read_path(&mut r)?;
    let offset = r.u64()?;
    let len = r.u32()?;
    r.finish()?;
    let fs = &ctx.db.fs;
    let row = fs.open_file(&ctx.caller.user, &path, Want::Read)?;
    if row.content_type == EntryKind::ParallelFile {
        put_parallel(ctx.reply, &fs.parallel_info(&row));
        return Ok(());
    }
    let len = row.size_bytes.saturating_sub(offset).min(u64::from(len)) as usize;
    if len + REPLY_OVERHEAD_BYTES > ctx.max_reply_bytes {
        return Err(Status::PayloadTooLarge);
    }
    put_u8(ctx.reply, TAG_LOCAL);
    put_u64(ctx.reply, row.size_bytes);
    put_u32(ctx.reply, len as u32);
    fs.read_local(row.file_id, offset, len, ctx.reply);
    Ok(())
}

/// `write(bytes path, u64 offset, u64 end, bytes data)`: needs `w`. Makes the file at
/// least `end` bytes long (`offset + len(data) <= end`, else `BadArgs`), then writes
/// `data` at `offset`. Replies [`WriteReply`]: for a parallel file nothing is written
/// here (the client sends the bytes to the block partitions), so a client sends the
/// data of a parallel write only with `pwrite_blocks`.
pub(super) fn write(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let path = read_path(&mut r)?;
    let offset = r.u64()?;
    let end = r.u64()?;
    let data = r.bytes()?;
    r.finish()?;
    let data_end = offset
        .checked_add(data.len() as u64)
        .ok_or(Status::FileTooLarge)?;
    if data_end > end {
        return Err(Status::BadArgs);
    }
    let fs = &mut ctx.db.fs;
    let mut row = fs.open_file(&ctx.caller.user, &path, Want::Write)?;
    let size_bytes = fs.extend(&mut row, end)?;
    if row.content_type == EntryKind::ParallelFile {
        WriteReply::encode_parallel(ctx.reply, &fs.parallel_info(&row));
        return Ok(());
    }
    fs.write_local(row.file_id, row.user_name, offset, data)?;
    WriteReply::encode_local(ctx.reply, size_bytes);
    Ok(())
}

fn read_count(r: &mut ArgReader<'_>) -> Result<usize, Status> {
    let count = r.u32()? as usize;
    if count > BATCH_MAX {
        return Err(Status::BadArgs);
    }
    Ok(count)
}

/// The end of `len` bytes written at block `block_no`; `FileTooLarge` on overflow.
fn block_end(block_no: u64, block_bytes: usize, len: usize) -> Result<u64, Status> {
    block_no
        .checked_mul(block_bytes as u64)
        .and_then(|start| start.checked_add(len as u64))
        .ok_or(Status::FileTooLarge)
}

/// `read_blocks(bytes path, u32 count, count x u64 block_no)` (figure 10a): needs `r`.
/// A localized file replies tag 0, `u64 size`, `u32 count` and each block as `bytes`
/// (cut at the end of the file); a parallel file replies tag 1 and [`ParallelInfo`].
pub(super) fn read_blocks(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let path = read_path(&mut r)?;
    let count = read_count(&mut r)?;
    let mut block_nos = Vec::with_capacity(count);
    for _ in 0..count {
        block_nos.push(r.u64()?);
    }
    r.finish()?;
    let fs = &ctx.db.fs;
    let row = fs.open_file(&ctx.caller.user, &path, Want::Read)?;
    if row.content_type == EntryKind::ParallelFile {
        put_parallel(ctx.reply, &fs.parallel_info(&row));
        return Ok(());
    }
    put_u8(ctx.reply, TAG_LOCAL);
    put_u64(ctx.reply, row.size_bytes);
    put_u32(ctx.reply, count as u32);
    for block_no in block_nos {
        if ctx.reply.len() + fs.block_bytes_local + REPLY_OVERHEAD_BYTES > ctx.max_reply_bytes {
            return Err(Status::PayloadTooLarge);
        }
        fs.put_local_block(row.file_id, row.size_bytes, block_no, ctx.reply);
    }
    Ok(())
}

/// `write_blocks(bytes path, u32 count, count x (u64 block_no, bytes data))` (figure
/// 10a): needs `w`; each `data` at most one block (`BadArgs`), written at the start of
/// its block. Replies [`WriteReply`], as `write`.
pub(super) fn write_blocks(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let path = read_path(&mut r)?;
    let count = read_count(&mut r)?;
    let mut blocks = Vec::with_capacity(count);
    for _ in 0..count {
        let block_no = r.u64()?;
        blocks.push((block_no, r.bytes()?));
    }
    r.finish()?;
    let fs = &mut ctx.db.fs;
    let mut row = fs.open_file(&ctx.caller.user, &path, Want::Write)?;
    let block_bytes = fs.block_bytes(row.content_type);
    let mut end = 0;
    for (block_no, data) in &blocks {
        if data.len() > block_bytes {
            return Err(Status::BadArgs);
        }
        end = end.max(block_end(*block_no, block_bytes, data.len())?);
    }
    let size_bytes = fs.extend(&mut row, end)?;
    if row.content_type == EntryKind::ParallelFile {
        WriteReply::encode_parallel(ctx.reply, &fs.parallel_info(&row));
        return Ok(());
    }
    for (block_no, data) in blocks {
        fs.write_local(
            row.file_id,
            row.user_name,
            block_no * block_bytes as u64,
            data,
        )?;
    }
    WriteReply::encode_local(ctx.reply, size_bytes);
    Ok(())
}

/// `read_block_each(u32 count, count x (bytes path, u64 block_no))` (figure 10b): one
/// block of each file, all on this partition; needs `r` on each. Replies `u32 count`,
/// then per entry tag 0 and the block as `bytes`, or tag 1 and [`ParallelInfo`].
pub(super) fn read_block_each(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let count = read_count(&mut r)?;
    let fs = &ctx.db.fs;
    put_u32(ctx.reply, count as u32);
    for _ in 0..count {
        let path = read_path(&mut r)?;
        let block_no = r.u64()?;
        let row = fs.open_file(&ctx.caller.user, &path, Want::Read)?;
        if row.content_type == EntryKind::ParallelFile {
            put_parallel(ctx.reply, &fs.parallel_info(&row));
            continue;
        }
        if ctx.reply.len() + fs.block_bytes_local + REPLY_OVERHEAD_BYTES > ctx.max_reply_bytes {
            return Err(Status::PayloadTooLarge);
        }
        put_u8(ctx.reply, TAG_LOCAL);
        fs.put_local_block(row.file_id, row.size_bytes, block_no, ctx.reply);
    }
    r.finish()
}

/// `write_block_each(u32 count, count x (bytes path, u64 block_no, bytes data))`
/// (figure 10b): one block of each file, all on this partition, in one transaction;
/// needs `w` on each. Replies `u32 count` and a [`WriteReply`] per entry.
pub(super) fn write_block_each(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let count = read_count(&mut r)?;
    let fs = &mut ctx.db.fs;
    put_u32(ctx.reply, count as u32);
    for _ in 0..count {
        let path = read_path(&mut r)?;
        let block_no = r.u64()?;
        let data = r.bytes()?;
        let mut row = fs.open_file(&ctx.caller.user, &path, Want::Write)?;
        let block_bytes = fs.block_bytes(row.content_type);
        if data.len() > block_bytes {
            return Err(Status::BadArgs);
        }
        let size_bytes = fs.extend(&mut row, block_end(block_no, block_bytes, data.len())?)?;
        if row.content_type == EntryKind::ParallelFile {
            WriteReply::encode_parallel(ctx.reply, &fs.parallel_info(&row));
            continue;
        }
        fs.write_local(
            row.file_id,
            row.user_name,
            block_no * block_bytes as u64,
            data,
        )?;
        WriteReply::encode_local(ctx.reply, size_bytes);
    }
    r.finish()
}
