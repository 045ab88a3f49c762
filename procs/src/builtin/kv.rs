//! Key-value procedures. Arguments: `bytes(key)` then, for puts, the value as the rest
//! of the payload. `kv_*` must run on the key's partition (else `WrongPartition`).

use crate::schema::PartitionDb;
use tabos_engine::{ArgReader, Ctx, Row};
use tabos_transport::wire::partition_for_key;
use tabos_transport::Status;

/// Longest key accepted.
pub const KEY_BYTES_MAX: usize = 1024;

/// One key-value row.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KvRow {
    /// The key (primary key and partitioning key).
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The value.
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
}

impl Row for KvRow {
    type Key = KvKey;
    type SortKey = ();

    fn key(&self) -> KvKey {
        KvKey::new(&self.key)
    }
}

/// Longest key a [`KvKey`] holds inline.
const KEY_INLINE_BYTES: usize = 22;

/// A kv row's key as the hash index holds it: short keys (the common case) inline, so
/// a lookup compares them without following a pointer to the heap (a cache miss per
/// call under a large table; a quarter of a partition's time in sync-mode kv puts) and
/// making one allocates nothing. Equality, hashing and order are those of the bytes.
#[derive(Clone)]
pub enum KvKey {
    /// At most [`KEY_INLINE_BYTES`] bytes.
    Inline {
        len: u8,
        bytes: [u8; KEY_INLINE_BYTES],
    },
    /// Longer keys.
    Heap(Box<[u8]>),
}

impl KvKey {
    /// The key of `bytes`.
    pub fn new(bytes: &[u8]) -> KvKey {
        if bytes.len() <= KEY_INLINE_BYTES {
            let mut inline = [0u8; KEY_INLINE_BYTES];
            inline[..bytes.len()].copy_from_slice(bytes);
            KvKey::Inline {
                len: bytes.len() as u8,
                bytes: inline,
            }
        } else {
            KvKey::Heap(bytes.into())
        }
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            KvKey::Inline { len, bytes } => &bytes[..*len as usize],
            KvKey::Heap(bytes) => bytes,
        }
    }
}

impl PartialEq for KvKey {
    fn eq(&self, other: &KvKey) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for KvKey {}

impl std::hash::Hash for KvKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialOrd for KvKey {
    fn partial_cmp(&self, other: &KvKey) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KvKey {
    fn cmp(&self, other: &KvKey) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::fmt::Debug for KvKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_bytes())
    }
}

/// Encode the arguments of a kv procedure.
pub fn kv_args(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.len() + value.len());
    tabos_engine::put_bytes(&mut out, key);
    out.extend_from_slice(value);
    out
}

/// Decode `bytes(key)` and the rest; check the key's length.
fn decode(args: &[u8]) -> Result<(&[u8], &[u8]), Status> {
    let mut reader = ArgReader::new(args);
    let key = reader.bytes()?;
    if key.len() > KEY_BYTES_MAX {
        return Err(Status::BadArgs);
    }
    Ok((key, reader.rest()?))
}

fn decode_local<'a>(ctx: &Ctx<'a, PartitionDb>) -> Result<(&'a [u8], &'a [u8]), Status> {
    let (key, rest) = decode(ctx.args)?;
    if partition_for_key(key, ctx.partition_count) != ctx.partition {
        return Err(Status::WrongPartition);
    }
    Ok((key, rest))
}

pub(super) fn kv_put(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let (key, value) = decode_local(ctx)?;
    ctx.db.kv.replace(KvRow {
        key: key.to_vec(),
        value: value.to_vec(),
    })?;
    Ok(())
}

pub(super) fn kv_get(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let (key, rest) = decode_local(ctx)?;
    if !rest.is_empty() {
        return Err(Status::BadArgs);
    }
    let row = ctx.db.kv.get(&KvKey::new(key)).ok_or(Status::NotFound)?;
    ctx.reply.extend_from_slice(&row.value);
    Ok(())
}

pub(super) fn kv_delete(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let (key, rest) = decode_local(ctx)?;
    if !rest.is_empty() {
        return Err(Status::BadArgs);
    }
    ctx.db.kv.delete(&KvKey::new(key)).ok_or(Status::NotFound)?;
    Ok(())
}

pub(super) fn rkv_put(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let (key, value) = decode(ctx.args)?;
    ctx.db.rkv.replace(KvRow {
        key: key.to_vec(),
        value: value.to_vec(),
    })?;
    Ok(())
}

pub(super) fn rkv_get(ctx: &mut Ctx<'_, PartitionDb>) -> Result<(), Status> {
    let (key, rest) = decode(ctx.args)?;
    if !rest.is_empty() {
        return Err(Status::BadArgs);
    }
    let row = ctx.db.rkv.get(&KvKey::new(key)).ok_or(Status::NotFound)?;
    ctx.reply.extend_from_slice(&row.value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Harness;
    use crate::{ids, DbLimits};
    use rand::{Rng, SeedableRng};
    use std::collections::HashMap;

    #[test]
    fn keys_compare_hash_and_order_as_their_bytes_inline_or_not() {
        use std::hash::{BuildHasher, RandomState};
        let hasher = RandomState::new();
        let lens = [
            0,
            1,
            8,
            KEY_INLINE_BYTES - 1,
            KEY_INLINE_BYTES,
            KEY_INLINE_BYTES + 1,
            300,
        ];
        let keys: Vec<Vec<u8>> = lens
            .iter()
            .flat_map(|&n| [vec![7u8; n], (0..n).map(|i| i as u8).collect()])
            .collect();
        for a in &keys {
            let ka = KvKey::new(a);
            assert_eq!(ka.as_bytes(), &a[..]);
            assert_eq!(
                matches!(ka, KvKey::Inline { .. }),
                a.len() <= KEY_INLINE_BYTES
            );
            assert_eq!(hasher.hash_one(&ka), hasher.hash_one(KvKey::new(a)));
            for b in &keys {
                let kb = KvKey::new(b);
                assert_eq!(ka == kb, a == b, "{a:?} {b:?}");
                assert_eq!(ka.cmp(&kb), a.cmp(b), "{a:?} {b:?}");
            }
        }
    }

    fn run(
        db: &mut Harness,
        id: u32,
        partition: u32,
        _parts: u32,
        args: &[u8],
    ) -> (Status, Vec<u8>) {
        match db.call(partition, id, args) {
            Ok(reply) => (Status::Ok, reply),
            Err(status) => (status, Vec::new()),
        }
    }

    #[test]
    fn kv_matches_a_hashmap_model() {
        let parts = 1;
        let mut db = Harness::new(1, DbLimits::default());
        let mut model: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..5000 {
            let key = vec![rng.gen_range(0..50u8)];
            match rng.gen_range(0..3) {
                0 => {
                    let value: Vec<u8> = (0..rng.gen_range(0..20)).map(|_| rng.gen()).collect();
                    let (s, _) = run(&mut db, ids::KV_PUT, 0, parts, &kv_args(&key, &value));
                    assert_eq!(s, Status::Ok);
                    model.insert(key, value);
                }
                1 => {
                    let (s, reply) = run(&mut db, ids::KV_GET, 0, parts, &kv_args(&key, b""));
                    match model.get(&key) {
                        Some(v) => assert_eq!((s, &reply), (Status::Ok, v)),
                        None => assert_eq!(s, Status::NotFound),
                    }
                }
                _ => {
                    let (s, _) = run(&mut db, ids::KV_DELETE, 0, parts, &kv_args(&key, b""));
                    let expect = if model.remove(&key).is_some() {
                        Status::Ok
                    } else {
                        Status::NotFound
                    };
                    assert_eq!(s, expect);
                }
            }
            db.check();
        }
        assert_eq!(db.dbs[0].kv.len(), model.len());
    }

    #[test]
    fn bad_arguments_and_wrong_partition_change_nothing() {
        let mut db = Harness::new(4, DbLimits::default());
        assert_eq!(run(&mut db, ids::KV_PUT, 0, 1, &[1, 2]).0, Status::BadArgs);
        assert_eq!(
            run(&mut db, ids::KV_PUT, 0, 1, &[255, 255, 255, 255]).0,
            Status::BadArgs
        );
        let long = vec![0u8; KEY_BYTES_MAX + 1];
        assert_eq!(
            run(&mut db, ids::KV_PUT, 0, 1, &kv_args(&long, b"v")).0,
            Status::BadArgs
        );
        let key = b"k";
        let owner = partition_for_key(key, 4);
        let other = (owner + 1) % 4;
        assert_eq!(
            run(&mut db, ids::KV_PUT, other, 4, &kv_args(key, b"v")).0,
            Status::WrongPartition
        );
        assert_eq!(
            run(&mut db, ids::KV_PUT, owner, 4, &kv_args(key, b"v")).0,
            Status::Ok
        );
        assert_eq!(
            run(&mut db, ids::ECHO, 0, 1, b"hi"),
            (Status::Ok, b"hi".to_vec())
        );
        let total: usize = db.dbs.iter().map(|d| d.kv.len()).sum();
        assert_eq!(total, 1);
        assert_eq!(db.dbs[owner as usize].kv.len(), 1);
    }

    #[test]
    fn full_table_is_reported() {
        let mut db = Harness::new(
            1,
            DbLimits {
                kv_rows_max: 2,
                rkv_rows_max: 2,
                ..DbLimits::default()
            },
        );
        for (i, want) in [Status::Ok, Status::Ok, Status::TableFull]
            .into_iter()
            .enumerate()
        {
            assert_eq!(
                run(&mut db, ids::KV_PUT, 0, 1, &kv_args(&[i as u8], b"v")).0,
                want
            );
        }
        assert_eq!(db.dbs[0].kv.len(), 2);
    }
}
