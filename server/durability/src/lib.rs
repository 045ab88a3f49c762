//! Durability of a partition's state: the command log (records with checksums,
//! written with group commit through io_uring), snapshots, crash recovery by snapshot
//! plus replay, offline verification, and a fault-injecting disk for tests.
//!
//! This crate knows nothing of procedures: records carry a procedure id, the caller and
//! the argument bytes, snapshots carry opaque bytes, and recovery hands both to
//! closures the server supplies.

pub mod child;
pub mod crc32c;
pub mod disk;
pub mod fault;
pub mod layout;
pub mod record;
pub mod recover;
pub mod snapshot;
pub mod writer;

pub use disk::{LogDir, LogFile, RealDir};
pub use fault::{FailAfter, FaultyDisk};
pub use layout::{lock, partition_dir, DirLock, Meta};
pub use record::Record;
pub use recover::{recover, verify_data_dir, Corrupt, Mode, Report, TornTail};
pub use writer::{Failed, FlushPolicy, GroupCommit, LogWriter};
