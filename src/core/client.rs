//! A member of a network (protocol version 2): the protocol side shared by
//! `edge` and `bridge`.
//!
//! Two layers of sessions (docs/protocol.md):
//! - the **uplink** to the relay: a Noise handshake under the relay key,
//!   keepalives, and the member list the relay keeps (who is in the network,
//!   with which static key);
//! - a **member session** with every member it exchanges frames with: a
//!   Noise handshake under the member PSK, carried through the relay; frames
//!   are sealed under keys only the two members hold.
//!
//! Switching happens here, since the relay can't see frames: a MAC belongs
//! to the first member seen using it (in a frame that opened under that
//! member's session) until it ages out; unicast to a known MAC goes to its
//! member, everything else to every member, one sealed copy each.
//!
//! # The fast path
//! As before: a GSO super-frame from the local device is cut along its
//! segments ([`offload::segment`]), each sealed alone into one datagram;
//! received TCP segments are put back together by a [`Coalescer`]; SYNs
//! are MSS-clamped both ways so full segments fit one datagram.
//!
//! # Shape
//! As quinn-proto's endpoint: input through [`Client::handle_frame`],
//! [`Client::handle_datagram`] and [`Client::handle_timeout`], time passed
//! in; output through [`Client::poll_transmit`] (datagrams, in order),
//! [`Client::poll_event`] (what an operator wants logged) and
//! [`Client::poll_timeout`] (when to call `handle_timeout`). Frames for the
//! local device are the one exception: they go to the `deliver` callback of
//! `handle_datagram` and [`Client::flush`], so that a 64 KiB super-frame is
//! written once from the coalescer's buffer rather than copied into a queue.
//! The drivers (`uplink.rs`) and the simulators (`memnet`, `netsim`) are
//! loops over these calls.
//!
//! # Timers
//! Keys rotate every [`Timers::rekey_after`] (the initiator of the current
//! keypair starts a new handshake, the responder too if it is 10 s late);
//! keypairs older than [`Timers::reject_after`] are erased, so a recording
//! is worthless once its session ended, across restarts of anyone.

use std::{
    collections::{HashSet, VecDeque},
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use ring::aead::{Aad, LessSafeKey, Nonce, Tag};

use crate::core::{
    drop::{DropCounters, DropReason},
    fasthash::FastMap,
    frame::mss,
    gro::Coalescer,
    mac::MacAddr,
    noise::{self, Initiator, NoiseError, KEY_LEN},
    offload::{self, GsoType, VnetHdr},
    path::{Path, PathAction, PathChange},
    proto::{
        codec::{
            self, control, cookie_reply, data, direct, peer_init, peer_resp, rejoin, routed,
            uplink_init, uplink_resp, Control, Kind, PathMessage, MAX_ENDPOINTS, MEMBER_ENTRY_LEN,
        },
        session::{constant_time_eq, Keypair, Keypairs, Slot, Timers, WallClock},
        Identity, MemberId, MemberPsk, RelayKey,
    },
    relay::{cookie_aead, seal_control},
    switch::{Route, Switch, SwitchConfig},
    window::RateWindow,
    wire::{Fragment, NetworkKey, Reassembler, SessionId, WireError},
};

/// A handshake not answered in this long is sent again.
const HANDSHAKE_RETRY: Duration = Duration::from_secs(1);
/// Frames wait at most this long for a member session.
const QUEUE_AGE: Duration = Duration::from_secs(1);
/// A member list request not answered in this long is sent again.
const MEMBERS_RETRY: Duration = Duration::from_secs(1);
/// How long a cookie from the relay is used.
const COOKIE_LIFE: Duration = Duration::from_secs(120);
/// A responder starts a rekey this long after the initiator should have.
const RESPONDER_REKEY_DELAY: Duration = Duration::from_secs(10);
/// Members a member list may name (a relay serves 1024 per network).
const MAX_MEMBERS: usize = 4096;
/// Handshake initiations answered per member per second.
const PEER_INITS_PER_SEC: u32 = 10;
/// How long a member the relay no longer lists is kept while we reach it
/// on a direct path (a restarted relay lists members as they come back).
const UNLISTED_GRACE: Duration = Duration::from_secs(10);
/// MACs whose takeover attempts are logged (once each).
const MAC_TAKEN_LOGGED: usize = 1024;
/// Pings sent per [`PINGS_WINDOW`] at most, over all members: many members
/// probing many peers stay bounded.
const PINGS_PER_WINDOW: u32 = 64;
/// See [`PINGS_PER_WINDOW`].
const PINGS_WINDOW: Duration = Duration::from_millis(250);
/// Pings answered per second per member (a member probes at most
/// `MAX_CANDIDATES` of our addresses a second, plus its keepalive): one
/// that forges its source address can't aim more pongs than this at a
/// third party through us.
const PONGS_PER_SEC: u32 = 32;
/// Rejoin hints sent straight to members' addresses, a second at most.
const DIRECT_REJOINS_PER_SEC: u32 = 10;

/// Timers and limits of a member.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Keepalive interval until the relay tells us its own.
    pub keepalive: Duration,
    /// Interval between uplink handshake attempts while not joined; it
    /// doubles with each unanswered attempt, up to 8 times this.
    pub register_retry: Duration,
    /// Keepalive intervals without a word from the relay before joining again.
    pub dead_after: u32,
    /// Largest datagram sent; frames are cut into fragments to fit.
    pub max_datagram: usize,
    /// The local device takes super-frames with offload metadata: coalesce
    /// received TCP segments into super-frames.
    pub offload: bool,
    /// Clamp the MSS of TCP SYNs crossing the overlay, both ways.
    pub clamp_mss: bool,
    /// Session timers.
    pub timers: Timers,
    /// Frames waiting for one member session.
    pub max_queue: usize,
    /// The switch table's limits (per member: MACs it may own).
    pub switch: SwitchConfig,
    /// Find direct paths to the members we talk to (else everything goes
    /// through the relay).
    pub direct: bool,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            keepalive: Duration::from_secs(5),
            register_retry: Duration::from_secs(1),
            dead_after: 3,
            max_datagram: crate::core::wire::DEFAULT_MAX_DATAGRAM,
            offload: false,
            clamp_mss: true,
            timers: Timers::default(),
            max_queue: 16,
            switch: SwitchConfig::default(),
            direct: true,
        }
    }
}

/// What a received datagram produced (frames go to the `deliver` callback).
#[derive(Debug, PartialEq, Eq)]
pub enum ClientEvent {
    /// A frame was completed: delivered, or held by the coalescer.
    Frame,
    /// The uplink to the relay is up (first time, or again).
    Registered,
    /// A control message, a handshake, or a fragment of a frame not yet
    /// complete.
    Nothing,
    /// The datagram was dropped; the reason is counted.
    Drop(DropReason),
}

/// Something an operator wants in the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemberEvent {
    /// A session with a member is up (first handshake with it).
    PeerUp(MemberId),
    /// A member left the network (no longer in the relay's list).
    PeerLeft(MemberId),
    /// A member used a MAC another member owns (logged once per MAC).
    MacTaken {
        /// The MAC.
        mac: MacAddr,
        /// Who owns it.
        owner: MemberId,
        /// Who tried.
        by: MemberId,
    },
    /// The relay speaks another protocol version (logged once a minute).
    OtherVersion(u8),
    /// Frames to a member go directly to `addr` now.
    PathDirect {
        /// The member.
        member: MemberId,
        /// Its address.
        addr: SocketAddr,
        /// Round trip of the pong that confirmed the path.
        rtt: Duration,
    },
    /// Frames to a member go through the relay again.
    PathRelay {
        /// The member.
        member: MemberId,
        /// Because it has been inactive (else: the direct path stopped
        /// answering).
        idle: bool,
    },
}

/// Counters of a member.
#[derive(Clone, Debug, Default)]
pub struct ClientStats {
    /// Frames sealed and sent (a flood counts once per member).
    pub frames_out: u64,
    /// Frames received (before coalescing).
    pub frames_in: u64,
    /// Super-frames from the local device, cut into segments and sent.
    pub offload_frames_out: u64,
    /// Super-frames rebuilt from received segments and delivered whole.
    pub offload_frames_in: u64,
    /// TCP SYNs whose MSS option was lowered, either way.
    pub mss_clamped: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams received.
    pub datagrams_in: u64,
    /// Times the uplink came up (joins).
    pub registrations: u64,
    /// Uplink handshakes completed (joins and rekeys).
    pub uplink_handshakes: u64,
    /// Member handshakes completed, either side.
    pub peer_handshakes: u64,
    /// Member handshakes that replaced a working keypair.
    pub rekeys: u64,
    /// Paths to members that changed (relay to direct or back).
    pub path_changes: u64,
    /// Drops per reason.
    pub drops: DropCounters,
}

/// One member of the network, as shown to an operator.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// Its id.
    pub id: MemberId,
    /// Its static public key.
    pub public: [u8; KEY_LEN],
    /// Age of the session keys in use, if any.
    pub session_age: Option<Duration>,
    /// Handshakes completed with it.
    pub handshakes: u64,
    /// MACs it owns in our switch table.
    pub macs: usize,
    /// Frames received from it.
    pub frames_in: u64,
    /// Frames sent to it.
    pub frames_out: u64,
    /// The direct address frames go to (else through the relay).
    pub direct: Option<SocketAddr>,
    /// The direct path's round trip.
    pub rtt: Option<Duration>,
    /// How long ago the path last changed.
    pub path_changed: Option<Duration>,
}

/// Who an index of ours belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Owner {
    Uplink,
    Peer(MemberId),
}

struct Pending {
    initiator: Initiator,
    index: u32,
    sent_at: Instant,
    /// mac1 of an UplinkInit (a CookieReply is sealed to it).
    mac1: [u8; 16],
}

#[derive(Default)]
struct Peer {
    public: [u8; KEY_LEN],
    keypairs: Keypairs,
    pending: Option<Pending>,
    /// Greatest initiation timestamp accepted from it.
    last_timestamp: Option<[u8; 12]>,
    queue: VecDeque<(Instant, Vec<u8>)>,
    handshakes: u64,
    frames_in: u64,
    frames_out: u64,
    /// Initiations answered this second.
    inits: RateWindow,
    path: Path,
    /// When the relay's list stopped naming it (kept for a while since we
    /// reach it directly; see [`Client::apply_members`]).
    unlisted_since: Option<Instant>,
    /// When an unauthenticated hint from its direct path's address (a
    /// Rejoin, or a Direct under keys we don't have) last made us start a
    /// handshake.
    hinted: Option<Instant>,
    /// Pings answered this second.
    pongs: RateWindow,
}

/// The member list being fetched from the relay.
struct Fetch {
    /// The list's generation, from its first page.
    generation: Option<u32>,
    entries: Vec<(MemberId, [u8; KEY_LEN])>,
    /// The next entry to ask for.
    next_from: u32,
    asked_at: Instant,
}

/// A member's protocol state machine.
pub struct Client {
    config: ClientConfig,
    identity: Identity,
    psk: MemberPsk,
    peer_mac1_key: [u8; 32],
    relay_key: RelayKey,
    relay_public: [u8; KEY_LEN],
    uplink_mac1_key: [u8; 32],
    cookie_aead: LessSafeKey,
    clock: WallClock,
    relay: SocketAddr,
    // The uplink.
    uplink: Keypairs,
    uplink_pending: Option<Pending>,
    /// The uplink initiation before the pending one: index, mac1, sent at
    /// (a cookie reply may answer it).
    previous_attempt: Option<(u32, [u8; 16], Instant)>,
    /// Uplink initiations sent since the last one answered.
    uplink_attempts: u32,
    cookie: Option<([u8; 16], Instant)>,
    joined: bool,
    keepalive: Duration,
    last_sent: Option<Instant>,
    last_heard: Option<Instant>,
    last_rejoin: Option<Instant>,
    /// A Rejoin came: the handshake it started joins anew (counted).
    rejoining: bool,
    generation: Option<u32>,
    fetch: Option<Fetch>,
    other_version_logged: Option<Instant>,
    // Members.
    peers: FastMap<MemberId, Peer>,
    index: FastMap<u32, Owner>,
    switch: Switch<MemberId>,
    mac_taken_logged: HashSet<MacAddr>,
    reassembler: Reassembler,
    gro: Option<Coalescer>,
    // Direct paths.
    /// Our address as the relay sees it.
    observed: Option<SocketAddr>,
    /// Our own addresses (the driver's), with the port of our socket.
    local_endpoints: Vec<SocketAddr>,
    /// Networks reached through the overlay itself: never a path.
    overlay_nets: Vec<(IpAddr, u8)>,
    /// Changes when our endpoints do.
    endpoints_gen: u64,
    path_actions: Vec<PathAction>,
    /// Rejoin hints sent directly this second.
    direct_rejoins: RateWindow,
    /// Pings sent in this [`PINGS_WINDOW`].
    pings_sent: RateWindow,
    next_frame_id: u32,
    /// Plaintext of the datagram being opened or sealed.
    scratch: Vec<u8>,
    /// A fragment's plaintext.
    fragment: Vec<u8>,
    /// A received SYN, copied to clamp its MSS.
    syn: Vec<u8>,
    /// One segment of a super-frame being sent.
    segment: Vec<u8>,
    out: Vec<u8>,
    events: VecDeque<MemberEvent>,
    /// Datagrams to send ([`Client::poll_transmit`]).
    outbox: Outbox,
    /// When timers are due next ([`Client::poll_timeout`]).
    timeout: Instant,
    stats: ClientStats,
}

/// A datagram to send.
#[derive(Debug, PartialEq, Eq)]
pub struct Transmit<'a> {
    /// Where to.
    pub destination: SocketAddr,
    /// The datagram.
    pub contents: &'a [u8],
}

/// Datagrams waiting to be sent, back to back in one buffer (reused: no
/// allocation once warm).
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    /// Where each datagram ends in `buf`, and where it goes.
    ends: Vec<(usize, SocketAddr)>,
    next: usize,
}

impl Outbox {
    fn push(&mut self, datagram: &[u8], to: SocketAddr) {
        if self.next == self.ends.len() && self.next > 0 {
            self.buf.clear();
            self.ends.clear();
            self.next = 0;
        }
        self.buf.extend_from_slice(datagram);
        self.ends.push((self.buf.len(), to));
    }

    fn pop(&mut self) -> Option<Transmit<'_>> {
        let (end, destination) = *self.ends.get(self.next)?;
        let start = if self.next == 0 {
            0
        } else {
            self.ends[self.next - 1].0
        };
        self.next += 1;
        Some(Transmit {
            destination,
            contents: &self.buf[start..end],
        })
    }
}

/// A ping's tx: random, so that no member can answer a ping it did not
/// see (see [`Path::poll`]).
fn random_tx() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the OS random source (getrandom) failed");
    u64::from_be_bytes(b)
}

fn random_index(taken: &FastMap<u32, Owner>) -> u32 {
    loop {
        let mut b = [0u8; 4];
        getrandom::fill(&mut b).expect("the OS random source (getrandom) failed");
        let i = u32::from_be_bytes(b);
        if !taken.contains_key(&i) {
            return i;
        }
    }
}

/// A member id as the reassembler's sender key.
fn sender_key(id: MemberId) -> SessionId {
    let mut s = [0u8; 16];
    s[..8].copy_from_slice(&id.0);
    SessionId(s)
}

impl Client {
    /// A member of the network of `key`, with `identity`, using the relay at
    /// `relay`; not joined yet (the first [`Client::handle_timeout`] starts).
    pub fn new(
        config: ClientConfig,
        key: &NetworkKey,
        identity: Identity,
        relay: SocketAddr,
        now: Instant,
        clock: WallClock,
    ) -> Self {
        let relay_key = RelayKey::derive(key);
        let psk = MemberPsk::new(key);
        Client {
            keepalive: config.keepalive,
            gro: config.offload.then(Coalescer::new),
            switch: Switch::new(SwitchConfig {
                sticky: true,
                ..config.switch.clone()
            }),
            config,
            identity,
            peer_mac1_key: psk.mac1_key(),
            psk,
            relay_public: relay_key.relay_static().public,
            uplink_mac1_key: relay_key.mac1_key(),
            cookie_aead: cookie_aead(&relay_key),
            relay_key,
            clock,
            relay,
            uplink: Keypairs::default(),
            uplink_pending: None,
            previous_attempt: None,
            uplink_attempts: 0,
            cookie: None,
            joined: false,
            last_sent: None,
            last_heard: Some(now),
            last_rejoin: None,
            rejoining: false,
            generation: None,
            fetch: None,
            other_version_logged: None,
            peers: FastMap::default(),
            index: FastMap::default(),
            mac_taken_logged: HashSet::new(),
            reassembler: Reassembler::default(),
            observed: None,
            local_endpoints: Vec::new(),
            overlay_nets: Vec::new(),
            endpoints_gen: 0,
            path_actions: Vec::new(),
            direct_rejoins: RateWindow::default(),
            pings_sent: RateWindow::default(),
            next_frame_id: 0,
            scratch: Vec::with_capacity(2048),
            fragment: Vec::with_capacity(2048),
            syn: Vec::with_capacity(128),
            segment: Vec::with_capacity(2048),
            out: Vec::with_capacity(2048),
            events: VecDeque::new(),
            outbox: Outbox::default(),
            timeout: now,
            stats: ClientStats::default(),
        }
    }

    /// The relay's address.
    pub fn relay(&self) -> SocketAddr {
        self.relay
    }

    /// Follows the relay to a new address; joins again there.
    pub fn set_relay(&mut self, relay: SocketAddr) {
        self.relay = relay;
        self.drop_uplink();
    }

    /// Our identity.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// True while the uplink to the relay is up.
    pub fn is_registered(&self) -> bool {
        self.joined
    }

    /// True when the local device gets super-frames rebuilt by the coalescer.
    pub fn offload_ok(&self) -> bool {
        self.config.offload && self.joined
    }

    /// Counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Fuzzing only (`cargo fuzz` builds with `--cfg fuzzing`): the keypair
    /// this member sends to the relay with, so that a fuzz target can seal
    /// what it likes as this member.
    #[cfg(fuzzing)]
    pub fn fuzz_uplink_keypair(&mut self, now: Instant) -> Option<&mut Keypair> {
        let timers = self.config.timers;
        self.uplink.sending(now, &timers)
    }

    /// Fuzzing only: the keypair this member sends to member `id` with.
    #[cfg(any(fuzzing, test))]
    pub fn fuzz_peer_keypair(&mut self, now: Instant, id: MemberId) -> Option<&mut Keypair> {
        let timers = self.config.timers;
        self.peers
            .get_mut(&id)
            .and_then(|p| p.keypairs.sending(now, &timers))
    }

    /// Age of the uplink's keys.
    pub fn uplink_age(&self, now: Instant) -> Option<Duration> {
        self.uplink.age(now)
    }

    /// The members of the network we know, sorted by id.
    pub fn peers(&self, now: Instant) -> Vec<PeerInfo> {
        let mut v: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(id, p)| PeerInfo {
                id: *id,
                public: p.public,
                session_age: p.keypairs.age(now),
                handshakes: p.handshakes,
                macs: self.switch.owned(*id),
                frames_in: p.frames_in,
                frames_out: p.frames_out,
                direct: p.path.direct(),
                rtt: p.path.rtt(),
                path_changed: p
                    .path
                    .changed_at()
                    .map(|t| now.saturating_duration_since(t)),
            })
            .collect();
        v.sort_by_key(|p| p.id);
        v
    }

    /// Takes the events that happened since the last call.
    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    /// The next datagram to send, in order. Drivers send everything this
    /// gives after every `handle_*` call.
    pub fn poll_transmit(&mut self) -> Option<Transmit<'_>> {
        self.outbox.pop()
    }

    /// Everything [`Client::poll_transmit`] has, copied (for tests).
    #[cfg(test)]
    pub(crate) fn transmits(&mut self) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| self.poll_transmit().map(|t| t.contents.to_vec())).collect()
    }

    /// Everything [`Client::poll_transmit`] has, copied, with where to.
    #[cfg(test)]
    pub(crate) fn transmits_to(&mut self) -> Vec<(SocketAddr, Vec<u8>)> {
        std::iter::from_fn(|| {
            self.poll_transmit()
                .map(|t| (t.destination, t.contents.to_vec()))
        })
        .collect()
    }

    /// When [`Client::handle_timeout`] wants to run next.
    pub fn poll_timeout(&self) -> Instant {
        self.timeout
    }

    /// Counts drops that happened in the driver (e.g. failed sends).
    pub fn count_drops(&mut self, reason: DropReason, n: u64) {
        self.stats.drops.add_n(reason, n);
    }

    fn drop_uplink(&mut self) {
        for i in self.uplink.clear() {
            self.index.remove(&i);
        }
        if let Some(p) = self.uplink_pending.take() {
            self.index.remove(&p.index);
        }
        self.joined = false;
        self.last_sent = None;
        self.generation = None;
        self.fetch = None;
    }

    /// Seals a frame read from the local device, with the offload metadata
    /// it came with (`VnetHdr::NONE` for a plain frame); `emit` gets each
    /// datagram for the relay, in order. A super-frame or a partial checksum
    /// is finished here: cut along its segments, every checksum complete,
    /// each segment sealed alone. A SYN's MSS is clamped first. Failures are
    /// counted drops.
    // HOT PATH
    pub fn handle_frame(&mut self, now: Instant, hdr: &VnetHdr, frame: &mut [u8], mtu: usize) {
        let max_frame = codec::max_frame_in_one_datagram(self.config.max_datagram);
        if self.config.clamp_mss
            && hdr.gso_type == 0
            && mss::clamp_mss(frame, max_frame, hdr.needs_csum()).is_some()
        {
            self.stats.mss_clamped += 1;
        }
        if *hdr == VnetHdr::NONE {
            self.send_frame(now, frame);
            return;
        }
        let mtu = match hdr.gso() {
            Ok(GsoType::TcpV4 | GsoType::TcpV6) => mtu.min(max_frame.saturating_sub(l2_len(frame))),
            _ => mtu,
        };
        let mut segment = std::mem::take(&mut self.segment);
        let result = offload::segment(hdr, frame, mtu, &mut segment, &mut |seg| {
            self.send_frame(now, seg);
        });
        self.segment = segment;
        match result {
            Ok(_) if hdr.gso_type != 0 => self.stats.offload_frames_out += 1,
            Ok(_) => {}
            Err(e) => self.stats.drops.add(e.drop_reason()),
        }
    }

    /// Sends one wire-ready frame to the member owning its destination MAC,
    /// or to every member.
    // HOT PATH
    fn send_frame(&mut self, now: Instant, frame: &[u8]) {
        let Some(dst) = frame.get(..6).and_then(|d| <[u8; 6]>::try_from(d).ok()) else {
            self.stats.drops.add(DropReason::Malformed);
            return;
        };
        // Without the relay, only direct paths are left (until their keys,
        // renewed through the relay, expire).
        let joined = self.joined;
        let reachable = |p: &Peer| joined || p.path.direct().is_some();
        match self.switch.route(now, self.identity.id(), MacAddr(dst)) {
            Route::Unicast(id) if self.peers.get(&id).is_some_and(reachable) => {
                self.send_to(now, id, frame)
            }
            Route::Unicast(_) if !joined => self.stats.drops.add(DropReason::NotRegistered),
            Route::Unicast(id) => self.send_to(now, id, frame),
            Route::Flood => {
                let ids: Vec<MemberId> = self
                    .peers
                    .iter()
                    .filter(|(_, p)| reachable(p))
                    .map(|(id, _)| *id)
                    .collect();
                if ids.is_empty() {
                    self.stats.drops.add(if joined {
                        DropReason::NoDestination
                    } else {
                        DropReason::NotRegistered
                    });
                }
                for id in ids {
                    self.send_to(now, id, frame);
                }
            }
            Route::Drop(reason) => self.stats.drops.add(reason),
        }
    }

    /// Seals `frame` for member `id`, or queues it while a session is made.
    fn send_to(&mut self, now: Instant, id: MemberId, frame: &[u8]) {
        let timers = self.config.timers;
        let Some(peer) = self.peers.get_mut(&id) else {
            self.stats.drops.add(DropReason::NoDestination);
            return;
        };
        let rekey = match peer.keypairs.sending(now, &timers) {
            Some(kp) => {
                let late = if kp.initiator {
                    Duration::ZERO
                } else {
                    RESPONDER_REKEY_DELAY
                };
                kp.age(now) >= timers.rekey_after + late
            }
            None => {
                if peer.queue.len() >= self.config.max_queue {
                    self.stats.drops.add(DropReason::QueueFull);
                } else {
                    peer.queue.push_back((now, frame.to_vec()));
                }
                true
            }
        };
        if rekey {
            self.start_peer_handshake(now, id);
        }
        if self
            .peers
            .get_mut(&id)
            .and_then(|p| p.keypairs.sending(now, &timers))
            .is_some()
        {
            if let Err(reason) = self.seal_data(now, id, frame) {
                self.stats.drops.add(reason);
            }
        }
    }

    /// Seals `frame` (empty: a keepalive) for member `id` under its current
    /// keypair: as Direct datagrams on its direct path, else as Data
    /// datagrams through the relay.
    fn seal_data(&mut self, now: Instant, id: MemberId, frame: &[u8]) -> Result<(), DropReason> {
        let timers = self.config.timers;
        let relay = self.relay;
        let to = self.peers.get(&id).and_then(|p| p.path.direct());
        let max = self
            .config
            .max_datagram
            .min(crate::core::wire::MAX_DATAGRAM);
        let room = max
            .checked_sub(codec::DATA_OVERHEAD)
            .filter(|r| *r > 0)
            .ok_or(DropReason::TooBig)?;
        let frame_id = self.next_frame_id;
        self.next_frame_id = self.next_frame_id.wrapping_add(1);
        let mut fragment = std::mem::take(&mut self.fragment);
        let mut out = std::mem::take(&mut self.out);
        let (uplink, peers, stats, outbox) = (
            &mut self.uplink,
            &mut self.peers,
            &mut self.stats,
            &mut self.outbox,
        );
        let mut seal = |plain: &[u8]| -> Result<(), WireError> {
            let peer = peers.get_mut(&id).ok_or(WireError::Forged)?;
            let kp = peer
                .keypairs
                .sending(now, &timers)
                .ok_or(WireError::Forged)?;
            let (kind, up) = match to {
                Some(_) => (Kind::Direct, None),
                None => (
                    Kind::Data,
                    Some(uplink.sending(now, &timers).ok_or(WireError::Forged)?),
                ),
            };
            write_member_datagram(&mut out, kind, id, up, kp, plain)?;
            stats.datagrams_out += 1;
            outbox.push(&out, to.unwrap_or(relay));
            Ok(())
        };
        let result = if frame.is_empty() {
            seal(&[])
        } else {
            codec::cut_frame(frame, room, frame_id, &mut fragment, &mut seal).map(|_| ())
        };
        self.fragment = fragment;
        self.out = out;
        match result {
            Ok(()) => {
                if !frame.is_empty() {
                    self.stats.frames_out += 1;
                    if let Some(p) = self.peers.get_mut(&id) {
                        p.frames_out += 1;
                        p.path.on_frame(now, true);
                    }
                }
                Ok(())
            }
            Err(WireError::Forged) => Err(DropReason::NoSession),
            Err(e) => Err(e.drop_reason()),
        }
    }

    /// Starts a handshake with member `id` unless one is in flight.
    fn start_peer_handshake(&mut self, now: Instant, id: MemberId) {
        let timers = self.config.timers;
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer
            .pending
            .as_ref()
            .is_some_and(|p| now.saturating_duration_since(p.sent_at) < HANDSHAKE_RETRY)
        {
            return;
        }
        if let Some(old) = peer.pending.take() {
            self.index.remove(&old.index);
        }
        let Some(up) = self.uplink.sending(now, &timers) else {
            return;
        };
        let ts = self.clock.tai64n(now);
        let Ok((initiator, msg)) =
            Initiator::start(self.identity.keys(), &peer.public, &self.psk.0, &ts)
        else {
            self.stats.drops.add(DropReason::HandshakeFailed);
            return;
        };
        let index = random_index(&self.index);
        self.index.insert(index, Owner::Peer(id));
        peer.pending = Some(Pending {
            initiator,
            index,
            sent_at: now,
            mac1: [0; 16],
        });
        let Ok(up_counter) = up.next_counter() else {
            return;
        };
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(&codec::header(Kind::PeerInit));
        out.extend_from_slice(&up.remote_index.to_be_bytes());
        out.extend_from_slice(&up_counter.to_be_bytes());
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&msg);
        let mac1 = codec::mac(&self.peer_mac1_key, &[&out[routed::HEADER_LEN..]]);
        out.extend_from_slice(&mac1);
        let len = out.len() + codec::TAG_LEN;
        let tag = up.send_tag(&out[..routed::HEADER_LEN], len);
        out.extend_from_slice(&tag);
        self.stats.datagrams_out += 1;
        self.outbox.push(out, self.relay);
    }

    /// Sends `inner` to member `id` as a routed datagram of `kind`.
    fn send_routed(
        &mut self,
        now: Instant,
        kind: Kind,
        id: MemberId,
        inner: &[u8],
    ) -> Result<(), DropReason> {
        let timers = self.config.timers;
        let up = self
            .uplink
            .sending(now, &timers)
            .ok_or(DropReason::NotRegistered)?;
        let up_counter = up.next_counter().map_err(|e| e.drop_reason())?;
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(&codec::header(kind));
        out.extend_from_slice(&up.remote_index.to_be_bytes());
        out.extend_from_slice(&up_counter.to_be_bytes());
        out.extend_from_slice(&id.0);
        out.extend_from_slice(inner);
        let len = out.len() + codec::TAG_LEN;
        let tag = up.send_tag(&out[..routed::HEADER_LEN], len);
        out.extend_from_slice(&tag);
        self.stats.datagrams_out += 1;
        self.outbox.push(out, self.relay);
        Ok(())
    }

    /// Handles one datagram from `from`. Answers go to `transmit`; frames go
    /// to `deliver` with their offload metadata (possibly only at a later
    /// call or at [`Client::flush`]). Every failure is a counted drop.
    // HOT PATH
    pub fn handle_datagram(
        &mut self,
        now: Instant,
        from: SocketAddr,
        d: &[u8],
        deliver: &mut dyn FnMut(&VnetHdr, &[u8]),
    ) -> ClientEvent {
        self.stats.datagrams_in += 1;
        match self.handle(now, from, d, deliver) {
            Ok(event) => event,
            Err(reason) => {
                self.stats.drops.add(reason);
                ClientEvent::Drop(reason)
            }
        }
    }

    fn handle(
        &mut self,
        now: Instant,
        from: SocketAddr,
        d: &[u8],
        deliver: &mut dyn FnMut(&VnetHdr, &[u8]),
    ) -> Result<ClientEvent, DropReason> {
        let kind = match codec::peek(d) {
            Ok(k) => k,
            Err(WireError::BadVersion(v)) => {
                if v == 1
                    && self
                        .other_version_logged
                        .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(60))
                {
                    self.other_version_logged = Some(now);
                    self.events.push_back(MemberEvent::OtherVersion(v));
                }
                return Err(DropReason::BadVersion);
            }
            Err(e) => return Err(e.drop_reason()),
        };
        if kind.is_direct() {
            if !self.config.direct {
                // Nobody we talk to sends these (we never give endpoints or
                // ping): a stranger's, or one spoofing a victim's address
                // for our Rejoin hint.
                return Err(DropReason::DirectOff);
            }
            return self.direct(now, from, kind, d, deliver);
        }
        if from != self.relay {
            if kind == Kind::Rejoin {
                if !self.config.direct {
                    return Err(DropReason::DirectOff);
                }
                return self.direct_rejoin(now, from, codec::be32(d, rejoin::RECEIVER));
            }
            return Err(DropReason::UnknownSender);
        }
        match kind {
            Kind::UplinkResp => self.uplink_response(now, d),
            Kind::CookieReply => self.cookie_reply(d).map(|()| ClientEvent::Nothing),
            Kind::Rejoin => {
                let index = codec::be32(d, rejoin::RECEIVER);
                let ours = [
                    &self.uplink.current,
                    &self.uplink.previous,
                    &self.uplink.next,
                ]
                .into_iter()
                .flatten()
                .any(|k| k.remote_index == index);
                if !ours {
                    return Err(DropReason::NoSession);
                }
                // Unauthenticated: it only makes us handshake again (once a
                // second at most), and we keep sending meanwhile, so a forged
                // one costs a handshake and nothing else.
                if self
                    .last_rejoin
                    .is_none_or(|t| now.saturating_duration_since(t) >= HANDSHAKE_RETRY)
                {
                    self.last_rejoin = Some(now);
                    self.rejoining = true;
                    self.start_uplink_handshake(now);
                }
                Ok(ClientEvent::Nothing)
            }
            Kind::Control => self.control(now, d),
            Kind::PeerInit | Kind::PeerResp | Kind::Data | Kind::PeerPath => {
                self.routed(now, kind, d, deliver)
            }
            Kind::UplinkInit | Kind::Direct | Kind::DirectPath => Err(DropReason::UnknownKind),
        }
    }

    /// How long an uplink initiation waits for its answer: `register_retry`,
    /// doubled for each unanswered attempt before it, up to 8 times (a relay
    /// under load that answers in more than a second still gets answered
    /// attempts; one that is down costs a datagram every 8 s).
    fn uplink_retry(&self) -> Duration {
        self.config.register_retry * (1 << self.uplink_attempts.saturating_sub(1).min(3))
    }

    fn start_uplink_handshake(&mut self, now: Instant) {
        self.uplink_attempts = self.uplink_attempts.saturating_add(1);
        if let Some(p) = self.uplink_pending.take() {
            self.index.remove(&p.index);
            self.previous_attempt = Some((p.index, p.mac1, p.sent_at));
        }
        let mut payload = self.clock.tai64n(now).to_vec();
        payload.extend_from_slice(&[0; 4]);
        let Ok((initiator, msg)) = Initiator::start(
            self.identity.keys(),
            &self.relay_public,
            self.relay_key.psk(),
            &payload,
        ) else {
            self.stats.drops.add(DropReason::HandshakeFailed);
            return;
        };
        let index = random_index(&self.index);
        self.index.insert(index, Owner::Uplink);
        let out = &mut self.out;
        out.clear();
        out.extend_from_slice(&codec::header(Kind::UplinkInit));
        out.extend_from_slice(&index.to_be_bytes());
        out.extend_from_slice(&self.relay_key.network_id().0);
        out.extend_from_slice(&msg);
        let mac1 = codec::mac(&self.uplink_mac1_key, &[out]);
        out.extend_from_slice(&mac1);
        let mac2 = match self.cookie {
            Some((cookie, at)) if now.saturating_duration_since(at) < COOKIE_LIFE => {
                codec::mac2(&cookie, &[out])
            }
            _ => [0; 16],
        };
        out.extend_from_slice(&mac2);
        debug_assert_eq!(out.len(), uplink_init::LEN);
        self.uplink_pending = Some(Pending {
            initiator,
            index,
            sent_at: now,
            mac1,
        });
        self.last_sent = Some(now);
        self.stats.datagrams_out += 1;
        self.outbox.push(out, self.relay);
    }

    fn uplink_response(&mut self, now: Instant, d: &[u8]) -> Result<ClientEvent, DropReason> {
        let receiver = codec::be32(d, uplink_resp::RECEIVER);
        if self.uplink_pending.as_ref().map(|p| p.index) != Some(receiver) {
            return Err(DropReason::NoSession);
        }
        let pending = self.uplink_pending.take().ok_or(DropReason::NoSession)?;
        let (keys, payload) = match pending.initiator.finish(&d[uplink_resp::NOISE]) {
            Ok(r) => r,
            Err(_) => {
                self.index.remove(&pending.index);
                return Err(DropReason::HandshakeFailed);
            }
        };
        if payload.len() != uplink_resp::PAYLOAD_LEN {
            self.index.remove(&pending.index);
            return Err(DropReason::Malformed);
        }
        let secs = u16::from_be_bytes([payload[0], payload[1]]).max(1);
        self.keepalive = Duration::from_secs(secs.into());
        let kp = Keypair::new(
            &keys,
            pending.index,
            codec::be32(d, uplink_resp::SENDER),
            true,
            now,
        );
        for i in self.uplink.install_initiated(kp) {
            self.index.remove(&i);
        }
        self.last_heard = Some(now);
        self.uplink_attempts = 0;
        self.stats.uplink_handshakes += 1;
        // Confirms the keys at the relay, and asks for the member list.
        self.send_control(now, Control::Keepalive);
        self.ask_members(now, true);
        if self.joined && !std::mem::take(&mut self.rejoining) {
            return Ok(ClientEvent::Nothing);
        }
        self.joined = true;
        self.stats.registrations += 1;
        Ok(ClientEvent::Registered)
    }

    fn cookie_reply(&mut self, d: &[u8]) -> Result<(), DropReason> {
        let receiver = codec::be32(d, cookie_reply::RECEIVER);
        // The answer to our latest initiation, or to the one before: a relay
        // under load may answer later than we try again, and a cookie is
        // bound to our address, not to one initiation.
        let (mac1, sent_at) = self
            .uplink_pending
            .as_ref()
            .map(|p| (p.index, p.mac1, p.sent_at))
            .into_iter()
            .chain(self.previous_attempt)
            .find(|(index, _, _)| *index == receiver)
            .map(|(_, mac1, sent_at)| (mac1, sent_at))
            .ok_or(DropReason::NoSession)?;
        let nonce: [u8; 12] = d[cookie_reply::NONCE]
            .try_into()
            .map_err(|_| DropReason::Malformed)?;
        let sealed = &d[cookie_reply::SEALED];
        let mut cookie = sealed[..16].to_vec();
        let tag = Tag::try_from(&sealed[16..]).map_err(|_| DropReason::Malformed)?;
        self.cookie_aead
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&mac1),
                tag,
                &mut cookie,
                0..,
            )
            .map_err(|_| DropReason::Forged)?;
        let mut c = [0u8; 16];
        c.copy_from_slice(&cookie);
        // Used at the next attempt (HANDSHAKE_RETRY).
        self.cookie = Some((c, sent_at));
        Ok(())
    }

    fn send_control(&mut self, now: Instant, message: Control<'_>) {
        let timers = self.config.timers;
        let Some(kp) = self.uplink.sending(now, &timers) else {
            return;
        };
        self.scratch.clear();
        message.encode(&mut self.scratch);
        match seal_control(kp, &self.scratch, &mut self.out) {
            Ok(()) => {
                self.last_sent = Some(now);
                self.stats.datagrams_out += 1;
                self.outbox.push(&self.out, self.relay);
            }
            Err(e) => self.stats.drops.add(e.drop_reason()),
        }
    }

    /// Asks for the member list from its start (a new fetch), or for the
    /// next page of the fetch under way; asked again after
    /// [`MEMBERS_RETRY`] if the answer is lost.
    fn ask_members(&mut self, now: Instant, restart: bool) {
        if restart || self.fetch.is_none() {
            self.fetch = Some(Fetch {
                generation: None,
                entries: Vec::new(),
                next_from: 0,
                asked_at: now,
            });
        }
        let Some(fetch) = &mut self.fetch else {
            return;
        };
        fetch.asked_at = now;
        let from = fetch.next_from;
        self.send_control(now, Control::GetMembers { from });
    }

    /// The uplink keypair an index names, after `check` accepted the
    /// datagram under it.
    fn uplink_check(
        &mut self,
        index: u32,
        now: Instant,
        check: impl FnOnce(&mut Keypair) -> Result<(), WireError>,
    ) -> Result<(), DropReason> {
        if self.index.get(&index) != Some(&Owner::Uplink) {
            return Err(DropReason::NoSession);
        }
        let timers = self.config.timers;
        let (_, kp) = self.uplink.find(index).ok_or(DropReason::NoSession)?;
        if !kp.usable(now, &timers) {
            return Err(DropReason::NoSession);
        }
        check(kp).map_err(|e| e.drop_reason())?;
        self.last_heard = Some(now);
        Ok(())
    }

    fn control(&mut self, now: Instant, d: &[u8]) -> Result<ClientEvent, DropReason> {
        let index = codec::be32(d, control::RECEIVER);
        let counter = codec::be64(d, control::COUNTER);
        let (head, rest) = d.split_at(control::HEADER_LEN);
        let (ct, tag) = rest.split_at(rest.len() - codec::TAG_LEN);
        let mut plain = std::mem::take(&mut self.scratch);
        plain.clear();
        plain.extend_from_slice(ct);
        let checked = self.uplink_check(index, now, |kp| kp.open(counter, head, &mut plain, tag));
        let result = checked.and_then(|()| {
            let message = Control::parse(&plain).map_err(|e| e.drop_reason())?;
            self.apply_control(now, message)
        });
        self.scratch = plain;
        result.map(|()| ClientEvent::Nothing)
    }

    fn apply_control(&mut self, now: Instant, message: Control<'_>) -> Result<(), DropReason> {
        match message {
            Control::KeepaliveAck {
                keepalive_secs,
                generation,
                observed,
            } => {
                self.keepalive = Duration::from_secs(keepalive_secs.max(1).into());
                if self.observed != Some(observed) {
                    self.observed = Some(observed);
                    self.endpoints_gen += 1;
                }
                if self.generation != Some(generation) && self.fetch.is_none() {
                    self.ask_members(now, true);
                }
                Ok(())
            }
            Control::Members {
                generation,
                total,
                from,
                entries,
            } => {
                let Some(fetch) = &mut self.fetch else {
                    // Not asked for (a late answer to an earlier fetch).
                    return Ok(());
                };
                let page = entries.len() / MEMBER_ENTRY_LEN;
                // A relay (or a thief of its key) can't make us hold, and
                // flood to, more members than a relay serves per network.
                if total as usize > MAX_MEMBERS || fetch.entries.len() + page > MAX_MEMBERS {
                    self.fetch = None;
                    return Err(DropReason::PeerCap);
                }
                if *fetch.generation.get_or_insert(generation) == generation
                    && from < fetch.next_from
                {
                    // A late answer to a page asked for again (its first
                    // answer came): nothing new. Restarting here made
                    // members behind a slow relay restart without end.
                    return Ok(());
                }
                if *fetch.generation.get_or_insert(generation) != generation
                    || from != fetch.next_from
                {
                    // The list changed while we read it: start over.
                    self.ask_members(now, true);
                    return Ok(());
                }
                for e in entries.chunks_exact(MEMBER_ENTRY_LEN) {
                    let id = codec::member_id(e, 0..8);
                    let public: [u8; KEY_LEN] = e[8..].try_into().unwrap_or_default();
                    // The relay can't make us use a key under another id.
                    if MemberId::of(&public) == id {
                        fetch.entries.push((id, public));
                    }
                }
                fetch.next_from = from.saturating_add(page as u32);
                if (fetch.next_from as usize) < total as usize && page > 0 {
                    self.ask_members(now, false);
                    return Ok(());
                }
                if let Some(fetch) = self.fetch.take() {
                    self.generation = fetch.generation;
                    self.apply_members(now, fetch.entries);
                }
                Ok(())
            }
            Control::Keepalive | Control::GetMembers { .. } => Err(DropReason::UnknownKind),
        }
    }

    /// Takes the relay's member list: new members are added, members no
    /// longer listed are forgotten with their keys and MACs. A member we
    /// reach on a direct path gets [`UNLISTED_GRACE`] first: a relay that
    /// just restarted lists the members as they come back, one by one, and
    /// a working path should not break for that.
    fn apply_members(&mut self, now: Instant, entries: Vec<(MemberId, [u8; KEY_LEN])>) {
        let me = self.identity.id();
        let listed: FastMap<MemberId, [u8; KEY_LEN]> =
            entries.into_iter().filter(|(id, _)| *id != me).collect();
        let mut gone = Vec::new();
        for (id, peer) in &mut self.peers {
            if listed.contains_key(id) {
                peer.unlisted_since = None;
            } else if peer.path.direct().is_some() {
                peer.unlisted_since.get_or_insert(now);
            } else {
                gone.push(*id);
            }
        }
        for id in gone {
            self.forget_peer(id);
            self.events.push_back(MemberEvent::PeerLeft(id));
        }
        for (id, public) in listed {
            self.peers.entry(id).or_insert_with(|| Peer {
                public,
                ..Peer::default()
            });
        }
    }

    fn forget_peer(&mut self, id: MemberId) {
        if let Some(mut p) = self.peers.remove(&id) {
            for i in p.keypairs.clear() {
                self.index.remove(&i);
            }
            if let Some(pending) = p.pending.take() {
                self.index.remove(&pending.index);
            }
        }
        self.switch.forget_port(id);
    }

    fn routed(
        &mut self,
        now: Instant,
        kind: Kind,
        d: &[u8],
        deliver: &mut dyn FnMut(&VnetHdr, &[u8]),
    ) -> Result<ClientEvent, DropReason> {
        let len = d.len();
        let index = codec::be32(d, routed::RECEIVER);
        let counter = codec::be64(d, routed::COUNTER);
        let (covered, tag) = (&d[..routed::HEADER_LEN], &d[len - codec::TAG_LEN..]);
        self.uplink_check(index, now, |kp| kp.check_tag(counter, covered, len, tag))?;
        let src = codec::member_id(d, routed::MEMBER);
        if src == self.identity.id() {
            return Err(DropReason::Loop);
        }
        let inner = &d[routed::HEADER_LEN..len - codec::TAG_LEN];
        match kind {
            Kind::PeerInit => self.peer_init(now, src, inner),
            Kind::PeerResp => self.peer_resp(now, src, inner),
            Kind::PeerPath => self.path_message(now, src, None, inner),
            _ => self.data(now, src, inner, deliver),
        }
    }

    /// A datagram straight from another member (Direct or DirectPath): the
    /// receiver index names the member, its keys authenticate it.
    fn direct(
        &mut self,
        now: Instant,
        from: SocketAddr,
        kind: Kind,
        d: &[u8],
        deliver: &mut dyn FnMut(&VnetHdr, &[u8]),
    ) -> Result<ClientEvent, DropReason> {
        let inner = &d[direct::HEADER_LEN..];
        let receiver = codec::be32(inner, data::RECEIVER);
        let Some(&Owner::Peer(src)) = self.index.get(&receiver) else {
            // Keys we no longer have, from a member's direct path (we
            // restarted, or forgot it): a new handshake, as for Data through
            // the relay; once a second at most, since anyone can send this.
            let id = self
                .peers
                .iter()
                .find(|(_, p)| p.path.direct() == Some(from))
                .map(|(id, _)| *id);
            if let Some(id) = id {
                self.hinted_handshake(now, id);
            }
            // And tell the sender, as the relay does: it makes new keys at
            // once rather than when its pings go unanswered. 8 bytes for at
            // least 32; ten a second at most.
            if self
                .direct_rejoins
                .allow(now, Duration::from_secs(1), DIRECT_REJOINS_PER_SEC)
            {
                let mut hint = codec::header(Kind::Rejoin).to_vec();
                hint.extend_from_slice(&receiver.to_be_bytes());
                self.outbox.push(&hint, from);
                self.stats.datagrams_out += 1;
            }
            return Err(DropReason::NoSession);
        };
        match kind {
            Kind::DirectPath => self.path_message(now, src, Some(from), inner),
            _ => self.data(now, src, inner, deliver),
        }
    }

    /// A member's direct path says it has no keys for our index (it
    /// restarted): a new handshake (through the relay, once a second at
    /// most). Taken only from that path's address and for an index of that
    /// member's keys, but unauthenticated: anyone who sees our Direct
    /// datagrams knows both, so the hint does not move the path to the
    /// relay (a stream of them would keep it there). It needn't: the member
    /// that restarted has no keys for frames through the relay either, and
    /// once the new ones are made, the direct path carries them (if it
    /// really died, its pings go unanswered and it falls back).
    fn direct_rejoin(
        &mut self,
        now: Instant,
        from: SocketAddr,
        index: u32,
    ) -> Result<ClientEvent, DropReason> {
        let id = self
            .peers
            .iter()
            .find(|(_, p)| {
                p.path.direct() == Some(from)
                    && [&p.keypairs.current, &p.keypairs.previous, &p.keypairs.next]
                        .into_iter()
                        .flatten()
                        .any(|k| k.remote_index == index)
            })
            .map(|(id, _)| *id)
            .ok_or(DropReason::UnknownSender)?;
        self.hinted_handshake(now, id);
        Ok(ClientEvent::Nothing)
    }

    /// Starts a handshake with member `id` on an unauthenticated hint from
    /// its direct path: once a second at most, however many come (a
    /// handshake that completes leaves none pending, so
    /// [`Client::start_peer_handshake`]'s own limit would let every hint
    /// through).
    fn hinted_handshake(&mut self, now: Instant, id: MemberId) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        if peer
            .hinted
            .is_some_and(|t| now.saturating_duration_since(t) < HANDSHAKE_RETRY)
        {
            return;
        }
        peer.hinted = Some(now);
        self.start_peer_handshake(now, id);
    }

    /// True if `addr` may be a direct path to a member: a unicast address
    /// of our socket's family, not ours, not the relay's, and not reached
    /// through the overlay itself (which would carry the overlay inside
    /// itself).
    fn usable_candidate(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip();
        let bad = addr.port() == 0
            || ip.is_unspecified()
            || ip.is_loopback()
            || ip.is_multicast()
            || addr.is_ipv4() != self.relay.is_ipv4()
            || matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
            || addr == self.relay
            || self.observed == Some(addr)
            || self.local_endpoints.contains(&addr)
            || self
                .overlay_nets
                .iter()
                .any(|&(net, prefix)| in_net(ip, net, prefix));
        !bad
    }

    /// Our endpoints: the address the relay sees, then our own.
    fn endpoints(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = Vec::with_capacity(MAX_ENDPOINTS);
        for a in self.observed.iter().chain(&self.local_endpoints) {
            if !v.contains(a) && v.len() < MAX_ENDPOINTS {
                v.push(*a);
            }
        }
        v
    }

    /// Tells the driver's view of our own addresses (with our socket's
    /// port) and of the networks reached through the overlay device, which
    /// are never used as direct paths.
    pub fn set_local_endpoints(&mut self, endpoints: Vec<SocketAddr>, overlay: Vec<(IpAddr, u8)>) {
        if endpoints != self.local_endpoints {
            self.local_endpoints = endpoints;
            self.endpoints_gen += 1;
        }
        self.overlay_nets = overlay;
    }

    /// Seals a path message for member `id`: through the relay (`to`
    /// None), or directly to `to`.
    fn send_path(
        &mut self,
        now: Instant,
        id: MemberId,
        message: &PathMessage,
        to: Option<SocketAddr>,
    ) -> Result<(), DropReason> {
        let timers = self.config.timers;
        let mut plain = Vec::with_capacity(64);
        message.encode(&mut plain);
        let kp = self
            .peers
            .get_mut(&id)
            .and_then(|p| p.keypairs.sending(now, &timers))
            .ok_or(DropReason::NoSession)?;
        let (kind, up) = match to {
            Some(_) => (Kind::DirectPath, None),
            None => (
                Kind::PeerPath,
                Some(
                    self.uplink
                        .sending(now, &timers)
                        .ok_or(DropReason::NotRegistered)?,
                ),
            ),
        };
        write_member_datagram(&mut self.out, kind, id, up, kp, &plain)
            .map_err(|e| e.drop_reason())?;
        self.stats.datagrams_out += 1;
        self.outbox.push(&self.out, to.unwrap_or(self.relay));
        Ok(())
    }

    /// A path message that opened under `src`'s session, through the relay
    /// (`from` None) or directly from `from`.
    fn path_message(
        &mut self,
        now: Instant,
        src: MemberId,
        from: Option<SocketAddr>,
        inner: &[u8],
    ) -> Result<ClientEvent, DropReason> {
        let mut plain = Vec::with_capacity(inner.len());
        let kind = if from.is_some() {
            Kind::DirectPath
        } else {
            Kind::PeerPath
        };
        self.open_inner(now, src, inner, Some(kind), &mut plain)?;
        let message = PathMessage::parse(&plain).map_err(|e| e.drop_reason())?;
        if !self.config.direct {
            return Err(DropReason::DirectOff);
        }
        match (message, from) {
            // Endpoints come through the relay only (a DirectPath opens
            // under the same associated data: one lifted off the relay leg
            // and sent from elsewhere is refused).
            (PathMessage::Endpoints(addrs), None) => {
                let addrs: Vec<SocketAddr> = addrs
                    .into_iter()
                    .filter(|a| self.usable_candidate(*a))
                    .collect();
                let peer = self.peers.get_mut(&src).ok_or(DropReason::NoSession)?;
                if peer.path.on_endpoints(now, &addrs, self.endpoints_gen) {
                    let ours = PathMessage::Endpoints(self.endpoints());
                    self.send_path(now, src, &ours, None)?;
                }
            }
            (PathMessage::Ping { tx }, Some(from)) => {
                if !self.usable_candidate(from) {
                    return Err(DropReason::Loop);
                }
                let peer = self.peers.get_mut(&src).ok_or(DropReason::NoSession)?;
                if !peer.pongs.allow(now, Duration::from_secs(1), PONGS_PER_SEC) {
                    return Err(DropReason::QueueFull);
                }
                peer.path.on_ping(now, from);
                let pong = PathMessage::Pong { tx, observed: from };
                self.send_path(now, src, &pong, Some(from))?;
            }
            (PathMessage::Pong { tx, .. }, Some(from)) => {
                let peer = self.peers.get_mut(&src).ok_or(DropReason::NoSession)?;
                let change = peer.path.on_pong(now, from, tx);
                self.path_changed(src, change);
            }
            _ => return Err(DropReason::Malformed),
        }
        Ok(ClientEvent::Nothing)
    }

    fn path_changed(&mut self, member: MemberId, change: Option<PathChange>) {
        let Some(change) = change else {
            return;
        };
        self.stats.path_changes += 1;
        self.events.push_back(match change {
            PathChange::Direct { addr, rtt } => MemberEvent::PathDirect { member, addr, rtt },
            PathChange::Relay { idle } => MemberEvent::PathRelay { member, idle },
        });
    }

    fn peer_init(
        &mut self,
        now: Instant,
        src: MemberId,
        inner: &[u8],
    ) -> Result<ClientEvent, DropReason> {
        let mac1 = codec::mac(&self.peer_mac1_key, &[&inner[..peer_init::MAC1.start]]);
        if !constant_time_eq(&mac1, &inner[peer_init::MAC1]) {
            return Err(DropReason::Forged);
        }
        // Each answer costs a Diffie-Hellman: a member gets a few a second.
        if let Some(p) = self.peers.get_mut(&src) {
            if !p
                .inits
                .allow(now, Duration::from_secs(1), PEER_INITS_PER_SEC)
            {
                return Err(DropReason::HandshakeFailed);
            }
        }
        let last = self.peers.get(&src).and_then(|p| p.last_timestamp);
        let mut refusal = DropReason::HandshakeFailed;
        let responded = noise::respond(
            self.identity.keys(),
            &self.psk.0,
            &inner[peer_init::NOISE],
            |payload, remote| {
                if payload.len() != peer_init::PAYLOAD_LEN || MemberId::of(remote) != src {
                    return Err(NoiseError::Forged);
                }
                if last.is_some_and(|l| payload[..] <= l[..]) {
                    refusal = DropReason::Replayed;
                    return Err(NoiseError::Forged);
                }
                Ok(Vec::new())
            },
        )
        .map_err(|_| refusal)?;
        let ts: [u8; 12] = responded.payload[..12].try_into().unwrap_or_default();
        let local = random_index(&self.index);
        let remote_index = codec::be32(inner, peer_init::SENDER);
        let kp = Keypair::new(&responded.keys, local, remote_index, false, now);
        self.index.insert(local, Owner::Peer(src));
        let peer = self.peers.entry(src).or_insert_with(|| Peer {
            public: responded.keys.remote_static,
            ..Peer::default()
        });
        peer.last_timestamp = Some(ts);
        if let Some(old) = peer.keypairs.install_responded(kp) {
            self.index.remove(&old);
        }
        peer.handshakes += 1;
        if peer.handshakes == 1 {
            self.events.push_back(MemberEvent::PeerUp(src));
        }
        self.stats.peer_handshakes += 1;
        let mut answer = Vec::with_capacity(peer_resp::LEN);
        answer.extend_from_slice(&local.to_be_bytes());
        answer.extend_from_slice(&remote_index.to_be_bytes());
        answer.extend_from_slice(&responded.reply);
        if answer.len() != peer_resp::LEN {
            return Err(DropReason::Malformed);
        }
        self.send_routed(now, Kind::PeerResp, src, &answer)?;
        Ok(ClientEvent::Nothing)
    }

    fn peer_resp(
        &mut self,
        now: Instant,
        src: MemberId,
        inner: &[u8],
    ) -> Result<ClientEvent, DropReason> {
        let receiver = codec::be32(inner, peer_resp::RECEIVER);
        if self.index.get(&receiver) != Some(&Owner::Peer(src)) {
            return Err(DropReason::NoSession);
        }
        let peer = self.peers.get_mut(&src).ok_or(DropReason::NoSession)?;
        if peer.pending.as_ref().map(|p| p.index) != Some(receiver) {
            return Err(DropReason::NoSession);
        }
        let pending = peer.pending.take().ok_or(DropReason::NoSession)?;
        let (keys, _) = match pending.initiator.finish(&inner[peer_resp::NOISE]) {
            Ok(r) => r,
            Err(_) => {
                self.index.remove(&receiver);
                return Err(DropReason::HandshakeFailed);
            }
        };
        let kp = Keypair::new(
            &keys,
            receiver,
            codec::be32(inner, peer_resp::SENDER),
            true,
            now,
        );
        let rekey = peer.keypairs.current.is_some();
        for i in peer.keypairs.install_initiated(kp) {
            self.index.remove(&i);
        }
        peer.handshakes += 1;
        if peer.handshakes == 1 {
            self.events.push_back(MemberEvent::PeerUp(src));
        }
        self.stats.peer_handshakes += 1;
        if rekey {
            self.stats.rekeys += 1;
        }
        let queued: Vec<(Instant, Vec<u8>)> = peer.queue.drain(..).collect();
        if queued.is_empty() {
            // Confirms the keys at the responder.
            if let Err(reason) = self.seal_data(now, src, &[]) {
                self.stats.drops.add(reason);
            }
        }
        for (_, frame) in queued {
            if let Err(reason) = self.seal_data(now, src, &frame) {
                self.stats.drops.add(reason);
            }
        }
        Ok(ClientEvent::Nothing)
    }

    fn data(
        &mut self,
        now: Instant,
        src: MemberId,
        inner: &[u8],
        deliver: &mut dyn FnMut(&VnetHdr, &[u8]),
    ) -> Result<ClientEvent, DropReason> {
        let mut plain = std::mem::take(&mut self.scratch);
        let result = match self.open_inner(now, src, inner, None, &mut plain) {
            Ok(()) if plain.is_empty() => Ok(ClientEvent::Nothing),
            Ok(()) => self.frame(now, src, &plain, deliver),
            Err(reason) => Err(reason),
        };
        self.scratch = plain;
        result
    }

    /// Opens the inner part of a Data, Direct, PeerPath or DirectPath
    /// datagram from `src` into `plain` (`path`: the kind of a path
    /// message, under its associated data). The first datagram under a new
    /// keypair confirms it and sends what waited for it.
    fn open_inner(
        &mut self,
        now: Instant,
        src: MemberId,
        inner: &[u8],
        path: Option<Kind>,
        plain: &mut Vec<u8>,
    ) -> Result<(), DropReason> {
        let receiver = codec::be32(inner, data::RECEIVER);
        let counter = codec::be64(inner, data::COUNTER);
        if self.index.get(&receiver) != Some(&Owner::Peer(src)) {
            // Keys we no longer have (we forgot the sender when the relay
            // did, or restarted): a new handshake gives both sides new
            // ones, once a second at most. The relay vouched for `src`.
            if self.peers.contains_key(&src) {
                self.start_peer_handshake(now, src);
            }
            return Err(DropReason::NoSession);
        }
        let timers = self.config.timers;
        let peer = self.peers.get_mut(&src).ok_or(DropReason::NoSession)?;
        let (slot, kp) = peer.keypairs.find(receiver).ok_or(DropReason::NoSession)?;
        if !kp.usable(now, &timers) {
            return Err(DropReason::NoSession);
        }
        let (head, rest) = inner.split_at(data::HEADER_LEN);
        let (ct, tag) = rest.split_at(rest.len() - codec::TAG_LEN);
        plain.clear();
        plain.extend_from_slice(ct);
        let opened = match path {
            Some(kind) => kp.open(counter, &path_aad(kind, head), plain, tag),
            None => kp.open(counter, head, plain, tag),
        };
        let mut queued = Vec::new();
        if opened.is_ok() && slot == Slot::Next {
            if let Some(old) = peer.keypairs.confirm_next() {
                self.index.remove(&old);
            }
            if peer.keypairs.previous.is_some() {
                self.stats.rekeys += 1;
            }
            // Frames queued while we had no keys of our own go now.
            queued.extend(peer.queue.drain(..));
        }
        for (_, frame) in queued {
            if let Err(reason) = self.seal_data(now, src, &frame) {
                self.stats.drops.add(reason);
            }
        }
        opened.map_err(|e| e.drop_reason())
    }

    /// A fragment that opened under `src`'s session: learn its source MAC
    /// (refused if another member owns it), reassemble, deliver.
    fn frame(
        &mut self,
        now: Instant,
        src: MemberId,
        plain: &[u8],
        deliver: &mut dyn FnMut(&VnetHdr, &[u8]),
    ) -> Result<ClientEvent, DropReason> {
        let fragment = Fragment::parse(plain).map_err(|e| e.drop_reason())?;
        if let Err(reason) = self.switch.learn(now, src, fragment.src()) {
            if self.mac_taken_logged.len() >= MAC_TAKEN_LOGGED {
                // Bounded: after this many, each is logged once more.
                self.mac_taken_logged.clear();
            }
            if reason == DropReason::MacTaken && self.mac_taken_logged.insert(fragment.src()) {
                if let Route::Unicast(owner) = self.switch.route(now, src, fragment.src()) {
                    self.events.push_back(MemberEvent::MacTaken {
                        mac: fragment.src(),
                        owner,
                        by: src,
                    });
                }
            }
            return Err(reason);
        }
        if let Some(p) = self.peers.get_mut(&src) {
            p.frames_in += 1;
            p.path.on_frame(now, false);
        }
        let frame = match self.reassembler.push(now, sender_key(src), &fragment) {
            Ok(Some(r)) => r.frame,
            Ok(None) => return Ok(ClientEvent::Nothing),
            Err(e) => return Err(e.drop_reason()),
        };
        self.stats.frames_in += 1;
        let frame = if self.config.clamp_mss && mss::is_syn(frame) {
            self.syn.clear();
            self.syn.extend_from_slice(frame);
            let max_frame = codec::max_frame_in_one_datagram(self.config.max_datagram);
            if mss::clamp_mss(&mut self.syn, max_frame, false).is_some() {
                self.stats.mss_clamped += 1;
            }
            &self.syn[..]
        } else {
            frame
        };
        match &mut self.gro {
            Some(gro) => gro.push(frame, deliver),
            None => deliver(&VnetHdr::NONE, frame),
        }
        Ok(ClientEvent::Frame)
    }

    /// Ends a receive batch: delivers the super-frame the coalescer holds.
    // HOT PATH
    pub fn flush(&mut self, deliver: &mut dyn FnMut(&VnetHdr, &[u8])) {
        if let Some(gro) = &mut self.gro {
            gro.flush(deliver);
            self.stats.offload_frames_in = gro.stats().superframes_out;
        }
    }

    /// Runs timers: uplink handshakes and keepalives, member list requests,
    /// rekeys, expiry of keys, queued frames, reassembly and MACs. Returns
    /// when to call again.
    pub fn handle_timeout(&mut self, now: Instant) {
        let timers = self.config.timers;
        let timed_out = self.reassembler.expire(now) as u64;
        self.stats
            .drops
            .add_n(DropReason::ReassemblyTimeout, timed_out);
        self.switch.expire(now);
        for i in self.uplink.expire(now, &timers) {
            self.index.remove(&i);
        }
        let silent = self
            .last_heard
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        let dead = silent > self.keepalive * self.config.dead_after;
        if self.joined && (dead || self.uplink.current.is_none()) {
            self.joined = false;
        }
        let pending_due = self
            .uplink_pending
            .as_ref()
            .is_none_or(|p| now.saturating_duration_since(p.sent_at) >= self.uplink_retry());
        let wants_rekey = self
            .uplink
            .current
            .as_ref()
            .is_none_or(|k| k.wants_rekey(now, &timers));
        if (!self.joined || wants_rekey || dead) && pending_due {
            self.start_uplink_handshake(now);
        }
        if self.joined {
            let due = self.last_sent.is_none_or(|t| now >= t + self.keepalive);
            if due {
                self.send_control(now, Control::Keepalive);
            }
            if self
                .fetch
                .as_ref()
                .is_some_and(|f| now.saturating_duration_since(f.asked_at) >= MEMBERS_RETRY)
            {
                self.ask_members(now, false);
            }
        }
        let unlisted: Vec<MemberId> = self
            .peers
            .iter()
            .filter(|(_, p)| {
                p.unlisted_since.is_some_and(|t| {
                    p.path.direct().is_none() || now.saturating_duration_since(t) >= UNLISTED_GRACE
                })
            })
            .map(|(id, _)| *id)
            .collect();
        for id in unlisted {
            self.forget_peer(id);
            self.events.push_back(MemberEvent::PeerLeft(id));
        }
        let ids: Vec<MemberId> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            for i in peer.keypairs.expire(now, &timers) {
                self.index.remove(&i);
            }
            let stale = peer
                .queue
                .iter()
                .take_while(|(t, _)| now.saturating_duration_since(*t) >= QUEUE_AGE)
                .count();
            peer.queue.drain(..stale);
            self.stats.drops.add_n(DropReason::NoSession, stale as u64);
            let retry = !peer.queue.is_empty()
                && peer
                    .pending
                    .as_ref()
                    .is_none_or(|p| now.saturating_duration_since(p.sent_at) >= HANDSHAKE_RETRY);
            if peer
                .pending
                .as_ref()
                .is_some_and(|p| now.saturating_duration_since(p.sent_at) >= timers.reject_after)
            {
                if let Some(p) = peer.pending.take() {
                    self.index.remove(&p.index);
                }
            }
            if retry {
                self.start_peer_handshake(now, id);
            }
        }
        self.poll_paths(now);
        let next = self.last_sent.map_or(now, |t| t + self.keepalive);
        self.timeout = next
            .min(now + Duration::from_millis(250))
            .max(now + Duration::from_millis(10));
    }
}

impl Client {
    /// Runs the direct-path timers of every member with a session: sends
    /// endpoints and pings, follows path changes.
    fn poll_paths(&mut self, now: Instant) {
        if !self.config.direct {
            return;
        }
        let generation = (self.observed.is_some() || !self.local_endpoints.is_empty())
            .then_some(self.endpoints_gen);
        let mut budget = self.pings_sent.left(now, PINGS_WINDOW, PINGS_PER_WINDOW) as usize;
        let budget_then = budget;
        let mut actions = std::mem::take(&mut self.path_actions);
        let ids: Vec<MemberId> = self.peers.keys().copied().collect();
        for id in ids {
            let Some(peer) = self.peers.get_mut(&id) else {
                continue;
            };
            actions.clear();
            let change = if peer.keypairs.is_empty() {
                peer.path.reset(now)
            } else {
                peer.path
                    .poll(now, generation, &mut random_tx, &mut budget, &mut actions)
            };
            self.path_changed(id, change);
            for action in &actions {
                // A failure (keys gone, uplink down) is retried by the
                // path's own timers; nothing to count.
                let _ = match *action {
                    PathAction::Endpoints => {
                        let ours = PathMessage::Endpoints(self.endpoints());
                        self.send_path(now, id, &ours, None)
                    }
                    PathAction::Ping { addr, tx } => {
                        self.send_path(now, id, &PathMessage::Ping { tx }, Some(addr))
                    }
                };
            }
        }
        self.path_actions = actions;
        self.pings_sent.add((budget_then - budget) as u32);
    }
}

/// Writes into `out` a datagram of `kind` for member `id` carrying
/// `plain` sealed under `kp`, its member session: a direct kind (`up`
/// None) is the header then the inner part; a routed kind goes through the
/// relay under `up`, the uplink keypair (routed header first, relay tag
/// last). Path messages are bound to their kind ([`path_aad`]).
fn write_member_datagram(
    out: &mut Vec<u8>,
    kind: Kind,
    id: MemberId,
    mut up: Option<&mut Keypair>,
    kp: &mut Keypair,
    plain: &[u8],
) -> Result<(), WireError> {
    let counter = kp.next_counter()?;
    out.clear();
    out.extend_from_slice(&codec::header(kind));
    if let Some(up) = up.as_deref_mut() {
        let up_counter = up.next_counter()?;
        out.extend_from_slice(&up.remote_index.to_be_bytes());
        out.extend_from_slice(&up_counter.to_be_bytes());
        out.extend_from_slice(&id.0);
    }
    let inner = out.len();
    out.extend_from_slice(&kp.remote_index.to_be_bytes());
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(plain);
    let (head, body) = out.split_at_mut(inner + data::HEADER_LEN);
    let tag = match kind {
        Kind::PeerPath | Kind::DirectPath => {
            kp.seal(counter, &path_aad(kind, &head[inner..]), body)
        }
        _ => kp.seal(counter, &head[inner..], body),
    };
    out.extend_from_slice(&tag);
    if let Some(up) = up {
        let len = out.len() + codec::TAG_LEN;
        let relay_tag = up.send_tag(&out[..routed::HEADER_LEN], len);
        out.extend_from_slice(&relay_tag);
    }
    Ok(())
}

/// The associated data of a path message of `kind`: [`codec::path_aad`],
/// then the inner header (receiver index and counter).
fn path_aad(kind: Kind, head: &[u8]) -> [u8; 4 + data::HEADER_LEN] {
    let mut aad = [0u8; 4 + data::HEADER_LEN];
    aad[..4].copy_from_slice(&codec::path_aad(kind));
    aad[4..].copy_from_slice(&head[..data::HEADER_LEN]);
    aad
}

/// True if `ip` is in `net`/`prefix` (same family only).
fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let bits = u32::from(prefix.min(32));
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let bits = u32::from(prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Length of a frame's Ethernet header, with its 802.1Q tag if it has one.
fn l2_len(frame: &[u8]) -> usize {
    if frame.get(12..14) == Some(&[0x81, 0x00]) {
        18
    } else {
        14
    }
}
