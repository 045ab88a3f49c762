//! Targeted cases: every error path with its stable status (and no change), users and
//! current directories, paging, `du` over a subtree, renames, full tables and the
//! batched calls. Permissions are in `permission_tests.rs`.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::fs::ids;
use crate::fs::model_tests::{caller, check_all, limits, setup, FILE_MAX, PARALLEL_BLOCK};
use crate::fs::sim::Sim;
use crate::fs::wire::{args, BATCH_MAX, LIST_MAX};
use crate::fs::EntryKind;
use crate::DbLimits;
use tabos_engine::{put_bytes, put_u32, put_u64, Caller};
use tabos_transport::wire::partition_for_key;
use tabos_transport::Status;

/// Every row of every filesystem table, to show that a failed call changed nothing.
fn snapshot(sim: &Sim) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for db in &sim.h.dbs {
        let fs = &db.fs;
        let mut rows: Vec<String> = fs.dirs.iter().map(|r| format!("{r:?}")).collect();
        rows.extend(fs.local.iter().map(|r| format!("{r:?}")));
        rows.extend(fs.parallel.iter().map(|r| format!("{r:?}")));
        rows.extend(fs.users.iter().map(|r| format!("{r:?}")));
        rows.extend(fs.counter.iter().map(|r| format!("{r:?}")));
        rows.sort();
        out.push(rows);
    }
    out
}

pub(super) fn alice() -> Caller {
    caller("alice")
}

pub(super) fn bob() -> Caller {
    caller("bob")
}

#[test]
fn useradd_is_root_only_replicated_and_makes_the_home_directory() {
    let mut sim = Sim::new(3, limits());
    assert_eq!(sim.useradd(alice(), "alice"), Err(Status::PermissionDenied));
    for bad in ["", "-x", "a/b", "\u{e9}", &"a".repeat(33)] {
        assert_eq!(
            sim.useradd(Caller::root(), bad),
            Err(Status::InvalidPath),
            "{bad:?}"
        );
    }
    sim.useradd(Caller::root(), "alice").unwrap();
    assert_eq!(
        sim.useradd(Caller::root(), "alice"),
        Err(Status::AlreadyExists)
    );
    let home = partition_for_key(b"alice", 3);
    for p in 0..3 {
        assert_eq!(sim.current_dir(p, "alice").unwrap(), "/alice");
        let has_home = sim.h.dbs[p as usize].fs.dirs.len() == 1;
        assert_eq!(
            has_home,
            p == home,
            "home directory only on partition {home}"
        );
    }
    let stat = sim.stat(bob(), "/alice").unwrap();
    assert_eq!(
        (stat.kind, stat.owner.as_str(), stat.mode),
        (EntryKind::Dir, "alice", 0o755)
    );
    let root = sim.stat(bob(), "/").unwrap();
    assert_eq!((root.kind, root.owner.as_str()), (EntryKind::Dir, "root"));
    assert_eq!(sim.current_dir(0, "nobody"), Err(Status::NotFound));
    for db in &sim.h.dbs {
        let hosts: Vec<(u32, &str)> = (0..3)
            .map(|p| {
                let row = db.fs.map.get(&p).unwrap();
                (row.partition_id, row.host_name.as_str())
            })
            .collect();
        assert_eq!(hosts, [(0, "node0"), (1, "node0"), (2, "node0")]);
    }
    // The empty name asks for the caller's own row.
    let reply = sim
        .call(alice(), 1, ids::USER_GET, &args::user(""))
        .unwrap();
    let info = crate::fs::wire::UserInfo::decode(&reply).unwrap();
    assert_eq!(
        (info.user_name.as_str(), info.home_partition),
        ("alice", home)
    );
}

#[test]
fn cd_needs_an_existing_directory_and_the_user_or_root() {
    let (mut sim, _) = setup();
    sim.mkdir(alice(), "/alice/docs", 0o755).unwrap();
    sim.create(alice(), "/alice/f", false, 0o644).unwrap();
    sim.cd(alice(), "alice", "/alice/docs").unwrap();
    for p in 0..3 {
        assert_eq!(sim.current_dir(p, "alice").unwrap(), "/alice/docs");
    }
    sim.cd(alice(), "alice", "/bob").unwrap();
    assert_eq!(
        sim.cd(alice(), "alice", "/alice/f"),
        Err(Status::NotADirectory)
    );
    assert_eq!(
        sim.cd(alice(), "alice", "/alice/nope"),
        Err(Status::NotFound)
    );
    assert_eq!(
        sim.cd(bob(), "alice", "/bob"),
        Err(Status::PermissionDenied)
    );
    assert_eq!(sim.cd(alice(), "carol", "/bob"), Err(Status::NotFound));
    sim.cd(Caller::root(), "alice", "/alice").unwrap();
    assert_eq!(sim.current_dir(2, "alice").unwrap(), "/alice");
    assert_eq!(
        sim.call(
            alice(),
            0,
            ids::SET_CURRENT_DIR,
            &args::set_current_dir("", "/..")
        ),
        Err(Status::InvalidPath)
    );
}

/// Each bad input gets its stable status and leaves every table as it was.
#[test]
fn bad_input_has_stable_statuses_and_changes_nothing() {
    let (mut sim, _) = setup();
    sim.mkdir(alice(), "/alice/d", 0o755).unwrap();
    sim.mkdir(alice(), "/alice/d/sub", 0o755).unwrap();
    sim.create(alice(), "/alice/f", false, 0o644).unwrap();
    sim.create(alice(), "/alice/p", true, 0o644).unwrap();
    sim.write(alice(), "/alice/f", 0, &[7; 700]).unwrap();
    sim.write(alice(), "/alice/p", 0, &[8; 3000]).unwrap();
    let before = snapshot(&sim);
    let long = "x".repeat(256);
    let a = alice();
    let cases: Vec<(&str, Result<(), Status>, Status)> = vec![
        ("empty path", sim.mkdir(a, "", 0o755), Status::InvalidPath),
        (
            "relative",
            sim.mkdir(a, "alice/x", 0o755),
            Status::InvalidPath,
        ),
        (
            "above root",
            sim.mkdir(a, "/alice/../../x", 0o755),
            Status::InvalidPath,
        ),
        (
            "nul",
            sim.create(a, "/alice/a\0b", false, 0o644),
            Status::InvalidPath,
        ),
        (
            "long name",
            sim.create(a, &format!("/alice/{long}"), false, 0o644),
            Status::NameTooLong,
        ),
        (
            "long path",
            sim.mkdir(a, &format!("/alice{}", "/ab".repeat(1400)), 0o755),
            Status::NameTooLong,
        ),
        (
            "file as dir",
            sim.create(a, "/alice/f/x", false, 0o644),
            Status::NotADirectory,
        ),
        (
            "deep file as dir",
            sim.stat(a, "/alice/f/x/y").map(drop),
            Status::NotADirectory,
        ),
        (
            "missing parent",
            sim.mkdir(a, "/alice/none/x", 0o755),
            Status::NotFound,
        ),
        (
            "no such user",
            sim.mkdir(a, "/carol/x", 0o755),
            Status::NotFound,
        ),
        (
            "exists",
            sim.mkdir(a, "/alice/d", 0o755),
            Status::AlreadyExists,
        ),
        (
            "home",
            sim.mkdir(a, "/alice", 0o755),
            Status::PermissionDenied,
        ),
        (
            "root",
            sim.delete(Caller::root(), "/"),
            Status::PermissionDenied,
        ),
        (
            "delete home",
            sim.delete(Caller::root(), "/alice"),
            Status::PermissionDenied,
        ),
        ("not empty", sim.delete(a, "/alice/d"), Status::NotEmpty),
        (
            "read dir",
            sim.read(a, "/alice/d", 0, 10).map(drop),
            Status::IsADirectory,
        ),
        (
            "write dir",
            sim.write(a, "/alice/d", 0, b"x"),
            Status::IsADirectory,
        ),
        (
            "list file",
            sim.list(a, "/alice/f", 10).map(drop),
            Status::NotADirectory,
        ),
        (
            "too large",
            sim.write(a, "/alice/f", FILE_MAX, b"x"),
            Status::FileTooLarge,
        ),
        (
            "too large par",
            sim.write(a, "/alice/p", FILE_MAX - 1, b"xy"),
            Status::FileTooLarge,
        ),
        (
            "block too large",
            sim.write_blocks(a, "/alice/f", &[(0, &[0; 513])]),
            Status::BadArgs,
        ),
        (
            "block past max",
            sim.write_blocks(a, "/alice/f", &[(1 << 20, b"x")]),
            Status::FileTooLarge,
        ),
        (
            "cross",
            sim.rename(a, "/alice/f", "/bob/f"),
            Status::CrossNamespace,
        ),
        (
            "into itself",
            sim.rename(a, "/alice/d", "/alice/d/sub/d"),
            Status::InvalidPath,
        ),
        (
            "onto existing",
            sim.rename(a, "/alice/f", "/alice/d"),
            Status::AlreadyExists,
        ),
        (
            "rename home",
            sim.rename(Caller::root(), "/alice", "/alice/x"),
            Status::PermissionDenied,
        ),
        (
            "bad mode",
            sim.mkdir(a, "/alice/m", 0o1000),
            Status::BadArgs,
        ),
        (
            "other's tree",
            sim.create(bob(), "/alice/b", false, 0o644),
            Status::PermissionDenied,
        ),
        (
            "each rolls back",
            sim.write_block_each(a, &[("/alice/f", 0, b"new"), ("/alice/d", 0, b"x")]),
            Status::IsADirectory,
        ),
    ];
    for (what, got, want) in cases {
        assert_eq!(got, Err(want), "{what}");
        assert_eq!(snapshot(&sim), before, "{what} changed something");
    }
    // Broadcasts and the wire level.
    assert_eq!(
        sim.useradd(Caller::root(), "alice"),
        Err(Status::AlreadyExists)
    );
    let home = sim.home("/alice");
    let other = (home + 1) % 3;
    let wrong = sim.call(a, other, ids::STAT, &args::path("/alice/f"));
    assert_eq!(wrong, Err(Status::WrongPartition));
    let mut non_utf8 = Vec::new();
    put_bytes(&mut non_utf8, b"/alice/\xff");
    put_u32(&mut non_utf8, 0o755);
    assert_eq!(
        sim.call(a, home, ids::MKDIR, &non_utf8),
        Err(Status::InvalidPath)
    );
    assert_eq!(
        sim.call(
            a,
            home,
            ids::CREATE,
            &args::create("/alice/k", false, 0o644)[..9]
        ),
        Err(Status::BadArgs)
    );
    let mut bad_kind = args::path("/alice/k");
    bad_kind.push(7);
    put_u32(&mut bad_kind, 0o644);
    assert_eq!(
        sim.call(a, home, ids::CREATE, &bad_kind),
        Err(Status::BadArgs)
    );
    assert_eq!(
        sim.call(a, home, ids::LIST, &args::list("/alice", "a/b", 5)),
        Err(Status::InvalidPath)
    );
    let mut overflow = args::path("/alice/f");
    put_u64(&mut overflow, u64::MAX);
    put_u64(&mut overflow, u64::MAX);
    put_bytes(&mut overflow, b"xy");
    assert_eq!(
        sim.call(a, home, ids::WRITE, &overflow),
        Err(Status::FileTooLarge)
    );
    let short_end = args::write("/alice/f", 10, 11, b"xy");
    assert_eq!(
        sim.call(a, home, ids::WRITE, &short_end),
        Err(Status::BadArgs)
    );
    let too_many = args::read_blocks("/alice/f", &vec![0; BATCH_MAX + 1]);
    assert_eq!(
        sim.call(a, home, ids::READ_BLOCKS, &too_many),
        Err(Status::BadArgs)
    );
    let wrong_block = args::pread_blocks(1, &[1]);
    assert_eq!(
        sim.call(a, 0, ids::PREAD_BLOCKS, &wrong_block),
        Err(Status::WrongPartition)
    );
    let big = vec![0u8; PARALLEL_BLOCK + 1];
    let too_big = args::pwrite_blocks(3, "alice", 0o644, &[(0, 0, &big)]);
    assert_eq!(
        sim.call(a, 0, ids::PWRITE_BLOCKS, &too_big),
        Err(Status::BadArgs)
    );
    let past_block = args::pwrite_blocks(3, "alice", 0o644, &[(0, PARALLEL_BLOCK as u32, b"x")]);
    assert_eq!(
        sim.call(a, 0, ids::PWRITE_BLOCKS, &past_block),
        Err(Status::BadArgs)
    );
    let bad_owner = args::pwrite_blocks(3, "no/one", 0o644, &[(0, 0, b"x")]);
    assert_eq!(
        sim.call(a, 0, ids::PWRITE_BLOCKS, &bad_owner),
        Err(Status::BadArgs)
    );
    let far = args::pwrite_blocks(3, "alice", 0o644, &[(3 << 40, 0, b"x")]);
    assert_eq!(
        sim.call(a, 0, ids::PWRITE_BLOCKS, &far),
        Err(Status::BadArgs)
    );
    let huge = args::pdelete_blocks(3, u64::MAX);
    assert_eq!(
        sim.call(a, 0, ids::PDELETE_BLOCKS, &huge),
        Err(Status::BadArgs)
    );
    assert_eq!(
        snapshot(&sim),
        before,
        "a wire-level error changed something"
    );
    // A reply that cannot fit is refused before it is built.
    sim.h.max_reply_bytes = 600;
    assert_eq!(
        sim.read(a, "/alice/f", 0, 700),
        Err(Status::PayloadTooLarge)
    );
    assert_eq!(
        sim.read_blocks(a, "/alice/f", &[0, 1]),
        Err(Status::PayloadTooLarge)
    );
    assert_eq!(sim.read(a, "/alice/f", 0, 100).map(|d| d.len()), Ok(100));
}

/// Random argument bytes for every procedure on every partition never panic and
/// keep every table consistent (the harness checks after each call).
#[test]
fn random_argument_bytes_never_panic() {
    let (mut sim, _) = setup();
    sim.create(alice(), "/alice/f", false, 0o644).unwrap();
    let mut rng = StdRng::seed_from_u64(5);
    let proc_ids: Vec<u32> = (200..=299)
        .filter(|id| crate::registry().get(*id).is_some())
        .collect();
    assert_eq!(proc_ids.len(), 19);
    let seeds = [
        args::path("/alice/f"),
        args::write("/alice/f", 0, 4, b"abcd"),
        args::user("bob"),
    ];
    for _ in 0..6000 {
        let id = proc_ids[rng.gen_range(0..proc_ids.len())];
        let mut bytes = seeds[rng.gen_range(0..seeds.len())].clone();
        for _ in 0..rng.gen_range(0..4) {
            let at = rng.gen_range(0..=bytes.len());
            match rng.gen_range(0..3) {
                0 if at < bytes.len() => bytes[at] = rng.gen(),
                1 => bytes.truncate(at),
                _ => bytes.insert(at, rng.gen()),
            }
        }
        let who = [Caller::root(), alice(), bob()][rng.gen_range(0..3)];
        let _ = sim.call(who, rng.gen_range(0..3), id, &bytes);
    }
}

#[test]
fn a_4000_entry_directory_lists_in_a_few_pages() {
    let (mut sim, _) = setup();
    sim.mkdir(alice(), "/alice/big", 0o755).unwrap();
    let home = sim.home("/alice");
    for i in 0..4000 {
        let a = args::create(&format!("/alice/big/f{i:05}"), false, 0o644);
        sim.call_unchecked(alice(), home, ids::CREATE, &a).unwrap();
    }
    sim.h.check();
    let mut names: Vec<String> = Vec::new();
    let mut calls = 0;
    loop {
        let after = names.last().cloned().unwrap_or_default();
        let reply = sim
            .call(
                bob(),
                home,
                ids::LIST,
                &args::list("/alice/big", &after, u32::MAX),
            )
            .unwrap();
        let page = crate::fs::wire::Listing::decode(&reply).unwrap();
        calls += 1;
        assert!(page.entries.len() <= LIST_MAX as usize);
        names.extend(page.entries.into_iter().map(|e| e.name));
        if !page.more {
            break;
        }
    }
    assert_eq!(calls, 4);
    let want: Vec<String> = (0..4000).map(|i| format!("f{i:05}")).collect();
    assert_eq!(names, want);
}

#[test]
fn du_scans_exactly_the_subtree() {
    let (mut sim, mut model) = setup();
    let a = alice();
    for dir in ["/alice/a", "/alice/a/sub", "/alice/ab", "/alice/a!b"] {
        sim.mkdir(a, dir, 0o755).unwrap();
        model.create("alice", dir, 0o755, None).unwrap();
    }
    for (file, size, parallel) in [
        ("/alice/a/x", 100, false),
        ("/alice/a/sub/y", 3000, true),
        ("/alice/a/sub/z", 0, false),
        ("/alice/ab/z", 5000, false),
        ("/alice/a!b/w", 7000, false),
        ("/alice/top", 50, true),
    ] {
        sim.create(a, file, parallel, 0o644).unwrap();
        model.create("alice", file, 0o644, Some(parallel)).unwrap();
        let data = vec![1u8; size];
        sim.write(a, file, 0, &data).unwrap();
        model.write("alice", file, 0, &data).unwrap();
    }
    let du = |sim: &mut Sim, path: &str, min: u64| {
        let d = sim.du(bob(), path, min).unwrap();
        (d.total_bytes, d.file_count)
    };
    assert_eq!(du(&mut sim, "/alice/a", 0), (3100, 3));
    assert_eq!(du(&mut sim, "/alice/a", 1), (3100, 2));
    assert_eq!(du(&mut sim, "/alice/a", 101), (3000, 1));
    assert_eq!(du(&mut sim, "/alice/a/x", 0), (100, 1));
    assert_eq!(du(&mut sim, "/alice", 20 * 1024), (0, 0));
    assert_eq!(du(&mut sim, "/alice", 0), (15150, 6));
    assert_eq!(du(&mut sim, "/", 0), (15150, 6));
    sim.mkdir(a, "/alice/secret", 0o700).unwrap();
    assert_eq!(
        sim.du(bob(), "/alice/secret", 0),
        Err(Status::PermissionDenied)
    );
    model.create("alice", "/alice/secret", 0o700, None).unwrap();
    check_all(&mut sim, &model);
}

#[test]
fn rename_moves_a_subtree_with_its_local_and_parallel_blocks() {
    let (mut sim, mut model) = setup();
    let a = alice();
    let mut rng = StdRng::seed_from_u64(4);
    for dir in ["/alice/a", "/alice/a/b", "/alice/z"] {
        sim.mkdir(a, dir, 0o755).unwrap();
        model.create("alice", dir, 0o755, None).unwrap();
    }
    for (file, parallel) in [
        ("/alice/a/l", false),
        ("/alice/a/b/p", true),
        ("/alice/a/b/l2", false),
    ] {
        sim.create(a, file, parallel, 0o644).unwrap();
        model.create("alice", file, 0o644, Some(parallel)).unwrap();
        let data: Vec<u8> = (0..rng.gen_range(1000..5000)).map(|_| rng.gen()).collect();
        sim.write(a, file, 0, &data).unwrap();
        model.write("alice", file, 0, &data).unwrap();
    }
    let blocks_before: Vec<usize> = sim
        .h
        .dbs
        .iter()
        .map(|db| db.fs.local.len() + db.fs.parallel.len())
        .collect();
    sim.rename(a, "/alice/a", "/alice/z/moved").unwrap();
    model.rename("alice", "/alice/a", "/alice/z/moved").unwrap();
    sim.rename(a, "/alice/z/moved/b/l2", "/alice/l3").unwrap();
    model
        .rename("alice", "/alice/z/moved/b/l2", "/alice/l3")
        .unwrap();
    sim.rename(a, "/alice/l3", "/alice/l3").unwrap();
    let blocks_after: Vec<usize> = sim
        .h
        .dbs
        .iter()
        .map(|db| db.fs.local.len() + db.fs.parallel.len())
        .collect();
    assert_eq!(blocks_before, blocks_after, "a rename keeps every block");
    assert_eq!(sim.stat(a, "/alice/a"), Err(Status::NotFound));
    check_all(&mut sim, &model);
}

#[test]
fn full_tables_are_reported_and_change_nothing() {
    let mut sim = Sim::new(
        1,
        DbLimits {
            fs_entries_max: 4,
            fs_blocks_max: 3,
            ..limits()
        },
    );
    sim.useradd(Caller::root(), "alice").unwrap();
    sim.useradd(Caller::root(), "bob").unwrap();
    sim.create(alice(), "/alice/f", false, 0o644).unwrap();
    sim.create(alice(), "/alice/g", false, 0o644).unwrap();
    let before = snapshot(&sim);
    assert_eq!(
        sim.mkdir(alice(), "/alice/d", 0o755),
        Err(Status::TableFull)
    );
    // A home directory still fits: the table keeps room for them.
    sim.useradd(Caller::root(), "carol").unwrap();
    let before_write = snapshot(&sim);
    assert_ne!(before, before_write);
    assert_eq!(
        sim.write(alice(), "/alice/f", 0, &[1; 4 * 512]),
        Err(Status::TableFull)
    );
    assert_eq!(snapshot(&sim), before_write);
    sim.write(alice(), "/alice/f", 0, &[1; 3 * 512]).unwrap();
    assert_eq!(sim.stat(alice(), "/alice/f").unwrap().size_bytes, 1536);
}

#[test]
fn batched_calls_read_and_write_many_blocks_in_one_call() {
    let (mut sim, _) = setup();
    let a = alice();
    sim.create(a, "/alice/l", false, 0o644).unwrap();
    sim.create(a, "/alice/p", true, 0o644).unwrap();
    let blocks: Vec<Vec<u8>> = (0..12u8).map(|i| vec![i; 512]).collect();
    let refs: Vec<(u64, &[u8])> = blocks
        .iter()
        .enumerate()
        .map(|(i, d)| (i as u64, d.as_slice()))
        .collect();
    sim.write_blocks(a, "/alice/l", &refs).unwrap();
    sim.write_blocks(a, "/alice/p", &refs).unwrap();
    let nos: Vec<u64> = (0..12).rev().collect();
    let got = sim.read_blocks(a, "/alice/l", &nos).unwrap();
    assert_eq!(got[0], vec![11; 512]);
    assert_eq!(got[11], vec![0; 512]);
    // Parallel blocks are 1024 bytes: block i of 512 bytes sits at i * 1024.
    let p = sim.read_blocks(a, "/alice/p", &[1, 11, 12]).unwrap();
    assert_eq!(p[0][..512], [1; 512]);
    assert_eq!(p[0][512..], [0; 512]);
    assert_eq!(
        p[1],
        vec![11; 512],
        "the last block ends at the end of the file"
    );
    assert!(p[2].is_empty());
    sim.write_block_each(a, &[("/alice/l", 2, b"two"), ("/alice/p", 0, b"zero")])
        .unwrap();
    let each = sim
        .read_block_each(a, &[("/alice/l", 2), ("/alice/p", 0), ("/alice/l", 99)])
        .unwrap();
    assert_eq!(&each[0][..3], b"two");
    assert_eq!(&each[0][3..], &[2; 509]);
    assert_eq!(&each[1][..4], b"zero");
    assert!(each[2].is_empty());
}
