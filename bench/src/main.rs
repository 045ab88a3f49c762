//! `tabos-bench`: run tabos benchmarks with their baselines and report medians, tails
//! and ratios. See `tabos-bench --help`.

#![forbid(unsafe_code)]

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;
use tabos_bench::durability::{self, DurabilityConfig};
use tabos_bench::fs::{self, FsConfig};
use tabos_bench::invoke::{self, InvokeConfig};
use tabos_bench::ipc::{self, IpcConfig};
use tabos_bench::machine::Machine;
use tabos_bench::pfs::{self, PfsConfig};
use tabos_bench::plot;
use tabos_bench::report::{self, Record};
use tabos_bench::sched::{self, SchedConfig};
use tabos_bench::server::TABOSD_ENV;
use tabos_bench::sql::{self, SqlConfig};
use tabos_bench::{Error, Settings};
use tabos_client::Policy;

/// tabos-bench: measure tabos against baselines measured in the same run, on the same
/// cores. Starts its own tabosd (one partition on --server-core) unless --connect is
/// given, and always stops it again. Prints the machine, progress on stderr, and a
/// markdown table of medians and tails with ratios to the baselines.
#[derive(Parser, Debug)]
#[command(name = "tabos-bench", version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,

    #[command(subcommand)]
    workload: Workload,
}

#[derive(Args, Debug)]
struct GlobalArgs {
    /// Tiny configuration that finishes in a few seconds, for CI smoke tests. Fails
    /// only when a workload errors, never on speed. Default: off (full configuration).
    #[arg(long, global = true)]
    quick: bool,

    /// Also write the results to FILE as a JSON array of records {"workload",
    /// "system", "params", "p50_us", "p99_us", "p999_us", "ops_per_s"} (latencies in
    /// microseconds, throughput in operations per second, null where a figure does not
    /// apply). Default: no file.
    #[arg(long, global = true, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Also draw SVG charts in the shape of the paper's figures (5, 6-8, 10, 11-12)
    /// into DIR, from this run's records. Default: no charts.
    #[arg(long, global = true, value_name = "DIR")]
    plots: Option<PathBuf>,

    /// Use the tabosd already serving the Unix socket at PATH instead of starting one
    /// (its partition 0 is called). Default: start a private tabosd.
    #[arg(long, global = true, value_name = "PATH")]
    connect: Option<PathBuf>,

    /// tabosd binary to start. Default: `tabosd` in the directory of this executable
    /// (build it with `cargo build --release -p tabos-server`).
    #[arg(long, global = true, value_name = "PATH", env = TABOSD_ENV)]
    tabosd: Option<PathBuf>,

    /// Core (CPU number) the measuring client thread is pinned to. Default: 0.
    #[arg(long, global = true, value_name = "N", default_value_t = 0)]
    client_core: usize,

    /// Core (CPU number) of the server side: the started tabosd's partition, and the
    /// baselines' server threads. Must differ from --client-core so that both sides
    /// spin on their own core. Default: 1.
    #[arg(long, global = true, value_name = "N", default_value_t = 1)]
    server_core: usize,

    /// Pass ARG on to a started tabosd (repeat for several, e.g.
    /// `--tabosd-arg=--spin-us --tabosd-arg=1000`). Default: none.
    #[arg(long, global = true, value_name = "ARG", allow_hyphen_values = true)]
    tabosd_arg: Vec<String>,
}

#[derive(Subcommand, Debug)]
enum Workload {
    /// Null procedure calls: sequential round trips and pipelined calls over the
    /// shared-memory rings and over loopback TCP, against a getppid syscall, raw TCP
    /// echo round trips (blocking and busy-polling) and a gRPC unary call. Full run:
    /// about 90 s; --quick: a few seconds.
    Invoke(InvokeArgs),

    /// The scheduler (paper figure 5): closed-loop pipelined tasks/s of each policy,
    /// then Poisson arrivals at rising offered loads, each task timed from its
    /// scheduled arrival to its placement (no coordinated omission), and the peak
    /// load with p99 under 1 ms. Each task is completed right after its placement.
    /// Then PostgreSQL's FIFO (PL/pgSQL through prepared statements), closed-loop
    /// and at its own offered loads. Full run: about 3 minutes; --quick: a few
    /// seconds.
    Sched(SchedArgs),

    /// IPC (paper figures 6-8): ping-pong and ping20-pong20 between sender/receiver
    /// threads with their own clients (receivers park at the partition), and one
    /// sender multicasting to many receivers; tabos over shared memory and over TCP,
    /// against gRPC and raw TCP (blocking and busy-polling) in every cell. Full run:
    /// about three minutes; --quick: a few seconds.
    Ipc(IpcArgs),

    /// The filesystem (paper figures 10a/10b, tables 1 and 2): 20-block reads and
    /// writes of one file and of 20 files, file create and delete, and a conditional
    /// size aggregate over a directory; each against the Linux filesystem of the
    /// benchmark directory. File create and delete also against PostgreSQL (PL/pgSQL
    /// through prepared statements). Full run: about 2 minutes; --quick: a few
    /// seconds.
    Fs(FsArgs),

    /// Parallel files on a local cluster (paper figures 11-12, scaled to one
    /// machine): read and write throughput for 1 to N clients on the largest
    /// cluster, and one client on clusters of 1 to 3 nodes (127.0.0.1-3). Full run:
    /// about a minute; --quick: a few seconds.
    Pfs,

    /// Ad-hoc SQL (paper table 2 through SQL): the conditional size aggregate as a
    /// SQL query, as the compiled `du` procedure and as a readdir + stat walk of the
    /// same sizes on the benchmark directory's filesystem; then the longest stall a
    /// partition shows (null-call latency) while full scans of a large kv table run,
    /// against none, and the scans' rows/s. Full run: about 30 s; --quick: a few
    /// seconds.
    Sql(SqlArgs),

    /// Durability modes (issue 6): kv puts, scheduler FIFO and IPC send/recv with many
    /// calls in flight against three tabosd at once, with --durability off, async and
    /// sync, the client moving from one to the next every slice (median slice's
    /// throughput, p50/p99 per call, and the median of each round's ratio to off);
    /// then the snapshot pause of a loaded partition and recovery time per GiB, by log
    /// replay and from a snapshot. Logs go to fresh data dirs under the benchmark's
    /// temporary directory. Full run: about a minute; --quick: a few seconds.
    Durability(DurabilityArgs),

    /// Every workload in turn (invoke, sched, ipc, fs, sql, durability, pfs) with default settings,
    /// one summary and one JSON file: the whole report (docs/BENCHMARKS.md). Full
    /// run: about 15 minutes; --quick: under a minute (what CI runs).
    All,
}

#[derive(Args, Debug)]
struct SchedArgs {
    /// Partitions of the started tabosd: the first on --server-core, more on the
    /// other cores (on a 2-CPU machine the second shares the client's core).
    /// Default: 1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    partitions: Option<u32>,

    /// Workers registered, spread over the partitions. Default: 8000.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    workers: Option<u64>,

    /// Runnable tasks per worker. Default: 64.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=65536))]
    capacity: Option<u32>,

    /// Policies to measure, comma-separated: fifo, least-loaded, locality. Default:
    /// all (--quick: all closed-loop, fifo open-loop).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_policy)]
    policies: Option<Vec<Policy>>,

    /// Tasks in flight in the closed-loop phase. Default: 64.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=16384))]
    depth: Option<u64>,

    /// Seconds of each closed-loop run (after an untimed fifth of that). Default: 5
    /// (--quick: 0.3).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    seconds_closed: Option<f64>,

    /// Offered loads of the open-loop phase in tasks/s, comma-separated. Default:
    /// 100000,200000,500000,1000000,1500000,2000000,2500000,3000000 (--quick:
    /// 50000,200000).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_rate)]
    loads: Option<Vec<f64>>,

    /// Seconds of arrivals at each offered load (after an untimed tenth). Default: 3
    /// (--quick: 0.3).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    seconds_per_load: Option<f64>,

    /// Leave out the PostgreSQL baseline (FIFO as PL/pgSQL; a private server on
    /// 127.0.0.1, installed with scripts/install-postgres.sh when missing). Default:
    /// measured.
    #[arg(long)]
    no_postgres: bool,

    /// PostgreSQL connections of the closed-loop runs, comma-separated (one client
    /// thread and one task in flight each); the largest also serves the open-loop
    /// arrivals. Default: 1,4 (--quick: 1,2).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=64))]
    pg_connections: Option<Vec<u64>>,

    /// Offered loads of PostgreSQL's open-loop phase in tasks/s, comma-separated;
    /// the sweep stops after the first load PostgreSQL falls behind on. Default:
    /// 1000,2000,3000,4000,5000,6000,7500,10000,15000,20000,30000,50000 (--quick:
    /// 1000,5000).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_rate)]
    pg_loads: Option<Vec<f64>>,
}

#[derive(Args, Debug)]
struct DurabilityArgs {
    /// Calls kept in flight (sync mode commits at most this many per fdatasync).
    /// Default: 16384 (--quick: 256).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=65536))]
    depth: Option<u64>,

    /// Timed seconds of one slice: one workload on one mode's server (after an
    /// untimed tenth). Default: 0.25 (--quick: 0.1).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    seconds_per_slice: Option<f64>,

    /// Rounds of slices per workload, a slice per mode, each round starting with the
    /// next mode; each throughput reported is the median slice, each ratio to off the
    /// median of the rounds' ratios (slices close in time see the same machine).
    /// Default: 20 (--quick: 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=999))]
    rounds: Option<u64>,

    /// Key-value rows (1 KiB each) loaded for the snapshot and recovery figures.
    /// Default: 250000 (--quick: 10000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    state_rows: Option<u64>,

    /// Durability modes to measure, comma-separated, from off, async and sync (the
    /// ratios need off and the mode). Default: all three.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = ["off", "async", "sync"])]
    modes: Option<Vec<String>>,

    /// Skip the snapshot pause and recovery figures (throughput only). Default: off.
    #[arg(long)]
    no_recovery: bool,
}

impl DurabilityArgs {
    fn config(&self, quick: bool) -> DurabilityConfig {
        let mut config = if quick {
            DurabilityConfig::quick()
        } else {
            DurabilityConfig::full()
        };
        if let Some(d) = self.depth {
            config.depth = d as usize;
        }
        if let Some(s) = self.seconds_per_slice {
            config.slice = Duration::from_secs_f64(s);
        }
        if let Some(n) = self.rounds {
            config.rounds = n as usize;
        }
        if let Some(n) = self.state_rows {
            config.state_rows = n;
        }
        if let Some(modes) = &self.modes {
            config.modes = durability::MODES
                .into_iter()
                .filter(|m| modes.iter().any(|x| x == m))
                .collect();
        }
        config.recovery = !self.no_recovery;
        config
    }
}

#[derive(Args, Debug)]
struct IpcArgs {
    /// Partitions of the started tabosd (mailboxes spread over them). Default: 1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    partitions: Option<u32>,

    /// Message sizes in bytes of ping-pong and ping20-pong20, comma-separated.
    /// Default: 64,1024,8192 (--quick: 64 and 8192 ping-pong, 64 ping20-pong20).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(8..=1_000_000))]
    sizes: Option<Vec<u64>>,

    /// Concurrent sender/receiver pairs, comma-separated. Default: 1,2,4 (--quick: 1).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=256))]
    pairs: Option<Vec<u64>>,

    /// Receivers of the multicast runs, comma-separated. Default: 1,10,40 (--quick:
    /// 1,10).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=1000))]
    receivers: Option<Vec<u64>>,

    /// Seconds of each run (after an untimed tenth). Default: 2 (--quick: 0.3).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    seconds_per_run: Option<f64>,

    /// Cores of the sender/receiver threads, comma-separated: thread i on the i-th,
    /// wrapping (a pair's sender is thread 2k, its receiver 2k+1; the multicast sender
    /// is thread 0), the baselines' receivers (servers) included. Default: tabos's
    /// threads all on --client-core; the baselines' senders there too and their
    /// receivers on --server-core.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    thread_cores: Option<Vec<usize>>,

    /// Systems measured in every cell, comma-separated: tabos-shm, tabos-tcp, grpc,
    /// tcp-blocking, tcp-busypoll. Default: all.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_ipc_system)]
    systems: Option<Vec<ipc::System>>,
}

fn parse_ipc_system(text: &str) -> Result<ipc::System, String> {
    ipc::System::parse(text).ok_or_else(|| {
        format!(
            "`{text}` is not a system: tabos-shm, tabos-tcp, grpc, tcp-blocking or tcp-busypoll"
        )
    })
}

#[derive(Args, Debug)]
struct SqlArgs {
    /// Files of the table-2 directory. Default: 4000 (--quick: 200).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    du_files: Option<u64>,

    /// Rows of the kv table the stall phase scans. Default: 200000 (--quick: 5000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    scan_rows: Option<u64>,

    /// Rows per sql_scan chunk, one stall measurement each (1..=4096). Default:
    /// 256,4096 (--quick: 256).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=4096))]
    chunk_rows: Option<Vec<u32>>,

    /// Seconds each measurement runs. Default: 3 (--quick: 0.3).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    seconds_per_run: Option<f64>,

    /// Directory for the ext4 baseline's files. Default: the system temporary
    /// directory.
    #[arg(long, value_name = "DIR")]
    baseline_dir: Option<PathBuf>,
}

impl SqlArgs {
    fn config(&self, quick: bool) -> SqlConfig {
        let mut config = if quick {
            SqlConfig::quick()
        } else {
            SqlConfig::full()
        };
        if let Some(n) = self.du_files {
            config.du_files = n as usize;
        }
        if let Some(n) = self.scan_rows {
            config.scan_rows = n as usize;
        }
        if let Some(list) = &self.chunk_rows {
            config.chunk_rows = list.clone();
        }
        if let Some(s) = self.seconds_per_run {
            config.per_run = Duration::from_secs_f64(s);
        }
        if let Some(dir) = &self.baseline_dir {
            config.baseline_dir = Some(dir.clone());
        }
        config
    }
}

#[derive(Args, Debug)]
struct FsArgs {
    /// Partitions of the started tabosd (users' homes spread over them). Default: 1.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=64))]
    partitions: Option<u32>,

    /// Users, each with its own files. Default: 4 (--quick: 2).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    users: Option<u64>,

    /// Files of 256 KiB per user. Default: 100 (--quick: 10).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=100_000))]
    files_per_user: Option<u64>,

    /// Client thread counts, comma-separated; thread i works as user i % users.
    /// Default: 1,4 (--quick: 2).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=256))]
    clients: Option<Vec<u64>>,

    /// Seconds of each block run and each du run (after an untimed tenth). Default: 3
    /// (--quick: 0.3).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    seconds_per_run: Option<f64>,

    /// Files each client creates and deletes. Default: 20000 (--quick: 200).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    creates_per_client: Option<u64>,

    /// Files in the du directory. Default: 4000 (--quick: 400).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    du_files: Option<u64>,

    /// Leave out the Linux filesystem baseline. Default: measured.
    #[arg(long)]
    no_baseline: bool,

    /// Leave out the PostgreSQL baseline of file create and delete (a private server
    /// on 127.0.0.1, installed with scripts/install-postgres.sh when missing).
    /// Default: measured.
    #[arg(long)]
    no_postgres: bool,

    /// Directory in which the baseline's fresh directory is made (and removed).
    /// Default: the directory of this executable (under the cargo target directory,
    /// not /tmp, which may be a tmpfs).
    #[arg(long, value_name = "DIR")]
    baseline_dir: Option<PathBuf>,
}

fn parse_policy(text: &str) -> Result<Policy, String> {
    Policy::ALL
        .into_iter()
        .find(|p| p.name() == text)
        .ok_or_else(|| format!("`{text}` is not a policy: fifo, least-loaded or locality"))
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of tasks per second"))?;
    if !(1.0..=1e9).contains(&rate) {
        return Err(format!("{rate} tasks/s is outside 1..=1e9"));
    }
    Ok(rate)
}

fn to_usizes(list: &[u64]) -> Vec<usize> {
    list.iter().map(|n| *n as usize).collect()
}

#[derive(Args, Debug)]
struct InvokeArgs {
    /// Timed sequential null calls of each tabos transport. Default: 2000000 over
    /// shared memory, 200000 over TCP (--quick: 20000 and 5000).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    calls: Option<u64>,

    /// Pipeline depths (calls kept in flight), comma-separated. Default: 1,8,64.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=4096))]
    depths: Option<Vec<u64>>,

    /// Seconds each pipeline depth is timed (after an untimed warm-up of a fifth of
    /// that). Default: 5 (--quick: 0.2).
    #[arg(long, value_name = "SECONDS", value_parser = parse_seconds)]
    seconds_per_depth: Option<f64>,

    /// How tabos is reached, comma-separated: shm (shared-memory rings), tcp (the
    /// started tabosd's --listen address on 127.0.0.1, through its io_uring network
    /// thread). Default: shm,tcp.
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = parse_net)]
    net: Option<Vec<invoke::Net>>,
}

fn parse_net(text: &str) -> Result<invoke::Net, String> {
    invoke::Net::ALL
        .into_iter()
        .find(|n| n.name() == text)
        .ok_or_else(|| format!("`{text}` is not a transport: shm or tcp"))
}

fn parse_seconds(text: &str) -> Result<f64, String> {
    let s: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if !(0.001..=3600.0).contains(&s) {
        return Err(format!("{s} s is outside 0.001..=3600"));
    }
    Ok(s)
}

impl GlobalArgs {
    fn settings(&self) -> Result<Settings, String> {
        if self.client_core == self.server_core {
            return Err(format!(
                "--client-core and --server-core are both {}: give the client and the \
                 server their own cores",
                self.client_core
            ));
        }
        Ok(Settings {
            quick: self.quick,
            connect: self.connect.clone(),
            tabosd: self.tabosd.clone(),
            client_core: self.client_core,
            server_core: self.server_core,
            tabosd_args: self.tabosd_arg.clone(),
        })
    }
}

impl InvokeArgs {
    fn config(&self, quick: bool) -> InvokeConfig {
        let mut config = if quick {
            InvokeConfig::quick()
        } else {
            InvokeConfig::full()
        };
        if let Some(calls) = self.calls {
            config.sequential_calls = calls;
            config.tcp_sequential_calls = calls;
        }
        if let Some(depths) = &self.depths {
            config.depths = depths.iter().map(|d| *d as usize).collect();
        }
        if let Some(seconds) = self.seconds_per_depth {
            config.per_depth = Duration::from_secs_f64(seconds);
        }
        if let Some(nets) = &self.net {
            config.nets = nets.clone();
        }
        config
    }
}

impl SchedArgs {
    fn config(&self, quick: bool) -> SchedConfig {
        let mut config = if quick {
            SchedConfig::quick()
        } else {
            SchedConfig::full()
        };
        if let Some(n) = self.partitions {
            config.partitions = n;
        }
        if let Some(n) = self.workers {
            config.workers = n;
        }
        if let Some(n) = self.capacity {
            config.capacity = n;
        }
        if let Some(policies) = &self.policies {
            config.closed_policies = policies.clone();
            config.open_policies = policies.clone();
        }
        if let Some(n) = self.depth {
            config.depth = n as usize;
        }
        if let Some(s) = self.seconds_closed {
            config.closed_time = Duration::from_secs_f64(s);
        }
        if let Some(loads) = &self.loads {
            config.loads = loads.clone();
        }
        if let Some(s) = self.seconds_per_load {
            config.open_time = Duration::from_secs_f64(s);
        }
        if self.no_postgres {
            config.postgres = None;
        }
        if let Some(pg) = &mut config.postgres {
            if let Some(connections) = &self.pg_connections {
                pg.connections = to_usizes(connections);
                pg.connections.sort_unstable();
            }
            if let Some(loads) = &self.pg_loads {
                pg.loads = loads.clone();
                pg.loads.sort_by(f64::total_cmp);
            }
        }
        config
    }
}

impl IpcArgs {
    fn config(&self, quick: bool) -> IpcConfig {
        let config = if quick {
            IpcConfig::quick()
        } else {
            IpcConfig::full()
        };
        let sizes = self.sizes.as_deref().map(to_usizes);
        let pairs = self.pairs.as_deref().map(to_usizes);
        let mut config = config.with_grid(sizes.as_deref(), pairs.as_deref());
        if let Some(n) = self.partitions {
            config.partitions = n;
        }
        if let Some(receivers) = &self.receivers {
            config.multicast = to_usizes(receivers);
        }
        if let Some(s) = self.seconds_per_run {
            config.per_run = Duration::from_secs_f64(s);
        }
        if let Some(cores) = &self.thread_cores {
            config.thread_cores = Some(cores.clone());
        }
        if let Some(systems) = &self.systems {
            config.systems = systems.clone();
        }
        config
    }
}

impl FsArgs {
    fn config(&self, quick: bool) -> FsConfig {
        let mut config = if quick {
            FsConfig::quick()
        } else {
            FsConfig::full()
        };
        if let Some(n) = self.partitions {
            config.partitions = n;
        }
        if let Some(n) = self.users {
            config.users = n as usize;
        }
        if let Some(n) = self.files_per_user {
            config.files_per_user = n as usize;
        }
        if let Some(clients) = &self.clients {
            config.clients = to_usizes(clients);
        }
        if let Some(s) = self.seconds_per_run {
            config.per_run = Duration::from_secs_f64(s);
        }
        if let Some(n) = self.creates_per_client {
            config.creates_per_client = n as usize;
        }
        if let Some(n) = self.du_files {
            config.du_files = n as usize;
        }
        config.baseline = !self.no_baseline;
        config.postgres = !self.no_postgres;
        if let Some(dir) = &self.baseline_dir {
            config.baseline_dir = Some(dir.clone());
        }
        config
    }
}

fn run(cli: &Cli, settings: &Settings) -> Result<(Vec<Record>, Vec<String>), Error> {
    match &cli.workload {
        Workload::Invoke(args) => {
            let records = invoke::run(settings, &args.config(settings.quick))?;
            let ratios = invoke::ratios(&records);
            Ok((records, ratios))
        }
        Workload::Sched(args) => {
            let records = sched::run(settings, &args.config(settings.quick))?;
            let summary = sched::summary(&records);
            Ok((records, summary))
        }
        Workload::Ipc(args) => {
            let records = ipc::run(settings, &args.config(settings.quick))?;
            let ratios = ipc::ratios(&records);
            Ok((records, ratios))
        }
        Workload::Fs(args) => {
            let records = fs::run(settings, &args.config(settings.quick))?;
            let ratios = fs::ratios(&records);
            Ok((records, ratios))
        }
        Workload::Sql(args) => {
            let records = sql::run(settings, &args.config(settings.quick))?;
            let ratios = sql::ratios(&records);
            Ok((records, ratios))
        }
        Workload::Pfs => Ok((
            pfs::run(settings, &PfsConfig::new(settings.quick))?,
            Vec::new(),
        )),
        Workload::Durability(args) => {
            let records = durability::run(settings, &args.config(settings.quick))?;
            let summary = durability::summary(&records);
            Ok((records, summary))
        }
        Workload::All => run_all(settings),
    }
}

/// Every workload with its default settings, one after the other.
fn run_all(settings: &Settings) -> Result<(Vec<Record>, Vec<String>), Error> {
    let mut records = Vec::new();
    let mut lines = Vec::new();
    for name in ["invoke", "sched", "ipc", "fs", "sql", "durability"] {
        eprintln!("[all] {name}");
        let cli = Cli::parse_from(["tabos-bench", name]);
        let (r, l) = run(&cli, settings)?;
        records.extend(r);
        lines.extend(l);
    }
    eprintln!("[all] pfs");
    records.extend(pfs::run(settings, &PfsConfig::new(settings.quick))?);
    Ok((records, lines))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match cli.global.settings() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tabos-bench: {e}");
            return ExitCode::from(2);
        }
    };
    println!("machine: {}", Machine::detect());
    println!(
        "cores: client {}, server {}{}",
        settings.client_core,
        settings.server_core,
        if settings.quick {
            " (--quick: smoke-test sizes, not for reports)"
        } else {
            ""
        }
    );
    if !settings.tabosd_args.is_empty() {
        println!("tabosd flags: {}", settings.tabosd_args.join(" "));
    }
    let (records, ratios) = match run(&cli, &settings) {
        Ok(out) => out,
        Err(e) => {
            eprintln!("tabos-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!();
    print!("{}", report::markdown_table(&records));
    if !ratios.is_empty() {
        println!();
        for line in &ratios {
            println!("- {line}");
        }
    }
    if let Some(dir) = &cli.global.plots {
        match plot::write_all(dir, &records) {
            Ok(files) => eprintln!(
                "tabos-bench: drew {} charts in {}",
                files.len(),
                dir.display()
            ),
            Err(e) => {
                eprintln!("tabos-bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &cli.global.json {
        if let Err(e) = report::write_json(path, &records) {
            eprintln!("tabos-bench: {e}");
            return ExitCode::FAILURE;
        }
        eprintln!(
            "tabos-bench: wrote {} records to {}",
            records.len(),
            path.display()
        );
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = Cli::parse_from(["tabos-bench", "invoke", "--quick", "--json", "x.json"]);
        assert!(cli.global.quick);
        assert_eq!(cli.global.json, Some(PathBuf::from("x.json")));
        let Workload::Invoke(args) = &cli.workload else {
            panic!("parsed as invoke");
        };
        assert_eq!(args.config(true), InvokeConfig::quick());
    }

    #[test]
    fn subcommand_flags_override_the_configurations() {
        let cli = Cli::parse_from([
            "tabos-bench",
            "sched",
            "--quick",
            "--policies",
            "fifo,least-loaded",
            "--loads",
            "1000,2000",
        ]);
        let Workload::Sched(args) = &cli.workload else {
            panic!("parsed as sched");
        };
        let config = args.config(cli.global.quick);
        assert_eq!(
            config.open_policies,
            vec![Policy::Fifo, Policy::LeastLoaded]
        );
        assert_eq!(config.loads, vec![1000.0, 2000.0]);
        assert_eq!(args.config(false).workers, SchedConfig::full().workers);
        assert!(args.config(false).postgres.is_some());
        let cli = Cli::parse_from([
            "tabos-bench",
            "sched",
            "--pg-connections",
            "8,2",
            "--pg-loads",
            "3000,1000",
        ]);
        let Workload::Sched(args) = &cli.workload else {
            panic!("parsed as sched");
        };
        let pg = args.config(false).postgres.expect("measured by default");
        assert_eq!(
            (pg.connections, pg.loads),
            (vec![2, 8], vec![1000.0, 3000.0])
        );
        let cli = Cli::parse_from(["tabos-bench", "sched", "--no-postgres", "--pg-loads", "5"]);
        let Workload::Sched(args) = &cli.workload else {
            panic!("parsed as sched");
        };
        assert_eq!(args.config(true).postgres, None);
        assert!(Cli::try_parse_from(["tabos-bench", "sched", "--policies", "lifo"]).is_err());

        let cli = Cli::parse_from(["tabos-bench", "ipc", "--sizes", "64", "--receivers", "3"]);
        let Workload::Ipc(args) = &cli.workload else {
            panic!("parsed as ipc");
        };
        let config = args.config(false);
        assert_eq!(config.pingpong, vec![(64, 1), (64, 2), (64, 4)]);
        assert_eq!(config.multicast, vec![3]);
        assert_eq!(config.systems, ipc::System::ALL.to_vec());
        let cli = Cli::parse_from(["tabos-bench", "ipc", "--systems", "tabos-tcp,grpc"]);
        let Workload::Ipc(args) = &cli.workload else {
            panic!("parsed as ipc");
        };
        assert_eq!(
            args.config(false).systems,
            vec![ipc::System::TabosTcp, ipc::System::Grpc]
        );
        assert!(Cli::try_parse_from(["tabos-bench", "ipc", "--systems", "zeromq"]).is_err());
        let cli = Cli::parse_from(["tabos-bench", "invoke", "--net", "tcp"]);
        let Workload::Invoke(args) = &cli.workload else {
            panic!("parsed as invoke");
        };
        assert_eq!(args.config(false).nets, vec![invoke::Net::Tcp]);

        let cli = Cli::parse_from(["tabos-bench", "fs", "--quick", "--no-baseline"]);
        let Workload::Fs(args) = &cli.workload else {
            panic!("parsed as fs");
        };
        let config = args.config(true);
        assert!(!config.baseline);
        assert!(config.postgres);
        let cli = Cli::parse_from(["tabos-bench", "fs", "--no-postgres"]);
        let Workload::Fs(args) = &cli.workload else {
            panic!("parsed as fs");
        };
        assert!(!args.config(false).postgres && args.config(false).baseline);
        assert_eq!(config.users, FsConfig::quick().users);
    }

    #[test]
    fn same_core_for_both_sides_is_refused() {
        let cli = Cli::parse_from(["tabos-bench", "--client-core", "1", "invoke"]);
        assert!(cli.global.settings().is_err());
        assert!(Cli::try_parse_from(["tabos-bench", "invoke", "--depths", "0"]).is_err());
    }
}
