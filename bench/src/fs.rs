//! Workload `fs`: the localized filesystem of paper §4.4 (figures 10a and 10b,
//! tables 1 and 2), each against the Linux filesystem of the benchmark directory
//! (`ext4`, see [`crate::baseline::ext4`]) in the same run unless `--no-baseline`.
//!
//! Set-up: `users` users, each with `files_per_user` files of `file_bytes` (256 KiB:
//! 128 blocks of 2 KiB). Client thread `i` works as user `i % users`, each thread with
//! its own [`Client`] on the client core; the ext4 threads alternate between the
//! client and the server core (tabos uses both: clients on one, the partition on the
//! other).
//!
//! - `fs-10a`: pick a random file of the user, then read or write (50/50) 20 random
//!   distinct blocks of it: tabos with one `read_blocks` / `write_blocks` call, ext4
//!   with open, 20 pread/pwrite, close. Open is no call in tabos (a no-op: every call
//!   names its file), so none is made.
//! - `fs-10b`: one random block in each of 20 distinct random files of the user (fewer
//!   when the user has fewer files): tabos with one `read_block_each` /
//!   `write_block_each` call per home partition, ext4 with open, pread/pwrite, close
//!   per file.
//!
//!   Both report per operation (20 blocks) latency and blocks/s, for reads, writes,
//!   and both together (`op`: `read`, `write`, `mixed`).
//! - `fs-create` / `fs-delete` (table 1): each thread creates `creates_per_client`
//!   empty files in its own directory, one call at a time (the API has no pipelined
//!   create), then deletes them. tabos is measured twice for create: the `create`
//!   procedure alone (one call: the paper's single insert), and `Fs::create` (which
//!   also stats the new file to return its handle: two calls).
//! - `fs-du` (table 2): total size of the files of at least `du_min_bytes` in a
//!   directory of `du_files` files: one `du` call against a readdir + stat walk. Every
//!   answer is checked against the sizes the set-up wrote.
//!
//! Table 1 is also measured on PostgreSQL (the paper's VoltDB;
//! [`crate::baseline::postgres`]) after tabosd has stopped, unless `postgres` is off:
//! the same threads (all on the client core, one connection each) create and delete
//! their files with the PL/pgSQL functions `create_file` and `delete_file` (fully
//! qualified names, as tabos: one parent lookup and one insert or delete), through
//! prepared statements. System `postgres` commits with `synchronous_commit=off`;
//! `postgres-sync` (on, waiting for each commit's WAL fsync) does a twentieth of the
//! files.

use crate::baseline::ext4::{self, BaselineDir};
use crate::baseline::postgres::{Commit, PgFs, PgServer};
use crate::measure::{self, Latencies};
use crate::report::{self, params, Record};
use crate::server::{Layout, Target};
use crate::{Error, Settings};
use rand::rngs::StdRng;
use rand::seq::index::sample;
use rand::{Rng, SeedableRng};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::sync::Barrier;
use std::time::{Duration, Instant};
use tabos_client::fs::{Fs, FILE_MODE};
use tabos_client::Client;
use tabos_procs::fs::ids;
use tabos_procs::fs::wire::args;

/// System name of tabos over shared memory.
pub const SYSTEM: &str = crate::invoke::SYSTEM_TABOS_SHM;
/// Seed of the file and block choices (runs are repeatable).
const SEED: u64 = 0xf11e_5eed;
/// `postgres-sync` creates and deletes this fraction of `creates_per_client` (each
/// commit waits for a WAL fsync, milliseconds on a disk).
const PG_SYNC_FILES_DIVISOR: usize = 20;

/// How much of each phase to run.
#[derive(Debug, Clone, PartialEq)]
pub struct FsConfig {
    /// Partitions of a started tabosd.
    pub partitions: u32,
    /// Users, each with its own files.
    pub users: usize,
    /// Files per user.
    pub files_per_user: usize,
    /// Bytes per file (a multiple of the block size).
    pub file_bytes: usize,
    /// Blocks per operation of figures 10a and 10b.
    pub blocks_per_op: usize,
    /// Client thread counts to measure.
    pub clients: Vec<usize>,
    /// Timed duration of each block run and of each `du` run (after an untimed tenth).
    pub per_run: Duration,
    /// Files each client thread creates and deletes (table 1).
    pub creates_per_client: usize,
    /// Files in the `du` directory (table 2).
    pub du_files: usize,
    /// The `du` minimum file size (the paper's 20K).
    pub du_min_bytes: u64,
    /// Also measure the Linux filesystem.
    pub baseline: bool,
    /// Where the baseline's directory goes (`None`: beside the executable).
    pub baseline_dir: Option<PathBuf>,
    /// Also measure file create and delete on PostgreSQL.
    pub postgres: bool,
}

impl FsConfig {
    /// The configuration for reports: about a minute.
    pub fn full() -> FsConfig {
        FsConfig {
            partitions: 1,
            users: 4,
            files_per_user: 100,
            file_bytes: 256 * 1024,
            blocks_per_op: 20,
            clients: vec![1, 4],
            per_run: Duration::from_secs(3),
            creates_per_client: 20_000,
            du_files: 4000,
            du_min_bytes: 20 * 1024,
            baseline: true,
            baseline_dir: None,
            postgres: true,
        }
    }

    /// The smoke-test configuration: a few seconds.
    pub fn quick() -> FsConfig {
        FsConfig {
            users: 2,
            files_per_user: 10,
            clients: vec![2],
            per_run: Duration::from_millis(300),
            creates_per_client: 200,
            du_files: 400,
            ..FsConfig::full()
        }
    }
}

/// Run every phase against the tabosd `settings` name (and the baseline), and stop
/// that tabosd again.
pub fn run(settings: &Settings, config: &FsConfig) -> Result<Vec<Record>, Error> {
    assert!(
        config.users > 0 && config.files_per_user > 0,
        "files to use"
    );
    assert!(
        config.clients.iter().all(|c| *c > 0),
        "clients must be positive"
    );
    assert!(config.blocks_per_op > 0, "blocks_per_op must be positive");
    measure::pin_or_warn(settings.client_core, "the client thread");
    let target = Target::acquire_with(settings, &Layout::spread(settings, config.partitions))?;
    let baseline = if config.baseline {
        let dir = BaselineDir::fresh(config.baseline_dir.as_deref())?;
        eprintln!(
            "[fs] baseline directory {} ({})",
            dir.path().display(),
            dir.system()
        );
        Some(dir)
    } else {
        None
    };
    let bench = Bench::set_up(&target, settings, config, baseline.as_ref())?;
    let mut records = Vec::new();
    for figure in [Figure::A, Figure::B] {
        for &clients in &config.clients {
            records.extend(bench.blocks(Side::Tabos, figure, clients)?);
            if baseline.is_some() {
                records.extend(bench.blocks(Side::Baseline, figure, clients)?);
            }
        }
    }
    for &clients in &config.clients {
        records.extend(bench.create_delete_tabos(clients)?);
        if baseline.is_some() {
            records.extend(bench.create_delete_baseline(clients)?);
        }
    }
    records.push(bench.du_tabos()?);
    if baseline.is_some() {
        records.push(bench.du_baseline()?);
    }
    drop(bench);
    drop(baseline);
    target.finish()?;
    if config.postgres {
        // After tabosd stopped: the server core is PostgreSQL's alone.
        records.extend(create_delete_postgres(settings, config)?);
    }
    Ok(records)
}

/// Table 1 on PostgreSQL: for each client count, with `synchronous_commit` off and
/// on, each thread creates its files in its own directory, one call at a time, then
/// deletes them.
fn create_delete_postgres(settings: &Settings, config: &FsConfig) -> Result<Vec<Record>, Error> {
    let server = PgServer::start(settings.server_core)?;
    let users: Vec<String> = (0..config.users).map(|i| format!("u{i}")).collect();
    let mut admin = PgFs::new(server.connect(Commit::Async)?)?;
    for user in &users {
        admin.add_dir(&format!("/{user}"), user)?;
    }
    let mut records = Vec::new();
    for commit in [Commit::Async, Commit::Sync] {
        let n = match commit {
            Commit::Async => config.creates_per_client,
            Commit::Sync => (config.creates_per_client / PG_SYNC_FILES_DIVISOR).max(1),
        };
        let system = commit.system();
        for &clients in &config.clients {
            // (owner, directory) of each thread.
            let dirs: Vec<(&str, String)> = (0..clients)
                .map(|i| {
                    let user = &users[i % users.len()];
                    (user.as_str(), format!("/{user}/{system}_c{clients}_{i}"))
                })
                .collect();
            for (user, dir) in &dirs {
                admin.add_dir(dir, user)?;
            }
            let mut conns = server
                .connect_all(clients, commit)?
                .into_iter()
                .map(PgFs::new)
                .collect::<Result<Vec<_>, _>>()?;
            let path = |i: usize, j: usize| format!("{}/f{j}", dirs[i].1);
            let core = |_| settings.client_core;
            let record = |workload: &str, function: &str, measured: &[Measured]| {
                let api = format!("{function} PL/pgSQL function (1 prepared call)");
                let mut record = count_record(workload, system, clients, n, &api, measured);
                record.params.extend(server.params(commit));
                report::progress(&record);
                record
            };
            eprintln!("[fs-create] {system}, create_file, {clients} client(s) x {n} files");
            let created = measure::gang(&mut conns, core, |i, fs, barrier| {
                barrier.wait();
                timed_count(n, |j| fs.create_file(&path(i, j), dirs[i].0, FILE_MODE))
            })?;
            records.push(record("fs-create", "create_file", &created));
            eprintln!("[fs-delete] {system}, delete_file, {clients} client(s) x {n} files");
            let deleted = measure::gang(&mut conns, core, |i, fs, barrier| {
                barrier.wait();
                timed_count(n, |j| {
                    let size_bytes = fs.delete_file(&path(i, j), dirs[i].0)?;
                    if size_bytes != 0 {
                        return Err(Error::call(
                            format!("PostgreSQL delete_file({})", path(i, j)),
                            format!("removed {size_bytes} bytes of a file created empty"),
                        ));
                    }
                    Ok(())
                })
            })?;
            records.push(record("fs-delete", "delete_file", &deleted));
        }
    }
    drop(admin);
    server.finish()?;
    Ok(records)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Tabos,
    Baseline,
}

/// Figure 10a (blocks of one file) or 10b (one block of each of many files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Figure {
    A,
    B,
}

impl Figure {
    fn workload(self) -> &'static str {
        match self {
            Figure::A => "fs-10a",
            Figure::B => "fs-10b",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

/// What one client thread measured.
#[derive(Debug, Default)]
struct Measured {
    read: Latencies,
    write: Latencies,
    elapsed: Duration,
}

/// The set-up tree, on tabos and (if measured) on the baseline.
#[derive(Debug)]
struct Bench<'a> {
    target: &'a Target,
    settings: &'a Settings,
    config: &'a FsConfig,
    baseline: Option<&'a BaselineDir>,
    users: Vec<String>,
    block_bytes: usize,
    blocks_per_file: u64,
    /// Files of the `du` directory with their sizes.
    du_dir: String,
    du_sizes: Vec<u64>,
}

impl<'a> Bench<'a> {
    fn set_up(
        target: &'a Target,
        settings: &'a Settings,
        config: &'a FsConfig,
        baseline: Option<&'a BaselineDir>,
    ) -> Result<Bench<'a>, Error> {
        // Fresh user names, so a --connect server that ran this before still works.
        let tag = format!("tb{:08x}", Client::sched_task_id() as u32);
        let users: Vec<String> = (0..config.users).map(|i| format!("{tag}u{i}")).collect();
        let mut client = target.connect()?;
        let mut fs = client.fs();
        let block_bytes = fs
            .metadata("/")
            .map_err(|e| Error::call("stat /", e))?
            .block_bytes as usize;
        if block_bytes == 0 || !config.file_bytes.is_multiple_of(block_bytes) {
            return Err(Error::call(
                "fs set-up",
                format!(
                    "file size {} is not a multiple of the block size {block_bytes}",
                    config.file_bytes
                ),
            ));
        }
        let mut rng = StdRng::seed_from_u64(SEED);
        let du_sizes: Vec<u64> = (0..config.du_files)
            .map(|_| rng.gen_range(1..=2 * config.du_min_bytes.max(1)))
            .collect();
        let bench = Bench {
            target,
            settings,
            config,
            baseline,
            du_dir: format!("/{}/du", users[0]),
            users,
            block_bytes,
            blocks_per_file: (config.file_bytes / block_bytes) as u64,
            du_sizes,
        };
        eprintln!(
            "[fs] set-up: {} users x {} files of {} KiB ({} B blocks), du directory of {} files",
            config.users,
            config.files_per_user,
            config.file_bytes / 1024,
            block_bytes,
            config.du_files
        );
        let content: Vec<u8> = (0..config.file_bytes).map(|i| (i % 251) as u8).collect();
        let fail = |doing: &str, path: &str, e: tabos_client::Error| {
            Error::call(format!("{doing} {path}"), e)
        };
        for user in &bench.users {
            fs.useradd(user).map_err(|e| fail("useradd", user, e))?;
            for j in 0..config.files_per_user {
                let path = bench.file(user, j);
                fs.create(&path, false)
                    .map_err(|e| fail("create", &path, e))?;
                fs.write_at(&path, 0, &content)
                    .map_err(|e| fail("write", &path, e))?;
            }
            let probe = bench.file(user, config.files_per_user - 1);
            let size = fs.metadata(&probe).map_err(|e| fail("stat", &probe, e))?;
            if size.size_bytes != config.file_bytes as u64 {
                return Err(Error::call(
                    format!("set-up of {probe}"),
                    format!("{} bytes, wrote {}", size.size_bytes, config.file_bytes),
                ));
            }
        }
        fs.mkdir(&bench.du_dir)
            .map_err(|e| fail("mkdir", &bench.du_dir, e))?;
        for (j, size) in bench.du_sizes.iter().enumerate() {
            let path = format!("{}/f{j}", bench.du_dir);
            fs.create(&path, false)
                .map_err(|e| fail("create", &path, e))?;
            fs.write_at(&path, size - 1, &[1])
                .map_err(|e| fail("write", &path, e))?;
        }
        if let Some(dir) = baseline {
            bench.set_up_baseline(dir, &content)?;
        }
        Ok(bench)
    }

    fn set_up_baseline(&self, dir: &BaselineDir, content: &[u8]) -> Result<(), Error> {
        for user in &self.users {
            ext4::mkdir(&dir.path().join(user))?;
            for j in 0..self.config.files_per_user {
                ext4::write_file(&self.baseline_path(&self.file(user, j)), content)?;
            }
        }
        let du_dir = self.baseline_path(&self.du_dir);
        ext4::mkdir(&du_dir)?;
        for (j, size) in self.du_sizes.iter().enumerate() {
            let path = du_dir.join(format!("f{j}"));
            let file = std::fs::File::create(&path)
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
            file.set_len(*size)
                .map_err(|e| Error::io(format!("sizing {}", path.display()), e))?;
        }
        Ok(())
    }

    /// The tabos path of file `j` of `user`.
    fn file(&self, user: &str, j: usize) -> String {
        format!("/{user}/f{j}")
    }

    /// Where tabos path `path` lives in the baseline directory.
    fn baseline_path(&self, path: &str) -> PathBuf {
        let dir = self.baseline.expect("the baseline is measured");
        dir.path().join(path.trim_start_matches('/'))
    }

    fn system(&self, side: Side) -> String {
        match side {
            Side::Tabos => SYSTEM.to_string(),
            Side::Baseline => self.baseline.expect("the baseline is measured").system(),
        }
    }

    /// Thread `i`'s core: tabos clients all on the client core; baseline threads
    /// alternate between the client and the server core.
    fn core_of(&self, side: Side, i: usize) -> usize {
        match side {
            Side::Tabos => self.settings.client_core,
            Side::Baseline if i.is_multiple_of(2) => self.settings.client_core,
            Side::Baseline => self.settings.server_core,
        }
    }

    fn connect(&self, count: usize) -> Result<Vec<Client>, Error> {
        (0..count).map(|_| self.target.connect()).collect()
    }

    /// Choose the next operation of `figure`: read or write, and `(file, block)` pairs.
    fn pick(&self, figure: Figure, rng: &mut StdRng) -> (Op, Vec<(usize, u64)>) {
        let op = if rng.gen_bool(0.5) {
            Op::Read
        } else {
            Op::Write
        };
        let files = self.config.files_per_user;
        let blocks = match figure {
            Figure::A => {
                let file = rng.gen_range(0..files);
                let n = self.blocks_per_op(figure);
                sample(rng, self.blocks_per_file as usize, n)
                    .into_iter()
                    .map(|b| (file, b as u64))
                    .collect()
            }
            Figure::B => sample(rng, files, self.blocks_per_op(figure))
                .into_iter()
                .map(|f| (f, rng.gen_range(0..self.blocks_per_file)))
                .collect(),
        };
        (op, blocks)
    }

    /// Blocks per operation: distinct blocks of one file (10a), or one block of each
    /// of that many distinct files (10b).
    fn blocks_per_op(&self, figure: Figure) -> usize {
        let limit = match figure {
            Figure::A => self.blocks_per_file as usize,
            Figure::B => self.config.files_per_user,
        };
        self.config.blocks_per_op.min(limit)
    }

    /// One figure-10 run with `clients` threads: records for reads, writes, both.
    fn blocks(&self, side: Side, figure: Figure, clients: usize) -> Result<Vec<Record>, Error> {
        let system = self.system(side);
        eprintln!(
            "[{}] {system}, {clients} client(s): {:.1} s",
            figure.workload(),
            self.config.per_run.as_secs_f64()
        );
        let per_run = self.config.per_run;
        let measured = match side {
            Side::Tabos => {
                let mut clients = self.connect(clients)?;
                measure::gang(
                    &mut clients,
                    |i| self.core_of(side, i),
                    |i, client, barrier| {
                        let user = &self.users[i % self.users.len()];
                        let mut op = TabosOps::new(self, client, user);
                        timed_ops(barrier, per_run, SEED + i as u64, |rng| {
                            let (kind, blocks) = self.pick(figure, rng);
                            op.run(figure, kind, &blocks)?;
                            Ok(kind)
                        })
                    },
                )?
            }
            Side::Baseline => {
                let mut states: Vec<Vec<u8>> = vec![vec![0u8; self.block_bytes]; clients];
                measure::gang(
                    &mut states,
                    |i| self.core_of(side, i),
                    |i, buf, barrier| {
                        let user = &self.users[i % self.users.len()];
                        let data = vec![0xb1u8; self.block_bytes];
                        timed_ops(barrier, per_run, SEED + i as u64, |rng| {
                            let (kind, blocks) = self.pick(figure, rng);
                            self.baseline_op(figure, kind, user, &blocks, &data, buf)?;
                            Ok(kind)
                        })
                    },
                )?
            }
        };
        let mut read = Latencies::new();
        let mut write = Latencies::new();
        let mut elapsed = Duration::ZERO;
        for m in &measured {
            read.merge(&m.read);
            write.merge(&m.write);
            elapsed = elapsed.max(m.elapsed);
        }
        let mut mixed = read.clone();
        mixed.merge(&write);
        let per_op = self.blocks_per_op(figure) as f64;
        let api = match (side, figure) {
            (Side::Tabos, Figure::A) => "read_blocks / write_blocks (1 call per op)",
            (Side::Tabos, Figure::B) => {
                "read_block_each / write_block_each (1 call per home partition)"
            }
            (Side::Baseline, Figure::A) => "open, pread/pwrite per block, close",
            (Side::Baseline, Figure::B) => "open, pread/pwrite, close per file",
        };
        let mut records = Vec::new();
        for (op, lat) in [("read", &read), ("write", &write), ("mixed", &mixed)] {
            let mut p = self.block_params(figure, clients, op, api);
            p.insert("ops".into(), lat.count().into());
            let record = Record::from_latencies(
                figure.workload(),
                &system,
                p,
                lat,
                Some(lat.count() as f64 * per_op / elapsed.as_secs_f64()),
            );
            if op == "mixed" {
                report::progress(&record);
            }
            records.push(record);
        }
        Ok(records)
    }

    fn block_params(
        &self,
        figure: Figure,
        clients: usize,
        op: &str,
        api: &str,
    ) -> Map<String, Value> {
        params([
            ("op", op.into()),
            ("clients", clients.into()),
            ("users", self.config.users.into()),
            ("files_per_user", self.config.files_per_user.into()),
            ("file_bytes", self.config.file_bytes.into()),
            ("block_bytes", self.block_bytes.into()),
            ("blocks_per_op", self.blocks_per_op(figure).into()),
            ("seconds", self.config.per_run.as_secs_f64().into()),
            ("api", api.into()),
            ("throughput", "blocks/s".into()),
            ("latency", "one op (all its blocks)".into()),
        ])
    }

    /// One operation on the baseline: open, pread/pwrite, close per file.
    fn baseline_op(
        &self,
        figure: Figure,
        op: Op,
        user: &str,
        blocks: &[(usize, u64)],
        data: &[u8],
        buf: &mut [u8],
    ) -> Result<(), Error> {
        let path = |f: usize| self.baseline_path(&self.file(user, f));
        match figure {
            Figure::A => {
                let file = path(blocks[0].0);
                let nos: Vec<u64> = blocks.iter().map(|(_, b)| *b).collect();
                match op {
                    Op::Read => ext4::read_blocks(&file, &nos, buf),
                    Op::Write => ext4::write_blocks(&file, &nos, data),
                }
            }
            Figure::B => {
                for (f, b) in blocks {
                    match op {
                        Op::Read => ext4::read_blocks(&path(*f), &[*b], buf)?,
                        Op::Write => ext4::write_blocks(&path(*f), &[*b], data)?,
                    }
                }
                Ok(())
            }
        }
    }

    /// Table 1 on tabos with `clients` threads: the `create` procedure, `Fs::unlink`,
    /// and `Fs::create`.
    fn create_delete_tabos(&self, clients: usize) -> Result<Vec<Record>, Error> {
        let n = self.config.creates_per_client;
        let mut conns = self.connect(clients)?;
        let dirs: Vec<String> = (0..clients)
            .map(|i| format!("/{}/c{clients}_{i}", self.users[i % self.users.len()]))
            .collect();
        {
            let mut fs = conns[0].fs();
            for dir in &dirs {
                fs.mkdir(dir)
                    .map_err(|e| Error::call(format!("mkdir {dir}"), e))?;
            }
        }
        let path = |i: usize, j: usize| format!("{}/f{j}", dirs[i]);
        let core = |i| self.core_of(Side::Tabos, i);
        let mut records = Vec::new();

        eprintln!("[fs-create] {SYSTEM}, create procedure, {clients} client(s) x {n} files");
        let created = measure::gang(&mut conns, core, |i, client, barrier| {
            barrier.wait();
            let user = &self.users[i % self.users.len()];
            let home = client.partition_for_key(user.as_bytes());
            timed_count(n, |j| {
                let a = args::create(&path(i, j), false, FILE_MODE);
                client
                    .call(ids::CREATE, home, &a)
                    .map(drop)
                    .map_err(|e| Error::call(format!("create {}", path(i, j)), e))
            })
        })?;
        records.push(self.count_record(
            "fs-create",
            Side::Tabos,
            clients,
            "create procedure (1 call)",
            &created,
        ));

        eprintln!("[fs-delete] {SYSTEM}, Fs::unlink, {clients} client(s) x {n} files");
        let deleted = measure::gang(&mut conns, core, |i, client, barrier| {
            barrier.wait();
            let mut fs = client.fs();
            fs.metadata(&dirs[i])
                .map_err(|e| Error::call(format!("stat {}", dirs[i]), e))?;
            timed_count(n, |j| {
                fs.unlink(&path(i, j))
                    .map_err(|e| Error::call(format!("unlink {}", path(i, j)), e))
            })
        })?;
        records.push(self.count_record(
            "fs-delete",
            Side::Tabos,
            clients,
            "Fs::unlink (1 call)",
            &deleted,
        ));

        eprintln!("[fs-create] {SYSTEM}, Fs::create, {clients} client(s) x {n} files");
        let created = measure::gang(&mut conns, core, |i, client, barrier| {
            barrier.wait();
            let mut fs = client.fs();
            fs.metadata(&dirs[i])
                .map_err(|e| Error::call(format!("stat {}", dirs[i]), e))?;
            let out = timed_count(n, |j| {
                fs.create(&path(i, j), false)
                    .map(drop)
                    .map_err(|e| Error::call(format!("create {}", path(i, j)), e))
            })?;
            for j in 0..n {
                fs.unlink(&path(i, j))
                    .map_err(|e| Error::call(format!("unlink {}", path(i, j)), e))?;
            }
            Ok(out)
        })?;
        records.push(self.count_record(
            "fs-create",
            Side::Tabos,
            clients,
            "Fs::create (create + stat: 2 calls)",
            &created,
        ));
        Ok(records)
    }

    /// Table 1 on the baseline with `clients` threads.
    fn create_delete_baseline(&self, clients: usize) -> Result<Vec<Record>, Error> {
        let n = self.config.creates_per_client;
        let system = self.system(Side::Baseline);
        let mut dirs: Vec<PathBuf> = (0..clients)
            .map(|i| {
                let user = &self.users[i % self.users.len()];
                self.baseline_path(&format!("/{user}/c{clients}_{i}"))
            })
            .collect();
        for dir in &dirs {
            ext4::mkdir(dir)?;
        }
        let core = |i| self.core_of(Side::Baseline, i);
        eprintln!("[fs-create] {system}, creat + close, {clients} client(s) x {n} files");
        let created = measure::gang(&mut dirs, core, |_, dir, barrier| {
            barrier.wait();
            timed_count(n, |j| ext4::create(&dir.join(format!("f{j}"))))
        })?;
        let created = self.count_record(
            "fs-create",
            Side::Baseline,
            clients,
            "open(O_CREAT|O_EXCL) + close",
            &created,
        );
        eprintln!("[fs-delete] {system}, unlink, {clients} client(s) x {n} files");
        let deleted = measure::gang(&mut dirs, core, |_, dir, barrier| {
            barrier.wait();
            timed_count(n, |j| ext4::unlink(&dir.join(format!("f{j}"))))
        })?;
        let deleted = self.count_record("fs-delete", Side::Baseline, clients, "unlink", &deleted);
        Ok(vec![created, deleted])
    }

    fn count_record(
        &self,
        workload: &str,
        side: Side,
        clients: usize,
        api: &str,
        measured: &[Measured],
    ) -> Record {
        let n = self.config.creates_per_client;
        let record = count_record(workload, &self.system(side), clients, n, api, measured);
        report::progress(&record);
        record
    }

    /// The expected `du` answer: (total bytes, files) of at least the minimum.
    fn du_expected(&self) -> (u64, u64) {
        let big = self
            .du_sizes
            .iter()
            .filter(|s| **s >= self.config.du_min_bytes);
        (big.clone().sum(), big.count() as u64)
    }

    /// Table 2 on tabos: one `du` call at a time.
    fn du_tabos(&self) -> Result<Record, Error> {
        let min = self.config.du_min_bytes;
        eprintln!(
            "[fs-du] {SYSTEM}, du over {} files (min {min} B): {:.1} s",
            self.config.du_files,
            self.config.per_run.as_secs_f64()
        );
        let expected = self.du_expected();
        let mut client = self.target.connect()?;
        let mut fs = client.fs();
        let lat = crate::measure::timed_calls(self.config.per_run, || {
            let du = fs
                .du(&self.du_dir, min)
                .map_err(|e| Error::call(format!("du {}", self.du_dir), e))?;
            check_du((du.total_bytes, du.file_count), expected)
        })?;
        Ok(self.du_record(Side::Tabos, "du procedure (1 call)", &lat))
    }

    /// Table 2 on the baseline: a readdir + stat walk at a time.
    fn du_baseline(&self) -> Result<Record, Error> {
        let system = self.system(Side::Baseline);
        eprintln!(
            "[fs-du] {system}, readdir + stat walk over {} files: {:.1} s",
            self.config.du_files,
            self.config.per_run.as_secs_f64()
        );
        let expected = self.du_expected();
        let dir = self.baseline_path(&self.du_dir);
        let lat = crate::measure::timed_calls(self.config.per_run, || {
            check_du(ext4::du(&dir, self.config.du_min_bytes)?, expected)
        })?;
        Ok(self.du_record(Side::Baseline, "readdir + stat walk", &lat))
    }

    fn du_record(&self, side: Side, query: &str, lat: &Latencies) -> Record {
        let (total_bytes, files) = self.du_expected();
        let mean_s = lat.mean_us().unwrap_or(0.0) / 1e6;
        let record = Record::from_latencies(
            "fs-du",
            &self.system(side),
            params([
                ("files", self.config.du_files.into()),
                ("min_size_bytes", self.config.du_min_bytes.into()),
                ("matching_files", files.into()),
                ("matching_bytes", total_bytes.into()),
                ("calls", lat.count().into()),
                ("query", query.into()),
                ("mean_us", lat.mean_us().map_or(Value::Null, Value::from)),
            ]),
            lat,
            (mean_s > 0.0).then(|| 1.0 / mean_s),
        );
        report::progress(&record);
        record
    }
}

/// A table-1 record: `clients` threads each ran `n` operations through `api`, timed
/// one at a time (into `write`).
fn count_record(
    workload: &str,
    system: &str,
    clients: usize,
    n: usize,
    api: &str,
    measured: &[Measured],
) -> Record {
    let mut lat = Latencies::new();
    let mut elapsed = Duration::ZERO;
    for m in measured {
        lat.merge(&m.write);
        elapsed = elapsed.max(m.elapsed);
    }
    Record::from_latencies(
        workload,
        system,
        params([
            ("clients", clients.into()),
            ("files_per_client", n.into()),
            ("api", api.into()),
            ("pipelined", false.into()),
            ("mean_us", lat.mean_us().map_or(Value::Null, Value::from)),
        ]),
        &lat,
        Some(lat.count() as f64 / elapsed.as_secs_f64()),
    )
}

/// Lines comparing tabos with each baseline of the same run (ext4, PostgreSQL):
/// throughput ratios of the mixed block runs, create (the procedure), delete and du.
pub fn ratios(records: &[Record]) -> Vec<String> {
    let is_tabos = |r: &&Record| r.system == SYSTEM;
    let mut lines = Vec::new();
    for tabos in records.iter().filter(is_tabos) {
        let op = tabos.params.get("op").and_then(Value::as_str);
        let api = tabos
            .params
            .get("api")
            .and_then(Value::as_str)
            .unwrap_or("");
        let wanted = match tabos.workload.as_str() {
            "fs-10a" | "fs-10b" => op == Some("mixed"),
            "fs-create" => api.starts_with("create procedure"),
            "fs-delete" | "fs-du" => true,
            _ => false,
        };
        if !wanted {
            continue;
        }
        let same = |r: &&Record| {
            r.system != SYSTEM
                && r.workload == tabos.workload
                && r.params.get("op") == tabos.params.get("op")
                && r.params.get("clients") == tabos.params.get("clients")
        };
        for base in records.iter().filter(same) {
            let (Some(t), Some(b)) = (tabos.ops_per_s, base.ops_per_s) else {
                continue;
            };
            let clients = tabos
                .params
                .get("clients")
                .map_or(String::new(), |c| format!(", {c} client(s)"));
            let unit = tabos
                .params
                .get("throughput")
                .and_then(Value::as_str)
                .unwrap_or("ops/s");
            lines.push(format!(
                "{}{clients}: tabos / {} throughput = {:.2} ({t:.0} vs {b:.0} {unit}; p50 {:.1} vs {:.1} µs)",
                tabos.workload,
                base.system,
                t / b,
                tabos.p50_us.unwrap_or(0.0),
                base.p50_us.unwrap_or(0.0)
            ));
        }
    }
    lines
}

fn check_du(got: (u64, u64), expected: (u64, u64)) -> Result<(), Error> {
    if got != expected {
        return Err(Error::call(
            "du",
            format!(
                "{} bytes in {} files, expected {} bytes in {} files",
                got.0, got.1, expected.0, expected.1
            ),
        ));
    }
    Ok(())
}

/// A thread's view of tabos for figure-10 operations.
struct TabosOps<'b, 'c> {
    bench: &'b Bench<'b>,
    fs: Fs<'c>,
    user: &'b str,
    data: Vec<u8>,
}

impl<'b, 'c> TabosOps<'b, 'c> {
    fn new(bench: &'b Bench<'b>, client: &'c mut Client, user: &'b str) -> TabosOps<'b, 'c> {
        TabosOps {
            bench,
            fs: client.fs(),
            user,
            data: vec![0xa7u8; bench.block_bytes],
        }
    }

    fn run(&mut self, figure: Figure, op: Op, blocks: &[(usize, u64)]) -> Result<(), Error> {
        let paths: Vec<String> = match figure {
            Figure::A => vec![self.bench.file(self.user, blocks[0].0)],
            Figure::B => blocks
                .iter()
                .map(|(f, _)| self.bench.file(self.user, *f))
                .collect(),
        };
        let failed = |e| Error::call(format!("{} {:?} of {}", figure.workload(), op, paths[0]), e);
        let data = &self.data[..];
        match (figure, op) {
            (Figure::A, Op::Read) => {
                let nos: Vec<u64> = blocks.iter().map(|(_, b)| *b).collect();
                let got = self.fs.read_blocks(&paths[0], &nos).map_err(failed)?;
                self.check_read(&got, blocks.len())
            }
            (Figure::A, Op::Write) => {
                let writes: Vec<(u64, &[u8])> = blocks.iter().map(|(_, b)| (*b, data)).collect();
                self.fs.write_blocks(&paths[0], &writes).map_err(failed)
            }
            (Figure::B, Op::Read) => {
                let wanted: Vec<(&str, u64)> = paths
                    .iter()
                    .zip(blocks)
                    .map(|(p, (_, b))| (p.as_str(), *b))
                    .collect();
                let got = self.fs.read_block_each(&wanted).map_err(failed)?;
                self.check_read(&got, blocks.len())
            }
            (Figure::B, Op::Write) => {
                let writes: Vec<(&str, u64, &[u8])> = paths
                    .iter()
                    .zip(blocks)
                    .map(|(p, (_, b))| (p.as_str(), *b, data))
                    .collect();
                self.fs.write_block_each(&writes).map_err(failed)
            }
        }
    }

    fn check_read(&self, got: &[Vec<u8>], blocks: usize) -> Result<(), Error> {
        let full = got.len() == blocks && got.iter().all(|b| b.len() == self.bench.block_bytes);
        if !full {
            return Err(Error::call(
                "reading blocks",
                format!(
                    "got {} blocks of sizes {:?}, expected {blocks} of {} bytes",
                    got.len(),
                    got.iter().map(Vec::len).collect::<Vec<_>>(),
                    self.bench.block_bytes
                ),
            ));
        }
        Ok(())
    }
}

/// Wait at `barrier`, run `op` untimed for a tenth of `per_run`, then timed for
/// `per_run`, each operation timed into the histogram of its kind.
fn timed_ops(
    barrier: &Barrier,
    per_run: Duration,
    seed: u64,
    mut op: impl FnMut(&mut StdRng) -> Result<Op, Error>,
) -> Result<Measured, Error> {
    let mut rng = StdRng::seed_from_u64(seed);
    barrier.wait();
    let warm_up_until = Instant::now() + per_run.mul_f64(0.1);
    while Instant::now() < warm_up_until {
        op(&mut rng)?;
    }
    let mut measured = Measured::default();
    let started = Instant::now();
    let deadline = started + per_run;
    loop {
        let start = Instant::now();
        if start >= deadline {
            break;
        }
        let kind = op(&mut rng)?;
        let latency = start.elapsed();
        match kind {
            Op::Read => measured.read.record(latency),
            Op::Write => measured.write.record(latency),
        }
    }
    measured.elapsed = started.elapsed();
    Ok(measured)
}

/// Run `op(0..n)` one at a time, each timed (into `write`).
fn timed_count(
    n: usize,
    mut op: impl FnMut(usize) -> Result<(), Error>,
) -> Result<Measured, Error> {
    let mut measured = Measured::default();
    let started = Instant::now();
    for j in 0..n {
        let start = Instant::now();
        op(j)?;
        measured.write.record(start.elapsed());
    }
    measured.elapsed = started.elapsed();
    Ok(measured)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_is_smaller_than_full() {
        let (q, f) = (FsConfig::quick(), FsConfig::full());
        assert!(q.per_run < f.per_run);
        assert!(q.du_files < f.du_files && q.files_per_user < f.files_per_user);
        assert_eq!((q.users, q.files_per_user), (2, 10));
        assert_eq!(f.du_files, 4000);
        assert_eq!(f.file_bytes % 2048, 0);
    }

    #[test]
    fn ratios_pair_tabos_with_the_baseline_of_the_same_run() {
        let rec = |system: &str, op: &str, ops: f64| Record {
            workload: "fs-10a".into(),
            system: system.into(),
            params: params([
                ("op", op.into()),
                ("clients", 1.into()),
                ("throughput", "blocks/s".into()),
            ]),
            p50_us: Some(10.0),
            p99_us: None,
            p999_us: None,
            ops_per_s: Some(ops),
        };
        let lines = ratios(&[
            rec(SYSTEM, "read", 1.0),
            rec(SYSTEM, "mixed", 300.0),
            rec("ext4", "mixed", 600.0),
        ]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("= 0.50"), "{}", lines[0]);
        assert!(lines[0].contains("blocks/s"), "{}", lines[0]);
        assert!(ratios(&[rec(SYSTEM, "mixed", 1.0)]).is_empty());
        let lines = ratios(&[
            rec(SYSTEM, "mixed", 300.0),
            rec("ext4", "mixed", 600.0),
            rec("postgres", "mixed", 3.0),
        ]);
        assert_eq!(lines.len(), 2, "one line per baseline: {lines:?}");
        assert!(
            lines[1].contains("tabos / postgres throughput = 100.00"),
            "{}",
            lines[1]
        );
    }

    #[test]
    fn du_answers_are_compared_exactly() {
        assert!(check_du((10, 2), (10, 2)).is_ok());
        assert!(check_du((10, 2), (10, 3)).is_err());
    }
}
