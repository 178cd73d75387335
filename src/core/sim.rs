//! Test helpers: frame builders, a one-line frame description, and fake
//! hosts that answer ARP and ICMP echo, for in-memory simulations of a LAN,
//! the bridge's [`Nat`](crate::core::nat::Nat) and virtual hosts.
//!
//! The fake hosts know nothing about the overlay: a [`World`] joins them
//! and the bridge through a [`Fabric`], either [`Direct`] (a hub) or the
//! relay simulator in `core::netsim` (edges and a relay exchanging UDP
//! datagrams), with the same LAN and bridge logic either way.

use std::{
    collections::{BTreeMap, VecDeque},
    net::{Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use etherparse::{ArpHardwareId, ArpOperation, EtherType, PacketBuilder};

use crate::core::{
    frame::{
        arp::{self, ArpPacket},
        dhcp::{self, DhcpPacket},
        ethernet::{ethertype, EthernetFrame},
        icmpv6::{self, Icmpv6Packet},
        ipv4::{protocol, Ipv4Packet},
        ipv6::Ipv6Packet,
        udp::UdpPacket,
    },
    mac::MacAddr,
    nat::PacketType,
};

/// Minimum Ethernet frame length without FCS; etherparse does not pad.
pub(crate) const MIN_FRAME: usize = 60;

fn pad(mut v: Vec<u8>) -> Vec<u8> {
    if v.len() < MIN_FRAME {
        v.resize(MIN_FRAME, 0);
    }
    v
}

/// An Ethernet/IPv4 ARP frame.
#[allow(clippy::too_many_arguments)]
pub(crate) fn arp_frame(
    eth_src: MacAddr,
    eth_dst: MacAddr,
    op: u16,
    sha: MacAddr,
    spa: Ipv4Addr,
    tha: MacAddr,
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let pkt = etherparse::ArpPacket::new(
        ArpHardwareId::ETHERNET,
        EtherType::IPV4,
        ArpOperation(op),
        &sha.0,
        &spa.octets(),
        &tha.0,
        &tpa.octets(),
    )
    .unwrap();
    let mut v = Vec::new();
    PacketBuilder::ethernet2(eth_src.0, eth_dst.0)
        .arp(pkt)
        .write(&mut v)
        .unwrap();
    pad(v)
}

/// An ARP request broadcast by `mac`/`ip` for `target`.
pub(crate) fn arp_request(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        mac,
        MacAddr::BROADCAST,
        arp::op::REQUEST,
        mac,
        ip,
        MacAddr::ZERO,
        target,
    )
}

/// An ARP reply from `mac`/`ip` to `dst_mac`/`dst_ip`.
pub(crate) fn arp_reply(mac: MacAddr, ip: Ipv4Addr, dst_mac: MacAddr, dst_ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(mac, dst_mac, arp::op::REPLY, mac, ip, dst_mac, dst_ip)
}

/// An ICMP echo request or reply.
pub(crate) fn icmp_echo(
    src: (MacAddr, Ipv4Addr),
    dst: (MacAddr, Ipv4Addr),
    request: bool,
    seq: u16,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0 .0, dst.0 .0).ipv4(src.1.octets(), dst.1.octets(), 64);
    let b = if request {
        b.icmpv4_echo_request(0x1d, seq)
    } else {
        b.icmpv4_echo_reply(0x1d, seq)
    };
    let mut v = Vec::new();
    b.write(&mut v, b"lanbridge").unwrap();
    pad(v)
}

/// A UDP datagram over IPv4 with its checksum filled in.
pub(crate) fn udp_v4(
    src: (MacAddr, Ipv4Addr, u16),
    dst: (MacAddr, Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src.0 .0, dst.0 .0)
        .ipv4(src.1.octets(), dst.1.octets(), 64)
        .udp(src.2, dst.2)
        .write(&mut v, payload)
        .unwrap();
    pad(v)
}

/// A TCP super-frame as a vnet TAP hands one over: `payload_len` bytes
/// (pattern by position) from `src` to `dst`, ACK|PSH, timestamps, DF,
/// described by a TSO vnet header with `gso_size` 1448 (1428 for IPv6) and
/// a partial checksum (the field holds the pseudo-header sum). Also returns
/// the same frame with its checksum complete, as the far side should see
/// it once segmented and put back together.
pub(crate) fn tcp_super_frame(
    v6: bool,
    src: MacAddr,
    dst: MacAddr,
    seq: u32,
    payload_len: usize,
) -> (crate::core::offload::VnetHdr, Vec<u8>, Vec<u8>) {
    use crate::core::offload::{GsoType, VnetHdr, F_NEEDS_CSUM};
    let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + i / 251) as u8).collect();
    let eth = PacketBuilder::ethernet2(src.0, dst.0);
    let mut v = Vec::new();
    let options = [1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2];
    if v6 {
        let mut a = [0u8; 16];
        a[0] = 0xfd;
        let mut b = a;
        a[15] = 1;
        b[15] = 2;
        eth.ipv6(a, b, 64)
            .tcp(40000, 5201, seq, 65535)
            .ack(7)
            .psh()
            .options_raw(&options)
            .unwrap()
            .write(&mut v, &payload)
            .unwrap();
    } else {
        eth.ipv4([10, 9, 0, 1], [10, 9, 0, 2], 64)
            .tcp(40000, 5201, seq, 65535)
            .ack(7)
            .psh()
            .options_raw(&options)
            .unwrap()
            .write(&mut v, &payload)
            .unwrap();
        // DF, as Linux sends TCP; header checksum again.
        v[20] |= 0x40;
        Ipv4Packet::new_unchecked(&mut v[14..]).fill_checksum();
    }
    let complete = v.clone();
    let l4 = if v6 { 54 } else { 34 };
    let tcp_len = (v.len() - l4) as u32;
    let pseudo = if v6 {
        let p = Ipv6Packet::new_unchecked(&v[14..]);
        crate::core::frame::checksum::pseudo_header_v6(
            &p.src_addr(),
            &p.dst_addr(),
            protocol::TCP,
            tcp_len,
        )
    } else {
        let p = Ipv4Packet::new_unchecked(&v[14..]);
        crate::core::frame::checksum::pseudo_header_v4(
            p.src_addr(),
            p.dst_addr(),
            protocol::TCP,
            tcp_len as u16,
        )
    };
    let sum = crate::core::frame::checksum::fold(pseudo);
    v[l4 + 16..l4 + 18].copy_from_slice(&sum.to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: if v6 { GsoType::TcpV6 } else { GsoType::TcpV4 } as u8,
        hdr_len: (l4 + 32) as u16,
        gso_size: if v6 { 1428 } else { 1448 },
        csum_start: l4 as u16,
        csum_offset: 16,
    };
    (hdr, v, complete)
}

/// A DHCPDISCOVER from `chaddr` (sent by `eth_src`), broadcast flag as
/// given, UDP checksum filled in.
pub(crate) fn dhcp_discover(eth_src: MacAddr, chaddr: MacAddr, broadcast: bool) -> Vec<u8> {
    let mut bootp = vec![0u8; 300];
    bootp[dhcp::field::OP] = dhcp::BOOTREQUEST;
    bootp[dhcp::field::HTYPE] = 1;
    bootp[dhcp::field::HLEN] = 6;
    bootp[dhcp::field::XID].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    if broadcast {
        bootp[dhcp::field::FLAGS].copy_from_slice(&dhcp::FLAG_BROADCAST.to_be_bytes());
    }
    bootp[dhcp::field::CHADDR][..6].copy_from_slice(&chaddr.0);
    // Magic cookie, DHCP message type DISCOVER, end.
    bootp[236..243].copy_from_slice(&[99, 130, 83, 99, 53, 1, 1]);
    bootp[243] = 255;
    udp_v4(
        (eth_src, Ipv4Addr::UNSPECIFIED, dhcp::CLIENT_PORT),
        (MacAddr::BROADCAST, Ipv4Addr::BROADCAST, dhcp::SERVER_PORT),
        &bootp,
    )
}

/// An NDP message (type `msg_type`, 4 bytes after the checksum zero) with
/// `body` (target address etc.) and one link-layer option of `opt_type`.
pub(crate) fn ndp(
    src: (MacAddr, Ipv6Addr),
    dst: (MacAddr, Ipv6Addr),
    msg_type: u8,
    target: Ipv6Addr,
    opt: (u8, MacAddr),
) -> Vec<u8> {
    let mut body = target.octets().to_vec();
    body.extend_from_slice(&[opt.0, 1]);
    body.extend_from_slice(&opt.1 .0);
    let flags = if msg_type == icmpv6::msg::NEIGHBOR_ADVERT {
        [0x60, 0, 0, 0] // solicited, override
    } else {
        [0; 4]
    };
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src.0 .0, dst.0 .0)
        .ipv6(src.1.octets(), dst.1.octets(), 255)
        .icmpv6_raw(msg_type, 0, flags)
        .write(&mut v, &body)
        .unwrap();
    pad(v)
}

/// An ICMPv6 message: `rest` is the 4 bytes after the checksum, `body`
/// what follows (hop limit 255, checksum filled in).
pub(crate) fn icmpv6(
    src: (MacAddr, Ipv6Addr),
    dst: (MacAddr, Ipv6Addr),
    msg_type: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src.0 .0, dst.0 .0)
        .ipv6(src.1.octets(), dst.1.octets(), 255)
        .icmpv6_raw(msg_type, 0, rest)
        .write(&mut v, body)
        .unwrap();
    pad(v)
}

/// A router advertisement from `src` to all nodes: router lifetime 1800 s,
/// a source link-layer option, and an autonomous on-link prefix `prefix`/64.
pub(crate) fn router_advert(src: (MacAddr, Ipv6Addr), prefix: Ipv6Addr) -> Vec<u8> {
    let mut body = vec![0; 8]; // reachable time, retrans timer
    body.extend_from_slice(&[icmpv6::opt::SOURCE_LLA, 1]);
    body.extend_from_slice(&src.0 .0);
    body.extend_from_slice(&[3, 4, 64, 0xc0]); // prefix information, L and A
    body.extend_from_slice(&[0, 0, 0x1c, 0x20, 0, 0, 0x0e, 0x10, 0, 0, 0, 0]);
    body.extend_from_slice(&prefix.octets());
    let all_nodes = (
        MacAddr([0x33, 0x33, 0, 0, 0, 1]),
        "ff02::1".parse().unwrap(),
    );
    icmpv6(
        src,
        all_nodes,
        icmpv6::msg::ROUTER_ADVERT,
        [64, 0, 0x07, 0x08],
        &body,
    )
}

/// A redirect from `src` to `dst`: use `target` (at link-layer address
/// `tlla`) to reach `dest`.
pub(crate) fn redirect(
    src: (MacAddr, Ipv6Addr),
    dst: (MacAddr, Ipv6Addr),
    target: Ipv6Addr,
    dest: Ipv6Addr,
    tlla: MacAddr,
) -> Vec<u8> {
    let mut body = target.octets().to_vec();
    body.extend_from_slice(&dest.octets());
    body.extend_from_slice(&[icmpv6::opt::TARGET_LLA, 1]);
    body.extend_from_slice(&tlla.0);
    icmpv6(src, dst, icmpv6::msg::REDIRECT, [0; 4], &body)
}

/// A UDP datagram over IPv6 with its checksum filled in.
pub(crate) fn udp_v6(
    src: (MacAddr, Ipv6Addr, u16),
    dst: (MacAddr, Ipv6Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(src.0 .0, dst.0 .0)
        .ipv6(src.1.octets(), dst.1.octets(), 64)
        .udp(src.2, dst.2)
        .write(&mut v, payload)
        .unwrap();
    pad(v)
}

/// A DHCPOFFER-like BOOTREPLY from a server at `src` (port 67) broadcast to
/// port 68.
pub(crate) fn dhcp_offer(src: MacAddr, ip: Ipv4Addr) -> Vec<u8> {
    let mut bootp = vec![0u8; 300];
    bootp[dhcp::field::OP] = dhcp::BOOTREPLY;
    bootp[dhcp::field::HTYPE] = 1;
    bootp[dhcp::field::HLEN] = 6;
    bootp[236..243].copy_from_slice(&[99, 130, 83, 99, 53, 1, 2]);
    bootp[243] = 255;
    udp_v4(
        (src, ip, dhcp::SERVER_PORT),
        (MacAddr::BROADCAST, Ipv4Addr::BROADCAST, dhcp::CLIENT_PORT),
        &bootp,
    )
}

/// The same frame with an 802.1Q tag (VLAN `vid`) after the MACs.
pub(crate) fn with_vlan(frame: &[u8], vid: u16) -> Vec<u8> {
    let mut v = frame[..12].to_vec();
    v.extend_from_slice(&ethertype::VLAN.to_be_bytes());
    v.extend_from_slice(&vid.to_be_bytes());
    v.extend_from_slice(&frame[12..]);
    v
}

/// The packet type AF_PACKET would report for `frame` on a NIC with MAC
/// `nic`.
pub(crate) fn packet_type(frame: &[u8], nic: MacAddr) -> PacketType {
    let dst = MacAddr::from_slice(frame).unwrap_or(MacAddr::ZERO);
    if dst.is_broadcast() {
        PacketType::Broadcast
    } else if dst.is_multicast() {
        PacketType::Multicast
    } else if dst == nic {
        PacketType::Host
    } else {
        PacketType::OtherHost
    }
}

/// Names for MACs in descriptions.
pub(crate) type Names<'a> = &'a [(MacAddr, &'a str)];

fn name(mac: MacAddr, names: Names) -> String {
    if mac.is_broadcast() {
        return "bcast".into();
    }
    names
        .iter()
        .find(|(m, _)| *m == mac)
        .map(|(_, n)| n.to_string())
        .unwrap_or_else(|| mac.to_string())
}

/// Every MAC a frame carries where the LAN could learn it: Ethernet
/// source and destination, ARP sender/target hardware addresses, NDP
/// link-layer options.
pub(crate) fn macs_in(frame: &[u8]) -> Vec<MacAddr> {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return vec![];
    };
    let mut out = vec![eth.src_addr(), eth.dst_addr()];
    match eth.ethertype() {
        ethertype::ARP | ethertype::RARP => {
            if let Ok(a) = ArpPacket::new_checked(eth.payload()) {
                out.extend([a.sender_hw_addr(), a.target_hw_addr()]);
            }
        }
        ethertype::IPV6 => {
            if let Ok(ip) = Ipv6Packet::new_checked(eth.payload()) {
                if let Ok((protocol::ICMPV6, off)) = ip.upper_layer() {
                    if let Ok(icmp) = Icmpv6Packet::new_checked(&ip.payload()[off..]) {
                        out.extend(icmp.lla_options().map(|(_, m)| m));
                    }
                }
            }
        }
        _ => {}
    }
    out
}

/// One line describing a frame: MACs, ARP fields, IP addresses, ICMP,
/// DHCP flag and checksum validity.
pub(crate) fn describe(frame: &[u8], names: Names) -> String {
    let Ok(eth) = EthernetFrame::new_checked(frame) else {
        return format!("runt ({} bytes)", frame.len());
    };
    let mut s = format!(
        "{} > {}",
        name(eth.src_addr(), names),
        name(eth.dst_addr(), names)
    );
    if let Some(tci) = eth.vlan_tci() {
        s += &format!(" vlan {}", tci & 0x0fff);
    }
    let payload = eth.payload();
    match eth.ethertype() {
        t @ (ethertype::ARP | ethertype::RARP) => {
            let kind = if t == ethertype::ARP { "ARP" } else { "RARP" };
            match ArpPacket::new_checked(payload) {
                Ok(a) => {
                    let op = match a.operation() {
                        arp::op::REQUEST => "request".to_string(),
                        arp::op::REPLY => "reply".to_string(),
                        o => format!("op {o}"),
                    };
                    s += &format!(
                        " {kind} {op} sha={} spa={} tha={} tpa={}",
                        name(a.sender_hw_addr(), names),
                        a.sender_ip(),
                        name(a.target_hw_addr(), names),
                        a.target_ip()
                    );
                }
                Err(e) => s += &format!(" {kind} ({e})"),
            }
        }
        ethertype::IPV4 => match Ipv4Packet::new_checked(payload) {
            Ok(ip) => {
                s += &format!(" IPv4 {} > {}", ip.src_addr(), ip.dst_addr());
                if !ip.verify_checksum() {
                    s += " (bad ip csum)";
                }
                s += &describe_v4_payload(&ip);
            }
            Err(e) => s += &format!(" IPv4 ({e})"),
        },
        ethertype::IPV6 => match Ipv6Packet::new_checked(payload) {
            Ok(ip) => {
                s += &format!(" IPv6 {} > {}", ip.src_addr(), ip.dst_addr());
                if let Ok((protocol::ICMPV6, off)) = ip.upper_layer() {
                    match Icmpv6Packet::new_checked(&ip.payload()[off..]) {
                        Ok(icmp) => {
                            let kind = match icmp.msg_type() {
                                icmpv6::msg::ROUTER_SOLICIT => "RS".to_string(),
                                icmpv6::msg::ROUTER_ADVERT => "RA".to_string(),
                                icmpv6::msg::NEIGHBOR_SOLICIT => "NS".to_string(),
                                icmpv6::msg::NEIGHBOR_ADVERT => "NA".to_string(),
                                icmpv6::msg::REDIRECT => "redirect".to_string(),
                                t => format!("ICMPv6 type {t}"),
                            };
                            s += &format!(" {kind}");
                            if let Some(t) = icmp.target_addr() {
                                s += &format!(" target={t}");
                            }
                            for (o, m) in icmp.lla_options() {
                                let o = if o == icmpv6::opt::SOURCE_LLA {
                                    "slla"
                                } else {
                                    "tlla"
                                };
                                s += &format!(" {o}={}", name(m, names));
                            }
                            let ok = icmp.verify_checksum(&ip.src_addr(), &ip.dst_addr());
                            s += if ok { " csum ok" } else { " csum BAD" };
                        }
                        Err(e) => s += &format!(" ICMPv6 ({e})"),
                    }
                } else if let Ok((protocol::UDP, off)) = ip.upper_layer() {
                    if let Some(ports) = ip.payload().get(off..off + 4) {
                        let port = |i: usize| u16::from_be_bytes([ports[i], ports[i + 1]]);
                        s += &format!(" UDP {}>{}", port(0), port(2));
                    }
                }
            }
            Err(e) => s += &format!(" IPv6 ({e})"),
        },
        t => s += &format!(" ethertype {t:#06x} len {}", frame.len()),
    }
    s
}

fn describe_v4_payload(ip: &Ipv4Packet<&[u8]>) -> String {
    match ip.protocol() {
        protocol::ICMP => {
            let p = ip.payload();
            match (p.first(), p.get(6..8)) {
                (Some(8), Some(seq)) => format!(" ICMP echo request seq {}", seq[1]),
                (Some(0), Some(seq)) => format!(" ICMP echo reply seq {}", seq[1]),
                (t, _) => format!(" ICMP {t:?}"),
            }
        }
        protocol::UDP => match UdpPacket::new_checked(ip.payload()) {
            Ok(udp) => {
                let mut s = format!(" UDP {}>{}", udp.src_port(), udp.dst_port());
                let ports = [dhcp::CLIENT_PORT, dhcp::SERVER_PORT];
                let is_dhcp = ports.contains(&udp.src_port()) && ports.contains(&udp.dst_port());
                if let Some(d) = DhcpPacket::new_checked(udp.payload())
                    .ok()
                    .filter(|_| is_dhcp)
                {
                    let op = if d.op() == dhcp::BOOTREQUEST {
                        "BOOTREQUEST"
                    } else {
                        "BOOTREPLY"
                    };
                    let chaddr = d.chaddr().map_or("-".to_string(), |m| m.to_string());
                    let flag = if d.broadcast() {
                        "broadcast"
                    } else {
                        "unicast"
                    };
                    s += &format!(" {op} flags={flag} chaddr={chaddr}");
                }
                s += &match udp.checksum() {
                    0 => " csum none".to_string(),
                    c if udp.verify_checksum_v4(ip.src_addr(), ip.dst_addr()) => {
                        format!(" csum {c:#06x} ok")
                    }
                    c => format!(" csum {c:#06x} BAD"),
                };
                s
            }
            Err(e) => format!(" UDP ({e})"),
        },
        p => format!(" proto {p}"),
    }
}

/// A fake IPv4 host: answers ARP requests for its IP and ICMP echo
/// requests, learns from ARP like Linux (RFC 826 merge), and pings.
#[derive(Debug, Clone)]
pub(crate) struct Host {
    pub name: &'static str,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    pub arp_cache: BTreeMap<Ipv4Addr, MacAddr>,
    /// Echo requests waiting for ARP resolution: (destination, sequence).
    pending: Vec<(Ipv4Addr, u16)>,
    /// Echo replies received: (from, sequence).
    pub echo_replies: Vec<(Ipv4Addr, u16)>,
}

impl Host {
    pub(crate) fn new(name: &'static str, mac: MacAddr, ip: Ipv4Addr) -> Self {
        Host {
            name,
            mac,
            ip,
            arp_cache: BTreeMap::new(),
            pending: Vec::new(),
            echo_replies: Vec::new(),
        }
    }

    /// Starts a ping: an echo request if `dst` is resolved, else an ARP
    /// request (the echo follows the reply).
    pub(crate) fn ping(&mut self, dst: Ipv4Addr, seq: u16) -> Vec<Vec<u8>> {
        match self.arp_cache.get(&dst) {
            Some(&mac) => vec![icmp_echo((self.mac, self.ip), (mac, dst), true, seq)],
            None => {
                self.pending.push((dst, seq));
                vec![arp_request(self.mac, self.ip, dst)]
            }
        }
    }

    /// Announces its address (RFC 5227 section 2.3: a gratuitous ARP
    /// request, sender and target IP its own), as a host does when it
    /// takes an address.
    pub(crate) fn announce(&mut self) -> Vec<Vec<u8>> {
        vec![arp_request(self.mac, self.ip, self.ip)]
    }

    /// Takes a frame off the wire; returns the frames it sends in answer.
    pub(crate) fn receive(&mut self, frame: &[u8]) -> Vec<Vec<u8>> {
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            return vec![];
        };
        if eth.dst_addr() != self.mac && !eth.dst_addr().is_broadcast() {
            return vec![];
        }
        match eth.ethertype() {
            ethertype::ARP => self.receive_arp(eth.payload()),
            ethertype::IPV4 => self.receive_ipv4(eth.payload()),
            _ => vec![],
        }
    }

    fn receive_arp(&mut self, payload: &[u8]) -> Vec<Vec<u8>> {
        let Ok(a) = ArpPacket::new_checked(payload) else {
            return vec![];
        };
        let for_me = a.target_ip() == self.ip;
        if for_me || self.arp_cache.contains_key(&a.sender_ip()) {
            self.arp_cache.insert(a.sender_ip(), a.sender_hw_addr());
        }
        let mut out = vec![];
        if for_me && a.operation() == arp::op::REQUEST {
            out.push(arp_reply(
                self.mac,
                self.ip,
                a.sender_hw_addr(),
                a.sender_ip(),
            ));
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(ip, _)| self.arp_cache.contains_key(ip));
        self.pending = waiting;
        for (ip, seq) in ready {
            out.extend(self.ping(ip, seq));
        }
        out
    }

    fn receive_ipv4(&mut self, payload: &[u8]) -> Vec<Vec<u8>> {
        let Ok(ip) = Ipv4Packet::new_checked(payload) else {
            return vec![];
        };
        if ip.dst_addr() != self.ip || ip.protocol() != protocol::ICMP {
            return vec![];
        }
        let p = ip.payload();
        let (Some(&kind), Some(seq)) = (p.first(), p.get(6..8)) else {
            return vec![];
        };
        let seq = u16::from_be_bytes([seq[0], seq[1]]);
        match kind {
            8 => match self.arp_cache.get(&ip.src_addr()) {
                Some(&mac) => vec![icmp_echo(
                    (self.mac, self.ip),
                    (mac, ip.src_addr()),
                    false,
                    seq,
                )],
                None => vec![], // a real host would ARP first; not needed here
            },
            0 => {
                self.echo_replies.push((ip.src_addr(), seq));
                vec![]
            }
            _ => vec![],
        }
    }
}

/// Where a frame in a [`World`] is travelling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    /// On the physical LAN (a hub: every LAN host and the bridge's NIC).
    Lan,
    /// On the overlay: virtual hosts and the bridge, joined by a [`Fabric`].
    Overlay,
}

/// The name the bridge has as a sender in a [`World`].
pub(crate) const BRIDGE: &str = "bridge";

/// What a [`Fabric`] needs to trace its steps.
pub(crate) struct Cx<'a> {
    pub now: Instant,
    /// The clock's fixed base; trace lines show `now - start`.
    pub start: Instant,
    /// Whether trace lines start with `t=..ms`.
    pub stamp: bool,
    pub names: Names<'a>,
    pub trace: &'a mut Vec<String>,
}

impl Cx<'_> {
    /// Appends one trace line.
    pub(crate) fn log(&mut self, line: impl std::fmt::Display) {
        let line = if self.stamp {
            format!("t={}ms {line}", (self.now - self.start).as_millis())
        } else {
            line.to_string()
        };
        self.trace.push(line);
    }

    /// Describes a frame with the world's MAC names.
    pub(crate) fn describe(&self, frame: &[u8]) -> String {
        describe(frame, self.names)
    }

    /// The name of a MAC, as in descriptions.
    pub(crate) fn name(&self, mac: MacAddr) -> String {
        name(mac, self.names)
    }
}

/// What carries frames between the virtual hosts and the bridge.
pub(crate) trait Fabric {
    /// The trace line for `from` putting a frame (described as `desc`) on
    /// the overlay.
    fn sent_line(&self, from: &str, desc: &str) -> String {
        format!("overlay {from:>6}: {desc}")
    }

    /// Carries `frame` from `from` (a virtual host or [`BRIDGE`]); returns
    /// the frames that come out, each with its recipient (a virtual host or
    /// [`BRIDGE`]).
    fn carry(
        &mut self,
        cx: &mut Cx<'_>,
        from: &'static str,
        frame: &[u8],
    ) -> Vec<(&'static str, Vec<u8>)>;
}

/// The overlay as a plain hub: every frame reaches every virtual host and
/// the bridge except its sender.
pub(crate) struct Direct {
    hosts: Vec<&'static str>,
}

impl Fabric for Direct {
    fn carry(
        &mut self,
        _cx: &mut Cx<'_>,
        from: &'static str,
        frame: &[u8],
    ) -> Vec<(&'static str, Vec<u8>)> {
        self.hosts
            .iter()
            .chain([&BRIDGE])
            .filter(|&&h| h != from)
            .map(|&h| (h, frame.to_vec()))
            .collect()
    }
}

/// A LAN with fake hosts, the bridge's [`Nat`](crate::core::nat::Nat), and
/// fake virtual hosts joined by a [`Fabric`] ([`Direct`] unless given),
/// driven by a hand-moved clock. Every step is traced as one line.
pub(crate) struct World<F: Fabric = Direct> {
    pub nat: crate::core::nat::Nat,
    pub lan: Vec<Host>,
    pub overlay: Vec<Host>,
    pub fabric: F,
    pub now: Instant,
    /// The clock's fixed base.
    pub start: Instant,
    /// Whether trace lines start with `t=..ms`.
    pub stamp: bool,
    pub trace: Vec<String>,
    /// Every frame that travelled on the LAN.
    pub lan_wire: Vec<Vec<u8>>,
    names: Vec<(MacAddr, &'static str)>,
}

/// Frames waiting to travel: side, sender, bytes.
pub(crate) type Queue = VecDeque<(Side, &'static str, Vec<u8>)>;

impl World<Direct> {
    pub(crate) fn new(nat: crate::core::nat::Nat, lan: Vec<Host>, overlay: Vec<Host>) -> Self {
        let hosts = overlay.iter().map(|h| h.name).collect();
        World::with_fabric(Direct { hosts }, nat, lan, overlay)
    }
}

impl<F: Fabric> World<F> {
    /// A world whose virtual hosts and bridge are joined by `fabric`.
    pub(crate) fn with_fabric(
        fabric: F,
        nat: crate::core::nat::Nat,
        lan: Vec<Host>,
        overlay: Vec<Host>,
    ) -> Self {
        let mut names = vec![(nat.config().host_mac, "N")];
        names.extend(lan.iter().chain(&overlay).map(|h| (h.mac, h.name)));
        let start = Instant::now();
        World {
            nat,
            lan,
            overlay,
            fabric,
            now: start,
            start,
            stamp: false,
            trace: Vec::new(),
            lan_wire: Vec::new(),
            names,
        }
    }

    /// Describes a frame with this world's MAC names.
    pub(crate) fn describe(&self, frame: &[u8]) -> String {
        describe(frame, &self.names)
    }

    /// The tracing context and the fabric, borrowed together.
    pub(crate) fn split(&mut self) -> (&mut F, Cx<'_>) {
        let cx = Cx {
            now: self.now,
            start: self.start,
            stamp: self.stamp,
            names: &self.names,
            trace: &mut self.trace,
        };
        (&mut self.fabric, cx)
    }

    /// Appends one trace line.
    pub(crate) fn log(&mut self, line: impl std::fmt::Display) {
        self.split().1.log(line)
    }

    /// Lets host `who` on `side` act (e.g. `|h| h.ping(..)`), then runs the
    /// world until no frame is in flight.
    pub(crate) fn act(&mut self, side: Side, who: &str, f: impl FnOnce(&mut Host) -> Vec<Vec<u8>>) {
        let hosts = match side {
            Side::Lan => &mut self.lan,
            Side::Overlay => &mut self.overlay,
        };
        let host = hosts
            .iter_mut()
            .find(|h| h.name == who)
            .expect("no such host");
        let name = host.name;
        let frames = f(host);
        self.log(format!("-- {name} acts"));
        self.settle(frames.into_iter().map(|fr| (side, name, fr)).collect());
    }

    /// Queues the probes the bridge wants on the LAN now.
    fn queue_probes(&mut self, queue: &mut Queue) {
        while let Some(probe) = self.nat.poll_transmit(self.now) {
            queue.push_back((Side::Lan, BRIDGE, probe.as_bytes().to_vec()));
        }
    }

    /// Hands frames that came out of the fabric to their recipients,
    /// queueing what they send in answer.
    pub(crate) fn arrive(&mut self, arrived: Vec<(&'static str, Vec<u8>)>, queue: &mut Queue) {
        for (to, mut frame) in arrived {
            if to == BRIDGE {
                let verdict = self.nat.handle_overlay(self.now, false, &mut frame);
                self.log(format!("          nat: {verdict:?}"));
                if verdict == crate::core::nat::Verdict::Forward {
                    queue.push_back((Side::Lan, BRIDGE, frame));
                }
                self.queue_probes(queue);
            } else {
                let host = self
                    .overlay
                    .iter_mut()
                    .find(|h| h.name == to)
                    .expect("the fabric delivered to an unknown host");
                queue.extend(
                    host.receive(&frame)
                        .into_iter()
                        .map(|r| (Side::Overlay, to, r)),
                );
            }
        }
    }

    /// Moves the clock to `until`, running the bridge's timers when due on
    /// the way: probes it puts on the LAN (and what they cause), claims it
    /// grants, entries that age out.
    pub(crate) fn run_bridge_timers(&mut self, until: Instant) {
        for _ in 0..1000 {
            let Some(due) = self.nat.next_deadline().filter(|&t| t <= until) else {
                self.now = self.now.max(until);
                return;
            };
            self.now = self.now.max(due);
            self.nat.expire(self.now);
            let mut queue = Queue::new();
            while let Some(probe) = self.nat.poll_transmit(self.now) {
                queue.push_back((Side::Lan, BRIDGE, probe.as_bytes().to_vec()));
            }
            self.settle(queue);
        }
        panic!("the bridge's timers do not settle");
    }

    /// Runs the world until no frame is in flight.
    pub(crate) fn settle(&mut self, mut queue: Queue) {
        let mut steps = 0;
        while let Some((side, from, frame)) = queue.pop_front() {
            steps += 1;
            assert!(steps < 1000, "simulation does not settle");
            self.now += Duration::from_millis(1);
            let desc = self.describe(&frame);
            match side {
                Side::Lan => {
                    self.log(format!("lan     {from:>6}: {desc}"));
                    self.lan_wire.push(frame.clone());
                    for h in self.lan.iter_mut().filter(|h| h.name != from) {
                        let name = h.name;
                        queue.extend(h.receive(&frame).into_iter().map(|r| (side, name, r)));
                    }
                    if from == BRIDGE {
                        // The bridge's socket never sees what it injected itself.
                        continue;
                    }
                    let mut out = frame;
                    let meta = crate::core::nat::LanMeta {
                        pkt_type: packet_type(&out, self.nat.config().host_mac),
                        csum_partial: false,
                        vlan: None,
                    };
                    let verdict = self.nat.handle_lan(self.now, meta, &mut out);
                    self.log(format!("          nat: {verdict:?}"));
                    if verdict == crate::core::nat::Verdict::Forward {
                        queue.push_back((Side::Overlay, BRIDGE, out));
                    }
                    self.queue_probes(&mut queue);
                }
                Side::Overlay => {
                    let line = self.fabric.sent_line(from, &desc);
                    self.log(line);
                    let (fabric, mut cx) = self.split();
                    let arrived = fabric.carry(&mut cx, from, &frame);
                    self.arrive(arrived, &mut queue);
                }
            }
        }
    }
}
