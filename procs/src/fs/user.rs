//! Users of the filesystem: `useradd`, `user_get` and `set_current_dir`. The `User`
//! table is replicated, so the writes are broadcast procedures: they run on every
//! partition in one global order and must decide the same way everywhere, which is
//! why they look only at replicated state and the caller.

use crate::fs::access::read_path;
use crate::fs::schema::{DirRow, EntryKind, UserRow, HOME_MODE};
use crate::fs::wire::UserInfo;
use crate::schema::PartitionDb;
use tabos_engine::{ArgReader, Ctx, UserName};
use tabos_transport::wire::partition_for_key;
use tabos_transport::Status;

/// `useradd(str user)`, broadcast, root only. Adds the user on every partition, with
/// current directory `/<user>`, and creates the home directory `/<user>` (owned by
/// the user, mode 0o755) on the home partition `partition_for_key(user)`.
/// `InvalidPath` for a name that is not a valid user name; `AlreadyExists`.
pub(super) fn useradd(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let name = r.bytes()?;
    r.finish()?;
    if !ctx.caller.user.is_root() {
        return Err(Status::PermissionDenied);
    }
    let name = std::str::from_utf8(name).map_err(|_| Status::InvalidPath)?;
    let user = UserName::new(name).ok_or(Status::InvalidPath)?;
    let fs = &mut ctx.db.fs;
    let home_partition = partition_for_key(name.as_bytes(), ctx.partition_count);
    fs.users.insert(UserRow {
        user_name: name.to_string(),
        home_partition,
        current_path: format!("/{name}"),
    })?;
    if home_partition == ctx.partition {
        // Cannot fail for want of room: the table keeps USERS_MAX rows spare for
        // home directories, and the `User` insert above bounds their number.
        fs.dirs
            .insert(DirRow {
                d_name: "/".to_string(),
                content: name.to_string(),
                content_type: EntryKind::Dir,
                user_name: user,
                protection_info: HOME_MODE,
                size_bytes: 0,
                file_id: 0,
                p_key: ctx.partition,
            })
            .expect("a new user's home directory fits and is new");
    }
    assert!(fs.users.contains(&name.to_string()));
    Ok(())
}

/// `user_get(str user)` on any partition: the user's [`UserInfo`]; the empty name
/// asks for the caller's own row. `NotFound` if there is no such user.
pub(super) fn user_get(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let name = r.bytes()?;
    r.finish()?;
    let name = if name.is_empty() {
        ctx.caller.user.as_str()
    } else {
        std::str::from_utf8(name).map_err(|_| Status::InvalidPath)?
    };
    let row = ctx
        .db
        .fs
        .users
        .get(&name.to_string())
        .ok_or(Status::NotFound)?;
    UserInfo {
        user_name: row.user_name.clone(),
        home_partition: row.home_partition,
        current_path: row.current_path.clone(),
    }
    .encode(ctx.reply);
    Ok(())
}

/// `set_current_dir(str user, bytes path)`, broadcast: set the user's current
/// directory (empty user: the caller). Only the user or root may (`PermissionDenied`).
///
/// A broadcast cannot look at the directory itself (it lives on one partition and
/// every partition must decide alike), so the client checks that `path` is a
/// directory first; if it is removed in between, the current directory dangles, as a
/// deleted working directory does in POSIX.
pub(super) fn set_current_dir(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let name = r.bytes()?;
    let path = read_path(&mut r)?;
    r.finish()?;
    let name = if name.is_empty() {
        ctx.caller.user.as_str()
    } else {
        std::str::from_utf8(name).map_err(|_| Status::InvalidPath)?
    };
    let key = name.to_string();
    if !ctx.db.fs.users.contains(&key) {
        return Err(Status::NotFound);
    }
    if !ctx.caller.user.is_root() && ctx.caller.user.as_str() != name {
        return Err(Status::PermissionDenied);
    }
    ctx.db
        .fs
        .users
        .update(&key, |row| row.current_path = path.as_str().to_string())
        .expect("the user row exists");
    Ok(())
}
