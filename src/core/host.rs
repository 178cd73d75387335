//! Host access: the bridge host's own stack joins the overlay through a TAP
//! in its namespace (README, "Host access"). Sans-IO pieces the engine
//! ([`crate::core::nat`]) and the driver share:
//!
//! * [`tap_mac`]: the TAP's MAC `T`, locally administered, derived from `N`
//!   and never equal to it;
//! * [`arp_reply`] and [`neighbor_advert`]: the answers the engine gives,
//!   for the host, to a virtual host resolving one of the host's addresses.
//!   The host's kernel would answer an ARP request on the TAP (with the
//!   default `arp_ignore=0`), but never a neighbour solicitation for an
//!   address that lives on another interface (Linux checks the target
//!   against the receiving interface), so the engine answers both, the same
//!   way: as `N`, which is what the LAN knows the host by too;
//! * [`RouteSet`]: which host routes (`/32`, `/128` through the TAP) the
//!   driver must add or remove so that they follow the IP→MAC table.
//!
//! Frames built here carry only `N` and the asker's MAC; they go into the
//! overlay, never onto the LAN.
//!
//! References: RFC 826 (ARP), RFC 4861 section 7.2.4 (sending solicited
//! advertisements).

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use crate::core::{
    frame::{
        arp::{self, ArpPacket},
        ethernet::{self, ethertype},
        icmpv6::{msg, opt, Icmpv6Packet},
        ipv4::protocol,
    },
    mac::MacAddr,
    probe::{Transmit, MAX_PROBE},
};

/// The host TAP's MAC `T` for a NIC with MAC `n`: locally administered,
/// unicast, and different from `n` in the first octet (bit 1 is set; if it
/// already was, bit 2 is flipped).
pub fn tap_mac(n: MacAddr) -> MacAddr {
    let mut t = n.0;
    t[0] = if t[0] & 0x02 == 0 {
        t[0] | 0x02
    } else {
        t[0] ^ 0x04
    } & !0x01;
    MacAddr(t)
}

/// An ARP reply from the host (`n`, `host_ip`) to the virtual host that
/// asked (`to_mac`, `to_ip`), padded to 60 bytes.
pub fn arp_reply(n: MacAddr, host_ip: Ipv4Addr, to_mac: MacAddr, to_ip: Ipv4Addr) -> Transmit {
    let mut buf = [0u8; MAX_PROBE];
    ethernet::emit(&mut buf, to_mac, n, ethertype::ARP);
    let mut a = ArpPacket::new_unchecked(&mut buf[ethernet::field::HEADER_LEN..]);
    a.fill_ethernet_ipv4();
    a.set_operation(arp::op::REPLY);
    a.set_sender_hw_addr(n);
    a.set_sender_ip(host_ip);
    a.set_target_hw_addr(to_mac);
    a.set_target_ip(to_ip);
    Transmit::new(buf, 60)
}

/// A solicited neighbour advertisement for the host's `target`, from `n`,
/// to the virtual host that solicited it (`to_mac`, `to_ip`): override set,
/// a target link-layer option `n`, hop limit 255. A solicitation from `::`
/// (duplicate address detection) is answered to all nodes, unsolicited
/// (RFC 4861 section 7.2.4).
pub fn neighbor_advert(n: MacAddr, target: Ipv6Addr, to_mac: MacAddr, to_ip: Ipv6Addr) -> Transmit {
    const ICMP_LEN: usize = 32;
    let (dst_mac, dst_ip, flags) = if to_ip.is_unspecified() {
        (
            MacAddr([0x33, 0x33, 0, 0, 0, 1]),
            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
            0x20,
        )
    } else {
        (to_mac, to_ip, 0x60)
    };
    let mut buf = [0u8; MAX_PROBE];
    ethernet::emit(&mut buf, dst_mac, n, ethertype::IPV6);
    let ip6 = &mut buf[ethernet::field::HEADER_LEN..];
    ip6[0] = 0x60;
    ip6[4..6].copy_from_slice(&(ICMP_LEN as u16).to_be_bytes());
    ip6[6] = protocol::ICMPV6;
    ip6[7] = 255;
    ip6[8..24].copy_from_slice(&target.octets());
    ip6[24..40].copy_from_slice(&dst_ip.octets());
    let icmp = &mut ip6[40..40 + ICMP_LEN];
    icmp[0] = msg::NEIGHBOR_ADVERT;
    icmp[4] = flags;
    icmp[8..24].copy_from_slice(&target.octets());
    icmp[24] = opt::TARGET_LLA;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&n.0);
    Icmpv6Packet::new_unchecked(icmp).fill_checksum(&target, &dst_ip);
    Transmit::new(buf, ethernet::field::HEADER_LEN + 40 + ICMP_LEN)
}

/// One change to the host's routes through the TAP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteChange {
    /// Add a host route to this virtual address.
    Add(IpAddr),
    /// Remove the host route to this address.
    Remove(IpAddr),
}

/// The host routes installed through the TAP, and the changes that make
/// them follow the virtual addresses the engine has learned. Bounded by
/// what it is given (the IP→MAC table's cap).
#[derive(Clone, Debug, Default)]
pub struct RouteSet {
    installed: BTreeSet<IpAddr>,
}

impl RouteSet {
    /// The changes from what is installed to `wanted`, removals first; the
    /// set then counts them as done (the driver logs the ones that fail).
    pub fn update(&mut self, wanted: impl IntoIterator<Item = IpAddr>) -> Vec<RouteChange> {
        let wanted: BTreeSet<IpAddr> = wanted.into_iter().collect();
        let mut out: Vec<RouteChange> = self
            .installed
            .difference(&wanted)
            .map(|&ip| RouteChange::Remove(ip))
            .collect();
        out.extend(
            wanted
                .difference(&self.installed)
                .map(|&ip| RouteChange::Add(ip)),
        );
        self.installed = wanted;
        out
    }

    /// Counts `ip` as not installed (its add failed: a route to it that is
    /// not ours exists, which must then never be removed as ours).
    pub fn forget(&mut self, ip: IpAddr) {
        self.installed.remove(&ip);
    }

    /// Routes counted as installed.
    pub fn len(&self) -> usize {
        self.installed.len()
    }

    /// True when no route is installed.
    pub fn is_empty(&self) -> bool {
        self.installed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::frame::{ethernet::EthernetFrame, ipv6::Ipv6Packet};

    const N: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 0x0a]);
    const V: MacAddr = MacAddr([2, 0, 0, 0, 2, 1]);

    #[test]
    fn tap_mac_is_local_unicast_and_never_n() {
        for first in 0..=255u8 {
            let n = MacAddr([first, 1, 2, 3, 4, 5]);
            let t = tap_mac(n);
            assert_ne!(t, n);
            assert!(t.is_unicast());
            assert_eq!(t.0[0] & 0x02, 0x02, "locally administered");
            assert_eq!(t.0[1..], n.0[1..]);
        }
    }

    #[test]
    fn arp_reply_names_n_for_the_host_address() {
        let host: Ipv4Addr = "10.0.0.10".parse().unwrap();
        let v: Ipv4Addr = "10.0.0.100".parse().unwrap();
        let t = arp_reply(N, host, V, v);
        let eth = EthernetFrame::new_checked(t.as_bytes()).unwrap();
        assert_eq!((eth.dst_addr(), eth.src_addr()), (V, N));
        assert_eq!(t.as_bytes().len(), 60);
        let a = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(a.operation(), arp::op::REPLY);
        assert_eq!((a.sender_hw_addr(), a.sender_ip()), (N, host));
        assert_eq!((a.target_hw_addr(), a.target_ip()), (V, v));
    }

    #[test]
    fn neighbor_advert_is_solicited_with_n_as_target_lla() {
        let target: Ipv6Addr = "fd00::a".parse().unwrap();
        let v: Ipv6Addr = "fd00::64".parse().unwrap();
        let t = neighbor_advert(N, target, V, v);
        let eth = EthernetFrame::new_checked(t.as_bytes()).unwrap();
        assert_eq!((eth.dst_addr(), eth.src_addr()), (V, N));
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(
            (ip.src_addr(), ip.dst_addr(), ip.hop_limit()),
            (target, v, 255)
        );
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), msg::NEIGHBOR_ADVERT);
        assert_eq!(icmp.target_addr(), Some(target));
        assert_eq!(
            icmp.lla_options().collect::<Vec<_>>(),
            vec![(opt::TARGET_LLA, N)]
        );
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
        assert_eq!(ip.payload()[4], 0x60, "solicited, override");
        // Duplicate address detection gets an unsolicited answer to all nodes.
        let t = neighbor_advert(N, target, V, Ipv6Addr::UNSPECIFIED);
        let ip = Ipv6Packet::new_checked(&t.as_bytes()[14..]).unwrap();
        assert_eq!(ip.dst_addr(), "ff02::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(ip.payload()[4], 0x20);
    }

    #[test]
    fn route_set_adds_and_removes_the_difference() {
        let a: IpAddr = "10.0.0.100".parse().unwrap();
        let b: IpAddr = "fd00::64".parse().unwrap();
        let c: IpAddr = "10.0.0.101".parse().unwrap();
        let mut r = RouteSet::default();
        assert_eq!(
            r.update([a, b]),
            vec![RouteChange::Add(a), RouteChange::Add(b)]
        );
        assert_eq!(r.update([a, b]), vec![]);
        assert_eq!(
            r.update([b, c]),
            vec![RouteChange::Remove(a), RouteChange::Add(c)]
        );
        assert_eq!(r.len(), 2);
        assert_eq!(
            r.update([]),
            vec![RouteChange::Remove(c), RouteChange::Remove(b)]
        );
        assert!(r.is_empty());
    }
}
