//! The virtual tables: one eponymous SQLite table per tabos table (rows from
//! `sql_scan`, chunk by chunk) and per system table (fetched whole: they are small).

use super::{count_chunk, with_client, Value};
use crate::Client;
use rusqlite::vtab::{
    sqlite3_vtab, sqlite3_vtab_cursor, Context, Filters, IndexConstraintOp, IndexInfo, Module,
    VTab, VTabConnection, VTabCursor,
};
use rusqlite::Connection;
use std::borrow::Cow;
use std::ffi::{c_int, CStr, CString};
use tabos_procs::builtin::scan::{decode_scan_reply, scan_args, SqlTable, SCAN_DONE, SQL_TABLES};
use tabos_procs::builtin::PartitionStats;
use tabos_procs::ids;
use tabos_transport::wire::partition_for_key;

/// The synthetic column every service table has: the global partition a row came from.
pub const PARTITION_COLUMN: &str = "_partition";

/// A system table: the servers' own state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SysTable {
    Partitions,
    Connections,
    Procedures,
    Log,
    Nodes,
}

impl SysTable {
    const ALL: [SysTable; 5] = [
        SysTable::Partitions,
        SysTable::Connections,
        SysTable::Procedures,
        SysTable::Log,
        SysTable::Nodes,
    ];

    fn name(self) -> &'static str {
        match self {
            SysTable::Partitions => "sys_partitions",
            SysTable::Connections => "sys_connections",
            SysTable::Procedures => "sys_procedures",
            SysTable::Log => "sys_log",
            SysTable::Nodes => "sys_nodes",
        }
    }

    fn columns(self) -> &'static [&'static str] {
        match self {
            SysTable::Partitions => &[
                "partition",
                "node",
                "core",
                "clients",
                "calls",
                "errors",
                "queue_depth",
                "queued_request_bytes",
                "latency_ns_p50",
                "latency_ns_p99",
            ],
            SysTable::Connections => &[
                "partition",
                "node",
                "client_id",
                "transport",
                "pid",
                "uid",
                "calls",
            ],
            SysTable::Procedures => &[
                "partition",
                "node",
                "proc_id",
                "name",
                "calls",
                "errors",
                "mean_ns",
                "max_ns",
            ],
            SysTable::Log => &[
                "partition",
                "node",
                "log_lsn",
                "durable_lsn",
                "last_flush_unix_ms",
            ],
            SysTable::Nodes => &[
                "node",
                "address",
                "socket",
                "partition_base",
                "partition_count",
                "rdma",
                "reachable",
                "error",
            ],
        }
    }
}

/// Which table a virtual table reads.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    Service(&'static SqlTable),
    System(SysTable),
}

impl Source {
    fn columns(self) -> Vec<&'static str> {
        match self {
            Source::Service(t) => {
                let mut c = t.columns().to_vec();
                c.push(PARTITION_COLUMN);
                c
            }
            Source::System(s) => s.columns().to_vec(),
        }
    }
}

/// Every table name SQL knows, with what it holds (for `--help` and docs).
pub fn table_names() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<_> = SQL_TABLES.iter().map(|t| (t.name, t.doc)).collect();
    out.extend(SysTable::ALL.iter().map(|s| (s.name(), "system table")));
    out
}

/// The module of every table: eponymous (usable without CREATE VIRTUAL TABLE) and
/// without xUpdate, so SQLite itself refuses writes to it.
const MODULE: Module<'static, TabosTab> = Module::eponymous_only_module();

/// Register every table on `conn`.
pub fn register(conn: &Connection) -> rusqlite::Result<()> {
    for t in SQL_TABLES {
        conn.create_module(t.name, &MODULE, Some(Source::Service(t)))?;
    }
    for s in SysTable::ALL {
        conn.create_module(s.name(), &MODULE, Some(Source::System(s)))?;
    }
    Ok(())
}

/// How a scan was narrowed (the `idx_num` best_index hands to filter).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
enum Plan {
    /// Every partition (one for replicated tables).
    All = 0,
    /// `_partition = ?`.
    Partition = 1,
    /// `key = ?` on kv (hash of the key's bytes).
    KvKey = 2,
    /// `receiver_id = ?` on the IPC tables.
    Receiver = 3,
    /// `path = ?` on a filesystem table: the first path component names the user
    /// whose home partition holds the whole tree.
    PathEq = 4,
    /// `path LIKE ?` (case-sensitive here) whose literal prefix is `/<user>/`.
    PathLike = 5,
    /// `path GLOB ?` whose literal prefix is `/<user>/`.
    PathGlob = 6,
}

impl Plan {
    fn from_num(n: c_int) -> Plan {
        match n {
            1 => Plan::Partition,
            2 => Plan::KvKey,
            3 => Plan::Receiver,
            4 => Plan::PathEq,
            5 => Plan::PathLike,
            6 => Plan::PathGlob,
            _ => Plan::All,
        }
    }
}

/// A virtual table over one tabos table.
#[repr(C)]
pub struct TabosTab {
    /// Base class; must be first.
    base: sqlite3_vtab,
    source: Source,
    columns: Vec<&'static str>,
}

// SAFETY: `TabosTab` is `#[repr(C)]` with `sqlite3_vtab` as its first field, as the
// trait requires; its cursor type is likewise laid out.
unsafe impl<'vtab> VTab<'vtab> for TabosTab {
    type Aux = Source;
    type Cursor = TabosCursor<'vtab>;

    fn connect(
        _db: &mut VTabConnection,
        aux: Option<&Source>,
        _module_name: &[u8],
        _database_name: &[u8],
        _table_name: &[u8],
        _args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, Self)> {
        let source = *aux.expect("every module is registered with its source");
        let columns = source.columns();
        let quoted: Vec<String> = columns.iter().map(|c| format!("\"{c}\"")).collect();
        let ddl = CString::new(format!("CREATE TABLE x({})", quoted.join(", ")))
            .expect("column names have no NUL");
        Ok((
            Cow::Owned(ddl),
            TabosTab {
                base: sqlite3_vtab::default(),
                source,
                columns,
            },
        ))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<bool> {
        let Source::Service(table) = self.source else {
            info.set_estimated_cost(100.0);
            return Ok(true);
        };
        let column_of = |name: &str| self.columns.iter().position(|c| *c == name);
        let partition_col = column_of(PARTITION_COLUMN);
        let key_col = if table.name == "kv" {
            column_of("key")
        } else {
            None
        };
        let receiver_col = if table.name.starts_with("ipc_") {
            column_of("receiver_id")
        } else {
            None
        };
        let path_col = match table.name {
            "fs_directory" => column_of("d_name"),
            "fs_localized_file" => column_of("f_name"),
            _ => None,
        };
        let mut chosen: Option<(usize, Plan)> = None;
        for (i, c) in info.constraints().enumerate() {
            if !c.is_usable() {
                continue;
            }
            let col = usize::try_from(c.column()).ok();
            let eq = matches!(c.operator(), IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ);
            let plan = match c.operator() {
                _ if eq && col == partition_col => Plan::Partition,
                _ if eq && col.is_some() && col == key_col => Plan::KvKey,
                _ if eq && col.is_some() && col == receiver_col => Plan::Receiver,
                _ if eq && col.is_some() && col == path_col => Plan::PathEq,
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_LIKE
                    if col.is_some() && col == path_col =>
                {
                    Plan::PathLike
                }
                IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_GLOB
                    if col.is_some() && col == path_col =>
                {
                    Plan::PathGlob
                }
                _ => continue,
            };
            // Prefer the partition column, then any other narrowing.
            if chosen.is_none() || plan == Plan::Partition {
                chosen = Some((i, plan));
            }
        }
        match chosen {
            Some((i, plan)) => {
                let mut usage = info.constraint_usage(i);
                usage.set_argv_index(1);
                usage.set_omit(false); // SQLite re-checks: pushdown only narrows
                info.set_idx_num(plan as c_int);
                info.set_estimated_cost(10.0);
                info.set_estimated_rows(100);
            }
            None => {
                info.set_idx_num(Plan::All as c_int);
                info.set_estimated_cost(1_000_000.0);
            }
        }
        Ok(true)
    }

    fn open(&'vtab mut self) -> rusqlite::Result<TabosCursor<'vtab>> {
        Ok(TabosCursor {
            base: sqlite3_vtab_cursor::default(),
            source: self.source,
            width: self.columns.len(),
            targets: Vec::new(),
            target: 0,
            next: SCAN_DONE,
            rows: Vec::new(),
            row: 0,
            rowid: 0,
            _tab: std::marker::PhantomData,
        })
    }
}

/// A cursor: the partitions left to read and the chunk being returned.
#[repr(C)]
pub struct TabosCursor<'vtab> {
    /// Base class; must be first.
    base: sqlite3_vtab_cursor,
    source: Source,
    width: usize,
    /// Global partitions to read, in order.
    targets: Vec<u32>,
    /// Index in `targets` of the partition being read.
    target: usize,
    /// Cursor of the next chunk of that partition; `SCAN_DONE` when it is finished.
    next: u64,
    rows: Vec<Vec<Value>>,
    row: usize,
    rowid: i64,
    _tab: std::marker::PhantomData<&'vtab TabosTab>,
}

fn err(message: impl Into<String>) -> rusqlite::Error {
    rusqlite::Error::ModuleError(message.into())
}

impl TabosCursor<'_> {
    /// Load chunks until a row is ready or every target is read.
    fn fill(&mut self) -> rusqlite::Result<()> {
        let Source::Service(table) = self.source else {
            return Ok(()); // system tables are loaded whole by filter
        };
        while self.row >= self.rows.len() && self.target < self.targets.len() {
            if self.next == SCAN_DONE {
                self.target += 1;
                self.next = 0;
                continue;
            }
            let partition = self.targets[self.target];
            let cursor = self.next;
            let started = std::time::Instant::now();
            let chunk = with_client(|client, chunk_rows| {
                let max_bytes = client.max_payload_bytes() as u32;
                let args = scan_args(table.id, cursor, chunk_rows, max_bytes);
                client.call(ids::SQL_SCAN, partition, &args)
            })
            .map_err(|e| {
                err(format!(
                    "reading {} on partition {partition}: {e}",
                    table.name
                ))
            })?;
            let chunk = decode_scan_reply(&chunk).map_err(|s| {
                err(format!(
                    "bad sql_scan reply from partition {partition}: {s:?}"
                ))
            })?;
            let ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            count_chunk(partition, chunk.rows.len(), ns);
            self.rows.clear();
            self.row = 0;
            let columns = table.columns();
            for row in &chunk.rows {
                let mut values = super::decode::decode_row(row, columns)
                    .map_err(|e| err(format!("bad row from partition {partition}: {e}")))?;
                values.push(Value::Integer(i64::from(partition)));
                if values.len() != self.width {
                    return Err(err(format!(
                        "row of {} has {} columns",
                        table.name,
                        values.len()
                    )));
                }
                self.rows.push(values);
            }
            self.next = chunk.next;
            if self.next == SCAN_DONE {
                self.target += 1;
                self.next = 0;
            }
        }
        Ok(())
    }
}

// SAFETY: `TabosCursor` is `#[repr(C)]` with `sqlite3_vtab_cursor` as its first field.
unsafe impl VTabCursor for TabosCursor<'_> {
    fn filter(
        &mut self,
        idx_num: c_int,
        _idx_str: Option<&str>,
        args: &Filters<'_>,
    ) -> rusqlite::Result<()> {
        self.rows.clear();
        self.row = 0;
        self.target = 0;
        self.next = 0;
        match self.source {
            Source::Service(table) => {
                let plan = Plan::from_num(idx_num);
                let arg = if plan == Plan::All {
                    None
                } else {
                    Some(args.get::<Value>(0)?)
                };
                self.targets =
                    with_client(|client, _| Ok(targets(client, table, plan, arg.as_ref())))
                        .map_err(err)?;
                self.fill()
            }
            Source::System(sys) => {
                self.targets.clear();
                self.rows =
                    with_client(|client, _| Ok(system_rows(client, sys))).map_err(err)??;
                Ok(())
            }
        }
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.row += 1;
        self.rowid += 1;
        self.fill()
    }

    fn eof(&self) -> bool {
        self.row >= self.rows.len()
    }

    fn column(&self, ctx: &mut Context, i: c_int) -> rusqlite::Result<()> {
        let value = usize::try_from(i)
            .ok()
            .and_then(|i| self.rows.get(self.row)?.get(i))
            .ok_or_else(|| err(format!("no column {i}")))?;
        ctx.set_result(value)
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.rowid)
    }
}

/// The partitions a scan of `table` under `plan` reads.
fn targets(client: &Client, table: &SqlTable, plan: Plan, arg: Option<&Value>) -> Vec<u32> {
    let count = client.partition_count();
    let all = if table.replicated {
        vec![0]
    } else {
        (0..count).collect()
    };
    let one = |p: u32| if p < count { vec![p] } else { Vec::new() };
    let Some(arg) = arg else {
        return all;
    };
    match plan {
        Plan::All => all,
        Plan::Partition => match arg {
            Value::Integer(p) => u32::try_from(*p).map_or(Vec::new(), one),
            _ => Vec::new(), // `_partition` is an integer: nothing equals anything else
        },
        Plan::KvKey => match arg {
            Value::Text(s) => one(partition_for_key(s.as_bytes(), count)),
            Value::Blob(b) => one(partition_for_key(b, count)),
            _ => all,
        },
        Plan::Receiver => match arg {
            Value::Integer(r) => one(tabos_procs::ipc::mailbox_partition(*r as u64, count)),
            _ => all,
        },
        Plan::PathEq | Plan::PathLike | Plan::PathGlob => {
            let Value::Text(pattern) = arg else {
                return all;
            };
            let wild: &[char] = match plan {
                Plan::PathLike => &['%', '_'],
                Plan::PathGlob => &['*', '?', '[', ']'],
                _ => &[],
            };
            match path_user(pattern, wild, plan == Plan::PathEq) {
                Some(user) => one(partition_for_key(user.as_bytes(), count)),
                None => all,
            }
        }
    }
}

/// The user whose tree a path (or every path a pattern matches) lies in: the first
/// component of `/<user>/...`, when it is literal (no `wild` characters) and ends with
/// `/` (or, for an exact path, the end of the string). `None`: no single user.
fn path_user<'a>(pattern: &'a str, wild: &[char], exact: bool) -> Option<&'a str> {
    let rest = pattern.strip_prefix('/')?;
    let end = rest.find(|c: char| c == '/' || wild.contains(&c));
    let user = match end {
        Some(i) if rest[i..].starts_with('/') => &rest[..i],
        None if exact => rest,
        _ => return None,
    };
    (!user.is_empty()).then_some(user)
}

/// A JSON field value as SQL: u64 values above `i64::MAX` wrap to negative integers;
/// byte strings (arrays of small numbers) are TEXT when
/// they are UTF-8 and BLOB otherwise; other arrays and objects are their JSON text.
fn json_to_sql(v: serde_json::Value) -> Value {
    use serde_json::Value as J;
    match v {
        J::Null => Value::Null,
        J::Bool(b) => Value::Integer(i64::from(b)),
        // SQLite integers are i64: a u64 above i64::MAX (random ids) keeps its bits as
        // a negative integer, so it stays exact and equal to itself in joins.
        J::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => Value::Integer(i),
            (None, Some(u), _) => Value::Integer(u as i64),
            (None, None, Some(f)) => Value::Real(f),
            (None, None, None) => Value::Text(n.to_string()),
        },
        J::String(s) => Value::Text(s),
        J::Array(items) => {
            let bytes: Option<Vec<u8>> = items
                .iter()
                .map(|x| x.as_u64().and_then(|b| u8::try_from(b).ok()))
                .collect();
            match bytes {
                Some(bytes) => match String::from_utf8(bytes) {
                    Ok(s) => Value::Text(s),
                    Err(e) => Value::Blob(e.into_bytes()),
                },
                None => Value::Text(J::Array(items).to_string()),
            }
        }
        J::Object(_) => Value::Text(v.to_string()),
    }
}

/// The rows of a system table, from every reachable node.
fn system_rows(client: &mut Client, sys: SysTable) -> rusqlite::Result<Vec<Vec<Value>>> {
    let int = |v: u64| Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
    let mut rows = Vec::new();
    if sys == SysTable::Nodes {
        client.probe_nodes();
        for (info, state) in client.nodes() {
            let (reachable, error) = match state {
                Some(Ok(())) => (1, Value::Null),
                Some(Err(why)) => (0, Value::Text(why)),
                None => (0, Value::Text("not tried".into())),
            };
            rows.push(vec![
                int(info.node_id.into()),
                Value::Text(info.address),
                Value::Text(info.socket),
                int(info.partition_base.into()),
                int(info.partition_count.into()),
                int(u64::from(info.rdma)),
                Value::Integer(reachable),
                error,
            ]);
        }
        return Ok(rows);
    }
    if matches!(sys, SysTable::Partitions | SysTable::Log) {
        for (_, stats) in client.cluster_status() {
            let Ok(stats) = stats else {
                continue; // unreachable nodes show in sys_nodes
            };
            for s in stats {
                rows.push(stats_row(sys, &s));
            }
        }
        return Ok(rows);
    }
    let proc_id = if sys == SysTable::Procedures {
        ids::SYS_PROCEDURES
    } else {
        ids::SYS_CONNECTIONS
    };
    client.probe_nodes();
    for (info, state) in client.nodes() {
        if !matches!(state, Some(Ok(()))) {
            continue;
        }
        for p in info.partition_base..info.partition_base + info.partition_count {
            let reply = client
                .call(proc_id, p, &[])
                .map_err(|e| err(format!("{} on partition {p}: {e}", sys.name())))?;
            let items: Vec<Vec<serde_json::Value>> = serde_json::from_slice(&reply)
                .map_err(|e| err(format!("bad {} reply: {e}", sys.name())))?;
            for item in items {
                let mut row = vec![int(p.into()), int(info.node_id.into())];
                row.extend(item.into_iter().map(json_to_sql));
                rows.push(row);
            }
        }
    }
    Ok(rows)
}

fn stats_row(sys: SysTable, s: &PartitionStats) -> Vec<Value> {
    let int = |v: u64| Value::Integer(i64::try_from(v).unwrap_or(i64::MAX));
    let core = if s.core == u32::MAX {
        Value::Null
    } else {
        int(s.core.into())
    };
    match sys {
        SysTable::Log => vec![
            int(s.partition.into()),
            int(s.node_id.into()),
            int(s.log_lsn),
            int(s.durable_lsn),
            int(s.last_flush_unix_ms),
        ],
        _ => vec![
            int(s.partition.into()),
            int(s.node_id.into()),
            core,
            int(s.clients.into()),
            int(s.calls),
            int(s.errors),
            int(s.queue_depth.into()),
            int(s.queued_request_bytes),
            int(s.latency_ns_p50),
            int(s.latency_ns_p99),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_patterns_name_a_user_only_when_literal() {
        let like: &[char] = &['%', '_'];
        assert_eq!(path_user("/alice/%", like, false), Some("alice"));
        assert_eq!(path_user("/alice/docs/x", &[], true), Some("alice"));
        assert_eq!(path_user("/alice", &[], true), Some("alice"));
        assert_eq!(path_user("/alice%", like, false), None, "could be /alicex");
        assert_eq!(path_user("/al_ce/%", like, false), None);
        assert_eq!(path_user("/", &[], true), None);
        assert_eq!(path_user("alice/", like, false), None);
    }

    #[test]
    fn json_fields_become_sql_values() {
        use serde_json::json;
        assert_eq!(json_to_sql(json!([104, 105])), Value::Text("hi".into()));
        assert_eq!(json_to_sql(json!([255, 0])), Value::Blob(vec![255, 0]));
        assert_eq!(json_to_sql(json!(7)), Value::Integer(7));
        assert_eq!(json_to_sql(json!(u64::MAX)), Value::Integer(-1));
        assert_eq!(json_to_sql(json!(null)), Value::Null);
        assert_eq!(json_to_sql(json!("Dir")), Value::Text("Dir".into()));
        assert_eq!(json_to_sql(json!([1, 300])), Value::Text("[1,300]".into()));
    }
}
