//! A sequence of datagrams through `core::client::Client::handle_datagram`
//! and `Client::flush`, as a member receives them from the relay: genuine
//! ones sealed under the network key from fuzz-chosen frames (Frame and
//! RoutedFrame, fragmented or not, and valid TCP segments the `Coalescer`
//! merges), ones sealed under another network's key, mutated, replayed and
//! made-up ones, control messages, and time passing (`Client::poll`).
//!
//! Input: one byte of knobs (bit 0 offload, i.e. a `Coalescer`; bit 1 MSS
//! clamping; bits 2-3 the client's `max_datagram`; bits 4-5 the senders'),
//! then records, each an op byte whose low 3 bits say what follows:
//! * 0 **frame**: a byte (bits 0-1 sender, bit 2 RoutedFrame, bit 3 sealed
//!   under the other key) and a blob (u16 LE length, bytes): the frame,
//!   sealed and queued;
//! * 1 **TCP segment**: a byte (bits 0-1 flow, bit 2 IPv6, bit 3 PSH, bit 4
//!   RoutedFrame, bit 5 bad TCP checksum, bit 6 a gap in the sequence, bit
//!   7 the other key) and a byte of payload length (times 6, plus 1): the
//!   flow's next segment, sealed and queued;
//! * 2 **deliver**: the op's bits 3-5 plus 1 queued datagrams, from the
//!   front (from the back if bit 6), from the relay's address (another if
//!   bit 7);
//! * 3 **mutate**: a byte (which queued datagram) and a u16 LE (bits 0-2
//!   the bit, the rest the byte): that datagram with the bit flipped,
//!   delivered now (the original stays queued);
//! * 4 **replay**: a byte: a datagram delivered before, again;
//! * 5 **raw**: a blob, delivered as it is;
//! * 6 **flush**;
//! * 7 **control**: a byte: bits 0-2 pick RegisterAck (caps from bit 3),
//!   KeepaliveAck, NotRegistered, Register, Keepalive sealed by the relay,
//!   or (5-7) time passing by the op's bits 3-7 times 100 ms and `poll`
//!   (never past 290 s in all: see `MAX_ELAPSED`).
//!
//! Checked besides "no panic":
//! * a datagram that does not open under the network key (as a member
//!   opens it) is always a `Drop`;
//! * every (header, frame) delivered with a header other than
//!   `VnetHdr::NONE` passes `VnetHdr::validate`;
//! * every frame delivered with `VnetHdr::NONE` is one sealed under the
//!   network key (or it with its SYN's MSS clamped), at most as often as
//!   it was sealed;
//! * the TCP payload delivered in all (super-frames included) never
//!   exceeds what was sealed.
//!
//! Run from the repository's top level (cargo-fuzz from crates.io):
//! `cargo +nightly fuzz run client fuzz/corpus/client fuzz/seeds/client -- -max_total_time=120`,
//! or `scripts/fuzz.sh client`.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{Flow, Input};
use lanbridge::core::{
    client::{Client, ClientConfig, ClientEvent},
    frame::{mss, tcp::flags},
    offload::VnetHdr,
    wire::{self, Cipher, KeyCache, Kind, Message, Sealer, SessionId, CAP_ROUTED},
};
use libfuzzer_sys::fuzz_target;

const CLIENT_MAX_DATAGRAMS: [usize; 4] = [576, 1400, 9000, 65000];
const SENDER_MAX_DATAGRAMS: [usize; 4] = [71, 300, 1400, 9000];
const HISTORY: usize = 64;
/// How far time may run in one input. A client forgets the replay window
/// of a sender silent for 60 keepalives (300 s here), and then accepts its
/// old datagrams once more, as docs/protocol.md ("Replay protection")
/// says; the ledger does not model that, so time stays below it.
const MAX_ELAPSED: Duration = Duration::from_secs(290);

fn relay_addr() -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 1], 7171))
}

/// True if `d` opens under `cipher` the way a member opens it.
fn authentic(cipher: &Cipher, d: &[u8]) -> bool {
    let mut scratch = Vec::new();
    if d.get(1) == Some(&(Kind::RoutedFrame as u8)) {
        wire::open_routed(cipher, &mut KeyCache::default(), d, &mut scratch).is_ok()
    } else {
        wire::open(cipher, d, &mut scratch).is_ok()
    }
}

/// What was sealed under the network key, and what came out.
#[derive(Default)]
struct Ledger {
    /// Frames sealed and not yet delivered, with how often.
    sealed: HashMap<Vec<u8>, usize>,
    /// A frame with its SYN's MSS clamped, to the frame as sealed.
    clamped: HashMap<Vec<u8>, Vec<u8>>,
    tcp_sealed: usize,
    tcp_delivered: usize,
}

impl Ledger {
    fn add(&mut self, frame: &[u8], max_frame: usize) {
        *self.sealed.entry(frame.to_vec()).or_default() += 1;
        let mut c = frame.to_vec();
        if mss::clamp_mss(&mut c, max_frame, false).is_some() {
            self.clamped.insert(c, frame.to_vec());
        }
        self.tcp_sealed += common::tcp_payload_len(frame);
    }

    fn delivered(&mut self, hdr: &VnetHdr, frame: &[u8]) {
        self.tcp_delivered += common::tcp_payload_len(frame);
        if *hdr != VnetHdr::NONE {
            if let Err(e) = hdr.validate(frame) {
                panic!("delivered a header that does not validate: {e}: {hdr:?}");
            }
        } else {
            let key = match self.sealed.get(frame) {
                Some(n) if *n > 0 => frame.to_vec(),
                _ => self
                    .clamped
                    .get(frame)
                    .cloned()
                    .unwrap_or_else(|| frame.to_vec()),
            };
            match self.sealed.get_mut(&key) {
                Some(n) if *n > 0 => *n -= 1,
                _ => panic!(
                    "delivered a frame never sealed (or more often than sealed): {} bytes {:02x?}",
                    frame.len(),
                    &frame[..frame.len().min(64)]
                ),
            }
        }
        assert!(
            self.tcp_delivered <= self.tcp_sealed,
            "delivered {} TCP payload bytes, sealed {}",
            self.tcp_delivered,
            self.tcp_sealed
        );
    }
}

struct Harness {
    client: Client,
    start: Instant,
    now: Instant,
    a: Cipher,
    b: Cipher,
    members: [Sealer; 4],
    foreign: Sealer,
    relay: Sealer,
    sender_max: usize,
    max_frame: usize,
    queue: VecDeque<Vec<u8>>,
    history: VecDeque<Vec<u8>>,
    ledger: Ledger,
    /// Next sequence number per (flow, IPv6).
    seq: [u32; 8],
}

impl Harness {
    fn deliver(&mut self, from: SocketAddr, d: &[u8]) {
        let ledger = &mut self.ledger;
        let event = self
            .client
            .handle_datagram(self.now, from, d, &mut |_| {}, &mut |h, f| {
                ledger.delivered(h, f)
            });
        if !matches!(event, ClientEvent::Drop(_)) {
            assert!(from == relay_addr(), "{event:?} from another address");
            assert!(authentic(&self.a, d), "{event:?} for a forged datagram");
        }
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(d.to_vec());
    }

    fn flush(&mut self) {
        let ledger = &mut self.ledger;
        self.client.flush(&mut |h, f| ledger.delivered(h, f));
    }

    fn seal(&mut self, sender: usize, routed: bool, foreign: bool, frame: &[u8]) {
        let (cipher, sealer) = if foreign {
            (&self.b, &mut self.foreign)
        } else {
            (&self.a, &mut self.members[sender % 4])
        };
        let queue = &mut self.queue;
        let mut emit = |d: &[u8]| queue.push_back(d.to_vec());
        let sealed = if routed {
            sealer.seal_routed_frame(cipher, frame, self.sender_max, &mut emit)
        } else {
            sealer.seal_frame(cipher, frame, self.sender_max, &mut emit)
        };
        if sealed.is_ok() && !foreign {
            self.ledger.add(frame, self.max_frame);
        }
    }

    fn control(&mut self, msg: Message<'_>) {
        let mut d = Vec::new();
        if self.relay.seal(&self.a, &msg, &mut d).is_ok() {
            self.queue.push_back(d);
        }
    }

    fn step(&mut self, input: &mut Input<'_>) -> Option<()> {
        let op = input.u8()?;
        match op & 7 {
            0 => {
                let how = input.u8()?;
                let frame = input.blob()?;
                self.seal(usize::from(how & 3), how & 4 != 0, how & 8 != 0, frame);
            }
            1 => {
                let how = input.u8()?;
                let len = usize::from(input.u8()?) * 6 + 1;
                let slot = usize::from(how & 7);
                let flow = Flow {
                    v6: how & 4 != 0,
                    dst: [2, 0, 0, 0, 0, 0xd0 + (how & 1)],
                    src: [2, 0, 0, 0, 0, 0x50 + (how & 1)],
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
                self.seal(
                    usize::from(how & 3),
                    how & 0x10 != 0,
                    how & 0x80 != 0,
                    &frame,
                );
            }
            2 => {
                let n = usize::from((op >> 3) & 7) + 1;
                let from = if op & 0x80 != 0 {
                    SocketAddr::from(([192, 0, 2, 2], 7171))
                } else {
                    relay_addr()
                };
                for _ in 0..n {
                    let d = if op & 0x40 != 0 {
                        self.queue.pop_back()
                    } else {
                        self.queue.pop_front()
                    };
                    let Some(d) = d else { break };
                    self.deliver(from, &d);
                }
            }
            3 => {
                let which = usize::from(input.u8()?);
                let flip = input.u16()?;
                if self.queue.is_empty() {
                    return Some(());
                }
                let mut bad = self.queue[which % self.queue.len()].clone();
                let at = usize::from(flip >> 3) % bad.len();
                bad[at] ^= 1 << (flip & 7);
                self.deliver(relay_addr(), &bad);
            }
            4 => {
                let which = usize::from(input.u8()?);
                if !self.history.is_empty() {
                    let d = self.history[which % self.history.len()].clone();
                    self.deliver(relay_addr(), &d);
                }
            }
            5 => {
                let d = input.blob()?;
                self.deliver(relay_addr(), d);
            }
            6 => self.flush(),
            _ => {
                let what = input.u8()?;
                let caps = if what & 8 != 0 { CAP_ROUTED } else { 0 };
                match what & 7 {
                    0 => self.control(Message::RegisterAck {
                        caps,
                        keepalive_secs: 5,
                    }),
                    1 => self.control(Message::KeepaliveAck),
                    2 => self.control(Message::NotRegistered),
                    3 => self.control(Message::Register { caps }),
                    4 => self.control(Message::Keepalive),
                    _ => {
                        let later = self.now + Duration::from_millis(100 * u64::from(op >> 3));
                        self.now = later.min(self.start + MAX_ELAPSED);
                        self.client.poll(self.now, &mut |_| {});
                    }
                }
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
    let (a, b) = common::ciphers();
    let max_datagram = CLIENT_MAX_DATAGRAMS[usize::from((knobs >> 2) & 3)];
    let config = ClientConfig {
        offload: knobs & 1 != 0,
        clamp_mss: knobs & 2 != 0,
        max_datagram,
        ..ClientConfig::default()
    };
    let start = Instant::now();
    let mut h = Harness {
        client: Client::new(config, a.clone(), SessionId([0xc1; 16]), relay_addr()),
        start,
        now: start,
        a,
        b,
        members: std::array::from_fn(|i| Sealer::new(SessionId([0x10 + i as u8; 16]))),
        foreign: Sealer::new(SessionId([0xf0; 16])),
        relay: Sealer::new(SessionId([0xee; 16])),
        sender_max: SENDER_MAX_DATAGRAMS[usize::from((knobs >> 4) & 3)],
        max_frame: wire::max_frame_in_one_datagram(max_datagram),
        queue: VecDeque::new(),
        history: VecDeque::new(),
        ledger: Ledger::default(),
        seq: [0; 8],
    };
    while h.step(&mut input).is_some() {}
    h.flush();
});
