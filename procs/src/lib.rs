//! The OS services of tabos as compiled stored procedures.
//!
//! Each service keeps its schema and its procedures side by side (`builtin/`, and in
//! later modules `sched/`, `ipc/`, `fs/`), readable against the paper's figures. A
//! procedure sees only a [`tabos_engine::Ctx`]: its partition's tables
//! ([`PartitionDb`]), its arguments, the caller and a reply buffer. Procedures are
//! deterministic (no clock, no randomness, no I/O), so a command log can replay them.
//!
//! Procedure ids in [`ids`] are part of the wire protocol and never change.

#![forbid(unsafe_code)]

pub mod builtin;
pub mod fs;
pub mod ids;
pub mod ipc;
pub mod sched;
pub mod schema;
pub mod snapshot;
pub mod testing;

pub use schema::{DbLimits, PartitionDb};

use tabos_engine::Registry;

/// Every compiled procedure, registered under its stable id.
pub fn registry() -> Registry<PartitionDb> {
    let mut registry = Registry::new();
    builtin::register(&mut registry);
    sched::register(&mut registry);
    ipc::register(&mut registry);
    fs::register(&mut registry);
    registry
}
