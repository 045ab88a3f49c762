//! Guards `Client::query` and `tabos sql` against a real two-partition tabosd: writes
//! are refused with a message naming the procedures, bad SQL reports SQLite's message
//! and its position, a chunked scan under concurrent writes returns every stable row
//! exactly once, an equality on the partition key runs `sql_scan` on one partition
//! only (by the server's own counters), the CLI prints tables, CSV and JSON, and bad
//! `sql_scan` requests get a status while the partition serves on.

mod common;

use common::{run, tabos_exe, Daemon};
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tabos_client::sql::{QueryOptions, SqlError, Value};
use tabos_client::Client;

fn key(i: u32) -> String {
    format!("key-{i:05}")
}

#[test]
fn writes_are_refused_and_bad_sql_shows_its_position() {
    let daemon = Daemon::start("sql-refuse");
    let mut c = Client::connect(daemon.socket()).unwrap();
    c.kv_put(b"a", b"1").unwrap();
    for sql in [
        "INSERT INTO kv VALUES ('b', '2', 0)",
        "UPDATE kv SET value = 'x'",
        "DELETE FROM kv",
        "CREATE TABLE t(x)",
        "DROP TABLE kv",
    ] {
        let e = c.query(sql).expect_err(sql);
        assert!(matches!(e, SqlError::ReadOnly), "{sql}: {e:?}");
        let text = e.to_string();
        assert!(
            text.contains("read-only") && text.contains("tabos kv put"),
            "{text}"
        );
    }
    assert_eq!(
        c.kv_get(b"a").unwrap(),
        Some(b"1".to_vec()),
        "nothing changed"
    );

    let e = c.query("SELECT * FRM kv").expect_err("syntax");
    let SqlError::Syntax { offset, .. } = &e else {
        panic!("{e:?}")
    };
    assert_eq!(*offset, Some(9), "offset of FRM");
    let text = e.to_string();
    assert!(text.contains("near \"FRM\""), "{text}");
    assert!(text.ends_with("  SELECT * FRM kv\n           ^"), "{text}");
    let e = c.query("SELECT nope FROM kv").expect_err("no such column");
    assert!(e.to_string().contains("no such column: nope"), "{e}");
    let e = c
        .query("SELECT * FROM no_such_table")
        .expect_err("no table");
    assert!(e.to_string().contains("no such table"), "{e}");
    assert!(matches!(
        c.query("SELECT 1; SELECT 2"),
        Err(SqlError::NotOneStatement)
    ));
    // The client still works after failed queries.
    assert_eq!(
        c.query("SELECT count(*) FROM kv").unwrap().rows,
        [[Value::Integer(1)]]
    );
}

#[test]
fn a_chunked_scan_under_concurrent_writes_returns_stable_rows_once() {
    let daemon = Daemon::start("sql-chunks");
    let mut c = Client::connect(daemon.socket()).unwrap();
    const STABLE: u32 = 3000;
    for i in 0..STABLE {
        c.kv_put(key(i).as_bytes(), b"stable").unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let socket = daemon.socket().to_path_buf();
        std::thread::spawn(move || {
            let mut w = Client::connect(&socket).unwrap();
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) && n < 200_000 {
                // Transient rows come and go; stable rows are rewritten in place.
                let fresh = format!("fresh-{n}");
                w.kv_put(fresh.as_bytes(), b"t").unwrap();
                if n > 0 {
                    w.kv_delete(format!("fresh-{}", n - 1).as_bytes()).unwrap();
                }
                w.kv_put(key(n % STABLE).as_bytes(), b"rewritten").unwrap();
                n += 1;
            }
            n
        })
    };
    let options = QueryOptions {
        chunk_rows: 16,
        ..QueryOptions::default()
    };
    let mut rounds = 0;
    for _ in 0..3 {
        let got = c.query_with("SELECT key FROM kv", options).unwrap();
        let mut seen: HashMap<String, u32> = HashMap::new();
        for row in &got.rows {
            let Value::Text(k) = &row[0] else {
                panic!("{row:?}")
            };
            *seen.entry(k.clone()).or_default() += 1;
        }
        for i in 0..STABLE {
            assert_eq!(seen.get(&key(i)), Some(&1), "stable row {i}");
        }
        assert!(seen.values().all(|&n| n == 1), "a row was returned twice");
        assert!(
            got.scans.chunks >= u64::from(STABLE / 16),
            "{:?}",
            got.scans
        );
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let writes = writer.join().unwrap();
    assert!(writes > 0 && rounds == 3);
}

#[test]
fn a_partition_key_equality_scans_one_partition() {
    let daemon = Daemon::start("sql-pushdown");
    let mut c = Client::connect(daemon.socket()).unwrap();
    for i in 0..200 {
        c.kv_put(key(i).as_bytes(), format!("v{i}").as_bytes())
            .unwrap();
    }
    let scans_per_partition = |c: &mut Client| -> Vec<i64> {
        let got = c
            .query(
                "SELECT p.partition, COALESCE(s.calls, 0) FROM sys_partitions p \
                 LEFT JOIN sys_procedures s ON s.partition = p.partition AND s.name = 'sql_scan' \
                 ORDER BY p.partition",
            )
            .unwrap();
        got.rows
            .iter()
            .map(|r| match r[1] {
                Value::Integer(n) => n,
                _ => panic!("{r:?}"),
            })
            .collect()
    };
    let before = scans_per_partition(&mut c);
    assert_eq!(before.len(), 2);
    let k = key(77);
    let home = c.partition_for_key(k.as_bytes()) as usize;
    let got = c
        .query(&format!("SELECT value FROM kv WHERE key = '{k}'"))
        .unwrap();
    assert_eq!(got.rows, [[Value::Text("v77".into())]]);
    let after = scans_per_partition(&mut c);
    assert_eq!(
        after[home] - before[home],
        1,
        "one chunk on the key's partition"
    );
    assert_eq!(
        after[1 - home],
        before[1 - home],
        "the other partition is not read"
    );
    // Without the key, every partition is read.
    let all = c.query("SELECT count(*) FROM kv").unwrap();
    assert_eq!(all.rows, [[Value::Integer(200)]]);
    assert_eq!(all.scans.partitions.len(), 2);
    // `_partition` narrows too; a partition that does not exist yields nothing.
    let p1 = c
        .query("SELECT count(*) FROM kv WHERE _partition = 1")
        .unwrap();
    assert_eq!(p1.scans.partitions.iter().copied().collect::<Vec<_>>(), [1]);
    let none = c
        .query("SELECT count(*) FROM kv WHERE _partition = 9")
        .unwrap();
    assert_eq!(
        (none.rows[0][0].clone(), none.scans.chunks),
        (Value::Integer(0), 0)
    );
}

#[test]
fn the_cli_prints_a_table_csv_and_json() {
    let daemon = Daemon::start("sql-cli");
    let mut c = Client::connect(daemon.socket()).unwrap();
    c.kv_put(b"alpha", b"1").unwrap();
    c.kv_put(b"beta", b"two, three").unwrap();
    let tabos = |args: &[&str]| {
        let mut cmd = Command::new(tabos_exe());
        cmd.arg("--connect")
            .arg(daemon.socket())
            .arg("sql")
            .args(args);
        cmd.env_remove("TABOS_CONNECT");
        let out = run(cmd);
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let sql = "SELECT key, value, length(value) AS n FROM kv ORDER BY key";
    let (code, out, err) = tabos(&[sql]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        out,
        "key   | value      | n\n------+------------+---\nalpha | 1          |  1\nbeta  | two, three | 10\n(2 rows)\n"
    );
    let (_, out, _) = tabos(&["--csv", sql]);
    assert_eq!(
        out,
        "key,value,n\r\nalpha,1,1\r\nbeta,\"two, three\",10\r\n"
    );
    let (_, out, _) = tabos(&["--json", sql]);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json[1]["value"], "two, three");
    assert!(
        out.find("\"key\"").unwrap() < out.find("\"value\"").unwrap(),
        "column order"
    );
    let (code, _, err) = tabos(&["DELETE FROM kv"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("read-only"), "{err}");
    let (code, _, err) = tabos(&["SELECT * FROM kv WHERE"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("incomplete input") || err.contains("syntax error"),
        "{err}"
    );
    let (code, out, _) = tabos(&["--tables"]);
    assert_eq!(code, Some(0));
    for name in [
        "kv",
        "fs_directory",
        "ipc_message",
        "sched_task",
        "sys_partitions",
        "sys_nodes",
    ] {
        assert!(out.contains(name), "{name} in {out}");
    }
}

#[test]
fn bad_scan_requests_get_a_status_and_the_partition_serves_on() {
    use tabos_client::{ids, Error, Status};
    use tabos_procs::builtin::scan::{scan_args, SCAN_DONE};
    let daemon = Daemon::start("sql-hostile");
    let mut c = Client::connect(daemon.socket()).unwrap();
    c.kv_put(b"k", b"v").unwrap();
    let status = |r: Result<Vec<u8>, Error>| match r {
        Err(Error::Status(s)) => s,
        other => panic!("expected a status, got {other:?}"),
    };
    let p = c.partition_for_key(b"k");
    for (args, want) in [
        (scan_args(999, 0, 10, 1 << 16), Status::NotFound),
        (scan_args(1, 0, 0, 1 << 16), Status::BadArgs),
        (scan_args(1, 0, 1_000_000, 1 << 16), Status::BadArgs),
        (scan_args(1, SCAN_DONE, 10, 1 << 16), Status::BadArgs),
        (scan_args(1, 0, 10, 3), Status::PayloadTooLarge),
        (vec![1, 2, 3], Status::BadArgs),
    ] {
        assert_eq!(status(c.call(ids::SQL_SCAN, p, &args)), want, "{args:?}");
    }
    // A cursor far past the end is an empty, finished chunk.
    let reply = c
        .call(ids::SQL_SCAN, p, &scan_args(1, u64::MAX - 1, 10, 1 << 16))
        .unwrap();
    let chunk = tabos_procs::builtin::scan::decode_scan_reply(&reply).unwrap();
    assert_eq!((chunk.rows.len(), chunk.next), (0, SCAN_DONE));
    assert_eq!(
        c.query("SELECT value FROM kv").unwrap().rows,
        [[Value::Text("v".into())]]
    );
}
