//! Guards the RDMA transport (feature `rdma`): slot accounting and `wr_id` encoding,
//! the queue-pair state machine, the endpoint encoding exchanged over TCP, validation of
//! received frames, the cutting of a byte stream into slot-sized messages, device
//! settings from the environment, device discovery and the stream server driver without
//! a device, and, where a device exists, a loopback RC queue-pair pair exchanging 1000
//! frames and the driver echoing a byte stream (skipped with `skipped: no RDMA device`
//! otherwise).
#![cfg(feature = "rdma")]

use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tabos_transport::doorbell::EventFd;
use tabos_transport::net::server::{ConnId, Io, StreamHandler};
use tabos_transport::rdma::driver;
use tabos_transport::rdma::frame::encode_frame;
use tabos_transport::rdma::qp::{
    InitAttrs, QpStateMachine, RtrAttrs, RtsAttrs, Transition, ENDPOINT_MAGIC, ENDPOINT_SIZE,
    ENDPOINT_VERSION,
};
use tabos_transport::rdma::{
    decode_frame, devices, dial, exchange_endpoints, require_device, send_stream, stream_config,
    EndpointError, FrameError, MessageSink, PathMtu, QpEndpoint, QpError, QpState, RdmaConfig,
    RdmaConnection, RdmaDriverOptions, RdmaError, SlotBook, SlotError, SlotLayout, WrId, WrKind,
    ENV_DEVICE, ENV_GID_INDEX, ENV_PORT,
};
use tabos_transport::wire::{Header, Status, FLAG_PAD, FLAG_RESPONSE, FRAME_MAGIC, HEADER_SIZE};

/// Whether an RDMA device exists; when not, says so where CI logs show it. libtest
/// captures `println!` and `eprintln!` of passing tests, so the line is also written
/// straight to the stderr handle, which it does not capture.
fn device_present(test: &str) -> bool {
    let found = devices().expect("devices() works on a host without RDMA");
    if !found.is_empty() {
        return true;
    }
    let line = format!("skipped: no RDMA device ({test} needs one; see scripts/setup-softroce.sh)");
    println!("{line}");
    let _ = writeln!(std::io::stderr(), "{line}");
    false
}

// ---------------------------------------------------------------- devices

#[test]
fn device_discovery_works_without_a_device() {
    let found = devices().expect("devices() must not fail on a host without RDMA");
    match require_device() {
        Ok(first) => assert_eq!(first, found[0]),
        Err(e) => {
            assert!(found.is_empty());
            assert!(matches!(e, RdmaError::NoDevice));
            let text = e.to_string();
            assert!(text.contains("no RDMA device found"), "{text}");
            assert!(text.contains("scripts/setup-softroce.sh"), "{text}");
        }
    }
}

#[test]
fn connection_without_a_device_fails_with_no_device() {
    if !devices().unwrap().is_empty() {
        return;
    }
    let err = RdmaConnection::create(&RdmaConfig::default()).expect_err("no device here");
    assert!(matches!(err, RdmaError::NoDevice), "{err}");
}

#[test]
fn a_connection_may_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<RdmaConnection>();
}

#[test]
fn bad_config_is_refused_before_touching_a_device() {
    let config = RdmaConfig {
        recv_slot_count: 0,
        ..RdmaConfig::default()
    };
    let err = RdmaConnection::create(&config).expect_err("zero receive slots");
    assert!(
        matches!(err, RdmaError::Slot(SlotError::BadLayout(_))),
        "{err}"
    );
}

// ---------------------------------------------------------------- buffers

#[test]
fn layout_limits_are_checked() {
    assert!(SlotLayout::new(1024, 0, 1).is_err());
    assert!(SlotLayout::new(1024, 1, 0).is_err());
    assert!(SlotLayout::new(1024, 1 << 16, 1).is_err());
    assert!(SlotLayout::new(u32::MAX, 1, 1).is_err());
    assert!(SlotLayout::new(32 << 20, 64, 64).is_err(), "4 GiB of slots");
    let layout = SlotLayout::new(0, 1, 1).unwrap();
    assert_eq!(
        layout.slot_bytes, 64,
        "a header alone, rounded to a cache line"
    );
    let layout = SlotLayout::new((1 << 20) + (64 << 10), 16, 16).unwrap();
    assert!(layout.slot_bytes >= HEADER_SIZE + (1 << 20) + (64 << 10));
    assert_eq!(layout.slot_bytes % 64, 0);
}

#[test]
fn wr_id_round_trips_and_rejects_foreign_values() {
    for kind in [WrKind::Recv, WrKind::Send] {
        for slot in [0, 1, 77, u32::MAX] {
            let id = WrId { kind, slot };
            assert_eq!(WrId::decode(id.encode()).unwrap(), id);
        }
    }
    assert_ne!(
        WrId {
            kind: WrKind::Recv,
            slot: 3
        }
        .encode(),
        WrId {
            kind: WrKind::Send,
            slot: 3
        }
        .encode()
    );
    assert_eq!(WrId::decode(1 << 40), Err(SlotError::BadWrId(1 << 40)));
    assert!(WrId::decode(u64::MAX).is_err());
}

#[test]
fn receive_slots_post_complete_repost() {
    let layout = SlotLayout::new(256, 8, 4).unwrap();
    let mut book = SlotBook::new(&layout);
    let all = book.recv_unposted();
    assert_eq!(all, (0..8).collect::<Vec<_>>());
    for &slot in &all {
        book.recv_posted(slot).unwrap();
    }
    assert_eq!(book.recv_posted_count(), 8);
    assert!(book.recv_unposted().is_empty());
    assert!(book.recv_posted(3).is_err(), "posting a posted slot twice");
    book.check_consistency().unwrap();

    book.recv_completed(3).unwrap();
    assert!(book.recv_is_filled(3));
    assert_eq!(book.recv_posted_count(), 7);
    assert!(
        matches!(book.recv_completed(3), Err(SlotError::WrongState { .. })),
        "a second completion of one receive"
    );
    book.recv_posted(3).unwrap();
    assert_eq!(book.recv_posted_count(), 8);
    assert!(book.recv_completed(8).is_err(), "no such slot");

    book.recv_flushed(5).unwrap();
    assert_eq!(book.recv_unposted(), vec![5]);
    assert!(book.recv_flushed(5).is_err());
    book.check_consistency().unwrap();
}

#[test]
fn send_slots_are_never_freed_twice() {
    let layout = SlotLayout::new(256, 1, 4).unwrap();
    let mut book = SlotBook::new(&layout);
    let mut claimed = Vec::new();
    while let Some(slot) = book.send_claim() {
        claimed.push(slot);
    }
    assert_eq!(claimed, vec![0, 1, 2, 3]);
    assert_eq!(book.send_free_count(), 0);
    assert!(
        book.send_completed(0).is_err(),
        "completion of an unposted send"
    );
    for &slot in &claimed[..3] {
        book.send_posted(slot).unwrap();
    }
    assert!(book.send_posted(0).is_err(), "posting twice");
    book.send_unclaim(3).unwrap();
    assert!(book.send_unclaim(3).is_err());
    assert_eq!(book.send_in_flight_count(), 3);
    book.check_consistency().unwrap();

    book.send_completed(1).unwrap();
    assert!(
        matches!(book.send_completed(1), Err(SlotError::WrongState { .. })),
        "double free refused"
    );
    assert_eq!(book.send_free_count(), 2);
    assert_eq!(book.send_in_flight_count(), 2);
    book.check_consistency().unwrap();
    // Recycled slots come back out.
    let again: Vec<u32> = std::iter::from_fn(|| book.send_claim()).collect();
    assert_eq!(again.len(), 2);
    assert!(again.contains(&1) && again.contains(&3));
}

/// Random posts and completions against a plain model: a set of free send slots and a
/// state per receive slot.
#[test]
fn slot_book_matches_a_model() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let layout = SlotLayout::new(512, 16, 16).unwrap();
    let mut book = SlotBook::new(&layout);
    for slot in book.recv_unposted() {
        book.recv_posted(slot).unwrap();
    }
    let mut model_free: Vec<bool> = vec![true; 16];
    let mut model_in_flight: VecDeque<u32> = VecDeque::new();
    let mut model_filled: VecDeque<u32> = VecDeque::new();
    let mut model_posted: Vec<bool> = vec![true; 16];
    for _ in 0..20_000 {
        match rng.gen_range(0..5) {
            0 => {
                let got = book.send_claim();
                let any_free = model_free.iter().any(|f| *f);
                assert_eq!(got.is_some(), any_free);
                if let Some(slot) = got {
                    assert!(model_free[slot as usize]);
                    model_free[slot as usize] = false;
                    book.send_posted(slot).unwrap();
                    model_in_flight.push_back(slot);
                }
            }
            1 => {
                if let Some(slot) = model_in_flight.pop_front() {
                    book.send_completed(slot).unwrap();
                    model_free[slot as usize] = true;
                    assert!(book.send_completed(slot).is_err());
                }
            }
            2 => {
                let slot = rng.gen_range(0..16u32);
                let result = book.recv_completed(slot);
                assert_eq!(result.is_ok(), model_posted[slot as usize]);
                if result.is_ok() {
                    model_posted[slot as usize] = false;
                    model_filled.push_back(slot);
                }
            }
            3 => {
                if let Some(slot) = model_filled.pop_front() {
                    book.recv_posted(slot).unwrap();
                    model_posted[slot as usize] = true;
                }
            }
            _ => {
                let slot = rng.gen_range(0..16u32);
                assert_eq!(book.recv_posted(slot).is_ok(), !model_posted[slot as usize]);
                if !model_posted[slot as usize] {
                    model_posted[slot as usize] = true;
                    model_filled.retain(|s| *s != slot);
                }
            }
        }
        book.check_consistency().unwrap();
        assert_eq!(
            book.send_free_count() as usize,
            model_free.iter().filter(|f| **f).count()
        );
        assert_eq!(book.send_in_flight_count() as usize, model_in_flight.len());
        assert_eq!(
            book.recv_posted_count() as usize,
            model_posted.iter().filter(|p| **p).count()
        );
    }
}

// ---------------------------------------------------------------- queue pairs

fn endpoint(qpn: u32) -> QpEndpoint {
    QpEndpoint {
        magic: ENDPOINT_MAGIC,
        version: ENDPOINT_VERSION,
        qpn,
        psn: 0x12_3456,
        max_payload_bytes: 4096,
        recv_slot_count: 32,
        lid: 0,
        path_mtu: PathMtu::Mtu1024 as u8,
        reserved0: 0,
        reserved1: 0,
        gid: [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8],
    }
}

fn rtr() -> RtrAttrs {
    RtrAttrs::toward(&endpoint(0x11), 1, 0, PathMtu::Mtu4096)
}

const INIT: Transition = Transition::ToInit(InitAttrs {
    port_num: 1,
    pkey_index: 0,
});

#[test]
fn queue_pair_moves_reset_init_rtr_rts() {
    let mut qp = QpStateMachine::new();
    assert_eq!(qp.state(), QpState::Reset);
    for (t, state) in [
        (INIT, QpState::Init),
        (Transition::ToRtr(rtr()), QpState::Rtr),
        (Transition::ToRts(RtsAttrs::with_psn(7)), QpState::Rts),
    ] {
        assert_eq!(qp.check(&t), Ok(state));
        qp.commit(&t);
        assert_eq!(qp.state(), state);
    }
    qp.commit(&Transition::ToError);
    assert_eq!(qp.state(), QpState::Error);
    qp.commit(&Transition::ToReset);
    assert_eq!(qp.state(), QpState::Reset);
    // RTR takes the smaller MTU of the two sides.
    assert_eq!(rtr().path_mtu, PathMtu::Mtu1024);
}

#[test]
fn illegal_queue_pair_moves_are_refused() {
    let rts = Transition::ToRts(RtsAttrs::with_psn(1));
    let to_rtr = Transition::ToRtr(rtr());
    let mut qp = QpStateMachine::new();
    for t in [to_rtr, rts] {
        assert_eq!(
            qp.check(&t),
            Err(QpError::Illegal {
                from: QpState::Reset,
                to: t.target()
            })
        );
    }
    qp.commit(&INIT);
    assert!(matches!(qp.check(&INIT), Err(QpError::Illegal { .. })));
    assert!(matches!(qp.check(&rts), Err(QpError::Illegal { .. })));
    qp.commit(&to_rtr);
    assert!(matches!(qp.check(&INIT), Err(QpError::Illegal { .. })));
    assert!(matches!(qp.check(&to_rtr), Err(QpError::Illegal { .. })));
    qp.commit(&rts);
    assert!(matches!(qp.check(&rts), Err(QpError::Illegal { .. })));
    qp.failed();
    assert_eq!(qp.state(), QpState::Error);
    assert!(matches!(qp.check(&INIT), Err(QpError::Illegal { .. })));
    assert_eq!(qp.check(&Transition::ToReset), Ok(QpState::Reset));
}

#[test]
fn rtr_needs_destination_details() {
    let mut qp = QpStateMachine::new();
    qp.commit(&INIT);
    let bad = |f: &dyn Fn(&mut RtrAttrs)| {
        let mut a = rtr();
        f(&mut a);
        qp.check(&Transition::ToRtr(a))
    };
    assert!(matches!(bad(&|a| a.dest_qpn = 0), Err(QpError::BadAttr(_))));
    assert!(matches!(
        bad(&|a| a.dest_qpn = 1 << 24),
        Err(QpError::BadAttr(_))
    ));
    assert!(matches!(
        bad(&|a| a.rq_psn = 1 << 24),
        Err(QpError::BadAttr(_))
    ));
    assert!(matches!(bad(&|a| a.port_num = 0), Err(QpError::BadAttr(_))));
    assert!(matches!(
        bad(&|a| a.min_rnr_timer = 32),
        Err(QpError::BadAttr(_))
    ));
    assert!(
        matches!(
            bad(&|a| {
                a.dest_lid = 0;
                a.dest_gid = [0; 16];
            }),
            Err(QpError::BadAttr(_))
        ),
        "neither LID nor GID"
    );
    assert!(bad(&|a| {
        a.dest_lid = 5;
        a.dest_gid = [0; 16];
    })
    .is_ok());
    assert_eq!(qp.state(), QpState::Init, "refused moves change nothing");

    let bad_init = Transition::ToInit(InitAttrs {
        port_num: 0,
        pkey_index: 0,
    });
    assert!(matches!(
        QpStateMachine::new().check(&bad_init),
        Err(QpError::BadAttr(_))
    ));

    qp.commit(&Transition::ToRtr(rtr()));
    for rts in [
        RtsAttrs {
            sq_psn: 1 << 24,
            ..RtsAttrs::with_psn(0)
        },
        RtsAttrs {
            retry_count: 8,
            ..RtsAttrs::with_psn(0)
        },
        RtsAttrs {
            rnr_retry: 8,
            ..RtsAttrs::with_psn(0)
        },
        RtsAttrs {
            timeout: 32,
            ..RtsAttrs::with_psn(0)
        },
    ] {
        assert!(matches!(
            qp.check(&Transition::ToRts(rts)),
            Err(QpError::BadAttr(_))
        ));
    }
}

#[test]
#[should_panic(expected = "not checked")]
fn committing_an_illegal_move_is_a_programming_error() {
    QpStateMachine::new().commit(&Transition::ToRts(RtsAttrs::with_psn(0)));
}

// ---------------------------------------------------------------- endpoints

#[test]
fn endpoint_round_trips() {
    let ep = endpoint(0xAB_CDEF);
    let bytes = ep.encode();
    assert_eq!(bytes.len(), ENDPOINT_SIZE);
    assert_eq!(QpEndpoint::decode(&bytes), Ok(ep));
    // The layout is fixed: magic first, little-endian.
    assert_eq!(&bytes[..4], &ENDPOINT_MAGIC.to_le_bytes());
    assert_eq!(&bytes[8..12], &0xAB_CDEFu32.to_le_bytes());
    assert_eq!(&bytes[32..48], &ep.gid);
}

#[test]
fn endpoint_garbage_is_rejected() {
    let good = endpoint(0x22).encode();
    assert_eq!(
        QpEndpoint::decode(&good[..47]),
        Err(EndpointError::WrongSize(47))
    );
    assert!(QpEndpoint::decode(&[0u8; 49]).is_err());
    assert!(matches!(
        QpEndpoint::decode(&[0u8; ENDPOINT_SIZE]),
        Err(EndpointError::BadMagic(0))
    ));
    let corrupt = |f: &dyn Fn(&mut QpEndpoint)| {
        let mut ep = endpoint(0x22);
        f(&mut ep);
        QpEndpoint::decode(&ep.encode())
    };
    assert_eq!(
        corrupt(&|e| e.version = 2),
        Err(EndpointError::BadVersion(2))
    );
    for f in [
        &(|e: &mut QpEndpoint| e.qpn = 0) as &dyn Fn(&mut QpEndpoint),
        &|e| e.qpn = 1 << 24,
        &|e| e.psn = 1 << 24,
        &|e| e.path_mtu = 0,
        &|e| e.path_mtu = 6,
        &|e| e.recv_slot_count = 0,
        &|e| e.max_payload_bytes = u32::MAX,
        &|e| e.reserved0 = 1,
        &|e| e.reserved1 = 1,
        &|e| e.gid = [0; 16],
    ] {
        assert!(matches!(corrupt(f), Err(EndpointError::BadField(_))));
    }
    // Random bytes never panic and, without the magic, never decode.
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    for _ in 0..10_000 {
        let mut raw = [0u8; ENDPOINT_SIZE];
        rng.fill(&mut raw[..]);
        if rng.gen_bool(0.5) {
            raw[..4].copy_from_slice(&ENDPOINT_MAGIC.to_le_bytes());
            raw[4..8].copy_from_slice(&ENDPOINT_VERSION.to_le_bytes());
        }
        if let Ok(ep) = QpEndpoint::decode(&raw) {
            assert_eq!(ep.validate(), Ok(()));
        }
    }
}

#[test]
fn endpoints_exchange_over_a_stream() {
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let theirs = endpoint(0x33);
    let peer = std::thread::spawn(move || exchange_endpoints(&mut b, &theirs));
    let got = exchange_endpoints(&mut a, &endpoint(0x44)).unwrap();
    assert_eq!(got, endpoint(0x33));
    assert_eq!(peer.join().unwrap().unwrap(), endpoint(0x44));

    // A peer that sends garbage, or hangs up early, is an error, not a panic.
    let (mut a, mut b) = UnixStream::pair().unwrap();
    b.write_all(&[0xAA; ENDPOINT_SIZE]).unwrap();
    let err = exchange_endpoints(&mut a, &endpoint(0x44)).unwrap_err();
    assert!(
        matches!(err, RdmaError::Endpoint(EndpointError::BadMagic(_))),
        "{err}"
    );
    let (mut a, mut b) = UnixStream::pair().unwrap();
    b.write_all(&[0; 10]).unwrap();
    drop(b);
    let err = exchange_endpoints(&mut a, &endpoint(0x44)).unwrap_err();
    assert!(matches!(err, RdmaError::Exchange(_)), "{err}");
}

// ---------------------------------------------------------------- frames

#[test]
fn frames_round_trip() {
    let header = Header::request(9, 3, 1, 0);
    let bytes = encode_frame(&header, b"payload");
    assert_eq!(bytes.len(), HEADER_SIZE + 7);
    let (got, payload) = decode_frame(&bytes, 100).unwrap();
    assert_eq!(got.magic, FRAME_MAGIC);
    assert_eq!(got.payload_len, 7);
    assert_eq!(got.request_id, 9);
    assert_eq!(payload, b"payload");
    let response = Header::response_to(&got, Status::NotFound, 0);
    let bytes = encode_frame(&response, &[]);
    let (got, payload) = decode_frame(&bytes, 0).unwrap();
    assert_eq!(got.flags, FLAG_RESPONSE);
    assert_eq!(got.status, Status::NotFound as u32);
    assert!(payload.is_empty());
}

#[test]
fn received_garbage_is_rejected() {
    let good = encode_frame(&Header::request(1, 2, 0, 0), &[7u8; 64]);
    assert!(decode_frame(&good, 64).is_ok());
    assert_eq!(
        decode_frame(&good[..HEADER_SIZE - 1], 64),
        Err(FrameError::Short {
            message_bytes: HEADER_SIZE - 1
        })
    );
    assert!(matches!(
        decode_frame(&[], 64),
        Err(FrameError::Short { .. })
    ));
    assert!(matches!(
        decode_frame(&good[..HEADER_SIZE + 10], 64),
        Err(FrameError::LengthMismatch { .. })
    ));
    assert!(matches!(
        decode_frame(&good, 63),
        Err(FrameError::TooLong { .. })
    ));

    let with = |f: &dyn Fn(&mut Header)| {
        let mut h: Header = bytemuck::pod_read_unaligned(&good[..HEADER_SIZE]);
        f(&mut h);
        let mut bytes = good.clone();
        bytes[..HEADER_SIZE].copy_from_slice(bytemuck::bytes_of(&h));
        decode_frame(&bytes, 64).map(|(h, _)| h)
    };
    assert!(matches!(
        with(&|h| h.magic = 0),
        Err(FrameError::BadMagic(0))
    ));
    assert!(matches!(
        with(&|h| h.flags = 1 << 7),
        Err(FrameError::UnknownFlags(_))
    ));
    assert_eq!(with(&|h| h.flags = FLAG_PAD), Err(FrameError::PadFrame));
    assert!(matches!(
        with(&|h| h.payload_len = u32::MAX),
        Err(FrameError::TooLong { .. })
    ));

    // Random messages never panic; whatever passes is exactly a well-formed frame.
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    for _ in 0..10_000 {
        let len = rng.gen_range(0..200usize);
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes[..]);
        if len >= 8 && rng.gen_bool(0.7) {
            bytes[..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
            if rng.gen_bool(0.5) {
                let body = len.saturating_sub(HEADER_SIZE) as u32;
                bytes[4..8].copy_from_slice(&body.to_le_bytes());
            }
        }
        if let Ok((h, payload)) = decode_frame(&bytes, 128) {
            assert_eq!(h.magic, FRAME_MAGIC);
            assert_eq!(payload.len(), h.payload_len as usize);
            assert!(payload.len() <= 128);
            assert_eq!(h.flags & FLAG_PAD, 0);
        }
    }
}

// ---------------------------------------------------------------- byte streams

/// A connection's send side as a plain model: at most `max` bytes a message, `free`
/// send slots; what was sent is kept in order.
struct SinkModel {
    max: usize,
    free: usize,
    sent: Vec<Vec<u8>>,
}

impl MessageSink for SinkModel {
    fn max_message_bytes(&self) -> usize {
        self.max
    }

    fn try_send(&mut self, message: &[u8]) -> Result<bool, RdmaError> {
        assert!(!message.is_empty(), "an empty message was sent");
        assert!(message.len() <= self.max, "a message larger than a slot");
        if self.free == 0 {
            return Ok(false);
        }
        self.free -= 1;
        self.sent.push(message.to_vec());
        Ok(true)
    }
}

/// Random bursts of queued bytes and random numbers of free slots: every message fits
/// a slot, only the last of a burst may be short, nothing is lost, duplicated or
/// reordered, and what found no slot stays queued.
#[test]
fn outgoing_bytes_are_cut_into_slot_sized_messages() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(21);
    for _ in 0..200 {
        let max = rng.gen_range(1..=4096usize);
        let mut sink = SinkModel {
            max,
            free: 0,
            sent: Vec::new(),
        };
        let mut stream = Vec::new();
        let mut out = Vec::new();
        let mut next = 0u8;
        for _ in 0..50 {
            for _ in 0..rng.gen_range(0..3 * max) {
                out.push(next);
                stream.push(next);
                next = next.wrapping_add(1);
            }
            sink.free = rng.gen_range(0..4);
            let queued = out.len();
            let free = sink.free;
            let before = sink.sent.len();
            let messages = send_stream(&mut sink, &mut out).unwrap();
            assert_eq!(messages, sink.sent.len() - before);
            assert_eq!(messages, free.min(queued.div_ceil(max)));
            let new = &sink.sent[before..];
            for (i, m) in new.iter().enumerate() {
                if i + 1 < new.len() || !out.is_empty() {
                    assert_eq!(m.len(), max, "only the last message may be short");
                }
            }
        }
        sink.free = usize::MAX;
        send_stream(&mut sink, &mut out).unwrap();
        assert!(out.is_empty());
        assert_eq!(sink.sent.concat(), stream);
    }
}

#[test]
fn a_broken_sink_stops_the_stream() {
    struct Broken;
    impl MessageSink for Broken {
        fn max_message_bytes(&self) -> usize {
            8
        }
        fn try_send(&mut self, _: &[u8]) -> Result<bool, RdmaError> {
            Err(RdmaError::NotConnected(QpState::Error))
        }
    }
    let mut out = vec![1u8; 20];
    assert!(matches!(
        send_stream(&mut Broken, &mut out),
        Err(RdmaError::NotConnected(QpState::Error))
    ));
    assert_eq!(out.len(), 20, "nothing was sent, nothing left the queue");
}

#[test]
fn device_settings_come_from_the_environment() {
    fn vars(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }
    let base = stream_config();
    assert_eq!(base.clone().with_vars(vars(&[])).unwrap(), base);
    let set = base
        .clone()
        .with_vars(vars(&[
            (ENV_DEVICE, "rxe0"),
            (ENV_PORT, "2"),
            (ENV_GID_INDEX, " 1 "),
        ]))
        .unwrap();
    assert_eq!(
        (set.device.as_deref(), set.port_num, set.gid_index),
        (Some("rxe0"), 2, 1)
    );
    assert_eq!(set.max_payload_bytes, base.max_payload_bytes);
    for bad in [
        &[(ENV_PORT, "0")][..],
        &[(ENV_PORT, "x")],
        &[(ENV_GID_INDEX, "256")],
    ] {
        let err = base.clone().with_vars(vars(bad)).unwrap_err();
        assert!(matches!(err, RdmaError::Env { .. }), "{err}");
        assert!(err.to_string().contains(bad[0].0), "{err}");
    }
}

// ---------------------------------------------------------------- the stream driver

/// Echoes every byte back and counts opens and closes.
struct Echo {
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl StreamHandler for Echo {
    fn on_open(&mut self, _conn: ConnId, _peer: SocketAddr, _io: &mut Io) {
        self.opened.fetch_add(1, Ordering::SeqCst);
    }
    fn on_data(&mut self, conn: ConnId, data: &[u8], io: &mut Io) {
        assert!(!data.is_empty());
        assert!(io.send(conn, data), "the echo fits the backlog");
    }
    fn on_close(&mut self, _conn: ConnId) {
        self.closed.fetch_add(1, Ordering::SeqCst);
    }
    fn tick(&mut self, _io: &mut Io) -> usize {
        0
    }
    fn before_sleep(&mut self) -> bool {
        true
    }
    fn after_wake(&mut self) {}
    fn sleep_limit(&self) -> Option<Duration> {
        None
    }
}

/// A driver with an [`Echo`] handler on a thread, listening on 127.0.0.1.
struct EchoServer {
    addr: SocketAddr,
    stop: Arc<EventFd>,
    opened: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
    thread: Option<std::thread::JoinHandle<std::io::Result<()>>>,
}

impl EchoServer {
    fn start(options: RdmaDriverOptions) -> EchoServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(EventFd::new().unwrap());
        let opened = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let mut handler = Echo {
            opened: opened.clone(),
            closed: closed.clone(),
        };
        let stop_driver = stop.clone();
        let thread = std::thread::spawn(move || {
            let wake = EventFd::new()?;
            driver::run(&listener, &wake, &stop_driver, &mut handler, options)
        });
        EchoServer {
            addr,
            stop,
            opened,
            closed,
            thread: Some(thread),
        }
    }

    /// Stop the driver and return how it ended.
    fn stop(mut self) -> std::io::Result<()> {
        self.stop.notify();
        self.thread.take().unwrap().join().expect("driver thread")
    }

    fn wait_closed(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.closed.load(Ordering::SeqCst) < count {
            assert!(Instant::now() < deadline, "the driver never closed");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Without a device every set-up fails: the driver drops the TCP connection (never
/// calling the handler), keeps serving, and stops when told.
#[test]
fn driver_without_a_device_drops_connections_and_stops() {
    if !devices().unwrap().is_empty() {
        return; // driver_echoes_a_byte_stream_over_rdma covers this host
    }
    let server = EchoServer::start(RdmaDriverOptions::default());
    for _ in 0..3 {
        let mut tcp = TcpStream::connect(server.addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut buf = [0u8; 64];
        match tcp.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!("{n} bytes from a driver without a device"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
        }
    }
    assert_eq!(server.opened.load(Ordering::SeqCst), 0);
    assert_eq!(server.closed.load(Ordering::SeqCst), 0);
    server.stop().expect("the driver stops cleanly");
}

// ---------------------------------------------------------------- on a device

fn device_config() -> RdmaConfig {
    RdmaConfig {
        device: std::env::var("TABOS_RDMA_DEVICE").ok(),
        gid_index: std::env::var("TABOS_RDMA_GID_INDEX")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        max_payload_bytes: 4096,
        recv_slot_count: 32,
        send_slot_count: 32,
        ..RdmaConfig::default()
    }
}

fn payload_for(id: u64) -> Vec<u8> {
    let len = (id as usize * 37) % 4097;
    (0..len).map(|i| (i as u64 ^ id) as u8).collect()
}

/// Two connections on the first device (or `TABOS_RDMA_DEVICE`), connected to each
/// other through an endpoint exchange over TCP on 127.0.0.1: the client sends 1000
/// requests of 0..=4096 bytes, the server answers each with the same payload.
#[test]
fn loopback_rc_pair_exchanges_1000_frames() {
    if !device_present("loopback_rc_pair_exchanges_1000_frames") {
        return;
    }
    const FRAMES: u64 = 1000;
    let config = device_config();
    let mut client = RdmaConnection::create(&config).expect("client connection");
    let mut server = RdmaConnection::create(&config).expect("server connection");
    assert_eq!(client.state(), QpState::Init);
    assert_eq!(client.recv_posted_count(), config.recv_slot_count);
    assert!(matches!(
        client.send(&Header::request(0, 1, 0, 0), b"early"),
        Err(RdmaError::NotConnected(QpState::Init))
    ));

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server_ep = server.local_endpoint();
    let acceptor = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        exchange_endpoints(&mut stream, &server_ep)
    });
    let mut stream = TcpStream::connect(addr).unwrap();
    let for_client = exchange_endpoints(&mut stream, &client.local_endpoint()).unwrap();
    let for_server = acceptor.join().unwrap().unwrap();
    assert_eq!(for_client, server.local_endpoint());
    client.connect(&for_client).expect("client to RTS");
    server.connect(&for_server).expect("server to RTS");
    assert_eq!(client.state(), QpState::Rts);
    assert_eq!(client.max_send_payload_bytes(), 4096);
    assert!(matches!(
        client.send(&Header::request(0, 1, 0, 0), &[0u8; 4097]),
        Err(RdmaError::PayloadTooLarge { .. })
    ));

    let deadline = Instant::now() + Duration::from_secs(60);
    let mut next_send = 0u64;
    let mut served = 0u64;
    let mut answered = 0u64;
    let mut replies: VecDeque<(Header, Vec<u8>)> = VecDeque::new();
    let mut buf = Vec::new();
    while answered < FRAMES {
        assert!(
            Instant::now() < deadline,
            "stalled: sent {next_send}, served {served}, answered {answered}"
        );
        let mut progress = false;
        while next_send < FRAMES {
            let header = Header::request(next_send, 7, 0, 0);
            if !client.send(&header, &payload_for(next_send)).unwrap() {
                break;
            }
            next_send += 1;
            progress = true;
        }
        while let Some(h) = server.recv(&mut buf).unwrap() {
            assert_eq!(h.request_id, served, "requests arrive in order");
            assert_eq!(h.flags, 0);
            assert_eq!(buf, payload_for(served));
            replies.push_back((Header::response_to(&h, Status::Ok, 0), buf.clone()));
            served += 1;
            progress = true;
        }
        while let Some((h, p)) = replies.front() {
            if !server.send(h, p).unwrap() {
                break;
            }
            replies.pop_front();
            progress = true;
        }
        while let Some(h) = client.recv(&mut buf).unwrap() {
            assert_eq!(h.request_id, answered, "responses arrive in order");
            assert_eq!(h.flags, FLAG_RESPONSE);
            assert_eq!(h.status, Status::Ok as u32);
            assert_eq!(buf, payload_for(answered));
            answered += 1;
            progress = true;
        }
        if !progress {
            client.wait(Duration::from_millis(1)).unwrap();
            server.poll_completions().unwrap();
        }
    }
    assert_eq!(served, FRAMES);
    // Every receive slot is posted again once all frames are taken.
    assert_eq!(client.recv_posted_count(), config.recv_slot_count);
    assert_eq!(server.recv_posted_count(), config.recv_slot_count);
    println!(
        "rdma loopback on {}: {FRAMES} frames each way",
        client.device_name()
    );
}

/// The stream driver on the first device (or `TABOS_RDMA_DEVICE`): a peer that sends a
/// garbage endpoint is dropped; a real client sets up with [`dial`], sends 3 MiB cut
/// into slot-sized messages and gets every byte back in order; closing its TCP
/// connection closes the connection in the driver.
#[test]
fn driver_echoes_a_byte_stream_over_rdma() {
    if !device_present("driver_echoes_a_byte_stream_over_rdma") {
        return;
    }
    let config = stream_config().with_env().expect("TABOS_RDMA_* settings");
    let server = EchoServer::start(RdmaDriverOptions {
        rdma: config.clone(),
        ..RdmaDriverOptions::default()
    });

    // A peer that is not one: the driver sends its endpoint, reads garbage, hangs up.
    let mut rogue = TcpStream::connect(server.addr).unwrap();
    rogue
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    rogue.write_all(&[0xAA; 48]).unwrap();
    let mut seen = Vec::new();
    let _ = rogue.read_to_end(&mut seen);
    assert!(seen.len() <= 48, "only the driver's endpoint comes back");

    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut conn = dial(&mut tcp, &config).expect("set-up with the driver");
    tcp.set_nonblocking(true).unwrap();
    let max = conn.max_message_bytes();
    assert!(max >= 4096);

    const TOTAL: usize = 3 << 20;
    let data: Vec<u8> = (0..TOTAL).map(|i| (i * 7 + i / 4096) as u8).collect();
    let mut out = data.clone();
    let mut echoed = Vec::with_capacity(TOTAL);
    let mut message = Vec::new();
    let mut messages_sent = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while echoed.len() < TOTAL {
        assert!(
            Instant::now() < deadline,
            "stalled: {} of {TOTAL} bytes echoed",
            echoed.len()
        );
        let mut progress = false;
        if !out.is_empty() {
            let sent = send_stream(&mut conn, &mut out).unwrap();
            messages_sent += sent;
            progress |= sent > 0;
        }
        while conn.recv_bytes(&mut message).unwrap() {
            assert!(!message.is_empty() && message.len() <= max);
            echoed.extend_from_slice(&message);
            progress = true;
        }
        if !progress {
            conn.wait(Duration::from_millis(1)).unwrap();
        }
    }
    assert!(echoed == data, "the echo differs from what was sent");
    assert!(messages_sent >= TOTAL.div_ceil(max));
    assert_eq!(server.opened.load(Ordering::SeqCst), 1);
    assert_eq!(server.closed.load(Ordering::SeqCst), 0);

    drop(conn);
    drop(tcp);
    server.wait_closed(1);
    server.stop().expect("the driver stops cleanly");
}
