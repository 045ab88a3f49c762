//! Baseline: a trivial system call (`getppid`, through std's safe `parent_id`).
//!
//! Single calls are timed one by one when a call costs well above reading the clock;
//! otherwise batches of [`BATCH_CALLS`] are timed and divided, and the record says so
//! (`timing`: `per-call` or `batch-mean-100`).

use crate::measure::Latencies;
use crate::report::{self, params, Record};
use std::hint::black_box;
use std::time::Instant;

/// System name of this baseline in records.
pub const SYSTEM: &str = "linux-syscall";
/// Calls per timed batch when single calls are too cheap to time.
pub const BATCH_CALLS: u64 = 100;
/// Single-call timing is used when a call's median is at least this many times the
/// cost of reading the clock.
const PER_CALL_OVER_TIMER_MIN: u64 = 4;

fn getppid() -> u32 {
    // A real getppid(2) system call each time (glibc does not cache it).
    std::os::unix::process::parent_id()
}

fn time_single_calls(calls: u64) -> Latencies {
    let mut lat = Latencies::new();
    for _ in 0..calls {
        let start = Instant::now();
        black_box(getppid());
        lat.record(start.elapsed());
    }
    lat
}

fn time_batches(calls: u64) -> Latencies {
    let mut lat = Latencies::new();
    for _ in 0..calls.div_ceil(BATCH_CALLS) {
        let start = Instant::now();
        for _ in 0..BATCH_CALLS {
            black_box(getppid());
        }
        let ns = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        lat.record_ns(ns / BATCH_CALLS);
    }
    lat
}

/// Measure `calls` getppid calls on the calling (pinned) thread. `timer_ns` is the
/// median cost of reading the clock ([`crate::measure::timer_overhead_ns`]).
pub fn run(workload: &str, calls: u64, timer_ns: u64) -> Record {
    assert!(calls > 0, "at least one call");
    eprintln!("[{workload}] linux getppid syscall: {calls} calls");
    // Warm up, and see whether single calls are long enough to time one by one.
    let probe = time_single_calls(calls.min(10_000));
    let probe_p50_ns = (probe.p50_us().expect("probe recorded calls") * 1000.0) as u64;
    let per_call = probe_p50_ns >= PER_CALL_OVER_TIMER_MIN * timer_ns.max(1);
    let started = Instant::now();
    let lat = if per_call {
        time_single_calls(calls)
    } else {
        time_batches(calls)
    };
    let elapsed = started.elapsed().as_secs_f64();
    let timing = if per_call {
        "per-call".to_string()
    } else {
        format!("batch-mean-{BATCH_CALLS}")
    };
    let record = Record::from_latencies(
        workload,
        SYSTEM,
        params([
            ("call", "getppid".into()),
            ("calls", calls.into()),
            ("timing", timing.into()),
            ("timer_overhead_ns", timer_ns.into()),
        ]),
        &lat,
        // Includes the clock reads: a lower bound on the raw syscall rate.
        Some(calls as f64 / elapsed),
    );
    report::progress(&record);
    record
}
