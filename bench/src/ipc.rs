//! Workload `ipc`: messages between tasks through the `Message` table (paper §4.3,
//! figures 6-8), against gRPC and raw TCP measured in the same run.
//!
//! - `ipc-pingpong` (figure 6): per pair, the sender sends a message and waits for the
//!   receiver to send the same bytes back. Latency: one round trip. ops: round
//!   trips/s of all pairs together.
//! - `ipc-ping20pong20` (figure 7): per round, 20 messages sent together, then the 20
//!   echoes. Latency: one round. ops: messages echoed/s (20 per round), all pairs.
//! - `ipc-multicast` (figure 8): one sender sends a 64-byte message to N receivers,
//!   each sends it back, the sender takes the N echoes. Latency: one round. ops:
//!   rounds/s.
//!
//! Systems (each cell is measured for every one, one after another):
//! - `tabos-shm`: every sender and receiver is its own thread with its own [`Client`]
//!   on shared memory; receivers wait with `ipc_recv` / `ipc_recv_batch` and a
//!   timeout, so they park at the partition (the trigger of §4.3.2) instead of
//!   polling. Ping20-pong20 pipelines its 20 `ipc_send` calls (the receiver takes the
//!   20 with `ipc_recv_batch` and pipelines its 20 sends back); multicast is one
//!   `ipc_multicast` call per receiver partition.
//! - `tabos-tcp`: the same threads with clients connected over loopback TCP to the
//!   `--listen` address of a tabosd started for them (the paper's senders and
//!   receivers on other hosts); `tabos-shm` has its own tabosd, which does not listen,
//!   so neither's threads share the server core with the other's.
//! - `grpc` ([`grpc`]): the receiver is a gRPC server whose `Echo` replies with the
//!   message (the paper's gRPC ping-pong); a sender is a client with one HTTP/2
//!   connection. Ping20-pong20: 20 unary `Echo` calls in flight together (concurrent
//!   streams), then their replies. Multicast: one `Echo` call to each of N servers
//!   (one connection each), all in flight together.
//! - `tcp-blocking` and `tcp-busypoll` ([`tcp`]): the receiver is an echo thread on a
//!   socket; ping20-pong20 is 20 writes, then the 20 echoes; multicast writes to N
//!   echo threads, then reads the N echoes.
//!
//! Each echo is checked against what was sent (a round counter is in its first bytes).
//! Threads: tabos's senders and receivers all run on the client core unless
//! `thread_cores` spreads them (thread `i` on `thread_cores[i % len]`; a pair's sender
//! is thread `2k`, its receiver `2k + 1`; the multicast sender is thread 0, its
//! receivers 1..=N), and tabosd (partition and network thread) on the server core. A
//! baseline's senders are placed like tabos's, and its receivers (the servers) on the
//! server core, as tabosd is, unless `thread_cores` is given, which places them like
//! tabos's receivers. With more busy threads than cores they take turns, and a tabos
//! client that waits spins 50 µs before it sleeps (client-lib's `SPIN`), which then
//! shows up in the round trips.

use crate::baseline::{grpc, postgres, tcp};
use crate::invoke::{SYSTEM_TABOS_SHM, SYSTEM_TABOS_TCP};
use crate::measure::{self, Latencies};
use crate::report::{self, params, Record};
use crate::server::{Layout, Target};
use crate::{Error, Settings};
use serde_json::Value;
use std::sync::Barrier;
use std::time::{Duration, Instant};
use tabos_client::{send_args, Client, Completion, Message};
use tabos_procs::ipc::ids;

/// System name of tabos over shared memory.
pub const SYSTEM: &str = SYSTEM_TABOS_SHM;
/// Workload names.
pub const WORKLOAD_PINGPONG: &str = "ipc-pingpong";
pub const WORKLOAD_PING20: &str = "ipc-ping20pong20";
pub const WORKLOAD_MULTICAST: &str = "ipc-multicast";
/// How long a receive waits at the partition before the run counts as broken.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages each way per round of ping20-pong20.
pub const BATCH: usize = 20;

/// Who carries the messages of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    /// tabos, clients on shared memory.
    TabosShm,
    /// tabos, clients over loopback TCP.
    TabosTcp,
    /// gRPC (tonic) unary echo calls.
    Grpc,
    /// Raw TCP with blocking sockets.
    TcpBlocking,
    /// Raw TCP with busy-polling sockets.
    TcpBusyPoll,
}

impl System {
    /// Every system, in report order.
    pub const ALL: [System; 5] = [
        System::TabosShm,
        System::TabosTcp,
        System::Grpc,
        System::TcpBlocking,
        System::TcpBusyPoll,
    ];

    /// The system name in records (and on the command line).
    pub fn name(self) -> &'static str {
        match self {
            System::TabosShm => SYSTEM_TABOS_SHM,
            System::TabosTcp => SYSTEM_TABOS_TCP,
            System::Grpc => grpc::SYSTEM,
            System::TcpBlocking => tcp::Mode::Blocking.system(),
            System::TcpBusyPoll => tcp::Mode::BusyPoll.system(),
        }
    }

    /// The system named `name`.
    pub fn parse(name: &str) -> Option<System> {
        System::ALL.into_iter().find(|s| s.name() == name)
    }

    fn is_tabos(self) -> bool {
        matches!(self, System::TabosShm | System::TabosTcp)
    }

    /// How a receiver waits, for records.
    fn receive(self) -> &'static str {
        match self {
            System::TabosShm | System::TabosTcp => "parked at the partition (recv with timeout)",
            System::Grpc => "gRPC server: Echo replies with the message",
            System::TcpBlocking => "echo thread, blocking recv(2)",
            System::TcpBusyPoll => "echo thread, non-blocking recv(2) spinning",
        }
    }
}

/// How much of each phase to run.
#[derive(Debug, Clone, PartialEq)]
pub struct IpcConfig {
    /// Systems measured in each cell.
    pub systems: Vec<System>,
    /// Partitions of a started tabosd.
    pub partitions: u32,
    /// Ping-pong runs: (message bytes, pairs).
    pub pingpong: Vec<(usize, usize)>,
    /// Ping20-pong20 runs: (message bytes, pairs).
    pub ping20: Vec<(usize, usize)>,
    /// Multicast runs: receivers.
    pub multicast: Vec<usize>,
    /// Bytes of a multicast message.
    pub multicast_bytes: usize,
    /// Timed duration of each run (after an untimed tenth of it).
    pub per_run: Duration,
    /// Cores of the client threads (`None`: all on the client core).
    pub thread_cores: Option<Vec<usize>>,
}

fn grid(sizes: &[usize], pairs: &[usize]) -> Vec<(usize, usize)> {
    sizes
        .iter()
        .flat_map(|s| pairs.iter().map(move |p| (*s, *p)))
        .collect()
}

impl IpcConfig {
    /// The configuration for reports: 21 cells of 5 systems, about two and a half
    /// minutes.
    pub fn full() -> IpcConfig {
        let all = grid(&[64, 1024, 8192], &[1, 2, 4]);
        IpcConfig {
            systems: System::ALL.to_vec(),
            partitions: 1,
            pingpong: all.clone(),
            ping20: all,
            multicast: vec![1, 10, 40],
            multicast_bytes: 64,
            per_run: Duration::from_secs(1),
            thread_cores: None,
        }
    }

    /// The smoke-test configuration: a few seconds.
    pub fn quick() -> IpcConfig {
        IpcConfig {
            systems: System::ALL.to_vec(),
            partitions: 1,
            pingpong: vec![(64, 1), (8192, 1)],
            ping20: vec![(64, 1)],
            multicast: vec![1, 10],
            multicast_bytes: 64,
            per_run: Duration::from_millis(150),
            thread_cores: None,
        }
    }

    /// Override the grids with `sizes` x `pairs` (either may be `None`: keep).
    pub fn with_grid(mut self, sizes: Option<&[usize]>, pairs: Option<&[usize]>) -> IpcConfig {
        if sizes.is_none() && pairs.is_none() {
            return self;
        }
        let keep = |runs: &[(usize, usize)], pick: fn(&(usize, usize)) -> usize| {
            let mut v: Vec<usize> = runs.iter().map(pick).collect();
            v.dedup();
            v.sort_unstable();
            v.dedup();
            v
        };
        let sizes = sizes.map_or_else(|| keep(&self.pingpong, |r| r.0), <[usize]>::to_vec);
        let pairs = pairs.map_or_else(|| keep(&self.pingpong, |r| r.1), <[usize]>::to_vec);
        self.pingpong = grid(&sizes, &pairs);
        self.ping20 = grid(&sizes, &pairs);
        self
    }

    /// The core of client thread `i`.
    fn core_of(&self, settings: &Settings, i: usize) -> usize {
        match &self.thread_cores {
            Some(cores) if !cores.is_empty() => cores[i % cores.len()],
            _ => settings.client_core,
        }
    }

    /// The core of a baseline's receiver (server) thread `i`: where tabos's receiver
    /// `i` runs when `thread_cores` is given, else the server core.
    fn server_core_of(&self, settings: &Settings, i: usize) -> usize {
        match &self.thread_cores {
            Some(cores) if !cores.is_empty() => cores[i % cores.len()],
            _ => settings.server_core,
        }
    }

    /// The thread placement of `system` for records: `all on client core 0` or
    /// `cores 0,1`.
    fn placement(&self, settings: &Settings, system: System) -> String {
        match &self.thread_cores {
            Some(cores) if !cores.is_empty() => {
                let list: Vec<String> = cores.iter().map(usize::to_string).collect();
                format!("cores {} (thread i on the i-th, wrapping)", list.join(","))
            }
            _ if system.is_tabos() => format!(
                "all on client core {} (tabosd on core {})",
                settings.client_core, settings.server_core
            ),
            _ => format!(
                "senders on client core {}, receivers (servers) on core {}",
                settings.client_core, settings.server_core
            ),
        }
    }
}

/// Run every cell for every system (tabos against the tabosd `settings` name, or one
/// started for each tabos system), and stop the tabosds started.
pub fn run(settings: &Settings, config: &IpcConfig) -> Result<Vec<Record>, Error> {
    let mut systems = config.systems.clone();
    if settings.connect.is_some() && systems.contains(&System::TabosTcp) {
        eprintln!(
            "[ipc] skipping tabos over TCP: --connect names a socket only (a started tabosd \
             is one that listens)"
        );
        systems.retain(|s| *s != System::TabosTcp);
    }
    let layout = Layout::spread(settings, config.partitions);
    // Stopped by `finish` below, or by their Drop when a cell fails.
    let shm = match systems.contains(&System::TabosShm) {
        true => Some(Target::acquire_with(settings, &layout)?),
        false => None,
    };
    let tcp = match systems.contains(&System::TabosTcp) {
        true => Some(Target::acquire_with(settings, &layout.with_listen())?),
        false => None,
    };
    let run = Run {
        shm: shm.as_ref(),
        tcp: tcp.as_ref(),
        settings,
        config,
    };
    let mut ids = MailboxIds::new();
    let mut records = Vec::new();
    for (kind, cells) in [
        (Kind::PingPong, &config.pingpong),
        (Kind::Ping20, &config.ping20),
    ] {
        for &(bytes, pairs) in cells {
            for &system in &systems {
                records.push(run.pairs(&mut ids, system, kind, bytes, pairs)?);
            }
        }
    }
    for &receivers in &config.multicast {
        for &system in &systems {
            records.push(run.multicast(&mut ids, system, receivers)?);
        }
    }
    for target in [shm, tcp].into_iter().flatten() {
        target.finish()?;
    }
    // PostgreSQL ping-pong (send_message / receive_message in PL/pgSQL), after tabosd
    // stopped so it has the server core to itself.
    if postgres::bin_dir().is_some() {
        records.extend(postgres::ipc_records(
            settings.quick,
            settings.client_core,
            settings.server_core,
        )?);
    } else {
        eprintln!("[ipc] PostgreSQL not installed (scripts/install-postgres.sh): its ping-pong is left out");
    }
    Ok(records)
}

/// What every cell of a run shares.
#[derive(Debug, Clone, Copy)]
struct Run<'a> {
    /// The tabosd of `tabos-shm` (when measured).
    shm: Option<&'a Target>,
    /// The tabosd of `tabos-tcp`, which listens (when measured).
    tcp: Option<&'a Target>,
    settings: &'a Settings,
    config: &'a IpcConfig,
}

impl Run<'_> {
    /// Connect `count` clients of tabos system `system` (before any thread starts, so
    /// a refused connection fails the run instead of stranding threads at a barrier).
    fn connect_all(&self, system: System, count: usize) -> Result<Vec<Client>, Error> {
        let connect = |_| match system {
            System::TabosShm => self.shm.expect("a tabosd for tabos-shm").connect(),
            System::TabosTcp => self.tcp.expect("a tabosd for tabos-tcp").connect_net(),
            _ => unreachable!("only tabos systems have tabos clients"),
        };
        (0..count).map(connect).collect()
    }
}

/// Fresh mailbox ids for every run, starting at a random base, so no run sees a
/// message of another (or of another benchmark on a `--connect` server).
#[derive(Debug)]
struct MailboxIds {
    next: u64,
}

impl MailboxIds {
    fn new() -> MailboxIds {
        MailboxIds {
            next: Client::sched_task_id() >> 8,
        }
    }

    fn take(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

/// A message of `bytes` bytes (at least 8) that carries `round` in its first 8.
fn message(bytes: usize, round: u64) -> Vec<u8> {
    assert!(bytes >= 8, "a message carries its 8-byte round number");
    let mut m = vec![0x5a; bytes];
    m[..8].copy_from_slice(&round.to_le_bytes());
    m
}

/// The [`BATCH`] messages of ping20-pong20 round `round`.
fn batch(bytes: usize, round: u64) -> Vec<Vec<u8>> {
    let first = round * BATCH as u64;
    (0..BATCH as u64)
        .map(|i| message(bytes, first + i))
        .collect()
}

/// Check a baseline's echo.
fn check_bytes(doing: &str, got: &[u8], sent: &[u8]) -> Result<(), Error> {
    if got != sent {
        return Err(Error::call(
            doing,
            format!(
                "echo of {} bytes differs from the {} bytes sent",
                got.len(),
                sent.len()
            ),
        ));
    }
    Ok(())
}

fn check_echo(doing: &str, got: &Message, sent: &[u8]) -> Result<(), Error> {
    if got.data != sent {
        let round = |d: &[u8]| {
            d.get(..8)
                .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        };
        return Err(Error::call(
            doing,
            format!(
                "echo of {} bytes (round {:?}) differs from the {} bytes sent (round {:?})",
                got.data.len(),
                round(&got.data),
                sent.len(),
                round(sent)
            ),
        ));
    }
    Ok(())
}

/// What one sender measured.
#[derive(Debug, Default)]
struct SenderResult {
    lat: Latencies,
    rounds: u64,
    elapsed: Duration,
}

/// An untimed tenth of `per_run` of rounds, then `per_run` of timed ones; `round` gets
/// the round number.
fn timed_rounds(
    per_run: Duration,
    mut round: impl FnMut(u64) -> Result<(), Error>,
) -> Result<SenderResult, Error> {
    let mut n = 0u64;
    let warm_up_until = Instant::now() + per_run.mul_f64(0.1);
    while Instant::now() < warm_up_until {
        round(n)?;
        n += 1;
    }
    let mut result = SenderResult::default();
    let started = Instant::now();
    let deadline = started + per_run;
    loop {
        let start = Instant::now();
        if start >= deadline {
            break;
        }
        round(n)?;
        result.lat.record(start.elapsed());
        result.rounds += 1;
        n += 1;
    }
    result.elapsed = started.elapsed();
    assert!(result.rounds > 0 || per_run.is_zero(), "a run times rounds");
    Ok(result)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    PingPong,
    Ping20,
}

impl Kind {
    fn workload(self) -> &'static str {
        match self {
            Kind::PingPong => WORKLOAD_PINGPONG,
            Kind::Ping20 => WORKLOAD_PING20,
        }
    }

    fn per_round(self) -> usize {
        match self {
            Kind::PingPong => 1,
            Kind::Ping20 => BATCH,
        }
    }

    /// What one round is, for records.
    fn round(self, system: System) -> &'static str {
        match (self, system) {
            (Kind::PingPong, _) => "one message and its echo",
            (Kind::Ping20, System::TabosShm | System::TabosTcp) => {
                "20 ipc_send pipelined, then the 20 echoes (ipc_recv_batch)"
            }
            (Kind::Ping20, System::Grpc) => {
                "20 unary Echo calls in flight together (HTTP/2 streams of one connection), then their replies"
            }
            (Kind::Ping20, System::TcpBlocking | System::TcpBusyPoll) => {
                "20 writes of one message each, then the 20 echoes read"
            }
        }
    }
}

/// How a multicast round is made, for records.
fn multicast_round_text(system: System) -> &'static str {
    match system {
        System::TabosShm | System::TabosTcp => {
            "one ipc_multicast per receiver partition, then the N echoes (ipc_recv_batch)"
        }
        System::Grpc => {
            "one unary Echo call to each of N servers (a connection each), all in flight together"
        }
        System::TcpBlocking | System::TcpBusyPoll => {
            "one write to each of N echo threads (a connection each), then the N echoes read"
        }
    }
}

/// Collect the results of scoped threads: the first error wins.
fn join_all<T>(
    handles: Vec<std::thread::ScopedJoinHandle<'_, Result<T, Error>>>,
) -> Result<Vec<T>, Error> {
    let mut out = Vec::new();
    let mut first_error = None;
    for h in handles {
        match h.join().expect("benchmark threads do not panic") {
            Ok(v) => out.push(v),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

impl Run<'_> {
    /// Ping-pong or ping20-pong20 of `system` with `pairs` sender/receiver pairs of
    /// `bytes`-byte messages.
    fn pairs(
        &self,
        ids: &mut MailboxIds,
        system: System,
        kind: Kind,
        bytes: usize,
        pairs: usize,
    ) -> Result<Record, Error> {
        assert!(pairs > 0, "pairs must be positive");
        eprintln!(
            "[{}] {}: {bytes}-byte messages, {pairs} pair(s): {:.1} s",
            kind.workload(),
            system.name(),
            self.config.per_run.as_secs_f64()
        );
        let results = match system {
            System::TabosShm | System::TabosTcp => {
                self.tabos_pairs(ids, system, kind, bytes, pairs)?
            }
            System::Grpc => self.grpc_pairs(kind, bytes, pairs)?,
            System::TcpBlocking => self.tcp_pairs(tcp::Mode::Blocking, kind, bytes, pairs)?,
            System::TcpBusyPoll => self.tcp_pairs(tcp::Mode::BusyPoll, kind, bytes, pairs)?,
        };
        let mut lat = Latencies::new();
        let mut rounds = 0;
        let mut elapsed = Duration::ZERO;
        for r in &results {
            lat.merge(&r.lat);
            rounds += r.rounds;
            elapsed = elapsed.max(r.elapsed);
        }
        let messages = rounds * kind.per_round() as u64;
        let mut p = params([
            ("message_bytes", bytes.into()),
            ("pairs", pairs.into()),
            ("messages_per_round", kind.per_round().into()),
            ("seconds", self.config.per_run.as_secs_f64().into()),
            ("rounds", rounds.into()),
            ("receive", system.receive().into()),
            ("round", kind.round(system).into()),
            (
                "threads",
                self.config.placement(self.settings, system).into(),
            ),
            (
                "ops",
                match kind {
                    Kind::PingPong => "round trips (all pairs)",
                    Kind::Ping20 => "messages echoed (all pairs)",
                }
                .into(),
            ),
            (
                "latency",
                match kind {
                    Kind::PingPong => "one round trip",
                    Kind::Ping20 => "one round: 20 messages sent, 20 echoes received",
                }
                .into(),
            ),
        ]);
        self.describe_baseline(system, &mut p);
        let record = Record::from_latencies(
            kind.workload(),
            system.name(),
            p,
            &lat,
            Some(messages as f64 / elapsed.as_secs_f64()),
        );
        report::progress(&record);
        Ok(record)
    }

    /// Baseline settings for records.
    fn describe_baseline(&self, system: System, p: &mut serde_json::Map<String, Value>) {
        match system {
            System::Grpc => {
                p.insert("grpc".into(), grpc::DESCRIPTION.into());
            }
            System::TcpBlocking | System::TcpBusyPoll => {
                p.insert(
                    "tcp_in_flight_bytes_max".into(),
                    tcp::IN_FLIGHT_BYTES_MAX.into(),
                );
            }
            System::TabosShm | System::TabosTcp => {}
        }
    }

    fn tabos_pairs(
        &self,
        ids: &mut MailboxIds,
        system: System,
        kind: Kind,
        bytes: usize,
        pairs: usize,
    ) -> Result<Vec<SenderResult>, Error> {
        let (config, settings) = (self.config, self.settings);
        let mailboxes: Vec<(u64, u64)> = (0..pairs).map(|_| (ids.take(), ids.take())).collect();
        let mut clients = self.connect_all(system, 2 * pairs)?;
        let barrier = Barrier::new(pairs);
        let per_run = config.per_run;
        std::thread::scope(|scope| {
            let mut senders = Vec::new();
            let mut receivers = Vec::new();
            for (k, &(sender_id, receiver_id)) in mailboxes.iter().enumerate() {
                let mut receiver_client = clients.pop().expect("two clients per pair");
                let mut sender_client = clients.pop().expect("two clients per pair");
                let receiver_core = config.core_of(settings, 2 * k + 1);
                let sender_core = config.core_of(settings, 2 * k);
                receivers.push(scope.spawn(move || {
                    measure::pin_current(receiver_core);
                    match kind {
                        Kind::PingPong => echo_one(&mut receiver_client, receiver_id),
                        Kind::Ping20 => echo_batches(&mut receiver_client, receiver_id),
                    }
                }));
                let barrier = &barrier;
                senders.push(scope.spawn(move || {
                    measure::pin_current(sender_core);
                    barrier.wait();
                    let sender = Sender {
                        client: &mut sender_client,
                        id: sender_id,
                        to: receiver_id,
                        bytes,
                    };
                    sender.run(kind, per_run)
                }));
            }
            let sent = join_all(senders);
            let echoed = join_all(receivers);
            sent.and_then(|s| echoed.map(|_| s))
        })
    }

    /// A gRPC server per pair (the receiver), a client per sender.
    fn grpc_pairs(
        &self,
        kind: Kind,
        bytes: usize,
        pairs: usize,
    ) -> Result<Vec<SenderResult>, Error> {
        let (config, settings) = (self.config, self.settings);
        let servers = (0..pairs)
            .map(|k| grpc::EchoServer::start(config.server_core_of(settings, 2 * k + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let results = (|| {
            let clients = servers
                .iter()
                .map(|s| grpc::GrpcClient::connect(&[s.addr()]))
                .collect::<Result<Vec<_>, _>>()?;
            let barrier = Barrier::new(pairs);
            std::thread::scope(|scope| {
                let senders: Vec<_> = clients
                    .into_iter()
                    .enumerate()
                    .map(|(k, mut client)| {
                        let core = config.core_of(settings, 2 * k);
                        let barrier = &barrier;
                        scope.spawn(move || {
                            measure::pin_current(core);
                            barrier.wait();
                            timed_rounds(config.per_run, |round| match kind {
                                Kind::PingPong => {
                                    let sent = message(bytes, round);
                                    let back = client.echo(&sent)?;
                                    check_bytes("gRPC ping-pong", &back, &sent)
                                }
                                Kind::Ping20 => {
                                    let sent = batch(bytes, round);
                                    let back = client.echo_concurrent(&sent)?;
                                    for (b, s) in back.iter().zip(&sent) {
                                        check_bytes("gRPC ping20-pong20", b, s)?;
                                    }
                                    Ok(())
                                }
                            })
                            // The client's connection closes as the thread ends.
                        })
                    })
                    .collect();
                join_all(senders)
            })
        })();
        after_stopping(results, servers.into_iter().map(|server| server.stop()))
    }

    /// An echo thread per pair (the receiver), a connection per sender.
    fn tcp_pairs(
        &self,
        mode: tcp::Mode,
        kind: Kind,
        bytes: usize,
        pairs: usize,
    ) -> Result<Vec<SenderResult>, Error> {
        let (config, settings) = (self.config, self.settings);
        let servers = (0..pairs)
            .map(|k| tcp::EchoServer::start(mode, config.server_core_of(settings, 2 * k + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let results = (|| {
            let conns = servers
                .iter()
                .map(tcp::EchoServer::connect)
                .collect::<Result<Vec<_>, _>>()?;
            let barrier = Barrier::new(pairs);
            std::thread::scope(|scope| {
                let senders: Vec<_> = conns
                    .into_iter()
                    .enumerate()
                    .map(|(k, mut conn)| {
                        let core = config.core_of(settings, 2 * k);
                        let barrier = &barrier;
                        scope.spawn(move || {
                            measure::pin_current(core);
                            barrier.wait();
                            let mut back = vec![0u8; bytes * kind.per_round()];
                            let io = |e| Error::io(format!("TCP {kind:?} ({})", mode.system()), e);
                            timed_rounds(config.per_run, |round| match kind {
                                Kind::PingPong => {
                                    let sent = message(bytes, round);
                                    conn.round_trip(&sent, &mut back).map_err(io)
                                }
                                Kind::Ping20 => {
                                    let sent = batch(bytes, round);
                                    conn.batch_round_trip(&sent, &mut back).map_err(io)
                                }
                            })
                            // The connection closes as the thread ends: the server sees EOF.
                        })
                    })
                    .collect();
                join_all(senders)
            })
        })();
        after_stopping(results, servers.into_iter().map(|server| server.finish()))
    }
}

/// One sender of a pair.
struct Sender<'c> {
    client: &'c mut Client,
    id: u64,
    to: u64,
    bytes: usize,
}

impl Sender<'_> {
    /// An untimed tenth of `per_run`, then `per_run` of timed rounds; then stop the
    /// receiver (also after an error, so it does not wait out its timeout).
    fn run(mut self, kind: Kind, per_run: Duration) -> Result<SenderResult, Error> {
        let outcome = self.timed(kind, per_run);
        let stopped = self
            .client
            .send(self.id, self.to, &[])
            .map_err(|e| Error::call("stopping the receiver", e));
        let result = outcome?;
        stopped?;
        Ok(result)
    }

    fn timed(&mut self, kind: Kind, per_run: Duration) -> Result<SenderResult, Error> {
        timed_rounds(per_run, |round| match kind {
            Kind::PingPong => self.ping_pong(round),
            Kind::Ping20 => self.ping20(round),
        })
    }

    fn ping_pong(&mut self, round: u64) -> Result<(), Error> {
        let sent = message(self.bytes, round);
        self.client
            .send(self.id, self.to, &sent)
            .map_err(|e| Error::call("ipc_send (ping)", e))?;
        let echo = self
            .client
            .recv(self.id, RECV_TIMEOUT)
            .map_err(|e| Error::call("ipc_recv (pong)", e))?;
        check_echo("ping-pong", &echo, &sent)
    }

    fn ping20(&mut self, round: u64) -> Result<(), Error> {
        let sent = batch(self.bytes, round);
        let batch: Vec<(u64, &[u8])> = sent.iter().map(|m| (self.to, &m[..])).collect();
        send_pipelined(self.client, self.id, &batch)?;
        let mut got = 0;
        while got < BATCH {
            let echoes = self
                .client
                .recv_batch(self.id, BATCH - got, RECV_TIMEOUT)
                .map_err(|e| Error::call("ipc_recv_batch (pong)", e))?;
            for echo in &echoes {
                check_echo("ping20-pong20", echo, &sent[got])?;
                got += 1;
            }
        }
        Ok(())
    }
}

/// Send each `(to, data)` from `from`, all calls in flight together.
fn send_pipelined(client: &mut Client, from: u64, messages: &[(u64, &[u8])]) -> Result<(), Error> {
    assert_eq!(client.in_flight(), 0, "nothing else in flight");
    for (to, data) in messages {
        let partition = client.mailbox_partition(*to);
        client
            .submit(ids::SEND, partition, &send_args(from, *to, data))
            .map_err(|e| Error::call("submitting ipc_send", e))?;
    }
    let mut done: Vec<Completion> = Vec::with_capacity(messages.len());
    while done.len() < messages.len() {
        let missing = messages.len() - done.len();
        client
            .wait(&mut done, missing)
            .map_err(|e| Error::call("waiting for pipelined ipc_send", e))?;
    }
    for c in done {
        let reply = c
            .into_result()
            .map_err(|e| Error::call("pipelined ipc_send", e))?;
        if reply.len() != 8 {
            return Err(Error::call(
                "pipelined ipc_send",
                format!("replied {} bytes, expected a message id", reply.len()),
            ));
        }
    }
    Ok(())
}

/// Receiver of ping-pong and multicast: echo each message to its sender until an
/// empty one arrives.
fn echo_one(client: &mut Client, id: u64) -> Result<(), Error> {
    loop {
        let m = client
            .recv(id, RECV_TIMEOUT)
            .map_err(|e| Error::call("ipc_recv (receiver)", e))?;
        if m.data.is_empty() {
            return Ok(());
        }
        client
            .send(id, m.sender_id, &m.data)
            .map_err(|e| Error::call("ipc_send (echo)", e))?;
    }
}

/// Receiver of ping20-pong20: take 20 messages (in batches), send them back
/// pipelined; until an empty message arrives.
fn echo_batches(client: &mut Client, id: u64) -> Result<(), Error> {
    let mut got: Vec<Message> = Vec::with_capacity(BATCH);
    loop {
        let batch = client
            .recv_batch(id, BATCH - got.len(), RECV_TIMEOUT)
            .map_err(|e| Error::call("ipc_recv_batch (receiver)", e))?;
        for m in batch {
            if m.data.is_empty() {
                return Ok(());
            }
            got.push(m);
        }
        if got.len() == BATCH {
            let back: Vec<(u64, &[u8])> = got.iter().map(|m| (m.sender_id, &m.data[..])).collect();
            send_pipelined(client, id, &back)?;
            got.clear();
        }
    }
}

impl Run<'_> {
    /// One sender of `system` sending to `receivers` receivers, each echoing.
    fn multicast(
        &self,
        ids: &mut MailboxIds,
        system: System,
        receivers: usize,
    ) -> Result<Record, Error> {
        assert!(receivers > 0, "receivers must be positive");
        let (config, settings) = (self.config, self.settings);
        let bytes = config.multicast_bytes;
        eprintln!(
            "[{WORKLOAD_MULTICAST}] {}: {bytes}-byte messages to {receivers} receiver(s): {:.1} s",
            system.name(),
            config.per_run.as_secs_f64()
        );
        let result = match system {
            System::TabosShm | System::TabosTcp => self.tabos_multicast(ids, system, receivers)?,
            System::Grpc => self.grpc_multicast(receivers)?,
            System::TcpBlocking => self.tcp_multicast(tcp::Mode::Blocking, receivers)?,
            System::TcpBusyPoll => self.tcp_multicast(tcp::Mode::BusyPoll, receivers)?,
        };
        let mut p = params([
            ("message_bytes", bytes.into()),
            ("receivers", receivers.into()),
            ("seconds", config.per_run.as_secs_f64().into()),
            ("rounds", result.rounds.into()),
            ("receive", system.receive().into()),
            ("round", multicast_round_text(system).into()),
            ("threads", config.placement(settings, system).into()),
            ("ops", "rounds".into()),
            (
                "latency",
                "one round: the message sent to every receiver, every echo received".into(),
            ),
        ]);
        self.describe_baseline(system, &mut p);
        let record = Record::from_latencies(
            WORKLOAD_MULTICAST,
            system.name(),
            p,
            &result.lat,
            Some(result.rounds as f64 / result.elapsed.as_secs_f64()),
        );
        report::progress(&record);
        Ok(record)
    }

    fn tabos_multicast(
        &self,
        ids: &mut MailboxIds,
        system: System,
        receivers: usize,
    ) -> Result<SenderResult, Error> {
        let (config, settings) = (self.config, self.settings);
        let bytes = config.multicast_bytes;
        let sender_id = ids.take();
        let receiver_ids: Vec<u64> = (0..receivers).map(|_| ids.take()).collect();
        let mut clients = self.connect_all(system, receivers + 1)?;
        let mut sender_client = clients.pop().expect("a client for the sender");
        let per_run = config.per_run;
        let sender_core = config.core_of(settings, 0);
        std::thread::scope(|scope| {
            let mut handles = Vec::new();
            for (i, (&id, mut client)) in receiver_ids.iter().zip(clients).enumerate() {
                let core = config.core_of(settings, i + 1);
                handles.push(scope.spawn(move || {
                    measure::pin_current(core);
                    echo_one(&mut client, id)
                }));
            }
            let sender = scope.spawn(|| {
                measure::pin_current(sender_core);
                let outcome =
                    multicast_rounds(&mut sender_client, sender_id, &receiver_ids, bytes, per_run);
                let stopped = sender_client
                    .multicast(sender_id, &receiver_ids, &[])
                    .map_err(|e| Error::call("stopping the receivers", e));
                let result = outcome?;
                stopped?;
                Ok(result)
            });
            let sent = join_all(vec![sender]);
            let echoed = join_all(handles);
            sent.and_then(|mut s| echoed.map(|_| s.pop().expect("one sender")))
        })
    }

    /// A gRPC server per receiver; the sender calls them all at once.
    fn grpc_multicast(&self, receivers: usize) -> Result<SenderResult, Error> {
        let (config, settings) = (self.config, self.settings);
        let bytes = config.multicast_bytes;
        let servers = (0..receivers)
            .map(|i| grpc::EchoServer::start(config.server_core_of(settings, i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let addrs: Vec<_> = servers.iter().map(grpc::EchoServer::addr).collect();
        let sender_core = config.core_of(settings, 0);
        let result = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    measure::pin_current(sender_core);
                    let mut client = grpc::GrpcClient::connect(&addrs)?;
                    timed_rounds(config.per_run, |round| {
                        let sent = message(bytes, round);
                        for back in client.echo_all(&sent)? {
                            check_bytes("gRPC multicast", &back, &sent)?;
                        }
                        Ok(())
                    })
                })
                .join()
                .expect("benchmark threads do not panic")
        });
        after_stopping(result, servers.into_iter().map(|server| server.stop()))
    }

    /// An echo thread per receiver; the sender writes to them all, then reads.
    fn tcp_multicast(&self, mode: tcp::Mode, receivers: usize) -> Result<SenderResult, Error> {
        let (config, settings) = (self.config, self.settings);
        let bytes = config.multicast_bytes;
        let servers = (0..receivers)
            .map(|i| tcp::EchoServer::start(mode, config.server_core_of(settings, i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let sender_core = config.core_of(settings, 0);
        let result = servers
            .iter()
            .map(tcp::EchoServer::connect)
            .collect::<Result<Vec<_>, _>>()
            .and_then(|mut conns| {
                std::thread::scope(|scope| {
                    scope
                        .spawn(move || {
                            measure::pin_current(sender_core);
                            let mut back = vec![0u8; bytes];
                            timed_rounds(config.per_run, |round| {
                                let sent = message(bytes, round);
                                tcp::multicast_round(&mut conns, &sent, &mut back).map_err(|e| {
                                    Error::io(format!("TCP multicast ({})", mode.system()), e)
                                })
                            })
                            // The connections close as the thread ends.
                        })
                        .join()
                        .expect("benchmark threads do not panic")
                })
            });
        after_stopping(result, servers.into_iter().map(|server| server.finish()))
    }
}

fn multicast_rounds(
    client: &mut Client,
    sender_id: u64,
    receivers: &[u64],
    bytes: usize,
    per_run: Duration,
) -> Result<SenderResult, Error> {
    timed_rounds(per_run, |round| {
        let sent = message(bytes, round);
        client
            .multicast(sender_id, receivers, &sent)
            .map_err(|e| Error::call("ipc_multicast", e))?;
        let mut got = 0;
        while got < receivers.len() {
            let echoes = client
                .recv_batch(sender_id, receivers.len() - got, RECV_TIMEOUT)
                .map_err(|e| Error::call("ipc_recv_batch (multicast echoes)", e))?;
            for echo in &echoes {
                check_echo("multicast", echo, &sent)?;
            }
            got += echoes.len();
        }
        Ok(())
    })
}

/// The cell of a record: its workload, message size and pairs or receivers.
fn cell_of(r: &Record) -> (String, Value, Value) {
    let count = r
        .params
        .get("pairs")
        .or_else(|| r.params.get("receivers"))
        .cloned()
        .unwrap_or(Value::Null);
    let bytes = r
        .params
        .get("message_bytes")
        .cloned()
        .unwrap_or(Value::Null);
    (r.workload.clone(), bytes, count)
}

fn describe_cell(cell: &(String, Value, Value)) -> String {
    let (workload, bytes, count) = cell;
    let unit = if workload == WORKLOAD_MULTICAST {
        "receiver"
    } else {
        "pair"
    };
    let plural = if count.as_u64() == Some(1) { "" } else { "s" };
    format!("{workload} {bytes} B, {count} {unit}{plural}")
}

/// One line per cell and tabos system: its median latency and throughput against
/// gRPC and raw TCP of the same cell (ratios above 1: tabos is faster).
pub fn ratios(records: &[Record]) -> Vec<String> {
    let mut lines = Vec::new();
    for tabos in records
        .iter()
        .filter(|r| r.system == SYSTEM_TABOS_SHM || r.system == SYSTEM_TABOS_TCP)
    {
        let cell = cell_of(tabos);
        let (Some(p50), Some(ops)) = (tabos.p50_us, tabos.ops_per_s) else {
            continue;
        };
        let mut parts = Vec::new();
        for baseline in [grpc::SYSTEM, tcp::SYSTEM_BLOCKING, tcp::SYSTEM_BUSYPOLL] {
            let Some(other) = records
                .iter()
                .find(|r| r.system == baseline && cell_of(r) == cell)
            else {
                continue;
            };
            if let (Some(other_p50), Some(other_ops)) = (other.p50_us, other.ops_per_s) {
                parts.push(format!(
                    "vs {baseline}: p50 {:.2}x ({other_p50:.1} µs), ops {:.2}x",
                    other_p50 / p50,
                    ops / other_ops
                ));
            }
        }
        if !parts.is_empty() {
            lines.push(format!(
                "{}: {} p50 {p50:.1} µs, {ops:.0} ops/s; {} (x > 1: tabos faster)",
                describe_cell(&cell),
                tabos.system,
                parts.join("; ")
            ));
        }
    }
    lines
}

/// `result`, once every server has been stopped (all of them, even after a failure);
/// the run's error wins over a stop's, and the first stop's over later ones.
fn after_stopping<T>(
    result: Result<T, Error>,
    stops: impl IntoIterator<Item = Result<(), Error>>,
) -> Result<T, Error> {
    let mut stopped = Ok(());
    for s in stops {
        if stopped.is_ok() {
            stopped = s;
        }
    }
    let result = result?;
    stopped?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_carry_their_round() {
        let m = message(64, 7);
        assert_eq!(m.len(), 64);
        assert_eq!(u64::from_le_bytes(m[..8].try_into().unwrap()), 7);
        let echo = Message {
            sender_id: 1,
            receiver_id: 2,
            message_id: 3,
            data: message(64, 8),
        };
        assert!(check_echo("t", &echo, &m).is_err());
        assert!(check_echo(
            "t",
            &Message {
                data: m.clone(),
                ..echo
            },
            &m
        )
        .is_ok());
    }

    fn rec(workload: &str, system: &str, p50: f64, ops: f64) -> Record {
        Record {
            workload: workload.into(),
            system: system.into(),
            params: params([("message_bytes", 64.into()), ("pairs", 1.into())]),
            p50_us: Some(p50),
            p99_us: None,
            p999_us: None,
            ops_per_s: Some(ops),
        }
    }

    #[test]
    fn systems_have_names_and_cells_have_ratios() {
        for system in System::ALL {
            assert_eq!(System::parse(system.name()), Some(system));
        }
        assert_eq!(System::parse("zeromq"), None);
        let mut other_cell = rec(WORKLOAD_PINGPONG, grpc::SYSTEM, 1.0, 1.0);
        other_cell.params = params([("message_bytes", 1024.into()), ("pairs", 1.into())]);
        let lines = ratios(&[
            rec(WORKLOAD_PINGPONG, SYSTEM_TABOS_SHM, 5.0, 200_000.0),
            rec(WORKLOAD_PINGPONG, grpc::SYSTEM, 50.0, 20_000.0),
            rec(WORKLOAD_PINGPONG, tcp::SYSTEM_BUSYPOLL, 4.0, 250_000.0),
            rec(WORKLOAD_PING20, grpc::SYSTEM, 1.0, 1.0),
            other_cell,
        ]);
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert!(
            line.starts_with("ipc-pingpong 64 B, 1 pair: tabos-shm"),
            "{line}"
        );
        assert!(
            line.contains("vs grpc: p50 10.00x (50.0 µs), ops 10.00x"),
            "{line}"
        );
        assert!(
            line.contains("vs tcp-busypoll: p50 0.80x (4.0 µs), ops 0.80x"),
            "{line}"
        );
        assert!(!line.contains("tcp-blocking"), "{line}");
    }

    #[test]
    fn grid_overrides_keep_the_other_axis() {
        let full = IpcConfig::full();
        assert_eq!(full.pingpong.len(), 9);
        let c = full.clone().with_grid(Some(&[64]), None);
        assert_eq!(c.pingpong, vec![(64, 1), (64, 2), (64, 4)]);
        assert_eq!(c.ping20, c.pingpong);
        let c = full.with_grid(None, Some(&[2]));
        assert_eq!(c.pingpong, vec![(64, 2), (1024, 2), (8192, 2)]);
        let q = IpcConfig::quick();
        assert!(q.per_run < IpcConfig::full().per_run);
    }
}
