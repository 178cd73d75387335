//! IPv6 headers (RFC 8200).

use std::net::Ipv6Addr;

use super::{get_u16, set_u16, Error, Result};

/// Byte ranges of the fixed header.
pub mod field {
    use std::ops::Range;

    /// Version, traffic class, flow label.
    pub const VER_TC_FLOW: Range<usize> = 0..4;
    /// Payload length (extension headers included).
    pub const PAYLOAD_LEN: Range<usize> = 4..6;
    /// Next header.
    pub const NEXT_HEADER: usize = 6;
    /// Hop limit.
    pub const HOP_LIMIT: usize = 7;
    /// Source address.
    pub const SRC_ADDR: Range<usize> = 8..24;
    /// Destination address.
    pub const DST_ADDR: Range<usize> = 24..40;
    /// Length of the fixed header.
    pub const HEADER_LEN: usize = 40;
}

/// Extension headers that [`Ipv6Packet::upper_layer`] walks over.
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const DEST_OPTS: u8 = 60;

/// A view over an IPv6 packet.
#[derive(Debug, Clone)]
pub struct Ipv6Packet<T> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    /// Wraps bytes without checking them.
    pub fn new_unchecked(buffer: T) -> Self {
        Ipv6Packet { buffer }
    }

    /// Wraps untrusted bytes: version 6, payload within the buffer. A payload
    /// length of zero (jumbogram, or a GSO super-frame) means "the rest of
    /// the buffer".
    pub fn new_checked(buffer: T) -> Result<Self> {
        let p = Self::new_unchecked(buffer);
        let len = p.buffer.as_ref().len();
        if len < field::HEADER_LEN {
            return Err(Error::Truncated);
        }
        if p.version() != 6 {
            return Err(Error::Malformed);
        }
        if field::HEADER_LEN + usize::from(p.payload_len()) > len {
            return Err(Error::Truncated);
        }
        Ok(p)
    }

    /// IP version (6).
    pub fn version(&self) -> u8 {
        self.buffer.as_ref()[0] >> 4
    }

    /// Payload length field.
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buffer.as_ref(), field::PAYLOAD_LEN.start)
    }

    /// Next header field.
    pub fn next_header(&self) -> u8 {
        self.buffer.as_ref()[field::NEXT_HEADER]
    }

    /// Hop limit.
    pub fn hop_limit(&self) -> u8 {
        self.buffer.as_ref()[field::HOP_LIMIT]
    }

    /// Source address.
    pub fn src_addr(&self) -> Ipv6Addr {
        let b: [u8; 16] = self.buffer.as_ref()[field::SRC_ADDR].try_into().unwrap();
        Ipv6Addr::from(b)
    }

    /// Destination address.
    pub fn dst_addr(&self) -> Ipv6Addr {
        let b: [u8; 16] = self.buffer.as_ref()[field::DST_ADDR].try_into().unwrap();
        Ipv6Addr::from(b)
    }

    fn payload_end(&self) -> usize {
        match self.payload_len() {
            0 => self.buffer.as_ref().len(),
            n => field::HEADER_LEN + usize::from(n),
        }
    }

    /// The payload after the fixed header (extension headers included).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[field::HEADER_LEN..self.payload_end()]
    }

    /// The upper-layer protocol and its offset within [`Ipv6Packet::payload`],
    /// after skipping hop-by-hop, routing and destination options headers.
    /// Other extension headers (fragment, ESP, ...) are returned as is.
    pub fn upper_layer(&self) -> Result<(u8, usize)> {
        let payload = self.payload();
        let (mut next, mut at) = (self.next_header(), 0usize);
        while matches!(next, HOP_BY_HOP | ROUTING | DEST_OPTS) {
            let hdr = payload.get(at..at + 2).ok_or(Error::Truncated)?;
            next = hdr[0];
            at += (usize::from(hdr[1]) + 1) * 8;
            if at > payload.len() {
                return Err(Error::Truncated);
            }
        }
        Ok((next, at))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    /// Sets the payload length field.
    pub fn set_payload_len(&mut self, value: u16) {
        set_u16(self.buffer.as_mut(), field::PAYLOAD_LEN.start, value);
    }

    /// Mutable payload after the fixed header.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = self.payload_end();
        &mut self.buffer.as_mut()[field::HEADER_LEN..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(next: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![0x60, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        v.extend_from_slice(&[next, 255]);
        v.extend_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        v.extend_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn deconstruct() {
        let buf = packet(58, &[135, 0, 0, 0]);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.src_addr(), "fe80::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.dst_addr(), "ff02::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(p.hop_limit(), 255);
        assert_eq!(p.payload(), &[135, 0, 0, 0]);
        assert_eq!(p.upper_layer(), Ok((58, 0)));
    }

    #[test]
    fn walks_extension_headers() {
        let mut payload = vec![58, 0, 0, 0, 0, 0, 0, 0]; // hop-by-hop, 8 bytes
        payload.extend_from_slice(&[143, 0, 0, 0]);
        let buf = packet(0, &payload);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.upper_layer(), Ok((58, 8)));
        let buf = packet(0, &[58, 4, 0, 0]);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.upper_layer(), Err(Error::Truncated));
    }

    #[test]
    fn rejects() {
        let buf = packet(58, &[135, 0, 0, 0]);
        assert_eq!(
            Ipv6Packet::new_checked(&buf[..39]).unwrap_err(),
            Error::Truncated
        );
        assert_eq!(
            Ipv6Packet::new_checked(&buf[..43]).unwrap_err(),
            Error::Truncated
        );
        let mut bad = buf.clone();
        bad[0] = 0x40;
        assert_eq!(
            Ipv6Packet::new_checked(&bad[..]).unwrap_err(),
            Error::Malformed
        );
    }
}
