//! A node without a server, for unit tests of procedures: every partition's tables in
//! one struct, and calls run the way the partition loop runs them (broadcast
//! procedures on every partition in order).

use crate::schema::{DbLimits, PartitionDb};
use tabos_engine::{execute, Caller, Ctx, Registry, Schema, Scope, WaitFor};
use tabos_transport::Status;

/// What one call did, beyond its status and reply.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Effects {
    /// Keys the committed transaction notified.
    pub notify: Vec<u64>,
    /// The wait the procedure asked for, if it returned `QueueEmpty`.
    pub wait: Option<WaitFor>,
}

/// Every partition of a simulated node.
#[derive(Debug)]
pub struct Harness {
    /// One database per partition.
    pub dbs: Vec<PartitionDb>,
    registry: Registry<PartitionDb>,
    /// Largest reply.
    pub max_reply_bytes: usize,
}

impl Harness {
    /// `partition_count` empty partitions with `limits`.
    pub fn new(partition_count: u32, limits: DbLimits) -> Harness {
        let dbs = (0..partition_count)
            .map(|p| {
                PartitionDb::new(
                    limits,
                    p,
                    partition_count,
                    &vec![0; partition_count as usize],
                )
            })
            .collect();
        Harness {
            dbs,
            registry: crate::registry(),
            max_reply_bytes: 1 << 21,
        }
    }

    /// Call `proc_id` on `partition` as `caller`, returning the reply or the status.
    pub fn call_as(
        &mut self,
        caller: Caller,
        partition: u32,
        proc_id: u32,
        args: &[u8],
    ) -> Result<Vec<u8>, Status> {
        self.call_full(caller, partition, proc_id, args).0
    }

    /// Call as root.
    pub fn call(&mut self, partition: u32, proc_id: u32, args: &[u8]) -> Result<Vec<u8>, Status> {
        self.call_as(Caller::root(), partition, proc_id, args)
    }

    /// Call and also return the side effects the partition loop acts on.
    pub fn call_full(
        &mut self,
        caller: Caller,
        partition: u32,
        proc_id: u32,
        args: &[u8],
    ) -> (Result<Vec<u8>, Status>, Effects) {
        let count = self.dbs.len() as u32;
        if partition >= count {
            return (Err(Status::BadPartition), Effects::default());
        }
        let Some(def) = self.registry.get(proc_id).copied() else {
            return (Err(Status::UnknownProcedure), Effects::default());
        };
        let targets: Vec<u32> = match def.scope {
            Scope::Single => vec![partition],
            Scope::Broadcast => (0..count).collect(),
        };
        let mut outcome = None;
        for p in targets {
            let mut reply = Vec::new();
            let mut ctx = Ctx::new(
                &mut self.dbs[p as usize],
                p,
                count,
                caller,
                args,
                &mut reply,
                self.max_reply_bytes,
            );
            let status = execute(&def, &mut ctx);
            let effects = Effects {
                notify: ctx.notify,
                wait: ctx.wait,
            };
            if p == partition {
                let result = if status == Status::Ok {
                    Ok(reply)
                } else {
                    Err(status)
                };
                outcome = Some((result, effects));
            }
        }
        self.check();
        outcome.expect("the named partition ran the call")
    }

    /// Assert every table of every partition is consistent.
    pub fn check(&self) {
        for (p, db) in self.dbs.iter().enumerate() {
            if let Err(e) = db.check_consistency() {
                panic!("partition {p}: {e}");
            }
        }
    }
}
