//! What protocol version 2 keeps of the original codec: the network key and
//! the ids, fragments and their reassembly, the replay window, and the
//! errors.
//!
//! The datagrams themselves (layouts, handshakes, AEAD, relay tags) are
//! `proto/`'s, `noise.rs`'s, `client.rs`'s and `relay.rs`'s
//! (`docs/protocol.md`, the byte-by-byte reference). This module holds the
//! parts they build on:
//! - `keys.rs`: the [`NetworkKey`] members share (`lanbridge genkey`), from
//!   which `proto::keys` derives every version 2 key; [`KeyError`]; the
//!   [`NetworkId`] a relay picks a network by; the [`SessionId`] the
//!   reassembler keys a sender's frames by;
//! - `message.rs`: [`Fragment`], the checked view of a fragment's fields
//!   and chunk (the plaintext of a Data datagram);
//! - `reassembly.rs`: the [`Reassembler`], which puts fragmented frames back
//!   together;
//! - `replay.rs`: the [`ReplayWindow`] of every keypair.
//!
//! Invariants this module keeps:
//! - **Bounded memory.** [`ReplayWindow`] is a fixed bitmap and
//!   [`Reassembler`] has caps and evicts; no buffer grows past
//!   [`MAX_FRAME`] bytes, and buffers are reused so the hot path does not
//!   allocate once warm.
//! - **Bad input never panics**: it is a [`WireError`], which maps to a
//!   counted [`DropReason`].
//!
//! The module is pure: no I/O, no clock (`now` is passed in), no async. The
//! only system call is to the OS random source, in [`NetworkKey::generate`].

use crate::core::drop::DropReason;

mod keys;
mod message;
mod reassembly;
mod replay;
#[cfg(test)]
mod testkit;

pub use keys::{KeyError, NetworkId, NetworkKey, SessionId};
pub use message::Fragment;
pub use reassembly::{Reassembled, Reassembler, DEFAULT_MAX_PENDING, DEFAULT_REASSEMBLY_AGE};
pub use replay::ReplayWindow;

/// Length of a fragment's fields before its chunk: frame id, index, count,
/// dst, src.
pub const FRAG_HEADER_LEN: usize = 4 + 1 + 1 + 6 + 6;
/// Length of an Ethernet header's two MAC addresses, repeated in every fragment.
pub const MACS_LEN: usize = 12;
/// Shortest frame that can be sent: dst, src and EtherType.
pub const MIN_FRAME: usize = 14;
/// Longest frame accepted for sending and reassembly (a 64 KiB GSO frame
/// plus its Ethernet header).
pub const MAX_FRAME: usize = 65535 + 14;
/// Largest UDP payload over IPv4; no datagram is ever sent larger.
pub const MAX_DATAGRAM: usize = 65507;
/// The datagram size the drivers use by default: a 1514-byte Ethernet frame
/// takes two datagrams and stays below a 1500-byte underlay MTU.
pub const DEFAULT_MAX_DATAGRAM: usize = 1400;
/// Most fragments one frame may be cut into (`count` is a `u8`).
pub const MAX_FRAGMENTS: usize = 255;
/// How many counters behind the highest one seen are still accepted once.
pub const REPLAY_WINDOW: u64 = 2048;

/// Why a datagram could not be sealed, opened or reassembled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Shorter than its kind's fields, or than a tag.
    #[error("datagram truncated")]
    Truncated,
    /// The version byte is not this build's
    /// ([`proto::codec::VERSION`](crate::core::proto::codec::VERSION)).
    #[error("unsupported protocol version {0}")]
    BadVersion(u8),
    /// The kind byte names no known message.
    #[error("unknown message kind {0}")]
    UnknownKind(u8),
    /// Bytes 2 and 3 (reserved) are not zero.
    #[error("non-zero flags")]
    BadFlags,
    /// A tag did not verify: wrong key, or bytes changed on the way.
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
    /// The datagram size limit leaves no room for a fragment's chunk; the
    /// number is the room left.
    #[error("datagram size limit leaves {0} bytes for a fragment's chunk")]
    DatagramLimitTooSmall(usize),
    /// A frame shorter than [`MIN_FRAME`] bytes cannot be sent.
    #[error("frame shorter than an Ethernet header")]
    FrameTooShort,
    /// The sender's counter would pass its limit; a new session is needed.
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
