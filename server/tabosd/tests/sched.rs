//! The scheduler through a real tabosd: every policy places tasks, completions free or
//! hand over capacity, a full cluster answers NoCapacity after trying each partition
//! once, the `tabos sched` command line works end to end, and concurrent clients never
//! lose or invent capacity.

mod common;

use std::path::Path;

use common::{within, Daemon, HANG_TIMEOUT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tabos_client::{Client, Error, Status};
use tabos_procs::sched::{Completed, Placement, Policy, TaskState};

fn assigned(worker_id: u64) -> Placement {
    Placement::Assigned { worker_id }
}

/// Totals of one partition's listing: (capacity, unused capacity, assigned, queued).
fn totals(client: &mut Client, partition: u32) -> (u64, u64, u64, u64) {
    let listing = client.sched_list(partition).expect("sched_list");
    let capacity = listing.workers.iter().map(|w| u64::from(w.capacity)).sum();
    let unused = listing
        .workers
        .iter()
        .map(|w| u64::from(w.unused_capacity))
        .sum();
    let queued = listing
        .tasks
        .iter()
        .filter(|t| t.state() == TaskState::Queued)
        .count() as u64;
    (
        capacity,
        unused,
        listing.tasks.len() as u64 - queued,
        queued,
    )
}

#[test]
fn policies_place_complete_and_hand_over() {
    let daemon = Daemon::start("sched-policies", &[]);
    let mut c = daemon.connect();
    assert_eq!(c.partition_count(), 2);
    // Worker 10 on partition 0 (capacity 2), worker 11 on partition 1 (capacity 1).
    assert_eq!(c.worker_partition(10), 0);
    assert_eq!(c.worker_add(0, 10, 2), Ok(0));
    assert_eq!(c.worker_add(1, 11, 1), Ok(0));
    assert_eq!(
        c.worker_add(1, 11, 1),
        Err(Error::Status(Status::AlreadyExists))
    );
    assert_eq!(c.worker_add(1, 12, 0), Err(Error::Status(Status::BadArgs)));

    let mut running = Vec::new();
    for policy in [Policy::Fifo, Policy::LeastLoaded, Policy::Fifo] {
        let s = c.sched_submit(policy, None).expect("capacity is left");
        let Placement::Assigned { worker_id } = s.placement else {
            panic!("{policy:?} queued a task: {s:?}");
        };
        assert_eq!(s.partition, c.worker_partition(worker_id));
        running.push(s);
    }
    // Every unit of capacity is taken: both partitions are tried, once each.
    for policy in [Policy::Fifo, Policy::LeastLoaded] {
        let got = within("submit on a full cluster", HANG_TIMEOUT, {
            let socket = daemon.socket().to_path_buf();
            move || Client::connect(socket).unwrap().sched_submit(policy, None)
        });
        assert_eq!(got, Err(Error::Status(Status::NoCapacity)));
    }
    assert_eq!(
        c.sched_submit(Policy::Locality, None),
        Err(Error::Status(Status::BadArgs))
    );

    // Locality queues on its full home partition; a completion there hands over.
    let queued = c.sched_submit(Policy::Locality, Some(0)).unwrap();
    assert_eq!((queued.partition, queued.placement), (0, Placement::Queued));
    let info = c
        .sched_task(queued.task_id, 0)
        .unwrap()
        .expect("queued task");
    assert_eq!((info.state(), info.worker_id), (TaskState::Queued, None));
    let on_0 = running.iter().position(|s| s.partition == 0).unwrap();
    let done = running.remove(on_0);
    assert_eq!(
        c.sched_complete(done.task_id, 0),
        Ok(Completed::HandedOver {
            worker_id: 10,
            next_task_id: queued.task_id
        })
    );
    let info = c.sched_task(queued.task_id, 0).unwrap().unwrap();
    assert_eq!(info.worker_id, Some(10));
    assert!(info.assigned_ns.unwrap() >= info.submitted_ns);
    running.push(queued);

    // Completing frees capacity; a worker with tasks cannot go.
    assert_eq!(c.worker_remove(0, 10), Err(Error::Status(Status::Busy)));
    assert_eq!(
        c.sched_complete(12345, 1),
        Err(Error::Status(Status::NotFound))
    );
    for s in running {
        let worker_id = if s.partition == 0 { 10 } else { 11 };
        assert_eq!(
            c.sched_complete(s.task_id, s.partition),
            Ok(Completed::Freed { worker_id })
        );
        assert_eq!(c.sched_task(s.task_id, s.partition), Ok(None));
    }
    assert_eq!(totals(&mut c, 0), (2, 2, 0, 0));
    assert_eq!(
        c.sched_submit(Policy::LeastLoaded, Some(1))
            .map(|s| s.placement),
        Ok(assigned(11))
    );
    assert_eq!(c.worker_remove(0, 10), Ok(()));
    assert_eq!(c.worker_remove(0, 10), Err(Error::Status(Status::NotFound)));
}

#[test]
fn a_new_worker_takes_queued_tasks_oldest_first() {
    let daemon = Daemon::start("sched-queue", &[]);
    let mut c = daemon.connect();
    let first = c
        .sched_submit_with_id(Policy::Locality, Some(1), 7)
        .unwrap();
    let second = c
        .sched_submit_with_id(Policy::Locality, Some(1), 3)
        .unwrap();
    assert_eq!(first.placement, Placement::Queued);
    assert_eq!(second.placement, Placement::Queued);
    assert_eq!(
        c.sched_submit_with_id(Policy::Locality, Some(1), 7),
        Err(Error::Status(Status::AlreadyExists))
    );
    // No worker anywhere: fifo finds nothing on either partition.
    assert_eq!(
        c.sched_submit(Policy::Fifo, None),
        Err(Error::Status(Status::NoCapacity))
    );
    assert_eq!(c.worker_add(1, 5, 1), Ok(1));
    assert_eq!(c.sched_task(7, 1).unwrap().unwrap().worker_id, Some(5));
    assert_eq!(c.sched_task(3, 1).unwrap().unwrap().worker_id, None);
    assert_eq!(c.sched_complete(3, 1), Ok(Completed::Withdrawn));
    assert_eq!(
        c.sched_complete(7, 1),
        Ok(Completed::Freed { worker_id: 5 })
    );
    assert_eq!(totals(&mut c, 1), (1, 1, 0, 0));

    // Pipelined: partition 1 runs its two calls in order; partition 0 has no worker.
    let attempts = c.sched_submit_pipelined(Policy::Fifo, &[1, 1, 0]).unwrap();
    let placements: Vec<_> = attempts
        .iter()
        .map(|a| (a.partition, a.placement.clone()))
        .collect();
    let no_capacity = Err(Error::Status(Status::NoCapacity));
    assert_eq!(
        placements,
        [
            (1, Ok(assigned(5))),
            (1, no_capacity.clone()),
            (0, no_capacity)
        ]
    );
    assert_eq!(c.in_flight(), 0);
    assert_eq!(
        c.sched_complete(attempts[0].task_id, 1),
        Ok(Completed::Freed { worker_id: 5 })
    );
}

/// Several clients, each on its own thread and connection, submit with every policy
/// and complete their own tasks at random; afterwards each partition's capacity adds
/// up and no task waits while a worker of its partition is idle.
#[test]
fn concurrent_clients_never_lose_capacity() {
    const THREADS: u64 = 4;
    const OPS: usize = 400;
    let daemon = Daemon::start("sched-concurrent", &[]);
    let mut c = daemon.connect();
    for worker_id in 0..6u64 {
        let partition = c.worker_partition(worker_id);
        c.worker_add(partition, worker_id, 1 + worker_id as u32 % 3)
            .unwrap();
    }
    let capacity_before: Vec<u64> = (0..2).map(|p| totals(&mut c, p).0).collect();
    let threads: Vec<_> = (0..THREADS)
        .map(|seed| {
            let socket = daemon.socket().to_path_buf();
            std::thread::spawn(move || client_thread(&socket, seed, OPS))
        })
        .collect();
    let mut outstanding = 0u64;
    for thread in threads {
        outstanding += within("a client thread", HANG_TIMEOUT, move || {
            thread.join().expect("client thread")
        });
    }
    let mut live = 0;
    for p in 0..2 {
        let (capacity, unused, assigned, queued) = totals(&mut c, p);
        assert_eq!(capacity, capacity_before[p as usize]);
        assert_eq!(unused + assigned, capacity, "partition {p}");
        assert!(
            queued == 0 || unused == 0,
            "partition {p}: queued while idle"
        );
        live += assigned + queued;
    }
    assert_eq!(live, outstanding);
}

/// One client's random work; returns how many of its tasks are still live.
fn client_thread(socket: &Path, seed: u64, ops: usize) -> u64 {
    let mut c = Client::connect(socket).expect("connect");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut mine: Vec<(u64, u32)> = Vec::new();
    for _ in 0..ops {
        if mine.is_empty() || rng.gen_bool(0.55) {
            let policy = Policy::ALL[rng.gen_range(0..3)];
            let home = (policy == Policy::Locality).then(|| rng.gen_range(0..2));
            match c.sched_submit(policy, home) {
                Ok(s) => mine.push((s.task_id, s.partition)),
                Err(Error::Status(Status::NoCapacity)) => {}
                Err(e) => panic!("submit: {e}"),
            }
        } else {
            let (task_id, partition) = mine.swap_remove(rng.gen_range(0..mine.len()));
            c.sched_complete(task_id, partition)
                .expect("complete own task");
        }
    }
    mine.len() as u64
}

/// Run the CLI, expecting exit `code`; returns stdout and stderr together.
fn tabos_expect(socket: &Path, args: &[&str], code: i32) -> String {
    let out = common::run_tabos(socket, args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(code), "tabos {args:?}:\n{text}");
    text
}

#[test]
fn the_command_line_drives_the_scheduler() {
    let daemon = Daemon::start("sched-cli", &[]);
    let s = daemon.socket();
    let out = tabos_expect(
        s,
        &["sched", "worker", "add", "--id", "3", "--capacity", "1"],
        0,
    );
    assert!(
        out.contains("worker 3 added on partition 1 with capacity 1"),
        "{out}"
    );
    let out = tabos_expect(s, &["sched", "submit", "--policy", "fifo"], 0);
    assert!(out.contains("assigned to worker 3 on partition 1"), "{out}");
    let task: u64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    let out = tabos_expect(s, &["sched", "submit", "--policy", "least-loaded"], 1);
    assert!(
        out.contains("no worker has capacity on any partition"),
        "{out}"
    );
    let args = [
        "sched", "submit", "--policy", "locality", "--home", "1", "--id", "77",
    ];
    let out = tabos_expect(s, &args, 0);
    assert!(out.contains("task 77 queued on partition 1"), "{out}");
    tabos_expect(s, &["sched", "submit", "--policy", "locality"], 2);

    let out = tabos_expect(s, &["sched", "ls"], 0);
    assert!(out.contains("capacity"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains(" 77 ") && l.contains("queued")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains(&task.to_string()) && l.contains("assigned")),
        "{out}"
    );

    let out = tabos_expect(s, &["sched", "worker", "rm", "--id", "3"], 1);
    assert!(out.contains("still runs tasks"), "{out}");
    let out = tabos_expect(s, &["sched", "complete", &task.to_string()], 0);
    assert!(out.contains("worker 3 now runs queued task 77"), "{out}");
    let out = tabos_expect(s, &["sched", "complete", "77", "--partition", "1"], 0);
    assert!(
        out.contains("task 77 completed on partition 1; worker 3 freed"),
        "{out}"
    );
    let out = tabos_expect(s, &["sched", "complete", "77"], 1);
    assert!(out.contains("no task 77 on any partition"), "{out}");
    let out = tabos_expect(s, &["sched", "worker", "rm", "--id", "3"], 0);
    assert!(out.contains("worker 3 removed from partition 1"), "{out}");
    let out = tabos_expect(s, &["sched", "worker", "rm", "--id", "3"], 1);
    assert!(out.contains("no worker 3 on partition 1"), "{out}");
}
