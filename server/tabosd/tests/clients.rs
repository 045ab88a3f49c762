//! Guards serving several client processes at once: four processes call the key-value
//! table side by side, each checking its own results; a client process killed while
//! connected is detached (the node's client count drops back) and the others go on.

mod common;

use common::{
    assert_child_ok, child_output, child_role, clients_per_partition, poll_until, release_child,
    spawn_child, spawn_child_held, wait_child_ready, wait_for_release, within, Daemon,
    HANG_TIMEOUT, READY_LINE,
};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use tabos_client::Client;

/// Name of the test that a child process runs.
const CHILD_ENTRY: &str = "child_entry";
const CHILD_PROCESSES: usize = 4;
const CHILD_KEYS: usize = 2000;

fn child_key(child: usize, i: usize) -> Vec<u8> {
    format!("child{child}-key{i}").into_bytes()
}

fn child_value(child: usize, i: usize) -> Vec<u8> {
    format!("value-{child}-{i}-{}", i * 31 + child).into_bytes()
}

/// Child role `kv:<id>:<socket>`: put and read back its own keys.
fn run_kv_child(id: usize, socket: &Path) {
    let mut client = Client::connect(socket).expect("child connects");
    println!("{READY_LINE}");
    wait_for_release(); // all children start calling together
    for i in 0..CHILD_KEYS {
        client
            .kv_put(&child_key(id, i), &child_value(id, i))
            .expect("kv_put");
        let got = client.kv_get(&child_key(id, i)).expect("kv_get");
        assert_eq!(got, Some(child_value(id, i)), "child {id} key {i}");
    }
    // Everything is still there at the end (no other process touched these keys).
    for i in (0..CHILD_KEYS).step_by(7) {
        let got = client.kv_get(&child_key(id, i)).expect("kv_get");
        assert_eq!(
            got,
            Some(child_value(id, i)),
            "child {id} key {i} at the end"
        );
    }
}

/// Child role `busy:<socket>`: call until killed.
fn run_busy_child(socket: &Path) {
    let mut client = Client::connect(socket).expect("child connects");
    client.null(0).expect("null");
    println!("{READY_LINE}");
    let mut i = 0u64;
    loop {
        let key = format!("busy-{}", i % 100);
        client
            .kv_put(key.as_bytes(), &i.to_le_bytes())
            .expect("kv_put");
        i += 1;
    }
}

/// Entry point of child processes (see `common::spawn_child`); ignored in a normal run.
#[test]
#[ignore = "entry point of the child processes that the other tests in this file start"]
fn child_entry() {
    let Some(role) = child_role() else {
        eprintln!("child_entry: not started as a child process; nothing to do");
        return;
    };
    let mut parts = role.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("kv"), Some(id), Some(socket)) => {
            run_kv_child(id.parse().expect("child id"), Path::new(socket))
        }
        (Some("busy"), Some(socket), None) => run_busy_child(Path::new(socket)),
        _ => panic!("unknown child role {role}"),
    }
}

#[test]
fn client_processes_call_at_once() {
    let daemon = Daemon::start("procs", &[]);
    let socket = daemon.socket().display().to_string();
    let mut children: Vec<_> = (0..CHILD_PROCESSES)
        .map(|id| spawn_child_held(CHILD_ENTRY, &format!("kv:{id}:{socket}")))
        .collect();
    for child in &mut children {
        wait_child_ready(child);
    }
    let mut client = daemon.connect();
    let attached = clients_per_partition(&mut client);
    assert!(
        attached.iter().all(|n| *n as usize > CHILD_PROCESSES),
        "every child and this client are attached to every partition: {attached:?}"
    );
    for child in &mut children {
        release_child(child);
    }
    for (id, child) in children.into_iter().enumerate() {
        let output = child_output(child, HANG_TIMEOUT);
        assert_child_ok(&format!("client process {id}"), &output);
    }
    for id in 0..CHILD_PROCESSES {
        for i in 0..CHILD_KEYS {
            assert_eq!(
                client.kv_get(&child_key(id, i)).expect("kv_get"),
                Some(child_value(id, i)),
                "key {i} of child {id}"
            );
        }
    }
}

#[test]
fn a_killed_client_process_is_detached() {
    let daemon = Daemon::start("killed", &[]);
    let mut observer = daemon.connect();
    // An honest client keeps calling from a thread the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let honest = {
        let socket = daemon.socket().to_path_buf();
        let (stop, calls) = (stop.clone(), calls.clone());
        std::thread::spawn(move || {
            let mut client = Client::connect(&socket).expect("connect");
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("honest-{}", i % 50);
                client
                    .kv_put(key.as_bytes(), &i.to_le_bytes())
                    .expect("honest kv_put");
                let got = client.kv_get(key.as_bytes()).expect("honest kv_get");
                assert_eq!(got, Some(i.to_le_bytes().to_vec()));
                i += 1;
                calls.store(i, Ordering::Relaxed);
            }
        })
    };
    let baseline = poll_until("the honest clients are attached", HANG_TIMEOUT, || {
        let counts = clients_per_partition(&mut observer);
        counts.iter().all(|n| *n == 2).then_some(counts)
    });
    let mut child = spawn_child(CHILD_ENTRY, &format!("busy:{}", daemon.socket().display()));
    wait_child_ready(&mut child);
    poll_until("the child is attached", HANG_TIMEOUT, || {
        let counts = clients_per_partition(&mut observer);
        counts.iter().all(|n| *n == 3).then_some(())
    });
    common::send_signal(child.id(), "KILL");
    let status = common::wait_exit(&mut child, HANG_TIMEOUT).expect("the child died");
    assert!(!status.success());
    poll_until("the killed client is detached", HANG_TIMEOUT, || {
        (clients_per_partition(&mut observer) == baseline).then_some(())
    });
    // The other clients keep working.
    let before = calls.load(Ordering::Relaxed);
    poll_until("the honest client goes on", HANG_TIMEOUT, || {
        (calls.load(Ordering::Relaxed) > before + 100).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    within("the honest client", HANG_TIMEOUT, move || {
        honest.join().expect("honest thread")
    });
    observer.kv_put(b"after", b"kill").unwrap();
    assert_eq!(observer.kv_get(b"after").unwrap(), Some(b"kill".to_vec()));
}
