//! Writes to replicated tables: a procedure of `Scope::Broadcast` runs on every
//! partition of the node, and every partition runs such procedures in the same order.
//!
//! The partition that received the request (the origin) builds a [`BroadcastJob`] and
//! hands it to the [`Coordinator`], which appends it to every partition's inbox under
//! one lock: so all inboxes hold broadcast jobs in one global order. Each partition
//! runs the job when it reaches it; the last one to finish rings the origin, which
//! replies to the client with the status and reply of its own run.

use crate::inbox::Inbox;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tabos_engine::Caller;
use tabos_transport::Status;

/// One replicated write in flight.
#[derive(Debug)]
pub struct BroadcastJob {
    /// Procedure to run.
    pub proc_id: u32,
    /// Its arguments.
    pub args: Vec<u8>,
    /// Who called.
    pub caller: Caller,
    /// Partition that replies to the client.
    pub origin: u32,
    /// Partitions that have not run the job yet.
    remaining: AtomicU32,
    /// The origin's outcome: status code and reply.
    outcome: Mutex<Option<(Status, Vec<u8>)>>,
}

impl BroadcastJob {
    /// A job for `partition_count` partitions.
    pub fn new(
        proc_id: u32,
        args: Vec<u8>,
        caller: Caller,
        origin: u32,
        partition_count: u32,
    ) -> BroadcastJob {
        assert!(origin < partition_count);
        BroadcastJob {
            proc_id,
            args,
            caller,
            origin,
            remaining: AtomicU32::new(partition_count),
            outcome: Mutex::new(None),
        }
    }

    /// Record that `partition` ran the job with `status` (and, on the origin, `reply`).
    /// Returns true when this was the last partition.
    pub fn finish_on(&self, partition: u32, status: Status, reply: &[u8]) -> bool {
        if partition == self.origin {
            *self.outcome.lock().expect("job lock") = Some((status, reply.to_vec()));
        }
        let before = self.remaining.fetch_sub(1, Ordering::AcqRel);
        assert!(
            before > 0,
            "broadcast job finished more often than it has partitions"
        );
        before == 1
    }

    /// The origin's outcome once every partition has run the job.
    pub fn outcome(&self) -> Option<(Status, Vec<u8>)> {
        if self.remaining.load(Ordering::Acquire) != 0 {
            return None;
        }
        self.outcome.lock().expect("job lock").clone()
    }
}

/// Gives broadcast jobs one order on every partition.
#[derive(Debug, Default)]
pub struct Coordinator {
    order: Mutex<Order>,
}

#[derive(Debug, Default)]
struct Order {
    sequence: u64,
    closed: bool,
}

impl Coordinator {
    /// Append `job` to every inbox, atomically with respect to other jobs. Returns
    /// false once the node is shutting down: a partition may already have stopped.
    pub fn submit(&self, job: &Arc<BroadcastJob>, inboxes: &[Arc<Inbox>]) -> bool {
        let mut order = self.order.lock().expect("coordinator lock");
        if order.closed {
            return false;
        }
        order.sequence += 1;
        for inbox in inboxes {
            inbox.push_broadcast(job.clone());
        }
        true
    }

    /// Refuse further jobs. Called before partitions are told to stop, so every job
    /// accepted earlier is already in every inbox, and partitions exit only with
    /// empty inboxes.
    pub fn close(&self) {
        self.order.lock().expect("coordinator lock").closed = true;
    }
}
