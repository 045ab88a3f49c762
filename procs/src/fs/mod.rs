//! The filesystem (paper §4.4, figure 9).

pub mod ids {
    //! Stable procedure ids of this service (200..).
}

use crate::schema::{DbLimits, PartitionDb};
use tabos_engine::{ConsistencyError, Registry, Schema};

/// This service's tables on one partition.
#[derive(Debug, Default)]
pub struct FsTables {}

impl FsTables {
    /// Empty tables.
    pub fn new(_limits: &DbLimits, _partition: u32, _partition_count: u32, _node_id: u32) -> Self {
        FsTables {}
    }
}

impl Schema for FsTables {
    fn commit(&mut self) {}

    fn rollback(&mut self) {}

    fn check_consistency(&self) -> Result<(), ConsistencyError> {
        Ok(())
    }
}

/// Register this service's procedures.
pub fn register(_registry: &mut Registry<PartitionDb>) {}
