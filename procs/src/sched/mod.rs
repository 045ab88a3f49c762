//! The scheduler (paper §4.2, figures 2-4).

pub mod ids {
    //! Stable procedure ids of this service (100..).
}

use crate::schema::{DbLimits, PartitionDb};
use tabos_engine::{ConsistencyError, Registry, Schema};

/// This service's tables on one partition.
#[derive(Debug, Default)]
pub struct SchedTables {}

impl SchedTables {
    /// Empty tables.
    pub fn new(_limits: &DbLimits) -> Self {
        SchedTables {}
    }
}

impl Schema for SchedTables {
    fn commit(&mut self) {}

    fn rollback(&mut self) {}

    fn check_consistency(&self) -> Result<(), ConsistencyError> {
        Ok(())
    }
}

/// Register this service's procedures.
pub fn register(_registry: &mut Registry<PartitionDb>) {}
