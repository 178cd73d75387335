//! A tiny reader for classic pcap files (as `tcpdump -w` writes them) and a
//! view over the captured Ethernet frames.
//!
//! Format: a 24-byte global header (magic, version, zone, sigfigs, snaplen,
//! link type), then per packet a 16-byte record header (seconds, micro- or
//! nanoseconds, captured length, original length) and the bytes. The magic
//! tells the byte order and the timestamp unit. A truncated last record (the
//! writer is still running) is ignored.

use std::{net::Ipv4Addr, path::Path, time::Duration};

use anyhow::{bail, Context, Result};
use lanbridge::core::mac::MacAddr;

/// pcap link type for Ethernet.
pub const LINKTYPE_ETHERNET: u32 = 1;
/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;

/// One captured Ethernet frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Capture time since the epoch.
    pub ts: Duration,
    /// Length of the frame on the wire (may exceed `data.len()` with a snaplen).
    pub orig_len: u32,
    /// The captured bytes, starting with the destination MAC.
    pub data: Vec<u8>,
}

/// An IPv4 UDP datagram in a captured frame (see [`Frame::udp4`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Udp4<'a> {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// The UDP payload as far as it was captured.
    pub payload: &'a [u8],
    /// True if the capture's snap length cut the payload short.
    pub truncated: bool,
}

/// The fields of an Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender hardware address.
    pub sha: MacAddr,
    /// Sender protocol address.
    pub spa: [u8; 4],
    /// Target hardware address.
    pub tha: MacAddr,
    /// Target protocol address.
    pub tpa: [u8; 4],
}

impl Frame {
    /// Destination MAC.
    pub fn dst(&self) -> Option<MacAddr> {
        MacAddr::from_slice(self.data.get(0..6)?)
    }

    /// Source MAC.
    pub fn src(&self) -> Option<MacAddr> {
        MacAddr::from_slice(self.data.get(6..12)?)
    }

    /// The EtherType after any 802.1Q/802.1ad tags.
    pub fn ethertype(&self) -> Option<u16> {
        self.payload_offset()
            .map(|o| u16::from_be_bytes([self.data[o - 2], self.data[o - 1]]))
    }

    /// The bytes after the Ethernet header (and VLAN tags).
    pub fn payload(&self) -> &[u8] {
        self.payload_offset().map_or(&[][..], |o| &self.data[o..])
    }

    fn payload_offset(&self) -> Option<usize> {
        let mut off = 12;
        loop {
            let t = u16::from_be_bytes([*self.data.get(off)?, *self.data.get(off + 1)?]);
            if t == 0x8100 || t == 0x88a8 {
                off += 4;
            } else {
                return Some(off + 2);
            }
        }
    }

    /// The ARP packet, if this is Ethernet/IPv4 ARP.
    pub fn arp(&self) -> Option<Arp> {
        if self.ethertype()? != ETHERTYPE_ARP {
            return None;
        }
        let p = self.payload();
        if p.len() < 28 || p[0..2] != [0, 1] || p[2..4] != [8, 0] || p[4] != 6 || p[5] != 4 {
            return None;
        }
        Some(Arp {
            op: u16::from_be_bytes([p[6], p[7]]),
            sha: MacAddr::from_slice(&p[8..14])?,
            spa: p[14..18].try_into().ok()?,
            tha: MacAddr::from_slice(&p[18..24])?,
            tpa: p[24..28].try_into().ok()?,
        })
    }

    /// True if `mac` is the source or destination, or the sender or target
    /// hardware address of an ARP payload.
    pub fn mentions_mac(&self, mac: MacAddr) -> bool {
        self.src() == Some(mac)
            || self.dst() == Some(mac)
            || self.arp().is_some_and(|a| a.sha == mac || a.tha == mac)
    }

    /// True if the six bytes of `mac` appear anywhere in the frame (also
    /// catches NDP options, DHCP `chaddr`, ...).
    pub fn contains_mac_bytes(&self, mac: MacAddr) -> bool {
        self.data.windows(6).any(|w| w == mac.0)
    }

    /// True if `needle` (not empty) appears anywhere in the captured bytes,
    /// e.g. the pattern of `ping -p`.
    pub fn contains(&self, needle: &[u8]) -> bool {
        !needle.is_empty() && self.data.windows(needle.len()).any(|w| w == needle)
    }

    /// The source address of an IPv4 packet.
    pub fn ipv4_src(&self) -> Option<Ipv4Addr> {
        let p = self.payload();
        if self.ethertype()? != ETHERTYPE_IPV4 || p.len() < 20 {
            return None;
        }
        Some(Ipv4Addr::new(p[12], p[13], p[14], p[15]))
    }

    /// The UDP datagram, if this is the first (or only) fragment of an IPv4
    /// UDP packet. The payload ends where the UDP length says or where the
    /// capture ends, whichever comes first.
    pub fn udp4(&self) -> Option<Udp4<'_>> {
        let p = self.payload();
        if self.ethertype()? != ETHERTYPE_IPV4 || p.len() < 20 || p[0] >> 4 != 4 || p[9] != 17 {
            return None;
        }
        let frag_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
        let ihl = usize::from(p[0] & 0x0f) * 4;
        if frag_offset != 0 || ihl < 20 || p.len() < ihl + 8 {
            return None;
        }
        let u = &p[ihl..];
        let udp_len = usize::from(u16::from_be_bytes([u[4], u[5]]));
        let want = udp_len.saturating_sub(8);
        let payload = &u[8..u.len().min(8 + want)];
        Some(Udp4 {
            src: Ipv4Addr::new(p[12], p[13], p[14], p[15]),
            dst: Ipv4Addr::new(p[16], p[17], p[18], p[19]),
            sport: u16::from_be_bytes([u[0], u[1]]),
            dport: u16::from_be_bytes([u[2], u[3]]),
            payload,
            truncated: payload.len() < want,
        })
    }

    /// True for an IPv4 ICMP packet.
    pub fn is_icmp4(&self) -> bool {
        let p = self.payload();
        self.ethertype() == Some(ETHERTYPE_IPV4) && p.len() >= 20 && p[9] == 1
    }
}

/// Reads a pcap file; see [`parse`].
pub fn read(path: &Path) -> Result<Vec<Frame>> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    parse(&bytes).with_context(|| format!("parse {}", path.display()))
}

/// Parses a classic pcap file with Ethernet link type, in either byte order
/// and with micro- or nanosecond timestamps. An empty input (the writer has
/// not written its header yet) gives no frames.
pub fn parse(bytes: &[u8]) -> Result<Vec<Frame>> {
    if bytes.len() < 24 {
        return Ok(Vec::new());
    }
    let magic: [u8; 4] = bytes[0..4].try_into().unwrap();
    let (big_endian, nanos) = match u32::from_le_bytes(magic) {
        0xa1b2_c3d4 => (false, false),
        0xa1b2_3c4d => (false, true),
        0xd4c3_b2a1 => (true, false),
        0x4d3c_b2a1 => (true, true),
        m => bail!("not a pcap file (magic {m:#010x})"),
    };
    let u32_at = |off: usize| -> u32 {
        let b: [u8; 4] = bytes[off..off + 4].try_into().unwrap();
        if big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    };
    let linktype = u32_at(20);
    if linktype != LINKTYPE_ETHERNET {
        bail!("pcap link type {linktype}, expected Ethernet ({LINKTYPE_ETHERNET})");
    }
    let mut frames = Vec::new();
    let mut off = 24;
    while off + 16 <= bytes.len() {
        let (sec, frac, incl, orig) = (
            u32_at(off),
            u32_at(off + 4),
            u32_at(off + 8),
            u32_at(off + 12),
        );
        let start = off + 16;
        let Some(end) = start
            .checked_add(incl as usize)
            .filter(|e| *e <= bytes.len())
        else {
            break; // truncated last record
        };
        let sub = if nanos {
            Duration::from_nanos(frac.into())
        } else {
            Duration::from_micros(frac.into())
        };
        frames.push(Frame {
            ts: Duration::from_secs(sec.into()) + sub,
            orig_len: orig,
            data: bytes[start..end].to_vec(),
        });
        off = end;
    }
    Ok(frames)
}
