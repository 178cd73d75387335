//! A joined member, `core::client::Client`, fed datagrams from the relay's
//! address: genuine ones (frames other members sealed, TCP segments the
//! `Coalescer` merges, their handshakes), what a member holding the network
//! key may send (any fragment plaintext sealed under its session with us,
//! any PeerInit or PeerResp), what a holder of the relay key may send (any
//! control message, any routed datagram naming any member, Rejoin), and
//! mutated, replayed and made-up datagrams, with time passing (`poll`),
//! members leaving and coming back, and frames of our own to send
//! (`handle_frame`, with vnet headers).
//!
//! The network is real and in memory (fuzz/common/mod.rs, `World`): a
//! `Relay` and three members of network A, all `Client`s; member 0 is the
//! one under test, and what the relay sends it waits in an inbox until the
//! input delivers it (or time passes); members 0 and 1 have joined, member
//! 2 joins when an op has it send or come back. Every input starts from the same handshakes (the
//! random source restarts), so the fuzzer reaches member lists, member
//! handshakes and Data at once.
//!
//! Input: one byte of knobs (bit 0 offload, i.e. a `Coalescer`; bit 1 MSS
//! clamping; bits 2-3 our `max_datagram`; bits 4-5 the other members';
//! bit 6 short session timers (rekey after 20 s, keys refused after 40 s,
//! `common::short_timers`); bit 7 members 0 and 1
//! start with a session), then records, each an op byte whose low 4 bits
//! say what follows (the other bits are the op's own):
//! * 0 **raw**: a blob (u16 LE length, bytes), delivered as it is, from the
//!   relay's address (another if op bit 4);
//! * 1 **frame**: a byte (bits 0-2 destination MAC, bit 3 member 2 sends
//!   instead of member 1, bits 4-5 source MAC: its own, ours, the other
//!   member's, another; bits 6-7 EtherType 0x88b5, IPv4, IPv6, ARP) and a
//!   blob of payload: the member sends the frame;
//! * 2 **deliver**: op bits 4-6 plus 1 datagrams from the inbox, from the
//!   front (the back if bit 7);
//! * 3 **mutate**: a byte (which datagram, inbox then history) and a u16 LE
//!   (bits 0-2 the bit, the rest the byte): that datagram with the bit
//!   flipped, delivered now;
//! * 4 **replay**: a byte: a datagram delivered before, again;
//! * 5 **send**: a byte (bits 0-2 destination MAC, bit 3 a 10-byte vnet
//!   header follows) and a blob: we send it, MTU 1500: with a header that
//!   parses, as the whole frame, else as the payload after our MACs and
//!   EtherType 0x88b5;
//! * 6 **TCP segment**: a byte (bits 0-1 flow, bit 2 IPv6, bit 3 PSH, bit
//!   5 bad TCP checksum, bit 6 a gap in the sequence) and a byte of payload
//!   length (times 6, plus 1): member 1 sends the flow's next segment;
//! * 7 **flush** our coalescer;
//! * 8 **time**: op bits 4-7 pick how long passes (100 ms to 60 s), every
//!   live member polled each second and our inbox delivered (capped in
//!   all, see `MAX_ELAPSED`);
//! * 9 **member Data**: a blob, sealed by member 1 under its session with
//!   us (if it has one) as a fragment plaintext, through the relay;
//! * 10 **member handshake**: a blob: member 1 sends it as the inner part
//!   of a PeerInit (op bit 4 clear; mac1 made right unless bit 5) or a
//!   PeerResp, cut or padded to the length, through the relay;
//! * 11 **relay control**: a byte (a message: KeepaliveAck, a Members part
//!   with entries made from fuzz bytes, or a blob as it is) and its fields,
//!   sealed under the relay's uplink with us;
//! * 12 **relay routed**: a byte (bits 0-1 kind PeerInit, PeerResp, Data;
//!   bits 2-4 the source member: 1, 2, us, one not in the network) and a
//!   blob: a routed datagram with that inner part, tagged by the relay;
//! * 13 **Rejoin**: from the relay, naming our uplink (a u32 LE index if
//!   op bit 4);
//! * 14 **members**: op bits 4-5: member 2 falls silent, comes back (and
//!   joins again), greets everyone (shakes hands), or member 1 greets;
//! * 15 **handshake answer**: a blob delivered as UplinkResp (op bit 4
//!   clear) or CookieReply, cut or padded to the length, naming the index
//!   of our latest initiation (unless op bit 5).
//!
//! Checked besides "no panic":
//! * a datagram from another address than the relay's is dropped;
//! * every (header, frame) delivered with a header other than
//!   `VnetHdr::NONE` passes `VnetHdr::validate`;
//! * every frame delivered with `VnetHdr::NONE` is one a member sent (or it
//!   with its SYN's MSS clamped), at most as often as it was sent: neither
//!   a relay-key holder nor a replay makes us deliver another frame, or one
//!   twice (not checked once member 1 sealed fuzz plaintexts: those are
//!   frames too);
//! * the TCP payload delivered in all never exceeds what was sent;
//! * no frame delivered is longer than `MAX_FRAME`.
//!
//! Run from the repository's top level: `scripts/fuzz.sh client` (which
//! sets the RUSTFLAGS of fuzz/common/mod.rs), or with them set
//! `cargo +nightly fuzz run client fuzz/corpus/client fuzz/seeds/client -- -max_total_time=120`.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::{
    collections::{HashMap, VecDeque},
    time::Duration,
};

use common::{Flow, Input, World};
use lanbridge::core::{
    client::ClientEvent,
    frame::{mss, tcp::flags},
    offload::VnetHdr,
    proto::{
        codec::{
            self, cookie_reply, peer_init, peer_resp, rejoin, uplink_init, uplink_resp, Control,
            Kind, MEMBERS_PER_MESSAGE,
        },
        MemberId, MemberPsk,
    },
    wire::MAX_FRAME,
};
use libfuzzer_sys::fuzz_target;

const STEPS: [u64; 16] = [
    100, 250, 500, 1000, 1000, 2000, 3000, 5000, 5000, 10000, 10000, 20000, 30000, 30000, 60000,
    60000,
];
const HISTORY: usize = 64;
/// How far time may run in one input: past a rekey (120 s) and the end of
/// the keys before it (180 s), or three rounds of both with short timers.
/// Each second polls every member, and each rekey costs handshakes, so this
/// bounds an input's time.
const MAX_ELAPSED: Duration = Duration::from_secs(200);
const MAX_ELAPSED_SHORT: Duration = Duration::from_secs(70);

/// What the other members sent, and what came out of us.
#[derive(Default)]
struct Ledger {
    /// Frames sent and not yet delivered, with how often.
    sent: HashMap<Vec<u8>, usize>,
    /// A frame with its SYN's MSS clamped by us, to the frame as sent.
    clamped: HashMap<Vec<u8>, Vec<u8>>,
    tcp_sent: usize,
    tcp_delivered: usize,
    /// Member 1 sealed fuzz plaintexts: frames nobody "sent" may come out.
    injected: bool,
}

impl Ledger {
    /// `frame` as member `sender` puts it on the wire (its SYN clamped to
    /// its own datagram size), and as we may deliver it.
    fn add(&mut self, frame: &[u8], sender_max_frame: Option<usize>, our_max_frame: Option<usize>) {
        let mut f = frame.to_vec();
        if let Some(max) = sender_max_frame {
            mss::clamp_mss(&mut f, max, false);
        }
        *self.sent.entry(f.clone()).or_default() += 1;
        if let Some(max) = our_max_frame {
            let mut c = f.clone();
            if mss::clamp_mss(&mut c, max, false).is_some() {
                self.clamped.insert(c, f.clone());
            }
        }
        self.tcp_sent += common::tcp_payload_len(&f);
    }

    fn delivered(&mut self, hdr: &VnetHdr, frame: &[u8]) {
        assert!(frame.len() <= MAX_FRAME, "delivered {} bytes", frame.len());
        self.tcp_delivered += common::tcp_payload_len(frame);
        if *hdr != VnetHdr::NONE {
            if let Err(e) = hdr.validate(frame) {
                panic!("delivered a header that does not validate: {e}: {hdr:?}");
            }
        } else if !self.injected {
            let key = match self.sent.get(frame) {
                Some(n) if *n > 0 => frame.to_vec(),
                _ => self.clamped.get(frame).cloned().unwrap_or_else(|| frame.to_vec()),
            };
            match self.sent.get_mut(&key) {
                Some(n) if *n > 0 => *n -= 1,
                _ => panic!(
                    "delivered a frame never sent (or more often than sent): {} bytes {:02x?}",
                    frame.len(),
                    &frame[..frame.len().min(64)]
                ),
            }
        }
        if !self.injected {
            assert!(
                self.tcp_delivered <= self.tcp_sent,
                "delivered {} TCP payload bytes, sent {}",
                self.tcp_delivered,
                self.tcp_sent
            );
        }
    }
}

struct Harness {
    w: World,
    ledger: Ledger,
    history: VecDeque<Vec<u8>>,
    elapsed: Duration,
    max_elapsed: Duration,
    clamp: bool,
    our_max_frame: usize,
    their_max_frame: usize,
    /// Next sequence number per (flow, IPv6).
    seq: [u32; 8],
    /// The sender index of our latest initiation.
    init_index: Option<[u8; 4]>,
}

impl Harness {
    fn check_delivered(&mut self) {
        for (i, h, f) in std::mem::take(&mut self.w.delivered) {
            if i == 0 {
                self.ledger.delivered(&h, &f);
            }
        }
        while self.w.members[0].client.poll_event().is_some() {}
    }

    /// Delivers `d` to us from `from`, and everything that follows.
    fn deliver_from(&mut self, from: std::net::SocketAddr, d: &[u8]) {
        let event = self.w.deliver(0, from, d);
        if from != common::relay_addr() {
            // Only the direct kinds are taken from another address (the
            // ledger checks any frame they deliver), never a join.
            assert_ne!(event, ClientEvent::Registered);
        }
        self.w.pump();
        self.check_delivered();
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(d.to_vec());
    }

    fn deliver(&mut self, d: &[u8]) {
        self.deliver_from(common::relay_addr(), d);
    }

    /// Member `sender` sends `frame` from its device.
    fn member_sends(&mut self, sender: usize, frame: &[u8]) {
        let mut f = frame.to_vec();
        self.w.member_frame(sender, &VnetHdr::NONE, &mut f, 1500);
        self.w.pump();
        let (s, o) = (self.their_max_frame, self.our_max_frame);
        self.ledger.add(frame, self.clamp.then_some(s), self.clamp.then_some(o));
        self.check_delivered();
    }

    /// Sends `d` as member 1 would, through the relay.
    fn member_routed(&mut self, kind: Kind, inner: &[u8]) {
        let now = self.w.now;
        let us = self.w.members[0].id;
        let Some(up) = self.w.members[1].client.fuzz_uplink_keypair(now) else {
            return;
        };
        if let Some(d) = common::seal_routed(up, kind, us, inner) {
            let from = self.w.members[1].addr;
            self.w.to_relay(from, &d);
            self.w.pump();
        }
    }

    fn relay_sends(&mut self, make: impl FnOnce(&mut lanbridge::core::proto::session::Keypair) -> Option<Vec<u8>>) {
        let now = self.w.now;
        let us = self.w.members[0].id;
        if let Some(d) = self.w.relay.fuzz_sending_keypair(now, us).and_then(make) {
            self.w.inbox.push_back(d);
        }
    }

    fn step(&mut self, input: &mut Input<'_>) -> Option<()> {
        let op = input.u8()?;
        let hi = op >> 4;
        match op & 15 {
            0 => {
                let d = input.blob()?;
                let from = if hi & 1 == 0 { common::relay_addr() } else { common::addrs()[1] };
                self.deliver_from(from, d);
            }
            1 => {
                let how = input.u8()?;
                let payload = input.blob()?;
                let sender = if how & 8 == 0 { 1 } else { 2 };
                self.w.join_late(sender);
                let src = match (how >> 4) & 3 {
                    0 => common::member_mac(sender),
                    1 => common::member_mac(0),
                    2 => common::member_mac(3 - sender),
                    _ => [2, 0, 0, 0, 0, 0x77],
                };
                let ethertype = [0x88b5, 0x0800, 0x86dd, 0x0806][usize::from(how >> 6)];
                let frame = common::eth_frame(common::mac_choice(how), src, ethertype, payload);
                self.member_sends(sender, &frame);
            }
            2 => {
                for _ in 0..=(hi & 7) {
                    let d = if hi & 8 == 0 {
                        self.w.inbox.pop_front()
                    } else {
                        self.w.inbox.pop_back()
                    };
                    let Some(d) = d else { break };
                    self.deliver(&d);
                }
            }
            3 => {
                let which = usize::from(input.u8()?);
                let at = input.u16()?;
                let n = self.w.inbox.len() + self.history.len();
                if n == 0 {
                    return Some(());
                }
                let i = which % n;
                let mut d = if i < self.w.inbox.len() {
                    self.w.inbox[i].clone()
                } else {
                    self.history[i - self.w.inbox.len()].clone()
                };
                let byte = usize::from(at >> 3) % d.len().max(1);
                if let Some(b) = d.get_mut(byte) {
                    *b ^= 1 << (at & 7);
                }
                self.deliver(&d);
            }
            4 => {
                let which = usize::from(input.u8()?);
                if !self.history.is_empty() {
                    let d = self.history[which % self.history.len()].clone();
                    self.deliver(&d);
                }
            }
            5 => {
                let how = input.u8()?;
                let hdr = if how & 8 != 0 {
                    VnetHdr::parse(input.bytes(VnetHdr::LEN)).unwrap_or(VnetHdr::NONE)
                } else {
                    VnetHdr::NONE
                };
                let payload = input.blob()?;
                let mut frame =
                    common::eth_frame(common::mac_choice(how), common::member_mac(0), 0x88b5, payload);
                if hdr != VnetHdr::NONE {
                    // A header describes the frame from its first byte.
                    frame = payload.to_vec();
                }
                self.w.member_frame(0, &hdr, &mut frame, 1500);
                self.w.pump();
                self.check_delivered();
            }
            6 => {
                let how = input.u8()?;
                let len = usize::from(input.u8()?) * 6 + 1;
                let slot = usize::from(how & 7);
                let flow = Flow {
                    v6: how & 4 != 0,
                    dst: common::member_mac(0),
                    src: common::member_mac(1),
                    id: how & 3,
                };
                if how & 0x40 != 0 {
                    self.seq[slot] = self.seq[slot].wrapping_add(1000);
                }
                let seq = self.seq[slot];
                let payload: Vec<u8> = (0..len).map(|i| (seq as usize + i) as u8).collect();
                let tcp_flags = flags::ACK | if how & 8 != 0 { flags::PSH } else { 0 };
                let frame = common::tcp_segment(flow, seq, tcp_flags, &payload, how & 0x20 != 0);
                self.seq[slot] = seq.wrapping_add(len as u32);
                self.member_sends(1, &frame);
            }
            7 => {
                self.w.flush(0);
                self.check_delivered();
            }
            8 => {
                let dt = Duration::from_millis(STEPS[usize::from(hi)]);
                let dt = dt.min(self.max_elapsed.saturating_sub(self.elapsed));
                if dt.is_zero() {
                    return Some(());
                }
                self.elapsed += dt;
                self.w.advance(dt);
                self.check_delivered();
            }
            9 => {
                let plain = input.blob()?;
                let now = self.w.now;
                let us = self.w.members[0].id;
                let inner = self.w.members[1]
                    .client
                    .fuzz_peer_keypair(now, us)
                    .and_then(|kp| common::seal_data_inner(kp, plain));
                if let Some(inner) = inner {
                    self.ledger.injected = true;
                    self.member_routed(Kind::Data, &inner);
                }
            }
            10 => {
                let blob = input.blob()?;
                let (kind, len) = if hi & 1 == 0 {
                    (Kind::PeerInit, peer_init::LEN)
                } else {
                    (Kind::PeerResp, peer_resp::LEN)
                };
                let mut inner = blob.to_vec();
                inner.resize(len, 0);
                if kind == Kind::PeerInit && hi & 2 == 0 {
                    let key = MemberPsk::new(&common::network_key(0)).mac1_key();
                    let mac1 = codec::mac(&key, &[&inner[..peer_init::MAC1.start]]);
                    inner[peer_init::MAC1].copy_from_slice(&mac1);
                }
                self.member_routed(kind, &inner);
            }
            11 => {
                let which = input.u8()?;
                let mut plain = Vec::new();
                match which % 3 {
                    0 => Control::KeepaliveAck {
                        keepalive_secs: input.u16()?,
                        generation: u32::from(input.u16()?),
                        observed: std::net::SocketAddr::from((
                            [203, 0, 113, input.u8()?],
                            input.u16()?,
                        )),
                    }
                    .encode(&mut plain),
                    1 => {
                        let (generation, total, from) = (input.u8()?, input.u8()?, input.u8()?);
                        let n = usize::from(input.u8()?) % (MEMBERS_PER_MESSAGE + 1);
                        let mut entries = Vec::new();
                        for k in 0..n {
                            // A public key from the input, its true id
                            // unless the byte says otherwise.
                            let seed = input.u8().unwrap_or(0);
                            let public = match seed % 8 {
                                0..=2 => {
                                    let i = usize::from(seed % 3);
                                    self.w.members[i].client.identity().keys().public
                                }
                                _ => *blake3::hash(&[seed, k as u8]).as_bytes(),
                            };
                            let id = if seed & 0x80 == 0 {
                                MemberId::of(&public)
                            } else {
                                MemberId([seed; 8])
                            };
                            entries.extend_from_slice(&id.0);
                            entries.extend_from_slice(&public);
                        }
                        Control::Members {
                            generation: u32::from(generation),
                            total: u32::from(total),
                            from: u32::from(from),
                            entries: &entries,
                        }
                        .encode(&mut plain);
                    }
                    _ => plain.extend_from_slice(input.blob()?),
                }
                self.relay_sends(|kp| common::seal_control(kp, &plain));
            }
            12 => {
                let how = input.u8()?;
                let inner = input.blob()?.to_vec();
                let kind = [Kind::PeerInit, Kind::PeerResp, Kind::Data, Kind::Data][usize::from(how & 3)];
                let src = match (how >> 2) & 7 {
                    0..=2 => self.w.members[1].id,
                    3 | 4 => self.w.members[2].id,
                    5 => self.w.members[0].id,
                    _ => MemberId([how; 8]),
                };
                let inner = match kind {
                    Kind::PeerInit => {
                        let mut i = inner;
                        i.resize(peer_init::LEN, 0);
                        i
                    }
                    Kind::PeerResp => {
                        let mut i = inner;
                        i.resize(peer_resp::LEN, 0);
                        i
                    }
                    _ => inner,
                };
                self.relay_sends(|kp| common::seal_routed(kp, kind, src, &inner));
            }
            13 => {
                let index = if hi & 1 != 0 {
                    u32::from(input.u16()?) | u32::from(input.u16()?) << 16
                } else {
                    let now = self.w.now;
                    let us = self.w.members[0].id;
                    match self.w.relay.fuzz_sending_keypair(now, us) {
                        Some(kp) => kp.local_index,
                        None => 0,
                    }
                };
                let mut d = codec::header(Kind::Rejoin).to_vec();
                d.extend_from_slice(&index.to_be_bytes());
                debug_assert_eq!(d.len(), rejoin::LEN);
                self.w.inbox.push_back(d);
            }
            14 => match hi & 3 {
                0 => self.w.members[2].alive = false,
                1 => self.w.join_late(2),
                2 => {
                    self.w.join_late(2);
                    self.member_sends(2, &common::greeting(2));
                }
                _ => self.member_sends(1, &common::greeting(1)),
            },
            _ => {
                let blob = input.blob()?;
                let (kind, len, receiver) = if hi & 1 == 0 {
                    (Kind::UplinkResp, uplink_resp::LEN, uplink_resp::RECEIVER)
                } else {
                    (Kind::CookieReply, cookie_reply::LEN, cookie_reply::RECEIVER)
                };
                let mut d = codec::header(kind).to_vec();
                d.extend_from_slice(blob);
                d.resize(len, 0);
                // Our latest initiation's index.
                if let (Some(index), true) = (self.init_index, hi & 2 == 0) {
                    d[receiver].copy_from_slice(&index);
                }
                self.deliver(&d);
            }
        }
        // Remember our latest initiation (the relay saw it go by).
        let us = self.w.members[0].addr;
        for r in self.w.relay_log.drain(..) {
            if r.from == us && codec::peek(&r.datagram) == Ok(Kind::UplinkInit) {
                self.init_index = r.datagram[uplink_init::SENDER].try_into().ok();
            }
        }
        Some(())
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let Some(knobs) = input.u8() else {
        return;
    };
    let short = knobs & 0x40 != 0;
    let our_max = common::CLIENT_OUR_MAX_DATAGRAMS[usize::from((knobs >> 2) & 3)];
    let their_max = common::CLIENT_THEIR_MAX_DATAGRAMS[usize::from((knobs >> 4) & 3)];
    let w = common::client_world(knobs);
    let mut h = Harness {
        w,
        ledger: Ledger::default(),
        history: VecDeque::new(),
        elapsed: Duration::ZERO,
        max_elapsed: if short { MAX_ELAPSED_SHORT } else { MAX_ELAPSED },
        clamp: knobs & 2 != 0,
        our_max_frame: codec::max_frame_in_one_datagram(our_max),
        their_max_frame: codec::max_frame_in_one_datagram(their_max),
        seq: [0; 8],
        init_index: None,
    };
    while h.step(&mut input).is_some() {}
    h.w.flush(0);
    h.check_delivered();
});
