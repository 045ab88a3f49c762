//! tabosd, the tabos server: one pinned thread per partition in a shared-nothing node,
//! serving compiled procedures to local tasks over shared-memory rings.
//!
//! - [`config`]: flags and their validation.
//! - [`partition`]: the partition thread and its event loop.
//! - [`listener`]: the Unix-socket listener, handshake and client liveness.
//! - [`inbox`], [`port`], [`broadcast`]: how threads reach a partition, a client's
//!   rings on one partition, and ordered writes to replicated tables.

pub mod broadcast;
pub mod cluster;
pub mod config;
pub mod counters;
pub mod durable;
pub mod inbox;
pub mod listener;
pub mod net;
pub mod partition;
pub mod port;
pub mod recovery;

use config::Resolved;
use inbox::Inbox;
use listener::Listener;
use partition::{NodeShared, Partition};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tabos_transport::doorbell::EventFd;

/// A running node.
#[derive(Debug)]
pub struct Server {
    /// The data directory's lock, released when the server is dropped.
    _lock: Option<tabos_durability::DirLock>,
    socket_path: PathBuf,
    stop: Arc<EventFd>,
    listener: Option<std::thread::JoinHandle<()>>,
    partitions: Vec<std::thread::JoinHandle<()>>,
    net: Option<std::thread::JoinHandle<()>>,
    net_stop: Arc<EventFd>,
    net_addr: Option<std::net::SocketAddr>,
}

/// Bind the socket, refusing to steal it from a live server; a stale file is removed.
fn bind_socket(path: &Path) -> Result<UnixListener, String> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(format!(
                "{} exists and is not a socket; remove it or pick another --socket",
                path.display()
            ));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(format!(
                "{} is served by a running tabosd; stop it or pick another --socket",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    UnixListener::bind(path).map_err(|e| format!("cannot bind {}: {e}", path.display()))
}

impl Server {
    /// Start the node: partitions, then the listener. `signals`, if given, is a
    /// signalfd whose readiness starts shutdown.
    pub fn start(resolved: &Resolved, signals: Option<OwnedFd>) -> Result<Server, String> {
        let config = &resolved.config;
        let registry = tabos_procs::registry();
        let listener = bind_socket(&config.socket)?;
        // Recover before serving (the listener starts below): nobody sees a state the
        // log has not caught up with. Clients that connect meanwhile wait.
        let recovered = match recovery::recover_node(resolved, &registry) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&config.socket);
                return Err(e);
            }
        };
        assert!(
            resolved.partition_base + resolved.partition_count <= resolved.global_partition_count
        );
        let mut inboxes = Vec::new();
        for _ in 0..resolved.partition_count {
            inboxes.push(Arc::new(Inbox::new().map_err(|e| format!("eventfd: {e}"))?));
        }
        let node = Arc::new(NodeShared {
            inboxes,
            coordinator: Default::default(),
            registry,
            node_id: config.node_id,
            partition_base: resolved.partition_base,
            global_partition_count: resolved.global_partition_count,
            map: resolved.map.clone(),
            max_payload_bytes: config.max_payload_bytes as usize,
            spin: Duration::from_micros(config.spin_us),
        });
        let recovery::Recovered {
            dbs,
            durables,
            lock,
        } = recovered;
        let mut partitions = Vec::new();
        let states = dbs.into_iter().zip(durables);
        for ((id, core), (db, durable)) in resolved.cores.iter().copied().enumerate().zip(states) {
            let node = node.clone();
            let handle = std::thread::Builder::new()
                .name(format!("partition-{id}"))
                .spawn(move || Partition::new(id as u32, core, db, durable, node).run())
                .map_err(|e| format!("cannot start partition thread: {e}"))?;
            partitions.push(handle);
        }
        let net_stop = Arc::new(EventFd::new().map_err(|e| format!("eventfd: {e}"))?);
        let mut net = None;
        let mut net_addr = None;
        if let Some(listen) = config.listen {
            let path = config
                .secret_file
                .as_ref()
                .expect("checked by Config::resolve");
            let secret = tabos_transport::net::read_secret_file(path)?;
            let (handle, bound) = net::start(
                listen,
                secret,
                config.net,
                node.clone(),
                resolved.shape.ring_bytes,
                net_stop.clone(),
            )?;
            net = Some(handle);
            net_addr = Some(bound);
        }
        let stop = Arc::new(EventFd::new().map_err(|e| format!("eventfd: {e}"))?);
        let listener = Listener::new(
            listener,
            stop.clone(),
            signals,
            node,
            resolved.shape,
            config.clients_max,
        )
        .map_err(|e| format!("listener: {e}"))?;
        let listener = std::thread::Builder::new()
            .name("listener".into())
            .spawn(move || listener.run())
            .map_err(|e| format!("cannot start listener thread: {e}"))?;
        Ok(Server {
            _lock: lock,
            socket_path: config.socket.clone(),
            stop,
            listener: Some(listener),
            partitions,
            net,
            net_stop,
            net_addr,
        })
    }

    /// Ask the node to stop (as SIGTERM does).
    pub fn request_stop(&self) {
        self.stop.notify();
    }

    /// Wait until the node has stopped: in-flight calls answered, socket removed.
    pub fn join(mut self) {
        if let Some(listener) = self.listener.take() {
            let _ = listener.join();
        }
        let _ = std::fs::remove_file(&self.socket_path);
        for partition in self.partitions.drain(..) {
            let _ = partition.join();
        }
        // Partitions have answered what they took; the network thread sends those
        // replies on, then closes every connection.
        self.net_stop.notify();
        if let Some(net) = self.net.take() {
            let _ = net.join();
        }
    }

    /// The TCP address remote clients connect to, if the node listens.
    pub fn net_addr(&self) -> Option<std::net::SocketAddr> {
        self.net_addr
    }
}
