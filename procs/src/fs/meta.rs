//! Metadata procedures on a user's home partition: `mkdir`, `create`, `delete`,
//! `stat`, `list` and `du`. Each runs on the partition of the path's user
//! (`WrongPartition` elsewhere; `/` is answered anywhere) and changes nothing when it
//! fails.

use std::ops::Bound;

use crate::fs::access::{read_path, Entry, Want};
use crate::fs::path::{check_name, FsPath};
use crate::fs::schema::{CounterRow, DirRow, EntryKind, FsTables, HOME_MODE, MODE_MAX};
use crate::fs::wire::{DuReply, Removed, Stat, LIST_MAX};
use crate::schema::PartitionDb;
use tabos_engine::{put_str, put_u32, put_u64, put_u8, ArgReader, Ctx, Row, UserName};
use tabos_transport::Status;

fn read_mode(r: &mut ArgReader<'_>) -> Result<u32, Status> {
    let mode = r.u32()?;
    if mode > MODE_MAX {
        return Err(Status::BadArgs);
    }
    Ok(mode)
}

/// Insert a new entry at `path` (owned by the caller) after the checks every creation
/// shares, in this order: the path's user lives here (`NotFound` / `WrongPartition`),
/// not `/` or a home directory (`PermissionDenied`), the parent is a directory
/// (`NotFound` / `NotADirectory`), `w` on it (`PermissionDenied`), no entry there yet
/// (`AlreadyExists`), room (`TableFull`).
fn insert_entry(
    fs: &mut FsTables,
    caller: &UserName,
    path: &FsPath,
    kind: EntryKind,
    mode: u32,
) -> Result<u64, Status> {
    fs.check_home(path)?;
    FsTables::check_not_top(path)?;
    let parent = path.parent().expect("depth >= 2");
    fs.lookup_dir(&parent)?.require(caller, Want::Write)?;
    if fs.lookup(path).is_ok() {
        return Err(Status::AlreadyExists);
    }
    fs.check_room()?;
    let file_id = if kind.is_file() { fs.next_file_id() } else { 0 };
    let (d_name, content) = crate::fs::access::dir_key(path);
    fs.dirs.insert(DirRow {
        d_name,
        content,
        content_type: kind,
        user_name: *caller,
        protection_info: mode,
        size_bytes: 0,
        file_id,
        p_key: fs.partition,
    })?;
    assert!(fs.lookup(path).is_ok_and(|e| e.kind() == kind));
    Ok(file_id)
}

impl FsTables {
    /// A new file id (the key of the file's blocks), unique across the partitions:
    /// `counter * partition_count + partition`.
    fn next_file_id(&mut self) -> u64 {
        let n = self.counter.get(&()).expect("one counter row").next;
        self.counter
            .update(&(), |row: &mut CounterRow| row.next += 1)
            .expect("one counter row");
        let id = n * u64::from(self.partition_count) + u64::from(self.partition);
        assert!(id != 0, "file id 0 means no file");
        id
    }

    /// What `stat` reports about `entry`. The root reports the localized block size,
    /// which is how a client learns it.
    pub fn stat_of(&self, entry: Entry<'_>) -> Stat {
        match entry {
            Entry::Root => Stat {
                kind: EntryKind::Dir,
                size_bytes: 0,
                owner: "root".to_string(),
                mode: HOME_MODE,
                block_count: 0,
                block_bytes: self.block_bytes_local as u32,
                file_id: 0,
            },
            Entry::Row(row) => {
                let block_bytes = self.block_bytes(row.content_type);
                Stat {
                    kind: row.content_type,
                    size_bytes: row.size_bytes,
                    owner: row.user_name.to_string(),
                    mode: row.protection_info,
                    block_count: FsTables::block_count(row.size_bytes, block_bytes),
                    block_bytes: block_bytes as u32,
                    file_id: row.file_id,
                }
            }
        }
    }
}

/// `mkdir(bytes path, u32 mode)`: a new empty directory owned by the caller.
pub(super) fn mkdir(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let path = read_path(&mut r)?;
    let mode = read_mode(&mut r)?;
    r.finish()?;
    insert_entry(
        &mut ctx.db.fs,
        &ctx.caller.user,
        &path,
        EntryKind::Dir,
        mode,
    )?;
    Ok(())
}

/// `create(bytes path, u8 parallel, u32 mode)`: a new empty file owned by the caller,
/// localized (`parallel` = 0) or parallel (1). Replies `u64 file_id` (the key of its blocks).
pub(super) fn create(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let path = read_path(&mut r)?;
    let kind = match r.u8()? {
        0 => EntryKind::LocalFile,
        1 => EntryKind::ParallelFile,
        _ => return Err(Status::BadArgs),
    };
    let mode = read_mode(&mut r)?;
    r.finish()?;
    let file_id = insert_entry(&mut ctx.db.fs, &ctx.caller.user, &path, kind, mode)?;
    put_u64(ctx.reply, file_id);
    Ok(())
}

/// `delete(bytes path)`: remove a file (and a localized file's blocks) or an empty
/// directory. Needs `w` on the directory holding it; a parallel file also needs `w`
/// on the file itself, because its block partitions check the caller against the
/// blocks' owner and mode when the client deletes the blocks next. Replies
/// [`Removed`]. `NotEmpty` for a directory with entries.
pub(super) fn delete(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let path = read_path(&mut r)?;
    r.finish()?;
    let caller = ctx.caller.user;
    let fs = &mut ctx.db.fs;
    fs.check_home(&path)?;
    FsTables::check_not_top(&path)?;
    let Entry::Row(row) = fs.lookup(&path)? else {
        unreachable!("depth >= 2 is never the root");
    };
    let row = row.clone();
    let parent = path.parent().expect("depth >= 2");
    fs.lookup_dir(&parent)?.require(&caller, Want::Write)?;
    match row.content_type {
        EntryKind::Dir => {
            if fs.children(path.as_str(), None).next().is_some() {
                return Err(Status::NotEmpty);
            }
        }
        EntryKind::LocalFile => fs.delete_local_blocks(row.file_id, row.size_bytes),
        EntryKind::ParallelFile => Entry::Row(&row).require(&caller, Want::Write)?,
    }
    let removed = fs.dirs.delete(&row.key()).expect("the entry exists");
    assert_eq!(removed, row);
    Removed {
        kind: row.content_type,
        file_id: row.file_id,
        size_bytes: row.size_bytes,
        block_bytes: fs.block_bytes(row.content_type) as u32,
    }
    .encode(ctx.reply);
    Ok(())
}

impl FsTables {
    /// Entries of the directory `dir`, by name, starting after `after`.
    pub fn children<'a>(
        &'a self,
        dir: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = &'a DirRow> + 'a {
        let start = match after {
            Some(name) => Bound::Excluded((dir.to_string(), name.to_string())),
            None => Bound::Included((dir.to_string(), String::new())),
        };
        // No string lies strictly between `dir` and `dir + "\0"`.
        let end = Bound::Excluded((format!("{dir}\0"), String::new()));
        self.dirs.range((start, end))
    }

    /// Every entry strictly below the directory `dir`: its children (`d_name ==
    /// dir`) and their descendants (`d_name` starting with `dir/`). For `/`, the
    /// whole table.
    pub fn subtree<'a>(&'a self, dir: &str) -> Box<dyn Iterator<Item = &'a DirRow> + 'a> {
        if dir == "/" {
            return Box::new(self.dirs.range(..));
        }
        // Every string starting with `dir/` lies in [`dir/`, `dir0`): '0' follows '/'.
        let below = self.dirs.range((
            Bound::Included((format!("{dir}/"), String::new())),
            Bound::Excluded((format!("{dir}0"), String::new())),
        ));
        Box::new(self.children(dir, None).chain(below))
    }

    /// Delete the stored blocks of the localized file `file_id` of `size_bytes`.
    pub fn delete_local_blocks(&mut self, file_id: u64, size_bytes: u64) {
        for block_no in 0..FsTables::block_count(size_bytes, self.block_bytes_local) {
            self.local.remove(&(file_id, block_no));
        }
    }
}

/// `stat(bytes path)`: replies [`Stat`]. No permission is needed.
pub(super) fn stat(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let path = read_path(&mut r)?;
    r.finish()?;
    let fs = &ctx.db.fs;
    fs.check_home(&path)?;
    let entry = fs.lookup(&path)?;
    fs.stat_of(entry).encode(ctx.reply);
    Ok(())
}

/// `list(bytes path, bytes after, u32 limit)`: up to `limit` (at most [`LIST_MAX`])
/// entries of the directory `path` whose names sort after `after` (empty: from the
/// first). Needs `r` on the directory. Replies `u32 count`, then per entry `str name`
/// and its [`Stat`], then `u8 more`. Listing `/` lists the users' home directories.
pub(super) fn list(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let path = read_path(&mut r)?;
    let after = r.bytes()?;
    let limit = r.u32()?.min(LIST_MAX) as usize;
    r.finish()?;
    let after = std::str::from_utf8(after).map_err(|_| Status::InvalidPath)?;
    if !after.is_empty() {
        check_name(after)?;
    }
    let after = (!after.is_empty()).then_some(after);
    let fs = &ctx.db.fs;
    fs.check_home(&path)?;
    fs.lookup_dir(&path)?
        .require(&ctx.caller.user, Want::Read)?;
    let mut count = 0u32;
    let mut body = Vec::new();
    let more = if path.is_root() {
        let start = match after {
            Some(name) => Bound::Excluded(name.to_string()),
            None => Bound::Unbounded,
        };
        let mut users = fs.users.range((start, Bound::Unbounded));
        for user in users.by_ref().take(limit) {
            put_str(&mut body, &user.user_name);
            Stat {
                kind: EntryKind::Dir,
                size_bytes: 0,
                owner: user.user_name.clone(),
                mode: HOME_MODE,
                block_count: 0,
                block_bytes: fs.block_bytes_local as u32,
                file_id: 0,
            }
            .encode(&mut body);
            count += 1;
        }
        users.next().is_some()
    } else {
        let mut rows = fs.children(path.as_str(), after);
        for row in rows.by_ref().take(limit) {
            put_str(&mut body, &row.content);
            fs.stat_of(Entry::Row(row)).encode(&mut body);
            count += 1;
        }
        rows.next().is_some()
    };
    assert!(count as usize <= limit);
    put_u32(ctx.reply, count);
    ctx.reply.extend_from_slice(&body);
    put_u8(ctx.reply, u8::from(more));
    Ok(())
}

/// `du(bytes path, u64 min_size)`: the paper's conditional size aggregate. Replies
/// [`DuReply`]: the total size and number of files under the directory `path` (a
/// range scan of the ordered index over its subtree) whose size is at least
/// `min_size`; for a file, the file itself. Needs `r` on the directory. For `/`,
/// every file on this partition: the client sums over all partitions.
pub(super) fn du(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let path = read_path(&mut r)?;
    let min_size_bytes = r.u64()?;
    r.finish()?;
    let fs = &ctx.db.fs;
    fs.check_home(&path)?;
    let entry = fs.lookup(&path)?;
    let mut out = DuReply::default();
    let mut count = |size_bytes: u64| {
        if size_bytes >= min_size_bytes {
            out.total_bytes += size_bytes;
            out.file_count += 1;
        }
    };
    match entry {
        Entry::Row(row) if row.content_type.is_file() => count(row.size_bytes),
        dir => {
            dir.require(&ctx.caller.user, Want::Read)?;
            for row in fs.subtree(path.as_str()) {
                if row.content_type.is_file() {
                    count(row.size_bytes);
                }
            }
        }
    }
    put_u64(ctx.reply, out.total_bytes);
    put_u64(ctx.reply, out.file_count);
    Ok(())
}
