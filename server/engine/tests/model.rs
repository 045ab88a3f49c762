//! Guards that tables and procedure transactions behave like a plain HashMap/BTreeMap model, rollbacks included.

use std::collections::{BTreeMap, HashMap};
use std::ops::{Bound, RangeBounds};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tabos_engine::{
    execute, Access, Caller, ConsistencyError, Ctx, ProcDef, Row, Schema, Scope, Status, Table,
};

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct Item {
    id: u16,
    prio: Option<u8>,
    val: u32,
}

impl Row for Item {
    type Key = u16;
    type SortKey = u8;
    fn key(&self) -> u16 {
        self.id
    }
    fn sort_key(&self) -> Option<u8> {
        self.prio
    }
}

fn sorted_rows<R: Row + Ord>(table: &Table<R>) -> Vec<R> {
    let mut rows: Vec<R> = table.iter().cloned().collect();
    rows.sort();
    rows
}

fn random_bound(rng: &mut StdRng) -> Bound<u8> {
    match rng.gen_range(0..3) {
        0 => Bound::Included(rng.gen_range(0..10)),
        1 => Bound::Excluded(rng.gen_range(0..10)),
        _ => Bound::Unbounded,
    }
}

/// Compares the table with the model: rows, lookups and the ordered index over a random range.
fn check(table: &Table<Item>, model: &HashMap<u16, Item>, rng: &mut StdRng) {
    table.check_consistency().unwrap();
    let mut expected: Vec<Item> = model.values().cloned().collect();
    expected.sort();
    assert_eq!(sorted_rows(table), expected);
    let probe = rng.gen_range(0..80);
    assert_eq!(table.get(&probe), model.get(&probe));

    let bounds = (random_bound(rng), random_bound(rng));
    let ordered: BTreeMap<(u8, u16), &Item> = model
        .values()
        .filter_map(|r| Some(((r.prio?, r.id), r)))
        .collect();
    let in_range: Vec<&Item> = ordered
        .iter()
        .filter(|((p, _), _)| bounds.contains(p))
        .map(|(_, r)| *r)
        .collect();
    assert_eq!(
        table.range(bounds).collect::<Vec<_>>(),
        in_range,
        "range {bounds:?}"
    );
    let mut reversed: Vec<&Item> = table.range(bounds).rev().collect();
    reversed.reverse();
    assert_eq!(reversed, in_range);
    assert_eq!(table.first_in(bounds), in_range.first().copied());
}

#[test]
fn random_operations_match_the_model() {
    const MAX_ROWS: usize = 48;
    for seed in 0..4 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut table = Table::new("items", MAX_ROWS);
        let mut model: HashMap<u16, Item> = HashMap::new();
        let mut committed = model.clone();
        for step in 0..3000 {
            let id = rng.gen_range(0..64);
            let prio = rng.gen_bool(0.8).then(|| rng.gen_range(0..8));
            let row = Item {
                id,
                prio,
                val: rng.gen(),
            };
            match rng.gen_range(0..100) {
                0..=29 => {
                    let expected = if model.contains_key(&id) {
                        Err(Status::AlreadyExists)
                    } else if model.len() >= MAX_ROWS {
                        Err(Status::TableFull)
                    } else {
                        model.insert(id, row.clone());
                        Ok(())
                    };
                    assert_eq!(table.insert(row), expected, "step {step}");
                }
                30..=44 => {
                    let expected = if model.contains_key(&id) || model.len() < MAX_ROWS {
                        Ok(model.insert(id, row.clone()))
                    } else {
                        Err(Status::TableFull)
                    };
                    if step % 2 == 0 {
                        assert_eq!(table.upsert(row), expected, "step {step}");
                    } else {
                        assert_eq!(table.replace(row), expected.map(|_| ()), "step {step}");
                    }
                }
                45..=69 => {
                    let edit = |r: &mut Item| {
                        r.val = row.val;
                        r.prio = prio;
                        r.id
                    };
                    let expected = model.get_mut(&id).map(edit);
                    assert_eq!(table.update(&id, edit), expected, "step {step}");
                }
                70..=79 => assert_eq!(table.delete(&id), model.remove(&id), "step {step}"),
                80..=89 => assert_eq!(
                    table.remove(&id),
                    model.remove(&id).is_some(),
                    "step {step}"
                ),
                90..=94 => {
                    table.commit();
                    committed = model.clone();
                }
                _ => {
                    table.rollback();
                    model = committed.clone();
                }
            }
            check(&table, &model, &mut rng);
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct User {
    uid: u32,
    name: String,
}

impl Row for User {
    type Key = u32;
    type SortKey = String;
    fn key(&self) -> u32 {
        self.uid
    }
    fn sort_key(&self) -> Option<String> {
        Some(self.name.clone())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
struct File {
    path: String,
    owner: u32,
}

impl Row for File {
    type Key = String;
    type SortKey = ();
    fn key(&self) -> String {
        self.path.clone()
    }
}

struct Db {
    users: Table<User>,
    files: Table<File>,
}

impl Schema for Db {
    fn commit(&mut self) {
        self.users.commit();
        self.files.commit();
    }
    fn rollback(&mut self) {
        self.users.rollback();
        self.files.rollback();
    }
    fn has_uncommitted(&self) -> bool {
        self.users.has_uncommitted() || self.files.has_uncommitted()
    }
    fn check_consistency(&self) -> Result<(), ConsistencyError> {
        self.users.check_consistency()?;
        self.files.check_consistency()
    }
}

/// Mutates both tables every way it can, then fails.
fn mutate_then_fail(ctx: &mut Ctx<'_, Db>) -> Result<(), Status> {
    let db = &mut *ctx.db;
    db.users.insert(User {
        uid: 9,
        name: "mallory".into(),
    })?;
    db.users
        .update(&1, |u| u.name = "zed".into())
        .ok_or(Status::NotFound)?;
    db.users.delete(&2).ok_or(Status::NotFound)?;
    db.files.upsert(File {
        path: "/a".into(),
        owner: 9,
    })?;
    db.files.delete(&"/b".to_string()).ok_or(Status::NotFound)?;
    db.files.insert(File {
        path: "/c".into(),
        owner: 9,
    })?;
    ctx.reply.extend_from_slice(b"partial");
    Err(Status::PermissionDenied)
}

#[test]
fn a_failed_procedure_leaves_every_table_as_it_was() {
    let mut db = Db {
        users: Table::new("users", 8),
        files: Table::new("files", 8),
    };
    for (uid, name) in [(1, "alice"), (2, "bob"), (3, "carol")] {
        db.users
            .insert(User {
                uid,
                name: name.into(),
            })
            .unwrap();
    }
    for (path, owner) in [("/a", 1), ("/b", 2)] {
        db.files
            .insert(File {
                path: path.into(),
                owner,
            })
            .unwrap();
    }
    db.commit();
    let users_before = sorted_rows(&db.users);
    let files_before = sorted_rows(&db.files);
    let order_before: Vec<User> = db.users.range(..).cloned().collect();

    let def = ProcDef {
        id: 7,
        name: "mutate_then_fail",
        access: Access::ReadWrite,
        scope: Scope::Single,
        func: mutate_then_fail,
    };
    let mut reply = Vec::new();
    let mut ctx = Ctx::new(&mut db, 0, 2, Caller::user("alice"), &[], &mut reply, 1024);
    assert_eq!(execute(&def, &mut ctx), Status::PermissionDenied);

    assert!(reply.is_empty());
    db.check_consistency().unwrap();
    assert!(!db.users.has_uncommitted() && !db.files.has_uncommitted());
    assert_eq!(sorted_rows(&db.users), users_before);
    assert_eq!(sorted_rows(&db.files), files_before);
    assert_eq!(
        db.users.range(..).cloned().collect::<Vec<_>>(),
        order_before
    );
}
