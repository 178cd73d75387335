//! A relay, `core::relay::Relay::handle_datagram`, with members that joined
//! it for real, fed datagrams from any address: the members' own traffic
//! (frames, handshakes, keepalives, member lists, from their address or
//! another), what a member may send under its uplink (any control message,
//! any routed datagram to any member id, of either network), made-up
//! initiations (mac1 made right over the fuzz bytes), new members joining
//! (a refused key, past the member cap, under load with cookies), members
//! restarting, falling silent and coming back, replays, flipped bits and
//! junk, with time passing (`expire`).
//!
//! The network is real and in memory (fuzz/common/mod.rs, `World`): the
//! relay serves networks A and B, the members are `Client`s, and every
//! input starts from the same handshakes (the random source restarts).
//!
//! Input: one byte of knobs (bits 0-1 who has joined: one member of A,
//! two, two and one of B, or one of each; bit 2 at most 2 members a
//! network; bit 3 cookies needed past one handshake a second; bit 4 short
//! session timers, `common::short_timers`; bit 5 member 7's key refused;
//! bit 6 members forgotten after 5 s of silence, not 20; bit 7 members 0
//! and 1 start with a session), then records, each an op byte whose low 4 bits say what
//! follows; bits 4-6 pick a member `m` (modulo how many there are) or an
//! address (of 8: the members' first six, two strangers):
//! * 0 **raw**: a blob (u16 LE length, bytes) from the address;
//! * 1 **frame**: a byte (bits 0-2 destination MAC, bits 3-4 source MAC)
//!   and a byte of payload length (times 8): member `m` sends the frame;
//! * 2 **move**: member `m` sends from the address of the next byte from
//!   now on (another member's, a stranger's, its own);
//! * 3 **replay**: a byte (which datagram the relay had) and an address
//!   byte: that datagram again from there;
//! * 4 **mutate**: the same and a u16 LE (bits 0-2 the bit, the rest the
//!   byte): that datagram with the bit flipped;
//! * 5 **control**: a byte (Keepalive, GetMembers from a u16, a relay-only
//!   message, or a blob as it is) sealed under member `m`'s uplink;
//! * 6 **routed**: a byte (bits 0-1 kind PeerInit, PeerResp, Data; bits
//!   2-4 the destination: a member by number, itself, one of no network)
//!   and a blob: the inner part (cut or padded for handshakes), tagged
//!   under member `m`'s uplink;
//! * 7 **time**: op bits 4-7 pick how long passes (100 ms to 60 s), every
//!   live member polled each second, `expire` too (capped in all);
//! * 8 **join**: member number 3 plus op bits 4-6 (network B if bit 7)
//!   joins, if that is below 8 (the members numbered below it that are
//!   missing are added, silent);
//! * 9 **initiation**: a byte (bits 0-1 network id: A, B, unknown; bit 2
//!   mac1 left as it is) and a blob: an UplinkInit of those bytes, from
//!   the address of the op;
//! * 10 **silence**: member `m` stops polling (op bit 7: starts again);
//! * 11 **restart**: member `m` drops its uplink and joins again.
//!
//! Checked besides "no panic", for every datagram the relay handles:
//! * a `Forward` follows a routed datagram (PeerInit, PeerResp, Data) of the
//!   same length, from a member at the datagram's source address, to the
//!   address of the other member of the same network the datagram named,
//!   never back to its source, with the sender's id in the member field;
//! * a `Reply` to an initiation is an UplinkResp or CookieReply, shorter;
//!   to anything else either a Rejoin (8 bytes, naming the datagram's
//!   index) or, to a Control datagram of a member at that address, a
//!   Control datagram;
//! * a datagram the relay had before, replayed or with a bit flipped, from
//!   any address, changes no member (its address, datagram count,
//!   handshakes), unless it is an initiation (one the relay never took,
//!   e.g. under load, is taken once, as in WireGuard). (Raw blobs are not
//!   held to this: the run is deterministic, so the corpus may carry
//!   genuine datagrams the relay has not seen, which it rightly takes.)
//! * no network holds more members than the cap.
//!
//! Run from the repository's top level: `scripts/fuzz.sh relay` (which
//! sets the RUSTFLAGS of fuzz/common/mod.rs), or with them set
//! `cargo +nightly fuzz run relay fuzz/corpus/relay fuzz/seeds/relay -- -max_total_time=120`.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::{collections::VecDeque, net::SocketAddr, time::Duration};

use common::{Action, Input, RelayRecord, World};
use lanbridge::core::{
    client::ClientConfig,
    offload::VnetHdr,
    proto::{
        codec::{self, peer_init, peer_resp, rejoin, routed, uplink_init, Control, Kind},
        MemberId,
    },
    relay::PeerInfo,
};
use libfuzzer_sys::fuzz_target;

const STEPS: [u64; 16] = [
    100, 250, 500, 1000, 1000, 2000, 3000, 5000, 5000, 10000, 10000, 20000, 30000, 30000, 60000,
    60000,
];
/// How far time may run in one input (see the client target).
const MAX_ELAPSED: Duration = Duration::from_secs(200);
const MAX_ELAPSED_SHORT: Duration = Duration::from_secs(70);
const HISTORY: usize = 64;
const MAX_MEMBERS: usize = 8;

fn address(i: u8) -> SocketAddr {
    match usize::from(i) % 8 {
        6 => SocketAddr::from(([203, 0, 113, 9], 5000)),
        7 => SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99], 5000)),
        n => common::addrs()[n],
    }
}

/// What a datagram may change: who is where, how much it sent, its
/// handshakes.
fn members(peers: &[PeerInfo]) -> Vec<(u64, MemberId, SocketAddr, u64, u64)> {
    peers
        .iter()
        .map(|p| {
            (
                u64::from_be_bytes(p.network.0),
                p.member,
                p.addr,
                p.rx,
                p.handshakes,
            )
        })
        .collect()
}

struct Harness {
    w: World,
    max_peers: usize,
    history: VecDeque<Vec<u8>>,
    elapsed: Duration,
    max_elapsed: Duration,
    client: ClientConfig,
}

impl Harness {
    fn check(&self, r: &RelayRecord, replayed: bool) {
        let d = &r.datagram;
        let kind = codec::peek(d).ok();
        match &r.action {
            Action::Forward(to, out) => {
                let kind = kind.expect("forwarded a datagram that fails peek");
                assert!(kind.is_routed(), "forwarded a {kind:?}");
                assert_ne!(*to, r.from, "forwarded back to its source");
                assert_eq!(out.len(), d.len());
                assert_eq!(out[..4], d[..4]);
                let dst = MemberId(d[routed::MEMBER].try_into().unwrap());
                let src = MemberId(out[routed::MEMBER].try_into().unwrap());
                assert_ne!(src, dst);
                let find = |id: MemberId| r.after.iter().find(|p| p.member == id);
                let s = find(src).expect("forwarded from no member");
                let t = find(dst).expect("forwarded to no member");
                assert_eq!(s.addr, r.from, "the sender is not at the source address");
                assert_eq!(t.addr, *to, "forwarded elsewhere than to the member named");
                assert_eq!(s.network, t.network, "forwarded across networks");
            }
            Action::Reply(out) => match kind {
                Some(Kind::UplinkInit) => {
                    let k = codec::peek(out);
                    assert!(matches!(k, Ok(Kind::UplinkResp | Kind::CookieReply)), "{k:?}");
                    assert!(out.len() < d.len());
                }
                Some(k) if codec::peek(out) == Ok(Kind::Rejoin) => {
                    assert!(k == Kind::Control || k.is_routed(), "a Rejoin for a {k:?}");
                    assert_eq!(out.len(), rejoin::LEN);
                    assert_eq!(out[rejoin::RECEIVER], d[4..8]);
                }
                Some(Kind::Control) => {
                    assert_eq!(codec::peek(out), Ok(Kind::Control));
                    assert!(
                        r.after.iter().any(|p| p.addr == r.from),
                        "answered a control message from {}, where no member is",
                        r.from
                    );
                }
                k => panic!("answered a {k:?} with {:02x?}", &out[..out.len().min(8)]),
            },
            Action::Drop(_) => {}
        }
        if replayed && kind != Some(Kind::UplinkInit) {
            assert_eq!(
                members(&r.before),
                members(&r.after),
                "a replayed or mutated datagram changed the members"
            );
        }
        for net in r.after.iter().map(|p| p.network) {
            let n = r.after.iter().filter(|p| p.network == net).count();
            assert!(n <= self.max_peers, "{n} members in one network");
        }
    }

    /// Checks everything the relay did since the last call.
    fn check_all(&mut self) {
        for r in std::mem::take(&mut self.w.relay_log) {
            self.check(&r, false);
            if self.history.len() == HISTORY {
                self.history.pop_front();
            }
            self.history.push_back(r.datagram);
        }
        self.w.delivered.clear();
    }

    /// Sends `d` from `from` as the input made it (held to "changes
    /// nothing" if `replayed`), and everything that follows.
    fn send(&mut self, from: SocketAddr, d: &[u8], replayed: bool) {
        self.check_all();
        self.w.relay_step(from, d);
        let r = self.w.relay_log.remove(0);
        self.check(&r, replayed);
        self.w.pump();
        self.check_all();
    }

    fn member(&self, op: u8) -> usize {
        usize::from((op >> 4) & 7) % self.w.members.len()
    }

    /// Seals with member `m`'s uplink and sends from its address.
    fn member_sends(&mut self, m: usize, make: impl FnOnce(&mut lanbridge::core::proto::session::Keypair) -> Option<Vec<u8>>) {
        let now = self.w.now;
        if let Some(d) = self.w.members[m].client.fuzz_uplink_keypair(now).and_then(make) {
            let from = self.w.members[m].addr;
            self.w.to_relay(from, &d);
            self.w.pump();
        }
    }

    fn step(&mut self, input: &mut Input<'_>) -> Option<()> {
        let op = input.u8()?;
        let m = self.member(op);
        match op & 15 {
            0 => {
                let d = input.blob()?;
                self.send(address(op >> 4), d, false);
            }
            1 => {
                let how = input.u8()?;
                let len = usize::from(input.u8()?) * 8;
                let src = match (how >> 3) & 3 {
                    0 | 1 => common::member_mac(m),
                    2 => common::member_mac((m + 1) % 4),
                    _ => common::mac_choice(how >> 5),
                };
                let payload: Vec<u8> = (0..len).map(|i| i as u8).collect();
                let mut frame = common::eth_frame(common::mac_choice(how), src, 0x88b5, &payload);
                self.w.member_frame(m, &VnetHdr::NONE, &mut frame, 1500);
                self.w.pump();
            }
            2 => self.w.members[m].addr = address(input.u8()?),
            3 | 4 => {
                let which = usize::from(input.u8()?);
                let from = address(input.u8()?);
                let flip = if op & 15 == 4 { Some(input.u16()?) } else { None };
                if self.history.is_empty() {
                    return Some(());
                }
                let mut d = self.history[which % self.history.len()].clone();
                if let Some(at) = flip {
                    let i = usize::from(at >> 3) % d.len().max(1);
                    if let Some(b) = d.get_mut(i) {
                        *b ^= 1 << (at & 7);
                    }
                }
                self.send(from, &d, true);
            }
            5 => {
                let which = input.u8()?;
                let mut plain = Vec::new();
                match which % 5 {
                    0 => Control::Keepalive.encode(&mut plain),
                    1 => Control::GetMembers {
                        from: u32::from(input.u16()?),
                    }
                    .encode(&mut plain),
                    2 => Control::KeepaliveAck {
                        keepalive_secs: 1,
                        generation: 2,
                        observed: std::net::SocketAddr::from(([203, 0, 113, 9], 4000)),
                    }
                    .encode(&mut plain),
                    3 => Control::Members {
                        generation: 1,
                        total: 1,
                        from: 0,
                        entries: &[0; 40],
                    }
                    .encode(&mut plain),
                    _ => plain.extend_from_slice(input.blob()?),
                }
                self.member_sends(m, |kp| common::seal_control(kp, &plain));
            }
            6 => {
                let how = input.u8()?;
                let mut inner = input.blob()?.to_vec();
                let kind = [Kind::PeerInit, Kind::PeerResp, Kind::Data, Kind::Data][usize::from(how & 3)];
                match kind {
                    Kind::PeerInit => inner.resize(peer_init::LEN, 0),
                    Kind::PeerResp => inner.resize(peer_resp::LEN, 0),
                    _ => {}
                }
                let dst = match (how >> 2) & 7 {
                    7 => MemberId([how; 8]),
                    6 => self.w.members[m].id,
                    n => self.w.members[usize::from(n) % self.w.members.len()].id,
                };
                self.member_sends(m, |kp| common::seal_routed(kp, kind, dst, &inner));
            }
            7 => {
                let dt = Duration::from_millis(STEPS[usize::from(op >> 4)]);
                let dt = dt.min(self.max_elapsed.saturating_sub(self.elapsed));
                if dt.is_zero() {
                    return Some(());
                }
                self.elapsed += dt;
                self.w.advance(dt);
            }
            8 => {
                let n = 3 + usize::from((op >> 4) & 7);
                let net = usize::from(op >> 7);
                // Members are numbered by their identity: add those missing.
                if n < MAX_MEMBERS && self.w.members.len() <= n {
                    while self.w.members.len() <= n {
                        let i = self.w.add_member(net, self.client.clone());
                        self.w.members[i].alive = false;
                    }
                    self.w.members[n].alive = true;
                    self.w.join(n);
                }
            }
            9 => {
                let how = input.u8()?;
                let mut d = codec::header(Kind::UplinkInit).to_vec();
                d.extend_from_slice(input.blob()?);
                d.resize(uplink_init::LEN, 0);
                let key = common::relay_key(usize::from(how & 1));
                if how & 2 == 0 {
                    d[uplink_init::NETWORK].copy_from_slice(&key.network_id().0);
                }
                if how & 4 == 0 {
                    let mac1 = codec::mac(&key.mac1_key(), &[&d[..uplink_init::MAC1.start]]);
                    d[uplink_init::MAC1].copy_from_slice(&mac1);
                }
                self.send(address(op >> 4), &d, false);
            }
            10 => {
                let alive = op & 0x80 != 0;
                if alive && !self.w.members[m].alive {
                    self.w.members[m].alive = true;
                    self.w.join(m);
                } else {
                    self.w.members[m].alive = alive;
                }
            }
            11 => {
                let relay = common::relay_addr();
                self.w.members[m].client.set_relay(relay);
                self.w.join(m);
            }
            _ => {}
        }
        self.check_all();
        Some(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let Some(knobs) = input.u8() else {
        return;
    };
    let (w, client) = common::relay_world(knobs);
    let mut h = Harness {
        w,
        max_peers: common::relay_max_peers(knobs),
        history: VecDeque::new(),
        elapsed: Duration::ZERO,
        max_elapsed: if knobs & 0x10 != 0 { MAX_ELAPSED_SHORT } else { MAX_ELAPSED },
        client,
    };
    while h.step(&mut input).is_some() {}
});
