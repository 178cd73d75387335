//! ICMPv6 (RFC 4443) and the Neighbor Discovery messages that carry
//! link-layer addresses (RFC 4861 section 4).
//!
//! NDP options are type-length-value with the length in units of 8 bytes;
//! a zero length is invalid (RFC 4861 section 4.6) and makes the whole
//! message [`Error::Malformed`]. The source (type 1) and target (type 2)
//! link-layer address options hold a MAC in bytes 2..8 on Ethernet.

use std::net::Ipv6Addr;

use super::{checksum, get_u16, ipv4::protocol, set_u16, Error, Result};
use crate::core::mac::MacAddr;

/// Byte ranges of the ICMPv6 header and NDP bodies.
pub mod field {
    use std::ops::Range;

    /// Message type.
    pub const TYPE: usize = 0;
    /// Message code.
    pub const CODE: usize = 1;
    /// Checksum (over the IPv6 pseudo-header and the message).
    pub const CHECKSUM: Range<usize> = 2..4;
    /// NS, NA and Redirect: the target address.
    pub const TARGET: Range<usize> = 8..24;
    /// Header length common to all messages.
    pub const HEADER_LEN: usize = 4;
}

/// NDP message types (RFC 4861 section 4).
pub mod msg {
    /// Router Solicitation.
    pub const ROUTER_SOLICIT: u8 = 133;
    /// Router Advertisement.
    pub const ROUTER_ADVERT: u8 = 134;
    /// Neighbor Solicitation.
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    /// Neighbor Advertisement.
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// Redirect.
    pub const REDIRECT: u8 = 137;
    /// Echo request (not NDP; for tests).
    pub const ECHO_REQUEST: u8 = 128;
}

/// NDP option types.
pub mod opt {
    /// Source link-layer address.
    pub const SOURCE_LLA: u8 = 1;
    /// Target link-layer address.
    pub const TARGET_LLA: u8 = 2;
}

/// Where the options start in an NDP message of type `msg_type`, or `None`
/// if the type is not an NDP message with options.
pub fn ndp_options_offset(msg_type: u8) -> Option<usize> {
    match msg_type {
        msg::ROUTER_SOLICIT => Some(8),
        msg::ROUTER_ADVERT => Some(16),
        msg::NEIGHBOR_SOLICIT | msg::NEIGHBOR_ADVERT => Some(24),
        msg::REDIRECT => Some(40),
        _ => None,
    }
}

/// A view over an ICMPv6 message (the IPv6 upper-layer payload).
#[derive(Debug, Clone)]
pub struct Icmpv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps bytes without checking them.
    pub fn new_unchecked(buffer: T) -> Self {
        Icmpv6Packet { buffer }
    }

    /// Wraps untrusted bytes: the 4-byte header, and for NDP messages the
    /// fixed body and well-formed options.
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        let b = p.buffer.as_ref();
        if b.len() < field::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if let Some(start) = ndp_options_offset(p.msg_type()) {
            if b.len() < start {
                return Err(Error::Truncated);
            }
            let mut at = start;
            while at < b.len() {
                let len = usize::from(*b.get(at + 1).ok_or(Error::Truncated)?) * 8;
                if len == 0 {
                    return Err(Error::Malformed);
                }
                at += len;
            }
            if at != b.len() {
                return Err(Error::Truncated);
            }
        }
        Ok(p)
    }

    /// Message type.
    pub fn msg_type(&self) -> u8 {
        self.buffer.as_ref()[field::TYPE]
    }

    /// Message code.
    pub fn code(&self) -> u8 {
        self.buffer.as_ref()[field::CODE]
    }

    /// Checksum field.
    pub fn checksum(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::CHECKSUM.start)
    }

    /// True for the NDP types that carry options (RS, RA, NS, NA, Redirect).
    pub fn is_ndp(&self) -> bool {
        ndp_options_offset(self.msg_type()).is_some()
    }

    /// The target address of an NS, NA or Redirect.
    pub fn target_addr(&self) -> Option<Ipv6Addr> {
        match self.msg_type() {
            msg::NEIGHBOR_SOLICIT | msg::NEIGHBOR_ADVERT | msg::REDIRECT => {
                let b: [u8; 16] = self.buffer.as_ref()[field::TARGET].try_into().unwrap();
                Some(Ipv6Addr::from(b))
            }
            _ => None,
        }
    }

    /// The link-layer address options of an NDP message: (option type, MAC).
    pub fn lla_options(&self) -> impl Iterator<Item = (u8, MacAddr)> + '_ {
        let b = self.buffer.as_ref();
        let mut at = ndp_options_offset(self.msg_type()).unwrap_or(b.len());
        std::iter::from_fn(move || loop {
            let kind = *b.get(at)?;
            let len = usize::from(*b.get(at + 1)?) * 8;
            if len == 0 {
                return None;
            }
            let start = at;
            at += len;
            if matches!(kind, opt::SOURCE_LLA | opt::TARGET_LLA) && len >= 8 {
                return MacAddr::from_slice(b.get(start + 2..start + 8)?).map(|m| (kind, m));
            }
        })
    }

    /// True if the checksum is right for this source and destination.
    pub fn verify_checksum(&self, src: &Ipv6Addr, dst: &Ipv6Addr) -> bool {
        let b = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v6(src, dst, protocol::ICMPV6, b.len() as u32);
        checksum::verify(pseudo, b)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// Sets the checksum field.
    pub fn set_checksum(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::CHECKSUM.start, value);
    }

    /// Recomputes the checksum.
    pub fn fill_checksum(&mut self, src: &Ipv6Addr, dst: &Ipv6Addr) {
        self.set_checksum(0);
        let b = self.buffer.as_ref();
        let pseudo = checksum::pseudo_header_v6(src, dst, protocol::ICMPV6, b.len() as u32);
        let c = !checksum::fold(checksum::combine(&[pseudo, checksum::sum(b)]));
        self.set_checksum(c);
    }

    /// Sets the MAC in every source/target link-layer address option to
    /// `mac`; returns how many options were rewritten. The view must come
    /// from [`Icmpv6Packet::new_checked`].
    pub fn set_lla_options(&mut self, mac: MacAddr) -> usize {
        let mut at = ndp_options_offset(self.msg_type()).unwrap_or(usize::MAX);
        let b = self.buffer.as_mut();
        let mut n = 0;
        while at < b.len() {
            let (kind, len) = (b[at], usize::from(b[at + 1]) * 8);
            if len == 0 {
                break;
            }
            if matches!(kind, opt::SOURCE_LLA | opt::TARGET_LLA) && len >= 8 {
                b[at + 2..at + 8].copy_from_slice(&mac.0);
                n += 1;
            }
            at += len;
        }
        n
    }

    /// Rewrites the source/target link-layer options that hold `from` to
    /// `to`, leaving others alone; returns how many. The caller fixes the
    /// checksum.
    pub fn replace_lla_options(&mut self, from: MacAddr, to: MacAddr) -> usize {
        let mut at = ndp_options_offset(self.msg_type()).unwrap_or(usize::MAX);
        let b = self.buffer.as_mut();
        let mut n = 0;
        while at + 1 < b.len() {
            let (kind, len) = (b[at], usize::from(b[at + 1]) * 8);
            if len == 0 || at + len > b.len() {
                break;
            }
            if matches!(kind, opt::SOURCE_LLA | opt::TARGET_LLA)
                && len >= 8
                && b[at + 2..at + 8] == from.0
            {
                b[at + 2..at + 8].copy_from_slice(&to.0);
                n += 1;
            }
            at += len;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns() -> Vec<u8> {
        let mut v = vec![msg::NEIGHBOR_SOLICIT, 0, 0, 0, 0, 0, 0, 0];
        v.extend_from_slice(&"fe80::2".parse::<Ipv6Addr>().unwrap().octets());
        v.extend_from_slice(&[opt::SOURCE_LLA, 1, 2, 0, 0, 0, 0, 1]);
        v
    }

    #[test]
    fn deconstruct_ns() {
        let buf = ns();
        let p = Icmpv6Packet::new_checked(&buf[..]).unwrap();
        assert!(p.is_ndp());
        assert_eq!(p.target_addr(), Some("fe80::2".parse().unwrap()));
        let opts: Vec<_> = p.lla_options().collect();
        assert_eq!(opts, vec![(opt::SOURCE_LLA, MacAddr([2, 0, 0, 0, 0, 1]))]);
    }

    #[test]
    fn rewrite_and_checksum() {
        let (src, dst) = ("fe80::1".parse().unwrap(), "fe80::2".parse().unwrap());
        let mut buf = ns();
        let mut p = Icmpv6Packet::new_checked(&mut buf[..]).unwrap();
        p.fill_checksum(&src, &dst);
        assert!(p.verify_checksum(&src, &dst));
        assert_eq!(p.set_lla_options(MacAddr([2, 9, 9, 9, 9, 9])), 1);
        assert!(!p.verify_checksum(&src, &dst));
        p.fill_checksum(&src, &dst);
        assert!(p.verify_checksum(&src, &dst));
        assert_eq!(&buf[26..32], &[2, 9, 9, 9, 9, 9]);
    }

    #[test]
    fn rejects_bad_options() {
        let mut buf = ns();
        buf[25] = 0;
        assert_eq!(
            Icmpv6Packet::new_checked(&buf[..]).unwrap_err(),
            Error::Malformed
        );
        let buf = ns();
        assert_eq!(
            Icmpv6Packet::new_checked(&buf[..30]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Icmpv6Packet::new_checked(&buf[..20]).unwrap_err(),
            Error::Truncated
        );
    }
}
