//! What crosses the wire for the scheduler: argument encoders, reply types and their
//! decoders. Procedures and clients share this file, so they cannot disagree.
//!
//! Every layout is the engine's argument codec (little-endian, no padding). An optional
//! `u64` is a `u8` flag (0 none, 1 some) followed by the `u64` (0 when none), so every
//! record has a fixed size.

use tabos_engine::{put_u32, put_u64, put_u8, ArgReader};
use tabos_transport::Status;

use super::ids;

/// Largest capacity of one worker, in runnable tasks. Bounds the work of one
/// `worker_add`, which hands queued tasks to the new worker in its transaction.
pub const CAPACITY_MAX: u32 = 1 << 16;
/// Most rows one `worker_list` or `task_list` call returns.
pub const LIST_LIMIT_MAX: u32 = 1000;

/// Which scheduler places a task: the paper's figures 2, 3 and 4. Stable codes.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Policy {
    /// Figure 2: any worker with unused capacity on a random partition.
    Fifo = 0,
    /// Figure 3: a worker on the task's home partition, else queue there.
    Locality = 1,
    /// Figure 4: the worker with the greatest unused capacity on a random partition.
    LeastLoaded = 2,
}

impl Policy {
    /// Every policy.
    pub const ALL: [Policy; 3] = [Policy::Fifo, Policy::Locality, Policy::LeastLoaded];

    /// The procedure that implements this policy.
    pub fn proc_id(self) -> u32 {
        match self {
            Policy::Fifo => ids::SCHEDULE_FIFO,
            Policy::Locality => ids::SCHEDULE_LOCALITY,
            Policy::LeastLoaded => ids::SCHEDULE_LEAST_LOADED,
        }
    }

    /// The policy with wire code `code`, if any.
    pub fn from_code(code: u8) -> Option<Policy> {
        Policy::ALL.into_iter().find(|p| *p as u8 == code)
    }

    /// The name the command line uses: `fifo`, `locality`, `least-loaded`.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Fifo => "fifo",
            Policy::Locality => "locality",
            Policy::LeastLoaded => "least-loaded",
        }
    }
}

/// Where a scheduling call put the task. Reply of `schedule_*`: `u8` tag (0 assigned,
/// 1 queued), then the worker id when assigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// The task runs on this worker of the partition.
    Assigned { worker_id: u64 },
    /// No worker of the partition had capacity; the task waits there (locality only).
    Queued,
}

impl Placement {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Placement::Assigned { worker_id } => {
                put_u8(out, 0);
                put_u64(out, worker_id);
            }
            Placement::Queued => put_u8(out, 1),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Placement, Status> {
        let mut r = ArgReader::new(bytes);
        let placement = match r.u8()? {
            0 => Placement::Assigned {
                worker_id: r.u64()?,
            },
            1 => Placement::Queued,
            _ => return Err(Status::BadArgs),
        };
        r.finish()?;
        Ok(placement)
    }
}

/// A task a client submitted: its id, the partition that holds it, and its placement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Submitted {
    pub task_id: u64,
    pub partition: u32,
    pub placement: Placement,
}

/// What `complete_task` did. Reply: `u8` tag (0 freed, 1 handed over, 2 withdrawn),
/// then the worker id for 0 and 1, then the next task's id for 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Completed {
    /// The task's worker got one unit of capacity back.
    Freed { worker_id: u64 },
    /// The worker's freed capacity went to the oldest queued task of the partition.
    HandedOver { worker_id: u64, next_task_id: u64 },
    /// The task was still queued: removed without touching any worker.
    Withdrawn,
}

impl Completed {
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Completed::Freed { worker_id } => {
                put_u8(out, 0);
                put_u64(out, worker_id);
            }
            Completed::HandedOver {
                worker_id,
                next_task_id,
            } => {
                put_u8(out, 1);
                put_u64(out, worker_id);
                put_u64(out, next_task_id);
            }
            Completed::Withdrawn => put_u8(out, 2),
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Completed, Status> {
        let mut r = ArgReader::new(bytes);
        let completed = match r.u8()? {
            0 => Completed::Freed {
                worker_id: r.u64()?,
            },
            1 => Completed::HandedOver {
                worker_id: r.u64()?,
                next_task_id: r.u64()?,
            },
            2 => Completed::Withdrawn,
            _ => return Err(Status::BadArgs),
        };
        r.finish()?;
        Ok(completed)
    }
}

/// A fixed-size record of a list reply, listed in ascending `id` order.
pub trait Record: Sized {
    /// The primary key the list pages by.
    fn id(&self) -> u64;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(r: &mut ArgReader<'_>) -> Result<Self, Status>;
}

/// One worker as `worker_list` reports it. Record: `u64` id, `u32` capacity, `u32`
/// unused capacity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkerInfo {
    pub worker_id: u64,
    /// Tasks it can run at once.
    pub capacity: u32,
    /// Tasks it can still take: `capacity` minus the tasks assigned to it.
    pub unused_capacity: u32,
}

impl Record for WorkerInfo {
    fn id(&self) -> u64 {
        self.worker_id
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.worker_id);
        put_u32(out, self.capacity);
        put_u32(out, self.unused_capacity);
    }

    fn decode(r: &mut ArgReader<'_>) -> Result<WorkerInfo, Status> {
        Ok(WorkerInfo {
            worker_id: r.u64()?,
            capacity: r.u32()?,
            unused_capacity: r.u32()?,
        })
    }
}

/// A task's state, derived from whether it has a worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    /// Runs on a worker.
    Assigned,
    /// Waits for capacity on its partition (`worker_id` is none).
    Queued,
}

impl TaskState {
    pub fn name(self) -> &'static str {
        match self {
            TaskState::Assigned => "assigned",
            TaskState::Queued => "queued",
        }
    }
}

/// One task as `task_get` and `task_list` report it. Record: `u64` id, `u8` policy,
/// optional `u64` worker, `u64` submitted_ns, optional `u64` assigned_ns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    pub task_id: u64,
    /// The scheduler that placed it.
    pub policy: Policy,
    /// Its worker; `None` while queued.
    pub worker_id: Option<u64>,
    /// Client clock when it was submitted.
    pub submitted_ns: u64,
    /// Client clock of the call that gave it a worker; `None` while queued.
    pub assigned_ns: Option<u64>,
}

impl TaskInfo {
    pub fn state(&self) -> TaskState {
        match self.worker_id {
            Some(_) => TaskState::Assigned,
            None => TaskState::Queued,
        }
    }
}

impl Record for TaskInfo {
    fn id(&self) -> u64 {
        self.task_id
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_u64(out, self.task_id);
        put_u8(out, self.policy as u8);
        put_opt_u64(out, self.worker_id);
        put_u64(out, self.submitted_ns);
        put_opt_u64(out, self.assigned_ns);
    }

    fn decode(r: &mut ArgReader<'_>) -> Result<TaskInfo, Status> {
        Ok(TaskInfo {
            task_id: r.u64()?,
            policy: Policy::from_code(r.u8()?).ok_or(Status::BadArgs)?,
            worker_id: opt_u64(r)?,
            submitted_ns: r.u64()?,
            assigned_ns: opt_u64(r)?,
        })
    }
}

impl TaskInfo {
    /// Decode a `task_get` reply.
    pub fn decode_reply(bytes: &[u8]) -> Result<TaskInfo, Status> {
        let mut r = ArgReader::new(bytes);
        let task = <TaskInfo as Record>::decode(&mut r)?;
        r.finish()?;
        Ok(task)
    }
}

/// One page of a list: rows with ids above the request's cursor, ascending. Reply:
/// `u32` count, the records, `u8` more (1: rows beyond the last one exist; ask again
/// with the last id as the cursor).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub more: bool,
}

impl<T: Record> Page<T> {
    pub fn encode(items: &[T], more: bool, out: &mut Vec<u8>) {
        put_u32(out, u32::try_from(items.len()).expect("a page is bounded"));
        for item in items {
            item.encode(out);
        }
        put_u8(out, u8::from(more));
    }

    /// Decode untrusted reply bytes; the ids must ascend.
    pub fn decode(bytes: &[u8]) -> Result<Page<T>, Status> {
        let mut r = ArgReader::new(bytes);
        let count = r.u32()?;
        if count > LIST_LIMIT_MAX {
            return Err(Status::BadArgs);
        }
        let mut items: Vec<T> = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let item = T::decode(&mut r)?;
            if items.last().is_some_and(|last| last.id() >= item.id()) {
                return Err(Status::BadArgs);
            }
            items.push(item);
        }
        let more = match r.u8()? {
            0 => false,
            1 => true,
            _ => return Err(Status::BadArgs),
        };
        r.finish()?;
        Ok(Page { items, more })
    }

    /// The cursor for the next page, if there is one.
    pub fn next_cursor(&self) -> Option<u64> {
        if self.more {
            self.items.last().map(Record::id)
        } else {
            None
        }
    }
}

/// The partition a worker is registered on when none is named: `worker_id %
/// partition_count`, so an operator can tell it without a hash.
pub fn worker_partition(worker_id: u64, partition_count: u32) -> u32 {
    assert!(partition_count > 0, "partition_count must be positive");
    (worker_id % u64::from(partition_count)) as u32
}

/// Arguments of `worker_add`: worker id, capacity, client clock (for tasks it takes
/// over from the queue).
pub fn worker_add_args(worker_id: u64, capacity: u32, now_ns: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    put_u64(&mut out, worker_id);
    put_u32(&mut out, capacity);
    put_u64(&mut out, now_ns);
    out
}

/// Arguments of `worker_remove` and of lookups by one id (`task_get`).
pub fn id_args(id: u64) -> Vec<u8> {
    id.to_le_bytes().to_vec()
}

/// Arguments of `schedule_fifo`, `schedule_locality` and `schedule_least_loaded`: the
/// task id and the client clock at submission. Send them with
/// `Client::submit(policy.proc_id(), partition, &schedule_args(..))` to pipeline.
pub fn schedule_args(task_id: u64, submitted_ns: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(16);
    put_u64(&mut out, task_id);
    put_u64(&mut out, submitted_ns);
    out
}

/// Arguments of `complete_task`: the task id and the client clock (the assignment
/// time of a queued task that takes over the freed capacity).
pub fn complete_args(task_id: u64, now_ns: u64) -> Vec<u8> {
    schedule_args(task_id, now_ns)
}

/// Arguments of `worker_list` and `task_list`: an optional cursor (list ids above it)
/// and the most rows to return, `1..=LIST_LIMIT_MAX`.
pub fn list_args(after: Option<u64>, limit: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(13);
    put_opt_u64(&mut out, after);
    put_u32(&mut out, limit);
    out
}

/// Decode the reply of `worker_add`: how many queued tasks the new worker took over.
pub fn decode_worker_added(bytes: &[u8]) -> Result<u32, Status> {
    let mut r = ArgReader::new(bytes);
    let taken = r.u32()?;
    r.finish()?;
    Ok(taken)
}

pub(super) fn put_opt_u64(out: &mut Vec<u8>, value: Option<u64>) {
    put_u8(out, u8::from(value.is_some()));
    put_u64(out, value.unwrap_or(0));
}

pub(super) fn opt_u64(r: &mut ArgReader<'_>) -> Result<Option<u64>, Status> {
    let flag = r.u8()?;
    let value = r.u64()?;
    match (flag, value) {
        (0, 0) => Ok(None),
        (1, v) => Ok(Some(v)),
        _ => Err(Status::BadArgs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_and_reject_garbage() {
        for placement in [Placement::Assigned { worker_id: 7 }, Placement::Queued] {
            let mut out = Vec::new();
            placement.encode(&mut out);
            assert_eq!(Placement::decode(&out), Ok(placement));
            out.push(0);
            assert_eq!(Placement::decode(&out), Err(Status::BadArgs));
        }
        let all = [
            Completed::Freed { worker_id: 1 },
            Completed::HandedOver {
                worker_id: 2,
                next_task_id: 3,
            },
            Completed::Withdrawn,
        ];
        for completed in all {
            let mut out = Vec::new();
            completed.encode(&mut out);
            assert_eq!(Completed::decode(&out), Ok(completed));
            assert_eq!(
                Completed::decode(&out[..out.len() - 1]),
                Err(Status::BadArgs)
            );
        }
        assert_eq!(Placement::decode(&[9]), Err(Status::BadArgs));
        assert_eq!(Completed::decode(&[3]), Err(Status::BadArgs));
    }

    #[test]
    fn pages_round_trip_and_reject_unordered_ids() {
        let task = |task_id| TaskInfo {
            task_id,
            policy: Policy::Locality,
            worker_id: (task_id % 2 == 0).then_some(task_id * 10),
            submitted_ns: 5,
            assigned_ns: (task_id % 2 == 0).then_some(6),
        };
        let items = [task(1), task(2), task(9)];
        let mut out = Vec::new();
        Page::encode(&items, true, &mut out);
        let page = Page::<TaskInfo>::decode(&out).unwrap();
        assert_eq!(page.items, items);
        assert_eq!(page.next_cursor(), Some(9));
        for cut in 0..out.len() {
            assert!(Page::<TaskInfo>::decode(&out[..cut]).is_err(), "cut {cut}");
        }
        let mut out = Vec::new();
        Page::encode(&[task(2), task(1)], false, &mut out);
        assert_eq!(Page::<TaskInfo>::decode(&out), Err(Status::BadArgs));
    }

    #[test]
    fn policies_have_stable_codes_and_procedures() {
        for policy in Policy::ALL {
            assert_eq!(Policy::from_code(policy as u8), Some(policy));
        }
        assert_eq!(Policy::from_code(3), None);
        assert_eq!(Policy::Fifo.proc_id(), ids::SCHEDULE_FIFO);
        assert_eq!(worker_partition(7, 2), 1);
    }
}
