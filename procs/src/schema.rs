//! The tables of one partition: the built-in key-value tables and each service's
//! tables, with the limits they are checked against.

use crate::builtin::KvRow;
use crate::fs::FsTables;
use crate::ipc::IpcTables;
use crate::sched::SchedTables;
use tabos_engine::{ConsistencyError, Schema, Scope, Table};

/// Limits and cluster-wide settings of a partition's tables (checked on every write).
#[derive(Clone, Copy, Debug)]
pub struct DbLimits {
    /// Rows of the partitioned key-value table.
    pub kv_rows_max: usize,
    /// Rows of the replicated key-value table.
    pub rkv_rows_max: usize,
    /// Workers per partition.
    pub workers_max: usize,
    /// Tasks (assigned and queued) per partition.
    pub tasks_max: usize,
    /// Largest IPC message.
    pub message_bytes_max: usize,
    /// Most messages queued for one receiver.
    pub queue_len_max: usize,
    /// Messages per partition, all receivers together.
    pub messages_max: usize,
    /// Block size of localized files (cluster-wide).
    pub block_bytes_local: usize,
    /// Block size of parallel files (cluster-wide).
    pub block_bytes_parallel: usize,
    /// Largest file.
    pub file_bytes_max: u64,
    /// Directory entries per partition.
    pub fs_entries_max: usize,
    /// File blocks per partition (localized and parallel together, each table).
    pub fs_blocks_max: usize,
}

impl Default for DbLimits {
    fn default() -> Self {
        DbLimits {
            kv_rows_max: 10_000_000,
            rkv_rows_max: 100_000,
            workers_max: 1_000_000,
            tasks_max: 10_000_000,
            message_bytes_max: 1 << 20,
            queue_len_max: 100_000,
            messages_max: 10_000_000,
            block_bytes_local: 2048,
            block_bytes_parallel: 8192,
            file_bytes_max: 1 << 30,
            fs_entries_max: 10_000_000,
            fs_blocks_max: 50_000_000,
        }
    }
}

/// Everything one partition owns. Owned and touched by its partition thread only.
#[derive(Debug)]
pub struct PartitionDb {
    /// Limits the procedures check.
    pub limits: DbLimits,
    /// Key-value rows partitioned on the key (tests and benchmarks).
    pub kv: Table<KvRow>,
    /// Key-value rows replicated to every partition.
    pub rkv: Table<KvRow>,
    /// The scheduler's tables.
    pub sched: SchedTables,
    /// The IPC tables.
    pub ipc: IpcTables,
    /// The filesystem's tables.
    pub fs: FsTables,
    /// Replicated writes (procedures of `Scope::Broadcast` that changed the state)
    /// this partition applied, counted from its creation: every partition of a node
    /// applies them in one order, so this is the position in that order. Recovery
    /// finds a replicated write that a crash left on some partitions only by it.
    pub replicated_writes: u64,
}

impl PartitionDb {
    /// Empty tables with the given limits, for global partition `partition` of
    /// `partition_count`; `nodes[p]` is the node that owns partition `p`.
    pub fn new(
        limits: DbLimits,
        partition: u32,
        partition_count: u32,
        nodes: &[u32],
    ) -> PartitionDb {
        assert_eq!(
            nodes.len(),
            partition_count as usize,
            "one node id per partition"
        );
        PartitionDb {
            limits,
            kv: Table::new("kv", limits.kv_rows_max),
            rkv: Table::new("rkv", limits.rkv_rows_max),
            sched: SchedTables::new(&limits),
            ipc: IpcTables::new(&limits),
            fs: FsTables::new(&limits, partition, partition_count, nodes),
            replicated_writes: 0,
        }
    }
}

impl PartitionDb {
    /// Count a committed invocation of a procedure of `scope` that `changed` the state
    /// if it was a replicated write. Called after every invocation that is logged and
    /// after every replayed one, so live and recovered counts agree.
    pub fn count_replicated(&mut self, scope: Scope, changed: bool) {
        if changed && scope == Scope::Broadcast {
            self.replicated_writes += 1;
        }
    }
}

impl Schema for PartitionDb {
    fn commit(&mut self) {
        self.kv.commit();
        self.rkv.commit();
        self.sched.commit();
        self.ipc.commit();
        self.fs.commit();
    }

    fn rollback(&mut self) {
        self.kv.rollback();
        self.rkv.rollback();
        self.sched.rollback();
        self.ipc.rollback();
        self.fs.rollback();
    }

    fn has_uncommitted(&self) -> bool {
        self.kv.has_uncommitted()
            || self.rkv.has_uncommitted()
            || self.sched.has_uncommitted()
            || self.ipc.has_uncommitted()
            || self.fs.has_uncommitted()
    }

    fn check_consistency(&self) -> Result<(), ConsistencyError> {
        self.kv.check_consistency()?;
        self.rkv.check_consistency()?;
        self.sched.check_consistency()?;
        self.ipc.check_consistency()?;
        self.fs.check_consistency()
    }
}
