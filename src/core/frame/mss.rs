//! TCP MSS clamping (RFC 9293 section 3.7.1, RFC 6691, RFC 1624).
//!
//! An L2 overlay has no router on the path to send "packet too big", so
//! path-MTU discovery cannot tell two hosts that the overlay carries smaller
//! frames than their links. Lowering the maximum segment size (MSS) option
//! of the SYN and SYN-ACK that open a TCP connection makes both ends send
//! segments that fit from the first byte.
//!
//! Invariants: [`clamp_mss`] never panics and never fails; it writes only the
//! value of MSS options and the TCP checksum, and leaves any frame it does not
//! fully understand (not TCP, a later IPv4 fragment, IPv6 extension headers,
//! a malformed option list) exactly as it was.

use super::{
    checksum,
    ethernet::{ethertype, EthernetFrame},
    get_u16,
    ipv4::{protocol, Ipv4Packet},
    ipv6::{self, Ipv6Packet},
    set_u16,
    tcp::{self, flags, option, TcpPacket},
};

/// The lowest MSS [`clamp_mss`] writes: Linux's `TCP_MIN_MSS`, "(60+60+8) -
/// (20+20)", i.e. room for an IPv4 and a TCP header that both carry the most
/// options they can (60 bytes each) plus 8 bytes of data, less the 40 bytes
/// of bare headers that an MSS does not count. Stacks refuse to go much
/// lower anyway (Linux raises a peer's MSS to `tcp_min_snd_mss`, 48 by
/// default, since CVE-2019-11479), a tiny MSS would make an endpoint cut its
/// stream into segments that are nearly all header, and a `max_frame` smaller
/// than the headers (a misconfiguration) must not produce an MSS of 0.
pub const MIN_MSS: u16 = 88;

/// Lowers the MSS option of a TCP SYN or SYN-ACK in `frame` (an Ethernet
/// frame, possibly with one 802.1Q tag) so that a full segment of the
/// connection, with its Ethernet (and tag), IP and 20-byte TCP headers, is at
/// most `max_frame` bytes: mss = max_frame - (offset of the TCP header) - 20.
///
/// Handles IPv4 (unfragmented or first fragment; IP options are fine) and
/// IPv6 whose next header is TCP directly (a frame with extension headers
/// is left alone). The SYN flag must be set, with or without ACK.
///
/// The computed MSS may fall below the sizes every host accepts (536 for
/// IPv4, RFC 9293 section 3.7.1; 1220 for IPv6, the 1280-byte minimum MTU of
/// RFC 8200 less 60): then the overlay is narrower than IP's minimum MTU, and
/// a segment that fits is still better than one that is sure to be dropped,
/// so it is written as computed, but never below [`MIN_MSS`].
///
/// Returns `Some((old, new))` when it changed the option, `None` otherwise
/// (not TCP, not SYN, no MSS option, already small enough, malformed: never
/// an error, never a panic). Should a segment carry several MSS options, each
/// one is clamped and the first change is returned.
///
/// `csum_partial`: the frame's TCP checksum is still partial (vnet
/// `NEEDS_CSUM`: the field holds only the pseudo-header sum), so it is left
/// alone; otherwise it is fixed incrementally (RFC 1624).
pub fn clamp_mss(frame: &mut [u8], max_frame: usize, csum_partial: bool) -> Option<(u16, u16)> {
    let (start, end) = locate_tcp(frame)?;
    let mss = max_frame.saturating_sub(start + tcp::field::MIN_HEADER_LEN);
    let mss = u16::try_from(mss).unwrap_or(u16::MAX).max(MIN_MSS);
    let mut segment = TcpPacket::new_checked(frame.get_mut(start..end)?).ok()?;
    if segment.flags() & flags::SYN == 0 {
        return None;
    }
    let mut found = mss_options(segment.options())?;
    let mut changed = None;
    while found != 0 {
        let at = found.trailing_zeros() as usize;
        found &= found - 1;
        let old = get_u16(segment.options(), at + 2);
        if old <= mss {
            continue;
        }
        if !csum_partial {
            let fixed = fix_checksum(&segment, at, old, mss);
            segment.set_checksum(fixed);
        }
        set_u16(segment.options_mut(), at + 2, mss);
        changed = changed.or(Some((old, mss)));
    }
    changed
}

/// True if `frame` is a TCP SYN or SYN-ACK that [`clamp_mss`] would look at
/// (the same parsing, nothing written): a receiver copies only those to
/// clamp them.
// HOT PATH: one look per received frame.
pub fn is_syn(frame: &[u8]) -> bool {
    locate_tcp(frame)
        .and_then(|(start, end)| TcpPacket::new_checked(frame.get(start..end)?).ok())
        .is_some_and(|t| t.flags() & flags::SYN != 0)
}

/// Where the TCP segment lies in `frame`: (offset of its header, end of the
/// IP payload), or `None` if the frame is not an IPv4 packet (first fragment
/// or unfragmented) or an IPv6 packet whose next header is TCP.
// HOT PATH: a driver may clamp every frame; non-TCP frames leave after a
// few reads.
fn locate_tcp(frame: &[u8]) -> Option<(usize, usize)> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    let l3 = eth.header_len();
    match eth.ethertype() {
        ethertype::IPV4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if ip.protocol() != protocol::TCP || ip.frag_offset() != 0 {
                return None;
            }
            let start = l3 + ip.header_len();
            Some((start, start + ip.payload().len()))
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            if ip.next_header() != protocol::TCP {
                return None;
            }
            let start = l3 + ipv6::field::HEADER_LEN;
            Some((start, start + ip.payload().len()))
        }
        _ => None,
    }
}

/// Walks a TCP option list (RFC 9293 section 3.1): EOL ends it, NOP is one
/// byte, every other option is kind, length (at least 2, within the list),
/// data. Returns a bit mask with bit `i` set for an MSS option starting at
/// byte `i` (the list holds at most 40 bytes), or `None` if the list is
/// malformed, an MSS option of a length other than 4 included.
fn mss_options(opts: &[u8]) -> Option<u64> {
    if opts.len() > u64::BITS as usize {
        return None;
    }
    let mut found = 0u64;
    let mut at = 0;
    while let Some(&kind) = opts.get(at) {
        match kind {
            option::EOL => break,
            option::NOP => at += 1,
            _ => {
                let len = usize::from(*opts.get(at + 1)?);
                if len < 2 || at + len > opts.len() {
                    return None;
                }
                if kind == option::MSS {
                    if len != option::MSS_LEN {
                        return None;
                    }
                    found |= 1 << at;
                }
                at += len;
            }
        }
    }
    Some(found)
}

/// The checksum of `segment` once the MSS value of the option at `at` (in
/// the option list) goes from `old` to `new`, by RFC 1624 over the 16-bit
/// words, aligned to the start of the TCP header, that hold the value.
fn fix_checksum(segment: &TcpPacket<&mut [u8]>, at: usize, old: u16, new: u16) -> u16 {
    let value_at = tcp::field::MIN_HEADER_LEN + at + 2;
    if value_at % 2 == 0 {
        return checksum::update_word(segment.checksum(), old, new);
    }
    // The value straddles two words: [length byte, high byte] and [low
    // byte, next byte]. An odd value offset means an odd option offset, and
    // the option list is a multiple of 4 bytes long, so the next byte is
    // still in the list; the fallback only keeps this free of panics.
    let opts = segment.options();
    let before = opts[at + 1];
    let after = opts.get(at + option::MSS_LEN).copied().unwrap_or(0);
    let ([oh, ol], [nh, nl]) = (old.to_be_bytes(), new.to_be_bytes());
    checksum::update(
        segment.checksum(),
        &[before, oh, ol, after],
        &[before, nh, nl, after],
    )
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

    /// MSS 1460 (0x05b4).
    const MSS: [u8; 4] = [2, 4, 0x05, 0xb4];
    const SACK_OK: [u8; 2] = [4, 2];
    const TIMESTAMPS: [u8; 10] = [8, 10, 0xde, 0xad, 0xbe, 0xef, 0, 0, 0, 0];
    const WSCALE: [u8; 3] = [3, 3, 7];
    const NOP: [u8; 1] = [1];

    /// Option lists in the orders stacks send them, with where the MSS
    /// value lands (offset from the TCP header start; odd means it
    /// straddles two checksum words).
    fn layouts() -> Vec<(&'static str, Vec<u8>, usize)> {
        let cat = |parts: &[&[u8]]| parts.concat();
        vec![
            // Linux: MSS, SACK-permitted, timestamps, NOP, window scale.
            (
                "linux",
                cat(&[&MSS, &SACK_OK, &TIMESTAMPS, &NOP, &WSCALE]),
                22,
            ),
            // A leading NOP puts the MSS value at an odd offset.
            (
                "nop-first",
                cat(&[&NOP, &MSS, &SACK_OK, &WSCALE, &TIMESTAMPS]),
                23,
            ),
            // MSS in the middle at an odd offset, followed by SACK-permitted.
            (
                "odd-middle",
                cat(&[&TIMESTAMPS, &WSCALE, &MSS, &SACK_OK]),
                35,
            ),
            // MSS last, padded with EOL by the builder.
            (
                "mss-last",
                cat(&[&NOP, &WSCALE, &SACK_OK, &TIMESTAMPS, &MSS]),
                38,
            ),
            // Windows: MSS, NOP, window scale, NOP, NOP, SACK-permitted.
            (
                "windows",
                cat(&[&MSS, &NOP, &WSCALE, &NOP, &NOP, &SACK_OK]),
                22,
            ),
            // MSS alone.
            ("alone", MSS.to_vec(), 22),
        ]
    }

    #[derive(Clone, Copy, Debug)]
    struct Shape {
        v6: bool,
        vlan: bool,
        ack: bool,
    }

    fn shapes() -> impl Iterator<Item = Shape> {
        (0..8).map(|i| Shape {
            v6: i & 1 != 0,
            vlan: i & 2 != 0,
            ack: i & 4 != 0,
        })
    }

    /// A SYN (or SYN-ACK) frame with correct checksums.
    fn build(shape: Shape, options: &[u8], payload: &[u8]) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2(MAC_A, MAC_B);
        let mut v = Vec::new();
        macro_rules! finish {
            ($ip:expr) => {{
                let tcp = $ip.tcp(40000, 443, 0x1234_5678, 64240).syn();
                let tcp = if shape.ack { tcp.ack(0x0abc_def0) } else { tcp };
                tcp.options_raw(options)
                    .unwrap()
                    .write(&mut v, payload)
                    .unwrap()
            }};
        }
        let tag = || VlanId::try_new(7).unwrap();
        match (shape.v6, shape.vlan) {
            (false, false) => finish!(eth.ipv4(SRC4, DST4, 64)),
            (true, false) => finish!(eth.ipv6(SRC6, DST6, 64)),
            (false, true) => finish!(eth.single_vlan(tag()).ipv4(SRC4, DST4, 64)),
            (true, true) => finish!(eth.single_vlan(tag()).ipv6(SRC6, DST6, 64)),
        }
        v
    }

    /// Offset of the TCP header in a frame from [`build`].
    fn tcp_at(shape: Shape) -> usize {
        (if shape.vlan { 18 } else { 14 }) + if shape.v6 { 40 } else { 20 }
    }

    /// Parses `frame` with etherparse, checks the TCP checksum from scratch
    /// (etherparse, and [`checksum::verify`] independently), and returns the
    /// MSS options' values.
    fn check(frame: &[u8]) -> Vec<u16> {
        let p = SlicedPacket::from_ethernet(frame).unwrap();
        let (src, dst): (Vec<u8>, Vec<u8>) = match p.net.as_ref().unwrap() {
            NetSlice::Ipv4(ip) => (
                ip.header().source().into(),
                ip.header().destination().into(),
            ),
            NetSlice::Ipv6(ip) => (
                ip.header().source().into(),
                ip.header().destination().into(),
            ),
            NetSlice::Arp(_) => panic!("ARP"),
        };
        let Some(TransportSlice::Tcp(t)) = p.transport else {
            panic!("not TCP")
        };
        let (computed, pseudo) = if src.len() == 4 {
            let s: [u8; 4] = src.try_into().unwrap();
            let d: [u8; 4] = dst.try_into().unwrap();
            let len = t.slice().len() as u16;
            let pseudo = checksum::pseudo_header_v4(s.into(), d.into(), 6, len);
            (t.calc_checksum_ipv4(s, d).unwrap(), pseudo)
        } else {
            let s: [u8; 16] = src.try_into().unwrap();
            let d: [u8; 16] = dst.try_into().unwrap();
            let len = t.slice().len() as u32;
            let pseudo = checksum::pseudo_header_v6(&s.into(), &d.into(), 6, len);
            (t.calc_checksum_ipv6(s, d).unwrap(), pseudo)
        };
        let stored = t.checksum();
        // 0 and 0xffff are the same one's-complement value.
        assert!(
            computed == stored || (computed ^ stored == 0xffff && (computed == 0 || stored == 0)),
            "checksum {stored:04x}, computed {computed:04x}"
        );
        assert!(checksum::verify(pseudo, t.slice()));
        t.options_iterator()
            .filter_map(|o| match o.unwrap() {
                etherparse::TcpOptionElement::MaximumSegmentSize(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn syn_mss_is_clamped_with_a_valid_checksum_for_every_layout_and_shape() {
        for (name, options, value_at) in layouts() {
            for shape in shapes() {
                // An odd-length payload (TCP Fast Open data) puts a padded
                // byte in the checksum too.
                for payload in [&b""[..], b"hello"] {
                    let mut frame = build(shape, &options, payload);
                    let at = tcp_at(shape);
                    assert_eq!(&frame[at + value_at..at + value_at + 2], [0x05, 0xb4]);
                    let before = frame.clone();
                    let want = 1400 - at as u16 - 20;
                    let got = clamp_mss(&mut frame, 1400, false);
                    let case = format!("{name} {shape:?} payload {}", payload.len());
                    assert_eq!(got, Some((1460, want)), "{case}");
                    assert_eq!(check(&frame), [want], "{case}");
                    // Only the MSS value and the checksum changed.
                    for (i, (a, b)) in before.iter().zip(&frame).enumerate() {
                        let allowed = (at + value_at..at + value_at + 2).contains(&i)
                            || (at + 16..at + 18).contains(&i);
                        assert!(a == b || allowed, "{case}: byte {i} changed");
                    }
                    // Clamping again changes nothing.
                    assert_eq!(clamp_mss(&mut frame, 1400, false), None, "{case}");
                }
            }
        }
    }

    #[test]
    fn odd_offset_layouts_really_straddle_words() {
        let odd: Vec<_> = layouts().into_iter().filter(|l| l.2 % 2 == 1).collect();
        assert!(odd.len() >= 2);
        for (name, options, value_at) in odd {
            // Sanity of the table: the value sits where it says.
            let at = options.windows(4).position(|w| w == MSS).unwrap();
            assert_eq!(20 + at + 2, value_at, "{name}");
        }
    }

    #[test]
    fn mss_is_computed_from_the_tcp_header_offset() {
        for (shape, want) in [
            (
                Shape {
                    v6: false,
                    vlan: false,
                    ack: false,
                },
                1500 - 14 - 20 - 20,
            ),
            (
                Shape {
                    v6: false,
                    vlan: true,
                    ack: false,
                },
                1500 - 18 - 20 - 20,
            ),
            (
                Shape {
                    v6: true,
                    vlan: false,
                    ack: true,
                },
                1500 - 14 - 40 - 20,
            ),
            (
                Shape {
                    v6: true,
                    vlan: true,
                    ack: true,
                },
                1500 - 18 - 40 - 20,
            ),
        ] {
            let options = [&MSS[..2], &9000u16.to_be_bytes()].concat();
            let mut frame = build(shape, &options, b"");
            assert_eq!(clamp_mss(&mut frame, 1500, false), Some((9000, want)));
            assert_eq!(check(&frame), [want]);
        }
    }

    #[test]
    fn ipv4_options_move_the_tcp_header_and_are_fine() {
        let shape = Shape {
            v6: false,
            vlan: false,
            ack: false,
        };
        let mut frame = build(shape, &MSS, b"");
        // Insert 4 bytes of IP options (NOP NOP NOP EOL) after the IPv4
        // header; the TCP pseudo-header does not change.
        frame.splice(34..34, [1, 1, 1, 0]);
        frame[14] = 0x46;
        let total = get_u16(&frame, 16) + 4;
        set_u16(&mut frame, 16, total);
        Ipv4Packet::new_unchecked(&mut frame[14..]).fill_checksum();
        check(&frame);
        assert_eq!(
            clamp_mss(&mut frame, 1400, false),
            Some((1460, 1400 - 38 - 20))
        );
        assert_eq!(check(&frame), [1400 - 38 - 20]);
    }

    #[test]
    fn partial_checksum_is_left_alone() {
        for (name, options, _) in layouts() {
            for shape in shapes() {
                let mut frame = build(shape, &options, b"");
                let at = tcp_at(shape);
                // What a NEEDS_CSUM frame holds: the pseudo-header sum only.
                frame[at + 16..at + 18].copy_from_slice(&[0x12, 0x34]);
                let got = clamp_mss(&mut frame, 1300, true);
                assert_eq!(got, Some((1460, 1300 - at as u16 - 20)), "{name} {shape:?}");
                assert_eq!(frame[at + 16..at + 18], [0x12, 0x34], "{name} {shape:?}");
            }
        }
    }

    #[test]
    fn segments_without_syn_are_untouched() {
        let shape = Shape {
            v6: false,
            vlan: false,
            ack: true,
        };
        let eth = PacketBuilder::ethernet2(MAC_A, MAC_B).ipv4(SRC4, DST4, 64);
        let mut frame = Vec::new();
        eth.tcp(40000, 443, 1, 64240)
            .ack(2)
            .options_raw(&MSS)
            .unwrap()
            .write(&mut frame, b"")
            .unwrap();
        let before = frame.clone();
        assert_eq!(clamp_mss(&mut frame, 600, false), None);
        assert_eq!(frame, before);
        // The same with SYN does change.
        let mut syn = build(shape, &MSS, b"");
        assert!(clamp_mss(&mut syn, 600, false).is_some());
    }

    #[test]
    fn small_enough_mss_is_untouched() {
        for shape in shapes() {
            let at = tcp_at(shape);
            let mut frame = build(shape, &MSS, b"");
            let before = frame.clone();
            // Exactly fits, and more than fits.
            for max in [at + 20 + 1460, at + 20 + 1461, 65535, usize::MAX] {
                assert_eq!(clamp_mss(&mut frame, max, false), None, "{shape:?} {max}");
                assert_eq!(frame, before);
            }
            assert_eq!(
                clamp_mss(&mut frame, at + 20 + 1459, false),
                Some((1460, 1459))
            );
        }
    }

    #[test]
    fn no_mss_option_is_untouched() {
        let options = [&NOP[..], &WSCALE, &SACK_OK, &TIMESTAMPS].concat();
        for opts in [&options[..], &[]] {
            for shape in shapes() {
                let mut frame = build(shape, opts, b"");
                let before = frame.clone();
                assert_eq!(clamp_mss(&mut frame, 600, false), None);
                assert_eq!(frame, before);
            }
        }
    }

    #[test]
    fn tiny_limits_clamp_below_the_defaults_but_not_below_min_mss() {
        // IPv4: 576 - 40 = 536 is the default; 560 gives 506, still written.
        let v4 = Shape {
            v6: false,
            vlan: false,
            ack: false,
        };
        let mut frame = build(v4, &MSS, b"");
        assert_eq!(clamp_mss(&mut frame, 560, false), Some((1460, 506)));
        assert_eq!(check(&frame), [506]);
        // IPv6: below 1220 too.
        let v6 = Shape {
            v6: true,
            vlan: false,
            ack: false,
        };
        let mut frame = build(v6, &MSS, b"");
        assert_eq!(clamp_mss(&mut frame, 1280, false), Some((1460, 1206)));
        assert_eq!(check(&frame), [1206]);
        // Nonsense limits end at MIN_MSS, never at 0.
        for max in [0, 1, 54, 100, 14 + 20 + 20 + 88] {
            let mut frame = build(v4, &MSS, b"");
            assert_eq!(clamp_mss(&mut frame, max, false), Some((1460, MIN_MSS)));
            assert_eq!(check(&frame), [MIN_MSS]);
        }
        // An MSS already at or below the floor stays.
        let options = [&MSS[..2], &80u16.to_be_bytes()].concat();
        let mut frame = build(v4, &options, b"");
        assert_eq!(clamp_mss(&mut frame, 0, false), None);
    }

    #[test]
    fn every_mss_option_is_clamped() {
        let options = [&MSS[..], &NOP, &MSS, &SACK_OK, &[2, 4, 0x01, 0x00]].concat();
        let shape = Shape {
            v6: true,
            vlan: true,
            ack: false,
        };
        let mut frame = build(shape, &options, b"");
        assert_eq!(clamp_mss(&mut frame, 1000, false), Some((1460, 922)));
        assert_eq!(check(&frame), [922, 922, 256]);
    }

    #[test]
    fn malformed_option_lists_are_untouched() {
        let bad: [&[u8]; 6] = [
            // Zero length.
            &[2, 4, 0x05, 0xb4, 8, 0, 1, 1],
            // Length 1.
            &[2, 4, 0x05, 0xb4, 8, 1, 1, 1],
            // Runs past the option space.
            &[2, 4, 0x05, 0xb4, 1, 1, 8, 10],
            // MSS of the wrong length.
            &[2, 3, 0x05, 0xb4],
            &[2, 6, 0x05, 0xb4, 0, 0, 0, 0],
            // Kind with no length byte at the end of the list.
            &[2, 4, 0x05, 0xb4, 1, 1, 1, 3],
        ];
        for options in bad {
            for shape in shapes() {
                let mut frame = build(shape, options, b"");
                let before = frame.clone();
                assert_eq!(clamp_mss(&mut frame, 600, false), None, "{options:?}");
                assert_eq!(frame, before);
            }
        }
        // After EOL the rest is padding, even if it looks like an MSS.
        let mut frame = build(shapes().next().unwrap(), &[0, 2, 4, 0x05, 0xb4], b"");
        assert_eq!(clamp_mss(&mut frame, 600, false), None);
    }

    #[test]
    fn later_fragments_extension_headers_and_other_protocols_are_untouched() {
        let v4 = Shape {
            v6: false,
            vlan: false,
            ack: false,
        };
        // IPv4 fragment with offset 8: bytes that look like a SYN are data.
        let mut frame = build(v4, &MSS, b"");
        frame[20] = 0x00;
        frame[21] = 0x01;
        Ipv4Packet::new_unchecked(&mut frame[14..]).fill_checksum();
        let before = frame.clone();
        assert_eq!(clamp_mss(&mut frame, 600, false), None);
        assert_eq!(frame, before);
        // First fragment (MF set, offset 0): the TCP header is there.
        let mut frame = build(v4, &MSS, b"");
        frame[20] = 0x20;
        Ipv4Packet::new_unchecked(&mut frame[14..]).fill_checksum();
        assert!(clamp_mss(&mut frame, 600, false).is_some());
        // IPv6 with a hop-by-hop header (PadN) before TCP.
        let v6 = Shape {
            v6: true,
            vlan: false,
            ack: false,
        };
        let mut frame = build(v6, &MSS, b"");
        frame.splice(54..54, [6, 0, 1, 4, 0, 0, 0, 0]);
        frame[20] = 0;
        let len = get_u16(&frame, 18) + 8;
        set_u16(&mut frame, 18, len);
        let before = frame.clone();
        assert_eq!(clamp_mss(&mut frame, 600, false), None);
        assert_eq!(frame, before);
        // UDP whose payload looks like a TCP SYN.
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(MAC_A, MAC_B)
            .ipv4(SRC4, DST4, 64)
            .udp(1, 2)
            .write(&mut frame, &build(v4, &MSS, b"")[34..])
            .unwrap();
        let before = frame.clone();
        assert_eq!(clamp_mss(&mut frame, 600, false), None);
        assert_eq!(frame, before);
        // QinQ (two tags) is not parsed.
        let mut frame = build(Shape { vlan: true, ..v4 }, &MSS, b"");
        frame.splice(12..12, [0x88, 0xa8, 0, 5]);
        assert_eq!(clamp_mss(&mut frame, 600, false), None);
    }

    #[test]
    fn ethernet_padding_is_not_part_of_the_segment() {
        // A 58-byte SYN padded to the 60-byte minimum; the padding is not
        // TCP payload and must not enter the checksum.
        let v4 = Shape {
            v6: false,
            vlan: false,
            ack: false,
        };
        let mut frame = build(v4, &MSS, b"");
        frame.extend_from_slice(&[0xaa, 0xbb]);
        assert_eq!(clamp_mss(&mut frame, 1000, false), Some((1460, 946)));
        assert_eq!(check(&frame[..frame.len() - 2]), [946]);
    }

    /// xorshift64: deterministic bytes without a dependency.
    fn rng(seed: u64) -> impl FnMut() -> u64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        }
    }

    #[test]
    fn random_layouts_values_and_limits_keep_the_checksum_valid() {
        let mut next = rng(0xc0ffee);
        for i in 0..3000 {
            let shape = Shape {
                v6: next() % 2 == 0,
                vlan: next() % 2 == 0,
                ack: next() % 2 == 0,
            };
            let old = next() as u16;
            let ts = next().to_be_bytes();
            let mss = [2, 4, (old >> 8) as u8, old as u8];
            let timestamps = [&[8, 10][..], &ts[..8]].concat();
            let mut parts: Vec<&[u8]> = vec![&mss, &SACK_OK, &timestamps, &WSCALE];
            // Shuffle, then sprinkle NOPs while the list fits 40 bytes.
            for k in (1..parts.len()).rev() {
                parts.swap(k, (next() % (k as u64 + 1)) as usize);
            }
            let mut options = Vec::new();
            for part in parts {
                while next() % 3 == 0 && options.len() + part.len() < 21 {
                    options.push(1);
                }
                options.extend_from_slice(part);
            }
            let payload: Vec<u8> = (0..next() % 8).map(|_| next() as u8).collect();
            let mut frame = build(shape, &options, &payload);
            let max = (next() % 2000) as usize;
            let limit = max
                .saturating_sub(tcp_at(shape) + 20)
                .clamp(usize::from(MIN_MSS), 65535) as u16;
            let partial = next() % 4 == 0;
            let before = frame.clone();
            let got = clamp_mss(&mut frame, max, partial);
            let case = format!("case {i}: {options:?} max {max} old {old}");
            if old > limit {
                assert_eq!(got, Some((old, limit)), "{case}");
            } else {
                assert_eq!(got, None, "{case}");
                assert_eq!(frame, before, "{case}");
            }
            if !partial {
                assert_eq!(check(&frame), [old.min(limit)], "{case}");
            }
        }
    }

    #[test]
    fn garbage_and_truncations_never_panic() {
        let mut next = rng(0x5eed);
        // Random bytes, with the first bytes often a plausible header.
        for i in 0..20_000 {
            let len = (next() % 160) as usize;
            let mut frame: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if i % 2 == 0 && len > 24 {
                frame[12..14].copy_from_slice(&[0x08, 0x00]);
                frame[14] = 0x45 + (next() % 3) as u8;
                frame[23] = 6;
                frame[20..22].copy_from_slice(&[0, 0]);
            }
            let _ = clamp_mss(&mut frame, (next() % 2000) as usize, next() % 2 == 0);
        }
        for (_, options, _) in layouts() {
            for shape in shapes() {
                let frame = build(shape, &options, b"data");
                let at = tcp_at(shape);
                // Every truncation, as is and with the IP length fixed up so
                // the cut reaches the TCP parser.
                for cut in 0..=frame.len() {
                    let mut f = frame[..cut].to_vec();
                    let _ = clamp_mss(&mut f, 600, false);
                    let l3 = at - if shape.v6 { 40 } else { 20 };
                    if shape.v6 && cut >= l3 + 40 {
                        set_u16(&mut f, l3 + 4, (cut - l3 - 40) as u16);
                    } else if !shape.v6 && cut >= l3 + 20 {
                        set_u16(&mut f, l3 + 2, (cut - l3) as u16);
                    }
                    let _ = clamp_mss(&mut f, 600, false);
                }
                // Random corruption of the TCP header and options.
                for _ in 0..300 {
                    let mut f = frame.clone();
                    for _ in 0..1 + next() % 4 {
                        let i = at + (next() as usize) % (f.len() - at);
                        f[i] = next() as u8;
                    }
                    let _ = clamp_mss(&mut f, (next() % 1600) as usize, next() % 2 == 0);
                }
            }
        }
    }
}
