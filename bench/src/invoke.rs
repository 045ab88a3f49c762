//! Workload `invoke`: the cost of calling a stored procedure that does nothing, the
//! floor under every tabos service.
//!
//! Measured in one run, on the same two cores:
//! - `invoke-null` / `tabos-shm`: sequential `null` calls over the shared-memory rings,
//!   each round trip timed on its own;
//! - `invoke-null-pipelined` / `tabos-shm`: `depth` calls kept in flight with
//!   `submit` + `flush` + `wait`, for calls per second (latency is submit to seen
//!   completion);
//! - the same two over loopback TCP (`tabos-tcp`): a client connected to the node's
//!   `--listen` address, through its io_uring network thread, one connection;
//! - `invoke-null` / `linux-syscall`: `getppid`, the cheapest kernel service;
//! - `invoke-null` / `tcp-blocking` and `tcp-busypoll`: an 8-byte raw TCP echo round
//!   trip, sleeping in recv(2) or spinning on it;
//! - `invoke-null` / `grpc`: a tonic unary `Null` call over HTTP/2 without TLS.
//!
//! The server side of every system (tabosd's partition and network thread, the echo
//! and gRPC server threads) is on the server core, the caller on the client core.
//! Each tabos transport gets a tabosd started for it (the TCP one with `--listen`), so
//! the threads of one never share the server core with the other's.

use crate::baseline::{grpc, postgres, syscall, tcp};
use crate::measure::{self, Latencies};
use crate::report::{self, params, Record};
use crate::server::{Layout, Target};
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
/// System name of tabos over loopback TCP.
pub const SYSTEM_TABOS_TCP: &str = "tabos-tcp";

/// How the tabos client reaches the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Net {
    /// Shared-memory rings (a Unix socket path).
    Shm,
    /// TCP to the node's `--listen` address (`HOST:PORT`).
    Tcp,
}

impl Net {
    /// Both, in report order.
    pub const ALL: [Net; 2] = [Net::Shm, Net::Tcp];

    /// The name on the command line: `shm` or `tcp`.
    pub fn name(self) -> &'static str {
        match self {
            Net::Shm => "shm",
            Net::Tcp => "tcp",
        }
    }

    /// The system name in records.
    pub fn system(self) -> &'static str {
        match self {
            Net::Shm => SYSTEM_TABOS_SHM,
            Net::Tcp => SYSTEM_TABOS_TCP,
        }
    }
}

/// How much of each phase to run.
#[derive(Debug, Clone, PartialEq)]
pub struct InvokeConfig {
    /// Untimed calls before the sequential phase.
    pub warmup_calls: u64,
    /// How tabos is reached: each measured in turn.
    pub nets: Vec<Net>,
    /// Timed sequential tabos calls over shared memory.
    pub sequential_calls: u64,
    /// Timed sequential tabos calls over TCP.
    pub tcp_sequential_calls: u64,
    /// Pipeline depths to measure (calls in flight).
    pub depths: Vec<usize>,
    /// Timed duration of each pipelined depth (after a short untimed warm-up).
    pub per_depth: Duration,
    /// getppid calls of the syscall baseline.
    pub syscall_calls: u64,
    /// Round trips of each raw TCP baseline (blocking, busy-polling).
    pub tcp_round_trips: u64,
    /// Calls of the gRPC baseline.
    pub grpc_calls: u64,
}

impl InvokeConfig {
    /// The configuration for reports: about a minute and a half.
    pub fn full() -> InvokeConfig {
        InvokeConfig {
            warmup_calls: 100_000,
            nets: Net::ALL.to_vec(),
            sequential_calls: 2_000_000,
            tcp_sequential_calls: 200_000,
            depths: vec![1, 8, 64],
            per_depth: Duration::from_secs(5),
            syscall_calls: 2_000_000,
            tcp_round_trips: 200_000,
            grpc_calls: 100_000,
        }
    }

    /// The smoke-test configuration: a few seconds at most, even in a debug build.
    pub fn quick() -> InvokeConfig {
        InvokeConfig {
            warmup_calls: 1_000,
            nets: Net::ALL.to_vec(),
            sequential_calls: 20_000,
            tcp_sequential_calls: 5_000,
            depths: vec![1, 8, 64],
            per_depth: Duration::from_millis(200),
            syscall_calls: 20_000,
            tcp_round_trips: 2_000,
            grpc_calls: 2_000,
        }
    }
}

/// Run every phase: tabos against the tabosd `settings` name (one started here for
/// each transport and stopped again whatever happens, unless `--connect`, which is
/// reached over shared memory only), then the baselines.
pub fn run(settings: &Settings, config: &InvokeConfig) -> Result<Vec<Record>, Error> {
    assert!(
        config.sequential_calls > 0 && config.tcp_sequential_calls > 0,
        "sequential calls must be positive"
    );
    assert!(
        config.depths.iter().all(|d| *d > 0),
        "depths must be positive"
    );
    measure::pin_or_warn(settings.client_core, "the client thread");
    let timer_ns = measure::timer_overhead_ns();
    eprintln!("[invoke] reading the clock costs {timer_ns} ns (included once in each timed call)");
    let mut records = Vec::new();
    for &net in &config.nets {
        let layout = match net {
            Net::Shm => Layout::from_settings(settings),
            Net::Tcp if settings.connect.is_some() => {
                eprintln!(
                    "[invoke] skipping tabos over TCP: --connect names a socket only (a \
                     started tabosd is one that listens)"
                );
                continue;
            }
            Net::Tcp => Layout::from_settings(settings).with_listen(),
        };
        // Stopped by `finish`, or by its Drop when a phase fails.
        let target = Target::acquire_with(settings, &layout)?;
        {
            // Closed before the server is stopped.
            let (mut client, calls) = match net {
                Net::Shm => (target.connect()?, config.sequential_calls),
                Net::Tcp => (target.connect_net()?, config.tcp_sequential_calls),
            };
            records.push(sequential(&mut client, net, calls, config, timer_ns)?);
            for &depth in &config.depths {
                records.push(pipelined(&mut client, net, depth, config.per_depth)?);
            }
        }
        target.finish()?;
    }
    records.push(syscall::run(WORKLOAD_NULL, config.syscall_calls, timer_ns));
    for mode in tcp::Mode::ALL {
        records.push(tcp::invoke(
            WORKLOAD_NULL,
            mode,
            config.tcp_round_trips,
            settings.server_core,
            timer_ns,
        )?);
    }
    records.push(grpc::invoke(
        WORKLOAD_NULL,
        config.grpc_calls,
        settings.server_core,
        timer_ns,
    )?);
    // The PostgreSQL prepared call (after tabosd stopped, so its spinning partition is
    // off the server core); `ratios` compares tabos with every `invoke-null` record.
    if postgres::bin_dir().is_some() {
        records.extend(postgres::invoke_records(
            settings.quick,
            settings.client_core,
            settings.server_core,
        )?);
    } else {
        eprintln!("[invoke] PostgreSQL not installed (scripts/install-postgres.sh): its prepared call is left out");
    }
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
fn sequential(
    client: &mut Client,
    net: Net,
    calls: u64,
    config: &InvokeConfig,
    timer_ns: u64,
) -> Result<Record, Error> {
    eprintln!(
        "[{WORKLOAD_NULL}] tabos {} null, sequential: {} warm-up + {calls} timed calls",
        net.name(),
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
        net.system(),
        params([
            ("proc", "null".into()),
            ("calls", calls.into()),
            ("net", net.name().into()),
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
fn pipelined(
    client: &mut Client,
    net: Net,
    depth: usize,
    per_depth: Duration,
) -> Result<Record, Error> {
    eprintln!(
        "[{WORKLOAD_NULL_PIPELINED}] tabos {} null, depth {depth}: {:.1} s",
        net.name(),
        per_depth.as_secs_f64()
    );
    keep_in_flight(client, depth, per_depth.mul_f64(0.2), None)?;
    let mut lat = Latencies::new();
    let started = Instant::now();
    let calls = keep_in_flight(client, depth, per_depth, Some(&mut lat))?;
    let elapsed = started.elapsed();
    let record = Record::from_latencies(
        WORKLOAD_NULL_PIPELINED,
        net.system(),
        params([
            ("proc", "null".into()),
            ("net", net.name().into()),
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

fn is_tabos(system: &str) -> bool {
    system == SYSTEM_TABOS_SHM || system == SYSTEM_TABOS_TCP
}

/// `record`'s system, and where `all` holds several records of that system, the
/// params that tell them apart: `postgres [proc=SELECT 1]`.
fn label(record: &Record, all: &[&Record]) -> String {
    let same: Vec<&&Record> = all.iter().filter(|r| r.system == record.system).collect();
    if same.len() < 2 {
        return record.system.clone();
    }
    let differing: Vec<String> = record
        .params
        .iter()
        .filter(|(k, v)| same.iter().any(|r| r.params.get(*k) != Some(*v)))
        .map(|(k, v)| match v {
            serde_json::Value::String(text) => format!("{k}={text}"),
            other => format!("{k}={other}"),
        })
        .collect();
    format!("{} [{}]", record.system, differing.join(", "))
}

/// Lines comparing each tabos null call with every baseline of the same run (medians;
/// any `invoke-null` record of a system that is not tabos is a baseline), and the
/// pipelined calls per second of each tabos transport.
pub fn ratios(records: &[Record]) -> Vec<String> {
    let mut lines = Vec::new();
    for net in Net::ALL {
        let system = net.system();
        let Some(tabos) = find(records, WORKLOAD_NULL, system).and_then(|r| r.p50_us) else {
            continue;
        };
        let baselines: Vec<&Record> = records
            .iter()
            .filter(|r| r.workload == WORKLOAD_NULL && !is_tabos(&r.system))
            .collect();
        for baseline in &baselines {
            let Some(other) = baseline.p50_us else {
                continue;
            };
            let name = label(baseline, &baselines);
            let ratio = tabos / other;
            let verdict = if ratio <= 1.0 {
                format!("{name} is {:.1}x slower", other / tabos)
            } else {
                format!("tabos is {ratio:.1}x slower")
            };
            lines.push(format!(
                "{system} null p50 / {name} p50 = {ratio:.3} ({tabos:.3} µs vs {other:.3} µs: {verdict})"
            ));
        }
    }
    if let (Some(tcp), Some(shm)) = (
        find(records, WORKLOAD_NULL, SYSTEM_TABOS_TCP).and_then(|r| r.p50_us),
        find(records, WORKLOAD_NULL, SYSTEM_TABOS_SHM).and_then(|r| r.p50_us),
    ) {
        lines.push(format!(
            "{SYSTEM_TABOS_TCP} null p50 / {SYSTEM_TABOS_SHM} null p50 = {:.1} (what the network adds)",
            tcp / shm
        ));
    }
    for r in records
        .iter()
        .filter(|r| r.workload == WORKLOAD_NULL_PIPELINED)
    {
        if let (Some(ops), Some(depth)) = (r.ops_per_s, r.params.get("depth")) {
            lines.push(format!(
                "{} pipelined null calls at depth {depth}: {ops:.0} calls/s over one connection",
                r.system
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
            rec(tcp::SYSTEM_BLOCKING, 20.0),
        ]);
        assert_eq!(lines.len(), 2);
        assert!(lines[0].contains("= 2.000"), "{}", lines[0]);
        assert!(lines[0].contains("tabos is 2.0x slower"), "{}", lines[0]);
        assert!(
            lines[1].contains("tcp-blocking is 20.0x slower"),
            "{}",
            lines[1]
        );
        assert!(ratios(&[rec(syscall::SYSTEM, 0.5)]).is_empty());
    }

    #[test]
    fn tcp_is_compared_with_grpc_and_any_new_baseline() {
        let mut pipelined = rec(SYSTEM_TABOS_TCP, 3.0);
        pipelined.workload = WORKLOAD_NULL_PIPELINED.into();
        pipelined.params = params([("depth", 64.into())]);
        pipelined.ops_per_s = Some(1.5e6);
        let lines = ratios(&[
            rec(SYSTEM_TABOS_SHM, 1.0),
            rec(SYSTEM_TABOS_TCP, 10.0),
            rec(grpc::SYSTEM, 80.0),
            rec("postgres", 40.0),
            pipelined,
        ]);
        let mut a = rec("postgres", 40.0);
        a.params = params([("proc", "SELECT 1".into()), ("calls", 5.into())]);
        let mut b = rec("postgres", 50.0);
        b.params = params([("proc", "SELECT null_proc()".into()), ("calls", 5.into())]);
        let twins = ratios(&[rec(SYSTEM_TABOS_TCP, 10.0), a, b]);
        assert!(
            twins[0].contains("/ postgres [proc=SELECT 1] p50"),
            "{twins:?}"
        );
        assert!(
            twins[1].contains("/ postgres [proc=SELECT null_proc()] p50"),
            "{twins:?}"
        );
        let text = lines.join("\n");
        assert!(
            text.contains("tabos-tcp null p50 / grpc p50 = 0.125"),
            "{text}"
        );
        assert!(text.contains("grpc is 8.0x slower"), "{text}");
        assert!(text.contains("tabos-tcp null p50 / postgres p50"), "{text}");
        assert!(text.contains("what the network adds"), "{text}");
        assert!(text.contains("depth 64: 1500000 calls/s"), "{text}");
    }

    #[test]
    fn quick_is_smaller_than_full() {
        let (q, f) = (InvokeConfig::quick(), InvokeConfig::full());
        assert!(q.sequential_calls < f.sequential_calls);
        assert!(q.tcp_sequential_calls < f.tcp_sequential_calls);
        assert!(q.grpc_calls < f.grpc_calls);
        assert_eq!(q.nets, f.nets);
        assert!(q.per_depth < f.per_depth);
        assert_eq!(q.depths, f.depths);
    }
}
