//! Start-up recovery of this node's partitions: lock the data directory, check its
//! `meta`, then per partition load the newest snapshot and replay the log after it
//! through the same procedures, refusing to start on anything that does not check out.

use crate::config::{Durability, Resolved};
use crate::durable::Durable;
use std::path::Path;
use tabos_durability::{layout, partition_dir, recover, DirLock, Meta, Mode, Record, Report};
use tabos_engine::{execute_logged, Caller, Ctx, Registry, Scope, UserName};
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
    // Counted as the partition thread counts it when it logs one.
    db.count_replicated(def.scope, done.changed);
    Ok(())
}

/// A replicated write found in a partition's log: its position in the node's order of
/// replicated writes, and the invocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicatedRecord {
    pub seq: u64,
    pub proc_id: u32,
    pub uid: u32,
    pub pid: u32,
    pub user: String,
    pub args: Vec<u8>,
}

impl ReplicatedRecord {
    fn record(&self, lsn: u64) -> Record<'_> {
        Record {
            lsn,
            proc_id: self.proc_id,
            uid: self.uid,
            pid: self.pid,
            user: &self.user,
            args: &self.args,
        }
    }
}

/// Recover partition `partition` (global id) from `dir` into `db`.
pub fn recover_partition(
    dir: &Path,
    db: &mut PartitionDb,
    registry: &Registry<PartitionDb>,
    partition: u32,
    partition_count: u32,
    max_reply_bytes: usize,
) -> Result<(Report, Vec<ReplicatedRecord>), String> {
    // Both closures change the database, one after the other.
    let db = std::cell::RefCell::new(db);
    let mut replicated = Vec::new();
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
        |record| {
            let mut db = db.borrow_mut();
            replay(&mut db, registry, partition, partition_count, max_reply_bytes, record)?;
            if registry.get(record.proc_id).is_some_and(|d| d.scope == Scope::Broadcast) {
                replicated.push(ReplicatedRecord {
                    seq: db.replicated_writes,
                    proc_id: record.proc_id,
                    uid: record.uid,
                    pid: record.pid,
                    user: record.user.to_string(),
                    args: record.args.to_vec(),
                });
            }
            Ok(())
        },
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
    Ok((report, replicated))
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
    type Recovery = (PartitionDb, Durable, Vec<ReplicatedRecord>);
    let results: Vec<Result<Recovery, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..resolved.partition_count)
            .map(|local| {
                let fresh = &fresh;
                scope.spawn(move || {
                    let id = base + local;
                    let dir = partition_dir(data_dir, id);
                    std::fs::create_dir_all(&dir)
                        .map_err(|e| format!("create {}: {e}", dir.display()))?;
                    let mut db = fresh(local);
                    let (report, replicated) =
                        recover_partition(&dir, &mut db, registry, id, count, max_reply)?;
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
                        config.flush_policy(),
                        config.snapshot_every_mib.saturating_mul(1 << 20),
                        report.last_lsn,
                        io_worker_cpus(&resolved.cores, local as usize),
                    )
                    .map_err(|e| format!("p{id}: cannot open the log in {}: {e}", dir.display()))?;
                    Ok((db, durable, replicated))
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
    let mut replicated = Vec::new();
    for r in results {
        let (db, durable, found) = r?;
        dbs.push(db);
        durables.push(durable);
        replicated.push(found);
    }
    let apply = |db: &mut PartitionDb, id: u32, record: &Record<'_>| {
        replay(db, registry, id, count, max_reply, record)
    };
    roll_forward_replicated(&mut dbs, &mut durables, &replicated, base, apply)?;
    if let Some(why) = replicated_divergence(&dbs, base) {
        eprintln!("tabosd: WARNING: {why}");
    }
    Ok(Recovered {
        dbs,
        durables,
        lock: Some(lock),
    })
}

/// A crash can leave a replicated write durable on some partitions and not on others
/// (it was not acknowledged: its reply waits for every partition). Each partition
/// counts the replicated writes it applied, in the node's one order, so the ones a
/// partition lacks are the positions after its count up to the highest count. They
/// are rolled forward: run on that partition from a log that holds them (rolling back
/// could undo what acknowledged local writes on the other partitions read), and
/// logged and flushed there before the node serves. Writes both logs hold must be the
/// same invocation; anything else stops the start.
pub fn roll_forward_replicated(
    dbs: &mut [PartitionDb],
    durables: &mut [Durable],
    replicated: &[Vec<ReplicatedRecord>],
    base: u32,
    mut apply: impl FnMut(&mut PartitionDb, u32, &Record<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let mut by_seq: std::collections::BTreeMap<u64, (u32, &ReplicatedRecord)> =
        std::collections::BTreeMap::new();
    for (local, found) in replicated.iter().enumerate() {
        let id = base + local as u32;
        for r in found {
            match by_seq.get(&r.seq) {
                Some((other, seen)) if *seen != r => {
                    return Err(format!(
                        "replicated write {} differs between the logs of p{other} and p{id} \
                         (procedure {} vs {}): the partitions diverged; refusing to start",
                        r.seq, seen.proc_id, r.proc_id
                    ));
                }
                Some(_) => {}
                None => {
                    by_seq.insert(r.seq, (id, r));
                }
            }
        }
    }
    let newest = dbs.iter().map(|db| db.replicated_writes).max().unwrap_or(0);
    for (local, db) in dbs.iter_mut().enumerate() {
        let id = base + local as u32;
        let behind = db.replicated_writes;
        if behind == newest {
            continue;
        }
        for seq in behind + 1..=newest {
            let Some((from, r)) = by_seq.get(&seq) else {
                // Only in a snapshot of the partitions that have it: nothing to run.
                eprintln!(
                    "tabosd: WARNING: p{id} lacks replicated write {seq}, whose record no \
                     log holds any more (snapshots only); it cannot be rolled forward"
                );
                break;
            };
            let durable = &mut durables[local];
            let lsn = durable.log_position().0 + 1;
            apply(db, id, &r.record(lsn)).map_err(|e| {
                format!("p{id}: rolling replicated write {seq} forward (from p{from}'s log) failed: {e}")
            })?;
            let user = UserName::new(&r.user)
                .ok_or_else(|| format!("bad user name {:?} in p{from}'s log", r.user))?;
            durable.log(
                r.proc_id,
                &Caller {
                    uid: r.uid,
                    pid: r.pid,
                    user,
                },
                &r.args,
            );
            durable
                .flush_blocking()
                .map_err(|e| format!("p{id}: cannot log a rolled-forward write: {e}"))?;
            eprintln!(
                "tabosd: p{id}: rolled replicated write {seq} forward from p{from}'s log \
                 (a crash left it on some partitions only; it was never acknowledged)"
            );
        }
    }
    Ok(())
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
/// still do after [`roll_forward_replicated`]: only when the write a partition lacks
/// survives in snapshots alone. Said, rather than served silently.
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
    use super::{replicated_divergence, roll_forward_replicated, ReplicatedRecord};
    use crate::durable::Durable;
    use tabos_procs::{DbLimits, PartitionDb};

    fn record(seq: u64, args: &[u8]) -> ReplicatedRecord {
        ReplicatedRecord {
            seq,
            proc_id: tabos_procs::ids::RKV_PUT,
            uid: 0,
            pid: 1,
            user: "root".into(),
            args: args.to_vec(),
        }
    }

    #[test]
    fn a_partition_behind_gets_the_writes_it_lacks_from_another_log() {
        let db = || PartitionDb::new(DbLimits::default(), 0, 3, &[0, 0, 0]);
        let mut dbs = vec![db(), db(), db()];
        dbs[0].replicated_writes = 7;
        dbs[1].replicated_writes = 5;
        dbs[2].replicated_writes = 7;
        let mut durables: Vec<Durable> = (0..3).map(Durable::off).collect();
        let logs = vec![
            vec![record(6, b"six"), record(7, b"seven")],
            vec![record(5, b"five")],
            vec![record(7, b"seven")],
        ];
        let mut applied = Vec::new();
        roll_forward_replicated(&mut dbs, &mut durables, &logs, 0, |db, id, r| {
            applied.push((id, r.args.to_vec()));
            db.replicated_writes += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(applied, [(1, b"six".to_vec()), (1, b"seven".to_vec())]);
        assert!(dbs.iter().all(|d| d.replicated_writes == 7));
    }

    #[test]
    fn two_logs_with_different_writes_at_one_position_refuse_to_start() {
        let db = || PartitionDb::new(DbLimits::default(), 0, 2, &[0, 0]);
        let mut dbs = vec![db(), db()];
        dbs[0].replicated_writes = 3;
        dbs[1].replicated_writes = 3;
        let mut durables: Vec<Durable> = (0..2).map(Durable::off).collect();
        let logs = vec![vec![record(3, b"a")], vec![record(3, b"b")]];
        let err = roll_forward_replicated(&mut dbs, &mut durables, &logs, 4, |_, _, _| {
            panic!("nothing is applied")
        })
        .unwrap_err();
        assert!(
            err.contains("replicated write 3 differs between the logs of p4 and p5"),
            "{err}"
        );
    }

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
