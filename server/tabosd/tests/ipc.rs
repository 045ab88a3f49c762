//! Guards IPC through a real tabosd: in-order exactly-once delivery between clients, a
//! receiver parked at the partition answered by another client's send, receive
//! timeouts, multicast over both partitions, the size and queue bounds, concurrent
//! senders keeping their own order, and the `tabos ipc` command line.

mod common;

use common::{within, Daemon, HANG_TIMEOUT};
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tabos_client::{ids, Client, Error, Status};
use tabos_procs::builtin::kv_args;
use tabos_procs::ipc::{decode_recv_reply, recv_args};

/// A receive that must not wait.
const NOW: Duration = Duration::ZERO;
/// A receive long enough for any message in flight to arrive.
const LONG: Duration = Duration::from_secs(10);

/// Receiver ids `>= from` whose mailbox is on `partition`.
fn mailboxes_on(client: &Client, partition: u32, from: u64, count: usize) -> Vec<u64> {
    (from..)
        .filter(|r| client.mailbox_partition(*r) == partition)
        .take(count)
        .collect()
}

fn payload(sender: u64, seq: u64, len: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(16 + len);
    data.extend_from_slice(&sender.to_le_bytes());
    data.extend_from_slice(&seq.to_le_bytes());
    data.extend((0..len).map(|i| (i as u64 ^ seq) as u8));
    data
}

fn sender_and_seq(data: &[u8]) -> (u64, u64) {
    let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().expect("8 bytes"));
    (word(0), word(8))
}

#[test]
fn messages_arrive_in_order_exactly_once_between_two_clients() {
    let daemon = Daemon::start("ipc-order", &[]);
    let mut sender = daemon.connect();
    let mut receiver = daemon.connect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for partition in 0..2 {
        let to = mailboxes_on(&sender, partition, 1000, 1)[0];
        let mut sent = Vec::new();
        for seq in 0..400u64 {
            let data = payload(7, seq, rng.gen_range(0..600));
            let id = sender.send(7, to, &data).expect("send");
            sent.push((id, data));
        }
        let ids: Vec<u64> = sent.iter().map(|(id, _)| *id).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids rise: {ids:?}");
        let mut got = Vec::new();
        while got.len() < sent.len() {
            if rng.gen_bool(0.5) {
                got.push(receiver.recv(to, NOW).expect("recv"));
            } else {
                got.extend(
                    receiver
                        .recv_batch(to, rng.gen_range(1..50), NOW)
                        .expect("batch"),
                );
            }
        }
        assert_eq!(got.len(), sent.len(), "nothing twice");
        for (m, (id, data)) in got.iter().zip(&sent) {
            assert_eq!((m.sender_id, m.receiver_id, m.message_id), (7, to, *id));
            assert!(m.data == *data, "message {id} came back different");
        }
        assert_eq!(
            receiver.recv(to, NOW),
            Err(Error::Status(Status::QueueEmpty))
        );
    }
    // The largest message goes through whole.
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
    let id = sender.send(1, 5, &big).expect("send 1 MiB");
    let m = receiver.recv(5, NOW).expect("recv 1 MiB");
    assert!(m.message_id == id && m.data == big);
}

#[test]
fn a_parked_receiver_gets_the_message_another_client_sends() {
    let daemon = Daemon::start("ipc-park", &[]);
    let mut sender = daemon.connect();
    for partition in 0..2 {
        let to = mailboxes_on(&sender, partition, 50, 1)[0];
        let mut receiver = daemon.connect();
        let waiting = std::thread::spawn(move || receiver.recv(to, LONG));
        // Give the receive time to park; if it has not yet, it finds the message.
        std::thread::sleep(Duration::from_millis(200));
        let id = sender.send(3, to, b"wake up").expect("send");
        let got = within("the parked receive", HANG_TIMEOUT, move || {
            waiting.join().expect("receiver thread")
        })
        .expect("the parked receive gets the message");
        assert_eq!((got.sender_id, got.message_id), (3, id));
        assert_eq!(got.data, b"wake up");
    }
    // A parked batch receive is woken by a multicast.
    let to = mailboxes_on(&sender, 1, 900, 1)[0];
    let mut receiver = daemon.connect();
    let waiting = std::thread::spawn(move || receiver.recv_batch(to, 10, LONG));
    std::thread::sleep(Duration::from_millis(100));
    sender.multicast(4, &[to, to], b"twice").expect("multicast");
    let got = within("the parked batch", HANG_TIMEOUT, move || {
        waiting.join().expect("receiver thread")
    })
    .expect("the batch");
    assert!(!got.is_empty() && got.iter().all(|m| m.data == b"twice"));
}

#[test]
fn a_receive_times_out_and_a_zero_timeout_does_not_wait() {
    let daemon = Daemon::start("ipc-timeout", &[]);
    let mut client = daemon.connect();
    let result = within("a 200 ms receive", HANG_TIMEOUT, move || {
        let timed_out = client.recv(42, Duration::from_millis(200));
        let batch = client.recv_batch(43, 5, Duration::from_millis(200));
        let now = client.recv(42, NOW);
        // The connection still works after the waits.
        let id = client.send(1, 42, b"after").expect("send");
        let got = client.recv(42, LONG).expect("recv");
        assert_eq!(got.message_id, id);
        (timed_out, batch, now)
    });
    assert_eq!(result.0, Err(Error::Status(Status::Timeout)));
    assert_eq!(result.1, Err(Error::Status(Status::Timeout)));
    assert_eq!(result.2, Err(Error::Status(Status::QueueEmpty)));
}

#[test]
fn multicast_reaches_receivers_on_both_partitions() {
    let daemon = Daemon::start("ipc-multicast", &[]);
    let mut client = daemon.connect();
    let mut to = mailboxes_on(&client, 0, 10, 3);
    to.extend(mailboxes_on(&client, 1, 10, 3));
    to.swap(1, 4);
    to.push(to[0]); // a repeat gets its own copy
    let ids = client.multicast(9, &to, b"to all").expect("multicast");
    assert_eq!(ids.iter().map(|(r, _)| *r).collect::<Vec<_>>(), to);
    for (receiver, id) in &ids[..6] {
        let m = client.recv(*receiver, NOW).expect("a copy");
        assert_eq!(
            (m.sender_id, m.message_id, &m.data[..]),
            (9, *id, &b"to all"[..])
        );
    }
    let again = client.recv(to[0], NOW).expect("the repeat's copy");
    assert_eq!(again.message_id, ids[6].1);
    assert!(ids[6].1 > ids[0].1);
    for receiver in &to {
        assert_eq!(
            client.recv(*receiver, NOW),
            Err(Error::Status(Status::QueueEmpty))
        );
    }
    assert_eq!(client.multicast(9, &[], b"nobody"), Ok(Vec::new()));
    // More receivers than one call carries: split into several calls per partition.
    let many: Vec<u64> = (100_000..110_000).collect();
    let ids = client
        .multicast(9, &many, b"m")
        .expect("multicast to 10000");
    assert_eq!(ids.len(), 10_000);
    for (receiver, id) in ids.iter().step_by(499) {
        assert_eq!(client.recv(*receiver, NOW).expect("copy").message_id, *id);
    }
}

#[test]
fn bounds_refuse_and_lose_nothing() {
    let daemon = Daemon::start(
        "ipc-bounds",
        &["--max-message-bytes", "1024", "--queue-len-max", "4"],
    );
    let mut client = daemon.connect();
    let to = 77;
    assert_eq!(
        client.send(1, to, &[0; 1025]),
        Err(Error::Status(Status::PayloadTooLarge))
    );
    let ids: Vec<u64> = (0..4u8)
        .map(|i| client.send(1, to, &[i; 1024]).expect("send within bounds"))
        .collect();
    assert_eq!(
        client.send(1, to, b"one too many"),
        Err(Error::Status(Status::QueueFull))
    );
    assert_eq!(
        client.multicast(1, &[to + 1, to], b"x"),
        Err(Error::Status(Status::QueueFull)),
    );
    for (i, id) in ids.iter().enumerate() {
        let m = client.recv(to, NOW).expect("queued message");
        assert_eq!((m.message_id, m.data), (*id, vec![i as u8; 1024]));
    }
    assert_eq!(client.recv(to, NOW), Err(Error::Status(Status::QueueEmpty)));
    assert!(client.send(1, to, b"room again").is_ok());
}

#[test]
fn concurrent_senders_keep_their_own_order() {
    const SENDERS: u64 = 4;
    const PER_SENDER: u64 = 300;
    let daemon = Daemon::start("ipc-fanin", &[]);
    let socket = daemon.socket().to_path_buf();
    let to = 31337;
    let receiver = {
        let mut client = daemon.connect();
        std::thread::spawn(move || {
            let mut got = Vec::new();
            while got.len() < (SENDERS * PER_SENDER) as usize {
                got.extend(client.recv_batch(to, 64, LONG).expect("recv"));
            }
            got
        })
    };
    let senders: Vec<_> = (0..SENDERS)
        .map(|s| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let mut client = Client::connect(&socket).expect("connect");
                for seq in 0..PER_SENDER {
                    client.send(s, to, &payload(s, seq, 32)).expect("send");
                }
            })
        })
        .collect();
    let got = within("fan-in", HANG_TIMEOUT, move || {
        for sender in senders {
            sender.join().expect("sender thread");
        }
        receiver.join().expect("receiver thread")
    });
    let mut next: HashMap<u64, u64> = HashMap::new();
    let mut ids = HashSet::new();
    for m in &got {
        let (s, seq) = sender_and_seq(&m.data);
        assert_eq!(m.sender_id, s);
        let want = next.entry(s).or_insert(0);
        assert_eq!(seq, *want, "sender {s} out of order");
        *want += 1;
        assert!(ids.insert(m.message_id), "message {} twice", m.message_id);
    }
    assert!(got.windows(2).all(|w| w[0].message_id < w[1].message_id));
    assert_eq!(next.values().sum::<u64>(), SENDERS * PER_SENDER);
}

/// Run `tabos ARGS...` against `daemon`, with `stdin` as its input.
fn tabos(daemon: &Daemon, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(common::tabos_cli())
        .args(args)
        .env("TABOS_CONNECT", daemon.socket())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tabos");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    common::child_output(child, HANG_TIMEOUT)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_command_line_sends_receives_and_multicasts() {
    let daemon = Daemon::start("ipc-cli", &[]);
    let sent = tabos(
        &daemon,
        &["ipc", "send", "--from", "1", "--to", "2"],
        b"hi from stdin\n",
    );
    assert!(sent.status.success(), "send: {}", text(&sent.stderr));
    let id: u64 = text(&sent.stdout).trim().parse().expect("a message id");
    let sent = tabos(
        &daemon,
        &["ipc", "send", "--from", "3", "--to", "2", "second"],
        b"",
    );
    assert!(sent.status.success(), "send: {}", text(&sent.stderr));

    let got = tabos(&daemon, &["ipc", "recv", "--as", "2", "--max", "10"], b"");
    assert!(got.status.success(), "recv: {}", text(&got.stderr));
    let second_id = id + 1;
    assert_eq!(
        text(&got.stdout),
        format!("from 1 id {id}: hi from stdin\nfrom 3 id {second_id}: second\n")
    );

    let none = tabos(&daemon, &["ipc", "recv", "--as", "2"], b"");
    assert_eq!(none.status.code(), Some(1));
    assert!(
        text(&none.stderr).contains("no message for 2"),
        "{}",
        text(&none.stderr)
    );
    let late = tabos(
        &daemon,
        &["ipc", "recv", "--as", "2", "--timeout-ms", "100"],
        b"",
    );
    assert_eq!(late.status.code(), Some(1));
    assert!(
        text(&late.stderr).contains("within 100 ms"),
        "{}",
        text(&late.stderr)
    );

    let multi = tabos(
        &daemon,
        &["ipc", "multicast", "--from", "5", "--to", "6,7,8", "-"],
        b"all",
    );
    assert!(multi.status.success(), "multicast: {}", text(&multi.stderr));
    assert_eq!(text(&multi.stdout).lines().count(), 3);
    for receiver in ["6", "7", "8"] {
        let got = tabos(&daemon, &["ipc", "recv", "--as", receiver], b"");
        assert!(
            text(&got.stdout).starts_with("from 5 id "),
            "{}",
            text(&got.stdout)
        );
        assert!(text(&got.stdout).ends_with(": all\n"));
    }
    // Bytes that are not UTF-8 are printed, lossily.
    let mut client = daemon.connect();
    client.send(9, 10, &[0xff, b'o', b'k']).expect("send");
    let got = tabos(&daemon, &["ipc", "recv", "--as", "10"], b"");
    assert!(
        text(&got.stdout).ends_with(": \u{fffd}ok\n"),
        "{}",
        text(&got.stdout)
    );
}

/// A waiter whose key is notified while its client's response ring has no room must
/// still get the message once the client reads its replies (the wake-up is kept, not
/// dropped, and the partition looks again after a short nap).
#[test]
fn a_waiter_woken_while_its_response_ring_is_full_still_gets_the_message() {
    let daemon = Daemon::start(
        "ipc-park-full",
        &[
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
        ],
    );
    let mut client = daemon.connect();
    let mut sender = daemon.connect();
    let partition = 0;
    let to = mailboxes_on(&client, partition, 1, 1)[0];
    let key = (0..)
        .map(|i: u32| format!("big-{i}").into_bytes())
        .find(|k| client.partition_for_key(k) == partition)
        .expect("a key on the partition");
    client.kv_put(&key, &[7; 7000]).expect("kv_put");
    let recv = client
        .submit(ids::ipc::RECV, partition, &recv_args(to, 5000))
        .expect("submit recv");
    // Replies the client does not read yet fill its response ring on that partition.
    for _ in 0..20 {
        client
            .submit(ids::KV_GET, partition, &kv_args(&key, b""))
            .expect("submit kv_get");
    }
    client.flush();
    std::thread::sleep(Duration::from_millis(200));
    let id = sender.send(1, to, b"while full").expect("send");
    std::thread::sleep(Duration::from_millis(200));
    let done = within("the pipelined calls", HANG_TIMEOUT, move || {
        let mut done = Vec::new();
        while client.in_flight() > 0 {
            client.wait(&mut done, 1).expect("wait");
        }
        done
    });
    let recv = done
        .into_iter()
        .find(|c| c.request_id == recv)
        .expect("the recv");
    let reply = recv
        .into_result()
        .expect("the queued message, not a timeout");
    assert_eq!(decode_recv_reply(&reply).expect("a message").message_id, id);
}
