//! `rename`: move an entry, and for a directory its whole subtree, within one user's
//! tree. Names are fully qualified, so a move rewrites the key of every entry below
//! and of every localized block of the files moved (one transaction on the home
//! partition). Parallel blocks are keyed by file id and stay where they are.

use crate::fs::access::{dir_key, read_path, Entry, Want};
use crate::fs::path::{rebase_str, FsPath};
use crate::fs::schema::{DirRow, EntryKind, FsTables};
use crate::schema::PartitionDb;
use tabos_engine::{ArgReader, Ctx, Row};
use tabos_transport::Status;

/// `rename(bytes from, bytes to)`. Checks, in order: neither is `/` or a home
/// directory (`PermissionDenied`); both in one user's tree (`CrossNamespace`); `from`
/// exists; `to`'s parent is a directory; `w` on both parents (`PermissionDenied`).
/// Renaming a path to itself does nothing. A directory cannot move below itself
/// (`InvalidPath`), and an existing `to` is never replaced (`AlreadyExists`).
/// Current directories that pointed into the moved subtree are left as they were.
pub(super) fn rename(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let from = read_path(&mut r)?;
    let to = read_path(&mut r)?;
    r.finish()?;
    let caller = ctx.caller.user;
    let fs = &mut ctx.db.fs;
    FsTables::check_not_top(&from)?;
    FsTables::check_not_top(&to)?;
    if from.user() != to.user() {
        return Err(Status::CrossNamespace);
    }
    fs.check_home(&from)?;
    let Entry::Row(row) = fs.lookup(&from)? else {
        unreachable!("depth >= 2 is never the root");
    };
    let row = row.clone();
    let (from_parent, to_parent) = (from.parent().expect("depth"), to.parent().expect("depth"));
    let to_dir = fs.lookup_dir(&to_parent)?;
    fs.lookup_dir(&from_parent)?.require(&caller, Want::Write)?;
    to_dir.require(&caller, Want::Write)?;
    if from == to {
        return Ok(());
    }
    if to.is_within(&from) {
        return Err(Status::InvalidPath);
    }
    if fs.lookup(&to).is_ok() {
        return Err(Status::AlreadyExists);
    }
    let entries_before = fs.dirs.len();
    fs.move_entry(&row, &from, &to);
    assert_eq!(fs.dirs.len(), entries_before, "a rename keeps every entry");
    assert!(fs.lookup(&from).is_err());
    assert!(fs.lookup(&to).is_ok_and(|e| e.kind() == row.content_type));
    Ok(())
}

impl FsTables {
    /// Move `row` (the entry at `from`) and everything below it to `to`: delete
    /// every old row first, then insert the renamed ones, so the table never needs
    /// room for both.
    fn move_entry(&mut self, row: &DirRow, from: &FsPath, to: &FsPath) {
        let mut below: Vec<DirRow> = Vec::new();
        if row.content_type == EntryKind::Dir {
            below.extend(self.subtree(from.as_str()).cloned());
        }
        for old in below.iter().chain(std::iter::once(row)) {
            let gone = self.dirs.delete(&old.key());
            assert!(gone.is_some(), "a listed entry exists");
        }
        let (to_d_name, to_content) = dir_key(to);
        let top = DirRow {
            d_name: to_d_name,
            content: to_content,
            ..row.clone()
        };
        let renamed = below.iter().map(|old| DirRow {
            d_name: rebase_str(&old.d_name, from.as_str(), to.as_str()),
            ..old.clone()
        });
        // Blocks are keyed by file id: a rename moves no blocks.
        for new in std::iter::once(top).chain(renamed) {
            self.dirs
                .insert(new)
                .expect("a moved entry fits where the old one was");
        }
    }
}
