//! A bounded single-producer single-consumer ring of frames.
//!
//! The ring lives in memory that the other side can write at any moment (a shared
//! memfd mapped by a client we do not trust). So each side keeps its own index in
//! private memory and only *publishes* it to the shared control block; the index it
//! reads from the other side is validated before use, and every frame is copied out of
//! the ring once and then validated from the copy.
//!
//! Layout: a [`RingControl`] block (producer and consumer indices on separate 128-byte
//! lines) and a data area of `capacity` bytes, a power of two. Indices count bytes
//! since the ring was created and never wrap; `index & (capacity - 1)` is the offset.
//! Each frame is a [`Header`] and its payload, padded to [`FRAME_ALIGN`]. A frame never
//! straddles the end of the data area: the producer writes a pad frame there instead.

use crate::wire::{
    frame_size, Header, FLAGS_KNOWN, FLAG_PAD, FRAME_ALIGN, FRAME_MAGIC, HEADER_SIZE,
};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// The producer's line of the control block.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct ProducerLine {
    /// Bytes published so far.
    pub tail: AtomicU64,
}

/// The consumer's line of the control block.
#[repr(C, align(128))]
#[derive(Debug)]
pub struct ConsumerLine {
    /// Bytes consumed so far.
    pub head: AtomicU64,
    /// Set by a consumer about to sleep; a producer that sees it rings the doorbell.
    pub sleeping: AtomicU32,
}

/// Shared control block of one ring.
#[repr(C)]
#[derive(Debug)]
pub struct RingControl {
    /// Written by the producer only.
    pub producer: ProducerLine,
    /// Written by the consumer only.
    pub consumer: ConsumerLine,
}

/// Bytes of a [`RingControl`] in memory.
pub const RING_CONTROL_SIZE: usize = 256;
const _: () = assert!(std::mem::size_of::<RingControl>() == RING_CONTROL_SIZE);
const _: () = assert!(std::mem::align_of::<RingControl>() == 128);

/// Smallest ring data area.
pub const RING_BYTES_MIN: usize = 64 * 1024;

/// Why a ring can no longer be used. The peer wrote something no honest peer writes;
/// the owner of the ring should drop the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// The published index of the other side is impossible (names which check failed).
    Corrupt(&'static str),
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingError::Corrupt(what) => write!(f, "ring corrupted by peer: {what}"),
        }
    }
}

impl std::error::Error for RingError {}

/// Memory that stays mapped while a ring handle lives.
pub trait RingMemory: Send + Sync + std::fmt::Debug {}

/// A ring's location: its control block and data area, and the owner keeping both
/// mapped.
#[derive(Clone, Debug)]
pub struct RawRing {
    control: *const RingControl,
    data: *mut u8,
    capacity: usize,
    _keep: Arc<dyn RingMemory>,
}

// SAFETY: the pointers refer to memory kept alive by `_keep` (which is Send + Sync);
// all shared-memory access goes through atomics or byte copies that tolerate
// concurrent writers, and each handle type below is used by one thread at a time.
unsafe impl Send for RawRing {}

impl RawRing {
    /// Describe a ring at `control` with `capacity` data bytes at `data`.
    ///
    /// # Safety
    /// `control` must point to a `RingControl`-sized, 128-byte aligned region and `data`
    /// to `capacity` bytes, both valid for reads and writes for as long as `keep` lives,
    /// and not used as anything else. `capacity` must be a power of two and at least
    /// [`RING_BYTES_MIN`].
    pub unsafe fn new(
        control: *mut u8,
        data: *mut u8,
        capacity: usize,
        keep: Arc<dyn RingMemory>,
    ) -> RawRing {
        assert!(
            capacity.is_power_of_two(),
            "ring capacity must be a power of two"
        );
        assert!(capacity >= RING_BYTES_MIN, "ring capacity below minimum");
        assert_eq!(
            control as usize % 128,
            0,
            "ring control block must be 128-byte aligned"
        );
        RawRing {
            control: control.cast(),
            data,
            capacity,
            _keep: keep,
        }
    }

    fn control(&self) -> &RingControl {
        // SAFETY: `new`'s contract: `control` is valid and aligned while `_keep` lives,
        // which is as long as `self`; RingControl is all atomics, so shared access from
        // several processes is well-defined.
        unsafe { &*self.control }
    }

    /// Data bytes of the ring.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Largest frame (header, payload and padding) this ring accepts.
    pub fn max_frame_bytes(&self) -> usize {
        self.capacity / 2
    }

    /// Largest payload this ring can carry.
    pub fn max_payload_bytes(&self) -> usize {
        self.max_frame_bytes() - HEADER_SIZE
    }

    /// The consumer's sleeping flag (see [`crate::doorbell`]).
    pub fn consumer_sleeping(&self) -> &AtomicU32 {
        &self.control().consumer.sleeping
    }

    fn write_bytes(&self, offset: usize, bytes: &[u8]) {
        assert!(
            offset + bytes.len() <= self.capacity,
            "ring write out of bounds"
        );
        // SAFETY: in bounds of the data area (asserted); the data area is valid while
        // `_keep` lives; a racing peer can only corrupt bytes, which the reader validates.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data.add(offset), bytes.len()) }
    }

    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        assert!(
            offset + out.len() <= self.capacity,
            "ring read out of bounds"
        );
        // SAFETY: in bounds of the data area (asserted); u8 has no invalid values, so a
        // concurrent write by a hostile peer yields garbage bytes, never UB in our copy.
        unsafe { std::ptr::copy_nonoverlapping(self.data.add(offset), out.as_mut_ptr(), out.len()) }
    }

    /// A mutable view of `len` data bytes at `offset`, for filling a reserved frame.
    fn data_mut(&mut self, offset: usize, len: usize) -> &mut [u8] {
        assert!(offset + len <= self.capacity, "ring slice out of bounds");
        // SAFETY: in bounds (asserted); the producer owns this reserved, unpublished
        // region exclusively among honest parties; `&mut self` prevents aliasing here.
        unsafe { std::slice::from_raw_parts_mut(self.data.add(offset), len) }
    }
}

/// The writing end of a ring. Frames become visible to the consumer at [`publish`].
///
/// [`publish`]: Producer::publish
#[derive(Debug)]
pub struct Producer {
    ring: RawRing,
    tail: u64,
    published: u64,
    head_seen: u64,
}

impl Producer {
    /// The producer of `ring`, resuming at the ring's current published tail.
    pub fn new(ring: RawRing) -> Producer {
        let tail = ring.control().producer.tail.load(Ordering::Acquire);
        Producer {
            ring,
            tail,
            published: tail,
            head_seen: tail,
        }
    }

    /// The ring this producer writes.
    pub fn ring(&self) -> &RawRing {
        &self.ring
    }

    /// Re-read the consumer's head and validate it against what we published.
    fn refresh_head(&mut self) -> Result<(), RingError> {
        let head = self.ring.control().consumer.head.load(Ordering::Acquire);
        if head < self.head_seen {
            return Err(RingError::Corrupt("consumer head moved backwards"));
        }
        if head > self.published {
            return Err(RingError::Corrupt("consumer head beyond published tail"));
        }
        self.head_seen = head;
        Ok(())
    }

    /// Free bytes as of the last look at the consumer.
    fn free_cached(&self) -> usize {
        self.ring.capacity - (self.tail - self.head_seen) as usize
    }

    /// Whether at least `bytes` are free. Looks at the consumer's index (another
    /// core's cache line) only when the last look does not already show enough room.
    pub fn has_free(&mut self, bytes: usize) -> Result<bool, RingError> {
        if self.free_cached() >= bytes {
            return Ok(true);
        }
        self.refresh_head()?;
        Ok(self.free_cached() >= bytes)
    }

    /// Free bytes now.
    pub fn free_bytes(&mut self) -> Result<usize, RingError> {
        self.refresh_head()?;
        Ok(self.free_cached())
    }

    /// Whether frames are written but not yet published.
    pub fn has_unpublished(&self) -> bool {
        self.tail != self.published
    }

    /// Append a frame whose payload is filled by `fill` in place. Returns `Ok(false)`
    /// when the ring is full (nothing written).
    pub fn try_push_with(
        &mut self,
        mut header: Header,
        payload_len: usize,
        fill: impl FnOnce(&mut [u8]),
    ) -> Result<bool, RingError> {
        let need = frame_size(payload_len);
        assert!(
            need <= self.ring.max_frame_bytes(),
            "frame larger than the ring allows"
        );
        let offset = (self.tail as usize) & (self.ring.capacity - 1);
        let contiguous = self.ring.capacity - offset;
        let pad = if need > contiguous { contiguous } else { 0 };
        if self.free_cached() < pad + need {
            self.refresh_head()?;
            if self.free_cached() < pad + need {
                return Ok(false);
            }
        }
        if pad > 0 {
            let pad_header = Header {
                magic: FRAME_MAGIC,
                payload_len: (pad - HEADER_SIZE) as u32,
                flags: FLAG_PAD,
                ..Header::default()
            };
            self.ring
                .write_bytes(offset, bytemuck::bytes_of(&pad_header));
            self.tail += pad as u64;
        }
        let offset = (self.tail as usize) & (self.ring.capacity - 1);
        header.magic = FRAME_MAGIC;
        header.payload_len = payload_len as u32;
        self.ring.write_bytes(offset, bytemuck::bytes_of(&header));
        fill(self.ring.data_mut(offset + HEADER_SIZE, payload_len));
        self.tail += need as u64;
        debug_assert_eq!(self.tail % FRAME_ALIGN as u64, 0);
        Ok(true)
    }

    /// Append a frame with `payload`. `Ok(false)` when the ring is full.
    pub fn try_push(&mut self, header: Header, payload: &[u8]) -> Result<bool, RingError> {
        self.try_push_with(header, payload.len(), |dst| dst.copy_from_slice(payload))
    }

    /// Position after the last written frame (a monotonic byte count), for
    /// [`publish_to`](Self::publish_to).
    pub fn tail_position(&self) -> u64 {
        self.tail
    }

    /// Position up to which frames are visible to the consumer.
    pub fn published_position(&self) -> u64 {
        self.published
    }

    /// Make the frames written before `position` (a value of
    /// [`tail_position`](Self::tail_position) taken after writing a frame) visible,
    /// and keep later ones hidden: replies that wait for the log are held this way.
    pub fn publish_to(&mut self, position: u64) {
        assert!(position <= self.tail, "publish beyond the written tail");
        assert!(
            position.is_multiple_of(FRAME_ALIGN as u64),
            "publish position misaligned"
        );
        if position > self.published {
            self.ring
                .control()
                .producer
                .tail
                .store(position, Ordering::Release);
            self.published = position;
        }
    }

    /// Forget every written but unpublished frame (the consumer never saw them).
    pub fn discard_unpublished(&mut self) {
        self.tail = self.published;
    }

    /// Make every written frame visible to the consumer.
    pub fn publish(&mut self) {
        if self.tail != self.published {
            self.ring
                .control()
                .producer
                .tail
                .store(self.tail, Ordering::Release);
            self.published = self.tail;
        }
    }
}

/// The reading end of a ring.
#[derive(Debug)]
pub struct Consumer {
    ring: RawRing,
    head: u64,
    released: u64,
    tail_seen: u64,
}

impl Consumer {
    /// The consumer of `ring`, resuming at the ring's current head.
    pub fn new(ring: RawRing) -> Consumer {
        let head = ring.control().consumer.head.load(Ordering::Acquire);
        Consumer {
            ring,
            head,
            released: head,
            tail_seen: head,
        }
    }

    /// The ring this consumer reads.
    pub fn ring(&self) -> &RawRing {
        &self.ring
    }

    fn refresh_tail(&mut self) -> Result<(), RingError> {
        let tail = self.ring.control().producer.tail.load(Ordering::Acquire);
        if tail < self.tail_seen {
            return Err(RingError::Corrupt("producer tail moved backwards"));
        }
        if tail - self.released > self.ring.capacity as u64 {
            return Err(RingError::Corrupt("producer tail beyond ring capacity"));
        }
        if !tail.is_multiple_of(FRAME_ALIGN as u64) {
            return Err(RingError::Corrupt("producer tail misaligned"));
        }
        self.tail_seen = tail;
        Ok(())
    }

    /// Bytes of frames waiting (as of the last read of the producer's tail).
    pub fn queued_bytes(&self) -> u64 {
        self.tail_seen - self.head
    }

    /// Whether a frame is waiting (re-reads the producer's tail).
    pub fn has_frames(&mut self) -> Result<bool, RingError> {
        if self.head != self.tail_seen {
            return Ok(true);
        }
        self.refresh_tail()?;
        Ok(self.head != self.tail_seen)
    }

    /// Copy the next frame out of the ring: its header is returned and its payload
    /// replaces the contents of `payload`. `Ok(None)` when the ring is empty. The frame
    /// is validated structurally (magic, flags, bounds); its meaning is the caller's to
    /// check. Consumed space returns to the producer at [`release`].
    ///
    /// [`release`]: Consumer::release
    pub fn pop(&mut self, payload: &mut Vec<u8>) -> Result<Option<Header>, RingError> {
        loop {
            if self.head == self.tail_seen {
                self.refresh_tail()?;
                if self.head == self.tail_seen {
                    return Ok(None);
                }
            }
            let available = (self.tail_seen - self.head) as usize;
            let offset = (self.head as usize) & (self.ring.capacity - 1);
            let contiguous = self.ring.capacity - offset;
            if available < HEADER_SIZE {
                return Err(RingError::Corrupt("partial frame header"));
            }
            let mut raw = [0u8; HEADER_SIZE];
            self.ring.read_bytes(offset, &mut raw);
            let header: Header = bytemuck::pod_read_unaligned(&raw);
            if header.magic != FRAME_MAGIC {
                return Err(RingError::Corrupt("bad frame magic"));
            }
            if header.flags & !FLAGS_KNOWN != 0 {
                return Err(RingError::Corrupt("unknown frame flags"));
            }
            if header.is_pad() {
                if header.payload_len as usize != contiguous - HEADER_SIZE || available < contiguous
                {
                    return Err(RingError::Corrupt("bad pad frame"));
                }
                self.head += contiguous as u64;
                continue;
            }
            let len = header.payload_len as usize;
            if len > self.ring.max_payload_bytes() {
                return Err(RingError::Corrupt("frame longer than the ring allows"));
            }
            let size = frame_size(len);
            if size > available || size > contiguous {
                return Err(RingError::Corrupt("frame extends past published data"));
            }
            payload.clear();
            payload.resize(len, 0);
            self.ring.read_bytes(offset + HEADER_SIZE, payload);
            self.head += size as u64;
            return Ok(Some(header));
        }
    }

    /// Return consumed space to the producer.
    pub fn release(&mut self) {
        if self.head != self.released {
            self.ring
                .control()
                .consumer
                .head
                .store(self.head, Ordering::Release);
            self.released = self.head;
        }
    }
}

/// Heap memory for rings used inside one process (tests, network connections).
#[derive(Debug)]
pub struct HeapRing {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

// SAFETY: the allocation is owned by this value and only reached through ring handles
// that use atomics and byte copies.
unsafe impl Send for HeapRing {}
// SAFETY: as above; no `&mut` access to the allocation is ever created from `&HeapRing`.
unsafe impl Sync for HeapRing {}
impl RingMemory for HeapRing {}

impl Drop for HeapRing {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with `layout` in `HeapRing::pair`.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

impl HeapRing {
    /// A fresh ring of `capacity` bytes in heap memory, as a producer and a consumer.
    pub fn pair(capacity: usize) -> (Producer, Consumer) {
        assert!(capacity.is_power_of_two() && capacity >= RING_BYTES_MIN);
        let layout = std::alloc::Layout::from_size_align(RING_CONTROL_SIZE + capacity, 4096)
            .expect("ring layout");
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory allocating a ring");
        let keep: Arc<dyn RingMemory> = Arc::new(HeapRing { ptr, layout });
        // SAFETY: the allocation holds a zeroed control block (a valid RingControl: all
        // atomics zero) followed by `capacity` bytes, 4096-aligned, and lives as long as
        // `keep`, which every handle holds.
        let ring = unsafe { RawRing::new(ptr, ptr.add(RING_CONTROL_SIZE), capacity, keep) };
        (Producer::new(ring.clone()), Consumer::new(ring))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn req(id: u64) -> Header {
        Header::request(id, 7, 0, 0)
    }

    #[test]
    fn push_pop_in_order() {
        let (mut p, mut c) = HeapRing::pair(RING_BYTES_MIN);
        let mut buf = Vec::new();
        assert_eq!(c.pop(&mut buf).unwrap(), None);
        for i in 0..10u64 {
            assert!(p.try_push(req(i), &i.to_le_bytes()).unwrap());
        }
        assert_eq!(
            c.pop(&mut buf).unwrap(),
            None,
            "nothing visible before publish"
        );
        p.publish();
        for i in 0..10u64 {
            let h = c.pop(&mut buf).unwrap().expect("frame");
            assert_eq!(h.request_id, i);
            assert_eq!(buf, i.to_le_bytes());
        }
        assert_eq!(c.pop(&mut buf).unwrap(), None);
    }

    #[test]
    fn wraps_around_with_random_sizes() {
        let (mut p, mut c) = HeapRing::pair(RING_BYTES_MIN);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut next_write = 0u64;
        let mut next_read = 0u64;
        let mut buf = Vec::new();
        for _ in 0..20_000 {
            if rng.gen_bool(0.55) {
                let len = rng.gen_range(0..3000usize);
                let body: Vec<u8> = (0..len).map(|i| (i as u64 ^ next_write) as u8).collect();
                if p.try_push(req(next_write), &body).unwrap() {
                    next_write += 1;
                }
                if rng.gen_bool(0.5) {
                    p.publish();
                }
            } else if let Some(h) = c.pop(&mut buf).unwrap() {
                assert_eq!(h.request_id, next_read);
                assert!(buf
                    .iter()
                    .enumerate()
                    .all(|(i, b)| *b == (i as u64 ^ next_read) as u8));
                next_read += 1;
                if rng.gen_bool(0.5) {
                    c.release();
                }
            }
        }
        assert!(next_read > 1000, "the ring wrapped many times");
    }

    #[test]
    fn publish_to_shows_a_prefix_and_discard_forgets_the_rest() {
        let (mut p, mut c) = HeapRing::pair(RING_BYTES_MIN);
        let mut buf = Vec::new();
        let mut after = Vec::new();
        for i in 0..4u64 {
            assert!(p.try_push(req(i), &i.to_le_bytes()).unwrap());
            after.push(p.tail_position());
        }
        p.publish_to(after[1]);
        assert_eq!(p.published_position(), after[1]);
        assert_eq!(c.pop(&mut buf).unwrap().map(|h| h.request_id), Some(0));
        assert_eq!(c.pop(&mut buf).unwrap().map(|h| h.request_id), Some(1));
        assert_eq!(c.pop(&mut buf).unwrap(), None, "held frames stay hidden");
        p.publish_to(after[0]); // behind what is published: nothing changes
        assert_eq!(p.published_position(), after[1]);
        p.discard_unpublished();
        assert_eq!(p.tail_position(), after[1]);
        assert!(p.try_push(req(9), b"x").unwrap());
        p.publish();
        assert_eq!(c.pop(&mut buf).unwrap().map(|h| h.request_id), Some(9));
        assert_eq!(c.pop(&mut buf).unwrap(), None);
    }

    #[test]
    fn full_ring_pushes_back_until_released() {
        let (mut p, mut c) = HeapRing::pair(RING_BYTES_MIN);
        let payload = vec![1u8; 1000];
        let mut pushed = 0;
        while p.try_push(req(pushed), &payload).unwrap() {
            pushed += 1;
        }
        assert_eq!(pushed as usize, RING_BYTES_MIN / frame_size(1000));
        p.publish();
        let mut buf = Vec::new();
        assert!(c.pop(&mut buf).unwrap().is_some());
        assert!(
            !p.try_push(req(pushed), &payload).unwrap(),
            "space not yet released"
        );
        c.release();
        assert!(p.try_push(req(pushed), &payload).unwrap());
    }

    #[test]
    fn corrupt_indices_are_reported_not_trusted() {
        let (mut p, mut c) = HeapRing::pair(RING_BYTES_MIN);
        p.try_push(req(1), b"x").unwrap();
        p.publish();
        // A hostile producer claims more than the ring holds.
        c.ring()
            .control()
            .producer
            .tail
            .store(u64::MAX - 31, Ordering::Release);
        let mut buf = Vec::new();
        assert!(matches!(c.pop(&mut buf), Err(RingError::Corrupt(_))));
        // A hostile consumer claims to have read more than was written.
        p.ring()
            .control()
            .consumer
            .head
            .store(1 << 40, Ordering::Release);
        assert!(matches!(p.free_bytes(), Err(RingError::Corrupt(_))));
    }

    #[test]
    fn garbage_frames_are_reported() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for _ in 0..500 {
            let (mut p, mut c) = HeapRing::pair(RING_BYTES_MIN);
            p.try_push(req(1), &[0u8; 64]).unwrap();
            p.publish();
            let mut garbage = [0u8; 96];
            rng.fill(&mut garbage[..]);
            if rng.gen_bool(0.5) {
                garbage[..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
            }
            p.ring().write_bytes(0, &garbage);
            let mut buf = Vec::new();
            // Either a structurally valid frame or a corruption error; never a panic.
            match c.pop(&mut buf) {
                Ok(Some(h)) => assert!(h.payload_len as usize <= 64),
                Ok(None) => unreachable!("a frame was published"),
                Err(RingError::Corrupt(_)) => {}
            }
        }
    }
}
