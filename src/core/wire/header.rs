//! The clear header: its field table, the message [`Kind`]s and
//! [`peek_header`], the one parse of a datagram before any crypto.
//!
//! Invariants this file keeps:
//! - The header's 36 bytes are the AEAD's associated data: all of it is
//!   authentic once [`open`](fn@super::open) succeeded, none of it before.
//! - [`peek_header`] checks only what needs no key (length, version, kind,
//!   flags); what it returns serves to pick a key and to check the replay
//!   window cheaply, never to act on.
//! - Offsets live in one table, `field`, the same as `docs/protocol.md`'s;
//!   version 1 defines no flags, and kind 7 is retired, so unknown.

use super::{NetworkId, SessionId, WireError, OVERHEAD, VERSION};

/// Header field offsets, as in `docs/protocol.md`.
pub(super) mod field {
    use std::ops::Range;

    pub const VERSION: usize = 0;
    pub const KIND: usize = 1;
    pub const FLAGS: Range<usize> = 2..4;
    pub const NETWORK_ID: Range<usize> = 4..12;
    pub const SESSION: Range<usize> = 12..28;
    /// The XChaCha20 nonce is the session id followed by the counter, bytes
    /// 12..36 (see [`Cipher`](crate::core::wire::Cipher)).
    pub const COUNTER: Range<usize> = 28..36;
}

/// The message kinds (byte 1 of the header).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    /// Edge/bridge → relay: join the network, or stay joined.
    Register = 1,
    /// Relay → edge/bridge: registered; carries the keepalive interval.
    RegisterAck = 2,
    /// Edge/bridge → relay: still here (keeps NAT mappings open).
    Keepalive = 3,
    /// Relay → edge/bridge: answer to a keepalive.
    KeepaliveAck = 4,
    /// Relay → edge/bridge: I don't know you, register again.
    NotRegistered = 5,
    /// Either way: one fragment of an Ethernet frame.
    Frame = 6,
    /// Either way, between peers that negotiated [`CAP_ROUTED`](super::CAP_ROUTED): one
    /// fragment of an Ethernet frame, its route (fragment fields and MACs)
    /// in clear under a relay tag, the rest sealed end to end. Kind 7
    /// (OffloadFrame, a super-frame sealed once) is retired: unknown.
    RoutedFrame = 8,
}

impl Kind {
    /// The kind for a header byte, `None` if unknown.
    pub fn from_u8(byte: u8) -> Option<Kind> {
        Some(match byte {
            1 => Kind::Register,
            2 => Kind::RegisterAck,
            3 => Kind::Keepalive,
            4 => Kind::KeepaliveAck,
            5 => Kind::NotRegistered,
            6 => Kind::Frame,
            8 => Kind::RoutedFrame,
            _ => return None,
        })
    }
}

/// The clear header of a datagram. Only authentic once [`open`](fn@super::open)
/// succeeded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Always [`VERSION`] in a header that parsed.
    pub version: u8,
    /// What the payload is.
    pub kind: Kind,
    /// Which network (and so which key) the datagram claims.
    pub network_id: NetworkId,
    /// The sender's session.
    pub session: SessionId,
    /// The sender's per-session datagram counter.
    pub counter: u64,
}

/// Parses the clear header without any crypto, for choosing a key and
/// checking the replay window before paying for a decrypt.
///
/// Checks the length (at least a header and a tag), version, kind and flags.
pub fn peek_header(datagram: &[u8]) -> Result<Header, WireError> {
    if datagram.len() < OVERHEAD {
        return Err(WireError::Truncated);
    }
    let version = datagram[field::VERSION];
    if version != VERSION {
        return Err(WireError::BadVersion(version));
    }
    let kind_byte = datagram[field::KIND];
    let kind = Kind::from_u8(kind_byte).ok_or(WireError::UnknownKind(kind_byte))?;
    if datagram[field::FLAGS] != [0, 0] {
        return Err(WireError::BadFlags);
    }
    let mut network_id = [0u8; 8];
    network_id.copy_from_slice(&datagram[field::NETWORK_ID]);
    let mut session = [0u8; 16];
    session.copy_from_slice(&datagram[field::SESSION]);
    let mut counter = [0u8; 8];
    counter.copy_from_slice(&datagram[field::COUNTER]);
    Ok(Header {
        version,
        kind,
        network_id: NetworkId(network_id),
        session: SessionId(session),
        counter: u64::from_be_bytes(counter),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{
        drop::DropReason,
        wire::{testkit::*, Message, Sealer},
    };

    #[test]
    fn header_checks() {
        let mut sealer = Sealer::new(SESSION);
        let mut datagram = Vec::new();
        sealer
            .seal(&cipher(), &Message::Keepalive, &mut datagram)
            .unwrap();
        let mut bad = datagram.clone();
        bad[0] = 2;
        assert_eq!(peek_header(&bad), Err(WireError::BadVersion(2)));
        let mut bad = datagram.clone();
        bad[1] = 0;
        assert_eq!(peek_header(&bad), Err(WireError::UnknownKind(0)));
        let mut bad = datagram.clone();
        bad[1] = 7;
        assert_eq!(peek_header(&bad), Err(WireError::UnknownKind(7)));
        let mut bad = datagram.clone();
        bad[1] = 9;
        assert_eq!(peek_header(&bad), Err(WireError::UnknownKind(9)));
        let mut bad = datagram.clone();
        bad[3] = 1;
        assert_eq!(peek_header(&bad), Err(WireError::BadFlags));
        assert_eq!(WireError::BadFlags.drop_reason(), DropReason::Malformed);
        assert_eq!(
            peek_header(&datagram[..OVERHEAD - 1]),
            Err(WireError::Truncated)
        );
    }
}
