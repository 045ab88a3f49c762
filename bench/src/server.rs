//! The tabosd a run talks to: a private one started for the run (and always stopped
//! again, also when a workload fails), or one already running (`--connect`).
//!
//! A started tabosd gets a fresh temporary directory for its socket, the partitions and
//! cores of its [`Layout`] (by default one partition confined to the server core), and
//! SIGTERM at the end (its clean shutdown path); the directory is removed afterwards.
//! A layout that listens also gets `--listen 127.0.0.1:PORT` on a free port and a
//! `--secret-file` in that directory, for clients connected over TCP
//! ([`Target::connect_net`]). [`Tabosd`] does this in `Drop`, so nothing is left
//! running when the driver returns early or panics. (A driver killed by SIGKILL cannot
//! clean up; Ctrl-C reaches tabosd too, as it is in the same process group.)

use crate::{measure, Error, Settings};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tabos_client::{Client, ConnectOptions};

/// How long a started tabosd may take until it accepts a client.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a stopping tabosd may take after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between checks while waiting for tabosd.
const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Environment variable naming the tabosd binary (as `--tabosd` does).
pub const TABOSD_ENV: &str = "TABOS_BENCH_TABOSD";

/// The tabosd next to the current executable: `target/<profile>/tabosd` for the driver
/// (`target/<profile>/tabos-bench`) and for benchmarks and tests, which run from
/// `target/<profile>/deps/`.
pub fn default_binary() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::Server(format!("cannot find the current executable: {e}")))?;
    let dir = exe
        .parent()
        .ok_or_else(|| Error::Server("the current executable has no directory".into()))?;
    let mut candidates = vec![dir.join("tabosd")];
    if dir.file_name().is_some_and(|n| n == "deps") {
        if let Some(profile_dir) = dir.parent() {
            candidates.push(profile_dir.join("tabosd"));
        }
    }
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            Error::Server(format!(
                "no tabosd binary at {}: build it (`cargo build --release -p tabos-server`) or \
             name one with --tabosd or {TABOSD_ENV}",
                candidates[0].display()
            ))
        })
}

/// How a started tabosd is laid out: its partitions, their cores, and further flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Also serve remote clients over TCP on 127.0.0.1 (`--listen` on a free port,
    /// `--secret-file` in the run's directory): [`Target::connect_net`] then works.
    pub listen: bool,
    /// Partitions (one pinned thread each), `--partitions`.
    pub partitions: u32,
    /// Cores of the partitions, `--cores`: partition i runs on `cores[i % len]`. The
    /// first is also where tabosd's other (idle) threads stay.
    pub cores: Vec<usize>,
    /// Further tabosd flags, e.g. `["--workers-max", "100000"]`.
    pub extra_args: Vec<String>,
}

impl Layout {
    /// One partition on `server_core`: the layout of every headline number.
    pub fn single(server_core: usize) -> Layout {
        Layout {
            listen: false,
            partitions: 1,
            cores: vec![server_core],
            extra_args: Vec::new(),
        }
    }

    /// One partition on the server core, with the settings' extra tabosd flags.
    pub fn from_settings(settings: &Settings) -> Layout {
        Layout {
            extra_args: settings.tabosd_args.clone(),
            ..Layout::single(settings.server_core)
        }
    }

    /// `partitions` partitions (with the settings' extra tabosd flags): the first on
    /// the server core, the next ones on the other cores of this machine in order, the
    /// client's core last. Partitions beyond
    /// the machine's cores share cores (on a 2-CPU machine a second partition shares
    /// the client's core: numbers then measure the sharing too).
    pub fn spread(settings: &Settings, partitions: u32) -> Layout {
        assert!(partitions > 0, "a tabosd needs a partition");
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut cores = vec![settings.server_core];
        cores
            .extend((0..cpus).filter(|c| *c != settings.server_core && *c != settings.client_core));
        if settings.client_core != settings.server_core {
            cores.push(settings.client_core);
        }
        cores.truncate(partitions as usize);
        Layout {
            listen: false,
            partitions,
            cores,
            extra_args: settings.tabosd_args.clone(),
        }
    }

    /// This layout, also serving remote clients over loopback TCP.
    pub fn with_listen(self) -> Layout {
        Layout {
            listen: true,
            ..self
        }
    }

    /// Whether some partition runs on `core`.
    pub fn uses_core(&self, core: usize) -> bool {
        self.cores.contains(&core)
    }

    /// The `--cores` argument: `1` or `1,0`.
    pub fn cores_arg(&self) -> String {
        self.cores
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// One line for progress output: `2 partitions on cores 1,0`.
    pub fn describe(&self) -> String {
        let plural = if self.partitions == 1 { "" } else { "s" };
        let mut text = format!(
            "{} partition{plural} on core{} {}",
            self.partitions,
            if self.cores.len() == 1 { "" } else { "s" },
            self.cores_arg()
        );
        if self.listen {
            text.push_str(", TCP on 127.0.0.1");
        }
        if !self.extra_args.is_empty() {
            text.push_str(&format!(", {}", self.extra_args.join(" ")));
        }
        text
    }
}

/// A tabosd started for this run. Stopped and cleaned up on drop.
#[derive(Debug)]
pub struct Tabosd {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
    net: Option<NetAccess>,
}

/// How remote clients reach a tabosd over TCP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetAccess {
    /// `HOST:PORT` of its `--listen`.
    pub address: String,
    /// Its `--secret-file`.
    pub secret_file: PathBuf,
}

/// The cluster secret of a started tabosd that listens (a private node on loopback).
const BENCH_SECRET: &str = "tabos-bench-loopback-secret-0123456789";

/// A free TCP port on 127.0.0.1 (bound and released: tabosd binds it next).
fn free_port() -> Result<u16, Error> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free TCP port on 127.0.0.1", e))
}

impl NetAccess {
    /// Options of a client that connects over TCP.
    pub fn connect_options(&self) -> ConnectOptions {
        ConnectOptions {
            secret_file: Some(self.secret_file.clone()),
            act_as: None,
        }
    }
}

/// A fresh private directory under the system temporary directory.
fn fresh_dir() -> Result<PathBuf, Error> {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let base = std::env::temp_dir();
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!("tabos-bench-{}-{n}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("creating {}", dir.display()), e)),
        }
    }
    Err(Error::Server(format!(
        "no free temporary directory name under {}",
        base.display()
    )))
}

impl Tabosd {
    /// Start `binary` with one partition pinned to `server_core`, and wait until its
    /// socket accepts a client.
    ///
    /// tabosd is spawned from a thread pinned to `server_core` and told `--cores`, so
    /// the partition and tabosd's other (idle) threads stay off the client's core.
    pub fn start(binary: &Path, server_core: usize) -> Result<Tabosd, Error> {
        Tabosd::start_with(binary, &Layout::single(server_core))
    }

    /// Start `binary` as `layout` says, and wait until its socket accepts a client.
    /// tabosd is spawned from a thread pinned to the layout's first core.
    pub fn start_with(binary: &Path, layout: &Layout) -> Result<Tabosd, Error> {
        assert!(layout.partitions > 0, "a tabosd needs a partition");
        assert!(!layout.cores.is_empty(), "a tabosd needs a core");
        let dir = fresh_dir()?;
        let socket = dir.join("tabos.sock");
        // From here on the guard owns the directory (and the child, if any).
        let mut server = Tabosd {
            child: None,
            dir,
            socket,
            net: None,
        };
        if layout.listen {
            let secret_file = server.dir.join("secret");
            std::fs::write(&secret_file, format!("{BENCH_SECRET}\n"))
                .map_err(|e| Error::io(format!("writing {}", secret_file.display()), e))?;
            server.net = Some(NetAccess {
                address: format!("127.0.0.1:{}", free_port()?),
                secret_file,
            });
        }
        let spawned = spawn_on_core(binary, &server.socket, server.net.as_ref(), layout);
        server.child = Some(spawned.map_err(|e| {
            Error::Server(format!(
                "cannot run {}: {e} (build it with `cargo build --release -p tabos-server` \
                 or name another with --tabosd)",
                binary.display()
            ))
        })?);
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        let child = self
            .child
            .as_mut()
            .expect("wait_ready runs on a started child");
        loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| Error::Server(format!("cannot check on tabosd: {e}")))?
            {
                self.child = None; // reaped
                return Err(Error::Server(format!(
                    "tabosd exited ({status}) before it served {}",
                    self.socket.display()
                )));
            }
            let probed = Client::connect(&self.socket).and_then(|probe| match &self.net {
                Some(net) => Client::connect_with(&net.address, &net.connect_options()),
                None => Ok(probe),
            });
            let last_error = match probed {
                Ok(_probe) => return Ok(()),
                Err(e) => e,
            };
            if started.elapsed() > START_TIMEOUT {
                return Err(Error::Server(format!(
                    "tabosd did not accept a client within {} s: {last_error}",
                    START_TIMEOUT.as_secs()
                )));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The socket clients connect to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stop tabosd cleanly and start it again in the same directory (so on the same
    /// data dir): returns how long the new process took to serve, recovery included.
    pub fn restart(&mut self, binary: &Path, layout: &Layout) -> Result<Duration, Error> {
        if let Some(child) = self.child.take() {
            terminate(child)?;
        }
        let started = Instant::now();
        let spawned = spawn_on_core(binary, &self.socket, self.net.as_ref(), layout);
        self.child = Some(spawned.map_err(|e| Error::Server(format!("cannot restart: {e}")))?);
        self.wait_ready()?;
        Ok(started.elapsed())
    }

    /// The directory of this tabosd's socket and data dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How remote clients reach it (a layout with `listen`).
    pub fn net(&self) -> Option<&NetAccess> {
        self.net.as_ref()
    }

    /// Stop tabosd (SIGTERM, then SIGKILL after a timeout), remove its directory, and
    /// fail if it did not exit cleanly.
    pub fn stop(mut self) -> Result<(), Error> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), Error> {
        let outcome = match self.child.take() {
            Some(child) => terminate(child),
            None => Ok(()),
        };
        if self.dir.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("tabos-bench: cannot remove {}: {e}", self.dir.display());
            }
        }
        outcome
    }
}

/// Spawn tabosd from a helper thread pinned to the layout's first core: the child
/// inherits the thread's CPU mask (its partitions then pin themselves to `--cores`).
/// If pinning fails (no such core), tabosd inherits this process's mask and a warning
/// says so.
fn spawn_on_core(
    binary: &Path,
    socket: &Path,
    net: Option<&NetAccess>,
    layout: &Layout,
) -> std::io::Result<Child> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                measure::pin_or_warn(layout.cores[0], "tabosd");
                let mut command = Command::new(binary);
                if let Some(net) = net {
                    command
                        .arg("--listen")
                        .arg(&net.address)
                        .arg("--secret-file")
                        .arg(&net.secret_file);
                }
                // The figure benchmarks compare against PostgreSQL with
                // synchronous_commit=off: the same guarantee as --durability async.
                // A layout that names --durability (the durability benchmark) wins.
                if !layout.extra_args.iter().any(|a| a == "--durability") {
                    command.args(["--durability", "async"]);
                }
                if !layout.extra_args.iter().any(|a| a == "--data-dir") {
                    command.arg("--data-dir").arg(socket.with_file_name("data"));
                }
                command
                    .arg("--socket")
                    .arg(socket)
                    .arg("--partitions")
                    .arg(layout.partitions.to_string())
                    .arg("--cores")
                    .arg(layout.cores_arg())
                    .args(&layout.extra_args)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
            })
            .join()
            .expect("the spawning thread does not panic")
    })
}

/// SIGTERM `child` and reap it; SIGKILL it if it does not stop in time.
fn terminate(mut child: Child) -> Result<(), Error> {
    if let Ok(Some(status)) = child.try_wait() {
        return Err(Error::Server(format!("tabosd exited early ({status})")));
    }
    // std can only SIGKILL; `kill -TERM` gives tabosd its clean shutdown.
    let termed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let status = if termed {
        wait_for(&mut child, STOP_TIMEOUT)?
    } else {
        None
    };
    let status = match status {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let status = child
                .wait()
                .map_err(|e| Error::Server(format!("cannot reap tabosd: {e}")))?;
            return Err(Error::Server(format!(
                "tabosd did not stop on SIGTERM within {} s; killed ({status})",
                STOP_TIMEOUT.as_secs()
            )));
        }
    };
    if !status.success() {
        return Err(Error::Server(format!(
            "tabosd exited with {status} on SIGTERM"
        )));
    }
    Ok(())
}

fn wait_for(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>, Error> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Ok(Some(status)),
            Ok(None) if started.elapsed() > timeout => return Ok(None),
            Ok(None) => std::thread::sleep(POLL_INTERVAL),
            Err(e) => return Err(Error::Server(format!("cannot check on tabosd: {e}"))),
        }
    }
}

impl Drop for Tabosd {
    fn drop(&mut self) {
        if let Err(e) = self.shut_down() {
            eprintln!("tabos-bench: {e}");
        }
    }
}

/// The server of a run: started for it, or already running.
#[derive(Debug)]
pub enum Target {
    /// A tabosd this run started (and stops).
    Started(Tabosd),
    /// A tabosd someone else runs, at this socket.
    Running(PathBuf),
}

impl Target {
    /// Connect to `settings.connect`, or start a tabosd with one partition on the
    /// server core.
    pub fn acquire(settings: &Settings) -> Result<Target, Error> {
        Target::acquire_with(settings, &Layout::from_settings(settings))
    }

    /// Connect to `settings.connect` (whose layout is what it is: `layout` is then
    /// only reported), or start a tabosd laid out as `layout` says.
    pub fn acquire_with(settings: &Settings, layout: &Layout) -> Result<Target, Error> {
        if let Some(socket) = &settings.connect {
            eprintln!(
                "tabos-bench: using the tabosd at {} as it is (a started one would have {})",
                socket.display(),
                layout.describe()
            );
            return Ok(Target::Running(socket.clone()));
        }
        let binary = match &settings.tabosd {
            Some(path) => path.clone(),
            None => default_binary()?,
        };
        eprintln!(
            "tabos-bench: starting {} ({})",
            binary.display(),
            layout.describe()
        );
        if layout.uses_core(settings.client_core) {
            eprintln!(
                "tabos-bench: a partition shares the client's core {}: client and server \
                 compete for it",
                settings.client_core
            );
        }
        Ok(Target::Started(Tabosd::start_with(&binary, layout)?))
    }

    /// The socket clients connect to.
    pub fn socket(&self) -> &Path {
        match self {
            Target::Started(server) => server.socket(),
            Target::Running(socket) => socket,
        }
    }

    /// Connect a client.
    pub fn connect(&self) -> Result<Client, Error> {
        Client::connect(self.socket()).map_err(|e| Error::Server(e.to_string()))
    }

    /// How remote clients reach the tabosd: only one started with a layout that
    /// listens (a `--connect` one is reached by its socket alone).
    pub fn net(&self) -> Option<&NetAccess> {
        match self {
            Target::Started(server) => server.net(),
            Target::Running(_) => None,
        }
    }

    /// Connect a client over loopback TCP (a started tabosd whose layout listens).
    pub fn connect_net(&self) -> Result<Client, Error> {
        let net = self.net().ok_or_else(|| {
            Error::Server(
                "this tabosd serves no TCP clients (started without a listening layout, or \
                 --connect)"
                    .into(),
            )
        })?;
        Client::connect_with(&net.address, &net.connect_options())
            .map_err(|e| Error::Server(format!("over TCP at {}: {e}", net.address)))
    }

    /// Stop a started tabosd (and check it stopped cleanly); nothing for `Running`.
    pub fn finish(self) -> Result<(), Error> {
        match self {
            Target::Started(server) => server.stop(),
            Target::Running(_) => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(args: &[&str]) -> Settings {
        Settings {
            quick: true,
            connect: None,
            tabosd: None,
            client_core: 0,
            server_core: 1,
            tabosd_args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    #[test]
    fn layouts_put_the_first_partition_on_the_server_core() {
        let s = settings(&["--spin-us", "5"]);
        let one = Layout::spread(&s, 1);
        assert_eq!(one.cores, vec![1]);
        assert_eq!(one.extra_args, vec!["--spin-us", "5"]);
        assert_eq!(Layout::from_settings(&s), one);
        let two = Layout::spread(&s, 2);
        assert_eq!(two.partitions, 2);
        assert_eq!(two.cores.len(), 2);
        assert_eq!(two.cores[0], 1);
        assert_ne!(two.cores[1], 1, "a second core when the machine has one");
        assert!(two.describe().starts_with("2 partitions on cores 1,"));
        assert!(!two.listen);
        let listening = two.with_listen();
        assert!(listening.listen);
        assert!(listening.describe().contains("TCP on 127.0.0.1"));
        assert_eq!(Layout::single(3).cores_arg(), "3");
        assert!(!Layout::single(3).uses_core(0));
    }
}
