//! Guards the `tabos` command line end to end against a real tabosd: `status` (with
//! `--connect` or `TABOS_CONNECT`), `kv put/get/del`, `call` by procedure name, the
//! exit codes and messages when something is missing or no tabosd runs, and that
//! `tabos --help` and `tabosd --help` explain every flag.

mod common;

use common::{run, tabos_exe, tabosd_exe, Daemon, TestDir};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;

/// Exit code and output of one `tabos` run.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn ran(command: Command) -> Ran {
    let output = run(command);
    Ran {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `tabos --connect SOCKET ARGS...` with no `TABOS_CONNECT` in the environment.
fn tabos(socket: &Path, args: &[&str]) -> Ran {
    let mut command = Command::new(tabos_exe());
    command
        .env_remove("TABOS_CONNECT")
        .arg("--connect")
        .arg(socket)
        .args(args);
    ran(command)
}

/// Assert that a run exited with `code`.
#[track_caller]
fn assert_code(run: &Ran, code: i32, what: &str) {
    assert_eq!(run.code, Some(code), "{what}: {run:#?}");
}

#[test]
fn status_lists_the_partitions() {
    let daemon = Daemon::start("status");
    let run = tabos(daemon.socket(), &["status"]);
    assert_code(&run, 0, "tabos status");
    assert!(run.stdout.contains("2 partitions"), "{}", run.stdout);
    let socket = daemon.socket().display().to_string();
    assert!(
        run.stdout.contains(&socket),
        "status names the socket: {}",
        run.stdout
    );
    // One table row per partition: the partition id leads the row.
    let rows: Vec<u32> = run
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(rows, vec![0, 1], "rows of the table: {}", run.stdout);
}

#[test]
fn tabos_connect_comes_from_the_environment() {
    let daemon = Daemon::start("env");
    let mut command = Command::new(tabos_exe());
    command.env("TABOS_CONNECT", daemon.socket()).arg("status");
    let run = ran(command);
    assert_code(&run, 0, "TABOS_CONNECT=... tabos status");
    assert!(run.stdout.contains("2 partitions"), "{}", run.stdout);
}

#[test]
fn kv_put_get_and_delete() {
    let daemon = Daemon::start("kv");
    let s = daemon.socket();
    assert_code(&tabos(s, &["kv", "put", "k", "v"]), 0, "kv put");
    let get = tabos(s, &["kv", "get", "k"]);
    assert_code(&get, 0, "kv get");
    assert_eq!(get.stdout, "v\n");
    assert_code(
        &tabos(s, &["kv", "put", "k", "second value"]),
        0,
        "kv put again",
    );
    assert_eq!(tabos(s, &["kv", "get", "k"]).stdout, "second value\n");
    let missing = tabos(s, &["kv", "get", "missing"]);
    assert_code(&missing, 1, "kv get of a missing key");
    assert!(missing.stdout.is_empty(), "nothing on stdout: {missing:?}");
    assert!(
        missing.stderr.contains("missing"),
        "the message names the key: {missing:?}"
    );
    assert_code(&tabos(s, &["kv", "del", "k"]), 0, "kv del");
    let again = tabos(s, &["kv", "del", "k"]);
    assert_code(&again, 1, "kv del of a deleted key");
    assert!(!again.stderr.is_empty(), "a message on stderr");
    assert_code(&tabos(s, &["kv", "get", "k"]), 1, "kv get after del");
}

#[test]
fn call_runs_a_procedure_by_name() {
    let daemon = Daemon::start("call");
    let s = daemon.socket();
    let null = tabos(s, &["call", "null"]);
    assert_code(&null, 0, "call null");
    assert_eq!(null.stdout.trim(), "");
    let echo = tabos(s, &["call", "echo", "hi"]);
    assert_code(&echo, 0, "call echo hi");
    assert_eq!(echo.stdout, "hi\n");
    let echo1 = tabos(s, &["call", "echo", "there", "--partition", "1"]);
    assert_code(&echo1, 0, "call echo on partition 1");
    assert_eq!(echo1.stdout, "there\n");
    let unknown = tabos(s, &["call", "nosuch"]);
    assert_code(&unknown, 2, "call nosuch");
    for name in ["nosuch", "null", "echo", "kv_put"] {
        assert!(
            unknown.stderr.contains(name),
            "the message lists known procedures ({name}): {}",
            unknown.stderr
        );
    }
    let bad_partition = tabos(s, &["call", "null", "--partition", "7"]);
    assert_ne!(bad_partition.code, Some(0), "{bad_partition:?}");
    assert!(
        bad_partition.stderr.contains("partition"),
        "the message says why: {}",
        bad_partition.stderr
    );
}

#[test]
fn status_without_a_server_says_tabosd_is_not_running() {
    let dir = TestDir::new("noserver");
    let socket = dir.socket();
    let run = tabos(&socket, &["status"]);
    assert_code(&run, 1, "status with no socket file");
    assert!(run.stdout.is_empty());
    assert!(
        run.stderr.contains("is tabosd running"),
        "the message says tabosd does not run: {}",
        run.stderr
    );
    assert!(run.stderr.contains(&socket.display().to_string()));
    // A socket file left behind by a tabosd that is gone.
    drop(UnixListener::bind(&socket).expect("bind"));
    let stale = tabos(&socket, &["status"]);
    assert_code(&stale, 1, "status with a stale socket file");
    assert!(
        stale.stderr.contains("stale") && stale.stderr.contains("tabosd"),
        "the message says nobody serves the socket: {}",
        stale.stderr
    );
}

/// The entries of a `--help` text as (flag, explanation): an entry starts at a line
/// that begins with a flag, `--name` or `-x` (the explanation follows after two spaces,
/// or on the lines below) and runs until the next such line.
fn help_entries(help: &str) -> Vec<(String, String)> {
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in help.lines() {
        let text = line.trim();
        let b = text.as_bytes();
        let is_flag = b.len() > 1 && b[0] == b'-' && (b[1] == b'-' || b[1].is_ascii_alphanumeric());
        if is_flag {
            let (flag, explanation) = text.split_once("  ").unwrap_or((text, ""));
            entries.push((flag.trim().to_string(), explanation.trim().to_string()));
        } else if let Some((_, explanation)) = entries.last_mut() {
            if !text.is_empty() && line.starts_with(' ') {
                explanation.push(' ');
                explanation.push_str(text);
            }
        }
    }
    entries
}

fn help_of(exe: &Path, args: &[&str]) -> String {
    let mut command = Command::new(exe);
    command.args(args).arg("--help");
    let run = ran(command);
    assert_code(&run, 0, "--help");
    run.stdout
}

#[test]
fn help_explains_every_flag() {
    let tabos = help_of(&tabos_exe(), &[]);
    for needle in ["--connect", "TABOS_CONNECT", "--as", "status", "call", "kv"] {
        assert!(
            tabos.contains(needle),
            "tabos --help lacks {needle}:\n{tabos}"
        );
    }
    let call = help_of(&tabos_exe(), &["call"]);
    assert!(call.contains("--partition"), "tabos call --help:\n{call}");
    let kv = help_of(&tabos_exe(), &["kv"]);
    for needle in ["put", "get", "del"] {
        assert!(kv.contains(needle), "tabos kv --help lacks {needle}:\n{kv}");
    }
    let tabosd = help_of(&tabosd_exe(), &[]);
    let entries = help_entries(&tabosd);
    assert!(
        entries.len() >= 10,
        "tabosd --help not understood:\n{tabosd}"
    );
    // The flags of a local node (issue 2), each with a value, say their default.
    let local_flags = [
        ("--socket", true),
        ("--partitions", true),
        ("--cores", true),
        ("--no-pin", false),
        ("--ring-kib", true),
        ("--max-payload-bytes", true),
        ("--clients-max", true),
        ("--kv-rows-max", true),
        ("--node-id", true),
        ("--spin-us", true),
    ];
    for (flag, takes_value) in local_flags {
        let entry = entries
            .iter()
            .find(|(f, _)| f.split([' ', ',']).any(|w| w == flag));
        let Some((shown, explanation)) = entry else {
            panic!("tabosd --help lacks {flag}:\n{tabosd}");
        };
        assert_eq!(shown.contains('<'), takes_value, "{shown}");
        if takes_value {
            assert!(
                explanation.to_lowercase().contains("default"),
                "tabosd --help: `{shown}` does not say its default: {explanation}"
            );
        }
    }
    // Every flag, including those added since, is explained.
    for (flag, explanation) in &entries {
        assert!(
            !explanation.is_empty(),
            "tabosd --help: `{flag}` is not explained"
        );
    }
}
