//! `sql_scan`: read one table of one partition in a bounded chunk, for ad-hoc SQL.
//!
//! The SQL engine runs in the client (client-lib); the server only hands out rows. Each
//! call is an ordinary read-only procedure: it runs between two transactions of the
//! partition, so what it sees is the partition's committed state at one point of its
//! serial order, and the longest a scan can hold the partition is one chunk (bounded by
//! rows, bytes and slots looked at). The cursor is a slot of the table's slab (see
//! `tabos_engine::Table::scan_from`): a row present for the whole scan is returned
//! exactly once; one inserted or deleted between chunks may or may not be (a key
//! deleted and inserted again is a new row, in a new slot: it may be returned twice).
//!
//! Arguments: `u32 table id, u64 cursor, u32 max rows, u32 max bytes`. Reply:
//! `u64 next cursor` ([`SCAN_DONE`] when the table is exhausted), `u32 row count`, then
//! each row as `bytes`: the row's serde form as a JSON object keyed by field name (byte
//! strings are arrays of numbers). Rows go straight from serde to JSON, with no
//! intermediate value tree: the encoding is most of a chunk's cost at the partition.

use crate::schema::PartitionDb;
use serde::de::{self, Deserializer, Visitor};
use tabos_engine::{put_bytes, put_u32, put_u64, ArgReader, Ctx, Row, Table};
use tabos_transport::Status;

/// The cursor of a finished scan.
pub const SCAN_DONE: u64 = u64::MAX;
/// Most rows one chunk returns.
pub const SCAN_ROWS_MAX: u32 = 4096;
/// Slots one chunk looks at per row it may return (bounds the work of a chunk over a
/// table with many free slots).
const SLOTS_PER_ROW: usize = 16;

/// A table that SQL can read, by stable id.
#[derive(Clone, Copy, Debug)]
pub struct SqlTable {
    /// Stable id (part of the wire protocol).
    pub id: u32,
    /// The name SQL uses.
    pub name: &'static str,
    /// Replicated to every partition: read one partition only.
    pub replicated: bool,
    /// What the table holds.
    pub doc: &'static str,
}

/// Every table SQL reads, in id order.
pub const SQL_TABLES: &[SqlTable] = &[
    t(1, "kv", false, "partitioned key-value rows (key, value)"),
    t(2, "rkv", true, "replicated key-value rows"),
    t(3, "sched_worker", false, "scheduler workers (figures 2-4)"),
    t(4, "sched_task", false, "live tasks, assigned or queued"),
    t(
        5,
        "ipc_message",
        false,
        "in-flight messages, on the receiver's partition",
    ),
    t(6, "ipc_mailbox", false, "per-receiver counters"),
    t(7, "fs_map", true, "the partition map (figure 9's Map)"),
    t(8, "fs_user", true, "users and their home partitions"),
    t(
        9,
        "fs_directory",
        false,
        "directory entries (figure 9's Directory)",
    ),
    t(10, "fs_localized_file", false, "blocks of localized files"),
    t(11, "fs_parallel_file", false, "blocks of parallel files"),
];

const fn t(id: u32, name: &'static str, replicated: bool, doc: &'static str) -> SqlTable {
    SqlTable {
        id,
        name,
        replicated,
        doc,
    }
}

impl SqlTable {
    /// The table with SQL name `name`.
    pub fn by_name(name: &str) -> Option<&'static SqlTable> {
        SQL_TABLES.iter().find(|t| t.name == name)
    }

    /// Column names: the row struct's serde field names, in declaration order.
    pub fn columns(&self) -> &'static [&'static str] {
        use crate::builtin::KvRow;
        use crate::fs::schema::{DirRow, LocalBlock, MapRow, ParallelBlock, UserRow};
        use crate::ipc::{MailboxRow, MessageRow};
        use crate::sched::schema::{TaskRow, WorkerRow};
        match self.id {
            1 | 2 => field_names::<KvRow>(),
            3 => field_names::<WorkerRow>(),
            4 => field_names::<TaskRow>(),
            5 => field_names::<MessageRow>(),
            6 => field_names::<MailboxRow>(),
            7 => field_names::<MapRow>(),
            8 => field_names::<UserRow>(),
            9 => field_names::<DirRow>(),
            10 => field_names::<LocalBlock>(),
            11 => field_names::<ParallelBlock>(),
            _ => unreachable!("SQL_TABLES lists ids 1..=11"),
        }
    }
}

/// Arguments of `sql_scan`.
pub fn scan_args(table_id: u32, cursor: u64, max_rows: u32, max_bytes: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(20);
    put_u32(&mut out, table_id);
    put_u64(&mut out, cursor);
    put_u32(&mut out, max_rows);
    put_u32(&mut out, max_bytes);
    out
}

/// One decoded chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanChunk {
    /// Where the next chunk starts; [`SCAN_DONE`] at the end.
    pub next: u64,
    /// Each row as a JSON object keyed by field name.
    pub rows: Vec<Vec<u8>>,
}

/// Decode a `sql_scan` reply.
pub fn decode_scan_reply(bytes: &[u8]) -> Result<ScanChunk, Status> {
    let mut r = ArgReader::new(bytes);
    let next = r.u64()?;
    let count = r.u32()?;
    if count > SCAN_ROWS_MAX {
        return Err(Status::BadArgs);
    }
    let mut rows = Vec::with_capacity(count as usize);
    for _ in 0..count {
        rows.push(r.bytes()?.to_vec());
    }
    r.finish()?;
    Ok(ScanChunk { next, rows })
}

/// `sql_scan(table id, cursor, max rows, max bytes)`; read-only.
pub fn sql_scan(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let table_id = r.u32()?;
    let cursor = r.u64()?;
    let max_rows = r.u32()?;
    let max_bytes = r.u32()?;
    r.finish()?;
    if max_rows == 0 || max_rows > SCAN_ROWS_MAX || cursor == SCAN_DONE {
        return Err(Status::BadArgs);
    }
    // Leave room for the reply's header words; never exceed what the reply may hold.
    let budget = (max_bytes as usize)
        .min(ctx.max_reply_bytes)
        .saturating_sub(12);
    let from = usize::try_from(cursor).map_err(|_| Status::BadArgs)?;
    let db = &*ctx.db;
    let mut chunk = Chunk {
        rows: Vec::new(),
        bytes: 0,
        budget,
        max_rows: max_rows as usize,
        next: SCAN_DONE,
    };
    match table_id {
        1 => chunk.fill(&db.kv, from),
        2 => chunk.fill(&db.rkv, from),
        3 => chunk.fill(&db.sched.workers, from),
        4 => chunk.fill(&db.sched.tasks, from),
        5 => chunk.fill(&db.ipc.messages, from),
        6 => chunk.fill(&db.ipc.mailboxes, from),
        7 => chunk.fill(&db.fs.map, from),
        8 => chunk.fill(&db.fs.users, from),
        9 => chunk.fill(&db.fs.dirs, from),
        10 => chunk.fill(&db.fs.local, from),
        11 => chunk.fill(&db.fs.parallel, from),
        _ => return Err(Status::NotFound),
    }?;
    assert!(chunk.rows.len() <= chunk.max_rows);
    put_u64(ctx.reply, chunk.next);
    put_u32(ctx.reply, chunk.rows.len() as u32);
    for row in &chunk.rows {
        put_bytes(ctx.reply, row);
    }
    Ok(())
}

/// The rows of one chunk being gathered.
struct Chunk {
    rows: Vec<Vec<u8>>,
    bytes: usize,
    budget: usize,
    max_rows: usize,
    next: u64,
}

impl Chunk {
    fn fill<R: Row>(&mut self, table: &Table<R>, from: usize) -> Result<(), Status> {
        let slots_max = self.max_rows.saturating_mul(SLOTS_PER_ROW);
        let end = table.slot_count();
        for (slot, row) in table.scan_from(from) {
            let encoded = serde_json::to_vec(row).map_err(|_| Status::BadArgs)?;
            let full = self.rows.len() == self.max_rows
                || self.bytes + 4 + encoded.len() > self.budget
                || slot - from >= slots_max;
            if full {
                if self.rows.is_empty() {
                    return Err(Status::PayloadTooLarge); // one row exceeds max bytes
                }
                self.next = slot as u64;
                return Ok(());
            }
            self.bytes += 4 + encoded.len();
            self.rows.push(encoded);
        }
        self.next = SCAN_DONE;
        debug_assert!(from <= end || self.rows.is_empty());
        Ok(())
    }
}

/// The field names of a struct, read from its `Deserialize` impl without an instance.
pub fn field_names<R: serde::de::DeserializeOwned>() -> &'static [&'static str] {
    let mut probe = FieldNames(None);
    let _ = R::deserialize(&mut probe);
    probe.0.expect("rows are structs with named fields")
}

struct FieldNames(Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for &mut FieldNames {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("field names only"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0 = Some(fields);
        Err(de::Error::custom("field names only"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
        byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
        identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ids, DbLimits};

    #[test]
    fn columns_are_field_names_in_order() {
        assert_eq!(SqlTable::by_name("kv").unwrap().columns(), ["key", "value"]);
        let dir = SqlTable::by_name("fs_directory").unwrap().columns();
        assert_eq!(dir[0], "d_name");
        assert!(dir.contains(&"size_bytes"));
        for (i, t) in SQL_TABLES.iter().enumerate() {
            assert_eq!(t.id as usize, i + 1, "ids are dense and in order");
            assert!(!t.columns().is_empty());
        }
    }

    #[test]
    fn chunks_return_each_stable_row_once_under_concurrent_writes() {
        let mut h = crate::testing::Harness::new(1, DbLimits::default());
        let key = |i: u32| format!("k{i:05}").into_bytes();
        for i in 0..1000 {
            h.call(0, ids::KV_PUT, &crate::builtin::kv_args(&key(i), b"v"))
                .unwrap();
        }
        let mut seen = std::collections::HashMap::<Vec<u8>, u32>::new();
        let mut cursor = 0;
        let mut round = 0u32;
        while cursor != SCAN_DONE {
            let reply = h
                .call(0, ids::SQL_SCAN, &scan_args(1, cursor, 37, 1 << 20))
                .unwrap();
            let chunk = decode_scan_reply(&reply).unwrap();
            assert!(chunk.rows.len() <= 37);
            for row in chunk.rows {
                let row: crate::builtin::KvRow = serde_json::from_slice(&row).unwrap();
                *seen.entry(row.key).or_default() += 1;
            }
            cursor = chunk.next;
            // Between chunks: delete and insert rows numbered 1000+ (transient), and
            // update stable rows (which must neither vanish nor repeat).
            round += 1;
            let fresh = 1000 + round;
            h.call(0, ids::KV_PUT, &crate::builtin::kv_args(&key(fresh), b"n"))
                .unwrap();
            if round > 1 {
                h.call(
                    0,
                    ids::KV_DELETE,
                    &crate::builtin::kv_args(&key(fresh - 1), b""),
                )
                .unwrap();
            }
            h.call(
                0,
                ids::KV_PUT,
                &crate::builtin::kv_args(&key(round * 7), b"u"),
            )
            .unwrap();
        }
        for i in 0..1000 {
            assert_eq!(seen.get(&key(i)), Some(&1), "stable row {i} seen once");
        }
        assert!(seen.values().all(|&n| n == 1), "no row twice");
    }

    #[test]
    fn bad_scans_get_a_status() {
        let mut h = crate::testing::Harness::new(1, DbLimits::default());
        let call = |h: &mut crate::testing::Harness, args: &[u8]| h.call(0, ids::SQL_SCAN, args);
        assert_eq!(
            call(&mut h, &scan_args(99, 0, 10, 1000)),
            Err(Status::NotFound)
        );
        assert_eq!(
            call(&mut h, &scan_args(1, 0, 0, 1000)),
            Err(Status::BadArgs)
        );
        assert_eq!(
            call(&mut h, &scan_args(1, SCAN_DONE, 1, 1000)),
            Err(Status::BadArgs)
        );
        assert_eq!(call(&mut h, &[1, 2, 3]), Err(Status::BadArgs));
        let empty = decode_scan_reply(&call(&mut h, &scan_args(1, 1 << 40, 10, 1000)).unwrap());
        assert_eq!(empty.unwrap().rows.len(), 0);
    }
}
