//! Guards that every `tabos-bench` subcommand (invoke, sched, ipc, fs, sql) runs end
//! to end with `--quick --json` (starting and stopping its own tabosd) and writes
//! every expected record with a positive throughput; never asserts on speed. The runs
//! take turns (one benchmark at a time), as parallel runs would only slow each other
//! down. The PostgreSQL records are expected where PostgreSQL is installed (CI runs
//! scripts/install-postgres.sh); elsewhere the runs leave them out with
//! `--no-postgres` and say so.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// Held while a benchmark runs.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// PostgreSQL's system names.
const POSTGRES: &str = "postgres";
const POSTGRES_SYNC: &str = "postgres-sync";

/// Whether PostgreSQL is installed, so that `test` can expect its records; says why
/// not when it is not.
fn postgres_installed(test: &str) -> bool {
    let found = tabos_bench::baseline::postgres::bin_dir();
    if found.is_none() {
        eprintln!(
            "{test}: PostgreSQL records skipped (--no-postgres): no initdb, pg_ctl and \
             postgres on PATH or in /usr/lib/postgresql/*/bin; install them with \
             scripts/install-postgres.sh"
        );
    }
    found.is_some()
}

/// The tabosd next to the driver (where the driver looks by default), built with the
/// same profile if it is not there yet.
fn ensure_tabosd(bench_exe: &Path) -> PathBuf {
    let profile_dir = bench_exe.parent().expect("the driver has a directory");
    let tabosd = profile_dir.join("tabosd");
    if !tabosd.is_file() {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", "tabos-server", "--bin", "tabosd"]);
        match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") | None => {}
            Some("release") => {
                build.arg("--release");
            }
            Some(profile) => {
                build.args(["--profile", profile]);
            }
        }
        let status = build.status().expect("cargo runs");
        assert!(status.success(), "building tabosd failed: {status}");
    }
    assert!(tabosd.is_file(), "no tabosd at {}", tabosd.display());
    tabosd
}

/// Run `tabos-bench <args> --quick --json FILE` and return its records.
fn run_quick(args: &[&str]) -> Vec<Value> {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let bench_exe = Path::new(env!("CARGO_BIN_EXE_tabos-bench"));
    ensure_tabosd(bench_exe);
    let json = std::env::temp_dir().join(format!(
        "tabos-bench-smoke-{}-{}.json",
        args[0],
        std::process::id()
    ));
    let output = Command::new(bench_exe)
        .args(args)
        .args(["--quick", "--json"])
        .arg(&json)
        .output()
        .expect("tabos-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tabos-bench {args:?} failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("| workload | system |"),
        "no summary table:\n{stdout}"
    );
    let text = std::fs::read_to_string(&json).expect("the JSON file was written");
    let _ = std::fs::remove_file(&json);
    match serde_json::from_str(&text).expect("valid JSON") {
        Value::Array(records) => records,
        other => panic!("expected a JSON array, got {other}"),
    }
}

/// Every record has the schema's fields, params an object, a positive throughput and
/// non-negative latencies.
fn check_fields(records: &[Value]) {
    assert!(!records.is_empty(), "no records");
    for r in records {
        assert!(r["workload"].is_string() && r["system"].is_string(), "{r}");
        assert!(r["params"].is_object(), "params is an object: {r}");
        let ops = r["ops_per_s"].as_f64().unwrap_or(0.0);
        assert!(ops > 0.0, "ops_per_s must be positive: {r}");
        for field in ["p50_us", "p99_us", "p999_us"] {
            let v = r[field].as_f64().unwrap_or(-1.0);
            assert!(v >= 0.0, "{field} must be a non-negative number: {r}");
        }
    }
}

/// The records of `workload` by `system` whose params contain every `(key, value)`.
fn matching<'a>(
    records: &'a [Value],
    workload: &str,
    system: Option<&str>,
    params: &[(&str, Value)],
) -> Vec<&'a Value> {
    records
        .iter()
        .filter(|r| {
            r["workload"] == workload
                && system.is_none_or(|s| r["system"] == s)
                && params.iter().all(|(k, v)| r["params"][*k] == *v)
        })
        .collect()
}

/// Exactly one record of `workload` by `system` with `params`.
fn expect_one(records: &[Value], workload: &str, system: Option<&str>, params: &[(&str, Value)]) {
    let found = matching(records, workload, system, params);
    assert_eq!(
        found.len(),
        1,
        "expected one {workload}/{system:?} record with {params:?}, found {}: {}",
        found.len(),
        serde_json::to_string_pretty(records).unwrap()
    );
}

#[test]
fn invoke_quick_writes_every_record() {
    let records = run_quick(&["invoke"]);
    check_fields(&records);
    for system in ["tabos-shm", "tabos-tcp"] {
        expect_one(&records, "invoke-null", Some(system), &[]);
        for depth in [1, 8, 64] {
            expect_one(
                &records,
                "invoke-null-pipelined",
                Some(system),
                &[("depth", depth.into())],
            );
        }
    }
    for baseline in ["linux-syscall", "tcp-blocking", "tcp-busypoll", "grpc"] {
        expect_one(&records, "invoke-null", Some(baseline), &[]);
    }
    // Other baselines (PostgreSQL) may join; these systems' records are all there.
    let ours = records
        .iter()
        .filter(|r| {
            [
                "tabos-shm",
                "tabos-tcp",
                "linux-syscall",
                "tcp-blocking",
                "tcp-busypoll",
                "grpc",
            ]
            .iter()
            .any(|s| r["system"] == *s)
        })
        .count();
    assert_eq!(ours, 12, "records: {records:?}");
}

#[test]
fn sched_quick_writes_every_record() {
    let postgres = postgres_installed("sched_quick_writes_every_record");
    let records = if postgres {
        run_quick(&["sched"])
    } else {
        run_quick(&["sched", "--no-postgres"])
    };
    check_fields(&records);
    for policy in ["fifo", "locality", "least-loaded"] {
        expect_one(
            &records,
            &format!("sched-{policy}-closed"),
            Some("tabos-shm"),
            &[("depth", 64.into())],
        );
    }
    for load in [50_000.0, 200_000.0] {
        expect_one(
            &records,
            "sched-fifo-open",
            Some("tabos-shm"),
            &[("load_tasks_per_s", load.into())],
        );
    }
    // The peak record exists only when a load kept p99 under 1 ms: a slow machine
    // must not fail this test, so only its shape is checked.
    let peaks = matching(&records, "sched-fifo-peak", Some("tabos-shm"), &[]);
    assert!(peaks.len() <= 1, "one peak at most: {records:?}");
    let tabos = records
        .iter()
        .filter(|r| r["system"] == "tabos-shm")
        .count();
    assert_eq!(tabos, 5 + peaks.len(), "records: {records:?}");
    let pg_records = records.len() - tabos;
    if !postgres {
        assert_eq!(pg_records, 0, "--no-postgres: {records:?}");
        return;
    }
    for system in [POSTGRES, POSTGRES_SYNC] {
        for connections in [1, 2] {
            expect_one(
                &records,
                "sched-fifo-closed",
                Some(system),
                &[("connections", connections.into())],
            );
        }
    }
    // The sweep stops after a load PostgreSQL falls behind on (a slow machine may at
    // the first), and the peak exists only when a load kept p99 under 1 ms.
    expect_one(
        &records,
        "sched-fifo-open",
        Some(POSTGRES),
        &[("load_tasks_per_s", 1000.0.into())],
    );
    let open = matching(&records, "sched-fifo-open", Some(POSTGRES), &[]).len();
    let peaks = matching(&records, "sched-fifo-peak", Some(POSTGRES), &[]).len();
    assert!(open <= 2 && peaks <= 1, "records: {records:?}");
    assert_eq!(pg_records, 4 + open + peaks, "records: {records:?}");
}

#[test]
fn ipc_quick_writes_every_record() {
    let records = run_quick(&["ipc"]);
    check_fields(&records);
    let systems = [
        "tabos-shm",
        "tabos-tcp",
        "grpc",
        "tcp-blocking",
        "tcp-busypoll",
    ];
    for system in systems {
        for bytes in [64, 8192] {
            expect_one(
                &records,
                "ipc-pingpong",
                Some(system),
                &[("message_bytes", bytes.into()), ("pairs", 1.into())],
            );
        }
        expect_one(
            &records,
            "ipc-ping20pong20",
            Some(system),
            &[("message_bytes", 64.into()), ("pairs", 1.into())],
        );
        for receivers in [1, 10] {
            expect_one(
                &records,
                "ipc-multicast",
                Some(system),
                &[("receivers", receivers.into())],
            );
        }
    }
    // Other baselines (PostgreSQL) may join; these systems' records are all there.
    let ours = records
        .iter()
        .filter(|r| systems.iter().any(|s| r["system"] == *s))
        .count();
    assert_eq!(ours, 5 * systems.len(), "records: {records:?}");
}

#[test]
fn fs_quick_writes_every_record() {
    let postgres = postgres_installed("fs_quick_writes_every_record");
    let records = if postgres {
        run_quick(&["fs"])
    } else {
        run_quick(&["fs", "--no-postgres"])
    };
    check_fields(&records);
    let tabos = Some("tabos-shm");
    // The baseline is named after the filesystem it ran on (`ext4` here, usually).
    let baseline: Vec<&str> = records
        .iter()
        .filter_map(|r| r["system"].as_str())
        .filter(|s| !["tabos-shm", POSTGRES, POSTGRES_SYNC].contains(s))
        .collect();
    assert!(!baseline.is_empty(), "no baseline records: {records:?}");
    let baseline = Some(baseline[0]);
    for workload in ["fs-10a", "fs-10b"] {
        for op in ["read", "write", "mixed"] {
            for system in [tabos, baseline] {
                expect_one(
                    &records,
                    workload,
                    system,
                    &[("op", op.into()), ("clients", 2.into())],
                );
            }
        }
    }
    for api in [
        "create procedure (1 call)",
        "Fs::create (create + stat: 2 calls)",
    ] {
        expect_one(&records, "fs-create", tabos, &[("api", api.into())]);
    }
    for system in [tabos, baseline] {
        expect_one(&records, "fs-delete", system, &[("clients", 2.into())]);
        expect_one(&records, "fs-du", system, &[("files", 400.into())]);
    }
    expect_one(&records, "fs-create", baseline, &[]);
    let pg_records = if postgres {
        for system in [POSTGRES, POSTGRES_SYNC] {
            for workload in ["fs-create", "fs-delete"] {
                expect_one(&records, workload, Some(system), &[("clients", 2.into())]);
            }
        }
        4
    } else {
        0
    };
    assert_eq!(
        records.len(),
        12 + 3 + 2 + 2 + pg_records,
        "records: {records:?}"
    );
}

#[test]
fn sql_quick_writes_every_record() {
    let records = run_quick(&["sql"]);
    check_fields(&records);
    let tabos = Some("tabos-shm");
    for query in [
        "SQL (SQLite over sql_scan)",
        "du procedure (1 call)",
        "readdir + stat walk",
    ] {
        expect_one(&records, "sql-du", None, &[("query", query.into())]);
    }
    expect_one(&records, "sql-stall", tabos, &[("during", "none".into())]);
    let scans = matching(&records, "sql-stall", tabos, &[("chunk_rows", 256.into())]);
    assert_eq!(scans.len(), 1, "{records:?}");
    assert!(
        scans[0]["params"]["chunk_round_trip_us_max"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    expect_one(&records, "sql-scan", tabos, &[("chunk_rows", 256.into())]);
    assert_eq!(records.len(), 3 + 2 + 1, "records: {records:?}");
}

#[test]
fn durability_quick_writes_every_record() {
    let records = run_quick(&["durability"]);
    check_fields(&records);
    for mode in ["off", "async", "sync"] {
        let system = format!("tabos-{mode}");
        for workload in [
            "durability-kv-put",
            "durability-sched-fifo",
            "durability-ipc-send-recv",
        ] {
            expect_one(
                &records,
                workload,
                Some(&system),
                &[("durability", mode.into())],
            );
            let record = records
                .iter()
                .find(|r| r["workload"] == workload && r["system"] == system.as_str())
                .unwrap();
            let params = &record["params"];
            let rounds = params["rounds"].as_u64().unwrap() as usize;
            assert_eq!(
                params["round_calls_per_s"].as_array().unwrap().len(),
                rounds,
                "a rate per round: {record}"
            );
            if mode == "off" {
                assert!(params.get("ratio_to_off_median").is_none(), "{record}");
            } else {
                let ratios = params["ratio_to_off_per_round"].as_array().unwrap();
                assert_eq!(ratios.len(), rounds, "a ratio per round: {record}");
                let median = params["ratio_to_off_median"].as_f64().unwrap();
                assert!(
                    ratios.iter().any(|r| r.as_f64() == Some(median)),
                    "the median is one of the rounds' ratios: {record}"
                );
            }
        }
    }
    expect_one(
        &records,
        "durability-snapshot-pause",
        Some("tabos-sync"),
        &[],
    );
    assert_eq!(
        matching(&records, "durability-recovery", Some("tabos-sync"), &[]).len(),
        2,
        "replay and snapshot recovery"
    );
    assert_eq!(records.len(), 9 + 1 + 2, "records: {records:?}");
}
