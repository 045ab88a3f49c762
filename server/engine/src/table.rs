//! A typed table: rows in a slab of slots, a hash primary index from key to slot, an
//! optional ordered secondary index and an undo log that lets a transaction roll back
//! every mutation since the last commit.
//!
//! Why a slab: a read-only scan (SQL) reads a table in bounded chunks between
//! transactions and needs a cursor that survives writes in between. A row keeps its slot
//! for its whole life (updates replace it in place), so "the next slot after the last one
//! returned" is such a cursor: a row present for the whole scan is returned exactly once;
//! a row inserted or deleted meanwhile may or may not be (a key deleted and inserted
//! again gets a new slot, so it may be returned once per life). Freed slots are reused last in,
//! first out, so a rollback (which undoes newest first) puts every deleted row back in
//! the slot it had.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::{Bound, RangeBounds};

use hashbrown::hash_map::Entry;
use hashbrown::HashMap;
use tabos_transport::Status;

use crate::error::ConsistencyError;
use crate::schema::Schema;

/// A row type stored in a [`Table`]. Rows serialize with serde: snapshots store them and
/// SQL reads their fields as columns.
pub trait Row:
    Clone + fmt::Debug + serde::Serialize + serde::de::DeserializeOwned + 'static
{
    /// Primary key, unique within the table.
    type Key: std::hash::Hash + Eq + Ord + Clone + fmt::Debug;
    /// Key of the ordered secondary index; use `()` when the table needs none.
    type SortKey: Ord + Clone + fmt::Debug;
    /// The row's primary key. Must stay the same for the row's whole life.
    fn key(&self) -> Self::Key;
    /// `None`: the row is not in the ordered index.
    fn sort_key(&self) -> Option<Self::SortKey> {
        None
    }
}

/// Where an ordered-index entry sits among entries with the same sort key. `Below` and
/// `Above` are never stored: they are probes that let a range over sort keys alone be
/// expressed as a range over `(sort key, primary key)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Tie<K> {
    Below,
    Key(K),
    Above,
}

/// One entry of the ordered index, ordered by sort key, then primary key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Ordered<S, K> {
    sort: S,
    key: Tie<K>,
}

/// How to undo one mutation.
enum Undo<R: Row> {
    /// A new row with this key was inserted.
    Inserted(R::Key),
    /// This row was replaced (by upsert or update).
    Replaced(R),
    /// This row was deleted.
    Deleted(R),
}

/// A table of rows of type `R`, bounded to `max_rows`.
///
/// Every mutation is recorded in an undo log until [`commit`](Self::commit) or
/// [`rollback`](Self::rollback); rows loaded at start-up need a commit too. Mutations
/// cost O(log n) and allocate nothing beyond the row and its keys (plus amortised index
/// and log growth).
pub struct Table<R: Row> {
    name: &'static str,
    /// Rows by slot; `None` is a free slot (listed in `free`).
    slots: Vec<Option<R>>,
    /// Free slots, reused last in, first out.
    free: Vec<usize>,
    /// Primary index: key to slot.
    rows: HashMap<R::Key, usize>,
    /// Sort entries and the slot of their row: a range scan reads rows without a
    /// trip through the hash index.
    ordered: BTreeMap<Ordered<R::SortKey, R::Key>, usize>,
    undo: Vec<Undo<R>>,
    max_rows: usize,
}

impl<R: Row> fmt::Debug for Table<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.name)
            .field("len", &self.rows.len())
            .field("slots", &self.slots.len())
            .field("ordered_len", &self.ordered.len())
            .field("undo_len", &self.undo.len())
            .field("max_rows", &self.max_rows)
            .finish()
    }
}

impl<R: Row> Table<R> {
    /// An empty table that holds at most `max_rows` rows.
    pub fn new(name: &'static str, max_rows: usize) -> Self {
        assert!(!name.is_empty(), "a table needs a name");
        Table {
            name,
            slots: Vec::new(),
            free: Vec::new(),
            rows: HashMap::new(),
            ordered: BTreeMap::new(),
            undo: Vec::new(),
            max_rows,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn max_rows(&self) -> usize {
        self.max_rows
    }

    pub fn get(&self, key: &R::Key) -> Option<&R> {
        self.rows.get(key).map(|&slot| self.slot(slot))
    }

    pub fn contains(&self, key: &R::Key) -> bool {
        self.rows.contains_key(key)
    }

    /// Insert a new row. `Err(Status::AlreadyExists)` if the key exists,
    /// `Err(Status::TableFull)` at `max_rows`; the table is unchanged on error.
    pub fn insert(&mut self, row: R) -> Result<(), Status> {
        let full = self.rows.len() >= self.max_rows;
        match self.rows.entry(row.key()) {
            Entry::Occupied(_) => Err(Status::AlreadyExists),
            Entry::Vacant(_) if full => Err(Status::TableFull),
            Entry::Vacant(vacant) => {
                let key = vacant.key().clone();
                let sort = row.sort_key();
                let slot = alloc(&mut self.slots, &mut self.free, row);
                vacant.insert(slot);
                self.index_insert(&key, sort, slot);
                self.undo.push(Undo::Inserted(key));
                assert!(self.rows.len() <= self.max_rows);
                Ok(())
            }
        }
    }

    /// Insert or replace; returns the old row. `Err(Status::TableFull)` only when
    /// inserting a new key at `max_rows`.
    pub fn upsert(&mut self, row: R) -> Result<Option<R>, Status> {
        Ok(self.put(row)?.cloned())
    }

    /// Insert or replace without handing the old row back: the old row moves into the
    /// undo log instead of being copied (what [`upsert`](Self::upsert) must do to
    /// return it). `Err(Status::TableFull)` only when inserting a new key at `max_rows`.
    pub fn replace(&mut self, row: R) -> Result<(), Status> {
        self.put(row).map(drop)
    }

    /// Insert or replace; the replaced row, which now lives in the undo log.
    fn put(&mut self, row: R) -> Result<Option<&R>, Status> {
        match self.rows.entry(row.key()) {
            Entry::Vacant(_) => self.insert(row).map(|()| None),
            Entry::Occupied(occupied) => {
                let key = occupied.key().clone();
                let slot = *occupied.get();
                let new_sort = row.sort_key();
                let old = self.slots[slot]
                    .replace(row)
                    .expect("the primary index names a free slot");
                self.reindex(&key, old.sort_key(), new_sort, slot);
                self.undo.push(Undo::Replaced(old));
                match self.undo.last() {
                    Some(Undo::Replaced(old)) => Ok(Some(old)),
                    _ => unreachable!("just pushed"),
                }
            }
        }
    }

    /// Apply `f` to the row with `key`; `None` if there is none. The ordered index
    /// follows a changed sort key. `f` must not change the primary key (asserted).
    pub fn update<T>(&mut self, key: &R::Key, f: impl FnOnce(&mut R) -> T) -> Option<T> {
        let slot = *self.rows.get(key)?;
        let row = self.slots[slot]
            .as_mut()
            .expect("the primary index names a free slot");
        let old_sort = row.sort_key();
        self.undo.push(Undo::Replaced(row.clone()));
        let out = f(row);
        // O(key) and allocating for owned keys: checked in debug builds only.
        debug_assert!(
            row.key() == *key,
            "table {}: update changed the primary key of {key:?}",
            self.name
        );
        let new_sort = row.sort_key();
        self.reindex(key, old_sort, new_sort, slot);
        Some(out)
    }

    /// Remove and return the row with `key`, if any.
    pub fn delete(&mut self, key: &R::Key) -> Option<R> {
        let slot = self.rows.remove(key)?;
        let old = self.release(slot);
        self.index_remove(key, old.sort_key());
        self.undo.push(Undo::Deleted(old.clone()));
        Some(old)
    }

    /// Delete the row with `key` without handing it back (it moves into the undo log
    /// rather than being copied, as [`delete`](Self::delete) must). Whether it existed.
    pub fn remove(&mut self, key: &R::Key) -> bool {
        let Some(slot) = self.rows.remove(key) else {
            return false;
        };
        let old = self.release(slot);
        self.index_remove(key, old.sort_key());
        self.undo.push(Undo::Deleted(old));
        true
    }

    /// Every row, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &R> {
        self.slots.iter().flatten()
    }

    /// Rows in slot order from slot `from` on, with their slots: the chunked scan that
    /// SQL reads through. Resume a scan at the last slot returned plus one; see the
    /// module documentation for what such a cursor guarantees. A `from` past the end
    /// yields nothing. Free slots are skipped, so bound a chunk by slots looked at too
    /// ([`slot_count`](Self::slot_count) is the end).
    pub fn scan_from(&self, from: usize) -> impl Iterator<Item = (usize, &R)> {
        let start = from.min(self.slots.len());
        self.slots[start..]
            .iter()
            .enumerate()
            .filter_map(move |(i, row)| row.as_ref().map(|r| (start + i, r)))
    }

    /// Slots in use or free: the end of a [`scan_from`](Self::scan_from).
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    /// Rows in the ordered index whose sort key lies in `range`, in sort-key order (ties
    /// by primary key). An empty or inverted range yields nothing; it never panics.
    pub fn range<B: RangeBounds<R::SortKey>>(
        &self,
        range: B,
    ) -> impl DoubleEndedIterator<Item = &R> {
        let lower = match range.start_bound() {
            Bound::Included(s) => Bound::Included(probe(s, Tie::Below)),
            Bound::Excluded(s) => Bound::Included(probe(s, Tie::Above)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut upper = match range.end_bound() {
            Bound::Included(s) => Bound::Included(probe(s, Tie::Above)),
            Bound::Excluded(s) => Bound::Included(probe(s, Tie::Below)),
            Bound::Unbounded => Bound::Unbounded,
        };
        // BTreeMap::range panics on start > end. Probes never equal a stored entry, so
        // `lower..=lower` is an empty range of the same type.
        if let (Bound::Included(lo), Bound::Included(hi)) = (&lower, &upper) {
            if lo > hi {
                upper = lower.clone();
            }
        }
        self.ordered
            .range((lower, upper))
            .map(|(_, &slot)| self.slot(slot))
    }

    /// The first row of [`range`](Self::range), if any.
    pub fn first_in<B: RangeBounds<R::SortKey>>(&self, range: B) -> Option<&R> {
        self.range(range).next()
    }

    /// Forget the undo log: every mutation so far is permanent.
    pub fn commit(&mut self) {
        self.undo.clear();
    }

    /// Undo every mutation since the last commit or rollback, newest first.
    pub fn rollback(&mut self) {
        while let Some(undo) = self.undo.pop() {
            match undo {
                Undo::Inserted(key) => {
                    let slot = self
                        .rows
                        .remove(&key)
                        .expect("rollback: inserted row vanished");
                    let row = self.release(slot);
                    self.index_remove(&key, row.sort_key());
                }
                Undo::Replaced(old) => {
                    let key = old.key();
                    let old_sort = old.sort_key();
                    let slot = *self
                        .rows
                        .get(&key)
                        .expect("rollback: replaced row vanished");
                    let row = self.slots[slot]
                        .as_mut()
                        .expect("the primary index names a free slot");
                    let new_sort = row.sort_key();
                    *row = old;
                    self.reindex(&key, new_sort, old_sort, slot);
                }
                Undo::Deleted(old) => {
                    let key = old.key();
                    let sort = old.sort_key();
                    let slot = alloc(&mut self.slots, &mut self.free, old);
                    self.index_insert(&key, sort, slot);
                    let previous = self.rows.insert(key, slot);
                    assert!(previous.is_none(), "rollback: deleted row reappeared");
                }
            }
        }
        assert!(self.rows.len() <= self.max_rows);
    }

    /// Whether there are mutations since the last commit or rollback.
    pub fn has_uncommitted(&self) -> bool {
        !self.undo.is_empty()
    }

    /// Check that every row is stored under its own key, that the ordered index holds
    /// exactly the rows whose `sort_key()` is `Some`, under that sort key, and that the
    /// table holds at most `max_rows` rows. O(n log n): for tests and debug checks.
    pub fn check_consistency(&self) -> Result<(), ConsistencyError> {
        let fail = |what: String| {
            Err(ConsistencyError {
                table: self.name,
                what,
            })
        };
        if self.rows.len() > self.max_rows {
            return fail(format!(
                "{} rows > max_rows {}",
                self.rows.len(),
                self.max_rows
            ));
        }
        let used_count = self.slots.iter().filter(|s| s.is_some()).count();
        if used_count != self.rows.len() || used_count + self.free.len() != self.slots.len() {
            return fail(format!(
                "{used_count} used slots, {} free, {} slots, {} keys",
                self.free.len(),
                self.slots.len(),
                self.rows.len()
            ));
        }
        if let Some(&slot) = self.free.iter().find(|&&s| self.slots[s].is_some()) {
            return fail(format!("free slot {slot} holds a row"));
        }
        let mut sorted_count = 0;
        for (key, &slot) in &self.rows {
            let Some(row) = self.slots.get(slot).and_then(Option::as_ref) else {
                return fail(format!("key {key:?} names free slot {slot}"));
            };
            if row.key() != *key {
                return fail(format!("row {row:?} stored under key {key:?}"));
            }
            if let Some(sort) = row.sort_key() {
                sorted_count += 1;
                if self.ordered.get(&probe(&sort, Tie::Key(key.clone()))) != Some(&slot) {
                    return fail(format!(
                        "row {key:?} missing from the ordered index or under another slot"
                    ));
                }
            }
        }
        if sorted_count != self.ordered.len() {
            return fail(format!(
                "ordered index has {} entries, {sorted_count} rows have a sort key",
                self.ordered.len()
            ));
        }
        Ok(())
    }

    fn slot(&self, slot: usize) -> &R {
        self.slots[slot]
            .as_ref()
            .expect("the primary index names a free slot")
    }

    /// Empty `slot` and return its row.
    fn release(&mut self, slot: usize) -> R {
        let row = self.slots[slot].take().expect("released a free slot");
        self.free.push(slot);
        row
    }

    fn index_insert(&mut self, key: &R::Key, sort: Option<R::SortKey>, slot: usize) {
        if let Some(sort) = sort {
            let previous = self.ordered.insert(
                Ordered {
                    sort,
                    key: Tie::Key(key.clone()),
                },
                slot,
            );
            assert!(
                previous.is_none(),
                "table {}: {key:?} was already in the ordered index",
                self.name
            );
        }
    }

    fn index_remove(&mut self, key: &R::Key, sort: Option<R::SortKey>) {
        if let Some(sort) = sort {
            let removed = self.ordered.remove(&Ordered {
                sort,
                key: Tie::Key(key.clone()),
            });
            assert!(
                removed.is_some(),
                "table {}: {key:?} was not in the ordered index",
                self.name
            );
        }
    }

    fn reindex(
        &mut self,
        key: &R::Key,
        old: Option<R::SortKey>,
        new: Option<R::SortKey>,
        slot: usize,
    ) {
        if old != new {
            self.index_remove(key, old);
            self.index_insert(key, new, slot);
        }
    }
}

/// Put `row` in the most recently freed slot, or a new one; returns the slot.
fn alloc<R>(slots: &mut Vec<Option<R>>, free: &mut Vec<usize>, row: R) -> usize {
    match free.pop() {
        Some(slot) => {
            assert!(slots[slot].is_none(), "free slot {slot} holds a row");
            slots[slot] = Some(row);
            slot
        }
        None => {
            slots.push(Some(row));
            slots.len() - 1
        }
    }
}

fn probe<S: Clone, K>(sort: &S, key: Tie<K>) -> Ordered<S, K> {
    Ordered {
        sort: sort.clone(),
        key,
    }
}

/// A lone table is a schema, which is handy in tests and for single-table services.
impl<R: Row> Schema for Table<R> {
    fn commit(&mut self) {
        Table::commit(self);
    }

    fn rollback(&mut self) {
        Table::rollback(self);
    }

    fn has_uncommitted(&self) -> bool {
        Table::has_uncommitted(self)
    }

    fn check_consistency(&self) -> Result<(), ConsistencyError> {
        Table::check_consistency(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(
        Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
    )]
    struct Job {
        id: u32,
        deadline: Option<u64>,
    }

    impl Row for Job {
        type Key = u32;
        type SortKey = u64;
        fn key(&self) -> u32 {
            self.id
        }
        fn sort_key(&self) -> Option<u64> {
            self.deadline
        }
    }

    fn job(id: u32, deadline: Option<u64>) -> Job {
        Job { id, deadline }
    }

    fn ids<'a>(rows: impl Iterator<Item = &'a Job>) -> Vec<u32> {
        rows.map(|j| j.id).collect()
    }

    fn rows_sorted(t: &Table<Job>) -> Vec<Job> {
        let mut rows: Vec<Job> = t.iter().cloned().collect();
        rows.sort();
        rows
    }

    #[test]
    fn duplicate_insert_and_table_full_change_nothing() {
        let mut t = Table::new("jobs", 2);
        t.insert(job(1, Some(5))).unwrap();
        assert_eq!(t.insert(job(1, Some(7))), Err(Status::AlreadyExists));
        t.insert(job(2, None)).unwrap();
        assert_eq!(t.insert(job(3, None)), Err(Status::TableFull));
        assert_eq!(t.insert(job(2, None)), Err(Status::AlreadyExists));
        assert_eq!(t.upsert(job(3, None)), Err(Status::TableFull));
        assert_eq!(t.upsert(job(2, Some(1))), Ok(Some(job(2, None))));
        assert_eq!(t.len(), 2);
        assert_eq!(t.get(&1), Some(&job(1, Some(5))));
        assert_eq!(ids(t.range(..)), [2, 1]);
        t.check_consistency().unwrap();
    }

    #[test]
    fn update_and_delete_of_missing_key_return_none() {
        let mut t: Table<Job> = Table::new("jobs", 4);
        assert_eq!(t.update(&9, |j| j.deadline = Some(1)), None);
        assert_eq!(t.delete(&9), None);
        assert!(!t.has_uncommitted());
    }

    #[test]
    fn range_orders_duplicate_sort_keys_by_primary_key() {
        let mut t = Table::new("jobs", 16);
        for (id, deadline) in [(7, 20), (3, 10), (5, 20), (1, 30), (9, 20), (2, 10)] {
            t.insert(job(id, Some(deadline))).unwrap();
        }
        t.insert(job(4, None)).unwrap();
        assert_eq!(ids(t.range(..)), [2, 3, 5, 7, 9, 1]);
        assert_eq!(ids(t.range(20..=20)), [5, 7, 9]);
        assert_eq!(ids(t.range(20..20)), Vec::<u32>::new());
        assert_eq!(ids(t.range(10..30)), [2, 3, 5, 7, 9]);
        assert_eq!(
            ids(t.range((Bound::Excluded(10), Bound::Included(30)))),
            [5, 7, 9, 1]
        );
        assert_eq!(
            ids(t.range((Bound::Excluded(20), Bound::Excluded(20)))),
            Vec::<u32>::new()
        );
        assert_eq!(
            ids(t.range((Bound::Included(25), Bound::Excluded(15)))),
            Vec::<u32>::new()
        );
        assert_eq!(ids(t.range(..=20).rev()), [9, 7, 5, 3, 2]);
        assert_eq!(t.first_in(11..).map(|j| j.id), Some(5));
        assert_eq!(t.first_in(31..), None);
    }

    #[test]
    fn update_that_changes_the_sort_key_moves_the_row() {
        let mut t = Table::new("jobs", 4);
        t.insert(job(1, Some(10))).unwrap();
        t.insert(job(2, Some(20))).unwrap();
        t.commit();
        assert_eq!(t.update(&1, |j| j.deadline.replace(30)), Some(Some(10)));
        assert_eq!(ids(t.range(..)), [2, 1]);
        assert_eq!(t.update(&2, |j| j.deadline = None), Some(()));
        assert_eq!(ids(t.range(..)), [1]);
        t.check_consistency().unwrap();
        t.rollback();
        assert_eq!(ids(t.range(..)), [1, 2]);
        t.check_consistency().unwrap();
    }

    #[test]
    #[should_panic(expected = "changed the primary key")]
    fn update_must_not_change_the_primary_key() {
        let mut t = Table::new("jobs", 4);
        t.insert(job(1, None)).unwrap();
        t.update(&1, |j| j.id = 2);
    }

    #[test]
    fn rows_keep_their_slots_and_rollback_restores_them() {
        let mut t = Table::new("jobs", 8);
        for id in 0..4 {
            t.insert(job(id, None)).unwrap();
        }
        t.commit();
        let slots = |t: &Table<Job>| -> Vec<(usize, u32)> {
            t.scan_from(0).map(|(s, j)| (s, j.id)).collect()
        };
        let before = slots(&t);
        assert_eq!(before, [(0, 0), (1, 1), (2, 2), (3, 3)]);
        t.update(&2, |j| j.deadline = Some(5)).unwrap();
        t.upsert(job(1, Some(3))).unwrap();
        assert_eq!(slots(&t), before, "updates keep slots");
        t.delete(&1).unwrap();
        t.delete(&3).unwrap();
        t.insert(job(9, None)).unwrap();
        assert_eq!(
            t.scan_from(2).map(|(s, j)| (s, j.id)).collect::<Vec<_>>(),
            [(2, 2), (3, 9)]
        );
        t.rollback();
        assert_eq!(slots(&t), before, "rollback puts rows back in their slots");
        assert_eq!(t.scan_from(99).count(), 0);
        t.check_consistency().unwrap();
    }

    #[test]
    fn rollback_restores_both_indexes_exactly() {
        let mut t = Table::new("jobs", 8);
        for id in 0..5 {
            t.insert(job(id, Some(u64::from(id % 2)))).unwrap();
        }
        t.commit();
        assert!(!t.has_uncommitted());
        let (rows, order) = (rows_sorted(&t), ids(t.range(..)));

        t.delete(&0).unwrap();
        t.insert(job(0, Some(9))).unwrap();
        t.upsert(job(1, None)).unwrap();
        t.update(&2, |j| j.deadline = Some(4)).unwrap();
        t.delete(&2).unwrap();
        t.insert(job(7, Some(0))).unwrap();
        assert!(t.has_uncommitted());
        t.rollback();

        assert!(!t.has_uncommitted());
        t.check_consistency().unwrap();
        assert_eq!(rows_sorted(&t), rows);
        assert_eq!(ids(t.range(..)), order);
    }
}
