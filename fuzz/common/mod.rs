//! What several fuzz targets share: a reader over the fuzz input, a
//! deterministic random source, an in-memory network of a real relay and
//! real members (`World`), helpers that seal what a holder of session keys
//! may send, and a builder for wire-ready TCP segments.
//!
//! Included by each target with `#[path = "../common/mod.rs"] mod common;`,
//! so not every target uses every item.
//!
//! # Determinism
//! The engines draw session indexes, ephemeral keys and cookie secrets from
//! `getrandom`. Fuzz builds route `getrandom` here (`--cfg
//! getrandom_backend="custom"`, which `scripts/fuzz.sh` sets in RUSTFLAGS)
//! to a counter-based generator that every input restarts
//! ([`reset_rng`]): the same input runs the same handshakes with the same
//! keys, so a crash reproduces, and datagrams captured from one run (the
//! seeds, written by `fuzz/examples/seeds.rs`) authenticate in the next.

#![allow(dead_code)]

#[cfg(not(getrandom_backend = "custom"))]
compile_error!(
    "build the fuzz targets with RUSTFLAGS='--cfg getrandom_backend=\"custom\"' \
     (scripts/fuzz.sh does), so that every input runs with the same random draws"
);

use std::{
    cell::Cell,
    collections::VecDeque,
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use lanbridge::core::{
    client::{Client, ClientConfig},
    drop::DropReason,
    frame::{
        checksum,
        ethernet::{self, ethertype},
        ipv4::{self, Ipv4Packet},
        ipv6::Ipv6Packet,
        tcp::{self, TcpPacket},
    },
    offload::VnetHdr,
    proto::{
        codec::{self, routed, Kind},
        session::{Keypair, Timers, WallClock},
        Identity, MemberId, RelayKey,
    },
    relay::{PeerInfo, Relay, RelayAction, RelayConfig},
    wire::NetworkKey,
};

// ---------------------------------------------------------------------------
// Random source

thread_local! {
    static RNG: Cell<u64> = const { Cell::new(0) };
}

/// Restarts the random source: call first thing in every input.
pub fn reset_rng() {
    RNG.with(|r| r.set(0x6c62_7a66_757a_7a21));
}

/// SplitMix64.
fn next_random(state: &Cell<u64>) -> u64 {
    let s = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
    state.set(s);
    let mut z = s;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `getrandom` 0.3's custom backend (see "Determinism" above).
///
/// # Safety
/// `getrandom` calls it with a pointer to `len` writable bytes.
#[no_mangle]
unsafe extern "Rust" fn __getrandom_v03_custom(
    dest: *mut u8,
    len: usize,
) -> Result<(), getrandom::Error> {
    // SAFETY: the caller hands over `len` writable bytes at `dest`.
    let dest = unsafe { std::slice::from_raw_parts_mut(dest, len) };
    RNG.with(|r| {
        for chunk in dest.chunks_mut(8) {
            let x = next_random(r).to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    });
    Ok(())
}

// ---------------------------------------------------------------------------
// The start of each target, from its knobs byte (the seed generator builds
// the same worlds, so that what it captures authenticates in the targets)

/// Session timers for "short" knobs: a rekey every 20 s, keys refused
/// after 40 s, so that a few rounds of both fit an input.
pub fn short_timers() -> Timers {
    Timers {
        rekey_after: Duration::from_secs(20),
        reject_after: Duration::from_secs(40),
    }
}

/// `max_datagram` of member 0 in the client target, by knobs bits 2-3.
pub const CLIENT_OUR_MAX_DATAGRAMS: [usize; 4] = [576, 1400, 9000, 65000];
/// `max_datagram` of the other members there, by knobs bits 4-5.
pub const CLIENT_THEIR_MAX_DATAGRAMS: [usize; 4] = [100, 300, 1400, 9000];

/// The client target's world (see fuzz_targets/client.rs for the knobs):
/// three members of network A, joined, member 0 with an inbox.
pub fn client_world(knobs: u8) -> World {
    reset_rng();
    let timers = if knobs & 0x40 != 0 { short_timers() } else { Timers::default() };
    let them = ClientConfig {
        max_datagram: CLIENT_THEIR_MAX_DATAGRAMS[usize::from((knobs >> 4) & 3)],
        clamp_mss: knobs & 2 != 0,
        timers,
        ..ClientConfig::default()
    };
    let relay = RelayConfig {
        timers,
        ..RelayConfig::default()
    };
    let us = ClientConfig {
        max_datagram: CLIENT_OUR_MAX_DATAGRAMS[usize::from((knobs >> 2) & 3)],
        offload: knobs & 1 != 0,
        ..them.clone()
    };
    let members = [(0, us), (0, them.clone())];
    let mut w = World::standard(relay, &members, knobs & 0x80 != 0);
    // Member 2 joins when an input wants it (`join_late`): one handshake
    // less for every input that does not.
    let i = w.add_member(0, them);
    w.members[i].alive = false;
    w.tap = Some(0);
    w.flow_inbox = true;
    w
}

/// The relay target's members, by knobs bits 0-1.
pub fn relay_networks(knobs: u8) -> &'static [usize] {
    match knobs & 3 {
        0 => &[0],
        1 => &[0, 0],
        2 => &[0, 0, 1],
        _ => &[0, 1],
    }
}

/// The relay target's world (see fuzz_targets/relay.rs for the knobs), and
/// the config of members that join later.
pub fn relay_world(knobs: u8) -> (World, ClientConfig) {
    reset_rng();
    let timers = if knobs & 0x10 != 0 { short_timers() } else { Timers::default() };
    let relay = RelayConfig {
        keepalive: Duration::from_secs(5),
        peer_timeout: Duration::from_secs(if knobs & 0x40 != 0 { 5 } else { 20 }),
        max_peers: relay_max_peers(knobs),
        handshakes_per_sec: if knobs & 8 != 0 { 1 } else { 200 },
        refuse: if knobs & 0x20 != 0 {
            vec![identity(7).keys().public]
        } else {
            Vec::new()
        },
        timers,
    };
    let client = ClientConfig {
        timers,
        ..ClientConfig::default()
    };
    let members: Vec<(usize, ClientConfig)> =
        relay_networks(knobs).iter().map(|&n| (n, client.clone())).collect();
    let mut w = World::standard(relay, &members, knobs & 0x80 != 0);
    w.track_peers = true;
    (w, client)
}

/// The relay target's member cap, by knobs bit 2.
pub fn relay_max_peers(knobs: u8) -> usize {
    if knobs & 4 != 0 {
        2
    } else {
        1024
    }
}

/// The handshake target's world (see fuzz_targets/handshake.rs for the
/// knobs): two members of network A, member 0 holding what it sends.
pub fn handshake_world(knobs: u8) -> World {
    reset_rng();
    let relay = RelayConfig {
        max_peers: if knobs & 4 != 0 { 2 } else { 1024 },
        handshakes_per_sec: [200, 1, 0, 200][usize::from(knobs & 3)],
        refuse: if knobs & 8 != 0 {
            vec![identity(5).keys().public]
        } else {
            Vec::new()
        },
        ..RelayConfig::default()
    };
    let config = ClientConfig::default();
    let mut w = if knobs & 0x20 == 0 {
        World::standard(relay, &[(0, config.clone()), (0, config)], knobs & 0x10 != 0)
    } else {
        let mut w = World::new(relay);
        w.add_member(0, config.clone());
        w.add_member(0, config);
        w.join(1);
        w
    };
    w.tap = Some(0);
    w.hold = true;
    if knobs & 0x20 != 0 {
        w.poll_member(0);
    }
    w.relay_log.clear();
    w.delivered.clear();
    w
}

// ---------------------------------------------------------------------------
// Keys, identities, addresses

/// The network key of network A (every member here is in A unless said).
pub const KEY_A: [u8; 32] = [0x11; 32];
/// A second network: nothing sealed in it opens in A.
pub const KEY_B: [u8; 32] = [0x22; 32];

/// The network key of network `net` (0 = A, 1 = B).
pub fn network_key(net: usize) -> NetworkKey {
    NetworkKey::from_bytes(if net == 0 { KEY_A } else { KEY_B })
}

/// The relay key of network `net`.
pub fn relay_key(net: usize) -> RelayKey {
    RelayKey::derive(&network_key(net))
}

/// The member PSK of network `net`: `derive_key("lanbridge v2 member
/// psk", network key)` (docs/design-v2.md), the Noise PSK of member
/// handshakes, which `MemberPsk` keeps to the crate.
pub fn member_psk(net: usize) -> [u8; 32] {
    blake3::derive_key("lanbridge v2 member psk", &network_key(net).to_bytes())
}

/// The identity of member number `n` (a fixed private key per number).
pub fn identity(n: u8) -> Identity {
    Identity::from_private([0x40 ^ n; 32])
}

/// What every member's wall clock reads at the start of an input.
pub const WALL: Duration = Duration::from_secs(1_800_000_000);

/// The relay's address.
pub fn relay_addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 7171))
}

/// Addresses members send from: member `i` starts at `addrs()[i]`; the
/// others are an address behind the same NAT and an IPv6 one.
pub fn addrs() -> [SocketAddr; 6] {
    [
        SocketAddr::from(([198, 51, 100, 1], 4000)),
        SocketAddr::from(([198, 51, 100, 2], 4000)),
        SocketAddr::from(([198, 51, 100, 3], 4000)),
        SocketAddr::from(([198, 51, 100, 4], 4000)),
        SocketAddr::from(([198, 51, 100, 1], 4001)),
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 4000)),
    ]
}

/// Member `i`'s own MAC.
pub fn member_mac(i: usize) -> [u8; 6] {
    [2, 0, 0, 0, 0, 0x10 + i as u8]
}

/// A small choice of MACs: broadcast, multicast, zero, members' MACs, a
/// MAC nobody owns.
pub fn mac_choice(i: u8) -> [u8; 6] {
    match i & 7 {
        0 => [0xff; 6],
        1 => [0x01, 0x00, 0x5e, 0, 0, 1],
        2 => [0; 6],
        3 => [2, 0, 0, 0, 0, 0x99],
        n => member_mac(usize::from(n - 4)),
    }
}

/// The broadcast frame member `i` greets the others with.
pub fn greeting(i: usize) -> Vec<u8> {
    eth_frame([0xff; 6], member_mac(i), 0x88b5, b"hello, members")
}

/// An Ethernet frame: `dst`, `src`, an EtherType, `payload`.
pub fn eth_frame(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + payload.len());
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

// ---------------------------------------------------------------------------
// What a key holder can send

/// Seals `plain` as a Control datagram under `kp` (what the other end of
/// that uplink sends: the relay to a member, or a member to the relay).
pub fn seal_control(kp: &mut Keypair, plain: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    lanbridge::core::relay::seal_control(kp, plain, &mut out).ok()?;
    Some(out)
}

/// A routed datagram of `kind` under uplink keypair `kp`: `member` in the
/// member field (the destination from a member, the source from the
/// relay), `inner` as it is, and the relay tag.
pub fn seal_routed(kp: &mut Keypair, kind: Kind, member: MemberId, inner: &[u8]) -> Option<Vec<u8>> {
    let counter = kp.next_counter().ok()?;
    let mut out = Vec::with_capacity(routed::OVERHEAD + inner.len());
    out.extend_from_slice(&codec::header(kind));
    out.extend_from_slice(&kp.remote_index.to_be_bytes());
    out.extend_from_slice(&counter.to_be_bytes());
    out.extend_from_slice(&member.0);
    out.extend_from_slice(inner);
    let len = out.len() + codec::TAG_LEN;
    let tag = kp.send_tag(&out[..routed::HEADER_LEN], len);
    out.extend_from_slice(&tag);
    Some(out)
}

/// The inner part of a Data datagram: `plain` sealed under member session
/// keypair `kp` (empty: a keepalive).
pub fn seal_data_inner(kp: &mut Keypair, plain: &[u8]) -> Option<Vec<u8>> {
    let counter = kp.next_counter().ok()?;
    let mut inner = Vec::with_capacity(codec::data::HEADER_LEN + plain.len() + codec::TAG_LEN);
    inner.extend_from_slice(&kp.remote_index.to_be_bytes());
    inner.extend_from_slice(&counter.to_be_bytes());
    inner.extend_from_slice(plain);
    let (head, body) = inner.split_at_mut(codec::data::HEADER_LEN);
    let tag = kp.seal(counter, head, body);
    inner.extend_from_slice(&tag);
    Some(inner)
}

// ---------------------------------------------------------------------------
// The in-memory network

/// One member: a real `Client` and where it sends from.
pub struct Member {
    pub client: Client,
    /// Its number in `World::members`, also its identity's.
    pub n: u8,
    pub id: MemberId,
    pub net: usize,
    pub addr: SocketAddr,
    /// Polled when time passes; a member that is not falls silent.
    pub alive: bool,
}

/// Who a datagram in flight goes to.
#[derive(Clone, Debug)]
pub enum Hop {
    /// To the relay, from this address.
    ToRelay(SocketAddr),
    /// To member `i`, from the relay.
    ToMember(usize),
}

/// A relay action, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Forward(SocketAddr, Vec<u8>),
    Reply(Vec<u8>),
    Drop(DropReason),
}

/// `action`, owned.
pub fn owned(action: RelayAction<'_>) -> Action {
    match action {
        RelayAction::Forward(to, bytes) => Action::Forward(to, bytes.to_vec()),
        RelayAction::Reply(bytes) => Action::Reply(bytes.to_vec()),
        RelayAction::Drop(reason) => Action::Drop(reason),
    }
}

/// What a stranger's datagram meets: a relay of network A with no member,
/// and member 0 of network A that has just sent its initiation (returned)
/// and waits for the answer. Restarts the random source first, so the
/// initiation is the same in every run: the seed generator answers it.
pub fn stranger_engines(now: Instant) -> (Relay, Client, Vec<u8>) {
    reset_rng();
    let relay = Relay::new(RelayConfig::default(), vec![relay_key(0)]);
    let mut client = Client::new(
        ClientConfig::default(),
        &network_key(0),
        identity(0),
        relay_addr(),
        now,
        WallClock::new(now, WALL),
    );
    client.handle_timeout(now);
    let init = transmits(&mut client).into_iter().next().unwrap_or_default();
    (relay, client, init)
}

/// One datagram the relay handled, for the checks of a target.
#[derive(Clone, Debug)]
pub struct RelayRecord {
    pub from: SocketAddr,
    pub datagram: Vec<u8>,
    pub action: Action,
    /// The relay's members before and after (with `World::track_peers`).
    pub before: Vec<PeerInfo>,
    pub after: Vec<PeerInfo>,
}

/// A relay and members over a lossless in-memory network. Datagrams for
/// the member under test (`tap`) wait in `inbox` for the target to deliver
/// them; everything else is delivered at once by [`World::pump`].
pub struct World {
    pub start: Instant,
    pub now: Instant,
    pub relay: Relay,
    pub members: Vec<Member>,
    pub tap: Option<usize>,
    pub inbox: VecDeque<Vec<u8>>,
    /// With `hold`, what the member under test sends waits here for the
    /// target to pass it on (`World::release`) or not.
    pub hold: bool,
    pub outbox: VecDeque<Vec<u8>>,
    /// Frames members delivered: (member, header, frame). Targets drain it.
    pub delivered: Vec<(usize, VnetHdr, Vec<u8>)>,
    /// Every datagram the relay handled since the target last cleared it.
    pub relay_log: Vec<RelayRecord>,
    /// With `capture`, every datagram that crossed the network: (hop, bytes).
    pub capture: Option<Vec<(Hop, Vec<u8>)>>,
    /// Record the relay's members around every datagram in `relay_log`.
    pub track_peers: bool,
    /// While time passes (`advance`), the inbox is delivered at every step:
    /// the network works while nobody looks.
    pub flow_inbox: bool,
    transit: VecDeque<(Hop, Vec<u8>)>,
}

/// Datagrams one pump may move: far above what any exchange here needs, so
/// a loop between engines shows as a bound hit, not a hang.
const MAX_PUMP: usize = 4096;

impl World {
    /// A relay serving networks A and B, with `config`, and no members.
    pub fn new(config: RelayConfig) -> World {
        let start = Instant::now();
        World {
            start,
            now: start,
            relay: Relay::new(config, vec![relay_key(0), relay_key(1)]),
            members: Vec::new(),
            tap: None,
            inbox: VecDeque::new(),
            hold: false,
            outbox: VecDeque::new(),
            delivered: Vec::new(),
            relay_log: Vec::new(),
            capture: None,
            track_peers: false,
            flow_inbox: false,
            transit: VecDeque::new(),
        }
    }

    /// Adds member number `members.len()` of network `net`, not joined yet.
    pub fn add_member(&mut self, net: usize, config: ClientConfig) -> usize {
        let i = self.members.len();
        let n = i as u8;
        let identity = identity(n);
        let id = identity.id();
        let client = Client::new(
            config,
            &network_key(net),
            identity,
            relay_addr(),
            self.now,
            WallClock::new(self.start, WALL),
        );
        self.members.push(Member {
            client,
            n,
            id,
            net,
            addr: addrs()[i % addrs().len()],
            alive: true,
        });
        i
    }

    /// Queues a datagram from `from` for the relay.
    pub fn to_relay(&mut self, from: SocketAddr, d: &[u8]) {
        self.transit.push_back((Hop::ToRelay(from), d.to_vec()));
    }

    /// Queues datagrams member `i` sent.
    fn from_member(&mut self, i: usize, out: Vec<Vec<u8>>) {
        let from = self.members[i].addr;
        for d in out {
            if self.hold && self.tap == Some(i) {
                self.outbox.push_back(d);
            } else {
                self.transit.push_back((Hop::ToRelay(from), d));
            }
        }
    }

    /// Passes on what the member under test sent, and pumps.
    pub fn release(&mut self) {
        if let Some(i) = self.tap {
            let from = self.members[i].addr;
            for d in std::mem::take(&mut self.outbox) {
                self.transit.push_back((Hop::ToRelay(from), d));
            }
        }
        self.pump();
    }

    /// Polls member `i` (its timers), queueing what it sends.
    pub fn poll_member(&mut self, i: usize) {
        let now = self.now;
        self.members[i].client.handle_timeout(now);
        let out = transmits(&mut self.members[i].client);
        self.from_member(i, out);
    }

    /// Member `i` reads `frame` from its device.
    pub fn member_frame(&mut self, i: usize, hdr: &VnetHdr, frame: &mut [u8], mtu: usize) {
        let now = self.now;
        self.members[i].client.handle_frame(now, hdr, frame, mtu);
        let out = transmits(&mut self.members[i].client);
        self.from_member(i, out);
    }

    /// Hands `d` to member `i` as if from `from`; queues its answers and
    /// records its frames. Returns the client's verdict.
    pub fn deliver(
        &mut self,
        i: usize,
        from: SocketAddr,
        d: &[u8],
    ) -> lanbridge::core::client::ClientEvent {
        let now = self.now;
        let delivered = &mut self.delivered;
        let event = self.members[i].client.handle_datagram(now, from, d, &mut |h, f| {
            delivered.push((i, *h, f.to_vec()))
        });
        let out = transmits(&mut self.members[i].client);
        self.from_member(i, out);
        event
    }

    /// Ends member `i`'s receive batch (the coalescer's super-frame).
    pub fn flush(&mut self, i: usize) {
        let delivered = &mut self.delivered;
        self.members[i]
            .client
            .flush(&mut |h, f| delivered.push((i, *h, f.to_vec())));
    }

    /// The members at `addr`.
    fn at(&self, addr: SocketAddr) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].addr == addr)
            .collect()
    }

    fn to_member(&mut self, i: usize, d: Vec<u8>) {
        if self.tap == Some(i) {
            self.inbox.push_back(d);
        } else {
            self.transit.push_back((Hop::ToMember(i), d));
        }
    }

    /// The relay handles `d` from `from`; its answer is queued for the
    /// members at the address it goes to. Returns what it did.
    pub fn relay_step(&mut self, from: SocketAddr, d: &[u8]) -> Action {
        let before = if self.track_peers { self.relay.peers(self.now) } else { Vec::new() };
        let action = owned(self.relay.handle_datagram(self.now, from, d));
        let after = if self.track_peers { self.relay.peers(self.now) } else { Vec::new() };
        let (to, bytes) = match &action {
            Action::Forward(to, b) => (*to, b.clone()),
            Action::Reply(b) => (from, b.clone()),
            Action::Drop(_) => (from, Vec::new()),
        };
        if !bytes.is_empty() {
            // Behind one address (a NAT), one socket gets it: the first.
            if let Some(&i) = self.at(to).first() {
                self.to_member(i, bytes);
            }
        }
        self.relay_pushes();
        while self.relay.poll_event().is_some() {}
        self.relay_log.push(RelayRecord {
            from,
            datagram: d.to_vec(),
            action: action.clone(),
            before,
            after,
        });
        action
    }

    /// Queues what the relay sends of its own accord (member list changes).
    fn relay_pushes(&mut self) {
        while let Some((to, bytes)) = self.relay.poll_transmit() {
            if let Some(&i) = self.at(to).first() {
                self.to_member(i, bytes);
            }
        }
    }

    /// Moves datagrams until none is in flight (or [`MAX_PUMP`] moved).
    pub fn pump(&mut self) {
        let mut moved = 0;
        while let Some((hop, d)) = self.transit.pop_front() {
            moved += 1;
            if moved > MAX_PUMP {
                self.transit.clear();
                break;
            }
            if let Some(c) = &mut self.capture {
                c.push((hop.clone(), d.clone()));
            }
            match hop {
                Hop::ToRelay(from) => {
                    self.relay_step(from, &d);
                }
                Hop::ToMember(i) => {
                    self.deliver(i, relay_addr(), &d);
                }
            }
        }
        for m in &mut self.members {
            while m.client.poll_event().is_some() {}
        }
    }

    /// Lets `dt` pass in steps of at most a second, polling the live
    /// members and expiring the relay's state at each, pumping between.
    pub fn advance(&mut self, dt: Duration) {
        let end = self.now + dt;
        loop {
            let step = end.saturating_duration_since(self.now).min(Duration::from_secs(1));
            self.now += step;
            if let (true, Some(i)) = (self.flow_inbox, self.tap) {
                while let Some(d) = self.inbox.pop_front() {
                    self.deliver(i, relay_addr(), &d);
                    self.pump();
                }
            }
            for i in 0..self.members.len() {
                if self.members[i].alive {
                    self.poll_member(i);
                }
            }
            self.relay.handle_timeout(self.now);
            self.relay_pushes();
            while self.relay.poll_event().is_some() {}
            self.pump();
            if self.now >= end {
                break;
            }
        }
    }

    /// Member `i` joins (its first poll sends the initiation).
    pub fn join(&mut self, i: usize) {
        self.poll_member(i);
        self.pump();
    }

    /// Member `i`, added silent, joins now if it has not; the others learn
    /// of it at their next keepalive, as they would.
    pub fn join_late(&mut self, i: usize) {
        if !self.members[i].alive {
            self.members[i].alive = true;
            self.join(i);
        }
    }

    /// Member `i` floods a broadcast frame from its MAC, which makes it
    /// shake hands with every member it knows; pumped to the end.
    pub fn greet(&mut self, i: usize) {
        let mut f = greeting(i);
        self.member_frame(i, &VnetHdr::NONE, &mut f, 1500);
        self.pump();
    }

    /// The usual start: a member per entry of `members` (its network and
    /// config), all joined, every member list current, members 0 and 1
    /// with a session if `greet` (member 0 greets). No tap.
    pub fn standard(relay: RelayConfig, members: &[(usize, ClientConfig)], greet: bool) -> World {
        let mut w = World::new(relay);
        for (net, config) in members {
            w.add_member(*net, config.clone());
        }
        // Every initiation reaches the relay before any member asks for the
        // member list: every list is whole at once.
        for i in 0..w.members.len() {
            w.poll_member(i);
        }
        w.pump();
        if greet {
            w.greet(0);
        }
        w.delivered.clear();
        w.relay_log.clear();
        w
    }
}
/// Reads the fuzz input front to back. Every getter returns `None` once the
/// input is used up, so a target stops at the first incomplete record.
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input(data)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// Little-endian.
    pub fn u16(&mut self) -> Option<u16> {
        let (b, rest) = self.0.split_first_chunk::<2>()?;
        self.0 = rest;
        Some(u16::from_le_bytes(*b))
    }

    /// Up to `n` bytes: fewer if the input ends first.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (b, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        b
    }

    /// A blob: a little-endian u16 length, then that many bytes (fewer if
    /// the input ends first).
    pub fn blob(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        Some(self.bytes(usize::from(n)))
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// One TCP flow's fixed fields, for [`tcp_segment`].
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub v6: bool,
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// The last byte of both IP addresses and the source port.
    pub id: u8,
}

/// A wire-ready TCP segment of `flow`: untagged Ethernet, IPv4 (IHL 5, DF)
/// or IPv6, a 20-byte TCP header with `flags`, `payload`, every checksum
/// complete (the TCP one wrong on purpose if `bad_csum`).
pub fn tcp_segment(flow: Flow, seq: u32, flags: u8, payload: &[u8], bad_csum: bool) -> Vec<u8> {
    tcp_segment_with(flow, seq, flags, &[], payload, bad_csum)
}

/// [`tcp_segment`] with TCP `options` (a multiple of 4 bytes).
pub fn tcp_segment_with(
    flow: Flow,
    seq: u32,
    flags: u8,
    options: &[u8],
    payload: &[u8],
    bad_csum: bool,
) -> Vec<u8> {
    let l4_len = tcp::field::MIN_HEADER_LEN + options.len() + payload.len();
    let mut f = vec![0u8; ethernet::field::HEADER_LEN];
    ethernet::emit(
        &mut f,
        lanbridge::core::mac::MacAddr(flow.dst),
        lanbridge::core::mac::MacAddr(flow.src),
        if flow.v6 {
            ethertype::IPV6
        } else {
            ethertype::IPV4
        },
    );
    let l3 = f.len();
    let pseudo = if flow.v6 {
        let src = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(flow.id));
        let dst = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100 + u16::from(flow.id));
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[ipv4::protocol::TCP, 64]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        checksum::pseudo_header_v6(&src, &dst, ipv4::protocol::TCP, l4_len as u32)
    } else {
        let src = Ipv4Addr::new(10, 0, 0, flow.id);
        let dst = Ipv4Addr::new(10, 0, 1, flow.id);
        let total = (20 + l4_len) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0x40, 0, 64, ipv4::protocol::TCP, 0, 0]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        Ipv4Packet::new_unchecked(&mut f[l3..]).fill_checksum();
        checksum::pseudo_header_v4(src, dst, ipv4::protocol::TCP, l4_len as u16)
    };
    let l4 = f.len();
    f.extend_from_slice(&(40000 + u16::from(flow.id)).to_be_bytes());
    f.extend_from_slice(&22u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&7u32.to_be_bytes());
    let offset = ((tcp::field::MIN_HEADER_LEN + options.len()) / 4) as u8;
    f.extend_from_slice(&[offset << 4, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(options);
    f.extend_from_slice(payload);
    let mut tcp = TcpPacket::new_unchecked(&mut f[l4..]);
    tcp.fill_checksum_with_pseudo(pseudo);
    if bad_csum {
        let c = tcp.checksum();
        tcp.set_checksum(c ^ 0x0101);
    }
    f
}

/// TCP payload bytes in an untagged IPv4 (not a fragment) or IPv6 (TCP
/// right after the fixed header) frame, as its IP length fields count them;
/// 0 for anything else.
pub fn tcp_payload_len(frame: &[u8]) -> usize {
    let tcp = |l4: &[u8]| TcpPacket::new_checked(l4).map_or(0, |t| t.payload().len());
    let Some(l3) = frame.get(ethernet::field::HEADER_LEN..) else {
        return 0;
    };
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ethertype::IPV4 => match Ipv4Packet::new_checked(l3) {
            Ok(ip)
                if ip.protocol() == ipv4::protocol::TCP
                    && ip.frag_offset() == 0
                    && !ip.more_frags() =>
            {
                tcp(ip.payload())
            }
            _ => 0,
        },
        ethertype::IPV6 => match Ipv6Packet::new_checked(l3) {
            Ok(ip) if ip.next_header() == ipv4::protocol::TCP => tcp(ip.payload()),
            _ => 0,
        },
        _ => 0,
    }
}

/// Everything `client` has to send, in order.
pub fn transmits(client: &mut Client) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| client.poll_transmit().map(|t| t.contents.to_vec())).collect()
}
