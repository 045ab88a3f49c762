//! The filesystem's tables on one partition (paper figure 9):
//!
//! ```text
//! Map            (p_key, partition_id, host_name, host_id)          replicated
//! User           (user_name, home_partition, current_path)          replicated
//! Directory      (d_name, content, content_type, user_name,
//!                 protection_info, size_bytes, file_id, p_key)      on the home partition
//! Localized_file (file_id, f_owner, block_no, bytes, p_key)         on the home partition
//! Parallel_file  (file_id, f_owner, protection_info, block_no, bytes)
//!                                               on partition block_no % partition_count
//! ```
//!
//! Two departures from the figure, both so that a write costs O(blocks touched):
//! the file size is kept once per file, in its `Directory` row, rather than in every
//! block row; and block rows (`Localized_file` and `Parallel_file`) are keyed by a
//! file id that the `Directory` row holds, not by the file name, so that a rename
//! moves no blocks and a block lookup hashes and compares two integers instead of a
//! heap-allocated path (the path compare was 13% of a figure-10a profile: a cache
//! miss per block).
//! Each parallel block carries its file's owner and mode so that a block partition can
//! check permission by itself.
//!
//! Files are sparse: a missing block, or the part of a block past its stored bytes,
//! reads as zeros up to the file size. Deleting or renaming a localized file probes
//! every block number it spans (holes too), so it costs at most
//! `file_bytes_max / block_bytes_local` lookups.

use crate::fs::path::{check_name, FsPath};
use std::collections::{HashMap, HashSet};

use crate::schema::DbLimits;
use tabos_engine::{ConsistencyError, Row, Schema, Table, UserName};
use tabos_transport::wire::partition_for_key;

/// Most users (rows of the replicated `User` table).
pub const USERS_MAX: usize = 65_536;
/// Mode of the root directory and of every home directory.
pub const HOME_MODE: u32 = 0o755;
/// Default mode of a new directory.
pub const DIR_MODE: u32 = 0o755;
/// Default mode of a new file.
pub const FILE_MODE: u32 = 0o644;
/// Largest mode: owner rwx, group rwx (stored, not used), other rwx.
pub const MODE_MAX: u32 = 0o777;

/// What a directory entry names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum EntryKind {
    Dir = 0,
    /// A file whose blocks live on its owner's home partition.
    LocalFile = 1,
    /// A file whose blocks are spread over every partition by block number.
    ParallelFile = 2,
}

impl EntryKind {
    /// The kind with wire code `code`, if any.
    pub fn from_u8(code: u8) -> Option<EntryKind> {
        match code {
            0 => Some(EntryKind::Dir),
            1 => Some(EntryKind::LocalFile),
            2 => Some(EntryKind::ParallelFile),
            _ => None,
        }
    }

    pub fn is_file(self) -> bool {
        self != EntryKind::Dir
    }
}

/// One partition of the database and where it runs (replicated).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapRow {
    pub p_key: u32,
    pub partition_id: u32,
    pub host_name: String,
    pub host_id: u32,
}

impl Row for MapRow {
    type Key = u32;
    type SortKey = ();
    fn key(&self) -> u32 {
        self.p_key
    }
}

/// A user: where their tree lives and their current directory (replicated; written by
/// broadcast procedures only).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UserRow {
    pub user_name: String,
    /// `partition_for_key(user_name, partition_count)`.
    pub home_partition: u32,
    /// A normalised absolute path.
    pub current_path: String,
}

impl Row for UserRow {
    type Key = String;
    /// By name, for listing `/`.
    type SortKey = String;
    fn key(&self) -> String {
        self.user_name.clone()
    }
    fn sort_key(&self) -> Option<String> {
        Some(self.user_name.clone())
    }
}

/// One directory entry: `content` inside the directory `d_name`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirRow {
    /// The parent directory's full path (`/` for a home directory).
    pub d_name: String,
    /// The entry's name.
    pub content: String,
    pub content_type: EntryKind,
    /// The owner.
    pub user_name: UserName,
    /// Mode bits: owner rwx (0o700) and other rwx (0o007) are checked.
    pub protection_info: u32,
    /// File size in bytes (0 for directories).
    pub size_bytes: u64,
    /// Key of a file's blocks (0 for a directory).
    pub file_id: u64,
    /// The partition holding the row.
    pub p_key: u32,
}

impl DirRow {
    /// The entry's full path.
    pub fn path(&self) -> String {
        if self.d_name == "/" {
            format!("/{}", self.content)
        } else {
            format!("{}/{}", self.d_name, self.content)
        }
    }
}

impl Row for DirRow {
    type Key = (String, String);
    /// Same as the key: entries of one directory are adjacent, and a subtree is two
    /// ranges (`d_name == P` and `d_name` starting with `P/`).
    type SortKey = (String, String);
    fn key(&self) -> (String, String) {
        (self.d_name.clone(), self.content.clone())
    }
    fn sort_key(&self) -> Option<(String, String)> {
        Some(self.key())
    }
}

/// One block of a localized file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LocalBlock {
    /// The file's id (its `Directory` row's `file_id`).
    pub file_id: u64,
    pub block_no: u64,
    pub f_owner: UserName,
    /// At most one block; bytes past the end up to the file size read as zeros.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    pub p_key: u32,
}

impl Row for LocalBlock {
    type Key = (u64, u64);
    type SortKey = ();
    fn key(&self) -> (u64, u64) {
        (self.file_id, self.block_no)
    }
}

/// One block of a parallel file, on partition `block_no % partition_count`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ParallelBlock {
    pub file_id: u64,
    pub block_no: u64,
    pub f_owner: UserName,
    pub protection_info: u32,
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

impl Row for ParallelBlock {
    type Key = (u64, u64);
    type SortKey = ();
    fn key(&self) -> (u64, u64) {
        (self.file_id, self.block_no)
    }
}

/// The next parallel-file counter of this partition (one row), transactional so an
/// aborted create hands out nothing.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CounterRow {
    pub next: u64,
}

impl Row for CounterRow {
    type Key = ();
    type SortKey = ();
    fn key(&self) {}
}

/// This service's tables on one partition.
#[derive(Debug)]
pub struct FsTables {
    pub map: Table<MapRow>,
    pub users: Table<UserRow>,
    pub dirs: Table<DirRow>,
    pub local: Table<LocalBlock>,
    pub parallel: Table<ParallelBlock>,
    pub counter: Table<CounterRow>,
    /// Entries a create may fill; the `dirs` table holds [`USERS_MAX`] more, so a
    /// home directory (made by a broadcast) never fails for want of room.
    pub entries_max: usize,
    pub block_bytes_local: usize,
    pub block_bytes_parallel: usize,
    pub file_bytes_max: u64,
    pub partition: u32,
    pub partition_count: u32,
}

impl FsTables {
    /// Tables of partition `partition` of `partition_count`, with the `Map` table
    /// filled in: `nodes[p]` is the node that owns partition `p`.
    pub fn new(limits: &DbLimits, partition: u32, partition_count: u32, nodes: &[u32]) -> Self {
        assert_eq!(
            nodes.len(),
            partition_count as usize,
            "one node id per partition"
        );
        assert!(partition < partition_count, "partition out of range");
        assert!(limits.block_bytes_local > 0, "zero local block size");
        assert!(limits.block_bytes_parallel > 0, "zero parallel block size");
        let mut tables = FsTables {
            map: Table::new("fs_map", partition_count as usize),
            users: Table::new("fs_user", USERS_MAX),
            dirs: Table::new(
                "fs_directory",
                limits.fs_entries_max.saturating_add(USERS_MAX),
            ),
            local: Table::new("fs_localized_file", limits.fs_blocks_max),
            parallel: Table::new("fs_parallel_file", limits.fs_blocks_max),
            counter: Table::new("fs_counter", 1),
            entries_max: limits.fs_entries_max,
            block_bytes_local: limits.block_bytes_local,
            block_bytes_parallel: limits.block_bytes_parallel,
            file_bytes_max: limits.file_bytes_max,
            partition,
            partition_count,
        };
        for p in 0..partition_count {
            let row = MapRow {
                p_key: p,
                partition_id: p,
                host_name: format!("node{}", nodes[p as usize]),
                host_id: nodes[p as usize],
            };
            tables
                .map
                .insert(row)
                .expect("the map table has a row per partition");
        }
        tables
            .counter
            .insert(CounterRow { next: 1 })
            .expect("an empty counter table");
        tables.commit();
        assert_eq!(tables.map.len(), partition_count as usize);
        tables
    }

    /// Blocks of `size_bytes` in blocks of `block_bytes`.
    pub fn block_count(size_bytes: u64, block_bytes: usize) -> u64 {
        size_bytes.div_ceil(block_bytes as u64)
    }

    /// The block size of files of `kind`.
    pub fn block_bytes(&self, kind: EntryKind) -> usize {
        match kind {
            EntryKind::ParallelFile => self.block_bytes_parallel,
            _ => self.block_bytes_local,
        }
    }

    /// The tree invariants behind [`Schema::check_consistency`].
    fn check_tree(&self) -> Result<(), String> {
        for user in self.users.iter() {
            let home = partition_for_key(user.user_name.as_bytes(), self.partition_count);
            if user.home_partition != home {
                return Err(format!("user {} has home {home}", user.user_name));
            }
            if FsPath::parse(&user.current_path).map(|p| p.as_str() == user.current_path)
                != Ok(true)
            {
                return Err(format!("user {}: bad current path", user.user_name));
            }
        }
        let mut parents_ok: HashSet<&str> = HashSet::new();
        for row in self.dirs.iter() {
            check_name(&row.content).map_err(|s| format!("{row:?}: name {s}"))?;
            if row.p_key != self.partition {
                return Err(format!("{row:?} is on partition {}", self.partition));
            }
            if row.protection_info > MODE_MAX {
                return Err(format!("{row:?}: mode"));
            }
            if row.size_bytes > self.file_bytes_max
                || (!row.content_type.is_file() && row.size_bytes != 0)
            {
                return Err(format!("{row:?}: size"));
            }
            if row.content_type.is_file() != (row.file_id != 0) {
                return Err(format!("{row:?}: file id"));
            }
            if row.d_name == "/" {
                let user = self.users.get(&row.content);
                let home_ok = user.is_some_and(|u| u.home_partition == self.partition);
                if !home_ok
                    || row.content_type != EntryKind::Dir
                    || row.user_name.as_str() != row.content
                {
                    return Err(format!("{row:?}: not a home directory of this partition"));
                }
                continue;
            }
            if parents_ok.insert(row.d_name.as_str()) {
                let parent = FsPath::parse(&row.d_name).map_err(|_| format!("{row:?}: d_name"))?;
                match self.dirs.get(&entry_key(&parent)) {
                    Some(p) if p.content_type == EntryKind::Dir => {}
                    _ => return Err(format!("{row:?}: the parent directory is missing")),
                }
            }
        }
        let block_bytes = self.block_bytes_local as u64;
        let files: HashMap<u64, &DirRow> = self
            .dirs
            .iter()
            .filter(|f| f.content_type == EntryKind::LocalFile)
            .map(|f| (f.file_id, f))
            .collect();
        for block in self.local.iter() {
            let file = files.get(&block.file_id);
            let ok = file.is_some_and(|f| {
                f.content_type == EntryKind::LocalFile
                    && f.user_name == block.f_owner
                    && block.bytes.len() as u64 <= block_bytes
                    && block.block_no.saturating_mul(block_bytes) + block.bytes.len() as u64
                        <= f.size_bytes
            });
            if !ok {
                return Err(format!(
                    "block {} of file {} has no file around it",
                    block.block_no, block.file_id
                ));
            }
        }
        for block in self.parallel.iter() {
            if block.block_no % u64::from(self.partition_count) != u64::from(self.partition)
                || block.bytes.len() > self.block_bytes_parallel
                || block.protection_info > MODE_MAX
            {
                return Err(format!(
                    "parallel block {} of file {} misplaced or too long",
                    block.block_no, block.file_id
                ));
            }
        }
        Ok(())
    }
}

impl Schema for FsTables {
    fn commit(&mut self) {
        self.map.commit();
        self.users.commit();
        self.dirs.commit();
        self.local.commit();
        self.parallel.commit();
        self.counter.commit();
    }

    fn rollback(&mut self) {
        self.map.rollback();
        self.users.rollback();
        self.dirs.rollback();
        self.local.rollback();
        self.parallel.rollback();
        self.counter.rollback();
    }

    fn has_uncommitted(&self) -> bool {
        self.map.has_uncommitted()
            || self.users.has_uncommitted()
            || self.dirs.has_uncommitted()
            || self.local.has_uncommitted()
            || self.parallel.has_uncommitted()
            || self.counter.has_uncommitted()
    }

    /// Every table's own invariants, then the tree's (O(n)): each entry's parent is a
    /// directory here, home directories match the `User` table, blocks lie within
    /// their files and on the right partition.
    fn check_consistency(&self) -> Result<(), ConsistencyError> {
        self.map.check_consistency()?;
        self.users.check_consistency()?;
        self.dirs.check_consistency()?;
        self.local.check_consistency()?;
        self.parallel.check_consistency()?;
        self.counter.check_consistency()?;
        if self.counter.len() != 1 {
            return Err(ConsistencyError {
                table: "fs_counter",
                what: "not exactly one row".into(),
            });
        }
        self.check_tree().map_err(|what| ConsistencyError {
            table: "fs_directory",
            what,
        })
    }
}

/// The `Directory` key of a path other than `/`.
fn entry_key(path: &FsPath) -> (String, String) {
    (
        path.parent_str().unwrap_or("/").to_string(),
        path.name().unwrap_or("").to_string(),
    )
}
