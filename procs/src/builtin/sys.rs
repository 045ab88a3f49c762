//! The reply of `sys_stats`, which the partition loop answers itself (it reports the
//! loop's own counters, not table rows).

use tabos_engine::{put_str, put_u32, ArgReader};
use tabos_transport::Status;

/// One partition's counters, as `tabos status` shows them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionStats {
    /// Partition id on its node.
    pub partition: u32,
    /// Node id.
    pub node_id: u32,
    /// Core the partition thread is pinned to; `u32::MAX` when unpinned.
    pub core: u32,
    /// Shared-memory clients attached now.
    pub clients: u32,
    /// Procedure calls executed.
    pub calls: u64,
    /// Calls answered with a non-`Ok` status.
    pub errors: u64,
    /// Calls waiting at the partition now (parked receives, replicated writes not yet
    /// answered).
    pub queue_depth: u32,
    /// Bytes of requests waiting in the partition's request rings now.
    pub queued_request_bytes: u64,
    /// Median call latency at the partition (execute and reply, sampled 1 call in 64;
    /// the upper bound of its power-of-two bucket), nanoseconds; 0 before any sample.
    pub latency_ns_p50: u64,
    /// 99th percentile of the same samples, nanoseconds.
    pub latency_ns_p99: u64,
    /// Position of the command log's end (0 while there is no command log).
    pub log_lsn: u64,
    /// Position up to which the log is durable (0 while there is no command log).
    pub durable_lsn: u64,
    /// Wall-clock time of the last log flush, Unix milliseconds (0: never).
    pub last_flush_unix_ms: u64,
}

impl PartitionStats {
    /// Append the wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.partition, self.node_id, self.core, self.clients] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.calls.to_le_bytes());
        out.extend_from_slice(&self.errors.to_le_bytes());
        out.extend_from_slice(&self.queue_depth.to_le_bytes());
        for v in [
            self.queued_request_bytes,
            self.latency_ns_p50,
            self.latency_ns_p99,
            self.log_lsn,
            self.durable_lsn,
            self.last_flush_unix_ms,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Decode the wire form.
    pub fn decode(bytes: &[u8]) -> Result<PartitionStats, Status> {
        let mut r = ArgReader::new(bytes);
        let stats = PartitionStats {
            partition: r.u32()?,
            node_id: r.u32()?,
            core: r.u32()?,
            clients: r.u32()?,
            calls: r.u64()?,
            errors: r.u64()?,
            queue_depth: r.u32()?,
            queued_request_bytes: r.u64()?,
            latency_ns_p50: r.u64()?,
            latency_ns_p99: r.u64()?,
            log_lsn: r.u64()?,
            durable_lsn: r.u64()?,
            last_flush_unix_ms: r.u64()?,
        };
        r.finish()?;
        Ok(stats)
    }
}

/// The reply of `sys_snapshot`: what the snapshot holds and what it cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotReply {
    /// Global partition id.
    pub partition: u32,
    /// Whether a snapshot was written (false with durability off).
    pub written: bool,
    /// The snapshot holds every record up to this LSN.
    pub lsn: u64,
    /// Bytes of the snapshot file.
    pub file_bytes: u64,
    /// How long the partition stopped serving: flushing the log and copying its rows.
    /// Encoding and writing the file happen off the partition thread.
    pub pause_us: u64,
    /// How long writing and syncing the file took, off the partition thread.
    pub write_us: u64,
}

impl SnapshotReply {
    /// Append the wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.partition.to_le_bytes());
        out.extend_from_slice(&u32::from(self.written).to_le_bytes());
        for v in [self.lsn, self.file_bytes, self.pause_us, self.write_us] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// Decode the wire form.
    pub fn decode(bytes: &[u8]) -> Result<SnapshotReply, Status> {
        let mut r = ArgReader::new(bytes);
        let reply = SnapshotReply {
            partition: r.u32()?,
            written: match r.u32()? {
                0 => false,
                1 => true,
                _ => return Err(Status::BadArgs),
            },
            lsn: r.u64()?,
            file_bytes: r.u64()?,
            pause_us: r.u64()?,
            write_us: r.u64()?,
        };
        r.finish()?;
        Ok(reply)
    }
}

/// One node of the cluster as the partition map lists it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeInfo {
    /// Node id.
    pub node_id: u32,
    /// First global partition id the node owns.
    pub partition_base: u32,
    /// How many partitions it owns (`partition_base..partition_base + count`).
    pub partition_count: u32,
    /// `HOST:PORT` for remote calls; empty when the node does not listen.
    pub address: String,
    /// Its Unix socket on its own host.
    pub socket: String,
    /// Whether it serves remote calls over RDMA verbs (`net = "rdma"` in the cluster
    /// file) rather than TCP; remote clients then need RDMA too.
    pub rdma: bool,
}

/// Encode the cluster map (the reply of `sys_cluster_map`).
pub fn encode_cluster_map(nodes: &[NodeInfo], out: &mut Vec<u8>) {
    put_u32(out, nodes.len() as u32);
    for n in nodes {
        put_u32(out, n.node_id);
        put_u32(out, n.partition_base);
        put_u32(out, n.partition_count);
        put_str(out, &n.address);
        put_str(out, &n.socket);
        put_u32(out, u32::from(n.rdma));
    }
}

/// Decode a cluster map, checking that the nodes' partitions tile `0..total` in order.
pub fn decode_cluster_map(bytes: &[u8]) -> Result<Vec<NodeInfo>, Status> {
    let mut r = ArgReader::new(bytes);
    let count = r.u32()? as usize;
    if count == 0 || count > 4096 {
        return Err(Status::BadArgs);
    }
    let mut nodes = Vec::with_capacity(count);
    let mut next_base = 0u32;
    for _ in 0..count {
        let node = NodeInfo {
            node_id: r.u32()?,
            partition_base: r.u32()?,
            partition_count: r.u32()?,
            address: r.str()?.to_string(),
            socket: r.str()?.to_string(),
            rdma: match r.u32()? {
                0 => false,
                1 => true,
                _ => return Err(Status::BadArgs),
            },
        };
        if node.partition_base != next_base || node.partition_count == 0 {
            return Err(Status::BadArgs);
        }
        next_base = next_base
            .checked_add(node.partition_count)
            .ok_or(Status::BadArgs)?;
        nodes.push(node);
    }
    r.finish()?;
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_maps_round_trip_and_must_tile() {
        let nodes = vec![
            NodeInfo {
                node_id: 1,
                partition_base: 0,
                partition_count: 2,
                address: "127.0.0.1:1".into(),
                socket: "/a".into(),
                rdma: false,
            },
            NodeInfo {
                node_id: 2,
                partition_base: 2,
                partition_count: 3,
                address: "".into(),
                socket: "/b".into(),
                rdma: true,
            },
        ];
        let mut out = Vec::new();
        encode_cluster_map(&nodes, &mut out);
        assert_eq!(decode_cluster_map(&out), Ok(nodes.clone()));
        // The RDMA flag is the last word of each node: 0 or 1, nothing else.
        assert_eq!(&out[out.len() - 4..], &1u32.to_le_bytes());
        let mut bad_flag = out.clone();
        let at = bad_flag.len() - 4;
        bad_flag[at..].copy_from_slice(&2u32.to_le_bytes());
        assert_eq!(decode_cluster_map(&bad_flag), Err(Status::BadArgs));
        assert_eq!(
            decode_cluster_map(&out[..out.len() - 4]),
            Err(Status::BadArgs),
            "a map without the flag is refused"
        );
        let mut gap = nodes;
        gap[1].partition_base = 3;
        let mut out = Vec::new();
        encode_cluster_map(&gap, &mut out);
        assert_eq!(decode_cluster_map(&out), Err(Status::BadArgs));
        assert_eq!(decode_cluster_map(&[1, 2]), Err(Status::BadArgs));
    }

    #[test]
    fn stats_round_trip() {
        let s = PartitionStats {
            partition: 1,
            node_id: 2,
            core: 3,
            clients: 4,
            calls: 5,
            errors: 6,
            queue_depth: 7,
            queued_request_bytes: 8,
            latency_ns_p50: 9,
            latency_ns_p99: 10,
            log_lsn: 11,
            durable_lsn: 12,
            last_flush_unix_ms: 13,
        };
        let mut out = Vec::new();
        s.encode(&mut out);
        assert_eq!(PartitionStats::decode(&out), Ok(s));
        assert_eq!(PartitionStats::decode(&out[1..]), Err(Status::BadArgs));
    }
}
