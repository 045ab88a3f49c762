//! Blocks of parallel files, on every partition: block `b` of a file lives on
//! partition `b % partition_count` (`WrongPartition` elsewhere), keyed by the file's
//! id. The client fans these calls out, one per partition, and waits for them all.
//!
//! A block partition cannot see the file's `Directory` row, so each block row carries
//! the file's owner and mode and the partition checks the caller against them. A
//! block that does not exist yet is created with the owner and mode the home
//! partition returned to the client (`write`, step one of a parallel write), and the
//! caller is checked against those. Limitation: the block partition trusts that
//! owner and mode as the client carries them, so a client that forges them can
//! create blocks (never overwrite existing ones) in a file it may not write, where
//! the file has a hole or beyond its recorded size.

use crate::fs::access::{require, Want};
use crate::fs::schema::{FsTables, ParallelBlock, MODE_MAX};
use crate::fs::wire::BATCH_MAX;
use crate::schema::PartitionDb;
use tabos_engine::{put_bytes, put_u32, put_u64, ArgReader, Ctx, UserName};
use tabos_transport::Status;

fn read_count(r: &mut ArgReader<'_>) -> Result<usize, Status> {
    let count = r.u32()? as usize;
    if count > BATCH_MAX {
        return Err(Status::BadArgs);
    }
    Ok(count)
}

impl FsTables {
    /// Block `block_no` lies on this partition (`WrongPartition`) and within the
    /// largest file (`BadArgs`).
    fn check_block_here(&self, block_no: u64) -> Result<(), Status> {
        if block_no >= FsTables::block_count(self.file_bytes_max, self.block_bytes_parallel) {
            return Err(Status::BadArgs);
        }
        if block_no % u64::from(self.partition_count) != u64::from(self.partition) {
            return Err(Status::WrongPartition);
        }
        Ok(())
    }
}

/// `pread_blocks(u64 file_id, u32 count, count x u64 block_no)`: the stored blocks
/// among those asked, each checked for `r` against its owner and mode. Replies
/// `u32 count`, then per block found `u64 block_no` and `bytes data` (missing blocks
/// are holes: zeros to the client).
pub(super) fn pread_blocks(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let file_id = r.u64()?;
    let count = read_count(&mut r)?;
    let fs = &ctx.db.fs;
    let mut found = 0u32;
    let mut body = Vec::new();
    for _ in 0..count {
        let block_no = r.u64()?;
        fs.check_block_here(block_no)?;
        let Some(block) = fs.parallel.get(&(file_id, block_no)) else {
            continue;
        };
        require(
            &ctx.caller.user,
            &block.f_owner,
            block.protection_info,
            Want::Read,
        )?;
        if body.len() + block.bytes.len() + 64 > ctx.max_reply_bytes {
            return Err(Status::PayloadTooLarge);
        }
        put_u64(&mut body, block_no);
        put_bytes(&mut body, &block.bytes);
        found += 1;
    }
    r.finish()?;
    put_u32(ctx.reply, found);
    ctx.reply.extend_from_slice(&body);
    Ok(())
}

/// `pwrite_blocks(u64 file_id, str owner, u32 mode, u32 count, count x (u64 block_no,
/// u32 offset, bytes data))`: write each `data` at `offset` within its block
/// (`offset + len <= block size`, else `BadArgs`). An existing block needs `w` by its
/// own owner and mode; a new one is created with `owner` and `mode`, which must grant
/// the caller `w` (see the module limitation).
pub(super) fn pwrite_blocks(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let file_id = r.u64()?;
    let owner = UserName::new(r.str()?).ok_or(Status::BadArgs)?;
    let mode = r.u32()?;
    if mode > MODE_MAX || file_id == 0 {
        return Err(Status::BadArgs);
    }
    let count = read_count(&mut r)?;
    let caller = ctx.caller.user;
    let fs = &mut ctx.db.fs;
    let block_bytes = fs.block_bytes_parallel;
    for _ in 0..count {
        let block_no = r.u64()?;
        let within = r.u32()? as usize;
        let data = r.bytes()?;
        if within > block_bytes || data.len() > block_bytes - within {
            return Err(Status::BadArgs);
        }
        fs.check_block_here(block_no)?;
        let key = (file_id, block_no);
        if let Some(block) = fs.parallel.get(&key) {
            require(&caller, &block.f_owner, block.protection_info, Want::Write)?;
            fs.parallel
                .update(&key, |block| {
                    if block.bytes.len() < within + data.len() {
                        block.bytes.resize(within + data.len(), 0);
                    }
                    block.bytes[within..within + data.len()].copy_from_slice(data);
                })
                .expect("the block exists");
        } else {
            require(&caller, &owner, mode, Want::Write)?;
            let mut bytes = vec![0u8; within + data.len()];
            bytes[within..].copy_from_slice(data);
            fs.parallel.insert(ParallelBlock {
                file_id,
                block_no,
                f_owner: owner,
                protection_info: mode,
                bytes,
            })?;
        }
        assert!(fs
            .parallel
            .get(&key)
            .is_some_and(|b| b.bytes.len() <= block_bytes));
    }
    r.finish()
}

/// `pdelete_blocks(u64 file_id, u64 block_count)`: delete this partition's blocks of
/// the file among blocks `0..block_count` (at most the blocks of the largest file,
/// else `BadArgs`). The caller needs `w` by each block's owner and mode
/// (`PermissionDenied`, and nothing is deleted).
pub(super) fn pdelete_blocks(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let file_id = r.u64()?;
    let block_count = r.u64()?;
    r.finish()?;
    let caller = ctx.caller.user;
    let fs = &mut ctx.db.fs;
    if block_count > FsTables::block_count(fs.file_bytes_max, fs.block_bytes_parallel) {
        return Err(Status::BadArgs);
    }
    let step = u64::from(fs.partition_count);
    let mut block_no = u64::from(fs.partition);
    while block_no < block_count {
        if let Some(block) = fs.parallel.delete(&(file_id, block_no)) {
            require(&caller, &block.f_owner, block.protection_info, Want::Write)?;
        }
        block_no += step;
    }
    Ok(())
}
