//! The life of a reliable connected queue pair, and what two sides exchange to connect.
//!
//! A queue pair moves RESET → INIT → RTR (ready to receive) → RTS (ready to send), and
//! to ERROR (or back to RESET) from anywhere. [`QpStateMachine`] refuses any other move
//! and checks the attributes each move needs, so a bad value (port 0, a 25-bit PSN, a
//! destination with neither LID nor GID) is reported by name before `ibv_modify_qp`
//! turns it into a bare `EINVAL`. [`verbs_attr`] then builds the attribute struct and
//! mask for the verbs call.
//!
//! To connect, both sides send their [`QpEndpoint`] over the TCP connection
//! ([`exchange_endpoints`]) and move to RTR toward the other's endpoint, then to RTS.

use super::RdmaError;
use bytemuck::{Pod, Zeroable};
use rdma_sys::{ibv_mtu, ibv_qp_attr, ibv_qp_attr_mask, ibv_qp_state};
use std::io::{Read, Write};

/// Queue-pair numbers and packet sequence numbers are 24-bit.
pub const QPN_MASK: u32 = 0x00FF_FFFF;
/// Packet sequence numbers are 24-bit.
pub const PSN_MASK: u32 = 0x00FF_FFFF;
/// Magic of a [`QpEndpoint`].
pub const ENDPOINT_MAGIC: u32 = 0x5442_5251; // "TBRQ"
/// Version of the [`QpEndpoint`] layout.
pub const ENDPOINT_VERSION: u32 = 1;
/// Bytes of an encoded [`QpEndpoint`].
pub const ENDPOINT_SIZE: usize = 48;

/// Transport retry timeout exponent: 4.096 µs × 2^14 ≈ 67 ms per try.
pub const TIMEOUT_EXP_DEFAULT: u8 = 14;
/// Transport retries before the queue pair fails (the maximum, 7).
pub const RETRY_COUNT_DEFAULT: u8 = 7;
/// Receiver-not-ready retries: 7 means retry for ever, so a receiver that has not
/// reposted its buffers yet slows the sender down instead of failing the connection.
pub const RNR_RETRY_DEFAULT: u8 = 7;
/// Delay the receiver asks for after a receiver-not-ready NAK: code 12 = 0.64 ms.
pub const MIN_RNR_TIMER_DEFAULT: u8 = 12;
/// Hop limit of the global route header (RoCE v2 may be routed).
const HOP_LIMIT: u8 = 64;

/// A queue pair's state as far as this side has moved it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QpState {
    /// Just created, or reset.
    Reset,
    /// Port and access set; receives may be posted.
    Init,
    /// Ready to receive: connected to its peer.
    Rtr,
    /// Ready to send.
    Rts,
    /// Failed: work requests flush with errors.
    Error,
}

impl QpState {
    /// The matching `ibv_qp_state` value.
    pub fn verbs_state(self) -> ibv_qp_state::Type {
        match self {
            QpState::Reset => ibv_qp_state::IBV_QPS_RESET,
            QpState::Init => ibv_qp_state::IBV_QPS_INIT,
            QpState::Rtr => ibv_qp_state::IBV_QPS_RTR,
            QpState::Rts => ibv_qp_state::IBV_QPS_RTS,
            QpState::Error => ibv_qp_state::IBV_QPS_ERR,
        }
    }
}

/// Path MTU of a connection (the `ibv_mtu` codes).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PathMtu {
    /// 256 bytes.
    Mtu256 = 1,
    /// 512 bytes.
    Mtu512 = 2,
    /// 1024 bytes (soft-RoCE on a 1500-byte Ethernet link).
    Mtu1024 = 3,
    /// 2048 bytes.
    Mtu2048 = 4,
    /// 4096 bytes.
    Mtu4096 = 5,
}

impl PathMtu {
    /// The MTU with `ibv_mtu` code `code`.
    pub fn from_code(code: u32) -> Option<PathMtu> {
        match code {
            1 => Some(PathMtu::Mtu256),
            2 => Some(PathMtu::Mtu512),
            3 => Some(PathMtu::Mtu1024),
            4 => Some(PathMtu::Mtu2048),
            5 => Some(PathMtu::Mtu4096),
            _ => None,
        }
    }

    /// Bytes of payload per packet.
    pub fn bytes(self) -> usize {
        128 << (self as u8)
    }

    fn verbs_mtu(self) -> ibv_mtu::Type {
        ibv_mtu::Type::from(self as u8)
    }
}

/// Attributes of RESET → INIT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitAttrs {
    /// Physical port, from 1.
    pub port_num: u8,
    /// Partition key index (0: the default partition).
    pub pkey_index: u16,
}

/// Attributes of INIT → RTR: where the peer's queue pair is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtrAttrs {
    /// Our physical port, from 1.
    pub port_num: u8,
    /// The path MTU (the smaller of both sides' active MTUs).
    pub path_mtu: PathMtu,
    /// The peer's queue-pair number.
    pub dest_qpn: u32,
    /// The peer's first packet sequence number.
    pub rq_psn: u32,
    /// The peer's LID (InfiniBand; 0 on RoCE).
    pub dest_lid: u16,
    /// The peer's GID; all zero for none (InfiniBand inside one subnet).
    pub dest_gid: [u8; 16],
    /// Index of our own GID to send from (used when `dest_gid` is set).
    pub sgid_index: u8,
    /// Receiver-not-ready delay code (0..=31).
    pub min_rnr_timer: u8,
}

impl RtrAttrs {
    /// Toward `remote`, from our port `port_num` and GID `sgid_index`, whose active MTU
    /// is `local_mtu`.
    pub fn toward(
        remote: &QpEndpoint,
        port_num: u8,
        sgid_index: u8,
        local_mtu: PathMtu,
    ) -> RtrAttrs {
        let remote_mtu = PathMtu::from_code(u32::from(remote.path_mtu)).unwrap_or(PathMtu::Mtu256);
        RtrAttrs {
            port_num,
            path_mtu: local_mtu.min(remote_mtu),
            dest_qpn: remote.qpn,
            rq_psn: remote.psn,
            dest_lid: remote.lid,
            dest_gid: remote.gid,
            sgid_index,
            min_rnr_timer: MIN_RNR_TIMER_DEFAULT,
        }
    }
}

/// Attributes of RTR → RTS.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtsAttrs {
    /// Our first packet sequence number (the one we told the peer).
    pub sq_psn: u32,
    /// Transport retry timeout exponent (0..=31).
    pub timeout: u8,
    /// Transport retries (0..=7).
    pub retry_count: u8,
    /// Receiver-not-ready retries (0..=7; 7 is for ever).
    pub rnr_retry: u8,
}

impl RtsAttrs {
    /// The defaults, sending from `sq_psn`.
    pub fn with_psn(sq_psn: u32) -> RtsAttrs {
        RtsAttrs {
            sq_psn,
            timeout: TIMEOUT_EXP_DEFAULT,
            retry_count: RETRY_COUNT_DEFAULT,
            rnr_retry: RNR_RETRY_DEFAULT,
        }
    }
}

/// A move of the queue pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// RESET → INIT.
    ToInit(InitAttrs),
    /// INIT → RTR.
    ToRtr(RtrAttrs),
    /// RTR → RTS.
    ToRts(RtsAttrs),
    /// Anything → ERROR.
    ToError,
    /// Anything → RESET.
    ToReset,
}

impl Transition {
    /// The state this move ends in.
    pub fn target(&self) -> QpState {
        match self {
            Transition::ToInit(_) => QpState::Init,
            Transition::ToRtr(_) => QpState::Rtr,
            Transition::ToRts(_) => QpState::Rts,
            Transition::ToError => QpState::Error,
            Transition::ToReset => QpState::Reset,
        }
    }
}

/// A queue-pair move refused before it reached the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QpError {
    /// The move does not start from the current state.
    Illegal {
        /// The current state.
        from: QpState,
        /// The state asked for.
        to: QpState,
    },
    /// An attribute is out of range (names which).
    BadAttr(&'static str),
}

impl std::fmt::Display for QpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QpError::Illegal { from, to } => write!(f, "cannot move from {from:?} to {to:?}"),
            QpError::BadAttr(what) => write!(f, "bad attribute: {what}"),
        }
    }
}

impl std::error::Error for QpError {}

/// The state of one queue pair, moved only by checked transitions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QpStateMachine {
    state: QpState,
}

impl Default for QpStateMachine {
    fn default() -> Self {
        QpStateMachine::new()
    }
}

impl QpStateMachine {
    /// A queue pair just created (RESET).
    pub fn new() -> QpStateMachine {
        QpStateMachine {
            state: QpState::Reset,
        }
    }

    /// The current state.
    pub fn state(&self) -> QpState {
        self.state
    }

    /// Whether `t` may be applied now with its attributes; the state it leads to.
    pub fn check(&self, t: &Transition) -> Result<QpState, QpError> {
        let to = t.target();
        let legal = matches!(
            (self.state, t),
            (QpState::Reset, Transition::ToInit(_))
                | (QpState::Init, Transition::ToRtr(_))
                | (QpState::Rtr, Transition::ToRts(_))
                | (_, Transition::ToError)
                | (_, Transition::ToReset)
        );
        if !legal {
            return Err(QpError::Illegal {
                from: self.state,
                to,
            });
        }
        match t {
            Transition::ToInit(a) => {
                if a.port_num == 0 {
                    return Err(QpError::BadAttr("port_num must be at least 1"));
                }
            }
            Transition::ToRtr(a) => {
                if a.port_num == 0 {
                    return Err(QpError::BadAttr("port_num must be at least 1"));
                }
                if a.dest_qpn & !QPN_MASK != 0 {
                    return Err(QpError::BadAttr("dest_qpn wider than 24 bits"));
                }
                if a.dest_qpn < 2 {
                    return Err(QpError::BadAttr(
                        "dest_qpn 0 and 1 are special queue pairs, not a peer",
                    ));
                }
                if a.rq_psn & !PSN_MASK != 0 {
                    return Err(QpError::BadAttr("rq_psn wider than 24 bits"));
                }
                if a.dest_lid == 0 && a.dest_gid == [0; 16] {
                    return Err(QpError::BadAttr("destination has neither a LID nor a GID"));
                }
                if a.min_rnr_timer > 31 {
                    return Err(QpError::BadAttr("min_rnr_timer above 31"));
                }
            }
            Transition::ToRts(a) => {
                if a.sq_psn & !PSN_MASK != 0 {
                    return Err(QpError::BadAttr("sq_psn wider than 24 bits"));
                }
                if a.timeout > 31 {
                    return Err(QpError::BadAttr("timeout exponent above 31"));
                }
                if a.retry_count > 7 {
                    return Err(QpError::BadAttr("retry_count above 7"));
                }
                if a.rnr_retry > 7 {
                    return Err(QpError::BadAttr("rnr_retry above 7"));
                }
            }
            Transition::ToError | Transition::ToReset => {}
        }
        Ok(to)
    }

    /// Record that `t` was applied to the device (after [`check`] and a successful
    /// `ibv_modify_qp`).
    ///
    /// [`check`]: QpStateMachine::check
    pub fn commit(&mut self, t: &Transition) {
        let to = self
            .check(t)
            .expect("committing a transition that was not checked");
        self.state = to;
        assert_eq!(self.state, t.target());
    }

    /// Record that the device put the queue pair in ERROR (a failed completion).
    pub fn failed(&mut self) {
        self.state = QpState::Error;
    }
}

/// The attribute struct and mask `ibv_modify_qp` takes for `t`. Grants no remote
/// access: the peer may only SEND into posted receive buffers.
pub fn verbs_attr(t: &Transition) -> (ibv_qp_attr, ibv_qp_attr_mask) {
    // SAFETY: ibv_qp_attr is a plain C struct of integers, enums-as-integers and
    // byte-array unions; all zero bytes is a valid value (and what C callers memset).
    let mut attr: ibv_qp_attr = unsafe { std::mem::zeroed() };
    attr.qp_state = t.target().verbs_state();
    let mut mask = ibv_qp_attr_mask::IBV_QP_STATE;
    match t {
        Transition::ToInit(a) => {
            attr.port_num = a.port_num;
            attr.pkey_index = a.pkey_index;
            attr.qp_access_flags = 0;
            mask |= ibv_qp_attr_mask::IBV_QP_PKEY_INDEX
                | ibv_qp_attr_mask::IBV_QP_PORT
                | ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS;
        }
        Transition::ToRtr(a) => {
            attr.path_mtu = a.path_mtu.verbs_mtu();
            attr.dest_qp_num = a.dest_qpn;
            attr.rq_psn = a.rq_psn;
            attr.max_dest_rd_atomic = 1;
            attr.min_rnr_timer = a.min_rnr_timer;
            attr.ah_attr.dlid = a.dest_lid;
            attr.ah_attr.sl = 0;
            attr.ah_attr.src_path_bits = 0;
            attr.ah_attr.port_num = a.port_num;
            if a.dest_gid != [0; 16] {
                attr.ah_attr.is_global = 1;
                attr.ah_attr.grh.dgid.raw = a.dest_gid;
                attr.ah_attr.grh.sgid_index = a.sgid_index;
                attr.ah_attr.grh.hop_limit = HOP_LIMIT;
                attr.ah_attr.grh.flow_label = 0;
                attr.ah_attr.grh.traffic_class = 0;
            }
            mask |= ibv_qp_attr_mask::IBV_QP_AV
                | ibv_qp_attr_mask::IBV_QP_PATH_MTU
                | ibv_qp_attr_mask::IBV_QP_DEST_QPN
                | ibv_qp_attr_mask::IBV_QP_RQ_PSN
                | ibv_qp_attr_mask::IBV_QP_MAX_DEST_RD_ATOMIC
                | ibv_qp_attr_mask::IBV_QP_MIN_RNR_TIMER;
        }
        Transition::ToRts(a) => {
            attr.sq_psn = a.sq_psn;
            attr.timeout = a.timeout;
            attr.retry_cnt = a.retry_count;
            attr.rnr_retry = a.rnr_retry;
            attr.max_rd_atomic = 1;
            mask |= ibv_qp_attr_mask::IBV_QP_TIMEOUT
                | ibv_qp_attr_mask::IBV_QP_RETRY_CNT
                | ibv_qp_attr_mask::IBV_QP_RNR_RETRY
                | ibv_qp_attr_mask::IBV_QP_SQ_PSN
                | ibv_qp_attr_mask::IBV_QP_MAX_QP_RD_ATOMIC;
        }
        Transition::ToError | Transition::ToReset => {}
    }
    (attr, mask)
}

/// What one side tells the other to connect: its queue pair's address and the shape of
/// its receive slots. Fixed `#[repr(C)]` layout without padding, in the hosts' native
/// (little-endian) byte order like every tabos wire struct.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct QpEndpoint {
    /// [`ENDPOINT_MAGIC`].
    pub magic: u32,
    /// [`ENDPOINT_VERSION`].
    pub version: u32,
    /// Queue-pair number (24 bits, at least 2).
    pub qpn: u32,
    /// First packet sequence number of its sends (24 bits).
    pub psn: u32,
    /// Largest payload its receive slots hold: the most the other side may send.
    pub max_payload_bytes: u32,
    /// Receive slots it posted.
    pub recv_slot_count: u32,
    /// Port LID (InfiniBand; 0 on RoCE).
    pub lid: u16,
    /// Active MTU of its port, an `ibv_mtu` code (1..=5).
    pub path_mtu: u8,
    /// Zero.
    pub reserved0: u8,
    /// Zero.
    pub reserved1: u32,
    /// Port GID (RoCE and routed InfiniBand); all zero for none.
    pub gid: [u8; 16],
}

const _: () = assert!(std::mem::size_of::<QpEndpoint>() == ENDPOINT_SIZE);
const _: () = assert!(std::mem::align_of::<QpEndpoint>() == 4);

/// A peer's [`QpEndpoint`] does not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EndpointError {
    /// Not [`ENDPOINT_SIZE`] bytes.
    WrongSize(usize),
    /// Not [`ENDPOINT_MAGIC`].
    BadMagic(u32),
    /// Another layout version.
    BadVersion(u32),
    /// A field is out of range (names which).
    BadField(&'static str),
}

impl std::fmt::Display for EndpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EndpointError::WrongSize(n) => {
                write!(f, "{n} bytes, expected {ENDPOINT_SIZE}")
            }
            EndpointError::BadMagic(m) => write!(f, "bad magic {m:#010x}"),
            EndpointError::BadVersion(v) => {
                write!(f, "version {v}, this side speaks {ENDPOINT_VERSION}")
            }
            EndpointError::BadField(what) => write!(f, "bad field: {what}"),
        }
    }
}

impl std::error::Error for EndpointError {}

impl QpEndpoint {
    /// The encoded bytes.
    pub fn encode(&self) -> [u8; ENDPOINT_SIZE] {
        let mut out = [0u8; ENDPOINT_SIZE];
        out.copy_from_slice(bytemuck::bytes_of(self));
        out
    }

    /// Decode and check bytes from the peer.
    pub fn decode(bytes: &[u8]) -> Result<QpEndpoint, EndpointError> {
        if bytes.len() != ENDPOINT_SIZE {
            return Err(EndpointError::WrongSize(bytes.len()));
        }
        let ep: QpEndpoint = bytemuck::pod_read_unaligned(bytes);
        ep.validate()?;
        Ok(ep)
    }

    /// Check every field.
    pub fn validate(&self) -> Result<(), EndpointError> {
        if self.magic != ENDPOINT_MAGIC {
            return Err(EndpointError::BadMagic(self.magic));
        }
        if self.version != ENDPOINT_VERSION {
            return Err(EndpointError::BadVersion(self.version));
        }
        if self.qpn & !QPN_MASK != 0 || self.qpn < 2 {
            return Err(EndpointError::BadField(
                "qpn not a 24-bit queue-pair number >= 2",
            ));
        }
        if self.psn & !PSN_MASK != 0 {
            return Err(EndpointError::BadField("psn wider than 24 bits"));
        }
        if self.max_payload_bytes > super::buffers::RDMA_PAYLOAD_BYTES_MAX {
            return Err(EndpointError::BadField(
                "max_payload_bytes above the RDMA maximum",
            ));
        }
        if self.recv_slot_count == 0 || self.recv_slot_count > super::buffers::SLOT_COUNT_MAX {
            return Err(EndpointError::BadField("recv_slot_count out of range"));
        }
        if PathMtu::from_code(u32::from(self.path_mtu)).is_none() {
            return Err(EndpointError::BadField("path_mtu not an ibv_mtu code"));
        }
        if self.reserved0 != 0 || self.reserved1 != 0 {
            return Err(EndpointError::BadField("reserved bytes not zero"));
        }
        if self.lid == 0 && self.gid == [0; 16] {
            return Err(EndpointError::BadField("neither a LID nor a GID"));
        }
        Ok(())
    }
}

/// Send `local` over `stream` (the TCP connection, after its handshake) and read and
/// check the peer's endpoint. Both sides write first, then read; 48 bytes fit any
/// socket buffer, so this cannot deadlock.
pub fn exchange_endpoints<S: Read + Write>(
    stream: &mut S,
    local: &QpEndpoint,
) -> Result<QpEndpoint, RdmaError> {
    local.validate().expect("our own endpoint is valid");
    stream
        .write_all(&local.encode())
        .map_err(RdmaError::Exchange)?;
    stream.flush().map_err(RdmaError::Exchange)?;
    let mut raw = [0u8; ENDPOINT_SIZE];
    stream.read_exact(&mut raw).map_err(RdmaError::Exchange)?;
    Ok(QpEndpoint::decode(&raw)?)
}

/// A random first packet sequence number (24 bits), so a stale packet of an earlier
/// connection is unlikely to fall in the window of a new one.
pub fn random_psn() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    let psn = hasher.finish() as u32 & PSN_MASK;
    assert_eq!(psn & !PSN_MASK, 0);
    psn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_name_what_each_move_sets() {
        let (attr, mask) = verbs_attr(&Transition::ToInit(InitAttrs {
            port_num: 1,
            pkey_index: 0,
        }));
        assert_eq!(attr.qp_state, ibv_qp_state::IBV_QPS_INIT);
        assert_eq!(attr.qp_access_flags, 0, "no remote access");
        assert!(mask.0 & ibv_qp_attr_mask::IBV_QP_ACCESS_FLAGS.0 != 0);

        let rtr = RtrAttrs {
            port_num: 1,
            path_mtu: PathMtu::Mtu1024,
            dest_qpn: 17,
            rq_psn: 5,
            dest_lid: 0,
            dest_gid: [1; 16],
            sgid_index: 2,
            min_rnr_timer: 12,
        };
        let (attr, mask) = verbs_attr(&Transition::ToRtr(rtr));
        assert_eq!(attr.dest_qp_num, 17);
        assert_eq!(attr.ah_attr.is_global, 1);
        // SAFETY: `raw` is the byte view of the GID union, valid for any bytes.
        assert_eq!(unsafe { attr.ah_attr.grh.dgid.raw }, [1; 16]);
        for bit in [
            ibv_qp_attr_mask::IBV_QP_AV,
            ibv_qp_attr_mask::IBV_QP_DEST_QPN,
            ibv_qp_attr_mask::IBV_QP_RQ_PSN,
            ibv_qp_attr_mask::IBV_QP_PATH_MTU,
        ] {
            assert!(mask.0 & bit.0 != 0);
        }

        let (attr, mask) = verbs_attr(&Transition::ToRts(RtsAttrs::with_psn(9)));
        assert_eq!(attr.sq_psn, 9);
        assert!(mask.0 & ibv_qp_attr_mask::IBV_QP_SQ_PSN.0 != 0);
    }

    #[test]
    fn psn_is_24_bits() {
        for _ in 0..100 {
            assert_eq!(random_psn() & !PSN_MASK, 0);
        }
    }
}
