//! Receive-side coalescing (GRO) in userspace: consecutive TCP segments of
//! one flow put back together into one super-frame with a vnet header.
//!
//! # Why this exists
//! Senders cut GSO super-frames into MSS-sized, wire-ready segments and
//! seal each one alone (issue 9). Written one by one, they would cost the
//! TAP or AF_PACKET socket one write and one trip through the stack each;
//! [`Coalescer`] rebuilds super-frames of up to 64 KiB so the kernel gets
//! one write per super-frame and segments it again only if it must (the
//! same job as Linux `tcp_gro_receive` in `net/ipv4/tcp_offload.c` and
//! wireguard-go's `tcpGRO` in `tun/offload_linux.go`).
//!
//! # What is coalesced
//! A segment is *coalescible* when it is untagged Ethernet carrying IPv4
//! (IHL 5, DF set, not a fragment, valid header checksum) or IPv6 (TCP as
//! the next header, no extension header), then TCP with flags exactly ACK
//! or ACK|PSH, at least one payload byte and a valid checksum, and no bytes
//! after the IP packet other than padding up to the 60-byte Ethernet
//! minimum. Checksums are verified because the super-frame leaves with a
//! partial checksum the kernel computes afresh: a corrupt segment merged in
//! would come out with a good checksum.
//!
//! A segment *extends* the super-frame in progress when it has the same
//! Ethernet header; the same IP addresses, TOS or traffic class and flow
//! label, TTL or hop limit (IPv4 ids may differ: the kernel makes new ones
//! when it segments again); the same TCP ports, ack number, window, urgent
//! pointer and option bytes; the next sequence number; a payload no larger
//! than the first segment's (which sets `gso_size`); and still fits 64 KiB
//! of IP length and [`MAX_GSO_SEGMENTS`] segments. A payload shorter than
//! `gso_size`, or PSH, ends a super-frame (the last segment of a send).
//!
//! # Invariants
//! * Frames leave in exactly the order they arrived; at most one
//!   super-frame is held, and only between a [`Coalescer::push`] and the
//!   [`Coalescer::flush`] that ends the receive batch.
//! * A frame that is not merged leaves byte for byte as it came, with
//!   [`VnetHdr::NONE`]; so does a super-frame that got no second segment.
//! * A super-frame made of two segments or more carries the first
//!   segment's headers with IP lengths and the IPv4 header checksum fixed,
//!   PSH if any segment had it, a partial TCP checksum (the pseudo-header
//!   sum, not complemented, as in [`crate::core::offload`]) and a vnet
//!   header (`NEEDS_CSUM`, TCPV4 or TCPV6) that [`VnetHdr::validate`]
//!   accepts: a super-frame starts only from a segment of at least
//!   [`MIN_GSO_SIZE`] payload bytes.
//! * Nothing here panics on any input, and memory stays bounded: one
//!   buffer of at most [`MAX_SUPER_FRAME`] bytes, reused.

use crate::core::{
    frame::{
        checksum,
        ethernet::{self, ethertype, EthernetFrame},
        ipv4::{self, protocol, Ipv4Packet},
        ipv6::{self, Ipv6Packet},
        tcp::{self, flags, TcpPacket},
    },
    offload::{GsoType, VnetHdr, F_NEEDS_CSUM, MAX_GSO_SEGMENTS, MIN_GSO_SIZE},
};

/// Where the IP header starts: only untagged frames are coalesced.
const L3: usize = ethernet::field::HEADER_LEN;

/// The largest IPv4 total length, and the largest IPv6 payload length.
const MAX_IP_LEN: usize = u16::MAX as usize;

/// The largest super-frame: Ethernet, the IPv6 fixed header, and 64 KiB of
/// IPv6 payload.
pub const MAX_SUPER_FRAME: usize = L3 + ipv6::field::HEADER_LEN + MAX_IP_LEN;

/// The Ethernet minimum frame length without FCS: a shorter IP packet may
/// come padded to it.
const MIN_ETHERNET_FRAME: usize = 60;

/// What a [`Coalescer`] has done so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoalesceStats {
    /// Frames offered to [`Coalescer::push`].
    pub frames_in: u64,
    /// Super-frames emitted, each built from two segments or more.
    pub superframes_out: u64,
    /// Segments that went into those super-frames.
    pub segments_coalesced: u64,
}

/// IP version of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// Where a coalescible segment's parts are.
#[derive(Clone, Copy, Debug)]
struct Segment {
    family: Family,
    /// Start of the TCP header.
    l4: usize,
    /// End of the TCP header: Ethernet, IP and TCP header length.
    hdrs: usize,
    /// End of the IP packet (Ethernet padding excluded).
    end: usize,
    seq: u32,
    flags: u8,
}

impl Segment {
    /// Parses `frame` as a coalescible TCP segment, checksums verified;
    /// `None` if it is not one.
    // HOT PATH
    fn parse(frame: &[u8]) -> Option<Segment> {
        let eth = EthernetFrame::new_checked(frame).ok()?;
        if eth.header_len() != L3 {
            return None;
        }
        let (family, l4, end, pseudo) = match eth.ethertype() {
            ethertype::IPV4 => {
                let ip = Ipv4Packet::new_checked(&frame[L3..]).ok()?;
                let coalescible = ip.header_len() == ipv4::field::MIN_HEADER_LEN
                    && ip.total_len() != 0
                    && ip.dont_frag()
                    && !ip.more_frags()
                    && ip.frag_offset() == 0
                    && ip.protocol() == protocol::TCP
                    && ip.verify_checksum();
                if !coalescible {
                    return None;
                }
                let l4 = L3 + ipv4::field::MIN_HEADER_LEN;
                let end = L3 + usize::from(ip.total_len());
                // At most 65535 - 20: fits.
                let len = (end - l4) as u16;
                let pseudo =
                    checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), protocol::TCP, len);
                (Family::V4, l4, end, pseudo)
            }
            ethertype::IPV6 => {
                let ip = Ipv6Packet::new_checked(&frame[L3..]).ok()?;
                if ip.payload_len() == 0 || ip.next_header() != protocol::TCP {
                    return None;
                }
                let l4 = L3 + ipv6::field::HEADER_LEN;
                let end = l4 + usize::from(ip.payload_len());
                let pseudo = checksum::pseudo_header_v6(
                    &ip.src_addr(),
                    &ip.dst_addr(),
                    protocol::TCP,
                    (end - l4) as u32,
                );
                (Family::V6, l4, end, pseudo)
            }
            _ => return None,
        };
        // Anything after the IP packet must be Ethernet padding.
        if frame.len() != end && frame.len() > MIN_ETHERNET_FRAME {
            return None;
        }
        let tcp = TcpPacket::new_checked(&frame[l4..end]).ok()?;
        if tcp.flags() & !flags::PSH != flags::ACK
            || tcp.payload().is_empty()
            || !tcp.verify_checksum(pseudo)
        {
            return None;
        }
        Some(Segment {
            family,
            l4,
            hdrs: l4 + tcp.header_len(),
            end,
            seq: tcp.seq_number(),
            flags: tcp.flags(),
        })
    }

    fn payload_len(&self) -> usize {
        self.end - self.hdrs
    }

    /// Bytes before the payload that count in the IP length field.
    fn counted_hdrs(&self) -> usize {
        match self.family {
            Family::V4 => self.hdrs - L3,
            Family::V6 => self.hdrs - L3 - ipv6::field::HEADER_LEN,
        }
    }
}

/// The super-frame in progress; its bytes are in [`Coalescer::buf`].
#[derive(Clone, Copy, Debug)]
struct Building {
    /// The first segment, whose headers the super-frame keeps.
    first: Segment,
    /// The sequence number a segment must have to extend it.
    next_seq: u32,
    /// Where its IP packet ends in `buf` (`buf` may hold the first
    /// segment's padding beyond it until a second segment comes).
    end: usize,
    /// How many segments it holds.
    segments: usize,
    /// True if a segment had PSH.
    psh: bool,
}

impl Building {
    /// The first segment's payload length.
    fn gso_size(&self) -> usize {
        self.first.payload_len()
    }
}

/// Puts consecutive TCP segments of one flow back together (see the module
/// documentation for the rules). Feed it a receive batch with
/// [`Coalescer::push`], then call [`Coalescer::flush`].
#[derive(Debug, Default)]
pub struct Coalescer {
    /// The super-frame in progress (or its first segment as it came).
    buf: Vec<u8>,
    building: Option<Building>,
    stats: CoalesceStats,
}

impl Coalescer {
    /// An empty coalescer; its buffer is allocated by the first segment.
    pub fn new() -> Coalescer {
        Coalescer::default()
    }

    /// What it has done so far.
    pub fn stats(&self) -> CoalesceStats {
        self.stats
    }

    /// Offers one wire-ready Ethernet frame (complete checksums). Emits, in
    /// arrival order, whatever can no longer grow: the super-frame in
    /// progress if `frame` does not extend it, a super-frame `frame` ends,
    /// and `frame` itself, unchanged with [`VnetHdr::NONE`], if it cannot
    /// be coalesced.
    // HOT PATH
    pub fn push(&mut self, frame: &[u8], emit: &mut dyn FnMut(&VnetHdr, &[u8])) {
        self.stats.frames_in += 1;
        let seg = Segment::parse(frame);
        if let (Some(seg), Some(b)) = (seg, self.building) {
            if self.extends(&b, &seg, frame) {
                self.append(b, &seg, frame, emit);
                return;
            }
        }
        self.flush(emit);
        match seg {
            Some(seg)
                if seg.flags & flags::PSH == 0
                    && seg.payload_len() >= usize::from(MIN_GSO_SIZE) =>
            {
                if self.buf.capacity() < MAX_SUPER_FRAME {
                    self.buf.reserve_exact(MAX_SUPER_FRAME);
                }
                self.buf.clear();
                // The first segment as it came, padding included, in case
                // it stays alone.
                self.buf.extend_from_slice(frame);
                self.building = Some(Building {
                    first: seg,
                    next_seq: seg.seq.wrapping_add(seg.payload_len() as u32),
                    end: seg.end,
                    segments: 1,
                    psh: false,
                });
            }
            _ => emit(&VnetHdr::NONE, frame),
        }
    }

    /// End of a receive batch: emits the super-frame being built, if any.
    pub fn flush(&mut self, emit: &mut dyn FnMut(&VnetHdr, &[u8])) {
        let Some(b) = self.building.take() else {
            return;
        };
        if b.segments == 1 {
            emit(&VnetHdr::NONE, &self.buf);
            return;
        }
        self.stats.superframes_out += 1;
        self.stats.segments_coalesced += b.segments as u64;
        let hdr = Self::finish(&b, &mut self.buf);
        emit(&hdr, &self.buf);
    }

    /// True if `seg` (parsed from `frame`) can be appended to `b`.
    // HOT PATH
    fn extends(&self, b: &Building, seg: &Segment, frame: &[u8]) -> bool {
        let (first, cur) = (&b.first, &self.buf);
        // Same family (same EtherType) and same header lengths, so the
        // ranges below are within both frames.
        if seg.hdrs != first.hdrs || frame[..L3] != cur[..L3] {
            return false;
        }
        let same = |r: std::ops::Range<usize>| frame[r.clone()] == cur[r];
        let ip_same = match first.family {
            // Version, IHL, TOS; flags and fragment offset, TTL, protocol;
            // addresses. Not the length, id or checksum.
            Family::V4 => {
                same(L3..L3 + ipv4::field::LENGTH.start)
                    && same(L3 + ipv4::field::FLG_OFF.start..L3 + ipv4::field::CHECKSUM.start)
                    && same(L3 + ipv4::field::SRC_ADDR.start..first.l4)
            }
            // Version, traffic class, flow label; next header, hop limit,
            // addresses. Not the payload length.
            Family::V6 => {
                same(L3..L3 + ipv6::field::PAYLOAD_LEN.start)
                    && same(L3 + ipv6::field::NEXT_HEADER..first.l4)
            }
        };
        let t = first.l4;
        // Ports; ack number and data offset; window; urgent pointer and
        // options. Not the sequence number, flags or checksum.
        let tcp_same = same(t..t + tcp::field::SEQ_NUM.start)
            && same(t + tcp::field::ACK_NUM.start..t + tcp::field::FLAGS)
            && same(t + tcp::field::WINDOW.start..t + tcp::field::WINDOW.end)
            && same(t + tcp::field::URGENT.start..first.hdrs);
        ip_same
            && tcp_same
            && seg.seq == b.next_seq
            && seg.payload_len() <= b.gso_size()
            && b.segments < MAX_GSO_SEGMENTS
            && b.end - first.hdrs + first.counted_hdrs() + seg.payload_len() <= MAX_IP_LEN
    }

    /// Appends `seg`'s payload to the super-frame in progress; emits it if
    /// that ends it.
    // HOT PATH
    fn append(
        &mut self,
        mut b: Building,
        seg: &Segment,
        frame: &[u8],
        emit: &mut dyn FnMut(&VnetHdr, &[u8]),
    ) {
        // Drops the first segment's padding, if any (none today: a padded
        // frame has less than MIN_GSO_SIZE bytes of payload).
        self.buf.truncate(b.end);
        self.buf.extend_from_slice(&frame[seg.hdrs..seg.end]);
        b.end = self.buf.len();
        b.next_seq = seg.seq.wrapping_add(seg.payload_len() as u32);
        b.segments += 1;
        b.psh |= seg.flags & flags::PSH != 0;
        let ends = b.psh || seg.payload_len() < b.gso_size() || b.segments == MAX_GSO_SEGMENTS;
        self.building = Some(b);
        if ends {
            self.flush(emit);
        }
    }

    /// Turns the segments in `buf` into one super-frame: IP length fields,
    /// IPv4 header checksum, PSH, partial TCP checksum. Returns its vnet
    /// header.
    fn finish(b: &Building, buf: &mut [u8]) -> VnetHdr {
        let first = &b.first;
        // Both fit 16 bits: `extends` kept the IP length within 65535.
        let tcp_len = buf.len() - first.l4;
        let (pseudo, gso_type) = match first.family {
            Family::V4 => {
                let mut ip = Ipv4Packet::new_unchecked(&mut buf[L3..]);
                ip.set_total_len((tcp_len + ipv4::field::MIN_HEADER_LEN) as u16);
                ip.fill_checksum();
                let pseudo = checksum::pseudo_header_v4(
                    ip.src_addr(),
                    ip.dst_addr(),
                    protocol::TCP,
                    tcp_len as u16,
                );
                (pseudo, GsoType::TcpV4)
            }
            Family::V6 => {
                let mut ip = Ipv6Packet::new_unchecked(&mut buf[L3..]);
                ip.set_payload_len(tcp_len as u16);
                let pseudo = checksum::pseudo_header_v6(
                    &ip.src_addr(),
                    &ip.dst_addr(),
                    protocol::TCP,
                    tcp_len as u32,
                );
                (pseudo, GsoType::TcpV6)
            }
        };
        let mut tcp = TcpPacket::new_unchecked(&mut buf[first.l4..]);
        if b.psh {
            tcp.set_flags(first.flags | flags::PSH);
        }
        // Partial: the pseudo-header sum, not complemented.
        tcp.set_checksum(checksum::fold(pseudo));
        VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: gso_type as u8,
            hdr_len: first.hdrs as u16,
            gso_size: b.gso_size() as u16,
            csum_start: first.l4 as u16,
            csum_offset: tcp::field::CHECKSUM.start as u16,
        }
    }
}

#[cfg(test)]
mod tests {
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    use super::*;
    use crate::core::offload::{self, complete_checksum};

    const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const MAC_B: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const SRC4: [u8; 4] = [10, 0, 0, 1];
    const DST4: [u8; 4] = [10, 0, 0, 2];
    const SRC6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const DST6: [u8; 16] = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    /// NOP, NOP, timestamps: a 32-byte TCP header.
    const OPTS: [u8; 12] = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    /// Near the wrap, to check that sequence numbers wrap.
    const SEQ0: u32 = 0xffff_f000;
    /// Ethernet + IPv4 + TCP with [`OPTS`]; the TCP header's offset.
    const HDRS4: usize = 14 + 20 + 32;
    const L4_V4: usize = 34;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum V {
        V4,
        V6,
    }

    /// How a test segment is built.
    #[derive(Clone, Copy, Debug)]
    struct Spec {
        v: V,
        sport: u16,
        seq: u32,
        psh: bool,
        opts: bool,
    }

    impl Spec {
        fn new(v: V) -> Spec {
            Spec {
                v,
                sport: 1234,
                seq: SEQ0,
                psh: false,
                opts: true,
            }
        }

        /// A wire-ready frame carrying `data` (complete checksums).
        fn frame(&self, data: &[u8]) -> Vec<u8> {
            let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
            let mut v = Vec::new();
            macro_rules! finish {
                ($ip:expr) => {{
                    let t = $ip.tcp(self.sport, 80, self.seq, 1000).ack(77);
                    let t = if self.psh { t.psh() } else { t };
                    let t = if self.opts {
                        t.options_raw(&OPTS).unwrap()
                    } else {
                        t
                    };
                    t.write(&mut v, data).unwrap();
                }};
            }
            match self.v {
                V::V4 => finish!(eth.ipv4(SRC4, DST4, 64)),
                V::V6 => finish!(eth.ipv6(SRC6, DST6, 64)),
            }
            v
        }

        /// Wire-ready segments of consecutive payloads of these sizes; PSH
        /// on the last one if `self.psh`. Returns them and all payloads.
        fn flow(&self, sizes: &[usize], salt: u8) -> (Vec<Vec<u8>>, Vec<u8>) {
            let data = payload(sizes.iter().sum(), salt);
            let mut at = 0;
            let mut frames = Vec::new();
            for (i, &n) in sizes.iter().enumerate() {
                let s = Spec {
                    seq: self.seq.wrapping_add(at as u32),
                    psh: self.psh && i + 1 == sizes.len(),
                    ..*self
                };
                frames.push(s.frame(&data[at..at + n]));
                at += n;
            }
            (frames, data)
        }
    }

    fn payload(n: usize, salt: u8) -> Vec<u8> {
        (0..n)
            .map(|i| (i * 7 + i / 251) as u8 ^ salt)
            .collect::<Vec<_>>()
    }

    /// Recomputes the IPv4 header checksum and the TCP checksum of a frame
    /// built by [`Spec::frame`] and edited.
    fn fix(frame: &mut [u8]) {
        let (l4, pseudo) = if u16::from_be_bytes([frame[12], frame[13]]) == ethertype::IPV4 {
            let l4 = 14 + usize::from(frame[14] & 0x0f) * 4;
            let mut ip = Ipv4Packet::new_unchecked(&mut frame[14..]);
            ip.fill_checksum();
            let len = (frame.len() - l4) as u16;
            let ip = Ipv4Packet::new_unchecked(&frame[14..]);
            let pseudo = checksum::pseudo_header_v4(ip.src_addr(), ip.dst_addr(), 6, len);
            (l4, pseudo)
        } else {
            let len = (frame.len() - 54) as u32;
            let ip = Ipv6Packet::new_unchecked(&frame[14..]);
            let pseudo = checksum::pseudo_header_v6(&ip.src_addr(), &ip.dst_addr(), 6, len);
            (54, pseudo)
        };
        TcpPacket::new_unchecked(&mut frame[l4..]).fill_checksum_with_pseudo(pseudo);
    }

    type Out = Vec<(VnetHdr, Vec<u8>)>;

    /// Pushes every frame, then flushes; checks that every header but NONE
    /// validates.
    fn run(c: &mut Coalescer, frames: &[Vec<u8>]) -> Out {
        let mut out = push_all(c, frames);
        c.flush(&mut collect_into(&mut out));
        out
    }

    /// Pushes every frame, without a flush.
    fn push_all(c: &mut Coalescer, frames: &[Vec<u8>]) -> Out {
        let mut out = Vec::new();
        {
            let mut emit = collect_into(&mut out);
            for f in frames {
                c.push(f, &mut emit);
            }
        }
        out
    }

    /// An `emit` that checks headers other than NONE and keeps a copy.
    fn collect_into(out: &mut Out) -> impl FnMut(&VnetHdr, &[u8]) + '_ {
        |h: &VnetHdr, f: &[u8]| {
            if *h != VnetHdr::NONE {
                assert_eq!(h.validate(f), Ok(()), "{h:?}");
            }
            out.push((*h, f.to_vec()));
        }
    }

    fn unchanged(frames: &[Vec<u8>]) -> Out {
        frames.iter().map(|f| (VnetHdr::NONE, f.clone())).collect()
    }

    /// Checks one emitted super-frame against the complete frame `want`
    /// (the same segments sent as one): header fields, then the bytes once
    /// the checksum is completed, then etherparse's view of them.
    fn check_super(got: &(VnetHdr, Vec<u8>), want: &[u8], v: V, gso_size: usize) {
        let (hdr, frame) = got;
        let (l4, gso_type) = match v {
            V::V4 => (34, GsoType::TcpV4),
            V::V6 => (54, GsoType::TcpV6),
        };
        let hdr_len = l4 + usize::from(frame[l4 + 12] >> 4) * 4;
        assert_eq!(
            *hdr,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: gso_type as u8,
                hdr_len: hdr_len as u16,
                gso_size: gso_size as u16,
                csum_start: l4 as u16,
                csum_offset: 16,
            }
        );
        assert_eq!(hdr.validate(frame), Ok(()));
        assert_eq!(frame.len(), want.len());
        let mut done = frame.clone();
        complete_checksum(hdr, &mut done).unwrap();
        assert_eq!(done, want);
        let p = SlicedPacket::from_ethernet(&done).unwrap();
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("not TCP")
        };
        let c = match p.net.unwrap() {
            NetSlice::Ipv4(ip) => {
                let h = ip.header();
                assert_eq!(h.to_header().calc_header_checksum(), h.header_checksum());
                assert_eq!(usize::from(h.total_len()), done.len() - 14);
                t.calc_checksum_ipv4(h.source(), h.destination())
            }
            NetSlice::Ipv6(ip) => {
                let h = ip.header();
                assert_eq!(usize::from(h.payload_length()), done.len() - 54);
                t.calc_checksum_ipv6(h.source(), h.destination())
            }
            NetSlice::Arp(_) => panic!("ARP"),
        };
        assert_eq!(c.unwrap(), t.checksum());
    }

    #[test]
    fn consecutive_segments_become_one_super_frame() {
        for v in [V::V4, V::V6] {
            let spec = Spec {
                psh: true,
                ..Spec::new(v)
            };
            let (frames, data) = spec.flow(&[1448, 1448, 1448, 700], 0);
            let mut c = Coalescer::new();
            let out = run(&mut c, &frames);
            assert_eq!(out.len(), 1, "{v:?}");
            check_super(&out[0], &spec.frame(&data), v, 1448);
            assert_eq!(
                c.stats(),
                CoalesceStats {
                    frames_in: 4,
                    superframes_out: 1,
                    segments_coalesced: 4,
                }
            );
        }
    }

    #[test]
    fn round_trip_through_segment() {
        // A kernel TSO super-frame, cut by offload::segment as a sender
        // does, comes back the same once its checksum is completed.
        for (v, len, mss) in [
            (V::V4, 20_000, 1448),
            (V::V6, 20_000, 1428),
            (V::V4, 65_535 - 52, 1448),
            (V::V6, 65_535 - 32, 1428),
            (V::V4, 64 * 1000, 1000),
        ] {
            let spec = Spec {
                psh: true,
                ..Spec::new(v)
            };
            let data = payload(len, 0x5a);
            let good = spec.frame(&data);
            let mut partial = good.clone();
            let l4 = if v == V::V4 { 34 } else { 54 };
            let tcp_len = partial.len() - l4;
            let pseudo = match v {
                V::V4 => checksum::pseudo_header_v4(SRC4.into(), DST4.into(), 6, tcp_len as u16),
                V::V6 => checksum::pseudo_header_v6(&SRC6.into(), &DST6.into(), 6, tcp_len as u32),
            };
            partial[l4 + 16..l4 + 18].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
            let hdr = VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: if v == V::V4 {
                    GsoType::TcpV4 as u8
                } else {
                    GsoType::TcpV6 as u8
                },
                hdr_len: (l4 + 32) as u16,
                gso_size: mss as u16,
                csum_start: l4 as u16,
                csum_offset: 16,
            };
            assert_eq!(hdr.validate(&partial), Ok(()));
            let mut segs = Vec::new();
            let mut scratch = Vec::new();
            offload::segment(&hdr, &partial, usize::MAX, &mut scratch, &mut |s| {
                segs.push(s.to_vec())
            })
            .unwrap();
            assert_eq!(segs.len(), len.div_ceil(mss));
            let out = run(&mut Coalescer::new(), &segs);
            assert_eq!(out.len(), 1, "{v:?} {len}");
            check_super(&out[0], &good, v, mss);
            // The coalescer gives back the very header the sender had.
            assert_eq!(out[0].0, hdr);
            assert_eq!(out[0].1, partial);
        }
    }

    #[test]
    fn a_short_segment_ends_the_super_frame_at_once() {
        let spec = Spec::new(V::V4);
        let (frames, data) = spec.flow(&[1000, 1000, 500, 1000], 1);
        let mut c = Coalescer::new();
        let mut out = push_all(&mut c, &frames[..3]);
        assert_eq!(out.len(), 1, "emitted when it could no longer grow");
        out.extend(run(&mut c, &frames[3..]));
        assert_eq!(out.len(), 2);
        check_super(&out[0], &spec.frame(&data[..2500]), V::V4, 1000);
        assert_eq!(out[1], (VnetHdr::NONE, frames[3].clone()));
    }

    #[test]
    fn a_psh_segment_ends_the_super_frame_and_psh_is_kept() {
        let spec = Spec::new(V::V6);
        let (mut frames, data) = Spec { psh: true, ..spec }.flow(&[1000, 1000], 2);
        let (more, _) = Spec {
            seq: SEQ0.wrapping_add(2000),
            ..spec
        }
        .flow(&[1000], 3);
        frames.extend(more);
        let out = run(&mut Coalescer::new(), &frames);
        assert_eq!(out.len(), 2);
        let want = Spec { psh: true, ..spec }.frame(&data);
        check_super(&out[0], &want, V::V6, 1000);
        assert_eq!(out[1], (VnetHdr::NONE, frames[2].clone()));
    }

    #[test]
    fn a_segment_with_psh_or_little_payload_is_not_held() {
        let mut c = Coalescer::new();
        let mut n = 0;
        for (spec, len) in [
            (
                Spec {
                    psh: true,
                    ..Spec::new(V::V4)
                },
                1000,
            ),
            (Spec::new(V::V6), usize::from(MIN_GSO_SIZE) - 1),
        ] {
            let f = spec.frame(&payload(len, 0));
            c.push(&f, &mut |h, g| {
                assert_eq!((*h, g), (VnetHdr::NONE, &f[..]));
                n += 1;
            });
        }
        assert_eq!(n, 2);
        // MIN_GSO_SIZE bytes start one.
        let (frames, data) = Spec::new(V::V4).flow(&[64, 64, 10], 0);
        let out = run(&mut c, &frames);
        check_super(&out[0], &Spec::new(V::V4).frame(&data), V::V4, 64);
    }

    #[test]
    fn a_single_segment_leaves_unchanged() {
        for v in [V::V4, V::V6] {
            let (frames, _) = Spec::new(v).flow(&[1448], 0);
            let mut c = Coalescer::new();
            assert_eq!(run(&mut c, &frames), unchanged(&frames));
            assert_eq!(c.stats().superframes_out, 0);
            // Flushing again emits nothing.
            c.flush(&mut |_, _| panic!("emitted twice"));
        }
    }

    #[test]
    fn a_larger_segment_starts_a_new_super_frame() {
        let spec = Spec::new(V::V4);
        let (frames, data) = spec.flow(&[1000, 1200, 1200, 100], 4);
        let out = run(&mut Coalescer::new(), &frames);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], (VnetHdr::NONE, frames[0].clone()));
        let second = Spec {
            seq: SEQ0.wrapping_add(1000),
            ..spec
        };
        check_super(&out[1], &second.frame(&data[1000..]), V::V4, 1200);
    }

    /// Edits of the middle segment of three that stop it from being merged
    /// with either neighbour: every frame must come out as it went in.
    fn assert_breaks(v: V, what: &str, edit: impl Fn(&mut Vec<u8>)) {
        let (mut frames, _) = Spec::new(v).flow(&[1000, 1000, 1000], 9);
        edit(&mut frames[1]);
        let mut c = Coalescer::new();
        assert_eq!(run(&mut c, &frames), unchanged(&frames), "{v:?}: {what}");
        assert_eq!(c.stats().superframes_out, 0);
    }

    /// Sets bits in a byte, then fixes the checksums.
    fn set(at: usize, bits: u8) -> impl Fn(&mut Vec<u8>) {
        move |f: &mut Vec<u8>| {
            f[at] |= bits;
            fix(f);
        }
    }

    /// Flips bits in a byte, then fixes the checksums.
    fn flip(at: usize, bits: u8) -> impl Fn(&mut Vec<u8>) {
        move |f: &mut Vec<u8>| {
            f[at] ^= bits;
            fix(f);
        }
    }

    #[test]
    fn segments_that_are_not_coalescible_pass_unchanged() {
        let flags_at = L4_V4 + 13;
        assert_breaks(V::V4, "802.1Q tag", |f| {
            f.splice(12..12, [0x81, 0, 0, 7]);
        });
        assert_breaks(V::V4, "IPv4 options", |f| {
            f.splice(34..34, [1, 1, 1, 1]);
            f[14] = 0x46;
            let len = u16::from_be_bytes([f[16], f[17]]) + 4;
            f[16..18].copy_from_slice(&len.to_be_bytes());
            fix(f);
        });
        assert_breaks(V::V4, "DF clear", |f| {
            f[20] &= !0x40;
            fix(f);
        });
        assert_breaks(V::V4, "more fragments", set(20, 0x20));
        assert_breaks(V::V4, "fragment offset", set(21, 1));
        assert_breaks(V::V4, "UDP", |f| {
            f[23] = 17;
            fix(f);
        });
        assert_breaks(V::V4, "bad IPv4 header checksum", |f| f[24] ^= 1);
        assert_breaks(V::V4, "bad TCP checksum", |f| {
            let n = f.len();
            f[n - 1] ^= 1;
        });
        assert_breaks(V::V4, "bad TCP checksum field", |f| f[L4_V4 + 17] ^= 1);
        assert_breaks(V::V4, "cut short", |f| {
            f.pop();
        });
        assert_breaks(V::V4, "trailing bytes", |f| f.push(0));
        assert_breaks(V::V4, "not Ethernet II IP", |f| f[12] = 0x88);
        for bit in [
            flags::SYN,
            flags::FIN,
            flags::RST,
            flags::URG,
            flags::ECE,
            flags::CWR,
        ] {
            assert_breaks(V::V4, &format!("flag {bit:#x}"), set(flags_at, bit));
            assert_breaks(V::V6, &format!("flag {bit:#x}"), set(54 + 13, bit));
        }
        assert_breaks(V::V4, "no ACK", |f| {
            f[flags_at] = 0;
            fix(f);
        });
        assert_breaks(V::V4, "no payload", |f| {
            f.truncate(HDRS4);
            f[16..18].copy_from_slice(&52u16.to_be_bytes());
            fix(f);
        });
        assert_breaks(V::V6, "IPv6 extension header", |f| {
            f.splice(54..54, [6, 0, 1, 4, 0, 0, 0, 0]);
            f[20] = 0;
            let len = u16::from_be_bytes([f[18], f[19]]) + 8;
            f[18..20].copy_from_slice(&len.to_be_bytes());
        });
        assert_breaks(V::V6, "IPv6 payload length 0", |f| {
            f[18..20].copy_from_slice(&[0, 0]);
        });
        assert_breaks(V::V6, "bad TCP checksum", |f| f[70] ^= 0x80);
    }

    #[test]
    fn segments_with_other_headers_are_not_merged() {
        for (what, at, bits) in [
            ("destination MAC", 0, 2),
            ("source MAC", 11, 1),
            ("TOS", 15, 0x10),
            ("IPv4 reserved flag", 20, 0x80),
            ("TTL", 22, 1),
            ("source address", 29, 1),
            ("destination address", 33, 1),
            ("source port", L4_V4 + 1, 1),
            ("destination port", L4_V4 + 3, 1),
            ("ack number", L4_V4 + 11, 1),
            ("window", L4_V4 + 15, 1),
            ("urgent pointer", L4_V4 + 19, 1),
            ("option bytes", L4_V4 + 27, 1),
            ("sequence number", L4_V4 + 7, 1),
        ] {
            assert_breaks(V::V4, what, flip(at, bits));
        }
        for (what, at, bits) in [
            ("traffic class", 14, 0x01),
            ("flow label", 17, 1),
            ("hop limit", 21, 1),
            ("source address", 37, 1),
            ("destination address", 53, 1),
            ("ack number", 54 + 11, 1),
            ("option bytes", 54 + 31, 1),
        ] {
            assert_breaks(V::V6, what, flip(at, bits));
        }
        assert_breaks(V::V4, "TCP header length", |f| {
            let seq = u32::from_be_bytes(f[38..42].try_into().unwrap());
            let data = f[HDRS4..].to_vec();
            *f = Spec {
                seq,
                opts: false,
                ..Spec::new(V::V4)
            }
            .frame(&data);
        });
    }

    #[test]
    fn ipv4_ids_need_not_increment() {
        let spec = Spec::new(V::V4);
        let (mut frames, data) = spec.flow(&[1000, 1000, 1000], 0);
        for (i, f) in frames.iter_mut().enumerate() {
            f[18..20].copy_from_slice(&[0x40 ^ i as u8, 7 * i as u8]);
            fix(f);
        }
        let out = run(&mut Coalescer::new(), &frames);
        assert_eq!(out.len(), 1);
        let mut want = spec.frame(&data);
        want[18..20].copy_from_slice(&frames[0][18..20]);
        fix(&mut want);
        check_super(&out[0], &want, V::V4, 1000);
    }

    #[test]
    fn interleaved_flows_keep_their_order() {
        let a = Spec::new(V::V4);
        let b = Spec {
            sport: 999,
            ..Spec::new(V::V4)
        };
        let (fa, da) = a.flow(&[1000; 5], 1);
        let (fb, db) = b.flow(&[1000; 2], 2);
        // Strictly alternating: nothing can be merged.
        let alt = vec![fa[0].clone(), fb[0].clone(), fa[1].clone(), fb[1].clone()];
        assert_eq!(run(&mut Coalescer::new(), &alt), unchanged(&alt));
        // Runs: A1-3, B1-2, A4-5.
        let runs: Vec<_> = fa[..3].iter().chain(&fb).chain(&fa[3..]).cloned().collect();
        let mut c = Coalescer::new();
        let out = run(&mut c, &runs);
        assert_eq!(out.len(), 3);
        check_super(&out[0], &a.frame(&da[..3000]), V::V4, 1000);
        check_super(&out[1], &b.frame(&db), V::V4, 1000);
        let a4 = Spec {
            seq: SEQ0.wrapping_add(3000),
            ..a
        };
        check_super(&out[2], &a4.frame(&da[3000..]), V::V4, 1000);
        assert_eq!(
            c.stats(),
            CoalesceStats {
                frames_in: 7,
                superframes_out: 3,
                segments_coalesced: 7,
            }
        );
        // IPv4 and IPv6 segments of "the same" ports never mix.
        let (f6, _) = Spec::new(V::V6).flow(&[1000], 1);
        let mixed = vec![fa[0].clone(), f6[0].clone(), fa[1].clone()];
        assert_eq!(run(&mut Coalescer::new(), &mixed), unchanged(&mixed));
    }

    #[test]
    fn a_bad_checksum_segment_passes_through_unmerged() {
        let spec = Spec::new(V::V4);
        let (mut frames, data) = spec.flow(&[1000; 5], 3);
        frames[2][HDRS4 + 10] ^= 0x40;
        let out = run(&mut Coalescer::new(), &frames);
        assert_eq!(out.len(), 3);
        check_super(&out[0], &spec.frame(&data[..2000]), V::V4, 1000);
        assert_eq!(out[1], (VnetHdr::NONE, frames[2].clone()));
        let rest = Spec {
            seq: SEQ0.wrapping_add(3000),
            ..spec
        };
        check_super(&out[2], &rest.frame(&data[3000..]), V::V4, 1000);
    }

    #[test]
    fn a_frame_of_another_kind_keeps_its_place() {
        let spec = Spec::new(V::V6);
        let (frames, data) = spec.flow(&[1000; 4], 5);
        let mut udp = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv6(SRC6, DST6, 64)
            .udp(1234, 80)
            .write(&mut udp, &[1; 1000])
            .unwrap();
        let arp = vec![0xff; 42];
        for other in [udp, arp] {
            let mut c = Coalescer::new();
            let input = [&frames[..2], std::slice::from_ref(&other), &frames[2..]].concat();
            let out = run(&mut c, &input);
            assert_eq!(out.len(), 3);
            check_super(&out[0], &spec.frame(&data[..2000]), V::V6, 1000);
            assert_eq!(out[1], (VnetHdr::NONE, other));
            let rest = Spec {
                seq: SEQ0.wrapping_add(2000),
                ..spec
            };
            check_super(&out[2], &rest.frame(&data[2000..]), V::V6, 1000);
        }
    }

    #[test]
    fn at_most_64_segments() {
        let spec = Spec::new(V::V4);
        let (frames, data) = spec.flow(&[100; 70], 6);
        let mut c = Coalescer::new();
        let mut out = push_all(&mut c, &frames[..64]);
        assert_eq!(out.len(), 1, "64 segments are emitted at once");
        out.extend(run(&mut c, &frames[64..]));
        assert_eq!(out.len(), 2);
        check_super(&out[0], &spec.frame(&data[..6400]), V::V4, 100);
        let rest = Spec {
            seq: SEQ0.wrapping_add(6400),
            ..spec
        };
        check_super(&out[1], &rest.frame(&data[6400..]), V::V4, 100);
        assert_eq!(c.stats().segments_coalesced, 70);
    }

    #[test]
    fn at_most_65535_bytes_of_ip_length() {
        // IPv4: 45 * 1448 + 20 + 32 = 65212; 323 more bytes fit exactly.
        // IPv6 does not count its 40-byte header: 343 more.
        for (v, room) in [(V::V4, 323), (V::V6, 343)] {
            let spec = Spec::new(v);
            let mut sizes = vec![1448; 45];
            sizes.push(room);
            let (frames, data) = spec.flow(&sizes, 7);
            let out = run(&mut Coalescer::new(), &frames);
            assert_eq!(out.len(), 1, "{v:?}");
            check_super(&out[0], &spec.frame(&data), v, 1448);
            // One byte more does not fit: the last segment stays alone.
            sizes[45] = room + 1;
            let (frames, data) = spec.flow(&sizes, 7);
            let out = run(&mut Coalescer::new(), &frames);
            assert_eq!(out.len(), 2, "{v:?}");
            check_super(&out[0], &spec.frame(&data[..45 * 1448]), v, 1448);
            assert_eq!(out[1], (VnetHdr::NONE, frames[45].clone()));
            // A 46th full segment starts the next super-frame.
            let (frames, _) = spec.flow(&[1448; 47], 8);
            let out = run(&mut Coalescer::new(), &frames);
            assert_eq!(out.len(), 2);
            assert_eq!(out[1].0.gso_size, 1448);
            assert_eq!(out[1].1.len(), out[1].0.hdr_len as usize + 2 * 1448);
        }
    }

    #[test]
    fn padded_short_segment_is_stripped_when_merged() {
        // Without TCP options a 3-byte segment is 57 bytes: padded to 60.
        let spec = Spec {
            opts: false,
            ..Spec::new(V::V4)
        };
        let (mut frames, data) = spec.flow(&[1000, 3], 10);
        assert_eq!(frames[1].len(), 57);
        frames[1].extend_from_slice(&[0xee; 3]);
        let out = run(&mut Coalescer::new(), &frames);
        assert_eq!(out.len(), 1);
        check_super(&out[0], &spec.frame(&data), V::V4, 1000);
        // Alone, it leaves as it came, padding included.
        assert_eq!(
            run(&mut Coalescer::new(), &frames[1..]),
            unchanged(&frames[1..])
        );
    }

    #[test]
    fn buffer_is_reused_and_bounded() {
        let (frames, _) = Spec::new(V::V6).flow(&[1448; 200], 0);
        let mut c = Coalescer::new();
        run(&mut c, &frames[..10]);
        let (ptr, cap) = (c.buf.as_ptr(), c.buf.capacity());
        assert!(cap >= MAX_SUPER_FRAME);
        let out = run(&mut c, &frames[10..]);
        assert!(out.iter().all(|(_, f)| f.len() <= MAX_SUPER_FRAME));
        assert_eq!((c.buf.as_ptr(), c.buf.capacity()), (ptr, cap));
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

    /// The TCP payload of `frame` if etherparse finds it a TCP segment
    /// with valid checksums (IPv4 header and TCP).
    fn valid_tcp_payload(frame: &[u8]) -> Option<Vec<u8>> {
        let p = SlicedPacket::from_ethernet(frame).ok()?;
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            return None;
        };
        let c = match p.net? {
            NetSlice::Ipv4(ip) => {
                let h = ip.header();
                if h.to_header().calc_header_checksum() != h.header_checksum() {
                    return None;
                }
                t.calc_checksum_ipv4(h.source(), h.destination())
            }
            NetSlice::Ipv6(ip) => {
                t.calc_checksum_ipv6(ip.header().source(), ip.header().destination())
            }
            NetSlice::Arp(_) => return None,
        };
        (c.ok()? == t.checksum()).then(|| t.payload().to_vec())
    }

    #[test]
    fn garbage_never_panics_nor_reorders_nor_launders() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut bases = Vec::new();
        for v in [V::V4, V::V6] {
            for opts in [false, true] {
                let (f, _) = Spec {
                    opts,
                    ..Spec::new(v)
                }
                .flow(&[700, 700, 700, 300], 0);
                bases.extend(f);
            }
        }
        let mut c = Coalescer::new();
        // Frames pushed and not yet seen leave, oldest first.
        let mut queue = std::collections::VecDeque::new();
        let check = |queue: &mut std::collections::VecDeque<Vec<u8>>, out: Out| {
            for (h, f) in out {
                if h == VnetHdr::NONE {
                    assert_eq!(queue.pop_front(), Some(f), "out of order or changed");
                    continue;
                }
                assert_eq!(h.validate(&f), Ok(()));
                // The super-frame's payload is that of the next frames in
                // line, each of them valid.
                let mut data = Vec::new();
                let mut n = 0;
                while data.len() < f.len() - usize::from(h.hdr_len) {
                    let seg = queue.pop_front().expect("more payload than pushed");
                    let p = valid_tcp_payload(&seg).expect("merged an invalid segment");
                    data.extend_from_slice(&p);
                    n += 1;
                }
                assert!(n >= 2);
                assert_eq!(data, f[usize::from(h.hdr_len)..]);
                let mut done = f.clone();
                complete_checksum(&h, &mut done).unwrap();
                assert_eq!(valid_tcp_payload(&done), Some(data));
            }
        };
        let mut next = 0;
        for round in 0..30_000 {
            // Mostly the flows in order, so that there is something to merge.
            next = match rng.below(10) {
                0..=5 => (next + 1) % bases.len(),
                _ => rng.below(bases.len()),
            };
            let mut frame = match rng.below(10) {
                0 => (0..rng.below(120)).map(|_| rng.next() as u8).collect(),
                _ => bases[next].clone(),
            };
            for _ in 0..rng.below(3) * rng.below(2) {
                if !frame.is_empty() {
                    let at = rng.below(frame.len().min(90));
                    frame[at] ^= 1 << rng.below(8);
                }
            }
            if rng.below(8) == 0 {
                frame.truncate(rng.below(frame.len() + 1));
            }
            queue.push_back(frame.clone());
            let out = push_all(&mut c, &[frame]);
            check(&mut queue, out);
            if round % 7 == 0 {
                let mut out = Vec::new();
                c.flush(&mut collect_into(&mut out));
                check(&mut queue, out);
            }
        }
        let mut out = Vec::new();
        c.flush(&mut collect_into(&mut out));
        check(&mut queue, out);
        assert!(queue.is_empty());
        assert!(c.stats().superframes_out > 1000, "{:?}", c.stats());
        assert_eq!(c.stats().frames_in, 30_000);
    }
}
