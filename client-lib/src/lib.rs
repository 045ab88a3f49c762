//! tabos client library: what a task links to call procedures on a tabos node.
//!
//! ```no_run
//! let mut client = tabos_client::Client::connect("/tmp/tabos.sock")?;
//! client.kv_put(b"greeting", b"hello")?;
//! assert_eq!(client.kv_get(b"greeting")?, Some(b"hello".to_vec()));
//! # Ok::<(), tabos_client::Error>(())
//! ```
//!
//! - [`Client`]: connect over the node's Unix socket and shared-memory rings; a
//!   synchronous [`Client::call`]; a pipelined [`Client::submit`] / [`Client::wait`].
//! - [`kv`](Client::kv_put) and [`status`](Client::status): typed wrappers.
//! - [`Client::query`]: read-only SQL over every table of every partition and node,
//!   and the servers' own state (see [`sql`]).
//! - [`Error`]: transport failure versus business [`Status`].

mod client;
mod error;
pub mod fs;
mod ipc;
mod link_net;
#[cfg(feature = "rdma")]
mod link_rdma;
mod link_shm;
mod sched;
pub mod sql;
mod typed;

pub use client::{is_network_target, Client, Completion, ConnectOptions};
pub use error::Error;
pub use tabos_procs::builtin::PartitionStats;
pub use tabos_procs::ids;
pub use tabos_transport::Status;

/// The IPC client types and argument encoders (paper §4.3).
pub use ipc::{
    multicast_args, recv_args, recv_batch_args, send_args, timeout_ms, Message,
    MULTICAST_RECEIVERS_MAX,
};

/// The scheduler's client types (paper §4.2).
pub use sched::{SchedListing, SubmitAttempt};
pub use tabos_procs::sched::{
    Completed, Page, Placement, Policy, Submitted, TaskInfo, TaskState, WorkerInfo,
};

/// Socket used when neither `--connect` nor `TABOS_CONNECT` names one.
pub const DEFAULT_SOCKET: &str = "/tmp/tabos.sock";
