//! Remote calls: the node's TCP listener and its network thread.
//!
//! Accept, receive and send go through io_uring ([`tabos_transport::net::uring`]);
//! when io_uring cannot be set up (the `kernel.io_uring_disabled` sysctl, a seccomp
//! filter) the node falls back to non-blocking sockets and `poll(2)`
//! ([`tabos_transport::net::poll`]) and says so in one log line. With `--net rdma`
//! (a build with the `rdma` feature, on a host with an RDMA device) connections are
//! still accepted over TCP, but the handshake and every frame travel as RDMA SEND/RECV
//! ([`tabos_transport::rdma::driver`]); the device comes from `TABOS_RDMA_DEVICE`,
//! `TABOS_RDMA_PORT` and `TABOS_RDMA_GID_INDEX`. All three drive the same
//! [`gateway::Gateway`], which feeds the partitions' queues.

pub mod gateway;

use crate::partition::NodeShared;
use gateway::Gateway;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
use tabos_transport::doorbell::EventFd;
use tabos_transport::net::{poll, uring};

/// How the network is served (`--net`, or `net` of a node in the cluster file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
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
        NetMode::Rdma => {
            check_rdma()?;
            NetMode::Rdma
        }
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
                NetMode::Rdma => run_rdma(&listener, &shared.doorbell, &stop, &mut gateway, spin),
                NetMode::Socket => poll::run(
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

/// Check that `--net rdma` can run here: the build has RDMA support, the host an
/// RDMA device (the one `TABOS_RDMA_DEVICE` names, if set) whose port is up. The error
/// says what is missing.
pub fn check_rdma() -> Result<(), String> {
    #[cfg(feature = "rdma")]
    {
        use tabos_transport::rdma::{require_device, RdmaConnection};
        let options = rdma_options()?;
        require_device().map_err(|e| format!("--net rdma: {e}"))?;
        // One connection's resources, created and dropped: finds a missing device
        // name, a port that is down, an empty GID or too little locked memory at
        // start-up rather than at the first client.
        RdmaConnection::create(&options.rdma)
            .map(drop)
            .map_err(|e| format!("--net rdma: {e}"))
    }
    #[cfg(not(feature = "rdma"))]
    {
        Err("--net rdma: this tabosd was built without RDMA support; run scripts/install-rdma-deps.sh and rebuild with `cargo build -p tabos-server --features rdma`".into())
    }
}

/// The RDMA driver's settings: stream-shaped connections on the device the
/// environment names.
#[cfg(feature = "rdma")]
fn rdma_options() -> Result<tabos_transport::rdma::RdmaDriverOptions, String> {
    let rdma = tabos_transport::rdma::stream_config()
        .with_env()
        .map_err(|e| format!("--net rdma: {e}"))?;
    Ok(tabos_transport::rdma::RdmaDriverOptions {
        rdma,
        out_bytes_max: OUT_BYTES_MAX,
        ..Default::default()
    })
}

/// Serve over RDMA verbs (checked by [`check_rdma`] before the thread starts).
#[cfg(feature = "rdma")]
fn run_rdma(
    listener: &TcpListener,
    wake: &EventFd,
    stop: &EventFd,
    gateway: &mut Gateway,
    spin: Duration,
) -> std::io::Result<()> {
    let options = tabos_transport::rdma::RdmaDriverOptions {
        spin,
        ..rdma_options().map_err(std::io::Error::other)?
    };
    tabos_transport::rdma::driver::run(listener, wake, stop, gateway, options)
}

/// Without the `rdma` feature [`check_rdma`] refuses `--net rdma` before this is
/// reached; it fails the same way.
#[cfg(not(feature = "rdma"))]
fn run_rdma(
    _listener: &TcpListener,
    _wake: &EventFd,
    _stop: &EventFd,
    _gateway: &mut Gateway,
    _spin: Duration,
) -> std::io::Result<()> {
    Err(std::io::Error::other(
        check_rdma().err().unwrap_or_default(),
    ))
}
