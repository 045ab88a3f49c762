//! A partition's inbox: how other threads of the node reach a partition thread
//! (attach or detach a client, broadcast jobs, shutdown), with its doorbell.
//!
//! Client requests never pass through here; they arrive on the client's own rings.

use crate::broadcast::BroadcastJob;
use crate::port::Port;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tabos_transport::doorbell::EventFd;

/// Control messages to a partition thread.
#[derive(Debug)]
pub enum Command {
    /// Serve a new client's rings for this partition.
    Attach(Box<Port>),
    /// The client is gone: free its rings.
    Detach(u64),
    /// Finish what is in the rings, then stop.
    Shutdown,
}

/// One partition's inbox.
#[derive(Debug)]
pub struct Inbox {
    commands: Mutex<Vec<Command>>,
    broadcasts: Mutex<VecDeque<Arc<BroadcastJob>>>,
    pending: AtomicU32,
    /// Rung whenever something is put here, and by clients whose ring the partition
    /// marked as sleeping.
    pub doorbell: EventFd,
}

impl Inbox {
    /// An empty inbox with a fresh doorbell.
    pub fn new() -> std::io::Result<Inbox> {
        Ok(Inbox {
            commands: Mutex::new(Vec::new()),
            broadcasts: Mutex::new(VecDeque::new()),
            pending: AtomicU32::new(0),
            doorbell: EventFd::new()?,
        })
    }

    /// Post a command and wake the partition.
    pub fn send(&self, command: Command) {
        self.commands.lock().expect("inbox lock").push(command);
        self.pending.fetch_add(1, Ordering::Release);
        self.doorbell.notify();
    }

    /// Queue a broadcast job; the caller holds the coordinator's order lock.
    pub fn push_broadcast(&self, job: Arc<BroadcastJob>) {
        self.broadcasts.lock().expect("inbox lock").push_back(job);
        self.pending.fetch_add(1, Ordering::Release);
        self.doorbell.notify();
    }

    /// Whether anything waits here (one relaxed load: cheap enough for every loop turn).
    pub fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) != 0
    }

    /// Move every command into `out`.
    pub fn take_commands(&self, out: &mut Vec<Command>) {
        let mut queue = self.commands.lock().expect("inbox lock");
        self.pending.fetch_sub(queue.len() as u32, Ordering::AcqRel);
        out.append(&mut queue);
    }

    /// The oldest broadcast job, if any.
    pub fn pop_broadcast(&self) -> Option<Arc<BroadcastJob>> {
        let job = self.broadcasts.lock().expect("inbox lock").pop_front();
        if job.is_some() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
        job
    }
}
