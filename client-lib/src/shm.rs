//! The shared-memory client: one request ring and one response ring per partition in
//! a sealed memfd the server handed over.

use crate::error::Error;
use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tabos_transport::doorbell::{futex_wait, EventFd};
use tabos_transport::handshake::{recv_with_fds, Hello, Welcome, HANDSHAKE_MAGIC};
use tabos_transport::ring::{Consumer, Producer, RingError};
use tabos_transport::segment::{Segment, SegmentShape, PARTITIONS_MAX};
use tabos_transport::wire::{partition_for_key, Header, PROTOCOL_VERSION};
use tabos_transport::Status;

/// How long a waiting client spins before it sleeps on its futex.
const SPIN: Duration = Duration::from_micros(50);
/// How often a sleeping client checks that the server is still there.
const LIVENESS_CHECK: Duration = Duration::from_millis(50);

/// One finished call of the pipelined interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The id [`Client::submit`] returned.
    pub request_id: u64,
    /// Partition that executed it.
    pub partition: u32,
    /// Raw status code.
    pub status_code: u32,
    /// Reply payload (empty unless the status is `Ok`).
    pub reply: Vec<u8>,
}

impl Completion {
    /// The reply, or the error status.
    pub fn into_result(self) -> Result<Vec<u8>, Error> {
        if self.status_code == Status::Ok as u32 {
            Ok(self.reply)
        } else {
            Err(Error::from_code(self.status_code))
        }
    }
}

#[derive(Debug)]
struct Lane {
    requests: Producer,
    responses: Consumer,
    doorbell: EventFd,
    unpublished: bool,
}

/// A connection to one tabos node. Not shared between threads: open one per thread.
#[derive(Debug)]
pub struct Client {
    socket: UnixStream,
    segment: Arc<Segment>,
    lanes: Vec<Lane>,
    welcome: Welcome,
    next_request_id: u64,
    in_flight: usize,
    stash: VecDeque<Completion>,
    broken: Option<String>,
}

fn corrupt(e: RingError) -> Error {
    Error::Transport(format!("shared-memory ring broken: {e}"))
}

impl Client {
    /// Connect to the node serving the Unix socket at `path`, as the connecting user.
    pub fn connect(path: impl AsRef<Path>) -> Result<Client, Error> {
        Client::connect_as(path, None)
    }

    /// Connect acting as user `act_as` (only root may; the node refuses others).
    pub fn connect_as(path: impl AsRef<Path>, act_as: Option<&str>) -> Result<Client, Error> {
        let path = path.as_ref();
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
            partition_count: welcome.partition_count,
            ring_bytes: welcome.ring_bytes as usize,
        };
        if fds.len() != 1 + welcome.partition_count as usize {
            return Err(fail(
                "welcome",
                &format!(
                    "{} fds for {} partitions",
                    fds.len(),
                    welcome.partition_count
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
        Ok(Client {
            socket,
            segment,
            lanes,
            welcome,
            next_request_id: 1,
            in_flight: 0,
            stash: VecDeque::new(),
            broken: None,
        })
    }

    /// Partitions on the node.
    pub fn partition_count(&self) -> u32 {
        self.welcome.partition_count
    }

    /// The node's id.
    pub fn node_id(&self) -> u32 {
        self.welcome.node_id
    }

    /// Largest request or reply payload the node accepts.
    pub fn max_payload_bytes(&self) -> usize {
        self.welcome.max_payload_bytes as usize
    }

    /// The partition that owns `key`.
    pub fn partition_for_key(&self, key: &[u8]) -> u32 {
        partition_for_key(key, self.partition_count())
    }

    /// Calls submitted and not yet returned by [`Client::poll`] or [`Client::wait`].
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn check_broken(&self) -> Result<(), Error> {
        match &self.broken {
            Some(why) => Err(Error::Transport(why.clone())),
            None => Ok(()),
        }
    }

    fn validate(&self, partition: u32, args: &[u8]) -> Result<(), Error> {
        self.check_broken()?;
        if partition >= self.partition_count() {
            return Err(Error::Status(Status::BadPartition));
        }
        if args.len() > self.max_payload_bytes() {
            return Err(Error::Status(Status::PayloadTooLarge));
        }
        Ok(())
    }

    /// Queue a call of `proc_id` on `partition`; returns its request id. Nothing is
    /// sent before [`Client::flush`] (or a wait). When the ring is full this sends what
    /// is queued and collects replies until there is room.
    pub fn submit(&mut self, proc_id: u32, partition: u32, args: &[u8]) -> Result<u64, Error> {
        self.validate(partition, args)?;
        let request_id = self.next_request_id;
        let header = Header::request(request_id, proc_id, partition, args.len() as u32);
        // The clock is read only once the ring is full: not on the fast path.
        let mut full_since: Option<Instant> = None;
        loop {
            let lane = &mut self.lanes[partition as usize];
            if lane.requests.try_push(header, args).map_err(corrupt)? {
                lane.unpublished = true;
                break;
            }
            self.flush();
            self.collect_into_stash()?;
            if full_since.get_or_insert_with(Instant::now).elapsed() > LIVENESS_CHECK {
                self.check_alive()?;
                full_since = None;
            }
            std::hint::spin_loop();
        }
        self.next_request_id += 1;
        self.in_flight += 1;
        Ok(request_id)
    }

    /// Publish queued requests and ring the doorbell of partitions that sleep.
    pub fn flush(&mut self) {
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

    fn collect_into_stash(&mut self) -> Result<usize, Error> {
        let mut found = 0;
        for (p, lane) in self.lanes.iter_mut().enumerate() {
            let mut reply = Vec::new();
            while let Some(h) = lane.responses.pop(&mut reply).map_err(corrupt)? {
                self.stash.push_back(Completion {
                    request_id: h.request_id,
                    partition: p as u32,
                    status_code: h.status,
                    reply: std::mem::take(&mut reply),
                });
                found += 1;
            }
            lane.responses.release();
        }
        Ok(found)
    }

    /// Move finished calls into `out` without waiting. Returns how many.
    pub fn poll(&mut self, out: &mut Vec<Completion>) -> Result<usize, Error> {
        self.check_broken()?;
        self.flush();
        self.collect_into_stash()?;
        let n = self.stash.len();
        out.extend(self.stash.drain(..));
        self.in_flight -= n;
        Ok(n)
    }

    /// Wait until at least `min` calls (capped at those in flight) have finished and
    /// move every finished call into `out`.
    pub fn wait(&mut self, out: &mut Vec<Completion>, min: usize) -> Result<usize, Error> {
        let min = min.min(self.in_flight);
        let mut got = self.poll(out)?;
        while got < min {
            self.block_until_reply()?;
            got += self.poll(out)?;
        }
        Ok(got)
    }

    /// Whether any response ring has a frame.
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
    fn block_until_reply(&mut self) -> Result<(), Error> {
        let started = Instant::now();
        let mut turns = 0u32;
        while started.elapsed() < SPIN || turns < 64 {
            if self.any_reply()? {
                return Ok(());
            }
            turns += 1;
            std::hint::spin_loop();
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
    fn check_alive(&mut self) -> Result<(), Error> {
        self.check_broken()?;
        let mut byte = 0u8;
        // SAFETY: peeks at most one byte into a valid buffer; never blocks.
        let n = unsafe {
            libc::recv(
                self.socket.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let gone = n == 0
            || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock);
        if gone {
            let why =
                "tabosd closed the connection (it stopped, or evicted this client)".to_string();
            self.broken = Some(why.clone());
            return Err(Error::Transport(why));
        }
        Ok(())
    }

    /// Call `proc_id` on `partition` and wait for its reply.
    pub fn call(&mut self, proc_id: u32, partition: u32, args: &[u8]) -> Result<Vec<u8>, Error> {
        let mut reply = Vec::new();
        self.call_into(proc_id, partition, args, &mut reply)?;
        Ok(reply)
    }

    /// Call `proc_id` on the partition that owns `key`.
    pub fn call_key(&mut self, proc_id: u32, key: &[u8], args: &[u8]) -> Result<Vec<u8>, Error> {
        let partition = self.partition_for_key(key);
        self.call(proc_id, partition, args)
    }

    /// [`Client::call`] into a caller-owned buffer (no allocation on the fast path).
    pub fn call_into(
        &mut self,
        proc_id: u32,
        partition: u32,
        args: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let request_id = self.submit(proc_id, partition, args)?;
        self.flush();
        // Fast path: nothing else in flight, so the next frame on this lane is ours.
        if self.in_flight == 1 && self.stash.is_empty() {
            loop {
                let lane = &mut self.lanes[partition as usize];
                if let Some(h) = lane.responses.pop(reply).map_err(corrupt)? {
                    lane.responses.release();
                    self.in_flight -= 1;
                    assert_eq!(
                        h.request_id, request_id,
                        "responses on a lane come in request order"
                    );
                    return status_result(h.status);
                }
                self.block_until_reply()?;
            }
        }
        loop {
            self.collect_into_stash()?;
            if let Some(pos) = self.stash.iter().position(|c| c.request_id == request_id) {
                let done = self.stash.remove(pos).expect("position is valid");
                self.in_flight -= 1;
                *reply = done.reply;
                return status_result(done.status_code);
            }
            self.block_until_reply()?;
        }
    }
}

fn status_result(code: u32) -> Result<(), Error> {
    if code == Status::Ok as u32 {
        Ok(())
    } else {
        Err(Error::from_code(code))
    }
}
