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
//! * IEEE 802.1D link-local groups (`01:80:c2:00:00:0x`: STP, LACP, LLDP)
//!   → [`DropReason::LinkLocal`], in both directions.
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
        ethernet::{self, ethertype, EthernetFrame},
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
    /// The VLAN id of a tag the kernel stripped before capture
    /// (`PACKET_AUXDATA`), if any.
    pub vlan: Option<u16>,
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

/// IEEE 802.1D reserved addresses `01:80:c2:00:00:00`..`0f` (STP BPDUs,
/// LACP, 802.1X, LLDP): link-local to one segment; a bridge never forwards
/// them (a BPDU with source `N` could make the LAN switch shut the port).
fn is_link_local_group(mac: MacAddr) -> bool {
    mac.0[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && mac.0[5] <= 0x0f
}

/// The VLAN id of a frame's 802.1Q tag; 0 without a tag (as for a
/// priority tag).
fn tagged_vlan(frame: &[u8], p: &Parsed) -> u16 {
    if p.l3_off == ethernet::field::HEADER_LEN {
        return 0;
    }
    let tci = &frame[ethernet::field::VLAN_TCI];
    u16::from_be_bytes([tci[0], tci[1]]) & 0x0fff
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
    /// ARP probes (RFC 5227) from the overlay: probed IP → prober's MAC. The
    /// answer carries target IP 0.0.0.0, so rule 5 alone can't route it.
    probes: Table<Ipv4Addr, MacAddr>,
    counters: DropCounters,
    stats: NatStats,
    for_host: Notice,
    /// The last overlay claim refused by the spoofing guard, for the driver
    /// to report: the IP and the virtual MAC that claimed it.
    spoofed: Option<(IpAddr, MacAddr)>,
}

/// How long an overlay ARP probe waits for its answer (RFC 5227 probes take
/// a few seconds at most).
const PROBE_MAX_AGE: Duration = Duration::from_secs(5);
/// Overlay ARP probes remembered at once.
const PROBE_CAP: usize = 256;

impl Nat {
    /// A bridge with empty tables and no host addresses yet.
    pub fn new(config: NatConfig) -> Self {
        Nat {
            ip_table: Table::new(config.ip_table_cap, config.ip_max_age),
            lan_macs: Table::new(config.lan_mac_cap, config.lan_mac_max_age),
            lan_ips: Table::new(config.lan_ip_cap, config.lan_ip_max_age),
            probes: Table::new(PROBE_CAP, PROBE_MAX_AGE),
            config,
            host_v4: Vec::new(),
            host_v6: Vec::new(),
            counters: DropCounters::default(),
            stats: NatStats::default(),
            for_host: Notice::Never,
            spoofed: None,
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
        if is_link_local_group(p.dst) {
            return Err(DropReason::LinkLocal);
        }
        // The bridge carries the untagged LAN only (priority tags, VLAN 0,
        // count as untagged): frames of other VLANs on a trunk port stay out
        // of the overlay, whether the kernel stripped their tag or not.
        if meta.vlan.is_some_and(|v| v != 0) || tagged_vlan(frame, &p) != 0 {
            return Err(DropReason::Vlan);
        }
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
        let mac = match p.l3 {
            // The answer to an overlay host's ARP probe: target IP 0.0.0.0,
            // sender IP the probed address.
            L3::Arp { spa, tpa, .. } if tpa.is_unspecified() => self.probes.get(now, &spa),
            _ => self.ip_table.get(now, &dst_ip),
        }
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
        if is_link_local_group(p.dst) {
            return Err(DropReason::LinkLocal);
        }
        // Rule 3 holds this way too: only ARP, RARP, IPv4 and IPv6 reach the
        // LAN, and only untagged (or priority-tagged): a virtual host must
        // not reach other VLANs of a trunk port.
        if matches!(p.l3, L3::Other) {
            return Err(DropReason::EtherType);
        }
        if tagged_vlan(frame, &p) != 0 {
            return Err(DropReason::Vlan);
        }
        if p.src == n || self.lan_macs.contains(now, &p.src) {
            return Err(DropReason::Loop);
        }
        if let Some(ip) = p.l3.src_ip().filter(|&ip| learnable(ip)) {
            if self.is_host_ip(ip) || self.lan_ips.contains(now, &ip) {
                self.spoofed = Some((ip, p.src));
                return Err(DropReason::Spoofed);
            }
            self.ip_table.touch(now, ip, p.src);
        }
        if let L3::Arp { spa, tpa, .. } = p.l3 {
            if spa.is_unspecified() && !tpa.is_unspecified() {
                self.probes.touch(now, tpa, p.src);
            }
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

    /// The last overlay claim the spoofing guard refused (IP, virtual MAC),
    /// once: the driver names it in the log.
    pub fn take_spoofed(&mut self) -> Option<(IpAddr, MacAddr)> {
        self.spoofed.take()
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
        self.ip_table.expire(now)
            + self.lan_macs.expire(now)
            + self.lan_ips.expire(now)
            + self.probes.expire(now)
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

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;
    use crate::core::{
        frame::{arp, checksum, icmpv6::msg, icmpv6::opt, udp::UdpPacket},
        sim::{self, Host, Side, World},
    };

    const N: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x0a]);
    const L1: MacAddr = MacAddr([2, 0, 0, 0, 1, 1]);
    const L2: MacAddr = MacAddr([2, 0, 0, 0, 1, 2]);
    const V: MacAddr = MacAddr([2, 0, 0, 0, 2, 1]);
    const V2: MacAddr = MacAddr([2, 0, 0, 0, 2, 2]);
    const X: MacAddr = MacAddr([2, 0, 0, 0, 3, 3]);
    const NAMES: sim::Names = &[
        (N, "N"),
        (L1, "L1"),
        (L2, "L2"),
        (V, "V"),
        (V2, "V2"),
        (X, "X"),
    ];

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn ip6(s: &str) -> Ipv6Addr {
        s.parse().unwrap()
    }

    const HOST: [u8; 4] = [10, 0, 0, 10];
    const HOST6: &str = "fe80::a";

    fn lan(pkt_type: PacketType) -> LanMeta {
        LanMeta {
            pkt_type,
            csum_partial: false,
            vlan: None,
        }
    }

    /// A Nat that knows L1 (10.0.0.1, fe80::1:1) on the LAN and V
    /// (10.0.0.100, fe80::2:1) on the overlay.
    fn base(now: Instant) -> Nat {
        let mut nat = Nat::new(NatConfig::new(N));
        nat.set_host_addrs(&[HOST.into()], &[ip6(HOST6)]);
        let steps: [(bool, Vec<u8>); 4] = [
            (true, sim::arp_request(L1, ip("10.0.0.1"), ip("10.0.0.99"))),
            (
                true,
                sim::ndp(
                    (L1, ip6("fe80::1:1")),
                    (
                        MacAddr([0x33, 0x33, 0xff, 0, 2, 1]),
                        ip6("ff02::1:ff00:201"),
                    ),
                    msg::NEIGHBOR_SOLICIT,
                    ip6("fe80::2:1"),
                    (opt::SOURCE_LLA, L1),
                ),
            ),
            (
                false,
                sim::arp_reply(V, ip("10.0.0.100"), L1, ip("10.0.0.1")),
            ),
            (
                false,
                sim::ndp(
                    (V, ip6("fe80::2:1")),
                    (L1, ip6("fe80::1:1")),
                    msg::NEIGHBOR_ADVERT,
                    ip6("fe80::2:1"),
                    (opt::TARGET_LLA, V),
                ),
            ),
        ];
        for (from_lan, mut f) in steps {
            let v = if from_lan {
                let meta = lan(sim::packet_type(&f, N));
                nat.handle_lan(now, meta, &mut f)
            } else {
                nat.handle_overlay(now, false, &mut f)
            };
            assert_eq!(v, Verdict::Forward);
        }
        nat
    }

    #[derive(Clone, Copy, Debug)]
    enum Dir {
        Lan(PacketType, bool),
        Overlay(bool),
    }

    struct Case {
        name: &'static str,
        dir: Dir,
        frame: Vec<u8>,
    }

    fn case(name: &'static str, dir: Dir, frame: Vec<u8>) -> Case {
        Case { name, dir, frame }
    }

    fn run(nat: &mut Nat, now: Instant, dir: Dir, frame: &mut [u8]) -> Verdict {
        match dir {
            Dir::Lan(pkt_type, csum_partial) => nat.handle_lan(
                now,
                LanMeta {
                    pkt_type,
                    csum_partial,
                    vlan: None,
                },
                frame,
            ),
            Dir::Overlay(csum_partial) => nat.handle_overlay(now, csum_partial, frame),
        }
    }

    fn with_udp_checksum(mut f: Vec<u8>, value: u16) -> Vec<u8> {
        f[14 + 20 + 6..14 + 20 + 8].copy_from_slice(&value.to_be_bytes());
        f
    }

    fn lldp(src: MacAddr) -> Vec<u8> {
        let mut f = vec![0u8; 60];
        f[..6].copy_from_slice(&[0x01, 0x80, 0xc2, 0, 0, 0x0e]);
        f[6..12].copy_from_slice(&src.0);
        f[12..14].copy_from_slice(&[0x88, 0xcc]);
        f
    }

    fn cases() -> Vec<Case> {
        use Dir::{Lan, Overlay};
        use PacketType::*;
        let host = Ipv4Addr::from(HOST);
        let (l1, l2, v, v2) = (
            ip("10.0.0.1"),
            ip("10.0.0.2"),
            ip("10.0.0.100"),
            ip("10.0.0.101"),
        );
        let echo = |s: (MacAddr, Ipv4Addr), d: (MacAddr, Ipv4Addr)| sim::icmp_echo(s, d, true, 1);
        let mut bad_ndp = sim::ndp(
            (V2, ip6("fe80::2:2")),
            (MacAddr([0x33, 0x33, 0, 0, 0, 1]), ip6("ff02::1")),
            msg::NEIGHBOR_ADVERT,
            ip6("fe80::2:2"),
            (opt::TARGET_LLA, V2),
        );
        bad_ndp[14 + 40 + 24 + 1] = 0; // option length 0
        vec![
            // LAN -> overlay
            case(
                "lan: outgoing is ignored",
                Lan(Outgoing, false),
                echo((N, host), (L1, l1)),
            ),
            case(
                "lan: otherhost is rule 2",
                Lan(OtherHost, false),
                echo((L1, l1), (L2, l2)),
            ),
            case(
                "lan: broadcast ARP request passes unchanged (rule 1)",
                Lan(Broadcast, false),
                sim::arp_request(L2, l2, v),
            ),
            case(
                "lan: multicast NS passes unchanged (rule 1)",
                Lan(Multicast, false),
                sim::ndp(
                    (L1, ip6("fe80::1:1")),
                    (
                        MacAddr([0x33, 0x33, 0xff, 0, 2, 1]),
                        ip6("ff02::1:ff00:201"),
                    ),
                    msg::NEIGHBOR_SOLICIT,
                    ip6("fe80::2:1"),
                    (opt::SOURCE_LLA, L1),
                ),
            ),
            case(
                "lan: unicast to another MAC reported as host is rule 2",
                Lan(Host, false),
                echo((L1, l1), (L2, l2)),
            ),
            case("lan: other EtherType to N is rule 3", Lan(Host, false), {
                let mut f = echo((L1, l1), (N, v));
                f[12..14].copy_from_slice(&[0x88, 0xcc]);
                f
            }),
            case(
                "lan: IPv4 to the host's own IP is rule 4",
                Lan(Host, false),
                echo((L1, l1), (N, host)),
            ),
            case(
                "lan: unicast ARP request for the host's IP is rule 4",
                Lan(Host, false),
                sim::arp_frame(L1, N, arp::op::REQUEST, L1, l1, N, host),
            ),
            case(
                "lan: IPv4 to a virtual IP goes to its MAC (rule 5)",
                Lan(Host, false),
                echo((L1, l1), (N, v)),
            ),
            case(
                "lan: ARP reply to N: dst and target hw become V",
                Lan(Host, false),
                sim::arp_reply(L1, l1, N, v),
            ),
            case(
                "lan: unicast ARP request with zero target hw keeps zeros",
                Lan(Host, false),
                sim::arp_frame(L1, N, arp::op::REQUEST, L1, l1, MacAddr::ZERO, v),
            ),
            case(
                "lan: ARP reply whose target hw is not N keeps it",
                Lan(Host, false),
                sim::arp_frame(L1, N, arp::op::REPLY, L1, l1, L2, v),
            ),
            case(
                "lan: IPv4 to an unknown IP is rule 5's drop",
                Lan(Host, false),
                echo((L1, l1), (N, ip("10.0.0.200"))),
            ),
            case(
                "lan: VLAN-tagged IPv4 to a virtual IP",
                Lan(Host, false),
                sim::with_vlan(&echo((L1, l1), (N, v)), 7),
            ),
            case(
                "lan: NA to N for a virtual IPv6 goes to its MAC",
                Lan(Host, false),
                sim::ndp(
                    (L1, ip6("fe80::1:1")),
                    (N, ip6("fe80::2:1")),
                    msg::NEIGHBOR_ADVERT,
                    ip6("fe80::1:1"),
                    (opt::TARGET_LLA, L1),
                ),
            ),
            case(
                "lan: truncated ARP is malformed",
                Lan(Broadcast, false),
                sim::arp_request(L1, l1, v)[..14 + 27].to_vec(),
            ),
            // Overlay -> LAN
            case(
                "overlay: ARP request broadcast: src and sha become N",
                Overlay(false),
                sim::arp_request(V2, v2, l1),
            ),
            case(
                "overlay: ARP reply to a LAN host: src and sha become N",
                Overlay(false),
                sim::arp_reply(V, v, L1, l1),
            ),
            case(
                "overlay: ARP probe from 0.0.0.0 is forwarded, not learned",
                Overlay(false),
                sim::arp_frame(
                    V2,
                    MacAddr::BROADCAST,
                    arp::op::REQUEST,
                    V2,
                    Ipv4Addr::UNSPECIFIED,
                    MacAddr::ZERO,
                    v2,
                ),
            ),
            case(
                "overlay: multicast source MAC",
                Overlay(false),
                echo((MacAddr([0x01, 0, 0x5e, 0, 0, 1]), v), (L1, l1)),
            ),
            case(
                "overlay: source MAC seen on the LAN is a loop",
                Overlay(false),
                echo((L1, l1), (L2, l2)),
            ),
            case(
                "overlay: ARP claiming a LAN host's IP is spoofed",
                Overlay(false),
                sim::arp_request(V2, l1, l2),
            ),
            case(
                "overlay: IPv4 from the host's IP is spoofed",
                Overlay(false),
                echo((V2, host), (L1, l1)),
            ),
            case(
                "overlay: unicast to N is for the host",
                Overlay(false),
                echo((V, v), (N, l1)),
            ),
            case(
                "overlay: ARP request for the host's IP is for the host",
                Overlay(false),
                sim::arp_request(V, v, host),
            ),
            case(
                "overlay: unicast to a MAC not seen on the LAN",
                Overlay(false),
                echo((V, v), (X, l1)),
            ),
            case(
                "overlay: unicast to a virtual MAC (relay flood) stays off the LAN",
                Overlay(false),
                echo((V, v), (V2, v2)),
            ),
            case(
                "overlay: IPv4 to a LAN host",
                Overlay(false),
                echo((V, v), (L1, l1)),
            ),
            case(
                "overlay: DHCPDISCOVER gets the broadcast flag",
                Overlay(false),
                sim::dhcp_discover(V2, V2, false),
            ),
            case(
                "overlay: DHCPDISCOVER already broadcast is unchanged",
                Overlay(false),
                sim::dhcp_discover(V2, V2, true),
            ),
            case(
                "overlay: DHCPDISCOVER with partial checksum keeps the field",
                Overlay(true),
                with_udp_checksum(sim::dhcp_discover(V2, V2, false), 0x1234),
            ),
            case(
                "overlay: DHCPDISCOVER with no checksum keeps zero",
                Overlay(false),
                with_udp_checksum(sim::dhcp_discover(V2, V2, false), 0),
            ),
            case(
                "overlay: DHCP reply (67->68) is not touched",
                Overlay(false),
                sim::udp_v4(
                    (V2, v2, 67),
                    (MacAddr::BROADCAST, Ipv4Addr::BROADCAST, 68),
                    &[2; 300],
                ),
            ),
            case(
                "overlay: multicast NS: slla becomes N, checksum recomputed",
                Overlay(false),
                sim::ndp(
                    (V, ip6("fe80::2:1")),
                    (
                        MacAddr([0x33, 0x33, 0xff, 0, 1, 1]),
                        ip6("ff02::1:ff00:101"),
                    ),
                    msg::NEIGHBOR_SOLICIT,
                    ip6("fe80::1:1"),
                    (opt::SOURCE_LLA, V),
                ),
            ),
            case(
                "overlay: NA to a LAN host: tlla becomes N",
                Overlay(false),
                sim::ndp(
                    (V, ip6("fe80::2:1")),
                    (L1, ip6("fe80::1:1")),
                    msg::NEIGHBOR_ADVERT,
                    ip6("fe80::2:1"),
                    (opt::TARGET_LLA, V),
                ),
            ),
            case(
                "overlay: NDP option of length zero is malformed",
                Overlay(false),
                bad_ndp,
            ),
            case(
                "overlay: IPv6 to the host's address is for the host",
                Overlay(false),
                sim::ndp(
                    (V, ip6("fe80::2:1")),
                    (MacAddr([0x33, 0x33, 0, 0, 0, 0x0a]), ip6(HOST6)),
                    msg::NEIGHBOR_SOLICIT,
                    ip6(HOST6),
                    (opt::SOURCE_LLA, V),
                ),
            ),
            case(
                "overlay: VLAN-tagged ARP request",
                Overlay(false),
                sim::with_vlan(&sim::arp_request(V2, v2, l1), 7),
            ),
            case("overlay: runt frame", Overlay(false), vec![0xff; 13]),
            case("lan: LLDP is link-local", Lan(Multicast, false), lldp(L1)),
            case("overlay: LLDP is link-local", Overlay(false), lldp(V)),
        ]
    }

    #[test]
    fn decision_table() {
        let now = Instant::now();
        let mut out = String::new();
        for c in cases() {
            let mut nat = base(now);
            let mut frame = c.frame.clone();
            let verdict = run(&mut nat, now, c.dir, &mut frame);
            let dir = match c.dir {
                Dir::Lan(t, p) => format!("lan {t:?}{}", if p { " csum_partial" } else { "" }),
                Dir::Overlay(p) => format!("overlay{}", if p { " csum_partial" } else { "" }),
            };
            writeln!(out, "## {}", c.name).unwrap();
            writeln!(out, "  in  [{dir}] {}", sim::describe(&c.frame, NAMES)).unwrap();
            writeln!(out, "  =>  {verdict:?}").unwrap();
            if verdict == Verdict::Forward {
                if frame == c.frame {
                    writeln!(out, "  out unchanged").unwrap();
                } else {
                    writeln!(out, "  out {}", sim::describe(&frame, NAMES)).unwrap();
                }
                if matches!(c.dir, Dir::Overlay(_)) {
                    for m in sim::macs_in(&frame) {
                        assert!(
                            m == N || !m.is_unicast() || [L1, L2].contains(&m),
                            "{}: {m}",
                            c.name
                        );
                    }
                }
            } else {
                assert_eq!(
                    nat.counters().get(match verdict {
                        Verdict::Drop(r) => r,
                        Verdict::Forward => unreachable!(),
                    }),
                    1
                );
            }
        }
        insta::assert_snapshot!("decision_table", out);
    }

    fn udp_checksum(frame: &[u8]) -> (u16, u16) {
        let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        let mut copy = ip.payload().to_vec();
        let stored = UdpPacket::new_checked(&copy[..]).unwrap().checksum();
        let mut udp = UdpPacket::new_checked(&mut copy[..]).unwrap();
        udp.fill_checksum_v4(src, dst);
        (stored, udp.checksum())
    }

    #[test]
    fn dhcp_checksum_correct_after_flag_set() {
        let now = Instant::now();
        let mut nat = base(now);
        for chaddr in [V2, MacAddr([0x02, 0xff, 0x7f, 0x80, 0x00, 0x01])] {
            let mut f = sim::dhcp_discover(chaddr, chaddr, false);
            assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::Forward);
            let d = DhcpPacket::new_checked(&f[14 + 28..]).unwrap();
            assert!(d.broadcast());
            assert_eq!(d.chaddr(), Some(chaddr), "chaddr stays the client's");
            let (stored, full) = udp_checksum(&f);
            assert_eq!(stored, full, "incremental update equals full recompute");
        }
        assert_eq!(nat.stats().dhcp_broadcast_set, 2);
    }

    #[test]
    fn dhcp_partial_checksum_untouched() {
        let now = Instant::now();
        let mut nat = base(now);
        // A partial checksum holds the pseudo-header sum only.
        let f0 = sim::dhcp_discover(V2, V2, false);
        let pseudo = checksum::fold(checksum::pseudo_header_v4(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            protocol::UDP,
            (f0.len() - 14 - 20) as u16,
        ));
        let mut f = with_udp_checksum(f0, pseudo);
        let before = f.clone();
        assert_eq!(nat.handle_overlay(now, true, &mut f), Verdict::Forward);
        assert_eq!(&f[40..42], &before[40..42], "checksum field untouched");
        assert_eq!(f[14 + 28 + 10], 0x80, "flag set");
        // Zero means "no checksum" and stays zero.
        let mut f = with_udp_checksum(sim::dhcp_discover(V2, V2, false), 0);
        assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::Forward);
        assert_eq!(&f[40..42], &[0, 0]);
    }

    #[test]
    fn arp_target_rewritten_only_when_n() {
        let now = Instant::now();
        let v = ip("10.0.0.100");
        for (tha, want) in [(N, V), (MacAddr::ZERO, MacAddr::ZERO), (L2, L2)] {
            let mut nat = base(now);
            let mut f = sim::arp_frame(L1, N, arp::op::REPLY, L1, ip("10.0.0.1"), tha, v);
            assert_eq!(
                nat.handle_lan(now, lan(PacketType::Host), &mut f),
                Verdict::Forward
            );
            let a = ArpPacket::new_checked(&f[14..]).unwrap();
            assert_eq!(a.target_hw_addr(), want);
            assert_eq!(a.sender_hw_addr(), L1, "LAN hosts keep their MAC");
            assert_eq!(MacAddr::from_slice(&f).unwrap(), V);
        }
    }

    #[test]
    fn vlan_tagged_frames_use_moved_offsets() {
        let now = Instant::now();
        let mut nat = base(now);
        // Other VLANs stay out of the overlay, tag inline or stripped by the
        // kernel; a priority tag (VLAN 0) passes, with the offsets moved.
        let reply = sim::arp_reply(L1, ip("10.0.0.1"), N, ip("10.0.0.100"));
        let mut f = sim::with_vlan(&reply, 42);
        assert_eq!(
            nat.handle_lan(now, lan(PacketType::Host), &mut f),
            Verdict::Drop(DropReason::Vlan)
        );
        let mut f = reply.clone();
        let stripped = LanMeta {
            vlan: Some(42),
            ..lan(PacketType::Host)
        };
        assert_eq!(
            nat.handle_lan(now, stripped, &mut f),
            Verdict::Drop(DropReason::Vlan)
        );
        let mut f = sim::with_vlan(&reply, 0);
        assert_eq!(
            nat.handle_lan(now, lan(PacketType::Host), &mut f),
            Verdict::Forward
        );
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!((eth.dst_addr(), eth.vlan_tci()), (V, Some(0)));
        assert_eq!(
            ArpPacket::new_checked(eth.payload())
                .unwrap()
                .target_hw_addr(),
            V
        );

        // From the overlay, another VLAN is refused; a priority tag (VLAN 0)
        // passes, with the offsets moved.
        let mut f = sim::with_vlan(&sim::dhcp_discover(V2, V2, false), 42);
        assert_eq!(
            nat.handle_overlay(now, false, &mut f),
            Verdict::Drop(DropReason::Vlan)
        );
        let mut f = sim::with_vlan(&sim::dhcp_discover(V2, V2, false), 0);
        assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::Forward);
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.src_addr(), N);
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(DhcpPacket::new_checked(udp.payload()).unwrap().broadcast());
        assert!(udp.verify_checksum_v4(ip.src_addr(), ip.dst_addr()));
    }

    #[test]
    fn answers_to_an_overlay_arp_probe_reach_the_prober() {
        let now = Instant::now();
        let mut nat = base(now);
        // V2 probes 10.0.0.1 (RFC 5227: sender IP 0.0.0.0), e.g. a DHCP
        // client checking its offer.
        let mut probe = sim::arp_request(V2, Ipv4Addr::UNSPECIFIED, ip("10.0.0.1"));
        assert_eq!(nat.handle_overlay(now, false, &mut probe), Verdict::Forward);
        // L1 owns it and answers N with target IP 0.0.0.0.
        let mut answer = sim::arp_reply(L1, ip("10.0.0.1"), N, Ipv4Addr::UNSPECIFIED);
        let later = now + Duration::from_secs(1);
        assert_eq!(
            nat.handle_lan(later, lan(PacketType::Host), &mut answer),
            Verdict::Forward
        );
        assert_eq!(MacAddr::from_slice(&answer).unwrap(), V2);
        let a = ArpPacket::new_checked(&answer[14..]).unwrap();
        assert_eq!(a.target_hw_addr(), V2);
        // A late answer, after the probe's window, is not routed.
        let mut late = sim::arp_reply(L1, ip("10.0.0.1"), N, Ipv4Addr::UNSPECIFIED);
        assert_eq!(
            nat.handle_lan(
                now + Duration::from_secs(10),
                lan(PacketType::Host),
                &mut late
            ),
            Verdict::Drop(DropReason::UnknownIp)
        );
    }

    #[test]
    fn refused_overlay_claims_are_reported_with_ip_and_mac() {
        let now = Instant::now();
        let mut nat = base(now);
        // 10.0.0.1 is L1's, seen live on the LAN by `base`.
        let mut claim = sim::arp_request(V2, ip("10.0.0.1"), ip("10.0.0.99"));
        assert_eq!(
            nat.handle_overlay(now, false, &mut claim),
            Verdict::Drop(DropReason::Spoofed)
        );
        assert_eq!(nat.take_spoofed(), Some((IpAddr::from(ip("10.0.0.1")), V2)));
        assert_eq!(nat.take_spoofed(), None);
    }

    #[test]
    fn truncated_frames_never_panic_nor_leak() {
        let now = Instant::now();
        let v = ip("10.0.0.100");
        let frames = [
            sim::arp_reply(L1, ip("10.0.0.1"), N, v),
            sim::arp_request(V2, ip("10.0.0.101"), ip("10.0.0.1")),
            sim::icmp_echo((L1, ip("10.0.0.1")), (N, v), true, 1),
            sim::dhcp_discover(V2, V2, false),
            sim::with_vlan(&sim::dhcp_discover(V2, V2, false), 3),
            sim::ndp(
                (V, ip6("fe80::2:1")),
                (L1, ip6("fe80::1:1")),
                msg::NEIGHBOR_ADVERT,
                ip6("fe80::2:1"),
                (opt::TARGET_LLA, V),
            ),
        ];
        let mut nat = base(now);
        let mut checked = 0;
        for full in &frames {
            for len in 0..=full.len() {
                for dir in [
                    Dir::Lan(PacketType::Host, false),
                    Dir::Overlay(false),
                    Dir::Overlay(true),
                ] {
                    let mut f = full[..len].to_vec();
                    let verdict = run(&mut nat, now, dir, &mut f);
                    match (verdict, dir) {
                        (Verdict::Drop(_), _) => {}
                        (Verdict::Forward, Dir::Overlay(_)) => {
                            assert!(
                                !sim::macs_in(&f).iter().any(|m| [V, V2].contains(m)),
                                "len {len}"
                            );
                        }
                        (Verdict::Forward, Dir::Lan(..)) => {}
                    }
                    if len < 14 {
                        assert_eq!(verdict, Verdict::Drop(DropReason::Malformed));
                    }
                    checked += 1;
                }
            }
        }
        assert!(checked > 1000);
        assert!(nat.counters().get(DropReason::Malformed) > 500);
    }

    #[test]
    fn tables_bounded_under_flood() {
        let t0 = Instant::now();
        let mut config = NatConfig::new(N);
        config.ip_table_cap = 1000;
        config.lan_mac_cap = 500;
        config.lan_ip_cap = 700;
        let mut nat = Nat::new(config);
        for i in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i));
            let fake_ip = Ipv4Addr::from(0x0a80_0000 + i);
            let b = i.to_be_bytes();
            let fake_mac = MacAddr([0x02, 0x55, b[0], b[1], b[2], b[3]]);
            let mut f = sim::arp_request(fake_mac, fake_ip, ip("10.0.0.1"));
            assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::Forward);
            let lan_mac = MacAddr([0x02, 0x66, b[0], b[1], b[2], b[3]]);
            let mut f = sim::arp_request(lan_mac, Ipv4Addr::from(0x0a40_0000 + i), ip("10.0.0.1"));
            assert_eq!(
                nat.handle_lan(now, lan(PacketType::Broadcast), &mut f),
                Verdict::Forward
            );
        }
        assert_eq!(nat.table_lens(), (1000, 500, 700));
        let s = nat.stats();
        assert_eq!(
            (s.ip_evictions, s.lan_mac_evictions, s.lan_ip_evictions),
            (99_000, 99_500, 99_300)
        );
        // A real host evicted by the flood is learned again from its traffic.
        let now = t0 + Duration::from_secs(1);
        let mut f = sim::arp_request(V, ip("10.0.0.100"), ip("10.0.0.1"));
        assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::Forward);
        assert_eq!(nat.lookup(now, ip("10.0.0.100").into()), Some(V));
    }

    #[test]
    fn entries_age_out() {
        let t0 = Instant::now();
        let mut nat = base(t0);
        assert_eq!(nat.next_deadline(), Some(t0 + Duration::from_secs(300)));
        let later = t0 + Duration::from_secs(299);
        assert_eq!(nat.lookup(later, ip("10.0.0.100").into()), Some(V));
        let entries: Vec<_> = nat
            .ip_entries(later)
            .map(|e| (e.ip, e.mac, e.age.as_secs()))
            .collect();
        assert_eq!(
            entries,
            vec![
                (ip("10.0.0.100").into(), V, 299),
                (ip6("fe80::2:1").into(), V, 299)
            ]
        );
        assert_eq!(nat.lan_macs(later).count(), 1);
        assert_eq!(nat.lan_ips(later).count(), 2);
        let expired = t0 + Duration::from_secs(300);
        assert_eq!(nat.lookup(expired, ip("10.0.0.100").into()), None);
        assert_eq!(nat.expire(expired), 5);
        assert_eq!(nat.table_lens(), (0, 0, 0));
        assert_eq!(nat.next_deadline(), None);
        // With L1 forgotten, unicast to it stays off the LAN again.
        let mut f = sim::icmp_echo((V, ip("10.0.0.100")), (L1, ip("10.0.0.1")), true, 1);
        let v = nat.handle_overlay(expired, false, &mut f);
        assert_eq!(v, Verdict::Drop(DropReason::UnknownUnicast));
    }

    #[test]
    fn lan_sighting_wins_over_overlay_claim() {
        let now = Instant::now();
        let mut nat = base(now);
        let stolen = ip("10.0.0.100");
        assert_eq!(nat.lookup(now, stolen.into()), Some(V));
        let mut f = sim::arp_request(L2, stolen, ip("10.0.0.1"));
        assert_eq!(
            nat.handle_lan(now, lan(PacketType::Broadcast), &mut f),
            Verdict::Forward
        );
        assert_eq!(nat.lookup(now, stolen.into()), None);
        let mut f = sim::arp_reply(V, stolen, L1, ip("10.0.0.1"));
        assert_eq!(
            nat.handle_overlay(now, false, &mut f),
            Verdict::Drop(DropReason::Spoofed)
        );
    }

    #[test]
    fn host_address_change_forgets_learned_entry() {
        let now = Instant::now();
        let mut nat = base(now);
        nat.set_host_addrs(&[ip("10.0.0.100")], &[]);
        assert_eq!(nat.lookup(now, ip("10.0.0.100").into()), None);
        let mut f = sim::icmp_echo((L1, ip("10.0.0.1")), (N, ip("10.0.0.100")), true, 1);
        let v = nat.handle_lan(now, lan(PacketType::Host), &mut f);
        assert_eq!(v, Verdict::Drop(DropReason::OwnAddress));
    }

    #[test]
    fn for_host_notice_fires_once() {
        let now = Instant::now();
        let mut nat = base(now);
        assert!(!nat.take_for_host_notice());
        for _ in 0..3 {
            let mut f = sim::arp_request(V, ip("10.0.0.100"), HOST.into());
            assert_eq!(
                nat.handle_overlay(now, false, &mut f),
                Verdict::Drop(DropReason::ForHost)
            );
        }
        assert!(nat.take_for_host_notice());
        assert!(!nat.take_for_host_notice());
        assert_eq!(nat.counters().get(DropReason::ForHost), 3);
    }

    /// LAN hosts L1, L2 and virtual host V resolve each other by ARP and
    /// ping both ways through the bridge; no LAN frame ever carries V's MAC.
    #[test]
    fn simulator_arp_and_ping_both_ways() {
        let lan_hosts = vec![
            Host::new("L1", L1, ip("10.0.0.1")),
            Host::new("L2", L2, ip("10.0.0.2")),
        ];
        let virt = vec![Host::new("V", V, ip("10.0.0.100"))];
        let mut nat = Nat::new(NatConfig::new(N));
        nat.set_host_addrs(&[HOST.into()], &[]);
        let mut w = World::new(nat, lan_hosts, virt);

        w.act(Side::Lan, "L1", |h| h.ping(ip("10.0.0.100"), 1));
        w.act(Side::Overlay, "V", |h| h.ping(ip("10.0.0.2"), 2));
        w.act(Side::Overlay, "V", |h| h.ping(ip("10.0.0.1"), 3));
        w.act(Side::Overlay, "V", |h| h.ping(HOST.into(), 4));

        assert_eq!(w.lan[0].echo_replies, vec![(ip("10.0.0.100"), 1)]);
        assert_eq!(
            w.overlay[0].echo_replies,
            vec![(ip("10.0.0.2"), 2), (ip("10.0.0.1"), 3)]
        );
        assert_eq!(w.lan[0].arp_cache.get(&ip("10.0.0.100")), Some(&N));
        assert_eq!(w.lan[1].arp_cache.get(&ip("10.0.0.100")), Some(&N));
        assert_eq!(w.overlay[0].arp_cache.get(&ip("10.0.0.2")), Some(&L2));
        assert_eq!(w.overlay[0].arp_cache.get(&ip("10.0.0.1")), Some(&L1));
        for f in &w.lan_wire {
            assert!(
                !sim::macs_in(f).contains(&V),
                "virtual MAC on the LAN: {}",
                w.describe(f)
            );
        }
        assert!(w.nat.take_for_host_notice());
        insta::assert_snapshot!("simulator_arp_and_ping_both_ways", w.trace.join("\n"));
    }
}
