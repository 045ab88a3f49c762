//! The scheduler's tables (paper §4.2):
//!
//! ```text
//! Worker (p_key, worker_id, capacity, unused_capacity)
//! Task   (p_key, task_id, worker_id or none, state, policy, submitted_ns, assigned_ns)
//! ```
//!
//! Both are partitioned on `p_key`: each partition holds its own two tables, so `p_key`
//! is the partition itself and is not stored. A task's `state` is derived from its
//! worker (`Queued` exactly when it has none), so the two cannot disagree.
//!
//! Each table's one ordered index makes every scheduling decision O(log n):
//! - Worker: sort key `unused_capacity`, only for workers with `unused_capacity > 0`
//!   (ties by `worker_id`). The first entry is a worker with capacity, the last the one
//!   with the most.
//! - Task: sort key `submitted_ns`, only while queued (ties by `task_id`). The first
//!   entry is the oldest queued task.

use std::collections::HashMap;

use tabos_engine::{ConsistencyError, Row, Schema, Table};
use tabos_transport::Status;

use super::api::{Policy, TaskInfo, WorkerInfo};
use crate::schema::DbLimits;

/// A row of `Worker`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerRow {
    pub worker_id: u64,
    /// Tasks it can run at once, `1..=CAPACITY_MAX`.
    pub capacity: u32,
    /// `capacity` minus the tasks assigned to it.
    pub unused_capacity: u32,
}

impl Row for WorkerRow {
    type Key = u64;
    type SortKey = u32;

    fn key(&self) -> u64 {
        self.worker_id
    }

    fn sort_key(&self) -> Option<u32> {
        (self.unused_capacity > 0).then_some(self.unused_capacity)
    }
}

impl WorkerRow {
    pub fn info(&self) -> WorkerInfo {
        WorkerInfo {
            worker_id: self.worker_id,
            capacity: self.capacity,
            unused_capacity: self.unused_capacity,
        }
    }
}

/// A row of `Task`. Completed tasks are deleted, so the table holds live tasks only.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskRow {
    pub task_id: u64,
    /// The worker it runs on; `None` while queued.
    pub worker_id: Option<u64>,
    /// The scheduler that placed it.
    pub policy: Policy,
    /// Client clock at submission.
    pub submitted_ns: u64,
    /// Client clock of the call that gave it a worker; `None` while queued.
    pub assigned_ns: Option<u64>,
}

impl Row for TaskRow {
    type Key = u64;
    type SortKey = u64;

    fn key(&self) -> u64 {
        self.task_id
    }

    fn sort_key(&self) -> Option<u64> {
        self.worker_id.is_none().then_some(self.submitted_ns)
    }
}

impl TaskRow {
    pub fn info(&self) -> TaskInfo {
        TaskInfo {
            task_id: self.task_id,
            policy: self.policy,
            worker_id: self.worker_id,
            submitted_ns: self.submitted_ns,
            assigned_ns: self.assigned_ns,
        }
    }
}

/// The scheduler's tables on one partition.
#[derive(Debug)]
pub struct SchedTables {
    /// `Worker`, bounded by `DbLimits::workers_max`.
    pub workers: Table<WorkerRow>,
    /// `Task`, assigned and queued, bounded by `DbLimits::tasks_max`.
    pub tasks: Table<TaskRow>,
}

impl SchedTables {
    /// Empty tables.
    pub fn new(limits: &DbLimits) -> Self {
        SchedTables {
            workers: Table::new("worker", limits.workers_max),
            tasks: Table::new("task", limits.tasks_max),
        }
    }

    /// Figure 2's `select worker_id from Worker where unused_capacity>0 limit 1`. The
    /// paper's `limit 1` names no order; this takes the first index entry, the worker
    /// with the least unused capacity that still has some (ties: lowest id). That is
    /// deterministic and packs tasks onto busy workers.
    pub fn first_with_capacity(&self) -> Option<u64> {
        self.workers.first_in(..).map(|w| w.worker_id)
    }

    /// Figure 4's `... order by unused_capacity desc limit 1`: the last index entry, the
    /// worker with the greatest unused capacity (ties: highest id).
    pub fn most_unused_capacity(&self) -> Option<u64> {
        self.workers.range(..).next_back().map(|w| w.worker_id)
    }

    /// The oldest queued task: least `submitted_ns`, ties by lowest id.
    pub fn oldest_queued(&self) -> Option<u64> {
        self.tasks.first_in(..).map(|t| t.task_id)
    }

    /// Whether any task is queued. O(log n).
    pub fn any_queued(&self) -> bool {
        self.oldest_queued().is_some()
    }

    /// `update Worker set unused_capacity = UC - 1` then `insert into Task (P, TID,
    /// WID, ...)`: run a new task on `worker_id`, which must have unused capacity.
    /// `TableFull` leaves the worker's decrement for the transaction to roll back.
    pub fn assign_new(
        &mut self,
        worker_id: u64,
        task_id: u64,
        policy: Policy,
        submitted_ns: u64,
    ) -> Result<(), Status> {
        self.take_capacity(worker_id);
        self.tasks.insert(TaskRow {
            task_id,
            worker_id: Some(worker_id),
            policy,
            submitted_ns,
            assigned_ns: Some(submitted_ns),
        })?;
        assert_eq!(
            self.tasks.get(&task_id).and_then(|t| t.worker_id),
            Some(worker_id)
        );
        Ok(())
    }

    /// `insert into Task (HP, TID, null, ...)`: figure 3's queued task.
    pub fn queue_new(
        &mut self,
        task_id: u64,
        policy: Policy,
        submitted_ns: u64,
    ) -> Result<(), Status> {
        self.tasks.insert(TaskRow {
            task_id,
            worker_id: None,
            policy,
            submitted_ns,
            assigned_ns: None,
        })
    }

    /// Give the queued task `task_id` to `worker_id` at `now_ns`; the caller accounts
    /// for the worker's capacity.
    pub fn assign_queued(&mut self, task_id: u64, worker_id: u64, now_ns: u64) {
        assert!(
            self.workers.contains(&worker_id),
            "assign to a missing worker"
        );
        let was = self.tasks.update(&task_id, |t| {
            let was = t.worker_id;
            t.worker_id = Some(worker_id);
            t.assigned_ns = Some(now_ns);
            was
        });
        assert_eq!(was, Some(None), "task {task_id} was not queued");
    }

    /// One unit of `worker_id`'s unused capacity goes to a task.
    pub fn take_capacity(&mut self, worker_id: u64) {
        let found = self.workers.update(&worker_id, |w| {
            assert!(w.unused_capacity > 0, "worker {worker_id} has no capacity");
            w.unused_capacity -= 1;
        });
        assert!(found.is_some(), "take capacity of a missing worker");
    }

    /// One unit of `worker_id`'s capacity comes back from a finished task.
    pub fn return_capacity(&mut self, worker_id: u64) {
        let row = self.workers.update(&worker_id, |w| {
            w.unused_capacity += 1;
            w.clone()
        });
        let row = row.expect("an assigned task names a missing worker");
        assert!(row.unused_capacity <= row.capacity, "capacity overflow");
    }

    /// The invariants the procedures keep, O(n):
    /// - per worker, `unused_capacity <= capacity` and `capacity - unused_capacity` is
    ///   the number of tasks assigned to it (so the worker of every task exists);
    /// - a task has an assignment time exactly when it has a worker;
    /// - while any task is queued, no worker of the partition has unused capacity.
    fn check_scheduling(&self) -> Result<(), ConsistencyError> {
        let fail = |what: String| {
            Err(ConsistencyError {
                table: "sched",
                what,
            })
        };
        let mut running: HashMap<u64, u64> = HashMap::new();
        let mut queued = 0usize;
        for task in self.tasks.iter() {
            if task.worker_id.is_some() != task.assigned_ns.is_some() {
                return fail(format!(
                    "task {}: worker and assigned_ns disagree",
                    task.task_id
                ));
            }
            match task.worker_id {
                Some(w) => *running.entry(w).or_default() += 1,
                None => queued += 1,
            }
        }
        let mut with_capacity = 0usize;
        for worker in self.workers.iter() {
            if worker.unused_capacity > worker.capacity {
                return fail(format!("worker {}: unused > capacity", worker.worker_id));
            }
            let used = u64::from(worker.capacity - worker.unused_capacity);
            let tasks = running.remove(&worker.worker_id).unwrap_or(0);
            if used != tasks {
                return fail(format!(
                    "worker {}: {used} capacity used, {tasks} tasks assigned",
                    worker.worker_id
                ));
            }
            with_capacity += usize::from(worker.unused_capacity > 0);
        }
        if let Some((worker_id, _)) = running.into_iter().next() {
            return fail(format!("tasks assigned to missing worker {worker_id}"));
        }
        if queued > 0 && with_capacity > 0 {
            return fail(format!(
                "{queued} tasks queued while {with_capacity} workers have capacity"
            ));
        }
        Ok(())
    }
}

impl Schema for SchedTables {
    fn commit(&mut self) {
        self.workers.commit();
        self.tasks.commit();
    }

    fn rollback(&mut self) {
        self.workers.rollback();
        self.tasks.rollback();
    }

    fn has_uncommitted(&self) -> bool {
        self.workers.has_uncommitted() || self.tasks.has_uncommitted()
    }

    fn check_consistency(&self) -> Result<(), ConsistencyError> {
        self.workers.check_consistency()?;
        self.tasks.check_consistency()?;
        self.check_scheduling()
    }
}
