//! Zero-copy views over Ethernet frames and the headers the bridge rewrites.
//!
//! Each view wraps a byte buffer (`&[u8]` to read, `&mut [u8]` to rewrite in
//! place) in the style of smoltcp's `src/wire/`: a `mod field` table of byte
//! ranges per header, `new_unchecked` for bytes already checked, `new_checked`
//! for untrusted bytes, and getters/setters that read and write network byte
//! order. A view never allocates and never copies the payload.
//!
//! Invariant: after `new_checked` succeeds, every getter and setter of that
//! view is in bounds and cannot panic. Checksum arithmetic lives only in
//! [`checksum`].
//!
//! [`mss`] builds on the views: it clamps the MSS option of TCP handshakes
//! in place.
//!
//! etherparse stays the tool to classify frames and to build test frames; it
//! has no mutable views, hence these.

pub mod arp;
pub mod checksum;
pub mod dhcp;
pub mod ethernet;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod mss;
pub mod tcp;
pub mod udp;

/// Why bytes could not be viewed as a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer is shorter than the header, or than a length field claims.
    #[error("truncated header or payload")]
    Truncated,
    /// A length or version field holds a value that cannot be right.
    #[error("malformed header field")]
    Malformed,
    /// A valid header of a kind this view does not handle (e.g. ARP for a
    /// hardware type other than Ethernet).
    #[error("unsupported header variant")]
    Unsupported,
}

/// Result of building a checked view.
pub type Result<T> = std::result::Result<T, Error>;

/// Reads a big-endian `u16` at `at`; the caller has checked the bounds.
#[inline]
pub(crate) fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

/// Writes a big-endian `u16` at `at`; the caller has checked the bounds.
#[inline]
pub(crate) fn set_u16(buf: &mut [u8], at: usize, value: u16) {
    buf[at..at + 2].copy_from_slice(&value.to_be_bytes());
}
