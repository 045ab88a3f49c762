//! One client's connection to one partition: the partition's ends of that client's
//! request and response rings.
//!
//! A port's peer is either a local task (its own shared-memory segment) or the node's
//! network gateway, whose one port per partition carries every remote connection: the
//! caller of each of its requests is found by the connection tag in the request id.

use crate::net::gateway::GatewayShared;
use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tabos_engine::Caller;
use tabos_transport::doorbell::futex_wake;
use tabos_transport::ring::{Consumer, Producer, RingError};
use tabos_transport::segment::Segment;
use tabos_transport::wire::{frame_size, Header};

/// Who is at the other end of a port.
#[derive(Debug)]
pub enum Peer {
    /// A local task over shared memory.
    Local {
        /// Who the client is: from SO_PEERCRED, or the user root chose to act as.
        caller: Caller,
        /// The client's segment (its futex word wakes the client).
        segment: Arc<Segment>,
        /// The client's socket, shut down to evict a client that corrupted its rings.
        socket: Arc<UnixStream>,
    },
    /// The network gateway thread, multiplexing remote connections.
    Gateway(Arc<GatewayShared>),
}

/// A client's rings as seen by one partition. Owned by that partition's thread.
#[derive(Debug)]
pub struct Port {
    /// The node's id for the client.
    pub client_id: u64,
    /// Requests from the client.
    pub requests: Consumer,
    /// Responses to the client; published after the batch is durable.
    pub responses: Producer,
    /// The other end.
    pub peer: Peer,
    /// Responses written since the last publish.
    pub dirty: bool,
    /// Requests served from this port (the `sys_connections` table).
    pub calls: u64,
    /// Replies written but waiting for the log: `(ring position after the reply, LSN
    /// it depends on, its request)`, in ring order. Empty unless durability is `sync`.
    pub held: VecDeque<(u64, u64, Header)>,
}

impl Port {
    /// Who sent `request`; `None` when its remote connection has already closed.
    pub fn caller_of(&self, request: &Header) -> Option<Caller> {
        match &self.peer {
            Peer::Local { caller, .. } => Some(*caller),
            Peer::Gateway(gateway) => gateway.caller_of(request.request_id),
        }
    }

    /// A `sys_connections` row: client id, transport, peer pid and uid (0 for the
    /// gateway, which carries every remote connection), calls.
    pub fn sql_row(&self) -> serde_json::Value {
        let (transport, uid) = match &self.peer {
            Peer::Local { caller, .. } => ("shm", caller.uid),
            Peer::Gateway(_) => ("network gateway", 0),
        };
        serde_json::json!([self.client_id, transport, self.pid(), uid, self.calls])
    }

    /// Process id of a local client (0 for the gateway), for log lines.
    pub fn pid(&self) -> u32 {
        match &self.peer {
            Peer::Local { caller, .. } => caller.pid,
            Peer::Gateway(_) => 0,
        }
    }

    /// Whether the response ring can take a reply of up to `reply_bytes_max` bytes,
    /// wherever the write position is.
    pub fn has_room_for_reply(&mut self, reply_bytes_max: usize) -> Result<bool, RingError> {
        let need = frame_size(reply_bytes_max);
        self.responses.has_free(2 * need)
    }

    /// Note the reply just written for `request`, which depends on `lsn`: it is held
    /// while `lsn` is above `released_lsn`, and so is every reply after it.
    pub fn hold(&mut self, lsn: u64, released_lsn: u64, request: &Header) {
        if lsn > released_lsn || !self.held.is_empty() {
            let position = self.responses.tail_position();
            debug_assert!(self
                .held
                .back()
                .is_none_or(|h| h.0 < position && h.1 <= lsn));
            self.held.push_back((position, lsn, *request));
        }
    }

    /// Make written responses visible, up to the first that depends on an LSN above
    /// `released_lsn`. Returns whether the client must be woken.
    pub fn publish(&mut self, released_lsn: u64) -> bool {
        if !self.dirty {
            return false;
        }
        let mut upto = None;
        while let Some(&(position, lsn, _)) = self.held.front() {
            if lsn > released_lsn {
                break;
            }
            upto = Some(position);
            self.held.pop_front();
        }
        if self.held.is_empty() {
            self.dirty = false;
            self.responses.publish();
            return true;
        }
        match upto {
            Some(position) => {
                self.responses.publish_to(position);
                true
            }
            None => false,
        }
    }

    /// Fail-stop: forget the held replies (they acknowledge writes that will never be
    /// durable) and return their requests, to be answered with an error instead.
    pub fn retract_held(&mut self) -> Vec<Header> {
        let requests = self.held.drain(..).map(|(_, _, r)| r).collect();
        self.responses.discard_unpublished();
        self.dirty = false;
        requests
    }

    /// Wake the client if it sleeps (call after `publish` and a SeqCst fence).
    pub fn wake_if_waiting(&self) {
        match &self.peer {
            Peer::Local { segment, .. } => {
                if segment.client_waiting().load(Ordering::Relaxed) != 0 {
                    segment.client_futex().fetch_add(1, Ordering::Release);
                    futex_wake(segment.client_futex());
                }
            }
            Peer::Gateway(gateway) => gateway.wake_if_sleeping(),
        }
    }

    /// Evict the client: the listener sees the socket close and detaches it everywhere.
    pub fn evict(&self, why: &dyn std::fmt::Display) {
        match &self.peer {
            Peer::Local { caller, socket, .. } => {
                eprintln!(
                    "tabosd: evicting client {} (pid {}): {why}",
                    self.client_id, caller.pid
                );
                let _ = socket.shutdown(std::net::Shutdown::Both);
            }
            Peer::Gateway(_) => eprintln!("tabosd: network gateway ring broken: {why}"),
        }
    }
}
