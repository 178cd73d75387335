//! The bridge's MAC translation: the seed's rules 1-5 plus DESIGN.md's
//! additions, as a pure state machine over frame buffers.
//!
//! A bridge host on a physical LAN has NIC MAC `N`. Frames captured on the
//! NIC go to the overlay ([`Nat::handle_lan`]); frames from the overlay go
//! onto the LAN ([`Nat::handle_overlay`]). Both rewrite in the caller's
//! buffer and return a [`Verdict`]; nothing here does I/O or reads a clock.
//!
//! # Invariant
//! The LAN only ever sees `N`: every frame [`Nat::handle_overlay`] forwards
//! has Ethernet source `N`, an ARP sender hardware address `N`, NDP
//! source/target link-layer options `N`, and a unicast destination that was
//! seen as a source on the LAN. Virtual MACs never appear on the LAN.
//!
//! # LAN → overlay ([`Nat::handle_lan`])
//! * `PACKET_OUTGOING` → [`DropReason::Outgoing`]. On Linux an AF_PACKET send
//!   goes out the wire, never into the host, so forwarding the host's own
//!   frames would only teach virtual hosts to send to `N`.
//! * `PACKET_OTHERHOST` → [`DropReason::NotForUs`] (rule 2). A real NIC
//!   filters these in hardware; nothing here depends on seeing them.
//! * Learn: a unicast source MAC other than `N` goes into the LAN-MAC table;
//!   the source IP (ARP sender IP, IPv4/IPv6 source; never unspecified) into
//!   the live-on-LAN set, which also evicts that IP from the IP→MAC table.
//! * Broadcast/multicast → forward, destination unchanged (rule 1).
//! * Unicast not to `N` → [`DropReason::NotForUs`] (rule 2).
//! * To `N`: only ARP, RARP, IPv4, IPv6, else [`DropReason::EtherType`]
//!   (rule 3); destination IP one of the host's own →
//!   [`DropReason::OwnAddress`] (rule 4); else the IP→MAC table gives the
//!   virtual MAC, written to the Ethernet destination and, for ARP, to the
//!   target hardware address *only if it was `N`* (requests carry zeros);
//!   no entry → [`DropReason::UnknownIp`] (rule 5).
//! * LAN hosts keep their own MACs as source, so two bridges on two LANs
//!   on one relay make one subnet.
//!
//! # Overlay → LAN ([`Nat::handle_overlay`])
//! * Source MAC not unicast → [`DropReason::BadSourceMac`]; `N` or seen on
//!   our LAN → [`DropReason::Loop`].
//! * Learn source IP → source MAC (ARP sender IP, IPv4/IPv6 source), unless
//!   the IP is the host's own or live on the LAN → [`DropReason::Spoofed`].
//! * Destination `N`, or destination IP one of the host's own →
//!   [`DropReason::ForHost`]: an AF_PACKET socket cannot inject into the
//!   host's own stack (a send goes out the wire). [`Nat::take_for_host_notice`]
//!   lets the driver log that once.
//! * Unicast destination not in the LAN-MAC table →
//!   [`DropReason::UnknownUnicast`] (the relay floods unknown unicast).
//! * Rewrite: Ethernet source and ARP sender hardware address → `N`; NDP
//!   source/target link-layer options → `N` and the ICMPv6 checksum
//!   recomputed; DHCP client requests (UDP 68→67, BOOTREQUEST) get the BOOTP
//!   broadcast flag so the server's answer comes back broadcast, with the UDP
//!   checksum updated incrementally. A zero UDP checksum stays zero, and a
//!   *partial* checksum (`csum_partial`, vnet `NEEDS_CSUM`) is left alone: it
//!   holds only the pseudo-header sum and the kernel sums the payload later.
//!
//! # Bounded tables
//! The IP→MAC table, the LAN-MAC table and the live-on-LAN set each have a
//! cap and a maximum age. When full, the least recently refreshed entry is
//! evicted and counted ([`NatStats`]). Under a flood of fake addresses real
//! entries get evicted too; they are learned again from the next frame that
//! carries them. Expiry runs lazily at the start of each `handle_*` call
//! (amortised O(1)) and on [`Nat::expire`]; [`Nat::next_deadline`] tells a
//! driver when the next entry would age out.
//!
//! References: RFC 826 (ARP), RFC 903 (RARP), RFC 2131 (DHCP, broadcast
//! flag), RFC 4861 (NDP), RFC 1624 (incremental checksum update).

use std::{
    collections::{BTreeMap, HashMap},
    hash::Hash,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, Instant},
};

use crate::core::{
    drop::{DropCounters, DropReason},
    frame::{
        arp::ArpPacket,
        dhcp::{self, DhcpPacket},
        ethernet::{ethertype, EthernetFrame},
        icmpv6::Icmpv6Packet,
        ipv4::{protocol, Ipv4Packet},
        ipv6::Ipv6Packet,
        udp::UdpPacket,
    },
    mac::MacAddr,
};

/// The packet type AF_PACKET reports for a captured frame (`sll_pkttype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketType {
    /// Unicast to the NIC's own MAC (`PACKET_HOST`).
    Host,
    /// Broadcast (`PACKET_BROADCAST`).
    Broadcast,
    /// Multicast (`PACKET_MULTICAST`).
    Multicast,
    /// Unicast to another MAC (`PACKET_OTHERHOST`).
    OtherHost,
    /// Sent by this host (`PACKET_OUTGOING`).
    Outgoing,
}

/// What the capture socket says about a LAN frame besides its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LanMeta {
    /// The AF_PACKET packet type.
    pub pkt_type: PacketType,
    /// The transport checksum is still partial (vnet `NEEDS_CSUM`,
    /// `TP_STATUS_CSUMNOTREADY`).
    pub csum_partial: bool,
}

/// What to do with a frame after [`Nat`] has looked at (and maybe rewritten)
/// it.
#[must_use]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) buffer on: to the overlay from `handle_lan`, onto
    /// the LAN from `handle_overlay`.
    Forward,
    /// Drop it; the reason is already counted.
    Drop(DropReason),
}

/// Sizes and ages of the tables, and the NIC's MAC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// The bridged NIC's MAC (`N`).
    pub host_mac: MacAddr,
    /// Most IP→MAC entries learned from the overlay.
    pub ip_table_cap: usize,
    /// Age after which an IP→MAC entry is forgotten.
    pub ip_max_age: Duration,
    /// Most MACs remembered as seen on the LAN.
    pub lan_mac_cap: usize,
    /// Age after which a LAN MAC is forgotten.
    pub lan_mac_max_age: Duration,
    /// Most IPs remembered as live on the LAN (spoofing guard).
    pub lan_ip_cap: usize,
    /// Age after which a live-on-LAN IP is forgotten.
    pub lan_ip_max_age: Duration,
}

impl NatConfig {
    /// Defaults: 4096 entries and 300 s for every table.
    pub fn new(host_mac: MacAddr) -> Self {
        const CAP: usize = 4096;
        const AGE: Duration = Duration::from_secs(300);
        NatConfig {
            host_mac,
            ip_table_cap: CAP,
            ip_max_age: AGE,
            lan_mac_cap: CAP,
            lan_mac_max_age: AGE,
            lan_ip_cap: CAP,
            lan_ip_max_age: AGE,
        }
    }
}

/// One IP→MAC entry learned from the overlay, for a status display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpEntry {
    /// The virtual host's IP.
    pub ip: IpAddr,
    /// Its MAC on the overlay.
    pub mac: MacAddr,
    /// Time since a frame last refreshed the entry.
    pub age: Duration,
}

/// Forwarding and table counters (drops are in [`Nat::counters`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NatStats {
    /// Frames forwarded LAN → overlay.
    pub lan_forwarded: u64,
    /// Frames forwarded overlay → LAN.
    pub overlay_forwarded: u64,
    /// DHCP requests that got the broadcast flag set.
    pub dhcp_broadcast_set: u64,
    /// NDP messages whose link-layer options were rewritten.
    pub ndp_rewritten: u64,
    /// IP→MAC entries evicted because the table was full.
    pub ip_evictions: u64,
    /// LAN MACs evicted because the table was full.
    pub lan_mac_evictions: u64,
    /// Live-on-LAN IPs evicted because the set was full.
    pub lan_ip_evictions: u64,
}

/// Entries refreshed more recently than this are not re-stamped, which
/// keeps the per-frame cost of a known source to one hash lookup. Ages are
/// therefore exact to within this granularity.
const REFRESH_GRANULARITY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Slot<V> {
    value: V,
    last_seen: Instant,
    seq: u64,
}

/// A map with a cap and a maximum age; evicts the least recently refreshed
/// entry when full. `order` holds keys by refresh sequence, oldest first.
#[derive(Debug, Clone)]
struct Table<K, V> {
    map: HashMap<K, Slot<V>>,
    order: BTreeMap<u64, K>,
    next_seq: u64,
    cap: usize,
    max_age: Duration,
    evictions: u64,
}

impl<K: Hash + Eq + Copy, V: PartialEq + Copy> Table<K, V> {
    fn new(cap: usize, max_age: Duration) -> Self {
        Table {
            map: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            cap: cap.max(1),
            max_age,
            evictions: 0,
        }
    }

    fn is_live(&self, slot: &Slot<V>, now: Instant) -> bool {
        now.saturating_duration_since(slot.last_seen) < self.max_age
    }

    /// Inserts or refreshes; true if the key was new.
    // HOT PATH
    fn touch(&mut self, now: Instant, key: K, value: V) -> bool {
        if let Some(slot) = self.map.get_mut(&key) {
            if slot.value == value
                && now.saturating_duration_since(slot.last_seen) < REFRESH_GRANULARITY
            {
                return false;
            }
            self.order.remove(&slot.seq);
            slot.value = value;
            slot.last_seen = now;
            slot.seq = self.next_seq;
            self.order.insert(self.next_seq, key);
            self.next_seq += 1;
            return false;
        }
        if self.map.len() >= self.cap {
            if let Some((_, old)) = self.order.pop_first() {
                self.map.remove(&old);
                self.evictions += 1;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.map.insert(
            key,
            Slot {
                value,
                last_seen: now,
                seq,
            },
        );
        self.order.insert(seq, key);
        true
    }

    fn get(&self, now: Instant, key: &K) -> Option<V> {
        self.map
            .get(key)
            .filter(|s| self.is_live(s, now))
            .map(|s| s.value)
    }

    fn contains(&self, now: Instant, key: &K) -> bool {
        self.get(now, key).is_some()
    }

    fn remove(&mut self, key: &K) {
        if let Some(slot) = self.map.remove(key) {
            self.order.remove(&slot.seq);
        }
    }

    /// Drops aged-out entries from the front of the order; returns how many.
    fn expire(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some((&seq, key)) = self.order.first_key_value() {
            let live = self.map.get(key).is_some_and(|s| self.is_live(s, now));
            if live {
                break;
            }
            let key = *key;
            self.order.remove(&seq);
            self.map.remove(&key);
            n += 1;
        }
        n
    }

    fn next_deadline(&self) -> Option<Instant> {
        let (_, key) = self.order.first_key_value()?;
        Some(self.map.get(key)?.last_seen + self.max_age)
    }

    fn len(&self) -> usize {
        self.map.len()
    }

    /// Live entries, least recently refreshed first.
    fn iter(&self, now: Instant) -> impl Iterator<Item = (K, V, Duration)> + '_ {
        self.order.values().filter_map(move |k| {
            let s = self.map.get(k)?;
            self.is_live(s, now)
                .then(|| (*k, s.value, now.saturating_duration_since(s.last_seen)))
        })
    }
}

/// The L3 facts the rules need, read once per frame.
#[derive(Clone, Copy, Debug)]
enum L3 {
    /// ARP or RARP over Ethernet/IPv4.
    Arp {
        spa: Ipv4Addr,
        tpa: Ipv4Addr,
        tha: MacAddr,
    },
    Ipv4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
    },
    Ipv6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
    },
    /// Any other EtherType.
    Other,
}

impl L3 {
    fn src_ip(&self) -> Option<IpAddr> {
        match *self {
            L3::Arp { spa, .. } => Some(spa.into()),
            L3::Ipv4 { src, .. } => Some(src.into()),
            L3::Ipv6 { src, .. } => Some(src.into()),
            L3::Other => None,
        }
    }

    fn dst_ip(&self) -> Option<IpAddr> {
        match *self {
            L3::Arp { tpa, .. } => Some(tpa.into()),
            L3::Ipv4 { dst, .. } => Some(dst.into()),
            L3::Ipv6 { dst, .. } => Some(dst.into()),
            L3::Other => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Parsed {
    dst: MacAddr,
    src: MacAddr,
    /// Offset of the L3 header (14, or 18 behind an 802.1Q tag).
    l3_off: usize,
    l3: L3,
}

/// Reads the Ethernet and L3 headers; any cut or bad header is `Malformed`.
// HOT PATH
fn parse(frame: &[u8]) -> Result<Parsed, DropReason> {
    let eth = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Malformed)?;
    let payload = eth.payload();
    let l3 = match eth.ethertype() {
        ethertype::ARP | ethertype::RARP => {
            let arp = ArpPacket::new_checked(payload).map_err(|_| DropReason::Malformed)?;
            L3::Arp {
                spa: arp.sender_ip(),
                tpa: arp.target_ip(),
                tha: arp.target_hw_addr(),
            }
        }
        ethertype::IPV4 => {
            let ip = Ipv4Packet::new_checked(payload).map_err(|_| DropReason::Malformed)?;
            L3::Ipv4 {
                src: ip.src_addr(),
                dst: ip.dst_addr(),
            }
        }
        ethertype::IPV6 => {
            let ip = Ipv6Packet::new_checked(payload).map_err(|_| DropReason::Malformed)?;
            L3::Ipv6 {
                src: ip.src_addr(),
                dst: ip.dst_addr(),
            }
        }
        _ => L3::Other,
    };
    Ok(Parsed {
        dst: eth.dst_addr(),
        src: eth.src_addr(),
        l3_off: eth.header_len(),
        l3,
    })
}

/// A source IP worth learning: a real unicast address.
fn learnable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast()),
        IpAddr::V6(v6) => !(v6.is_unspecified() || v6.is_multicast()),
    }
}

/// Whether the "frame for the host itself" notice is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Notice {
    Never,
    Pending,
    Taken,
}

/// The bridge's MAC-translation engine. See the module docs for the rules.
#[derive(Debug, Clone)]
pub struct Nat {
    config: NatConfig,
    host_v4: Vec<Ipv4Addr>,
    host_v6: Vec<Ipv6Addr>,
    /// IP → virtual MAC, learned from the overlay.
    ip_table: Table<IpAddr, MacAddr>,
    /// MACs seen as sources on the LAN.
    lan_macs: Table<MacAddr, ()>,
    /// IPs seen as sources on the LAN (spoofing guard).
    lan_ips: Table<IpAddr, ()>,
    counters: DropCounters,
    stats: NatStats,
    for_host: Notice,
}

impl Nat {
    /// A bridge with empty tables and no host addresses yet.
    pub fn new(config: NatConfig) -> Self {
        Nat {
            ip_table: Table::new(config.ip_table_cap, config.ip_max_age),
            lan_macs: Table::new(config.lan_mac_cap, config.lan_mac_max_age),
            lan_ips: Table::new(config.lan_ip_cap, config.lan_ip_max_age),
            config,
            host_v4: Vec::new(),
            host_v6: Vec::new(),
            counters: DropCounters::default(),
            stats: NatStats::default(),
            for_host: Notice::Never,
        }
    }

    /// Replaces the bridge host's own addresses (the driver follows address
    /// changes). Entries learned from the overlay for these IPs are removed.
    pub fn set_host_addrs(&mut self, v4: &[Ipv4Addr], v6: &[Ipv6Addr]) {
        self.host_v4 = v4.to_vec();
        self.host_v6 = v6.to_vec();
        for ip in v4
            .iter()
            .map(|&a| IpAddr::from(a))
            .chain(v6.iter().map(|&a| a.into()))
        {
            self.ip_table.remove(&ip);
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NatConfig {
        &self.config
    }

    fn is_host_ip(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => self.host_v4.contains(&a),
            IpAddr::V6(a) => self.host_v6.contains(&a),
        }
    }

    /// A frame captured on the NIC, to go to the overlay. Rewrites `frame`
    /// in place; on [`Verdict::Forward`] send it to the overlay.
    pub fn handle_lan(&mut self, now: Instant, meta: LanMeta, frame: &mut [u8]) -> Verdict {
        self.expire(now);
        match self.lan_inner(now, meta, frame) {
            Ok(()) => {
                self.stats.lan_forwarded += 1;
                Verdict::Forward
            }
            Err(reason) => self.dropped(reason),
        }
    }

    fn lan_inner(
        &mut self,
        now: Instant,
        meta: LanMeta,
        frame: &mut [u8],
    ) -> Result<(), DropReason> {
        match meta.pkt_type {
            PacketType::Outgoing => return Err(DropReason::Outgoing),
            PacketType::OtherHost => return Err(DropReason::NotForUs),
            PacketType::Host | PacketType::Broadcast | PacketType::Multicast => {}
        }
        let n = self.config.host_mac;
        let p = parse(frame)?;
        if p.src.is_unicast() && p.src != n {
            self.lan_macs.touch(now, p.src, ());
            if let Some(ip) =
                p.l3.src_ip()
                    .filter(|&ip| learnable(ip) && !self.is_host_ip(ip))
            {
                if self.lan_ips.touch(now, ip, ()) {
                    // Live on the LAN wins over an overlay claim.
                    self.ip_table.remove(&ip);
                }
            }
        }
        // Rule 1.
        if p.dst.is_multicast() {
            return Ok(());
        }
        // Rule 2.
        if p.dst != n {
            return Err(DropReason::NotForUs);
        }
        // Rule 3.
        let dst_ip = p.l3.dst_ip().ok_or(DropReason::EtherType)?;
        // Rule 4.
        if self.is_host_ip(dst_ip) {
            return Err(DropReason::OwnAddress);
        }
        // Rule 5.
        let mac = self
            .ip_table
            .get(now, &dst_ip)
            .ok_or(DropReason::UnknownIp)?;
        let mut eth = EthernetFrame::new_unchecked(&mut *frame);
        eth.set_dst_addr(mac);
        if let L3::Arp { tha, .. } = p.l3 {
            if tha == n {
                ArpPacket::new_unchecked(&mut frame[p.l3_off..]).set_target_hw_addr(mac);
            }
        }
        Ok(())
    }

    /// A frame from the overlay, to go onto the LAN. `csum_partial` says its
    /// transport checksum is still partial. Rewrites `frame` in place; on
    /// [`Verdict::Forward`] inject it on the NIC.
    pub fn handle_overlay(
        &mut self,
        now: Instant,
        csum_partial: bool,
        frame: &mut [u8],
    ) -> Verdict {
        self.expire(now);
        match self.overlay_inner(now, csum_partial, frame) {
            Ok(()) => {
                self.stats.overlay_forwarded += 1;
                Verdict::Forward
            }
            Err(reason) => self.dropped(reason),
        }
    }

    fn overlay_inner(
        &mut self,
        now: Instant,
        csum_partial: bool,
        frame: &mut [u8],
    ) -> Result<(), DropReason> {
        let n = self.config.host_mac;
        let p = parse(frame)?;
        if !p.src.is_unicast() {
            return Err(DropReason::BadSourceMac);
        }
        if p.src == n || self.lan_macs.contains(now, &p.src) {
            return Err(DropReason::Loop);
        }
        if let Some(ip) = p.l3.src_ip().filter(|&ip| learnable(ip)) {
            if self.is_host_ip(ip) || self.lan_ips.contains(now, &ip) {
                return Err(DropReason::Spoofed);
            }
            self.ip_table.touch(now, ip, p.src);
        }
        if p.dst == n || p.l3.dst_ip().is_some_and(|ip| self.is_host_ip(ip)) {
            return Err(DropReason::ForHost);
        }
        if !p.dst.is_multicast() && !self.lan_macs.contains(now, &p.dst) {
            return Err(DropReason::UnknownUnicast);
        }
        // Check and rewrite L4 before the Ethernet header, so that a
        // malformed NDP message is dropped whole.
        match p.l3 {
            L3::Arp { .. } => {
                ArpPacket::new_unchecked(&mut frame[p.l3_off..]).set_sender_hw_addr(n);
            }
            L3::Ipv4 { .. } => {
                if set_dhcp_broadcast(&mut frame[p.l3_off..], csum_partial) {
                    self.stats.dhcp_broadcast_set += 1;
                }
            }
            L3::Ipv6 { .. } => {
                if rewrite_ndp(&mut frame[p.l3_off..], n, csum_partial)? {
                    self.stats.ndp_rewritten += 1;
                }
            }
            L3::Other => {}
        }
        EthernetFrame::new_unchecked(&mut *frame).set_src_addr(n);
        Ok(())
    }

    fn dropped(&mut self, reason: DropReason) -> Verdict {
        self.counters.add(reason);
        if reason == DropReason::ForHost && self.for_host == Notice::Never {
            self.for_host = Notice::Pending;
        }
        Verdict::Drop(reason)
    }

    /// True exactly once: on the first call after the first
    /// [`DropReason::ForHost`] drop, so the driver can log (once) that
    /// frames for the bridge host itself cannot be delivered through
    /// AF_PACKET.
    pub fn take_for_host_notice(&mut self) -> bool {
        if self.for_host == Notice::Pending {
            self.for_host = Notice::Taken;
            true
        } else {
            false
        }
    }

    /// Forgets aged-out entries in every table; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.ip_table.expire(now) + self.lan_macs.expire(now) + self.lan_ips.expire(now)
    }

    /// When the next entry ages out, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.ip_table.next_deadline(),
            self.lan_macs.next_deadline(),
            self.lan_ips.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Drops per reason.
    pub fn counters(&self) -> &DropCounters {
        &self.counters
    }

    /// Forwarding counts, rewrites and evictions.
    pub fn stats(&self) -> NatStats {
        NatStats {
            ip_evictions: self.ip_table.evictions,
            lan_mac_evictions: self.lan_macs.evictions,
            lan_ip_evictions: self.lan_ips.evictions,
            ..self.stats
        }
    }

    /// The virtual MAC learned for `ip`, if any.
    pub fn lookup(&self, now: Instant, ip: IpAddr) -> Option<MacAddr> {
        self.ip_table.get(now, &ip)
    }

    /// IP→MAC entries learned from the overlay, least recently refreshed
    /// first.
    pub fn ip_entries(&self, now: Instant) -> impl Iterator<Item = IpEntry> + '_ {
        self.ip_table
            .iter(now)
            .map(|(ip, mac, age)| IpEntry { ip, mac, age })
    }

    /// MACs seen on the LAN with their ages, least recently refreshed first.
    pub fn lan_macs(&self, now: Instant) -> impl Iterator<Item = (MacAddr, Duration)> + '_ {
        self.lan_macs.iter(now).map(|(m, (), age)| (m, age))
    }

    /// IPs seen live on the LAN with their ages, least recently refreshed
    /// first.
    pub fn lan_ips(&self, now: Instant) -> impl Iterator<Item = (IpAddr, Duration)> + '_ {
        self.lan_ips.iter(now).map(|(ip, (), age)| (ip, age))
    }

    /// Entries held per table (IP→MAC, LAN MACs, live LAN IPs), expired ones
    /// not yet collected included.
    pub fn table_lens(&self) -> (usize, usize, usize) {
        (self.ip_table.len(), self.lan_macs.len(), self.lan_ips.len())
    }
}

/// Sets the BOOTP broadcast flag on a DHCP client request in the IPv4 packet
/// `ip` (already checked); true if it changed anything. Fragments after the
/// first and datagrams cut by fragmentation are left alone.
fn set_dhcp_broadcast(ip: &mut [u8], csum_partial: bool) -> bool {
    let mut ip = Ipv4Packet::new_unchecked(ip);
    if ip.protocol() != protocol::UDP || ip.frag_offset() != 0 {
        return false;
    }
    let Ok(mut udp) = UdpPacket::new_checked(ip.payload_mut()) else {
        return false;
    };
    if udp.src_port() != dhcp::CLIENT_PORT || udp.dst_port() != dhcp::SERVER_PORT {
        return false;
    }
    let (old, new) = {
        let Ok(mut msg) = DhcpPacket::new_checked(udp.payload_mut()) else {
            return false;
        };
        let old = msg.flags();
        if msg.op() != dhcp::BOOTREQUEST || old & dhcp::FLAG_BROADCAST != 0 {
            return false;
        }
        let new = old | dhcp::FLAG_BROADCAST;
        msg.set_flags(new);
        (old, new)
    };
    // The flags word sits at an even offset of the datagram (8 + 10), so
    // RFC 1624 applies directly.
    if !csum_partial {
        udp.update_checksum(old, new);
    }
    true
}

/// Rewrites the link-layer options of an NDP message in the IPv6 packet `ip`
/// (already checked) to `mac` and fixes the ICMPv6 checksum; true if any
/// option was rewritten. A malformed NDP message is an error: it could
/// carry a virtual MAC that cannot be rewritten.
fn rewrite_ndp(ip: &mut [u8], mac: MacAddr, csum_partial: bool) -> Result<bool, DropReason> {
    let mut ip = Ipv6Packet::new_unchecked(ip);
    let (next, off) = ip.upper_layer().map_err(|_| DropReason::Malformed)?;
    if next != protocol::ICMPV6 {
        return Ok(false);
    }
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let mut icmp = Icmpv6Packet::new_checked(&mut ip.payload_mut()[off..])
        .map_err(|_| DropReason::Malformed)?;
    if !icmp.is_ndp() || icmp.set_lla_options(mac) == 0 {
        return Ok(false);
    }
    if !csum_partial {
        icmp.fill_checksum(&src, &dst);
    }
    Ok(true)
}
