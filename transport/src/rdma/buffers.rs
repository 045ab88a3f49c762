//! The buffers of one RDMA connection: one contiguous allocation split into fixed slots.
//!
//! Receive slots come first, then send slots; each holds the largest frame the
//! connection allows (header and payload, rounded up to [`SLOT_ALIGN`]). Every receive
//! slot is posted to the queue pair before it connects, so the peer always finds a
//! buffer; a receive slot is reposted once its frame has been copied out. Send slots
//! come from a free list and return to it when their send completes.
//!
//! The bookkeeping ([`SlotBook`]) and the memory ([`SlotPool`]) are plain Rust and need
//! no device; `conn` registers the pool's memory and posts the work requests. Each work
//! request carries a [`WrId`]: the slot index, with the top bit set for sends.
//!
//! Memory the NIC may write (a posted receive slot) is never turned into a Rust
//! reference: bytes move in and out with raw copies, and only in the states where the
//! NIC is done with the slot (a filled receive slot, a claimed send slot).

use crate::wire::{frame_size, Header, HEADER_SIZE};
use std::ptr::NonNull;

/// Slot sizes are a multiple of this (a cache line), so slots never share one.
pub const SLOT_ALIGN: usize = 64;
/// Most receive (or send) slots of one connection.
pub const SLOT_COUNT_MAX: u32 = 1 << 15;
/// Largest payload an RDMA frame may carry (one SEND; well below every device's
/// message size limit).
pub const RDMA_PAYLOAD_BYTES_MAX: u32 = 64 << 20;
/// Most bytes of buffers one connection may allocate.
pub const POOL_BYTES_MAX: usize = 1 << 30;

/// The top bit of a `wr_id` marks a send.
const WR_ID_SEND_BIT: u64 = 1 << 63;

/// Which queue a work request went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WrKind {
    /// A receive slot posted with `ibv_post_recv`.
    Recv,
    /// A send slot posted with `ibv_post_send`.
    Send,
}

impl std::fmt::Display for WrKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WrKind::Recv => "receive",
            WrKind::Send => "send",
        })
    }
}

/// The identity of a work request: its kind and slot, packed into the 64-bit `wr_id`
/// that the completion echoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WrId {
    /// Receive or send.
    pub kind: WrKind,
    /// Index of the slot among the slots of that kind.
    pub slot: u32,
}

impl WrId {
    /// The `wr_id` to post.
    pub fn encode(self) -> u64 {
        let kind = match self.kind {
            WrKind::Recv => 0,
            WrKind::Send => WR_ID_SEND_BIT,
        };
        kind | u64::from(self.slot)
    }

    /// The work request a completion's `wr_id` names. Bits other than the kind bit and
    /// the low 32 mean the value is not one of ours.
    pub fn decode(wr_id: u64) -> Result<WrId, SlotError> {
        if wr_id & !WR_ID_SEND_BIT & !u64::from(u32::MAX) != 0 {
            return Err(SlotError::BadWrId(wr_id));
        }
        let kind = if wr_id & WR_ID_SEND_BIT != 0 {
            WrKind::Send
        } else {
            WrKind::Recv
        };
        Ok(WrId {
            kind,
            slot: wr_id as u32,
        })
    }
}

/// Slot bookkeeping found an impossible state or a bad request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    /// A layout setting is out of range (names which).
    BadLayout(&'static str),
    /// A completion carried a `wr_id` we never posted.
    BadWrId(u64),
    /// A slot index past the slots of its kind.
    NoSuchSlot(WrId),
    /// A slot is not in the state the operation needs (a double completion, a double
    /// free, a repost of a posted slot).
    WrongState {
        /// The slot.
        slot: WrId,
        /// The operation that found it so.
        op: &'static str,
    },
}

impl std::fmt::Display for SlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SlotError::BadLayout(what) => write!(f, "bad buffer layout: {what}"),
            SlotError::BadWrId(wr_id) => write!(f, "completion for unknown wr_id {wr_id:#x}"),
            SlotError::NoSuchSlot(id) => write!(f, "no {} slot {}", id.kind, id.slot),
            SlotError::WrongState { slot, op } => write!(
                f,
                "{op}: {} slot {} is not in the right state",
                slot.kind, slot.slot
            ),
        }
    }
}

impl std::error::Error for SlotError {}

/// Shape of a connection's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlotLayout {
    /// Largest payload a frame in a slot may carry.
    pub max_payload_bytes: u32,
    /// Bytes of each slot: the largest frame, rounded up to [`SLOT_ALIGN`].
    pub slot_bytes: usize,
    /// Receive slots (all posted up front).
    pub recv_slot_count: u32,
    /// Send slots (frames in flight at most).
    pub send_slot_count: u32,
}

impl SlotLayout {
    /// Slots for frames of up to `max_payload_bytes`; every limit checked.
    pub fn new(
        max_payload_bytes: u32,
        recv_slot_count: u32,
        send_slot_count: u32,
    ) -> Result<SlotLayout, SlotError> {
        if max_payload_bytes > RDMA_PAYLOAD_BYTES_MAX {
            return Err(SlotError::BadLayout(
                "max payload above RDMA_PAYLOAD_BYTES_MAX",
            ));
        }
        if recv_slot_count == 0 || recv_slot_count > SLOT_COUNT_MAX {
            return Err(SlotError::BadLayout(
                "receive slot count not in 1..=SLOT_COUNT_MAX",
            ));
        }
        if send_slot_count == 0 || send_slot_count > SLOT_COUNT_MAX {
            return Err(SlotError::BadLayout(
                "send slot count not in 1..=SLOT_COUNT_MAX",
            ));
        }
        let slot_bytes = frame_size(max_payload_bytes as usize).next_multiple_of(SLOT_ALIGN);
        let slot_count = (recv_slot_count + send_slot_count) as usize;
        if slot_bytes.saturating_mul(slot_count) > POOL_BYTES_MAX {
            return Err(SlotError::BadLayout(
                "slots take more than POOL_BYTES_MAX: fewer slots or a smaller max payload",
            ));
        }
        let layout = SlotLayout {
            max_payload_bytes,
            slot_bytes,
            recv_slot_count,
            send_slot_count,
        };
        assert!(layout.slot_bytes >= HEADER_SIZE + max_payload_bytes as usize);
        assert_eq!(layout.slot_bytes % SLOT_ALIGN, 0);
        Ok(layout)
    }

    /// Bytes of all slots together.
    pub fn total_bytes(&self) -> usize {
        self.slot_bytes * (self.recv_slot_count + self.send_slot_count) as usize
    }

    /// Slots of `kind`.
    pub fn slot_count(&self, kind: WrKind) -> u32 {
        match kind {
            WrKind::Recv => self.recv_slot_count,
            WrKind::Send => self.send_slot_count,
        }
    }

    /// Byte offset of a slot in the allocation: receive slots first, then send slots.
    pub fn offset(&self, id: WrId) -> Result<usize, SlotError> {
        if id.slot >= self.slot_count(id.kind) {
            return Err(SlotError::NoSuchSlot(id));
        }
        let index = match id.kind {
            WrKind::Recv => id.slot as usize,
            WrKind::Send => (self.recv_slot_count + id.slot) as usize,
        };
        let offset = index * self.slot_bytes;
        assert!(offset + self.slot_bytes <= self.total_bytes());
        Ok(offset)
    }
}

/// Where a receive slot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvSlotState {
    /// Not posted: at start, or after its receive was flushed.
    Unposted,
    /// Posted: the NIC may write it at any time.
    Posted,
    /// Holds a received frame (its completion arrived) until it is copied out.
    Filled,
}

/// Where a send slot is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendSlotState {
    /// On the free list.
    Free,
    /// Taken off the free list, being filled; not yet posted.
    Claimed,
    /// Posted: the NIC may read it until its completion arrives.
    InFlight,
}

/// The state of every slot of a connection and the free list of send slots. No memory,
/// no device: this is what the tests check.
#[derive(Clone, Debug)]
pub struct SlotBook {
    recv: Vec<RecvSlotState>,
    send: Vec<SendSlotState>,
    send_free: Vec<u32>,
    recv_posted_count: u32,
    send_in_flight_count: u32,
}

impl SlotBook {
    /// Every receive slot unposted, every send slot free.
    pub fn new(layout: &SlotLayout) -> SlotBook {
        let book = SlotBook {
            recv: vec![RecvSlotState::Unposted; layout.recv_slot_count as usize],
            send: vec![SendSlotState::Free; layout.send_slot_count as usize],
            // Popped from the back: slot 0 goes out first.
            send_free: (0..layout.send_slot_count).rev().collect(),
            recv_posted_count: 0,
            send_in_flight_count: 0,
        };
        debug_assert!(book.check_consistency().is_ok());
        book
    }

    fn recv_state(&mut self, slot: u32) -> Result<&mut RecvSlotState, SlotError> {
        self.recv
            .get_mut(slot as usize)
            .ok_or(SlotError::NoSuchSlot(WrId {
                kind: WrKind::Recv,
                slot,
            }))
    }

    fn send_state(&mut self, slot: u32) -> Result<&mut SendSlotState, SlotError> {
        self.send
            .get_mut(slot as usize)
            .ok_or(SlotError::NoSuchSlot(WrId {
                kind: WrKind::Send,
                slot,
            }))
    }

    fn wrong(kind: WrKind, slot: u32, op: &'static str) -> SlotError {
        SlotError::WrongState {
            slot: WrId { kind, slot },
            op,
        }
    }

    /// Receive slots not posted, in index order (all of them at start).
    pub fn recv_unposted(&self) -> Vec<u32> {
        (0..self.recv.len() as u32)
            .filter(|&i| self.recv[i as usize] == RecvSlotState::Unposted)
            .collect()
    }

    /// Record that receive `slot` was posted. It must be unposted or filled (and then
    /// already copied out); posting a posted slot twice is refused.
    pub fn recv_posted(&mut self, slot: u32) -> Result<(), SlotError> {
        let state = self.recv_state(slot)?;
        if *state == RecvSlotState::Posted {
            return Err(Self::wrong(WrKind::Recv, slot, "post receive"));
        }
        *state = RecvSlotState::Posted;
        self.recv_posted_count += 1;
        assert!(self.recv_posted_count as usize <= self.recv.len());
        Ok(())
    }

    /// Record the successful completion of receive `slot`: it now holds a frame.
    pub fn recv_completed(&mut self, slot: u32) -> Result<(), SlotError> {
        let state = self.recv_state(slot)?;
        if *state != RecvSlotState::Posted {
            return Err(Self::wrong(WrKind::Recv, slot, "receive completion"));
        }
        *state = RecvSlotState::Filled;
        assert!(self.recv_posted_count > 0);
        self.recv_posted_count -= 1;
        Ok(())
    }

    /// Record that receive `slot` was flushed (completed with an error, the queue pair
    /// having failed): it holds nothing and is no longer posted.
    pub fn recv_flushed(&mut self, slot: u32) -> Result<(), SlotError> {
        let state = self.recv_state(slot)?;
        if *state != RecvSlotState::Posted {
            return Err(Self::wrong(WrKind::Recv, slot, "receive flush"));
        }
        *state = RecvSlotState::Unposted;
        assert!(self.recv_posted_count > 0);
        self.recv_posted_count -= 1;
        Ok(())
    }

    /// Whether receive `slot` holds a frame.
    pub fn recv_is_filled(&self, slot: u32) -> bool {
        self.recv.get(slot as usize) == Some(&RecvSlotState::Filled)
    }

    /// Take a free send slot; `None` when every slot is claimed or in flight.
    pub fn send_claim(&mut self) -> Option<u32> {
        let slot = self.send_free.pop()?;
        let state = &mut self.send[slot as usize];
        assert_eq!(*state, SendSlotState::Free, "free list holds a busy slot");
        *state = SendSlotState::Claimed;
        Some(slot)
    }

    /// Return a claimed send slot that was not posted (the post failed).
    pub fn send_unclaim(&mut self, slot: u32) -> Result<(), SlotError> {
        let state = self.send_state(slot)?;
        if *state != SendSlotState::Claimed {
            return Err(Self::wrong(WrKind::Send, slot, "unclaim send"));
        }
        *state = SendSlotState::Free;
        self.send_free.push(slot);
        Ok(())
    }

    /// Record that claimed send `slot` was posted.
    pub fn send_posted(&mut self, slot: u32) -> Result<(), SlotError> {
        let state = self.send_state(slot)?;
        if *state != SendSlotState::Claimed {
            return Err(Self::wrong(WrKind::Send, slot, "post send"));
        }
        *state = SendSlotState::InFlight;
        self.send_in_flight_count += 1;
        assert!(self.send_in_flight_count as usize <= self.send.len());
        Ok(())
    }

    /// Record the completion (successful or flushed) of send `slot`: it is free again.
    /// A second completion of the same send is refused, so a slot is never freed twice.
    pub fn send_completed(&mut self, slot: u32) -> Result<(), SlotError> {
        let state = self.send_state(slot)?;
        if *state != SendSlotState::InFlight {
            return Err(Self::wrong(WrKind::Send, slot, "send completion"));
        }
        *state = SendSlotState::Free;
        self.send_free.push(slot);
        assert!(self.send_in_flight_count > 0);
        self.send_in_flight_count -= 1;
        Ok(())
    }

    /// Whether send `slot` is claimed (may be filled).
    pub fn send_is_claimed(&self, slot: u32) -> bool {
        self.send.get(slot as usize) == Some(&SendSlotState::Claimed)
    }

    /// Receive slots posted now.
    pub fn recv_posted_count(&self) -> u32 {
        self.recv_posted_count
    }

    /// Send slots on the free list.
    pub fn send_free_count(&self) -> u32 {
        self.send_free.len() as u32
    }

    /// Sends posted and not yet completed.
    pub fn send_in_flight_count(&self) -> u32 {
        self.send_in_flight_count
    }

    /// Check every invariant (O(slots)); tests run it around each operation.
    pub fn check_consistency(&self) -> Result<(), &'static str> {
        let posted = self
            .recv
            .iter()
            .filter(|s| **s == RecvSlotState::Posted)
            .count();
        if posted != self.recv_posted_count as usize {
            return Err("receive posted count disagrees with slot states");
        }
        let in_flight = self
            .send
            .iter()
            .filter(|s| **s == SendSlotState::InFlight)
            .count();
        if in_flight != self.send_in_flight_count as usize {
            return Err("send in-flight count disagrees with slot states");
        }
        let mut on_list = vec![false; self.send.len()];
        for &slot in &self.send_free {
            let Some(seen) = on_list.get_mut(slot as usize) else {
                return Err("free list holds a slot index out of range");
            };
            if *seen {
                return Err("free list holds a slot twice");
            }
            *seen = true;
        }
        for (state, listed) in self.send.iter().zip(&on_list) {
            if (*state == SendSlotState::Free) != *listed {
                return Err("free list disagrees with send slot states");
            }
        }
        Ok(())
    }
}

/// The memory of a connection's slots and its bookkeeping. Bytes are copied into a
/// send slot only while it is claimed and out of a receive slot only while it is
/// filled, which the pool asserts; the NIC touches a slot only while it is posted.
#[derive(Debug)]
pub struct SlotPool {
    ptr: NonNull<u8>,
    alloc: std::alloc::Layout,
    layout: SlotLayout,
    book: SlotBook,
}

// SAFETY: the pool exclusively owns its allocation; every access goes through `&self`
// byte copies or `&mut self` methods, and the NIC's accesses are ordered by the
// completions the owner observes.
unsafe impl Send for SlotPool {}

/// Alignment of the allocation (a page, as registration pins whole pages anyway).
const POOL_ALIGN: usize = 4096;

impl SlotPool {
    /// Zeroed memory for every slot of `layout`.
    pub fn new(layout: SlotLayout) -> SlotPool {
        let total = layout.total_bytes();
        assert!(total > 0 && total <= POOL_BYTES_MAX);
        let alloc = std::alloc::Layout::from_size_align(total, POOL_ALIGN).expect("pool layout");
        // SAFETY: `alloc` has a non-zero size (asserted above).
        let raw = unsafe { std::alloc::alloc_zeroed(alloc) };
        let Some(ptr) = NonNull::new(raw) else {
            std::alloc::handle_alloc_error(alloc)
        };
        SlotPool {
            ptr,
            alloc,
            layout,
            book: SlotBook::new(&layout),
        }
    }

    /// The shape of the slots.
    pub fn layout(&self) -> &SlotLayout {
        &self.layout
    }

    /// The slot bookkeeping.
    pub fn book(&self) -> &SlotBook {
        &self.book
    }

    /// The slot bookkeeping, to record posts and completions.
    pub fn book_mut(&mut self) -> &mut SlotBook {
        &mut self.book
    }

    /// Start of the allocation (to register it with the device).
    pub fn base_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Bytes of the allocation.
    pub fn len_bytes(&self) -> usize {
        self.alloc.size()
    }

    /// Address of a slot, for a scatter-gather entry.
    pub fn slot_addr(&self, id: WrId) -> Result<u64, SlotError> {
        let offset = self.layout.offset(id)?;
        Ok(self.ptr.as_ptr() as u64 + offset as u64)
    }

    /// Write the frame `header` + `payload` into claimed send slot `slot` and return its
    /// length in bytes. The header's `magic` and `payload_len` are set here.
    pub fn write_send(
        &mut self,
        slot: u32,
        header: &Header,
        payload: &[u8],
    ) -> Result<usize, SlotError> {
        assert!(
            self.book.send_is_claimed(slot),
            "send slot {slot} written while not claimed"
        );
        assert!(
            payload.len() <= self.layout.max_payload_bytes as usize,
            "payload larger than a slot"
        );
        let offset = self.layout.offset(WrId {
            kind: WrKind::Send,
            slot,
        })?;
        let header = super::frame::frame_header(header, payload.len());
        let len = HEADER_SIZE + payload.len();
        assert!(len <= self.layout.slot_bytes);
        // SAFETY: `offset + len` lies inside the allocation (offset is a slot start and
        // `len` fits a slot, asserted); the slot is claimed, so the NIC does not read it
        // and nothing else writes it; the sources are ordinary Rust slices that cannot
        // overlap our private allocation.
        unsafe {
            let dst = self.ptr.as_ptr().add(offset);
            std::ptr::copy_nonoverlapping(bytemuck::bytes_of(&header).as_ptr(), dst, HEADER_SIZE);
            std::ptr::copy_nonoverlapping(payload.as_ptr(), dst.add(HEADER_SIZE), payload.len());
        }
        Ok(len)
    }

    /// Write `bytes` (one message of a byte stream, not a frame) into claimed send slot
    /// `slot` and return its length. The caller keeps messages within a slot.
    pub fn write_send_bytes(&mut self, slot: u32, bytes: &[u8]) -> Result<usize, SlotError> {
        assert!(
            self.book.send_is_claimed(slot),
            "send slot {slot} written while not claimed"
        );
        assert!(
            bytes.len() <= self.layout.slot_bytes,
            "message larger than a slot"
        );
        let offset = self.layout.offset(WrId {
            kind: WrKind::Send,
            slot,
        })?;
        // SAFETY: `offset + bytes.len()` lies inside the allocation (offset is a slot
        // start and the message fits a slot, asserted); the slot is claimed, so the NIC
        // does not read it and nothing else writes it; `bytes` is an ordinary Rust slice
        // that cannot overlap our private allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.ptr.as_ptr().add(offset),
                bytes.len(),
            );
        }
        Ok(bytes.len())
    }

    /// Copy `out.len()` bytes from `offset` bytes into filled receive slot `slot`.
    /// `Err` when the range passes the end of the slot (a length the NIC should never
    /// report, so the caller treats it as a broken connection).
    pub fn read_recv(&self, slot: u32, offset: usize, out: &mut [u8]) -> Result<(), SlotError> {
        assert!(
            self.book.recv_is_filled(slot),
            "receive slot {slot} read while not filled"
        );
        let id = WrId {
            kind: WrKind::Recv,
            slot,
        };
        let start = self.layout.offset(id)?;
        if offset
            .checked_add(out.len())
            .is_none_or(|end| end > self.layout.slot_bytes)
        {
            return Err(SlotError::WrongState {
                slot: id,
                op: "read past the end of the slot",
            });
        }
        // SAFETY: in bounds (the range lies inside this slot, checked, and the slot
        // inside the allocation); the slot is filled, so the NIC finished writing it and
        // does not write it again until it is reposted, which needs `&mut self`; `out`
        // is a distinct Rust buffer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.as_ptr().add(start + offset),
                out.as_mut_ptr(),
                out.len(),
            );
        }
        Ok(())
    }
}

impl Drop for SlotPool {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed(self.alloc)` in `new` and is freed once.
        // The owner deregisters the memory (and so ends all NIC access) before dropping.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.alloc) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_do_not_overlap() {
        let layout = SlotLayout::new(1000, 3, 2).unwrap();
        assert_eq!(layout.slot_bytes, 1088);
        let mut ends = Vec::new();
        for kind in [WrKind::Recv, WrKind::Send] {
            for slot in 0..layout.slot_count(kind) {
                let off = layout.offset(WrId { kind, slot }).unwrap();
                ends.push((off, off + layout.slot_bytes));
            }
        }
        ends.sort();
        assert!(ends.windows(2).all(|w| w[0].1 <= w[1].0));
        assert_eq!(ends.last().unwrap().1, layout.total_bytes());
    }

    #[test]
    fn written_send_slot_holds_a_valid_frame() {
        let layout = SlotLayout::new(100, 1, 2).unwrap();
        let mut pool = SlotPool::new(layout);
        let slot = pool.book_mut().send_claim().unwrap();
        let header = Header::request(42, 7, 3, 0);
        let len = pool.write_send(slot, &header, b"hello").unwrap();
        assert_eq!(len, HEADER_SIZE + 5);
        let offset = layout
            .offset(WrId {
                kind: WrKind::Send,
                slot,
            })
            .unwrap();
        let mut bytes = vec![0u8; len];
        // SAFETY: `offset + len` lies inside the pool's allocation (a slot start plus a
        // frame that fits a slot); no device is involved, so nothing else writes it.
        unsafe {
            std::ptr::copy_nonoverlapping(pool.base_ptr().add(offset), bytes.as_mut_ptr(), len)
        };
        let (got, payload) = crate::rdma::frame::decode_frame(&bytes, 100).unwrap();
        assert_eq!(got.request_id, 42);
        assert_eq!(got.payload_len, 5);
        assert_eq!(payload, b"hello");
    }
}
