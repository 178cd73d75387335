//! The bridge's MAC translation: the seed's rules 1-5 plus DESIGN.md's
//! additions, as a pure state machine over frame buffers; and the guards of
//! a first-hop switch ("The bridge as a first-hop switch" in DESIGN.md).
//!
//! A bridge host on a physical LAN has NIC MAC `N`. Frames captured on the
//! NIC go to the overlay ([`Nat::handle_lan`]); frames from the overlay go
//! onto the LAN ([`Nat::handle_overlay`]). Both rewrite in the caller's
//! buffer and return a [`Verdict`]; the engine's own frames for the LAN
//! (probes) come from [`Nat::poll_transmit`]. Nothing here does I/O or
//! reads a clock.
//!
//! # Invariant
//! The LAN only ever sees `N`: every frame [`Nat::handle_overlay`] forwards
//! and every probe [`Nat::poll_transmit`] returns has Ethernet source `N`, an
//! ARP sender hardware address `N` (and an ARP target hardware address of
//! zeros, a group, a LAN host's MAC or `N`), NDP source/target link-layer
//! options `N`,
//! and a unicast destination that was seen as a source on the LAN. Virtual
//! MACs never appear on the LAN; a MAC the overlay owns is never taken for a
//! LAN host's (the mirror guard), so it can't become such a destination.
//!
//! # On-link addresses
//! The driver tells the engine the NIC's addresses with their prefix lengths
//! ([`Nat::set_host_addrs`], [`Nat::set_on_link_prefixes`]). An address is
//! *on-link* when it is link-local (`169.254.0.0/16`, `fe80::/10`) or inside
//! one of those prefixes (host routes, `/32` and `/128`, and link-local
//! prefixes say nothing about the LAN and don't count). An address is
//! *asserted on the link* by ARP (the sender IP) and by neighbour discovery
//! (the IPv6 source of any NDP message, which only on-link nodes send with
//! hop limit 255, and a neighbour advertisement's target).
//!
//! # LAN → overlay ([`Nat::handle_lan`])
//! * `PACKET_OUTGOING` → [`DropReason::Outgoing`]. On Linux an AF_PACKET send
//!   goes out the wire, never into the host, so forwarding the host's own
//!   frames would only teach virtual hosts to send to `N`. With host access
//!   (below), the host's own ARP requests and neighbour solicitations from
//!   one of its addresses are the exception: forwarded unchanged, nothing
//!   learned from them.
//! * `PACKET_OTHERHOST` → [`DropReason::NotForUs`] (rule 2). A real NIC
//!   filters these in hardware; nothing here depends on seeing them.
//! * IEEE 802.1D link-local groups (`01:80:c2:00:00:0x`: STP, LACP, LLDP)
//!   → [`DropReason::LinkLocal`], in both directions; other VLANs →
//!   [`DropReason::Vlan`].
//! * Mirror guard: a source MAC the overlay owns (seen as a source from the
//!   overlay in a frame that passed the guards, and not first seen on the
//!   LAN) → [`DropReason::MirrorGuard`]: the MAC never enters the LAN-MAC
//!   table, so no frame to it is ever put on the LAN, and the virtual
//!   host's own frames are not taken for a loop. The frame's addresses
//!   still count as live and still answer a probe, so a LAN host whose MAC
//!   a virtual host took first keeps its address.
//! * Learn: a unicast source MAC other than `N` goes into the LAN-MAC table.
//!   Addresses go into the live-on-LAN set (which also evicts them from the
//!   IP→MAC table) when they are real unicast addresses, not the host's own,
//!   and either asserted on the link (ARP sender IP, NDP source, NA target)
//!   or an IPv4/IPv6 source that is on-link. When the NIC has no prefix of
//!   a family (no address, or only link-local ones), every source address
//!   of that family is learned, as there is nothing to tell on-link by.
//!   An address seen so ends a pending claim of it (see probing below).
//! * Broadcast/multicast → forward, destination unchanged (rule 1).
//! * Unicast not to `N` → [`DropReason::NotForUs`] (rule 2).
//! * To `N`: only ARP, RARP, IPv4, IPv6, else [`DropReason::EtherType`]
//!   (rule 3); destination IP one of the host's own →
//!   [`DropReason::OwnAddress`] (rule 4); else the IP→MAC table gives the
//!   virtual MAC, written to the Ethernet destination and, for ARP, to the
//!   target hardware address *only if it was `N`* (requests carry zeros);
//!   no entry → [`DropReason::UnknownIp`] (rule 5). An ARP answer to a
//!   probe (target IP `0.0.0.0`) goes to the virtual host that probed; an
//!   answer to the bridge's own probe is [`DropReason::Probing`].
//! * LAN hosts keep their own MACs as source, so two bridges on two LANs
//!   on one relay make one subnet.
//!
//! # Overlay → LAN ([`Nat::handle_overlay`])
//! * Source MAC not unicast → [`DropReason::BadSourceMac`]; `N` or seen on
//!   our LAN → [`DropReason::Loop`]. Otherwise the source MAC is the
//!   overlay's (the mirror guard's table), until it ages out: whichever
//!   side a MAC is first seen on owns it.
//! * First-hop guards ([`crate::core::guard`] reads the packet; extension
//!   headers are walked, and what hides its upper layer is
//!   [`DropReason::Malformed`]). Nothing is learned from a frame they drop.
//!   - RA guard (RFC 6105): router advertisements (ICMPv6 134) and redirects
//!     (137) → [`DropReason::RaGuard`], unless
//!     [`NatConfig::allow_router_advertisements`].
//!   - DHCP snooping: DHCPv4 server messages (UDP 67 → 68, or from 67 with
//!     op BOOTREPLY) and DHCPv6 server messages (UDP 547 → 546, or from 547
//!     with type ADVERTISE, REPLY, RECONFIGURE or RELAY-REPL) →
//!     [`DropReason::DhcpSnooping`], unless [`NatConfig::allow_dhcp_servers`].
//!   - ND inspection ([`NatConfig::nd_inspection`]): a neighbour
//!     advertisement claims its target for its sender, so its target must be
//!     a unicast address that is neither the host's own nor live on the LAN
//!     → else [`DropReason::NdInspection`]; the same holds for the target of
//!     a redirect (when redirects are allowed), which its target link-layer
//!     option, rewritten to `N`, would point at the bridge. A neighbour
//!     solicitation's target is only the address being resolved, so a
//!     virtual host may solicit a LAN host's or the bridge host's address;
//!     only a multicast target (invalid, RFC 4861 section 7.1.1) is dropped.
//!     The source link-layer option of every NDP message vouches for the
//!     IPv6 source, which the spoofing guard checks below.
//! * Spoofing guard: a source IP (ARP sender IP, IPv4/IPv6 source) that is
//!   the host's own or live on the LAN → [`DropReason::Spoofed`].
//! * Claims and probing: a source IP not in the IP→MAC table is a claim. A
//!   claim of an on-link or link-asserted address (and, with ND inspection,
//!   an NA target other than the source) is granted only after the LAN was
//!   probed for it ([`crate::core::probe`]: two ARP probes or DAD neighbour
//!   solicitations from `N`, 0.5 s apart, then 0.5 s more); meanwhile the
//!   claimant's frames are [`DropReason::Probing`] (its ARP or NDP retries,
//!   as every stack does). An answer from a LAN host makes the address live
//!   on the LAN, so the claim is refused and later frames are
//!   [`DropReason::Spoofed`]. Granted, the address goes into the IP→MAC
//!   table. Other source IPs (routed from off the link) are learned at once.
//! * Destination `N`, or destination IP one of the host's own →
//!   [`DropReason::ForHost`]: an AF_PACKET socket cannot inject into the
//!   host's own stack (a send goes out the wire). [`Nat::take_for_host_notice`]
//!   lets the driver log that once. With host access on, such frames go to
//!   the host instead (below).
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
//! # Host access ([`NatConfig::host_tap_mac`] `T`)
//! The bridge host's own stack joins the overlay through a TAP with MAC `T`
//! ([`crate::core::host`]). After the guards above (so the spoofing guard,
//! claims and probing hold for frames to the host too):
//! * an ARP request for a host IPv4 address, or a neighbour solicitation for
//!   a host IPv6 address, is answered by the engine as `N`
//!   ([`Verdict::Answered`]; the answer from [`Nat::poll_host_reply`] goes
//!   back into the overlay), not put on the LAN nor into the TAP;
//! * a frame to `N` or to a host address is [`Verdict::ToHost`]: `N` becomes
//!   `T` in the Ethernet destination, the ARP target hardware address and
//!   NDP link-layer options (ICMPv6 checksum fixed unless partial). An IP
//!   packet goes to the host only if its destination is one of the host's
//!   addresses ([`DropReason::ForHost`] otherwise: a host that forwards must
//!   not route it on) and its source is link-local or inside the NIC's
//!   prefixes, which the bridge probed before granting
//!   ([`DropReason::Spoofed`] otherwise).
//!
//! Frames the host sends through the TAP ([`Nat::handle_host`]) must come
//! from `T`, be ARP/RARP/IPv4/IPv6, untagged, and go to a group or to a MAC
//! the overlay owns (else [`DropReason::BadSourceMac`],
//! [`DropReason::EtherType`], [`DropReason::UnknownUnicast`], ...); `T`
//! becomes `N` in the Ethernet source, ARP sender hardware address and NDP
//! options, and they go into the overlay only. So `T` never reaches the
//! overlay or the LAN, and the invariant above holds unchanged.
//! [`Nat::host_route_targets`] names the virtual addresses the host should
//! route through the TAP: only granted ones inside the NIC's prefixes (not
//! link-local, loopback, reserved or mapped), so no virtual host can pull
//! the host's traffic for an off-link address (a DNS server, a VPN
//! endpoint, a container) into the TAP.
//!
//! [`Nat::take_refusal`] names, for the driver's log, the last frame refused
//! by the spoofing guard, ND inspection, RA guard or DHCP snooping.
//!
//! # Bounded tables
//! The IP→MAC table, the LAN-MAC table, the overlay-MAC table and the
//! live-on-LAN set each have a cap and a maximum age; pending claims are
//! capped too ([`crate::core::probe::CLAIM_CAP`] in all,
//! [`crate::core::probe::CLAIMS_PER_MAC`] per virtual MAC). When a table is
//! full, the least recently refreshed entry is evicted and counted
//! ([`NatStats`]).
//! Under a flood of fake addresses real entries get evicted too; they are
//! learned again from the next frame that carries them. Expiry runs lazily
//! at the start of each `handle_*` call (amortised O(1)) and on
//! [`Nat::expire`]; [`Nat::next_deadline`] tells a driver when the next
//! entry would age out or the next probe or grant is due.
//!
//! References: RFC 826 (ARP), RFC 903 (RARP), RFC 2131 (DHCP, broadcast
//! flag), RFC 4861 (NDP), RFC 1624 (incremental checksum update), RFC 5227
//! (ARP probes), RFC 4862 (duplicate address detection), RFC 6105 (RA
//! guard), RFC 8415 (DHCPv6).

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    fmt,
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
    guard::{self, FirstHop},
    host,
    mac::MacAddr,
    probe::{self, Claims, Transmit},
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
    /// Send the (rewritten) buffer on: to the overlay from `handle_lan` and
    /// `handle_host`, onto the LAN from `handle_overlay`.
    Forward,
    /// From `handle_overlay`, with host access on: write the (rewritten)
    /// buffer into the host TAP, never onto the LAN.
    ToHost,
    /// From `handle_overlay`, with host access on: the engine answered the
    /// frame for the host (an ARP request or neighbour solicitation for one
    /// of its addresses); the answer waits in [`Nat::poll_host_reply`].
    Answered,
    /// Drop it; the reason is already counted.
    Drop(DropReason),
}

/// Sizes and ages of the tables, the NIC's MAC, and the first-hop guards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// The bridged NIC's MAC (`N`).
    pub host_mac: MacAddr,
    /// Host access: the MAC (`T`) of the TAP that joins the bridge host's
    /// own stack to the overlay; `None` turns host access off.
    pub host_tap_mac: Option<MacAddr>,
    /// Forward router advertisements and redirects from the overlay (RA
    /// guard off), for a virtual router.
    pub allow_router_advertisements: bool,
    /// Forward DHCP server messages from the overlay (DHCP snooping off),
    /// for a virtual DHCP server.
    pub allow_dhcp_servers: bool,
    /// Check the targets of neighbour advertisements and redirects from the
    /// overlay, and probe for NA targets (ND inspection).
    pub nd_inspection: bool,
    /// Most IP→MAC entries learned from the overlay.
    pub ip_table_cap: usize,
    /// Age after which an IP→MAC entry is forgotten.
    pub ip_max_age: Duration,
    /// Most MACs remembered as seen on the LAN.
    pub lan_mac_cap: usize,
    /// Age after which a LAN MAC is forgotten.
    pub lan_mac_max_age: Duration,
    /// Most MACs remembered as the overlay's (mirror guard).
    pub overlay_mac_cap: usize,
    /// Age after which an overlay MAC is forgotten.
    pub overlay_mac_max_age: Duration,
    /// Most IPs remembered as live on the LAN (spoofing guard).
    pub lan_ip_cap: usize,
    /// Age after which a live-on-LAN IP is forgotten.
    pub lan_ip_max_age: Duration,
}

impl NatConfig {
    /// Defaults: every guard on; 4096 entries and 300 s for every table.
    pub fn new(host_mac: MacAddr) -> Self {
        const CAP: usize = 4096;
        const AGE: Duration = Duration::from_secs(300);
        NatConfig {
            host_mac,
            host_tap_mac: None,
            allow_router_advertisements: false,
            allow_dhcp_servers: false,
            nd_inspection: true,
            ip_table_cap: CAP,
            ip_max_age: AGE,
            lan_mac_cap: CAP,
            lan_mac_max_age: AGE,
            overlay_mac_cap: CAP,
            overlay_mac_max_age: AGE,
            lan_ip_cap: CAP,
            lan_ip_max_age: AGE,
        }
    }
}

/// An on-link prefix of the bridged NIC: one of its addresses with the
/// prefix length, e.g. `192.168.1.10/24`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Prefix {
    addr: IpAddr,
    len: u8,
}

impl Prefix {
    /// `addr/len`; a length beyond the address's bits is cut to them.
    pub fn new(addr: IpAddr, len: u8) -> Prefix {
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        Prefix {
            addr,
            len: len.min(bits),
        }
    }

    /// The address it was made from.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// True if `ip` is inside the prefix (same family, same leading bits).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(a), IpAddr::V4(b)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(a) & mask == u32::from(b) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(b)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(b) & mask
            }
            _ => false,
        }
    }

    /// True if it tells which LAN addresses are on-link: not a host route
    /// (`/32`, `/128`) and not link-local (those are on-link anyway).
    fn is_informative(&self) -> bool {
        let host = if self.addr.is_ipv4() { 32 } else { 128 };
        self.len < host && !is_link_local(self.addr)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// `169.254.0.0/16` or `fe80::/10`.
fn is_link_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_link_local(),
        IpAddr::V6(a) => a.segments()[0] & 0xffc0 == 0xfe80,
    }
}

/// A frame refused by a guard, for the driver to name in its log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Refusal {
    /// Which guard: [`DropReason::Spoofed`], [`DropReason::NdInspection`],
    /// [`DropReason::RaGuard`] or [`DropReason::DhcpSnooping`].
    pub reason: DropReason,
    /// The virtual MAC that sent it.
    pub mac: MacAddr,
    /// The address it claimed (the source IP, or the NA or redirect
    /// target), if the guard is about one.
    pub ip: Option<IpAddr>,
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
    /// Overlay MACs evicted because the table was full.
    pub overlay_mac_evictions: u64,
    /// Probes put on the LAN (ARP probes, DAD neighbour solicitations).
    pub probes_sent: u64,
    /// Claims granted: probed for, and no LAN host answered.
    pub claims_granted: u64,
    /// Claims refused: a LAN host answered the probe, or used the address,
    /// while it was pending.
    pub claims_refused: u64,
    /// Frames from the overlay written into the host TAP (host access).
    pub overlay_to_host: u64,
    /// Frames from the host TAP forwarded to the overlay (host access).
    pub host_to_overlay: u64,
    /// ARP requests and neighbour solicitations for the host's addresses
    /// the engine answered (host access).
    pub host_answers: u64,
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
    /// Bumped whenever a key comes or goes.
    changes: u64,
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
            changes: 0,
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
        self.changes += 1;
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
            self.changes += 1;
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
        if n > 0 {
            self.changes += 1;
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

/// An address a host route may point at: unicast, not loopback, not
/// reserved (240/4), not an IPv4-mapped IPv6 address.
fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_loopback()
                || v4.octets()[0] >= 240)
        }
        IpAddr::V6(v6) => {
            !(v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_loopback()
                || v6.to_ipv4_mapped().is_some())
        }
    }
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
    /// The NIC's informative on-link prefixes.
    on_link: Vec<Prefix>,
    /// IP → virtual MAC, learned from the overlay.
    ip_table: Table<IpAddr, MacAddr>,
    /// MACs seen as sources on the LAN.
    lan_macs: Table<MacAddr, ()>,
    /// MACs seen as sources from the overlay (mirror guard).
    overlay_macs: Table<MacAddr, ()>,
    /// IPs seen as sources on the LAN (spoofing guard).
    lan_ips: Table<IpAddr, ()>,
    /// ARP probes (RFC 5227) from the overlay: probed IP → prober's MAC. The
    /// answer carries target IP 0.0.0.0, so rule 5 alone can't route it.
    overlay_probes: Table<Ipv4Addr, MacAddr>,
    /// Claims from the overlay the bridge is probing the LAN for.
    claims: Claims,
    counters: DropCounters,
    stats: NatStats,
    for_host: Notice,
    /// The last frame a guard refused, for the driver to report.
    refusal: Option<Refusal>,
    /// Answers for the overlay on the host's behalf (host access), oldest
    /// first, at most [`HOST_REPLY_CAP`].
    host_replies: VecDeque<Transmit>,
}

/// Answers for the host waiting for the driver at once; more are dropped
/// (a virtual host asks again).
const HOST_REPLY_CAP: usize = 64;

/// What `overlay_inner` decided for a frame it did not drop.
enum OverlayOut {
    Lan,
    Host,
    Answered,
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
            overlay_macs: Table::new(config.overlay_mac_cap, config.overlay_mac_max_age),
            lan_ips: Table::new(config.lan_ip_cap, config.lan_ip_max_age),
            overlay_probes: Table::new(PROBE_CAP, PROBE_MAX_AGE),
            claims: Claims::default(),
            config,
            host_v4: Vec::new(),
            host_v6: Vec::new(),
            on_link: Vec::new(),
            counters: DropCounters::default(),
            stats: NatStats::default(),
            for_host: Notice::Never,
            refusal: None,
            host_replies: VecDeque::new(),
        }
    }

    /// Replaces the bridge host's own addresses (the driver follows address
    /// changes). Entries learned from the overlay for these IPs, and claims
    /// of them, are removed.
    pub fn set_host_addrs(&mut self, v4: &[Ipv4Addr], v6: &[Ipv6Addr]) {
        self.host_v4 = v4.to_vec();
        self.host_v6 = v6.to_vec();
        for ip in v4
            .iter()
            .map(|&a| IpAddr::from(a))
            .chain(v6.iter().map(|&a| a.into()))
        {
            self.ip_table.remove(&ip);
            self.claims.cancel(ip);
        }
    }

    /// Replaces the NIC's on-link prefixes (its addresses with their prefix
    /// lengths; the driver follows changes). Host routes and link-local
    /// prefixes are ignored (see the module docs).
    pub fn set_on_link_prefixes(&mut self, prefixes: &[Prefix]) {
        self.on_link = prefixes
            .iter()
            .copied()
            .filter(Prefix::is_informative)
            .collect();
    }

    /// The informative on-link prefixes in use.
    pub fn on_link_prefixes(&self) -> &[Prefix] {
        &self.on_link
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

    /// Link-local, or inside one of the NIC's prefixes.
    fn is_on_link(&self, ip: IpAddr) -> bool {
        is_link_local(ip) || self.on_link.iter().any(|p| p.contains(ip))
    }

    /// Whether a source address seen on the LAN goes into the live-on-LAN
    /// set: asserted on the link, on-link, or of a family the NIC has no
    /// prefix of.
    fn lan_learnable(&self, ip: IpAddr, asserted: bool) -> bool {
        asserted
            || self.is_on_link(ip)
            || !self
                .on_link
                .iter()
                .any(|p| p.addr.is_ipv4() == ip.is_ipv4())
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
            PacketType::Outgoing => {
                return if self.host_resolution(now, meta, frame) {
                    Ok(())
                } else {
                    Err(DropReason::Outgoing)
                };
            }
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
        let mut answered = false;
        if p.src.is_unicast() && p.src != n {
            // The mirror guard: a MAC the overlay owns is no LAN host's. Its
            // addresses still count as live, and still answer a probe: a
            // virtual host that first took a LAN host's MAC must not get
            // that host's address too (found in review).
            if self.overlay_macs.contains(now, &p.src) {
                self.learn_lan_addresses(now, frame, &p);
                return Err(DropReason::MirrorGuard);
            }
            self.lan_macs.touch(now, p.src, ());
            answered = self.learn_lan_addresses(now, frame, &p);
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
            // The answer to an ARP probe: target IP 0.0.0.0, sender IP the
            // probed address; an overlay host's probe, or the bridge's own.
            L3::Arp { spa, tpa, .. } if tpa.is_unspecified() => {
                match self.overlay_probes.get(now, &spa) {
                    None if answered => return Err(DropReason::Probing),
                    mac => mac,
                }
            }
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

    /// With host access on: true for the host's own outgoing ARP request or
    /// neighbour solicitation (from one of its addresses, untagged, not
    /// unicast), which the overlay gets too, unchanged (it names only `N`).
    /// The host asks on its NIC for an address no host route covers yet;
    /// a virtual host's answer teaches the engine its address (and so the
    /// host its route), and the next try goes through the host TAP.
    /// Only for addresses not known live on the LAN (the host's gateway
    /// and LAN peers are, once seen): the overlay, and every bridge in it,
    /// needn't hear the host resolve its own LAN (found in review).
    fn host_resolution(&self, now: Instant, meta: LanMeta, frame: &[u8]) -> bool {
        if self.config.host_tap_mac.is_none() || meta.vlan.is_some_and(|v| v != 0) {
            return false;
        }
        let Ok(p) = parse(frame) else {
            return false;
        };
        if p.src != self.config.host_mac
            || !p.dst.is_multicast()
            || tagged_vlan(frame, &p) != 0
            || !p.l3.src_ip().is_some_and(|ip| self.is_host_ip(ip))
        {
            return false;
        }
        let live = |ip: IpAddr| self.lan_ips.contains(now, &ip);
        match p.l3 {
            L3::Arp { tpa, .. } => {
                ArpPacket::new_unchecked(&frame[p.l3_off..]).operation()
                    == crate::core::frame::arp::op::REQUEST
                    && !live(tpa.into())
            }
            L3::Ipv6 { .. } => matches!(
                guard::inspect_ipv6(&frame[p.l3_off..]),
                Ok(FirstHop::NeighborSolicit { target }) if !live(target.into())
            ),
            L3::Ipv4 { .. } | L3::Other => false,
        }
    }

    /// Learns the addresses a LAN frame shows live (see the module docs);
    /// true if one of them was pending as a claim from the overlay (which
    /// is then refused).
    // HOT PATH
    fn learn_lan_addresses(&mut self, now: Instant, frame: &[u8], p: &Parsed) -> bool {
        let (asserted, target) = match p.l3 {
            L3::Arp { .. } => (true, None),
            L3::Ipv4 { .. } => (false, None),
            L3::Ipv6 { .. } => match guard::inspect_ipv6(&frame[p.l3_off..]) {
                Ok(FirstHop::NeighborAdvert { target }) => (true, Some(target)),
                Ok(hop) => (hop.is_ndp(), None),
                Err(_) => (false, None),
            },
            L3::Other => return false,
        };
        let mut answered = false;
        for (ip, asserted) in [(p.l3.src_ip(), asserted), (target.map(IpAddr::from), true)] {
            let Some(ip) = ip.filter(|&ip| learnable(ip) && !self.is_host_ip(ip)) else {
                continue;
            };
            if !self.lan_learnable(ip, asserted) {
                continue;
            }
            if self.lan_ips.touch(now, ip, ()) {
                // Live on the LAN wins over an overlay claim.
                self.ip_table.remove(&ip);
            }
            if self.claims.cancel(ip) {
                self.stats.claims_refused += 1;
                answered = true;
            }
        }
        answered
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
            Ok(OverlayOut::Lan) => {
                self.stats.overlay_forwarded += 1;
                Verdict::Forward
            }
            Ok(OverlayOut::Host) => {
                self.stats.overlay_to_host += 1;
                Verdict::ToHost
            }
            Ok(OverlayOut::Answered) => {
                self.stats.host_answers += 1;
                Verdict::Answered
            }
            Err(reason) => self.dropped(reason),
        }
    }

    fn overlay_inner(
        &mut self,
        now: Instant,
        csum_partial: bool,
        frame: &mut [u8],
    ) -> Result<OverlayOut, DropReason> {
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
        let hop = match p.l3 {
            L3::Ipv4 { .. } => guard::inspect_ipv4(&frame[p.l3_off..])?,
            L3::Ipv6 { .. } => guard::inspect_ipv6(&frame[p.l3_off..])?,
            L3::Arp { .. } | L3::Other => FirstHop::Other,
        };
        self.first_hop_guards(now, hop, p.src)?;
        let src_ip = p.l3.src_ip().filter(|&ip| learnable(ip));
        if let Some(ip) = src_ip {
            if self.is_host_ip(ip) || self.lan_ips.contains(now, &ip) {
                return Err(self.refuse(DropReason::Spoofed, p.src, Some(ip)));
            }
        }
        // The MAC is the overlay's only once its frame passed the guards: a
        // flood of frames the guards drop (RAs from random MACs) must not
        // push real virtual MACs out of the table (found in review).
        self.overlay_macs.touch(now, p.src, ());
        if let Some(ip) = src_ip {
            let on_link = matches!(p.l3, L3::Arp { .. }) || hop.is_ndp() || self.is_on_link(ip);
            self.claim(now, ip, p.src, on_link)?;
        }
        if let FirstHop::NeighborAdvert { target } = hop {
            let target = IpAddr::from(target);
            if self.config.nd_inspection && Some(target) != p.l3.src_ip() {
                self.claim(now, target, p.src, true)?;
            }
        }
        if let L3::Arp { spa, tpa, .. } = p.l3 {
            if spa.is_unspecified() && !tpa.is_unspecified() {
                self.overlay_probes.touch(now, tpa, p.src);
            }
        }
        if let Some(t) = self.config.host_tap_mac {
            if let Some(out) = self.for_host(csum_partial, frame, &p, hop, t)? {
                return Ok(out);
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
            L3::Arp { tha, .. } => {
                let mut arp = ArpPacket::new_unchecked(&mut frame[p.l3_off..]);
                arp.set_sender_hw_addr(n);
                // The target hardware address may name a virtual MAC too (a
                // gratuitous ARP reply, `arping -A`, names the sender's own):
                // on the LAN it becomes N, like the sender's. Zeros (requests),
                // group addresses and LAN hosts' MACs stay.
                if tha != MacAddr::ZERO && !tha.is_multicast() && !self.lan_macs.contains(now, &tha)
                {
                    arp.set_target_hw_addr(n);
                }
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
        Ok(OverlayOut::Lan)
    }

    /// Host access, for a frame from the overlay that passed the guards:
    /// an ARP request or neighbour solicitation for a host address is
    /// answered here (as `N`); a frame for the host (destination `N`, or
    /// destination IP one of the host's) goes into the TAP with `N`
    /// rewritten to `t` in the Ethernet destination, the ARP target hardware
    /// address and NDP link-layer options. `None`: not for the host.
    fn for_host(
        &mut self,
        csum_partial: bool,
        frame: &mut [u8],
        p: &Parsed,
        hop: FirstHop,
        t: MacAddr,
    ) -> Result<Option<OverlayOut>, DropReason> {
        let n = self.config.host_mac;
        let answer = match (p.l3, hop) {
            (L3::Arp { spa, tpa, .. }, _)
                if self.host_v4.contains(&tpa)
                    && ArpPacket::new_unchecked(&frame[p.l3_off..]).operation()
                        == crate::core::frame::arp::op::REQUEST =>
            {
                Some(host::arp_reply(n, tpa, p.src, spa))
            }
            (L3::Ipv6 { src, .. }, FirstHop::NeighborSolicit { target })
                if self.host_v6.contains(&target) =>
            {
                Some(host::neighbor_advert(n, target, p.src, src))
            }
            _ => None,
        };
        if let Some(reply) = answer {
            if self.host_replies.len() < HOST_REPLY_CAP {
                self.host_replies.push_back(reply);
            }
            return Ok(Some(OverlayOut::Answered));
        }
        if p.dst != n && !p.l3.dst_ip().is_some_and(|ip| self.is_host_ip(ip)) {
            return Ok(None);
        }
        // IP reaches the host's stack only for one of the host's own
        // addresses (not routed on by a host that forwards: docker, VPNs),
        // and only from an address inside the NIC's prefixes or link-local,
        // which the bridge probed before granting (not 8.8.8.8 or a VPN
        // server's address, which would pass the host's reverse-path check
        // through the TAP's routes).
        if let L3::Ipv4 { src, dst } = p.l3 {
            if !self.is_host_ip(dst.into()) {
                return Err(DropReason::ForHost);
            }
            if !self.is_on_link(src.into()) {
                return Err(DropReason::Spoofed);
            }
        }
        if let L3::Ipv6 { src, dst } = p.l3 {
            let to_host = self.is_host_ip(dst.into()) || (dst.is_multicast() && hop.is_ndp());
            if !to_host {
                return Err(DropReason::ForHost);
            }
            if !src.is_unspecified() && !self.is_on_link(src.into()) {
                return Err(DropReason::Spoofed);
            }
        }
        match p.l3 {
            L3::Arp { tha, .. } if tha == n => {
                ArpPacket::new_unchecked(&mut frame[p.l3_off..]).set_target_hw_addr(t);
            }
            L3::Ipv6 { .. } if hop.is_ndp() => {
                replace_ndp_lla(&mut frame[p.l3_off..], n, t, csum_partial)?;
            }
            _ => {}
        }
        if p.dst == n {
            EthernetFrame::new_unchecked(&mut *frame).set_dst_addr(t);
        }
        Ok(Some(OverlayOut::Host))
    }

    /// A frame the bridge host's own stack sent through the host TAP (host
    /// access), to go into the overlay, never onto the LAN. Its source must
    /// be the TAP's MAC `T`; only ARP, RARP, IPv4 and IPv6 pass; a unicast
    /// destination must be a MAC the overlay owns. `T` becomes `N` in the
    /// Ethernet source, the ARP sender hardware address and NDP link-layer
    /// options (ICMPv6 checksum fixed): the overlay sees the host as `N`,
    /// as the LAN does. On [`Verdict::Forward`] send it into the overlay.
    pub fn handle_host(&mut self, now: Instant, frame: &mut [u8]) -> Verdict {
        self.expire(now);
        match self.host_inner(now, frame) {
            Ok(()) => {
                self.stats.host_to_overlay += 1;
                Verdict::Forward
            }
            Err(reason) => self.dropped(reason),
        }
    }

    fn host_inner(&mut self, now: Instant, frame: &mut [u8]) -> Result<(), DropReason> {
        let n = self.config.host_mac;
        let Some(t) = self.config.host_tap_mac else {
            return Err(DropReason::NotForUs);
        };
        let p = parse(frame)?;
        if p.src != t {
            return Err(DropReason::BadSourceMac);
        }
        if is_link_local_group(p.dst) {
            return Err(DropReason::LinkLocal);
        }
        if matches!(p.l3, L3::Other) {
            return Err(DropReason::EtherType);
        }
        if tagged_vlan(frame, &p) != 0 {
            return Err(DropReason::Vlan);
        }
        if !p.dst.is_multicast() && !self.overlay_macs.contains(now, &p.dst) {
            return Err(DropReason::UnknownUnicast);
        }
        match p.l3 {
            L3::Arp { .. } => {
                let mut arp = ArpPacket::new_unchecked(&mut frame[p.l3_off..]);
                if arp.sender_hw_addr() == t {
                    arp.set_sender_hw_addr(n);
                }
            }
            L3::Ipv6 { .. } => {
                replace_ndp_lla(&mut frame[p.l3_off..], t, n, false)?;
            }
            L3::Ipv4 { .. } | L3::Other => {}
        }
        EthernetFrame::new_unchecked(&mut *frame).set_src_addr(n);
        Ok(())
    }

    /// The next answer the engine gave for the host (host access), to send
    /// into the overlay. Call until `None` after every batch of overlay
    /// frames.
    pub fn poll_host_reply(&mut self) -> Option<Transmit> {
        self.host_replies.pop_front()
    }

    /// The virtual addresses the host should reach through the host TAP:
    /// the IP→MAC table's entries, except link-local ones (they need a
    /// scope, and a route would take them from the NIC) and families the
    /// host has no routable address of (a route needs a source).
    pub fn host_route_targets(&self, now: Instant) -> impl Iterator<Item = IpAddr> + '_ {
        let v4 = self.host_v4.iter().any(|a| !a.is_link_local());
        let v6 = self.host_v6.iter().any(|&a| !is_link_local(a.into()));
        self.ip_table.iter(now).filter_map(move |(ip, _, _)| {
            let family = if ip.is_ipv4() { v4 } else { v6 };
            // Only addresses inside the NIC's own prefixes, which the bridge
            // probed before granting: a virtual host that sends from an
            // off-link source (8.8.8.8, a VPN server, a pod network) must
            // never pull the host's traffic for it into the TAP.
            let on_link = !is_link_local(ip) && self.on_link.iter().any(|p| p.contains(ip));
            (family && on_link && routable(ip)).then_some(ip)
        })
    }

    /// Turns host access on (`Some(T)`) or off, e.g. when the driver could
    /// not make the host TAP.
    pub fn set_host_tap_mac(&mut self, t: Option<MacAddr>) {
        self.config.host_tap_mac = t;
    }

    /// Changes whenever an IP→MAC entry comes or goes: a driver that keeps
    /// routes for [`Nat::host_route_targets`] recomputes them only then.
    pub fn ip_table_changes(&self) -> u64 {
        self.ip_table.changes
    }

    /// RA guard, DHCP snooping and ND inspection (see the module docs).
    fn first_hop_guards(
        &mut self,
        now: Instant,
        hop: FirstHop,
        mac: MacAddr,
    ) -> Result<(), DropReason> {
        let c = &self.config;
        match hop {
            FirstHop::RouterAdvert | FirstHop::Redirect { .. }
                if !c.allow_router_advertisements =>
            {
                Err(self.refuse(DropReason::RaGuard, mac, None))
            }
            FirstHop::DhcpServer if !c.allow_dhcp_servers => {
                Err(self.refuse(DropReason::DhcpSnooping, mac, None))
            }
            FirstHop::NeighborAdvert { target } | FirstHop::Redirect { target }
                if c.nd_inspection =>
            {
                let ip = IpAddr::from(target);
                if target.is_multicast()
                    || target.is_unspecified()
                    || self.is_host_ip(ip)
                    || self.lan_ips.contains(now, &ip)
                {
                    return Err(self.refuse(DropReason::NdInspection, mac, Some(ip)));
                }
                Ok(())
            }
            FirstHop::NeighborSolicit { target } if c.nd_inspection && target.is_multicast() => {
                Err(self.refuse(DropReason::NdInspection, mac, Some(target.into())))
            }
            _ => Ok(()),
        }
    }

    /// Notes a refusal for [`Nat::take_refusal`]; returns its reason.
    fn refuse(&mut self, reason: DropReason, mac: MacAddr, ip: Option<IpAddr>) -> DropReason {
        self.refusal = Some(Refusal { reason, mac, ip });
        reason
    }

    /// `mac` claims `ip` (not the host's, not live on the LAN). Known, or
    /// not worth a probe (`probe` false: routed from off the link): learned
    /// at once. Otherwise the LAN is probed for it first, and until the
    /// claim is granted the claimant's frames are [`DropReason::Probing`].
    fn claim(
        &mut self,
        now: Instant,
        ip: IpAddr,
        mac: MacAddr,
        probe: bool,
    ) -> Result<(), DropReason> {
        if !probe || self.ip_table.contains(now, &ip) {
            self.ip_table.touch(now, ip, mac);
            return Ok(());
        }
        if !self.claims.is_pending(ip) {
            // When CLAIM_CAP claims are pending, this one waits for a slot.
            let _ = self.claims.start(now, ip, mac);
        }
        Err(DropReason::Probing)
    }

    /// The next frame the engine itself puts on the LAN, if one is due at
    /// `now`: a probe for a pending claim. Call until `None` after every
    /// batch of overlay frames and when [`Nat::next_deadline`] passes.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<Transmit> {
        self.settle_claims(now);
        let ip = self.claims.poll_probe(now)?;
        self.stats.probes_sent += 1;
        let n = self.config.host_mac;
        Some(match ip {
            IpAddr::V4(ip) => probe::arp_probe(n, ip),
            IpAddr::V6(ip) => probe::ns_probe(n, ip),
        })
    }

    /// Grants the claims whose probes went unanswered.
    fn settle_claims(&mut self, now: Instant) {
        while let Some((ip, mac)) = self.claims.take_granted(now) {
            if !self.is_host_ip(ip) && !self.lan_ips.contains(now, &ip) {
                self.ip_table.touch(now, ip, mac);
                self.stats.claims_granted += 1;
            }
        }
    }

    fn dropped(&mut self, reason: DropReason) -> Verdict {
        self.counters.add(reason);
        if reason == DropReason::ForHost && self.for_host == Notice::Never {
            self.for_host = Notice::Pending;
        }
        Verdict::Drop(reason)
    }

    /// The last frame from the overlay that the spoofing guard, ND
    /// inspection, RA guard or DHCP snooping refused, once: the driver
    /// names it in the log.
    pub fn take_refusal(&mut self) -> Option<Refusal> {
        self.refusal.take()
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

    /// Forgets aged-out entries in every table and grants the claims whose
    /// probes went unanswered; returns how many entries aged out.
    pub fn expire(&mut self, now: Instant) -> usize {
        self.settle_claims(now);
        self.ip_table.expire(now)
            + self.lan_macs.expire(now)
            + self.overlay_macs.expire(now)
            + self.lan_ips.expire(now)
            + self.overlay_probes.expire(now)
    }

    /// When the next entry ages out, or the next probe or grant is due, if
    /// ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.ip_table.next_deadline(),
            self.lan_macs.next_deadline(),
            self.overlay_macs.next_deadline(),
            self.lan_ips.next_deadline(),
            self.claims.next_deadline(),
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
            overlay_mac_evictions: self.overlay_macs.evictions,
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

    /// MACs the overlay owns (seen as sources from it) with their ages,
    /// least recently refreshed first.
    pub fn overlay_macs(&self, now: Instant) -> impl Iterator<Item = (MacAddr, Duration)> + '_ {
        self.overlay_macs.iter(now).map(|(m, (), age)| (m, age))
    }

    /// Claims from the overlay being probed for.
    pub fn pending_claims(&self) -> usize {
        self.claims.len()
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
/// (already checked) that hold `from` to `to` and fixes the ICMPv6 checksum
/// (unless partial); true if any changed.
fn replace_ndp_lla(
    ip: &mut [u8],
    from: MacAddr,
    to: MacAddr,
    csum_partial: bool,
) -> Result<bool, DropReason> {
    let mut ip = Ipv6Packet::new_unchecked(ip);
    let upper = ip.locate_upper_layer().map_err(|_| DropReason::Malformed)?;
    if upper.protocol != protocol::ICMPV6 || upper.fragment.is_some() {
        return Ok(false);
    }
    let off = upper.offset;
    let (src, dst) = (ip.src_addr(), ip.dst_addr());
    let mut icmp = Icmpv6Packet::new_checked(&mut ip.payload_mut()[off..])
        .map_err(|_| DropReason::Malformed)?;
    if !icmp.is_ndp() || icmp.replace_lla_options(from, to) == 0 {
        return Ok(false);
    }
    if !csum_partial {
        icmp.fill_checksum(&src, &dst);
    }
    Ok(true)
}

/// Rewrites the link-layer options of an NDP message in the IPv6 packet `ip`
/// (already checked) to `mac` and fixes the ICMPv6 checksum; true if any
/// option was rewritten. A malformed NDP message is an error: it could
/// carry a virtual MAC that cannot be rewritten.
fn rewrite_ndp(ip: &mut [u8], mac: MacAddr, csum_partial: bool) -> Result<bool, DropReason> {
    let mut ip = Ipv6Packet::new_unchecked(ip);
    let upper = ip.locate_upper_layer().map_err(|_| DropReason::Malformed)?;
    // A fragmented NDP message never gets here (see core::guard).
    if upper.protocol != protocol::ICMPV6 || upper.fragment.is_some() {
        return Ok(false);
    }
    let off = upper.offset;
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
    /// The host TAP's MAC for `N` (host access).
    const T: MacAddr = MacAddr([6, 0, 0, 0, 0, 0x0a]);
    const NAMES: sim::Names = &[
        (N, "N"),
        (T, "T"),
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

    /// The frames that teach `base` its hosts: (from the LAN, frame).
    fn base_steps() -> [(bool, Vec<u8>); 5] {
        [
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
            (
                false,
                sim::arp_request(V2, ip("10.0.0.101"), ip("10.0.0.1")),
            ),
        ]
    }

    fn step(nat: &mut Nat, now: Instant, from_lan: bool, f: &mut [u8]) -> Verdict {
        if from_lan {
            let meta = lan(sim::packet_type(f, N));
            nat.handle_lan(now, meta, f)
        } else {
            nat.handle_overlay(now, false, f)
        }
    }

    /// Runs the engine's timers from `from` to `to` in steps of 100 ms;
    /// returns the probes it put on the LAN.
    fn run_timers(nat: &mut Nat, from: Instant, to: Instant) -> Vec<Vec<u8>> {
        let mut probes = Vec::new();
        let mut now = from;
        while now <= to {
            nat.expire(now);
            while let Some(t) = nat.poll_transmit(now) {
                probes.push(t.as_bytes().to_vec());
            }
            now += Duration::from_millis(100);
        }
        probes
    }

    /// A Nat on 10.0.0.0/24 that knows L1 (10.0.0.1, fe80::1:1) on the LAN,
    /// and V (10.0.0.100, fe80::2:1) and V2 (10.0.0.101) on the overlay: the
    /// virtual hosts' claims were probed for 2 s before `now` and granted,
    /// and every entry was last refreshed at `now`.
    fn base(now: Instant) -> Nat {
        let mut nat = Nat::new(NatConfig::new(N));
        nat.set_host_addrs(&[HOST.into()], &[ip6(HOST6)]);
        nat.set_on_link_prefixes(&[Prefix::new(IpAddr::from(HOST), 24)]);
        let t0 = now.checked_sub(Duration::from_secs(2)).unwrap();
        for (from_lan, mut f) in base_steps() {
            let want = if from_lan {
                Verdict::Forward
            } else {
                Verdict::Drop(DropReason::Probing)
            };
            assert_eq!(step(&mut nat, t0, from_lan, &mut f), want);
        }
        let probes = run_timers(&mut nat, t0, t0 + Duration::from_secs(1));
        assert_eq!(probes.len(), 6, "two probes for each of three claims");
        assert_eq!(nat.stats().claims_granted, 3);
        for (from_lan, mut f) in base_steps() {
            assert_eq!(step(&mut nat, now, from_lan, &mut f), Verdict::Forward);
        }
        nat.counters = DropCounters::default();
        nat.stats = NatStats::default();
        nat
    }

    #[derive(Clone, Copy, Debug)]
    enum Dir {
        Lan(PacketType, bool),
        Overlay(bool),
        /// From the host TAP (host access).
        Host,
    }

    struct Case {
        name: &'static str,
        dir: Dir,
        frame: Vec<u8>,
        /// A flag of the operator's, set on `base`'s config for this case.
        tweak: Option<Tweak>,
    }

    /// A flag's name and how it changes the config.
    type Tweak = (&'static str, fn(&mut NatConfig));

    fn case(name: &'static str, dir: Dir, frame: Vec<u8>) -> Case {
        Case {
            name,
            dir,
            frame,
            tweak: None,
        }
    }

    /// A case run with an operator's flag.
    fn with(flag: &'static str, tweak: fn(&mut NatConfig), c: Case) -> Case {
        Case {
            tweak: Some((flag, tweak)),
            ..c
        }
    }

    fn allow_ra(c: &mut NatConfig) {
        c.allow_router_advertisements = true;
    }

    fn allow_dhcp(c: &mut NatConfig) {
        c.allow_dhcp_servers = true;
    }

    fn no_nd_inspection(c: &mut NatConfig) {
        c.nd_inspection = false;
    }

    fn host_access(c: &mut NatConfig) {
        c.host_tap_mac = Some(host::tap_mac(c.host_mac));
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
            Dir::Host => nat.handle_host(now, frame),
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
        let all_nodes = (MacAddr([0x33, 0x33, 0, 0, 0, 1]), ip6("ff02::1"));
        let na = |target: &str| {
            sim::ndp(
                (V, ip6("fe80::2:1")),
                all_nodes,
                msg::NEIGHBOR_ADVERT,
                ip6(target),
                (opt::TARGET_LLA, V),
            )
        };
        let rogue_ra = sim::router_advert((V, ip6("fe80::2:1")), ip6("2001:db8:bad::"));
        let redirect = sim::redirect(
            (V, ip6("fe80::2:1")),
            (L1, ip6("fe80::1:1")),
            ip6("fe80::1:2"),
            ip6("2001:db8::1"),
            V,
        );
        let dhcpv6_advertise = sim::udp_v6(
            (V, ip6("fe80::2:1"), 547),
            (L1, ip6("fe80::1:1"), 546),
            &[2, 0, 0, 1],
        );
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
                "overlay: gratuitous ARP reply: src, sha and tha (its own MAC) become N",
                Overlay(false),
                sim::arp_frame(V, MacAddr::BROADCAST, arp::op::REPLY, V, v, V, v),
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
                "overlay: DHCP server reply (67->68) is DHCP snooping",
                Overlay(false),
                sim::dhcp_offer(V2, v2),
            ),
            with(
                "allow_dhcp_servers",
                allow_dhcp,
                case(
                    "overlay: DHCP server reply is forwarded untouched when allowed",
                    Overlay(false),
                    sim::dhcp_offer(V2, v2),
                ),
            ),
            case(
                "overlay: DHCPv6 ADVERTISE (547->546) is DHCP snooping",
                Overlay(false),
                dhcpv6_advertise.clone(),
            ),
            with(
                "allow_dhcp_servers",
                allow_dhcp,
                case(
                    "overlay: DHCPv6 ADVERTISE is forwarded when allowed",
                    Overlay(false),
                    dhcpv6_advertise,
                ),
            ),
            case(
                "overlay: router advertisement is RA guard",
                Overlay(false),
                rogue_ra.clone(),
            ),
            with(
                "allow_router_advertisements",
                allow_ra,
                case(
                    "overlay: router advertisement allowed: slla becomes N",
                    Overlay(false),
                    rogue_ra,
                ),
            ),
            case(
                "overlay: redirect is RA guard",
                Overlay(false),
                redirect.clone(),
            ),
            with(
                "allow_router_advertisements",
                allow_ra,
                case(
                    "overlay: redirect allowed, to a target nobody on the LAN has: tlla becomes N",
                    Overlay(false),
                    redirect,
                ),
            ),
            with(
                "allow_router_advertisements",
                allow_ra,
                case(
                    "overlay: redirect allowed, naming a LAN host as target, is ND inspection",
                    Overlay(false),
                    sim::redirect(
                        (V, ip6("fe80::2:1")),
                        (L1, ip6("fe80::1:1")),
                        ip6("fe80::1:1"),
                        ip6("2001:db8::1"),
                        V,
                    ),
                ),
            ),
            case(
                "overlay: NA naming a LAN host's address is ND inspection",
                Overlay(false),
                na("fe80::1:1"),
            ),
            case(
                "overlay: NA naming the host's own address is ND inspection",
                Overlay(false),
                na(HOST6),
            ),
            case(
                "overlay: NA with a multicast target is ND inspection",
                Overlay(false),
                na("ff02::1"),
            ),
            with(
                "no_nd_inspection",
                no_nd_inspection,
                case(
                    "overlay: NA naming a LAN host's address passes without ND inspection",
                    Overlay(false),
                    na("fe80::1:1"),
                ),
            ),
            case(
                "overlay: NA naming an address nobody is known to have is probed for first",
                Overlay(false),
                na("fe80::2:99"),
            ),
            case(
                "overlay: NS for the host's own address passes (it only resolves it)",
                Overlay(false),
                sim::ndp(
                    (V, ip6("fe80::2:1")),
                    (
                        MacAddr([0x33, 0x33, 0xff, 0, 0, 0x0a]),
                        ip6("ff02::1:ff00:a"),
                    ),
                    msg::NEIGHBOR_SOLICIT,
                    ip6(HOST6),
                    (opt::SOURCE_LLA, V),
                ),
            ),
            case(
                "overlay: RA behind a fragment header is malformed (RFC 6980)",
                Overlay(false),
                {
                    let ra = sim::router_advert((V, ip6("fe80::2:1")), ip6("2001:db8:bad::"));
                    let mut f = ra[..14 + 40].to_vec();
                    f[14 + 6] = 44; // next header: fragment
                    f.extend_from_slice(&[58, 0, 0, 1, 0, 0, 0, 7]); // offset 0, M
                    f.extend_from_slice(&ra[14 + 40..]);
                    let len = (f.len() - 14 - 40) as u16;
                    f[14 + 4..14 + 6].copy_from_slice(&len.to_be_bytes());
                    f
                },
            ),
            case(
                "overlay: ARP from a new virtual host is probed for first",
                Overlay(false),
                sim::arp_request(X, ip("10.0.0.102"), l1),
            ),
            case(
                "overlay: IPv4 from an off-link source is learned at once",
                Overlay(false),
                echo((X, ip("192.0.2.7")), (L1, l1)),
            ),
            case(
                "lan: unicast from a virtual host's MAC is the mirror guard",
                Lan(Host, false),
                echo((V, l2), (N, v2)),
            ),
            case(
                "lan: broadcast from a virtual host's MAC is the mirror guard",
                Lan(Broadcast, false),
                sim::arp_request(V2, l2, l1),
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
            with(
                "host_access",
                host_access,
                case(
                    "overlay: IPv4 to N and the host's address goes into the host TAP, to T",
                    Overlay(false),
                    echo((V, v), (N, host)),
                ),
            ),
            with(
                "host_access",
                host_access,
                case(
                    "overlay: ARP reply to the host: destination and tha N become T",
                    Overlay(false),
                    sim::arp_reply(V, v, N, host),
                ),
            ),
            with(
                "host_access",
                host_access,
                case(
                    "overlay: ARP request for the host's address is answered as N",
                    Overlay(false),
                    sim::arp_request(V, v, host),
                ),
            ),
            with(
                "host_access",
                host_access,
                case(
                    "overlay: NS for the host's IPv6 address is answered as N",
                    Overlay(false),
                    sim::ndp(
                        (V, ip6("fe80::2:1")),
                        (
                            MacAddr([0x33, 0x33, 0xff, 0, 0, 0x0a]),
                            ip6("ff02::1:ff00:a"),
                        ),
                        msg::NEIGHBOR_SOLICIT,
                        ip6(HOST6),
                        (opt::SOURCE_LLA, V),
                    ),
                ),
            ),
            with(
                "host_access",
                host_access,
                case(
                    "overlay: NA to the host: to T, tlla stays the virtual host's",
                    Overlay(false),
                    sim::ndp(
                        (V, ip6("fe80::2:1")),
                        (N, ip6(HOST6)),
                        msg::NEIGHBOR_ADVERT,
                        ip6("fe80::2:1"),
                        (opt::TARGET_LLA, V),
                    ),
                ),
            ),
            with(
                "host_access",
                host_access,
                case(
                    "overlay: unicast to a LAN host is unchanged by host access",
                    Overlay(false),
                    echo((V, v), (L1, l1)),
                ),
            ),
            with(
                "host_access",
                host_access,
                case(
                    "host: ARP request from T: source and sha become N",
                    Dir::Host,
                    sim::arp_request(T, host, v),
                ),
            ),
            with(
                "host_access",
                host_access,
                case(
                    "host: NS from T: slla becomes N, checksum recomputed",
                    Dir::Host,
                    sim::ndp(
                        (T, ip6(HOST6)),
                        (
                            MacAddr([0x33, 0x33, 0xff, 0, 2, 1]),
                            ip6("ff02::1:ff00:201"),
                        ),
                        msg::NEIGHBOR_SOLICIT,
                        ip6("fe80::2:1"),
                        (opt::SOURCE_LLA, T),
                    ),
                ),
            ),
            with(
                "host_access",
                host_access,
                case(
                    "host: IPv4 to a virtual MAC: source becomes N",
                    Dir::Host,
                    echo((T, host), (V, v)),
                ),
            ),
            with(
                "host_access",
                host_access,
                case(
                    "host: unicast to a LAN host's MAC never leaves the TAP",
                    Dir::Host,
                    echo((T, host), (L1, l1)),
                ),
            ),
            with(
                "host_access",
                host_access,
                case(
                    "host: a source other than T is refused",
                    Dir::Host,
                    echo((V, v), (V2, v2)),
                ),
            ),
            with(
                "host_access",
                host_access,
                case(
                    "lan: the host's own ARP request goes to the overlay too",
                    Lan(Outgoing, false),
                    sim::arp_request(N, host, v),
                ),
            ),
            with(
                "host_access",
                host_access,
                case(
                    "lan: the host's own NS goes to the overlay too",
                    Lan(Outgoing, false),
                    sim::ndp(
                        (N, ip6(HOST6)),
                        (
                            MacAddr([0x33, 0x33, 0xff, 0, 2, 1]),
                            ip6("ff02::1:ff00:201"),
                        ),
                        msg::NEIGHBOR_SOLICIT,
                        ip6("fe80::2:1"),
                        (opt::SOURCE_LLA, N),
                    ),
                ),
            ),
            with(
                "host_access",
                host_access,
                case(
                    "lan: the host's other outgoing frames stay out of the overlay",
                    Lan(Outgoing, false),
                    echo((N, host), (L1, l1)),
                ),
            ),
            case(
                "host: without host access nothing comes from a host TAP",
                Dir::Host,
                echo((T, host), (V, v)),
            ),
        ]
    }

    #[test]
    fn decision_table() {
        let now = Instant::now();
        let mut out = String::new();
        for c in cases() {
            let mut nat = base(now);
            if let Some((_, tweak)) = c.tweak {
                tweak(&mut nat.config);
            }
            let mut frame = c.frame.clone();
            let verdict = run(&mut nat, now, c.dir, &mut frame);
            let mut dir = match c.dir {
                Dir::Lan(t, p) => format!("lan {t:?}{}", if p { " csum_partial" } else { "" }),
                Dir::Overlay(p) => format!("overlay{}", if p { " csum_partial" } else { "" }),
                Dir::Host => "host".to_string(),
            };
            if let Some((flag, _)) = c.tweak {
                dir += &format!(" {flag}");
            }
            writeln!(out, "## {}", c.name).unwrap();
            writeln!(out, "  in  [{dir}] {}", sim::describe(&c.frame, NAMES)).unwrap();
            writeln!(out, "  =>  {verdict:?}").unwrap();
            if let Some(reply) = nat.poll_host_reply() {
                assert_eq!(verdict, Verdict::Answered);
                writeln!(out, "  reply {}", sim::describe(reply.as_bytes(), NAMES)).unwrap();
                assert!(sim::macs_in(reply.as_bytes()).iter().all(|&m| m != T));
            } else if verdict == Verdict::ToHost {
                writeln!(out, "  out {}", sim::describe(&frame, NAMES)).unwrap();
                assert!(
                    !sim::macs_in(&frame).contains(&N),
                    "{}: N stays out of the host's view",
                    c.name
                );
            } else if verdict == Verdict::Forward {
                if frame == c.frame {
                    writeln!(out, "  out unchanged").unwrap();
                } else {
                    writeln!(out, "  out {}", sim::describe(&frame, NAMES)).unwrap();
                }
                if matches!(c.dir, Dir::Host) {
                    assert!(
                        !sim::macs_in(&frame).contains(&T),
                        "{}: T stays home",
                        c.name
                    );
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
                        Verdict::Forward | Verdict::ToHost | Verdict::Answered => unreachable!(),
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
        assert_eq!(
            nat.take_refusal(),
            Some(Refusal {
                reason: DropReason::Spoofed,
                mac: V2,
                ip: Some(ip("10.0.0.1").into())
            })
        );
        assert_eq!(nat.take_refusal(), None);
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
            sim::router_advert((V, ip6("fe80::2:1")), ip6("2001:db8::")),
            sim::with_vlan(
                &sim::router_advert((V, ip6("fe80::2:1")), ip6("2001:db8::")),
                0,
            ),
            sim::dhcp_offer(V2, ip("10.0.0.101")),
            sim::with_vlan(&sim::dhcp_offer(V2, ip("10.0.0.101")), 0),
            sim::udp_v6(
                (V, ip6("fe80::2:1"), 547),
                (L1, ip6("fe80::1:1"), 546),
                &[7, 0, 0, 1],
            ),
            sim::ndp(
                (V, ip6("fe80::2:1")),
                (MacAddr([0x33, 0x33, 0, 0, 0, 1]), ip6("ff02::1")),
                msg::NEIGHBOR_ADVERT,
                ip6("fe80::1:1"),
                (opt::TARGET_LLA, V),
            ),
            sim::icmp_echo((V, ip("10.0.0.2")), (N, v), true, 1),
            sim::icmp_echo((T, ip("10.0.0.10")), (V, v), true, 1),
            sim::arp_request(T, ip("10.0.0.10"), v),
        ];
        let mut nat = base(now);
        host_access(&mut nat.config);
        let mut checked = 0;
        for full in &frames {
            for len in 0..=full.len() {
                for dir in [
                    Dir::Lan(PacketType::Host, false),
                    Dir::Overlay(false),
                    Dir::Overlay(true),
                    Dir::Host,
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
                        (Verdict::Forward, Dir::Host) => {
                            assert!(!sim::macs_in(&f).contains(&T), "len {len}");
                        }
                        (Verdict::ToHost | Verdict::Answered, _) => {}
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
        config.overlay_mac_cap = 600;
        let mut nat = Nat::new(config);
        for i in 0..100_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i));
            let fake_ip = Ipv4Addr::from(0x0a80_0000 + i);
            let b = i.to_be_bytes();
            let fake_mac = MacAddr([0x02, 0x55, b[0], b[1], b[2], b[3]]);
            // IPv4 sources with no on-link prefix known: learned at once
            // (claims that are probed for are bounded on their own).
            let mut f = sim::icmp_echo(
                (fake_mac, fake_ip),
                (MacAddr::BROADCAST, ip("10.0.0.1")),
                true,
                1,
            );
            assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::Forward);
            let lan_mac = MacAddr([0x02, 0x66, b[0], b[1], b[2], b[3]]);
            let mut f = sim::arp_request(lan_mac, Ipv4Addr::from(0x0a40_0000 + i), ip("10.0.0.1"));
            assert_eq!(
                nat.handle_lan(now, lan(PacketType::Broadcast), &mut f),
                Verdict::Forward
            );
        }
        assert_eq!(nat.table_lens(), (1000, 500, 700));
        assert_eq!(nat.overlay_macs(t0).count(), 600);
        let s = nat.stats();
        assert_eq!(
            (
                s.ip_evictions,
                s.lan_mac_evictions,
                s.lan_ip_evictions,
                s.overlay_mac_evictions
            ),
            (99_000, 99_500, 99_300, 99_400)
        );
        // A real host evicted by the flood is learned again from its traffic.
        let now = t0 + Duration::from_secs(1);
        let mut f = sim::icmp_echo(
            (V, ip("10.0.0.100")),
            (MacAddr::BROADCAST, ip("10.0.0.1")),
            true,
            1,
        );
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
                (ip6("fe80::2:1").into(), V, 299),
                (ip("10.0.0.101").into(), V2, 299),
            ]
        );
        assert_eq!(nat.lan_macs(later).count(), 1);
        assert_eq!(nat.lan_ips(later).count(), 2);
        assert_eq!(nat.overlay_macs(later).count(), 2);
        let expired = t0 + Duration::from_secs(300);
        assert_eq!(nat.lookup(expired, ip("10.0.0.100").into()), None);
        assert_eq!(nat.expire(expired), 8);
        assert_eq!(nat.table_lens(), (0, 0, 0));
        assert_eq!(nat.next_deadline(), None);
        // V's claim aged out too: its next frame waits for a probe again...
        let mut f = sim::icmp_echo((V, ip("10.0.0.100")), (L1, ip("10.0.0.1")), true, 1);
        let v = nat.handle_overlay(expired, false, &mut f.clone());
        assert_eq!(v, Verdict::Drop(DropReason::Probing));
        let granted = expired + Duration::from_secs(1);
        assert_eq!(run_timers(&mut nat, expired, granted).len(), 2);
        // ...and with L1 forgotten, unicast to it stays off the LAN again.
        let v = nat.handle_overlay(granted, false, &mut f);
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

    /// Host access, step by step: the bridge host and virtual host V
    /// (10.0.0.100, granted in `base`) resolve each other and exchange a
    /// ping both ways; the host sees N as T, the overlay sees T as N, and
    /// the host's routes follow the IP→MAC table.
    #[test]
    fn host_and_virtual_host_resolve_and_ping_each_other() {
        let now = Instant::now();
        let mut nat = base(now);
        host_access(&mut nat.config);
        let (host, v) = (Ipv4Addr::from(HOST), ip("10.0.0.100"));
        assert_eq!(
            nat.host_route_targets(now).collect::<Vec<_>>(),
            vec![IpAddr::from(v), ip("10.0.0.101").into()],
            "link-local fe80::2:1 gets no route"
        );
        let changes = nat.ip_table_changes();

        // Host → V: ARP out of the TAP, answer into it, ping, reply.
        let mut f = sim::arp_request(T, host, v);
        assert_eq!(nat.handle_host(now, &mut f), Verdict::Forward);
        assert_eq!(f, sim::arp_request(N, host, v));
        let mut f = sim::arp_reply(V, v, N, host);
        assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::ToHost);
        assert_eq!(f, sim::arp_reply(V, v, T, host));
        let mut f = sim::icmp_echo((T, host), (V, v), true, 1);
        assert_eq!(nat.handle_host(now, &mut f), Verdict::Forward);
        assert_eq!(f, sim::icmp_echo((N, host), (V, v), true, 1));
        let mut f = sim::icmp_echo((V, v), (N, host), false, 1);
        assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::ToHost);
        assert_eq!(f, sim::icmp_echo((V, v), (T, host), false, 1));

        // V → host: the engine answers V's ARP request as N; then a ping.
        let mut f = sim::arp_request(V, v, host);
        assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::Answered);
        let reply = nat.poll_host_reply().expect("an answer");
        assert_eq!(reply.as_bytes(), &sim::arp_reply(N, host, V, v)[..]);
        assert!(nat.poll_host_reply().is_none());
        let mut f = sim::icmp_echo((V, v), (N, host), true, 2);
        assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::ToHost);
        let mut f = sim::icmp_echo((T, host), (V, v), false, 2);
        assert_eq!(nat.handle_host(now, &mut f), Verdict::Forward);

        let s = nat.stats();
        assert_eq!(
            (s.overlay_to_host, s.host_to_overlay, s.host_answers),
            (3, 3, 1)
        );
        assert_eq!(
            s.overlay_forwarded, 0,
            "nothing for the host went onto the LAN"
        );
        assert_eq!(nat.ip_table_changes(), changes, "no address came or went");

        // V's address seen live on the LAN leaves the table, and its route.
        let mut f = sim::arp_request(L2, v, l1_ip());
        let _ = nat.handle_lan(now, lan(PacketType::Broadcast), &mut f);
        assert_ne!(nat.ip_table_changes(), changes);
        assert!(!nat.host_route_targets(now).any(|ip| ip == IpAddr::from(v)));
    }

    /// Found in review: a virtual host sending from an off-link source
    /// (8.8.8.8) must neither reach the host's stack nor get a host route
    /// that would pull the host's own traffic for that address into the
    /// TAP; and frames to N for an address that isn't the host's are not
    /// handed to the host to route on.
    #[test]
    fn host_access_takes_nothing_off_link() {
        let now = Instant::now();
        let mut nat = base(now);
        host_access(&mut nat.config);
        let host = Ipv4Addr::from(HOST);
        let off_link = ip("8.8.8.8");
        let mut f = sim::icmp_echo((V, off_link), (N, host), true, 1);
        let verdict = nat.handle_overlay(now, false, &mut f);
        assert_eq!(verdict, Verdict::Drop(DropReason::Spoofed));
        assert!(!nat
            .host_route_targets(now)
            .any(|ip| ip == IpAddr::from(off_link)));
        let mut f = sim::icmp_echo((V, ip("10.0.0.100")), (N, ip("172.17.0.2")), true, 2);
        let verdict = nat.handle_overlay(now, false, &mut f);
        assert_eq!(verdict, Verdict::Drop(DropReason::ForHost));
    }

    fn l1_ip() -> Ipv4Addr {
        ip("10.0.0.1")
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

    #[test]
    fn ra_guard_and_dhcp_snooping_hold_for_priority_tags_and_refuse_other_vlans() {
        let now = Instant::now();
        let ra = sim::router_advert((V, ip6("fe80::2:1")), ip6("2001:db8:bad::"));
        let offer = sim::dhcp_offer(V2, ip("10.0.0.101"));
        for (frame, reason) in [(ra, DropReason::RaGuard), (offer, DropReason::DhcpSnooping)] {
            let mut nat = base(now);
            for (vid, want) in [(0, reason), (7, DropReason::Vlan)] {
                let mut f = sim::with_vlan(&frame, vid);
                assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::Drop(want));
            }
            let r = nat.take_refusal().unwrap();
            assert_eq!((r.reason, r.ip), (reason, None));
            // Allowed, the priority-tagged frame passes, rewritten to N.
            nat.config.allow_router_advertisements = true;
            nat.config.allow_dhcp_servers = true;
            let mut f = sim::with_vlan(&frame, 0);
            assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::Forward);
            assert!(sim::macs_in(&f).iter().all(|m| !m.is_unicast() || *m == N));
        }
    }

    #[test]
    fn nd_inspection_checks_na_targets_but_lets_virtual_hosts_solicit_anything() {
        let now = Instant::now();
        let mut nat = base(now);
        let all_nodes = (MacAddr([0x33, 0x33, 0, 0, 0, 1]), ip6("ff02::1"));
        let na = |target: &str| {
            sim::ndp(
                (V, ip6("fe80::2:1")),
                all_nodes,
                msg::NEIGHBOR_ADVERT,
                ip6(target),
                (opt::TARGET_LLA, V),
            )
        };
        // L1's address (live on the LAN) and the host's own: refused, named.
        for target in ["fe80::1:1", HOST6] {
            let mut f = na(target);
            let v = nat.handle_overlay(now, false, &mut f);
            assert_eq!(v, Verdict::Drop(DropReason::NdInspection), "{target}");
            let r = nat.take_refusal().unwrap();
            assert_eq!((r.mac, r.ip), (V, Some(ip6(target).into())));
        }
        // The same, behind a priority tag.
        let mut f = sim::with_vlan(&na("fe80::1:1"), 0);
        let v = nat.handle_overlay(now, false, &mut f);
        assert_eq!(v, Verdict::Drop(DropReason::NdInspection));
        // Soliciting those addresses is only resolving them: forwarded.
        for target in ["fe80::1:1", HOST6] {
            let t = ip6(target).octets();
            let group = MacAddr([0x33, 0x33, 0xff, t[13], t[14], t[15]]);
            let mut f = sim::ndp(
                (V, ip6("fe80::2:1")),
                (group, ip6("ff02::1:ff00:1")),
                msg::NEIGHBOR_SOLICIT,
                ip6(target),
                (opt::SOURCE_LLA, V),
            );
            assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::Forward);
        }
        // An NA for an address nobody is known to have is a claim: probed
        // for, and refused when the LAN host that has it answers.
        let silent = "fe80::1:7";
        let mut f = na(silent);
        let v = nat.handle_overlay(now, false, &mut f);
        assert_eq!(v, Verdict::Drop(DropReason::Probing));
        let probe = nat.poll_transmit(now).expect("a DAD probe");
        let probe = probe.as_bytes().to_vec();
        assert!(sim::macs_in(&probe)
            .iter()
            .all(|m| !m.is_unicast() || *m == N));
        let mut answer = sim::ndp(
            (L2, ip6(silent)),
            all_nodes,
            msg::NEIGHBOR_ADVERT,
            ip6(silent),
            (opt::TARGET_LLA, L2),
        );
        let later = now + Duration::from_millis(10);
        let v = nat.handle_lan(later, lan(PacketType::Multicast), &mut answer);
        assert_eq!(v, Verdict::Forward);
        assert_eq!(nat.stats().claims_refused, 1);
        let mut f = na(silent);
        let v = nat.handle_overlay(later, false, &mut f);
        assert_eq!(v, Verdict::Drop(DropReason::NdInspection));
        // An unanswered NA target is granted to its sender.
        let mut f = na("fe80::2:3");
        let v = nat.handle_overlay(later, false, &mut f);
        assert_eq!(v, Verdict::Drop(DropReason::Probing));
        let granted = later + Duration::from_secs(1);
        assert_eq!(run_timers(&mut nat, later, granted).len(), 2);
        assert_eq!(nat.lookup(granted, ip6("fe80::2:3").into()), Some(V));
        let mut f = na("fe80::2:3");
        assert_eq!(nat.handle_overlay(granted, false, &mut f), Verdict::Forward);
    }

    #[test]
    fn mirror_guard_keeps_virtual_macs_off_the_lan_and_the_first_owner_wins() {
        let now = Instant::now();
        let mut nat = base(now);
        // A LAN host sends with V's MAC, to N and broadcast: dropped, and V
        // is not learned as a LAN MAC.
        let mut f = sim::icmp_echo((V, ip("10.0.0.2")), (N, ip("10.0.0.101")), true, 1);
        let v = nat.handle_lan(now, lan(PacketType::Host), &mut f);
        assert_eq!(v, Verdict::Drop(DropReason::MirrorGuard));
        let mut f = sim::arp_request(V, ip("10.0.0.2"), ip("10.0.0.1"));
        let v = nat.handle_lan(now, lan(PacketType::Broadcast), &mut f);
        assert_eq!(v, Verdict::Drop(DropReason::MirrorGuard));
        assert!(nat.lan_macs(now).all(|(m, _)| m != V));
        // Their addresses still count as live (so a LAN host whose MAC a
        // virtual host took first still keeps its address): 10.0.0.2 joins
        // the two live ones.
        assert_eq!(
            nat.lan_ips(now).count(),
            3,
            "the address is live, the MAC not learned"
        );
        // So V's own frames are not taken for a loop...
        let mut f = sim::icmp_echo((V, ip("10.0.0.100")), (L1, ip("10.0.0.1")), true, 2);
        assert_eq!(nat.handle_overlay(now, false, &mut f), Verdict::Forward);
        // ...and no frame to V goes onto the LAN.
        let mut f = sim::icmp_echo((V2, ip("10.0.0.101")), (V, ip("10.0.0.100")), true, 3);
        let v = nat.handle_overlay(now, false, &mut f);
        assert_eq!(v, Verdict::Drop(DropReason::UnknownUnicast));
        // The other way round: L1 was first seen on the LAN, so a virtual
        // host using L1's MAC is a loop, and L1 keeps working.
        let mut f = sim::icmp_echo((L1, ip("10.0.0.100")), (L2, ip("10.0.0.2")), true, 4);
        assert_eq!(
            nat.handle_overlay(now, false, &mut f),
            Verdict::Drop(DropReason::Loop)
        );
        assert!(nat.overlay_macs(now).all(|(m, _)| m != L1));
        let mut f = sim::icmp_echo((L1, ip("10.0.0.1")), (N, ip("10.0.0.100")), true, 5);
        let v = nat.handle_lan(now, lan(PacketType::Host), &mut f);
        assert_eq!(v, Verdict::Forward);
        // A VLAN-tagged or truncated spoof is dropped too, and never panics.
        let spoof = sim::icmp_echo((V, ip("10.0.0.2")), (N, ip("10.0.0.101")), true, 6);
        let mut f = sim::with_vlan(&spoof, 0);
        let v = nat.handle_lan(now, lan(PacketType::Host), &mut f);
        assert_eq!(v, Verdict::Drop(DropReason::MirrorGuard));
        for len in 0..spoof.len() {
            let mut f = spoof[..len].to_vec();
            let v = nat.handle_lan(now, lan(PacketType::Host), &mut f);
            assert!(matches!(v, Verdict::Drop(_)), "len {len}");
        }
        // Once V has been silent for the overlay-MAC age, the MAC is free.
        let much_later = now + Duration::from_secs(300);
        let mut f = sim::arp_request(V, ip("10.0.0.2"), ip("10.0.0.1"));
        let v = nat.handle_lan(much_later, lan(PacketType::Broadcast), &mut f);
        assert_eq!(v, Verdict::Forward);
    }

    #[test]
    fn a_claim_answered_on_the_lan_is_refused_and_an_unanswered_one_granted() {
        let t0 = Instant::now();
        let mut nat = base(t0);
        let taken = ip("10.0.0.7"); // L2's, but L2 has been quiet
        let mut claim = sim::arp_request(X, taken, ip("10.0.0.1"));
        let v = nat.handle_overlay(t0, false, &mut claim.clone());
        assert_eq!(v, Verdict::Drop(DropReason::Probing));
        assert!(nat.next_deadline().is_some_and(|d| d <= t0));
        // The probe: only N, sender IP 0.0.0.0, target the claimed address.
        let probe = nat.poll_transmit(t0).unwrap().as_bytes().to_vec();
        assert_eq!(nat.poll_transmit(t0), None);
        let a = ArpPacket::new_checked(&probe[14..]).unwrap();
        assert_eq!(
            (a.sender_ip(), a.target_ip()),
            (Ipv4Addr::UNSPECIFIED, taken)
        );
        assert_eq!(
            sim::macs_in(&probe),
            vec![N, MacAddr::BROADCAST, N, MacAddr::ZERO]
        );
        // Still probing: the claimant's frames wait.
        let t1 = t0 + Duration::from_millis(200);
        let v = nat.handle_overlay(t1, false, &mut claim.clone());
        assert_eq!(v, Verdict::Drop(DropReason::Probing));
        // L2 answers the probe (to N, target IP 0.0.0.0): the answer is the
        // bridge's own, and the claim is refused.
        let mut answer = sim::arp_reply(L2, taken, N, Ipv4Addr::UNSPECIFIED);
        let v = nat.handle_lan(t1, lan(PacketType::Host), &mut answer);
        assert_eq!(v, Verdict::Drop(DropReason::Probing));
        assert_eq!(nat.pending_claims(), 0);
        let v = nat.handle_overlay(t1, false, &mut claim);
        assert_eq!(v, Verdict::Drop(DropReason::Spoofed));
        assert_eq!(nat.lookup(t1, taken.into()), None);

        // Nobody answers for 10.0.0.8: granted after two probes and 1 s.
        let free = ip("10.0.0.8");
        let mut claim = sim::arp_request(X, free, ip("10.0.0.1"));
        let v = nat.handle_overlay(t1, false, &mut claim.clone());
        assert_eq!(v, Verdict::Drop(DropReason::Probing));
        let granted = t1 + Duration::from_millis(1000);
        assert_eq!(run_timers(&mut nat, t1, granted).len(), 2);
        assert_eq!(nat.lookup(granted, free.into()), Some(X));
        let v = nat.handle_overlay(granted, false, &mut claim);
        assert_eq!(v, Verdict::Forward);
        let s = nat.stats();
        assert_eq!(
            (s.probes_sent, s.claims_granted, s.claims_refused),
            (3, 1, 1)
        );
    }

    #[test]
    fn claims_are_probed_only_for_on_link_or_link_asserted_addresses() {
        let now = Instant::now();
        let mut nat = base(now); // on-link: 10.0.0.0/24
        let ping = |src: &str| sim::icmp_echo((X, ip(src)), (L1, ip("10.0.0.1")), true, 1);
        // An IPv4 source inside the prefix is probed; one outside (routed
        // by a virtual router) is learned at once.
        assert_eq!(
            nat.handle_overlay(now, false, &mut ping("10.0.0.60")),
            Verdict::Drop(DropReason::Probing)
        );
        assert_eq!(
            nat.handle_overlay(now, false, &mut ping("198.51.100.9")),
            Verdict::Forward
        );
        // ARP asserts the address on the link: probed wherever it is.
        let mut f = sim::arp_request(X, ip("198.51.100.10"), ip("10.0.0.1"));
        let v = nat.handle_overlay(now, false, &mut f);
        assert_eq!(v, Verdict::Drop(DropReason::Probing));
        // IPv6: link-local and NDP sources are probed, a global one (no
        // IPv6 prefix is known) is not.
        let v6 = |src: &str| sim::udp_v6((X, ip6(src), 5000), (L1, ip6("fe80::1:1"), 5000), b"x");
        let v = nat.handle_overlay(now, false, &mut v6("fe80::3:3"));
        assert_eq!(v, Verdict::Drop(DropReason::Probing));
        assert_eq!(
            nat.handle_overlay(now, false, &mut v6("2001:db8::3")),
            Verdict::Forward
        );
        let mut ns = sim::ndp(
            (X, ip6("2001:db8::4")),
            (
                MacAddr([0x33, 0x33, 0xff, 0, 1, 1]),
                ip6("ff02::1:ff00:101"),
            ),
            msg::NEIGHBOR_SOLICIT,
            ip6("fe80::1:1"),
            (opt::SOURCE_LLA, X),
        );
        let v = nat.handle_overlay(now, false, &mut ns);
        assert_eq!(v, Verdict::Drop(DropReason::Probing));
        assert_eq!(nat.pending_claims(), 4);
    }

    #[test]
    fn live_lan_addresses_are_learned_on_link_and_from_arp_and_ndp() {
        let now = Instant::now();
        let mut nat = base(now); // on-link: 10.0.0.0/24; L1 live at two
        let live = |nat: &Nat| nat.lan_ips(now).count();
        let from_l2 = |src: &str| sim::icmp_echo((L2, ip(src)), (N, ip("10.0.0.100")), true, 1);
        // A source outside the prefix (a router forwarding from afar) is
        // not live on the LAN; one inside is.
        let v = nat.handle_lan(now, lan(PacketType::Host), &mut from_l2("203.0.113.5"));
        assert_eq!((v, live(&nat)), (Verdict::Forward, 2));
        let v = nat.handle_lan(now, lan(PacketType::Host), &mut from_l2("10.0.0.2"));
        assert_eq!((v, live(&nat)), (Verdict::Forward, 3));
        // ARP asserts its sender on the link wherever it is.
        let mut f = sim::arp_request(L2, ip("203.0.113.6"), ip("203.0.113.1"));
        let _ = nat.handle_lan(now, lan(PacketType::Broadcast), &mut f);
        assert_eq!(live(&nat), 4);
        // IPv6 without a known global prefix: every source is learned (the
        // fallback); an NA's target too.
        let mut f = sim::ndp(
            (L2, ip6("2001:db8::2")),
            (MacAddr([0x33, 0x33, 0, 0, 0, 1]), ip6("ff02::1")),
            msg::NEIGHBOR_ADVERT,
            ip6("2001:db8::22"),
            (opt::TARGET_LLA, L2),
        );
        let _ = nat.handle_lan(now, lan(PacketType::Multicast), &mut f);
        assert_eq!(live(&nat), 6);
        // With an IPv6 prefix known, a global source outside it is not.
        nat.set_on_link_prefixes(&[
            Prefix::new(IpAddr::from(HOST), 24),
            Prefix::new(ip6("2001:db8::a").into(), 64),
            Prefix::new(ip6(HOST6).into(), 64), // link-local: ignored
            Prefix::new(IpAddr::from(HOST), 32), // a host route: ignored
        ]);
        assert_eq!(nat.on_link_prefixes().len(), 2);
        let mut f = sim::udp_v6((L2, ip6("2001:db9::9"), 1), (N, ip6("fe80::2:1"), 1), b"x");
        let _ = nat.handle_lan(now, lan(PacketType::Host), &mut f);
        assert_eq!(live(&nat), 6);
    }

    #[test]
    fn prefixes_contain_their_addresses() {
        let p = Prefix::new(ip("192.168.50.2").into(), 24);
        assert!(p.contains(ip("192.168.50.200").into()));
        assert!(!p.contains(ip("192.168.51.2").into()));
        assert!(!p.contains(ip6("::ffff:192.168.50.2").into()));
        assert_eq!(p.to_string(), "192.168.50.2/24");
        let p = Prefix::new(ip6("fd00:50::2").into(), 64);
        assert!(p.contains(ip6("fd00:50::ffff:1").into()));
        assert!(!p.contains(ip6("fd00:51::1").into()));
        let all = Prefix::new(ip("10.0.0.1").into(), 0);
        assert!(all.contains(ip("203.0.113.1").into()));
        assert_eq!(Prefix::new(ip("10.0.0.1").into(), 40).prefix_len(), 32);
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

        // V takes its address: the bridge probes the LAN for it, nobody
        // answers, and the claim is granted a second later.
        w.act(Side::Overlay, "V", |h| h.announce());
        let granted = w.now + Duration::from_secs(1);
        w.run_bridge_timers(granted);
        assert_eq!(w.nat.lookup(w.now, ip("10.0.0.100").into()), Some(V));
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
