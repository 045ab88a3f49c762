//! The shared-memory segment of one client: a sealed memfd holding a header page and,
//! for each partition, a request ring (client to partition) and a response ring
//! (partition to client).
//!
//! The server creates the memfd, sizes it, seals it against shrinking and growing (so
//! a client can never make the server's mapping fault), writes the header and passes
//! the fd over the Unix socket. The client checks the seals and the size before it maps.

use crate::ring::{RawRing, RingMemory, RING_BYTES_MIN, RING_CONTROL_SIZE};
use memmap2::{MmapOptions, MmapRaw};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

const SEGMENT_MAGIC: u64 = 0x5442_4F53_5345_474D; // "TBOSSEGM"
const SEGMENT_VERSION: u32 = 1;
const HEADER_PAGE: usize = 4096;
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_PARTITIONS: usize = 12;
const OFF_RING_BYTES: usize = 16;
const OFF_CLIENT_WAITING: usize = 128;
const OFF_CLIENT_FUTEX: usize = 256;

/// Most partitions one node serves (also bounds the fds passed in the handshake).
pub const PARTITIONS_MAX: u32 = 128;

/// Shape of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentShape {
    /// Number of request/response ring pairs.
    pub partition_count: u32,
    /// Data bytes of each ring (a power of two, at least 64 KiB).
    pub ring_bytes: usize,
}

impl SegmentShape {
    /// Check the shape; the error says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.partition_count == 0 || self.partition_count > PARTITIONS_MAX {
            return Err(format!("partition count must be 1..={PARTITIONS_MAX}"));
        }
        if !self.ring_bytes.is_power_of_two() || self.ring_bytes < RING_BYTES_MIN {
            return Err(format!(
                "ring size must be a power of two of at least {RING_BYTES_MIN} bytes, got {}",
                self.ring_bytes
            ));
        }
        Ok(())
    }

    fn ring_stride(&self) -> usize {
        RING_CONTROL_SIZE.next_multiple_of(4096) + self.ring_bytes
    }

    /// Total bytes of the memfd.
    pub fn total_bytes(&self) -> usize {
        HEADER_PAGE + 2 * self.partition_count as usize * self.ring_stride()
    }

    fn ring_offset(&self, index: usize) -> usize {
        HEADER_PAGE + index * self.ring_stride()
    }
}

/// A mapped segment.
#[derive(Debug)]
pub struct Segment {
    map: MmapRaw,
    fd: OwnedFd,
    shape: SegmentShape,
}

impl RingMemory for Segment {}

/// Why a received segment was refused.
#[derive(Debug)]
pub enum SegmentError {
    /// A system call failed.
    Io(io::Error),
    /// The memfd is not what the protocol requires.
    Invalid(String),
}

impl std::fmt::Display for SegmentError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SegmentError::Io(e) => write!(f, "shared-memory segment: {e}"),
            SegmentError::Invalid(why) => write!(f, "shared-memory segment refused: {why}"),
        }
    }
}

impl std::error::Error for SegmentError {}

impl From<io::Error> for SegmentError {
    fn from(e: io::Error) -> Self {
        SegmentError::Io(e)
    }
}

const SEALS_REQUIRED: libc::c_int = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

impl Segment {
    /// Create, size, seal and map a new segment (server side).
    pub fn create(shape: SegmentShape) -> Result<Arc<Segment>, SegmentError> {
        shape.validate().map_err(SegmentError::Invalid)?;
        let name = c"tabos-client";
        // SAFETY: `name` is a valid C string; a non-negative result is a new fd we own.
        let raw = unsafe {
            libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if raw < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `raw` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let size = shape.total_bytes();
        // SAFETY: plain syscalls on our own fd.
        if unsafe { libc::ftruncate(fd.as_raw_fd(), size as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: as above.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, SEALS_REQUIRED) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        let map = MmapOptions::new().len(size).map_raw(&fd)?;
        let segment = Segment { map, fd, shape };
        segment
            .word64(OFF_RING_BYTES)
            .store(shape.ring_bytes as u64, Ordering::Relaxed);
        segment
            .word32(OFF_VERSION)
            .store(SEGMENT_VERSION, Ordering::Relaxed);
        segment
            .word32(OFF_PARTITIONS)
            .store(shape.partition_count, Ordering::Relaxed);
        segment
            .word64(OFF_MAGIC)
            .store(SEGMENT_MAGIC, Ordering::Release);
        Ok(Arc::new(segment))
    }

    /// Check and map a segment received from a server (client side): it must be
    /// sealed, of the expected size, and carry the expected header.
    pub fn open(fd: OwnedFd, shape: SegmentShape) -> Result<Arc<Segment>, SegmentError> {
        shape.validate().map_err(SegmentError::Invalid)?;
        // SAFETY: plain syscall on a descriptor we own.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        if seals < 0 {
            return Err(io::Error::last_os_error().into());
        }
        if seals & SEALS_REQUIRED != SEALS_REQUIRED {
            return Err(SegmentError::Invalid(format!(
                "memfd seals {seals:#x} lack shrink/grow seals"
            )));
        }
        // SAFETY: `stat` is plain data, fully written by fstat on success.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(io::Error::last_os_error().into());
        }
        if st.st_size as usize != shape.total_bytes() {
            return Err(SegmentError::Invalid(format!(
                "memfd is {} bytes, expected {}",
                st.st_size,
                shape.total_bytes()
            )));
        }
        let map = MmapOptions::new().len(shape.total_bytes()).map_raw(&fd)?;
        let segment = Segment { map, fd, shape };
        if segment.word64(OFF_MAGIC).load(Ordering::Acquire) != SEGMENT_MAGIC
            || segment.word32(OFF_VERSION).load(Ordering::Relaxed) != SEGMENT_VERSION
            || segment.word32(OFF_PARTITIONS).load(Ordering::Relaxed) != shape.partition_count
            || segment.word64(OFF_RING_BYTES).load(Ordering::Relaxed) != shape.ring_bytes as u64
        {
            return Err(SegmentError::Invalid(
                "segment header does not match the handshake".into(),
            ));
        }
        Ok(Arc::new(segment))
    }

    fn word32(&self, offset: usize) -> &AtomicU32 {
        assert!(offset + 4 <= HEADER_PAGE && offset.is_multiple_of(4));
        // SAFETY: in the header page of a live, page-aligned mapping; aligned (asserted);
        // an AtomicU32 has the layout of u32 and tolerates concurrent access.
        unsafe { AtomicU32::from_ptr(self.map.as_mut_ptr().add(offset).cast()) }
    }

    fn word64(&self, offset: usize) -> &AtomicU64 {
        assert!(offset + 8 <= HEADER_PAGE && offset.is_multiple_of(8));
        // SAFETY: as in `word32`, for an aligned u64.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(offset).cast()) }
    }

    /// The segment's shape.
    pub fn shape(&self) -> SegmentShape {
        self.shape
    }

    /// Set while the client sleeps waiting for responses.
    pub fn client_waiting(&self) -> &AtomicU32 {
        self.word32(OFF_CLIENT_WAITING)
    }

    /// The futex word the client sleeps on; partitions bump it to wake the client.
    pub fn client_futex(&self) -> &AtomicU32 {
        self.word32(OFF_CLIENT_FUTEX)
    }

    fn ring(self: &Arc<Self>, index: usize) -> RawRing {
        assert!(index < 2 * self.shape.partition_count as usize);
        let offset = self.shape.ring_offset(index);
        assert!(offset + self.shape.ring_stride() <= self.map.len());
        let keep: Arc<dyn RingMemory> = self.clone();
        // SAFETY: the control block (page-aligned) and the data area that follows it
        // lie inside the mapping (asserted), belong to this ring only, and the mapping
        // lives as long as `keep`. ring_bytes was validated as a power of two >= minimum.
        unsafe {
            let base = self.map.as_mut_ptr().add(offset);
            RawRing::new(
                base,
                base.add(RING_CONTROL_SIZE.next_multiple_of(4096)),
                self.shape.ring_bytes,
                keep,
            )
        }
    }

    /// The ring carrying requests to `partition`.
    pub fn request_ring(self: &Arc<Self>, partition: u32) -> RawRing {
        self.ring(2 * partition as usize)
    }

    /// The ring carrying responses from `partition`.
    pub fn response_ring(self: &Arc<Self>, partition: u32) -> RawRing {
        self.ring(2 * partition as usize + 1)
    }
}

impl AsFd for Segment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ring::{Consumer, Producer};
    use crate::wire::Header;

    #[test]
    fn both_mappings_see_the_same_rings() {
        let shape = SegmentShape {
            partition_count: 2,
            ring_bytes: RING_BYTES_MIN,
        };
        let server = Segment::create(shape).unwrap();
        let fd = server.as_fd().try_clone_to_owned().unwrap();
        let client = Segment::open(fd, shape).unwrap();
        let mut p = Producer::new(client.request_ring(1));
        let mut c = Consumer::new(server.request_ring(1));
        p.try_push(Header::request(9, 1, 1, 3), b"abc").unwrap();
        p.publish();
        let mut buf = Vec::new();
        assert_eq!(c.pop(&mut buf).unwrap().unwrap().request_id, 9);
        assert_eq!(buf, b"abc");
    }

    #[test]
    fn wrong_shape_or_unsealed_memfd_is_refused() {
        let shape = SegmentShape {
            partition_count: 2,
            ring_bytes: RING_BYTES_MIN,
        };
        let server = Segment::create(shape).unwrap();
        let fd = server.as_fd().try_clone_to_owned().unwrap();
        let other = SegmentShape {
            partition_count: 3,
            ring_bytes: RING_BYTES_MIN,
        };
        assert!(matches!(
            Segment::open(fd, other),
            Err(SegmentError::Invalid(_))
        ));
        // SAFETY: test-only syscall creating an fd we own.
        let raw = unsafe { libc::memfd_create(c"plain".as_ptr(), libc::MFD_CLOEXEC) };
        // SAFETY: fresh fd.
        let plain = unsafe { OwnedFd::from_raw_fd(raw) };
        assert!(matches!(
            Segment::open(plain, shape),
            Err(SegmentError::Invalid(_))
        ));
        assert!(SegmentShape {
            partition_count: 1,
            ring_bytes: 1000
        }
        .validate()
        .is_err());
    }
}
