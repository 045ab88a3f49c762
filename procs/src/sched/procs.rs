//! The scheduling procedures, readable against the paper's figures 2-4: each runs on
//! the partition `P` (or `HP`) the client routed it to, and touches only that
//! partition's `Worker` and `Task` tables. Time comes from the client as an argument.
//!
//! Errors are checked in a fixed order, so a model can predict them: malformed
//! arguments (`BadArgs`), then a duplicate id (`AlreadyExists`), then the business
//! outcome (`NoCapacity`, `NotFound`, `Busy`), then a full table (`TableFull`). Any
//! error rolls the whole transaction back.

use tabos_engine::{put_u32, ArgReader, Ctx};
use tabos_transport::Status;

use super::api::{Completed, Placement, Policy, CAPACITY_MAX};
use super::schema::WorkerRow;
use crate::schema::PartitionDb;

/// Decode `(task_id, time_ns)`: the arguments of `schedule_*` and `complete_task`.
fn task_and_time(args: &[u8]) -> Result<(u64, u64), Status> {
    let mut r = ArgReader::new(args);
    let (task_id, time_ns) = (r.u64()?, r.u64()?);
    r.finish()?;
    Ok((task_id, time_ns))
}

/// Figure 2, `schedule_simple(P, TID)`: run the task on a worker of `P` with unused
/// capacity, or fail with `NoCapacity` (the client then tries another partition).
pub(super) fn schedule_fifo(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let (task_id, submitted_ns) = task_and_time(ctx.args)?;
    let sched = &mut ctx.db.sched;
    if sched.tasks.contains(&task_id) {
        return Err(Status::AlreadyExists);
    }
    // select worker_id, unused_capacity from Worker where unused_capacity>0 and p_key=P
    // limit 1;
    let worker_id = sched.first_with_capacity().ok_or(Status::NoCapacity)?;
    sched.assign_new(worker_id, task_id, Policy::Fifo, submitted_ns)?;
    Placement::Assigned { worker_id }.encode(ctx.reply);
    Ok(())
}

/// Figure 3, `schedule_locality(HP, TID)`: as figure 2 on the home partition `HP`, but
/// when no worker there has capacity the task is queued on `HP` with no worker.
pub(super) fn schedule_locality(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let (task_id, submitted_ns) = task_and_time(ctx.args)?;
    let sched = &mut ctx.db.sched;
    if sched.tasks.contains(&task_id) {
        return Err(Status::AlreadyExists);
    }
    let placement = match sched.first_with_capacity() {
        Some(worker_id) => {
            sched.assign_new(worker_id, task_id, Policy::Locality, submitted_ns)?;
            Placement::Assigned { worker_id }
        }
        None => {
            // insert into Task (HP, TID, null, ...);
            sched.queue_new(task_id, Policy::Locality, submitted_ns)?;
            Placement::Queued
        }
    };
    placement.encode(ctx.reply);
    Ok(())
}

/// Figure 4, `schedule_least_loaded(P, TID)`: as figure 2, choosing the worker of `P`
/// with the greatest unused capacity (`order by unused_capacity desc limit 1`).
pub(super) fn schedule_least_loaded(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let (task_id, submitted_ns) = task_and_time(ctx.args)?;
    let sched = &mut ctx.db.sched;
    if sched.tasks.contains(&task_id) {
        return Err(Status::AlreadyExists);
    }
    let worker_id = sched.most_unused_capacity().ok_or(Status::NoCapacity)?;
    sched.assign_new(worker_id, task_id, Policy::LeastLoaded, submitted_ns)?;
    Placement::Assigned { worker_id }.encode(ctx.reply);
    Ok(())
}

/// `complete_task(TID, now)`: delete the task and free its worker's capacity; in the
/// same transaction the oldest queued task of the partition takes that capacity. A
/// task completed while still queued is withdrawn.
pub(super) fn complete_task(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let (task_id, now_ns) = task_and_time(ctx.args)?;
    let sched = &mut ctx.db.sched;
    let task = sched.tasks.delete(&task_id).ok_or(Status::NotFound)?;
    let completed = match task.worker_id {
        None => Completed::Withdrawn,
        Some(worker_id) => match sched.oldest_queued() {
            Some(next_task_id) => {
                // The freed unit goes straight to the next task: the worker's unused
                // capacity stays 0, as it must while tasks are queued.
                sched.assign_queued(next_task_id, worker_id, now_ns);
                Completed::HandedOver {
                    worker_id,
                    next_task_id,
                }
            }
            None => {
                sched.return_capacity(worker_id);
                Completed::Freed { worker_id }
            }
        },
    };
    // assertions: the task is gone; a handed-over task now runs on the freed worker.
    assert!(!sched.tasks.contains(&task_id));
    if let Completed::HandedOver {
        worker_id,
        next_task_id,
    } = completed
    {
        let next = sched.tasks.get(&next_task_id).expect("the next task");
        assert_eq!(next.worker_id, Some(worker_id));
    }
    completed.encode(ctx.reply);
    Ok(())
}

/// `worker_add(W, capacity, now)`: register worker `W` on this partition. Queued tasks
/// of the partition, oldest first, take the new capacity in the same transaction (at
/// most `capacity` of them). Replies with how many it took over.
pub(super) fn worker_add(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let (worker_id, capacity, now_ns) = (r.u64()?, r.u32()?, r.u64()?);
    r.finish()?;
    if capacity == 0 || capacity > CAPACITY_MAX {
        return Err(Status::BadArgs);
    }
    let sched = &mut ctx.db.sched;
    sched.workers.insert(WorkerRow {
        worker_id,
        capacity,
        unused_capacity: capacity,
    })?;
    let mut taken = 0u32;
    while taken < capacity {
        let Some(task_id) = sched.oldest_queued() else {
            break;
        };
        sched.assign_queued(task_id, worker_id, now_ns);
        sched.take_capacity(worker_id);
        taken += 1;
    }
    // assertions: the queue is drained or the worker is full.
    assert!(taken <= capacity);
    assert!(taken == capacity || !sched.any_queued());
    put_u32(ctx.reply, taken);
    Ok(())
}

/// `worker_remove(W)`: unregister worker `W`; `Busy` while it runs any task.
pub(super) fn worker_remove(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let worker_id = r.u64()?;
    r.finish()?;
    let sched = &mut ctx.db.sched;
    let worker = sched.workers.get(&worker_id).ok_or(Status::NotFound)?;
    assert!(worker.unused_capacity <= worker.capacity);
    if worker.unused_capacity != worker.capacity {
        return Err(Status::Busy);
    }
    sched.workers.delete(&worker_id);
    Ok(())
}
