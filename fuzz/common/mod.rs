//! What several fuzz targets share: a reader over the fuzz input, the test
//! keys, and a builder for wire-ready TCP segments.
//!
//! Included by each target with `#[path = "../common/mod.rs"] mod common;`,
//! so not every target uses every item.

#![allow(dead_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use lanbridge::core::{
    frame::{
        checksum,
        ethernet::{self, ethertype},
        ipv4::{self, Ipv4Packet},
        ipv6::Ipv6Packet,
        tcp::{self, TcpPacket},
    },
    wire::{Cipher, NetworkKey},
};

/// The network key every target seals and opens with.
pub const KEY_A: [u8; 32] = [0x11; 32];
/// A second network: nothing sealed with it may open under [`KEY_A`].
pub const KEY_B: [u8; 32] = [0x22; 32];

/// The ciphers of [`KEY_A`] and [`KEY_B`].
pub fn ciphers() -> (Cipher, Cipher) {
    (
        Cipher::new(&NetworkKey::from_bytes(KEY_A)),
        Cipher::new(&NetworkKey::from_bytes(KEY_B)),
    )
}

/// Reads the fuzz input front to back. Every getter returns `None` once the
/// input is used up, so a target stops at the first incomplete record.
pub struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input(data)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    /// Little-endian.
    pub fn u16(&mut self) -> Option<u16> {
        let (b, rest) = self.0.split_first_chunk::<2>()?;
        self.0 = rest;
        Some(u16::from_le_bytes(*b))
    }

    /// Up to `n` bytes: fewer if the input ends first.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (b, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        b
    }

    /// A blob: a little-endian u16 length, then that many bytes (fewer if
    /// the input ends first).
    pub fn blob(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        Some(self.bytes(usize::from(n)))
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// One TCP flow's fixed fields, for [`tcp_segment`].
#[derive(Clone, Copy, Debug)]
pub struct Flow {
    pub v6: bool,
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// The last byte of both IP addresses and the source port.
    pub id: u8,
}

/// A wire-ready TCP segment of `flow`: untagged Ethernet, IPv4 (IHL 5, DF)
/// or IPv6, a 20-byte TCP header with `flags`, `payload`, every checksum
/// complete (the TCP one wrong on purpose if `bad_csum`).
pub fn tcp_segment(flow: Flow, seq: u32, flags: u8, payload: &[u8], bad_csum: bool) -> Vec<u8> {
    let l4_len = tcp::field::MIN_HEADER_LEN + payload.len();
    let mut f = vec![0u8; ethernet::field::HEADER_LEN];
    ethernet::emit(
        &mut f,
        lanbridge::core::mac::MacAddr(flow.dst),
        lanbridge::core::mac::MacAddr(flow.src),
        if flow.v6 {
            ethertype::IPV6
        } else {
            ethertype::IPV4
        },
    );
    let l3 = f.len();
    let pseudo = if flow.v6 {
        let src = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(flow.id));
        let dst = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100 + u16::from(flow.id));
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(l4_len as u16).to_be_bytes());
        f.extend_from_slice(&[ipv4::protocol::TCP, 64]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        checksum::pseudo_header_v6(&src, &dst, ipv4::protocol::TCP, l4_len as u32)
    } else {
        let src = Ipv4Addr::new(10, 0, 0, flow.id);
        let dst = Ipv4Addr::new(10, 0, 1, flow.id);
        let total = (20 + l4_len) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0x40, 0, 64, ipv4::protocol::TCP, 0, 0]);
        f.extend_from_slice(&src.octets());
        f.extend_from_slice(&dst.octets());
        Ipv4Packet::new_unchecked(&mut f[l3..]).fill_checksum();
        checksum::pseudo_header_v4(src, dst, ipv4::protocol::TCP, l4_len as u16)
    };
    let l4 = f.len();
    f.extend_from_slice(&(40000 + u16::from(flow.id)).to_be_bytes());
    f.extend_from_slice(&22u16.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    f.extend_from_slice(&7u32.to_be_bytes());
    f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.extend_from_slice(payload);
    let mut tcp = TcpPacket::new_unchecked(&mut f[l4..]);
    tcp.fill_checksum_with_pseudo(pseudo);
    if bad_csum {
        let c = tcp.checksum();
        tcp.set_checksum(c ^ 0x0101);
    }
    f
}

/// TCP payload bytes in an untagged IPv4 (not a fragment) or IPv6 (TCP
/// right after the fixed header) frame, as its IP length fields count them;
/// 0 for anything else.
pub fn tcp_payload_len(frame: &[u8]) -> usize {
    let tcp = |l4: &[u8]| TcpPacket::new_checked(l4).map_or(0, |t| t.payload().len());
    let Some(l3) = frame.get(ethernet::field::HEADER_LEN..) else {
        return 0;
    };
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ethertype::IPV4 => match Ipv4Packet::new_checked(l3) {
            Ok(ip)
                if ip.protocol() == ipv4::protocol::TCP
                    && ip.frag_offset() == 0
                    && !ip.more_frags() =>
            {
                tcp(ip.payload())
            }
            _ => 0,
        },
        ethertype::IPV6 => match Ipv6Packet::new_checked(l3) {
            Ok(ip) if ip.next_header() == ipv4::protocol::TCP => tcp(ip.payload()),
            _ => 0,
        },
        _ => 0,
    }
}
