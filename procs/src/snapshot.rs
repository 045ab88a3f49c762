//! A partition's state as bytes (snapshots) and as one number (digests that tests
//! compare before a crash and after recovery).
//!
//! The image is every table's rows, each table as a row count then the rows, in
//! bincode's fixed-width encoding, plus the non-row state that procedures depend on
//! (the IPC id floor). The `fs_map` table is not in it: it is built from the cluster
//! configuration at start, which the data directory's `meta` file pins.

use crate::schema::PartitionDb;
use bincode::Options;
use std::hash::{Hash, Hasher};
use tabos_engine::{Row, Schema, Table};

/// Version of the image layout, first in every image (2: the replicated-write count
/// follows the tables).
const IMAGE_VERSION: u32 = 2;

fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .allow_trailing_bytes()
}

fn put<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    options()
        .serialize_into(&mut *out, value)
        .expect("serializing into memory cannot fail");
}

fn put_table<R: Row>(out: &mut Vec<u8>, table: &Table<R>) {
    put(out, &(table.len() as u64));
    for row in table.iter() {
        put(out, row);
    }
}

/// Reads an image, with every error naming the table it was in.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl Reader<'_> {
    fn get<T: serde::de::DeserializeOwned>(&mut self, what: &str) -> Result<T, String> {
        let limit = self.bytes.len() as u64;
        options()
            .with_limit(limit)
            .deserialize_from(&mut self.bytes)
            .map_err(|e| format!("{what}: {e}"))
    }

    fn table<R: Row>(&mut self, table: &mut Table<R>) -> Result<(), String> {
        // A fresh partition may hold rows its constructor made (e.g. the root
        // directory): the image replaces them.
        let keys: Vec<R::Key> = table.iter().map(|r| r.key()).collect();
        for key in &keys {
            table.delete(key);
        }
        table.commit();
        assert!(table.is_empty(), "restore into an empty table");
        let count: u64 = self.get(table.name())?;
        if count > table.max_rows() as u64 {
            return Err(format!(
                "table {} holds {count} rows, more than its limit {}: raise the limit",
                table.name(),
                table.max_rows()
            ));
        }
        for _ in 0..count {
            let row: R = self.get(table.name())?;
            table
                .insert(row)
                .map_err(|s| format!("table {}: {s}", table.name()))?;
        }
        table.commit();
        Ok(())
    }
}

impl PartitionDb {
    /// Append this partition's state to `out`. Nothing may be uncommitted.
    pub fn write_image(&self, out: &mut Vec<u8>) {
        assert!(!self.has_uncommitted(), "image of a committed state only");
        let start = out.len();
        put(out, &IMAGE_VERSION);
        put_table(out, &self.kv);
        put_table(out, &self.rkv);
        put_table(out, &self.sched.workers);
        put_table(out, &self.sched.tasks);
        put_table(out, &self.ipc.messages);
        put_table(out, &self.ipc.mailboxes);
        put(out, &self.ipc.next_id_floor());
        put_table(out, &self.fs.users);
        put_table(out, &self.fs.dirs);
        put_table(out, &self.fs.local);
        put_table(out, &self.fs.parallel);
        put_table(out, &self.fs.counter);
        put(out, &self.replicated_writes);
        assert!(out.len() > start);
    }

    /// Load an image written by [`write_image`](Self::write_image) into this freshly
    /// built (empty) partition.
    pub fn read_image(&mut self, bytes: &[u8]) -> Result<(), String> {
        assert!(
            self.kv.is_empty() && self.sched.tasks.is_empty(),
            "restore into a fresh partition"
        );
        let mut r = Reader { bytes };
        let version: u32 = r.get("image version")?;
        if version != IMAGE_VERSION {
            return Err(format!(
                "image version {version}, this build reads {IMAGE_VERSION}: the snapshot was \
                 written by another tabosd version; start that version on this data dir, or \
                 this one on a fresh --data-dir"
            ));
        }
        r.table(&mut self.kv)?;
        r.table(&mut self.rkv)?;
        r.table(&mut self.sched.workers)?;
        r.table(&mut self.sched.tasks)?;
        r.table(&mut self.ipc.messages)?;
        r.table(&mut self.ipc.mailboxes)?;
        let floor: u64 = r.get("ipc id floor")?;
        if floor == 0 {
            return Err("ipc id floor is 0".into());
        }
        self.ipc.restore_next_id_floor(floor);
        r.table(&mut self.fs.users)?;
        r.table(&mut self.fs.dirs)?;
        r.table(&mut self.fs.local)?;
        r.table(&mut self.fs.parallel)?;
        r.table(&mut self.fs.counter)?;
        self.replicated_writes = r.get("replicated write count")?;
        if !r.bytes.is_empty() {
            return Err(format!("{} bytes after the image", r.bytes.len()));
        }
        self.check_consistency()
            .map_err(|e| format!("restored state is inconsistent: {e}"))
    }

    /// A digest of the whole state: equal for equal contents, whatever the order rows
    /// were inserted in. O(n log n); for tests and `tabos admin`, not the hot path.
    pub fn digest(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        digest_table(&mut h, &self.kv);
        digest_table(&mut h, &self.rkv);
        digest_table(&mut h, &self.sched.workers);
        digest_table(&mut h, &self.sched.tasks);
        digest_table(&mut h, &self.ipc.messages);
        digest_table(&mut h, &self.ipc.mailboxes);
        self.ipc.next_id_floor().hash(&mut h);
        digest_table(&mut h, &self.fs.map);
        digest_table(&mut h, &self.fs.users);
        digest_table(&mut h, &self.fs.dirs);
        digest_table(&mut h, &self.fs.local);
        digest_table(&mut h, &self.fs.parallel);
        digest_table(&mut h, &self.fs.counter);
        self.replicated_writes.hash(&mut h);
        h.finish()
    }
}

impl PartitionDb {
    /// A digest of the replicated tables only (`rkv`, `fs_user`, `fs_map`) and the
    /// count of replicated writes: equal on every partition of a node unless a
    /// replicated write reached some of them only.
    pub fn replicated_digest(&self) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.replicated_writes.hash(&mut h);
        digest_table(&mut h, &self.rkv);
        digest_table(&mut h, &self.fs.users);
        digest_table(&mut h, &self.fs.map);
        h.finish()
    }
}

fn digest_table<R: Row>(h: &mut impl Hasher, table: &Table<R>) {
    let mut rows: Vec<Vec<u8>> = table
        .iter()
        .map(|row| {
            let mut b = Vec::new();
            put(&mut b, row);
            b
        })
        .collect();
    rows.sort_unstable();
    table.name().hash(h);
    rows.hash(h);
}

#[cfg(test)]
mod tests {
    use crate::ids;
    use crate::testing::Harness;
    use crate::{DbLimits, PartitionDb};

    #[test]
    fn image_round_trip_keeps_the_digest() {
        let mut h = Harness::new(2, DbLimits::default());
        let key = (0u32..)
            .map(|i| i.to_le_bytes())
            .find(|k| tabos_transport::wire::partition_for_key(k, 2) == 0)
            .unwrap();
        h.call(0, ids::KV_PUT, &crate::builtin::kv_args(&key, b"value"))
            .unwrap();
        let mut image = Vec::new();
        h.dbs[0].write_image(&mut image);
        let mut fresh = PartitionDb::new(DbLimits::default(), 0, 2, &[0, 0]);
        assert_ne!(fresh.digest(), h.dbs[0].digest());
        fresh.read_image(&image).unwrap();
        assert_eq!(fresh.digest(), h.dbs[0].digest());
        let mut again = PartitionDb::new(DbLimits::default(), 0, 2, &[0, 0]);
        assert!(again.read_image(&image[..image.len() - 1]).is_err());
    }

    #[test]
    fn the_replicated_write_count_travels_in_the_image_and_the_digests() {
        let mut db = PartitionDb::new(DbLimits::default(), 0, 2, &[0, 0]);
        let (digest, replicated) = (db.digest(), db.replicated_digest());
        db.replicated_writes = 7;
        assert_ne!(db.digest(), digest);
        assert_ne!(db.replicated_digest(), replicated);
        let mut image = Vec::new();
        db.write_image(&mut image);
        let mut fresh = PartitionDb::new(DbLimits::default(), 0, 2, &[0, 0]);
        fresh.read_image(&image).unwrap();
        assert_eq!(fresh.replicated_writes, 7);
    }

    #[test]
    fn an_image_of_another_version_is_refused_saying_what_to_do() {
        let db = PartitionDb::new(DbLimits::default(), 0, 2, &[0, 0]);
        let mut image = Vec::new();
        db.write_image(&mut image);
        image[..4].copy_from_slice(&1u32.to_le_bytes());
        let mut fresh = PartitionDb::new(DbLimits::default(), 0, 2, &[0, 0]);
        let err = fresh.read_image(&image).unwrap_err();
        assert!(err.contains("image version 1, this build reads 2"), "{err}");
        assert!(err.contains("fresh --data-dir"), "{err}");
    }
}
