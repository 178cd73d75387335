//! The datagram codec: header, AEAD seal/open, fragmentation, replay window.
//!
//! Every UDP datagram between edges, bridges and the relay is one message in
//! the format of `docs/protocol.md` (the byte-by-byte reference; keep the two
//! in step). In short: a 36-byte clear header (version, kind, flags, network
//! id, sender session id, counter) that is the AEAD's associated data, then
//! the XChaCha20-Poly1305 ciphertext of the payload and its 16-byte tag.
//!
//! Invariants this module keeps:
//! - **No nonce reuse.** The nonce is `session id || counter`. A [`Sealer`]
//!   owns one random 128-bit [`SessionId`] and a counter that only grows; it
//!   refuses to seal ([`WireError::CounterExhausted`]) rather than wrap.
//! - **Nothing is trusted before the tag verifies**, except what
//!   [`peek_header`] returns, which only serves to pick a key and to check the
//!   replay window cheaply. [`fn@open`] checks the network id before decrypting.
//! - **Replay is the caller's step**, in this order: [`ReplayGuard::check`]
//!   before [`fn@open`] (cheap), [`ReplayGuard::update`] only after [`fn@open`]
//!   succeeded, so forged datagrams cannot move the window.
//! - **Bounded memory.** [`ReplayGuard`] and [`Reassembler`] have caps and
//!   evict; no buffer grows past [`MAX_FRAME`] / [`MAX_DATAGRAM`] bytes, and
//!   buffers are reused so the hot path does not allocate once warm.
//! - **Bad input never panics**: it is a [`WireError`], which maps to a counted
//!   [`DropReason`].
//!
//! The module is pure: no I/O, no clock (`now` is passed in), no async. The
//! only system call is to the OS random source, in [`NetworkKey::generate`]
//! and [`SessionId::random`].
//!
//! One file per part, each stating the invariants it keeps:
//! - `keys.rs`: the [`NetworkKey`], the ids, the AEAD ([`Cipher`],
//!   [`SessionKey`], [`KeyCache`]);
//! - `header.rs`: the clear header's field table, [`Kind`], [`peek_header`];
//! - `message.rs`: the plaintext payloads, [`Message`] and [`Fragment`];
//! - `seal.rs`: the [`Sealer`], where every nonce is made;
//! - `open.rs`: [`fn@open`], [`open_cached`], and [`check_route`] /
//!   [`open_routed`] for RoutedFrames;
//! - `replay.rs`: [`ReplayWindow`] and [`ReplayGuard`];
//! - `reassembly.rs`: the [`Reassembler`].

use crate::core::drop::DropReason;

mod header;
mod keys;
mod message;
mod open;
mod reassembly;
mod replay;
mod seal;
#[cfg(test)]
mod testkit;

pub use header::{peek_header, Header, Kind};
pub use keys::{Cipher, KeyCache, KeyError, NetworkId, NetworkKey, SessionId, SessionKey};
pub use message::{Fragment, Message};
pub use open::{check_route, open, open_cached, open_routed};
pub use reassembly::{Reassembled, Reassembler, DEFAULT_MAX_PENDING, DEFAULT_REASSEMBLY_AGE};
pub use replay::{ReplayGuard, ReplayWindow};
pub use seal::Sealer;

/// The protocol version this module speaks (byte 0 of every datagram).
pub const VERSION: u8 = 1;
/// Length of the clear header, which is also the AEAD associated data.
pub const HEADER_LEN: usize = 36;
/// Length of the Poly1305 tag at the end of every datagram.
pub const TAG_LEN: usize = 16;
/// Bytes every datagram adds around its payload: header plus tag.
pub const OVERHEAD: usize = HEADER_LEN + TAG_LEN;
/// Length of a Frame payload before its chunk: frame id, index, count, dst, src.
pub const FRAG_HEADER_LEN: usize = 4 + 1 + 1 + 6 + 6;
/// Capability bit in Register and RegisterAck: the sender can take
/// RoutedFrame messages (kind 8). In a RegisterAck it means every peer of
/// the network can, so senders may use them. (Bit 0, `CAP_OFFLOAD` of the
/// retired kind 7, is ignored and never acknowledged.)
pub const CAP_ROUTED: u32 = 2;
/// Length of an Ethernet header's two MAC addresses, repeated in every fragment.
pub const MACS_LEN: usize = 12;
/// Shortest frame that can be sealed: dst, src and EtherType.
pub const MIN_FRAME: usize = 14;
/// Longest frame accepted for sealing and reassembly (a 64 KiB GSO frame plus
/// its Ethernet header).
pub const MAX_FRAME: usize = 65535 + 14;
/// Largest UDP payload over IPv4; no datagram is ever sealed larger.
pub const MAX_DATAGRAM: usize = 65507;
/// The datagram size the drivers use by default: a 1514-byte Ethernet frame
/// takes two datagrams and stays below a 1500-byte underlay MTU.
pub const DEFAULT_MAX_DATAGRAM: usize = 1400;
/// Smallest `max_datagram` [`Sealer::seal_frame`] accepts: room for one byte
/// of chunk.
pub const MIN_MAX_DATAGRAM: usize = OVERHEAD + FRAG_HEADER_LEN + 1;
/// Most fragments one frame may be cut into (`frag_count` is a `u8`).
pub const MAX_FRAGMENTS: usize = 255;
/// How many counters behind the highest one seen are still accepted once.
pub const REPLAY_WINDOW: u64 = 2048;

/// Length of a RoutedFrame's relay tag (a truncated keyed BLAKE3).
pub const RELAY_TAG_LEN: usize = 16;
/// Length of a RoutedFrame's clear route: frame id, index, count, dst, src
/// (the same fields, in the same order, as a Frame payload's head).
pub const ROUTE_LEN: usize = FRAG_HEADER_LEN;
/// Bytes a RoutedFrame datagram adds around its chunk: header, route, AEAD
/// tag, relay tag.
pub const ROUTED_OVERHEAD: usize = HEADER_LEN + ROUTE_LEN + TAG_LEN + RELAY_TAG_LEN;
/// The longest frame that fits one RoutedFrame datagram of `max_datagram`
/// bytes (its two MACs travel in the route): what TCP MSS clamping aims at,
/// so that no TCP segment needs two datagrams.
pub const fn max_frame_in_one_datagram(max_datagram: usize) -> usize {
    max_datagram.saturating_sub(ROUTED_OVERHEAD) + MACS_LEN
}

/// Why a datagram could not be sealed, opened or reassembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than a header plus a tag.
    #[error("datagram truncated")]
    Truncated,
    /// The version byte is not [`VERSION`].
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    /// The kind byte names no known message.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// Flags are non-zero; version 1 defines none.
    #[error("non-zero flags")]
    BadFlags,
    /// The network id is not the one of the key we tried.
    #[error("network id does not match the key")]
    WrongNetwork,
    /// The tag did not verify: wrong key, or bytes changed on the way.
    #[error("authentication failed (wrong key or tampered datagram)")]
    Forged,
    /// Authentic, but the payload does not parse; the text says which rule.
    #[error("malformed payload: {0}")]
    Malformed(&'static str),
    /// The counter was seen before or is older than the replay window.
    #[error("replayed datagram")]
    Replayed,
    /// A frame longer than [`MAX_FRAME`], one needing more than
    /// [`MAX_FRAGMENTS`] fragments, or a datagram over [`MAX_DATAGRAM`].
    #[error("frame or datagram too big")]
    TooBig,
    /// `max_datagram` leaves no room for a fragment's chunk.
    #[error("max datagram size {0} is below the minimum {MIN_MAX_DATAGRAM}")]
    DatagramLimitTooSmall(usize),
    /// A frame shorter than [`MIN_FRAME`] bytes cannot be sealed.
    #[error("frame shorter than an Ethernet header")]
    FrameTooShort,
    /// The sender's counter would wrap; it must restart with a new session.
    #[error("message counter exhausted; a new session is needed")]
    CounterExhausted,
    /// Reassembly was full: the oldest pending frame was dropped to make room.
    #[error("reassembly buffer full; oldest pending frame dropped")]
    ReassemblyOverflow,
}

impl WireError {
    /// The counter this error is reported under.
    pub fn drop_reason(&self) -> DropReason {
        match self {
            WireError::Truncated
            | WireError::BadFlags
            | WireError::Malformed(_)
            | WireError::FrameTooShort => DropReason::Malformed,
            WireError::BadVersion(_) => DropReason::BadVersion,
            WireError::UnknownKind(_) => DropReason::UnknownKind,
            WireError::WrongNetwork => DropReason::WrongNetwork,
            WireError::Forged => DropReason::Forged,
            WireError::Replayed => DropReason::Replayed,
            WireError::TooBig | WireError::DatagramLimitTooSmall(_) => DropReason::TooBig,
            WireError::CounterExhausted => DropReason::SendFailed,
            WireError::ReassemblyOverflow => DropReason::ReassemblyOverflow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_drop_reasons() {
        use DropReason as D;
        let table = [
            (WireError::Truncated, D::Malformed),
            (WireError::BadVersion(2), D::BadVersion),
            (WireError::UnknownKind(9), D::UnknownKind),
            (WireError::BadFlags, D::Malformed),
            (WireError::WrongNetwork, D::WrongNetwork),
            (WireError::Forged, D::Forged),
            (WireError::Malformed("x"), D::Malformed),
            (WireError::Replayed, D::Replayed),
            (WireError::TooBig, D::TooBig),
            (WireError::DatagramLimitTooSmall(10), D::TooBig),
            (WireError::FrameTooShort, D::Malformed),
            (WireError::CounterExhausted, D::SendFailed),
            (WireError::ReassemblyOverflow, D::ReassemblyOverflow),
        ];
        for (err, reason) in table {
            assert_eq!(err.drop_reason(), reason, "{err}");
        }
    }
}
