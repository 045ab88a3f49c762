//! Guards what an operator sees of durability: a restarted node has its acknowledged
//! writes (sync and async after a clean stop); `tabos admin snapshot` writes snapshots
//! and truncates the log; `tabos admin verify` passes a good data dir and names the file
//! and offset of corruption, which also stops tabosd from starting; a torn log tail is
//! cut with a log line; a second tabosd on the same data dir and a data dir of another
//! shape are refused with a clear message.

mod common;

use common::{
    child_output, run_tabos, send_signal, start_on_data_dir, tabosd_exe, wait_exit, TestDir,
    HANG_TIMEOUT,
};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use tabos_client::Client;

fn stop(mut child: Child) {
    send_signal(child.id(), "TERM");
    let status = wait_exit(&mut child, HANG_TIMEOUT).expect("tabosd stops");
    assert!(status.success(), "tabosd exited with {status}");
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Start tabosd expecting it to refuse; returns its log.
fn refused(socket: &Path, data: &Path, log: &Path, extra: &[&str]) -> String {
    let child = Command::new(tabosd_exe())
        .arg("--socket")
        .arg(socket)
        .arg("--data-dir")
        .arg(data)
        .arg("--no-pin")
        .args(if extra.contains(&"--partitions") {
            &[][..]
        } else {
            &["--partitions", "2"][..]
        })
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tabosd");
    let out = child_output(child, HANG_TIMEOUT);
    assert!(
        !out.status.success(),
        "tabosd started on {}",
        data.display()
    );
    let _ = log;
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn writes_survive_restarts_snapshots_truncate_and_corruption_is_named() {
    let dir = TestDir::new("recovery");
    let (socket, data, log) = (dir.socket(), dir.path.join("data"), dir.path.join("log"));
    for mode in ["sync", "async"] {
        let child = start_on_data_dir(&socket, &data, &log, &["--durability", mode]);
        let mut client = Client::connect(&socket).unwrap();
        for i in 0..200u32 {
            client
                .kv_put(format!("{mode}{i}").as_bytes(), &i.to_le_bytes())
                .unwrap();
        }
        client.rkv_put(b"replicated", mode.as_bytes()).unwrap();
        drop(client);
        stop(child);
    }
    // A second tabosd on a data dir in use is refused.
    let child = start_on_data_dir(&socket, &data, &log, &[]);
    let other = dir.path.join("other.sock");
    let err = refused(&other, &data, &log, &[]);
    assert!(err.contains("in use by another tabosd"), "{err}");
    // Everything acknowledged is back, on every partition.
    let mut client = Client::connect(&socket).unwrap();
    for mode in ["sync", "async"] {
        for i in 0..200u32 {
            let got = client.kv_get(format!("{mode}{i}").as_bytes()).unwrap();
            assert_eq!(got, Some(i.to_le_bytes().to_vec()), "{mode}{i}");
        }
    }
    for p in 0..2 {
        assert_eq!(
            client.rkv_get(p, b"replicated").unwrap(),
            Some(b"async".to_vec())
        );
    }
    drop(client);
    // A snapshot on demand; the log before it goes.
    let out = run_tabos(&socket, &["admin", "snapshot"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        text(&out).matches("snapshot at lsn").count(),
        2,
        "{}",
        text(&out)
    );
    stop(child);
    for p in 0..2 {
        let listing =
            tabos_durability::layout::list(&tabos_durability::partition_dir(&data, p)).unwrap();
        assert_eq!(listing.snapshots.len(), 1, "p{p}: {listing:?}");
        assert!(
            listing.segments.len() <= 1,
            "p{p}: old segments kept: {listing:?}"
        );
    }
    let out = run_tabos(&socket, &["admin", "verify", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    // Restart from the snapshot, write more, then tear the log's last record.
    let child = start_on_data_dir(&socket, &data, &log, &[]);
    let mut client = Client::connect(&socket).unwrap();
    assert_eq!(
        client.kv_get(b"sync7").unwrap(),
        Some(7u32.to_le_bytes().to_vec())
    );
    for i in 0..20u32 {
        client.kv_put(format!("after{i}").as_bytes(), b"x").unwrap();
    }
    drop(client);
    stop(child);
    let p0 = tabos_durability::partition_dir(&data, 0);
    let listing = tabos_durability::layout::list(&p0).unwrap();
    let (_, segment) = listing.segments.last().unwrap().clone();
    let bytes = std::fs::read(&segment).unwrap();
    // Records, then the zeros a segment keeps ahead: cut into the last record.
    let records_end = bytes.iter().rposition(|&b| b != 0).expect("records") + 1;
    assert!(records_end > 10, "p0 logged the writes after the snapshot");
    std::fs::write(&segment, &bytes[..records_end - 3]).unwrap();
    let child = start_on_data_dir(&socket, &data, &log, &[]);
    stop(child);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("cut torn tail of") && logged.contains(&segment.display().to_string()),
        "{logged}"
    );
    // Corruption inside the snapshot: verify names it, and tabosd refuses to start.
    let (_, snap) = listing.snapshots.last().unwrap().clone();
    let mut bytes = std::fs::read(&snap).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&snap, &bytes).unwrap();
    let out = run_tabos(&socket, &["admin", "verify", data.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let name = snap.file_name().unwrap().to_str().unwrap();
    assert!(
        text(&out).contains(name) && text(&out).contains("offset"),
        "{}",
        text(&out)
    );
    let err = refused(&socket, &data, &log, &[]);
    assert!(
        err.contains(name) && err.contains("offset") && err.contains("refusing to start"),
        "{err}"
    );
    // A data dir of another shape is refused too.
    let err = refused(&socket, &data, &log, &["--partitions", "3"]);
    assert!(err.contains("2 partitions"), "{err}");
}

#[test]
fn a_failing_log_makes_the_partition_refuse_instead_of_acknowledging() {
    let dir = TestDir::new("failstop");
    let (socket, data, log) = (dir.socket(), dir.path.join("data"), dir.path.join("log"));
    let mut child = Command::new(tabosd_exe())
        .arg("--socket")
        .arg(&socket)
        .arg("--data-dir")
        .arg(&data)
        .args(["--partitions", "2", "--no-pin", "--spin-us", "50"])
        .env("TABOS_FAULT_LOG_FAIL_AFTER", "20")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start tabosd");
    let mut client = loop {
        if let Ok(c) = Client::connect(&socket) {
            break c;
        }
        assert!(child.try_wait().unwrap().is_none(), "tabosd exited");
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    // Keys of partition 0 only: one record per call, so one flush per call.
    let keys: Vec<Vec<u8>> = (0u32..)
        .map(|i| format!("f{i}").into_bytes())
        .filter(|k| client.partition_for_key(k) == 0)
        .take(40)
        .collect();
    let mut acked = Vec::new();
    let mut refused = 0;
    for key in &keys {
        match client.kv_put(key, b"v") {
            Ok(()) => {
                assert_eq!(refused, 0, "a write was acknowledged after the log failed");
                acked.push(key.clone());
            }
            Err(tabos_client::Error::Status(tabos_client::Status::StorageFailed)) => refused += 1,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    assert_eq!(acked.len(), 20, "the first 20 flushes succeed");
    assert_eq!(refused, 20);
    // Reads on the failed partition are refused too; the other partition serves.
    let err = client.kv_get(&keys[0]).unwrap_err();
    assert!(
        matches!(
            err,
            tabos_client::Error::Status(tabos_client::Status::StorageFailed)
        ),
        "{err}"
    );
    let other = (0u32..)
        .map(|i| format!("g{i}").into_bytes())
        .find(|k| client.partition_for_key(k) == 1)
        .unwrap();
    client.kv_put(&other, b"fine").unwrap();
    drop(client);
    stop(child);
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(
        logged.contains("injected write failure") && logged.contains("fail-stop"),
        "{logged}"
    );
    // A restart on a good disk has exactly the acknowledged writes.
    let child = start_on_data_dir(&socket, &data, &log, &[]);
    let mut client = Client::connect(&socket).unwrap();
    for key in &acked {
        assert_eq!(client.kv_get(key).unwrap(), Some(b"v".to_vec()));
    }
    for key in &keys[20..] {
        assert_eq!(
            client.kv_get(key).unwrap(),
            None,
            "a refused write survived"
        );
    }
    assert_eq!(client.kv_get(&other).unwrap(), Some(b"fine".to_vec()));
    drop(client);
    stop(child);
}

/// The offset and procedure of the last record in `segment`, and where records end.
fn last_record(segment: &Path) -> (usize, u32, usize) {
    let bytes = std::fs::read(segment).unwrap();
    let (mut at, mut last) = (0, None);
    while let Ok((record, next)) = tabos_durability::record::decode_at(&bytes, at) {
        last = Some((at, record.proc_id));
        at = next;
    }
    let (offset, proc_id) = last.expect("the segment holds records");
    (offset, proc_id, at)
}

/// A crash between partitions making one replicated write durable leaves it on some
/// of them only (it was never acknowledged: its reply waits for all). Made here by
/// zeroing the last record, that write, out of p1's log after a clean stop. The
/// restart rolls it forward onto p1 from p0's log and logs it there; the next restart
/// has nothing to roll.
#[test]
fn a_replicated_write_on_some_partitions_only_is_rolled_forward() {
    let dir = TestDir::new("roll-forward");
    let (socket, data, log) = (dir.socket(), dir.path.join("data"), dir.path.join("log"));
    let child = start_on_data_dir(&socket, &data, &log, &["--durability", "sync"]);
    let mut client = Client::connect(&socket).unwrap();
    client.rkv_put(b"first", b"1").unwrap();
    for i in 0..40u32 {
        client
            .kv_put(format!("k{i}").as_bytes(), &i.to_le_bytes())
            .unwrap();
    }
    client.rkv_put(b"last", b"2").unwrap();
    drop(client);
    stop(child);

    let p1 = tabos_durability::partition_dir(&data, 1);
    let listing = tabos_durability::layout::list(&p1).unwrap();
    let segment = &listing.segments.last().expect("p1 has a log").1;
    let (offset, proc_id, end) = last_record(segment);
    assert_eq!(proc_id, tabos_procs::ids::RKV_PUT, "p1's last record");
    let mut bytes = std::fs::read(segment).unwrap();
    bytes[offset..end].fill(0);
    std::fs::write(segment, &bytes).unwrap();

    for round in 0..2 {
        let child = start_on_data_dir(&socket, &data, &log, &["--durability", "sync"]);
        let mut client = Client::connect(&socket).unwrap();
        for p in 0..2 {
            assert_eq!(
                client.rkv_get(p, b"last").unwrap(),
                Some(b"2".to_vec()),
                "round {round}: p{p}"
            );
            assert_eq!(client.rkv_get(p, b"first").unwrap(), Some(b"1".to_vec()));
        }
        for i in 0..40u32 {
            let got = client.kv_get(format!("k{i}").as_bytes()).unwrap();
            assert_eq!(got, Some(i.to_le_bytes().to_vec()), "k{i}");
        }
        drop(client);
        stop(child);
    }
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("p1: rolled replicated write 2 forward from p0's log")
            .count(),
        1,
        "rolled forward once, then found in p1's own log:\n{text}"
    );
    assert!(!text.contains("WARNING"), "{text}");
}
