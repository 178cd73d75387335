//! IPv4 headers (RFC 791).

use std::net::Ipv4Addr;

use super::{checksum, get_u16, set_u16, Error, Result};

/// Byte ranges of the fixed header.
pub mod field {
    use std::ops::Range;

    /// Version (high nibble) and IHL (low nibble, in 32-bit words).
    pub const VER_IHL: usize = 0;
    /// DSCP and ECN.
    pub const DSCP_ECN: usize = 1;
    /// Total length, header included.
    pub const LENGTH: Range<usize> = 2..4;
    /// Identification.
    pub const IDENT: Range<usize> = 4..6;
    /// Flags and fragment offset.
    pub const FLG_OFF: Range<usize> = 6..8;
    /// Time to live.
    pub const TTL: usize = 8;
    /// Protocol of the payload.
    pub const PROTOCOL: usize = 9;
    /// Header checksum.
    pub const CHECKSUM: Range<usize> = 10..12;
    /// Source address.
    pub const SRC_ADDR: Range<usize> = 12..16;
    /// Destination address.
    pub const DST_ADDR: Range<usize> = 16..20;
    /// Length of the header without options.
    pub const MIN_HEADER_LEN: usize = 20;
}

/// IP protocol numbers the bridge looks at.
pub mod protocol {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6 (as an IPv6 next header).
    pub const ICMPV6: u8 = 58;
}

/// A view over an IPv4 packet.
#[derive(Debug, Clone)]
pub struct Ipv4Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps bytes without checking them.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv4Packet { buffer }
    }

    /// Wraps untrusted bytes: version 4, IHL at least 5, header and total
    /// length within the buffer (trailing Ethernet padding is allowed). A
    /// total length of 0 is accepted only on a buffer over 64 KiB (a BIG TCP
    /// GSO super-frame) and then means "the rest of the buffer".
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Checks version and lengths.
    pub fn check(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::MIN_HEADER_LEN {
            return Err(Error::Truncated);
        }
        if self.version() != 4 {
            return Err(Error::Malformed);
        }
        let hl = self.header_len();
        let total = self.end();
        if hl < field::MIN_HEADER_LEN || total < hl {
            return Err(Error::Malformed);
        }
        if b.len() < hl || b.len() < total {
            return Err(Error::Truncated);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// IP version (4).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[field::VER_IHL] >> 4
    }

    /// Header length in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.buffer.as_ref()[field::VER_IHL] & 0x0f) * 4
    }

    /// Total length field.
    pub fn total_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::LENGTH.start)
    }

    /// Where the packet ends: the total length, or for a GSO super-frame
    /// larger than 64 KiB (BIG TCP, total length 0) the end of the buffer.
    fn end(&self) -> usize {
        let len = self.buffer.as_ref().len();
        match self.total_len() {
            0 if len > usize::from(u16::MAX) => len,
            n => usize::from(n),
        }
    }

    /// Identification.
    pub fn ident(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::IDENT.start)
    }

    /// Fragment offset in 8-byte units.
    pub fn frag_offset(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::FLG_OFF.start) & 0x1fff
    }

    /// The "don't fragment" flag.
    pub fn dont_frag(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF.start) & 0x4000 != 0
    }

    /// The "more fragments" flag.
    pub fn more_frags(&self) -> bool {
        get_u16(self.buffer.as_ref(), field::FLG_OFF.start) & 0x2000 != 0
    }

    /// Protocol of the payload.
    pub fn protocol(&self) -> u8 {
        self.buffer.as_ref()[field::PROTOCOL]
    }

    /// Header checksum field.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::SRC_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        let b = &self.buffer.as_ref()[field::DST_ADDR];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// True if the header checksum is right.
    pub fn verify_checksum(&self) -> bool {
        checksum::verify(0, &self.buffer.as_ref()[..self.header_len()])
    }

    /// The payload: from the end of the header to the total length
    /// (Ethernet padding excluded).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..self.end()]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    /// Sets the header checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Sets the total length field.
    pub fn set_total_len(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::LENGTH.start, value);
    }

    /// Sets the identification field.
    pub fn set_ident(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::IDENT.start, value);
    }

    /// Recomputes the header checksum.
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::internet_checksum(&self.buffer.as_ref()[..self.header_len()]);
        self.set_checksum(c);
    }

    /// Mutable payload (see [`Ipv4Packet::payload`]).
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), self.end());
        &mut self.buffer.as_mut()[start..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 10.0.0.1 -> 10.0.0.2, UDP, 8 bytes payload, checksum filled.
    const PACKET: [u8; 30] = [
        0x45, 0x00, 0x00, 0x1c, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0x26, 0xcf, 10, 0, 0, 1, 10, 0,
        0, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0xee, 0xee, // 2 bytes of padding
    ];

    #[test]
    fn deconstruct() {
        let p = Ipv4Packet::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 28);
        assert_eq!(p.protocol(), protocol::UDP);
        assert_eq!(p.src_addr(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.dst_addr(), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(p.payload(), &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(p.frag_offset(), 0);
        assert!(p.dont_frag());
        assert!(!p.more_frags());
        assert!(p.verify_checksum());
    }

    #[test]
    fn fill_checksum_roundtrip() {
        let mut buf = PACKET;
        buf[10] = 0;
        buf[11] = 0;
        let mut p = Ipv4Packet::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum();
        assert_eq!(buf, PACKET);
    }

    #[test]
    fn big_tcp_super_frame() {
        let mut buf = vec![0u8; 70_000];
        buf[..20].copy_from_slice(&PACKET[..20]);
        buf[2..4].copy_from_slice(&[0, 0]);
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.payload().len(), 70_000 - 20);
        assert_eq!(
            Ipv4Packet::new_checked(&buf[..1000]).unwrap_err(),
            Error::Malformed
        );
    }

    #[test]
    fn rejects() {
        assert_eq!(
            Ipv4Packet::new_checked(&PACKET[..19]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv4Packet::new_checked(&PACKET[..27]).unwrap_err(),
            Error::Truncated
        );
        let mut bad = PACKET;
        bad[0] = 0x44;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Error::Malformed
        );
        bad[0] = 0x65;
        assert_eq!(
            Ipv4Packet::new_checked(&bad[..]).unwrap_err(),
            Error::Malformed
        );
    }
}
