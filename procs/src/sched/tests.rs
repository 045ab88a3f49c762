//! The scheduler against a plain model: a capacity counter per worker and a `VecDeque`
//! of queued tasks per partition. Random operation sequences must give the same
//! replies and the same tables; the harness checks every table's invariants after
//! each call.

use std::collections::{BTreeMap, HashMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tabos_transport::Status;

use super::api::{
    complete_args, decode_worker_added, id_args, list_args, schedule_args, worker_add_args,
    Completed, Page, Placement, Policy, TaskInfo, WorkerInfo, CAPACITY_MAX, LIST_LIMIT_MAX,
};
use super::ids;
use crate::testing::Harness;
use crate::DbLimits;

/// One partition of the model.
#[derive(Debug, Default)]
struct Part {
    /// worker id -> (capacity, unused capacity)
    workers: BTreeMap<u64, (u32, u32)>,
    tasks: HashMap<u64, TaskInfo>,
    /// Queued task ids, oldest first (the tests' clock only goes forward).
    queue: VecDeque<u64>,
}

#[derive(Debug)]
struct Model {
    parts: Vec<Part>,
    workers_max: usize,
    tasks_max: usize,
}

impl Model {
    fn new(partition_count: u32, limits: &DbLimits) -> Model {
        Model {
            parts: (0..partition_count).map(|_| Part::default()).collect(),
            workers_max: limits.workers_max,
            tasks_max: limits.tasks_max,
        }
    }

    fn worker_add(&mut self, p: u32, w: u64, capacity: u32, now: u64) -> Result<u32, Status> {
        let part = &mut self.parts[p as usize];
        if capacity == 0 || capacity > CAPACITY_MAX {
            return Err(Status::BadArgs);
        }
        if part.workers.contains_key(&w) {
            return Err(Status::AlreadyExists);
        }
        if part.workers.len() >= self.workers_max {
            return Err(Status::TableFull);
        }
        let mut unused = capacity;
        while unused > 0 {
            let Some(tid) = part.queue.pop_front() else {
                break;
            };
            let task = part.tasks.get_mut(&tid).unwrap();
            task.worker_id = Some(w);
            task.assigned_ns = Some(now);
            unused -= 1;
        }
        part.workers.insert(w, (capacity, unused));
        Ok(capacity - unused)
    }

    fn worker_remove(&mut self, p: u32, w: u64) -> Result<(), Status> {
        let part = &mut self.parts[p as usize];
        let (capacity, unused) = *part.workers.get(&w).ok_or(Status::NotFound)?;
        if capacity != unused {
            return Err(Status::Busy);
        }
        part.workers.remove(&w);
        Ok(())
    }

    fn schedule(
        &mut self,
        p: u32,
        policy: Policy,
        tid: u64,
        now: u64,
    ) -> Result<Placement, Status> {
        let part = &mut self.parts[p as usize];
        if part.tasks.contains_key(&tid) {
            return Err(Status::AlreadyExists);
        }
        let with_capacity = part.workers.iter().filter(|(_, (_, unused))| *unused > 0);
        // The documented choices: FIFO and locality take the least unused capacity
        // that is still positive (ties: lowest id); least-loaded the greatest (ties:
        // highest id).
        let chosen = match policy {
            Policy::Fifo | Policy::Locality => with_capacity.min_by_key(|(w, (_, u))| (*u, **w)),
            Policy::LeastLoaded => with_capacity.max_by_key(|(w, (_, u))| (*u, **w)),
        }
        .map(|(w, _)| *w);
        if chosen.is_none() && policy != Policy::Locality {
            return Err(Status::NoCapacity);
        }
        if part.tasks.len() >= self.tasks_max {
            return Err(Status::TableFull);
        }
        let task = TaskInfo {
            task_id: tid,
            policy,
            worker_id: chosen,
            submitted_ns: now,
            assigned_ns: chosen.map(|_| now),
        };
        part.tasks.insert(tid, task);
        match chosen {
            Some(w) => {
                part.workers.get_mut(&w).unwrap().1 -= 1;
                Ok(Placement::Assigned { worker_id: w })
            }
            None => {
                part.queue.push_back(tid);
                Ok(Placement::Queued)
            }
        }
    }

    fn complete(&mut self, p: u32, tid: u64, now: u64) -> Result<Completed, Status> {
        let part = &mut self.parts[p as usize];
        let task = part.tasks.remove(&tid).ok_or(Status::NotFound)?;
        let Some(w) = task.worker_id else {
            part.queue.retain(|t| *t != tid);
            return Ok(Completed::Withdrawn);
        };
        match part.queue.pop_front() {
            Some(next) => {
                let next_task = part.tasks.get_mut(&next).unwrap();
                next_task.worker_id = Some(w);
                next_task.assigned_ns = Some(now);
                Ok(Completed::HandedOver {
                    worker_id: w,
                    next_task_id: next,
                })
            }
            None => {
                part.workers.get_mut(&w).unwrap().1 += 1;
                Ok(Completed::Freed { worker_id: w })
            }
        }
    }

    fn get(&self, p: u32, tid: u64) -> Result<TaskInfo, Status> {
        self.parts[p as usize]
            .tasks
            .get(&tid)
            .copied()
            .ok_or(Status::NotFound)
    }

    /// Every task of every partition, as (partition, id) pairs.
    fn all_tasks(&self) -> Vec<(u32, u64)> {
        let mut all: Vec<(u32, u64)> = (0..self.parts.len() as u32)
            .flat_map(|p| self.parts[p as usize].tasks.keys().map(move |t| (p, *t)))
            .collect();
        all.sort_unstable();
        all
    }
}

fn call<T>(
    h: &mut Harness,
    p: u32,
    id: u32,
    args: &[u8],
    decode: impl FnOnce(&[u8]) -> Result<T, Status>,
) -> Result<T, Status> {
    h.call(p, id, args)
        .map(|reply| decode(&reply).expect("a reply decodes"))
}

/// The harness's tables equal the model's, row for row.
fn assert_same_tables(h: &Harness, model: &Model) {
    for (p, (db, part)) in h.dbs.iter().zip(&model.parts).enumerate() {
        let mut workers: Vec<(u64, (u32, u32))> = db
            .sched
            .workers
            .iter()
            .map(|w| (w.worker_id, (w.capacity, w.unused_capacity)))
            .collect();
        workers.sort_unstable();
        let want: Vec<(u64, (u32, u32))> = part.workers.iter().map(|(w, c)| (*w, *c)).collect();
        assert_eq!(workers, want, "workers of partition {p}");
        assert_eq!(
            db.sched.tasks.len(),
            part.tasks.len(),
            "tasks of partition {p}"
        );
        for task in db.sched.tasks.iter() {
            assert_eq!(
                Some(&task.info()),
                part.tasks.get(&task.task_id),
                "partition {p}"
            );
        }
        assert_eq!(db.sched.oldest_queued(), part.queue.front().copied());
    }
}

/// Page through a list procedure with `limit` rows per call.
fn list_all<T: super::api::Record>(h: &mut Harness, p: u32, id: u32, limit: u32) -> Vec<T> {
    let mut all = Vec::new();
    let mut after = None;
    loop {
        let page: Page<T> = call(h, p, id, &list_args(after, limit), Page::decode).unwrap();
        assert!(page.items.len() <= limit as usize);
        after = page.next_cursor();
        all.extend(page.items);
        if after.is_none() {
            return all;
        }
    }
}

/// Run `ops` random operations on the harness and the model; returns how often each
/// outcome happened.
fn run_model(
    seed: u64,
    partition_count: u32,
    limits: DbLimits,
    ops: usize,
) -> HashMap<String, usize> {
    let mut h = Harness::new(partition_count, limits);
    let mut model = Model::new(partition_count, &limits);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut now = 1_000u64;
    let mut seen = HashMap::<String, usize>::new();
    for op in 0..ops {
        now += rng.gen_range(1..5);
        let p = rng.gen_range(0..partition_count);
        let worker = rng.gen_range(0..10u64);
        let what: String = match rng.gen_range(0..100) {
            0..=11 => {
                let capacity = match rng.gen_range(0..20) {
                    0 => 0,
                    1 => CAPACITY_MAX + 1,
                    _ => rng.gen_range(1..5),
                };
                let got = call(
                    &mut h,
                    p,
                    ids::WORKER_ADD,
                    &worker_add_args(worker, capacity, now),
                    decode_worker_added,
                );
                assert_eq!(got, model.worker_add(p, worker, capacity, now), "op {op}");
                outcome("add", &got, |n| if *n > 0 { "took queued" } else { "Ok" })
            }
            12..=19 => {
                let got = call(&mut h, p, ids::WORKER_REMOVE, &id_args(worker), |_| Ok(()));
                assert_eq!(got, model.worker_remove(p, worker), "op {op}");
                outcome("remove", &got, |_| "Ok")
            }
            20..=64 => {
                let policy = Policy::ALL[rng.gen_range(0..3)];
                let all = model.all_tasks();
                let tid = if !all.is_empty() && rng.gen_bool(0.1) {
                    all[rng.gen_range(0..all.len())].1 // a duplicate when on its partition
                } else {
                    rng.gen()
                };
                let got = call(
                    &mut h,
                    p,
                    policy.proc_id(),
                    &schedule_args(tid, now),
                    Placement::decode,
                );
                assert_eq!(got, model.schedule(p, policy, tid, now), "op {op}");
                outcome(policy.name(), &got, |pl| match pl {
                    Placement::Assigned { .. } => "Ok",
                    Placement::Queued => "Queued",
                })
            }
            65..=94 => {
                let all = model.all_tasks();
                let (p, tid) = if !all.is_empty() && rng.gen_bool(0.9) {
                    all[rng.gen_range(0..all.len())]
                } else {
                    (p, rng.gen())
                };
                let got = call(
                    &mut h,
                    p,
                    ids::COMPLETE_TASK,
                    &complete_args(tid, now),
                    Completed::decode,
                );
                assert_eq!(got, model.complete(p, tid, now), "op {op}");
                outcome("complete", &got, |c| match c {
                    Completed::Freed { .. } => "Ok",
                    Completed::HandedOver { .. } => "HandedOver",
                    Completed::Withdrawn => "Withdrawn",
                })
            }
            95..=97 => {
                let all = model.all_tasks();
                let tid = all.first().map_or(7, |t| t.1);
                let got = call(
                    &mut h,
                    p,
                    ids::TASK_GET,
                    &id_args(tid),
                    TaskInfo::decode_reply,
                );
                assert_eq!(got, model.get(p, tid), "op {op}");
                outcome("get", &got, |_| "Ok")
            }
            _ => {
                let limit = rng.gen_range(1..4);
                let workers: Vec<WorkerInfo> = list_all(&mut h, p, ids::WORKER_LIST, limit);
                let want: Vec<WorkerInfo> = model.parts[p as usize]
                    .workers
                    .iter()
                    .map(|(w, (c, u))| WorkerInfo {
                        worker_id: *w,
                        capacity: *c,
                        unused_capacity: *u,
                    })
                    .collect();
                assert_eq!(workers, want, "op {op}");
                let tasks: Vec<TaskInfo> = list_all(&mut h, p, ids::TASK_LIST, limit);
                let mut want: Vec<TaskInfo> =
                    model.parts[p as usize].tasks.values().copied().collect();
                want.sort_unstable_by_key(|t| t.task_id);
                assert_eq!(tasks, want, "op {op}");
                "list".to_string()
            }
        };
        *seen.entry(what).or_default() += 1;
        assert_same_tables(&h, &model);
    }
    seen
}

/// Fail unless every outcome in `want` happened.
fn assert_seen(seen: &HashMap<String, usize>, want: &[&str]) {
    for name in want {
        assert!(seen.contains_key(*name), "never saw `{name}`: {seen:?}");
    }
}

/// A short name of an outcome, for coverage counts.
fn outcome<T>(what: &str, result: &Result<T, Status>, ok: impl Fn(&T) -> &'static str) -> String {
    match result {
        Ok(v) => format!("{what} {}", ok(v)),
        Err(s) => format!("{what} {s:?}"),
    }
}

#[test]
fn matches_the_model_with_small_tables() {
    let limits = DbLimits {
        workers_max: 4,
        tasks_max: 8,
        ..DbLimits::default()
    };
    let mut seen = HashMap::new();
    for seed in 0..4 {
        for (k, n) in run_model(seed, 3, limits, 3000) {
            *seen.entry(k).or_default() += n;
        }
    }
    assert_seen(
        &seen,
        &[
            "add Ok",
            "add took queued",
            "add AlreadyExists",
            "add TableFull",
            "add BadArgs",
            "remove Ok",
            "remove Busy",
            "remove NotFound",
            "fifo Ok",
            "fifo NoCapacity",
            "fifo AlreadyExists",
            "fifo TableFull",
            "locality Ok",
            "locality Queued",
            "locality TableFull",
            "least-loaded Ok",
            "least-loaded NoCapacity",
            "complete Ok",
            "complete HandedOver",
            "complete Withdrawn",
            "complete NotFound",
            "get Ok",
            "get NotFound",
        ],
    );
}

#[test]
fn matches_the_model_with_roomy_tables() {
    for seed in 10..12 {
        let seen = run_model(seed, 2, DbLimits::default(), 4000);
        assert_seen(
            &seen,
            &[
                "fifo Ok",
                "locality Queued",
                "complete HandedOver",
                "least-loaded Ok",
            ],
        );
    }
}

fn placement(
    h: &mut Harness,
    p: u32,
    policy: Policy,
    tid: u64,
    now: u64,
) -> Result<Placement, Status> {
    call(
        h,
        p,
        policy.proc_id(),
        &schedule_args(tid, now),
        Placement::decode,
    )
}

fn add_worker(h: &mut Harness, p: u32, w: u64, capacity: u32, now: u64) -> Result<u32, Status> {
    call(
        h,
        p,
        ids::WORKER_ADD,
        &worker_add_args(w, capacity, now),
        decode_worker_added,
    )
}

#[test]
fn fifo_packs_and_least_loaded_spreads() {
    let mut h = Harness::new(1, DbLimits::default());
    assert_eq!(add_worker(&mut h, 0, 1, 3, 0), Ok(0));
    assert_eq!(add_worker(&mut h, 0, 2, 2, 0), Ok(0));
    // Least unused capacity that is still positive: worker 2 (2 < 3), then 2 again.
    let assigned = |w| Ok(Placement::Assigned { worker_id: w });
    assert_eq!(placement(&mut h, 0, Policy::Fifo, 10, 1), assigned(2));
    assert_eq!(placement(&mut h, 0, Policy::Fifo, 11, 1), assigned(2));
    // Greatest unused capacity: worker 1 (3), then a tie at 2 goes to the higher id.
    let mut h2 = Harness::new(1, DbLimits::default());
    add_worker(&mut h2, 0, 1, 3, 0).unwrap();
    add_worker(&mut h2, 0, 2, 2, 0).unwrap();
    assert_eq!(
        placement(&mut h2, 0, Policy::LeastLoaded, 10, 1),
        assigned(1)
    );
    assert_eq!(
        placement(&mut h2, 0, Policy::LeastLoaded, 11, 1),
        assigned(2)
    );
    assert_eq!(
        placement(&mut h2, 0, Policy::LeastLoaded, 12, 1),
        assigned(1)
    );
}

#[test]
fn queued_tasks_go_oldest_first_ties_by_id() {
    let mut h = Harness::new(2, DbLimits::default());
    for (tid, at) in [(30, 5), (20, 5), (10, 9)] {
        assert_eq!(
            placement(&mut h, 1, Policy::Locality, tid, at),
            Ok(Placement::Queued)
        );
    }
    assert_eq!(
        placement(&mut h, 1, Policy::Fifo, 40, 10),
        Err(Status::NoCapacity)
    );
    // A new worker takes the two oldest; (5, 20) before (5, 30).
    assert_eq!(add_worker(&mut h, 1, 7, 2, 11), Ok(2));
    let get =
        |h: &mut Harness, tid| call(h, 1, ids::TASK_GET, &id_args(tid), TaskInfo::decode_reply);
    assert_eq!(get(&mut h, 20).unwrap().worker_id, Some(7));
    assert_eq!(get(&mut h, 30).unwrap().assigned_ns, Some(11));
    assert_eq!(get(&mut h, 10).unwrap().worker_id, None);
    assert_eq!(
        call(&mut h, 1, ids::WORKER_REMOVE, &id_args(7), |_| Ok(())),
        Err(Status::Busy)
    );
    let done = call(
        &mut h,
        1,
        ids::COMPLETE_TASK,
        &complete_args(30, 12),
        Completed::decode,
    );
    assert_eq!(
        done,
        Ok(Completed::HandedOver {
            worker_id: 7,
            next_task_id: 10
        })
    );
    for tid in [20, 10] {
        let done = call(
            &mut h,
            1,
            ids::COMPLETE_TASK,
            &complete_args(tid, 13),
            Completed::decode,
        );
        assert_eq!(done, Ok(Completed::Freed { worker_id: 7 }));
    }
    assert_eq!(
        call(&mut h, 1, ids::WORKER_REMOVE, &id_args(7), |_| Ok(())),
        Ok(())
    );
    assert_eq!(get(&mut h, 10), Err(Status::NotFound));
    assert!(h
        .dbs
        .iter()
        .all(|db| db.sched.tasks.is_empty() && db.sched.workers.is_empty()));
}

/// Garbage arguments never panic; truncated or padded valid ones are `BadArgs` and
/// change nothing.
#[test]
fn malformed_arguments_are_refused() {
    let mut h = Harness::new(2, DbLimits::default());
    add_worker(&mut h, 0, 1, 2, 0).unwrap();
    placement(&mut h, 0, Policy::Fifo, 5, 1).unwrap();
    let valid: [(u32, Vec<u8>); 9] = [
        (ids::WORKER_ADD, worker_add_args(2, 1, 3)),
        (ids::WORKER_REMOVE, id_args(1)),
        (ids::WORKER_LIST, list_args(Some(0), 5)),
        (ids::SCHEDULE_FIFO, schedule_args(6, 2)),
        (ids::SCHEDULE_LOCALITY, schedule_args(6, 2)),
        (ids::SCHEDULE_LEAST_LOADED, schedule_args(6, 2)),
        (ids::COMPLETE_TASK, complete_args(5, 2)),
        (ids::TASK_GET, id_args(5)),
        (ids::TASK_LIST, list_args(None, 5)),
    ];
    for (id, args) in &valid {
        for cut in 0..args.len() {
            assert_eq!(
                h.call(0, *id, &args[..cut]),
                Err(Status::BadArgs),
                "proc {id} cut {cut}"
            );
        }
        let mut long = args.clone();
        long.push(0);
        assert_eq!(
            h.call(0, *id, &long),
            Err(Status::BadArgs),
            "proc {id} padded"
        );
    }
    for bad in [list_args(None, 0), list_args(None, LIST_LIMIT_MAX + 1)] {
        assert_eq!(h.call(0, ids::TASK_LIST, &bad), Err(Status::BadArgs));
    }
    let mut bad_flag = list_args(None, 5);
    bad_flag[0] = 2;
    assert_eq!(h.call(0, ids::WORKER_LIST, &bad_flag), Err(Status::BadArgs));
    assert_eq!(h.dbs[0].sched.tasks.len(), 1);
    assert_eq!(h.dbs[0].sched.workers.len(), 1);
    let mut rng = StdRng::seed_from_u64(99);
    for _ in 0..3000 {
        let len = rng.gen_range(0..40);
        let args: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let (id, _) = &valid[rng.gen_range(0..valid.len())];
        let _ = h.call(rng.gen_range(0..2), *id, &args); // the harness checks invariants
    }
}
