//! Argument and reply layouts of the filesystem procedures, shared by the procedures
//! (which decode untrusted arguments with [`ArgReader`]) and the client library.
//!
//! Paths travel as `bytes` (not `str`) so that non-UTF-8 input reaches the procedure
//! and is refused as `InvalidPath` rather than `BadArgs`. A reply that returns a
//! file's data or block layout is tagged: `0` for a localized file (the data follows),
//! `1` for a parallel file ([`ParallelInfo`] follows, and the client fans out to the
//! block partitions).

use crate::fs::schema::EntryKind;
use tabos_engine::{put_str, put_u32, put_u64, put_u8, ArgReader};
use tabos_transport::Status;

/// Most entries one batched call (`*_blocks`, `*_block_each`, `pread`, `pwrite`) takes.
pub const BATCH_MAX: usize = 4096;
/// Most entries one `list` call returns.
pub const LIST_MAX: u32 = 1024;

/// Reply tag: a localized file's data follows.
pub const TAG_LOCAL: u8 = 0;
/// Reply tag: a parallel file's [`ParallelInfo`] follows.
pub const TAG_PARALLEL: u8 = 1;

/// What `stat` says about a path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stat {
    pub kind: EntryKind,
    /// File size (0 for a directory).
    pub size_bytes: u64,
    pub owner: String,
    pub mode: u32,
    /// `ceil(size / block_bytes)`: blocks the file spans (holes included).
    pub block_count: u64,
    /// Block size of this kind of file.
    pub block_bytes: u32,
    /// Key of the file's blocks (0 for a directory).
    pub file_id: u64,
}

impl Stat {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, self.kind as u8);
        put_u64(out, self.size_bytes);
        put_str(out, &self.owner);
        put_u32(out, self.mode);
        put_u64(out, self.block_count);
        put_u32(out, self.block_bytes);
        put_u64(out, self.file_id);
    }

    pub fn decode(r: &mut ArgReader<'_>) -> Result<Stat, Status> {
        Ok(Stat {
            kind: EntryKind::from_u8(r.u8()?).ok_or(Status::BadArgs)?,
            size_bytes: r.u64()?,
            owner: r.str()?.to_string(),
            mode: r.u32()?,
            block_count: r.u64()?,
            block_bytes: r.u32()?,
            file_id: r.u64()?,
        })
    }
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    pub name: String,
    pub stat: Stat,
}

/// One page of a directory listing, by name.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Listing {
    pub entries: Vec<DirEntry>,
    /// Whether entries after the last one remain.
    pub more: bool,
}

impl Listing {
    pub fn decode(reply: &[u8]) -> Result<Listing, Status> {
        let mut r = ArgReader::new(reply);
        let count = r.u32()?;
        let mut entries = Vec::with_capacity((count as usize).min(LIST_MAX as usize));
        for _ in 0..count {
            let name = r.str()?.to_string();
            entries.push(DirEntry {
                name,
                stat: Stat::decode(&mut r)?,
            });
        }
        let more = r.u8()? != 0;
        r.finish()?;
        Ok(Listing { entries, more })
    }
}

/// A user's row: home partition and current directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub user_name: String,
    pub home_partition: u32,
    pub current_path: String,
}

impl UserInfo {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_str(out, &self.user_name);
        put_u32(out, self.home_partition);
        put_str(out, &self.current_path);
    }

    pub fn decode(reply: &[u8]) -> Result<UserInfo, Status> {
        let mut r = ArgReader::new(reply);
        let info = UserInfo {
            user_name: r.str()?.to_string(),
            home_partition: r.u32()?,
            current_path: r.str()?.to_string(),
        };
        r.finish()?;
        Ok(info)
    }
}

/// Where a parallel file's blocks are and who may touch them: the home partition's
/// answer to a read or write of a parallel file (permission already checked there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParallelInfo {
    /// File size after the call (a write extends it first).
    pub size_bytes: u64,
    pub file_id: u64,
    pub owner: String,
    pub mode: u32,
    pub block_bytes: u32,
}

impl ParallelInfo {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.size_bytes);
        put_u64(out, self.file_id);
        put_str(out, &self.owner);
        put_u32(out, self.mode);
        put_u32(out, self.block_bytes);
    }

    pub fn decode(r: &mut ArgReader<'_>) -> Result<ParallelInfo, Status> {
        Ok(ParallelInfo {
            size_bytes: r.u64()?,
            file_id: r.u64()?,
            owner: r.str()?.to_string(),
            mode: r.u32()?,
            block_bytes: r.u32()?,
        })
    }
}

/// Reply of `read`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReadReply {
    /// The bytes (short at end of file) and the file size.
    Local {
        size_bytes: u64,
        data: Vec<u8>,
    },
    Parallel(ParallelInfo),
}

impl ReadReply {
    pub fn decode(reply: &[u8]) -> Result<ReadReply, Status> {
        let mut r = ArgReader::new(reply);
        let out = match r.u8()? {
            TAG_LOCAL => ReadReply::Local {
                size_bytes: r.u64()?,
                data: r.bytes()?.to_vec(),
            },
            TAG_PARALLEL => ReadReply::Parallel(ParallelInfo::decode(&mut r)?),
            _ => return Err(Status::BadArgs),
        };
        r.finish()?;
        Ok(out)
    }
}

/// Reply of `write` and `write_blocks`, and one entry of `write_block_each`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteReply {
    /// Written; the new file size.
    Local { size_bytes: u64 },
    /// Nothing written: permission checked and the size extended; the client writes
    /// the blocks with `pwrite_blocks`.
    Parallel(ParallelInfo),
}

impl WriteReply {
    pub fn encode_local(out: &mut Vec<u8>, size_bytes: u64) {
        put_u8(out, TAG_LOCAL);
        put_u64(out, size_bytes);
    }

    pub fn encode_parallel(out: &mut Vec<u8>, info: &ParallelInfo) {
        put_u8(out, TAG_PARALLEL);
        info.encode(out);
    }

    pub fn decode_from(r: &mut ArgReader<'_>) -> Result<WriteReply, Status> {
        Ok(match r.u8()? {
            TAG_LOCAL => WriteReply::Local {
                size_bytes: r.u64()?,
            },
            TAG_PARALLEL => WriteReply::Parallel(ParallelInfo::decode(r)?),
            _ => return Err(Status::BadArgs),
        })
    }

    pub fn decode(reply: &[u8]) -> Result<WriteReply, Status> {
        let mut r = ArgReader::new(reply);
        let out = WriteReply::decode_from(&mut r)?;
        r.finish()?;
        Ok(out)
    }

    /// Decode the `count`-prefixed replies of `write_block_each`.
    pub fn decode_list(reply: &[u8]) -> Result<Vec<WriteReply>, Status> {
        let mut r = ArgReader::new(reply);
        let count = r.u32()? as usize;
        let mut out = Vec::with_capacity(count.min(BATCH_MAX));
        for _ in 0..count {
            out.push(WriteReply::decode_from(&mut r)?);
        }
        r.finish()?;
        Ok(out)
    }
}

/// Reply of `read_blocks`: every asked block (clamped at end of file), or where the
/// parallel file's blocks are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlocksReply {
    Local {
        size_bytes: u64,
        blocks: Vec<Vec<u8>>,
    },
    Parallel(ParallelInfo),
}

impl BlocksReply {
    pub fn decode(reply: &[u8]) -> Result<BlocksReply, Status> {
        let mut r = ArgReader::new(reply);
        let out = match r.u8()? {
            TAG_LOCAL => {
                let size_bytes = r.u64()?;
                let count = r.u32()? as usize;
                let mut blocks = Vec::with_capacity(count.min(BATCH_MAX));
                for _ in 0..count {
                    blocks.push(r.bytes()?.to_vec());
                }
                BlocksReply::Local { size_bytes, blocks }
            }
            TAG_PARALLEL => BlocksReply::Parallel(ParallelInfo::decode(&mut r)?),
            _ => return Err(Status::BadArgs),
        };
        r.finish()?;
        Ok(out)
    }
}

/// One entry of the reply of `read_block_each`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockReply {
    Local(Vec<u8>),
    Parallel(ParallelInfo),
}

impl BlockReply {
    /// Decode the `count`-prefixed replies of `read_block_each`.
    pub fn decode_list(reply: &[u8]) -> Result<Vec<BlockReply>, Status> {
        let mut r = ArgReader::new(reply);
        let count = r.u32()? as usize;
        let mut out = Vec::with_capacity(count.min(BATCH_MAX));
        for _ in 0..count {
            out.push(match r.u8()? {
                TAG_LOCAL => BlockReply::Local(r.bytes()?.to_vec()),
                TAG_PARALLEL => BlockReply::Parallel(ParallelInfo::decode(&mut r)?),
                _ => return Err(Status::BadArgs),
            });
        }
        r.finish()?;
        Ok(out)
    }
}

/// Put the tag and [`ParallelInfo`] of a parallel file.
pub fn put_parallel(out: &mut Vec<u8>, info: &ParallelInfo) {
    put_u8(out, TAG_PARALLEL);
    info.encode(out);
}

/// Reply of `delete`: what was removed, so the client can delete a parallel file's
/// blocks on every partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Removed {
    pub kind: EntryKind,
    pub file_id: u64,
    pub size_bytes: u64,
    pub block_bytes: u32,
}

impl Removed {
    pub fn encode(&self, out: &mut Vec<u8>) {
        put_u8(out, self.kind as u8);
        put_u64(out, self.file_id);
        put_u64(out, self.size_bytes);
        put_u32(out, self.block_bytes);
    }

    pub fn decode(reply: &[u8]) -> Result<Removed, Status> {
        let mut r = ArgReader::new(reply);
        let out = Removed {
            kind: EntryKind::from_u8(r.u8()?).ok_or(Status::BadArgs)?,
            file_id: r.u64()?,
            size_bytes: r.u64()?,
            block_bytes: r.u32()?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// Reply of `du`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DuReply {
    /// Sum of the sizes of the counted files.
    pub total_bytes: u64,
    /// Files whose size is at least the asked minimum.
    pub file_count: u64,
}

impl DuReply {
    pub fn decode(reply: &[u8]) -> Result<DuReply, Status> {
        let mut r = ArgReader::new(reply);
        let out = DuReply {
            total_bytes: r.u64()?,
            file_count: r.u64()?,
        };
        r.finish()?;
        Ok(out)
    }
}

/// Blocks of a parallel file found on one partition: `(block_no, bytes)`.
pub fn decode_pread(reply: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, Status> {
    let mut r = ArgReader::new(reply);
    let count = r.u32()? as usize;
    let mut out = Vec::with_capacity(count.min(BATCH_MAX));
    for _ in 0..count {
        let block_no = r.u64()?;
        out.push((block_no, r.bytes()?.to_vec()));
    }
    r.finish()?;
    Ok(out)
}

/// Encoders of every procedure's arguments (see the procedures for their meaning).
pub mod args {
    use tabos_engine::{put_bytes, put_str, put_u32, put_u64, put_u8};

    pub fn user(name: &str) -> Vec<u8> {
        let mut out = Vec::new();
        put_str(&mut out, name);
        out
    }

    pub fn set_current_dir(user: &str, path: &str) -> Vec<u8> {
        let mut out = Vec::new();
        put_str(&mut out, user);
        put_bytes(&mut out, path.as_bytes());
        out
    }

    pub fn path(path: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(4 + path.len());
        put_bytes(&mut out, path.as_bytes());
        out
    }

    pub fn mkdir(path: &str, mode: u32) -> Vec<u8> {
        let mut out = self::path(path);
        put_u32(&mut out, mode);
        out
    }

    pub fn create(path: &str, parallel: bool, mode: u32) -> Vec<u8> {
        let mut out = self::path(path);
        put_u8(&mut out, u8::from(parallel));
        put_u32(&mut out, mode);
        out
    }

    pub fn list(path: &str, after: &str, limit: u32) -> Vec<u8> {
        let mut out = self::path(path);
        put_bytes(&mut out, after.as_bytes());
        put_u32(&mut out, limit);
        out
    }

    pub fn rename(from: &str, to: &str) -> Vec<u8> {
        let mut out = self::path(from);
        put_bytes(&mut out, to.as_bytes());
        out
    }

    pub fn du(path: &str, min_size_bytes: u64) -> Vec<u8> {
        let mut out = self::path(path);
        put_u64(&mut out, min_size_bytes);
        out
    }

    pub fn read(path: &str, offset: u64, len: u32) -> Vec<u8> {
        let mut out = self::path(path);
        put_u64(&mut out, offset);
        put_u32(&mut out, len);
        out
    }

    /// Write `data` at `offset` and make the file at least `end` bytes long.
    pub fn write(path: &str, offset: u64, end: u64, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + path.len() + data.len());
        put_bytes(&mut out, path.as_bytes());
        put_u64(&mut out, offset);
        put_u64(&mut out, end);
        put_bytes(&mut out, data);
        out
    }

    pub fn read_blocks(path: &str, block_nos: &[u64]) -> Vec<u8> {
        let mut out = self::path(path);
        put_u32(&mut out, block_nos.len() as u32);
        for b in block_nos {
            put_u64(&mut out, *b);
        }
        out
    }

    pub fn write_blocks(path: &str, blocks: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = self::path(path);
        put_u32(&mut out, blocks.len() as u32);
        for (b, data) in blocks {
            put_u64(&mut out, *b);
            put_bytes(&mut out, data);
        }
        out
    }

    pub fn read_block_each(blocks: &[(&str, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        put_u32(&mut out, blocks.len() as u32);
        for (path, b) in blocks {
            put_bytes(&mut out, path.as_bytes());
            put_u64(&mut out, *b);
        }
        out
    }

    pub fn write_block_each(blocks: &[(&str, u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        put_u32(&mut out, blocks.len() as u32);
        for (path, b, data) in blocks {
            put_bytes(&mut out, path.as_bytes());
            put_u64(&mut out, *b);
            put_bytes(&mut out, data);
        }
        out
    }

    pub fn pread_blocks(file_id: u64, block_nos: &[u64]) -> Vec<u8> {
        let mut out = Vec::with_capacity(12 + 8 * block_nos.len());
        put_u64(&mut out, file_id);
        put_u32(&mut out, block_nos.len() as u32);
        for b in block_nos {
            put_u64(&mut out, *b);
        }
        out
    }

    /// Blocks as `(block_no, offset within the block, bytes)`.
    pub fn pwrite_blocks(
        file_id: u64,
        owner: &str,
        mode: u32,
        blocks: &[(u64, u32, &[u8])],
    ) -> Vec<u8> {
        let mut out = Vec::new();
        put_u64(&mut out, file_id);
        put_str(&mut out, owner);
        put_u32(&mut out, mode);
        put_u32(&mut out, blocks.len() as u32);
        for (b, within, data) in blocks {
            put_u64(&mut out, *b);
            put_u32(&mut out, *within);
            put_bytes(&mut out, data);
        }
        out
    }

    pub fn pdelete_blocks(file_id: u64, block_count: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put_u64(&mut out, file_id);
        put_u64(&mut out, block_count);
        out
    }
}
