//! Guards the node against hostile clients: a second process that does the real
//! handshake and then writes bad frames, random bytes, out-of-range indices and huge
//! lengths into its live rings, while honest clients keep calling successfully; bad
//! handshakes (silence, garbage, half a hello); and a client-library user whose rings
//! were corrupted, who gets a transport error once evicted. The server must answer
//! every well-formed frame, evict whoever corrupts a ring, and stay up for the others.

mod common;

use common::{
    assert_child_ok, child_output, child_role, clients_per_partition, poll_until, spawn_child,
    within, Daemon, HANG_TIMEOUT,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tabos_client::{ids, Client, Error, Status};
use tabos_procs::builtin::{kv_args, KEY_BYTES_MAX};
use tabos_transport::doorbell::EventFd;
use tabos_transport::handshake::{recv_with_fds, Hello, Welcome, HANDSHAKE_MAGIC};
use tabos_transport::ring::{Consumer, Producer};
use tabos_transport::segment::{Segment, SegmentShape, PARTITIONS_MAX};
use tabos_transport::wire::{frame_size, Header, FLAG_PAD, FLAG_RESPONSE, FRAME_MAGIC};

/// Name of the test that a child process runs.
const CHILD_ENTRY: &str = "child_entry";
/// How long the hostile process keeps corrupting rings ("a few seconds").
const HOSTILE_RUN: Duration = Duration::from_secs(4);

// Layout of a client segment, as transport/src/segment.rs and ring.rs define it: a
// header page, then for ring i (request ring of partition p: 2p, response ring: 2p+1)
// a 4096-byte control area (producer tail at +0, consumer head at +128, consumer
// sleeping flag at +136) followed by the ring's data. `RawClient::connect` checks it.
const HEADER_PAGE: u64 = 4096;
const CONTROL_AREA: u64 = 4096;
const TAIL_AT: u64 = 0;
const HEAD_AT: u64 = 128;
const SLEEPING_AT: u64 = 136;

/// Payload of the echo that checks a connection still works.
const ECHO_TEXT: &[u8] = b"still served";

/// A client that speaks the protocol by hand and can write anywhere in its segment.
struct RawClient {
    stream: UnixStream,
    memfd: File,
    doorbells: Vec<EventFd>,
    welcome: Welcome,
    requests: Vec<Producer>,
    responses: Vec<Consumer>,
    next_id: u64,
    // Keeps the mapping behind the ring handles.
    _segment: Arc<Segment>,
}

impl RawClient {
    /// The real handshake: hello, welcome with the memfd and doorbells, map the rings.
    fn connect(socket: &Path) -> RawClient {
        let stream = UnixStream::connect(socket).expect("connect");
        stream.set_read_timeout(Some(HANG_TIMEOUT)).unwrap();
        (&stream)
            .write_all(bytemuck::bytes_of(&Hello::new(None)))
            .expect("send hello");
        let mut raw = [0u8; std::mem::size_of::<Welcome>()];
        let mut fds =
            recv_with_fds(&stream, &mut raw, 1 + PARTITIONS_MAX as usize).expect("welcome");
        let welcome: Welcome = bytemuck::pod_read_unaligned(&raw);
        assert_eq!(welcome.magic, HANDSHAKE_MAGIC);
        assert_eq!(welcome.status, 0, "the node refused the hostile client");
        let partitions = welcome.partition_count as usize;
        assert_eq!(fds.len(), 1 + partitions);
        let doorbells = fds.drain(1..).map(EventFd::from_owned).collect();
        let memfd_fd = fds.pop().expect("the memfd");
        let memfd = File::from(memfd_fd.try_clone().expect("dup the memfd"));
        let shape = SegmentShape {
            partition_count: welcome.partition_count,
            ring_bytes: welcome.ring_bytes as usize,
        };
        let segment = Segment::open(memfd_fd, shape).expect("map the segment");
        let requests = (0..partitions as u32)
            .map(|p| Producer::new(segment.request_ring(p)))
            .collect();
        let responses = (0..partitions as u32)
            .map(|p| Consumer::new(segment.response_ring(p)))
            .collect();
        stream.set_nonblocking(true).unwrap();
        let mut client = RawClient {
            stream,
            memfd,
            doorbells,
            welcome,
            requests,
            responses,
            next_id: 1,
            _segment: segment,
        };
        client.check_layout();
        client
    }

    /// The offsets this test writes at must be where the rings really are.
    fn check_layout(&mut self) {
        let tail_before = self.tail(0);
        let head_before = self.read_u64(self.response_base(0) + HEAD_AT);
        self.check_call(0);
        assert_eq!(
            self.tail(0),
            tail_before + frame_size(ECHO_TEXT.len()) as u64,
            "segment layout changed: request tail is not where this test writes"
        );
        assert_eq!(
            self.read_u64(self.response_base(0) + HEAD_AT),
            head_before + frame_size(ECHO_TEXT.len()) as u64,
            "segment layout changed: response head is not where this test writes"
        );
    }

    fn ring_bytes(&self) -> u64 {
        self.welcome.ring_bytes
    }

    fn ring_base(&self, index: u32) -> u64 {
        HEADER_PAGE + u64::from(index) * (CONTROL_AREA + self.ring_bytes())
    }

    fn request_base(&self, partition: u32) -> u64 {
        self.ring_base(2 * partition)
    }

    fn response_base(&self, partition: u32) -> u64 {
        self.ring_base(2 * partition + 1)
    }

    fn write(&self, offset: u64, bytes: &[u8]) {
        self.memfd
            .write_all_at(bytes, offset)
            .expect("write the memfd");
    }

    fn read_u64(&self, offset: u64) -> u64 {
        let mut bytes = [0u8; 8];
        self.memfd
            .read_exact_at(&mut bytes, offset)
            .expect("read the memfd");
        u64::from_le_bytes(bytes)
    }

    /// The published tail of `partition`'s request ring.
    fn tail(&self, partition: u32) -> u64 {
        self.read_u64(self.request_base(partition) + TAIL_AT)
    }

    fn set_tail(&self, partition: u32, tail: u64) {
        self.write(self.request_base(partition) + TAIL_AT, &tail.to_le_bytes());
    }

    /// Write `bytes` into `partition`'s request ring where the next frame goes.
    fn write_at_tail(&self, partition: u32, bytes: &[u8]) {
        let offset = self.tail(partition) & (self.ring_bytes() - 1);
        assert!(offset + bytes.len() as u64 <= self.ring_bytes());
        self.write(self.request_base(partition) + CONTROL_AREA + offset, bytes);
    }

    fn ring_doorbells(&self) {
        for doorbell in &self.doorbells {
            doorbell.notify();
        }
    }

    /// Push a frame (magic and length set by the producer, every other field as given).
    fn send(&mut self, partition: u32, header: Header, payload: &[u8]) {
        let producer = &mut self.requests[partition as usize];
        assert!(
            producer.try_push(header, payload).expect("push"),
            "request ring full"
        );
        producer.publish();
        self.ring_doorbells();
    }

    fn request(&mut self, proc_id: u32, partition: u32) -> Header {
        let id = self.next_id;
        self.next_id += 1;
        Header::request(id, proc_id, partition, 0)
    }

    /// Wait for the reply to request `id` on `partition`, skipping other replies.
    fn await_reply(&mut self, partition: u32, id: u64) -> (Header, Vec<u8>) {
        let deadline = Instant::now() + HANG_TIMEOUT;
        let mut payload = Vec::new();
        loop {
            let popped = self.responses[partition as usize]
                .pop(&mut payload)
                .expect("the node wrote a well-formed response ring");
            self.responses[partition as usize].release();
            match popped {
                Some(h) if h.request_id == id => return (h, payload),
                Some(_) => continue,
                None => {}
            }
            assert!(
                !self.evicted_now(),
                "the node evicted a client that sent well-formed frames"
            );
            assert!(Instant::now() < deadline, "no reply to request {id}");
            self.ring_doorbells();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Send `header` with `payload` on `partition` and return the reply's status.
    fn call(&mut self, partition: u32, header: Header, payload: &[u8]) -> (u32, Vec<u8>) {
        let id = header.request_id;
        self.send(partition, header, payload);
        let (reply, bytes) = self.await_reply(partition, id);
        assert_eq!(
            reply.proc_id, header.proc_id,
            "the reply echoes the procedure"
        );
        assert_eq!(
            reply.partition, header.partition,
            "the reply echoes the partition"
        );
        (reply.status, bytes)
    }

    /// An echo on `partition` must come back intact.
    fn check_call(&mut self, partition: u32) {
        let header = self.request(ids::ECHO, partition);
        let (status, reply) = self.call(partition, header, ECHO_TEXT);
        assert_eq!(status, Status::Ok as u32);
        assert_eq!(reply, ECHO_TEXT);
    }

    /// Send echoes of the largest payload on `partition` and read no reply: the node
    /// must then look at our response ring's consumer head to find room (it may trust
    /// its cached view of that head until it runs short).
    fn fill_responses(&mut self, partition: u32) {
        let max_payload = vec![3u8; self.welcome.max_payload_bytes as usize];
        for _ in 0..3 {
            let header = self.request(ids::ECHO, partition);
            self.send(partition, header, &max_payload);
        }
    }

    /// Whether the node has closed our socket (it evicts by shutting it down).
    fn evicted_now(&mut self) -> bool {
        let mut byte = [0u8; 1];
        match self.stream.read(&mut byte) {
            Ok(0) => true,
            Ok(_) => panic!("the node sent bytes on the socket after the handshake"),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => true,
            Err(e) => panic!("socket error: {e}"),
        }
    }

    /// Wait until the node evicts this client; fail the test if it never does.
    fn expect_evicted(&mut self, what: &str) {
        let deadline = Instant::now() + HANG_TIMEOUT;
        while !self.evicted_now() {
            assert!(
                Instant::now() < deadline,
                "not evicted after corrupting its ring: {what}"
            );
            self.ring_doorbells();
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Expect `status` for a call built by `make` (with fresh ids) on both partitions.
fn expect_status(
    raw: &mut RawClient,
    what: &str,
    status: Status,
    make: impl Fn(&mut RawClient, u32) -> (Header, Vec<u8>),
) {
    for p in 0..2 {
        let (header, payload) = make(raw, p);
        let (got, reply) = raw.call(p, header, &payload);
        assert_eq!(
            Status::from_code(got),
            Some(status),
            "{what} on partition {p}: status {got}"
        );
        if status != Status::Ok {
            assert!(
                reply.is_empty(),
                "{what}: an error reply carries no payload"
            );
        }
    }
}

/// Well-formed frames with bad fields each get their error status; the port stays.
fn send_bad_fields(socket: &Path, rng: &mut StdRng) {
    let mut raw = RawClient::connect(socket);
    let max_payload = raw.welcome.max_payload_bytes as usize;
    expect_status(
        &mut raw,
        "a frame for the other partition",
        Status::BadPartition,
        |r, p| (r.request(ids::NULL, 1 - p), Vec::new()),
    );
    expect_status(&mut raw, "partition 99", Status::BadPartition, |r, _| {
        (r.request(ids::NULL, 99), Vec::new())
    });
    expect_status(&mut raw, "the RESPONSE flag", Status::BadFrame, |r, p| {
        let mut h = r.request(ids::NULL, p);
        h.flags = FLAG_RESPONSE;
        (h, Vec::new())
    });
    expect_status(
        &mut raw,
        "a status in a request",
        Status::BadFrame,
        |r, p| {
            let mut h = r.request(ids::NULL, p);
            h.status = Status::NotFound as u32;
            (h, Vec::new())
        },
    );
    expect_status(
        &mut raw,
        "an unknown procedure",
        Status::UnknownProcedure,
        |r, p| (r.request(0x7fff_fff0, p), Vec::new()),
    );
    expect_status(
        &mut raw,
        "a payload over the maximum",
        Status::PayloadTooLarge,
        |r, p| (r.request(ids::ECHO, p), vec![1u8; max_payload + 1]),
    );
    expect_status(
        &mut raw,
        "kv_put with a bad length",
        Status::BadArgs,
        |r, p| (r.request(ids::KV_PUT, p), vec![0xff; 4]),
    );
    expect_status(
        &mut raw,
        "kv_put with a short key",
        Status::BadArgs,
        |r, p| (r.request(ids::KV_PUT, p), vec![200, 0, 0, 0, 1, 2, 3]),
    );
    expect_status(
        &mut raw,
        "kv_put with no arguments",
        Status::BadArgs,
        |r, p| (r.request(ids::KV_PUT, p), Vec::new()),
    );
    expect_status(
        &mut raw,
        "kv_put with a key too long",
        Status::BadArgs,
        |r, p| {
            (
                r.request(ids::KV_PUT, p),
                kv_args(&vec![b'k'; KEY_BYTES_MAX + 1], b"v"),
            )
        },
    );
    expect_status(
        &mut raw,
        "kv_get with trailing bytes",
        Status::BadArgs,
        |r, p| {
            let key = (0..)
                .map(|i| format!("h-{i}").into_bytes())
                .find(|k| tabos_transport::wire::partition_for_key(k, 2) == p)
                .unwrap();
            (r.request(ids::KV_GET, p), kv_args(&key, b"junk"))
        },
    );
    expect_status(
        &mut raw,
        "kv_put on the wrong partition",
        Status::WrongPartition,
        |r, p| {
            let key = (0..)
                .map(|i| format!("w-{i}").into_bytes())
                .find(|k| tabos_transport::wire::partition_for_key(k, 2) != p)
                .unwrap();
            (r.request(ids::KV_PUT, p), kv_args(&key, b"v"))
        },
    );
    expect_status(&mut raw, "rkv_put with garbage", Status::BadArgs, |r, p| {
        (r.request(ids::RKV_PUT, p), vec![0xfe; 3])
    });
    expect_status(&mut raw, "echo after all that", Status::Ok, |r, p| {
        (r.request(ids::ECHO, p), b"ok".to_vec())
    });
    // Random fields in well-formed frames: every registered procedure and some
    // unknown ones, random partitions, flags and arguments. Each gets an answer (or
    // parks, for procedures that wait); none may evict the client or stop the node.
    let registered: Vec<u32> = tabos_procs::registry().iter().map(|d| d.id).collect();
    for p in 0..2u32 {
        for _ in 0..300 {
            let proc_id = if rng.gen_bool(0.8) {
                registered[rng.gen_range(0..registered.len())]
            } else {
                rng.gen()
            };
            let mut header = Header::request(rng.gen_range(1..u64::MAX), proc_id, p, 0);
            if rng.gen_bool(0.1) {
                header.partition = rng.gen();
            }
            if rng.gen_bool(0.1) {
                header.flags = FLAG_RESPONSE;
            }
            if rng.gen_bool(0.1) {
                header.status = rng.gen();
            }
            let len = rng.gen_range(0..300);
            let payload: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            raw.send(p, header, &payload);
            // Read replies as they come so the response ring never fills.
            let mut sink = Vec::new();
            while raw.responses[p as usize]
                .pop(&mut sink)
                .expect("pop")
                .is_some()
            {}
            raw.responses[p as usize].release();
        }
        let sentinel = Header::request(u64::MAX, ids::ECHO, p, 0);
        let (status, reply) = raw.call(p, sentinel, b"sentinel");
        assert_eq!((status, reply.as_slice()), (0, &b"sentinel"[..]));
    }
}

/// What the node must do after a corruption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Evict the client (shut its socket down).
    Evicted,
    /// Go on serving the client.
    StillServed,
    /// Anything but crash or disturb other clients.
    Nothing,
}

/// Ways to corrupt a live segment. Each runs on a fresh connection.
#[derive(Clone, Copy, Debug)]
enum Garbage {
    /// Random bytes where the next frame goes, then a plausible tail.
    RandomFrameBytes,
    /// Producer tail set to `u64::MAX`.
    TailMax,
    /// Producer tail moved far ahead.
    TailHuge,
    /// Producer tail one frame past what the ring can hold.
    TailPastCapacity,
    /// Producer tail not on a frame boundary.
    TailMisaligned,
    /// Producer tail moved back.
    TailBackwards,
    /// A header claiming `payload_len = u32::MAX`.
    HugePayloadLen,
    /// A header whose payload extends past the published tail.
    PayloadPastTail,
    /// A pad frame of the wrong length.
    BadPad,
    /// A header with flags no frame carries.
    UnknownFlags,
    /// The response ring's consumer head set to garbage.
    ResponseHeadRandom,
    /// The response ring's consumer head moved back.
    ResponseHeadBackwards,
    /// Random writes all over both rings of both partitions, ending with a bad tail.
    Storm,
    /// The whole request ring, control block included, overwritten with random bytes.
    WholeRing,
    /// Random bytes over the segment's header page (only futex words live there).
    HeaderPage,
    /// Random bytes over the response ring's data (the node only writes it).
    ResponseData,
    /// The consumer's sleeping flag set to random values.
    SleepingFlag,
}

impl Garbage {
    const ALL: [Garbage; 17] = [
        Garbage::RandomFrameBytes,
        Garbage::TailMax,
        Garbage::TailHuge,
        Garbage::TailPastCapacity,
        Garbage::TailMisaligned,
        Garbage::TailBackwards,
        Garbage::HugePayloadLen,
        Garbage::PayloadPastTail,
        Garbage::BadPad,
        Garbage::UnknownFlags,
        Garbage::ResponseHeadRandom,
        Garbage::ResponseHeadBackwards,
        Garbage::Storm,
        Garbage::WholeRing,
        Garbage::HeaderPage,
        Garbage::ResponseData,
        Garbage::SleepingFlag,
    ];

    /// What the node must do about it. Garbage that only hurts the client itself
    /// need not be detected; corrupt indices and frames must get the client evicted.
    fn expect(self) -> Expect {
        match self {
            Garbage::HeaderPage | Garbage::ResponseData | Garbage::SleepingFlag => {
                Expect::StillServed
            }
            // A head moved back but not below what the node last read looks like a slow
            // reader: the client only starves itself.
            Garbage::ResponseHeadBackwards => Expect::Nothing,
            _ => Expect::Evicted,
        }
    }

    fn apply(self, raw: &mut RawClient, p: u32, rng: &mut StdRng) {
        let cap = raw.ring_bytes();
        let tail = raw.tail(p);
        let header_bytes = |magic: u32, payload_len: u32, flags: u32| {
            let header = Header {
                magic,
                payload_len,
                request_id: 7,
                proc_id: ids::NULL,
                status: 0,
                partition: p,
                flags,
            };
            bytemuck::bytes_of(&header).to_vec()
        };
        match self {
            Garbage::RandomFrameBytes => {
                let room = cap - (tail & (cap - 1));
                let len = rng.gen_range(32..=4096u64).min(room) as usize;
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                if bytes[..4] == FRAME_MAGIC.to_le_bytes() {
                    bytes[0] ^= 1;
                }
                raw.write_at_tail(p, &bytes);
                raw.set_tail(p, tail + (len as u64).next_multiple_of(32));
            }
            Garbage::TailMax => raw.set_tail(p, u64::MAX),
            Garbage::TailHuge => raw.set_tail(p, tail + (1 << 40) + rng.gen_range(0..1 << 20) * 32),
            Garbage::TailPastCapacity => raw.set_tail(p, tail + cap + 32),
            Garbage::TailMisaligned => raw.set_tail(p, tail + 8),
            Garbage::TailBackwards => {
                raw.check_call(p);
                raw.set_tail(p, raw.tail(p) - 32);
            }
            Garbage::HugePayloadLen => {
                raw.write_at_tail(p, &header_bytes(FRAME_MAGIC, u32::MAX, 0));
                raw.set_tail(p, tail + 64);
            }
            Garbage::PayloadPastTail => {
                raw.write_at_tail(p, &header_bytes(FRAME_MAGIC, 1000, 0));
                raw.set_tail(p, tail + 64);
            }
            Garbage::BadPad => {
                raw.write_at_tail(p, &header_bytes(FRAME_MAGIC, 0, FLAG_PAD));
                raw.set_tail(p, tail + 32);
            }
            Garbage::UnknownFlags => {
                raw.write_at_tail(p, &header_bytes(FRAME_MAGIC, 0, 1 << 7));
                raw.set_tail(p, tail + 32);
            }
            Garbage::ResponseHeadRandom => {
                let head = if rng.gen_bool(0.5) {
                    u64::MAX
                } else {
                    rng.gen_range(1 << 32..u64::MAX)
                };
                raw.write(raw.response_base(p) + HEAD_AT, &head.to_le_bytes());
                raw.fill_responses(p);
            }
            Garbage::ResponseHeadBackwards => {
                raw.check_call(p);
                raw.check_call(p);
                raw.write(raw.response_base(p) + HEAD_AT, &0u64.to_le_bytes());
                raw.fill_responses(p);
            }
            Garbage::Storm => {
                for _ in 0..300 {
                    let ring = rng.gen_range(0..4u32);
                    let base = raw.ring_base(ring);
                    match rng.gen_range(0..3) {
                        0 => raw.write(base + TAIL_AT, &rng.gen::<u64>().to_le_bytes()),
                        1 => raw.write(base + HEAD_AT, &rng.gen::<u64>().to_le_bytes()),
                        _ => {
                            let at = rng.gen_range(0..cap - 64);
                            let bytes: [u8; 64] = std::array::from_fn(|_| rng.gen());
                            raw.write(base + CONTROL_AREA + at, &bytes);
                        }
                    }
                }
                raw.set_tail(p, u64::MAX - 31);
            }
            Garbage::WholeRing => {
                let len = (CONTROL_AREA + cap) as usize;
                let mut bytes = vec![0u8; len];
                rng.fill(&mut bytes[..]);
                raw.write(raw.request_base(p), &bytes);
            }
            Garbage::HeaderPage => {
                let mut bytes = vec![0u8; HEADER_PAGE as usize];
                rng.fill(&mut bytes[..]);
                raw.write(0, &bytes);
            }
            Garbage::ResponseData => {
                let mut bytes = vec![0u8; 8192];
                rng.fill(&mut bytes[..]);
                let at = rng.gen_range(0..cap - 8192);
                raw.write(raw.response_base(p) + CONTROL_AREA + at, &bytes);
            }
            Garbage::SleepingFlag => {
                let flag: u32 = rng.gen();
                raw.write(raw.request_base(p) + SLEEPING_AT, &flag.to_le_bytes());
            }
        }
        raw.ring_doorbells();
    }
}

/// Child role `hostile:<socket>`: bad frames, then corrupted rings in a loop.
fn run_hostile(socket: &Path) {
    let mut rng = StdRng::seed_from_u64(u64::from(std::process::id()));
    send_bad_fields(socket, &mut rng);
    let started = Instant::now();
    let mut rounds = 0usize;
    while rounds < 2 * Garbage::ALL.len() || started.elapsed() < HOSTILE_RUN {
        let garbage = Garbage::ALL[rounds % Garbage::ALL.len()];
        let p = rng.gen_range(0..2u32);
        let mut raw = RawClient::connect(socket);
        if rng.gen_bool(0.5) {
            raw.check_call(p); // sometimes corrupt a ring that has been used
        }
        garbage.apply(&mut raw, p, &mut rng);
        match garbage.expect() {
            Expect::Evicted => raw.expect_evicted(&format!("{garbage:?} on partition {p}")),
            Expect::StillServed => {
                raw.check_call(p);
                raw.check_call(1 - p);
            }
            Expect::Nothing => {}
        }
        rounds += 1;
    }
    println!("hostile client: {rounds} rounds of corruption");
}

/// Child role `evicted:<socket>`: a client-library user whose response ring head is
/// corrupted (through its own memfd, found in /proc/self/fd) gets `Error::Transport`.
fn run_evicted_library_user(socket: &Path) {
    let mut client = Client::connect(socket).expect("connect");
    client.null(1).expect("a first call works");
    let memfds: Vec<std::path::PathBuf> = std::fs::read_dir("/proc/self/fd")
        .expect("list fds")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_link(p).is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:tabos"))
        })
        .collect();
    assert_eq!(memfds.len(), 1, "one client, one segment: {memfds:?}");
    let memfd = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&memfds[0])
        .expect("open the segment");
    let partitions = u64::from(client.partition_count());
    let total = memfd.metadata().expect("stat").len();
    let ring_bytes = (total - HEADER_PAGE) / (2 * partitions) - CONTROL_AREA;
    let response_1 = HEADER_PAGE + 3 * (CONTROL_AREA + ring_bytes);
    memfd
        .write_all_at(&u64::MAX.to_le_bytes(), response_1 + HEAD_AT)
        .expect("corrupt the head");
    // Three replies of the largest payload do not fit the room the node keeps, so it
    // re-reads our head before taking the third request (all three arrive in one
    // flush): it finds the corruption and evicts. The library notices the closed socket.
    let big = vec![1u8; client.max_payload_bytes()];
    for _ in 0..3 {
        client.submit(ids::ECHO, 1, &big).expect("submit");
    }
    client.flush();
    let mut done = Vec::new();
    let result = client.wait(&mut done, 3);
    assert!(matches!(result, Err(Error::Transport(_))), "got {result:?}");
    let again = client.null(0);
    assert!(matches!(again, Err(Error::Transport(_))), "got {again:?}");
    println!("evicted client-library user: {}", result.unwrap_err());
}

/// Entry point of child processes (see `common::spawn_child`); ignored in a normal run.
#[test]
#[ignore = "entry point of the child processes that the other tests in this file start"]
fn child_entry() {
    let Some(role) = child_role() else {
        eprintln!("child_entry: not started as a child process; nothing to do");
        return;
    };
    match role.split_once(':') {
        Some(("hostile", socket)) => run_hostile(Path::new(socket)),
        Some(("evicted", socket)) => run_evicted_library_user(Path::new(socket)),
        _ => panic!("unknown child role {role}"),
    }
}

/// Honest clients calling the key-value table from threads and checking every reply.
struct Honest {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<usize>>,
}

impl Honest {
    /// Start `count` clients; returns once each has made its first calls.
    fn start(socket: &Path, count: usize) -> Honest {
        let stop = Arc::new(AtomicBool::new(false));
        let warm = Arc::new(AtomicUsize::new(0));
        let threads = (0..count)
            .map(|t| {
                let socket = socket.to_path_buf();
                let (stop, warm) = (stop.clone(), warm.clone());
                std::thread::spawn(move || {
                    let mut client = Client::connect(&socket).expect("honest connect");
                    let mut calls = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("honest{t}-{}", calls % 64);
                        let value = format!("{t}:{calls}");
                        client
                            .kv_put(key.as_bytes(), value.as_bytes())
                            .expect("honest kv_put");
                        let got = client.kv_get(key.as_bytes()).expect("honest kv_get");
                        assert_eq!(got.as_deref(), Some(value.as_bytes()));
                        let p = (calls % 2) as u32;
                        let echo = client.call(ids::ECHO, p, value.as_bytes());
                        assert_eq!(echo.expect("honest echo"), value.as_bytes());
                        if calls == 0 {
                            warm.fetch_add(1, Ordering::Relaxed);
                        }
                        calls += 3;
                    }
                    calls
                })
            })
            .collect();
        poll_until("honest clients start calling", HANG_TIMEOUT, || {
            (warm.load(Ordering::Relaxed) == count).then_some(())
        });
        Honest { stop, threads }
    }

    /// Stop the threads; every one must have made calls and seen no error.
    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let threads = self.threads;
        let calls: Vec<usize> = within("honest clients", HANG_TIMEOUT, move || {
            threads
                .into_iter()
                .map(|t| t.join().expect("an honest client failed"))
                .collect()
        });
        assert!(calls.iter().all(|n| *n > 0), "honest calls: {calls:?}");
    }
}

#[test]
fn a_hostile_ring_writer_cannot_disturb_honest_clients() {
    let daemon = Daemon::start("hostile", &[]);
    let honest = Honest::start(daemon.socket(), 2);
    let hostile = spawn_child(
        CHILD_ENTRY,
        &format!("hostile:{}", daemon.socket().display()),
    );
    let output = child_output(hostile, Duration::from_secs(300));
    assert_child_ok("the hostile process", &output);
    honest.stop();
    // The node is up, takes new clients and reports its state.
    let mut client = daemon.connect();
    client.kv_put(b"after", b"the storm").unwrap();
    assert_eq!(
        client.kv_get(b"after").unwrap(),
        Some(b"the storm".to_vec())
    );
    poll_until("every other client is detached", HANG_TIMEOUT, || {
        (clients_per_partition(&mut client) == [1, 1]).then_some(())
    });
    assert!(
        daemon.log().contains("evicting client"),
        "the node says whom it evicted"
    );
}

#[test]
fn an_evicted_library_user_gets_a_transport_error() {
    let daemon = Daemon::start("evicted", &[]);
    let honest = Honest::start(daemon.socket(), 1);
    let child = spawn_child(
        CHILD_ENTRY,
        &format!("evicted:{}", daemon.socket().display()),
    );
    let output = child_output(child, HANG_TIMEOUT);
    assert_child_ok("the evicted client process", &output);
    honest.stop();
    let mut client = daemon.connect();
    client.null(0).unwrap();
}

#[test]
fn bad_handshakes_do_not_disturb_others() {
    let daemon = Daemon::start("hello", &[]);
    let socket = daemon.socket();
    let honest = Honest::start(socket, 2);
    let mut rng = StdRng::seed_from_u64(5);
    // Silent connections stay pending (dropped by the node after its hello timeout).
    let silent: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(socket).expect("connect"))
        .collect();
    let hello_size = std::mem::size_of::<Hello>();
    let refused = |bytes: &[u8]| {
        let mut s = UnixStream::connect(socket).expect("connect");
        s.set_read_timeout(Some(HANG_TIMEOUT)).unwrap();
        s.write_all(bytes).expect("send");
        let mut answer = Vec::new();
        s.read_to_end(&mut answer)
            .expect("the node answers and closes");
        if answer.len() == std::mem::size_of::<Welcome>() {
            let welcome: Welcome = bytemuck::pod_read_unaligned(&answer);
            assert_ne!(welcome.status, 0, "a bad hello was accepted");
        } else {
            assert!(answer.is_empty(), "a partial welcome: {answer:?}");
        }
    };
    // Garbage of the hello's size, a wrong version, a malformed act-as field.
    let mut garbage = vec![0u8; hello_size];
    rng.fill(&mut garbage[..]);
    garbage[..4].copy_from_slice(&0xdead_beefu32.to_le_bytes());
    refused(&garbage);
    let mut wrong_version = Hello::new(None);
    wrong_version.version = 9999;
    refused(bytemuck::bytes_of(&wrong_version));
    let mut bad_act_as = Hello::new(None);
    bad_act_as.act_as_len = 1000;
    refused(bytemuck::bytes_of(&bad_act_as));
    // Half a hello, then silence: the node drops the connection.
    let mut half = UnixStream::connect(socket).expect("connect");
    half.write_all(&bytemuck::bytes_of(&Hello::new(None))[..hello_size / 2])
        .unwrap();
    half.set_read_timeout(Some(HANG_TIMEOUT)).unwrap();
    let mut rest = Vec::new();
    half.read_to_end(&mut rest)
        .expect("the node closes a half hello");
    // Half a hello, then close.
    let mut closer = UnixStream::connect(socket).expect("connect");
    closer
        .write_all(&bytemuck::bytes_of(&Hello::new(None))[..hello_size / 2])
        .unwrap();
    drop(closer);
    // A byte on the socket after the handshake: the node detaches that client.
    let mut chatty = RawClient::connect(socket);
    (&chatty.stream).write_all(b"x").unwrap();
    chatty.expect_evicted("a byte on the socket after the handshake");
    // Meanwhile new clients connect and call as usual.
    let mut client = daemon.connect();
    client.kv_put(b"after", b"bad hellos").unwrap();
    assert_eq!(
        client.kv_get(b"after").unwrap(),
        Some(b"bad hellos".to_vec())
    );
    honest.stop();
    drop(silent);
    poll_until("only this client is attached", HANG_TIMEOUT, || {
        (clients_per_partition(&mut client) == [1, 1]).then_some(())
    });
}
