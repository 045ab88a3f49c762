//! Workload `ipc`: messages between tasks through the `Message` table (paper §4.3,
//! figures 6-8). Every sender and every receiver is its own thread with its own
//! [`Client`]; receivers wait with `ipc_recv` / `ipc_recv_batch` and a timeout, so they
//! park at the partition (the trigger of §4.3.2) instead of polling.
//!
//! - `ipc-pingpong` (figure 6): per pair, the sender sends a message and waits for the
//!   receiver to send the same bytes back. Latency: one round trip (send call, then
//!   the receive that returns the echo). ops: round trips/s of all pairs together.
//! - `ipc-ping20pong20` (figure 7): per round, 20 sends pipelined, then the 20 echoes
//!   (the receiver takes them with `ipc_recv_batch` and pipelines its 20 sends back).
//!   Latency: one round. ops: messages echoed/s (20 per round), all pairs together.
//! - `ipc-multicast` (figure 8): one sender multicasts a 64-byte message to N
//!   receivers (one `ipc_multicast` call per receiver partition), each receiver sends
//!   it back, the sender takes the N echoes. Latency: one round. ops: rounds/s.
//!
//! Each echo is checked against what was sent (a round counter is in its first bytes).
//! A sender ends its receivers with an empty message. The client threads all run on
//! the client core unless `thread_cores` spreads them (thread `i` on
//! `thread_cores[i % len]`; a pair's sender is thread `2k`, its receiver `2k + 1`; the
//! multicast sender is thread 0, its receivers 1..=N). With more busy threads than
//! cores they take turns, and a client that waits spins 50 µs before it sleeps
//! (client-lib's `SPIN`), which then shows up in the round trips.

use crate::measure::{self, Latencies};
use crate::report::{self, params, Record};
use crate::server::{Layout, Target};
use crate::{Error, Settings};
use std::sync::Barrier;
use std::time::{Duration, Instant};
use tabos_client::{send_args, Client, Completion, Message};
use tabos_procs::ipc::ids;

/// System name of tabos over shared memory.
pub const SYSTEM: &str = crate::invoke::SYSTEM_TABOS_SHM;
/// Workload names.
pub const WORKLOAD_PINGPONG: &str = "ipc-pingpong";
pub const WORKLOAD_PING20: &str = "ipc-ping20pong20";
pub const WORKLOAD_MULTICAST: &str = "ipc-multicast";
/// How long a receive waits at the partition before the run counts as broken.
const RECV_TIMEOUT: Duration = Duration::from_secs(10);
/// Messages each way per round of ping20-pong20.
pub const BATCH: usize = 20;

/// How much of each phase to run.
#[derive(Debug, Clone, PartialEq)]
pub struct IpcConfig {
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
    /// The configuration for reports: about a minute.
    pub fn full() -> IpcConfig {
        let all = grid(&[64, 1024, 8192], &[1, 2, 4]);
        IpcConfig {
            partitions: 1,
            pingpong: all.clone(),
            ping20: all,
            multicast: vec![1, 10, 40],
            multicast_bytes: 64,
            per_run: Duration::from_secs(2),
            thread_cores: None,
        }
    }

    /// The smoke-test configuration: a few seconds.
    pub fn quick() -> IpcConfig {
        IpcConfig {
            partitions: 1,
            pingpong: vec![(64, 1), (8192, 1)],
            ping20: vec![(64, 1)],
            multicast: vec![1, 10],
            multicast_bytes: 64,
            per_run: Duration::from_millis(300),
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

    /// The thread placement for records: `client core 0` or `cores 0,1`.
    fn placement(&self, settings: &Settings) -> String {
        match &self.thread_cores {
            Some(cores) if !cores.is_empty() => {
                let list: Vec<String> = cores.iter().map(usize::to_string).collect();
                format!("cores {} (thread i on the i-th, wrapping)", list.join(","))
            }
            _ => format!("all on client core {}", settings.client_core),
        }
    }
}

/// Run every phase against the tabosd `settings` name, and stop that tabosd again.
pub fn run(settings: &Settings, config: &IpcConfig) -> Result<Vec<Record>, Error> {
    let target = Target::acquire_with(settings, &Layout::spread(settings, config.partitions))?;
    let mut ids = MailboxIds::new();
    let mut records = Vec::new();
    for &(bytes, pairs) in &config.pingpong {
        records.push(pairs_run(
            &target,
            settings,
            config,
            &mut ids,
            Kind::PingPong,
            bytes,
            pairs,
        )?);
    }
    for &(bytes, pairs) in &config.ping20 {
        records.push(pairs_run(
            &target,
            settings,
            config,
            &mut ids,
            Kind::Ping20,
            bytes,
            pairs,
        )?);
    }
    for &receivers in &config.multicast {
        records.push(multicast(&target, settings, config, &mut ids, receivers)?);
    }
    target.finish()?;
    Ok(records)
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
}

/// Connect `count` clients (before any thread starts, so a refused connection fails
/// the run instead of stranding threads at a barrier).
fn connect_all(target: &Target, count: usize) -> Result<Vec<Client>, Error> {
    (0..count).map(|_| target.connect()).collect()
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

/// Ping-pong or ping20-pong20 with `pairs` sender/receiver pairs of `bytes`-byte
/// messages.
fn pairs_run(
    target: &Target,
    settings: &Settings,
    config: &IpcConfig,
    ids: &mut MailboxIds,
    kind: Kind,
    bytes: usize,
    pairs: usize,
) -> Result<Record, Error> {
    assert!(pairs > 0, "pairs must be positive");
    eprintln!(
        "[{}] {bytes}-byte messages, {pairs} pair(s): {:.1} s",
        kind.workload(),
        config.per_run.as_secs_f64()
    );
    let mailboxes: Vec<(u64, u64)> = (0..pairs).map(|_| (ids.take(), ids.take())).collect();
    let mut clients = connect_all(target, 2 * pairs)?;
    let barrier = Barrier::new(pairs);
    let per_run = config.per_run;
    let results = std::thread::scope(|scope| {
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
    })?;
    let mut lat = Latencies::new();
    let mut rounds = 0;
    let mut elapsed = Duration::ZERO;
    for r in &results {
        lat.merge(&r.lat);
        rounds += r.rounds;
        elapsed = elapsed.max(r.elapsed);
    }
    let messages = rounds * kind.per_round() as u64;
    let record = Record::from_latencies(
        kind.workload(),
        SYSTEM,
        params([
            ("message_bytes", bytes.into()),
            ("pairs", pairs.into()),
            ("messages_per_round", kind.per_round().into()),
            ("seconds", config.per_run.as_secs_f64().into()),
            ("rounds", rounds.into()),
            (
                "receive",
                "parked at the partition (recv with timeout)".into(),
            ),
            ("threads", config.placement(settings).into()),
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
                    Kind::Ping20 => "one round: 20 sends pipelined, 20 echoes received",
                }
                .into(),
            ),
        ]),
        &lat,
        Some(messages as f64 / elapsed.as_secs_f64()),
    );
    report::progress(&record);
    Ok(record)
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
        let mut round = 0u64;
        let warm_up_until = Instant::now() + per_run.mul_f64(0.1);
        while Instant::now() < warm_up_until {
            self.round(kind, round)?;
            round += 1;
        }
        let mut result = SenderResult::default();
        let started = Instant::now();
        let deadline = started + per_run;
        loop {
            let start = Instant::now();
            if start >= deadline {
                break;
            }
            self.round(kind, round)?;
            result.lat.record(start.elapsed());
            result.rounds += 1;
            round += 1;
        }
        result.elapsed = started.elapsed();
        Ok(result)
    }

    fn round(&mut self, kind: Kind, round: u64) -> Result<(), Error> {
        match kind {
            Kind::PingPong => self.ping_pong(round),
            Kind::Ping20 => self.ping20(round),
        }
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
        let first = round * BATCH as u64;
        let sent: Vec<Vec<u8>> = (0..BATCH as u64)
            .map(|i| message(self.bytes, first + i))
            .collect();
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

/// One sender multicasting to `receivers` receiver threads.
fn multicast(
    target: &Target,
    settings: &Settings,
    config: &IpcConfig,
    ids: &mut MailboxIds,
    receivers: usize,
) -> Result<Record, Error> {
    assert!(receivers > 0, "receivers must be positive");
    let bytes = config.multicast_bytes;
    eprintln!(
        "[{WORKLOAD_MULTICAST}] {bytes}-byte messages to {receivers} receiver(s): {:.1} s",
        config.per_run.as_secs_f64()
    );
    let sender_id = ids.take();
    let receiver_ids: Vec<u64> = (0..receivers).map(|_| ids.take()).collect();
    let mut clients = connect_all(target, receivers + 1)?;
    let mut sender_client = clients.pop().expect("a client for the sender");
    let per_run = config.per_run;
    let sender_core = config.core_of(settings, 0);
    let result = std::thread::scope(|scope| {
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
    })?;
    let record = Record::from_latencies(
        WORKLOAD_MULTICAST,
        SYSTEM,
        params([
            ("message_bytes", bytes.into()),
            ("receivers", receivers.into()),
            ("seconds", config.per_run.as_secs_f64().into()),
            ("rounds", result.rounds.into()),
            (
                "receive",
                "parked at the partition (recv with timeout)".into(),
            ),
            ("threads", config.placement(settings).into()),
            ("ops", "rounds".into()),
            (
                "latency",
                "one round: multicast, every receiver's echo received".into(),
            ),
        ]),
        &result.lat,
        Some(result.rounds as f64 / result.elapsed.as_secs_f64()),
    );
    report::progress(&record);
    Ok(record)
}

fn multicast_rounds(
    client: &mut Client,
    sender_id: u64,
    receivers: &[u64],
    bytes: usize,
    per_run: Duration,
) -> Result<SenderResult, Error> {
    let mut round = 0u64;
    let mut one_round = |round: u64| -> Result<(), Error> {
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
    };
    let warm_up_until = Instant::now() + per_run.mul_f64(0.1);
    while Instant::now() < warm_up_until {
        one_round(round)?;
        round += 1;
    }
    let mut result = SenderResult::default();
    let started = Instant::now();
    let deadline = started + per_run;
    loop {
        let start = Instant::now();
        if start >= deadline {
            break;
        }
        one_round(round)?;
        result.lat.record(start.elapsed());
        result.rounds += 1;
        round += 1;
    }
    result.elapsed = started.elapsed();
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
