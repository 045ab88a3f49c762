//! The error a failed consistency check reports.

use std::fmt;

/// A table's indexes disagree with its rows, or it holds more rows than allowed.
/// Only tests and debug checks produce it; it always means a bug in the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsistencyError {
    /// Name of the table that failed the check.
    pub table: &'static str,
    /// What is wrong, for a human.
    pub what: String,
}

impl fmt::Display for ConsistencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "table {}: {}", self.table, self.what)
    }
}

impl std::error::Error for ConsistencyError {}
