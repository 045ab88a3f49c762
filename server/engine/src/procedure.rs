//! Stored procedures: their definitions, the registry that finds them by id, and
//! [`execute`], which runs one invocation as a transaction.

use std::fmt;

use tabos_transport::Status;

use crate::schema::Schema;

pub use crate::caller::{Caller, UserName};

/// A request to park the invocation: the procedure found nothing to do yet (for
/// example an empty message queue), and the partition should run it again when a
/// later transaction notifies `key`, or answer `Timeout` after `timeout_ms`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitFor {
    /// What the invocation waits for (a procedure-defined key, e.g. a receiver id).
    pub key: u64,
    /// How long it may wait.
    pub timeout_ms: u32,
}

/// Whether a procedure writes. The engine does not enforce it; schedulers may use it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// Single: runs on the one partition the request names. Broadcast: a write to replicated
/// tables, run on every partition in the same global order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Single,
    Broadcast,
}

/// Everything one invocation sees.
pub struct Ctx<'a, S> {
    /// The partition's state.
    pub db: &'a mut S,
    /// The partition running the invocation, `< partition_count`.
    pub partition: u32,
    pub partition_count: u32,
    pub caller: Caller,
    /// The request payload: untrusted, decode with [`ArgReader`](crate::ArgReader).
    pub args: &'a [u8],
    /// The reply payload; empty on entry to [`execute`].
    pub reply: &'a mut Vec<u8>,
    /// A reply longer than this fails the invocation with `PayloadTooLarge`.
    pub max_reply_bytes: usize,
    /// Keys this invocation made ready (set by the procedure; cleared on rollback):
    /// parked invocations waiting for one of them run again after the commit.
    pub notify: Vec<u64>,
    /// Set by a procedure that returns `Err(Status::QueueEmpty)` and wants to wait.
    pub wait: Option<WaitFor>,
}

impl<'a, S> Ctx<'a, S> {
    /// The context of one invocation.
    pub fn new(
        db: &'a mut S,
        partition: u32,
        partition_count: u32,
        caller: Caller,
        args: &'a [u8],
        reply: &'a mut Vec<u8>,
        max_reply_bytes: usize,
    ) -> Self {
        Ctx {
            db,
            partition,
            partition_count,
            caller,
            args,
            reply,
            max_reply_bytes,
            notify: Vec::new(),
            wait: None,
        }
    }
}

impl<S> fmt::Debug for Ctx<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ctx")
            .field("partition", &self.partition)
            .field("partition_count", &self.partition_count)
            .field("caller", &self.caller)
            .field("args_len", &self.args.len())
            .field("reply_len", &self.reply.len())
            .field("max_reply_bytes", &self.max_reply_bytes)
            .finish()
    }
}

/// A procedure body. `Err(status)` rolls back every mutation it made; it must not be
/// `Err(Status::Ok)`.
pub type ProcFn<S> = fn(&mut Ctx<'_, S>) -> Result<(), Status>;

/// One stored procedure: a stable numeric id, a name and its body.
pub struct ProcDef<S> {
    pub id: u32,
    pub name: &'static str,
    pub access: Access,
    pub scope: Scope,
    pub func: ProcFn<S>,
}

impl<S> Clone for ProcDef<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for ProcDef<S> {}

impl<S> fmt::Debug for ProcDef<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcDef")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("access", &self.access)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Ids are dense and small, so procedures live in a vector indexed by id.
const PROC_ID_LIMIT: u32 = 1 << 16;

/// The procedures a partition can run, found by id in O(1).
pub struct Registry<S> {
    procs: Vec<Option<ProcDef<S>>>,
}

impl<S> fmt::Debug for Registry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.procs.iter().flatten()).finish()
    }
}

impl<S: Schema> Default for Registry<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Schema> Registry<S> {
    pub fn new() -> Self {
        Registry { procs: Vec::new() }
    }

    /// Add `def`. Asserts that its id is below 65536 and that id and name are unused.
    pub fn register(&mut self, def: ProcDef<S>) {
        assert!(
            def.id < PROC_ID_LIMIT,
            "procedure {} has id {} >= {PROC_ID_LIMIT}",
            def.name,
            def.id
        );
        assert!(
            self.get(def.id).is_none(),
            "procedure id {} registered twice",
            def.id
        );
        assert!(
            self.by_name(def.name).is_none(),
            "procedure name {} registered twice",
            def.name
        );
        let index = def.id as usize;
        if self.procs.len() <= index {
            self.procs.resize(index + 1, None);
        }
        self.procs[index] = Some(def);
        assert_eq!(self.get(def.id).map(|d| d.name), Some(def.name));
    }

    /// The procedure with `id`, if any. Takes any `u32` from the wire.
    pub fn get(&self, id: u32) -> Option<&ProcDef<S>> {
        self.procs.get(usize::try_from(id).ok()?)?.as_ref()
    }

    /// The procedure called `name`, if any. A linear scan: for set-up, not the hot path.
    pub fn by_name(&self, name: &str) -> Option<&ProcDef<S>> {
        self.iter().find(|d| d.name == name)
    }

    /// Every procedure, by ascending id.
    pub fn iter(&self) -> impl Iterator<Item = &ProcDef<S>> {
        self.procs.iter().flatten()
    }
}

/// Run one invocation of `def` as a transaction and return its status.
///
/// On `Ok(())` the schema commits, unless the reply exceeds `ctx.max_reply_bytes`: then
/// it rolls back and the status is `PayloadTooLarge`. On `Err(status)` it rolls back.
/// Whenever the status is not `Ok`, the reply is cleared.
///
/// The caller guarantees that nothing is uncommitted on entry (the engine cannot check
/// that generically): any earlier uncommitted mutation would share this one's fate.
/// `ctx.reply` must be empty on entry (asserted).
pub fn execute<S: Schema>(def: &ProcDef<S>, ctx: &mut Ctx<'_, S>) -> Status {
    execute_logged(def, ctx).status
}

/// What [`execute_logged`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Executed {
    pub status: Status,
    /// The transaction committed and changed something: the command log must keep it.
    /// False for read-only and failed invocations (they leave no trace).
    pub changed: bool,
}

/// [`execute`], also telling whether the invocation committed changes.
pub fn execute_logged<S: Schema>(def: &ProcDef<S>, ctx: &mut Ctx<'_, S>) -> Executed {
    assert!(
        ctx.reply.is_empty(),
        "reply buffer not empty before {}",
        def.name
    );
    assert!(
        ctx.partition < ctx.partition_count,
        "partition {} out of range",
        ctx.partition
    );
    let status = match (def.func)(ctx) {
        Ok(()) if ctx.reply.len() > ctx.max_reply_bytes => Status::PayloadTooLarge,
        Ok(()) => Status::Ok,
        Err(status) => {
            assert_ne!(
                status,
                Status::Ok,
                "procedure {} returned Err(Ok)",
                def.name
            );
            status
        }
    };
    let mut changed = false;
    if status == Status::Ok {
        changed = ctx.db.has_uncommitted();
        ctx.db.commit();
    } else {
        ctx.db.rollback();
        ctx.reply.clear();
        ctx.notify.clear();
    }
    assert!(ctx.reply.len() <= ctx.max_reply_bytes);
    assert!(
        !ctx.db.has_uncommitted(),
        "{} left changes uncommitted",
        def.name
    );
    Executed { status, changed }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{Row, Table};

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Kv(u32, u32);

    impl Row for Kv {
        type Key = u32;
        type SortKey = ();
        fn key(&self) -> u32 {
            self.0
        }
    }

    type Db = Table<Kv>;

    fn put_then_reply(ctx: &mut Ctx<'_, Db>) -> Result<(), Status> {
        let n = crate::ArgReader::new(ctx.args).u32()?;
        ctx.db.insert(Kv(n, n))?;
        ctx.reply.resize(n as usize, 0xaa);
        Ok(())
    }

    fn def(id: u32, name: &'static str) -> ProcDef<Db> {
        ProcDef {
            id,
            name,
            access: Access::ReadWrite,
            scope: Scope::Single,
            func: put_then_reply,
        }
    }

    fn run(db: &mut Db, args: &[u8], reply: &mut Vec<u8>) -> Status {
        let mut ctx = Ctx::new(db, 0, 1, Caller::root(), args, reply, 8);
        execute(&def(1, "put"), &mut ctx)
    }

    #[test]
    fn ok_commits_and_keeps_the_reply() {
        let (mut db, mut reply) = (Table::new("kv", 4), Vec::new());
        assert_eq!(run(&mut db, &8u32.to_le_bytes(), &mut reply), Status::Ok);
        assert_eq!(reply.len(), 8);
        assert!(!db.has_uncommitted());
        assert_eq!(db.get(&8), Some(&Kv(8, 8)));
    }

    #[test]
    fn reply_too_large_rolls_back() {
        let (mut db, mut reply) = (Table::new("kv", 4), Vec::new());
        assert_eq!(
            run(&mut db, &9u32.to_le_bytes(), &mut reply),
            Status::PayloadTooLarge
        );
        assert!(reply.is_empty());
        assert!(db.is_empty());
        assert!(!db.has_uncommitted());
    }

    #[test]
    fn error_rolls_back_and_clears_the_reply() {
        let (mut db, mut reply) = (Table::new("kv", 4), Vec::new());
        assert_eq!(run(&mut db, &[1, 2], &mut reply), Status::BadArgs);
        assert_eq!(run(&mut db, &3u32.to_le_bytes(), &mut reply), Status::Ok);
        reply.clear();
        assert_eq!(
            run(&mut db, &3u32.to_le_bytes(), &mut reply),
            Status::AlreadyExists
        );
        assert!(reply.is_empty());
        assert_eq!(db.len(), 1);
    }

    #[test]
    fn registry_finds_by_id_and_name_and_rejects_unknown_ids() {
        let mut reg = Registry::new();
        reg.register(def(3, "c"));
        reg.register(def(1, "a"));
        assert_eq!(reg.get(1).map(|d| d.name), Some("a"));
        assert_eq!(reg.by_name("c").map(|d| d.id), Some(3));
        assert!(reg.get(0).is_none());
        assert!(reg.get(2).is_none());
        assert!(reg.get(u32::MAX).is_none());
        assert!(reg.by_name("b").is_none());
        assert_eq!(reg.iter().map(|d| d.id).collect::<Vec<_>>(), [1, 3]);
    }

    #[test]
    #[should_panic(expected = "registered twice")]
    fn registry_rejects_a_duplicate_name() {
        let mut reg = Registry::new();
        reg.register(def(1, "a"));
        reg.register(def(2, "a"));
    }

    #[test]
    #[should_panic(expected = ">= 65536")]
    fn registry_rejects_a_huge_id() {
        Registry::new().register(def(1 << 16, "a"));
    }
}
