//! The filesystem (paper §4.4, figure 9): all filesystem state in tables, every
//! operation a stored procedure.
//!
//! - One global tree of fully qualified paths ([`path`]). The root `/` is virtual and
//!   holds a home directory `/<user>` per user, made by `useradd`. Everything below
//!   `/<user>` lives on the user's home partition, `partition_for_key(user)`.
//! - [`schema`]: the tables. [`access`]: lookups and permission checks.
//! - [`user`]: `useradd`, `user_get`, `set_current_dir` (replicated `User` table).
//! - [`meta`] and [`rename`]: directory entries. [`data`]: file bytes and the batched
//!   calls of figure 10. [`parallel`]: blocks of parallel files on every partition.
//! - [`wire`]: argument and reply layouts, shared with the client library.
//!
//! Open and close are no-ops: every call names its file by full path. Relative paths
//! are resolved by the client against the caller's `User.current_path`; procedures
//! take absolute paths and validate them again.

pub mod access;
pub mod data;
pub mod meta;
pub mod parallel;
pub mod path;
pub mod rename;
pub mod schema;
pub mod user;
pub mod wire;

#[cfg(test)]
mod case_tests;
#[cfg(test)]
mod model;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod permission_tests;
#[cfg(test)]
mod sim;

pub use path::{FsPath, NAME_BYTES_MAX, PATH_BYTES_MAX};
pub use schema::{EntryKind, FsTables, DIR_MODE, FILE_MODE, HOME_MODE};
pub use wire::{DirEntry, DuReply, Listing, ParallelInfo, Stat, UserInfo};

pub mod ids {
    //! Stable procedure ids of this service (200..=299).

    /// `useradd(str user)`: broadcast, root only.
    pub const USERADD: u32 = 200;
    /// `user_get(str user)`: home partition and current directory, any partition.
    pub const USER_GET: u32 = 201;
    /// `set_current_dir(str user, bytes path)`: broadcast.
    pub const SET_CURRENT_DIR: u32 = 202;
    /// `mkdir(bytes path, u32 mode)` on the home partition.
    pub const MKDIR: u32 = 203;
    /// `create(bytes path, u8 parallel, u32 mode)` on the home partition.
    pub const CREATE: u32 = 204;
    /// `delete(bytes path)` on the home partition.
    pub const DELETE: u32 = 205;
    /// `list(bytes path, bytes after, u32 limit)` on the home partition.
    pub const LIST: u32 = 206;
    /// `stat(bytes path)` on the home partition.
    pub const STAT: u32 = 207;
    /// `rename(bytes from, bytes to)` on the home partition.
    pub const RENAME: u32 = 208;
    /// `du(bytes path, u64 min_size)` on the home partition (every partition for `/`).
    pub const DU: u32 = 209;
    /// `read(bytes path, u64 offset, u32 len)` on the home partition.
    pub const READ: u32 = 210;
    /// `write(bytes path, u64 offset, u64 end, bytes data)` on the home partition.
    pub const WRITE: u32 = 211;
    /// `read_blocks(bytes path, u32 n, n x u64 block)`: figure 10a.
    pub const READ_BLOCKS: u32 = 212;
    /// `write_blocks(bytes path, u32 n, n x (u64 block, bytes data))`: figure 10a.
    pub const WRITE_BLOCKS: u32 = 213;
    /// `read_block_each(u32 n, n x (bytes path, u64 block))`: figure 10b.
    pub const READ_BLOCK_EACH: u32 = 214;
    /// `write_block_each(u32 n, n x (bytes path, u64 block, bytes data))`: figure 10b.
    pub const WRITE_BLOCK_EACH: u32 = 215;
    /// `pread_blocks(u64 file_id, u32 n, n x u64 block)` on a block partition.
    pub const PREAD_BLOCKS: u32 = 220;
    /// `pwrite_blocks(u64 file_id, str owner, u32 mode, u32 n, n x (u64 block,
    /// u32 offset, bytes data))` on a block partition.
    pub const PWRITE_BLOCKS: u32 = 221;
    /// `pdelete_blocks(u64 file_id, u64 block_count)` on every partition.
    pub const PDELETE_BLOCKS: u32 = 222;
}

use crate::schema::PartitionDb;
use tabos_engine::{Access, ProcDef, ProcFn, Registry, Scope};

/// Register this service's procedures.
pub fn register(registry: &mut Registry<PartitionDb>) {
    let procs: [(u32, &'static str, Access, Scope, ProcFn<PartitionDb>); 19] = [
        (
            ids::USERADD,
            "fs_useradd",
            Access::ReadWrite,
            Scope::Broadcast,
            user::useradd,
        ),
        (
            ids::USER_GET,
            "fs_user_get",
            Access::ReadOnly,
            Scope::Single,
            user::user_get,
        ),
        (
            ids::SET_CURRENT_DIR,
            "fs_set_current_dir",
            Access::ReadWrite,
            Scope::Broadcast,
            user::set_current_dir,
        ),
        (
            ids::MKDIR,
            "fs_mkdir",
            Access::ReadWrite,
            Scope::Single,
            meta::mkdir,
        ),
        (
            ids::CREATE,
            "fs_create",
            Access::ReadWrite,
            Scope::Single,
            meta::create,
        ),
        (
            ids::DELETE,
            "fs_delete",
            Access::ReadWrite,
            Scope::Single,
            meta::delete,
        ),
        (
            ids::LIST,
            "fs_list",
            Access::ReadOnly,
            Scope::Single,
            meta::list,
        ),
        (
            ids::STAT,
            "fs_stat",
            Access::ReadOnly,
            Scope::Single,
            meta::stat,
        ),
        (
            ids::RENAME,
            "fs_rename",
            Access::ReadWrite,
            Scope::Single,
            rename::rename,
        ),
        (ids::DU, "fs_du", Access::ReadOnly, Scope::Single, meta::du),
        (
            ids::READ,
            "fs_read",
            Access::ReadOnly,
            Scope::Single,
            data::read,
        ),
        (
            ids::WRITE,
            "fs_write",
            Access::ReadWrite,
            Scope::Single,
            data::write,
        ),
        (
            ids::READ_BLOCKS,
            "fs_read_blocks",
            Access::ReadOnly,
            Scope::Single,
            data::read_blocks,
        ),
        (
            ids::WRITE_BLOCKS,
            "fs_write_blocks",
            Access::ReadWrite,
            Scope::Single,
            data::write_blocks,
        ),
        (
            ids::READ_BLOCK_EACH,
            "fs_read_block_each",
            Access::ReadOnly,
            Scope::Single,
            data::read_block_each,
        ),
        (
            ids::WRITE_BLOCK_EACH,
            "fs_write_block_each",
            Access::ReadWrite,
            Scope::Single,
            data::write_block_each,
        ),
        (
            ids::PREAD_BLOCKS,
            "fs_pread_blocks",
            Access::ReadOnly,
            Scope::Single,
            parallel::pread_blocks,
        ),
        (
            ids::PWRITE_BLOCKS,
            "fs_pwrite_blocks",
            Access::ReadWrite,
            Scope::Single,
            parallel::pwrite_blocks,
        ),
        (
            ids::PDELETE_BLOCKS,
            "fs_pdelete_blocks",
            Access::ReadWrite,
            Scope::Single,
            parallel::pdelete_blocks,
        ),
    ];
    for (id, name, access, scope, func) in procs {
        assert!(
            (200..=299).contains(&id),
            "fs procedure {name} has id {id} outside 200..=299"
        );
        registry.register(ProcDef {
            id,
            name,
            access,
            scope,
            func,
        });
    }
}
