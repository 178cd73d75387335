//! The relay's state machine (protocol version 2, docs/protocol.md).
//!
//! The relay holds a relay key per network it serves, never a network key.
//! With it, it admits members (a Noise handshake per member, the *uplink*)
//! and forwards what members address to each other by member id, checking
//! the sender's relay tag and re-tagging for the destination. It never
//! sees a frame: those are sealed member to member under keys it can't
//! compute.
//!
//! Per datagram:
//! - `UplinkInit`: mac1 (one BLAKE3; nothing else for strangers), under
//!   load a cookie (mac2, else a `CookieReply` and no DH), then the
//!   handshake; the initiation's timestamp must be newer than the last from
//!   that member key, and the key must not be refused. Answered with
//!   `UplinkResp` (shorter than the initiation).
//! - `Control`: opened under the member's uplink; keepalives and member
//!   list requests are answered.
//! - routed (`PeerInit`, `PeerResp`, `Data`): relay tag and replay window
//!   of the sender's uplink, then rewritten (destination's index and
//!   counter, the sender's member id) and tagged for the destination.
//! - anything naming an index the relay doesn't know: a `Rejoin` hint (8
//!   bytes, once a second per address), so members find a restarted relay.
//!
//! Shape (as the member's, see `client.rs`): [`Relay::handle_datagram`]
//! answers at once ([`RelayAction`], the forward or reply to send);
//! [`Relay::handle_timeout`] runs timers; [`Relay::poll_transmit`] gives
//! what the relay sends of its own accord, [`Relay::poll_event`] what an
//! operator wants logged, [`Relay::poll_timeout`] when to call again.
//!
//! Invariants: nothing is learned from a datagram that did not
//! authenticate; nothing crosses networks; nothing goes back to its
//! sender; members silent for [`RelayConfig::peer_timeout`] are forgotten;
//! every table is bounded.

use std::{
    collections::{HashSet, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

use crate::core::{
    drop::{DropCounters, DropReason},
    fasthash::FastMap,
    noise::{self, NoiseError, StaticKeys, KEY_LEN},
    proto::{
        codec::{
            self, control, cookie_reply, rejoin, routed, uplink_init, uplink_resp, Control, Kind,
        },
        session::{constant_time_eq, Keypair, Keypairs, Slot, Timers},
        MemberId, RelayKey,
    },
    window::RateWindow,
    wire::{NetworkId, WireError},
};

/// Timers and limits of a relay.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Interval the relay asks members to send keepalives at.
    pub keepalive: Duration,
    /// A member silent for this long is forgotten.
    pub peer_timeout: Duration,
    /// Members one network may hold.
    pub max_peers: usize,
    /// Handshakes a second above which initiations need a cookie.
    pub handshakes_per_sec: u32,
    /// Member static keys whose handshakes are refused.
    pub refuse: Vec<[u8; KEY_LEN]>,
    /// Session timers.
    pub timers: Timers,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            keepalive: Duration::from_secs(5),
            peer_timeout: Duration::from_secs(20),
            max_peers: 1024,
            handshakes_per_sec: 200,
            refuse: Vec::new(),
            timers: Timers::default(),
        }
    }
}

/// A member whose keys nothing confirmed is forgotten after this long.
const UNCONFIRMED_LIFE: Duration = Duration::from_secs(5);
/// Member list pages one member is sent a second (a list of 1024 members
/// is 43 pages).
const MEMBER_LISTS_PER_SEC: u32 = 64;
/// Members are told of member list changes at most this often (per
/// network; a burst of joins makes one round).
const ANNOUNCE_EVERY: Duration = Duration::from_millis(100);
/// Cookie mode lasts at least this long once on.
const COOKIE_MODE_MIN: Duration = Duration::from_secs(10);
/// How often one address is sent a `Rejoin`.
const REJOIN_EVERY: Duration = Duration::from_secs(1);
/// How often the cookie secret changes (cookies live as long).
const COOKIE_SECRET_LIFE: Duration = Duration::from_secs(120);
/// How often a peer speaking another version is logged.
const BAD_VERSION_LOG_EVERY: Duration = Duration::from_secs(60);

/// What the driver must do with one received datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum RelayAction<'a> {
    /// Send these bytes to this address.
    Forward(SocketAddr, &'a [u8]),
    /// Send these bytes back to the datagram's source address.
    Reply(&'a [u8]),
    /// Nothing to send; the reason is counted.
    Drop(DropReason),
}

/// Something an operator wants in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayEvent {
    /// A member joined (first handshake, or again after being forgotten).
    Joined {
        /// Its network.
        network: NetworkId,
        /// Its id.
        member: MemberId,
        /// Its address.
        addr: SocketAddr,
    },
    /// A silent member was forgotten.
    Left {
        /// Its network.
        network: NetworkId,
        /// Its id.
        member: MemberId,
        /// Its last address.
        addr: SocketAddr,
    },
    /// A refused member key tried to join (logged once per key).
    Refused {
        /// The member's id.
        member: MemberId,
        /// Where from.
        addr: SocketAddr,
    },
    /// A datagram of another protocol version (logged once a minute).
    OtherVersion {
        /// Where from.
        addr: SocketAddr,
        /// The version it speaks.
        version: u8,
    },
    /// Cookie mode turned on or off.
    CookieMode(bool),
}

/// One member, as shown to an operator.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The network's id.
    pub network: NetworkId,
    /// The member's id.
    pub member: MemberId,
    /// Its static public key.
    pub public: [u8; KEY_LEN],
    /// Where its datagrams come from.
    pub addr: SocketAddr,
    /// Time since it was last heard.
    pub idle: Duration,
    /// Age of its uplink session keys.
    pub session_age: Duration,
    /// Datagrams received from it.
    pub rx: u64,
    /// Handshakes it completed.
    pub handshakes: u64,
}

/// Counters of the relay as a whole.
#[derive(Clone, Debug, Default)]
pub struct RelayStats {
    /// Datagrams received.
    pub rx: u64,
    /// Datagrams sent.
    pub tx: u64,
    /// Drops per reason.
    pub drops: DropCounters,
    /// Members that joined (including again after a timeout).
    pub registrations: u64,
    /// Uplink handshakes completed (joins and rekeys).
    pub handshakes: u64,
    /// Members forgotten for silence.
    pub timeouts: u64,
    /// Cookie replies sent.
    pub cookies_sent: u64,
    /// True while initiations need a cookie.
    pub cookie_mode: bool,
}

struct Member {
    /// Set by the first datagram under its keys: only then is it listed,
    /// announced and forwarded to. A replayed initiation never gets here
    /// (the replayer lacks the ephemeral key), so it lists no ghost.
    confirmed: bool,
    public: [u8; KEY_LEN],
    addr: SocketAddr,
    keypairs: Keypairs,
    last_seen: Instant,
    rx: u64,
    handshakes: u64,
    /// GetMembers answered this second.
    lists: RateWindow,
}

struct Network {
    key: RelayKey,
    mac1_key: [u8; 32],
    cookie_aead: LessSafeKey,
    identity: StaticKeys,
    members: FastMap<MemberId, Member>,
    /// Greatest initiation timestamp per member; outlives members (bounded).
    timestamps: FastMap<MemberId, [u8; 12]>,
    /// Changes whenever a member joins or leaves.
    generation: u32,
    /// When members were last told.
    announced: Option<Instant>,
}

/// The relay: every network it serves.
pub struct Relay {
    config: RelayConfig,
    networks: FastMap<NetworkId, Network>,
    /// Uplink index → (network, member).
    index: FastMap<u32, (NetworkId, MemberId)>,
    refuse: HashSet<[u8; KEY_LEN]>,
    refused_logged: HashSet<MemberId>,
    cookie_secret: [u8; 32],
    cookie_secret_at: Option<Instant>,
    /// Start of the current second and handshakes seen in it.
    load: (Option<Instant>, u32),
    /// Initiations need a cookie until then.
    cookie_until: Option<Instant>,
    /// When each address was last sent a Rejoin.
    told: FastMap<SocketAddr, Instant>,
    bad_version_logged: Option<Instant>,
    scratch: Vec<u8>,
    out: Vec<u8>,
    /// Datagrams the relay sends of its own accord (see [`Relay::poll_transmit`]).
    pushes: VecDeque<(SocketAddr, Vec<u8>)>,
    /// Networks whose member list changed since their members were told.
    to_announce: HashSet<NetworkId>,
    /// When timers are due next ([`Relay::poll_timeout`]).
    timeout: Instant,
    stats: RelayStats,
    events: VecDeque<RelayEvent>,
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random source (getrandom) failed");
    b
}

/// The AEAD that seals cookies of a network.
pub(crate) fn cookie_aead(key: &RelayKey) -> LessSafeKey {
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key.cookie_key()).expect("32-byte key"))
}

impl Relay {
    /// A relay serving one network per relay key.
    pub fn new(config: RelayConfig, keys: Vec<RelayKey>) -> Relay {
        let networks = keys
            .into_iter()
            .map(|key| {
                let net = Network {
                    mac1_key: key.mac1_key(),
                    cookie_aead: cookie_aead(&key),
                    identity: key.relay_static(),
                    key,
                    members: FastMap::default(),
                    timestamps: FastMap::default(),
                    generation: 1,
                    announced: None,
                };
                (net.key.network_id(), net)
            })
            .collect();
        Relay {
            refuse: config.refuse.iter().copied().collect(),
            config,
            networks,
            index: FastMap::default(),
            refused_logged: HashSet::new(),
            cookie_secret: random(),
            cookie_secret_at: None,
            load: (None, 0),
            cookie_until: None,
            told: FastMap::default(),
            bad_version_logged: None,
            scratch: Vec::with_capacity(2048),
            out: Vec::with_capacity(2048),
            pushes: VecDeque::new(),
            to_announce: HashSet::new(),
            timeout: Instant::now(),
            stats: RelayStats::default(),
            events: VecDeque::new(),
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
        let step = self.decide(now, from, datagram);
        self.announce(now, ANNOUNCE_EVERY);
        match step {
            Ok(Step::Forward(to)) => {
                self.stats.tx += 1;
                RelayAction::Forward(to, &self.out)
            }
            Ok(Step::Reply) => {
                self.stats.tx += 1;
                RelayAction::Reply(&self.out)
            }
            Ok(Step::Rejoin) => {
                // Counted: the datagram itself was not accepted.
                self.stats.drops.add(DropReason::NoSession);
                self.stats.tx += 1;
                RelayAction::Reply(&self.out)
            }
            Err(reason) => {
                self.stats.drops.add(reason);
                RelayAction::Drop(reason)
            }
        }
    }

    fn decide(&mut self, now: Instant, from: SocketAddr, d: &[u8]) -> Result<Step, DropReason> {
        let kind = match codec::peek(d) {
            Ok(k) => k,
            Err(WireError::BadVersion(version)) => {
                if version == 1
                    && self
                        .bad_version_logged
                        .is_none_or(|t| now.saturating_duration_since(t) >= BAD_VERSION_LOG_EVERY)
                {
                    self.bad_version_logged = Some(now);
                    self.events.push_back(RelayEvent::OtherVersion {
                        addr: from,
                        version,
                    });
                }
                return Err(DropReason::BadVersion);
            }
            Err(e) => return Err(e.drop_reason()),
        };
        match kind {
            Kind::UplinkInit => self.handshake(now, from, d).map(|()| Step::Reply),
            Kind::Control => self.control(now, from, d),
            k if k.is_routed() => self.route(now, from, d),
            _ => Err(DropReason::UnknownKind),
        }
    }

    /// Counts an initiation; true while initiations need a cookie: from a
    /// second with more than `handshakes_per_sec` of them, for at least
    /// [`COOKIE_MODE_MIN`] (so the mode doesn't flap under a steady flood).
    fn under_load(&mut self, now: Instant) -> bool {
        match self.load.0 {
            Some(t) if now.saturating_duration_since(t) < Duration::from_secs(1) => {}
            _ => self.load = (Some(now), 0),
        }
        self.load.1 += 1;
        if self.load.1 > self.config.handshakes_per_sec {
            self.cookie_until = Some(now + COOKIE_MODE_MIN);
        }
        let on = self.cookie_until.is_some_and(|t| now < t);
        if on != self.stats.cookie_mode {
            self.stats.cookie_mode = on;
            self.events.push_back(RelayEvent::CookieMode(on));
        }
        on
    }

    fn cookie(&mut self, now: Instant, from: SocketAddr) -> [u8; 16] {
        if self
            .cookie_secret_at
            .is_none_or(|t| now.saturating_duration_since(t) >= COOKIE_SECRET_LIFE)
        {
            self.cookie_secret = random();
            self.cookie_secret_at = Some(now);
        }
        let addr = from.to_string();
        codec::mac(&self.cookie_secret, &[addr.as_bytes()])
    }

    fn handshake(&mut self, now: Instant, from: SocketAddr, d: &[u8]) -> Result<(), DropReason> {
        let network = NetworkId(d[uplink_init::NETWORK].try_into().unwrap_or_default());
        let net = self
            .networks
            .get(&network)
            .ok_or(DropReason::WrongNetwork)?;
        let mac1 = codec::mac(&net.mac1_key, &[&d[..uplink_init::MAC1.start]]);
        if !constant_time_eq(&mac1, &d[uplink_init::MAC1]) {
            return Err(DropReason::Forged);
        }
        if self.under_load(now) {
            let cookie = self.cookie(now, from);
            let mac2 = codec::mac2(&cookie, &[&d[..uplink_init::MAC2.start]]);
            if !constant_time_eq(&mac2, &d[uplink_init::MAC2]) {
                let net = &self.networks[&network];
                let nonce: [u8; 12] = random();
                let mut sealed = cookie.to_vec();
                let tag = net
                    .cookie_aead
                    .seal_in_place_separate_tag(
                        Nonce::assume_unique_for_key(nonce),
                        Aad::from(&d[uplink_init::MAC1]),
                        &mut sealed,
                    )
                    .map_err(|_| DropReason::SendFailed)?;
                self.out.clear();
                self.out
                    .extend_from_slice(&codec::header(Kind::CookieReply));
                self.out.extend_from_slice(&d[uplink_init::SENDER]);
                self.out.extend_from_slice(&nonce);
                self.out.extend_from_slice(&sealed);
                self.out.extend_from_slice(tag.as_ref());
                debug_assert_eq!(self.out.len(), cookie_reply::LEN);
                self.stats.cookies_sent += 1;
                self.stats.drops.add(DropReason::CookieRequired);
                return Ok(());
            }
        }
        let net = self
            .networks
            .get_mut(&network)
            .ok_or(DropReason::WrongNetwork)?;
        let mut refusal = DropReason::HandshakeFailed;
        let mut refused = None;
        let keepalive = self.config.keepalive.as_secs().clamp(1, u16::MAX.into()) as u16;
        let responded = noise::respond(
            &net.identity,
            net.key.psk(),
            &d[uplink_init::NOISE],
            |payload, remote| {
                if payload.len() != uplink_init::PAYLOAD_LEN {
                    return Err(NoiseError::Malformed);
                }
                let id = MemberId::of(remote);
                if self.refuse.contains(remote) {
                    refusal = DropReason::RefusedMember;
                    refused = Some(id);
                    return Err(NoiseError::Forged);
                }
                let ts: [u8; 12] = payload[..12].try_into().unwrap_or_default();
                if net.timestamps.get(&id).is_some_and(|last| ts <= *last) {
                    refusal = DropReason::Replayed;
                    return Err(NoiseError::Forged);
                }
                let mut p = keepalive.to_be_bytes().to_vec();
                p.extend_from_slice(&[0, 0]);
                Ok(p)
            },
        );
        let responded = match responded {
            Ok(r) => r,
            Err(_) => {
                if let Some(member) = refused {
                    if self.refused_logged.insert(member) {
                        self.events
                            .push_back(RelayEvent::Refused { member, addr: from });
                    }
                }
                return Err(refusal);
            }
        };
        let remote = responded.keys.remote_static;
        let id = MemberId::of(&remote);
        let ts: [u8; 12] = responded.payload[..12].try_into().unwrap_or_default();
        if !net.members.contains_key(&id) && net.members.len() >= self.config.max_peers {
            return Err(DropReason::PeerCap);
        }
        if net.timestamps.len() >= 4 * self.config.max_peers && !net.timestamps.contains_key(&id) {
            // Bounded: forget the timestamps of members that are gone.
            let members = &net.members;
            net.timestamps.retain(|m, _| members.contains_key(m));
        }
        net.timestamps.insert(id, ts);
        let local_index = loop {
            let i = u32::from_be_bytes(random());
            if !self.index.contains_key(&i) {
                break i;
            }
        };
        let remote_index = codec::be32(d, uplink_init::SENDER);
        let kp = Keypair::new(&responded.keys, local_index, remote_index, false, now);
        self.index.insert(local_index, (network, id));
        let member = net.members.entry(id).or_insert_with(|| Member {
            confirmed: false,
            public: remote,
            addr: from,
            keypairs: Keypairs::default(),
            last_seen: now,
            rx: 0,
            handshakes: 0,
            lists: RateWindow::default(),
        });
        member.handshakes += 1;
        member.addr = from;
        member.last_seen = now;
        if let Some(old) = member.keypairs.install_responded(kp) {
            self.index.remove(&old);
        }
        self.stats.handshakes += 1;
        self.out.clear();
        self.out.extend_from_slice(&codec::header(Kind::UplinkResp));
        self.out.extend_from_slice(&local_index.to_be_bytes());
        self.out.extend_from_slice(&remote_index.to_be_bytes());
        self.out.extend_from_slice(&responded.reply);
        if self.out.len() != uplink_resp::LEN {
            return Err(DropReason::Malformed);
        }
        Ok(())
    }

    /// The member an index names, with the keypair, after `check` accepted
    /// the datagram under it; confirms a `next` keypair and follows the
    /// member's address.
    fn authenticate(
        &mut self,
        now: Instant,
        from: SocketAddr,
        index: u32,
        check: impl FnOnce(&mut Keypair) -> Result<(), WireError>,
    ) -> Result<(NetworkId, MemberId), Step2> {
        let Some(&(network, id)) = self.index.get(&index) else {
            return Err(self.rejoin(now, from, index));
        };
        let net = self
            .networks
            .get_mut(&network)
            .ok_or(Step2::Drop(DropReason::NoSession))?;
        let member = net
            .members
            .get_mut(&id)
            .ok_or(Step2::Drop(DropReason::NoSession))?;
        let (slot, kp) = member
            .keypairs
            .find(index)
            .ok_or(Step2::Drop(DropReason::NoSession))?;
        if !kp.usable(now, &self.config.timers) {
            return Err(Step2::Drop(DropReason::NoSession));
        }
        check(kp).map_err(|e| Step2::Drop(e.drop_reason()))?;
        if slot == Slot::Next {
            if let Some(old) = member.keypairs.confirm_next() {
                self.index.remove(&old);
            }
        }
        member.addr = from;
        member.last_seen = now;
        member.rx += 1;
        if !member.confirmed {
            member.confirmed = true;
            net.generation = net.generation.wrapping_add(1);
            self.to_announce.insert(network);
            self.stats.registrations += 1;
            self.events.push_back(RelayEvent::Joined {
                network,
                member: id,
                addr: from,
            });
        }
        Ok((network, id))
    }

    /// Answers a datagram for an unknown index with a Rejoin, once a second
    /// per address at most (the hint is 8 bytes: never more than it got).
    fn rejoin(&mut self, now: Instant, from: SocketAddr, index: u32) -> Step2 {
        if self
            .told
            .get(&from)
            .is_some_and(|t| now.saturating_duration_since(*t) < REJOIN_EVERY)
            || self.told.len() >= 4 * self.config.max_peers
        {
            return Step2::Drop(DropReason::NoSession);
        }
        self.told.insert(from, now);
        self.out.clear();
        self.out.extend_from_slice(&codec::header(Kind::Rejoin));
        self.out.extend_from_slice(&index.to_be_bytes());
        debug_assert_eq!(self.out.len(), rejoin::LEN);
        Step2::Rejoin
    }

    fn control(&mut self, now: Instant, from: SocketAddr, d: &[u8]) -> Result<Step, DropReason> {
        let index = codec::be32(d, control::RECEIVER);
        let counter = codec::be64(d, control::COUNTER);
        let (head, rest) = d.split_at(control::HEADER_LEN);
        let (ct, tag) = rest.split_at(rest.len() - codec::TAG_LEN);
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        scratch.extend_from_slice(ct);
        let who = self.authenticate(now, from, index, |kp| {
            kp.open(counter, head, &mut scratch, tag)
        });
        let result = match who {
            Ok(who) => self
                .answer_control(now, who, &scratch)
                .map(|()| Step::Reply),
            Err(Step2::Rejoin) => Ok(Step::Rejoin),
            Err(Step2::Drop(reason)) => Err(reason),
        };
        self.scratch = scratch;
        result
    }

    fn answer_control(
        &mut self,
        now: Instant,
        (network, id): (NetworkId, MemberId),
        plain: &[u8],
    ) -> Result<(), DropReason> {
        let message = Control::parse(plain).map_err(|e| e.drop_reason())?;
        if let Control::GetMembers { .. } = message {
            // An answer is up to 27 times the request, to wherever the
            // request came from: bounded per member, so that a member
            // forging its source address can't aim much at anyone.
            let m = self
                .networks
                .get_mut(&network)
                .and_then(|n| n.members.get_mut(&id))
                .ok_or(DropReason::NoSession)?;
            if !m
                .lists
                .allow(now, Duration::from_secs(1), MEMBER_LISTS_PER_SEC)
            {
                return Err(DropReason::QueueFull);
            }
        }
        let net = self.networks.get(&network).ok_or(DropReason::NoSession)?;
        let observed = net.members.get(&id).ok_or(DropReason::NoSession)?.addr;
        let mut reply = Vec::new();
        match message {
            Control::Keepalive => Control::KeepaliveAck {
                keepalive_secs: self.config.keepalive.as_secs().clamp(1, u16::MAX.into()) as u16,
                generation: net.generation,
                observed,
            }
            .encode(&mut reply),
            Control::GetMembers { from } => {
                let mut all: Vec<(&MemberId, &Member)> =
                    net.members.iter().filter(|(_, m)| m.confirmed).collect();
                all.sort_by_key(|(m, _)| **m);
                let from = (from as usize).min(all.len());
                let mut entries = Vec::new();
                for (m, member) in all.iter().skip(from).take(codec::MEMBERS_PER_MESSAGE) {
                    entries.extend_from_slice(&m.0);
                    entries.extend_from_slice(&member.public);
                }
                Control::Members {
                    generation: net.generation,
                    total: all.len() as u32,
                    from: from as u32,
                    entries: &entries,
                }
                .encode(&mut reply);
            }
            Control::KeepaliveAck { .. } | Control::Members { .. } => {
                return Err(DropReason::UnknownKind)
            }
        }
        let net = self
            .networks
            .get_mut(&network)
            .ok_or(DropReason::NoSession)?;
        let member = net.members.get_mut(&id).ok_or(DropReason::NoSession)?;
        let kp = member
            .keypairs
            .sending(now, &self.config.timers)
            .ok_or(DropReason::NoSession)?;
        seal_control(kp, &reply, &mut self.out).map_err(|e| e.drop_reason())
    }

    fn route(&mut self, now: Instant, from: SocketAddr, d: &[u8]) -> Result<Step, DropReason> {
        let index = codec::be32(d, routed::RECEIVER);
        let counter = codec::be64(d, routed::COUNTER);
        let len = d.len();
        let tag = &d[len - codec::TAG_LEN..];
        let covered = &d[..routed::HEADER_LEN];
        let (network, src) = match self.authenticate(now, from, index, |kp| {
            kp.check_tag(counter, covered, len, tag)
        }) {
            Ok(who) => who,
            Err(Step2::Rejoin) => return Ok(Step::Rejoin),
            Err(Step2::Drop(reason)) => return Err(reason),
        };
        let dst = codec::member_id(d, routed::MEMBER);
        if dst == src {
            return Err(DropReason::Loop);
        }
        let timers = self.config.timers;
        let dest = self
            .networks
            .get_mut(&network)
            .and_then(|n| n.members.get_mut(&dst))
            .ok_or(DropReason::NoDestination)?;
        if dest.addr == from {
            return Err(DropReason::Loop);
        }
        let to = dest.addr;
        let kp = dest
            .keypairs
            .sending(now, &timers)
            .ok_or(DropReason::NoDestination)?;
        let out_counter = kp.next_counter().map_err(|e| e.drop_reason())?;
        self.out.clear();
        self.out.extend_from_slice(d);
        self.out[routed::RECEIVER].copy_from_slice(&kp.remote_index.to_be_bytes());
        self.out[routed::COUNTER].copy_from_slice(&out_counter.to_be_bytes());
        self.out[routed::MEMBER].copy_from_slice(&src.0);
        let tag = kp.send_tag(&self.out[..routed::HEADER_LEN], len);
        self.out[len - codec::TAG_LEN..].copy_from_slice(&tag);
        Ok(Step::Forward(to))
    }

    /// Tells every member of a network whose member list changed (a member
    /// joined or left) its new generation, so that they fetch the list at
    /// once rather than at their next keepalive: a KeepaliveAck each, at
    /// most once per `every` per network (the rest waits for the next call).
    // HOT PATH (called after every datagram: returns at once unless a
    // network has a change to announce)
    fn announce(&mut self, now: Instant, every: Duration) {
        if self.to_announce.is_empty() {
            return;
        }
        let keepalive_secs = self.config.keepalive.as_secs().clamp(1, u16::MAX.into()) as u16;
        let timers = self.config.timers;
        // In the networks' own order (the set's is random), so that what
        // goes out, and a simulation's trace, is the same every run.
        for (id, net) in self.networks.iter_mut() {
            if !self.to_announce.contains(id)
                || net
                    .announced
                    .is_some_and(|t| now.saturating_duration_since(t) < every)
            {
                continue;
            }
            self.to_announce.remove(id);
            net.announced = Some(now);
            let mut plain = Vec::new();
            for m in net.members.values_mut().filter(|m| m.confirmed) {
                plain.clear();
                Control::KeepaliveAck {
                    keepalive_secs,
                    generation: net.generation,
                    observed: m.addr,
                }
                .encode(&mut plain);
                let Some(kp) = m.keypairs.sending(now, &timers) else {
                    continue;
                };
                let mut out = Vec::new();
                if seal_control(kp, &plain, &mut out).is_ok() {
                    self.stats.tx += 1;
                    self.pushes.push_back((m.addr, out));
                }
            }
        }
    }

    /// Datagrams the relay sends of its own accord (member list changes),
    /// each to its address. Drivers drain them after every receive burst
    /// and every [`Relay::handle_timeout`].
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.pushes.pop_front()
    }

    /// When [`Relay::handle_timeout`] wants to run next: once a second.
    pub fn poll_timeout(&self) -> Instant {
        self.timeout
    }

    /// Forgets members silent for longer than the timeout and keys past
    /// their age, and tells members of changes not told yet. Call about once
    /// a second.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.timeout = now + Duration::from_secs(1);
        let timeout = self.config.peer_timeout;
        let timers = self.config.timers;
        for (network, net) in self.networks.iter_mut() {
            let mut changed = false;
            net.members.retain(|id, m| {
                for i in m.keypairs.expire(now, &timers) {
                    self.index.remove(&i);
                }
                let idle = now.saturating_duration_since(m.last_seen);
                if !m.confirmed && (idle > UNCONFIRMED_LIFE || m.keypairs.is_empty()) {
                    // Never listed: goes without a word.
                    for i in m.keypairs.clear() {
                        self.index.remove(&i);
                    }
                    return false;
                }
                if idle > timeout || m.keypairs.is_empty() {
                    for i in m.keypairs.clear() {
                        self.index.remove(&i);
                    }
                    self.events.push_back(RelayEvent::Left {
                        network: *network,
                        member: *id,
                        addr: m.addr,
                    });
                    self.stats.timeouts += 1;
                    changed = true;
                    return false;
                }
                true
            });
            if changed {
                net.generation = net.generation.wrapping_add(1);
                self.to_announce.insert(*network);
            }
        }
        self.told
            .retain(|_, t| now.saturating_duration_since(*t) < REJOIN_EVERY);
        self.announce(now, Duration::ZERO);
        if self.stats.cookie_mode
            && self
                .load
                .0
                .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(2))
        {
            self.stats.cookie_mode = false;
            self.events.push_back(RelayEvent::CookieMode(false));
        }
    }

    /// Members of every network.
    pub fn peers(&self, now: Instant) -> Vec<PeerInfo> {
        let mut out = Vec::new();
        for (network, net) in &self.networks {
            for (id, m) in net.members.iter().filter(|(_, m)| m.confirmed) {
                out.push(PeerInfo {
                    network: *network,
                    member: *id,
                    public: m.public,
                    addr: m.addr,
                    idle: now.saturating_duration_since(m.last_seen),
                    session_age: m.keypairs.age(now).unwrap_or_default(),
                    rx: m.rx,
                    handshakes: m.handshakes,
                });
            }
        }
        out.sort_by_key(|p| (p.network.0, p.addr, p.member));
        out
    }

    /// The ids of the networks served.
    pub fn networks(&self) -> Vec<NetworkId> {
        let mut ids: Vec<NetworkId> = self.networks.keys().copied().collect();
        ids.sort();
        ids
    }

    /// Takes the events that happened since the last call.
    pub fn poll_event(&mut self) -> Option<RelayEvent> {
        self.events.pop_front()
    }

    /// Counts drops that happened in the driver (e.g. failed sends).
    pub fn count_drops(&mut self, reason: DropReason, n: u64) {
        self.stats.drops.add_n(reason, n);
    }

    /// Counters.
    pub fn stats(&self) -> &RelayStats {
        &self.stats
    }

    /// Fuzzing only (`cargo fuzz` builds with `--cfg fuzzing`): the keypair
    /// the relay sends to `member` with, so that a fuzz target can play a
    /// holder of the relay key and seal what it likes for that member.
    #[cfg(fuzzing)]
    pub fn fuzz_sending_keypair(&mut self, now: Instant, member: MemberId) -> Option<&mut Keypair> {
        let timers = self.config.timers;
        self.networks
            .values_mut()
            .find_map(|n| n.members.get_mut(&member))
            .and_then(|m| m.keypairs.sending(now, &timers))
    }
}

/// What to do with `out` after a datagram was handled.
enum Step {
    /// Send it to this address.
    Forward(SocketAddr),
    /// Send it back.
    Reply,
    /// It is a Rejoin hint: send it back, and count the datagram as dropped.
    Rejoin,
}

/// Why an index did not authenticate a datagram.
enum Step2 {
    /// `out` holds a Rejoin hint to send back.
    Rejoin,
    /// Dropped.
    Drop(DropReason),
}

/// Seals a control message under `kp` into `out` (cleared first).
pub fn seal_control(kp: &mut Keypair, plain: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    let counter = kp.next_counter()?;
    out.clear();
    out.extend_from_slice(&codec::header(Kind::Control));
    out.extend_from_slice(&kp.remote_index.to_be_bytes());
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(plain);
    let (head, body) = out.split_at_mut(control::HEADER_LEN);
    let tag = kp.seal(counter, head, body);
    out.extend_from_slice(&tag);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A member's entry without its keypairs stays small: what the relay
    /// holds per member is this (in a hash table with room to spare) plus
    /// the keypairs in use, one or two of about 1.5 KB (issue 13: 10 000
    /// members in 64 MiB; with the keypairs inline it was 4.5 KB plus).
    #[test]
    fn a_member_entry_without_keys_is_small() {
        let size = std::mem::size_of::<Member>();
        assert!(size <= 192, "a relay's member entry is {size} bytes");
    }
}
