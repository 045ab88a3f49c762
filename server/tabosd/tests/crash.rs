//! Guards crash safety of `--durability sync` end to end: load over kv, the scheduler,
//! IPC and the filesystem while tabosd is killed with SIGKILL at random moments, then
//! restarted on the same data directory. Every acknowledged operation must be there,
//! the state must be a prefix of the acknowledged history (at most the one operation in
//! flight at the kill may be there too), and nothing may be half-applied (a file write
//! spans several block rows: a torn one matches neither the old nor the new content).
//! Beside it, a pipelined loader keeps many kv puts in flight, enough to keep a partition
//! busy so that group commit defers its flushes: after each restart every put it saw
//! acknowledged is there, and on each partition the puts present are a prefix of the
//! ones it sent. A third client asks for snapshots all the while, so kills also land
//! while a forked child writes one. `TABOS_CRASH_CYCLES` sets the kill cycles (default
//! 20).

mod common;

use common::{send_signal, start_on_data_dir, wait_exit, within, TestDir, HANG_TIMEOUT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, VecDeque};
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tabos_client::{Client, Error, Policy};
use tabos_procs::builtin::kv_args;
use tabos_procs::ids;

const RECEIVER: u64 = 42;
const FILE_BYTES: usize = 5000; // three 2 KiB blocks: a multi-row transaction
const USER: &str = "crash";

/// One operation, as the model sees it.
#[derive(Clone, Debug)]
enum Op {
    Put { key: String, value: String },
    Send { seq: u64 },
    Recv,
    Submit { task_id: u64 },
    Write { file: String, seq: u64 },
}

/// What the client knows was acknowledged, plus the operation in flight.
#[derive(Debug, Default)]
struct Model {
    kv: BTreeMap<String, String>,
    queue: VecDeque<u64>,
    tasks: Vec<u64>,
    files: BTreeMap<String, u64>,
    in_flight: Option<Op>,
    acked: u64,
}

impl Model {
    fn apply(&mut self, op: &Op) {
        match op {
            Op::Put { key, value } => {
                self.kv.insert(key.clone(), value.clone());
            }
            Op::Send { seq } => self.queue.push_back(*seq),
            Op::Recv => {
                self.queue.pop_front();
            }
            Op::Submit { task_id } => self.tasks.push(*task_id),
            Op::Write { file, seq } => {
                self.files.insert(file.clone(), *seq);
            }
        }
    }
}

/// Puts the pipelined loader keeps in flight, and the most it sends in one cycle.
const PIPELINED_DEPTH: usize = 512;
const PIPELINED_MAX: u64 = 20_000;

/// What the pipelined loader sent and saw acknowledged in one cycle: put `i` stores
/// [`pipelined_value`]`(cycle, i)` under [`pipelined_key`]`(i)`, so the keys stay the
/// same from cycle to cycle (the state, and so each snapshot, stays small) and the
/// value says which cycle's put is there.
#[derive(Debug, Default)]
struct Pipelined {
    /// Put numbers in the order sent, per partition.
    sent: Vec<Vec<u64>>,
    acked: Vec<u64>,
}

fn pipelined_key(i: u64) -> String {
    format!("p{i}")
}

/// The value of put `i` of `cycle`, padded to 32 bytes.
fn pipelined_value(cycle: u32, i: u64) -> Vec<u8> {
    let mut value = format!("c{cycle}-{i}").into_bytes();
    value.resize(32, b'.');
    value
}

/// Keep up to [`PIPELINED_DEPTH`] kv puts in flight until the kill (or
/// [`PIPELINED_MAX`] puts).
fn load_pipelined(socket: &Path, cycle: u32, record: &Mutex<Pipelined>) {
    let Ok(mut client) = Client::connect(socket) else {
        return;
    };
    record.lock().unwrap().sent = vec![Vec::new(); client.partition_count() as usize];
    let mut puts: std::collections::HashMap<u64, u64> = Default::default();
    let mut done = Vec::new();
    let mut next = 0u64;
    loop {
        while puts.len() < PIPELINED_DEPTH && next < PIPELINED_MAX {
            let (i, key) = (next, pipelined_key(next));
            next += 1;
            let p = client.partition_for_key(key.as_bytes());
            let args = kv_args(key.as_bytes(), &pipelined_value(cycle, i));
            // Noted as sent first: it may reach the server before submit returns.
            record.lock().unwrap().sent[p as usize].push(i);
            match client.submit(ids::KV_PUT, p, &args) {
                Ok(id) => puts.insert(id, i),
                Err(_) => return,
            };
        }
        if puts.is_empty() {
            return;
        }
        done.clear();
        if client.wait(&mut done, 1).is_err() {
            return; // killed
        }
        let mut r = record.lock().unwrap();
        for c in &done {
            assert_eq!(
                c.status_code, 0,
                "a pipelined put failed while the server ran"
            );
            r.acked.extend(puts.remove(&c.request_id));
        }
    }
}

/// After a restart: every acknowledged pipelined put is there, and on each partition
/// the puts present are a prefix of those sent (no put applied after a lost one).
fn check_pipelined(socket: &Path, record: &Pipelined, cycle: u32) {
    let mut client = Client::connect(socket).expect("connect after restart");
    let mut present = std::collections::HashSet::new();
    for (p, sent) in record.sent.iter().enumerate() {
        let mut found = Vec::with_capacity(sent.len());
        for chunk in sent.chunks(512) {
            let ids: Vec<u64> = chunk
                .iter()
                .map(|&i| {
                    let args = kv_args(pipelined_key(i).as_bytes(), b"");
                    client.submit(ids::KV_GET, p as u32, &args).unwrap()
                })
                .collect();
            for (&i, c) in chunk.iter().zip(client.wait_for(&ids).unwrap()) {
                let this_cycle = c.status_code == 0 && c.reply == pipelined_value(cycle, i);
                if c.status_code == 0 && !this_cycle {
                    // An earlier cycle's put of the same key, nothing else.
                    let earlier = std::str::from_utf8(&c.reply)
                        .ok()
                        .and_then(|v| v.strip_prefix('c')?.split_once('-'))
                        .and_then(|(k, _)| k.parse::<u32>().ok())
                        .filter(|&k| k < cycle && c.reply == pipelined_value(k, i));
                    assert!(
                        earlier.is_some(),
                        "cycle {cycle}: put {i} has a wrong value {:?}",
                        String::from_utf8_lossy(&c.reply)
                    );
                }
                found.push(this_cycle);
            }
        }
        let prefix = found.iter().take_while(|&&there| there).count();
        assert!(
            found[prefix..].iter().all(|&there| !there),
            "cycle {cycle} p{p}: put {} is there but put {} before it is not: not a prefix",
            sent[prefix..][found[prefix..].iter().position(|&t| t).unwrap()],
            sent[prefix]
        );
        present.extend(sent[..prefix].iter().copied());
    }
    for i in &record.acked {
        assert!(
            present.contains(i),
            "cycle {cycle}: acknowledged pipelined put {i} lost"
        );
    }
}

fn file_content(seq: u64) -> Vec<u8> {
    (0..FILE_BYTES)
        .map(|i| (seq as usize * 31 + i / 2048) as u8)
        .collect()
}

fn start(socket: &Path, data: &Path, log: &Path) -> Child {
    start_on_data_dir(socket, data, log, &[])
}

/// Ask for snapshots of random partitions, one after the other, until the kill: kills
/// then also land while a forked child writes one. Returns how many finished.
fn snapshot_often(socket: &Path, seed: u64) -> u32 {
    let mut rng = StdRng::seed_from_u64(seed);
    let Ok(mut client) = Client::connect(socket) else {
        return 0;
    };
    let mut written = 0;
    loop {
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..40)));
        let p = rng.gen_range(0..client.partition_count());
        match client.snapshot(p) {
            Ok(reply) => {
                assert!(reply.written, "a snapshot with the log on is written");
                written += 1;
            }
            Err(Error::Status(s)) => {
                panic!("snapshot of p{p} failed with {s} while the server ran")
            }
            Err(_) => return written, // killed
        }
    }
}

/// Run random operations until the connection breaks (the kill) or `budget` passes.
fn load(socket: &Path, model: &Arc<Mutex<Model>>, seed: u64, budget: Duration) {
    let mut rng = StdRng::seed_from_u64(seed);
    let Ok(mut client) = Client::connect(socket) else {
        return;
    };
    let deadline = Instant::now() + budget;
    let mut seq = seed * 1_000_000;
    while Instant::now() < deadline {
        seq += 1;
        let op = match rng.gen_range(0..10) {
            0..=2 => Op::Put {
                key: format!("k{}", rng.gen_range(0..16)),
                value: format!("v{seq}"),
            },
            3 | 4 => Op::Send { seq },
            5 if !model.lock().unwrap().queue.is_empty() => Op::Recv,
            5 | 6 => Op::Submit { task_id: seq },
            _ => Op::Write {
                file: format!("/{USER}/f{}", rng.gen_range(0..4)),
                seq,
            },
        };
        model.lock().unwrap().in_flight = Some(op.clone());
        let result: Result<(), Error> = match &op {
            Op::Put { key, value } => client.kv_put(key.as_bytes(), value.as_bytes()),
            Op::Send { seq } => client.send(1, RECEIVER, &seq.to_le_bytes()).map(drop),
            Op::Recv => client.recv(RECEIVER, Duration::ZERO).map(|m| {
                let front = model.lock().unwrap().queue.front().copied();
                assert_eq!(
                    Some(u64::from_le_bytes(m.data[..8].try_into().unwrap())),
                    front,
                    "messages out of order"
                );
            }),
            Op::Submit { task_id } => client
                .sched_submit_with_id(Policy::Fifo, None, *task_id)
                .map(drop),
            Op::Write { file, seq } => {
                let mut fs = client.fs();
                let data = file_content(*seq);
                fs.write_at(file, 0, &data)
            }
        };
        let mut m = model.lock().unwrap();
        match result {
            Ok(()) => {
                m.apply(&op);
                m.acked += 1;
                m.in_flight = None;
            }
            Err(Error::Status(s)) => panic!("{op:?} failed with {s} while the server ran"),
            Err(_) => return, // killed: `op` stays in flight
        }
    }
    model.lock().unwrap().in_flight = None;
}

/// Check the restarted node against the model; fold an in-flight op that turned out
/// to be applied into the model.
fn check(socket: &Path, model: &mut Model, cycle: u32) {
    let mut client = Client::connect(socket).expect("connect after restart");
    let in_flight = model.in_flight.take();
    let mut applied = None;
    let mut decide = |is_applied: bool, what: &str| {
        assert!(
            applied.is_none_or(|a| a == is_applied),
            "cycle {cycle}: in-flight op both applied and not ({what})"
        );
        applied = Some(is_applied);
    };
    // kv: every key holds its acknowledged value (or the in-flight put's).
    for (key, value) in &model.kv {
        let got = client
            .kv_get(key.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v).unwrap());
        match &in_flight {
            Some(Op::Put { key: k, value: v }) if k == key && got.as_ref() == Some(v) => {
                decide(true, "put")
            }
            Some(Op::Put { key: k, .. }) if k == key => {
                assert_eq!(got.as_ref(), Some(value), "cycle {cycle}: kv {key}");
                decide(false, "put");
            }
            _ => assert_eq!(
                got.as_ref(),
                Some(value),
                "cycle {cycle}: acknowledged kv {key} lost"
            ),
        }
    }
    if let Some(Op::Put { key, value }) = &in_flight {
        if !model.kv.contains_key(key) {
            let got = client.kv_get(key.as_bytes()).unwrap();
            decide(got.as_deref() == Some(value.as_bytes()), "new key");
        }
    }
    // IPC: the queue is the acknowledged one, give or take the op in flight.
    let mut queued = Vec::new();
    loop {
        match client.recv(RECEIVER, Duration::ZERO) {
            Ok(m) => queued.push(u64::from_le_bytes(m.data[..8].try_into().unwrap())),
            Err(Error::Status(tabos_client::Status::QueueEmpty)) => break,
            Err(e) => panic!("recv: {e}"),
        }
    }
    let acked: Vec<u64> = model.queue.iter().copied().collect();
    match &in_flight {
        Some(Op::Send { seq }) => {
            let mut with = acked.clone();
            with.push(*seq);
            assert!(
                queued == acked || queued == with,
                "cycle {cycle}: queue {queued:?}, acknowledged {acked:?} + {seq}"
            );
            decide(queued == with, "send");
        }
        Some(Op::Recv) => {
            let without = acked[1..].to_vec();
            assert!(
                queued == acked || queued == without,
                "cycle {cycle}: queue {queued:?}, acknowledged {acked:?} (recv in flight)"
            );
            decide(queued == without, "recv");
        }
        _ => assert_eq!(
            queued, acked,
            "cycle {cycle}: message queue is not the acknowledged one"
        ),
    }
    model.queue.clear(); // drained above
                         // Scheduler: every acknowledged task exists on some partition.
    let exists = |client: &mut Client, task: u64| -> bool {
        (0..client.partition_count()).any(|p| client.sched_task(task, p).unwrap().is_some())
    };
    for &task in &model.tasks {
        assert!(
            exists(&mut client, task),
            "cycle {cycle}: acknowledged task {task} lost"
        );
    }
    if let Some(Op::Submit { task_id }) = &in_flight {
        decide(exists(&mut client, *task_id), "submit");
    }
    // Filesystem: each file holds exactly its acknowledged content (or the in-flight
    // write's): a half-applied multi-block write would match neither.
    for (file, seq) in &model.files {
        let got = client.fs().read_to_end(file).unwrap();
        match &in_flight {
            Some(Op::Write { file: f, seq: s }) if f == file && got == file_content(*s) => {
                decide(true, "write")
            }
            _ => {
                assert!(
                    got == file_content(*seq),
                    "cycle {cycle}: {file} is not its acknowledged content (torn or lost)"
                );
                if matches!(&in_flight, Some(Op::Write { file: f, .. }) if f == file) {
                    decide(false, "write");
                }
            }
        }
    }
    if let Some(Op::Write { file, seq }) = &in_flight {
        if !model.files.contains_key(file) {
            let got = client.fs().read_to_end(file).ok();
            if let Some(got) = &got {
                assert!(
                    got.is_empty() || *got == file_content(*seq),
                    "cycle {cycle}: new file {file} half-written"
                );
            }
            decide(got.is_some_and(|g| g == file_content(*seq)), "new file");
        }
    }
    if let (Some(op), Some(true)) = (&in_flight, applied) {
        if !matches!(op, Op::Send { .. } | Op::Recv) {
            model.apply(op);
        }
    }
}

#[test]
fn sigkill_under_load_keeps_every_acknowledged_operation() {
    let cycles: u32 = std::env::var("TABOS_CRASH_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let dir = TestDir::new("crash");
    let (socket, data, log) = (
        dir.socket(),
        dir.path.join("data"),
        dir.path.join("tabosd.log"),
    );
    let mut child = start(&socket, &data, &log);
    {
        let mut client = Client::connect(&socket).unwrap();
        client
            .fs()
            .useradd(USER)
            .expect("useradd (the test runs as root)");
        for f in 0..4 {
            client.fs().create(&format!("/{USER}/f{f}"), false).unwrap();
        }
        for p in 0..client.partition_count() {
            client.worker_add(p, 7 + u64::from(p), 60_000).unwrap();
        }
    }
    let model = Arc::new(Mutex::new(Model::default()));
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let mut pipelined_acked = 0;
    let mut snapshots = 0;
    for cycle in 0..cycles {
        let kill_after = Duration::from_millis(rng.gen_range(20..250));
        let (s, m) = (socket.clone(), model.clone());
        let seed = u64::from(cycle) + 1;
        let loader = std::thread::spawn(move || load(&s, &m, seed, Duration::from_secs(5)));
        let pipelined = Arc::new(Mutex::new(Pipelined::default()));
        let (s, r) = (socket.clone(), pipelined.clone());
        let piper = std::thread::spawn(move || load_pipelined(&s, cycle, &r));
        let s = socket.clone();
        let snapshotter = std::thread::spawn(move || snapshot_often(&s, seed));
        std::thread::sleep(kill_after);
        send_signal(child.id(), "KILL");
        wait_exit(&mut child, HANG_TIMEOUT).expect("killed tabosd exits");
        within("the loader notices the kill", HANG_TIMEOUT, move || {
            loader.join().unwrap()
        });
        within(
            "the pipelined loader notices the kill",
            HANG_TIMEOUT,
            move || piper.join().unwrap(),
        );
        snapshots += within(
            "the snapshotter notices the kill",
            HANG_TIMEOUT,
            move || snapshotter.join().unwrap(),
        );
        child = start(&socket, &data, &log);
        let mut m = model.lock().unwrap();
        check(&socket, &mut m, cycle);
        let r = pipelined.lock().unwrap();
        check_pipelined(&socket, &r, cycle);
        pipelined_acked += r.acked.len();
    }
    let acked = model.lock().unwrap().acked;
    send_signal(child.id(), "TERM");
    wait_exit(&mut child, HANG_TIMEOUT).expect("tabosd stops");
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!(
        "{cycles} kill cycles, {acked} acknowledged operations and {pipelined_acked} pipelined puts, {snapshots} snapshots; recoveries: {}",
        text.matches("recovered:").count(),
    );
    assert!(
        acked > u64::from(cycles),
        "too little load to test anything: {acked} ops"
    );
}
