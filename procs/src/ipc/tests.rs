//! The IPC procedures against a model: a `VecDeque` per receiver. Random sequences of
//! send / recv / recv_batch / multicast (and garbage) on a three-partition harness must
//! give the same statuses, ids and messages as the model, and leave the tables equal
//! to it after every call, errors included.

use super::codec::*;
use super::ids;
use super::procedures::mailbox_partition;
use crate::testing::{Effects, Harness};
use crate::DbLimits;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{HashMap, VecDeque};
use tabos_engine::{put_u32, Caller, WaitFor};
use tabos_transport::Status;

const PARTITIONS: u32 = 3;

/// What the model keeps per message.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Queued {
    sender_id: u64,
    message_id: u64,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct Model {
    queues: HashMap<u64, VecDeque<Queued>>,
    /// Highest id ever assigned per receiver: ids must rise strictly.
    last_id: HashMap<u64, u64>,
}

impl Model {
    fn len(&self, receiver_id: u64) -> usize {
        self.queues.get(&receiver_id).map_or(0, VecDeque::len)
    }

    fn partition_len(&self, partition: u32) -> usize {
        self.queues
            .iter()
            .filter(|(r, _)| mailbox_partition(**r, PARTITIONS) == partition)
            .map(|(_, q)| q.len())
            .sum()
    }

    /// Record a message the procedure accepted under `message_id`.
    fn push(&mut self, sender_id: u64, receiver_id: u64, message_id: u64, data: &[u8]) {
        let last = self.last_id.entry(receiver_id).or_insert(0);
        assert!(
            message_id > *last,
            "id {message_id} after {last} for {receiver_id}"
        );
        *last = message_id;
        self.queues
            .entry(receiver_id)
            .or_default()
            .push_back(Queued {
                sender_id,
                message_id,
                data: data.to_vec(),
            });
    }

    fn pop(&mut self, receiver_id: u64) -> Option<Queued> {
        self.queues.get_mut(&receiver_id)?.pop_front()
    }
}

fn limits() -> DbLimits {
    DbLimits {
        message_bytes_max: 48,
        queue_len_max: 6,
        messages_max: 14,
        ..DbLimits::default()
    }
}

fn call(
    h: &mut Harness,
    partition: u32,
    id: u32,
    args: &[u8],
) -> (Result<Vec<u8>, Status>, Effects) {
    h.call_full(Caller::user("alice"), partition, id, args)
}

fn home(receiver_id: u64) -> u32 {
    mailbox_partition(receiver_id, PARTITIONS)
}

/// The tables of every partition, as the model would list them.
fn assert_tables_match(h: &Harness, model: &Model) {
    for (p, db) in h.dbs.iter().enumerate() {
        let mut rows: Vec<(u64, Queued)> = db
            .ipc
            .messages
            .range(..)
            .map(|m| {
                assert_eq!(home(m.receiver_id), p as u32, "row on the wrong partition");
                let q = Queued {
                    sender_id: m.sender_id,
                    message_id: m.message_id,
                    data: m.data.to_vec(),
                };
                (m.receiver_id, q)
            })
            .collect();
        let mut want: Vec<(u64, Queued)> = model
            .queues
            .iter()
            .filter(|(r, _)| home(**r) == p as u32)
            .flat_map(|(r, q)| q.iter().map(move |m| (*r, m.clone())))
            .collect();
        rows.sort_by_key(|(r, m)| (*r, m.message_id));
        want.sort_by_key(|(r, m)| (*r, m.message_id));
        assert_eq!(rows, want, "partition {p}");
    }
}

fn random_data(rng: &mut StdRng, max: usize) -> Vec<u8> {
    let len = rng.gen_range(0..=max);
    (0..len).map(|_| rng.gen()).collect()
}

fn expect_message(reply: &[u8], want: &Queued) {
    let got = decode_recv_reply(reply).expect("a well-formed recv reply");
    assert_eq!(
        (got.sender_id, got.message_id, got.data),
        (want.sender_id, want.message_id, &want.data[..])
    );
}

/// The status a send of `data` to `receivers` (all on one partition) should get.
fn expected_send(model: &Model, limits: &DbLimits, receivers: &[u64], data: &[u8]) -> Status {
    if data.len() > limits.message_bytes_max {
        return Status::PayloadTooLarge;
    }
    let mut extra: HashMap<u64, usize> = HashMap::new();
    let partition_len = model.partition_len(home(receivers[0]));
    for (queued_before, r) in receivers.iter().enumerate() {
        let e = extra.entry(*r).or_insert(0);
        if model.len(*r) + *e >= limits.queue_len_max {
            return Status::QueueFull;
        }
        if partition_len + queued_before >= limits.messages_max {
            return Status::TableFull;
        }
        *e += 1;
    }
    Status::Ok
}

fn step(h: &mut Harness, model: &mut Model, rng: &mut StdRng, seen: &mut HashMap<Status, usize>) {
    let limits = limits();
    let receiver_id = rng.gen_range(0..10u64);
    let sender_id = rng.gen_range(0..4u64) << 40;
    let right = home(receiver_id);
    let timeout_ms = [0, 0, 50][rng.gen_range(0..3)];
    let (status, effects) = match rng.gen_range(0..10) {
        0..=3 => {
            let data = random_data(rng, limits.message_bytes_max + 4);
            let wrong = rng.gen_ratio(1, 10);
            let partition = if wrong {
                (right + 1) % PARTITIONS
            } else {
                right
            };
            let (result, effects) = call(
                h,
                partition,
                ids::SEND,
                &send_args(sender_id, receiver_id, &data),
            );
            let want = if wrong {
                Status::WrongPartition
            } else {
                expected_send(model, &limits, &[receiver_id], &data)
            };
            if let Ok(reply) = &result {
                let message_id = decode_send_reply(reply).expect("an id");
                model.push(sender_id, receiver_id, message_id, &data);
                assert_eq!(effects.notify, [receiver_id]);
            }
            assert_eq!(result.as_ref().err().copied().unwrap_or(Status::Ok), want);
            (want, effects)
        }
        4 | 5 => {
            let (result, effects) = call(h, right, ids::RECV, &recv_args(receiver_id, timeout_ms));
            assert_eq!(
                effects.wait.is_some(),
                model.len(receiver_id) == 0 && timeout_ms > 0
            );
            match model.pop(receiver_id) {
                Some(want) => expect_message(result.as_ref().expect("a message"), &want),
                None => assert_eq!(result, Err(Status::QueueEmpty)),
            }
            (result.err().unwrap_or(Status::Ok), effects)
        }
        6 | 7 => {
            let max_count = rng.gen_range(1..5u32);
            let args = recv_batch_args(receiver_id, max_count, timeout_ms);
            let (result, effects) = call(h, right, ids::RECV_BATCH, &args);
            assert_eq!(
                effects.wait.is_some(),
                model.len(receiver_id) == 0 && timeout_ms > 0
            );
            let want: Vec<Queued> = (0..max_count)
                .map_while(|_| model.pop(receiver_id))
                .collect();
            match &result {
                Ok(reply) => {
                    let got = decode_recv_batch_reply(reply).expect("a batch");
                    assert_eq!(got.len(), want.len());
                    for (g, w) in got.iter().zip(&want) {
                        assert_eq!(
                            (g.sender_id, g.message_id, g.data),
                            (w.sender_id, w.message_id, &w.data[..])
                        );
                    }
                }
                Err(status) => assert_eq!((*status, want.len()), (Status::QueueEmpty, 0)),
            }
            (result.err().unwrap_or(Status::Ok), effects)
        }
        8 => {
            let partition = rng.gen_range(0..PARTITIONS);
            let candidates: Vec<u64> = (0..10).filter(|r| home(*r) == partition).collect();
            let count = rng.gen_range(1..5);
            let receivers: Vec<u64> = (0..count)
                .map(|_| candidates[rng.gen_range(0..candidates.len())])
                .collect();
            let data = random_data(rng, limits.message_bytes_max + 2);
            let args = multicast_args(sender_id, &receivers, &data);
            let (result, effects) = call(h, partition, ids::MULTICAST, &args);
            let want = expected_send(model, &limits, &receivers, &data);
            match &result {
                Ok(reply) => {
                    let message_ids = decode_multicast_reply(reply, receivers.len()).expect("ids");
                    for (r, id) in receivers.iter().zip(message_ids) {
                        model.push(sender_id, *r, id, &data);
                    }
                    let mut woken = effects.notify.clone();
                    woken.sort_unstable();
                    let mut distinct = receivers.clone();
                    distinct.sort_unstable();
                    distinct.dedup();
                    assert_eq!(woken, distinct);
                }
                Err(status) => assert_eq!(*status, want),
            }
            assert_eq!(result.as_ref().err().copied().unwrap_or(Status::Ok), want);
            (want, effects)
        }
        _ => {
            // Garbage: never a panic, never a change.
            let id = rng.gen_range(ids::FIRST..=ids::MULTICAST);
            let bytes = random_data(rng, 40);
            let (result, effects) = call(h, rng.gen_range(0..PARTITIONS), id, &bytes);
            if let Ok(reply) = &result {
                panic!("garbage {bytes:?} to {id} succeeded with {reply:?}");
            }
            // A garbage receive that happens to decode may ask to wait on its key.
            let wait = None;
            (result.unwrap_err(), Effects { wait, ..effects })
        }
    };
    // Effects: only a successful write notifies; only an empty queue with a timeout waits.
    if status != Status::Ok {
        assert!(
            effects.notify.is_empty(),
            "{status:?} notified {:?}",
            effects.notify
        );
    }
    if let Some(wait) = effects.wait {
        assert_eq!(status, Status::QueueEmpty);
        assert_eq!(
            wait,
            WaitFor {
                key: receiver_id,
                timeout_ms: 50
            }
        );
    }
    *seen.entry(status).or_insert(0) += 1;
}

#[test]
fn procedures_match_a_vecdeque_model() {
    for seed in 0..4 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut h = Harness::new(PARTITIONS, limits());
        let mut model = Model::default();
        let mut seen = HashMap::new();
        for _ in 0..3000 {
            step(&mut h, &mut model, &mut rng, &mut seen);
            assert_tables_match(&h, &model);
        }
        for status in [
            Status::Ok,
            Status::QueueEmpty,
            Status::QueueFull,
            Status::TableFull,
            Status::PayloadTooLarge,
            Status::WrongPartition,
            Status::BadArgs,
        ] {
            assert!(
                seen.get(&status).copied().unwrap_or(0) > 0,
                "seed {seed}: no {status:?} in {seen:?}"
            );
        }
    }
}

#[test]
fn recv_on_an_empty_queue_parks_only_with_a_timeout() {
    let mut h = Harness::new(2, DbLimits::default());
    let r = 77;
    let p = mailbox_partition(r, 2);
    let (result, effects) = call(&mut h, p, ids::RECV, &recv_args(r, 0));
    assert_eq!((result, effects.wait), (Err(Status::QueueEmpty), None));
    let (result, effects) = call(&mut h, p, ids::RECV, &recv_args(r, 1500));
    assert_eq!(result, Err(Status::QueueEmpty));
    assert_eq!(
        effects.wait,
        Some(WaitFor {
            key: r,
            timeout_ms: 1500
        })
    );
    let (result, effects) = call(&mut h, p, ids::RECV_BATCH, &recv_batch_args(r, 8, 9));
    assert_eq!(result, Err(Status::QueueEmpty));
    assert_eq!(
        effects.wait,
        Some(WaitFor {
            key: r,
            timeout_ms: 9
        })
    );
    // The send that would wake it notifies the receiver's key, and the re-run finds it.
    let (result, effects) = call(&mut h, p, ids::SEND, &send_args(5, r, b"wake"));
    assert_eq!(decode_send_reply(&result.unwrap()), Ok(1));
    assert_eq!(
        effects,
        Effects {
            notify: vec![r],
            wait: None
        }
    );
    let (result, effects) = call(&mut h, p, ids::RECV, &recv_args(r, 1500));
    let reply = result.unwrap();
    let message = decode_recv_reply(&reply).unwrap();
    assert_eq!(
        (message.sender_id, message.message_id, message.data),
        (5, 1, &b"wake"[..])
    );
    assert_eq!(effects, Effects::default());
}

#[test]
fn bounds_refuse_without_losing_what_is_queued() {
    let limits = DbLimits {
        message_bytes_max: 8,
        queue_len_max: 3,
        messages_max: 4,
        ..DbLimits::default()
    };
    let mut h = Harness::new(1, limits);
    assert_eq!(
        call(&mut h, 0, ids::SEND, &send_args(1, 9, &[0; 9])).0,
        Err(Status::PayloadTooLarge)
    );
    for i in 0..3u8 {
        assert!(call(&mut h, 0, ids::SEND, &send_args(1, 9, &[i; 8]))
            .0
            .is_ok());
    }
    assert_eq!(
        call(&mut h, 0, ids::SEND, &send_args(1, 9, b"x")).0,
        Err(Status::QueueFull)
    );
    // All or nothing: receiver 8 has room, 9 does not.
    assert_eq!(
        call(&mut h, 0, ids::MULTICAST, &multicast_args(1, &[8, 9], b"m")).0,
        Err(Status::QueueFull)
    );
    assert!(call(&mut h, 0, ids::SEND, &send_args(1, 8, b"y")).0.is_ok());
    assert_eq!(
        call(&mut h, 0, ids::SEND, &send_args(1, 7, b"z")).0,
        Err(Status::TableFull)
    );
    assert_eq!(h.dbs[0].ipc.messages.len(), 4);
    for i in 0..3u8 {
        let reply = h.call(0, ids::RECV, &recv_args(9, 0)).unwrap();
        let m = decode_recv_reply(&reply).unwrap();
        assert_eq!((m.message_id, m.data), (u64::from(i) + 1, &[i; 8][..]));
    }
    assert_eq!(
        h.call(0, ids::RECV, &recv_args(9, 0)),
        Err(Status::QueueEmpty)
    );
    // Receiver 9's mailbox emptied and went; its next id still rises.
    assert!(h.dbs[0].ipc.mailboxes.get(&9).is_none());
    let reply = h.call(0, ids::SEND, &send_args(1, 9, b"again")).unwrap();
    assert!(decode_send_reply(&reply).unwrap() > 3);
}

#[test]
fn recv_batch_stops_before_the_reply_limit() {
    let mut h = Harness::new(1, DbLimits::default());
    for i in 0..10u8 {
        h.call(0, ids::SEND, &send_args(2, 5, &[i; 100])).unwrap();
    }
    // Room for the count and exactly three 120-byte messages.
    h.max_reply_bytes = 4 + 3 * (MESSAGE_REPLY_OVERHEAD_BYTES + 100) + 50;
    let reply = h
        .call(0, ids::RECV_BATCH, &recv_batch_args(5, 1000, 0))
        .unwrap();
    let got = decode_recv_batch_reply(&reply).unwrap();
    assert_eq!(
        got.iter().map(|m| m.message_id).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    // A message too big for any reply fails the call and stays queued.
    h.call(0, ids::SEND, &send_args(2, 6, &[0; 1000])).unwrap();
    assert_eq!(
        h.call(0, ids::RECV_BATCH, &recv_batch_args(6, 1, 0)),
        Err(Status::PayloadTooLarge)
    );
    assert_eq!(
        h.call(0, ids::RECV, &recv_args(6, 0)),
        Err(Status::PayloadTooLarge)
    );
    assert_eq!(h.dbs[0].ipc.queued_count(6), 1);
    h.max_reply_bytes = 1 << 20;
    let reply = h
        .call(0, ids::RECV_BATCH, &recv_batch_args(5, u32::MAX, 0))
        .unwrap();
    assert_eq!(decode_recv_batch_reply(&reply).unwrap().len(), 7);
}

#[test]
fn wrong_partition_and_bad_arguments_change_nothing() {
    let mut h = Harness::new(2, DbLimits::default());
    let (a, b) = (
        (0..).find(|r| home2(*r) == 0).unwrap(),
        (0..).find(|r| home2(*r) == 1).unwrap(),
    );
    assert_eq!(
        h.call(1, ids::SEND, &send_args(1, a, b"x")),
        Err(Status::WrongPartition)
    );
    assert_eq!(
        h.call(1, ids::RECV, &recv_args(a, 0)),
        Err(Status::WrongPartition)
    );
    assert_eq!(
        h.call(1, ids::RECV_BATCH, &recv_batch_args(a, 1, 0)),
        Err(Status::WrongPartition)
    );
    // One stranger in the list fails the whole multicast.
    assert_eq!(
        h.call(1, ids::MULTICAST, &multicast_args(1, &[b, a], b"x")),
        Err(Status::WrongPartition)
    );
    let mut too_many = Vec::new();
    tabos_engine::put_u64(&mut too_many, 1);
    put_u32(&mut too_many, MULTICAST_RECEIVERS_MAX as u32 + 1);
    too_many.extend(vec![0; 8 * (MULTICAST_RECEIVERS_MAX + 1) + 4]);
    assert_eq!(h.call(0, ids::MULTICAST, &too_many), Err(Status::BadArgs));
    assert_eq!(
        h.call(0, ids::RECV_BATCH, &recv_batch_args(a, 0, 0)),
        Err(Status::BadArgs)
    );
    assert_eq!(h.call(0, ids::SEND, &[]), Err(Status::BadArgs));
    assert!(h
        .dbs
        .iter()
        .all(|db| db.ipc.messages.is_empty() && db.ipc.mailboxes.is_empty()));
    assert_eq!(h.call(0, ids::LAST, &[]), Err(Status::UnknownProcedure));
}

fn home2(receiver_id: u64) -> u32 {
    mailbox_partition(receiver_id, 2)
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = StdRng::seed_from_u64(99);
    let mut h = Harness::new(2, DbLimits::default());
    for _ in 0..5000 {
        let id = rng.gen_range(ids::SEND..=ids::MULTICAST);
        let len = rng.gen_range(0..64);
        let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let _ = h.call(rng.gen_range(0..2), id, &bytes);
    }
}
