//! Figures 11 and 12 of the paper, scaled to one machine: parallel-file read and
//! write throughput for 1 to N clients (figure 11) and for clusters of 1 to 3 nodes
//! (figure 12).
//!
//! Each run starts a real local cluster (one `tabosd` per node on 127.0.0.1,
//! 127.0.0.2, ..., one partition each, a shared cluster file and secret), creates one
//! parallel file per client (8 KiB blocks spread over every partition of every node)
//! and has each client thread, with its own `Client` connected to node 1's socket,
//! read or write whole files in large parallel requests: the client library fans
//! each request out to every partition and collates the pieces. Throughput is file
//! bytes moved per second over all clients.
//!
//! On 2 vCPUs the nodes, their network threads and the clients share two cores, so
//! adding nodes adds work, not hardware: the curve shows the cost of going remote
//! (the paper's 1 → 2 node drop), not the paper's scaling.

use crate::measure::Latencies;
use crate::report::{params, progress, Record};
use crate::{Error, Settings};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tabos_client::{Client, ConnectOptions};

/// What to run.
#[derive(Debug, Clone)]
pub struct PfsConfig {
    /// Cluster sizes to measure (figure 12).
    pub nodes: Vec<u32>,
    /// Client counts to measure on the largest cluster (figure 11).
    pub clients: Vec<u32>,
    /// Bytes of each client's file.
    pub file_bytes: usize,
    /// How long each cell runs.
    pub seconds: f64,
}

impl PfsConfig {
    /// The configuration for `--quick` or a full run.
    pub fn new(quick: bool) -> PfsConfig {
        if quick {
            PfsConfig {
                nodes: vec![1, 2],
                clients: vec![1, 2],
                file_bytes: 1 << 20,
                seconds: 0.3,
            }
        } else {
            PfsConfig {
                nodes: vec![1, 2, 3],
                clients: vec![1, 2, 4, 8],
                file_bytes: 8 << 20,
                seconds: 3.0,
            }
        }
    }
}

/// A local cluster of `n` nodes, stopped (SIGTERM, then SIGKILL) on drop.
struct LocalCluster {
    dir: PathBuf,
    children: Vec<Child>,
}

impl LocalCluster {
    fn start(binary: &Path, n: u32) -> Result<LocalCluster, Error> {
        let dir = std::env::temp_dir().join(format!("tabos-bench-pfs-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io("creating the cluster dir", e))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| Error::io("finding a free port", e))?
            .port();
        std::fs::write(
            dir.join("secret"),
            "tabos-bench-cluster-secret-0123456789\n",
        )
        .map_err(|e| Error::io("writing the secret", e))?;
        let mut file = String::from("secret_file = \"secret\"\n");
        for i in 1..=n {
            file.push_str(&format!(
                "\n[[node]]\nid = {i}\naddress = \"127.0.0.{i}:{port}\"\nsocket = \"{}\"\npartitions = 1\n",
                dir.join(format!("node-{i}.sock")).display()
            ));
        }
        std::fs::write(dir.join("cluster.toml"), file)
            .map_err(|e| Error::io("writing the cluster file", e))?;
        let mut cluster = LocalCluster {
            dir,
            children: Vec::new(),
        };
        for i in 1..=n {
            let log = std::fs::File::create(cluster.dir.join(format!("node-{i}.log")))
                .map_err(|e| Error::io("creating a node log", e))?;
            let child = Command::new(binary)
                .arg("--cluster")
                .arg(cluster.dir.join("cluster.toml"))
                .args(["--node", &i.to_string(), "--no-pin", "--spin-us", "20"])
                // Its own log directory, logged as the other figure benchmarks are
                // (async: PostgreSQL there runs with synchronous_commit=off).
                .arg("--data-dir")
                .arg(cluster.dir.join(format!("node-{i}-data")))
                .args(["--durability", "async"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .map_err(|e| Error::Server(format!("cannot run {}: {e}", binary.display())))?;
            cluster.children.push(child);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for i in 1..=n {
            while cluster.connect_node(i).is_err() {
                if Instant::now() > deadline {
                    return Err(Error::Server(format!(
                        "cluster node {i} did not start; see {}",
                        cluster.dir.display()
                    )));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(cluster)
    }

    fn connect_node(&self, node: u32) -> Result<Client, Error> {
        let options = ConnectOptions {
            act_as: None,
            secret_file: Some(self.dir.join("secret")),
        };
        Client::connect_with(self.dir.join(format!("node-{node}.sock")), &options)
            .map_err(|e| Error::call(format!("connecting to node {node}"), e))
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        for child in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Read,
    Write,
}

/// Measure one cell: `clients` threads each reading or writing their own file.
fn cell(
    cluster: &LocalCluster,
    nodes: u32,
    clients: u32,
    op: Op,
    config: &PfsConfig,
) -> Result<Record, Error> {
    let moved = AtomicU64::new(0);
    let stop_at = Instant::now() + Duration::from_secs_f64(config.seconds);
    let results: Vec<Result<Latencies, Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let moved = &moved;
                scope.spawn(move || -> Result<Latencies, Error> {
                    let mut client = cluster.connect_node(1)?;
                    let mut fs = client.fs();
                    let path = format!("/bench/c{c}");
                    let data = vec![c as u8 ^ 0x5a; config.file_bytes];
                    let mut latencies = Latencies::new();
                    while Instant::now() < stop_at {
                        let started = Instant::now();
                        match op {
                            Op::Write => fs
                                .write_at(&path, 0, &data)
                                .map_err(|e| Error::call("parallel write", e))?,
                            Op::Read => {
                                let got = fs
                                    .read_at(&path, 0, config.file_bytes)
                                    .map_err(|e| Error::call("parallel read", e))?;
                                if got.len() != config.file_bytes || got[got.len() - 1] != data[0] {
                                    return Err(Error::call("parallel read", "wrong bytes back"));
                                }
                            }
                        }
                        latencies.record(started.elapsed());
                        moved.fetch_add(config.file_bytes as u64, Ordering::Relaxed);
                    }
                    Ok(latencies)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread"))
            .collect()
    });
    let mut all = Latencies::new();
    for r in results {
        all.merge(&r?);
    }
    let bytes_per_s = moved.load(Ordering::Relaxed) as f64 / config.seconds;
    let workload = match op {
        Op::Read => "pfs-read",
        Op::Write => "pfs-write",
    };
    let record = Record::from_latencies(
        workload,
        "tabos-cluster",
        params([
            ("nodes", nodes.into()),
            ("clients", clients.into()),
            ("file_bytes", (config.file_bytes as u64).into()),
            ("block_bytes", 8192.into()),
            (
                "mib_per_s",
                ((bytes_per_s / (1 << 20) as f64 * 10.0).round() / 10.0).into(),
            ),
            (
                "ops",
                "whole-file parallel requests (latency per request)".into(),
            ),
            ("ops_per_s_unit", "8 KiB blocks per second".into()),
            ("seconds", config.seconds.into()),
        ]),
        &all,
        Some(bytes_per_s / 8192.0),
    );
    Ok(record)
}

/// Run figures 11 and 12.
pub fn run(settings: &Settings, config: &PfsConfig) -> Result<Vec<Record>, Error> {
    let binary = match &settings.tabosd {
        Some(path) => path.clone(),
        None => crate::server::default_binary()?,
    };
    let mut records = Vec::new();
    let largest = config.nodes.iter().copied().max().unwrap_or(1);
    for &nodes in &config.nodes {
        let cluster = LocalCluster::start(&binary, nodes)?;
        {
            let mut client = cluster.connect_node(1)?;
            let mut fs = client.fs();
            fs.useradd("bench")
                .map_err(|e| Error::call("useradd bench", e))?;
            let clients = if nodes == largest {
                config.clients.clone()
            } else {
                vec![1]
            };
            let max_clients = clients.iter().copied().max().unwrap_or(1);
            for c in 0..max_clients {
                let path = format!("/bench/c{c}");
                fs.create(&path, true)
                    .map_err(|e| Error::call("creating a parallel file", e))?;
                fs.write_at(&path, 0, &vec![c as u8 ^ 0x5a; config.file_bytes])
                    .map_err(|e| Error::call("filling a parallel file", e))?;
            }
            for &c in &clients {
                for op in [Op::Write, Op::Read] {
                    eprintln!(
                        "[pfs] {nodes} node(s), {c} client(s), {op:?} {} MiB files: {} s",
                        config.file_bytes >> 20,
                        config.seconds
                    );
                    let record = cell(&cluster, nodes, c, op, config)?;
                    progress(&record);
                    records.push(record);
                }
            }
        }
        drop(cluster);
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_is_small() {
        let quick = PfsConfig::new(true);
        let full = PfsConfig::new(false);
        assert!(quick.file_bytes < full.file_bytes && quick.seconds < full.seconds);
        assert_eq!(full.nodes, vec![1, 2, 3]);
    }
}
