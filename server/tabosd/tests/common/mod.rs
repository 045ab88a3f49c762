//! Helpers shared by tabosd's integration tests: a real `tabosd` process in its own
//! temporary directory, stopped by a drop guard; child processes re-executed from the
//! test binary; and a bound on every wait, so a broken server fails a test instead of
//! hanging it. Nothing here measures time: timeouts only turn hangs into failures.

#![allow(dead_code)] // each test file uses a different part of this module

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use tabos_client::Client;

/// Longest wait for a started tabosd to accept a client.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for anything that should finish (a process exit, a call, a detach).
pub const HANG_TIMEOUT: Duration = Duration::from_secs(60);
/// Environment variable that turns a run of this test binary into a child process.
pub const CHILD_ENV: &str = "TABOS_TEST_CHILD";
/// Line a child prints on stdout once it is connected.
pub const READY_LINE: &str = "TABOS-CHILD-READY";

/// The tabosd built for these tests.
pub fn tabosd_exe() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tabosd"))
}

/// A fresh, empty directory for one test (removed by [`TestDir`]'s drop).
#[derive(Debug)]
pub struct TestDir {
    pub path: PathBuf,
}

impl TestDir {
    pub fn new(tag: &str) -> TestDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("tabos-{tag}-{}-{n}", std::process::id());
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

    /// Where this test's tabosd listens.
    pub fn socket(&self) -> PathBuf {
        self.path.join("s.sock")
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Send `signal` (`TERM`, `KILL`, `INT`...) to `pid` with kill(1).
pub fn send_signal(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Wait for `child` to exit, at most `timeout`; `None` if it is still running.
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

/// Run `f` on a thread and return its result; fail the test if it takes longer than
/// `timeout` (a hang) or panics. A hung thread is left behind: the test fails anyway.
pub fn within<T: Send + 'static>(
    what: &str,
    timeout: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(timeout) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: still not done after {timeout:?}: hung")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: the thread panicked"),
    }
}

/// Poll `check` until it returns `Some`, at most `timeout`.
pub fn poll_until<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not true after {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running tabosd, terminated (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Daemon {
    child: Option<Child>,
    pid: u32,
    socket: PathBuf,
    log: PathBuf,
    dir: TestDir,
}

/// The flags every test server gets: two partitions, a short spin, no pinning (tests
/// run side by side on few cores), and a data directory beside the socket (durability
/// `sync`, the default, unless a test says otherwise).
pub fn base_args(socket: &Path) -> Vec<String> {
    vec![
        "--socket".into(),
        socket.display().to_string(),
        "--data-dir".into(),
        socket.with_file_name("data").display().to_string(),
        "--partitions".into(),
        "2".into(),
        "--spin-us".into(),
        "50".into(),
        "--no-pin".into(),
    ]
}

impl Daemon {
    /// Start a tabosd with [`base_args`] and `extra` flags and wait until a client
    /// can connect.
    pub fn start(tag: &str, extra: &[&str]) -> Daemon {
        Daemon::start_exe(&tabosd_exe(), tag, extra)
    }

    /// As [`Daemon::start`], with the tabosd binary at `exe`.
    pub fn start_exe(exe: &Path, tag: &str, extra: &[&str]) -> Daemon {
        Daemon::start_in(exe, TestDir::new(tag), extra)
    }

    /// As [`Daemon::start_exe`], listening at `dir`'s socket path (which may exist).
    pub fn start_in(exe: &Path, dir: TestDir, extra: &[&str]) -> Daemon {
        let socket = dir.socket();
        let log = dir.path.join("tabosd.log");
        let child = Command::new(exe)
            .args(base_args(&socket))
            .args(extra)
            .env_remove("TABOS_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
        let mut daemon = Daemon {
            pid: child.id(),
            child: Some(child),
            socket,
            log,
            dir,
        };
        daemon.wait_ready();
        daemon
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child_mut().try_wait().expect("try_wait") {
                panic!(
                    "tabosd exited during start-up with {status}; its log:\n{}",
                    self.log()
                );
            }
            if Client::connect(&self.socket).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tabosd did not accept a client within {START_TIMEOUT:?}; its log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn child_mut(&mut self) -> &mut Child {
        self.child.as_mut().expect("the daemon process")
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn dir(&self) -> &Path {
        &self.dir.path
    }

    /// What tabosd wrote on stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A new client of this daemon.
    pub fn connect(&self) -> Client {
        Client::connect(&self.socket).unwrap_or_else(|e| {
            panic!(
                "cannot connect to the test tabosd: {e}; its log:\n{}",
                self.log()
            )
        })
    }

    /// Send a signal to the daemon.
    pub fn signal(&self, signal: &str) {
        send_signal(self.pid, signal);
    }

    /// Whether the daemon process is still running.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().expect("try_wait").is_none(),
            None => false,
        }
    }

    /// Wait for the daemon to exit on its own (after a signal); fails the test after
    /// [`HANG_TIMEOUT`].
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_exit(self.child_mut(), HANG_TIMEOUT);
        match status {
            Some(status) => status,
            None => panic!(
                "tabosd did not exit within {HANG_TIMEOUT:?}; its log:\n{}",
                self.log()
            ),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if child.try_wait().ok().flatten().is_none() {
            send_signal(self.pid, "TERM");
            if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!(
                "--- tabosd log ({}) ---\n{}",
                self.log.display(),
                self.log()
            );
        }
    }
}

/// Start this test binary again as a child process that runs only the (ignored) test
/// `entry`, with [`CHILD_ENV`] set to `role`. Its stdout and stderr are piped.
pub fn spawn_child(entry: &str, role: &str) -> Child {
    child_command(entry, role)
        .stdin(Stdio::null())
        .spawn()
        .expect("re-execute the test binary")
}

/// As [`spawn_child`], with stdin piped too (for [`release_child`]).
pub fn spawn_child_held(entry: &str, role: &str) -> Child {
    child_command(entry, role)
        .stdin(Stdio::piped())
        .spawn()
        .expect("re-execute the test binary")
}

fn child_command(entry: &str, role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args([
            entry,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, role)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Let a child started with [`spawn_child_held`] go on past [`wait_for_release`].
pub fn release_child(child: &mut Child) {
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin.write_all(b"go\n").expect("release the child");
}

/// In a child: block until the parent calls [`release_child`].
pub fn wait_for_release() {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .expect("read the release line");
    assert_eq!(line.trim(), "go", "released with {line:?}");
}

/// Read `child`'s stdout until it prints [`READY_LINE`], then keep draining it in
/// the background. Fails after [`HANG_TIMEOUT`].
pub fn wait_child_ready(child: &mut Child) {
    let stdout = child.stdout.take().expect("piped stdout");
    let reader = within("child start-up", HANG_TIMEOUT, move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line).expect("read child stdout");
            assert!(n > 0, "the child exited before it was ready");
            if line.contains(READY_LINE) {
                return reader;
            }
        }
    });
    std::thread::spawn(move || {
        let mut reader = reader;
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
}

/// Wait for `child` to exit and collect its output; kills it and fails the test
/// after `timeout`.
pub fn child_output(mut child: Child, timeout: Duration) -> Output {
    let pid = child.id();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = drain(stdout.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(stderr.map(|p| Box::new(p) as Box<dyn Read + Send>));
    let status = match wait_exit(&mut child, timeout) {
        Some(status) => status,
        None => {
            send_signal(pid, "KILL");
            let _ = child.wait();
            panic!("child process {pid} did not finish within {timeout:?}");
        }
    };
    Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}

/// Fail the test unless the child exited 0; shows its output.
pub fn assert_child_ok(what: &str, output: &Output) {
    assert!(
        output.status.success(),
        "{what} failed with {}:\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The role given to this process by [`spawn_child`], if it is a child.
pub fn child_role() -> Option<String> {
    std::env::var(CHILD_ENV).ok()
}

/// Clients attached to each partition, from `status()`.
pub fn clients_per_partition(client: &mut Client) -> Vec<u32> {
    client
        .status()
        .expect("status")
        .iter()
        .map(|s| s.clients)
        .collect()
}

/// A TCP port on `ip` that nothing listens on now: bound to port 0 and released. For
/// cluster files, which need the port before the node starts (a tiny race with other
/// processes remains; tests that can pass port 0 should).
pub fn free_port(ip: std::net::Ipv4Addr) -> u16 {
    let listener = std::net::TcpListener::bind((ip, 0))
        .unwrap_or_else(|e| panic!("cannot bind {ip}:0 to find a free port: {e}"));
    listener.local_addr().expect("the bound address").port()
}

/// Write a fresh cluster secret (44 bytes of base64 text and a newline) to `dir/name`.
pub fn write_secret(dir: &Path, name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let seed = format!("{}-{n}-{:?}", std::process::id(), Instant::now());
    let hash = tabos_transport::wire::key_hash(seed.as_bytes());
    let path = dir.join(name);
    std::fs::write(&path, format!("tabos-test-secret-{hash:016x}-{n:08}\n"))
        .expect("write the secret file");
    path
}

/// The TCP address a daemon started with `--listen HOST:0` bound, read from its log.
pub fn listen_addr(daemon: &Daemon) -> std::net::SocketAddr {
    poll_until("tabosd logs its TCP address", START_TIMEOUT, || {
        let log = daemon.log();
        let line = log
            .lines()
            .find(|l| l.contains("accepts remote calls on "))?;
        let rest = line.split("accepts remote calls on ").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// Start tabosd on `socket` with its data in `data` (stderr appended to `log`) plus
/// `extra` flags, and wait until a client can connect. For tests that restart a node
/// on the same data directory (a [`Daemon`] owns and removes its directory).
pub fn start_on_data_dir(socket: &Path, data: &Path, log: &Path, extra: &[&str]) -> Child {
    let mut child = Command::new(tabosd_exe())
        .arg("--socket")
        .arg(socket)
        .arg("--data-dir")
        .arg(data)
        .args(["--partitions", "2", "--spin-us", "50", "--no-pin"])
        .args(extra)
        .env_remove("TABOS_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::options()
                .create(true)
                .append(true)
                .open(log)
                .expect("open the log"),
        )
        .spawn()
        .expect("start tabosd");
    let deadline = Instant::now() + START_TIMEOUT;
    while Client::connect(socket).is_err() {
        if let Some(status) = child.try_wait().expect("try_wait") {
            panic!(
                "tabosd exited with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            Instant::now() < deadline,
            "tabosd did not start:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// The `tabos` command line next to the tabosd under test. Built (once per run) with
/// `cargo build` in tabosd's profile and target directory (a no-op when it is up to
/// date), so a stale binary, or one of another profile, is never tested.
pub fn tabos_cli() -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let tabosd = tabosd_exe();
            let profile_dir = tabosd.parent().expect("tabosd has a directory");
            let target_dir = profile_dir.parent().expect("a target directory");
            let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => "dev",
                Some(name) => name,
            };
            let build = Command::new(env!("CARGO"))
                .args(["build", "--quiet", "-p", "tabos-client", "--bin", "tabos"])
                .args(["--profile", profile])
                .arg("--target-dir")
                .arg(target_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run cargo build");
            assert_child_ok(
                "cargo build -p tabos-client",
                &child_output(build, HANG_TIMEOUT * 5),
            );
            let exe = profile_dir.join("tabos");
            assert!(exe.exists(), "cargo built no {}", exe.display());
            exe
        })
        .clone()
}

/// Run `tabos --connect SOCKET ARGS...` with stdin closed.
pub fn run_tabos(socket: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(tabos_cli());
    command.arg("--connect").arg(socket).args(args);
    run_output(command)
}

/// Run `command` with stdin closed and collect its output; fails after
/// [`HANG_TIMEOUT`].
pub fn run_output(mut command: Command) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    child_output(child, HANG_TIMEOUT)
}

// ---- Remote (TCP) clients and raw protocol bytes, for tests/net.rs ----

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;
use std::thread::JoinHandle;
use tabos_client::{ids, ConnectOptions};
use tabos_transport::handshake::{Welcome, HANDSHAKE_MAGIC};
use tabos_transport::net::{
    prove, read_secret_file, NetChallenge, NetHello, NET_MAGIC, ROLE_CLIENT,
};
use tabos_transport::wire::Header;

/// How long a node may keep a connection that never finishes its handshake (the
/// node's limit is 5 s; this only turns a connection kept forever into a failure).
pub const DROP_TIMEOUT: Duration = Duration::from_secs(30);

/// One tabosd with two partitions listening on 127.0.0.1 (a port it picks).
pub struct NetNode {
    pub daemon: Daemon,
    pub addr: SocketAddr,
    pub secret: PathBuf,
    pub keys: TestDir,
}

impl NetNode {
    pub fn start(tag: &str, mode: &str) -> NetNode {
        let keys = TestDir::new(&format!("{tag}-keys"));
        let secret = write_secret(&keys.path, "secret");
        let secret_arg = secret.display().to_string();
        let daemon = Daemon::start(
            &format!("{tag}-{mode}"),
            &[
                "--listen",
                "127.0.0.1:0",
                "--secret-file",
                &secret_arg,
                "--net",
                mode,
            ],
        );
        let addr = listen_addr(&daemon);
        if mode == "uring" && daemon.log().contains("io_uring unavailable") {
            eprintln!(
                "note: io_uring is unavailable here: this `uring` case ran on the socket driver"
            );
        }
        NetNode {
            daemon,
            addr,
            secret,
            keys,
        }
    }

    pub fn remote_as(&self, act_as: Option<&str>) -> Client {
        let options = ConnectOptions {
            act_as: act_as.map(str::to_string),
            secret_file: Some(self.secret.clone()),
        };
        Client::connect_with(self.addr.to_string(), &options).unwrap_or_else(|e| {
            panic!(
                "remote connect to {}: {e}; log:\n{}",
                self.addr,
                self.daemon.log()
            )
        })
    }

    pub fn remote(&self) -> Client {
        self.remote_as(None)
    }

    pub fn secret_bytes(&self) -> Vec<u8> {
        read_secret_file(&self.secret).expect("the test secret")
    }

    /// The node still runs and serves a new remote and a new local client.
    pub fn assert_serves_new_clients(&mut self) {
        assert!(
            self.daemon.is_running(),
            "tabosd died:\n{}",
            self.daemon.log()
        );
        let mut remote = self.remote();
        let mut local = self.daemon.connect();
        for p in 0..2 {
            remote.null(p).expect("null from a new remote client");
            local.null(p).expect("null from a new local client");
        }
        assert_eq!(
            remote.call(ids::ECHO, 1, b"still here"),
            Ok(b"still here".to_vec())
        );
    }

    pub fn wait_log(&self, needle: &str) {
        poll_until(&format!("the log says `{needle}`"), HANG_TIMEOUT, || {
            self.daemon.log().contains(needle).then_some(())
        });
    }
}

/// Connect with raw bytes; reads give up (fail) after [`HANG_TIMEOUT`].
pub fn raw(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(HANG_TIMEOUT)).unwrap();
    stream.set_nodelay(true).unwrap();
    stream
}

pub fn read_pod<T: bytemuck::Pod>(stream: &mut TcpStream) -> std::io::Result<T> {
    let mut raw = vec![0u8; std::mem::size_of::<T>()];
    stream.read_exact(&mut raw)?;
    Ok(bytemuck::pod_read_unaligned(&raw))
}

/// A raw connection that proved `secret`: the stream and the node's welcome.
pub fn raw_handshake(addr: SocketAddr, secret: &[u8]) -> (TcpStream, Welcome) {
    let mut stream = raw(addr);
    let hello = NetHello::new(ROLE_CLIENT, None);
    stream.write_all(bytemuck::bytes_of(&hello)).unwrap();
    let challenge: NetChallenge = read_pod(&mut stream).expect("the challenge");
    assert_eq!((challenge.magic, challenge.status), (NET_MAGIC, 0));
    let proof = prove(secret, &challenge.nonce, &hello);
    stream.write_all(bytemuck::bytes_of(&proof)).unwrap();
    let welcome: Welcome = read_pod(&mut stream).expect("the welcome");
    assert_eq!((welcome.magic, welcome.status), (HANDSHAKE_MAGIC, 0));
    (stream, welcome)
}

pub fn send_frame(stream: &mut TcpStream, header: Header, payload: &[u8]) {
    let mut bytes = bytemuck::bytes_of(&header).to_vec();
    bytes.extend_from_slice(payload);
    stream.write_all(&bytes).expect("send a frame");
}

pub fn read_frame(stream: &mut TcpStream) -> (Header, Vec<u8>) {
    let header: Header = read_pod(stream).expect("a reply frame");
    let mut payload = vec![0u8; header.payload_len as usize];
    stream.read_exact(&mut payload).expect("the reply payload");
    (header, payload)
}

/// Read until the node closes `stream` (end of stream or a reset); fails if it is
/// still open after `timeout`.
pub fn assert_closed(stream: &mut TcpStream, timeout: Duration) {
    stream.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the node kept the connection open for {timeout:?}")
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return, // reset: closed too
        }
    }
}

/// A remote client calling in a loop, on one connection and its own thread, until
/// told to stop. It makes thousands of calls, so it hangs while the client library
/// leaks its per-node in-flight count (see `a_remote_client_makes_many_calls` in
/// tests/net.rs).
pub struct Honest {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Honest {
    pub fn start(node: &NetNode) -> Honest {
        let stop = Arc::new(AtomicBool::new(false));
        let calls = Arc::new(AtomicU64::new(0));
        let mut client = node.remote();
        let thread = std::thread::spawn({
            let (stop, calls) = (stop.clone(), calls.clone());
            move || {
                for i in 0u64.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let key = format!("honest-{}", i % 64).into_bytes();
                    let value = i.to_le_bytes();
                    client.kv_put(&key, &value).expect("honest kv_put");
                    assert_eq!(
                        client.kv_get(&key).expect("honest kv_get"),
                        Some(value.to_vec())
                    );
                    let echo = client.call(ids::ECHO, (i % 2) as u32, &value);
                    assert_eq!(echo.expect("honest echo"), value);
                    calls.fetch_add(3, Ordering::Relaxed);
                }
            }
        });
        let honest = Honest {
            stop,
            calls,
            thread: Some(thread),
        };
        honest.assert_progressing();
        honest
    }

    /// The honest client makes new successful calls.
    pub fn assert_progressing(&self) {
        let before = self.calls.load(Ordering::Relaxed);
        poll_until("the honest client calls on", HANG_TIMEOUT, || {
            let thread_died = self.thread.as_ref().is_some_and(|t| t.is_finished());
            assert!(!thread_died, "the honest client failed");
            (self.calls.load(Ordering::Relaxed) >= before + 30).then_some(())
        });
    }

    pub fn finish(mut self) {
        self.assert_progressing();
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("the thread");
        within("the honest client stops", HANG_TIMEOUT, move || {
            thread.join()
        })
        .expect("the honest client failed");
    }
}

impl Drop for Honest {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
