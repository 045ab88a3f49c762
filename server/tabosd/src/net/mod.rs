//! Remote calls: the node's TCP listener and its network thread.
//!
//! Accept, receive and send go through io_uring ([`tabos_transport::net::uring`]);
//! when io_uring cannot be set up (the `kernel.io_uring_disabled` sysctl, a seccomp
//! filter) the node falls back to non-blocking sockets and `poll(2)`
//! ([`tabos_transport::net::poll`]) and says so in one log line. Both drive the same
//! [`gateway::Gateway`], which feeds the partitions' queues.

pub mod gateway;

use crate::partition::NodeShared;
use gateway::Gateway;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tabos_transport::doorbell::EventFd;
use tabos_transport::net::{poll, uring};

/// How the network is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum NetMode {
    /// io_uring (falls back to `socket` when io_uring is unavailable).
    Uring,
    /// Non-blocking sockets and poll(2).
    Socket,
    /// RDMA verbs (needs an RDMA device and a build with the `rdma` feature).
    Rdma,
}

/// Most unsent reply bytes per remote connection before it is dropped as not reading.
const OUT_BYTES_MAX: usize = 256 << 20;

/// Start the network thread serving `listen`. Returns the thread and the address bound.
pub fn start(
    listen: SocketAddr,
    secret: Vec<u8>,
    mode: NetMode,
    node: Arc<NodeShared>,
    ring_bytes: usize,
    stop: Arc<EventFd>,
) -> Result<(std::thread::JoinHandle<()>, SocketAddr), String> {
    let mode = match mode {
        NetMode::Rdma => return Err(rdma_unavailable()),
        NetMode::Socket => NetMode::Socket,
        NetMode::Uring => match uring::probe() {
            Ok(()) => NetMode::Uring,
            Err(e) => {
                eprintln!("tabosd: io_uring unavailable ({e}); serving the network with plain non-blocking sockets");
                NetMode::Socket
            }
        },
    };
    let listener =
        TcpListener::bind(listen).map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("listener address: {e}"))?;
    let spin = node.spin;
    let mut gateway =
        Gateway::attach(node, secret, ring_bytes).map_err(|e| format!("network gateway: {e}"))?;
    let handle = std::thread::Builder::new()
        .name("net".into())
        .spawn(move || {
            let shared = gateway.shared().clone();
            let result = match mode {
                NetMode::Uring => {
                    let options = uring::UringOptions {
                        spin,
                        out_bytes_max: OUT_BYTES_MAX,
                        ..Default::default()
                    };
                    uring::run(&listener, &shared.doorbell, &stop, &mut gateway, options)
                }
                _ => poll::run(
                    &listener,
                    &shared.doorbell,
                    &stop,
                    &mut gateway,
                    spin.max(Duration::from_micros(50)),
                    OUT_BYTES_MAX,
                ),
            };
            if let Err(e) = result {
                eprintln!("tabosd: network thread stopped: {e}");
            }
        })
        .map_err(|e| format!("cannot start the network thread: {e}"))?;
    Ok((handle, bound))
}

/// Check that `--net rdma` can run here: the build has RDMA support and the host an
/// RDMA device. The error says what is missing.
pub fn check_rdma() -> Result<(), String> {
    #[cfg(feature = "rdma")]
    {
        tabos_transport::rdma::require_device()
            .map(|_| ())
            .map_err(|e| format!("--net rdma: {e}"))?;
        Err("--net rdma: an RDMA device is present, but serving over verbs is not wired into tabosd yet; use --net uring".into())
    }
    #[cfg(not(feature = "rdma"))]
    {
        Err("--net rdma: this tabosd was built without RDMA support; run scripts/install-rdma-deps.sh and rebuild with `cargo build -p tabos-server --features rdma`".into())
    }
}

/// Why `--net rdma` cannot run here.
fn rdma_unavailable() -> String {
    check_rdma().err().unwrap_or_default()
}
