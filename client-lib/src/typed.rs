//! Typed wrappers over the built-in procedures.

use crate::{Client, Error, PartitionStats};
use tabos_procs::builtin::kv_args;
use tabos_procs::ids;
use tabos_transport::Status;

impl Client {
    /// Call the `null` procedure on `partition`.
    pub fn null(&mut self, partition: u32) -> Result<(), Error> {
        self.call(ids::NULL, partition, &[]).map(drop)
    }

    /// Store `value` under `key`.
    pub fn kv_put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.call_key(ids::KV_PUT, key, &kv_args(key, value))
            .map(drop)
    }

    /// The value under `key`, or `None`.
    pub fn kv_get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self.call_key(ids::KV_GET, key, &kv_args(key, b"")) {
            Ok(v) => Ok(Some(v)),
            Err(Error::Status(Status::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Delete `key`; returns whether it existed.
    pub fn kv_delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        match self.call_key(ids::KV_DELETE, key, &kv_args(key, b"")) {
            Ok(_) => Ok(true),
            Err(Error::Status(Status::NotFound)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Snapshot `partition` now (its older log is then deleted); returns once the
    /// snapshot file is durable, with what it cost.
    pub fn snapshot(
        &mut self,
        partition: u32,
    ) -> Result<tabos_procs::builtin::SnapshotReply, Error> {
        let reply = self.call(ids::SYS_SNAPSHOT, partition, &[])?;
        tabos_procs::builtin::SnapshotReply::decode(&reply).map_err(Error::Status)
    }

    /// Store `value` under `key` in the replicated table (every partition, one order).
    pub fn rkv_put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.call(ids::RKV_PUT, 0, &kv_args(key, value)).map(drop)
    }

    /// Read `key` from the replicated table as `partition` holds it.
    pub fn rkv_get(&mut self, partition: u32, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        match self.call(ids::RKV_GET, partition, &kv_args(key, b"")) {
            Ok(v) => Ok(Some(v)),
            Err(Error::Status(Status::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every node of the cluster with its partitions' counters, or why it cannot be
    /// reached (other nodes are still reported).
    pub fn cluster_status(
        &mut self,
    ) -> Vec<(
        tabos_procs::builtin::NodeInfo,
        Result<Vec<PartitionStats>, Error>,
    )> {
        self.probe_nodes();
        let mut out = Vec::new();
        for (info, _) in self.nodes() {
            let mut ids_ = Vec::new();
            let mut failed = None;
            for p in info.partition_base..info.partition_base + info.partition_count {
                match self.submit(ids::SYS_STATS, p, &[]) {
                    Ok(id) => ids_.push(id),
                    Err(e) => {
                        failed = Some(e);
                        break;
                    }
                }
            }
            let result = match failed {
                Some(e) => Err(e),
                None => self.wait_for(&ids_).and_then(|done| {
                    done.into_iter()
                        .map(|c| {
                            if c.status_code == Status::NodeUnavailable as u32 {
                                return Err(Error::Transport(format!(
                                    "node {} is unreachable",
                                    info.node_id
                                )));
                            }
                            let reply = c.into_result()?;
                            PartitionStats::decode(&reply).map_err(Error::Status)
                        })
                        .collect()
                }),
            };
            out.push((info, result));
        }
        out
    }

    /// Counters of every partition of the node. Other calls in flight are left alone.
    pub fn status(&mut self) -> Result<Vec<PartitionStats>, Error> {
        let mut ids_ = Vec::new();
        for p in 0..self.partition_count() {
            ids_.push(self.submit(ids::SYS_STATS, p, &[])?);
        }
        let mut stats = Vec::new();
        for c in self.wait_for(&ids_)? {
            let reply = c.into_result()?;
            stats.push(PartitionStats::decode(&reply).map_err(Error::Status)?);
        }
        stats.sort_by_key(|s| s.partition);
        Ok(stats)
    }
}
