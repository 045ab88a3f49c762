//! [`Client`]: one connection to one node, over shared memory when the node is local
//! (a Unix socket path) or over TCP when it is remote (`HOST:PORT`). The same calls,
//! pipelining included, work over both.

use crate::error::Error;
use crate::link_net::{NetLink, NET_WINDOW};
use crate::link_shm::{ShmLink, LIVENESS_CHECK};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tabos_transport::handshake::Welcome;
use tabos_transport::wire::{partition_for_key, Header};
use tabos_transport::Status;

/// One finished call of the pipelined interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The id [`Client::submit`] returned.
    pub request_id: u64,
    /// Partition that executed it.
    pub partition: u32,
    /// Raw status code.
    pub status_code: u32,
    /// Reply payload (empty unless the status is `Ok`).
    pub reply: Vec<u8>,
}

impl Completion {
    /// The reply, or the error status.
    pub fn into_result(self) -> Result<Vec<u8>, Error> {
        if self.status_code == Status::Ok as u32 {
            Ok(self.reply)
        } else {
            Err(Error::from_code(self.status_code))
        }
    }
}

/// How to connect.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Act as this user (locally only root may; over the network the cluster secret
    /// vouches for the claim until real authentication arrives).
    pub act_as: Option<String>,
    /// File with the cluster secret, for `HOST:PORT` targets. Default: the file named
    /// by `TABOS_SECRET_FILE`.
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug)]
enum Link {
    Shm(ShmLink),
    Net(NetLink),
}

/// A connection to one tabos node. Not shared between threads: open one per thread.
#[derive(Debug)]
pub struct Client {
    link: Link,
    welcome: Welcome,
    next_request_id: u64,
    in_flight: usize,
    stash: VecDeque<Completion>,
    broken: Option<String>,
}

/// Whether `target` names a network node (`HOST:PORT`) rather than a Unix socket path.
pub fn is_network_target(target: &str) -> bool {
    !target.contains('/')
        && target
            .rsplit_once(':')
            .is_some_and(|(_, port)| port.parse::<u16>().is_ok())
}

impl Client {
    /// Connect to the node at `target`: a Unix socket path (shared memory) or
    /// `HOST:PORT` (TCP, proving the secret in `TABOS_SECRET_FILE`).
    pub fn connect(target: impl AsRef<Path>) -> Result<Client, Error> {
        Client::connect_with(target, &ConnectOptions::default())
    }

    /// [`Client::connect`] acting as user `act_as` (locally only root may).
    pub fn connect_as(target: impl AsRef<Path>, act_as: Option<&str>) -> Result<Client, Error> {
        let options = ConnectOptions {
            act_as: act_as.map(str::to_string),
            ..ConnectOptions::default()
        };
        Client::connect_with(target, &options)
    }

    /// Connect with explicit options.
    pub fn connect_with(
        target: impl AsRef<Path>,
        options: &ConnectOptions,
    ) -> Result<Client, Error> {
        let target = target.as_ref();
        let text = target.to_string_lossy();
        let act_as = options.act_as.as_deref();
        let (link, welcome) = if is_network_target(&text) {
            let file = options
                .secret_file
                .clone()
                .or_else(|| std::env::var_os("TABOS_SECRET_FILE").map(PathBuf::from));
            let Some(file) = file else {
                return Err(Error::Transport(format!(
                    "{text} is a network node: give the cluster secret with --secret-file or TABOS_SECRET_FILE"
                )));
            };
            let secret = tabos_transport::net::read_secret_file(&file).map_err(Error::Transport)?;
            let (link, welcome) = NetLink::connect(&text, &secret, act_as)?;
            (Link::Net(link), welcome)
        } else {
            let (link, welcome) = ShmLink::connect(target, act_as)?;
            (Link::Shm(link), welcome)
        };
        Ok(Client {
            link,
            welcome,
            next_request_id: 1,
            in_flight: 0,
            stash: VecDeque::new(),
            broken: None,
        })
    }

    /// Whether this client talks to its node over the network.
    pub fn is_remote(&self) -> bool {
        matches!(self.link, Link::Net(_))
    }

    /// Partitions on the node.
    pub fn partition_count(&self) -> u32 {
        self.welcome.partition_count
    }

    /// The node's id.
    pub fn node_id(&self) -> u32 {
        self.welcome.node_id
    }

    /// Largest request or reply payload the node accepts.
    pub fn max_payload_bytes(&self) -> usize {
        self.welcome.max_payload_bytes as usize
    }

    /// The partition that owns `key`.
    pub fn partition_for_key(&self, key: &[u8]) -> u32 {
        partition_for_key(key, self.partition_count())
    }

    /// Calls submitted and not yet returned by [`Client::poll`] or [`Client::wait`].
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn check_broken(&self) -> Result<(), Error> {
        match &self.broken {
            Some(why) => Err(Error::Transport(why.clone())),
            None => Ok(()),
        }
    }

    /// Remember a transport failure: the connection is unusable from now on.
    fn fail(&mut self, e: Error) -> Error {
        if let Error::Transport(why) = &e {
            self.broken.get_or_insert_with(|| why.clone());
        }
        e
    }

    fn validate(&self, partition: u32, args: &[u8]) -> Result<(), Error> {
        self.check_broken()?;
        if partition >= self.partition_count() {
            return Err(Error::Status(Status::BadPartition));
        }
        if args.len() > self.max_payload_bytes() {
            return Err(Error::Status(Status::PayloadTooLarge));
        }
        Ok(())
    }

    /// Queue a call of `proc_id` on `partition`; returns its request id. Nothing is
    /// sent before [`Client::flush`] (or a wait). When the ring (or, remotely, the
    /// window of calls in flight) is full, this sends what is queued and collects
    /// replies until there is room.
    pub fn submit(&mut self, proc_id: u32, partition: u32, args: &[u8]) -> Result<u64, Error> {
        self.validate(partition, args)?;
        let request_id = self.next_request_id;
        let header = Header::request(request_id, proc_id, partition, args.len() as u32);
        // The clock is read only once the ring is full: not on the fast path.
        let mut full_since: Option<Instant> = None;
        loop {
            let pushed = match &mut self.link {
                Link::Shm(link) => link.try_push(header, args),
                Link::Net(link) if self.in_flight < NET_WINDOW => link.try_push(header, args),
                Link::Net(_) => Ok(false),
            };
            if pushed.map_err(|e| self.fail(e))? {
                break;
            }
            self.flush();
            self.check_broken()?;
            if matches!(self.link, Link::Net(_)) {
                // The window is full: wait for replies rather than spin.
                self.block_until_reply()?;
                continue;
            }
            self.collect_into_stash()?;
            if full_since.get_or_insert_with(Instant::now).elapsed() > LIVENESS_CHECK {
                self.check_alive()?;
                full_since = None;
            }
            std::hint::spin_loop();
        }
        self.next_request_id += 1;
        self.in_flight += 1;
        Ok(request_id)
    }

    /// Send queued requests (publish the rings and ring the doorbell of partitions
    /// that sleep, or write them to the socket). A transport failure here surfaces
    /// at the next call.
    pub fn flush(&mut self) {
        let result = match &mut self.link {
            Link::Shm(link) => {
                link.flush();
                Ok(())
            }
            Link::Net(link) => link.flush(&mut self.stash),
        };
        if let Err(e) = result {
            self.fail(e);
        }
    }

    fn collect_into_stash(&mut self) -> Result<usize, Error> {
        let collected = match &mut self.link {
            Link::Shm(link) => link.collect(&mut self.stash),
            Link::Net(link) => link.collect(&mut self.stash),
        };
        collected.map_err(|e| self.fail(e))
    }

    fn block_until_reply(&mut self) -> Result<(), Error> {
        let waited = match &mut self.link {
            Link::Shm(link) => link.block_until_reply(),
            Link::Net(link) => link.block_until_reply(&mut self.stash),
        };
        waited.map_err(|e| self.fail(e))
    }

    fn check_alive(&mut self) -> Result<(), Error> {
        let alive = match &self.link {
            Link::Shm(link) => link.check_alive(),
            Link::Net(_) => Ok(()),
        };
        alive.map_err(|e| self.fail(e))
    }

    /// Move finished calls into `out` without waiting. Returns how many.
    pub fn poll(&mut self, out: &mut Vec<Completion>) -> Result<usize, Error> {
        self.check_broken()?;
        self.flush();
        self.check_broken()?;
        self.collect_into_stash()?;
        let n = self.stash.len();
        out.extend(self.stash.drain(..));
        self.in_flight -= n;
        Ok(n)
    }

    /// Wait until at least `min` calls (capped at those in flight) have finished and
    /// move every finished call into `out`.
    pub fn wait(&mut self, out: &mut Vec<Completion>, min: usize) -> Result<usize, Error> {
        let min = min.min(self.in_flight);
        let mut got = self.poll(out)?;
        while got < min {
            self.block_until_reply()?;
            got += self.poll(out)?;
        }
        Ok(got)
    }

    /// Wait for the calls `request_ids` (all submitted earlier) and return their
    /// completions in that order; other finished calls stay for [`Client::poll`] or
    /// [`Client::wait`].
    pub fn wait_for(&mut self, request_ids: &[u64]) -> Result<Vec<Completion>, Error> {
        self.check_broken()?;
        self.flush();
        let mut found: Vec<Option<Completion>> = vec![None; request_ids.len()];
        let mut missing = request_ids.len();
        loop {
            self.collect_into_stash()?;
            let mut i = 0;
            while i < self.stash.len() && missing > 0 {
                match request_ids
                    .iter()
                    .position(|id| *id == self.stash[i].request_id)
                {
                    Some(slot) if found[slot].is_none() => {
                        found[slot] = self.stash.remove(i);
                        self.in_flight -= 1;
                        missing -= 1;
                    }
                    _ => i += 1,
                }
            }
            if missing == 0 {
                return Ok(found
                    .into_iter()
                    .map(|c| c.expect("every id was found"))
                    .collect());
            }
            self.block_until_reply()?;
        }
    }

    /// Call `proc_id` on `partition` and wait for its reply.
    pub fn call(&mut self, proc_id: u32, partition: u32, args: &[u8]) -> Result<Vec<u8>, Error> {
        let mut reply = Vec::new();
        self.call_into(proc_id, partition, args, &mut reply)?;
        Ok(reply)
    }

    /// Call `proc_id` on the partition that owns `key`.
    pub fn call_key(&mut self, proc_id: u32, key: &[u8], args: &[u8]) -> Result<Vec<u8>, Error> {
        let partition = self.partition_for_key(key);
        self.call(proc_id, partition, args)
    }

    /// [`Client::call`] into a caller-owned buffer (no allocation on the fast path).
    pub fn call_into(
        &mut self,
        proc_id: u32,
        partition: u32,
        args: &[u8],
        reply: &mut Vec<u8>,
    ) -> Result<(), Error> {
        let request_id = self.submit(proc_id, partition, args)?;
        self.flush();
        self.check_broken()?;
        // Fast path: nothing else in flight, so the next frame on this lane is ours.
        if self.in_flight == 1 && self.stash.is_empty() {
            if let Link::Shm(link) = &mut self.link {
                loop {
                    if let Some(h) = link.pop_from(partition, reply)? {
                        self.in_flight -= 1;
                        assert_eq!(
                            h.request_id, request_id,
                            "responses on a lane come in request order"
                        );
                        return status_result(h.status);
                    }
                    if let Err(e) = link.block_until_reply() {
                        return Err(self.fail(e));
                    }
                }
            }
        }
        loop {
            self.collect_into_stash()?;
            if let Some(pos) = self.stash.iter().position(|c| c.request_id == request_id) {
                let done = self.stash.remove(pos).expect("position is valid");
                self.in_flight -= 1;
                *reply = done.reply;
                return status_result(done.status_code);
            }
            self.block_until_reply()?;
        }
    }
}

fn status_result(code: u32) -> Result<(), Error> {
    if code == Status::Ok as u32 {
        Ok(())
    } else {
        Err(Error::from_code(code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_told_apart() {
        assert!(is_network_target("127.0.0.1:7100"));
        assert!(is_network_target("node3:7100"));
        assert!(!is_network_target("/tmp/tabos.sock"));
        assert!(!is_network_target("tabos.sock"));
        assert!(!is_network_target("./a:1"));
    }
}
