//! Start-up recovery of this node's partitions: lock the data directory, check its
//! `meta`, then per partition load the newest snapshot and replay the log after it
//! through the same procedures, refusing to start on anything that does not check out.

use crate::config::{Durability, Resolved};
use crate::durable::Durable;
use std::path::Path;
use std::time::Duration;
use tabos_durability::{layout, partition_dir, recover, DirLock, Meta, Mode, Record, Report};
use tabos_engine::{execute_logged, Caller, Ctx, Registry, UserName};
use tabos_procs::PartitionDb;
use tabos_transport::Status;

/// Re-run one logged invocation on `db`. It committed changes when it was logged, so
/// anything else now means the state diverged.
pub fn replay(
    db: &mut PartitionDb,
    registry: &Registry<PartitionDb>,
    partition: u32,
    partition_count: u32,
    max_reply_bytes: usize,
    record: &Record<'_>,
) -> Result<(), String> {
    let def = registry
        .get(record.proc_id)
        .ok_or_else(|| format!("unknown procedure id {}", record.proc_id))?;
    let user =
        UserName::new(record.user).ok_or_else(|| format!("bad user name {:?}", record.user))?;
    let caller = Caller {
        uid: record.uid,
        pid: record.pid,
        user,
    };
    let mut reply = Vec::new();
    let mut ctx = Ctx::new(
        db,
        partition,
        partition_count,
        caller,
        record.args,
        &mut reply,
        max_reply_bytes,
    );
    let done = execute_logged(def, &mut ctx);
    if done.status != Status::Ok {
        return Err(format!("{} returned {} on replay", def.name, done.status));
    }
    Ok(())
}

/// Recover partition `partition` (global id) from `dir` into `db`.
pub fn recover_partition(
    dir: &Path,
    db: &mut PartitionDb,
    registry: &Registry<PartitionDb>,
    partition: u32,
    partition_count: u32,
    max_reply_bytes: usize,
) -> Result<Report, String> {
    // Both closures change the database, one after the other.
    let db = std::cell::RefCell::new(db);
    let report = recover(
        dir,
        Mode::Repair,
        |snap| {
            if snap.partition != partition {
                return Err(format!(
                    "snapshot of partition {} in the directory of partition {partition}",
                    snap.partition
                ));
            }
            db.borrow_mut().read_image(&snap.body)
        },
        |record| replay(&mut db.borrow_mut(), registry, partition, partition_count, max_reply_bytes, record),
    )
    .map_err(|c| {
        format!(
            "p{partition}: cannot recover: {c}; refusing to start (run `tabos admin verify {}` for details)",
            dir.parent().unwrap_or(dir).display()
        )
    })?;
    if let Some(t) = &report.torn {
        eprintln!(
            "tabosd: p{partition}: cut torn tail of {} at offset {} ({} bytes)",
            t.path.display(),
            t.offset,
            t.bytes
        );
    }
    Ok(report)
}

/// What start-up hands each partition thread.
#[derive(Debug)]
pub struct Recovered {
    pub dbs: Vec<PartitionDb>,
    pub durables: Vec<Durable>,
    /// Held while the node runs: a second tabosd on the directory is refused.
    pub lock: Option<DirLock>,
}

/// Lock and check the data directory and recover every partition of this node, in
/// parallel. With durability off, nothing is read: every partition starts empty.
pub fn recover_node(
    resolved: &Resolved,
    registry: &Registry<PartitionDb>,
) -> Result<Recovered, String> {
    let config = &resolved.config;
    let nodes: Vec<u32> = resolved
        .map
        .iter()
        .flat_map(|n| std::iter::repeat_n(n.node_id, n.partition_count as usize))
        .collect();
    let base = resolved.partition_base;
    let count = resolved.global_partition_count;
    let fresh = |local: u32| PartitionDb::new(resolved.limits, base + local, count, &nodes);
    if config.durability == Durability::Off {
        return Ok(Recovered {
            dbs: (0..resolved.partition_count).map(fresh).collect(),
            durables: (0..resolved.partition_count)
                .map(|l| Durable::off(base + l))
                .collect(),
            lock: None,
        });
    }
    let data_dir = &config.data_dir;
    let lock = layout::lock(data_dir)?;
    Meta {
        partition_count: resolved.partition_count,
        node_id: config.node_id,
    }
    .check_or_create(data_dir)?;
    let max_reply = config.max_payload_bytes as usize;
    let results: Vec<Result<(PartitionDb, Durable), String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..resolved.partition_count)
            .map(|local| {
                let fresh = &fresh;
                scope.spawn(move || {
                    let id = base + local;
                    let dir = partition_dir(data_dir, id);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| format!("create {}: {e}", dir.display()))?;
                    let mut db = fresh(local);
                    let report = recover_partition(&dir, &mut db, registry, id, count, max_reply)?;
                    eprintln!(
                        "tabosd: p{id}: recovered: snapshot at lsn {}, {} records replayed ({} log bytes) in {:.1} ms; last lsn {}",
                        report.snapshot_lsn,
                        report.replayed,
                        report.log_bytes,
                        report.elapsed.as_secs_f64() * 1e3,
                        report.last_lsn
                    );
                    let durable = Durable::open(
                        &dir,
                        id,
                        config.durability,
                        Duration::from_millis(config.log_flush_ms),
                        config.snapshot_every_mib.saturating_mul(1 << 20),
                        report.last_lsn,
                        io_worker_cpus(&resolved.cores, local as usize),
                    )
                    .map_err(|e| format!("p{id}: cannot open the log in {}: {e}", dir.display()))?;
                    Ok((db, durable))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("recovery thread panicked".into()))
            })
            .collect()
    });
    let mut dbs = Vec::new();
    let mut durables = Vec::new();
    for r in results {
        let (db, durable) = r?;
        dbs.push(db);
        durables.push(durable);
    }
    if let Some(why) = replicated_divergence(&dbs, base) {
        eprintln!("tabosd: WARNING: {why}");
    }
    Ok(Recovered {
        dbs,
        durables,
        lock: Some(lock),
    })
}

/// CPUs for the io_uring workers that flush partition `local`'s log: every CPU this
/// process may use that no partition is pinned to; failing that, every one but this
/// partition's own core; empty (the kernel's choice) for an unpinned partition.
fn io_worker_cpus(cores: &[Option<usize>], local: usize) -> Vec<usize> {
    let Some(own) = cores.get(local).copied().flatten() else {
        return Vec::new();
    };
    let available: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    let free: Vec<usize> = available
        .iter()
        .copied()
        .filter(|c| !cores.contains(&Some(*c)))
        .collect();
    if !free.is_empty() {
        return free;
    }
    available.into_iter().filter(|&c| c != own).collect()
}

/// Why the replicated tables differ across this node's recovered partitions, if they
/// do. Each partition logs a replicated write on its own, so a crash after some
/// partitions made one durable and before the others did (it was not yet
/// acknowledged) leaves them different; recovery does not reconcile that yet, and
/// says so rather than serve the difference silently.
pub fn replicated_divergence(dbs: &[PartitionDb], base: u32) -> Option<String> {
    let digests: Vec<u64> = dbs.iter().map(PartitionDb::replicated_digest).collect();
    let first = *digests.first()?;
    let differ: Vec<String> = digests
        .iter()
        .enumerate()
        .filter(|(_, &d)| d != first)
        .map(|(i, _)| format!("p{}", base + i as u32))
        .collect();
    (!differ.is_empty()).then(|| {
        format!(
            "replicated tables (rkv, fs_user, fs_map) of {} differ from p{base}'s after recovery: \
             an unacknowledged replicated write reached only some partitions before the \
             crash; repeat that write (e.g. the useradd or rkv put) to make them agree",
            differ.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::replicated_divergence;
    use tabos_procs::{DbLimits, PartitionDb};

    #[test]
    fn diverged_replicated_tables_are_reported() {
        let db = || PartitionDb::new(DbLimits::default(), 0, 2, &[0, 0]);
        assert_eq!(replicated_divergence(&[db(), db()], 0), None);
        let mut ahead = db();
        ahead
            .rkv
            .insert(tabos_procs::builtin::KvRow {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            })
            .unwrap();
        ahead.rkv.commit();
        let why = replicated_divergence(&[db(), ahead], 4).expect("they differ");
        assert!(why.contains("p5"), "{why}");
    }
}
