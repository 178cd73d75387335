//! Checksum offload and segmentation offload, undone in userspace.
//!
//! # Why this exists
//! With the default offloads, what an AF_PACKET socket captures on veth or on
//! a real NIC (after GRO, and for the host's own traffic) is not always a
//! wire-ready frame: TCP and UDP frames can be GSO/GRO *super-frames* of up
//! to about 64 KiB, and their transport checksum can be *partial*
//! (`CHECKSUM_PARTIAL`). A socket opened with `PACKET_VNET_HDR` (and a TAP
//! read with `IFF_VNET_HDR`) prefixes each frame with a
//! `struct virtio_net_hdr` ([`VnetHdr`]) that describes both.
//!
//! The far side may be a plain TAP, or an AF_PACKET socket without vnet
//! headers, which can take neither: the kernel there drops a bad checksum or
//! a frame larger than the MTU. The fast path carries super-frames whole with
//! their vnet header and lets the receiving kernel finish them; this module is
//! the slow path for a far side that can't take them: [`complete_checksum`]
//! fills in a partial checksum, [`segment`] cuts a super-frame into frames
//! that fit the MTU, each with complete checksums.
//!
//! # Conventions (kernel references)
//! * `include/uapi/linux/virtio_net.h`: the 10-byte header, its flags
//!   (`NEEDS_CSUM`, `DATA_VALID`) and GSO types. Fields are in the host's
//!   byte order, as `PACKET_VNET_HDR` and a TAP without `TUNSETVNETBE` use
//!   them (`vio_le()`, legacy virtio: native endian).
//! * A partial checksum: `csum_start` is counted from the first byte of the
//!   Ethernet header; the field at `csum_start + csum_offset` holds the
//!   one's-complement sum of the pseudo-header, *not* complemented (Linux
//!   `__tcp_v4_send_check`: `th->check = ~tcp_v4_check(len, saddr, daddr, 0)`,
//!   and `tcp_v4_check` returns the complemented sum). Completing it means
//!   summing `csum_start..` to the end of the frame, field included, and
//!   storing the complement, with 0 stored as `0xffff` (`skb_checksum_help`,
//!   `CSUM_MANGLED_0`).
//! * Segmentation follows `net/ipv4/tcp_offload.c` (`tcp_gso_segment`) and
//!   `net/ipv4/af_inet.c` (`inet_gso_segment`): every segment gets a copy of
//!   the headers; the IPv4 id increments per segment; the TCP sequence number
//!   advances by the bytes before it; FIN and PSH stay only on the last
//!   segment, CWR only on the first; every checksum is computed in full. UDP
//!   GSO (`udp_offload.c`, `__udp_gso_segment`) makes each `gso_size` chunk
//!   its own datagram with the same header.
//!
//! # Invariants
//! * Nothing here panics on any input: every offset from the vnet header or
//!   the frame is bounds-checked, and errors are [`OffloadError`]s, which the
//!   caller counts as drops ([`OffloadError::drop_reason`]).
//! * `hdr_len` and `csum_start` are hints the segmenter ignores (some drivers
//!   get `hdr_len` wrong); it finds the headers by parsing Ethernet, IPv4 or
//!   IPv6, then TCP or UDP.
//! * [`segment`] validates the whole super-frame before it emits anything, so
//!   an error never leaves half a super-frame sent.
//! * Every frame [`segment`] emits carries at most `mtu` bytes of IP packet
//!   (Ethernet header, and its 802.1Q tag if any, not counted).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::core::{
    drop::DropReason,
    frame::{
        self, checksum,
        ethernet::{ethertype, EthernetFrame},
        ipv4::{self, protocol, Ipv4Packet},
        ipv6::{self, Ipv6Packet},
        tcp::{self, flags, TcpPacket},
        udp::{self, UdpPacket},
    },
};

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the transport checksum is partial.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was already verified.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_GSO_ECN`: the TCP flow uses ECN (may be or-ed into
/// `gso_type`).
pub const GSO_ECN: u8 = 0x80;

/// The largest IPv4 total length, and the largest IPv6 payload length,
/// without jumbo options.
const MAX_IP_LEN: usize = u16::MAX as usize;

/// The most segments a super-frame handed to a device may stand for
/// ([`VnetHdr::validate`]): Linux's `UDP_MAX_SEGMENTS` (64 until 6.14), and
/// what one 64 KiB GRO super-frame of MSS-sized segments never exceeds.
pub const MAX_GSO_SEGMENTS: usize = 64;

/// The smallest `gso_size` [`VnetHdr::validate`] accepts on a GSO frame.
///
/// No sender this bridge carries produces smaller segments: Linux keeps a
/// TCP sender's MSS at 48 bytes or more before options (`tcp_min_snd_mss`,
/// the CVE-2019-11479 fix) and real links give MSS 536 and up (IPv4 hosts
/// must take 576-byte datagrams, IPv6 links 1280); UDP GSO users (QUIC)
/// send 1200 and up. A smaller `gso_size` (1, say) is nonsense or an
/// attack: it asks the kernel for many segments that are mostly headers.
/// 64 leaves room below every real value and refuses those.
pub const MIN_GSO_SIZE: u16 = 64;

/// `struct virtio_net_hdr` (without `num_buffers`): the offload metadata in
/// front of each frame read from `PACKET_VNET_HDR` or `IFF_VNET_HDR`.
///
/// Fields keep their raw values, so a header read and written back is the
/// same bytes; [`VnetHdr::gso`] interprets `gso_type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// [`F_NEEDS_CSUM`], [`F_DATA_VALID`].
    pub flags: u8,
    /// A [`GsoType`], possibly or-ed with [`GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers (a hint; some drivers set it wrong).
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS for TCP).
    pub gso_size: u16,
    /// Where the checksummed range starts, from the start of the frame.
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

/// The GSO type of a [`VnetHdr`], without the ECN bit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum GsoType {
    /// `VIRTIO_NET_HDR_GSO_NONE`: an ordinary frame.
    None = 0,
    /// `VIRTIO_NET_HDR_GSO_TCPV4`: TSO over IPv4.
    TcpV4 = 1,
    /// `VIRTIO_NET_HDR_GSO_UDP`: UFO, legacy: one UDP datagram to be IP
    /// fragmented.
    Udp = 3,
    /// `VIRTIO_NET_HDR_GSO_TCPV6`: TSO over IPv6.
    TcpV6 = 4,
    /// `VIRTIO_NET_HDR_GSO_UDP_L4`: USO, many UDP datagrams of `gso_size`.
    UdpL4 = 5,
}

impl GsoType {
    /// The type for a raw `gso_type` (ECN bit cleared first), if it is one
    /// `virtio_net.h` defines.
    pub fn from_raw(raw: u8) -> Option<Self> {
        match raw & !GSO_ECN {
            0 => Some(GsoType::None),
            1 => Some(GsoType::TcpV4),
            3 => Some(GsoType::Udp),
            4 => Some(GsoType::TcpV6),
            5 => Some(GsoType::UdpL4),
            _ => None,
        }
    }
}

impl VnetHdr {
    /// Bytes on the wire.
    pub const LEN: usize = 10;

    /// No offload: complete checksums, not a super-frame.
    pub const NONE: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: 0,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Reads the header from the first [`VnetHdr::LEN`] bytes of `buf`, in
    /// the host's byte order (as the kernel gives it).
    pub fn parse(buf: &[u8]) -> Result<Self, OffloadError> {
        let b: &[u8; Self::LEN] = buf
            .get(..Self::LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(OffloadError::Truncated)?;
        let u16_at = |at: usize| u16::from_ne_bytes([b[at], b[at + 1]]);
        Ok(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        })
    }

    /// The header as bytes in the host's byte order (as the kernel takes it).
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// Writes the header into the first [`VnetHdr::LEN`] bytes of `buf`.
    pub fn write_to(&self, buf: &mut [u8]) -> Result<(), OffloadError> {
        buf.get_mut(..Self::LEN)
            .ok_or(OffloadError::Truncated)?
            .copy_from_slice(&self.to_bytes());
        Ok(())
    }

    /// True if the transport checksum is partial ([`F_NEEDS_CSUM`]).
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// True if the ECN bit is set in `gso_type`.
    pub fn ecn(&self) -> bool {
        self.gso_type & GSO_ECN != 0
    }

    /// The GSO type, ECN bit ignored.
    pub fn gso(&self) -> Result<GsoType, OffloadError> {
        GsoType::from_raw(self.gso_type).ok_or(OffloadError::UnknownGsoType(self.gso_type))
    }

    /// Checks this header against `frame` before the pair is written to a
    /// TAP or an AF_PACKET socket, so the kernel is never handed a header
    /// that does not describe the frame ([`deliver`] calls it).
    ///
    /// * Always: an Ethernet header, `hdr_len` within the frame (Linux's
    ///   `tun_get_user` and `packet_snd_vnet_parse` refuse more), the ECN
    ///   bit only with a TCP GSO type (Linux refuses `NONE | ECN`).
    /// * No GSO type: with [`F_NEEDS_CSUM`], `csum_start` after the
    ///   Ethernet header and the 2-byte field at `csum_start + csum_offset`
    ///   inside the frame. Where the field is is not checked further: an
    ///   encapsulated frame's partial checksum may be the inner one's.
    /// * TCPV4 / TCPV6 / UDP_L4: the frame is IPv4+TCP, IPv6+TCP, or
    ///   IPv4/IPv6+UDP (802.1Q tag allowed, no IPv4 fragment, no IPv6
    ///   extension header, [`OffloadError::Unsupported`]); its IP length
    ///   fits 16 bits (no BIG TCP, [`OffloadError::TooBig`]), the field is
    ///   not 0, and nothing follows the IP packet (the kernel segments by
    ///   frame length, padding would become payload); [`F_NEEDS_CSUM`] is set and
    ///   `csum_start`/`csum_offset` point at exactly the TCP or UDP checksum
    ///   field; `gso_size` is at least [`MIN_GSO_SIZE`], small enough that a
    ///   full segment's IP length fits 16 bits, and cuts the payload into
    ///   at most [`MAX_GSO_SEGMENTS`] segments.
    /// * UDP (UFO): refused ([`OffloadError::Unsupported`]), as [`segment`]
    ///   does.
    pub fn validate(&self, frame: &[u8]) -> Result<(), OffloadError> {
        let eth = EthernetFrame::new_checked(frame).map_err(view_err("Ethernet header"))?;
        if usize::from(self.hdr_len) > frame.len() {
            return Err(OffloadError::Malformed("hdr_len beyond the frame"));
        }
        let kind = match self.gso()? {
            GsoType::TcpV4 => L4::Tcp(Family::V4),
            GsoType::TcpV6 => L4::Tcp(Family::V6),
            _ if self.ecn() => return Err(OffloadError::Malformed("ECN bit without TCP GSO")),
            GsoType::UdpL4 => L4::Udp,
            GsoType::Udp => {
                return Err(OffloadError::Unsupported("UDP fragmentation offload (UFO)"))
            }
            GsoType::None => {
                let start = usize::from(self.csum_start);
                let end = start + usize::from(self.csum_offset) + 2;
                if self.needs_csum() && (start < eth.header_len() || end > frame.len()) {
                    return Err(OffloadError::BadOffsets);
                }
                return Ok(());
            }
        };
        if !self.needs_csum() {
            return Err(OffloadError::Malformed("GSO frame without NEEDS_CSUM"));
        }
        if self.gso_size == 0 {
            return Err(OffloadError::ZeroGsoSize);
        }
        let layout = Layout::parse(frame, kind)?;
        // Bytes before the payload that count in the IP length field.
        let counted = match layout.ip {
            Ip::V4 { .. } => layout.l4 + layout.l4_hdr_len - layout.l3,
            Ip::V6 { .. } => layout.l4 + layout.l4_hdr_len - layout.l3 - ipv6::field::HEADER_LEN,
        };
        let payload_len = layout.end - layout.l4 - layout.l4_hdr_len;
        if counted + payload_len > MAX_IP_LEN {
            return Err(OffloadError::TooBig);
        }
        if ip_len_field(frame, &layout) == 0 {
            return Err(OffloadError::Malformed("IP length 0 in a GSO frame"));
        }
        if layout.end != frame.len() {
            return Err(OffloadError::Malformed(
                "bytes after the IP packet in a GSO frame",
            ));
        }
        let field = match kind {
            L4::Tcp(_) => tcp::field::CHECKSUM.start,
            L4::Udp => udp::field::CHECKSUM.start,
        };
        if usize::from(self.csum_start) != layout.l4 || usize::from(self.csum_offset) != field {
            return Err(OffloadError::BadOffsets);
        }
        let gso_size = usize::from(self.gso_size);
        if self.gso_size < MIN_GSO_SIZE
            || counted + gso_size > MAX_IP_LEN
            || payload_len.div_ceil(gso_size) > MAX_GSO_SEGMENTS
        {
            return Err(OffloadError::BadGsoSize(self.gso_size));
        }
        Ok(())
    }
}

/// The raw IPv4 total length or IPv6 payload length of a parsed frame.
fn ip_len_field(frame: &[u8], layout: &Layout) -> u16 {
    let at = layout.l3
        + match layout.ip {
            Ip::V4 { .. } => ipv4::field::LENGTH.start,
            Ip::V6 { .. } => ipv6::field::PAYLOAD_LEN.start,
        };
    frame::get_u16(frame, at)
}

/// Why a frame could not be completed or segmented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// A buffer shorter than the vnet header, or a frame shorter than its
    /// headers or than its IP length field says.
    #[error("truncated vnet header or frame")]
    Truncated,
    /// `csum_start`/`csum_offset` point outside the frame.
    #[error("checksum offsets outside the frame")]
    BadOffsets,
    /// A GSO frame with `gso_size` 0.
    #[error("GSO frame with gso_size 0")]
    ZeroGsoSize,
    /// A GSO frame whose `gso_size` is below [`MIN_GSO_SIZE`], too large for
    /// a segment's IP length, or cuts it into more than [`MAX_GSO_SEGMENTS`]
    /// segments ([`VnetHdr::validate`]).
    #[error("gso_size {0} out of bounds for this frame")]
    BadGsoSize(u16),
    /// A `gso_type` that `virtio_net.h` does not define.
    #[error("unknown gso_type {0:#04x}")]
    UnknownGsoType(u8),
    /// A header field that cannot be right, or does not match the GSO type
    /// (e.g. TCPV4 on an IPv6 packet, an IPv4 fragment).
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A well-formed super-frame this module does not segment (UFO, IPv6
    /// extension headers).
    #[error("cannot segment: {0}")]
    Unsupported(&'static str),
    /// A frame larger than the MTU that must not be cut (no GSO type, or a
    /// UDP GSO datagram), or an MTU too small for the headers.
    #[error("frame larger than the MTU")]
    TooBig,
}

impl OffloadError {
    /// The drop to count: a frame that cannot be made to fit the far side
    /// (too big, or a super-frame we don't segment) is [`DropReason::TooBig`];
    /// everything else is [`DropReason::Malformed`].
    pub fn drop_reason(&self) -> DropReason {
        match self {
            OffloadError::TooBig | OffloadError::Unsupported(_) => DropReason::TooBig,
            OffloadError::Truncated
            | OffloadError::BadOffsets
            | OffloadError::ZeroGsoSize
            | OffloadError::BadGsoSize(_)
            | OffloadError::UnknownGsoType(_)
            | OffloadError::Malformed(_) => DropReason::Malformed,
        }
    }
}

/// Maps a frame view's error, naming the header for `Malformed`.
fn view_err(what: &'static str) -> impl Fn(frame::Error) -> OffloadError {
    move |e| match e {
        frame::Error::Truncated => OffloadError::Truncated,
        frame::Error::Malformed => OffloadError::Malformed(what),
        frame::Error::Unsupported => OffloadError::Unsupported(what),
    }
}

/// Completes a partial transport checksum in place when `hdr` says
/// [`F_NEEDS_CSUM`]; otherwise does nothing.
///
/// Sums `frame[csum_start..]` (the field already holds the pseudo-header
/// sum) and stores the complement at `csum_start + csum_offset`; a computed
/// 0 is stored as `0xffff`, which UDP needs and TCP reads the same. After
/// this, send the frame with [`F_NEEDS_CSUM`] cleared.
// HOT PATH
pub fn complete_checksum(hdr: &VnetHdr, frame: &mut [u8]) -> Result<(), OffloadError> {
    if !hdr.needs_csum() {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let at = start + usize::from(hdr.csum_offset);
    if at + 2 > frame.len() {
        return Err(OffloadError::BadOffsets);
    }
    let c = checksum::internet_checksum(&frame[start..]);
    let c = if c == 0 { 0xffff } else { c };
    frame[at..at + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Turns one frame as read with its vnet header into wire-ready frames, each
/// with complete checksums and at most `mtu` bytes of IP packet, and calls
/// `emit` once per frame. Returns how many frames were emitted.
///
/// * No GSO type: the checksum is completed if partial and the frame is
///   emitted whole. A frame with more than `mtu` bytes after its Ethernet
///   header is [`OffloadError::TooBig`] (the far side could not send it
///   either; the caller counts it).
/// * TCPV4, TCPV6 (ECN bit or not): the payload is cut into chunks of
///   `min(gso_size, mtu - IP header - TCP header)` bytes.
/// * UDP_L4: the payload is cut into `gso_size` datagrams. Datagram
///   boundaries belong to the application, so a datagram that doesn't fit
///   `mtu` is [`OffloadError::TooBig`] rather than cut smaller.
/// * UDP (UFO, would need IP fragmentation): [`OffloadError::Unsupported`].
///
/// An 802.1Q-tagged super-frame is segmented like an untagged one, the tag
/// copied into every segment. `out` is scratch space, reused across calls;
/// once it has grown to one segment, no call allocates. A super-frame is
/// checked in full before the first `emit`, so an error emits nothing.
// HOT PATH
pub fn segment(
    hdr: &VnetHdr,
    frame: &[u8],
    mtu: usize,
    out: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let kind = match hdr.gso()? {
        GsoType::None => return pass_through(hdr, frame, mtu, out, emit),
        GsoType::Udp => return Err(OffloadError::Unsupported("UDP fragmentation offload (UFO)")),
        GsoType::TcpV4 => L4::Tcp(Family::V4),
        GsoType::TcpV6 => L4::Tcp(Family::V6),
        GsoType::UdpL4 => L4::Udp,
    };
    if hdr.gso_size == 0 {
        return Err(OffloadError::ZeroGsoSize);
    }
    let layout = Layout::parse(frame, kind)?;
    let ip_hdrs = layout.l4 + layout.l4_hdr_len - layout.l3;
    let ip_max = mtu.min(match layout.ip {
        Ip::V4 { .. } => MAX_IP_LEN,
        Ip::V6 { .. } => ipv6::field::HEADER_LEN + MAX_IP_LEN,
    });
    let payload_len = layout.end - layout.l4 - layout.l4_hdr_len;
    // Payload bytes a segment has room for; headers alone must fit.
    let room = ip_max.checked_sub(ip_hdrs).ok_or(OffloadError::TooBig)?;
    let gso_size = usize::from(hdr.gso_size);
    let chunk = match kind {
        L4::Tcp(_) if room == 0 && payload_len > 0 => return Err(OffloadError::TooBig),
        // At least 1 (a divisor), also when there is no payload.
        L4::Tcp(_) => gso_size.min(room.max(1)),
        L4::Udp => {
            // The largest datagram, headers included, must fit as it is.
            if ip_hdrs + gso_size.min(payload_len) > ip_max {
                return Err(OffloadError::TooBig);
            }
            gso_size
        }
    };
    Ok(layout.emit_segments(frame, kind, chunk, out, emit))
}

/// True when the kernel may be handed `frame` whole with `hdr` for a link
/// of this `mtu`: not a super-frame, or one whose segments (headers plus
/// `gso_size` bytes) fit the MTU. The kernel segments a super-frame by
/// `gso_size` without looking at the MTU, so one from a host with a larger
/// MTU must be cut by [`segment`] instead.
pub fn segments_fit(hdr: &VnetHdr, frame: &[u8], mtu: usize) -> bool {
    let kind = match hdr.gso() {
        Ok(GsoType::None) => return true,
        Ok(GsoType::TcpV4) => L4::Tcp(Family::V4),
        Ok(GsoType::TcpV6) => L4::Tcp(Family::V6),
        Ok(GsoType::UdpL4) => L4::Udp,
        Ok(GsoType::Udp) | Err(_) => return false,
    };
    Layout::parse(frame, kind)
        .is_ok_and(|l| l.l4 + l.l4_hdr_len - l.l3 + usize::from(hdr.gso_size) <= mtu)
}

/// Hands a frame with its offload metadata to a device: whole, with `hdr`,
/// when the device takes vnet headers (`whole_ok`), the segments fit its
/// `mtu` ([`segments_fit`]) and the header describes the frame
/// ([`VnetHdr::validate`]); otherwise finished here ([`segment`]) and
/// emitted piece by piece with [`VnetHdr::NONE`], or refused with
/// `segment`'s error. Returns how many frames were emitted.
// HOT PATH
pub fn deliver(
    hdr: &VnetHdr,
    frame: &[u8],
    whole_ok: bool,
    mtu: usize,
    out: &mut Vec<u8>,
    emit: &mut dyn FnMut(&VnetHdr, &[u8]),
) -> Result<usize, OffloadError> {
    if *hdr == VnetHdr::NONE
        || (whole_ok && segments_fit(hdr, frame, mtu) && hdr.validate(frame).is_ok())
    {
        emit(hdr, frame);
        return Ok(1);
    }
    segment(hdr, frame, mtu, out, &mut |seg| emit(&VnetHdr::NONE, seg))
}

/// [`segment`] for a frame without a GSO type.
fn pass_through(
    hdr: &VnetHdr,
    frame: &[u8],
    mtu: usize,
    out: &mut Vec<u8>,
    emit: &mut dyn FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let eth = EthernetFrame::new_checked(frame).map_err(view_err("Ethernet header"))?;
    if eth.payload().len() > mtu {
        return Err(OffloadError::TooBig);
    }
    if hdr.needs_csum() {
        out.clear();
        out.extend_from_slice(frame);
        complete_checksum(hdr, out)?;
        emit(out);
    } else {
        emit(frame);
    }
    Ok(1)
}

/// IP version.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// What a GSO type segments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum L4 {
    /// TSO over this IP version.
    Tcp(Family),
    /// USO over either IP version.
    Udp,
}

/// IP header fields the segments need.
#[derive(Clone, Copy, Debug)]
enum Ip {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ident: u16,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
    },
}

/// Where the headers of a checked super-frame are.
#[derive(Clone, Copy, Debug)]
struct Layout {
    /// Start of the IP header (after Ethernet and an 802.1Q tag).
    l3: usize,
    /// Start of the TCP or UDP header.
    l4: usize,
    /// TCP or UDP header length, options included.
    l4_hdr_len: usize,
    /// End of the IP packet (Ethernet padding excluded).
    end: usize,
    ip: Ip,
}

impl Layout {
    /// Parses Ethernet, IP and TCP/UDP headers and checks that they match
    /// `kind`.
    fn parse(frame: &[u8], kind: L4) -> Result<Self, OffloadError> {
        let want = match kind {
            L4::Tcp(_) => protocol::TCP,
            L4::Udp => protocol::UDP,
        };
        let eth = EthernetFrame::new_checked(frame).map_err(view_err("Ethernet header"))?;
        let l3 = eth.header_len();
        let (ip, ip_hdr_len, ip_len) = match (eth.ethertype(), kind) {
            (ethertype::IPV4, L4::Tcp(Family::V4) | L4::Udp) => {
                let p = Ipv4Packet::new_checked(&frame[l3..]).map_err(view_err("IPv4 header"))?;
                if p.frag_offset() != 0 || p.more_frags() {
                    return Err(OffloadError::Malformed("IPv4 fragment in a GSO frame"));
                }
                if p.protocol() != want {
                    return Err(OffloadError::Malformed(
                        "IP protocol does not match gso_type",
                    ));
                }
                let ip = Ip::V4 {
                    src: p.src_addr(),
                    dst: p.dst_addr(),
                    ident: p.ident(),
                };
                (ip, p.header_len(), p.header_len() + p.payload().len())
            }
            (ethertype::IPV6, L4::Tcp(Family::V6) | L4::Udp) => {
                let p = Ipv6Packet::new_checked(&frame[l3..]).map_err(view_err("IPv6 header"))?;
                match p.next_header() {
                    n if n == want => {}
                    protocol::TCP | protocol::UDP => {
                        return Err(OffloadError::Malformed(
                            "IP protocol does not match gso_type",
                        ))
                    }
                    _ => return Err(OffloadError::Unsupported("IPv6 extension header")),
                }
                let ip = Ip::V6 {
                    src: p.src_addr(),
                    dst: p.dst_addr(),
                };
                let hl = ipv6::field::HEADER_LEN;
                (ip, hl, hl + p.payload().len())
            }
            _ => return Err(OffloadError::Malformed("EtherType does not match gso_type")),
        };
        let (l4, end) = (l3 + ip_hdr_len, l3 + ip_len);
        let l4_hdr_len = match kind {
            L4::Tcp(_) => TcpPacket::new_checked(&frame[l4..end])
                .map_err(view_err("TCP header"))?
                .header_len(),
            L4::Udp => {
                if end - l4 < udp::field::HEADER_LEN {
                    return Err(OffloadError::Truncated);
                }
                udp::field::HEADER_LEN
            }
        };
        Ok(Layout {
            l3,
            l4,
            l4_hdr_len,
            end,
            ip,
        })
    }

    /// Emits the segments of a checked super-frame, `chunk` payload bytes
    /// each (the last one shorter); a super-frame without payload becomes
    /// one frame.
    // HOT PATH
    fn emit_segments(
        &self,
        frame: &[u8],
        kind: L4,
        chunk: usize,
        out: &mut Vec<u8>,
        emit: &mut dyn FnMut(&[u8]),
    ) -> usize {
        let hdrs = self.l4 + self.l4_hdr_len;
        let payload = &frame[hdrs..self.end];
        let count = payload.len().div_ceil(chunk).max(1);
        let (seq, tcp_flags) = match kind {
            L4::Tcp(_) => {
                let t = TcpPacket::new_unchecked(&frame[self.l4..hdrs]);
                (t.seq_number(), t.flags())
            }
            L4::Udp => (0, 0),
        };
        for i in 0..count {
            let from = i * chunk;
            let to = (from + chunk).min(payload.len());
            out.clear();
            out.extend_from_slice(&frame[..hdrs]);
            out.extend_from_slice(&payload[from..to]);
            // Both fit in 16 bits: `segment` capped the IP length.
            let ip_len = out.len() - self.l3;
            let l4_len = out.len() - self.l4;
            let proto = match kind {
                L4::Tcp(_) => protocol::TCP,
                L4::Udp => protocol::UDP,
            };
            let pseudo = match self.ip {
                Ip::V4 { src, dst, ident } => {
                    let mut ip = Ipv4Packet::new_unchecked(&mut out[self.l3..]);
                    ip.set_total_len(ip_len as u16);
                    ip.set_ident(ident.wrapping_add(i as u16));
                    ip.fill_checksum();
                    checksum::pseudo_header_v4(src, dst, proto, l4_len as u16)
                }
                Ip::V6 { src, dst } => {
                    let mut ip = Ipv6Packet::new_unchecked(&mut out[self.l3..]);
                    ip.set_payload_len(l4_len as u16);
                    checksum::pseudo_header_v6(&src, &dst, proto, l4_len as u32)
                }
            };
            match kind {
                L4::Tcp(_) => {
                    let mut t = TcpPacket::new_unchecked(&mut out[self.l4..]);
                    t.set_seq_number(seq.wrapping_add(from as u32));
                    let mut f = tcp_flags;
                    if i + 1 < count {
                        f &= !(flags::FIN | flags::PSH);
                    }
                    if i > 0 {
                        f &= !flags::CWR;
                    }
                    t.set_flags(f);
                    t.fill_checksum_with_pseudo(pseudo);
                }
                L4::Udp => {
                    let mut u = UdpPacket::new_unchecked(&mut out[self.l4..]);
                    u.set_len(l4_len as u16);
                    u.fill_checksum_with_pseudo(pseudo);
                }
            }
            emit(out);
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice, VlanId};

    use super::*;

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const SRC4: [u8; 4] = [10, 0, 0, 1];
    const DST4: [u8; 4] = [10, 0, 0, 2];
    const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    /// NOP, NOP, timestamps: 12 bytes, so a 32-byte TCP header.
    const TCP_OPTIONS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    /// Near the wrap, to check that sequence numbers and ids wrap.
    const SEQ0: u32 = 0xffff_f000;
    const IDENT0: u16 = 0xfffe;

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Kind {
        TcpV4,
        TcpV6,
        UdpV4,
        UdpV6,
    }

    /// A wire-ready frame with correct checksums, IPv4 id [`IDENT0`]; TCP
    /// has ACK, PSH, FIN, CWR, ECE and options.
    fn build(kind: Kind, data: &[u8], vlan: bool) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
        let mut v = Vec::new();
        macro_rules! finish {
            ($ip:expr) => {
                match kind {
                    Kind::TcpV4 | Kind::TcpV6 => $ip
                        .tcp(1234, 80, SEQ0, 65535)
                        .ack(99)
                        .psh()
                        .fin()
                        .cwr()
                        .ece()
                        .options_raw(&TCP_OPTIONS)
                        .unwrap()
                        .write(&mut v, data)
                        .unwrap(),
                    Kind::UdpV4 | Kind::UdpV6 => $ip.udp(5000, 6000).write(&mut v, data).unwrap(),
                }
            };
        }
        match (kind, vlan) {
            (Kind::TcpV4 | Kind::UdpV4, false) => finish!(eth.ipv4(SRC4, DST4, 64)),
            (Kind::TcpV6 | Kind::UdpV6, false) => finish!(eth.ipv6(SRC6, DST6, 64)),
            (Kind::TcpV4 | Kind::UdpV4, true) => {
                finish!(eth
                    .single_vlan(VlanId::try_new(7).unwrap())
                    .ipv4(SRC4, DST4, 64))
            }
            (Kind::TcpV6 | Kind::UdpV6, true) => {
                finish!(eth
                    .single_vlan(VlanId::try_new(7).unwrap())
                    .ipv6(SRC6, DST6, 64))
            }
        }
        if matches!(kind, Kind::TcpV4 | Kind::UdpV4) {
            let l3 = if vlan { 18 } else { 14 };
            v[l3 + 4..l3 + 6].copy_from_slice(&IDENT0.to_be_bytes());
            Ipv4Packet::new_unchecked(&mut v[l3..]).fill_checksum();
        }
        v
    }

    /// Offsets of a frame built by [`build`]: (l3, l4, checksum field).
    fn offsets(kind: Kind, vlan: bool) -> (usize, usize, usize) {
        let l3 = if vlan { 18 } else { 14 };
        let l4 = l3
            + if matches!(kind, Kind::TcpV4 | Kind::UdpV4) {
                20
            } else {
                40
            };
        let field = if matches!(kind, Kind::TcpV4 | Kind::TcpV6) {
            16
        } else {
            6
        };
        (l3, l4, field)
    }

    /// Turns the transport checksum into a partial one, the way the kernel
    /// leaves it for `CHECKSUM_PARTIAL` (`__tcp_v4_send_check`): the field
    /// holds the folded pseudo-header sum, not complemented. Returns the
    /// vnet header that goes with it.
    fn make_partial(kind: Kind, frame: &mut [u8], vlan: bool, gso_size: u16) -> VnetHdr {
        let (_, l4, field) = offsets(kind, vlan);
        let len = frame.len() - l4;
        let pseudo = match kind {
            Kind::TcpV4 | Kind::UdpV4 => {
                let proto = if kind == Kind::TcpV4 { 6 } else { 17 };
                checksum::pseudo_header_v4(SRC4.into(), DST4.into(), proto, len as u16)
            }
            Kind::TcpV6 | Kind::UdpV6 => {
                let proto = if kind == Kind::TcpV6 { 6 } else { 17 };
                checksum::pseudo_header_v6(&SRC6.into(), &DST6.into(), proto, len as u32)
            }
        };
        frame[l4 + field..l4 + field + 2].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        let gso_type = match kind {
            _ if gso_size == 0 => 0,
            Kind::TcpV4 => GsoType::TcpV4 as u8,
            Kind::TcpV6 => GsoType::TcpV6 as u8,
            Kind::UdpV4 | Kind::UdpV6 => GsoType::UdpL4 as u8,
        };
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            // Deliberately wrong: only a hint.
            hdr_len: 3,
            gso_size,
            csum_start: l4 as u16,
            csum_offset: field as u16,
        }
    }

    fn collect(hdr: &VnetHdr, frame: &[u8], mtu: usize) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut out = Vec::new();
        let mut segs = Vec::new();
        let n = segment(hdr, frame, mtu, &mut out, &mut |f| segs.push(f.to_vec()))?;
        assert_eq!(n, segs.len());
        Ok(segs)
    }

    /// 0 and 0xffff are the same one's-complement value.
    fn same_csum(a: u16, b: u16) -> bool {
        a == b || (a ^ b == 0xffff && (a == 0 || b == 0))
    }

    /// Checks every segment independently with etherparse and returns the
    /// concatenated payloads.
    fn verify(kind: Kind, segs: &[Vec<u8>], l3: usize, mtu: usize, chunk: usize) -> Vec<u8> {
        let mut data = Vec::new();
        let mut seq = SEQ0;
        for (i, s) in segs.iter().enumerate() {
            let (first, last) = (i == 0, i + 1 == segs.len());
            assert!(s.len() - l3 <= mtu, "segment {i}: {} > {mtu}", s.len() - l3);
            let p = SlicedPacket::from_ethernet(s).unwrap();
            let (src, dst) = match p.net.as_ref().unwrap() {
                NetSlice::Ipv4(ip) => {
                    let h = ip.header();
                    assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
                    assert_eq!(usize::from(h.total_len()), s.len() - l3);
                    assert_eq!(h.identification(), IDENT0.wrapping_add(i as u16));
                    (h.source().to_vec(), h.destination().to_vec())
                }
                NetSlice::Ipv6(ip) => {
                    let h = ip.header();
                    assert_eq!(usize::from(h.payload_length()), s.len() - l3 - 40);
                    (h.source().to_vec(), h.destination().to_vec())
                }
                NetSlice::Arp(_) => panic!("ARP"),
            };
            match p.transport.unwrap() {
                TransportSlice::Tcp(t) => {
                    let c = match kind {
                        Kind::TcpV4 => {
                            t.calc_checksum_ipv4(src.try_into().unwrap(), dst.try_into().unwrap())
                        }
                        _ => t.calc_checksum_ipv6(src.try_into().unwrap(), dst.try_into().unwrap()),
                    };
                    assert!(same_csum(c.unwrap(), t.checksum()), "segment {i}");
                    assert_eq!(t.sequence_number(), seq);
                    assert_eq!(t.options(), TCP_OPTIONS);
                    assert!(t.ack() && t.ece());
                    assert_eq!(
                        (t.fin(), t.psh(), t.cwr()),
                        (last, last, first),
                        "segment {i}"
                    );
                    assert!(last || t.payload().len() == chunk);
                    seq = seq.wrapping_add(t.payload().len() as u32);
                    data.extend_from_slice(t.payload());
                }
                TransportSlice::Udp(u) => {
                    let h = u.to_header();
                    let c = match kind {
                        Kind::UdpV4 => h.calc_checksum_ipv4_raw(
                            src.try_into().unwrap(),
                            dst.try_into().unwrap(),
                            u.payload(),
                        ),
                        _ => h.calc_checksum_ipv6_raw(
                            src.try_into().unwrap(),
                            dst.try_into().unwrap(),
                            u.payload(),
                        ),
                    };
                    assert_eq!(c.unwrap(), u.checksum(), "segment {i}");
                    assert_eq!(usize::from(u.length()), 8 + u.payload().len());
                    assert_eq!((u.source_port(), u.destination_port()), (5000, 6000));
                    assert!(last || u.payload().len() == chunk);
                    data.extend_from_slice(u.payload());
                }
                _ => panic!("transport"),
            }
        }
        data
    }

    /// Builds, makes partial, segments and verifies; returns the count.
    fn roundtrip(kind: Kind, len: usize, vlan: bool, gso: u16, mtu: usize, chunk: usize) -> usize {
        let data = payload(len);
        let mut frame = build(kind, &data, vlan);
        let hdr = make_partial(kind, &mut frame, vlan, gso);
        let segs = collect(&hdr, &frame, mtu).unwrap();
        let (l3, _, _) = offsets(kind, vlan);
        assert_eq!(verify(kind, &segs, l3, mtu, chunk), data);
        segs.len()
    }

    #[test]
    fn tcp_v4_super_frame_is_cut_into_mss_segments() {
        // 1500 - 20 - 32 = 1448 = gso_size.
        assert_eq!(roundtrip(Kind::TcpV4, 10_000, false, 1448, 1500, 1448), 7);
    }

    #[test]
    fn tcp_segments_shrink_to_fit_a_smaller_mtu() {
        assert_eq!(roundtrip(Kind::TcpV4, 10_000, false, 1448, 1000, 948), 11);
        assert_eq!(roundtrip(Kind::TcpV6, 10_000, false, 1448, 1280, 1208), 9);
    }

    #[test]
    fn tcp_v6_super_frame_is_cut_into_mss_segments() {
        assert_eq!(roundtrip(Kind::TcpV6, 10_000, false, 1428, 1500, 1428), 8);
    }

    #[test]
    fn vlan_tagged_super_frame_keeps_its_tag() {
        assert_eq!(roundtrip(Kind::TcpV4, 5000, true, 1448, 1500, 1448), 4);
        assert_eq!(roundtrip(Kind::UdpV6, 5000, true, 1000, 1500, 1000), 5);
    }

    #[test]
    fn payload_within_one_mss_is_one_segment_with_all_flags() {
        assert_eq!(roundtrip(Kind::TcpV4, 1000, false, 1448, 1500, 1000), 1);
        assert_eq!(roundtrip(Kind::TcpV6, 0, false, 1448, 1500, 0), 1);
    }

    #[test]
    fn udp_l4_super_frame_is_cut_into_datagrams() {
        assert_eq!(roundtrip(Kind::UdpV4, 5000, false, 1400, 1500, 1400), 4);
        assert_eq!(roundtrip(Kind::UdpV6, 5000, false, 1400, 1500, 1400), 4);
        // 20 + 8 + 1472 = 1500 exactly.
        assert_eq!(roundtrip(Kind::UdpV4, 2944, false, 1472, 1500, 1472), 2);
    }

    #[test]
    fn udp_datagram_larger_than_mtu_is_too_big_not_cut() {
        let mut frame = build(Kind::UdpV4, &payload(3000), false);
        let hdr = make_partial(Kind::UdpV4, &mut frame, false, 1473);
        assert_eq!(collect(&hdr, &frame, 1500), Err(OffloadError::TooBig));
        assert_eq!(OffloadError::TooBig.drop_reason(), DropReason::TooBig);
    }

    #[test]
    fn mtu_below_the_headers_is_too_big_even_without_payload() {
        for (kind, gso) in [(Kind::UdpV4, 1000), (Kind::TcpV6, 1000)] {
            let mut frame = build(kind, &[], false);
            let hdr = make_partial(kind, &mut frame, false, gso);
            let (l3, _, _) = offsets(kind, false);
            let hdrs = frame.len() - l3;
            assert_eq!(collect(&hdr, &frame, hdrs - 1), Err(OffloadError::TooBig));
            assert_eq!(collect(&hdr, &frame, hdrs).map(|s| s.len()), Ok(1));
        }
    }

    #[test]
    fn big_tcp_super_frame_over_64k() {
        let data = payload(70_000);
        let mut frame = build(Kind::TcpV4, &data[..1000], false);
        frame.extend_from_slice(&data[1000..]);
        frame[16..18].copy_from_slice(&[0, 0]); // IPv4 total length 0
        let hdr = make_partial(Kind::TcpV4, &mut frame, false, 1448);
        let segs = collect(&hdr, &frame, 1500).unwrap();
        assert_eq!(segs.len(), 70_000usize.div_ceil(1448));
        assert_eq!(verify(Kind::TcpV4, &segs, 14, 1500, 1448), data);
    }

    #[test]
    fn huge_mtu_still_yields_valid_ip_lengths() {
        // gso_size 65535 with an unbounded MTU: each segment must still fit
        // a 16-bit IPv4 total length.
        let data = payload(70_000);
        let mut frame = build(Kind::TcpV4, &data[..1000], false);
        frame.extend_from_slice(&data[1000..]);
        frame[16..18].copy_from_slice(&[0, 0]);
        let hdr = make_partial(Kind::TcpV4, &mut frame, false, u16::MAX);
        let segs = collect(&hdr, &frame, usize::MAX).unwrap();
        assert_eq!(verify(Kind::TcpV4, &segs, 14, MAX_IP_LEN, 65535 - 52), data);
    }

    #[test]
    fn scratch_buffer_is_reused() {
        let mut frame = build(Kind::TcpV4, &payload(10_000), false);
        let hdr = make_partial(Kind::TcpV4, &mut frame, false, 1448);
        let mut out = Vec::with_capacity(1514);
        let ptr = out.as_ptr();
        segment(&hdr, &frame, 1500, &mut out, &mut |_| {}).unwrap();
        assert_eq!(out.as_ptr(), ptr);
    }

    #[test]
    fn none_with_needs_csum_is_completed() {
        for kind in [Kind::TcpV4, Kind::TcpV6, Kind::UdpV4, Kind::UdpV6] {
            let good = build(kind, &payload(333), false);
            let mut frame = good.clone();
            let hdr = make_partial(kind, &mut frame, false, 0);
            assert_ne!(frame, good, "{kind:?}");
            let segs = collect(&hdr, &frame, 1500).unwrap();
            assert_eq!(segs, vec![good.clone()], "{kind:?}");
            complete_checksum(&hdr, &mut frame).unwrap();
            assert_eq!(frame, good, "{kind:?}");
        }
    }

    #[test]
    fn udp_checksum_that_computes_to_zero_is_sent_as_ffff() {
        // Choose the first payload word so that the datagram sums to 0xffff.
        let mut frame = build(Kind::UdpV4, &[0u8; 20], false);
        let (_, l4, _) = offsets(Kind::UdpV4, false);
        frame[l4 + 6..l4 + 8].copy_from_slice(&[0, 0]);
        let len = (frame.len() - l4) as u16;
        let pseudo = checksum::pseudo_header_v4(SRC4.into(), DST4.into(), 17, len);
        let s = checksum::fold(checksum::combine(&[pseudo, checksum::sum(&frame[l4..])]));
        frame[l4 + 8..l4 + 10].copy_from_slice(&(!s).to_be_bytes());
        let hdr = make_partial(Kind::UdpV4, &mut frame, false, 0);
        complete_checksum(&hdr, &mut frame).unwrap();
        assert_eq!(&frame[l4 + 6..l4 + 8], &[0xff, 0xff]);
        let u = SlicedPacket::from_ethernet(&frame).unwrap();
        let Some(TransportSlice::Udp(u)) = u.transport else {
            panic!()
        };
        let c = u
            .to_header()
            .calc_checksum_ipv4_raw(SRC4, DST4, u.payload());
        assert_eq!(c.unwrap(), 0xffff);
    }

    #[test]
    fn none_without_needs_csum_is_emitted_unchanged_and_size_checked() {
        let frame = build(Kind::UdpV4, &payload(1472), false);
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let n = segment(&VnetHdr::NONE, &frame, 1500, &mut out, &mut |f| {
            seen.push(f.to_vec())
        });
        assert_eq!(n, Ok(1));
        assert_eq!(seen, vec![frame.clone()]);
        assert_eq!(
            collect(&VnetHdr::NONE, &frame, 1499),
            Err(OffloadError::TooBig)
        );
        // Non-IP frames pass too.
        let arp = [0xffu8; 42];
        assert_eq!(
            collect(&VnetHdr::NONE, &arp, 1500).unwrap(),
            vec![arp.to_vec()]
        );
    }

    #[test]
    fn rejects_what_it_cannot_segment() {
        let mut frame = build(Kind::TcpV4, &payload(5000), false);
        let hdr = make_partial(Kind::TcpV4, &mut frame, false, 1448);
        let with = |f: fn(&mut VnetHdr)| {
            let mut h = hdr;
            f(&mut h);
            collect(&h, &frame, 1500)
        };
        assert_eq!(with(|h| h.gso_size = 0), Err(OffloadError::ZeroGsoSize));
        assert!(matches!(
            with(|h| h.gso_type = GsoType::Udp as u8),
            Err(OffloadError::Unsupported(_))
        ));
        assert_eq!(
            with(|h| h.gso_type = 2),
            Err(OffloadError::UnknownGsoType(2))
        );
        assert!(matches!(
            with(|h| h.gso_type = GsoType::TcpV6 as u8),
            Err(OffloadError::Malformed(_))
        ));
        assert!(matches!(
            with(|h| h.gso_type = GsoType::UdpL4 as u8),
            Err(OffloadError::Malformed(_))
        ));
        // The ECN bit changes nothing here.
        assert_eq!(with(|h| h.gso_type |= GSO_ECN).unwrap().len(), 4);
        // An MTU with no room for payload.
        assert_eq!(collect(&hdr, &frame, 52), Err(OffloadError::TooBig));
        assert_eq!(collect(&hdr, &frame, 53).unwrap().len(), 5000);
    }

    #[test]
    fn ipv6_extension_header_is_unsupported() {
        let mut frame = build(Kind::TcpV6, &payload(3000), false);
        let hdr = make_partial(Kind::TcpV6, &mut frame, false, 1000);
        // Insert an empty hop-by-hop header before TCP.
        let mut ext = frame[..54].to_vec();
        ext[20] = 0; // next header: hop-by-hop
        ext.extend_from_slice(&[6, 0, 1, 4, 0, 0, 0, 0]);
        ext.extend_from_slice(&frame[54..]);
        let len = u16::from_be_bytes([ext[18], ext[19]]) + 8;
        ext[18..20].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            collect(&hdr, &ext, 1500),
            Err(OffloadError::Unsupported("IPv6 extension header"))
        );
        assert_eq!(
            OffloadError::Unsupported("x").drop_reason(),
            DropReason::TooBig
        );
    }

    #[test]
    fn every_truncation_is_an_error_and_emits_nothing() {
        for kind in [Kind::TcpV4, Kind::TcpV6, Kind::UdpV4, Kind::UdpV6] {
            let mut frame = build(kind, &payload(3000), false);
            let hdr = make_partial(kind, &mut frame, false, 1000);
            for len in 0..frame.len() {
                let mut out = Vec::new();
                let mut emitted = 0;
                let r = segment(&hdr, &frame[..len], 1500, &mut out, &mut |_| emitted += 1);
                let e = r.expect_err("truncated frame segmented");
                assert_eq!(
                    e.drop_reason(),
                    DropReason::Malformed,
                    "{kind:?} {len}: {e}"
                );
                assert_eq!(emitted, 0);
                let mut cut = frame[..len].to_vec();
                let c = complete_checksum(&hdr, &mut cut);
                let (_, l4, field) = offsets(kind, false);
                assert_eq!(c.is_err(), len < l4 + field + 2, "{kind:?} {len}");
            }
        }
    }

    #[test]
    fn bad_checksum_offsets_are_errors() {
        let mut frame = vec![0u8; 100];
        for (start, offset) in [(100, 0), (99, 0), (98, 1), (0, 99), (u16::MAX, u16::MAX)] {
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                csum_start: start,
                csum_offset: offset,
                ..VnetHdr::NONE
            };
            assert_eq!(
                complete_checksum(&hdr, &mut frame),
                Err(OffloadError::BadOffsets)
            );
        }
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 98,
            ..VnetHdr::NONE
        };
        complete_checksum(&hdr, &mut frame).unwrap();
        assert_eq!(&frame[98..], &[0xff, 0xff]);
    }

    #[test]
    fn validate_accepts_what_the_kernel_builds() {
        for kind in [Kind::TcpV4, Kind::TcpV6, Kind::UdpV4, Kind::UdpV6] {
            for vlan in [false, true] {
                let mut frame = build(kind, &payload(5000), vlan);
                let hdr = make_partial(kind, &mut frame, vlan, 1400);
                assert_eq!(hdr.validate(&frame), Ok(()), "{kind:?} {vlan}");
                // Not a super-frame, checksum partial or complete.
                let mut small = build(kind, &payload(100), vlan);
                let none = make_partial(kind, &mut small, vlan, 0);
                assert_eq!(none.validate(&small), Ok(()), "{kind:?} {vlan}");
                assert_eq!(VnetHdr::NONE.validate(&small), Ok(()));
            }
        }
        let hdr = VnetHdr {
            gso_type: GsoType::TcpV4 as u8 | GSO_ECN,
            ..tcp_v4_gso(1448).0
        };
        assert_eq!(hdr.validate(&tcp_v4_gso(1448).1), Ok(()));
        // Non-IP frames pass without offload.
        assert_eq!(VnetHdr::NONE.validate(&[0xff; 42]), Ok(()));
    }

    /// A TCP/IPv4 super-frame with 5000 bytes of payload, 52 bytes of IP
    /// and TCP headers, and its header.
    fn tcp_v4_gso(gso_size: u16) -> (VnetHdr, Vec<u8>) {
        let mut frame = build(Kind::TcpV4, &payload(5000), false);
        let hdr = make_partial(Kind::TcpV4, &mut frame, false, gso_size);
        (hdr, frame)
    }

    #[test]
    fn validate_checks_the_header_itself() {
        let (hdr, frame) = tcp_v4_gso(1448);
        let with = |f: fn(&mut VnetHdr)| {
            let mut h = hdr;
            f(&mut h);
            h.validate(&frame)
        };
        assert_eq!(
            with(|h| h.gso_type = 2),
            Err(OffloadError::UnknownGsoType(2))
        );
        assert!(matches!(
            with(|h| h.gso_type = GsoType::Udp as u8),
            Err(OffloadError::Unsupported(_))
        ));
        assert!(matches!(
            with(|h| h.flags = 0),
            Err(OffloadError::Malformed("GSO frame without NEEDS_CSUM"))
        ));
        assert!(matches!(
            with(|h| h.hdr_len = 5067),
            Err(OffloadError::Malformed("hdr_len beyond the frame"))
        ));
        assert_eq!(with(|h| h.hdr_len = 5066), Ok(()));
        // ECN only with TCP GSO.
        for gso_type in [GSO_ECN, GSO_ECN | GsoType::UdpL4 as u8] {
            let h = VnetHdr { gso_type, ..hdr };
            assert!(matches!(
                h.validate(&frame),
                Err(OffloadError::Malformed("ECN bit without TCP GSO"))
            ));
        }
        assert_eq!(
            VnetHdr::NONE.validate(&frame[..13]),
            Err(OffloadError::Truncated)
        );
    }

    #[test]
    fn validate_checks_the_gso_type_against_the_headers() {
        let (hdr, frame) = tcp_v4_gso(1448);
        let mut udp = build(Kind::UdpV6, &payload(5000), false);
        let udp_hdr = make_partial(Kind::UdpV6, &mut udp, false, 1400);
        for (gso_type, frame) in [
            (GsoType::TcpV6, &frame),
            (GsoType::UdpL4, &frame),
            (GsoType::TcpV4, &udp),
            (GsoType::TcpV6, &udp),
        ] {
            let h = VnetHdr {
                gso_type: gso_type as u8,
                csum_offset: 16,
                ..udp_hdr
            };
            assert!(
                matches!(h.validate(frame), Err(OffloadError::Malformed(_))),
                "{gso_type:?}"
            );
        }
        // A truncated super-frame.
        assert_eq!(hdr.validate(&frame[..60]), Err(OffloadError::Truncated));
        assert_eq!(
            hdr.validate(&frame[..frame.len() - 1]),
            Err(OffloadError::Truncated)
        );
    }

    #[test]
    fn validate_checks_checksum_offsets() {
        let (hdr, frame) = tcp_v4_gso(1448);
        // GSO: exactly the TCP (or UDP) checksum field.
        for (start, offset) in [(34, 6), (35, 15), (14, 36), (0, 50), (54, 0)] {
            let h = VnetHdr {
                csum_start: start,
                csum_offset: offset,
                ..hdr
            };
            assert_eq!(h.validate(&frame), Err(OffloadError::BadOffsets));
        }
        let mut udp = build(Kind::UdpV4, &payload(3000), true);
        let udp_hdr = make_partial(Kind::UdpV4, &mut udp, true, 1000);
        assert_eq!(udp_hdr.validate(&udp), Ok(()));
        let h = VnetHdr {
            csum_offset: 16,
            ..udp_hdr
        };
        assert_eq!(h.validate(&udp), Err(OffloadError::BadOffsets));
        // No GSO: inside the frame, after the Ethernet header.
        let frame = &frame[..100];
        for (start, offset, ok) in [
            (34, 16, true),
            (14, 84, true),
            (98, 0, true),
            (13, 16, false),
            (14, 85, false),
            (99, 0, false),
            (u16::MAX, u16::MAX, false),
        ] {
            let h = VnetHdr {
                flags: F_NEEDS_CSUM,
                csum_start: start,
                csum_offset: offset,
                ..VnetHdr::NONE
            };
            let want = if ok {
                Ok(())
            } else {
                Err(OffloadError::BadOffsets)
            };
            assert_eq!(h.validate(frame), want, "{start} {offset}");
            // Without NEEDS_CSUM the offsets mean nothing.
            let h = VnetHdr { flags: 0, ..h };
            assert_eq!(h.validate(frame), Ok(()));
        }
        // A tagged frame's header is 18 bytes.
        let tagged = build(Kind::UdpV4, &payload(100), true);
        let h = VnetHdr {
            flags: F_NEEDS_CSUM,
            csum_start: 14,
            csum_offset: 26,
            ..VnetHdr::NONE
        };
        assert_eq!(h.validate(&tagged), Err(OffloadError::BadOffsets));
    }

    #[test]
    fn validate_bounds_gso_size() {
        // 5000 bytes of payload: 64 segments need gso_size 79 or more.
        let bad = |g: u16| Err(OffloadError::BadGsoSize(g));
        for (gso, want) in [
            (0, Err(OffloadError::ZeroGsoSize)),
            (1, bad(1)),
            (63, bad(63)),
            (78, bad(78)),
            (79, Ok(())),
            (5000, Ok(())),
            (u16::MAX - 52, Ok(())),
            (u16::MAX - 51, bad(u16::MAX - 51)),
            (u16::MAX, bad(u16::MAX)),
        ] {
            let (hdr, frame) = tcp_v4_gso(1448);
            let hdr = VnetHdr {
                gso_size: gso,
                ..hdr
            };
            assert_eq!(hdr.validate(&frame), want, "{gso}");
        }
        // MIN_GSO_SIZE itself, with a payload it cuts into 64 segments.
        let mut frame = build(Kind::TcpV4, &payload(64 * 64), false);
        let hdr = make_partial(Kind::TcpV4, &mut frame, false, MIN_GSO_SIZE);
        assert_eq!(hdr.validate(&frame), Ok(()));
        // IPv6 does not count its fixed header: 65535 - 32 bytes of TCP
        // header; UDP: 65535 - 8 (20 more on IPv4).
        for (kind, max) in [
            (Kind::TcpV6, u16::MAX - 32),
            (Kind::UdpV6, u16::MAX - 8),
            (Kind::UdpV4, u16::MAX - 28),
        ] {
            let mut frame = build(kind, &payload(5000), false);
            let hdr = make_partial(kind, &mut frame, false, max);
            assert_eq!(hdr.validate(&frame), Ok(()), "{kind:?}");
            let hdr = VnetHdr {
                gso_size: max + 1,
                ..hdr
            };
            assert_eq!(hdr.validate(&frame), bad(max + 1), "{kind:?}");
        }
        assert_eq!(
            OffloadError::BadGsoSize(1).drop_reason(),
            DropReason::Malformed
        );
    }

    #[test]
    fn validate_refuses_odd_ip_lengths_in_gso_frames() {
        // Ethernet padding would become payload when the kernel segments.
        let (hdr, mut frame) = tcp_v4_gso(1448);
        frame.push(0);
        assert!(matches!(
            hdr.validate(&frame),
            Err(OffloadError::Malformed(_))
        ));
        // IPv6 payload length 0 on a frame under 64 KiB.
        let mut frame = build(Kind::TcpV6, &payload(5000), false);
        let hdr = make_partial(Kind::TcpV6, &mut frame, false, 1400);
        frame[18..20].copy_from_slice(&[0, 0]);
        assert!(matches!(
            hdr.validate(&frame),
            Err(OffloadError::Malformed(_))
        ));
        // BIG TCP: over 64 KiB, IPv4 total length 0. segment() cuts it.
        let data = payload(70_000);
        let mut frame = build(Kind::TcpV4, &data[..1000], false);
        frame.extend_from_slice(&data[1000..]);
        frame[16..18].copy_from_slice(&[0, 0]);
        let hdr = make_partial(Kind::TcpV4, &mut frame, false, 1448);
        assert_eq!(hdr.validate(&frame), Err(OffloadError::TooBig));
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let n = deliver(&hdr, &frame, true, 1500, &mut out, &mut |h, f| {
            seen.push((*h, f.len()))
        });
        assert_eq!(n, Ok(70_000usize.div_ceil(1448)));
        assert!(seen
            .iter()
            .all(|&(h, len)| h == VnetHdr::NONE && len <= 1514));
    }

    #[test]
    fn deliver_passes_whole_only_a_header_that_validates() {
        let (hdr, frame) = tcp_v4_gso(1448);
        let run = |hdr: &VnetHdr| {
            let mut out = Vec::new();
            let mut seen = Vec::new();
            let n = deliver(hdr, &frame, true, 1500, &mut out, &mut |h, f| {
                seen.push((*h, f.to_vec()))
            });
            (n, seen)
        };
        let (n, seen) = run(&hdr);
        assert_eq!(n, Ok(1));
        assert_eq!(seen, vec![(hdr, frame.clone())]);
        // gso_size 1 would fit any MTU, but the kernel must not see it.
        let tiny = VnetHdr { gso_size: 1, ..hdr };
        assert!(segments_fit(&tiny, &frame, 1500));
        let (n, seen) = run(&tiny);
        assert_eq!(n, Ok(5000));
        assert!(seen.iter().all(|(h, _)| *h == VnetHdr::NONE));
        // A header pointing the checksum elsewhere is not trusted either.
        let skewed = VnetHdr {
            csum_offset: 6,
            ..hdr
        };
        let (n, seen) = run(&skewed);
        assert_eq!(n, Ok(4));
        let good = build(Kind::TcpV4, &payload(5000), false);
        let segs = collect(&hdr, &frame, 1500).unwrap();
        assert_eq!(seen.len(), segs.len());
        assert!(seen
            .iter()
            .zip(&segs)
            .all(|((h, f), s)| *h == VnetHdr::NONE && f == s));
        assert_eq!(verify(Kind::TcpV4, &segs, 14, 1500, 1448), payload(5000));
        assert_ne!(good, frame);
    }

    /// xorshift64*, so the garbage test needs no dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let kinds = [Kind::TcpV4, Kind::TcpV6, Kind::UdpV4, Kind::UdpV6];
        let bases: Vec<Vec<u8>> = kinds
            .iter()
            .flat_map(|&k| [false, true].map(|vlan| build(k, &payload(2000), vlan)))
            .collect();
        let mut out = Vec::new();
        for _ in 0..20_000 {
            let mut frame = if rng.below(8) == 0 {
                (0..rng.below(200)).map(|_| rng.next() as u8).collect()
            } else {
                bases[rng.below(bases.len())].clone()
            };
            for _ in 0..rng.below(4) {
                if !frame.is_empty() {
                    let at = rng.below(frame.len().min(80));
                    frame[at] = rng.next() as u8;
                }
            }
            frame.truncate(rng.below(frame.len() + 1));
            let r = rng.next();
            let hdr = VnetHdr {
                flags: r as u8 & 3,
                gso_type: [0, 1, 3, 4, 5, 0x81, 0x84, (r >> 8) as u8][rng.below(8)],
                hdr_len: (r >> 16) as u16,
                gso_size: [0, 1, 7, 536, 1448, u16::MAX][rng.below(6)],
                csum_start: (rng.next() % 120) as u16,
                csum_offset: [6, 16, (r >> 32) as u16][rng.below(3)],
            };
            let mtu = [0, 1, 60, 576, 1500, 9000, usize::MAX][rng.below(7)];
            let mut emitted = 0;
            let res = segment(&hdr, &frame, mtu, &mut out, &mut |f| {
                assert!(f.len() <= mtu.saturating_add(18));
                emitted += 1;
            });
            match res {
                Ok(n) => assert_eq!(n, emitted),
                Err(_) => assert_eq!(emitted, 0),
            }
            let _ = complete_checksum(&hdr, &mut frame);
        }
    }

    #[test]
    fn vnet_header_roundtrip() {
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM | F_DATA_VALID,
            gso_type: GsoType::TcpV6 as u8 | GSO_ECN,
            hdr_len: 86,
            gso_size: 1428,
            csum_start: 54,
            csum_offset: 16,
        };
        let mut buf = [0u8; 12];
        hdr.write_to(&mut buf).unwrap();
        assert_eq!(VnetHdr::parse(&buf), Ok(hdr));
        assert_eq!(hdr.gso(), Ok(GsoType::TcpV6));
        assert!(hdr.ecn() && hdr.needs_csum());
        #[cfg(target_endian = "little")]
        assert_eq!(buf[..10], [3, 0x84, 86, 0, 0x94, 0x05, 54, 0, 16, 0]);
        assert_eq!(VnetHdr::parse(&buf[..9]), Err(OffloadError::Truncated));
        assert_eq!(hdr.write_to(&mut buf[..9]), Err(OffloadError::Truncated));
        assert_eq!(VnetHdr::parse(&[0; 10]), Ok(VnetHdr::NONE));
        assert_eq!(VnetHdr::NONE.gso(), Ok(GsoType::None));
    }
}
