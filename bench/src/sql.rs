//! Workload `sql`: ad-hoc SQL (`Client::query`, SQLite over `sql_scan`) against the
//! compiled procedures and ext4, and what a long scan costs the partition it reads.
//!
//! - `sql-du` (paper table 2 through SQL): the total size and count of the files of at
//!   least `du_min_bytes` in a directory of `du_files` files, three ways in one run:
//!   the SQL aggregate (the home partition found through the user table, the path
//!   matched by prefix), the compiled `du` procedure (one call), and a readdir + stat
//!   walk of the same sizes on the benchmark directory's filesystem (files made with
//!   `set_len`). Every answer is checked against the sizes the set-up chose.
//! - `sql-stall`: a prober thread times null calls to the partition for `per_run`,
//!   first alone, then while a scanner thread runs full scans of a `kv` table of
//!   `scan_rows` rows (`SELECT count(*), sum(length(value)) FROM kv`) in chunks of
//!   `chunk_rows`. The largest prober latency during the scans, against the largest
//!   without, is the longest stall the partition showed. Both client threads share
//!   the client core (a 2-CPU machine has no third), so the prober's figure also holds
//!   the scanner's own CPU time on that core: it bounds the partition's stall from
//!   above. The record also carries the longest round trip of one `sql_scan` chunk
//!   the scanner saw (`chunk_round_trip_us_max`), and the partition's own longest
//!   `sql_scan` calls, timed at the partition (every one is; from `sys_procedures`):
//!   `scan_call_us_mean_at_partition` over this measurement, the time a chunk holds
//!   the partition, and `scan_call_us_max_at_partition`, the longest so far in the
//!   whole run (a maximum cannot be reset; on a loaded machine it is mostly the
//!   partition thread being preempted, as the no-scan maximum shows).
//! - `sql-scan`: rows per second of those full scans.

use crate::baseline::ext4::{self, BaselineDir};
use crate::measure::{self, Latencies};
use crate::report::{self, params, Record};
use crate::server::Target;
use crate::{Error, Settings};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tabos_client::sql::{QueryOptions, Value as SqlValue};
use tabos_client::{ids, Client};

/// System name of tabos over shared memory.
pub const SYSTEM: &str = crate::invoke::SYSTEM_TABOS_SHM;
const SEED: u64 = 0x5e1_5eed;

/// How much to run.
#[derive(Debug, Clone, PartialEq)]
pub struct SqlConfig {
    /// Files in the table-2 directory.
    pub du_files: usize,
    /// Smallest file counted.
    pub du_min_bytes: u64,
    /// Rows of the `kv` table the stall phase scans.
    pub scan_rows: usize,
    /// Bytes of each such row's value.
    pub value_bytes: usize,
    /// Rows per `sql_scan` chunk of the scans (one entry per stall measurement).
    pub chunk_rows: Vec<u32>,
    /// How long each measurement runs.
    pub per_run: Duration,
    /// Where the ext4 files go (default: the system temporary directory).
    pub baseline_dir: Option<PathBuf>,
}

impl SqlConfig {
    /// The report's configuration: 4000 files as in the paper, 200 000 rows.
    pub fn full() -> SqlConfig {
        SqlConfig {
            du_files: 4000,
            du_min_bytes: 20 * 1024,
            scan_rows: 200_000,
            value_bytes: 64,
            chunk_rows: vec![256, 4096],
            per_run: Duration::from_secs(3),
            baseline_dir: None,
        }
    }

    /// A smoke test of a second or two.
    pub fn quick() -> SqlConfig {
        SqlConfig {
            du_files: 200,
            du_min_bytes: 20 * 1024,
            scan_rows: 5_000,
            value_bytes: 64,
            chunk_rows: vec![256],
            per_run: Duration::from_millis(300),
            baseline_dir: None,
        }
    }
}

/// Run the workload against a tabosd with one partition on the server core.
pub fn run(settings: &Settings, config: &SqlConfig) -> Result<Vec<Record>, Error> {
    let target = Target::acquire(settings)?;
    measure::pin_or_warn(settings.client_core, "the sql client");
    let mut records = Vec::new();
    records.extend(du(&target, config)?);
    records.extend(stall(&target, settings, config)?);
    target.finish()?;
    Ok(records)
}

/// Table 2 three ways.
fn du(target: &Target, config: &SqlConfig) -> Result<Vec<Record>, Error> {
    let mut client = target.connect()?;
    let user = format!("sq{:08x}", Client::sched_task_id() as u32);
    let dir = format!("/{user}/du");
    let mut rng = StdRng::seed_from_u64(SEED);
    let sizes: Vec<u64> = (0..config.du_files)
        .map(|_| rng.gen_range(1..=2 * config.du_min_bytes.max(1)))
        .collect();
    let big = sizes.iter().filter(|s| **s >= config.du_min_bytes);
    let expected = (big.clone().sum::<u64>(), big.count() as u64);
    eprintln!("[sql-du] set-up: {} files in {dir}", config.du_files);
    {
        let mut fs = client.fs();
        fs.useradd(&user).map_err(|e| Error::call("useradd", e))?;
        fs.mkdir(&dir).map_err(|e| Error::call("mkdir", e))?;
        for (j, size) in sizes.iter().enumerate() {
            let path = format!("{dir}/f{j}");
            fs.create(&path, false)
                .map_err(|e| Error::call(format!("create {path}"), e))?;
            fs.write_at(&path, size - 1, &[1])
                .map_err(|e| Error::call(format!("write {path}"), e))?;
        }
    }
    let baseline = BaselineDir::fresh(config.baseline_dir.as_deref())?;
    let base = baseline.path().join("du");
    ext4::mkdir(&base)?;
    for (j, size) in sizes.iter().enumerate() {
        let path = base.join(format!("f{j}"));
        let file = std::fs::File::create(&path).map_err(|e| Error::io("create", e))?;
        file.set_len(*size).map_err(|e| Error::io("set_len", e))?;
    }
    let min = config.du_min_bytes;
    let sql = format!(
        "SELECT COALESCE(SUM(size_bytes), 0), COUNT(*) FROM fs_directory \
         WHERE _partition = (SELECT home_partition FROM fs_user WHERE user_name = '{user}') \
         AND (d_name = '{dir}' OR d_name LIKE '{dir}/%') \
         AND content_type <> 'Dir' AND size_bytes >= {min}"
    );
    let check = |got: (u64, u64), how: &str| {
        if got == expected {
            Ok(())
        } else {
            Err(Error::call(
                format!("table 2 via {how}"),
                format!("{got:?}, expected {expected:?}"),
            ))
        }
    };
    let mut records = Vec::new();
    eprintln!(
        "[sql-du] {SYSTEM}, SQL aggregate: {:.1} s",
        config.per_run.as_secs_f64()
    );
    let lat = crate::measure::timed_calls(config.per_run, || {
        let r = client
            .query(&sql)
            .map_err(|e| Error::call("SQL table 2", e))?;
        let int = |v: &SqlValue| match v {
            SqlValue::Integer(i) => Ok(*i as u64),
            other => Err(Error::call("SQL table 2", format!("{other:?}"))),
        };
        check((int(&r.rows[0][0])?, int(&r.rows[0][1])?), "SQL")
    })?;
    records.push(du_record(
        SYSTEM,
        "SQL (SQLite over sql_scan)",
        config,
        expected,
        &lat,
    ));
    eprintln!(
        "[sql-du] {SYSTEM}, du procedure: {:.1} s",
        config.per_run.as_secs_f64()
    );
    let lat = crate::measure::timed_calls(config.per_run, || {
        let du = client
            .fs()
            .du(&dir, min)
            .map_err(|e| Error::call("du", e))?;
        check((du.total_bytes, du.file_count), "du")
    })?;
    records.push(du_record(
        SYSTEM,
        "du procedure (1 call)",
        config,
        expected,
        &lat,
    ));
    let system = baseline.system();
    eprintln!(
        "[sql-du] {system}, readdir + stat walk: {:.1} s",
        config.per_run.as_secs_f64()
    );
    let lat = crate::measure::timed_calls(config.per_run, || check(ext4::du(&base, min)?, "ext4"))?;
    records.push(du_record(
        &system,
        "readdir + stat walk",
        config,
        expected,
        &lat,
    ));
    Ok(records)
}

fn du_record(
    system: &str,
    query: &str,
    config: &SqlConfig,
    expected: (u64, u64),
    lat: &Latencies,
) -> Record {
    let mean_s = lat.mean_us().unwrap_or(0.0) / 1e6;
    let record = Record::from_latencies(
        "sql-du",
        system,
        params([
            ("files", config.du_files.into()),
            ("min_size_bytes", config.du_min_bytes.into()),
            ("matching_files", expected.1.into()),
            ("matching_bytes", expected.0.into()),
            ("calls", lat.count().into()),
            ("query", query.into()),
        ]),
        lat,
        (mean_s > 0.0).then(|| 1.0 / mean_s),
    );
    report::progress(&record);
    record
}

/// The partition's stall under full scans, for each chunk size.
fn stall(target: &Target, settings: &Settings, config: &SqlConfig) -> Result<Vec<Record>, Error> {
    let mut loader = target.connect()?;
    eprintln!(
        "[sql-stall] set-up: {} kv rows of {} B",
        config.scan_rows, config.value_bytes
    );
    let value = vec![b'v'; config.value_bytes];
    let mut pending = Vec::new();
    for i in 0..config.scan_rows {
        let key = format!("sql-stall-{i:09}");
        let args = tabos_procs::builtin::kv_args(key.as_bytes(), &value);
        pending.push(
            loader
                .submit(ids::KV_PUT, 0, &args)
                .map_err(|e| Error::call("kv put", e))?,
        );
        if pending.len() == 256 || i + 1 == config.scan_rows {
            for c in loader
                .wait_for(&pending)
                .map_err(|e| Error::call("kv put", e))?
            {
                c.into_result().map_err(|e| Error::call("kv put", e))?;
            }
            pending.clear();
        }
    }
    let mut records = Vec::new();
    eprintln!(
        "[sql-stall] {SYSTEM}, null calls alone: {:.1} s",
        config.per_run.as_secs_f64()
    );
    let alone = probe(target, settings, config.per_run, &AtomicBool::new(false))?;
    let record = stall_record("none", None, &alone, None);
    report::progress(&record);
    records.push(record);
    let alone_max_us = alone.0.max_us();
    for &chunk_rows in &config.chunk_rows {
        eprintln!(
            "[sql-stall] {SYSTEM}, null calls during full scans ({chunk_rows}-row chunks): {:.1} s",
            config.per_run.as_secs_f64()
        );
        let before = scan_calls(target)?;
        let stop = AtomicBool::new(false);
        let (probed, scanner) = std::thread::scope(|scope| {
            let scanner = scope.spawn(|| -> Result<Scans, Error> {
                measure::pin_current(settings.client_core);
                let mut c = target.connect()?;
                let options = QueryOptions {
                    chunk_rows,
                    ..QueryOptions::default()
                };
                let mut scans = Scans::default();
                while !stop.load(Ordering::Relaxed) {
                    let start = Instant::now();
                    let r = c
                        .query_with("SELECT count(*), sum(length(value)) FROM kv", options)
                        .map_err(|e| Error::call("full scan", e))?;
                    let took = start.elapsed();
                    scans.lat.record(took);
                    scans.busy += took;
                    scans.rows += r.scans.rows;
                    scans.chunk_ns_max = scans.chunk_ns_max.max(r.scans.chunk_ns_max);
                }
                Ok(scans)
            });
            // Let the first scan start before probing.
            std::thread::sleep(Duration::from_millis(20));
            let probed = probe(target, settings, config.per_run, &stop);
            stop.store(true, Ordering::Relaxed);
            (probed, scanner.join().expect("the scanner does not panic"))
        });
        let scans = scanner?;
        let probed = probed?;
        let mut record = stall_record("full scans", Some(chunk_rows), &probed, alone_max_us);
        record.params.insert(
            "chunk_round_trip_us_max".into(),
            (scans.chunk_ns_max as f64 / 1000.0).into(),
        );
        let after = scan_calls(target)?;
        let calls = after.calls.saturating_sub(before.calls).max(1);
        let mean_us = after.total_ns.saturating_sub(before.total_ns) as f64 / calls as f64 / 1e3;
        let max_us = after.max_ns as f64 / 1e3;
        record
            .params
            .insert("scan_call_us_mean_at_partition".into(), mean_us.into());
        record
            .params
            .insert("scan_call_us_max_at_partition".into(), max_us.into());
        report::progress(&record);
        records.push(record);
        let secs = scans.busy.as_secs_f64();
        let record = Record::from_latencies(
            "sql-scan",
            SYSTEM,
            params([
                ("rows", config.scan_rows.into()),
                ("value_bytes", config.value_bytes.into()),
                ("chunk_rows", chunk_rows.into()),
                ("scans", scans.lat.count().into()),
                ("throughput", "rows/s".into()),
                ("latency", "one full-scan query".into()),
            ]),
            &scans.lat,
            (secs > 0.0).then(|| scans.rows as f64 / secs),
        );
        report::progress(&record);
        records.push(record);
    }
    Ok(records)
}

/// Partition 0's `sql_scan` counters (it times every such call).
#[derive(Debug, Clone, Copy)]
struct ScanCalls {
    calls: u64,
    /// Sum of their times (from the mean), nanoseconds.
    total_ns: u64,
    /// Longest so far in the run, nanoseconds.
    max_ns: u64,
}

/// Read [`ScanCalls`] from `sys_procedures`; zeros before the first scan.
fn scan_calls(target: &Target) -> Result<ScanCalls, Error> {
    let mut c = target.connect()?;
    let r = c
        .query(
            "SELECT calls, mean_ns, max_ns FROM sys_procedures \
             WHERE name = 'sql_scan' AND partition = 0",
        )
        .map_err(|e| Error::call("sys_procedures", e))?;
    match r.rows.first().map(Vec::as_slice) {
        None => Ok(ScanCalls {
            calls: 0,
            total_ns: 0,
            max_ns: 0,
        }),
        Some([SqlValue::Integer(calls), SqlValue::Integer(mean), SqlValue::Integer(max)]) => {
            Ok(ScanCalls {
                calls: *calls as u64,
                total_ns: (*calls as u64).saturating_mul(*mean as u64),
                max_ns: *max as u64,
            })
        }
        Some(other) => Err(Error::call("sys_procedures", format!("{other:?}"))),
    }
}

/// What the scanner thread measured.
#[derive(Default)]
struct Scans {
    lat: Latencies,
    busy: Duration,
    rows: u64,
    chunk_ns_max: u64,
}

/// Null-call round trips to partition 0 for `per_run` (or until `stop`).
fn probe(
    target: &Target,
    settings: &Settings,
    per_run: Duration,
    stop: &AtomicBool,
) -> Result<(Latencies, Duration), Error> {
    measure::pin_current(settings.client_core);
    let mut c = target.connect()?;
    let mut lat = Latencies::new();
    let started = Instant::now();
    let deadline = started + per_run;
    while Instant::now() < deadline && !stop.load(Ordering::Relaxed) {
        let start = Instant::now();
        c.null(0).map_err(|e| Error::call("null", e))?;
        lat.record(start.elapsed());
    }
    Ok((lat, started.elapsed()))
}

fn stall_record(
    scan: &str,
    chunk_rows: Option<u32>,
    (lat, elapsed): &(Latencies, Duration),
    alone_max_us: Option<f64>,
) -> Record {
    let secs = elapsed.as_secs_f64();
    let num = |x: Option<f64>| x.map_or(Value::Null, Value::from);
    Record::from_latencies(
        "sql-stall",
        SYSTEM,
        params([
            ("during", scan.into()),
            ("chunk_rows", chunk_rows.map_or(Value::Null, Value::from)),
            ("calls", lat.count().into()),
            ("max_us", num(lat.max_us())),
            ("max_us_without_scan", num(alone_max_us.or(lat.max_us()))),
            ("latency", "null call round trip".into()),
        ]),
        lat,
        (secs > 0.0).then(|| lat.count() as f64 / secs),
    )
}

/// Summary lines: table 2 through SQL against the procedure and ext4, and the stall.
pub fn ratios(records: &[Record]) -> Vec<String> {
    let du = |query: &str| {
        records
            .iter()
            .find(|r| {
                r.workload == "sql-du"
                    && r.params.get("query").and_then(Value::as_str) == Some(query)
            })
            .and_then(|r| r.p50_us)
    };
    let mut lines = Vec::new();
    if let (Some(sql), Some(proc_), Some(walk)) = (
        du("SQL (SQLite over sql_scan)"),
        du("du procedure (1 call)"),
        du("readdir + stat walk"),
    ) {
        lines.push(format!(
            "sql-du p50: SQL {sql:.0} us, du procedure {proc_:.0} us, ext4 walk {walk:.0} us \
             (SQL/procedure {:.1}x, SQL/ext4 {:.2}x)",
            sql / proc_,
            sql / walk
        ));
    }
    for r in records.iter().filter(|r| r.workload == "sql-stall") {
        let get = |k: &str| r.params.get(k).and_then(Value::as_f64);
        if let (Some(max), Some(chunk)) = (get("max_us"), get("chunk_rows")) {
            lines.push(format!(
                "sql-stall: {chunk}-row chunks: sql_scan call at the partition mean {:.0} us, \
                 longest {:.0} us, \
                 longest chunk round trip {:.0} us; longest null call during full scans \
                 {max:.0} us (p99 {:.0} us), without scans {:.0} us",
                get("scan_call_us_mean_at_partition").unwrap_or(0.0),
                get("scan_call_us_max_at_partition").unwrap_or(0.0),
                get("chunk_round_trip_us_max").unwrap_or(0.0),
                r.p99_us.unwrap_or(0.0),
                get("max_us_without_scan").unwrap_or(0.0)
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_is_smaller_than_full() {
        let (q, f) = (SqlConfig::quick(), SqlConfig::full());
        assert!(q.du_files < f.du_files && q.scan_rows < f.scan_rows && q.per_run < f.per_run);
    }
}
