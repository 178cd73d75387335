//! Untrusted datagrams through everything in `core::wire` that reads them:
//! `peek_header`, `open` / `open_cached`, `check_route`, `open_routed`
//! (each under the test key and a second key), `Message::parse` for every
//! `Kind` and `Fragment::parse`; and frames and messages from fuzz bytes
//! sealed with `Sealer` and opened again, whole and with a bit flipped.
//!
//! Input: one mode byte, then
//! * mode even (**raw**): the rest is one datagram, fed to every parser;
//! * mode odd (**seal**): one byte of knobs (bits 0-2 the `max_datagram`,
//!   bit 3 RoutedFrame, bits 4-6 the kind for `seal_raw`), two
//!   little-endian u16 flip positions (their low 3 bits pick the bit,
//!   the rest the byte), then the frame (also the plaintext for
//!   `seal_raw` and the capabilities of a control message).
//!
//! Checked besides "no panic":
//! * raw: `open` and `open_cached` agree; what opens under one key never
//!   opens under the other; an opened header is the peeked one; a parsed
//!   message or fragment encodes back to the same bytes and keeps
//!   `count >= 1`, `index < count`; a routed fragment's clear route is
//!   the one in the datagram;
//! * seal: every datagram is at most `max_datagram` bytes and opens under
//!   the key it was sealed with (not under the other), the fragments put
//!   back together are the frame; with one bit flipped a datagram never
//!   opens to different plaintext: it fails, except a flip in a
//!   RoutedFrame's relay tag, which the receiver does not check (the relay
//!   does, `check_route` then fails) and which opens to the same bytes;
//!   a control message or `seal_raw` payload opens to what was sealed, or
//!   (raw) is `Malformed`, never `Forged`.
//!
//! Run from the repository's top level (cargo-fuzz from crates.io):
//! `cargo +nightly fuzz run datagram fuzz/corpus/datagram fuzz/seeds/datagram -- -max_total_time=120`,
//! or `scripts/fuzz.sh datagram`. `fuzz/seeds/datagram` holds genuine
//! datagrams of every kind sealed under the test key (raw mode) and
//! frames to seal (seal mode).

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use common::Input;
use lanbridge::core::{
    mac::MacAddr,
    wire::{
        self, Cipher, Fragment, Header, KeyCache, Kind, Message, Reassembler, Sealer, SessionId,
        WireError, HEADER_LEN, MAX_DATAGRAM, RELAY_TAG_LEN, ROUTED_OVERHEAD, ROUTE_LEN,
    },
};
use libfuzzer_sys::fuzz_target;

const KINDS: [Kind; 7] = [
    Kind::Register,
    Kind::RegisterAck,
    Kind::Keepalive,
    Kind::KeepaliveAck,
    Kind::NotRegistered,
    Kind::Frame,
    Kind::RoutedFrame,
];

const MAX_DATAGRAMS: [usize; 8] = [0, 71, 87, 120, 576, 1400, 9000, usize::MAX];

/// A message and its encoding are one thing: parse, encode, same bytes.
fn check_message(kind: Kind, payload: &[u8]) {
    let Ok(msg) = Message::parse(kind, payload) else {
        return;
    };
    assert_eq!(msg.kind(), kind);
    let mut again = Vec::new();
    msg.encode(&mut again);
    assert!(again == payload, "{kind:?} does not encode back");
}

fn check_fragment(payload: &[u8]) {
    let Ok(f) = Fragment::parse(payload) else {
        return;
    };
    assert!(f.count() >= 1 && f.index() < f.count());
    assert_eq!(f.frame_id().to_be_bytes(), payload[..4]);
    assert_eq!(f.dst(), MacAddr::from_slice(&payload[6..]).unwrap());
    assert_eq!(f.src(), MacAddr::from_slice(&payload[12..]).unwrap());
    assert!(f.chunk() == &payload[18..]);
    assert_eq!(
        f.as_whole_frame(),
        (f.count() == 1).then_some(&payload[6..])
    );
}

/// Opens `d` under `cipher` as a member does: a RoutedFrame with
/// `open_routed`, the rest with `open`; returns the header and the
/// plaintext (the route and chunk of a routed frame).
fn open_any(cipher: &Cipher, d: &[u8]) -> Result<(Header, Vec<u8>), WireError> {
    let mut scratch = Vec::new();
    if d.get(1) == Some(&(Kind::RoutedFrame as u8)) {
        let (h, _) = wire::open_routed(cipher, &mut KeyCache::default(), d, &mut scratch)?;
        return Ok((h, scratch));
    }
    let (h, m) = wire::open(cipher, d, &mut scratch)?;
    let mut plain = Vec::new();
    m.encode(&mut plain);
    Ok((h, plain))
}

fn raw(d: &[u8]) {
    let peeked = wire::peek_header(d);
    for kind in KINDS {
        check_message(kind, d);
    }
    check_fragment(d);

    let (a, b) = common::ciphers();
    let mut opened_under = 0;
    for cipher in [&a, &b] {
        let mut s1 = Vec::new();
        let mut s2 = Vec::new();
        let plain = wire::open(cipher, d, &mut s1);
        let cached = wire::open_cached(cipher, &mut KeyCache::default(), d, &mut s2);
        assert_eq!(plain, cached, "open and open_cached disagree");
        if let Ok((h, m)) = plain {
            assert_eq!(Ok(h), peeked);
            assert_eq!(h.network_id, cipher.network_id());
            assert_eq!(m.kind(), h.kind);
            opened_under += 1;
        }

        if let Ok((h, f)) = wire::check_route(cipher, d) {
            assert_eq!(Ok(h), peeked);
            assert_eq!(h.kind, Kind::RoutedFrame);
            assert_eq!(f.dst(), MacAddr::from_slice(&d[HEADER_LEN + 6..]).unwrap());
            assert_eq!(f.src(), MacAddr::from_slice(&d[HEADER_LEN + 12..]).unwrap());
            assert_eq!(f.chunk().len(), d.len() - ROUTED_OVERHEAD);
        }
        let mut s3 = Vec::new();
        if let Ok((h, f)) = wire::open_routed(cipher, &mut KeyCache::default(), d, &mut s3) {
            assert_eq!(Ok(h), peeked);
            assert_eq!(h.network_id, cipher.network_id());
            assert_eq!(f.chunk().len(), d.len() - ROUTED_OVERHEAD);
            assert!(s3[..ROUTE_LEN] == d[HEADER_LEN..HEADER_LEN + ROUTE_LEN]);
            opened_under += 1;
        }
    }
    assert!(opened_under <= 1, "opened under both keys");
}

/// Seals `frame` as Frame or RoutedFrame datagrams and checks them.
fn seal_frame(knobs: u8, flips: [u16; 2], frame: &[u8]) {
    let (a, b) = common::ciphers();
    let max = MAX_DATAGRAMS[usize::from(knobs & 7)];
    let routed = knobs & 8 != 0;
    let mut sealer = Sealer::new(SessionId([0x5e; 16]));
    let mut datagrams = Vec::new();
    let mut emit = |d: &[u8]| datagrams.push(d.to_vec());
    let sealed = if routed {
        sealer.seal_routed_frame(&a, frame, max, &mut emit)
    } else {
        sealer.seal_frame(&a, frame, max, &mut emit)
    };
    let count = match sealed {
        Ok(n) => n,
        Err(e) => {
            assert!(datagrams.is_empty(), "{e} after emitting");
            if frame.len() < wire::MIN_FRAME {
                assert_eq!(e, WireError::FrameTooShort);
            }
            return;
        }
    };
    assert_eq!(count, datagrams.len());
    assert!(frame.len() >= wire::MIN_FRAME && frame.len() <= wire::MAX_FRAME);
    assert_eq!(sealer.counter(), count as u64);

    let mut reassembler = Reassembler::default();
    let mut whole = None;
    let now = std::time::Instant::now();
    for (i, d) in datagrams.iter().enumerate() {
        assert!(d.len() <= max.min(MAX_DATAGRAM), "{} > {max}", d.len());
        let kind = if routed {
            Kind::RoutedFrame
        } else {
            Kind::Frame
        };
        assert_eq!(d[1], kind as u8);
        assert!(open_any(&b, d).is_err(), "opens under the other key");
        if routed {
            wire::check_route(&a, d).expect("the relay accepts a routed frame");
            assert!(wire::check_route(&b, d).is_err());
        }
        let (h, plain) = open_any(&a, d).expect("a sealed datagram opens");
        assert_eq!(h.counter, i as u64);
        let frag = Fragment::parse(&plain).expect("a sealed fragment parses");
        assert_eq!(
            (usize::from(frag.index()), usize::from(frag.count())),
            (i, count)
        );
        if let Some(r) = reassembler
            .push(now, h.session, &frag)
            .expect("sealed fragments reassemble")
        {
            assert_eq!(i + 1, count);
            whole = Some(r.frame.to_vec());
        }

        for flip in flips {
            let mut bad = d.clone();
            let at = usize::from(flip >> 3) % bad.len();
            bad[at] ^= 1 << (flip & 7);
            let relay_tag = routed && at >= bad.len() - RELAY_TAG_LEN;
            match open_any(&a, &bad) {
                Ok((_, p)) => {
                    assert!(relay_tag, "byte {at} of {} flipped, still opens", bad.len());
                    assert!(p == plain, "a flipped relay tag changed the plaintext");
                }
                Err(_) => assert!(!relay_tag, "a flipped relay tag fails the receiver"),
            }
            if routed {
                // The relay tag covers header and route, not the chunk.
                let covered = at < HEADER_LEN + ROUTE_LEN || relay_tag;
                assert_eq!(wire::check_route(&a, &bad).is_err(), covered, "byte {at}");
            }
        }
    }
    assert!(whole.as_deref() == Some(frame), "reassembled frame differs");
}

/// Seals a control message and raw payloads of any kind, opens them again.
fn seal_messages(knobs: u8, flips: [u16; 2], payload: &[u8]) {
    let (a, b) = common::ciphers();
    let mut sealer = Sealer::new(SessionId([0x5f; 16]));
    let word = |i: usize| payload.get(i).copied().unwrap_or(0);
    let caps = u32::from_be_bytes([word(0), word(1), word(2), word(3)]);
    let msgs = [
        Message::Register { caps },
        Message::RegisterAck {
            caps,
            keepalive_secs: u16::from_be_bytes([word(4), word(5)]),
        },
        Message::Keepalive,
        Message::KeepaliveAck,
        Message::NotRegistered,
    ];
    let msg = msgs[usize::from(knobs >> 4) % msgs.len()];
    let mut d = Vec::new();
    sealer
        .seal(&a, &msg, &mut d)
        .expect("seal a control message");
    let mut scratch = Vec::new();
    let (h, m) = wire::open(&a, &d, &mut scratch).expect("a sealed message opens");
    assert_eq!((h.kind, m), (msg.kind(), msg));
    assert!(wire::open(&b, &d, &mut scratch).is_err());
    for flip in flips {
        let mut bad = d.clone();
        let at = usize::from(flip >> 3) % bad.len();
        bad[at] ^= 1 << (flip & 7);
        assert!(wire::open(&a, &bad, &mut scratch).is_err(), "byte {at}");
    }

    // Any payload under any kind: what was sealed, or Malformed.
    let kind = KINDS[usize::from(knobs >> 4) % KINDS.len()];
    match sealer.seal_raw(&a, kind, payload, &mut d) {
        Ok(()) => {}
        Err(e) => {
            assert_eq!(e, WireError::TooBig);
            assert!(wire::OVERHEAD + payload.len() > MAX_DATAGRAM);
            return;
        }
    }
    assert_eq!(d.len(), wire::OVERHEAD + payload.len());
    match wire::open(&a, &d, &mut scratch) {
        Ok((h, m)) => {
            assert_eq!(h.kind, kind);
            let mut again = Vec::new();
            m.encode(&mut again);
            assert!(again == payload);
        }
        Err(WireError::Malformed(_)) => {}
        Err(e) => panic!("seal_raw of {kind:?} opens as {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let Some(mode) = input.u8() else {
        return;
    };
    if mode & 1 == 0 {
        raw(input.rest());
        return;
    }
    let (Some(knobs), Some(f0), Some(f1)) = (input.u8(), input.u16(), input.u16()) else {
        return;
    };
    let rest = input.rest();
    seal_frame(knobs, [f0, f1], rest);
    seal_messages(knobs, [f0, f1], rest);
});
