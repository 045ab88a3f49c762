//! Random operation sequences against the plain model: three partitions, users alice
//! and bob plus root, 512-byte local and 1024-byte parallel blocks, a 16 KiB file
//! limit. Every operation's status must match the model's, every read its bytes, and
//! the whole tree (stat, listing, contents, du) is compared every few hundred steps.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fs::model::{MNode, Model};
use crate::fs::sim::Sim;
use crate::fs::{EntryKind, FsTables};
use crate::DbLimits;
use tabos_engine::Caller;
use tabos_transport::Status;

pub(super) const LOCAL_BLOCK: usize = 512;
pub(super) const PARALLEL_BLOCK: usize = 1024;
pub(super) const FILE_MAX: u64 = 16 * 1024;

pub(super) fn limits() -> DbLimits {
    DbLimits {
        block_bytes_local: LOCAL_BLOCK,
        block_bytes_parallel: PARALLEL_BLOCK,
        file_bytes_max: FILE_MAX,
        ..DbLimits::default()
    }
}

/// A node with alice and bob, and the model that matches it.
pub(super) fn setup() -> (Sim, Model) {
    let mut sim = Sim::new(3, limits());
    let mut model = Model::new(FILE_MAX, LOCAL_BLOCK as u64, PARALLEL_BLOCK as u64);
    for user in ["alice", "bob"] {
        sim.useradd(Caller::root(), user).unwrap();
        model.useradd("root", user).unwrap();
    }
    (sim, model)
}

pub(super) fn caller(name: &str) -> Caller {
    if name == "root" {
        Caller::root()
    } else {
        Caller::user(name)
    }
}

const MODES: [u32; 8] = [0o755, 0o700, 0o777, 0o644, 0o600, 0o666, 0o640, 0o750];

fn bad_path(rng: &mut StdRng) -> String {
    let long = "x".repeat(256);
    let bad = [
        "".to_string(),
        "relative/a".to_string(),
        "/alice/../..".to_string(),
        format!("/alice/{long}"),
        "/alice/a\0b".to_string(),
        "/alice/./a/../b".to_string(),
        "/".to_string(),
        "/alice".to_string(),
        "//bob//a/".to_string(),
        "/carol/a".to_string(),
    ];
    bad[rng.gen_range(0..bad.len())].clone()
}

/// A path: often one the model holds (a file, for data operations), often a fresh
/// one under some user, sometimes malformed.
fn gen_path(rng: &mut StdRng, model: &Model, user: Option<&str>, file: bool) -> String {
    let roll = rng.gen_range(0..100);
    let in_tree = |p: &String| match user {
        None => true,
        Some(u) => p.starts_with(&format!("/{u}/")),
    };
    let files: Vec<&String> = model.files.keys().filter(|p| in_tree(p)).collect();
    if file && roll < 60 && !files.is_empty() {
        return files[rng.gen_range(0..files.len())].clone();
    }
    let paths: Vec<String> = model.paths().into_iter().filter(in_tree).collect();
    if roll < 40 && !paths.is_empty() {
        return paths[rng.gen_range(0..paths.len())].clone();
    }
    if roll < 94 || user.is_some() {
        let user = user.unwrap_or(["alice", "bob", "alice", "bob", "carol"][rng.gen_range(0..5)]);
        let names = ["a", "b", "c", "d", "e"];
        let home = format!("/{user}");
        let dirs: Vec<&String> = model
            .dirs
            .keys()
            .filter(|d| d.starts_with(&home) && d.matches('/').count() < 4)
            .collect();
        if roll < 80 && !dirs.is_empty() {
            let dir = dirs[rng.gen_range(0..dirs.len())];
            return format!("{dir}/{}", names[rng.gen_range(0..names.len())]);
        }
        let mut path = home;
        for _ in 0..rng.gen_range(1..=3) {
            path.push('/');
            path.push_str(names[rng.gen_range(0..names.len())]);
        }
        return path;
    }
    bad_path(rng)
}

/// Who acts on `path`: mostly the owner of its tree, sometimes root or anyone.
fn gen_caller(rng: &mut StdRng, path: &str) -> &'static str {
    let owner = ["alice", "bob"]
        .into_iter()
        .find(|u| path.starts_with(&format!("/{u}/")));
    match (rng.gen_range(0..100), owner) {
        (0..=59, Some(owner)) => owner,
        (60..=74, _) => "root",
        _ => ["alice", "bob"][rng.gen_range(0..2)],
    }
}

fn gen_data(rng: &mut StdRng, max_len: usize) -> Vec<u8> {
    let len = rng.gen_range(0..=max_len);
    (0..len).map(|_| rng.gen()).collect()
}

fn gen_offset(rng: &mut StdRng) -> u64 {
    if rng.gen_ratio(1, 30) {
        FILE_MAX - rng.gen_range(0..100)
    } else {
        rng.gen_range(0..3000)
    }
}

fn gen_block(rng: &mut StdRng) -> u64 {
    if rng.gen_ratio(1, 30) {
        rng.gen_range(15..40)
    } else {
        rng.gen_range(0..8)
    }
}

fn gen_block_data(rng: &mut StdRng) -> Vec<u8> {
    let max = match rng.gen_range(0..10) {
        0 => PARALLEL_BLOCK + 1,
        1 | 2 => PARALLEL_BLOCK,
        _ => LOCAL_BLOCK,
    };
    gen_data(rng, max)
}

fn kind_of(node: &MNode) -> EntryKind {
    match node {
        MNode::Dir(_) => EntryKind::Dir,
        MNode::File(f) if f.parallel => EntryKind::ParallelFile,
        MNode::File(_) => EntryKind::LocalFile,
    }
}

/// Compare the whole tree: each entry's stat, each directory's listing (paged),
/// each file's bytes, `du` at every directory, and the row counts.
pub(super) fn check_all(sim: &mut Sim, model: &Model) {
    let root = Caller::root();
    let names: Vec<String> = model.users.keys().cloned().collect();
    let listed: Vec<String> = sim
        .list(root, "/", 1)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(listed, names);
    for path in model.paths() {
        let node = model.stat(&path).unwrap();
        let stat = sim.stat(root, &path).unwrap();
        assert_eq!(stat.kind, kind_of(&node), "{path}");
        match &node {
            MNode::Dir(d) => {
                assert_eq!(
                    (stat.owner.as_str(), stat.mode, stat.size_bytes),
                    (d.owner.as_str(), d.mode, 0)
                );
                let got: Vec<(String, EntryKind, u64)> = sim
                    .list(root, &path, 2)
                    .unwrap()
                    .into_iter()
                    .map(|e| (e.name, e.stat.kind, e.stat.size_bytes))
                    .collect();
                let want: Vec<(String, EntryKind, u64)> = model
                    .list("root", &path)
                    .unwrap()
                    .into_iter()
                    .map(|(name, n)| {
                        let size = if let MNode::File(f) = &n {
                            f.data.len() as u64
                        } else {
                            0
                        };
                        (name, kind_of(&n), size)
                    })
                    .collect();
                assert_eq!(got, want, "listing of {path}");
                for min in [0, 1, 700, 3000] {
                    let du = sim.du(root, &path, min).unwrap();
                    assert_eq!(
                        (du.total_bytes, du.file_count),
                        model.du("root", &path, min).unwrap()
                    );
                }
            }
            MNode::File(f) => {
                assert_eq!(
                    (stat.owner.as_str(), stat.mode),
                    (f.owner.as_str(), f.mode),
                    "{path}"
                );
                assert_eq!(stat.size_bytes, f.data.len() as u64, "size of {path}");
                let block = model.block_bytes(f) as usize;
                assert_eq!(stat.block_count, f.data.len().div_ceil(block) as u64);
                let data = sim.read(root, &path, 0, u32::MAX).unwrap();
                assert!(data == f.data, "contents of {path}");
            }
        }
    }
    let du = sim.du(root, "/", 1).unwrap();
    assert_eq!(
        (du.total_bytes, du.file_count),
        model.du("root", "/", 1).unwrap()
    );
    let rows: usize = sim.h.dbs.iter().map(|db| db.fs.dirs.len()).sum();
    assert_eq!(rows, model.paths().len(), "directory rows");
    check_no_stray_parallel_blocks(sim);
}

/// Every parallel block belongs to a live parallel file and lies within its size.
pub(super) fn check_no_stray_parallel_blocks(sim: &Sim) {
    let mut live = std::collections::HashMap::new();
    for db in &sim.h.dbs {
        for row in db.fs.dirs.iter() {
            if row.content_type == EntryKind::ParallelFile {
                live.insert(row.file_id, row.size_bytes);
            }
        }
    }
    for db in &sim.h.dbs {
        for block in db.fs.parallel.iter() {
            let size = live.get(&block.file_id).copied();
            let within =
                size.is_some_and(|s| block.block_no < FsTables::block_count(s, PARALLEL_BLOCK));
            assert!(
                within,
                "stray parallel block {} of file {}",
                block.block_no, block.file_id
            );
        }
    }
}

/// Assert `got == want` and return the outcome's status.
fn same<T: PartialEq + std::fmt::Debug>(
    got: Result<T, Status>,
    want: Result<T, Status>,
    what: &str,
) -> Status {
    assert_eq!(got, want, "{what}");
    want.err().unwrap_or(Status::Ok)
}

/// One random operation on both; their outcomes must agree. Returns the status.
fn step(rng: &mut StdRng, sim: &mut Sim, model: &mut Model) -> Status {
    let op = rng.gen_range(0..17);
    let path = gen_path(
        rng,
        model,
        None,
        (4..=6).contains(&op) || (12..=13).contains(&op),
    );
    let who = gen_caller(rng, &path);
    let c = caller(who);
    let what = format!("op {op} by {who} on {path:?}");
    match op {
        0 | 1 => {
            let mode = MODES[rng.gen_range(0..MODES.len())];
            let want = model.create(who, &path, mode, None);
            same(sim.mkdir(c, &path, mode), want, &what)
        }
        2 | 3 => {
            let (mode, parallel) = (MODES[rng.gen_range(0..MODES.len())], rng.gen_bool(0.5));
            let want = model.create(who, &path, mode, Some(parallel));
            same(sim.create(c, &path, parallel, mode), want, &what)
        }
        4 | 5 => {
            let (offset, data) = (gen_offset(rng), gen_data(rng, 2500));
            let want = model.write(who, &path, offset, &data);
            same(sim.write(c, &path, offset, &data), want, &what)
        }
        6 => {
            let (offset, len) = (gen_offset(rng), rng.gen_range(0..4000));
            let want = model.read(who, &path, offset, u64::from(len));
            same(sim.read(c, &path, offset, len), want, &what)
        }
        7 => {
            let want = model.delete(who, &path);
            same(sim.delete(c, &path), want, &what)
        }
        8 => {
            let got = sim.stat(c, &path).map(|s| s.kind);
            same(got, model.stat(&path).map(|n| kind_of(&n)), &what)
        }
        9 => {
            let got = sim
                .list(c, &path, rng.gen_range(1..4))
                .map(|l| l.into_iter().map(|e| e.name).collect::<Vec<_>>());
            let want = model
                .list(who, &path)
                .map(|l| l.into_iter().map(|(n, _)| n).collect::<Vec<_>>());
            same(got, want, &what)
        }
        10 => {
            let to = gen_path(rng, model, None, false);
            let want = model.rename(who, &path, &to);
            same(
                sim.rename(c, &path, &to),
                want,
                &format!("{what} to {to:?}"),
            )
        }
        11 => {
            let min = [0, 1, 600, 2000][rng.gen_range(0..4)];
            let got = sim.du(c, &path, min).map(|d| (d.total_bytes, d.file_count));
            same(got, model.du(who, &path, min), &what)
        }
        12 => {
            let blocks: Vec<u64> = (0..rng.gen_range(0..6)).map(|_| gen_block(rng)).collect();
            let want: Result<Vec<Vec<u8>>, Status> = if blocks.is_empty() {
                model.read(who, &path, 0, 0).map(|_| Vec::new())
            } else {
                blocks
                    .iter()
                    .map(|b| model.read_block(who, &path, *b))
                    .collect()
            };
            let got = sim.read_blocks(c, &path, &blocks);
            same(got, want, &format!("{what} blocks {blocks:?}"))
        }
        13 => {
            let blocks: Vec<(u64, Vec<u8>)> = (0..rng.gen_range(0..5))
                .map(|_| (gen_block(rng), gen_block_data(rng)))
                .collect();
            let refs: Vec<(u64, &[u8])> = blocks.iter().map(|(b, d)| (*b, d.as_slice())).collect();
            let want = model.write_blocks(who, &path, &blocks);
            same(sim.write_blocks(c, &path, &refs), want, &what)
        }
        14 => {
            let user = ["alice", "bob"][rng.gen_range(0..2)];
            let entries: Vec<(String, u64)> = (0..rng.gen_range(1..6))
                .map(|_| (gen_path(rng, model, Some(user), true), gen_block(rng)))
                .collect();
            let refs: Vec<(&str, u64)> = entries.iter().map(|(p, b)| (p.as_str(), *b)).collect();
            let want: Result<Vec<Vec<u8>>, Status> = entries
                .iter()
                .map(|(p, b)| model.read_block(who, p, *b))
                .collect();
            let got = sim.read_block_each(c, &refs);
            same(got, want, &format!("{what} each {entries:?}"))
        }
        15 => {
            let user = ["alice", "bob"][rng.gen_range(0..2)];
            let entries: Vec<(String, u64, Vec<u8>)> = (0..rng.gen_range(1..5))
                .map(|_| {
                    let path = gen_path(rng, model, Some(user), true);
                    (path, gen_block(rng), gen_block_data(rng))
                })
                .collect();
            let refs: Vec<(&str, u64, &[u8])> = entries
                .iter()
                .map(|(p, b, d)| (p.as_str(), *b, d.as_slice()))
                .collect();
            let want = model.write_block_each(who, &entries);
            same(
                sim.write_block_each(c, &refs),
                want,
                &format!("{what} each"),
            )
        }
        _ => {
            let user = ["alice", "bob", "carol"][rng.gen_range(0..3)];
            let want = model.cd(who, user, &path);
            let status = same(sim.cd(c, user, &path), want, &format!("{what} cd {user}"));
            if let Some(want) = model.users.get(user) {
                for p in 0..sim.partition_count {
                    assert_eq!(
                        &sim.current_dir(p, user).unwrap(),
                        want,
                        "cwd of {user} on {p}"
                    );
                }
            }
            status
        }
    }
}

fn run_random(seed: u64, steps: usize) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (mut sim, mut model) = setup();
    let mut seen = std::collections::BTreeMap::new();
    for i in 0..steps {
        *seen
            .entry(step(&mut rng, &mut sim, &mut model) as u32)
            .or_insert(0u32) += 1;
        if i % 500 == 499 {
            check_all(&mut sim, &model);
        }
    }
    check_all(&mut sim, &model);
    // The run must have reached every outcome the generator aims at.
    for status in [
        Status::Ok,
        Status::NotFound,
        Status::AlreadyExists,
        Status::PermissionDenied,
        Status::NotADirectory,
        Status::IsADirectory,
        Status::NotEmpty,
        Status::NameTooLong,
        Status::InvalidPath,
        Status::FileTooLarge,
        Status::CrossNamespace,
        Status::BadArgs,
    ] {
        assert!(
            seen.contains_key(&(status as u32)),
            "seed {seed}: never saw {status}: {seen:?}"
        );
    }
    assert!(
        model.files.len() + model.dirs.len() > 5,
        "the run built a tree"
    );
}

#[test]
fn random_operations_match_the_model_seed_1() {
    run_random(1, 4000);
}

#[test]
fn random_operations_match_the_model_seed_2() {
    run_random(2, 4000);
}

#[test]
fn random_operations_match_the_model_seed_3() {
    run_random(3, 4000);
}

/// Deleting everything (deepest first) leaves no rows behind but the home directories.
#[test]
fn deleting_everything_leaves_only_home_directories() {
    let mut rng = StdRng::seed_from_u64(9);
    let (mut sim, mut model) = setup();
    for _ in 0..1500 {
        step(&mut rng, &mut sim, &mut model);
    }
    let mut paths: Vec<String> = model
        .paths()
        .into_iter()
        .filter(|p| p.matches('/').count() >= 2)
        .collect();
    paths.sort_by_key(|p| std::cmp::Reverse(p.matches('/').count()));
    for path in paths {
        assert_eq!(
            sim.delete(Caller::root(), &path),
            model.delete("root", &path)
        );
    }
    for db in &sim.h.dbs {
        assert_eq!(db.fs.local.len(), 0);
        assert_eq!(db.fs.parallel.len(), 0);
    }
    let rows: usize = sim.h.dbs.iter().map(|db| db.fs.dirs.len()).sum();
    assert_eq!(rows, 2);
}
