//! Guards that `tabos-bench invoke --quick --json` runs end to end (starting and
//! stopping its own tabosd) and writes every expected record; never asserts on speed.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

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

#[test]
fn invoke_quick_writes_every_record() {
    let bench_exe = Path::new(env!("CARGO_BIN_EXE_tabos-bench"));
    ensure_tabosd(bench_exe);
    let json = std::env::temp_dir().join(format!("tabos-bench-smoke-{}.json", std::process::id()));
    let output = Command::new(bench_exe)
        .args(["invoke", "--quick", "--json"])
        .arg(&json)
        .output()
        .expect("tabos-bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tabos-bench failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(
        stdout.contains("| workload | system |"),
        "no summary table:\n{stdout}"
    );

    let text = std::fs::read_to_string(&json).expect("the JSON file was written");
    let _ = std::fs::remove_file(&json);
    let records: Vec<Value> = match serde_json::from_str(&text).expect("valid JSON") {
        Value::Array(records) => records,
        other => panic!("expected a JSON array, got {other}"),
    };
    let expected = [
        ("invoke-null", "tabos-shm", None),
        ("invoke-null-pipelined", "tabos-shm", Some(1)),
        ("invoke-null-pipelined", "tabos-shm", Some(8)),
        ("invoke-null-pipelined", "tabos-shm", Some(64)),
        ("invoke-null", "linux-syscall", None),
        ("invoke-null", "tcp-loopback", None),
    ];
    assert_eq!(records.len(), expected.len(), "records: {text}");
    for (workload, system, depth) in expected {
        let found = records.iter().find(|r| {
            r["workload"] == workload
                && r["system"] == system
                && depth.is_none_or(|d| r["params"]["depth"] == d)
        });
        let r = found.unwrap_or_else(|| panic!("no {workload}/{system} depth {depth:?} in {text}"));
        assert!(r["params"].is_object(), "params is an object: {r}");
        let ops = r["ops_per_s"].as_f64().unwrap_or(0.0);
        assert!(ops > 0.0, "ops_per_s must be positive: {r}");
        for field in ["p50_us", "p99_us", "p999_us"] {
            let v = r[field].as_f64().unwrap_or(-1.0);
            assert!(v >= 0.0, "{field} must be a non-negative number: {r}");
        }
    }
}
