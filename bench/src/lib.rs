//! tabos benchmarks: workloads measured against baselines in the same run.
//!
//! The `tabos-bench` driver (src/main.rs) and the criterion benchmarks (benches/) share
//! these modules:
//! - [`server`]: start a private tabosd for a run and always stop it again;
//! - [`measure`]: latency histograms, timer overhead, core pinning;
//! - [`machine`]: what the run was measured on;
//! - [`report`]: JSON records and the markdown summary;
//! - one module per workload ([`invoke`], [`sched`], [`ipc`], [`fs`], [`sql`],
//!   [`durability`]), and
//!   [`baseline`] for what tabos is compared with (a system call, loopback TCP, the
//!   Linux filesystem).
//!
//! Benchmarks are measured, never asserted: a slow machine fails nothing.
//!
//! Running (the driver starts `tabosd` from its own directory unless told otherwise):
//! ```text
//! cargo build --release -p tabos-bench -p tabos-server
//! target/release/tabos-bench all --json bench.json --plots docs/figures  # everything, ~9 min
//! target/release/tabos-bench all --quick                      # CI smoke test, ~1 min
//! target/release/tabos-bench invoke --json /tmp/invoke.json   # null calls, all baselines
//! target/release/tabos-bench sched --json /tmp/sched.json     # figure 5
//! target/release/tabos-bench ipc --json /tmp/ipc.json         # figures 6-8
//! target/release/tabos-bench fs --json /tmp/fs.json           # figure 10, tables 1-2
//! target/release/tabos-bench sql --json /tmp/sql.json         # table 2 via SQL, scan stalls
//! target/release/tabos-bench durability --json /tmp/dur.json  # off/async/sync, recovery
//! target/release/tabos-bench pfs --json /tmp/pfs.json         # figures 11-12, local cluster
//! cargo bench -p tabos-bench --bench invoke                   # criterion
//! ```

#![forbid(unsafe_code)]

pub mod baseline;
pub mod durability;
pub mod error;
pub mod fs;
pub mod invoke;
pub mod ipc;
pub mod machine;
pub mod measure;
pub mod pfs;
pub mod plot;
pub mod report;
pub mod sched;
pub mod server;
pub mod sql;

pub use error::Error;

use std::path::PathBuf;

/// Settings every workload shares (the driver's global flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Tiny configuration for smoke tests: seconds, not minutes.
    pub quick: bool,
    /// Socket of a running tabosd to use instead of starting one.
    pub connect: Option<PathBuf>,
    /// tabosd binary to start (`None`: the one next to this executable).
    pub tabosd: Option<PathBuf>,
    /// Core the measuring (client) thread is pinned to.
    pub client_core: usize,
    /// Core of the server side: tabosd's partition, and the baselines' server threads.
    pub server_core: usize,
    /// Further flags for a started tabosd (e.g. `--spin-us 1000`).
    pub tabosd_args: Vec<String>,
}
