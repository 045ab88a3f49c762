//! Workload `sched`: the scheduler of paper §4.2 (figure 5). Tasks are scheduled but
//! not run, so the numbers are the scheduling overhead itself.
//!
//! Set-up: `workers` workers spread over the partitions (`worker_id % partitions`),
//! each with `capacity` runnable tasks. Every task is completed (`complete_task`) in
//! the same pipelined stream right after its placement reply arrives, so capacity is
//! recycled and the number of placed-but-not-completed tasks never exceeds what is in
//! flight on the rings (at most a ring's worth, far below `workers * capacity`).
//!
//! Measured, per policy (`schedule_fifo`, `schedule_least_loaded`,
//! `schedule_locality`):
//! - `sched-<policy>-closed`: `depth` tasks kept in flight for a while; tasks/s
//!   (schedule and complete both done) and the latency from submitting the scheduling
//!   call to its placement reply;
//! - `sched-<policy>-open`: Poisson arrivals at each offered load. The client submits
//!   every task at its scheduled arrival time without waiting for earlier replies, and
//!   times each task from its *scheduled* arrival to its placement reply, so a stalled
//!   server (or client) shows up as latency instead of silently lowering the offered
//!   load (no coordinated omission). Achieved tasks/s is tasks over the time until the
//!   last placement reply. A client running behind submits at most `BURST_MAX` due
//!   tasks before it handles replies again, so completions keep flowing. The params
//!   say how late the client submitted (`send_lag_p99_us`) and how long its loop was
//!   stalled (`client_stalled_ms`, `client_stall_max_us`: descheduled or blocked on a
//!   full ring), to tell a slow client or a noisy machine from a slow server;
//! - `sched-<policy>-peak`: the highest offered load whose p99 stayed under the bound
//!   (1 ms), when one did; absent otherwise.
//!
//! After each phase every worker must have all its capacity back: a lost completion
//! or a leaked task fails the run.
//!
//! PostgreSQL (the paper's VoltDB; [`crate::baseline::postgres`]), after tabosd has
//! stopped, with the same workers and capacity: figure 2's FIFO as the PL/pgSQL
//! function `schedule_fifo`, each task then finished with `complete_task`, both
//! prepared statements. The client is synchronous, so K connections (one client
//! thread each, all on the client core) keep K tasks in flight:
//! - `sched-fifo-closed` / `postgres` and `postgres-sync`: each connection schedules
//!   and completes tasks back to back, for each connection count, with
//!   `synchronous_commit` off and on;
//! - `sched-fifo-open` / `postgres`: Poisson arrivals at each PostgreSQL offered load
//!   (far below tabos's), one queue served by K connections: a free connection takes
//!   the next arrival at its scheduled time, and each task is timed from that time to
//!   its placement reply. The sweep stops after the first load whose last placement
//!   came more than a tenth of the window late (PostgreSQL fell behind);
//! - `sched-fifo-peak` / `postgres`: as for tabos.

use crate::baseline::postgres::{self as pg, Commit, PgSched, PgServer};
use crate::measure::{self, Latencies};
use crate::report::{self, params, Record};
use crate::server::{Layout, Target};
use crate::{Error, Settings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tabos_client::{Client, Completed, Completion, Placement, Policy, Status};
use tabos_procs::sched::api::{complete_args, schedule_args};
use tabos_procs::sched::ids;

/// System name of tabos over shared memory.
pub const SYSTEM: &str = crate::invoke::SYSTEM_TABOS_SHM;
/// How long an open-loop run may take to drain its backlog after the last arrival.
const DRAIN_MAX: Duration = Duration::from_secs(60);
/// Seed of the arrival process and the partition choice (runs are repeatable).
const SEED: u64 = 0x5eed_5c4e_d000_0001;
/// Most due arrivals the open loop submits before it handles replies again, so that
/// a client running behind keeps completing tasks (and recycling capacity).
const BURST_MAX: usize = 256;
/// A turn of the open loop longer than this counts as a client stall (the thread was
/// descheduled, or a full ring blocked it).
const STALL_NS: u64 = 50_000;
/// A PostgreSQL client thread waiting for an arrival sleeps until this long before
/// it, then spins (a sleep overshoots by about the 50 µs timer slack).
const PG_SPIN_NS: u64 = 60_000;
/// PostgreSQL fell behind an offered load when its last placement came this fraction
/// of the arrival window after the window's end.
const PG_BEHIND_FRACTION: f64 = 0.1;

/// How much of each phase to run.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedConfig {
    /// Partitions of a started tabosd (the first on the server core).
    pub partitions: u32,
    /// Workers registered, over all partitions.
    pub workers: u64,
    /// Runnable tasks per worker.
    pub capacity: u32,
    /// Tasks kept in flight in the closed-loop phase.
    pub depth: usize,
    /// Policies measured closed-loop.
    pub closed_policies: Vec<Policy>,
    /// Timed duration of each closed-loop run (after an untimed fifth of it).
    pub closed_time: Duration,
    /// Policies measured open-loop.
    pub open_policies: Vec<Policy>,
    /// Offered loads of the open-loop phase, tasks per second, ascending.
    pub loads: Vec<f64>,
    /// Arrivals of each offered load last this long.
    pub open_time: Duration,
    /// The p99 a load must stay under to count as sustained, microseconds.
    pub p99_bound_us: f64,
    /// The PostgreSQL baseline (FIFO); `None`: not measured.
    pub postgres: Option<PgSchedConfig>,
}

/// What the PostgreSQL baseline of the scheduler runs (closed- and open-loop times
/// are those of tabos).
#[derive(Debug, Clone, PartialEq)]
pub struct PgSchedConfig {
    /// Connection counts of the closed-loop runs (one client thread and one task in
    /// flight each), ascending; the largest also serves the open-loop arrivals.
    pub connections: Vec<usize>,
    /// Offered loads of the open-loop phase, tasks per second, ascending.
    pub loads: Vec<f64>,
}

impl PgSchedConfig {
    /// The configuration for reports.
    pub fn full() -> PgSchedConfig {
        PgSchedConfig {
            connections: vec![1, 4],
            loads: vec![
                1_000.0, 2_000.0, 3_000.0, 4_000.0, 5_000.0, 6_000.0, 7_500.0, 10_000.0, 15_000.0,
                20_000.0, 30_000.0, 50_000.0,
            ],
        }
    }

    /// The smoke-test configuration.
    pub fn quick() -> PgSchedConfig {
        PgSchedConfig {
            connections: vec![1, 2],
            loads: vec![1_000.0, 5_000.0],
        }
    }

    /// Connections serving the open-loop arrivals.
    pub fn open_connections(&self) -> usize {
        self.connections.iter().copied().max().unwrap_or(1)
    }
}

impl SchedConfig {
    /// The configuration for reports: about a minute and a half.
    pub fn full() -> SchedConfig {
        SchedConfig {
            partitions: 1,
            workers: 8000,
            capacity: 64,
            depth: 64,
            closed_policies: Policy::ALL.to_vec(),
            closed_time: Duration::from_secs(5),
            open_policies: Policy::ALL.to_vec(),
            loads: vec![
                100_000.0,
                200_000.0,
                500_000.0,
                1_000_000.0,
                1_500_000.0,
                2_000_000.0,
                2_500_000.0,
                3_000_000.0,
            ],
            open_time: Duration::from_secs(3),
            p99_bound_us: 1000.0,
            postgres: Some(PgSchedConfig::full()),
        }
    }

    /// The smoke-test configuration: a few seconds, even in a debug build.
    pub fn quick() -> SchedConfig {
        SchedConfig {
            closed_time: Duration::from_millis(300),
            open_policies: vec![Policy::Fifo],
            loads: vec![50_000.0, 200_000.0],
            open_time: Duration::from_millis(300),
            postgres: Some(PgSchedConfig::quick()),
            ..SchedConfig::full()
        }
    }
}

/// Run every phase against the tabosd `settings` name (started here with
/// `config.partitions` unless `--connect`), and stop that tabosd again; then the
/// PostgreSQL baseline, if configured.
pub fn run(settings: &Settings, config: &SchedConfig) -> Result<Vec<Record>, Error> {
    assert!(config.workers > 0, "workers must be positive");
    assert!(config.capacity > 0, "capacity must be positive");
    assert!(config.depth > 0, "depth must be positive");
    assert!(
        config.loads.iter().all(|l| *l > 0.0),
        "loads must be positive"
    );
    measure::pin_or_warn(settings.client_core, "the client thread");
    let target = Target::acquire_with(settings, &Layout::spread(settings, config.partitions))?;
    let mut records = Vec::new();
    {
        // Closed before the server is stopped.
        let mut client = target.connect()?;
        let workers = Workers::register(&mut client, config)?;
        for &policy in &config.closed_policies {
            records.push(closed(&mut client, config, &workers, policy)?);
        }
        for &policy in &config.open_policies {
            let mut sweep = Vec::new();
            for &load in &config.loads {
                sweep.push(open(&mut client, config, &workers, policy, load)?);
            }
            let peak = peak(&sweep, policy, config.p99_bound_us);
            records.extend(sweep);
            records.extend(peak);
        }
        workers.remove(&mut client)?;
    }
    target.finish()?;
    if let Some(pg_config) = &config.postgres {
        // After tabosd stopped: the server core is PostgreSQL's alone.
        records.extend(postgres_fifo(settings, config, pg_config)?);
    }
    Ok(records)
}

/// The workload name of `policy` in `phase`: `sched-least-loaded-open`.
pub fn workload(policy: Policy, phase: &str) -> String {
    format!("sched-{}-{phase}", policy.name())
}

/// The workers this run registered.
#[derive(Debug)]
struct Workers {
    first_id: u64,
    count: u64,
    capacity: u32,
    partitions: u32,
}

impl Workers {
    /// Register `config.workers` workers with fresh ids, `worker_id % partitions`.
    fn register(client: &mut Client, config: &SchedConfig) -> Result<Workers, Error> {
        let partitions = client.partition_count();
        // Fresh ids, so a --connect server that has workers already takes ours too.
        let first_id = Client::sched_task_id() >> 16;
        eprintln!(
            "[sched] registering {} workers of capacity {} on {partitions} partition(s)",
            config.workers, config.capacity
        );
        for id in first_id..first_id + config.workers {
            let partition = client.worker_partition(id);
            let taken = client
                .worker_add(partition, id, config.capacity)
                .map_err(|e| Error::call(format!("worker_add({id})"), e))?;
            if taken != 0 {
                return Err(Error::call(
                    "worker_add",
                    format!("took over {taken} queued tasks of an earlier run"),
                ));
            }
        }
        Ok(Workers {
            first_id,
            count: config.workers,
            capacity: config.capacity,
            partitions,
        })
    }

    /// Fail unless every worker of this run has all its capacity back (no task of the
    /// run is left assigned).
    fn check_idle(&self, client: &mut Client, phase: &str) -> Result<(), Error> {
        let ours = self.first_id..self.first_id + self.count;
        let mut seen = 0u64;
        for partition in 0..self.partitions {
            let listing = client
                .sched_list(partition)
                .map_err(|e| Error::call("listing workers", e))?;
            for w in listing
                .workers
                .iter()
                .filter(|w| ours.contains(&w.worker_id))
            {
                seen += 1;
                if w.unused_capacity != w.capacity || w.capacity != self.capacity {
                    return Err(Error::call(
                        format!("after {phase}"),
                        format!(
                            "worker {} has {} of {} capacity unused: a task was not completed",
                            w.worker_id, w.unused_capacity, w.capacity
                        ),
                    ));
                }
            }
        }
        if seen != self.count {
            return Err(Error::call(
                format!("after {phase}"),
                format!("{seen} of {} workers are registered", self.count),
            ));
        }
        Ok(())
    }

    /// Unregister every worker (all idle), leaving a `--connect` server as it was.
    fn remove(self, client: &mut Client) -> Result<(), Error> {
        for id in self.first_id..self.first_id + self.count {
            let partition = client.worker_partition(id);
            client
                .worker_remove(partition, id)
                .map_err(|e| Error::call(format!("worker_remove({id})"), e))?;
        }
        Ok(())
    }
}

/// A call of the stream that has not replied yet.
#[derive(Debug, Clone, Copy)]
enum Pending {
    /// A scheduling call for a task that arrived (or was submitted) at `start_ns`.
    Schedule {
        request_id: u64,
        task_id: u64,
        start_ns: u64,
    },
    /// The `complete_task` of a placed task.
    Complete { request_id: u64 },
}

/// Tasks flowing through one client: each is scheduled, and completed as soon as its
/// placement reply arrives, all pipelined. Replies of one partition come in request
/// order, so each partition's outstanding calls are a FIFO queue.
struct TaskStream<'c> {
    client: &'c mut Client,
    policy: Policy,
    partitions: u32,
    rng: StdRng,
    pending: Vec<VecDeque<Pending>>,
    done: Vec<Completion>,
    /// Tasks scheduled and not yet completed.
    tasks_in_flight: usize,
    /// Tasks a locality call queued instead of assigning.
    queued: u64,
    /// Time (since the stream's base) of the last placement reply seen.
    last_placement_ns: u64,
    /// The client clock passed to the procedures, read once per turn by `tick`.
    clock_ns: u64,
}

impl<'c> TaskStream<'c> {
    fn new(client: &'c mut Client, policy: Policy) -> TaskStream<'c> {
        assert_eq!(client.in_flight(), 0, "a stream starts on an idle client");
        let partitions = client.partition_count();
        TaskStream {
            client,
            policy,
            partitions,
            rng: StdRng::seed_from_u64(SEED ^ policy as u64),
            pending: (0..partitions).map(|_| VecDeque::new()).collect(),
            done: Vec::new(),
            tasks_in_flight: 0,
            queued: 0,
            last_placement_ns: 0,
            clock_ns: Client::sched_clock_ns(),
        }
    }

    /// Read the client clock the next calls pass on (once per turn, not per call:
    /// the procedures use it only to order queued tasks).
    fn tick(&mut self) {
        self.clock_ns = Client::sched_clock_ns();
    }

    /// Submit (not yet flush) the scheduling call of a new task started at `start_ns`,
    /// to a random partition (the paper's `P`; the home partition `HP` for locality).
    fn schedule(&mut self, start_ns: u64) -> Result<(), Error> {
        let partition = if self.partitions == 1 {
            0
        } else {
            self.rng.gen_range(0..self.partitions)
        };
        let task_id = Client::sched_task_id();
        let args = schedule_args(task_id, self.clock_ns);
        let request_id = self
            .client
            .submit(self.policy.proc_id(), partition, &args)
            .map_err(|e| Error::call("submitting a scheduling call", e))?;
        self.pending[partition as usize].push_back(Pending::Schedule {
            request_id,
            task_id,
            start_ns,
        });
        self.tasks_in_flight += 1;
        Ok(())
    }

    /// Collect finished calls without waiting (this also publishes submitted ones).
    fn poll(&mut self) -> Result<usize, Error> {
        self.done.clear();
        self.client
            .poll(&mut self.done)
            .map_err(|e| Error::call("polling the scheduler stream", e))
    }

    /// Wait for at least one finished call.
    fn wait(&mut self) -> Result<usize, Error> {
        self.done.clear();
        self.client
            .wait(&mut self.done, 1)
            .map_err(|e| Error::call("waiting for the scheduler stream", e))
    }

    /// Handle the calls the last poll or wait collected, seen at `seen_ns`: a
    /// placement records the task's latency and submits its `complete_task`; a
    /// completion finishes the task. Returns tasks finished.
    fn handle(&mut self, seen_ns: u64, mut lat: Option<&mut Latencies>) -> Result<usize, Error> {
        let done = std::mem::take(&mut self.done);
        let mut finished = 0;
        for c in &done {
            let queue = &mut self.pending[c.partition as usize];
            let Some(front) = queue.pop_front() else {
                return Err(Error::call(
                    "scheduler stream",
                    format!(
                        "reply {} from partition {} to no call",
                        c.request_id, c.partition
                    ),
                ));
            };
            match front {
                Pending::Schedule {
                    request_id,
                    task_id,
                    start_ns,
                } => {
                    check_order(c, request_id)?;
                    self.placed(c)?;
                    if let Some(lat) = lat.as_deref_mut() {
                        lat.record_ns(seen_ns.saturating_sub(start_ns));
                    }
                    self.last_placement_ns = seen_ns;
                    let args = complete_args(task_id, self.clock_ns);
                    let complete_id = self
                        .client
                        .submit(ids::COMPLETE_TASK, c.partition, &args)
                        .map_err(|e| Error::call("submitting complete_task", e))?;
                    self.pending[c.partition as usize].push_back(Pending::Complete {
                        request_id: complete_id,
                    });
                }
                Pending::Complete { request_id } => {
                    check_order(c, request_id)?;
                    completed(c)?;
                    self.tasks_in_flight -= 1;
                    finished += 1;
                }
            }
        }
        self.done = done;
        Ok(finished)
    }

    /// Check a placement reply.
    fn placed(&mut self, c: &Completion) -> Result<(), Error> {
        let doing = || format!("schedule_{}", self.policy.name().replace('-', "_"));
        if c.status_code == Status::NoCapacity as u32 {
            return Err(Error::call(
                doing(),
                format!(
                    "no worker with capacity on partition {}: raise --capacity or --workers",
                    c.partition
                ),
            ));
        }
        let reply = c
            .clone()
            .into_result()
            .map_err(|e| Error::call(doing(), e))?;
        match Placement::decode(&reply).map_err(|e| Error::call(doing(), e))? {
            Placement::Assigned { .. } => {}
            Placement::Queued if self.policy == Policy::Locality => self.queued += 1,
            Placement::Queued => {
                return Err(Error::call(doing(), "queued a task (only locality may)"));
            }
        }
        Ok(())
    }
}

fn check_order(c: &Completion, expected: u64) -> Result<(), Error> {
    if c.request_id != expected {
        return Err(Error::call(
            "scheduler stream",
            format!(
                "reply {} from partition {} arrived, expected {expected} (a partition replies in order)",
                c.request_id, c.partition
            ),
        ));
    }
    Ok(())
}

/// Check a `complete_task` reply.
fn completed(c: &Completion) -> Result<(), Error> {
    let reply = c
        .clone()
        .into_result()
        .map_err(|e| Error::call("complete_task", e))?;
    Completed::decode(&reply).map_err(|e| Error::call("complete_task", e))?;
    Ok(())
}

fn nanos_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Keep `depth` tasks in flight for `run_for`, then let the last ones finish.
/// Returns tasks finished (scheduled and completed).
fn run_closed(
    stream: &mut TaskStream<'_>,
    depth: usize,
    run_for: Duration,
    mut lat: Option<&mut Latencies>,
) -> Result<u64, Error> {
    let base = Instant::now();
    let deadline_ns = u64::try_from(run_for.as_nanos()).unwrap_or(u64::MAX);
    stream.tick();
    for _ in 0..depth {
        stream.schedule(0)?;
    }
    let mut finished = 0u64;
    while stream.tasks_in_flight > 0 {
        stream.wait()?;
        let seen_ns = nanos_since(base);
        stream.tick();
        let now_finished = stream.handle(seen_ns, lat.as_deref_mut())?;
        finished += now_finished as u64;
        if seen_ns < deadline_ns {
            for _ in 0..now_finished {
                stream.schedule(seen_ns)?;
            }
        }
    }
    assert_eq!(stream.client.in_flight(), 0, "every call finished on exit");
    Ok(finished)
}

/// Closed loop: `config.depth` tasks in flight.
fn closed(
    client: &mut Client,
    config: &SchedConfig,
    workers: &Workers,
    policy: Policy,
) -> Result<Record, Error> {
    let name = workload(policy, "closed");
    eprintln!(
        "[{name}] depth {}: {:.1} s",
        config.depth,
        config.closed_time.as_secs_f64()
    );
    let mut stream = TaskStream::new(client, policy);
    run_closed(
        &mut stream,
        config.depth,
        config.closed_time.mul_f64(0.2),
        None,
    )?;
    let mut lat = Latencies::new();
    let started = Instant::now();
    let tasks = run_closed(
        &mut stream,
        config.depth,
        config.closed_time,
        Some(&mut lat),
    )?;
    let elapsed = started.elapsed();
    let queued = stream.queued;
    workers.check_idle(client, &name)?;
    let record = Record::from_latencies(
        &name,
        SYSTEM,
        params([
            ("policy", policy.name().into()),
            ("partitions", workers.partitions.into()),
            ("workers", workers.count.into()),
            ("capacity_per_worker", workers.capacity.into()),
            ("depth", config.depth.into()),
            ("seconds", config.closed_time.as_secs_f64().into()),
            ("tasks", tasks.into()),
            ("queued", queued.into()),
            ("completion", COMPLETION.into()),
            ("ops", "tasks scheduled and completed".into()),
            ("latency", "submit to placement reply".into()),
        ]),
        &lat,
        Some(tasks as f64 / elapsed.as_secs_f64()),
    );
    report::progress(&record);
    Ok(record)
}

/// How tasks finish, for the records' params.
const COMPLETION: &str = "complete_task pipelined right after each placement reply";

/// What one open-loop run did.
#[derive(Debug)]
struct OpenOutcome {
    tasks: u64,
    /// Until the last placement reply, or the arrival window if longer.
    span: Duration,
    /// How late the client submitted tasks after their scheduled arrival.
    send_lag: Latencies,
    /// Time the client's loop stalled (turns longer than `STALL_NS`), and the longest.
    stalled: Duration,
    stall_max: Duration,
}

/// Poisson arrivals at `rate` tasks/s for `run_for`; each task timed from its
/// scheduled arrival to its placement reply.
fn run_open(
    stream: &mut TaskStream<'_>,
    rate: f64,
    run_for: Duration,
    mut lat: Option<&mut Latencies>,
) -> Result<OpenOutcome, Error> {
    assert!(rate > 0.0, "the offered load must be positive");
    let mut arrivals = StdRng::seed_from_u64(SEED ^ rate.to_bits());
    let mean_gap_ns = 1e9 / rate;
    // Exponential gaps: -ln(1 - U) * mean, U uniform in [0, 1).
    let mut gap = move || (-(1.0 - arrivals.gen::<f64>()).ln() * mean_gap_ns) as u64;
    let end_ns = u64::try_from(run_for.as_nanos()).unwrap_or(u64::MAX);
    let drain_ns = end_ns + u64::try_from(DRAIN_MAX.as_nanos()).unwrap_or(u64::MAX);
    let mut send_lag = Latencies::new();
    let mut tasks = 0u64;
    stream.last_placement_ns = 0;
    let (mut stalled_ns, mut stall_max_ns) = (0u64, 0u64);
    let base = Instant::now();
    let mut next_ns = gap();
    let mut last_turn_ns = 0u64;
    loop {
        let now_ns = nanos_since(base);
        let turn_ns = now_ns - last_turn_ns;
        if turn_ns > STALL_NS {
            stalled_ns += turn_ns;
            stall_max_ns = stall_max_ns.max(turn_ns);
        }
        last_turn_ns = now_ns;
        let mut burst = 0;
        if next_ns <= now_ns && next_ns < end_ns {
            stream.tick();
        }
        while next_ns <= now_ns && next_ns < end_ns && burst < BURST_MAX {
            stream.schedule(next_ns)?;
            send_lag.record_ns(now_ns - next_ns);
            tasks += 1;
            burst += 1;
            next_ns += gap().max(1);
        }
        if stream.poll()? > 0 {
            let seen_ns = nanos_since(base);
            stream.tick();
            stream.handle(seen_ns, lat.as_deref_mut())?;
        } else if next_ns >= end_ns && stream.tasks_in_flight == 0 {
            break;
        } else if now_ns > drain_ns {
            return Err(Error::call(
                "open-loop scheduling",
                format!(
                    "{} tasks still in flight {} s after the last arrival",
                    stream.tasks_in_flight,
                    DRAIN_MAX.as_secs()
                ),
            ));
        }
    }
    assert_eq!(stream.client.in_flight(), 0, "every call finished on exit");
    Ok(OpenOutcome {
        tasks,
        span: Duration::from_nanos(stream.last_placement_ns.max(end_ns)),
        send_lag,
        stalled: Duration::from_nanos(stalled_ns),
        stall_max: Duration::from_nanos(stall_max_ns),
    })
}

/// Open loop at one offered load.
fn open(
    client: &mut Client,
    config: &SchedConfig,
    workers: &Workers,
    policy: Policy,
    load: f64,
) -> Result<Record, Error> {
    let name = workload(policy, "open");
    eprintln!(
        "[{name}] Poisson arrivals at {load:.0} tasks/s: {:.1} s",
        config.open_time.as_secs_f64()
    );
    let mut stream = TaskStream::new(client, policy);
    // A short untimed run at the same load warms the tables and both threads.
    run_open(&mut stream, load, config.open_time.mul_f64(0.1), None)?;
    let mut lat = Latencies::new();
    let outcome = run_open(&mut stream, load, config.open_time, Some(&mut lat))?;
    let queued = stream.queued;
    workers.check_idle(client, &name)?;
    let achieved = outcome.tasks as f64 / outcome.span.as_secs_f64();
    let record = Record::from_latencies(
        &name,
        SYSTEM,
        params([
            ("policy", policy.name().into()),
            ("partitions", workers.partitions.into()),
            ("workers", workers.count.into()),
            ("capacity_per_worker", workers.capacity.into()),
            ("load_tasks_per_s", load.into()),
            ("arrivals", "poisson".into()),
            ("seconds", config.open_time.as_secs_f64().into()),
            ("tasks", outcome.tasks.into()),
            ("queued", queued.into()),
            ("completion", COMPLETION.into()),
            (
                "ops",
                "achieved tasks/s (to the last placement reply)".into(),
            ),
            ("latency", "scheduled arrival to placement reply".into()),
            (
                "send_lag_p99_us",
                outcome.send_lag.p99_us().map_or(Value::Null, Value::from),
            ),
            (
                "client_stalled_ms",
                (outcome.stalled.as_secs_f64() * 1e3).into(),
            ),
            (
                "client_stall_max_us",
                (outcome.stall_max.as_secs_f64() * 1e6).into(),
            ),
        ]),
        &lat,
        Some(achieved),
    );
    report::progress(&record);
    Ok(record)
}

/// The PostgreSQL rows: FIFO closed-loop for each connection count with
/// `synchronous_commit` off and on, then the open-loop sweep (off) and its peak.
fn postgres_fifo(
    settings: &Settings,
    config: &SchedConfig,
    pg_config: &PgSchedConfig,
) -> Result<Vec<Record>, Error> {
    assert!(
        pg_config.connections.iter().all(|c| *c > 0),
        "connections must be positive"
    );
    let server = PgServer::start(settings.server_core)?;
    let mut admin = PgSched::new(server.connect(Commit::Async)?)?;
    eprintln!(
        "[sched] PostgreSQL: registering {} workers of capacity {} on {} partition key(s)",
        config.workers, config.capacity, config.partitions
    );
    admin.add_workers(config.workers, config.capacity, config.partitions)?;
    let run = PgRun {
        server: &server,
        config,
        core: settings.client_core,
        next_task_id: AtomicI64::new(1),
    };
    let mut records = Vec::new();
    for commit in [Commit::Async, Commit::Sync] {
        for &connections in &pg_config.connections {
            records.push(run.closed(&mut admin, commit, connections)?);
        }
    }
    let mut sweep = Vec::new();
    for &load in &pg_config.loads {
        let (record, behind) = run.open(&mut admin, pg_config.open_connections(), load)?;
        sweep.push(record);
        if behind {
            eprintln!(
                "[{}] PostgreSQL fell behind at {load:.0} tasks/s: higher loads skipped",
                workload(Policy::Fifo, "open")
            );
            break;
        }
    }
    let peak = peak(&sweep, Policy::Fifo, config.p99_bound_us);
    records.extend(sweep);
    records.extend(peak);
    drop(admin);
    server.finish()?;
    Ok(records)
}

/// One PostgreSQL scheduler run's server, configuration and task ids.
struct PgRun<'a> {
    server: &'a PgServer,
    config: &'a SchedConfig,
    /// Core of every client thread.
    core: usize,
    /// Task ids are unique over the whole run (finished tasks leave the table).
    next_task_id: AtomicI64,
}

/// What one PostgreSQL client thread measured.
#[derive(Debug, Default)]
struct PgMeasured {
    /// Placement latencies.
    lat: Latencies,
    /// How late the thread started each task after its scheduled arrival.
    send_lag: Latencies,
    tasks: u64,
    /// Since the run's start: the last placement reply.
    last_placement_ns: u64,
    elapsed: Duration,
}

impl PgMeasured {
    fn merge(parts: &[PgMeasured]) -> PgMeasured {
        let mut all = PgMeasured::default();
        for p in parts {
            all.lat.merge(&p.lat);
            all.send_lag.merge(&p.send_lag);
            all.tasks += p.tasks;
            all.last_placement_ns = all.last_placement_ns.max(p.last_placement_ns);
            all.elapsed = all.elapsed.max(p.elapsed);
        }
        all
    }
}

impl PgRun<'_> {
    fn connect(&self, count: usize, commit: Commit) -> Result<Vec<PgSched>, Error> {
        self.server
            .connect_all(count, commit)?
            .into_iter()
            .map(PgSched::new)
            .collect()
    }

    /// One task on `sched`: schedule it on a random partition key (the paper's `P`),
    /// then complete it. Returns the time from the call to its placement reply.
    fn task(&self, sched: &mut PgSched, rng: &mut StdRng) -> Result<Duration, Error> {
        let task_id = self.next_task_id.fetch_add(1, Ordering::Relaxed);
        let p = rng.gen_range(0..self.config.partitions) as i32;
        let now_ns = Client::sched_clock_ns() as i64;
        let start = Instant::now();
        let placed = sched.schedule_fifo(p, task_id, now_ns)?;
        let latency = start.elapsed();
        let Some(worker_id) = placed else {
            return Err(Error::call(
                "PostgreSQL schedule_fifo",
                format!(
                    "no worker with capacity on partition key {p}: raise --capacity or --workers"
                ),
            ));
        };
        let freed = sched.complete_task(task_id)?;
        if freed != worker_id {
            return Err(Error::call(
                "PostgreSQL complete_task",
                format!("task {task_id} ran on worker {worker_id}, completion freed {freed}"),
            ));
        }
        Ok(latency)
    }

    /// The params of every PostgreSQL scheduler record.
    fn params(&self, commit: Commit, connections: usize) -> Map<String, Value> {
        let mut p = params([
            ("policy", Policy::Fifo.name().into()),
            ("partition_keys", self.config.partitions.into()),
            ("workers", self.config.workers.into()),
            ("capacity_per_worker", self.config.capacity.into()),
            ("connections", connections.into()),
            ("depth", connections.into()),
            (
                "completion",
                "complete_task right after each placement, on the same connection".into(),
            ),
        ]);
        p.extend(self.server.params(commit));
        p
    }

    /// Closed loop: `connections` threads each scheduling and completing tasks back
    /// to back.
    fn closed(
        &self,
        admin: &mut PgSched,
        commit: Commit,
        connections: usize,
    ) -> Result<Record, Error> {
        let name = workload(Policy::Fifo, "closed");
        let time = self.config.closed_time;
        eprintln!(
            "[{name}] PostgreSQL (synchronous_commit={}), {connections} connection(s): {:.1} s",
            commit.setting(),
            time.as_secs_f64()
        );
        let mut conns = self.connect(connections, commit)?;
        let measured = measure::gang(
            &mut conns,
            |_| self.core,
            |i, sched, barrier| {
                let mut rng = StdRng::seed_from_u64(SEED ^ i as u64);
                barrier.wait();
                let warm_up_until = Instant::now() + time.mul_f64(0.2);
                while Instant::now() < warm_up_until {
                    self.task(sched, &mut rng)?;
                }
                let mut m = PgMeasured::default();
                let started = Instant::now();
                while started.elapsed() < time {
                    m.lat.record(self.task(sched, &mut rng)?);
                    m.tasks += 1;
                }
                m.elapsed = started.elapsed();
                Ok(m)
            },
        )?;
        drop(conns);
        admin.check_idle(self.config.workers, &name)?;
        let m = PgMeasured::merge(&measured);
        let mut params = self.params(commit, connections);
        params.extend(report::params([
            ("seconds", time.as_secs_f64().into()),
            ("tasks", m.tasks.into()),
            ("ops", "tasks scheduled and completed".into()),
            ("latency", "schedule_fifo call to placement reply".into()),
        ]));
        let record = Record::from_latencies(
            &name,
            commit.system(),
            params,
            &m.lat,
            Some(m.tasks as f64 / m.elapsed.as_secs_f64()),
        );
        report::progress(&record);
        Ok(record)
    }

    /// Open loop at `load` tasks/s served by `connections` threads (an untimed tenth
    /// first). Returns the record and whether PostgreSQL fell behind.
    fn open(
        &self,
        admin: &mut PgSched,
        connections: usize,
        load: f64,
    ) -> Result<(Record, bool), Error> {
        let name = workload(Policy::Fifo, "open");
        let time = self.config.open_time;
        eprintln!(
            "[{name}] PostgreSQL, Poisson arrivals at {load:.0} tasks/s, {connections} \
             connection(s): {:.1} s",
            time.as_secs_f64()
        );
        let mut conns = self.connect(connections, Commit::Async)?;
        self.run_open(&mut conns, load, time.mul_f64(0.1))?;
        let m = self.run_open(&mut conns, load, time)?;
        drop(conns);
        admin.check_idle(self.config.workers, &name)?;
        let span = Duration::from_nanos(m.last_placement_ns).max(time);
        let behind = span > time.mul_f64(1.0 + PG_BEHIND_FRACTION);
        let mut params = self.params(Commit::Async, connections);
        params.extend(report::params([
            ("load_tasks_per_s", load.into()),
            ("arrivals", "poisson".into()),
            (
                "dispatch",
                "one queue: a free connection takes the next arrival".into(),
            ),
            ("seconds", time.as_secs_f64().into()),
            ("tasks", m.tasks.into()),
            (
                "ops",
                "achieved tasks/s (to the last placement reply)".into(),
            ),
            ("latency", "scheduled arrival to placement reply".into()),
            (
                "send_lag_p99_us",
                m.send_lag.p99_us().map_or(Value::Null, Value::from),
            ),
            ("fell_behind", behind.into()),
        ]));
        let record = Record::from_latencies(
            &name,
            pg::SYSTEM,
            params,
            &m.lat,
            Some(m.tasks as f64 / span.as_secs_f64()),
        );
        report::progress(&record);
        Ok((record, behind))
    }

    /// Poisson arrivals at `rate` for `run_for`, one shared queue: each thread takes
    /// the next arrival, waits for its time, and runs the task.
    fn run_open(
        &self,
        conns: &mut [PgSched],
        rate: f64,
        run_for: Duration,
    ) -> Result<PgMeasured, Error> {
        assert!(rate > 0.0, "the offered load must be positive");
        let arrivals = poisson_arrivals(rate, run_for);
        let drain_ns = u64::try_from((run_for + DRAIN_MAX).as_nanos()).unwrap_or(u64::MAX);
        let next = AtomicUsize::new(0);
        let base = OnceLock::new();
        let measured = measure::gang(
            conns,
            |_| self.core,
            |i, sched, barrier| {
                let mut rng = StdRng::seed_from_u64(SEED ^ rate.to_bits() ^ i as u64);
                barrier.wait();
                let base = *base.get_or_init(Instant::now);
                let mut m = PgMeasured::default();
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&due_ns) = arrivals.get(k) else {
                        break;
                    };
                    wait_until(base, due_ns);
                    let start_ns = nanos_since(base);
                    if start_ns > drain_ns {
                        return Err(Error::call(
                            "PostgreSQL open-loop scheduling",
                            format!(
                                "{} arrivals still waiting {} s after the last one",
                                arrivals.len() - k,
                                DRAIN_MAX.as_secs()
                            ),
                        ));
                    }
                    m.send_lag.record_ns(start_ns - due_ns);
                    let placement = self.task(sched, &mut rng)?;
                    let placed_ns = start_ns + u64::try_from(placement.as_nanos()).unwrap_or(0);
                    m.lat.record_ns(placed_ns - due_ns);
                    m.last_placement_ns = m.last_placement_ns.max(placed_ns);
                    m.tasks += 1;
                }
                Ok(m)
            },
        )?;
        let m = PgMeasured::merge(&measured);
        assert_eq!(m.tasks, arrivals.len() as u64, "every arrival ran");
        Ok(m)
    }
}

/// Arrival times (ns from the start) of a Poisson process at `rate` per second over
/// `run_for`, seeded by the rate (runs are repeatable).
fn poisson_arrivals(rate: f64, run_for: Duration) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(SEED ^ rate.to_bits());
    let mean_gap_ns = 1e9 / rate;
    let end_ns = u64::try_from(run_for.as_nanos()).unwrap_or(u64::MAX);
    let mut arrivals = Vec::with_capacity((rate * run_for.as_secs_f64() * 1.1) as usize + 16);
    // Exponential gaps: -ln(1 - U) * mean, U uniform in [0, 1).
    let mut t_ns = 0u64;
    loop {
        t_ns += ((-(1.0 - rng.gen::<f64>()).ln() * mean_gap_ns) as u64).max(1);
        if t_ns >= end_ns {
            return arrivals;
        }
        arrivals.push(t_ns);
    }
}

/// Wait until `due_ns` after `base`: sleep until `PG_SPIN_NS` before it, spin the
/// rest.
fn wait_until(base: Instant, due_ns: u64) {
    loop {
        let now_ns = nanos_since(base);
        if now_ns >= due_ns {
            return;
        }
        let left_ns = due_ns - now_ns;
        if left_ns > PG_SPIN_NS {
            std::thread::sleep(Duration::from_nanos(left_ns - PG_SPIN_NS));
        } else {
            std::hint::spin_loop();
        }
    }
}

/// The highest offered load of `sweep` whose p99 stayed under `bound_us`, as a
/// `sched-<policy>-peak` record; `None` when no load did.
fn peak(sweep: &[Record], policy: Policy, bound_us: f64) -> Option<Record> {
    let best = sweep
        .iter()
        .filter(|r| r.p99_us.is_some_and(|p99| p99 < bound_us))
        .max_by(|a, b| load_of(a).total_cmp(&load_of(b)))?;
    let mut record = best.clone();
    record.workload = workload(policy, "peak");
    record.params.insert(
        "criterion".into(),
        format!("highest offered load with p99 < {bound_us} µs").into(),
    );
    Some(record)
}

fn load_of(record: &Record) -> f64 {
    record.params["load_tasks_per_s"].as_f64().unwrap_or(0.0)
}

/// Summary lines: each system's peak sustained rate per policy, and tabos against
/// PostgreSQL (FIFO closed-loop throughput, peak sustained rate) where both ran.
pub fn summary(records: &[Record]) -> Vec<String> {
    let mut systems: Vec<&str> = Vec::new();
    for r in records {
        if !systems.contains(&r.system.as_str()) {
            systems.push(&r.system);
        }
    }
    let mut lines = Vec::new();
    for system in systems {
        let of = |policy: Policy, phase: &str| {
            let name = workload(policy, phase);
            records
                .iter()
                .filter(move |r| r.system == system && r.workload == name)
        };
        for policy in Policy::ALL {
            let open = of(policy, "open").count();
            if open == 0 {
                continue;
            }
            lines.push(match of(policy, "peak").next() {
                Some(r) => format!(
                    "{system} {}: peak sustained {:.0} tasks/s (offered {:.0}) with p50 {:.1} µs, p99 {:.1} µs",
                    policy.name(),
                    r.ops_per_s.unwrap_or(0.0),
                    load_of(r),
                    r.p50_us.unwrap_or(0.0),
                    r.p99_us.unwrap_or(0.0)
                ),
                None => format!(
                    "{system} {}: no offered load kept p99 under the bound ({open} loads tried)",
                    policy.name()
                ),
            });
        }
    }
    lines.extend(postgres_ratios(records));
    lines
}

/// tabos over PostgreSQL (`synchronous_commit=off`) for FIFO: closed-loop tasks/s
/// (PostgreSQL's best connection count) and peak sustained tasks/s.
fn postgres_ratios(records: &[Record]) -> Vec<String> {
    let best = |system: &str, phase: &str| {
        let name = workload(Policy::Fifo, phase);
        records
            .iter()
            .filter(|r| r.system == system && r.workload == name)
            .max_by(|a, b| {
                let ops = |r: &Record| r.ops_per_s.unwrap_or(0.0);
                ops(a).total_cmp(&ops(b))
            })
    };
    let mut lines = Vec::new();
    for (phase, what) in [("closed", "closed-loop"), ("peak", "peak sustained")] {
        let (Some(t), Some(p)) = (best(SYSTEM, phase), best(pg::SYSTEM, phase)) else {
            continue;
        };
        let (Some(t_ops), Some(p_ops)) = (t.ops_per_s, p.ops_per_s) else {
            continue;
        };
        let how = |r: &Record| match phase {
            "closed" => format!(
                "{} in flight",
                r.params.get("depth").unwrap_or(&Value::Null)
            ),
            _ => format!("offered {:.0}", load_of(r)),
        };
        lines.push(format!(
            "fifo {what}: tabos / PostgreSQL tasks/s = {:.1} ({t_ops:.0} vs {p_ops:.0}; {} vs {}; p50 {:.1} vs {:.1} µs)",
            t_ops / p_ops,
            how(t),
            how(p),
            t.p50_us.unwrap_or(0.0),
            p.p50_us.unwrap_or(0.0)
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_record(load: f64, p99: f64) -> Record {
        Record {
            workload: workload(Policy::Fifo, "open"),
            system: SYSTEM.into(),
            params: params([("load_tasks_per_s", load.into())]),
            p50_us: Some(p99 / 2.0),
            p99_us: Some(p99),
            p999_us: None,
            ops_per_s: Some(load),
        }
    }

    #[test]
    fn peak_is_the_highest_load_under_the_bound() {
        let sweep = [
            open_record(1e5, 50.0),
            open_record(1e6, 900.0),
            open_record(2e6, 5000.0),
        ];
        let peak = peak(&sweep, Policy::Fifo, 1000.0).expect("a load met the bound");
        assert_eq!(peak.workload, "sched-fifo-peak");
        assert_eq!(load_of(&peak), 1e6);
        assert!(peak.params.contains_key("criterion"));
        assert!(super::peak(&sweep[2..], Policy::Fifo, 1000.0).is_none());
        let lines = summary(&[sweep[0].clone(), peak]);
        assert_eq!(lines.len(), 1);
        assert!(lines[0].contains("peak sustained 1000000"), "{}", lines[0]);
    }

    #[test]
    fn summary_compares_tabos_with_postgres() {
        let mut tabos = open_record(1e6, 500.0);
        tabos.workload = workload(Policy::Fifo, "closed");
        tabos.params.insert("depth".into(), 64.into());
        let mut pg_closed = tabos.clone();
        pg_closed.system = pg::SYSTEM.into();
        pg_closed.params.insert("depth".into(), 4.into());
        pg_closed.ops_per_s = Some(1e4);
        let mut pg_slower = pg_closed.clone();
        pg_slower.ops_per_s = Some(5e3);
        let mut pg_open = open_record(5e3, 900.0);
        pg_open.system = pg::SYSTEM.into();
        let pg_peak =
            peak(std::slice::from_ref(&pg_open), Policy::Fifo, 1000.0).expect("under the bound");
        assert_eq!(pg_peak.system, pg::SYSTEM);
        let tabos_open = open_record(1e6, 50.0);
        let tabos_peak =
            peak(std::slice::from_ref(&tabos_open), Policy::Fifo, 1000.0).expect("under");
        let lines = summary(&[
            tabos, tabos_open, tabos_peak, pg_slower, pg_closed, pg_open, pg_peak,
        ]);
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(lines[0].starts_with("tabos-shm fifo: peak sustained 1000000"));
        assert!(lines[1].starts_with("postgres fifo: peak sustained 5000"));
        assert!(
            lines[2].contains("= 100.0"),
            "best connection count: {}",
            lines[2]
        );
        assert!(
            lines[2].contains("64 in flight vs 4 in flight"),
            "{}",
            lines[2]
        );
        assert!(lines[3].contains("= 200.0"), "{}", lines[3]);
    }

    #[test]
    fn poisson_arrivals_ascend_at_about_the_rate() {
        let arrivals = poisson_arrivals(10_000.0, Duration::from_secs(1));
        assert!(
            arrivals.windows(2).all(|w| w[0] < w[1]),
            "strictly ascending"
        );
        assert!(arrivals.last().is_some_and(|t| *t < 1_000_000_000));
        assert!(
            (9_500..=10_500).contains(&arrivals.len()),
            "{}",
            arrivals.len()
        );
        assert_eq!(arrivals, poisson_arrivals(10_000.0, Duration::from_secs(1)));
    }

    #[test]
    fn quick_is_smaller_than_full() {
        let (q, f) = (SchedConfig::quick(), SchedConfig::full());
        let (pq, pf) = (q.postgres.clone().unwrap(), f.postgres.clone().unwrap());
        assert!(pq.loads.len() < pf.loads.len());
        assert!(pf.loads.windows(2).all(|w| w[0] < w[1]), "loads ascend");
        assert_eq!(pf.open_connections(), 4);
        assert!(q.closed_time < f.closed_time && q.open_time < f.open_time);
        assert_eq!(q.loads.len(), 2);
        assert!(f.loads.windows(2).all(|w| w[0] < w[1]), "loads ascend");
        assert_eq!(
            workload(Policy::LeastLoaded, "closed"),
            "sched-least-loaded-closed"
        );
    }
}
