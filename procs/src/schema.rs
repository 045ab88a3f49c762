//! The tables of one partition.

use crate::builtin::KvRow;
use tabos_engine::{ConsistencyError, Schema, Table};

/// Row limits of a partition's tables (configured per node, checked on insert).
#[derive(Clone, Copy, Debug)]
pub struct DbLimits {
    /// Rows of the partitioned key-value table.
    pub kv_rows_max: usize,
    /// Rows of the replicated key-value table.
    pub rkv_rows_max: usize,
}

impl Default for DbLimits {
    fn default() -> Self {
        DbLimits {
            kv_rows_max: 10_000_000,
            rkv_rows_max: 100_000,
        }
    }
}

/// Everything one partition owns. Owned and touched by its partition thread only.
#[derive(Debug)]
pub struct PartitionDb {
    /// Key-value rows partitioned on the key (tests and benchmarks).
    pub kv: Table<KvRow>,
    /// Key-value rows replicated to every partition.
    pub rkv: Table<KvRow>,
}

impl PartitionDb {
    /// Empty tables with the given limits.
    pub fn new(limits: DbLimits) -> PartitionDb {
        PartitionDb {
            kv: Table::new("kv", limits.kv_rows_max),
            rkv: Table::new("rkv", limits.rkv_rows_max),
        }
    }
}

impl Schema for PartitionDb {
    fn commit(&mut self) {
        self.kv.commit();
        self.rkv.commit();
    }

    fn rollback(&mut self) {
        self.kv.rollback();
        self.rkv.rollback();
    }

    fn check_consistency(&self) -> Result<(), ConsistencyError> {
        self.kv.check_consistency()?;
        self.rkv.check_consistency()
    }
}
