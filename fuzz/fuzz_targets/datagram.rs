//! Untrusted bytes through every parser of protocol version 2: the clear
//! header check `codec::peek`, `Control::parse`, `wire::Fragment::parse`,
//! and the handshake and session paths of the engines (a fresh `Relay` and
//! a `Client` waiting for its relay's answer); frames cut with
//! `codec::cut_frame` and put back together; control messages encoded and
//! parsed back; and session keypairs (`proto::session::Keypair`) sealing,
//! opening and tagging, whole and with bits flipped.
//!
//! Input: one mode byte, then by `mode % 4`:
//! * 0 **raw**: the rest is one datagram, fed to every parser and to both
//!   engines (the relay from one of two addresses: mode bit 2);
//! * 1 **cut**: a byte picking the chunk room, a u32 LE frame id, then the
//!   frame;
//! * 2 **control**: a byte picking a message, then its fields and the rest
//!   (parsed as it is, too);
//! * 3 **seal**: a byte of knobs (bits 0-1 how many datagrams go first,
//!   bit 2 Control or Data), two u16 LE flip positions (low 3 bits the
//!   bit, the rest the byte), then the plaintext.
//!
//! Checked besides "no panic":
//! * raw: what `peek` accepts has version 2, zero flags, its kind in byte 1
//!   and the length rule of its kind; what it refuses is refused for the
//!   first rule broken; a control message or fragment that parses encodes
//!   back to the same bytes, with `count >= 1`, `index < count`; the relay
//!   forwards nothing (it has no member) and answers only a Rejoin (8
//!   bytes naming the datagram's index) to a Control or routed datagram,
//!   or an UplinkResp or CookieReply to an UplinkInit, never more bytes
//!   than it got; the client accepts nothing but the relay's answer to its
//!   own initiation (a seed carries it: the run is deterministic);
//! * cut: every fragment parses with the frame's id, MACs, index and count,
//!   fits the room, and the fragments reassemble into the frame; a frame
//!   that can't be cut (too short, too long, too many fragments, no room)
//!   is refused before anything is emitted;
//! * control: encode then parse gives the message back;
//! * seal: what one side seals opens on the other once (the second time it
//!   is `Replayed`), never under the sender's own keys, and with a bit
//!   flipped never opens (`Forged`) and leaves the replay window as it was;
//!   a relay tag holds for the bytes and length it covers only.
//!
//! Run from the repository's top level: `scripts/fuzz.sh datagram` (which
//! sets the RUSTFLAGS of fuzz/common/mod.rs), or with them set
//! `cargo +nightly fuzz run datagram fuzz/corpus/datagram fuzz/seeds/datagram -- -max_total_time=120`.
//! `fuzz/seeds/datagram` holds datagrams of every kind captured from an
//! in-memory network (`fuzz/examples/seeds.rs`).

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::time::Instant;

use common::Input;
use lanbridge::core::{
    client::ClientEvent,
    mac::MacAddr,
    noise::TransportKeys,
    proto::{
        codec::{
            self, control, cookie_reply, data, peer_init, peer_resp, rejoin, routed, uplink_init,
            uplink_resp, Control, Kind, MEMBERS_PER_MESSAGE, MEMBER_ENTRY_LEN,
        },
        session::Keypair,
    },
    wire::{Fragment, Reassembler, WireError, MACS_LEN, MAX_FRAGMENTS, MAX_FRAME, MIN_FRAME},
};
use libfuzzer_sys::fuzz_target;

const ROOMS: [usize; 7] = [0, 1, 7, 64, 255, 1300, usize::MAX];

/// `peek`'s verdict, rule by rule.
fn check_peek(d: &[u8]) -> Option<Kind> {
    let got = codec::peek(d);
    if d.len() < 4 {
        assert_eq!(got, Err(WireError::Truncated));
        return None;
    }
    if d[0] != codec::VERSION {
        assert_eq!(got, Err(WireError::BadVersion(d[0])));
        return None;
    }
    if d[2] != 0 || d[3] != 0 {
        assert_eq!(got, Err(WireError::BadFlags));
        return None;
    }
    let Ok(kind) = got else {
        return None;
    };
    assert_eq!(kind as u8, d[1]);
    let n = d.len();
    let ok = match kind {
        Kind::UplinkInit => n == uplink_init::LEN,
        Kind::UplinkResp => n == uplink_resp::LEN,
        Kind::CookieReply => n == cookie_reply::LEN,
        Kind::Rejoin => n == rejoin::LEN,
        Kind::Control => n > control::HEADER_LEN + codec::TAG_LEN,
        Kind::PeerInit => n == routed::OVERHEAD + peer_init::LEN,
        Kind::PeerResp => n == routed::OVERHEAD + peer_resp::LEN,
        Kind::Data => n >= routed::OVERHEAD + data::HEADER_LEN + codec::TAG_LEN,
        Kind::Direct => n >= codec::direct::HEADER_LEN + data::HEADER_LEN + codec::TAG_LEN,
        Kind::PeerPath => n > routed::OVERHEAD + data::HEADER_LEN + codec::TAG_LEN,
        Kind::DirectPath => n > codec::direct::HEADER_LEN + data::HEADER_LEN + codec::TAG_LEN,
    };
    assert!(ok, "{kind:?} of {n} bytes passed peek");
    Some(kind)
}

/// A path message and its encoding are one thing.
fn check_path(p: &[u8]) {
    let Ok(m) = codec::PathMessage::parse(p) else {
        return;
    };
    let mut again = Vec::new();
    m.encode(&mut again);
    assert_eq!(again, p, "{m:?} encodes to other bytes");
}

/// A control message and its encoding are one thing.
fn check_control(p: &[u8]) {
    let Ok(m) = Control::parse(p) else {
        return;
    };
    let mut again = Vec::new();
    m.encode(&mut again);
    assert!(again == p, "{m:?} does not encode back");
    if let Control::Members { entries, .. } = m {
        assert_eq!(entries.len() % MEMBER_ENTRY_LEN, 0);
        assert!(entries.len() <= MEMBERS_PER_MESSAGE * MEMBER_ENTRY_LEN);
    }
}

fn check_fragment(p: &[u8]) {
    let Ok(f) = Fragment::parse(p) else {
        return;
    };
    assert!(f.count() >= 1 && f.index() < f.count());
    assert_eq!(f.frame_id().to_be_bytes(), p[..4]);
    assert_eq!(f.dst(), MacAddr::from_slice(&p[6..]).unwrap());
    assert_eq!(f.src(), MacAddr::from_slice(&p[12..]).unwrap());
    assert!(f.chunk() == &p[18..]);
    assert_eq!(f.as_whole_frame(), (f.count() == 1).then_some(&p[6..]));
}

fn raw(d: &[u8], other_address: bool) {
    let kind = check_peek(d);
    check_control(d);
    check_path(d);
    check_fragment(d);
    match kind {
        Some(Kind::Control) => check_control(&d[control::HEADER_LEN..d.len() - codec::TAG_LEN]),
        Some(Kind::Data) => {
            let inner = &d[routed::HEADER_LEN..d.len() - codec::TAG_LEN];
            check_fragment(&inner[data::HEADER_LEN..inner.len() - codec::TAG_LEN]);
        }
        _ => {}
    }

    // The engines, as a stranger's datagram finds them.
    let now = Instant::now();
    let (mut relay, mut client, init) = common::stranger_engines(now);
    let from = common::addrs()[usize::from(other_address)];
    match common::owned(relay.handle_datagram(now, from, d)) {
        common::Action::Forward(to, f) => {
            panic!("a relay without members forwarded {} bytes to {to}", f.len())
        }
        common::Action::Reply(r) => {
            assert!(r.len() <= d.len(), "answered {} bytes to {}", r.len(), d.len());
            match kind {
                Some(
                    Kind::Control | Kind::PeerInit | Kind::PeerResp | Kind::Data | Kind::PeerPath,
                ) => {
                    assert_eq!(r.len(), rejoin::LEN);
                    assert_eq!(codec::peek(&r), Ok(Kind::Rejoin));
                    assert_eq!(r[rejoin::RECEIVER], d[4..8]);
                }
                Some(Kind::UplinkInit) => {
                    let k = codec::peek(&r);
                    assert!(matches!(k, Ok(Kind::UplinkResp | Kind::CookieReply)), "{k:?}");
                }
                _ => panic!("answered a {kind:?}"),
            }
        }
        common::Action::Drop(_) => {}
    }
    // Never twice: a Rejoin goes once a second to an address, and an
    // initiation's timestamp is good once.
    let again = common::owned(relay.handle_datagram(now, from, d));
    assert!(matches!(again, common::Action::Drop(_)), "answered twice: {again:?}");

    let relay_addr = common::relay_addr();
    let mut delivered = 0;
    for from in [from, relay_addr] {
        let event = client.handle_datagram(now, from, d, &mut |_, _| delivered += 1);
        common::transmits(&mut client);
        if from != relay_addr {
            // Only the direct kinds are taken from another address, and
            // only under a member session this stranger can't have.
            assert!(matches!(event, ClientEvent::Drop(_)), "{event:?}");
        } else if event == ClientEvent::Registered {
            // Only the answer to our own initiation: its receiver is our index.
            assert_eq!(kind, Some(Kind::UplinkResp));
            assert_eq!(d[uplink_resp::RECEIVER], init[uplink_init::SENDER]);
        } else {
            assert!(matches!(event, ClientEvent::Drop(_) | ClientEvent::Nothing), "{event:?}");
        }
    }
    assert_eq!(delivered, 0, "a frame from a stranger's datagram");
}

fn cut(input: &mut Input<'_>) {
    let (Some(r), Some(id0), Some(id1)) = (input.u8(), input.u16(), input.u16()) else {
        return;
    };
    let room = match r & 7 {
        7 => usize::from(r >> 3) * 61 + 1,
        i => ROOMS[usize::from(i)],
    };
    let frame_id = u32::from(id0) | u32::from(id1) << 16;
    let frame = input.rest();
    let mut fragments = Vec::new();
    let result = codec::cut_frame(frame, room, frame_id, &mut Vec::new(), &mut |p| {
        fragments.push(p.to_vec());
        Ok(())
    });
    let count = match result {
        Ok(n) => n,
        Err(e) => {
            assert!(fragments.is_empty(), "{e} after emitting");
            let body = frame.len().saturating_sub(MACS_LEN);
            let want = if frame.len() < MIN_FRAME {
                WireError::FrameTooShort
            } else if frame.len() > MAX_FRAME {
                WireError::TooBig
            } else if room == 0 {
                WireError::DatagramLimitTooSmall(0)
            } else {
                assert!(body.div_ceil(room) > MAX_FRAGMENTS, "refused {e}");
                WireError::TooBig
            };
            assert_eq!(e, want);
            return;
        }
    };
    assert_eq!(count, fragments.len());
    let mut reassembler = Reassembler::default();
    let now = Instant::now();
    let mut whole = None;
    for (i, p) in fragments.iter().enumerate() {
        let f = Fragment::parse(p).expect("a cut fragment parses");
        assert_eq!((usize::from(f.index()), usize::from(f.count())), (i, count));
        assert_eq!(f.frame_id(), frame_id);
        assert!(f.chunk().len() <= room, "{} > {room}", f.chunk().len());
        assert_eq!(f.dst(), MacAddr::from_slice(frame).unwrap());
        assert_eq!(f.src(), MacAddr::from_slice(&frame[6..]).unwrap());
        let r = reassembler
            .push(now, lanbridge::core::wire::SessionId([7; 16]), &f)
            .expect("cut fragments reassemble");
        if let Some(r) = r {
            assert_eq!(i + 1, count);
            whole = Some(r.frame.to_vec());
        }
    }
    assert!(whole.as_deref() == Some(frame), "reassembled frame differs");
    // A frame of the size made for one datagram fits one.
    let one = codec::max_frame_in_one_datagram(1400);
    if frame.len() <= one {
        let n = codec::cut_frame(frame, 1400 - codec::DATA_OVERHEAD, 0, &mut Vec::new(), &mut |_| Ok(()));
        assert_eq!(n, Ok(1));
    }
}

fn control_messages(input: &mut Input<'_>) {
    let Some(which) = input.u8() else {
        return;
    };
    let word = |input: &mut Input<'_>| {
        let (a, b) = (input.u16().unwrap_or(0), input.u16().unwrap_or(0));
        u32::from(a) | u32::from(b) << 16
    };
    let (w0, w1, w2) = (word(input), word(input), word(input));
    let rest = input.rest();
    let entries_len = (rest.len() / MEMBER_ENTRY_LEN).min(MEMBERS_PER_MESSAGE) * MEMBER_ENTRY_LEN;
    let m = match which % 4 {
        0 => Control::Keepalive,
        1 => Control::KeepaliveAck {
            keepalive_secs: w0 as u16,
            generation: w1,
            observed: std::net::SocketAddr::from((w2.to_be_bytes(), w0 as u16)),
        },
        2 => Control::GetMembers { from: w0 },
        _ => Control::Members {
            generation: w0,
            total: w1,
            from: w2,
            entries: &rest[..entries_len],
        },
    };
    let mut out = Vec::new();
    m.encode(&mut out);
    assert_eq!(Control::parse(&out), Ok(m));
    out.push(which);
    assert!(Control::parse(&out).is_err(), "{m:?} with a byte more parses");
    check_control(rest);
}

/// Two ends of one session, without a handshake: the keys are fixed.
fn keypairs(now: Instant) -> (Keypair, Keypair) {
    let keys = |send: u8, recv: u8| TransportKeys {
        send: [send; 32],
        recv: [recv; 32],
        handshake_hash: [0; 32],
        remote_static: [0; 32],
    };
    (
        Keypair::new(&keys(1, 2), 10, 20, true, now),
        Keypair::new(&keys(2, 1), 20, 10, false, now),
    )
}

fn flip(d: &[u8], at: u16) -> (Vec<u8>, usize) {
    let mut bad = d.to_vec();
    let i = usize::from(at >> 3) % bad.len().max(1);
    if let Some(b) = bad.get_mut(i) {
        *b ^= 1 << (at & 7);
    }
    (bad, i)
}

fn seal(input: &mut Input<'_>) {
    let (Some(knobs), Some(f0), Some(f1)) = (input.u8(), input.u16(), input.u16()) else {
        return;
    };
    let plain = input.rest();
    let now = Instant::now();
    let (mut a, mut b) = keypairs(now);
    for _ in 0..(knobs & 3) {
        a.next_counter().unwrap();
    }
    // Sealed as a member seals Data inner parts, or as Control.
    let (d, head_len) = if knobs & 4 == 0 {
        (common::seal_data_inner(&mut a, plain).unwrap(), data::HEADER_LEN)
    } else {
        (common::seal_control(&mut a, plain).unwrap(), control::HEADER_LEN)
    };
    let counter_at = if head_len == data::HEADER_LEN { data::COUNTER } else { control::COUNTER };
    let counter = codec::be64(&d, counter_at.clone());
    assert_eq!(counter, u64::from(knobs & 3));
    let open = |kp: &mut Keypair, d: &[u8]| {
        let (head, rest) = d.split_at(head_len);
        let (ct, tag) = rest.split_at(rest.len() - codec::TAG_LEN);
        let mut p = ct.to_vec();
        kp.open(codec::be64(d, counter_at.clone()), head, &mut p, tag).map(|()| p)
    };
    for at in [f0, f1] {
        let (bad, i) = flip(&d, at);
        let fresh = b.fresh(codec::be64(&bad, counter_at.clone()));
        match open(&mut b, &bad) {
            Ok(_) => panic!("byte {i} of {} flipped, still opens", bad.len()),
            Err(e) => assert!(
                e == WireError::Forged || (e == WireError::Replayed && !fresh),
                "{e}"
            ),
        }
        assert!(b.fresh(counter), "a forged datagram moved the window");
    }
    assert_eq!(open(&mut a, &d), Err(WireError::Forged), "opens under its sender's keys");
    assert_eq!(open(&mut b, &d).as_deref(), Ok(plain), "does not open to what was sealed");
    assert_eq!(open(&mut b, &d), Err(WireError::Replayed));

    // The relay tag: over the covered bytes and the length, nothing else.
    let covered = &d[..head_len.min(d.len())];
    let tag = a.send_tag(covered, d.len());
    let mut checker = keypairs(now).1;
    for at in [f0, f1] {
        let (bad, _) = flip(covered, at);
        assert_eq!(checker.check_tag(5, &bad, d.len(), &tag), Err(WireError::Forged));
    }
    assert_eq!(checker.check_tag(5, covered, d.len() + 1, &tag), Err(WireError::Forged));
    assert_eq!(checker.check_tag(5, covered, d.len(), &tag), Ok(()));
    assert_eq!(checker.check_tag(5, covered, d.len(), &tag), Err(WireError::Replayed));
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input::new(data);
    let Some(mode) = input.u8() else {
        return;
    };
    match mode % 4 {
        0 => raw(input.rest(), mode & 4 != 0),
        1 => cut(&mut input),
        2 => control_messages(&mut input),
        _ => seal(&mut input),
    }
});
