//! Finding entries and checking who may touch them.
//!
//! Permissions are the owner and other bits of the mode (group bits are stored and
//! ignored): reading a file or listing a directory needs `r` on it; writing a file
//! needs `w` on it; creating, deleting or renaming an entry needs `w` on its
//! directory. `root` may do everything. Since names are fully qualified there is no
//! traversal, and so no search (`x`) check on the directories above a path.

use crate::fs::path::FsPath;
use crate::fs::schema::{DirRow, EntryKind, FsTables, HOME_MODE};
use tabos_engine::{ArgReader, UserName};
use tabos_transport::Status;

/// A permission bit, as in the "other" triple of a mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Read = 4,
    Write = 2,
}

/// Whether `caller` may `want` an object of `owner` with `mode`.
pub fn may(caller: &UserName, owner: &UserName, mode: u32, want: Want) -> bool {
    if caller.is_root() {
        return true;
    }
    let bits = if caller == owner { mode >> 6 } else { mode };
    bits & want as u32 != 0
}

/// [`may`] as a status.
pub fn require(caller: &UserName, owner: &UserName, mode: u32, want: Want) -> Result<(), Status> {
    if may(caller, owner, mode, want) {
        Ok(())
    } else {
        Err(Status::PermissionDenied)
    }
}

/// A found entry: the virtual root, or a row of the `Directory` table.
#[derive(Clone, Copy, Debug)]
pub enum Entry<'a> {
    Root,
    Row(&'a DirRow),
}

impl Entry<'_> {
    pub fn kind(&self) -> EntryKind {
        match self {
            Entry::Root => EntryKind::Dir,
            Entry::Row(row) => row.content_type,
        }
    }

    pub fn owner(&self) -> UserName {
        match self {
            Entry::Root => UserName::new("root").expect("valid"),
            Entry::Row(row) => row.user_name,
        }
    }

    pub fn mode(&self) -> u32 {
        match self {
            Entry::Root => HOME_MODE,
            Entry::Row(row) => row.protection_info,
        }
    }

    pub fn require(&self, caller: &UserName, want: Want) -> Result<(), Status> {
        require(caller, &self.owner(), self.mode(), want)
    }
}

/// Read a path argument: bytes, then parsed and normalised.
pub fn read_path(r: &mut ArgReader<'_>) -> Result<FsPath, Status> {
    FsPath::parse_bytes(r.bytes()?)
}

/// The `Directory` key of `path` (not the root).
pub fn dir_key(path: &FsPath) -> (String, String) {
    let parent = path.parent_str().expect("the root has no directory entry");
    let name = path.name().expect("the root has no name");
    (parent.to_string(), name.to_string())
}

impl FsTables {
    /// Check that `path` lives on this partition: its user exists (`NotFound`) and
    /// has this home partition (`WrongPartition`). The root lives everywhere.
    pub fn check_home(&self, path: &FsPath) -> Result<(), Status> {
        let Some(user) = path.user() else {
            return Ok(());
        };
        let row = self.users.get(&user.to_string()).ok_or(Status::NotFound)?;
        if row.home_partition != self.partition {
            return Err(Status::WrongPartition);
        }
        Ok(())
    }

    /// The entry at `path` (which [`check_home`](Self::check_home) accepted), or why
    /// there is none: `NotADirectory` when some ancestor is a file, else `NotFound`.
    pub fn lookup(&self, path: &FsPath) -> Result<Entry<'_>, Status> {
        if path.is_root() {
            return Ok(Entry::Root);
        }
        match self.dirs.get(&dir_key(path)) {
            Some(row) => Ok(Entry::Row(row)),
            None => Err(self.missing_error(path)),
        }
    }

    /// The directory at `path`: as [`lookup`](Self::lookup), and a file is
    /// `NotADirectory`.
    pub fn lookup_dir(&self, path: &FsPath) -> Result<Entry<'_>, Status> {
        let entry = self.lookup(path)?;
        if entry.kind() != EntryKind::Dir {
            return Err(Status::NotADirectory);
        }
        Ok(entry)
    }

    /// The file at `path`: as [`lookup`](Self::lookup), and a directory is
    /// `IsADirectory`.
    pub fn lookup_file(&self, path: &FsPath) -> Result<&DirRow, Status> {
        match self.lookup(path)? {
            Entry::Row(row) if row.content_type.is_file() => Ok(row),
            _ => Err(Status::IsADirectory),
        }
    }

    /// Why `path` has no entry: the nearest existing ancestor decides.
    fn missing_error(&self, path: &FsPath) -> Status {
        let mut at = path.parent();
        while let Some(dir) = at {
            if dir.is_root() {
                break;
            }
            if let Some(row) = self.dirs.get(&dir_key(&dir)) {
                return if row.content_type == EntryKind::Dir {
                    Status::NotFound
                } else {
                    Status::NotADirectory
                };
            }
            at = dir.parent();
        }
        Status::NotFound
    }

    /// The path's entry must not be `/` or a home directory: those belong to
    /// `useradd` (`PermissionDenied` for everyone, root included).
    pub fn check_not_top(path: &FsPath) -> Result<(), Status> {
        if path.depth() < 2 {
            return Err(Status::PermissionDenied);
        }
        Ok(())
    }

    /// Room for one more entry (`TableFull` at `fs_entries_max`).
    pub fn check_room(&self) -> Result<(), Status> {
        if self.dirs.len() >= self.entries_max {
            return Err(Status::TableFull);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_and_other_bits_decide_and_root_may_everything() {
        let (alice, bob, root) = (
            UserName::new("alice").unwrap(),
            UserName::new("bob").unwrap(),
            UserName::new("root").unwrap(),
        );
        assert!(may(&alice, &alice, 0o644, Want::Write));
        assert!(may(&bob, &alice, 0o644, Want::Read));
        assert!(!may(&bob, &alice, 0o644, Want::Write));
        assert!(!may(&bob, &alice, 0o640, Want::Read));
        assert!(!may(&alice, &alice, 0o044, Want::Read));
        assert!(may(&bob, &alice, 0o002, Want::Write));
        assert!(may(&root, &alice, 0, Want::Write));
        assert_eq!(
            require(&bob, &alice, 0o600, Want::Read),
            Err(Status::PermissionDenied)
        );
    }
}
