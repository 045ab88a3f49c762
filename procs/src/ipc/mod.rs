//! Inter-process communication (paper §4.3).

pub mod ids {
    //! Stable procedure ids of this service (150..).
}

use crate::schema::{DbLimits, PartitionDb};
use tabos_engine::{ConsistencyError, Registry, Schema};

/// This service's tables on one partition.
#[derive(Debug, Default)]
pub struct IpcTables {}

impl IpcTables {
    /// Empty tables.
    pub fn new(_limits: &DbLimits) -> Self {
        IpcTables {}
    }
}

impl Schema for IpcTables {
    fn commit(&mut self) {}

    fn rollback(&mut self) {}

    fn check_consistency(&self) -> Result<(), ConsistencyError> {
        Ok(())
    }
}

/// Register this service's procedures.
pub fn register(_registry: &mut Registry<PartitionDb>) {}
