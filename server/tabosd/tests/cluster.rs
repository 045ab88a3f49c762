//! Guards a three-node cluster on 127.0.0.1, .2 and .3 (partitions 0 | 1-2 | 3): a
//! client on one node reaches every node's partitions for kv, IPC, multicast, files
//! and scheduling; `tabos status` reports every node; a node killed with SIGKILL fails
//! its calls fast (in-flight ones with NodeUnavailable) while the others serve on,
//! and the same client reaches it again after a restart; scripts/local-cluster.sh
//! starts, reports and stops a cluster.

mod common;

use common::{poll_until, run_output, send_signal, tabosd_exe, within, TestDir, HANG_TIMEOUT};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;
use tabos_client::{ids, Client, Completed, ConnectOptions, Error, Placement, Policy, Status};
use tabos_procs::fs::wire::args;
use tabos_procs::ipc::recv_args;

/// A receive long enough for any message in flight to arrive.
const LONG: Duration = Duration::from_secs(30);
/// (node id, address, partitions): global partitions 0 | 1, 2 | 3.
const LAYOUT: [(u32, Ipv4Addr, u32); 3] = [
    (1, Ipv4Addr::new(127, 0, 0, 1), 1),
    (2, Ipv4Addr::new(127, 0, 0, 2), 2),
    (3, Ipv4Addr::new(127, 0, 0, 3), 1),
];
const PARTITIONS: u32 = 4;

/// The node that owns global partition `p`.
fn node_of(p: u32) -> u32 {
    match p {
        0 => 1,
        1 | 2 => 2,
        _ => 3,
    }
}

/// One tabosd of the cluster, stopped (SIGTERM, then SIGKILL) when dropped.
struct Node {
    id: u32,
    dir: PathBuf,
    child: Option<Child>,
}

impl Node {
    fn socket(&self) -> PathBuf {
        self.dir.join("tabos.sock")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Start it (again) with the same command, and wait until it serves.
    fn start(&mut self, file: &Path) {
        assert!(self.child.is_none(), "node {} runs already", self.id);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("log"))
            .expect("the node's log");
        let child = Command::new(tabosd_exe())
            .arg("--cluster")
            .arg(file)
            .args([
                "--node",
                &self.id.to_string(),
                "--no-pin",
                "--spin-us",
                "20",
            ])
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .env_remove("TABOS_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tabosd");
        self.child = Some(child);
        let starts = self.log().matches("accepts remote calls").count();
        poll_until(
            &format!("node {} starts", self.id),
            common::START_TIMEOUT,
            || {
                let child = self.child.as_mut().expect("the process");
                if let Some(status) = child.try_wait().expect("try_wait") {
                    panic!("node {} exited with {status}:\n{}", self.id, self.log());
                }
                let listening = self.log().matches("accepts remote calls").count() > starts;
                (listening && Client::connect(self.socket()).is_ok()).then_some(())
            },
        );
    }

    fn kill(&mut self) {
        let mut child = self.child.take().expect("a running node");
        send_signal(child.id(), "KILL");
        common::wait_exit(&mut child, HANG_TIMEOUT).expect("a killed node exits");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        send_signal(child.id(), "TERM");
        if common::wait_exit(&mut child, Duration::from_secs(10)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- node {} log ---\n{}", self.id, self.log());
        }
    }
}

/// Three nodes of one cluster file, each in its own directory.
struct Cluster {
    nodes: Vec<Node>, // dropped (stopped) before `dir` is removed
    file: PathBuf,
    secret: PathBuf,
    _dir: TestDir,
}

impl Cluster {
    fn start(tag: &str) -> Cluster {
        let dir = TestDir::new(tag);
        let secret = common::write_secret(&dir.path, "secret");
        let mut text = String::from("secret_file = \"secret\"\n");
        let mut nodes = Vec::new();
        for (id, ip, partitions) in LAYOUT {
            let node_dir = dir.path.join(format!("node-{id}"));
            std::fs::create_dir_all(&node_dir).unwrap();
            let port = common::free_port(ip);
            let socket = node_dir.join("tabos.sock");
            text += &format!(
                "\n[[node]]\nid = {id}\naddress = \"{ip}:{port}\"\nsocket = \"{}\"\npartitions = {partitions}\n",
                socket.display()
            );
            nodes.push(Node {
                id,
                dir: node_dir,
                child: None,
            });
        }
        let file = dir.path.join("cluster.toml");
        std::fs::write(&file, text).unwrap();
        for node in &mut nodes {
            node.start(&file);
        }
        Cluster {
            nodes,
            file,
            secret,
            _dir: dir,
        }
    }

    fn node(&mut self, id: u32) -> &mut Node {
        &mut self.nodes[id as usize - 1]
    }

    /// A client attached to node `id` over its socket, acting as `act_as`.
    fn client_as(&self, id: u32, act_as: Option<&str>) -> Client {
        let options = ConnectOptions {
            act_as: act_as.map(str::to_string),
            secret_file: Some(self.secret.clone()),
        };
        let client = Client::connect_with(self.nodes[id as usize - 1].socket(), &options)
            .unwrap_or_else(|e| panic!("connect to node {id}: {e}"));
        assert_eq!(
            (client.node_id(), client.partition_count()),
            (id, PARTITIONS)
        );
        client
    }

    fn client(&self, id: u32) -> Client {
        self.client_as(id, None)
    }

    /// `tabos --connect <node 1's socket> ARGS`.
    fn tabos(&self, args: &[&str]) -> Output {
        let mut command = Command::new(common::tabos_cli());
        command
            .arg("--connect")
            .arg(self.nodes[0].socket())
            .arg("--secret-file")
            .arg(&self.secret)
            .args(args)
            .env_remove("TABOS_CONNECT");
        run_output(command)
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The first `count` mailbox ids from `from` whose mailbox is on `partition`.
fn mailboxes_on(client: &Client, partition: u32, from: u64, count: usize) -> Vec<u64> {
    let found: Vec<u64> = (from..)
        .filter(|r| client.mailbox_partition(*r) == partition)
        .take(count)
        .collect();
    for r in &found {
        assert_eq!(client.partition_for_key(&r.to_le_bytes()), partition);
    }
    found
}

/// The first key `prefix-i` that lives on `partition`.
fn key_on(client: &Client, prefix: &str, partition: u32) -> Vec<u8> {
    (0..)
        .map(|i| format!("{prefix}-{i}").into_bytes())
        .find(|k| client.partition_for_key(k) == partition)
        .expect("a key")
}

/// BUG: `Client::is_remote` is false for a client that connected to node 2 by TCP:
/// it looks at `nodes[0]`, which after `learn_cluster` is the first node of the map
/// (node 1, not connected), not the node the client connected to. Fix: look at the
/// home node's link (the entry whose `node_id` is `welcome.node_id`).
#[test]
fn status_lists_every_node_and_keys_reach_every_node() {
    let cluster = Cluster::start("cl-kv");
    let status = cluster.tabos(&["status"]);
    let out = text(&status.stdout);
    assert!(status.status.success(), "{out}{}", text(&status.stderr));
    for id in 1..=3 {
        assert!(out.contains(&format!("node {id}: reachable")), "{out}");
    }
    assert!(out.contains("2 partitions (1..=2)"), "{out}");
    let mut c1 = cluster.client(1);
    let map: Vec<(u32, u32, u32)> = c1
        .nodes()
        .iter()
        .map(|(n, _)| (n.node_id, n.partition_base, n.partition_count))
        .collect();
    assert_eq!(map, vec![(1, 0, 1), (2, 1, 2), (3, 3, 1)]);
    let mut model = HashMap::new();
    let mut per_partition = [0u64; PARTITIONS as usize];
    for i in 0..400u32 {
        let key = format!("k{i}").into_bytes();
        let value = format!("value {i} ").repeat(i as usize % 17).into_bytes();
        c1.kv_put(&key, &value).expect("kv_put through node 1");
        per_partition[c1.partition_for_key(&key) as usize] += 1;
        model.insert(key, value);
    }
    assert!(per_partition.iter().all(|n| *n > 0), "{per_partition:?}");
    // A client on node 3 reads every key back and deletes half; a remote client of
    // node 2 sees the result.
    let mut c3 = cluster.client(3);
    for (i, (key, value)) in model.iter().enumerate() {
        assert_eq!(c3.kv_get(key).unwrap().as_ref(), Some(value));
        if i % 2 == 0 {
            assert_eq!(c3.kv_delete(key), Ok(true));
        }
    }
    let options = ConnectOptions {
        act_as: None,
        secret_file: Some(cluster.secret.clone()),
    };
    let node2 = c1.nodes()[1].0.address.clone();
    let mut remote = Client::connect_with(&node2, &options).expect("remote client of node 2");
    for (i, (key, value)) in model.iter().enumerate() {
        let want = (i % 2 == 1).then(|| value.clone());
        assert_eq!(remote.kv_get(key).unwrap(), want);
    }
    // Each node counted the calls on its own partitions.
    for (info, result) in c1.cluster_status() {
        let stats = result.unwrap_or_else(|e| panic!("node {}: {e}", info.node_id));
        assert_eq!(stats.len(), info.partition_count as usize);
        for (i, s) in stats.iter().enumerate() {
            assert_eq!(
                (s.node_id, s.partition),
                (info.node_id, info.partition_base + i as u32)
            );
            assert_eq!(node_of(s.partition), info.node_id);
            assert!(s.calls >= 3 * per_partition[s.partition as usize], "{s:?}");
        }
    }
    let fresh = Client::connect_with(&node2, &options).expect("remote client of node 2");
    assert!(
        fresh.is_remote(),
        "a client connected to node 2 by TCP is remote"
    );
}

#[test]
fn messages_and_multicast_cross_nodes() {
    let cluster = Cluster::start("cl-ipc");
    let mut c1 = cluster.client(1);
    let to = mailboxes_on(&c1, 3, 1000, 1)[0];
    // A receiver on node 3 parks on its own partition; a sender on node 1 wakes it.
    let mut receiver = cluster.client(3);
    let waiting = std::thread::spawn(move || receiver.recv(to, LONG));
    std::thread::sleep(Duration::from_millis(200));
    let id = c1.send(11, to, b"from node 1").expect("send to node 3");
    let got = within("the parked receive on node 3", HANG_TIMEOUT, move || {
        waiting.join().expect("receiver")
    })
    .expect("the message");
    assert_eq!(
        (got.sender_id, got.message_id, &got.data[..]),
        (11, id, &b"from node 1"[..])
    );
    // A receiver on node 1 parks at node 3 over the network; node 2 sends.
    let mut receiver = cluster.client(1);
    let waiting = std::thread::spawn(move || receiver.recv(to, LONG));
    std::thread::sleep(Duration::from_millis(200));
    let id = cluster
        .client(2)
        .send(12, to, b"from node 2")
        .expect("send");
    let got = within("the remote parked receive", HANG_TIMEOUT, move || {
        waiting.join().expect("receiver")
    })
    .expect("the message");
    assert_eq!((got.sender_id, got.message_id), (12, id));
    // Multicast to two receivers on each partition, read where each mailbox lives.
    let mut receivers = Vec::new();
    for p in 0..PARTITIONS {
        receivers.extend(mailboxes_on(&c1, p, 5000, 2));
    }
    receivers.reverse();
    let sent = c1
        .multicast(13, &receivers, b"to every node")
        .expect("multicast");
    assert_eq!(sent.len(), receivers.len());
    for (receiver, message_id) in sent {
        let node = node_of(c1.mailbox_partition(receiver));
        let m = cluster
            .client(node)
            .recv(receiver, Duration::ZERO)
            .expect("a copy");
        assert_eq!(
            (m.sender_id, m.message_id, &m.data[..]),
            (13, message_id, &b"to every node"[..])
        );
    }
}

/// The first user name `user-i` whose home partition is `partition`.
fn user_on(client: &Client, partition: u32) -> String {
    (0..)
        .map(|i| format!("user-{i}"))
        .find(|n| client.partition_for_key(n.as_bytes()) == partition)
        .expect("a name")
}

#[test]
fn files_spread_over_every_node() {
    let cluster = Cluster::start("cl-fs");
    let mut admin = cluster.client_as(1, Some("root"));
    let far = user_on(&admin, 3);
    admin.fs().useradd("alice").expect("useradd alice");
    admin.fs().useradd(&far).expect("useradd");
    assert_eq!(admin.fs().user(&far).unwrap().home_partition, 3);
    // A parallel file written through node 1 has blocks on all four partitions and
    // reads back byte for byte through node 2.
    let data: Vec<u8> = (0..1_000_003u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut alice1 = cluster.client_as(1, Some("alice"));
    let mut fs1 = alice1.fs();
    fs1.create("/alice/spread", true).expect("create parallel");
    fs1.write_at("/alice/spread", 0, &data).expect("write");
    let mut alice2 = cluster.client_as(2, Some("alice"));
    let mut fs2 = alice2.fs();
    assert!(
        fs2.read_to_end("/alice/spread").unwrap() == data,
        "parallel file via node 2"
    );
    let blocks = fs2
        .read_blocks("/alice/spread", &[0, 1, 2, 3])
        .expect("one block per partition");
    for (b, block) in blocks.iter().enumerate() {
        assert!(block[..] == data[b * 8192..(b + 1) * 8192], "block {b}");
    }
    // A localized file of a user at home on node 3, written through node 1.
    let path = format!("/{far}/notes");
    let notes: Vec<u8> = (0..300_000u32).map(|i| (i % 249) as u8).collect();
    let mut far1 = cluster.client_as(1, Some(&far));
    far1.fs().create(&path, false).expect("create on node 3");
    far1.fs()
        .write_at(&path, 0, &notes)
        .expect("write on node 3");
    for node in [3, 2] {
        let mut reader = cluster.client_as(node, Some(&far));
        assert!(
            reader.fs().read_to_end(&path).unwrap() == notes,
            "via node {node}"
        );
    }
    let du = fs2.du("/alice", 0).unwrap();
    assert_eq!((du.total_bytes, du.file_count), (data.len() as u64, 1));
    let du = cluster.client_as(3, Some("root")).fs().du("/", 0).unwrap();
    assert_eq!(du.total_bytes, (data.len() + notes.len()) as u64);
    assert_eq!(du.file_count, 2);
}

/// BUG: a root client on node 1 without `--as` adds a user on node 1 only. Its links
/// to the other nodes act as the network default user `remote` (client.rs
/// `ensure_link` passes `options.act_as`, which is `None`), so the copies of the
/// replicated `useradd` sent to nodes 2 and 3 are refused with PermissionDenied, and
/// `Client::collect_into_stash` drops those shadow completions unseen. Fix: give
/// network links the identity the home node welcomed (e.g. the local user name when
/// `act_as` is `None`), and fail (or report) a broadcast whose shadow copies fail.
#[test]
fn useradd_by_local_root_reaches_every_node() {
    let cluster = Cluster::start("cl-useradd");
    let mut root = cluster.client(1);
    let name = user_on(&root, 3);
    root.fs().useradd(&name).expect("useradd as local root");
    for p in 0..PARTITIONS {
        let got = root.call(tabos_procs::fs::ids::USER_GET, p, &args::user(&name));
        assert!(got.is_ok(), "user row on partition {p}: {got:?}");
    }
    let mut user = cluster.client_as(1, Some(&name));
    let path = format!("/{name}/f");
    user.fs()
        .create(&path, false)
        .expect("create in a home on node 3");
}

#[test]
fn scheduling_on_every_partition() {
    let cluster = Cluster::start("cl-sched");
    let mut c = cluster.client(1);
    for p in 0..PARTITIONS {
        assert_eq!(c.worker_add(p, 100 + u64::from(p), 1), Ok(0));
    }
    let mut running = Vec::new();
    for p in 0..PARTITIONS {
        let s = c.sched_submit(Policy::Fifo, Some(p)).expect("fifo");
        let worker_id = 100 + u64::from(p);
        assert_eq!(
            (s.partition, s.placement),
            (p, Placement::Assigned { worker_id })
        );
        running.push(s);
    }
    for policy in [Policy::Fifo, Policy::LeastLoaded] {
        assert_eq!(
            c.sched_submit(policy, None),
            Err(Error::Status(Status::NoCapacity))
        );
    }
    // Locality queues on node 3's full partition; a completion there hands over.
    let queued = c.sched_submit(Policy::Locality, Some(3)).expect("locality");
    assert_eq!((queued.partition, queued.placement), (3, Placement::Queued));
    let last = running.pop().expect("the task on partition 3");
    assert_eq!(
        c.sched_complete(last.task_id, 3),
        Ok(Completed::HandedOver {
            worker_id: 103,
            next_task_id: queued.task_id
        })
    );
    running.push(queued);
    for s in running {
        let worker_id = 100 + u64::from(s.partition);
        assert_eq!(
            c.sched_complete(s.task_id, s.partition),
            Ok(Completed::Freed { worker_id })
        );
    }
    // Least-loaded from a client on node 2, home on each partition in turn.
    let mut c2 = cluster.client(2);
    for p in 0..PARTITIONS {
        let s = c2
            .sched_submit(Policy::LeastLoaded, Some(p))
            .expect("least loaded");
        assert_eq!(s.partition, p);
        let info = c2.sched_task(s.task_id, p).unwrap().expect("the task");
        assert_eq!(info.worker_id, Some(100 + u64::from(p)));
        assert!(matches!(
            c2.sched_complete(s.task_id, p),
            Ok(Completed::Freed { .. })
        ));
    }
    for p in 0..PARTITIONS {
        let listing = c.sched_list(p).unwrap();
        assert_eq!(listing.workers.len(), 1);
        assert_eq!(listing.workers[0].unused_capacity, 1);
        assert!(listing.tasks.is_empty());
    }
}

#[test]
fn a_killed_node_fails_fast_and_comes_back() {
    let mut cluster = Cluster::start("cl-kill");
    let mut c1 = cluster.client(1);
    for p in 0..PARTITIONS {
        c1.null(p).expect("every node answers");
    }
    let (k0, k3) = (key_on(&c1, "a", 0), key_on(&c1, "b", 3));
    c1.kv_put(&k0, b"zero").unwrap();
    c1.kv_put(&k3, b"three").unwrap();
    // Calls in flight to node 2: receives parked on both its partitions, and echoes.
    let mut parked = Vec::new();
    let mut to_node_2 = Vec::new();
    for p in [1, 2] {
        let to = mailboxes_on(&c1, p, 1, 1)[0];
        parked.push(
            c1.submit(ids::ipc::RECV, p, &recv_args(to, 50_000))
                .unwrap(),
        );
        for i in 0..50u32 {
            to_node_2.push(c1.submit(ids::ECHO, p, &i.to_le_bytes()).unwrap());
        }
    }
    c1.flush();
    std::thread::sleep(Duration::from_millis(300));
    cluster.node(2).kill();
    let (mut c1, done) = within("calls in flight to a dead node", HANG_TIMEOUT, move || {
        let mut done = Vec::new();
        while c1.in_flight() > 0 {
            c1.wait(&mut done, 1).expect("wait");
        }
        (c1, done)
    });
    assert_eq!(done.len(), parked.len() + to_node_2.len());
    for c in &done {
        assert!(c.partition == 1 || c.partition == 2, "{c:?}");
        let lost = c.status_code == Status::NodeUnavailable as u32;
        if parked.contains(&c.request_id) {
            assert!(lost, "a parked receive on the dead node: {c:?}");
        } else {
            assert!(lost || c.status_code == 0, "{c:?}");
        }
    }
    // Calls to node 2 fail at once, naming it; the other nodes serve on.
    for p in [1, 2] {
        for attempt in 0..3 {
            match c1.null(p) {
                Err(Error::Transport(why)) => assert!(why.contains("node 2"), "{why}"),
                other => panic!("null on partition {p} (try {attempt}) of a dead node: {other:?}"),
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    let k1 = key_on(&c1, "c", 1);
    assert!(matches!(c1.kv_put(&k1, b"x"), Err(Error::Transport(why)) if why.contains("node 2")));
    assert_eq!(c1.kv_get(&k0), Ok(Some(b"zero".to_vec())));
    assert_eq!(c1.kv_get(&k3), Ok(Some(b"three".to_vec())));
    let mut c3 = cluster.client(3);
    c3.null(3).expect("node 3 serves its own clients");
    c3.null(0).expect("node 3's client reaches node 1");
    let status = cluster.tabos(&["status"]);
    let out = text(&status.stdout);
    assert_eq!(status.status.code(), Some(1), "{out}");
    assert!(out.contains("node 2: UNREACHABLE"), "{out}");
    assert!(
        out.contains("node 1: reachable") && out.contains("node 3: reachable"),
        "{out}"
    );
    // Restarted with the same command, node 2 is reached again by the same client.
    let file = cluster.file.clone();
    cluster.node(2).start(&file);
    poll_until(
        "the client reaches node 2 again",
        Duration::from_secs(30),
        || (c1.null(1).is_ok() && c1.null(2).is_ok()).then_some(()),
    );
    c1.kv_put(&k1, b"one again").expect("kv_put on node 2");
    assert_eq!(c3.kv_get(&k1), Ok(Some(b"one again".to_vec())));
    let status = cluster.tabos(&["status"]);
    assert!(status.status.success(), "{}", text(&status.stdout));
}

/// A port free on 127.0.0.1, .2 and .3 alike (local-cluster.sh gives every node one).
fn port_free_everywhere() -> u16 {
    poll_until("a port free on three addresses", HANG_TIMEOUT, || {
        let port = common::free_port(LAYOUT[0].1);
        let free = LAYOUT
            .iter()
            .all(|(_, ip, _)| std::net::TcpListener::bind((*ip, port)).is_ok());
        free.then_some(port)
    })
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

/// Runs `local-cluster.sh stop` on drop, and kills what it started if that fails.
struct ScriptCluster {
    dir: PathBuf,
    port: u16,
    pids: Vec<u32>,
    _base: TestDir,
}

impl ScriptCluster {
    fn run(&self, args: &[&str]) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/local-cluster.sh");
        let mut command = Command::new("bash");
        command
            .arg(script)
            .args(args)
            .env("TABOS_CLUSTER_DIR", &self.dir)
            .env("TABOS_CLUSTER_PORT", self.port.to_string())
            .env("TABOSD", tabosd_exe())
            .env("TABOS", common::tabos_cli())
            .env_remove("TABOS_SECRET_FILE")
            .env_remove("TABOS_CONNECT");
        run_output(command)
    }
}

impl Drop for ScriptCluster {
    fn drop(&mut self) {
        if self.dir.exists() {
            let _ = self.run(&["stop"]);
        }
        for pid in &self.pids {
            if !gone(*pid) {
                send_signal(*pid, "KILL");
            }
        }
    }
}

#[test]
fn the_local_cluster_script_starts_reports_and_stops() {
    let base = TestDir::new("cl-script");
    let mut cluster = ScriptCluster {
        dir: base.path.join("c"),
        port: port_free_everywhere(),
        pids: Vec::new(),
        _base: base,
    };
    let started = cluster.run(&["start", "3"]);
    for i in 1..=3 {
        if let Ok(pid) = std::fs::read_to_string(cluster.dir.join(format!("node-{i}/pid"))) {
            cluster.pids.push(pid.trim().parse().expect("a pid"));
        }
    }
    assert!(
        started.status.success(),
        "start: {}{}",
        text(&started.stdout),
        text(&started.stderr)
    );
    assert!(text(&started.stdout).contains("3 nodes up"));
    assert_eq!(cluster.pids.len(), 3);
    let status = cluster.run(&["status"]);
    let out = text(&status.stdout);
    assert!(
        status.status.success(),
        "status: {out}{}",
        text(&status.stderr)
    );
    for i in 1..=3 {
        let line = format!("node {i}: reachable at 127.0.0.{i}:{}", cluster.port);
        assert!(out.contains(&line), "{out}");
    }
    // A client of node 2's socket reaches all three nodes.
    let options = ConnectOptions {
        act_as: None,
        secret_file: Some(cluster.dir.join("secret")),
    };
    let mut client = Client::connect_with(cluster.dir.join("node-2/tabos.sock"), &options)
        .expect("a client of the scripted cluster");
    assert_eq!((client.node_id(), client.partition_count()), (2, 3));
    for p in 0..3 {
        client.null(p).expect("null on every node");
    }
    drop(client);
    let stopped = cluster.run(&["stop"]);
    assert!(stopped.status.success(), "stop: {}", text(&stopped.stderr));
    assert!(text(&stopped.stdout).contains("stopped"));
    assert!(!cluster.dir.exists(), "stop removes the cluster directory");
    for pid in &cluster.pids {
        poll_until("a stopped node exits", HANG_TIMEOUT, || {
            gone(*pid).then_some(())
        });
    }
    let after = cluster.run(&["status"]);
    assert_eq!(after.status.code(), Some(1));
    assert!(
        text(&after.stdout).contains("not running"),
        "{}",
        text(&after.stdout)
    );
}

/// `SELECT` through `Client::query` on a three-node cluster returns what the service
/// APIs return for the same data, and a query naming one partition key reads only
/// the partition that owns it.
#[test]
fn sql_across_nodes_matches_the_service_apis() {
    use tabos_client::sql::Value;
    let cluster = Cluster::start("cl-sql");
    let mut root = cluster.client_as(1, Some("root"));
    // Users at home on node 1 (partition 0), node 2 and node 3 (partition 3).
    let users = [user_on(&root, 0), user_on(&root, 2), user_on(&root, 3)];
    let mut sizes: Vec<(String, u64)> = Vec::new();
    for (u, user) in users.iter().enumerate() {
        root.fs().useradd(user).expect("useradd");
        let mut c = cluster.client_as(1, Some(user));
        c.fs().mkdir(&format!("/{user}/sub")).expect("mkdir");
        for i in 0..6u64 {
            let dir = if i % 2 == 0 { "" } else { "/sub" };
            let path = format!("/{user}{dir}/f{i}");
            let len = 100 + 1000 * i + 37 * u as u64;
            c.fs().create(&path, false).expect("create");
            c.fs()
                .write_at(&path, 0, &vec![b'x'; len as usize])
                .expect("write");
            sizes.push((path, len));
        }
    }
    let mut c = cluster.client(2);
    let int = |v: &Value| match v {
        Value::Integer(i) => *i,
        other => panic!("not an integer: {other:?}"),
    };

    // Table 2's conditional size aggregate, for each user, against `du`; the home
    // partition comes from the user table, so only that partition is scanned.
    for user in &users {
        let sql = format!(
            "SELECT COALESCE(SUM(size_bytes), 0), COUNT(*) FROM fs_directory \
             WHERE _partition = (SELECT home_partition FROM fs_user WHERE user_name = '{user}') \
             AND (d_name = '/{user}' OR d_name LIKE '/{user}/%') \
             AND content_type <> 'Dir' AND size_bytes >= 2000"
        );
        let got = c.query(&sql).unwrap_or_else(|e| panic!("{e}"));
        let du = cluster
            .client_as(3, Some(user))
            .fs()
            .du(&format!("/{user}"), 2000)
            .unwrap();
        assert_eq!(
            (int(&got.rows[0][0]) as u64, int(&got.rows[0][1]) as u64),
            (du.total_bytes, du.file_count),
            "{user}"
        );
        let home = root.fs().user(user).unwrap().home_partition;
        let scanned: Vec<u32> = got.scans.partitions.iter().copied().collect();
        assert!(scanned.contains(&home) && scanned.len() <= 2, "{scanned:?}");
        assert!(
            scanned.iter().all(|&p| p == home || p == 0),
            "only the home partition (and partition 0 for the replicated user table): {scanned:?}"
        );
    }
    // A path prefix alone also narrows the scan to the user's home partition.
    let far = &users[2];
    let got = c
        .query(&format!(
            "SELECT content FROM fs_directory WHERE d_name LIKE '/{far}/%'"
        ))
        .unwrap();
    assert_eq!(
        got.scans.partitions.iter().copied().collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(got.rows.len(), 3, "{:?}", got.rows);

    // The ten largest files in the cluster.
    let got = c
        .query(
            "SELECT d_name || '/' || content, size_bytes FROM fs_directory \
             WHERE content_type <> 'Dir' ORDER BY size_bytes DESC LIMIT 10",
        )
        .unwrap();
    let mut want = sizes.clone();
    want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    want.truncate(10);
    let got_rows: Vec<(String, u64)> = got
        .rows
        .iter()
        .map(|r| match &r[0] {
            Value::Text(p) => (p.clone(), int(&r[1]) as u64),
            other => panic!("path {other:?}"),
        })
        .collect();
    assert_eq!(got_rows, want);
    for (path, len) in &got_rows {
        let user = path.split('/').nth(1).unwrap();
        let stat = cluster
            .client_as(1, Some(user))
            .fs()
            .metadata(path)
            .unwrap();
        assert_eq!(stat.size_bytes, *len, "{path}");
    }

    // Key-value rows on every node.
    let mut keys = Vec::new();
    for p in 0..PARTITIONS {
        let key = key_on(&root, "sql", p);
        root.kv_put(&key, format!("v{p}").as_bytes()).unwrap();
        keys.push(key);
    }
    let got = c
        .query("SELECT key, value, _partition FROM kv ORDER BY key")
        .unwrap();
    assert_eq!(got.rows.len(), keys.len());
    for row in &got.rows {
        let Value::Text(key) = &row[0] else {
            panic!("{row:?}")
        };
        let value = root.kv_get(key.as_bytes()).unwrap().unwrap();
        assert_eq!(row[1], Value::Text(String::from_utf8(value).unwrap()));
        assert_eq!(int(&row[2]) as u32, root.partition_for_key(key.as_bytes()));
    }
    let one = c
        .query(&format!(
            "SELECT value FROM kv WHERE key = '{}'",
            text(&keys[3])
        ))
        .unwrap();
    assert_eq!(one.rows, [[Value::Text("v3".into())]]);
    assert_eq!(
        one.scans.partitions.iter().copied().collect::<Vec<_>>(),
        [3]
    );

    // All in-flight messages for a receiver on node 3, in order, then received.
    let receiver = mailboxes_on(&root, 3, 5000, 1)[0];
    for i in 0..5u64 {
        root.send(100 + i, receiver, format!("m{i}").as_bytes())
            .unwrap();
    }
    let got = c
        .query(&format!(
            "SELECT sender_id, message_id, data FROM ipc_message \
             WHERE receiver_id = {receiver} ORDER BY message_id"
        ))
        .unwrap();
    assert_eq!(
        got.scans.partitions.iter().copied().collect::<Vec<_>>(),
        [3]
    );
    assert_eq!(got.rows.len(), 5);
    for row in &got.rows {
        let m = root.recv(receiver, LONG).unwrap();
        assert_eq!(int(&row[0]) as u64, m.sender_id);
        assert_eq!(int(&row[1]) as u64, m.message_id);
        assert_eq!(row[2], Value::Text(text(&m.data)));
    }

    // Tasks joined to their workers: tasks have no owner or group column, so the
    // "group" is a set of workers (those of capacity 2).
    for p in 0..PARTITIONS {
        root.worker_add(p, 900 + u64::from(p), 1 + p % 2).unwrap();
    }
    for p in 0..PARTITIONS {
        root.sched_submit(Policy::Locality, Some(p)).unwrap();
    }
    let got = c
        .query(
            "SELECT t.task_id, w.worker_id, t._partition FROM sched_task t \
             JOIN sched_worker w ON t.worker_id = w.worker_id AND t._partition = w._partition \
             WHERE w.capacity = 2 ORDER BY t.task_id",
        )
        .unwrap();
    let mut want = Vec::new();
    for p in 0..PARTITIONS {
        let listing = root.sched_list(p).unwrap();
        for t in listing.tasks {
            let w = listing
                .workers
                .iter()
                .find(|w| Some(w.worker_id) == t.worker_id);
            if w.is_some_and(|w| w.capacity == 2) {
                want.push((t.task_id as i64, t.worker_id.unwrap() as i64, i64::from(p)));
            }
        }
    }
    want.sort();
    let got: Vec<(i64, i64, i64)> = got
        .rows
        .iter()
        .map(|r| (int(&r[0]), int(&r[1]), int(&r[2])))
        .collect();
    assert_eq!(got, want);
    assert_eq!(got.len(), 2, "partitions 1 and 3 have capacity-2 workers");

    // System tables see every node.
    let nodes = c
        .query("SELECT node, reachable FROM sys_nodes ORDER BY node")
        .unwrap();
    assert_eq!(
        nodes.rows,
        (1..=3)
            .map(|n| vec![Value::Integer(n), Value::Integer(1)])
            .collect::<Vec<_>>()
    );
    let parts = c
        .query("SELECT partition, node FROM sys_partitions ORDER BY partition")
        .unwrap();
    let want: Vec<Vec<Value>> = (0..PARTITIONS)
        .map(|p| vec![Value::Integer(p.into()), Value::Integer(node_of(p).into())])
        .collect();
    assert_eq!(parts.rows, want);
    let scans = c
        .query("SELECT SUM(calls) FROM sys_procedures WHERE name = 'sql_scan'")
        .unwrap();
    assert!(int(&scans.rows[0][0]) > 0);
}
