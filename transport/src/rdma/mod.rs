//! Frames over RDMA verbs (cargo feature `rdma`, through `rdma-sys`).
//!
//! The same frames as every other transport (a 32-byte [`crate::wire::Header`], then the
//! payload) travel as one RDMA SEND each, over a reliable connected (RC) queue pair,
//! into receive buffers the receiver posted in advance.
//!
//! - [`buffers`]: one contiguous allocation per connection split into fixed slots (the
//!   largest frame, rounded up), with the pure bookkeeping of which slot is posted,
//!   filled, free or in flight, and the `wr_id` encoding (slot index and a kind bit).
//! - [`qp`]: the queue-pair state machine RESET → INIT → RTR → RTS as a plain type that
//!   validates each transition's attributes before `ibv_modify_qp` sees them, and the
//!   [`qp::QpEndpoint`] both sides exchange to connect.
//! - [`frame`]: validation of a received message, exactly as the ring consumer does.
//! - [`conn`]: [`RdmaConnection`], which puts the pieces on a device.
//! - [`stream`]: a byte stream over a connection (messages of at most a slot, cut
//!   anywhere), with the set-up both ends of a tabos network connection follow.
//! - [`driver`]: tabosd's RDMA stream server, the same [`crate::net::server`] contract
//!   as the io_uring and poll drivers, so the network gateway runs unchanged over it.
//! - `verbs` (private): owners of the verbs objects that free them on drop.
//!
//! # Connection set-up over TCP, not rdma_cm
//!
//! The two sides exchange their [`qp::QpEndpoint`] (queue-pair number, packet sequence
//! number, LID, GID, receive-slot shape) over the TCP connection that already carries
//! the network handshake ([`qp::exchange_endpoints`]), then move their queue pairs to
//! RTS. That reuses the TCP connection and needs no second listener, no rdma_cm event
//! channel and no IP-over-RDMA address resolution. tabosd's driver exchanges endpoints
//! first and runs the network handshake itself over RDMA; the TCP connection then only
//! reports that the peer is gone ([`stream`]).
//!
//! # What the peer can reach
//!
//! Each connection has its own protection domain and registers its buffers with
//! `IBV_ACCESS_LOCAL_WRITE` only; its queue pair grants no remote access. The peer can
//! only SEND into the receive buffers this side posted on that connection: no remote key
//! is ever handed out, and one that leaked would be useless (no remote access, another
//! protection domain). Every received message is copied out of its slot once and
//! validated from the copy ([`frame::decode_frame`]).
//!
//! # Without a device
//!
//! [`devices`] returns an empty list on a host without an RDMA NIC or soft-RoCE (or
//! whose kernel lacks RDMA support); [`require_device`] turns that into
//! [`RdmaError::NoDevice`], whose message points to `scripts/setup-softroce.sh`.
//! The bookkeeping types ([`buffers`], [`qp`], [`frame`]) run anywhere.

pub mod buffers;
pub mod conn;
pub mod driver;
pub mod frame;
pub mod qp;
pub mod stream;
mod verbs;

pub use buffers::{SlotBook, SlotError, SlotLayout, SlotPool, WrId, WrKind};
pub use conn::{RdmaConfig, RdmaConnection, ENV_DEVICE, ENV_GID_INDEX, ENV_PORT};
pub use driver::RdmaDriverOptions;
pub use frame::{decode_frame, FrameError};
pub use qp::{exchange_endpoints, EndpointError, PathMtu, QpEndpoint, QpError, QpState};
pub use stream::{dial, send_stream, stream_config, MessageSink, READY_BYTE};

use std::ffi::CStr;

/// An RDMA device the verbs library reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Kernel name of the device, e.g. `mlx5_0` or `rxe0`.
    pub name: String,
    /// Node GUID in host byte order (zero for soft-RoCE devices without one).
    pub guid: u64,
}

/// Why an RDMA operation failed. The set-up errors ([`RdmaError::NoDevice`],
/// [`RdmaError::DeviceNotFound`], [`RdmaError::Device`]) say what to change;
/// [`RdmaError::PayloadTooLarge`] sent nothing and leaves the connection usable; any
/// other error on a connection means it is unusable: drop it.
#[derive(Debug)]
pub enum RdmaError {
    /// The host has no RDMA device.
    NoDevice,
    /// A device was asked for by name and is not there.
    DeviceNotFound {
        /// The requested name.
        name: String,
        /// The devices that exist.
        available: Vec<String>,
    },
    /// The device or its port cannot be used as configured.
    Device {
        /// Device name.
        device: String,
        /// What is wrong, and what to change.
        problem: String,
    },
    /// A verbs call failed.
    Verbs {
        /// The call, e.g. `ibv_create_qp`.
        op: &'static str,
        /// The error it reported.
        source: std::io::Error,
    },
    /// A work request completed with an error status; the queue pair is now in the
    /// error state.
    Completion {
        /// Whether a send or a receive failed.
        kind: WrKind,
        /// The `ibv_wc_status` code.
        status: u32,
        /// The verbs library's description of `status`.
        description: String,
    },
    /// A queue-pair transition was refused before reaching the device.
    Qp(QpError),
    /// The peer's connection details do not decode.
    Endpoint(EndpointError),
    /// The exchange of connection details over the TCP connection failed.
    Exchange(std::io::Error),
    /// The peer sent a malformed frame.
    Frame(FrameError),
    /// Slot bookkeeping found an impossible state (a driver or programming error).
    Slot(SlotError),
    /// A frame to send is larger than this connection allows; nothing was sent.
    PayloadTooLarge {
        /// Payload bytes of the frame.
        payload_bytes: usize,
        /// The most the peer's receive slots hold.
        max_payload_bytes: usize,
    },
    /// The connection is not in RTS (not yet connected, or broken by an earlier error).
    NotConnected(QpState),
    /// A stream message to send is larger than this connection allows; nothing was
    /// sent.
    MessageTooLarge {
        /// Bytes of the message.
        message_bytes: usize,
        /// The most one message may hold (our send slots, the peer's receive slots).
        max_message_bytes: usize,
    },
    /// An environment variable that configures RDMA does not parse.
    Env {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it should hold.
        expected: &'static str,
    },
}

impl std::fmt::Display for RdmaError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RdmaError::NoDevice => write!(
                f,
                "no RDMA device found (ibv_get_device_list returned none): this host has no \
                 RDMA NIC or soft-RoCE; see scripts/setup-softroce.sh"
            ),
            RdmaError::DeviceNotFound { name, available } => write!(
                f,
                "no RDMA device named `{name}` (devices: {})",
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(", ")
                }
            ),
            RdmaError::Device { device, problem } => {
                write!(f, "RDMA device {device}: {problem}")
            }
            RdmaError::Verbs { op, source } => write!(f, "{op} failed: {source}"),
            RdmaError::Completion {
                kind,
                status,
                description,
            } => write!(
                f,
                "RDMA {kind} completed with error: {description} (ibv_wc_status {status})"
            ),
            RdmaError::Qp(e) => write!(f, "queue pair: {e}"),
            RdmaError::Endpoint(e) => write!(f, "peer's RDMA endpoint: {e}"),
            RdmaError::Exchange(e) => {
                write!(f, "exchanging RDMA endpoints over TCP failed: {e}")
            }
            RdmaError::Frame(e) => write!(f, "peer sent a bad frame over RDMA: {e}"),
            RdmaError::Slot(e) => write!(f, "RDMA buffer bookkeeping: {e}"),
            RdmaError::PayloadTooLarge {
                payload_bytes,
                max_payload_bytes,
            } => write!(
                f,
                "payload of {payload_bytes} bytes exceeds this RDMA connection's maximum of \
                 {max_payload_bytes} bytes"
            ),
            RdmaError::NotConnected(state) => {
                write!(f, "RDMA connection not usable: queue pair is in {state:?}")
            }
            RdmaError::MessageTooLarge {
                message_bytes,
                max_message_bytes,
            } => write!(
                f,
                "message of {message_bytes} bytes exceeds this RDMA connection's maximum of \
                 {max_message_bytes} bytes"
            ),
            RdmaError::Env {
                var,
                value,
                expected,
            } => write!(f, "{var}={value:?}: expected {expected}"),
        }
    }
}

impl std::error::Error for RdmaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RdmaError::Verbs { source, .. } => Some(source),
            RdmaError::Exchange(e) => Some(e),
            RdmaError::Qp(e) => Some(e),
            RdmaError::Endpoint(e) => Some(e),
            RdmaError::Frame(e) => Some(e),
            RdmaError::Slot(e) => Some(e),
            _ => None,
        }
    }
}

impl From<QpError> for RdmaError {
    fn from(e: QpError) -> RdmaError {
        RdmaError::Qp(e)
    }
}

impl From<EndpointError> for RdmaError {
    fn from(e: EndpointError) -> RdmaError {
        RdmaError::Endpoint(e)
    }
}

impl From<FrameError> for RdmaError {
    fn from(e: FrameError) -> RdmaError {
        RdmaError::Frame(e)
    }
}

impl From<SlotError> for RdmaError {
    fn from(e: SlotError) -> RdmaError {
        RdmaError::Slot(e)
    }
}

/// The RDMA devices of this host; empty (not an error) when there are none or the
/// kernel has no RDMA support at all.
pub fn devices() -> Result<Vec<DeviceInfo>, RdmaError> {
    let list = verbs::DeviceList::get()?;
    let mut out = Vec::with_capacity(list.len());
    for i in 0..list.len() {
        out.push(list.info(i));
    }
    debug_assert_eq!(out.len(), list.len());
    Ok(out)
}

/// The first RDMA device, or [`RdmaError::NoDevice`]. A server asked to serve over RDMA
/// calls this at start-up to fail with a clear message on a host without one.
pub fn require_device() -> Result<DeviceInfo, RdmaError> {
    devices()?.into_iter().next().ok_or(RdmaError::NoDevice)
}

/// A C string from the verbs library as an owned Rust string (lossy; names are ASCII).
fn c_string(text: &CStr) -> String {
    text.to_string_lossy().into_owned()
}
