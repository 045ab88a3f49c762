//! Workload `invoke`: the cost of calling a stored procedure that does nothing, the
//! floor under every tabos service.
//!
//! Measured in one run, on the same two cores:
//! - `invoke-null` / `tabos-shm`: sequential `null` calls over the shared-memory rings,
//!   each round trip timed on its own;
//! - `invoke-null-pipelined` / `tabos-shm`: `depth` calls kept in flight with
//!   `submit` + `flush` + `wait`, for calls per second (latency is submit to seen
//!   completion);
//! - `invoke-null` / `linux-syscall`: `getppid`, the cheapest kernel service;
//! - `invoke-null` / `tcp-loopback`: a blocking 8-byte TCP echo round trip.

use crate::baseline::{syscall, tcp};
use crate::measure::{self, Latencies};
use crate::report::{self, params, Record};
use crate::server::Target;
use crate::{Error, Settings};
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use tabos_client::{ids, Client, Completion, Status};

/// Workload name of sequential round trips (tabos and both baselines).
pub const WORKLOAD_NULL: &str = "invoke-null";
/// Workload name of pipelined tabos calls.
pub const WORKLOAD_NULL_PIPELINED: &str = "invoke-null-pipelined";
/// System name of tabos over shared memory.
pub const SYSTEM_TABOS_SHM: &str = "tabos-shm";

/// How much of each phase to run.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeConfig {
    /// Untimed calls before the sequential phase.
    pub warmup_calls: u64,
    /// Timed sequential tabos calls.
    pub sequential_calls: u64,
    /// Pipeline depths to measure (calls in flight).
    pub depths: Vec<usize>,
    /// Timed duration of each pipelined depth (after a short untimed warm-up).
    pub per_depth: Duration,
    /// getppid calls of the syscall baseline.
    pub syscall_calls: u64,
    /// Round trips of the TCP baseline.
    pub tcp_round_trips: u64,
}

impl InvokeConfig {
    /// The configuration for reports: about half a minute.
    pub fn full() -> InvokeConfig {
        InvokeConfig {
            warmup_calls: 100_000,
            sequential_calls: 2_000_000,
            depths: vec![1, 8, 64],
            per_depth: Duration::from_secs(5),
            syscall_calls: 2_000_000,
            tcp_round_trips: 200_000,
        }
    }

    /// The smoke-test configuration: a few seconds at most, even in a debug build.
    pub fn quick() -> InvokeConfig {
        InvokeConfig {
            warmup_calls: 1_000,
            sequential_calls: 20_000,
            depths: vec![1, 8, 64],
            per_depth: Duration::from_millis(300),
            syscall_calls: 20_000,
            tcp_round_trips: 2_000,
        }
    }
}

/// Run every phase against the tabosd `settings` name (started here unless
/// `--connect`), and stop that tabosd again whatever happens.
pub fn run(settings: &Settings, config: &InvokeConfig) -> Result<Vec<Record>, Error> {
    assert!(
        config.sequential_calls > 0,
        "sequential_calls must be positive"
    );
    assert!(
        config.depths.iter().all(|d| *d > 0),
        "depths must be positive"
    );
    measure::pin_or_warn(settings.client_core, "the client thread");
    let timer_ns = measure::timer_overhead_ns();
    eprintln!("[invoke] reading the clock costs {timer_ns} ns (included once in each timed call)");
    // Stopped by `finish`, or by its Drop when a phase fails.
    let target = Target::acquire(settings)?;
    let mut records = Vec::new();
    {
        // Closed before the server is stopped.
        let mut client = target.connect()?;
        records.push(sequential(&mut client, config, timer_ns)?);
        for &depth in &config.depths {
            records.push(pipelined(&mut client, depth, config.per_depth)?);
        }
    }
    records.push(syscall::run(WORKLOAD_NULL, config.syscall_calls, timer_ns));
    records.push(tcp::run(
        WORKLOAD_NULL,
        config.tcp_round_trips,
        settings.server_core,
        timer_ns,
    )?);
    target.finish()?;
    Ok(records)
}

fn null_call(client: &mut Client, reply: &mut Vec<u8>) -> Result<(), Error> {
    client
        .call_into(ids::NULL, 0, &[], reply)
        .map_err(|e| Error::call("null call", e))?;
    if !reply.is_empty() {
        return Err(Error::call(
            "null call",
            format!("replied {} bytes, expected none", reply.len()),
        ));
    }
    Ok(())
}

/// Sequential round trips, each timed.
fn sequential(client: &mut Client, config: &InvokeConfig, timer_ns: u64) -> Result<Record, Error> {
    let calls = config.sequential_calls;
    eprintln!(
        "[{WORKLOAD_NULL}] tabos shm null, sequential: {} warm-up + {calls} timed calls",
        config.warmup_calls
    );
    let mut reply = Vec::new();
    for _ in 0..config.warmup_calls {
        null_call(client, &mut reply)?;
    }
    let mut lat = Latencies::new();
    let started = Instant::now();
    for _ in 0..calls {
        let start = Instant::now();
        null_call(client, &mut reply)?;
        lat.record(start.elapsed());
    }
    let elapsed = started.elapsed();
    assert_eq!(lat.count(), calls, "every call was recorded");
    let record = Record::from_latencies(
        WORKLOAD_NULL,
        SYSTEM_TABOS_SHM,
        params([
            ("proc", "null".into()),
            ("calls", calls.into()),
            ("timing", "per-call".into()),
            ("timer_overhead_ns", timer_ns.into()),
        ]),
        &lat,
        Some(calls as f64 / elapsed.as_secs_f64()),
    );
    report::progress(&record);
    Ok(record)
}

/// `depth` calls kept in flight for `per_depth` (after an untimed warm-up).
fn pipelined(client: &mut Client, depth: usize, per_depth: Duration) -> Result<Record, Error> {
    eprintln!(
        "[{WORKLOAD_NULL_PIPELINED}] tabos shm null, depth {depth}: {:.1} s",
        per_depth.as_secs_f64()
    );
    keep_in_flight(client, depth, per_depth.mul_f64(0.2), None)?;
    let mut lat = Latencies::new();
    let started = Instant::now();
    let calls = keep_in_flight(client, depth, per_depth, Some(&mut lat))?;
    let elapsed = started.elapsed();
    let record = Record::from_latencies(
        WORKLOAD_NULL_PIPELINED,
        SYSTEM_TABOS_SHM,
        params([
            ("proc", "null".into()),
            ("depth", depth.into()),
            ("seconds", per_depth.as_secs_f64().into()),
            ("calls", calls.into()),
            ("timing", "submit-to-completion".into()),
        ]),
        &lat,
        Some(calls as f64 / elapsed.as_secs_f64()),
    );
    report::progress(&record);
    Ok(record)
}

fn check_completion(c: &Completion, expected_id: Option<u64>) -> Result<(), Error> {
    let doing = "pipelined null call";
    if Some(c.request_id) != expected_id {
        return Err(Error::call(
            doing,
            format!(
                "completion {} arrived, expected {expected_id:?} (replies of one partition come in order)",
                c.request_id
            ),
        ));
    }
    if c.status_code != Status::Ok as u32 {
        return Err(Error::call(doing, c.clone().into_result().unwrap_err()));
    }
    if !c.reply.is_empty() {
        return Err(Error::call(
            doing,
            format!("replied {} bytes", c.reply.len()),
        ));
    }
    Ok(())
}

/// Keep `depth` null calls in flight for `run_for`, then let the last ones finish.
/// Records each call's latency into `lat` if given; returns the calls completed.
fn keep_in_flight(
    client: &mut Client,
    depth: usize,
    run_for: Duration,
    mut lat: Option<&mut Latencies>,
) -> Result<u64, Error> {
    assert!(depth > 0, "depth must be positive");
    assert_eq!(client.in_flight(), 0, "no calls in flight on entry");
    let mut sent: VecDeque<(u64, Instant)> = VecDeque::with_capacity(depth);
    let mut done: Vec<Completion> = Vec::with_capacity(depth);
    let deadline = Instant::now() + run_for;
    let mut completed = 0u64;
    loop {
        let now = Instant::now();
        if now < deadline && sent.len() < depth {
            while sent.len() < depth {
                let id = client
                    .submit(ids::NULL, 0, &[])
                    .map_err(|e| Error::call("submitting a pipelined null call", e))?;
                sent.push_back((id, now));
            }
            client.flush();
        }
        if sent.is_empty() {
            break;
        }
        done.clear();
        client
            .wait(&mut done, 1)
            .map_err(|e| Error::call("waiting for pipelined null calls", e))?;
        let now = Instant::now();
        for c in &done {
            let front = sent.pop_front();
            check_completion(c, front.map(|(id, _)| id))?;
            if let (Some(lat), Some((_, submitted))) = (lat.as_deref_mut(), front) {
                lat.record(now - submitted);
            }
            completed += 1;
        }
    }
    assert_eq!(client.in_flight(), 0, "every call finished on exit");
    Ok(completed)
}

fn find<'a>(records: &'a [Record], workload: &str, system: &str) -> Option<&'a Record> {
    records
        .iter()
        .find(|r| r.workload == workload && r.system == system)
}

/// Lines comparing the tabos null call with the baselines of the same run (medians).
pub fn ratios(records: &[Record]) -> Vec<String> {
    let p50 = |system| find(records, WORKLOAD_NULL, system).and_then(|r| r.p50_us);
    let mut lines = Vec::new();
    if let Some(shm) = p50(SYSTEM_TABOS_SHM) {
        if let Some(sys) = p50(syscall::SYSTEM) {
            lines.push(format!(
                "tabos shm null call p50 / getppid syscall p50 = {:.2} ({shm:.3} µs vs {sys:.3} µs)",
                shm / sys
            ));
        }
        if let Some(tcp) = p50(tcp::SYSTEM) {
            lines.push(format!(
                "tabos shm null call p50 / loopback TCP round trip p50 = {:.3} (TCP is {:.1}x slower: {tcp:.3} µs vs {shm:.3} µs)",
                shm / tcp,
                tcp / shm
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(system: &str, p50: f64) -> Record {
        Record {
            workload: WORKLOAD_NULL.into(),
            system: system.into(),
            params: Default::default(),
            p50_us: Some(p50),
            p99_us: None,
            p999_us: None,
            ops_per_s: None,
        }
    }

    #[test]
    fn ratios_compare_medians_of_the_same_run() {
        let lines = ratios(&[
            rec(SYSTEM_TABOS_SHM, 1.0),
            rec(syscall::SYSTEM, 0.5),
            rec(tcp::SYSTEM, 20.0),
        ]);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("= 2.00"), "{}", lines[0]);
        assert!(lines[1].contains("20.0x"), "{}", lines[1]);
        assert!(ratios(&[rec(syscall::SYSTEM, 0.5)]).is_empty());
    }

    #[test]
    fn quick_is_smaller_than_full() {
        let (q, f) = (InvokeConfig::quick(), InvokeConfig::full());
        assert!(q.sequential_calls < f.sequential_calls);
        assert!(q.per_depth < f.per_depth);
        assert_eq!(q.depths, f.depths);
    }
}
