//! A partition's call counters: per procedure, and a sampled latency histogram.
//!
//! Owned by the partition thread. The hot-path cost is two counter bumps per call; one
//! call in [`SAMPLE_EVERY`] also reads the clock twice and bumps a histogram bucket.
//! Every `sql_scan` call is timed (it is the call whose length is the stall a SQL
//! query causes), so its `max_ns` is the longest a scan held the partition.
//! These feed the `sys_partitions` and `sys_procedures` SQL tables.

use crate::port::Port;
use std::time::Instant;
use tabos_engine::Registry;
use tabos_procs::{ids, PartitionDb};
use tabos_transport::Status;

/// One call in this many is timed.
pub const SAMPLE_EVERY: u32 = 64;
/// Power-of-two latency buckets: bucket `b` holds samples in `[2^b, 2^(b+1))` ns.
const BUCKETS: usize = 40;
/// Procedure ids counted individually (ids at or above it share the last slot).
const PROC_SLOTS: usize = 512;

/// Calls, errors and sampled time of one procedure.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProcCounters {
    pub calls: u64,
    pub errors: u64,
    /// Sum of the sampled call times, nanoseconds.
    pub sampled_ns: u64,
    /// Samples in `sampled_ns`.
    pub samples: u64,
    /// Longest sampled call, nanoseconds.
    pub max_ns: u64,
}

/// The counters of one partition.
#[derive(Debug)]
pub struct CallCounters {
    procs: Vec<ProcCounters>,
    histogram: [u64; BUCKETS],
    tick: u32,
}

impl Default for CallCounters {
    fn default() -> Self {
        CallCounters {
            procs: vec![ProcCounters::default(); PROC_SLOTS],
            histogram: [0; BUCKETS],
            tick: 0,
        }
    }
}

impl CallCounters {
    /// Call at the start of a call of `proc_id`: `Some` when this call is timed.
    #[inline]
    pub fn start(&mut self, proc_id: u32) -> Option<Instant> {
        self.tick = self.tick.wrapping_add(1);
        if self.tick.is_multiple_of(SAMPLE_EVERY) || proc_id == tabos_procs::ids::SQL_SCAN {
            Some(Instant::now())
        } else {
            None
        }
    }

    /// Record a call of `proc_id` answered with `status`.
    #[inline]
    pub fn finish(&mut self, proc_id: u32, status: Status, started: Option<Instant>) {
        let slot = (proc_id as usize).min(PROC_SLOTS - 1);
        let c = &mut self.procs[slot];
        c.calls += 1;
        if status != Status::Ok {
            c.errors += 1;
        }
        if let Some(t) = started {
            let ns = u64::try_from(t.elapsed().as_nanos())
                .unwrap_or(u64::MAX)
                .max(1);
            c.sampled_ns = c.sampled_ns.saturating_add(ns);
            c.samples += 1;
            c.max_ns = c.max_ns.max(ns);
            let bucket = (63 - ns.leading_zeros() as usize).min(BUCKETS - 1);
            self.histogram[bucket] += 1;
        }
    }

    /// The latency below which a fraction `q` of the samples lie (the upper bound of
    /// its bucket), nanoseconds; 0 without samples.
    pub fn latency_ns(&self, q: f64) -> u64 {
        assert!((0.0..=1.0).contains(&q), "a quantile is in 0..=1");
        let total: u64 = self.histogram.iter().sum();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (b, &n) in self.histogram.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return 1u64 << (b + 1);
            }
        }
        unreachable!("rank {rank} is at most the {total} samples")
    }

    /// Procedures called at least once, by id.
    pub fn procedures(&self) -> impl Iterator<Item = (u32, &ProcCounters)> {
        self.procs
            .iter()
            .enumerate()
            .filter(|(_, c)| c.calls > 0)
            .map(|(id, c)| (id as u32, c))
    }
}

/// Write the rows of `sys_procedures` (`proc_id` [`ids::SYS_PROCEDURES`]) or
/// `sys_connections` into `reply` as a JSON array of arrays; `PayloadTooLarge` (and an
/// empty reply) when they exceed `max_reply_bytes`.
pub fn system_rows(
    proc_id: u32,
    counters: &CallCounters,
    registry: &Registry<PartitionDb>,
    ports: &[Port],
    reply: &mut Vec<u8>,
    max_reply_bytes: usize,
) -> Status {
    assert!(reply.is_empty(), "a system reply starts empty");
    let rows: Vec<serde_json::Value> = if proc_id == ids::SYS_PROCEDURES {
        counters
            .procedures()
            .map(|(id, c)| {
                let name = registry
                    .get(id)
                    .map(|d| d.name)
                    .or_else(|| ids::system_name(id))
                    .unwrap_or("(unknown)");
                let mean_ns = c.sampled_ns.checked_div(c.samples).unwrap_or(0);
                serde_json::json!([id, name, c.calls, c.errors, mean_ns, c.max_ns])
            })
            .collect()
    } else {
        ports.iter().map(Port::sql_row).collect()
    };
    serde_json::to_writer(&mut *reply, &rows).expect("JSON into a Vec never fails");
    if reply.len() > max_reply_bytes {
        reply.clear();
        return Status::PayloadTooLarge;
    }
    Status::Ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_every_call_and_samples_one_in_64() {
        let mut c = CallCounters::default();
        for i in 0..640u32 {
            let t = c.start(10);
            c.finish(
                10,
                if i % 10 == 0 {
                    Status::NotFound
                } else {
                    Status::Ok
                },
                t,
            );
        }
        let (id, p) = c.procedures().next().unwrap();
        assert_eq!((id, p.calls, p.errors, p.samples), (10, 640, 64, 10));
        assert!(c.latency_ns(0.5) > 0 && c.latency_ns(0.5) <= c.latency_ns(0.99));
        c.finish(
            9999,
            Status::Ok,
            Some(Instant::now() - Duration::from_millis(2)),
        );
        assert!(c.latency_ns(1.0) >= 2_000_000);
        assert_eq!(c.procedures().last().unwrap().0, (PROC_SLOTS - 1) as u32);
        assert_eq!(CallCounters::default().latency_ns(0.99), 0);
        let mut scans = CallCounters::default();
        let t = scans.start(tabos_procs::ids::SQL_SCAN);
        assert!(t.is_some(), "every scan is timed");
        scans.finish(tabos_procs::ids::SQL_SCAN, Status::Ok, t);
        assert!(scans.procedures().next().unwrap().1.max_ns > 0);
    }
}
