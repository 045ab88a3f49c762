//! `tabos sched` subcommands: workers, task submission and completion, listing.

use clap::{Subcommand, ValueEnum};
use std::process::ExitCode;
use tabos_client::{Client, Error, Status};
use tabos_procs::sched::{Completed, Placement, Policy, LIST_LIMIT_MAX};

/// `tabos sched` subcommands.
#[derive(Subcommand, Debug)]
pub enum SchedCommand {
    /// Register or remove workers.
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// Submit a new task and print its id, partition and worker (or that it is
    /// queued). Exits 1 when no worker has capacity.
    Submit {
        /// Scheduler: `fifo` (figure 2: any worker with capacity, partitions tried in
        /// a random order), `locality` (figure 3: on --home, queued there when its
        /// workers are full), `least-loaded` (figure 4: the worker with the most
        /// unused capacity, partitions tried in a random order).
        #[arg(long, value_enum)]
        policy: PolicyArg,
        /// Home partition: required for `locality`; for the others, tried first.
        #[arg(long)]
        home: Option<u32>,
        /// Task id to use (default: a fresh random 64-bit id).
        #[arg(long)]
        id: Option<u64>,
    },
    /// Complete TASK: free its worker's capacity, or hand it to the oldest queued task
    /// of the partition. Exits 1 if the task is not found.
    Complete {
        /// Task id, as `submit` printed it.
        task: u64,
        /// Partition holding the task (default: try every partition).
        #[arg(long)]
        partition: Option<u32>,
    },
    /// List workers with their capacity and tasks with their state.
    Ls {
        /// Only this partition (default: every partition).
        #[arg(long)]
        partition: Option<u32>,
        /// Most workers and most tasks shown per partition (1 to 1000).
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=LIST_LIMIT_MAX as i64))]
        limit: u32,
    },
}

/// `tabos sched worker` subcommands.
#[derive(Subcommand, Debug)]
pub enum WorkerCommand {
    /// Register a worker that runs up to --capacity tasks at once. Queued tasks of
    /// its partition move to it at once.
    Add {
        /// Worker id.
        #[arg(long)]
        id: u64,
        /// Tasks it can run at once (1 to 65536).
        #[arg(long)]
        capacity: u32,
        /// Partition to register it on (default: id modulo the partition count).
        #[arg(long)]
        partition: Option<u32>,
    },
    /// Remove a worker that runs no task. Exits 1 if it is not found or still busy.
    Rm {
        /// Worker id.
        #[arg(long)]
        id: u64,
        /// Partition it is registered on (default: id modulo the partition count).
        #[arg(long)]
        partition: Option<u32>,
    },
}

/// A scheduling policy on the command line.
#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum PolicyArg {
    Fifo,
    Locality,
    LeastLoaded,
}

impl From<PolicyArg> for Policy {
    fn from(arg: PolicyArg) -> Policy {
        match arg {
            PolicyArg::Fifo => Policy::Fifo,
            PolicyArg::Locality => Policy::Locality,
            PolicyArg::LeastLoaded => Policy::LeastLoaded,
        }
    }
}

/// Print `message` as an error and exit 1.
fn fail(message: String) -> Result<ExitCode, Error> {
    eprintln!("tabos: {message}");
    Ok(ExitCode::from(1))
}

/// Run one `tabos sched` subcommand.
pub fn run(client: &mut Client, command: SchedCommand) -> Result<ExitCode, Error> {
    match command {
        SchedCommand::Worker(WorkerCommand::Add {
            id,
            capacity,
            partition,
        }) => {
            let partition = partition.unwrap_or_else(|| client.worker_partition(id));
            match client.worker_add(partition, id, capacity) {
                Ok(taken) => {
                    print!("worker {id} added on partition {partition} with capacity {capacity}");
                    if taken > 0 {
                        print!("; it took over {taken} queued tasks");
                    }
                    println!();
                }
                Err(Error::Status(Status::AlreadyExists)) => {
                    return fail(format!(
                        "worker {id} already exists on partition {partition}"
                    ))
                }
                Err(Error::Status(Status::BadArgs)) => {
                    return fail(format!("capacity must be 1 to 65536, not {capacity}"))
                }
                Err(e) => return Err(e),
            }
        }
        SchedCommand::Worker(WorkerCommand::Rm { id, partition }) => {
            let partition = partition.unwrap_or_else(|| client.worker_partition(id));
            match client.worker_remove(partition, id) {
                Ok(()) => println!("worker {id} removed from partition {partition}"),
                Err(Error::Status(Status::NotFound)) => {
                    return fail(format!("no worker {id} on partition {partition}"))
                }
                Err(Error::Status(Status::Busy)) => {
                    return fail(format!(
                        "worker {id} on partition {partition} still runs tasks; complete them first"
                    ))
                }
                Err(e) => return Err(e),
            }
        }
        SchedCommand::Submit { policy, home, id } => {
            let policy = Policy::from(policy);
            if policy == Policy::Locality && home.is_none() {
                eprintln!("tabos: --policy locality needs --home PARTITION");
                return Ok(ExitCode::from(2));
            }
            let submitted = match id {
                Some(id) => client.sched_submit_with_id(policy, home, id),
                None => client.sched_submit(policy, home),
            };
            match submitted {
                Ok(s) => match s.placement {
                    Placement::Assigned { worker_id } => println!(
                        "task {} assigned to worker {worker_id} on partition {}",
                        s.task_id, s.partition
                    ),
                    Placement::Queued => println!(
                        "task {} queued on partition {}: no worker there has capacity",
                        s.task_id, s.partition
                    ),
                },
                Err(Error::Status(Status::NoCapacity)) => {
                    return fail("no worker has capacity on any partition".into())
                }
                Err(Error::Status(Status::AlreadyExists)) => {
                    return fail("a task with that id already exists".into())
                }
                Err(e) => return Err(e),
            }
        }
        SchedCommand::Complete { task, partition } => {
            let partitions: Vec<u32> = match partition {
                Some(p) => vec![p],
                None => (0..client.partition_count()).collect(),
            };
            for p in partitions {
                let completed = match client.sched_complete(task, p) {
                    Ok(completed) => completed,
                    Err(Error::Status(Status::NotFound)) => continue,
                    Err(e) => return Err(e),
                };
                match completed {
                    Completed::Freed { worker_id } => {
                        println!("task {task} completed on partition {p}; worker {worker_id} freed")
                    }
                    Completed::HandedOver {
                        worker_id,
                        next_task_id,
                    } => println!(
                        "task {task} completed on partition {p}; worker {worker_id} now runs queued task {next_task_id}"
                    ),
                    Completed::Withdrawn => {
                        println!("task {task} was still queued on partition {p}; withdrawn")
                    }
                }
                return Ok(ExitCode::SUCCESS);
            }
            let where_ = match partition {
                Some(p) => format!("partition {p}"),
                None => "any partition".to_string(),
            };
            return fail(format!("no task {task} on {where_}"));
        }
        SchedCommand::Ls { partition, limit } => return list(client, partition, limit),
    }
    Ok(ExitCode::SUCCESS)
}

/// `tabos sched ls`: a table of workers, then one of tasks, each at most `limit` rows
/// per partition.
fn list(client: &mut Client, partition: Option<u32>, limit: u32) -> Result<ExitCode, Error> {
    let partitions: Vec<u32> = match partition {
        Some(p) => vec![p],
        None => (0..client.partition_count()).collect(),
    };
    let mut cut = false;
    println!(
        "{:>9}  {:>20}  {:>8}  {:>8}",
        "partition", "worker", "capacity", "unused"
    );
    for &p in &partitions {
        let page = client.worker_page(p, None, limit)?;
        cut |= page.more;
        for w in page.items {
            println!(
                "{p:>9}  {:>20}  {:>8}  {:>8}",
                w.worker_id, w.capacity, w.unused_capacity
            );
        }
    }
    println!();
    println!(
        "{:>9}  {:>20}  {:>8}  {:>20}  {:>12}",
        "partition", "task", "state", "worker", "policy"
    );
    for &p in &partitions {
        let page = client.task_page(p, None, limit)?;
        cut |= page.more;
        for t in page.items {
            let worker = t.worker_id.map_or("-".to_string(), |w| w.to_string());
            println!(
                "{p:>9}  {:>20}  {:>8}  {worker:>20}  {:>12}",
                t.task_id,
                t.state().name(),
                t.policy.name()
            );
        }
    }
    if cut {
        println!(
            "(some partition has more than {limit} workers or tasks: raise --limit, up to 1000)"
        );
    }
    Ok(ExitCode::SUCCESS)
}
