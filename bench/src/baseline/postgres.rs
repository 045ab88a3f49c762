//! Baseline: PostgreSQL, standing in for the paper's VoltDB. The services tabos runs
//! as compiled procedures are written here as PL/pgSQL functions (bench/sql/): the
//! scheduler's FIFO policy and `complete_task` (sched.sql, figure 2), message send and
//! receive (ipc.sql), file create and delete with fully qualified names (fs.sql), and
//! a null function (null.sql). A Rust client calls them through prepared statements
//! (`prepare` once, then `query`/`execute` with the statement: the extended query
//! protocol, one round trip per call) over loopback TCP.
//!
//! [`PgServer`] runs a private server for one workload: a fresh data directory under
//! the temporary directory, `initdb` and then `postgres` (the postmaster, our child)
//! as the `postgres` system user when we are root (PostgreSQL refuses to run as root;
//! the Debian package creates that user), listening on 127.0.0.1 on a free port only,
//! the whole server (postmaster and every backend) pinned to the server core as
//! tabosd's partition is. It is stopped (`pg_ctl stop -m fast`, the postmaster
//! reaped) and its directory removed when the guard is finished or dropped, also on
//! errors; a server that a killed run left behind (its process gone) is stopped and
//! removed by the next start. Missing binaries are installed with
//! scripts/install-postgres.sh (apt-get install postgresql), or the run fails saying
//! so.
//!
//! Settings are PostgreSQL's defaults (`initdb --locale=C`), except where it listens.
//! Each connection sets `synchronous_commit` ([`Commit`]): `off` for the `postgres`
//! system (a commit does not wait for its WAL flush: the fair comparison with tabos,
//! whose partitions do not log yet; fsync stays on and the WAL writer flushes within
//! 3 x `wal_writer_delay` = 600 ms), `on` for `postgres-sync`, measured beside it where
//! cheap to show what waiting for the disk costs.
//!
//! PostgreSQL blocks in the kernel between calls where tabos spins, so with client
//! and server on different cores each call also pays for waking an idle core (tens of
//! microseconds on a virtual machine); `invoke` measures the null call both ways.

use crate::measure::{self, Latencies};
use crate::report::{self, params, Record};
use crate::Error;
use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Config, NoTls, Statement};
use serde_json::{Map, Value};
use std::fs::File;
use std::net::TcpListener;
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// System name of PostgreSQL with `synchronous_commit=off` (the compared baseline).
pub const SYSTEM: &str = "postgres";
/// System name of PostgreSQL with `synchronous_commit=on` (its default).
pub const SYSTEM_SYNC: &str = "postgres-sync";
/// Workload names of the rows this module makes itself.
pub const WORKLOAD_INVOKE: &str = crate::invoke::WORKLOAD_NULL;
pub const WORKLOAD_PINGPONG: &str = "ipc-pingpong";

/// The PL/pgSQL of each service, loaded into every started server.
const NULL_SQL: &str = include_str!("../../sql/null.sql");
const SCHED_SQL: &str = include_str!("../../sql/sched.sql");
const IPC_SQL: &str = include_str!("../../sql/ipc.sql");
const FS_SQL: &str = include_str!("../../sql/fs.sql");
/// Run when the server binaries are missing.
const INSTALL_SCRIPT: &str = include_str!("../../../scripts/install-postgres.sh");

/// The system user that runs the server when we are root.
const SERVER_USER: &str = "postgres";
/// The database superuser `initdb` creates, which every connection logs in as.
const DB_USER: &str = "postgres";
/// How long the server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `pg_ctl` waits for the server to stop, seconds.
const PG_CTL_WAIT_S: &str = "60";
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a receiver waits for a message before the run counts as broken.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// Lines of the server log quoted when it fails to start.
const LOG_TAIL_LINES: usize = 20;

/// How a connection commits: the two `synchronous_commit` settings measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// `synchronous_commit=off`: a commit returns before its WAL reaches the disk.
    Async,
    /// `synchronous_commit=on`: a commit that wrote waits for its WAL fsync.
    Sync,
}

impl Commit {
    /// The record's system name.
    pub fn system(self) -> &'static str {
        match self {
            Commit::Async => SYSTEM,
            Commit::Sync => SYSTEM_SYNC,
        }
    }

    /// The value of `synchronous_commit`.
    pub fn setting(self) -> &'static str {
        match self {
            Commit::Async => "off",
            Commit::Sync => "on",
        }
    }
}

/// A failed PostgreSQL call while `doing` something, with the server's message,
/// SQLSTATE and detail when it sent one.
pub fn failed(doing: impl Into<String>, e: postgres::Error) -> Error {
    let why = match e.as_db_error() {
        Some(db) => format!(
            "{} {}: {}{}",
            db.severity(),
            db.code().code(),
            db.message(),
            db.detail().map_or(String::new(), |d| format!(" ({d})"))
        ),
        None => {
            // The client's own errors keep their cause (an I/O error, a type) apart.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                why.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            why
        }
    };
    Error::call(format!("PostgreSQL: {}", doing.into()), why)
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

/// The directory of the server binaries (`initdb`, `pg_ctl`, `postgres`): where
/// `pg_ctl` on PATH really lives (Debian links /usr/lib/postgresql/<version>/bin/pg_ctl
/// nowhere on PATH, but a local install may), else the newest
/// /usr/lib/postgresql/<version>/bin. `None` when PostgreSQL is not installed.
pub fn bin_dir() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path).find_map(|dir| {
            let real = dir.join("pg_ctl").canonicalize().ok()?;
            let dir = real.parent()?;
            has_server_binaries(dir).then(|| dir.to_path_buf())
        })
    });
    on_path.or_else(|| {
        std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|entry| {
                let entry = entry.ok()?;
                let version: u32 = entry.file_name().to_str()?.parse().ok()?;
                let bin = entry.path().join("bin");
                has_server_binaries(&bin).then_some((version, bin))
            })
            .max_by_key(|(version, _)| *version)
            .map(|(_, bin)| bin)
    })
}

/// The server binaries' directory, installing PostgreSQL with
/// scripts/install-postgres.sh first if it is missing.
pub fn ensure_installed() -> Result<PathBuf, Error> {
    if let Some(dir) = bin_dir() {
        return Ok(dir);
    }
    eprintln!(
        "[postgres] no PostgreSQL server (initdb, pg_ctl, postgres) on PATH or in \
         /usr/lib/postgresql/*/bin: installing it with scripts/install-postgres.sh \
         (apt-get install postgresql)"
    );
    // The script's stdout (the directory) goes to our stderr, off the report.
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| Error::io("duplicating stderr for the install script", e))?;
    let status = Command::new("bash")
        .arg("-c")
        .arg(INSTALL_SCRIPT)
        .arg("install-postgres.sh")
        .stdin(Stdio::null())
        .stdout(Stdio::from(stderr))
        .status()
        .map_err(|e| Error::io("running scripts/install-postgres.sh with bash", e))?;
    match bin_dir() {
        Some(dir) if status.success() => Ok(dir),
        _ => Err(Error::call(
            "PostgreSQL baseline",
            format!(
                "PostgreSQL is not installed and scripts/install-postgres.sh could not \
                 install it ({status}): run it as root with apt access, or leave the \
                 baseline out with --no-postgres"
            ),
        )),
    }
}

/// Whether this process runs as root (the owner of /proc/self is our effective uid).
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The uid and gid of system user `name`, from /etc/passwd.
fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        if fields.len() < 4 || fields[0] != name {
            return None;
        }
        Some((fields[2].parse().ok()?, fields[3].parse().ok()?))
    })
}

/// A free TCP port on 127.0.0.1 (free when asked; the server binds it right after).
fn free_port() -> Result<u16, Error> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .map_err(|e| Error::io("finding a free port on 127.0.0.1", e))?;
    let port = listener
        .local_addr()
        .map_err(|e| Error::io("reading a free port", e))?
        .port();
    Ok(port)
}

/// Name of a server's directory under the temporary directory, before `<pid>-<n>`.
const ROOT_PREFIX: &str = "tabos-bench-pg-";

/// Whether process `pid` runs: it has a /proc entry that is not a zombie (a killed
/// process waits there for its reaper, which may be a slow init process).
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses.
        !stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    })
}

/// Stop the servers and remove the directories that killed runs left behind: those
/// under the temporary directory whose process is gone (a run stopped by a signal
/// skips the guard's drop).
fn sweep_stale(bin: &Path, run_as: Option<(u32, u32)>) {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(ROOT_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if process_alive(pid) {
            continue;
        }
        let root = entry.path();
        let data = root.join("data");
        if data.join("postmaster.pid").exists() {
            eprintln!(
                "[postgres] stopping the server a killed run left in {}",
                root.display()
            );
            let mut stop = Command::new(bin.join("pg_ctl"));
            if let Some((uid, gid)) = run_as {
                stop.uid(uid).gid(gid);
            }
            let stop = stop
                .arg("stop")
                .arg("-D")
                .arg(&data)
                .args(["-m", "immediate", "-w", "-t", PG_CTL_WAIT_S])
                .stdin(Stdio::null())
                .output();
            if !stop.is_ok_and(|out| out.status.success()) {
                eprintln!(
                    "tabos-bench: could not stop the server in {}",
                    root.display()
                );
                continue;
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&root) {
            eprintln!("tabos-bench: cannot remove {}: {e}", root.display());
        }
    }
}

/// A private PostgreSQL server with the PL/pgSQL of every service loaded. Stopped and
/// its directory removed by [`PgServer::finish`], or by drop on any error path.
#[derive(Debug)]
pub struct PgServer {
    /// The fresh directory: `data/` (the cluster), the Unix socket and `server.log`.
    root: PathBuf,
    bin: PathBuf,
    /// Whom the server runs as, when we are root: (uid, gid) of `postgres`.
    run_as: Option<(u32, u32)>,
    port: u16,
    server_core: usize,
    /// The running postmaster, our child (so that we reap it when it stops): stop
    /// it before removing the directory.
    postmaster: Option<Child>,
    /// `SHOW server_version`.
    version: String,
}

impl PgServer {
    /// Install PostgreSQL if needed, make a fresh cluster, start it on 127.0.0.1
    /// pinned to `server_core`, and load the services' functions.
    pub fn start(server_core: usize) -> Result<PgServer, Error> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let bin = ensure_installed()?;
        let run_as = if running_as_root() {
            Some(system_user(SERVER_USER).ok_or_else(|| {
                Error::call(
                    "PostgreSQL baseline",
                    format!(
                        "we are root, which PostgreSQL refuses to run as, and there is no \
                         `{SERVER_USER}` system user to run it as (the Debian package \
                         postgresql creates it): create it, or run as another user"
                    ),
                )
            })?)
        } else {
            None
        };
        sweep_stale(&bin, run_as);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("{ROOT_PREFIX}{}-{n}", std::process::id()));
        std::fs::create_dir(&root)
            .map_err(|e| Error::io(format!("creating {}", root.display()), e))?;
        // From here on, drop removes the directory (and stops a started server).
        let mut server = PgServer {
            root,
            bin,
            run_as,
            port: 0,
            server_core,
            postmaster: None,
            version: String::new(),
        };
        server.prepare_root()?;
        let started = Instant::now();
        server.initdb()?;
        server.port = free_port()?;
        server.spawn_postmaster()?;
        let mut client = server.wait_until_ready()?;
        for (service, sql) in [
            ("null.sql", NULL_SQL),
            ("sched.sql", SCHED_SQL),
            ("ipc.sql", IPC_SQL),
            ("fs.sql", FS_SQL),
        ] {
            client
                .batch_execute(sql)
                .map_err(|e| failed(format!("loading bench/sql/{service}"), e))?;
        }
        let row = client
            .query_one("SHOW server_version", &[])
            .map_err(|e| failed("SHOW server_version", e))?;
        server.version = row.get(0);
        // A running server on a port of our own, its functions loaded.
        assert!(server.postmaster.is_some(), "the postmaster runs");
        assert_ne!(server.port, 0, "the server listens on a port of its own");
        eprintln!(
            "[postgres] PostgreSQL {} on 127.0.0.1:{}, pinned to core {server_core}, data in \
             {} (up in {:.1} s)",
            server.version,
            server.port,
            server.root.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(server)
    }

    /// Make the fresh directory private to the server's user.
    fn prepare_root(&self) -> Result<(), Error> {
        let doing = |what: &str| format!("{what} {}", self.root.display());
        std::fs::set_permissions(&self.root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(doing("chmod 700"), e))?;
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(&self.root, Some(uid), Some(gid))
                .map_err(|e| Error::io(doing(&format!("chown to {SERVER_USER}")), e))?;
        }
        Ok(())
    }

    fn data_dir(&self) -> PathBuf {
        self.root.join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.root.join("server.log")
    }

    /// A command running `program` of the server binaries as the server's user.
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(self.bin.join(program));
        if let Some((uid, gid)) = self.run_as {
            // std clears the supplementary groups when root drops to another uid.
            command.uid(uid).gid(gid);
        }
        command.env("LC_ALL", "C").stdin(Stdio::null());
        command
    }

    /// Run `command`, failing with its output when it fails.
    fn run(doing: &str, command: &mut Command) -> Result<Output, Error> {
        let output = command
            .output()
            .map_err(|e| Error::io(format!("PostgreSQL: running {doing}"), e))?;
        if !output.status.success() {
            return Err(Error::call(
                format!("PostgreSQL: {doing}"),
                format!(
                    "{}: {}{}",
                    output.status,
                    String::from_utf8_lossy(&output.stderr).trim(),
                    String::from_utf8_lossy(&output.stdout).trim()
                ),
            ));
        }
        Ok(output)
    }

    fn initdb(&self) -> Result<(), Error> {
        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(self.data_dir())
            .args(["-U", DB_USER, "--auth=trust", "--locale=C", "-E", "UTF8"])
            // The cluster is thrown away afterwards: no need to sync its files.
            .arg("--no-sync");
        PgServer::run("initdb", &mut initdb)?;
        // Listen on loopback only, the socket in our private directory.
        let conf = self.data_dir().join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf)
            .map_err(|e| Error::io(format!("reading {}", conf.display()), e))?;
        text.push_str(&format!(
            "\n# tabos-bench (the port is given at start; everything else is the \
             default):\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n",
            self.root.display()
        ));
        std::fs::write(&conf, text).map_err(|e| Error::io(format!("writing {}", conf.display()), e))
    }

    /// Start the postmaster (`postgres -D data -p port`, output to `server.log`) from
    /// a thread pinned to the server core, so that it and every backend it forks
    /// inherit that core.
    fn spawn_postmaster(&mut self) -> Result<(), Error> {
        assert!(self.postmaster.is_none(), "one postmaster per server");
        let log_path = self.log_path();
        let log = File::create(&log_path)
            .map_err(|e| Error::io(format!("creating {}", log_path.display()), e))?;
        let log_too = log
            .try_clone()
            .map_err(|e| Error::io(format!("duplicating {}", log_path.display()), e))?;
        let mut postgres = self.command("postgres");
        postgres
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .stdout(log)
            .stderr(log_too);
        let core = self.server_core;
        let spawned = std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    measure::pin_or_warn(core, "the PostgreSQL server");
                    postgres.spawn()
                })
                .join()
                .expect("the spawning thread does not panic")
        });
        let child = spawned.map_err(|e| Error::io("PostgreSQL: starting postgres", e))?;
        self.postmaster = Some(child);
        Ok(())
    }

    /// Wait until the server accepts a connection (and return it), failing with the
    /// end of its log when it exits or takes longer than `START_TIMEOUT`.
    fn wait_until_ready(&mut self) -> Result<Client, Error> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let postmaster = self.postmaster.as_mut().expect("the postmaster started");
            let exited = postmaster
                .try_wait()
                .map_err(|e| Error::io("PostgreSQL: waiting for postgres", e))?;
            let why = match exited {
                Some(status) => format!("postgres exited ({status})"),
                None => match self.connect(Commit::Async) {
                    Ok(client) => return Ok(client),
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    }
                    Err(e) => format!("not ready after {} s: {e}", START_TIMEOUT.as_secs()),
                },
            };
            let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            return Err(Error::call(
                format!("starting PostgreSQL on 127.0.0.1:{}", self.port),
                format!("{why}\nserver log:\n{tail}"),
            ));
        }
    }

    /// A new connection committing as `commit` says.
    pub fn connect(&self, commit: Commit) -> Result<Client, Error> {
        assert!(self.postmaster.is_some(), "connect to a started server");
        let mut client = Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(DB_USER)
            .dbname("postgres")
            .application_name("tabos-bench")
            .connect_timeout(CONNECT_TIMEOUT)
            .connect(NoTls)
            .map_err(|e| failed(format!("connecting to 127.0.0.1:{}", self.port), e))?;
        client
            .batch_execute(&format!("SET synchronous_commit = {}", commit.setting()))
            .map_err(|e| failed("SET synchronous_commit", e))?;
        Ok(client)
    }

    /// `count` connections committing as `commit` says.
    pub fn connect_all(&self, count: usize, commit: Commit) -> Result<Vec<Client>, Error> {
        (0..count).map(|_| self.connect(commit)).collect()
    }

    /// The params every PostgreSQL record carries: server, connection, settings.
    pub fn params(&self, commit: Commit) -> Map<String, Value> {
        params([
            ("server", format!("PostgreSQL {}", self.version).into()),
            ("synchronous_commit", commit.setting().into()),
            (
                "call",
                "PL/pgSQL function, prepared statement, loopback TCP".into(),
            ),
            (
                "server_core",
                format!("{} (postmaster and every backend)", self.server_core).into(),
            ),
        ])
    }

    /// Stop the server (`pg_ctl stop`: fast shutdown; immediate if that fails; kill
    /// if that fails too) and reap the postmaster.
    fn stop(&mut self) -> Result<(), Error> {
        let Some(mut postmaster) = self.postmaster.take() else {
            return Ok(());
        };
        let stop = |mode: &str| {
            let mut stop = self.command("pg_ctl");
            stop.arg("stop").arg("-D").arg(self.data_dir()).args([
                "-m",
                mode,
                "-w",
                "-t",
                PG_CTL_WAIT_S,
            ]);
            PgServer::run(&format!("pg_ctl stop -m {mode}"), &mut stop)
        };
        let stopped = stop("fast").or_else(|e| stop("immediate").map_err(|_| e));
        if stopped.is_err() {
            // Backends notice their postmaster's death and exit by themselves.
            let _ = postmaster.kill();
        }
        let reaped = postmaster
            .wait()
            .map_err(|e| Error::io("PostgreSQL: waiting for postgres to exit", e));
        stopped?;
        reaped.map(drop)
    }

    /// Stop the server and remove its directory.
    pub fn finish(mut self) -> Result<(), Error> {
        self.stop()
        // Drop removes the directory.
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("tabos-bench: {e}");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            eprintln!("tabos-bench: cannot remove {}: {e}", self.root.display());
        }
    }
}

/// The scheduler's prepared statements on one connection.
pub struct PgSched {
    client: Client,
    schedule: Statement,
    complete: Statement,
}

// The client has no Debug; a connection is all there is to show.
impl std::fmt::Debug for PgSched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSched").finish_non_exhaustive()
    }
}

impl PgSched {
    pub fn new(mut client: Client) -> Result<PgSched, Error> {
        let schedule = client
            .prepare("SELECT schedule_fifo($1, $2, $3)")
            .map_err(|e| failed("preparing schedule_fifo", e))?;
        let complete = client
            .prepare("SELECT complete_task($1)")
            .map_err(|e| failed("preparing complete_task", e))?;
        Ok(PgSched {
            client,
            schedule,
            complete,
        })
    }

    /// Figure 2 on partition `p`: the worker task `task_id` now runs on, or `None`
    /// when no worker of `p` has capacity.
    pub fn schedule_fifo(
        &mut self,
        p: i32,
        task_id: i64,
        now_ns: i64,
    ) -> Result<Option<i64>, Error> {
        let row = self
            .client
            .query_one(&self.schedule, &[&p, &task_id, &now_ns])
            .map_err(|e| failed(format!("schedule_fifo({p}, {task_id})"), e))?;
        Ok(row.get(0))
    }

    /// Finish task `task_id`: returns the worker that got its capacity back.
    pub fn complete_task(&mut self, task_id: i64) -> Result<i64, Error> {
        let row = self
            .client
            .query_one(&self.complete, &[&task_id])
            .map_err(|e| failed(format!("complete_task({task_id})"), e))?;
        Ok(row.get(0))
    }

    /// Register workers `0..count` of `capacity`, worker `w` on partition
    /// `w % partitions`, and gather the planner's statistics.
    pub fn add_workers(&mut self, count: u64, capacity: u32, partitions: u32) -> Result<(), Error> {
        assert!(partitions > 0, "at least one partition");
        let (count, capacity, partitions) = (count as i64, capacity as i32, partitions as i64);
        let added = self
            .client
            .execute(
                "INSERT INTO worker (p_key, worker_id, capacity, unused_capacity) \
                 SELECT (w % $3::bigint)::integer, w, $2::integer, $2::integer \
                 FROM generate_series(0, $1::bigint - 1) AS w",
                &[&count, &capacity, &partitions],
            )
            .map_err(|e| failed("registering workers", e))?;
        assert_eq!(added, count as u64, "every worker was inserted");
        // Statistics for the planner, as after any bulk load: without them it guesses
        // a few rows per partition key and plans figure 2's select as a bitmap scan
        // of every worker of the key instead of stopping at the first with capacity.
        self.client
            .batch_execute("ANALYZE worker")
            .map_err(|e| failed("ANALYZE worker", e))?;
        Ok(())
    }

    /// Fail unless all `workers` are registered with all their capacity unused and
    /// no task is left.
    pub fn check_idle(&mut self, workers: u64, phase: &str) -> Result<(), Error> {
        let row = self
            .client
            .query_one(
                "SELECT (SELECT count(*) FROM worker), \
                        (SELECT count(*) FROM worker WHERE unused_capacity <> capacity), \
                        (SELECT count(*) FROM task)",
                &[],
            )
            .map_err(|e| failed("checking the workers", e))?;
        let (registered, busy, tasks): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
        if registered != workers as i64 || busy != 0 || tasks != 0 {
            return Err(Error::call(
                format!("PostgreSQL: after {phase}"),
                format!(
                    "{registered} of {workers} workers registered, {busy} short of capacity, \
                     {tasks} tasks left: a task was not completed"
                ),
            ));
        }
        Ok(())
    }
}

/// A message taken from a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgMessage {
    pub sender_id: i64,
    pub message_id: i64,
    pub data: Vec<u8>,
}

/// One task's mailbox: its connection LISTENs on `mailbox_<id>`, and it sends and
/// receives through prepared statements.
pub struct PgMailbox {
    client: Client,
    id: i64,
    send: Statement,
    receive: Statement,
}

// The client has no Debug; a connection is all there is to show.
impl std::fmt::Debug for PgMailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgMailbox")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl PgMailbox {
    pub fn open(mut client: Client, id: i64) -> Result<PgMailbox, Error> {
        client
            .batch_execute(&format!("LISTEN mailbox_{id}"))
            .map_err(|e| failed(format!("LISTEN mailbox_{id}"), e))?;
        let send = client
            .prepare("SELECT send_message($1, $2, $3)")
            .map_err(|e| failed("preparing send_message", e))?;
        let receive = client
            .prepare("SELECT from_id, id, body FROM receive_message($1)")
            .map_err(|e| failed("preparing receive_message", e))?;
        Ok(PgMailbox {
            client,
            id,
            send,
            receive,
        })
    }

    /// Send `data` to mailbox `to`; returns the message id.
    pub fn send(&mut self, to: i64, data: &[u8]) -> Result<i64, Error> {
        let row = self
            .client
            .query_one(&self.send, &[&to, &self.id, &data])
            .map_err(|e| failed(format!("send_message({to}, {})", self.id), e))?;
        Ok(row.get(0))
    }

    /// Take the oldest message, if there is one.
    pub fn try_receive(&mut self) -> Result<Option<PgMessage>, Error> {
        let row = self
            .client
            .query_opt(&self.receive, &[&self.id])
            .map_err(|e| failed(format!("receive_message({})", self.id), e))?;
        Ok(row.map(|row| PgMessage {
            sender_id: row.get(0),
            message_id: row.get(1),
            data: row.get(2),
        }))
    }

    /// Take the oldest message, waiting up to `timeout` for a send's notification
    /// when there is none.
    pub fn receive(&mut self, timeout: Duration) -> Result<PgMessage, Error> {
        let deadline = Instant::now() + timeout;
        let id = self.id;
        let doing = move || format!("waiting on mailbox_{id}");
        loop {
            // Wake-ups already here belong to messages committed before them, which
            // the query below sees: drop them, so none wakes a later wait for nothing.
            {
                let mut notifications = self.client.notifications();
                let mut pending = notifications.iter();
                while pending.next().map_err(|e| failed(doing(), e))?.is_some() {}
            }
            if let Some(message) = self.try_receive()? {
                return Ok(message);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let woke = self
                .client
                .notifications()
                .timeout_iter(left)
                .next()
                .map_err(|e| failed(doing(), e))?;
            if woke.is_none() {
                return Err(Error::call(
                    format!("PostgreSQL: {}", doing()),
                    format!("no message within {} s", timeout.as_secs_f64()),
                ));
            }
        }
    }
}

/// The filesystem's prepared statements on one connection.
pub struct PgFs {
    client: Client,
    create: Statement,
    delete: Statement,
}

// The client has no Debug; a connection is all there is to show.
impl std::fmt::Debug for PgFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgFs").finish_non_exhaustive()
    }
}

impl PgFs {
    pub fn new(mut client: Client) -> Result<PgFs, Error> {
        let create = client
            .prepare("SELECT create_file($1, $2, $3)")
            .map_err(|e| failed("preparing create_file", e))?;
        let delete = client
            .prepare("SELECT delete_file($1, $2)")
            .map_err(|e| failed("preparing delete_file", e))?;
        Ok(PgFs {
            client,
            create,
            delete,
        })
    }

    /// Make directory `path` owned by `owner` (set-up, not measured: a plain insert
    /// that trusts its caller, as user administration does).
    pub fn add_dir(&mut self, path: &str, owner: &str) -> Result<(), Error> {
        self.client
            .execute(
                "INSERT INTO directory (d_name, content, content_type, user_name, \
                 protection_info) SELECT dir, name, 0, $2, 493 FROM fs_split($1)",
                &[&path, &owner],
            )
            .map_err(|e| failed(format!("making directory {path}"), e))?;
        Ok(())
    }

    /// A new empty file at `path` owned by `owner`, with `mode`.
    pub fn create_file(&mut self, path: &str, owner: &str, mode: u32) -> Result<(), Error> {
        let mode = i32::try_from(mode).expect("a mode fits an integer");
        self.client
            .execute(&self.create, &[&path, &owner, &mode])
            .map_err(|e| failed(format!("create_file({path})"), e))?;
        Ok(())
    }

    /// Remove the file at `path` as `caller`; returns its size in bytes.
    pub fn delete_file(&mut self, path: &str, caller: &str) -> Result<i64, Error> {
        let row = self
            .client
            .query_one(&self.delete, &[&path, &caller])
            .map_err(|e| failed(format!("delete_file({path})"), e))?;
        Ok(row.get(0))
    }
}

/// The null statements of the `invoke` workload: (statement, what it is).
const NULL_STATEMENTS: [(&str, &str); 2] = [
    ("SELECT 1", "a prepared SELECT 1"),
    (
        "SELECT null_proc()",
        "a prepared call of an empty PL/pgSQL function",
    ),
];

/// Sequential prepared null calls against a private server pinned to `server_core`:
/// `invoke-null` records of a prepared `SELECT 1` and of an empty PL/pgSQL function,
/// each round trip timed (`synchronous_commit` does not matter: the calls write
/// nothing). Each is measured twice (param `cores`): from the calling thread pinned to
/// `client_core`, as tabos is measured, and from it pinned to `server_core` beside
/// the server, which saves the wake-up of an idle core on every call (PostgreSQL
/// blocks in the kernel between calls, where tabos spins). The calling thread is left
/// pinned to `client_core`. About 20 s (`quick`: 2 s, most of it starting the server).
pub fn invoke_records(
    quick: bool,
    client_core: usize,
    server_core: usize,
) -> Result<Vec<Record>, Error> {
    let calls: u64 = if quick { 2_000 } else { 100_000 };
    let timer_ns = measure::timer_overhead_ns();
    let server = PgServer::start(server_core)?;
    let mut records = Vec::new();
    let placements = [
        (
            client_core,
            format!("client core {client_core}, server core {server_core}"),
        ),
        (
            server_core,
            format!("client and server on core {server_core}"),
        ),
    ];
    let measured = (|| {
        // Closed before the server is stopped.
        let mut client = server.connect(Commit::Async)?;
        for (core, cores) in &placements {
            measure::pin_or_warn(*core, "the PostgreSQL client");
            for (sql, what) in NULL_STATEMENTS {
                eprintln!("[{WORKLOAD_INVOKE}] PostgreSQL, {what}, {cores}: {calls} calls");
                let (lat, elapsed) = null_calls(&mut client, sql, calls)?;
                let mut params = params([
                    ("proc", sql.into()),
                    ("calls", calls.into()),
                    ("cores", cores.clone().into()),
                    ("timing", "per-call".into()),
                    ("timer_overhead_ns", timer_ns.into()),
                ]);
                params.extend(server.params(Commit::Async));
                let record = Record::from_latencies(
                    WORKLOAD_INVOKE,
                    SYSTEM,
                    params,
                    &lat,
                    Some(calls as f64 / elapsed.as_secs_f64()),
                );
                report::progress(&record);
                records.push(record);
            }
        }
        Ok::<_, Error>(())
    })();
    measure::pin_or_warn(client_core, "the calling thread");
    measured?;
    server.finish()?;
    Ok(records)
}

/// `calls` timed round trips of the prepared statement `sql` (after an untimed
/// tenth), each checked to return one row. Returns the latencies and the time taken.
fn null_calls(client: &mut Client, sql: &str, calls: u64) -> Result<(Latencies, Duration), Error> {
    let statement = client
        .prepare(sql)
        .map_err(|e| failed(format!("preparing {sql}"), e))?;
    let mut call = || -> Result<(), Error> {
        let rows = client.query(&statement, &[]).map_err(|e| failed(sql, e))?;
        if rows.len() != 1 {
            return Err(Error::call(sql, format!("{} rows, expected 1", rows.len())));
        }
        Ok(())
    };
    for _ in 0..calls / 10 {
        call()?;
    }
    let mut lat = Latencies::new();
    let started = Instant::now();
    for _ in 0..calls {
        let start = Instant::now();
        call()?;
        lat.record(start.elapsed());
    }
    Ok((lat, started.elapsed()))
}

/// Lines comparing the tabos null call with each of PostgreSQL's prepared calls
/// (medians of `invoke-null` records of the same run).
pub fn invoke_ratios(records: &[Record]) -> Vec<String> {
    let null = |r: &&Record| r.workload == WORKLOAD_INVOKE;
    let Some(tabos) = records
        .iter()
        .filter(null)
        .find(|r| r.system == crate::invoke::SYSTEM_TABOS_SHM)
        .and_then(|r| r.p50_us)
    else {
        return Vec::new();
    };
    records
        .iter()
        .filter(null)
        .filter(|r| r.system == SYSTEM)
        .filter_map(|r| {
            let pg = r.p50_us?;
            let text = |key| r.params.get(key).and_then(Value::as_str).unwrap_or("?");
            Some(format!(
                "PostgreSQL prepared `{}` ({}) p50 / tabos shm null call p50 = {:.1} (tabos \
                 is {:.1}x faster: {pg:.3} µs vs {tabos:.3} µs)",
                text("proc"),
                text("cores"),
                pg / tabos,
                pg / tabos
            ))
        })
        .collect()
}

/// How much ping-pong [`ipc_records`] runs.
#[derive(Debug, Clone, PartialEq)]
struct IpcPlan {
    /// (message bytes, commit) of each run.
    runs: Vec<(usize, Commit)>,
    /// Timed duration of each run (after an untimed tenth).
    per_run: Duration,
}

impl IpcPlan {
    fn new(quick: bool) -> IpcPlan {
        let sizes: &[usize] = if quick {
            &[64, 8192]
        } else {
            &[64, 1024, 8192]
        };
        let mut runs: Vec<(usize, Commit)> = sizes.iter().map(|s| (*s, Commit::Async)).collect();
        runs.push((64, Commit::Sync));
        IpcPlan {
            runs,
            per_run: if quick {
                Duration::from_millis(300)
            } else {
                Duration::from_secs(2)
            },
        }
    }
}

/// A message of `bytes` bytes (at least 8) that carries `round` in its first 8.
fn message(bytes: usize, round: u64) -> Vec<u8> {
    assert!(bytes >= 8, "a message carries its 8-byte round number");
    let mut m = vec![0x5a; bytes];
    m[..8].copy_from_slice(&round.to_le_bytes());
    m
}

/// Ping-pong through the `message` table (figure 6's workload, one pair) against a
/// private server pinned to `server_core`: a sender thread and a receiver thread, each
/// with its own connection, both on `client_core` (as tabos's `ipc` places them by
/// default). A round trip is `send_message` to the receiver, which wakes on its
/// notification, takes the message with `receive_message` and sends it back; the
/// sender takes the echo the same way. `ipc-pingpong` records of 64, 1024 and
/// 8192 bytes (`quick`: 64 and 8192) with `synchronous_commit=off`, and 64 bytes with
/// it on (`postgres-sync`). About 10 s (`quick`: 3 s).
pub fn ipc_records(
    quick: bool,
    client_core: usize,
    server_core: usize,
) -> Result<Vec<Record>, Error> {
    let plan = IpcPlan::new(quick);
    let server = PgServer::start(server_core)?;
    let mut records = Vec::new();
    for (k, &(bytes, commit)) in plan.runs.iter().enumerate() {
        let (sender_id, receiver_id) = (2 * k as i64 + 1, 2 * k as i64 + 2);
        records.push(ping_pong(
            &server,
            commit,
            bytes,
            (sender_id, receiver_id),
            plan.per_run,
            client_core,
        )?);
    }
    server.finish()?;
    Ok(records)
}

/// One ping-pong run between mailboxes `ids` = (sender, receiver).
fn ping_pong(
    server: &PgServer,
    commit: Commit,
    bytes: usize,
    ids: (i64, i64),
    per_run: Duration,
    core: usize,
) -> Result<Record, Error> {
    eprintln!(
        "[{WORKLOAD_PINGPONG}] PostgreSQL (synchronous_commit={}), {bytes}-byte messages, \
         1 pair: {:.1} s",
        commit.setting(),
        per_run.as_secs_f64()
    );
    let (sender_id, receiver_id) = ids;
    let mut mailboxes = vec![
        PgMailbox::open(server.connect(commit)?, sender_id)?,
        PgMailbox::open(server.connect(commit)?, receiver_id)?,
    ];
    let results = measure::gang(
        &mut mailboxes,
        |_| core,
        |i, mailbox, barrier| {
            barrier.wait();
            if i == 1 {
                return echo(mailbox).map(|_| None);
            }
            let outcome = timed_round_trips(mailbox, receiver_id, bytes, per_run);
            // Stop the receiver, also after an error, so it does not wait out its
            // timeout.
            let stopped = mailbox.send(receiver_id, &[]);
            let outcome = outcome?;
            stopped?;
            Ok(Some(outcome))
        },
    )?;
    let (lat, rounds, elapsed) = results
        .into_iter()
        .flatten()
        .next()
        .expect("the sender's result");
    let mut params = params([
        ("message_bytes", bytes.into()),
        ("pairs", 1.into()),
        ("messages_per_round", 1.into()),
        ("seconds", per_run.as_secs_f64().into()),
        ("rounds", rounds.into()),
        (
            "receive",
            "LISTEN/NOTIFY wake-up, then receive_message".into(),
        ),
        (
            "threads",
            format!("sender and receiver on core {core}").into(),
        ),
        ("ops", "round trips".into()),
        ("latency", "one round trip".into()),
    ]);
    params.extend(server.params(commit));
    let record = Record::from_latencies(
        WORKLOAD_PINGPONG,
        commit.system(),
        params,
        &lat,
        Some(rounds as f64 / elapsed.as_secs_f64()),
    );
    report::progress(&record);
    Ok(record)
}

/// The receiver: send every message back to its sender until an empty one arrives.
fn echo(mailbox: &mut PgMailbox) -> Result<(), Error> {
    loop {
        let m = mailbox.receive(RECV_TIMEOUT)?;
        if m.data.is_empty() {
            return Ok(());
        }
        mailbox.send(m.sender_id, &m.data)?;
    }
}

/// The sender: an untimed tenth of `per_run`, then timed round trips for `per_run`.
/// Returns the latencies, round trips and time taken.
fn timed_round_trips(
    mailbox: &mut PgMailbox,
    to: i64,
    bytes: usize,
    per_run: Duration,
) -> Result<(Latencies, u64, Duration), Error> {
    let mut round = 0u64;
    let mut round_trip = |mailbox: &mut PgMailbox| -> Result<(), Error> {
        let sent = message(bytes, round);
        round += 1;
        mailbox.send(to, &sent)?;
        let echo = mailbox.receive(RECV_TIMEOUT)?;
        if echo.data != sent || echo.sender_id != to {
            return Err(Error::call(
                "PostgreSQL ping-pong",
                format!(
                    "echo of {} bytes from {}, expected round {} ({bytes} bytes) from {to}",
                    echo.data.len(),
                    echo.sender_id,
                    round - 1
                ),
            ));
        }
        Ok(())
    };
    let warm_up_until = Instant::now() + per_run.mul_f64(0.1);
    while Instant::now() < warm_up_until {
        round_trip(mailbox)?;
    }
    let mut lat = Latencies::new();
    let started = Instant::now();
    let deadline = started + per_run;
    loop {
        let start = Instant::now();
        if start >= deadline {
            break;
        }
        round_trip(mailbox)?;
        lat.record(start.elapsed());
    }
    let rounds = lat.count();
    Ok((lat, rounds, started.elapsed()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A started server, or `None` (saying why) where PostgreSQL is not installed.
    fn server_or_skip(test: &str) -> Option<PgServer> {
        if bin_dir().is_none() {
            eprintln!("{test}: skipped: PostgreSQL is not installed (scripts/install-postgres.sh)");
            return None;
        }
        Some(PgServer::start(1).expect("PostgreSQL starts"))
    }

    #[test]
    fn commit_modes_name_their_systems() {
        assert_eq!(Commit::Async.system(), SYSTEM);
        assert_eq!(Commit::Sync.system(), SYSTEM_SYNC);
        assert_eq!(Commit::Sync.setting(), "on");
        if let Some(dir) = bin_dir() {
            assert!(has_server_binaries(&dir), "{}", dir.display());
        }
        assert_eq!(message(8, 3)[..8], 3u64.to_le_bytes());
    }

    #[test]
    fn ratios_compare_each_postgres_call_with_the_tabos_null_call() {
        let rec = |system: &str, proc: &str, p50: f64| Record {
            workload: WORKLOAD_INVOKE.into(),
            system: system.into(),
            params: params([
                ("proc", proc.into()),
                ("cores", "client 0, server 1".into()),
            ]),
            p50_us: Some(p50),
            p99_us: None,
            p999_us: None,
            ops_per_s: None,
        };
        let lines = invoke_ratios(&[
            rec(crate::invoke::SYSTEM_TABOS_SHM, "null", 0.5),
            rec(SYSTEM, "SELECT 1", 40.0),
            rec(SYSTEM, "SELECT null_proc()", 50.0),
        ]);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("= 80.0"), "{}", lines[0]);
        assert!(lines[1].contains("SELECT null_proc()"), "{}", lines[1]);
        assert!(lines[1].contains("(client 0, server 1)"), "{}", lines[1]);
        assert!(invoke_ratios(&[rec(SYSTEM, "SELECT 1", 40.0)]).is_empty());
    }

    /// The scheduler keeps capacity exactly: a worker takes at most its capacity, a
    /// completion gives one unit back, a full partition places nothing.
    #[test]
    fn the_scheduler_accounts_for_capacity() {
        let Some(server) = server_or_skip("the_scheduler_accounts_for_capacity") else {
            return;
        };
        let mut sched = PgSched::new(server.connect(Commit::Async).unwrap()).unwrap();
        sched.add_workers(3, 2, 2).unwrap();
        // Partition 0 holds workers 0 and 2: four units in all (which worker is
        // "first" is the scan's order, as in the paper's `limit 1`).
        let mut placed: Vec<Option<i64>> = (0..5)
            .map(|t| sched.schedule_fifo(0, t, 0).unwrap())
            .collect();
        assert_eq!(placed.pop(), Some(None), "partition 0 is full");
        let mut on: Vec<i64> = placed.iter().flatten().copied().collect();
        on.sort_unstable();
        assert_eq!(on, vec![0, 0, 2, 2]);
        assert_eq!(sched.schedule_fifo(1, 10, 0).unwrap(), Some(1));
        assert!(sched.check_idle(3, "scheduling").is_err());
        let freed = sched.complete_task(2).unwrap();
        assert_eq!(Some(freed), placed[2]);
        assert_eq!(sched.schedule_fifo(0, 11, 0).unwrap(), Some(freed));
        assert!(sched.complete_task(2).is_err(), "a task completes once");
        assert!(
            sched.schedule_fifo(1, 10, 0).is_err(),
            "task ids are unique"
        );
        for t in [0, 1, 3, 10, 11] {
            sched.complete_task(t).unwrap();
        }
        sched.check_idle(3, "completing").unwrap();
        drop(sched);
        server.finish().unwrap();
    }

    /// Messages arrive in order, exactly once, per mailbox (a `VecDeque` per receiver
    /// is the model), and a receiver waiting on an empty mailbox wakes on a send.
    #[test]
    fn mailboxes_deliver_in_order_exactly_once() {
        let Some(server) = server_or_skip("mailboxes_deliver_in_order_exactly_once") else {
            return;
        };
        let mut a = PgMailbox::open(server.connect(Commit::Async).unwrap(), 1).unwrap();
        let mut b = PgMailbox::open(server.connect(Commit::Sync).unwrap(), 2).unwrap();
        assert_eq!(b.try_receive().unwrap(), None);
        let mut model = std::collections::VecDeque::new();
        for round in 0..20u64 {
            let data = message(8 + round as usize, round);
            a.send(2, &data).unwrap();
            model.push_back(data);
            if round % 3 == 2 {
                let got = b.receive(RECV_TIMEOUT).unwrap();
                assert_eq!(got.sender_id, 1);
                assert_eq!(Some(got.data), model.pop_front());
            }
        }
        while let Some(expected) = model.pop_front() {
            assert_eq!(b.try_receive().unwrap().map(|m| m.data), Some(expected));
        }
        assert_eq!(b.try_receive().unwrap(), None);
        assert_eq!(a.try_receive().unwrap(), None, "nothing was sent to a");
        std::thread::scope(|scope| {
            let waiter = scope.spawn(|| b.receive(RECV_TIMEOUT));
            std::thread::sleep(Duration::from_millis(50));
            a.send(2, b"wake up!").unwrap();
            assert_eq!(waiter.join().unwrap().unwrap().data, b"wake up!");
        });
        drop((a, b));
        server.finish().unwrap();
    }

    /// Create and delete check the parent directory, permission and existence, as
    /// tabos's `create` and `delete` do.
    #[test]
    fn files_are_created_and_deleted_under_their_rules() {
        let Some(server) = server_or_skip("files_are_created_and_deleted_under_their_rules") else {
            return;
        };
        let mut fs = PgFs::new(server.connect(Commit::Async).unwrap()).unwrap();
        fs.add_dir("/alice", "alice").unwrap();
        fs.add_dir("/alice/d", "alice").unwrap();
        fs.create_file("/alice/d/f", "alice", 0o644).unwrap();
        assert!(
            fs.create_file("/alice/d/f", "alice", 0o644).is_err(),
            "exists"
        );
        assert!(
            fs.create_file("/alice/x/f", "alice", 0o644).is_err(),
            "no parent"
        );
        assert!(
            fs.create_file("/alice/d/f/g", "alice", 0o644).is_err(),
            "not a dir"
        );
        assert!(
            fs.create_file("/alice/d/g", "bob", 0o644).is_err(),
            "no permission"
        );
        assert!(fs.create_file("/top", "alice", 0o644).is_err(), "top level");
        assert!(fs.delete_file("/alice/d", "alice").is_err(), "not empty");
        assert!(
            fs.delete_file("/alice/d/f", "bob").is_err(),
            "no permission"
        );
        assert_eq!(fs.delete_file("/alice/d/f", "alice").unwrap(), 0);
        assert!(
            fs.delete_file("/alice/d/f", "alice").is_err(),
            "deleted once"
        );
        assert_eq!(fs.delete_file("/alice/d", "alice").unwrap(), 0);
        drop(fs);
        server.finish().unwrap();
    }

    #[test]
    fn a_dropped_server_leaves_nothing_behind() {
        let Some(server) = server_or_skip("a_dropped_server_leaves_nothing_behind") else {
            return;
        };
        let root = server.root.clone();
        let pid_file = server.data_dir().join("postmaster.pid");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let pid: u32 = pid.lines().next().unwrap().trim().parse().unwrap();
        assert!(process_alive(pid), "the postmaster runs");
        drop(server);
        assert!(!root.exists(), "the directory is removed");
        assert!(!process_alive(pid), "the postmaster stopped");
    }
}
