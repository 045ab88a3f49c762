//! [`RdmaConnection`]: frames over one reliable connected queue pair.
//!
//! 1. [`RdmaConnection::create`] opens the device, checks the port, makes the
//!    connection's own protection domain, completion queue and channel, queue pair
//!    (moved to INIT) and registered slots, and posts every receive slot.
//! 2. Both sides exchange [`QpEndpoint`]s over their TCP connection and call
//!    [`RdmaConnection::connect`] (or both at once: [`RdmaConnection::connect_over`]),
//!    which moves the queue pair to RTR and RTS.
//! 3. [`RdmaConnection::send`] writes a frame into a free send slot and posts it as one
//!    SEND; [`RdmaConnection::recv`] copies the next received frame out of its slot,
//!    reposts the slot and validates the copy; [`RdmaConnection::wait`] spins on the
//!    completion queue, then sleeps on the completion channel.
//!
//! Flow control: a sender has at most `send_slot_count` frames in flight. If the
//! receiver has not reposted a slot yet, its NIC answers receiver-not-ready and the
//! sender's NIC retries (for ever, `rnr_retry` 7), which slows the sender like a full
//! ring would.
//!
//! A connection is used by one thread at a time (`&mut self`); it may move between
//! threads.

use super::buffers::{SlotLayout, SlotPool, WrId, WrKind};
use super::frame::check_header;
use super::qp::{
    exchange_endpoints, random_psn, InitAttrs, PathMtu, QpEndpoint, QpState, QpStateMachine,
    RtrAttrs, RtsAttrs, Transition, ENDPOINT_MAGIC, ENDPOINT_VERSION,
};
use super::verbs::{
    needs_gid, status_text, uses_lid, CompChannel, Completion, CompletionQueue, Context,
    ProtectionDomain, QueuePair, RegisteredPool,
};
use super::RdmaError;
use crate::wire::{Header, HEADER_SIZE};
use rdma_sys::{ibv_port_state, ibv_wc_opcode, ibv_wc_status};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::BorrowedFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Settings of one RDMA connection. Both sides may differ: each tells the other its
/// receive-slot shape in its [`QpEndpoint`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RdmaConfig {
    /// Device name (e.g. `mlx5_0`, `rxe0`); `None` for the first device.
    pub device: Option<String>,
    /// Physical port, from 1. Default 1.
    pub port_num: u8,
    /// GID table index to send from (RoCE). Default 0.
    pub gid_index: u8,
    /// Largest payload this side accepts (its receive slots hold a frame this large).
    /// Default 64 KiB.
    pub max_payload_bytes: u32,
    /// Receive slots, all posted before connecting. Default 64.
    pub recv_slot_count: u32,
    /// Send slots: most frames in flight. Default 64.
    pub send_slot_count: u32,
    /// Microseconds [`RdmaConnection::wait`] polls before it sleeps. Default 50.
    pub spin_us: u64,
}

impl Default for RdmaConfig {
    fn default() -> Self {
        RdmaConfig {
            device: None,
            port_num: 1,
            gid_index: 0,
            max_payload_bytes: 64 << 10,
            recv_slot_count: 64,
            send_slot_count: 64,
            spin_us: 50,
        }
    }
}

/// Environment variable naming the RDMA device (e.g. `mlx5_0`, `rxe0`) that tabosd and
/// clients use; unset: the first device.
pub const ENV_DEVICE: &str = "TABOS_RDMA_DEVICE";
/// Environment variable with the physical port to use, from 1 (default 1).
pub const ENV_PORT: &str = "TABOS_RDMA_PORT";
/// Environment variable with the GID index to send from (default 0; RoCE v2 over IPv4
/// often needs another, see `show_gids`).
pub const ENV_GID_INDEX: &str = "TABOS_RDMA_GID_INDEX";

impl RdmaConfig {
    /// This configuration with the device choice of the environment applied
    /// ([`ENV_DEVICE`], [`ENV_PORT`], [`ENV_GID_INDEX`]); a value that does not parse is
    /// an [`RdmaError::Env`].
    pub fn with_env(self) -> Result<RdmaConfig, RdmaError> {
        self.with_vars(|name| std::env::var(name).ok())
    }

    /// [`RdmaConfig::with_env`] reading variables through `var` (for tests).
    pub fn with_vars(
        mut self,
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<RdmaConfig, RdmaError> {
        if let Some(name) = var(ENV_DEVICE) {
            let name = name.trim();
            if !name.is_empty() {
                self.device = Some(name.to_string());
            }
        }
        if let Some(value) = var(ENV_PORT) {
            self.port_num = match value.trim().parse::<u8>() {
                Ok(port) if port >= 1 => port,
                _ => {
                    return Err(RdmaError::Env {
                        var: ENV_PORT,
                        value,
                        expected: "a port number 1..=255",
                    })
                }
            };
        }
        if let Some(value) = var(ENV_GID_INDEX) {
            self.gid_index = value.trim().parse::<u8>().map_err(|_| RdmaError::Env {
                var: ENV_GID_INDEX,
                value: value.clone(),
                expected: "a GID index 0..=255",
            })?;
        }
        assert!(self.port_num >= 1);
        Ok(self)
    }
}

/// One side of a frame connection over an RC queue pair.
#[derive(Debug)]
pub struct RdmaConnection {
    // Each verbs owner keeps its parents alive through Arcs, so drop order is safe
    // whatever it is; the queue pair goes first so no work request outlives it.
    qp: QueuePair,
    buffers: RegisteredPool,
    cq: Arc<CompletionQueue>,
    context: Arc<Context>,
    state: QpStateMachine,
    config: RdmaConfig,
    local_mtu: PathMtu,
    local: QpEndpoint,
    remote: Option<QpEndpoint>,
    /// The most payload a frame we send may carry: the smaller of our send slots and
    /// the peer's receive slots.
    send_payload_max_bytes: usize,
    /// Filled receive slots in arrival order: `(slot, bytes received)`.
    ready: VecDeque<(u32, u32)>,
    /// Scratch for completions.
    completions: Vec<Completion>,
}

impl RdmaConnection {
    /// Set up this side on the configured device: everything but the peer. Receives are
    /// posted; the queue pair is in INIT. Fails with [`RdmaError::NoDevice`] on a host
    /// without RDMA devices.
    pub fn create(config: &RdmaConfig) -> Result<RdmaConnection, RdmaError> {
        let layout = SlotLayout::new(
            config.max_payload_bytes,
            config.recv_slot_count,
            config.send_slot_count,
        )?;
        let context = Context::open(config.device.as_deref())?;
        let device_error = |problem: String| RdmaError::Device {
            device: context.name().to_string(),
            problem,
        };
        let limits = context.limits()?;
        if config.port_num == 0 || config.port_num > limits.port_count {
            return Err(device_error(format!(
                "no port {} (ports 1..={})",
                config.port_num, limits.port_count
            )));
        }
        if config.recv_slot_count.max(config.send_slot_count) > limits.max_qp_wr {
            return Err(device_error(format!(
                "a queue holds at most {} work requests: lower the slot counts",
                limits.max_qp_wr
            )));
        }
        let cq_entries = config.recv_slot_count + config.send_slot_count;
        if cq_entries > limits.max_cqe {
            return Err(device_error(format!(
                "a completion queue holds at most {} entries, {cq_entries} needed: lower the slot counts",
                limits.max_cqe
            )));
        }
        let port = context.port(config.port_num)?;
        if port.state != ibv_port_state::IBV_PORT_ACTIVE
            && port.state != ibv_port_state::IBV_PORT_ACTIVE_DEFER
        {
            return Err(device_error(format!(
                "port {} is not active (ibv_port_state {}): is the link up?",
                config.port_num, port.state
            )));
        }
        let gid = context.gid(config.port_num, config.gid_index)?;
        if needs_gid(port.link_layer) && gid == [0; 16] {
            return Err(device_error(format!(
                "GID index {} of port {} is empty: choose another GID index",
                config.gid_index, config.port_num
            )));
        }
        if uses_lid(port.link_layer) && port.lid == 0 && gid == [0; 16] {
            return Err(device_error(format!(
                "port {} has no LID: is a subnet manager running?",
                config.port_num
            )));
        }
        let local_mtu = PathMtu::from_code(port.active_mtu).unwrap_or(PathMtu::Mtu256);

        let pd = ProtectionDomain::alloc(&context)?;
        let channel = CompChannel::create(&context)?;
        let cq = CompletionQueue::create(&context, &channel, cq_entries)?;
        let qp = QueuePair::create(&pd, &cq, config.send_slot_count, config.recv_slot_count)?;
        let buffers = RegisteredPool::register(&pd, SlotPool::new(layout))?;

        let local = QpEndpoint {
            magic: ENDPOINT_MAGIC,
            version: ENDPOINT_VERSION,
            qpn: qp.qp_num(),
            psn: random_psn(),
            max_payload_bytes: config.max_payload_bytes,
            recv_slot_count: config.recv_slot_count,
            lid: port.lid,
            path_mtu: local_mtu as u8,
            reserved0: 0,
            reserved1: 0,
            gid,
        };
        local
            .validate()
            .map_err(|e| device_error(format!("our own endpoint is unusable: {e}")))?;

        let mut conn = RdmaConnection {
            qp,
            buffers,
            cq,
            context,
            state: QpStateMachine::new(),
            config: config.clone(),
            local_mtu,
            local,
            remote: None,
            send_payload_max_bytes: 0,
            ready: VecDeque::with_capacity(config.recv_slot_count as usize),
            completions: Vec::with_capacity(super::verbs::POLL_BATCH),
        };
        conn.transition(&Transition::ToInit(InitAttrs {
            port_num: config.port_num,
            pkey_index: 0,
        }))?;
        conn.post_all_receives()?;
        assert_eq!(conn.state.state(), QpState::Init);
        assert_eq!(
            conn.buffers.pool().book().recv_posted_count(),
            config.recv_slot_count
        );
        Ok(conn)
    }

    /// Post every unposted receive slot in one chained request.
    fn post_all_receives(&mut self) -> Result<(), RdmaError> {
        let pool = self.buffers.pool();
        let slot_bytes = u32::try_from(pool.layout().slot_bytes).expect("slot fits u32");
        let mut items = Vec::new();
        for slot in pool.book().recv_unposted() {
            let id = WrId {
                kind: WrKind::Recv,
                slot,
            };
            items.push((id.encode(), pool.slot_addr(id)?, slot_bytes));
        }
        self.qp.post_recvs(self.buffers.lkey(), &items)?;
        let book = self.buffers.pool_mut().book_mut();
        for &(wr_id, _, _) in &items {
            book.recv_posted(WrId::decode(wr_id)?.slot)?;
        }
        debug_assert!(book.check_consistency().is_ok());
        Ok(())
    }

    /// Check `t` against the state machine, apply it to the device, record it.
    fn transition(&mut self, t: &Transition) -> Result<(), RdmaError> {
        self.state.check(t)?;
        self.qp.modify(t)?;
        self.state.commit(t);
        Ok(())
    }

    /// What the peer needs to connect to this side.
    pub fn local_endpoint(&self) -> QpEndpoint {
        self.local
    }

    /// The peer's endpoint, once connected.
    pub fn remote_endpoint(&self) -> Option<QpEndpoint> {
        self.remote
    }

    /// The queue pair's state.
    pub fn state(&self) -> QpState {
        self.state.state()
    }

    /// The device this connection uses.
    pub fn device_name(&self) -> &str {
        self.context.name()
    }

    /// Largest payload [`send`](RdmaConnection::send) accepts (0 before connecting).
    pub fn max_send_payload_bytes(&self) -> usize {
        self.send_payload_max_bytes
    }

    /// Connect to the peer described by `remote` (INIT → RTR → RTS).
    pub fn connect(&mut self, remote: &QpEndpoint) -> Result<(), RdmaError> {
        remote.validate()?;
        let rtr = Transition::ToRtr(RtrAttrs::toward(
            remote,
            self.config.port_num,
            self.config.gid_index,
            self.local_mtu,
        ));
        self.transition(&rtr)?;
        self.transition(&Transition::ToRts(RtsAttrs::with_psn(self.local.psn)))?;
        self.remote = Some(*remote);
        self.send_payload_max_bytes =
            (remote.max_payload_bytes).min(self.config.max_payload_bytes) as usize;
        assert_eq!(self.state.state(), QpState::Rts);
        Ok(())
    }

    /// Exchange endpoints over `stream` (the TCP connection, after its handshake) and
    /// connect. Returns the peer's endpoint.
    pub fn connect_over<S: Read + Write>(
        &mut self,
        stream: &mut S,
    ) -> Result<QpEndpoint, RdmaError> {
        let remote = exchange_endpoints(stream, &self.local)?;
        self.connect(&remote)?;
        Ok(remote)
    }

    /// Send one frame: `header` (its magic and length are filled in) and `payload`.
    /// `Ok(false)` when every send slot is in flight (nothing sent; wait and retry).
    pub fn send(&mut self, header: &Header, payload: &[u8]) -> Result<bool, RdmaError> {
        if self.state.state() != QpState::Rts {
            return Err(RdmaError::NotConnected(self.state.state()));
        }
        if payload.len() > self.send_payload_max_bytes {
            return Err(RdmaError::PayloadTooLarge {
                payload_bytes: payload.len(),
                max_payload_bytes: self.send_payload_max_bytes,
            });
        }
        let slot = match self.buffers.pool_mut().book_mut().send_claim() {
            Some(slot) => slot,
            None => {
                self.poll_completions()?;
                match self.buffers.pool_mut().book_mut().send_claim() {
                    Some(slot) => slot,
                    None => return Ok(false),
                }
            }
        };
        let id = WrId {
            kind: WrKind::Send,
            slot,
        };
        let posted = self.fill_and_post(id, header, payload);
        let book = self.buffers.pool_mut().book_mut();
        match posted {
            Ok(()) => book.send_posted(slot)?,
            Err(e) => {
                book.send_unclaim(slot)?;
                return Err(e);
            }
        }
        Ok(true)
    }

    fn fill_and_post(
        &mut self,
        id: WrId,
        header: &Header,
        payload: &[u8],
    ) -> Result<(), RdmaError> {
        let len = self
            .buffers
            .pool_mut()
            .write_send(id.slot, header, payload)?;
        let addr = self.buffers.pool().slot_addr(id)?;
        let len = u32::try_from(len).expect("frame fits u32");
        self.qp
            .post_send(id.encode(), self.buffers.lkey(), addr, len)
    }

    /// Largest message [`send_bytes`](RdmaConnection::send_bytes) accepts: what fits
    /// both our send slots and the peer's receive slots (0 before connecting).
    pub fn max_message_bytes(&self) -> usize {
        if self.remote.is_none() {
            return 0;
        }
        HEADER_SIZE + self.send_payload_max_bytes
    }

    /// Send `bytes` as one message of a byte stream: no header is added and the
    /// receiver takes it with [`recv_bytes`](RdmaConnection::recv_bytes). A connection
    /// carries frames ([`send`](RdmaConnection::send)) or a byte stream, never both.
    /// `Ok(false)` when every send slot is in flight (nothing sent; wait and retry).
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<bool, RdmaError> {
        assert!(!bytes.is_empty(), "an empty stream message means nothing");
        if self.state.state() != QpState::Rts {
            return Err(RdmaError::NotConnected(self.state.state()));
        }
        if bytes.len() > self.max_message_bytes() {
            return Err(RdmaError::MessageTooLarge {
                message_bytes: bytes.len(),
                max_message_bytes: self.max_message_bytes(),
            });
        }
        let slot = match self.buffers.pool_mut().book_mut().send_claim() {
            Some(slot) => slot,
            None => {
                self.poll_completions()?;
                match self.buffers.pool_mut().book_mut().send_claim() {
                    Some(slot) => slot,
                    None => return Ok(false),
                }
            }
        };
        let id = WrId {
            kind: WrKind::Send,
            slot,
        };
        let posted = self.fill_bytes_and_post(id, bytes);
        let book = self.buffers.pool_mut().book_mut();
        match posted {
            Ok(()) => book.send_posted(slot)?,
            Err(e) => {
                book.send_unclaim(slot)?;
                return Err(e);
            }
        }
        debug_assert!(self.send_in_flight_count() >= 1);
        Ok(true)
    }

    fn fill_bytes_and_post(&mut self, id: WrId, bytes: &[u8]) -> Result<(), RdmaError> {
        let len = self.buffers.pool_mut().write_send_bytes(id.slot, bytes)?;
        let addr = self.buffers.pool().slot_addr(id)?;
        let len = u32::try_from(len).expect("message fits u32");
        self.qp
            .post_send(id.encode(), self.buffers.lkey(), addr, len)
    }

    /// The next received message of a byte stream, copied into `out` (replacing its
    /// contents); `Ok(false)` when nothing has arrived. Only the slot size bounds a
    /// message: the bytes are the peer's and whoever reads the stream validates them.
    /// An `Err` means the connection broke: drop it.
    pub fn recv_bytes(&mut self, out: &mut Vec<u8>) -> Result<bool, RdmaError> {
        if self.ready.is_empty() {
            match self.state.state() {
                QpState::Rtr | QpState::Rts => {}
                state => return Err(RdmaError::NotConnected(state)),
            }
            self.poll_completions()?;
        }
        let Some((slot, message_bytes)) = self.ready.pop_front() else {
            return Ok(false);
        };
        let message_bytes = message_bytes as usize;
        let slot_bytes = self.buffers.pool().layout().slot_bytes;
        out.clear();
        let copied = if message_bytes <= slot_bytes {
            out.resize(message_bytes, 0);
            self.buffers.pool().read_recv(slot, 0, out)
        } else {
            Err(super::SlotError::WrongState {
                slot: WrId {
                    kind: WrKind::Recv,
                    slot,
                },
                op: "message longer than its slot",
            })
        };
        // The bytes are ours now (or unreadable): give the slot back to the NIC first.
        self.repost(slot)?;
        copied?;
        assert!(out.len() <= slot_bytes);
        Ok(true)
    }

    /// The next received frame: its header is returned, its payload replaces the
    /// contents of `payload`. `Ok(None)` when nothing has arrived. An `Err` means the
    /// peer sent garbage or the connection broke: drop it.
    pub fn recv(&mut self, payload: &mut Vec<u8>) -> Result<Option<Header>, RdmaError> {
        if self.ready.is_empty() {
            match self.state.state() {
                QpState::Rtr | QpState::Rts => {}
                state => return Err(RdmaError::NotConnected(state)),
            }
            self.poll_completions()?;
        }
        let Some((slot, message_bytes)) = self.ready.pop_front() else {
            return Ok(None);
        };
        let message_bytes = message_bytes as usize;
        let pool = self.buffers.pool();
        let mut raw = [0u8; HEADER_SIZE];
        let copied = if message_bytes >= HEADER_SIZE {
            payload.clear();
            payload.resize(message_bytes - HEADER_SIZE, 0);
            pool.read_recv(slot, 0, &mut raw)
                .and_then(|()| pool.read_recv(slot, HEADER_SIZE, payload))
        } else {
            payload.clear();
            Ok(())
        };
        // The bytes are ours now (or unreadable): give the slot back to the NIC before
        // judging them, so a bad frame costs no receive buffer.
        self.repost(slot)?;
        copied?;
        let header = check_header(&raw, message_bytes, self.config.max_payload_bytes as usize)?;
        assert_eq!(payload.len(), header.payload_len as usize);
        Ok(Some(header))
    }

    fn repost(&mut self, slot: u32) -> Result<(), RdmaError> {
        let id = WrId {
            kind: WrKind::Recv,
            slot,
        };
        let pool = self.buffers.pool();
        let slot_bytes = u32::try_from(pool.layout().slot_bytes).expect("slot fits u32");
        let item = (id.encode(), pool.slot_addr(id)?, slot_bytes);
        self.qp.post_recvs(self.buffers.lkey(), &[item])?;
        self.buffers.pool_mut().book_mut().recv_posted(slot)?;
        Ok(())
    }

    /// Take what the completion queue holds: free completed send slots, queue received
    /// frames. Returns how many completions there were. A failed completion moves the
    /// connection to ERROR and is returned after the whole batch is accounted for.
    pub fn poll_completions(&mut self) -> Result<usize, RdmaError> {
        let mut completions = std::mem::take(&mut self.completions);
        completions.clear();
        let mut first_error = self.cq.poll(&mut completions).err();
        for c in &completions {
            if let Err(e) = self.account(c) {
                first_error.get_or_insert(e);
            }
        }
        let count = completions.len();
        self.completions = completions;
        debug_assert!(self.buffers.pool().book().check_consistency().is_ok());
        assert!(self.ready.len() <= self.config.recv_slot_count as usize);
        match first_error {
            Some(e) => {
                self.state.failed();
                Err(e)
            }
            None => Ok(count),
        }
    }

    /// Record one completion in the slot book.
    fn account(&mut self, c: &Completion) -> Result<(), RdmaError> {
        let id = WrId::decode(c.wr_id)?;
        let book = self.buffers.pool_mut().book_mut();
        if c.status != ibv_wc_status::IBV_WC_SUCCESS {
            match id.kind {
                WrKind::Recv => book.recv_flushed(id.slot)?,
                WrKind::Send => book.send_completed(id.slot)?,
            }
            return Err(RdmaError::Completion {
                kind: id.kind,
                status: c.status,
                description: status_text(c.status),
            });
        }
        match id.kind {
            WrKind::Send => book.send_completed(id.slot)?,
            WrKind::Recv => {
                book.recv_completed(id.slot)?;
                if c.opcode != ibv_wc_opcode::IBV_WC_RECV {
                    return Err(RdmaError::Completion {
                        kind: WrKind::Recv,
                        status: c.status,
                        description: format!("unexpected receive opcode {}", c.opcode),
                    });
                }
                self.ready.push_back((id.slot, c.byte_len));
            }
        }
        Ok(())
    }

    /// Wait until completions arrive or `timeout` passes: poll for the configured spin
    /// time, then arm the completion queue and sleep on its channel. `Ok(true)` when
    /// completions were taken (frames may be ready, send slots free).
    pub fn wait(&mut self, timeout: Duration) -> Result<bool, RdmaError> {
        let start = Instant::now();
        let spin = Duration::from_micros(self.config.spin_us).min(timeout);
        loop {
            if self.poll_completions()? > 0 {
                return Ok(true);
            }
            if start.elapsed() >= spin {
                break;
            }
            std::hint::spin_loop();
        }
        // Drop stale events, arm, and look once more: a completion between the last
        // poll and arming raises no event.
        while self.cq.take_event()? {}
        self.cq.arm()?;
        if self.poll_completions()? > 0 {
            return Ok(true);
        }
        let left = timeout.saturating_sub(start.elapsed());
        let left_ms = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        if self.cq.channel().wait_readable(left_ms)? {
            self.cq.take_event()?;
        }
        Ok(self.poll_completions()? > 0)
    }

    /// The fd that becomes readable after [`arm`](RdmaConnection::arm) when a
    /// completion arrives, for a caller's own epoll loop.
    pub fn completion_fd(&self) -> BorrowedFd<'_> {
        self.cq.channel().fd()
    }

    /// Ask for the completion fd to become readable at the next completion. Returns
    /// `true` when completions were already waiting (poll before sleeping).
    pub fn arm(&mut self) -> Result<bool, RdmaError> {
        while self.cq.take_event()? {}
        self.cq.arm()?;
        Ok(self.poll_completions()? > 0)
    }

    /// Receive slots posted now (all of them, except frames not yet taken by `recv`).
    pub fn recv_posted_count(&self) -> u32 {
        self.buffers.pool().book().recv_posted_count()
    }

    /// Sends posted and not yet completed.
    pub fn send_in_flight_count(&self) -> u32 {
        self.buffers.pool().book().send_in_flight_count()
    }
}
