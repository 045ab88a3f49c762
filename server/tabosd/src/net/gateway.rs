//! The network gateway: the bridge between remote connections and partitions.
//!
//! It is a [`StreamHandler`] run by the io_uring (or poll) driver on the node's network
//! thread. Each connection first proves the cluster secret; after that its frames are
//! validated and pushed into the gateway's request ring of the target partition, with
//! the connection's tag in the top bits of the request id. Partitions treat the
//! gateway as one more port (see [`crate::port::Peer::Gateway`]); replies come back on
//! the gateway's response rings and are routed to the connection by that tag.

use crate::inbox::Command;
use crate::partition::NodeShared;
use crate::port::{Peer, Port};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicU32, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tabos_engine::{Caller, UserName};
use tabos_transport::doorbell::EventFd;
use tabos_transport::handshake::{Welcome, HANDSHAKE_MAGIC};
use tabos_transport::net::server::{ConnId, Io, StreamHandler};
use tabos_transport::net::{
    fresh_nonce, verify, FrameReader, NetChallenge, NetHello, NetProof, AUTH_SHARED_SECRET,
    NET_MAGIC,
};
use tabos_transport::ring::{Consumer, HeapRing, Producer};
use tabos_transport::wire::{Header, FLAG_RESPONSE, PROTOCOL_VERSION};
use tabos_transport::Status;

/// Bits of a remote request id the client may use; the tag takes the rest.
pub const CLIENT_ID_BITS: u32 = 40;
/// Client id of the gateway's ports on every partition.
pub const GATEWAY_CLIENT_ID: u64 = u64::MAX;
/// How long a connection may take to prove the secret.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What partitions share with the gateway.
#[derive(Debug)]
pub struct GatewayShared {
    callers: RwLock<HashMap<u32, Caller>>,
    sleeping: AtomicU32,
    /// Wakes the network thread.
    pub doorbell: EventFd,
}

impl GatewayShared {
    /// The caller of a request from the gateway, by its tag.
    pub fn caller_of(&self, request_id: u64) -> Option<Caller> {
        let tag = (request_id >> CLIENT_ID_BITS) as u32;
        self.callers
            .read()
            .expect("callers lock")
            .get(&tag)
            .copied()
    }

    /// Wake the network thread if it announced sleep (after a SeqCst fence).
    pub fn wake_if_sleeping(&self) {
        if self.sleeping.load(Ordering::Relaxed) != 0
            && self.sleeping.swap(0, Ordering::Relaxed) != 0
        {
            self.doorbell.notify();
        }
    }
}

enum Phase {
    Hello,
    Proof { hello: NetHello, nonce: [u8; 32] },
    Ready,
}

struct Remote {
    phase: Phase,
    since: Instant,
    handshake: Vec<u8>,
    reader: FrameReader,
    tag: u32,
    /// Frames wait in `reader` because a partition ring was full.
    blocked: bool,
}

struct Lane {
    requests: Producer,
    responses: Consumer,
    unpublished: bool,
}

/// The gateway's state on the network thread.
pub struct Gateway {
    node: Arc<NodeShared>,
    shared: Arc<GatewayShared>,
    secret: Vec<u8>,
    lanes: Vec<Lane>,
    remotes: HashMap<ConnId, Remote>,
    tags: HashMap<u32, ConnId>,
    next_tag: u32,
    payload: Vec<u8>,
    last_sweep: Instant,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("connections", &self.remotes.len())
            .finish()
    }
}

impl Gateway {
    /// A gateway attached to every partition of `node`, with rings of `ring_bytes`.
    pub fn attach(
        node: Arc<NodeShared>,
        secret: Vec<u8>,
        ring_bytes: usize,
    ) -> std::io::Result<Gateway> {
        let shared = Arc::new(GatewayShared {
            callers: RwLock::new(HashMap::new()),
            sleeping: AtomicU32::new(0),
            doorbell: EventFd::new()?,
        });
        let mut lanes = Vec::new();
        for inbox in &node.inboxes {
            let (requests, partition_requests) = HeapRing::pair(ring_bytes);
            let (partition_responses, responses) = HeapRing::pair(ring_bytes);
            inbox.send(Command::Attach(Box::new(Port {
                client_id: GATEWAY_CLIENT_ID,
                requests: partition_requests,
                responses: partition_responses,
                peer: Peer::Gateway(shared.clone()),
                dirty: false,
                calls: 0,
                held: Default::default(),
            })));
            lanes.push(Lane {
                requests,
                responses,
                unpublished: false,
            });
        }
        Ok(Gateway {
            node,
            shared,
            secret,
            lanes,
            remotes: HashMap::new(),
            tags: HashMap::new(),
            next_tag: 0,
            payload: Vec::new(),
            last_sweep: Instant::now(),
        })
    }

    /// What partitions share with this gateway (its doorbell wakes the net thread).
    pub fn shared(&self) -> &Arc<GatewayShared> {
        &self.shared
    }

    fn fresh_tag(&mut self) -> u32 {
        loop {
            self.next_tag = (self.next_tag + 1) & ((1 << (64 - CLIENT_ID_BITS)) - 1);
            if !self.tags.contains_key(&self.next_tag) {
                return self.next_tag;
            }
        }
    }

    /// Advance the handshake with the bytes buffered so far.
    fn handshake(&mut self, conn: ConnId, io: &mut Io) {
        let Some(remote) = self.remotes.get_mut(&conn) else {
            return;
        };
        loop {
            match &remote.phase {
                Phase::Hello => {
                    let size = std::mem::size_of::<NetHello>();
                    if remote.handshake.len() < size {
                        return;
                    }
                    let hello: NetHello = bytemuck::pod_read_unaligned(&remote.handshake[..size]);
                    remote.handshake.drain(..size);
                    let refuse = if hello.magic != NET_MAGIC || hello.version != PROTOCOL_VERSION {
                        Some(Status::BadFrame)
                    } else if hello.auth_method != AUTH_SHARED_SECRET {
                        Some(Status::PermissionDenied)
                    } else {
                        None
                    };
                    let nonce = match (refuse, fresh_nonce()) {
                        (None, Ok(nonce)) => nonce,
                        (refusal, _) => {
                            let status = refusal.unwrap_or(Status::ShuttingDown) as u32;
                            let challenge = NetChallenge {
                                magic: NET_MAGIC,
                                status,
                                nonce: [0; 32],
                            };
                            io.send(conn, bytemuck::bytes_of(&challenge));
                            io.close(conn);
                            return;
                        }
                    };
                    let challenge = NetChallenge {
                        magic: NET_MAGIC,
                        status: 0,
                        nonce,
                    };
                    io.send(conn, bytemuck::bytes_of(&challenge));
                    remote.phase = Phase::Proof { hello, nonce };
                }
                Phase::Proof { hello, nonce } => {
                    let size = std::mem::size_of::<NetProof>();
                    if remote.handshake.len() < size {
                        return;
                    }
                    let proof: NetProof = bytemuck::pod_read_unaligned(&remote.handshake[..size]);
                    remote.handshake.drain(..size);
                    let user = match hello.act_as() {
                        Ok(None) => UserName::new("remote"),
                        Ok(Some(name)) => UserName::new(name),
                        Err(_) => None,
                    };
                    let status = if !verify(&self.secret, nonce, hello, &proof) {
                        eprintln!("tabosd: refusing a network connection: wrong cluster secret");
                        Status::PermissionDenied
                    } else if user.is_none() {
                        Status::BadArgs
                    } else {
                        Status::Ok
                    };
                    let welcome = Welcome {
                        magic: HANDSHAKE_MAGIC,
                        version: PROTOCOL_VERSION,
                        status: status as u32,
                        partition_count: self.node.global_partition_count,
                        ring_bytes: 0,
                        max_payload_bytes: self.node.max_payload_bytes as u32,
                        node_id: self.node.node_id,
                        client_id: conn,
                        partition_span: 0,
                    }
                    .with_span(self.node.partition_base, self.lanes.len() as u32);
                    io.send(conn, bytemuck::bytes_of(&welcome));
                    let Some(user) = user.filter(|_| status == Status::Ok) else {
                        io.close(conn);
                        return;
                    };
                    let caller = Caller {
                        uid: u32::MAX,
                        pid: 0,
                        user,
                    };
                    self.shared
                        .callers
                        .write()
                        .expect("callers lock")
                        .insert(remote.tag, caller);
                    remote.phase = Phase::Ready;
                    let rest = std::mem::take(&mut remote.handshake);
                    remote.reader.extend(&rest);
                    self.dispatch(conn, io);
                    return;
                }
                Phase::Ready => return,
            }
        }
    }

    /// Hand buffered frames of `conn` to their partitions until none is left or a
    /// partition ring is full.
    fn dispatch(&mut self, conn: ConnId, io: &mut Io) -> usize {
        let Some(remote) = self.remotes.get_mut(&conn) else {
            return 0;
        };
        let base = self.node.partition_base;
        let local_count = self.lanes.len() as u32;
        let mut sent = 0;
        remote.blocked = false;
        loop {
            let (header, payload) = match remote.reader.next_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("tabosd: dropping a network connection: {e}");
                    io.close(conn);
                    break;
                }
            };
            let refusal = if header.flags & FLAG_RESPONSE != 0
                || header.status != 0
                || header.request_id >> CLIENT_ID_BITS != 0
            {
                Some(Status::BadFrame)
            } else if header.partition.wrapping_sub(base) >= local_count {
                Some(Status::BadPartition)
            } else {
                None
            };
            if let Some(status) = refusal {
                io.send_frame(conn, &Header::response_to(&header, status, 0), &[]);
                continue;
            }
            let mut internal = header;
            internal.request_id |= u64::from(remote.tag) << CLIENT_ID_BITS;
            let lane = &mut self.lanes[(header.partition - base) as usize];
            match lane.requests.try_push(internal, payload) {
                Ok(true) => {
                    lane.unpublished = true;
                    sent += 1;
                }
                Ok(false) | Err(_) => {
                    remote.reader.unread_last();
                    remote.blocked = true;
                    break;
                }
            }
        }
        sent
    }

    /// Publish requests and ring the doorbells of partitions that sleep.
    fn publish(&mut self) {
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
        fence(Ordering::SeqCst);
        for (p, lane) in self.lanes.iter_mut().enumerate() {
            if std::mem::take(&mut lane.unpublished) {
                let sleeping = lane.requests.ring().consumer_sleeping();
                if sleeping.load(Ordering::Relaxed) != 0 && sleeping.swap(0, Ordering::Relaxed) != 0
                {
                    self.node.inboxes[p].doorbell.notify();
                }
            }
        }
    }

    /// Route replies from the partitions to their connections.
    fn collect(&mut self, io: &mut Io) -> usize {
        let mut routed = 0;
        for lane in &mut self.lanes {
            loop {
                let header = match lane.responses.pop(&mut self.payload) {
                    Ok(Some(h)) => h,
                    Ok(None) => break,
                    Err(e) => unreachable!("the gateway's own heap ring is never corrupt: {e}"),
                };
                routed += 1;
                let tag = (header.request_id >> CLIENT_ID_BITS) as u32;
                let Some(&conn) = self.tags.get(&tag) else {
                    continue;
                };
                let mut reply = header;
                reply.request_id &= (1 << CLIENT_ID_BITS) - 1;
                io.send_frame(conn, &reply, &self.payload);
            }
            lane.responses.release();
        }
        routed
    }

    fn sweep_handshakes(&mut self, io: &mut Io) {
        if self.last_sweep.elapsed() < Duration::from_millis(200) {
            return;
        }
        self.last_sweep = Instant::now();
        for (conn, remote) in &self.remotes {
            if !matches!(remote.phase, Phase::Ready) && remote.since.elapsed() > HANDSHAKE_TIMEOUT {
                io.close(*conn);
            }
        }
    }
}

impl StreamHandler for Gateway {
    fn on_open(&mut self, conn: ConnId, _peer: SocketAddr, _io: &mut Io) {
        let tag = self.fresh_tag();
        self.tags.insert(tag, conn);
        self.remotes.insert(
            conn,
            Remote {
                phase: Phase::Hello,
                since: Instant::now(),
                handshake: Vec::new(),
                reader: FrameReader::new(self.node.max_payload_bytes),
                tag,
                blocked: false,
            },
        );
    }

    fn on_data(&mut self, conn: ConnId, data: &[u8], io: &mut Io) {
        let Some(remote) = self.remotes.get_mut(&conn) else {
            return;
        };
        if matches!(remote.phase, Phase::Ready) {
            remote.reader.extend(data);
            if !remote.blocked {
                self.dispatch(conn, io);
            }
        } else {
            if remote.handshake.len() + data.len() > 4096 {
                io.close(conn);
                return;
            }
            remote.handshake.extend_from_slice(data);
            self.handshake(conn, io);
        }
    }

    fn on_close(&mut self, conn: ConnId) {
        if let Some(remote) = self.remotes.remove(&conn) {
            self.tags.remove(&remote.tag);
            self.shared
                .callers
                .write()
                .expect("callers lock")
                .remove(&remote.tag);
        }
    }

    fn tick(&mut self, io: &mut Io) -> usize {
        let mut work = 0;
        let blocked: Vec<ConnId> = self
            .remotes
            .iter()
            .filter(|(_, r)| r.blocked)
            .map(|(c, _)| *c)
            .collect();
        for conn in blocked {
            work += self.dispatch(conn, io);
        }
        self.publish();
        work += self.collect(io);
        self.sweep_handshakes(io);
        work
    }

    fn before_sleep(&mut self) -> bool {
        self.shared.sleeping.store(1, Ordering::Relaxed);
        fence(Ordering::SeqCst);
        let ready = self
            .lanes
            .iter_mut()
            .any(|l| l.responses.has_frames().unwrap_or(true));
        if ready {
            self.shared.sleeping.store(0, Ordering::Relaxed);
        }
        !ready
    }

    fn after_wake(&mut self) {
        self.shared.sleeping.store(0, Ordering::Relaxed);
    }

    fn sleep_limit(&self) -> Option<Duration> {
        if self.remotes.values().any(|r| r.blocked) {
            // A partition ring was full; partitions do not ring us when they drain it.
            return Some(Duration::from_millis(1));
        }
        let handshaking = self
            .remotes
            .values()
            .any(|r| !matches!(r.phase, Phase::Ready));
        handshaking.then_some(Duration::from_millis(250))
    }
}
