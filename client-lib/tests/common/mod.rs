//! Helpers shared by the client crate's integration tests: the `tabos` and `tabosd`
//! binaries, a real tabosd in its own temporary directory stopped by a drop guard, and
//! a bound on every wait (only to turn a hang into a failure; nothing is timed).

#![allow(dead_code)] // each test file uses a different part of this module

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tabos_client::Client;

/// Longest wait for a started tabosd to accept a client.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a process that should finish.
pub const HANG_TIMEOUT: Duration = Duration::from_secs(60);

/// The `tabos` command line built for these tests.
pub fn tabos_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tabos"))
}

/// The `tabosd` next to `tabos`, built with cargo if it is not there yet (tabos-server
/// is not a dependency of this crate, so cargo does not build it for these tests).
pub fn tabosd_exe() -> PathBuf {
    static TABOSD: OnceLock<PathBuf> = OnceLock::new();
    TABOSD
        .get_or_init(|| {
            let tabos = tabos_exe();
            let dir = tabos.parent().expect("tabos has a directory");
            let tabosd = dir.join("tabosd");
            if !tabosd.is_file() {
                let mut build = Command::new(env!("CARGO"));
                build.args(["build", "-p", "tabos-server", "--bin", "tabosd"]);
                match dir.file_name().and_then(|n| n.to_str()) {
                    Some("debug") | None => {}
                    Some("release") => {
                        build.arg("--release");
                    }
                    Some(profile) => {
                        build.args(["--profile", profile]);
                    }
                }
                let status = build.status().expect("run cargo build");
                assert!(status.success(), "building tabosd failed: {status}");
            }
            assert!(tabosd.is_file(), "no tabosd at {}", tabosd.display());
            tabosd
        })
        .clone()
}

/// A fresh, empty directory for one test, removed on drop.
#[derive(Debug)]
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tabos-cli-{tag}-{}-{n}", std::process::id());
        // Unix socket paths must fit in 108 bytes: fall back to /tmp for a long TMPDIR.
        let mut base = std::env::temp_dir();
        if base.as_os_str().len() + name.len() > 80 {
            base = PathBuf::from("/tmp");
        }
        let path = base.join(name);
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create the test directory");
        TestDir { path }
    }

    pub fn socket(&self) -> PathBuf {
        self.path.join("s.sock")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Send `signal` to `pid` with kill(1).
pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Wait for `child` to exit, at most `timeout`.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run `command` to completion with its output captured; kill it and fail the test
/// after [`HANG_TIMEOUT`].
pub fn run(mut command: Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(HANG_TIMEOUT) {
        Ok(output) => output.expect("collect the output"),
        Err(_) => {
            send_signal(pid, "KILL");
            panic!("{command:?} did not finish within {HANG_TIMEOUT:?}");
        }
    }
}

/// A running tabosd, terminated (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
    _dir: TestDir,
}

impl Daemon {
    /// Start tabosd on a fresh socket with two unpinned partitions and wait until a
    /// client can connect.
    pub fn start(tag: &str) -> Daemon {
        let dir = TestDir::new(tag);
        let socket = dir.socket();
        let log = dir.path.join("tabosd.log");
        let child = Command::new(tabosd_exe())
            .arg("--socket")
            .arg(&socket)
            .arg("--data-dir")
            .arg(dir.path.join("data"))
            .args(["--partitions", "2", "--spin-us", "50", "--no-pin"])
            .env_remove("TABOS_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log file"))
            .spawn()
            .expect("start tabosd");
        let mut daemon = Daemon {
            child: Some(child),
            socket,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = daemon.child.as_mut().expect("the daemon");
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "tabosd exited during start-up with {status}:\n{}",
                    daemon.log()
                );
            }
            if Client::connect(&daemon.socket).is_ok() {
                return daemon;
            }
            assert!(
                Instant::now() < deadline,
                "tabosd did not accept a client within {START_TIMEOUT:?}:\n{}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// What tabosd wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            send_signal(child.id(), "TERM");
            if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("--- tabosd log ---\n{}", self.log());
        }
    }
}
