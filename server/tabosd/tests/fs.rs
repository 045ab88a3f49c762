//! Guards the filesystem through a real tabosd with two partitions: files of every
//! awkward size round-trip byte for byte, localized and parallel (over both
//! partitions); renames, `du` and paged listings; another user is refused; the
//! batched calls of figure 10; concurrent clients in their own directories; and the
//! `tabos fs` command line, including its errors.

mod common;

use common::{within, Daemon, HANG_TIMEOUT};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::process::{Command, Output, Stdio};
use tabos_client::{ids, Client, Error, Status};
use tabos_procs::fs::wire::args;
use tabos_procs::fs::EntryKind;

/// Block sizes tabosd uses by default.
const LOCAL_BLOCK: usize = 2048;
const PARALLEL_BLOCK: usize = 8192;

fn random_bytes(rng: &mut StdRng, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    data
}

fn denied<T: std::fmt::Debug>(result: Result<T, Error>) -> bool {
    matches!(result, Err(Error::Status(Status::PermissionDenied)))
}

/// A client acting as `user`; the tests run as root, who may act as anyone.
fn connect_as(daemon: &Daemon, user: &str) -> Client {
    Client::connect_as(daemon.socket(), Some(user))
        .unwrap_or_else(|e| panic!("cannot connect as {user} (do the tests run as root?): {e}"))
}

/// Start a tabosd and add `users`.
fn start_with_users(tag: &str, users: &[&str]) -> Daemon {
    let daemon = Daemon::start(tag, &[]);
    let mut root = daemon.connect();
    for user in users {
        root.fs().useradd(user).expect("useradd as root");
    }
    daemon
}

#[test]
fn files_of_every_size_round_trip_localized_and_parallel() {
    let daemon = start_with_users("fs-sizes", &["alice"]);
    let mut client = connect_as(&daemon, "alice");
    let mut fs = client.fs();
    let mut rng = StdRng::seed_from_u64(1);
    for (parallel, block) in [(false, LOCAL_BLOCK), (true, PARALLEL_BLOCK)] {
        for size in [0, 1, block - 1, block, block + 1, 3_000_000] {
            let path = format!("/alice/f-{parallel}-{size}");
            let data = random_bytes(&mut rng, size);
            let file = fs.create(&path, parallel).unwrap();
            let kind = if parallel {
                EntryKind::ParallelFile
            } else {
                EntryKind::LocalFile
            };
            assert_eq!(file.stat.kind, kind);
            fs.write_at(&path, 0, &data).unwrap();
            let stat = fs.metadata(&path).unwrap();
            assert_eq!(stat.size_bytes, size as u64, "{path}");
            assert_eq!(stat.block_count, size.div_ceil(block) as u64, "{path}");
            let back = fs.read_to_end(&path).unwrap();
            assert!(back == data, "{path} did not round-trip");
            // Reads past the end stop at the end.
            let tail = fs
                .read_at(&path, size.saturating_sub(3) as u64, 100)
                .unwrap();
            assert_eq!(tail, data[size.saturating_sub(3)..]);
            assert!(fs.read_at(&path, size as u64 + 10, 5).unwrap().is_empty());
        }
        // Overwrite a middle range and extend past the end with a gap, against a Vec.
        let path = format!("/alice/patched-{parallel}");
        fs.create(&path, parallel).unwrap();
        let mut model = random_bytes(&mut rng, 5 * block + 7);
        fs.write_at(&path, 0, &model).unwrap();
        for _ in 0..20 {
            let offset = rng.gen_range(0..8 * block);
            let len = rng.gen_range(1..3 * block);
            let patch = random_bytes(&mut rng, len);
            fs.write_at(&path, offset as u64, &patch).unwrap();
            if model.len() < offset + patch.len() {
                model.resize(offset + patch.len(), 0);
            }
            model[offset..offset + patch.len()].copy_from_slice(&patch);
        }
        assert!(fs.read_to_end(&path).unwrap() == model, "{path}");
    }
}

#[test]
fn rename_du_and_paged_listing() {
    let daemon = start_with_users("fs-meta", &["alice"]);
    let mut client = connect_as(&daemon, "alice");
    let mut fs = client.fs();
    fs.mkdir("/alice/a").unwrap();
    fs.mkdir("/alice/a/sub").unwrap();
    fs.mkdir("/alice/ab").unwrap();
    for (path, size, parallel) in [
        ("/alice/a/x", 100, false),
        ("/alice/a/sub/y", 30_000, true),
        ("/alice/ab/z", 50_000, false),
    ] {
        fs.create(path, parallel).unwrap();
        fs.write_at(path, 0, &vec![7u8; size]).unwrap();
    }
    let du = fs.du("/alice/a", 0).unwrap();
    assert_eq!((du.total_bytes, du.file_count), (30_100, 2));
    let du = fs.du("/alice/a", 1000).unwrap();
    assert_eq!((du.total_bytes, du.file_count), (30_000, 1));
    let du = fs.du("/", 0).unwrap();
    assert_eq!((du.total_bytes, du.file_count), (80_100, 3));
    fs.rename("/alice/a", "/alice/ab/moved").unwrap();
    assert_eq!(
        fs.read_to_end("/alice/ab/moved/sub/y").unwrap(),
        vec![7u8; 30_000]
    );
    assert_eq!(fs.read_to_end("/alice/ab/moved/x").unwrap(), vec![7u8; 100]);
    assert!(matches!(
        fs.metadata("/alice/a"),
        Err(Error::Status(Status::NotFound))
    ));
    assert_eq!(fs.du("/alice/ab", 0).unwrap().total_bytes, 80_100);
    // Relative paths follow the current directory.
    fs.set_current_dir("/alice/ab/moved").unwrap();
    assert_eq!(fs.read_to_end("x").unwrap(), vec![7u8; 100]);
    assert_eq!(fs.current_dir().unwrap().as_str(), "/alice/ab/moved");
    // A 3000-entry directory lists completely, in order, a page per call.
    fs.mkdir("/alice/many").unwrap();
    for i in 0..3000 {
        fs.create(&format!("/alice/many/{i:04}"), false).unwrap();
    }
    let names: Vec<String> = fs
        .read_dir("/alice/many")
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    let want: Vec<String> = (0..3000).map(|i| format!("{i:04}")).collect();
    assert_eq!(names, want);
    let page = fs.read_dir_page("/alice/many", "", 10_000).unwrap();
    assert!(page.more && page.entries.len() < 3000, "a page is bounded");
}

#[test]
fn another_user_is_refused() {
    let daemon = start_with_users("fs-perm", &["alice", "bob"]);
    let mut alice = connect_as(&daemon, "alice");
    let mut bob = connect_as(&daemon, "bob");
    let mut fa = alice.fs();
    fa.create("/alice/public", false).unwrap();
    fa.write_at("/alice/public", 0, b"hello").unwrap();
    fa.create_with_mode("/alice/secret", true, 0o600).unwrap();
    fa.write_at("/alice/secret", 0, &[1; 20_000]).unwrap();
    let mut fb = bob.fs();
    assert_eq!(fb.read_to_end("/alice/public").unwrap(), b"hello");
    assert!(denied(fb.write_at("/alice/public", 0, b"x")));
    assert!(denied(fb.read_to_end("/alice/secret")));
    assert!(denied(fb.create("/alice/mine", false)));
    assert!(denied(fb.mkdir("/alice/dir")));
    assert!(denied(fb.unlink("/alice/public")));
    assert!(denied(fb.useradd("mallory")));
    assert!(denied(fb.read_blocks("/alice/secret", &[0])));
    assert_eq!(fa.read_to_end("/alice/public").unwrap(), b"hello");
    fb.create("/bob/own", false).unwrap();
    assert_eq!(fb.metadata("/bob/own").unwrap().owner, "bob");
}

#[test]
fn limits_and_bad_paths_get_their_statuses() {
    let daemon = start_with_users("fs-limits", &["alice"]);
    let mut client = connect_as(&daemon, "alice");
    let too_big = vec![0u8; client.max_payload_bytes() + 1];
    let home = client.fs().user("alice").unwrap().home_partition;
    let call = client.call(
        ids::fs::WRITE,
        home,
        &args::write("/alice/f", 0, 1, &too_big),
    );
    assert_eq!(call, Err(Error::Status(Status::PayloadTooLarge)));
    let mut fs = client.fs();
    fs.create("/alice/f", false).unwrap();
    let status = |r: Result<(), Error>| r.err().and_then(|e| e.status());
    assert_eq!(
        status(fs.write_at("/alice/f", 1 << 30, b"x")),
        Some(Status::FileTooLarge)
    );
    assert_eq!(status(fs.write_at("/alice/f", (1 << 30) - 1, b"x")), None);
    assert_eq!(fs.metadata("/alice/f").unwrap().size_bytes, 1 << 30);
    assert_eq!(
        fs.read_at("/alice/f", 5, 3).unwrap(),
        [0, 0, 0],
        "a hole reads as zeros"
    );
    let long = format!("/alice/{}", "n".repeat(256));
    assert_eq!(status(fs.mkdir(&long)), Some(Status::NameTooLong));
    assert_eq!(
        status(fs.mkdir("/alice/../../x")),
        Some(Status::InvalidPath)
    );
    assert_eq!(status(fs.mkdir("")), Some(Status::InvalidPath));
    assert_eq!(status(fs.mkdir("/alice/f/x")), Some(Status::NotADirectory));
    assert_eq!(status(fs.unlink("/alice")), Some(Status::PermissionDenied));
    fs.mkdir("/alice/d").unwrap();
    fs.create("/alice/d/g", true).unwrap();
    assert_eq!(status(fs.unlink("/alice/d")), Some(Status::NotEmpty));
    assert_eq!(
        status(fs.write_at("/alice/d", 0, b"x")),
        Some(Status::IsADirectory)
    );
    assert_eq!(
        status(fs.rename("/alice/d", "/root/d")),
        Some(Status::CrossNamespace)
    );
    fs.unlink("/alice/f").unwrap();
}

#[test]
fn batched_block_calls_of_figure_10() {
    let users = ["u0", "u1", "u2", "u3"];
    let daemon = start_with_users("fs-batch", &users);
    let mut client = daemon.connect();
    let mut fs = client.fs();
    let mut rng = StdRng::seed_from_u64(3);
    // 10a: twenty blocks of one file, each kind.
    for (parallel, block) in [(false, LOCAL_BLOCK), (true, PARALLEL_BLOCK)] {
        let path = format!("/u0/blocks-{parallel}");
        fs.create(&path, parallel).unwrap();
        let blocks: Vec<Vec<u8>> = (0..20).map(|_| random_bytes(&mut rng, block)).collect();
        let writes: Vec<(u64, &[u8])> = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| (i as u64, b.as_slice()))
            .collect();
        fs.write_blocks(&path, &writes).unwrap();
        let order: Vec<u64> = (0..20).rev().collect();
        let got = fs.read_blocks(&path, &order).unwrap();
        for (b, data) in order.iter().zip(&got) {
            assert!(data == &blocks[*b as usize], "block {b} of {path}");
        }
        assert!(fs.read_blocks(&path, &[25]).unwrap()[0].is_empty());
    }
    // 10b: one block in each of many files, over several users' partitions.
    let mut paths = Vec::new();
    for (i, user) in users.iter().enumerate() {
        for j in 0..5 {
            let path = format!("/{user}/each-{j}");
            fs.create(&path, (i + j) % 3 == 0).unwrap();
            paths.push(path);
        }
    }
    let data: Vec<Vec<u8>> = paths.iter().map(|_| random_bytes(&mut rng, 1000)).collect();
    let writes: Vec<(&str, u64, &[u8])> = paths
        .iter()
        .zip(&data)
        .map(|(p, d)| (p.as_str(), 1, d.as_slice()))
        .collect();
    fs.write_block_each(&writes).unwrap();
    let reads: Vec<(&str, u64)> = paths.iter().map(|p| (p.as_str(), 1)).collect();
    let got = fs.read_block_each(&reads).unwrap();
    for ((path, d), g) in paths.iter().zip(&data).zip(&got) {
        assert_eq!(g, d, "block 1 of {path}");
        let stat = fs.metadata(path).unwrap();
        assert_eq!(stat.size_bytes, u64::from(stat.block_bytes) + 1000);
    }
}

/// Several threads, each with its own client and directory, create, write, read and
/// delete at once; each sees exactly its own files.
#[test]
fn concurrent_clients_in_their_own_directories() {
    let daemon = start_with_users("fs-conc", &["alice", "bob"]);
    let socket = daemon.socket().to_path_buf();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let socket = socket.clone();
            std::thread::spawn(move || {
                let user = ["alice", "bob"][t % 2];
                let mut client = Client::connect_as(&socket, Some(user)).expect("connect");
                let mut fs = client.fs();
                let dir = format!("/{user}/worker{t}");
                fs.mkdir(&dir).unwrap();
                let mut rng = StdRng::seed_from_u64(t as u64);
                for round in 0..40 {
                    let path = format!("{dir}/f{}", round % 7);
                    let _ = fs.unlink(&path);
                    let len = rng.gen_range(0..40_000);
                    let data = random_bytes(&mut rng, len);
                    fs.create(&path, round % 3 == 0).unwrap();
                    fs.write_at(&path, 0, &data).unwrap();
                    assert!(fs.read_to_end(&path).unwrap() == data, "{path}");
                }
                let names: Vec<String> = fs
                    .read_dir(&dir)
                    .unwrap()
                    .into_iter()
                    .map(|e| e.name)
                    .collect();
                assert_eq!(names.len(), 7);
                for name in names {
                    fs.unlink(&format!("{dir}/{name}")).unwrap();
                }
                fs.unlink(&dir).unwrap();
            })
        })
        .collect();
    within("the concurrent fs workers", HANG_TIMEOUT, move || {
        for w in workers {
            w.join().expect("a worker failed");
        }
    });
    let mut client = daemon.connect();
    assert_eq!(client.fs().du("/", 0).unwrap().file_count, 0);
}

fn tabos(daemon: &Daemon, args: &[&str]) -> Output {
    let child = Command::new(common::tabos_cli())
        .args(args)
        .env("TABOS_CONNECT", daemon.socket())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tabos");
    common::child_output(child, HANG_TIMEOUT)
}

fn ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn fails_with(output: &Output, what: &str, message: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{what} should exit 1; stderr: {stderr}"
    );
    assert!(
        stderr.contains(message),
        "{what}: {stderr:?} does not say {message:?}"
    );
}

#[test]
fn the_command_line_puts_gets_lists_and_reports_errors() {
    let daemon = Daemon::start("fs-cli", &[]);
    let dir = daemon.dir().to_path_buf();
    let local = dir.join("local.bin");
    let mut rng = StdRng::seed_from_u64(8);
    let data = random_bytes(&mut rng, 100_000);
    std::fs::write(&local, &data).unwrap();
    let local_s = local.to_str().unwrap();
    let back = dir.join("back.bin");
    let back_s = back.to_str().unwrap();
    let run = |args: &[&str]| tabos(&daemon, args);
    let alice = |args: &[&str]| {
        let mut all = vec!["--as", "alice", "fs"];
        all.extend_from_slice(args);
        tabos(&daemon, &all)
    };

    ok(&run(&["fs", "useradd", "alice"]), "useradd");
    ok(&alice(&["mkdir", "/alice/docs"]), "mkdir");
    let put = ok(&alice(&["put", local_s, "/alice/docs/a.bin"]), "put");
    assert!(put.contains("100000 bytes, localized file"), "{put}");
    let put = ok(
        &alice(&["put", local_s, "/alice/p.bin", "--parallel"]),
        "put --parallel",
    );
    assert!(put.contains("parallel file"), "{put}");
    for path in ["/alice/docs/a.bin", "/alice/p.bin"] {
        ok(&alice(&["get", path, back_s]), "get");
        assert!(std::fs::read(&back).unwrap() == data, "{path} round trip");
    }
    let ls = ok(&alice(&["ls", "/alice"]), "ls");
    assert!(
        ls.contains("drwxr-xr-x alice") && ls.contains(" docs"),
        "{ls}"
    );
    assert!(
        ls.contains("prw-r--r-- alice") && ls.contains("100000 p.bin"),
        "{ls}"
    );
    let stat = ok(&alice(&["stat", "/alice/p.bin"]), "stat");
    assert!(
        stat.contains("type:   parallel file") && stat.contains("size:   100000 bytes"),
        "{stat}"
    );
    assert!(
        stat.contains("owner:  alice") && stat.contains("mode:   644"),
        "{stat}"
    );
    let du = ok(&alice(&["du", "/alice", "--min-size", "1"]), "du");
    assert!(du.starts_with("200000 bytes in 2 files"), "{du}");
    ok(&alice(&["mv", "/alice/docs/a.bin", "/alice/b.bin"]), "mv");
    ok(&alice(&["cd", "/alice/docs"]), "cd");
    assert_eq!(ok(&alice(&["pwd"]), "pwd").trim(), "/alice/docs");
    assert_eq!(ok(&alice(&["ls"]), "ls .").trim(), "");
    ok(&alice(&["rm", "/alice/docs"]), "rm of an empty directory");
    let cat = alice(&["cat", "/alice/b.bin"]);
    assert!(
        cat.status.success() && cat.stdout == data,
        "cat prints the bytes"
    );

    fails_with(
        &alice(&["cat", "/alice/nope"]),
        "cat of nothing",
        "/alice/nope: not found",
    );
    fails_with(&alice(&["mkdir", "/alice/../.."]), "escape", "invalid path");
    fails_with(
        &alice(&["mkdir", &format!("/alice/{}", "x".repeat(300))]),
        "long name",
        "too long",
    );
    fails_with(&alice(&["rm", "/alice"]), "rm home", "permission denied");
    fails_with(
        &alice(&["mv", "/alice/b.bin", "/root/b"]),
        "cross",
        "two users' trees",
    );
    fails_with(
        &alice(&["ls", "/alice/b.bin"]),
        "ls of a file",
        "not a directory",
    );
    fails_with(
        &alice(&["get", "/alice/b.bin", "/nonexistent-dir/x"]),
        "get to nowhere",
        "cannot write",
    );
    fails_with(
        &run(&["--as", "bob", "fs", "ls", "/bob"]),
        "no such user",
        "not found",
    );
    fails_with(
        &run(&["--as", "alice", "fs", "useradd", "eve"]),
        "useradd as alice",
        "permission denied",
    );
    let non_utf8 = Command::new(common::tabos_cli())
        .arg("--as")
        .arg("alice")
        .args(["fs", "stat"])
        .arg(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"/alice/\xff"))
        .env("TABOS_CONNECT", daemon.socket())
        .output()
        .expect("run tabos");
    fails_with(&non_utf8, "non-UTF-8 path", "not UTF-8");
}
