//! The whole state of one partition, seen as one transactional unit.

use crate::error::ConsistencyError;

/// A partition's state: usually a struct of [`Table`](crate::Table)s, defined by the
/// services that own them. [`execute`](crate::execute) commits or rolls back through it.
///
/// Implementations forward each call to every table they hold.
pub trait Schema: 'static {
    /// Make every mutation since the last commit or rollback permanent.
    fn commit(&mut self);
    /// Undo every mutation since the last commit or rollback.
    fn rollback(&mut self);
    /// Whether anything changed since the last commit or rollback. A transaction that
    /// commits with nothing changed is not written to the command log.
    fn has_uncommitted(&self) -> bool;
    /// Check every table's invariants; see [`Table::check_consistency`](crate::Table::check_consistency).
    fn check_consistency(&self) -> Result<(), ConsistencyError>;
}
