//! The partition thread: the only owner of its rows, running one procedure at a time.
//!
//! Its loop is a short list of phases (see [`Partition::run`]): housekeeping, drain and
//! execute, make durable, reply, idle. Every committed invocation that changed the
//! state is appended to the command log as it executes; replies are written into the
//! response rings as requests execute but only published in the reply phase, and in
//! `sync` mode only up to the first reply whose log record is not yet on disk.

use crate::broadcast::{BroadcastJob, Coordinator};
use crate::counters::CallCounters;
use crate::durable::{Durable, SnapshotDone};
use crate::inbox::{Command, Inbox};
use crate::port::Port;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tabos_engine::{execute_logged, Caller, Ctx, ProcDef, Registry, Scope, WaitFor};
use tabos_procs::builtin::{encode_cluster_map, PartitionStats};
use tabos_procs::{ids, PartitionDb};
use tabos_transport::ring::RingError;
use tabos_transport::wire::{Header, FLAG_RESPONSE};
use tabos_transport::Status;

/// Requests taken from one client's ring before moving to the next client.
pub const DRAIN_BATCH_MAX: usize = 256;

/// Longest a partition blocks on a log flush before it looks at its rings again.
const FLUSH_WAIT: Duration = Duration::from_micros(200);

/// What every partition thread of a node shares.
#[derive(Debug)]
pub struct NodeShared {
    /// One inbox per partition, indexed by partition id.
    pub inboxes: Vec<Arc<Inbox>>,
    /// Orders replicated writes.
    pub coordinator: Coordinator,
    /// The compiled procedures.
    pub registry: Registry<PartitionDb>,
    /// Node id reported in statistics.
    pub node_id: u32,
    /// Global id of this node's first partition.
    pub partition_base: u32,
    /// Partitions in the whole cluster.
    pub global_partition_count: u32,
    /// The cluster's nodes and their partitions.
    pub map: Vec<tabos_procs::builtin::NodeInfo>,
    /// Largest request or reply payload.
    pub max_payload_bytes: usize,
    /// How long an idle partition spins before sleeping.
    pub spin: Duration,
}

/// A replicated write this partition received and must answer.
#[derive(Debug)]
struct PendingBroadcast {
    job: Arc<BroadcastJob>,
    client_id: u64,
    request: Header,
}

/// An invocation waiting at the partition for a key to be notified (e.g. a receive on
/// an empty queue), answered when it succeeds or times out.
#[derive(Debug)]
struct Parked {
    client_id: u64,
    caller: Caller,
    request: Header,
    args: Vec<u8>,
    key: u64,
    deadline: Instant,
}

/// How long a partition naps before retrying a wake-up or reply that found the client's
/// response ring full.
const RETRY_NAP: Duration = Duration::from_millis(1);

/// How long a stopping partition keeps answering calls that still arrive.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Most invocations parked on one partition; beyond it a waiting call returns at once.
pub const PARKED_MAX: usize = 65_536;

/// Outcome of one transaction.
struct Invoked {
    status: Status,
    /// The invocation changed the state (and was logged).
    changed: bool,
    notify: Vec<u64>,
    wait: Option<WaitFor>,
}

/// State of one partition thread. Built on, and never leaves, its thread.
pub struct Partition {
    /// Global partition id (what requests and procedures see).
    id: u32,
    /// Index among this node's partitions (its inbox).
    local: u32,
    core: Option<usize>,
    db: PartitionDb,
    /// The command log and snapshots of this partition.
    durable: Durable,
    node: Arc<NodeShared>,
    ports: Vec<Port>,
    pending: Vec<PendingBroadcast>,
    parked: Vec<Parked>,
    woken: Vec<u64>,
    /// Ports published this turn (reused buffer).
    published: Vec<usize>,
    commands: Vec<Command>,
    payload: Vec<u8>,
    reply: Vec<u8>,
    calls: u64,
    errors: u64,
    counters: CallCounters,
    shutting_down: bool,
    shutdown_since: Option<Instant>,
    // Partition state is owned by one thread: keep the type !Send.
    _not_send: std::marker::PhantomData<*const ()>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partition")
            .field("id", &self.id)
            .field("clients", &self.ports.len())
            .finish()
    }
}

impl Partition {
    /// The state of this node's partition `local`, to be called on the thread that
    /// will run it.
    pub fn new(
        local: u32,
        core: Option<usize>,
        db: PartitionDb,
        durable: Durable,
        node: Arc<NodeShared>,
    ) -> Partition {
        assert!(
            (local as usize) < node.inboxes.len(),
            "partition index out of range"
        );
        Partition {
            id: node.partition_base + local,
            local,
            core,
            db,
            durable,
            node,
            ports: Vec::new(),
            pending: Vec::new(),
            parked: Vec::new(),
            woken: Vec::new(),
            published: Vec::new(),
            commands: Vec::new(),
            payload: Vec::new(),
            reply: Vec::new(),
            calls: 0,
            errors: 0,
            counters: CallCounters::default(),
            shutting_down: false,
            shutdown_since: None,
            _not_send: std::marker::PhantomData,
        }
    }

    /// Partitions on this node (those a replicated write runs on).
    fn local_count(&self) -> u32 {
        self.node.inboxes.len() as u32
    }

    fn inbox(&self) -> &Inbox {
        &self.node.inboxes[self.local as usize]
    }

    /// Serve until shutdown. Runs on the partition's own (pinned) thread.
    pub fn run(mut self) {
        if let Some(core) = self.core {
            // Build the CoreId from the configured core: get_core_ids() only lists the
            // cores of the current mask.
            if !core_affinity::set_for_current(core_affinity::CoreId { id: core }) {
                eprintln!(
                    "tabosd: partition {} could not pin to core {core}; running unpinned",
                    self.id
                );
            }
        }
        let mut idle_since: Option<Instant> = None;
        let mut idle_turns: u32 = 0;
        loop {
            // 1. Housekeeping: attach/detach clients, run replicated writes in order.
            let mut work = self.housekeeping();
            // 2. Drain the rings and execute; replies are written but not yet visible.
            work += self.drain_and_execute();
            work += self.wake_parked();
            // 3. Durability: reap a finished log flush, start the next (group commit).
            // 4. Reply: publish response rings up to what is durable, wake clients.
            work += self.publish_replies();
            work += self.answer_finished_broadcasts();
            let grace_over = self
                .shutdown_since
                .is_some_and(|t| t.elapsed() > SHUTDOWN_GRACE);
            if grace_over
                || self.shutting_down
                    && work == 0
                    && self.pending.is_empty()
                    && !self.inbox().has_pending()
            {
                break;
            }
            work += self.snapshots();
            // 5. Idle: spin a bounded time, then sleep on the doorbell.
            if work > 0 {
                idle_since = None;
                idle_turns = 0;
                continue;
            }
            if self.durable.waits_on_flush() && !self.shutting_down {
                // Nothing to do but wait for the log: wait in the kernel rather than
                // spin, so the threads doing the I/O (the io_uring worker, the block
                // layer's workers, which may share this core) run at once instead of
                // when the scheduler preempts a spinning partition (up to a tick).
                self.durable.wait_flush(FLUSH_WAIT);
                continue;
            }
            idle_turns = idle_turns.wrapping_add(1);
            if !idle_turns.is_multiple_of(64) {
                std::hint::spin_loop();
                continue;
            }
            // Let a client that shares this core run (unpinned or oversubscribed nodes).
            std::thread::yield_now();
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.node.spin && !self.shutting_down {
                self.sleep();
                idle_since = None;
            }
        }
        if let Err(why) = self.durable.flush_blocking() {
            eprintln!("tabosd: p{}: final log flush failed: {why}", self.id);
        }
        if let Some(done) = self.durable.finish_snapshot() {
            self.snapshot_done(done);
        }
        self.publish_replies();
        if let Some(summary) = self.durable.summary() {
            eprintln!("tabosd: p{}: {summary}", self.id);
        }
    }

    /// Take a snapshot when enough log was written, and answer finished ones.
    fn snapshots(&mut self) -> usize {
        let mut work = 0;
        if self.durable.snapshot_due() {
            if let Some(done) = self.durable.snapshot(&self.db, None) {
                self.snapshot_done(done);
            }
            work += 1;
        }
        if let Some(done) = self.durable.poll_snapshot() {
            self.snapshot_done(done);
            work += 1;
        }
        work
    }

    /// Answer the `tabos admin snapshot` requests that waited for a snapshot.
    fn snapshot_done(&mut self, done: SnapshotDone) {
        let (status, reply) = match done.result {
            Ok(reply) => {
                let mut bytes = Vec::new();
                reply.encode(&mut bytes);
                (Status::Ok, bytes)
            }
            Err(why) => {
                eprintln!("tabosd: p{}: {why}", self.id);
                (Status::StorageFailed, Vec::new())
            }
        };
        for (client_id, request) in done.waiters {
            // A full ring drops the answer; the admin client times out and can retry.
            let _ = self.reply_to(client_id, &request, status, &reply);
        }
    }

    /// Fail-stop after a log write or fsync error: say why once, and answer every
    /// held reply (its write will never be durable) with `StorageFailed` instead.
    fn fail_stop(&mut self, why: &str) {
        eprintln!(
            "tabosd: p{}: {why}; this partition refuses further calls (fail-stop) and must be restarted",
            self.id
        );
        let released = self.durable.released_lsn();
        for index in 0..self.ports.len() {
            self.ports[index].publish(released);
            let requests = self.ports[index].retract_held();
            for request in requests {
                let header = Header::response_to(&request, Status::StorageFailed, 0);
                let port = &mut self.ports[index];
                match port.responses.try_push(header, &[]) {
                    Ok(true) => port.dirty = true,
                    Ok(false) => {}
                    Err(e) => port.evict(&e),
                }
            }
        }
    }

    /// Apply inbox commands and run queued broadcast jobs. Returns work done.
    fn housekeeping(&mut self) -> usize {
        if !self.inbox().has_pending() {
            return 0;
        }
        let mut commands = std::mem::take(&mut self.commands);
        self.inbox().take_commands(&mut commands);
        let mut work = commands.len();
        for command in commands.drain(..) {
            match command {
                Command::Attach(port) => self.ports.push(*port),
                Command::Detach(client_id) => self.ports.retain(|p| p.client_id != client_id),
                Command::Shutdown => {
                    self.shutting_down = true;
                    self.shutdown_since = Some(Instant::now());
                }
            }
        }
        self.commands = commands;
        let node = self.node.clone();
        while let Some(job) = node.inboxes[self.local as usize].pop_broadcast() {
            work += 1;
            self.run_broadcast(&job);
        }
        work
    }

    fn run_broadcast(&mut self, job: &BroadcastJob) {
        let Some(def) = self.node.registry.get(job.proc_id).copied() else {
            unreachable!("broadcast jobs are built from registered procedures only");
        };
        let mut invoked = self.invoke(&def, job.caller, &job.args);
        self.db.count_replicated(def.scope, invoked.changed);
        self.woken.extend_from_slice(&invoked.notify);
        // Replicated writes are rare: in sync mode each partition makes its record
        // durable before it reports done, so the answer never precedes any of them.
        if self.durable.is_sync() && invoked.status == Status::Ok {
            if let Err(why) = self.durable.flush_blocking() {
                eprintln!("tabosd: p{}: replicated write not durable: {why}", self.id);
                invoked.status = Status::StorageFailed;
                self.reply.clear();
            }
        }
        if job.finish_on(self.local, invoked.status, &self.reply) {
            self.node.inboxes[job.origin as usize].doorbell.notify();
        }
    }

    /// Take up to a batch from every client ring and execute it.
    fn drain_and_execute(&mut self) -> usize {
        let mut work = 0;
        let mut evicted = Vec::new();
        for index in 0..self.ports.len() {
            match self.drain_port(index) {
                Ok(n) => work += n,
                Err(e) => evicted.push((index, e)),
            }
        }
        for (index, why) in evicted.into_iter().rev() {
            let port = self.ports.swap_remove(index);
            port.evict(&why);
        }
        work
    }

    fn drain_port(&mut self, index: usize) -> Result<usize, RingError> {
        let max_payload = self.node.max_payload_bytes;
        let mut served = 0;
        while served < DRAIN_BATCH_MAX {
            if !self.ports[index].has_room_for_reply(max_payload)? {
                break; // the client is not reading its replies: leave its requests queued
            }
            let mut payload = std::mem::take(&mut self.payload);
            let popped = self.ports[index].requests.pop(&mut payload);
            let header = match popped {
                Ok(Some(header)) => header,
                other => {
                    self.payload = payload;
                    other?;
                    break;
                }
            };
            self.serve(index, &header, &payload)?;
            self.payload = payload;
            served += 1;
        }
        if served > 0 {
            self.ports[index].requests.release();
        }
        Ok(served)
    }

    /// Validate one copied-out request, execute it, and write its reply.
    fn serve(&mut self, index: usize, request: &Header, args: &[u8]) -> Result<(), RingError> {
        self.calls += 1;
        self.ports[index].calls += 1;
        self.reply.clear();
        let started = self.counters.start(request.proc_id);
        let status = self.execute_request(index, request, args);
        let Some(status) = status else {
            return Ok(()); // a replicated write or a parked wait: answered later
        };
        self.counters.finish(request.proc_id, status, started);
        if status != Status::Ok {
            self.errors += 1;
        }
        let port = &mut self.ports[index];
        let reply = &self.reply;
        let written = port.responses.try_push_with(
            Header::response_to(request, status, reply.len() as u32),
            reply.len(),
            |dst| dst.copy_from_slice(reply),
        )?;
        assert!(
            written,
            "reply room was checked before the request was taken"
        );
        port.dirty = true;
        port.hold(
            self.durable.reply_lsn(),
            self.durable.released_lsn(),
            request,
        );
        Ok(())
    }

    /// Run `def` as one transaction with the reply in `self.reply`.
    /// A committed invocation that changed the state is appended to the command log.
    /// After a log failure nothing runs (fail-stop).
    fn invoke(&mut self, def: &ProcDef<PartitionDb>, caller: Caller, args: &[u8]) -> Invoked {
        self.reply.clear();
        if self.durable.failed().is_some() {
            return Invoked {
                status: Status::StorageFailed,
                changed: false,
                notify: Vec::new(),
                wait: None,
            };
        }
        let mut ctx = Ctx::new(
            &mut self.db,
            self.id,
            self.node.global_partition_count,
            caller,
            args,
            &mut self.reply,
            self.node.max_payload_bytes,
        );
        let done = execute_logged(def, &mut ctx);
        let Ctx { notify, wait, .. } = ctx;
        if done.changed {
            self.durable.log(def.id, &caller, args);
        }
        Invoked {
            status: done.status,
            changed: done.changed,
            notify,
            wait,
        }
    }

    /// Returns `None` when the request was not answered now: it became a broadcast
    /// job, or it parked until a later transaction wakes it.
    fn execute_request(&mut self, index: usize, request: &Header, args: &[u8]) -> Option<Status> {
        if request.flags & FLAG_RESPONSE != 0 || request.status != 0 {
            return Some(Status::BadFrame);
        }
        if request.partition != self.id {
            return Some(Status::BadPartition);
        }
        if args.len() > self.node.max_payload_bytes {
            return Some(Status::PayloadTooLarge);
        }
        if request.proc_id == ids::SYS_STATS {
            self.stats().encode(&mut self.reply);
            return Some(Status::Ok);
        }
        if request.proc_id == ids::SYS_PROCEDURES || request.proc_id == ids::SYS_CONNECTIONS {
            let (counters, ports) = (&self.counters, &self.ports);
            let max = self.node.max_payload_bytes;
            let registry = &self.node.registry;
            let status = crate::counters::system_rows(
                request.proc_id,
                counters,
                registry,
                ports,
                &mut self.reply,
                max,
            );
            return Some(status);
        }
        if request.proc_id == ids::SYS_CLUSTER_MAP {
            encode_cluster_map(&self.node.map, &mut self.reply);
            return Some(Status::Ok);
        }
        if self.durable.failed().is_some() {
            // Fail-stop: not even reads, which could see writes that never became
            // durable. The reason was logged when the failure happened.
            return Some(Status::StorageFailed);
        }
        if request.proc_id == ids::SYS_SNAPSHOT {
            let waiter = (self.ports[index].client_id, *request);
            if let Some(done) = self.durable.snapshot(&self.db, Some(waiter)) {
                self.snapshot_done(done);
            }
            return None;
        }
        let Some(def) = self.node.registry.get(request.proc_id).copied() else {
            return Some(Status::UnknownProcedure);
        };
        let Some(caller) = self.ports[index].caller_of(request) else {
            return Some(Status::BadFrame); // its connection closed; the reply goes nowhere
        };
        if def.scope == Scope::Broadcast {
            if self.shutting_down {
                return Some(Status::ShuttingDown);
            }
            let job = Arc::new(BroadcastJob::new(
                def.id,
                args.to_vec(),
                caller,
                self.local,
                self.local_count(),
            ));
            if !self.node.coordinator.submit(&job, &self.node.inboxes) {
                return Some(Status::ShuttingDown);
            }
            let client_id = self.ports[index].client_id;
            self.pending.push(PendingBroadcast {
                job,
                client_id,
                request: *request,
            });
            return None;
        }
        let invoked = self.invoke(&def, caller, args);
        if invoked.status == Status::QueueEmpty {
            if let Some(wait) = invoked.wait.filter(|w| w.timeout_ms > 0) {
                if self.parked.len() < PARKED_MAX && !self.shutting_down {
                    self.parked.push(Parked {
                        client_id: self.ports[index].client_id,
                        caller,
                        request: *request,
                        args: args.to_vec(),
                        key: wait.key,
                        deadline: Instant::now() + Duration::from_millis(wait.timeout_ms.into()),
                    });
                    return None;
                }
            }
        }
        if !invoked.notify.is_empty() {
            self.woken.extend_from_slice(&invoked.notify);
        }
        Some(invoked.status)
    }

    /// Write a reply for `request` to the client's port. Returns false only when the
    /// client's response ring is full (the caller keeps the reply for a later turn); a
    /// client that left or was evicted counts as answered (the outcome stands).
    fn reply_to(&mut self, client_id: u64, request: &Header, status: Status, reply: &[u8]) -> bool {
        let Some(port) = self.ports.iter_mut().find(|p| p.client_id == client_id) else {
            return true;
        };
        let header = Header::response_to(request, status, reply.len() as u32);
        match port
            .responses
            .try_push_with(header, reply.len(), |dst| dst.copy_from_slice(reply))
        {
            Ok(true) => {
                port.dirty = true;
                port.hold(
                    self.durable.reply_lsn(),
                    self.durable.released_lsn(),
                    request,
                );
            }
            Ok(false) => return false,
            Err(e) => port.evict(&e),
        }
        if status != Status::Ok {
            self.errors += 1;
        }
        true
    }

    /// Whether the client has room for a reply of any size (true if it left).
    fn client_has_room(&mut self, client_id: u64) -> bool {
        let max = self.node.max_payload_bytes;
        match self.ports.iter_mut().find(|p| p.client_id == client_id) {
            None => true,
            Some(port) => port.has_room_for_reply(max).unwrap_or(true),
        }
    }

    /// Run parked invocations waiting for keys that committed transactions notified,
    /// oldest first, and answer those that now succeed; then time out expired ones.
    ///
    /// A waiter whose client has no room for a reply is not run; its key is kept in
    /// `woken` and the partition looks again after a short nap, so the wake-up is never
    /// lost. Keys of different services may coincide, so a waiter that finds nothing only
    /// stops later waiters *of the same procedure* on that key.
    fn wake_parked(&mut self) -> usize {
        if self.parked.is_empty() {
            self.woken.clear();
            return 0;
        }
        let mut answered = 0;
        let mut retry: Vec<u64> = Vec::new();
        while let Some(key) = self.woken.pop() {
            let mut exhausted: Vec<u32> = Vec::new();
            let mut i = 0;
            while i < self.parked.len() {
                let proc_id = self.parked[i].request.proc_id;
                if self.parked[i].key != key || exhausted.contains(&proc_id) {
                    i += 1;
                    continue;
                }
                if !self
                    .ports
                    .iter()
                    .any(|p| p.client_id == self.parked[i].client_id)
                {
                    self.parked.remove(i); // the client left
                    continue;
                }
                if !self.client_has_room(self.parked[i].client_id) {
                    if !retry.contains(&key) {
                        retry.push(key);
                    }
                    i += 1;
                    continue;
                }
                let Some(def) = self.node.registry.get(proc_id).copied() else {
                    unreachable!("parked requests name registered procedures");
                };
                let args = std::mem::take(&mut self.parked[i].args);
                let invoked = self.invoke(&def, self.parked[i].caller, &args);
                if invoked.status == Status::QueueEmpty {
                    self.parked[i].args = args;
                    exhausted.push(proc_id);
                    i += 1;
                    continue;
                }
                self.woken.extend_from_slice(&invoked.notify);
                let parked = self.parked.remove(i);
                let reply = std::mem::take(&mut self.reply);
                let written =
                    self.reply_to(parked.client_id, &parked.request, invoked.status, &reply);
                assert!(written, "reply room was checked before the parked call ran");
                self.reply = reply;
                answered += 1;
            }
        }
        self.woken.append(&mut retry);
        let now = Instant::now();
        let mut i = 0;
        while i < self.parked.len() {
            let expired = self.parked[i].deadline <= now || self.shutting_down;
            let (client_id, request) = (self.parked[i].client_id, self.parked[i].request);
            if expired && self.reply_to(client_id, &request, Status::Timeout, &[]) {
                self.parked.remove(i);
                answered += 1;
            } else {
                i += 1; // not yet, or no room for the answer: next turn
            }
        }
        answered
    }

    /// When the partition must look at its parked calls again even if nothing arrives.
    fn next_deadline(&self) -> Option<Instant> {
        let reply_waits = self
            .pending
            .first()
            .is_some_and(|p| p.job.outcome().is_some());
        if reply_waits || (!self.woken.is_empty() && !self.parked.is_empty()) {
            return Some(Instant::now() + RETRY_NAP);
        }
        let log = self.durable.wants_poll_in().map(|d| Instant::now() + d);
        let snapshot = self
            .durable
            .snapshot_running()
            .then(|| Instant::now() + RETRY_NAP);
        let parked = self.parked.iter().map(|p| p.deadline).min();
        [log, snapshot, parked].into_iter().flatten().min()
    }

    fn stats(&self) -> PartitionStats {
        let (log_lsn, durable_lsn, last_flush_unix_ms) = self.durable.log_position();
        PartitionStats {
            partition: self.id,
            node_id: self.node.node_id,
            core: self.core.map_or(u32::MAX, |c| c as u32),
            clients: self.ports.len() as u32,
            calls: self.calls,
            errors: self.errors,
            queue_depth: (self.parked.len() + self.pending.len()) as u32,
            queued_request_bytes: self.ports.iter().map(|p| p.requests.queued_bytes()).sum(),
            latency_ns_p50: self.counters.latency_ns(0.5),
            latency_ns_p99: self.counters.latency_ns(0.99),
            log_lsn,
            durable_lsn,
            last_flush_unix_ms,
        }
    }

    /// Reap log flushes, then publish every response ring written this turn up to what
    /// is durable and wake clients that sleep. Returns work done.
    fn publish_replies(&mut self) -> usize {
        let (ports, max, stopping) = (
            &mut self.ports,
            self.node.max_payload_bytes,
            self.shutting_down,
        );
        let work = usize::from(self.durable.poll(|| !stopping && calls_waiting(ports, max)));
        if let Some(why) = self.durable.take_failure_announcement() {
            self.fail_stop(&why);
        }
        let released = self.durable.released_lsn();
        // Only ports that got replies are woken (waking the network gateway for every
        // shared-memory reply cost it a wake-up per call).
        let mut published = std::mem::take(&mut self.published);
        published.clear();
        for (index, port) in self.ports.iter_mut().enumerate() {
            if port.publish(released) {
                published.push(index);
            }
        }
        if !published.is_empty() {
            // Pairs with the client's fence between announcing sleep and re-checking rings.
            fence(Ordering::SeqCst);
            for &index in &published {
                self.ports[index].wake_if_waiting();
            }
        }
        self.published = published;
        work
    }

    /// Reply to replicated writes that every partition has run, in arrival order; a
    /// reply that does not fit the client's ring waits for the next turn.
    fn answer_finished_broadcasts(&mut self) -> usize {
        let mut answered = 0;
        while let Some(first) = self.pending.first() {
            let Some((status, reply)) = first.job.outcome() else {
                break;
            };
            let (client_id, request) = (first.client_id, first.request);
            if !self.reply_to(client_id, &request, status, &reply) {
                break;
            }
            self.pending.remove(0);
            answered += 1;
        }
        answered
    }

    /// Announce sleep on every ring, re-check, and block on the doorbell.
    fn sleep(&mut self) {
        for port in &self.ports {
            port.requests
                .ring()
                .consumer_sleeping()
                .store(1, Ordering::Relaxed);
        }
        // Pairs with the producer's fence between publishing and reading the flag.
        fence(Ordering::SeqCst);
        let mut ready = self.inbox().has_pending();
        for port in &mut self.ports {
            ready |= port.requests.has_frames().unwrap_or(true);
        }
        if !ready {
            let timeout = self
                .next_deadline()
                .map(|d| d.saturating_duration_since(Instant::now()));
            self.inbox().doorbell.wait(timeout);
        }
        for port in &self.ports {
            port.requests
                .ring()
                .consumer_sleeping()
                .store(0, Ordering::Relaxed);
        }
    }
}

/// Whether some client has calls queued that the partition can run now: frames in its
/// request ring and room for their replies (a client whose ring is full of replies
/// held for the log's flush does not count: they wait for that very flush). While this
/// holds, a `sync` flush may wait to gather more records ([`Durable::poll`]).
fn calls_waiting(ports: &mut [Port], reply_bytes_max: usize) -> bool {
    ports.iter_mut().any(|port| {
        port.requests.has_frames().unwrap_or(false)
            && port.has_room_for_reply(reply_bytes_max).unwrap_or(false)
    })
}
