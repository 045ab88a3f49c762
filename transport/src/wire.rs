//! The wire format shared by every transport: a fixed 32-byte header, then
//! `payload_len` bytes of payload. Requests and responses use the same header; a
//! response echoes the request's `request_id`, `proc_id` and `partition` and carries a
//! [`Status`].

use bytemuck::{Pod, Zeroable};

/// First word of every frame; a frame without it is garbage.
pub const FRAME_MAGIC: u32 = 0x5442_4F53; // "TBOS"
/// Wire protocol version, checked in the handshake.
pub const PROTOCOL_VERSION: u32 = 1;
/// Size of [`Header`] in bytes.
pub const HEADER_SIZE: usize = 32;
/// Frames start on this boundary inside a ring.
pub const FRAME_ALIGN: usize = 32;

/// The frame is padding at the end of a ring; skip it.
pub const FLAG_PAD: u32 = 1 << 0;
/// The frame is a response.
pub const FLAG_RESPONSE: u32 = 1 << 1;
/// Every flag a valid frame may carry.
pub const FLAGS_KNOWN: u32 = FLAG_PAD | FLAG_RESPONSE;

/// The fixed-size frame header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Header {
    /// Always [`FRAME_MAGIC`].
    pub magic: u32,
    /// Bytes of payload after the header.
    pub payload_len: u32,
    /// Chosen by the client, echoed in the response.
    pub request_id: u64,
    /// Numeric id of the procedure (stable across releases).
    pub proc_id: u32,
    /// `0` in requests; a [`Status`] code in responses.
    pub status: u32,
    /// The partition that executes the request.
    pub partition: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
}

const _: () = assert!(std::mem::size_of::<Header>() == HEADER_SIZE);
const _: () = assert!(std::mem::align_of::<Header>() == 8);
const _: () = assert!(FRAME_ALIGN >= HEADER_SIZE && FRAME_ALIGN.is_power_of_two());

impl Header {
    /// A request header for `proc_id` on `partition`.
    pub fn request(request_id: u64, proc_id: u32, partition: u32, payload_len: u32) -> Header {
        Header {
            magic: FRAME_MAGIC,
            payload_len,
            request_id,
            proc_id,
            status: 0,
            partition,
            flags: 0,
        }
    }

    /// The response header to `request` with `status` and `payload_len` bytes.
    pub fn response_to(request: &Header, status: Status, payload_len: u32) -> Header {
        Header {
            magic: FRAME_MAGIC,
            payload_len,
            request_id: request.request_id,
            proc_id: request.proc_id,
            status: status as u32,
            partition: request.partition,
            flags: FLAG_RESPONSE,
        }
    }

    /// Whether the frame is end-of-ring padding.
    pub fn is_pad(&self) -> bool {
        self.flags & FLAG_PAD != 0
    }
}

/// Bytes a frame with `payload_len` bytes of payload occupies in a ring.
pub fn frame_size(payload_len: usize) -> usize {
    (HEADER_SIZE + payload_len).next_multiple_of(FRAME_ALIGN)
}

/// Outcome of a call. Stable numeric codes that cross the wire; never renumber.
///
/// `1..=99` say the request itself was refused; `100..` are business outcomes of a
/// procedure that ran and changed nothing.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// The procedure ran and committed.
    Ok = 0,
    /// No procedure has this id.
    UnknownProcedure = 1,
    /// The partition does not exist on this node.
    BadPartition = 2,
    /// The request or a reply exceeds the maximum payload.
    PayloadTooLarge = 3,
    /// The arguments do not decode.
    BadArgs = 4,
    /// The key routes to another partition.
    WrongPartition = 5,
    /// The server is shutting down.
    ShuttingDown = 6,
    /// The caller may not do this.
    PermissionDenied = 7,
    /// The frame itself is malformed.
    BadFrame = 8,
    /// The node that owns the partition is unreachable (set by the client library
    /// for calls in flight to a node that went away).
    NodeUnavailable = 9,
    /// The partition could not make a write durable (a log write or fdatasync failed)
    /// and refuses calls until it is restarted: fail-stop, never an acknowledgement of
    /// what it cannot keep. The server's log says why.
    StorageFailed = 10,
    /// No such row, key, file or user.
    NotFound = 100,
    /// The row already exists.
    AlreadyExists = 101,
    /// A table reached its configured maximum.
    TableFull = 102,
    /// Every worker is busy.
    NoCapacity = 103,
    /// A queue is empty.
    QueueEmpty = 104,
    /// A queue reached its configured maximum.
    QueueFull = 105,
    /// A wait ran out.
    Timeout = 106,
    /// The resource is in use (e.g. a worker with running tasks).
    Busy = 107,
    /// A path component is not a directory.
    NotADirectory = 108,
    /// The path names a directory where a file is needed.
    IsADirectory = 109,
    /// The directory is not empty.
    NotEmpty = 110,
    /// A name is longer than 255 bytes or a path longer than 4096 bytes.
    NameTooLong = 111,
    /// The path is malformed (empty name, `..` above the root, not UTF-8, ...).
    InvalidPath = 112,
    /// The write would pass the maximum file size.
    FileTooLarge = 113,
    /// A rename between two users' trees (they live on different partitions).
    CrossNamespace = 114,
}

impl Status {
    /// Every status, for tests and docs.
    pub const ALL: [Status; 26] = [
        Status::Ok,
        Status::UnknownProcedure,
        Status::BadPartition,
        Status::PayloadTooLarge,
        Status::BadArgs,
        Status::WrongPartition,
        Status::ShuttingDown,
        Status::PermissionDenied,
        Status::BadFrame,
        Status::NodeUnavailable,
        Status::StorageFailed,
        Status::NotFound,
        Status::AlreadyExists,
        Status::TableFull,
        Status::NoCapacity,
        Status::QueueEmpty,
        Status::QueueFull,
        Status::Timeout,
        Status::Busy,
        Status::NotADirectory,
        Status::IsADirectory,
        Status::NotEmpty,
        Status::NameTooLong,
        Status::InvalidPath,
        Status::FileTooLarge,
        Status::CrossNamespace,
    ];

    /// The status with code `code`, if any.
    pub fn from_code(code: u32) -> Option<Status> {
        Status::ALL.iter().copied().find(|s| *s as u32 == code)
    }

    /// A short human description.
    pub fn describe(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::UnknownProcedure => "unknown procedure",
            Status::BadPartition => "no such partition",
            Status::PayloadTooLarge => "payload too large",
            Status::BadArgs => "malformed arguments",
            Status::WrongPartition => "key belongs to another partition",
            Status::ShuttingDown => "server is shutting down",
            Status::PermissionDenied => "permission denied",
            Status::BadFrame => "malformed frame",
            Status::NodeUnavailable => "the node owning the partition is unreachable",
            Status::StorageFailed => {
                "the partition cannot make writes durable (log I/O failed); restart it"
            }
            Status::NotFound => "not found",
            Status::AlreadyExists => "already exists",
            Status::TableFull => "table full",
            Status::NoCapacity => "no worker has capacity",
            Status::QueueEmpty => "queue empty",
            Status::QueueFull => "queue full",
            Status::Timeout => "timed out",
            Status::Busy => "in use",
            Status::NotADirectory => "not a directory",
            Status::IsADirectory => "is a directory",
            Status::NotEmpty => "directory not empty",
            Status::NameTooLong => "name or path too long",
            Status::InvalidPath => "invalid path",
            Status::FileTooLarge => "file too large",
            Status::CrossNamespace => "cannot move between two users' trees",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (status {})", self.describe(), *self as u32)
    }
}

/// A stable 64-bit hash of a routing key (FNV-1a with a splitmix finaliser). Client
/// and server must agree on it forever: it decides which partition owns a row.
pub fn key_hash(key: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The partition that owns `key` among `partition_count` partitions.
pub fn partition_for_key(key: &[u8], partition_count: u32) -> u32 {
    assert!(partition_count > 0, "partition_count must be positive");
    (key_hash(key) % u64::from(partition_count)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::from_code(s as u32), Some(s));
        }
        assert_eq!(Status::from_code(99), None);
    }

    #[test]
    fn hash_is_stable() {
        // These values are part of the protocol: changing them moves every row.
        assert_eq!(key_hash(b""), key_hash(b""));
        assert_ne!(key_hash(b"a"), key_hash(b"b"));
        let spread: std::collections::HashSet<u32> = (0..1000u32)
            .map(|i| partition_for_key(&i.to_le_bytes(), 8))
            .collect();
        assert_eq!(spread.len(), 8);
    }

    #[test]
    fn frame_sizes_are_aligned() {
        assert_eq!(frame_size(0), 32);
        assert_eq!(frame_size(1), 64);
        assert_eq!(frame_size(32), 64);
        assert_eq!(frame_size(33), 96);
    }
}
