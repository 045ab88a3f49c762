//! tabos transport: everything that moves bytes between a task and a partition.
//!
//! - [`wire`]: the one frame format (a fixed 32-byte `#[repr(C)]` header, then the
//!   payload) and the stable status codes that cross it.
//! - [`ring`]: a bounded single-producer single-consumer byte ring of frames over
//!   memory that the other side may scribble on; the consumer copies each frame out
//!   once and validates the copy.
//! - [`segment`]: the sealed memfd that holds one client's request and response rings,
//!   one pair per partition.
//! - [`doorbell`]: futex and eventfd wake-ups used only after a bounded spin.
//! - [`handshake`]: the Unix-socket handshake (SO_PEERCRED, SCM_RIGHTS).
//! - [`net`]: frames over a byte stream and the network handshake (shared secret).
//!
//! All `unsafe` code of tabos lives here, each block with its `// SAFETY:` argument.

pub mod doorbell;
pub mod handshake;
pub mod net;
#[cfg(feature = "rdma")]
pub mod rdma;
pub mod ring;
pub mod segment;
pub mod wire;

pub use wire::{Header, Status};
