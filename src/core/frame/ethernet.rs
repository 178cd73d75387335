//! Ethernet II frames with at most one 802.1Q tag (IEEE 802.3, 802.1Q).
//!
//! With a tag the EtherType and payload move four bytes on; [`EthernetFrame`]
//! hides that: [`EthernetFrame::ethertype`] is the inner type and
//! [`EthernetFrame::payload`] starts after the tag. (AF_PACKET normally
//! strips the tag into `PACKET_AUXDATA`; tagged bytes still occur, e.g. from
//! the overlay or on a NIC with VLAN offload off.)

use super::{get_u16, set_u16, Error, Result};
use crate::core::mac::MacAddr;

/// Byte ranges of the header.
pub mod field {
    use std::ops::Range;

    /// Destination MAC.
    pub const DESTINATION: Range<usize> = 0..6;
    /// Source MAC.
    pub const SOURCE: Range<usize> = 6..12;
    /// EtherType, or the TPID `0x8100` of an 802.1Q tag.
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// With a tag: priority, DEI and VLAN id.
    pub const VLAN_TCI: Range<usize> = 14..16;
    /// With a tag: the inner EtherType.
    pub const VLAN_ETHERTYPE: Range<usize> = 16..18;
    /// Header length without a tag.
    pub const HEADER_LEN: usize = 14;
    /// Header length with one 802.1Q tag.
    pub const VLAN_HEADER_LEN: usize = 18;
}

/// EtherType values the bridge knows.
pub mod ethertype {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// ARP (RFC 826).
    pub const ARP: u16 = 0x0806;
    /// Reverse ARP (RFC 903); same packet format as ARP.
    pub const RARP: u16 = 0x8035;
    /// IEEE 802.1Q tag.
    pub const VLAN: u16 = 0x8100;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
}

/// A view over an Ethernet II frame.
#[derive(Debug, Clone)]
pub struct EthernetFrame<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps bytes without checking them; getters may panic on short input.
    pub fn new_unchecked(buffer: T) -> Self {
        EthernetFrame { buffer }
    }

    /// Wraps untrusted bytes: fails if the header (and tag, if any) is cut.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the whole header, tag included, is present.
    pub fn check_len(&self) -> Result<()> {
        let len = self.buffer.as_ref().len();
        if len < field::HEADER_LEN || len < self.header_len() {
            Err(Error::Truncated)
        } else {
            Ok(())
        }
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// Destination MAC.
    pub fn dst_addr(&self) -> MacAddr {
        MacAddr(self.buffer.as_ref()[field::DESTINATION].try_into().unwrap())
    }

    /// Source MAC.
    pub fn src_addr(&self) -> MacAddr {
        MacAddr(self.buffer.as_ref()[field::SOURCE].try_into().unwrap())
    }

    fn outer_ethertype(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::ETHERTYPE.start)
    }

    /// The 802.1Q tag control information, if the frame carries a tag.
    pub fn vlan_tci(&self) -> Option<u16> {
        (self.outer_ethertype() == ethertype::VLAN)
            .then(|| get_u16(self.buffer.as_ref(), field::VLAN_TCI.start))
    }

    /// Header length: 14, or 18 with a tag.
    pub fn header_len(&self) -> usize {
        if self.outer_ethertype() == ethertype::VLAN {
            field::VLAN_HEADER_LEN
        } else {
            field::HEADER_LEN
        }
    }

    /// The EtherType of the payload (the inner one behind a tag).
    pub fn ethertype(&self) -> u16 {
        if self.outer_ethertype() == ethertype::VLAN {
            get_u16(self.buffer.as_ref(), field::VLAN_ETHERTYPE.start)
        } else {
            self.outer_ethertype()
        }
    }

    /// Everything after the header (padding included).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination MAC.
    pub fn set_dst_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::DESTINATION].copy_from_slice(&addr.0);
    }

    /// Sets the source MAC.
    pub fn set_src_addr(&mut self, addr: MacAddr) {
        self.buffer.as_mut()[field::SOURCE].copy_from_slice(&addr.0);
    }

    /// Mutable payload after the header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let start = self.header_len();
        &mut self.buffer.as_mut()[start..]
    }
}

/// Writes an untagged header into the first 14 bytes of `buf` (tests,
/// simulators).
pub fn emit(buf: &mut [u8], dst: MacAddr, src: MacAddr, ethertype: u16) {
    buf[field::DESTINATION].copy_from_slice(&dst.0);
    buf[field::SOURCE].copy_from_slice(&src.0);
    set_u16(buf, field::ETHERTYPE.start, ethertype);
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNTAGGED: [u8; 16] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x08, 0x06, // ARP
        0xaa, 0xbb, // payload
    ];

    const TAGGED: [u8; 20] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // dst
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, // src
        0x81, 0x00, 0x20, 0x07, // tag: pcp 1, vid 7
        0x08, 0x00, // IPv4
        0xaa, 0xbb, // payload
    ];

    #[test]
    fn deconstruct_untagged() {
        let f = EthernetFrame::new_checked(&UNTAGGED[..]).unwrap();
        assert_eq!(f.dst_addr(), MacAddr::BROADCAST);
        assert_eq!(f.src_addr(), MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(f.ethertype(), ethertype::ARP);
        assert_eq!(f.vlan_tci(), None);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn deconstruct_tagged() {
        let f = EthernetFrame::new_checked(&TAGGED[..]).unwrap();
        assert_eq!(f.ethertype(), ethertype::IPV4);
        assert_eq!(f.vlan_tci(), Some(0x2007));
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn construct() {
        let mut buf = [0u8; 16];
        emit(
            &mut buf,
            MacAddr::BROADCAST,
            MacAddr([2, 0, 0, 0, 0, 1]),
            0x0806,
        );
        buf[14..].copy_from_slice(&[0xaa, 0xbb]);
        assert_eq!(buf, UNTAGGED);
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_src_addr(MacAddr([2, 0, 0, 0, 0, 9]));
        f.set_dst_addr(MacAddr([2, 0, 0, 0, 0, 8]));
        assert_eq!(&buf[..12], &[2, 0, 0, 0, 0, 8, 2, 0, 0, 0, 0, 9]);
    }

    #[test]
    fn truncated() {
        assert_eq!(
            EthernetFrame::new_checked(&UNTAGGED[..13]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            EthernetFrame::new_checked(&TAGGED[..17]).unwrap_err(),
            Error::Truncated
        );
        assert!(EthernetFrame::new_checked(&TAGGED[..18]).is_ok());
    }
}
