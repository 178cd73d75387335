//! A sequence of (source address, datagram) through
//! `core::relay::Relay::handle_datagram`, with `Relay::expire` at
//! fuzz-chosen times: a relay serving two networks, members of both (and
//! sessions that move between addresses or share one) registering, sending
//! keepalives, Frame and RoutedFrame datagrams between a few MACs, replays,
//! flipped bits and made-up datagrams.
//!
//! Input: records, each an op byte whose low 3 bits say what follows, and
//! whose bits 3-7 pick the sender (bits 3-5: 0-3 members of network A, 4-5
//! of network B, 6-7 of A again) and the source address (bits 6-7), unless
//! said otherwise:
//! * 0 **register**: a byte of capabilities (`CAP_ROUTED` is bit 1);
//! * 1 **keepalive**;
//! * 2 **frame**, 3 **routed frame**: a byte (bits 0-2 destination MAC,
//!   bits 3-5 source MAC, bits 6-7 `max_datagram`) and a byte of payload
//!   length (times 8): a frame sealed as Frame or RoutedFrame datagrams,
//!   all sent;
//! * 4 **raw**: a blob (u16 LE length, bytes), sent as it is;
//! * 5 **again**: a byte (which datagram sent before) and a u16 LE flip
//!   (bits 0-2 the bit, the rest the byte; 0 sends it unchanged);
//! * 6 **time**: the op's bits 3-7 in seconds pass (at least 1 ms),
//!   then `expire`;
//! * 7 **relay-only message**: RegisterAck, KeepaliveAck or NotRegistered
//!   from a member (the relay sends these, never takes them).
//!
//! Checked besides "no panic", for every datagram:
//! * a `Forward` never targets the datagram's own source address (not even
//!   when another session of the network was last seen there: the bug in
//!   fuzz/regressions/relay, fixed), nor one address twice, never
//!   follows a datagram that fails `peek_header`, only follows a Frame or
//!   RoutedFrame that authenticates under its network's key (`open`, or
//!   `check_route` for RoutedFrame), and only targets addresses of other
//!   registered peers of that network (`Relay::peers`);
//! * a `Reply` only answers a datagram that authenticates, and opens
//!   under that network's key;
//! * every push (`drain_pushes`) is a RegisterAck that opens under the key
//!   of the network of a registered peer at its address; pushes and events
//!   are drained after every step; no network holds more peers than
//!   `max_peers`.
//!
//! Run from the repository's top level (cargo-fuzz from crates.io):
//! `cargo +nightly fuzz run relay fuzz/corpus/relay fuzz/seeds/relay -- -max_total_time=120`,
//! or `scripts/fuzz.sh relay`.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::{
    collections::VecDeque,
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::Input;
use lanbridge::core::{
    relay::{Relay, RelayAction, RelayConfig},
    switch::SwitchConfig,
    wire::{self, Cipher, Kind, Message, Sealer, SessionId},
};
use libfuzzer_sys::fuzz_target;

const MAX_PEERS: usize = 3;
const MAX_DATAGRAMS: [usize; 4] = [120, 300, 1400, 9000];
const HISTORY: usize = 64;

fn addrs() -> [SocketAddr; 4] {
    [
        SocketAddr::from(([198, 51, 100, 1], 4000)),
        SocketAddr::from(([198, 51, 100, 2], 4000)),
        SocketAddr::from(([198, 51, 100, 2], 4001)),
        SocketAddr::from(([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], 4000)),
    ]
}

fn mac(i: u8) -> [u8; 6] {
    match i & 7 {
        0 => [0xff; 6],
        1 => [0x01, 0x00, 0x5e, 0, 0, 1],
        2 => [0; 6],
        n => [2, 0, 0, 0, 0, n],
    }
}

struct Harness {
    relay: Relay,
    now: Instant,
    a: Cipher,
    b: Cipher,
    /// Members 0-3 in network A, 4-5 in network B.
    members: [Sealer; 6],
    history: VecDeque<Vec<u8>>,
}

impl Harness {
    fn cipher_of(&self, member: usize) -> &Cipher {
        if member >= 4 {
            &self.b
        } else {
            &self.a
        }
    }

    /// The network's cipher for a datagram's header, if the relay serves it.
    fn network(&self, d: &[u8]) -> Option<&Cipher> {
        let h = wire::peek_header(d).ok()?;
        [&self.a, &self.b]
            .into_iter()
            .find(|c| c.network_id() == h.network_id)
    }

    /// True if `d` authenticates under its network's key as the relay
    /// checks it.
    fn authentic(&self, d: &[u8]) -> bool {
        let Some(cipher) = self.network(d) else {
            return false;
        };
        if d[1] == Kind::RoutedFrame as u8 {
            return wire::check_route(cipher, d).is_ok();
        }
        wire::open(cipher, d, &mut Vec::new()).is_ok()
    }

    fn send(&mut self, from: SocketAddr, d: &[u8]) {
        // What the relay will know of the peers is checked against what it
        // knew before, plus the sender itself after the datagram.
        let peeked = wire::peek_header(d);
        let authentic = self.authentic(d);
        let cipher = self.network(d).cloned();
        let now = self.now;
        let action = self.relay.handle_datagram(now, from, d);
        let (forward, reply) = match action {
            RelayAction::Forward(targets) => (Some(targets.to_vec()), None),
            RelayAction::Reply(bytes) => (None, Some(bytes.to_vec())),
            RelayAction::Drop(_) => (None, None),
        };
        if let Some(targets) = forward {
            let h = peeked.expect("forwarded a datagram that fails peek_header");
            assert!(matches!(h.kind, Kind::Frame | Kind::RoutedFrame), "{h:?}");
            assert!(authentic, "forwarded a datagram that does not authenticate");
            assert!(!targets.is_empty());
            let peers = self.relay.peers(now);
            assert!(
                !targets.contains(&from),
                "forwarded back to its source {from}: {targets:?}"
            );
            let mut unique = targets.clone();
            unique.sort();
            unique.dedup();
            assert!(
                unique.len() == targets.len(),
                "forwarded twice to one address: {targets:?}"
            );
            for t in &targets {
                assert!(
                    peers.iter().any(|p| p.addr == *t
                        && p.network == h.network_id
                        && p.session != h.session),
                    "forwarded to {t}, no other peer of the network there: {peers:?}"
                );
            }
        }
        if let Some(reply) = reply {
            assert!(authentic, "answered a datagram that does not authenticate");
            let cipher = cipher.expect("answered a datagram of no network");
            let mut scratch = Vec::new();
            let (_, m) = wire::open(&cipher, &reply, &mut scratch).expect("reply opens");
            assert!(
                matches!(
                    m,
                    Message::RegisterAck { .. } | Message::KeepaliveAck | Message::NotRegistered
                ),
                "{m:?}"
            );
        }
        self.drain();
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(d.to_vec());
    }

    fn drain(&mut self) {
        let now = self.now;
        let pushes: Vec<_> = self.relay.drain_pushes().collect();
        let peers = self.relay.peers(now);
        for (addr, d) in pushes {
            let cipher = self.network(&d).expect("a push of no network");
            let mut scratch = Vec::new();
            let (_, m) = wire::open(cipher, &d, &mut scratch).expect("a push opens");
            assert!(matches!(m, Message::RegisterAck { .. }), "pushed {m:?}");
            assert!(
                peers
                    .iter()
                    .any(|p| p.addr == addr && p.network == cipher.network_id()),
                "pushed to {addr}, no peer of the network there"
            );
        }
        self.relay.drain_events().for_each(drop);
        for net in [&self.a, &self.b] {
            let n = peers
                .iter()
                .filter(|p| p.network == net.network_id())
                .count();
            assert!(n <= MAX_PEERS, "{n} peers");
        }
    }

    fn seal_msg(&mut self, member: usize, msg: Message<'_>) -> Vec<u8> {
        let mut d = Vec::new();
        let cipher = self.cipher_of(member).clone();
        // The counter never runs out in a fuzz run.
        self.members[member]
            .seal(&cipher, &msg, &mut d)
            .expect("seal a message");
        d
    }

    fn step(&mut self, input: &mut Input<'_>) -> Option<()> {
        let op = input.u8()?;
        let member = [0, 1, 2, 3, 4, 5, 0, 1][usize::from((op >> 3) & 7)];
        let from = addrs()[usize::from(op >> 6)];
        match op & 7 {
            0 => {
                let caps = u32::from(input.u8()?);
                let d = self.seal_msg(member, Message::Register { caps });
                self.send(from, &d);
            }
            1 => {
                let d = self.seal_msg(member, Message::Keepalive);
                self.send(from, &d);
            }
            2 | 3 => {
                let how = input.u8()?;
                let len = usize::from(input.u8()?) * 8;
                let mut frame = Vec::with_capacity(14 + len);
                frame.extend_from_slice(&mac(how));
                frame.extend_from_slice(&mac(how >> 3));
                frame.extend_from_slice(&[0x88, 0xb5]);
                frame.extend((0..len).map(|i| i as u8));
                let max = MAX_DATAGRAMS[usize::from(how >> 6)];
                let cipher = self.cipher_of(member).clone();
                let mut out = Vec::new();
                let mut emit = |d: &[u8]| out.push(d.to_vec());
                let sealer = &mut self.members[member];
                let _ = if op & 7 == 3 {
                    sealer.seal_routed_frame(&cipher, &frame, max, &mut emit)
                } else {
                    sealer.seal_frame(&cipher, &frame, max, &mut emit)
                };
                for d in out {
                    self.send(from, &d);
                }
            }
            4 => {
                let d = input.blob()?;
                self.send(from, d);
            }
            5 => {
                let which = usize::from(input.u8()?);
                let flip = input.u16()?;
                if self.history.is_empty() {
                    return Some(());
                }
                let mut d = self.history[which % self.history.len()].clone();
                if flip != 0 {
                    let at = usize::from(flip >> 3) % d.len().max(1);
                    if let Some(b) = d.get_mut(at) {
                        *b ^= 1 << (flip & 7);
                    }
                }
                self.send(from, &d);
            }
            6 => {
                let secs = u64::from(op >> 3);
                self.now += Duration::from_secs(secs).max(Duration::from_millis(1));
                self.relay.expire(self.now);
                self.drain();
            }
            _ => {
                let what = input.u8()?;
                let msg = match what % 3 {
                    0 => Message::RegisterAck {
                        caps: u32::from(what),
                        keepalive_secs: 5,
                    },
                    1 => Message::KeepaliveAck,
                    _ => Message::NotRegistered,
                };
                let d = self.seal_msg(member, msg);
                self.send(from, &d);
            }
        }
        Some(())
    }
}

fuzz_target!(|data: &[u8]| {
    let (a, b) = common::ciphers();
    let config = RelayConfig {
        keepalive: Duration::from_secs(5),
        peer_timeout: Duration::from_secs(20),
        max_peers: MAX_PEERS,
        switch: SwitchConfig {
            max_macs_per_port: 3,
            max_macs: 6,
            mac_max_age: Duration::from_secs(60),
        },
    };
    let mut h = Harness {
        relay: Relay::new(config, vec![a.clone(), b.clone()], SessionId([0xee; 16])),
        now: Instant::now(),
        a,
        b,
        members: std::array::from_fn(|i| Sealer::new(SessionId([0x10 + i as u8; 16]))),
        history: VecDeque::new(),
    };
    let mut input = Input::new(data);
    while h.step(&mut input).is_some() {}
});
