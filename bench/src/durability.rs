//! Durability modes side by side (issue 6): kv puts, scheduler FIFO (schedule +
//! complete) and IPC send/recv, each closed-loop with many calls in flight, against
//! three tabosd started at once with `--durability off`, `async` and `sync` on the same
//! core; then the snapshot pause of a loaded partition and the time to recover it, by
//! log replay and from a snapshot, per GiB of state.
//!
//! The client moves from one server to the next every slice (a few hundred ms; each
//! round of slices starts with the next mode; the server not called sleeps on its
//! doorbell), and each mode's ratio to `off` is the median over rounds of the ratio
//! within a round: this machine's speed drifts by tens of percent within seconds, and
//! slices that close in time see the same machine.

use crate::measure::{pin_or_warn, Latencies};
use crate::report::{params, progress, Record};
use crate::server::{default_binary, Layout, Tabosd};
use crate::{Error, Settings};
use serde_json::json;
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tabos_client::{Client, Completion};
use tabos_procs::builtin::kv_args;
use tabos_procs::ids;
use tabos_procs::ipc::{recv_args, send_args};
use tabos_procs::sched::api::{complete_args, schedule_args, worker_add_args};

/// The durability modes, in report order.
pub const MODES: [&str; 3] = ["off", "async", "sync"];

/// Sizes of one run.
#[derive(Clone, Debug, PartialEq)]
pub struct DurabilityConfig {
    /// Calls kept in flight by the one client: what group commit can batch. A flush
    /// takes a disk round trip, so `sync` throughput is at most this many calls per
    /// fdatasync.
    pub depth: usize,
    /// Timed time of one slice: one workload on one mode's server (after an untimed
    /// tenth).
    pub slice: Duration,
    /// Rounds of slices (one per mode) for each workload; each throughput reported is
    /// the median slice.
    pub rounds: usize,
    /// Key-value rows loaded for the snapshot and recovery figures.
    pub state_rows: u64,
    /// Bytes of each such row's value.
    pub row_bytes: usize,
    /// The modes measured (a subset of [`MODES`], in report order).
    pub modes: Vec<&'static str>,
    /// Whether the snapshot and recovery figures are measured too.
    pub recovery: bool,
}

impl DurabilityConfig {
    pub fn quick() -> DurabilityConfig {
        DurabilityConfig {
            depth: 256,
            slice: Duration::from_millis(100),
            rounds: 2,
            state_rows: 10_000,
            row_bytes: 1024,
            modes: MODES.to_vec(),
            recovery: true,
        }
    }

    pub fn full() -> DurabilityConfig {
        DurabilityConfig {
            depth: 16_384,
            slice: Duration::from_millis(250),
            rounds: 20,
            state_rows: 250_000,
            row_bytes: 1024,
            modes: MODES.to_vec(),
            recovery: true,
        }
    }
}

/// One call of a workload: procedure, partition, arguments.
type Call = (u32, u32, Vec<u8>);

/// The calls of operation `i` of a workload.
type Workload = Box<dyn FnMut(u64) -> Vec<Call>>;

/// Calls the closed loop queues before it publishes them, and completions it handles
/// before it refills: the client streams calls in small groups instead of alternating
/// with the server in refills of thousands (which leaves the partition idle while the
/// client queues and the log idle while the partition runs).
const STREAM_EVERY: usize = 64;

/// The calls in flight of a closed loop and the next operation to start.
struct InFlight<'a> {
    started: HashMap<u64, Instant>,
    op: u64,
    next: &'a mut dyn FnMut(u64) -> Vec<Call>,
}

impl InFlight<'_> {
    /// Start operations until `depth` calls are in flight, publishing every few calls.
    fn refill(&mut self, client: &mut Client, depth: usize) -> Result<(), Error> {
        let mut unpublished = 0;
        while self.started.len() < depth {
            let calls = (self.next)(self.op);
            self.op += 1;
            let at = Instant::now();
            for (proc_id, partition, args) in calls {
                let id = client
                    .submit(proc_id, partition, &args)
                    .map_err(client_error)?;
                self.started.insert(id, at);
                unpublished += 1;
            }
            if unpublished >= STREAM_EVERY {
                client.flush();
                unpublished = 0;
            }
        }
        client.flush();
        Ok(())
    }
}

/// Keep `depth` calls in flight for `time`, each op being the calls `next(i)` returns
/// (submitted together), `i` counting on from `*op`; returns per-call latencies and
/// ops per second, every call answered, and leaves `*op` at the next operation.
fn closed_loop(
    client: &mut Client,
    depth: usize,
    time: Duration,
    op: &mut u64,
    next: &mut dyn FnMut(u64) -> Vec<Call>,
) -> Result<(Latencies, f64), Error> {
    let mut lat = Latencies::new();
    let mut flight = InFlight {
        started: HashMap::new(),
        op: *op,
        next,
    };
    let mut out: Vec<Completion> = Vec::new();
    let warm_until = Instant::now() + time / 10;
    let mut timed_from: Option<Instant> = None;
    let mut ops_timed = 0u64;
    loop {
        let now = Instant::now();
        if timed_from.is_none() && now >= warm_until {
            timed_from = Some(now);
            ops_timed = 0;
        }
        if timed_from.is_some_and(|t| now - t >= time) {
            break;
        }
        flight.refill(client, depth)?;
        out.clear();
        client.wait(&mut out, 1).map_err(client_error)?;
        for (i, c) in out.iter().enumerate() {
            if c.status_code != 0 {
                return Err(Error::Server(format!(
                    "a durability benchmark call failed with status {}",
                    c.status_code
                )));
            }
            if let Some(at) = flight.started.remove(&c.request_id) {
                lat.record(at.elapsed());
                ops_timed += 1;
            }
            if (i + 1) % STREAM_EVERY == 0 {
                flight.refill(client, depth)?;
            }
        }
    }
    let elapsed = timed_from.map_or(time, |t| t.elapsed());
    out.clear();
    while client.in_flight() > 0 {
        client
            .wait(&mut out, client.in_flight())
            .map_err(client_error)?;
    }
    *op = flight.op;
    Ok((lat, ops_timed as f64 / elapsed.as_secs_f64()))
}

fn client_error(e: tabos_client::Error) -> Error {
    Error::Server(e.to_string())
}

fn layout(settings: &Settings, mode: &str, extra: &[&str]) -> Layout {
    let mut layout = Layout::from_settings(settings);
    layout
        .extra_args
        .extend(["--durability".to_string(), mode.to_string()]);
    layout
        .extra_args
        .extend(extra.iter().map(|s| s.to_string()));
    layout
}

/// Run every workload in every mode, then the snapshot and recovery figures.
pub fn run(settings: &Settings, config: &DurabilityConfig) -> Result<Vec<Record>, Error> {
    if settings.connect.is_some() {
        return Err(Error::Server(
            "the durability benchmark starts its own tabosd per mode: drop --connect".into(),
        ));
    }
    let binary = match &settings.tabosd {
        Some(path) => path.clone(),
        None => default_binary()?,
    };
    pin_or_warn(settings.client_core, "the benchmark client");
    let mut servers = Vec::new();
    for &mode in &config.modes {
        servers.push(ModeServer::start(&binary, settings, mode)?);
    }
    let mut rounds: HashMap<(&str, &str), Vec<(f64, Latencies)>> = HashMap::new();
    let count = servers.len();
    for (w, name) in WORKLOADS.into_iter().enumerate() {
        eprintln!(
            "tabos-bench: durability {name}: {} rounds of a {:.2} s slice per mode ({})",
            config.rounds,
            config.slice.as_secs_f64(),
            config.modes.join(", ")
        );
        for round in 0..config.rounds {
            let mut line = format!("  round {}:", round + 1);
            for i in 0..count {
                let server = &mut servers[(round + i) % count];
                let (lat, calls_per_s) = server.slice(w, config)?;
                line.push_str(&format!(" {} {calls_per_s:.0}", server.mode));
                rounds
                    .entry((name, server.mode))
                    .or_default()
                    .push((calls_per_s, lat));
            }
            eprintln!("{line} calls/s");
        }
    }
    for server in servers {
        server.stop()?;
    }
    let rates = |name: &str, mode: &str| -> Option<Vec<f64>> {
        Some(rounds.get(&(name, mode))?.iter().map(|r| r.0).collect())
    };
    let mut records = Vec::new();
    for &mode in &config.modes {
        for name in WORKLOADS {
            let (Some(per_round), Some(runs)) = (rates(name, mode), rounds.get(&(name, mode)))
            else {
                continue;
            };
            let median = median_of(&per_round);
            let mut lat = Latencies::new();
            for (_, l) in runs {
                lat.merge(l);
            }
            let mut params = params([
                ("durability", json!(mode)),
                ("depth", json!(config.depth)),
                ("slice_seconds", json!(config.slice.as_secs_f64())),
                ("rounds", json!(config.rounds)),
                (
                    "round_calls_per_s",
                    json!(per_round.iter().map(|r| r.round()).collect::<Vec<_>>()),
                ),
                (
                    "unit",
                    json!("procedure calls (sched and ipc: two per operation); ops_per_s is the median slice, latencies of all slices"),
                ),
            ]);
            if let (Some(off), true) = (rates(name, "off"), mode != "off") {
                let ratios: Vec<f64> = per_round.iter().zip(&off).map(|(m, o)| m / o).collect();
                let rounded = |x: f64| (x * 1000.0).round() / 1000.0;
                params.insert(
                    "ratio_to_off_per_round".into(),
                    json!(ratios.iter().map(|&r| rounded(r)).collect::<Vec<_>>()),
                );
                params.insert(
                    "ratio_to_off_median".into(),
                    json!(rounded(median_of(&ratios))),
                );
            }
            let record = Record::from_latencies(
                &format!("durability-{name}"),
                &format!("tabos-{mode}"),
                params,
                &lat,
                Some(median),
            );
            progress(&record);
            records.push(record);
        }
    }
    if config.recovery {
        records.extend(snapshot_and_recovery(settings, config, &binary)?);
    }
    Ok(records)
}

/// The median of `values` (the upper one of an even count); `values` is not empty.
fn median_of(values: &[f64]) -> f64 {
    assert!(!values.is_empty(), "a median of something");
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

/// The workloads, in report order.
const WORKLOADS: [&str; 3] = ["kv-put", "sched-fifo", "ipc-send-recv"];

/// A tabosd in one durability mode, its client, and each workload's next operation.
struct ModeServer {
    mode: &'static str,
    server: Tabosd,
    client: Client,
    workloads: [Workload; 3],
    next_op: [u64; 3],
}

impl ModeServer {
    /// Start a tabosd in `mode` with the scheduler's workers added.
    fn start(
        binary: &std::path::Path,
        settings: &Settings,
        mode: &'static str,
    ) -> Result<ModeServer, Error> {
        let server = Tabosd::start_with(binary, &layout(settings, mode, &[]))?;
        let mut client = Client::connect(server.socket()).map_err(client_error)?;
        for w in 0..16u64 {
            client
                .call(
                    tabos_procs::sched::ids::WORKER_ADD,
                    0,
                    &worker_add_args(w + 1, 65_536, 1),
                )
                .map_err(client_error)?;
        }
        let value = vec![7u8; 64];
        let workloads: [Workload; 3] = [
            Box::new(move |i| {
                let key = (i % 100_000).to_le_bytes();
                vec![(ids::KV_PUT, 0, kv_args(&key, &value))]
            }),
            Box::new(|i| {
                let task = 1_000_000 + i;
                vec![
                    (
                        tabos_procs::sched::ids::SCHEDULE_FIFO,
                        0,
                        schedule_args(task, i),
                    ),
                    (
                        tabos_procs::sched::ids::COMPLETE_TASK,
                        0,
                        complete_args(task, i),
                    ),
                ]
            }),
            Box::new(|i| {
                let to = 1 + i % 64;
                vec![
                    (tabos_procs::ipc::ids::SEND, 0, send_args(9, to, &[1u8; 64])),
                    (tabos_procs::ipc::ids::RECV, 0, recv_args(to, 0)),
                ]
            }),
        ];
        Ok(ModeServer {
            mode,
            server,
            client,
            workloads,
            next_op: [0; 3],
        })
    }

    /// One slice of workload `w` (index into [`WORKLOADS`]): `(latencies, calls/s)`.
    fn slice(&mut self, w: usize, config: &DurabilityConfig) -> Result<(Latencies, f64), Error> {
        closed_loop(
            &mut self.client,
            config.depth,
            config.slice,
            &mut self.next_op[w],
            &mut *self.workloads[w],
        )
    }

    fn stop(self) -> Result<(), Error> {
        drop(self.client);
        self.server.stop()
    }
}

/// Load `state_rows` rows (sync, no automatic snapshot), restart (log replay), take a
/// snapshot under load-free conditions (its pause), restart again (snapshot load).
fn snapshot_and_recovery(
    settings: &Settings,
    config: &DurabilityConfig,
    binary: &std::path::Path,
) -> Result<Vec<Record>, Error> {
    let layout = layout(settings, "sync", &["--snapshot-every-mib", "0"]);
    let mut server = Tabosd::start_with(binary, &layout)?;
    let mut client = Client::connect(server.socket()).map_err(client_error)?;
    let value = vec![0x5au8; config.row_bytes];
    let mut loaded = 0u64;
    let next = |i: u64| {
        let key = i.to_le_bytes();
        vec![(ids::KV_PUT, 0, kv_args(&key, &value))]
    };
    // Load exactly state_rows rows, 64 in flight.
    let mut out = Vec::new();
    while loaded < config.state_rows {
        let batch = (config.state_rows - loaded).min(64);
        for i in loaded..loaded + batch {
            for (p, part, args) in next(i) {
                client.submit(p, part, &args).map_err(client_error)?;
            }
        }
        loaded += batch;
        client.flush();
        out.clear();
        while client.in_flight() > 0 {
            client
                .wait(&mut out, client.in_flight())
                .map_err(client_error)?;
        }
    }
    drop(client);
    let state_bytes = (config.row_bytes as u64 + 8 + 32) * config.state_rows;
    let gib = state_bytes as f64 / (1u64 << 30) as f64;
    let replay = server.restart(binary, &layout)?;
    let mut client = Client::connect(server.socket()).map_err(client_error)?;
    let snap = client.snapshot(0).map_err(client_error)?;
    drop(client);
    let from_snapshot = server.restart(binary, &layout)?;
    server.stop()?;
    let base = |what: &str| {
        params([
            ("what", json!(what)),
            ("rows", json!(config.state_rows)),
            ("row_bytes", json!(config.row_bytes)),
            ("state_bytes_approx", json!(state_bytes)),
            ("snapshot_file_bytes", json!(snap.file_bytes)),
        ])
    };
    let one = |us: f64| {
        let mut l = Latencies::new();
        l.record_ns((us * 1000.0) as u64);
        l
    };
    let mut records = Vec::new();
    // Throughput of these one-off figures: rows per second (copied, recovered).
    let rows_per_s = |us: f64| Some(config.state_rows as f64 / (us.max(1.0) / 1e6));
    let mut pause = Record::from_latencies(
        "durability-snapshot-pause",
        "tabos-sync",
        base("partition pause: log flush + fork of the snapshot writer (a child that encodes and writes the rows from its copy-on-write image); ops = rows"),
        &one(snap.pause_us as f64),
        rows_per_s(snap.pause_us as f64),
    );
    pause.params.insert("write_us".into(), json!(snap.write_us));
    records.push(pause);
    for (what, took) in [
        ("recovery by log replay (restart to serving)", replay),
        (
            "recovery from a snapshot (restart to serving)",
            from_snapshot,
        ),
    ] {
        let us = took.as_secs_f64() * 1e6;
        let mut r = Record::from_latencies(
            "durability-recovery",
            "tabos-sync",
            base(what),
            &one(us),
            rows_per_s(us),
        );
        r.params
            .insert("seconds_per_gib".into(), json!(took.as_secs_f64() / gib));
        records.push(r);
    }
    for r in &records {
        progress(r);
    }
    Ok(records)
}

/// Lines comparing each mode's throughput with `off`'s: the median of the ratios
/// within a round, and the range of the middle half of them.
pub fn summary(records: &[Record]) -> Vec<String> {
    let mut lines = Vec::new();
    for name in WORKLOADS {
        let workload = format!("durability-{name}");
        let find = |mode: &str| {
            records
                .iter()
                .find(|r| r.workload == workload && r.system == format!("tabos-{mode}"))
        };
        let ratio = |mode: &str| -> Option<String> {
            let r = find(mode)?;
            let median = r.params.get("ratio_to_off_median")?.as_f64()?;
            let mut per_round: Vec<f64> = r
                .params
                .get("ratio_to_off_per_round")?
                .as_array()?
                .iter()
                .filter_map(|v| v.as_f64())
                .collect();
            per_round.sort_by(f64::total_cmp);
            let (lo, hi) = (
                per_round[per_round.len() / 4],
                per_round[(per_round.len() * 3 / 4).min(per_round.len() - 1)],
            );
            Some(format!(
                "{mode} keeps {:.0}% of off's throughput (middle half of the rounds {:.0}-{:.0}%, {:.0} calls/s)",
                100.0 * median,
                100.0 * lo,
                100.0 * hi,
                r.ops_per_s.unwrap_or(0.0)
            ))
        };
        let off = find("off").and_then(|r| r.ops_per_s);
        let modes: Vec<String> = ["sync", "async"].into_iter().filter_map(ratio).collect();
        if let (Some(off), false) = (off, modes.is_empty()) {
            lines.push(format!(
                "{name}: {}; off {off:.0} calls/s",
                modes.join(", ")
            ));
        }
    }
    for r in records
        .iter()
        .filter(|r| r.workload == "durability-recovery")
    {
        if let Some(s) = r.params.get("seconds_per_gib") {
            lines.push(format!(
                "{}: {:.2} s per GiB of state",
                r.params["what"].as_str().unwrap_or("recovery"),
                s.as_f64().unwrap_or(0.0)
            ));
        }
    }
    if let Some(r) = records
        .iter()
        .find(|r| r.workload == "durability-snapshot-pause")
    {
        lines.push(format!(
            "snapshot pause: {:.0} us for {} bytes",
            r.p50_us.unwrap_or(0.0),
            r.params["snapshot_file_bytes"]
        ));
    }
    lines
}
