//! Probing the LAN before the bridge grants an address to the overlay: an
//! ARP probe (RFC 5227 section 2.1.1) for IPv4, a duplicate-address-detection
//! neighbour solicitation (RFC 4862 section 5.4.2) for IPv6.
//!
//! A virtual host's first claim of an address that no table knows starts a
//! [`Claims`] entry. [`PROBES`] probes go out [`PROBE_INTERVAL`] apart, and
//! the claim is granted [`PROBE_INTERVAL`] after the last one if no LAN host
//! answered; the caller cancels it ([`Claims::cancel`]) when one does. A
//! claim is granted only after all its probes went out, whenever the
//! caller gets round to sending them. Sans-IO: [`Claims::poll_probe`] says
//! which address is due for a probe, [`Claims::take_granted`] which claim
//! has waited long enough, [`Claims::next_deadline`] when to come back; the
//! frames come from [`arp_probe`] and [`ns_probe`].
//!
//! Probes carry only the bridge NIC's MAC (`N`): Ethernet source `N`, ARP
//! sender hardware address `N` with sender IP `0.0.0.0` (so no LAN host
//! learns from it); the neighbour solicitation comes from `::` with no
//! link-layer option, to the target's solicited-node group. A LAN host that
//! owns the address answers `N` with an ARP reply (target IP `0.0.0.0`), or
//! all nodes with a neighbour advertisement.
//!
//! At most [`CLAIM_CAP`] claims are pending at once, so a virtual host that
//! claims address after address puts at most `CLAIM_CAP * PROBES` probes on
//! the LAN per `PROBES * PROBE_INTERVAL` (128 a second); claims beyond the
//! cap wait for a free slot.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use crate::core::{
    frame::{
        arp::{self, ArpPacket},
        ethernet::{self, ethertype},
        icmpv6::{msg, Icmpv6Packet},
        ipv4::protocol,
    },
    mac::MacAddr,
};

/// Probes per claim.
pub const PROBES: u8 = 2;
/// Time between probes, and from the last probe to the grant: a claim
/// unanswered for `PROBES * PROBE_INTERVAL` (1 s) is granted.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);
/// Claims pending at once.
pub const CLAIM_CAP: usize = 64;
/// Claims one virtual MAC may have pending at once: a host has a handful of
/// addresses (IPv4, a few IPv6), so one virtual host can't take every slot
/// and keep the others from ever being granted (found in review).
pub const CLAIMS_PER_MAC: usize = 4;

/// Length of the longest frame the engine builds itself: a neighbour
/// advertisement with a target link-layer option ([`crate::core::host`]);
/// probes are shorter.
pub(crate) const MAX_PROBE: usize = ethernet::field::HEADER_LEN + 40 + 32;
/// Length of the neighbour solicitation probe.
const NS_PROBE_LEN: usize = ethernet::field::HEADER_LEN + 40 + 24;

/// A frame for the driver to put on the LAN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Transmit {
    buf: [u8; MAX_PROBE],
    len: usize,
}

impl Transmit {
    /// A frame of `len` bytes, built in `buf` (`len <= MAX_PROBE`).
    pub(crate) fn new(buf: [u8; MAX_PROBE], len: usize) -> Transmit {
        Transmit {
            buf,
            len: len.min(MAX_PROBE),
        }
    }

    /// The frame, Ethernet header first.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// An ARP probe for `ip` from the NIC with MAC `n`: broadcast, sender IP
/// `0.0.0.0`, target hardware address zero (RFC 5227), padded to 60 bytes.
pub fn arp_probe(n: MacAddr, ip: Ipv4Addr) -> Transmit {
    let mut buf = [0u8; MAX_PROBE];
    ethernet::emit(&mut buf, MacAddr::BROADCAST, n, ethertype::ARP);
    let mut a = ArpPacket::new_unchecked(&mut buf[ethernet::field::HEADER_LEN..]);
    a.fill_ethernet_ipv4();
    a.set_operation(arp::op::REQUEST);
    a.set_sender_hw_addr(n);
    a.set_sender_ip(Ipv4Addr::UNSPECIFIED);
    a.set_target_hw_addr(MacAddr::ZERO);
    a.set_target_ip(ip);
    Transmit { buf, len: 60 }
}

/// A duplicate-address-detection neighbour solicitation for `ip` from the
/// NIC with MAC `n`: from `::` to the solicited-node group of `ip`, hop
/// limit 255, no options (RFC 4862 section 5.4.2).
pub fn ns_probe(n: MacAddr, ip: Ipv6Addr) -> Transmit {
    let t = ip.octets();
    let group = Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(t[13]),
        u16::from_be_bytes([t[14], t[15]]),
    );
    let mut buf = [0u8; MAX_PROBE];
    let dst = MacAddr([0x33, 0x33, 0xff, t[13], t[14], t[15]]);
    ethernet::emit(&mut buf, dst, n, ethertype::IPV6);
    let ip6 = &mut buf[ethernet::field::HEADER_LEN..];
    ip6[0] = 0x60;
    ip6[4..6].copy_from_slice(&24u16.to_be_bytes());
    ip6[6] = protocol::ICMPV6;
    ip6[7] = 255;
    // Source `::` (zeros already).
    ip6[24..40].copy_from_slice(&group.octets());
    let icmp = &mut ip6[40..64];
    icmp[0] = msg::NEIGHBOR_SOLICIT;
    icmp[8..24].copy_from_slice(&t);
    Icmpv6Packet::new_unchecked(icmp).fill_checksum(&Ipv6Addr::UNSPECIFIED, &group);
    Transmit {
        buf,
        len: NS_PROBE_LEN,
    }
}

#[derive(Clone, Copy, Debug)]
struct Claim {
    ip: IpAddr,
    mac: MacAddr,
    /// Probes sent so far.
    sent: u8,
    /// When the next probe is due, or, once all are sent, the grant.
    due: Instant,
}

/// Claims waiting for their probes: bounded, in the order they started.
#[derive(Clone, Debug, Default)]
pub struct Claims {
    pending: Vec<Claim>,
}

impl Claims {
    /// True while `ip` is being probed for.
    pub fn is_pending(&self, ip: IpAddr) -> bool {
        self.pending.iter().any(|c| c.ip == ip)
    }

    /// Starts probing for `ip`, claimed by `mac`; its first probe is due at
    /// once. False if [`CLAIM_CAP`] claims are already pending, or
    /// [`CLAIMS_PER_MAC`] of `mac`'s.
    pub fn start(&mut self, now: Instant, ip: IpAddr, mac: MacAddr) -> bool {
        if self.pending.len() >= CLAIM_CAP
            || self.pending.iter().filter(|c| c.mac == mac).count() >= CLAIMS_PER_MAC
        {
            return false;
        }
        self.pending.push(Claim {
            ip,
            mac,
            sent: 0,
            due: now,
        });
        true
    }

    /// Forgets the claim of `ip` (a LAN host answered, or the address is
    /// the bridge host's now); true if there was one.
    pub fn cancel(&mut self, ip: IpAddr) -> bool {
        let before = self.pending.len();
        self.pending.retain(|c| c.ip != ip);
        self.pending.len() != before
    }

    /// The address of a claim whose next probe is due at `now`, if any; the
    /// probe counts as sent.
    pub fn poll_probe(&mut self, now: Instant) -> Option<IpAddr> {
        let c = self
            .pending
            .iter_mut()
            .find(|c| c.sent < PROBES && c.due <= now)?;
        c.sent += 1;
        c.due = now + PROBE_INTERVAL;
        Some(c.ip)
    }

    /// A claim that sent all its probes and waited [`PROBE_INTERVAL`] since
    /// the last one unanswered: the address and the MAC that claimed it.
    pub fn take_granted(&mut self, now: Instant) -> Option<(IpAddr, MacAddr)> {
        let i = self
            .pending
            .iter()
            .position(|c| c.sent >= PROBES && c.due <= now)?;
        let c = self.pending.remove(i);
        Some((c.ip, c.mac))
    }

    /// When the next probe or grant is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.pending.iter().map(|c| c.due).min()
    }

    /// Claims pending.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// True if no claim is pending.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::frame::{ethernet::EthernetFrame, ipv6::Ipv6Packet};

    const N: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x0a]);
    const V: MacAddr = MacAddr([2, 0, 0, 0, 2, 1]);

    #[test]
    fn arp_probe_is_rfc_5227() {
        let t = arp_probe(N, Ipv4Addr::new(10, 0, 0, 7));
        let f = t.as_bytes();
        assert_eq!(f.len(), 60);
        let eth = EthernetFrame::new_checked(f).unwrap();
        assert_eq!((eth.dst_addr(), eth.src_addr()), (MacAddr::BROADCAST, N));
        let a = ArpPacket::new_checked(eth.payload()).unwrap();
        assert_eq!(a.operation(), arp::op::REQUEST);
        assert_eq!(a.sender_hw_addr(), N);
        assert_eq!(a.sender_ip(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(a.target_hw_addr(), MacAddr::ZERO);
        assert_eq!(a.target_ip(), Ipv4Addr::new(10, 0, 0, 7));
    }

    #[test]
    fn ns_probe_is_duplicate_address_detection() {
        let target: Ipv6Addr = "fd00::12:3456".parse().unwrap();
        let t = ns_probe(N, target);
        let eth = EthernetFrame::new_checked(t.as_bytes()).unwrap();
        assert_eq!(eth.src_addr(), N);
        assert_eq!(
            eth.dst_addr(),
            MacAddr([0x33, 0x33, 0xff, 0x12, 0x34, 0x56])
        );
        let ip = Ipv6Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(ip.src_addr(), Ipv6Addr::UNSPECIFIED);
        assert_eq!(
            ip.dst_addr(),
            "ff02::1:ff12:3456".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!((ip.next_header(), ip.hop_limit()), (58, 255));
        let icmp = Icmpv6Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(icmp.msg_type(), msg::NEIGHBOR_SOLICIT);
        assert_eq!(icmp.target_addr(), Some(target));
        assert_eq!(icmp.lla_options().count(), 0, "DAD carries no MAC");
        assert!(icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr()));
    }

    #[test]
    fn a_claim_is_granted_after_its_probes_and_not_before() {
        let t0 = Instant::now();
        let ip = IpAddr::from([10, 0, 0, 7]);
        let mut c = Claims::default();
        assert!(c.start(t0, ip, V));
        assert!(c.is_pending(ip));
        assert_eq!(c.next_deadline(), Some(t0));
        // Not granted while the driver sends no probe, however late.
        assert_eq!(c.take_granted(t0 + Duration::from_secs(9)), None);
        assert_eq!(c.poll_probe(t0), Some(ip));
        assert_eq!(c.poll_probe(t0), None);
        assert_eq!(c.next_deadline(), Some(t0 + PROBE_INTERVAL));
        let t1 = t0 + PROBE_INTERVAL;
        assert_eq!(c.take_granted(t1), None);
        assert_eq!(c.poll_probe(t1), Some(ip));
        let t2 = t1 + PROBE_INTERVAL;
        assert_eq!(c.take_granted(t2 - Duration::from_millis(1)), None);
        assert_eq!(c.poll_probe(t2), None, "two probes only");
        assert_eq!(c.take_granted(t2), Some((ip, V)));
        assert!(c.is_empty());
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn claims_are_bounded_and_can_be_cancelled() {
        let t0 = Instant::now();
        let mut c = Claims::default();
        // One MAC gets CLAIMS_PER_MAC slots, however many it asks for.
        for i in 0..CLAIMS_PER_MAC {
            assert!(c.start(t0, IpAddr::from([10, 3, 0, i as u8]), V));
        }
        assert!(!c.start(t0, IpAddr::from([10, 3, 1, 0]), V));
        // Many MACs fill CLAIM_CAP.
        let mac = |i: usize| MacAddr([2, 0, 0, 1, (i >> 8) as u8, i as u8]);
        for i in CLAIMS_PER_MAC..CLAIM_CAP {
            assert!(c.start(t0, IpAddr::from([10, 1, 0, i as u8]), mac(i)));
        }
        assert!(!c.start(t0, IpAddr::from([10, 2, 0, 0]), mac(999)));
        assert_eq!(c.len(), CLAIM_CAP);
        assert!(c.cancel(IpAddr::from([10, 1, 0, 10])));
        assert!(!c.cancel(IpAddr::from([10, 1, 0, 10])));
        assert!(c.start(t0, IpAddr::from([10, 2, 0, 0]), mac(999)));
    }
}
