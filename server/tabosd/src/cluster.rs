//! The cluster file: which nodes exist, where they listen, and which partitions each
//! owns. Cluster-wide: every node and every client must read the same file.
//!
//! ```toml
//! secret_file = "secret"          # optional; relative to this file
//!
//! [[node]]
//! id = 1
//! address = "127.0.0.1:7101"      # remote clients and peers connect here
//! socket = "/tmp/tabos-1.sock"    # local clients of this node connect here
//! partitions = 2
//! net = "uring"                   # optional: uring (default), socket or rdma
//! ```
//!
//! `net` is how the node serves remote calls, as its `--net`. It is cluster-wide
//! knowledge: the cluster map tells clients which nodes speak RDMA, so a node served
//! with `--net rdma` must say `net = "rdma"` here.
//!
//! Global partition ids run over the nodes in file order: the first node owns
//! `0..partitions`, the next the following ids, and so on.

use crate::net::NetMode;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use tabos_procs::builtin::NodeInfo;

/// A parsed cluster file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// The shared secret's file (relative paths are relative to the cluster file).
    pub secret_file: Option<PathBuf>,
    /// The nodes, in partition order.
    #[serde(rename = "node")]
    pub nodes: Vec<NodeEntry>,
}

/// One node of a cluster file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    /// Node id, unique in the cluster.
    pub id: u32,
    /// TCP address remote clients and peers connect to.
    pub address: SocketAddr,
    /// The node's Unix socket on its own host.
    pub socket: PathBuf,
    /// Partitions the node owns.
    pub partitions: u32,
    /// Cores to pin its partitions to (e.g. "0,1"); default: spread.
    pub cores: Option<String>,
    /// How it serves remote calls (its `--net`); default uring.
    pub net: Option<NetMode>,
}

impl NodeEntry {
    /// Whether remote calls reach this node over RDMA.
    pub fn speaks_rdma(&self) -> bool {
        self.net == Some(NetMode::Rdma)
    }
}

impl ClusterFile {
    /// Read and check a cluster file; errors name the file and what to fix.
    pub fn load(path: &Path) -> Result<ClusterFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read cluster file {}: {e}", path.display()))?;
        let mut file: ClusterFile =
            toml::from_str(&text).map_err(|e| format!("cluster file {}: {e}", path.display()))?;
        if file.nodes.is_empty() {
            return Err(format!("cluster file {} lists no [[node]]", path.display()));
        }
        for (i, a) in file.nodes.iter().enumerate() {
            if a.partitions == 0 || a.partitions > tabos_transport::segment::PARTITIONS_MAX {
                return Err(format!(
                    "cluster file {}: node {} needs 1..=128 partitions",
                    path.display(),
                    a.id
                ));
            }
            for b in &file.nodes[i + 1..] {
                if a.id == b.id {
                    return Err(format!(
                        "cluster file {}: node id {} appears twice",
                        path.display(),
                        a.id
                    ));
                }
                if a.address == b.address {
                    return Err(format!(
                        "cluster file {}: nodes {} and {} share address {}",
                        path.display(),
                        a.id,
                        b.id,
                        a.address
                    ));
                }
            }
        }
        if let Some(secret) = &file.secret_file {
            if secret.is_relative() {
                let dir = path.parent().unwrap_or(Path::new("."));
                file.secret_file = Some(dir.join(secret));
            }
        }
        Ok(file)
    }

    /// The entry of node `id`.
    pub fn node(&self, id: u32) -> Result<&NodeEntry, String> {
        self.nodes.iter().find(|n| n.id == id).ok_or_else(|| {
            let ids: Vec<String> = self.nodes.iter().map(|n| n.id.to_string()).collect();
            format!(
                "node {id} is not in the cluster file (it lists {})",
                ids.join(", ")
            )
        })
    }

    /// The partition map: each node with its first global partition.
    pub fn map(&self) -> Vec<NodeInfo> {
        let mut base = 0;
        self.nodes
            .iter()
            .map(|n| {
                let info = NodeInfo {
                    node_id: n.id,
                    partition_base: base,
                    partition_count: n.partitions,
                    address: n.address.to_string(),
                    socket: n.socket.display().to_string(),
                    rdma: n.speaks_rdma(),
                };
                base += n.partitions;
                info
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tabos-cluster-test-{}-{}",
            std::process::id(),
            text.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cluster.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn a_cluster_file_gives_consecutive_partitions() {
        let path = write(
            "secret_file = \"s\"\n[[node]]\nid = 1\naddress = \"127.0.0.1:7101\"\nsocket = \"/tmp/a\"\npartitions = 2\n\
             [[node]]\nid = 2\naddress = \"127.0.0.2:7101\"\nsocket = \"/tmp/b\"\npartitions = 3\n",
        );
        let file = ClusterFile::load(&path).unwrap();
        let map = file.map();
        assert_eq!(
            (
                map[0].partition_base,
                map[1].partition_base,
                map[1].partition_count
            ),
            (0, 2, 3)
        );
        assert_eq!(file.secret_file.unwrap(), path.parent().unwrap().join("s"));
        assert!(
            file_error("[[node]]\nid = 1\naddress = \"x\"\nsocket = \"/a\"\npartitions = 1\n")
                .contains("cluster file")
        );
        assert!(file_error(
            "[[node]]\nid = 1\naddress = \"127.0.0.1:1\"\nsocket = \"/a\"\npartitions = 0\n"
        )
        .contains("partitions"));
        assert!(file_error("").contains("node"));
    }

    #[test]
    fn the_map_says_which_nodes_speak_rdma() {
        let path = write(
            "[[node]]\nid = 1\naddress = \"127.0.0.1:7201\"\nsocket = \"/tmp/a\"\npartitions = 1\nnet = \"rdma\"\n\
             [[node]]\nid = 2\naddress = \"127.0.0.2:7201\"\nsocket = \"/tmp/b\"\npartitions = 1\nnet = \"socket\"\n\
             [[node]]\nid = 3\naddress = \"127.0.0.3:7201\"\nsocket = \"/tmp/c\"\npartitions = 1\n",
        );
        let file = ClusterFile::load(&path).unwrap();
        assert_eq!(file.nodes[0].net, Some(NetMode::Rdma));
        assert_eq!(file.nodes[1].net, Some(NetMode::Socket));
        assert_eq!(file.nodes[2].net, None);
        let flags: Vec<bool> = file.map().iter().map(|n| n.rdma).collect();
        assert_eq!(flags, vec![true, false, false]);
        let mut encoded = Vec::new();
        tabos_procs::builtin::encode_cluster_map(&file.map(), &mut encoded);
        assert_eq!(
            tabos_procs::builtin::decode_cluster_map(&encoded),
            Ok(file.map())
        );
        assert!(file_error(
            "[[node]]\nid = 1\naddress = \"127.0.0.1:1\"\nsocket = \"/a\"\npartitions = 1\nnet = \"infiniband\"\n"
        )
        .contains("net"));
    }

    fn file_error(text: &str) -> String {
        ClusterFile::load(&write(text)).unwrap_err()
    }
}
