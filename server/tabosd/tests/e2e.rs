//! Guards the whole call path through a real tabosd process and the client library:
//! null and echo (up to the largest payload), the key-value table against a HashMap
//! model, error statuses for bad requests, pipelining through a full ring, one order of
//! replicated writes on every partition, the per-partition counters of `status`, and
//! that no reply or completion is lost when replies are read late or calls interleave.

mod common;

use common::{within, Daemon, HANG_TIMEOUT};
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use tabos_client::{ids, Client, Completion, Error, Status};
use tabos_procs::builtin::kv_args;

/// Flags of a node with small rings, so a few hundred calls fill one.
const SMALL_RINGS: &[&str] = &[
    "--ring-kib",
    "64",
    "--max-payload-bytes",
    "8192",
    "--max-message-bytes",
    "1024",
    "--block-bytes-local",
    "512",
    "--block-bytes-parallel",
    "512",
];

fn key_on(client: &Client, partition: u32, tag: &str) -> Vec<u8> {
    (0..)
        .map(|i| format!("{tag}-{i}").into_bytes())
        .find(|k| client.partition_for_key(k) == partition)
        .expect("some key lands on every partition")
}

#[test]
fn null_and_echo_round_trip_up_to_the_largest_payload() {
    let daemon = Daemon::start("echo", &[]);
    let mut client = daemon.connect();
    assert_eq!(client.partition_count(), 2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    for partition in 0..2 {
        client.null(partition).expect("null");
        for len in [0usize, 1, 31, 32, 33, 4095, 4096, 65_537] {
            let payload: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let reply = client.call(ids::ECHO, partition, &payload).expect("echo");
            assert_eq!(
                reply, payload,
                "echo of {len} bytes on partition {partition}"
            );
        }
    }
    let max = client.max_payload_bytes();
    assert!(max > 0);
    let largest: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    let reply = client
        .call(ids::ECHO, 1, &largest)
        .expect("echo of the largest payload");
    assert!(reply == largest, "echo of {max} bytes came back different");
    let too_big = vec![7u8; max + 1];
    assert_eq!(
        client.call(ids::ECHO, 0, &too_big),
        Err(Error::Status(Status::PayloadTooLarge))
    );
    // The refusal was local and left the connection usable.
    assert_eq!(
        client.call(ids::ECHO, 0, b"still here").unwrap(),
        b"still here"
    );
}

#[test]
fn kv_matches_a_hashmap_model() {
    let daemon = Daemon::start("kv", &[]);
    let mut client = daemon.connect();
    let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    let keys: Vec<Vec<u8>> = (0..150).map(|i| format!("key-{i}").into_bytes()).collect();
    let partitions: HashSet<u32> = keys.iter().map(|k| client.partition_for_key(k)).collect();
    assert_eq!(partitions.len(), 2, "the keys spread over both partitions");
    for op in 0..4000 {
        let key = &keys[rng.gen_range(0..keys.len())];
        match rng.gen_range(0..10) {
            0..=3 => {
                let value: Vec<u8> = (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect();
                client.kv_put(key, &value).expect("kv_put");
                model.insert(key.clone(), value);
            }
            4..=7 => {
                let got = client.kv_get(key).expect("kv_get");
                assert_eq!(got.as_ref(), model.get(key), "op {op}: kv_get {key:?}");
            }
            _ => {
                let existed = client.kv_delete(key).expect("kv_delete");
                assert_eq!(
                    existed,
                    model.remove(key).is_some(),
                    "op {op}: delete {key:?}"
                );
            }
        }
    }
    // A second client sees the same table.
    let mut other = daemon.connect();
    for key in &keys {
        assert_eq!(other.kv_get(key).expect("kv_get").as_ref(), model.get(key));
    }
}

#[test]
fn bad_requests_come_back_as_statuses() {
    let daemon = Daemon::start("status", &[]);
    let mut client = daemon.connect();
    for proc_id in [0, 9, 999, u32::MAX] {
        assert_eq!(
            client.call(proc_id, 0, b""),
            Err(Error::Status(Status::UnknownProcedure)),
            "procedure id {proc_id}"
        );
    }
    assert_eq!(
        client.call(ids::NULL, 99, b""),
        Err(Error::Status(Status::BadPartition))
    );
    assert_eq!(
        client.call(ids::NULL, 2, b""),
        Err(Error::Status(Status::BadPartition))
    );
    let key = b"misrouted";
    let owner = client.partition_for_key(key);
    assert_eq!(
        client.call(ids::KV_PUT, 1 - owner, &kv_args(key, b"v")),
        Err(Error::Status(Status::WrongPartition))
    );
    assert_eq!(
        client.kv_get(key).unwrap(),
        None,
        "a refused put stored nothing"
    );
    assert_eq!(
        client.call(ids::KV_PUT, 0, &[0xff, 0xff, 0xff, 0xff, 1]),
        Err(Error::Status(Status::BadArgs))
    );
    assert_eq!(
        client.call(ids::KV_GET, owner, &kv_args(key, b"trailing")),
        Err(Error::Status(Status::BadArgs))
    );
    // Errors changed nothing about the connection.
    client.kv_put(key, b"v").unwrap();
    assert_eq!(client.kv_get(key).unwrap(), Some(b"v".to_vec()));
}

#[test]
fn pipelined_calls_pass_through_a_full_ring() {
    // 10_000 requests of 64 bytes do not fit a 64 KiB ring: `submit` must flush and
    // collect replies by itself while the caller has not waited yet.
    let daemon = Daemon::start("pipe", SMALL_RINGS);
    let mut client = daemon.connect();
    const CALLS: usize = 10_000;
    let key = |i: usize| format!("pipe-{i}").into_bytes();
    let value = |i: usize| (i as u64 * 7919).to_le_bytes().to_vec();
    let mut submitted: HashMap<u64, usize> = HashMap::new();
    for i in 0..CALLS {
        let k = key(i);
        let partition = client.partition_for_key(&k);
        let id = client
            .submit(ids::KV_PUT, partition, &kv_args(&k, &value(i)))
            .expect("submit");
        assert!(submitted.insert(id, i).is_none(), "request id {id} reused");
    }
    assert_eq!(client.in_flight(), CALLS);
    let (client, done) = within(
        "waiting for 10_000 pipelined puts",
        HANG_TIMEOUT,
        move || {
            let mut done: Vec<Completion> = Vec::new();
            while done.len() < CALLS {
                client.wait(&mut done, CALLS).expect("wait");
            }
            (client, done)
        },
    );
    let mut client = client;
    assert_eq!(done.len(), CALLS);
    assert_eq!(client.in_flight(), 0);
    let mut seen = HashSet::new();
    for c in &done {
        let i = *submitted
            .get(&c.request_id)
            .expect("a completion for a submitted call");
        assert!(
            seen.insert(c.request_id),
            "request {} completed twice",
            c.request_id
        );
        assert_eq!(c.status_code, Status::Ok as u32, "put {i}");
        assert_eq!(c.partition, client.partition_for_key(&key(i)));
        assert!(c.reply.is_empty());
    }
    // Read everything back, pipelined, then a few synchronously.
    let mut gets: HashMap<u64, usize> = HashMap::new();
    for i in 0..CALLS {
        let k = key(i);
        let partition = client.partition_for_key(&k);
        let id = client
            .submit(ids::KV_GET, partition, &kv_args(&k, b""))
            .expect("submit");
        gets.insert(id, i);
    }
    let mut done = Vec::new();
    while done.len() < CALLS {
        client.wait(&mut done, CALLS).expect("wait");
    }
    for c in done {
        let i = gets[&c.request_id];
        assert_eq!(
            c.into_result().expect("kv_get"),
            value(i),
            "value of key {i}"
        );
    }
    for i in [0, 1, CALLS / 2, CALLS - 1] {
        assert_eq!(client.kv_get(&key(i)).unwrap(), Some(value(i)));
    }
}

#[test]
fn replicated_writes_reach_every_partition_in_one_order() {
    let daemon = Daemon::start("rkv", &[]);
    let mut client = daemon.connect();
    // Read your writes: the reply comes after every partition applied the write.
    client.rkv_put(b"solo", b"one").unwrap();
    for p in 0..2 {
        assert_eq!(client.rkv_get(p, b"solo").unwrap(), Some(b"one".to_vec()));
    }
    // Writers race on the same keys, entering through both partitions.
    const WRITERS: usize = 4;
    const KEYS: usize = 8;
    const WRITES: usize = 150;
    let socket = daemon.socket().to_path_buf();
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut c = Client::connect(&socket).expect("connect");
                for i in 0..WRITES {
                    let key = format!("r-{}", i % KEYS);
                    let value = format!("w{w}-{i}");
                    if i % 2 == 0 {
                        c.rkv_put(key.as_bytes(), value.as_bytes())
                            .expect("rkv_put");
                    } else {
                        let args = kv_args(key.as_bytes(), value.as_bytes());
                        c.call(ids::RKV_PUT, 1, &args)
                            .expect("rkv_put via partition 1");
                    }
                }
            })
        })
        .collect();
    within("replicated writers", HANG_TIMEOUT, move || {
        for w in writers {
            w.join().expect("writer thread");
        }
    });
    for k in 0..KEYS {
        let key = format!("r-{k}");
        let values: Vec<Option<Vec<u8>>> = (0..2)
            .map(|p| client.rkv_get(p, key.as_bytes()).unwrap())
            .collect();
        let first = values[0].clone().expect("the key was written");
        let text = String::from_utf8(first.clone()).unwrap();
        assert!(text.starts_with('w'), "a written value, got {text}");
        assert!(
            values.iter().all(|v| v.as_deref() == Some(&first[..])),
            "partitions disagree on {key}: {values:?}"
        );
    }
}

#[test]
fn status_counts_calls_per_partition() {
    let daemon = Daemon::start("stats", &[]);
    let mut client = daemon.connect();
    let before = client.status().expect("status");
    assert_eq!(before.len(), 2);
    for (p, s) in before.iter().enumerate() {
        assert_eq!(s.partition, p as u32);
        assert_eq!(s.node_id, 0);
        assert_eq!(s.core, u32::MAX, "--no-pin leaves partitions unpinned");
        assert!(s.clients >= 1, "this client is attached to partition {p}");
    }
    for p in 0..2 {
        for _ in 0..50 {
            client.null(p).unwrap();
        }
    }
    for _ in 0..3 {
        assert!(client.call(999, 0, b"").is_err());
    }
    let after = client.status().expect("status");
    for p in 0..2 {
        assert!(
            after[p].calls >= before[p].calls + 50,
            "partition {p}: calls {} -> {}",
            before[p].calls,
            after[p].calls
        );
    }
    assert!(
        after[0].errors >= before[0].errors + 3,
        "errors are counted"
    );
}

/// Replicated writes are answered only after every partition ran them, so their
/// replies are written later than their requests were taken. A client that pipelines
/// them and reads its replies late must still get every reply.
///
/// Regression guard: before commit bd0a24e, `Partition::reply_to` dropped a deferred
/// reply that found the response ring full ("response ring full; reply dropped"), since
/// the room check in `drain_port` reserves room only for immediate replies; this test
/// then hung. The burst is laid out so that it overflows whenever the node's answers
/// lag its own draining by a turn (always: the origin runs its copy of a job in the
/// next turn's housekeeping): one full drain batch of replicated writes, then 3/4 of a
/// batch more followed by reads whose large replies fill the response ring down to the
/// room check's threshold.
#[test]
fn pipelined_replicated_writes_all_get_replies() {
    let daemon = Daemon::start("rkvpipe", SMALL_RINGS);
    let batch = tabos_server::partition::DRAIN_BATCH_MAX;
    for round in 0..3 {
        let mut client = daemon.connect();
        let big_key = key_on(&client, 0, &format!("big{round}"));
        client.kv_put(&big_key, &[5u8; 6000]).unwrap();
        let mut expected = 0usize;
        for i in 0..batch + batch * 3 / 4 {
            let args = kv_args(format!("rp-{i}").as_bytes(), format!("{round}").as_bytes());
            client
                .submit(ids::RKV_PUT, 0, &args)
                .expect("submit rkv_put");
            expected += 1;
        }
        for _ in 0..12 {
            let args = kv_args(&big_key, b"");
            client.submit(ids::KV_GET, 0, &args).expect("submit kv_get");
            expected += 1;
        }
        client.flush();
        // Let the node drain and answer before this client reads anything.
        std::thread::sleep(std::time::Duration::from_millis(500));
        let done = within(
            "replies to pipelined replicated writes",
            HANG_TIMEOUT,
            move || {
                let mut done = Vec::new();
                while done.len() < expected {
                    client.wait(&mut done, expected).expect("wait");
                }
                done
            },
        );
        assert!(done.iter().all(|c| c.status_code == Status::Ok as u32));
    }
}

/// A typed call made while pipelined calls are outstanding must leave their
/// completions to the caller's own `wait`.
///
/// BUG (fails while it stands): `Client::status` collects with `Client::wait`, which
/// hands over every finished call; it decodes the caller's kv_put completions as
/// statistics (`Err(Status(BadArgs))`) and removes them from the client, so a caller
/// waiting for all its calls afterwards waits forever.
#[test]
fn status_between_pipelined_calls_keeps_their_completions() {
    let daemon = Daemon::start("mixed", &[]);
    let mut client = daemon.connect();
    const CALLS: usize = 100;
    let mut ids_ = HashSet::new();
    for i in 0..CALLS {
        let key = format!("mixed-{i}");
        let partition = client.partition_for_key(key.as_bytes());
        let args = kv_args(key.as_bytes(), b"v");
        ids_.insert(
            client
                .submit(ids::KV_PUT, partition, &args)
                .expect("submit"),
        );
    }
    let stats = client.status().expect("status with calls in flight");
    assert_eq!(stats.len(), 2);
    let done = within(
        "the pipelined calls after status",
        HANG_TIMEOUT,
        move || {
            let mut done = Vec::new();
            while done.len() < CALLS {
                client.wait(&mut done, CALLS).expect("wait");
            }
            done
        },
    );
    let got: HashSet<u64> = done.iter().map(|c| c.request_id).collect();
    assert_eq!(got, ids_, "every pipelined call completes exactly once");
}
