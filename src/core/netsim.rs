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
        self.add_node_with(name, n, key, behind, ClientConfig::default());
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
        let client = self.client(n, key, config, self.start);
        self.nodes.push(Node {
            name,
            addr: edge_addr(n),
            client,
            behind,
            up: true,
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

    /// A name for an address: `relay`, a node's name, or the address.
    fn name_of(&self, addr: SocketAddr) -> String {
        if addr == RELAY {
            return "relay".into();
        }
        self.nodes
            .iter()
            .find(|n| n.addr == addr)
            .map_or_else(|| addr.to_string(), |n| n.name.to_string())
    }

    /// A name for a member id: its node's name, or the id.
    fn member_name(&self, id: MemberId) -> String {
        self.nodes
            .iter()
            .find(|n| n.client.identity().id() == id)
            .map_or_else(|| id.to_string(), |n| n.name.to_string())
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
                    (false, 7) => "KeepaliveAck".to_string(),
                    (false, n) if n >= 13 && (n - 13) % MEMBER_ENTRY_LEN == 0 => {
                        format!("Members[{}]", (n - 13) / MEMBER_ENTRY_LEN)
                    }
                    (_, n) => format!("{n} bytes"),
                };
                format!("Control({what})")
            }
            Kind::PeerInit | Kind::PeerResp | Kind::Data => {
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
        self.relay.expire(now);
        self.log_relay_events(cx);
        let queue = &mut self.queue;
        for node in self.nodes.iter_mut().filter(|n| n.up) {
            if node.next_poll.is_some_and(|t| t > now) {
                continue;
            }
            let (from, to) = (node.addr, node.client.relay());
            let next = node.client.poll(now, &mut |d| {
                queue.push_back(Datagram {
                    from,
                    to,
                    bytes: d.to_vec(),
                })
            });
            node.next_poll = Some(next);
        }
        self.log_member_events(cx);
        self.run(cx)
    }

    fn log_relay_events(&mut self, cx: &mut Cx<'_>) {
        let events: Vec<RelayEvent> = self.relay.drain_events().collect();
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
            let events: Vec<MemberEvent> = node.client.drain_events().collect();
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
        let (addr, relay) = (node.addr, node.client.relay());
        let mut frames: Vec<(VnetHdr, Vec<u8>)> = Vec::new();
        let mut deliver = |h: &VnetHdr, f: &[u8]| frames.push((*h, f.to_vec()));
        let event = node.client.handle_datagram(
            cx.now,
            d.from,
            &d.bytes,
            &mut |reply| {
                queue.push_back(Datagram {
                    from: addr,
                    to: relay,
                    bytes: reply.to_vec(),
                })
            },
            &mut deliver,
        );
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
        let (addr, relay) = (node.addr, node.client.relay());
        let drops = node.client.stats().drops.clone();
        node.client
            .handle_frame(cx.now, hdr, frame, 1500, &mut |d| {
                queue.push_back(Datagram {
                    from: addr,
                    to: relay,
                    bytes: d.to_vec(),
                })
            });
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
        net.relay.expire(cx.now);
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

    /// Stops node `name`: it sends nothing more and loses what it is sent.
    pub(crate) fn stop(&mut self, name: &str) {
        self.log(format!("{name} stops"));
        self.fabric.node_mut(name).up = false;
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
        edges_with(RelayConfig::default(), ClientConfig::default(), names)
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
            ..ClientConfig::default()
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
            w.fabric.node_mut("A").client.handle_frame(
                w.now,
                &VnetHdr::NONE,
                &mut frame.clone(),
                1500,
                &mut |d| fresh.push(d.to_vec()),
            );
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
            ClientConfig::default(),
            &key(9),
            identity(9),
            RELAY,
            w.now,
            WallClock::new(w.start, EPOCH),
        );
        let mut strange = Vec::new();
        stranger.poll(w.now, &mut |d| strange.push(d.to_vec()));
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
