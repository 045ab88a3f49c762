//! What tabos is compared with, measured in the same run on the same cores:
//! - [`syscall`]: the cheapest kernel service, `getppid`;
//! - [`tcp`]: a blocking loopback TCP echo round trip between two pinned threads;
//! - [`ext4`]: the Linux filesystem (open, pread/pwrite, creat, unlink, a stat walk).

pub mod ext4;
pub mod syscall;
pub mod tcp;
