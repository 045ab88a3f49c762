//! Guards remote calls over TCP on one tabosd started with `--listen`, under both
//! network drivers (`--net uring` and `--net socket`): calls and pipelining against a
//! model, error statuses, IPC between a shared-memory and a network client, files and
//! `--as` over the network; and hostile peers (garbage, half frames, oversized frames,
//! a wrong secret, silent and mass connections) that are dropped while an honest
//! remote client keeps being served and new clients still get in.

mod common;

use common::{
    assert_closed, raw, raw_handshake, read_frame, read_pod, run_output, send_frame, within,
    Honest, NetNode, DROP_TIMEOUT, HANG_TIMEOUT,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::io::Write;
use std::net::{Shutdown, TcpStream};
use std::process::Command;
use std::time::Duration;
use tabos_client::{ids, Client, ConnectOptions, Error, Status};
use tabos_procs::builtin::kv_args;
use tabos_transport::handshake::Welcome;
use tabos_transport::net::{
    prove, read_secret_file, NetChallenge, NetHello, NET_MAGIC, ROLE_CLIENT,
};
use tabos_transport::wire::{Header, FLAG_RESPONSE, HEADER_SIZE};

/// A receive that must not wait.
const NOW: Duration = Duration::ZERO;
/// A receive long enough for any message in flight to arrive.
const LONG: Duration = Duration::from_secs(30);

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    data
}

/// The first key from `prefix-0, prefix-1, ...` that lives on `partition`.
fn key_on(client: &Client, prefix: &str, partition: u32) -> Vec<u8> {
    (0..)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .find(|k| client.partition_for_key(k) == partition)
        .expect("a key on the partition")
}

macro_rules! both_drivers {
    ($($name:ident),* $(,)?) => {
        mod uring {
            $(#[test]
            fn $name() {
                super::$name("uring")
            })*
        }
        mod socket {
            $(#[test]
            fn $name() {
                super::$name("socket")
            })*
        }
    };
}

both_drivers!(
    calls_match_a_model,
    a_remote_client_makes_many_calls,
    ten_thousand_pipelined_calls,
    errors_come_back_as_statuses,
    raw_frames_get_their_statuses,
    ipc_between_a_local_and_a_remote_client,
    files_over_the_network,
    the_command_line_acts_as_a_user_over_the_network,
    garbage_instead_of_a_hello,
    garbage_after_the_handshake_drops_the_connection,
    half_written_messages_then_close,
    a_frame_over_the_maximum_drops_the_connection,
    a_wrong_secret_is_refused_clearly,
    silent_connections_are_dropped_after_the_handshake_timeout,
    a_thousand_connections_opened_and_dropped,
);

fn calls_match_a_model(mode: &str) {
    let node = NetNode::start("net-model", mode);
    let mut remote = node.remote();
    assert!(remote.is_remote());
    assert_eq!(remote.partition_count(), 2);
    let mut rng = StdRng::seed_from_u64(11);
    for p in 0..2 {
        remote.null(p).expect("null");
    }
    let max = remote.max_payload_bytes();
    for len in [0, 1, 31, 32, 33, 4096, 65_535, 65_536, 65_537, 300_001, max] {
        let data = random_bytes(&mut rng, len);
        let reply = remote
            .call(ids::ECHO, (len % 2) as u32, &data)
            .expect("echo");
        assert!(reply == data, "echo of {len} bytes came back different");
    }
    let keys: Vec<Vec<u8>> = (0..200).map(|i| format!("key-{i}").into_bytes()).collect();
    let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    for _ in 0..3000 {
        let key = &keys[rng.gen_range(0..keys.len())];
        match rng.gen_range(0..3) {
            0 => {
                let len = rng.gen_range(0..3000);
                let value = random_bytes(&mut rng, len);
                remote.kv_put(key, &value).expect("kv_put");
                model.insert(key.clone(), value);
            }
            1 => assert_eq!(remote.kv_get(key).expect("kv_get"), model.get(key).cloned()),
            _ => assert_eq!(
                remote.kv_delete(key).expect("kv_delete"),
                model.remove(key).is_some()
            ),
        }
    }
    // A local client sees the same table, and both partitions hold keys.
    let mut local = node.daemon.connect();
    for key in &keys {
        assert_eq!(
            local.kv_get(key).expect("local kv_get"),
            model.get(key).cloned()
        );
    }
    let calls: Vec<u64> = local.status().unwrap().iter().map(|s| s.calls).collect();
    assert!(
        calls.iter().all(|c| *c > 500),
        "calls per partition: {calls:?}"
    );
}

/// BUG: hangs after 4096 submits in flight. `Client::submit_to` refuses to queue more
/// once the node's `in_flight` reaches `NET_WINDOW`, but replies that the network
/// link stashes inside `Client::block_until_reply` (one node) or `Client::flush`
/// never decrement `NodeLink::in_flight`; only `collect_into_stash` does, and only
/// for the completions it adds itself. The count stays at the window with every
/// reply already stashed, and `block_until_reply` waits forever. Fix: account the
/// stash growth (owner map, per-node count, shadows) after every link call that
/// can stash: `flush`, `block_until_reply`, `collect` (one helper for all three).
fn ten_thousand_pipelined_calls(mode: &str) {
    let node = NetNode::start("net-pipe", mode);
    let mut remote = node.remote();
    let (done, expected) = within("10000 pipelined calls", HANG_TIMEOUT, move || {
        let mut expected = HashMap::new();
        for i in 0..10_000u64 {
            let (partition, proc_id, args, reply) = if i % 3 == 0 {
                let key = format!("pipe-{i}").into_bytes();
                let partition = remote.partition_for_key(&key);
                (
                    partition,
                    ids::KV_PUT,
                    kv_args(&key, &i.to_le_bytes()),
                    Vec::new(),
                )
            } else {
                let payload: Vec<u8> = i.to_le_bytes().repeat((i % 9) as usize);
                ((i % 2) as u32, ids::ECHO, payload.clone(), payload)
            };
            let id = remote.submit(proc_id, partition, &args).expect("submit");
            expected.insert(id, (partition, reply));
        }
        let mut done = Vec::new();
        while remote.in_flight() > 0 {
            let missing = remote.in_flight();
            remote.wait(&mut done, missing).expect("wait");
        }
        (done, expected)
    });
    assert_eq!(done.len(), 10_000);
    let mut seen = std::collections::HashSet::new();
    for c in done {
        assert!(seen.insert(c.request_id), "request {} twice", c.request_id);
        let (partition, reply) = &expected[&c.request_id];
        assert_eq!(c.partition, *partition);
        assert_eq!(c.status_code, 0, "request {}", c.request_id);
        assert!(
            c.reply == *reply,
            "request {} got another reply",
            c.request_id
        );
    }
    let mut local = node.daemon.connect();
    for i in (0..10_000u64).step_by(3).step_by(97) {
        let value = local.kv_get(format!("pipe-{i}").as_bytes()).unwrap();
        assert_eq!(value, Some(i.to_le_bytes().to_vec()));
    }
}

/// BUG: the same leak as in [`ten_thousand_pipelined_calls`] hangs a remote client
/// making one call at a time: each reply that arrives while the client blocks in
/// `NetLink::block_until_reply` leaves `NodeLink::in_flight` one higher, so after
/// about 4096 calls every further submit waits for a reply that never comes.
fn a_remote_client_makes_many_calls(mode: &str) {
    let node = NetNode::start("net-many", mode);
    let mut remote = node.remote();
    let calls = within("20000 calls one at a time", HANG_TIMEOUT, move || {
        for i in 0..20_000u32 {
            let reply = remote.call(ids::ECHO, i % 2, &i.to_le_bytes());
            assert_eq!(reply.expect("echo"), i.to_le_bytes(), "call {i}");
        }
        remote.in_flight()
    });
    assert_eq!(calls, 0);
}

fn errors_come_back_as_statuses(mode: &str) {
    let node = NetNode::start("net-errors", mode);
    let mut remote = node.remote();
    let max = remote.max_payload_bytes();
    assert_eq!(
        remote.call(9999, 0, &[]),
        Err(Error::Status(Status::UnknownProcedure))
    );
    assert_eq!(
        remote.call(ids::NULL, 2, &[]),
        Err(Error::Status(Status::BadPartition))
    );
    assert_eq!(
        remote.call(ids::ECHO, 1, &vec![7; max + 1]),
        Err(Error::Status(Status::PayloadTooLarge))
    );
    let key = key_on(&remote, "wrong", 1);
    assert_eq!(
        remote.call(ids::KV_GET, 0, &kv_args(&key, b"")),
        Err(Error::Status(Status::WrongPartition))
    );
    assert_eq!(remote.kv_get(&key), Ok(None));
    // The connection is fine after each error.
    assert_eq!(
        remote.call(ids::ECHO, 1, &vec![7; max]).map(|r| r.len()),
        Ok(max)
    );
    remote.null(0).expect("null after the errors");
}

fn raw_frames_get_their_statuses(mode: &str) {
    let node = NetNode::start("net-raw", mode);
    let (mut stream, welcome) = raw_handshake(node.addr, &node.secret_bytes());
    assert_eq!(
        (welcome.partition_count, welcome.local_partitions()),
        (2, 2)
    );
    let mut bad_flags = Header::request(5, ids::NULL, 0, 0);
    bad_flags.flags = FLAG_RESPONSE;
    let mut bad_status = Header::request(6, ids::NULL, 0, 0);
    bad_status.status = 3;
    let frames = [
        (Header::request(1, ids::NULL, 0, 0), &b""[..], Status::Ok),
        (Header::request(2, ids::ECHO, 1, 3), b"abc", Status::Ok),
        (
            Header::request(3, ids::NULL, 2, 0),
            b"",
            Status::BadPartition,
        ),
        (
            Header::request(4, 9999, 1, 0),
            b"",
            Status::UnknownProcedure,
        ),
        (bad_flags, b"", Status::BadFrame),
        (bad_status, b"", Status::BadFrame),
        (
            Header::request(1 << 40, ids::NULL, 0, 0),
            b"",
            Status::BadFrame,
        ),
        (
            Header::request(u32::MAX as u64, ids::NULL, u32::MAX, 0),
            b"",
            Status::BadPartition,
        ),
    ];
    let mut bytes = Vec::new();
    for (header, payload, _) in &frames {
        bytes.extend_from_slice(bytemuck::bytes_of(header));
        bytes.extend_from_slice(payload);
    }
    stream.write_all(&bytes).unwrap();
    let mut replies = HashMap::new();
    for _ in 0..frames.len() {
        let (header, payload) = read_frame(&mut stream);
        assert_ne!(header.flags & FLAG_RESPONSE, 0, "a reply is marked");
        assert!(replies
            .insert(header.request_id, (header, payload))
            .is_none());
    }
    for (request, payload, status) in &frames {
        let (reply, body) = &replies[&request.request_id];
        assert_eq!(
            reply.status, *status as u32,
            "request {}",
            request.request_id
        );
        assert_eq!(
            (reply.proc_id, reply.partition),
            (request.proc_id, request.partition)
        );
        if *status == Status::Ok {
            assert_eq!(body.as_slice(), *payload);
        }
    }
    // The largest payload goes through on the raw stream too.
    let max = welcome.max_payload_bytes;
    let big: Vec<u8> = (0..max).map(|i| (i % 251) as u8).collect();
    send_frame(&mut stream, Header::request(9, ids::ECHO, 0, max), &big);
    let (header, body) = read_frame(&mut stream);
    assert_eq!((header.request_id, header.status), (9, 0));
    assert!(body == big);
}

fn ipc_between_a_local_and_a_remote_client(mode: &str) {
    let node = NetNode::start("net-ipc", mode);
    let mut local = node.daemon.connect();
    for partition in 0..2 {
        let to = (1000u64..)
            .find(|r| local.mailbox_partition(*r) == partition)
            .unwrap();
        // A remote receive parks at the partition and a local send wakes it.
        let mut receiver = node.remote();
        let waiting = std::thread::spawn(move || receiver.recv(to, LONG));
        std::thread::sleep(Duration::from_millis(200));
        let id = local.send(5, to, b"over the wire").expect("local send");
        let got = within("the parked remote receive", HANG_TIMEOUT, move || {
            waiting.join().expect("receiver thread")
        })
        .expect("the message");
        assert_eq!((got.sender_id, got.message_id), (5, id));
        assert_eq!(got.data, b"over the wire");
        // The other way: a remote sender, a parked local receiver.
        let mut receiver = node.daemon.connect();
        let waiting = std::thread::spawn(move || receiver.recv_batch(to, 10, LONG));
        std::thread::sleep(Duration::from_millis(200));
        let id = node.remote().send(6, to, b"back").expect("remote send");
        let got = within("the parked local receive", HANG_TIMEOUT, move || {
            waiting.join().expect("receiver thread")
        })
        .expect("the message");
        assert_eq!(
            (got.len(), got[0].message_id, &got[0].data[..]),
            (1, id, &b"back"[..])
        );
    }
    let mut remote = node.remote();
    assert_eq!(
        remote.recv(4242, Duration::from_millis(100)),
        Err(Error::Status(Status::Timeout))
    );
    assert_eq!(
        remote.recv(4242, NOW),
        Err(Error::Status(Status::QueueEmpty))
    );
    // A megabyte message and a run of small ones keep their order and bytes.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
    let mut sent = vec![(remote.send(1, 4242, &big).expect("send 1 MiB"), big)];
    for i in 0..300u32 {
        let data = i.to_le_bytes().to_vec();
        sent.push((local.send(1, 4242, &data).expect("send"), data));
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        got.extend(remote.recv_batch(4242, 64, NOW).expect("recv_batch"));
    }
    for (m, (id, data)) in got.iter().zip(&sent) {
        assert!(m.message_id == *id && m.data == *data, "message {id}");
    }
}

fn files_over_the_network(mode: &str) {
    let node = NetNode::start("net-fs", mode);
    let mut root = node.remote_as(Some("root"));
    root.fs()
        .useradd("alice")
        .expect("useradd as root over the network");
    let mut alice = node.remote_as(Some("alice"));
    let mut local = Client::connect_as(node.daemon.socket(), Some("alice"))
        .expect("a local client as alice (do the tests run as root?)");
    let mut rng = StdRng::seed_from_u64(3);
    let data = random_bytes(&mut rng, 2_000_000 + 123);
    for parallel in [false, true] {
        let path = format!("/alice/big-{parallel}");
        let mut fs = alice.fs();
        fs.create(&path, parallel).expect("create");
        fs.write_at(&path, 0, &data).expect("write 2 MB");
        assert_eq!(fs.metadata(&path).unwrap().size_bytes, data.len() as u64);
        assert!(
            fs.read_to_end(&path).unwrap() == data,
            "{path} over the network"
        );
        assert!(
            local.fs().read_to_end(&path).unwrap() == data,
            "{path} locally"
        );
        assert_eq!(
            fs.read_at(&path, 1_999_990, 20).unwrap(),
            data[1_999_990..2_000_010]
        );
    }
    let du = alice.fs().du("/alice", 0).unwrap();
    assert_eq!((du.total_bytes, du.file_count), (2 * data.len() as u64, 2));
}

fn the_command_line_acts_as_a_user_over_the_network(mode: &str) {
    let node = NetNode::start("net-as", mode);
    let tabos = |args: &[&str]| {
        let mut command = Command::new(common::tabos_cli());
        command
            .args(["--connect", &node.addr.to_string()])
            .arg("--secret-file")
            .arg(&node.secret)
            .args(args)
            .env_remove("TABOS_CONNECT");
        run_output(command)
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let ok = |out: std::process::Output, what: &str| {
        assert!(out.status.success(), "{what}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    // Without --as, a remote caller is the unprivileged user `remote`.
    let refused = tabos(&["fs", "useradd", "carol"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        text(&refused.stderr).contains("permission denied"),
        "{}",
        text(&refused.stderr)
    );
    ok(
        tabos(&["--as", "root", "fs", "useradd", "carol"]),
        "useradd as root",
    );
    let mut rng = StdRng::seed_from_u64(9);
    let data = random_bytes(&mut rng, 2 << 20);
    let local_in = node.keys.path.join("in.bin");
    let local_out = node.keys.path.join("out.bin");
    std::fs::write(&local_in, &data).unwrap();
    let (input, output) = (local_in.to_str().unwrap(), local_out.to_str().unwrap());
    ok(
        tabos(&["--as", "carol", "fs", "put", input, "/carol/big"]),
        "put",
    );
    ok(
        tabos(&["--as", "carol", "fs", "get", "/carol/big", output]),
        "get",
    );
    assert!(
        std::fs::read(&local_out).unwrap() == data,
        "get returned other bytes"
    );
    let stat = ok(
        tabos(&["--as", "carol", "fs", "stat", "/carol/big"]),
        "stat",
    );
    assert!(
        stat.contains("carol") && stat.contains(&data.len().to_string()),
        "{stat}"
    );
    let foreign = tabos(&["--as", "dave", "fs", "put", input, "/carol/x"]);
    assert!(!foreign.status.success());
    assert!(
        text(&foreign.stderr).contains("permission denied"),
        "{}",
        text(&foreign.stderr)
    );
    // The client library agrees: the owner is the user the connection acts as.
    let mut carol = node.remote_as(Some("carol"));
    assert_eq!(carol.fs().metadata("/carol/big").unwrap().owner, "carol");
    let mut anonymous = node.remote();
    assert_eq!(
        anonymous.fs().create("/carol/y", false).map(drop),
        Err(Error::Status(Status::PermissionDenied))
    );
}

fn garbage_instead_of_a_hello(mode: &str) {
    let mut node = NetNode::start("net-garbage", mode);
    let honest = Honest::start(&node);
    // A hello-sized block of garbage is refused as a bad frame, then closed.
    let mut stream = raw(node.addr);
    stream.write_all(&[0xAB; 56]).unwrap();
    let challenge: NetChallenge = read_pod(&mut stream).expect("a refusal");
    assert_eq!(
        (challenge.magic, challenge.status),
        (NET_MAGIC, Status::BadFrame as u32)
    );
    assert_closed(&mut stream, DROP_TIMEOUT);
    // Ten kilobytes of noise: closed (writes may fail once the node has hung up).
    let mut rng = StdRng::seed_from_u64(1);
    let mut stream = raw(node.addr);
    let _ = stream.write_all(&random_bytes(&mut rng, 10_000));
    assert_closed(&mut stream, DROP_TIMEOUT);
    // Hellos of another version or auth method get their refusals.
    let mut other_version = NetHello::new(ROLE_CLIENT, None);
    other_version.version = 99;
    let mut other_auth = NetHello::new(ROLE_CLIENT, None);
    other_auth.auth_method = 7;
    for (hello, status) in [
        (other_version, Status::BadFrame),
        (other_auth, Status::PermissionDenied),
    ] {
        let mut stream = raw(node.addr);
        stream.write_all(bytemuck::bytes_of(&hello)).unwrap();
        let challenge: NetChallenge = read_pod(&mut stream).expect("a refusal");
        assert_eq!(challenge.status, status as u32);
        assert_closed(&mut stream, DROP_TIMEOUT);
    }
    honest.finish();
    node.assert_serves_new_clients();
}

fn garbage_after_the_handshake_drops_the_connection(mode: &str) {
    let mut node = NetNode::start("net-badmagic", mode);
    let honest = Honest::start(&node);
    let secret = node.secret_bytes();
    let (mut stream, _) = raw_handshake(node.addr, &secret);
    send_frame(&mut stream, Header::request(1, ids::NULL, 0, 0), &[]);
    assert_eq!(
        read_frame(&mut stream).0.status,
        0,
        "a good frame is served first"
    );
    stream.write_all(&[0x5A; 64]).unwrap();
    assert_closed(&mut stream, DROP_TIMEOUT);
    node.wait_log("frame without magic");
    // Unknown flags (or the ring-only padding flag) drop the connection too.
    for flags in [1 << 7, 1] {
        let (mut stream, _) = raw_handshake(node.addr, &secret);
        let mut header = Header::request(2, ids::NULL, 0, 0);
        header.flags = flags;
        send_frame(&mut stream, header, &[]);
        assert_closed(&mut stream, DROP_TIMEOUT);
    }
    node.wait_log("frame with unknown flags");
    honest.finish();
    node.assert_serves_new_clients();
}

fn half_written_messages_then_close(mode: &str) {
    let mut node = NetNode::start("net-half", mode);
    let honest = Honest::start(&node);
    let secret = node.secret_bytes();
    // Half a hello.
    let mut stream = raw(node.addr);
    stream
        .write_all(&bytemuck::bytes_of(&NetHello::new(ROLE_CLIENT, None))[..20])
        .unwrap();
    drop(stream);
    // A hello and half a proof.
    let mut stream = raw(node.addr);
    stream
        .write_all(bytemuck::bytes_of(&NetHello::new(ROLE_CLIENT, None)))
        .unwrap();
    let _: NetChallenge = read_pod(&mut stream).expect("the challenge");
    stream.write_all(&[1; 17]).unwrap();
    drop(stream);
    // Half a header, and a header with half its payload, after a good handshake.
    for cut in [HEADER_SIZE / 2, HEADER_SIZE + 500] {
        let (mut stream, _) = raw_handshake(node.addr, &secret);
        let mut bytes = bytemuck::bytes_of(&Header::request(1, ids::ECHO, 1, 1000)).to_vec();
        bytes.extend_from_slice(&[3; 1000]);
        stream.write_all(&bytes[..cut]).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        assert_closed(&mut stream, DROP_TIMEOUT);
    }
    honest.assert_progressing();
    honest.finish();
    node.assert_serves_new_clients();
}

fn a_frame_over_the_maximum_drops_the_connection(mode: &str) {
    let mut node = NetNode::start("net-toolarge", mode);
    let honest = Honest::start(&node);
    let secret = node.secret_bytes();
    for claim in [None, Some(u32::MAX)] {
        let (mut stream, welcome) = raw_handshake(node.addr, &secret);
        let len = claim.unwrap_or(welcome.max_payload_bytes + 1);
        // Only the header: the lying length is caught before any payload arrives.
        send_frame(&mut stream, Header::request(1, ids::ECHO, 0, len), &[]);
        assert_closed(&mut stream, DROP_TIMEOUT);
    }
    node.wait_log("exceeds the maximum");
    honest.finish();
    node.assert_serves_new_clients();
}

fn a_wrong_secret_is_refused_clearly(mode: &str) {
    let mut node = NetNode::start("net-secret", mode);
    let honest = Honest::start(&node);
    let wrong = common::write_secret(&node.keys.path, "wrong");
    let options = ConnectOptions {
        act_as: None,
        secret_file: Some(wrong.clone()),
    };
    match Client::connect_with(node.addr.to_string(), &options) {
        Err(Error::Transport(why)) => {
            let why = why.to_lowercase();
            assert!(
                why.contains("refused") && why.contains("permission"),
                "{why}"
            );
        }
        other => panic!("a wrong secret got {other:?}"),
    }
    node.wait_log("wrong cluster secret");
    // On the raw stream: the welcome says PermissionDenied and the node hangs up.
    let mut stream = raw(node.addr);
    let hello = NetHello::new(ROLE_CLIENT, Some("root"));
    stream.write_all(bytemuck::bytes_of(&hello)).unwrap();
    let challenge: NetChallenge = read_pod(&mut stream).unwrap();
    let proof = prove(&read_secret_file(&wrong).unwrap(), &challenge.nonce, &hello);
    stream.write_all(bytemuck::bytes_of(&proof)).unwrap();
    let welcome: Welcome = read_pod(&mut stream).expect("a refusing welcome");
    assert_eq!(welcome.status, Status::PermissionDenied as u32);
    assert_closed(&mut stream, DROP_TIMEOUT);
    // A right proof for another hello (a replayed proof) fails the same way.
    let mut stream = raw(node.addr);
    stream.write_all(bytemuck::bytes_of(&hello)).unwrap();
    let challenge: NetChallenge = read_pod(&mut stream).unwrap();
    let other = NetHello::new(ROLE_CLIENT, None);
    let proof = prove(&node.secret_bytes(), &challenge.nonce, &other);
    stream.write_all(bytemuck::bytes_of(&proof)).unwrap();
    let welcome: Welcome = read_pod(&mut stream).expect("a refusing welcome");
    assert_eq!(welcome.status, Status::PermissionDenied as u32);
    honest.finish();
    node.assert_serves_new_clients();
}

/// BUG: fails while the client library leaks its in-flight count (see
/// [`a_remote_client_makes_many_calls`]): the honest client runs past 4096 calls
/// here and hangs; the node itself passes (checked with that leak fixed).
fn silent_connections_are_dropped_after_the_handshake_timeout(mode: &str) {
    let mut node = NetNode::start("net-silent", mode);
    let honest = Honest::start(&node);
    let mut silent = raw(node.addr);
    let mut after_hello = raw(node.addr);
    after_hello
        .write_all(bytemuck::bytes_of(&NetHello::new(ROLE_CLIENT, None)))
        .unwrap();
    let _: NetChallenge = read_pod(&mut after_hello).expect("the challenge");
    // While they sit there, everyone else is served.
    honest.assert_progressing();
    node.assert_serves_new_clients();
    assert_closed(&mut silent, DROP_TIMEOUT);
    assert_closed(&mut after_hello, DROP_TIMEOUT);
    honest.finish();
    node.assert_serves_new_clients();
}

/// BUG: fails while the client library leaks its in-flight count (see
/// [`a_remote_client_makes_many_calls`]): the honest client runs past 4096 calls
/// here and hangs; the node itself passes (checked with that leak fixed).
fn a_thousand_connections_opened_and_dropped(mode: &str) {
    let mut node = NetNode::start("net-mass", mode);
    let honest = Honest::start(&node);
    let addr = node.addr;
    let streams = within("1000 connects", HANG_TIMEOUT, move || {
        (0..1000)
            .map(|_| TcpStream::connect(addr).expect("connect"))
            .collect::<Vec<_>>()
    });
    // With a thousand idle connections open, a new client still gets in.
    node.assert_serves_new_clients();
    drop(streams);
    honest.assert_progressing();
    // A thousand that each send a hello and hang up at once.
    within("1000 hellos", HANG_TIMEOUT, move || {
        let hello = NetHello::new(ROLE_CLIENT, None);
        for _ in 0..1000 {
            let mut stream = TcpStream::connect(addr).expect("connect");
            let _ = stream.write_all(bytemuck::bytes_of(&hello));
        }
    });
    honest.finish();
    node.assert_serves_new_clients();
}
