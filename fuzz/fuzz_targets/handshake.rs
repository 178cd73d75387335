//! Handshake messages from fuzz bytes into the engines: UplinkInit into a
//! `Relay`; UplinkResp, CookieReply, PeerInit and PeerResp into a member
//! (`Client`) that waits for them. Each is either made of fuzz bytes (with
//! the fields the engines check first made right: a valid mac1 computed
//! over the fuzzed bytes with `RelayKey::mac1_key` or the member PSK's
//! mac1 key, `codec::mac`; the index the member waits on) so that the
//! fuzzer gets to the Noise message, or a genuine Noise message built here
//! from fuzz-chosen parts (which key, which PSK, which payload: timestamps,
//! capabilities, keepalive intervals, cookies), so that it gets past it.
//!
//! The network is real and in memory (fuzz/common/mod.rs, `World`): a
//! relay of networks A and B and two members of A; member 0 is the one
//! under test: what it sends waits in an outbox (so the input can answer
//! its initiations itself) and what the relay sends it in an inbox. Every
//! input starts from the same handshakes (the random source restarts).
//!
//! Input: one byte of knobs (bits 0-1 cookies needed past 200, 1 or 0
//! handshakes a second; bit 2 at most 2 members a network; bit 3 stranger
//! 5's key refused; bit 4 members 0 and 1 start with a session; bit 5
//! member 0 has not joined: its first initiation waits in the outbox),
//! then records, each an op byte whose low 4 bits say what follows; bits
//! 4-6 pick an address where one is sent from (the members' six, two
//! strangers):
//! * 0 **UplinkInit** to the relay: a byte of how (bits 0-1: fuzz bytes
//!   for the Noise message, a genuine one, one under the member PSK, one
//!   to another static key; bits 2-4 whose key: member 0, 1, or strangers
//!   2-7; bit 5 mac1 left wrong; bit 6 mac2 under the cookie the relay
//!   gave that address; bit 7 network B), a u32 LE sender index, 16 bytes
//!   of payload (timestamp, capabilities) for a genuine one, else a blob;
//! * 1 **UplinkResp** to member 0: a byte of how (bit 0 a genuine answer to
//!   its latest initiation, else a blob; bit 1 a fuzz receiver index,
//!   else the one it waits on), a u32 LE sender index, 4 bytes of payload
//!   (keepalive interval, reserved) or the blob;
//! * 2 **CookieReply** to member 0: a byte of how (bit 0 a cookie genuinely
//!   sealed to its latest initiation's mac1, else a blob; bit 1 a fuzz
//!   receiver index), 12 bytes of nonce and 16 of cookie, or the blob;
//! * 3 **PeerInit** to member 0 through the relay: a byte of how (bits 0-1
//!   fuzz bytes, genuine, under the relay key, to another static key; bits
//!   2-4 whose key: member 0, 1, or strangers 2-7; bit 5 mac1 left wrong;
//!   bit 6 sent by the relay (a relay-key holder) naming the key's owner,
//!   else by member 1), a u32 LE sender index, 12 bytes of timestamp or
//!   the blob;
//! * 4 **PeerResp** to member 0 through member 1 (member 0 greets first if
//!   it waits on no handshake with member 1): a byte of how (bit 0 a
//!   genuine answer, else a blob; bit 1 a fuzz receiver index), a u32 LE
//!   sender index, or the blob;
//! * 5 **release** what member 0 sent to the relay;
//! * 6 **deliver** the inbox to member 0;
//! * 7 **time**: op bits 4-7 pick how long (100 ms to 60 s; 200 s in all);
//! * 8 **Rejoin** to member 0 naming its uplink (op bit 4: a u32 LE index);
//! * 9 **raw**: a blob to member 0 from the relay (op bit 7: to the relay
//!   from the address);
//! * 10 member 1 joins again (op bit 4), or greets.
//!
//! Checked besides "no panic":
//! * the relay answers an initiation only with an UplinkResp or a
//!   CookieReply, shorter than it, never one whose mac1 is wrong, and an
//!   UplinkResp only to a Noise message that opens under the network's
//!   relay key and static key (checked apart with `noise::respond`: fuzz
//!   bytes may replay a genuine message, the run being deterministic);
//! * a member takes no PeerInit under the relay key, to another static
//!   key, from a key that is not the named sender's (a relay-key holder
//!   can't speak for a member), or from its own key; and after taking one,
//!   the sender's key in its member table is the one the sender's id is
//!   made from;
//! * a genuine answer to the initiation a member waits on is taken.
//!
//! Run from the repository's top level: `scripts/fuzz.sh handshake` (which
//! sets the RUSTFLAGS of fuzz/common/mod.rs), or with them set
//! `cargo +nightly fuzz run handshake fuzz/corpus/handshake fuzz/seeds/handshake -- -max_total_time=120`.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use common::{Action, Input, World};
use lanbridge::core::{
    client::ClientEvent,
    noise::{self, Initiator},
    proto::{
        codec::{
            self, cookie_reply, peer_init, peer_resp, routed, uplink_init, uplink_resp, Kind,
        },
        MemberId, MemberPsk,
    },
};
use libfuzzer_sys::fuzz_target;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};

const STEPS: [u64; 16] = [
    100, 250, 500, 1000, 1000, 1000, 2000, 2000, 3000, 5000, 5000, 10000, 10000, 20000, 30000,
    60000,
];
const MAX_ELAPSED: Duration = Duration::from_secs(200);

fn address(i: u8) -> SocketAddr {
    match usize::from(i) % 8 {
        6 => SocketAddr::from(([203, 0, 113, 9], 5000)),
        7 => SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99], 5000)),
        n => common::addrs()[n],
    }
}

fn u32_le(input: &mut Input<'_>) -> Option<u32> {
    Some(u32::from(input.u16()?) | u32::from(input.u16()?) << 16)
}

/// `n` bytes of the input, zero-padded.
fn fixed<const N: usize>(input: &mut Input<'_>) -> [u8; N] {
    let mut b = [0u8; N];
    let got = input.bytes(N);
    b[..got.len()].copy_from_slice(got);
    b
}

struct Harness {
    w: World,
    /// Member 0's latest UplinkInit and PeerInit to member 1, while it
    /// waits for their answers.
    uplink_init: Option<Vec<u8>>,
    peer_init: Option<Vec<u8>>,
    /// Entries of the outbox already noted.
    noted: usize,
    /// Cookies the relay gave, per address.
    cookies: HashMap<SocketAddr, [u8; 16]>,
    elapsed: Duration,
}

impl Harness {
    /// Notes what member 0 sent since the last call.
    fn note_outbox(&mut self) {
        let peer = self.w.members[1].id;
        self.noted = self.noted.min(self.w.outbox.len());
        for d in self.w.outbox.iter().skip(self.noted) {
            match codec::peek(d) {
                Ok(Kind::UplinkInit) => self.uplink_init = Some(d.clone()),
                Ok(Kind::PeerInit) if d[routed::MEMBER] == peer.0 => {
                    self.peer_init = Some(d.clone())
                }
                _ => {}
            }
        }
        self.noted = self.w.outbox.len();
    }

    fn deliver(&mut self, d: &[u8]) -> ClientEvent {
        // An answer naming what member 0 waits on ends the wait, taken or
        // not (the initiator is spent either way).
        let index = |init: &Option<Vec<u8>>, at: std::ops::Range<usize>| {
            init.as_ref().and_then(|i| i.get(at).map(<[u8]>::to_vec))
        };
        match codec::peek(d) {
            Ok(Kind::UplinkResp)
                if Some(d[uplink_resp::RECEIVER].to_vec()) == index(&self.uplink_init, uplink_init::SENDER) =>
            {
                self.uplink_init = None;
            }
            Ok(Kind::PeerResp) => {
                let at = routed::HEADER_LEN + peer_resp::RECEIVER.start..routed::HEADER_LEN + peer_resp::RECEIVER.end;
                let sender = routed::HEADER_LEN..routed::HEADER_LEN + 4;
                if Some(d[at].to_vec()) == index(&self.peer_init, sender) {
                    self.peer_init = None;
                }
            }
            _ => {}
        }
        let event = self.w.deliver(0, common::relay_addr(), d);
        self.w.pump();
        self.note_outbox();
        event
    }

    fn step(&mut self, input: &mut Input<'_>) -> Option<()> {
        let op = input.u8()?;
        let hi = op >> 4;
        match op & 15 {
            0 => self.uplink_init(input, address(hi & 7))?,
            1 => {
                let how = input.u8()?;
                let sender = u32_le(input)?;
                let mut d = codec::header(Kind::UplinkResp).to_vec();
                d.extend_from_slice(&sender.to_be_bytes());
                let waited = self.uplink_init.as_ref().map(|i| i[uplink_init::SENDER].to_vec());
                let receiver = match (how & 2 == 0, &waited) {
                    (true, Some(w)) => w.clone(),
                    _ => u32_le(input)?.to_be_bytes().to_vec(),
                };
                d.extend_from_slice(&receiver);
                let genuine = how & 1 != 0 && self.uplink_init.is_some();
                if genuine {
                    let payload: [u8; uplink_resp::PAYLOAD_LEN] = fixed(input);
                    let init = self.uplink_init.clone()?;
                    let key = common::relay_key(0);
                    let r = noise::respond(&key.relay_static(), key.psk(), &init[uplink_init::NOISE], |_, _| {
                        Ok(payload.to_vec())
                    })
                    .expect("the relay's answer to a member's own initiation");
                    d.extend_from_slice(&r.reply);
                } else {
                    d.extend_from_slice(input.blob()?);
                }
                d.resize(uplink_resp::LEN, 0);
                let event = self.deliver(&d);
                if genuine && Some(&receiver) == waited.as_ref() {
                    // Ours, unless the initiation was answered already.
                    assert!(
                        !matches!(event, ClientEvent::Drop(r) if r != lanbridge::core::drop::DropReason::NoSession),
                        "refused a genuine answer: {event:?}"
                    );
                }
            }
            2 => {
                let how = input.u8()?;
                let mut d = codec::header(Kind::CookieReply).to_vec();
                let waited = self.uplink_init.as_ref().map(|i| i[uplink_init::SENDER].to_vec());
                match (how & 2 == 0, &waited) {
                    (true, Some(w)) => d.extend_from_slice(w),
                    _ => d.extend_from_slice(&u32_le(input)?.to_be_bytes()),
                }
                let genuine = how & 1 != 0 && self.uplink_init.is_some();
                if genuine {
                    let nonce: [u8; 12] = fixed(input);
                    let mut cookie: [u8; 16] = fixed(input);
                    let init = self.uplink_init.clone()?;
                    let aead = LessSafeKey::new(
                        UnboundKey::new(&CHACHA20_POLY1305, &common::relay_key(0).cookie_key()).ok()?,
                    );
                    let tag = aead
                        .seal_in_place_separate_tag(
                            Nonce::assume_unique_for_key(nonce),
                            Aad::from(&init[uplink_init::MAC1]),
                            &mut cookie,
                        )
                        .ok()?;
                    d.extend_from_slice(&nonce);
                    d.extend_from_slice(&cookie);
                    d.extend_from_slice(tag.as_ref());
                } else {
                    d.extend_from_slice(input.blob()?);
                }
                d.resize(cookie_reply::LEN, 0);
                let event = self.deliver(&d);
                if genuine && d[cookie_reply::RECEIVER] == self.uplink_init.as_ref()?[uplink_init::SENDER] {
                    assert_eq!(event, ClientEvent::Nothing, "refused a genuine cookie");
                }
            }
            3 => self.peer_init(input)?,
            4 => {
                let how = input.u8()?;
                let sender = u32_le(input)?;
                if self.peer_init.is_none() {
                    let mut f = common::greeting(0);
                    self.w.member_frame(0, &lanbridge::core::offload::VnetHdr::NONE, &mut f, 1500);
                    self.note_outbox();
                }
                let Some(init) = self.peer_init.clone() else {
                    return Some(());
                };
                let inner_init = &init[routed::HEADER_LEN..init.len() - codec::TAG_LEN];
                let mut inner = sender.to_be_bytes().to_vec();
                if how & 2 == 0 {
                    inner.extend_from_slice(&inner_init[peer_init::SENDER]);
                } else {
                    inner.extend_from_slice(&u32_le(input)?.to_be_bytes());
                }
                let genuine = how & 1 != 0;
                if genuine {
                    let b = common::identity(1);
                    let Ok(r) = noise::respond(
                        b.keys(),
                        &common::member_psk(0),
                        &inner_init[peer_init::NOISE],
                        |_, _| Ok(Vec::new()),
                    ) else {
                        panic!("member 0's PeerInit does not open at member 1");
                    };
                    inner.extend_from_slice(&r.reply);
                } else {
                    inner.extend_from_slice(input.blob()?);
                }
                inner.resize(peer_resp::LEN, 0);
                self.via_member1(Kind::PeerResp, &inner);
            }
            5 => {
                self.note_outbox();
                self.w.release();
                self.noted = 0;
                self.note_outbox();
            }
            6 => {
                while let Some(d) = self.w.inbox.pop_front() {
                    self.deliver(&d);
                }
            }
            7 => {
                let dt = Duration::from_millis(STEPS[usize::from(hi)]);
                let dt = dt.min(MAX_ELAPSED.saturating_sub(self.elapsed));
                if !dt.is_zero() {
                    self.elapsed += dt;
                    self.w.advance(dt);
                    self.note_outbox();
                }
            }
            8 => {
                let index = if hi & 1 != 0 {
                    u32_le(input)?
                } else {
                    let (now, us) = (self.w.now, self.w.members[0].id);
                    self.w.relay.fuzz_sending_keypair(now, us).map_or(0, |kp| kp.local_index)
                };
                let mut d = codec::header(Kind::Rejoin).to_vec();
                d.extend_from_slice(&index.to_be_bytes());
                self.deliver(&d);
            }
            9 => {
                let d = input.blob()?;
                if hi & 8 == 0 {
                    self.deliver(d);
                } else {
                    self.w.relay_step(address(hi & 7), d);
                    self.w.pump();
                }
            }
            10 => {
                if hi & 1 != 0 {
                    self.w.members[1].client.set_relay(common::relay_addr());
                    self.w.join(1);
                } else {
                    self.w.greet(1);
                }
                self.note_outbox();
            }
            _ => {}
        }
        self.w.relay_log.clear();
        self.w.delivered.clear();
        Some(())
    }

    fn uplink_init(&mut self, input: &mut Input<'_>, from: SocketAddr) -> Option<()> {
        let how = input.u8()?;
        let sender = u32_le(input)?;
        let net = usize::from(how >> 7);
        let key = common::relay_key(net);
        let who = common::identity((how >> 2) & 7);
        let mut d = codec::header(Kind::UplinkInit).to_vec();
        d.extend_from_slice(&sender.to_be_bytes());
        d.extend_from_slice(&key.network_id().0);
        let content = how & 3;
        if content == 0 {
            d.extend_from_slice(input.blob()?);
        } else {
            let payload: [u8; uplink_init::PAYLOAD_LEN] = fixed(input);
            let member_psk = common::member_psk(net);
            let (psk, remote) = match content {
                1 => (*key.psk(), key.relay_static().public),
                2 => (member_psk, key.relay_static().public),
                _ => (*key.psk(), common::identity(1).keys().public),
            };
            let (_, msg) = Initiator::start(who.keys(), &remote, &psk, &payload).ok()?;
            d.extend_from_slice(&msg);
        }
        d.resize(uplink_init::MAC1.start, 0);
        let mac1_right = how & 0x20 == 0;
        let mac1 = if mac1_right {
            codec::mac(&key.mac1_key(), &[&d])
        } else {
            [0x5a; 16]
        };
        d.extend_from_slice(&mac1);
        let mac2 = match self.cookies.get(&from) {
            Some(cookie) if how & 0x40 != 0 => codec::mac2(cookie, &[&d]),
            _ => [0; 16],
        };
        d.extend_from_slice(&mac2);
        debug_assert_eq!(d.len(), uplink_init::LEN);
        let action = self.w.relay_step(from, &d);
        if let Action::Reply(r) = &action {
            let kind = codec::peek(r);
            assert!(matches!(kind, Ok(Kind::UplinkResp | Kind::CookieReply)), "{kind:?}");
            assert!(r.len() < d.len());
            assert!(mac1_right, "answered an initiation whose mac1 is wrong");
            if kind == Ok(Kind::UplinkResp) {
                let opens = noise::respond(
                    &key.relay_static(),
                    key.psk(),
                    &d[uplink_init::NOISE],
                    |_, _| Ok(Vec::new()),
                )
                .is_ok();
                assert!(opens, "answered a Noise message that can't open (how {how:#04x})");
            } else {
                // Keep the cookie for the next initiation from there.
                let aead = LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, &key.cookie_key()).ok()?);
                let nonce: [u8; 12] = r[cookie_reply::NONCE].try_into().ok()?;
                let mut sealed = r[cookie_reply::SEALED].to_vec();
                let cookie = aead
                    .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::from(&mac1), &mut sealed)
                    .expect("a cookie reply opens under the cookie key");
                self.cookies.insert(from, cookie.try_into().ok()?);
            }
        }
        self.w.pump();
        Some(())
    }

    fn peer_init(&mut self, input: &mut Input<'_>) -> Option<()> {
        let how = input.u8()?;
        let sender = u32_le(input)?;
        let n = (how >> 2) & 7;
        let who = common::identity(n);
        let us = self.w.members[0].client.identity().keys().public;
        let mut inner = sender.to_be_bytes().to_vec();
        let content = how & 3;
        if content == 0 {
            inner.extend_from_slice(input.blob()?);
        } else {
            let ts: [u8; peer_init::PAYLOAD_LEN] = fixed(input);
            let (psk, remote) = match content {
                1 => (common::member_psk(0), us),
                2 => (*common::relay_key(0).psk(), us),
                _ => (common::member_psk(0), common::identity(1).keys().public),
            };
            let (_, msg) = Initiator::start(who.keys(), &remote, &psk, &ts).ok()?;
            inner.extend_from_slice(&msg);
        }
        inner.resize(peer_init::MAC1.start, 0);
        let mac1 = if how & 0x20 == 0 {
            let key = MemberPsk::new(&common::network_key(0)).mac1_key();
            codec::mac(&key, &[&inner])
        } else {
            [0x5a; 16]
        };
        inner.extend_from_slice(&mac1);
        debug_assert_eq!(inner.len(), peer_init::LEN);
        let (event, src) = if how & 0x40 != 0 {
            // A relay-key holder names the key's owner as the sender.
            let src = who.id();
            let (now, to) = (self.w.now, self.w.members[0].id);
            let d = self
                .w
                .relay
                .fuzz_sending_keypair(now, to)
                .and_then(|kp| common::seal_routed(kp, Kind::PeerInit, src, &inner))?;
            (Some(self.deliver(&d)), src)
        } else {
            (self.via_member1(Kind::PeerInit, &inner), self.w.members[1].id)
        };
        let taken = event.as_ref().is_some_and(|e| !matches!(e, ClientEvent::Drop(_)));
        if content != 0 && !(content == 1 && who.id() == src && n != 0) {
            assert!(!taken, "took a PeerInit it can't open (how {how:#04x}): {event:?}");
        }
        if taken {
            let now = self.w.now;
            let peers = self.w.members[0].client.peers(now);
            let p = peers.iter().find(|p| p.id == src).expect("took a PeerInit from no member");
            assert_eq!(MemberId::of(&p.public), src, "a member's key is not its id's");
        }
        Some(())
    }

    /// Sends `inner` to member 0 as member 1, through the relay; returns
    /// member 0's verdict if the relay passed it on.
    fn via_member1(&mut self, kind: Kind, inner: &[u8]) -> Option<ClientEvent> {
        let (now, to) = (self.w.now, self.w.members[0].id);
        let d = self.w.members[1]
            .client
            .fuzz_uplink_keypair(now)
            .and_then(|kp| common::seal_routed(kp, kind, to, inner))?;
        let from = self.w.members[1].addr;
        match self.w.relay_step(from, &d) {
            Action::Forward(_, forwarded) => {
                // What the relay forwarded, not the inbox's last datagram:
                // a member list announcement the relay pushed in the same
                // step comes after it.
                let at = self.w.inbox.iter().rposition(|q| *q == forwarded)?;
                let d = self.w.inbox.remove(at)?;
                Some(self.deliver(&d))
            }
            _ => {
                self.w.pump();
                None
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let Some(knobs) = input.u8() else {
        return;
    };
    let mut h = Harness {
        w: common::handshake_world(knobs),
        uplink_init: None,
        peer_init: None,
        noted: 0,
        cookies: HashMap::new(),
        elapsed: Duration::ZERO,
    };
    h.note_outbox();
    while h.step(&mut input).is_some() {}
});
