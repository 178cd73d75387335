//! ARP packets for Ethernet and IPv4 (RFC 826); RARP (RFC 903) shares the
//! format.
//!
//! Only hardware type 1 (Ethernet, 6-byte addresses) with protocol type
//! `0x0800` (IPv4, 4-byte addresses) is accepted: that is all an Ethernet
//! bridge carries, and it fixes every offset.

use std::net::Ipv4Addr;

use super::{get_u16, set_u16, Error, Result};
use crate::core::mac::MacAddr;

/// Byte ranges of an Ethernet/IPv4 ARP packet.
pub mod field {
    use std::ops::Range;

    /// Hardware type (1 = Ethernet).
    pub const HTYPE: Range<usize> = 0..2;
    /// Protocol type (`0x0800` = IPv4).
    pub const PTYPE: Range<usize> = 2..4;
    /// Hardware address length.
    pub const HLEN: usize = 4;
    /// Protocol address length.
    pub const PLEN: usize = 5;
    /// Operation.
    pub const OPER: Range<usize> = 6..8;
    /// Sender hardware address.
    pub const SHA: Range<usize> = 8..14;
    /// Sender protocol address.
    pub const SPA: Range<usize> = 14..18;
    /// Target hardware address.
    pub const THA: Range<usize> = 18..24;
    /// Target protocol address.
    pub const TPA: Range<usize> = 24..28;
    /// Length of the packet.
    pub const LEN: usize = 28;
}

/// ARP operation codes.
pub mod op {
    /// ARP request.
    pub const REQUEST: u16 = 1;
    /// ARP reply.
    pub const REPLY: u16 = 2;
    /// RARP request.
    pub const RARP_REQUEST: u16 = 3;
    /// RARP reply.
    pub const RARP_REPLY: u16 = 4;
}

/// A view over an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone)]
pub struct ArpPacket<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps bytes without checking them.
    pub fn new_unchecked(buffer: T) -> Self {
        ArpPacket { buffer }
    }

    /// Wraps untrusted bytes: at least 28 bytes, Ethernet/IPv4 only.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        p.check()?;
        Ok(p)
    }

    /// Checks length and address types.
    pub fn check(&self) -> Result<()> {
        let b = self.buffer.as_ref();
        if b.len() < field::LEN {
            return Err(Error::Truncated);
        }
        if get_u16(b, field::HTYPE.start) != 1
            || get_u16(b, field::PTYPE.start) != 0x0800
            || b[field::HLEN] != 6
            || b[field::PLEN] != 4
        {
            return Err(Error::Unsupported);
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Operation (see [`op`]).
    pub fn operation(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::OPER.start)
    }

    /// Sender hardware address.
    pub fn sender_hw_addr(&self) -> MacAddr {
        MacAddr(self.buffer.as_ref()[field::SHA].try_into().unwrap())
    }

    /// Sender protocol address.
    pub fn sender_ip(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::SPA])
    }

    /// Target hardware address (zeros in a request).
    pub fn target_hw_addr(&self) -> MacAddr {
        MacAddr(self.buffer.as_ref()[field::THA].try_into().unwrap())
    }

    /// Target protocol address.
    pub fn target_ip(&self) -> Ipv4Addr {
        ip(&self.buffer.as_ref()[field::TPA])
    }
}

fn ip(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Sets the operation.
    pub fn set_operation(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::OPER.start, value);
    }

    /// Sets the sender hardware address.
    pub fn set_sender_hw_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SHA].copy_from_slice(&addr.0);
    }

    /// Sets the sender protocol address.
    pub fn set_sender_ip(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::SPA].copy_from_slice(&addr.octets());
    }

    /// Sets the target hardware address.
    pub fn set_target_hw_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::THA].copy_from_slice(&addr.0);
    }

    /// Sets the target protocol address.
    pub fn set_target_ip(&mut self, addr: Ipv4Addr) {
        self.buffer.as_mut()[field::TPA].copy_from_slice(&addr.octets());
    }

    /// Writes the fixed Ethernet/IPv4 type and length fields.
    pub fn fill_ethernet_ipv4(&mut self) {
        let b = self.buffer.as_mut();
        set_u16(b, field::HTYPE.start, 1);
        set_u16(b, field::PTYPE.start, 0x0800);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUEST: [u8; 28] = [
        0x00, 0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, // htype ptype hlen plen op
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 10, 0, 0, 1, // sha spa
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 10, 0, 0, 2, // tha tpa
    ];

    #[test]
    fn deconstruct() {
        let p = ArpPacket::new_checked(&REQUEST[..]).unwrap();
        assert_eq!(p.operation(), op::REQUEST);
        assert_eq!(p.sender_hw_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(p.sender_ip(), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(p.target_hw_addr(), MacAddr::ZERO);
        assert_eq!(p.target_ip(), Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 28];
        let mut p = ArpPacket::new_unchecked(&mut buf[..]);
        p.fill_ethernet_ipv4();
        p.set_operation(op::REQUEST);
        p.set_sender_hw_addr(MacAddr([2, 0, 0, 0, 0, 1]));
        p.set_sender_ip(Ipv4Addr::new(10, 0, 0, 1));
        p.set_target_hw_addr(MacAddr::ZERO);
        p.set_target_ip(Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(buf, REQUEST);
    }

    #[test]
    fn rejects_short_and_foreign() {
        assert_eq!(
            ArpPacket::new_checked(&REQUEST[..27]).unwrap_err(),
            Error::Truncated
        );
        let mut other = REQUEST;
        other[1] = 6; // IEEE 802 hardware type
        assert_eq!(
            ArpPacket::new_checked(&other[..]).unwrap_err(),
            Error::Unsupported
        );
    }
}
