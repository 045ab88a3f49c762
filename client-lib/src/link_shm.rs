//! The shared-memory link: one request ring and one response ring per partition in a
//! sealed memfd the server handed over the node's Unix socket.

use crate::client::Completion;
use crate::error::Error;
use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tabos_transport::doorbell::{futex_wait, socket_closed, EventFd};
use tabos_transport::handshake::{recv_with_fds, Hello, Welcome, HANDSHAKE_MAGIC};
use tabos_transport::ring::{Consumer, Producer, RingError};
use tabos_transport::segment::{Segment, SegmentShape, PARTITIONS_MAX};
use tabos_transport::wire::{Header, PROTOCOL_VERSION};

/// How long a waiting client spins before it sleeps.
pub(crate) const SPIN: Duration = Duration::from_micros(50);
/// How often a sleeping client checks that the server is still there.
pub(crate) const LIVENESS_CHECK: Duration = Duration::from_millis(50);

#[derive(Debug)]
struct Lane {
    requests: Producer,
    responses: Consumer,
    doorbell: EventFd,
    unpublished: bool,
}

/// A client's shared-memory connection to a local node.
#[derive(Debug)]
pub(crate) struct ShmLink {
    /// Global id of the node's first partition (lane 0).
    base: u32,
    socket: UnixStream,
    segment: Arc<Segment>,
    lanes: Vec<Lane>,
}

/// One turn of a waiting spin: a pause instruction, and every 64th turn a yield, so a
/// thread that must answer us on the same core gets to run (a pure spin would hold
/// the core for the whole spin period).
pub(crate) fn spin_or_yield(turn: u32) {
    if turn.is_multiple_of(64) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

pub(crate) fn corrupt(e: RingError) -> Error {
    Error::Transport(format!("shared-memory ring broken: {e}"))
}

impl ShmLink {
    /// Handshake over the Unix socket at `path` and map the rings.
    pub(crate) fn connect(path: &Path, act_as: Option<&str>) -> Result<(ShmLink, Welcome), Error> {
        let socket = UnixStream::connect(path).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::NotFound => {
                    "no socket there: is tabosd running? (start it with `tabosd --socket PATH`)"
                }
                std::io::ErrorKind::ConnectionRefused => {
                    "nobody listens there: the socket is stale; restart tabosd"
                }
                std::io::ErrorKind::PermissionDenied => "permission denied on the socket",
                _ => "cannot connect",
            };
            Error::Transport(format!(
                "cannot connect to tabosd at {}: {hint} ({e})",
                path.display()
            ))
        })?;
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            Error::Transport(format!("handshake with {}: {what}: {e}", path.display()))
        };
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .map_err(|e| fail("socket", &e))?;
        let hello = Hello::new(act_as);
        (&socket)
            .write_all(bytemuck::bytes_of(&hello))
            .map_err(|e| fail("send hello", &e))?;
        let mut raw = [0u8; std::mem::size_of::<Welcome>()];
        let mut fds = recv_with_fds(&socket, &mut raw, 1 + PARTITIONS_MAX as usize)
            .map_err(|e| fail("receive welcome", &e))?;
        let welcome: Welcome = bytemuck::pod_read_unaligned(&raw);
        if welcome.magic != HANDSHAKE_MAGIC || welcome.version != PROTOCOL_VERSION {
            return Err(fail("protocol", &"server speaks another protocol version"));
        }
        if welcome.status != 0 {
            return Err(Error::Transport(format!(
                "tabosd at {} refused the connection: {}",
                path.display(),
                Error::from_code(welcome.status)
            )));
        }
        let shape = SegmentShape {
            partition_count: welcome.local_partitions(),
            ring_bytes: welcome.ring_bytes as usize,
        };
        if fds.len() != 1 + welcome.local_partitions() as usize {
            return Err(fail(
                "welcome",
                &format!(
                    "{} fds for {} partitions",
                    fds.len(),
                    welcome.local_partitions()
                ),
            ));
        }
        let doorbells: Vec<EventFd> = fds.drain(1..).map(EventFd::from_owned).collect();
        let memfd = fds.pop().expect("one fd left");
        let segment = Segment::open(memfd, shape).map_err(|e| fail("segment", &e))?;
        let lanes = doorbells
            .into_iter()
            .enumerate()
            .map(|(p, doorbell)| Lane {
                requests: Producer::new(segment.request_ring(p as u32)),
                responses: Consumer::new(segment.response_ring(p as u32)),
                doorbell,
                unpublished: false,
            })
            .collect();
        let base = welcome.partition_base();
        Ok((
            ShmLink {
                base,
                socket,
                segment,
                lanes,
            },
            welcome,
        ))
    }

    /// Queue a frame; `Ok(false)` when the partition's ring is full.
    pub(crate) fn try_push(&mut self, header: Header, args: &[u8]) -> Result<bool, Error> {
        let lane = &mut self.lanes[(header.partition - self.base) as usize];
        let pushed = lane.requests.try_push(header, args).map_err(corrupt)?;
        lane.unpublished |= pushed;
        Ok(pushed)
    }

    /// Publish queued requests and ring the doorbell of partitions that sleep.
    pub(crate) fn flush(&mut self) {
        let mut any = false;
        for lane in &mut self.lanes {
            if lane.unpublished {
                lane.requests.publish();
                any = true;
            }
        }
        if !any {
            return;
        }
        // Pairs with the partition's fence between announcing sleep and re-checking.
        fence(Ordering::SeqCst);
        for lane in &mut self.lanes {
            if std::mem::take(&mut lane.unpublished) {
                let sleeping = lane.requests.ring().consumer_sleeping();
                if sleeping.load(Ordering::Relaxed) != 0 && sleeping.swap(0, Ordering::Relaxed) != 0
                {
                    lane.doorbell.notify();
                }
            }
        }
    }

    /// Move every reply into `stash`. Returns how many.
    pub(crate) fn collect(&mut self, stash: &mut VecDeque<Completion>) -> Result<usize, Error> {
        let mut found = 0;
        for (p, lane) in self.lanes.iter_mut().enumerate() {
            let mut reply = Vec::new();
            while let Some(h) = lane.responses.pop(&mut reply).map_err(corrupt)? {
                stash.push_back(Completion {
                    request_id: h.request_id,
                    partition: self.base + p as u32,
                    status_code: h.status,
                    reply: std::mem::take(&mut reply),
                });
                found += 1;
            }
            lane.responses.release();
        }
        Ok(found)
    }

    /// The next reply from `partition` straight into `reply` (the synchronous fast
    /// path: valid only when nothing else is in flight).
    pub(crate) fn pop_from(
        &mut self,
        partition: u32,
        reply: &mut Vec<u8>,
    ) -> Result<Option<Header>, Error> {
        let lane = &mut self.lanes[(partition - self.base) as usize];
        let popped = lane.responses.pop(reply).map_err(corrupt)?;
        if popped.is_some() {
            lane.responses.release();
        }
        Ok(popped)
    }

    fn any_reply(&mut self) -> Result<bool, Error> {
        for lane in &mut self.lanes {
            if lane.responses.has_frames().map_err(corrupt)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Spin a while, then sleep on the futex until some partition replies; notices a
    /// server that went away.
    pub(crate) fn block_until_reply(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        let mut turns = 0u32;
        while turns < 64 || started.elapsed() < SPIN {
            if self.any_reply()? {
                return Ok(());
            }
            turns += 1;
            spin_or_yield(turns);
        }
        loop {
            let seg = self.segment.clone();
            seg.client_waiting().store(1, Ordering::Relaxed);
            // Pairs with the partition's fence between publishing and reading the flag.
            fence(Ordering::SeqCst);
            let seen = seg.client_futex().load(Ordering::Acquire);
            if self.any_reply()? {
                seg.client_waiting().store(0, Ordering::Relaxed);
                return Ok(());
            }
            futex_wait(seg.client_futex(), seen, Some(LIVENESS_CHECK));
            seg.client_waiting().store(0, Ordering::Relaxed);
            if self.any_reply()? {
                return Ok(());
            }
            self.check_alive()?;
        }
    }

    /// Fail if the server closed our socket (it exited or evicted us).
    pub(crate) fn check_alive(&self) -> Result<(), Error> {
        if socket_closed(self.socket.as_fd()) {
            return Err(Error::Transport(
                "tabosd closed the connection (it stopped, or evicted this client)".into(),
            ));
        }
        Ok(())
    }
}
