//! The reply of `sys_stats`, which the partition loop answers itself (it reports the
//! loop's own counters, not table rows).

use tabos_engine::ArgReader;
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
}

impl PartitionStats {
    /// Append the wire form.
    pub fn encode(&self, out: &mut Vec<u8>) {
        for v in [self.partition, self.node_id, self.core, self.clients] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&self.calls.to_le_bytes());
        out.extend_from_slice(&self.errors.to_le_bytes());
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
        };
        r.finish()?;
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_round_trip() {
        let s = PartitionStats {
            partition: 1,
            node_id: 2,
            core: 3,
            clients: 4,
            calls: 5,
            errors: 6,
        };
        let mut out = Vec::new();
        s.encode(&mut out);
        assert_eq!(PartitionStats::decode(&out), Ok(s));
        assert_eq!(PartitionStats::decode(&out[1..]), Err(Status::BadArgs));
    }
}
