//! Read-only procedures for `tabos sched ls` and for clients that follow a task:
//! `task_get` by id, and `worker_list` / `task_list` one bounded page at a time.
//!
//! A page holds the rows with ids above a cursor, in id order, so paging stays
//! correct while the table changes between calls. The primary index is a hash, so a
//! page costs one O(n log limit) scan: an administrative listing, not the hot path.

use std::collections::BinaryHeap;

use tabos_engine::{ArgReader, Ctx, Row, Table};
use tabos_transport::Status;

use super::api::{opt_u64, Page, Record, LIST_LIMIT_MAX};
use crate::schema::PartitionDb;

/// `task_get(TID)`: the task's record, or `NotFound`.
pub(super) fn task_get(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let mut r = ArgReader::new(ctx.args);
    let task_id = r.u64()?;
    r.finish()?;
    let task = ctx.db.sched.tasks.get(&task_id).ok_or(Status::NotFound)?;
    task.info().encode(ctx.reply);
    Ok(())
}

/// `worker_list(after, limit)`: a page of workers with their capacity.
pub(super) fn worker_list(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let (after, limit) = decode_list(ctx.args)?;
    let (items, more) = page(&ctx.db.sched.workers, after, limit, |w| w.info());
    Page::encode(&items, more, ctx.reply);
    Ok(())
}

/// `task_list(after, limit)`: a page of tasks with their state.
pub(super) fn task_list(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let (after, limit) = decode_list(ctx.args)?;
    let (items, more) = page(&ctx.db.sched.tasks, after, limit, |t| t.info());
    Page::encode(&items, more, ctx.reply);
    Ok(())
}

fn decode_list(args: &[u8]) -> Result<(Option<u64>, u32), Status> {
    let mut r = ArgReader::new(args);
    let after = opt_u64(&mut r)?;
    let limit = r.u32()?;
    r.finish()?;
    if limit == 0 || limit > LIST_LIMIT_MAX {
        return Err(Status::BadArgs);
    }
    Ok((after, limit))
}

/// The `limit` rows with the smallest ids above `after`, ascending, and whether more
/// follow. Keeps a max-heap of at most `limit + 1` ids.
fn page<R, T>(
    table: &Table<R>,
    after: Option<u64>,
    limit: u32,
    info: impl Fn(&R) -> T,
) -> (Vec<T>, bool)
where
    R: Row<Key = u64>,
    T: Record,
{
    assert!(limit > 0 && limit <= LIST_LIMIT_MAX);
    let keep = limit as usize + 1;
    let mut smallest: BinaryHeap<u64> = BinaryHeap::with_capacity(keep + 1);
    for row in table.iter() {
        let id = row.key();
        if after.is_some_and(|a| id <= a) {
            continue;
        }
        smallest.push(id);
        if smallest.len() > keep {
            smallest.pop();
        }
    }
    let more = smallest.len() == keep;
    let mut ids = smallest.into_sorted_vec();
    ids.truncate(limit as usize);
    let items: Vec<T> = ids
        .iter()
        .map(|id| info(table.get(id).expect("id taken from the table")))
        .collect();
    // assertions: ascending ids, within the bound.
    assert!(items.len() <= limit as usize);
    debug_assert!(items.windows(2).all(|w| w[0].id() < w[1].id()));
    (items, more)
}
