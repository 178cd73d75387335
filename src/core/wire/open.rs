//! The receiving side: [`open`] and [`open_cached`] authenticate and decrypt
//! a datagram; [`check_route`] and [`open_routed`] take a RoutedFrame apart
//! as the relay and as its receiver do.
//!
//! Invariants this file keeps:
//! - **Nothing is trusted before the tag verifies.** The header is only
//!   peeked, and the network id checked before any decrypt; a payload is
//!   parsed only once the AEAD (at a relay, the relay tag) accepted it.
//! - The datagram itself is never modified, so a relay can forward it as it
//!   came; plaintext goes to the caller's scratch buffer, capacity reused.
//! - **Replay is the caller's step**, in this order:
//!   [`ReplayGuard::check`](super::ReplayGuard::check) before [`open`]
//!   (cheap), [`ReplayGuard::update`](super::ReplayGuard::update) only after
//!   [`open`] succeeded, so forged datagrams cannot move the window.
//! - A RoutedFrame's relay tag covers header and route only: an altered
//!   chunk passes the relay and fails the receiver's AEAD, costing that
//!   datagram alone.
//! - Lengths are checked before slicing: bad input is a [`WireError`], never
//!   a panic.

use super::{
    header::field, message::ROUTED_IS_NOT_ONE_MESSAGE, peek_header, Cipher, Fragment, Header,
    KeyCache, Kind, Message, WireError, HEADER_LEN, MACS_LEN, RELAY_TAG_LEN, ROUTED_OVERHEAD,
    ROUTE_LEN, TAG_LEN,
};

/// Authenticates and decrypts `datagram` with `cipher`, leaving the plaintext
/// in `scratch` (cleared first, capacity reused) and parsing it.
///
/// `datagram` itself is not modified, so a relay can forward it unchanged.
/// Checks the network id before decrypting. Does **not** check replay: call
/// [`ReplayGuard::check`](super::ReplayGuard::check) before and
/// [`ReplayGuard::update`](super::ReplayGuard::update) after.
// HOT PATH: every datagram received.
pub fn open<'s>(
    cipher: &Cipher,
    datagram: &[u8],
    scratch: &'s mut Vec<u8>,
) -> Result<(Header, Message<'s>), WireError> {
    open_cached(cipher, &mut KeyCache::default(), datagram, scratch)
}

/// [`open`], with the sender's [`SessionKey`](super::SessionKey) taken from
/// (or added to) `keys`, which saves an HChaCha20 per datagram.
// HOT PATH: every datagram received.
pub fn open_cached<'s>(
    cipher: &Cipher,
    keys: &mut KeyCache,
    datagram: &[u8],
    scratch: &'s mut Vec<u8>,
) -> Result<(Header, Message<'s>), WireError> {
    let header = peek_header(datagram)?;
    if header.network_id != cipher.network_id() {
        return Err(WireError::WrongNetwork);
    }
    if header.kind == Kind::RoutedFrame {
        // Checked before decrypting: it would only fail the tag.
        return Err(WireError::Malformed(ROUTED_IS_NOT_ONE_MESSAGE));
    }
    let (aad, rest) = datagram.split_at(HEADER_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
    scratch.clear();
    scratch.extend_from_slice(ciphertext);
    keys.get(cipher, header.session).open(aad, scratch, tag)?;
    let msg = Message::parse(header.kind, scratch)?;
    Ok((header, msg))
}

/// Header, route and the two tags of a RoutedFrame datagram, length checked.
struct RoutedParts<'d> {
    header: Header,
    /// Header and route: the AEAD's associated data, the relay tag's input.
    signed: &'d [u8],
    /// `dst || src || ciphertext`.
    macs_and_chunk: &'d [u8],
    aead_tag: &'d [u8],
    relay_tag: &'d [u8],
}

fn routed_parts<'d>(cipher: &Cipher, datagram: &'d [u8]) -> Result<RoutedParts<'d>, WireError> {
    let header = peek_header(datagram)?;
    if header.kind != Kind::RoutedFrame {
        return Err(WireError::Malformed("not a routed frame"));
    }
    if header.network_id != cipher.network_id() {
        return Err(WireError::WrongNetwork);
    }
    if datagram.len() < ROUTED_OVERHEAD {
        return Err(WireError::Truncated);
    }
    let (rest, relay_tag) = datagram.split_at(datagram.len() - RELAY_TAG_LEN);
    let (rest, aead_tag) = rest.split_at(rest.len() - TAG_LEN);
    Ok(RoutedParts {
        header,
        signed: &datagram[..HEADER_LEN + ROUTE_LEN],
        macs_and_chunk: &rest[HEADER_LEN + 6..],
        aead_tag,
        relay_tag,
    })
}

/// Checks a RoutedFrame datagram the way a relay can, without decrypting:
/// its network id and relay tag; returns its header and its fragment, whose
/// MACs are in clear and whose chunk is still ciphertext. Does not check
/// replay. The relay tag covers header, route and length, not the chunk: a
/// chunk altered in place passes here and fails the receiver's AEAD,
/// costing that datagram alone.
// HOT PATH: every RoutedFrame datagram at the relay.
pub fn check_route<'d>(
    cipher: &Cipher,
    datagram: &'d [u8],
) -> Result<(Header, Fragment<'d>), WireError> {
    let parts = routed_parts(cipher, datagram)?;
    let expected = cipher.relay_tag(parts.signed, datagram.len());
    // Constant time: no early exit on the first differing byte.
    if expected
        .iter()
        .zip(parts.relay_tag)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        != 0
    {
        return Err(WireError::Forged);
    }
    let fragment =
        Fragment::parse(&datagram[HEADER_LEN..datagram.len() - TAG_LEN - RELAY_TAG_LEN])?;
    Ok((parts.header, fragment))
}

/// Authenticates and decrypts a RoutedFrame datagram as a receiver does:
/// the AEAD covers header, route and chunk, so the relay tag is not checked
/// again. Leaves the route and the chunk in clear in `scratch` (cleared
/// first): the same bytes as a Frame's plaintext payload, so both parse with
/// [`Message::parse`]`(Kind::Frame, ..)`. Returns the header and the
/// fragment. Does not check replay.
// HOT PATH: every RoutedFrame datagram at a member.
pub fn open_routed<'s>(
    cipher: &Cipher,
    keys: &mut KeyCache,
    datagram: &[u8],
    scratch: &'s mut Vec<u8>,
) -> Result<(Header, Fragment<'s>), WireError> {
    let parts = routed_parts(cipher, datagram)?;
    scratch.clear();
    scratch.extend_from_slice(&datagram[HEADER_LEN..HEADER_LEN + ROUTE_LEN]);
    scratch.extend_from_slice(&parts.macs_and_chunk[MACS_LEN..]);
    let key = keys.get(cipher, parts.header.session);
    key.open_with(
        &parts.signed[field::COUNTER],
        parts.signed,
        &mut scratch[ROUTE_LEN..],
        parts.aead_tag,
    )?;
    Ok((parts.header, Fragment::parse(scratch)?))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::core::{
        drop::DropReason,
        wire::{
            max_frame_in_one_datagram, testkit::*, NetworkKey, Reassembler, Sealer, SessionId,
            OVERHEAD, VERSION,
        },
    };

    #[test]
    fn every_truncation_is_an_error() {
        let c = cipher();
        let payload = frag_payload();
        let mut sealer = Sealer::new(SESSION);
        let (mut datagram, mut scratch) = (Vec::new(), Vec::new());
        for msg in sample_messages(&payload) {
            sealer.seal(&c, &msg, &mut datagram).unwrap();
            for len in 0..datagram.len() {
                let err = open(&c, &datagram[..len], &mut scratch).unwrap_err();
                let expected = if len < OVERHEAD {
                    WireError::Truncated
                } else {
                    WireError::Forged
                };
                assert_eq!(err, expected, "{msg:?} cut to {len}");
            }
        }
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let c = cipher();
        let payload = frag_payload();
        let mut sealer = Sealer::new(SESSION);
        let (mut datagram, mut scratch) = (Vec::new(), Vec::new());
        for msg in sample_messages(&payload) {
            sealer.seal(&c, &msg, &mut datagram).unwrap();
            for pos in 0..datagram.len() {
                for bit in 0..8 {
                    let mut bad = datagram.clone();
                    bad[pos] ^= 1 << bit;
                    let err = open(&c, &bad, &mut scratch).unwrap_err();
                    let ok = match pos {
                        0 => matches!(err, WireError::BadVersion(_)),
                        1 => matches!(
                            err,
                            WireError::UnknownKind(_) | WireError::Forged | WireError::Malformed(_)
                        ),
                        2..4 => err == WireError::BadFlags,
                        4..12 => err == WireError::WrongNetwork,
                        _ => err == WireError::Forged,
                    };
                    assert!(ok, "byte {pos} bit {bit}: {err:?}");
                }
            }
        }
    }

    #[test]
    fn other_network_is_wrong_network() {
        let mut sealer = Sealer::new(SESSION);
        let mut datagram = Vec::new();
        sealer
            .seal(&cipher(), &Message::Keepalive, &mut datagram)
            .unwrap();
        let other = Cipher::new(&NetworkKey::from_bytes([8; 32]));
        assert_ne!(other.network_id(), cipher().network_id());
        let err = open(&other, &datagram, &mut Vec::new()).unwrap_err();
        assert_eq!(err, WireError::WrongNetwork);
        assert_eq!(err.drop_reason(), DropReason::WrongNetwork);
    }

    #[test]
    fn garbage_never_panics() {
        let c = cipher();
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut sealer = Sealer::new(SESSION);
        let mut r = Reassembler::new(4, Duration::from_secs(2));
        let (mut buf, mut scratch, mut valid) = (Vec::new(), Vec::new(), Vec::new());
        let now = Instant::now();
        for round in 0..20_000 {
            buf.resize(rng.below(200), 0);
            rng.fill(&mut buf);
            if round % 2 == 0 && buf.len() >= HEADER_LEN {
                // Plausible header, so the AEAD and payload paths run too.
                buf[..4].copy_from_slice(&[VERSION, rng.below(8) as u8, 0, 0]);
                buf[field::NETWORK_ID].copy_from_slice(&c.network_id().0);
            }
            let _ = peek_header(&buf);
            assert!(open(&c, &buf, &mut scratch).is_err());
            for kind in [
                Kind::Register,
                Kind::RegisterAck,
                Kind::Frame,
                Kind::Keepalive,
            ] {
                let _ = Message::parse(kind, &buf);
            }
            // Authentic but random payloads through open and the reassembler.
            let kind = Kind::from_u8(rng.below(6) as u8 + 1).unwrap();
            if kind == Kind::Frame && buf.len() >= 6 {
                buf[5] = rng.below(4) as u8;
                buf[4] = rng.below(4) as u8;
            }
            sealer.seal_raw(&c, kind, &buf, &mut valid).unwrap();
            if let Ok((h, Message::Frame(f))) = open(&c, &valid, &mut scratch) {
                let _ = r.push(now, h.session, &f);
            }
        }
    }

    /// Opens RoutedFrame datagrams as a client does and reassembles them;
    /// returns the frames completed and the errors, in order.
    fn receive_routed(c: &Cipher, datagrams: &[Vec<u8>]) -> Vec<Result<Vec<u8>, WireError>> {
        let now = Instant::now();
        let mut r = Reassembler::default();
        let mut keys = KeyCache::default();
        let mut scratch = Vec::new();
        let mut out = Vec::new();
        for d in datagrams {
            match open_routed(c, &mut keys, d, &mut scratch) {
                Ok((h, f)) => match r.push(now, h.session, &f) {
                    Ok(Some(done)) => out.push(Ok(done.frame.to_vec())),
                    Ok(None) => {}
                    Err(e) => out.push(Err(e)),
                },
                Err(e) => out.push(Err(e)),
            }
        }
        out
    }

    /// A RoutedFrame datagram stands alone: the relay checks its route
    /// without the AEAD key's help, the receiver opens it without the relay
    /// tag's, and damage anywhere costs that datagram only, never the
    /// others of its frame.
    #[test]
    fn routed_frames_stand_alone() {
        let c = cipher();
        let mut sealer = Sealer::new(SessionId([5; 16]));
        let small = test_frame(1326);
        let mut one = Vec::new();
        sealer
            .seal_routed_frame(&c, &small, 1400, &mut |d| one.push(d.to_vec()))
            .unwrap();
        assert_eq!(
            one.len(),
            1,
            "a frame of max_frame_in_one_datagram fits one"
        );
        assert_eq!(max_frame_in_one_datagram(1400), 1326);
        assert_eq!(one[0].len(), 1400);
        assert_eq!(receive_routed(&c, &one), [Ok(small.clone())]);
        // The relay sees the MACs, not the payload.
        let (h, f) = check_route(&c, &one[0]).unwrap();
        assert_eq!((h.kind, h.counter), (Kind::RoutedFrame, 0));
        assert_eq!(
            (f.dst().0, f.src().0),
            (
                <[u8; 6]>::try_from(&small[..6]).unwrap(),
                <[u8; 6]>::try_from(&small[6..12]).unwrap()
            )
        );
        let needle = &small[100..132];
        assert!(!one[0].windows(32).any(|w| w == needle));

        // A full-size frame takes two datagrams; a flipped bit in either
        // costs that frame, and nothing after it.
        let big = test_frame(1514);
        let mut two = Vec::new();
        sealer
            .seal_routed_frame(&c, &big, 1400, &mut |d| two.push(d.to_vec()))
            .unwrap();
        assert_eq!(two.len(), 2);
        assert_eq!(receive_routed(&c, &two), [Ok(big.clone())]);
        let n = two[0].len();
        for pos in [0, 1, 12, 30, 36, 40, 45, 53, 54, 700, n - 33, n - 17, n - 1] {
            let mut bad = two[0].clone();
            bad[pos] ^= 0x10;
            let relay = check_route(&c, &bad);
            let member = receive_routed(&c, &[bad.clone(), two[1].clone()]);
            if pos >= HEADER_LEN + ROUTE_LEN && pos < n - RELAY_TAG_LEN {
                // Past the route: the relay forwards it, the receiver's AEAD refuses.
                assert!(relay.is_ok(), "byte {pos}");
                assert_eq!(member, [Err(WireError::Forged)], "byte {pos}");
            } else if pos >= n - RELAY_TAG_LEN {
                assert_eq!(relay.unwrap_err(), WireError::Forged, "byte {pos}");
                // The receiver does not check the relay tag: its AEAD holds.
                assert_eq!(member, [Ok(big.clone())], "byte {pos}");
            } else {
                assert!(relay.is_err(), "byte {pos}");
                assert!(member.iter().all(|r| r.is_err()), "byte {pos}: {member:?}");
            }
        }
        // Padded (or cut) in the middle, the relay tag no longer holds: the
        // relay never forwards a datagram bigger than what was sealed.
        for extra in [1usize, 1000, 60_000] {
            let mut padded = two[0].clone();
            let at = padded.len() - TAG_LEN - RELAY_TAG_LEN;
            padded.splice(at..at, vec![0u8; extra]);
            assert_eq!(check_route(&c, &padded).unwrap_err(), WireError::Forged);
        }
        let mut cut = two[0].clone();
        cut.drain(100..101);
        assert_eq!(check_route(&c, &cut).unwrap_err(), WireError::Forged);
        // The next frame goes through whatever happened to the last one.
        let mut next = Vec::new();
        sealer
            .seal_routed_frame(&c, &small, 1400, &mut |d| next.push(d.to_vec()))
            .unwrap();
        assert_eq!(receive_routed(&c, &next), [Ok(small.clone())]);

        // Another network's key fails the relay tag and the AEAD.
        let other = Cipher::new(&NetworkKey::from_bytes([0x99; 32]));
        let mut forged = Vec::new();
        Sealer::new(SessionId([6; 16]))
            .seal_routed_frame(&other, &small, 1400, &mut |d| forged.push(d.to_vec()))
            .unwrap();
        for d in &mut forged {
            d[4..12].copy_from_slice(&c.network_id().0);
        }
        assert_eq!(check_route(&c, &forged[0]).unwrap_err(), WireError::Forged);
        assert_eq!(receive_routed(&c, &forged), [Err(WireError::Forged)]);
        // A Frame is not a RoutedFrame, and vice versa.
        let mut plain = Vec::new();
        sealer
            .seal_frame(&c, &small[..100], 1400, &mut |d| plain.push(d.to_vec()))
            .unwrap();
        assert!(matches!(
            check_route(&c, &plain[0]),
            Err(WireError::Malformed(_))
        ));
        let mut scratch = Vec::new();
        assert!(matches!(
            open(&c, &one[0], &mut scratch),
            Err(WireError::Malformed(_))
        ));
        // Every truncation is an error, never a panic.
        for len in 0..one[0].len() {
            let _ = check_route(&c, &one[0][..len]);
            assert!(receive_routed(&c, &[one[0][..len].to_vec()])
                .iter()
                .all(|r| r.is_err()));
        }
        // Kind 7 is retired.
        let mut seven = one[0].clone();
        seven[1] = 7;
        assert_eq!(peek_header(&seven), Err(WireError::UnknownKind(7)));
    }
}
