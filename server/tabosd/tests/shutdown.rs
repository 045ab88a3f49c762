//! Guards how tabosd starts and stops around its socket: SIGTERM or SIGINT with calls
//! in flight ends the process with status 0 and removes the socket, and clients then
//! get a transport error instead of hanging; a second tabosd refuses a socket that is
//! served; a stale socket file is replaced, anything else at that path is left alone.

mod common;

use common::{
    base_args, child_output, poll_until, tabosd_exe, within, Daemon, TestDir, HANG_TIMEOUT,
};
use std::os::unix::net::UnixListener;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tabos_client::{ids, Client, Error, Status};
use tabos_procs::builtin::kv_args;

/// A thread that pipelines calls (`make(i)` gives proc id, partition and args) in
/// batches until the connection breaks. Returns how many completed and the error.
/// Every completion must have a status in `accepted`.
fn pipeline_until_broken(
    socket: std::path::PathBuf,
    progress: Arc<AtomicUsize>,
    batch: usize,
    accepted: &'static [Status],
    make: impl Fn(&Client, usize) -> (u32, u32, Vec<u8>) + Send + 'static,
) -> std::thread::JoinHandle<(usize, Error)> {
    std::thread::spawn(move || {
        let mut client = Client::connect(&socket).expect("connect");
        let mut next = 0usize;
        let mut done = 0usize;
        loop {
            for _ in 0..batch {
                let (proc_id, partition, args) = make(&client, next);
                next += 1;
                if let Err(e) = client.submit(proc_id, partition, &args) {
                    return (done, e);
                }
            }
            let mut out = Vec::new();
            let want = client.in_flight();
            if let Err(e) = client.wait(&mut out, want) {
                return (done, e);
            }
            for c in &out {
                let status = Status::from_code(c.status_code);
                assert!(
                    status.is_some_and(|s| accepted.contains(&s)),
                    "call {} completed with status {}",
                    c.request_id,
                    c.status_code
                );
            }
            done += out.len();
            progress.store(done, Ordering::Release);
        }
    })
}

fn kv_put_call(client: &Client, i: usize) -> (u32, u32, Vec<u8>) {
    let key = format!("inflight-{i}");
    let partition = client.partition_for_key(key.as_bytes());
    (ids::KV_PUT, partition, kv_args(key.as_bytes(), b"value"))
}

#[test]
fn sigterm_with_calls_in_flight_exits_cleanly() {
    let mut daemon = Daemon::start("term", &[]);
    let socket = daemon.socket().to_path_buf();
    let mut idle = daemon.connect();
    idle.null(0).expect("null before the signal");
    let progress = Arc::new(AtomicUsize::new(0));
    let worker = pipeline_until_broken(
        socket.clone(),
        progress.clone(),
        64,
        &[Status::Ok],
        kv_put_call,
    );
    poll_until("the pipelining client made progress", HANG_TIMEOUT, || {
        (progress.load(Ordering::Acquire) >= 500).then_some(())
    });
    daemon.signal("TERM");
    let status = daemon.wait_exit();
    assert!(
        status.success(),
        "tabosd exited with {status}; log:\n{}",
        daemon.log()
    );
    assert!(!socket.exists(), "tabosd left its socket file behind");
    let (done, error) = within("the client with calls in flight", HANG_TIMEOUT, move || {
        worker.join().expect("worker thread")
    });
    assert!(done >= 500);
    assert!(matches!(error, Error::Transport(_)), "got {error:?}");
    // A client that was idle during the shutdown calls now: an error, not a hang.
    let result = within("a call after tabosd exited", HANG_TIMEOUT, move || {
        idle.null(1)
    });
    assert!(matches!(result, Err(Error::Transport(_))), "got {result:?}");
    let refused = Client::connect(&socket).expect_err("nobody serves the socket");
    assert!(matches!(refused, Error::Transport(_)));
    assert!(
        refused.to_string().contains("is tabosd running"),
        "unhelpful message: {refused}"
    );
}

#[test]
fn sigint_without_clients_exits_cleanly() {
    let mut daemon = Daemon::start("int", &[]);
    let socket = daemon.socket().to_path_buf();
    daemon.signal("INT");
    let status = daemon.wait_exit();
    assert!(status.success(), "tabosd exited with {status}");
    assert!(!socket.exists(), "tabosd left its socket file behind");
}

/// Replicated writes in flight at SIGTERM: every partition must run every job that
/// was handed out, and none may be handed out to a partition that already stopped.
///
/// BUG (this test hangs, and tabosd spins forever, when the race hits): a partition
/// exits as soon as it has no work after `Command::Shutdown`, while another partition
/// that has not yet taken its own Shutdown may still submit a broadcast job to it; the
/// origin then waits for that job forever (`pending` never empties) and tabosd never
/// exits.
#[test]
fn sigterm_during_replicated_writes_exits() {
    // The race hit in about one round in ten on a 2-core machine; each round is short.
    const ROUNDS: usize = 30;
    for round in 0..ROUNDS {
        let mut daemon = Daemon::start("rkvterm", &[]);
        let socket = daemon.socket().to_path_buf();
        let progress: Vec<Arc<AtomicUsize>> =
            (0..2).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let workers: Vec<_> = (0..2u32)
            .map(|origin| {
                pipeline_until_broken(
                    socket.clone(),
                    progress[origin as usize].clone(),
                    1000,
                    &[Status::Ok, Status::ShuttingDown],
                    move |_, i| {
                        let key = format!("rt-{}", i % 32);
                        (ids::RKV_PUT, origin, kv_args(key.as_bytes(), b"v"))
                    },
                )
            })
            .collect();
        poll_until("replicated writers made progress", HANG_TIMEOUT, || {
            progress
                .iter()
                .all(|p| p.load(Ordering::Acquire) >= 200)
                .then_some(())
        });
        daemon.signal("TERM");
        let status = daemon.wait_exit();
        assert!(
            status.success(),
            "round {round}: tabosd exited with {status}"
        );
        within("the replicated writers", HANG_TIMEOUT, move || {
            for w in workers {
                let (_, error) = w.join().expect("writer thread");
                assert!(matches!(error, Error::Transport(_)), "got {error:?}");
            }
        });
    }
}

#[test]
fn a_second_tabosd_refuses_a_served_socket() {
    let daemon = Daemon::start("twice", &[]);
    let child = Command::new(tabosd_exe())
        .args(base_args(daemon.socket()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a second tabosd");
    let output = child_output(child, HANG_TIMEOUT);
    assert!(!output.status.success(), "the second tabosd started");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&daemon.socket().display().to_string()),
        "the refusal names the socket: {stderr}"
    );
    // The first one still serves, on the same socket.
    let mut client = daemon.connect();
    client.null(0).expect("the first tabosd still serves");
    assert!(daemon.socket().exists());
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let dir = TestDir::new("stale");
    let socket = dir.socket();
    drop(UnixListener::bind(&socket).expect("bind"));
    assert!(socket.exists(), "a closed listener leaves its file");
    let stale = Client::connect(&socket).expect_err("nobody listens");
    assert!(stale.to_string().contains("stale"), "message: {stale}");
    let daemon = Daemon::start_in(&tabosd_exe(), dir, &[]);
    let mut client = daemon.connect();
    client
        .kv_put(b"k", b"v")
        .expect("served after replacing the stale socket");
}

/// BUG (fails while it stands): `bind_socket` removes whatever sits at `--socket`
/// when connecting to it fails, so a mistyped `--socket` deletes a regular file. It
/// should replace only a socket (check `FileTypeExt::is_socket` on
/// `symlink_metadata`) and otherwise refuse to start.
#[test]
fn a_regular_file_at_the_socket_path_is_left_alone() {
    let dir = TestDir::new("notsock");
    let path = dir.socket();
    std::fs::write(&path, b"precious").expect("write a regular file");
    let child = Command::new(tabosd_exe())
        .args(base_args(&path))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tabosd");
    let mut child = child;
    let started = poll_until("tabosd exits or serves", HANG_TIMEOUT, || {
        if child.try_wait().expect("try_wait").is_some() {
            Some(false)
        } else {
            Client::connect(&path).is_ok().then_some(true)
        }
    });
    if started {
        let _ = child.kill();
    }
    let output = child_output(child, HANG_TIMEOUT);
    assert_eq!(
        std::fs::read(&path).ok().as_deref(),
        Some(&b"precious"[..]),
        "tabosd deleted or replaced a regular file at --socket"
    );
    assert!(!output.status.success(), "tabosd started on a regular file");
}

#[test]
fn an_unusable_socket_path_is_reported() {
    let dir = TestDir::new("nodir");
    let path = dir.path.join("missing-dir").join("s.sock");
    let child = Command::new(tabosd_exe())
        .args(base_args(&path))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tabosd");
    let output = child_output(child, HANG_TIMEOUT);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("missing-dir"),
        "the error names the path: {stderr}"
    );
}
