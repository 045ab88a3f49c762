//! Who may do what: two users (and root) against the mode bits of directories and
//! files, and the block partitions of parallel files checking the caller by
//! themselves, including the documented limitation for blocks not stored yet.

use crate::fs::case_tests::{alice, bob};
use crate::fs::ids;
use crate::fs::model_tests::{setup, PARALLEL_BLOCK};
use crate::fs::wire::args;
use tabos_engine::Caller;
use tabos_transport::Status;

#[test]
fn parallel_blocks_spread_over_partitions_and_check_permission() {
    let (mut sim, _) = setup();
    sim.create(alice(), "/alice/p", true, 0o644).unwrap();
    let data: Vec<u8> = (0..6 * PARALLEL_BLOCK).map(|i| (i % 251) as u8).collect();
    sim.write(alice(), "/alice/p", 0, &data).unwrap();
    for db in &sim.h.dbs {
        assert_eq!(
            db.fs.parallel.len(),
            2,
            "two of six blocks on each of three partitions"
        );
    }
    assert_eq!(sim.read(bob(), "/alice/p", 0, u32::MAX).unwrap(), data);
    assert_eq!(
        sim.write(bob(), "/alice/p", 0, b"x"),
        Err(Status::PermissionDenied)
    );
    let id = sim.stat(alice(), "/alice/p").unwrap().file_id;
    // Block partitions check existing blocks against their own owner and mode.
    let overwrite = args::pwrite_blocks(id, "bob", 0o666, &[(0, 0, b"x")]);
    assert_eq!(
        sim.call(bob(), 0, ids::PWRITE_BLOCKS, &overwrite),
        Err(Status::PermissionDenied)
    );
    let forged = args::pwrite_blocks(id, "alice", 0o644, &[(6, 0, b"x")]);
    assert_eq!(
        sim.call(bob(), 0, ids::PWRITE_BLOCKS, &forged),
        Err(Status::PermissionDenied)
    );
    assert_eq!(
        sim.call(bob(), 0, ids::PDELETE_BLOCKS, &args::pdelete_blocks(id, 6)),
        Err(Status::PermissionDenied)
    );
    assert_eq!(sim.h.dbs[0].fs.parallel.len(), 2);
    // Deleting a parallel file needs w on the file as well as on the directory.
    sim.mkdir(alice(), "/alice/open", 0o777).unwrap();
    sim.create(alice(), "/alice/open/q", true, 0o644).unwrap();
    assert_eq!(
        sim.delete(bob(), "/alice/open/q"),
        Err(Status::PermissionDenied)
    );
    sim.create(alice(), "/alice/open/l", false, 0o644).unwrap();
    sim.delete(bob(), "/alice/open/l").unwrap();
    sim.delete(alice(), "/alice/p").unwrap();
    for db in &sim.h.dbs {
        assert_eq!(db.fs.parallel.len(), 0);
    }
}

/// The documented limitation: a block partition trusts the owner and mode the client
/// carries for a block that does not exist yet, so a forger can fill a hole (and
/// never overwrite a stored block).
#[test]
fn limitation_forged_owner_can_fill_a_hole_but_never_overwrite() {
    let (mut sim, _) = setup();
    sim.create(alice(), "/alice/p", true, 0o644).unwrap();
    sim.write(alice(), "/alice/p", 0, &[1; 10]).unwrap();
    sim.write(alice(), "/alice/p", 3 * PARALLEL_BLOCK as u64, &[2; 10])
        .unwrap();
    let id = sim.stat(alice(), "/alice/p").unwrap().file_id;
    let forged = args::pwrite_blocks(id, "bob", 0o644, &[(1, 0, b"bob")]);
    assert_eq!(
        sim.call(bob(), 1, ids::PWRITE_BLOCKS, &forged),
        Ok(Vec::new())
    );
    let forged = args::pwrite_blocks(id, "bob", 0o644, &[(0, 0, b"bob")]);
    assert_eq!(
        sim.call(bob(), 0, ids::PWRITE_BLOCKS, &forged),
        Err(Status::PermissionDenied)
    );
    assert_eq!(&sim.read(alice(), "/alice/p", 0, 10).unwrap(), &[1; 10]);
}

#[test]
fn permissions_between_two_users() {
    let (mut sim, _) = setup();
    let (a, b) = (alice(), bob());
    sim.mkdir(a, "/alice/private", 0o700).unwrap();
    sim.mkdir(a, "/alice/shared", 0o777).unwrap();
    sim.create(a, "/alice/public", false, 0o644).unwrap();
    sim.create(a, "/alice/secret", false, 0o600).unwrap();
    sim.write(a, "/alice/public", 0, b"hello").unwrap();
    sim.write(a, "/alice/secret", 0, b"s3cret").unwrap();
    assert_eq!(
        sim.list(b, "/alice/private", 10),
        Err(Status::PermissionDenied)
    );
    assert_eq!(
        sim.create(b, "/alice/private/x", false, 0o644),
        Err(Status::PermissionDenied)
    );
    assert_eq!(
        sim.create(b, "/alice/x", false, 0o644),
        Err(Status::PermissionDenied)
    );
    assert_eq!(sim.read(b, "/alice/public", 0, 100).unwrap(), b"hello");
    assert_eq!(
        sim.write(b, "/alice/public", 0, b"x"),
        Err(Status::PermissionDenied)
    );
    assert_eq!(
        sim.read(b, "/alice/secret", 0, 100),
        Err(Status::PermissionDenied)
    );
    assert_eq!(
        sim.read_blocks(b, "/alice/secret", &[0]),
        Err(Status::PermissionDenied)
    );
    assert_eq!(
        sim.read_block_each(b, &[("/alice/public", 0), ("/alice/secret", 0)]),
        Err(Status::PermissionDenied)
    );
    assert_eq!(
        sim.delete(b, "/alice/public"),
        Err(Status::PermissionDenied)
    );
    assert_eq!(
        sim.rename(b, "/alice/public", "/alice/shared/p"),
        Err(Status::PermissionDenied)
    );
    // Other-writable directory: bob may create there, and the entry is his.
    sim.create(b, "/alice/shared/bobs", false, 0o600).unwrap();
    assert_eq!(sim.stat(a, "/alice/shared/bobs").unwrap().owner, "bob");
    assert_eq!(
        sim.read(a, "/alice/shared/bobs", 0, 1),
        Err(Status::PermissionDenied)
    );
    // The owner without w on her own file, and root, who may everything.
    sim.create(a, "/alice/ro", false, 0o444).unwrap();
    assert_eq!(
        sim.write(a, "/alice/ro", 0, b"x"),
        Err(Status::PermissionDenied)
    );
    sim.write(Caller::root(), "/alice/ro", 0, b"x").unwrap();
    assert_eq!(
        sim.read(Caller::root(), "/alice/secret", 0, 100).unwrap(),
        b"s3cret"
    );
    sim.delete(Caller::root(), "/alice/shared/bobs").unwrap();
}
