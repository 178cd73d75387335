//! The relay's state machine: networks, peers, and one learning switch per
//! network.
//!
//! The relay holds every network key it serves. For each datagram it reads the
//! network id from the clear header, checks the sender's replay window,
//! authenticates and decrypts (into scratch), and acts:
//! - `Register`: creates or refreshes the peer at the datagram's source
//!   address and answers `RegisterAck`;
//! - `Keepalive`: refreshes the peer and answers `KeepaliveAck`;
//! - `Frame`: learns the source MAC on the peer and forwards the datagram
//!   **unchanged** (same session, counter and tag) to the peers the switch
//!   picks, so receivers authenticate the original sender themselves;
//! - anything from a session it doesn't know: answers `NotRegistered`, and the
//!   peer registers again (this is how edges survive a relay restart).
//!
//! Invariants: nothing is learned from or forwarded for a datagram that failed
//! authentication or the replay check; nothing crosses networks; nothing goes
//! back to its sender; silent peers are forgotten after
//! [`RelayConfig::peer_timeout`], with their MACs.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use crate::core::{
    drop::{DropCounters, DropReason},
    fasthash::FastMap,
    switch::{Route, Switch, SwitchConfig},
    wire::{
        self, Cipher, KeyCache, Kind, Message, NetworkId, ReplayGuard, Sealer, SessionId,
        CAP_ROUTED,
    },
};

/// Timers and limits of a relay.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Interval the relay asks peers to send keepalives at.
    pub keepalive: Duration,
    /// A peer silent for this long is forgotten.
    pub peer_timeout: Duration,
    /// Peers one network may hold.
    pub max_peers: usize,
    /// The switch table's limits.
    pub switch: SwitchConfig,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            keepalive: Duration::from_secs(5),
            peer_timeout: Duration::from_secs(20),
            max_peers: 1024,
            switch: SwitchConfig::default(),
        }
    }
}

/// Replay windows remembered per allowed peer (sessions of peers that left
/// and came back with a new process count too).
const REPLAY_SESSIONS_PER_PEER: usize = 4;

/// How long a silent session's replay window is remembered. A relay restart
/// forgets them all: see docs/protocol.md, "Replay".
const REPLAY_MEMORY: Duration = Duration::from_secs(3600);

/// How often one unknown session is told to register.
const NOT_REGISTERED_EVERY: Duration = Duration::from_secs(1);

/// What the driver must do with one received datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayAction<'a> {
    /// Send the received datagram, unchanged, to each of these addresses.
    Forward(&'a [SocketAddr]),
    /// Send these bytes back to the datagram's source address.
    Reply(&'a [u8]),
    /// Nothing to send; the reason is counted.
    Drop(DropReason),
}

/// Something an operator wants in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayEvent {
    /// A peer registered (first time, or again after being forgotten).
    Joined {
        /// Its network.
        network: NetworkId,
        /// Its session id.
        session: SessionId,
        /// Its address.
        addr: SocketAddr,
    },
    /// A silent peer was forgotten.
    Left {
        /// Its network.
        network: NetworkId,
        /// Its session id.
        session: SessionId,
        /// Its last address.
        addr: SocketAddr,
    },
}

/// One registered peer, as shown to an operator.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The network's id.
    pub network: NetworkId,
    /// The peer's session id.
    pub session: SessionId,
    /// Where its datagrams come from.
    pub addr: SocketAddr,
    /// MACs learned behind it.
    pub macs: usize,
    /// Time since it was last heard.
    pub idle: Duration,
    /// Datagrams received from it.
    pub rx: u64,
}

#[derive(Debug)]
struct Peer {
    addr: SocketAddr,
    /// Capabilities from its last Register.
    caps: u32,
    /// When it was last told the network's capabilities because it sent an
    /// routed frame a peer can't take.
    hinted: Option<Instant>,
    last_seen: Instant,
    rx: u64,
}

struct Network {
    cipher: Cipher,
    /// Replay windows per sender session. They outlive the peers: a peer
    /// forgotten for silence keeps its window, so a recorded Register of
    /// its session can't bring it back from another address.
    replay: ReplayGuard,
    /// When each unknown session was last told `NotRegistered`: a busy peer
    /// after a relay restart gets one answer a second, not one per frame.
    told: FastMap<SessionId, Instant>,
    peers: FastMap<SessionId, Peer>,
    switch: Switch<SessionId>,
    /// Whether every peer takes routed frames. Kept by `announce`, which
    /// runs wherever peers come, change or go (Register, expiry).
    all_routed: bool,
}

/// Counters of the relay as a whole.
#[derive(Clone, Debug, Default)]
pub struct RelayStats {
    /// Datagrams received.
    pub rx: u64,
    /// Datagrams sent (forwards count once per destination).
    pub tx: u64,
    /// Drops per reason.
    pub drops: DropCounters,
    /// Peers that registered (including re-registrations after a timeout).
    pub registrations: u64,
    /// Peers forgotten for silence.
    pub timeouts: u64,
}

/// The relay: every network it serves.
pub struct Relay {
    config: RelayConfig,
    networks: FastMap<NetworkId, Network>,
    sealer: Sealer,
    keys: KeyCache,
    scratch: Vec<u8>,
    reply: Vec<u8>,
    targets: Vec<SocketAddr>,
    stats: RelayStats,
    events: Vec<RelayEvent>,
    /// Unsolicited datagrams to send (RegisterAcks announcing a change of
    /// the network's capabilities).
    pushes: Vec<(SocketAddr, Vec<u8>)>,
}

impl Relay {
    /// A relay serving one network per cipher, with its own session id.
    pub fn new(config: RelayConfig, ciphers: Vec<Cipher>, session: SessionId) -> Relay {
        let networks = ciphers
            .into_iter()
            .map(|cipher| {
                let net = Network {
                    cipher,
                    replay: ReplayGuard::new(REPLAY_SESSIONS_PER_PEER * config.max_peers),
                    told: FastMap::default(),
                    peers: FastMap::default(),
                    switch: Switch::new(config.switch.clone()),
                    all_routed: true,
                };
                (net.cipher.network_id(), net)
            })
            .collect();
        Relay {
            config,
            networks,
            sealer: Sealer::new(session),
            keys: KeyCache::default(),
            scratch: Vec::with_capacity(2048),
            reply: Vec::with_capacity(128),
            targets: Vec::new(),
            stats: RelayStats::default(),
            events: Vec::new(),
            pushes: Vec::new(),
        }
    }

    /// Handles one datagram received from `from`.
    // HOT PATH
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> RelayAction<'_> {
        self.stats.rx += 1;
        match self.decide(now, from, datagram) {
            Ok(Decision::Forward) => {
                self.stats.tx += self.targets.len() as u64;
                RelayAction::Forward(&self.targets)
            }
            Ok(Decision::Reply) => {
                self.stats.tx += 1;
                RelayAction::Reply(&self.reply)
            }
            Err(reason) => {
                self.stats.drops.add(reason);
                RelayAction::Drop(reason)
            }
        }
    }

    fn decide(
        &mut self,
        now: Instant,
        from: SocketAddr,
        datagram: &[u8],
    ) -> Result<Decision, DropReason> {
        let header = wire::peek_header(datagram).map_err(|e| e.drop_reason())?;
        let net = self
            .networks
            .get_mut(&header.network_id)
            .ok_or(DropReason::WrongNetwork)?;
        if !net.replay.check(header.session, header.counter) {
            return Err(DropReason::Replayed);
        }
        // A routed frame is forwarded on its relay tag alone: its chunk is
        // sealed end to end and never decrypted here.
        let routed = header.kind == Kind::RoutedFrame;
        let opened = if routed {
            wire::check_route(&net.cipher, datagram).map(|(h, f)| (h, Message::Frame(f)))
        } else {
            wire::open_cached(&net.cipher, &mut self.keys, datagram, &mut self.scratch)
        };
        let (header, message) = opened.map_err(|e| e.drop_reason())?;
        let session = header.session;
        if !net.replay.update(now, session, header.counter) {
            return Err(DropReason::Replayed);
        }

        if let Message::Register { caps } = message {
            if let Some(peer) = net.peers.get_mut(&session) {
                peer.caps = caps;
            } else {
                if net.peers.len() >= self.config.max_peers {
                    return Err(DropReason::PeerCap);
                }
                self.stats.registrations += 1;
                self.events.push(RelayEvent::Joined {
                    network: header.network_id,
                    session,
                    addr: from,
                });
                net.peers.insert(
                    session,
                    Peer {
                        addr: from,
                        caps,
                        hinted: None,
                        last_seen: now,
                        rx: 0,
                    },
                );
            }
        }
        let Some(peer) = net.peers.get_mut(&session) else {
            // Authenticated, but the peer is unknown: the relay restarted or
            // forgot it. Ask it to register again, once a second at most.
            if net
                .told
                .get(&session)
                .is_some_and(|t| now.saturating_duration_since(*t) < NOT_REGISTERED_EVERY)
            {
                return Err(DropReason::NotRegistered);
            }
            net.told.insert(session, now);
            Self::seal_reply(
                &mut self.sealer,
                &net.cipher,
                Message::NotRegistered,
                &mut self.reply,
            )?;
            return Ok(Decision::Reply);
        };
        // Authenticated and fresh: follow the peer if its address changed
        // (NAT rebinding, roaming).
        peer.addr = from;
        peer.last_seen = now;
        peer.rx += 1;
        let peer_caps = peer.caps;

        match message {
            Message::Register { .. } => {
                Self::announce(&self.config, &mut self.sealer, net, &mut self.pushes);
                Self::ack(&self.config, &mut self.sealer, net, &mut self.reply)?;
                Ok(Decision::Reply)
            }
            // A peer that can take routed frames gets a RegisterAck for its
            // keepalives too, so it learns when the network's capabilities
            // change (a peer without them joined or left).
            Message::Keepalive if peer_caps & CAP_ROUTED != 0 => {
                Self::ack(&self.config, &mut self.sealer, net, &mut self.reply)?;
                Ok(Decision::Reply)
            }
            Message::Keepalive => {
                Self::seal_reply(
                    &mut self.sealer,
                    &net.cipher,
                    Message::KeepaliveAck,
                    &mut self.reply,
                )?;
                Ok(Decision::Reply)
            }
            Message::Frame(fragment) => {
                self.targets.clear();
                // Routed frames only go to peers that can take them; the
                // sender was told when one that can't joined (a push, and
                // again below if it keeps sending them).
                let needs = if routed { CAP_ROUTED } else { 0 };
                match net
                    .switch
                    .handle(now, session, fragment.src(), fragment.dst())
                {
                    Route::Unicast(port) => match net.peers.get(&port).map(|p| (p.addr, p.caps)) {
                        // An older session of the sender itself (it restarted
                        // from the same address): never back to the sender.
                        Some((addr, _)) if addr == from => return Err(DropReason::Loop),
                        Some((addr, caps)) if caps & needs == needs => self.targets.push(addr),
                        Some(_) => {
                            return Self::hint(
                                &self.config,
                                &mut self.sealer,
                                net,
                                session,
                                now,
                                &mut self.reply,
                                &mut self.stats,
                            )
                        }
                        None => return Err(DropReason::NoDestination),
                    },
                    Route::Flood => {
                        let mut skipped = false;
                        // Not back to the sender's address either: an older
                        // session of a member that restarted from the same
                        // address would echo its own broadcasts to it (IPv6
                        // duplicate address detection would then fail).
                        let others = net
                            .peers
                            .iter()
                            .filter(|(s, p)| **s != session && p.addr != from);
                        for (_, p) in others {
                            if p.caps & needs == needs {
                                self.targets.push(p.addr);
                            } else {
                                // Counted here: the frame still reaches others.
                                self.stats.drops.add(DropReason::NoOffload);
                                skipped = true;
                            }
                        }
                        // The sender missed the push that said a peer can't
                        // take routed frames: tell it again (once a second
                        // at most), or its broadcasts (ARP first) never
                        // reach that peer until its next keepalive.
                        if skipped && Self::hint_due(net, session, now) {
                            let mut ack = Vec::new();
                            if Self::ack(&self.config, &mut self.sealer, net, &mut ack).is_ok() {
                                self.pushes.push((from, ack));
                            }
                        }
                    }
                    Route::Drop(reason) => return Err(reason),
                }
                // Two sessions at one address (a member that restarted) get
                // one copy, not two.
                self.targets.sort_unstable();
                self.targets.dedup();
                if self.targets.is_empty() {
                    return Err(DropReason::NoDestination);
                }
                Ok(Decision::Forward)
            }
            // Only the relay sends these.
            Message::RegisterAck { .. } | Message::KeepaliveAck | Message::NotRegistered => {
                Err(DropReason::UnknownKind)
            }
        }
    }

    /// A RegisterAck with the keepalive interval and the capabilities every
    /// peer of the network shares.
    fn ack(
        config: &RelayConfig,
        sealer: &mut Sealer,
        net: &Network,
        out: &mut Vec<u8>,
    ) -> Result<(), DropReason> {
        let keepalive_secs = config.keepalive.as_secs().clamp(1, u16::MAX as u64) as u16;
        let caps = if net.all_routed { CAP_ROUTED } else { 0 };
        let ack = Message::RegisterAck {
            caps,
            keepalive_secs,
        };
        Self::seal_reply(sealer, &net.cipher, ack, out)
    }

    /// When whether every peer takes routed frames changed (one without
    /// them joined, or the last one left), tells every capable peer at once,
    /// so none keeps sending frames another can't take until its next
    /// keepalive (`pushes`, for the driver to send).
    fn announce(
        config: &RelayConfig,
        sealer: &mut Sealer,
        net: &mut Network,
        pushes: &mut Vec<(SocketAddr, Vec<u8>)>,
    ) {
        let all = net.peers.values().all(|p| p.caps & CAP_ROUTED != 0);
        if all == net.all_routed {
            return;
        }
        net.all_routed = all;
        for p in net.peers.values().filter(|p| p.caps & CAP_ROUTED != 0) {
            // Each its own datagram: a sealed message is used once (replay).
            let mut one = Vec::new();
            if Self::ack(config, sealer, net, &mut one).is_ok() {
                pushes.push((p.addr, one));
            }
        }
    }

    /// True, and remembered, when `session` may be told the network's
    /// capabilities again: once a second at most.
    fn hint_due(net: &mut Network, session: SessionId, now: Instant) -> bool {
        match net.peers.get_mut(&session) {
            Some(sender)
                if sender
                    .hinted
                    .is_none_or(|t| now.saturating_duration_since(t) >= NOT_REGISTERED_EVERY) =>
            {
                sender.hinted = Some(now);
                true
            }
            _ => false,
        }
    }

    /// A routed frame for a peer that can't take one: the sender missed the
    /// push that said so (lost, or overtaken). Counted, and answered with a
    /// RegisterAck carrying the network's capabilities, once a second at most.
    fn hint(
        config: &RelayConfig,
        sealer: &mut Sealer,
        net: &mut Network,
        session: SessionId,
        now: Instant,
        out: &mut Vec<u8>,
        stats: &mut RelayStats,
    ) -> Result<Decision, DropReason> {
        if !Self::hint_due(net, session, now) {
            return Err(DropReason::NoOffload);
        }
        stats.drops.add(DropReason::NoOffload);
        Self::ack(config, sealer, net, out)?;
        Ok(Decision::Reply)
    }

    /// Unsolicited datagrams the driver must send, each to its address.
    pub fn drain_pushes(&mut self) -> std::vec::Drain<'_, (SocketAddr, Vec<u8>)> {
        self.pushes.drain(..)
    }

    fn seal_reply(
        sealer: &mut Sealer,
        cipher: &Cipher,
        message: Message<'_>,
        out: &mut Vec<u8>,
    ) -> Result<(), DropReason> {
        sealer
            .seal(cipher, &message, out)
            .map_err(|e| e.drop_reason())
    }

    /// Forgets peers silent for longer than the timeout, and stale MACs.
    /// Call about once a second.
    pub fn expire(&mut self, now: Instant) {
        let timeout = self.config.peer_timeout;
        for (id, net) in self.networks.iter_mut() {
            let gone: Vec<SessionId> = net
                .peers
                .iter()
                .filter(|(_, p)| now.saturating_duration_since(p.last_seen) > timeout)
                .map(|(s, _)| *s)
                .collect();
            for session in gone {
                if let Some(peer) = net.peers.remove(&session) {
                    self.events.push(RelayEvent::Left {
                        network: *id,
                        session,
                        addr: peer.addr,
                    });
                }
                net.switch.forget_port(session);
                self.stats.timeouts += 1;
            }
            Self::announce(&self.config, &mut self.sealer, net, &mut self.pushes);
            net.switch.expire(now);
            net.replay.expire(now, REPLAY_MEMORY);
            net.told
                .retain(|_, t| now.saturating_duration_since(*t) < NOT_REGISTERED_EVERY);
        }
    }

    /// Registered peers of every network.
    pub fn peers(&self, now: Instant) -> Vec<PeerInfo> {
        let mut out = Vec::new();
        for (id, net) in &self.networks {
            for (session, p) in &net.peers {
                out.push(PeerInfo {
                    network: *id,
                    session: *session,
                    addr: p.addr,
                    macs: net.switch.owned(*session),
                    idle: now.saturating_duration_since(p.last_seen),
                    rx: p.rx,
                });
            }
        }
        out.sort_by_key(|p| (p.network.0, p.addr));
        out
    }

    /// Takes the events that happened since the last call.
    pub fn drain_events(&mut self) -> std::vec::Drain<'_, RelayEvent> {
        self.events.drain(..)
    }

    /// Counts drops that happened in the driver (e.g. failed sends).
    pub fn count_drops(&mut self, reason: DropReason, n: u64) {
        self.stats.drops.add_n(reason, n);
    }

    /// Counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }
}

enum Decision {
    Forward,
    Reply,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::{NetworkKey, DEFAULT_MAX_DATAGRAM};

    fn frame() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.resize(60, 0);
        f
    }

    fn sealed_frames(cipher: &Cipher, sealer: &mut Sealer, n: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for _ in 0..n {
            sealer
                .seal_frame(cipher, &frame(), DEFAULT_MAX_DATAGRAM, &mut |d| {
                    out.push(d.to_vec())
                })
                .unwrap();
        }
        out
    }

    #[test]
    fn an_unknown_session_is_told_to_register_once_a_second() {
        let key = NetworkKey::from_bytes([7; 32]);
        let t0 = Instant::now();
        let mut relay = Relay::new(
            RelayConfig::default(),
            vec![Cipher::new(&key)],
            SessionId([1; 16]),
        );
        let cipher = Cipher::new(&key);
        let mut peer = Sealer::new(SessionId([2; 16]));
        let from: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        let burst = sealed_frames(&cipher, &mut peer, 4);
        let answers: Vec<bool> = burst
            .iter()
            .map(|d| matches!(relay.handle_datagram(t0, from, d), RelayAction::Reply(_)))
            .collect();
        assert_eq!(answers, [true, false, false, false]);
        assert_eq!(relay.stats().drops.get(DropReason::NotRegistered), 3);
        let later = sealed_frames(&cipher, &mut peer, 1);
        let t1 = t0 + NOT_REGISTERED_EVERY;
        assert!(matches!(
            relay.handle_datagram(t1, from, &later[0]),
            RelayAction::Reply(_)
        ));
    }

    /// What the relay answers `msg` from `from` with: the caps of a
    /// RegisterAck, or None for any other answer.
    fn ack_caps(
        relay: &mut Relay,
        cipher: &Cipher,
        sealer: &mut Sealer,
        from: SocketAddr,
        msg: Message<'_>,
        t: Instant,
    ) -> Option<u32> {
        let mut d = Vec::new();
        sealer.seal(cipher, &msg, &mut d).unwrap();
        let RelayAction::Reply(bytes) = relay.handle_datagram(t, from, &d) else {
            panic!("no reply to {msg:?}");
        };
        let mut scratch = Vec::new();
        match wire::open(cipher, bytes, &mut scratch).unwrap().1 {
            Message::RegisterAck { caps, .. } => Some(caps),
            _ => None,
        }
    }

    /// Routed frames are negotiated per network: the ack says whether every
    /// peer can take them, capable peers hear about a change at their next
    /// keepalive, and the relay never hands one to a peer that can't.
    #[test]
    fn routed_frames_are_negotiated_and_never_reach_a_peer_without_them() {
        let key = NetworkKey::from_bytes([7; 32]);
        let cipher = Cipher::new(&key);
        let t0 = Instant::now();
        let mut relay = Relay::new(
            RelayConfig::default(),
            vec![cipher.clone()],
            SessionId([1; 16]),
        );
        let addr = |i: u8| SocketAddr::from(([198, 51, 100, i], 5000));
        let (mut a, mut b, mut old) = (
            Sealer::new(SessionId([2; 16])),
            Sealer::new(SessionId([3; 16])),
            Sealer::new(SessionId([4; 16])),
        );
        let register = |caps| Message::Register { caps };
        let r = &mut relay;
        assert_eq!(
            ack_caps(r, &cipher, &mut a, addr(1), register(CAP_ROUTED), t0),
            Some(CAP_ROUTED)
        );
        assert_eq!(
            ack_caps(r, &cipher, &mut b, addr(2), register(CAP_ROUTED), t0),
            Some(CAP_ROUTED)
        );
        // A peer without the capability joins: it gets plain acks, and the
        // capable ones learn at their next keepalive that not all can.
        assert_eq!(
            ack_caps(r, &cipher, &mut old, addr(3), register(0), t0),
            Some(0)
        );
        // ... and are told at once, not only at their next keepalive.
        let pushed = |r: &mut Relay| {
            let mut scratch = Vec::new();
            let mut out: Vec<(SocketAddr, u32)> = r
                .drain_pushes()
                .map(
                    |(to, d)| match wire::open(&cipher, &d, &mut scratch).unwrap().1 {
                        Message::RegisterAck { caps, .. } => (to, caps),
                        other => panic!("pushed {other:?}"),
                    },
                )
                .collect();
            out.sort();
            out
        };
        assert_eq!(pushed(r), [(addr(1), 0), (addr(2), 0)]);
        assert_eq!(
            ack_caps(r, &cipher, &mut old, addr(3), Message::Keepalive, t0),
            None
        );
        assert_eq!(
            ack_caps(r, &cipher, &mut a, addr(1), Message::Keepalive, t0),
            Some(0)
        );

        // B's MAC is learned; A sends B and then everyone a routed frame.
        let mut learn = frame();
        learn[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xb]);
        for d in sealed_frames_of(&cipher, &mut b, &learn, false) {
            let _ = r.handle_datagram(t0, addr(2), &d);
        }
        let mut to_b = frame();
        to_b[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xb]);
        for d in sealed_frames_of(&cipher, &mut a, &to_b, true) {
            assert_eq!(
                r.handle_datagram(t0, addr(1), &d),
                RelayAction::Forward(&[addr(2)])
            );
        }
        for d in sealed_frames_of(&cipher, &mut a, &frame(), true) {
            assert_eq!(
                r.handle_datagram(t0, addr(1), &d),
                RelayAction::Forward(&[addr(2)])
            );
        }
        // The broadcast skipped the old peer: A is told (a push beside the
        // forward), so its next ARP goes as Frame and reaches everyone.
        assert_eq!(pushed(r), [(addr(1), 0)]);
        // The old peer's MAC is learned; a unicast routed frame to it drops.
        let mut learn = frame();
        learn[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xc]);
        for d in sealed_frames_of(&cipher, &mut old, &learn, false) {
            let _ = r.handle_datagram(t0, addr(3), &d);
        }
        let mut to_old = frame();
        to_old[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xc]);
        // The sender missed that too (say it was lost): the first drop a
        // second later is answered with the network's capabilities, later
        // ones within a second are only counted.
        let t0 = t0 + Duration::from_millis(1500);
        let drops = r.stats().drops.get(DropReason::NoOffload);
        for (i, d) in sealed_frames_of(&cipher, &mut a, &to_old, true)
            .iter()
            .chain(&sealed_frames_of(&cipher, &mut a, &to_old, true))
            .enumerate()
        {
            match r.handle_datagram(t0, addr(1), d) {
                RelayAction::Reply(bytes) if i == 0 => {
                    let mut scratch = Vec::new();
                    let (_, msg) = wire::open(&cipher, bytes, &mut scratch).unwrap();
                    assert!(
                        matches!(msg, Message::RegisterAck { caps: 0, .. }),
                        "{msg:?}"
                    );
                }
                action => assert_eq!(action, RelayAction::Drop(DropReason::NoOffload), "#{i}"),
            }
        }
        assert_eq!(r.stats().drops.get(DropReason::NoOffload), drops + 2);
        // A plain frame reaches everyone.
        let mut forwarded = Vec::new();
        for d in sealed_frames_of(&cipher, &mut a, &frame(), false) {
            if let RelayAction::Forward(to) = r.handle_datagram(t0, addr(1), &d) {
                forwarded = to.to_vec();
            }
        }
        forwarded.sort();
        assert_eq!(forwarded, [addr(2), addr(3)]);
        // A flooded routed frame skips the old peer, counted.
        let before = r.stats().drops.get(DropReason::NoOffload);
        for d in sealed_frames_of(&cipher, &mut a, &frame(), true) {
            assert_eq!(
                r.handle_datagram(t0, addr(1), &d),
                RelayAction::Forward(&[addr(2)])
            );
        }
        assert!(r.stats().drops.get(DropReason::NoOffload) > before);
        // Still flooding routed frames a second later (the answer was lost
        // too): the sender is told again, by a push beside the forward.
        let t1 = t0 + Duration::from_millis(1500);
        for d in sealed_frames_of(&cipher, &mut a, &frame(), true) {
            let _ = r.handle_datagram(t1, addr(1), &d);
        }
        assert_eq!(pushed(r), [(addr(1), 0)]);
        // The old peer falls silent and is forgotten: the others hear at once
        // that routed frames may go again.
        let later = t0 + RelayConfig::default().peer_timeout + Duration::from_secs(1);
        for (s, at) in [(&mut a, addr(1)), (&mut b, addr(2))] {
            let mut d = Vec::new();
            s.seal(&cipher, &Message::Keepalive, &mut d).unwrap();
            let _ = r.handle_datagram(later - Duration::from_secs(2), at, &d);
        }
        assert_eq!(pushed(r), []);
        r.expire(later);
        assert_eq!(pushed(r), [(addr(1), CAP_ROUTED), (addr(2), CAP_ROUTED)]);
    }

    /// A member that restarts from the same address (a new session, the old
    /// one not yet forgotten) never gets its own frames back: not flooded
    /// to the old session, not sent to it as unicast.
    #[test]
    fn nothing_goes_back_to_the_senders_address() {
        let key = NetworkKey::from_bytes([7; 32]);
        let cipher = Cipher::new(&key);
        let t0 = Instant::now();
        let mut r = Relay::new(
            RelayConfig::default(),
            vec![cipher.clone()],
            SessionId([1; 16]),
        );
        let a_addr = SocketAddr::from(([198, 51, 100, 1], 5000));
        let b_addr = SocketAddr::from(([198, 51, 100, 2], 5000));
        let (mut old, mut new, mut b) = (
            Sealer::new(SessionId([2; 16])),
            Sealer::new(SessionId([3; 16])),
            Sealer::new(SessionId([4; 16])),
        );
        for (s, at) in [(&mut old, a_addr), (&mut new, a_addr), (&mut b, b_addr)] {
            let mut d = Vec::new();
            s.seal(&cipher, &Message::Register { caps: 0 }, &mut d)
                .unwrap();
            let _ = r.handle_datagram(t0, at, &d);
        }
        // The old session once sent from MAC :0a; the new one floods.
        let mut from_old = frame();
        from_old[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xa]);
        for d in sealed_frames_of(&cipher, &mut old, &from_old, false) {
            let _ = r.handle_datagram(t0, a_addr, &d);
        }
        for d in sealed_frames_of(&cipher, &mut new, &frame(), false) {
            assert_eq!(
                r.handle_datagram(t0, a_addr, &d),
                RelayAction::Forward(&[b_addr])
            );
        }
        let mut to_old = frame();
        to_old[..6].copy_from_slice(&[2, 0, 0, 0, 0, 0xa]);
        to_old[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 0xb]);
        for d in sealed_frames_of(&cipher, &mut new, &to_old, false) {
            assert_eq!(
                r.handle_datagram(t0, a_addr, &d),
                RelayAction::Drop(DropReason::Loop)
            );
        }
    }

    fn sealed_frames_of(
        cipher: &Cipher,
        sealer: &mut Sealer,
        frame: &[u8],
        routed: bool,
    ) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut emit = |d: &[u8]| out.push(d.to_vec());
        if routed {
            sealer.seal_routed_frame(cipher, frame, DEFAULT_MAX_DATAGRAM, &mut emit)
        } else {
            sealer.seal_frame(cipher, frame, DEFAULT_MAX_DATAGRAM, &mut emit)
        }
        .unwrap();
        out
    }
}
