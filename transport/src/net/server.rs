//! What a stream server driver ([`super::uring`] or [`super::poll`]) offers the code
//! above it: connections named by a [`ConnId`], an [`Io`] to queue bytes and closes,
//! and the [`StreamHandler`] callbacks it runs.

use std::net::{SocketAddr, TcpStream};

/// A connection: its slot in the driver's table and a generation, so an id never names
/// a later connection that reused the slot.
pub type ConnId = u64;

/// Bits of the generation kept in a [`ConnId`] (and in io_uring user data).
pub const GENERATION_BITS: u32 = 24;

/// The id of slot `slot` in generation `generation`.
pub fn conn_id(slot: u32, generation: u32) -> ConnId {
    (u64::from(generation & ((1 << GENERATION_BITS) - 1)) << 32) | u64::from(slot)
}

/// The slot of `id`.
pub fn conn_slot(id: ConnId) -> u32 {
    id as u32
}

/// Callbacks of a stream server. All run on the driver's thread.
pub trait StreamHandler {
    /// A connection was accepted.
    fn on_open(&mut self, conn: ConnId, peer: SocketAddr, io: &mut Io);
    /// Bytes arrived on `conn`.
    fn on_data(&mut self, conn: ConnId, data: &[u8], io: &mut Io);
    /// `conn` is gone (peer closed, error, or after [`Io::close`]); its id is dead.
    fn on_close(&mut self, conn: ConnId);
    /// Work between I/O events (e.g. collect replies). Returns how much was done.
    fn tick(&mut self, io: &mut Io) -> usize;
    /// The driver is about to sleep: announce it and re-check for work. Return `false`
    /// to stay awake.
    fn before_sleep(&mut self) -> bool;
    /// The driver woke up.
    fn after_wake(&mut self);
    /// How long the driver may sleep at most (e.g. until a handshake times out).
    fn sleep_limit(&self) -> Option<std::time::Duration>;
}

/// One connection's outgoing state.
#[derive(Debug)]
pub(crate) struct ConnIo {
    pub(crate) stream: TcpStream,
    pub(crate) generation: u32,
    /// Bytes queued and not yet handed to the kernel.
    pub(crate) out: Vec<u8>,
    /// Close once `out` is sent.
    pub(crate) closing: bool,
}

/// The driver's connection table, through which handlers send and close.
#[derive(Debug, Default)]
pub struct Io {
    pub(crate) slots: Vec<Option<ConnIo>>,
    free: Vec<u32>,
    next_generation: u32,
    open: usize,
    /// Largest backlog of unsent bytes per connection; a peer that does not read its
    /// replies past this is dropped.
    pub(crate) out_bytes_max: usize,
}

impl Io {
    pub(crate) fn new(out_bytes_max: usize) -> Io {
        Io {
            out_bytes_max,
            ..Io::default()
        }
    }

    pub(crate) fn insert(&mut self, stream: TcpStream) -> ConnId {
        self.next_generation = self.next_generation.wrapping_add(1) & ((1 << GENERATION_BITS) - 1);
        let generation = self.next_generation;
        let conn = ConnIo {
            stream,
            generation,
            out: Vec::new(),
            closing: false,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                assert!(self.slots[slot as usize].is_none(), "free slot in use");
                self.slots[slot as usize] = Some(conn);
                slot
            }
            None => {
                self.slots.push(Some(conn));
                (self.slots.len() - 1) as u32
            }
        };
        self.open += 1;
        conn_id(slot, generation)
    }

    pub(crate) fn remove(&mut self, conn: ConnId) -> Option<ConnIo> {
        let slot = conn_slot(conn) as usize;
        self.get(conn)?;
        let removed = self.slots[slot].take();
        self.free.push(slot as u32);
        self.open -= 1;
        removed
    }

    pub(crate) fn get(&self, conn: ConnId) -> Option<&ConnIo> {
        let c = self.slots.get(conn_slot(conn) as usize)?.as_ref()?;
        (conn_id(conn_slot(conn), c.generation) == conn).then_some(c)
    }

    pub(crate) fn get_mut(&mut self, conn: ConnId) -> Option<&mut ConnIo> {
        let slot = conn_slot(conn) as usize;
        let c = self.slots.get_mut(slot)?.as_mut()?;
        (conn_id(slot as u32, c.generation) == conn).then_some(c)
    }

    /// Open connections.
    pub fn open_count(&self) -> usize {
        self.open
    }

    /// Whether `conn` is open.
    pub fn is_open(&self, conn: ConnId) -> bool {
        self.get(conn).is_some_and(|c| !c.closing)
    }

    /// Room for `len` more bytes on `conn`: false if it is gone or closing; a peer
    /// whose unsent backlog would pass the maximum is closed (it does not read).
    fn reserve(&mut self, conn: ConnId, len: usize) -> Option<&mut ConnIo> {
        let max = self.out_bytes_max;
        let c = self.get_mut(conn)?;
        if c.closing {
            return None;
        }
        if c.out.len() + len > max {
            c.closing = true;
            c.out.clear();
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
            return None;
        }
        Some(c)
    }

    /// Queue `bytes` on `conn`; false if it is gone, closing, or was just closed for
    /// not reading.
    pub fn send(&mut self, conn: ConnId, bytes: &[u8]) -> bool {
        let Some(c) = self.reserve(conn, bytes.len()) else {
            return false;
        };
        c.out.extend_from_slice(bytes);
        true
    }

    /// Queue one frame on `conn`, as [`Io::send`].
    pub fn send_frame(&mut self, conn: ConnId, header: &crate::Header, payload: &[u8]) -> bool {
        let len = crate::wire::HEADER_SIZE + payload.len();
        let Some(c) = self.reserve(conn, len) else {
            return false;
        };
        super::encode_frame(&mut c.out, header, payload);
        true
    }

    /// Close `conn` after what is queued has been sent.
    pub fn close(&mut self, conn: ConnId) {
        if let Some(c) = self.get_mut(conn) {
            c.closing = true;
            if c.out.is_empty() {
                let _ = c.stream.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    /// Connections with bytes to send.
    pub(crate) fn pending_sends(&self) -> impl Iterator<Item = ConnId> + '_ {
        self.slots.iter().enumerate().filter_map(|(slot, c)| {
            let c = c.as_ref()?;
            (!c.out.is_empty()).then(|| conn_id(slot as u32, c.generation))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn ids_do_not_name_reused_slots() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut io = Io::new(1 << 20);
        let a = io.insert(TcpStream::connect(addr).unwrap());
        io.remove(a).unwrap();
        let b = io.insert(TcpStream::connect(addr).unwrap());
        assert_eq!(conn_slot(a), conn_slot(b));
        assert_ne!(a, b);
        assert!(!io.send(a, b"x"), "a stale id reaches nothing");
        assert!(io.send(b, b"x"));
        assert!(
            !io.send(b, &vec![0u8; 2 << 20]),
            "a backlog past the maximum closes the peer"
        );
        assert!(!io.is_open(b));
    }
}
