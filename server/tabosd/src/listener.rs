//! The listener thread: accepts local clients on the Unix socket, runs the handshake,
//! watches every client socket for the client's exit, and starts shutdown on a signal.
//!
//! It never blocks on one client: accepted sockets are non-blocking, and a client that
//! connects and says nothing is dropped after [`HELLO_TIMEOUT`].

use crate::inbox::Command;
use crate::partition::NodeShared;
use crate::port::{Peer, Port};
use std::collections::HashMap;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tabos_engine::{Caller, UserName};
use tabos_transport::doorbell::EventFd;
use tabos_transport::handshake::{
    peer_credentials, send_with_fds, user_name_for_uid, Hello, Welcome, HANDSHAKE_MAGIC,
};
use tabos_transport::ring::{Consumer, Producer};
use tabos_transport::segment::{Segment, SegmentShape};
use tabos_transport::wire::PROTOCOL_VERSION;
use tabos_transport::Status;

/// How long a new connection may take to send its hello.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

struct Pending {
    stream: UnixStream,
    since: Instant,
}

struct Connected {
    stream: Arc<UnixStream>,
    pid: u32,
}

/// Accepts and tracks local clients.
pub struct Listener {
    listener: UnixListener,
    stop: Arc<EventFd>,
    signals: Option<std::os::fd::OwnedFd>,
    node: Arc<NodeShared>,
    shape: SegmentShape,
    clients_max: usize,
    pending: Vec<Pending>,
    clients: HashMap<u64, Connected>,
    next_client_id: u64,
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("clients", &self.clients.len())
            .finish()
    }
}

fn poll_fd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN | libc::POLLRDHUP,
        revents: 0,
    }
}

impl Listener {
    /// A listener on `listener` that stops when `stop` rings or a signal arrives on
    /// `signals` (a signalfd).
    pub fn new(
        listener: UnixListener,
        stop: Arc<EventFd>,
        signals: Option<std::os::fd::OwnedFd>,
        node: Arc<NodeShared>,
        shape: SegmentShape,
        clients_max: usize,
    ) -> io::Result<Listener> {
        listener.set_nonblocking(true)?;
        Ok(Listener {
            listener,
            stop,
            signals,
            node,
            shape,
            clients_max,
            pending: Vec::new(),
            clients: HashMap::new(),
            next_client_id: 1,
        })
    }

    /// Serve until stopped. Returns after every partition was told to shut down.
    pub fn run(mut self) {
        loop {
            let client_ids: Vec<u64> = self.clients.keys().copied().collect();
            let mut fds = vec![
                poll_fd(self.listener.as_raw_fd()),
                poll_fd(self.stop.as_fd().as_raw_fd()),
            ];
            if let Some(sig) = &self.signals {
                fds.push(poll_fd(sig.as_raw_fd()));
            }
            let fixed = fds.len();
            fds.extend(self.pending.iter().map(|p| poll_fd(p.stream.as_raw_fd())));
            fds.extend(
                client_ids
                    .iter()
                    .map(|id| poll_fd(self.clients[id].stream.as_raw_fd())),
            );
            // SAFETY: `fds` is a valid array of pollfds for the duration of the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 1000) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("tabosd: poll failed: {e}");
                break;
            }
            if fds[1].revents != 0 || (fixed == 3 && fds[2].revents != 0) {
                eprintln!("tabosd: shutting down: finishing in-flight calls");
                break;
            }
            // Client sockets: any event after the handshake means the client left (or
            // broke protocol by writing to the socket): detach it everywhere.
            for (i, id) in client_ids.iter().enumerate() {
                if fds[fixed + self.pending.len() + i].revents != 0 {
                    self.detach(*id);
                }
            }
            let mut still_pending = Vec::new();
            let ready: Vec<bool> = (0..self.pending.len())
                .map(|i| fds[fixed + i].revents != 0)
                .collect();
            for (p, is_ready) in std::mem::take(&mut self.pending).into_iter().zip(ready) {
                if is_ready {
                    self.handshake(p.stream);
                } else if p.since.elapsed() < HELLO_TIMEOUT {
                    still_pending.push(p);
                }
            }
            self.pending = still_pending;
            if fds[0].revents != 0 {
                self.accept_all();
            }
        }
        self.node.coordinator.close();
        for inbox in &self.node.inboxes {
            inbox.send(Command::Shutdown);
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if stream.set_nonblocking(true).is_ok() {
                        self.pending.push(Pending {
                            stream,
                            since: Instant::now(),
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // EMFILE and friends: say so and try again on the next turn.
                    eprintln!("tabosd: accept failed: {e}");
                    return;
                }
            }
        }
    }

    fn refuse(stream: &UnixStream, status: Status) {
        let welcome = Welcome {
            magic: HANDSHAKE_MAGIC,
            version: PROTOCOL_VERSION,
            status: status as u32,
            ..Welcome::default()
        };
        let _ = send_with_fds(stream, bytemuck::bytes_of(&welcome), &[]);
    }

    /// Read the hello, create the client's segment, hand it over, attach the client.
    fn handshake(&mut self, mut stream: UnixStream) {
        let mut raw = [0u8; std::mem::size_of::<Hello>()];
        match stream.read(&mut raw) {
            Ok(n) if n == raw.len() => {}
            _ => return, // closed, short or garbage hello: drop the connection
        }
        let hello: Hello = bytemuck::pod_read_unaligned(&raw);
        if hello.magic != HANDSHAKE_MAGIC || hello.version != PROTOCOL_VERSION {
            Self::refuse(&stream, Status::BadFrame);
            return;
        }
        let Ok(creds) = peer_credentials(&stream) else {
            return;
        };
        let user = match hello.act_as() {
            Ok(None) => user_name_for_uid(creds.uid),
            Ok(Some(_)) if creds.uid != 0 => {
                eprintln!(
                    "tabosd: refusing pid {}: only root may act as another user",
                    creds.pid
                );
                Self::refuse(&stream, Status::PermissionDenied);
                return;
            }
            Ok(Some(name)) => name.to_string(),
            Err(_) => {
                Self::refuse(&stream, Status::BadArgs);
                return;
            }
        };
        let Some(user) = UserName::new(&user) else {
            eprintln!(
                "tabosd: refusing pid {}: `{user}` is not a valid tabos user name",
                creds.pid
            );
            Self::refuse(&stream, Status::BadArgs);
            return;
        };
        let caller = Caller {
            uid: creds.uid,
            pid: creds.pid,
            user,
        };
        if self.clients.len() >= self.clients_max {
            eprintln!(
                "tabosd: refusing pid {}: {} clients connected (--clients-max)",
                creds.pid,
                self.clients.len()
            );
            Self::refuse(&stream, Status::TableFull);
            return;
        }
        let segment = match Segment::create(self.shape) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("tabosd: cannot create a segment for pid {}: {e}", creds.pid);
                Self::refuse(&stream, Status::TableFull);
                return;
            }
        };
        let client_id = self.next_client_id;
        self.next_client_id += 1;
        let stream = Arc::new(stream);
        // Attach before the welcome: a client may write as soon as it has the rings,
        // and the attach rings each partition's doorbell.
        for (p, inbox) in self.node.inboxes.iter().enumerate() {
            let port = Port {
                client_id,
                requests: Consumer::new(segment.request_ring(p as u32)),
                responses: Producer::new(segment.response_ring(p as u32)),
                peer: Peer::Local {
                    caller,
                    segment: segment.clone(),
                    socket: stream.clone(),
                },
                dirty: false,
                calls: 0,
                held: Default::default(),
            };
            inbox.send(Command::Attach(Box::new(port)));
        }
        let welcome = Welcome {
            magic: HANDSHAKE_MAGIC,
            version: PROTOCOL_VERSION,
            status: 0,
            partition_count: self.node.global_partition_count,
            ring_bytes: self.shape.ring_bytes as u64,
            max_payload_bytes: self.node.max_payload_bytes as u32,
            node_id: self.node.node_id,
            client_id,
            partition_span: 0,
        }
        .with_span(self.node.partition_base, self.node.inboxes.len() as u32);
        let mut fds: Vec<BorrowedFd<'_>> = vec![segment.as_fd()];
        fds.extend(self.node.inboxes.iter().map(|i| i.doorbell.as_fd()));
        if let Err(e) = send_with_fds(&stream, bytemuck::bytes_of(&welcome), &fds) {
            eprintln!("tabosd: handshake with pid {} failed: {e}", creds.pid);
            for inbox in &self.node.inboxes {
                inbox.send(Command::Detach(client_id));
            }
            return;
        }
        self.clients.insert(
            client_id,
            Connected {
                stream,
                pid: creds.pid,
            },
        );
    }

    fn detach(&mut self, client_id: u64) {
        if let Some(client) = self.clients.remove(&client_id) {
            let _ = client.stream.shutdown(std::net::Shutdown::Both);
            let _ = client.pid;
            for inbox in &self.node.inboxes {
                inbox.send(Command::Detach(client_id));
            }
        }
    }
}
