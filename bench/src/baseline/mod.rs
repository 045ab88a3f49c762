//! What tabos is compared with, measured in the same run on the same cores:
//! - [`syscall`]: the cheapest kernel service, `getppid`;
//! - [`tcp`]: raw loopback TCP echoes between pinned threads, with blocking sockets
//!   and busy-polling ones (the paper's bare-bones TCP/IP);
//! - [`grpc`]: tonic unary calls over HTTP/2 without TLS (the paper's gRPC);
//! - [`ext4`]: the Linux filesystem (open, pread/pwrite, creat, unlink, a stat walk);
//! - [`postgres`]: PostgreSQL (the paper's VoltDB): the services as PL/pgSQL functions
//!   called through prepared statements over loopback TCP.

pub mod ext4;
pub mod grpc;
pub mod postgres;
pub mod syscall;
pub mod tcp;
