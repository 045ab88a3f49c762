//! One client's connection to one partition: the partition's ends of that client's
//! request and response rings.

use std::os::unix::net::UnixStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tabos_engine::Caller;
use tabos_transport::doorbell::futex_wake;
use tabos_transport::ring::{Consumer, Producer, RingError};
use tabos_transport::segment::Segment;
use tabos_transport::wire::frame_size;

/// A client's rings as seen by one partition. Owned by that partition's thread.
#[derive(Debug)]
pub struct Port {
    /// The node's id for the client.
    pub client_id: u64,
    /// Who the client is: from SO_PEERCRED, or the user root chose to act as.
    pub caller: Caller,
    /// Requests from the client.
    pub requests: Consumer,
    /// Responses to the client; published after the batch is durable.
    pub responses: Producer,
    /// The client's segment (its futex word wakes the client).
    pub segment: Arc<Segment>,
    /// The client's socket, shut down to evict a client that corrupted its rings.
    pub socket: Arc<UnixStream>,
    /// Responses written since the last publish.
    pub dirty: bool,
}

impl Port {
    /// Whether the response ring can take a reply of up to `reply_bytes_max` bytes,
    /// wherever the write position is.
    pub fn has_room_for_reply(&mut self, reply_bytes_max: usize) -> Result<bool, RingError> {
        let need = frame_size(reply_bytes_max);
        self.responses.has_free(2 * need)
    }

    /// Make written responses visible. Returns whether the client must be woken.
    pub fn publish(&mut self) -> bool {
        if !self.dirty {
            return false;
        }
        self.dirty = false;
        self.responses.publish();
        true
    }

    /// Wake the client if it sleeps (call after `publish` and a SeqCst fence).
    pub fn wake_if_waiting(&self) {
        if self.segment.client_waiting().load(Ordering::Relaxed) != 0 {
            self.segment.client_futex().fetch_add(1, Ordering::Release);
            futex_wake(self.segment.client_futex());
        }
    }

    /// Evict the client: the listener sees the socket close and detaches it everywhere.
    pub fn evict(&self, why: &dyn std::fmt::Display) {
        eprintln!(
            "tabosd: evicting client {} (pid {}): {why}",
            self.client_id, self.caller.pid
        );
        let _ = self.socket.shutdown(std::net::Shutdown::Both);
    }
}
