//! Stable procedure ids: part of the wire protocol. Add, never renumber.

/// Does nothing; replies with an empty payload.
pub const NULL: u32 = 1;
/// Replies with its arguments.
pub const ECHO: u32 = 2;
/// Partition statistics; answered by the partition loop itself (see the server).
pub const SYS_STATS: u32 = 3;
/// The cluster's partition map (the paper's Map, as the node knows it); answered by
/// the partition loop itself.
pub const SYS_CLUSTER_MAP: u32 = 4;
/// Snapshot the partition now (`tabos admin snapshot`); answered by the partition loop
/// once the snapshot is durable, with a [`SnapshotReply`](crate::builtin::SnapshotReply).
pub const SYS_SNAPSHOT: u32 = 5;
/// `kv_put(key, value)` on the key's partition.
pub const KV_PUT: u32 = 10;
/// `kv_get(key)` on the key's partition.
pub const KV_GET: u32 = 11;
/// `kv_delete(key)` on the key's partition.
pub const KV_DELETE: u32 = 12;
/// `rkv_put(key, value)` into the replicated table, on every partition in one order.
pub const RKV_PUT: u32 = 13;
/// `rkv_get(key)` from the replicated table, on any partition.
pub const RKV_GET: u32 = 14;

/// Ids below this are reserved for procedures the partition loop answers itself.
pub const SYSTEM_MAX: u32 = 9;

// Scheduler (paper §4.2, figures 2-4): ids 100..=149, defined in `sched::ids`.
// IPC (paper §4.3): ids 150..=199, defined in `ipc::ids`.
// Filesystem (paper §4.4, figure 9): ids 200..=299, defined in `fs::ids`.
pub use crate::fs::ids as fs;
pub use crate::ipc::ids as ipc;
pub use crate::sched::ids as sched;
