//! Deterministic network simulator: one [`Relay`] and several [`Client`]s
//! (edges, and optionally the bridge) exchanging UDP datagrams through an
//! in-memory queue, under a hand-moved clock.
//!
//! These are the engines the binary runs (protocol version 2), with time
//! passed in: uplink handshakes with the relay, member lists, member
//! handshakes through the relay, switching at the members, key rotation.
//! [`Net`] is a [`Fabric`] for [`World`]: virtual hosts sit behind edges'
//! "TAPs", the bridge's [`Nat`](crate::core::nat::Nat) behind its own client,
//! and every datagram is delivered in order and traced as one line.
//!
//! The simulator holds no key a member holds, so it can't open what members
//! seal: a trace line names what the wire shows, the kind and the member id
//! of routed datagrams (`for` the destination on the way to the relay,
//! `from` the source on the way out), and a control message by its length
//! (each has its own). Frames show where members read and deliver them
//! (`tap→`, `tap←`). Member identities and the wall clock are fixed and
//! member ids name nodes, so traces are reproducible; indexes, ephemeral
//! keys and ciphertexts are random and never printed.

use std::{
    collections::VecDeque,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use crate::core::{
    client::{Client, ClientConfig, ClientEvent, MemberEvent},
    offload::VnetHdr,
    proto::{
        codec::{self, control, data, routed, Kind, MEMBER_ENTRY_LEN, TAG_LEN},
        session::WallClock,
        Identity, MemberId, RelayKey,
    },
    relay::{Relay, RelayAction, RelayConfig, RelayEvent},
    sim::{Cx, Fabric, Host, Queue, World, BRIDGE},
    wire::{NetworkKey, WireError},
};

/// A member's configuration in these scenarios: everything through the
/// relay (they are about the relay path; [`direct_paths`] tests the other).
pub(crate) fn relayed() -> ClientConfig {
    ClientConfig {
        direct: false,
        ..ClientConfig::default()
    }
}

/// The relay's address.
pub(crate) const RELAY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 7171);

/// What every member's wall clock reads at the simulation's start (TAI64N
/// timestamps of initiations follow the simulated time from there).
pub(crate) const EPOCH: Duration = Duration::from_secs(1_800_000_000);

/// A key of network number `n`.
pub(crate) fn key(n: u8) -> NetworkKey {
    NetworkKey::from_bytes([n; 32])
}

/// The identity of member number `n` (its private key is `n` 32 times).
pub(crate) fn identity(n: u8) -> Identity {
    Identity::from_private([n; 32])
}

/// The address of edge number `n`: 198.51.100.n:5000.
pub(crate) fn edge_addr(n: u8) -> SocketAddr {
    SocketAddr::new(Ipv4Addr::new(198, 51, 100, n).into(), 5000)
}

/// One UDP datagram in flight.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Datagram {
    pub from: SocketAddr,
    pub to: SocketAddr,
    pub bytes: Vec<u8>,
}

/// An edge or bridge: a member's client at a UDP address.
pub(crate) struct Node {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub client: Client,
    /// Who its frames go to and come from first (a virtual host, or
    /// [`BRIDGE`]), then any other names whose MACs live behind it.
    pub behind: Vec<&'static str>,
    /// A stopped node sends nothing and loses what it is sent.
    pub up: bool,
    /// Its identity's number, network key and configuration: what a
    /// restart starts it with again.
    n: u8,
    key: NetworkKey,
    config: ClientConfig,
    next_poll: Option<Instant>,
}

/// The relay, its members and the datagrams between them.
pub(crate) struct Net {
    pub relay: Relay,
    pub relay_config: RelayConfig,
    /// What the relay holds: a relay key per network, never a network key.
    relay_keys: Vec<RelayKey>,
    pub nodes: Vec<Node>,
    queue: VecDeque<Datagram>,
    /// Every datagram delivered (or lost), in order.
    pub wire: Vec<Datagram>,
    /// Every frame a client handed to its TAP (or bridge): node, frame.
    pub tap_rx: Vec<(&'static str, Vec<u8>)>,
    /// The simulated clock's base: members' wall clocks read [`EPOCH`] then.
    pub start: Instant,
    /// Names of members that are no node (made by hand in a test): address,
    /// member id, name.
    aliases: Vec<(SocketAddr, MemberId, &'static str)>,
    /// Pairs of addresses between which datagrams are lost (either way):
    /// a path that stops delivering.
    pub cut: Vec<(SocketAddr, SocketAddr)>,
}

impl Net {
    /// A relay serving the network of each key (holding only its relay
    /// key), with no nodes.
    pub(crate) fn new(relay_config: RelayConfig, keys: &[NetworkKey]) -> Net {
        let relay_keys: Vec<RelayKey> = keys.iter().map(RelayKey::derive).collect();
        Net {
            relay: Relay::new(relay_config.clone(), relay_keys.clone()),
            relay_config,
            relay_keys,
            nodes: Vec::new(),
            queue: VecDeque::new(),
            wire: Vec::new(),
            tap_rx: Vec::new(),
            start: Instant::now(),
            aliases: Vec::new(),
            cut: Vec::new(),
        }
    }

    /// Adds node number `n` (address and identity from `n`) on network
    /// `key`; `behind[0]` is who its TAP (or bridge) delivers to.
    pub(crate) fn add_node(
        &mut self,
        name: &'static str,
        n: u8,
        key: &NetworkKey,
        behind: Vec<&'static str>,
    ) {
        self.add_node_with(name, n, key, behind, relayed());
    }

    /// [`Net::add_node`] with its own client configuration (e.g. `offload`,
    /// as an edge with a vnet TAP or a bridge runs it, or short timers).
    pub(crate) fn add_node_with(
        &mut self,
        name: &'static str,
        n: u8,
        key: &NetworkKey,
        behind: Vec<&'static str>,
        config: ClientConfig,
    ) {
        let client = self.client(n, key, config.clone(), self.start);
        self.nodes.push(Node {
            name,
            addr: edge_addr(n),
            client,
            behind,
            up: true,
            n,
            key: key.clone(),
            config,
            next_poll: None,
        });
    }

    /// A client of member number `n`, started at `now`.
    fn client(&self, n: u8, key: &NetworkKey, config: ClientConfig, now: Instant) -> Client {
        let clock = WallClock::new(self.start, EPOCH);
        Client::new(config, key, identity(n), RELAY, now, clock)
    }

    /// The node called `name`.
    pub(crate) fn node(&self, name: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .expect("no such node")
    }

    /// The node called `name`.
    pub(crate) fn node_mut(&mut self, name: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.name == name)
            .expect("no such node")
    }

    /// Names the member `id` at `addr` in traces, though it is no node.
    pub(crate) fn alias(&mut self, name: &'static str, addr: SocketAddr, id: MemberId) {
        self.aliases.push((addr, id, name));
    }

    /// A name for an address: `relay`, a node's name, an alias, or the
    /// address.
    fn name_of(&self, addr: SocketAddr) -> String {
        if addr == RELAY {
            return "relay".into();
        }
        let node = self.nodes.iter().find(|n| n.addr == addr).map(|n| n.name);
        let alias = || self.aliases.iter().find(|a| a.0 == addr).map(|a| a.2);
        node.or_else(alias)
            .map_or_else(|| addr.to_string(), str::to_string)
    }

    /// A name for a member id: its node's name, an alias, or the id.
    fn member_name(&self, id: MemberId) -> String {
        let node = self.nodes.iter().find(|n| n.client.identity().id() == id);
        let alias = || self.aliases.iter().find(|a| a.1 == id).map(|a| a.2);
        node.map(|n| n.name)
            .or_else(alias)
            .map_or_else(|| id.to_string(), str::to_string)
    }

    /// A short label for a datagram, from what the wire shows (see the
    /// module's documentation).
    fn label(&self, d: &Datagram) -> String {
        let b = &d.bytes;
        let kind = match codec::peek(b) {
            Ok(kind) => kind,
            Err(WireError::BadVersion(v)) => return format!("version {v} datagram"),
            Err(_) => return format!("garbage ({} bytes)", b.len()),
        };
        let to_relay = d.to == RELAY;
        match kind {
            Kind::Control => {
                let plain = b.len() - control::HEADER_LEN - TAG_LEN;
                let what = match (to_relay, plain) {
                    (true, 1) => "Keepalive".to_string(),
                    (true, 5) => "GetMembers".to_string(),
                    (false, 14 | 26) => "KeepaliveAck".to_string(),
                    (false, n) if n >= 13 && (n - 13) % MEMBER_ENTRY_LEN == 0 => {
                        format!("Members[{}]", (n - 13) / MEMBER_ENTRY_LEN)
                    }
                    (_, n) => format!("{n} bytes"),
                };
                format!("Control({what})")
            }
            Kind::PeerInit | Kind::PeerResp | Kind::Data | Kind::PeerPath => {
                let member = self.member_name(codec::member_id(b, routed::MEMBER));
                let direction = if to_relay { "for" } else { "from" };
                let keepalive = routed::OVERHEAD + data::HEADER_LEN + TAG_LEN;
                let what = match kind {
                    Kind::Data if b.len() == keepalive => "Data keepalive".to_string(),
                    kind => format!("{kind:?}"),
                };
                format!("{what} {direction} {member}")
            }
            kind => format!("{kind:?}"),
        }
    }

    /// Puts a datagram on the wire, as if sent by `from` (e.g. a replay).
    pub(crate) fn inject(&mut self, datagram: Datagram) {
        self.queue.push_back(datagram);
    }

    /// Replaces the relay with a new one, as after a restart: every member,
    /// session and initiation timestamp is forgotten.
    pub(crate) fn restart_relay(&mut self, cx: &mut Cx<'_>) {
        cx.log("relay restarts");
        self.relay = Relay::new(self.relay_config.clone(), self.relay_keys.clone());
    }

    /// Replaces node `name`'s client with a new one (same identity, key and
    /// configuration), as after a restart: its sessions are gone.
    pub(crate) fn restart_node(&mut self, cx: &mut Cx<'_>, name: &str) {
        cx.log(format!("{name} restarts"));
        let node = self.node(name);
        let client = self.client(node.n, &node.key.clone(), node.config.clone(), cx.now);
        let node = self.node_mut(name);
        node.client = client;
        node.up = true;
        node.next_poll = None;
    }

    /// When the next node's timers are due (`None` if no node is up).
    fn next_poll(&self, now: Instant) -> Option<Instant> {
        self.nodes
            .iter()
            .filter(|n| n.up)
            .map(|n| n.next_poll.unwrap_or(now))
            .min()
    }

    /// Runs the relay's expiry and the timers of every node due at `now`,
    /// then delivers the datagrams that produced.
    pub(crate) fn poll(&mut self, cx: &mut Cx<'_>) -> Vec<(&'static str, Vec<u8>)> {
        let now = cx.now;
        self.relay.handle_timeout(now);
        self.queue_relay_pushes();
        self.log_relay_events(cx);
        let queue = &mut self.queue;
        for node in self.nodes.iter_mut().filter(|n| n.up) {
            if node.next_poll.is_some_and(|t| t > now) {
                continue;
            }
            let from = node.addr;
            node.client.handle_timeout(now);
            for (to, bytes) in node.client.transmits_to() {
                queue.push_back(Datagram { from, to, bytes });
            }
            node.next_poll = Some(node.client.poll_timeout());
        }
        self.log_member_events(cx);
        self.run(cx)
    }

    fn log_relay_events(&mut self, cx: &mut Cx<'_>) {
        let events: Vec<RelayEvent> = std::iter::from_fn(|| self.relay.poll_event()).collect();
        for event in events {
            let line = match event {
                RelayEvent::Joined { member, addr, .. } => {
                    let (who, at) = (self.member_name(member), self.name_of(addr));
                    if who == at {
                        format!("relay: {who} joined")
                    } else {
                        format!("relay: {who} joined from {at}")
                    }
                }
                RelayEvent::Left { member, .. } => {
                    format!("relay: {} forgotten", self.member_name(member))
                }
                RelayEvent::Refused { member, addr } => format!(
                    "relay: refuses {} (from {})",
                    self.member_name(member),
                    self.name_of(addr)
                ),
                RelayEvent::OtherVersion { addr, version } => format!(
                    "relay: {} speaks protocol version {version}",
                    self.name_of(addr)
                ),
                RelayEvent::CookieMode(on) => {
                    format!("relay: cookie mode {}", if on { "on" } else { "off" })
                }
            };
            cx.log(line);
        }
    }

    fn log_member_events(&mut self, cx: &mut Cx<'_>) {
        let mut lines = Vec::new();
        for node in &mut self.nodes {
            let events: Vec<MemberEvent> =
                std::iter::from_fn(|| node.client.poll_event()).collect();
            for e in events {
                lines.push((node.name, e));
            }
        }
        for (name, event) in lines {
            let line = match event {
                MemberEvent::PeerUp(id) => {
                    format!("{name}: session with {} up", self.member_name(id))
                }
                MemberEvent::PeerLeft(id) => format!("{name}: {} left", self.member_name(id)),
                MemberEvent::MacTaken { mac, owner, by } => format!(
                    "{name}: {} used {}, which {} owns",
                    self.member_name(by),
                    cx.name(mac),
                    self.member_name(owner)
                ),
                MemberEvent::OtherVersion(v) => {
                    format!("{name}: the relay speaks protocol version {v}")
                }
                MemberEvent::PathDirect { member, addr, .. } => format!(
                    "{name}: direct path to {} at {}",
                    self.member_name(member),
                    self.name_of(addr)
                ),
                MemberEvent::PathRelay { member, idle } => format!(
                    "{name}: path to {} through the relay ({})",
                    self.member_name(member),
                    if idle { "idle" } else { "stopped answering" }
                ),
            };
            cx.log(line);
        }
    }

    /// Delivers queued datagrams, in order, until none is left; returns the
    /// frames clients handed to their TAPs (or bridge).
    pub(crate) fn run(&mut self, cx: &mut Cx<'_>) -> Vec<(&'static str, Vec<u8>)> {
        let mut arrived = Vec::new();
        let mut steps = 0;
        while let Some(d) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 100_000, "datagrams do not settle");
            self.wire.push(d.clone());
            if self
                .cut
                .iter()
                .any(|&(a, b)| (d.from, d.to) == (a, b) || (d.from, d.to) == (b, a))
            {
                let label = self.label(&d);
                let (from, to) = (self.name_of(d.from), self.name_of(d.to));
                cx.log(format!("{from}→{to} {label}; lost on the way"));
                continue;
            }
            if d.to == RELAY {
                self.deliver_to_relay(cx, d);
            } else {
                // A run of datagrams from one sender to one node is one
                // receive batch (as UDP GRO makes it): the node's coalescer
                // is flushed after its last one.
                let last_of_batch = self
                    .queue
                    .front()
                    .is_none_or(|n| n.to != d.to || n.from != d.from);
                self.deliver_to_node(cx, d, last_of_batch, &mut arrived);
            }
        }
        arrived
    }

    /// Queues what the relay sends of its own accord (member list changes).
    fn queue_relay_pushes(&mut self) {
        let pushes: Vec<(SocketAddr, Vec<u8>)> =
            std::iter::from_fn(|| self.relay.poll_transmit()).collect();
        for (to, bytes) in pushes {
            self.queue.push_back(Datagram {
                from: RELAY,
                to,
                bytes,
            });
        }
    }

    fn deliver_to_relay(&mut self, cx: &mut Cx<'_>, d: Datagram) {
        let label = self.label(&d);
        let from = self.name_of(d.from);
        let sent = match self.relay.handle_datagram(cx.now, d.from, &d.bytes) {
            RelayAction::Forward(to, bytes) => Some((to, bytes.to_vec())),
            RelayAction::Reply(bytes) => Some((d.from, bytes.to_vec())),
            RelayAction::Drop(reason) => {
                cx.log(format!("{from}→relay {label}; relay drops: {reason:?}"));
                None
            }
        };
        if let Some((to, bytes)) = sent {
            // A Rejoin and a CookieReply answer a datagram the relay refused
            // (and counted).
            let what = match codec::peek(&bytes) {
                Ok(Kind::Rejoin) => "; relay drops: NoSession, answers Rejoin".to_string(),
                Ok(Kind::CookieReply) => {
                    "; relay drops: CookieRequired, answers CookieReply".to_string()
                }
                _ if to != d.from => format!("; relay forwards to {}", self.name_of(to)),
                _ => String::new(),
            };
            cx.log(format!("{from}→relay {label}{what}"));
            self.queue.push_back(Datagram {
                from: RELAY,
                to,
                bytes,
            });
        }
        self.queue_relay_pushes();
        self.log_relay_events(cx);
    }

    fn deliver_to_node(
        &mut self,
        cx: &mut Cx<'_>,
        d: Datagram,
        last_of_batch: bool,
        arrived: &mut Vec<(&'static str, Vec<u8>)>,
    ) {
        let label = self.label(&d);
        let (from, to) = (self.name_of(d.from), self.name_of(d.to));
        let Some(node) = self.nodes.iter_mut().find(|n| n.addr == d.to) else {
            cx.log(format!("{from}→{to} {label}; nobody there"));
            return;
        };
        if !node.up {
            cx.log(format!("{from}→{to} {label}; {to} is down, lost"));
            return;
        }
        let queue = &mut self.queue;
        let addr = node.addr;
        let mut frames: Vec<(VnetHdr, Vec<u8>)> = Vec::new();
        let mut deliver = |h: &VnetHdr, f: &[u8]| frames.push((*h, f.to_vec()));
        let event = node
            .client
            .handle_datagram(cx.now, d.from, &d.bytes, &mut deliver);
        for (to, bytes) in node.client.transmits_to() {
            queue.push_back(Datagram {
                from: addr,
                to,
                bytes,
            });
        }
        if last_of_batch {
            node.client.flush(&mut deliver);
        }
        match event {
            ClientEvent::Frame | ClientEvent::Nothing => cx.log(format!("{from}→{to} {label}")),
            ClientEvent::Registered => cx.log(format!("{from}→{to} {label}; {to} registered")),
            ClientEvent::Drop(reason) => {
                cx.log(format!("{from}→{to} {label}; {to} drops: {reason:?}"))
            }
        }
        let port = if node.behind[0] == BRIDGE {
            "nat"
        } else {
            "tap"
        };
        let name = node.name;
        let behind = node.behind[0];
        self.log_member_events(cx);
        for (hdr, frame) in frames {
            let what = if hdr == VnetHdr::NONE {
                cx.describe(&frame)
            } else {
                format!(
                    "super-frame of {} bytes, gso_size {} ({})",
                    frame.len(),
                    hdr.gso_size,
                    cx.describe(&frame)
                )
            };
            cx.log(format!("{to} {port}← {what}"));
            self.tap_rx.push((name, frame.clone()));
            arrived.push((behind, frame));
        }
    }
}

impl Fabric for Net {
    fn sent_line(&self, from: &str, desc: &str) -> String {
        let node = self
            .nodes
            .iter()
            .find(|n| n.behind[0] == from)
            .expect("sender has no node");
        let port = if from == BRIDGE { "nat" } else { "tap" };
        format!("{} {port}→ {desc}", node.name)
    }

    fn carry(
        &mut self,
        cx: &mut Cx<'_>,
        from: &'static str,
        frame: &[u8],
    ) -> Vec<(&'static str, Vec<u8>)> {
        self.send(cx, from, &VnetHdr::NONE, &mut frame.to_vec())
    }
}

impl Net {
    /// The node of host `from` reads `frame` from its device with offload
    /// metadata `hdr` (as its driver hands it over), sends what its client
    /// makes of it, and everything is delivered.
    fn send(
        &mut self,
        cx: &mut Cx<'_>,
        from: &str,
        hdr: &VnetHdr,
        frame: &mut [u8],
    ) -> Vec<(&'static str, Vec<u8>)> {
        self.seal(cx, from, hdr, frame);
        self.run(cx)
    }

    /// The first half of [`Net::send`]: the node of host `from` seals
    /// `frame` and queues what it sends, without delivering anything yet.
    pub(crate) fn seal(&mut self, cx: &mut Cx<'_>, from: &str, hdr: &VnetHdr, frame: &mut [u8]) {
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.behind[0] == from)
            .expect("sender has no node");
        if !node.up {
            cx.log(format!("{} is down: frame lost", node.name));
            return;
        }
        let queue = &mut self.queue;
        let addr = node.addr;
        let drops = node.client.stats().drops.clone();
        node.client.handle_frame(cx.now, hdr, frame, 1500);
        for (to, bytes) in node.client.transmits_to() {
            queue.push_back(Datagram {
                from: addr,
                to,
                bytes,
            });
        }
        for (reason, n) in node.client.stats().drops.nonzero() {
            if drops.get(reason) != n {
                cx.log(format!("{} drops the frame: {reason:?}", node.name));
            }
        }
    }
}

impl World<Net> {
    /// A world on the relay simulator; trace lines carry the time, from the
    /// simulator's clock base.
    pub(crate) fn relayed(
        net: Net,
        nat: crate::core::nat::Nat,
        lan: Vec<Host>,
        overlay: Vec<Host>,
    ) -> Self {
        let start = net.start;
        let mut w = World::with_fabric(net, nat, lan, overlay);
        w.stamp = true;
        w.start = start;
        w.now = start;
        w
    }

    /// Moves the clock `by`, running every node's timers, the bridge's
    /// (probes, grants) and the relay's expiry when due, and whatever
    /// traffic they cause.
    pub(crate) fn advance(&mut self, by: Duration) {
        let end = self.now + by;
        loop {
            let net_due = self.fabric.next_poll(self.now).filter(|&t| t <= end);
            let nat_due = self.nat.next_deadline().filter(|&t| t <= end);
            let due = match (net_due, nat_due) {
                (None, None) => break,
                (Some(due), Some(nat)) if nat < due => {
                    self.run_bridge_timers(nat);
                    continue;
                }
                (None, Some(nat)) => {
                    self.run_bridge_timers(nat);
                    continue;
                }
                (Some(due), _) => due,
            };
            self.now = self.now.max(due);
            let (net, mut cx) = self.split();
            let arrived = net.poll(&mut cx);
            let mut queue = Queue::new();
            self.arrive(arrived, &mut queue);
            self.settle(queue);
        }
        self.now = end;
        let (net, mut cx) = self.split();
        net.relay.handle_timeout(cx.now);
        net.queue_relay_pushes();
        net.log_relay_events(&mut cx);
        let arrived = net.run(&mut cx);
        let mut queue = Queue::new();
        self.arrive(arrived, &mut queue);
        self.settle(queue);
    }

    /// Delivers a datagram as if `from` had sent it now, and what follows.
    pub(crate) fn inject(&mut self, datagram: Datagram) {
        let (net, mut cx) = self.split();
        net.inject(datagram);
        let arrived = net.run(&mut cx);
        let mut queue = Queue::new();
        self.arrive(arrived, &mut queue);
        self.settle(queue);
    }

    /// Restarts the relay (see [`Net::restart_relay`]).
    pub(crate) fn restart_relay(&mut self) {
        let (net, mut cx) = self.split();
        net.restart_relay(&mut cx);
    }

    /// Restarts node `name` (see [`Net::restart_node`]); its timers run
    /// from now.
    pub(crate) fn restart(&mut self, name: &str) {
        let (net, mut cx) = self.split();
        net.restart_node(&mut cx, name);
    }

    /// Stops node `name`: it sends nothing more and loses what it is sent.
    pub(crate) fn stop(&mut self, name: &str) {
        self.log(format!("{name} stops"));
        self.fabric.node_mut(name).up = false;
    }

    /// Starts node `name` (again): its timers run from now.
    pub(crate) fn start(&mut self, name: &str) {
        self.log(format!("{name} starts"));
        let node = self.fabric.node_mut(name);
        node.up = true;
        node.next_poll = None;
    }

    /// Host `who`'s node reads a frame with offload metadata from its
    /// device (a super-frame from a vnet TAP), as the driver hands it over.
    pub(crate) fn send_offload(&mut self, who: &str, hdr: VnetHdr, mut frame: Vec<u8>) {
        self.log(format!(
            "-- {who} sends a super-frame of {} bytes, gso_size {}",
            frame.len(),
            hdr.gso_size
        ));
        let (net, mut cx) = self.split();
        let arrived = net.send(&mut cx, who, &hdr, &mut frame);
        let mut queue = Queue::new();
        self.arrive(arrived, &mut queue);
        self.settle(queue);
    }

    /// Hosts `a` and `b` each read a frame from their devices at the same
    /// moment: both nodes seal before either hears from the other (e.g.
    /// both start a member handshake), then everything is delivered.
    pub(crate) fn send_together(&mut self, a: (&str, Vec<u8>), b: (&str, Vec<u8>)) {
        self.log(format!("-- {} and {} send at once", a.0, b.0));
        let (net, mut cx) = self.split();
        for (who, mut frame) in [a, b] {
            let desc = cx.describe(&frame);
            let line = net.sent_line(who, &desc);
            cx.log(line);
            net.seal(&mut cx, who, &VnetHdr::NONE, &mut frame);
        }
        let arrived = net.run(&mut cx);
        let mut queue = Queue::new();
        self.arrive(arrived, &mut queue);
        self.settle(queue);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{
        drop::{DropCounters, DropReason as D},
        mac::MacAddr,
        nat::{Nat, NatConfig},
        sim::Side,
    };

    pub(super) fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    pub(super) fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    /// A bridge engine that takes no part: the worlds without a LAN.
    pub(super) fn idle_nat() -> Nat {
        Nat::new(NatConfig::new(MacAddr([2, 0, 0, 0, 0, 0xff])))
    }

    /// Edges named as given, number `i + 1` each, with a host of the same
    /// name (MAC 02::0n, IP 10.0.0.n) behind the TAP, all on network 1.
    pub(super) fn edges(names: &[&'static str]) -> World<Net> {
        edges_with(RelayConfig::default(), relayed(), names)
    }

    /// [`edges`] with a relay and clients configured as given.
    pub(super) fn edges_with(
        relay: RelayConfig,
        client: ClientConfig,
        names: &[&'static str],
    ) -> World<Net> {
        let mut net = Net::new(relay, &[key(1)]);
        let mut hosts = Vec::new();
        for (i, &name) in names.iter().enumerate() {
            let n = i as u8 + 1;
            net.add_node_with(name, n, &key(1), vec![name], client.clone());
            hosts.push(Host::new(name, mac(n), ip(n)));
        }
        World::relayed(net, idle_nat(), vec![], hosts)
    }

    pub(super) fn host<'w>(w: &'w World<Net>, name: &str) -> &'w Host {
        w.overlay.iter().find(|h| h.name == name).unwrap()
    }

    /// Datagrams on the wire from index `since` on.
    pub(super) fn wire_since(w: &World<Net>, since: usize) -> &[Datagram] {
        &w.fabric.wire[since..]
    }

    /// Drop counters that are not zero.
    pub(super) fn counts(c: &DropCounters) -> Vec<(D, u64)> {
        c.nonzero().collect()
    }

    /// The trace without the uplinks' keepalives and their answers.
    pub(super) fn without_keepalives(w: &World<Net>, from: usize) -> String {
        w.trace[from..]
            .iter()
            .filter(|l| !l.contains("Control(Keepalive"))
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The fast path in memory: a super-frame crosses as one datagram per
    /// segment and comes out whole at a member that coalesces, and as its
    /// segments at a member that doesn't. Version 2 has nothing to
    /// negotiate: a plain member changes nothing for the others.
    #[test]
    fn super_frames_cross_per_segment_and_come_out_whole() {
        let mut net = Net::new(RelayConfig::default(), &[key(1)]);
        let fast = ClientConfig {
            offload: true,
            ..relayed()
        };
        net.add_node_with("A", 1, &key(1), vec!["A"], fast.clone());
        net.add_node_with("B", 2, &key(1), vec!["B"], fast);
        net.add_node("C", 3, &key(1), vec!["C"]);
        let hosts = (1..=3)
            .map(|n| Host::new(["A", "B", "C"][n as usize - 1], mac(n), ip(n)))
            .collect();
        let mut w = World::relayed(net, idle_nat(), vec![], hosts);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        w.act(Side::Overlay, "A", |h| h.ping(ip(3), 2));
        assert!(w.fabric.node("A").client.offload_ok());
        assert!(!w.fabric.node("C").client.offload_ok());

        let (hdr, frame, complete) =
            crate::core::sim::tcp_super_frame(false, mac(1), mac(2), 1, 6000);
        let since = w.fabric.wire.len();
        let rx = w.fabric.tap_rx.len();
        w.send_offload("A", hdr, frame.clone());
        let got: Vec<_> = w.fabric.tap_rx[rx..].to_vec();
        assert_eq!(got.len(), 1, "one super-frame, at B");
        assert_eq!(got[0].0, "B");
        assert_eq!(got[0].1.len(), complete.len());
        assert_eq!(got[0].1[54..], complete[54..], "payload intact");
        let to_b = wire_since(&w, since).len();
        assert!(wire_since(&w, since).iter().all(|d| d.bytes.len() <= 1400));

        let (hdr, frame, complete) =
            crate::core::sim::tcp_super_frame(false, mac(1), mac(3), 1, 6000);
        let rx = w.fabric.tap_rx.len();
        w.send_offload("A", hdr, frame);
        let got: Vec<_> = w.fabric.tap_rx[rx..].to_vec();
        assert!(got.len() > 1, "C takes the segments one by one");
        assert_eq!(to_b, 2 * got.len(), "one datagram per segment, each way");
        assert!(got.iter().all(|(n, f)| *n == "C" && f.len() <= 1514));
        let payload: Vec<u8> = got.iter().flat_map(|(_, f)| f[66..].to_vec()).collect();
        assert_eq!(payload, complete[66..], "payload intact");

        assert_eq!(w.fabric.relay.stats().drops.total(), 0);
        for n in ["A", "B", "C"] {
            assert_eq!(w.fabric.node(n).client.stats().drops.total(), 0, "{n}");
        }
        assert_eq!(w.fabric.node("B").client.stats().offload_frames_in, 1);
        insta::assert_snapshot!(without_keepalives(&w, 0));
    }

    #[test]
    fn three_edges_register_resolve_and_ping() {
        let mut w = edges(&["A", "B", "C"]);
        w.advance(Duration::ZERO);
        assert!(w.fabric.nodes.iter().all(|n| n.client.is_registered()));
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        w.act(Side::Overlay, "A", |h| h.ping(ip(3), 2));
        assert_eq!(host(&w, "A").echo_replies, [(ip(2), 1), (ip(3), 2)]);
        assert_eq!(host(&w, "B").arp_cache.get(&ip(1)), Some(&mac(1)));
        assert_eq!(w.fabric.relay.peers(w.now).len(), 3);
        assert_eq!(w.fabric.relay.stats().drops.total(), 0);
        for node in &w.fabric.nodes {
            assert_eq!(node.client.stats().drops.total(), 0, "{}", node.name);
        }
        insta::assert_snapshot!(w.trace.join("\n"));
    }

    #[test]
    fn relay_restart_edges_reregister() {
        let mut w = edges(&["A", "B", "C"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        w.restart_relay();
        // A's next frame names an uplink the new relay doesn't know: it
        // answers Rejoin, A joins again at once, the frame is lost.
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 2));
        assert!(w.fabric.node("A").client.is_registered());
        assert!(
            w.fabric.node("B").client.is_registered(),
            "B has not noticed yet"
        );
        // B and C learn at their next keepalive, A learns of them at its
        // next one.
        w.advance(Duration::from_secs(6));
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 3));
        w.act(Side::Overlay, "C", |h| h.ping(ip(1), 4));

        assert_eq!(host(&w, "A").echo_replies, [(ip(2), 1), (ip(2), 3)]);
        assert_eq!(host(&w, "C").echo_replies, [(ip(1), 4)]);
        for node in &w.fabric.nodes {
            assert!(node.client.is_registered(), "{}", node.name);
            assert_eq!(node.client.stats().registrations, 2, "{}", node.name);
        }
        assert_eq!(w.fabric.relay.stats().registrations, 3);
        assert_eq!(w.fabric.relay.peers(w.now).len(), 3);
        insta::assert_snapshot!(w.trace.join("\n"));
    }

    #[test]
    fn silent_peer_is_forgotten() {
        let mut w = edges(&["A", "B", "C"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(3), 1));
        w.stop("C");
        let peer_timeout = w.fabric.relay_config.peer_timeout;
        w.advance(peer_timeout);
        assert_eq!(w.fabric.relay.peers(w.now).len(), 3, "not yet");
        w.advance(Duration::from_secs(1));
        let peers: Vec<_> = w.fabric.relay.peers(w.now).iter().map(|p| p.addr).collect();
        assert_eq!(peers, [edge_addr(1), edge_addr(2)]);
        assert_eq!(w.fabric.relay.stats().timeouts, 1);
        // A hears of it with its next keepalive, and forgets C's keys and MACs.
        w.advance(Duration::from_secs(5));
        let ids: Vec<_> = w
            .fabric
            .node("A")
            .client
            .peers(w.now)
            .iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(ids, [identity(2).id()]);

        // A still knows C's IP and MAC; its switch no longer does: it
        // floods, to B.
        let since = w.fabric.wire.len();
        w.act(Side::Overlay, "A", |h| h.ping(ip(3), 2));
        let to: Vec<_> = wire_since(&w, since)
            .iter()
            .filter(|d| d.from == RELAY)
            .map(|d| d.to)
            .collect();
        assert_eq!(to, [edge_addr(2)]);
        assert_eq!(host(&w, "A").echo_replies, [(ip(3), 1)]);
        let tail = w.trace.len() - 4;
        insta::assert_snapshot!(w.trace[tail..].join("\n"), @r"
        t=26005ms A tap→ A > C IPv4 10.0.0.1 > 10.0.0.3 ICMP echo request seq 2
        t=26005ms A→relay Data for B; relay forwards to B
        t=26005ms relay→B Data from A
        t=26005ms B tap← A > C IPv4 10.0.0.1 > 10.0.0.3 ICMP echo request seq 2
        ");
    }

    #[test]
    fn replayed_and_forged_datagrams_are_dropped() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        let is_data = |d: &Datagram| codec::peek(&d.bytes) == Ok(Kind::Data);
        let find = |w: &World<Net>, from, to| {
            w.fabric
                .wire
                .iter()
                .find(|d| d.from == from && d.to == to && is_data(d))
                .unwrap()
                .clone()
        };
        let a_to_relay = find(&w, edge_addr(1), RELAY);
        let relay_to_b = find(&w, RELAY, edge_addr(2));
        // Fresh datagrams from A, sealed but not sent.
        let mut fresh = Vec::new();
        let frame = crate::core::sim::arp_request(mac(1), ip(1), ip(9));
        for _ in 0..2 {
            let a = &mut w.fabric.node_mut("A").client;
            a.handle_frame(w.now, &VnetHdr::NONE, &mut frame.clone(), 1500);
            fresh.extend(a.transmits());
        }
        assert_eq!(fresh.len(), 2);
        let flip = |d: &[u8], at: usize| {
            let mut d = d.to_vec();
            d[at] ^= 1;
            d
        };
        let last = fresh[0].len() - 1;
        let inner = routed::HEADER_LEN + data::HEADER_LEN;
        // A member of a network the relay does not serve.
        let mut stranger = Client::new(
            relayed(),
            &key(9),
            identity(9),
            RELAY,
            w.now,
            WallClock::new(w.start, EPOCH),
        );
        stranger.handle_timeout(w.now);
        let strange = stranger.transmits();
        assert_eq!(strange.len(), 1, "an UplinkInit");
        // A Data datagram from "the relay" naming an index B never gave.
        let mut made_up = relay_to_b.bytes.clone();
        made_up[routed::RECEIVER].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        let dgram = |from, to, bytes: &[u8]| Datagram {
            from,
            to,
            bytes: bytes.to_vec(),
        };

        w.log("-- replays, forgeries and strangers");
        w.inject(a_to_relay.clone());
        w.inject(relay_to_b.clone());
        // The relay tag covers the header and the length.
        w.inject(dgram(edge_addr(1), RELAY, &flip(&fresh[0], last)));
        // The forgery did not use up the counter: the genuine one passes.
        w.inject(dgram(edge_addr(1), RELAY, &fresh[0]));
        // The sealed frame inside is the members' own: the relay forwards a
        // changed ciphertext under a good tag, and B refuses it.
        w.inject(dgram(edge_addr(1), RELAY, &flip(&fresh[1], inner)));
        w.inject(dgram(edge_addr(9), RELAY, &strange[0]));
        w.inject(dgram(RELAY, edge_addr(2), &made_up));
        w.inject(dgram(edge_addr(9), edge_addr(2), &relay_to_b.bytes));

        let relay = w.fabric.relay.stats().drops.clone();
        let b = w.fabric.node("B").client.stats().drops.clone();
        assert_eq!(
            counts(&relay),
            [(D::WrongNetwork, 1), (D::Forged, 1), (D::Replayed, 1)]
        );
        assert_eq!(
            counts(&b),
            [
                (D::Forged, 1),
                (D::Replayed, 1),
                (D::UnknownSender, 1),
                (D::NoSession, 1)
            ]
        );
        assert_eq!(host(&w, "A").echo_replies, [(ip(2), 1)]);
        let from = w
            .trace
            .iter()
            .position(|l| l.contains("-- replays"))
            .unwrap();
        insta::assert_snapshot!(w.trace[from..].join("\n"));
    }

    #[test]
    fn networks_are_isolated() {
        // A and B on network 1, C and D on network 2, with the same IPs.
        let mut net = Net::new(RelayConfig::default(), &[key(1), key(2)]);
        let mut hosts = Vec::new();
        for (n, name, k, host_ip) in [
            (1, "A", 1, 1),
            (2, "B", 1, 2),
            (3, "C", 2, 1),
            (4, "D", 2, 2),
        ] {
            net.add_node(name, n, &key(k), vec![name]);
            hosts.push(Host::new(name, mac(n), ip(host_ip)));
        }
        let mut w = World::relayed(net, idle_nat(), vec![], hosts);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        w.act(Side::Overlay, "C", |h| h.ping(ip(2), 2));
        // Unicast to a MAC of the other network: flooded, but only within.
        w.act(Side::Overlay, "A", |_| {
            vec![crate::core::sim::icmp_echo(
                (mac(1), ip(1)),
                (mac(4), ip(2)),
                true,
                3,
            )]
        });

        assert_eq!(host(&w, "A").echo_replies, [(ip(2), 1)]);
        assert_eq!(host(&w, "C").echo_replies, [(ip(2), 2)]);
        assert_eq!(host(&w, "B").arp_cache.get(&ip(1)), Some(&mac(1)));
        assert_eq!(host(&w, "D").arp_cache.get(&ip(1)), Some(&mac(3)));
        let network = |n: &str| if n < "C" { 1 } else { 2 };
        assert!(!w.fabric.tap_rx.is_empty());
        for (node, frame) in &w.fabric.tap_rx {
            let src = MacAddr::from_slice(&frame[6..]).unwrap();
            let sender = w.overlay.iter().find(|h| h.mac == src).unwrap().name;
            assert_eq!(network(node), network(sender), "{sender} reached {node}");
        }
        let nets: Vec<_> = w
            .fabric
            .relay
            .peers(w.now)
            .iter()
            .map(|p| p.network)
            .collect();
        assert_eq!(nets.len(), 4);
        let one = RelayKey::derive(&key(1)).network_id();
        assert_eq!(nets.iter().filter(|&&n| n == one).count(), 2);
        for node in &w.fabric.nodes {
            assert_eq!(node.client.peers(w.now).len(), 1, "{}", node.name);
        }
        insta::assert_snapshot!(w.trace.join("\n"));
    }

    #[test]
    fn full_size_frames_are_fragmented_and_reassembled() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        let big = crate::core::sim::udp_v4(
            (mac(1), ip(1), 4000),
            (mac(2), ip(2), 4000),
            &[0x5a; 1514 - 14 - 20 - 8],
        );
        assert_eq!(big.len(), 1514);
        let since = w.fabric.wire.len();
        let rx = w.fabric.tap_rx.len();
        w.act(Side::Overlay, "A", |_| vec![big.clone()]);
        let sizes = |from, to| -> Vec<usize> {
            wire_since(&w, since)
                .iter()
                .filter(|d| d.from == from && d.to == to)
                .map(|d| d.bytes.len())
                .collect()
        };
        assert_eq!(sizes(edge_addr(1), RELAY).len(), 2);
        assert!(sizes(edge_addr(1), RELAY).iter().all(|&n| n <= 1400));
        assert_eq!(sizes(RELAY, edge_addr(2)), sizes(edge_addr(1), RELAY));
        assert_eq!(w.fabric.tap_rx[rx..], [("B", big)]);
        let from = w.trace.len() - 6;
        insta::assert_snapshot!(w.trace[from..].join("\n"), @r"
        t=5ms A tap→ A > B IPv4 10.0.0.1 > 10.0.0.2 UDP 4000>4000 csum 0xfd57 ok
        t=5ms A→relay Data for B; relay forwards to B
        t=5ms A→relay Data for B; relay forwards to B
        t=5ms relay→B Data from A
        t=5ms relay→B Data from A
        t=5ms B tap← A > B IPv4 10.0.0.1 > 10.0.0.2 UDP 4000>4000 csum 0xfd57 ok
        ");
    }

    #[test]
    fn bridge_joins_lan_hosts_and_virtual_hosts_through_the_relay() {
        const N: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x0a]);
        let (l1, l2) = (MacAddr([2, 0, 0, 0, 1, 1]), MacAddr([2, 0, 0, 0, 1, 2]));
        let (v, vw) = (MacAddr([2, 0, 0, 0, 2, 1]), MacAddr([2, 0, 0, 0, 2, 2]));
        let (ip_v, ip_w) = (ip(100), ip(101));
        let mut net = Net::new(RelayConfig::default(), &[key(1)]);
        net.add_node(BRIDGE, 10, &key(1), vec![BRIDGE, "L1", "L2"]);
        net.add_node("E1", 1, &key(1), vec!["V"]);
        net.add_node("E2", 2, &key(1), vec!["W"]);
        let mut nat = Nat::new(NatConfig::new(N));
        nat.set_host_addrs(&[ip(10)], &[]);
        let lan = vec![Host::new("L1", l1, ip(1)), Host::new("L2", l2, ip(2))];
        let virt = vec![Host::new("V", v, ip_v), Host::new("W", vw, ip_w)];
        let mut w = World::relayed(net, nat, lan, virt);
        w.advance(Duration::ZERO);
        // V and W take their addresses; the bridge probes the LAN for them
        // and grants them a second later.
        w.act(Side::Overlay, "V", |h| h.announce());
        w.act(Side::Overlay, "W", |h| h.announce());
        w.advance(Duration::from_secs(1));

        w.act(Side::Lan, "L1", |h| h.ping(ip_v, 1));
        w.act(Side::Overlay, "V", |h| h.ping(ip(2), 2));
        w.act(Side::Overlay, "V", |h| h.ping(ip_w, 3));
        w.act(Side::Overlay, "W", |h| h.ping(ip(1), 4));

        let lan_host = |name| w.lan.iter().find(|h| h.name == name).unwrap();
        assert_eq!(lan_host("L1").echo_replies, [(ip_v, 1)]);
        assert_eq!(host(&w, "V").echo_replies, [(ip(2), 2), (ip_w, 3)]);
        assert_eq!(host(&w, "W").echo_replies, [(ip(1), 4)]);
        assert_eq!(lan_host("L1").arp_cache.get(&ip_v), Some(&N));
        assert_eq!(lan_host("L1").arp_cache.get(&ip_w), Some(&N));
        assert_eq!(host(&w, "V").arp_cache.get(&ip(1)), Some(&l1));
        assert_eq!(host(&w, "V").arp_cache.get(&ip_w), Some(&vw));
        assert_eq!(host(&w, "W").arp_cache.get(&ip(1)), Some(&l1));
        assert!(!w.lan_wire.is_empty());
        for f in &w.lan_wire {
            let macs = crate::core::sim::macs_in(f);
            assert!(
                !macs.contains(&v) && !macs.contains(&vw),
                "virtual MAC on the LAN: {}",
                w.describe(f)
            );
        }
        insta::assert_snapshot!(without_keepalives(&w, 0));
    }

    #[test]
    fn replayed_uplink_init_does_not_revive_a_forgotten_member() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        let init = w.fabric.wire[0].clone();
        assert_eq!(init.from, edge_addr(1));
        assert_eq!(codec::peek(&init.bytes), Ok(Kind::UplinkInit));
        w.stop("A");
        w.advance(w.fabric.relay_config.peer_timeout + Duration::from_secs(1));
        assert_eq!(w.fabric.relay.peers(w.now).len(), 1, "A is forgotten");
        // Someone who recorded A's first datagram sends it again, from
        // elsewhere: the relay remembers A's last initiation timestamp.
        let attacker: SocketAddr = "203.0.113.66:4444".parse().unwrap();
        w.inject(Datagram {
            from: attacker,
            ..init
        });
        w.act(Side::Overlay, "B", |h| h.ping(ip(1), 1));
        let peers: Vec<_> = w.fabric.relay.peers(w.now).iter().map(|p| p.addr).collect();
        assert_eq!(peers, [edge_addr(2)], "{}", w.trace.join("\n"));
        assert_eq!(w.fabric.relay.stats().drops.get(D::Replayed), 1);
    }
}

/// The version 2 engines as an attacker would try them: outsiders replaying
/// and forging, members forging under each other's identity or taking each
/// other's MACs, a holder of the relay key, strangers, a relay under load,
/// revoked members and old peers. Each test checks both halves: the attack
/// changes nothing, and the others' traffic still flows.
#[cfg(test)]
mod attacks {
    use super::{tests::*, *};
    use crate::core::{
        drop::{DropCounters, DropReason as D},
        mac::MacAddr,
        noise::{self, Initiator},
        proto::{
            codec::{uplink_init, uplink_resp, Control},
            session::{Keypair, Timers},
        },
        relay::seal_control,
        sim::{self, Side},
    };

    /// A routed datagram of `kind` naming `member` around `inner`, tagged
    /// (and counted) under `kp`: what a member sends its relay, or a relay
    /// a member.
    fn routed_datagram(kp: &mut Keypair, kind: Kind, member: MemberId, inner: &[u8]) -> Vec<u8> {
        let counter = kp.next_counter().unwrap();
        let mut d = codec::header(kind).to_vec();
        d.extend_from_slice(&kp.remote_index.to_be_bytes());
        d.extend_from_slice(&counter.to_be_bytes());
        d.extend_from_slice(&member.0);
        d.extend_from_slice(inner);
        let len = d.len() + TAG_LEN;
        let tag = kp.send_tag(&d[..routed::HEADER_LEN], len);
        d.extend_from_slice(&tag);
        d
    }

    /// The inner part of a routed datagram: what the relay passes on as is.
    fn inner(d: &[u8]) -> &[u8] {
        &d[routed::HEADER_LEN..d.len() - TAG_LEN]
    }

    /// A member made by hand from the protocol's parts, to send what a
    /// [`Client`] never would. It needs only the relay key to join the
    /// relay: what a thief of the relay's key can do, and what any member
    /// can do on its own uplink.
    struct Forger {
        addr: SocketAddr,
        uplink: Keypair,
    }

    impl Forger {
        /// Member number `n`, called `name`, joins the relay of `w` with
        /// `relay_key`, and confirms its uplink with a keepalive.
        fn join(w: &mut World<Net>, relay_key: &RelayKey, n: u8, name: &'static str) -> Forger {
            let me = identity(n);
            let addr = edge_addr(n);
            w.fabric.alias(name, addr, me.id());
            let mut payload = WallClock::new(w.start, EPOCH).tai64n(w.now).to_vec();
            payload.extend_from_slice(&[0; 4]);
            let relay_public = relay_key.relay_static().public;
            let (initiator, msg) =
                Initiator::start(me.keys(), &relay_public, relay_key.psk(), &payload).unwrap();
            let index: u32 = 0x4f4f_4f4f;
            let mut init = codec::header(Kind::UplinkInit).to_vec();
            init.extend_from_slice(&index.to_be_bytes());
            init.extend_from_slice(&relay_key.network_id().0);
            init.extend_from_slice(&msg);
            let mac1 = codec::mac(&relay_key.mac1_key(), &[&init]);
            init.extend_from_slice(&mac1);
            init.extend_from_slice(&[0; 16]);
            let since = w.fabric.wire.len();
            w.inject(Datagram {
                from: addr,
                to: RELAY,
                bytes: init,
            });
            let resp = &w.fabric.wire[since..]
                .iter()
                .find(|d| d.to == addr)
                .expect("the relay answers")
                .bytes;
            assert_eq!(codec::peek(resp), Ok(Kind::UplinkResp));
            let (keys, _) = initiator.finish(&resp[uplink_resp::NOISE]).unwrap();
            let relay_index = codec::be32(resp, uplink_resp::SENDER);
            let uplink = Keypair::new(&keys, index, relay_index, true, w.now);
            let mut forger = Forger { addr, uplink };
            let mut keepalive = Vec::new();
            Control::Keepalive.encode(&mut keepalive);
            let mut out = Vec::new();
            seal_control(&mut forger.uplink, &keepalive, &mut out).unwrap();
            forger.send(w, out);
            forger
        }

        /// Sends `bytes` to the relay.
        fn send(&self, w: &mut World<Net>, bytes: Vec<u8>) {
            w.inject(Datagram {
                from: self.addr,
                to: RELAY,
                bytes,
            });
        }

        /// Sends a routed datagram of `kind` for `dst` around `inner`,
        /// tagged under its uplink.
        fn route(&mut self, w: &mut World<Net>, kind: Kind, dst: MemberId, inner: &[u8]) {
            let d = routed_datagram(&mut self.uplink, kind, dst, inner);
            self.send(w, d);
        }
    }

    /// A holder of the relay key (the relay itself, or a thief of its key
    /// at its address) takes over member `name`'s uplink: a Rejoin hint,
    /// and an answer to the UplinkInit that follows, made with the relay's
    /// static key (derived from the relay key). Returns the relay side's
    /// keypair, which tags anything for the member.
    fn hijack(w: &mut World<Net>, name: &str, relay_key: &RelayKey) -> Keypair {
        let addr = w.fabric.node(name).addr;
        let last = w
            .fabric
            .wire
            .iter()
            .rev()
            .find(|d| d.from == addr && d.to == RELAY && codec::peek(&d.bytes) == Ok(Kind::Control))
            .expect("a keepalive names the uplink");
        let mut rejoin = codec::header(Kind::Rejoin).to_vec();
        rejoin.extend_from_slice(&last.bytes[control::RECEIVER]);
        let now = w.now;
        let client = &mut w.fabric.node_mut(name).client;
        let no_frames = &mut |_: &VnetHdr, _: &[u8]| panic!("no frame here");
        client.handle_datagram(now, RELAY, &rejoin, no_frames);
        let sent = client.transmits();
        let init = sent
            .into_iter()
            .find(|d| codec::peek(d) == Ok(Kind::UplinkInit))
            .expect("the Rejoin starts a handshake");
        let responded = noise::respond(
            &relay_key.relay_static(),
            relay_key.psk(),
            &init[uplink_init::NOISE],
            |_, _| Ok(vec![0, 5, 0, 0]),
        )
        .unwrap();
        let (ours, theirs) = (0x5151_5151u32, codec::be32(&init, uplink_init::SENDER));
        let mut resp = codec::header(Kind::UplinkResp).to_vec();
        resp.extend_from_slice(&ours.to_be_bytes());
        resp.extend_from_slice(&theirs.to_be_bytes());
        resp.extend_from_slice(&responded.reply);
        let before = client.stats().uplink_handshakes;
        let event = client.handle_datagram(now, RELAY, &resp, no_frames);
        client.transmits();
        assert_eq!(event, ClientEvent::Registered, "{name} takes the answer");
        assert_eq!(client.stats().uplink_handshakes, before + 1, "{name}");
        w.log(format!("-- a relay key holder takes over {name}'s uplink"));
        Keypair::new(&responded.keys, ours, theirs, false, now)
    }

    /// Frames delivered to node `name`'s device so far.
    fn delivered(w: &World<Net>, name: &str) -> usize {
        w.fabric.tap_rx.iter().filter(|(n, _)| *n == name).count()
    }

    /// A UDP frame from host number `from` to host number `to` carrying
    /// `seq`.
    fn numbered(from: u8, to: u8, seq: u32) -> Vec<u8> {
        sim::udp_v4(
            (mac(from), ip(from), 7000),
            (mac(to), ip(to), 7000),
            &seq.to_be_bytes(),
        )
    }

    /// The numbers of the [`numbered`] frames node `name` delivered.
    fn numbers(w: &World<Net>, name: &str) -> Vec<u32> {
        w.fabric
            .tap_rx
            .iter()
            .filter(|(n, f)| *n == name && f.len() >= 46 && f[34..38] == [0x1b, 0x58, 0x1b, 0x58])
            .map(|(_, f)| u32::from_be_bytes(f[42..46].try_into().unwrap()))
            .collect()
    }

    #[test]
    fn two_members_handshake_through_the_relay_and_frames_cross_both_ways() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        for n in ["A", "B"] {
            let s = w.fabric.node(n).client.stats();
            assert_eq!((s.registrations, s.uplink_handshakes), (1, 1), "{n}");
        }
        assert_eq!(w.fabric.relay.stats().handshakes, 2);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        w.act(Side::Overlay, "B", |h| h.ping(ip(1), 2));
        w.act(Side::Overlay, "B", |_| {
            vec![sim::arp_request(mac(2), ip(2), ip(7))]
        });
        assert_eq!(host(&w, "A").echo_replies, [(ip(2), 1)]);
        assert_eq!(host(&w, "B").echo_replies, [(ip(1), 2)]);
        assert_eq!(
            delivered(&w, "A"),
            4,
            "ARP reply, echo request and reply, broadcast"
        );
        assert_eq!(delivered(&w, "B"), 3, "ARP request, echo request and reply");
        // One member handshake, A's, through the relay; nothing else.
        for n in ["A", "B"] {
            let c = &w.fabric.node(n).client;
            assert_eq!(c.stats().peer_handshakes, 1, "{n}");
            assert_eq!(
                c.stats().drops.total(),
                0,
                "{n} {:?}",
                c.stats().drops.nonzero().collect::<Vec<_>>()
            );
            let peers = c.peers(w.now);
            assert_eq!(peers.len(), 1);
            assert_eq!(
                (peers[0].frames_in, peers[0].macs),
                (delivered(&w, n) as u64, 1)
            );
        }
        assert_eq!(w.fabric.relay.stats().drops.total(), 0);
        assert_eq!(
            w.fabric.relay.stats().handshakes,
            2,
            "member handshakes are not the relay's"
        );
    }

    #[test]
    fn broadcast_reaches_every_member_once() {
        let mut w = edges(&["A", "B", "C", "D"]);
        w.stop("D");
        w.advance(Duration::ZERO);
        for (who, n) in [("A", 1), ("B", 2), ("C", 3)] {
            w.act(Side::Overlay, who, |_| {
                vec![sim::arp_request(mac(n), ip(n), ip(99))]
            });
        }
        // D joins later; it knows everyone at once, and its broadcast
        // reaches everyone.
        w.start("D");
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "D", |_| {
            vec![sim::arp_request(mac(4), ip(4), ip(99))]
        });
        // The others learn of D from D's handshake, or from the member list
        // at their next keepalive.
        w.advance(Duration::from_secs(5));
        w.act(Side::Overlay, "A", |_| {
            vec![sim::arp_request(mac(1), ip(1), ip(98))]
        });
        w.act(Side::Overlay, "B", |_| {
            vec![sim::arp_request(mac(2), ip(2), ip(98))]
        });
        let mut got: Vec<(&str, String)> = w
            .fabric
            .tap_rx
            .iter()
            .map(|(n, f)| (*n, w.describe(f)))
            .collect();
        got.sort();
        let lines: Vec<String> = got.iter().map(|(n, d)| format!("{n} ← {d}")).collect();
        insta::assert_snapshot!(lines.join("\n"), @r"
        A ← B > bcast ARP request sha=B spa=10.0.0.2 tha=00:00:00:00:00:00 tpa=10.0.0.98
        A ← B > bcast ARP request sha=B spa=10.0.0.2 tha=00:00:00:00:00:00 tpa=10.0.0.99
        A ← C > bcast ARP request sha=C spa=10.0.0.3 tha=00:00:00:00:00:00 tpa=10.0.0.99
        A ← D > bcast ARP request sha=D spa=10.0.0.4 tha=00:00:00:00:00:00 tpa=10.0.0.99
        B ← A > bcast ARP request sha=A spa=10.0.0.1 tha=00:00:00:00:00:00 tpa=10.0.0.98
        B ← A > bcast ARP request sha=A spa=10.0.0.1 tha=00:00:00:00:00:00 tpa=10.0.0.99
        B ← C > bcast ARP request sha=C spa=10.0.0.3 tha=00:00:00:00:00:00 tpa=10.0.0.99
        B ← D > bcast ARP request sha=D spa=10.0.0.4 tha=00:00:00:00:00:00 tpa=10.0.0.99
        C ← A > bcast ARP request sha=A spa=10.0.0.1 tha=00:00:00:00:00:00 tpa=10.0.0.98
        C ← A > bcast ARP request sha=A spa=10.0.0.1 tha=00:00:00:00:00:00 tpa=10.0.0.99
        C ← B > bcast ARP request sha=B spa=10.0.0.2 tha=00:00:00:00:00:00 tpa=10.0.0.98
        C ← B > bcast ARP request sha=B spa=10.0.0.2 tha=00:00:00:00:00:00 tpa=10.0.0.99
        C ← D > bcast ARP request sha=D spa=10.0.0.4 tha=00:00:00:00:00:00 tpa=10.0.0.99
        D ← A > bcast ARP request sha=A spa=10.0.0.1 tha=00:00:00:00:00:00 tpa=10.0.0.98
        D ← B > bcast ARP request sha=B spa=10.0.0.2 tha=00:00:00:00:00:00 tpa=10.0.0.98
        ");
        assert_eq!(w.fabric.relay.stats().drops.total(), 0);
    }

    /// Both members start a handshake with each other at the same moment
    /// (both broadcast before either heard from the other): each answers
    /// the other's and finishes its own, and frames then flow both ways.
    #[test]
    fn simultaneous_first_contact_leaves_both_ways_working() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        w.send_together(
            ("A", sim::arp_request(mac(1), ip(1), ip(99))),
            ("B", sim::arp_request(mac(2), ip(2), ip(99))),
        );
        let trace = without_keepalives(&w, 0);
        assert_eq!((delivered(&w, "A"), delivered(&w, "B")), (1, 1), "{trace}");
        for seq in 0..3 {
            w.act(Side::Overlay, "A", |_| vec![numbered(1, 2, seq)]);
            w.act(Side::Overlay, "B", |_| vec![numbered(2, 1, seq)]);
        }
        w.advance(Duration::from_secs(1));
        for seq in 3..6 {
            w.act(Side::Overlay, "A", |_| vec![numbered(1, 2, seq)]);
            w.act(Side::Overlay, "B", |_| vec![numbered(2, 1, seq)]);
        }
        let trace = without_keepalives(&w, 0);
        assert_eq!(numbers(&w, "B"), (0..6).collect::<Vec<_>>(), "{trace}");
        assert_eq!(numbers(&w, "A"), (0..6).collect::<Vec<_>>(), "{trace}");
    }

    /// Keys rotate every 2 s, uplinks and member sessions, while frames
    /// flow both ways every 250 ms: none is lost. Afterwards, what was
    /// recorded under the first keys is refused everywhere, and a relay
    /// key holder re-wrapping a member's first datagram for its peer gets
    /// nothing through either.
    #[test]
    fn keys_rotate_under_traffic_and_no_frame_is_lost() {
        let timers = Timers::with_rekey_after(Duration::from_secs(2));
        let relay = RelayConfig {
            timers,
            ..RelayConfig::default()
        };
        let client = ClientConfig {
            timers,
            ..relayed()
        };
        let mut w = edges_with(relay, client, &["A", "B"]);
        w.advance(Duration::ZERO);
        let mut seq = 0;
        let mut send = |w: &mut World<Net>| {
            w.act(Side::Overlay, "A", |_| vec![numbered(1, 2, seq)]);
            w.act(Side::Overlay, "B", |_| vec![numbered(2, 1, seq)]);
            w.advance(Duration::from_millis(250));
            seq += 1;
        };
        send(&mut w);
        let first = |w: &World<Net>, from, to| {
            w.fabric
                .wire
                .iter()
                .find(|d| d.from == from && d.to == to && codec::peek(&d.bytes) == Ok(Kind::Data))
                .unwrap()
                .clone()
        };
        let (a_to_relay, relay_to_b) = (
            first(&w, edge_addr(1), RELAY),
            first(&w, RELAY, edge_addr(2)),
        );
        let a_control = w
            .fabric
            .wire
            .iter()
            .find(|d| d.from == edge_addr(1) && codec::peek(&d.bytes) == Ok(Kind::Control))
            .unwrap()
            .clone();
        // 20 s of traffic: ten rotations of every session.
        while w.now < w.start + Duration::from_secs(20) {
            send(&mut w);
        }
        let sent: Vec<u32> = (0..seq).collect();
        assert_eq!(numbers(&w, "B"), sent, "A to B");
        assert_eq!(numbers(&w, "A"), sent, "B to A");
        for n in ["A", "B"] {
            let s = w.fabric.node(n).client.stats();
            assert!(s.uplink_handshakes >= 9, "{n}: {s:?}");
            assert!(s.rekeys >= 9, "{n}: {s:?}");
            assert_eq!(s.drops.total(), 0, "{n}: {:?}", counts(&s.drops));
        }
        assert!(w.fabric.relay.stats().handshakes >= 18);
        assert_eq!(w.fabric.relay.stats().drops.total(), 0);

        // Past reject_after, quiet.
        w.advance(timers.reject_after + Duration::from_secs(1) - Duration::from_secs(20));
        w.log("-- replays of the first keys");
        let (relay_drops, b_drops) = (
            w.fabric.relay.stats().drops.clone(),
            w.fabric.node("B").client.stats().drops.clone(),
        );
        let before = delivered(&w, "B");
        w.inject(a_to_relay.clone());
        w.inject(a_control);
        w.inject(relay_to_b);
        let relay_key = RelayKey::derive(&key(1));
        let mut kp = hijack(&mut w, "B", &relay_key);
        let d = routed_datagram(
            &mut kp,
            Kind::Data,
            identity(1).id(),
            inner(&a_to_relay.bytes),
        );
        w.inject(Datagram {
            from: RELAY,
            to: edge_addr(2),
            bytes: d,
        });
        assert_eq!(delivered(&w, "B"), before);
        let from = w
            .trace
            .iter()
            .position(|l| l.contains("-- replays"))
            .unwrap();
        let trace = w.trace[from..].join("\n");
        let new = |now: &DropCounters, then: &DropCounters| -> Vec<(D, u64)> {
            now.nonzero()
                .map(|(r, n)| (r, n - then.get(r)))
                .filter(|(_, n)| *n > 0)
                .collect()
        };
        // The third: B's answer to keys it doesn't have, a handshake with
        // A, sent under the taken-over uplink, which the relay doesn't know.
        assert_eq!(
            new(&w.fabric.relay.stats().drops, &relay_drops),
            [(D::NoSession, 3)],
            "{trace}"
        );
        assert_eq!(
            new(&w.fabric.node("B").client.stats().drops, &b_drops),
            [(D::NoSession, 2)],
            "{trace}"
        );
        insta::assert_snapshot!(trace, @r"
        t=63160ms -- replays of the first keys
        t=63160ms A→relay Data for B; relay drops: NoSession, answers Rejoin
        t=63160ms relay→A Rejoin; A drops: NoSession
        t=63160ms A→relay Control(Keepalive); relay drops: NoSession
        t=63160ms relay→B Data from A; B drops: NoSession
        t=63160ms -- a relay key holder takes over B's uplink
        t=63160ms relay→B Data from A; B drops: NoSession
        t=63160ms B→relay PeerInit for A; relay drops: NoSession, answers Rejoin
        t=63160ms relay→B Rejoin
        ");
    }

    /// A member session's keypair is erased at reject_after even when no
    /// rotation pushed it out: a relay key holder re-wrapping a member's
    /// recorded datagram is refused as a replay before, and for want of
    /// keys after.
    #[test]
    fn member_keys_are_erased_at_reject_after_even_without_rotation() {
        let timers = Timers::with_rekey_after(Duration::from_secs(2));
        let relay = RelayConfig {
            timers,
            ..RelayConfig::default()
        };
        let client = ClientConfig {
            timers,
            ..relayed()
        };
        let mut w = edges_with(relay, client, &["A", "B"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |_| vec![numbered(1, 2, 1)]);
        let recorded = w
            .fabric
            .wire
            .iter()
            .find(|d| d.from == edge_addr(1) && codec::peek(&d.bytes) == Ok(Kind::Data))
            .unwrap()
            .clone();
        let relay_key = RelayKey::derive(&key(1));
        let a = identity(1).id();
        let rewrap = |w: &mut World<Net>| {
            let mut kp = hijack(w, "B", &relay_key);
            let d = routed_datagram(&mut kp, Kind::Data, a, inner(&recorded.bytes));
            let since = w.trace.len();
            w.inject(Datagram {
                from: RELAY,
                to: edge_addr(2),
                bytes: d,
            });
            w.trace[since].clone()
        };
        w.advance(timers.reject_after - Duration::from_secs(2));
        let line = rewrap(&mut w);
        assert!(line.ends_with("B drops: Replayed"), "{line}");
        w.advance(Duration::from_secs(3));
        assert!(
            w.fabric.node("B").client.peers(w.now)[0]
                .session_age
                .is_none(),
            "erased"
        );
        let line = rewrap(&mut w);
        assert!(line.ends_with("B drops: NoSession"), "{line}");
        assert_eq!(numbers(&w, "B"), [1]);
        // B finds the relay again at its next keepalive; everyone still
        // talks.
        w.advance(Duration::from_secs(6));
        w.act(Side::Overlay, "B", |_| vec![numbered(2, 1, 2)]);
        assert_eq!(numbers(&w, "A"), [2]);
    }

    /// A relay key holder replays member A's recorded handshake and frames
    /// to B, re-wrapped with A's member id (what only a relay can do):
    /// while B knows A, the handshake is refused as not newer than the last;
    /// once A left and B forgot it, B answers it, but nobody can finish it,
    /// and no frame is delivered.
    #[test]
    fn a_relay_key_holder_replaying_a_member_handshake_gets_no_frame_through() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        let recorded: Vec<Datagram> = w
            .fabric
            .wire
            .iter()
            .filter(|d| d.from == edge_addr(1) && codec::peek(&d.bytes).is_ok_and(Kind::is_routed))
            .cloned()
            .collect();
        assert_eq!(codec::peek(&recorded[0].bytes), Ok(Kind::PeerInit));
        let relay_key = RelayKey::derive(&key(1));
        let a = identity(1).id();
        let replay = |w: &mut World<Net>| {
            let mut kp = hijack(w, "B", &relay_key);
            for d in &recorded {
                let kind = codec::peek(&d.bytes).unwrap();
                let d = routed_datagram(&mut kp, kind, a, inner(&d.bytes));
                w.inject(Datagram {
                    from: RELAY,
                    to: edge_addr(2),
                    bytes: d,
                });
            }
        };
        let before = delivered(&w, "B");
        replay(&mut w);
        let b = w.fabric.node("B").client.stats().drops.clone();
        assert_eq!(counts(&b), [(D::Replayed, recorded.len() as u64)]);
        w.stop("A");
        w.advance(w.fabric.relay_config.peer_timeout + Duration::from_secs(6));
        assert!(
            w.fabric.node("B").client.peers(w.now).is_empty(),
            "B forgot A"
        );
        let since = w.trace.len();
        replay(&mut w);
        w.advance(Duration::from_secs(6));
        assert_eq!(delivered(&w, "B"), before);
        assert!(w.fabric.node("B").client.stats().peer_handshakes >= 2);
        insta::assert_snapshot!(without_keepalives(&w, since));
    }

    /// An outsider records everything member A sends, from its first
    /// datagram on. A leaves, the relay forgets it and restarts. The
    /// recording, replayed from A's address and from another, reaches no
    /// member.
    #[test]
    fn a_recording_replayed_after_the_member_left_and_the_relay_restarted_reaches_nobody() {
        let mut w = edges(&["A", "B", "C"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        w.act(Side::Overlay, "A", |h| h.ping(ip(3), 2));
        w.advance(Duration::from_secs(6));
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 3));
        let from_a: Vec<Datagram> = w
            .fabric
            .wire
            .iter()
            .filter(|d| d.from == edge_addr(1))
            .cloned()
            .collect();
        let to_others: Vec<Datagram> = w
            .fabric
            .wire
            .iter()
            .filter(|d| d.from == RELAY && d.to != edge_addr(1))
            .cloned()
            .collect();
        assert!(from_a.len() > 10);
        w.stop("A");
        w.advance(w.fabric.relay_config.peer_timeout + Duration::from_secs(6));
        assert_eq!(w.fabric.relay.peers(w.now).len(), 2, "A is forgotten");
        w.restart_relay();
        w.advance(Duration::from_secs(6));
        assert_eq!(w.fabric.relay.peers(w.now).len(), 2, "B and C are back");
        let before = (delivered(&w, "B"), delivered(&w, "C"));

        w.log("-- the recording, from A's address");
        for d in &from_a {
            w.inject(d.clone());
        }
        let attacker: SocketAddr = "203.0.113.66:4444".parse().unwrap();
        w.log("-- the recording, from another address");
        for d in &from_a {
            w.inject(Datagram {
                from: attacker,
                ..d.clone()
            });
        }
        w.log("-- what the relay sent B and C, straight to them");
        for d in &to_others {
            w.inject(d.clone());
        }
        // B and C broadcast: a member the relay lists but nobody can speak
        // for gets a handshake it can't answer.
        w.advance(Duration::from_secs(6));
        w.act(Side::Overlay, "B", |_| {
            vec![sim::arp_request(mac(2), ip(2), ip(1))]
        });
        w.advance(w.fabric.relay_config.peer_timeout);
        assert_eq!(w.fabric.relay.peers(w.now).len(), 2, "no A");
        assert_eq!(
            (delivered(&w, "B"), delivered(&w, "C")),
            (before.0, before.1 + 1)
        );
        assert!(numbers(&w, "C").is_empty());
        let replays = w
            .trace
            .iter()
            .position(|l| l.contains("-- the recording"))
            .unwrap();
        let lines: Vec<&str> = w.trace[replays..]
            .iter()
            .filter(|l| !l.contains("Control(Keepalive") && !l.contains("Rejoin"))
            .map(|l| l.as_str())
            .collect();
        insta::assert_snapshot!(lines.join("\n"));
    }

    /// Member M forges under victim A's identity, from its own address and
    /// A's: A's uplink index at the relay with counter 2^64-2 and garbage
    /// tags, and, on its own uplink, B's index of A's member session. Then
    /// A's datagrams still pass, both ways.
    #[test]
    fn a_member_forging_under_another_changes_nothing() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        let last = |w: &World<Net>, kind| {
            w.fabric
                .wire
                .iter()
                .rev()
                .find(|d| d.from == edge_addr(1) && codec::peek(&d.bytes) == Ok(kind))
                .unwrap()
                .bytes
                .clone()
        };
        // What anyone on A's path sees in clear.
        let a_data = last(&w, Kind::Data);
        let a_control = last(&w, Kind::Control);
        let mut m = Forger::join(&mut w, &RelayKey::derive(&key(1)), 66, "M");
        let relay_drops = w.fabric.relay.stats().drops.clone();

        w.log("-- M forges under A");
        let huge = (u64::MAX - 1).to_be_bytes();
        let mut data = a_data.clone();
        data[routed::COUNTER].copy_from_slice(&huge);
        let end = data.len();
        data[end - TAG_LEN..].fill(0x55);
        let mut control = a_control.clone();
        control[control::COUNTER].copy_from_slice(&huge);
        let end = control.len();
        control[end - TAG_LEN..].fill(0x55);
        let mut garbage_inner = data.clone();
        garbage_inner[routed::HEADER_LEN..end_of(&data)].fill(0xaa);
        for from in [m.addr, edge_addr(1)] {
            for bytes in [&data, &control, &garbage_inner] {
                w.inject(Datagram {
                    from,
                    to: RELAY,
                    bytes: bytes.clone(),
                });
            }
        }
        // On its own uplink: B's index of A's session, a huge counter, a
        // garbage tag.
        let mut forged = inner(&a_data).to_vec();
        forged[data::COUNTER].copy_from_slice(&huge);
        let end = forged.len();
        forged[end - TAG_LEN..].fill(0x55);
        m.route(&mut w, Kind::Data, identity(2).id(), &forged);
        // A PeerResp naming the index of A's session as if M answered it.
        let mut resp = vec![0u8; codec::peer_resp::LEN];
        resp[4..8].copy_from_slice(&inner(&a_data)[data::RECEIVER]);
        m.route(&mut w, Kind::PeerResp, identity(2).id(), &resp);

        assert_eq!(
            w.fabric.relay.stats().drops.get(D::Forged) - relay_drops.get(D::Forged),
            6
        );
        assert_eq!(
            counts(&w.fabric.node("B").client.stats().drops),
            [(D::NoSession, 2)]
        );
        w.log("-- A carries on");
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 2));
        w.act(Side::Overlay, "B", |h| h.ping(ip(1), 3));
        w.advance(Duration::from_secs(6));
        assert_eq!(host(&w, "A").echo_replies, [(ip(2), 1), (ip(2), 2)]);
        assert_eq!(host(&w, "B").echo_replies, [(ip(1), 3)]);
        assert_eq!(w.fabric.node("A").client.stats().drops.total(), 0);
        assert!(w.fabric.node("A").client.is_registered());
        assert_eq!(w.fabric.node("A").client.stats().registrations, 1);
        let from = w
            .trace
            .iter()
            .position(|l| l.contains("-- M forges"))
            .unwrap();
        insta::assert_snapshot!(without_keepalives(&w, from));
    }

    /// Where the inner part of a routed datagram ends.
    fn end_of(d: &[u8]) -> usize {
        d.len() - TAG_LEN
    }

    /// Member M sends frames from A's MAC: the others refuse them and log
    /// it once; A keeps its MAC, and frames to it still reach A only.
    #[test]
    fn a_member_cant_take_another_members_mac() {
        let mut w = edges(&["A", "B", "M"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        let at_m = delivered(&w, "M");
        w.log("-- M uses A's MAC");
        for seq in 0..3 {
            w.act(Side::Overlay, "M", |_| {
                vec![sim::icmp_echo(
                    (mac(1), ip(1)),
                    (mac(2), ip(2)),
                    true,
                    10 + seq,
                )]
            });
        }
        let b = w.fabric.node("B").client.stats().drops.clone();
        assert_eq!(counts(&b), [(D::MacTaken, 3)]);
        assert_eq!(
            w.trace
                .iter()
                .filter(|l| l.contains("B: M used A, which A owns"))
                .count(),
            1,
            "logged once"
        );
        w.log("-- B answers A");
        w.act(Side::Overlay, "B", |h| h.ping(ip(1), 2));
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 3));
        assert_eq!(host(&w, "B").echo_replies, [(ip(1), 2)]);
        assert_eq!(host(&w, "A").echo_replies, [(ip(2), 1), (ip(2), 3)]);
        let b_peers = w.fabric.node("B").client.peers(w.now);
        let macs: Vec<(MemberId, usize)> = b_peers.iter().map(|p| (p.id, p.macs)).collect();
        assert!(macs.contains(&(identity(1).id(), 1)));
        assert!(
            !macs.contains(&(identity(3).id(), 1)),
            "M owns nothing at B"
        );
        assert_eq!(delivered(&w, "M"), at_m, "nothing for A reached M");
        let from = w
            .trace
            .iter()
            .position(|l| l.contains("-- M uses"))
            .unwrap();
        insta::assert_snapshot!(without_keepalives(&w, from));
    }

    /// Member M floods frames from 3000 random source MACs: the others
    /// learn at most their cap for M and drop the rest (`MacCap`); their
    /// own traffic is unaffected.
    #[test]
    fn a_member_flooding_source_macs_is_capped() {
        let mut w = edges(&["A", "B", "M"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        let cap = crate::core::switch::SwitchConfig::default().max_macs_per_port;
        for i in 0..3000u32 {
            let [_, x, y, z] = i.to_be_bytes();
            let src = MacAddr([2, 0x66, x, y, z, 1]);
            let frame = sim::udp_v4(
                (src, ip(3), 9),
                (MacAddr::BROADCAST, Ipv4Addr::BROADCAST, 9),
                b"flood",
            );
            w.act(Side::Overlay, "M", |_| vec![frame]);
        }
        for n in ["A", "B"] {
            let c = &w.fabric.node(n).client;
            assert_eq!(
                counts(&c.stats().drops),
                [(D::MacCap, 3000 - cap as u64)],
                "{n}"
            );
            let m = c
                .peers(w.now)
                .into_iter()
                .find(|p| p.id == identity(3).id())
                .unwrap();
            assert_eq!(m.macs, cap, "{n}");
        }
        w.act(Side::Overlay, "B", |h| h.ping(ip(1), 2));
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 3));
        assert_eq!(host(&w, "B").echo_replies, [(ip(1), 2)]);
        assert_eq!(host(&w, "A").echo_replies, [(ip(2), 1), (ip(2), 3)]);
        assert_eq!(w.fabric.relay.stats().drops.total(), 0);
    }

    /// An edge given the relay key as its network key derives another
    /// relay key, so another network: it gets no uplink and reaches nobody.
    #[test]
    fn an_edge_with_the_relay_key_as_network_key_reaches_nobody() {
        let mut net = Net::new(RelayConfig::default(), &[key(1)]);
        let wrong = NetworkKey::from_bytes(*RelayKey::derive(&key(1)).psk());
        net.add_node("A", 1, &key(1), vec!["A"]);
        net.add_node("B", 2, &key(1), vec!["B"]);
        net.add_node("T", 3, &wrong, vec!["T"]);
        let hosts = (1..=3)
            .map(|n| Host::new(["A", "B", "T"][n as usize - 1], mac(n), ip(n)))
            .collect();
        let mut w = World::relayed(net, idle_nat(), vec![], hosts);
        w.advance(Duration::from_secs(3));
        w.act(Side::Overlay, "T", |h| h.ping(ip(1), 1));
        w.act(Side::Overlay, "T", |_| vec![numbered(3, 2, 1)]);
        w.act(Side::Overlay, "A", |h| h.ping(ip(3), 2));
        w.advance(Duration::from_secs(3));
        assert!(!w.fabric.node("T").client.is_registered());
        assert_eq!(w.fabric.relay.peers(w.now).len(), 2);
        assert_eq!(delivered(&w, "T"), 0);
        assert!(w.fabric.tap_rx.iter().all(|(_, f)| f[6..12] != mac(3).0));
        let relay = &w.fabric.relay.stats().drops;
        // Its initiations (every 1, 2, 4 s) and its frames' datagrams.
        assert!(relay.get(D::WrongNetwork) >= 3, "{:?}", counts(relay));
        assert_eq!(relay.total(), relay.get(D::WrongNetwork));
        assert!(
            w.fabric.wire.iter().all(|d| d.to != edge_addr(3)),
            "no answer"
        );
        let t = w.fabric.node("T").client.stats();
        assert_eq!(counts(&t.drops), [(D::NotRegistered, 2)]);
        assert!(host(&w, "A").echo_replies.is_empty());
    }

    /// A thief of the relay key can join the relay (that is what the key
    /// is for), but not the network: without the member PSK, members
    /// refuse its handshakes and it can't answer theirs, so it sends and
    /// receives no frame.
    #[test]
    fn a_relay_key_thief_joins_the_relay_but_reaches_no_member() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        let relay_key = RelayKey::derive(&key(1));
        let mut thief = Forger::join(&mut w, &relay_key, 66, "thief");
        assert_eq!(w.fabric.relay.peers(w.now).len(), 3);
        w.log("-- the thief tries member handshakes");
        // Its best guess at a member handshake: the relay key as the PSK,
        // mac1 under the relay key's mac1 key, then under the true one
        // (as if it had guessed that too).
        let b = identity(2);
        let ts = WallClock::new(w.start, EPOCH).tai64n(w.now);
        for mac1_key in [
            relay_key.mac1_key(),
            crate::core::proto::MemberPsk::new(&key(1)).mac1_key(),
        ] {
            let (_, msg) =
                Initiator::start(identity(66).keys(), &b.keys().public, relay_key.psk(), &ts)
                    .unwrap();
            let mut peer_init = 0x1234_5678u32.to_be_bytes().to_vec();
            peer_init.extend_from_slice(&msg);
            let mac1 = codec::mac(&mac1_key, &[&peer_init]);
            peer_init.extend_from_slice(&mac1);
            thief.route(&mut w, Kind::PeerInit, b.id(), &peer_init);
        }
        assert_eq!(
            counts(&w.fabric.node("B").client.stats().drops),
            [(D::Forged, 1), (D::HandshakeFailed, 1)]
        );
        // The members list it, and try to reach it when they flood: it
        // can't read their handshakes.
        w.advance(Duration::from_secs(5));
        let since = w.fabric.wire.len();
        w.act(Side::Overlay, "B", |_| {
            vec![sim::arp_request(mac(2), ip(2), ip(9))]
        });
        let to_thief: Vec<&Datagram> = w.fabric.wire[since..]
            .iter()
            .filter(|d| d.to == thief.addr)
            .collect();
        assert_eq!(to_thief.len(), 1, "one handshake, no frame");
        let d = &to_thief[0].bytes;
        assert_eq!(codec::peek(d), Ok(Kind::PeerInit));
        let noise = &inner(d)[codec::peer_init::NOISE];
        assert!(
            noise::respond(identity(66).keys(), relay_key.psk(), noise, |_, _| Ok(
                vec![]
            ))
            .is_err()
        );
        assert!(numbers(&w, "A").is_empty());
        assert_eq!(
            delivered(&w, "A"),
            3,
            "B's ARP reply and echo reply, and its broadcast"
        );
    }

    /// Under load (here: always) the relay answers an initiation with a
    /// cookie, shorter than the initiation, keeping nothing; the member
    /// repeats it with the cookie (mac2) and joins. A stranger's or a
    /// garbage initiation gets no answer at all.
    #[test]
    fn under_load_members_join_with_a_cookie_and_strangers_get_nothing() {
        let relay = RelayConfig {
            handshakes_per_sec: 0,
            ..RelayConfig::default()
        };
        let mut w = edges_with(relay, relayed(), &["A", "B"]);
        w.advance(Duration::ZERO);
        let to_a: Vec<&Datagram> = w
            .fabric
            .wire
            .iter()
            .filter(|d| d.to == edge_addr(1))
            .collect();
        assert_eq!(to_a.len(), 1);
        assert_eq!(codec::peek(&to_a[0].bytes), Ok(Kind::CookieReply));
        assert!(to_a[0].bytes.len() < uplink_init::LEN);
        assert!(w.fabric.relay.peers(w.now).is_empty(), "no state");
        assert_eq!(w.fabric.relay.stats().handshakes, 0);
        assert!(!w.fabric.node("A").client.is_registered());
        w.advance(Duration::from_secs(1));
        assert!(w.fabric.node("A").client.is_registered());
        assert!(w.fabric.node("B").client.is_registered());
        assert_eq!(w.fabric.relay.stats().cookies_sent, 2);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        assert_eq!(host(&w, "A").echo_replies, [(ip(2), 1)]);

        w.log("-- a stranger and garbage");
        let mut stranger = Client::new(
            relayed(),
            &key(9),
            identity(9),
            RELAY,
            w.now,
            WallClock::new(w.start, EPOCH),
        );
        stranger.handle_timeout(w.now);
        let init = stranger.transmits();
        let mut garbage = vec![0x33; uplink_init::LEN];
        garbage[..4].copy_from_slice(&codec::header(Kind::UplinkInit));
        garbage[uplink_init::NETWORK].copy_from_slice(&RelayKey::derive(&key(1)).network_id().0);
        let since = w.fabric.wire.len();
        for bytes in [init[0].clone(), garbage] {
            w.inject(Datagram {
                from: edge_addr(9),
                to: RELAY,
                bytes,
            });
        }
        assert_eq!(w.fabric.wire.len() - since, 2, "no answer");
        let drops = counts(&w.fabric.relay.stats().drops);
        assert_eq!(
            drops,
            [(D::WrongNetwork, 1), (D::Forged, 1), (D::CookieRequired, 2)]
        );
        insta::assert_snapshot!(without_keepalives(&w, 0));
    }

    /// A member whose key the relay refuses never joins; the refusal is
    /// logged once; the others never hear of it.
    #[test]
    fn a_refused_member_never_joins() {
        let relay = RelayConfig {
            refuse: vec![identity(2).keys().public],
            ..RelayConfig::default()
        };
        let mut w = edges_with(relay, relayed(), &["A", "B"]);
        w.advance(Duration::from_secs(10));
        w.act(Side::Overlay, "B", |h| h.ping(ip(1), 1));
        w.act(Side::Overlay, "A", |_| {
            vec![sim::arp_request(mac(1), ip(1), ip(2))]
        });
        assert!(!w.fabric.node("B").client.is_registered());
        let peers: Vec<_> = w
            .fabric
            .relay
            .peers(w.now)
            .iter()
            .map(|p| p.member)
            .collect();
        assert_eq!(peers, [identity(1).id()]);
        assert!(w.fabric.node("A").client.peers(w.now).is_empty());
        // It keeps trying, every 1, 2, 4, then 8 s.
        let refused = w.fabric.relay.stats().drops.get(D::RefusedMember);
        assert!(refused >= 4, "{refused}");
        assert_eq!(
            w.trace
                .iter()
                .filter(|l| l.contains("relay: refuses B"))
                .count(),
            1
        );
        assert_eq!((delivered(&w, "A"), delivered(&w, "B")), (0, 0));
    }

    /// A version 1 datagram is dropped as `bad_version`, at the relay and
    /// at a member, and logged once a minute, naming the version.
    #[test]
    fn version_1_datagrams_are_dropped_as_bad_version() {
        let mut w = edges(&["A"]);
        w.advance(Duration::ZERO);
        let mut v1 = vec![0u8; 60];
        v1[0] = 1;
        v1[1] = 1;
        for _ in 0..2 {
            w.inject(Datagram {
                from: edge_addr(9),
                to: RELAY,
                bytes: v1.clone(),
            });
            w.inject(Datagram {
                from: RELAY,
                to: edge_addr(1),
                bytes: v1.clone(),
            });
        }
        assert_eq!(counts(&w.fabric.relay.stats().drops), [(D::BadVersion, 2)]);
        assert_eq!(
            counts(&w.fabric.node("A").client.stats().drops),
            [(D::BadVersion, 2)]
        );
        assert_eq!(D::BadVersion.as_str(), "bad_version");
        let from = w
            .trace
            .iter()
            .position(|l| l.contains("version 1"))
            .unwrap();
        insta::assert_snapshot!(w.trace[from..].join("\n"), @r"
        t=0ms 198.51.100.9:5000→relay version 1 datagram; relay drops: BadVersion
        t=0ms relay: 198.51.100.9:5000 speaks protocol version 1
        t=0ms relay→A version 1 datagram; A drops: BadVersion
        t=0ms A: the relay speaks protocol version 1
        t=0ms 198.51.100.9:5000→relay version 1 datagram; relay drops: BadVersion
        t=0ms relay→A version 1 datagram; A drops: BadVersion
        ");
    }

    /// A member restarts with the same identity while the other member
    /// holds the session it started with it: the other's next frames name
    /// keys the restarted member no longer has. It answers them with a
    /// handshake of its own, and frames flow again at once, not after the
    /// old session's rekey time.
    #[test]
    fn a_restarted_member_is_reached_at_once_by_one_that_started_the_session() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "B", |h| h.ping(ip(1), 1));
        w.advance(Duration::from_secs(2));
        w.restart("A");
        w.advance(Duration::from_secs(1));
        assert!(w.fabric.node("A").client.is_registered());
        let since = w.trace.len();
        for seq in 0..3 {
            w.act(Side::Overlay, "B", |_| vec![numbered(2, 1, seq)]);
        }
        w.act(Side::Overlay, "B", |h| h.ping(ip(1), 2));
        let trace = without_keepalives(&w, since);
        assert_eq!(
            host(&w, "B").echo_replies,
            [(ip(1), 1), (ip(1), 2)],
            "{trace}"
        );
        assert!(!numbers(&w, "A").is_empty(), "{trace}");
        insta::assert_snapshot!(trace);
    }

    /// After a relay restart the first member back hears of no other and
    /// forgets their sessions; another that still holds its session with it
    /// speaks first: the same answer brings them together again at once.
    #[test]
    fn after_a_relay_restart_a_member_that_kept_its_session_reaches_one_that_forgot_it() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        w.restart_relay();
        // A finds out first (its frame is lost) and forgets B; B finds out
        // at its next keepalive and keeps its session with A.
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 2));
        w.advance(Duration::from_secs(6));
        assert!(w.fabric.node("B").client.peers(w.now)[0]
            .session_age
            .is_some());
        let since = w.trace.len();
        w.act(Side::Overlay, "B", |h| h.ping(ip(1), 3));
        w.act(Side::Overlay, "B", |h| h.ping(ip(1), 4));
        let trace = without_keepalives(&w, since);
        assert_eq!(
            host(&w, "B").echo_replies.last(),
            Some(&(ip(1), 4)),
            "{trace}"
        );
    }

    /// A member restarts with the same identity: the relay and the other
    /// member take its new handshakes (their timestamps are newer), and
    /// frames flow again without waiting for the old sessions to expire.
    #[test]
    fn a_restarted_member_is_back_at_once() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        w.advance(Duration::from_secs(2));
        w.restart("A");
        w.advance(Duration::ZERO);
        assert!(w.fabric.node("A").client.is_registered());
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 2));
        w.act(Side::Overlay, "B", |h| h.ping(ip(1), 3));
        assert_eq!(host(&w, "A").echo_replies, [(ip(2), 1), (ip(2), 2)]);
        assert_eq!(host(&w, "B").echo_replies, [(ip(1), 3)]);
        assert_eq!(w.fabric.relay.peers(w.now).len(), 2);
        assert_eq!(
            w.fabric.relay.stats().drops.total(),
            0,
            "{:?}",
            counts(&w.fabric.relay.stats().drops)
        );
    }
}

/// Direct paths between members (issue 11) through the real engines:
/// members with the default configuration find each other's addresses
/// through the relay (the address it sees for them), probe, and send
/// frames member to member; what an outsider or a member of the network
/// can make of that.
#[cfg(test)]
mod direct_paths {
    use super::{
        tests::{counts, edges_with, host, ip},
        *,
    };
    use crate::core::{drop::DropReason as D, sim::Side};

    const A: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)), 5000);
    const B: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(198, 51, 100, 2)), 5000);

    fn direct_world(names: &[&'static str]) -> World<Net> {
        edges_with(RelayConfig::default(), ClientConfig::default(), names)
    }

    fn kind(d: &Datagram) -> Option<Kind> {
        codec::peek(&d.bytes).ok()
    }

    /// The direct address node `of` sends to member number `n` on.
    fn direct_to(w: &World<Net>, of: &str, n: u8) -> Option<SocketAddr> {
        let id = identity(n).id();
        let peers = w.fabric.node(of).client.peers(w.now);
        peers.iter().find(|p| p.id == id).and_then(|p| p.direct)
    }

    /// Host `from` pings `to` (sequence `seq`), then time moves `by`.
    fn ping(w: &mut World<Net>, from: &str, to: u8, seq: u16, by: Duration) {
        w.act(Side::Overlay, from, |h| h.ping(ip(to), seq));
        w.advance(by);
    }

    fn replied(w: &World<Net>, who: &str, seq: u16) -> bool {
        host(w, who).echo_replies.iter().any(|&(_, s)| s == seq)
    }

    /// A and B ping each other until both send on a direct path.
    fn go_direct(w: &mut World<Net>) {
        w.advance(Duration::ZERO);
        for seq in 1..=10 {
            ping(w, "A", 2, seq, Duration::from_millis(500));
            if direct_to(w, "A", 2) == Some(B) && direct_to(w, "B", 1) == Some(A) {
                return;
            }
        }
        panic!(
            "no direct path after 5 s: A→B {:?}, B→A {:?}",
            direct_to(w, "A", 2),
            direct_to(w, "B", 1)
        );
    }

    #[test]
    fn frames_go_member_to_member_once_a_probe_is_answered() {
        let mut w = direct_world(&["A", "B"]);
        go_direct(&mut w);
        let since = w.fabric.wire.len();
        for seq in 100..110 {
            ping(&mut w, "A", 2, seq, Duration::from_millis(200));
            assert!(replied(&w, "A", seq), "ping {seq}");
        }
        let wire = &w.fabric.wire[since..];
        let count = |from, to, k| {
            wire.iter()
                .filter(|d| d.from == from && d.to == to && kind(d) == Some(k))
                .count()
        };
        assert_eq!(
            wire.iter().filter(|d| kind(d) == Some(Kind::Data)).count(),
            0,
            "no frame through the relay"
        );
        assert!(
            count(A, B, Kind::Direct) >= 10,
            "{}",
            count(A, B, Kind::Direct)
        );
        assert!(
            count(B, A, Kind::Direct) >= 10,
            "{}",
            count(B, A, Kind::Direct)
        );
        // Keepalive pings while busy: about one a second each way, no more.
        assert!(count(A, B, Kind::DirectPath) <= 2 * 3, "{wire:?}");
        for n in ["A", "B"] {
            assert_eq!(counts(&w.fabric.node(n).client.stats().drops), [], "{n}");
        }
    }

    /// Garbage under a Direct header, a changed tag, a replay (from the
    /// right address or another): dropped and counted, nothing delivered;
    /// the genuine datagram still passes after its forgeries.
    #[test]
    fn forged_and_replayed_direct_datagrams_deliver_nothing() {
        let mut w = direct_world(&["A", "B"]);
        go_direct(&mut w);
        // A fresh Direct from A, sealed but not sent.
        let frame = crate::core::sim::arp_request(mac_of(1), ip(1), ip(2));
        let a = &mut w.fabric.node_mut("A").client;
        a.handle_frame(w.now, &VnetHdr::NONE, &mut frame.clone(), 1500);
        let sent = a.transmits_to();
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].0, B, "sent on the direct path");
        let genuine = sent[0].1.clone();
        assert_eq!(codec::peek(&genuine), Ok(Kind::Direct));
        let flip = |at: usize| {
            let mut d = genuine.clone();
            d[at] ^= 1;
            d
        };
        let mut garbage = codec::header(Kind::Direct).to_vec();
        garbage.extend((0..40u8).map(|i| i.wrapping_mul(37)));
        let last = genuine.len() - 1;
        let dgram = |from, bytes: Vec<u8>| Datagram { from, to: B, bytes };
        let before = w.fabric.node("B").client.stats().drops.clone();
        let at_b = |w: &World<Net>| w.fabric.tap_rx.iter().filter(|r| r.0 == "B").count();
        let rx = at_b(&w);
        let stranger = edge_addr(9);
        w.log("-- forgeries and replays of a Direct");
        w.inject(dgram(A, garbage.clone()));
        w.inject(dgram(stranger, garbage));
        w.inject(dgram(A, flip(last)));
        w.inject(dgram(A, flip(codec::direct::HEADER_LEN + data::HEADER_LEN)));
        w.inject(dgram(stranger, flip(last)));
        assert_eq!(at_b(&w), rx, "no forgery delivers");
        w.inject(dgram(A, genuine.clone()));
        assert_eq!(at_b(&w), rx + 1, "the genuine one does");
        w.inject(dgram(A, genuine.clone()));
        w.inject(dgram(stranger, genuine.clone()));
        assert_eq!(at_b(&w), rx + 1, "no replay delivers");
        let drops = w.fabric.node("B").client.stats().drops.clone();
        let new: Vec<(D, u64)> = drops
            .nonzero()
            .map(|(r, n)| (r, n - before.get(r)))
            .filter(|(_, n)| *n > 0)
            .collect();
        assert_eq!(
            new,
            [(D::Forged, 3), (D::Replayed, 2), (D::NoSession, 2)],
            "{:?}",
            counts(&drops)
        );
        // The garbage from A's address is answered with a Rejoin hint; A
        // takes none for an index it never gave.
        assert_eq!(direct_to(&w, "A", 2), Some(B), "A keeps its path");
        assert_eq!(direct_to(&w, "B", 1), Some(A), "B keeps its path");
    }

    fn mac_of(n: u8) -> crate::core::mac::MacAddr {
        super::tests::mac(n)
    }

    /// B restarts (same identity, same address): A's next Direct is
    /// answered with a Rejoin hint, A goes back through the relay and makes
    /// new keys, and frames flow again within a second.
    #[test]
    fn a_member_that_restarts_is_reached_again_quickly() {
        let mut w = direct_world(&["A", "B"]);
        go_direct(&mut w);
        let since = w.fabric.wire.len();
        let from = w.trace.len();
        w.restart("B");
        w.advance(Duration::from_millis(500));
        assert!(w.fabric.node("B").client.is_registered());
        assert!(
            w.fabric.wire[since..]
                .iter()
                .any(|d| d.from == B && d.to == A && kind(d) == Some(Kind::Rejoin)),
            "B hints A directly\n{}",
            w.trace[from..].join("\n")
        );
        for seq in 200..220 {
            ping(&mut w, "A", 2, seq, Duration::from_millis(500));
            assert!(replied(&w, "A", seq), "ping {seq}");
        }
        assert_eq!(direct_to(&w, "A", 2), Some(B), "direct again");
    }

    /// The relay restarts while A and B talk directly: they join it again
    /// one after the other, and the first back gets a member list without
    /// the other. It keeps the other (it reaches it directly) instead of
    /// forgetting its keys and path: no ping is lost.
    #[test]
    fn a_relay_restart_loses_nothing_on_a_direct_path() {
        let mut w = direct_world(&["A", "B"]);
        go_direct(&mut w);
        w.restart_relay();
        // B reaches the new relay 6 s after A does.
        w.fabric.cut.push((B, RELAY));
        for seq in 300..340 {
            if seq == 324 {
                w.fabric.cut.clear();
            }
            ping(&mut w, "A", 2, seq, Duration::from_millis(250));
            assert!(replied(&w, "A", seq), "ping {seq}");
        }
        assert!(w.fabric.node("A").client.is_registered());
        assert!(w.fabric.node("B").client.is_registered());
        assert_eq!(direct_to(&w, "A", 2), Some(B));
        assert_eq!(w.fabric.relay.peers(w.now).len(), 2);
        let left = w.trace.iter().filter(|l| l.contains(" left")).count();
        assert_eq!(left, 0, "a member was forgotten");
    }

    /// A member the relay stops listing for good (it left, or was
    /// refused) is forgotten within the grace, direct path or not.
    #[test]
    fn an_unlisted_member_on_a_direct_path_is_forgotten_after_the_grace() {
        let mut w = direct_world(&["A", "B"]);
        go_direct(&mut w);
        w.fabric.node_mut("B").up = false;
        w.fabric.cut.push((A, B));
        w.advance(Duration::from_secs(40));
        let ids: Vec<_> = w
            .fabric
            .node("A")
            .client
            .peers(w.now)
            .iter()
            .map(|p| p.id)
            .collect();
        assert!(ids.is_empty(), "A still knows {ids:?}");
    }

    /// The direct path stops delivering (both ways) while A pings B ten
    /// times a second: within 3.5 s frames go through the relay, and none
    /// is lost after that.
    #[test]
    fn a_dead_direct_path_falls_back_to_the_relay_within_seconds() {
        let mut w = direct_world(&["A", "B"]);
        go_direct(&mut w);
        w.log("-- the path between A and B stops delivering");
        w.fabric.cut.push((A, B));
        let cut_at = w.now;
        let mut lost = Vec::new();
        for seq in 1000..1100u16 {
            ping(&mut w, "A", 2, seq, Duration::from_millis(100));
            if !replied(&w, "A", seq) {
                lost.push((seq, w.now - cut_at));
            }
        }
        let last_lost = lost.last().map(|l| l.1).unwrap_or_default();
        assert!(
            last_lost <= Duration::from_millis(3500),
            "lost after 3.5 s: {lost:?}"
        );
        assert_eq!(direct_to(&w, "A", 2), None);
        assert_eq!(direct_to(&w, "B", 1), None);
        let stats = w.fabric.node("A").client.stats().path_changes;
        assert!(stats >= 2, "{stats}");
    }

    /// A member whose endpoints name a victim's address (here, it says so
    /// in its own endpoints) makes the members that talk to it ping the
    /// victim a bounded number of times: count them over a minute.
    #[test]
    fn endpoints_naming_a_victim_bring_it_few_pings() {
        let victim: SocketAddr = "203.0.113.66:53".parse().unwrap();
        let mut w = direct_world(&["A", "M"]);
        // M's own address never answers A (behind a symmetric NAT, or on
        // purpose): A keeps probing M's candidates all along.
        w.fabric.cut.push((A, B));
        w.fabric
            .node_mut("M")
            .client
            .set_local_endpoints(vec![victim], vec![]);
        w.advance(Duration::ZERO);
        // A and M talk for a minute, once a second.
        for seq in 1..=60 {
            ping(&mut w, "A", 2, seq, Duration::from_secs(1));
        }
        let to_victim = w.fabric.wire.iter().filter(|d| d.to == victim).count();
        assert!(to_victim > 0, "the victim was probed at all");
        // Five rounds at PROBE_FAST, then one every PROBE_SLOW, again
        // when M sends its endpoints anew (every ENDPOINTS_EVERY).
        assert!(
            to_victim <= 16,
            "{to_victim} pings to the victim in a minute"
        );
    }

    /// The endpoints test again, at its worst: M's own address never
    /// answers (it is cut off from A, as behind a symmetric NAT, or on
    /// purpose) and M changes its endpoints every second. New endpoints
    /// restart fast probing at most once per PROBE_SLOW (10 s): five pings
    /// per 10 s to each address at most, however often M changes them.
    #[test]
    fn changing_endpoints_every_second_bring_a_victim_five_pings_per_ten_seconds_at_most() {
        let victim: SocketAddr = "203.0.113.66:53".parse().unwrap();
        let other: SocketAddr = "203.0.113.67:53".parse().unwrap();
        let mut w = direct_world(&["A", "M"]);
        w.fabric.cut.push((A, B));
        w.advance(Duration::ZERO);
        for seq in 1..=60u16 {
            let mine = if seq % 2 == 0 {
                vec![victim]
            } else {
                vec![victim, other]
            };
            w.fabric
                .node_mut("M")
                .client
                .set_local_endpoints(mine, vec![]);
            ping(&mut w, "A", 2, seq, Duration::from_secs(1));
        }
        assert_eq!(direct_to(&w, "A", 2), None);
        let to_victim = w.fabric.wire.iter().filter(|d| d.to == victim).count();
        assert!(
            to_victim <= 36,
            "{to_victim} pings to the victim in a minute"
        );
        let to_other = w.fabric.wire.iter().filter(|d| d.to == other).count();
        assert!(to_other <= 36, "{to_other} pings to the other in a minute");
    }

    /// A member that can spoof source addresses lists a victim among its
    /// endpoints and answers A's pings to it with pongs it seals itself,
    /// "from" the victim: if it can guess the ping's tx, A sends it every
    /// frame (flooded ones too) at the victim. Ping numbers must not be
    /// guessable: a thousand guesses confirm nothing.
    #[test]
    fn a_member_cannot_confirm_a_victims_address_with_guessed_pongs() {
        let victim: SocketAddr = "203.0.113.66:53".parse().unwrap();
        let mut w = direct_world(&["A", "M"]);
        w.fabric.cut.push((A, B));
        w.fabric
            .node_mut("M")
            .client
            .set_local_endpoints(vec![victim], vec![]);
        w.advance(Duration::ZERO);
        for seq in 1..=3u16 {
            ping(&mut w, "A", 2, seq, Duration::from_millis(500));
        }
        assert!(
            w.fabric.wire.iter().any(|d| d.to == victim),
            "A probes the victim"
        );
        let a = identity(1).id();
        let now = w.now;
        let m = &mut w.fabric.node_mut("M").client;
        let kp = m.fuzz_peer_keypair(now, a).expect("M has keys for A");
        let mut forged = Vec::new();
        for tx in 0..1000u64 {
            let mut plain = Vec::new();
            codec::PathMessage::Pong { tx, observed: A }.encode(&mut plain);
            let counter = kp.next_counter().unwrap();
            let mut d = codec::header(Kind::DirectPath).to_vec();
            d.extend_from_slice(&kp.remote_index.to_be_bytes());
            d.extend_from_slice(&counter.to_be_bytes());
            let mut aad = codec::path_aad(Kind::DirectPath).to_vec();
            aad.extend_from_slice(&d[4..4 + data::HEADER_LEN]);
            let tag = kp.seal(counter, &aad, &mut plain);
            d.extend_from_slice(&plain);
            d.extend_from_slice(&tag);
            forged.push(d);
        }
        for bytes in forged {
            w.fabric.inject(Datagram {
                from: victim,
                to: A,
                bytes,
            });
        }
        w.advance(Duration::ZERO);
        assert_eq!(
            direct_to(&w, "A", 2),
            None,
            "A sends M's frames to the victim"
        );
    }

    /// An outsider that sees A's Direct datagrams to B (same Wi-Fi, same
    /// LAN, on the path) learns B's receiver index and sends A Rejoin hints
    /// "from" B's address, twice a second: 8 unauthenticated bytes each,
    /// and Directs under made-up indexes. A makes new keys with B (once a
    /// second at most, as for the relay's hints) but keeps the direct path:
    /// no frame goes through the relay, none is lost.
    #[test]
    fn forged_rejoin_hints_do_not_move_a_working_path_to_the_relay() {
        let mut w = direct_world(&["A", "B"]);
        go_direct(&mut w);
        let since = w.fabric.wire.len();
        let handshakes = w.fabric.node("A").client.stats().peer_handshakes;
        for seq in 300..400u16 {
            if seq % 5 == 0 {
                let sniffed = w.fabric.wire[since..]
                    .iter()
                    .rev()
                    .find(|d| d.from == A && d.to == B && kind(d) == Some(Kind::Direct))
                    .map_or([0; 4], |d| d.bytes[4..8].try_into().unwrap());
                let mut hint = codec::header(Kind::Rejoin).to_vec();
                hint.extend_from_slice(&sniffed);
                w.inject(Datagram {
                    from: B,
                    to: A,
                    bytes: hint,
                });
                // And a Direct under an index A never gave, "from" B.
                let mut garbage = codec::header(Kind::Direct).to_vec();
                garbage.extend([seq as u8; 40]);
                w.inject(Datagram {
                    from: B,
                    to: A,
                    bytes: garbage,
                });
            }
            ping(&mut w, "A", 2, seq, Duration::from_millis(100));
            assert!(replied(&w, "A", seq), "ping {seq}");
            assert_eq!(direct_to(&w, "A", 2), Some(B), "at ping {seq}");
        }
        let relayed = w.fabric.wire[since..]
            .iter()
            .filter(|d| d.from == A && kind(d) == Some(Kind::Data))
            .count();
        assert_eq!(relayed, 0, "frames from A through the relay");
        let new = w.fabric.node("A").client.stats().peer_handshakes - handshakes;
        assert!(new <= 11, "{new} handshakes in 10 s");
    }

    /// A member with direct paths off answers nothing that does not come
    /// from the relay: no Rejoin hint to a stranger's Direct (or to a
    /// source address a stranger spoofs).
    #[test]
    fn a_member_with_direct_paths_off_ignores_direct_datagrams() {
        let mut w = edges_with(RelayConfig::default(), relayed(), &["A", "B"]);
        w.advance(Duration::ZERO);
        ping(&mut w, "A", 2, 1, Duration::from_millis(100));
        let since = w.fabric.wire.len();
        let stranger = edge_addr(9);
        let mut garbage = codec::header(Kind::Direct).to_vec();
        garbage.extend([7u8; 40]);
        w.inject(Datagram {
            from: stranger,
            to: B,
            bytes: garbage,
        });
        let mut hint = codec::header(Kind::Rejoin).to_vec();
        hint.extend([7u8; 4]);
        w.inject(Datagram {
            from: stranger,
            to: B,
            bytes: hint,
        });
        let answers: Vec<_> = w.fabric.wire[since..]
            .iter()
            .filter(|d| d.from == B)
            .collect();
        assert_eq!(answers, Vec::<&Datagram>::new());
        assert_eq!(
            counts(&w.fabric.node("B").client.stats().drops),
            [(D::DirectOff, 2)]
        );
    }

    /// Seals path message `m` as member `who` to member number `to`, as a
    /// DirectPath datagram (what a member can make with its own keys).
    fn sealed_by(w: &mut World<Net>, who: &str, to: u8, m: &codec::PathMessage) -> Vec<u8> {
        let mut plain = Vec::new();
        m.encode(&mut plain);
        sealed_raw(w, who, to, plain)
    }

    /// [`sealed_by`] with any plaintext.
    fn sealed_raw(w: &mut World<Net>, who: &str, to: u8, mut plain: Vec<u8>) -> Vec<u8> {
        let now = w.now;
        let client = &mut w.fabric.node_mut(who).client;
        let kp = client
            .fuzz_peer_keypair(now, identity(to).id())
            .expect("keys for the member");
        let counter = kp.next_counter().unwrap();
        let mut d = codec::header(Kind::DirectPath).to_vec();
        d.extend_from_slice(&kp.remote_index.to_be_bytes());
        d.extend_from_slice(&counter.to_be_bytes());
        let mut aad = codec::path_aad(Kind::DirectPath).to_vec();
        aad.extend_from_slice(&d[4..4 + data::HEADER_LEN]);
        let tag = kp.seal(counter, &aad, &mut plain);
        d.extend_from_slice(&plain);
        d.extend_from_slice(&tag);
        d
    }

    /// A member that forges its source address sends A pings "from" a
    /// victim, as fast as it likes: A answers at most PONGS_PER_SEC of them
    /// a second (each pong a few bytes more than the ping).
    #[test]
    fn pings_from_a_spoofed_address_bring_the_victim_few_pongs() {
        let victim: SocketAddr = "203.0.113.66:53".parse().unwrap();
        let mut w = direct_world(&["A", "M"]);
        w.fabric.cut.push((A, B));
        w.advance(Duration::ZERO);
        ping(&mut w, "A", 2, 1, Duration::from_millis(100));
        let since = w.fabric.wire.len();
        for tx in 0..200 {
            let bytes = sealed_by(&mut w, "M", 1, &codec::PathMessage::Ping { tx });
            w.fabric.inject(Datagram {
                from: victim,
                to: A,
                bytes,
            });
        }
        w.advance(Duration::ZERO);
        let to_victim = w.fabric.wire[since..]
            .iter()
            .filter(|d| d.to == victim)
            .count();
        assert!(to_victim <= 32 + 1, "{to_victim} datagrams to the victim");
    }

    /// A member that names the relay's address among its endpoints gets
    /// no member to send pings to the relay.
    #[test]
    fn the_relays_address_is_never_probed() {
        let mut w = direct_world(&["A", "M"]);
        w.fabric.cut.push((A, B));
        w.fabric
            .node_mut("M")
            .client
            .set_local_endpoints(vec![RELAY], vec![]);
        w.advance(Duration::ZERO);
        for seq in 1..=10 {
            ping(&mut w, "A", 2, seq, Duration::from_secs(1));
        }
        let probes = w
            .fabric
            .wire
            .iter()
            .filter(|d| d.to == RELAY && kind(d) == Some(Kind::DirectPath))
            .count();
        assert_eq!(probes, 0);
        assert_eq!(counts(&w.fabric.relay.stats().drops), []);
    }

    /// Endpoints lifted off the relay leg (the inner part of a PeerPath)
    /// and sent from elsewhere as a DirectPath (by anyone on the relay's
    /// path) do not open (each kind has its own associated data), so they
    /// use up no counter: the genuine ones still arrive through the relay.
    #[test]
    fn endpoints_sent_directly_are_refused() {
        let mut w = direct_world(&["A", "M"]);
        w.fabric.cut.push((A, B));
        w.advance(Duration::ZERO);
        ping(&mut w, "A", 2, 1, Duration::from_millis(100));
        // M's endpoints change: its next timer round sends them.
        let now = w.now;
        let m = &mut w.fabric.node_mut("M").client;
        m.set_local_endpoints(vec!["192.168.7.2:5000".parse().unwrap()], vec![]);
        m.handle_timeout(now);
        let sent = m.transmits_to();
        let peer_path = sent
            .iter()
            .find(|(to, d)| *to == RELAY && codec::peek(d) == Ok(Kind::PeerPath))
            .expect("M sends its endpoints")
            .1
            .clone();
        let inner = &peer_path[routed::HEADER_LEN..peer_path.len() - TAG_LEN];
        let mut lifted = codec::header(Kind::DirectPath).to_vec();
        lifted.extend_from_slice(inner);
        let before = w.fabric.node("A").client.stats().drops.get(D::Forged);
        w.inject(Datagram {
            from: edge_addr(9),
            to: A,
            bytes: lifted,
        });
        let after = w.fabric.node("A").client.stats().drops.get(D::Forged);
        assert_eq!(after - before, 1, "refused");
        w.inject(Datagram {
            from: B,
            to: RELAY,
            bytes: peer_path,
        });
        assert_eq!(
            w.fabric.node("A").client.stats().drops.get(D::Replayed),
            0,
            "the genuine ones are taken"
        );
    }

    /// Odd input on the direct kinds, from the direct path's address and
    /// from a stranger: every length around the minimum under a Direct,
    /// DirectPath or Rejoin header, with a receiver index A knows or not,
    /// and path plaintexts that open but don't parse. Dropped and counted,
    /// never a panic, and the path stays.
    #[test]
    fn odd_direct_datagrams_are_counted_drops() {
        let mut w = direct_world(&["A", "B"]);
        go_direct(&mut w);
        ping(&mut w, "A", 2, 50, Duration::from_millis(100));
        let known: [u8; 4] = w
            .fabric
            .wire
            .iter()
            .rev()
            .find(|d| d.from == B && d.to == A && kind(d) == Some(Kind::Direct))
            .map(|d| d.bytes[4..8].try_into().unwrap())
            .unwrap();
        let mut odd = Vec::new();
        for k in [Kind::Direct, Kind::DirectPath, Kind::Rejoin] {
            for len in 0..80usize {
                for index in [[0xff; 4], known] {
                    let mut d = codec::header(k).to_vec();
                    d.extend_from_slice(&index);
                    d.extend((0..len).map(|i| i as u8));
                    d.truncate(4 + len);
                    odd.push(d);
                }
            }
        }
        for plain in [
            vec![],
            vec![1],
            vec![1, 9],
            vec![1, 1, 4],
            vec![2],
            vec![2, 0, 0, 0, 0, 0, 0, 0],
            vec![3, 0, 0, 0, 0, 0, 0, 0, 0],
            vec![3, 0, 0, 0, 0, 0, 0, 0, 0, 6, 0],
            vec![9; 40],
        ] {
            odd.push(sealed_raw(&mut w, "B", 1, plain));
        }
        let rx = w.fabric.tap_rx.len();
        let before = w.fabric.node("A").client.stats().datagrams_in;
        let drops_before = w.fabric.node("A").client.stats().drops.total();
        let n = odd.len() as u64 * 2;
        for bytes in odd {
            for from in [B, edge_addr(9)] {
                w.fabric.inject(Datagram {
                    from,
                    to: A,
                    bytes: bytes.clone(),
                });
            }
        }
        w.advance(Duration::ZERO);
        let stats = w.fabric.node("A").client.stats();
        assert!(stats.datagrams_in - before >= n);
        assert!(
            stats.drops.total() - drops_before >= n - 4,
            "{:?}",
            counts(&stats.drops)
        );
        assert_eq!(w.fabric.tap_rx.len(), rx, "nothing delivered");
        assert_eq!(direct_to(&w, "A", 2), Some(B));
    }
}
