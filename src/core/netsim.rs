//! Deterministic network simulator: one [`Relay`] and several [`Client`]s
//! (edges, and optionally the bridge) exchanging UDP datagrams through an
//! in-memory queue, under a hand-moved clock.
//!
//! [`Net`] is a [`Fabric`] for [`World`]: virtual hosts sit behind edges'
//! "TAPs", the bridge's [`Nat`](crate::core::nat::Nat) behind its own client,
//! and every datagram is delivered in order and traced as one line. Session
//! ids and keys are fixed, and forward targets are sorted by name, so traces
//! are reproducible.

use std::{
    collections::VecDeque,
    net::{Ipv4Addr, SocketAddr},
    time::{Duration, Instant},
};

use crate::core::{
    client::{Client, ClientConfig, ClientEvent},
    mac::MacAddr,
    offload::VnetHdr,
    relay::{Relay, RelayAction, RelayConfig, RelayEvent},
    sim::{Cx, Fabric, Host, Queue, World, BRIDGE},
    wire::{self, Cipher, Kind, Message, NetworkKey, SessionId},
};

/// The relay's address.
pub(crate) const RELAY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 7171);

/// A key of network number `n`.
pub(crate) fn key(n: u8) -> NetworkKey {
    NetworkKey::from_bytes([n; 32])
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

/// An edge or bridge: a relay client at a UDP address.
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

/// The relay, its clients and the datagrams between them.
pub(crate) struct Net {
    pub relay: Relay,
    pub relay_config: RelayConfig,
    ciphers: Vec<Cipher>,
    pub nodes: Vec<Node>,
    queue: VecDeque<Datagram>,
    /// Every datagram delivered (or lost), in order.
    pub wire: Vec<Datagram>,
    /// Every frame a client handed to its TAP (or bridge): node, frame.
    pub tap_rx: Vec<(&'static str, Vec<u8>)>,
    scratch: Vec<u8>,
}

/// Session of node number `n` (and of the relay: `0xee`, then `0xef`...).
pub(crate) fn session(n: u8) -> SessionId {
    SessionId([n; 16])
}

impl Net {
    /// A relay (session `0xee`) serving one network per key, with no nodes.
    pub(crate) fn new(relay_config: RelayConfig, keys: &[NetworkKey]) -> Net {
        let ciphers: Vec<Cipher> = keys.iter().map(Cipher::new).collect();
        Net {
            relay: Relay::new(relay_config.clone(), ciphers.clone(), session(0xee)),
            relay_config,
            ciphers,
            nodes: Vec::new(),
            queue: VecDeque::new(),
            wire: Vec::new(),
            tap_rx: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Adds a node number `n` (address and session from `n`) on network
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
    /// as an edge with a vnet TAP or a bridge runs it).
    pub(crate) fn add_node_with(
        &mut self,
        name: &'static str,
        n: u8,
        key: &NetworkKey,
        behind: Vec<&'static str>,
        config: ClientConfig,
    ) {
        let client = Client::new(config, Cipher::new(key), session(n), RELAY);
        self.nodes.push(Node {
            name,
            addr: edge_addr(n),
            client,
            behind,
            up: true,
            next_poll: None,
        });
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

    /// A short label for a datagram (the kind; for frames the fragment and
    /// MACs, opened with the simulator's keys), and the frame's destination.
    fn label(&mut self, cx: &Cx<'_>, bytes: &[u8]) -> (String, Option<MacAddr>) {
        let Ok(header) = wire::peek_header(bytes) else {
            return ("garbage".into(), None);
        };
        if header.kind == Kind::RoutedFrame {
            for cipher in &self.ciphers {
                if let Ok((_, f)) = wire::check_route(cipher, bytes) {
                    let label = format!(
                        "RoutedFrame {}/{} {} > {}",
                        f.index() + 1,
                        f.count(),
                        cx.name(f.src()),
                        cx.name(f.dst())
                    );
                    return (label, Some(f.dst()));
                }
            }
            return ("RoutedFrame (bad relay tag)".into(), None);
        }
        if header.kind != Kind::Frame {
            return (format!("{:?}", header.kind), None);
        }
        for cipher in &self.ciphers {
            if let Ok((_, Message::Frame(f))) = wire::open(cipher, bytes, &mut self.scratch) {
                let label = format!(
                    "Frame {}/{} {} > {}",
                    f.index() + 1,
                    f.count(),
                    cx.name(f.src()),
                    cx.name(f.dst())
                );
                return (label, Some(f.dst()));
            }
        }
        ("Frame (does not open)".into(), None)
    }

    /// Puts a datagram on the wire, as if sent by `from` (e.g. a replay).
    pub(crate) fn inject(&mut self, datagram: Datagram) {
        self.queue.push_back(datagram);
    }

    /// Replaces the relay with a fresh one with session `relay_session`, as
    /// after a restart: every peer and MAC is forgotten.
    pub(crate) fn restart_relay(&mut self, cx: &mut Cx<'_>, relay_session: SessionId) {
        cx.log(format!("relay restarts with session {relay_session}"));
        self.relay = Relay::new(
            self.relay_config.clone(),
            self.ciphers.clone(),
            relay_session,
        );
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
        self.queue_pushes(cx);
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
        self.run(cx)
    }

    /// Queues the datagrams the relay sends on its own (capability
    /// announcements), as its driver does after every event.
    fn queue_pushes(&mut self, cx: &mut Cx<'_>) {
        let pushes: Vec<(SocketAddr, Vec<u8>)> = self.relay.drain_pushes().collect();
        for (to, bytes) in pushes {
            cx.log(format!("relay pushes RegisterAck to {}", self.name_of(to)));
            self.queue.push_back(Datagram {
                from: RELAY,
                to,
                bytes,
            });
        }
    }

    fn log_relay_events(&mut self, cx: &mut Cx<'_>) {
        let events: Vec<RelayEvent> = self.relay.drain_events().collect();
        for event in events {
            match event {
                RelayEvent::Joined { addr, .. } => {
                    cx.log(format!("relay: {} joined", self.name_of(addr)))
                }
                RelayEvent::Left { addr, .. } => {
                    cx.log(format!("relay: {} forgotten", self.name_of(addr)))
                }
            }
        }
    }

    /// Delivers queued datagrams, in order, until none is left; returns the
    /// frames clients handed to their TAPs (or bridge).
    pub(crate) fn run(&mut self, cx: &mut Cx<'_>) -> Vec<(&'static str, Vec<u8>)> {
        let mut arrived = Vec::new();
        let mut steps = 0;
        while let Some(d) = self.queue.pop_front() {
            steps += 1;
            assert!(steps < 10_000, "datagrams do not settle");
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
        let (label, dst) = self.label(cx, &d.bytes);
        let from = self.name_of(d.from);
        let line = match self.relay.handle_datagram(cx.now, d.from, &d.bytes) {
            RelayAction::Forward(targets) => {
                let targets = targets.to_vec();
                let mut named: Vec<(String, SocketAddr)> =
                    targets.iter().map(|&a| (self.name_of(a), a)).collect();
                named.sort();
                let verb = self.verb(cx, &d, &named, dst);
                let list: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
                for (_, to) in &named {
                    self.queue.push_back(Datagram {
                        from: RELAY,
                        to: *to,
                        bytes: d.bytes.clone(),
                    });
                }
                format!(
                    "{from}→relay {label}; relay {verb} to [{}]",
                    list.join(", ")
                )
            }
            RelayAction::Reply(reply) => {
                self.queue.push_back(Datagram {
                    from: RELAY,
                    to: d.from,
                    bytes: reply.to_vec(),
                });
                format!("{from}→relay {label}")
            }
            RelayAction::Drop(reason) => format!("{from}→relay {label}; relay drops: {reason:?}"),
        };
        cx.log(line);
        self.queue_pushes(cx);
        self.log_relay_events(cx);
    }

    /// How the relay sent a frame to `targets`: "forwards" (unicast),
    /// "floods", or "sends" when one target is the only other peer and owns
    /// the destination, which could be either.
    fn verb(
        &self,
        cx: &Cx<'_>,
        d: &Datagram,
        targets: &[(String, SocketAddr)],
        dst: Option<MacAddr>,
    ) -> &'static str {
        let Ok(header) = wire::peek_header(&d.bytes) else {
            return "sends";
        };
        let others = self
            .relay
            .peers(cx.now)
            .iter()
            .filter(|p| p.network == header.network_id && p.addr != d.from)
            .count();
        let owns_dst = |addr: &SocketAddr| {
            let dst = dst.map(|m| cx.name(m)).unwrap_or_default();
            self.nodes
                .iter()
                .any(|n| n.addr == *addr && n.behind.contains(&dst.as_str()))
        };
        match targets {
            _ if dst.is_some_and(|m| m.is_multicast()) => "floods",
            _ if targets.len() < others => "forwards",
            [(_, addr)] if owns_dst(addr) => "sends",
            _ => "floods",
        }
    }

    fn deliver_to_node(
        &mut self,
        cx: &mut Cx<'_>,
        d: Datagram,
        last_of_batch: bool,
        arrived: &mut Vec<(&'static str, Vec<u8>)>,
    ) {
        let (label, _) = self.label(cx, &d.bytes);
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
            self.tap_rx.push((node.name, frame.clone()));
            arrived.push((node.behind[0], frame));
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
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.behind[0] == from)
            .expect("sender has no node");
        if !node.up {
            cx.log(format!("{} is down: frame lost", node.name));
            return vec![];
        }
        let queue = &mut self.queue;
        let (addr, relay) = (node.addr, node.client.relay());
        let drops = node.client.stats().drops.clone();
        node.client.handle_frame(hdr, frame, 1500, &mut |d| {
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
        self.run(cx)
    }
}

impl World<Net> {
    /// A world on the relay simulator; trace lines carry the time.
    pub(crate) fn relayed(
        net: Net,
        nat: crate::core::nat::Nat,
        lan: Vec<Host>,
        overlay: Vec<Host>,
    ) -> Self {
        let mut w = World::with_fabric(net, nat, lan, overlay);
        w.stamp = true;
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
        net.queue_pushes(&mut cx);
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
    pub(crate) fn restart_relay(&mut self, relay_session: SessionId) {
        let (net, mut cx) = self.split();
        net.restart_relay(&mut cx, relay_session);
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{
        nat::{Nat, NatConfig},
        sim::Side,
    };

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, n])
    }

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 0, n)
    }

    /// A bridge engine that takes no part: the worlds without a LAN.
    fn idle_nat() -> Nat {
        Nat::new(NatConfig::new(MacAddr([2, 0, 0, 0, 0, 0xff])))
    }

    /// Edges named as given, number `i + 1` each, with a host of the same
    /// name (MAC 02::0n, IP 10.0.0.n) behind the TAP, all on network 1.
    fn edges(names: &[&'static str]) -> World<Net> {
        let mut net = Net::new(RelayConfig::default(), &[key(1)]);
        let mut hosts = Vec::new();
        for (i, &name) in names.iter().enumerate() {
            let n = i as u8 + 1;
            net.add_node(name, n, &key(1), vec![name]);
            hosts.push(Host::new(name, mac(n), ip(n)));
        }
        World::relayed(net, idle_nat(), vec![], hosts)
    }

    /// The fast path in memory: super-frames cross as one RoutedFrame per
    /// segment and come out whole; when a member without the capability
    /// joins, the relay tells the others at once and they send Frame
    /// (still one segment per datagram, still put back together); when it
    /// leaves, RoutedFrame again.
    #[test]
    fn super_frames_cross_per_segment_and_a_plain_member_switches_the_kind() {
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
        w.stop("C");
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        assert!(w.fabric.node("A").client.offload_ok());
        let (hdr, frame, complete) =
            crate::core::sim::tcp_super_frame(false, mac(1), mac(2), 1, 6000);
        let rx = w.fabric.tap_rx.len();
        w.send_offload("A", hdr, frame.clone());
        let got: Vec<_> = w.fabric.tap_rx[rx..]
            .iter()
            .filter(|(n, _)| *n == "B")
            .collect();
        assert_eq!(got.len(), 1, "one super-frame at B");
        assert_eq!(got[0].1.len(), complete.len());
        assert_eq!(got[0].1[54..], complete[54..], "payload intact");

        w.start("C");
        w.advance(Duration::from_secs(1));
        assert!(!w.fabric.node("A").client.offload_ok(), "told at once");
        w.send_offload("A", hdr, frame.clone());
        w.stop("C");
        w.advance(RelayConfig::default().peer_timeout + Duration::from_secs(2));
        assert!(
            w.fabric.node("A").client.offload_ok(),
            "routed frames again"
        );
        assert_eq!(w.fabric.relay.stats().drops.total(), 0);
        assert_eq!(w.fabric.node("B").client.stats().drops.total(), 0);
        assert_eq!(w.fabric.node("B").client.stats().offload_frames_in, 2);
        let trace: Vec<&String> = w
            .trace
            .iter()
            .filter(|l| !l.contains("Keepalive"))
            .collect();
        insta::assert_snapshot!(trace
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("\n"));
    }

    fn host<'w>(w: &'w World<Net>, name: &str) -> &'w Host {
        w.overlay.iter().find(|h| h.name == name).unwrap()
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
        insta::assert_snapshot!(w.trace.join("\n"));
    }

    /// Datagrams on the wire from index `since` on.
    fn wire_since(w: &World<Net>, since: usize) -> &[Datagram] {
        &w.fabric.wire[since..]
    }

    #[test]
    fn relay_restart_edges_reregister() {
        let mut w = edges(&["A", "B", "C"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        w.restart_relay(session(0xef));
        // A's next frame is refused; A registers again at once, the frame is lost.
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 2));
        assert!(w.fabric.node("A").client.is_registered());
        assert!(
            w.fabric.node("B").client.is_registered(),
            "B has not noticed yet"
        );
        // B and C learn at their next keepalive.
        w.advance(Duration::from_secs(5));
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

        // A still knows C's MAC; the relay no longer does, so it floods.
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
        t=21005ms A tap→ A > C IPv4 10.0.0.1 > 10.0.0.3 ICMP echo request seq 2
        t=21005ms A→relay Frame 1/1 A > C; relay floods to [B]
        t=21005ms relay→B Frame 1/1 A > C
        t=21005ms B tap← A > C IPv4 10.0.0.1 > 10.0.0.3 ICMP echo request seq 2
        ");
    }

    #[test]
    fn replayed_and_forged_datagrams_are_dropped() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        w.act(Side::Overlay, "A", |h| h.ping(ip(2), 1));
        let find = |w: &World<Net>, from, to| {
            w.fabric
                .wire
                .iter()
                .find(|d| {
                    d.from == from
                        && d.to == to
                        && wire::peek_header(&d.bytes).unwrap().kind == Kind::Frame
                })
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
                &VnetHdr::NONE,
                &mut frame.clone(),
                1500,
                &mut |d| fresh.push(d.to_vec()),
            );
        }
        let flip = |d: &[u8]| {
            let mut d = d.to_vec();
            d[wire::HEADER_LEN] ^= 1;
            d
        };
        // A client of a network the relay does not serve.
        let mut stranger = Client::new(
            ClientConfig::default(),
            Cipher::new(&key(9)),
            session(9),
            RELAY,
        );
        let mut strange = Vec::new();
        stranger.poll(w.now, &mut |d| strange.push(d.to_vec()));
        stranger.handle_frame(&VnetHdr::NONE, &mut frame.clone(), 1500, &mut |d| {
            strange.push(d.to_vec())
        });
        let dgram = |from, to, bytes: &[u8]| Datagram {
            from,
            to,
            bytes: bytes.to_vec(),
        };

        w.log("-- replays, forgeries and strangers");
        w.inject(a_to_relay.clone());
        w.inject(relay_to_b.clone());
        w.inject(dgram(edge_addr(1), RELAY, &flip(&fresh[0])));
        // The forgery did not use up the counter: the genuine one passes.
        w.inject(dgram(edge_addr(1), RELAY, &fresh[0]));
        w.inject(dgram(RELAY, edge_addr(2), &flip(&fresh[1])));
        w.inject(dgram(edge_addr(9), RELAY, &strange[0]));
        w.inject(dgram(RELAY, edge_addr(2), &strange[1]));
        w.inject(dgram(edge_addr(9), edge_addr(2), &fresh[1]));

        let relay = w.fabric.relay.stats().drops.clone();
        let b = w.fabric.node("B").client.stats().drops.clone();
        use crate::core::drop::DropReason as D;
        let counts = |c: &crate::core::drop::DropCounters| c.nonzero().collect::<Vec<_>>();
        assert_eq!(
            counts(&relay),
            [(D::WrongNetwork, 1), (D::Forged, 1), (D::Replayed, 1)]
        );
        assert_eq!(
            counts(&b),
            [
                (D::WrongNetwork, 1),
                (D::Forged, 1),
                (D::Replayed, 1),
                (D::UnknownSender, 1)
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
        assert_eq!(
            nets.iter().filter(|&&n| n == key(1).network_id()).count(),
            2
        );
        insta::assert_snapshot!(w.trace.join("\n"));
    }

    #[test]
    fn full_size_frames_are_fragmented_and_reassembled() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        let big = crate::core::sim::udp_v4(
            (mac(1), ip(1), 4000),
            (mac(2), ip(2), 4000),
            &[0x5a; 1514 - 14 - 20 - 8],
        );
        assert_eq!(big.len(), 1514);
        let since = w.fabric.wire.len();
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
        assert_eq!(w.fabric.tap_rx, [("B", big)]);
        let from = w.trace.len() - 6;
        insta::assert_snapshot!(w.trace[from..].join("\n"), @r"
        t=1ms A tap→ A > B IPv4 10.0.0.1 > 10.0.0.2 UDP 4000>4000 csum 0xfd57 ok
        t=1ms A→relay Frame 1/2 A > B; relay sends to [B]
        t=1ms A→relay Frame 2/2 A > B; relay sends to [B]
        t=1ms relay→B Frame 1/2 A > B
        t=1ms relay→B Frame 2/2 A > B
        t=1ms B tap← A > B IPv4 10.0.0.1 > 10.0.0.2 UDP 4000>4000 csum 0xfd57 ok
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
        insta::assert_snapshot!(w.trace.join("\n"));
    }

    #[test]
    fn replayed_register_does_not_revive_a_forgotten_peer() {
        let mut w = edges(&["A", "B"]);
        w.advance(Duration::ZERO);
        let register = w.fabric.wire[0].clone();
        assert_eq!(register.from, edge_addr(1));
        w.stop("A");
        w.advance(w.fabric.relay_config.peer_timeout + Duration::from_secs(1));
        assert_eq!(w.fabric.relay.peers(w.now).len(), 1, "A is forgotten");
        // Someone who recorded A's first datagram sends it again, from elsewhere.
        let attacker: SocketAddr = "203.0.113.66:4444".parse().unwrap();
        w.inject(Datagram {
            from: attacker,
            ..register
        });
        w.act(Side::Overlay, "B", |h| h.ping(ip(1), 1));
        let peers: Vec<_> = w.fabric.relay.peers(w.now).iter().map(|p| p.addr).collect();
        assert_eq!(peers, [edge_addr(2)], "{}", w.trace.join("\n"));
    }
}
