//! Settings of one tabosd process, validated at parse time.
//!
//! Cluster-wide settings (must agree across nodes: the partition count) are kept apart
//! from per-process ones (socket path, cores, ring sizes).

use crate::cluster::{ClusterFile, NodeEntry};
use crate::net::NetMode;
use clap::Parser;
use std::path::PathBuf;
use tabos_procs::builtin::NodeInfo;
use tabos_procs::DbLimits;
use tabos_transport::segment::{SegmentShape, PARTITIONS_MAX};
use tabos_transport::wire::HEADER_SIZE;

/// Default Unix socket of a node.
pub const DEFAULT_SOCKET: &str = "/tmp/tabos.sock";

/// tabosd: the tabos server. One thread per partition, pinned to a core, owning its
/// rows; local tasks call procedures through shared-memory rings set up over a Unix
/// socket.
#[derive(Parser, Debug, Clone)]
#[command(name = "tabosd", version, about, long_about = None)]
pub struct Config {
    /// Unix socket where local clients connect. Removed on shutdown.
    #[arg(long, default_value = DEFAULT_SOCKET, env = "TABOS_SOCKET")]
    pub socket: PathBuf,

    /// Accept remote clients and peer nodes on this TCP address (e.g. 127.0.0.1:7100);
    /// port 0 picks a free port. Needs --secret-file.
    #[arg(long, value_name = "HOST:PORT")]
    pub listen: Option<std::net::SocketAddr>,

    /// File holding the cluster's shared secret (at least 16 bytes); remote clients
    /// and peers must prove it before they are served.
    #[arg(long, value_name = "PATH")]
    pub secret_file: Option<PathBuf>,

    /// How remote connections are served: uring (io_uring; falls back to socket with
    /// a log line when io_uring is unavailable), socket (non-blocking sockets and
    /// poll), or rdma (RDMA verbs: a build with `--features rdma` and an RDMA device;
    /// TABOS_RDMA_DEVICE, TABOS_RDMA_PORT and TABOS_RDMA_GID_INDEX pick the device).
    /// With --cluster, the node's `net` in the cluster file sets it.
    #[arg(long, value_enum, default_value = "uring")]
    pub net: crate::net::NetMode,

    /// Number of partitions (one pinned thread each). Default: one per available core.
    #[arg(long)]
    pub partitions: Option<u32>,

    /// Cores to pin partition threads to, e.g. `0,1` or `2-5`; partition i gets the
    /// i-th listed core, wrapping around. Default: spread over the available cores.
    #[arg(long, value_parser = parse_core_list)]
    pub cores: Option<CoreList>,

    /// Do not pin partition threads to cores.
    #[arg(long)]
    pub no_pin: bool,

    /// Size of each shared-memory ring in KiB (a power of two, >= 64). Each client
    /// gets a request and a response ring per partition.
    #[arg(long, default_value_t = 4096)]
    pub ring_kib: usize,

    /// Largest request or reply payload in bytes. At most half a ring minus 32, and
    /// above --max-message-bytes (a message travels with its ids).
    #[arg(long, default_value_t = (1 << 20) + (64 << 10))]
    pub max_payload_bytes: u32,

    /// Most shared-memory clients connected at once; later ones are refused.
    #[arg(long, default_value_t = 1024)]
    pub clients_max: usize,

    /// Most rows of the key-value table per partition.
    #[arg(long, default_value_t = 10_000_000)]
    pub kv_rows_max: usize,

    /// Most scheduler workers per partition.
    #[arg(long, default_value_t = 1_000_000)]
    pub workers_max: usize,

    /// Most scheduler tasks (assigned and queued) per partition.
    #[arg(long, default_value_t = 10_000_000)]
    pub tasks_max: usize,

    /// Largest IPC message in bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_message_bytes: usize,

    /// Most messages queued for one receiver; a send beyond it gets QueueFull.
    #[arg(long, default_value_t = 100_000)]
    pub queue_len_max: usize,

    /// Block size of localized files in bytes (cluster-wide: same on every node).
    #[arg(long, default_value_t = 2048)]
    pub block_bytes_local: usize,

    /// Block size of parallel files in bytes (cluster-wide: same on every node).
    #[arg(long, default_value_t = 8192)]
    pub block_bytes_parallel: usize,

    /// Largest file in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub file_bytes_max: u64,

    /// This node's id in its cluster (without --cluster).
    #[arg(long, default_value_t = 0)]
    pub node_id: u32,

    /// Cluster file (TOML) listing every node; with --node, this node's socket,
    /// address and partitions come from it. See scripts/local-cluster.sh.
    #[arg(long, value_name = "FILE", requires = "node")]
    pub cluster: Option<PathBuf>,

    /// Which node of --cluster this process is.
    #[arg(long, value_name = "ID", requires = "cluster")]
    pub node: Option<u32>,

    /// Microseconds a partition spins on empty rings before it sleeps on its doorbell.
    #[arg(long, default_value_t = 100)]
    pub spin_us: u64,

    /// Directory of the command log and snapshots (created if missing; one tabosd at a
    /// time: it is locked). Layout: meta, lock, p<partition>/log-<lsn>.log,
    /// p<partition>/snap-<lsn>.snap. Not used with --durability off.
    #[arg(
        long,
        default_value = "./tabos-data",
        env = "TABOS_DATA_DIR",
        value_name = "DIR"
    )]
    pub data_dir: PathBuf,

    /// sync: a reply leaves only after its log record is on disk (group commit: each
    /// flush takes every record that arrived during the previous one, and a busy
    /// partition gathers for up to --group-commit-us). async: replies
    /// leave at once and the log is flushed at least every --log-flush-ms, so a crash
    /// may lose the last few milliseconds of acknowledged writes. off: no log, no
    /// snapshots, nothing survives a restart.
    #[arg(long, value_enum, default_value = "sync")]
    pub durability: Durability,

    /// With --durability async, the longest a logged record waits before its flush
    /// starts, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub log_flush_ms: u64,

    /// With --durability sync, how long a busy partition (one that still finds calls
    /// queued when a flush could start) lets its next flush gather records, in
    /// microseconds, up to 1 MiB of them: each flush costs the partition's core a
    /// fixed amount, and under load the calls wait in the queue anyway. An idle
    /// partition flushes at once. 0: flush as soon as the previous flush finished.
    #[arg(long, default_value_t = 500, value_name = "US")]
    pub group_commit_us: u64,

    /// A partition snapshots its state (and deletes the log before it) once this many
    /// MiB of log were written since its last snapshot; 0: only on demand (tabos admin
    /// snapshot).
    #[arg(long, default_value_t = 256, value_name = "MIB")]
    pub snapshot_every_mib: u64,
}

/// How acknowledged writes survive a crash (see `--durability`).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    Sync,
    Async,
    Off,
}

/// The `--net` of cluster node `entry`, given `flag` from the command line. The file's
/// `net` decides, since the cluster map tells clients which nodes speak RDMA; `flag`
/// may only pick between the two TCP modes when the file names one of them (or
/// nothing).
fn net_for_node(flag: NetMode, entry: &NodeEntry) -> Result<NetMode, String> {
    let id = entry.id;
    match (entry.net, flag) {
        (None, NetMode::Rdma) => Err(format!(
            "--net rdma: node {id} has no net = \"rdma\" in the cluster file, so clients would reach it over TCP; add it to the node's [[node]] entry"
        )),
        (None, flag) => Ok(flag),
        (Some(file), NetMode::Uring) => Ok(file),
        (Some(file), flag) if file == flag => Ok(file),
        (Some(file), flag) if file == NetMode::Rdma || flag == NetMode::Rdma => Err(format!(
            "--net {}: node {id} has net = \"{}\" in the cluster file; drop --net (the file decides)",
            mode_name(flag),
            mode_name(file),
        )),
        (Some(_), flag) => Ok(flag),
    }
}

fn mode_name(mode: NetMode) -> &'static str {
    match mode {
        NetMode::Uring => "uring",
        NetMode::Socket => "socket",
        NetMode::Rdma => "rdma",
    }
}

/// A list of core ids, parsed from `0,2,4-7`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CoreList(pub Vec<usize>);

/// Parse `0,2,4-7` into a list of core ids.
pub fn parse_core_list(text: &str) -> Result<CoreList, String> {
    let mut cores = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || format!("bad core list `{text}`: expected e.g. `0,1` or `2-5`");
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?);
                if a > b {
                    return Err(bad());
                }
                cores.extend(a..=b);
            }
            None => cores.push(part.parse().map_err(|_| bad())?),
        }
    }
    if cores.is_empty() {
        return Err("core list is empty".into());
    }
    Ok(CoreList(cores))
}

/// The cores the kernel has online (all of `0..available` if sysfs cannot be read).
fn online_cores() -> Vec<usize> {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|text| parse_core_list(text.trim()).ok())
        .map(|CoreList(list)| list)
        .unwrap_or_else(|| {
            (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
        })
}

/// Settings after defaults are resolved and checked.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The parsed flags.
    pub config: Config,
    /// Partition count.
    pub partition_count: u32,
    /// Core per partition (`None`: unpinned).
    pub cores: Vec<Option<usize>>,
    /// Shape of every client's segment.
    pub shape: SegmentShape,
    /// Table limits and cluster-wide table settings.
    pub limits: DbLimits,
    /// Every node of the cluster and the partitions it owns (one entry without
    /// --cluster).
    pub map: Vec<NodeInfo>,
    /// Global id of this node's first partition.
    pub partition_base: u32,
    /// Partitions in the whole cluster.
    pub global_partition_count: u32,
}

impl Config {
    /// When the command log is flushed; `None` with `--durability off` (no log).
    pub fn flush_policy(&self) -> Option<tabos_durability::FlushPolicy> {
        use tabos_durability::{FlushPolicy, GroupCommit};
        Some(match self.durability {
            Durability::Off => return None,
            Durability::Async => {
                FlushPolicy::Async(std::time::Duration::from_millis(self.log_flush_ms))
            }
            Durability::Sync => FlushPolicy::Sync(GroupCommit {
                max_delay: std::time::Duration::from_micros(self.group_commit_us),
                max_bytes: GroupCommit::MAX_BYTES,
            }),
        })
    }

    /// Fill in defaults and check every setting; the error says what to change.
    pub fn resolve(mut self) -> Result<Resolved, String> {
        let mut cluster_map = None;
        if let (Some(path), Some(id)) = (self.cluster.clone(), self.node) {
            if self.partitions.is_some() || self.listen.is_some() {
                return Err("with --cluster, --partitions and --listen come from the cluster file; drop them".into());
            }
            let file = ClusterFile::load(&path)?;
            let entry = file.node(id)?.clone();
            self.node_id = id;
            self.partitions = Some(entry.partitions);
            self.listen = Some(entry.address);
            self.socket = entry.socket.clone();
            if self.secret_file.is_none() {
                self.secret_file = file.secret_file.clone();
            }
            if self.secret_file.is_none() {
                return Err(format!(
                    "no secret: give --secret-file or secret_file in {}",
                    path.display()
                ));
            }
            self.net = net_for_node(self.net, &entry)?;
            if self.cores.is_none() {
                if let Some(cores) = &entry.cores {
                    self.cores =
                        Some(parse_core_list(cores).map_err(|e| format!("node {id} cores: {e}"))?);
                }
            }
            cluster_map = Some(file.map());
        }
        let available = std::thread::available_parallelism().map_or(1, |n| n.get());
        let partition_count = self.partitions.unwrap_or(available as u32);
        if partition_count == 0 || partition_count > PARTITIONS_MAX {
            return Err(format!(
                "--partitions must be 1..={PARTITIONS_MAX}, got {partition_count}"
            ));
        }
        let ring_bytes = self
            .ring_kib
            .checked_mul(1024)
            .ok_or_else(|| "--ring-kib is too large".to_string())?;
        let shape = SegmentShape {
            partition_count,
            ring_bytes,
        };
        shape.validate().map_err(|e| format!("--ring-kib: {e}"))?;
        if self.max_payload_bytes as usize > ring_bytes / 2 - HEADER_SIZE {
            return Err(format!(
                "--max-payload-bytes {} does not fit a {} KiB ring: raise --ring-kib or lower the payload",
                self.max_payload_bytes, self.ring_kib
            ));
        }
        if self.max_message_bytes + 4096 > self.max_payload_bytes as usize {
            return Err(format!(
                "--max-message-bytes {} leaves no room for the message header in --max-payload-bytes {}: keep 4096 bytes between them",
                self.max_message_bytes, self.max_payload_bytes
            ));
        }
        for (flag, block) in [
            ("--block-bytes-local", self.block_bytes_local),
            ("--block-bytes-parallel", self.block_bytes_parallel),
        ] {
            if !(512..=(1 << 20)).contains(&block)
                || block * 4 + 4096 > self.max_payload_bytes as usize
            {
                return Err(format!("{flag} must be 512..=1048576 bytes and leave room for 4 blocks in a payload, got {block}"));
            }
        }
        if self.queue_len_max == 0 {
            return Err("--queue-len-max must be at least 1".into());
        }
        if self.net == NetMode::Rdma {
            crate::net::check_rdma()?;
        }
        if self.listen.is_some() && self.secret_file.is_none() {
            return Err(
                "--listen needs --secret-file: remote clients must prove the cluster secret".into(),
            );
        }
        if self.log_flush_ms == 0 || self.log_flush_ms > 60_000 {
            return Err(format!(
                "--log-flush-ms must be 1..=60000, got {}",
                self.log_flush_ms
            ));
        }
        if self.group_commit_us > 100_000 {
            return Err(format!(
                "--group-commit-us must be 0..=100000 (at most 0.1 s of added wait), got {}",
                self.group_commit_us
            ));
        }
        if self.clients_max == 0 {
            return Err("--clients-max must be at least 1".into());
        }
        let cores = if self.no_pin {
            vec![None; partition_count as usize]
        } else {
            let list = match &self.cores {
                Some(CoreList(list)) => list.clone(),
                None => (0..available).collect(),
            };
            let online = online_cores();
            if let Some(bad) = list.iter().find(|c| !online.contains(c)) {
                return Err(format!(
                    "--cores: core {bad} is not online (online: {online:?})"
                ));
            }
            (0..partition_count as usize)
                .map(|i| Some(list[i % list.len()]))
                .collect()
        };
        let limits = DbLimits {
            kv_rows_max: self.kv_rows_max,
            workers_max: self.workers_max,
            tasks_max: self.tasks_max,
            message_bytes_max: self.max_message_bytes,
            queue_len_max: self.queue_len_max,
            block_bytes_local: self.block_bytes_local,
            block_bytes_parallel: self.block_bytes_parallel,
            file_bytes_max: self.file_bytes_max,
            ..DbLimits::default()
        };
        let map = cluster_map.unwrap_or_else(|| {
            vec![NodeInfo {
                node_id: self.node_id,
                partition_base: 0,
                partition_count,
                address: self.listen.map(|a| a.to_string()).unwrap_or_default(),
                socket: self.socket.display().to_string(),
                rdma: self.net == NetMode::Rdma,
            }]
        });
        let me = map
            .iter()
            .find(|n| n.node_id == self.node_id)
            .expect("this node is in its map");
        assert_eq!(me.partition_count, partition_count);
        let partition_base = me.partition_base;
        let global_partition_count = map.iter().map(|n| n.partition_count).sum();
        Ok(Resolved {
            config: self,
            partition_count,
            cores,
            shape,
            limits,
            map,
            partition_base,
            global_partition_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_lists_parse() {
        assert_eq!(
            parse_core_list("0,2-4").unwrap(),
            CoreList(vec![0, 2, 3, 4])
        );
        assert!(parse_core_list("3-1").is_err());
        assert!(parse_core_list("x").is_err());
        assert!(parse_core_list("").is_err());
    }

    #[test]
    fn the_cluster_file_sets_a_nodes_net() {
        let entry = |net| NodeEntry {
            id: 7,
            address: "127.0.0.1:1".parse().unwrap(),
            socket: "/a".into(),
            partitions: 1,
            cores: None,
            net,
        };
        use NetMode::{Rdma, Socket, Uring};
        assert_eq!(net_for_node(Uring, &entry(None)), Ok(Uring));
        assert_eq!(net_for_node(Socket, &entry(None)), Ok(Socket));
        assert_eq!(net_for_node(Uring, &entry(Some(Rdma))), Ok(Rdma));
        assert_eq!(net_for_node(Rdma, &entry(Some(Rdma))), Ok(Rdma));
        assert_eq!(net_for_node(Uring, &entry(Some(Socket))), Ok(Socket));
        assert_eq!(net_for_node(Socket, &entry(Some(Uring))), Ok(Socket));
        let err = net_for_node(Rdma, &entry(None)).unwrap_err();
        assert!(err.contains("net = \"rdma\""), "{err}");
        let err = net_for_node(Socket, &entry(Some(Rdma))).unwrap_err();
        assert!(err.contains("node 7"), "{err}");
        assert!(net_for_node(Rdma, &entry(Some(Uring))).is_err());
    }

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        let base = Config::parse_from(["tabosd"]);
        assert!(Config {
            partitions: Some(0),
            ..base.clone()
        }
        .resolve()
        .is_err());
        assert!(Config {
            ring_kib: 100,
            ..base.clone()
        }
        .resolve()
        .is_err());
        assert!(Config {
            ring_kib: 64,
            max_payload_bytes: 1 << 20,
            ..base.clone()
        }
        .resolve()
        .is_err());
        let ok = Config::try_parse_from(["tabosd", "--partitions", "3", "--cores", "0"])
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(ok.cores, vec![Some(0), Some(0), Some(0)]);
        let far = Config::try_parse_from(["tabosd", "--cores", "100000"]).unwrap();
        assert!(far.resolve().unwrap_err().contains("not online"));
    }

    #[test]
    fn group_commit_delay_maps_to_the_flush_policy_and_is_bounded() {
        use std::time::Duration;
        use tabos_durability::{FlushPolicy, GroupCommit};
        let base = Config::parse_from(["tabosd"]);
        assert_eq!(
            base.flush_policy(),
            Some(FlushPolicy::Sync(GroupCommit {
                max_delay: Duration::from_micros(500),
                max_bytes: GroupCommit::MAX_BYTES,
            }))
        );
        let eager = Config::parse_from(["tabosd", "--group-commit-us", "0"]);
        assert_eq!(
            eager.flush_policy(),
            Some(FlushPolicy::Sync(GroupCommit {
                max_delay: Duration::ZERO,
                max_bytes: GroupCommit::MAX_BYTES,
            }))
        );
        let asynch = Config::parse_from(["tabosd", "--durability", "async"]);
        assert_eq!(
            asynch.flush_policy(),
            Some(FlushPolicy::Async(Duration::from_millis(10)))
        );
        let off = Config::parse_from(["tabosd", "--durability", "off"]);
        assert_eq!(off.flush_policy(), None);
        let err = Config {
            group_commit_us: 100_001,
            ..base
        }
        .resolve()
        .unwrap_err();
        assert!(err.contains("--group-commit-us"), "{err}");
    }
}
