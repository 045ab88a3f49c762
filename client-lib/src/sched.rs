//! Typed client API of the scheduler (paper §4.2). The types it returns live in
//! [`tabos_procs::sched`] beside the procedures that produce them.
//!
//! The client does the parts the paper leaves to the caller of a stored procedure: it
//! reads the clock, chooses task ids, and for FIFO and least-loaded tries partitions in
//! a random order, each at most once, until one has capacity.
//!
//! Task ids are random 64-bit values: a per-process seed (clock, process id, address
//! layout) plus a counter, mixed by a bijection, so one process never repeats an id and
//! two processes collide with negligible probability. A collision on the same
//! partition is `AlreadyExists`, and [`Client::sched_submit`] draws a fresh id.
//!
//! To pipeline submissions (benchmarks), encode the arguments yourself:
//!
//! ```no_run
//! use tabos_procs::sched::api::schedule_args;
//! use tabos_procs::sched::{Placement, Policy};
//! # let mut client = tabos_client::Client::connect("/tmp/tabos.sock")?;
//! use tabos_client::Client;
//! let (policy, now_ns) = (Policy::Fifo, Client::sched_clock_ns());
//! for i in 0..64u32 {
//!     let partition = i % client.partition_count();
//!     let args = schedule_args(Client::sched_task_id(), now_ns);
//!     client.submit(policy.proc_id(), partition, &args)?;
//! }
//! let mut done = Vec::new();
//! while client.in_flight() > 0 {
//!     client.wait(&mut done, 1)?;
//! }
//! for completion in done {
//!     let _placement = completion.into_result().map(|r| Placement::decode(&r));
//! }
//! # Ok::<(), tabos_client::Error>(())
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::{Client, Error};
use tabos_procs::sched::api::{
    complete_args, decode_worker_added, id_args, list_args, schedule_args, worker_add_args,
    worker_partition,
};
use tabos_procs::sched::{
    ids, Completed, Page, Placement, Policy, Submitted, TaskInfo, WorkerInfo, LIST_LIMIT_MAX,
};
use tabos_transport::segment::PARTITIONS_MAX;
use tabos_transport::Status;

/// Fresh ids [`Client::sched_submit`] tries on one partition before it gives up with
/// `AlreadyExists` (a repeat means the generator is broken, not bad luck).
const FRESH_ID_TRIES: u32 = 4;

/// Every worker and task of one partition, as `tabos sched ls` shows them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchedListing {
    pub partition: u32,
    /// By worker id.
    pub workers: Vec<WorkerInfo>,
    /// By task id.
    pub tasks: Vec<TaskInfo>,
}

/// One entry of [`Client::sched_submit_pipelined`]: the id tried, where, and how it
/// went (no retry on another partition).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubmitAttempt {
    pub task_id: u64,
    pub partition: u32,
    pub placement: Result<Placement, Error>,
}

/// Nanoseconds since the Unix epoch on this host's clock.
fn now_ns() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

/// A random 64-bit value; every call in a process returns a different one.
fn new_task_id() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        let local = 0u8;
        let address = std::ptr::addr_of!(local) as u64;
        mix(now_ns() ^ (u64::from(std::process::id()) << 32) ^ mix(address))
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    // An odd multiplier and the finaliser are both bijections on u64: distinct counters
    // give distinct ids.
    mix(seed.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
}

/// The splitmix64 finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Partitions to try for one submission: `first` if given, then the rest in a random
/// order, each once. Lazy Fisher-Yates over a stack array: no allocation.
struct PartitionOrder {
    slots: [u32; PARTITIONS_MAX as usize],
    count: usize,
    next: usize,
    /// Leading slots that keep their place (the `first` partition).
    fixed: usize,
}

impl PartitionOrder {
    fn new(partition_count: u32, first: Option<u32>) -> PartitionOrder {
        assert!(partition_count > 0 && partition_count <= PARTITIONS_MAX);
        let mut slots = [0u32; PARTITIONS_MAX as usize];
        for (i, slot) in slots.iter_mut().enumerate().take(partition_count as usize) {
            *slot = i as u32;
        }
        let mut order = PartitionOrder {
            slots,
            count: partition_count as usize,
            next: 0,
            fixed: 0,
        };
        if let Some(first) = first {
            assert!(first < partition_count, "first partition out of range");
            order.slots.swap(0, first as usize);
            order.fixed = 1;
        }
        order
    }
}

impl Iterator for PartitionOrder {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        let i = self.next;
        if i >= self.count {
            return None;
        }
        if i >= self.fixed {
            let j = i + (new_task_id() % (self.count - i) as u64) as usize;
            self.slots.swap(i, j);
        }
        self.next += 1;
        Some(self.slots[i])
    }
}

impl Client {
    /// A fresh task id: random 64 bits, never repeated within this process.
    pub fn sched_task_id() -> u64 {
        new_task_id()
    }

    /// The client clock the scheduling procedures take as an argument: nanoseconds
    /// since the Unix epoch.
    pub fn sched_clock_ns() -> u64 {
        now_ns()
    }

    /// The partition a worker lives on when none is named: `worker_id % partitions`.
    pub fn worker_partition(&self, worker_id: u64) -> u32 {
        worker_partition(worker_id, self.partition_count())
    }

    /// Register worker `worker_id` with `capacity` (`1..=CAPACITY_MAX` runnable tasks)
    /// on `partition`. Returns how many queued tasks of the partition it took over.
    /// `AlreadyExists`, `TableFull`, `BadArgs` (capacity out of range).
    pub fn worker_add(
        &mut self,
        partition: u32,
        worker_id: u64,
        capacity: u32,
    ) -> Result<u32, Error> {
        let args = worker_add_args(worker_id, capacity, now_ns());
        let reply = self.call(ids::WORKER_ADD, partition, &args)?;
        decode_worker_added(&reply).map_err(Error::Status)
    }

    /// Unregister a worker. `NotFound`, or `Busy` while it runs a task.
    pub fn worker_remove(&mut self, partition: u32, worker_id: u64) -> Result<(), Error> {
        self.call(ids::WORKER_REMOVE, partition, &id_args(worker_id))
            .map(drop)
    }

    /// Submit a new task with a fresh id. Fifo and least-loaded try `home` first if
    /// given, then every other partition in a random order, each once, and return
    /// `NoCapacity` when none had a worker with capacity. Locality needs `home`
    /// (else `BadArgs`): it is assigned there or queued there.
    pub fn sched_submit(&mut self, policy: Policy, home: Option<u32>) -> Result<Submitted, Error> {
        self.submit_task(policy, home, None)
    }

    /// [`Client::sched_submit`] with a task id chosen by the caller; `AlreadyExists` if
    /// the partition that would hold it already has a task with that id.
    pub fn sched_submit_with_id(
        &mut self,
        policy: Policy,
        home: Option<u32>,
        task_id: u64,
    ) -> Result<Submitted, Error> {
        self.submit_task(policy, home, Some(task_id))
    }

    fn submit_task(
        &mut self,
        policy: Policy,
        home: Option<u32>,
        task_id: Option<u64>,
    ) -> Result<Submitted, Error> {
        let count = self.partition_count();
        if home.is_some_and(|p| p >= count) {
            return Err(Error::Status(Status::BadPartition));
        }
        if policy == Policy::Locality && home.is_none() {
            return Err(Error::Status(Status::BadArgs));
        }
        let submitted_ns = now_ns();
        let mut order = PartitionOrder::new(count, home);
        if policy == Policy::Locality {
            order.count = 1; // the home partition only: it queues rather than refuses
        }
        'partitions: for partition in order {
            let tries = if task_id.is_some() { 1 } else { FRESH_ID_TRIES };
            for _ in 0..tries {
                let id = task_id.unwrap_or_else(new_task_id);
                let args = schedule_args(id, submitted_ns);
                match self.call(policy.proc_id(), partition, &args) {
                    Ok(reply) => {
                        let placement = Placement::decode(&reply).map_err(Error::Status)?;
                        return Ok(Submitted {
                            task_id: id,
                            partition,
                            placement,
                        });
                    }
                    Err(Error::Status(Status::AlreadyExists)) if task_id.is_none() => continue,
                    Err(Error::Status(Status::NoCapacity)) => continue 'partitions,
                    Err(e) => return Err(e),
                }
            }
            // Every fresh id collided: the generator is broken, not unlucky.
            return Err(Error::Status(Status::AlreadyExists));
        }
        Err(Error::Status(Status::NoCapacity))
    }

    /// Pipeline one scheduling call per entry of `partitions` (fresh ids, one clock
    /// reading) and wait for all of them; no retry elsewhere. Needs nothing else in
    /// flight on this client (asserted). For benchmarks.
    pub fn sched_submit_pipelined(
        &mut self,
        policy: Policy,
        partitions: &[u32],
    ) -> Result<Vec<SubmitAttempt>, Error> {
        assert_eq!(self.in_flight(), 0, "other calls are in flight");
        let submitted_ns = now_ns();
        let mut attempts = Vec::with_capacity(partitions.len());
        let mut request_ids = Vec::with_capacity(partitions.len());
        for &partition in partitions {
            let task_id = new_task_id();
            let args = schedule_args(task_id, submitted_ns);
            request_ids.push(self.submit(policy.proc_id(), partition, &args)?);
            attempts.push(SubmitAttempt {
                task_id,
                partition,
                placement: Err(Error::Status(Status::Timeout)),
            });
        }
        let mut done = Vec::with_capacity(partitions.len());
        while done.len() < partitions.len() {
            let missing = partitions.len() - done.len();
            self.wait(&mut done, missing)?;
        }
        for completion in done {
            let index = request_ids
                .binary_search(&completion.request_id)
                .expect("a completion of a call made here");
            attempts[index].placement = completion
                .into_result()
                .and_then(|reply| Placement::decode(&reply).map_err(Error::Status));
        }
        assert_eq!(self.in_flight(), 0);
        Ok(attempts)
    }

    /// Complete task `task_id` on `partition`: its worker's capacity is freed or handed
    /// to the partition's oldest queued task. `NotFound` if no such task is there.
    pub fn sched_complete(&mut self, task_id: u64, partition: u32) -> Result<Completed, Error> {
        let reply = self.call(
            ids::COMPLETE_TASK,
            partition,
            &complete_args(task_id, now_ns()),
        )?;
        Completed::decode(&reply).map_err(Error::Status)
    }

    /// Task `task_id` on `partition`, or `None`.
    pub fn sched_task(&mut self, task_id: u64, partition: u32) -> Result<Option<TaskInfo>, Error> {
        match self.call(ids::TASK_GET, partition, &id_args(task_id)) {
            Ok(reply) => TaskInfo::decode_reply(&reply)
                .map(Some)
                .map_err(Error::Status),
            Err(Error::Status(Status::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Up to `limit` (`1..=LIST_LIMIT_MAX`) workers of `partition` with ids above
    /// `after`, by id.
    pub fn worker_page(
        &mut self,
        partition: u32,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Page<WorkerInfo>, Error> {
        let reply = self.call(ids::WORKER_LIST, partition, &list_args(after, limit))?;
        Page::decode(&reply).map_err(Error::Status)
    }

    /// Up to `limit` (`1..=LIST_LIMIT_MAX`) tasks of `partition` with ids above
    /// `after`, by id.
    pub fn task_page(
        &mut self,
        partition: u32,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Page<TaskInfo>, Error> {
        let reply = self.call(ids::TASK_LIST, partition, &list_args(after, limit))?;
        Page::decode(&reply).map_err(Error::Status)
    }

    /// Every worker and task of `partition`, fetched page by page. The pages are
    /// separate transactions: under concurrent changes the result is not a snapshot.
    pub fn sched_list(&mut self, partition: u32) -> Result<SchedListing, Error> {
        let mut listing = SchedListing {
            partition,
            workers: Vec::new(),
            tasks: Vec::new(),
        };
        let mut after = None;
        loop {
            let page = self.worker_page(partition, after, LIST_LIMIT_MAX)?;
            after = page.next_cursor();
            listing.workers.extend(page.items);
            if after.is_none() {
                break;
            }
        }
        let mut after = None;
        loop {
            let page = self.task_page(partition, after, LIST_LIMIT_MAX)?;
            after = page.next_cursor();
            listing.tasks.extend(page.items);
            if after.is_none() {
                break;
            }
        }
        Ok(listing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn task_ids_do_not_repeat() {
        let ids: HashSet<u64> = (0..100_000).map(|_| new_task_id()).collect();
        assert_eq!(ids.len(), 100_000);
    }

    #[test]
    fn partition_order_visits_each_partition_once() {
        for count in [1, 2, 3, 7, PARTITIONS_MAX] {
            for first in [None, Some(0), Some(count - 1)] {
                let order: Vec<u32> = PartitionOrder::new(count, first).collect();
                if let Some(first) = first {
                    assert_eq!(order[0], first);
                }
                let mut sorted = order.clone();
                sorted.sort_unstable();
                assert_eq!(sorted, (0..count).collect::<Vec<_>>());
            }
        }
    }
}
