//! Criterion benchmarks of one tabos call over the shared-memory rings: the `null`
//! round trip and an `echo` of 64 bytes, against a tabosd started for the run (one
//! partition on core 1, the client on core 0) and stopped afterwards.
//!
//! Needs the tabosd of the same profile: `cargo build --release -p tabos-server`, then
//! `cargo bench -p tabos-bench --bench invoke` (or name a binary in TABOS_BENCH_TABOSD).

#![forbid(unsafe_code)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::path::PathBuf;
use std::time::Duration;
use tabos_bench::measure;
use tabos_bench::server::{default_binary, Tabosd, TABOSD_ENV};
use tabos_client::{ids, Client};

const CLIENT_CORE: usize = 0;
const SERVER_CORE: usize = 1;
const ECHO_BYTES: usize = 64;

fn invoke(c: &mut Criterion) {
    let binary = match std::env::var_os(TABOSD_ENV) {
        Some(path) => PathBuf::from(path),
        None => default_binary().unwrap_or_else(|e| panic!("{e}")),
    };
    measure::pin_or_warn(CLIENT_CORE, "the benchmark thread");
    let server = Tabosd::start(&binary, SERVER_CORE).unwrap_or_else(|e| panic!("{e}"));
    let mut client = Client::connect(server.socket()).unwrap_or_else(|e| panic!("{e}"));

    let mut group = c.benchmark_group("invoke");
    let mut reply = Vec::new();
    group.bench_function("null", |b| {
        b.iter(|| {
            client
                .call_into(ids::NULL, 0, &[], &mut reply)
                .expect("null call")
        })
    });
    let args = [0x5au8; ECHO_BYTES];
    group.throughput(Throughput::Bytes(ECHO_BYTES as u64));
    group.bench_function("echo_64B", |b| {
        b.iter(|| {
            client
                .call_into(ids::ECHO, 0, &args, &mut reply)
                .expect("echo call");
            assert_eq!(reply, args, "echo replies with its arguments");
        })
    });
    group.finish();

    drop(client);
    server.stop().unwrap_or_else(|e| panic!("{e}"));
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .without_plots()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    targets = invoke
}
criterion_main!(benches);
