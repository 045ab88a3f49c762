//! The scheduler (paper §4.2, figures 2-4): workers with a capacity in runnable tasks,
//! and tasks placed on them by one of three stored procedures.
//!
//! - [`schema`]: the `Worker` and `Task` tables of a partition and their invariants.
//! - `procs`: `schedule_fifo` (figure 2), `schedule_locality` (figure 3),
//!   `schedule_least_loaded` (figure 4), `complete_task`, `worker_add`,
//!   `worker_remove`; `list`: `task_get`, `worker_list`, `task_list`.
//! - [`api`]: argument encoders and reply types shared with clients.
//!
//! Every procedure runs on one partition and costs O(log n), except the two lists
//! (O(n) per bounded page). The client picks partitions (random ones for FIFO and
//! least-loaded, retrying each at most once; the home partition for locality), task
//! ids and the clock, so the procedures stay deterministic.

pub mod api;
mod list;
mod procs;
pub mod schema;
#[cfg(test)]
mod tests;

pub use api::{
    Completed, Page, Placement, Policy, Submitted, TaskInfo, TaskState, WorkerInfo, CAPACITY_MAX,
    LIST_LIMIT_MAX,
};
pub use schema::SchedTables;

use crate::schema::PartitionDb;
use tabos_engine::{Access, ProcDef, Registry, Scope};

pub mod ids {
    //! Stable procedure ids of this service (100..=149). Add, never renumber.

    /// `worker_add(W, capacity, now_ns)` on the worker's partition.
    pub const WORKER_ADD: u32 = 100;
    /// `worker_remove(W)`: `Busy` while the worker runs a task.
    pub const WORKER_REMOVE: u32 = 101;
    /// `worker_list(after, limit)`: one page of workers.
    pub const WORKER_LIST: u32 = 102;
    /// `schedule_fifo(P, TID, submitted_ns)`, figure 2.
    pub const SCHEDULE_FIFO: u32 = 103;
    /// `schedule_locality(HP, TID, submitted_ns)`, figure 3.
    pub const SCHEDULE_LOCALITY: u32 = 104;
    /// `schedule_least_loaded(P, TID, submitted_ns)`, figure 4.
    pub const SCHEDULE_LEAST_LOADED: u32 = 105;
    /// `complete_task(TID, now_ns)`: free the capacity or hand it to a queued task.
    pub const COMPLETE_TASK: u32 = 106;
    /// `task_get(TID)`: one task's state.
    pub const TASK_GET: u32 = 107;
    /// `task_list(after, limit)`: one page of tasks.
    pub const TASK_LIST: u32 = 108;

    /// First id of the scheduler's range.
    pub const FIRST: u32 = 100;
    /// Last id of the scheduler's range.
    pub const LAST: u32 = 149;
}

/// Register this service's procedures.
pub fn register(registry: &mut Registry<PartitionDb>) {
    use Access::{ReadOnly, ReadWrite};
    let defs: [(u32, &'static str, Access, tabos_engine::ProcFn<PartitionDb>); 9] = [
        (ids::WORKER_ADD, "worker_add", ReadWrite, procs::worker_add),
        (
            ids::WORKER_REMOVE,
            "worker_remove",
            ReadWrite,
            procs::worker_remove,
        ),
        (ids::WORKER_LIST, "worker_list", ReadOnly, list::worker_list),
        (
            ids::SCHEDULE_FIFO,
            "schedule_fifo",
            ReadWrite,
            procs::schedule_fifo,
        ),
        (
            ids::SCHEDULE_LOCALITY,
            "schedule_locality",
            ReadWrite,
            procs::schedule_locality,
        ),
        (
            ids::SCHEDULE_LEAST_LOADED,
            "schedule_least_loaded",
            ReadWrite,
            procs::schedule_least_loaded,
        ),
        (
            ids::COMPLETE_TASK,
            "complete_task",
            ReadWrite,
            procs::complete_task,
        ),
        (ids::TASK_GET, "task_get", ReadOnly, list::task_get),
        (ids::TASK_LIST, "task_list", ReadOnly, list::task_list),
    ];
    for (id, name, access, func) in defs {
        assert!(
            (ids::FIRST..=ids::LAST).contains(&id),
            "{name}: id {id} outside the scheduler's range"
        );
        registry.register(ProcDef {
            id,
            name,
            access,
            scope: Scope::Single,
            func,
        });
    }
}
