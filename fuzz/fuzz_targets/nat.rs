//! Frames from fuzz bytes through the bridge's MAC translation,
//! `core::nat::Nat::handle_lan` (with a fuzz-chosen packet type, partial
//! checksum flag and stripped VLAN tag) and `Nat::handle_overlay`, with
//! time passing, `Nat::expire` and host address changes; small tables, so
//! that eviction and ageing happen.
//!
//! Input: records, each a flags byte (bit 0 from the overlay, else from
//! the LAN; bits 1-3 the packet type, `% 5`: host, broadcast, multicast,
//! other host, outgoing; bit 4 partial checksum; bit 5 a VLAN id follows;
//! bit 6 call `expire` first; bit 7 switch the host's addresses), the VLAN
//! id (u16 LE) if bit 5, a byte of seconds passing, then the frame as a
//! blob (u16 LE length, bytes).
//!
//! Checked besides "no panic" (the module's invariant, "the LAN only ever
//! sees N", as the decision-table test states it):
//! * a frame `handle_overlay` forwards has Ethernet source N, ARP sender
//!   hardware address N, every NDP link-layer option N; every MAC in it
//!   (Ethernet, ARP, NDP options) is N, a group address, or one seen as a
//!   source on the LAN (`Nat::lan_macs`), the ARP target hardware address
//!   included (the bug in fuzz/regressions/nat, fixed); its
//!   destination is not an 802.1D link-local group, its VLAN is 0; and a
//!   transport checksum (UDP over IPv4, ICMPv6) that was right stays right
//!   unless partial;
//! * a frame `handle_lan` forwards came with packet type host, broadcast
//!   or multicast, no VLAN other than 0; only its Ethernet destination
//!   and ARP target hardware address may change, and only a destination
//!   N, to a unicast MAC other than N.
//!
//! Run from the repository's top level (cargo-fuzz from crates.io):
//! `cargo +nightly fuzz run nat fuzz/corpus/nat fuzz/seeds/nat -- -max_total_time=120`,
//! or `scripts/fuzz.sh nat`.

#![no_main]

#[path = "../common/mod.rs"]
mod common;

use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use common::Input;
use lanbridge::core::{
    frame::{
        arp::{self, ArpPacket},
        ethernet::{ethertype, EthernetFrame},
        icmpv6::Icmpv6Packet,
        ipv4::{protocol, Ipv4Packet},
        ipv6::Ipv6Packet,
        udp::UdpPacket,
    },
    mac::MacAddr,
    nat::{LanMeta, Nat, NatConfig, PacketType, Verdict},
};
use libfuzzer_sys::fuzz_target;

/// Where [`macs_in`] found the ARP target hardware address.
const ARP_TARGET: &str = "ARP target";

/// The bridged NIC's MAC.
const N: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x0a]);

const PACKET_TYPES: [PacketType; 5] = [
    PacketType::Host,
    PacketType::Broadcast,
    PacketType::Multicast,
    PacketType::OtherHost,
    PacketType::Outgoing,
];

fn host_addrs(second: bool) -> ([Ipv4Addr; 1], [Ipv6Addr; 1]) {
    let last = if second { 6 } else { 5 };
    (
        [Ipv4Addr::new(10, 0, 0, last)],
        [Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(last))],
    )
}

/// The MACs a LAN host reads in a frame, each with where it is: Ethernet
/// source and destination, ARP sender and target hardware addresses, NDP
/// link-layer options; and where the ARP part starts, if any.
fn macs_in(frame: &[u8]) -> (Vec<(&'static str, MacAddr)>, Option<usize>) {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return (Vec::new(), None);
    };
    let mut out = vec![
        ("Ethernet source", eth.src_addr()),
        ("Ethernet destination", eth.dst_addr()),
    ];
    let mut arp_at = None;
    match eth.ethertype() {
        ethertype::ARP | ethertype::RARP => {
            if let Ok(a) = ArpPacket::new_checked(eth.payload()) {
                out.push(("ARP sender", a.sender_hw_addr()));
                out.push((ARP_TARGET, a.target_hw_addr()));
                arp_at = Some(eth.header_len());
            }
        }
        ethertype::IPV6 => {
            if let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) {
                if let Ok((protocol::ICMPV6, off)) = ip.upper_layer() {
                    if let Ok(icmp) = Icmpv6Packet::new_checked(&ip.payload()[off..]) {
                        out.extend(icmp.lla_options().map(|(_, m)| ("NDP option", m)));
                    }
                }
            }
        }
        _ => {}
    }
    (out, arp_at)
}

/// Whether the transport checksum is right, for UDP over IPv4 (not a
/// fragment; `None` for a zero, i.e. absent, checksum) and ICMPv6.
fn l4_checksum_ok(frame: &[u8]) -> Option<bool> {
    let eth = EthernetFrame::new_checked(frame).ok()?;
    match eth.ethertype() {
        ethertype::IPV4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            if ip.protocol() != protocol::UDP || ip.frag_offset() != 0 || ip.more_frags() {
                return None;
            }
            let udp = UdpPacket::new_checked(ip.payload()).ok()?;
            (udp.checksum() != 0).then(|| udp.verify_checksum_v4(ip.src_addr(), ip.dst_addr()))
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(eth.payload()).ok()?;
            let (next, off) = ip.upper_layer().ok()?;
            if next != protocol::ICMPV6 {
                return None;
            }
            let icmp = Icmpv6Packet::new_checked(&ip.payload()[off..]).ok()?;
            Some(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()))
        }
        _ => None,
    }
}

fn check_overlay_forward(nat: &Nat, now: Instant, before: &[u8], after: &[u8], partial: bool) {
    let eth = EthernetFrame::new_checked(after).expect("forwarded a runt");
    assert_eq!(eth.src_addr(), N, "Ethernet source");
    let dst = eth.dst_addr();
    assert!(
        !(dst.0[..5] == [0x01, 0x80, 0xc2, 0, 0] && dst.0[5] <= 0x0f),
        "forwarded to an 802.1D link-local group {dst}"
    );
    if let Some(tci) = eth.vlan_tci() {
        assert_eq!(tci & 0x0fff, 0, "forwarded into VLAN {}", tci & 0x0fff);
    }
    assert!(
        matches!(
            eth.ethertype(),
            ethertype::ARP | ethertype::RARP | ethertype::IPV4 | ethertype::IPV6
        ),
        "EtherType {:04x}",
        eth.ethertype()
    );
    if matches!(eth.ethertype(), ethertype::ARP | ethertype::RARP) {
        if let Ok(a) = ArpPacket::new_checked(eth.payload()) {
            assert_eq!(a.sender_hw_addr(), N, "ARP sender hardware address");
        }
    }
    if eth.ethertype() == ethertype::IPV6 {
        if let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) {
            if let Ok((protocol::ICMPV6, off)) = ip.upper_layer() {
                if let Ok(icmp) = Icmpv6Packet::new_checked(&ip.payload()[off..]) {
                    for (kind, m) in icmp.lla_options() {
                        assert_eq!(m, N, "NDP option {kind}");
                    }
                }
            }
        }
    }
    let lan: Vec<MacAddr> = nat.lan_macs(now).map(|(m, _)| m).collect();
    for (place, m) in macs_in(after).0 {
        assert!(
            m == N || !m.is_unicast() || lan.contains(&m),
            "{m} reaches the LAN as {place}: neither N nor seen on the LAN ({lan:?})"
        );
    }
    if !partial && l4_checksum_ok(before) == Some(true) {
        assert_eq!(
            l4_checksum_ok(after),
            Some(true),
            "a right checksum went wrong"
        );
    }
}

fn check_lan_forward(meta: LanMeta, before: &[u8], after: &[u8]) {
    assert!(
        matches!(
            meta.pkt_type,
            PacketType::Host | PacketType::Broadcast | PacketType::Multicast
        ),
        "{meta:?}"
    );
    assert!(meta.vlan.unwrap_or(0) == 0, "{meta:?}");
    let (_, arp_at) = macs_in(before);
    let tha = arp_at.map(|at| at + arp::field::THA.start..at + arp::field::THA.end);
    for (i, (x, y)) in before.iter().zip(after).enumerate() {
        let may = i < 6 || tha.as_ref().is_some_and(|r| r.contains(&i));
        assert!(x == y || may, "byte {i} changed: {x:02x} -> {y:02x}");
    }
    if before[..6] != after[..6] {
        assert_eq!(
            MacAddr::from_slice(before),
            Some(N),
            "rewrote a destination other than N"
        );
        let new = MacAddr::from_slice(after).unwrap();
        assert!(
            new.is_unicast() && new != N,
            "rewrote the destination to {new}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let mut config = NatConfig::new(N);
    config.ip_table_cap = 4;
    config.lan_mac_cap = 4;
    config.lan_ip_cap = 4;
    config.ip_max_age = Duration::from_secs(60);
    config.lan_mac_max_age = Duration::from_secs(120);
    config.lan_ip_max_age = Duration::from_secs(90);
    let mut nat = Nat::new(config);
    let mut second = false;
    let (v4, v6) = host_addrs(second);
    nat.set_host_addrs(&v4, &v6);
    let mut now = Instant::now();
    let mut input = Input::new(data);
    let mut frame = Vec::new();
    loop {
        let Some(flags) = input.u8() else { break };
        let vlan = if flags & 0x20 != 0 {
            let Some(v) = input.u16() else { break };
            Some(v)
        } else {
            None
        };
        let (Some(dt), Some(bytes)) = (input.u8(), input.blob()) else {
            break;
        };
        now += Duration::from_secs(u64::from(dt));
        if flags & 0x40 != 0 {
            nat.expire(now);
        }
        if flags & 0x80 != 0 {
            second = !second;
            let (v4, v6) = host_addrs(second);
            nat.set_host_addrs(&v4, &v6);
        }
        let partial = flags & 0x10 != 0;
        frame.clear();
        frame.extend_from_slice(bytes);
        if flags & 1 != 0 {
            if nat.handle_overlay(now, partial, &mut frame) == Verdict::Forward {
                check_overlay_forward(&nat, now, bytes, &frame, partial);
            } else {
                assert!(frame == bytes, "a dropped frame was changed");
            }
            let _ = nat.take_refusal();
            let _ = nat.take_for_host_notice();
        } else {
            let meta = LanMeta {
                pkt_type: PACKET_TYPES[usize::from(flags >> 1 & 7) % PACKET_TYPES.len()],
                csum_partial: partial,
                vlan,
            };
            if nat.handle_lan(now, meta, &mut frame) == Verdict::Forward {
                check_lan_forward(meta, bytes, &frame);
            } else {
                assert!(frame == bytes, "a dropped frame was changed");
            }
        }
        let (ips, macs, lan_ips) = nat.table_lens();
        assert!(
            ips <= 4 && macs <= 4 && lan_ips <= 4,
            "tables over their caps"
        );
    }
});
