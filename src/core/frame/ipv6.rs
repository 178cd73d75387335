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
/// Extension headers that [`Ipv6Packet::locate_upper_layer`] also walks.
const FRAGMENT: u8 = 44;
const AUTH: u8 = 51;

/// Where an IPv6 packet's upper-layer header is, as
/// [`Ipv6Packet::locate_upper_layer`] finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpperLayer {
    /// The upper-layer protocol (next header after the extension headers).
    pub protocol: u8,
    /// Its offset within [`Ipv6Packet::payload`].
    pub offset: usize,
    /// The fragment header's fields, if the packet has one.
    pub fragment: Option<Fragment>,
}

/// The fields of a fragment header (RFC 8200 section 4.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fragment {
    /// Fragment offset in 8-byte units; not zero: there is no upper-layer
    /// header here, and [`UpperLayer::offset`] is where the data starts.
    pub offset: u16,
    /// The M flag: more fragments follow.
    pub more: bool,
}

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

    /// Like [`Ipv6Packet::upper_layer`], but also walks fragment and
    /// authentication headers (RFC 4302), which a header chain may use to
    /// hide an upper-layer header from a first-hop filter (RFC 7113). Stops
    /// after a fragment header whose offset is not zero (no upper-layer
    /// header follows). The walk ends: each header is at least 8 bytes.
    pub fn locate_upper_layer(&self) -> Result<UpperLayer> {
        let payload = self.payload();
        let (mut next, mut at, mut fragment) = (self.next_header(), 0usize, None);
        loop {
            let len = match next {
                HOP_BY_HOP | ROUTING | DEST_OPTS => {
                    let hdr = payload.get(at..at + 2).ok_or(Error::Truncated)?;
                    (usize::from(hdr[1]) + 1) * 8
                }
                AUTH => {
                    let hdr = payload.get(at..at + 2).ok_or(Error::Truncated)?;
                    (usize::from(hdr[1]) + 2) * 4
                }
                FRAGMENT => {
                    // RFC 8200 allows one fragment header; a second (an
                    // atomic fragment nested in a first fragment) would hide
                    // whether the upper layer really starts here.
                    if fragment.is_some() {
                        return Err(Error::Malformed);
                    }
                    let hdr = payload.get(at..at + 8).ok_or(Error::Truncated)?;
                    let word = u16::from_be_bytes([hdr[2], hdr[3]]);
                    let f = Fragment {
                        offset: word >> 3,
                        more: word & 1 != 0,
                    };
                    fragment = Some(f);
                    if f.offset != 0 {
                        return Ok(UpperLayer {
                            protocol: hdr[0],
                            offset: at + 8,
                            fragment,
                        });
                    }
                    8
                }
                protocol => {
                    return Ok(UpperLayer {
                        protocol,
                        offset: at,
                        fragment,
                    })
                }
            };
            next = payload[at];
            at += len;
            if at > payload.len() {
                return Err(Error::Truncated);
            }
        }
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

/// A test IPv6 packet from fe80::1 to ff02::1, hop limit 255, with
/// `payload` after the fixed header and `next` as its next header.
#[cfg(test)]
pub(crate) fn test_packet(next: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![0x60, 0, 0, 0];
    v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    v.extend_from_slice(&[next, 255]);
    v.extend_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
    v.extend_from_slice(&"ff02::1".parse::<Ipv6Addr>().unwrap().octets());
    v.extend_from_slice(payload);
    v
}

#[cfg(test)]
mod tests {
    use super::{test_packet as packet, *};

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
    fn locates_the_upper_layer_behind_fragment_and_auth_headers() {
        // Hop-by-hop, then AH (length 1: 12 bytes), then ICMPv6.
        let mut payload = vec![51, 0, 0, 0, 0, 0, 0, 0];
        payload.extend_from_slice(&[58, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        payload.extend_from_slice(&[134, 0, 0, 0]);
        let buf = packet(0, &payload);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(
            p.locate_upper_layer(),
            Ok(UpperLayer {
                protocol: 58,
                offset: 20,
                fragment: None
            })
        );
        // A first fragment (offset 0, M set), then UDP.
        let buf = packet(44, &[17, 0, 0, 1, 0, 0, 0, 7, 2, 35, 2, 34]);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        let frag = Some(Fragment {
            offset: 0,
            more: true,
        });
        assert_eq!(
            p.locate_upper_layer(),
            Ok(UpperLayer {
                protocol: 17,
                offset: 8,
                fragment: frag
            })
        );
        // A later fragment: no upper-layer header.
        let buf = packet(44, &[17, 0, 0, 0x18, 0, 0, 0, 7, 1, 2, 3, 4]);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        let upper = p.locate_upper_layer().unwrap();
        assert_eq!(upper.fragment.map(|f| f.offset), Some(3));
        // A chain cut short.
        let buf = packet(44, &[17, 0, 0, 1]);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.locate_upper_layer(), Err(Error::Truncated));
        let buf = packet(51, &[58, 4, 0, 0, 0, 0, 0, 0]);
        let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.locate_upper_layer(), Err(Error::Truncated));
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
