//! Owners of verbs objects: each wraps one pointer from libibverbs, frees it on drop,
//! and keeps what it was made from alive through an `Arc` (a queue pair its protection
//! domain and completion queue, a completion queue its channel, everything its device
//! context), so no drop order can free a parent first.
//!
//! libibverbs is thread-safe: any verb may be called on an object from any thread, so
//! these owners are `Send` and `Sync`.

use super::buffers::SlotPool;
use super::qp::{verbs_attr, Transition};
use super::{c_string, DeviceInfo, RdmaError};
use rdma_sys::{
    ___ibv_query_port, ibv_access_flags, ibv_ack_cq_events, ibv_alloc_pd, ibv_close_device,
    ibv_comp_channel, ibv_context, ibv_cq, ibv_create_comp_channel, ibv_create_cq, ibv_create_qp,
    ibv_dealloc_pd, ibv_dereg_mr, ibv_destroy_comp_channel, ibv_destroy_cq, ibv_destroy_qp,
    ibv_device, ibv_device_attr, ibv_free_device_list, ibv_get_cq_event, ibv_get_device_guid,
    ibv_get_device_list, ibv_get_device_name, ibv_gid, ibv_modify_qp, ibv_mr, ibv_open_device,
    ibv_pd, ibv_poll_cq, ibv_port_attr, ibv_post_recv, ibv_post_send, ibv_qp, ibv_qp_init_attr,
    ibv_qp_type, ibv_query_device, ibv_query_gid, ibv_recv_wr, ibv_reg_mr, ibv_req_notify_cq,
    ibv_send_flags, ibv_send_wr, ibv_sge, ibv_wc, ibv_wc_status_str, ibv_wr_opcode,
};
use std::ffi::CStr;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, RawFd};
use std::ptr::{null_mut, NonNull};
use std::sync::Arc;

/// `link_layer` of a port: InfiniBand (`IBV_LINK_LAYER_INFINIBAND`).
pub(crate) const LINK_LAYER_INFINIBAND: u8 = 1;
/// `link_layer` of a port: Ethernet, i.e. RoCE (`IBV_LINK_LAYER_ETHERNET`).
pub(crate) const LINK_LAYER_ETHERNET: u8 = 2;
/// Completions taken from the queue per `ibv_poll_cq` call.
pub(crate) const POLL_BATCH: usize = 32;

/// `Ok` for a verbs return code of 0; the error for anything else. Verbs report errors
/// either as a positive errno or as -1 with `errno` set.
fn check_rc(op: &'static str, rc: libc::c_int) -> Result<(), RdmaError> {
    match rc {
        0 => Ok(()),
        rc if rc > 0 => Err(RdmaError::Verbs {
            op,
            source: io::Error::from_raw_os_error(rc),
        }),
        _ => Err(RdmaError::Verbs {
            op,
            source: io::Error::last_os_error(),
        }),
    }
}

/// A non-null pointer from a verbs constructor, or its error.
fn check_ptr<T>(op: &'static str, ptr: *mut T) -> Result<NonNull<T>, RdmaError> {
    NonNull::new(ptr).ok_or_else(|| RdmaError::Verbs {
        op,
        source: io::Error::last_os_error(),
    })
}

/// The list `ibv_get_device_list` returns, freed on drop.
pub(crate) struct DeviceList {
    list: *mut *mut ibv_device,
    len: usize,
}

impl DeviceList {
    /// The devices of this host; an empty list when the kernel has no RDMA support.
    pub(crate) fn get() -> Result<DeviceList, RdmaError> {
        let mut count: libc::c_int = 0;
        // SAFETY: `count` is a valid out-pointer; the call allocates the list it returns.
        let list = unsafe { ibv_get_device_list(&mut count) };
        if list.is_null() {
            let err = io::Error::last_os_error();
            // ENOSYS: the kernel has no RDMA support (no InfiniBand subsystem), so no
            // devices, which is an answer rather than a failure.
            if err.raw_os_error() == Some(libc::ENOSYS) {
                return Ok(DeviceList {
                    list: null_mut(),
                    len: 0,
                });
            }
            return Err(RdmaError::Verbs {
                op: "ibv_get_device_list",
                source: err,
            });
        }
        let len = usize::try_from(count).unwrap_or(0);
        Ok(DeviceList { list, len })
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn device(&self, index: usize) -> *mut ibv_device {
        assert!(index < self.len, "device index out of range");
        // SAFETY: the list holds `len` valid device pointers (then a null) until it is
        // freed in drop; `index < len` (asserted).
        let device = unsafe { *self.list.add(index) };
        assert!(!device.is_null(), "null device in the device list");
        device
    }

    /// Name and GUID of device `index`.
    pub(crate) fn info(&self, index: usize) -> DeviceInfo {
        let device = self.device(index);
        // SAFETY: `device` is valid while the list lives; the name is a NUL-terminated
        // string inside the device struct, copied out before the list is freed.
        let name = unsafe {
            let name = ibv_get_device_name(device);
            assert!(!name.is_null(), "device without a name");
            c_string(CStr::from_ptr(name))
        };
        // SAFETY: `device` is valid while the list lives.
        let guid = u64::from_be(unsafe { ibv_get_device_guid(device) });
        DeviceInfo { name, guid }
    }
}

impl Drop for DeviceList {
    fn drop(&mut self) {
        if !self.list.is_null() {
            // SAFETY: `list` came from ibv_get_device_list and is freed once, here.
            unsafe { ibv_free_device_list(self.list) }
        }
    }
}

/// Limits of a device that bound a connection's shape.
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeviceLimits {
    /// Most work requests in one queue.
    pub(crate) max_qp_wr: u32,
    /// Most entries of a completion queue.
    pub(crate) max_cqe: u32,
    /// Physical ports (numbered from 1).
    pub(crate) port_count: u8,
}

/// What a connection needs to know of its port.
#[derive(Clone, Copy, Debug)]
pub(crate) struct PortInfo {
    /// `ibv_port_state` code (4: active).
    pub(crate) state: u32,
    /// `ibv_mtu` code of the active MTU.
    pub(crate) active_mtu: u32,
    /// LID (InfiniBand).
    pub(crate) lid: u16,
    /// `LINK_LAYER_*`.
    pub(crate) link_layer: u8,
}

/// An open device.
#[derive(Debug)]
pub(crate) struct Context {
    ptr: NonNull<ibv_context>,
    name: String,
}

// SAFETY: libibverbs contexts may be used from any thread; this owner only closes it.
unsafe impl Send for Context {}
// SAFETY: as above; every verb on a context is thread-safe.
unsafe impl Sync for Context {}

impl Context {
    /// Open the device named `name`, or the first device.
    pub(crate) fn open(name: Option<&str>) -> Result<Arc<Context>, RdmaError> {
        let list = DeviceList::get()?;
        if list.len() == 0 {
            return Err(RdmaError::NoDevice);
        }
        let index = match name {
            None => 0,
            Some(name) => (0..list.len())
                .find(|&i| list.info(i).name == name)
                .ok_or_else(|| RdmaError::DeviceNotFound {
                    name: name.to_string(),
                    available: (0..list.len()).map(|i| list.info(i).name).collect(),
                })?,
        };
        let info = list.info(index);
        // SAFETY: the device pointer is valid while `list` lives; the opened context
        // stays valid after the list is freed (libibverbs keeps the device referenced).
        let ptr = check_ptr("ibv_open_device", unsafe {
            ibv_open_device(list.device(index))
        })?;
        Ok(Arc::new(Context {
            ptr,
            name: info.name,
        }))
    }

    /// The device's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The device's limits.
    pub(crate) fn limits(&self) -> Result<DeviceLimits, RdmaError> {
        // SAFETY: ibv_device_attr is plain C data; all zero is a valid value.
        let mut attr: ibv_device_attr = unsafe { std::mem::zeroed() };
        // SAFETY: the context is open; `attr` is a valid out-pointer.
        check_rc("ibv_query_device", unsafe {
            ibv_query_device(self.ptr.as_ptr(), &mut attr)
        })?;
        Ok(DeviceLimits {
            max_qp_wr: u32::try_from(attr.max_qp_wr).unwrap_or(0),
            max_cqe: u32::try_from(attr.max_cqe).unwrap_or(0),
            port_count: attr.phys_port_cnt,
        })
    }

    /// State, MTU, LID and link layer of port `port_num`.
    pub(crate) fn port(&self, port_num: u8) -> Result<PortInfo, RdmaError> {
        // SAFETY: ibv_port_attr is plain C data; all zero is a valid value.
        let mut attr: ibv_port_attr = unsafe { std::mem::zeroed() };
        // SAFETY: the context is open; `attr` is a zeroed, full-size ibv_port_attr.
        // ___ibv_query_port (the C inline that `ibv_query_port` expands to) either hands
        // the provider its full size or, on the compatibility path (which rdma-sys 0.3
        // always takes on 64-bit hosts), fills the leading `_compat_ibv_port_attr` part,
        // which holds every field read below.
        check_rc("ibv_query_port", unsafe {
            ___ibv_query_port(self.ptr.as_ptr(), port_num, &mut attr)
        })?;
        Ok(PortInfo {
            state: attr.state,
            active_mtu: attr.active_mtu,
            lid: attr.lid,
            link_layer: attr.link_layer,
        })
    }

    /// GID `index` of port `port_num`.
    pub(crate) fn gid(&self, port_num: u8, index: u8) -> Result<[u8; 16], RdmaError> {
        let mut gid = ibv_gid { raw: [0; 16] };
        // SAFETY: the context is open; `gid` is a valid 16-byte out-pointer.
        check_rc("ibv_query_gid", unsafe {
            ibv_query_gid(
                self.ptr.as_ptr(),
                port_num,
                libc::c_int::from(index),
                &mut gid,
            )
        })?;
        // SAFETY: every 16-byte pattern is a valid `raw` view of the GID union.
        Ok(unsafe { gid.raw })
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: opened in `open`, closed once; every child object holds an Arc to this
        // context, so all of them are gone by now.
        unsafe { ibv_close_device(self.ptr.as_ptr()) };
    }
}

/// A protection domain: the memory regions and queue pairs of one connection.
#[derive(Debug)]
pub(crate) struct ProtectionDomain {
    ptr: NonNull<ibv_pd>,
    _context: Arc<Context>,
}

// SAFETY: libibverbs objects are thread-safe; this owner only deallocates it.
unsafe impl Send for ProtectionDomain {}
// SAFETY: as above.
unsafe impl Sync for ProtectionDomain {}

impl ProtectionDomain {
    pub(crate) fn alloc(context: &Arc<Context>) -> Result<Arc<ProtectionDomain>, RdmaError> {
        // SAFETY: the context is open (the Arc keeps it so).
        let ptr = check_ptr("ibv_alloc_pd", unsafe {
            ibv_alloc_pd(context.ptr.as_ptr())
        })?;
        Ok(Arc::new(ProtectionDomain {
            ptr,
            _context: Arc::clone(context),
        }))
    }
}

impl Drop for ProtectionDomain {
    fn drop(&mut self) {
        // SAFETY: allocated in `alloc`, freed once; the queue pair and memory region
        // hold Arcs to this domain, so they are already gone.
        unsafe { ibv_dealloc_pd(self.ptr.as_ptr()) };
    }
}

/// A completion channel: the fd a sleeping poller waits on.
#[derive(Debug)]
pub(crate) struct CompChannel {
    ptr: NonNull<ibv_comp_channel>,
    _context: Arc<Context>,
}

// SAFETY: libibverbs objects are thread-safe; this owner only reads its fd and frees it.
unsafe impl Send for CompChannel {}
// SAFETY: as above.
unsafe impl Sync for CompChannel {}

impl CompChannel {
    /// A channel whose fd is non-blocking, so reading an event never stalls.
    pub(crate) fn create(context: &Arc<Context>) -> Result<Arc<CompChannel>, RdmaError> {
        // SAFETY: the context is open.
        let ptr = check_ptr("ibv_create_comp_channel", unsafe {
            ibv_create_comp_channel(context.ptr.as_ptr())
        })?;
        let channel = Arc::new(CompChannel {
            ptr,
            _context: Arc::clone(context),
        });
        let fd = channel.raw_fd();
        // SAFETY: `fd` is the channel's open descriptor; F_GETFL/F_SETFL only change
        // its status flags.
        let rc = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            if flags < 0 {
                flags
            } else {
                libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
            }
        };
        if rc < 0 {
            return Err(RdmaError::Verbs {
                op: "fcntl(O_NONBLOCK) on the completion channel",
                source: io::Error::last_os_error(),
            });
        }
        Ok(channel)
    }

    fn raw_fd(&self) -> RawFd {
        // SAFETY: the channel is valid while `self` lives; `fd` is a plain field.
        unsafe { (*self.ptr.as_ptr()).fd }
    }

    /// The fd that becomes readable when an armed completion queue gets a completion.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd stays open until the channel is destroyed in drop, after every
        // borrow of `self` has ended.
        unsafe { BorrowedFd::borrow_raw(self.raw_fd()) }
    }

    /// Wait up to `timeout_ms` (negative: for ever) for the fd to become readable.
    pub(crate) fn wait_readable(&self, timeout_ms: i32) -> Result<bool, RdmaError> {
        let mut pfd = libc::pollfd {
            fd: self.raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: `pfd` is one valid pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if n >= 0 {
                return Ok(n > 0);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(RdmaError::Verbs {
                    op: "poll on the completion channel",
                    source: err,
                });
            }
        }
    }
}

impl Drop for CompChannel {
    fn drop(&mut self) {
        // SAFETY: created in `create`, destroyed once; the completion queue using it
        // holds an Arc to it and is gone.
        unsafe { ibv_destroy_comp_channel(self.ptr.as_ptr()) };
    }
}

/// One work completion, copied out of the completion queue.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Completion {
    pub(crate) wr_id: u64,
    /// `ibv_wc_status` code.
    pub(crate) status: u32,
    /// `ibv_wc_opcode` code.
    pub(crate) opcode: u32,
    /// Bytes received (receives only).
    pub(crate) byte_len: u32,
}

/// The description the verbs library gives a completion status.
pub(crate) fn status_text(status: u32) -> String {
    // SAFETY: ibv_wc_status_str returns a static string for every value (or null).
    let text = unsafe { ibv_wc_status_str(status) };
    if text.is_null() {
        return format!("status {status}");
    }
    // SAFETY: non-null, NUL-terminated and static.
    c_string(unsafe { CStr::from_ptr(text) })
}

/// A completion queue bound to a completion channel.
#[derive(Debug)]
pub(crate) struct CompletionQueue {
    ptr: NonNull<ibv_cq>,
    channel: Arc<CompChannel>,
}

// SAFETY: libibverbs objects are thread-safe; polling is done by the owning connection.
unsafe impl Send for CompletionQueue {}
// SAFETY: as above.
unsafe impl Sync for CompletionQueue {}

impl CompletionQueue {
    pub(crate) fn create(
        context: &Arc<Context>,
        channel: &Arc<CompChannel>,
        entry_count: u32,
    ) -> Result<Arc<CompletionQueue>, RdmaError> {
        let entries = libc::c_int::try_from(entry_count).expect("completion queue size");
        // SAFETY: context and channel are valid (Arcs held); no per-CQ context pointer.
        let ptr = check_ptr("ibv_create_cq", unsafe {
            ibv_create_cq(
                context.ptr.as_ptr(),
                entries,
                null_mut(),
                channel.ptr.as_ptr(),
                0,
            )
        })?;
        Ok(Arc::new(CompletionQueue {
            ptr,
            channel: Arc::clone(channel),
        }))
    }

    /// The channel that reports this queue's events.
    pub(crate) fn channel(&self) -> &CompChannel {
        &self.channel
    }

    /// Append up to [`POLL_BATCH`] completions to `out`; how many were appended.
    pub(crate) fn poll(&self, out: &mut Vec<Completion>) -> Result<usize, RdmaError> {
        let mut wcs: [MaybeUninit<ibv_wc>; POLL_BATCH] =
            [const { MaybeUninit::uninit() }; POLL_BATCH];
        // SAFETY: the queue is valid; `wcs` has room for POLL_BATCH entries, and the
        // provider writes only the first `n` it returns.
        let n = unsafe {
            ibv_poll_cq(
                self.ptr.as_ptr(),
                POLL_BATCH as i32,
                wcs.as_mut_ptr().cast(),
            )
        };
        if n < 0 {
            return Err(RdmaError::Verbs {
                op: "ibv_poll_cq",
                source: io::Error::from_raw_os_error(-n),
            });
        }
        let n = n as usize;
        assert!(n <= POLL_BATCH, "ibv_poll_cq returned more than asked");
        for wc in &wcs[..n] {
            // SAFETY: the first `n` entries were written by ibv_poll_cq.
            let wc = unsafe { wc.assume_init_ref() };
            out.push(Completion {
                wr_id: wc.wr_id,
                status: wc.status,
                opcode: wc.opcode,
                byte_len: wc.byte_len,
            });
        }
        Ok(n)
    }

    /// Ask for an event on the channel at the next completion.
    pub(crate) fn arm(&self) -> Result<(), RdmaError> {
        // SAFETY: the queue is valid.
        check_rc("ibv_req_notify_cq", unsafe {
            ibv_req_notify_cq(self.ptr.as_ptr(), 0)
        })
    }

    /// Take one pending event off the channel and acknowledge it; `false` when none is
    /// pending (the fd is non-blocking).
    pub(crate) fn take_event(&self) -> Result<bool, RdmaError> {
        let mut cq: *mut ibv_cq = null_mut();
        let mut cq_context: *mut libc::c_void = null_mut();
        // SAFETY: the channel is valid; the out-pointers are valid locals.
        let rc = unsafe { ibv_get_cq_event(self.channel.ptr.as_ptr(), &mut cq, &mut cq_context) };
        if rc != 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::WouldBlock {
                return Ok(false);
            }
            return Err(RdmaError::Verbs {
                op: "ibv_get_cq_event",
                source: err,
            });
        }
        assert_eq!(cq, self.ptr.as_ptr(), "event for another completion queue");
        // SAFETY: one event was taken for this queue; acknowledging it right away keeps
        // no unacknowledged events for destroy to wait on.
        unsafe { ibv_ack_cq_events(self.ptr.as_ptr(), 1) };
        Ok(true)
    }
}

impl Drop for CompletionQueue {
    fn drop(&mut self) {
        // SAFETY: created in `create`, destroyed once; every event was acknowledged in
        // `take_event`; the queue pair using it holds an Arc and is gone.
        unsafe { ibv_destroy_cq(self.ptr.as_ptr()) };
    }
}

/// A reliable connected queue pair.
#[derive(Debug)]
pub(crate) struct QueuePair {
    ptr: NonNull<ibv_qp>,
    _pd: Arc<ProtectionDomain>,
    _cq: Arc<CompletionQueue>,
}

// SAFETY: libibverbs objects are thread-safe; the owning connection posts and modifies.
unsafe impl Send for QueuePair {}
// SAFETY: as above.
unsafe impl Sync for QueuePair {}

impl QueuePair {
    /// An RC queue pair in RESET using `cq` for sends and receives.
    pub(crate) fn create(
        pd: &Arc<ProtectionDomain>,
        cq: &Arc<CompletionQueue>,
        send_wr_count: u32,
        recv_wr_count: u32,
    ) -> Result<QueuePair, RdmaError> {
        // SAFETY: ibv_qp_init_attr is plain C data; all zero is valid (no SRQ, no
        // context pointer), the fields that matter are set below.
        let mut init: ibv_qp_init_attr = unsafe { std::mem::zeroed() };
        init.send_cq = cq.ptr.as_ptr();
        init.recv_cq = cq.ptr.as_ptr();
        init.qp_type = ibv_qp_type::IBV_QPT_RC;
        init.sq_sig_all = 0;
        init.cap.max_send_wr = send_wr_count;
        init.cap.max_recv_wr = recv_wr_count;
        init.cap.max_send_sge = 1;
        init.cap.max_recv_sge = 1;
        // SAFETY: pd and cq are valid (Arcs held); `init` is a valid attribute struct.
        let ptr = check_ptr("ibv_create_qp", unsafe {
            ibv_create_qp(pd.ptr.as_ptr(), &mut init)
        })?;
        Ok(QueuePair {
            ptr,
            _pd: Arc::clone(pd),
            _cq: Arc::clone(cq),
        })
    }

    /// The queue-pair number the peer addresses.
    pub(crate) fn qp_num(&self) -> u32 {
        // SAFETY: the queue pair is valid while `self` lives; `qp_num` is a plain field
        // set at creation.
        unsafe { (*self.ptr.as_ptr()).qp_num }
    }

    /// Apply a transition (already checked by the state machine).
    pub(crate) fn modify(&self, t: &Transition) -> Result<(), RdmaError> {
        let (mut attr, mask) = verbs_attr(t);
        let mask = libc::c_int::try_from(mask.0).expect("attribute mask fits c_int");
        // SAFETY: the queue pair is valid; `attr` is fully initialised and `mask` names
        // only fields set in it.
        check_rc("ibv_modify_qp", unsafe {
            ibv_modify_qp(self.ptr.as_ptr(), &mut attr, mask)
        })
    }

    /// Post receives of `(wr_id, addr, length)` in memory registered with `lkey`, as
    /// one chained list (one doorbell).
    pub(crate) fn post_recvs(&self, lkey: u32, items: &[(u64, u64, u32)]) -> Result<(), RdmaError> {
        if items.is_empty() {
            return Ok(());
        }
        let mut sges: Vec<ibv_sge> = items
            .iter()
            .map(|&(_, addr, length)| ibv_sge { addr, length, lkey })
            .collect();
        let mut wrs: Vec<ibv_recv_wr> = items
            .iter()
            .map(|&(wr_id, _, _)| ibv_recv_wr {
                wr_id,
                next: null_mut(),
                sg_list: null_mut(),
                num_sge: 1,
            })
            .collect();
        // Link through raw pointers taken once both vectors are final, so no pointer
        // is invalidated by a later borrow.
        let count = wrs.len();
        let wr_base = wrs.as_mut_ptr();
        let sge_base = sges.as_mut_ptr();
        for i in 0..count {
            // SAFETY: `i < count`, so both pointers stay inside their vectors, which are
            // not touched otherwise until the post below.
            unsafe {
                let wr = wr_base.add(i);
                (*wr).sg_list = sge_base.add(i);
                if i + 1 < count {
                    (*wr).next = wr_base.add(i + 1);
                }
            }
        }
        let mut bad: *mut ibv_recv_wr = null_mut();
        // SAFETY: the queue pair is valid; the chain and its SGEs live until the call
        // returns (the provider copies them); each SGE names registered memory.
        check_rc("ibv_post_recv", unsafe {
            ibv_post_recv(self.ptr.as_ptr(), wr_base, &mut bad)
        })
    }

    /// Post one signaled SEND of `length` bytes at `addr` (memory registered with
    /// `lkey`).
    pub(crate) fn post_send(
        &self,
        wr_id: u64,
        lkey: u32,
        addr: u64,
        length: u32,
    ) -> Result<(), RdmaError> {
        let mut sge = ibv_sge { addr, length, lkey };
        // SAFETY: ibv_send_wr is plain C data (integers, pointers, unions of those);
        // all zero is valid: no next request, no immediate, no remote address.
        let mut wr: ibv_send_wr = unsafe { std::mem::zeroed() };
        wr.wr_id = wr_id;
        wr.sg_list = &mut sge;
        wr.num_sge = 1;
        wr.opcode = ibv_wr_opcode::IBV_WR_SEND;
        wr.send_flags = ibv_send_flags::IBV_SEND_SIGNALED.0;
        let mut bad: *mut ibv_send_wr = null_mut();
        // SAFETY: the queue pair is valid; `wr` and `sge` live until the call returns
        // and name registered memory that stays untouched until the completion.
        check_rc("ibv_post_send", unsafe {
            ibv_post_send(self.ptr.as_ptr(), &mut wr, &mut bad)
        })
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        // SAFETY: created in `create`, destroyed once; outstanding work requests are
        // discarded with it, before the memory they name is deregistered.
        unsafe { ibv_destroy_qp(self.ptr.as_ptr()) };
    }
}

/// A [`SlotPool`] registered in a protection domain for local writes only: the NIC may
/// fill its receive slots from SENDs and read its send slots, and no remote key of it
/// grants anything.
#[derive(Debug)]
pub(crate) struct RegisteredPool {
    mr: NonNull<ibv_mr>,
    lkey: u32,
    pool: SlotPool,
    _pd: Arc<ProtectionDomain>,
}

// SAFETY: the memory region is only deregistered here; the pool is Send.
unsafe impl Send for RegisteredPool {}

impl RegisteredPool {
    pub(crate) fn register(
        pd: &Arc<ProtectionDomain>,
        pool: SlotPool,
    ) -> Result<RegisteredPool, RdmaError> {
        let access = ibv_access_flags::IBV_ACCESS_LOCAL_WRITE.0;
        let access = libc::c_int::try_from(access).expect("access flags fit c_int");
        // SAFETY: the pd is valid; the pool's allocation is `len_bytes` long and stays
        // allocated until after deregistration (the pool is dropped after `drop` below).
        let mr = check_ptr("ibv_reg_mr", unsafe {
            ibv_reg_mr(
                pd.ptr.as_ptr(),
                pool.base_ptr().cast(),
                pool.len_bytes(),
                access,
            )
        })
        .map_err(|e| match e {
            // Registration pins memory, which counts against RLIMIT_MEMLOCK.
            RdmaError::Verbs { source, .. }
                if matches!(
                    source.raw_os_error(),
                    Some(libc::ENOMEM | libc::EPERM | libc::EAGAIN)
                ) =>
            {
                RdmaError::Device {
                    device: pd._context.name().to_string(),
                    problem: format!(
                        "registering {} bytes of buffers failed ({source}): raise the \
                         locked-memory limit (`ulimit -l unlimited`, or memlock in \
                         /etc/security/limits.conf) or use fewer connections",
                        pool.len_bytes()
                    ),
                }
            }
            e => e,
        })?;
        // SAFETY: a registered region's `lkey` is a plain field set at registration.
        let lkey = unsafe { (*mr.as_ptr()).lkey };
        Ok(RegisteredPool {
            mr,
            lkey,
            pool,
            _pd: Arc::clone(pd),
        })
    }

    /// The local key of the region.
    pub(crate) fn lkey(&self) -> u32 {
        self.lkey
    }

    pub(crate) fn pool(&self) -> &SlotPool {
        &self.pool
    }

    pub(crate) fn pool_mut(&mut self) -> &mut SlotPool {
        &mut self.pool
    }
}

impl Drop for RegisteredPool {
    fn drop(&mut self) {
        // SAFETY: registered in `register`, deregistered once, before `pool` (a field,
        // dropped after this) frees the memory.
        unsafe { ibv_dereg_mr(self.mr.as_ptr()) };
    }
}

/// Whether `link_layer` needs a GID to address a peer (RoCE).
pub(crate) fn needs_gid(link_layer: u8) -> bool {
    link_layer == LINK_LAYER_ETHERNET
}

/// Whether `link_layer` addresses peers by LID (InfiniBand; unspecified counts as IB).
pub(crate) fn uses_lid(link_layer: u8) -> bool {
    link_layer == LINK_LAYER_INFINIBAND || link_layer == 0
}
