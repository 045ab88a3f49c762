//! A test client over the [`Harness`]: the same steps the client library takes
//! (route each path to its user's home partition, fan parallel-file blocks out to
//! every partition, collate), so model tests drive the procedures end to end.

use std::collections::BTreeMap;

use crate::fs::ids;
use crate::fs::path::FsPath;
use crate::fs::wire::{
    args, decode_pread, BlockReply, BlocksReply, DirEntry, DuReply, Listing, ParallelInfo,
    ReadReply, Removed, Stat, WriteReply,
};
use crate::fs::EntryKind;
use crate::testing::Harness;
use crate::DbLimits;
use tabos_engine::Caller;
use tabos_transport::wire::partition_for_key;
use tabos_transport::Status;

/// Part of one parallel block: `(block_no, offset within the block, bytes)`.
type BlockPiece<'a> = (u64, u32, &'a [u8]);

/// Every partition of a node, called the way a client calls them.
#[derive(Debug)]
pub struct Sim {
    pub h: Harness,
    pub partition_count: u32,
}

impl Sim {
    pub fn new(partition_count: u32, limits: DbLimits) -> Sim {
        Sim {
            h: Harness::new(partition_count, limits),
            partition_count,
        }
    }

    /// The home partition of the user named first in `path`; 0 for `/` or a path
    /// that does not parse (the procedure reports why).
    pub fn home(&self, path: &str) -> u32 {
        match FsPath::parse(path).ok().as_ref().and_then(|p| p.user()) {
            Some(user) => partition_for_key(user.as_bytes(), self.partition_count),
            None => 0,
        }
    }

    pub fn call(
        &mut self,
        who: Caller,
        partition: u32,
        id: u32,
        args: &[u8],
    ) -> Result<Vec<u8>, Status> {
        self.h.call_as(who, partition, id, args)
    }

    /// Run a single-partition procedure without the harness's consistency check after
    /// it (O(rows) per call): for loading many rows; check once afterwards.
    pub fn call_unchecked(
        &mut self,
        who: Caller,
        partition: u32,
        id: u32,
        args: &[u8],
    ) -> Result<Vec<u8>, Status> {
        let registry = crate::registry();
        let def = registry.get(id).expect("a registered procedure");
        assert_eq!(def.scope, tabos_engine::Scope::Single);
        let mut reply = Vec::new();
        let db = &mut self.h.dbs[partition as usize];
        let mut ctx = tabos_engine::Ctx::new(
            db,
            partition,
            self.partition_count,
            who,
            args,
            &mut reply,
            self.h.max_reply_bytes,
        );
        match tabos_engine::execute(def, &mut ctx) {
            Status::Ok => Ok(reply),
            status => Err(status),
        }
    }

    pub fn useradd(&mut self, who: Caller, name: &str) -> Result<(), Status> {
        self.call(who, 0, ids::USERADD, &args::user(name)).map(drop)
    }

    pub fn mkdir(&mut self, who: Caller, path: &str, mode: u32) -> Result<(), Status> {
        let home = self.home(path);
        self.call(who, home, ids::MKDIR, &args::mkdir(path, mode))
            .map(drop)
    }

    pub fn create(
        &mut self,
        who: Caller,
        path: &str,
        parallel: bool,
        mode: u32,
    ) -> Result<(), Status> {
        let home = self.home(path);
        self.call(who, home, ids::CREATE, &args::create(path, parallel, mode))
            .map(drop)
    }

    pub fn stat(&mut self, who: Caller, path: &str) -> Result<Stat, Status> {
        let home = self.home(path);
        let reply = self.call(who, home, ids::STAT, &args::path(path))?;
        let mut r = tabos_engine::ArgReader::new(&reply);
        let stat = Stat::decode(&mut r)?;
        r.finish()?;
        Ok(stat)
    }

    /// Delete, then delete a parallel file's blocks on every partition.
    pub fn delete(&mut self, who: Caller, path: &str) -> Result<(), Status> {
        let home = self.home(path);
        let removed = Removed::decode(&self.call(who, home, ids::DELETE, &args::path(path))?)?;
        if removed.kind == EntryKind::ParallelFile {
            let blocks = removed.size_bytes.div_ceil(u64::from(removed.block_bytes));
            for p in 0..self.partition_count {
                self.call(
                    who,
                    p,
                    ids::PDELETE_BLOCKS,
                    &args::pdelete_blocks(removed.file_id, blocks),
                )
                .expect("the home partition checked the permission");
            }
        }
        Ok(())
    }

    /// The whole listing, `page` entries per call.
    pub fn list(&mut self, who: Caller, path: &str, page: u32) -> Result<Vec<DirEntry>, Status> {
        let home = self.home(path);
        let mut out: Vec<DirEntry> = Vec::new();
        loop {
            let after = out.last().map_or("", |e| e.name.as_str()).to_string();
            let reply = self.call(who, home, ids::LIST, &args::list(path, &after, page))?;
            let listing = Listing::decode(&reply)?;
            assert!(listing.entries.len() <= page as usize);
            let more = listing.more;
            out.extend(listing.entries);
            if !more {
                return Ok(out);
            }
            assert!(page > 0, "a zero page never advances");
        }
    }

    pub fn rename(&mut self, who: Caller, from: &str, to: &str) -> Result<(), Status> {
        let home = self.home(from);
        self.call(who, home, ids::RENAME, &args::rename(from, to))
            .map(drop)
    }

    /// `du`; for `/`, summed over every partition.
    pub fn du(&mut self, who: Caller, path: &str, min: u64) -> Result<DuReply, Status> {
        let parts: Vec<u32> = if FsPath::parse(path).is_ok_and(|p| p.is_root()) {
            (0..self.partition_count).collect()
        } else {
            vec![self.home(path)]
        };
        let mut total = DuReply::default();
        for p in parts {
            let du = DuReply::decode(&self.call(who, p, ids::DU, &args::du(path, min))?)?;
            total.total_bytes += du.total_bytes;
            total.file_count += du.file_count;
        }
        Ok(total)
    }

    /// Read a parallel file's bytes `[offset, offset + len)` (within its size).
    fn pread(
        &mut self,
        who: Caller,
        info: &ParallelInfo,
        offset: u64,
        len: u64,
    ) -> Result<Vec<u8>, Status> {
        let block_bytes = u64::from(info.block_bytes);
        let mut out = vec![0u8; len as usize];
        if len == 0 {
            return Ok(out);
        }
        let (first, last) = (offset / block_bytes, (offset + len - 1) / block_bytes);
        let mut by_partition: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
        for b in first..=last {
            by_partition
                .entry((b % u64::from(self.partition_count)) as u32)
                .or_default()
                .push(b);
        }
        for (p, blocks) in by_partition {
            let reply = self.call(
                who,
                p,
                ids::PREAD_BLOCKS,
                &args::pread_blocks(info.file_id, &blocks),
            )?;
            for (b, bytes) in decode_pread(&reply)? {
                assert!(blocks.contains(&b), "a block that was not asked for");
                let start = b * block_bytes;
                for (i, byte) in bytes.iter().enumerate() {
                    let at = start + i as u64;
                    if at >= offset && at < offset + len {
                        out[(at - offset) as usize] = *byte;
                    }
                }
            }
        }
        Ok(out)
    }

    /// Write bytes of a parallel file at `offset`, block by block, one call per
    /// partition.
    fn pwrite(
        &mut self,
        who: Caller,
        info: &ParallelInfo,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Status> {
        let block_bytes = u64::from(info.block_bytes);
        let mut by_partition: BTreeMap<u32, Vec<BlockPiece<'_>>> = BTreeMap::new();
        let mut pos = offset;
        let mut rest = data;
        while !rest.is_empty() {
            let b = pos / block_bytes;
            let within = pos % block_bytes;
            let n = ((block_bytes - within) as usize).min(rest.len());
            let (chunk, tail) = rest.split_at(n);
            by_partition
                .entry((b % u64::from(self.partition_count)) as u32)
                .or_default()
                .push((b, within as u32, chunk));
            pos += n as u64;
            rest = tail;
        }
        for (p, blocks) in by_partition {
            let a = args::pwrite_blocks(info.file_id, &info.owner, info.mode, &blocks);
            self.call(who, p, ids::PWRITE_BLOCKS, &a)?;
        }
        Ok(())
    }

    pub fn read(
        &mut self,
        who: Caller,
        path: &str,
        offset: u64,
        len: u32,
    ) -> Result<Vec<u8>, Status> {
        let home = self.home(path);
        match ReadReply::decode(&self.call(
            who,
            home,
            ids::READ,
            &args::read(path, offset, len),
        )?)? {
            ReadReply::Local { data, size_bytes } => {
                assert!(data.len() as u64 <= size_bytes.saturating_sub(offset));
                Ok(data)
            }
            ReadReply::Parallel(info) => {
                let len = info.size_bytes.saturating_sub(offset).min(u64::from(len));
                self.pread(who, &info, offset, len)
            }
        }
    }

    pub fn write(
        &mut self,
        who: Caller,
        path: &str,
        offset: u64,
        data: &[u8],
    ) -> Result<(), Status> {
        let home = self.home(path);
        let end = offset.saturating_add(data.len() as u64);
        // The data goes to the home partition only while the file's kind is unknown
        // and the write is small; a parallel file ignores it there.
        let a = args::write(path, offset, end, data);
        match WriteReply::decode(&self.call(who, home, ids::WRITE, &a)?)? {
            WriteReply::Local { size_bytes } => {
                assert!(size_bytes >= end);
                Ok(())
            }
            WriteReply::Parallel(info) => self.pwrite(who, &info, offset, data),
        }
    }

    pub fn read_blocks(
        &mut self,
        who: Caller,
        path: &str,
        blocks: &[u64],
    ) -> Result<Vec<Vec<u8>>, Status> {
        let home = self.home(path);
        match BlocksReply::decode(&self.call(
            who,
            home,
            ids::READ_BLOCKS,
            &args::read_blocks(path, blocks),
        )?)? {
            BlocksReply::Local { blocks: got, .. } => {
                assert_eq!(got.len(), blocks.len());
                Ok(got)
            }
            BlocksReply::Parallel(info) => blocks
                .iter()
                .map(|b| self.pread_block(who, &info, *b))
                .collect(),
        }
    }

    fn pread_block(
        &mut self,
        who: Caller,
        info: &ParallelInfo,
        block_no: u64,
    ) -> Result<Vec<u8>, Status> {
        let block_bytes = u64::from(info.block_bytes);
        let start = block_no * block_bytes;
        let len = info.size_bytes.saturating_sub(start).min(block_bytes);
        self.pread(who, info, start, len)
    }

    pub fn write_blocks(
        &mut self,
        who: Caller,
        path: &str,
        blocks: &[(u64, &[u8])],
    ) -> Result<(), Status> {
        let home = self.home(path);
        match WriteReply::decode(&self.call(
            who,
            home,
            ids::WRITE_BLOCKS,
            &args::write_blocks(path, blocks),
        )?)? {
            WriteReply::Local { .. } => Ok(()),
            WriteReply::Parallel(info) => {
                for (b, data) in blocks {
                    self.pwrite(who, &info, b * u64::from(info.block_bytes), data)?;
                }
                Ok(())
            }
        }
    }

    /// One block of each file; every path must belong to users of one partition.
    pub fn read_block_each(
        &mut self,
        who: Caller,
        blocks: &[(&str, u64)],
    ) -> Result<Vec<Vec<u8>>, Status> {
        let home = blocks.first().map_or(0, |(p, _)| self.home(p));
        let reply = self.call(
            who,
            home,
            ids::READ_BLOCK_EACH,
            &args::read_block_each(blocks),
        )?;
        let replies = BlockReply::decode_list(&reply)?;
        assert_eq!(replies.len(), blocks.len());
        let mut out = Vec::new();
        for (reply, (_, b)) in replies.into_iter().zip(blocks) {
            out.push(match reply {
                BlockReply::Local(data) => data,
                BlockReply::Parallel(info) => self.pread_block(who, &info, *b)?,
            });
        }
        Ok(out)
    }

    /// One block of each file; every path must belong to users of one partition.
    pub fn write_block_each(
        &mut self,
        who: Caller,
        blocks: &[(&str, u64, &[u8])],
    ) -> Result<(), Status> {
        let home = blocks.first().map_or(0, |(p, _, _)| self.home(p));
        let reply = self.call(
            who,
            home,
            ids::WRITE_BLOCK_EACH,
            &args::write_block_each(blocks),
        )?;
        let replies = WriteReply::decode_list(&reply)?;
        assert_eq!(replies.len(), blocks.len());
        for (reply, (_, b, data)) in replies.into_iter().zip(blocks) {
            if let WriteReply::Parallel(info) = reply {
                self.pwrite(who, &info, b * u64::from(info.block_bytes), data)?;
            }
        }
        Ok(())
    }

    /// `cd`: check the directory on its home partition, then set the current path on
    /// every partition.
    pub fn cd(&mut self, who: Caller, user: &str, path: &str) -> Result<(), Status> {
        let stat = self.stat(who, path)?;
        if stat.kind != EntryKind::Dir {
            return Err(Status::NotADirectory);
        }
        self.call(
            who,
            0,
            ids::SET_CURRENT_DIR,
            &args::set_current_dir(user, path),
        )
        .map(drop)
    }

    /// The user's current directory as partition `p` holds it.
    pub fn current_dir(&mut self, p: u32, user: &str) -> Result<String, Status> {
        let reply = self.call(Caller::root(), p, ids::USER_GET, &args::user(user))?;
        Ok(crate::fs::wire::UserInfo::decode(&reply)?.current_path)
    }
}
