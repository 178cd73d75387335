//! UDP headers (RFC 768).
//!
//! Over IPv4 a checksum of zero means "none"; a computed zero is sent as
//! `0xffff`. [`UdpPacket::update_checksum`] keeps both rules.

use std::net::Ipv4Addr;

use super::{checksum, get_u16, set_u16, Error, Result};

/// Byte ranges of the header.
pub mod field {
    use std::ops::Range;

    /// Source port.
    pub const SRC_PORT: Range<usize> = 0..2;
    /// Destination port.
    pub const DST_PORT: Range<usize> = 2..4;
    /// Length of header and payload.
    pub const LENGTH: Range<usize> = 4..6;
    /// Checksum.
    pub const CHECKSUM: Range<usize> = 6..8;
    /// Header length.
    pub const HEADER_LEN: usize = 8;
}

/// A view over a UDP datagram.
#[derive(Debug, Clone)]
pub struct UdpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps bytes without checking them.
    pub fn new_unchecked(buffer: T) -> Self {
        UdpPacket { buffer }
    }

    /// Wraps untrusted bytes: header present, length field within the buffer.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        let len = p.buffer.as_ref().len();
        if len < field::HEADER_LEN {
            return Err(Error::Truncated);
        }
        let claimed = usize::from(p.len());
        if claimed < field::HEADER_LEN {
            return Err(Error::Malformed);
        }
        if claimed > len {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// Source port.
    pub fn src_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::SRC_PORT.start)
    }

    /// Destination port.
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::DST_PORT.start)
    }

    /// Length field (header and payload).
    pub fn len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// True if the length field says there is no payload.
    pub fn is_empty(&self) -> bool {
        usize::from(self.len()) <= field::HEADER_LEN
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// The datagram, header included, up to the length field.
    pub fn datagram(&self) -> &[u8] {
        &self.buffer.as_ref()[..usize::from(self.len())]
    }

    /// The payload, up to the length field.
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER_LEN..usize::from(self.len())]
    }

    /// True if the checksum is zero (absent) or right, over IPv4.
    pub fn verify_checksum_v4(&self, src: Ipv4Addr, dst: Ipv4Addr) -> bool {
        self.checksum() == 0
            || checksum::verify(
                checksum::pseudo_header_v4(src, dst, super::ipv4::protocol::UDP, self.len()),
                self.datagram(),
            )
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Mutable payload, up to the length field.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = usize::from(self.len());
        &mut self.buffer.as_mut()[field::HEADER_LEN..end]
    }

    /// Sets the length field (header and payload).
    pub fn set_len(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH.start, value);
    }

    /// Recomputes the checksum over IPv4 (a computed zero becomes `0xffff`).
    pub fn fill_checksum_v4(&mut self, src: Ipv4Addr, dst: Ipv4Addr) {
        let pseudo = checksum::pseudo_header_v4(src, dst, super::ipv4::protocol::UDP, self.len());
        self.fill_checksum_with_pseudo(pseudo);
    }

    /// Recomputes the checksum over the datagram plus `pseudo`, the
    /// pseudo-header sum for its length (IPv4 or IPv6); a computed zero
    /// becomes `0xffff`.
    pub fn fill_checksum_with_pseudo(&mut self, pseudo: u32) {
        self.set_checksum(0);
        let c = !checksum::fold(checksum::combine(&[pseudo, checksum::sum(self.datagram())]));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }

    /// Updates the checksum incrementally after a 16-bit word of the datagram
    /// changed from `old` to `new` (RFC 1624). A zero (absent) checksum stays
    /// zero. Do not call this when the checksum is partial.
    pub fn update_checksum(&mut self, old: u16, new: u16) {
        let c = self.checksum();
        if c == 0 {
            return;
        }
        let c = checksum::update_word(c, old, new);
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn construct_and_verify() {
        let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut buf = [0u8; 12];
        buf[..8].copy_from_slice(&[0x00, 0x44, 0x00, 0x43, 0x00, 0x0c, 0, 0]);
        buf[8..].copy_from_slice(b"abcd");
        let mut p = UdpPacket::new_checked(&mut buf[..]).unwrap();
        assert_eq!((p.src_port(), p.dst_port(), p.len()), (68, 67, 12));
        assert_eq!(p.payload(), b"abcd");
        p.fill_checksum_v4(src, dst);
        assert!(p.verify_checksum_v4(src, dst));
        let old = get_u16(p.payload(), 0);
        p.payload_mut()[0] = b'z';
        let new = get_u16(p.payload(), 0);
        p.update_checksum(old, new);
        assert!(p.verify_checksum_v4(src, dst));
    }

    #[test]
    fn rejects() {
        assert_eq!(
            UdpPacket::new_checked(&[0u8; 7][..]).unwrap_err(),
            Error::Truncated
        );
        let short_len = [0, 1, 0, 2, 0, 4, 0, 0];
        assert_eq!(
            UdpPacket::new_checked(&short_len[..]).unwrap_err(),
            Error::Malformed
        );
        let long_len = [0, 1, 0, 2, 0, 9, 0, 0];
        assert_eq!(
            UdpPacket::new_checked(&long_len[..]).unwrap_err(),
            Error::Truncated
        );
    }
}
