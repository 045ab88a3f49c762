//! Ad-hoc read-only SQL over every table of every partition of every node, and over
//! the servers' own state (system tables).
//!
//! The SQL engine is SQLite (through rusqlite), running in the client: each tabos table
//! is an eponymous virtual table ([`tables`]) whose rows come from the `sql_scan`
//! procedure, one bounded chunk per call, so a long query never holds a partition for
//! more than one chunk. An equality on a table's partition key (or on `_partition`) is
//! pushed down: only the owning partition is read.
//!
//! Consistency: each chunk is a consistent read of one partition at one point of its
//! serial order (it is one read-only transaction). A query is *not* a snapshot: chunks
//! of one partition are read at different points, and partitions are read one after
//! another. A row present for the whole query (updated in place or not) is seen
//! exactly once, as of its chunk; a row inserted or deleted meanwhile may or may not
//! be seen; a row deleted and inserted again under the same key meanwhile may be seen
//! once per life. Replicated tables are read from one partition.

mod decode;
mod format;
mod tables;

pub use format::{format_csv, format_json, format_table};
pub use rusqlite::types::Value;
pub use tables::{table_names, PARTITION_COLUMN};

use crate::{Client, Error};
use rusqlite::{Connection, OpenFlags};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::fmt;
use std::ptr::NonNull;

/// Rows of one chunk when none is asked for.
pub const CHUNK_ROWS_DEFAULT: u32 = 256;
/// Most result rows a query returns when none is asked for (results are held in
/// memory).
pub const RESULT_ROWS_MAX_DEFAULT: usize = 1_000_000;

/// What a query read, besides its rows: which partitions it touched and how.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScanCounters {
    /// `sql_scan` calls made.
    pub chunks: u64,
    /// Rows those calls returned.
    pub rows: u64,
    /// Global ids of the partitions scanned.
    pub partitions: BTreeSet<u32>,
    /// Longest round trip of one `sql_scan` call, nanoseconds: it bounds from above
    /// how long the query held any partition at once.
    pub chunk_ns_max: u64,
}

/// The result of [`Client::query`].
#[derive(Clone, Debug, PartialEq)]
pub struct QueryResult {
    /// Column names, in order.
    pub columns: Vec<String>,
    /// Rows of values, each as long as `columns`.
    pub rows: Vec<Vec<Value>>,
    /// What reading the tables cost.
    pub scans: ScanCounters,
}

/// How to run a query.
#[derive(Clone, Copy, Debug)]
pub struct QueryOptions {
    /// Most rows one `sql_scan` call returns (1..=4096): the longest a query holds a
    /// partition is one such chunk.
    pub chunk_rows: u32,
    /// Most rows the result may hold; a query with more fails with
    /// [`SqlError::TooManyRows`] (add a `LIMIT`, or raise this).
    pub result_rows_max: usize,
}

impl Default for QueryOptions {
    fn default() -> Self {
        QueryOptions {
            chunk_rows: CHUNK_ROWS_DEFAULT,
            result_rows_max: RESULT_ROWS_MAX_DEFAULT,
        }
    }
}

/// Why a query failed.
#[derive(Debug)]
pub enum SqlError {
    /// The statement would change state; tabos SQL only reads.
    ReadOnly,
    /// SQLite rejected the SQL: its message and, when it knows it, the byte offset in
    /// the SQL where the problem starts.
    Syntax {
        message: String,
        sql: String,
        offset: Option<usize>,
    },
    /// The engine failed while running the query (including reading a table).
    Engine(String),
    /// More than one statement, or none.
    NotOneStatement,
    /// The result has more rows than [`QueryOptions::result_rows_max`].
    TooManyRows(usize),
}

/// What a refused write says.
pub const READ_ONLY_MESSAGE: &str = "tabos SQL is read-only: change state through the \
     procedures (tabos kv put, tabos fs ..., tabos sched ..., tabos ipc ...)";

impl fmt::Display for SqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SqlError::ReadOnly => f.write_str(READ_ONLY_MESSAGE),
            SqlError::Syntax {
                message,
                sql,
                offset,
            } => {
                write!(f, "SQL error: {message}")?;
                if let Some(at) = *offset {
                    // The caret goes under the character at `at` of the line holding it.
                    let line_start = sql[..at].rfind('\n').map_or(0, |i| i + 1);
                    let line_end = sql[at..].find('\n').map_or(sql.len(), |i| at + i);
                    let column = sql[line_start..at].chars().count();
                    write!(
                        f,
                        " (at offset {at})\n  {}\n  {}^",
                        &sql[line_start..line_end],
                        " ".repeat(column)
                    )?;
                }
                Ok(())
            }
            SqlError::Engine(message) => write!(f, "SQL error: {message}"),
            SqlError::NotOneStatement => f.write_str("SQL error: give exactly one statement"),
            SqlError::TooManyRows(max) => write!(
                f,
                "SQL error: the result has more than {max} rows: add a LIMIT or raise the \
                 maximum (tabos sql --max-rows)"
            ),
        }
    }
}

impl std::error::Error for SqlError {}

impl From<rusqlite::Error> for SqlError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::SqlInputError {
                msg, sql, offset, ..
            } => SqlError::Syntax {
                message: msg,
                offset: usize::try_from(offset).ok().filter(|&o| o <= sql.len()),
                sql,
            },
            rusqlite::Error::SqliteFailure(_, Some(msg)) if is_write_refusal(&msg) => {
                SqlError::ReadOnly
            }
            rusqlite::Error::MultipleStatement => SqlError::NotOneStatement,
            other => SqlError::Engine(other.to_string()),
        }
    }
}

fn is_write_refusal(msg: &str) -> bool {
    [
        "may not be modified",
        "may not be dropped",
        "readonly",
        "query_only",
    ]
    .iter()
    .any(|m| msg.contains(m))
}

impl Client {
    /// Run one read-only SQL statement over every table of every partition and node
    /// and the system tables (see the module documentation for what it sees).
    pub fn query(&mut self, sql: &str) -> Result<QueryResult, SqlError> {
        self.query_with(sql, QueryOptions::default())
    }

    /// [`query`](Self::query) with options.
    pub fn query_with(
        &mut self,
        sql: &str,
        options: QueryOptions,
    ) -> Result<QueryResult, SqlError> {
        assert!(
            (1..=tabos_procs::builtin::scan::SCAN_ROWS_MAX).contains(&options.chunk_rows),
            "chunk_rows must be in 1..=SCAN_ROWS_MAX"
        );
        let conn = Connection::open_with_flags(
            ":memory:",
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| SqlError::Engine(e.to_string()))?;
        // File paths are case-sensitive, and so path-prefix pushdown needs LIKE to be.
        conn.execute_batch("PRAGMA case_sensitive_like = ON; PRAGMA query_only = ON;")?;
        tables::register(&conn)?;
        let _active = Active::enter(self, options);
        let mut stmt = conn.prepare(sql)?;
        if !stmt.readonly() {
            return Err(SqlError::ReadOnly);
        }
        let columns: Vec<String> = stmt.column_names().map(|c| c.to_string()).collect();
        let width = columns.len();
        let mut rows = Vec::new();
        let mut cursor = stmt.raw_query();
        while let Some(row) = cursor.next()? {
            if rows.len() == options.result_rows_max {
                return Err(SqlError::TooManyRows(options.result_rows_max));
            }
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(row.get::<_, Value>(i)?);
            }
            rows.push(values);
        }
        drop(cursor);
        let scans = ACTIVE.with(|a| a.scans.take());
        Ok(QueryResult {
            columns,
            rows,
            scans,
        })
    }
}

// The client a running query reads through. Set by `Active::enter` for the duration of
// one `Client::query_with` on this thread; SQLite calls the virtual tables synchronously
// on the same thread while the statement steps.
struct ActiveState {
    client: Cell<Option<NonNull<Client>>>,
    chunk_rows: Cell<u32>,
    scans: Cell<ScanCounters>,
}

thread_local! {
    static ACTIVE: ActiveState = const {
        ActiveState {
            client: Cell::new(None),
            chunk_rows: Cell::new(CHUNK_ROWS_DEFAULT),
            scans: Cell::new(ScanCounters {
                chunks: 0,
                rows: 0,
                partitions: BTreeSet::new(),
                chunk_ns_max: 0,
            }),
        }
    };
}

/// Clears the active client when the query ends, however it ends.
struct Active;

impl Active {
    fn enter(client: &mut Client, options: QueryOptions) -> Active {
        ACTIVE.with(|a| {
            assert!(a.client.get().is_none(), "queries do not nest");
            a.client.set(Some(NonNull::from(client)));
            a.chunk_rows.set(options.chunk_rows);
            a.scans.set(ScanCounters::default());
        });
        Active
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        ACTIVE.with(|a| a.client.set(None));
    }
}

/// Run `f` with the client of the query running on this thread.
fn with_client<T>(f: impl FnOnce(&mut Client, u32) -> Result<T, Error>) -> Result<T, String> {
    ACTIVE.with(|a| {
        let Some(mut ptr) = a.client.take() else {
            return Err("no query is running on this thread".to_string());
        };
        // SAFETY: `ptr` was made from the `&mut Client` that `Client::query_with` holds
        // for as long as the pointer is set (the `Active` guard clears it before that
        // borrow ends), on this same thread. Taking it out of the cell while `f` runs
        // means no second `&mut` can be made from it meanwhile.
        let client = unsafe { ptr.as_mut() };
        let out = f(client, a.chunk_rows.get());
        a.client.set(Some(ptr));
        out.map_err(|e| e.to_string())
    })
}

/// Count one chunk read from `partition` in a round trip of `ns`.
fn count_chunk(partition: u32, rows: usize, ns: u64) {
    ACTIVE.with(|a| {
        let mut s = a.scans.take();
        s.chunks += 1;
        s.chunk_ns_max = s.chunk_ns_max.max(ns);
        s.rows += rows as u64;
        s.partitions.insert(partition);
        a.scans.set(s);
    });
}
