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
pub const SYS_SNAPSHOT: u32 = 7;
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

/// `sql_scan(table id, cursor, max rows, max bytes)`: one bounded chunk of a table for
/// ad-hoc SQL (see `builtin::scan`).
pub const SQL_SCAN: u32 = 15;
/// Per-procedure counters of the partition; answered by the partition loop itself.
pub const SYS_PROCEDURES: u32 = 5;
/// The partition's client connections; answered by the partition loop itself.
pub const SYS_CONNECTIONS: u32 = 6;

/// The name of a procedure the partition loop answers itself, for the
/// `sys_procedures` table.
pub fn system_name(id: u32) -> Option<&'static str> {
    match id {
        SYS_STATS => Some("sys_stats"),
        SYS_CLUSTER_MAP => Some("sys_cluster_map"),
        SYS_PROCEDURES => Some("sys_procedures"),
        SYS_CONNECTIONS => Some("sys_connections"),
        SYS_SNAPSHOT => Some("sys_snapshot"),
        _ => None,
    }
}

/// Ids below this are reserved for procedures the partition loop answers itself.
pub const SYSTEM_MAX: u32 = 9;

// Scheduler (paper §4.2, figures 2-4): ids 100..=149, defined in `sched::ids`.
// IPC (paper §4.3): ids 150..=199, defined in `ipc::ids`.
// Filesystem (paper §4.4, figure 9): ids 200..=299, defined in `fs::ids`.
pub use crate::fs::ids as fs;
pub use crate::ipc::ids as ipc;
pub use crate::sched::ids as sched;

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids the partition loop answers itself must be distinct, below [`SYSTEM_MAX`],
    /// and clear of every registered procedure (two branches once both took id 5).
    #[test]
    fn system_ids_are_distinct_and_reserved() {
        let system = [
            NULL,
            ECHO,
            SYS_STATS,
            SYS_CLUSTER_MAP,
            SYS_SNAPSHOT,
            SYS_PROCEDURES,
            SYS_CONNECTIONS,
        ];
        let mut seen = std::collections::HashSet::new();
        for id in system {
            assert!(seen.insert(id), "procedure id {id} is used twice");
        }
        for id in [
            SYS_STATS,
            SYS_CLUSTER_MAP,
            SYS_SNAPSHOT,
            SYS_PROCEDURES,
            SYS_CONNECTIONS,
        ] {
            assert!(id < SYSTEM_MAX, "system id {id} not below SYSTEM_MAX");
            assert!(system_name(id).is_some(), "system id {id} has no name");
        }
        let registry = crate::registry();
        for def in registry.iter() {
            assert!(
                !seen.contains(&def.id) || def.id == NULL || def.id == ECHO,
                "registered procedure {} reuses system id {}",
                def.name,
                def.id
            );
        }
    }
}
