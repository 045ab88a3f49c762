//! The Unix-socket handshake that sets up a shared-memory client.
//!
//! 1. The client connects to the node's socket and sends a [`Hello`].
//! 2. The server reads the peer's credentials from the kernel (SO_PEERCRED: who is
//!    calling comes from the connection, never from the client's word), creates the
//!    client's [`crate::segment::Segment`], and answers with a [`Welcome`] carrying the
//!    memfd and one eventfd doorbell per partition as SCM_RIGHTS.
//! 3. The socket stays open for the life of the client: when it closes, the server
//!    knows the client is gone and frees its rings.

use bytemuck::{Pod, Zeroable};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

/// Magic of handshake messages.
pub const HANDSHAKE_MAGIC: u32 = 0x5442_4F48; // "TBOH"

/// Client to server.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Hello {
    /// [`HANDSHAKE_MAGIC`].
    pub magic: u32,
    /// [`crate::wire::PROTOCOL_VERSION`].
    pub version: u32,
    /// Reserved for options; zero.
    pub flags: u32,
    /// Bytes of `act_as` in use; zero to act as the connecting user.
    pub act_as_len: u32,
    /// User to act as (only root may ask), UTF-8.
    pub act_as: [u8; 32],
}
const _: () = assert!(std::mem::size_of::<Hello>() == 48);

impl Hello {
    /// A hello that acts as the connecting user, or as `act_as` (at most 32 bytes).
    pub fn new(act_as: Option<&str>) -> Hello {
        let mut hello = Hello {
            magic: HANDSHAKE_MAGIC,
            version: crate::wire::PROTOCOL_VERSION,
            ..Hello::default()
        };
        if let Some(name) = act_as {
            let bytes = name.as_bytes();
            let n = bytes.len().min(hello.act_as.len());
            hello.act_as[..n].copy_from_slice(&bytes[..n]);
            hello.act_as_len = bytes.len() as u32;
        }
        hello
    }

    /// The user asked for, if any; `Err(BadArgs)` when the field is malformed.
    pub fn act_as(&self) -> Result<Option<&str>, crate::Status> {
        match self.act_as_len as usize {
            0 => Ok(None),
            n if n <= self.act_as.len() => std::str::from_utf8(&self.act_as[..n])
                .map(Some)
                .map_err(|_| crate::Status::BadArgs),
            _ => Err(crate::Status::BadArgs),
        }
    }
}

/// Server to client, with the fds attached.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Pod, Zeroable)]
pub struct Welcome {
    /// [`HANDSHAKE_MAGIC`].
    pub magic: u32,
    /// The server's protocol version.
    pub version: u32,
    /// `0` when accepted; otherwise a [`crate::Status`] code saying why not.
    pub status: u32,
    /// Partitions in the whole cluster (global partition ids run `0..partition_count`).
    pub partition_count: u32,
    /// Data bytes of each ring.
    pub ring_bytes: u64,
    /// Largest request or reply payload the server accepts.
    pub max_payload_bytes: u32,
    /// This node's id in its cluster.
    pub node_id: u32,
    /// The server's id for this connection.
    pub client_id: u64,
    /// The partitions this node owns: the global id of the first in the low 32 bits,
    /// how many in the high 32 bits (one eventfd each follows the memfd).
    pub partition_span: u64,
}

impl Welcome {
    /// Global id of the node's first partition.
    pub fn partition_base(&self) -> u32 {
        self.partition_span as u32
    }

    /// How many partitions the node owns.
    pub fn local_partitions(&self) -> u32 {
        (self.partition_span >> 32) as u32
    }

    /// Record that the node owns `count` partitions from global id `base`.
    pub fn with_span(mut self, base: u32, count: u32) -> Welcome {
        self.partition_span = u64::from(base) | (u64::from(count) << 32);
        self
    }
}
const _: () = assert!(std::mem::size_of::<Welcome>() == 48);

/// Credentials of the process at the other end of a Unix socket, from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Process id.
    pub pid: u32,
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Read the peer's credentials (SO_PEERCRED).
pub fn peer_credentials(stream: &UnixStream) -> io::Result<PeerCredentials> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: valid socket fd, out-pointer to a ucred and its length.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCredentials {
        pid: cred.pid as u32,
        uid: cred.uid,
        gid: cred.gid,
    })
}

/// The login name of `uid` from the system's user database, or `uid<N>` when it has
/// none.
pub fn user_name_for_uid(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 4096];
    // SAFETY: passwd is plain data; getpwuid_r writes it and strings into `buf`.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; buf's length is passed.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return format!("uid{uid}");
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    name.to_str()
        .map_or_else(|_| format!("uid{uid}"), str::to_string)
}

/// The login name of the user running this process (see [`user_name_for_uid`]).
pub fn current_user_name() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    user_name_for_uid(uid)
}

/// Most fds one message carries.
pub const FDS_MAX: usize = 200;

/// Send `bytes` with `fds` attached as SCM_RIGHTS.
pub fn send_with_fds(stream: &UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    assert!(fds.len() <= FDS_MAX, "too many fds for one message");
    let raw: Vec<libc::c_int> = fds.iter().map(|fd| fd.as_raw_fd()).collect();
    let payload_bytes = std::mem::size_of_val(raw.as_slice());
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(payload_bytes as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !raw.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` bytes, enough for one cmsg header and
        // `payload_bytes` of data (CMSG_SPACE); the macros stay inside that buffer.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(raw.as_ptr(), libc::CMSG_DATA(cmsg).cast(), raw.len());
        }
    }
    // SAFETY: `msg` refers to live buffers for the duration of the call.
    let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    if n as usize != bytes.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "short handshake write",
        ));
    }
    Ok(())
}

/// Receive exactly `buf.len()` bytes (one message) and up to `fds_max` fds.
pub fn recv_with_fds(
    stream: &UnixStream,
    buf: &mut [u8],
    fds_max: usize,
) -> io::Result<Vec<OwnedFd>> {
    assert!(fds_max <= FDS_MAX);
    // SAFETY: pure computation.
    let space =
        unsafe { libc::CMSG_SPACE((fds_max * std::mem::size_of::<libc::c_int>()) as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: plain data.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` refers to live buffers for the duration of the call.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: after a successful recvmsg, the kernel filled `control` with
    // `msg_controllen` bytes of well-formed cmsgs; CMSG_FIRSTHDR/NXTHDR stay within it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data_bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = data_bytes / std::mem::size_of::<libc::c_int>();
                let data = libc::CMSG_DATA(cmsg).cast::<libc::c_int>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "too many fds in handshake",
        ));
    }
    if n as usize != buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("handshake message of {n} bytes, expected {}", buf.len()),
        ));
    }
    Ok(fds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn fds_and_credentials_cross_a_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let cred = peer_credentials(&a).unwrap();
        assert_eq!(cred.pid, std::process::id());
        let efd = crate::doorbell::EventFd::new().unwrap();
        let hello = Hello::new(Some("alice"));
        assert_eq!(hello.magic, HANDSHAKE_MAGIC);
        send_with_fds(&a, bytemuck::bytes_of(&hello), &[efd.as_fd(), efd.as_fd()]).unwrap();
        let mut buf = [0u8; 48];
        let fds = recv_with_fds(&b, &mut buf, 4).unwrap();
        assert_eq!(fds.len(), 2);
        let got = bytemuck::pod_read_unaligned::<Hello>(&buf);
        assert_eq!(got, hello);
        assert_eq!(got.act_as(), Ok(Some("alice")));
        assert_eq!(user_name_for_uid(0), "root");
    }
}
