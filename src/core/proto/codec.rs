//! Version 2 datagram layouts (docs/protocol.md, "Datagrams"): field
//! ranges, the clear header check, the control messages, and the cut of a
//! frame into Data plaintexts.
//!
//! Every datagram starts `version (2) | kind | 0 | 0`. Invariants:
//! - [`peek`] is the only way in: it checks version, flags and kind, and
//!   the exact length of fixed-size kinds, so the handlers index within
//!   bounds;
//! - parsing is exact: [`Control::parse`] refuses a wrong length, and
//!   [`Control::encode`] then [`Control::parse`] gives the message back;
//! - bad bytes are an error, never a panic.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    ops::Range,
};

use super::keys::MemberId;
use crate::core::{
    noise::{INIT_OVERHEAD, RESP_OVERHEAD},
    wire::{WireError, FRAG_HEADER_LEN, MACS_LEN, MAX_FRAGMENTS, MAX_FRAME, MIN_FRAME},
};

/// The protocol version of this module (byte 0 of every datagram).
pub const VERSION: u8 = 2;
/// Length of the relay tag and the AEAD tag.
pub const TAG_LEN: usize = 16;
/// Length of mac1 and mac2.
pub const MAC_LEN: usize = 16;

/// The kind byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Member → relay: first handshake message of the uplink.
    UplinkInit = 1,
    /// Relay → member: second handshake message.
    UplinkResp = 2,
    /// Relay → member: a cookie to repeat the initiation with, under load.
    CookieReply = 3,
    /// Member ↔ relay: a control message sealed under the uplink.
    Control = 4,
    /// Member → member through the relay: first handshake message.
    PeerInit = 5,
    /// Member → member through the relay: second handshake message.
    PeerResp = 6,
    /// Member → member through the relay: a sealed frame (or a keepalive).
    Data = 7,
    /// Relay → member: "I have no session with this index" (unauthenticated
    /// hint; the member starts a handshake, once a second at most).
    Rejoin = 8,
    /// Member → member, not through the relay: a Data inner part.
    Direct = 9,
    /// Member → member through the relay: a path message (endpoints).
    PeerPath = 10,
    /// Member → member, not through the relay: a path message (ping, pong).
    DirectPath = 11,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::UplinkInit,
            2 => Kind::UplinkResp,
            3 => Kind::CookieReply,
            4 => Kind::Control,
            5 => Kind::PeerInit,
            6 => Kind::PeerResp,
            7 => Kind::Data,
            8 => Kind::Rejoin,
            9 => Kind::Direct,
            10 => Kind::PeerPath,
            11 => Kind::DirectPath,
            _ => return None,
        })
    }

    /// True for the kinds the relay forwards from member to member.
    pub fn is_routed(self) -> bool {
        matches!(
            self,
            Kind::PeerInit | Kind::PeerResp | Kind::Data | Kind::PeerPath
        )
    }

    /// True for the kinds members send each other directly.
    pub fn is_direct(self) -> bool {
        matches!(self, Kind::Direct | Kind::DirectPath)
    }
}

/// Bytes 0..4 of a datagram of `kind`.
pub fn header(kind: Kind) -> [u8; 4] {
    [VERSION, kind as u8, 0, 0]
}

/// Checks the clear header and the length rules of the kind.
pub fn peek(d: &[u8]) -> Result<Kind, WireError> {
    if d.len() < 4 {
        return Err(WireError::Truncated);
    }
    if d[0] != VERSION {
        return Err(WireError::BadVersion(d[0]));
    }
    if d[2] != 0 || d[3] != 0 {
        return Err(WireError::BadFlags);
    }
    let kind = Kind::from_u8(d[1]).ok_or(WireError::UnknownKind(d[1]))?;
    let ok = match kind {
        Kind::UplinkInit => d.len() == uplink_init::LEN,
        Kind::UplinkResp => d.len() == uplink_resp::LEN,
        Kind::CookieReply => d.len() == cookie_reply::LEN,
        Kind::Rejoin => d.len() == rejoin::LEN,
        Kind::Control => d.len() >= control::HEADER_LEN + 1 + TAG_LEN,
        Kind::PeerInit => d.len() == routed::OVERHEAD + peer_init::LEN,
        Kind::PeerResp => d.len() == routed::OVERHEAD + peer_resp::LEN,
        Kind::Data => d.len() >= routed::OVERHEAD + data::HEADER_LEN + TAG_LEN,
        Kind::Direct => d.len() >= direct::HEADER_LEN + data::HEADER_LEN + TAG_LEN,
        Kind::PeerPath => d.len() >= routed::OVERHEAD + data::HEADER_LEN + 1 + TAG_LEN,
        Kind::DirectPath => d.len() >= direct::HEADER_LEN + data::HEADER_LEN + 1 + TAG_LEN,
    };
    if ok {
        Ok(kind)
    } else {
        Err(WireError::Malformed("wrong length for its kind"))
    }
}

/// Reads a big-endian u32 at `r` (callers pass ranges within bounds).
pub fn be32(d: &[u8], r: Range<usize>) -> u32 {
    d.get(r)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

/// Reads a big-endian u64 at `r`.
pub fn be64(d: &[u8], r: Range<usize>) -> u64 {
    d.get(r)
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

/// Reads a member id at `r`.
pub fn member_id(d: &[u8], r: Range<usize>) -> MemberId {
    MemberId(d.get(r).and_then(|s| s.try_into().ok()).unwrap_or_default())
}

/// A truncated keyed BLAKE3: mac1, mac2 and cookies.
pub fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    let mut h = blake3::Hasher::new_keyed(key);
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; MAC_LEN];
    out.copy_from_slice(&h.finalize().as_bytes()[..MAC_LEN]);
    out
}

/// mac2: a MAC under a cookie (16 bytes) from the relay.
pub fn mac2(cookie: &[u8; MAC_LEN], parts: &[&[u8]]) -> [u8; MAC_LEN] {
    mac(&blake3::derive_key("lanbridge v2 mac2", cookie), parts)
}

/// UplinkInit: `header | sender index | network id | Noise message 1 | mac1 | mac2`.
pub mod uplink_init {
    use super::*;
    /// The initiation's payload: TAI64N timestamp (12), 4 reserved bytes
    /// (zero).
    pub const PAYLOAD_LEN: usize = 16;
    /// The member's index for the session.
    pub const SENDER: Range<usize> = 4..8;
    /// The network id (from the relay key).
    pub const NETWORK: Range<usize> = 8..16;
    /// Noise message 1.
    pub const NOISE: Range<usize> = 16..16 + INIT_OVERHEAD + PAYLOAD_LEN;
    /// mac1, over everything before it.
    pub const MAC1: Range<usize> = NOISE.end..NOISE.end + MAC_LEN;
    /// mac2, over everything before it (zero without a cookie).
    pub const MAC2: Range<usize> = MAC1.end..MAC1.end + MAC_LEN;
    /// Whole datagram.
    pub const LEN: usize = MAC2.end;
}

/// UplinkResp: `header | sender index | receiver index | Noise message 2`.
pub mod uplink_resp {
    use super::*;
    /// The answer's payload: keepalive interval in seconds (2), reserved (2).
    pub const PAYLOAD_LEN: usize = 4;
    /// The relay's index for the session.
    pub const SENDER: Range<usize> = 4..8;
    /// The member's index (from the initiation).
    pub const RECEIVER: Range<usize> = 8..12;
    /// Noise message 2.
    pub const NOISE: Range<usize> = 12..12 + RESP_OVERHEAD + PAYLOAD_LEN;
    /// Whole datagram.
    pub const LEN: usize = NOISE.end;
}

/// CookieReply: `header | receiver index | nonce | sealed cookie and tag`.
pub mod cookie_reply {
    use super::*;
    /// The member's index (from the initiation).
    pub const RECEIVER: Range<usize> = 4..8;
    /// Random ChaCha20-Poly1305 nonce.
    pub const NONCE: Range<usize> = 8..20;
    /// The cookie (16), sealed under the cookie key with the initiation's
    /// mac1 as associated data, and its tag.
    pub const SEALED: Range<usize> = 20..20 + MAC_LEN + TAG_LEN;
    /// Whole datagram.
    pub const LEN: usize = SEALED.end;
}

/// Rejoin: `header | the receiver index the relay does not know`.
pub mod rejoin {
    use super::*;
    /// The index.
    pub const RECEIVER: Range<usize> = 4..8;
    /// Whole datagram.
    pub const LEN: usize = 8;
}

/// Control: `header | receiver index | counter | ciphertext | tag`, sealed
/// under the uplink with bytes 0..16 as associated data.
pub mod control {
    use super::*;
    /// The receiving side's index of the uplink session.
    pub const RECEIVER: Range<usize> = 4..8;
    /// The sender's counter (the nonce).
    pub const COUNTER: Range<usize> = 8..16;
    /// Bytes before the ciphertext (the associated data).
    pub const HEADER_LEN: usize = 16;
}

/// Routed (PeerInit, PeerResp, Data): `header | receiver index | counter |
/// member id | inner | relay tag`. The relay tag is keyed BLAKE3 under the
/// uplink's tag key over bytes 0..24 and the datagram's length.
pub mod routed {
    use super::*;
    /// The receiving side's index of the uplink session.
    pub const RECEIVER: Range<usize> = 4..8;
    /// The uplink counter.
    pub const COUNTER: Range<usize> = 8..16;
    /// To the relay: the destination member; from the relay: the source.
    pub const MEMBER: Range<usize> = 16..24;
    /// Bytes before the inner part (covered by the relay tag).
    pub const HEADER_LEN: usize = 24;
    /// Bytes a routed datagram adds around its inner part.
    pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
}

/// PeerInit inner: `sender index | Noise message 1 | mac1`.
pub mod peer_init {
    use super::*;
    /// The initiation's payload: TAI64N timestamp.
    pub const PAYLOAD_LEN: usize = 12;
    /// The initiator's index for the session.
    pub const SENDER: Range<usize> = 0..4;
    /// Noise message 1.
    pub const NOISE: Range<usize> = 4..4 + INIT_OVERHEAD + PAYLOAD_LEN;
    /// mac1 under the member mac1 key, over the inner bytes before it.
    pub const MAC1: Range<usize> = NOISE.end..NOISE.end + MAC_LEN;
    /// Whole inner part.
    pub const LEN: usize = MAC1.end;
}

/// PeerResp inner: `sender index | receiver index | Noise message 2`.
pub mod peer_resp {
    use super::*;
    /// The responder's index.
    pub const SENDER: Range<usize> = 0..4;
    /// The initiator's index.
    pub const RECEIVER: Range<usize> = 4..8;
    /// Noise message 2 (empty payload).
    pub const NOISE: Range<usize> = 8..8 + RESP_OVERHEAD;
    /// Whole inner part.
    pub const LEN: usize = NOISE.end;
}

/// Data inner: `receiver index | counter | ciphertext | tag`, sealed under
/// the member session with inner bytes 0..12 as associated data. The
/// plaintext is a fragment (frame id, index, count, dst, src, chunk), or
/// empty: a keepalive that confirms a new session.
pub mod data {
    use super::*;
    /// The receiver's index of the member session.
    pub const RECEIVER: Range<usize> = 0..4;
    /// The sender's counter.
    pub const COUNTER: Range<usize> = 4..12;
    /// Bytes before the ciphertext.
    pub const HEADER_LEN: usize = 12;
}

/// Direct and DirectPath: `header | inner`, the inner part as in Data and
/// PeerPath, with no relay header or tag.
pub mod direct {
    /// Bytes before the inner part.
    pub const HEADER_LEN: usize = 4;
}

/// Path inner (PeerPath and DirectPath): laid out as a Data inner part,
/// sealed under the member session with [`path_aad`] of its kind then
/// inner bytes 0..12 as associated data, so that no path message opens as
/// a frame or the other way round, and none sent through the relay opens
/// as one sent directly (endpoints lifted off the relay leg and sent from
/// another address, say) or the other way round. The plaintext is a
/// [`PathMessage`].
pub fn path_aad(kind: Kind) -> [u8; 4] {
    header(kind)
}

/// Bytes a Data datagram through the relay adds around a fragment's chunk.
pub const DATA_OVERHEAD: usize = routed::OVERHEAD + data::HEADER_LEN + TAG_LEN + FRAG_HEADER_LEN;

/// The longest frame that fits one Data datagram of `max_datagram` bytes.
pub const fn max_frame_in_one_datagram(max_datagram: usize) -> usize {
    max_datagram.saturating_sub(DATA_OVERHEAD) + MACS_LEN
}

/// Bytes of one member list entry: id (8), static public key (32).
pub const MEMBER_ENTRY_LEN: usize = 8 + 32;
/// Entries in one Members message.
pub const MEMBERS_PER_MESSAGE: usize = 24;

/// A control message (plaintext of a Control datagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control<'a> {
    /// Member → relay: still here.
    Keepalive,
    /// Relay → member: answer to a keepalive.
    KeepaliveAck {
        /// Keepalive interval the relay asks for, seconds.
        keepalive_secs: u16,
        /// Changes whenever a member joins or leaves.
        generation: u32,
        /// The member's address as the relay sees it (its public address
        /// and port, past any NAT).
        observed: SocketAddr,
    },
    /// Member → relay: send the member list from entry `from`.
    GetMembers {
        /// First entry wanted.
        from: u32,
    },
    /// Relay → member: part of the member list.
    Members {
        /// The list's generation.
        generation: u32,
        /// Entries in the whole list.
        total: u32,
        /// Index of the first entry here.
        from: u32,
        /// `MEMBER_ENTRY_LEN` bytes per entry.
        entries: &'a [u8],
    },
}

impl<'a> Control<'a> {
    /// Parses a control plaintext.
    pub fn parse(p: &'a [u8]) -> Result<Control<'a>, WireError> {
        let (&t, body) = p
            .split_first()
            .ok_or(WireError::Malformed("empty control"))?;
        let exact = |n: usize| {
            if body.len() == n {
                Ok(())
            } else {
                Err(WireError::Malformed("control message of the wrong length"))
            }
        };
        Ok(match t {
            1 => {
                exact(0)?;
                Control::Keepalive
            }
            2 => {
                let observed = body
                    .get(6..)
                    .ok_or(WireError::Malformed("short keepalive ack"))?;
                let (observed, rest) = parse_addr(observed)?;
                if !rest.is_empty() {
                    return Err(WireError::Malformed("control message of the wrong length"));
                }
                Control::KeepaliveAck {
                    keepalive_secs: u16::from_be_bytes([body[0], body[1]]),
                    generation: be32(body, 2..6),
                    observed,
                }
            }
            3 => {
                exact(4)?;
                Control::GetMembers {
                    from: be32(body, 0..4),
                }
            }
            4 => {
                let entries = body
                    .get(12..)
                    .ok_or(WireError::Malformed("short member list"))?;
                if entries.len() % MEMBER_ENTRY_LEN != 0
                    || entries.len() > MEMBERS_PER_MESSAGE * MEMBER_ENTRY_LEN
                {
                    return Err(WireError::Malformed("member list of a wrong length"));
                }
                Control::Members {
                    generation: be32(body, 0..4),
                    total: be32(body, 4..8),
                    from: be32(body, 8..12),
                    entries,
                }
            }
            _ => return Err(WireError::Malformed("unknown control message")),
        })
    }

    /// Appends the plaintext to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Control::Keepalive => out.push(1),
            Control::KeepaliveAck {
                keepalive_secs,
                generation,
                observed,
            } => {
                out.push(2);
                out.extend_from_slice(&keepalive_secs.to_be_bytes());
                out.extend_from_slice(&generation.to_be_bytes());
                put_addr(out, observed);
            }
            Control::GetMembers { from } => {
                out.push(3);
                out.extend_from_slice(&from.to_be_bytes());
            }
            Control::Members {
                generation,
                total,
                from,
                entries,
            } => {
                out.push(4);
                out.extend_from_slice(&generation.to_be_bytes());
                out.extend_from_slice(&total.to_be_bytes());
                out.extend_from_slice(&from.to_be_bytes());
                out.extend_from_slice(entries);
            }
        }
    }
}

/// Appends an address: `4 | IPv4 | port` (7 bytes) or `6 | IPv6 | port`
/// (19 bytes), big-endian.
pub fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// Reads an address written by [`put_addr`]; returns it and the bytes
/// after it.
pub fn parse_addr(b: &[u8]) -> Result<(SocketAddr, &[u8]), WireError> {
    let bad = WireError::Malformed("bad address");
    let (&family, rest) = b.split_first().ok_or(bad)?;
    let ip_len = match family {
        4 => 4,
        6 => 16,
        _ => return Err(bad),
    };
    if rest.len() < ip_len + 2 {
        return Err(bad);
    }
    let (ip, rest) = rest.split_at(ip_len);
    let ip = match <[u8; 4]>::try_from(ip) {
        Ok(v4) => IpAddr::V4(Ipv4Addr::from(v4)),
        Err(_) => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(ip).map_err(|_| bad)?)),
    };
    let port = u16::from_be_bytes([rest[0], rest[1]]);
    Ok((SocketAddr::new(ip, port), &rest[2..]))
}

/// Addresses one Endpoints message may name.
pub const MAX_ENDPOINTS: usize = 8;

/// A path message (plaintext of a PeerPath or DirectPath datagram).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathMessage {
    /// Through the relay: addresses where the sender may be reached (the
    /// one the relay sees, then its own), at most [`MAX_ENDPOINTS`].
    Endpoints(Vec<SocketAddr>),
    /// Directly: a probe of a path; answered with a Pong to its source.
    Ping {
        /// Names the probe.
        tx: u64,
    },
    /// Directly: the answer to a Ping.
    Pong {
        /// The Ping's.
        tx: u64,
        /// Where the Ping came from, as the answering member saw it.
        observed: SocketAddr,
    },
}

impl PathMessage {
    /// Parses a path plaintext.
    pub fn parse(p: &[u8]) -> Result<PathMessage, WireError> {
        let (&t, body) = p
            .split_first()
            .ok_or(WireError::Malformed("empty path message"))?;
        let wrong = WireError::Malformed("path message of the wrong length");
        Ok(match t {
            1 => {
                let (&n, mut rest) = body.split_first().ok_or(wrong)?;
                if usize::from(n) > MAX_ENDPOINTS {
                    return Err(WireError::Malformed("too many endpoints"));
                }
                let mut addrs = Vec::with_capacity(n.into());
                for _ in 0..n {
                    let (addr, more) = parse_addr(rest)?;
                    addrs.push(addr);
                    rest = more;
                }
                if !rest.is_empty() {
                    return Err(wrong);
                }
                PathMessage::Endpoints(addrs)
            }
            2 if body.len() == 8 => PathMessage::Ping {
                tx: be64(body, 0..8),
            },
            3 if body.len() > 8 => {
                let (observed, rest) = parse_addr(&body[8..])?;
                if !rest.is_empty() {
                    return Err(wrong);
                }
                PathMessage::Pong {
                    tx: be64(body, 0..8),
                    observed,
                }
            }
            2 | 3 => return Err(wrong),
            _ => return Err(WireError::Malformed("unknown path message")),
        })
    }

    /// Appends the plaintext to `out` (at most [`MAX_ENDPOINTS`] addresses).
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            PathMessage::Endpoints(addrs) => {
                let addrs = &addrs[..addrs.len().min(MAX_ENDPOINTS)];
                out.push(1);
                out.push(addrs.len() as u8);
                for a in addrs {
                    put_addr(out, *a);
                }
            }
            PathMessage::Ping { tx } => {
                out.push(2);
                out.extend_from_slice(&tx.to_be_bytes());
            }
            PathMessage::Pong { tx, observed } => {
                out.push(3);
                out.extend_from_slice(&tx.to_be_bytes());
                put_addr(out, *observed);
            }
        }
    }
}

/// Cuts `frame` into fragment plaintexts (frame id, index, count, dst, src,
/// chunk) of at most `room` chunk bytes each, of near-equal size, and hands
/// each to `emit`. Checks everything first: a frame goes whole or not at
/// all.
pub fn cut_frame(
    frame: &[u8],
    room: usize,
    frame_id: u32,
    scratch: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]) -> Result<(), WireError>,
) -> Result<usize, WireError> {
    if frame.len() < MIN_FRAME {
        return Err(WireError::FrameTooShort);
    }
    if frame.len() > MAX_FRAME {
        return Err(WireError::TooBig);
    }
    if room == 0 {
        return Err(WireError::DatagramLimitTooSmall(room));
    }
    let (macs, body) = frame.split_at(MACS_LEN);
    let count = body.len().div_ceil(room).max(1);
    if count > MAX_FRAGMENTS {
        return Err(WireError::TooBig);
    }
    let chunk_len = body.len().div_ceil(count).max(1);
    let mut chunks = body.chunks(chunk_len);
    for index in 0..count {
        scratch.clear();
        scratch.extend_from_slice(&frame_id.to_be_bytes());
        scratch.extend_from_slice(&[index as u8, count as u8]);
        scratch.extend_from_slice(macs);
        scratch.extend_from_slice(chunks.next().unwrap_or_default());
        emit(scratch)?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::wire::Fragment;

    #[test]
    fn layouts_add_up() {
        assert_eq!(uplink_init::LEN, 160);
        assert_eq!(uplink_resp::LEN, 64);
        const { assert!(uplink_resp::LEN < uplink_init::LEN && cookie_reply::LEN < uplink_init::LEN) };
        assert_eq!(peer_init::LEN, 128);
        assert_eq!(peer_resp::LEN, 56);
        // The same budget as version 1's RoutedFrame (1326 at 1400): MSS
        // clamping aims at the same size (1272 for IPv4 at 1400).
        assert_eq!(max_frame_in_one_datagram(1400), 1326);
        const { assert!(MEMBERS_PER_MESSAGE * MEMBER_ENTRY_LEN + 13 + 32 < 1400) };
    }

    #[test]
    fn peek_checks_version_flags_kind_and_length() {
        let mut d = vec![0u8; uplink_init::LEN];
        d[..4].copy_from_slice(&header(Kind::UplinkInit));
        assert_eq!(peek(&d), Ok(Kind::UplinkInit));
        assert_eq!(
            peek(&d[..100]),
            Err(WireError::Malformed("wrong length for its kind"))
        );
        d[0] = 1;
        assert_eq!(peek(&d), Err(WireError::BadVersion(1)));
        d[0] = 2;
        d[2] = 1;
        assert_eq!(peek(&d), Err(WireError::BadFlags));
        d[2] = 0;
        d[1] = 99;
        assert_eq!(peek(&d), Err(WireError::UnknownKind(99)));
        assert_eq!(peek(&[2]), Err(WireError::Truncated));
    }

    #[test]
    fn control_messages_round_trip_and_wrong_lengths_fail() {
        let entries = [7u8; 80];
        for m in [
            Control::Keepalive,
            Control::KeepaliveAck {
                keepalive_secs: 5,
                generation: 9,
                observed: "203.0.113.7:40000".parse().unwrap(),
            },
            Control::KeepaliveAck {
                keepalive_secs: 5,
                generation: 9,
                observed: "[2001:db8::7]:40000".parse().unwrap(),
            },
            Control::GetMembers { from: 24 },
            Control::Members {
                generation: 1,
                total: 2,
                from: 0,
                entries: &entries,
            },
        ] {
            let mut out = Vec::new();
            m.encode(&mut out);
            assert_eq!(Control::parse(&out), Ok(m));
            out.push(0);
            assert!(Control::parse(&out).is_err(), "{m:?} with a byte more");
        }
        assert!(Control::parse(&[]).is_err());
        assert!(Control::parse(&[9]).is_err());
    }

    #[test]
    fn path_messages_round_trip_and_wrong_lengths_fail() {
        let v4: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let v6: SocketAddr = "[2001:db8::7]:1".parse().unwrap();
        for m in [
            PathMessage::Endpoints(vec![]),
            PathMessage::Endpoints(vec![v4, v6, v4]),
            PathMessage::Ping { tx: 7 },
            PathMessage::Pong {
                tx: u64::MAX,
                observed: v6,
            },
        ] {
            let mut out = Vec::new();
            m.encode(&mut out);
            assert_eq!(PathMessage::parse(&out), Ok(m.clone()));
            out.push(0);
            assert!(PathMessage::parse(&out).is_err(), "{m:?} with a byte more");
            out.truncate(out.len() - 2);
            assert!(PathMessage::parse(&out).is_err(), "{m:?} a byte short");
        }
        let mut nine = vec![1, 9];
        for _ in 0..9 {
            put_addr(&mut nine, v4);
        }
        assert!(PathMessage::parse(&nine).is_err());
        assert!(PathMessage::parse(&[]).is_err());
        assert!(PathMessage::parse(&[4]).is_err());
        assert!(parse_addr(&[5, 0, 0, 0, 0, 0, 0]).is_err());
    }

    /// What a sender refuses before it emits anything: too short, too big,
    /// more than 255 fragments, no room; and the sizes of the fast path: a
    /// full 1514-byte Ethernet frame takes two datagrams at 1400, the
    /// largest frame that fits one takes one.
    #[test]
    fn cutting_checks_everything_first_and_sizes_add_up() {
        let n = std::cell::Cell::new(0);
        let mut count = |_: &[u8]| {
            n.set(n.get() + 1);
            Ok(())
        };
        let room = 1400 - DATA_OVERHEAD;
        let cut =
            |len: usize, room: usize, count: &mut dyn FnMut(&[u8]) -> Result<(), WireError>| {
                cut_frame(&vec![0u8; len], room, 0, &mut Vec::new(), count)
            };
        assert_eq!(cut(13, room, &mut count), Err(WireError::FrameTooShort));
        assert_eq!(cut(MAX_FRAME + 1, room, &mut count), Err(WireError::TooBig));
        assert_eq!(
            cut(12 + 256 * 10 + 1, 10, &mut count),
            Err(WireError::TooBig)
        );
        assert_eq!(
            cut(100, 0, &mut count),
            Err(WireError::DatagramLimitTooSmall(0))
        );
        assert_eq!(n.get(), 0, "nothing emitted for a refused frame");
        assert_eq!(cut(1514, room, &mut count), Ok(2));
        assert_eq!(
            cut(max_frame_in_one_datagram(1400), room, &mut count),
            Ok(1)
        );
        assert_eq!(
            cut(max_frame_in_one_datagram(1400) + 1, room, &mut count),
            Ok(2)
        );
    }

    #[test]
    fn frames_are_cut_into_fragments_that_parse() {
        let frame: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut got = Vec::new();
        let n = cut_frame(&frame, 1300, 7, &mut Vec::new(), &mut |p| {
            got.push(p.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 3);
        let mut body = Vec::new();
        for (i, p) in got.iter().enumerate() {
            let f = Fragment::parse(p).unwrap();
            assert_eq!((f.frame_id(), f.index(), f.count()), (7, i as u8, 3));
            body.extend_from_slice(f.chunk());
        }
        assert_eq!(body, frame[12..]);
        assert!(cut_frame(&frame[..10], 100, 0, &mut Vec::new(), &mut |_| Ok(())).is_err());
    }
}
