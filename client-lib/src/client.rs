//! [`Client`]: one connection to one node, over shared memory when the node is local
//! (a Unix socket path) or over TCP when it is remote (`HOST:PORT`), or over RDMA
//! verbs (`rdma://HOST:PORT`, or a node the cluster map says speaks RDMA; a build with
//! the `rdma` feature). The same calls, pipelining included, work over all three.

use crate::error::Error;
use crate::link_net::{NetLink, NET_WINDOW};
#[cfg(feature = "rdma")]
use crate::link_rdma::RdmaLink;
use crate::link_shm::{ShmLink, LIVENESS_CHECK};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tabos_procs::builtin::{decode_cluster_map, NodeInfo};
use tabos_procs::ids;
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
    /// Boxed: a queue pair's bookkeeping is several times a socket's.
    #[cfg(feature = "rdma")]
    Rdma(Box<RdmaLink>),
}

impl Link {
    fn try_push(&mut self, header: Header, args: &[u8], in_flight: usize) -> Result<bool, Error> {
        match self {
            Link::Shm(link) => link.try_push(header, args),
            Link::Net(link) if in_flight < NET_WINDOW => link.try_push(header, args),
            Link::Net(_) => Ok(false),
            #[cfg(feature = "rdma")]
            Link::Rdma(link) if in_flight < NET_WINDOW => link.try_push(header, args),
            #[cfg(feature = "rdma")]
            Link::Rdma(_) => Ok(false),
        }
    }

    /// Whether this link crosses the network (TCP or RDMA) rather than shared memory.
    fn is_network(&self) -> bool {
        !matches!(self, Link::Shm(_))
    }

    fn flush(&mut self, stash: &mut VecDeque<Completion>) -> Result<(), Error> {
        match self {
            Link::Shm(link) => {
                link.flush();
                Ok(())
            }
            Link::Net(link) => link.flush(stash),
            #[cfg(feature = "rdma")]
            Link::Rdma(link) => link.flush(stash),
        }
    }

    fn collect(&mut self, stash: &mut VecDeque<Completion>) -> Result<usize, Error> {
        match self {
            Link::Shm(link) => link.collect(stash),
            Link::Net(link) => link.collect(stash),
            #[cfg(feature = "rdma")]
            Link::Rdma(link) => link.collect(stash),
        }
    }

    fn block_until_reply(&mut self, stash: &mut VecDeque<Completion>) -> Result<(), Error> {
        match self {
            Link::Shm(link) => link.block_until_reply(),
            Link::Net(link) => link.block_until_reply(stash),
            #[cfg(feature = "rdma")]
            Link::Rdma(link) => link.block_until_reply(stash),
        }
    }

    fn check_alive(&self) -> Result<(), Error> {
        match self {
            Link::Shm(link) => link.check_alive(),
            Link::Net(_) => Ok(()),
            #[cfg(feature = "rdma")]
            Link::Rdma(_) => Ok(()),
        }
    }
}

/// How long a client waiting on several nodes spins before it naps between looks.
const SPIN_MULTI: Duration = Duration::from_micros(50);

/// How long a node that failed is reported down before the client tries it again.
const RECONNECT_AFTER: Duration = Duration::from_millis(200);

/// One node of the cluster as the client sees it.
#[derive(Debug)]
struct NodeLink {
    info: NodeInfo,
    link: Option<Link>,
    /// Calls sent to this node and not yet collected.
    in_flight: usize,
    /// Why and since when the node is unreachable.
    down: Option<(Instant, String)>,
}

/// A connection to a tabos node, and through it to every node of its cluster: each
/// call goes straight to the node that owns its partition (shared memory for the
/// node connected to by socket path, TCP for the others). Not shared between
/// threads: open one per thread.
#[derive(Debug)]
pub struct Client {
    nodes: Vec<NodeLink>,
    /// Node index of each global partition.
    route: Vec<u32>,
    /// Who this client is to the other nodes: the user it acts as, or, when it reached
    /// its first node by socket, the local user the kernel vouched for.
    identity: Option<String>,
    secret: Option<Vec<u8>>,
    welcome: Welcome,
    next_request_id: u64,
    in_flight: usize,
    /// Which node each call in flight went to (only with several nodes).
    owner: HashMap<u64, u32>,
    /// Extra copies of replicated writes sent to the other nodes: their completions
    /// are dropped (the caller gets the first node's).
    shadows: HashSet<u64>,
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
    /// Connect to the node at `target`: a Unix socket path (shared memory),
    /// `HOST:PORT` (TCP, proving the secret in `TABOS_SECRET_FILE`) or
    /// `rdma://HOST:PORT` (RDMA verbs, the same secret; a build with `--features rdma`).
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
        let secret = secret_of(options)?;
        let rdma_address = text.strip_prefix(RDMA_SCHEME);
        let (link, welcome) = if let Some(address) = rdma_address {
            let Some(secret) = &secret else {
                return Err(Error::Transport(format!(
                    "{text} is a network node: give the cluster secret with --secret-file or TABOS_SECRET_FILE"
                )));
            };
            connect_rdma(address, secret, act_as)?
        } else if is_network_target(&text) {
            let Some(secret) = &secret else {
                return Err(Error::Transport(format!(
                    "{text} is a network node: give the cluster secret with --secret-file or TABOS_SECRET_FILE"
                )));
            };
            let (link, welcome) = NetLink::connect(&text, secret, act_as)?;
            (Link::Net(link), welcome)
        } else {
            let (link, welcome) = ShmLink::connect(target, act_as)?;
            (Link::Shm(link), welcome)
        };
        let home = NodeInfo {
            node_id: welcome.node_id,
            partition_base: welcome.partition_base(),
            partition_count: welcome.local_partitions(),
            address: match rdma_address {
                Some(address) => address.to_string(),
                None if is_network_target(&text) => text.to_string(),
                None => String::new(),
            },
            socket: text.to_string(),
            rdma: rdma_address.is_some(),
        };
        let mut client = Client {
            nodes: vec![NodeLink {
                info: home,
                link: Some(link),
                in_flight: 0,
                down: None,
            }],
            route: vec![0; welcome.partition_count as usize],
            identity: options.act_as.clone().or_else(|| {
                (!is_network_target(&text)).then(tabos_transport::handshake::current_user_name)
            }),
            secret,
            welcome,
            next_request_id: 1,
            in_flight: 0,
            owner: HashMap::new(),
            shadows: HashSet::new(),
            stash: VecDeque::new(),
            broken: None,
        };
        if welcome.local_partitions() != welcome.partition_count {
            client.learn_cluster()?;
        }
        Ok(client)
    }

    /// Ask the node we connected to for the cluster map and route by it.
    fn learn_cluster(&mut self) -> Result<(), Error> {
        let base = self.welcome.partition_base();
        let reply = self.call(ids::SYS_CLUSTER_MAP, base, &[])?;
        let map = decode_cluster_map(&reply)
            .map_err(|_| Error::Transport("the node sent a malformed cluster map".into()))?;
        let total: u32 = map.iter().map(|n| n.partition_count).sum();
        if total != self.welcome.partition_count
            || !map.iter().any(|n| n.node_id == self.welcome.node_id)
        {
            return Err(Error::Transport(
                "the node's cluster map does not match its welcome".into(),
            ));
        }
        let mut home = self.nodes.pop().expect("the home node");
        self.route.clear();
        for (index, info) in map.into_iter().enumerate() {
            self.route.extend(std::iter::repeat_n(
                index as u32,
                info.partition_count as usize,
            ));
            if info.node_id == home.info.node_id {
                home.info.address = info.address;
                home.info.rdma = info.rdma;
                let home = std::mem::replace(&mut home, NodeLink::empty());
                self.nodes.push(home);
            } else {
                self.nodes.push(NodeLink {
                    info,
                    ..NodeLink::empty()
                });
            }
        }
        Ok(())
    }

    /// The cluster's nodes, and whether this client reaches each now (`None`: not
    /// tried yet; `Some(Err(why))`: down).
    pub fn nodes(&self) -> Vec<(NodeInfo, Option<Result<(), String>>)> {
        self.nodes
            .iter()
            .map(|n| {
                let state = match (&n.link, &n.down) {
                    (Some(_), _) => Some(Ok(())),
                    (None, Some((_, why))) => Some(Err(why.clone())),
                    (None, None) => None,
                };
                (n.info.clone(), state)
            })
            .collect()
    }

    /// Try to reach every node now (for `tabos status`).
    pub fn probe_nodes(&mut self) {
        for index in 0..self.nodes.len() {
            if self.nodes[index].link.is_none() {
                self.nodes[index].down = None;
                let _ = self.ensure_link(index);
            }
        }
    }

    /// Connect to node `index` if not connected; fail fast while it is reported down.
    fn ensure_link(&mut self, index: usize) -> Result<(), Error> {
        let node = &mut self.nodes[index];
        if node.link.is_some() {
            return Ok(());
        }
        if let Some((since, why)) = &node.down {
            if since.elapsed() < RECONNECT_AFTER {
                return Err(Error::Transport(why.clone()));
            }
        }
        let scheme = if node.info.rdma { RDMA_SCHEME } else { "" };
        let name = format!("node {} ({scheme}{})", node.info.node_id, node.info.address);
        let result = match &self.secret {
            _ if node.info.address.is_empty() => Err(Error::Transport(
                "it does not listen for remote calls".into(),
            )),
            None => Err(Error::Transport(
                "no cluster secret: give --secret-file or TABOS_SECRET_FILE".into(),
            )),
            Some(secret) if node.info.rdma => {
                connect_rdma(&node.info.address, secret, self.identity.as_deref())
            }
            Some(secret) => NetLink::connect(&node.info.address, secret, self.identity.as_deref())
                .map(|(link, welcome)| (Link::Net(link), welcome)),
        };
        let why = match result {
            Ok((link, welcome)) if welcome.partition_base() == node.info.partition_base => {
                node.link = Some(link);
                node.down = None;
                return Ok(());
            }
            Ok(_) => format!("{name} owns other partitions than the cluster map says"),
            Err(e) => format!("{name} is unreachable: {e}"),
        };
        node.down = Some((Instant::now(), why.clone()));
        Err(Error::Transport(why))
    }

    /// Node `index` failed: drop its link and answer its calls in flight with
    /// `NodeUnavailable`, so nobody waits for them.
    fn node_failed(&mut self, index: usize, e: Error) -> Error {
        if self.nodes.len() == 1 {
            return self.fail(e);
        }
        let node = &mut self.nodes[index];
        let why = format!(
            "node {} ({}) is unreachable: {e}",
            node.info.node_id, node.info.address
        );
        node.link = None;
        node.down = Some((Instant::now(), why.clone()));
        node.in_flight = 0;
        let partition = node.info.partition_base;
        let lost: Vec<u64> = self
            .owner
            .iter()
            .filter(|(_, n)| **n as usize == index)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.owner.remove(&id);
            if self.shadows.remove(&id) {
                self.in_flight -= 1;
                continue;
            }
            self.stash.push_back(Completion {
                request_id: id,
                partition,
                status_code: Status::NodeUnavailable as u32,
                reply: Vec::new(),
            });
        }
        Error::Transport(why)
    }

    /// Whether this client talks to the node it connected to over the network.
    pub fn is_remote(&self) -> bool {
        let home = self.route[self.welcome.partition_base() as usize] as usize;
        self.nodes[home].link.as_ref().is_some_and(Link::is_network)
    }

    /// Partitions in the cluster (global partition ids run `0..partition_count`).
    pub fn partition_count(&self) -> u32 {
        self.welcome.partition_count
    }

    /// The id of the node this client connected to.
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
        self.in_flight - self.shadows.len()
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
    /// replies until there is room. In a cluster, a write to replicated tables goes to
    /// every node; the id is that of the copy sent to `partition`'s node.
    pub fn submit(&mut self, proc_id: u32, partition: u32, args: &[u8]) -> Result<u64, Error> {
        self.validate(partition, args)?;
        let request_id = self.submit_to(proc_id, partition, args)?;
        if self.nodes.len() > 1 && self.is_broadcast(proc_id) {
            let home = self.route[partition as usize] as usize;
            for index in 0..self.nodes.len() {
                if index != home {
                    let base = self.nodes[index].info.partition_base;
                    let shadow = self.submit_to(proc_id, base, args)?;
                    self.shadows.insert(shadow);
                }
            }
        }
        Ok(request_id)
    }

    fn is_broadcast(&self, proc_id: u32) -> bool {
        static REGISTRY: std::sync::OnceLock<tabos_engine::Registry<tabos_procs::PartitionDb>> =
            std::sync::OnceLock::new();
        let registry = REGISTRY.get_or_init(tabos_procs::registry);
        registry
            .get(proc_id)
            .is_some_and(|d| d.scope == tabos_engine::Scope::Broadcast)
    }

    fn submit_to(&mut self, proc_id: u32, partition: u32, args: &[u8]) -> Result<u64, Error> {
        let index = self.route[partition as usize] as usize;
        if self.nodes.len() > 1 {
            self.ensure_link(index)?;
        }
        let request_id = self.next_request_id;
        let header = Header::request(request_id, proc_id, partition, args.len() as u32);
        // The clock is read only once the ring is full: not on the fast path.
        let mut full_since: Option<Instant> = None;
        loop {
            let node = &mut self.nodes[index];
            let Some(link) = node.link.as_mut() else {
                return Err(Error::Transport(
                    node.down
                        .as_ref()
                        .map_or("node down".into(), |d| d.1.clone()),
                ));
            };
            match link.try_push(header, args, node.in_flight) {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return Err(self.node_failed(index, e)),
            }
            self.flush();
            self.check_broken()?;
            if self.nodes[index]
                .link
                .as_ref()
                .is_some_and(Link::is_network)
            {
                // The window is full: wait for replies rather than spin.
                self.block_until_reply()?;
                continue;
            }
            self.collect_into_stash()?;
            if full_since.get_or_insert_with(Instant::now).elapsed() > LIVENESS_CHECK {
                if let Some(Err(e)) = self.nodes[index].link.as_ref().map(Link::check_alive) {
                    return Err(self.node_failed(index, e));
                }
                full_since = None;
            }
            std::hint::spin_loop();
        }
        self.next_request_id += 1;
        self.in_flight += 1;
        self.nodes[index].in_flight += 1;
        if self.nodes.len() > 1 {
            self.owner.insert(request_id, index as u32);
        }
        Ok(request_id)
    }

    /// Send queued requests (publish the rings and ring the doorbell of partitions
    /// that sleep, or write them to the socket). A transport failure here surfaces
    /// at the next call.
    pub fn flush(&mut self) {
        for index in 0..self.nodes.len() {
            let node = &mut self.nodes[index];
            if let Some(link) = node.link.as_mut() {
                // Sending may read replies (so a peer blocked on writing to us goes on).
                let before = self.stash.len();
                let flushed = link.flush(&mut self.stash);
                self.account(before);
                if let Err(e) = flushed {
                    self.node_failed(index, e);
                }
            }
        }
    }

    /// Move arrived replies into the stash, keeping the per-node counts right.
    fn collect_into_stash(&mut self) -> Result<usize, Error> {
        let before = self.stash.len();
        for index in 0..self.nodes.len() {
            let node = &mut self.nodes[index];
            let Some(link) = node.link.as_mut() else {
                continue;
            };
            if let Err(e) = link.collect(&mut self.stash) {
                let e = self.node_failed(index, e);
                if self.nodes.len() == 1 {
                    return Err(e);
                }
            }
        }
        self.account(before);
        Ok(self.stash.len() - before)
    }

    /// Settle replies that links moved into the stash from index `from` on: each
    /// leaves its node's count of calls in flight, and copies of replicated writes
    /// sent to other nodes are dropped.
    fn account(&mut self, from: usize) {
        if self.nodes.len() == 1 {
            let node = &mut self.nodes[0];
            node.in_flight = node.in_flight.saturating_sub(self.stash.len() - from);
            return;
        }
        let mut i = from;
        while i < self.stash.len() {
            let id = self.stash[i].request_id;
            if let Some(index) = self.owner.remove(&id) {
                let node = &mut self.nodes[index as usize];
                node.in_flight = node.in_flight.saturating_sub(1);
            }
            if self.shadows.remove(&id) {
                self.stash.remove(i);
                self.in_flight -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// Wait until a reply arrives from some node.
    fn block_until_reply(&mut self) -> Result<(), Error> {
        if self.nodes.len() == 1 {
            let node = &mut self.nodes[0];
            let Some(link) = node.link.as_mut() else {
                return self.check_broken();
            };
            // A network link may read replies while it waits: count them as arrived.
            let before = self.stash.len();
            let waited = link.block_until_reply(&mut self.stash);
            self.account(before);
            return waited.map_err(|e| self.fail(e));
        }
        // Several nodes: look at each in turn, napping briefly between rounds.
        let started = Instant::now();
        loop {
            if self.collect_into_stash()? > 0 || !self.stash.is_empty() {
                return Ok(());
            }
            if started.elapsed() > SPIN_MULTI {
                std::thread::sleep(Duration::from_micros(100));
            } else {
                std::thread::yield_now();
            }
        }
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
        let min = min.min(self.in_flight());
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
        // Fast path: one node, nothing else in flight, so the next frame is ours.
        if self.in_flight == 1 && self.stash.is_empty() && self.nodes.len() == 1 {
            if let Some(Link::Shm(link)) = &mut self.nodes[0].link {
                loop {
                    match link.pop_from(partition, reply) {
                        Ok(Some(h)) => {
                            self.in_flight -= 1;
                            self.nodes[0].in_flight -= 1;
                            assert_eq!(
                                h.request_id, request_id,
                                "responses on a lane come in request order"
                            );
                            return status_result(h.status);
                        }
                        Ok(None) => {}
                        Err(e) => return Err(self.fail(e)),
                    }
                    if let Err(e) = link.block_until_reply() {
                        return Err(self.fail(e));
                    }
                }
            }
        }
        let done = self.wait_for(&[request_id])?.pop().expect("one completion");
        if done.status_code == Status::NodeUnavailable as u32 {
            let index = self.route[partition as usize] as usize;
            let why = self.nodes[index].down.as_ref().map_or_else(
                || format!("node {} is unreachable", self.nodes[index].info.node_id),
                |d| d.1.clone(),
            );
            return Err(Error::Transport(why));
        }
        *reply = done.reply;
        status_result(done.status_code)
    }
}

impl NodeLink {
    fn empty() -> NodeLink {
        NodeLink {
            info: NodeInfo::default(),
            link: None,
            in_flight: 0,
            down: None,
        }
    }
}

/// Prefix of a target reached over RDMA: `rdma://HOST:PORT`.
const RDMA_SCHEME: &str = "rdma://";

/// Connect to the node at `address` (HOST:PORT) over RDMA verbs.
#[cfg(feature = "rdma")]
fn connect_rdma(
    address: &str,
    secret: &[u8],
    act_as: Option<&str>,
) -> Result<(Link, Welcome), Error> {
    RdmaLink::connect(address, secret, act_as)
        .map(|(link, welcome)| (Link::Rdma(Box::new(link)), welcome))
}

/// Without the `rdma` feature, a node that speaks RDMA cannot be reached.
#[cfg(not(feature = "rdma"))]
fn connect_rdma(
    address: &str,
    _secret: &[u8],
    _act_as: Option<&str>,
) -> Result<(Link, Welcome), Error> {
    Err(Error::Transport(format!(
        "{address} serves remote calls over RDMA, and this client was built without RDMA support: rebuild it with `--features rdma` (cargo build -p tabos-client --features rdma)"
    )))
}

/// The cluster secret named by the options or `TABOS_SECRET_FILE`, if any.
fn secret_of(options: &ConnectOptions) -> Result<Option<Vec<u8>>, Error> {
    let file = options
        .secret_file
        .clone()
        .or_else(|| std::env::var_os("TABOS_SECRET_FILE").map(PathBuf::from));
    match file {
        Some(file) => tabos_transport::net::read_secret_file(&file)
            .map(Some)
            .map_err(Error::Transport),
        None => Ok(None),
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
