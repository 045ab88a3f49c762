//! What tabos is compared with, measured in the same run on the same cores:
//! - [`syscall`]: the cheapest kernel service, `getppid`;
//! - [`tcp`]: a blocking loopback TCP echo round trip between two pinned threads.

pub mod syscall;
pub mod tcp;
