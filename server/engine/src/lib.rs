//! The storage engine of one partition.
//!
//! A partition's state is a [`Schema`]: a struct of typed [`Table`]s. Each table keeps its
//! rows in a hashbrown primary index, an optional ordered secondary index over a sort key
//! ([`Row::SortKey`]), and an undo log of every mutation since the last commit.
//!
//! Stored procedures ([`ProcDef`]) are plain functions over a [`Ctx`]; [`execute`] runs one
//! invocation as a transaction: it commits on success and rolls every table back on an
//! error status. Procedures decode their untrusted argument bytes with [`ArgReader`] and
//! encode replies with the `put_*` functions.

#![forbid(unsafe_code)]

pub mod args;
mod caller;
pub mod error;
pub mod procedure;
pub mod schema;
pub mod table;

pub use args::{put_bytes, put_i64, put_str, put_u32, put_u64, put_u8, ArgReader};
pub use caller::USER_NAME_BYTES_MAX;
pub use error::ConsistencyError;
pub use procedure::{
    execute, execute_logged, Access, Caller, Ctx, Executed, ProcDef, ProcFn, Registry, Scope,
    UserName, WaitFor,
};
pub use schema::Schema;
pub use table::{Row, Table};
pub use tabos_transport::Status;
